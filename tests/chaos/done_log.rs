//! Which writes the state node reported on the done topic (applied or stale), read from the topic's beginning
//! by a consumer of our own. Records that do not decode are counted and skipped: a chaos round puts hostile
//! bytes on that topic on purpose.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use distcache::event::{Event, TOPIC_DONE};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::support::{unique_name, Broker};
use crate::world::NS;

pub struct DoneLog {
    consumer: BaseConsumer,
    /// `(key, version as 32 hex digits)` of every report in the run's namespace.
    reported: HashSet<(String, String)>,
    pub undecodable: u64,
}

impl DoneLog {
    /// A reader of every partition of the done topic, from offset 0.
    pub fn open(broker: &Broker) -> Result<DoneLog, String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", unique_name("chaos-done-log"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(|e| format!("done-log consumer: {e}"))?;
        let metadata = consumer
            .fetch_metadata(Some(TOPIC_DONE), Duration::from_secs(10))
            .map_err(|e| format!("done topic metadata: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        for topic in metadata.topics().iter().filter(|t| t.name() == TOPIC_DONE) {
            for p in topic.partitions() {
                tpl.add_partition_offset(TOPIC_DONE, p.id(), Offset::Offset(0))
                    .map_err(|e| e.to_string())?;
            }
        }
        if tpl.count() == 0 {
            return Err(format!("{TOPIC_DONE} has no partitions"));
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        Ok(DoneLog {
            consumer,
            reported: HashSet::new(),
            undecodable: 0,
        })
    }

    /// Reads what arrives within `budget` (stops early after a quiet 200 ms).
    pub fn read(&mut self, budget: Duration) {
        let deadline = Instant::now() + budget;
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_millis(200) {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(msg)) => {
                    quiet_since = Instant::now();
                    match msg.payload().map(Event::decode) {
                        Some(Ok(event)) if event.ns == NS => {
                            self.reported.insert((event.key, event.version.to_hex()));
                        }
                        Some(Ok(_)) => {}
                        _ => self.undecodable += 1,
                    }
                }
                Some(Err(e)) => log::debug!("done log: {e}"),
                None => {}
            }
        }
    }

    /// Whether the write of `key` at `version` was reported.
    pub fn reported(&self, key: &str, version: &str) -> bool {
        self.reported
            .contains(&(key.to_string(), version.to_string()))
    }
}
