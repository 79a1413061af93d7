//! Step 4 of the state node: apply writes to Redis with a fixed pool of workers.
//!
//! Each worker owns one blocking connection. A key always goes to the same worker (hash of the
//! key), so two writes of one key never race each other, and each worker sends its share of a
//! batch as one pipeline of `EVALSHA` calls of the versioned-apply script.
//!
//! Errors are sorted by what a retry can do. A connection, timeout or server-state error
//! ([`is_transient`]) fails the job and the whole batch is retried; an error about one key that no
//! retry can fix (a stored version that is not ours, a key of another type) is that key's
//! [`Outcome::Failed`], and the rest of the batch goes on. A job that panics is caught: the
//! worker drops its connection, reports [`ApplyFailure::Panicked`] and serves the next job.

use std::hash::BuildHasher;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::metrics::Counters;
use crate::event::Event;

/// Writes per apply-script call on a single server: enough to spread the script's fixed cost,
/// few enough that one call never blocks Redis for long.
const KEYS_PER_CALL: usize = 64;
use crate::redis_store::{
    apply_command, key_replies, Conn, Connector, KeyReply, VersionedWrite, APPLY_SCRIPT,
    BAD_VERSION,
};
use crate::{Error, Result};

/// What happened to one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Newer than what Redis held: applied (or, for plain writes, accepted without writing).
    Applied,
    /// Not newer than what Redis held: dropped.
    Stale,
    /// Redis cannot take it and no retry would change that (the key holds another type, its
    /// stored version is not ours); counted and skipped.
    Failed(String),
}

impl Outcome {
    /// A failure because the key's stored version is not one of ours.
    pub(crate) fn is_bad_version(&self) -> bool {
        matches!(self, Outcome::Failed(why) if why.starts_with(BAD_VERSION))
    }
}

/// Why a batch could not be applied; nothing of it is known to be applied, so it is retried.
#[derive(Debug)]
pub(crate) enum ApplyFailure {
    /// Redis could not be reached, or refused for a reason that may pass.
    Redis(Error),
    /// A worker panicked on its share of the batch (a bug): the worker survives on a fresh
    /// connection, but the same batch may panic again.
    Panicked(String),
}

impl std::fmt::Display for ApplyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyFailure::Redis(e) => e.fmt(f),
            ApplyFailure::Panicked(why) => write!(f, "a redis worker panicked: {why}"),
        }
    }
}

/// Whether retrying may fix a Redis error: the connection (I/O, timeout, refused, dropped), the
/// cluster moving slots, or the server's state (loading, busy, out of memory, read-only, an ACL or
/// a lost script an operator or a reconnect fixes). Anything else is about the data of the key.
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || e.code().is_some_and(is_transient_code)
}

/// [`is_transient`] for an error message from the apply script's per-key reply.
pub(crate) fn is_transient_reply(why: &str) -> bool {
    why.split_whitespace().next().is_some_and(is_transient_code)
}

fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "LOADING"
            | "BUSY"
            | "TRYAGAIN"
            | "CLUSTERDOWN"
            | "MOVED"
            | "ASK"
            | "MASTERDOWN"
            | "READONLY"
            | "NOREPLICAS"
            | "OOM"
            | "NOSCRIPT"
            | "NOAUTH"
            | "NOPERM"
            | "WRONGPASS"
    )
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

/// One worker's share of a batch.
type Share = Vec<(usize, Event)>;

struct Job {
    /// Indexes into the caller's slice, and the events themselves.
    writes: Share,
    reply: Sender<std::result::Result<Vec<(usize, Outcome)>, ApplyFailure>>,
}

