//! Step 1 of the state node: the consumer thread. It polls the set-del topic and hands records,
//! in order, to the channel the batcher reads. The channel is bounded in records and, through a
//! [`ByteBudget`], in bytes: when either is full the thread waits — back-pressure instead of an
//! unbounded queue.
//!
//! Only contiguous records are handed over. Each record is checked against the partition's next
//! expected offset ([`OffsetTracker`]): a jump is a hole, re-read by seeking back, so the batcher
//! never sees a record past a missing one and the pipeline never commits past a hole. A hole that
//! persists through the bounded re-reads is logged as an error, counted and passed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, SendTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

use super::lifecycle::Lifecycle;
use super::metrics::Counters;
use crate::bus::admin::ensure_topics;
use crate::bus::consumer::{
    describe, poll_record, release, reread, GroupConsumer, Polled, Record, POLL_INTERVAL,
};
use crate::bus::errlog::ErrorLog;
use crate::bus::offsets::{OffsetTracker, Verdict};
use crate::bus::KafkaConfig;
use crate::event::{TOPIC_DONE, TOPIC_SET_DEL};

/// How long a barrier may take before the consumer gives up waiting (a rebalance must not hang).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);
/// A vanished topic (broker restarted with memory storage) is re-created at most this often.
const TOPIC_RECHECK: Duration = Duration::from_secs(5);

/// What the intake thread hands to the batcher, in consumption order.
pub(crate) enum Intake {
    Record(Record),
    /// Finish and commit everything received so far, then acknowledge. Sent before partitions
    /// are revoked and on shutdown, so no record is left uncommitted by a node that owned it.
    Barrier(Sender<()>),
    /// The intake has stopped for good: finish this batch and end.
    Stop,
}

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

/// Bytes of records handed to the batcher and not yet taken by it.
pub(crate) struct ByteBudget {
    used: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> Self {
        ByteBudget {
            used: Mutex::new(0),
            freed: Condvar::new(),
            limit,
        }
    }

    /// Waits until `bytes` more fit in the budget and takes them. A record larger than the whole
    /// budget is let through alone. False (nothing taken) if `stop` was set meanwhile.
    pub(crate) fn acquire(&self, bytes: usize, stop: &AtomicBool) -> bool {
        let mut used = self.used.lock();
        while *used > 0 && used.saturating_add(bytes) > self.limit {
            if stop.load(Ordering::Acquire) {
                return false;
            }
            self.freed.wait_for(&mut used, POLL_INTERVAL);
        }
        *used = used.saturating_add(bytes);
        true
    }

    /// Gives `bytes` back (the batcher took the record).
    pub(crate) fn release(&self, bytes: usize) {
        let mut used = self.used.lock();
        *used = used.saturating_sub(bytes);
        self.freed.notify_all();
    }

    /// Bytes taken now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        *self.used.lock()
    }
}

pub(crate) struct IntakeThread {
    pub consumer: Arc<GroupConsumer>,
    pub tx: Sender<Intake>,
    pub life: Arc<Lifecycle>,
    pub counters: Arc<Counters>,
    pub kafka: KafkaConfig,
    /// Next expected offset per assigned partition (the consumer's rebalance callback sets
    /// where each partition starts).
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub budget: Arc<ByteBudget>,
}

