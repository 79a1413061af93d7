//! Steps 3–4 of the state node, one batch at a time: plan, apply to Redis; then hand the batch to
//! the delivery stage ([`deliver`](super::deliver)) and go on with the next batch while it
//! publishes and commits.
//!
//! Invariant: offsets are committed only after every event of the batch was applied (or found
//! stale, malformed or refused) and every done event was acknowledged by the broker. A failure
//! before the commit retries with backoff; if the node dies instead, the batch is replayed after
//! restart and the version check in Redis makes the replay harmless.
//!
//! A Redis worker that panics fails its batch, which is retried; if the same batch panics
//! [`MAX_PANICS`] times in a row, the node stops with an error ([`Failure`]): it leaves the group
//! with that batch uncommitted, so another node (or a restart) takes its partitions, instead of
//! holding them forever without committing.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use parking_lot::Mutex;

use super::apply::{ApplyFailure, Outcome, RedisWorkers};
use super::batcher::{Batch, Batcher};
use super::deliver::{Delivery, Handoff};
use super::metrics::Counters;
use super::plan::{plan, AppliedVersions};
use super::publish;
use crate::bus::consumer::{GroupConsumer, Record};
use crate::bus::producer::EventProducer;
use crate::event::now_micros;
use crate::{Error, Result};

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Panicking attempts of one batch after which the node gives up and stops.
pub(crate) const MAX_PANICS: u32 = 3;

/// Why the node stopped by itself, shared with the [`StateNode`](super::StateNode) handle.
pub(crate) type Failure = Arc<Mutex<Option<String>>>;

/// Records why the node cannot go on and stops it: the intake leaves the group.
pub(crate) fn fail(failure: &Failure, stop: &AtomicBool, why: String) {
    log::error!(target: "distcache::state_node",
        "state node stopping: {why}; its partitions go to another node (the batch is replayed)");
    failure.lock().get_or_insert(why);
    stop.store(true, Ordering::Release);
}

pub(crate) struct Pipeline {
    pub batcher: Batcher,
    pub workers: RedisWorkers,
    pub producer: EventProducer,
    pub consumer: Arc<GroupConsumer>,
    pub applied: AppliedVersions,
    pub counters: Arc<Counters>,
    pub inline_value_limit: usize,
    /// Set by shutdown: retries give up after this instant and the batch stays uncommitted.
    pub give_up_at: Arc<Mutex<Option<Instant>>>,
    /// Events whose version is further ahead of this node's clock are refused.
    pub max_clock_skew_ms: u64,
    /// Set, with `stop`, when the node cannot go on.
    pub failure: Failure,
    pub stop: Arc<AtomicBool>,
    /// Time each batch's stages into the `trace_*` metrics and log them (the builder's `trace`).
    pub trace: bool,
}

impl Pipeline {
    pub(crate) fn run(self) {
        let Pipeline {
            batcher,
            workers,
            producer,
            consumer,
            mut applied,
            counters,
            inline_value_limit,
            give_up_at,
            max_clock_skew_ms,
            failure,
            stop,
            trace,
        } = self;
        let mut stage = ApplyStage {
            workers,
            applied: &mut applied,
            counters: &counters,
            inline_value_limit,
            give_up_at: &give_up_at,
            max_clock_skew_ms,
            fatal: None,
            trace,
        };
        let delivery = Delivery {
            producer,
            consumer,
            counters: &counters,
            give_up_at: &give_up_at,
        };
        // One batch is delivered while the next is applied: the hand-off holds at most one.
        let (handoff_tx, handoff_rx) = bounded::<Handoff>(1);
        std::thread::scope(|scope| {
            let deliverer = std::thread::Builder::new()
                .name("distcache-deliver".into())
                .spawn_scoped(scope, move || delivery.run(handoff_rx));
            if let Err(e) = deliverer {
                log::error!(target: "distcache::state_node", "cannot start the delivery thread: {e}");
                return;
            }
            loop {
                let batch = batcher.next_batch();
                let last = batch.last;
                let delivered = stage.forward(batch, &handoff_tx);
                if let Some(why) = stage.fatal.take() {
                    fail(&failure, &stop, why);
                    break;
                }
                if !delivered || last {
                    break;
                }
            }
            drop(handoff_tx);
        });
    }
}

