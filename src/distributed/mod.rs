//! The core node: [`DistributedCache<T>`], the cache an application embeds.
//!
//! Writes become versioned events on `core-distributed-cache-set-del` and return once the broker
//! acknowledged them; the writer's local cache holds the new value at once. A state node applies
//! the events to Redis and reports them on `core-distributed-cache-done`, which the
//! [`listener`] of every core node (origin included) applies to its local cache by version.
//! Reads go local → Redis (`get_with_sync`) → loader (`get_or_load`).

mod builder;
mod clock;
mod fill_guard;
mod listener;
mod load;
mod local_view;
mod metrics;
mod pending;
mod registry;
#[cfg(test)]
mod test_events;
mod waiters;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Serialize};

use crate::bus::producer::EventProducer;
use crate::event::{Op, WriteEvent, TOPIC_SET_DEL};
use crate::redis_store::{effective_ttl, RedisStore, Stored};
use crate::{Cache, Codec, Error, LocalCache, Result, Version};
pub use builder::{default_namespace, DistributedCacheBuilder};
use clock::NodeClock;
use fill_guard::{FillGuard, Ticket};
pub use local_view::LocalView;
pub use metrics::DistributedMetrics;
pub use waiters::WriteOutcome;

/// A two-tier distributed cache of `T` for one namespace. Cheap to clone, `Send + Sync`.
///
/// | call | local cache | Redis | other nodes' local caches |
/// |---|---|---|---|
/// | [`set`](Cache::set) / [`delete`](Cache::delete) | at once | value untouched, version recorded (`pver`) | via the done topic |
/// | [`set_with_sync`](Self::set_with_sync) / [`delete_with_sync`](Self::delete_with_sync) | at once | by the state node | via the done topic |
/// | [`get`](Cache::get), [`peek`](Cache::peek), [`exists`](Cache::exists), [`len`](Cache::len) | read | — | — |
/// | [`get_with_sync`](Self::get_with_sync) | read, filled on a miss | read on a local miss | — |
/// | [`clear`](Cache::clear) | cleared | — | — |
///
/// Every write is versioned by a hybrid logical clock; the newest version wins everywhere, in
/// Redis and in every local cache, whatever order events arrive in.
///
/// ```no_run
/// use distcache::{Cache, DistributedCache};
/// use std::time::Duration;
///
/// let prices: DistributedCache<u64> = DistributedCache::builder()
///     .kafka_brokers("127.0.0.1:9092")
///     .redis_url("redis://127.0.0.1:6379/")
///     .namespace("prices")
///     .build()?;
/// prices.set_with_sync("apple", 120, None, Some(Duration::from_secs(3600)))?;
/// assert_eq!(prices.get("apple")?, Some(120)); // read-your-writes, from the local tier
/// assert_eq!(prices.get_with_sync("pear", None)?, None); // local miss → Redis miss
/// # Ok::<(), distcache::Error>(())
/// ```
pub struct DistributedCache<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for DistributedCache<T> {
    fn clone(&self) -> Self {
        DistributedCache {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for DistributedCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedCache")
            .field("namespace", &self.inner.ns)
            .field("node", &self.inner.clock.node())
            .finish()
    }
}

pub(crate) struct Inner<T> {
    ns: String,
    local: LocalCache<T>,
    redis: RedisStore,
    codec: Codec,
    producer: EventProducer,
    clock: Arc<NodeClock>,
    waiters: Arc<waiters::Waiters>,
    fills: Arc<FillGuard>,
    counters: Arc<metrics::Counters>,
    loads: load::SingleFlight<T>,
    wait_timeout: Duration,
    /// The local tier's default TTL, which a fill from Redis must not exceed the remote TTL with.
    local_default_ttl: Option<Duration>,
    /// Negative caching: how long a read that found nothing is remembered locally (`None`: off).
    absent_ttl: Option<Duration>,
    trace: bool,
    stop: Arc<AtomicBool>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// Test hook run between a write's acknowledgement and its local apply.
    after_produce: Mutex<Option<AfterProduce>>,
}

/// See [`DistributedCache::set_after_produce_hook`].
#[doc(hidden)]
pub type AfterProduce = Arc<dyn Fn(&str, Version) + Send + Sync>;

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.listener.lock().take() {
            let _ = handle.join();
        }
    }
}

