//! One test's deployment: a redis-server and a broker of its own, a namespace and key prefix, and
//! everything a test starts on them: in-process state nodes and core nodes, the
//! `distcache-state-node` binary and `examples/core_node` as child processes, hand-made events on
//! the set-del topic, a reader of the done topic, Redis read back by the layout, and the servers'
//! log tails for failure messages.
//!
//! Dropping it stops both servers; drop the nodes first (declare them after it).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use distcache::event::{Event, TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{DistributedCache, StateNode, StateNodeBuilder, DEFAULT_KEY_PREFIX};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    assigned_partitions, free_port, init_logs, produce_events, produce_records, unique_name,
    wait_until, Broker, ChildProcess, CoreNodeProcess, DoneWatcher, Outgoing, RedisProbe,
    RedisServer, Stored, PARTITIONS, PATIENCE, WAIT,
};

/// The state-node binary's settings in the fault tests: the topics' partition count (`PARTITIONS`,
/// held equal at compile time below), small batches that go out at once, two Redis workers, and no periodic
/// metrics lines in its log.
pub const BATCHED_NODE_ARGS: &[&str] = &[
    "--partitions",
    "8",
    "--batch-size",
    "256",
    "--batch-wait-ms",
    "2",
    "--threads",
    "2",
    "--metrics-interval-s",
    "0",
];
const _: () = assert!(
    PARTITIONS == 8,
    "BATCHED_NODE_ARGS' --partitions must be PARTITIONS"
);

pub struct Deployment {
    pub redis: RedisServer,
    pub broker: Broker,
    /// The namespace of [`core_node`](Self::core_node) and the `*_as` core-node processes.
    pub ns: String,
    /// The key prefix of every node started here and of the Redis probe.
    pub prefix: String,
    /// How long a core node started here waits for `*_and_wait` and a core-node process may take
    /// to answer.
    pub wait: Duration,
    probe: Mutex<RedisProbe>,
}

impl Deployment {
    /// Both servers, the default key prefix, no topics (the first node creates them); core nodes
    /// wait up to 30 s.
    pub fn start() -> Deployment {
        let mut d = Deployment::on(
            RedisServer::start(),
            Broker::start(),
            &unique_name("ns"),
            DEFAULT_KEY_PREFIX,
        );
        d.wait = Duration::from_secs(30);
        d
    }

    /// Both servers, a namespace unique to the test and the key prefix `name:`; core nodes wait up
    /// to [`WAIT`].
    pub fn named(name: &str) -> Deployment {
        Deployment::on(
            RedisServer::start(),
            Broker::start(),
            &unique_name(name),
            &format!("{name}:"),
        )
    }

    /// A deployment on servers the caller started (a Redis with its append-only file on, a broker
    /// of a given kind); core nodes wait up to [`WAIT`].
    pub fn on(redis: RedisServer, broker: Broker, ns: &str, prefix: &str) -> Deployment {
        init_logs();
        let probe = RedisProbe::with_prefix(&redis.url(), prefix);
        Deployment {
            redis,
            broker,
            ns: ns.to_string(),
            prefix: prefix.to_string(),
            wait: WAIT,
            probe: Mutex::new(probe),
        }
    }

    /// Creates both topics with `partitions` partitions.
    pub fn with_topics(self, partitions: u32) -> Deployment {
        self.broker.create_topic(TOPIC_SET_DEL, partitions);
        self.broker.create_topic(TOPIC_DONE, partitions);
        self
    }

    // --- state nodes ----------------------------------------------------------------------------

    /// An in-process state node with the builder's defaults on this deployment.
    pub fn state_node(&self) -> StateNode {
        self.state_node_with(|b| b)
    }

    /// An in-process state node whose builder is passed through `configure` first.
    pub fn state_node_with(
        &self,
        configure: impl FnOnce(StateNodeBuilder) -> StateNodeBuilder,
    ) -> StateNode {
        configure(
            StateNode::builder()
                .kafka_brokers(self.broker.bootstrap())
                .redis_url(self.redis.url())
                .key_prefix(&self.prefix),
        )
        .start()
        .unwrap_or_else(|e| panic!("state node failed to start: {e}\n{}", self.logs()))
    }

