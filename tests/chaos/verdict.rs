//! The checks after a round settles, per key of the round:
//! (a) Redis records the largest acknowledged version of the key, with the value (or absence) that write
//!     left when it was synced; a larger version only when some write of the key failed (its outcome is
//!     unknown to the writer: the broker may have taken it after all);
//! (b) every writer's local cache holds that write's value or lacks the key (a delete: lacks it);
//! (c) every acknowledged write was reported on the done topic (applied or stale).
//! A round that destroys data (Redis or the broker losing it) names the moment before which acknowledged
//! writes may be lost; those are counted apart, and (a) then asks for the newest surviving write.

use std::time::Instant;

use crate::done_log::DoneLog;
use crate::workload::{Kind, Made};
use crate::world::{Stored, World};

/// What a round may have destroyed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Losses {
    /// Writes acknowledged before this moment may be lost.
    pub before: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Verdict {
    /// Acknowledged writes missing (not in Redis where they should win, or never reported).
    pub lost: Vec<String>,
    /// Keys where Redis or a local cache disagrees with the writes.
    pub diverged: Vec<String>,
    /// Acknowledged writes the round's fault was allowed to destroy and did.
    pub destroyed: usize,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.diverged.is_empty()
    }
}

/// The write Redis' record names.
enum Winner<'a> {
    /// No record: every write of the key is gone (or there was none).
    Nothing,
    Write(&'a Made),
    /// A version no writer knows: a write that failed at the writer may have landed.
    Unknown,
}

/// Checks `keys` against the writes `made` in the round. `Err` when Redis or a writer could not be asked.
pub fn check(
    world: &World,
    keys: &[String],
    made: &[Made],
    losses: Losses,
    done: &DoneLog,
) -> Result<Verdict, String> {
    let stored = world.stored(keys)?;
    let mut verdict = Verdict::default();
    for (key, stored) in keys.iter().zip(&stored) {
        let writes: Vec<&Made> = made.iter().filter(|m| &m.write.key == key).collect();
        check_key(
            world,
            key,
            &writes,
            stored.as_ref(),
            losses,
            done,
            &mut verdict,
        );
    }
    Ok(verdict)
}

fn check_key(
    world: &World,
    key: &str,
    writes: &[&Made],
    stored: Option<&Stored>,
    losses: Losses,
    done: &DoneLog,
    verdict: &mut Verdict,
) {
    let acked: Vec<&Made> = writes
        .iter()
        .copied()
        .filter(|m| m.version().is_some())
        .collect();
    let protected = |m: &Made| losses.before.is_none_or(|t| m.at >= t);
    let failed: Vec<&Made> = writes
        .iter()
        .copied()
        .filter(|m| m.version().is_none())
        .collect();
    let needed = acked
        .iter()
        .filter(|m| protected(m))
        .filter_map(|m| m.version())
        .max();
    let recorded = stored.and_then(Stored::recorded);

    verdict.destroyed += acked
        .iter()
        .filter(|m| !protected(m))
        .filter(|m| m.version() > recorded)
        .count();
    for m in acked.iter().filter(|m| protected(m)) {
        let version = m.version().unwrap_or_default();
        if !done.reported(key, version) {
            verdict.lost.push(format!(
                "{key}: writer-{} {:?} at {version} was never reported on the done topic",
                m.writer, m.write.kind
            ));
        }
    }
    if needed > recorded {
        verdict.lost.push(format!(
            "{key}: Redis records {recorded:?}, older than the acknowledged {needed:?}"
        ));
        return;
    }

    let winner = match recorded {
        None => Winner::Nothing,
        Some(r) => match acked.iter().find(|m| m.version() == Some(r)) {
            Some(m) => Winner::Write(m),
            None if !failed.is_empty() => Winner::Unknown,
            None => {
                verdict.diverged.push(format!(
                    "{key}: Redis records {r}, which no writer acknowledged ({} writes of the key, none failed)",
                    writes.len()
                ));
                return;
            }
        },
    };
    if let (Winner::Write(m), Some(stored)) = (&winner, stored) {
        let redis_ok = match m.write.kind {
            Kind::SetSync => {
                stored.ver.as_deref() == m.version()
                    && stored.value.as_deref() == Some(m.write.value.as_str())
            }
            Kind::DelSync => stored.ver.as_deref() == m.version() && stored.value.is_none(),
            Kind::Set | Kind::Del => stored.pver.as_deref() == m.version(),
        };
        if !redis_ok {
            verdict.diverged.push(format!(
                "{key}: Redis holds {stored:?}, the winner is writer-{} {:?} {:?} at {:?}",
                m.writer,
                m.write.kind,
                m.write.value,
                m.version()
            ));
        }
    }
    for writer in &world.writers {
        let local = writer.get(key);
        let agrees = match (&winner, local.as_deref()) {
            (_, None) => true,
            (Winner::Nothing, Some(_)) => false,
            (Winner::Write(m), Some(v)) => m.write.kind.is_set() && v == m.write.value,
            (Winner::Unknown, Some(v)) => {
                stored.and_then(|s| s.value.as_deref()) == Some(v)
                    || failed.iter().any(|f| f.write.value == v)
            }
        };
        if !agrees {
            verdict.diverged.push(format!(
                "{key}: {} serves {local:?} locally; Redis holds {stored:?}",
                writer.label()
            ));
        }
    }
}
