//! Single flight for `get_or_load`: concurrent misses of one key in this process share one
//! loader call. The map holds only keys being loaded right now, so it is bounded by the number
//! of calling threads.

use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::{Condvar, Mutex};

use crate::{Error, Result};

type Shared<T> = std::result::Result<Option<T>, String>;

struct Flight<T> {
    result: Mutex<Option<Shared<T>>>,
    done: Condvar,
}

pub(crate) struct SingleFlight<T> {
    flights: Mutex<HashMap<String, Arc<Flight<T>>>>,
}

impl<T: Clone> SingleFlight<T> {
    pub(crate) fn new() -> Self {
        SingleFlight {
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `load` for `key` unless a call for `key` is already running; then waits for and
    /// shares its result. A failed shared load is reported to the waiters as [`Error::Rejected`].
    pub(crate) fn run(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.get(key).cloned() {
            drop(flights);
            let mut result = flight.result.lock();
            while result.is_none() {
                flight.done.wait(&mut result);
            }
            return match result.as_ref().expect("set before notify") {
                Ok(v) => Ok(v.clone()),
                Err(msg) => Err(Error::Rejected(format!(
                    "shared load of {key:?} failed: {msg}"
                ))),
            };
        }
        let flight = Arc::new(Flight {
            result: Mutex::new(None),
            done: Condvar::new(),
        });
        flights.insert(key.to_string(), flight.clone());
        drop(flights);
        // Publishes a result even if `load` panics, so waiters never hang.
        let mut landing = Landing {
            owner: self,
            key,
            flight,
            result: Err("the loader panicked".to_string()),
        };
        let outcome = load();
        landing.result = match &outcome {
            Ok(v) => Ok(v.clone()),
            Err(e) => Err(e.to_string()),
        };
        outcome
    }
}

struct Landing<'a, T> {
    owner: &'a SingleFlight<T>,
    key: &'a str,
    flight: Arc<Flight<T>>,
    result: Shared<T>,
}

impl<T> Drop for Landing<'_, T> {
    fn drop(&mut self) {
        self.owner.flights.lock().remove(self.key);
        let result = std::mem::replace(&mut self.result, Err(String::new()));
        *self.flight.result.lock() = Some(result);
        self.flight.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// All callers start together (a barrier) and the loader returns only once every other
    /// caller holds the flight (queued for its result), so exactly one load runs, whatever the
    /// scheduling.
    #[test]
    fn concurrent_callers_share_one_load() {
        const CALLERS: usize = 8;
        let sf = Arc::new(SingleFlight::<u32>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(std::sync::Barrier::new(CALLERS));
        let threads: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (sf, calls, start) = (sf.clone(), calls.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    sf.run("k", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // The map's reference, the loader's own, and one per queued caller.
                        let deadline = std::time::Instant::now() + Duration::from_secs(30);
                        loop {
                            let held = sf.flights.lock().get("k").map(Arc::strong_count);
                            if held == Some(2 + CALLERS - 1) {
                                break;
                            }
                            assert!(
                                std::time::Instant::now() < deadline,
                                "callers never queued: {held:?}"
                            );
                            std::thread::yield_now();
                        }
                        Ok(Some(7))
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), Some(7));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one loader call");
        assert!(sf.flights.lock().is_empty());
    }

    #[test]
    fn failures_reach_the_caller() {
        let sf = SingleFlight::<u32>::new();
        let err = sf
            .run("k", || Err(Error::Config("nope".into())))
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert_eq!(sf.run("k", || Ok(None)).unwrap(), None);
    }
}
