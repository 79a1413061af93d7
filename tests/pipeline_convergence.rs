//! The whole pipeline against real processes: a `redis-server`, a tansu broker, state nodes (in-process
//! [`StateNode`]s and the `distcache-state-node` binary) and core nodes (an in-process
//! [`DistributedCache`] and `examples/core_node` child processes). No mocks.
//!
//! What is checked: sets and deletes reach every node's local cache and Redis; after concurrent storms
//! every local cache and Redis hold the value of the largest version; a write that lost is corrected at
//! its origin; older versions never overwrite newer ones or deletes, also across a state-node restart;
//! per-key order holds under a burst from several writers.
//!
//! Each test starts its own redis-server and broker (topic names are fixed, so isolation is per broker).
//! `examples/core_node` is built on first use with `cargo build --example core_node` (a no-op when it is
//! fresh); set `DISTCACHE_CORE_NODE_BIN` to use a prebuilt binary instead.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use distcache::event::{now_micros, Event, Op, TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{Cache, DistributedCache, StateNode, StateNodeMetrics, Version, WriteOutcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};

use support::{
    produce_events, produce_records, unique_name, wait_until, Broker, BrokerKind, ChildProcess,
    CoreNodeProcess, DoneWatcher, Outgoing, RedisServer,
};

/// Re-reads of one hole before distcache passes it (see README, "Brokers").
const MAX_REREADS: u32 = 8;

/// The cap of every wait: generous for a loaded 2-core machine; waits end as soon as their condition holds.
const WAIT: Duration = Duration::from_secs(60);
/// Node ids of the two core nodes of a test (B is the child process, with the higher id).
const NODE_A: u64 = 0xA;
const NODE_B: u64 = 0xB;

// ---------------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------------

fn init_logs() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .is_test(true)
        .try_init();
}

/// What Redis holds for one key: the decoded value (`None` in a tombstone) and the version.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    value: Option<String>,
    version: Option<Version>,
}

/// One redis-server, one broker, and the namespace and key prefix the test's nodes share.
struct Cluster {
    ns: String,
    prefix: String,
    redis: RedisServer,
    broker: Broker,
    conn: Mutex<Option<redis::Connection>>,
}

impl Cluster {
    fn start(name: &str) -> Cluster {
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
    fn state_node(&self) -> StateNode {
        StateNode::builder()
            .kafka_brokers(self.broker.bootstrap())
            .redis_url(self.redis.url())
            .key_prefix(&self.prefix)
            .redis_workers(2)
            .start()
            .unwrap_or_else(|e| panic!("state node failed to start: {e}\n{}", self.logs()))
    }

    /// The `distcache-state-node` binary as a child process (its own process memory).
    fn state_node_process(&self, label: &str) -> ChildProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_distcache-state-node"));
        cmd.args(["--brokers", &self.broker.bootstrap()])
            .args(["--redis", &self.redis.url()])
            .args(["--key-prefix", &self.prefix])
            .args(["--threads", "2", "--log-level", "info"]);
        ChildProcess::spawn(label, cmd)
    }

