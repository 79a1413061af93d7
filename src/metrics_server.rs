//! A tiny blocking HTTP/1.1 server for `/metrics` (Prometheus text) and `/health`.
//!
//! It exists so a state node or an application embedding core nodes can be scraped without an
//! async runtime or a web framework: one thread owned by [`MetricsServer`], joined on drop,
//! serving one connection at a time. Every connection is bounded — a read and a write timeout,
//! a request-head size cap, `Connection: close` — so a slow or hostile client delays the next
//! scrape by at most the timeouts and can never hold memory or the thread for good.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Error, Result};

/// Largest request head (request line and headers) read; larger requests get 431.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Most bytes read and dropped after answering an oversized request.
const LINGER_BYTES: u64 = 64 * 1024;
/// How long one connection may take to send its request or take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// Whether a node can do its work, with a short reason for people and probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `true`: `/health` answers 200; `false`: 503.
    pub healthy: bool,
    /// One line saying why (the body of the `/health` answer).
    pub reason: String,
}

impl Health {
    /// Healthy, because of `reason`.
    pub fn ok(reason: impl Into<String>) -> Self {
        Health {
            healthy: true,
            reason: reason.into(),
        }
    }

    /// Not healthy, because of `reason`.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Health {
            healthy: false,
            reason: reason.into(),
        }
    }
}

/// What a [`MetricsServer`] serves: the metrics page and the health verdict, computed per request.
///
/// Any `Fn() -> String` is a source whose health is always "ok", which is what a core node needs:
///
/// ```no_run
/// use distcache::{DistributedCache, MetricsServer};
///
/// let users = DistributedCache::<String>::builder()
///     .kafka_brokers("127.0.0.1:9092")
///     .redis_url("redis://127.0.0.1:6379/")
///     .namespace("users")
///     .build()?;
/// let page = users.clone();
/// let _server = MetricsServer::serve("127.0.0.1:9464", move || {
///     page.metrics().to_prometheus("users")
/// })?;
/// # Ok::<(), distcache::Error>(())
/// ```
pub trait MetricsSource: Send + Sync + 'static {
    /// The page for `GET /metrics`, in the Prometheus text format (see [`Exposition`](crate::Exposition)).
    fn metrics(&self) -> String;

    /// The verdict for `GET /health`. Default: healthy.
    fn health(&self) -> Health {
        Health::ok("ok")
    }
}

impl<F> MetricsSource for F
where
    F: Fn() -> String + Send + Sync + 'static,
{
    fn metrics(&self) -> String {
        self()
    }
}

