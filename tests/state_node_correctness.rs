//! The state node against hostile data and broken clocks, with real redis-server and broker
//! processes: a corrupt or foreign stored version is a counted skip of that key (never a stall of
//! the whole node), a write stamped far in the future is refused instead of blocking its key,
//! and plain writes obey the same "newest version wins" order as synced ones, also when the
//! state node has forgotten them (Redis remembers their versions).

mod support;

use std::time::{Duration, Instant};

use distcache::event::{now_micros, Event, Op, WriteEvent, TOPIC_SET_DEL};
use distcache::{StateNode, Version, WriteOutcome};

use support::{
    entry_key, produce_events, state_node_command, unique_name, Broker, Deployment, DoneWatcher,
};

/// The cap of every wait; waits end as soon as their condition holds.
const WAIT: Duration = Duration::from_secs(60);

fn hget(conn: &mut redis::Connection, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(conn)
        .expect("HGET")
}

#[test]
fn foreign_stored_version_is_skipped_not_retried() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("badver");
    let cache = dep.cache::<String>(&ns);
    let mut raw = dep.redis_connection();

    // A hash under our prefix whose version is not ours: a hand edit, another tool.
    let foreign = entry_key(&ns, "corrupt");
    redis::cmd("HSET")
        .arg(&foreign)
        .arg("ver")
        .arg("not-a-version")
        .arg("v")
        .arg("\"theirs\"")
        .query::<()>(&mut raw)
        .unwrap();

    let started = Instant::now();
    let outcome = cache
        .set_with_sync_and_wait("corrupt", "mine".into(), None, None)
        .expect("a write over a corrupt version is answered, not left to time out");
    assert_eq!(outcome, WriteOutcome::Superseded);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered only after {:?}",
        started.elapsed()
    );

    // Writes of other keys keep flowing, in the same partitions and later ones.
    for i in 0..8 {
        let key = format!("ok{i}");
        let outcome = cache
            .set_with_sync_and_wait(&key, format!("v{i}"), None, None)
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Applied, "{key}");
        assert_eq!(
            hget(&mut raw, &entry_key(&ns, &key), "v").as_deref(),
            Some(&*format!("\"v{i}\""))
        );
    }
    // A plain write of the corrupt key is skipped the same way.
    let outcome = cache.set_and_wait("corrupt", "plain".into(), None).unwrap();
    assert_eq!(outcome, WriteOutcome::Superseded);
    // So is a key whose plain-write version is corrupt (its `ver` is fine).
    let half = entry_key(&ns, "half");
    redis::cmd("HSET")
        .arg(&half)
        .arg("ver")
        .arg(Version::new(1, 1).to_hex())
        .arg("pver")
        .arg("zz")
        .query::<()>(&mut raw)
        .unwrap();
    let outcome = cache
        .delete_with_sync_and_wait("half")
        .expect("answered, not left to time out");
    assert_eq!(outcome, WriteOutcome::Superseded);
    assert_eq!(hget(&mut raw, &half, "pver").as_deref(), Some("zz"));

    let m = node.metrics();
    assert_eq!(m.bad_versions, 3, "{m:?}");
    assert_eq!(m.failed, 3, "{m:?}");
    assert_eq!(
        hget(&mut raw, &foreign, "ver").as_deref(),
        Some("not-a-version"),
        "the foreign hash is left alone"
    );
    assert_eq!(hget(&mut raw, &foreign, "v").as_deref(), Some("\"theirs\""));
}

#[test]
fn wrong_type_key_is_skipped_for_plain_writes_too() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("wrongtype");
    let cache = dep.cache::<String>(&ns);
    let mut raw = dep.redis_connection();
    let foreign = entry_key(&ns, "list");
    redis::cmd("RPUSH")
        .arg(&foreign)
        .arg("a")
        .query::<()>(&mut raw)
        .unwrap();

    let outcome = cache.set_and_wait("list", "plain".into(), None).unwrap();
    assert_eq!(outcome, WriteOutcome::Superseded);
    let outcome = cache
        .delete_with_sync_and_wait("list")
        .expect("a refused delete is answered");
    assert_eq!(outcome, WriteOutcome::Superseded);
    let outcome = cache.set_and_wait("fine", "plain".into(), None).unwrap();
    assert_eq!(outcome, WriteOutcome::Applied);

    let m = node.metrics();
    assert_eq!((m.failed, m.bad_versions), (2, 0), "{m:?}");
    let len: u64 = redis::cmd("LLEN").arg(&foreign).query(&mut raw).unwrap();
    assert_eq!(len, 1, "the foreign list is untouched");
}

