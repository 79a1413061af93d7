//! Bad input, tried on purpose, against real redis-server and broker processes: every case ends in a
//! clear error or a counted skip, never a panic or a hang, and the cache keeps working afterwards.
//!
//! Covered elsewhere (not repeated here): malformed and unknown-format records on the set-del topic
//! (`pipeline_faults::malformed_records_are_counted_skipped_and_committed`), a corrupt value or a
//! foreign key in Redis read by a `RedisCache` (`redis_cache::corrupt_stored_value_is_a_codec_error_naming_the_key`,
//! `foreign_keys_under_the_prefix_are_handled`), a foreign `ver` in Redis (`state_node_correctness`),
//! unreachable servers (`config_errors`), wrong Redis credentials (`redis_cache`, `security`), and
//! random or mutated bytes through every decoder (`decoder_fuzz`).

mod support;

use std::time::{Duration, Instant};

use distcache::event::{Event, WriteEvent, FORMAT, TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{
    Cache, DistributedCache, Error, KafkaConfig, Version, WriteOutcome, DEFAULT_KEY_PREFIX,
};
use support::{
    entry_field, produce_events, unique_name, wait_until, wall_millis, BrokerKind, Deployment,
    RawRecord,
};

/// Generous on a loaded machine, far below "hangs".
const QUICK: Duration = Duration::from_secs(15);
/// Longest wait for the pipeline to deliver something.
const PATIENCE: Duration = Duration::from_secs(40);

/// A version a little ahead of every version a core node stamped so far (so a hand-made event wins),
/// well within the state node's clock-skew bound.
fn fresh_version(node: u64) -> Version {
    Version::new((wall_millis() + 1_000) << 16, node)
}

fn set_event(ns: &str, key: &str, version: Version, value: &[u8]) -> Event {
    WriteEvent::set(ns, key, version, value.to_vec()).into_envelope()
}

fn redis_pttl(dep: &Deployment, ns: &str, key: &str) -> i64 {
    let mut conn = dep.redis_connection();
    redis::cmd("PTTL")
        .arg(distcache::redis_entry_key(DEFAULT_KEY_PREFIX, ns, key))
        .query(&mut conn)
        .expect("PTTL")
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

/// Records on the done topic that are not valid events: each is counted in `malformed` by the
/// listener and skipped; the local cache keeps serving and following real events.
#[test]
fn malformed_done_events_are_counted_and_skipped() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("bad-done");
    let cache = dep.cache::<String>(&ns);
    cache
        .set_with_sync_and_wait("k", "before".into(), None, None)
        .expect("first write");

    let good = set_event(&ns, "k", fresh_version(7), b"\"EVIL\"").encode();
    let mut unknown_format = good.clone();
    unknown_format[2] = FORMAT + 1;
    let mut not_utf8_key = set_event(&ns, "kk", fresh_version(7), b"\"EVIL\"").encode();
    let at = not_utf8_key.len() - (4 + 6) - 2; // the key's two bytes, before the value
    not_utf8_key[at..at + 2].copy_from_slice(b"\xff\xfe");
    let mut not_utf8_ns = good.clone();
    not_utf8_ns[53 + 2] = 0xff; // first byte of the namespace
    let key = distcache::event::message_key(&ns, "k");
    let bad: Vec<Option<Vec<u8>>> = vec![
        Some(b"\xff\x00 not an envelope".to_vec()),
        Some(Vec::new()),
        None,
        Some(unknown_format),
        Some(good[..good.len() - 1].to_vec()),
        Some([good.clone(), vec![0]].concat()),
        Some(not_utf8_key),
        Some(not_utf8_ns),
    ];
    let records: Vec<RawRecord> = bad
        .into_iter()
        .map(|value| RawRecord {
            key: Some(key.clone()),
            value,
            ..RawRecord::default()
        })
        .collect();
    let n = records.len() as u64;
    dep.broker.produce_raw(TOPIC_DONE, &records);

    assert!(
        wait_until(PATIENCE, || cache.metrics().malformed >= n),
        "malformed stayed below {n}: {:?}",
        cache.metrics()
    );
    assert_eq!(cache.get("k").unwrap().as_deref(), Some("before"));
    // Still following: the next real write reaches Redis and this node.
    let outcome = cache
        .set_with_sync_and_wait("k", "after".into(), None, None)
        .expect("write after the bad records");
    assert_eq!(outcome, WriteOutcome::Applied);
    assert_eq!(cache.get("k").unwrap().as_deref(), Some("after"));
    let m = cache.metrics();
    assert_eq!(m.malformed, n, "{m:?}");
    assert_eq!((m.undecodable, m.resets), (0, 0), "{m:?}");
}

/// A valid envelope whose value does not decode as the namespace's type (garbage, or a JSON string
/// holding bytes that are not UTF-8): the state node stores the bytes (it never decodes values),
/// listeners count `undecodable` and drop their copy, `get_with_sync` is `Error::Codec` naming the
/// key, and the next good write repairs the entry.
#[test]
fn undecodable_values_are_a_counted_drop_and_a_codec_error() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("undecodable");
    let cache = dep.cache::<String>(&ns);

    for (i, value) in [
        &b"\xff not json"[..],
        &b"\"\xff\xfe\""[..],
        &b"{\"a\":1}"[..],
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("k{i}");
        cache
            .set_with_sync_and_wait(&key, "good".into(), None, None)
            .expect("good write");
        let before = cache.metrics().undecodable;
        produce_events(
            &dep.broker,
            TOPIC_SET_DEL,
            &[set_event(&ns, &key, fresh_version(9), value)],
        )
        .expect("produce a hand-made event");
        assert!(
            wait_until(PATIENCE, || cache.metrics().undecodable > before),
            "{key}: undecodable never counted: {:?}",
            cache.metrics()
        );
        assert_eq!(cache.get(&key).unwrap(), None, "{key}: local copy dropped");
        assert_eq!(
            entry_field(&mut dep.redis_connection(), &ns, &key, "v").as_deref(),
            Some(value),
            "{key}: the state node stores the bytes as they came"
        );
        match cache.get_with_sync(&key, None) {
            Err(err @ Error::Codec(_)) => {
                assert!(err.to_string().contains(&key), "{err}");
            }
            other => panic!("{key}: get_with_sync of an undecodable value: {other:?}"),
        }
        let outcome = cache
            .set_with_sync_and_wait(&key, "repaired".into(), None, None)
            .expect("repairing write");
        assert_eq!(outcome, WriteOutcome::Applied, "{key}");
        cache.local().clear().unwrap();
        assert_eq!(
            cache.get_with_sync(&key, None).unwrap().as_deref(),
            Some("repaired")
        );
    }
    let m = node.metrics();
    assert_eq!((m.malformed, m.failed), (0, 0), "{m:?}");
}

