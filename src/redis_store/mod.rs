//! The Redis tier: [`RedisCache<T>`], a typed cache over a bounded pool of blocking connections,
//! and the byte-level store the state node and core nodes share.

mod apply;
mod layout;
mod pool;
mod scan;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use crate::{Cache, Codec, Error, Result, Version};
pub use apply::KEYS_PER_CALL;
pub(crate) use apply::{is_transient_reply, CallReply, ScriptConn};
pub use layout::APPLY_SCRIPT;
pub use layout::{redis_entry_key, redis_namespace_prefix, DEFAULT_KEY_PREFIX};
pub(crate) use layout::{KeyReply, VersionedWrite, BAD_VERSION};
pub use pool::RedisConfig;
pub(crate) use pool::{Conn, Connector, PingProbe};

/// How many keys one `SCAN` step asks for in `len`/`clear`.
const SCAN_COUNT: usize = 1000;

/// What Redis holds for one key: a value and/or the version of the write that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The encoded value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// `None` when the value was written without a version (by [`RedisCache::set`]).
    pub version: Option<Version>,
    /// Time left before Redis expires the entry; `None` when it does not expire.
    pub ttl: Option<Duration>,
}

/// Byte-level access to the entries under one key prefix.
pub(crate) struct RedisStore {
    pool: pool::Pool,
    prefix: String,
}

impl RedisStore {
    /// Connects and checks the server answers `PING`.
    pub(crate) fn connect(config: &RedisConfig, prefix: impl Into<String>) -> Result<Self> {
        let store = RedisStore {
            pool: pool::Pool::new(config)?,
            prefix: prefix.into(),
        };
        store.run(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(store)
    }

    pub(crate) fn connector(&self) -> &Connector {
        self.pool.connector()
    }

    pub(crate) fn full_key(&self, key: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + key.len());
        out.push_str(&self.prefix);
        out.push_str(key);
        out
    }

    /// Runs `f` on a pooled connection. A pooled connection can die while idle (the server
    /// restarted), so a dropped connection is retried once on a fresh one; every command we send
    /// is idempotent.
    fn run<R>(&self, mut f: impl FnMut(&mut Conn) -> redis::RedisResult<R>) -> Result<R> {
        let mut attempt = 0;
        loop {
            let mut conn = self.pool.get()?;
            match f(&mut conn) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let lost = e.is_io_error()
                        || e.is_timeout()
                        || e.is_connection_dropped()
                        || e.is_unrecoverable_error();
                    if lost {
                        // After an I/O error or a timeout the stream may be out of step.
                        conn.mark_broken();
                    }
                    attempt += 1;
                    if lost && !e.is_timeout() && attempt < 2 {
                        continue;
                    }
                    return Err(Error::from_redis(e));
                }
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let k = self.full_key(key);
        self.run(|c| redis::cmd("HGET").arg(&k).arg(layout::FIELD_VALUE).query(c))
    }

    /// Value and version in one round trip; `None` when the key does not exist at all.
    pub(crate) fn get_stored(&self, key: &str) -> Result<Option<Stored>> {
        let k = self.full_key(key);
        // One script (a cluster connection does not pipeline): value, version and TTL at once.
        // The version as raw bytes: a foreign or corrupt `ver` need not be UTF-8.
        type Fields = (Option<Vec<u8>>, Option<Vec<u8>>);
        let ((value, version), pttl): (Fields, i64) = self.run(|c| {
            redis::cmd("EVAL")
                .arg(layout::GET_SCRIPT)
                .arg(1)
                .arg(&k)
                .query(c)
        })?;
        if value.is_none() && version.is_none() {
            return Ok(None);
        }
        let version = match version {
            Some(raw) => Some(
                std::str::from_utf8(&raw)
                    .ok()
                    .and_then(Version::from_hex)
                    .ok_or_else(|| {
                        Error::codec(format!(
                            "redis key {k:?} holds a malformed version {:?}",
                            String::from_utf8_lossy(&raw)
                        ))
                    })?,
            ),
            None => None,
        };
        let ttl = u64::try_from(pttl)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Ok(Some(Stored {
            value,
            version,
            ttl,
        }))
    }

