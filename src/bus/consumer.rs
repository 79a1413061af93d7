//! The two ways distcache consumes: a consumer group with manual commits (state nodes) and an
//! all-partitions broadcast (core-node listeners).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::errlog::ErrorLog;
use super::offsets::{OffsetTracker, Verdict};
use super::KafkaConfig;
use crate::event::DoneEvent;
use crate::{Error, Result};

/// One consumed message, detached from the consumer.
#[derive(Debug)]
pub(crate) struct Record {
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<Vec<u8>>,
}

impl Record {
    fn from_message(msg: &rdkafka::message::BorrowedMessage<'_>) -> Record {
        use rdkafka::Message;
        Record {
            partition: msg.partition(),
            offset: msg.offset(),
            payload: msg.payload().map(<[u8]>::to_vec),
        }
    }

    /// Bytes this record holds in memory, for the intake's byte bound.
    pub(crate) fn footprint(&self) -> usize {
        std::mem::size_of::<Record>() + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// What one poll of a consumer brought.
pub(crate) enum Polled<R> {
    /// Nothing within the poll interval.
    Idle,
    Record(R),
    /// A consumer error.
    Trouble(Trouble),
}

/// A consumer error. librdkafka does not say which partition an error belongs to, so the
/// consumer's positions are part of the message.
pub(crate) struct Trouble {
    /// The error and where every assigned partition stands.
    pub message: String,
    /// The topic (or a partition of it) does not exist: it may have to be created again.
    pub unknown_topic: bool,
    /// librdkafka gave up on this consumer for good (e.g. a static member fenced by another with
    /// the same `group.instance.id`, which can follow a session that expired while the broker
    /// was away): it never rejoins its group, so its owner must stop and be started again.
    pub fatal: bool,
}

impl Trouble {
    fn new<C: ConsumerContext>(err: &KafkaError, consumer: &BaseConsumer<C>) -> Trouble {
        let unknown_topic = matches!(
            err.rdkafka_error_code(),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
        );
        let fatal = matches!(err, KafkaError::MessageConsumptionFatal(_));
        let message = match consumer.client().fatal_error().filter(|_| fatal) {
            Some((code, why)) => format!("{err}: {code:?}: {why}"),
            None => format!("{err} (positions: {})", positions(consumer)),
        };
        Trouble {
            message,
            unknown_topic,
            fatal,
        }
    }
}

/// Polls a state node's group consumer for its next record.
pub(crate) fn poll_record(consumer: &GroupConsumer, timeout: Duration) -> Polled<Record> {
    match consumer.poll(timeout) {
        None => Polled::Idle,
        Some(Ok(msg)) => Polled::Record(Record::from_message(&msg)),
        Some(Err(err)) => Polled::Trouble(Trouble::new(&err, consumer)),
    }
}

/// Places a new assignment and calls a hook before partitions are revoked, so the owner can
/// finish and commit what it holds for them first.
///
/// Every assigned partition starts at its committed offset, or at offset 0 when the group has
/// none: explicitly, not through the broker's "earliest" (tansu 0.6 answers it with the oldest
/// *written* batch, which on a fresh topic can lie past records not yet stored). A real log that
/// retention already cut is still covered by librdkafka's out-of-range reset. The start of each
/// partition is what the [`OffsetTracker`] then expects.
pub(crate) struct GroupContext {
    before_revoke: Box<dyn Fn() + Send + Sync>,
    tracker: Arc<Mutex<OffsetTracker>>,
    timeout: Duration,
    /// How many partitions the consumer holds, for the owner's metrics and health check.
    held: Arc<AtomicU64>,
}

impl ClientContext for GroupContext {}

impl GroupContext {
    /// Records how many partitions the consumer holds after a rebalance step: its assignment as
    /// librdkafka reports it, or `fallback` when it cannot say.
    fn count_held(&self, consumer: &BaseConsumer<Self>, fallback: usize) {
        let held = consumer.assignment().map_or(fallback, |tpl| tpl.count());
        self.held.store(held as u64, Ordering::Relaxed);
    }

    /// Rewrites `tpl` to start every partition at its committed offset or 0, and records the
    /// starts in the tracker. Without an answer from the coordinator the assignment is left to
    /// librdkafka (committed offset or `auto.offset.reset`) and the partitions start untracked.
    fn place(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let mut committed = None;
        for attempt in 1..=COMMITTED_ATTEMPTS {
            match consumer.committed_offsets(tpl.clone(), self.timeout) {
                Ok(c) => {
                    committed = Some(c);
                    break;
                }
                Err(e) => log::warn!(target: "distcache::bus",
                    "reading committed offsets failed (attempt {attempt}/{COMMITTED_ATTEMPTS}): {e}"),
            }
        }
        let Some(committed) = committed else {
            log::warn!(target: "distcache::bus",
                "starting the assigned partitions at librdkafka's positions, untracked");
            return;
        };
        let mut tracker = self.tracker.lock();
        let mut starts = Vec::new();
        for elem in committed.elements() {
            let start = match elem.offset() {
                Offset::Offset(o) if o >= 0 => o,
                _ => 0,
            };
            if let Err(e) =
                tpl.set_partition_offset(elem.topic(), elem.partition(), Offset::Offset(start))
            {
                log::warn!(target: "distcache::bus",
                    "cannot place partition {} at {start}: {e}", elem.partition());
                continue;
            }
            tracker.expect(elem.partition(), start);
            starts.push(format!("{}@{start}", elem.partition()));
        }
        log::info!(target: "distcache::bus", "partitions start at {}", starts.join(" "));
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.place(consumer, tpl);
                let placed = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                match placed {
                    Ok(()) => {
                        log::info!(target: "distcache::bus", "assigned {} partitions", tpl.count());
                        self.count_held(consumer, tpl.count());
                    }
                    Err(e) => {
                        log::error!(target: "distcache::bus", "assigning partitions failed: {e}")
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                log::info!(target: "distcache::bus", "revoking {} partitions", tpl.count());
                (self.before_revoke)();
                let removed = if cooperative {
                    let mut tracker = self.tracker.lock();
                    for elem in tpl.elements() {
                        tracker.forget(elem.partition());
                    }
                    consumer.incremental_unassign(tpl)
                } else {
                    self.tracker.lock().forget_all();
                    consumer.unassign()
                };
                if let Err(e) = removed {
                    log::error!(target: "distcache::bus", "unassigning partitions failed: {e}");
                }
                self.count_held(consumer, 0);
            }
            other => {
                log::error!(target: "distcache::bus", "rebalance error: {:?}", other);
                self.tracker.lock().forget_all();
                if let Err(e) = consumer.unassign() {
                    log::error!(target: "distcache::bus", "unassigning partitions failed: {e}");
                }
                self.count_held(consumer, 0);
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            log::warn!(target: "distcache::bus", "offset commit failed (the records will be replayed): {e}");
        }
    }
}

/// A consumer-group member subscribed to `topic`, auto-commit off.
pub(crate) type GroupConsumer = BaseConsumer<GroupContext>;

/// A group consumer of `topic`; `tracker` learns where each assigned partition starts, `held`
/// how many partitions it holds.
pub(crate) fn group_consumer(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
    tracker: Arc<Mutex<OffsetTracker>>,
    held: Arc<AtomicU64>,
    before_revoke: impl Fn() + Send + Sync + 'static,
) -> Result<GroupConsumer> {
    config.validate()?;
    let consumer: GroupConsumer = config
        .consumer(group)
        .create_with_context(GroupContext {
            before_revoke: Box::new(before_revoke),
            tracker,
            timeout: config.request_timeout,
            held,
        })
        .map_err(|e| Error::Config(format!("kafka consumer: {e}")))?;
    consumer.subscribe(&[topic]).map_err(Error::kafka)?;
    Ok(consumer)
}

/// How a commit waits, named for what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitKind {
    /// The steady state: returns at once; a lost commit only means a harmless replay (the consumer
    /// logs the failure).
    Background,
    /// Before partitions move or the node stops: waits for the broker's answer, so the next owner
    /// starts exactly after what this node finished.
    Barrier,
}

/// Commits "next offset to read" for each partition, as `kind` says; a barrier waits at most the
/// request timeout ([`Error::Timeout`] then).
pub(crate) fn commit(
    consumer: &Arc<GroupConsumer>,
    topic: &str,
    next_offsets: &HashMap<i32, i64>,
    kind: CommitKind,
) -> Result<()> {
    if next_offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(next_offsets.len());
    for (&partition, &next) in next_offsets {
        tpl.add_partition_offset(topic, partition, Offset::Offset(next))
            .map_err(Error::kafka)?;
    }
    match kind {
        CommitKind::Background => consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(Error::kafka),
        CommitKind::Barrier => commit_sync_bounded(consumer, tpl),
    }
}

/// librdkafka's synchronous commit waits without a limit for the group coordinator: with the
/// broker down it never returns, and a state node shutting down would hang in it. The commit runs
/// on a thread of its own and is waited for at most the request timeout; after that the thread is
/// left to finish when the broker answers (it holds the consumer until then) and the caller goes
/// on without the commit, whose records are replayed by the partitions' next owner.
fn commit_sync_bounded(consumer: &Arc<GroupConsumer>, tpl: TopicPartitionList) -> Result<()> {
    let timeout = consumer.context().timeout;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let owner = Arc::clone(consumer);
    std::thread::Builder::new()
        .name("distcache-commit".into())
        .spawn(move || {
            let _ = tx.send(owner.commit(&tpl, CommitMode::Sync));
        })
        .map_err(|e| Error::kafka(format!("cannot start a commit thread: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result.map_err(Error::kafka),
        Err(_) => Err(Error::Timeout {
            what: "synchronous offset commit (no answer from the group coordinator)".into(),
            after: timeout,
        }),
    }
}

/// Lets go of a state node's share of its group consumer. The last share closes it (leaves the
/// group), which librdkafka does without a time limit: with the broker down it never finishes. The
/// close runs on a thread of its own and is waited for at most the request timeout; after that it
/// is left to finish in the background (when the broker answers, or never), so a shutdown against
/// a dead broker ends. The group then drops the member when its session times out.
pub(crate) fn release(consumer: Arc<GroupConsumer>) {
    let timeout = consumer.context().timeout;
    // `into_inner`: exactly one of the holders gets the consumer, whatever the order they let go.
    let Some(consumer) = Arc::into_inner(consumer) else {
        return;
    };
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("distcache-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        log::warn!(target: "distcache::bus", "cannot start a thread to close the consumer: {e}");
        return;
    }
    if rx.recv_timeout(timeout).is_err() {
        log::warn!(target: "distcache::bus",
            "the consumer did not leave its group within {timeout:?} (broker unreachable); \
             closing it in the background");
    }
}

/// Logs client-level errors of a listener's consumer. librdkafka itself reports an error equal to
/// the previous one of the same broker at most once per 30 s; what it reports is logged here with
/// a rate limit that counts the repeats it holds back. Gaps are not inferred from errors: the
/// listener sees them in the offsets ([`OffsetTracker`]).
pub(crate) struct BroadcastContext {
    errors: ErrorLog,
}

impl ClientContext for BroadcastContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors
            .report(&format!("listener consumer error: {error}: {reason}"));
    }
}

impl ConsumerContext for BroadcastContext {}

/// A consumer that reads every partition of `topic`, starting at the current end, with the
/// offsets it expects next.
pub(crate) struct BroadcastConsumer {
    consumer: BaseConsumer<BroadcastContext>,
    topic: String,
    /// Next expected offset of every partition read.
    offsets: OffsetTracker,
    timeout: Duration,
}

/// One record of a broadcast topic, with the tracker's verdict on its offset.
pub(crate) struct Delivered {
    pub partition: i32,
    pub offset: i64,
    pub verdict: Verdict,
    /// The record's timestamp in Unix milliseconds (for the done topic: when the state node
    /// produced it, by its wall clock), when the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// The decoded event; `None` for a record without a payload.
    pub event: Option<Result<DoneEvent>>,
}

impl BroadcastConsumer {
    /// The topic read.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The next record, decoded, with what its offset means (see [`OffsetTracker::check`]).
    pub(crate) fn poll_event(&mut self, timeout: Duration) -> Polled<Delivered> {
        match self.consumer.poll(timeout) {
            None => Polled::Idle,
            Some(Ok(msg)) => {
                use rdkafka::Message;
                let (partition, offset) = (msg.partition(), msg.offset());
                Polled::Record(Delivered {
                    partition,
                    offset,
                    verdict: self.offsets.check(partition, offset),
                    timestamp_ms: msg.timestamp().to_millis(),
                    event: msg.payload().map(DoneEvent::decode),
                })
            }
            Some(Err(err)) => Polled::Trouble(Trouble::new(&err, &self.consumer)),
        }
    }

    /// [`reread`] for this consumer.
    pub(crate) fn reread(&self, partition: i32, offset: i64, wait: Duration, stop: &AtomicBool) {
        reread(&self.consumer, &self.topic, partition, offset, wait, stop)
    }

    /// Reads the topic's partition list and starts reading every partition not read yet at its
    /// current end. Returns the partitions added (usually none).
    pub(crate) fn refresh_partitions(&mut self) -> Result<Vec<i32>> {
        let partitions = topic_partitions(&self.consumer, &self.topic, self.timeout)?;
        let added: Vec<i32> = partitions
            .into_iter()
            .filter(|p| !self.offsets.knows(*p))
            .collect();
        if added.is_empty() {
            return Ok(added);
        }
        for &p in &added {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p, self.timeout)
                .map_err(Error::kafka)?;
            self.offsets.expect(p, high);
        }
        // Re-assign everything: the partitions read so far continue where they were expected to.
        let mut tpl = TopicPartitionList::new();
        for (p, next) in self.offsets.positions() {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(next))
                .map_err(Error::kafka)?;
        }
        self.consumer.assign(&tpl).map_err(Error::kafka)?;
        Ok(added)
    }
}

