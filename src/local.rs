//! [`LocalCache`]: the in-process tier, a bounded, sharded LRU cache with per-entry TTLs and
//! versioned writes.
//!
//! Every application node keeps one in front of Redis. Reads never leave the process; writes
//! that arrive from the log carry a [`Version`], and [`LocalCache::set_if_newer`] /
//! [`LocalCache::delete_if_newer`] apply them only when they are newer than what the cache holds,
//! so events that arrive late or twice cannot roll a key back.
//!
//! How it is built:
//! - keys are hashed once with foldhash; the hash picks one of a power-of-two number of shards,
//!   each a `parking_lot::Mutex` around an LRU map (`shard.rs`), and the same hash finds the key
//!   inside the shard's map (`lru_map.rs`: a hashbrown table over a slab of nodes, the LRU links
//!   in a dense array beside it, short keys stored inline). DESIGN.md names `lru::LruCache` for
//!   the map; it hashes every key a second time and allocates per entry, and replacing it was the
//!   cheap win on the hit path. A full cache of 16-byte keys and `u64` values holds ~77 bytes of
//!   heap per entry beyond the key and value (`benches/local_capacity.rs` measures it);
//! - a lock is held for one map operation only: values are cloned out and the lock released
//!   before anything else happens; weighers and clocks run outside the lock where they can;
//! - lookups by `&str` never allocate; storing a new key allocates only for keys longer than
//!   22 bytes (and when a shard's slab or table grows);
//! - counters are plain integers inside each shard, updated under its lock, so they are exact
//!   and no cache line is shared by every thread; [`LocalCache::metrics`] sums them
//!   (`metrics.rs`).

mod builder;
mod lru_map;
mod metrics;
mod shard;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use self::lru_map::KeyHasher;
use self::shard::{Deadline, Entry, Now, Removal, Shard};
use crate::{Cache, Result, Version};

pub use self::builder::{LocalCacheBuilder, DEFAULT_CAPACITY, DEFAULT_TOMBSTONE_TTL, MAX_SHARDS};
pub use self::metrics::LocalMetrics;

/// A user-supplied weigher, shared by every handle of one cache.
type Weigher<T> = Arc<dyn Fn(&str, &T) -> u64 + Send + Sync>;

/// A bounded in-process cache: sharded LRU, per-entry TTL, versioned writes with tombstones.
///
/// Cloning is cheap (an [`Arc`] inside) and every clone is the same cache. It is `Send + Sync`,
/// and every method takes `&self`. The [`Cache`] methods never fail: they return `Ok` always.
///
/// ```
/// use std::time::Duration;
/// use distcache::{Cache, LocalCache};
///
/// let cache = LocalCache::<String>::builder().capacity(1_000).build()?;
/// cache.set("user:1", "Ada".to_string(), None)?;
/// cache.set("session:9", "xyz".to_string(), Some(Duration::from_secs(30)))?;
/// assert_eq!(cache.get("user:1")?.as_deref(), Some("Ada"));
/// assert_eq!(cache.len()?, 2);
///
/// let other_handle = cache.clone();
/// other_handle.delete("user:1")?;
/// assert_eq!(cache.get("user:1")?, None);
/// # Ok::<(), distcache::Error>(())
/// ```
///
/// # Bounds and eviction
/// The capacity (entries, or weight units with a weigher) is split evenly across the shards and
/// each shard evicts its least recently used entries to stay within its share, so the total
/// never exceeds the capacity, and LRU order is exact within a shard, approximate across them.
/// `get` and every write mark a key most recently used; `peek`, `exists` and
/// [`version_of`](Self::version_of) do not.
///
/// # TTL
/// `ttl: None` uses the builder's default TTL, if any, else the entry never expires;
/// `Some(Duration::ZERO)` means the same as `None` (as in the reference API, where 0 means
/// "never expires"). An expired entry is invisible at once; it is removed when a read finds it,
/// when a write to its shard finds it at the LRU end, or when it is evicted.
///
/// # Versions and tombstones
/// Each entry remembers the [`Version`] of the write that made it (`None` for plain
/// [`Cache::set`]). [`set_if_newer`](Self::set_if_newer) and
/// [`delete_if_newer`](Self::delete_if_newer) only apply over an older or unversioned entry.
/// `delete_if_newer` leaves a tombstone (no value, just the version) for the builder's
/// `tombstone_ttl`, so a write older than the delete that arrives after it cannot bring the key
/// back. Tombstones are invisible to `get`, `peek`, `exists` and `len`, but count toward the
/// capacity (one unit each), so they are bounded and evictable like any entry.
pub struct LocalCache<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    shards: Box<[ShardSlot<T>]>,
    /// `shards.len() - 1`; the shard count is a power of two.
    shard_mask: usize,
    /// Hashes every key once: bits 40.. pick the shard, the shard's table uses the low bits for
    /// buckets and the top 7 as tags, so the three never overlap (shards are at most 2^16).
    /// Every shard's map holds a clone, to hash stored keys again when it needs to.
    hasher: KeyHasher,
    /// Deadlines are kept as nanoseconds since this instant (the cache's creation).
    epoch: Instant,
    capacity: u64,
    default_ttl: Option<Duration>,
    tombstone_ttl: Duration,
    weigher: Option<Weigher<T>>,
}

