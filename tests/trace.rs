//! `trace(true)` times each event's journey into the core node's metrics (produce → acknowledged,
//! produced → done produced, done produced → seen); with trace off nothing is recorded. Real
//! redis-server and a real broker.

mod support;

use std::time::Duration;

use distcache::{DistributedCache, Summary, WriteOutcome};
use support::{unique_name, wait_until, Deployment};

const WAIT: Duration = Duration::from_secs(30);

fn cache(dep: &Deployment, trace: bool) -> DistributedCache<String> {
    DistributedCache::<String>::builder()
        .kafka_brokers(dep.broker.bootstrap())
        .redis_url(dep.redis.url())
        .namespace(unique_name("trace"))
        .wait_timeout(WAIT)
        .trace(trace)
        .build()
        .expect("core node")
}

/// Recorded `n` times, each value below a minute (no clock nonsense on one machine).
fn plausible(name: &str, s: &Summary, n: u64) {
    assert_eq!(s.count, n, "{name}: {s:?}");
    assert!(s.max < 60_000_000, "{name}: {s:?}");
    assert!(s.p50 <= s.p99 && s.p99 <= s.max, "{name}: {s:?}");
}

#[test]
fn traced_events_are_timed_and_untraced_ones_are_not() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let traced = cache(&dep, true);
    let quiet = cache(&dep, false);
    for i in 0..5 {
        for c in [&traced, &quiet] {
            let outcome = c
                .set_with_sync_and_wait(&format!("k{i}"), "v".into(), None, None)
                .unwrap();
            assert_eq!(outcome, WriteOutcome::Applied);
        }
    }
    let m = traced.metrics();
    plausible("trace_produce_us", &m.trace_produce_us, 5);
    assert!(
        m.trace_produce_us.sum > 0,
        "a broker round trip takes time: {m:?}"
    );
    plausible("trace_to_done_us", &m.trace_to_done_us, 5);
    plausible("trace_done_to_seen_us", &m.trace_done_to_seen_us, 5);
    // The two spans cover the journey the untraced propagation figure measures (milliseconds
    // of record-timestamp resolution aside).
    let spans = m.trace_to_done_us.sum + m.trace_done_to_seen_us.sum;
    assert!(
        spans <= m.propagation_us.sum + 5 * 2_000,
        "spans {spans} µs against the whole journey {} µs",
        m.propagation_us.sum
    );
    let text = m.to_prometheus("t");
    assert!(
        text.contains("distcache_trace_to_done_seconds_count{namespace=\"t\"} 5"),
        "{text}"
    );

    let q = quiet.metrics();
    assert_eq!(q.trace_produce_us, Summary::default());
    assert_eq!(q.trace_to_done_us, Summary::default());
    assert_eq!(q.trace_done_to_seen_us, Summary::default());
    assert_eq!(
        q.propagation_us.count, 5,
        "the untraced figure still counts"
    );

    // The state node of this deployment runs without trace: its stages are not timed.
    // (`applied` moves once the done events are acknowledged, which may be after they arrive.)
    assert!(wait_until(WAIT, || node.metrics().applied == 10));
    let s = node.metrics();
    assert_eq!(s.trace_consumed_us, Summary::default());
    assert_eq!(s.trace_applied_us, Summary::default());
    assert_eq!(s.trace_done_us, Summary::default());
}

/// A state node built with `trace(true)` times its own stages: each write from produced to taken
/// for applying, and each batch's Redis apply and done-event delivery.
#[test]
fn a_traced_state_node_times_its_stages() {
    let dep = Deployment::start();
    let node = dep.state_node_with(|node| node.trace(true));
    let c = cache(&dep, false);
    for i in 0..5 {
        let outcome = c
            .set_with_sync_and_wait(&format!("k{i}"), "v".into(), None, None)
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Applied);
    }
    assert!(wait_until(WAIT, || node.metrics().trace_done_us.count
        == node.metrics().batches));
    let m = node.metrics();
    assert_eq!(m.trace_consumed_us.count, 5, "{m:?}");
    assert!(m.trace_consumed_us.max < 60_000_000, "{m:?}");
    // One batch per write here (each waits for the previous), at least one in any case.
    for (name, s) in [("applied", &m.trace_applied_us), ("done", &m.trace_done_us)] {
        assert!((1..=5).contains(&s.count), "{name}: {m:?}");
        assert!(s.sum > 0 && s.max < 60_000_000, "{name}: {m:?}");
    }
    assert_eq!(m.trace_applied_us.count, m.batches, "{m:?}");
    let text = m.to_prometheus();
    assert!(
        text.contains("distcache_state_node_trace_consumed_seconds_count 5"),
        "{text}"
    );
}
