//! The harness of the pipeline tests (`pipeline_convergence`, `pipeline_order`): a redis-server and a
//! broker per test, in-process and child-process state and core nodes on them, Redis read back per key,
//! and the check that Redis holds the newest of every writer's acknowledged writes.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use distcache::event::{now_micros, Event, Op, WriteEvent};
use distcache::{DistributedCache, StateNode, StateNodeMetrics, Version, WriteOutcome};

use super::{
    produce_events, unique_name, wait_until, Broker, ChildProcess, CoreNodeProcess, DoneWatcher,
    RedisServer,
};

/// The cap of every wait: generous for a loaded 2-core machine; waits end as soon as their condition holds.
pub const WAIT: Duration = Duration::from_secs(60);
/// Node ids of the two core nodes of a test (B is the child process, with the higher id).
pub const NODE_A: u64 = 0xA;
pub const NODE_B: u64 = 0xB;

// ---------------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------------

pub fn init_logs() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .is_test(true)
        .try_init();
}

/// What Redis holds for one key: the decoded value (`None` in a tombstone) and the version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub value: Option<String>,
    pub version: Option<Version>,
}

/// One redis-server, one broker, and the namespace and key prefix the test's nodes share.
pub struct Cluster {
    pub ns: String,
    pub prefix: String,
    pub redis: RedisServer,
    pub broker: Broker,
    conn: Mutex<Option<redis::Connection>>,
}

impl Cluster {
    pub fn start(name: &str) -> Cluster {
        init_logs();
        let redis = RedisServer::start();
        let broker = Broker::start();
        Cluster {
            ns: unique_name(name),
            prefix: format!("{name}:"),
            redis,
            broker,
            conn: Mutex::new(None),
        }
    }

    /// An in-process state node with the test's key prefix.
    pub fn state_node(&self) -> StateNode {
        StateNode::builder()
            .kafka_brokers(self.broker.bootstrap())
            .redis_url(self.redis.url())
            .key_prefix(&self.prefix)
            .redis_workers(2)
            .start()
            .unwrap_or_else(|e| panic!("state node failed to start: {e}\n{}", self.logs()))
    }

    /// The `distcache-state-node` binary as a child process (its own process memory).
    pub fn state_node_process(&self, label: &str) -> ChildProcess {
        self.state_node_process_with(label, &[])
    }