    /// The in-process core node (one per process and namespace).
    fn core_node(&self, node: u64) -> DistributedCache<String> {
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
    fn core_node_process(&self, node: u64) -> CoreNodeProcess {
        self.core_node_process_with(node, &[])
    }

    /// [`core_node_process`](Self::core_node_process) with `--reply-versions`: its writes answer
    /// `OK <version>` (read with [`acked_version`]).
    fn core_node_process_replying_versions(&self, node: u64) -> CoreNodeProcess {
        self.core_node_process_with(node, &["--reply-versions"])
    }

    fn core_node_process_with(&self, node: u64, extra: &[&str]) -> CoreNodeProcess {
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

    fn redis_key(&self, key: &str) -> String {
        distcache::redis_entry_key(&self.prefix, &self.ns, key)
    }

    /// Runs `f` on the test's own Redis connection (reconnecting once if it broke).
    fn with_redis<R>(&self, f: impl Fn(&mut redis::Connection) -> redis::RedisResult<R>) -> R {
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
    fn stored(&self, key: &str) -> Option<Stored> {
        self.stored_many(&[key.to_string()]).pop().expect("one key")
    }

    /// [`stored`](Self::stored) for many keys in one round trip.
    fn stored_many(&self, keys: &[String]) -> Vec<Option<Stored>> {
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
    fn produce(&self, topic: &str, events: &[Event]) {
        produce_events(&self.broker, topic, events)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// A reader of the done topic from its beginning (the topics must exist).
    fn done_watcher(&self) -> DoneWatcher {
        DoneWatcher::new(&self.broker, WAIT)
    }

    /// Tails of the servers' logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- broker log:\n{}\n--- redis log:\n{}",
            self.broker.log_tail(15),
            self.redis.log_tail(8)
        )
    }
}

/// Every record the state node read is accounted for (applied, stale, deduplicated, malformed or refused),
/// and at least `expected` were read: the node is idle with nothing in flight.
fn state_node_settled(m: &StateNodeMetrics, expected: u64) -> Result<(), String> {
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
fn eventually<T>(
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
fn warm_up(a: &DistributedCache<String>) {
    let started = Instant::now();
    let outcome = a
        .set_with_sync_and_wait("warm-up", "1".into(), None, None)
        .expect("warm-up write applied");
    assert_eq!(outcome, WriteOutcome::Applied);
    eprintln!("state node applies writes after {:?}", started.elapsed());
}

fn set_event(ns: &str, key: &str, hlc: u64, node: u64, value: &str) -> Event {
    Event {
        op: Op::Set,
        ns: ns.into(),
        key: key.into(),
        version: Version::new(hlc, node),
        remote_ttl: None,
        local_ttl: None,
        value: Some(serde_json::to_vec(value).expect("encode")),
        write_redis: true,
        value_omitted: false,
        origin: node,
        produced_at_us: now_micros(),
    }
}

fn delete_event(ns: &str, key: &str, hlc: u64, node: u64) -> Event {
    Event {
        op: Op::Delete,
        value: None,
        ..set_event(ns, key, hlc, node, "")
    }
}

/// The version of an acknowledged write of a core node started with `--reply-versions` (`OK <version>`).
fn acked_version(line: &str, reply: &str) -> Version {
    reply
        .strip_prefix("OK ")
        .and_then(Version::from_hex)
        .unwrap_or_else(|| panic!("{line:?} answered {reply:?}, not OK <version>"))
}

/// Every acknowledged write of one key by every writer: version → value (`None`: a delete).
type KeyWrites = BTreeMap<Version, Option<String>>;

/// Adds `writes` (one writer's, per key) to `all`; no version may appear twice (an equal version means
/// the same write).
fn merge_writes(all: &mut HashMap<String, KeyWrites>, writes: HashMap<String, KeyWrites>) {
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
fn check_winner(
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

fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

// ---------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------

/// A `set-sync` on one node shows up in the other node's local cache (plain `get`) and in Redis; a
/// `del-sync` invalidates every node and leaves a tombstone; plain `set`/`delete` replicate to local caches
/// without touching Redis.
#[test]
fn two_core_nodes_converge_on_set_and_delete() {
    let cluster = Cluster::start("conv");
    let state = cluster.state_node();
    let a = cluster.core_node(NODE_A);
    let b = cluster.core_node_process(NODE_B);
    let diag = || {
        format!(
            "state node: {:?}\nnode A: {:?}\nnode B: {:?}\n{}",
            state.metrics(),
            a.metrics(),
            b.metrics(),
            cluster.logs()
        )
    };

    // A → B, and Redis.
    let v1 = a
        .set_with_sync("greeting", "hello".into(), None, None)
        .expect("set on A");
    assert_eq!(
        a.get("greeting").unwrap().as_deref(),
        Some("hello"),
        "read-your-writes on A"
    );
    eventually("B's local cache holds A's set", diag, || {
        match b.get("greeting") {
            Some(v) if v == "hello" => Ok(()),
            other => Err(format!("B get greeting = {other:?}")),
        }
    });
    let stored = cluster.stored("greeting");
    assert_eq!(
        stored,
        Some(Stored {
            value: Some("hello".into()),
            version: Some(v1)
        }),
        "redis after A's set"
    );

    // B deletes → A invalidated, Redis keeps a tombstone newer than the set.
    b.ok("del-sync greeting");
    assert_eq!(b.get("greeting"), None, "read-your-writes on B");
    eventually("A's local cache drops the deleted key", diag, || {
        match a.get("greeting").unwrap() {
            None => Ok(()),
            Some(v) => Err(format!("A get greeting = {v:?}")),
        }
    });
    let tomb = eventually("redis holds a tombstone", diag, || {
        match cluster.stored("greeting") {
            Some(Stored {
                value: None,
                version: Some(v),
            }) => Ok(v),
            other => Err(format!("redis greeting = {other:?}")),
        }
    });
    assert!(
        tomb > v1,
        "tombstone {tomb} must be newer than the set {v1}"
    );
    assert_eq!(tomb.node, NODE_B, "the tombstone is B's delete");
    let ttl: i64 = cluster.with_redis(|c| {
        redis::cmd("PTTL")
            .arg(cluster.redis_key("greeting"))
            .query(c)
    });
    assert!(ttl > 0, "a tombstone expires (PTTL {ttl})");
    assert_eq!(
        a.get_with_sync("greeting", None).unwrap(),
        None,
        "get_with_sync after delete on A"
    );
    assert_eq!(b.get_sync("greeting"), None, "get-sync after delete on B");

    // B → A.
    b.ok("set-sync colour blue");
    eventually("A's local cache holds B's set", diag, || {
        match a.get("colour").unwrap() {
            Some(v) if v == "blue" => Ok(()),
            other => Err(format!("A get colour = {other:?}")),
        }
    });
    let stored = cluster.stored("colour").expect("redis has colour");
    assert_eq!(stored.value.as_deref(), Some("blue"));
    assert_eq!(stored.version.map(|v| v.node), Some(NODE_B));

    // A deletes what B wrote.
    let del = a.delete_with_sync("colour").expect("delete on A");
    eventually("B's local cache drops A's delete", diag, || {
        match b.get("colour") {
            None => Ok(()),
            Some(v) => Err(format!("B get colour = {v:?}")),
        }
    });
    eventually("redis holds A's tombstone", diag, || {
        match cluster.stored("colour") {
            Some(Stored {
                value: None,
                version: Some(v),
            }) if v == del => Ok(()),
            other => Err(format!("redis colour = {other:?}, want tombstone at {del}")),
        }
    });

    // Plain set/delete: local caches only; Redis records only their versions (`pver`), no value.
    b.ok("set plain p1");
    eventually("A's local cache holds B's plain set", diag, || {
        match a.get("plain").unwrap() {
            Some(v) if v == "p1" => Ok(()),
            other => Err(format!("A get plain = {other:?}")),
        }
    });
    assert_eq!(
        cluster.stored("plain"),
        None,
        "a plain set must not write a value to Redis"
    );
    a.delete("plain").expect("plain delete on A");
    eventually("B's local cache drops A's plain delete", diag, || {
        match b.get("plain") {
            None => Ok(()),
            Some(v) => Err(format!("B get plain = {v:?}")),
        }
    });
    assert_eq!(
        cluster.stored("plain"),
        None,
        "a plain delete must not write a value to Redis"
    );

    let m = state.metrics();
    assert_eq!((m.malformed, m.failed), (0, 0), "{m:?}");
    let (am, bm) = (a.metrics(), b.metrics());
    assert_eq!(
        (am.write_failures, am.resets, am.malformed),
        (0, 0, 0),
        "{am:?}"
    );
    assert_eq!(
        (bm["write_failures"], bm["resets"], bm["malformed"]),
        (0, 0, 0),
        "{bm:?}"
    );
}

/// Both nodes write random values and deletes to 20 keys at the same time. Afterwards Redis holds, per
/// key, the write with the largest version over both nodes' acknowledged writes (node B reports its
/// versions with `--reply-versions`), and both local caches agree with Redis.
#[test]
fn local_caches_converge_to_redis_after_a_concurrent_storm() {
    const KEYS: usize = 20;
    const WRITES: usize = 300;
    let cluster = Cluster::start("storm");
    let state = cluster.state_node();
    let a = cluster.core_node(NODE_A);
    let b = cluster.core_node_process_replying_versions(NODE_B);
    warm_up(&a);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    let seed = rand::random::<u64>();
    eprintln!("storm seed {seed}");

    let started = Instant::now();
    // Per node: key → version → value (None: delete).
    let (a_writes, b_writes) = thread::scope(|s| {
        let a_thread = s.spawn(|| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut log: HashMap<String, BTreeMap<Version, Option<String>>> = HashMap::new();
            for i in 0..WRITES {
                let key = &keys[rng.random_range(0..KEYS)];
                let (version, value) = if rng.random_bool(0.7) {
                    let value = format!("a-{i}");
                    let v = a
                        .set_with_sync(key, value.clone(), None, None)
                        .expect("set on A");
                    (v, Some(value))
                } else {
                    (a.delete_with_sync(key).expect("delete on A"), None)
                };
                let per_key = log.entry(key.clone()).or_default();
                if let Some((last, _)) = per_key.last_key_value() {
                    assert!(
                        version > *last,
                        "A's versions for {key} must increase: {last} then {version}"
                    );
                }
                per_key.insert(version, value);
            }
            log
        });
        let mut rng = StdRng::seed_from_u64(seed ^ 0xb);
        let mut planned = Vec::with_capacity(WRITES);
        let mut lines = Vec::with_capacity(WRITES);
        for i in 0..WRITES {
            let key = &keys[rng.random_range(0..KEYS)];
            if rng.random_bool(0.7) {
                let value = format!("b-{i}");
                lines.push(format!("set-sync {key} {value}"));
                planned.push((key.clone(), Some(value)));
            } else {
                lines.push(format!("del-sync {key}"));
                planned.push((key.clone(), None));
            }
        }
        let replies = b.run_all(&lines);
        let mut b_log: HashMap<String, KeyWrites> = HashMap::new();
        for ((line, reply), (key, value)) in lines.iter().zip(&replies).zip(planned) {
            let version = acked_version(line, reply);
            let per_key = b_log.entry(key).or_default();
            if let Some((last, _)) = per_key.last_key_value() {
                assert!(
                    version > *last,
                    "B's versions must increase: {last} then {version}"
                );
            }
            per_key.insert(version, value);
        }
        (a_thread.join().expect("writer A"), b_log)
    });
    let mut all_writes: HashMap<String, KeyWrites> = HashMap::new();
    merge_writes(&mut all_writes, a_writes);
    merge_writes(&mut all_writes, b_writes);
    eprintln!("storm: {} writes in {:?}", 2 * WRITES, started.elapsed());

    let diag = || {
        format!(
            "state node: {:?}\nnode A: {:?}\nnode B: {:?}\n{}",
            state.metrics(),
            a.metrics(),
            b.metrics(),
            cluster.logs()
        )
    };
    // The writes and the warm-up.
    let expected = (2 * WRITES + 1) as u64;
    eventually("redis and both local caches agree", diag, || {
        state_node_settled(&state.metrics(), expected)?;
        let stored = cluster.stored_many(&keys);
        for (key, stored) in keys.iter().zip(&stored) {
            check_winner(key, stored, all_writes.get(key))?;
            let value = stored.as_ref().and_then(|s| s.value.clone());
            let local_a = a.get(key).unwrap();
            if local_a != value {
                return Err(format!(
                    "{key}: A's local cache holds {local_a:?}, redis {stored:?}"
                ));
            }
            let local_b = b.get(key);
            if local_b != value {
                return Err(format!(
                    "{key}: B's local cache holds {local_b:?}, redis {stored:?}"
                ));
            }
        }
        Ok(())
    });

    // The decisive read path agrees too.
    for (key, stored) in keys.iter().zip(cluster.stored_many(&keys)) {
        let value = stored.and_then(|s| s.value);
        assert_eq!(
            a.get_with_sync(key, None).unwrap(),
            value,
            "A get_with_sync {key}"
        );
        assert_eq!(b.get_sync(key), value, "B get-sync {key}");
    }
    let m = state.metrics();
    assert_eq!(
        m.published,
        m.applied + m.stale_dropped + m.deduped,
        "one done event per consumed event (a deduplicated one is answered stale): {m:?}"
    );
    assert_eq!((m.malformed, m.failed), (0, 0), "{m:?}");
    assert_eq!(a.metrics().write_failures, 0);
    assert_eq!(b.metrics()["write_failures"], 0);
}

/// The origin is corrected when its write loses: node A writes "old" while no state node runs, node B
/// writes "new" afterwards (a newer version). When a state node starts, "new" wins in Redis and A's local
/// cache — which held its own "old" — is brought to "new" by the done event (`set_if_newer`).
#[test]
fn origin_is_corrected_when_its_write_loses() {
    let cluster = Cluster::start("origin");
    let a = cluster.core_node(NODE_A);
    let b = cluster.core_node_process(NODE_B);
    let va = a
        .set_with_sync("contested", "old".into(), None, None)
        .expect("set on A");
    // A later write on B: a newer version (later wall clock, and B's id breaks a same-millisecond tie).
    b.ok("set-sync contested new");
    assert_eq!(
        a.get("contested").unwrap().as_deref(),
        Some("old"),
        "A reads its own write"
    );
    assert_eq!(
        b.get("contested").as_deref(),
        Some("new"),
        "B reads its own write"
    );
    assert_eq!(
        cluster.stored("contested"),
        None,
        "no state node yet: redis untouched"
    );

    let state = cluster.state_node();
    let diag = || {
        format!(
            "state node: {:?}\nnode A: {:?}\nnode B: {:?}\n{}",
            state.metrics(),
            a.metrics(),
            b.metrics(),
            cluster.logs()
        )
    };
    let stored = eventually("redis holds B's newer write", diag, || {
        match cluster.stored("contested") {
            Some(s) if s.value.as_deref() == Some("new") => Ok(s),
            other => Err(format!("redis contested = {other:?}")),
        }
    });
    let vb = stored.version.expect("versioned");
    assert!(vb > va, "B's write {vb} must be newer than A's {va}");
    assert_eq!(vb.node, NODE_B);
    eventually(
        "A's local cache is corrected to B's value",
        diag,
        || match a.get("contested").unwrap() {
            Some(v) if v == "new" => Ok(()),
            other => Err(format!("A get contested = {other:?}")),
        },
    );
    assert_eq!(
        a.local().version_of("contested"),
        Some(vb),
        "A holds B's version"
    );
    assert_eq!(b.get("contested").as_deref(), Some("new"));
    assert!(a.metrics().events_applied >= 1, "{:?}", a.metrics());
}

/// The origin of a losing write must not keep its value when the winner's done event is one it never saw.
///
/// Node B's clock runs ahead (it observed a version from a node whose wall clock is two minutes fast, as
/// with clock skew between machines), and B writes "new". Node A starts afterwards — so it never sees that
/// done event — and writes "old": later in real time, but with a smaller version, so the state node drops
/// it and reports it stale. A's local cache must not go on serving "old" while Redis and B hold "new".
#[test]
fn origin_drops_a_write_that_lost_before_it_started_listening() {
    let cluster = Cluster::start("skew");
    let state = cluster.state_node();
    let b = cluster.core_node_process(NODE_B);
    let diag_b = || {
        format!(
            "state node: {:?}\nnode B: {:?}\n{}",
            state.metrics(),
            b.metrics(),
            cluster.logs()
        )
    };

    // A write from a node whose clock is two minutes ahead; B observes its done event.
    let fast = (wall_millis() + 120_000) << 16;
    cluster.produce(
        TOPIC_SET_DEL,
        &[set_event(&cluster.ns, "skew-marker", fast, 0x5, "fast")],
    );
    eventually("B observes the fast node's write", diag_b, || {
        match b.metrics()["events"] {
            0 => Err("no done event at B yet".into()),
            _ => Ok(()),
        }
    });
    b.ok("set-sync contested new");
    b.ok("set-sync contested-del new");
    b.ok("del-sync contested-del");
    let vb = eventually("redis holds B's writes", diag_b, || {
        match (cluster.stored("contested"), cluster.stored("contested-del")) {
            (Some(s), Some(d)) if s.value.as_deref() == Some("new") && d.value.is_none() => {
                Ok(s.version.expect("versioned"))
            }
            other => Err(format!("redis contested, contested-del = {other:?}")),
        }
    });
    assert!(vb.hlc > fast, "B's clock runs ahead: {vb}");
    // Redis is written before the done events go out: wait until the state node has published the
    // done events of all four writes (it counts them applied only then), so that none of them is still
    // to come when A starts listening.
    eventually("the state node published B's writes", diag_b, || {
        state_node_settled(&state.metrics(), 4)
    });

    // A starts now, listening from the current end of the done topic: it never sees those events.
    let a = cluster.core_node(NODE_A);
    let diag = || {
        format!(
            "state node: {:?}\nnode A: {:?}\nnode B: {:?}\n{}",
            state.metrics(),
            a.metrics(),
            b.metrics(),
            cluster.logs()
        )
    };
    let va = a
        .set_with_sync("contested", "old".into(), None, None)
        .expect("set on A");
    let va_del = a
        .set_with_sync("contested-del", "old".into(), None, None)
        .expect("set on A");
    assert!(
        va < vb && va_del < vb,
        "A's writes {va}, {va_del} must be older than B's {vb}"
    );
    eventually("A hears that its writes lost", diag, || {
        match a.metrics().events {
            n if n >= 2 => Ok(()),
            n => Err(format!("A received {n} done events")),
        }
    });
    assert_eq!(
        cluster.stored("contested").and_then(|s| s.value).as_deref(),
        Some("new"),
        "the older write must not overwrite redis"
    );
    eventually(
        "A's local cache stops serving its losing writes",
        diag,
        || {
            for key in ["contested", "contested-del"] {
                if let Some(v) = a.get(key).unwrap().filter(|v| v == "old") {
                    return Err(format!(
                        "A get {key} = {v:?}, redis {:?}",
                        cluster.stored(key)
                    ));
                }
            }
            Ok(())
        },
    );
    assert_eq!(
        a.get_with_sync("contested", None).unwrap().as_deref(),
        Some("new")
    );
    assert_eq!(a.get_with_sync("contested-del", None).unwrap(), None);
    assert_eq!(b.get("contested").as_deref(), Some("new"));
    assert_eq!(b.get("contested-del"), None);
}

/// Older versions never overwrite newer ones or deletes, whichever state node applies them: hand-made
/// events with fixed versions, applied by an in-process state node, then by the state-node binary (a fresh
/// process), then by another fresh in-process node.
#[test]
fn older_versions_never_overwrite_newer_ones_across_state_node_restarts() {
    const NODE: u64 = 0x7;
    let cluster = Cluster::start("order");
    let ns = cluster.ns.clone();
    let key = "k";
    let stored = |hlc: u64, value: Option<&str>| {
        Some(Stored {
            value: value.map(str::to_string),
            version: Some(Version::new(hlc, NODE)),
        })
    };
    let is_at = |e: &Event, hlc: u64, op: Op| {
        e.key == key && e.version == Version::new(hlc, NODE) && e.op == op
    };

    // First state node (in-process): v200 applies, v180 is stale.
    let first = cluster.state_node();
    let mut done = cluster.done_watcher();
    cluster.produce(TOPIC_SET_DEL, &[set_event(&ns, key, 200, NODE, "v200")]);
    done.wait_for("set@200 applied", |e| is_at(e, 200, Op::Set));
    assert_eq!(cluster.stored(key), stored(200, Some("v200")));
    cluster.produce(TOPIC_SET_DEL, &[set_event(&ns, key, 180, NODE, "v180")]);
    done.wait_for("set@180 stale", |e| is_at(e, 180, Op::Stale));
    assert_eq!(cluster.stored(key), stored(200, Some("v200")));
    first.shutdown();
    let m = first.metrics();
    assert_eq!(
        (m.consumed, m.applied, m.stale_dropped),
        (2, 1, 1),
        "first state node: {m:?}"
    );
    assert!(m.commits >= 1, "{m:?}");
    drop(first);

    // Second state node: the binary, a fresh process that only knows what Redis knows.
    let second = cluster.state_node_process("distcache-state-node");
    cluster.produce(TOPIC_SET_DEL, &[set_event(&ns, key, 100, NODE, "v100")]);
    done.wait_for("set@100 stale", |e| is_at(e, 100, Op::Stale));
    assert_eq!(
        cluster.stored(key),
        stored(200, Some("v200")),
        "set@100 must not overwrite set@200"
    );
    cluster.produce(TOPIC_SET_DEL, &[delete_event(&ns, key, 150, NODE)]);
    done.wait_for("delete@150 stale", |e| is_at(e, 150, Op::Stale));
    assert_eq!(
        cluster.stored(key),
        stored(200, Some("v200")),
        "delete@150 must not remove set@200"
    );
    cluster.produce(TOPIC_SET_DEL, &[delete_event(&ns, key, 300, NODE)]);
    done.wait_for("delete@300 applied", |e| is_at(e, 300, Op::Delete));
    assert_eq!(
        cluster.stored(key),
        stored(300, None),
        "delete@300 leaves a tombstone"
    );
    let ttl: i64 = cluster.with_redis(|c| redis::cmd("PTTL").arg(cluster.redis_key(key)).query(c));
    assert!(ttl > 0, "the tombstone expires (PTTL {ttl})");
    assert!(second.terminate(), "SIGTERM the state-node binary");
    let status = second.wait_timeout(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "state-node binary exit {status:?}; stderr:\n{}",
        second.stderr_tail(30)
    );
    let stderr = second.stderr();
    let field = |name: &str| -> Option<u64> {
        let at = stderr.rfind("final metrics")?;
        let rest = &stderr[at..];
        let from = rest.find(&format!("{name}: "))? + name.len() + 2;
        rest[from..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    assert_eq!(
        (field("consumed"), field("applied"), field("stale_dropped")),
        (Some(3), Some(1), Some(2)),
        "the binary's final metrics (consumed, applied, stale_dropped); stderr:\n{}",
        second.stderr_tail(10)
    );
    drop(second);

    // Third state node (in-process, fresh): an older set must not resurrect the deleted key.
    let third = cluster.state_node();
    cluster.produce(TOPIC_SET_DEL, &[set_event(&ns, key, 250, NODE, "v250")]);
    done.wait_for("set@250 stale", |e| is_at(e, 250, Op::Stale));
    assert_eq!(
        cluster.stored(key),
        stored(300, None),
        "set@250 must not resurrect the key"
    );
    // The same delete delivered again (a replay after a crash between apply and commit, or a
    // producer retry) is the same write: applied again, its done event published again — not
    // reported stale, which would leave nodes that missed the first done event uninformed.
    cluster.produce(TOPIC_SET_DEL, &[delete_event(&ns, key, 300, NODE)]);
    done.wait_for_next("delete@300 replayed", |e| is_at(e, 300, Op::Delete));
    assert_eq!(cluster.stored(key), stored(300, None));
    // A batch's counters are updated by the thread that delivers its done events, after publishing: on a
    // broker that answers at once (Apache Kafka) the done event can be seen first.
    let counted = wait_until(WAIT, || {
        let m = third.metrics();
        (m.consumed, m.applied, m.stale_dropped) == (2, 1, 1)
    });
    assert!(counted, "third state node: {:?}", third.metrics());
    // Nothing else reached the done topic.
    let versions: Vec<(u64, Op)> = done.seen().iter().map(|e| (e.version.hlc, e.op)).collect();
    assert_eq!(
        versions,
        [
            (200, Op::Set),
            (180, Op::Stale),
            (100, Op::Stale),
            (150, Op::Stale),
            (300, Op::Delete),
            (250, Op::Stale),
            (300, Op::Delete)
        ],
        "done events"
    );
}

/// 10 000 writes to 100 keys from two nodes at once: threads of the in-process node and the child
/// process, drawing sequence numbers from one counter so that both write until the end whatever their
/// speeds. Afterwards every key in Redis (and in both local caches) holds the write with the largest
/// version over both nodes' acknowledged writes (node B reports its versions with `--reply-versions`);
/// each node's versions for a key increase with its writes.
#[test]
fn per_key_order_holds_under_a_burst() {
    const KEYS: usize = 100;
    // Writer threads in node A (node B writes from its own process too).
    const THREADS: usize = 4;
    const TOTAL: usize = 10_000;
    /// Commands queued at the child at once, so it never waits for the test between two writes.
    const B_WINDOW: usize = 8;
    let cluster = Cluster::start("burst");
    let state = cluster.state_node();
    let a = cluster.core_node(NODE_A);
    let b = cluster.core_node_process_replying_versions(NODE_B);
    warm_up(&a);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i}")).collect();
    let seed = rand::random::<u64>();
    eprintln!("burst seed {seed}");

    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let (a_logs, b_log) = thread::scope(|s| {
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (a, keys, next) = (&a, &keys, &next);
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(t as u64));
                    let mut log: Vec<(String, Version, String)> = Vec::new();
                    let mut last: HashMap<&str, Version> = HashMap::new();
                    loop {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        if seq >= TOTAL {
                            break;
                        }
                        let key = &keys[rng.random_range(0..KEYS)];
                        let value = format!("a{t}-{seq}");
                        let v = a
                            .set_with_sync(key, value.clone(), None, None)
                            .expect("set on A");
                        if let Some(prev) = last.insert(key, v) {
                            assert!(
                                v > prev,
                                "thread {t}: versions for {key} must increase: {prev} then {v}"
                            );
                        }
                        log.push((key.clone(), v, value));
                    }
                    eprintln!(
                        "burst: A thread {t} wrote {} after {:?}",
                        log.len(),
                        started.elapsed()
                    );
                    log
                })
            })
            .collect();
        // Node B: sequential in its process, fed through a small window of queued commands.
        let mut rng = StdRng::seed_from_u64(seed ^ 0xb);
        let mut b_log: HashMap<String, KeyWrites> = HashMap::new();
        let mut in_flight = std::collections::VecDeque::new();
        let mut written = 0;
        loop {
            let seq = if in_flight.len() < B_WINDOW {
                next.fetch_add(1, Ordering::Relaxed)
            } else {
                TOTAL
            };
            if seq < TOTAL {
                let key = &keys[rng.random_range(0..KEYS)];
                let value = format!("b-{seq}");
                let line = format!("set-sync {key} {value}");
                b.send(&line);
                in_flight.push_back((line, key.clone(), value));
                continue;
            }
            let Some((line, key, value)) = in_flight.pop_front() else {
                break;
            };
            let version = acked_version(&line, &b.reply(&line));
            let per_key = b_log.entry(key).or_default();
            if let Some((last, _)) = per_key.last_key_value() {
                assert!(
                    version > *last,
                    "B's versions must increase: {last} then {version}"
                );
            }
            per_key.insert(version, Some(value));
            written += 1;
        }
        eprintln!("burst: B wrote {written} after {:?}", started.elapsed());
        let logs: Vec<_> = writers
            .into_iter()
            .map(|w| w.join().expect("writer thread"))
            .collect();
        (logs, b_log)
    });
    let total = TOTAL as u64;
    eprintln!("burst: {total} writes in {:?}", started.elapsed());

    let mut a_writes: HashMap<String, KeyWrites> = HashMap::new();
    for (key, version, value) in a_logs.into_iter().flatten() {
        let dup = a_writes
            .entry(key.clone())
            .or_default()
            .insert(version, Some(value));
        assert!(dup.is_none(), "A issued version {version} twice ({key})");
    }
    let mut all_writes: HashMap<String, KeyWrites> = HashMap::new();
    merge_writes(&mut all_writes, a_writes);
    merge_writes(&mut all_writes, b_log);

    let diag = || {
        format!(
            "state node: {:?}\nnode A: {:?}\nnode B: {:?}\n{}",
            state.metrics(),
            a.metrics(),
            b.metrics(),
            cluster.logs()
        )
    };
    eventually(
        "redis and both local caches hold every key's newest write",
        diag,
        || {
            state_node_settled(&state.metrics(), total + 1)?;
            let stored = cluster.stored_many(&keys);
            for (key, stored) in keys.iter().zip(&stored) {
                check_winner(key, stored, all_writes.get(key))?;
                let value = stored.as_ref().and_then(|s| s.value.clone());
                let local_a = a.get(key).unwrap();
                if local_a != value {
                    return Err(format!(
                        "{key}: A's local cache holds {local_a:?}, redis {stored:?}"
                    ));
                }
            }
            // B answers one key at a time: check it once Redis and A are settled.
            for (key, stored) in keys.iter().zip(&stored) {
                let value = stored.as_ref().and_then(|s| s.value.clone());
                let local_b = b.get(key);
                if local_b != value {
                    return Err(format!(
                        "{key}: B's local cache holds {local_b:?}, redis {stored:?}"
                    ));
                }
            }
            Ok(())
        },
    );
    let m = state.metrics();
    eprintln!("burst done after {:?}; state node {m:?}", started.elapsed());
    assert_eq!(
        m.consumed,
        total + 1,
        "every write (and the warm-up) read once: {m:?}"
    );
    assert_eq!(
        m.published,
        m.applied + m.stale_dropped + m.deduped,
        "{m:?}"
    );
    assert_eq!((m.malformed, m.failed), (0, 0), "{m:?}");
    let winners_a = cluster
        .stored_many(&keys)
        .iter()
        .filter(|s| {
            s.as_ref()
                .and_then(|s| s.version)
                .is_some_and(|v| v.node == NODE_A)
        })
        .count();
    eprintln!("burst: node A won {winners_a} of {KEYS} keys");
}

/// Delivery reports of a racing producer: the key, partition and offset of every acknowledged record.
#[derive(Default)]
struct AckLog {
    acked: Mutex<Vec<(String, i32, i64)>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for AckLog {}

impl ProducerContext for AckLog {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(msg) => {
                let key = msg.key().map(String::from_utf8_lossy).unwrap_or_default();
                self.acked.lock().unwrap_or_else(|e| e.into_inner()).push((
                    key.into_owned(),
                    msg.partition(),
                    msg.offset(),
                ));
            }
            Err((e, _)) => self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(e.to_string()),
        }
    }
}

/// One raw producer of the race: its own client (its own connection), `acks=all`, `linger.ms=0`,
/// `count` set events of distinct keys in bursts of `burst` about every `burst` ms. Returns every
/// acknowledged (cache key, partition, offset).
fn race_producer(
    bootstrap: &str,
    ns: &str,
    node: u64,
    count: usize,
    burst: usize,
) -> Vec<(String, i32, i64)> {
    let producer: BaseProducer<AckLog> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .set("socket.nagle.disable", "true")
        .create_with_context(AckLog::default())
        .expect("racing producer");
    let clock = distcache::HybridClock::new(node);
    for start in (0..count).step_by(burst) {
        for i in start..(start + burst).min(count) {
            let key = format!("race-{node:x}-{i}");
            let event = Event {
                version: clock.now(),
                ..set_event(ns, &key, 0, node, &format!("v{i}"))
            };
            let payload = event.encode();
            let message_key = event.message_key();
            let mut record = BaseRecord::to(TOPIC_SET_DEL)
                .key(&message_key)
                .payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        assert!(
                            matches!(
                                e.rdkafka_error_code(),
                                Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            ),
                            "produce: {e}"
                        );
                        producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                }
            }
        }
        producer.poll(Duration::ZERO);
        thread::sleep(Duration::from_millis(burst as u64));
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("flush the racing producer");
    let ctx = producer.context();
    let failed = ctx.failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(failed.is_empty(), "produce failures: {failed:?}");
    let acked = std::mem::take(&mut *ctx.acked.lock().unwrap_or_else(|e| e.into_inner()));
    // Every acknowledged record has a key of the namespace.
    let prefix = format!("{ns}\u{1f}");
    acked
        .into_iter()
        .map(|(k, p, o)| (k.strip_prefix(&prefix).unwrap_or(&k).to_string(), p, o))
        .collect()
}

