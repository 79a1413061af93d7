//! The opaque handle C holds: a `DistributedCache<Vec<u8>>` behind a pointer, opened by
//! [`distcache_open`], used from any number of threads at once, freed by [`distcache_close`].

use std::ffi::c_char;

use super::status::{guard, Failure, DISTCACHE_NOT_FOUND, DISTCACHE_OK};
use super::{args, buffer, config, DistcacheConfig};
use crate::{Cache, DistributedCache, DistributedMetrics, WriteOutcome};

/// A distributed cache of byte values. Opaque to C; thread-safe (every call takes it by shared
/// reference).
pub struct DistcacheCache {
    cache: DistributedCache<Vec<u8>>,
}

/// `*_and_wait`: the write was applied (it is the newest version of the key).
pub const DISTCACHE_OUTCOME_APPLIED: i32 = 1;
/// `*_and_wait`: a newer write of the key won; this one changed nothing.
pub const DISTCACHE_OUTCOME_SUPERSEDED: i32 = 2;

/// A snapshot of a handle's counters (see the Rust `DistributedMetrics` for each meaning).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DistcacheMetrics {
    /// Local tier: reads answered locally.
    pub local_hits: u64,
    /// Local tier: reads that found nothing locally.
    pub local_misses: u64,
    /// Local tier: entries held now.
    pub local_entries: u64,
    /// Local tier: new keys stored.
    pub local_inserts: u64,
    /// Local tier: existing keys replaced.
    pub local_updates: u64,
    /// Local tier: entries evicted for capacity.
    pub local_evictions: u64,
    /// Local tier: entries dropped at their TTL.
    pub local_expirations: u64,
    /// Local tier: entries removed by deletes and events.
    pub local_invalidations: u64,
    /// Local tier: writes refused because a newer version was held.
    pub local_stale_rejections: u64,
    /// Writes acknowledged by the broker.
    pub writes: u64,
    /// Writes that failed.
    pub write_failures: u64,
    /// Done events of this namespace received.
    pub events: u64,
    /// Done events that changed the local tier.
    pub events_applied: u64,
    /// Done events that changed nothing (older than the local entry).
    pub events_ignored: u64,
    /// Done-topic messages that were not valid events.
    pub malformed: u64,
    /// Done events whose value did not decode.
    pub undecodable: u64,
    /// Times the local tier was cleared because events may have been missed.
    pub resets: u64,
    /// Reads that went to Redis.
    pub redis_reads: u64,
    /// Writes whose done event reached this node (count of the propagation summary).
    pub propagation_count: u64,
    /// Median write-to-done-event time in microseconds.
    pub propagation_p50_us: u64,
    /// 99th percentile write-to-done-event time in microseconds.
    pub propagation_p99_us: u64,
    /// Largest write-to-done-event time in microseconds.
    pub propagation_max_us: u64,
}

impl From<DistributedMetrics> for DistcacheMetrics {
    fn from(m: DistributedMetrics) -> Self {
        let l = m.local;
        DistcacheMetrics {
            local_hits: l.hits,
            local_misses: l.misses,
            local_entries: l.entries,
            local_inserts: l.inserts,
            local_updates: l.updates,
            local_evictions: l.evictions,
            local_expirations: l.expirations,
            local_invalidations: l.invalidations,
            local_stale_rejections: l.stale_rejections,
            writes: m.writes,
            write_failures: m.write_failures,
            events: m.events,
            events_applied: m.events_applied,
            events_ignored: m.events_ignored,
            malformed: m.malformed,
            undecodable: m.undecodable,
            resets: m.resets,
            redis_reads: m.redis_reads,
            propagation_count: m.propagation_us.count,
            propagation_p50_us: m.propagation_us.p50,
            propagation_p99_us: m.propagation_us.p99,
            propagation_max_us: m.propagation_us.max,
        }
    }
}

