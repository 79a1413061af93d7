//! Section 3: state-node throughput (the drain of a pre-produced backlog), the Redis ceiling, the
//! cost of each broker step of a batch, and the done topic check.

use super::*;

pub(super) struct StateNodeRun {
    pub(super) max_batch: usize,
    pub(super) events: u64,
    pub(super) join: Duration,
    pub(super) elapsed: Duration,
    pub(super) shutdown: Duration,
    pub(super) m: StateNodeMetrics,
    /// events/s of the other rounds with this `max_batch` (this run is the fastest).
    pub(super) others: Vec<f64>,
}

impl StateNodeRun {
    pub(super) fn rate(&self) -> f64 {
        rate(self.events as usize, self.elapsed)
    }
}

pub(super) fn settled(m: &StateNodeMetrics) -> u64 {
    m.applied + m.stale_dropped + m.deduped + m.malformed + m.failed
}

pub(super) fn set_event(ns: &str, key: String, hlc: u64, value: Vec<u8>) -> WriteEvent {
    WriteEvent::set(ns, key, Version::new(hlc, 7), value)
}

/// The state-node runs (fastest per batch size) and the Redis ceilings with and without the
/// script (fastest of one per round, measured between the rounds).
pub(super) fn state_node_throughput(
    c: &Config,
) -> R<(Vec<StateNodeRun>, Option<RedisCeiling>, RedisCeiling)> {
    create_topics(c, &[TOPIC_SET_DEL, TOPIC_DONE])?;
    // Versions are small integers: they sort like real ones and, observed by a core node's
    // clock later, do not push it forward.
    let ns = format!("bench-sn-{}", c.run);
    let (producer, acks) = counting_producer(c, 5)?;
    partitions(&metadata_probe(c)?, TOPIC_SET_DEL)?;
    let t0 = Instant::now();
    for i in 0..c.n {
        let e = set_event(
            &ns,
            format!("k{:06}", i % c.keys),
            i as u64 + 1,
            payload(c.value_bytes, i),
        );
        send(&producer, TOPIC_SET_DEL, &e.message_key(), &e.encode())?;
    }
    wait_acks(&acks, c.n as u64)?;
    progress(format!(
        "  pre-produced {} set events in {:?}",
        c.n,
        t0.elapsed()
    ));
    // A fresh group reads the whole topic: on a reused broker that is more than our N.
    let total = set_del_backlog(c, "sn")?;

    // Several rounds, alternating the order of batch sizes; the fastest run of each is shown
    // (load from elsewhere on a shared machine only ever slows a run down).
    let mut all: Vec<Vec<StateNodeRun>> = c.batch_sizes.iter().map(|_| Vec::new()).collect();
    let script = apply_script();
    let mut ceilings: Vec<RedisCeiling> = Vec::new();
    let mut plains: Vec<RedisCeiling> = Vec::new();
    for round in 0..c.rounds {
        ceilings.push(redis_ceiling(c, Some(&script), round)?);
        plains.push(redis_ceiling(c, None, round)?);
        let mut order: Vec<usize> = (0..c.batch_sizes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let b = c.batch_sizes[i];
            let target = if b == 1 {
                (c.batch_one as u64).min(total)
            } else {
                total
            };
            let run = state_node_run(c, b, target, round)?;
            progress(format!(
                "  round {round}, max_batch {b}: {} events in {:?} (join {:?}, shutdown {:?})",
                run.events, run.elapsed, run.join, run.shutdown
            ));
            all[i].push(run);
        }
    }
    let quickest = |v: Vec<RedisCeiling>| v.into_iter().min_by_key(|x| x.elapsed);
    let ceiling = quickest(ceilings);
    let plain = quickest(plains).ok_or("no rounds")?;
    let mut best = Vec::new();
    for mut runs in all {
        runs.sort_by(|x, y| y.rate().total_cmp(&x.rate()));
        let others: Vec<f64> = runs.iter().skip(1).map(StateNodeRun::rate).collect();
        if let Some(mut fastest) = runs.into_iter().next() {
            fastest.others = others;
            best.push(fastest);
        }
    }
    Ok((best, ceiling, plain))
}

