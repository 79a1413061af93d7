//! Wires steps 2–6 of the state node together: the [`batcher`](super::batcher) cuts batches, the
//! [`apply`](super::apply) stage applies one batch at a time, and the [`deliver`](super::deliver)
//! stage publishes and commits it on its own thread while the next batch is applied.
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
            loop {
                let (batch, must_stop) = apply.apply(batcher.next_batch());
                let last = batch.last;
                let delivered = handoff_tx.send(batch).is_ok();
                if let Some(why) = must_stop {
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