/// One shard and its budget, on its own cache lines so that two threads working on
/// neighbouring shards do not invalidate each other's lines.
#[repr(align(128))]
struct ShardSlot<T> {
    shard: Mutex<Shard<T>>,
    /// The shard's share of the capacity; fixed at build time.
    budget: u64,
}

/// The validated settings a [`LocalCacheBuilder`] hands over.
struct Config<T> {
    capacity: u64,
    shards: usize,
    default_ttl: Option<Duration>,
    tombstone_ttl: Duration,
    weigher: Option<Weigher<T>>,
}

impl<T: Clone + Send + Sync + 'static> LocalCache<T> {
    /// A builder with the default settings; see [`LocalCacheBuilder`].
    pub fn builder() -> LocalCacheBuilder<T> {
        LocalCacheBuilder::new()
    }

    fn from_config(config: Config<T>) -> Self {
        let n = config.shards as u64;
        let hasher = KeyHasher::new();
        // Spread the remainder over the first shards so the budgets add up to the capacity.
        let shards = (0..n)
            .map(|i| {
                let budget = config.capacity / n + u64::from(i < config.capacity % n);
                ShardSlot {
                    shard: Mutex::new(Shard::new(budget, hasher.clone())),
                    budget,
                }
            })
            .collect();
        LocalCache {
            inner: Arc::new(Inner {
                shards,
                shard_mask: config.shards - 1,
                hasher,
                epoch: Instant::now(),
                capacity: config.capacity,
                default_ttl: config.default_ttl,
                tombstone_ttl: config.tombstone_ttl,
                weigher: config.weigher,
            }),
        }
    }

    /// Stores `value` under `key` if the key holds no entry, or an unversioned one, or one
    /// whose version is older than `version`, expired entries and tombstones included.
    /// Returns whether it applied; a refused write is counted in
    /// [`LocalMetrics::stale_rejections`] and changes nothing (not even recency).
    ///
    /// `ttl` works as in [`Cache::set`]. A value too heavy for the cache (see
    /// [`LocalCacheBuilder::weigher`]) still wins: it is not stored, but a tombstone with its
    /// version is, so older writes stay blocked.
    ///
    /// ```
    /// use distcache::{Cache, LocalCache, Version};
    ///
    /// let cache = LocalCache::<&str>::builder().build()?;
    /// assert!(cache.set_if_newer("k", "v2", None, Version::new(2, 0)));
    /// // An older write arriving late is refused.
    /// assert!(!cache.set_if_newer("k", "v1", None, Version::new(1, 0)));
    /// assert_eq!(cache.get("k")?, Some("v2"));
    /// assert_eq!(cache.version_of("k"), Some(Version::new(2, 0)));
    /// # Ok::<(), distcache::Error>(())
    /// ```
    pub fn set_if_newer(
        &self,
        key: &str,
        value: T,
        ttl: Option<Duration>,
        version: Version,
    ) -> bool {
        let mut now = self.now();
        let hash = self.hash(key);
        let weight = self.weigh(key, &value);
        let slot = self.slot(hash);
        if weight > slot.budget {
            let expires_at = now.deadline(Some(self.inner.tombstone_ttl));
            let mut shard = slot.shard.lock();
            let applied = shard.write(
                hash,
                key,
                Entry::tombstone(version, expires_at),
                Some(version),
                &mut now,
            );
            if applied {
                shard.counters.evictions += 1;
            }
            return applied;
        }
        let entry = Entry::value(value, self.expiry(ttl, &mut now), Some(version), weight);
        slot.shard
            .lock()
            .write(hash, key, entry, Some(version), &mut now)
    }

    /// Deletes `key` if it holds no entry, or an unversioned one, or one whose version is older
    /// than `version`, and leaves a tombstone carrying `version` for the builder's
    /// `tombstone_ttl`, so that an older [`set_if_newer`](Self::set_if_newer) arriving later
    /// cannot resurrect the key. Returns whether it applied; a refused delete is counted in
    /// [`LocalMetrics::stale_rejections`].
    ///
    /// ```
    /// use distcache::{Cache, LocalCache, Version};
    ///
    /// let cache = LocalCache::<u64>::builder().build()?;
    /// cache.set_if_newer("k", 1, None, Version::new(1, 0));
    /// assert!(cache.delete_if_newer("k", Version::new(3, 0)));
    /// assert_eq!(cache.get("k")?, None);
    /// // The write of version 2 was made before the delete: it must not come back.
    /// assert!(!cache.set_if_newer("k", 2, None, Version::new(2, 0)));
    /// assert!(!cache.exists("k")?);
    /// assert_eq!(cache.version_of("k"), Some(Version::new(3, 0)));
    /// # Ok::<(), distcache::Error>(())
    /// ```
    pub fn delete_if_newer(&self, key: &str, version: Version) -> bool {
        let mut now = self.now();
        let expires_at = now.deadline(Some(self.inner.tombstone_ttl));
        let hash = self.hash(key);
        let mut shard = self.slot(hash).shard.lock();
        shard.write(
            hash,
            key,
            Entry::tombstone(version, expires_at),
            Some(version),
            &mut now,
        )
    }

    /// The version of the unexpired entry or tombstone under `key`; `None` if there is none or
    /// it was written without a version. Does not count as a read or change recency.
    pub fn version_of(&self, key: &str) -> Option<Version> {
        let mut now = self.now();
        let hash = self.hash(key);
        let mut shard = self.lock(hash);
        shard
            .inspect(hash, key, &mut now, |_, version| version)
            .flatten()
    }

    /// Removes `key` (value or tombstone). Returns true, and counts an invalidation, when it
    /// held a live value.
    ///
    /// ```
    /// use distcache::{Cache, LocalCache};
    ///
    /// let cache = LocalCache::<u8>::builder().build()?;
    /// cache.set("k", 1, None)?;
    /// assert!(cache.invalidate("k"));
    /// assert!(!cache.invalidate("k"));
    /// assert_eq!(cache.metrics().invalidations, 1);
    /// # Ok::<(), distcache::Error>(())
    /// ```
    pub fn invalidate(&self, key: &str) -> bool {
        let mut now = self.now();
        let hash = self.hash(key);
        self.lock(hash)
            .remove(hash, key, Removal::Invalidated, &mut now)
    }

    /// Removes `key`'s value unless it is newer than `version`: a value written without a version,
    /// or with a version at most `version`, goes; a newer value and tombstones stay. Check and
    /// removal happen under one lock, so a newer write racing with this call is never lost.
    /// Returns true, and counts an invalidation, when a value was removed.
    ///
    /// ```
    /// use distcache::{LocalCache, Version};
    ///
    /// let cache = LocalCache::<u8>::builder().build()?;
    /// cache.set_if_newer("k", 1, None, Version::new(10, 1));
    /// assert!(!cache.invalidate_unless_newer("k", Version::new(9, 1)));
    /// assert!(cache.invalidate_unless_newer("k", Version::new(10, 1)));
    /// # Ok::<(), distcache::Error>(())
    /// ```
    pub fn invalidate_unless_newer(&self, key: &str, version: Version) -> bool {
        let mut now = self.now();
        let hash = self.hash(key);
        let mut shard = self.lock(hash);
        // An absent marker no newer than `version` goes too: a write at `version` exists.
        let not_newer = shard
            .inspect_entry(hash, key, &mut now, |entry| {
                (entry.is_live() || entry.is_absent())
                    && entry.version().is_none_or(|held| held <= version)
            })
            .unwrap_or(false);
        not_newer && shard.remove(hash, key, Removal::Invalidated, &mut now)
    }

    /// Negative caching: records that a read of `key` found no value, for `ttl`, unless the key
    /// holds a live value now. The marker keeps the larger of `version` (what the read saw, `None`
    /// for nothing at all) and the version of the tombstone it replaces, so any newer write
    /// replaces it ([`set_if_newer`](Self::set_if_newer), [`delete_if_newer`](Self::delete_if_newer),
    /// [`invalidate_unless_newer`](Self::invalidate_unless_newer)). It weighs one unit, like a
    /// tombstone: markers are bounded by the capacity. Returns whether it was stored.
    pub(crate) fn mark_absent(&self, key: &str, version: Option<Version>, ttl: Duration) -> bool {
        let mut now = self.now();
        let hash = self.hash(key);
        let mut shard = self.lock(hash);
        let held = shard.inspect(hash, key, &mut now, |value, held| (value.is_some(), held));
        let version = match held {
            Some((true, _)) => return false,
            Some((false, held)) => held.max(version),
            None => version,
        };
        let expires_at = now.deadline(Some(ttl));
        shard.write(
            hash,
            key,
            Entry::absent(version, expires_at),
            None,
            &mut now,
        )
    }

    /// Whether `key` holds an unexpired absent marker (see [`mark_absent`](Self::mark_absent)).
    pub(crate) fn is_absent(&self, key: &str) -> bool {
        let mut now = self.now();
        let hash = self.hash(key);
        self.lock(hash)
            .inspect_entry(hash, key, &mut now, |entry| entry.is_absent())
            .unwrap_or(false)
    }

    /// Removes `key`'s absent marker, if that is what it holds.
    pub(crate) fn drop_absent(&self, key: &str) {
        let mut now = self.now();
        let hash = self.hash(key);
        let mut shard = self.lock(hash);
        if shard
            .inspect_entry(hash, key, &mut now, |entry| entry.is_absent())
            .unwrap_or(false)
        {
            shard.remove(hash, key, Removal::Deleted, &mut now);
        }
    }

    /// Removes every entry, tombstones included. Returns the number of live values removed
    /// (expired ones not yet reclaimed included) and counts each as an invalidation. Use it
    /// when the cache may have missed updates and must not serve what it holds.
    pub fn invalidate_all(&self) -> usize {
        let mut removed = 0;
        for slot in self.inner.shards.iter() {
            let mut shard = slot.shard.lock();
            let live = shard.clear();
            shard.counters.invalidations += live as u64;
            removed += live;
        }
        removed
    }

    /// The capacity: entries, or weight units when a weigher is set.
    pub fn capacity(&self) -> usize {
        self.inner.capacity as usize
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// A snapshot of the counters, summed over the shards (each locked briefly in turn).
    pub fn metrics(&self) -> LocalMetrics {
        let mut metrics = LocalMetrics::default();
        for slot in self.inner.shards.iter() {
            let shard = slot.shard.lock();
            metrics.add_shard(&shard.counters, shard.live());
        }
        metrics
    }

    fn hash(&self, key: &str) -> u64 {
        self.inner.hasher.hash(key.as_bytes())
    }

    fn slot(&self, hash: u64) -> &ShardSlot<T> {
        // High bits: the low ones are what hash tables use for buckets.
        &self.inner.shards[(hash >> 40) as usize & self.inner.shard_mask]
    }

    fn lock(&self, hash: u64) -> MutexGuard<'_, Shard<T>> {
        self.slot(hash).shard.lock()
    }

    fn weigh(&self, key: &str, value: &T) -> u64 {
        match &self.inner.weigher {
            Some(weigher) => weigher(key, value).max(1),
            None => 1,
        }
    }

    /// When an entry written now with `ttl` expires.
    fn expiry(&self, ttl: Option<Duration>, now: &mut Now) -> Deadline {
        let ttl = ttl.filter(|t| !t.is_zero()).or(self.inner.default_ttl);
        now.deadline(ttl)
    }

    /// The clock of one operation (read lazily, see [`Now`]).
    #[inline]
    fn now(&self) -> Now {
        Now::new(self.inner.epoch)
    }
}

