//! The Redis side of applying events: one connection that runs the versioned-apply script
//! ([`APPLY_SCRIPT`]) for a list of writes, and the rule that sorts Redis errors by what a retry
//! can do. The state node's workers own one each.
//!
//! On a single server the script is loaded once per connection (`SCRIPT LOAD`, again after a
//! restarted Redis answers `NOSCRIPT`) and called with `EVALSHA` for up to [`KEYS_PER_CALL`] keys
//! a call, the calls pipelined; on a cluster each key is its own `EVAL` (a script's keys must share
//! a slot), in a cluster pipeline.

use std::sync::Arc;

use super::layout::{apply_command, key_replies, KeyReply, VersionedWrite, APPLY_SCRIPT};
use super::pool::{Conn, Connector};
use crate::{Error, Result};

/// Writes per apply-script call on a single server: enough to spread the script's fixed cost,
/// few enough that one call never blocks Redis for long.
pub const KEYS_PER_CALL: usize = 64;

/// Redis' answer to one [`ScriptConn::apply`].
#[derive(Debug)]
pub(crate) enum CallReply {
    /// One reply per write, in order.
    Keys(Vec<KeyReply>),
    /// Redis refused the whole call for a reason no retry fixes (an argument the server will not
    /// take, say): which write it is about is unknown.
    Refused(String),
}

/// One connection that applies writes with the apply script. Connects lazily, and again after a
/// failure a retry may fix.
pub(crate) struct ScriptConn {
    connector: Arc<Connector>,
    conn: Option<Conn>,
    sha: String,
}

impl ScriptConn {
    pub(crate) fn new(connector: Arc<Connector>) -> ScriptConn {
        ScriptConn {
            connector,
            conn: None,
            sha: redis::Script::new(APPLY_SCRIPT).get_hash().to_string(),
        }
    }

    /// Runs the apply script for `writes`. `Err` is a failure a retry may fix ([`is_transient`]:
    /// the connection, the server's state); the connection is dropped then, so the next call
    /// starts afresh. A cluster connection must be dropped too: after a master dies mid-pipeline
    /// it keeps the dead socket (and may hold unread replies from the other masters), so it would
    /// fail with the same error even once the master is back (tests/redis_cluster.rs,
    /// `a_master_restarted_mid_drain_loses_nothing`); a new one finds the cluster from any seed.
    pub(crate) fn apply(&mut self, writes: &[VersionedWrite<'_>]) -> Result<CallReply> {
        let replies = match self.send(writes)? {
            // A restarted Redis forgets loaded scripts: reload once.
            Err(e) if is_noscript(&e) => {
                self.load_script()?;
                self.send(writes)?
            }
            other => other,
        };
        match replies {
            Ok(replies) => Ok(CallReply::Keys(replies)),
            Err(e) if is_transient(&e) => {
                self.conn = None;
                Err(Error::from_redis(e))
            }
            Err(e) => Ok(CallReply::Refused(e.to_string())),
        }
    }

    /// Drops the connection (after a panic, say): the next call connects afresh.
    pub(crate) fn reset(&mut self) {
        self.conn = None;
    }

    /// The outer error is a connection that could not be opened; the inner one is Redis' answer.
    fn send(&mut self, writes: &[VersionedWrite<'_>]) -> Result<redis::RedisResult<Vec<KeyReply>>> {
        let sha = self.sha.clone();
        let conn = self.connection()?;
        Ok(send_writes(conn, writes, &sha))
    }

    fn connection(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            self.conn = Some(self.connector.connect()?);
            self.load_script()?;
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Loads the apply script on a single server (a cluster gets the script's text each call).
    fn load_script(&mut self) -> Result<()> {
        let conn = match self.conn.as_mut() {
            Some(c) if !c.is_cluster() => c,
            _ => return Ok(()),
        };
        let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(APPLY_SCRIPT)
            .query(conn);
        match loaded {
            Ok(sha) => {
                self.sha = sha;
                Ok(())
            }
            Err(e) => {
                self.conn = None;
                Err(Error::from_redis(e))
            }
        }
    }
}

/// On a single server the writes go in calls of up to [`KEYS_PER_CALL`] keys, pipelined; on a
/// cluster one key per call, in a cluster pipeline.
fn send_writes(
    conn: &mut Conn,
    writes: &[VersionedWrite<'_>],
    sha: &str,
) -> redis::RedisResult<Vec<KeyReply>> {
    if let Some(cluster) = conn.as_cluster() {
        let mut pipe = redis::cluster::cluster_pipe();
        for w in writes {
            pipe.add_command(apply_command(std::slice::from_ref(w), None));
        }
        let replies: Vec<redis::Value> = pipe.query(cluster)?;
        return Ok(replies
            .into_iter()
            .flat_map(|r| key_replies(r, 1))
            .collect());
    }
    let chunks: Vec<&[VersionedWrite<'_>]> = writes.chunks(KEYS_PER_CALL).collect();
    let mut pipe = redis::pipe();
    for chunk in &chunks {
        pipe.add_command(apply_command(chunk, Some(sha)));
    }
    let replies: Vec<redis::Value> = pipe.query(conn)?;
    Ok(replies
        .into_iter()
        .zip(&chunks)
        .flat_map(|(r, chunk)| key_replies(r, chunk.len()))
        .collect())
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Whether retrying may fix a Redis error: the connection (I/O, timeout, refused, dropped), the
/// cluster moving slots, or the server's state (loading, busy, out of memory, read-only, an ACL or
/// a lost script an operator or a reconnect fixes). Anything else is about the data of the key.
fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || e.code().is_some_and(is_transient_code)
}

/// [`is_transient`] for an error message from the apply script's per-key reply.
pub(crate) fn is_transient_reply(why: &str) -> bool {
    why.split_whitespace().next().is_some_and(is_transient_code)
}

fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "LOADING"
            | "BUSY"
            | "TRYAGAIN"
            | "CLUSTERDOWN"
            | "MOVED"
            | "ASK"
            | "MASTERDOWN"
            | "READONLY"
            | "NOREPLICAS"
            | "OOM"
            | "NOSCRIPT"
            | "NOAUTH"
            | "NOPERM"
            | "WRONGPASS"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_what_a_retry_can_do() {
        for transient in [
            "OOM command not allowed when used memory > 'maxmemory'",
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "MOVED 3999 127.0.0.1:6381",
            "BUSY Redis is busy running a script",
        ] {
            assert!(is_transient_reply(transient), "{transient}");
        }
        for per_key in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "BADVERSION stored ver is not 32 hex digits",
            "user_script:12: attempt to compare nil with number",
            "",
        ] {
            assert!(!is_transient_reply(per_key), "{per_key}");
        }
        let io: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(is_transient(&io));
    }
}
