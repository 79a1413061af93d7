//! The Redis workers of step 4: apply writes to Redis with a fixed pool of threads.
//!
//! Each worker owns one blocking connection ([`ScriptConn`], which runs the versioned-apply
//! script). A key always goes to the same worker (hash of the key), so two writes of one key never
//! race each other, and each worker sends its share of a batch at once.
//!
//! Errors are sorted by what a retry can do. A connection, timeout or server-state error fails
//! the job and the whole batch is retried; an error about one key that no retry can fix (a stored
//! version that is not ours, a key of another type) is that key's [`Outcome::Failed`], and the
//! rest of the batch goes on. A job that panics is caught: the
//! worker drops its connection, reports [`ApplyFailure::Panicked`] and serves the next job.

use std::hash::BuildHasher;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::metrics::Counters;
use crate::event::WriteEvent;

use crate::redis_store::{
    is_transient_reply, CallReply, Connector, KeyReply, ScriptConn, VersionedWrite, BAD_VERSION,
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

/// Redis-side settings for applying events.
#[derive(Clone, Debug)]
pub(crate) struct ApplySettings {
    pub prefix: String,
    pub tombstone_ms: u64,
}

impl ApplySettings {
    pub(crate) fn redis_key(&self, event: &WriteEvent) -> String {
        crate::redis_store::redis_entry_key(&self.prefix, &event.ns, &event.key)
    }
}

struct Job {
    /// The whole batch, shared with the other workers (no event is copied).
    events: Arc<Vec<WriteEvent>>,
    /// This worker's share: indexes into `events`.
    share: Vec<usize>,
    reply: Sender<std::result::Result<Vec<(usize, Outcome)>, ApplyFailure>>,
}

/// What a worker does with its share of a batch: [`Worker`] against Redis, a stand-in in tests.
pub(crate) trait Applier: Send + 'static {
    /// Applies `events[i]` for each `i` of `share`, one `(i, outcome)` per write.
    fn apply(&mut self, events: &[WriteEvent], share: &[usize]) -> Result<Vec<(usize, Outcome)>>;
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
            script: ScriptConn::new(connector.clone()),
            settings: settings.clone(),
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
    /// (every write is idempotent). Every worker has let go of `events` when this returns.
    pub(crate) fn apply(
        &self,
        events: &Arc<Vec<WriteEvent>>,
    ) -> std::result::Result<Vec<Outcome>, ApplyFailure> {
        self.dispatch(events)?.wait()
    }

    /// Hands each worker its share of `events` and returns without waiting, so the caller can
    /// prepare the next batch while Redis works on this one. A worker takes its jobs in order,
    /// and a key always goes to the same worker, so two batches in flight never reorder the
    /// writes of one key. Blocks while a worker still has a job queued (at most one each).
    pub(crate) fn dispatch(
        &self,
        events: &Arc<Vec<WriteEvent>>,
    ) -> std::result::Result<InFlight, ApplyFailure> {
        let n = self.senders.len();
        let mut shares: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, e) in events.iter().enumerate() {
            let shard = (self.hasher.hash_one((&e.ns, &e.key)) % n as u64) as usize;
            shares[shard].push(i);
        }
        let (reply_tx, replies) = bounded(n);
        let mut pending = 0;
        for (shard, share) in shares.into_iter().enumerate() {
            if share.is_empty() {
                continue;
            }
            let job = Job {
                events: events.clone(),
                share,
                reply: reply_tx.clone(),
            };
            self.senders[shard].send(job).map_err(|_| worker_gone())?;
            pending += 1;
        }
        Ok(InFlight {
            replies,
            pending,
            len: events.len(),
        })
    }
}

/// A batch handed to the workers, not yet answered. Dropping it leaves the workers to finish
/// (their answers are discarded; nothing of the batch is then known to be applied).
pub(crate) struct InFlight {
    replies: Receiver<std::result::Result<Vec<(usize, Outcome)>, ApplyFailure>>,
    pending: usize,
    len: usize,
}

