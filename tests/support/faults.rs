//! The graceful end of a `distcache-state-node` process as the fault tests check it: SIGTERM, the
//! exit status, and the counters it writes to its `--final-metrics-file` when it stops.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::NodeProcess;

/// The counters a binary state node wrote to its `--final-metrics-file` when it stopped: each number of the
/// JSON object by name, each field of a summary as `name.field` (`batch_size.count`). `None` while there is no
/// file; panics unless it is the documented shape (numbers, and summaries of count, sum, max, p50, p99).
pub fn final_metrics(path: &Path) -> Option<HashMap<String, u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let bad = |why: &str| -> String { format!("{}: {why}:\n{text}", path.display()) };
    let object = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(object)) => object,
        _ => panic!("{}", bad("not one JSON object")),
    };
    let mut out = HashMap::new();
    for (name, value) in object {
        match value {
            serde_json::Value::Object(summary) => {
                let mut fields: Vec<&str> = summary.keys().map(String::as_str).collect();
                fields.sort_unstable();
                assert_eq!(
                    fields,
                    ["count", "max", "p50", "p99", "sum"],
                    "{}",
                    bad(&format!("{name} is not a summary"))
                );
                for (field, v) in &summary {
                    let v = v
                        .as_u64()
                        .unwrap_or_else(|| panic!("{}", bad(&format!("{name}.{field}"))));
                    out.insert(format!("{name}.{field}"), v);
                }
            }
            v => {
                let v = v
                    .as_u64()
                    .unwrap_or_else(|| panic!("{}", bad(&format!("{name} is not a count"))));
                out.insert(name, v);
            }
        }
    }
    assert!(out.contains_key("consumed"), "{}", bad("no consumed"));
    Some(out)
}

/// SIGTERM, then the exit status and the final metrics; panics unless it exits 0 within `timeout`.
pub fn terminate(node: &NodeProcess, timeout: Duration) -> (Duration, HashMap<String, u64>) {
    let started = Instant::now();
    assert!(
        node.terminate(),
        "state node was not running:\n{}",
        node.stderr_tail(30)
    );
    let status = node.wait_timeout(timeout);
    let took = started.elapsed();
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
    (took, written_final_metrics(node))
}

/// Like `terminate` for a node that was already sent SIGTERM.
pub fn terminate_signalled(node: &NodeProcess) -> (Duration, HashMap<String, u64>) {
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
    (started.elapsed(), written_final_metrics(node))
}

/// The final metrics of a node that exited; panics without them. The file is complete before the
/// exit (written, then renamed).
pub fn written_final_metrics(node: &NodeProcess) -> HashMap<String, u64> {
    final_metrics(&node.final_metrics_file).unwrap_or_else(|| {
        panic!(
            "no final metrics file {}; stderr:\n{}",
            node.final_metrics_file.display(),
            node.stderr_tail(30)
        )
    })
}
