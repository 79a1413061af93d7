//! Step 1 of the state node: the consumer thread. It polls the set-del topic and hands records,
//! in order, to the bounded channel the batcher reads. A full channel blocks it: back-pressure
//! instead of an unbounded queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, SendTimeoutError, Sender};

use super::batcher::Intake;
use super::metrics::Counters;
use crate::bus::admin::ensure_topics;
use crate::bus::consumer::{GroupConsumer, Record, POLL_INTERVAL};
use crate::bus::KafkaConfig;
use crate::event::{TOPIC_DONE, TOPIC_SET_DEL};

/// How long a barrier may take before the consumer gives up waiting (a rebalance must not hang).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);
/// A vanished topic (broker restarted with memory storage) is re-created at most this often.
const TOPIC_RECHECK: Duration = Duration::from_secs(5);

/// Asks the batcher to finish and commit everything sent so far, and waits for it.
pub(crate) fn barrier(tx: &Sender<Intake>) {
    let (ack, done) = bounded(1);
    if tx
        .send_timeout(Intake::Barrier(ack), BARRIER_TIMEOUT)
        .is_ok()
        && done.recv_timeout(BARRIER_TIMEOUT).is_err()
    {
        log::warn!(target: "distcache::state_node", "barrier not acknowledged in {BARRIER_TIMEOUT:?}");
    }
}

pub(crate) struct IntakeThread {
    pub consumer: Arc<GroupConsumer>,
    pub tx: Sender<Intake>,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    pub kafka: KafkaConfig,
}

impl IntakeThread {
    pub(crate) fn run(self) {
        // If this thread dies, the batcher must still learn that no more records come, or
        // shutdown would wait for it forever.
        let _stop_on_panic = StopOnPanic(&self.tx);
        let mut last_topic_check: Option<Instant> = None;
        'poll: while !self.stop.load(Ordering::Acquire) {
            match self.consumer.poll(POLL_INTERVAL) {
                None => {}
                Some(Ok(msg)) => {
                    self.counters.consumed.fetch_add(1, Ordering::Relaxed);
                    let mut item = Intake::Record(Record::from_message(&msg));
                    loop {
                        match self.tx.send_timeout(item, POLL_INTERVAL) {
                            Ok(()) => break,
                            Err(SendTimeoutError::Timeout(back)) => {
                                if self.stop.load(Ordering::Acquire) {
                                    // Not handed over, so never committed: replayed after restart.
                                    break 'poll;
                                }
                                item = back;
                            }
                            Err(SendTimeoutError::Disconnected(_)) => break 'poll,
                        }
                    }
                }
                Some(Err(err)) => {
                    self.counters
                        .consumer_errors
                        .fetch_add(1, Ordering::Relaxed);
                    log::warn!(target: "distcache::state_node", "consumer error: {err}");
                    let due = last_topic_check.is_none_or(|t| t.elapsed() >= TOPIC_RECHECK);
                    if due && err.to_string().contains("Unknown topic") {
                        last_topic_check = Some(Instant::now());
                        if let Err(e) = ensure_topics(&self.kafka, &[TOPIC_SET_DEL, TOPIC_DONE]) {
                            log::warn!(target: "distcache::state_node", "re-creating topics: {e}");
                        }
                    }
                }
            }
        }
        // Everything handed over so far is applied and committed before we leave the group.
        barrier(&self.tx);
        let _ = self.tx.send(Intake::Stop);
    }
}

struct StopOnPanic<'a>(&'a Sender<Intake>);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.send_timeout(Intake::Stop, BARRIER_TIMEOUT);
        }
    }
}