/// The handle behind `cache`.
///
/// # Safety
/// `cache` is null or a handle from `distcache_open` not yet closed.
unsafe fn handle<'a>(cache: *const DistcacheCache) -> Result<&'a DistcacheCache, Failure> {
    // SAFETY: a non-null pointer is a live handle (caller's guarantee); as_ref checks null.
    unsafe { cache.as_ref() }.ok_or_else(|| Failure::InvalidArgument("cache is null".into()))
}

/// The handle and the key every keyed call takes.
///
/// # Safety
/// As for [`handle`], and `key` is null or a NUL-terminated string.
unsafe fn handle_and_key<'a>(
    cache: *const DistcacheCache,
    key: *const c_char,
) -> Result<(&'a DistributedCache<Vec<u8>>, &'a str), Failure> {
    // SAFETY: the caller's guarantees are passed on.
    let handle = unsafe { handle(cache) }?;
    // SAFETY: as above.
    let key = unsafe { args::text(key, "key") }?;
    Ok((&handle.cache, key))
}

/// Writes a read's result: the value and [`DISTCACHE_OK`], or [`DISTCACHE_NOT_FOUND`] with a
/// null pointer and 0.
fn found(
    value: Option<Vec<u8>>,
    value_out: *mut *mut u8,
    len_out: *mut usize,
) -> Result<i32, Failure> {
    let value_out = args::out(value_out, "value_out")?;
    let len_out = args::out(len_out, "len_out")?;
    let (code, (ptr, len)) = match value {
        Some(v) => (DISTCACHE_OK, buffer::into_raw(v)),
        None => (DISTCACHE_NOT_FOUND, (std::ptr::null_mut(), 0)),
    };
    // SAFETY: both pointers are non-null (checked) and point to writable storage (caller's
    // guarantee).
    unsafe {
        value_out.write(ptr);
        len_out.write(len);
    }
    Ok(code)
}

/// Writes a `*_and_wait` outcome through `outcome_out` when it is not null.
fn outcome(result: crate::Result<WriteOutcome>, outcome_out: *mut i32) -> Result<i32, Failure> {
    let code = match result? {
        WriteOutcome::Applied => DISTCACHE_OUTCOME_APPLIED,
        WriteOutcome::Superseded => DISTCACHE_OUTCOME_SUPERSEDED,
    };
    if !outcome_out.is_null() {
        // SAFETY: non-null, and points to a writable int32_t (caller's guarantee).
        unsafe { outcome_out.write(code) };
    }
    Ok(DISTCACHE_OK)
}

/// Opens a cache (connects to the broker and Redis, subscribes to done events) and stores its
/// handle in `*cache_out`. On failure `*cache_out` is set to null.
///
/// # Safety
/// `config` is null or a valid `DistcacheConfig` whose pointers satisfy its field docs;
/// `cache_out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn distcache_open(
    config: *const DistcacheConfig,
    cache_out: *mut *mut DistcacheCache,
) -> i32 {
    guard(|| {
        let cache_out = args::out(cache_out, "cache_out")?;
        // SAFETY: non-null and writable (checked; caller's guarantee).
        unsafe { cache_out.write(std::ptr::null_mut()) };
        // SAFETY: a non-null config is valid (caller's guarantee); as_ref checks null.
        let config = unsafe { config.as_ref() }
            .ok_or_else(|| Failure::InvalidArgument("config is null".into()))?;
        // SAFETY: the config's pointers satisfy its field docs (caller's guarantee).
        let cache = unsafe { config::builder(config) }?.build()?;
        let handle = Box::into_raw(Box::new(DistcacheCache { cache }));
        // SAFETY: as above.
        unsafe { cache_out.write(handle) };
        Ok(DISTCACHE_OK)
    })
}

