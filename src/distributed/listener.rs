//! The done-topic listener: one thread per namespace that brings this node's local cache in line
//! with what the state nodes applied.
//!
//! Every event is applied only when newer than the local entry (the origin's own events too, so
//! a write that lost is corrected).
//!
//! Missed events are seen in the offsets, not inferred from errors: offsets within a partition
//! are contiguous, so the listener tracks the next expected offset of every partition
//! ([`OffsetTracker`](crate::bus::offsets::OffsetTracker)). A jump is a hole, re-read by seeking
//! back (tansu 0.6 can hide a batch from a tailing consumer for a moment). A hole that persists
//! through the bounded re-reads, an offset that goes back (the broker lost its log, or
//! librdkafka reset an out-of-range position) and a partition added to the topic (found by a
//! metadata refresh every few seconds) are gaps: the namespace's local cache is cleared and the
//! reset counted — bounded staleness over silent staleness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::clock::NodeClock;
use super::fill_guard::FillGuard;
use super::metrics::Counters;
use super::waiters::Waiters;
use crate::bus::consumer::{describe, BroadcastConsumer, Delivered, Polled, POLL_INTERVAL};
use crate::bus::errlog::ErrorLog;
use crate::bus::offsets::Verdict;
use crate::event::{now_micros, DoneEvent, Op};
use crate::{Codec, LocalCache};

pub(crate) struct Listener<T> {
    pub consumer: BroadcastConsumer,
    pub ns: String,
    pub local: LocalCache<T>,
    pub codec: Codec,
    pub clock: Arc<NodeClock>,
    pub waiters: Arc<Waiters>,
    pub fills: Arc<FillGuard>,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub trace: bool,
}