/// `*_with_sync` writes: the state node also writes Redis.
const ALSO_REDIS: bool = true;
/// Plain writes: replicated to every node's local cache; Redis keeps its value and records the version.
const LOCAL_ONLY: bool = false;

/// A write before it is produced.
struct Write<T> {
    op: Op,
    value: Option<T>,
    local_ttl: Option<Duration>,
    remote_ttl: Option<Duration>,
    write_redis: bool,
}

impl<T> Write<T> {
    fn set(
        value: T,
        local_ttl: Option<Duration>,
        remote_ttl: Option<Duration>,
        write_redis: bool,
    ) -> Self {
        Write {
            op: Op::Set,
            value: Some(value),
            local_ttl: effective_ttl(local_ttl),
            remote_ttl: effective_ttl(remote_ttl),
            write_redis,
        }
    }

    fn delete(write_redis: bool) -> Self {
        Write {
            op: Op::Delete,
            value: None,
            local_ttl: None,
            remote_ttl: None,
            write_redis,
        }
    }
}

impl<T> DistributedCache<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A builder; `kafka_brokers` and `redis_url` are required.
    pub fn builder() -> DistributedCacheBuilder<T> {
        DistributedCacheBuilder::new()
    }

    /// This cache's namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.ns
    }

    /// The id this process stamps into versions.
    pub fn node_id(&self) -> u64 {
        self.inner.clock.node()
    }

    /// A read-only view of the local tier: its values, versions and counters, and dropping local
    /// copies. It cannot write: a value stored only here would bypass replication.
    pub fn local(&self) -> LocalView<'_, T> {
        LocalView::new(&self.inner.local)
    }

    /// A snapshot of this namespace's counters.
    pub fn metrics(&self) -> DistributedMetrics {
        self.inner.counters.snapshot(self.inner.local.metrics())
    }

    /// [`Cache::set`] that also returns the write's version (to match it against done events or
    /// another node's view): local caches only, Redis keeps its value and records the version.
    pub fn set_versioned(&self, key: &str, value: T, ttl: Option<Duration>) -> Result<Version> {
        self.write(key, Write::set(value, ttl, None, LOCAL_ONLY))
    }

    /// [`Cache::delete`] that also returns the write's version.
    pub fn delete_versioned(&self, key: &str) -> Result<Version> {
        self.write(key, Write::delete(LOCAL_ONLY))
    }

    /// Stores `value` locally at once and in Redis and every node's local cache once the state
    /// node applied it. `local_ttl` bounds the local copies, `remote_ttl` the Redis copy;
    /// [`Error::Rejected`] when `remote_ttl` is shorter than `local_ttl` (local copies would
    /// outlive the shared one). Returns once the broker acknowledged the write.
    pub fn set_with_sync(
        &self,
        key: &str,
        value: T,
        local_ttl: Option<Duration>,
        remote_ttl: Option<Duration>,
    ) -> Result<Version> {
        check_ttls(local_ttl, remote_ttl)?;
        self.write(key, Write::set(value, local_ttl, remote_ttl, ALSO_REDIS))
    }

    /// Removes `key` locally at once, and from Redis and every node's local cache once applied.
    pub fn delete_with_sync(&self, key: &str) -> Result<Version> {
        self.write(key, Write::delete(ALSO_REDIS))
    }

    /// Like [`set_with_sync`](Self::set_with_sync), then waits (at most the builder's
    /// `wait_timeout`) until the state node reported the write, and says whether it won.
    pub fn set_with_sync_and_wait(
        &self,
        key: &str,
        value: T,
        local_ttl: Option<Duration>,
        remote_ttl: Option<Duration>,
    ) -> Result<WriteOutcome> {
        check_ttls(local_ttl, remote_ttl)?;
        self.write_and_wait(key, Write::set(value, local_ttl, remote_ttl, ALSO_REDIS))
    }

    /// Like [`delete_with_sync`](Self::delete_with_sync), then waits for the state node's verdict.
    pub fn delete_with_sync_and_wait(&self, key: &str) -> Result<WriteOutcome> {
        self.write_and_wait(key, Write::delete(ALSO_REDIS))
    }

    /// Like [`Cache::set`] (local caches only), then waits for the state node's verdict.
    pub fn set_and_wait(&self, key: &str, value: T, ttl: Option<Duration>) -> Result<WriteOutcome> {
        self.write_and_wait(key, Write::set(value, ttl, None, LOCAL_ONLY))
    }

    /// Cross-node read-your-writes: waits until this node's view of `key` is at least `version`
    /// (typically a version another node's write returned), at most `timeout`.
    ///
    /// Returns `Ok(())` at once when this node's local cache already holds `key` (a value, a
    /// tombstone or an absent marker) at `version` or newer, or when its listener saw a done event
    /// of `key` at `version` or newer (remembered for up to the local capacity of keys, at least
    /// 1024); otherwise once such a done event arrives. "At least" holds when the key was since
    /// overwritten or deleted by a newer write, and when the state node reported `version` itself
    /// stale (a newer write already won in Redis). After `Ok`, [`get`](Cache::get) answers
    /// `version`'s value or a newer state, unless the entry left the local tier since (capacity,
    /// TTL, a value too large to inline): [`get_with_sync`](Self::get_with_sync) then reads Redis,
    /// which the state node wrote before reporting.
    ///
    /// [`Error::Timeout`] when `timeout` passes first (the write may not be applied yet, or it
    /// fell into a gap the listener reset the local cache for); [`Error::Rejected`] when the
    /// builder's `max_waiters` callers (`*_and_wait` and `wait_for` together) already wait.
    ///
    /// ```no_run
    /// use distcache::{Cache, DistributedCache};
    /// use std::time::Duration;
    ///
    /// # let node_a: DistributedCache<u64> = DistributedCache::builder()
    /// #     .kafka_brokers("127.0.0.1:9092").redis_url("redis://127.0.0.1:6379/").build()?;
    /// # let node_b = node_a.clone();
    /// // On node A (the version travels with the request, e.g. in a header):
    /// let version = node_a.set_with_sync("cart:7", 3, None, None)?;
    /// // On node B, before serving the follow-up request:
    /// node_b.wait_for("cart:7", &version, Duration::from_secs(2))?;
    /// assert!(node_b.get("cart:7")?.is_some());
    /// # Ok::<(), distcache::Error>(())
    /// ```
    pub fn wait_for(&self, key: &str, version: &Version, timeout: Duration) -> Result<()> {
        let waiters = &self.inner.waiters;
        // Registered before looking, so an event landing in between is not missed.
        let waiter = waiters.register(key, *version)?;
        if self.view_reached(key, *version) {
            waiters.cancel(key, waiter.id);
            return Ok(());
        }
        let reached = waiter.outcome.recv_timeout(timeout).is_ok();
        waiters.cancel(key, waiter.id);
        if reached || self.view_reached(key, *version) {
            return Ok(());
        }
        Err(Error::Timeout {
            what: format!(
                "[{}] this node's view of {key:?} to reach {version}",
                self.inner.ns
            ),
            after: timeout,
        })
    }

    /// Whether this node's view of `key` is at `version` or newer.
    fn view_reached(&self, key: &str, version: Version) -> bool {
        let inner = &self.inner;
        inner.local.version_of(key).is_some_and(|v| v >= version)
            || inner.waiters.seen(key).is_some_and(|v| v >= version)
    }

    /// Reads the local cache; on a miss reads Redis and fills the local cache (with `local_ttl`,
    /// or the local default) unless a newer event for the key arrived during the read.
    ///
    /// Never returns anything older than what this node knows: when the local cache holds a
    /// newer version of the key than Redis (this node's own delete or write not applied by the
    /// state node yet, a tombstone, a value too heavy for the local tier), the answer comes from
    /// the local state, `None` for a tombstone or a value the local tier could not hold.
    ///
    /// With negative caching on (the builder's [`absent_ttl`](DistributedCacheBuilder::absent_ttl)),
    /// a read that finds nothing in Redis leaves an absent marker in the local tier, and reads of
    /// the key answer `None` from it (counted: `negative_hits`) until it expires or a newer write
    /// of the key reaches this node.
    pub fn get_with_sync(&self, key: &str, local_ttl: Option<Duration>) -> Result<Option<T>> {
        if let Some(v) = self.inner.local.get(key)? {
            return Ok(Some(v));
        }
        if self.negative_hit(key) {
            return Ok(None);
        }
        self.read_through(key, local_ttl, self.inner.absent_ttl)
    }

    /// True (and counted) when negative caching is on and `key` holds an absent marker.
    fn negative_hit(&self, key: &str) -> bool {
        let inner = &self.inner;
        let hit = inner.absent_ttl.is_some() && inner.local.is_absent(key);
        if hit {
            inner.counters.negative_hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Leaves an absent marker for `key` (see [`LocalCache::mark_absent`]) unless an event or a
    /// local write touched the key since `ticket` was taken; undone if one lands while marking.
    fn mark_absent(&self, key: &str, version: Option<Version>, ticket: Ticket, ttl: Duration) {
        let inner = &self.inner;
        if inner.fills.unchanged(key, ticket)
            && inner.local.mark_absent(key, version, ttl)
            && !inner.fills.unchanged(key, ticket)
        {
            inner.local.drop_absent(key);
        }
    }

    /// Reads local, then Redis, then calls `loader` on a miss and stores what it returns with
    /// [`set_with_sync`](Self::set_with_sync) (`local_ttl` and `remote_ttl` as there). Concurrent
    /// callers for one key in this process share one loader call (single flight); the others wait
    /// for its result.
    ///
    /// With negative caching on (the builder's [`absent_ttl`](DistributedCacheBuilder::absent_ttl)),
    /// a loader that returns `None` leaves an absent marker: reads of the key answer `None`
    /// without Redis or the loader until the marker expires or a newer write of the key reaches
    /// this node (counted: `negative_hits`).
    pub fn get_or_load(
        &self,
        key: &str,
        local_ttl: Option<Duration>,
        remote_ttl: Option<Duration>,
        loader: impl FnOnce(&str) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        check_ttls(local_ttl, remote_ttl)?;
        // Absent markers are left only once the loader said "none" too (below).
        let read = |this: &Self| -> Result<Option<Option<T>>> {
            if let Some(v) = this.inner.local.get(key)? {
                return Ok(Some(Some(v)));
            }
            if this.negative_hit(key) {
                return Ok(Some(None));
            }
            Ok(this.read_through(key, local_ttl, None)?.map(Some))
        };
        if let Some(found) = read(self)? {
            return Ok(found);
        }
        self.inner.loads.run(key, || {
            // Another flight may have stored it (or found it absent) while we queued.
            if let Some(found) = read(self)? {
                return Ok(found);
            }
            let ticket = self.inner.fills.ticket(key);
            // The version is taken before the load: what the loader reads is at most as new as
            // this moment, so a write made elsewhere while it runs (a newer version) wins over it.
            let version = self.stamp()?;
            self.inner.counters.loads.fetch_add(1, Ordering::Relaxed);
            let loaded = loader(key)?;
            match (&loaded, self.inner.absent_ttl) {
                (Some(v), _) => {
                    let write = Write::set(v.clone(), local_ttl, remote_ttl, ALSO_REDIS);
                    self.write_at(key, write, version)?;
                }
                (None, Some(ttl)) => self.mark_absent(key, None, ticket, ttl),
                (None, None) => {}
            }
            Ok(loaded)
        })
    }

    /// Reads Redis and fills the local tier; with `absent_ttl`, a miss or a tombstone leaves an
    /// absent marker for that long.
    fn read_through(
        &self,
        key: &str,
        local_ttl: Option<Duration>,
        absent_ttl: Option<Duration>,
    ) -> Result<Option<T>> {
        let inner = &self.inner;
        let ticket = inner.fills.ticket(key);
        inner.counters.redis_reads.fetch_add(1, Ordering::Relaxed);
        match inner.redis.get_stored(key)? {
            None => {
                if let Some(ttl) = absent_ttl {
                    self.mark_absent(key, None, ticket, ttl);
                }
                Ok(None)
            }
            Some(Stored {
                value: None,
                version,
                ..
            }) => {
                if let Some(v) = version {
                    inner.local.delete_if_newer(key, v);
                }
                if let Some(ttl) = absent_ttl {
                    self.mark_absent(key, version, ticket, ttl);
                }
                Ok(None)
            }
            Some(Stored {
                value: Some(bytes),
                version,
                ttl: remote_ttl,
            }) => {
                // A local copy must not outlive the shared one.
                let local_ttl = shorter(
                    effective_ttl(local_ttl).or(inner.local_default_ttl),
                    remote_ttl,
                );
                let value: T = inner.codec.decode(&bytes).map_err(|e| {
                    Error::codec(format!("value of {key:?} in redis does not decode: {e}"))
                })?;
                let version = version.unwrap_or_default();
                // This node knows a newer state of the key (its own write or delete not applied
                // yet, or an event that landed during the read): Redis' value is older.
                if inner
                    .local
                    .version_of(key)
                    .is_some_and(|known| known > version)
                {
                    inner
                        .counters
                        .local_newer_reads
                        .fetch_add(1, Ordering::Relaxed);
                    return inner.local.peek(key);
                }
                if inner.fills.unchanged(key, ticket)
                    && inner
                        .local
                        .set_if_newer(key, value.clone(), local_ttl, version)
                    && !inner.fills.unchanged(key, ticket)
                {
                    // An event landed between the check and the fill: drop what we filled
                    // (unless the event already replaced it with something newer).
                    inner.local.invalidate_unless_newer(key, version);
                }
                Ok(Some(value))
            }
        }
    }

    /// Test hook: `hook(key, version)` runs after each write's acknowledgement and before its local
    /// apply (to delay the apply behind the write's done event). Not part of the API.
    #[doc(hidden)]
    pub fn set_after_produce_hook(&self, hook: Option<AfterProduce>) {
        *self.inner.after_produce.lock() = hook;
    }

    /// A version for a new write from the process clock.
    fn stamp(&self) -> Result<Version> {
        let inner = &self.inner;
        inner.clock.stamp().inspect_err(|e| {
            if matches!(e, Error::Rejected(_)) {
                inner
                    .counters
                    .future_versions
                    .fetch_add(1, Ordering::Relaxed);
            }
            inner
                .counters
                .write_failures
                .fetch_add(1, Ordering::Relaxed);
            log::error!(target: "distcache::core", "[{}] write refused: {e}", inner.ns);
        })
    }

    fn write(&self, key: &str, write: Write<T>) -> Result<Version> {
        let version = self.stamp()?;
        self.write_at(key, write, version)
    }

    fn write_at(&self, key: &str, write: Write<T>, version: Version) -> Result<Version> {
        let event = self.event(key, &write, version)?;
        self.produce_and_apply(key, write, &event)?;
        Ok(version)
    }

    fn write_and_wait(&self, key: &str, write: Write<T>) -> Result<WriteOutcome> {
        let version = self.stamp()?;
        let event = self.event(key, &write, version)?;
        let inner = &self.inner;
        let waiter = inner.waiters.register(key, version)?;
        if let Err(e) = self.produce_and_apply(key, write, &event) {
            inner.waiters.cancel(key, waiter.id);
            return Err(e);
        }
        match waiter.outcome.recv_timeout(inner.wait_timeout) {
            Ok(outcome) => Ok(outcome),
            Err(_) => {
                inner.waiters.cancel(key, waiter.id);
                Err(Error::Timeout {
                    what: format!("state node to apply {key:?} at {version}"),
                    after: inner.wait_timeout,
                })
            }
        }
    }

    /// Produces the write, then applies it locally (read-your-writes), then re-applies any
    /// correction its done event brought before the local apply (see `pending`).
    fn produce_and_apply(&self, key: &str, write: Write<T>, event: &WriteEvent) -> Result<()> {
        let inner = &self.inner;
        let version = event.version;
        inner.waiters.pending.begin(key, version);
        if let Err(e) = self.produce(event) {
            inner.waiters.pending.end(key, version);
            return Err(e);
        }
        let hook = inner.after_produce.lock().clone();
        if let Some(hook) = hook {
            hook(key, version);
        }
        self.apply_locally(key, write, version);
        if let Some(correction) = inner.waiters.pending.end(key, version) {
            inner.local.invalidate_unless_newer(key, correction);
        }
        Ok(())
    }

    fn event(&self, key: &str, write: &Write<T>, version: Version) -> Result<WriteEvent> {
        let inner = &self.inner;
        let value = write
            .value
            .as_ref()
            .map(|v| inner.codec.encode(v))
            .transpose()?;
        // Stamped by this node's clock, so `version.node` is this node: the write's origin.
        let event = match value {
            Some(value) => WriteEvent::set(inner.ns.clone(), key, version, value),
            None => WriteEvent::delete(inner.ns.clone(), key, version),
        };
        let event = if write.write_redis {
            event
        } else {
            event.plain()
        };
        Ok(event.with_ttls(write.remote_ttl, write.local_ttl))
    }

    fn produce(&self, event: &WriteEvent) -> Result<()> {
        let inner = &self.inner;
        let started = std::time::Instant::now();
        match inner
            .producer
            .send_and_wait(TOPIC_SET_DEL, &event.message_key(), &event.encode())
        {
            Ok(()) => {
                inner.counters.writes.fetch_add(1, Ordering::Relaxed);
                if inner.trace {
                    let took = started.elapsed();
                    inner
                        .counters
                        .trace_produce_us
                        .record(took.as_micros() as u64);
                    log::debug!(target: "distcache::trace",
                        "[{}] produced {:?} {:?} at {}: acknowledged after {:.3} ms",
                        inner.ns, event.op, event.key, event.version, took.as_secs_f64() * 1000.0);
                }
                Ok(())
            }
            Err(e) => {
                inner
                    .counters
                    .write_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Read-your-writes: the writer's local cache reflects an acknowledged write at once (unless a
    /// newer version is already there).
    fn apply_locally(&self, key: &str, write: Write<T>, version: Version) {
        let inner = &self.inner;
        inner.fills.touch(key);
        match (write.op, write.value) {
            (Op::Set, Some(value)) => {
                inner
                    .local
                    .set_if_newer(key, value, write.local_ttl, version);
            }
            _ => {
                inner.local.delete_if_newer(key, version);
            }
        }
    }
}

/// The shorter of two TTLs, `None` being "never expires".
fn shorter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn check_ttls(local: Option<Duration>, remote: Option<Duration>) -> Result<()> {
    if let (Some(local), Some(remote)) = (effective_ttl(local), effective_ttl(remote)) {
        if remote < local {
            return Err(Error::Rejected(format!(
                "remote TTL {remote:?} is shorter than local TTL {local:?}"
            )));
        }
    }
    Ok(())
}

impl<T> Cache<T> for DistributedCache<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Replicates `value` to every node's local cache (Redis keeps its value and records the
    /// version, so plain and synced writes of a key share one order); local at once.
    fn set(&self, key: &str, value: T, ttl: Option<Duration>) -> Result<()> {
        self.set_versioned(key, value, ttl).map(|_| ())
    }

    /// Reads this node's local cache only; see [`get_with_sync`](Self::get_with_sync).
    fn get(&self, key: &str) -> Result<Option<T>> {
        self.inner.local.get(key)
    }

    /// Reads this node's local cache without changing recency.
    fn peek(&self, key: &str) -> Result<Option<T>> {
        self.inner.local.peek(key)
    }

    /// Removes `key` from every node's local cache (Redis keeps its value and records the
    /// version); local at once.
    fn delete(&self, key: &str) -> Result<()> {
        self.delete_versioned(key).map(|_| ())
    }

    /// True when this node's local cache holds `key`.
    fn exists(&self, key: &str) -> Result<bool> {
        self.inner.local.exists(key)
    }

    /// Entries in this node's local cache.
    fn len(&self) -> Result<usize> {
        self.inner.local.len()
    }

    /// Clears this node's local cache only (other nodes and Redis are untouched).
    fn clear(&self) -> Result<()> {
        self.inner.fills.reset();
        self.inner.local.clear()
    }
}
