//! Failover of the `distcache-state-node` binary with static group membership (`--instance-id`):
//! a state node killed with SIGKILL and restarted at once with the same id takes its partitions
//! back without waiting for its old session to expire, so writes made right after the kill reach
//! Redis within seconds.
//!
//! The session timeout is set to 10 s here, so that only static membership can meet the bound:
//! a dynamic member (no instance id) would wait for the dead member's session to expire first.
//! The bound itself is generous (8 s, not a timing target; `scripts/bench.sh failover` measures).
//!
//! tansu 0.6 hands a restarted static member its partitions only after about one session timeout
//! (README "Brokers"), so on it (DISTCACHE_TEST_BROKER=tansu) the test checks only that the
//! restarted node applies the writes, with the session timeout plus the usual patience.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use distcache::event::{TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{DistributedCache, DEFAULT_KEY_PREFIX};
use support::faults::Env;
use support::{
    assigned_partitions, free_port, unique_name, wait_until, Broker, BrokerKind, ChildProcess,
    RedisServer,
};

const PARTITIONS: u32 = 8;
const SESSION_TIMEOUT_MS: u64 = 10_000;
/// How soon the restarted static member must have applied the writes made right after the kill.
const RESTART_BOUND: Duration = Duration::from_secs(8);
const PATIENCE: Duration = Duration::from_secs(40);

/// A state node process and the address of its `/metrics` and `/health`.
struct Node {
    process: ChildProcess,
    metrics: String,
}

impl std::ops::Deref for Node {
    type Target = ChildProcess;
    fn deref(&self) -> &ChildProcess {
        &self.process
    }
}

/// Partitions the node holds, from its `distcache_state_node_assigned_partitions` gauge.
fn held(node: &Node) -> usize {
    assigned_partitions(&node.metrics)
}

fn spawn_state_node(
    label: &str,
    broker: &Broker,
    redis: &RedisServer,
    group: &str,
    instance_id: Option<&str>,
) -> Node {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_distcache-state-node"));
    cmd.args(["--brokers", &broker.bootstrap()])
        .args(["--redis", &redis.url()])
        .args(["--group", group])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--session-timeout-ms", &SESSION_TIMEOUT_MS.to_string()])
        .args(["--heartbeat-interval-ms", "1000"])
        .args(["--log-level", "info"])
        .args(["--metrics-addr", &metrics])
        .env_remove("DISTCACHE_INSTANCE_ID");
    if let Some(id) = instance_id {
        cmd.args(["--instance-id", id]);
    }
    Node {
        process: ChildProcess::spawn(label, cmd),
        metrics,
    }
}

/// The keys of `ns` that Redis holds with exactly the expected value.
fn present(conn: &mut redis::Connection, ns: &str, keys: &[(String, String)]) -> usize {
    let mut pipe = redis::pipe();
    for (key, _) in keys {
        pipe.cmd("HGET")
            .arg(distcache::redis_entry_key(DEFAULT_KEY_PREFIX, ns, key))
            .arg("v");
    }
    let raw: Vec<Option<Vec<u8>>> = pipe.query(conn).unwrap_or_default();
    raw.iter()
        .zip(keys)
        .filter(|(got, (_, want))| {
            got.as_deref()
                .and_then(|b| serde_json::from_slice::<String>(b).ok())
                .is_some_and(|v| &v == want)
        })
        .count()
}

#[test]
fn restarted_static_member_applies_new_writes_within_seconds() {
    let env = Env::start();
    let (redis, broker) = (&env.redis, &env.broker);
    let ns = unique_name("failover");
    let group = unique_name("failover-group");
    let cache = DistributedCache::<String>::builder()
        .kafka_brokers(broker.bootstrap())
        .redis_url(redis.url())
        .namespace(&ns)
        .wait_timeout(PATIENCE)
        .build()
        .expect("core node");
    let mut conn = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("redis connection");

    let first = spawn_state_node("state-node-1", broker, redis, &group, Some("node-a"));
    assert!(
        wait_until(PATIENCE, || held(&first) > 0),
        "no partitions within {PATIENCE:?}:\n{}",
        first.stderr_tail(30)
    );
    // Warm up: one write applied end to end, so the group and offsets are settled.
    let warm = vec![("warm".to_string(), "0".to_string())];
    cache
        .set_with_sync("warm", "0".to_string(), None, None)
        .expect("warm-up write");
    assert!(
        wait_until(PATIENCE, || present(&mut conn, &ns, &warm) == 1),
        "warm-up write not applied:\n{}",
        first.stderr_tail(30)
    );

    first.kill();
    let killed_at = Instant::now();
    let second = spawn_state_node("state-node-2", broker, redis, &group, Some("node-a"));
    // Writes right after the kill, one per key on every partition (16 keys over 8 partitions).
    let writes: Vec<(String, String)> = (0..16)
        .map(|i| (format!("after-kill-{i}"), format!("v{i}")))
        .collect();
    for (key, value) in &writes {
        cache
            .set_with_sync(key, value.clone(), None, None)
            .expect("write acknowledged by the broker");
    }
    let bound = if broker.kind() == BrokerKind::Tansu {
        // No static membership on tansu: the old session must expire, then a rebalance.
        Duration::from_millis(SESSION_TIMEOUT_MS) + PATIENCE
    } else {
        RESTART_BOUND
    };
    let applied = wait_until(bound.saturating_sub(killed_at.elapsed()), || {
        present(&mut conn, &ns, &writes) == writes.len()
    });
    let took = killed_at.elapsed();
    eprintln!(
        "failover: restarted static member applied {} writes {took:?} after the kill ({:?})",
        writes.len(),
        broker.kind()
    );
    assert!(
        applied,
        "only {} of {} writes applied {took:?} after the kill (bound {bound:?});\n\
         --- restarted node:\n{}\n--- broker log:\n{}",
        present(&mut conn, &ns, &writes),
        writes.len(),
        second.stderr_tail(30),
        broker.log_tail(15)
    );
}