    /// The `distcache-state-node` binary on this deployment, logging at info level to its stderr,
    /// serving `/metrics` and `/health` on a free port and writing its final counters to a file of
    /// its own (`NodeProcess::final_metrics_file`); in consumer group `group` (the
    /// default group when `None`), with `extra` arguments after the deployment's.
    pub fn state_node_process(
        &self,
        label: &str,
        group: Option<&str>,
        extra: &[&str],
    ) -> NodeProcess {
        let metrics = format!("127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().expect("temp dir for the final metrics");
        let final_metrics_file = dir.path().join("final-metrics.json");
        let mut cmd = state_node_command();
        cmd.args(["--brokers", &self.broker.bootstrap()])
            .args(["--redis", &self.redis.url()])
            .args(["--key-prefix", &self.prefix])
            .args(["--log-level", "info"])
            .args(["--metrics-addr", &metrics])
            .arg("--final-metrics-file")
            .arg(&final_metrics_file);
        if let Some(group) = group {
            cmd.args(["--group", group]);
        }
        cmd.args(extra);
        NodeProcess {
            process: ChildProcess::spawn(label, cmd),
            metrics,
            final_metrics_file,
            _dir: dir,
        }
    }

    /// Waits until `node` holds at least one partition (its metrics say so).
    pub fn wait_assigned(&self, node: &NodeProcess) {
        assert!(
            wait_until(PATIENCE, || node.held() > 0),
            "state node got no partitions within {PATIENCE:?}; stderr:\n{}\n{}",
            node.stderr_tail(30),
            self.logs()
        );
    }

    // --- core nodes -----------------------------------------------------------------------------

    /// An in-process core node for namespace `ns`.
    pub fn cache<T>(&self, ns: &str) -> DistributedCache<T>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        DistributedCache::<T>::builder()
            .kafka_brokers(self.broker.bootstrap())
            .redis_url(self.redis.url())
            .namespace(ns)
            .key_prefix(&self.prefix)
            .wait_timeout(self.wait)
            .build()
            .unwrap_or_else(|e| panic!("core node failed to start: {e}\n{}", self.logs()))
    }

    /// The in-process core node `node` of the deployment's namespace (one per process and
    /// namespace), with room for 10 000 local entries.
    pub fn core_node(&self, node: u64) -> DistributedCache<String> {
        DistributedCache::<String>::builder()
            .kafka_brokers(self.broker.bootstrap())
            .redis_url(self.redis.url())
            .namespace(&self.ns)
            .key_prefix(&self.prefix)
            .node_id(node)
            .local_capacity(10_000)
            .wait_timeout(self.wait)
            .build()
            .unwrap_or_else(|e| panic!("core node {node:x} failed to start: {e}\n{}", self.logs()))
    }

