//! What a state node counts, and the snapshot it reports.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::sync::Arc;

use crate::metrics::{Histogram, Summary, Table};

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
    pub trace_consumed_us: Histogram,
    pub trace_applied_us: Histogram,
    pub trace_done_us: Histogram,
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
            trace_consumed_us: self.trace_consumed_us.summary(),
            trace_applied_us: self.trace_applied_us.summary(),
            trace_done_us: self.trace_done_us.summary(),
            assigned_partitions: self.assigned_partitions.load(Relaxed),
        }
    }
}

/// A snapshot of a state node's counters.
///
/// It serializes (serde) to one flat object, each field under its name: a counter or gauge as a
/// number, a [`Summary`] as an object of its five fields. The binary's `--final-metrics-file`
/// writes exactly that, so the field names are a stable interface: fields may be added, none
/// renamed or removed.
///
/// ```
/// let json = serde_json::to_value(distcache::StateNodeMetrics::default()).unwrap();
/// assert_eq!(json["consumed"], 0);
/// assert_eq!(json["batch_size"]["p99"], 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateNodeMetrics {
    /// Records read from the set-del topic and handed to the pipeline, each once: a record
    /// dropped because it arrived past a hole (and read again later) is not counted.
    pub consumed: u64,
    /// Events at least as new as Redis' version, applied (or accepted, for plain writes); an
    /// equal version is the same write again, re-applied idempotently.
    pub applied: u64,
    /// Events older than what Redis (or this node) already held: dropped.
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
    /// Time from handing one batch to the Redis workers until Redis answered all of it (includes
    /// waiting behind the batch before it, which may be with Redis too), in microseconds.
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
    /// Trace (the builder's `trace(true)`; empty otherwise): each write from being produced (the
    /// writer's wall clock, in the envelope) to being taken from the intake for applying (this
    /// node's wall clock), in microseconds: the broker hop, intake and batching. Across machines
    /// this includes clock skew.
    pub trace_consumed_us: Summary,
    /// Trace: each batch from the start of its Redis apply to Redis' answer, in microseconds
    /// (this node's monotonic clock).
    pub trace_applied_us: Summary,
    /// Trace: each batch from Redis' answer to the broker's acknowledgement of its last done
    /// event, in microseconds (this node's monotonic clock).
    pub trace_done_us: Summary,
    /// Partitions of the set-del topic this node holds now (a gauge: 0 before its first
    /// assignment, while partitions move, and when the group has more nodes than partitions).
    pub assigned_partitions: u64,
}

/// A readable table (one figure a line, latencies in milliseconds); `Debug` and the fields are
/// there for machines.
///
/// ```
/// let text = distcache::StateNodeMetrics::default().to_string();
/// assert!(text.contains("consumed"));
/// ```
impl std::fmt::Display for StateNodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut t = Table::new(f, "state node metrics")?;
        t.section("events")?;
        t.row("consumed", self.consumed)?;
        t.row("applied", self.applied)?;
        t.row("stale dropped", self.stale_dropped)?;
        t.row("deduplicated", self.deduped)?;
        t.row("malformed", self.malformed)?;
        t.row("failed", self.failed)?;
        t.row("bad versions", self.bad_versions)?;
        t.row("future refused", self.future_refused)?;
        t.section("pipeline")?;
        t.row("batches", self.batches)?;
        t.sizes("batch size", &self.batch_size)?;
        t.row("done events published", self.published)?;
        t.row("commits", self.commits)?;
        t.row("retries", self.retries)?;
        t.row("consumer errors", self.consumer_errors)?;
        t.row("assigned partitions", self.assigned_partitions)?;
        t.row("worker panics", self.worker_panics)?;
        t.row(
            "holes re-read / skipped",
            format_args!("{} / {}", self.holes_reread, self.holes_skipped),
        )?;
        t.section("latency")?;
        t.row("lag", format_args!("{} ms", self.lag_ms))?;
        t.latency("redis apply per batch", &self.apply_latency_us)?;
        t.latency("produced -> done acked", &self.end_to_end_us)?;
        t.latency("trace: produced -> taken", &self.trace_consumed_us)?;
        t.latency("trace: apply", &self.trace_applied_us)?;
        t.latency("trace: applied -> done", &self.trace_done_us)
    }
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
