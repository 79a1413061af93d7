//! Failover times of real `distcache-state-node` processes (run by `scripts/bench.sh failover`).
//!
//! Against the redis-server and broker given in `DISTCACHE_REDIS_URL` and `DISTCACHE_BROKERS`
//! (`DISTCACHE_BROKER_NAME` labels the output), each scenario runs `--rounds` times in a fresh
//! consumer group and namespace:
//!
//! - **restart, static**: one state node with `--instance-id`; SIGKILL it and start a new process
//!   with the same id at once; 16 writes (every partition) are made right after the kill; time from
//!   the kill until all 16 are in Redis. Goal ≤ 3 s.
//! - **restart, dynamic**: the same without `--instance-id` (what happens without static membership).
//! - **survivor takes over**: two state nodes split the partitions, with their own instance ids
//!   and without; SIGKILL one; 16 writes right after the kill; time until all are in Redis (the
//!   survivor applied the dead node's partitions). Goal ≤ session timeout + 2 s.
//!
//! A failover not done within 30 s is reported as such (tansu 0.6 never hands a dead static
//! member's partitions to the survivor), and that scenario's remaining rounds are skipped.
//!
//! Prints a markdown table; `--summary FILE` also writes `key=value` lines (seconds) for the
//! side-by-side table of scripts/bench.sh.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use distcache::{DistributedCache, DEFAULT_KEY_PREFIX};

// The tests' scraper of /metrics (standard library only).
#[path = "../tests/support/scrape.rs"]
#[allow(dead_code)]
mod scrape;

const PARTITIONS: u32 = 8;
const KEYS: usize = 16;
const PATIENCE: Duration = Duration::from_secs(60);
/// A failover that takes longer than this is reported as not happening.
const GIVE_UP: Duration = Duration::from_secs(30);

struct Settings {
    brokers: String,
    redis: String,
    broker_name: String,
    rounds: usize,
    session_ms: u64,
    heartbeat_ms: u64,
    summary: Option<String>,
}

fn settings() -> Settings {
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            eprintln!(
                "{name} is not set. Run through scripts/bench.sh failover, or set \
                 DISTCACHE_BROKERS=host:port DISTCACHE_REDIS_URL=redis://host:port/"
            );
            std::process::exit(2)
        })
    };
    let mut s = Settings {
        brokers: env("DISTCACHE_BROKERS"),
        redis: env("DISTCACHE_REDIS_URL"),
        broker_name: std::env::var("DISTCACHE_BROKER_NAME").unwrap_or_else(|_| "broker".into()),
        rounds: 3,
        session_ms: 6000,
        heartbeat_ms: 1000,
        summary: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--rounds" => s.rounds = value().parse().unwrap_or(3).max(1),
            "--session-timeout-ms" => s.session_ms = value().parse().unwrap_or(6000),
            "--heartbeat-interval-ms" => s.heartbeat_ms = value().parse().unwrap_or(1000),
            "--summary" => s.summary = Some(value()),
            // cargo bench passes --bench; criterion-style filters are ignored.
            _ => {}
        }
    }
    s
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A state-node process serving `/metrics` on `metrics` (how the bench knows what it holds); its
/// stderr is kept for failure messages. SIGKILLed on drop.
struct Node {
    child: Child,
    stderr: Arc<Mutex<String>>,
    metrics: String,
}

