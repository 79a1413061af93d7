//! Step 2 of the state node: cut the consumed stream into batches of at most `max_batch` records,
//! waiting at most `max_wait` after the first record of a batch.

use std::time::{Duration, Instant};

use std::sync::Arc;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::intake::{ByteBudget, Intake};
use crate::bus::consumer::Record;

/// One unit of work for the pipeline.
#[derive(Default)]
pub(crate) struct Batch {
    pub records: Vec<Record>,
    /// Acknowledge once this batch is committed.
    pub barrier: Option<Sender<()>>,
    /// The intake is gone: this is the last batch.
    pub last: bool,
}

pub(crate) struct Batcher {
    rx: Receiver<Intake>,
    max_batch: usize,
    max_wait: Duration,
    /// The intake's byte bound: bytes are given back as records leave the channel.
    budget: Arc<ByteBudget>,
}

impl Batcher {
    pub(crate) fn new(
        rx: Receiver<Intake>,
        max_batch: usize,
        max_wait: Duration,
        budget: Arc<ByteBudget>,
    ) -> Self {
        Batcher {
            rx,
            max_batch,
            max_wait,
            budget,
        }
    }

    fn take(&self, batch: &mut Batch, record: Record) {
        self.budget.release(record.footprint());
        batch.records.push(record);
    }

    /// Blocks for the next batch. A batch is cut at `max_batch` records, `max_wait` after its
    /// first record, or at a barrier.
    pub(crate) fn next_batch(&self) -> Batch {
        match self.rx.recv() {
            Ok(first) => self.batch_from(first),
            Err(_) => Batch {
                last: true,
                ..Batch::default()
            },
        }
    }

    /// The next batch if its first record (or barrier) has already arrived, without waiting
    /// for one; cut like [`next_batch`](Self::next_batch).
    pub(crate) fn ready_batch(&self) -> Option<Batch> {
        self.rx.try_recv().ok().map(|first| self.batch_from(first))
    }

    fn batch_from(&self, first: Intake) -> Batch {
        let mut batch = Batch::default();
        match first {
            Intake::Record(r) => self.take(&mut batch, r),
            Intake::Barrier(ack) => {
                batch.barrier = Some(ack);
                return batch;
            }
            Intake::Stop => {
                batch.last = true;
                return batch;
            }
        }
        let deadline = Instant::now() + self.max_wait;
        while batch.records.len() < self.max_batch {
            match self.rx.recv_deadline(deadline) {
                Ok(Intake::Record(r)) => self.take(&mut batch, r),
                Ok(Intake::Barrier(ack)) => {
                    batch.barrier = Some(ack);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Ok(Intake::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    batch.last = true;
                    break;
                }
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    fn budget() -> Arc<ByteBudget> {
        Arc::new(ByteBudget::new(usize::MAX))
    }

    fn rec(offset: i64) -> Intake {
        Intake::Record(Record {
            partition: 0,
            offset,
            payload: None,
        })
    }

    #[test]
    fn cuts_at_size_barrier_and_disconnect() {
        let (tx, rx) = bounded(16);
        let b = Batcher::new(rx, 3, Duration::from_secs(5), budget());
        for i in 0..4 {
            tx.send(rec(i)).unwrap();
        }
        assert_eq!(b.next_batch().records.len(), 3);
        let (ack, _ack_rx) = bounded(1);
        tx.send(Intake::Barrier(ack)).unwrap();
        let batch = b.next_batch();
        assert_eq!(batch.records.len(), 1);
        assert!(batch.barrier.is_some());
        tx.send(rec(9)).unwrap();
        drop(tx);
        let batch = b.next_batch();
        assert_eq!(batch.records.len(), 1);
        assert!(batch.last);
    }

    #[test]
    fn a_ready_batch_never_waits_for_its_first_record() {
        let (tx, rx) = bounded(16);
        let b = Batcher::new(rx, 100, Duration::from_secs(5), budget());
        let started = Instant::now();
        assert!(b.ready_batch().is_none(), "nothing has arrived");
        assert!(started.elapsed() < Duration::from_secs(1));
        tx.send(rec(1)).unwrap();
        tx.send(rec(2)).unwrap();
        let (ack, _ack_rx) = bounded(1);
        tx.send(Intake::Barrier(ack)).unwrap();
        let batch = b.ready_batch().expect("records are there");
        assert_eq!(batch.records.len(), 2);
        assert!(
            batch.barrier.is_some(),
            "cut at the barrier, as next_batch cuts"
        );
        drop(tx);
        assert!(
            b.ready_batch().is_none(),
            "a closed, empty intake has nothing ready"
        );
        assert!(b.next_batch().last);
    }

    #[test]
    fn cuts_after_max_wait() {
        let (tx, rx) = bounded(16);
        let b = Batcher::new(rx, 100, Duration::from_millis(20), budget());
        tx.send(rec(1)).unwrap();
        let started = Instant::now();
        assert_eq!(b.next_batch().records.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
