//! A throwaway `redis-server` for one test: loopback only, nothing persisted (`--save '' --appendonly no`), so
//! a `restart` comes back empty — the "Redis lost everything" case the design must survive. `start_with_aof`
//! persists every write to an append-only file instead (`appendfsync always`), so a `restart` keeps the data.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Deref;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::server::ServerProcess;

const IO_TIMEOUT: Duration = Duration::from_millis(500);

/// A `redis-server` process. Its process handling (`port`, `pid`, `is_running`, `kill`, `pause`, `resume`,
/// `restart`, `log_tail`, `dir`) is [`ServerProcess`]'s, through `Deref`: a `kill` loses the data and a
/// `restart` comes back empty unless it was started with [`start_with_aof`](Self::start_with_aof).
pub struct RedisServer {
    server: ServerProcess,
}

impl Deref for RedisServer {
    type Target = ServerProcess;

    fn deref(&self) -> &ServerProcess {
        &self.server
    }
}

impl RedisServer {
    /// Starts `redis-server` from PATH on a free loopback port and waits until it answers. Panics if the
    /// program is missing or does not come up (with its log).
    pub fn start() -> RedisServer {
        RedisServer::start_persisting(false)
    }

    /// `start` with the append-only file on and synced on every write: data survives a SIGKILL and
    /// `restart`; `wipe` removes it.
    pub fn start_with_aof() -> RedisServer {
        RedisServer::start_persisting(true)
    }

    fn start_persisting(aof: bool) -> RedisServer {
        let appendonly = if aof { "yes" } else { "no" };
        let server = ServerProcess::start(
            "redis-server",
            "redis-server not found: run scripts/services.sh install".to_string(),
            Box::new(|port: u16, dir: &Path| {
                let mut cmd = Command::new("redis-server");
                cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args([
                        "--save",
                        "",
                        "--appendonly",
                        appendonly,
                        "--daemonize",
                        "no",
                    ])
                    .args(["--appendfsync", "always"])
                    .arg("--dir")
                    .arg(dir);
                cmd
            }),
            Box::new(|port, pid| redis_server_pid(port) == Some(pid)),
        );
        RedisServer { server }
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port())
    }

    /// Kills it and starts it again on the same port with every persisted file removed: Redis lost its data
    /// (with or without an append-only file).
    pub fn wipe(&self) {
        self.server.kill();
        for file in ["appendonlydir", "appendonly.aof", "dump.rdb"] {
            let path = self.dir().join(file);
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_file(&path);
        }
        self.server.restart()
    }
}

/// Sends a raw `PING` to 127.0.0.1:`port`; true when the answer is `+PONG`.
pub fn redis_ping(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = connect(port)?;
        stream.write_all(b"PING\r\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end() == "+PONG")
    };
    attempt().unwrap_or(false)
}

/// The `process_id` that the Redis on `port` reports in `INFO server`: proves the answer comes from our
/// process, not from someone else's listener on a port that was taken meanwhile.
fn redis_server_pid(port: u16) -> Option<u32> {
    let attempt = || -> std::io::Result<Option<u32>> {
        let mut stream = connect(port)?;
        stream.write_all(b"INFO server\r\n")?;
        let mut reader = BufReader::new(stream);
        let mut header = String::new();
        reader.read_line(&mut header)?;
        // A bulk string `$<len>\r\n<body>\r\n`; `-LOADING …` and other errors mean "not yet".
        let Some(len) = header.trim_end().strip_prefix('$') else {
            return Ok(None);
        };
        let len: usize = len.parse().unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let pid = String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix("process_id:")?.trim().parse().ok());
        Ok(pid)
    };
    attempt().ok().flatten()
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}
