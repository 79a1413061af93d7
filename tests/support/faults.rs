//! The graceful end of a `distcache-state-node` process as the fault tests check it: SIGTERM, the
//! exit status, and the counters it logs on shutdown.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{wait_until, ChildProcess};

/// The counters a binary state node logs on shutdown ("final metrics: StateNodeMetrics { consumed: X, … }"),
/// the plain integer ones only.
pub fn final_metrics(stderr: &str) -> Option<HashMap<String, u64>> {
    let at = stderr.rfind("final metrics: StateNodeMetrics {")?;
    let body = &stderr[at + "final metrics: StateNodeMetrics {".len()..];
    let mut out = HashMap::new();
    for part in body.split(", ") {
        let Some((name, value)) = part.trim().split_once(": ") else {
            break;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            break;
        };
        out.insert(name.to_string(), value);
    }
    out.contains_key("consumed").then_some(out)
}

/// SIGTERM, then the exit status and the final metrics; panics unless it exits 0 within `timeout`.
pub fn terminate(node: &ChildProcess, timeout: Duration) -> (Duration, HashMap<String, u64>) {
    let started = Instant::now();
    assert!(
        node.terminate(),
        "state node was not running:\n{}",
        node.stderr_tail(30)
    );
    let status = node.wait_timeout(timeout);
    let took = started.elapsed();
    let stderr = node.stderr();
    let status = status.unwrap_or_else(|| {
        panic!(
            "no exit within {timeout:?} of SIGTERM; stderr:\n{}",
            node.stderr_tail(30)
        )
    });
    assert!(
        status.success(),
        "exit status {status} after SIGTERM; stderr:\n{}",
        node.stderr_tail(30)
    );
    // The stderr reader thread may lag the exit by a moment.
    let mut metrics = final_metrics(&stderr);
    if metrics.is_none() {
        wait_until(Duration::from_secs(5), || {
            metrics = final_metrics(&node.stderr());
            metrics.is_some()
        });
    }
    let metrics = metrics
        .unwrap_or_else(|| panic!("no final metrics logged; stderr:\n{}", node.stderr_tail(30)));
    (took, metrics)
}

/// Like `terminate` for a node that was already sent SIGTERM.
pub fn terminate_signalled(node: &ChildProcess) -> (Duration, HashMap<String, u64>) {
    let started = Instant::now();
    let status = node
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "no exit within 15 s of SIGTERM; stderr:\n{}",
                node.stderr_tail(30)
            )
        });
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        node.stderr_tail(30)
    );
    let mut metrics = None;
    wait_until(Duration::from_secs(5), || {
        metrics = final_metrics(&node.stderr());
        metrics.is_some()
    });
    let metrics = metrics
        .unwrap_or_else(|| panic!("no final metrics logged; stderr:\n{}", node.stderr_tail(30)));
    (started.elapsed(), metrics)
}
