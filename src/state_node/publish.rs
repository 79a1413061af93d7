//! Step 5 of the state node: tell every core node what was applied, on the done topic, and wait
//! until the broker acknowledged every message (offsets are committed only after that).

use crossbeam_channel::bounded;

use super::apply::Fate;
use crate::bus::producer::EventProducer;
use crate::event::{Event, TOPIC_DONE};
use crate::Result;

/// The done event that answers a write with `fate`: an applied write is reported as itself,
/// every other fate as a stale marker (the write lost, or will never apply): it wakes writers
/// waiting for the outcome, and local caches drop their copy of the key unless it is newer.
pub(crate) fn done_report(event: Event, fate: &Fate, inline_limit: usize) -> Event {
    match fate {
        Fate::Applied => applied(event, inline_limit),
        Fate::Stale | Fate::Failed { .. } | Fate::Superseded | Fate::Refused => event.into_stale(),
    }
}

/// An applied write's report: same version; the value inlined up to `inline_limit` bytes, else
/// omitted (listeners then drop their copy and re-read Redis on demand).
fn applied(mut done: Event, inline_limit: usize) -> Event {
    if done.value.as_ref().is_some_and(|v| v.len() > inline_limit) {
        done.value = None;
        done.value_omitted = true;
    }
    done
}

/// Produces every event and waits for all acknowledgements. Fails if any delivery failed; the
/// caller then publishes the batch again (listeners apply by version, so repeats are harmless).
pub(crate) fn publish(producer: &EventProducer, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let (tx, rx) = bounded(events.len());
    for e in events {
        producer.send(TOPIC_DONE, &e.message_key(), &e.encode(), tx.clone())?;
    }
    drop(tx);
    let mut failure = None;
    for _ in 0..events.len() {
        if let Err(e) = producer.wait(&rx) {
            failure.get_or_insert(e);
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use crate::Version;

    #[test]
    fn applied_writes_inline_small_values_and_every_other_fate_is_stale() {
        let e = Event::set("n", "k", Version::new(1, 1), vec![0; 10]);
        let applied = Fate::Applied;
        let small = done_report(e.clone(), &applied, 10);
        assert_eq!(small.value.as_deref(), Some(&[0u8; 10][..]));
        let big = done_report(e.clone(), &applied, 9);
        assert!(big.value.is_none() && big.value_omitted);
        assert!(Event::decode(&big.encode()).is_ok());
        for fate in [
            Fate::Stale,
            Fate::Failed { bad_version: true },
            Fate::Superseded,
            Fate::Refused,
        ] {
            let s = done_report(e.clone(), &fate, 10);
            assert_eq!(s.op, Op::Stale);
            assert_eq!(s.version, e.version);
            assert!(s.value.is_none() && !s.value_omitted);
            assert!(Event::decode(&s.encode()).is_ok());
        }
    }
}
