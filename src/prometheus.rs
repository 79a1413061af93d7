//! Prometheus text exposition (format 0.0.4) of every metrics snapshot the crate reports.
//!
//! Each snapshot type has one table below: a row per metric, naming the field it reads, its kind
//! and its help text. Adding a field to a snapshot is one row here. Names follow Prometheus'
//! conventions: the `distcache_` prefix, base units in the name (`_seconds`), `_total` on every
//! counter. Latencies are recorded in microseconds and exposed in seconds, as summaries with the
//! 0.5, 0.99 and 1 (the maximum) quantiles; the quantiles are upper bounds of power-of-two
//! buckets (see [`Summary`]), so within a factor of two.
//!
//! [`Exposition`] groups samples by metric family, so several namespaces (or a state node and
//! core nodes in one process) render into one valid page with one `HELP`/`TYPE` pair per name.

use std::fmt::Write as _;

use crate::{DistributedMetrics, LocalMetrics, StateNodeMetrics, Summary};

/// How a row reads its value from a snapshot.
enum Read<M> {
    /// A count that only grows; exposed as is.
    Counter(fn(&M) -> u64),
    /// A value that goes up and down; exposed as is.
    Gauge(fn(&M) -> f64),
    /// A distribution of durations recorded in microseconds; exposed in seconds.
    MicrosSummary(fn(&M) -> Summary),
    /// A distribution of plain counts (e.g. records per batch); exposed as is.
    CountSummary(fn(&M) -> Summary),
}

/// One metric of a snapshot type: full name, help text, and how to read it.
struct Row<M> {
    name: &'static str,
    help: &'static str,
    read: Read<M>,
}

const fn counter<M>(name: &'static str, help: &'static str, read: fn(&M) -> u64) -> Row<M> {
    Row {
        name,
        help,
        read: Read::Counter(read),
    }
}

const fn gauge<M>(name: &'static str, help: &'static str, read: fn(&M) -> f64) -> Row<M> {
    Row {
        name,
        help,
        read: Read::Gauge(read),
    }
}

const fn seconds<M>(name: &'static str, help: &'static str, read: fn(&M) -> Summary) -> Row<M> {
    Row {
        name,
        help,
        read: Read::MicrosSummary(read),
    }
}

const fn counts<M>(name: &'static str, help: &'static str, read: fn(&M) -> Summary) -> Row<M> {
    Row {
        name,
        help,
        read: Read::CountSummary(read),
    }
}

/// The state node's metrics (no labels: one state node per process).
#[rustfmt::skip]
const STATE_NODE: &[Row<StateNodeMetrics>] = &[
    counter("distcache_state_node_consumed_total", "Records read from the set-del topic and handed to the pipeline.", |m| m.consumed),
    counter("distcache_state_node_applied_total", "Events newer than Redis' version, applied to Redis.", |m| m.applied),
    counter("distcache_state_node_stale_dropped_total", "Events not newer than what Redis or this node already held, dropped.", |m| m.stale_dropped),
    counter("distcache_state_node_deduped_total", "Events replaced by a newer event of the same key within one batch.", |m| m.deduped),
    counter("distcache_state_node_malformed_total", "Records that were not valid events: logged, skipped, committed.", |m| m.malformed),
    counter("distcache_state_node_failed_total", "Events Redis cannot take and no retry would fix: reported stale, skipped.", |m| m.failed),
    counter("distcache_state_node_batches_total", "Batches processed.", |m| m.batches),
    counter("distcache_state_node_retries_total", "Retries of a batch step after Redis or the broker failed.", |m| m.retries),
    counter("distcache_state_node_published_total", "Done events published.", |m| m.published),
    counter("distcache_state_node_commits_total", "Offset commits.", |m| m.commits),
    counter("distcache_state_node_consumer_errors_total", "Errors reported by the Kafka consumer.", |m| m.consumer_errors),
    counter("distcache_state_node_bad_versions_total", "Writes skipped because the key's stored version is not distcache's.", |m| m.bad_versions),
    counter("distcache_state_node_future_refused_total", "Events stamped further ahead of this node's clock than max_clock_skew, refused.", |m| m.future_refused),
    counter("distcache_state_node_worker_panics_total", "Redis worker jobs that panicked (the batch is retried).", |m| m.worker_panics),
    counter("distcache_state_node_holes_reread_total", "Times a partition was read again from a missing offset.", |m| m.holes_reread),
    counter("distcache_state_node_holes_skipped_total", "Holes still there after the bounded re-reads, passed.", |m| m.holes_skipped),
    gauge("distcache_state_node_assigned_partitions", "Partitions of the set-del topic this node holds now.", |m| m.assigned_partitions as f64),
    gauge("distcache_state_node_lag_seconds", "Age of the oldest event of the last committed batch (includes clock skew across machines).", |m| m.lag_ms as f64 / 1e3),
    counts("distcache_state_node_batch_records", "Records per batch.", |m| m.batch_size),
    seconds("distcache_state_node_apply_duration_seconds", "Time from handing one batch to the Redis workers until Redis answered all of it (includes waiting behind the batch before it).", |m| m.apply_latency_us),
    seconds("distcache_state_node_end_to_end_seconds", "From a core node producing an event to its done event being acknowledged.", |m| m.end_to_end_us),
    seconds("distcache_state_node_trace_consumed_seconds", "Trace: a write from being produced (writer's clock) to being taken for applying (this node's clock).", |m| m.trace_consumed_us),
    seconds("distcache_state_node_trace_applied_seconds", "Trace: one batch from the start of its Redis apply to Redis' answer.", |m| m.trace_applied_us),
    seconds("distcache_state_node_trace_done_seconds", "Trace: one batch from Redis' answer to the broker acknowledging its last done event.", |m| m.trace_done_us),
];

