//! Configures and builds a [`DistributedCache`].

use std::marker::PhantomData;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Serialize};

use super::clock::process_clock;
use super::fill_guard::FillGuard;
use super::listener::Listener;
use super::{load, metrics, registry, waiters, DistributedCache, Inner};
use crate::bus::admin::ensure_topics;
use crate::bus::consumer::broadcast_consumer;
use crate::bus::producer::EventProducer;
use crate::connection::{connection_setters, Connection};
use crate::event::{TOPIC_DONE, TOPIC_SET_DEL};
use crate::redis_store::{redis_namespace_prefix, RedisStore};
use crate::{Codec, Error, LocalCache, Result};

/// Most keys whose newest applied version `wait_for` remembers apart from the local cache.
const MAX_SEEN_KEYS: usize = 1_000_000;

/// Longest namespace accepted (it travels in every event).
const MAX_NAMESPACE_LEN: usize = 1024;

/// The namespace a [`DistributedCache<T>`] uses when none is configured: the type's name
/// (`std::any::type_name::<T>()`) with every `::` replaced by `.`, e.g. `alloc.string.String` or
/// `myapp.model.User`. Its Redis keys are then `distcache:myapp.model.User:KEY` (a `:` left in a
/// generic type's name is escaped, see [`redis_entry_key`](crate::redis_entry_key)). The
/// compiler's type names can change between Rust versions and crate refactorings; set
/// [`namespace`](DistributedCacheBuilder::namespace) explicitly when nodes built by different
/// compilers share a namespace.
///
/// ```
/// assert_eq!(distcache::default_namespace::<String>(), "alloc.string.String");
/// assert_eq!(distcache::default_namespace::<Vec<u8>>(), "alloc.vec.Vec<u8>");
/// ```
pub fn default_namespace<T: ?Sized>() -> String {
    std::any::type_name::<T>().replace("::", ".")
}

/// Local weigher of a [`DistributedCacheBuilder`].
type Weigher<T> = Arc<dyn Fn(&str, &T) -> u64 + Send + Sync>;

/// Configures a [`DistributedCache`]. Created by [`DistributedCache::builder`].
///
/// One instance runs per (process, namespace): if the namespace already has a live instance,
/// [`build`](Self::build) returns a handle to it and the rest of this builder is ignored.
pub struct DistributedCacheBuilder<T> {
    connection: Connection,
    namespace: Option<String>,
    local_capacity: usize,
    local_ttl: Option<Duration>,
    local_weigher: Option<Weigher<T>>,
    codec: Codec,
    node_id: Option<u64>,
    wait_timeout: Duration,
    max_waiters: usize,
    absent_ttl: Option<Duration>,
    trace: bool,
    _values: PhantomData<fn() -> T>,
}

/// Credentials stay out: the Redis password and secret Kafka properties print as `***`.
impl<T> std::fmt::Debug for DistributedCacheBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedCacheBuilder")
            .field("connection", &self.connection)
            .field("namespace", &self.namespace)
            .field("local_capacity", &self.local_capacity)
            .field("local_ttl", &self.local_ttl)
            .field("local_weigher", &self.local_weigher.is_some())
            .field("codec", &self.codec)
            .field("node_id", &self.node_id)
            .field("wait_timeout", &self.wait_timeout)
            .field("max_waiters", &self.max_waiters)
            .field("absent_ttl", &self.absent_ttl)
            .field("trace", &self.trace)
            .finish()
    }
}