/// Plans and applies batches, then hands them over for delivery.
struct ApplyStage<'a> {
    workers: RedisWorkers,
    applied: &'a mut AppliedVersions,
    counters: &'a Counters,
    inline_value_limit: usize,
    give_up_at: &'a Mutex<Option<Instant>>,
    max_clock_skew_ms: u64,
    /// Set when the node must stop (a batch kept panicking a worker).
    fatal: Option<String>,
    trace: bool,
}

impl ApplyStage<'_> {
    /// Applies `batch` and hands it to the delivery stage. False when the delivery stage is gone.
    fn forward(&mut self, batch: Batch, to: &Sender<Handoff>) -> bool {
        let mut handoff = Handoff {
            done: Vec::new(),
            applied: 0,
            next_offsets: Default::default(),
            barrier: batch.barrier,
            last: batch.last,
            abandoned: false,
            latency_from: Vec::new(),
            applied_at: None,
        };
        if !batch.records.is_empty() {
            match self.apply(batch.records, &mut handoff) {
                Ok(()) => {}
                Err(e) => {
                    // Nothing of this batch is published or committed: it will be replayed.
                    log::warn!(target: "distcache::state_node",
                        "batch abandoned uncommitted (it will be replayed): {e}");
                    handoff.done.clear();
                    handoff.next_offsets.clear();
                    handoff.abandoned = true;
                }
            }
        }
        to.send(handoff).is_ok()
    }

    fn apply(&mut self, records: Vec<Record>, out: &mut Handoff) -> Result<()> {
        let c = self.counters;
        c.batches.fetch_add(1, Relaxed);
        c.batch_size.record(records.len() as u64);
        let horizon_ms = (now_micros() / 1000).saturating_add(self.max_clock_skew_ms);
        let plan = plan(records, self.applied, horizon_ms);
        c.malformed.fetch_add(plan.malformed, Relaxed);
        c.deduped.fetch_add(plan.deduped, Relaxed);

        let started = Instant::now();
        if self.trace {
            // Produced (the writer's wall clock, in the envelope) → taken for applying (ours).
            let now = now_micros();
            for event in &plan.writes {
                c.trace_consumed_us
                    .record(now.saturating_sub(event.produced_at_us));
            }
        }
        let workers = &self.workers;
        let mut panics = 0;
        let fatal = &mut self.fatal;
        let outcomes = retry("apply to redis", c, self.give_up_at, || {
            match workers.apply(&plan.writes) {
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
        let applied_in = started.elapsed();
        c.apply_latency_us.record(applied_in.as_micros() as u64);
        if self.trace {
            c.trace_applied_us.record(applied_in.as_micros() as u64);
            out.applied_at = Some(Instant::now());
            log::debug!(target: "distcache::trace",
                "batch of {} writes applied to redis in {:.3} ms", plan.writes.len(),
                applied_in.as_secs_f64() * 1000.0);
        }

        out.done
            .reserve(plan.writes.len() + plan.stale.len() + plan.superseded.len());
        for (event, outcome) in plan.writes.iter().zip(outcomes) {
            let bad_version = outcome.is_bad_version();
            match outcome {
                Outcome::Applied => {
                    out.applied += 1;
                    // Redis now holds this version (`ver`, or `pver` for a plain write).
                    self.applied
                        .put((event.ns.clone(), event.key.clone()), event.version);
                    out.done
                        .push(publish::applied(event, self.inline_value_limit));
                    out.latency_from.push(event.produced_at_us);
                }
                Outcome::Stale => {
                    c.stale_dropped.fetch_add(1, Relaxed);
                    out.done.push(publish::stale(event));
                }
                Outcome::Failed(why) => {
                    c.failed.fetch_add(1, Relaxed);
                    if bad_version {
                        c.bad_versions.fetch_add(1, Relaxed);
                    }
                    log::warn!(target: "distcache::state_node",
                        "redis refused {}/{} at {}: {why}", event.ns, event.key, event.version);
                    // The write will never apply: tell the nodes, so the writer drops its copy
                    // and a waiting writer gets an answer.
                    out.done.push(publish::stale(event));
                }
            }
        }
        c.stale_dropped.fetch_add(plan.stale.len() as u64, Relaxed);
        out.done.extend(plan.stale.iter().map(publish::stale));
        // Deduplicated writes lost to a newer one of their key: answered on their own, since a
        // verdict on the newer write (stale, failed) says nothing of them.
        out.done.extend(plan.superseded.iter().map(publish::stale));
        // Refused writes are answered like lost ones: the writer drops its copy, waiters return.
        c.future_refused
            .fetch_add(plan.refused.len() as u64, Relaxed);
        out.done.extend(plan.refused.iter().map(publish::stale));
        out.next_offsets = plan.next_offsets;
        Ok(())
    }
}

/// Runs `step` until it succeeds, backing off between attempts. Gives up only once shutdown set a
/// deadline and it passed.
pub(crate) fn retry<R>(
    what: &str,
    counters: &Counters,
    give_up_at: &Mutex<Option<Instant>>,
    mut step: impl FnMut() -> Result<R>,
) -> Result<R> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match step() {
            Ok(r) => return Ok(r),
            Err(e) => {
                if let Some(deadline) = *give_up_at.lock() {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                }
                if matches!(e, Error::Shutdown) {
                    return Err(e);
                }
                counters.retries.fetch_add(1, Relaxed);
                log::warn!(target: "distcache::state_node", "{what} failed, retrying in {backoff:?}: {e}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Op};
    use crate::Version;
    use lru::LruCache;
    use std::num::NonZeroUsize;

    /// A Redis worker with a bug: every job panics.
    struct AlwaysPanics;

    impl super::super::apply::Applier for AlwaysPanics {
        fn apply(&mut self, _: &[(usize, Event)]) -> Result<Vec<(usize, Outcome)>> {
            panic!("injected bug");
        }

        fn reset(&mut self) {}
    }

    #[test]
    fn a_batch_that_keeps_panicking_stops_the_node_uncommitted() {
        let counters = Counters::default();
        let workers =
            RedisWorkers::spawn(std::iter::once(AlwaysPanics), Arc::new(Counters::default()))
                .unwrap();
        let mut applied = LruCache::with_hasher(NonZeroUsize::new(4).unwrap(), Default::default());
        let give_up_at = Mutex::new(None);
        let mut stage = ApplyStage {
            workers,
            applied: &mut applied,
            counters: &counters,
            inline_value_limit: 1024,
            give_up_at: &give_up_at,
            max_clock_skew_ms: 1000,
            fatal: None,
            trace: false,
        };
        let event = Event {
            op: Op::Set,
            ns: "ns".into(),
            key: "k".into(),
            version: Version::new((now_micros() / 1000) << 16, 1),
            remote_ttl: None,
            local_ttl: None,
            value: Some(b"1".to_vec()),
            write_redis: true,
            value_omitted: false,
            origin: 1,
            produced_at_us: 0,
        };
        let batch = Batch {
            records: vec![Record {
                partition: 0,
                offset: 7,
                payload: Some(event.encode()),
            }],
            barrier: None,
            last: false,
        };
        let (tx, rx) = bounded(1);
        assert!(stage.forward(batch, &tx));
        let handoff = rx.try_recv().expect("the batch is handed over");
        assert!(handoff.abandoned, "nothing of it is committed");
        assert!(handoff.next_offsets.is_empty() && handoff.done.is_empty());
        let why = stage.fatal.take().expect("the node must stop");
        assert!(why.contains("injected bug"), "{why}");
        assert_eq!(counters.retries.load(Relaxed), u64::from(MAX_PANICS - 1));

        let (failure, stop) = (Failure::default(), AtomicBool::new(false));
        fail(&failure, &stop, why);
        assert!(stop.load(Ordering::Acquire));
        assert!(failure.lock().is_some());
    }
}
