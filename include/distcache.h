/*
 * distcache.h: the C API of distcache, a blocking two-tier distributed cache (an in-process LRU on
 * every node, Redis as the shared store, Kafka as the ordered log). Values are byte strings.
 *
 * Hand-written; tests/ffi.rs checks every prototype, constant and struct here against src/ffi.
 * Build the library with `cargo rustc --lib --release --features ffi --crate-type cdylib,staticlib`
 * (target/release/libdistcache.so and libdistcache.a).
 *
 * Rules:
 * - Every call returns DISTCACHE_OK (0), DISTCACHE_NOT_FOUND (1, reads only) or a negative
 *   DISTCACHE_ERR_* code; after a negative code distcache_last_error_message() says why.
 * - Strings (keys, configuration) are NUL-terminated UTF-8, read only during the call.
 * - A value returned by distcache_get or distcache_get_sync belongs to the caller, who frees it
 *   with distcache_buffer_free(data, len). Nothing else the library returns is freed by the caller.
 * - A DistcacheCache is thread-safe: any number of threads may call it at once, except
 *   distcache_close, which must be the last call on it.
 * - TTLs are milliseconds; 0 means none (or the configured default).
 * - No call lets a panic or exception cross into C.
 */
#ifndef DISTCACHE_H
#define DISTCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes. */
#define DISTCACHE_OK 0
#define DISTCACHE_NOT_FOUND 1
#define DISTCACHE_ERR_INVALID_ARGUMENT (-1) /* null pointer, string not UTF-8, impossible length */
#define DISTCACHE_ERR_UNAVAILABLE (-2)      /* Redis or the broker unreachable; retry later */
#define DISTCACHE_ERR_TIMEOUT (-3)          /* deadline passed; the operation may still complete */
#define DISTCACHE_ERR_CODEC (-4)            /* a value or event could not be encoded or decoded */
#define DISTCACHE_ERR_CONFIG (-5)           /* invalid configuration */
#define DISTCACHE_ERR_REJECTED (-6)         /* refused (e.g. remote TTL shorter than local TTL) */
#define DISTCACHE_ERR_SHUTDOWN (-7)         /* the cache has been shut down */
#define DISTCACHE_ERR_PANIC (-8)            /* internal error (a bug in the library) */

/* Outcomes of the *_and_wait calls. */
#define DISTCACHE_OUTCOME_APPLIED 1    /* the write is the newest version of the key */
#define DISTCACHE_OUTCOME_SUPERSEDED 2 /* a newer write of the key won; this one changed nothing */

/* An open cache. Opaque. */
typedef struct DistcacheCache DistcacheCache;

/* What distcache_open reads. Zero / NULL means the default for every optional field, so
 * `DistcacheConfig config = {0};` plus the three required strings is a valid configuration. */
typedef struct DistcacheConfig {
    const char *brokers;        /* Kafka bootstrap servers "host:port[,host:port]" (required) */
    const char *redis_url;      /* "redis://host:port/db" (required) */
    const char *namespace_name; /* namespace shared by every node of this cache (required) */
    const char *key_prefix;     /* Redis key prefix, must match the state node's; NULL: default */
    uint64_t local_capacity;    /* local tier capacity in entries; 0: default */
    uint64_t local_ttl_ms;      /* default TTL of local entries; 0: none */
    uint64_t wait_timeout_ms;   /* how long *_and_wait waits for the state node; 0: default */
    uint64_t node_id;           /* id stamped into versions; 0: random */
    const char *const *kafka_setting_keys;   /* extra librdkafka settings: keys... */
    const char *const *kafka_setting_values; /* ...and values */
    size_t kafka_settings_len;               /* entries in each of the two arrays */
} DistcacheConfig;

