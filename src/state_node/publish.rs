//! Step 5 of the state node: tell every core node what was applied, on the done topic, and wait
//! until the broker acknowledged every message (offsets are committed only after that).

use crossbeam_channel::bounded;

use super::apply::Fate;
use crate::bus::producer::EventProducer;
use crate::event::{DoneEvent, WriteEvent, TOPIC_DONE};
use crate::Result;

/// The done event that answers a write with `fate`: an applied write is reported as itself,
/// every other fate as a stale marker (the write lost, or will never apply).
pub(crate) fn done_report(write: WriteEvent, fate: &Fate, inline_limit: usize) -> DoneEvent {
    match fate {
        Fate::Applied => DoneEvent::applied(write, inline_limit),
        Fate::Stale | Fate::Failed { .. } | Fate::Superseded | Fate::Refused => {
            DoneEvent::stale(write)
        }
    }
}

/// Produces every event and waits for all acknowledgements. Fails if any delivery failed; the
/// caller then publishes the batch again (listeners apply by version, so repeats are harmless).
pub(crate) fn publish(producer: &EventProducer, events: &[DoneEvent]) -> Result<()> {
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
        let e = WriteEvent::set("n", "k", Version::new(1, 1), vec![0; 10]);
        let applied = Fate::Applied;
        let small = done_report(e.clone(), &applied, 10);
        assert_eq!(small.value.as_deref(), Some(&[0u8; 10][..]));
        let big = done_report(e.clone(), &applied, 9);
        assert!(big.value.is_none() && big.value_omitted);
        assert!(DoneEvent::decode(&big.encode()).is_ok());
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
            assert!(DoneEvent::decode(&s.encode()).is_ok());
        }
    }
}