/// How often the listener re-reads the done topic's partition list.
const PARTITION_REFRESH: Duration = Duration::from_secs(5);

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> Listener<T> {
    pub(crate) fn run(mut self) {
        let errors = ErrorLog::new("distcache::listener");
        let mut next_refresh = Instant::now() + PARTITION_REFRESH;
        while !self.stop.load(Ordering::Acquire) {
            if Instant::now() >= next_refresh {
                next_refresh = Instant::now() + PARTITION_REFRESH;
                self.refresh_partitions(&errors);
            }
            let Delivered {
                partition,
                offset,
                verdict,
                timestamp_ms,
                event,
            } = match self.consumer.poll_event(POLL_INTERVAL) {
                Polled::Idle => continue,
                Polled::Record(delivered) => delivered,
                Polled::Trouble(trouble) => {
                    errors.report(&format!(
                        "[{}] consumer error: {}",
                        self.ns, trouble.message
                    ));
                    continue;
                }
            };
            let topic = self.consumer.topic();
            match verdict {
                Verdict::Accept => {}
                Verdict::Reread { expected, wait, .. } => {
                    self.counters.holes_reread.fetch_add(1, Ordering::Relaxed);
                    log::warn!(target: "distcache::listener", "[{}] {}", self.ns,
                        describe(topic, partition, offset, verdict));
                    self.consumer.reread(partition, expected, wait, &self.stop);
                    continue;
                }
                Verdict::Skip { .. } => {
                    log::error!(target: "distcache::listener", "[{}] {}", self.ns,
                        describe(topic, partition, offset, verdict));
                    self.reset("events were missed (a hole in the done topic persisted)");
                }
                Verdict::Regressed { .. } => {
                    let why = describe(topic, partition, offset, verdict);
                    self.reset(&format!("events may have been missed: {why}"));
                }
            }
            match event {
                Some(Ok(event)) => self.handle(event, timestamp_ms),
                Some(Err(err)) => self.malformed(&err.to_string()),
                None => self.malformed("empty message"),
            }
        }
    }

    /// Starts reading partitions added to the done topic since the last look. Their events so
    /// far were not seen: a gap.
    fn refresh_partitions(&mut self, errors: &ErrorLog) {
        match self.consumer.refresh_partitions() {
            Ok(added) if added.is_empty() => {}
            Ok(added) => self.reset(&format!(
                "the done topic has new partitions {added:?}, whose events so far were not read"
            )),
            Err(e) => {
                errors.report(&format!(
                    "[{}] refreshing the done topic's partitions: {e}",
                    self.ns
                ));
            }
        }
    }

    /// Times the journey of a traced event in two spans split at its done record's timestamp:
    /// produced (the writer's wall clock, in the envelope) → done produced (the state node's wall
    /// clock, the record timestamp librdkafka set) → seen here (this node's wall clock). Across
    /// machines each span includes the skew between the two clocks; a negative span counts as 0.
    fn trace_spans(&self, event: &DoneEvent, done_at_ms: Option<i64>, seen_at_us: u64) {
        let c = &self.counters;
        let done_at_us = done_at_ms
            .filter(|ms| *ms > 0)
            .map(|ms| (ms as u64).saturating_mul(1000));
        if let Some(done_at_us) = done_at_us {
            c.trace_to_done_us
                .record(done_at_us.saturating_sub(event.produced_at_us));
            c.trace_done_to_seen_us
                .record(seen_at_us.saturating_sub(done_at_us));
        }
        let ms = |us: u64| us as f64 / 1000.0;
        log::debug!(target: "distcache::trace",
            "[{}] {:?} {:?} at {} from {:x}: produced -> done produced {} -> seen {:.3} ms in all",
            self.ns, event.op, event.key, event.version, event.origin,
            match done_at_us {
                Some(at) => format!("{:.3} ms", ms(at.saturating_sub(event.produced_at_us))),
                None => "(no record timestamp)".into(),
            },
            ms(seen_at_us.saturating_sub(event.produced_at_us)));
    }

    fn malformed(&self, why: &str) {
        self.counters.malformed.fetch_add(1, Ordering::Relaxed);
        log::warn!(target: "distcache::listener", "[{}] skipping malformed done event: {why}", self.ns);
    }

    fn reset(&self, why: &str) {
        self.fills.reset();
        let dropped = self.local.invalidate_all();
        self.counters.resets.fetch_add(1, Ordering::Relaxed);
        log::warn!(target: "distcache::listener",
            "[{}] cleared the local cache ({dropped} entries): {why}", self.ns);
    }

    /// Applies one done event; `done_at_ms` is its record's timestamp (for the trace).
    fn handle(&self, event: DoneEvent, done_at_ms: Option<i64>) {
        // A `stale` verdict may carry a version the state node refused for being too far ahead:
        // following it would make this node stamp refused versions too. Applied writes were
        // within the state node's bound, so they are safe to follow.
        if event.op != Op::Stale && !self.clock.observe(event.version) {
            log::warn!(target: "distcache::listener",
                "[{}] done event for {:?} has a version far ahead of this clock ({}); not followed",
                self.ns, event.key, event.version);
        }
        if event.ns != self.ns {
            return;
        }
        let c = &self.counters;
        c.events.fetch_add(1, Ordering::Relaxed);
        if self
            .clock
            .detect_duplicate(event.version, event.produced_at_us)
        {
            c.duplicate_node_ids.fetch_add(1, Ordering::Relaxed);
            log::error!(target: "distcache::listener",
                "[{}] done event for {:?} at {} carries this node's id but this process never issued it: \
                 another process uses node id {:x}; writes with it now fail",
                self.ns, event.key, event.version, event.version.node);
        }
        let seen_at_us = now_micros();
        c.propagation_us
            .record(seen_at_us.saturating_sub(event.produced_at_us));
        if self.trace {
            self.trace_spans(&event, done_at_ms, seen_at_us);
        }
        // Touch before changing the entry: a concurrent fill then either sees the touch or is
        // overwritten by the change (see fill_guard).
        self.fills.touch(&event.key);
        // Before the change too: a write of ours in flight then either sees the correction or
        // is applied before it (see pending).
        self.waiters.pending.observe(&event);
        let changed = match event.op {
            Op::Set => match &event.value {
                Some(bytes) => match self.codec.decode::<T>(bytes) {
                    Ok(value) => {
                        self.local
                            .set_if_newer(&event.key, value, event.local_ttl, event.version)
                    }
                    Err(err) => {
                        c.undecodable.fetch_add(1, Ordering::Relaxed);
                        log::warn!(target: "distcache::listener",
                            "[{}] value of {:?} at {} does not decode, dropping the local copy: {err}",
                            self.ns, event.key, event.version);
                        self.local.invalidate(&event.key)
                    }
                },
                // Too large to inline: drop our copy unless it is newer; the next
                // get_with_sync reads Redis.
                None => self
                    .local
                    .invalidate_unless_newer(&event.key, event.version),
            },
            Op::Delete => self.local.delete_if_newer(&event.key, event.version),
            // The write lost: Redis holds a newer version. A local entry no newer than the
            // losing write (typically the origin's own, whose winner this node may never have
            // seen: it started listening later) must not be served; the next get_with_sync
            // reads Redis.
            Op::Stale => self
                .local
                .invalidate_unless_newer(&event.key, event.version),
        };
        if event.op != Op::Stale {
            self.waiters.saw(&event.key, event.version);
        }
        if changed {
            c.events_applied.fetch_add(1, Ordering::Relaxed);
        } else {
            c.events_ignored.fetch_add(1, Ordering::Relaxed);
        }
        if self.trace {
            log::debug!(target: "distcache::listener",
                "[{}] {:?} {:?} at {} from {:x}: {}", self.ns, event.op, event.key, event.version,
                event.origin, if changed { "applied" } else { "ignored" });
        }
        self.waiters.notify(&event);
    }
}
