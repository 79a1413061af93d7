//! Section 1: raw broker throughput with plain rdkafka clients.

use super::*;

pub(super) struct RawThroughput {
    pub(super) n: usize,
    pub(super) produce: Duration,
    pub(super) consume_join: Duration,
    /// Fastest of the group consume and the re-reads.
    pub(super) consume: Duration,
    /// All consume times: the group consumer's first, then the re-reads.
    pub(super) consumes: Vec<Duration>,
    pub(super) combined: Duration,
    pub(super) combined_produce: Duration,
}

impl RawThroughput {
    pub(super) fn consume_rate(&self) -> f64 {
        rate(self.n, self.consume)
    }
}

pub(super) fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub(super) fn raw_throughput(c: &Config) -> R<RawThroughput> {
    let topic = format!("bench-raw-{}", c.run);
    let topic_both = format!("bench-raw-both-{}", c.run);
    create_topics(c, &[&topic, &topic_both])?;
    let messages: Vec<(Vec<u8>, Vec<u8>)> = (0..c.n)
        .map(|i| {
            (
                format!("key-{}", i % c.keys).into_bytes(),
                payload(c.value_bytes, i),
            )
        })
        .collect();

    // Produce alone: first send until the last acknowledgement.
    let (producer, acks) = counting_producer(c, 5)?;
    partitions(&metadata_probe(c)?, &topic)?;
    let t0 = Instant::now();
    for (k, v) in &messages {
        send(&producer, &topic, k, v)?;
    }
    wait_acks(&acks, c.n as u64)?;
    let produce = t0.elapsed();
    progress(format!("  produced {} in {produce:?}", c.n));

    // Consume alone, fresh group from the beginning: join excluded, first → last message.
    let consumer: BaseConsumer = consumer_config(c, &format!("bench-raw-{}", c.run)).create()?;
    let subscribed = Instant::now();
    consumer.subscribe(&[&topic])?;
    let (first, last) = consume_n(&consumer, c.n)?;
    let consume_join = first - subscribed;
    let consume = last - first;
    progress(format!(
        "  consumed {} in {consume:?} (+{consume_join:?} join)",
        c.n
    ));
    drop(consumer);
    // The same read twice more, from consumers assigned to every partition at offset 0 (no
    // group join, the same fetch path): one ~0.1 s interval is easily disturbed here.
    let mut consumes = vec![consume];
    for i in 0..2 {
        let consumer: BaseConsumer =
            consumer_config(c, &format!("bench-raw-{}-re{i}", c.run)).create()?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions(&consumer, &topic)? {
            tpl.add_partition_offset(&topic, p, Offset::Offset(0))?;
        }
        consumer.assign(&tpl)?;
        let (first, last) = consume_n(&consumer, c.n)?;
        consumes.push(last - first);
    }
    let consume = consumes.iter().copied().min().unwrap_or(consume);

    // Both at once: a consumer assigned to every partition of a fresh topic (no group join)
    // polls in its own thread while this thread produces.
    let consumer = assigned_at_end(c, &topic_both, &format!("bench-raw-both-{}", c.run))?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let n = c.n;
    let reader = thread::spawn(move || -> R<Instant> {
        // One empty poll first: connections and fetch sessions are up before the clock starts.
        if consumer.poll(Duration::from_millis(100)).is_some() {
            return Err("the fresh topic was not empty".into());
        }
        let _ = ready_tx.send(());
        Ok(consume_n(&consumer, n)?.1)
    });
    ready_rx.recv_timeout(Duration::from_secs(10))?;
    let (producer, acks) = counting_producer(c, 5)?;
    let t0 = Instant::now();
    for (k, v) in &messages {
        send(&producer, &topic_both, k, v)?;
    }
    wait_acks(&acks, c.n as u64)?;
    let combined_produce = t0.elapsed();
    let last = reader.join().map_err(|_| "consumer thread panicked")??;
    let combined = last - t0;
    progress(format!("  produce+consume {} in {combined:?}", c.n));
    Ok(RawThroughput {
        n: c.n,
        produce,
        consume_join,
        consume,
        consumes,
        combined,
        combined_produce,
    })
}

/// A throwaway consumer handle for metadata queries.
pub(super) fn metadata_probe(c: &Config) -> R<BaseConsumer> {
    Ok(consumer_config(c, &format!("bench-probe-{}", c.run)).create()?)
}

/// Polls until `n` messages arrived. Returns when the first and the last arrived.
pub(super) fn consume_n(consumer: &BaseConsumer, n: usize) -> R<(Instant, Instant)> {
    let mut first = None;
    let mut got = 0;
    let mut last_progress = Instant::now();
    while got < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                got += 1;
                last_progress = Instant::now();
                first.get_or_insert(last_progress);
            }
            Some(Err(e)) => progress(format!("  consumer error: {e}")),
            None => {}
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            return Err(format!("consumer stalled at {got} of {n} messages").into());
        }
    }
    let first = first.unwrap_or_else(Instant::now);
    Ok((first, last_progress))
}

pub(super) fn print_raw(c: &Config, r: &RawThroughput) {
    println!(
        "### Pipeline 1. Raw broker throughput (rdkafka → {} → rdkafka, no distcache)\n",
        c.broker_name
    );
    println!("| measurement | messages | time | msg/s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| produce: `ThreadedProducer`, keyed, `linger.ms=5`, first send → last ack | {} | {} | {} |",
        r.n,
        secs(r.produce),
        thousands(rate(r.n, r.produce))
    );
    println!(
        "| consume: `BaseConsumer` from the beginning, first → last message; fastest of a fresh group (join {} excluded) and two re-reads assigned at offset 0 (all: {}) | {} | {} | {} |",
        secs(r.consume_join),
        r.consumes
            .iter()
            .map(|&d| thousands(rate(r.n, d)))
            .collect::<Vec<_>>()
            .join(", "),
        r.n,
        secs(r.consume),
        thousands(r.consume_rate())
    );
    println!(
        "| produce → consume concurrently: consumer assigned to all partitions, first send → last message received (producer alone finished after {}) | {} | {} | {} |",
        secs(r.combined_produce),
        r.n,
        secs(r.combined),
        thousands(rate(r.n, r.combined))
    );
    println!();
}
