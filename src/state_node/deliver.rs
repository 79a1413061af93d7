//! Steps 5–6 of the state node, on their own thread so the next batch is applied meanwhile:
//! build one done event per write from its fate, publish them ([`publish`](super::publish)), wait
//! until the broker acknowledged all of them, count the batch's fates, then commit its offsets.
//! A batch's outcomes are all counted here, once, just before its done events are published (an
//! abandoned batch is counted when it is replayed; one left undelivered at a shutdown deadline is
//! counted again by the node that replays it).
//!
//! Commits are asynchronous in the steady state (a lost commit only means a harmless replay) and
//! synchronous at a barrier — before partitions are revoked and on shutdown — so the next owner
//! starts exactly after what this node finished. A barrier commits, synchronously, every offset
//! delivered since the last synchronous commit, also when it arrives alone (a batch of no
//! records): an asynchronous commit may still be in flight, or may have failed, when the
//! partitions move.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use hashbrown::HashMap;

use super::apply::{AppliedBatch, Fate};
use super::lifecycle::Lifecycle;
use super::metrics::Counters;
use super::publish::{done_report, publish};
use crate::bus::consumer::{commit, release, CommitKind, GroupConsumer};
use crate::bus::producer::EventProducer;
use crate::event::{now_micros, DoneEvent, WriteEvent, TOPIC_SET_DEL};
use crate::Error;

/// Commit failures usually mean the partitions moved to another node (which will replay the
/// batch); retrying a few times covers a broker hiccup without stalling on a lost assignment.
const COMMIT_ATTEMPTS: u32 = 3;

/// Steps 5–6: publishes, counts and commits applied batches, in order.
pub(crate) struct Delivery {
    pub producer: EventProducer,
    pub consumer: Arc<GroupConsumer>,
    pub counters: Arc<Counters>,
    pub life: Arc<Lifecycle>,
    /// Values larger than this are left out of done events.
    pub inline_value_limit: usize,
}

impl Delivery {
    pub(crate) fn run(self, batches: Receiver<AppliedBatch>) {
        // Once a batch is left undelivered, no later batch may be committed: its offsets would
        // cover the undelivered one, whose done events would then never be published.
        let mut stuck = false;
        let mut commits = Commits::default();
        for mut batch in batches {
            stuck = stuck || batch.abandoned || !self.deliver(&mut batch, &mut commits);
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

    /// Publishes, counts and commits one batch; false when its done events could not be
    /// delivered.
    fn deliver(&self, batch: &mut AppliedBatch, commits: &mut Commits) -> bool {
        if !batch.verdicts.is_empty() {
            let verdicts = std::mem::take(&mut batch.verdicts);
            // Counted before the done events go out, so whoever sees one finds it counted.
            self.count(&verdicts);
            // The events become their done reports (no copy of their values).
            let done: Vec<DoneEvent> = verdicts
                .into_iter()
                .map(|(event, fate)| done_report(event, &fate, self.inline_value_limit))
                .collect();
            let published = self.life.retry("publish done events", &self.counters, || {
                publish(&self.producer, &done)
            });
            if let Err(e) = published {
                log::warn!(target: "distcache::state_node",
                    "done events not delivered, batch left uncommitted (it will be replayed): {e}");
                return false;
            }
            self.counters
                .published
                .fetch_add(done.len() as u64, Relaxed);
            if let Some(applied_at) = batch.applied_at {
                let took = applied_at.elapsed();
                self.counters.trace_done_us.record(took.as_micros() as u64);
                log::debug!(target: "distcache::trace",
                    "{} done events acknowledged {:.3} ms after the apply", done.len(),
                    took.as_secs_f64() * 1000.0);
            }
        }
        let sync = batch.barrier.is_some() || batch.last;
        let Some((offsets, kind)) = commits.next(&batch.next_offsets, sync) else {
            return true;
        };
        self.commit(&offsets, kind);
        // Delivered, committed or not: a later commit covers it, or the owner replays it.
        true
    }

    /// Counts a batch's fates, and the end-to-end latency of its applied writes.
    fn count(&self, verdicts: &[(WriteEvent, Fate)]) {
        let c = &self.counters;
        let now = now_micros();
        let mut oldest = now;
        for (event, fate) in verdicts {
            match fate {
                Fate::Applied => {
                    c.applied.fetch_add(1, Relaxed);
                    c.end_to_end_us
                        .record(now.saturating_sub(event.produced_at_us));
                    oldest = oldest.min(event.produced_at_us);
                }
                Fate::Stale => {
                    c.stale_dropped.fetch_add(1, Relaxed);
                }
                Fate::Failed { bad_version } => {
                    c.failed.fetch_add(1, Relaxed);
                    if *bad_version {
                        c.bad_versions.fetch_add(1, Relaxed);
                    }
                }
                // Counted as deduplicated when the batch was planned.
                Fate::Superseded => {}
                Fate::Refused => {
                    c.future_refused.fetch_add(1, Relaxed);
                }
            }
        }
        c.lag_ms.store(now.saturating_sub(oldest) / 1000, Relaxed);
    }

    fn commit(&self, offsets: &HashMap<i32, i64>, kind: CommitKind) {
        let c = &self.counters;
        for attempt in 1..=COMMIT_ATTEMPTS {
            match commit(&self.consumer, TOPIC_SET_DEL, offsets, kind) {
                Ok(()) => {
                    c.commits.fetch_add(1, Relaxed);
                    return;
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
