//! kafka-python (PyPI), a Kafka client independent of ours, driven through `python3 -c`: tests use it to put
//! hand-made records on a topic (malformed envelopes, unknown formats, null values) and to read back exactly
//! what our producers wrote. Records cross the process boundary one per line, `partition offset key value`, with
//! each byte field `-` (null), `~` (empty) or lowercase hex.

use std::time::Duration;

use super::{python3, run_with_input};

/// One record as bytes. For `produce`: a `None` key or value is a Kafka null (e.g. a tombstone),
/// `partition: None` lets the key choose, `offset` is ignored. From `consume`: partition and offset are set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawRecord {
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl RawRecord {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> RawRecord {
        RawRecord {
            key: Some(key.into()),
            value: Some(value.into()),
            ..RawRecord::default()
        }
    }
}

const PRODUCE: &str = r#"
import sys
from kafka import KafkaProducer
bootstrap, topic = sys.argv[1], sys.argv[2]
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10000, max_block_ms=10000)
field = lambda text: None if text == "-" else b"" if text == "~" else bytes.fromhex(text)
futures = []
for line in sys.stdin:
    partition, _offset, key, value = line.split()
    futures.append(producer.send(topic, key=field(key), value=field(value),
                                 partition=None if partition == "-" else int(partition)))
for future in futures:
    future.get(timeout=10)
producer.close(timeout=10)
"#;

const CONSUME: &str = r#"
import sys, time
from kafka import KafkaConsumer, TopicPartition
bootstrap, topic, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.time() + float(sys.argv[4])
consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         fetch_max_wait_ms=10, request_timeout_ms=10000)
partitions = None
while not partitions and time.time() < deadline:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        time.sleep(0.05)
assigned = [TopicPartition(topic, p) for p in sorted(partitions or [])]
consumer.assign(assigned)
if assigned:
    consumer.seek_to_beginning(*assigned)
field = lambda b: "-" if b is None else (b.hex() or "~")
got = 0
while got < want and assigned and time.time() < deadline:
    for records in consumer.poll(timeout_ms=50).values():
        for r in records:
            print(r.partition, r.offset, field(r.key), field(r.value), flush=True)
            got += 1
consumer.close()
"#;

/// Produces `records` to `topic` and waits for every acknowledgement; panics on failure.
pub(crate) fn produce(bootstrap: &str, topic: &str, records: &[RawRecord]) {
    let input: String = records.iter().map(encode_line).collect();
    let mut cmd = python3();
    cmd.args(["-c", PRODUCE, bootstrap, topic]);
    if let Err(e) = run_with_input(&mut cmd, input.as_bytes(), Duration::from_secs(60)) {
        panic!("kafka-python produce to {topic} (scripts/services.sh install brings it): {e}");
    }
}

/// Reads `topic` from the start of every partition until `count` records or `timeout`; returns what came.
pub(crate) fn consume(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<RawRecord> {
    let mut cmd = python3();
    cmd.args(["-c", CONSUME, bootstrap, topic])
        .arg(count.to_string())
        .arg(timeout.as_secs_f64().to_string());
    let out =
        run_with_input(&mut cmd, &[], timeout + Duration::from_secs(30)).unwrap_or_else(|e| {
            panic!("kafka-python consume from {topic} (scripts/services.sh install brings it): {e}")
        });
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| decode_line(line).unwrap_or_else(|| panic!("bad line from python: {line:?}")))
        .collect()
}

fn encode_line(r: &RawRecord) -> String {
    let partition = r.partition.map_or("-".to_string(), |p| p.to_string());
    let offset = r.offset.map_or("-".to_string(), |o| o.to_string());
    format!(
        "{partition} {offset} {} {}\n",
        encode(&r.key),
        encode(&r.value)
    )
}

fn decode_line(line: &str) -> Option<RawRecord> {
    let mut fields = line.split_whitespace();
    Some(RawRecord {
        partition: fields.next()?.parse().ok(),
        offset: fields.next()?.parse().ok(),
        key: decode(fields.next()?)?,
        value: decode(fields.next()?)?,
    })
}

fn encode(bytes: &Option<Vec<u8>>) -> String {
    match bytes {
        None => "-".to_string(),
        Some(b) if b.is_empty() => "~".to_string(),
        Some(b) => b.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// `Some(None)` for null, `None` for a malformed field.
fn decode(field: &str) -> Option<Option<Vec<u8>>> {
    match field {
        "-" => Some(None),
        "~" => Some(Some(Vec::new())),
        hex if hex.len() % 2 == 0 => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(Some),
        _ => None,
    }
}
