//! One core-node instance per (process, namespace).
//!
//! Building a second `DistributedCache` for a namespace returns a handle to the first, so a
//! process runs one listener thread and one consumer per namespace however often callers build.
//! The registry holds weak references: when the last handle is dropped the instance shuts down
//! and a later build starts afresh.
//!
//! Building talks to Redis and Kafka and can take seconds, so the registry's lock is never held
//! while building: the namespace is marked "building" instead, other namespaces build in parallel,
//! and a second build of the same namespace waits for the first (at most [`BUILD_WAIT`]) and then
//! shares its instance, or tries itself if the first failed.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::{Error, Result};

/// Longest a build waits for another build of the same namespace in this process.
const BUILD_WAIT: Duration = Duration::from_secs(120);

enum Slot {
    /// Another thread is building the namespace's instance.
    Building { type_name: &'static str },
    Built {
        instance: Box<dyn Any + Send>,
        alive: fn(&(dyn Any + Send)) -> bool,
        type_name: &'static str,
    },
}

struct Registry {
    slots: Mutex<HashMap<String, Slot>>,
    /// Signalled whenever a build ends (with or without an instance).
    built: Condvar,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    slots: Mutex::new(HashMap::new()),
    built: Condvar::new(),
});

fn is_alive<I: Send + Sync + 'static>(instance: &(dyn Any + Send)) -> bool {
    instance
        .downcast_ref::<Weak<I>>()
        .is_some_and(|w| w.strong_count() > 0)
}

/// Clears the "building" mark of a namespace when its build ends, also if `build` panics.
struct BuildMark<'a> {
    ns: &'a str,
}

impl Drop for BuildMark<'_> {
    fn drop(&mut self) {
        let mut slots = REGISTRY.slots.lock();
        if matches!(slots.get(self.ns), Some(Slot::Building { .. })) {
            slots.remove(self.ns);
        }
        drop(slots);
        REGISTRY.built.notify_all();
    }
}

/// The live instance for `ns`, or a new one from `build`. Fails when `ns` is in use by a cache of
/// another value type, or when another build of `ns` does not finish within [`BUILD_WAIT`].
pub(crate) fn get_or_build<I: Send + Sync + 'static>(
    ns: &str,
    type_name: &'static str,
    build: impl FnOnce() -> Result<Arc<I>>,
) -> Result<Arc<I>> {
    let deadline = Instant::now() + BUILD_WAIT;
    let mut slots = REGISTRY.slots.lock();
    loop {
        match slots.get(ns) {
            Some(Slot::Building { type_name: other }) => {
                if *other != type_name {
                    return Err(in_use(ns, other, type_name));
                }
                if REGISTRY.built.wait_until(&mut slots, deadline).timed_out() {
                    return Err(Error::Timeout {
                        what: format!("another thread building the cache of namespace {ns:?}"),
                        after: BUILD_WAIT,
                    });
                }
            }
            Some(Slot::Built {
                instance,
                alive,
                type_name: other,
            }) => {
                if let Some(existing) = instance.downcast_ref::<Weak<I>>().and_then(Weak::upgrade) {
                    return Ok(existing);
                }
                if alive(instance.as_ref()) {
                    return Err(in_use(ns, other, type_name));
                }
                break;
            }
            None => break,
        }
    }
    slots.insert(ns.to_string(), Slot::Building { type_name });
    drop(slots);
    let mark = BuildMark { ns };
    let instance = build()?;
    REGISTRY.slots.lock().insert(
        ns.to_string(),
        Slot::Built {
            instance: Box::new(Arc::downgrade(&instance)),
            alive: is_alive::<I>,
            type_name,
        },
    );
    drop(mark);
    Ok(instance)
}

fn in_use(ns: &str, used_by: &str, type_name: &str) -> Error {
    Error::Config(format!(
        "namespace {ns:?} is already used by a cache of {used_by}; give this cache of {type_name} its own namespace"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn one_instance_per_namespace_and_type_checked() {
        let a = get_or_build("reg-test-a", "u32", || Ok(Arc::new(1u32))).unwrap();
        let again = get_or_build("reg-test-a", "u32", || Ok(Arc::new(2u32))).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let clash = get_or_build("reg-test-a", "String", || Ok(Arc::new(String::new())));
        assert!(matches!(clash, Err(Error::Config(_))));
        drop((a, again));
        let fresh = get_or_build("reg-test-a", "String", || Ok(Arc::new("x".to_string()))).unwrap();
        assert_eq!(*fresh, "x");
    }

    /// A slow build (network calls) of one namespace must not hold up builds of others; a second
    /// build of the same namespace waits and shares the first's instance.
    #[test]
    fn a_slow_build_blocks_no_other_namespace() {
        let (other_built, wait_other) = mpsc::channel::<()>();
        let slow = std::thread::spawn(move || {
            get_or_build("reg-test-slow", "u32", || {
                // Stands in for Kafka and Redis calls: finishes only once the other build did.
                let other_done = wait_other.recv_timeout(Duration::from_secs(5)).is_ok();
                Ok(Arc::new(u32::from(other_done)))
            })
        });
        // Let the slow build start first.
        std::thread::sleep(Duration::from_millis(200));
        let same =
            std::thread::spawn(|| get_or_build("reg-test-slow", "u32", || Ok(Arc::new(7u32))));
        let started = Instant::now();
        let other = get_or_build("reg-test-other", "u32", || Ok(Arc::new(2u32))).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited for another namespace's build"
        );
        let _ = other_built.send(());
        let slow = slow.join().unwrap().unwrap();
        assert_eq!(
            *slow, 1,
            "the other namespace was built while this one was building"
        );
        let same = same.join().unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&slow, &same),
            "the second build shared the first's instance"
        );
        drop(other);
    }

    #[test]
    fn a_failed_build_lets_the_next_one_try() {
        let failed =
            get_or_build::<u32>("reg-test-fail", "u32", || Err(Error::Config("no".into())));
        assert!(failed.is_err());
        let ok = get_or_build("reg-test-fail", "u32", || Ok(Arc::new(3u32))).unwrap();
        assert_eq!(*ok, 3);
    }
}
