//! Reading cache entries straight from Redis, by the README's layout: one entry's field, its JSON
//! value (default key prefix), a [`RedisProbe`] that knows a deployment's key prefix, reads many
//! keys (values, or whole entries as [`Stored`]) and waits until Redis holds what a test expects,
//! and [`cluster_entries`] for many entries of a Redis Cluster.

use std::collections::{BTreeMap, HashMap};
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

/// What Redis holds for one key: the decoded value (`None` in a tombstone) and the version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub value: Option<String>,
    pub version: Option<Version>,
}

/// Reads cache entries under one key prefix straight from Redis, reconnecting after errors (Redis
/// may be restarting).
pub struct RedisProbe {
    client: redis::Client,
    prefix: String,
    conn: Option<redis::Connection>,
}

impl RedisProbe {
    /// A probe of the entries under the default key prefix.
    pub fn new(url: &str) -> RedisProbe {
        RedisProbe::with_prefix(url, DEFAULT_KEY_PREFIX)
    }

    /// A probe of the entries under `prefix`.
    pub fn with_prefix(url: &str, prefix: &str) -> RedisProbe {
        RedisProbe {
            client: redis::Client::open(url).expect("redis url"),
            prefix: prefix.to_string(),
            conn: None,
        }
    }

    /// The Redis key of `key` in namespace `ns` under the probe's prefix.
    pub fn key(&self, ns: &str, key: &str) -> String {
        distcache::redis_entry_key(&self.prefix, ns, key)
    }

    /// Runs `f` on the probe's connection (connecting first when there is none); an error drops
    /// the connection, so the next call connects again.
    pub fn query<R>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R, String> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(Duration::from_secs(2))
                .map_err(|e| format!("connect: {e}"))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected");
        f(conn).map_err(|e| {
            self.conn = None;
            e.to_string()
        })
    }

    /// The decoded value (`v`, JSON) of each key of namespace `ns`; `None` when absent or a tombstone.
    pub fn values(&mut self, ns: &str, keys: &[&str]) -> Result<Vec<Option<String>>, String> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGET").arg(self.key(ns, key)).arg("v");
        }
        let raw: Vec<Option<Vec<u8>>> = self
            .query(|conn| pipe.query(conn))
            .map_err(|e| format!("HGET: {e}"))?;
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

    /// Every field of the entry hash of each key of namespace `ns`, in one round trip (empty for
    /// a key with no entry).
    pub fn hashes(
        &mut self,
        ns: &str,
        keys: &[String],
    ) -> Result<Vec<HashMap<String, Vec<u8>>>, String> {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HGETALL").arg(self.key(ns, k));
        }
        self.query(|c| pipe.query(c))
            .map_err(|e| format!("HGETALL: {e}"))
    }

    /// What Redis holds for each key of namespace `ns`, in one round trip; `None` for a key with
    /// no entry for readers. Panics on an entry that breaks the layout (a value that is not a JSON
    /// string, a version that is not 32 hex digits, a field the layout does not have).
    pub fn stored(&mut self, ns: &str, keys: &[String]) -> Result<Vec<Option<Stored>>, String> {
        let full: Vec<String> = keys.iter().map(|k| self.key(ns, k)).collect();
        let maps = self.hashes(ns, keys)?;
        Ok(maps
            .into_iter()
            .zip(&full)
            .map(|(map, k)| {
                // A hash holding only a plain write's version (`pver`) has no entry for readers.
                if !map.contains_key("v") && !map.contains_key("ver") {
                    return None;
                }
                let value = map.get("v").map(|b| {
                    serde_json::from_slice::<String>(b).unwrap_or_else(|e| {
                        panic!(
                            "redis {k}: v = {:?} is not a JSON string: {e}",
                            String::from_utf8_lossy(b)
                        )
                    })
                });
                let version = map.get("ver").map(|b| {
                    let hex = String::from_utf8_lossy(b);
                    Version::from_hex(&hex)
                        .unwrap_or_else(|| panic!("redis {k}: ver = {hex:?} is not 32 hex digits"))
                });
                let extra: Vec<&String> = map
                    .keys()
                    .filter(|f| !["v", "ver", "pver"].contains(&f.as_str()))
                    .collect();
                assert!(
                    extra.is_empty(),
                    "redis {k} has unexpected fields {extra:?}"
                );
                Some(Stored { value, version })
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
