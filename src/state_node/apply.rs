//! Steps 3–4 of the state node, one batch at a time: plan it ([`plan`](super::plan)), apply its
//! writes to Redis through the [`workers`](super::workers), remember the versions Redis now holds,
//! and hand the batch over with each write's [`Fate`] for delivery.
//!
//! Invariant: a batch is handed over either with a fate for every event it carried, or
//! `abandoned` with no offsets at all, so nothing of it is published or committed and it is
//! replayed (the version check in Redis makes replays harmless).
//!
//! A Redis worker that panics fails its batch, which is retried; if the same batch panics
//! [`MAX_PANICS`] times in a row, the node must stop: it leaves the group with that batch
//! uncommitted, so another node (or a restart) takes its partitions, instead of holding them
//! forever without committing.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use hashbrown::HashMap;

use super::batcher::Batch;
use super::lifecycle::Lifecycle;
use super::metrics::Counters;
use super::plan::{plan, AppliedVersions, Plan};
use super::workers::{ApplyFailure, InFlight, Outcome, RedisWorkers};
use crate::event::{now_micros, WriteEvent};
use crate::{Error, Result};

/// Panicking attempts of one batch after which the node gives up and stops.
pub(crate) const MAX_PANICS: u32 = 3;

/// What became of one write of a batch; each is answered on the done topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Newer than what Redis held: applied (a plain write: recorded without a value).
    Applied,
    /// Not newer than what Redis held (found by the script or by the plan's fast path).
    Stale,
    /// Redis refused it and no retry would change that (`bad_version`: the stored version is not
    /// one of ours).
    Failed {
        /// The key's stored version is not one of ours.
        bad_version: bool,
    },
    /// A newer write of its key in the same batch replaced it.
    Superseded,
    /// Stamped too far ahead of this node's clock.
    Refused,
}

/// A batch after step 4, on its way to delivery.
#[derive(Debug, Default)]
pub(crate) struct AppliedBatch {
    /// Every write of the batch with its fate.
    pub verdicts: Vec<(WriteEvent, Fate)>,
    /// Next offset to commit per partition once the batch is delivered.
    pub next_offsets: HashMap<i32, i64>,
    /// Acknowledge once this batch is committed.
    pub barrier: Option<Sender<()>>,
    /// The intake is gone: this is the last batch.
    pub last: bool,
    /// Step 4 gave up on this batch (shutdown deadline passed, or the node must stop): no
    /// verdicts, no offsets.
    pub abandoned: bool,
    /// With trace on: when Redis answered for this batch.
    pub applied_at: Option<Instant>,
}

/// Plans and applies batches.
pub(crate) struct ApplyStage {
    pub workers: RedisWorkers,
    pub applied: AppliedVersions,
    pub counters: Arc<Counters>,
    pub life: Arc<Lifecycle>,
    /// Events whose version is further ahead of this node's clock are refused.
    pub max_clock_skew_ms: u64,
    /// Time each batch's stages into the `trace_*` metrics and log them (the builder's `trace`).
    pub trace: bool,
}

/// A batch planned and handed to the Redis workers, not yet answered ([`ApplyStage::begin`]).
pub(crate) struct Started {
    out: AppliedBatch,
    /// `None` for a batch of no records.
    work: Option<Work>,
}

struct Work {
    writes: Arc<Vec<WriteEvent>>,
    /// The workers' first attempt (`Err` when it could not be handed over); the first try takes
    /// it, a retry hands the batch over afresh. Planned while the batch before was still with
    /// Redis, this batch may miss that one's versions in `AppliedVersions`: the fast path only
    /// saves a round trip, Redis' version check decides.
    in_flight: Option<std::result::Result<InFlight, ApplyFailure>>,
    stale: Vec<WriteEvent>,
    refused: Vec<WriteEvent>,
    superseded: Vec<WriteEvent>,
    next_offsets: HashMap<i32, i64>,
    started: Instant,
}