impl<T: Clone + Send + Sync + 'static> Cache<T> for LocalCache<T> {
    /// Stores `value` unconditionally, without a version, as the most recently used entry.
    /// A value too heavy for the cache removes the key's previous entry and is not stored
    /// (counted as an eviction).
    fn set(&self, key: &str, value: T, ttl: Option<Duration>) -> Result<()> {
        let mut now = self.now();
        let hash = self.hash(key);
        let weight = self.weigh(key, &value);
        let slot = self.slot(hash);
        if weight > slot.budget {
            let mut shard = slot.shard.lock();
            shard.remove(hash, key, Removal::Deleted, &mut now);
            shard.counters.evictions += 1;
            return Ok(());
        }
        let entry = Entry::value(value, self.expiry(ttl, &mut now), None, weight);
        slot.shard.lock().write(hash, key, entry, None, &mut now);
        Ok(())
    }

    /// The live value under `key`, marked most recently used; a hit or a miss in the metrics.
    fn get(&self, key: &str) -> Result<Option<T>> {
        let mut now = self.now();
        let hash = self.hash(key);
        Ok(self.lock(hash).read(hash, key, true, &mut now))
    }

    /// Like [`get`](Cache::get) without changing recency; also a hit or a miss.
    fn peek(&self, key: &str) -> Result<Option<T>> {
        let mut now = self.now();
        let hash = self.hash(key);
        Ok(self.lock(hash).read(hash, key, false, &mut now))
    }

    /// Removes `key`, value or tombstone, without leaving a tombstone: the key's version is
    /// forgotten, so any later [`LocalCache::set_if_newer`] applies. Not counted.
    fn delete(&self, key: &str) -> Result<()> {
        let mut now = self.now();
        let hash = self.hash(key);
        self.lock(hash)
            .remove(hash, key, Removal::Deleted, &mut now);
        Ok(())
    }

    /// True when `key` holds a live, unexpired value. Not counted as a read; recency unchanged.
    fn exists(&self, key: &str) -> Result<bool> {
        let mut now = self.now();
        let hash = self.hash(key);
        let mut shard = self.lock(hash);
        Ok(shard
            .inspect(hash, key, &mut now, |value, _| value.is_some())
            .unwrap_or(false))
    }

    /// The number of live entries (tombstones excluded), summed over the shards: O(shards).
    /// Expired entries that have not been reclaimed yet are still counted.
    fn len(&self) -> Result<usize> {
        Ok(self
            .inner
            .shards
            .iter()
            .map(|slot| slot.shard.lock().live())
            .sum())
    }

    /// Removes every entry, tombstones included. Unlike [`LocalCache::invalidate_all`], the
    /// removed entries are not counted.
    fn clear(&self) -> Result<()> {
        for slot in self.inner.shards.iter() {
            slot.shard.lock().clear();
        }
        Ok(())
    }
}