pub(super) fn state_node_run(
    c: &Config,
    max_batch: usize,
    target: u64,
    round: usize,
) -> R<StateNodeRun> {
    let started = Instant::now();
    let node = StateNode::builder()
        .kafka_brokers(&c.brokers)
        .redis_url(&c.redis_url)
        .group(format!("bench-sn-{}-b{max_batch}-r{round}", c.run))
        .key_prefix(format!("bench:{}:b{max_batch}:r{round}:", c.run))
        .max_batch(max_batch)
        .max_wait(Duration::from_millis(2))
        .redis_workers(4)
        .start()?;
    let first = wait_until(|| node.metrics().consumed > 0, Duration::from_micros(200))
        .ok_or("the state node consumed nothing")?;
    let done = wait_until(
        || settled(&node.metrics()) >= target,
        Duration::from_millis(1),
    )
    .ok_or_else(|| format!("state node stuck: {:?}", node.metrics()))?;
    let m = node.metrics();
    let t = Instant::now();
    node.shutdown();
    Ok(StateNodeRun {
        max_batch,
        events: settled(&m),
        join: first - started,
        elapsed: done - first,
        shutdown: t.elapsed(),
        m,
        others: Vec::new(),
    })
}

/// Polls `cond` every `every` until it holds (returns when) or [`STEP_TIMEOUT`] passes.
pub(super) fn wait_until(mut cond: impl FnMut() -> bool, every: Duration) -> Option<Instant> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if cond() {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(every);
    }
}

pub(super) struct RedisCeiling {
    pub(super) writes: usize,
    pub(super) connections: usize,
    pub(super) pipeline: usize,
    /// Keys per `EVALSHA` (0: plain `HSET`s, no script).
    pub(super) keys_per_call: usize,
    pub(super) elapsed: Duration,
}

/// The state node's apply script and how many keys it sends per call, so the ceiling always runs
/// exactly what the state node runs.
pub(super) struct ApplyScript {
    pub(super) text: String,
    pub(super) keys_per_call: usize,
}

pub(super) fn apply_script() -> ApplyScript {
    ApplyScript {
        text: distcache::bench_support::APPLY_SCRIPT.to_string(),
        keys_per_call: distcache::bench_support::KEYS_PER_CALL,
    }
}

/// Counts the "applied" replies (integer 1) in a script reply, one key or many.
pub(super) fn count_applied(v: &redis::Value) -> usize {
    match v {
        redis::Value::Int(1) => 1,
        redis::Value::Array(items) => items.iter().map(count_applied).sum(),
        _ => 0,
    }
}

