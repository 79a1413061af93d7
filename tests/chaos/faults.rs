//! The faults a round injects, and how each round runs its writes around its fault.

use std::thread;
use std::time::{Duration, Instant};

use distcache::event::{WriteEvent, FORMAT, TOPIC_DONE, TOPIC_SET_DEL};
use distcache::Version;
use rand::rngs::StdRng;
use rand::{Rng, RngCore};

use crate::done_log::DoneLog;
use crate::support::{BrokerKind, RawRecord};
use crate::verdict::Losses;
use crate::workload::{self, Burst, Made};
use crate::world::{World, NS, SESSION_TIMEOUT};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the state node while writes flow, start it again at once.
    KillStateNode,
    /// SIGSTOP the state node past its session timeout, then SIGCONT.
    PauseStateNode,
    /// A second state node joins; the first is killed while writes flow and comes back after the round.
    KillOneOfTwo,
    /// SIGKILL redis-server and start it again; its append-only file keeps the data.
    RestartRedis,
    /// redis-server loses every key between two bursts (no persistence): local copies may live until their TTL.
    WipeRedis,
    /// SIGKILL the broker and start it again: Apache Kafka keeps its log; tansu loses it.
    RestartBroker,
    /// Malformed and hostile records on both topics while writes flow.
    HostileRecords,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::KillStateNode,
        Fault::PauseStateNode,
        Fault::KillOneOfTwo,
        Fault::RestartRedis,
        Fault::WipeRedis,
        Fault::RestartBroker,
        Fault::HostileRecords,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillStateNode => "kill-state-node",
            Fault::PauseStateNode => "pause-state-node",
            Fault::KillOneOfTwo => "kill-one-of-two",
            Fault::RestartRedis => "restart-redis",
            Fault::WipeRedis => "wipe-redis",
            Fault::RestartBroker => "restart-broker",
            Fault::HostileRecords => "hostile-records",
        }
    }

    /// Whether the default schedule runs this fault on `broker` (naming it in `DISTCACHE_CHAOS_FAULTS` still
    /// runs it). Two do not on tansu 0.6 (README, "Failure behaviour"): it loses its topics on a restart, and
    /// librdkafka 2.12.1 (the rdkafka crate's bundled copy) then crashes every client with SIGSEGV in
    /// `rd_kafka_metadata_cache_find` when they come back; and it never hands a dead static member's
    /// partitions to the survivor.
    pub fn runs_on(self, broker: BrokerKind) -> bool {
        broker == BrokerKind::Kafka || !matches!(self, Fault::RestartBroker | Fault::KillOneOfTwo)
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What a round did, for its checks.
pub struct Outcome {
    pub made: Vec<Made>,
    pub losses: Losses,
    /// Counters of every writer's `metrics` line that the fault must have raised, by at least how much
    /// (e.g. `resets` when the broker lost its log).
    pub expect_raised: Vec<(&'static str, u64)>,
    /// What happened, for the round's line.
    pub note: String,
}

const BURST: Burst = Burst {
    writes_per_writer: 40,
    max_pause: Duration::from_millis(60),
    ttl_ms: None,
};
/// The local (and Redis) TTL of the writes made before Redis loses its data.
pub const WIPED_TTL: Duration = Duration::from_secs(4);

/// Runs the writes of one round on `keys` around `fault`.
pub fn run(world: &World, fault: Fault, keys: &[String], seed: u64, rng: &mut StdRng) -> Outcome {
    let plans = workload::plan(seed, keys, BURST, world.writers.len());
    // The fault strikes while the writes flow (a burst takes one to two seconds).
    let strike_after = Duration::from_millis(rng.random_range(200..900));
    let mut losses = Losses::default();
    let mut expect_raised = Vec::new();
    let (made, note) = match fault {
        Fault::KillStateNode => workload::run(world, seed, plans, BURST, || {
            thread::sleep(strike_after);
            world.kill_state_node("a");
            world.start_state_node("a");
            format!("killed and restarted at +{strike_after:?}")
        }),
        Fault::PauseStateNode => workload::run(world, seed, plans, BURST, || {
            thread::sleep(strike_after);
            world.signal_state_node("a", "STOP");
            let paused = SESSION_TIMEOUT + Duration::from_secs(1);
            thread::sleep(paused);
            world.signal_state_node("a", "CONT");
            format!("stopped at +{strike_after:?} for {paused:?}")
        }),
        Fault::KillOneOfTwo => {
            world.start_state_node("b");
            // Let b join the group before a dies, so the survivor takes a's partitions.
            thread::sleep(Duration::from_secs(3));
            workload::run(world, seed, plans, BURST, || {
                thread::sleep(strike_after);
                world.kill_state_node("a");
                format!("a killed at +{strike_after:?}, b survives")
            })
        }
        Fault::RestartRedis => workload::run(world, seed, plans, BURST, || {
            thread::sleep(strike_after);
            world.dep.redis.restart();
            format!("redis restarted at +{strike_after:?}")
        }),
        Fault::WipeRedis => {
            let before = Burst {
                ttl_ms: Some(WIPED_TTL.as_millis() as u64),
                ..BURST
            };
            let first = workload::plan(seed ^ 0x5eed, keys, before, world.writers.len());
            let (mut made, ()) = workload::run(world, seed ^ 0x5eed, first, before, || {});
            let reported = wait_reported(world, &made);
            world.dep.redis.wipe();
            losses.before = Some(Instant::now());
            // Half the keys are written again after the loss.
            let again: Vec<String> = keys.iter().step_by(2).cloned().collect();
            let plans = workload::plan(seed, &again, BURST, world.writers.len());
            let (after, ()) = workload::run(world, seed, plans, BURST, || {});
            made.extend(after);
            (made, format!("wiped after a TTL'd burst ({reported})"))
        }
        Fault::RestartBroker => {
            let (made, restarted) = workload::run(world, seed, plans, BURST, || {
                thread::sleep(strike_after);
                world.dep.broker.restart();
                Instant::now()
            });
            if world.dep.broker.kind() == BrokerKind::Tansu {
                losses.before = Some(restarted);
                expect_raised.push(("resets", 1));
            }
            (
                made,
                format!(
                    "{:?} restarted at +{strike_after:?}",
                    world.dep.broker.kind()
                ),
            )
        }
        Fault::HostileRecords => {
            let records = hostile_records(keys, rng);
            // Every listener reads the whole done topic: the junk there is counted by every writer.
            expect_raised.push(("malformed", JUNK_RECORDS as u64));
            workload::run(world, seed, plans, BURST, || {
                thread::sleep(strike_after);
                world.dep.broker.produce_raw(TOPIC_SET_DEL, &records);
                world.dep.broker.produce_raw(TOPIC_DONE, &records);
                format!(
                    "{} hostile records on each topic at +{strike_after:?}",
                    records.len()
                )
            })
        }
    };
    Outcome {
        made,
        losses,
        expect_raised,
        note,
    }
}

/// Records of random bytes (no valid envelope) among the hostile ones.
const JUNK_RECORDS: usize = 4;

/// Waits (at most a minute) until the state node reported every acknowledged write of `made`: the burst
/// reached Redis before Redis loses it. Says how it went, for the round's line.
fn wait_reported(world: &World, made: &[Made]) -> String {
    let started = Instant::now();
    let Ok(mut done) = DoneLog::open(&world.dep.broker) else {
        return "done topic unreadable".into();
    };
    let pending = |done: &DoneLog| {
        made.iter()
            .filter_map(|m| m.version().map(|v| (&m.write.key, v)))
            .filter(|(k, v)| !done.reported(k, v))
            .count()
    };
    while started.elapsed() < Duration::from_secs(60) {
        done.read(Duration::from_millis(500));
        if pending(&done) == 0 {
            return format!("burst reported after {:.1?}", started.elapsed());
        }
    }
    format!("{} writes unreported after 60 s", pending(&done))
}

/// Records no honest node writes: random bytes, a truncated envelope, an unknown format, a value that does
/// not decode, and well-formed writes of the round's keys stamped two hours in the future (which every node
/// must refuse: versions beyond the clock-skew bound).
fn hostile_records(keys: &[String], rng: &mut StdRng) -> Vec<RawRecord> {
    let key = &keys[rng.random_range(0..keys.len())];
    let message_key = distcache::event::message_key(NS, key);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let event =
        |version: Version, value: &[u8]| WriteEvent::set(NS, key.clone(), version, value.to_vec());
    let future = event(
        Version::new((now_ms + 2 * 3600 * 1000) << 16, 0xbad),
        b"\"from the future\"",
    )
    .encode();
    // An old version: it loses to every real write of the key, whatever its value.
    let undecodable = event(Version::new(1 << 16, 0xbad), b"\xff not json").encode();
    // The envelope starts with two magic bytes, then the format byte.
    let mut unknown_format = future.clone();
    assert_eq!(
        unknown_format[2], FORMAT,
        "the envelope's third byte is its format"
    );
    unknown_format[2] = 0xee;
    let truncated = future[..future.len() / 2].to_vec();
    let mut records: Vec<RawRecord> = (0..JUNK_RECORDS)
        .map(|_| {
            let mut junk = vec![0u8; rng.random_range(0..64)];
            rng.fill_bytes(&mut junk);
            RawRecord::new(message_key.clone(), junk)
        })
        .collect();
    for value in [future, undecodable, unknown_format, truncated] {
        records.push(RawRecord::new(message_key.clone(), value));
    }
    records.push(RawRecord {
        key: Some(message_key.clone()),
        value: None,
        ..RawRecord::default()
    });
    records
}
