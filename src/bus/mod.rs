//! The Kafka seam: the few verbs the rest of the crate needs from `rdkafka`, blocking only.
//!
//! - [`KafkaConfig`]: brokers, pass-through librdkafka settings, and the defaults we rely on;
//! - [`admin::ensure_topics`]: create the two topics when missing;
//! - [`producer::EventProducer`]: produce and wait for the broker's acknowledgement;
//! - [`consumer`]: a consumer-group consumer with manual commits (state node) and an
//!   all-partitions broadcast consumer starting at the end (core-node listeners);
//! - [`offsets::OffsetTracker`]: holes and regressions in a partition's offsets.

pub(crate) mod admin;
pub(crate) mod config;
pub(crate) mod consumer;
pub(crate) mod errlog;
pub(crate) mod offsets;
pub(crate) mod producer;

pub use config::KafkaConfig;