/// The same versioned writes as the state node applies, straight to Redis: 4 connections, each
/// pipelining its share of the keys, 256 writes per round trip, as `EVALSHA`s of the state
/// node's script (`keys_per_call` keys each), or with `script == None` as plain `HSET`s (no
/// version check): what the script itself costs. No Kafka, no dedup, no done events.
pub(super) fn redis_ceiling(
    c: &Config,
    script: Option<&ApplyScript>,
    round: usize,
) -> R<RedisCeiling> {
    const CONNECTIONS: usize = 4;
    const PIPELINE: usize = 256;
    let client = redis::Client::open(c.redis_url.as_str())?;
    let lua = script.is_some();
    let prefix = format!("bench:{}:ceiling-{lua}-r{round}:", c.run);
    let keys_per_call = script.map_or(0, |s| s.keys_per_call.max(1));
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut conn = client.get_connection()?;
        let sha = match script {
            Some(s) => redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(&s.text)
                .query::<String>(&mut conn)?,
            None => String::new(),
        };
        conns.push((conn, sha));
    }
    let value = payload(c.value_bytes, 0);
    let barrier = Arc::new(std::sync::Barrier::new(CONNECTIONS + 1));
    let mut handles = Vec::new();
    for (w, (mut conn, sha)) in conns.into_iter().enumerate() {
        let (prefix, value, barrier) = (prefix.clone(), value.clone(), barrier.clone());
        let (n, keys) = (c.n, c.keys);
        handles.push(thread::spawn(move || -> R<usize> {
            // Key k always goes to connection k % 4, as the state node shards by key.
            let mine: Vec<usize> = (0..n).filter(|i| (i % keys) % CONNECTIONS == w).collect();
            let key = |i: usize| format!("{prefix}k{:06}", i % keys);
            let version = |i: usize| Version::new(i as u64 + 1, 7).to_hex();
            barrier.wait();
            let mut applied = 0;
            for chunk in mine.chunks(PIPELINE) {
                let mut pipe = redis::pipe();
                if !lua {
                    for &i in chunk {
                        pipe.cmd("HSET")
                            .arg(key(i))
                            .arg("v")
                            .arg(&value[..])
                            .arg("ver")
                            .arg(version(i))
                            .ignore();
                    }
                    pipe.query::<()>(&mut conn)?;
                    applied += chunk.len();
                    continue;
                }
                for call in chunk.chunks(keys_per_call) {
                    let cmd = pipe.cmd("EVALSHA").arg(&sha).arg(call.len());
                    for &i in call {
                        cmd.arg(key(i));
                    }
                    for &i in call {
                        cmd.arg(version(i))
                            .arg("s")
                            .arg("1")
                            .arg(&value[..])
                            .arg(0)
                            .arg(600_000);
                    }
                }
                let replies: Vec<redis::Value> = pipe.query(&mut conn)?;
                applied += replies.iter().map(count_applied).sum::<usize>();
            }
            Ok(applied)
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    let mut applied = 0;
    for h in handles {
        applied += h.join().map_err(|_| "redis thread panicked")??;
    }
    let elapsed = t0.elapsed();
    if applied != c.n {
        return Err(format!("redis ceiling: {applied} of {} writes applied", c.n).into());
    }
    progress(format!(
        "  redis ceiling ({}): {} writes in {elapsed:?}",
        if lua { "script" } else { "plain HSET" },
        c.n
    ));
    Ok(RedisCeiling {
        writes: c.n,
        connections: CONNECTIONS,
        pipeline: PIPELINE,
        keys_per_call,
        elapsed,
    })
}

/// One raw hop on the done topic (as it is after the throughput runs) against one on a fresh
/// topic, sampled in rotation: does the broker's fetch slow down as the done topic grows?
pub(super) struct DoneTopicCheck {
    pub(super) done_records: u64,
    pub(super) fresh: Latency,
    pub(super) done: Latency,
    /// Samples that did not arrive within [`PROBE_TIMEOUT`] (counted as that long).
    pub(super) timeouts: (usize, usize),
}

pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn done_topic_check(c: &Config) -> R<DoneTopicCheck> {
    const ROUNDS: usize = 60;
    const BUDGET: Duration = Duration::from_secs(30);
    let fresh_topic = format!("bench-probe-{}", c.run);
    create_topics(c, &[&fresh_topic])?;
    let done_records = topic_messages(c, TOPIC_DONE)?;
    let fresh_out = assigned_at_end(c, &fresh_topic, &fresh_topic)?;
    let done_out = assigned_at_end(c, TOPIC_DONE, &format!("bench-probe-done-{}", c.run))?;
    let producer: ThreadedProducer<DefaultProducerContext> = producer_config(c, 0).create()?;
    let ns = format!("bench-probe-{}", c.run);
    let mut check = DoneTopicCheck {
        done_records,
        fresh: Latency::with_capacity(ROUNDS),
        done: Latency::with_capacity(ROUNDS),
        timeouts: (0, 0),
    };
    let started = Instant::now();
    for round in 0..ROUNDS {
        if started.elapsed() > BUDGET {
            break;
        }
        for step in 0..2 {
            let on_done = (round + step) % 2 == 1;
            let key = format!("probe-{round}");
            // A valid event of a namespace nobody caches: harmless to any listener.
            let body = set_event(&ns, key.clone(), 1, payload(c.value_bytes, round)).encode();
            let (topic, out) = if on_done {
                (TOPIC_DONE, &done_out)
            } else {
                (fresh_topic.as_str(), &fresh_out)
            };
            let t0 = Instant::now();
            producer
                .send(BaseRecord::<_, _, ()>::to(topic).key(&key).payload(&body))
                .map_err(|(e, _)| e)?;
            let arrived = await_payload_within(out, &body, PROBE_TIMEOUT)?;
            let us = t0.elapsed().as_micros() as u64;
            let (samples, timeouts) = if on_done {
                (&mut check.done, &mut check.timeouts.1)
            } else {
                (&mut check.fresh, &mut check.timeouts.0)
            };
            samples.samples.push(us);
            if !arrived {
                *timeouts += 1;
            }
        }
    }
    producer.flush(Duration::from_secs(10))?;
    progress(format!(
        "  done-topic check: {} rounds",
        check.done.samples.len()
    ));
    Ok(check)
}

pub(super) fn print_done_topic_check(c: &Config, d: &DoneTopicCheck) {
    println!(
        "Broker check after these runs: the done topic now holds ≈ {} events (watermark sum), \
         written by the state nodes above in batches of every size. One raw hop (produce with \
         `linger.ms=0` → `BaseConsumer` assigned at the end, `fetch.wait.max.ms={}`) on it, \
         against one on a fresh topic, in rotation; a message not seen within {} s counts as \
         that long.\n",
        d.done_records,
        c.fetch_wait_ms,
        PROBE_TIMEOUT.as_secs()
    );
    println!("| topic | samples | p50 ms | p90 ms | p99 ms | max ms | not seen in time |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, l, t) in [
        ("fresh topic", &d.fresh, d.timeouts.0),
        (TOPIC_DONE, &d.done, d.timeouts.1),
    ] {
        println!(
            "| `{name}` | {} | {:.2} | {:.2} | {:.2} | {:.2} | {t} |",
            l.samples.len(),
            l.pct(0.5),
            l.pct(0.9),
            l.pct(0.99),
            l.pct(1.0)
        );
    }
    println!();
}

/// What one batch's broker steps cost in isolation: publishing `batch` done-sized events with
/// the state node's producer settings (`linger.ms=0`, `acks=all`) until every one is
/// acknowledged, and one synchronous offset commit of every partition.
pub(super) struct StepCosts {
    /// (batch size, mean publish time).
    pub(super) publish: Vec<(usize, Duration)>,
    pub(super) commit: Result<Duration, String>,
}

pub(super) fn step_costs(c: &Config) -> R<StepCosts> {
    let topic = format!("bench-publish-{}", c.run);
    create_topics(c, &[&topic])?;
    let (producer, acks) = counting_producer(c, 0)?;
    partitions(&metadata_probe(c)?, &topic)?;
    let ns = format!("bench-publish-{}", c.run);
    let mut sent = 0u64;
    let mut publish = Vec::new();
    for &b in &c.batch_sizes {
        let reps = (8192 / b.max(1)).clamp(4, 200);
        let mut total = Duration::ZERO;
        for r in 0..reps {
            let events: Vec<(Vec<u8>, Vec<u8>)> = (0..b)
                .map(|i| {
                    let e = set_event(
                        &ns,
                        format!("k{:06}", (r * b + i) % c.keys),
                        (r * b + i) as u64 + 1,
                        payload(c.value_bytes, i),
                    );
                    (e.message_key(), e.encode())
                })
                .collect();
            let t0 = Instant::now();
            for (k, v) in &events {
                send(&producer, &topic, k, v)?;
            }
            sent += b as u64;
            wait_acks(&acks, sent)?;
            total += t0.elapsed();
        }
        publish.push((b, total / reps as u32));
    }
    let commit = commit_cost(c, &topic).map_err(|e| e.to_string());
    progress("  step costs measured");
    Ok(StepCosts { publish, commit })
}

/// Mean time of a synchronous commit of every partition's offset, from a consumer with a group
/// id but an explicit assignment (no group join).
pub(super) fn commit_cost(c: &Config, topic: &str) -> R<Duration> {
    let consumer: BaseConsumer = consumer_config(c, &format!("bench-commit-{}", c.run)).create()?;
    let ids = partitions(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for &p in &ids {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    const REPS: u32 = 50;
    let t0 = Instant::now();
    for r in 0..REPS {
        let mut offsets = TopicPartitionList::new();
        for &p in &ids {
            offsets.add_partition_offset(topic, p, Offset::Offset(r as i64 + 1))?;
        }
        consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync)?;
    }
    Ok(t0.elapsed() / REPS)
}

pub(super) fn print_step_costs(runs: &[StateNodeRun], steps: &StepCosts) {
    println!(
        "Where a batch's time goes. In the runs above: time per batch, its Redis apply, and the \
         rest (planning, handing the batch on, and any wait for the broker side: publishing \
         done events, their acks, the offset commit). Measured alone right after, for \
         reference: publish = that many done-sized events produced with `linger.ms=0`, \
         `acks=all`, until all acknowledged; commit = one synchronous commit of all \
         {PARTITIONS} partitions from a consumer with a group id but an explicit assignment \
         (an upper bound: it reads high against the in-run rest). A publish alone longer than \
         the in-run rest means the state node overlaps it with applying the next batch.\n"
    );
    println!(
        "| max_batch | per batch (time ÷ batches) | mean apply (in run) | rest (in run) | publish alone | commit alone |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let per_batch = r.elapsed.as_micros() as f64 / r.m.batches.max(1) as f64;
        let apply = r.m.apply_latency_us.mean();
        let publish = steps
            .publish
            .iter()
            .find(|(b, _)| *b == r.max_batch)
            .map(|(_, d)| d.as_micros() as f64);
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.max_batch,
            us_f(per_batch),
            us_f(apply),
            us_f((per_batch - apply).max(0.0)),
            publish.map_or("n/a".into(), us_f),
            match &steps.commit {
                Ok(d) => us_f(d.as_micros() as f64),
                Err(e) => format!("n/a ({e})"),
            },
        );
    }
    println!();
}

pub(super) fn print_state_node(
    c: &Config,
    runs: &[StateNodeRun],
    ceiling: Option<&RedisCeiling>,
    plain: &RedisCeiling,
    raw: Option<&RawThroughput>,
) {
    println!("### Pipeline 3. State-node throughput (embedded `StateNode`, events pre-produced)\n");
    let ceiling_text = match ceiling {
        Some(x) => format!(
            "the same versioned writes through the state node's own apply script, {} key(s) per `EVALSHA` as the state node sends them, \
             {} writes per round trip, key-sharded over {} connections, no Kafka; measured once \
             per round, fastest shown",
            x.keys_per_call, x.pipeline, x.connections
        ),
        None => "not measured (the apply script was not found in src/)".into(),
    };
    println!(
        "{} set events (`write_redis: true`, {}-byte values, {} distinct keys, increasing \
         versions) pre-produced onto `{TOPIC_SET_DEL}`. One `StateNode` per run: fresh group, \
         fresh Redis key prefix, `max_wait=2ms`, `redis_workers=4`. Timed from its first \
         consumed record (group join excluded) until applied + stale + deduped ≥ events \
         (`max_batch=1`: only the first {} events). {} rounds, batch sizes in alternating \
         order; the fastest run per batch size is shown, the others' events/s after it. \
         × raw consume: events/s ÷ the raw consume msg/s of (1). Redis ceiling: {ceiling_text}. \
         Apply = the Redis step per batch (p50/p99 are power-of-two bucket bounds); apply \
         share = Σ apply ÷ elapsed; the rest is planning and the broker side of a batch \
         (publishing its done events, waiting for their acks, committing its offsets), in \
         whatever order and overlap the state node runs them.\n",
        c.n, c.value_bytes, c.keys, c.batch_one, c.rounds
    );
    let ceiling_rate = ceiling.map(|x| rate(x.writes, x.elapsed));
    let vs_ceiling = |eps: f64| match ceiling_rate {
        Some(r) => format!("{:.2}×", eps / r),
        None => "n/a".into(),
    };
    let vs_raw = |eps: f64| match raw {
        Some(r) => format!("{:.3}×", eps / r.consume_rate()),
        None => "n/a".into(),
    };
    println!(
        "| max_batch | events | time | events/s | other rounds | × raw consume | × Redis ceiling | applied / deduped / stale | batches | mean batch | apply p50 / p99 | mean apply | apply share | group join |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let eps = r.rate();
        let m = &r.m;
        let others: Vec<String> = r.others.iter().map(|&x| thousands(x)).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {:.1} | {} / {} | {} | {:.0} % | {} |",
            r.max_batch,
            r.events,
            secs(r.elapsed),
            thousands(eps),
            others.join(", "),
            vs_raw(eps),
            vs_ceiling(eps),
            m.applied,
            m.deduped,
            m.stale_dropped,
            m.batches,
            m.batch_size.mean(),
            us(m.apply_latency_us.p50),
            us(m.apply_latency_us.p99),
            us_f(m.apply_latency_us.mean()),
            100.0 * m.apply_latency_us.sum as f64 / r.elapsed.as_micros().max(1) as f64,
            secs(r.join),
        );
    }
    if let (Some(x), Some(x_rate)) = (ceiling, ceiling_rate) {
        println!(
            "| Redis ceiling: apply script, {} key(s) per call | {} | {} | {} | | {} | 1.00× | {} / 0 / 0 | | | | | | |",
            x.keys_per_call,
            x.writes,
            secs(x.elapsed),
            thousands(x_rate),
            vs_raw(x_rate),
            x.writes,
        );
    }
    let plain_rate = rate(plain.writes, plain.elapsed);
    println!(
        "| Redis: plain `HSET`s instead of the script (no version check) | {} | {} | {} | | {} | {} | | | | | | | |",
        plain.writes,
        secs(plain.elapsed),
        thousands(plain_rate),
        vs_raw(plain_rate),
        vs_ceiling(plain_rate),
    );
    println!();
}