#[test]
fn write_stamped_far_ahead_is_refused() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("future");
    let cache = dep.cache::<String>(&ns);
    let mut raw = dep.redis_connection();
    let mut done = DoneWatcher::new(&dep.broker, WAIT);

    // A node with a broken clock, or a hand-made message: three days ahead.
    let ahead = Duration::from_secs(3 * 24 * 3600).as_millis() as u64;
    let future = Version::new(((now_micros() / 1000) + ahead) << 16, 0xF0F0);
    produce(
        &dep.broker,
        &[event(&ns, "k", future, Some("\"future\""), true)],
    );
    let verdict = done.wait_for("for the future write", |e| e.version == future);
    assert_eq!(verdict.op, Op::Stale, "a far-future write is refused");
    assert_eq!(
        hget(&mut raw, &entry_key(&ns, "k"), "v"),
        None,
        "nothing reached Redis"
    );

    let outcome = cache
        .set_with_sync_and_wait("k", "now".into(), None, None)
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Applied, "the key is not blocked");
    assert_eq!(
        hget(&mut raw, &entry_key(&ns, "k"), "v").as_deref(),
        Some("\"now\"")
    );
    let m = node.metrics();
    assert_eq!(m.future_refused, 1, "{m:?}");
}

/// A refused write's `stale` verdict carries the refused, far-ahead version: core nodes must not
/// follow it with their clocks, or every write they stamp afterwards would be refused as well
/// (one broken clock would block every key, not one write).
#[test]
fn a_refused_version_does_not_move_core_node_clocks() {
    let dep = Deployment::start();
    let node = dep.state_node_with(|node| node.max_clock_skew(Duration::from_secs(5)));
    let ns = unique_name("refused-clock");
    let cache = dep.cache::<String>(&ns);
    let mut done = DoneWatcher::new(&dep.broker, WAIT);

    // Ten minutes ahead: within what a core node follows (1 h), beyond this state node's 5 s.
    let ahead = Duration::from_secs(600).as_millis() as u64;
    let future = Version::new(((now_micros() / 1000) + ahead) << 16, 0xF0F0);
    produce(
        &dep.broker,
        &[event(&ns, "fast", future, Some("\"fast\""), true)],
    );
    assert_eq!(
        done.wait_for("for the fast write", |e| e.version == future)
            .op,
        Op::Stale
    );
    // Let the core node's listener take the verdict before it writes.
    let m = || cache.metrics().events;
    let deadline = Instant::now() + WAIT;
    while m() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(m() >= 1, "the core node never saw the verdict");

    let outcome = cache
        .set_with_sync_and_wait("other", "now".into(), None, None)
        .unwrap();
    assert_eq!(
        outcome,
        WriteOutcome::Applied,
        "a correct write after the refusal is applied, not refused too: {:?}",
        node.metrics()
    );
    assert_eq!(node.metrics().future_refused, 1);
}

/// Two writes of one key in one batch: the state node applies only the newer. When that one fails
/// (here: the key holds a foreign list), the older one must still get its own verdict, or its
/// writer's `*_and_wait` would wait out its timeout.
#[test]
fn a_deduplicated_write_is_answered_when_the_kept_one_fails() {
    let dep = Deployment::start().with_topics(8);
    let broker = &dep.broker;
    let ns = unique_name("dedup");
    let mut raw = dep.redis_connection();
    redis::cmd("RPUSH")
        .arg(entry_key(&ns, "list"))
        .arg("a")
        .query::<()>(&mut raw)
        .unwrap();
    let mut done = DoneWatcher::new(broker, WAIT);
    let base = (now_micros() / 1000) << 16;
    let (older, newer) = (Version::new(base, 0xAB), Version::new(base + 1, 0xAB));
    // Both on the topic before a state node runs: they arrive in its first batch.
    produce(
        broker,
        &[
            event(&ns, "list", older, Some("\"1\""), true),
            event(&ns, "list", newer, Some("\"2\""), true),
        ],
    );
    let node = dep.state_node_with(|b| b.group(unique_name("group")));
    for version in [newer, older] {
        let verdict = done.wait_for("for each of the two writes", |e| e.version == version);
        assert_eq!(verdict.op, Op::Stale, "{version}: {:?}", node.metrics());
    }
    let m = node.metrics();
    assert_eq!((m.deduped, m.failed), (1, 1), "{m:?}");
}

