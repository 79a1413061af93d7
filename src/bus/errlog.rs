//! Rate-limited error logging that says how many repeats it held back.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Repeats of the previous message within this window are counted instead of logged.
const WINDOW: Duration = Duration::from_secs(5);

/// Logs a message at once unless it equals the previous one and that was logged less than
/// [`WINDOW`] ago; held-back repeats are counted and reported with the next message logged.
/// Holds one message: bounded whatever the errors.
pub(crate) struct ErrorLog {
    target: &'static str,
    state: Mutex<Option<Last>>,
}

struct Last {
    message: String,
    logged_at: Instant,
    held_back: u64,
}

impl ErrorLog {
    pub(crate) fn new(target: &'static str) -> Self {
        ErrorLog {
            target,
            state: Mutex::new(None),
        }
    }

    /// Logs `message` at warn level, or counts it as a repeat. Returns whether it was logged.
    pub(crate) fn report(&self, message: &str) -> bool {
        let mut state = self.state.lock();
        let now = Instant::now();
        if let Some(last) = state.as_mut() {
            if last.message == message && now.duration_since(last.logged_at) < WINDOW {
                last.held_back += 1;
                return false;
            }
            if last.held_back > 0 {
                log::warn!(target: self.target,
                    "{} (repeated {} more times in {:?})", last.message, last.held_back,
                    now.duration_since(last.logged_at));
            }
        }
        log::warn!(target: self.target, "{message}");
        *state = Some(Last {
            message: message.to_string(),
            logged_at: now,
            held_back: 0,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_held_back_and_counted() {
        let log = ErrorLog::new("test");
        assert!(log.report("broker down"));
        assert!(!log.report("broker down"));
        assert!(!log.report("broker down"));
        assert_eq!(log.state.lock().as_ref().unwrap().held_back, 2);
        // Another message is logged at once and flushes the count.
        assert!(log.report("unknown topic"));
        assert_eq!(log.state.lock().as_ref().unwrap().held_back, 0);
        assert!(log.report("broker down"));
        // After the window a repeat is logged again.
        log.state.lock().as_mut().unwrap().logged_at = Instant::now() - WINDOW;
        assert!(log.report("broker down"));
    }
}