/// What a worker does with its share of a batch: [`Worker`] against Redis, a stand-in in tests.
pub(crate) trait Applier: Send + 'static {
    /// Applies the writes, one outcome per write.
    fn apply(&mut self, writes: &[(usize, Event)]) -> Result<Vec<(usize, Outcome)>>;
    /// Forgets per-connection state after a panic, so the next job starts afresh.
    fn reset(&mut self);
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
        counters: Arc<Counters>,
    ) -> Result<Self> {
        let connector = Arc::new(connector);
        let appliers = (0..workers).map(|_| Worker {
            connector: connector.clone(),
            settings: settings.clone(),
            conn: None,
            sha: redis::Script::new(APPLY_SCRIPT).get_hash().to_string(),
        });
        Self::spawn(appliers, counters)
    }

    /// One thread per applier.
    pub(crate) fn spawn<A: Applier>(
        appliers: impl ExactSizeIterator<Item = A>,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        let workers = appliers.len();
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for (i, applier) in appliers.enumerate() {
            // One job in flight per worker: the pipeline waits for every share before the next batch.
            let (tx, rx) = bounded::<Job>(1);
            let counters = counters.clone();
            let handle = std::thread::Builder::new()
                .name(format!("distcache-redis-{i}"))
                .spawn(move || serve(applier, rx, &counters))
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

    /// Applies `events` (already sorted by version). Returns one outcome per event, or why the
    /// batch failed; then nothing is known to be applied and the caller retries the whole batch
    /// (every write is idempotent).
    pub(crate) fn apply(
        &self,
        events: &[Event],
    ) -> std::result::Result<Vec<Outcome>, ApplyFailure> {
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
            self.senders[shard].send(job).map_err(|_| worker_gone())?;
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
                    first_err.get_or_insert(worker_gone());
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

/// The pool lives as long as the pipeline, so a worker whose channel is closed has died: as bad as
/// a panic (and escalated like one), never a quiet retry forever.
fn worker_gone() -> ApplyFailure {
    ApplyFailure::Panicked("a redis worker thread is gone".into())
}

/// A worker's loop. A job that panics is answered with [`ApplyFailure::Panicked`] (so the batch
/// fails loudly instead of waiting forever), counted, and the worker goes on afresh.
fn serve<A: Applier>(mut applier: A, rx: Receiver<Job>, counters: &Counters) {
    for job in rx {
        let result = match catch_unwind(AssertUnwindSafe(|| applier.apply(&job.writes))) {
            Ok(result) => result.map_err(ApplyFailure::Redis),
            Err(panic) => {
                let why = panic_message(&*panic);
                counters.worker_panics.fetch_add(1, Relaxed);
                log::error!(target: "distcache::state_node",
                    "redis worker {} panicked on a batch share of {} writes: {why}",
                    std::thread::current().name().unwrap_or("?"), job.writes.len());
                applier.reset();
                Err(ApplyFailure::Panicked(why))
            }
        };
        let _ = job.reply.send(result);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

impl Applier for Worker {
    fn apply(&mut self, writes: &[(usize, Event)]) -> Result<Vec<(usize, Outcome)>> {
        let replies = match self.send(writes)? {
            // A restarted Redis forgets loaded scripts: reload once.
            Err(e) if is_noscript(&e) => {
                self.load_script()?;
                self.send(writes)?
            }
            other => other,
        };
        match replies {
            Ok(replies) => Self::outcomes(writes, replies),
            Err(e) if is_transient(&e) => Err(self.transient(e)),
            Err(e) => {
                // The whole call was refused for a reason a retry cannot fix (an argument the
                // server will not take, say): find the keys it is about, one call each, so the
                // others still apply.
                log::warn!(target: "distcache::state_node",
                    "redis refused a call of {} writes ({e}); applying them one by one", writes.len());
                let mut outcomes = Vec::with_capacity(writes.len());
                for write in writes {
                    let one = std::slice::from_ref(write);
                    match self.send(one)? {
                        Ok(replies) => outcomes.extend(Self::outcomes(one, replies)?),
                        Err(e) if is_transient(&e) => return Err(self.transient(e)),
                        Err(e) => outcomes.push((write.0, Outcome::Failed(e.to_string()))),
                    }
                }
                Ok(outcomes)
            }
        }
    }

    fn reset(&mut self) {
        self.conn = None;
    }
}

impl Worker {
    /// The outcome of each write from the script's per-key replies.
    fn outcomes(
        writes: &[(usize, Event)],
        replies: Vec<KeyReply>,
    ) -> Result<Vec<(usize, Outcome)>> {
        let mut outcomes = Vec::with_capacity(writes.len());
        for ((i, _), reply) in writes.iter().zip(replies) {
            let outcome = match reply {
                Ok(true) => Outcome::Applied,
                Ok(false) => Outcome::Stale,
                // Out of memory, a read-only replica …: may pass on a retry, so the whole batch
                // is retried rather than an acknowledged write dropped.
                Err(why) if is_transient_reply(&why) => {
                    return Err(Error::Rejected(format!("redis: {why}")))
                }
                // A stored version that is not ours, a key of another type, a script error on
                // this key's data: this write can never apply. Skip it.
                Err(why) => Outcome::Failed(why),
            };
            outcomes.push((*i, outcome));
        }
        Ok(outcomes)
    }

    /// A failure a retry may fix; the connection may be out of step, so the next try starts
    /// afresh (and reloads the script).
    fn transient(&mut self, e: redis::RedisError) -> Error {
        self.conn = None;
        Error::from_redis(e)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use crate::Version;

    /// Panics on the key `boom`, applies everything else.
    struct Flaky {
        resets: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Applier for Flaky {
        fn apply(&mut self, writes: &[(usize, Event)]) -> Result<Vec<(usize, Outcome)>> {
            if writes.iter().any(|(_, e)| e.key == "boom") {
                panic!("injected");
            }
            Ok(writes.iter().map(|(i, _)| (*i, Outcome::Applied)).collect())
        }

        fn reset(&mut self) {
            self.resets.fetch_add(1, Relaxed);
        }
    }

    fn event(key: &str) -> Event {
        Event {
            op: Op::Set,
            ns: "ns".into(),
            key: key.into(),
            version: Version::new(1, 1),
            remote_ttl: None,
            local_ttl: None,
            value: Some(b"1".to_vec()),
            write_redis: true,
            value_omitted: false,
            origin: 1,
            produced_at_us: 0,
        }
    }

    #[test]
    fn a_panicking_job_fails_its_batch_and_the_worker_serves_the_next() {
        let counters = Arc::new(Counters::default());
        let resets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers = RedisWorkers::spawn(
            std::iter::once(Flaky {
                resets: resets.clone(),
            }),
            counters.clone(),
        )
        .unwrap();
        for round in 1..=2 {
            match workers.apply(&[event("a"), event("boom")]) {
                Err(ApplyFailure::Panicked(why)) => assert_eq!(why, "injected"),
                other => panic!("round {round}: expected a panic failure, got {other:?}"),
            }
            assert_eq!(counters.worker_panics.load(Relaxed), round);
            assert_eq!(resets.load(Relaxed), round as usize);
            let outcomes = workers.apply(&[event("a"), event("b")]).unwrap();
            assert_eq!(outcomes, vec![Outcome::Applied, Outcome::Applied]);
        }
    }

    #[test]
    fn errors_are_sorted_by_what_a_retry_can_do() {
        for transient in [
            "OOM command not allowed when used memory > 'maxmemory'",
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "MOVED 3999 127.0.0.1:6381",
            "BUSY Redis is busy running a script",
        ] {
            assert!(is_transient_reply(transient), "{transient}");
        }
        for per_key in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "BADVERSION stored ver is not 32 hex digits",
            "user_script:12: attempt to compare nil with number",
            "",
        ] {
            assert!(!is_transient_reply(per_key), "{per_key}");
        }
        assert!(
            Outcome::Failed("BADVERSION stored pver is not 32 hex digits".into()).is_bad_version()
        );
        assert!(!Outcome::Failed("WRONGTYPE x".into()).is_bad_version());
        let io: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(is_transient(&io));
    }
}
