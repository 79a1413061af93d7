//! Faults around the state node, against real redis-server and tansu processes: malformed records on the
//! set-del topic, a state node killed with SIGKILL mid-stream, two state nodes splitting the partitions, a
//! graceful SIGTERM while writes flow, and Redis restarting (empty) under a running state node.
//!
//! Every test starts its own redis-server and broker. Writers are in-process `DistributedCache<String>`
//! instances (one unique namespace per test: one instance per process and namespace); state nodes are either
//! in-process `StateNode`s (when the test needs live metrics) or the `distcache-state-node` binary (when it
//! needs a real process to kill or signal). Redis is checked directly: `HGET prefix+ns:key v`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use distcache::event::{Event, Op, TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{DistributedCache, StateNode, StateNodeMetrics, Version, DEFAULT_KEY_PREFIX};
use support::{
    assigned_partitions, free_port, unique_name, wait_until, Broker, ChildProcess, RawRecord,
    RedisProbe, RedisServer,
};

/// Partitions of both topics in every test.
const PARTITIONS: u32 = 8;
/// Longest wait for anything that should happen (a group join takes ~3 s with tansu).
const PATIENCE: Duration = Duration::from_secs(40);

// ------------------------------------------------------------------------------------------------
// Servers, writers, state nodes, Redis checks
// ------------------------------------------------------------------------------------------------

/// One test's redis-server and broker.
struct Env {
    redis: RedisServer,
    broker: Broker,
}

impl Env {
    /// Starts both servers and creates both topics with `PARTITIONS` partitions.
    fn start() -> Env {
        let env = Env::start_without_topics();
        env.broker.create_topic(TOPIC_SET_DEL, PARTITIONS);
        env.broker.create_topic(TOPIC_DONE, PARTITIONS);
        env
    }

    /// Starts both servers; the topics are left to whoever starts first.
    fn start_without_topics() -> Env {
        let _ = env_logger::builder().is_test(true).try_init();
        Env {
            redis: RedisServer::start(),
            broker: Broker::start(),
        }
    }

    /// The writer for namespace `ns` (unique per test).
    fn cache(&self, ns: &str) -> DistributedCache<String> {
        DistributedCache::<String>::builder()
            .kafka_brokers(self.broker.bootstrap())
            .redis_url(self.redis.url())
            .namespace(ns)
            .build()
            .unwrap_or_else(|e| {
                panic!(
                    "build the core node: {e}\nbroker log:\n{}",
                    self.broker.log_tail(20)
                )
            })
    }

    /// An in-process state node in `group`.
    fn state_node(&self, group: &str) -> StateNode {
        StateNode::builder()
            .kafka_brokers(self.broker.bootstrap())
            .redis_url(self.redis.url())
            .key_prefix(DEFAULT_KEY_PREFIX)
            .group(group)
            .max_batch(256)
            .max_wait(Duration::from_millis(2))
            .redis_workers(2)
            .start()
            .unwrap_or_else(|e| {
                panic!(
                    "start the state node: {e}\nbroker log:\n{}",
                    self.broker.log_tail(20)
                )
            })
    }

    /// The `distcache-state-node` binary in `group`, logging at info level to its stderr and
    /// serving `/metrics` on a free port.
    fn spawn_state_node(&self, label: &str, group: &str) -> NodeProcess {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_distcache-state-node"));
        cmd.args(["--brokers", &self.broker.bootstrap()])
            .args(["--redis", &self.redis.url()])
            .args(["--group", group])
            .args(["--partitions", &PARTITIONS.to_string()])
            .args([
                "--batch-size",
                "256",
                "--batch-wait-ms",
                "2",
                "--threads",
                "2",
            ])
            .args(["--key-prefix", DEFAULT_KEY_PREFIX])
            .args(["--log-level", "info", "--metrics-interval-s", "0"])
            .args(["--metrics-addr", &metrics])
            // Flags win over DISTCACHE_* variables; this one has no flag here.
            .env_remove("DISTCACHE_TOMBSTONE_TTL_S");
        NodeProcess {
            process: ChildProcess::spawn(label, cmd),
            metrics,
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- broker log tail:\n{}\n--- redis log tail:\n{}",
            self.broker.log_tail(15),
            self.redis.log_tail(10)
        )
    }
}