/// Raw producers race (each its own client, `acks=all`, 8 partitions, `linger.ms=0`) while one state
/// node tails the topic: every acknowledged write must reach Redis. On tansu 0.6 a tailing consumer
/// can be handed a later batch before an earlier one that already has its offsets (README, "Brokers");
/// the state node must notice the jump and read the hole again. The state node consumes every record
/// exactly once (re-reads are not counted).
#[test]
fn every_acknowledged_event_is_applied_while_raw_producers_race() {
    const PRODUCERS: u64 = 3;
    const EACH: usize = 6_000;
    const BURST: usize = 8;
    let cluster = Cluster::start("race");
    let state = cluster.state_node();
    // The state node has joined its group and tails the topic before the race starts.
    cluster.produce(
        TOPIC_SET_DEL,
        &[set_event(
            &cluster.ns,
            "warm-up",
            wall_millis() << 16,
            1,
            "w",
        )],
    );
    eventually(
        "the warm-up write is applied",
        || cluster.logs(),
        || cluster.stored("warm-up").ok_or("not yet".to_string()),
    );
    let started = Instant::now();
    let bootstrap = cluster.broker.bootstrap();
    let acked: Vec<(String, i32, i64)> = thread::scope(|s| {
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (bootstrap, ns) = (&bootstrap, &cluster.ns);
                s.spawn(move || race_producer(bootstrap, ns, 0x100 + p, EACH, BURST))
            })
            .collect();
        producers
            .into_iter()
            .flat_map(|p| p.join().expect("racing producer"))
            .collect()
    });
    let total = acked.len();
    assert_eq!(total, PRODUCERS as usize * EACH, "every write acknowledged");
    let mut positions: Vec<(i32, i64)> = acked.iter().map(|(_, p, o)| (*p, *o)).collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), total, "acknowledged offsets are distinct");
    eprintln!(
        "race: {total} writes acknowledged after {:?}",
        started.elapsed()
    );

    let keys: Vec<String> = acked.iter().map(|(k, _, _)| k.clone()).collect();
    let diag = || format!("state node: {:?}\n{}", state.metrics(), cluster.logs());
    eventually("every acknowledged write is in redis", diag, || {
        let mut missing = Vec::new();
        for (chunk, acks) in keys.chunks(2000).zip(acked.chunks(2000)) {
            for (stored, (key, p, o)) in cluster.stored_many(chunk).iter().zip(acks) {
                if stored.is_none() {
                    missing.push(format!("{key} at {p}:{o}"));
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {total} acknowledged writes not in redis (first: {:?})",
                missing.len(),
                &missing[..missing.len().min(10)]
            ))
        }
    });
    let m = state.metrics();
    eprintln!("race done after {:?}; state node {m:?}", started.elapsed());
    assert_eq!(
        m.consumed,
        total as u64 + 1,
        "every record consumed once: {m:?}"
    );
    assert_eq!((m.malformed, m.failed), (0, 0), "{m:?}");
}

