//! Holes in a partition, seen through its offsets.
//!
//! Offsets within a partition of distcache's topics are contiguous: they are never compacted and
//! never written in transactions, so every offset from the first to the last holds a record. A
//! consumer that is handed offset `N + k` after `N - 1` has therefore missed `N .. N + k`. Apache
//! Kafka never does that; tansu 0.6 does under concurrent producers (it reserves offsets before it
//! stores the batch, and a fetch in between returns the later batch: see README, "Brokers").
//!
//! An [`OffsetTracker`] remembers the next expected offset per partition and classifies every
//! record: the expected one is accepted; a jump is a hole, to be re-read by seeking back (the
//! missing batch is usually stored a few milliseconds later); a hole that is still there after
//! [`MAX_REREADS`] re-reads (about 2.5 s) is passed, so a compacted or transactional topic
//! cannot stall a consumer; an offset below the expected one is a regression (the log was reset
//! or truncated under us, or a re-delivery).

use std::time::Duration;

use hashbrown::HashMap;

/// Re-reads of one hole before it is passed.
pub(crate) const MAX_REREADS: u32 = 8;
/// Wait before the first re-read; doubled for each further one (10 ms … 1.28 s, 2.55 s in all).
const FIRST_REREAD_WAIT: Duration = Duration::from_millis(10);

/// What to do with a consumed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The expected record (or the first one of a partition with no expectation): process it.
    Accept,
    /// The record lies past a hole that starts at `expected`: drop it, wait `wait`, seek the
    /// partition back to `expected` and read again. `attempt` counts from 1.
    Reread {
        expected: i64,
        attempt: u32,
        wait: Duration,
    },
    /// The hole at `expected` outlived [`MAX_REREADS`] re-reads: the records
    /// `expected .. offset` are passed; the record itself is accepted.
    Skip { expected: i64 },
    /// The record is older than `expected`: the consumer went back (a reset after the log was
    /// lost or truncated, or a re-delivery). The record is accepted and the partition now
    /// continues after it.
    Regressed { expected: i64 },
}

/// The next expected offset of every partition a consumer reads, and the hole being re-read.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    next: HashMap<i32, i64>,
    /// Partition → (first missing offset, re-reads so far).
    holes: HashMap<i32, (i64, u32)>,
}

impl OffsetTracker {
    /// A tracker with no expectations.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The next record of `partition` must have offset `next` (its start after an assignment).
    pub(crate) fn expect(&mut self, partition: i32, next: i64) {
        self.next.insert(partition, next);
        self.holes.remove(&partition);
    }

    /// Stops tracking `partition` (it was revoked).
    pub(crate) fn forget(&mut self, partition: i32) {
        self.next.remove(&partition);
        self.holes.remove(&partition);
    }

    /// Stops tracking every partition.
    pub(crate) fn forget_all(&mut self) {
        self.next.clear();
        self.holes.clear();
    }

    /// The next expected offset of `partition`, if known.
    #[cfg(test)]
    pub(crate) fn expected(&self, partition: i32) -> Option<i64> {
        self.next.get(&partition).copied()
    }

    /// Every tracked partition and its next expected offset.
    pub(crate) fn positions(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.next.iter().map(|(&p, &o)| (p, o))
    }

    /// Whether `partition` is tracked.
    pub(crate) fn knows(&self, partition: i32) -> bool {
        self.next.contains_key(&partition)
    }

