//! Reading cache entries straight from Redis, by the README's layout (default key prefix): one
//! entry's field, its JSON value, a [`RedisProbe`] that reads many keys and waits until Redis
//! holds what a test expects, and [`cluster_entries`] for many entries of a Redis Cluster.

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use distcache::{Version, DEFAULT_KEY_PREFIX};

use super::wait_until;

/// The Redis key of `key` in namespace `ns` under the default prefix.
pub fn entry_key(ns: &str, key: &str) -> String {
    distcache::redis_entry_key(DEFAULT_KEY_PREFIX, ns, key)
}

/// One field (`v`, `ver`, `pver`) of the entry of `ns`/`key`; `None` when absent.
pub fn entry_field(
    conn: &mut redis::Connection,
    ns: &str,
    key: &str,
    field: &str,
) -> Option<Vec<u8>> {
    redis::cmd("HGET")
        .arg(entry_key(ns, key))
        .arg(field)
        .query(conn)
        .expect("HGET")
}

/// The JSON-decoded string value of the entry of `ns`/`key`; `None` when absent or a tombstone.
pub fn entry_json(conn: &mut redis::Connection, ns: &str, key: &str) -> Option<String> {
    entry_field(conn, ns, key, "v")
        .map(|b| serde_json::from_slice(&b).expect("a JSON string value"))
}

/// The JSON-decoded string value (`v`) and the version (`ver`) of each entry of namespace `ns`, read
/// through a Redis Cluster connection in one cluster pipeline (each `HMGET` goes to its key's master).
/// `None` for a field that is absent; a version that does not parse is `None` too. `Err` when the
/// cluster did not answer (a node down, `CLUSTERDOWN`).
pub fn cluster_entries(
    conn: &mut redis::cluster::ClusterConnection,
    ns: &str,
    keys: &[&str],
) -> redis::RedisResult<Vec<(Option<String>, Option<Version>)>> {
    let mut pipe = redis::cluster::cluster_pipe();
    for key in keys {
        pipe.cmd("HMGET")
            .arg(entry_key(ns, key))
            .arg("v")
            .arg("ver");
    }
    let raw: Vec<(Option<Vec<u8>>, Option<String>)> = pipe.query(conn)?;
    Ok(raw
        .into_iter()
        .map(|(v, ver)| {
            let value = v.map(|bytes| {
                serde_json::from_slice::<String>(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "value {:?} is not a JSON string: {e}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
            });
            (value, ver.as_deref().and_then(Version::from_hex))
        })
        .collect())
}

/// Reads cache entries straight from Redis, reconnecting after errors (Redis may be restarting).
pub struct RedisProbe {
    client: redis::Client,
    conn: Option<redis::Connection>,
}

impl RedisProbe {
    pub fn new(url: &str) -> RedisProbe {
        RedisProbe {
            client: redis::Client::open(url).expect("redis url"),
            conn: None,
        }
    }

    /// The decoded value (`v`, JSON) of each key of namespace `ns`; `None` when absent or a tombstone.
    pub fn values(&mut self, ns: &str, keys: &[&str]) -> Result<Vec<Option<String>>, String> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(Duration::from_secs(2))
                .map_err(|e| format!("connect: {e}"))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGET").arg(entry_key(ns, key)).arg("v");
        }
        let conn = self.conn.as_mut().expect("connected");
        let raw: Vec<Option<Vec<u8>>> = match pipe.query(conn) {
            Ok(raw) => raw,
            Err(e) => {
                self.conn = None;
                return Err(format!("HGET: {e}"));
            }
        };
        Ok(raw
            .into_iter()
            .map(|v| {
                v.map(|bytes| {
                    serde_json::from_slice::<String>(&bytes).unwrap_or_else(|e| {
                        panic!(
                            "value {:?} is not a JSON string: {e}",
                            String::from_utf8_lossy(&bytes)
                        )
                    })
                })
            })
            .collect())
    }

    /// The keys of `want` whose stored value is not one of the allowed ones, with what Redis holds.
    pub fn unmet(
        &mut self,
        ns: &str,
        want: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<(String, Option<String>)>, String> {
        let keys: Vec<&str> = want.keys().map(String::as_str).collect();
        let mut bad = Vec::new();
        for chunk in keys.chunks(1000) {
            let got = self.values(ns, chunk)?;
            for (key, got) in chunk.iter().zip(got) {
                if !got.as_ref().is_some_and(|g| want[*key].contains(g)) {
                    bad.push((key.to_string(), got));
                }
            }
        }
        Ok(bad)
    }

    /// Waits until Redis holds an allowed value for every key of `want`; panics after `timeout` with the
    /// first mismatches and `diagnostics()`.
    pub fn wait_converged(
        &mut self,
        ns: &str,
        want: &BTreeMap<String, Vec<String>>,
        timeout: Duration,
        diagnostics: impl Fn() -> String,
    ) {
        let mut last = Ok(Vec::new());
        let converged = wait_until(timeout, || {
            last = self.unmet(ns, want);
            let done = matches!(&last, Ok(bad) if bad.is_empty());
            if !done {
                thread::sleep(Duration::from_millis(50));
            }
            done
        });
        if !converged {
            let summary = match &last {
                Ok(bad) => format!(
                    "{} of {} keys not (yet) right, e.g. {:?}",
                    bad.len(),
                    want.len(),
                    bad.iter()
                        .take(5)
                        .map(|(k, got)| (k, got, &want[k]))
                        .collect::<Vec<_>>()
                ),
                Err(e) => format!("redis unreadable: {e}"),
            };
            panic!(
                "redis did not converge within {timeout:?}: {summary}\n{}",
                diagnostics()
            );
        }
    }
}
