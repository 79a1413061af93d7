//! # distcache
//!
//! A blocking two-tier distributed cache: a fast in-process LRU cache on every node ([`LocalCache`]),
//! Redis as the shared store ([`RedisCache`]), and Kafka as the ordered log that keeps them consistent
//! ([`DistributedCache`] on every application node, [`StateNode`] applying writes to Redis).
//!
//! No async runtime: every call blocks the calling thread, and the threads the library owns are
//! bounded, named and joined on shutdown.
#![warn(missing_docs)]

mod bus;
mod cache;
mod codec;
mod connection_setters;
mod distributed;
mod error;
pub mod event;
#[cfg(feature = "ffi")]
pub mod ffi;
pub mod local;
mod metrics;
mod redis_store;
mod state_node;
pub mod version;

pub use bus::KafkaConfig;
pub use cache::Cache;
pub use codec::Codec;
pub use distributed::{
    default_namespace, DistributedCache, DistributedCacheBuilder, DistributedMetrics, WriteOutcome,
};
pub use error::{BoxError, Error, Result};
pub use local::{LocalCache, LocalCacheBuilder, LocalMetrics};
pub use metrics::Summary;
pub use redis_store::{
    redis_entry_key, redis_namespace_prefix, RedisCache, RedisCacheBuilder, RedisConfig,
    DEFAULT_KEY_PREFIX,
};
pub use state_node::{StateNode, StateNodeBuilder, StateNodeMetrics, DEFAULT_MAX_INTAKE_BYTES};
pub use version::{HybridClock, Version};

/// What `benches/pipeline.rs` measures the state node against (its Redis ceiling runs the very
/// script the state node runs). Not part of the API.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::redis_store::{APPLY_SCRIPT, KEYS_PER_CALL};
}