    /// Unversioned write: replaces value and version atomically (one script, one key, so it also
    /// works on a cluster, where MULTI across a pipeline does not).
    pub(crate) fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let k = self.full_key(key);
        let ttl_ms = effective_ttl(ttl).map_or(0, ttl_millis);
        self.run(|c| {
            redis::cmd("EVAL")
                .arg(layout::SET_SCRIPT)
                .arg(1)
                .arg(&k)
                .arg(value)
                .arg(ttl_ms)
                .query::<()>(c)
        })
    }

    pub(crate) fn delete(&self, key: &str) -> Result<()> {
        let k = self.full_key(key);
        self.run(|c| redis::cmd("DEL").arg(&k).query::<()>(c))
    }

    pub(crate) fn exists(&self, key: &str) -> Result<bool> {
        let k = self.full_key(key);
        self.run(|c| {
            redis::cmd("HEXISTS")
                .arg(&k)
                .arg(layout::FIELD_VALUE)
                .query(c)
        })
    }

    /// Walks every key under the prefix with `SCAN` (never `KEYS`), on every master of a cluster,
    /// handing each batch to `f`. Keys are raw bytes: a foreign key under the prefix need not be
    /// UTF-8, and must not make `len`/`clear` fail.
    fn scan(
        &self,
        mut f: impl FnMut(&mut Conn, &[Vec<u8>]) -> redis::RedisResult<()>,
    ) -> Result<()> {
        let pattern = format!("{}*", layout::glob_escape(&self.prefix));
        let nodes = self.run(scan::nodes)?;
        for node in &nodes {
            let mut cursor: u64 = 0;
            loop {
                cursor = self.run(|c| {
                    let (next, keys) = scan::step(c, node.as_ref(), cursor, &pattern, SCAN_COUNT)?;
                    f(c, &keys)?;
                    Ok(next)
                })?;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Entries holding a value (tombstones excluded). O(keys under the prefix).
    pub(crate) fn len(&self) -> Result<usize> {
        let mut total = 0;
        self.scan(|c, keys| {
            let present: Vec<bool> = scan::per_key(c, keys, |k| {
                let mut cmd = redis::cmd("HEXISTS");
                cmd.arg(k).arg(layout::FIELD_VALUE);
                cmd
            })?;
            total += present.into_iter().filter(|p| *p).count();
            Ok(())
        })?;
        Ok(total)
    }

    /// Removes every key under the prefix (tombstones too). O(keys under the prefix).
    pub(crate) fn clear(&self) -> Result<()> {
        self.scan(|c, keys| {
            scan::per_key::<()>(c, keys, |k| {
                let mut cmd = redis::cmd("UNLINK");
                cmd.arg(k);
                cmd
            })
            .map(drop)
        })
    }
}

/// Longest TTL sent to Redis (about 2,200 years): `PEXPIRE` rejects expiry times that overflow,
/// and a script must never fail halfway through a write.
const MAX_TTL_MS: u64 = 1 << 46;

/// A TTL in whole milliseconds for `PEXPIRE`: at least 1, at most [`MAX_TTL_MS`].
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    (ttl.as_millis().min(MAX_TTL_MS as u128) as u64).max(1)
}

/// `Some(Duration::ZERO)` means "no TTL" everywhere, as in the reference API (`ttl 0 = never
/// expires`) and in [`LocalCache`](crate::LocalCache).
pub(crate) fn effective_ttl(ttl: Option<Duration>) -> Option<Duration> {
    ttl.filter(|t| !t.is_zero())
}

/// A typed cache stored in Redis under a key prefix.
///
/// Values are encoded with a [`Codec`] (JSON by default) and stored as a Redis hash per key (see
/// the README's "Redis layout"). TTLs use `PEXPIRE`. `len` and `clear` walk the prefix with `SCAN`
/// (never `KEYS`): their cost grows with the number of keys under the prefix, so avoid them on
/// hot paths. Cheap to clone; every clone shares one bounded connection pool.
///
/// ```no_run
/// use distcache::{Cache, RedisCache};
/// use std::time::Duration;
///
/// let users: RedisCache<Vec<u32>> = RedisCache::builder("redis://127.0.0.1:6379/")
///     .key_prefix("app:users:")
///     .build()?;
/// users.set("42", vec![1, 2, 3], Some(Duration::from_secs(60)))?;
/// assert_eq!(users.get("42")?, Some(vec![1, 2, 3]));
/// # Ok::<(), distcache::Error>(())
/// ```
pub struct RedisCache<T> {
    store: Arc<RedisStore>,
    codec: Codec,
    _values: PhantomData<fn() -> T>,
}

impl<T> Clone for RedisCache<T> {
    fn clone(&self) -> Self {
        RedisCache {
            store: self.store.clone(),
            codec: self.codec,
            _values: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for RedisCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.store.prefix)
            .field("codec", &self.codec)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> RedisCache<T> {
    /// A builder for a cache at `url` (`redis://[user[:password]@]host:port[/db]`).
    pub fn builder(url: impl Into<String>) -> RedisCacheBuilder<T> {
        RedisCacheBuilder {
            config: RedisConfig::new(url),
            prefix: String::new(),
            codec: Codec::default(),
            _values: PhantomData,
        }
    }

    /// The key prefix every entry is stored under.
    pub fn key_prefix(&self) -> &str {
        &self.store.prefix
    }

    fn decode(&self, key: &str, bytes: Option<Vec<u8>>) -> Result<Option<T>> {
        bytes
            .map(|b| {
                self.codec.decode(&b).map_err(|e| {
                    Error::codec(format!(
                        "value at redis key {:?} does not decode: {e}",
                        self.store.full_key(key)
                    ))
                })
            })
            .transpose()
    }
}

impl<T: Serialize + DeserializeOwned> Cache<T> for RedisCache<T> {
    /// Writes unconditionally (no version check) and clears any stored version.
    fn set(&self, key: &str, value: T, ttl: Option<Duration>) -> Result<()> {
        let bytes = self.codec.encode(&value)?;
        self.store.set(key, &bytes, ttl)
    }

    fn get(&self, key: &str) -> Result<Option<T>> {
        let bytes = self.store.get(key)?;
        self.decode(key, bytes)
    }

    /// Same as `get`: Redis keeps no recency order for us to disturb.
    fn peek(&self, key: &str) -> Result<Option<T>> {
        self.get(key)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.store.delete(key)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        self.store.exists(key)
    }

    /// Counts entries under the prefix with `SCAN` + `HEXISTS`: O(keys under the prefix).
    fn len(&self) -> Result<usize> {
        self.store.len()
    }

    /// Unlinks every key under the prefix with `SCAN` + `UNLINK`: O(keys under the prefix).
    /// With an empty prefix this clears the whole database.
    fn clear(&self) -> Result<()> {
        self.store.clear()
    }
}

/// Configures a [`RedisCache`]. Created by [`RedisCache::builder`].
pub struct RedisCacheBuilder<T> {
    config: RedisConfig,
    prefix: String,
    codec: Codec,
    _values: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> RedisCacheBuilder<T> {
    /// Prefix for every key (the reference's `WithRedisKeyPrefix`), e.g. `"app:users:"`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Value codec (default [`Codec::Json`]).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Talk to a Redis Cluster: the URL is then a comma-separated list of seed nodes
    /// (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`). `len`/`clear` scan every master.
    pub fn cluster(mut self, on: bool) -> Self {
        self.config.cluster = on;
        self
    }

    /// Most pooled connections (default 16).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.config.pool_size = size;
        self
    }

    /// Deadline to open a connection (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Deadline for each request (default 2 s).
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.config.io_timeout = timeout;
        self
    }

    /// Replaces all connection settings at once.
    pub fn config(mut self, config: RedisConfig) -> Self {
        self.config = config;
        self
    }

    /// Connects and pings the server: [`Error::Unavailable`] when it cannot be reached,
    /// [`Error::Config`] for a malformed URL or setting.
    pub fn build(self) -> Result<RedisCache<T>> {
        Ok(RedisCache {
            store: Arc::new(RedisStore::connect(&self.config, self.prefix)?),
            codec: self.codec,
            _values: PhantomData,
        })
    }
}
