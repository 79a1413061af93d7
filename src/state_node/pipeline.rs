//! Steps 3–6 of the state node, one batch at a time: plan, apply to Redis, publish done events,
//! commit offsets.
//!
//! Invariant: offsets are committed only after every event of the batch was applied (or found
//! stale, malformed or refused) and every done event was acknowledged by the broker. A failure
//! before the commit retries with backoff; if the node dies instead, the batch is replayed after
//! restart and the version check in Redis makes the replay harmless.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::apply::{Outcome, RedisWorkers};
use super::batcher::Batcher;
use super::metrics::Counters;
use super::plan::{plan, AppliedVersions};
use super::publish::{self, publish};
use crate::bus::consumer::{commit, GroupConsumer, Record};
use crate::bus::producer::EventProducer;
use crate::event::{now_micros, Event, TOPIC_SET_DEL};
use crate::{Error, Result};

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Commit failures usually mean the partitions moved to another node (which will replay the
/// batch); retrying a few times covers a broker hiccup without stalling on a lost assignment.
const COMMIT_ATTEMPTS: u32 = 3;

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
}

impl Pipeline {
    pub(crate) fn run(mut self) {
        loop {
            let batch = self.batcher.next_batch();
            if !batch.records.is_empty() {
                if let Err(e) = self.process(batch.records) {
                    log::warn!(target: "distcache::state_node",
                        "batch abandoned uncommitted (it will be replayed): {e}");
                }
            }
            if let Some(ack) = batch.barrier {
                let _ = ack.send(());
            }
            if batch.last {
                return;
            }
        }
    }

    fn process(&mut self, records: Vec<Record>) -> Result<()> {
        let c = &self.counters;
        c.batches.fetch_add(1, Relaxed);
        c.batch_size.record(records.len() as u64);
        let plan = plan(records, &mut self.applied);
        c.malformed.fetch_add(plan.malformed, Relaxed);
        c.deduped.fetch_add(plan.deduped, Relaxed);

        let started = Instant::now();
        let outcomes = self.retry("apply to redis", |p| p.workers.apply(&plan.writes))?;
        self.counters
            .apply_latency_us
            .record(started.elapsed().as_micros() as u64);

        let mut done = Vec::with_capacity(plan.writes.len() + plan.stale.len());
        let mut applied_count = 0;
        for (event, outcome) in plan.writes.iter().zip(outcomes) {
            match outcome {
                Outcome::Applied => {
                    applied_count += 1;
                    self.applied
                        .put((event.ns.clone(), event.key.clone()), event.version);
                    done.push(publish::applied(event, self.inline_value_limit));
                }
                Outcome::Stale => {
                    self.counters.stale_dropped.fetch_add(1, Relaxed);
                    done.push(publish::stale(event));
                }
                Outcome::Failed(why) => {
                    self.counters.failed.fetch_add(1, Relaxed);
                    log::warn!(target: "distcache::state_node",
                        "redis refused {}/{} at {}: {why}", event.ns, event.key, event.version);
                }
            }
        }
        self.counters
            .stale_dropped
            .fetch_add(plan.stale.len() as u64, Relaxed);
        done.extend(plan.stale.iter().map(publish::stale));

        self.retry("publish done events", |p| publish(&p.producer, &done))?;
        self.counters.applied.fetch_add(applied_count, Relaxed);
        self.counters
            .published
            .fetch_add(done.len() as u64, Relaxed);
        self.record_latency(&plan.writes);

        let mut attempt = 0;
        loop {
            attempt += 1;
            match commit(&self.consumer, TOPIC_SET_DEL, &plan.next_offsets) {
                Ok(()) => {
                    self.counters.commits.fetch_add(1, Relaxed);
                    break;
                }
                Err(e) if attempt < COMMIT_ATTEMPTS => {
                    self.counters.retries.fetch_add(1, Relaxed);
                    log::warn!(target: "distcache::state_node", "commit failed, retrying: {e}");
                    std::thread::sleep(FIRST_BACKOFF);
                }
                Err(e) => {
                    log::warn!(target: "distcache::state_node",
                        "commit failed; the batch will be replayed by the partitions' owner: {e}");
                    break;
                }
            }
        }
        Ok(())
    }

    fn record_latency(&self, events: &[Event]) {
        let now = now_micros();
        let mut oldest = now;
        for e in events {
            self.counters
                .end_to_end_us
                .record(now.saturating_sub(e.produced_at_us));
            oldest = oldest.min(e.produced_at_us);
        }
        self.counters
            .lag_ms
            .store(now.saturating_sub(oldest) / 1000, Relaxed);
    }

    /// Runs `step` until it succeeds, backing off between attempts. Gives up only once shutdown
    /// set a deadline and it passed.
    fn retry<R>(&mut self, what: &str, mut step: impl FnMut(&mut Self) -> Result<R>) -> Result<R> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match step(self) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    if let Some(deadline) = *self.give_up_at.lock() {
                        if Instant::now() >= deadline {
                            return Err(e);
                        }
                    }
                    if matches!(e, Error::Shutdown) {
                        return Err(e);
                    }
                    self.counters.retries.fetch_add(1, Relaxed);
                    log::warn!(target: "distcache::state_node", "{what} failed, retrying in {backoff:?}: {e}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
