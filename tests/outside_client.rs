//! An outside Kafka client reads distcache's done topic: `examples/python/done_events.py` consumes it with
//! kafka-python (no code shared with distcache) and decodes every envelope from the README's "Wire format"
//! table alone. Runs against Apache Kafka by default (`DISTCACHE_TEST_BROKER=tansu` for tansu).

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distcache::event::TOPIC_DONE;
use distcache::WriteOutcome;
use serde_json::Value;
use support::{python3, run_with_timeout, Deployment};

/// Runs the example decoder against the deployment's broker until it printed `count` records.
fn read_done_topic(dep: &Deployment, count: usize) -> Vec<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/done_events.py"
    );
    let mut cmd = python3();
    cmd.arg(script)
        .args(["--brokers", &dep.broker.bootstrap()])
        .args(["--topic", TOPIC_DONE])
        .args(["--count", &count.to_string(), "--timeout", "60"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("done_events.py: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn kafka_python_decodes_done_events_from_the_documented_envelope() {
    let dep = Deployment::start();
    let _node = dep.state_node();
    let ns = support::unique_name("outside");
    let cache = dep.cache::<String>(&ns);
    let remote_ttl = Duration::from_secs(120);
    let local_ttl = Duration::from_secs(60);
    assert_eq!(
        cache
            .set_with_sync_and_wait(
                "greeting",
                "hello".into(),
                Some(local_ttl),
                Some(remote_ttl)
            )
            .expect("set"),
        WriteOutcome::Applied
    );
    assert_eq!(
        cache.delete_with_sync_and_wait("greeting").expect("delete"),
        WriteOutcome::Applied
    );

    let events = read_done_topic(&dep, 2);
    assert_eq!(events.len(), 2, "{events:?}");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for e in &events {
        assert!(e.get("error").is_none(), "not a valid envelope: {e}");
        assert_eq!(e["namespace"], ns.as_str(), "{e}");
        assert_eq!(e["key"], "greeting", "{e}");
        assert_eq!(
            e["message_key_ok"], true,
            "Kafka key = namespace \\x1f key: {e}"
        );
        // The writer's version: 48 bits of wall-clock milliseconds and a 16-bit counter, and its node.
        let hlc = e["version"]["hlc"].as_u64().expect("hlc");
        assert!(
            (hlc >> 16).abs_diff(now_ms) < 600_000,
            "hlc {hlc:#x} vs now {now_ms}"
        );
        assert_eq!(e["version"]["node"], e["origin"], "{e}");
    }
    // Both writes sit on one partition (one key), in write order.
    assert_eq!(events[0]["partition"], events[1]["partition"]);
    let (set, delete) = (&events[0], &events[1]);
    assert_eq!(set["op"], "set", "{set}");
    let value = set["value_hex"].as_str().expect("a set carries its value");
    assert_eq!(value, hex(br#""hello""#), "JSON-encoded value: {set}");
    assert_eq!(set["remote_ttl_ms"], 120_000);
    assert_eq!(set["local_ttl_ms"], 60_000);
    for flag in ["remote_ttl", "local_ttl", "value_present", "write_redis"] {
        assert!(
            set["flags"]
                .as_array()
                .expect("flags")
                .iter()
                .any(|f| f == flag),
            "{flag} in {set}"
        );
    }
    assert_eq!(delete["op"], "delete", "{delete}");
    assert!(
        delete["value_hex"].is_null(),
        "a delete carries no value: {delete}"
    );
    assert!(
        delete["version"]["hlc"].as_u64() > set["version"]["hlc"].as_u64(),
        "the delete is newer: {set} {delete}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
