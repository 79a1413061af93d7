//! Outages with clear behaviour (README "Failure behaviour"): Redis down under a state node and under a
//! core node's reads, and the broker down under writes and idle nodes. Each test starts its own redis-server
//! and broker (tests/support) and kills or stops them on purpose.
//!
//! What is checked from outside, not from our own counters where it matters: the state node's committed
//! offsets and the done topic's end offsets (read from the broker), the entries in Redis, and the process's
//! CPU time from /proc.

mod support;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use distcache::event::{TOPIC_DONE, TOPIC_SET_DEL};
use distcache::{Cache, DistributedCache, Error};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use support::{unique_name, wait_until, Broker, Deployment};

/// Generous bound for anything that should take a second or two (a loaded 2-core machine).
const PATIENCE: Duration = Duration::from_secs(60);

/// Redis key prefix the state node uses by default.
const PREFIX: &str = "distcache:";

// ------------------------------------------------------------------------------------------------
// Broker views
// ------------------------------------------------------------------------------------------------

/// Reads a group's committed offsets and topics' end offsets from the broker, without joining the group.
struct Offsets {
    consumer: BaseConsumer,
}

impl Offsets {
    fn new(broker: &Broker, group: &str) -> Offsets {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()
            .expect("offsets consumer");
        Offsets { consumer }
    }

    fn partitions(&self, topic: &str) -> Vec<i32> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect()
    }

    /// partition → end offset (high watermark) of `topic`.
    fn ends(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.partitions(topic)
            .into_iter()
            .map(|p| {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks");
                (p, high)
            })
            .collect()
    }

    /// partition → committed offset of the group on the set-del topic (0 where nothing was committed).
    fn committed(&self) -> BTreeMap<i32, i64> {
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions(TOPIC_SET_DEL) {
            tpl.add_partition(TOPIC_SET_DEL, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                (e.partition(), offset)
            })
            .collect()
    }
}

fn total(offsets: &BTreeMap<i32, i64>) -> i64 {
    offsets.values().sum()
}

/// The encoded value Redis holds for `ns`/`key` (default JSON codec), `None` when absent. Errors (Redis
/// restarting) read as absent.
fn redis_value(url: &str, ns: &str, key: &str) -> Option<String> {
    let mut conn = redis::Client::open(url).ok()?.get_connection().ok()?;
    let bytes: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(distcache::redis_entry_key(PREFIX, ns, key))
        .arg("v")
        .query(&mut conn)
        .ok()?;
    serde_json::from_slice(&bytes?).ok()
}

// ------------------------------------------------------------------------------------------------
// CPU time of this process
// ------------------------------------------------------------------------------------------------

fn process_ticks() -> u64 {
    support::process_ticks(std::process::id()).expect("parse /proc/self/stat")
}

