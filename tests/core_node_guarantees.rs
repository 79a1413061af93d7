//! Core-node guarantees from the README that no other test exercised end to end, each against a real
//! redis-server, a real broker and a state node (tests/support): undecodable done events, values over the
//! inline limit, the stale-fill race, the bounded producer queue, `get_or_load` within and across
//! processes, and the listener's reset when the done topic's offsets go back.
//!
//! Where a race matters, the test makes it happen on purpose (a paused redis-server, a barrier) instead
//! of hoping for it, and every wait is for an observable condition, never a sleep.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use distcache::event::{Event, Op, WriteEvent, TOPIC_DONE};
use distcache::{Cache, DistributedCache, KafkaConfig, RedisConfig, Version, WriteOutcome};
use support::{
    entry_json, produce_events, unique_name, wait_until, wall_millis, Deployment, DoneWatcher,
};

/// Longest wait for anything that should happen.
const WAIT: Duration = Duration::from_secs(30);

/// A version one second ahead of the wall clock from a node id no cache here uses: newer than every
/// write the test made, well within the state node's clock-skew bound.
fn newer_version() -> Version {
    Version::new((wall_millis() + 1000) << 16, 0xfeed)
}

/// A done event as a state node publishes it for an applied set, `value` as the bytes it carries
/// (`None`: omitted, too large to inline).
fn done_set(ns: &str, key: &str, version: Version, value: Option<Vec<u8>>) -> Event {
    Event {
        value_omitted: value.is_none(),
        value,
        ..WriteEvent::set(ns, key, version, Vec::new()).into_envelope()
    }
}

/// A done event whose envelope is fine but whose value does not decode as the namespace's type: counted
/// (`undecodable`), and the local copy of that key is dropped (it may be stale now); other keys stay.
#[test]
fn an_undecodable_done_event_drops_the_local_copy() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("undecodable");
    let cache = dep.cache::<String>(&ns);
    for key in ["k", "other"] {
        let outcome = cache
            .set_with_sync_and_wait(key, "v".into(), None, None)
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Applied);
    }
    assert_eq!(cache.get("k").unwrap().as_deref(), Some("v"));

    // Valid JSON, but a number where a String is stored; then bytes that are no JSON at all.
    let bad_values = [serde_json::to_vec(&42).unwrap(), b"\xff not json".to_vec()];
    for (i, bad) in bad_values.into_iter().enumerate() {
        if i == 1 {
            // Fill the local copy again from Redis (which still holds "v").
            assert_eq!(
                cache.get_with_sync("k", None).unwrap().as_deref(),
                Some("v")
            );
            assert_eq!(cache.get("k").unwrap().as_deref(), Some("v"));
        }
        let event = done_set(&ns, "k", newer_version(), Some(bad));
        produce_events(&dep.broker, TOPIC_DONE, &[event]).unwrap();
        assert!(
            wait_until(WAIT, || cache.metrics().undecodable == i as u64 + 1),
            "undecodable not counted: {:?}",
            cache.metrics()
        );
        assert_eq!(cache.get("k").unwrap(), None, "the local copy was dropped");
        assert_eq!(
            cache.get("other").unwrap().as_deref(),
            Some("v"),
            "only that key is dropped"
        );
    }
    let m = cache.metrics();
    assert_eq!((m.malformed, m.resets), (0, 0), "{m:?}");
}