/// A dynamic member stopped with SIGTERM leaves the group when it closes its consumer, so the
/// survivor applies writes on its partitions well before the (10 s) session timeout could expire.
#[test]
fn sigterm_leaves_the_group_so_the_survivor_takes_over_at_once() {
    let env = Env::start();
    let (redis, broker) = (&env.redis, &env.broker);
    let ns = unique_name("failover-term");
    let group = unique_name("failover-term-group");
    let cache = DistributedCache::<String>::builder()
        .kafka_brokers(broker.bootstrap())
        .redis_url(redis.url())
        .namespace(&ns)
        .build()
        .expect("core node");
    let mut conn = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("redis connection");
    let a = spawn_state_node("state-node-a", broker, redis, &group, None);
    let b = spawn_state_node("state-node-b", broker, redis, &group, None);
    assert!(
        wait_until(PATIENCE, || held(&a) > 0
            && held(&b) > 0
            && held(&a) + held(&b) == PARTITIONS as usize),
        "partitions not split within {PATIENCE:?}:\n--- a:\n{}\n--- b:\n{}",
        a.stderr_tail(20),
        b.stderr_tail(20)
    );
    assert!(a.terminate(), "state node a not running");
    let stopped_at = Instant::now();
    assert!(
        a.wait_timeout(Duration::from_secs(15))
            .is_some_and(|s| s.success()),
        "no clean exit after SIGTERM:\n{}",
        a.stderr_tail(20)
    );
    let writes: Vec<(String, String)> = (0..16)
        .map(|i| (format!("after-term-{i}"), format!("v{i}")))
        .collect();
    for (key, value) in &writes {
        cache
            .set_with_sync(key, value.clone(), None, None)
            .expect("write acknowledged by the broker");
    }
    // Apache Kafka: well below the session timeout, so only a LeaveGroup can make it. tansu takes
    // about half a session timeout for any rebalance, and a whole one more without the LeaveGroup.
    let bound = match broker.kind() {
        BrokerKind::Kafka => Duration::from_millis(SESSION_TIMEOUT_MS / 2),
        BrokerKind::Tansu => Duration::from_millis(SESSION_TIMEOUT_MS),
    };
    let applied = wait_until(bound.saturating_sub(stopped_at.elapsed()), || {
        present(&mut conn, &ns, &writes) == writes.len()
    });
    let took = stopped_at.elapsed();
    eprintln!(
        "failover: survivor applied the writes {took:?} after SIGTERM ({:?})",
        broker.kind()
    );
    assert!(
        applied,
        "{} of {} writes applied {took:?} after SIGTERM (bound {bound:?});\n--- survivor:\n{}",
        present(&mut conn, &ns, &writes),
        writes.len(),
        b.stderr_tail(30)
    );
}

/// A static member fenced by another process with the same `--instance-id` can never rejoin
/// (librdkafka gives its consumer up for good, as it can also after a session that expired while
/// the broker was away): the fenced node must say so and exit non-zero, so a supervisor restarts
/// it, instead of running on while holding nothing.
#[test]
fn a_fenced_static_member_exits_and_says_why() {
    let _ = env_logger::builder().is_test(true).try_init();
    let redis = RedisServer::start();
    let broker = Broker::start_kafka();
    broker.create_topic(TOPIC_SET_DEL, PARTITIONS);
    broker.create_topic(TOPIC_DONE, PARTITIONS);
    let group = unique_name("failover-fenced-group");
    let first = spawn_state_node("state-node-1", &broker, &redis, &group, Some("same-id"));
    assert!(
        wait_until(PATIENCE, || held(&first) > 0),
        "no partitions within {PATIENCE:?}:\n{}",
        first.stderr_tail(30)
    );
    let second = spawn_state_node("state-node-2", &broker, &redis, &group, Some("same-id"));
    let status = first.wait_timeout(PATIENCE);
    // Exit code 5: failed while running, restart me (README "State node CLI").
    assert!(
        status.is_some_and(|s| s.code() == Some(5)),
        "the fenced node did not exit with code 5 within {PATIENCE:?} ({status:?}):\n{}",
        first.stderr_tail(30)
    );
    assert!(
        first
            .stderr()
            .contains("the kafka consumer failed for good"),
        "no reason logged:\n{}",
        first.stderr_tail(30)
    );
    assert!(
        wait_until(PATIENCE, || held(&second) > 0),
        "the new member holds nothing:\n{}",
        second.stderr_tail(30)
    );
}