/// Closes a cache: stops its listener thread and frees the handle. Null is a no-op. No other
/// thread may use the handle during or after this call.
///
/// # Safety
/// `cache` is null or a handle from `distcache_open` not closed before.
#[no_mangle]
pub unsafe extern "C" fn distcache_close(cache: *mut DistcacheCache) {
    guard(|| {
        if !cache.is_null() {
            // SAFETY: a live handle made by Box::into_raw in distcache_open, passed back once.
            drop(unsafe { Box::from_raw(cache) });
        }
        Ok(DISTCACHE_OK)
    });
}

/// Stores `value` in this node's local tier and, through the broker, every node's; Redis keeps
/// its value (`set` in the Rust API). `ttl_ms` 0: the local default.
///
/// # Safety
/// `cache` as for every call (a live handle or null), `key` a NUL-terminated string or null,
/// `value` null or `value_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn distcache_set(
    cache: *const DistcacheCache,
    key: *const c_char,
    value: *const u8,
    value_len: usize,
    ttl_ms: u64,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantees are passed on.
        let (cache, key) = unsafe { handle_and_key(cache, key) }?;
        // SAFETY: as above.
        let value = unsafe { args::bytes(value, value_len, "value") }?;
        cache.set(key, value.to_vec(), args::ttl(ttl_ms))?;
        Ok(DISTCACHE_OK)
    })
}

/// Stores `value` locally at once and in Redis and every node once the state node applied it
/// (`set_with_sync`). TTLs 0: none/default; a remote TTL shorter than the local one is
/// `DISTCACHE_ERR_REJECTED`.
///
/// # Safety
/// As for [`distcache_set`].
#[no_mangle]
pub unsafe extern "C" fn distcache_set_sync(
    cache: *const DistcacheCache,
    key: *const c_char,
    value: *const u8,
    value_len: usize,
    local_ttl_ms: u64,
    remote_ttl_ms: u64,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantees are passed on.
        let (cache, key) = unsafe { handle_and_key(cache, key) }?;
        // SAFETY: as above.
        let value = unsafe { args::bytes(value, value_len, "value") }?;
        cache.set_with_sync(
            key,
            value.to_vec(),
            args::ttl(local_ttl_ms),
            args::ttl(remote_ttl_ms),
        )?;
        Ok(DISTCACHE_OK)
    })
}

/// Like [`distcache_set`], then waits for the state node's verdict; `*outcome_out` (when not
/// null) becomes `DISTCACHE_OUTCOME_APPLIED` or `DISTCACHE_OUTCOME_SUPERSEDED`.
///
/// # Safety
/// As for [`distcache_set`]; `outcome_out` null or writable.
#[no_mangle]
pub unsafe extern "C" fn distcache_set_and_wait(
    cache: *const DistcacheCache,
    key: *const c_char,
    value: *const u8,
    value_len: usize,
    ttl_ms: u64,
    outcome_out: *mut i32,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantees are passed on.
        let (cache, key) = unsafe { handle_and_key(cache, key) }?;
        // SAFETY: as above.
        let value = unsafe { args::bytes(value, value_len, "value") }?;
        outcome(
            cache.set_and_wait(key, value.to_vec(), args::ttl(ttl_ms)),
            outcome_out,
        )
    })
}

/// Like [`distcache_set_sync`], then waits for the state node's verdict (see
/// [`distcache_set_and_wait`]).
///
/// # Safety
/// As for [`distcache_set_and_wait`].
#[no_mangle]
pub unsafe extern "C" fn distcache_set_sync_and_wait(
    cache: *const DistcacheCache,
    key: *const c_char,
    value: *const u8,
    value_len: usize,
    local_ttl_ms: u64,
    remote_ttl_ms: u64,
    outcome_out: *mut i32,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantees are passed on.
        let (cache, key) = unsafe { handle_and_key(cache, key) }?;
        // SAFETY: as above.
        let value = unsafe { args::bytes(value, value_len, "value") }?;
        outcome(
            cache.set_with_sync_and_wait(
                key,
                value.to_vec(),
                args::ttl(local_ttl_ms),
                args::ttl(remote_ttl_ms),
            ),
            outcome_out,
        )
    })
}