fn topic_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(Error::kafka)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::kafka(format!("topic {topic} has no partitions")));
    }
    Ok(partitions)
}

pub(crate) fn broadcast_consumer(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
) -> Result<BroadcastConsumer> {
    config.validate()?;
    let consumer: BaseConsumer<BroadcastContext> = config
        .consumer(group)
        .create_with_context(BroadcastContext {
            errors: ErrorLog::new("distcache::bus"),
        })
        .map_err(|e| Error::Config(format!("kafka consumer: {e}")))?;
    let partitions = topic_partitions(&consumer, topic, config.request_timeout)?;
    // Start at the concrete end offsets, resolved now: once this returns, every event produced
    // later is seen (an `Offset::End` would be resolved lazily and could skip early events).
    let mut offsets = OffsetTracker::new();
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, config.request_timeout)
            .map_err(Error::kafka)?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .map_err(Error::kafka)?;
        offsets.expect(p, high);
    }
    consumer.assign(&tpl).map_err(Error::kafka)?;
    Ok(BroadcastConsumer {
        consumer,
        topic: topic.to_string(),
        offsets,
        timeout: config.request_timeout.min(METADATA_TIMEOUT),
    })
}

/// Waits `wait` (less if `stop` is set meanwhile), then seeks `partition` of `topic` back to
/// `offset`, so the records from there on are fetched again. The records already fetched past
/// it are dropped by librdkafka.
pub(crate) fn reread<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    offset: i64,
    wait: Duration,
    stop: &std::sync::atomic::AtomicBool,
) {
    let until = Instant::now() + wait;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(POLL_INTERVAL));
    }
    if let Err(e) = consumer.seek(topic, partition, Offset::Offset(offset), SEEK_TIMEOUT) {
        log::warn!(target: "distcache::bus",
            "seeking {topic}/{partition} back to {offset} failed (the hole is re-read on the next record): {e}");
    }
}

