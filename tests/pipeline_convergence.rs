//! The whole pipeline against real processes: a `redis-server`, a broker, state nodes (in-process
//! [`StateNode`]s and the `distcache-state-node` binary) and core nodes (an in-process
//! [`DistributedCache`] and `examples/core_node` child processes). No mocks.
//!
//! What is checked: sets and deletes reach every node's local cache and Redis; after a concurrent storm
//! every local cache and Redis hold the value of the largest version over every writer's acknowledged
//! writes; a write that lost is corrected at its origin; older versions never overwrite newer ones or
//! deletes, also across a state-node restart. Ordering under bursts and broker quirks (holes, added
//! partitions) are in `pipeline_order.rs`; the shared harness is `tests/support/deployment.rs`, the
//! checks `tests/support/convergence.rs`.
//!
//! Each test starts its own redis-server and broker (topic names are fixed, so isolation is per broker).
//! `examples/core_node` is built on first use with `cargo build --example core_node` (a no-op when it is
//! fresh); set `DISTCACHE_CORE_NODE_BIN` to use a prebuilt binary instead.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::Instant;

use distcache::event::{Event, Op, TOPIC_SET_DEL};
use distcache::{Cache, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use support::{
    acked_version, check_winner, delete_event, eventually, merge_writes, set_event,
    state_node_settled, two_core_nodes, wait_until, wall_millis, warm_up, Deployment, KeyWrites,
    Stored, NODE_A, NODE_B, WAIT,
};

/// A `set-sync` on one node shows up in the other node's local cache (plain `get`) and in Redis; a
/// `del-sync` invalidates every node and leaves a tombstone; plain `set`/`delete` replicate to local caches
/// without touching Redis.
#[test]
fn two_core_nodes_converge_on_set_and_delete() {
    let dep = Deployment::named("conv");
    let (state, a, b) = two_core_nodes(&dep, &[]);
    let diag = || dep.report(&state, &a, Some(&b));

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
    let stored = dep.stored("greeting");
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
        match dep.stored("greeting") {
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
    let ttl: i64 = dep.with_redis(|c| redis::cmd("PTTL").arg(dep.redis_key("greeting")).query(c));
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
    let stored = dep.stored("colour").expect("redis has colour");
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
        match dep.stored("colour") {
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
        dep.stored("plain"),
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
        dep.stored("plain"),
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
    let dep = Deployment::named("storm");
    let (state, a, b) = two_core_nodes(&dep, &["--reply-versions"]);
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

    let diag = || dep.report(&state, &a, Some(&b));
    // The writes and the warm-up.
    let expected = (2 * WRITES + 1) as u64;
    eventually("redis and both local caches agree", diag, || {
        state_node_settled(&state.metrics(), expected)?;
        let stored = dep.stored_many(&keys);
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
    for (key, stored) in keys.iter().zip(dep.stored_many(&keys)) {
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
    let dep = Deployment::named("origin");
    let a = dep.core_node(NODE_A);
    let b = dep.core_node_process_as(NODE_B, &[]);
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
        dep.stored("contested"),
        None,
        "no state node yet: redis untouched"
    );

    let state = dep.state_node_with(|b| b.redis_workers(2));
    let diag = || dep.report(&state, &a, Some(&b));
    let stored = eventually("redis holds B's newer write", diag, || {
        match dep.stored("contested") {
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
    let dep = Deployment::named("skew");
    let state = dep.state_node_with(|b| b.redis_workers(2));
    let b = dep.core_node_process_as(NODE_B, &[]);
    let diag_b = || {
        format!(
            "state node: {:?}\nnode B: {:?}\n{}",
            state.metrics(),
            b.metrics(),
            dep.logs()
        )
    };

    // A write from a node whose clock is two minutes ahead; B observes its done event.
    let fast = (wall_millis() + 120_000) << 16;
    dep.produce(
        TOPIC_SET_DEL,
        &[set_event(&dep.ns, "skew-marker", fast, 0x5, "fast")],
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
        match (dep.stored("contested"), dep.stored("contested-del")) {
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
    let a = dep.core_node(NODE_A);
    let diag = || dep.report(&state, &a, Some(&b));
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
        dep.stored("contested").and_then(|s| s.value).as_deref(),
        Some("new"),
        "the older write must not overwrite redis"
    );
    eventually(
        "A's local cache stops serving its losing writes",
        diag,
        || {
            for key in ["contested", "contested-del"] {
                if let Some(v) = a.get(key).unwrap().filter(|v| v == "old") {
                    return Err(format!("A get {key} = {v:?}, redis {:?}", dep.stored(key)));
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
    let dep = Deployment::named("order");
    let ns = dep.ns.clone();
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
    let first = dep.state_node_with(|b| b.redis_workers(2));
    let mut done = dep.done_watcher();
    dep.produce(TOPIC_SET_DEL, &[set_event(&ns, key, 200, NODE, "v200")]);
    done.wait_for("set@200 applied", |e| is_at(e, 200, Op::Set));
    assert_eq!(dep.stored(key), stored(200, Some("v200")));
    dep.produce(TOPIC_SET_DEL, &[set_event(&ns, key, 180, NODE, "v180")]);
    done.wait_for("set@180 stale", |e| is_at(e, 180, Op::Stale));
    assert_eq!(dep.stored(key), stored(200, Some("v200")));
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
    let second = dep.state_node_process("distcache-state-node", None, &["--threads", "2"]);
    dep.produce(TOPIC_SET_DEL, &[set_event(&ns, key, 100, NODE, "v100")]);
    done.wait_for("set@100 stale", |e| is_at(e, 100, Op::Stale));
    assert_eq!(
        dep.stored(key),
        stored(200, Some("v200")),
        "set@100 must not overwrite set@200"
    );
    dep.produce(TOPIC_SET_DEL, &[delete_event(&ns, key, 150, NODE)]);
    done.wait_for("delete@150 stale", |e| is_at(e, 150, Op::Stale));
    assert_eq!(
        dep.stored(key),
        stored(200, Some("v200")),
        "delete@150 must not remove set@200"
    );
    dep.produce(TOPIC_SET_DEL, &[delete_event(&ns, key, 300, NODE)]);
    done.wait_for("delete@300 applied", |e| is_at(e, 300, Op::Delete));
    assert_eq!(
        dep.stored(key),
        stored(300, None),
        "delete@300 leaves a tombstone"
    );
    let ttl: i64 = dep.with_redis(|c| redis::cmd("PTTL").arg(dep.redis_key(key)).query(c));
    assert!(ttl > 0, "the tombstone expires (PTTL {ttl})");
    assert!(second.terminate(), "SIGTERM the state-node binary");
    let status = second.wait_timeout(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "state-node binary exit {status:?}; stderr:\n{}",
        second.stderr_tail(30)
    );
    let m = support::written_final_metrics(&second);
    assert_eq!(
        (m["consumed"], m["applied"], m["stale_dropped"]),
        (3, 1, 2),
        "the binary's final metrics (consumed, applied, stale_dropped): {m:?}"
    );
    drop(second);

    // Third state node (in-process, fresh): an older set must not resurrect the deleted key.
    let third = dep.state_node_with(|b| b.redis_workers(2));
    dep.produce(TOPIC_SET_DEL, &[set_event(&ns, key, 250, NODE, "v250")]);
    done.wait_for("set@250 stale", |e| is_at(e, 250, Op::Stale));
    assert_eq!(
        dep.stored(key),
        stored(300, None),
        "set@250 must not resurrect the key"
    );
    // The same delete delivered again (a replay after a crash between apply and commit, or a
    // producer retry) is the same write: applied again, its done event published again — not
    // reported stale, which would leave nodes that missed the first done event uninformed.
    dep.produce(TOPIC_SET_DEL, &[delete_event(&ns, key, 300, NODE)]);
    done.wait_for_next("delete@300 replayed", |e| is_at(e, 300, Op::Delete));
    assert_eq!(dep.stored(key), stored(300, None));
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