impl<T> Clone for LocalCache<T> {
    /// Another handle to the same cache.
    fn clone(&self) -> Self {
        LocalCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for LocalCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCache")
            .field("capacity", &self.inner.capacity)
            .field("shards", &self.inner.shards.len())
            .field("default_ttl", &self.inner.default_ttl)
            .field("tombstone_ttl", &self.inner.tombstone_ttl)
            .field("weighted", &self.inner.weigher.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize, shards: usize) -> LocalCache<u32> {
        LocalCache::builder()
            .capacity(capacity)
            .shards(shards)
            .build()
            .expect("valid config")
    }

    #[test]
    fn absent_markers_yield_to_newer_writes_and_never_hide_a_value() {
        let c = cache(100, 1);
        let ttl = Duration::from_secs(60);
        assert!(c.mark_absent("k", None, ttl));
        assert!(c.is_absent("k"));
        assert_eq!(c.get("k").unwrap(), None);
        assert_eq!(c.len().unwrap(), 0);
        assert!(
            c.set_if_newer("k", 1, None, Version::new(1, 1)),
            "any version beats it"
        );
        assert!(!c.is_absent("k"));
        assert!(!c.mark_absent("k", None, ttl), "a live value stays");
        assert_eq!(c.get("k").unwrap(), Some(1));
        assert!(c.delete_if_newer("k", Version::new(2, 1)));
        assert!(!c.is_absent("k"), "a delete's tombstone is not a marker");
        assert!(c.mark_absent("k", None, ttl));
        assert_eq!(
            c.version_of("k"),
            Some(Version::new(2, 1)),
            "the tombstone's version is kept"
        );
        assert!(
            !c.set_if_newer("k", 9, None, Version::new(1, 5)),
            "older than the delete"
        );
        c.invalidate_unless_newer("k", Version::new(1, 9));
        assert!(c.is_absent("k"), "an older omitted write leaves it");
        c.invalidate_unless_newer("k", Version::new(3, 1));
        assert!(!c.is_absent("k"), "a newer omitted write removes it");
        assert!(c.mark_absent("gone", None, Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!c.is_absent("gone"), "expired");
    }

    #[test]
    fn handles_are_send_sync_and_share_state() {
        fn assert_send_sync<X: Send + Sync>() {}
        assert_send_sync::<LocalCache<String>>();
        assert_send_sync::<LocalCacheBuilder<String>>();
        let a = cache(10, 1);
        let b = a.clone();
        a.set("k", 1, None).unwrap();
        assert_eq!(b.get("k").unwrap(), Some(1));
    }

    #[test]
    fn budgets_add_up_to_capacity() {
        let c = cache(10, 4);
        let budgets: Vec<u64> = c.inner.shards.iter().map(|s| s.budget).collect();
        assert_eq!(budgets, vec![3, 3, 2, 2]);
        assert_eq!(c.capacity(), 10);
        assert_eq!(c.shards(), 4);
    }

    #[test]
    fn total_entries_never_exceed_capacity() {
        let c = cache(100, 8);
        for i in 0..10_000 {
            c.set(&format!("key-{i}"), i, None).unwrap();
        }
        let len = c.len().unwrap();
        assert!(len <= 100, "{len}");
        let m = c.metrics();
        assert_eq!(m.inserts, 10_000);
        assert_eq!(m.evictions as usize, 10_000 - len);
        assert_eq!(m.entries as usize, len);
    }

    #[test]
    fn least_recently_used_is_evicted_first() {
        let c = cache(2, 1);
        c.set("a", 1, None).unwrap();
        c.set("b", 2, None).unwrap();
        c.get("a").unwrap();
        c.set("c", 3, None).unwrap();
        assert!(c.exists("a").unwrap());
        assert!(!c.exists("b").unwrap());
        // peek does not refresh recency
        c.peek("a").unwrap();
        c.set("d", 4, None).unwrap();
        assert!(!c.exists("a").unwrap());
    }

    #[test]
    fn inserts_and_updates_are_told_apart() {
        let c = cache(10, 1);
        c.set("a", 1, None).unwrap();
        c.set("a", 2, None).unwrap();
        c.delete_if_newer("b", Version::new(1, 0));
        c.set("b", 3, None).unwrap(); // over a tombstone: an insert
        let m = c.metrics();
        assert_eq!((m.inserts, m.updates, m.entries), (2, 1, 2));
    }

    #[test]
    fn tombstones_count_toward_capacity_but_not_len() {
        let c = cache(2, 1);
        c.set("a", 1, None).unwrap();
        c.delete_if_newer("x", Version::new(1, 0));
        c.delete_if_newer("y", Version::new(1, 0));
        assert_eq!(c.len().unwrap(), 0, "the tombstones pushed `a` out");
        assert_eq!(c.metrics().evictions, 1);
        assert_eq!(c.version_of("y"), Some(Version::new(1, 0)));
    }

    #[test]
    fn unversioned_entries_yield_to_any_version() {
        let c = cache(10, 1);
        c.set("k", 1, None).unwrap();
        assert_eq!(c.version_of("k"), None);
        assert!(c.set_if_newer("k", 2, None, Version::new(0, 0)));
        assert!(
            !c.set_if_newer("k", 3, None, Version::new(0, 0)),
            "equal is not newer"
        );
        c.set("k", 4, None).unwrap();
        assert!(c.delete_if_newer("k", Version::new(0, 0)));
        assert_eq!(c.metrics().stale_rejections, 1);
    }

    #[test]
    fn plain_delete_forgets_the_version() {
        let c = cache(10, 1);
        c.delete_if_newer("k", Version::new(5, 0));
        c.delete("k").unwrap();
        assert_eq!(c.version_of("k"), None);
        assert!(c.set_if_newer("k", 1, None, Version::new(1, 0)));
    }

    #[test]
    fn zero_ttl_means_no_expiry_and_huge_ttl_does_not_overflow() {
        let c = cache(10, 1);
        c.set("zero", 1, Some(Duration::ZERO)).unwrap();
        c.set("huge", 2, Some(Duration::MAX)).unwrap();
        assert_eq!(c.get("zero").unwrap(), Some(1));
        assert_eq!(c.get("huge").unwrap(), Some(2));
    }

    #[test]
    fn expired_entries_are_reclaimed_from_the_lru_end_on_write() {
        let c = cache(10, 1);
        for k in ["a", "b", "c"] {
            c.set(k, 1, Some(Duration::from_millis(1))).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            c.len().unwrap(),
            3,
            "not reclaimed until something touches the shard"
        );
        c.set("d", 1, None).unwrap();
        assert_eq!(c.len().unwrap(), 1);
        assert_eq!(c.metrics().expirations, 3);
    }

    #[test]
    fn invalidate_all_counts_live_values_only() {
        let c = cache(10, 2);
        c.set("a", 1, None).unwrap();
        c.set("b", 1, None).unwrap();
        c.delete_if_newer("t", Version::new(1, 0));
        assert_eq!(c.invalidate_all(), 2);
        assert_eq!(c.version_of("t"), None, "tombstones are cleared too");
        assert_eq!(c.metrics().invalidations, 2);
        c.set("a", 1, None).unwrap();
        c.clear().unwrap();
        assert_eq!(c.metrics().invalidations, 2, "clear is not counted");
        assert!(c.is_empty().unwrap());
    }

    #[test]
    fn heavy_values_are_dropped_but_their_version_is_kept() {
        let c = LocalCache::<Vec<u8>>::builder()
            .capacity(8)
            .shards(1)
            .weigher(|_, v: &Vec<u8>| v.len() as u64)
            .build()
            .unwrap();
        c.set("k", vec![0; 4], None).unwrap();
        c.set("k", vec![0; 9], None).unwrap();
        assert_eq!(c.get("k").unwrap(), None, "the old value is gone too");
        assert!(c.set_if_newer("k", vec![0; 9], None, Version::new(5, 0)));
        assert_eq!(c.get("k").unwrap(), None);
        assert!(!c.set_if_newer("k", vec![1], None, Version::new(4, 0)));
        assert_eq!(c.metrics().evictions, 2);
    }

    #[test]
    fn debug_output_names_the_settings() {
        let c = cache(10, 2);
        let s = format!("{c:?}");
        assert!(s.contains("capacity: 10") && s.contains("shards: 2"), "{s}");
        let b = format!("{:?}", LocalCache::<u8>::builder().weigher(|_, _| 1));
        assert!(b.contains("weigher: Some"), "{b}");
    }
}
