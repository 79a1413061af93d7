//! The state node: the one writer of Redis.
//!
//! It consumes `core-distributed-cache-set-del` in a consumer group and runs each batch through
//! the pipeline, one file per step:
//! [`intake`] (consumer thread) → bounded channel → [`batcher`] → [`apply`]: [`plan`] (decode,
//! dedup, sort), then Redis through the [`workers`] (versioned Lua script), giving each write a
//! fate → [`deliver`]: [`publish`] one done event per write, wait for the broker's
//! acknowledgements, count, commit offsets. [`pipeline`] only wires the steps (a batch is
//! delivered on its own thread while the next one is applied); [`lifecycle`] is how they all
//! stop, retry and report a failure.

mod apply;
mod batcher;
mod deliver;
mod intake;
mod lifecycle;
mod membership;
mod metrics;
mod pipeline;
mod plan;
mod publish;
mod workers;

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::bounded;
use lru::LruCache;
use parking_lot::Mutex;

use crate::bus::admin::{check_brokers, ensure_topics};
use crate::bus::consumer::group_consumer;
use crate::bus::offsets::OffsetTracker;
use crate::bus::producer::EventProducer;
use crate::connection::{connection_setters, Connection};
use crate::event::{GROUP_SET_DEL, TOPIC_DONE, TOPIC_SET_DEL};
use crate::redis_store::{Connector, PingProbe, RedisStore};
use crate::{Error, Health, MetricsSource, Result};
pub use metrics::StateNodeMetrics;

/// A running state node. Build one with [`StateNode::builder`].
///
/// Dropping it shuts it down like [`StateNode::shutdown`].
///
/// ```no_run
/// use distcache::StateNode;
///
/// let node = StateNode::builder()
///     .kafka_brokers("127.0.0.1:9092")
///     .redis_url("redis://127.0.0.1:6379/")
///     .start()?;
/// // … serve until asked to stop …
/// node.shutdown();
/// # Ok::<(), distcache::Error>(())
/// ```
pub struct StateNode {
    life: Arc<lifecycle::Lifecycle>,
    shutdown_timeout: Duration,
    counters: Arc<metrics::Counters>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    redis: Connector,
}

impl std::fmt::Debug for StateNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateNode")
            .field("stopped", &self.life.stopping())
            .finish()
    }
}

static GLOBAL: OnceLock<StateNode> = OnceLock::new();

impl StateNode {
    /// A builder with defaults.
    pub fn builder() -> StateNodeBuilder {
        StateNodeBuilder::default()
    }

    /// Starts the process-wide state node once (the reference's `Init()`); later calls return the
    /// node started first and ignore their builder.
    pub fn init(builder: StateNodeBuilder) -> Result<&'static StateNode> {
        if let Some(node) = GLOBAL.get() {
            return Ok(node);
        }
        let node = builder.start()?;
        // If another thread won the race, ours shuts down on drop and theirs is returned.
        Ok(GLOBAL.get_or_init(|| node))
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> StateNodeMetrics {
        self.counters.snapshot()
    }

    /// A cheap, cloneable view of this node for a [`MetricsServer`](crate::MetricsServer): its
    /// metrics page and its health (holds partitions, Redis answers `PING`, has not failed).
    ///
    /// ```no_run
    /// use distcache::{MetricsServer, StateNode};
    ///
    /// let node = StateNode::builder()
    ///     .kafka_brokers("127.0.0.1:9092")
    ///     .redis_url("redis://127.0.0.1:6379/")
    ///     .start()?;
    /// let _server = MetricsServer::serve("0.0.0.0:9464", node.monitor())?;
    /// # Ok::<(), distcache::Error>(())
    /// ```
    pub fn monitor(&self) -> StateNodeMonitor {
        StateNodeMonitor {
            counters: self.counters.clone(),
            life: self.life.clone(),
            redis: Arc::new(PingProbe::new(self.redis.clone())),
        }
    }

    /// Why the node stopped by itself, if it did: a Redis worker kept panicking on one batch, or
    /// the pipeline thread died. Such a node has left its consumer group with that batch
    /// uncommitted (another node, or a restart, replays it) and consumes nothing more: shut it
    /// down and start a new one. With an [`instance_id`](StateNodeBuilder::instance_id) (static
    /// membership) the broker keeps its partitions for the session timeout or until a node with
    /// the same id joins. `None` while it runs (and after a plain [`shutdown`](Self::shutdown)).
    pub fn failure(&self) -> Option<String> {
        self.life.failure()
    }

