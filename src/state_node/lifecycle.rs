//! How the state node's threads stop: a shared [`Lifecycle`] says whether they should stop, by
//! when a shutdown gives up on retries, and why the node stopped by itself. Every stage holds the
//! same `Arc<Lifecycle>` instead of its own flag, deadline and failure slot.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::metrics::Counters;
use crate::{Error, Result};

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The node's run state, shared by the intake, the pipeline, the delivery thread and the handle.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    stop: AtomicBool,
    /// Set by shutdown: retries give up after this instant and their batch stays uncommitted.
    give_up_at: Mutex<Option<Instant>>,
    /// Why the node stopped by itself (`None` while it runs and after a plain shutdown).
    failure: Mutex<Option<String>>,
}

impl Lifecycle {
    /// True once the node is stopping (shutdown, or a failure).
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The stop flag itself, for waits that watch it (the intake's byte budget, re-reads).
    pub(crate) fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// Starts a shutdown: the threads stop, and retries give up `timeout` from now.
    pub(crate) fn shut_down_within(&self, timeout: Duration) {
        *self.give_up_at.lock() = Some(Instant::now() + timeout);
        self.stop.store(true, Ordering::Release);
    }

    /// Records why the node cannot go on (the first reason wins) and stops it: the intake leaves
    /// the group.
    pub(crate) fn fail(&self, why: String) {
        log::error!(target: "distcache::state_node",
            "state node stopping: {why}; its partitions go to another node (the batch is replayed)");
        self.failure.lock().get_or_insert(why);
        self.stop.store(true, Ordering::Release);
    }

    /// Why the node stopped by itself, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// Runs `step` until it succeeds, backing off from 50 ms, doubling, up to 2 s between
    /// attempts. Gives up only on [`Error::Shutdown`] or once a shutdown's deadline has passed.
    pub(crate) fn retry<R>(
        &self,
        what: &str,
        counters: &Counters,
        mut step: impl FnMut() -> Result<R>,
    ) -> Result<R> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match step() {
                Ok(r) => return Ok(r),
                Err(e) => {
                    if self.deadline_passed() || matches!(e, Error::Shutdown) {
                        return Err(e);
                    }
                    counters.retries.fetch_add(1, Relaxed);
                    log::warn!(target: "distcache::state_node", "{what} failed, retrying in {backoff:?}: {e}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn deadline_passed(&self) -> bool {
        self.give_up_at
            .lock()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_success_and_counts_each_retry() {
        let (life, counters) = (Lifecycle::default(), Counters::default());
        let mut calls = 0;
        let got = life.retry("step", &counters, || {
            calls += 1;
            if calls < 3 {
                Err(Error::Rejected("not yet".into()))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got.unwrap(), 3);
        assert_eq!(counters.retries.load(Relaxed), 2);
    }

    #[test]
    fn a_passed_shutdown_deadline_ends_the_retries() {
        let (life, counters) = (Lifecycle::default(), Counters::default());
        life.shut_down_within(Duration::ZERO);
        assert!(life.stopping());
        let got: Result<()> = life.retry("step", &counters, || Err(Error::Rejected("no".into())));
        assert!(got.is_err());
        assert_eq!(counters.retries.load(Relaxed), 0);
        assert_eq!(life.failure(), None, "a shutdown is not a failure");
    }

    #[test]
    fn the_first_failure_is_kept_and_stops_the_node() {
        let life = Lifecycle::default();
        life.fail("first".into());
        life.fail("second".into());
        assert!(life.stopping());
        assert_eq!(life.failure().as_deref(), Some("first"));
    }
}