/// Reads the local tier only. `DISTCACHE_OK` with a buffer the caller frees with
/// `distcache_buffer_free(*value_out, *len_out)` (null and 0 for an empty value), or
/// `DISTCACHE_NOT_FOUND` with null and 0.
///
/// # Safety
/// `cache` and `key` as for [`distcache_set`]; `value_out` and `len_out` writable or null.
#[no_mangle]
pub unsafe extern "C" fn distcache_get(
    cache: *const DistcacheCache,
    key: *const c_char,
    value_out: *mut *mut u8,
    len_out: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantees are passed on.
        let (cache, key) = unsafe { handle_and_key(cache, key) }?;
        found(cache.get(key)?, value_out, len_out)
    })
}

/// Reads local, then Redis on a local miss (filling the local tier for `local_ttl_ms`, 0: the
/// default); results as for [`distcache_get`].
///
/// # Safety
/// As for [`distcache_get`].
#[no_mangle]
pub unsafe extern "C" fn distcache_get_sync(
    cache: *const DistcacheCache,
    key: *const c_char,
    local_ttl_ms: u64,
    value_out: *mut *mut u8,
    len_out: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantees are passed on.
        let (cache, key) = unsafe { handle_and_key(cache, key) }?;
        found(
            cache.get_with_sync(key, args::ttl(local_ttl_ms))?,
            value_out,
            len_out,
        )
    })
}

/// Removes `key` from every node's local tier; Redis keeps its value (`delete`).
///
/// # Safety
/// `cache` and `key` as for [`distcache_set`].
#[no_mangle]
pub unsafe extern "C" fn distcache_delete(cache: *const DistcacheCache, key: *const c_char) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantees are passed on.
        let (cache, key) = unsafe { handle_and_key(cache, key) }?;
        cache.delete(key)?;
        Ok(DISTCACHE_OK)
    })
}

/// Removes `key` locally at once, and from Redis and every node once applied (`delete_with_sync`).
///
/// # Safety
/// As for [`distcache_delete`].
#[no_mangle]
pub unsafe extern "C" fn distcache_delete_sync(
    cache: *const DistcacheCache,
    key: *const c_char,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantees are passed on.
        let (cache, key) = unsafe { handle_and_key(cache, key) }?;
        cache.delete_with_sync(key)?;
        Ok(DISTCACHE_OK)
    })
}

/// Like [`distcache_delete_sync`], then waits for the state node's verdict (see
/// [`distcache_set_and_wait`]).
///
/// # Safety
/// As for [`distcache_delete`]; `outcome_out` null or writable.
#[no_mangle]
pub unsafe extern "C" fn distcache_delete_sync_and_wait(
    cache: *const DistcacheCache,
    key: *const c_char,
    outcome_out: *mut i32,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantees are passed on.
        let (cache, key) = unsafe { handle_and_key(cache, key) }?;
        outcome(cache.delete_with_sync_and_wait(key), outcome_out)
    })
}

/// Copies a snapshot of the handle's counters into `*metrics_out`.
///
/// # Safety
/// `cache` as for [`distcache_set`]; `metrics_out` null or writable.
#[no_mangle]
pub unsafe extern "C" fn distcache_metrics(
    cache: *const DistcacheCache,
    metrics_out: *mut DistcacheMetrics,
) -> i32 {
    guard(|| {
        // SAFETY: the caller's guarantee is passed on.
        let handle = unsafe { handle(cache) }?;
        let metrics_out = args::out(metrics_out, "metrics_out")?;
        let metrics = DistcacheMetrics::from(handle.cache.metrics());
        // SAFETY: non-null (checked) and writable (caller's guarantee).
        unsafe { metrics_out.write(metrics) };
        Ok(DISTCACHE_OK)
    })
}
