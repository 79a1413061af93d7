//! What a [`DistributedCache`](super::DistributedCache) shows of its local tier: reads, and
//! dropping local copies (the next read fetches the key from Redis again). Writes are left out on
//! purpose: a value set only here would be served by this node alone, never replicated and never
//! replaced by a done event of an older version, so the tier could disagree with Redis for good.

use crate::local::{LocalCache, LocalMetrics};
use crate::{Cache, Result, Version};

/// A read-only view of a distributed cache's local tier, from
/// [`DistributedCache::local`](super::DistributedCache::local).
///
/// ```no_run
/// # fn demo(cache: &distcache::DistributedCache<String>) -> distcache::Result<()> {
/// if let Some(version) = cache.local().version_of("user:1") {
///     println!("this node holds user:1 at {version}");
/// }
/// cache.local().clear()?; // every read goes to Redis again until the keys are cached anew
/// # Ok(()) }
/// ```
pub struct LocalView<'a, T> {
    local: &'a LocalCache<T>,
}

impl<T> std::fmt::Debug for LocalView<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalView").finish_non_exhaustive()
    }
}

impl<'a, T: Clone + Send + Sync + 'static> LocalView<'a, T> {
    pub(crate) fn new(local: &'a LocalCache<T>) -> Self {
        LocalView { local }
    }

    /// The locally cached value under `key`, marked most recently used (a hit or a miss in the
    /// local metrics). Never reads Redis.
    pub fn get(&self, key: &str) -> Result<Option<T>> {
        self.local.get(key)
    }

    /// Like [`get`](Self::get) without changing recency.
    pub fn peek(&self, key: &str) -> Result<Option<T>> {
        self.local.peek(key)
    }

    /// True when `key` holds a live local value.
    pub fn exists(&self, key: &str) -> Result<bool> {
        self.local.exists(key)
    }

    /// The version of the value or delete this node holds for `key`, if any.
    pub fn version_of(&self, key: &str) -> Option<Version> {
        self.local.version_of(key)
    }

    /// The number of live local entries.
    pub fn len(&self) -> Result<usize> {
        self.local.len()
    }

    /// True when no live entry is cached locally.
    pub fn is_empty(&self) -> Result<bool> {
        self.local.is_empty()
    }

    /// The most entries the local tier holds.
    pub fn capacity(&self) -> usize {
        self.local.capacity()
    }

    /// The local tier's counters.
    pub fn metrics(&self) -> LocalMetrics {
        self.local.metrics()
    }

    /// Drops the local copy of `key`; true if there was one. The next read of it goes to Redis.
    pub fn invalidate(&self, key: &str) -> bool {
        self.local.invalidate(key)
    }

    /// Drops every local copy, tombstones included. Reads go to Redis until keys are cached anew.
    pub fn clear(&self) -> Result<()> {
        self.local.clear()
    }
}
