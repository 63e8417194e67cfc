//! The status server: a deliberately tiny HTTP/1.1 server (one request per connection, no
//! keep-alive, bounded request head, time and number of connections) on the address
//! `status.listen` names.
//!
//! Routes: `/healthz` (200 when the listener is up and a backend is healthy, else 503; never
//! behind auth, so probes need no password), `/status` (JSON), `/metrics` (Prometheus text),
//! `/events` (the event log as JSON, all kept events or with `?since=SEQ` those after SEQ),
//! `/` (an HTML page like haproxy's stats page). With `basic_auth` configured every route but
//! `/healthz` needs the user and password; the password is compared in constant time.
//! The same server also runs the `stats:` listener ([`stats`]): only the HTML page, at its
//! own path, always behind basic auth with its own realm.
//! What is shown is assembled in [`render`]; [`log`] is the agent's log output.

pub mod log;
pub mod render;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::events::EventLog;
use crate::lb::Lb;
use crate::vrrp::{TrackState, VrrpStatus};

/// Largest request head we read; anything longer is answered 431 and closed.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request head (slowloris guard).
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a connection is held in all: the head, then writing an answer of a few KiB.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections served at once. Each holds a descriptor for up to `CONNECTION_TIMEOUT`; without
/// a cap, a local user opening thousands of idle connections exhausted the agent's descriptors,
/// and the health checks that then failed took every backend down (issue #12). Further clients
/// wait in the kernel's accept queue, which costs the agent no descriptor, as haproxy's
/// `maxconn` does; scrapers and probes make one request at a time.
pub const MAX_CONNECTIONS: usize = 64;

/// What the pages show; cheap to clone into each request task.
#[derive(Clone)]
pub struct Context {
    pub lb: Lb,
    pub listen: SocketAddr,
    pub vrrp: Option<watch::Receiver<VrrpStatus>>,
    pub track: watch::Receiver<TrackState>,
    pub auth: Option<Arc<Auth>>,
    pub started: Instant,
    pub reloads: Arc<AtomicU64>,
    pub events: Arc<EventLog>,
}

/// Basic-auth credentials.
pub struct Auth {
    pub user: String,
    pub password: Vec<u8>,
}

impl Auth {
    /// Checks an `Authorization` header value. The comparison touches every byte of the
    /// expected credentials whatever the input, so timing does not reveal how much matched.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let mut expected = self.user.as_bytes().to_vec();
        expected.push(b':');
        expected.extend_from_slice(&self.password);
        constant_time_eq(&given, &expected)
    }
}

fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
}

/// Binds the status listener (before any other work starts, so a taken port fails the start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Which pages a listener serves.
#[derive(Clone)]
pub enum Site {
    /// `status.listen`: every route.
    Status,
    /// `stats.listen`: the HTML page at its `uri`, behind its credentials (swapped on reload).
    Stats(watch::Receiver<Arc<stats::Access>>),
}

/// Serves until `shutdown` turns true, at most [`MAX_CONNECTIONS`] connections at once.
pub async fn run(
    listener: TcpListener,
    ctx: Context,
    site: Site,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => return,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                let site = site.clone();
                tokio::spawn(async move {
                    let _ignored =
                        tokio::time::timeout(CONNECTION_TIMEOUT, serve(stream, &ctx, &site)).await;
                    drop(slot);
                });
            }
            // Out of descriptors: the LB's accept loop logs it; just don't spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A parsed request head: only what routing needs.
struct Request {
    method: String,
    path: String,
    /// What follows `?` in the target, if anything.
    query: Option<String>,
    authorization: Option<String>,
}

fn parse_head(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?;
    if !first.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    Some(Request {
        method,
        path,
        query,
        authorization,
    })
}

async fn read_head(stream: &mut TcpStream) -> Result<String, u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(0),
            Ok(Ok(n)) => n,
            Err(_) => return Err(408),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| 400);
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
    }
}

async fn serve(mut stream: TcpStream, ctx: &Context, site: &Site) {
    let response = match read_head(&mut stream).await {
        Ok(head) => match parse_head(&head) {
            Some(req) => {
                let mut r = match site {
                    Site::Status => route(&req, ctx),
                    Site::Stats(access) => {
                        let access = Arc::clone(&access.borrow());
                        stats::route(&req, ctx, &access)
                    }
                };
                r.head_only = req.method == "HEAD";
                r
            }
            None => Response::text(400, "bad request\n"),
        },
        Err(0) => return,
        Err(code) => Response::text(code, "bad request\n"),
    };
    let _ignored = stream.write_all(&response.into_bytes()).await;
    let _ignored = stream.shutdown().await;
}