    /// [`state_node_process`](Self::state_node_process) with more arguments.
    pub fn state_node_process_with(&self, label: &str, extra: &[&OsStr]) -> ChildProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_distcache-state-node"));
        cmd.args(["--brokers", &self.broker.bootstrap()])
            .args(["--redis", &self.redis.url()])
            .args(["--key-prefix", &self.prefix])
            .args(["--threads", "2", "--log-level", "info"])
            .args(extra);
        ChildProcess::spawn(label, cmd)
    }

    /// The in-process core node (one per process and namespace).
    pub fn core_node(&self, node: u64) -> DistributedCache<String> {
        DistributedCache::<String>::builder()
            .kafka_brokers(self.broker.bootstrap())
            .redis_url(self.redis.url())
            .namespace(&self.ns)
            .key_prefix(&self.prefix)
            .node_id(node)
            .local_capacity(10_000)
            .wait_timeout(WAIT)
            .build()
            .unwrap_or_else(|e| panic!("core node {node:x} failed to start: {e}\n{}", self.logs()))
    }

    /// A core node in its own process (`examples/core_node`), ready to take commands.
    pub fn core_node_process(&self, node: u64) -> CoreNodeProcess {
        self.core_node_process_with(node, &[])
    }

    /// [`core_node_process`](Self::core_node_process) with `--reply-versions`: its writes answer
    /// `OK <version>` (read with [`acked_version`]).
    pub fn core_node_process_replying_versions(&self, node: u64) -> CoreNodeProcess {
        self.core_node_process_with(node, &["--reply-versions"])
    }

    pub fn core_node_process_with(&self, node: u64, extra: &[&str]) -> CoreNodeProcess {
        let label = format!("core_node {node:x}");
        let mut args = vec![
            "--brokers".to_string(),
            self.broker.bootstrap(),
            "--redis".into(),
            self.redis.url(),
            "--namespace".into(),
            self.ns.clone(),
            "--prefix".into(),
            self.prefix.clone(),
            "--node-id".into(),
            node.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        CoreNodeProcess::start(&label, &args, WAIT)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    pub fn redis_key(&self, key: &str) -> String {
        distcache::redis_entry_key(&self.prefix, &self.ns, key)
    }

    /// Runs `f` on the test's own Redis connection (reconnecting once if it broke).
    pub fn with_redis<R>(&self, f: impl Fn(&mut redis::Connection) -> redis::RedisResult<R>) -> R {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = None;
        for _ in 0..2 {
            if guard.is_none() {
                let client = redis::Client::open(self.redis.url()).expect("redis url");
                match client.get_connection_with_timeout(Duration::from_secs(2)) {
                    Ok(c) => {
                        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        *guard = Some(c);
                    }
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            match f(guard.as_mut().expect("connected")) {
                Ok(r) => return r,
                Err(e) => {
                    *guard = None;
                    last = Some(e);
                }
            }
        }
        panic!(
            "redis query failed: {last:?}\nredis log:\n{}",
            self.redis.log_tail(10)
        )
    }

    /// What Redis holds for `key`; `None` when the key does not exist.
    pub fn stored(&self, key: &str) -> Option<Stored> {
        self.stored_many(&[key.to_string()]).pop().expect("one key")
    }

    /// [`stored`](Self::stored) for many keys in one round trip.
    pub fn stored_many(&self, keys: &[String]) -> Vec<Option<Stored>> {
        let full: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
        let maps: Vec<HashMap<String, Vec<u8>>> = self.with_redis(|c| {
            let mut pipe = redis::pipe();
            for k in &full {
                pipe.cmd("HGETALL").arg(k);
            }
            pipe.query(c)
        });
        maps.into_iter()
            .zip(&full)
            .map(|(map, k)| {
                // A hash holding only a plain write's version (`pver`) has no entry for readers.
                if !map.contains_key("v") && !map.contains_key("ver") {
                    return None;
                }
                let value = map.get("v").map(|b| {
                    serde_json::from_slice::<String>(b).unwrap_or_else(|e| {
                        panic!(
                            "redis {k}: v = {:?} is not a JSON string: {e}",
                            String::from_utf8_lossy(b)
                        )
                    })
                });
                let version = map.get("ver").map(|b| {
                    let hex = String::from_utf8_lossy(b);
                    Version::from_hex(&hex)
                        .unwrap_or_else(|| panic!("redis {k}: ver = {hex:?} is not 32 hex digits"))
                });
                let extra: Vec<&String> = map
                    .keys()
                    .filter(|f| !["v", "ver", "pver"].contains(&f.as_str()))
                    .collect();
                assert!(
                    extra.is_empty(),
                    "redis {k} has unexpected fields {extra:?}"
                );
                Some(Stored { value, version })
            })
            .collect()
    }

    /// Produces hand-made events onto `topic` with a client of our own, waiting for every acknowledgement.
    pub fn produce(&self, topic: &str, events: &[Event]) {
        produce_events(&self.broker, topic, events)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// A reader of the done topic from its beginning (the topics must exist).
    pub fn done_watcher(&self) -> DoneWatcher {
        DoneWatcher::new(&self.broker, WAIT)
    }

    /// What a failed wait prints: the state node's and node A's metrics, node B's when there is
    /// one, and the servers' log tails.
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
            self.redis.log_tail(8)
        )
    }
}

/// Every record the state node read is accounted for (applied, stale, deduplicated, malformed or refused),
/// and at least `expected` were read: the node is idle with nothing in flight.
pub fn state_node_settled(m: &StateNodeMetrics, expected: u64) -> Result<(), String> {
    let accounted =
        m.applied + m.stale_dropped + m.deduped + m.malformed + m.failed + m.future_refused;
    if m.consumed >= expected && accounted == m.consumed {
        Ok(())
    } else {
        Err(format!(
            "state node not settled: expected >= {expected} consumed, {m:?}"
        ))
    }
}

/// Polls `check` until it returns `Ok` (→ its value) or [`WAIT`] passes (→ panic with the last reason).
pub fn eventually<T>(
    what: &str,
    diagnostics: impl Fn() -> String,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let mut last = Err("never checked".to_string());
    let started = Instant::now();
    wait_until(WAIT, || {
        last = check();
        if last.is_err() {
            thread::sleep(Duration::from_millis(20));
        }
        last.is_ok()
    });
    match last {
        Ok(v) => {
            eprintln!("{what}: reached after {:?}", started.elapsed());
            v
        }
        Err(why) => panic!(
            "{what}: not reached within {WAIT:?}: {why}\n{}",
            diagnostics()
        ),
    }
}

/// Waits until the state node works (it joined its consumer group): one write, applied.
pub fn warm_up(a: &DistributedCache<String>) {
    let started = Instant::now();
    let outcome = a
        .set_with_sync_and_wait("warm-up", "1".into(), None, None)
        .expect("warm-up write applied");
    assert_eq!(outcome, WriteOutcome::Applied);
    eprintln!("state node applies writes after {:?}", started.elapsed());
}

pub fn set_event(ns: &str, key: &str, hlc: u64, node: u64, value: &str) -> Event {
    WriteEvent::set(
        ns,
        key,
        Version::new(hlc, node),
        serde_json::to_vec(value).expect("encode"),
    )
    .into_envelope()
}

pub fn delete_event(ns: &str, key: &str, hlc: u64, node: u64) -> Event {
    WriteEvent::delete(ns, key, Version::new(hlc, node)).into_envelope()
}

/// The version of an acknowledged write of a core node started with `--reply-versions` (`OK <version>`).
pub fn acked_version(line: &str, reply: &str) -> Version {
    reply
        .strip_prefix("OK ")
        .and_then(Version::from_hex)
        .unwrap_or_else(|| panic!("{line:?} answered {reply:?}, not OK <version>"))
}

/// Every acknowledged write of one key by every writer: version → value (`None`: a delete).
pub type KeyWrites = BTreeMap<Version, Option<String>>;

/// Adds `writes` (one writer's, per key) to `all`; no version may appear twice (an equal version means
/// the same write).
pub fn merge_writes(all: &mut HashMap<String, KeyWrites>, writes: HashMap<String, KeyWrites>) {
    for (key, per_key) in writes {
        let into = all.entry(key.clone()).or_default();
        for (version, value) in per_key {
            let dup = into.insert(version, value);
            assert!(dup.is_none(), "{key}: version {version} acknowledged twice");
        }
    }
}

/// Checks Redis' entry for one key after concurrent writers: it holds exactly the largest version over
/// every writer's acknowledged writes of the key, with that write's content (a tombstone for a delete).
pub fn check_winner(
    key: &str,
    stored: &Option<Stored>,
    writes: Option<&KeyWrites>,
) -> Result<(), String> {
    let Some((newest, value)) = writes.and_then(|w| w.last_key_value()) else {
        return match stored {
            None => Ok(()),
            Some(s) => Err(format!("{key} was never written but redis holds {s:?}")),
        };
    };
    let Some(Stored {
        value: stored_value,
        version: Some(ver),
    }) = stored
    else {
        return Err(format!("{key}: redis holds no versioned entry: {stored:?}"));
    };
    if ver != newest {
        return Err(format!(
            "{key}: redis holds version {ver}, but the newest acknowledged write is {newest} \
             (node {:x})",
            newest.node
        ));
    }
    if stored_value != value {
        return Err(format!(
            "{key}: redis holds {stored_value:?} at {ver}, but that write was {value:?}"
        ));
    }
    Ok(())
}

pub fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}
