//! The core node keeps the README's guarantees under hostile data and unlucky timing: namespaces
//! never share Redis keys, a read never returns something older than what the node knows,
//! `get_or_load` loses to writes made while it loads, the writer sees its own correction, and a
//! second process using our node id is detected. Real redis-server and a real broker.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use distcache::event::{Event, WriteEvent, TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{
    redis_entry_key, redis_namespace_prefix, Cache, DistributedCache, Error, HybridClock,
    RedisCache, Version, WriteOutcome, DEFAULT_KEY_PREFIX,
};
use support::{
    entry_json, unique_name, wait_until, wall_millis, Broker, Deployment, RawRecord, RedisServer,
};

const WAIT: Duration = Duration::from_secs(30);

/// A version `offset_ms` away from now (negative: in the past), from another node.
fn version_at(offset_ms: i64, node: u64) -> Version {
    let ms = wall_millis().saturating_add_signed(offset_ms);
    Version::new(ms << 16, node)
}

fn set_event(ns: &str, key: &str, version: Version, value: &str) -> Event {
    WriteEvent::set(ns, key, version, serde_json::to_vec(value).expect("encode")).into_envelope()
}

/// Produces hand-made events with a client independent of ours (as another process would).
fn produce(broker: &Broker, topic: &str, events: &[Event]) {
    let records: Vec<RawRecord> = events
        .iter()
        .map(|e| RawRecord::new(e.message_key(), e.encode()))
        .collect();
    broker.produce_raw(topic, &records);
}

/// Writes an entry into Redis as a state node would have: JSON value and version.
fn store_in_redis(
    conn: &mut redis::Connection,
    ns: &str,
    key: &str,
    value: &str,
    version: Version,
) {
    redis::cmd("HSET")
        .arg(redis_entry_key(DEFAULT_KEY_PREFIX, ns, key))
        .arg("v")
        .arg(serde_json::to_vec(value).expect("encode"))
        .arg("ver")
        .arg(version.to_hex())
        .query::<()>(conn)
        .expect("HSET");
}

/// Issue 8, item 3: namespace `ns` with key `a:b` and namespace `ns:a` with key `b` are two
/// entries, and `len`/`clear` of one namespace's prefix never touch the other.
#[test]
fn namespaces_with_a_colon_do_not_share_redis_keys() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("ns");
    let ns_a = format!("{ns}:a");
    let first = dep.cache::<String>(&ns);
    let second = dep.cache::<String>(&ns_a);
    let applied = first
        .set_with_sync_and_wait("a:b", "of ns".into(), None, None)
        .unwrap();
    assert_eq!(applied, WriteOutcome::Applied);
    let applied = second
        .set_with_sync_and_wait("b", "of ns:a".into(), None, None)
        .unwrap();
    assert_eq!(applied, WriteOutcome::Applied);

    assert_ne!(
        redis_entry_key(DEFAULT_KEY_PREFIX, &ns, "a:b"),
        redis_entry_key(DEFAULT_KEY_PREFIX, &ns_a, "b")
    );
    let mut conn = dep.redis_connection();
    assert_eq!(entry_json(&mut conn, &ns, "a:b").as_deref(), Some("of ns"));
    assert_eq!(
        entry_json(&mut conn, &ns_a, "b").as_deref(),
        Some("of ns:a")
    );
    first.clear().unwrap();
    second.clear().unwrap();
    assert_eq!(
        first.get_with_sync("a:b", None).unwrap().as_deref(),
        Some("of ns")
    );
    assert_eq!(
        second.get_with_sync("b", None).unwrap().as_deref(),
        Some("of ns:a")
    );

    let of = |ns: &str| -> RedisCache<String> {
        RedisCache::builder(dep.redis.url())
            .key_prefix(redis_namespace_prefix(DEFAULT_KEY_PREFIX, ns))
            .build()
            .expect("redis cache")
    };
    let (in_ns, in_ns_a) = (of(&ns), of(&ns_a));
    assert_eq!(
        in_ns.len().unwrap(),
        1,
        "len of {ns:?} counts only its own entries"
    );
    assert_eq!(in_ns_a.len().unwrap(), 1);
    in_ns.clear().unwrap();
    assert_eq!(in_ns.len().unwrap(), 0);
    assert_eq!(
        in_ns_a.len().unwrap(),
        1,
        "clear of {ns:?} left {ns_a:?} alone"
    );
    assert_eq!(in_ns_a.get("b").unwrap().as_deref(), Some("of ns:a"));
}

/// Issue 8, item 2: with no state node running, Redis keeps an older value while this node knows
/// newer state (its delete_with_sync, its plain delete, its set too heavy for the local tier):
/// `get_with_sync` must not return Redis' older value, and `get_or_load` must not take it for a hit.
#[test]
fn reads_never_return_something_older_than_the_local_state() {
    let _ = env_logger::builder().is_test(true).try_init();
    let redis = RedisServer::start();
    let broker = Broker::start();
    let ns = unique_name("ryw");
    let cache = DistributedCache::<String>::builder()
        .kafka_brokers(broker.bootstrap())
        .redis_url(redis.url())
        .namespace(&ns)
        .local_capacity(4096)
        .local_weigher(|_, v: &String| v.len() as u64)
        .build()
        .expect("core node");
    let mut conn = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("redis connection");
    let old = version_at(-1000, 0x01d);
    for key in ["deleted-sync", "deleted", "heavy", "loaded"] {
        store_in_redis(&mut conn, &ns, key, "old", old);
    }

    cache.delete_with_sync("deleted-sync").unwrap();
    assert_eq!(cache.get_with_sync("deleted-sync", None).unwrap(), None);
    cache.delete("deleted").unwrap();
    assert_eq!(cache.get_with_sync("deleted", None).unwrap(), None);
    let heavy = "x".repeat(64 * 1024);
    cache.set_with_sync("heavy", heavy, None, None).unwrap();
    assert_eq!(
        cache.get_with_sync("heavy", None).unwrap(),
        None,
        "the value is newer than Redis' but too heavy to keep locally: a miss, not Redis' old value"
    );
    assert_eq!(
        entry_json(&mut conn, &ns, "heavy").as_deref(),
        Some("old"),
        "no state node ran"
    );

    cache.delete_with_sync("loaded").unwrap();
    let mut calls = 0;
    let got = cache
        .get_or_load("loaded", None, None, |_| {
            calls += 1;
            Ok(Some("from the loader".to_string()))
        })
        .unwrap();
    assert_eq!(got.as_deref(), Some("from the loader"));
    assert_eq!(calls, 1, "Redis' older value is not a hit");
    assert!(
        cache.metrics().local_newer_reads >= 4,
        "{:?}",
        cache.metrics()
    );
}

