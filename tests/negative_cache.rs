//! Negative caching (`absent_ttl` on the builder): a missing key stops costing a Redis read and a
//! loader call per read, and its absent marker goes as soon as a newer write of the key reaches
//! the node (inline value or not), when it expires, or when the local capacity pushes it out. Off
//! by default. Real redis-server and a real broker; counted by the cache's own Redis-read and
//! loader counters.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use distcache::{Cache, DistributedCache};
use support::{unique_name, Deployment};

const WAIT: Duration = Duration::from_secs(30);

fn cache_with(
    dep: &Deployment,
    ns: &str,
    absent_ttl: Duration,
    capacity: usize,
) -> DistributedCache<String> {
    DistributedCache::<String>::builder()
        .kafka_brokers(dep.broker.bootstrap())
        .redis_url(dep.redis.url())
        .namespace(ns)
        .local_capacity(capacity)
        .absent_ttl(absent_ttl)
        .wait_timeout(WAIT)
        .build()
        .expect("core node")
}

#[test]
fn a_missing_key_is_read_from_redis_and_loaded_once_until_a_write_replaces_the_marker() {
    let dep = Deployment::start();
    let _node = dep.state_node();

    // Off by default: every read of a missing key goes to Redis.
    let plain = dep.cache::<String>(&unique_name("negative-off"));
    for _ in 0..3 {
        assert_eq!(plain.get_with_sync("missing", None).unwrap(), None);
    }
    assert_eq!(plain.metrics().redis_reads, 3);
    assert_eq!(plain.metrics().negative_hits, 0);

    let ns = unique_name("negative");
    let cache = cache_with(&dep, &ns, Duration::from_secs(60), 10_000);
    for _ in 0..5 {
        assert_eq!(cache.get_with_sync("missing", None).unwrap(), None);
    }
    let m = cache.metrics();
    assert_eq!(m.redis_reads, 1, "one Redis read for five reads: {m:?}");
    assert_eq!(m.negative_hits, 4);
    assert!(!cache.exists("missing").unwrap(), "a marker is not a value");
    assert_eq!(cache.len().unwrap(), 0);

    // The loader runs once; later calls answer from the marker.
    let calls = AtomicUsize::new(0);
    let load = |_: &str| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    };
    for _ in 0..4 {
        assert_eq!(
            cache.get_or_load("nowhere", None, None, load).unwrap(),
            None
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one loader call");
    assert_eq!(cache.metrics().loads, 1);
    assert_eq!(
        cache.metrics().redis_reads,
        1 + 2,
        "one miss costs two Redis reads (before and in the flight)"
    );

    // A write from another process replaces the marker as soon as its done event arrives.
    let other = dep.core_node_process(&ns, "writer", &["--reply-versions"]);
    let v = other.write_version("set-sync missing here");
    cache.wait_for("missing", &v, WAIT).unwrap();
    assert_eq!(
        cache.get_with_sync("missing", None).unwrap().as_deref(),
        Some("here")
    );
    let v = other.write_version("set nowhere plain");
    cache.wait_for("nowhere", &v, WAIT).unwrap();
    assert_eq!(
        cache
            .get_or_load("nowhere", None, None, load)
            .unwrap()
            .as_deref(),
        Some("plain")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A delete elsewhere, then a read: absent again, remembered again.
    let v = other.write_version("del-sync missing");
    cache.wait_for("missing", &v, WAIT).unwrap();
    let reads = cache.metrics().redis_reads;
    for _ in 0..3 {
        assert_eq!(cache.get_with_sync("missing", None).unwrap(), None);
    }
    assert!(cache.metrics().redis_reads <= reads + 1);
    // This node's own write replaces its marker at once (read-your-writes).
    cache
        .set_with_sync("missing", "mine".into(), None, None)
        .unwrap();
    assert_eq!(
        cache.get_with_sync("missing", None).unwrap().as_deref(),
        Some("mine")
    );
}

/// Markers expire after `absent_ttl`, are bounded by the local capacity (the oldest are evicted),
/// and are dropped by a done event whose value was too large to inline.
#[test]
fn markers_expire_are_bounded_and_yield_to_omitted_values() {
    let dep = Deployment::start();
    let _node = dep.state_node_with(|node| node.inline_value_limit(1));

    let ns = unique_name("negative-ttl");
    let cache = cache_with(&dep, &ns, Duration::from_millis(300), 10_000);
    assert_eq!(cache.get_with_sync("k", None).unwrap(), None);
    assert_eq!(cache.get_with_sync("k", None).unwrap(), None);
    assert_eq!(cache.metrics().redis_reads, 1);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(cache.get_with_sync("k", None).unwrap(), None);
    assert_eq!(cache.metrics().redis_reads, 2, "the marker expired");

    let ns = unique_name("negative-bounded");
    let small = cache_with(&dep, &ns, Duration::from_secs(60), 64);
    for i in 0..1000 {
        assert_eq!(small.get_with_sync(&format!("k{i}"), None).unwrap(), None);
    }
    assert_eq!(small.metrics().redis_reads, 1000);
    assert_eq!(small.get_with_sync("k0", None).unwrap(), None);
    assert_eq!(
        small.metrics().redis_reads,
        1001,
        "the first marker was evicted"
    );
    assert_eq!(small.get_with_sync("k999", None).unwrap(), None);
    assert_eq!(
        small.metrics().redis_reads,
        1001,
        "the last one is still there"
    );

    // Every done event omits its value here: the marker must go all the same.
    let ns = unique_name("negative-omitted");
    let cache = cache_with(&dep, &ns, Duration::from_secs(60), 10_000);
    assert_eq!(cache.get_with_sync("big", None).unwrap(), None);
    let other = dep.core_node_process(&ns, "writer", &["--reply-versions"]);
    let v = other.write_version("set-sync big value");
    cache.wait_for("big", &v, WAIT).unwrap();
    assert_eq!(
        cache.get_with_sync("big", None).unwrap().as_deref(),
        Some("value")
    );
}
