/*
 * A core node in C: the same stdin protocol as examples/core_node.rs, on the C API.
 *
 *   cargo rustc --lib --features ffi --crate-type cdylib,staticlib
 *   cc -std=c11 -Wall -Wextra -Werror -Iinclude examples/c/core_node.c \
 *      -Ltarget/debug -ldistcache -Wl,-rpath,"$PWD/target/debug" -o core_node_c
 *   ./core_node_c --brokers 127.0.0.1:9092 --redis redis://127.0.0.1:6379/ --namespace demo
 *
 * Options: --brokers, --redis, --namespace (default "demo"), --prefix, --node-id, and
 * --kafka KEY=VALUE (repeatable, extra librdkafka settings).
 * Commands, one a line: set K V [TTL_MS], set-sync K V [TTL_MS], set-wait K V, set-sync-wait K V,
 * get K, get-sync K, del K, del-sync K, del-sync-wait K, metrics, quit.
 * Replies, one line each: OK, OK applied / OK superseded, VALUE <v>, NIL, ERR <code>: <message>;
 * `metrics` prints `name=value` pairs. Prints READY once the cache is open.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distcache.h"

#define MAX_SETTINGS 16

static void reply_error(int32_t code) {
    printf("ERR %s: %s\n", distcache_code_name(code), distcache_last_error_message());
}

static void reply_status(int32_t code) {
    if (code == DISTCACHE_OK) {
        printf("OK\n");
    } else {
        reply_error(code);
    }
}

static void reply_outcome(int32_t code, int32_t outcome) {
    if (code != DISTCACHE_OK) {
        reply_error(code);
    } else {
        printf("OK %s\n", outcome == DISTCACHE_OUTCOME_APPLIED ? "applied" : "superseded");
    }
}

/* Prints a read's result and frees the buffer the library returned. */
static void reply_value(int32_t code, uint8_t *value, size_t len) {
    if (code == DISTCACHE_OK) {
        printf("VALUE %.*s\n", (int)len, (const char *)value);
        distcache_buffer_free(value, len);
    } else if (code == DISTCACHE_NOT_FOUND) {
        printf("NIL\n");
    } else {
        reply_error(code);
    }
}

static void reply_metrics(const DistcacheCache *cache) {
    DistcacheMetrics m;
    int32_t code = distcache_metrics(cache, &m);
    if (code != DISTCACHE_OK) {
        reply_error(code);
        return;
    }
    printf("hits=%" PRIu64 " misses=%" PRIu64 " entries=%" PRIu64 " writes=%" PRIu64
           " write_failures=%" PRIu64 " events=%" PRIu64 " events_applied=%" PRIu64
           " redis_reads=%" PRIu64 " propagation_p50_us=%" PRIu64 "\n",
           m.local_hits, m.local_misses, m.local_entries, m.writes, m.write_failures, m.events,
           m.events_applied, m.redis_reads, m.propagation_p50_us);
}

/* Runs one command line (split in place into at most 4 words). */
static void run(const DistcacheCache *cache, char *line) {
    char *w[4] = {0};
    int n = 0;
    for (char *tok = strtok(line, " \t\r\n"); tok && n < 4; tok = strtok(NULL, " \t\r\n")) {
        w[n++] = tok;
    }
    if (n == 0) {
        printf("ERR empty command\n");
        return;
    }
    const char *cmd = w[0];
    uint64_t ttl = n == 4 ? strtoull(w[3], NULL, 10) : 0;
    uint8_t *value = NULL;
    size_t len = 0;
    int32_t outcome = 0;
    if (!strcmp(cmd, "set") && n >= 3) {
        reply_status(distcache_set(cache, w[1], (const uint8_t *)w[2], strlen(w[2]), ttl));
    } else if (!strcmp(cmd, "set-sync") && n >= 3) {
        reply_status(distcache_set_sync(cache, w[1], (const uint8_t *)w[2], strlen(w[2]), ttl, ttl));
    } else if (!strcmp(cmd, "set-wait") && n == 3) {
        int32_t code =
            distcache_set_and_wait(cache, w[1], (const uint8_t *)w[2], strlen(w[2]), 0, &outcome);
        reply_outcome(code, outcome);
    } else if (!strcmp(cmd, "set-sync-wait") && n == 3) {
        int32_t code = distcache_set_sync_and_wait(cache, w[1], (const uint8_t *)w[2],
                                                   strlen(w[2]), 0, 0, &outcome);
        reply_outcome(code, outcome);
    } else if (!strcmp(cmd, "get") && n == 2) {
        int32_t code = distcache_get(cache, w[1], &value, &len);
        reply_value(code, value, len);
    } else if (!strcmp(cmd, "get-sync") && n == 2) {
        int32_t code = distcache_get_sync(cache, w[1], 0, &value, &len);
        reply_value(code, value, len);
    } else if (!strcmp(cmd, "del") && n == 2) {
        reply_status(distcache_delete(cache, w[1]));
    } else if (!strcmp(cmd, "del-sync") && n == 2) {
        reply_status(distcache_delete_sync(cache, w[1]));
    } else if (!strcmp(cmd, "del-sync-wait") && n == 2) {
        int32_t code = distcache_delete_sync_and_wait(cache, w[1], &outcome);
        reply_outcome(code, outcome);
    } else if (!strcmp(cmd, "metrics") && n == 1) {
        reply_metrics(cache);
    } else {
        printf("ERR unknown command %s\n", cmd);
    }
}

int main(int argc, char **argv) {
    DistcacheConfig config = {0};
    config.namespace_name = "demo";
    const char *keys[MAX_SETTINGS];
    const char *values[MAX_SETTINGS];
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *flag = argv[i];
        char *arg = argv[i + 1];
        if (!strcmp(flag, "--brokers")) {
            config.brokers = arg;
        } else if (!strcmp(flag, "--redis")) {
            config.redis_url = arg;
        } else if (!strcmp(flag, "--namespace")) {
            config.namespace_name = arg;
        } else if (!strcmp(flag, "--prefix")) {
            config.key_prefix = arg;
        } else if (!strcmp(flag, "--node-id")) {
            config.node_id = strtoull(arg, NULL, 10);
        } else if (!strcmp(flag, "--kafka") && strchr(arg, '=') &&
                   config.kafka_settings_len < MAX_SETTINGS) {
            char *eq = strchr(arg, '=');
            *eq = '\0';
            keys[config.kafka_settings_len] = arg;
            values[config.kafka_settings_len] = eq + 1;
            config.kafka_settings_len++;
        } else {
            fprintf(stderr, "unknown or malformed option %s %s\n", flag, arg);
            return 2;
        }
    }
    config.kafka_setting_keys = keys;
    config.kafka_setting_values = values;

    DistcacheCache *cache = NULL;
    int32_t code = distcache_open(&config, &cache);
    if (code != DISTCACHE_OK) {
        fprintf(stderr, "core node failed to start: %s: %s\n", distcache_code_name(code),
                distcache_last_error_message());
        return 1;
    }
    printf("READY\n");
    fflush(stdout);

    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "quit", 4)) {
            printf("OK\n");
            break;
        }
        run(cache, line);
        fflush(stdout);
    }
    fflush(stdout);
    distcache_close(cache);
    return 0;
}
