//! A client of the API through the VIP, as users feel it, for the failover drill: a fresh
//! connection calling `GET /readyz` every few milliseconds (TLS verified against the cluster
//! CA from the state directory), plus one long-lived keep-alive connection like a watch,
//! re-opened whenever it breaks. It records what happened; `phases::failover::measure` makes
//! figures of it.
//!
//! Times are wall-clock microseconds (derived from one reading of the wall clock and the
//! monotonic clock after it, so a clock step during a drill does not bend them), which is what
//! the agents' event logs carry as `unix_us`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

/// Where to probe and how often.
#[derive(Debug, Clone)]
pub struct ProberSettings {
    pub address: SocketAddr,
    /// The name (or address) the API server's certificate must hold.
    pub server_name: String,
    /// How often a fresh probe starts (the 10–20 ms).
    pub interval: Duration,
    /// A probe not answered within this counts as failed.
    pub timeout: Duration,
    /// How often the long-lived connection asks.
    pub long_lived_every: Duration,
}

/// One fresh-connection probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub start_us: u64,
    pub end_us: u64,
    pub ok: bool,
    /// Why it failed (`connection refused`, `timeout`, `HTTP 500`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What happened to the long-lived connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum LongLived {
    /// A new connection answered its first request.
    Working { at_us: u64 },
    /// The connection broke (closed, reset, no answer in time).
    Broken { at_us: u64, why: String },
}

/// Everything recorded since the last [`Prober::take`].
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub probes: Vec<Probe>,
    pub long_lived: Vec<LongLived>,
}

/// Wall-clock microseconds, steady for the prober's lifetime.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_unix: Duration,
    base: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            base: Instant::now(),
        }
    }

    pub fn now_us(&self) -> u64 {
        u64::try_from((self.base_unix + self.base.elapsed()).as_micros()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

struct Shared {
    recording: Mutex<Recording>,
    clock: Clock,
    connector: TlsConnector,
    name: ServerName<'static>,
    settings: ProberSettings,
}

impl Shared {
    fn push_probe(&self, p: Probe) {
        self.recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .probes
            .push(p);
    }

    fn push_long_lived(&self, e: LongLived) {
        self.recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .long_lived
            .push(e);
    }
}

/// The running prober: its tasks run on the caller's runtime until [`Prober::stop`].
pub struct Prober {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Prober {
    /// Starts probing `settings.address`, trusting only the CA certificates in `ca_pem`.
    pub fn start(settings: ProberSettings, ca_pem: &[u8], clock: Clock) -> anyhow::Result<Prober> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.context("the cluster CA is not valid PEM")?)
                .context("the cluster CA is not a usable certificate")?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "the cluster CA file holds no certificate"
        );
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(settings.server_name.clone())
            .with_context(|| format!("{} is not a DNS name or IP", settings.server_name))?;
        let shared = Arc::new(Shared {
            recording: Mutex::new(Recording::default()),
            clock,
            connector: TlsConnector::from(Arc::new(config)),
            name,
            settings,
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(fresh_probes(Arc::clone(&shared), stopped.clone())),
            tokio::spawn(long_lived(Arc::clone(&shared), stopped)),
        ];
        Ok(Prober {
            shared,
            stop,
            tasks,
        })
    }

    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    /// What was recorded since the last call, probes in start order.
    pub fn take(&self) -> Recording {
        let mut r = std::mem::take(
            &mut *self
                .shared
                .recording
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        r.probes.sort_by_key(|p| p.start_us);
        r
    }

    /// Stops every probe (those in flight are abandoned).
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            t.abort();
            // Aborted tasks end with a cancellation, which is what was asked.
            let _cancelled = t.await;
        }
    }
}

/// A fresh probe every `interval`, each on its own task so a hanging one (a SYN to a node
/// that went away) does not delay the next.
async fn fresh_probes(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            let start_us = s.clock.now_us();
            let result = tokio::time::timeout(s.settings.timeout, probe_once(&s)).await;
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("no answer within {:?}", s.settings.timeout)),
            };
            s.push_probe(Probe {
                start_us,
                end_us: s.clock.now_us(),
                ok: error.is_none(),
                error,
            });
        });
    }
}