/// One write made by a writer thread.
#[derive(Clone, Debug)]
struct WriteRecord {
    key: String,
    value: String,
    ok: bool,
    started: Instant,
    /// When the broker acknowledged it, and the version it got (`None` for a failed write).
    acked: Option<(Instant, Version)>,
}

/// Writer threads doing acknowledged `set_with_sync` writes from fixed plans.
struct Writers {
    handles: Vec<JoinHandle<Vec<WriteRecord>>>,
    acked: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Writers {
    /// One thread per plan; a plan is `(key, value)` in order. Keep every key in one plan, so the order of
    /// its writes is known.
    fn start(cache: &DistributedCache<String>, plans: Vec<Vec<(String, String)>>) -> Writers {
        let acked = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| {
                let (cache, acked, failed, stop) =
                    (cache.clone(), acked.clone(), failed.clone(), stop.clone());
                thread::Builder::new()
                    .name(format!("writer-{i}"))
                    .spawn(move || {
                        let mut log = Vec::with_capacity(plan.len());
                        for (key, value) in plan {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let started = Instant::now();
                            let result = cache.set_with_sync(&key, value.clone(), None, None);
                            let acked_at = match result {
                                Ok(version) => {
                                    acked.fetch_add(1, Ordering::Relaxed);
                                    Some((Instant::now(), version))
                                }
                                Err(e) => {
                                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                        eprintln!("write {key} failed: {e}");
                                    }
                                    None
                                }
                            };
                            log.push(WriteRecord {
                                key,
                                value,
                                ok: acked_at.is_some(),
                                started,
                                acked: acked_at,
                            });
                        }
                        log
                    })
                    .expect("spawn writer")
            })
            .collect();
        Writers {
            handles,
            acked,
            failed,
            stop,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` writes were acknowledged (panics after `PATIENCE`).
    fn wait_acked(&self, n: usize) {
        assert!(
            wait_until(PATIENCE, || self.acked() >= n
                || self.handles.iter().all(|h| h.is_finished())),
            "writers stuck at {} acknowledged writes ({} failed)",
            self.acked(),
            self.failed.load(Ordering::Relaxed)
        );
    }

    /// Asks the threads to stop after their current write.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Every write made, per thread in order.
    fn join(self) -> Vec<WriteRecord> {
        self.handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread panicked"))
            .collect()
    }
}

/// `threads` plans of `rounds` passes over `keys_per_thread` distinct keys; the value names round and key.
fn plans(
    tag: &str,
    threads: usize,
    keys_per_thread: usize,
    rounds: usize,
) -> Vec<Vec<(String, String)>> {
    (0..threads)
        .map(|t| {
            (0..rounds)
                .flat_map(|r| {
                    (0..keys_per_thread)
                        .map(move |k| (format!("{tag}-t{t}-k{k}"), format!("r{r}-t{t}-k{k}")))
                })
                .collect()
        })
        .collect()
}

/// What Redis may hold per key after `writes`: the value of the last acknowledged write, or the value of a
/// failed write after it (a write that returned `Err` may still have reached the broker). Only keys whose last
/// acknowledged write passes `include` are listed; keys never acknowledged are not.
fn expected(
    writes: &[WriteRecord],
    include: impl Fn(&WriteRecord) -> bool,
) -> BTreeMap<String, Vec<String>> {
    let mut per_key: HashMap<&str, (Option<&WriteRecord>, Vec<String>)> = HashMap::new();
    for w in writes {
        let entry = per_key.entry(&w.key).or_default();
        if w.ok {
            *entry = (Some(w), Vec::new());
        } else {
            entry.1.push(w.value.clone());
        }
    }
    per_key
        .into_iter()
        .filter_map(|(key, (last_ok, later_failed))| {
            let last_ok = last_ok.filter(|w| include(w))?;
            let mut allowed = vec![last_ok.value.clone()];
            allowed.extend(later_failed);
            Some((key.to_string(), allowed))
        })
        .collect()
}

/// A state-node process and the address of its `/metrics`.
struct NodeProcess {
    process: ChildProcess,
    metrics: String,
}

impl std::ops::Deref for NodeProcess {
    type Target = ChildProcess;
    fn deref(&self) -> &ChildProcess {
        &self.process
    }
}

/// Partitions the node holds now, from its `distcache_state_node_assigned_partitions` gauge (0 when
/// it holds none or does not answer).
fn held(node: &NodeProcess) -> usize {
    assigned_partitions(&node.metrics)
}

/// Whether `a` and `b` hold all partitions between them, at least one each.
fn split_between(a: &NodeProcess, b: &NodeProcess) -> bool {
    let (x, y) = (held(a), held(b));
    x > 0 && y > 0 && x + y == PARTITIONS as usize
}

/// The counters a binary state node logs on shutdown ("final metrics: StateNodeMetrics { consumed: X, … }"),
/// the plain integer ones only.
fn final_metrics(stderr: &str) -> Option<HashMap<String, u64>> {
    let at = stderr.rfind("final metrics: StateNodeMetrics {")?;
    let body = &stderr[at + "final metrics: StateNodeMetrics {".len()..];
    let mut out = HashMap::new();
    for part in body.split(", ") {
        let Some((name, value)) = part.trim().split_once(": ") else {
            break;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            break;
        };
        out.insert(name.to_string(), value);
    }
    out.contains_key("consumed").then_some(out)
}

/// Waits until `node` holds at least one partition (its metrics say so).
fn wait_assigned(node: &NodeProcess, env: &Env) {
    assert!(
        wait_until(PATIENCE, || held(node) > 0),
        "state node got no partitions within {PATIENCE:?}; stderr:\n{}\n{}",
        node.stderr_tail(30),
        env.diagnostics()
    );
}

/// SIGTERM, then the exit status and the final metrics; panics unless it exits 0 within `timeout`.
fn terminate(node: &ChildProcess, timeout: Duration) -> (Duration, HashMap<String, u64>) {
    let started = Instant::now();
    assert!(
        node.terminate(),
        "state node was not running:\n{}",
        node.stderr_tail(30)
    );
    let status = node.wait_timeout(timeout);
    let took = started.elapsed();
    let stderr = node.stderr();
    let status = status.unwrap_or_else(|| {
        panic!(
            "no exit within {timeout:?} of SIGTERM; stderr:\n{}",
            node.stderr_tail(30)
        )
    });
    assert!(
        status.success(),
        "exit status {status} after SIGTERM; stderr:\n{}",
        node.stderr_tail(30)
    );
    // The stderr reader thread may lag the exit by a moment.
    let mut metrics = final_metrics(&stderr);
    if metrics.is_none() {
        wait_until(Duration::from_secs(5), || {
            metrics = final_metrics(&node.stderr());
            metrics.is_some()
        });
    }
    let metrics = metrics
        .unwrap_or_else(|| panic!("no final metrics logged; stderr:\n{}", node.stderr_tail(30)));
    (took, metrics)
}

// ------------------------------------------------------------------------------------------------
// 1. Malformed records
// ------------------------------------------------------------------------------------------------

/// Hand-made records that are not valid set-del events, all aimed at `victim` (a key the test also writes
/// properly): if one were applied it would show in Redis. Spread over partitions starting at `first_partition`.
fn malformed_records(ns: &str, victim: &str, first_partition: i32) -> Vec<RawRecord> {
    let forged = |op: Op, value: Option<&str>| Event {
        op,
        value: value.map(|v| serde_json::to_vec(v).unwrap()),
        // Far in the future: applied by mistake, it would win against every real write.
        ..Event::delete(ns, victim, Version::new(u64::MAX >> 1, 7))
    };
    let key = distcache::event::message_key(ns, victim);
    let good = forged(Op::Set, Some("EVIL")).encode();
    let mut format_2 = good.clone();
    format_2[2] = 2;
    let truncated = good[..good.len() - 3].to_vec();
    let values: Vec<Option<Vec<u8>>> = vec![
        Some(b"\xff\x00 garbage, not an envelope \x01\x02".to_vec()),
        Some(Vec::new()),
        None,
        Some(format_2),
        Some(truncated),
        Some([good.clone(), vec![0]].concat()),
        Some(forged(Op::Stale, None).encode()),
    ];
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| RawRecord {
            partition: Some((first_partition + i as i32) % PARTITIONS as i32),
            offset: None,
            key: Some(key.clone()),
            value,
        })
        .collect()
}

/// Produces one set of `marker-P` in namespace `ns` straight into every partition P of the set-del topic, and
/// returns what Redis holds once they are applied. A marker applied means its partition was consumed up to
/// it: proof that nothing before it is still to come, without sleeping.
fn markers_in_every_partition(env: &Env, ns: &str) -> BTreeMap<String, Vec<String>> {
    let version = distcache::HybridClock::new(0x3a7).now();
    let records: Vec<RawRecord> = (0..PARTITIONS as i32)
        .map(|p| {
            let key = format!("marker-{p}");
            let value = format!("marker at {version}");
            let event = Event::set(
                ns,
                key.clone(),
                version,
                serde_json::to_vec(&value).expect("encode"),
            );
            RawRecord {
                partition: Some(p),
                offset: None,
                key: Some(event.message_key()),
                value: Some(event.encode()),
            }
        })
        .collect();
    env.broker.produce_raw(TOPIC_SET_DEL, &records);
    (0..PARTITIONS)
        .map(|p| (format!("marker-{p}"), vec![format!("marker at {version}")]))
        .collect()
}

fn write_all(cache: &DistributedCache<String>, writes: &[(String, String)]) {
    for (k, v) in writes {
        cache
            .set_with_sync(k, v.clone(), None, None)
            .unwrap_or_else(|e| panic!("write {k}: {e}"));
    }
}

#[test]
fn malformed_records_are_counted_skipped_and_committed() {
    let started = Instant::now();
    let env = Env::start();
    let ns = unique_name("faults-malformed");
    let group = unique_name("group");
    let node = env.state_node(&group);
    let cache = env.cache(&ns);
    let mut probe = RedisProbe::new(&env.redis.url());

    let round = |r: usize| -> Vec<(String, String)> {
        (0..30)
            .map(|k| (format!("k{k}"), format!("r{r}-k{k}")))
            .collect()
    };
    // Good, bad, good, bad, good: the bad records sit between good ones on the same partitions.
    let mut bad = 0;
    write_all(&cache, &round(0));
    let batch = malformed_records(&ns, "k0", 0);
    bad += batch.len();
    env.broker.produce_raw(TOPIC_SET_DEL, &batch);
    write_all(&cache, &round(1));
    let batch = malformed_records(&ns, "k1", 4);
    bad += batch.len();
    env.broker.produce_raw(TOPIC_SET_DEL, &batch);
    write_all(&cache, &round(2));
    let good = 3 * 30;

    let want: BTreeMap<String, Vec<String>> =
        round(2).into_iter().map(|(k, v)| (k, vec![v])).collect();
    probe.wait_converged(&ns, &want, PATIENCE, || {
        format!("metrics {:?}\n{}", node.metrics(), env.diagnostics())
    });
    assert!(
        wait_until(PATIENCE, || node.metrics().malformed >= bad as u64),
        "malformed never reached {bad}: {:?}",
        node.metrics()
    );

    // Still flowing: a later write on the victims' partitions applies.
    write_all(
        &cache,
        &[("k0".into(), "after".into()), ("k1".into(), "after".into())],
    );
    let after: BTreeMap<String, Vec<String>> = [("k0", "after"), ("k1", "after")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
        .collect();
    probe.wait_converged(&ns, &after, PATIENCE, || {
        format!("metrics {:?}\n{}", node.metrics(), env.diagnostics())
    });
    assert!(
        wait_until(PATIENCE, || node.metrics().consumed
            >= (good + bad + 2) as u64),
        "{:?}",
        node.metrics()
    );

    node.shutdown();
    let m: StateNodeMetrics = node.metrics();
    assert_eq!(
        m.malformed, bad as u64,
        "exactly the injected records are malformed: {m:?}"
    );
    assert_eq!(m.consumed, (good + bad + 2) as u64, "{m:?}");
    // Every good write is applied, or replaced by a newer write of its key in the same batch.
    assert_eq!(
        m.applied + m.deduped + m.stale_dropped,
        (good + 2) as u64,
        "every good write accounted for: {m:?}"
    );
    assert_eq!(m.failed, 0, "{m:?}");
    drop(node);

    // A new node in the same group starts after the committed offsets: nothing of the above comes back.
    let restarted = env.state_node(&group);
    write_all(&cache, &[("k2".into(), "restarted".into())]);
    let last: BTreeMap<String, Vec<String>> =
        [("k2".to_string(), vec!["restarted".to_string()])].into();
    probe.wait_converged(&ns, &last, PATIENCE, || {
        format!("metrics {:?}\n{}", restarted.metrics(), env.diagnostics())
    });
    // Once a marker behind everything else in every partition is applied, the node has consumed all it
    // ever will of what came before: what it counted is final.
    let markers = markers_in_every_partition(&env, &ns);
    probe.wait_converged(&ns, &markers, PATIENCE, || {
        format!("metrics {:?}\n{}", restarted.metrics(), env.diagnostics())
    });
    let m = restarted.metrics();
    assert_eq!(
        m.consumed,
        1 + PARTITIONS as u64,
        "only the new write and the markers are consumed after a restart: {m:?}"
    );
    assert_eq!(m.malformed, 0, "malformed records were re-consumed: {m:?}");
    restarted.shutdown();
    eprintln!(
        "malformed_records_are_counted_skipped_and_committed: {:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------------
// 2. SIGKILL mid-stream
// ------------------------------------------------------------------------------------------------

/// Every write has its own key, so nothing written after the kill can hide a write lost at the kill: each
/// write acknowledged before the SIGKILL (some consumed but not committed, some not yet consumed) must be
/// in Redis with its value and on the done topic with its version, and so must every later one.
#[test]
fn state_node_killed_mid_stream_loses_no_acknowledged_write() {
    let started = Instant::now();
    let env = Env::start();
    let ns = unique_name("faults-kill");
    let group = unique_name("group");
    let first = env.spawn_state_node("state-node-1", &group);
    wait_assigned(&first, &env);
    let cache = env.cache(&ns);
    let mut probe = RedisProbe::new(&env.redis.url());
    let mut done = support::DoneWatcher::new(&env.broker, PATIENCE);

    // 3000 writes of 3000 distinct keys (4 threads × 750); the kill comes after 1000 acknowledgements.
    let writers = Writers::start(&cache, plans("kill", 4, 750, 1));
    writers.wait_acked(1000);
    let killed_at = Instant::now();
    first.kill();
    let second = env.spawn_state_node("state-node-2", &group);
    let writes = writers.join();
    let acked: Vec<&WriteRecord> = writes.iter().filter(|w| w.ok).collect();
    let before_kill = acked
        .iter()
        .filter(|w| w.acked.is_some_and(|(at, _)| at < killed_at))
        .count();
    eprintln!(
        "kill test: {before_kill} writes acknowledged before the kill; {} of {} in total",
        acked.len(),
        writes.len()
    );
    assert!(before_kill >= 1000, "{before_kill}");
    assert_eq!(writes.len(), 3000);

    let want = expected(&writes, |_| true);
    assert_eq!(want.len(), acked.len(), "one key per write");
    let diagnostics = || {
        format!(
            "--- state-node-1 (killed):\n{}\n--- state-node-2:\n{}\n{}",
            first.stderr_tail(15),
            second.stderr_tail(30),
            env.diagnostics()
        )
    };
    probe.wait_converged(&ns, &want, PATIENCE, diagnostics);

    // Every acknowledged write reached the other nodes too: its done event, a set at its version.
    let mut missing: HashMap<&str, Version> = acked
        .iter()
        .map(|w| (w.key.as_str(), w.acked.expect("acknowledged").1))
        .collect();
    let complete = done.scan_until(PATIENCE, |e| {
        if e.ns == ns && e.op == Op::Set && missing.get(e.key.as_str()) == Some(&e.version) {
            missing.remove(e.key.as_str());
        }
        missing.is_empty()
    });
    if !complete {
        let lost_before_kill = acked
            .iter()
            .filter(|w| missing.contains_key(w.key.as_str()))
            .filter(|w| w.acked.is_some_and(|(at, _)| at < killed_at))
            .count();
        panic!(
            "{} acknowledged writes ({lost_before_kill} of them acknowledged before the kill) have no done \
             event, e.g. {:?}\n{}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            diagnostics()
        );
    }
    let (_, metrics) = terminate(&second, Duration::from_secs(15));
    eprintln!(
        "kill test: restarted node metrics {metrics:?}; {:?}",
        started.elapsed()
    );
    assert!(metrics["consumed"] > 0, "{metrics:?}");
    assert_eq!(metrics["malformed"], 0, "{metrics:?}");
    assert_eq!(metrics["failed"], 0, "{metrics:?}");
}

// ------------------------------------------------------------------------------------------------
// 3. Two state nodes in one group
// ------------------------------------------------------------------------------------------------

#[test]
fn two_state_nodes_split_the_partitions() {
    let started = Instant::now();
    // The nodes create the topics (`--partitions 8`), racing each other.
    let env = Env::start_without_topics();
    let ns = unique_name("faults-split");
    let group = unique_name("group");
    let a = env.spawn_state_node("state-node-a", &group);
    let b = env.spawn_state_node("state-node-b", &group);
    let split = wait_until(PATIENCE, || split_between(&a, &b));
    assert!(
        split,
        "the nodes never split {PARTITIONS} partitions\n--- a:\n{}\n--- b:\n{}\n{}",
        a.stderr_tail(20),
        b.stderr_tail(20),
        env.diagnostics()
    );
    eprintln!(
        "split test: a holds {:?}, b holds {:?} after {:?}",
        held(&a),
        held(&b),
        started.elapsed()
    );

    let cache = env.cache(&ns);
    let mut probe = RedisProbe::new(&env.redis.url());
    let writes = Writers::start(&cache, plans("split", 4, 500, 1)).join();
    assert!(
        writes.iter().all(|w| w.ok),
        "a write failed with a healthy broker"
    );
    let want = expected(&writes, |_| true);
    assert_eq!(want.len(), 2000);
    probe.wait_converged(&ns, &want, PATIENCE, || {
        format!(
            "--- a:\n{}\n--- b:\n{}\n{}",
            a.stderr_tail(20),
            b.stderr_tail(20),
            env.diagnostics()
        )
    });

    assert!(a.terminate() && b.terminate());
    let (_, ma) = terminate_signalled(&a);
    let (_, mb) = terminate_signalled(&b);
    eprintln!("split test: a {ma:?}\nb {mb:?}\n{:?}", started.elapsed());
    assert!(
        ma["consumed"] > 0 && mb["consumed"] > 0,
        "both nodes must work: a {ma:?}, b {mb:?}"
    );
    assert!(
        ma["consumed"] + mb["consumed"] >= 2000,
        "a {ma:?}, b {mb:?}"
    );
    assert_eq!(
        ma["applied"] + mb["applied"],
        2000,
        "each write applied by exactly one node: a {ma:?}, b {mb:?}"
    );
}

/// Scale-out while writes flow: the first node finishes and commits what it holds for the partitions it
/// gives up (revoke barrier), so the second takes over without losing or re-applying anything.
#[test]
fn second_state_node_joins_mid_stream() {
    let started = Instant::now();
    let env = Env::start();
    let ns = unique_name("faults-join");
    let group = unique_name("group");
    let a = env.spawn_state_node("state-node-a", &group);
    wait_assigned(&a, &env);
    let cache = env.cache(&ns);
    let mut probe = RedisProbe::new(&env.redis.url());

    // Writes flow before, during and after the rebalance (~3 s); stopped a while after the split.
    let writers = Writers::start(&cache, plans("join", 2, 100_000, 1));
    writers.wait_acked(300);
    let b = env.spawn_state_node("state-node-b", &group);
    let split = wait_until(PATIENCE, || split_between(&a, &b));
    let acked_at_split = writers.acked();
    if split {
        writers.wait_acked(acked_at_split + 500);
    }
    writers.stop();
    let writes = writers.join();
    assert!(
        split,
        "the nodes never split {PARTITIONS} partitions\n--- a:\n{}\n--- b:\n{}\n{}",
        a.stderr_tail(20),
        b.stderr_tail(20),
        env.diagnostics()
    );
    assert!(
        writes.iter().all(|w| w.ok),
        "a write failed with a healthy broker"
    );
    let want = expected(&writes, |_| true);
    probe.wait_converged(&ns, &want, PATIENCE, || {
        format!(
            "--- a:\n{}\n--- b:\n{}\n{}",
            a.stderr_tail(20),
            b.stderr_tail(20),
            env.diagnostics()
        )
    });

    assert!(a.terminate() && b.terminate());
    let (_, ma) = terminate_signalled(&a);
    let (_, mb) = terminate_signalled(&b);
    let total = writes.len() as u64;
    eprintln!(
        "join test: split after {acked_at_split} of {total} writes\na {ma:?}\nb {mb:?}\n{:?}",
        started.elapsed()
    );
    assert!(mb["consumed"] > 0, "the second node did no work: {mb:?}");
    assert_eq!(ma["applied"] + mb["applied"], total, "a {ma:?}, b {mb:?}");
    let replayed = ma["consumed"] + mb["consumed"] - total;
    assert!(
        replayed <= 10,
        "{replayed} records consumed twice across the rebalance: a {ma:?}, b {mb:?}"
    );
}

/// Like `terminate` for a node that was already sent SIGTERM.
fn terminate_signalled(node: &ChildProcess) -> (Duration, HashMap<String, u64>) {
    let started = Instant::now();
    let status = node
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "no exit within 15 s of SIGTERM; stderr:\n{}",
                node.stderr_tail(30)
            )
        });
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        node.stderr_tail(30)
    );
    let mut metrics = None;
    wait_until(Duration::from_secs(5), || {
        metrics = final_metrics(&node.stderr());
        metrics.is_some()
    });
    let metrics = metrics
        .unwrap_or_else(|| panic!("no final metrics logged; stderr:\n{}", node.stderr_tail(30)));
    (started.elapsed(), metrics)
}

// ------------------------------------------------------------------------------------------------
// 4. Graceful shutdown
// ------------------------------------------------------------------------------------------------

#[test]
fn sigterm_drains_and_commits() {
    let started = Instant::now();
    let env = Env::start();
    let ns = unique_name("faults-sigterm");
    let group = unique_name("group");
    let first = env.spawn_state_node("state-node-1", &group);
    wait_assigned(&first, &env);
    let cache = env.cache(&ns);
    let mut probe = RedisProbe::new(&env.redis.url());

    let total = 2000;
    let writers = Writers::start(&cache, plans("term", 2, total / 2, 1));
    writers.wait_acked(600);
    let (took, first_metrics) = terminate(&first, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "graceful shutdown took {took:?}"
    );
    let writes = writers.join();
    assert_eq!(
        writes.iter().filter(|w| w.ok).count(),
        total,
        "a write failed with a healthy broker"
    );

    let second = env.spawn_state_node("state-node-2", &group);
    let want = expected(&writes, |_| true);
    probe.wait_converged(&ns, &want, PATIENCE, || {
        format!(
            "--- state-node-2:\n{}\n{}",
            second.stderr_tail(30),
            env.diagnostics()
        )
    });
    let (_, second_metrics) = terminate(&second, Duration::from_secs(10));
    let (c1, c2) = (first_metrics["consumed"], second_metrics["consumed"]);
    eprintln!(
        "sigterm test: shutdown took {took:?}; first consumed {c1}, second consumed {c2} of {total}; {:?}",
        started.elapsed()
    );
    assert!(
        c1 > 0 && c1 < total as u64,
        "the first node must stop mid-stream: {first_metrics:?}"
    );
    assert!(
        c1 + c2 >= total as u64,
        "first {first_metrics:?}, second {second_metrics:?}"
    );
    // Everything the first node consumed was applied and committed before it left: the second one starts
    // where it stopped (a handful of records polled but not yet handed over may come again).
    let replayed = c1 + c2 - total as u64;
    assert!(
        replayed <= 10,
        "{replayed} records consumed twice: first {first_metrics:?}, second {second_metrics:?}"
    );
    // A replayed record is found stale in Redis, so each write is applied exactly once.
    assert_eq!(
        first_metrics["applied"] + second_metrics["applied"],
        total as u64,
        "first {first_metrics:?}, second {second_metrics:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// 5. Redis restart
// ------------------------------------------------------------------------------------------------

#[test]
fn redis_restart_under_the_state_node() {
    let started = Instant::now();
    let env = Env::start();
    let ns = unique_name("faults-redis");
    let group = unique_name("group");
    let node = env.state_node(&group);
    let cache = env.cache(&ns);
    let mut probe = RedisProbe::new(&env.redis.url());

    // One long plan; stopped once enough was written after the restart.
    let writers = Writers::start(&cache, plans("redis", 1, 100_000, 1));
    assert!(
        wait_until(PATIENCE, || node.metrics().applied >= 200),
        "nothing applied before the fault: {:?}\n{}",
        node.metrics(),
        env.diagnostics()
    );
    env.redis.kill();
    let killed_at = Instant::now();
    assert!(
        wait_until(PATIENCE, || node.metrics().retries > 0),
        "the state node never retried with Redis down: {:?}",
        node.metrics()
    );
    let outage_writes = writers.acked();
    thread::sleep(Duration::from_millis(300));
    env.redis.restart();
    let restarted_at = writers.acked();
    writers.wait_acked(restarted_at + 300);
    writers.stop();
    let writes = writers.join();
    eprintln!(
        "redis test: {} writes, {} during the outage, {} after the restart",
        writes.len(),
        restarted_at.saturating_sub(outage_writes),
        writes.len().saturating_sub(restarted_at)
    );

    // Writes produced after Redis died cannot have reached the old, lost data: all of them must be applied.
    let want = expected(&writes, |w| w.started > killed_at);
    assert!(want.len() >= 300, "{}", want.len());
    probe.wait_converged(&ns, &want, PATIENCE, || {
        format!("metrics {:?}\n{}", node.metrics(), env.diagnostics())
    });
    let m = node.metrics();
    assert!(m.retries > 0, "{m:?}");
    assert_eq!(m.failed, 0, "{m:?}");
    let shutdown_started = Instant::now();
    node.shutdown();
    assert!(
        shutdown_started.elapsed() < Duration::from_secs(15),
        "shutdown hung"
    );
    eprintln!("redis test: {m:?}; {:?}", started.elapsed());
}