#[test]
fn plain_writes_are_applied_in_version_order() {
    let dep = Deployment::start();
    let broker = &dep.broker;
    // Remembers one key: the fast path forgets, so only Redis can order the writes.
    let node = dep.state_node_with(|b| b.group(unique_name("group")).version_cache(1));
    let mut raw = dep.redis_connection();
    let mut done = DoneWatcher::new(broker, WAIT);
    let ns = unique_name("plain");
    let base = (now_micros() / 1000) << 16;
    let v = |n: u64| Version::new(base + n, 0xAB);

    // Each write in a batch of its own: wait for its verdict before the next.
    let mut step = |e: Event| {
        let version = e.version;
        produce(broker, &[e]);
        done.wait_for("for a plain write", |d| d.version == version)
            .op
    };
    assert_eq!(
        step(event(&ns, "k", v(20), Some("\"new\""), false)),
        Op::Set
    );
    assert_eq!(
        step(event(&ns, "evict", v(21), Some("\"x\""), false)),
        Op::Set
    );
    assert_eq!(
        step(event(&ns, "k", v(10), Some("\"old\""), false)),
        Op::Stale,
        "an older plain set after a newer one is stale"
    );
    assert_eq!(step(event(&ns, "d", v(40), None, false)), Op::Delete);
    assert_eq!(
        step(event(&ns, "evict", v(41), Some("\"y\""), false)),
        Op::Set
    );
    assert_eq!(
        step(event(&ns, "d", v(30), Some("\"resurrected\""), false)),
        Op::Stale,
        "an older plain set after a newer plain delete is stale"
    );
    assert_eq!(
        step(event(&ns, "d", v(35), Some("\"synced\""), true)),
        Op::Stale,
        "an older synced set after a newer plain delete is stale"
    );
    assert_eq!(
        step(event(&ns, "d", v(50), Some("\"later\""), true)),
        Op::Set
    );

    // Redis remembers the plain versions, without values.
    let k = entry_key(&ns, "k");
    assert_eq!(hget(&mut raw, &k, "pver"), Some(v(20).to_hex()));
    assert_eq!(hget(&mut raw, &k, "v"), None);
    let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut raw).unwrap();
    assert!(
        ttl > 0,
        "a version-only hash expires like a tombstone: {ttl}"
    );
    let d = entry_key(&ns, "d");
    assert_eq!(hget(&mut raw, &d, "v").as_deref(), Some("\"later\""));
    assert_eq!(hget(&mut raw, &d, "ver"), Some(v(50).to_hex()));
    assert_eq!(
        hget(&mut raw, &d, "pver"),
        None,
        "a newer synced write replaces it"
    );
    let m = node.metrics();
    assert_eq!(m.stale_dropped, 3, "{m:?}");
    node.shutdown();
}

fn event(ns: &str, key: &str, version: Version, value: Option<&str>, sync: bool) -> Event {
    let write = match value {
        Some(v) => WriteEvent::set(ns, key, version, v.as_bytes().to_vec()),
        None => WriteEvent::delete(ns, key, version),
    };
    if sync { write } else { write.plain() }.into_envelope()
}

fn produce(broker: &Broker, events: &[Event]) {
    produce_events(broker, TOPIC_SET_DEL, events).expect("hand-made events delivered");
}

#[test]
fn max_clock_skew_is_validated_in_the_builder_and_the_binary() {
    let err = StateNode::builder()
        .kafka_brokers("127.0.0.1:1")
        .redis_url("redis://127.0.0.1:1/")
        .max_clock_skew(Duration::ZERO)
        .start()
        .expect_err("a zero skew refuses every write");
    assert!(
        matches!(&err, distcache::Error::Config(m) if m.contains("max_clock_skew")),
        "{err:?}"
    );
    let out = state_node_command()
        .args([
            "--brokers",
            "127.0.0.1:1",
            "--redis",
            "redis://127.0.0.1:1/",
        ])
        .env("DISTCACHE_MAX_CLOCK_SKEW_MS", "0")
        .output()
        .expect("run the state-node binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_clock_skew"), "{stderr}");
}
