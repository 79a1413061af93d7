//! Faults around the state node, against real redis-server and broker processes: malformed records on the
//! set-del topic, a state node killed with SIGKILL mid-stream, and Redis restarting (empty) under a running
//! state node. Two nodes in one group and SIGTERM: `state_node_group.rs`; the harness: `support::Deployment`.
//!
//! Every test starts its own redis-server and broker. Writers are in-process `DistributedCache<String>`
//! instances (one unique namespace per test: one instance per process and namespace); state nodes are either
//! in-process `StateNode`s (when the test needs live metrics) or the `distcache-state-node` binary (when it
//! needs a real process to kill or signal). Redis is checked directly: `HGET prefix+ns:key v`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::thread::{self};
use std::time::{Duration, Instant};

use distcache::event::{Event, Op, WriteEvent, TOPIC_SET_DEL};
use distcache::StateNode;
use distcache::{DistributedCache, StateNodeMetrics, Version};
use support::{
    expected, plans, terminate, unique_name, wait_until, Deployment, RawRecord, WriteRecord,
    Writers, BATCHED_NODE_ARGS, PARTITIONS, PATIENCE,
};

/// An in-process state node in `group`, with small batches that go out at once and two Redis
/// workers (as the binary's [`BATCHED_NODE_ARGS`]).
fn state_node(dep: &Deployment, group: &str) -> StateNode {
    dep.state_node_with(|b| {
        b.group(group)
            .max_batch(256)
            .max_wait(Duration::from_millis(2))
            .redis_workers(2)
    })
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
        ..WriteEvent::delete(ns, victim, Version::new(u64::MAX >> 1, 7)).into_envelope()
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
fn markers_in_every_partition(dep: &Deployment, ns: &str) -> BTreeMap<String, Vec<String>> {
    let version = distcache::HybridClock::new(0x3a7).now();
    let records: Vec<RawRecord> = (0..PARTITIONS as i32)
        .map(|p| {
            let key = format!("marker-{p}");
            let value = format!("marker at {version}");
            let event = WriteEvent::set(
                ns,
                key.clone(),
                version,
                serde_json::to_vec(&value).expect("encode"),
            )
            .into_envelope();
            RawRecord {
                partition: Some(p),
                offset: None,
                key: Some(event.message_key()),
                value: Some(event.encode()),
            }
        })
        .collect();
    dep.broker.produce_raw(TOPIC_SET_DEL, &records);
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
    let dep = Deployment::start().with_topics(PARTITIONS);
    let ns = unique_name("faults-malformed");
    let group = unique_name("group");
    let node = state_node(&dep, &group);
    let cache = dep.cache(&ns);
    let mut probe = dep.probe();

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
    dep.broker.produce_raw(TOPIC_SET_DEL, &batch);
    write_all(&cache, &round(1));
    let batch = malformed_records(&ns, "k1", 4);
    bad += batch.len();
    dep.broker.produce_raw(TOPIC_SET_DEL, &batch);
    write_all(&cache, &round(2));
    let good = 3 * 30;

    let want: BTreeMap<String, Vec<String>> =
        round(2).into_iter().map(|(k, v)| (k, vec![v])).collect();
    probe.wait_converged(&ns, &want, PATIENCE, || {
        format!("metrics {:?}\n{}", node.metrics(), dep.logs())
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
        format!("metrics {:?}\n{}", node.metrics(), dep.logs())
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
    let restarted = state_node(&dep, &group);
    write_all(&cache, &[("k2".into(), "restarted".into())]);
    let last: BTreeMap<String, Vec<String>> =
        [("k2".to_string(), vec!["restarted".to_string()])].into();
    probe.wait_converged(&ns, &last, PATIENCE, || {
        format!("metrics {:?}\n{}", restarted.metrics(), dep.logs())
    });
    // Once a marker behind everything else in every partition is applied, the node has consumed all it
    // ever will of what came before: what it counted is final.
    let markers = markers_in_every_partition(&dep, &ns);
    probe.wait_converged(&ns, &markers, PATIENCE, || {
        format!("metrics {:?}\n{}", restarted.metrics(), dep.logs())
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
    let dep = Deployment::start().with_topics(PARTITIONS);
    let ns = unique_name("faults-kill");
    let group = unique_name("group");
    let first = dep.state_node_process("state-node-1", Some(&group), BATCHED_NODE_ARGS);
    dep.wait_assigned(&first);
    let cache = dep.cache(&ns);
    let mut probe = dep.probe();
    let mut done = support::DoneWatcher::new(&dep.broker, PATIENCE);

    // 3000 writes of 3000 distinct keys (4 threads × 750); the kill comes after 1000 acknowledgements.
    let writers = Writers::start(&cache, plans("kill", 4, 750, 1));
    writers.wait_acked(1000);
    let killed_at = Instant::now();
    first.kill();
    let second = dep.state_node_process("state-node-2", Some(&group), BATCHED_NODE_ARGS);
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
            dep.logs()
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
// 5. Redis restart
// ------------------------------------------------------------------------------------------------

#[test]
fn redis_restart_under_the_state_node() {
    let started = Instant::now();
    let dep = Deployment::start().with_topics(PARTITIONS);
    let ns = unique_name("faults-redis");
    let group = unique_name("group");
    let node = state_node(&dep, &group);
    let cache = dep.cache(&ns);
    let mut probe = dep.probe();

    // One long plan; stopped once enough was written after the restart.
    let writers = Writers::start(&cache, plans("redis", 1, 100_000, 1));
    assert!(
        wait_until(PATIENCE, || node.metrics().applied >= 200),
        "nothing applied before the fault: {:?}\n{}",
        node.metrics(),
        dep.logs()
    );
    dep.redis.kill();
    let killed_at = Instant::now();
    assert!(
        wait_until(PATIENCE, || node.metrics().retries > 0),
        "the state node never retried with Redis down: {:?}",
        node.metrics()
    );
    let outage_writes = writers.acked();
    thread::sleep(Duration::from_millis(300));
    dep.redis.restart();
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
        format!("metrics {:?}\n{}", node.metrics(), dep.logs())
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