    /// `examples/core_node` in its own process for namespace `ns`, with `extra` arguments (e.g.
    /// `--reply-versions`), ready for commands.
    pub fn core_node_process(&self, ns: &str, label: &str, extra: &[&str]) -> CoreNodeProcess {
        let mut args = self.core_node_args(ns);
        args.extend(extra.iter().map(|a| a.to_string()));
        CoreNodeProcess::start(label, &args, self.wait)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// The arguments that put a core-node program speaking `examples/core_node`'s protocol (the
    /// example, the C and Python core nodes) on this deployment, for namespace `ns`.
    pub fn core_node_args(&self, ns: &str) -> Vec<String> {
        vec![
            "--brokers".to_string(),
            self.broker.bootstrap(),
            "--redis".into(),
            self.redis.url(),
            "--namespace".into(),
            ns.to_string(),
            "--prefix".into(),
            self.prefix.clone(),
        ]
    }

    /// Core node `node` of the deployment's namespace in its own process (`--node-id`), with
    /// `extra` arguments; with `--reply-versions` its writes answer `OK <version>`.
    pub fn core_node_process_as(&self, node: u64, extra: &[&str]) -> CoreNodeProcess {
        let id = node.to_string();
        let mut args = vec!["--node-id", id.as_str()];
        args.extend_from_slice(extra);
        self.core_node_process(&self.ns, &format!("core_node {node:x}"), &args)
    }

    // --- the broker -----------------------------------------------------------------------------

    /// Produces hand-made events onto `topic` with a client of our own, waiting for every
    /// acknowledgement.
    pub fn produce(&self, topic: &str, events: &[Event]) {
        produce_events(&self.broker, topic, events)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// Produces hand-made records, each to its topic and partition.
    pub fn produce_records(&self, records: &[Outgoing<'_>]) {
        produce_records(&self.broker, records).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// A reader of the done topic from its beginning (the topic must exist).
    pub fn done_watcher(&self) -> DoneWatcher {
        DoneWatcher::new(&self.broker, self.wait)
    }

    // --- Redis ----------------------------------------------------------------------------------

    /// A probe of its own on the deployment's Redis and key prefix.
    pub fn probe(&self) -> RedisProbe {
        RedisProbe::with_prefix(&self.redis.url(), &self.prefix)
    }

    /// The Redis key of `key` in the deployment's namespace.
    pub fn redis_key(&self, key: &str) -> String {
        distcache::redis_entry_key(&self.prefix, &self.ns, key)
    }

    /// A new blocking connection to the deployment's redis-server.
    pub fn redis_connection(&self) -> redis::Connection {
        redis::Client::open(self.redis.url())
            .and_then(|c| c.get_connection())
            .expect("redis connection")
    }

    /// Runs `f` on the deployment's own Redis connection (reconnecting once if it broke).
    pub fn with_redis<R>(&self, f: impl Fn(&mut redis::Connection) -> redis::RedisResult<R>) -> R {
        self.probe_twice(|probe| probe.query(&f))
    }

    /// What Redis holds for `key` of the deployment's namespace; `None` when it has no entry.
    pub fn stored(&self, key: &str) -> Option<Stored> {
        self.stored_many(&[key.to_string()]).pop().expect("one key")
    }

    /// [`stored`](Self::stored) for many keys in one round trip (reconnecting once if the
    /// connection broke).
    pub fn stored_many(&self, keys: &[String]) -> Vec<Option<Stored>> {
        self.probe_twice(|probe| probe.stored(&self.ns, keys))
    }

    /// Runs `read` on the deployment's Redis probe, a second time if the first failed (the probe
    /// reconnects after a broken connection); panics with Redis' log after two failures.
    fn probe_twice<R>(&self, read: impl Fn(&mut RedisProbe) -> Result<R, String>) -> R {
        let mut probe = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = String::new();
        for _ in 0..2 {
            match read(&mut probe) {
                Ok(r) => return r,
                Err(e) => last = e,
            }
        }
        panic!(
            "redis query failed: {last}\nredis log:\n{}",
            self.redis.log_tail(10)
        )
    }

    // --- diagnostics ----------------------------------------------------------------------------

    /// What a failed wait of a pipeline test prints: the state node's and node A's metrics, node
    /// B's when there is one, and the servers' log tails.
    pub fn report(
        &self,
        state: &StateNode,
        a: &DistributedCache<String>,
        b: Option<&CoreNodeProcess>,
    ) -> String {
        let b = b.map_or(String::new(), |b| format!("node B: {:?}\n", b.metrics()));
        format!(
            "state node: {:?}\nnode A: {:?}\n{b}{}",
            state.metrics(),
            a.metrics(),
            self.logs()
        )
    }

    /// Tails of the servers' logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- broker log:\n{}\n--- redis log:\n{}",
            self.broker.log_tail(15),
            self.redis.log_tail(10)
        )
    }
}

/// The `distcache-state-node` binary with no `DISTCACHE_*` setting inherited from the environment
/// of the test run (only the run's marker), so a test's flags and variables are all it reads.
pub fn state_node_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_distcache-state-node"));
    for (key, _) in std::env::vars() {
        if key.starts_with("DISTCACHE_") && key != "DISTCACHE_TEST_RUN" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A state-node process and the address of its `/metrics` and `/health`.
pub struct NodeProcess {
    pub process: ChildProcess,
    pub metrics: String,
    /// Where the node writes its final counters when it stops (`--final-metrics-file`).
    pub final_metrics_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Partitions the node holds now, from its `distcache_state_node_assigned_partitions` gauge (0
    /// when it holds none or does not answer).
    pub fn held(&self) -> usize {
        assigned_partitions(&self.metrics)
    }
}

impl std::ops::Deref for NodeProcess {
    type Target = ChildProcess;
    fn deref(&self) -> &ChildProcess {
        &self.process
    }
}

/// Whether `a` and `b` hold all `partitions` between them, at least one each.
pub fn split_between(a: &NodeProcess, b: &NodeProcess, partitions: u32) -> bool {
    let (x, y) = (a.held(), b.held());
    x > 0 && y > 0 && x + y == partitions as usize
}
