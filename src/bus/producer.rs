//! Produce events and wait for the broker's acknowledgement.

use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::KafkaConfig;
use crate::{Error, Result};

/// The outcome of one produce: `Ok` once the broker acknowledged it.
pub(crate) type Ack = std::result::Result<(), KafkaError>;

/// Routes each delivery report to the channel the sender attached to the message.
pub(crate) struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<Sender<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((err, _)) => Err(err.clone()),
        };
        // The sender may have stopped waiting (timeout); nothing else to do then.
        let _ = ack.try_send(outcome);
    }
}

/// A producer whose background thread (owned by rdkafka, one per producer) serves delivery
/// reports.
pub(crate) struct EventProducer {
    inner: ThreadedProducer<AckContext>,
    timeout: Duration,
}

impl EventProducer {
    /// `linger`: how long librdkafka may wait to batch messages (0 for single writes).
    pub(crate) fn new(config: &KafkaConfig, linger: Duration) -> Result<Self> {
        config.validate()?;
        let inner = config
            .producer(linger)
            .create_with_context(AckContext)
            .map_err(|e| Error::Config(format!("kafka producer: {e}")))?;
        Ok(EventProducer {
            inner,
            timeout: config.produce_timeout,
        })
    }

    /// Queues one message; its acknowledgement arrives on `ack`. Waits (bounded by the produce
    /// timeout) while librdkafka's queue is full.
    pub(crate) fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        ack: Sender<Ack>,
    ) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(ack))
            .key(key)
            .payload(payload);
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((err, _)) => return Err(Error::kafka_produce(err)),
            }
        }
    }

    /// Produces one message and returns once the broker acknowledged it (`acks=all`), or fails.
    pub(crate) fn send_and_wait(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<()> {
        let (tx, rx) = bounded(1);
        self.send(topic, key, payload, tx)?;
        self.wait(&rx)
    }

    /// Waits for one acknowledgement from `rx`.
    pub(crate) fn wait(&self, rx: &Receiver<Ack>) -> Result<()> {
        // librdkafka reports a failure itself after message.timeout.ms; the margin covers the
        // delivery report's trip back to us.
        let limit = self.timeout + Duration::from_secs(2);
        match rx.recv_timeout(limit) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Error::kafka_produce(err)),
            Err(_) => Err(Error::Timeout {
                what: "kafka acknowledgement".into(),
                after: limit,
            }),
        }
    }

    /// Waits until every queued message was delivered or failed, at most the produce timeout.
    pub(crate) fn flush(&self) -> Result<()> {
        self.inner.flush(self.timeout).map_err(Error::kafka)
    }
}

impl Drop for EventProducer {
    fn drop(&mut self) {
        if let Err(err) = self.flush() {
            log::warn!(target: "distcache::bus", "producer closed with undelivered messages: {err}");
        }
    }
}