/// A value larger than the state node's inline limit is left out of its done event; a node holding an
/// older copy drops it and reads the new value from Redis.
#[test]
fn a_value_over_the_inline_limit_is_read_from_redis_by_other_nodes() {
    let dep = Deployment::start();
    let _node = dep.state_node_with(|node| node.inline_value_limit(1024));
    let ns = unique_name("inline");
    let a = dep.cache::<String>(&ns);
    let b = dep.core_node_process(&ns, "core_node b", &[]);
    let mut done = DoneWatcher::new(&dep.broker, WAIT);

    assert_eq!(b.request("set-sync-wait k small"), "OK applied");
    assert_eq!(b.get("k").as_deref(), Some("small"));
    // An inlined value reaches A's local tier with the done event, without a read.
    assert!(
        wait_until(WAIT, || a.get("k").unwrap().as_deref() == Some("small")),
        "the small value never reached A"
    );

    let big = "x".repeat(4096);
    let version = a.set_with_sync("k", big.clone(), None, None).unwrap();
    let event = done.wait_for("for the big write", |e| {
        e.ns == ns && e.key == "k" && e.version == version
    });
    assert_eq!(event.op, Op::Set);
    assert!(
        event.value.is_none() && event.value_omitted,
        "a 4 KiB value over a 1 KiB limit is not inlined: {:?}",
        event.value.as_ref().map(Vec::len)
    );

    assert!(
        wait_until(WAIT, || b.get("k").is_none()),
        "B kept its older copy: {:?}",
        b.metrics()
    );
    let reads = b.metrics()["redis_reads"];
    assert_eq!(
        b.get_sync("k").as_deref(),
        Some(big.as_str()),
        "read from Redis"
    );
    assert_eq!(b.metrics()["redis_reads"], reads + 1);
    assert_eq!(
        a.get_with_sync("k", None).unwrap().as_deref(),
        Some(big.as_str())
    );
}

/// The stale-fill race, made to happen: `get_with_sync` reads Redis (held up by pausing redis-server)
/// while a newer write's done event arrives without its value (too large to inline), which leaves no
/// version behind in the local tier to compare with. The read may answer the value it read, but must not
/// keep it in the local tier: the next read goes to Redis and sees the newer value.
#[test]
fn a_fill_racing_a_newer_write_is_not_kept() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("stale-fill");
    // A read may wait on the paused server for a while on a busy machine.
    let mut redis = RedisConfig::new(dep.redis.url());
    redis.io_timeout = WAIT;
    let cache = DistributedCache::<String>::builder()
        .kafka_brokers(dep.broker.bootstrap())
        .redis(redis)
        .namespace(&ns)
        .wait_timeout(WAIT)
        .build()
        .unwrap();
    let outcome = cache
        .set_with_sync_and_wait("k", "old".into(), None, None)
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Applied);
    cache.clear().unwrap();

    let reads = cache.metrics().redis_reads;
    assert!(dep.redis.pause(), "SIGSTOP redis-server");
    let reader = {
        let cache = cache.clone();
        thread::spawn(move || cache.get_with_sync("k", None))
    };
    let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(
            wait_until(WAIT, || cache.metrics().redis_reads > reads),
            "the read never started"
        );
        // The read is in flight. Another node's newer write lands: Redis would hold it (the state
        // node applied it), and its done event carries no value.
        let events = cache.metrics().events;
        let newer = done_set(&ns, "k", newer_version(), None);
        produce_events(&dep.broker, TOPIC_DONE, &[newer]).unwrap();
        assert!(
            wait_until(WAIT, || cache.metrics().events > events),
            "the done event never arrived: {:?}",
            cache.metrics()
        );
    }));
    assert!(dep.redis.resume(), "SIGCONT redis-server");
    if let Err(panic) = resumed {
        std::panic::resume_unwind(panic);
    }
    let answered = reader.join().expect("reader thread").unwrap();
    assert_eq!(
        answered.as_deref(),
        Some("old"),
        "the read answers what it read"
    );
    assert_eq!(
        cache.get("k").unwrap(),
        None,
        "the value read before the newer write was kept in the local tier"
    );
}