impl Node {
    fn spawn(s: &Settings, group: &str, instance_id: Option<&str>) -> Node {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.to_string())
            .expect("a free port for /metrics");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_distcache-state-node"));
        cmd.args(["--metrics-addr", &metrics]);
        cmd.args([
            "--brokers",
            &s.brokers,
            "--redis",
            &s.redis,
            "--group",
            group,
        ])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--session-timeout-ms", &s.session_ms.to_string()])
        .args(["--heartbeat-interval-ms", &s.heartbeat_ms.to_string()])
        .args(["--log-level", "info"])
        .env_remove("DISTCACHE_INSTANCE_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(id) = instance_id {
            cmd.args(["--instance-id", id]);
        }
        let mut child = cmd.spawn().expect("spawn distcache-state-node");
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                if text.len() > 1 << 20 {
                    text.clear();
                }
                text.push_str(&line);
                text.push('\n');
            }
        });
        Node {
            child,
            stderr,
            metrics,
        }
    }

    /// Partitions held, from the node's `distcache_state_node_assigned_partitions` gauge.
    fn held(&self) -> usize {
        scrape::assigned_partitions(&self.metrics)
    }

    fn tail(&self) -> String {
        let text = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

struct Round {
    ns: String,
    cache: DistributedCache<String>,
    redis: redis::Connection,
}

impl Round {
    fn new(s: &Settings) -> Round {
        let ns = unique("failover");
        let cache = DistributedCache::<String>::builder()
            .kafka_brokers(&s.brokers)
            .redis_url(&s.redis)
            .namespace(&ns)
            .build()
            .expect("core node");
        let redis = redis::Client::open(s.redis.as_str())
            .and_then(|c| c.get_connection())
            .expect("redis");
        Round { ns, cache, redis }
    }

    /// Writes `KEYS` keys tagged `tag`; returns them.
    fn write(&self, tag: &str) -> Vec<(String, String)> {
        let writes: Vec<(String, String)> = (0..KEYS)
            .map(|i| (format!("k{i}"), format!("{tag}-{i}")))
            .collect();
        for (k, v) in &writes {
            self.cache
                .set_with_sync(k, v.clone(), None, None)
                .expect("write acknowledged by the broker");
        }
        writes
    }

    fn applied(&mut self, writes: &[(String, String)]) -> bool {
        let mut pipe = redis::pipe();
        for (k, _) in writes {
            pipe.cmd("HGET")
                .arg(distcache::redis_entry_key(DEFAULT_KEY_PREFIX, &self.ns, k))
                .arg("v");
        }
        let raw: Vec<Option<Vec<u8>>> = pipe.query(&mut self.redis).unwrap_or_default();
        raw.len() == writes.len()
            && raw.iter().zip(writes).all(|(got, (_, want))| {
                got.as_deref()
                    .and_then(|b| serde_json::from_slice::<String>(b).ok())
                    .is_some_and(|v| &v == want)
            })
    }

    fn wait_applied(&mut self, writes: &[(String, String)], what: &str, nodes: &[&Node]) {
        if !wait_until(PATIENCE, || self.applied(writes)) {
            let logs: Vec<String> = nodes.iter().map(|n| n.tail()).collect();
            panic!(
                "{what}: writes not applied within {PATIENCE:?}\n{}",
                logs.join("\n---\n")
            );
        }
    }

    /// Like `wait_applied` after a kill: `false` (and the survivors' log tails on stderr) when the
    /// writes are not all applied within `GIVE_UP`.
    fn wait_failover(&mut self, writes: &[(String, String)], nodes: &[&Node]) -> bool {
        let ok = wait_until(GIVE_UP, || self.applied(writes));
        if !ok {
            let logs: Vec<String> = nodes.iter().map(|n| n.tail()).collect();
            eprintln!(
                "writes not applied within {GIVE_UP:?}:\n{}",
                logs.join("\n---\n")
            );
        }
        ok
    }
}

fn wait_held(nodes: &[&Node], total: usize) {
    let ok = wait_until(PATIENCE, || {
        nodes.iter().all(|n| n.held() > 0) && nodes.iter().map(|n| n.held()).sum::<usize>() == total
    });
    if !ok {
        let logs: Vec<String> = nodes.iter().map(|n| n.tail()).collect();
        panic!(
            "partitions not assigned within {PATIENCE:?}\n{}",
            logs.join("\n---\n")
        );
    }
}

/// One restart round: kill the only node, start its replacement (same id or none), time the writes.
fn restart(s: &Settings, static_id: bool) -> Option<Duration> {
    let group = unique("failover-group");
    let id = static_id.then(|| unique("node"));
    let mut round = Round::new(s);
    let mut first = Node::spawn(s, &group, id.as_deref());
    wait_held(&[&first], PARTITIONS as usize);
    let warm = round.write("warm");
    round.wait_applied(&warm, "warm-up", &[&first]);
    first.kill();
    let killed = Instant::now();
    let mut second = Node::spawn(s, &group, id.as_deref());
    let writes = round.write("after");
    let ok = round.wait_failover(&writes, &[&second]);
    let took = killed.elapsed();
    second.terminate();
    ok.then_some(took)
}

/// One takeover round: two nodes split the partitions, one is killed, time until the survivor
/// applied writes on every partition.
fn takeover(s: &Settings, static_ids: bool) -> Option<Duration> {
    let group = unique("failover-group");
    let mut round = Round::new(s);
    let (id_a, id_b) = (unique("node-a"), unique("node-b"));
    let mut a = Node::spawn(s, &group, static_ids.then_some(id_a.as_str()));
    let mut b = Node::spawn(s, &group, static_ids.then_some(id_b.as_str()));
    wait_held(&[&a, &b], PARTITIONS as usize);
    let warm = round.write("warm");
    round.wait_applied(&warm, "warm-up", &[&a, &b]);
    a.kill();
    let killed = Instant::now();
    let writes = round.write("after");
    let ok = round.wait_failover(&writes, &[&b]);
    let took = killed.elapsed();
    b.terminate();
    ok.then_some(took)
}

fn stats(times: &[Duration]) -> (f64, f64) {
    let mut secs: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    secs.sort_by(|a, b| a.total_cmp(b));
    (secs[secs.len() / 2], secs[secs.len() - 1])
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: this bench kills the state-node
    // processes of servers scripts/bench.sh starts, so in test mode it only checks that it starts.
    if !std::env::args().any(|a| a == "--bench") {
        println!("failover bench: test mode, nothing measured (run scripts/bench.sh failover)");
        return;
    }
    let s = settings();
    let session = s.session_ms as f64 / 1000.0;
    let mut rows = Vec::new();
    let takeover_goal = format!("≤ {:.0} s (session + 2 s)", session + 2.0);
    let scenarios: [(&str, &str, &str); 4] = [
        (
            "restart_static",
            "SIGKILL + restart, same --instance-id",
            "≤ 3 s",
        ),
        (
            "restart_dynamic",
            "SIGKILL + restart, no instance id",
            "(comparison)",
        ),
        (
            "takeover_static",
            "2 nodes with instance ids, SIGKILL one",
            &takeover_goal,
        ),
        (
            "takeover_dynamic",
            "2 nodes without instance ids, SIGKILL one",
            &takeover_goal,
        ),
    ];
    for (key, label, goal) in scenarios {
        let mut times = Vec::new();
        let mut failed = false;
        for i in 0..s.rounds {
            let took = match key {
                "restart_static" => restart(&s, true),
                "restart_dynamic" => restart(&s, false),
                "takeover_static" => takeover(&s, true),
                _ => takeover(&s, false),
            };
            match took {
                Some(took) => {
                    eprintln!(
                        "{}: {key} round {}: {:.2} s",
                        s.broker_name,
                        i + 1,
                        took.as_secs_f64()
                    );
                    times.push(took);
                }
                None => {
                    // One failover that never happens is the finding; more rounds add nothing.
                    eprintln!(
                        "{}: {key} round {}: not within {GIVE_UP:?}",
                        s.broker_name,
                        i + 1
                    );
                    failed = true;
                    break;
                }
            }
        }
        rows.push((
            key,
            label,
            goal.to_string(),
            (!failed).then(|| stats(&times)),
        ));
    }
    println!(
        "Session timeout {} ms, heartbeat {} ms, {} rounds each, {KEYS} writes right after the kill; \
         time from SIGKILL until all are in Redis.",
        s.session_ms, s.heartbeat_ms, s.rounds
    );
    println!();
    println!("| scenario | median (s) | max (s) | goal |");
    println!("|---|---:|---:|---|");
    for (_, label, goal, result) in &rows {
        match result {
            Some((median, max)) => println!("| {label} | {median:.2} | {max:.2} | {goal} |"),
            None => println!(
                "| {label} | not within {} s | | {goal} |",
                GIVE_UP.as_secs()
            ),
        }
    }
    println!();
    if let Some(path) = &s.summary {
        let mut text = format!("session_s={session}\n");
        for (key, _, _, result) in &rows {
            let (median, max) = result.unwrap_or((f64::INFINITY, f64::INFINITY));
            text.push_str(&format!("{key}_median={median}\n{key}_max={max}\n"));
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {path}: {e}");
        }
    }
}
