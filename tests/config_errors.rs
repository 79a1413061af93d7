//! Wrong configuration and unreachable servers give clear errors, quickly: never a panic or a hang.

mod support;

use std::time::{Duration, Instant};

use distcache::{Cache, DistributedCache, Error, KafkaConfig, StateNode};
use support::{free_port, unique_name, Broker, RedisServer};

/// Generous on a loaded machine, far below "hangs".
const QUICK: Duration = Duration::from_secs(8);

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

#[test]
fn missing_or_invalid_settings_are_config_errors() {
    let built = DistributedCache::<String>::builder()
        .redis_url("redis://127.0.0.1:1/")
        .build();
    assert!(matches!(built, Err(Error::Config(_))), "{built:?}");

    let built = DistributedCache::<String>::builder()
        .kafka_brokers("127.0.0.1:1")
        .build();
    assert!(matches!(built, Err(Error::Config(_))), "{built:?}");

    let built = DistributedCache::<String>::builder()
        .kafka_brokers("127.0.0.1:1")
        .redis_url("redis://127.0.0.1:1/")
        .namespace("bad\x1fnamespace")
        .build();
    assert!(matches!(built, Err(Error::Config(_))), "{built:?}");

    let built = DistributedCache::<String>::builder()
        .kafka_brokers("127.0.0.1:1")
        .redis_url("not a url")
        .namespace(unique_name("cfg"))
        .build();
    assert!(matches!(built, Err(Error::Config(_))), "{built:?}");

    let started = StateNode::builder().kafka_brokers("127.0.0.1:1").start();
    assert!(matches!(started, Err(Error::Config(_))), "{started:?}");
    let started = StateNode::builder()
        .kafka_brokers("127.0.0.1:1")
        .redis_url("redis://127.0.0.1:1/")
        .max_batch(0)
        .start();
    assert!(matches!(started, Err(Error::Config(_))), "{started:?}");
}

#[test]
fn unreachable_redis_is_unavailable_quickly() {
    let dead = format!("redis://127.0.0.1:{}/", free_port());
    let (built, took) = timed(|| {
        DistributedCache::<String>::builder()
            .kafka_brokers("127.0.0.1:1")
            .redis_url(&dead)
            .namespace(unique_name("dead-redis"))
            .build()
    });
    assert!(
        matches!(
            built,
            Err(Error::Unavailable {
                service: "redis",
                ..
            })
        ),
        "{built:?}"
    );
    assert!(took < QUICK, "took {took:?}");

    let (started, took) = timed(|| {
        StateNode::builder()
            .kafka_brokers("127.0.0.1:1")
            .redis_url(&dead)
            .start()
    });
    assert!(
        matches!(
            started,
            Err(Error::Unavailable {
                service: "redis",
                ..
            })
        ),
        "{started:?}"
    );
    assert!(took < QUICK, "took {took:?}");
}

#[test]
fn unreachable_broker_fails_within_the_request_timeout() {
    let brokers = format!("127.0.0.1:{}", free_port());
    kafka_is_unavailable_to_both_nodes(&brokers, Duration::from_secs(2), QUICK);
}

#[test]
fn an_unresolvable_broker_host_is_unavailable_within_the_request_timeout() {
    // A name lookup that fails can take longer than a refused connection.
    let within = Duration::from_secs(15);
    kafka_is_unavailable_to_both_nodes(
        "no-such-broker.invalid:9092",
        Duration::from_secs(3),
        within,
    );
}

/// Building a core node and starting a state node against `brokers` both fail with
/// `Unavailable { service: "kafka" }`, each in less than `within`.
fn kafka_is_unavailable_to_both_nodes(brokers: &str, request_timeout: Duration, within: Duration) {
    let redis = RedisServer::start();
    let mut kafka = KafkaConfig::new(brokers);
    kafka.request_timeout = request_timeout;
    let (built, took) = timed(|| {
        DistributedCache::<String>::builder()
            .kafka(kafka.clone())
            .redis_url(redis.url())
            .namespace(unique_name("dead-broker"))
            .build()
    });
    assert!(
        matches!(
            built,
            Err(Error::Unavailable {
                service: "kafka",
                ..
            })
        ),
        "{built:?}"
    );
    assert!(took < within, "took {took:?}");

    let (started, took) = timed(|| {
        StateNode::builder()
            .kafka(kafka)
            .redis_url(redis.url())
            .start()
    });
    assert!(
        matches!(
            started,
            Err(Error::Unavailable {
                service: "kafka",
                ..
            })
        ),
        "{started:?}"
    );
    assert!(took < within, "took {took:?}");
}

#[test]
fn writes_fail_cleanly_when_the_broker_goes_away_and_change_nothing() {
    let redis = RedisServer::start();
    let broker = Broker::start();
    let mut kafka = KafkaConfig::new(broker.bootstrap());
    kafka.produce_timeout = Duration::from_secs(2);
    let cache = DistributedCache::<String>::builder()
        .kafka(kafka)
        .redis_url(redis.url())
        .namespace(unique_name("broker-gone"))
        .build()
        .expect("build");

    cache
        .set("before", "ok".into(), None)
        .expect("write while up");
    assert_eq!(cache.get("before").unwrap().as_deref(), Some("ok"));

    // Invalid TTLs are refused before anything is produced.
    let refused = cache.set_with_sync(
        "ttl",
        "x".into(),
        Some(Duration::from_secs(10)),
        Some(Duration::from_secs(1)),
    );
    assert!(matches!(refused, Err(Error::Rejected(_))), "{refused:?}");
    assert_eq!(cache.get("ttl").unwrap(), None);

    broker.kill();
    let (written, took) = timed(|| cache.set("after", "lost".into(), None));
    assert!(
        matches!(
            written,
            Err(Error::Unavailable { .. } | Error::Timeout { .. })
        ),
        "{written:?}"
    );
    assert!(took < QUICK, "took {took:?}");
    assert_eq!(
        cache.get("after").unwrap(),
        None,
        "a failed write must not change the local cache"
    );
    assert_eq!(cache.metrics().write_failures, 1);
}