/// Ticks per thread (`name/tid`), to name a spinning thread in a failure message.
fn thread_ticks() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            if let Some((name, ticks)) = support::stat_ticks(&stat) {
                out.insert(
                    format!("{name}/{}", task.file_name().to_string_lossy()),
                    ticks,
                );
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Redis down
// ------------------------------------------------------------------------------------------------

/// Redis dies while events are waiting to be applied. While it is down the state node retries with a backoff
/// capped at 2 s (still retrying late in the outage, but not spinning), commits no offset past what it
/// applied and publishes no done event; once Redis is back every pending event is applied, reported and
/// committed.
#[test]
fn redis_down_state_node_commits_nothing_unapplied_and_resumes() {
    let group = unique_name("group");
    let dep = Deployment::start();
    let node = dep.state_node_with(|b| b.group(group.clone()));
    let ns = unique_name("outage-redis");
    let cache: DistributedCache<String> = dep.cache(&ns);
    let offsets = Offsets::new(&dep.broker, &group);

    cache
        .set_with_sync_and_wait("warm", "0".into(), None, None)
        .expect("warm-up write");
    // Commits are asynchronous in the steady state: wait until everything consumed is committed.
    assert!(
        wait_until(PATIENCE, || offsets.committed()
            == offsets.ends(TOPIC_SET_DEL)),
        "warm-up never committed: committed {:?}, ends {:?}",
        offsets.committed(),
        offsets.ends(TOPIC_SET_DEL)
    );
    let committed_before = offsets.committed();
    let done_before = offsets.ends(TOPIC_DONE);

    dep.redis.kill();
    let killed_at = Instant::now();
    const N: usize = 50;
    let keys: Vec<String> = (0..N).map(|i| format!("pending-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        cache
            .set_with_sync(key, format!("value-{i}"), None, None)
            .expect("the broker takes writes while Redis is down");
    }
    let ends = offsets.ends(TOPIC_SET_DEL);
    assert_eq!(
        total(&ends),
        total(&committed_before) + N as i64,
        "every write is on the log"
    );

    // Watch the outage for 10 s: nothing committed, nothing reported as done.
    let mut retries_at_4s = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        let committed = offsets.committed();
        assert_eq!(
            committed,
            committed_before,
            "offsets committed while Redis was down ({:?} after the kill): {:?}",
            killed_at.elapsed(),
            node.metrics()
        );
        let done = offsets.ends(TOPIC_DONE);
        assert_eq!(
            done, done_before,
            "done events published while Redis was down"
        );
        if retries_at_4s.is_none() && killed_at.elapsed() >= Duration::from_secs(4) {
            retries_at_4s = Some(node.metrics().retries);
        }
        thread::sleep(Duration::from_millis(250));
    }
    let m = node.metrics();
    let late_retries = m.retries - retries_at_4s.expect("sampled at 4 s");
    eprintln!(
        "redis outage: {} retries in 10 s, {late_retries} in the last 6 s; {m:?}",
        m.retries
    );
    // Backoff 50 ms doubling to a 2 s cap: about 3 retries between 4 s and 10 s. An uncapped backoff would
    // retry at most once there, a spinning one thousands of times.
    assert!(
        (2..=10).contains(&late_retries),
        "{late_retries} retries between 4 s and 10 s of the outage: {m:?}"
    );
    for key in &keys {
        assert!(
            cache.get(key).unwrap().is_some(),
            "the writer holds {key} locally"
        );
    }

    dep.redis.restart();
    let restarted_at = Instant::now();
    let url = dep.redis.url();
    assert!(
        wait_until(PATIENCE, || keys.iter().enumerate().all(
            |(i, k)| redis_value(&url, &ns, k) == Some(format!("value-{i}"))
        )),
        "pending writes not applied after Redis returned: {:?}",
        node.metrics()
    );
    let applied_after = restarted_at.elapsed();
    assert!(
        wait_until(PATIENCE, || offsets.committed() == ends),
        "not committed after Redis returned: committed {:?}, ends {ends:?}",
        offsets.committed()
    );
    let done = offsets.ends(TOPIC_DONE);
    assert!(
        total(&done) >= total(&done_before) + N as i64,
        "done events missing: before {done_before:?}, after {done:?}"
    );
    eprintln!(
        "redis outage: all {N} pending writes applied {applied_after:?} after redis-server answered, \
         committed {:?} after",
        restarted_at.elapsed()
    );
}

/// `get_with_sync` with Redis down answers a local hit from the local tier (it never touches Redis) and a
/// local miss with an error within the configured Redis timeouts: `Unavailable` at once for a dead server
/// (connection refused), `Timeout` after the request timeout for a hung one (SIGSTOP).
#[test]
fn get_with_sync_with_redis_down_answers_local_hits_and_fails_misses_in_time() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = unique_name("outage-read");
    let io_timeout = Duration::from_secs(3);
    let cache: DistributedCache<String> = DistributedCache::builder()
        .kafka_brokers(dep.broker.bootstrap())
        .redis_url(dep.redis.url())
        .namespace(&ns)
        .wait_timeout(Duration::from_secs(30))
        .redis_timeouts(Duration::from_millis(500), io_timeout)
        .build()
        .expect("core node");
    cache
        .set_with_sync_and_wait("held", "local".into(), None, None)
        .expect("write");

    // A dead server.
    dep.redis.kill();
    let started = Instant::now();
    assert_eq!(
        cache.get_with_sync("held", None).unwrap().as_deref(),
        Some("local")
    );
    let started_miss = Instant::now();
    let err = cache
        .get_with_sync("missing", None)
        .expect_err("a local miss needs Redis");
    let miss_took = started_miss.elapsed();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                service: "redis",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(miss_took < Duration::from_secs(5), "{miss_took:?}");
    eprintln!(
        "redis dead: local hit {:?}, miss failed after {miss_took:?}: {err}",
        started_miss - started
    );

    // A hung server: the connection stays open, nothing is answered.
    dep.redis.restart();
    assert_eq!(cache.get_with_sync("missing", None).unwrap(), None);
    assert!(dep.redis.pause(), "SIGSTOP redis-server");
    let started = Instant::now();
    assert_eq!(
        cache.get_with_sync("held", None).unwrap().as_deref(),
        Some("local")
    );
    let hit_took = started.elapsed();
    let started = Instant::now();
    let err = cache
        .get_with_sync("missing", None)
        .expect_err("a hung Redis answers nothing");
    let miss_took = started.elapsed();
    assert!(dep.redis.resume(), "SIGCONT redis-server");
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // The configured 3 s, not the 2 s default, and not much more.
    assert!(
        miss_took >= io_timeout - Duration::from_millis(100)
            && miss_took < io_timeout + Duration::from_secs(4),
        "hung Redis: the miss failed after {miss_took:?} with a {io_timeout:?} request timeout"
    );
    assert!(
        hit_took < io_timeout,
        "the local hit waited on Redis: {hit_took:?}"
    );
    eprintln!("redis hung: local hit {hit_took:?}, miss failed after {miss_took:?}: {err}");

    // Back to normal once it answers again.
    assert!(wait_until(PATIENCE, || cache
        .get_with_sync("missing", None)
        .is_ok()));
}