/// A stored `ver` that is not ours (not UTF-8, or not 32 hex digits): `get_with_sync` is an
/// `Error::Codec` naming the key, not a panic and not a wrong value.
#[test]
fn a_foreign_stored_version_is_a_codec_error_on_read() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("foreign-ver");
    let cache = dep.cache::<String>(&ns);
    let mut conn = dep.redis_connection();
    for (key, ver) in [
        ("binary", &b"\xff\xfe\xfd"[..]),
        ("signed", &b"+0000000000000010000000000000001"[..]),
        ("short", &b"abc"[..]),
    ] {
        redis::cmd("HSET")
            .arg(distcache::redis_entry_key(DEFAULT_KEY_PREFIX, &ns, key))
            .arg("v")
            .arg("\"x\"")
            .arg("ver")
            .arg(ver)
            .query::<()>(&mut conn)
            .expect("HSET");
        match cache.get_with_sync(key, None) {
            Err(err @ Error::Codec(_)) => assert!(err.to_string().contains(key), "{err}"),
            other => panic!("{key}: {other:?}"),
        }
    }
}

/// The empty key is a key like any other, in every tier.
#[test]
fn the_empty_key_round_trips() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("empty-key");
    let cache = dep.cache::<String>(&ns);
    let outcome = cache
        .set_with_sync_and_wait("", "empty".into(), None, None)
        .expect("set the empty key");
    assert_eq!(outcome, WriteOutcome::Applied);
    assert_eq!(
        entry_field(&mut dep.redis_connection(), &ns, "", "v").as_deref(),
        Some(&b"\"empty\""[..])
    );
    cache.local().clear().unwrap();
    assert_eq!(
        cache.get_with_sync("", None).unwrap().as_deref(),
        Some("empty")
    );
    assert_eq!(
        cache.delete_with_sync_and_wait("").expect("delete"),
        WriteOutcome::Applied
    );
    assert_eq!(cache.get_with_sync("", None).unwrap(), None);
}