fn route(req: &Request, ctx: &Context) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "only GET\n");
    }
    if req.path == "/healthz" {
        return match render::healthz(ctx) {
            Ok(()) => Response::text(200, "ok\n"),
            Err(why) => Response::text(503, &format!("{why}\n")),
        };
    }
    if let Some(auth) = &ctx.auth
        && !auth.allows(req.authorization.as_deref())
    {
        return Response::unauthorized("khagent");
    }
    if req.path == "/events" {
        return match since(req.query.as_deref()) {
            Ok(after) => Response::new(200, "application/json", render::events(ctx, after)),
            Err(()) => Response::text(400, "since: a sequence number (a non-negative integer)\n"),
        };
    }
    let snapshot = render::Snapshot::take(ctx);
    match req.path.as_str() {
        "/status" => Response::new(200, "application/json", snapshot.json()),
        "/metrics" => Response::new(200, "text/plain; version=0.0.4", snapshot.metrics()),
        "/" => Response::new(200, "text/html; charset=utf-8", snapshot.html()),
        _ => Response::text(
            404,
            "not found; try /, /status, /events, /metrics or /healthz\n",
        ),
    }
}

/// `since=SEQ` of an `/events` query (other parameters are ignored).
fn since(query: Option<&str>) -> Result<Option<u64>, ()> {
    let Some(q) = query else { return Ok(None) };
    match q.split('&').find_map(|kv| kv.strip_prefix("since=")) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ()),
    }
}

struct Response {
    code: u16,
    content_type: &'static str,
    extra: String,
    body: String,
    /// HEAD: headers (with the body's length) but no body.
    head_only: bool,
}

impl Response {
    fn new(code: u16, content_type: &'static str, body: String) -> Response {
        Response {
            code,
            content_type,
            extra: String::new(),
            body,
            head_only: false,
        }
    }

    fn text(code: u16, body: &str) -> Response {
        Response::new(code, "text/plain; charset=utf-8", body.to_owned())
    }

    /// 401 with the challenge browsers answer with a password prompt. `realm` has no `"`,
    /// `\` or control character (the config refuses them), so it cannot end the quoted string.
    fn unauthorized(realm: &str) -> Response {
        let mut r = Response::text(401, "authentication required\n");
        r.extra = format!("WWW-Authenticate: Basic realm=\"{realm}\", charset=\"UTF-8\"\r\n");
        r
    }

    fn into_bytes(self) -> Vec<u8> {
        let reason = match self.code {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{}\r\n",
            self.code,
            self.content_type,
            self.body.len(),
            self.extra
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn auth() -> Auth {
        Auth {
            user: "admin".into(),
            password: b"s3cret".to_vec(),
        }
    }

    #[test]
    fn basic_auth_accepts_only_the_exact_credentials() {
        // base64("admin:s3cret") = YWRtaW46czNjcmV0
        assert!(auth().allows(Some("Basic YWRtaW46czNjcmV0")));
        // base64("admin:s3cre") and ("admin:s3cretX")
        assert!(!auth().allows(Some("Basic YWRtaW46czNjcmU=")));
        assert!(!auth().allows(Some("Basic YWRtaW46czNjcmV0WA==")));
        assert!(!auth().allows(Some("Bearer YWRtaW46czNjcmV0")));
        assert!(!auth().allows(Some("Basic !!!")));
        assert!(!auth().allows(None));
    }

    #[test]
    fn parses_the_request_line_and_authorization() {
        let r =
            parse_head("GET /status?x=1 HTTP/1.1\r\nHost: a\r\nauthorization: Basic Zm9v").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/status"));
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.authorization.as_deref(), Some("Basic Zm9v"));
        assert!(parse_head("GARBAGE").is_none());
    }

    #[test]
    fn events_since_reads_a_sequence_number_and_refuses_anything_else() {
        assert_eq!(since(None), Ok(None));
        assert_eq!(since(Some("since=41")), Ok(Some(41)));
        assert_eq!(since(Some("pretty=1&since=7")), Ok(Some(7)));
        assert_eq!(since(Some("pretty=1")), Ok(None));
        assert_eq!(since(Some("since=-1")), Err(()));
        assert_eq!(since(Some("since=99999999999999999999999")), Err(()));
    }
}
