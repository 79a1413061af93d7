//! Cross-node read-your-writes: `wait_for(key, &version, timeout)` returns once this node's view of
//! the key reached the version, and times out clearly when it does not. Across two processes
//! (`examples/core_node`'s `wait-for` command) and in-process. Real redis-server and a real broker.

mod support;

use std::time::{Duration, Instant};

use distcache::{Error, Version, WriteOutcome};
use support::{unique_name, Deployment};

/// Writer A replies a version; B waits for it and then reads the value from its local tier. While
/// no state node runs, nothing can be applied: B's wait times out (and says so), B's local tier
/// does not have the value. Once a state node runs, the same wait returns `OK` and the local read
/// sees the value; a later write (a newer version) also satisfies a wait for the older one.
#[test]
fn a_version_written_on_one_process_is_waited_for_on_another() {
    let dep = Deployment::start();
    let node = dep.state_node();
    node.shutdown();
    let ns = unique_name("wait-for");
    let a = dep.core_node_process(&ns, "writer-A", &["--reply-versions"]);
    let b = dep.core_node_process(&ns, "reader-B", &["--reply-versions"]);

    let v1 = a.write_version("set-sync cart one").to_hex();
    let started = Instant::now();
    let reply = b.request(&format!("wait-for cart {v1} 500"));
    assert!(
        reply.starts_with("ERR timeout"),
        "no state node runs, so nothing is applied: {reply:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(450), "waited");
    assert_eq!(b.get("cart"), None, "not applied yet");

    let node = dep.state_node_with(|b| b.group(unique_name("group")));
    assert_eq!(b.request(&format!("wait-for cart {v1} 30000")), "OK");
    assert_eq!(
        b.get("cart").as_deref(),
        Some("one"),
        "local read after wait"
    );

    // "At least": a newer write (here a delete) satisfies a wait for the older version.
    let v2 = a.write_version("del-sync cart").to_hex();
    assert_eq!(b.request(&format!("wait-for cart {v2} 30000")), "OK");
    assert_eq!(b.request(&format!("wait-for cart {v1} 0")), "OK");
    assert_eq!(b.get("cart"), None);

    // The metrics, as one machine-readable line and as a readable table.
    let line = b.request("metrics");
    assert!(
        line.contains(" events=") && !line.contains('\n'),
        "{line:?}"
    );
    let header = b.request("metrics table");
    let rows: usize = header
        .strip_prefix("TABLE ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not `TABLE <n>`: {header:?}"));
    let table: Vec<String> = (0..rows).map(|_| b.reply("metrics table")).collect();
    assert_eq!(table[0], "core node metrics");
    assert!(
        table.iter().any(|r| r.trim_start().starts_with("received")),
        "{table:#?}"
    );
    assert_eq!(
        b.request("get nothing"),
        "NIL",
        "the table ended where it said"
    );

    assert!(b
        .request("wait-for cart nothex 10")
        .starts_with("ERR bad VERSION"));
    assert!(b
        .request(&format!("wait-for cart {v1} soon"))
        .starts_with("ERR bad TIMEOUT_MS"));
    node.shutdown();
}

/// In-process: the view counts once the done event arrived, also after the entry left the local
/// tier (the listener remembers the newest applied version per key), a superseded version is
/// reached by the newer one, and a version nobody wrote times out with `Error::Timeout` after about
/// the timeout, leaving no waiter behind.
#[test]
fn wait_for_counts_seen_versions_and_times_out_clearly() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let cache = dep.cache::<String>(&unique_name("wait-for-local"));
    let old = cache.set_with_sync("k", "old".into(), None, None).unwrap();
    let outcome = cache
        .set_with_sync_and_wait("k", "new".into(), None, None)
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Applied);
    let newest = cache.local().version_of("k").expect("versioned");
    assert!(newest > old);

    // The entry leaves the local tier; the listener's record still says what it saw.
    assert!(cache.local().invalidate("k"));
    cache
        .wait_for("k", &old, Duration::ZERO)
        .expect("superseded");
    cache.wait_for("k", &newest, Duration::ZERO).expect("seen");

    let never = Version::new(newest.hlc + (60_000 << 16), newest.node);
    let started = Instant::now();
    let err = cache
        .wait_for("k", &never, Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("\"k\""), "{err}");
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(290)..Duration::from_secs(5)).contains(&took),
        "{took:?}"
    );
    // Another key's versions say nothing about this one.
    let err = cache
        .wait_for("other", &old, Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // A timed-out wait leaves no waiter: the bound is not used up.
    for _ in 0..3 {
        cache.wait_for("k", &newest, Duration::ZERO).unwrap();
    }
}
