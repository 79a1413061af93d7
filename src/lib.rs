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
mod connection;
mod distributed;
mod error;
pub mod event;
#[cfg(feature = "ffi")]
pub mod ffi;
// The root re-exports what users need of these two; the module paths stay for compatibility.
#[doc(hidden)]
pub mod local;
mod metrics;
mod metrics_server;
mod prometheus;
mod redis_store;
mod state_node;
#[doc(hidden)]
pub mod version;

pub use bus::KafkaConfig;
pub use cache::Cache;
pub use codec::Codec;
pub use distributed::{
    default_namespace, DistributedCache, DistributedCacheBuilder, DistributedMetrics, LocalView,
    WriteOutcome,
};
pub use error::{BoxError, Error, Result};
pub use local::{LocalCache, LocalCacheBuilder, LocalMetrics};
pub use metrics::Summary;
pub use metrics_server::{Health, MetricsServer, MetricsSource};
pub use prometheus::Exposition;
pub use redis_store::{
    redis_entry_key, redis_namespace_prefix, RedisCache, RedisCacheBuilder, RedisConfig,
    DEFAULT_KEY_PREFIX,
};
pub use state_node::{
    StateNode, StateNodeBuilder, StateNodeMetrics, StateNodeMonitor, DEFAULT_MAX_INTAKE_BYTES,
};
/// The hybrid logical clock that stamps versions (tests and tools stamp their own writes with it).
#[doc(hidden)]
pub use version::HybridClock;
pub use version::{Version, DEFAULT_MAX_CLOCK_SKEW};

/// What `benches/pipeline/` measures the state node against (its Redis ceiling runs the very
/// script the state node runs). Not part of the API.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::redis_store::{APPLY_SCRIPT, KEYS_PER_CALL};
}
