//! Step 4 of the state node: apply writes to Redis with a fixed pool of workers.
//!
//! Each worker owns one blocking connection. A key always goes to the same worker (hash of the
//! key), so two writes of one key never race each other, and each worker sends its share of a
//! batch as one pipeline of `EVALSHA` calls of the versioned-apply script.

use std::hash::BuildHasher;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::event::Event;

/// Writes per apply-script call on a single server: enough to spread the script's fixed cost,
/// few enough that one call never blocks Redis for long.
const KEYS_PER_CALL: usize = 64;
use crate::redis_store::{
    apply_command, key_replies, Conn, Connector, KeyReply, VersionedWrite, APPLY_SCRIPT,
};
use crate::{Error, Result};

/// What happened to one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Newer than what Redis held: applied (or, for plain writes, accepted without writing).
    Applied,
    /// Not newer than what Redis held: dropped.
    Stale,
    /// Redis refused it (e.g. the key holds another type); counted and skipped.
    Failed(String),
}

/// Redis-side settings for applying events.
#[derive(Clone, Debug)]
pub(crate) struct ApplySettings {
    pub prefix: String,
    pub tombstone_ms: u64,
}

impl ApplySettings {
    pub(crate) fn redis_key(&self, event: &Event) -> String {
        crate::redis_store::redis_entry_key(&self.prefix, &event.ns, &event.key)
    }
}

struct Job {
    /// Indexes into the caller's slice, and the events themselves.
    writes: Vec<(usize, Event)>,
    reply: Sender<Result<Vec<(usize, Outcome)>>>,
}

/// The worker pool. Dropping it stops and joins the workers.
pub(crate) struct RedisWorkers {
    senders: Vec<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
    hasher: foldhash::fast::FixedState,
}

impl RedisWorkers {
    pub(crate) fn start(
        connector: Connector,
        settings: ApplySettings,
        workers: usize,
    ) -> Result<Self> {
        let connector = std::sync::Arc::new(connector);
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            // One job in flight per worker: the pipeline waits for every share before the next batch.
            let (tx, rx) = bounded::<Job>(1);
            let worker = Worker {
                connector: connector.clone(),
                settings: settings.clone(),
                conn: None,
                sha: redis::Script::new(APPLY_SCRIPT).get_hash().to_string(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("distcache-redis-{i}"))
                .spawn(move || worker.run(rx))
                .map_err(|e| Error::Config(format!("cannot start redis worker: {e}")))?;
            senders.push(tx);
            handles.push(handle);
        }
        Ok(RedisWorkers {
            senders,
            handles,
            hasher: foldhash::fast::FixedState::with_seed(0x5eed),
        })
    }