/// A 1 MiB key makes an event larger than the broker takes: the write is `Error::Rejected` at
/// once and changes nothing; reads of it are plain misses. A large key that fits works end to end.
#[test]
fn a_huge_key_is_refused_at_the_write() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("huge-key");
    let cache = dep.cache::<String>(&ns);
    let huge = "k".repeat(1 << 20);

    for sync in [false, true] {
        let (written, took) = timed(|| {
            if sync {
                cache.set_with_sync(&huge, "v".into(), None, None)
            } else {
                cache.set_versioned(&huge, "v".into(), None)
            }
        });
        assert!(
            matches!(written, Err(Error::Rejected(_))),
            "sync={sync}: {written:?}"
        );
        assert!(took < QUICK, "took {took:?}");
        assert_eq!(cache.get(&huge).unwrap(), None, "nothing changed locally");
    }
    assert!(matches!(
        cache.delete_with_sync(&huge),
        Err(Error::Rejected(_))
    ));
    assert_eq!(cache.get_with_sync(&huge, None).unwrap(), None);
    assert_eq!(cache.metrics().write_failures, 3);

    // A 200 KiB key fits in an event (twice: message key and envelope) and in Redis.
    let large = "L".repeat(200 << 10);
    let outcome = cache
        .set_with_sync_and_wait(&large, "fits".into(), None, None)
        .expect("a large key that fits");
    assert_eq!(outcome, WriteOutcome::Applied);
    cache.local().clear().unwrap();
    assert_eq!(
        cache.get_with_sync(&large, None).unwrap().as_deref(),
        Some("fits")
    );
    let m = node.metrics();
    assert_eq!((m.malformed, m.failed), (0, 0), "{m:?}");
}

/// A value over the message limit is `Error::Rejected` at `set`, promptly, whether the client
/// refuses it (librdkafka's `message.max.bytes`) or the broker does (a client limit raised past
/// the broker's); the producer is not stuck: the next write goes through. A value just under the
/// limit goes all the way (its done event omits it: listeners drop their copy).
#[test]
fn a_value_over_the_message_limit_is_refused_at_set() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("big-value");
    let cache = dep.cache::<Vec<u8>>(&ns);
    // JSON encodes bytes as numbers: 2 MiB of zeros is 4 MiB on the wire.
    let (written, took) = timed(|| cache.set_with_sync("big", vec![0; 2 << 20], None, None));
    assert!(matches!(written, Err(Error::Rejected(_))), "{written:?}");
    assert!(took < QUICK, "took {took:?}");
    assert_eq!(cache.get("big").unwrap(), None);
    cache
        .set_with_sync_and_wait("small", vec![1], None, None)
        .expect("the producer is not stuck");

    // Just under librdkafka's default limit (1,000,000 bytes): applied end to end.
    let near = vec![7u8; 450_000]; // "7," each: 900 kB of JSON
    let outcome = cache
        .set_with_sync_and_wait("near", near.clone(), None, None)
        .expect("a value under the limit");
    assert_eq!(outcome, WriteOutcome::Applied);
    cache.local().clear().unwrap();
    assert_eq!(cache.get_with_sync("near", None).unwrap(), Some(near));

    if dep.broker.kind() == BrokerKind::Kafka {
        // The client would take 8 MB; Apache Kafka's default limit is 1 MiB per batch.
        let ns2 = unique_name("big-value-broker");
        let lax: DistributedCache<Vec<u8>> = DistributedCache::builder()
            .kafka(
                KafkaConfig {
                    produce_timeout: Duration::from_secs(5),
                    ..KafkaConfig::new(dep.broker.bootstrap())
                }
                .set("message.max.bytes", "8000000"),
            )
            .redis_url(dep.redis.url())
            .namespace(&ns2)
            .wait_timeout(Duration::from_secs(30))
            .build()
            .expect("core node with a raised client limit");
        let (written, took) = timed(|| lax.set_with_sync("big", vec![0; 1 << 20], None, None));
        assert!(matches!(written, Err(Error::Rejected(_))), "{written:?}");
        assert!(took < QUICK, "took {took:?}");
        assert_eq!(lax.get("big").unwrap(), None);
        let outcome = lax
            .set_with_sync_and_wait("small", vec![1], None, None)
            .expect("the producer is not stuck after the broker refused");
        assert_eq!(outcome, WriteOutcome::Applied);
    }
    let m = node.metrics();
    assert_eq!((m.malformed, m.failed), (0, 0), "{m:?}");
}