/// The done-topic listener's partition list is not fixed at start: partitions added to the done topic
/// later are found (the list is re-read every 5 s), read from then on, and counted as a gap — their
/// events so far were never seen, so the local cache is cleared (`resets`).
#[test]
fn listener_reads_partitions_added_to_the_done_topic() {
    let cluster = Cluster::start("grow");
    let _state = cluster.state_node();
    let a = cluster.core_node(NODE_A);
    warm_up(&a);
    // Applied and its done event seen: nothing re-fills the entry after the reset.
    a.set_with_sync_and_wait("cached", "before".into(), None, None)
        .expect("write applied");
    assert_eq!(a.get("cached").unwrap().as_deref(), Some("before"));
    let before = a.metrics();
    if let Err(e) = cluster.broker.add_partitions(TOPIC_DONE, 10) {
        if cluster.broker.kind() == BrokerKind::Tansu {
            eprintln!("skipped: this broker does not add partitions: {e}");
            return;
        }
        panic!("adding partitions: {e}\n{}", cluster.logs());
    }
    eventually(
        "the listener found the new partitions and counted a gap",
        || format!("node A: {:?}\n{}", a.metrics(), cluster.logs()),
        || {
            let m = a.metrics();
            if m.resets > before.resets {
                Ok(())
            } else {
                Err(format!("resets still {}", m.resets))
            }
        },
    );
    assert_eq!(
        a.get("cached").unwrap(),
        None,
        "the gap cleared the local cache"
    );
    // An event on a new partition reaches the local cache.
    let event = set_event(&cluster.ns, "on-new", wall_millis() << 16, 0x77, "new");
    produce_records(
        &cluster.broker,
        &[Outgoing {
            topic: TOPIC_DONE,
            partition: Some(9),
            event: &event,
        }],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    eventually(
        "a done event on partition 9 reaches node A",
        || format!("node A: {:?}\n{}", a.metrics(), cluster.logs()),
        || match a.get("on-new").unwrap() {
            Some(v) if v == "new" => Ok(()),
            other => Err(format!("node A holds {other:?}")),
        },
    );
}

/// A hole that waiting cannot fill — here the commit marker of a Kafka transaction, which takes an
/// offset no consumer is ever handed — is re-read a bounded number of times, then logged, counted and
/// passed: neither the state node nor a listener stalls, and the records after it are applied. (Apache
/// Kafka only: tansu does not implement transactions.)
#[test]
fn a_hole_that_persists_is_passed_after_bounded_rereads() {
    let cluster = Cluster::start("txn");
    if cluster.broker.kind() == BrokerKind::Tansu {
        eprintln!("skipped: needs Kafka transactions");
        return;
    }
    let state = cluster.state_node();
    let a = cluster.core_node(NODE_A);
    warm_up(&a);
    let txn: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.broker.bootstrap())
        .set("transactional.id", unique_name("txn"))
        .create()
        .expect("transactional producer");
    txn.init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    let watermarks: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.broker.bootstrap())
        .create()
        .expect("watermark reader");
    let high = |topic: &str| {
        watermarks
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .expect("watermarks")
            .1
    };
    let start = [high(TOPIC_SET_DEL), high(TOPIC_DONE)];
    txn.begin_transaction().expect("begin");
    let hlc = wall_millis() << 16;
    let in_txn = set_event(&cluster.ns, "in-txn", hlc, 0x77, "t");
    let done_in_txn = set_event(&cluster.ns, "done-in-txn", hlc, 0x77, "t");
    for (topic, event) in [(TOPIC_SET_DEL, &in_txn), (TOPIC_DONE, &done_in_txn)] {
        let (key, payload) = (event.message_key(), event.encode());
        txn.send(
            BaseRecord::to(topic)
                .partition(0)
                .key(&key)
                .payload(&payload),
        )
        .map_err(|(e, _)| e)
        .expect("queue in the transaction");
    }
    txn.commit_transaction(Duration::from_secs(30))
        .expect("commit");
    // The commit markers are written after the commit returns: wait for them (record + marker), so
    // the next records land behind them.
    assert!(
        wait_until(WAIT, || high(TOPIC_SET_DEL) == start[0] + 2
            && high(TOPIC_DONE) == start[1] + 2),
        "commit markers not written: {} {} after {start:?}",
        high(TOPIC_SET_DEL),
        high(TOPIC_DONE)
    );
    // Behind each commit marker: one more record on partition 0 of each topic.
    let after = set_event(&cluster.ns, "after-txn", hlc + 1, 0x77, "a");
    let done_after = set_event(&cluster.ns, "done-after-txn", hlc + 1, 0x77, "a");
    let behind_markers: Vec<Outgoing<'_>> = [(TOPIC_SET_DEL, &after), (TOPIC_DONE, &done_after)]
        .into_iter()
        .map(|(topic, event)| Outgoing {
            topic,
            partition: Some(0),
            event,
        })
        .collect();
    produce_records(&cluster.broker, &behind_markers)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    let diag = || {
        format!(
            "state node: {:?}\nnode A: {:?}\n{}",
            state.metrics(),
            a.metrics(),
            cluster.logs()
        )
    };
    eventually("the state node passed the hole", diag, || {
        let m = state.metrics();
        match (cluster.stored("in-txn"), cluster.stored("after-txn")) {
            (Some(_), Some(_)) if m.holes_skipped >= 1 => Ok(m),
            other => Err(format!("redis {other:?}, state node {m:?}")),
        }
    });
    eventually("node A passed the hole", diag, || {
        match (
            a.get("done-in-txn").unwrap(),
            a.get("done-after-txn").unwrap(),
        ) {
            (_, Some(v)) if v == "a" => Ok(()),
            other => Err(format!("node A holds {other:?}: {:?}", a.metrics())),
        }
    });
    let m = state.metrics();
    assert_eq!(m.holes_skipped, 1, "one hole passed: {m:?}");
    assert_eq!(
        m.holes_reread,
        u64::from(MAX_REREADS),
        "re-read a bounded number of times: {m:?}"
    );
    let am = a.metrics();
    assert_eq!(am.holes_reread, u64::from(MAX_REREADS), "{am:?}");
    assert!(am.resets >= 1, "a persisting hole is a gap: {am:?}");
}