/// The producer's queue is bounded (here to one message): with the broker hung, writes beyond it wait at
/// most the produce timeout and fail with an error naming the full queue, never hang, and change nothing
/// locally. After the broker is back, writes work again.
#[test]
fn a_full_producer_queue_fails_writes_within_the_produce_timeout() {
    const WRITERS: usize = 3;
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("queue");
    let mut kafka =
        KafkaConfig::new(dep.broker.bootstrap()).set("queue.buffering.max.messages", "1");
    kafka.produce_timeout = Duration::from_secs(2);
    let cache = DistributedCache::<String>::builder()
        .kafka(kafka)
        .redis_url(dep.redis.url())
        .namespace(&ns)
        .build()
        .unwrap();
    cache
        .set_with_sync("warm", "up".into(), None, None)
        .unwrap();

    assert!(dep.broker.pause(), "SIGSTOP the broker");
    let start = Arc::new(Barrier::new(WRITERS));
    let results: Vec<(Duration, distcache::Result<Version>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (cache, start) = (&cache, start.clone());
                s.spawn(move || {
                    start.wait();
                    let began = Instant::now();
                    let r = cache.set_with_sync(&format!("k{i}"), "v".into(), None, None);
                    (began.elapsed(), r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(dep.broker.resume(), "SIGCONT the broker");

    eprintln!("queue test: {results:?}");
    for (took, result) in &results {
        // The produce timeout, plus the margin for a delivery report, plus scheduling slack.
        assert!(*took < Duration::from_secs(10), "a write hung for {took:?}");
        assert!(result.is_err(), "a write succeeded with the broker hung");
    }
    let queue_full = results
        .iter()
        .filter(|(_, r)| {
            r.as_ref()
                .is_err_and(|e| e.to_string().to_lowercase().contains("queue full"))
        })
        .count();
    // Normally every write but the queued one; a writer that a busy machine held up past the first
    // write's timeout finds the queue empty again and times out instead.
    assert!(
        queue_full >= 1,
        "writes beyond the one queued fail with a full-queue error: {results:?}"
    );
    for i in 0..WRITERS {
        assert_eq!(
            cache.get(&format!("k{i}")).unwrap(),
            None,
            "nothing changed locally"
        );
    }
    assert!(
        wait_until(WAIT, || cache
            .set_with_sync("after", "v".into(), None, None)
            .is_ok()),
        "writes never worked again after the broker came back"
    );
}

/// Single flight: callers of one key that start together (a barrier) share one loader call; the loader
/// holds its flight until every other caller has missed, so all of them overlap with it.
#[test]
fn concurrent_get_or_load_calls_the_loader_once() {
    const CALLERS: usize = 8;
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("single-flight");
    let cache = dep.cache::<String>(&ns);
    let calls = AtomicUsize::new(0);
    let start = Barrier::new(CALLERS);
    let misses = |c: &DistributedCache<String>| c.metrics().local.misses;
    let before = misses(&cache);
    let answers: Vec<Option<String>> = thread::scope(|s| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    cache
                        .get_or_load("k", None, None, |_| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            // Every caller missed the local tier (this one twice: before and after
                            // taking the flight): all are past their first look and queue on this
                            // flight (or find its value after it).
                            let all = before + CALLERS as u64 + 1;
                            assert!(
                                wait_until(WAIT, || misses(&cache) >= all),
                                "callers never arrived"
                            );
                            Ok(Some("loaded".to_string()))
                        })
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        answers.iter().all(|a| a.as_deref() == Some("loaded")),
        "{answers:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one loader call");
    assert_eq!(cache.metrics().loads, 1);
    assert!(
        wait_until(WAIT, || entry_json(&mut dep.redis_connection(), &ns, "k")
            .as_deref()
            == Some("loaded")),
        "the loaded value never reached Redis"
    );
}

/// Across processes there is no shared flight, but Redis is shared: a value one process loaded is found
/// by the other without calling its loader; two processes loading at once each call their loader at most
/// once, and every tier ends on one of the two values.
#[test]
fn get_or_load_across_processes() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("load-across");
    let a = dep.cache::<String>(&ns);
    let b = dep.core_node_process(&ns, "core_node b", &[]);

    assert_eq!(
        a.get_or_load("k", None, None, |_| Ok(Some("from-a".into())))
            .unwrap()
            .as_deref(),
        Some("from-a")
    );
    assert!(
        wait_until(WAIT, || entry_json(&mut dep.redis_connection(), &ns, "k")
            .as_deref()
            == Some("from-a")),
        "A's load never reached Redis"
    );
    assert_eq!(b.request("get-or-load k from-b"), "VALUE from-a");
    assert_eq!(b.metrics()["loads"], 0, "B found A's value in Redis");

    // Both at once.
    b.send("get-or-load both from-b");
    let a_got = a
        .get_or_load("both", None, None, |_| Ok(Some("from-a".into())))
        .unwrap();
    let b_got = b.reply("get-or-load both from-b");
    assert!(
        matches!(a_got.as_deref(), Some("from-a" | "from-b")),
        "{a_got:?}"
    );
    assert!(
        matches!(b_got.as_str(), "VALUE from-a" | "VALUE from-b"),
        "{b_got}"
    );
    assert!(a.metrics().loads <= 2, "{:?}", a.metrics());
    assert!(b.metrics()["loads"] <= 1, "{:?}", b.metrics());
    let mut last = (None, None, None);
    let agree = wait_until(WAIT, || {
        let stored = entry_json(&mut dep.redis_connection(), &ns, "both");
        let (la, lb) = (a.get("both").unwrap(), b.get("both"));
        let ok = stored.is_some()
            && la.as_ref().is_none_or(|v| Some(v) == stored.as_ref())
            && lb.as_ref().is_none_or(|v| Some(v) == stored.as_ref());
        last = (stored, la, lb);
        ok
    });
    assert!(agree, "(redis, A local, B local) = {last:?}");
}

/// Bounded staleness over silent staleness: the done topic loses its log (deleted and created again, as a
/// broker that keeps topics in memory does on a restart), so the listener's next offsets go back. Events
/// may have been missed: the namespace's local cache is cleared and the reset counted (`resets`), and the
/// listener follows the new log.
#[test]
fn a_listener_resets_when_the_done_topic_loses_its_log() {
    const PARTITIONS: i32 = 8;
    let started = Instant::now();
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("reset");
    let cache = dep.cache::<String>(&ns);
    // Several applied writes, so the listener expects offsets past 0 on some partitions.
    for i in 0..16 {
        let outcome = cache
            .set_with_sync_and_wait(&format!("k{i}"), "v".into(), None, None)
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Applied);
    }
    assert_eq!(cache.metrics().resets, 0);
    assert_eq!(cache.get("k0").unwrap().as_deref(), Some("v"));

    eprintln!("reset test: writes applied after {:?}", started.elapsed());
    dep.broker.delete_topic(TOPIC_DONE).unwrap();
    // Deletion completes in the background; creating the topic again is refused until it has.
    let mut last = String::new();
    let created = wait_until(WAIT, || {
        match dep.broker.try_create_topic(TOPIC_DONE, PARTITIONS as u32) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        }
    });
    assert!(created, "could not create {TOPIC_DONE} again: {last}");

    eprintln!(
        "reset test: topic created again after {:?}",
        started.elapsed()
    );
    // The new log starts at offset 0 in every partition: behind where the listener was.
    let markers: Vec<Event> = (0..PARTITIONS)
        .map(|p| {
            done_set(
                &ns,
                &format!("marker-{p}"),
                newer_version(),
                Some(b"\"m\"".to_vec()),
            )
        })
        .collect();
    let records: Vec<support::Outgoing<'_>> = markers
        .iter()
        .zip(0..PARTITIONS)
        .map(|(event, p)| support::Outgoing {
            topic: TOPIC_DONE,
            partition: Some(p),
            event,
        })
        .collect();
    support::produce_records(&dep.broker, &records).unwrap();
    assert!(
        wait_until(WAIT, || cache.metrics().resets >= 1),
        "no reset after the done topic's offsets went back: {:?}",
        cache.metrics()
    );
    assert_eq!(
        cache.get("k0").unwrap(),
        None,
        "the local cache was cleared"
    );
    // The listener reads the new log: a marker produced after the reset arrives.
    assert!(
        wait_until(WAIT, || {
            let again = done_set(&ns, "after", newer_version(), Some(b"\"a\"".to_vec()));
            produce_events(&dep.broker, TOPIC_DONE, &[again]).unwrap();
            wait_until(Duration::from_secs(2), || {
                cache.get("after").unwrap().as_deref() == Some("a")
            })
        }),
        "the listener does not follow the new log: {:?}",
        cache.metrics()
    );
    eprintln!(
        "reset test: following the new log after {:?}",
        started.elapsed()
    );
}
