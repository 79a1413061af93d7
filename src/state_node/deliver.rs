//! Steps 5–6 of the state node, on their own thread so the next batch is applied meanwhile:
//! publish a batch's done events, wait until the broker acknowledged all of them, then commit the
//! batch's offsets.
//!
//! Commits are asynchronous in the steady state (a lost commit only means a harmless replay) and
//! synchronous at a barrier — before partitions are revoked and on shutdown — so the next owner
//! starts exactly after what this node finished.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use hashbrown::HashMap;
use parking_lot::Mutex;
use rdkafka::consumer::CommitMode;

use super::metrics::Counters;
use super::pipeline::retry;
use super::publish::publish;
use crate::bus::consumer::{commit, GroupConsumer};
use crate::bus::producer::EventProducer;
use crate::event::{now_micros, Event, TOPIC_SET_DEL};

/// Commit failures usually mean the partitions moved to another node (which will replay the
/// batch); retrying a few times covers a broker hiccup without stalling on a lost assignment.
const COMMIT_ATTEMPTS: u32 = 3;

/// An applied batch on its way out.
pub(crate) struct Handoff {
    pub done: Vec<Event>,
    /// How many of `done` are applied writes (the rest are stale markers).
    pub applied: u64,
    pub next_offsets: HashMap<i32, i64>,
    /// Acknowledge once this batch is committed.
    pub barrier: Option<Sender<()>>,
    pub last: bool,
    /// The apply stage gave up on this batch (shutdown deadline passed).
    pub abandoned: bool,
    /// `produced_at_us` of each applied write, for the end-to-end latency.
    pub latency_from: Vec<u64>,
}

pub(crate) struct Delivery<'a> {
    pub producer: EventProducer,
    pub consumer: Arc<GroupConsumer>,
    pub counters: &'a Counters,
    pub give_up_at: &'a Mutex<Option<Instant>>,
}

impl Delivery<'_> {
    pub(crate) fn run(self, batches: Receiver<Handoff>) {
        // Once a batch is left undelivered, no later batch may be committed: its offsets would
        // cover the undelivered one, whose done events would then never be published.
        let mut stuck = false;
        for batch in batches {
            stuck = stuck || batch.abandoned || !self.deliver(&batch);
            if stuck && !batch.next_offsets.is_empty() {
                log::warn!(target: "distcache::state_node",
                    "leaving a batch uncommitted after an undelivered one (it will be replayed)");
            }
            if let Some(ack) = batch.barrier {
                let _ = ack.send(());
            }
        }
    }

    /// Publishes and commits one batch; false when its done events could not be delivered.
    fn deliver(&self, batch: &Handoff) -> bool {
        let c = self.counters;
        if !batch.done.is_empty() {
            let published = retry("publish done events", c, self.give_up_at, || {
                publish(&self.producer, &batch.done)
            });
            if let Err(e) = published {
                log::warn!(target: "distcache::state_node",
                    "done events not delivered, batch left uncommitted (it will be replayed): {e}");
                return false;
            }
            c.applied.fetch_add(batch.applied, Relaxed);
            c.published.fetch_add(batch.done.len() as u64, Relaxed);
            self.record_latency(&batch.latency_from);
        }
        if batch.next_offsets.is_empty() {
            return true;
        }
        let mode = if batch.barrier.is_some() || batch.last {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        for attempt in 1..=COMMIT_ATTEMPTS {
            match commit(&self.consumer, TOPIC_SET_DEL, &batch.next_offsets, mode) {
                Ok(()) => {
                    c.commits.fetch_add(1, Relaxed);
                    return true;
                }
                Err(e) if attempt < COMMIT_ATTEMPTS => {
                    c.retries.fetch_add(1, Relaxed);
                    log::warn!(target: "distcache::state_node", "commit failed, retrying: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => log::warn!(target: "distcache::state_node",
                    "commit failed; the batch will be replayed by the partitions' owner: {e}"),
            }
        }
        // Delivered but not committed: a later commit covers it, or the owner replays it.
        true
    }

    fn record_latency(&self, produced_at: &[u64]) {
        let now = now_micros();
        let mut oldest = now;
        for &at in produced_at {
            self.counters.end_to_end_us.record(now.saturating_sub(at));
            oldest = oldest.min(at);
        }
        self.counters
            .lag_ms
            .store(now.saturating_sub(oldest) / 1000, Relaxed);
    }
}