    /// Applies `events` (already sorted by version). Returns one outcome per event, or an error
    /// when Redis could not be reached; then nothing is known to be applied and the caller retries
    /// the whole batch (every write is idempotent).
    pub(crate) fn apply(&self, events: &[Event]) -> Result<Vec<Outcome>> {
        let n = self.senders.len();
        let mut shares: Vec<Vec<(usize, Event)>> = vec![Vec::new(); n];
        for (i, e) in events.iter().enumerate() {
            let shard = (self.hasher.hash_one((&e.ns, &e.key)) % n as u64) as usize;
            shares[shard].push((i, e.clone()));
        }
        let (reply_tx, reply_rx) = bounded(n);
        let mut pending = 0;
        for (shard, writes) in shares.into_iter().enumerate() {
            if writes.is_empty() {
                continue;
            }
            let job = Job {
                writes,
                reply: reply_tx.clone(),
            };
            self.senders[shard].send(job).map_err(|_| Error::Shutdown)?;
            pending += 1;
        }
        drop(reply_tx);
        let mut outcomes = vec![Outcome::Stale; events.len()];
        let mut first_err = None;
        for _ in 0..pending {
            match reply_rx.recv() {
                Ok(Ok(results)) => {
                    for (i, o) in results {
                        outcomes[i] = o;
                    }
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Shutdown);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }
}

impl Drop for RedisWorkers {
    fn drop(&mut self) {
        self.senders.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

struct Worker {
    connector: std::sync::Arc<Connector>,
    settings: ApplySettings,
    conn: Option<Conn>,
    sha: String,
}

impl Worker {
    fn run(mut self, rx: Receiver<Job>) {
        for job in rx {
            let result = self.apply(&job.writes);
            let _ = job.reply.send(result);
        }
    }

    fn apply(&mut self, writes: &[(usize, Event)]) -> Result<Vec<(usize, Outcome)>> {
        let replies = match self.send(writes)? {
            // A restarted Redis forgets loaded scripts: reload once.
            Err(e) if is_noscript(&e) => {
                self.load_script()?;
                self.send(writes)?
            }
            other => other,
        }
        .map_err(|e| {
            // The connection may be out of step after an I/O error: start afresh next time.
            if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                self.conn = None;
            }
            Error::from_redis(e)
        })?;
        let mut outcomes = Vec::with_capacity(writes.len());
        for ((i, _), reply) in writes.iter().zip(replies) {
            let outcome = match reply {
                Ok(true) => Outcome::Applied,
                Ok(false) => Outcome::Stale,
                // The key holds data of another type: this write can never apply. Skip it.
                Err(why) if why.starts_with("WRONGTYPE") => Outcome::Failed(why),
                // Anything else (out of memory, a read-only replica …) may pass on a retry:
                // the whole batch is retried rather than an acknowledged write dropped.
                Err(why) => return Err(Error::Rejected(format!("redis: {why}"))),
            };
            outcomes.push((*i, outcome));
        }
        Ok(outcomes)
    }

    /// Sends the writes over this worker's connection. The outer error is a connection that
    /// could not be opened; the inner one is Redis' answer (NOSCRIPT is handled by the caller).
    fn send(&mut self, writes: &[(usize, Event)]) -> Result<redis::RedisResult<Vec<KeyReply>>> {
        let keys: Vec<String> = writes
            .iter()
            .map(|(_, e)| self.settings.redis_key(e))
            .collect();
        let tombstone_ms = self.settings.tombstone_ms;
        let versioned: Vec<VersionedWrite<'_>> = writes
            .iter()
            .zip(&keys)
            .map(|((_, e), key)| VersionedWrite {
                key,
                version: e.version,
                value: e.value.as_deref(),
                ttl_ms: e.remote_ttl.map_or(0, crate::redis_store::ttl_millis),
                write: e.write_redis,
                tombstone_ms,
            })
            .collect();
        let sha = self.sha.clone();
        let conn = self.connection()?;
        Ok(send_writes(conn, &versioned, &sha))
    }

    fn connection(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            self.conn = Some(self.connector.connect()?);
            self.load_script()?;
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Loads the apply script on a single server (a cluster gets the script's text each call).
    fn load_script(&mut self) -> Result<()> {
        let conn = match self.conn.as_mut() {
            Some(c) if !c.is_cluster() => c,
            _ => return Ok(()),
        };
        let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(APPLY_SCRIPT)
            .query(conn);
        match loaded {
            Ok(sha) => {
                self.sha = sha;
                Ok(())
            }
            Err(e) => {
                self.conn = None;
                Err(Error::from_redis(e))
            }
        }
    }
}

/// On a single server the writes go in calls of up to [`KEYS_PER_CALL`] keys, pipelined; on a
/// cluster one key per call (a script's keys must share a slot), in a cluster pipeline.
fn send_writes(
    conn: &mut Conn,
    writes: &[VersionedWrite<'_>],
    sha: &str,
) -> redis::RedisResult<Vec<KeyReply>> {
    if let Some(cluster) = conn.as_cluster() {
        let mut pipe = redis::cluster::cluster_pipe();
        for w in writes {
            pipe.add_command(apply_command(std::slice::from_ref(w), None));
        }
        let replies: Vec<redis::Value> = pipe.query(cluster)?;
        return Ok(replies
            .into_iter()
            .flat_map(|r| key_replies(r, 1))
            .collect());
    }
    let chunks: Vec<&[VersionedWrite<'_>]> = writes.chunks(KEYS_PER_CALL).collect();
    let mut pipe = redis::pipe();
    for chunk in &chunks {
        pipe.add_command(apply_command(chunk, Some(sha)));
    }
    let replies: Vec<redis::Value> = pipe.query(conn)?;
    Ok(replies
        .into_iter()
        .zip(&chunks)
        .flat_map(|(r, chunk)| key_replies(r, chunk.len()))
        .collect())
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}
