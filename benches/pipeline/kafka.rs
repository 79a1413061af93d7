//! Plain rdkafka clients, topics and acknowledgements shared by the sections.

use super::*;

pub(super) fn base_config(c: &Config) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &c.brokers)
        .set("socket.nagle.disable", "true")
        .set("log_level", "4");
    cc
}

pub(super) fn producer_config(c: &Config, linger_ms: u32) -> ClientConfig {
    let mut cc = base_config(c);
    cc.set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "1000000");
    cc
}

pub(super) fn consumer_config(c: &Config, group: &str) -> ClientConfig {
    let mut cc = base_config(c);
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .set("fetch.wait.max.ms", c.fetch_wait_ms.to_string())
        .set("enable.partition.eof", "false");
    cc
}

/// Counts delivery reports and wakes whoever waits for them.
#[derive(Default)]
pub(super) struct Acks {
    /// (acknowledged, failed)
    pub(super) counts: Mutex<(u64, u64)>,
    pub(super) changed: Condvar,
}

pub(super) struct CountingContext(Arc<Acks>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut counts = self.0.counts.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => counts.0 += 1,
            Err(_) => counts.1 += 1,
        }
        self.0.changed.notify_all();
    }
}

/// A `ThreadedProducer`: its thread serves delivery reports as they arrive, as distcache's own
/// producer does. (`BaseProducer::flush` in rdkafka 0.39 polls in 100 ms slices, which would
/// add up to 100 ms to every timed wait.)
pub(super) type CountingProducer = ThreadedProducer<CountingContext>;

pub(super) fn counting_producer(c: &Config, linger_ms: u32) -> R<(CountingProducer, Arc<Acks>)> {
    let acks = Arc::new(Acks::default());
    let producer =
        producer_config(c, linger_ms).create_with_context(CountingContext(acks.clone()))?;
    Ok((producer, acks))
}

/// Queues one message, waiting while librdkafka's queue is full.
pub(super) fn send(producer: &CountingProducer, topic: &str, key: &[u8], payload: &[u8]) -> R<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                thread::sleep(Duration::from_micros(500));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Waits until `expected` messages (counted over the producer's life) were acknowledged; fails
/// if any delivery failed.
pub(super) fn wait_acks(acks: &Acks, expected: u64) -> R<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut counts = acks.counts.lock().unwrap_or_else(|e| e.into_inner());
    while counts.0 + counts.1 < expected && Instant::now() < deadline {
        counts = acks
            .changed
            .wait_timeout(counts, Duration::from_millis(100))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    let (ok, failed) = *counts;
    if failed > 0 || ok < expected {
        return Err(format!("{failed} deliveries failed, {ok} of {expected} acknowledged").into());
    }
    Ok(())
}

/// Runs a future to completion on this thread (rdkafka's admin API returns futures; no runtime).
pub(super) fn block_on<F: Future>(fut: F) -> F::Output {
    struct ThreadWaker(Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

/// Creates `topics` with [`PARTITIONS`] partitions; existing ones are left alone.
pub(super) fn create_topics(c: &Config, topics: &[&str]) -> R<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(c).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    for result in block_on(admin.create_topics(&new, &opts))? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("creating topic {topic}: {code}").into()),
        }
    }
    wait_until_served(c, topics)
}

/// Waits until every partition of `topics` answers a watermark query: Apache Kafka reports a
/// freshly created partition's leader a moment after the topic exists (NotLeaderForPartition).
pub(super) fn wait_until_served(c: &Config, topics: &[&str]) -> R<()> {
    let consumer: BaseConsumer = base_config(c).create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for topic in topics {
        for p in partitions(&consumer, topic)? {
            loop {
                match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("{topic}/{p} is not served: {e}").into())
                    }
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            }
        }
    }
    Ok(())
}

/// Partition ids of `topic`, waiting for it to show up in the metadata.
pub(super) fn partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> R<Vec<i32>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let md = match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(md) => md,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => {
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let ids: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !ids.is_empty() {
            return Ok(ids);
        }
        if Instant::now() > deadline {
            return Err(format!("topic {topic} has no partitions").into());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Records on the set-del topic, exactly, for "a fresh group has caught up" checks.
///
/// tansu 0.6.0 answers ListOffsets(latest) with the base offset of a partition's last record
/// batch + 1, not its last offset + 1: after a batched produce the high watermark lags the real
/// end by the last batch's size − 1 (seen here: a partition holding offsets 0..=2501 reported
/// 1663). So first end every partition with a one-record batch (a valid set event of a
/// sentinel namespace, acknowledged before the next is sent), then sum the watermarks.
pub(super) fn set_del_backlog(c: &Config, tag: &str) -> R<u64> {
    create_topics(c, &[TOPIC_SET_DEL, TOPIC_DONE])?;
    let (producer, acks) = counting_producer(c, 0)?;
    let ids = partitions(&metadata_probe(c)?, TOPIC_SET_DEL)?;
    for (sent, &p) in ids.iter().enumerate() {
        let e = set_event(
            &format!("bench-sentinel-{}", c.run),
            format!("{tag}-{p}"),
            1,
            b"sentinel".to_vec(),
        );
        let (key, body) = (e.message_key(), e.encode());
        producer
            .send(
                BaseRecord::to(TOPIC_SET_DEL)
                    .partition(p)
                    .key(&key)
                    .payload(&body),
            )
            .map_err(|(e, _)| e)?;
        wait_acks(&acks, sent as u64 + 1)?;
    }
    topic_messages(c, TOPIC_SET_DEL)
}

/// Records in `topic` by its watermarks (sum of high − low); see [`set_del_backlog`] for why
/// this is exact only when every partition's last batch holds one record.
pub(super) fn topic_messages(c: &Config, topic: &str) -> R<u64> {
    let consumer: BaseConsumer = consumer_config(c, &format!("bench-probe-{}", c.run)).create()?;
    let mut total = 0;
    for p in partitions(&consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        total += (high - low).max(0) as u64;
    }
    Ok(total)
}

/// A consumer assigned to every partition of `topic`, at the current end (no group join).
pub(super) fn assigned_at_end(c: &Config, topic: &str, group: &str) -> R<BaseConsumer> {
    let consumer: BaseConsumer = consumer_config(c, group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions(&consumer, topic)? {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

pub(super) fn payload(bytes: usize, i: usize) -> Vec<u8> {
    let mut p = format!("{i:010}").into_bytes();
    p.resize(bytes.max(10), b'x');
    p
}