    /// Stops consuming, finishes and commits the batch in progress, leaves the group and joins
    /// every thread. If Redis or the broker stays unreachable, gives up after the shutdown timeout
    /// and leaves that batch uncommitted (it is replayed by the next owner). Idempotent.
    pub fn shutdown(&self) {
        self.life.shut_down_within(self.shutdown_timeout);
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        self.counters
            .assigned_partitions
            .store(0, Ordering::Relaxed);
    }
}

/// A state node's metrics and health for a [`MetricsServer`](crate::MetricsServer), from
/// [`StateNode::monitor`]. Cheap to clone; keeps no thread of its own.
///
/// Healthy (`/health` 200) when the node runs, holds at least one partition and its Redis answers
/// `PING` (one connection, kept between checks, with the Redis timeouts); otherwise 503 with the
/// reasons. A node of a group with more state nodes than partitions holds none and reports 503:
/// it is a standby.
#[derive(Clone)]
pub struct StateNodeMonitor {
    counters: Arc<metrics::Counters>,
    life: Arc<lifecycle::Lifecycle>,
    redis: Arc<PingProbe>,
}

impl std::fmt::Debug for StateNodeMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateNodeMonitor").finish_non_exhaustive()
    }
}

impl MetricsSource for StateNodeMonitor {
    fn metrics(&self) -> String {
        self.counters.snapshot().to_prometheus()
    }

    fn health(&self) -> Health {
        if let Some(why) = self.life.failure() {
            return Health::unavailable(format!("failed: {why}"));
        }
        if self.life.stopping() {
            return Health::unavailable("stopping");
        }
        let held = self.counters.assigned_partitions.load(Ordering::Relaxed);
        let mut problems = Vec::new();
        if held == 0 {
            problems.push("holds no partitions".to_string());
        }
        if let Err(e) = self.redis.ping() {
            problems.push(format!("redis does not answer PING: {e}"));
        }
        if problems.is_empty() {
            Health::ok(format!("ok: holds {held} partitions, redis answers PING"))
        } else {
            Health::unavailable(problems.join("; "))
        }
    }
}

impl Drop for StateNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Configures and starts a [`StateNode`].
#[derive(Clone, Debug)]
pub struct StateNodeBuilder {
    connection: Connection,
    group: String,
    max_batch: usize,
    max_wait: Duration,
    redis_workers: usize,
    tombstone_ttl: Duration,
    inline_value_limit: usize,
    version_cache: usize,
    shutdown_timeout: Duration,
    max_clock_skew: Duration,
    max_intake_bytes: usize,
    membership: membership::Membership,
    trace: bool,
}

/// Default bound on the bytes of consumed records waiting for the pipeline (64 MiB).
pub const DEFAULT_MAX_INTAKE_BYTES: usize = 64 * 1024 * 1024;

impl Default for StateNodeBuilder {
    fn default() -> Self {
        StateNodeBuilder {
            connection: Connection::default(),
            group: GROUP_SET_DEL.into(),
            max_batch: 1024,
            max_wait: Duration::ZERO,
            redis_workers: 4,
            tombstone_ttl: Duration::from_secs(600),
            inline_value_limit: 64 * 1024,
            version_cache: 100_000,
            shutdown_timeout: Duration::from_secs(10),
            max_clock_skew: crate::version::DEFAULT_MAX_CLOCK_SKEW,
            max_intake_bytes: DEFAULT_MAX_INTAKE_BYTES,
            membership: membership::Membership::default(),
            trace: false,
        }
    }
}

impl StateNodeBuilder {
    connection_setters!("core nodes");

