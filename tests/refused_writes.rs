//! A write Redis refuses (its key holds another type) is counted and skipped without holding up
//! its neighbours, and the writer is told: it drops its own copy and a waiting writer gets an answer.

mod support;

use std::time::Duration;

use distcache::{Cache, WriteOutcome};
use support::{unique_name, wait_until, Deployment};

#[test]
fn refused_write_is_skipped_counted_and_reported() {
    let dep = Deployment::start();
    let node = dep.state_node();
    let ns = unique_name("refused");
    let cache = dep.cache::<String>(&ns);

    // Something else owns this key as a plain string.
    let mut raw = dep.redis_connection();
    let foreign = distcache::redis_entry_key(distcache::DEFAULT_KEY_PREFIX, &ns, "taken");
    redis::cmd("SET")
        .arg(&foreign)
        .arg("not ours")
        .query::<()>(&mut raw)
        .unwrap();

    cache
        .set_with_sync("before", "1".into(), None, None)
        .unwrap();
    cache
        .set_with_sync("taken", "mine".into(), None, None)
        .unwrap();
    assert_eq!(
        cache.get("taken").unwrap().as_deref(),
        Some("mine"),
        "read-your-writes until the state node reports"
    );
    let outcome = cache
        .set_with_sync_and_wait("after", "2".into(), None, None)
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Applied);

    let outcome = cache
        .set_with_sync_and_wait("taken", "again".into(), None, None)
        .expect("a refused write is answered, not left to time out");
    assert_eq!(outcome, WriteOutcome::Superseded);
    assert!(
        wait_until(Duration::from_secs(20), || cache
            .get("taken")
            .unwrap()
            .is_none()),
        "the writer drops the copy Redis refused"
    );
    let m = node.metrics();
    assert_eq!(m.failed, 2, "{m:?}");
    let stored: String = redis::cmd("GET").arg(&foreign).query(&mut raw).unwrap();
    assert_eq!(stored, "not ours", "the foreign key is untouched");
    for (key, want) in [("before", "1"), ("after", "2")] {
        let v: Option<String> = redis::cmd("HGET")
            .arg(distcache::redis_entry_key(
                distcache::DEFAULT_KEY_PREFIX,
                &ns,
                key,
            ))
            .arg("v")
            .query(&mut raw)
            .unwrap();
        assert_eq!(v.as_deref(), Some(&*format!("\"{want}\"")), "{key}");
    }
}