impl IntakeThread {
    pub(crate) fn run(self) {
        // If this thread dies, the batcher must still learn that no more records come, or
        // shutdown would wait for it forever.
        let _stop_on_panic = StopOnPanic(&self.tx);
        let mut last_topic_check: Option<Instant> = None;
        let errors = ErrorLog::new("distcache::state_node");
        'poll: while !self.life.stopping() {
            match poll_record(&self.consumer, POLL_INTERVAL) {
                Polled::Idle => {}
                Polled::Record(record) => {
                    if !self.admit(&record) {
                        continue;
                    }
                    self.counters.consumed.fetch_add(1, Ordering::Relaxed);
                    let bytes = record.footprint();
                    if !self.budget.acquire(bytes, self.life.stop_flag()) {
                        // Not handed over, so never committed: replayed after restart.
                        break 'poll;
                    }
                    let mut item = Intake::Record(record);
                    loop {
                        match self.tx.send_timeout(item, POLL_INTERVAL) {
                            Ok(()) => break,
                            Err(SendTimeoutError::Timeout(back)) => {
                                if self.life.stopping() {
                                    self.budget.release(bytes);
                                    break 'poll;
                                }
                                item = back;
                            }
                            Err(SendTimeoutError::Disconnected(_)) => {
                                self.budget.release(bytes);
                                break 'poll;
                            }
                        }
                    }
                }
                Polled::Trouble(trouble) => {
                    self.counters
                        .consumer_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if trouble.fatal {
                        // Nothing polled from here on would ever bring records again: leave, so
                        // a supervisor starts a node that joins afresh.
                        self.life.fail(format!(
                            "the kafka consumer failed for good: {}",
                            trouble.message
                        ));
                        break 'poll;
                    }
                    errors.report(&format!("consumer error: {}", trouble.message));
                    let due = last_topic_check.is_none_or(|t| t.elapsed() >= TOPIC_RECHECK);
                    if due && trouble.unknown_topic {
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
        release(self.consumer);
    }
}

impl IntakeThread {
    /// Whether `record` is the next one of its partition and goes to the batcher. A record past a
    /// hole is dropped and the partition re-read from the hole; a hole that persists is passed.
    fn admit(&self, record: &Record) -> bool {
        let verdict = self.tracker.lock().check(record.partition, record.offset);
        let (p, o) = (record.partition, record.offset);
        match verdict {
            Verdict::Accept => true,
            Verdict::Reread { expected, wait, .. } => {
                self.counters.holes_reread.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: "distcache::state_node", "{}", describe(TOPIC_SET_DEL, p, o, verdict));
                reread(
                    &self.consumer,
                    TOPIC_SET_DEL,
                    p,
                    expected,
                    wait,
                    self.life.stop_flag(),
                );
                false
            }
            Verdict::Skip { .. } => {
                self.counters.holes_skipped.fetch_add(1, Ordering::Relaxed);
                log::error!(target: "distcache::state_node", "{}", describe(TOPIC_SET_DEL, p, o, verdict));
                true
            }
            Verdict::Regressed { .. } => {
                // The consumer was reset (e.g. the broker lost its log): process from here on;
                // replays are harmless, the version check in Redis keeps the newest write.
                log::warn!(target: "distcache::state_node", "{}; continuing from there",
                    describe(TOPIC_SET_DEL, p, o, verdict));
                true
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn the_byte_budget_holds_the_producer_until_bytes_are_released() {
        let budget = Arc::new(ByteBudget::new(1000));
        let stop = AtomicBool::new(false);
        assert!(budget.acquire(600, &stop));
        assert!(budget.acquire(400, &stop));
        assert_eq!(budget.used(), 1000);
        let waiting = {
            let budget = budget.clone();
            thread::spawn(move || {
                let started = Instant::now();
                assert!(budget.acquire(300, &AtomicBool::new(false)));
                started.elapsed()
            })
        };
        thread::sleep(Duration::from_millis(150));
        assert_eq!(budget.used(), 1000, "nothing taken while over budget");
        budget.release(600);
        let waited = waiting.join().unwrap();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert_eq!(budget.used(), 700);
    }

    #[test]
    fn a_record_larger_than_the_budget_passes_alone() {
        let budget = ByteBudget::new(100);
        let stop = AtomicBool::new(false);
        assert!(budget.acquire(5000, &stop));
        // The next one waits for it; with stop set it gives up without taking anything.
        stop.store(true, Ordering::Release);
        assert!(!budget.acquire(1, &stop));
        assert_eq!(budget.used(), 5000);
        budget.release(5000);
        assert!(budget.acquire(1, &stop));
    }

    #[test]
    fn the_intake_channel_is_bounded_in_bytes() {
        // Records of 10 KiB into a budget of 64 KiB: at most 6 wait in the channel, however many
        // records it could hold.
        use super::super::batcher::Batcher;
        let budget = Arc::new(ByteBudget::new(64 * 1024));
        let (tx, rx) = bounded(10_000);
        let queued = rx.clone();
        let batcher = Batcher::new(rx, 10_000, Duration::ZERO, budget.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (budget, stop) = (budget.clone(), stop.clone());
            thread::spawn(move || {
                for offset in 0..100 {
                    let record = Record {
                        partition: 0,
                        offset,
                        payload: Some(vec![0; 10 * 1024]),
                    };
                    let bytes = record.footprint();
                    assert!(budget.acquire(bytes, &stop));
                    tx.send(Intake::Record(record)).unwrap();
                }
            })
        };
        thread::sleep(Duration::from_millis(100));
        assert!(budget.used() <= 64 * 1024, "{}", budget.used());
        assert_eq!(queued.len(), 6, "the channel holds what fits in the budget");
        let mut seen = 0;
        while seen < 100 {
            let batch = batcher.next_batch();
            assert!(queued.len() <= 6, "{}", queued.len());
            seen += batch.records.len();
        }
        producer.join().unwrap();
        assert_eq!(budget.used(), 0);
    }
}