impl Started {
    /// Whether a batch may be started behind this one: not past a barrier (the partitions may
    /// move once it is committed) nor past the last batch.
    pub(crate) fn lets_next_start(&self) -> bool {
        self.out.barrier.is_none() && !self.out.last
    }
}

impl ApplyStage {
    /// Applies `batch`: [`begin`](Self::begin), then [`finish`](Self::finish).
    #[cfg(test)]
    pub(crate) fn apply(&mut self, batch: Batch) -> (AppliedBatch, Option<String>) {
        let started = self.begin(batch);
        self.finish(started)
    }

    /// Plans `batch` and hands its writes to the Redis workers without waiting for them.
    pub(crate) fn begin(&mut self, batch: Batch) -> Started {
        let out = AppliedBatch {
            barrier: batch.barrier,
            last: batch.last,
            ..AppliedBatch::default()
        };
        if batch.records.is_empty() {
            return Started { out, work: None };
        }
        let c = &self.counters;
        c.batches.fetch_add(1, Relaxed);
        c.batch_size.record(batch.records.len() as u64);
        let horizon_ms = (now_micros() / 1000).saturating_add(self.max_clock_skew_ms);
        let plan = plan(batch.records, &mut self.applied, horizon_ms);
        c.malformed.fetch_add(plan.malformed, Relaxed);
        c.deduped.fetch_add(plan.deduped, Relaxed);
        if self.trace {
            // Produced (the writer's wall clock, in the envelope) → taken for applying (ours).
            let now = now_micros();
            for event in &plan.writes {
                c.trace_consumed_us
                    .record(now.saturating_sub(event.produced_at_us));
            }
        }
        let Plan {
            writes,
            stale,
            refused,
            superseded,
            next_offsets,
            ..
        } = plan;
        // Shared with the Redis workers while they apply it, taken back after.
        let writes = Arc::new(writes);
        let in_flight = Some(self.workers.dispatch(&writes));
        Started {
            out,
            work: Some(Work {
                writes,
                in_flight,
                stale,
                refused,
                superseded,
                next_offsets,
                started: Instant::now(),
            }),
        }
    }

    /// Waits for a started batch's writes (retrying until they apply or a shutdown gives up)
    /// and gives every event its fate. The second value is set when the node must stop (a
    /// batch kept panicking a worker); the batch is then abandoned.
    pub(crate) fn finish(&mut self, started: Started) -> (AppliedBatch, Option<String>) {
        let Started { mut out, work } = started;
        let Some(work) = work else {
            return (out, None);
        };
        let mut fatal = None;
        if let Err(e) = self.run_writes(work, &mut fatal, &mut out) {
            // Nothing of this batch is published or committed: it will be replayed.
            log::warn!(target: "distcache::state_node",
                "batch abandoned uncommitted (it will be replayed): {e}");
            out.abandoned = true;
        }
        (out, fatal)
    }