    /// Classifies the record at `offset` of `partition` and moves the expectation on.
    pub(crate) fn check(&mut self, partition: i32, offset: i64) -> Verdict {
        let Some(&expected) = self.next.get(&partition) else {
            self.next.insert(partition, offset.saturating_add(1));
            return Verdict::Accept;
        };
        if offset == expected {
            self.next.insert(partition, offset.saturating_add(1));
            self.holes.remove(&partition);
            return Verdict::Accept;
        }
        if offset < expected {
            self.next.insert(partition, offset.saturating_add(1));
            self.holes.remove(&partition);
            return Verdict::Regressed { expected };
        }
        let attempt = match self.holes.get(&partition) {
            Some(&(at, n)) if at == expected => n + 1,
            _ => 1,
        };
        if attempt > MAX_REREADS {
            self.next.insert(partition, offset.saturating_add(1));
            self.holes.remove(&partition);
            return Verdict::Skip { expected };
        }
        self.holes.insert(partition, (expected, attempt));
        Verdict::Reread {
            expected,
            attempt,
            wait: FIRST_REREAD_WAIT.saturating_mul(1 << (attempt - 1).min(16)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_offsets_are_accepted() {
        let mut t = OffsetTracker::new();
        t.expect(0, 5);
        for o in 5..10 {
            assert_eq!(t.check(0, o), Verdict::Accept);
        }
        assert_eq!(t.expected(0), Some(10));
        // A partition without an expectation starts wherever its first record is.
        assert_eq!(t.check(3, 42), Verdict::Accept);
        assert_eq!(t.expected(3), Some(43));
    }

    #[test]
    fn a_jump_is_a_hole_reread_until_filled() {
        let mut t = OffsetTracker::new();
        t.expect(1, 0);
        assert_eq!(t.check(1, 0), Verdict::Accept);
        assert_eq!(
            t.check(1, 4),
            Verdict::Reread {
                expected: 1,
                attempt: 1,
                wait: Duration::from_millis(10)
            }
        );
        // The expectation stays at the hole; the same hole counts its re-reads.
        assert_eq!(t.expected(1), Some(1));
        assert!(matches!(
            t.check(1, 4),
            Verdict::Reread {
                expected: 1,
                attempt: 2,
                wait
            } if wait == Duration::from_millis(20)
        ));
        // The missing batch arrives: everything from the hole on is accepted.
        for o in 1..6 {
            assert_eq!(t.check(1, o), Verdict::Accept);
        }
        // A new hole later starts counting again.
        assert!(matches!(
            t.check(1, 9),
            Verdict::Reread {
                expected: 6,
                attempt: 1,
                ..
            }
        ));
        // Holes are per partition.
        t.expect(2, 0);
        assert_eq!(t.check(2, 0), Verdict::Accept);
    }

    #[test]
    fn a_persisting_hole_is_passed_after_the_bound() {
        let mut t = OffsetTracker::new();
        t.expect(0, 10);
        let mut waited = Duration::ZERO;
        for attempt in 1..=MAX_REREADS {
            match t.check(0, 13) {
                Verdict::Reread {
                    expected: 10,
                    attempt: a,
                    wait,
                } => {
                    assert_eq!(a, attempt);
                    waited += wait;
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
        }
        assert!(
            waited >= Duration::from_secs(2) && waited <= Duration::from_secs(3),
            "{waited:?}"
        );
        assert_eq!(t.check(0, 13), Verdict::Skip { expected: 10 });
        assert_eq!(t.expected(0), Some(14));
        assert_eq!(t.check(0, 14), Verdict::Accept);
    }

    #[test]
    fn a_regression_is_reported_and_followed() {
        let mut t = OffsetTracker::new();
        t.expect(0, 100);
        assert_eq!(t.check(0, 100), Verdict::Accept);
        assert_eq!(t.check(0, 3), Verdict::Regressed { expected: 101 });
        assert_eq!(t.check(0, 4), Verdict::Accept);
        // A regression while a hole is being re-read clears the hole.
        assert!(matches!(t.check(0, 9), Verdict::Reread { .. }));
        assert_eq!(t.check(0, 2), Verdict::Regressed { expected: 5 });
        assert_eq!(t.check(0, 3), Verdict::Accept);
    }

    #[test]
    fn forgetting_drops_expectations_and_holes() {
        let mut t = OffsetTracker::new();
        t.expect(0, 7);
        t.expect(1, 7);
        assert!(matches!(t.check(0, 9), Verdict::Reread { .. }));
        t.forget(0);
        assert!(!t.knows(0));
        assert_eq!(t.check(0, 9), Verdict::Accept);
        t.forget_all();
        assert!(!t.knows(1));
        assert_eq!(t.expected(0), None);
    }
}
