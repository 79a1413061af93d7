//! Kafka connection settings and the librdkafka defaults distcache depends on.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::{Error, Result};

/// Kafka settings shared by core nodes and state nodes.
///
/// Defaults are chosen for low latency on a small cluster: `acks=all`, no Nagle, `linger.ms=0`
/// for writes, `fetch.wait.max.ms=5` for consumers (brokers that do not wake a parked fetch, such as
/// tansu, deliver a message about half of this after it was produced). Any librdkafka property can
/// be set or overridden with [`KafkaConfig::set`] (SASL, SSL, client.id …). Its `Debug` output
/// hides the values of properties that look secret (`*password*`, `*secret*`, `*key*`,
/// `sasl.oauthbearer.config`).
#[derive(Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Partitions of each topic when distcache creates it (default 8).
    pub partitions: i32,
    /// How long a write waits for the broker's acknowledgement (default 10 s).
    pub produce_timeout: Duration,
    /// Deadline for metadata and admin requests (default 10 s).
    pub request_timeout: Duration,
    /// Longest time the broker may park a fetch (default 5 ms).
    pub fetch_wait_max: Duration,
    /// Extra librdkafka properties, applied last.
    pub extra: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| {
                let secret = is_secret(k);
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("partitions", &self.partitions)
            .field("produce_timeout", &self.produce_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("fetch_wait_max", &self.fetch_wait_max)
            .field("extra", &extra)
            .finish()
    }
}

/// Whether the value of librdkafka property `key` must stay out of logs and `Debug` output: passwords,
/// secrets, private keys and key stores, and `sasl.oauthbearer.config` (it may carry a client secret).
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key", "oauthbearer.config", "jaas"]
        .iter()
        .any(|word| key.contains(word))
}

impl KafkaConfig {
    /// Settings with defaults for `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            partitions: 8,
            produce_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            fetch_wait_max: Duration::from_millis(5),
            extra: Vec::new(),
        }
    }

    /// Sets a librdkafka property, e.g. `("security.protocol", "SASL_SSL")`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(Error::Config("kafka brokers must not be empty".into()));
        }
        if self.partitions < 1 {
            return Err(Error::Config("kafka partitions must be at least 1".into()));
        }
        if self.produce_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::Config("kafka timeouts must be positive".into()));
        }
        Ok(())
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("socket.nagle.disable", "true")
            .set("log_level", "4");
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// Producer settings: every write acknowledged by all in-sync replicas.
    pub(crate) fn producer(&self, linger: Duration) -> ClientConfig {
        let mut c = self.base();
        c.set("acks", "all")
            .set("linger.ms", linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.produce_timeout.as_millis().max(1).to_string(),
            )
            // Bounds the producer's in-memory queue; while it is full a write waits, at most the
            // produce timeout, then fails.
            .set("queue.buffering.max.messages", "100000")
            // One request in flight per broker connection: a lone write still goes at once
            // (linger 0), while writes made during a request's round trip wait for it and go
            // together in the next. Without the bound every write is its own request, and under
            // many concurrent writers the broker spends its CPU on request overhead.
            .set("max.in.flight.requests.per.connection", "1");
        self.finish(c)
    }

    /// Consumer settings; offsets are never committed automatically.
    pub(crate) fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "2000")
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait_max.as_millis().max(1).to_string(),
            )
            .set("enable.partition.eof", "false");
        self.finish(c)
    }

    /// Admin client settings.
    pub(crate) fn admin(&self) -> ClientConfig {
        let c = self.base();
        self.finish(c)
    }
}
