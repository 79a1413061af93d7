//! Writer threads for the state-node fault tests: in-process `set_with_sync` writes from fixed
//! plans, every one recorded with its outcome, and what Redis may hold per key afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use distcache::{DistributedCache, Version};

use super::{wait_until, PATIENCE};

/// One write made by a writer thread.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    pub key: String,
    pub value: String,
    pub ok: bool,
    pub started: Instant,
    /// When the broker acknowledged it, and the version it got (`None` for a failed write).
    pub acked: Option<(Instant, Version)>,
}

/// Writer threads doing acknowledged `set_with_sync` writes from fixed plans.
pub struct Writers {
    pub handles: Vec<JoinHandle<Vec<WriteRecord>>>,
    pub acked: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
    pub stop: Arc<AtomicBool>,
}

impl Writers {
    /// One thread per plan; a plan is `(key, value)` in order. Keep every key in one plan, so the order of
    /// its writes is known.
    pub fn start(cache: &DistributedCache<String>, plans: Vec<Vec<(String, String)>>) -> Writers {
        let acked = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = plans
            .into_iter()
            .enumerate()
            .map(|(i, plan)| {
                let (cache, acked, failed, stop) =
                    (cache.clone(), acked.clone(), failed.clone(), stop.clone());
                thread::Builder::new()
                    .name(format!("writer-{i}"))
                    .spawn(move || {
                        let mut log = Vec::with_capacity(plan.len());
                        for (key, value) in plan {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            let started = Instant::now();
                            let result = cache.set_with_sync(&key, value.clone(), None, None);
                            let acked_at = match result {
                                Ok(version) => {
                                    acked.fetch_add(1, Ordering::Relaxed);
                                    Some((Instant::now(), version))
                                }
                                Err(e) => {
                                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                        eprintln!("write {key} failed: {e}");
                                    }
                                    None
                                }
                            };
                            log.push(WriteRecord {
                                key,
                                value,
                                ok: acked_at.is_some(),
                                started,
                                acked: acked_at,
                            });
                        }
                        log
                    })
                    .expect("spawn writer")
            })
            .collect();
        Writers {
            handles,
            acked,
            failed,
            stop,
        }
    }

    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` writes were acknowledged (panics after `PATIENCE`).
    pub fn wait_acked(&self, n: usize) {
        assert!(
            wait_until(PATIENCE, || self.acked() >= n
                || self.handles.iter().all(|h| h.is_finished())),
            "writers stuck at {} acknowledged writes ({} failed)",
            self.acked(),
            self.failed.load(Ordering::Relaxed)
        );
    }

    /// Asks the threads to stop after their current write.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Every write made, per thread in order.
    pub fn join(self) -> Vec<WriteRecord> {
        self.handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread panicked"))
            .collect()
    }
}

/// `threads` plans of `rounds` passes over `keys_per_thread` distinct keys; the value names round and key.
pub fn plans(
    tag: &str,
    threads: usize,
    keys_per_thread: usize,
    rounds: usize,
) -> Vec<Vec<(String, String)>> {
    (0..threads)
        .map(|t| {
            (0..rounds)
                .flat_map(|r| {
                    (0..keys_per_thread)
                        .map(move |k| (format!("{tag}-t{t}-k{k}"), format!("r{r}-t{t}-k{k}")))
                })
                .collect()
        })
        .collect()
}

/// What Redis may hold per key after `writes`: the value of the last acknowledged write, or the value of a
/// failed write after it (a write that returned `Err` may still have reached the broker). Only keys whose last
/// acknowledged write passes `include` are listed; keys never acknowledged are not.
pub fn expected(
    writes: &[WriteRecord],
    include: impl Fn(&WriteRecord) -> bool,
) -> BTreeMap<String, Vec<String>> {
    let mut per_key: HashMap<&str, (Option<&WriteRecord>, Vec<String>)> = HashMap::new();
    for w in writes {
        let entry = per_key.entry(&w.key).or_default();
        if w.ok {
            *entry = (Some(w), Vec::new());
        } else {
            entry.1.push(w.value.clone());
        }
    }
    per_key
        .into_iter()
        .filter_map(|(key, (last_ok, later_failed))| {
            let last_ok = last_ok.filter(|w| include(w))?;
            let mut allowed = vec![last_ok.value.clone()];
            allowed.extend(later_failed);
            Some((key.to_string(), allowed))
        })
        .collect()
}