impl<T> DistributedCacheBuilder<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        DistributedCacheBuilder {
            connection: Connection::default(),
            namespace: None,
            local_capacity: 10_000,
            local_ttl: None,
            local_weigher: None,
            codec: Codec::default(),
            node_id: None,
            wait_timeout: Duration::from_secs(10),
            max_waiters: 10_000,
            absent_ttl: None,
            trace: false,
            _values: PhantomData,
        }
    }

    connection_setters!("state nodes");

    /// The namespace (default: [`default_namespace::<T>()`](default_namespace), the type's name
    /// with `::` replaced by `.`). Every node caching the same data must use the same namespace.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Local cache capacity in entries (default 10 000).
    pub fn local_capacity(mut self, entries: usize) -> Self {
        self.local_capacity = entries;
        self
    }

    /// Default TTL of local entries written without one (default: none).
    pub fn local_ttl(mut self, ttl: Duration) -> Self {
        self.local_ttl = Some(ttl);
        self
    }

    /// Negative caching (default off; `Duration::ZERO` turns it off): a `get_with_sync` that finds
    /// nothing in Redis, and a `get_or_load` whose loader returns `None`, leave an absent marker in
    /// the local tier for `ttl`; until it expires, reads of the key answer `None` without asking
    /// Redis or the loader (counted in `negative_hits`). A newer write of the key that reaches this
    /// node through the done topic (a set or delete from any node, plain or synced) replaces the
    /// marker at once. Markers are local entries of weight one, so they count against
    /// [`local_capacity`](Self::local_capacity) and are evicted like values.
    ///
    /// Pitfalls: a value written to Redis by anything other than distcache (no done event) stays
    /// invisible here for up to `ttl`; so does a write whose done event this node has not received
    /// yet (the usual propagation delay, or a state node that is down); and many distinct missing
    /// keys (a scan, an attack) fill the local tier with markers, pushing out values. Keep `ttl`
    /// short (seconds).
    ///
    /// ```
    /// use distcache::DistributedCache;
    /// use std::time::Duration;
    ///
    /// let builder = DistributedCache::<String>::builder()
    ///     .kafka_brokers("127.0.0.1:9092")
    ///     .redis_url("redis://127.0.0.1:6379/")
    ///     .absent_ttl(Duration::from_secs(5));
    /// # let _ = builder;
    /// ```
    pub fn absent_ttl(mut self, ttl: Duration) -> Self {
        self.absent_ttl = Some(ttl).filter(|t| !t.is_zero());
        self
    }

    /// Weighs local entries: the local capacity is then in weight units and a value heavier than
    /// a local shard's share of it is not kept locally (reads of it go to Redis).
    pub fn local_weigher(
        mut self,
        weigher: impl Fn(&str, &T) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.local_weigher = Some(Arc::new(weigher));
        self
    }

    /// Value codec (default JSON); every node of the namespace must use the same.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Node id stamped into versions (default: one random 64-bit id per process). A configured id
    /// must be unique among all processes writing to the same topics: a second process using it is
    /// detected on the done topic, after which every write with the id fails with
    /// [`Error::Config`]. Caches of one process share one clock counter whatever their ids, so
    /// the process never issues one version twice.
    pub fn node_id(mut self, id: u64) -> Self {
        self.node_id = Some(id);
        self
    }

    /// How long the `*_and_wait` calls wait for the state node (default 10 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Most writers waiting at once in `*_and_wait` calls (default 10 000).
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.max_waiters = n;
        self
    }

    /// Traces each event's journey (default off): this node's writes are timed from the produce
    /// call to the broker's acknowledgement (`trace_produce_us`, this node's monotonic clock), and
    /// every done event of the namespace in two spans split at the done record's timestamp:
    /// produced → done produced (`trace_to_done_us`: the writer's wall clock in the envelope to the
    /// state node's wall clock in the record timestamp) and done produced → seen here
    /// (`trace_done_to_seen_us`: to this node's wall clock). Each event is also logged at debug
    /// level (targets `distcache::trace` and `distcache::listener`). The state node's own stages are
    /// timed by its builder's `trace`. Off, nothing is recorded or logged.
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    fn validate(&self, ns: &str) -> Result<()> {
        self.connection.validate()?;
        if ns.is_empty() || ns.len() > MAX_NAMESPACE_LEN || ns.contains('\x1f') {
            return Err(Error::Config(format!(
                "namespace {ns:?} must be 1..={MAX_NAMESPACE_LEN} bytes without \\x1f"
            )));
        }
        if self.wait_timeout.is_zero() || self.max_waiters == 0 {
            return Err(Error::Config(
                "wait_timeout and max_waiters must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Connects to Redis (ping) and Kafka, creates the topics if missing, and starts the
    /// namespace's listener at the end of the done topic. When this returns, every done event
    /// produced afterwards reaches this node.
    pub fn build(self) -> Result<DistributedCache<T>> {
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(default_namespace::<T>);
        self.validate(&ns)?;
        let inner =
            registry::get_or_build(&ns, std::any::type_name::<T>(), || self.start(ns.clone()))?;
        Ok(DistributedCache { inner })
    }

    fn start(&self, ns: String) -> Result<Arc<Inner<T>>> {
        let clock = process_clock(self.node_id)?;
        if clock.is_duplicate() {
            return Err(Error::Config(format!(
                "another process uses node id {:x}; give every process its own node id",
                clock.node()
            )));
        }
        let mut local = LocalCache::builder().capacity(self.local_capacity);
        if let Some(ttl) = self.local_ttl {
            local = local.default_ttl(ttl);
        }
        if let Some(weigher) = &self.local_weigher {
            let weigher = weigher.clone();
            local = local.weigher(move |k, v| weigher(k, v));
        }
        let local = local.build()?;
        let redis = RedisStore::connect(
            &self.connection.redis,
            redis_namespace_prefix(&self.connection.key_prefix, &ns),
        )?;
        ensure_topics(&self.connection.kafka, &[TOPIC_SET_DEL, TOPIC_DONE])?;
        let producer = EventProducer::new(&self.connection.kafka, Duration::ZERO)?;
        let group = format!("distcache-listener-{:x}-{}", clock.node(), ns);
        let consumer = broadcast_consumer(&self.connection.kafka, &group, TOPIC_DONE)?;

        let seen_capacity = self.local_capacity.clamp(1024, MAX_SEEN_KEYS);
        let waiters = Arc::new(waiters::Waiters::new(self.max_waiters, seen_capacity)?);
        let fills = Arc::new(FillGuard::new());
        let counters = Arc::new(metrics::Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let listener = Listener {
            consumer,
            ns: ns.clone(),
            local: local.clone(),
            codec: self.codec,
            clock: clock.clone(),
            waiters: waiters.clone(),
            fills: fills.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            trace: self.trace,
        };
        let handle = std::thread::Builder::new()
            .name(format!("distcache-listener-{ns}"))
            .spawn(move || listener.run())
            .map_err(|e| Error::Config(format!("cannot start the listener thread: {e}")))?;
        log::info!(target: "distcache::core",
            "core node {:x} serving namespace {ns:?} (brokers {})", clock.node(), self.connection.kafka.brokers);
        Ok(Arc::new(Inner {
            ns,
            local,
            redis,
            codec: self.codec,
            producer,
            clock,
            waiters,
            fills,
            counters,
            loads: load::SingleFlight::new(),
            wait_timeout: self.wait_timeout,
            local_default_ttl: self.local_ttl,
            absent_ttl: self.absent_ttl,
            trace: self.trace,
            stop,
            listener: Mutex::new(Some(handle)),
            after_produce: Mutex::new(None),
        }))
    }
}
