//! The writes of one round: every writer gets a seeded list of conflicting writes on the round's small key
//! space (synced and plain sets and deletes), sends them one at a time and logs each reply: the version the
//! broker acknowledged, or the error.

use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::world::World;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    SetSync,
    DelSync,
    Set,
    Del,
}

impl Kind {
    pub fn is_set(self) -> bool {
        matches!(self, Kind::SetSync | Kind::Set)
    }
}

/// One write a writer will make.
#[derive(Clone, Debug)]
pub struct Planned {
    pub key: String,
    pub kind: Kind,
    /// Unique in the run, so a stored value names the write that stored it.
    pub value: String,
    /// Local TTL (and, for synced sets, the Redis TTL), in ms.
    pub ttl_ms: Option<u64>,
}

impl Planned {
    fn command(&self) -> String {
        let ttl = self.ttl_ms.map(|t| format!(" {t}")).unwrap_or_default();
        match self.kind {
            Kind::SetSync => format!("set-sync {} {}{ttl}", self.key, self.value),
            Kind::Set => format!("set {} {}{ttl}", self.key, self.value),
            Kind::DelSync => format!("del-sync {}", self.key),
            Kind::Del => format!("del {}", self.key),
        }
    }
}

/// A write as made: acknowledged with its version (32 hex digits), or refused with an error.
#[derive(Clone, Debug)]
pub struct Made {
    pub writer: usize,
    pub write: Planned,
    pub outcome: Result<String, String>,
    /// When the reply arrived.
    pub at: Instant,
}

impl Made {
    pub fn version(&self) -> Option<&str> {
        self.outcome.as_deref().ok()
    }
}

/// The shape of a burst of writes.
#[derive(Clone, Copy, Debug)]
pub struct Burst {
    pub writes_per_writer: usize,
    /// Longest pause between two writes of a writer (each pause is drawn from 0..=this).
    pub max_pause: Duration,
    pub ttl_ms: Option<u64>,
}

/// Seeded writes for every writer: about half synced sets, the rest synced deletes and plain writes.
pub fn plan(seed: u64, keys: &[String], burst: Burst, writers: usize) -> Vec<Vec<Planned>> {
    (0..writers)
        .map(|w| {
            let mut rng = StdRng::seed_from_u64(seed ^ ((w as u64 + 1) << 48));
            (0..burst.writes_per_writer)
                .map(|i| {
                    let key = keys[rng.random_range(0..keys.len())].clone();
                    let kind = match rng.random_range(0..100) {
                        0..=44 => Kind::SetSync,
                        45..=59 => Kind::DelSync,
                        60..=84 => Kind::Set,
                        _ => Kind::Del,
                    };
                    Planned {
                        key,
                        kind,
                        value: format!("{seed:x}-w{}-{i}", w + 1),
                        ttl_ms: burst.ttl_ms,
                    }
                })
                .collect()
        })
        .collect()
}

/// Runs every writer's list on its own thread (pauses seeded by `seed`) while `during` runs on the caller's
/// thread; returns every write made and what `during` returned.
pub fn run<R>(
    world: &World,
    seed: u64,
    plans: Vec<Vec<Planned>>,
    burst: Burst,
    during: impl FnOnce() -> R,
) -> (Vec<Made>, R) {
    thread::scope(|scope| {
        let handles: Vec<_> = plans
            .into_iter()
            .enumerate()
            .map(|(w, plan)| {
                let writer = &world.writers[w];
                scope.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17) ^ w as u64);
                    let mut made = Vec::with_capacity(plan.len());
                    for write in plan {
                        let pause = rng.random_range(0..=burst.max_pause.as_millis() as u64);
                        thread::sleep(Duration::from_millis(pause));
                        let command = write.command();
                        let reply = writer.request(&command);
                        let outcome = match reply.strip_prefix("OK ") {
                            Some(version) if version.len() == 32 => Ok(version.to_string()),
                            _ => Err(reply),
                        };
                        made.push(Made {
                            writer: w + 1,
                            write,
                            outcome,
                            at: Instant::now(),
                        });
                    }
                    made
                })
            })
            .collect();
        let result = during();
        let made = handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread"))
            .collect();
        (made, result)
    })
}