// ------------------------------------------------------------------------------------------------
// Broker down
// ------------------------------------------------------------------------------------------------

/// With the broker dead, every kind of write fails within the configured produce timeout and leaves the
/// local cache as it was; reads keep working from the local tier and from Redis. After the broker returns
/// (Apache Kafka keeps its log), writes succeed and are applied again.
#[test]
fn broker_down_writes_fail_in_time_and_change_nothing_locally() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("outage-broker");
    let produce_timeout = Duration::from_secs(2);
    let cache: DistributedCache<String> = DistributedCache::builder()
        .kafka_brokers(dep.broker.bootstrap())
        .redis_url(dep.redis.url())
        .namespace(&ns)
        .wait_timeout(Duration::from_secs(30))
        .produce_timeout(produce_timeout)
        .build()
        .expect("core node");
    cache
        .set_with_sync_and_wait("synced", "old".into(), None, None)
        .expect("write");
    cache
        .set_with_sync_and_wait("redis-only", "in-redis".into(), None, None)
        .expect("write");
    cache
        .set_and_wait("plain", "old".into(), None)
        .expect("write");

    dep.broker.kill();
    // A write's deadline is the produce timeout plus 2 s for the delivery report; allow as much again.
    let bound = produce_timeout * 2 + Duration::from_secs(4);
    let mut took = Vec::new();
    let mut attempt = |what: &str, write: &dyn Fn() -> distcache::Result<()>| {
        let started = Instant::now();
        let err = write().expect_err(&format!("{what} with the broker down"));
        let elapsed = started.elapsed();
        assert!(err.is_transient(), "{what}: {err:?}");
        assert!(elapsed < bound, "{what} failed only after {elapsed:?}");
        took.push(format!("{what} {elapsed:?}: {err}"));
    };
    attempt("set_with_sync", &|| {
        cache
            .set_with_sync("synced", "new".into(), None, None)
            .map(|_| ())
    });
    attempt("set", &|| cache.set("plain", "new".into(), None));
    attempt("delete_with_sync", &|| {
        cache.delete_with_sync("synced").map(|_| ())
    });
    attempt("set_with_sync of a new key", &|| {
        cache
            .set_with_sync("fresh", "new".into(), None, None)
            .map(|_| ())
    });
    attempt("set_with_sync_and_wait", &|| {
        cache
            .set_with_sync_and_wait("synced", "new".into(), None, None)
            .map(|_| ())
    });
    eprintln!("broker down: {took:#?}");

    // Nothing changed locally.
    assert_eq!(cache.get("synced").unwrap().as_deref(), Some("old"));
    assert_eq!(cache.get("plain").unwrap().as_deref(), Some("old"));
    assert_eq!(cache.get("fresh").unwrap(), None);
    // Reads: local, and Redis after the local tier lost the entry.
    assert_eq!(
        cache.get_with_sync("synced", None).unwrap().as_deref(),
        Some("old")
    );
    cache.clear().unwrap();
    assert_eq!(
        cache.get_with_sync("redis-only", None).unwrap().as_deref(),
        Some("in-redis")
    );
    assert_eq!(
        cache.get("redis-only").unwrap().as_deref(),
        Some("in-redis"),
        "filled from Redis"
    );

    // Recovery: the broker comes back with its log; the same node writes again.
    let restart_called = Instant::now();
    dep.broker.restart();
    let serving = Instant::now();
    let mut outcome = None;
    assert!(
        wait_until(PATIENCE * 2, || {
            outcome = Some(cache.set_with_sync_and_wait("synced", "after".into(), None, None));
            matches!(outcome, Some(Ok(_)))
        }),
        "no write applied after the broker returned: {outcome:?}; {:?}",
        node.metrics()
    );
    assert_eq!(
        redis_value(&dep.redis.url(), &ns, "synced").as_deref(),
        Some("after")
    );
    eprintln!(
        "broker restart: serving {:?} after restart, first write applied {:?} after it served",
        serving - restart_called,
        serving.elapsed()
    );
}