    /// Waits for the writes (the first attempt is already with the workers; a failed one is
    /// retried) and gives every event its fate in `out`. On an error `out` is left as it was.
    fn run_writes(
        &mut self,
        work: Work,
        fatal: &mut Option<String>,
        out: &mut AppliedBatch,
    ) -> Result<()> {
        let Work {
            writes,
            mut in_flight,
            stale,
            refused,
            superseded,
            next_offsets,
            started,
        } = work;
        let workers = &self.workers;
        let mut panics = 0;
        let outcomes = self.life.retry("apply to redis", &self.counters, || {
            let attempt = match in_flight.take() {
                Some(first) => first.and_then(InFlight::wait),
                None => workers.apply(&writes),
            };
            match attempt {
                Ok(outcomes) => Ok(outcomes),
                Err(ApplyFailure::Redis(e)) => Err(e),
                Err(ApplyFailure::Panicked(why)) => {
                    panics += 1;
                    if panics >= MAX_PANICS {
                        *fatal = Some(format!(
                            "a redis worker panicked {panics} times on one batch: {why}"
                        ));
                        // Ends the retries; the batch is abandoned uncommitted.
                        return Err(Error::Shutdown);
                    }
                    Err(Error::Rejected(format!("a redis worker panicked: {why}")))
                }
            }
        })?;
        // From the hand-over to the workers: with a batch ahead of it, that includes its wait.
        let applied_in = started.elapsed();
        self.counters
            .apply_latency_us
            .record(applied_in.as_micros() as u64);
        if self.trace {
            self.counters
                .trace_applied_us
                .record(applied_in.as_micros() as u64);
            out.applied_at = Some(Instant::now());
            log::debug!(target: "distcache::trace",
                "batch of {} writes applied to redis in {:.3} ms", writes.len(),
                applied_in.as_secs_f64() * 1000.0);
        }

        // Every worker let go of the batch before answering; a copy is only a fallback.
        let writes = Arc::try_unwrap(writes).unwrap_or_else(|shared| (*shared).clone());
        let mut verdicts =
            Vec::with_capacity(writes.len() + stale.len() + superseded.len() + refused.len());
        for (event, outcome) in writes.into_iter().zip(outcomes) {
            let fate = match outcome {
                Outcome::Applied => {
                    // Redis now holds this version (`ver`, or `pver` for a plain write).
                    self.applied
                        .put((event.ns.clone(), event.key.clone()), event.version);
                    Fate::Applied
                }
                Outcome::Stale => Fate::Stale,
                Outcome::Failed(ref why) => {
                    log::warn!(target: "distcache::state_node",
                        "redis refused {}/{} at {}: {why}", event.ns, event.key, event.version);
                    Fate::Failed {
                        bad_version: outcome.is_bad_version(),
                    }
                }
            };
            verdicts.push((event, fate));
        }
        verdicts.extend(stale.into_iter().map(|e| (e, Fate::Stale)));
        verdicts.extend(superseded.into_iter().map(|e| (e, Fate::Superseded)));
        verdicts.extend(refused.into_iter().map(|e| (e, Fate::Refused)));
        out.verdicts = verdicts;
        out.next_offsets = next_offsets;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::consumer::Record;
    use crate::Version;
    use lru::LruCache;
    use std::num::NonZeroUsize;

    /// A Redis worker with a bug: every job panics.
    struct AlwaysPanics;

    impl super::super::workers::Applier for AlwaysPanics {
        fn apply(&mut self, _: &[WriteEvent], _: &[usize]) -> Result<Vec<(usize, Outcome)>> {
            panic!("injected bug");
        }

        fn reset(&mut self) {}
    }

    #[test]
    fn a_batch_that_keeps_panicking_stops_the_node_uncommitted() {
        let counters = Arc::new(Counters::default());
        let workers =
            RedisWorkers::spawn(std::iter::once(AlwaysPanics), Arc::new(Counters::default()))
                .unwrap();
        let mut stage = ApplyStage {
            workers,
            applied: LruCache::with_hasher(NonZeroUsize::new(4).unwrap(), Default::default()),
            counters: counters.clone(),
            life: Arc::new(Lifecycle::default()),
            max_clock_skew_ms: 1000,
            trace: false,
        };
        let version = Version::new((now_micros() / 1000) << 16, 1);
        let event = WriteEvent::set("ns", "k", version, b"1".to_vec());
        let batch = Batch {
            records: vec![Record {
                partition: 0,
                offset: 7,
                payload: Some(event.encode()),
            }],
            barrier: None,
            last: false,
        };
        let (out, fatal) = stage.apply(batch);
        assert!(out.abandoned, "nothing of it is committed");
        assert!(out.next_offsets.is_empty() && out.verdicts.is_empty());
        let why = fatal.expect("the node must stop");
        assert!(why.contains("injected bug"), "{why}");
        assert_eq!(counters.retries.load(Relaxed), u64::from(MAX_PANICS - 1));
    }
}
