//! Redis Cluster mode against a real 3-master cluster started by tests/support (`RedisCluster`): the typed
//! `RedisCache<T>` (round trips, TTLs, the `Cache` semantics, corrupt and foreign values, `len`/`clear` over
//! every master and only the prefix), the state node applying versioned events to the cluster through
//! per-key cluster pipelines, including the one-by-one fallback when one write of a batch is refused, and
//! a master killed and restarted while the state node drains a backlog, without a write lost.
//!
//! Each test starts its own cluster (and broker), so the tests run in parallel without sharing state.

mod support;

use std::collections::{HashMap, HashSet};
use std::thread;
use std::time::{Duration, Instant};

use distcache::event::{Op, WriteEvent, TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{
    Cache, DistributedCache, Error, HybridClock, RedisCache, StateNode, Version, WriteOutcome,
    DEFAULT_KEY_PREFIX,
};
use serde::{Deserialize, Serialize};

use support::{
    cluster_entries, init_logs, produce_events, unique_name, wait_until, Broker, DoneWatcher,
    RedisCluster, PARTITIONS, PATIENCE,
};

/// The cap of every wait: generous for a loaded 2-core machine; waits end as soon as their condition holds.
const WAIT: Duration = Duration::from_secs(30);
/// Masters per test cluster (redis-cli's minimum).
const MASTERS: usize = 3;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    scores: Vec<i32>,
    home: Option<(f64, f64)>,
}

fn cluster_cache<T>(cluster: &RedisCluster, prefix: &str) -> RedisCache<T>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    RedisCache::<T>::builder(cluster.urls())
        .cluster(true)
        .key_prefix(prefix)
        .build()
        .unwrap_or_else(|e| panic!("build a cluster RedisCache: {e}\n{}", cluster.log_tails(20)))
}

/// `HMGET key v ver` through the cluster: the raw value and the version, as Redis holds them.
fn raw_entry(
    conn: &mut redis::cluster::ClusterConnection,
    key: &str,
) -> (Option<Vec<u8>>, Option<String>) {
    redis::cmd("HMGET")
        .arg(key)
        .arg("v")
        .arg("ver")
        .query(conn)
        .unwrap_or_else(|e| panic!("HMGET {key}: {e}"))
}

// ---------------------------------------------------------------------------------------------------------
// RedisCache<T> in cluster mode
// ---------------------------------------------------------------------------------------------------------