    /// Times this node's stages of each event's journey (default off): produced → taken for
    /// applying (`trace_consumed_us`: the writer's wall clock in the envelope to this node's),
    /// Redis apply (`trace_applied_us`) and applied → done events acknowledged (`trace_done_us`,
    /// both this node's monotonic clock), in [`StateNodeMetrics`](crate::StateNodeMetrics), and
    /// logs each batch at debug level (target `distcache::trace`). Core nodes time the rest with
    /// their builder's `trace`. Off, nothing is recorded or logged.
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// Partitions of the topics when this node creates them (default 8).
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.connection.kafka.partitions = partitions;
        self
    }

    /// Consumer group (default `core-distributed-cache-set-del`). State nodes in one group split
    /// the partitions.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Most events per batch (default 1024).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// Longest wait for a batch to fill after its first event (default 0: a batch is whatever has
    /// arrived by the time the pipeline is ready for it). Under load, events queue up while the
    /// previous batch is applied, so batches grow by themselves; waiting only adds latency.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Redis worker threads, each with its own connection (default 4).
    pub fn redis_workers(mut self, n: usize) -> Self {
        self.redis_workers = n;
        self
    }

    /// How long a delete's tombstone keeps an older set from resurrecting the key (default 10 min).
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }

    /// Largest value inlined in done events (default 64 KiB); larger values are omitted and core
    /// nodes drop their local copy instead.
    pub fn inline_value_limit(mut self, bytes: usize) -> Self {
        self.inline_value_limit = bytes;
        self
    }

    /// Keys whose last applied version is remembered to skip Redis for stale events (default 100k).
    pub fn version_cache(mut self, keys: usize) -> Self {
        self.version_cache = keys;
        self
    }

    /// How long [`StateNode::shutdown`] keeps retrying an unreachable Redis or broker (default 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How far ahead of this node's wall clock an event's version may be (default
    /// [`DEFAULT_MAX_CLOCK_SKEW`](crate::version::DEFAULT_MAX_CLOCK_SKEW), 1 h). An event stamped
    /// further ahead — a node with a broken clock, a hand-made message — is refused: logged,
    /// counted (`future_refused`), reported `stale` on the done topic and committed, so it
    /// cannot make every correct write to its key lose until the wall clock catches up.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// Most bytes of consumed records waiting between the consumer and the pipeline (default
    /// [`DEFAULT_MAX_INTAKE_BYTES`], 64 MiB). The wait is also bounded in records (four batches);
    /// when either bound is reached the consumer waits. A single record larger than the bound
    /// passes alone.
    pub fn max_intake_bytes(mut self, bytes: usize) -> Self {
        self.max_intake_bytes = bytes;
        self
    }

    /// A static member id for this node (Kafka's `group.instance.id`; default none: dynamic
    /// membership). Give each state node of a group its own stable id (e.g. a StatefulSet pod
    /// name): a node restarted with the same id takes its partitions back at once, without a
    /// rebalance and without waiting for the session timeout. A static member does not leave the
    /// group when it stops, so its partitions wait for its restart or for the session timeout;
    /// see the README's "Failover" notes. Only letters, digits, `.`, `_` and `-`, at most 249.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.membership.instance_id = Some(id.into());
        self
    }

    /// How long the broker waits for a silent member before giving its partitions to the other
    /// state nodes (`session.timeout.ms`, default 6 s: Apache Kafka's default lower bound
    /// `group.min.session.timeout.ms`). Must be longer than the heartbeat interval and within the
    /// broker's limits.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.membership.session_timeout = timeout;
        self
    }

    /// How often the node heartbeats to the group coordinator (`heartbeat.interval.ms`, default
    /// 1 s); survivors of a dead node rejoin within about one interval. Must be shorter than the
    /// session timeout (a third of it or less is usual).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.membership.heartbeat_interval = interval;
        self
    }

    fn validate(&self) -> Result<()> {
        self.connection.validate()?;
        self.membership.validate()?;
        if self.max_batch == 0
            || self.redis_workers == 0
            || self.version_cache == 0
            || self.max_intake_bytes == 0
        {
            return Err(Error::Config(
                "max_batch, redis_workers, version_cache and max_intake_bytes must be at least 1"
                    .into(),
            ));
        }
        if self.tombstone_ttl < Duration::from_millis(1) {
            return Err(Error::Config("tombstone_ttl must be at least 1 ms".into()));
        }
        if self.group.is_empty() {
            return Err(Error::Config("consumer group must not be empty".into()));
        }
        if self.max_clock_skew < Duration::from_millis(1) {
            return Err(Error::Config("max_clock_skew must be at least 1 ms".into()));
        }
        Ok(())
    }

    /// Checks the configuration and that both services answer, changing nothing: Redis `PING`
    /// (with the Redis timeouts), then a metadata request to the brokers (within the Kafka
    /// request timeout). No topic is created and no group joined. Errors say which service
    /// failed: [`Error::Config`] for settings (credentials included), otherwise an error naming
    /// `redis` or `kafka` ([`Error::Unavailable`]'s `service`, or the message of
    /// [`Error::Timeout`] / [`Error::Rejected`]).
    pub fn check(&self) -> Result<()> {
        self.validate()?;
        RedisStore::connect(&self.connection.redis, self.connection.key_prefix.clone())?;
        check_brokers(&self.connection.kafka)
    }

    /// Checks the configuration, connects to Redis (ping) and Kafka, creates the topics if
    /// missing, joins the consumer group and starts the pipeline threads.
    pub fn start(self) -> Result<StateNode> {
        self.validate()?;
        let store =
            RedisStore::connect(&self.connection.redis, self.connection.key_prefix.clone())?;
        ensure_topics(&self.connection.kafka, &[TOPIC_SET_DEL, TOPIC_DONE])?;
        let producer = EventProducer::new(&self.connection.kafka, Duration::ZERO)?;

        let counters = Arc::new(metrics::Counters::default());
        let life = Arc::new(lifecycle::Lifecycle::default());
        // Bounded: at most a few batches wait between the consumer and the pipeline.
        let (tx, rx) = bounded(self.max_batch.saturating_mul(4).max(64));

        let budget = Arc::new(intake::ByteBudget::new(self.max_intake_bytes));
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));

        let revoke_tx = tx.clone();
        let closing = life.clone();
        let consumer = Arc::new(group_consumer(
            &self.membership.consumer_config(&self.connection.kafka),
            &self.group,
            TOPIC_SET_DEL,
            tracker.clone(),
            counters.assigned_partitions.clone(),
            move || {
                // On shutdown the pipeline is already drained and may be gone.
                if !closing.stopping() {
                    intake::barrier(&revoke_tx);
                }
            },
        )?);

        let workers = workers::RedisWorkers::start(
            store.connector().clone(),
            workers::ApplySettings {
                prefix: self.connection.key_prefix.clone(),
                tombstone_ms: self.tombstone_ttl.as_millis().max(1) as u64,
            },
            self.redis_workers,
            counters.clone(),
        )?;
        let pipeline = pipeline::Pipeline {
            batcher: batcher::Batcher::new(rx, self.max_batch, self.max_wait, budget.clone()),
            apply: apply::ApplyStage {
                workers,
                applied: LruCache::with_hasher(
                    NonZeroUsize::new(self.version_cache).expect("validated"),
                    Default::default(),
                ),
                counters: counters.clone(),
                life: life.clone(),
                max_clock_skew_ms: self.max_clock_skew.as_millis().min(u64::MAX as u128) as u64,
                trace: self.trace,
            },
            delivery: deliver::Delivery {
                producer,
                consumer: consumer.clone(),
                counters: counters.clone(),
                life: life.clone(),
                inline_value_limit: self.inline_value_limit,
            },
            life: life.clone(),
        };
        let intake = intake::IntakeThread {
            consumer,
            tx,
            life: life.clone(),
            counters: counters.clone(),
            kafka: self.connection.kafka.clone(),
            tracker,
            budget,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::Config(format!("cannot start thread {name}: {e}")))
        };
        let died = life.clone();
        let pipeline_thread = spawn(
            "distcache-pipeline",
            Box::new(move || {
                // A bug that kills the pipeline must not leave the intake holding the partitions.
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.run()));
                if run.is_err() {
                    died.fail("the pipeline thread panicked".into());
                }
            }),
        )?;
        let intake_thread = spawn("distcache-intake", Box::new(move || intake.run()))?;
        log::info!(target: "distcache::state_node",
            "state node started: brokers {}, group {}, {} redis workers, batches of {} / {:?}",
            self.connection.kafka.brokers, self.group, self.redis_workers, self.max_batch, self.max_wait);
        Ok(StateNode {
            life,
            shutdown_timeout: self.shutdown_timeout,
            counters,
            threads: Mutex::new(vec![intake_thread, pipeline_thread]),
            redis: store.connector().clone(),
        })
    }
}
