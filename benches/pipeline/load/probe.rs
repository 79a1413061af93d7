//! The probe of section `load`: one sample of each path (raw one hop, distcache A → B) per
//! round, in rotation, and the CPU each phase cost the machine and our processes.

use super::*;
use crate::outside::{clock_ticks, process_ticks};

/// Latency samples of one path in microseconds, and the samples never seen.
#[derive(Default)]
pub(crate) struct Path {
    pub(super) us: Vec<u64>,
    pub(super) misses: usize,
}

impl Path {
    pub(super) fn taken(&self) -> usize {
        self.us.len() + self.misses
    }

    /// Milliseconds at quantile `q` (nearest rank) with misses ranked above every seen sample;
    /// `None` when the rank falls on a miss.
    pub(super) fn pct(&self, q: f64) -> Option<f64> {
        let n = self.taken();
        if n == 0 {
            return Some(0.0);
        }
        let mut s = self.us.clone();
        s.sort_unstable();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        s.get(rank - 1).map(|&v| v as f64 / 1000.0)
    }

    pub(super) fn mean_seen(&self) -> f64 {
        self.us.iter().sum::<u64>() as f64 / self.us.len().max(1) as f64 / 1000.0
    }
}

/// One phase (idle or under load): both paths, sampled in rotation.
#[derive(Default)]
pub(crate) struct Phase {
    pub(super) one_hop: Path,
    pub(super) distcache: Path,
    /// Share of all cores busy during the phase (from /proc/stat), percent.
    pub(super) machine_busy: Option<f64>,
    /// CPU of each of our processes during the phase, percent of one core (Linux).
    pub(super) processes: Vec<(&'static str, Option<f64>)>,
    /// Sampling stopped early (after [`MAX_MISSES`] misses).
    pub(super) cut_short: bool,
}

/// Cumulative busy and total jiffies of all cores (Linux); `None` elsewhere.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let f: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() < 8 {
        return None;
    }
    let total: u64 = f.iter().sum();
    Some((total - f[3] - f[4], total))
}

fn busy_percent(from: Option<(u64, u64)>, to: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (from?, to?);
    (t1 > t0).then(|| (b1 - b0) as f64 * 100.0 / (t1 - t0) as f64)
}

/// The probe: A, B, the raw one hop and how many probe writes A made.
pub(super) struct Probe<'a> {
    pub(super) c: &'a Config,
    pub(super) a: DistributedCache<String>,
    pub(super) b: Listener,
    pub(super) raw: RawPaths,
    pub(super) writes: u64,
    pub(super) round: usize,
    /// Processes whose CPU each phase reports: (what it runs, pid).
    pub(super) pids: Vec<(&'static str, u32)>,
}

impl Probe<'_> {
    /// One sample of each path, order alternating per round. Misses are counted; their details
    /// go to stderr.
    fn round(&mut self, phase: &mut Phase, keep: bool) -> R<()> {
        self.round += 1;
        let i = self.round;
        for step in 0..2 {
            if (i + step).is_multiple_of(2) {
                let seen = self.one_hop()?;
                if keep {
                    match seen {
                        Some(us) => phase.one_hop.us.push(us),
                        None => phase.one_hop.misses += 1,
                    }
                }
            } else {
                let seen = self.distcache(i)?;
                if keep {
                    match seen {
                        Some(us) => phase.distcache.us.push(us),
                        None => phase.distcache.misses += 1,
                    }
                }
            }
        }
        Ok(())
    }

    /// Send call → the consumer's poll returns the message, µs; `None` if not within 10 s.
    fn one_hop(&mut self) -> R<Option<u64>> {
        let raw = &mut self.raw;
        raw.round += 1;
        let body = payload(raw.value_bytes, raw.round);
        let key = format!("key-{}", raw.round);
        let t0 = Instant::now();
        raw.producer
            .send(
                BaseRecord::<_, _, ()>::to(&raw.hop_topic)
                    .key(&key)
                    .payload(&body),
            )
            .map_err(|(e, _)| e)?;
        if await_payload_within(&raw.hop_out, &body, MISS_AFTER)? {
            Ok(Some(t0.elapsed().as_micros() as u64))
        } else {
            progress(format!("  raw one hop: message {} not seen", raw.round));
            Ok(None)
        }
    }

    /// A's `set_with_sync` call → B's first matching local `get`, µs; `None` if B gave up.
    fn distcache(&mut self, i: usize) -> R<Option<u64>> {
        let key = format!("p{i}");
        let value = format!("v{i}-{}", self.c.run);
        self.b.expect(&key, &value)?;
        let t0 = now_micros();
        self.a.set_with_sync(&key, value, None, None)?;
        self.writes += 1;
        match self.b.seen()? {
            Ok(seen) => Ok(Some(seen.saturating_sub(t0))),
            Err(why) => {
                let am = self.a.metrics();
                progress(format!(
                    "  write {i} ({key:?}) not seen by B: {why}; A's listener: {} events, {} \
                     applied, {} resets",
                    am.events, am.events_applied, am.resets
                ));
                Ok(None)
            }
        }
    }

    /// `WARMUP` discarded rounds, then `samples` kept ones. `during(0)` runs right before the
    /// first kept round, `during(rounds done)` between rounds at most every [`PROGRESS_EVERY`].
    pub(super) fn phase(
        &mut self,
        samples: usize,
        name: &str,
        mut during: impl FnMut(usize) -> R<()>,
    ) -> R<Phase> {
        let mut phase = Phase::default();
        for _ in 0..WARMUP {
            self.round(&mut phase, false)?;
        }
        during(0)?;
        let cpu = cpu_jiffies();
        let ticks: Vec<Option<u64>> = self
            .pids
            .iter()
            .map(|&(_, pid)| process_ticks(pid))
            .collect();
        let t0 = Instant::now();
        let mut last_progress = t0;
        for n in 0..samples {
            self.round(&mut phase, true)?;
            if phase.one_hop.misses + phase.distcache.misses >= MAX_MISSES {
                progress(format!(
                    "  {name}: {MAX_MISSES} misses, stopping after {} rounds",
                    n + 1
                ));
                phase.cut_short = true;
                break;
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                during(n + 1)?;
            }
        }
        phase.machine_busy = busy_percent(cpu, cpu_jiffies());
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        let ticks_per_s = clock_ticks();
        phase.processes = self
            .pids
            .iter()
            .zip(ticks)
            .map(|(&(name, pid), before)| {
                let used = process_ticks(pid)
                    .zip(before)
                    .and_then(|(a, b)| a.checked_sub(b));
                (name, used.map(|t| t as f64 / ticks_per_s / secs * 100.0))
            })
            .collect();
        Ok(phase)
    }
}
