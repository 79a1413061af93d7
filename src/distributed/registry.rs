//! One core-node instance per (process, namespace).
//!
//! Building a second `DistributedCache` for a namespace returns a handle to the first, so a
//! process runs one listener thread and one consumer per namespace however often callers build.
//! The registry holds weak references: when the last handle is dropped the instance shuts down
//! and a later build starts afresh.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;

use crate::{Error, Result};

struct Slot {
    instance: Box<dyn Any + Send>,
    alive: fn(&(dyn Any + Send)) -> bool,
    type_name: &'static str,
}

static REGISTRY: LazyLock<Mutex<HashMap<String, Slot>>> = LazyLock::new(Default::default);

fn is_alive<I: Send + Sync + 'static>(instance: &(dyn Any + Send)) -> bool {
    instance
        .downcast_ref::<Weak<I>>()
        .is_some_and(|w| w.strong_count() > 0)
}

/// The live instance for `ns`, or a new one from `build`. Fails when `ns` is in use by a cache of
/// another value type.
pub(crate) fn get_or_build<I: Send + Sync + 'static>(
    ns: &str,
    type_name: &'static str,
    build: impl FnOnce() -> Result<Arc<I>>,
) -> Result<Arc<I>> {
    // Held while building, so two threads racing to build one namespace get one instance.
    let mut map = REGISTRY.lock();
    if let Some(slot) = map.get(ns) {
        if let Some(existing) = slot
            .instance
            .downcast_ref::<Weak<I>>()
            .and_then(Weak::upgrade)
        {
            return Ok(existing);
        }
        if (slot.alive)(slot.instance.as_ref()) {
            return Err(Error::Config(format!(
                "namespace {ns:?} is already used by a cache of {}; give this cache of {type_name} its own namespace",
                slot.type_name
            )));
        }
    }
    let instance = build()?;
    map.insert(
        ns.to_string(),
        Slot {
            instance: Box::new(Arc::downgrade(&instance)),
            alive: is_alive::<I>,
            type_name,
        },
    );
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