impl InFlight {
    /// Waits for every share: one outcome per event, or why the batch failed. Every worker has
    /// let go of the batch's events when this returns.
    pub(crate) fn wait(self) -> std::result::Result<Vec<Outcome>, ApplyFailure> {
        let mut outcomes = vec![Outcome::Stale; self.len];
        let mut first_err = None;
        for _ in 0..self.pending {
            match self.replies.recv() {
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
    script: ScriptConn,
    settings: ApplySettings,
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
        let Job {
            events,
            share,
            reply,
        } = job;
        let result = match catch_unwind(AssertUnwindSafe(|| applier.apply(&events, &share))) {
            Ok(result) => result.map_err(ApplyFailure::Redis),
            Err(panic) => {
                let why = panic_message(&*panic);
                counters.worker_panics.fetch_add(1, Relaxed);
                log::error!(target: "distcache::state_node",
                    "redis worker {} panicked on a batch share of {} writes: {why}",
                    std::thread::current().name().unwrap_or("?"), share.len());
                applier.reset();
                Err(ApplyFailure::Panicked(why))
            }
        };
        // Let go of the batch before answering: the caller takes its events back once every
        // worker has answered.
        drop(events);
        let _ = reply.send(result);
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
    fn apply(&mut self, events: &[WriteEvent], share: &[usize]) -> Result<Vec<(usize, Outcome)>> {
        let writes: Vec<(usize, &WriteEvent)> = share.iter().map(|&i| (i, &events[i])).collect();
        let writes = &writes[..];
        match self.send(writes)? {
            CallReply::Keys(replies) => Self::outcomes(writes, replies),
            CallReply::Refused(why) => {
                // Refused for a reason a retry cannot fix: find the keys it is about, one call
                // each, so the others still apply.
                log::warn!(target: "distcache::state_node",
                    "redis refused a call of {} writes ({why}); applying them one by one", writes.len());
                let mut outcomes = Vec::with_capacity(writes.len());
                for write in writes {
                    let one = std::slice::from_ref(write);
                    match self.send(one)? {
                        CallReply::Keys(replies) => outcomes.extend(Self::outcomes(one, replies)?),
                        CallReply::Refused(why) => outcomes.push((write.0, Outcome::Failed(why))),
                    }
                }
                Ok(outcomes)
            }
        }
    }

    fn reset(&mut self) {
        self.script.reset();
    }
}

impl Worker {
    /// The outcome of each write from the script's per-key replies.
    fn outcomes(
        writes: &[(usize, &WriteEvent)],
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

    /// Runs the apply script for the writes. `Err`: a failure a retry may fix.
    fn send(&mut self, writes: &[(usize, &WriteEvent)]) -> Result<CallReply> {
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
        self.script.apply(&versioned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;

    /// Panics on the key `boom`, applies everything else.
    struct Flaky {
        resets: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Applier for Flaky {
        fn apply(
            &mut self,
            events: &[WriteEvent],
            share: &[usize],
        ) -> Result<Vec<(usize, Outcome)>> {
            if share.iter().any(|&i| events[i].key == "boom") {
                panic!("injected");
            }
            Ok(share.iter().map(|&i| (i, Outcome::Applied)).collect())
        }

        fn reset(&mut self) {
            self.resets.fetch_add(1, Relaxed);
        }
    }

    fn event(key: &str) -> WriteEvent {
        WriteEvent::set("ns", key, Version::new(1, 1), b"1".to_vec())
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
            match workers.apply(&Arc::new(vec![event("a"), event("boom")])) {
                Err(ApplyFailure::Panicked(why)) => assert_eq!(why, "injected"),
                other => panic!("round {round}: expected a panic failure, got {other:?}"),
            }
            assert_eq!(counters.worker_panics.load(Relaxed), round);
            assert_eq!(resets.load(Relaxed), round as usize);
            let outcomes = workers
                .apply(&Arc::new(vec![event("a"), event("b")]))
                .unwrap();
            assert_eq!(outcomes, vec![Outcome::Applied, Outcome::Applied]);
        }
    }

    #[test]
    fn only_a_foreign_stored_version_is_a_bad_version() {
        assert!(
            Outcome::Failed("BADVERSION stored pver is not 32 hex digits".into()).is_bad_version()
        );
        assert!(!Outcome::Failed("WRONGTYPE x".into()).is_bad_version());
    }
}
