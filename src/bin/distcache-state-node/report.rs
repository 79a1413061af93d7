//! What the node tells about its counters: a `key=value` log line for people, and the
//! `--final-metrics-file` for programs (one JSON object, written when the node stops), so that no
//! one has to parse log lines.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use distcache::StateNodeMetrics;
use serde_json::Value;

/// One line of `name=value` pairs, the names those of the JSON file: counters and gauges first,
/// then each summary as `name=[n=… p50=… p99=… max=…]` (`name=-` when empty), each group sorted by
/// name. For reading, not for parsing: programs read the file or `/metrics`.
pub fn line(metrics: &StateNodeMetrics) -> String {
    let Ok(Value::Object(fields)) = serde_json::to_value(metrics) else {
        return format!("{metrics:?}");
    };
    let mut numbers = Vec::new();
    let mut summaries = Vec::new();
    for (name, value) in &fields {
        match value {
            Value::Object(s) if s.get("count").and_then(Value::as_u64) == Some(0) => {
                summaries.push(format!("{name}=-"))
            }
            Value::Object(s) => {
                let field = |f: &str| s.get(f).cloned().unwrap_or(Value::Null);
                summaries.push(format!(
                    "{name}=[n={} p50={} p99={} max={}]",
                    field("count"),
                    field("p50"),
                    field("p99"),
                    field("max")
                ))
            }
            other => numbers.push(format!("{name}={other}")),
        }
    }
    numbers.extend(summaries);
    numbers.join(" ")
}

/// Readies `path` for the file written at the stop: removes the file of an earlier run (a file
/// present after this run stopped is this run's) and checks that the directory takes a new file,
/// so a path that cannot be written fails at the start, not at the end.
pub fn prepare(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let temp = temp_path(path);
    File::create(&temp)?;
    fs::remove_file(&temp)
}

/// Writes `metrics` to `path` as one JSON object (`StateNodeMetrics`' serde form) and a newline,
/// atomically: a temporary file in the same directory, synced, then renamed over `path`, so a
/// reader sees either no file or the whole object.
pub fn write_file(path: &Path, metrics: &StateNodeMetrics) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(metrics).map_err(io::Error::other)?;
    json.push(b'\n');
    let temp = temp_path(path);
    let written = File::create(&temp).and_then(|mut file| {
        file.write_all(&json)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&temp, path)) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    // The rename survives a machine crash only once the directory is synced; a failure here
    // leaves the file readable, so it is not an error.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// `.NAME.PID.tmp` beside `path`: same directory (a rename does not cross file systems), hidden,
/// and never shared by two processes.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_one_object_of_numbers_and_summaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("final.json");
        fs::write(&path, "an earlier run's file").unwrap();
        prepare(&path).unwrap();
        assert!(!path.exists(), "an earlier run's file is removed");

        let mut m = StateNodeMetrics {
            consumed: 7,
            applied: 5,
            ..Default::default()
        };
        m.batch_size.count = 2;
        m.batch_size.p99 = 4;
        write_file(&path, &m).unwrap();
        let v: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["consumed"], 7);
        assert_eq!(v["applied"], 5);
        assert_eq!(v["batch_size"]["count"], 2);
        assert_eq!(v["batch_size"]["p99"], 4);
        assert_eq!(v["apply_latency_us"]["count"], 0);
        // Nothing left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let text = line(&m);
        assert!(text.starts_with("applied=5 "), "{text}");
        assert!(text.contains(" consumed=7 "), "{text}");
        assert!(
            text.contains(" batch_size=[n=2 p50=0 p99=4 max=0]"),
            "{text}"
        );
        assert!(text.contains(" apply_latency_us=-"), "{text}");
    }

    #[test]
    fn a_directory_that_is_not_there_fails_at_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("final.json");
        assert!(prepare(&path).is_err());
        assert!(write_file(&path, &StateNodeMetrics::default()).is_err());
    }
}
