//! Wires steps 2–6 of the state node together: the [`batcher`](super::batcher) cuts batches, the
//! [`apply`](super::apply) stage applies them in order, and the [`deliver`](super::deliver)
//! stage publishes and commits each on its own thread while the next ones are applied.
//!
//! Redis should never wait for the state node: while the workers apply one batch, the next one
//! (if its records have arrived) is planned and handed to them too, so at most two batches are
//! with Redis. They are finished, delivered and committed in order.
//!
//! Invariant: offsets are committed only after every event of the batch was applied (or found
//! stale, malformed or refused) and every done event was acknowledged by the broker. A failure
//! before the commit retries with backoff; if the node dies instead, the batch is replayed after
//! restart and the version check in Redis makes the replay harmless.

use std::sync::Arc;

use crossbeam_channel::bounded;

use super::apply::{AppliedBatch, ApplyStage};
use super::batcher::Batcher;
use super::deliver::Delivery;
use super::lifecycle::Lifecycle;

pub(crate) struct Pipeline {
    pub batcher: Batcher,
    pub apply: ApplyStage,
    pub delivery: Delivery,
    pub life: Arc<Lifecycle>,
}

impl Pipeline {
    pub(crate) fn run(self) {
        let Pipeline {
            batcher,
            mut apply,
            delivery,
            life,
        } = self;
        // One batch is delivered while the next is applied: the hand-off holds at most one.
        let (handoff_tx, handoff_rx) = bounded::<AppliedBatch>(1);
        std::thread::scope(|scope| {
            let deliverer = std::thread::Builder::new()
                .name("distcache-deliver".into())
                .spawn_scoped(scope, move || delivery.run(handoff_rx));
            if let Err(e) = deliverer {
                log::error!(target: "distcache::state_node", "cannot start the delivery thread: {e}");
                return;
            }
            let mut ahead = None;
            loop {
                let current = match ahead.take() {
                    Some(started) => started,
                    None => apply.begin(batcher.next_batch()),
                };
                if current.lets_next_start() {
                    ahead = batcher.ready_batch().map(|next| apply.begin(next));
                }
                let (batch, must_stop) = apply.finish(current);
                let last = batch.last;
                let delivered = handoff_tx.send(batch).is_ok();
                if let Some(why) = must_stop {
                    // A batch started behind this one is dropped unanswered: uncommitted, it is
                    // replayed by the partitions' next owner.
                    life.fail(why);
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
