//! Step 3 of the state node: turn a batch of raw records into the writes to apply.
//!
//! Decode (malformed records are counted and skipped), refuse events stamped too far ahead of this
//! node's clock, keep only the newest event per key, drop events older than a version this node
//! already applied (a bounded fast path; Redis stays the authority), and sort what is left by
//! version.

use hashbrown::HashMap;
use lru::LruCache;

use crate::bus::consumer::Record;
use crate::event::WriteEvent;
use crate::Version;

/// What to do with one batch.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Newest event per key, sorted by version.
    pub writes: Vec<WriteEvent>,
    /// Events known to be older than what Redis holds (from the fast path).
    pub stale: Vec<WriteEvent>,
    /// Events stamped beyond the horizon (too far ahead of this node's clock): refused before
    /// deduplication, so they neither reach Redis nor hide a correct event of the same key.
    pub refused: Vec<WriteEvent>,
    /// Records that were not valid events.
    pub malformed: u64,
    /// Events replaced by a newer event for the same key in the same batch.
    pub deduped: u64,
    /// Those replaced events: each is answered `stale` (it lost to a newer write of its key),
    /// so its waiter returns whatever becomes of the newer one (applied, stale or failed).
    pub superseded: Vec<WriteEvent>,
    /// Next offset to commit per partition once the batch is done.
    pub next_offsets: HashMap<i32, i64>,
}

/// The highest version applied per key (synced and plain writes alike: Redis records both),
/// bounded by LRU eviction. Forgetting a key only costs a Redis round trip, never correctness.
pub(crate) type AppliedVersions = LruCache<(String, String), Version, foldhash::fast::RandomState>;

