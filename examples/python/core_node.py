#!/usr/bin/env python3
"""A core node in Python through ctypes: the same stdin protocol as examples/core_node.rs, on the
C API (include/distcache.h). Only the standard library.

    cargo rustc --lib --features ffi --crate-type cdylib
    python3 examples/python/core_node.py --lib target/debug/libdistcache.so \
        --brokers 127.0.0.1:9092 --redis redis://127.0.0.1:6379/ --namespace demo

Commands, one a line: set K V [TTL_MS], set-sync K V [TTL_MS], set-wait K V, set-sync-wait K V,
get K, get-sync K, del K, del-sync K, del-sync-wait K, metrics, quit. Replies: OK,
OK applied / OK superseded, VALUE <v>, NIL, ERR <code>: <message>. Prints READY once open.
"""

import argparse
import ctypes
import os
import sys
from ctypes import POINTER, Structure, byref, c_char_p, c_int32, c_size_t, c_uint8, c_uint64, c_void_p

OK, NOT_FOUND = 0, 1
OUTCOME_APPLIED = 1


class Config(Structure):
    """DistcacheConfig: field for field as in distcache.h."""

    _fields_ = [
        ("brokers", c_char_p),
        ("redis_url", c_char_p),
        ("namespace_name", c_char_p),
        ("key_prefix", c_char_p),
        ("local_capacity", c_uint64),
        ("local_ttl_ms", c_uint64),
        ("wait_timeout_ms", c_uint64),
        ("node_id", c_uint64),
        ("kafka_setting_keys", POINTER(c_char_p)),
        ("kafka_setting_values", POINTER(c_char_p)),
        ("kafka_settings_len", c_size_t),
    ]


METRIC_FIELDS = [
    "local_hits", "local_misses", "local_entries", "local_inserts", "local_updates",
    "local_evictions", "local_expirations", "local_invalidations", "local_stale_rejections",
    "writes", "write_failures", "events", "events_applied", "events_ignored", "malformed",
    "undecodable", "resets", "redis_reads", "propagation_count", "propagation_p50_us",
    "propagation_p99_us", "propagation_max_us",
]


class Metrics(Structure):
    """DistcacheMetrics: every counter a uint64_t."""

    _fields_ = [(name, c_uint64) for name in METRIC_FIELDS]


def load(path):
    """The library with every prototype declared (ctypes would otherwise guess int arguments)."""
    lib = ctypes.CDLL(path)
    cache, key, bytes_in = c_void_p, c_char_p, POINTER(c_uint8)
    out_buf, out_len, outcome = POINTER(POINTER(c_uint8)), POINTER(c_size_t), POINTER(c_int32)
    protos = {
        "distcache_open": [POINTER(Config), POINTER(c_void_p)],
        "distcache_set": [cache, key, bytes_in, c_size_t, c_uint64],
        "distcache_set_sync": [cache, key, bytes_in, c_size_t, c_uint64, c_uint64],
        "distcache_set_and_wait": [cache, key, bytes_in, c_size_t, c_uint64, outcome],
        "distcache_set_sync_and_wait": [cache, key, bytes_in, c_size_t, c_uint64, c_uint64, outcome],
        "distcache_get": [cache, key, out_buf, out_len],
        "distcache_get_sync": [cache, key, c_uint64, out_buf, out_len],
        "distcache_delete": [cache, key],
        "distcache_delete_sync": [cache, key],
        "distcache_delete_sync_and_wait": [cache, key, outcome],
        "distcache_metrics": [cache, POINTER(Metrics)],
    }
    for name, argtypes in protos.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, c_int32
    lib.distcache_close.argtypes, lib.distcache_close.restype = [cache], None
    lib.distcache_buffer_free.argtypes, lib.distcache_buffer_free.restype = [POINTER(c_uint8), c_size_t], None
    lib.distcache_last_error_message.argtypes, lib.distcache_last_error_message.restype = [], c_char_p
    lib.distcache_code_name.argtypes, lib.distcache_code_name.restype = [c_int32], c_char_p
    return lib


class DistcacheError(Exception):
    """A negative code and the thread's last-error message."""

    def __init__(self, lib, code):
        self.code = code
        name = lib.distcache_code_name(code).decode()
        super().__init__(f"{name}: {lib.distcache_last_error_message().decode(errors='replace')}")