#[test]
fn typed_round_trips_ttls_and_bad_values_on_a_cluster() {
    init_logs();
    let cluster = RedisCluster::start(MASTERS);
    let prefix = format!("{}:", unique_name("rt"));
    let profiles: RedisCache<Profile> = cluster_cache(&cluster, &prefix);
    let strings: RedisCache<String> = cluster_cache(&cluster, &prefix);
    let mut conn = cluster.connection();

    // Typed round trips, for a struct and a String.
    let ana = Profile {
        id: 7,
        name: "Ana Müller".into(),
        scores: vec![3, -1, 40],
        home: Some((52.52, 13.405)),
    };
    profiles.set("ana", ana.clone(), None).unwrap();
    assert_eq!(profiles.get("ana").unwrap(), Some(ana.clone()));
    assert_eq!(profiles.peek("ana").unwrap(), Some(ana.clone()));
    strings
        .set("greeting", "grüß dich, {tag}".to_string(), None)
        .unwrap();
    assert_eq!(
        strings.get("greeting").unwrap().as_deref(),
        Some("grüß dich, {tag}")
    );
    // Stored as one hash per entry, the value as JSON in field `v`.
    let (v, ver) = raw_entry(&mut conn, &format!("{prefix}greeting"));
    assert_eq!(v.as_deref(), Some("\"grüß dich, {tag}\"".as_bytes()));
    assert_eq!(ver, None, "an unversioned set stores no version");

    // Keys that hash to other slots (and other masters) behave the same; an overwrite replaces.
    for i in 0..50 {
        strings
            .set(&format!("spread-{i}"), format!("s{i}"), None)
            .unwrap();
    }
    strings.set("spread-3", "again".into(), None).unwrap();
    for i in 0..50 {
        let want = if i == 3 {
            "again".to_string()
        } else {
            format!("s{i}")
        };
        assert_eq!(strings.get(&format!("spread-{i}")).unwrap(), Some(want));
    }

    // A single seed is enough: the client discovers the other masters.
    let one_seed: RedisCache<String> =
        RedisCache::builder(format!("redis://127.0.0.1:{}", cluster.ports()[1]))
            .cluster(true)
            .key_prefix(&prefix)
            .build()
            .unwrap();
    for i in 0..50 {
        assert!(one_seed.exists(&format!("spread-{i}")).unwrap());
    }

    // exists / peek / delete, and misses.
    assert!(profiles.exists("ana").unwrap());
    assert!(!profiles.exists("nobody").unwrap());
    assert_eq!(profiles.get("nobody").unwrap(), None);
    assert_eq!(profiles.peek("nobody").unwrap(), None);
    profiles.delete("ana").unwrap();
    assert!(!profiles.exists("ana").unwrap());
    assert_eq!(profiles.get("ana").unwrap(), None);
    profiles.delete("ana").unwrap(); // deleting a missing key is fine

    // TTL: gone after it passes; a later set without a TTL makes the entry persistent again.
    let written = Instant::now();
    strings
        .set("short", "brief".into(), Some(Duration::from_millis(300)))
        .unwrap();
    let early = strings.get("short").unwrap();
    if written.elapsed() < Duration::from_millis(250) {
        assert_eq!(early.as_deref(), Some("brief"));
    }
    assert!(
        wait_until(Duration::from_secs(10), || strings
            .get("short")
            .unwrap()
            .is_none()),
        "a 300 ms entry still there after 10 s"
    );
    assert!(!strings.exists("short").unwrap());
    strings
        .set("renewed", "x".into(), Some(Duration::from_secs(60)))
        .unwrap();
    strings.set("renewed", "y".into(), None).unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}renewed"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(pttl, -1, "a set without TTL must clear the earlier TTL");

    // A corrupt value in `v` is a codec error, for get and peek alike; other keys are unaffected.
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}corrupt"))
        .arg("v")
        .arg(b"{\"id\": 1, \"name\": tru".as_slice())
        .query(&mut conn)
        .unwrap();
    assert!(matches!(profiles.get("corrupt"), Err(Error::Codec(_))));
    assert!(matches!(profiles.peek("corrupt"), Err(Error::Codec(_))));
    assert!(profiles.exists("corrupt").unwrap());
    // Valid JSON of the wrong shape is a codec error too.
    strings.set("not-a-profile", "plain".into(), None).unwrap();
    assert!(matches!(
        profiles.get("not-a-profile"),
        Err(Error::Codec(_))
    ));
    // A key of another Redis type is refused by the server, not mistaken for a miss.
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}plain-string"))
        .arg("raw")
        .query(&mut conn)
        .unwrap();
    assert!(matches!(
        strings.get("plain-string"),
        Err(Error::Rejected(_))
    ));
    assert_eq!(
        strings.get("greeting").unwrap().as_deref(),
        Some("grüß dich, {tag}")
    );

    // Unreachable seeds fail fast with a clear error.
    let started = Instant::now();
    let err = RedisCache::<String>::builder("redis://127.0.0.1:1,redis://127.0.0.1:2")
        .cluster(true)
        .build()
        .expect_err("nothing listens on ports 1 and 2");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn len_and_clear_cover_every_master_and_only_the_prefix() {
    init_logs();
    let cluster = RedisCluster::start(MASTERS);
    // Glob characters in the prefix: `SCAN … MATCH` must take it literally. Unescaped, `[*]?` would also
    // match the look-alike prefix below.
    let base = unique_name("len");
    let prefix = format!("{base}[*]?:");
    let lookalike = format!("{base}*x:");
    let cache: RedisCache<u32> = cluster_cache(&cluster, &prefix);
    let other: RedisCache<u32> = cluster_cache(&cluster, &lookalike);
    let mut conn = cluster.connection();

    const KEYS: u32 = 3000;
    const OTHER: u32 = 50;
    thread::scope(|s| {
        for part in 0..3 {
            let cache = cache.clone();
            s.spawn(move || {
                for i in (part..KEYS).step_by(3) {
                    cache.set(&format!("k{i}"), i, None).unwrap();
                }
            });
        }
    });
    for i in 0..OTHER {
        other.set(&format!("o{i}"), i, None).unwrap();
    }
    // A tombstone-like entry (version only, as a state node leaves after a delete): not counted by `len`,
    // removed by `clear`.
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}tombstone"))
        .arg("ver")
        .arg(Version::new(1 << 16, 1).to_hex())
        .query(&mut conn)
        .unwrap();

    // The keys spread over every master.
    let ports = cluster.ports();
    let sizes: Vec<u64> = ports.iter().map(|&p| cluster.dbsize(p)).collect();
    assert!(
        sizes.iter().all(|&n| n > u64::from(KEYS) / 6),
        "keys should spread over all masters: {sizes:?}"
    );
    assert_eq!(
        sizes.iter().sum::<u64>(),
        u64::from(KEYS + OTHER + 1),
        "{sizes:?}"
    );

    assert_eq!(cache.len().unwrap(), KEYS as usize);
    assert_eq!(other.len().unwrap(), OTHER as usize);
    for i in [0, 1, 2, 1499, 2999] {
        assert_eq!(cache.get(&format!("k{i}")).unwrap(), Some(i));
    }

    cache.clear().unwrap();
    assert_eq!(cache.len().unwrap(), 0);
    assert_eq!(cache.get("k7").unwrap(), None);
    let (v, ver) = raw_entry(&mut conn, &format!("{prefix}tombstone"));
    assert_eq!((v, ver), (None, None), "clear removes tombstones too");
    // Only the look-alike prefix's keys are left, on whichever masters they live.
    let left: u64 = ports.iter().map(|&p| cluster.dbsize(p)).sum();
    assert_eq!(left, u64::from(OTHER));
    assert_eq!(other.len().unwrap(), OTHER as usize);
    for i in 0..OTHER {
        assert_eq!(other.get(&format!("o{i}")).unwrap(), Some(i));
    }
    // Clearing an empty prefix is a no-op.
    cache.clear().unwrap();
    assert_eq!(other.len().unwrap(), OTHER as usize);
}

