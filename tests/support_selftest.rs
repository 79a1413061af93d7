//! Checks the shared test machinery itself (tests/support): /proc CPU times are read right; real
//! redis-server, Apache Kafka and tansu processes start, die, and come back on the same port; child
//! processes talk line by line. Uses no distcache API.

mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::{
    redis_ping, stat_ticks, unique_name, wait_until, Broker, BrokerKind, ChildProcess, RawRecord,
    RedisServer,
};

/// `/proc/*/stat` names may hold spaces and parentheses (librdkafka's thread names do): the
/// ticks are counted from the last `)`. Checked here once for the tests and the benches that
/// include `support/proc_stat.rs`.
#[test]
fn stat_names_may_hold_spaces_and_parentheses() {
    let line = "42 (rdk:broker (1)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15";
    assert_eq!(
        stat_ticks(line),
        Some(("rdk:broker (1)".to_string(), 11 + 12))
    );
    let own = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    assert!(stat_ticks(&own).is_some(), "{own}");
}

#[test]
fn redis_server_starts_dies_and_restarts_on_its_port() {
    let redis = RedisServer::start();
    let port = redis.port();
    assert_ne!(port, 6379, "must never use the machine's own Redis");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert!(redis.is_running());
    assert!(redis_ping(port));

    redis.kill();
    assert!(!redis.is_running());
    let err = TcpStream::connect(("127.0.0.1", port)).expect_err("killed server still accepts");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

    redis.restart();
    assert_eq!(redis.port(), port);
    assert!(redis.is_running());
    assert!(redis_ping(port), "log:\n{}", redis.log_tail(10));
}

#[test]
fn kafka_starts_creates_topics_and_keeps_them_across_a_restart() {
    broker_starts_creates_topics_and_restarts(BrokerKind::Kafka);
}

#[test]
fn tansu_starts_creates_topics_and_restarts_empty() {
    broker_starts_creates_topics_and_restarts(BrokerKind::Tansu);
}

fn broker_starts_creates_topics_and_restarts(kind: BrokerKind) {
    let broker = Broker::start_kind(kind);
    let port = broker.port();
    assert_eq!(broker.bootstrap(), format!("127.0.0.1:{port}"));

    let topic = unique_name("selftest");
    broker.create_topic(&topic, 3);
    assert!(broker.topics().contains(&topic));
    let again = broker.try_create_topic(&topic, 3);
    assert!(again.is_err(), "{kind:?} accepted a duplicate topic");

    let records = [
        RawRecord {
            partition: Some(1),
            ..RawRecord::new("key", "not a distcache envelope")
        },
        RawRecord {
            partition: Some(2),
            key: Some(Vec::new()),
            value: None,
            ..RawRecord::default()
        },
    ];
    broker.produce_raw(&topic, &records);
    let mut read = broker.consume_raw(&topic, 2, Duration::from_secs(10));
    read.sort_by_key(|r| r.partition);
    assert!(read.iter().all(|r| r.offset == Some(0)), "{read:?}");
    for r in &mut read {
        r.offset = None;
    }
    assert_eq!(read, records);

    broker.kill();
    assert!(!broker.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    broker.restart();
    assert_eq!(broker.port(), port);
    if kind.keeps_log_across_restarts() {
        // The log is on disk: the topic and its records are still there.
        assert!(broker.topics().contains(&topic));
        assert_eq!(
            broker.consume_raw(&topic, 2, Duration::from_secs(10)).len(),
            2
        );
    } else {
        assert!(
            !broker.topics().contains(&topic),
            "memory storage keeps nothing"
        );
        broker.create_topic(&topic, 1);
        assert!(broker.topics().contains(&topic));
    }
}

#[test]
fn child_process_lines_and_kill() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo ready; echo oops >&2; while read line; do echo \"got $line\"; done");
    let child = ChildProcess::spawn("sh", cmd);
    assert_eq!(
        child.read_line_timeout(Duration::from_secs(5)).as_deref(),
        Some("ready")
    );
    child.send_line("ping").unwrap();
    assert_eq!(
        child
            .wait_for_line(Duration::from_secs(5), |l| l.starts_with("got"))
            .as_deref(),
        Some("got ping")
    );
    assert_eq!(child.read_line_timeout(Duration::from_millis(50)), None);
    assert!(wait_until(Duration::from_secs(5), || child
        .stderr()
        .contains("oops")));

    child.kill();
    assert!(!child.is_running());
    assert!(child.send_line("after death").is_err() || !child.is_running());
}

#[test]
fn handles_can_be_shared_with_chaos_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RedisServer>();
    send_sync::<Broker>();
    send_sync::<ChildProcess>();
}