class Cache:
    """A DistcacheCache of byte values; close() frees it."""

    def __init__(self, lib, config):
        self.lib = lib
        self.handle = c_void_p()
        self._check(lib.distcache_open(byref(config), byref(self.handle)))

    def _check(self, code):
        if code < 0:
            raise DistcacheError(self.lib, code)
        return code

    def set(self, key, value, ttl_ms=0, sync=False):
        buf = (c_uint8 * len(value)).from_buffer_copy(value)
        if sync:
            self._check(self.lib.distcache_set_sync(self.handle, key, buf, len(value), ttl_ms, ttl_ms))
        else:
            self._check(self.lib.distcache_set(self.handle, key, buf, len(value), ttl_ms))

    def set_and_wait(self, key, value, sync=False):
        buf = (c_uint8 * len(value)).from_buffer_copy(value)
        outcome = c_int32(0)
        if sync:
            code = self.lib.distcache_set_sync_and_wait(self.handle, key, buf, len(value), 0, 0, byref(outcome))
        else:
            code = self.lib.distcache_set_and_wait(self.handle, key, buf, len(value), 0, byref(outcome))
        self._check(code)
        return outcome.value == OUTCOME_APPLIED

    def get(self, key, sync=False):
        """The value as bytes, or None. The library's buffer is copied, then freed."""
        data, length = POINTER(c_uint8)(), c_size_t(0)
        if sync:
            code = self.lib.distcache_get_sync(self.handle, key, 0, byref(data), byref(length))
        else:
            code = self.lib.distcache_get(self.handle, key, byref(data), byref(length))
        if self._check(code) == NOT_FOUND:
            return None
        try:
            return ctypes.string_at(data, length.value) if length.value else b""
        finally:
            self.lib.distcache_buffer_free(data, length)

    def delete(self, key, sync=False):
        self._check((self.lib.distcache_delete_sync if sync else self.lib.distcache_delete)(self.handle, key))

    def delete_and_wait(self, key):
        outcome = c_int32(0)
        self._check(self.lib.distcache_delete_sync_and_wait(self.handle, key, byref(outcome)))
        return outcome.value == OUTCOME_APPLIED

    def metrics(self):
        m = Metrics()
        self._check(self.lib.distcache_metrics(self.handle, byref(m)))
        return {name: getattr(m, name) for name in METRIC_FIELDS}

    def close(self):
        self.lib.distcache_close(self.handle)
        self.handle = c_void_p()


def run(cache, words):
    """One command; its reply line."""
    match words:
        case ["set", k, v, *ttl] if len(ttl) <= 1:
            cache.set(k.encode(), v.encode(), int(ttl[0]) if ttl else 0)
            return "OK"
        case ["set-sync", k, v, *ttl] if len(ttl) <= 1:
            cache.set(k.encode(), v.encode(), int(ttl[0]) if ttl else 0, sync=True)
            return "OK"
        case ["set-wait", k, v]:
            return "OK applied" if cache.set_and_wait(k.encode(), v.encode()) else "OK superseded"
        case ["set-sync-wait", k, v]:
            return "OK applied" if cache.set_and_wait(k.encode(), v.encode(), sync=True) else "OK superseded"
        case ["get" | "get-sync" as cmd, k]:
            value = cache.get(k.encode(), sync=cmd == "get-sync")
            return "NIL" if value is None else "VALUE " + value.decode(errors="replace")
        case ["del", k]:
            cache.delete(k.encode())
            return "OK"
        case ["del-sync", k]:
            cache.delete(k.encode(), sync=True)
            return "OK"
        case ["del-sync-wait", k]:
            return "OK applied" if cache.delete_and_wait(k.encode()) else "OK superseded"
        case ["metrics"]:
            return " ".join(f"{k}={v}" for k, v in cache.metrics().items())
        case _:
            return f"ERR unknown command {' '.join(words)!r}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lib", default=os.environ.get("DISTCACHE_LIB", "target/debug/libdistcache.so"))
    p.add_argument("--brokers", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--namespace", default="demo")
    p.add_argument("--prefix")
    p.add_argument("--node-id", type=int, default=0)
    p.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    lib = load(args.lib)
    settings = [s.split("=", 1) for s in args.kafka]
    keys = (c_char_p * len(settings))(*[k.encode() for k, _ in settings])
    values = (c_char_p * len(settings))(*[v.encode() for _, v in settings])
    config = Config(
        brokers=args.brokers.encode(),
        redis_url=args.redis.encode(),
        namespace_name=args.namespace.encode(),
        key_prefix=args.prefix.encode() if args.prefix else None,
        node_id=args.node_id,
        kafka_setting_keys=keys,
        kafka_setting_values=values,
        kafka_settings_len=len(settings),
    )
    try:
        cache = Cache(lib, config)
    except DistcacheError as e:
        print(f"core node failed to start: {e}", file=sys.stderr)
        return 1
    print("READY", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["quit"]:
            print("OK", flush=True)
            break
        try:
            reply = run(cache, words)
        except DistcacheError as e:
            reply = f"ERR {e}"
        except ValueError as e:
            reply = f"ERR {e}"
        print(reply, flush=True)
    cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
