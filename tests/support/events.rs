//! Hand-made events on the broker and an independent reader of the done topic: what tests use to play a
//! core node with a broken clock (or a hostile client) and to see the state node's verdicts without going
//! through a core node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use distcache::event::{Event, WriteEvent, TOPIC_DONE};
use distcache::Version;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::{unique_name, Broker};

/// One hand-made record: `event` onto `topic`, into `partition` (`None`: by its message key, as a core
/// node sends it).
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub event: &'a Event,
}

/// Produces `events` onto `topic` by message key with a client of our own (`acks=all`) and waits for every
/// acknowledgement; `Err` names what was not delivered.
pub fn produce_events(broker: &Broker, topic: &str, events: &[Event]) -> Result<(), String> {
    let records: Vec<Outgoing<'_>> = events
        .iter()
        .map(|event| Outgoing {
            topic,
            partition: None,
            event,
        })
        .collect();
    produce_records(broker, &records)
}

/// Produces `records` (each to its topic and partition) and waits for every acknowledgement.
pub fn produce_records(broker: &Broker, records: &[Outgoing<'_>]) -> Result<(), String> {
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "15000")
        .set("socket.nagle.disable", "true")
        .create_with_context(Acks::default())
        .map_err(|e| format!("test producer: {e}"))?;
    for r in records {
        let key = r.event.message_key();
        let payload = r.event.encode();
        let mut record = BaseRecord::to(r.topic).key(&key).payload(&payload);
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        producer
            .send(record)
            .map_err(|(e, _)| format!("queue a hand-made event: {e}"))?;
    }
    producer
        .flush(Duration::from_secs(20))
        .map_err(|e| format!("flush hand-made events: {e}"))?;
    let acks = producer.context();
    let failed = acks
        .failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let delivered = acks.delivered.load(Ordering::Relaxed);
    if failed.is_empty() && delivered == records.len() {
        Ok(())
    } else {
        Err(format!(
            "{delivered} of {} hand-made events delivered; failures: {failed:?}",
            records.len()
        ))
    }
}

/// Delivery reports of the test producer.
#[derive(Default)]
struct Acks {
    delivered: AtomicUsize,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(e.to_string()),
        }
    }
}

/// Everything published on the done topic from its beginning, read independently of the core nodes (no
/// committed offsets). A record that does not decode fails the test: only the state node writes there.
pub struct DoneWatcher {
    consumer: BaseConsumer,
    seen: Vec<Event>,
    wait: Duration,
}

impl DoneWatcher {
    /// A reader of the done topic of `broker` (the topic must exist) whose waits give up after `wait`.
    pub fn new(broker: &Broker, wait: Duration) -> DoneWatcher {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", unique_name("done-watcher"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .set("socket.nagle.disable", "true")
            .create()
            .expect("done watcher consumer");
        let metadata = consumer
            .fetch_metadata(Some(TOPIC_DONE), Duration::from_secs(10))
            .expect("done topic metadata");
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| t.name() == TOPIC_DONE) {
            for p in t.partitions() {
                tpl.add_partition_offset(TOPIC_DONE, p.id(), Offset::Beginning)
                    .expect("add partition");
            }
        }
        assert!(tpl.count() > 0, "{TOPIC_DONE} has no partitions");
        consumer.assign(&tpl).expect("assign the done topic");
        DoneWatcher {
            consumer,
            seen: Vec::new(),
            wait,
        }
    }

    /// Every done event read so far, in arrival order.
    pub fn seen(&self) -> &[Event] {
        &self.seen
    }

    /// The first done event (seen before or arriving within the wait) that satisfies `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.wait_from(0, what, pred)
    }

    /// Like [`wait_for`](Self::wait_for), among events that arrive from now on only.
    pub fn wait_for_next(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.wait_from(self.seen.len(), what, pred)
    }

    /// Hands every done event, those seen before first and then new ones as they arrive, to `f`
    /// until `f` returns true (then true) or `timeout` passes (then false). For checks over many
    /// events, where [`wait_for`](Self::wait_for)'s panic message would be unreadable.
    pub fn scan_until(&mut self, timeout: Duration, mut f: impl FnMut(&Event) -> bool) -> bool {
        if self.seen.iter().any(&mut f) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => {
                    let payload = msg.payload().expect("done event with a payload");
                    let event = Event::decode(payload).expect("done event decodes");
                    let done = f(&event);
                    self.seen.push(event);
                    if done {
                        return true;
                    }
                }
                Some(Err(e)) => log::warn!("done watcher: {e}"),
                None => {}
            }
        }
        false
    }

    fn wait_from(
        &mut self,
        mut checked: usize,
        what: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(e) = self.seen[checked..].iter().find(|e| pred(e)) {
                return e.clone();
            }
            checked = self.seen.len();
            if Instant::now() >= deadline {
                panic!(
                    "no done event {what} within {:?}; seen: {:#?}",
                    self.wait, self.seen
                );
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => {
                    let payload = msg.payload().expect("done event with a payload");
                    let event = Event::decode(payload).expect("done event decodes");
                    self.seen.push(event);
                }
                Some(Err(e)) => log::warn!("done watcher: {e}"),
                None => {}
            }
        }
    }
}

pub fn set_event(ns: &str, key: &str, hlc: u64, node: u64, value: &str) -> Event {
    WriteEvent::set(
        ns,
        key,
        Version::new(hlc, node),
        serde_json::to_vec(value).expect("encode"),
    )
    .into_envelope()
}

pub fn delete_event(ns: &str, key: &str, hlc: u64, node: u64) -> Event {
    WriteEvent::delete(ns, key, Version::new(hlc, node)).into_envelope()
}
