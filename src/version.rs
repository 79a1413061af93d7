//! Versions: hybrid logical clock timestamps that order every write without trusting clock sync.
//!
//! A [`Version`] is `(hlc, node)`. `hlc` holds 48 bits of Unix milliseconds and a 16-bit counter;
//! `node` breaks ties between processes. "Newer" always means a larger `(hlc, node)`. A
//! [`HybridClock`] hands out strictly increasing versions and is advanced past every version the
//! process observes, so a node whose wall clock lags still orders its writes after what it has seen.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bits of the counter below the milliseconds in [`Version::hlc`].
const COUNTER_BITS: u32 = 16;

/// How far ahead of the local wall clock a version may be before it is refused: core nodes do not
/// follow (or stamp) versions further ahead, and the state node refuses events further ahead.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);

/// [`DEFAULT_MAX_CLOCK_SKEW`] in milliseconds: how far ahead of the local wall clock an observed
/// version may be and still advance the clock.
pub const MAX_AHEAD_MS: u64 = DEFAULT_MAX_CLOCK_SKEW.as_millis() as u64;

/// The version of one write. Ordered by `hlc`, then `node`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// Hybrid logical clock: `unix_millis << 16 | counter`.
    pub hlc: u64,
    /// The id of the node that made the write; breaks ties.
    pub node: u64,
}

impl Version {
    /// Builds a version from its parts.
    pub const fn new(hlc: u64, node: u64) -> Self {
        Version { hlc, node }
    }

    /// The wall-clock milliseconds part of the clock.
    pub const fn millis(&self) -> u64 {
        self.hlc >> COUNTER_BITS
    }

    /// Fixed-width hex form (32 lowercase hex digits) whose string order equals the version order.
    /// This is how versions are stored in Redis.
    pub fn to_hex(&self) -> String {
        format!("{:016x}{:016x}", self.hlc, self.node)
    }

    /// Parses the form written by [`Version::to_hex`]: exactly 32 hex digits (either case), as
    /// the apply script requires of a stored version; nothing else, not even a sign.
    pub fn from_hex(s: &str) -> Option<Version> {
        // `from_str_radix` alone would also take a leading `+`.
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let hlc = u64::from_str_radix(&s[..16], 16).ok()?;
        let node = u64::from_str_radix(&s[16..], 16).ok()?;
        Some(Version { hlc, node })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}@{:x}",
            self.millis(),
            self.hlc & ((1 << COUNTER_BITS) - 1),
            self.node
        )
    }
}

/// Why [`HybridClock::try_now`] refused to stamp a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutureVersion {
    /// The version the clock would have issued.
    pub would_be: Version,
    /// This machine's wall clock, Unix milliseconds.
    pub wall_millis: u64,
}

impl fmt::Display for FutureVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the next version {} would be {} ms ahead of this machine's wall clock, more than the \
             allowed clock skew (the wall clock stepped back?)",
            self.would_be,
            self.would_be.millis().saturating_sub(self.wall_millis)
        )
    }
}

impl std::error::Error for FutureVersion {}

/// A hybrid logical clock. Cheap to share; lock-free.
///
/// Clocks made with [`share`](Self::share) advance one counter: versions from any of them are
/// distinct even when their node ids are equal, which is how a process keeps "equal version" meaning
/// "the same write" across all its caches.
#[derive(Debug)]
pub struct HybridClock {
    node: u64,
    last: Arc<AtomicU64>,
    max_ahead_ms: u64,
}

impl HybridClock {
    /// A clock for the node with id `node`, refusing to run more than
    /// [`DEFAULT_MAX_CLOCK_SKEW`] ahead of the wall clock.
    pub fn new(node: u64) -> Self {
        HybridClock {
            node,
            last: Arc::new(AtomicU64::new(0)),
            max_ahead_ms: MAX_AHEAD_MS,
        }
    }

    /// A clock for `node` that shares this clock's counter (and skew bound): versions from the two
    /// never repeat one another.
    pub fn share(&self, node: u64) -> Self {
        HybridClock {
            node,
            last: self.last.clone(),
            max_ahead_ms: self.max_ahead_ms,
        }
    }

    /// The node id this clock stamps into versions.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The largest clock value issued or observed so far.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// A new version, strictly greater than every version this clock issued or observed. Unlike
    /// [`try_now`](Self::try_now) it never refuses; cache writes use `try_now`.
    pub fn now(&self) -> Version {
        self.stamp(wall_millis(), u64::MAX)
            .unwrap_or_else(|e| e.would_be)
    }

