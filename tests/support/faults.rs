//! The harness of the state-node fault tests (`pipeline_faults`, `state_node_group`): a redis-server and a
//! broker with both topics created, in-process writers that record every acknowledged write, in-process and
//! binary state nodes (the binary with its `/metrics` address), and what Redis must end up holding.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use distcache::event::{TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{DistributedCache, StateNode, Version, DEFAULT_KEY_PREFIX};

use super::{assigned_partitions, free_port, wait_until, Broker, ChildProcess, RedisServer};

/// Partitions of both topics in every test.
pub const PARTITIONS: u32 = 8;
/// Longest wait for anything that should happen (a group join takes ~3 s with tansu).
pub const PATIENCE: Duration = Duration::from_secs(40);

// ------------------------------------------------------------------------------------------------
// Servers, writers, state nodes, Redis checks
// ------------------------------------------------------------------------------------------------

/// One test's redis-server and broker.
pub struct Env {
    pub redis: RedisServer,
    pub broker: Broker,
}

impl Env {
    /// Starts both servers and creates both topics with `PARTITIONS` partitions.
    pub fn start() -> Env {
        let env = Env::start_without_topics();
        env.broker.create_topic(TOPIC_SET_DEL, PARTITIONS);
        env.broker.create_topic(TOPIC_DONE, PARTITIONS);
        env
    }

    /// Starts both servers; the topics are left to whoever starts first.
    pub fn start_without_topics() -> Env {
        let _ = env_logger::builder().is_test(true).try_init();
        Env {
            redis: RedisServer::start(),
            broker: Broker::start(),
        }
    }