/// TTL 0 means "no expiry" in every tier; `u64::MAX` ms and `Duration::MAX` are clamped, never
/// an overflow: the value is stored, readable, and expires far in the future.
#[test]
fn zero_and_maximal_ttls_neither_overflow_nor_expire() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("ttl-extremes");
    let cache = dep.cache::<String>(&ns);
    let max_ms = Duration::from_millis(u64::MAX);
    let cases = [
        ("zero", Some(Duration::ZERO), Some(Duration::ZERO)),
        ("max-ms", Some(max_ms), Some(max_ms)),
        ("max", Some(Duration::MAX), Some(Duration::MAX)),
        ("local-max-remote-none", Some(Duration::MAX), None),
        ("local-zero-remote-max", Some(Duration::ZERO), Some(max_ms)),
    ];
    for (key, local, remote) in cases {
        let outcome = cache
            .set_with_sync_and_wait(key, key.into(), local, remote)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(outcome, WriteOutcome::Applied, "{key}");
        assert_eq!(cache.get(key).unwrap().as_deref(), Some(key), "{key}");
        let pttl = redis_pttl(&dep, &ns, key);
        let expires = remote.is_some_and(|t| !t.is_zero());
        if expires {
            assert!(pttl > 1_000 * 3600 * 24 * 365, "{key}: PTTL {pttl}");
        } else {
            assert_eq!(pttl, -1, "{key}: no expiry");
        }
        // A fill from Redis takes the remaining TTL, also when it is huge.
        cache.local().clear().unwrap();
        assert_eq!(
            cache.get_with_sync(key, local).unwrap().as_deref(),
            Some(key),
            "{key}"
        );
    }
    for (key, ttl) in [("plain-max", Duration::MAX), ("plain-max-ms", max_ms)] {
        cache
            .set(key, key.into(), Some(ttl))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(cache.get(key).unwrap().as_deref(), Some(key));
    }
    let loaded = cache
        .get_or_load("loaded", Some(Duration::MAX), Some(Duration::MAX), |_| {
            Ok(Some("loaded".to_string()))
        })
        .unwrap();
    assert_eq!(loaded.as_deref(), Some("loaded"));

    // The same from the wire: a hand-made event with u64::MAX ms in both TTL fields.
    let mut event = set_event(&ns, "wire", fresh_version(11), b"\"wire\"");
    event.remote_ttl = Some(max_ms);
    event.local_ttl = Some(max_ms);
    produce_events(&dep.broker, TOPIC_SET_DEL, &[event]).expect("produce");
    assert!(
        wait_until(PATIENCE, || cache.get("wire").unwrap().as_deref()
            == Some("wire")),
        "the hand-made event never reached the local cache: {:?}",
        cache.metrics()
    );
    assert!(redis_pttl(&dep, &ns, "wire") > 0);
    let m = node.metrics();
    assert_eq!((m.malformed, m.failed, m.retries), (0, 0, 0), "{m:?}");
}

/// A broker host that does not resolve: `Error::Unavailable` from both builders within the request
/// timeout, not a hang and not a panic.
/// A topic deleted under running nodes: writes return (an error within the produce timeout, or
/// success once the broker re-created the topic), nothing panics or hangs, and once the topic is
/// back writes are applied again end to end.
#[test]
fn a_topic_deleted_under_running_nodes() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("deleted-topic");
    let cache: DistributedCache<String> = DistributedCache::builder()
        .kafka(KafkaConfig {
            produce_timeout: Duration::from_secs(5),
            ..KafkaConfig::new(dep.broker.bootstrap())
        })
        .redis_url(dep.redis.url())
        .namespace(&ns)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("core node");
    assert_eq!(
        cache
            .set_with_sync_and_wait("k", "before".into(), None, None)
            .unwrap(),
        WriteOutcome::Applied
    );

    let mut acked = Vec::new();
    for topic in [TOPIC_SET_DEL, TOPIC_DONE] {
        dep.broker
            .delete_topic(topic)
            .unwrap_or_else(|e| panic!("delete {topic}: {e}"));
        eprintln!("deleted {topic}");
        let mut outcomes = Vec::new();
        for i in 0..3 {
            let (written, took) =
                timed(|| cache.set_with_sync(&format!("{topic}-{i}"), "x".into(), None, None));
            if written.is_ok() {
                acked.push(format!("{topic}-{i}"));
            }
            assert!(took < QUICK, "{topic}: a write took {took:?}: {written:?}");
            outcomes.push(format!("{written:?} in {took:?}"));
        }
        eprintln!("{topic} deleted: writes {outcomes:?}");
        if dep.broker.try_create_topic(topic, 8).is_err() {
            eprintln!("{topic} was re-created by the broker");
        }
        let mut last = String::new();
        let back = wait_until(Duration::from_secs(90), || {
            match cache.set_with_sync_and_wait("k", format!("after-{topic}"), None, None) {
                Ok(WriteOutcome::Applied) => true,
                other => {
                    last = format!("{other:?}");
                    false
                }
            }
        });
        assert!(
            back,
            "{topic}: writes never applied again; last {last}; node {:?}; cache {:?}",
            node.metrics(),
            cache.metrics()
        );
        assert!(node.failure().is_none(), "{:?}", node.failure());
    }
    let present = |key: &String| entry_field(&mut dep.redis_connection(), &ns, key, "v").is_some();
    wait_until(Duration::from_secs(20), || acked.iter().all(present));
    let missing: Vec<&String> = acked.iter().filter(|k| !present(k)).collect();
    eprintln!("acknowledged during the deletion but not in redis: {missing:?}");
    eprintln!("node {:?}\ncache {:?}", node.metrics(), cache.metrics());
}
