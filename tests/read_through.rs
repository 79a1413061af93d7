//! `get_with_sync` fills the local tier from Redis, and a filled copy never outlives Redis' own.

mod support;

use std::time::{Duration, Instant};

use distcache::{Cache, WriteOutcome};
use support::{unique_name, wait_until, Deployment};

#[test]
fn a_filled_copy_expires_with_the_redis_entry() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let cache = dep.cache::<String>(&unique_name("fill"));

    // Long enough that the fill below always happens before the entry expires (no check is skipped on a
    // slow run), short enough to wait out.
    let remote_ttl = Duration::from_secs(4);
    let outcome = cache
        .set_with_sync_and_wait("k", "v".into(), None, Some(remote_ttl))
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Applied);
    let written = Instant::now();

    cache.clear().unwrap();
    assert_eq!(cache.get("k").unwrap(), None);
    let filled = cache.get_with_sync("k", None).unwrap();
    assert!(
        written.elapsed() < remote_ttl,
        "the read took longer than the TTL"
    );
    assert_eq!(filled.as_deref(), Some("v"), "read through from Redis");
    assert_eq!(cache.metrics().redis_reads, 1);
    assert_eq!(
        cache.get("k").unwrap().as_deref(),
        Some("v"),
        "the local tier was filled"
    );
    // The fill asked for no local TTL, but Redis' entry expires: so does the local copy.
    assert!(
        wait_until(remote_ttl + Duration::from_secs(10), || cache
            .get("k")
            .unwrap()
            .is_none()),
        "the local copy outlived the Redis entry"
    );
    assert_eq!(cache.get_with_sync("k", None).unwrap(), None);
}
