//! Reads a node's `/metrics` and `/health` over plain HTTP/1.1: how tests and the failover bench
//! learn what a state node holds (`distcache_state_node_assigned_partitions`) instead of parsing
//! its log. Standard library only, so `benches/` can include this file by `#[path]`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// `GET path` from `addr` (HOST:PORT): the status code and body, or `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(TIMEOUT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The samples of a Prometheus text page, `name{labels}` → value (comments skipped).
pub fn parse_exposition(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The samples of `addr`'s `/metrics`, or `None` when it does not answer 200.
pub fn scrape(addr: &str) -> Option<HashMap<String, f64>> {
    match http_get(addr, "/metrics")? {
        (200, body) => Some(parse_exposition(&body)),
        _ => None,
    }
}

/// Partitions a state node serving metrics on `addr` holds now (0 when it does not answer).
pub fn assigned_partitions(addr: &str) -> usize {
    scrape(addr)
        .and_then(|m| m.get("distcache_state_node_assigned_partitions").copied())
        .unwrap_or(0.0) as usize
}
