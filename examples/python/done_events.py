#!/usr/bin/env python3
"""Reads distcache's done topic with kafka-python, a client that shares no code with distcache, and decodes
each record's envelope from the README's "Wire format" table alone. One JSON object per record on stdout.

    python3 examples/python/done_events.py --brokers 127.0.0.1:9092 [--topic T] [--count N] [--timeout S]

Reads every partition from its beginning without a consumer group (nothing is committed) and stops after
--count records or --timeout seconds. A record that is not a valid envelope prints {"error": ...} with its
partition and offset instead: the tool never stops at bad input. Needs `pip install kafka-python`.
"""
import argparse
import json
import struct
import sys
import time

OPS = {1: "set", 2: "delete", 3: "stale"}
FLAGS = ["remote_ttl", "local_ttl", "value_present", "write_redis", "value_omitted"]
HEADER = struct.Struct(">2sBBBQQQQQQ")  # magic, format, op, flags, hlc, node, origin, produced_at, ttls


def decode(value):
    """The envelope as a dict, or raises ValueError naming what is wrong."""
    if value is None or len(value) < HEADER.size + 2:
        raise ValueError("shorter than the fixed header")
    magic, fmt, op, flags, hlc, node, origin, produced_at, remote_ttl, local_ttl = HEADER.unpack_from(value)
    if magic != b"DC":
        raise ValueError("bad magic %r" % magic)
    if fmt != 1:
        raise ValueError("unknown format %d" % fmt)
    if op not in OPS:
        raise ValueError("unknown op %d" % op)
    at = HEADER.size

    def take(width):
        nonlocal at
        if len(value) < at + width:
            raise ValueError("truncated at byte %d" % at)
        (n,) = struct.unpack_from(">H" if width == 2 else ">I", value, at)
        at += width
        if len(value) < at + n:
            raise ValueError("truncated at byte %d" % at)
        field = value[at : at + n]
        at += n
        return field

    namespace = take(2).decode("utf-8")
    key = take(4).decode("utf-8")
    body = take(4) if flags & 0b100 else None
    if at != len(value):
        raise ValueError("%d trailing bytes" % (len(value) - at))
    return {
        "op": OPS[op],
        "flags": [name for bit, name in enumerate(FLAGS) if flags & (1 << bit)],
        "version": {"hlc": hlc, "node": node},
        "origin": origin,
        "produced_at_us": produced_at,
        "remote_ttl_ms": remote_ttl,
        "local_ttl_ms": local_ttl,
        "namespace": namespace,
        "key": key,
        "value_hex": None if body is None else body.hex(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", default="core-distributed-cache-done")
    parser.add_argument("--count", type=int, default=sys.maxsize)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    from kafka import KafkaConsumer, TopicPartition

    deadline = time.time() + args.timeout
    consumer = KafkaConsumer(bootstrap_servers=args.brokers, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=10, request_timeout_ms=10000)
    partitions = None
    while not partitions and time.time() < deadline:
        partitions = consumer.partitions_for_topic(args.topic)
        if not partitions:
            time.sleep(0.05)
    assigned = [TopicPartition(args.topic, p) for p in sorted(partitions or [])]
    consumer.assign(assigned)
    if assigned:
        consumer.seek_to_beginning(*assigned)
    seen = 0
    while seen < args.count and assigned and time.time() < deadline:
        for records in consumer.poll(timeout_ms=50).values():
            for r in records:
                try:
                    event = decode(r.value)
                    event["message_key_ok"] = r.key == (event["namespace"] + "\x1f" + event["key"]).encode()
                except (ValueError, UnicodeDecodeError) as e:
                    event = {"error": str(e)}
                event.update(partition=r.partition, offset=r.offset)
                print(json.dumps(event), flush=True)
                seen += 1
    consumer.close()


if __name__ == "__main__":
    main()