/// A running metrics endpoint: `GET /metrics` and `GET /health` on one address.
///
/// Other paths answer 404, other methods 405. Dropping it (or [`shutdown`](Self::shutdown))
/// stops the thread and closes the socket.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)) and serves
    /// `source` from a thread of its own. A bind failure is [`Error::Config`].
    pub fn serve(addr: impl ToSocketAddrs, source: impl MetricsSource) -> Result<MetricsServer> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::Config(format!("metrics address: cannot listen: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Config(format!("metrics address: {e}")))?;
        // Non-blocking accept, so the thread notices `stop` without a wake-up connection.
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Config(format!("metrics address: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("distcache-metrics".into())
            .spawn(move || accept_loop(listener, &source, &stopped))
            .map_err(|e| Error::Config(format!("cannot start the metrics thread: {e}")))?;
        log::info!(target: "distcache::metrics_server", "serving /metrics and /health on http://{addr}");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread (at most one request's timeouts). Idempotent.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, source: &dyn MetricsSource, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = handle(stream, source) {
                    log::debug!(target: "distcache::metrics_server", "connection: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                log::warn!(target: "distcache::metrics_server", "accept failed: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// An answer: status line, content type, body.
struct Answer {
    status: &'static str,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Answer {
    fn text(status: &'static str, body: impl Into<String>) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
        }
    }
}

fn handle(mut stream: TcpStream, source: &dyn MetricsSource) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (answer, head_only) = match &head {
        Some(head) => respond(head, source),
        None => (
            Answer::text("431 Request Header Fields Too Large", "request too large\n"),
            false,
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    );
    if answer.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&answer.body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()?;
    if head.is_none() {
        // Closing with unread bytes would reset the connection and could destroy the answer
        // before the client reads it: say we are done, then read (boundedly) what is left.
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut rest = (&mut stream).take(LINGER_BYTES);
        let _ = std::io::copy(&mut rest, &mut std::io::sink());
    }
    Ok(())
}

/// The request head up to the blank line; `None` when it is larger than [`MAX_REQUEST_BYTES`].
/// A client that sends less and stalls ends in the read timeout (an error: no answer).
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = find_blank_line(&head) {
            head.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            // The client closed early: answer what it sent so far (a bare request line is fine).
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| {
        // Tolerate bare LF line ends (hand-typed requests).
        bytes.windows(2).position(|w| w == b"\n\n")
    })
}

/// The answer to a request head, and whether only the head is wanted (HEAD).
fn respond(head: &str, source: &dyn MetricsSource) -> (Answer, bool) {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !matches!(path, "/metrics" | "/health") {
        return (
            Answer::text("404 Not Found", "not found: try /metrics or /health\n"),
            false,
        );
    }
    if !matches!(method, "GET" | "HEAD") {
        let mut answer = Answer::text("405 Method Not Allowed", "method not allowed\n");
        answer.allow = true;
        return (answer, false);
    }
    // A source that panics must not take the endpoint down with it.
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if path == "/metrics" {
            Answer {
                status: "200 OK",
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: source.metrics(),
                allow: false,
            }
        } else {
            let health = source.health();
            let status = if health.healthy {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            Answer::text(status, format!("{}\n", health.reason))
        }
    }))
    .unwrap_or_else(|_| Answer::text("500 Internal Server Error", "the metrics source panicked\n"));
    (answer, method == "HEAD")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    /// Sends `request` raw and returns the status code and body.
    fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out.split(' ').nth(1).unwrap().parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
    }

    struct Flaky {
        healthy: AtomicBool,
        scrapes: AtomicU64,
    }

    impl MetricsSource for Arc<Flaky> {
        fn metrics(&self) -> String {
            let n = self.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
            format!("# HELP distcache_x_total x\n# TYPE distcache_x_total counter\ndistcache_x_total {n}\n")
        }
        fn health(&self) -> Health {
            if self.healthy.load(Ordering::Relaxed) {
                Health::ok("ok: fine")
            } else {
                Health::unavailable("redis does not answer")
            }
        }
    }

    #[test]
    fn serves_metrics_and_health_and_refuses_the_rest() {
        let source = Arc::new(Flaky {
            healthy: AtomicBool::new(true),
            scrapes: AtomicU64::new(0),
        });
        let server = MetricsServer::serve("127.0.0.1:0", source.clone()).unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/metrics"), (200, "# HELP distcache_x_total x\n# TYPE distcache_x_total counter\ndistcache_x_total 1\n".into()));
        assert!(get(addr, "/metrics?x=1")
            .1
            .ends_with("distcache_x_total 2\n"));
        assert_eq!(get(addr, "/health"), (200, "ok: fine\n".into()));
        source.healthy.store(false, Ordering::Relaxed);
        assert_eq!(
            get(addr, "/health"),
            (503, "redis does not answer\n".into())
        );
        assert_eq!(get(addr, "/").0, 404);
        assert_eq!(get(addr, "/metricsx").0, 404);
        assert_eq!(exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(
            exchange(addr, b"HEAD /health HTTP/1.1\r\n\r\n"),
            (503, String::new())
        );
        assert_eq!(exchange(addr, b"garbage\r\n\r\n").0, 404);
    }

    #[test]
    fn an_oversized_request_gets_431_and_a_silent_client_only_delays_the_next() {
        let server = MetricsServer::serve("127.0.0.1:0", || "m\n".to_string()).unwrap();
        let addr = server.local_addr();
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST_BYTES * 4));
        // The server stops reading at the cap; the rest may be refused by a reset, so write
        // what it takes and read the answer.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&big);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");

        // A client that connects and says nothing holds the one thread for the read timeout at
        // most; the next scrape is answered after it.
        let _silent = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        assert_eq!(get(addr, "/metrics"), (200, "m\n".into()));
        assert!(started.elapsed() < IO_TIMEOUT + Duration::from_secs(3));
    }

    #[test]
    fn a_panicking_source_answers_500_and_drop_stops_the_server() {
        let server = MetricsServer::serve("127.0.0.1:0", || -> String { panic!("boom") }).unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/metrics").0, 500);
        assert_eq!(get(addr, "/health").0, 200);
        drop(server);
        assert!(
            TcpStream::connect(addr).is_err(),
            "still listening after drop"
        );
    }
}
