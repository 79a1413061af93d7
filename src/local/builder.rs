//! [`LocalCacheBuilder`]: the settings of a [`LocalCache`], validated once by
//! [`build`](LocalCacheBuilder::build).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Config, LocalCache, Weigher};
use crate::{Error, Result};

/// Entries a [`LocalCache`] holds unless [`LocalCacheBuilder::capacity`] says otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// How long a tombstone lives unless [`LocalCacheBuilder::tombstone_ttl`] says otherwise.
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(30);
/// The most shards a cache may have.
pub const MAX_SHARDS: usize = 1 << 16;
/// The default shard count never leaves fewer units than this per shard: LRU order is only
/// kept within a shard, so tiny shards evict almost at random.
const MIN_UNITS_PER_SHARD: usize = 64;
/// The default shard count is at least this, whatever the core count: with skewed (Zipf)
/// popularity the hottest keys pile onto a few shards, and on 2 cores the 2-thread benchmark
/// ran 0.62x quick_cache's throughput with 8 shards and 0.91x with 64.
const MIN_DEFAULT_SHARDS: usize = 64;

/// Builds a [`LocalCache`]. Every setting has a default; [`build`](Self::build) validates them.
///
/// ```
/// use std::time::Duration;
/// use distcache::{Cache, LocalCache};
///
/// // At most 64 KiB of values, weighed by their length; entries expire after a minute.
/// let cache = LocalCache::<String>::builder()
///     .capacity(64 * 1024)
///     .weigher(|_key, value: &String| value.len() as u64)
///     .default_ttl(Duration::from_secs(60))
///     .build()?;
/// cache.set("greeting", "hello".to_string(), None)?;
/// assert_eq!(cache.get("greeting")?.as_deref(), Some("hello"));
///
/// // Invalid settings are reported by `build`, not later.
/// assert!(LocalCache::<String>::builder().capacity(0).build().is_err());
/// assert!(LocalCache::<String>::builder().shards(3).build().is_err());
/// # Ok::<(), distcache::Error>(())
/// ```
pub struct LocalCacheBuilder<T> {
    capacity: usize,
    default_ttl: Option<Duration>,
    weigher: Option<Weigher<T>>,
    tombstone_ttl: Duration,
    shards: Option<usize>,
}