async fn connect(s: &Shared) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(s.settings.address)
        .await
        .map_err(|e| e.to_string())?;
    // Without it, a request written in two segments waits for a delayed ACK.
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    s.connector
        .connect(s.name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

fn request(s: &Shared, keep_alive: bool) -> Vec<u8> {
    format!(
        "GET /readyz HTTP/1.1\r\nHost: {}\r\nUser-Agent: khactl-failover-test\r\nConnection: {}\r\n\r\n",
        s.settings.server_name,
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes()
}

async fn probe_once(s: &Shared) -> Result<(), String> {
    let mut tls = connect(s).await?;
    tls.write_all(&request(s, false))
        .await
        .map_err(|e| e.to_string())?;
    let code = read_response(&mut tls).await?;
    if code == 200 {
        Ok(())
    } else {
        Err(format!("HTTP {code}"))
    }
}

/// Reads one response (head and `Content-Length` body) and returns its status code.
async fn read_response<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<u16, String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err("response head too long".into());
        }
        let n = r.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before an answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (code, length) = parse_head(&buf[..head_end])?;
    let mut body = buf.len() - head_end;
    while body < length {
        let n = r.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed in the body".into());
        }
        body += n;
    }
    Ok(code)
}

/// The status code and `Content-Length` (0 if absent) of a response head.
pub fn parse_head(head: &[u8]) -> Result<(u16, usize), String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut words = status.split(' ');
    let code = match (words.next(), words.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| format!("not an HTTP status line: {status:?}"))?,
        _ => return Err(format!("not an HTTP status line: {status:?}")),
    };
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| "bad Content-Length".to_owned())?
        .unwrap_or(0);
    Ok((code, length))
}

/// One keep-alive connection asking every `long_lived_every`; when it breaks, a new one is
/// opened (and retried every 50 ms) until it answers.
async fn long_lived(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let s = &*shared;
    let timeout = s.settings.timeout;
    loop {
        let mut conn = loop {
            let attempt = tokio::time::timeout(timeout, async {
                let mut c = connect(s).await?;
                c.write_all(&request(s, true))
                    .await
                    .map_err(|e| e.to_string())?;
                read_response(&mut c).await.map(|_| c)
            });
            tokio::select! {
                r = attempt => if let Ok(Ok(c)) = r { break c },
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        s.push_long_lived(LongLived::Working {
            at_us: s.clock.now_us(),
        });
        let why = loop {
            tokio::select! {
                () = tokio::time::sleep(s.settings.long_lived_every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let asked = tokio::time::timeout(timeout, async {
                conn.write_all(&request(s, true))
                    .await
                    .map_err(|e| e.to_string())?;
                read_response(&mut conn).await
            })
            .await;
            match asked {
                // Any answer, 200 or not, means the connection itself works.
                Ok(Ok(_code)) => {}
                Ok(Err(e)) => break e,
                Err(_) => break format!("no answer within {timeout:?}"),
            }
        };
        s.push_long_lived(LongLived::Broken {
            at_us: s.clock.now_us(),
            why,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_and_length_of_a_response_head() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 2\r\n\r\n";
        assert_eq!(parse_head(head), Ok((200, 2)));
        assert_eq!(parse_head(b"HTTP/1.0 500 Internal\r\n\r\n"), Ok((500, 0)));
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn a_response_split_over_reads_is_read_to_the_end_of_its_body() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            for part in [
                &b"HTTP/1.1 200 OK\r\nConte"[..],
                b"nt-Length: 5\r\n\r\nok",
                b"!!!",
            ] {
                server.write_all(part).await.unwrap();
            }
        });
        assert_eq!(read_response(&mut client).await, Ok(200));
    }

    #[tokio::test]
    async fn a_connection_closed_early_is_an_error() {
        let (mut client, mut server) = tokio::io::duplex(64);
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        drop(server);
        assert!(read_response(&mut client).await.is_err());
    }

    #[test]
    fn the_clock_moves_forward_from_the_wall_clock() {
        let c = Clock::new();
        let a = c.now_us();
        let b = c.now_us();
        assert!(b >= a && a > 1_600_000_000_000_000);
    }
}