/// The consumer's fetch positions, `partition@offset …`, for logging a consume error (librdkafka
/// does not tell the client which partition and offset an error belongs to).
pub(crate) fn positions<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> String {
    match consumer.position() {
        Ok(tpl) => tpl
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => format!("{}@{o}", e.partition()),
                other => format!("{}@{other:?}", e.partition()),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("unknown ({e})"),
    }
}

/// What to do with a record, and how to say so: shared by the state node and the listener.
pub(crate) fn describe(topic: &str, partition: i32, offset: i64, verdict: Verdict) -> String {
    match verdict {
        Verdict::Accept => format!("{topic}/{partition}@{offset}"),
        Verdict::Reread {
            expected, attempt, ..
        } => format!(
            "hole in {topic}/{partition}: expected offset {expected}, got {offset}; re-reading from {expected} (attempt {attempt})"
        ),
        Verdict::Skip { expected } => format!(
            "hole in {topic}/{partition} persisted: offsets {expected}..{offset} never arrived; passing it"
        ),
        Verdict::Regressed { expected } => format!(
            "{topic}/{partition} went back: expected offset {expected}, got {offset}"
        ),
    }
}

/// How long a consumer poll blocks before the owner re-checks its stop flag.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Tries to read a new assignment's committed offsets.
const COMMITTED_ATTEMPTS: u32 = 3;
/// Longest wait for a seek to take effect.
const SEEK_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for a listener's metadata refresh (it runs on the listener thread).
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