/// A local tier's metrics, labelled with its namespace.
#[rustfmt::skip]
const LOCAL: &[Row<LocalMetrics>] = &[
    counter("distcache_local_hits_total", "Local reads that returned a value.", |m| m.hits),
    counter("distcache_local_misses_total", "Local reads that returned nothing (absent, deleted or expired).", |m| m.misses),
    counter("distcache_local_inserts_total", "Local writes that stored a value where the key held none.", |m| m.inserts),
    counter("distcache_local_updates_total", "Local writes that replaced a live value.", |m| m.updates),
    counter("distcache_local_evictions_total", "Local values removed to stay within capacity, or too heavy to store.", |m| m.evictions),
    counter("distcache_local_expirations_total", "Local values found past their TTL and removed.", |m| m.expirations),
    counter("distcache_local_invalidations_total", "Local values removed by invalidate or invalidate_all.", |m| m.invalidations),
    counter("distcache_local_stale_rejections_total", "Versioned local writes refused because the key held an equal or newer version.", |m| m.stale_rejections),
    gauge("distcache_local_entries", "Live local entries now.", |m| m.entries as f64),
];

/// A core node's metrics for one namespace (besides its local tier's), labelled with it.
#[rustfmt::skip]
const DISTRIBUTED: &[Row<DistributedMetrics>] = &[
    counter("distcache_writes_total", "Writes acknowledged by the broker.", |m| m.writes),
    counter("distcache_write_failures_total", "Writes that failed (nothing changed).", |m| m.write_failures),
    counter("distcache_done_events_total", "Done events of this namespace received by the listener.", |m| m.events),
    counter("distcache_done_events_applied_total", "Done events that changed the local cache.", |m| m.events_applied),
    counter("distcache_done_events_ignored_total", "Done events older than the local entry, or stale markers.", |m| m.events_ignored),
    counter("distcache_done_malformed_total", "Messages on the done topic that were not valid events.", |m| m.malformed),
    counter("distcache_done_undecodable_total", "Done events whose value did not decode as the cache's type.", |m| m.undecodable),
    counter("distcache_local_resets_total", "Times the local cache was cleared because events may have been missed.", |m| m.resets),
    counter("distcache_redis_reads_total", "Reads that went to Redis (get_with_sync misses).", |m| m.redis_reads),
    counter("distcache_loads_total", "Loader calls made by get_or_load.", |m| m.loads),
    counter("distcache_future_versions_total", "Writes refused: their version would be too far ahead of the wall clock.", |m| m.future_versions),
    counter("distcache_duplicate_node_ids_total", "Done events carrying this node's id at a version it never issued.", |m| m.duplicate_node_ids),
    counter("distcache_local_newer_reads_total", "get_with_sync reads answered locally because Redis held an older version.", |m| m.local_newer_reads),
    counter("distcache_done_holes_reread_total", "Times the listener read a done-topic partition again from a missing offset.", |m| m.holes_reread),
    counter("distcache_negative_hits_total", "Reads answered from an absent marker (negative caching).", |m| m.negative_hits),
    seconds("distcache_propagation_seconds", "From a write being produced (on any node) to its done event reaching this node.", |m| m.propagation_us),
    seconds("distcache_trace_produce_seconds", "Trace: this node's produce call to the broker's acknowledgement.", |m| m.trace_produce_us),
    seconds("distcache_trace_to_done_seconds", "Trace: a write produced to its done event produced (the done record's broker timestamp).", |m| m.trace_to_done_us),
    seconds("distcache_trace_done_to_seen_seconds", "Trace: a done event produced to seen by this node.", |m| m.trace_done_to_seen_us),
];

