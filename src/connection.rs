//! Where a node finds the broker and Redis, and the Redis key prefix: the settings both node
//! builders share, as one type ([`Connection`]) with one validation, and one set of setters
//! ([`connection_setters!`]), so the core node's and the state node's builders cannot drift apart.

use crate::bus::KafkaConfig;
use crate::redis_store::{RedisConfig, DEFAULT_KEY_PREFIX};
use crate::{Error, Result};

/// The broker, Redis and key-prefix settings of a node builder (its `connection` field).
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
    pub key_prefix: String,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            kafka: KafkaConfig::new(""),
            redis: RedisConfig::new(""),
            key_prefix: DEFAULT_KEY_PREFIX.into(),
        }
    }
}

impl Connection {
    /// Both services are named and their settings valid ([`Error::Config`] otherwise).
    pub(crate) fn validate(&self) -> Result<()> {
        self.kafka.validate()?;
        if self.redis.url.is_empty() {
            return Err(Error::Config("a redis url is required".into()));
        }
        self.redis.validate()
    }
}

/// Expands to the shared setters inside an `impl` block of a builder with a `connection: Connection`
/// field.
/// `$peers` names the other kind of node, for the docs ("must match the state nodes'").
macro_rules! connection_setters {
    ($peers:literal) => {
        /// Kafka bootstrap servers, `host:port[,…]` (required).
        pub fn kafka_brokers(mut self, brokers: impl Into<String>) -> Self {
            self.connection.kafka.brokers = brokers.into();
            self
        }

        /// Replaces all Kafka settings.
        pub fn kafka(mut self, config: $crate::KafkaConfig) -> Self {
            self.connection.kafka = config;
            self
        }

        /// Passes a librdkafka property through (SASL, SSL, `fetch.wait.max.ms` …). A property
        /// librdkafka refuses is [`Error::Config`](crate::Error::Config) when the node starts.
        pub fn kafka_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.connection.kafka = self.connection.kafka.set(key, value);
            self
        }

        /// How long a produce waits for the broker's acknowledgement before it fails (default
        /// 10 s; librdkafka's `message.timeout.ms`). With the broker down, a write returns an
        /// error after about this long and changes nothing locally.
        pub fn produce_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.connection.kafka.produce_timeout = timeout;
            self
        }

        /// Redis URL (required): `redis://[user[:password]@]host:port[/db]`, or `rediss://`
        /// with the `tls` feature.
        pub fn redis_url(mut self, url: impl Into<String>) -> Self {
            self.connection.redis.url = url.into();
            self
        }

        /// Deadlines for opening a Redis connection (default 1 s) and for one request/response
        /// (default 2 s): how long a call waits for an unreachable or hung Redis before it
        /// fails with [`Error::Unavailable`](crate::Error::Unavailable) or
        /// [`Error::Timeout`](crate::Error::Timeout). Both must be positive.
        pub fn redis_timeouts(
            mut self,
            connect: std::time::Duration,
            io: std::time::Duration,
        ) -> Self {
            self.connection.redis.connect_timeout = connect;
            self.connection.redis.io_timeout = io;
            self
        }

        /// Talk to a Redis Cluster: the Redis URL is then a comma-separated list of seed nodes.
        pub fn redis_cluster(mut self, on: bool) -> Self {
            self.connection.redis.cluster = on;
            self
        }

        /// Replaces all Redis settings.
        pub fn redis(mut self, config: $crate::RedisConfig) -> Self {
            self.connection.redis = config;
            self
        }

        #[doc = concat!("Redis key prefix (default `\"distcache:\"`); must match the ", $peers, "'. ")]
        /// Entries live at [`redis_entry_key`](crate::redis_entry_key)`(prefix, namespace, key)`:
        /// `prefix + namespace + ":" + key`, with `%` and `:` in the namespace escaped as
        /// `%25`/`%3A`.
        pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
            self.connection.key_prefix = prefix.into();
            self
        }
    };
}

pub(crate) use connection_setters;
