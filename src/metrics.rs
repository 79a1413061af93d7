//! Metric building blocks: a lock-free latency/size histogram and its [`Summary`].
//! (Prometheus text is rendered in `prometheus.rs`.)

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets of a [`Histogram`]: bucket `i` holds values in `[2^(i-1), 2^i)`, bucket 0 holds 0.
const BUCKETS: usize = 65;

/// A lock-free histogram with power-of-two buckets. Bounded memory, cheap to record.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub(crate) fn record(&self, value: u64) {
        let bucket = (u64::BITS - value.leading_zeros()) as usize;
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    pub(crate) fn summary(&self) -> Summary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let max = self.max.load(Ordering::Relaxed);
        let quantile = |q: f64| -> u64 {
            if count == 0 {
                return 0;
            }
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    // Upper bound of the bucket, never above the observed maximum.
                    let upper = if i == 0 { 0 } else { (1u128 << i) as u64 - 1 };
                    return upper.min(max);
                }
            }
            max
        };
        Summary {
            count,
            sum: self.sum.load(Ordering::Relaxed),
            max,
            p50: quantile(0.50),
            p99: quantile(0.99),
        }
    }
}

/// A snapshot of a distribution (sizes, or durations in microseconds).
/// Percentiles are upper bounds of power-of-two buckets: within a factor of two.
/// Serializes (serde) to an object of its five fields (`count`, `sum`, `max`, `p50`, `p99`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Number of recorded values.
    pub count: u64,
    /// Sum of recorded values.
    pub sum: u64,
    /// Largest recorded value.
    pub max: u64,
    /// Median (bucket upper bound).
    pub p50: u64,
    /// 99th percentile (bucket upper bound).
    pub p99: u64,
}

impl Summary {
    /// Arithmetic mean, 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// A two-column text table for the `Display` of metric snapshots: one row per figure, names
/// left-aligned in one column, values in the next, section headings between them.
pub(crate) struct Table<'a, 'b> {
    f: &'a mut std::fmt::Formatter<'b>,
}

/// Width of the name column.
const NAME_WIDTH: usize = 24;

impl<'a, 'b> Table<'a, 'b> {
    pub(crate) fn new(
        f: &'a mut std::fmt::Formatter<'b>,
        title: &str,
    ) -> Result<Self, std::fmt::Error> {
        writeln!(f, "{title}")?;
        Ok(Table { f })
    }

    pub(crate) fn section(&mut self, name: &str) -> std::fmt::Result {
        writeln!(self.f, "  {name}")
    }

    pub(crate) fn row(&mut self, name: &str, value: impl std::fmt::Display) -> std::fmt::Result {
        writeln!(self.f, "    {name:<NAME_WIDTH$} {value}")
    }

    /// A duration summary recorded in microseconds, shown in milliseconds.
    pub(crate) fn latency(&mut self, name: &str, s: &Summary) -> std::fmt::Result {
        if s.count == 0 {
            return self.row(name, "-");
        }
        let ms = |us: u64| us as f64 / 1000.0;
        self.row(
            name,
            format_args!(
                "n={} p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms",
                s.count,
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                s.mean() / 1000.0
            ),
        )
    }

    /// A size summary (no unit).
    pub(crate) fn sizes(&mut self, name: &str, s: &Summary) -> std::fmt::Result {
        if s.count == 0 {
            return self.row(name, "-");
        }
        self.row(
            name,
            format_args!(
                "n={} p50 {}  p99 {}  max {}  mean {:.1}",
                s.count,
                s.p50,
                s.p99,
                s.max,
                s.mean()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_bounds_percentiles_by_buckets() {
        let h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.sum, 5050);
        assert_eq!(s.max, 100);
        assert!((50..=63).contains(&s.p50), "{s:?}");
        assert!((99..=100).contains(&s.p99), "{s:?}");
        assert_eq!(Histogram::default().summary(), Summary::default());
    }
}