/// Issue 8, item 7: a value read from the database before another node's newer write must not
/// overwrite that write: `get_or_load` stamps its version before calling the loader.
#[test]
fn get_or_load_loses_to_a_write_made_while_loading() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("load");
    let cache = dep.cache::<String>(&ns);
    let mut conn = dep.redis_connection();
    let loaded = cache
        .get_or_load("k", None, None, |key| {
            // The database is read here ("before"); then another node writes the key.
            thread::sleep(Duration::from_millis(20));
            let newer = HybridClock::new(0x07e5_7000_0001).now();
            produce(
                &dep.broker,
                TOPIC_SET_DEL,
                &[set_event(&ns, key, newer, "newer")],
            );
            let landed = wait_until(WAIT, || cache.get(key).unwrap().as_deref() == Some("newer"));
            assert!(landed, "the other node's write reached this node");
            Ok(Some("read before".to_string()))
        })
        .unwrap();
    assert_eq!(loaded.as_deref(), Some("read before"));
    // Wait for the state node's verdict on the loaded value's write.
    assert!(
        wait_until(WAIT, || cache.metrics().events >= 2),
        "{:?}",
        cache.metrics()
    );
    assert_eq!(entry_json(&mut conn, &ns, "k").as_deref(), Some("newer"));
    assert_eq!(cache.get("k").unwrap().as_deref(), Some("newer"));
    assert_eq!(
        cache.get_with_sync("k", None).unwrap().as_deref(),
        Some("newer")
    );
}

/// Issue 8, item 8: the `stale` done event of the writer's own losing write arrives before the
/// writer applied the write locally; the losing value must still not stay in its cache.
#[test]
fn a_correction_arriving_before_the_local_apply_still_wins() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("own-stale");
    let cache = dep.cache::<String>(&ns);
    let mut conn = dep.redis_connection();
    // A newer write this node never heard of is already in Redis.
    store_in_redis(&mut conn, &ns, "k", "winner", version_at(60_000, 0x0077));

    let watcher = cache.clone();
    cache.set_after_produce_hook(Some(Arc::new(move |_, _| {
        // Hold the local apply back until the write's done event was handled.
        wait_until(WAIT, || watcher.metrics().events >= 1);
    })));
    let written = cache.set_with_sync("k", "loser".into(), None, None);
    cache.set_after_produce_hook(None);
    written.unwrap();
    assert_eq!(
        cache.metrics().events,
        1,
        "the stale verdict arrived before the local apply"
    );
    assert_eq!(
        cache.get("k").unwrap(),
        None,
        "the losing value is not served"
    );
    assert_eq!(
        cache.get_with_sync("k", None).unwrap().as_deref(),
        Some("winner")
    );
}

/// Issue 8, item 6: a done event carrying this node's id at a version this process never issued
/// means another process uses the id: counted, and writes with it fail with `Error::Config`.
#[test]
fn another_process_with_our_node_id_is_detected() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("dup");
    let node = rand::random::<u64>() | 1;
    let cache = DistributedCache::<String>::builder()
        .kafka_brokers(dep.broker.bootstrap())
        .redis_url(dep.redis.url())
        .namespace(&ns)
        .node_id(node)
        .build()
        .expect("core node");
    let mine = cache.set_with_sync("k", "mine".into(), None, None).unwrap();
    assert!(wait_until(WAIT, || cache.metrics().events >= 1));
    assert_eq!(
        cache.metrics().duplicate_node_ids,
        0,
        "our own done event is ours"
    );

    // The other process stamps with our id; its done event reaches us.
    let foreign = Version::new(mine.hlc + 3, node);
    produce(
        &dep.broker,
        TOPIC_DONE,
        &[set_event(&ns, "k2", foreign, "theirs")],
    );
    assert!(
        wait_until(WAIT, || cache.metrics().duplicate_node_ids == 1),
        "{:?}",
        cache.metrics()
    );
    assert!(matches!(
        cache.set("k", "again".into(), None),
        Err(Error::Config(_))
    ));
    assert!(matches!(cache.delete_with_sync("k"), Err(Error::Config(_))));
    // Versions issued by one process never repeat, whatever the namespace or node id.
    let other = DistributedCache::<String>::builder()
        .kafka_brokers(dep.broker.bootstrap())
        .redis_url(dep.redis.url())
        .namespace(unique_name("dup-other"))
        .build()
        .expect("core node");
    let v = other.set_with_sync("k", "x".into(), None, None).unwrap();
    assert!(v.hlc > mine.hlc);
}
