//! Log lines on stderr: env_logger's text, or one JSON object a line for log collectors.

use std::io::Write;

use crate::settings::LogFormat;

/// Installs the logger. `filters` are env_logger filters (`info`, `info,distcache::bus=debug`).
pub fn init(filters: &str, format: LogFormat) {
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters(filters)
        .target(env_logger::Target::Stderr);
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = json_line(
                &buf.timestamp_millis().to_string(),
                record.level().as_str(),
                record.target(),
                &record.args().to_string(),
            );
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}

/// `{"ts":…,"level":…,"target":…,"msg":…}`: every field a string, the message escaped by
/// serde_json, so a message with quotes or line breaks stays one parseable line.
fn json_line(ts: &str, level: &str, target: &str, msg: &str) -> String {
    serde_json::json!({ "ts": ts, "level": level, "target": target, "msg": msg }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_one_parseable_object() {
        let line = json_line(
            "2026-12-03T14:00:00.000Z",
            "WARN",
            "distcache::bus",
            "a \"b\"\nc",
        );
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "a \"b\"\nc");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "distcache::bus");
        assert_eq!(v["ts"], "2026-12-03T14:00:00.000Z");
    }
}
