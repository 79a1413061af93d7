//! [`LocalMetrics`]: a point-in-time snapshot of a [`LocalCache`](super::LocalCache)'s counters.
//!
//! The counters live in the shards, updated under each shard's lock, so they are exact and no
//! counter is shared by all threads. A snapshot locks the shards one after the other: it is
//! exact per shard, but writes that land while it is taken may be seen in some shards and not
//! in others.

use std::ops::AddAssign;

use super::shard::Counters;

/// Counters of a [`LocalCache`](super::LocalCache), from [`LocalCache::metrics`](super::LocalCache::metrics).
///
/// Every counter only grows, except `entries`, which is the current number of live entries.
///
/// ```
/// use distcache::{Cache, LocalCache};
///
/// let cache = LocalCache::<u32>::builder().build()?;
/// cache.set("a", 1, None)?;
/// cache.get("a")?;
/// cache.get("b")?;
/// let m = cache.metrics();
/// assert_eq!((m.hits, m.misses, m.inserts, m.entries), (1, 1, 1, 1));
/// assert_eq!(m.hit_ratio(), 0.5);
/// # Ok::<(), distcache::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalMetrics {
    /// `get` and `peek` calls that returned a value.
    pub hits: u64,
    /// `get` and `peek` calls that returned nothing (absent, deleted or expired).
    pub misses: u64,
    /// Writes that stored a value where the key held none (absent, tombstone or expired).
    pub inserts: u64,
    /// Writes that replaced a live value.
    pub updates: u64,
    /// Live values removed to stay within capacity, plus values too heavy to be stored at all.
    pub evictions: u64,
    /// Values found past their TTL and removed (on read, on write, or when evicted).
    pub expirations: u64,
    /// Live values removed by [`invalidate`](super::LocalCache::invalidate) or
    /// [`invalidate_all`](super::LocalCache::invalidate_all).
    pub invalidations: u64,
    /// [`set_if_newer`](super::LocalCache::set_if_newer) and
    /// [`delete_if_newer`](super::LocalCache::delete_if_newer) calls refused because the key
    /// already held an equal or newer version.
    pub stale_rejections: u64,
    /// Live entries now (tombstones excluded; expired values not yet reclaimed included).
    pub entries: u64,
}

impl LocalMetrics {
    /// The metrics in the Prometheus text format (`distcache_local_*`), labelled
    /// `namespace="name"`.
    pub fn to_prometheus(&self, name: &str) -> String {
        let mut page = crate::Exposition::new();
        page.local(name, self);
        page.finish()
    }

    /// `hits / (hits + misses)`, or 0.0 before the first read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }

    /// Adds one shard's counters and live entries to this snapshot.
    pub(super) fn add_shard(&mut self, counters: &Counters, live: usize) {
        *self += LocalMetrics {
            hits: counters.hits,
            misses: counters.misses,
            inserts: counters.inserts,
            updates: counters.updates,
            evictions: counters.evictions,
            expirations: counters.expirations,
            invalidations: counters.invalidations,
            stale_rejections: counters.stale_rejections,
            entries: live as u64,
        };
    }
}

impl AddAssign for LocalMetrics {
    /// Field-by-field sum, for aggregating several caches.
    fn add_assign(&mut self, other: LocalMetrics) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.inserts += other.inserts;
        self.updates += other.updates;
        self.evictions += other.evictions;
        self.expirations += other.expirations;
        self.invalidations += other.invalidations;
        self.stale_rejections += other.stale_rejections;
        self.entries += other.entries;
    }
}