impl<T: Clone + Send + Sync + 'static> LocalCacheBuilder<T> {
    /// A builder with the defaults: 10 000 entries, no default TTL, no weigher, tombstones
    /// kept 30 s, shard count chosen from the number of cores and the capacity.
    pub fn new() -> Self {
        LocalCacheBuilder {
            capacity: DEFAULT_CAPACITY,
            default_ttl: None,
            weigher: None,
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
            shards: None,
        }
    }

    /// The cache's bound: a number of entries, or of weight units when a
    /// [`weigher`](Self::weigher) is set. Tombstones count toward it (one unit each).
    /// Default 10 000; must be at least 1 and at least the number of shards.
    ///
    /// The bound is split evenly across the shards and enforced per shard, so the cache never
    /// holds more than `capacity` units in total.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The TTL of writes that pass `ttl: None`. Default: none (such entries never expire).
    /// Must be greater than zero.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Weighs each value; [`capacity`](Self::capacity) then counts weight units instead of
    /// entries. Least recently used entries are evicted until the shard is back within its
    /// share of the capacity. A value heavier than one shard's share (`capacity / shards`) is
    /// not stored at all (counted as an eviction). Weights below 1 count as 1, so every entry
    /// costs something and the number of entries stays bounded.
    ///
    /// The weigher runs outside the shard locks, once per write.
    pub fn weigher(mut self, weigher: impl Fn(&str, &T) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// How long the tombstone left by [`LocalCache::delete_if_newer`] blocks older writes of
    /// the same key. It should outlast the longest delay with which a write can still arrive.
    /// Default 30 s; must be greater than zero.
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }

    /// The number of independently locked shards; a power of two, at most
    /// [`MAX_SHARDS`] and at most the capacity. Default: the smallest power of two at least
    /// 4 × the available cores and at least 64, lowered so that each shard keeps at least 64
    /// units of capacity. More shards mean less lock contention; LRU order is kept per shard.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Validates the settings and builds the cache.
    ///
    /// # Errors
    /// [`Error::Config`] when the capacity is 0, the shard count is not a power of two, exceeds
    /// [`MAX_SHARDS`] or the capacity, or a TTL is zero.
    pub fn build(self) -> Result<LocalCache<T>> {
        if self.capacity == 0 {
            return Err(Error::Config(
                "local cache: capacity must be at least 1".into(),
            ));
        }
        if self.default_ttl == Some(Duration::ZERO) {
            return Err(Error::Config(
                "local cache: default_ttl must be greater than zero".into(),
            ));
        }
        if self.tombstone_ttl.is_zero() {
            return Err(Error::Config(
                "local cache: tombstone_ttl must be greater than zero".into(),
            ));
        }
        let shards = match self.shards {
            None => default_shards(self.capacity),
            Some(n) if n == 0 || !n.is_power_of_two() => {
                return Err(Error::Config(format!(
                    "local cache: shards must be a power of two, got {n}"
                )))
            }
            Some(n) if n > MAX_SHARDS => {
                return Err(Error::Config(format!(
                    "local cache: at most {MAX_SHARDS} shards, got {n}"
                )))
            }
            Some(n) if n > self.capacity => {
                return Err(Error::Config(format!(
                    "local cache: {n} shards need a capacity of at least {n}, got {}",
                    self.capacity
                )))
            }
            Some(n) => n,
        };
        Ok(LocalCache::from_config(Config {
            capacity: self.capacity as u64,
            shards,
            default_ttl: self.default_ttl,
            tombstone_ttl: self.tombstone_ttl,
            weigher: self.weigher,
        }))
    }
}

impl<T: Clone + Send + Sync + 'static> Default for LocalCacheBuilder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for LocalCacheBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCacheBuilder")
            .field("capacity", &self.capacity)
            .field("default_ttl", &self.default_ttl)
            .field(
                "weigher",
                &self.weigher.as_ref().map(|_| "Fn(&str, &T) -> u64"),
            )
            .field("tombstone_ttl", &self.tombstone_ttl)
            .field("shards", &self.shards)
            .finish()
    }
}

/// The smallest power of two ≥ 4 × cores and ≥ [`MIN_DEFAULT_SHARDS`], lowered (to a power of
/// two) until each shard keeps at least [`MIN_UNITS_PER_SHARD`] units, and never below 1.
fn default_shards(capacity: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = cores
        .saturating_mul(4)
        .max(MIN_DEFAULT_SHARDS)
        .next_power_of_two()
        .min(MAX_SHARDS);
    let affordable = prev_power_of_two((capacity / MIN_UNITS_PER_SHARD).max(1));
    wanted.min(affordable)
}

/// The largest power of two ≤ `n` (`n` ≥ 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prev_power_of_two_rounds_down() {
        assert_eq!(prev_power_of_two(1), 1);
        assert_eq!(prev_power_of_two(2), 2);
        assert_eq!(prev_power_of_two(3), 2);
        assert_eq!(prev_power_of_two(1000), 512);
        assert_eq!(prev_power_of_two(usize::MAX), 1 << (usize::BITS - 1));
    }

    #[test]
    fn default_shards_are_a_power_of_two_within_capacity() {
        for capacity in [1, 2, 63, 64, 200, 10_000, 1 << 40] {
            let n = default_shards(capacity);
            assert!(n.is_power_of_two(), "{n}");
            assert!(n <= capacity, "{n} shards for capacity {capacity}");
            assert!(n <= MAX_SHARDS);
        }
        assert_eq!(default_shards(100), 1, "small caches keep one LRU order");
        assert!(default_shards(100_000) >= MIN_DEFAULT_SHARDS);
    }
}
