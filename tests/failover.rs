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

use std::time::{Duration, Instant};

use distcache::DEFAULT_KEY_PREFIX;
use support::{
    split_between, unique_name, wait_until, Broker, BrokerKind, Deployment, NodeProcess,
    RedisProbe, RedisServer, PARTITIONS, PATIENCE,
};

const SESSION_TIMEOUT_MS: u64 = 10_000;
/// How soon the restarted static member must have applied the writes made right after the kill.
const RESTART_BOUND: Duration = Duration::from_secs(8);

/// A state node process in `group` with the test's session timeout, a static member when it has
/// an `instance_id`.
fn spawn_state_node(
    dep: &Deployment,
    label: &str,
    group: &str,
    instance_id: Option<&str>,
) -> NodeProcess {
    let (partitions, session) = (PARTITIONS.to_string(), SESSION_TIMEOUT_MS.to_string());
    let mut args = vec![
        "--partitions",
        &partitions,
        "--session-timeout-ms",
        &session,
        "--heartbeat-interval-ms",
        "1000",
    ];
    if let Some(id) = instance_id {
        args.extend(["--instance-id", id]);
    }
    dep.state_node_process(label, Some(group), &args)
}

/// The keys of `ns` that Redis holds with exactly the expected value (none while Redis does not
/// answer).
fn present(probe: &mut RedisProbe, ns: &str, keys: &[(String, String)]) -> usize {
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    let got = probe.values(ns, &names).unwrap_or_default();
    got.iter()
        .zip(keys)
        .filter(|(got, (_, want))| got.as_ref() == Some(want))
        .count()
}

#[test]
fn restarted_static_member_applies_new_writes_within_seconds() {
    let dep = Deployment::start().with_topics(PARTITIONS);
    let broker = &dep.broker;
    let ns = unique_name("failover");
    let group = unique_name("failover-group");
    let cache = dep.cache::<String>(&ns);
    let mut probe = dep.probe();

    let first = spawn_state_node(&dep, "state-node-1", &group, Some("node-a"));
    dep.wait_assigned(&first);
    // Warm up: one write applied end to end, so the group and offsets are settled.
    let warm = vec![("warm".to_string(), "0".to_string())];
    cache
        .set_with_sync("warm", "0".to_string(), None, None)
        .expect("warm-up write");
    assert!(
        wait_until(PATIENCE, || present(&mut probe, &ns, &warm) == 1),
        "warm-up write not applied:\n{}",
        first.stderr_tail(30)
    );

    first.kill();
    let killed_at = Instant::now();
    let second = spawn_state_node(&dep, "state-node-2", &group, Some("node-a"));
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
        present(&mut probe, &ns, &writes) == writes.len()
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
        present(&mut probe, &ns, &writes),
        writes.len(),
        second.stderr_tail(30),
        broker.log_tail(15)
    );
}

/// A dynamic member stopped with SIGTERM leaves the group when it closes its consumer, so the
/// survivor applies writes on its partitions well before the (10 s) session timeout could expire.
#[test]
fn sigterm_leaves_the_group_so_the_survivor_takes_over_at_once() {
    let dep = Deployment::start().with_topics(PARTITIONS);
    let broker = &dep.broker;
    let ns = unique_name("failover-term");
    let group = unique_name("failover-term-group");
    let cache = dep.cache::<String>(&ns);
    let mut probe = dep.probe();
    let a = spawn_state_node(&dep, "state-node-a", &group, None);
    let b = spawn_state_node(&dep, "state-node-b", &group, None);
    assert!(
        wait_until(PATIENCE, || split_between(&a, &b, PARTITIONS)),
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
        present(&mut probe, &ns, &writes) == writes.len()
    });
    let took = stopped_at.elapsed();
    eprintln!(
        "failover: survivor applied the writes {took:?} after SIGTERM ({:?})",
        broker.kind()
    );
    assert!(
        applied,
        "{} of {} writes applied {took:?} after SIGTERM (bound {bound:?});\n--- survivor:\n{}",
        present(&mut probe, &ns, &writes),
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
    let dep = Deployment::on(
        RedisServer::start(),
        Broker::start_kafka(),
        &unique_name("ns"),
        DEFAULT_KEY_PREFIX,
    )
    .with_topics(PARTITIONS);
    let group = unique_name("failover-fenced-group");
    let first = spawn_state_node(&dep, "state-node-1", &group, Some("same-id"));
    dep.wait_assigned(&first);
    let second = spawn_state_node(&dep, "state-node-2", &group, Some("same-id"));
    let status = first.wait_timeout(PATIENCE);
    // Exit code 5: failed while running, restart me (README "State node CLI").
    assert!(
        status.is_some_and(|s| s.code() == Some(5)),
        "the fenced node did not exit with code 5 within {PATIENCE:?} ({status:?}):\n{}",
        first.stderr_tail(30)
    );
    // A node that fails still leaves its counters for whoever restarts it.
    let metrics = support::written_final_metrics(&first);
    assert_eq!(metrics["malformed"], 0, "{metrics:?}");
    assert!(
        first
            .stderr()
            .contains("the kafka consumer failed for good"),
        "no reason logged:\n{}",
        first.stderr_tail(30)
    );
    assert!(
        wait_until(PATIENCE, || second.held() > 0),
        "the new member holds nothing:\n{}",
        second.stderr_tail(30)
    );
}
