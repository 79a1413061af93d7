//! The two ways distcache consumes: a consumer group with manual commits (state nodes) and an
//! all-partitions broadcast (core-node listeners).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::KafkaConfig;
use crate::{Error, Result};

/// One consumed message, detached from the consumer.
#[derive(Debug)]
pub(crate) struct Record {
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<Vec<u8>>,
}

impl Record {
    pub(crate) fn from_message(msg: &rdkafka::message::BorrowedMessage<'_>) -> Record {
        use rdkafka::Message;
        Record {
            partition: msg.partition(),
            offset: msg.offset(),
            payload: msg.payload().map(<[u8]>::to_vec),
        }
    }
}

/// Calls a hook before partitions are revoked, so the owner can finish and commit what it holds
/// for them first.
pub(crate) struct GroupContext {
    before_revoke: Box<dyn Fn() + Send + Sync>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            log::warn!(target: "distcache::bus", "offset commit failed (the records will be replayed): {e}");
        }
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            log::info!(target: "distcache::bus", "revoking {} partitions", tpl.count());
            (self.before_revoke)();
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            log::info!(target: "distcache::bus", "assigned {} partitions", tpl.count());
        }
    }
}

/// A consumer-group member subscribed to `topic`, auto-commit off.
pub(crate) type GroupConsumer = BaseConsumer<GroupContext>;

pub(crate) fn group_consumer(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
    before_revoke: impl Fn() + Send + Sync + 'static,
) -> Result<GroupConsumer> {
    config.validate()?;
    let consumer: GroupConsumer = config
        .consumer(group)
        .create_with_context(GroupContext {
            before_revoke: Box::new(before_revoke),
        })
        .map_err(|e| Error::Config(format!("kafka consumer: {e}")))?;
    consumer.subscribe(&[topic]).map_err(Error::kafka)?;
    Ok(consumer)
}

/// Commits "next offset to read" for each partition. `Sync` waits for the broker's answer;
/// `Async` returns at once (a failure is logged by the consumer and the records are replayed).
pub(crate) fn commit(
    consumer: &GroupConsumer,
    topic: &str,
    next_offsets: &HashMap<i32, i64>,
    mode: CommitMode,
) -> Result<()> {
    if next_offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(next_offsets.len());
    for (&partition, &next) in next_offsets {
        tpl.add_partition_offset(topic, partition, Offset::Offset(next))
            .map_err(Error::kafka)?;
    }
    consumer.commit(&tpl, mode).map_err(Error::kafka)
}

/// Records that a client-level error happened, so the listener can assume it missed events.
pub(crate) struct BroadcastContext {
    trouble: Arc<AtomicBool>,
}

impl ClientContext for BroadcastContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log::warn!(target: "distcache::bus", "listener consumer error: {error}: {reason}");
        self.trouble.store(true, Ordering::Release);
    }
}

impl ConsumerContext for BroadcastContext {}

/// A consumer that reads every partition of `topic`, starting at the current end.
pub(crate) struct BroadcastConsumer {
    pub consumer: BaseConsumer<BroadcastContext>,
    /// Set when the client reported an error: events may have been missed.
    pub trouble: Arc<AtomicBool>,
}

pub(crate) fn broadcast_consumer(
    config: &KafkaConfig,
    group: &str,
    topic: &str,
) -> Result<BroadcastConsumer> {
    config.validate()?;
    let trouble = Arc::new(AtomicBool::new(false));
    let consumer: BaseConsumer<BroadcastContext> = config
        .consumer(group)
        .create_with_context(BroadcastContext {
            trouble: trouble.clone(),
        })
        .map_err(|e| Error::Config(format!("kafka consumer: {e}")))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), config.request_timeout)
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
    // Start at the concrete end offsets, resolved now: once this returns, every event produced
    // later is seen (an `Offset::End` would be resolved lazily and could skip early events).
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, config.request_timeout)
            .map_err(Error::kafka)?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .map_err(Error::kafka)?;
    }
    consumer.assign(&tpl).map_err(Error::kafka)?;
    Ok(BroadcastConsumer { consumer, trouble })
}

/// How long a consumer poll blocks before the owner re-checks its stop flag.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);