/// A core node and a state node idle against a dead broker use almost no CPU: no thread spins on the failing
/// connection. (A behaviour check with a generous bound, not a speed target.)
#[test]
fn broker_down_no_thread_spins() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("outage-cpu");
    let cache: DistributedCache<String> = dep.cache(&ns);
    cache
        .set_with_sync_and_wait("k", "v".into(), None, None)
        .expect("write");
    dep.broker.kill();
    // Let every client notice and settle into its reconnect backoff.
    thread::sleep(Duration::from_secs(3));

    let window = Duration::from_secs(5);
    let ticks_per_s = support::clock_ticks();
    let threads_before = thread_ticks();
    let before = process_ticks();
    let started = Instant::now();
    thread::sleep(window);
    let cpu = (process_ticks() - before) as f64 / ticks_per_s;
    let wall = started.elapsed().as_secs_f64();
    let threads_after = thread_ticks();
    let mut busiest: Vec<(u64, &String)> = threads_after
        .iter()
        .map(|(name, t)| (t - threads_before.get(name).copied().unwrap_or(0), name))
        .filter(|(t, _)| *t > 0)
        .collect();
    busiest.sort_unstable_by(|a, b| b.cmp(a));
    eprintln!(
        "broker down: {cpu:.3} s CPU in {wall:.1} s wall ({} threads); busiest (ticks): {:?}",
        threads_after.len(),
        &busiest[..busiest.len().min(8)]
    );
    assert!(
        cpu < 0.5,
        "{cpu:.3} s CPU in {wall:.1} s with the broker down; busiest threads (ticks): {busiest:?}"
    );
    // Still alive: reads work.
    assert_eq!(cache.get("k").unwrap().as_deref(), Some("v"));

    // Shutting down against the dead broker ends within the bounds (state node: its 10 s shutdown
    // timeout, then a final commit bounded by the 10 s request timeout; core node: its producer's flush),
    // on a thread so that a hang fails the test instead of stalling it.
    let Deployment { broker, redis, .. } = dep;
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        drop(cache);
        node.shutdown();
        drop(node);
        let _ = tx.send(());
    });
    let ended = rx.recv_timeout(Duration::from_secs(60));
    eprintln!(
        "broker down: core and state node shut down in {:?}",
        started.elapsed()
    );
    assert!(
        ended.is_ok(),
        "shutdown with the broker down still running after 60 s"
    );
    drop((broker, redis));
}
