//! The [`Cache`] trait shared by every tier.

use std::time::Duration;

use crate::Result;

/// A key-value cache of `T`, implemented by [`LocalCache`](crate::LocalCache),
/// [`RedisCache`](crate::RedisCache) and [`DistributedCache`](crate::DistributedCache).
///
/// A miss is `Ok(None)`, never an error. A `ttl` of `None` means the entry never expires
/// (unless the implementation has a default TTL, which then applies).
pub trait Cache<T> {
    /// Stores `value` under `key`, replacing any previous value.
    fn set(&self, key: &str, value: T, ttl: Option<Duration>) -> Result<()>;
    /// Returns the value under `key`, marking it as recently used.
    fn get(&self, key: &str) -> Result<Option<T>>;
    /// Returns the value under `key` without changing its recency.
    fn peek(&self, key: &str) -> Result<Option<T>>;
    /// Removes `key`. Removing a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// True when `key` holds a live (unexpired) value.
    fn exists(&self, key: &str) -> Result<bool>;
    /// The number of entries. See each implementation for its cost and precision.
    fn len(&self) -> Result<usize>;
    /// True when the cache holds no entries.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Removes every entry.
    fn clear(&self) -> Result<()>;
}
