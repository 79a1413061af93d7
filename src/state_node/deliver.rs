//! Steps 5–6 of the state node, on their own thread so the next batch is applied meanwhile:
//! publish a batch's done events, wait until the broker acknowledged all of them, then commit the
//! batch's offsets.
//!
//! Commits are asynchronous in the steady state (a lost commit only means a harmless replay) and
//! synchronous at a barrier — before partitions are revoked and on shutdown — so the next owner
//! starts exactly after what this node finished. A barrier commits, synchronously, every offset
//! delivered since the last synchronous commit, also when it arrives alone (a batch of no
//! records): an asynchronous commit may still be in flight, or may have failed, when the
//! partitions move.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use hashbrown::HashMap;
use parking_lot::Mutex;

use super::metrics::Counters;
use super::pipeline::retry;
use super::publish::publish;
use crate::bus::consumer::{commit, release, CommitKind, GroupConsumer};
use crate::bus::producer::EventProducer;
use crate::event::{now_micros, Event, TOPIC_SET_DEL};
use crate::Error;

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
    /// With trace on: when Redis answered for this batch.
    pub applied_at: Option<Instant>,
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
        let mut commits = Commits::default();
        for batch in batches {
            stuck = stuck || batch.abandoned || !self.deliver(&batch, &mut commits);
            if stuck && !batch.next_offsets.is_empty() {
                log::warn!(target: "distcache::state_node",
                    "leaving a batch uncommitted after an undelivered one (it will be replayed)");
            }
            if let Some(ack) = batch.barrier {
                let _ = ack.send(());
            }
        }
        release(self.consumer);
    }

    /// Publishes and commits one batch; false when its done events could not be delivered.
    fn deliver(&self, batch: &Handoff, commits: &mut Commits) -> bool {
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
            if let Some(applied_at) = batch.applied_at {
                let took = applied_at.elapsed();
                c.trace_done_us.record(took.as_micros() as u64);
                log::debug!(target: "distcache::trace",
                    "{} done events acknowledged {:.3} ms after the apply", batch.done.len(),
                    took.as_secs_f64() * 1000.0);
            }
        }
        let sync = batch.barrier.is_some() || batch.last;
        let Some((offsets, kind)) = commits.next(&batch.next_offsets, sync) else {
            return true;
        };
        for attempt in 1..=COMMIT_ATTEMPTS {
            match commit(&self.consumer, TOPIC_SET_DEL, &offsets, kind) {
                Ok(()) => {
                    c.commits.fetch_add(1, Relaxed);
                    return true;
                }
                // A commit that got no answer within the request timeout is not tried again: the
                // broker is unreachable, and the batch is replayed by the partitions' next owner.
                Err(e) if attempt < COMMIT_ATTEMPTS && !matches!(e, Error::Timeout { .. }) => {
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

/// Which offsets to commit, and how: asynchronously after each batch, synchronously at a barrier,
/// where everything since the last synchronous commit is committed again.
#[derive(Debug, Default)]
pub(crate) struct Commits {
    /// Next offset per partition delivered since the last synchronous commit.
    since_sync: HashMap<i32, i64>,
}

impl Commits {
    /// The commit for a delivered batch with `offsets` (its next offset per partition); `sync` at
    /// a barrier or the last batch. `None`: nothing to commit.
    pub(crate) fn next(
        &mut self,
        offsets: &HashMap<i32, i64>,
        sync: bool,
    ) -> Option<(HashMap<i32, i64>, CommitKind)> {
        // Batches are delivered in order, so the latest batch says where each partition
        // continues (also after a log that went back).
        for (&partition, &next) in offsets {
            self.since_sync.insert(partition, next);
        }
        if sync {
            // After a barrier the partitions may move: a later batch starts a fresh account,
            // whether or not this commit succeeds (if not, the next owner replays).
            let all = std::mem::take(&mut self.since_sync);
            return (!all.is_empty()).then_some((all, CommitKind::Barrier));
        }
        (!offsets.is_empty()).then(|| (offsets.clone(), CommitKind::Background))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pairs: &[(i32, i64)]) -> HashMap<i32, i64> {
        pairs.iter().copied().collect()
    }

    /// `(offsets, synchronous)` of a planned commit.
    fn next(
        c: &mut Commits,
        pairs: &[(i32, i64)],
        sync: bool,
    ) -> Option<(HashMap<i32, i64>, bool)> {
        c.next(&offsets(pairs), sync)
            .map(|(o, kind)| (o, kind == CommitKind::Barrier))
    }

    #[test]
    fn a_barrier_alone_commits_everything_since_the_last_sync_commit() {
        let mut c = Commits::default();
        assert_eq!(
            next(&mut c, &[(0, 5), (1, 3)], false),
            Some((offsets(&[(0, 5), (1, 3)]), false))
        );
        assert_eq!(
            next(&mut c, &[(0, 9)], false),
            Some((offsets(&[(0, 9)]), false))
        );
        // A barrier with no records of its own.
        assert_eq!(
            next(&mut c, &[], true),
            Some((offsets(&[(0, 9), (1, 3)]), true)),
            "a lone barrier still commits synchronously"
        );
        // Nothing since: a second barrier has nothing to commit.
        assert_eq!(next(&mut c, &[], true), None);
        assert_eq!(next(&mut c, &[], false), None);
    }

    #[test]
    fn a_partition_continues_where_its_latest_batch_ends() {
        let mut c = Commits::default();
        next(&mut c, &[(0, 40)], false);
        // The log went back (the broker lost it) and the node carried on from offset 3.
        next(&mut c, &[(0, 4)], false);
        assert_eq!(next(&mut c, &[], true), Some((offsets(&[(0, 4)]), true)));
    }

    #[test]
    fn a_barrier_with_records_commits_them_with_the_earlier_ones() {
        let mut c = Commits::default();
        next(&mut c, &[(2, 7)], false);
        assert_eq!(
            next(&mut c, &[(3, 1)], true),
            Some((offsets(&[(2, 7), (3, 1)]), true))
        );
    }
}
