//! What a core node counts, and the snapshot it reports.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::local::LocalMetrics;
use crate::metrics::{Histogram, Summary, Table};

#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub writes: AtomicU64,
    pub write_failures: AtomicU64,
    pub events: AtomicU64,
    pub events_applied: AtomicU64,
    pub events_ignored: AtomicU64,
    pub malformed: AtomicU64,
    pub undecodable: AtomicU64,
    pub resets: AtomicU64,
    pub redis_reads: AtomicU64,
    pub loads: AtomicU64,
    pub propagation_us: Histogram,
    pub future_versions: AtomicU64,
    pub duplicate_node_ids: AtomicU64,
    pub local_newer_reads: AtomicU64,
    pub holes_reread: AtomicU64,
    pub negative_hits: AtomicU64,
    pub trace_produce_us: Histogram,
    pub trace_to_done_us: Histogram,
    pub trace_done_to_seen_us: Histogram,
}

impl Counters {
    pub(crate) fn snapshot(&self, local: LocalMetrics) -> DistributedMetrics {
        DistributedMetrics {
            local,
            writes: self.writes.load(Relaxed),
            write_failures: self.write_failures.load(Relaxed),
            events: self.events.load(Relaxed),
            events_applied: self.events_applied.load(Relaxed),
            events_ignored: self.events_ignored.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            undecodable: self.undecodable.load(Relaxed),
            resets: self.resets.load(Relaxed),
            redis_reads: self.redis_reads.load(Relaxed),
            loads: self.loads.load(Relaxed),
            propagation_us: self.propagation_us.summary(),
            future_versions: self.future_versions.load(Relaxed),
            duplicate_node_ids: self.duplicate_node_ids.load(Relaxed),
            local_newer_reads: self.local_newer_reads.load(Relaxed),
            holes_reread: self.holes_reread.load(Relaxed),
            negative_hits: self.negative_hits.load(Relaxed),
            trace_produce_us: self.trace_produce_us.summary(),
            trace_to_done_us: self.trace_to_done_us.summary(),
            trace_done_to_seen_us: self.trace_done_to_seen_us.summary(),
        }
    }
}

/// A snapshot of a core node's counters for one namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DistributedMetrics {
    /// The local tier's counters.
    pub local: LocalMetrics,
    /// Writes acknowledged by the broker.
    pub writes: u64,
    /// Writes that failed (nothing changed).
    pub write_failures: u64,
    /// Done events of this namespace received by the listener.
    pub events: u64,
    /// Done events that changed the local cache.
    pub events_applied: u64,
    /// Done events older than the local entry, or stale markers: no change.
    pub events_ignored: u64,
    /// Messages on the done topic that were not valid events.
    pub malformed: u64,
    /// Done events whose value did not decode as this cache's type (the key was dropped locally).
    pub undecodable: u64,
    /// Times the local cache was cleared because events may have been missed.
    pub resets: u64,
    /// Reads that went to Redis (`get_with_sync` misses).
    pub redis_reads: u64,
    /// Loader calls made by `get_or_load`.
    pub loads: u64,
    /// Time from a write being produced (on any node) to its done event reaching this node,
    /// in microseconds (across machines this includes clock skew).
    pub propagation_us: Summary,
    /// Writes refused because their version would have been more than
    /// [`DEFAULT_MAX_CLOCK_SKEW`](crate::version::DEFAULT_MAX_CLOCK_SKEW) ahead of the wall clock.
    pub future_versions: u64,
    /// Done events carrying this node's id at a version it never issued: another process uses the
    /// same node id (writes then fail with [`Error::Config`](crate::Error::Config)).
    pub duplicate_node_ids: u64,
    /// `get_with_sync` reads answered from the local state because it was newer than Redis'.
    pub local_newer_reads: u64,
    /// Times the listener read a done-topic partition again from a missing offset (a record
    /// arrived past a hole). A hole that persists is a gap and counted in `resets`.
    pub holes_reread: u64,
    /// Reads answered `None` from an absent marker (negative caching, the builder's
    /// `absent_ttl`), without Redis or the loader.
    pub negative_hits: u64,
    /// Trace (the builder's `trace(true)`; empty otherwise): this node's writes from the produce
    /// call to the broker's acknowledgement, in microseconds (this node's monotonic clock).
    pub trace_produce_us: Summary,
    /// Trace: done events of this namespace, from the write being produced (the writer's wall
    /// clock, in the envelope) to its done event being produced (the done record's timestamp: the
    /// state node's wall clock, millisecond resolution): the broker hop, the state node's intake,
    /// batching, Redis apply and publish. In microseconds; across machines this includes skew.
    pub trace_to_done_us: Summary,
    /// Trace: from the done event being produced (its record timestamp) to this node's listener
    /// seeing it (this node's wall clock), in microseconds; across machines this includes skew.
    pub trace_done_to_seen_us: Summary,
}

/// A readable table (one figure a line, latencies in milliseconds); `Debug` and the fields are
/// there for machines.
///
/// ```
/// let text = distcache::DistributedMetrics::default().to_string();
/// assert!(text.contains("writes"));
/// assert!(text.lines().count() > 20);
/// ```
impl std::fmt::Display for DistributedMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = &self.local;
        let mut t = Table::new(f, "core node metrics")?;
        t.section("local tier")?;
        t.row("entries", l.entries)?;
        t.row(
            "hits / misses",
            format_args!(
                "{} / {} ({:.1} % hits)",
                l.hits,
                l.misses,
                l.hit_ratio() * 100.0
            ),
        )?;
        t.row(
            "inserts / updates",
            format_args!("{} / {}", l.inserts, l.updates),
        )?;
        t.row("evictions", l.evictions)?;
        t.row("expirations", l.expirations)?;
        t.row("invalidations", l.invalidations)?;
        t.row("stale rejections", l.stale_rejections)?;
        t.section("reads")?;
        t.row("redis reads", self.redis_reads)?;
        t.row("negative hits", self.negative_hits)?;
        t.row("loader calls", self.loads)?;
        t.row("local newer reads", self.local_newer_reads)?;
        t.section("writes")?;
        t.row("acknowledged", self.writes)?;
        t.row("failed", self.write_failures)?;
        t.row("future versions", self.future_versions)?;
        t.section("done events")?;
        t.row("received", self.events)?;
        t.row(
            "applied / ignored",
            format_args!("{} / {}", self.events_applied, self.events_ignored),
        )?;
        t.row("malformed", self.malformed)?;
        t.row("undecodable", self.undecodable)?;
        t.row("duplicate node ids", self.duplicate_node_ids)?;
        t.row("holes re-read", self.holes_reread)?;
        t.row("resets", self.resets)?;
        t.section("latency")?;
        t.latency("produced -> seen", &self.propagation_us)?;
        t.latency("trace: produce -> ack", &self.trace_produce_us)?;
        t.latency("trace: produced -> done", &self.trace_to_done_us)?;
        t.latency("trace: done -> seen", &self.trace_done_to_seen_us)
    }
}

impl DistributedMetrics {
    /// The metrics in the Prometheus text format, labelled with `namespace` (the README's
    /// metrics table lists the names). Use [`Exposition`](crate::Exposition) to put several
    /// namespaces on one page.
    pub fn to_prometheus(&self, namespace: &str) -> String {
        let mut page = crate::Exposition::new();
        page.distributed(namespace, self);
        page.finish()
    }
}
