//! Walking every key under a prefix, on one server or on every master of a cluster.
//!
//! `SCAN` cursors belong to one server, so on a cluster each master is scanned on its own, and
//! per-key follow-ups go through a cluster pipeline (which routes each command by its key) instead
//! of one multi-key command that would cross slots.

use redis::{FromRedisValue, RedisResult};

use super::pool::Conn;

/// A master to scan; `None` is "the server this connection talks to".
pub(crate) type Node = Option<(String, u16)>;

/// The servers to scan: the one server, or every reachable master of the cluster.
pub(crate) fn nodes(conn: &mut Conn) -> RedisResult<Vec<Node>> {
    match conn.as_cluster() {
        None => Ok(vec![None]),
        Some(cluster) => {
            let text: String = redis::cmd("CLUSTER").arg("NODES").query(cluster)?;
            Ok(masters(&text).into_iter().map(Some).collect())
        }
    }
}

/// Parses `CLUSTER NODES`: `id host:port@cport[,hostname] flags master ping pong epoch state slots…`.
fn masters(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let is_live_master = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| matches!(f, "fail" | "noaddr"));
            if !is_live_master {
                return None;
            }
            let host_port = addr.split(['@', ',']).next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// One `SCAN` step on `node`: the next cursor and a batch of keys.
pub(crate) fn step(
    conn: &mut Conn,
    node: Option<&(String, u16)>,
    cursor: u64,
    pattern: &str,
    count: usize,
) -> RedisResult<(u64, Vec<Vec<u8>>)> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count);
    match (conn.as_cluster(), node) {
        (Some(cluster), Some((host, port))) => {
            use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            });
            let value = cluster.route_command(&cmd, routing)?;
            Ok(redis::from_redis_value(value)?)
        }
        _ => cmd.query(conn),
    }
}

/// Runs one command per key, pipelined, and returns the replies in order.
pub(crate) fn per_key<T: FromRedisValue>(
    conn: &mut Conn,
    keys: &[Vec<u8>],
    command: impl Fn(&[u8]) -> redis::Cmd,
) -> RedisResult<Vec<T>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    match conn.as_cluster() {
        Some(cluster) => {
            let mut pipe = redis::cluster::cluster_pipe();
            for k in keys {
                pipe.add_command(command(k));
            }
            pipe.query(cluster)
        }
        None => {
            let mut pipe = redis::pipe();
            for k in keys {
                pipe.add_command(command(k));
            }
            pipe.query(conn)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_live_masters() {
        let text = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002,redis-b master - 0 1 2 connected 5461-10922
c3 127.0.0.1:30003@40003 master,fail - 0 1 3 disconnected
d4 127.0.0.1:30004@40004 slave a1 0 1 1 connected
";
        assert_eq!(
            masters(text),
            vec![
                ("127.0.0.1".to_string(), 30001),
                ("127.0.0.1".to_string(), 30002)
            ]
        );
    }
}