    /// A new version as [`now`](Self::now), or an error (nothing issued) when that version would
    /// be more than [`DEFAULT_MAX_CLOCK_SKEW`] ahead of this machine's wall clock: a state node
    /// would refuse it, and a write stamped so far ahead would block its key for everyone until the
    /// wall clocks catch up. This happens only when the wall clock stepped back by more than the
    /// bound after the clock issued or observed a version.
    pub fn try_now(&self) -> std::result::Result<Version, FutureVersion> {
        self.stamp(wall_millis(), self.max_ahead_ms)
    }

    /// [`try_now`](Self::try_now) at wall-clock time `wall` (Unix ms), allowing `max_ahead_ms`.
    pub(crate) fn stamp(
        &self,
        wall: u64,
        max_ahead_ms: u64,
    ) -> std::result::Result<Version, FutureVersion> {
        let floor = wall << COUNTER_BITS;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            // `observe` keeps `prev` within MAX_AHEAD of the wall clock, far below u64::MAX.
            let next = floor.max(prev.saturating_add(1));
            if (next >> COUNTER_BITS) > wall.saturating_add(max_ahead_ms) {
                return Err(FutureVersion {
                    would_be: Version::new(next, self.node),
                    wall_millis: wall,
                });
            }
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(Version::new(next, self.node)),
                Err(actual) => prev = actual,
            }
        }
    }

    /// Advances the clock past `seen` so later versions from this node order after it. A version
    /// more than [`MAX_AHEAD_MS`] ahead of this machine's wall clock is not followed (one bad event
    /// must not drag every clock into the far future) and `false` is returned.
    pub fn observe(&self, seen: Version) -> bool {
        if seen.millis() > wall_millis().saturating_add(self.max_ahead_ms) {
            return false;
        }
        self.last.fetch_max(seen.hlc, Ordering::AcqRel);
        true
    }
}

/// This machine's wall clock in Unix milliseconds (48 bits, as in [`Version::hlc`]).
pub(crate) fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        & ((1 << 48) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_and_pass_observed_ones() {
        let clock = HybridClock::new(7);
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        let far = Version::new(a.hlc + (1 << 30), 1);
        clock.observe(far);
        let c = clock.now();
        assert!(c > far, "{c} must order after observed {far}");
    }

    #[test]
    fn absurd_versions_are_not_followed() {
        let clock = HybridClock::new(1);
        assert!(!clock.observe(Version::new(u64::MAX, 9)));
        let far = (wall_millis() + 2 * MAX_AHEAD_MS) << COUNTER_BITS;
        assert!(!clock.observe(Version::new(far, 9)));
        let v = clock.now();
        assert!(v.millis() <= wall_millis() + 1, "{v}");
    }

    #[test]
    fn refuses_to_stamp_beyond_the_skew_bound() {
        let clock = HybridClock::new(3);
        let wall = wall_millis();
        let hour = MAX_AHEAD_MS;
        let v = clock.stamp(wall, hour).unwrap();
        // The wall clock steps back by more than the bound: the next version would be too far ahead.
        let err = clock.stamp(wall - hour - 1000, hour).unwrap_err();
        assert!(err.would_be > v);
        assert_eq!(clock.last(), v.hlc, "nothing issued");
        // Within the bound the clock runs on past what it issued.
        let w = clock.stamp(wall - hour + 1000, hour).unwrap();
        assert!(w > v);
        // A clock sharing the counter refuses too, and `now` never refuses.
        assert!(clock.share(4).stamp(wall - hour - 1000, hour).is_err());
        assert!(clock.now() > w);
    }

    #[test]
    fn shared_clocks_never_repeat_a_version() {
        let a = HybridClock::new(1);
        let b = a.share(1);
        let x = a.now();
        let y = b.now();
        assert!(y > x);
        assert_eq!(a.last(), y.hlc);
    }

    #[test]
    fn node_breaks_ties() {
        assert!(Version::new(5, 2) > Version::new(5, 1));
        assert!(Version::new(6, 0) > Version::new(5, 9));
    }

    #[test]
    fn hex_round_trips_and_sorts_like_versions() {
        let vs = [
            Version::new(0, 0),
            Version::new(1, u64::MAX),
            Version::new(u64::MAX, 0),
            Version::new(0x1234_5678_9abc_def0, 42),
        ];
        for a in vs {
            assert_eq!(Version::from_hex(&a.to_hex()), Some(a));
            for b in vs {
                assert_eq!(a.cmp(&b), a.to_hex().cmp(&b.to_hex()));
            }
        }
        assert_eq!(Version::from_hex("xyz"), None);
    }

    #[test]
    fn concurrent_now_never_repeats() {
        let clock = std::sync::Arc::new(HybridClock::new(1));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = clock.clone();
                std::thread::spawn(move || (0..10_000).map(|_| c.now()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<Version> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