    /// The writer for namespace `ns` (unique per test).
    pub fn cache(&self, ns: &str) -> DistributedCache<String> {
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
    pub fn state_node(&self, group: &str) -> StateNode {
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

    /// The `distcache-state-node` binary in `group`, logging at info level to its stderr,
    /// serving `/metrics` on a free port and writing its final counters to a file of its own.
    pub fn spawn_state_node(&self, label: &str, group: &str) -> NodeProcess {
        let metrics = format!("127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().expect("temp dir for the final metrics");
        let final_metrics_file = dir.path().join("final-metrics.json");
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
            .arg("--final-metrics-file")
            .arg(&final_metrics_file)
            // Flags win over DISTCACHE_* variables; this one has no flag here.
            .env_remove("DISTCACHE_TOMBSTONE_TTL_S");
        NodeProcess {
            process: ChildProcess::spawn(label, cmd),
            metrics,
            final_metrics_file,
            _dir: dir,
        }
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "--- broker log tail:\n{}\n--- redis log tail:\n{}",
            self.broker.log_tail(15),
            self.redis.log_tail(10)
        )
    }
}

/// One write made by a writer thread.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    pub key: String,
    pub value: String,
    pub ok: bool,
    pub started: Instant,
    /// When the broker acknowledged it, and the version it got (`None` for a failed write).
    pub acked: Option<(Instant, Version)>,
}

/// Writer threads doing acknowledged `set_with_sync` writes from fixed plans.
pub struct Writers {
    pub handles: Vec<JoinHandle<Vec<WriteRecord>>>,
    pub acked: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
    pub stop: Arc<AtomicBool>,
}

impl Writers {
    /// One thread per plan; a plan is `(key, value)` in order. Keep every key in one plan, so the order of
    /// its writes is known.
    pub fn start(cache: &DistributedCache<String>, plans: Vec<Vec<(String, String)>>) -> Writers {
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

    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` writes were acknowledged (panics after `PATIENCE`).
    pub fn wait_acked(&self, n: usize) {
        assert!(
            wait_until(PATIENCE, || self.acked() >= n
                || self.handles.iter().all(|h| h.is_finished())),
            "writers stuck at {} acknowledged writes ({} failed)",
            self.acked(),
            self.failed.load(Ordering::Relaxed)
        );
    }

    /// Asks the threads to stop after their current write.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Every write made, per thread in order.
    pub fn join(self) -> Vec<WriteRecord> {
        self.handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread panicked"))
            .collect()
    }
}

/// `threads` plans of `rounds` passes over `keys_per_thread` distinct keys; the value names round and key.
pub fn plans(
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
pub fn expected(
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

/// A state-node process, the address of its `/metrics` and the file of its final counters.
pub struct NodeProcess {
    pub process: ChildProcess,
    pub metrics: String,
    pub final_metrics_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for NodeProcess {
    type Target = ChildProcess;
    fn deref(&self) -> &ChildProcess {
        &self.process
    }
}

/// Partitions the node holds now, from its `distcache_state_node_assigned_partitions` gauge (0 when
/// it holds none or does not answer).
pub fn held(node: &NodeProcess) -> usize {
    assigned_partitions(&node.metrics)
}

/// Whether `a` and `b` hold all partitions between them, at least one each.
pub fn split_between(a: &NodeProcess, b: &NodeProcess) -> bool {
    let (x, y) = (held(a), held(b));
    x > 0 && y > 0 && x + y == PARTITIONS as usize
}

/// The counters a binary state node wrote to its `--final-metrics-file` when it stopped: each number of the
/// JSON object by name, each field of a summary as `name.field` (`batch_size.count`). `None` while there is no
/// file; panics unless it is the documented shape (numbers, and summaries of count, sum, max, p50, p99).
pub fn final_metrics(path: &Path) -> Option<HashMap<String, u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let bad = |why: &str| -> String { format!("{}: {why}:\n{text}", path.display()) };
    let object = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(object)) => object,
        _ => panic!("{}", bad("not one JSON object")),
    };
    let mut out = HashMap::new();
    for (name, value) in object {
        match value {
            serde_json::Value::Object(summary) => {
                let mut fields: Vec<&str> = summary.keys().map(String::as_str).collect();
                fields.sort_unstable();
                assert_eq!(
                    fields,
                    ["count", "max", "p50", "p99", "sum"],
                    "{}",
                    bad(&format!("{name} is not a summary"))
                );
                for (field, v) in &summary {
                    let v = v
                        .as_u64()
                        .unwrap_or_else(|| panic!("{}", bad(&format!("{name}.{field}"))));
                    out.insert(format!("{name}.{field}"), v);
                }
            }
            v => {
                let v = v
                    .as_u64()
                    .unwrap_or_else(|| panic!("{}", bad(&format!("{name} is not a count"))));
                out.insert(name, v);
            }
        }
    }
    assert!(out.contains_key("consumed"), "{}", bad("no consumed"));
    Some(out)
}

/// Waits until `node` holds at least one partition (its metrics say so).
pub fn wait_assigned(node: &NodeProcess, env: &Env) {
    assert!(
        wait_until(PATIENCE, || held(node) > 0),
        "state node got no partitions within {PATIENCE:?}; stderr:\n{}\n{}",
        node.stderr_tail(30),
        env.diagnostics()
    );
}

/// SIGTERM, then the exit status and the final metrics; panics unless it exits 0 within `timeout`.
pub fn terminate(node: &NodeProcess, timeout: Duration) -> (Duration, HashMap<String, u64>) {
    let started = Instant::now();
    assert!(
        node.terminate(),
        "state node was not running:\n{}",
        node.stderr_tail(30)
    );
    let status = node.wait_timeout(timeout);
    let took = started.elapsed();
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
    (took, written_final_metrics(node))
}

/// Like `terminate` for a node that was already sent SIGTERM.
pub fn terminate_signalled(node: &NodeProcess) -> (Duration, HashMap<String, u64>) {
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
    (started.elapsed(), written_final_metrics(node))
}

/// The final metrics of a node that exited: the file is complete before the exit (written, then renamed).
fn written_final_metrics(node: &NodeProcess) -> HashMap<String, u64> {
    final_metrics(&node.final_metrics_file).unwrap_or_else(|| {
        panic!(
            "no final metrics file {}; stderr:\n{}",
            node.final_metrics_file.display(),
            node.stderr_tail(30)
        )
    })
}
