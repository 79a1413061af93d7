//! `DistcacheConfig`: what `distcache_open` needs, as a plain C struct. Zero (or null) means
//! "the library's default" for every optional field, so `DistcacheConfig config = {0};` and the
//! two required strings are a valid configuration.

use std::ffi::c_char;
use std::time::Duration;

use super::args;
use super::status::Failure;
use crate::{Codec, DistributedCache, DistributedCacheBuilder};

/// The configuration `distcache_open` reads. Strings are NUL-terminated UTF-8 and only read
/// during the call.
#[repr(C)]
#[derive(Debug)]
pub struct DistcacheConfig {
    /// Kafka bootstrap servers, `host:port[,host:port…]`. Required.
    pub brokers: *const c_char,
    /// Redis URL (`redis://host:port/db`). Required.
    pub redis_url: *const c_char,
    /// The cache namespace every node sharing values uses. Required.
    pub namespace_name: *const c_char,
    /// Redis key prefix (must match the state node's); null for the default.
    pub key_prefix: *const c_char,
    /// Local tier capacity in entries; 0 for the default.
    pub local_capacity: u64,
    /// Default TTL of local entries in milliseconds; 0 for none.
    pub local_ttl_ms: u64,
    /// How long the `*_and_wait` calls wait for the state node, in milliseconds; 0 for the default.
    pub wait_timeout_ms: u64,
    /// The node id stamped into versions; 0 for a random one.
    pub node_id: u64,
    /// Extra librdkafka settings: `kafka_settings_len` keys…
    pub kafka_setting_keys: *const *const c_char,
    /// …and as many values (`security.protocol` → `SASL_SSL`, …).
    pub kafka_setting_values: *const *const c_char,
    /// Number of entries in `kafka_setting_keys` and `kafka_setting_values`.
    pub kafka_settings_len: usize,
}

/// A builder configured from `config`.
///
/// # Safety
/// Every non-null string pointer in `config` points to a NUL-terminated string, and both setting
/// arrays hold `kafka_settings_len` such pointers when that is non-zero.
pub(super) unsafe fn builder(
    config: &DistcacheConfig,
) -> Result<DistributedCacheBuilder<Vec<u8>>, Failure> {
    // SAFETY (this and the calls below): the caller's guarantee covers each string read here.
    let brokers = unsafe { args::text(config.brokers, "config.brokers") }?;
    // SAFETY: as above.
    let redis_url = unsafe { args::text(config.redis_url, "config.redis_url") }?;
    // SAFETY: as above.
    let namespace = unsafe { args::text(config.namespace_name, "config.namespace_name") }?;
    let mut builder = DistributedCache::<Vec<u8>>::builder()
        .kafka_brokers(brokers)
        .redis_url(redis_url)
        .namespace(namespace)
        .codec(Codec::Raw);
    // SAFETY: as above.
    if let Some(prefix) = unsafe { args::optional_text(config.key_prefix, "config.key_prefix") }? {
        builder = builder.key_prefix(prefix);
    }
    if config.local_capacity > 0 {
        let capacity = usize::try_from(config.local_capacity).map_err(|_| {
            Failure::InvalidArgument(format!(
                "config.local_capacity {} does not fit this platform",
                config.local_capacity
            ))
        })?;
        builder = builder.local_capacity(capacity);
    }
    if let Some(ttl) = args::ttl(config.local_ttl_ms) {
        builder = builder.local_ttl(ttl);
    }
    if config.wait_timeout_ms > 0 {
        builder = builder.wait_timeout(Duration::from_millis(config.wait_timeout_ms));
    }
    if config.node_id > 0 {
        builder = builder.node_id(config.node_id);
    }
    // SAFETY: as above.
    for (key, value) in unsafe { kafka_settings(config) }? {
        builder = builder.kafka_config(key, value);
    }
    Ok(builder)
}

/// The extra librdkafka settings as pairs.
///
/// # Safety
/// As for [`builder`].
unsafe fn kafka_settings(config: &DistcacheConfig) -> Result<Vec<(&str, &str)>, Failure> {
    let len = config.kafka_settings_len;
    if len == 0 {
        return Ok(Vec::new());
    }
    if config.kafka_setting_keys.is_null() || config.kafka_setting_values.is_null() {
        return Err(Failure::InvalidArgument(format!(
            "config.kafka_settings_len is {len} but a setting array is null"
        )));
    }
    (0..len)
        .map(|i| {
            // SAFETY: both arrays hold `len` pointers (caller's guarantee) and i < len.
            let (key, value) = unsafe {
                (
                    *config.kafka_setting_keys.add(i),
                    *config.kafka_setting_values.add(i),
                )
            };
            // SAFETY: each entry is a NUL-terminated string or null (caller's guarantee).
            let key = unsafe { args::text(key, &format!("config.kafka_setting_keys[{i}]")) }?;
            // SAFETY: as above.
            let value = unsafe { args::text(value, &format!("config.kafka_setting_values[{i}]")) }?;
            Ok((key, value))
        })
        .collect()
}