/// Plans one batch. `horizon_ms`: the latest wall-clock millisecond a version may carry (this
/// node's clock plus the allowed skew).
pub(crate) fn plan(records: Vec<Record>, applied: &mut AppliedVersions, horizon_ms: u64) -> Plan {
    let mut out = Plan::default();
    let mut newest: HashMap<(String, String, bool), WriteEvent> =
        HashMap::with_capacity(records.len());
    for record in records {
        // Records of a partition arrive in offset order (re-reads and a log that went back
        // included), so the last one says where the partition continues.
        out.next_offsets
            .insert(record.partition, record.offset.saturating_add(1));
        let event = match record.payload.as_deref().map(WriteEvent::decode) {
            Some(Ok(event)) => event,
            Some(Err(err)) => {
                log::warn!(target: "distcache::state_node",
                    "skipping malformed record at {}:{}: {err}", record.partition, record.offset);
                out.malformed += 1;
                continue;
            }
            None => {
                log::warn!(target: "distcache::state_node",
                    "skipping empty record at {}:{}", record.partition, record.offset);
                out.malformed += 1;
                continue;
            }
        };
        if event.version.millis() > horizon_ms {
            log::warn!(target: "distcache::state_node",
                "refusing {}/{} at {}: stamped {} ms ahead of the allowed skew (origin node {:x}, record {}:{})",
                event.ns, event.key, event.version, event.version.millis() - horizon_ms,
                event.origin, record.partition, record.offset);
            out.refused.push(event);
            continue;
        }
        // Writes that go to Redis and plain ones are deduplicated apart: a newer plain write
        // must not keep an older `*_with_sync` write from reaching Redis.
        let id = (event.ns.clone(), event.key.clone(), event.write_redis);
        match newest.get_mut(&id) {
            Some(kept) => {
                out.deduped += 1;
                let dropped = if event.version > kept.version {
                    std::mem::replace(kept, event)
                } else {
                    event
                };
                out.superseded.push(dropped);
            }
            None => {
                newest.insert(id, event);
            }
        }
    }
    for ((ns, key, _), event) in newest {
        match applied.get(&(ns, key)) {
            // Strictly older only: an equal version is this write again, re-applied idempotently.
            Some(&known) if event.version < known => out.stale.push(event),
            _ => out.writes.push(event),
        }
    }
    out.writes.sort_by_key(|e| e.version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DoneEvent, Op};
    use std::num::NonZeroUsize;

    fn event(key: &str, hlc: u64, op: Op) -> WriteEvent {
        let version = Version::new(hlc, 1);
        match op {
            Op::Set => WriteEvent::set("ns", key, version, b"1".to_vec()),
            Op::Delete => WriteEvent::delete("ns", key, version),
            Op::Stale => unreachable!("a stale marker is not a write"),
        }
    }

    fn done_record(partition: i32, offset: i64, e: &DoneEvent) -> Record {
        Record {
            partition,
            offset,
            payload: Some(e.encode()),
        }
    }

    fn record(partition: i32, offset: i64, e: &WriteEvent) -> Record {
        Record {
            partition,
            offset,
            payload: Some(e.encode()),
        }
    }

    fn applied() -> AppliedVersions {
        LruCache::with_hasher(NonZeroUsize::new(16).unwrap(), Default::default())
    }

    #[test]
    fn keeps_newest_per_key_sorted_and_skips_malformed() {
        let records = vec![
            record(0, 10, &event("a", 14, Op::Set)),
            record(0, 11, &event("a", 10, Op::Delete)),
            record(1, 5, &event("b", 12, Op::Set)),
            Record {
                partition: 1,
                offset: 6,
                payload: Some(b"junk".to_vec()),
            },
            Record {
                partition: 2,
                offset: 0,
                payload: None,
            },
            record(0, 12, &event("c", 3, Op::Delete)),
        ];
        let p = plan(records, &mut applied(), u64::MAX);
        let got: Vec<(&str, u64, Op)> = p
            .writes
            .iter()
            .map(|e| (e.key.as_str(), e.version.hlc, e.op))
            .collect();
        assert_eq!(
            got,
            vec![("c", 3, Op::Delete), ("b", 12, Op::Set), ("a", 14, Op::Set)]
        );
        assert_eq!(p.malformed, 2);
        assert_eq!(p.deduped, 1);
        let superseded: Vec<(&str, u64)> = p
            .superseded
            .iter()
            .map(|e| (e.key.as_str(), e.version.hlc))
            .collect();
        assert_eq!(
            superseded,
            vec![("a", 10)],
            "the dropped write is kept to be answered"
        );
        assert_eq!(p.next_offsets[&0], 13);
        assert_eq!(p.next_offsets[&1], 7);
        assert_eq!(p.next_offsets[&2], 1);
    }

    #[test]
    fn a_newer_plain_write_does_not_hide_an_older_synced_one() {
        let synced = event("k", 10, Op::Set);
        let plain = event("k", 11, Op::Set).plain();
        let p = plan(
            vec![record(0, 0, &synced), record(0, 1, &plain)],
            &mut applied(),
            u64::MAX,
        );
        let kept: Vec<(u64, bool)> = p
            .writes
            .iter()
            .map(|e| (e.version.hlc, e.write_redis))
            .collect();
        assert_eq!(kept, vec![(10, true), (11, false)]);
        assert_eq!(p.deduped, 0);
    }

    #[test]
    fn done_topic_only_events_are_malformed_here() {
        let write = event("k", 1, Op::Set);
        let omitted = DoneEvent::applied(write.clone(), 0);
        let stale = DoneEvent::stale(write);
        let p = plan(
            vec![done_record(0, 0, &omitted), done_record(0, 1, &stale)],
            &mut applied(),
            u64::MAX,
        );
        assert_eq!((p.malformed, p.writes.len()), (2, 0));
    }

    #[test]
    fn drops_events_older_than_applied() {
        let mut known = applied();
        known.put(("ns".into(), "a".into()), Version::new(20, 1));
        known.put(("ns".into(), "c".into()), Version::new(20, 1));
        let p = plan(
            vec![
                record(0, 0, &event("a", 19, Op::Set)),
                record(0, 1, &event("b", 1, Op::Set)),
                record(0, 2, &event("c", 20, Op::Set)),
            ],
            &mut known,
            u64::MAX,
        );
        assert_eq!(p.stale.len(), 1);
        assert_eq!(p.stale[0].key, "a");
        let mut kept: Vec<&str> = p.writes.iter().map(|e| e.key.as_str()).collect();
        kept.sort();
        assert_eq!(
            kept,
            vec!["b", "c"],
            "an equal version is a replay, applied again"
        );
    }

    #[test]
    fn refuses_events_beyond_the_horizon_before_dedup() {
        // Version millis are hlc >> 16.
        let ahead = event("k", 500 << 16, Op::Set);
        let fine = event("k", 100 << 16, Op::Set);
        let p = plan(
            vec![record(0, 0, &fine), record(0, 1, &ahead)],
            &mut applied(),
            400,
        );
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].version, ahead.version);
        assert_eq!(
            p.writes.len(),
            1,
            "the correct event is not hidden by the refused one"
        );
        assert_eq!(p.writes[0].version, fine.version);
        assert_eq!((p.deduped, p.next_offsets[&0]), (0, 2));
    }

    #[test]
    fn the_last_record_of_a_partition_says_where_it_continues() {
        // A log that went back (the broker lost it): the batch holds 40, then 3 again.
        let p = plan(
            vec![
                record(0, 40, &event("a", 1, Op::Set)),
                record(0, 3, &event("b", 2, Op::Set)),
            ],
            &mut applied(),
            u64::MAX,
        );
        assert_eq!(
            p.next_offsets[&0], 4,
            "never commit past what was processed"
        );
    }
}