/* A snapshot of a cache's counters. */
typedef struct DistcacheMetrics {
    uint64_t local_hits;
    uint64_t local_misses;
    uint64_t local_entries;
    uint64_t local_inserts;
    uint64_t local_updates;
    uint64_t local_evictions;
    uint64_t local_expirations;
    uint64_t local_invalidations;
    uint64_t local_stale_rejections;
    uint64_t writes;
    uint64_t write_failures;
    uint64_t events;
    uint64_t events_applied;
    uint64_t events_ignored;
    uint64_t malformed;
    uint64_t undecodable;
    uint64_t resets;
    uint64_t redis_reads;
    uint64_t propagation_count;
    uint64_t propagation_p50_us;
    uint64_t propagation_p99_us;
    uint64_t propagation_max_us;
} DistcacheMetrics;

/* Opens a cache; *cache_out is the handle, or NULL on failure. */
int32_t distcache_open(const DistcacheConfig *config, DistcacheCache **cache_out);

/* Stops the cache's thread and frees the handle. NULL is a no-op. Must be the last call on it. */
void distcache_close(DistcacheCache *cache);

/* Local tiers only (this node at once, every node through the broker); Redis keeps its value. */
int32_t distcache_set(const DistcacheCache *cache, const char *key, const uint8_t *value,
                      size_t value_len, uint64_t ttl_ms);

/* Local tier at once; Redis and every node once the state node applied it. */
int32_t distcache_set_sync(const DistcacheCache *cache, const char *key, const uint8_t *value,
                           size_t value_len, uint64_t local_ttl_ms, uint64_t remote_ttl_ms);

/* distcache_set, then wait for the state node; *outcome_out (if not NULL) is a DISTCACHE_OUTCOME_*. */
int32_t distcache_set_and_wait(const DistcacheCache *cache, const char *key, const uint8_t *value,
                               size_t value_len, uint64_t ttl_ms, int32_t *outcome_out);

/* distcache_set_sync, then wait for the state node (as distcache_set_and_wait). */
int32_t distcache_set_sync_and_wait(const DistcacheCache *cache, const char *key,
                                    const uint8_t *value, size_t value_len, uint64_t local_ttl_ms,
                                    uint64_t remote_ttl_ms, int32_t *outcome_out);

/* Local tier only. DISTCACHE_OK: *value_out and *len_out hold a buffer to free with
 * distcache_buffer_free (NULL and 0 for an empty value); DISTCACHE_NOT_FOUND: NULL and 0. */
int32_t distcache_get(const DistcacheCache *cache, const char *key, uint8_t **value_out,
                      size_t *len_out);

/* Local tier, then Redis on a miss (filling the local tier for local_ttl_ms); as distcache_get. */
int32_t distcache_get_sync(const DistcacheCache *cache, const char *key, uint64_t local_ttl_ms,
                           uint8_t **value_out, size_t *len_out);

/* Removes the key from every node's local tier; Redis keeps its value. */
int32_t distcache_delete(const DistcacheCache *cache, const char *key);

/* Removes the key locally at once, from Redis and every node once applied. */
int32_t distcache_delete_sync(const DistcacheCache *cache, const char *key);

/* distcache_delete_sync, then wait for the state node (as distcache_set_and_wait). */
int32_t distcache_delete_sync_and_wait(const DistcacheCache *cache, const char *key,
                                       int32_t *outcome_out);

/* Copies a snapshot of the cache's counters into *metrics_out. */
int32_t distcache_metrics(const DistcacheCache *cache, DistcacheMetrics *metrics_out);

/* Frees a value returned by distcache_get or distcache_get_sync. NULL is a no-op. */
void distcache_buffer_free(uint8_t *data, size_t len);

/* The message of this thread's last failed call ("" if none). Owned by the library, valid until
 * the next failing call on this thread. Never NULL. */
const char *distcache_last_error_message(void);

/* The name of a result code ("DISTCACHE_ERR_TIMEOUT"); "DISTCACHE_UNKNOWN" for others. Static. */
const char *distcache_code_name(int32_t code);

#ifdef __cplusplus
}
#endif

#endif /* DISTCACHE_H */