// ---------------------------------------------------------------------------------------------------------
// The state node applying versioned events to a cluster
// ---------------------------------------------------------------------------------------------------------

/// The last write of one key: its version, and the value (`None` for a delete).
type Expected = HashMap<String, (Version, Option<String>)>;

/// The keys of `expected` whose entry in the cluster is not exactly their last value and version (a
/// delete: no value), with what the cluster holds; `Err` while the cluster does not answer.
fn unmet(
    conn: &mut redis::cluster::ClusterConnection,
    ns: &str,
    expected: &Expected,
) -> redis::RedisResult<Vec<String>> {
    let keys: Vec<&str> = expected.keys().map(String::as_str).collect();
    let mut wrong = Vec::new();
    for chunk in keys.chunks(1000) {
        for (key, (value, version)) in chunk.iter().zip(cluster_entries(conn, ns, chunk)?) {
            let (want_version, want_value) = &expected[*key];
            if value != *want_value || version != Some(*want_version) {
                wrong.push(format!(
                    "{key}: want {want_value:?} at {want_version}, the cluster holds {value:?} at {version:?}"
                ));
            }
        }
    }
    wrong.sort();
    Ok(wrong)
}

#[test]
fn state_node_applies_versioned_events_to_a_cluster() {
    init_logs();
    let cluster = RedisCluster::start(MASTERS);
    let broker = Broker::start();
    let ns = unique_name("clustered");
    let redis_key = |key: &str| format!("{DEFAULT_KEY_PREFIX}{ns}:{key}");
    let mut conn = cluster.connection();

    let cache = DistributedCache::<String>::builder()
        .kafka_brokers(broker.bootstrap())
        .redis_url(cluster.urls())
        .redis_cluster(true)
        .namespace(&ns)
        .wait_timeout(WAIT)
        .build()
        .unwrap_or_else(|e| {
            panic!(
                "build the core node: {e}\nbroker log:\n{}",
                broker.log_tail(20)
            )
        });

    // A key of another Redis type where one entry should go: the state node's write of it must fail alone.
    let _: () = redis::cmd("SET")
        .arg(redis_key("wrong-type"))
        .arg("not a hash")
        .query(&mut conn)
        .unwrap();

    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    let mut expected = Expected::new();
    let mut writes = 0u64;
    let set = |expected: &mut Expected, key: &str, value: String| {
        let version = cache
            .set_with_sync(key, value.clone(), None, None)
            .unwrap_or_else(|e| panic!("set_with_sync {key}: {e}"));
        expected.insert(key.to_string(), (version, Some(value)));
    };
    let delete = |expected: &mut Expected, key: &str| {
        let version = cache
            .delete_with_sync(key)
            .unwrap_or_else(|e| panic!("delete_with_sync {key}: {e}"));
        expected.insert(key.to_string(), (version, None));
    };

    // Phase 1, before the state node runs: a backlog it then takes in one or a few large batches, with the
    // wrong-type write among the others of its batch (and of its Redis worker's cluster pipeline).
    for i in 0..300 {
        set(&mut expected, &keys[(i * 7) % 200], format!("a{i}"));
        writes += 1;
        if i == 150 {
            cache
                .set_with_sync("wrong-type", "refused".into(), None, None)
                .unwrap();
            writes += 1;
        }
    }
    for key in keys.iter().step_by(17) {
        delete(&mut expected, key);
        writes += 1;
    }

    let node = cluster_state_node(&broker, &cluster, 2048, Duration::from_millis(300));

    // Once a write made after the backlog is reported, the state node has joined and works through it.
    let joined = cache
        .set_with_sync_and_wait("joined", "yes".into(), None, None)
        .unwrap_or_else(|e| panic!("the state node applied nothing: {e}\n{:?}", node.metrics()));
    assert_eq!(joined, WriteOutcome::Applied, "{:?}", node.metrics());
    writes += 1;

    // Phase 2, live: more sets (re-setting some deleted keys), more deletes, then one write waited for.
    for i in 300..500 {
        set(&mut expected, &keys[(i * 13) % 200], format!("b{i}"));
        writes += 1;
    }
    for key in keys.iter().skip(5).step_by(23) {
        delete(&mut expected, key);
        writes += 1;
    }
    let last = cache
        .set_with_sync_and_wait("last", "final".into(), None, None)
        .unwrap_or_else(|e| panic!("the last write was not applied: {e}\n{:?}", node.metrics()));
    assert_eq!(
        last,
        WriteOutcome::Applied,
        "redis holds {:?}; state node: {:?}",
        raw_entry(&mut conn, &redis_key("last")),
        node.metrics()
    );
    writes += 1;

    let mut wrong = Vec::new();
    let converged = wait_until(WAIT, || {
        wrong =
            unmet(&mut conn, &ns, &expected).unwrap_or_else(|e| panic!("read the cluster: {e}"));
        wrong.is_empty()
    });
    assert!(
        converged,
        "{} of {} keys wrong in redis after {WAIT:?}, e.g. {:#?}\nstate node: {:?}",
        wrong.len(),
        expected.len(),
        &wrong[..wrong.len().min(10)],
        node.metrics()
    );
    // Deleted keys are tombstones: version kept (checked above), no value, and an expiry.
    for (key, (_, value)) in &expected {
        if value.is_none() {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(redis_key(key))
                .query(&mut conn)
                .unwrap();
            assert!(pttl > 0, "tombstone of {key} has no expiry (PTTL {pttl})");
        }
    }

    // The wrong-type write failed alone: counted, the key left as it was, everything else applied.
    let metrics = node.metrics();
    eprintln!("cluster state node after {writes} writes: {metrics:?}");
    assert_eq!(metrics.failed, 1, "{metrics:?}");
    assert_eq!(metrics.malformed, 0, "{metrics:?}");
    assert!(metrics.consumed >= writes, "{metrics:?}");
    // One writer with increasing versions: no write is stale unless a batch was replayed (which consumes
    // records twice). In particular the writes that shared a cluster pipeline with the refused one were
    // applied, not reported stale when sent again one by one.
    assert!(
        metrics.stale_dropped == 0 || metrics.consumed > writes,
        "{metrics:?}"
    );
    let raw: String = redis::cmd("GET")
        .arg(redis_key("wrong-type"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(raw, "not a hash");

    // Read path: with the local tier emptied, get_with_sync reads Redis (values and tombstones) and fills.
    cache.local().clear().unwrap();
    for key in keys.iter().take(40) {
        let (_, value) = &expected[key];
        assert_eq!(&cache.get_with_sync(key, None).unwrap(), value, "{key}");
        if value.is_some() {
            assert_eq!(&cache.get(key).unwrap(), value, "{key} not filled locally");
        }
    }
    // A key written only to Redis (no event ever) is read through too.
    let _: () = redis::cmd("HSET")
        .arg(redis_key("fresh"))
        .arg("v")
        .arg("\"from redis\"")
        .query(&mut conn)
        .unwrap();
    assert_eq!(cache.get("fresh").unwrap(), None);
    assert_eq!(
        cache.get_with_sync("fresh", None).unwrap().as_deref(),
        Some("from redis")
    );
    assert_eq!(cache.get("fresh").unwrap().as_deref(), Some("from redis"));
    // The wrong-type key is refused on the read path too, not taken for a miss.
    assert!(matches!(
        cache.get_with_sync("wrong-type", None),
        Err(Error::Rejected(_))
    ));

    node.shutdown();
}

// ---------------------------------------------------------------------------------------------------------
// A master killed and restarted while the state node drains a backlog
// ---------------------------------------------------------------------------------------------------------

/// Distinct keys of the backlog (spread over every slot range, so over every master); each is written
/// twice, so the backlog holds twice as many events.
const BACKLOG_KEYS: usize = 5000;

#[test]
fn a_master_restarted_mid_drain_loses_nothing() {
    init_logs();
    // Persistent: what a master acknowledged is on disk before it answers, so its restart loses no
    // applied write, and anything the state node did not see acknowledged it retries.
    let cluster = RedisCluster::start_persistent(MASTERS);
    let broker = Broker::start();
    broker.create_topic(TOPIC_SET_DEL, PARTITIONS);
    broker.create_topic(TOPIC_DONE, PARTITIONS);
    let ns = unique_name("restarted");

    // The backlog, produced before the state node starts: every key once, then every key again with a
    // newer version (one clock: versions strictly increase), so the newest is not the only version.
    let clock = HybridClock::new(0x5e7);
    let mut events = Vec::with_capacity(2 * BACKLOG_KEYS);
    let mut newest = Expected::new();
    for round in 0..2 {
        for i in 0..BACKLOG_KEYS {
            let key = format!("key-{i}");
            let value = format!("r{round}-{key}");
            let version = clock.now();
            let json = serde_json::to_vec(&value).expect("encode");
            events.push(WriteEvent::set(&ns, &key, version, json).into_envelope());
            newest.insert(key, (version, Some(value)));
        }
    }
    let total = events.len() as u64;
    let mut unreported: HashSet<(String, Version)> =
        events.iter().map(|e| (e.key.clone(), e.version)).collect();
    produce_events(&broker, TOPIC_SET_DEL, &events)
        .unwrap_or_else(|e| panic!("produce the backlog: {e}\n{}", broker.log_tail(20)));
    drop(events);

    // Small batches: the drain takes many of them, so the kill lands in the middle of it.
    let node = cluster_state_node(&broker, &cluster, 64, Duration::from_millis(2));
    let drained =
        |m: &distcache::StateNodeMetrics| m.applied + m.deduped + m.stale_dropped >= total;

    // A fifth of the way in, SIGKILL one master — the first seed, so a reconnect must also find the
    // cluster through the others — and keep it down until the state node has failed on it twice: a
    // pipeline cut off mid-way, then connections refused.
    assert!(
        wait_until(PATIENCE, || node.metrics().applied >= total / 5),
        "the state node applied too little within {PATIENCE:?}: {:?}\n{}",
        node.metrics(),
        cluster.log_tails(10)
    );
    let victim = cluster.ports()[0];
    let held_before_kill = cluster.dbsize(victim);
    cluster.kill_node(victim);
    let killed_at = node.metrics();
    assert!(
        wait_until(PATIENCE, || {
            let m = node.metrics();
            m.retries >= killed_at.retries + 2 || drained(&m)
        }),
        "the state node neither retried nor finished while a master was down: {:?}",
        node.metrics()
    );
    let at_restart = node.metrics();
    assert!(
        !drained(&at_restart),
        "the drain ended before the state node met the dead master (make the backlog larger): \
         {at_restart:?}"
    );
    let restarted = Instant::now();
    cluster.restart_node(victim);
    let rejoined_in = restarted.elapsed();
    // Its data came back from its append-only file.
    let held_after_restart = cluster.dbsize(victim);
    assert!(
        held_after_restart >= held_before_kill,
        "the restarted master holds {held_after_restart} keys, {held_before_kill} before its kill"
    );

    // Every key ends at exactly its newest value and version.
    let mut conn = cluster.connection();
    let mut last = Ok(Vec::new());
    let converged = wait_until(PATIENCE, || {
        last = unmet(&mut conn, &ns, &newest);
        if last.is_err() {
            conn = cluster.connection();
        }
        matches!(&last, Ok(wrong) if wrong.is_empty())
    });
    assert!(
        converged,
        "the cluster did not converge within {PATIENCE:?}: {}\nstate node: {:?}\n{}",
        match &last {
            Ok(wrong) => format!(
                "{} of {} keys wrong, e.g. {:#?}",
                wrong.len(),
                newest.len(),
                &wrong[..wrong.len().min(10)]
            ),
            Err(e) => format!("unreadable: {e}"),
        },
        node.metrics(),
        cluster.log_tails(10)
    );
    // The keys spread over every master, the restarted one included.
    let sizes: Vec<u64> = cluster.ports().iter().map(|&p| cluster.dbsize(p)).collect();
    assert!(
        sizes.iter().all(|&n| n > BACKLOG_KEYS as u64 / 6),
        "keys should spread over all masters: {sizes:?}"
    );
    assert_eq!(sizes.iter().sum::<u64>(), BACKLOG_KEYS as u64, "{sizes:?}");

    // Every write got its done event; the newest of each key as applied (a set), never as stale. Read
    // from the beginning once the drain is over, not while tailing (tansu can hide records from a
    // tailing consumer).
    assert!(
        wait_until(PATIENCE, || drained(&node.metrics())),
        "not every write is counted: {:?}",
        node.metrics()
    );
    let mut done = DoneWatcher::new(&broker, PATIENCE);
    let mut stale_newest = Vec::new();
    let all_reported = done.scan_until(PATIENCE, |e| {
        if e.ns == ns {
            unreported.remove(&(e.key.clone(), e.version));
            if newest.get(&e.key).is_some_and(|(v, _)| *v == e.version) && e.op != Op::Set {
                stale_newest.push(format!("{} at {}: {:?}", e.key, e.version, e.op));
            }
        }
        unreported.is_empty()
    });
    assert!(
        all_reported,
        "{} of {total} writes got no done event within {PATIENCE:?}, e.g. {:?}\nstate node: {:?}",
        unreported.len(),
        unreported.iter().take(5).collect::<Vec<_>>(),
        node.metrics()
    );
    assert!(
        stale_newest.is_empty(),
        "{} newest writes reported not applied, e.g. {:?}",
        stale_newest.len(),
        &stale_newest[..stale_newest.len().min(5)]
    );

    // The state node retried through the outage and gave up on nothing.
    let m = node.metrics();
    eprintln!(
        "cluster restart: {total} writes, master 127.0.0.1:{victim} down at {} applied, back in \
         {rejoined_in:?}; state node: {m:?}",
        killed_at.applied
    );
    assert!(m.retries > killed_at.retries, "{m:?}");
    assert_eq!(m.failed, 0, "{m:?}");
    assert_eq!(m.malformed, 0, "{m:?}");
    assert_eq!(m.future_refused, 0, "{m:?}");
    assert_eq!(m.worker_panics, 0, "{m:?}");
    assert_eq!(node.failure(), None);
    assert!(m.consumed >= total, "{m:?}");
    // One writer with increasing versions: nothing is stale unless records were consumed twice.
    assert!(m.stale_dropped == 0 || m.consumed > total, "{m:?}");

    node.shutdown();
}

/// A state node on `cluster` with two Redis workers and the given batching; a failed start panics
/// with the services' logs.
fn cluster_state_node(
    broker: &Broker,
    cluster: &RedisCluster,
    max_batch: usize,
    max_wait: Duration,
) -> StateNode {
    StateNode::builder()
        .kafka_brokers(broker.bootstrap())
        .redis_url(cluster.urls())
        .redis_cluster(true)
        .redis_workers(2)
        .max_batch(max_batch)
        .max_wait(max_wait)
        .start()
        .unwrap_or_else(|e| {
            panic!(
                "start the state node: {e}\nbroker log:\n{}\n{}",
                broker.log_tail(20),
                cluster.log_tails(10)
            )
        })
}