/// One metric family: its `HELP`/`TYPE` header and its samples, in the order added.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: String,
}

/// A page of Prometheus text built from any number of snapshots.
///
/// ```
/// use distcache::{Exposition, LocalCache, Cache};
///
/// let users = LocalCache::<u32>::builder().build()?;
/// users.get("a")?;
/// let mut page = Exposition::new();
/// page.local("users", &users.metrics());
/// let text = page.finish();
/// assert!(text.contains("# TYPE distcache_local_misses_total counter"));
/// assert!(text.contains("distcache_local_misses_total{namespace=\"users\"} 1"));
/// # Ok::<(), distcache::Error>(())
/// ```
#[derive(Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("families", &self.families.len())
            .finish()
    }
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Adds a state node's metrics (names `distcache_state_node_*`, no labels).
    pub fn state_node(&mut self, metrics: &StateNodeMetrics) -> &mut Self {
        self.rows(STATE_NODE, metrics, "");
        self
    }

    /// Adds a core node's metrics for `namespace`, its local tier's included, labelled
    /// `namespace="…"`.
    pub fn distributed(&mut self, namespace: &str, metrics: &DistributedMetrics) -> &mut Self {
        let labels = namespace_label(namespace);
        self.rows(LOCAL, &metrics.local, &labels);
        self.rows(DISTRIBUTED, metrics, &labels);
        self
    }

    /// Adds a [`LocalCache`](crate::LocalCache)'s metrics, labelled `namespace="name"`.
    pub fn local(&mut self, name: &str, metrics: &LocalMetrics) -> &mut Self {
        self.rows(LOCAL, metrics, &namespace_label(name));
        self
    }

    /// The page: every family once, with its `HELP` and `TYPE` lines.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for f in self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            out.push_str(&f.samples);
        }
        out
    }

    fn rows<M>(&mut self, rows: &[Row<M>], m: &M, labels: &str) {
        for row in rows {
            let (kind, samples) = match &row.read {
                Read::Counter(read) => ("counter", sample(row.name, labels, read(m) as f64)),
                Read::Gauge(read) => ("gauge", sample(row.name, labels, read(m))),
                Read::MicrosSummary(read) => ("summary", summary(row.name, labels, &read(m), 1e-6)),
                Read::CountSummary(read) => ("summary", summary(row.name, labels, &read(m), 1.0)),
            };
            self.family(row, kind).samples.push_str(&samples);
        }
    }

    fn family<M>(&mut self, row: &Row<M>, kind: &'static str) -> &mut Family {
        let at = match self.families.iter().position(|f| f.name == row.name) {
            Some(at) => at,
            None => {
                self.families.push(Family {
                    name: row.name,
                    help: row.help,
                    kind,
                    samples: String::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[at]
    }
}

/// `namespace="…"` with the label value escaped as the format requires.
fn namespace_label(namespace: &str) -> String {
    let mut value = String::with_capacity(namespace.len());
    for c in namespace.chars() {
        match c {
            '\\' => value.push_str("\\\\"),
            '"' => value.push_str("\\\""),
            '\n' => value.push_str("\\n"),
            c => value.push(c),
        }
    }
    format!("namespace=\"{value}\"")
}

fn sample(name: &str, labels: &str, value: f64) -> String {
    if labels.is_empty() {
        format!("{name} {value}\n")
    } else {
        format!("{name}{{{labels}}} {value}\n")
    }
}

fn summary(name: &str, labels: &str, s: &Summary, scale: f64) -> String {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut out = String::new();
    for (q, v) in [("0.5", s.p50), ("0.99", s.p99), ("1", s.max)] {
        let _ = writeln!(
            out,
            "{name}{{{labels}{sep}quantile=\"{q}\"}} {}",
            v as f64 * scale
        );
    }
    out.push_str(&sample(
        &format!("{name}_sum"),
        labels,
        s.sum as f64 * scale,
    ));
    out.push_str(&sample(&format!("{name}_count"), labels, s.count as f64));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The samples of a page as `name{labels}` → value, checking the page's structure on the way:
    /// every sample belongs to a family announced by exactly one `HELP` and one `TYPE` line.
    pub(crate) fn parse(text: &str) -> HashMap<String, f64> {
        let mut types: HashMap<&str, &str> = HashMap::new();
        let mut helps = std::collections::HashSet::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helps.insert(name.to_string()), "second HELP for {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(types.insert(name, kind).is_none(), "second TYPE for {name}");
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                let family = ["_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| types.get(f) == Some(&"summary"))
                    })
                    .unwrap_or(name);
                assert!(types.contains_key(family), "{name} has no TYPE line");
                assert!(helps.contains(family), "{name} has no HELP line");
                samples.insert(series.to_string(), value.parse::<f64>().unwrap());
            }
        }
        for (name, kind) in &types {
            assert!(name.starts_with("distcache_"), "{name}");
            assert_eq!(
                name.ends_with("_total"),
                *kind == "counter",
                "{name} is a {kind}"
            );
            assert!(
                !name.ends_with("_ms") && !name.ends_with("_us"),
                "{name}: base units"
            );
        }
        samples
    }

    #[test]
    fn state_node_page_has_units_and_every_counter() {
        let m = StateNodeMetrics {
            consumed: 7,
            holes_skipped: 3,
            assigned_partitions: 8,
            lag_ms: 1500,
            apply_latency_us: Summary {
                count: 2,
                sum: 3_000,
                max: 2_000,
                p50: 1_000,
                p99: 2_000,
            },
            ..Default::default()
        };
        let mut page = Exposition::new();
        page.state_node(&m);
        let s = parse(&page.finish());
        assert_eq!(s["distcache_state_node_consumed_total"], 7.0);
        assert_eq!(s["distcache_state_node_holes_skipped_total"], 3.0);
        assert_eq!(s["distcache_state_node_assigned_partitions"], 8.0);
        assert_eq!(s["distcache_state_node_lag_seconds"], 1.5);
        assert_eq!(
            s["distcache_state_node_apply_duration_seconds{quantile=\"0.5\"}"],
            0.001
        );
        assert_eq!(s["distcache_state_node_apply_duration_seconds_sum"], 0.003);
        assert_eq!(s["distcache_state_node_apply_duration_seconds_count"], 2.0);
        // Every u64 field of the snapshot is on the page: 16 counters.
        let counters = s.keys().filter(|k| k.ends_with("_total")).count();
        assert_eq!(counters, 16);
    }

    #[test]
    fn namespaces_share_one_family_and_labels_are_escaped() {
        let a = DistributedMetrics {
            writes: 2,
            local: LocalMetrics {
                hits: 5,
                entries: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut page = Exposition::new();
        page.distributed("a", &a)
            .distributed("b\"\\\n", &DistributedMetrics::default());
        let text = page.finish();
        let s = parse(&text);
        assert_eq!(s["distcache_writes_total{namespace=\"a\"}"], 2.0);
        assert_eq!(s["distcache_local_hits_total{namespace=\"a\"}"], 5.0);
        assert_eq!(s["distcache_local_entries{namespace=\"a\"}"], 1.0);
        assert!(s.contains_key("distcache_writes_total{namespace=\"b\\\"\\\\\\n\"}"));
        assert!(s.contains_key("distcache_propagation_seconds{namespace=\"a\",quantile=\"0.99\"}"));
        assert_eq!(text.matches("# TYPE distcache_writes_total").count(), 1);
    }

    #[test]
    fn to_prometheus_methods_render_the_same_tables() {
        let m = StateNodeMetrics {
            applied: 4,
            ..Default::default()
        };
        assert_eq!(
            parse(&m.to_prometheus())["distcache_state_node_applied_total"],
            4.0
        );
        let d = DistributedMetrics::default();
        assert!(parse(&d.to_prometheus("n")).contains_key("distcache_loads_total{namespace=\"n\"}"));
    }
}
