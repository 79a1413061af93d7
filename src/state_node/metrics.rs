//! What a state node counts, and the snapshot it reports.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::sync::Arc;

use crate::metrics::{Histogram, Summary};

#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub consumed: AtomicU64,
    pub applied: AtomicU64,
    pub stale_dropped: AtomicU64,
    pub deduped: AtomicU64,
    pub malformed: AtomicU64,
    pub failed: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub published: AtomicU64,
    pub commits: AtomicU64,
    pub consumer_errors: AtomicU64,
    pub lag_ms: AtomicU64,
    pub batch_size: Histogram,
    pub apply_latency_us: Histogram,
    pub end_to_end_us: Histogram,
    pub bad_versions: AtomicU64,
    pub future_refused: AtomicU64,
    pub worker_panics: AtomicU64,
    pub holes_reread: AtomicU64,
    pub holes_skipped: AtomicU64,
    /// Partitions the group consumer holds now, kept by its rebalance callback.
    pub assigned_partitions: Arc<AtomicU64>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> StateNodeMetrics {
        StateNodeMetrics {
            consumed: self.consumed.load(Relaxed),
            applied: self.applied.load(Relaxed),
            stale_dropped: self.stale_dropped.load(Relaxed),
            deduped: self.deduped.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            batches: self.batches.load(Relaxed),
            retries: self.retries.load(Relaxed),
            published: self.published.load(Relaxed),
            commits: self.commits.load(Relaxed),
            consumer_errors: self.consumer_errors.load(Relaxed),
            lag_ms: self.lag_ms.load(Relaxed),
            batch_size: self.batch_size.summary(),
            apply_latency_us: self.apply_latency_us.summary(),
            end_to_end_us: self.end_to_end_us.summary(),
            bad_versions: self.bad_versions.load(Relaxed),
            future_refused: self.future_refused.load(Relaxed),
            worker_panics: self.worker_panics.load(Relaxed),
            holes_reread: self.holes_reread.load(Relaxed),
            holes_skipped: self.holes_skipped.load(Relaxed),
            assigned_partitions: self.assigned_partitions.load(Relaxed),
        }
    }
}

/// A snapshot of a state node's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateNodeMetrics {
    /// Records read from the set-del topic and handed to the pipeline, each once: a record
    /// dropped because it arrived past a hole (and read again later) is not counted.
    pub consumed: u64,
    /// Events newer than Redis' version, applied (or accepted, for plain writes).
    pub applied: u64,
    /// Events not newer than what Redis (or this node) already held: dropped.
    pub stale_dropped: u64,
    /// Events replaced by a newer event for the same key within one batch.
    pub deduped: u64,
    /// Records that were not valid events: logged, skipped, committed.
    pub malformed: u64,
    /// Events Redis cannot take and no retry would fix (the key holds another type, its stored
    /// version is not ours): logged, reported stale, skipped, committed.
    pub failed: u64,
    /// Batches processed.
    pub batches: u64,
    /// Retries of a batch step after Redis or the broker failed.
    pub retries: u64,
    /// Done events published.
    pub published: u64,
    /// Offset commits.
    pub commits: u64,
    /// Errors reported by the consumer.
    pub consumer_errors: u64,
    /// Age of the oldest event of the last batch when it was committed, in milliseconds: how far
    /// the state node runs behind the core nodes (across machines this includes clock skew).
    pub lag_ms: u64,
    /// Records per batch.
    pub batch_size: Summary,
    /// Time to apply one batch to Redis, in microseconds.
    pub apply_latency_us: Summary,
    /// From a core node producing an event to its done event being acknowledged, in microseconds
    /// (across machines this includes clock skew).
    pub end_to_end_us: Summary,
    /// Writes skipped because the key's stored version in Redis is not one of ours (not 32 hex
    /// digits): logged, reported stale, committed; the stored hash is left alone. Also counted in
    /// `failed`.
    pub bad_versions: u64,
    /// Events stamped further ahead of this node's clock than `max_clock_skew`: refused (logged,
    /// reported stale, committed) so one broken clock cannot block a key.
    pub future_refused: u64,
    /// Redis worker jobs that panicked: the batch is retried on a fresh connection; repeated
    /// panics stop the node with an error.
    pub worker_panics: u64,
    /// Times a partition was read again from a missing offset: a record arrived past a hole
    /// (offsets are contiguous; tansu 0.6 can hide a batch from a tailing consumer).
    pub holes_reread: u64,
    /// Holes still there after the bounded re-reads: logged as errors and passed.
    pub holes_skipped: u64,
    /// Partitions of the set-del topic this node holds now (a gauge: 0 before its first
    /// assignment, while partitions move, and when the group has more nodes than partitions).
    pub assigned_partitions: u64,
}

impl StateNodeMetrics {
    /// The metrics in the Prometheus text format (names `distcache_state_node_*`; the README's
    /// metrics table lists them). Use [`Exposition`](crate::Exposition) to put several snapshots
    /// on one page.
    pub fn to_prometheus(&self) -> String {
        let mut page = crate::Exposition::new();
        page.state_node(self);
        page.finish()
    }
}
