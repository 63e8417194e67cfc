//! The khagent binary as a load balancer, end to end on loopback (127.0.0.0/8 only): real
//! backends, real client sockets, the real binary, its status server and signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds or the deadline passes.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `N` distinct free ports: every probe socket stays open until all are chosen.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Fails unless `took` lies in `range` (at least its start, less than its end).
fn assert_took(took: Duration, range: std::ops::Range<Duration>, what: &str) {
    assert!(
        range.contains(&took),
        "{what} took {took:?}, expected {:?} to {:?}",
        range.start,
        range.end
    );
}

fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory under the system temp dir, removed when dropped (also when a test fails).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "khagent-lb-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A TCP backend that waits for the client's first line (clients speak first, as TLS clients of
/// an API server do), answers it with `NAME\n`, then echoes until EOF and half-closes back. `stop()` closes its listener (health checks fail) while established
/// connections keep echoing, so only the agent can close them.
struct Backend {
    name: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
}

impl Backend {
    fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let (stop2, open2, greeting) = (stop.clone(), open.clone(), format!("{name}\n"));
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let (open, greeting) = (open2.clone(), greeting.clone());
                        open.fetch_add(1, Ordering::SeqCst);
                        thread::spawn(move || {
                            let mut hello = [0u8; 1];
                            while matches!(s.read(&mut hello), Ok(1)) && hello[0] != b'\n' {}
                            let _ = s.write_all(greeting.as_bytes());
                            let mut buf = [0u8; 16384];
                            loop {
                                match s.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                            let _ = s.shutdown(Shutdown::Write);
                            open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    // The accept loop of a test helper, not a test synchronisation.
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Backend {
            name: name.into(),
            addr,
            stop,
            open,
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // The listener closes once the accept loop sees the flag.
        wait_for("backend listener closed", || {
            TcpStream::connect(self.addr).is_err()
        });
    }

    fn yaml(&self) -> String {
        format!("  - {{name: {}, address: {}}}\n", self.name, self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The real khagent binary with a config written to a temp dir.
struct Agent {
    child: Child,
    dir: TempDir,
    listen: SocketAddr,
    status: SocketAddr,
}

impl Agent {
    /// `body` is the config without `listen` and `status`, which the harness fills in.
    fn start(body: &str) -> Agent {
        Agent::start_with_status(body, "")
    }

    fn start_with_status(body: &str, status_extra: &str) -> Agent {
        Agent::start_limited(body, status_extra, None)
    }

    /// `max_fds`: run under that RLIMIT_NOFILE (via prlimit).
    fn start_limited(body: &str, status_extra: &str, max_fds: Option<u32>) -> Agent {
        let dir = temp_dir("agent");
        // Both ports are taken while both probe sockets are open: two free_port() calls in
        // a row can return the same port once the first socket is closed.
        let [listen_port, status_port] = free_ports();
        let listen: SocketAddr = format!("127.0.0.1:{listen_port}").parse().unwrap();
        let status: SocketAddr = format!("127.0.0.1:{status_port}").parse().unwrap();
        let config = format!("listen: {listen}\nstatus:\n  listen: {status}\n{status_extra}{body}");
        std::fs::write(dir.join("agent.yaml"), config).unwrap();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let mut command = match max_fds {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_khagent"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_khagent")),
        };
        let child = command
            .arg("--config")
            .arg(dir.join("agent.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut agent = Agent {
            child,
            dir,
            listen,
            status,
        };
        wait_for("agent status server up", || {
            assert!(
                agent.child.try_wait().unwrap().is_none(),
                "agent exited: {}",
                agent.log()
            );
            TcpStream::connect(agent.status).is_ok()
        });
        agent
    }

    /// Waits for the agent to exit on its own.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut exit = None;
        wait_for("agent exits", || {
            exit = self.child.try_wait().unwrap();
            exit.is_some()
        });
        exit.unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn rewrite(&self, body: &str) {
        let config = format!(
            "listen: {}\nstatus:\n  listen: {}\n{body}",
            self.listen, self.status
        );
        let tmp = self.dir.join("agent.yaml.new");
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(tmp, self.dir.join("agent.yaml")).unwrap();
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn get(&self, path: &str, auth: Option<&str>) -> (u16, String, String) {
        http_get(self.status, path, auth)
    }

    fn status_json(&self) -> Value {
        let (code, _, body) = self.get("/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn backend(&self, name: &str) -> Value {
        let status = self.status_json();
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn wait_backend_health(&self, name: &str, healthy: bool) {
        wait_for(&format!("backend {name} healthy={healthy}"), || {
            self.backend(name)["healthy"] == healthy
        });
    }

    /// Waits until the backend's last check error mentions `needle`. (On a loaded machine a
    /// probe may also time out; the error that proves the point comes with a later check.)
    fn wait_check_error(&self, name: &str, needle: &str) {
        let end = Instant::now() + DEADLINE;
        loop {
            let last = self.backend(name)["last_error"].clone();
            if last.as_str().is_some_and(|e| e.contains(needle)) {
                return;
            }
            assert!(
                Instant::now() < end,
                "last_error never contained {needle:?}: {last}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A raw client of the load balancer that has said its first line (reads time out after
    /// `DEADLINE`).
    fn hello(&self) -> TcpStream {
        let mut stream = TcpStream::connect(self.listen).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(HELLO).unwrap();
        stream
    }

    /// A client connection through the load balancer and the backend name it reached.
    fn connect(&self) -> (Conn, String) {
        let stream = self.hello();
        let mut conn = Conn {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        };
        let mut line = String::new();
        conn.reader.read_line(&mut line).unwrap();
        assert!(
            line.ends_with('\n'),
            "no greeting through the proxy: {line:?}"
        );
        (conn, line.trim().to_owned())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every client sends first; backends answer it with their name.
const HELLO: &[u8] = b"hello\n";

struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Sends `msg` and reads it back: the connection is alive end to end.
    fn echo(&mut self, msg: &str) -> bool {
        if self
            .stream
            .write_all(format!("{msg}\n").as_bytes())
            .is_err()
        {
            return false;
        }
        let mut line = String::new();
        matches!(self.reader.read_line(&mut line), Ok(n) if n > 0) && line.trim() == msg
    }

    /// Whether the proxy closed the connection (EOF or reset) within the deadline. Data, or
    /// nothing at all until the read deadline, is not a close.
    fn closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 64];
        is_close(self.reader.read(&mut buf))
    }
}

/// Whether a read saw the peer close the connection: EOF, or a reset. A read timeout
/// (`WouldBlock`/`TimedOut` once the read deadline passed) means the connection is still open.
fn is_close(read: io::Result<usize>) -> bool {
    match read {
        Ok(n) => n == 0,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
    }
}

fn http_get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String, String) {
    try_http_get(addr, path, auth, DEADLINE).unwrap()
}

/// One GET; an error when the server does not answer (completely) within `timeout`.
fn try_http_get(
    addr: SocketAddr,
    path: &str,
    auth: Option<&str>,
    timeout: Duration,
) -> io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let auth = auth
        .map(|a| format!("Authorization: Basic {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: khagent\r\n{auth}\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, head.to_owned(), body.to_owned()))
}

fn backends_yaml(backends: &[&Backend]) -> String {
    let mut y = "backends:\n".to_owned();
    for b in backends {
        y.push_str(&b.yaml());
    }
    y
}

fn counts(names: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n).or_default() += 1;
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Balancing
// ---------------------------------------------------------------------------------------------

#[test]
fn round_robin_spreads_connections_evenly_across_backends() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let agent = Agent::start(&backends_yaml(&[&a, &b, &c]));
    let reached = counts((0..9).map(|_| agent.connect().1));
    assert_eq!(
        reached,
        HashMap::from([("a".into(), 3), ("b".into(), 3), ("c".into(), 3)])
    );
}

#[test]
fn least_connections_sends_new_connections_to_the_idlest_backend() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let agent = Agent::start(&format!(
        "{}balance: least-connections\n",
        backends_yaml(&[&a, &b])
    ));
    let (_first, busy) = agent.connect();
    let (second, idle) = agent.connect();
    assert_ne!(
        busy, idle,
        "second connection must go to the backend with none"
    );
    drop(second);
    wait_for("second connection closed", || {
        agent.backend(&idle)["active_connections"] == 0
    });
    // `busy` still holds one connection and `idle` none: the next one goes to `idle`.
    let (_c3, third) = agent.connect();
    assert_eq!(third, idle);
}

#[test]
fn unhealthy_backend_gets_no_connections() {
    let (up, down) = (Backend::start("up"), Backend::start("down"));
    let agent = Agent::start(&format!(
        "{}health: {{interval: 50ms, timeout: 50ms, rise: 2, fall: 2}}\n",
        backends_yaml(&[&up, &down])
    ));
    down.stop();
    agent.wait_backend_health("down", false);
    let tries_before = agent.backend("down")["connect_failures_total"].clone();
    let reached = counts((0..6).map(|_| agent.connect().1));
    assert_eq!(reached, HashMap::from([("up".into(), 6)]));
    // Not even tried: a marked-down backend is skipped, not connected to and retried.
    assert_eq!(
        agent.backend("down")["connect_failures_total"],
        tries_before
    );
}

#[test]
fn connect_failure_retries_the_next_backend_and_counts_as_a_failed_check() {
    let live = Backend::start("live");
    let dead_port = free_port();
    // Health checks every hour: the first runs at start and fails once, and fall 2 keeps the
    // dead backend up, so only a client's failed connect can take it out.
    let agent = Agent::start(&format!(
        "{}  - {{name: dead, address: 127.0.0.1:{dead_port}}}\nhealth: {{interval: 1h, timeout: 1s}}\n",
        backends_yaml(&[&live])
    ));
    assert_eq!(agent.backend("dead")["healthy"], true);
    // Every client reaches the live one: the one that picked `dead` first was retried.
    let reached = counts((0..2).map(|_| agent.connect().1));
    assert_eq!(reached, HashMap::from([("live".into(), 2)]));
    // That refused connect counted as its second failure (fall 2), an hour before its next
    // check was due.
    wait_for("dead marked down by the failed connect", || {
        agent.backend("dead")["healthy"] == false
    });
    let failures = |a: &Agent| {
        a.backend("dead")["connect_failures_total"]
            .as_u64()
            .unwrap()
    };
    let after_mark = failures(&agent);
    assert!(after_mark >= 1, "{}", agent.backend("dead"));
    let reached = counts((0..6).map(|_| agent.connect().1));
    assert_eq!(reached, HashMap::from([("live".into(), 6)]));
    assert_eq!(
        failures(&agent),
        after_mark,
        "a backend marked down is not tried"
    );
    let (code, _, body) = agent.get("/events", None);
    assert_eq!(code, 200);
    let page: Value = serde_json::from_str(&body).unwrap();
    let down = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["backend"] == "dead" && e["to"] == "down")
        .unwrap_or_else(|| panic!("no down event for dead: {page}"))
        .clone();
    let reason = down["reason"].as_str().unwrap();
    assert!(
        reason
            .starts_with("2 consecutive failures, the last a client's: a client's connect failed"),
        "{reason}"
    );
}

#[test]
fn connect_timeout_moves_on_to_the_next_backend_and_counts_while_a_check_hangs() {
    let live = Backend::start("live");
    // A backend whose accept queue is full: the kernel drops further SYNs, so connects hang
    // until the agent's connect timeout (a black hole, on loopback).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = socket.listen(1).unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let mut fillers = Vec::new();
    while let Ok(s) = TcpStream::connect_timeout(&stuck_addr, Duration::from_millis(200)) {
        fillers.push(s);
        assert!(fillers.len() < 100, "accept queue never filled");
    }
    let agent = Agent::start(&format!(
        "{}  - {{name: stuck, address: {stuck_addr}}}\ntimeouts: {{connect: 300ms}}\nhealth: {{interval: 1h, timeout: 1h, fall: 1}}\n",
        backends_yaml(&[&live])
    ));
    // Round-robin starts each pick one further: of two connections one tries `stuck` first
    // and waits out the connect timeout (300 ms) before moving on, well inside the default's
    // (1 s) reach.
    let mut slowest = Duration::ZERO;
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(agent.connect().1, "live");
        slowest = slowest.max(started.elapsed());
    }
    assert_took(
        slowest,
        ms(250)..ms(1500),
        "the slower connection, waiting out the 300 ms connect timeout on `stuck`",
    );
    let stuck_status = agent.backend("stuck");
    assert!(
        stuck_status["connect_failures_total"].as_u64().unwrap() >= 1,
        "{stuck_status}"
    );
    assert_eq!(stuck_status["connections_total"], 0);
    // The timed-out connect counted as a failed check (fall 1: enough) while its first health
    // check still hangs (an hour's timeout): no later client waits on it again.
    wait_for("stuck marked down during its hanging check", || {
        agent.backend("stuck")["healthy"] == false
    });
}

// ---------------------------------------------------------------------------------------------
// Connection lifecycle
// ---------------------------------------------------------------------------------------------

#[test]
fn connections_to_a_backend_are_closed_when_it_is_marked_down() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let agent = Agent::start(&format!(
        "{}health: {{interval: 50ms, timeout: 50ms}}\n",
        backends_yaml(&[&a, &b])
    ));
    let (mut to_a, name) = agent.connect();
    let (mut to_b, other) = agent.connect();
    assert_eq!((name.as_str(), other.as_str()), ("a", "b"));
    assert!(to_a.echo("before"));
    a.stop();
    // The backend's side of the connection is still open and echoing; only the agent closes it.
    assert!(
        to_a.closed_by_peer(),
        "connection to the dead backend must be closed"
    );
    wait_for("backend side closed too", || {
        a.open.load(Ordering::SeqCst) == 0
    });
    assert_eq!(agent.backend("a")["closed_on_down_total"], 1);
    assert!(
        to_b.echo("still here"),
        "connections to healthy backends are untouched"
    );
}

#[test]
fn half_close_forwards_all_data_then_the_fin() {
    let a = Backend::start("a");
    let agent = Agent::start(&backends_yaml(&[&a]));
    let (mut conn, _) = agent.connect();
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut s = conn.stream.try_clone().unwrap();
        let payload = payload.clone();
        thread::spawn(move || {
            s.write_all(&payload).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    conn.reader.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "bytes changed on the way");
    wait_for("connection counted as done", || {
        agent.status_json()["listener"]["closed_done_total"] == 1
    });
}

#[test]
fn a_server_that_answers_and_closes_first_still_receives_what_the_client_sends_after() {
    // A backend that answers the client's first line, half-closes at once (its FIN follows
    // the answer, as an HTTP server with `Connection: close` does), then reads to the end.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        // The agent's start-up health check connects and closes without a word: skip it.
        let mut s = loop {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut hello = [0u8; HELLO.len()];
            if s.read_exact(&mut hello).is_ok() {
                break s;
            }
        };
        s.write_all(b"answer\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        rest
    });
    let agent = Agent::start(&format!(
        "backends:\n  - {{name: a, address: {addr}}}\nhealth: {{interval: 1h}}\n"
    ));
    let mut c = agent.hello();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"answer\n", "the answer, then the server's FIN");
    // The client's direction is still open: what it sends now reaches the server, then its FIN.
    c.write_all(b"after the server's FIN\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap(), b"after the server's FIN\n");
    wait_for("connection counted as done", || {
        agent.status_json()["listener"]["closed_done_total"] == 1
    });
}

#[test]
fn a_client_that_sends_nothing_is_still_accepted() {
    // The listener hands connections over once their first bytes arrive (clients of an API
    // server speak first); a silent one must still be taken after the kernel's timeout.
    let a = Backend::start("a");
    let agent = Agent::start(&backends_yaml(&[&a]));
    let _silent = TcpStream::connect(agent.listen).unwrap();
    wait_for("silent client accepted", || {
        agent.status_json()["listener"]["active_connections"] == 1
    });
}

#[test]
fn sighup_with_changed_backends_drops_no_established_connection() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let agent = Agent::start(&backends_yaml(&[&a, &b]));
    let mut conns: Vec<(Conn, String)> = (0..4).map(|_| agent.connect()).collect();
    assert_eq!(counts(conns.iter().map(|c| c.1.clone())).len(), 2);
    agent.rewrite(&backends_yaml(&[&b, &c]));
    agent.signal("-HUP");
    wait_for("reload applied", || {
        agent.status_json()["reloads_total"] == 1
    });
    for (conn, name) in &mut conns {
        assert!(
            conn.echo("after reload"),
            "connection to {name} dropped by the reload"
        );
    }
    let reached = counts((0..4).map(|_| agent.connect().1));
    assert_eq!(reached, HashMap::from([("b".into(), 2), ("c".into(), 2)]));
    assert!(agent.log().contains("reloaded"), "{}", agent.log());
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let a = Backend::start("a");
    let agent = Agent::start(&backends_yaml(&[&a]));
    agent.rewrite("backends: []\n");
    agent.signal("-HUP");
    wait_for("reload failure logged", || {
        agent.log().contains("reload failed")
    });
    assert!(
        agent.log().contains("backends: list at least one backend"),
        "{}",
        agent.log()
    );
    assert_eq!(agent.connect().1, "a");
}

#[test]
fn sigterm_drains_established_connections_then_exits_cleanly() {
    let a = Backend::start("a");
    let mut agent = Agent::start(&format!("{}drain_timeout: 20s\n", backends_yaml(&[&a])));
    let (mut conn, _) = agent.connect();
    agent.signal("-TERM");
    wait_for("listener closed", || {
        TcpStream::connect(agent.listen).is_err()
    });
    assert!(
        conn.echo("during drain"),
        "established connection keeps working while draining"
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "agent waits for the connection"
    );
    drop(conn);
    assert!(agent.wait_exit().success(), "{}", agent.log());
}

#[test]
fn drain_timeout_closes_lingering_connections() {
    let a = Backend::start("a");
    let mut agent = Agent::start(&format!("{}drain_timeout: 200ms\n", backends_yaml(&[&a])));
    let (mut conn, _) = agent.connect();
    let signalled = Instant::now();
    agent.signal("-TERM");
    assert!(conn.closed_by_peer(), "lingering connection not closed");
    let closed = signalled.elapsed();
    // Bounds far apart for a loaded machine, yet a drain of 1.5 s or more fails.
    assert_took(
        closed,
        ms(180)..ms(1500),
        "closing after SIGTERM with a 200 ms drain",
    );
    assert!(agent.wait_exit().success(), "{}", agent.log());
    let exited = signalled.elapsed();
    assert!(
        exited < Duration::from_secs(2),
        "exited {exited:?} after SIGTERM, the drain is 200 ms"
    );
    assert!(
        agent.log().contains("closed 1 connections"),
        "{}",
        agent.log()
    );
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let a = Backend::start("a");
    let agent = Agent::start(&format!(
        "{}timeouts: {{idle: 300ms}}\n",
        backends_yaml(&[&a])
    ));
    // Taken before connecting: the idle clock starts later (with the greeting), never earlier.
    let opened = Instant::now();
    let (mut conn, _) = agent.connect();
    assert!(conn.closed_by_peer(), "idle connection not closed");
    let closed = opened.elapsed();
    // Generous for a loaded machine, yet an idle timeout of 1.5 s or more fails.
    assert_took(
        closed,
        ms(290)..ms(1500),
        "closing with a 300 ms idle timeout",
    );
    wait_for("counted as idle", || {
        agent.status_json()["listener"]["closed_idle_total"] == 1
    });
}

#[test]
fn max_connections_holds_extra_clients_until_a_slot_frees() {
    let a = Backend::start("a");
    let agent = Agent::start(&format!("{}max_connections: 1\n", backends_yaml(&[&a])));
    let (first, _) = agent.connect();
    // The kernel completes the handshake from the backlog, but the agent does not accept it.
    let waiting = agent.hello();
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 8];
    assert!(
        (&waiting).read(&mut buf).is_err(),
        "second client served beyond max_connections"
    );
    // Still waiting: the agent holds exactly the one connection it may, and took no other.
    let listener = agent.status_json()["listener"].clone();
    assert_eq!(
        (
            &listener["max_connections"],
            &listener["active_connections"],
            &listener["accepted_total"],
        ),
        (&Value::from(1), &Value::from(1), &Value::from(1)),
        "{listener}"
    );
    drop(first);
    waiting.set_read_timeout(Some(DEADLINE)).unwrap();
    let n = (&waiting).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"a\n");
}

#[test]
fn descriptor_exhaustion_backs_off_without_spinning_and_recovers() {
    let a = Backend::start("a");
    // Room for the agent's own descriptors and a few proxied connections, no more.
    let agent = Agent::start_limited(&backends_yaml(&[&a]), "", Some(24));
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(agent.hello());
    }
    wait_for("exhaustion logged", || agent.log().contains("backing off"));
    let pid = agent.child.id();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let (before, since) = (cpu(), Instant::now());
    // Sample CPU over a window while still exhausted: a spinning accept loop burns a core.
    while since.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(100));
    }
    let ticks = cpu() - before;
    assert!(ticks < 20, "accept loop spun: {ticks} ticks in 2 s");
    drop(clients);
    // A TCP connect alone would succeed from the kernel's backlog; the agent must answer.
    wait_for("status answers again", || {
        matches!(
            try_http_get(agent.status, "/status", None, Duration::from_secs(1)),
            Ok((200, ..))
        )
    });
    let st = agent.status_json();
    assert!(
        st["listener"]["accept_exhausted_total"].as_u64().unwrap() > 0,
        "{st}"
    );
    // The dropped clients still sit in the backlog and are accepted (and closed) first.
    wait_for("serves again once descriptors are free", || {
        let mut s = agent.hello();
        let mut buf = [0u8; 2];
        matches!(s.read(&mut buf), Ok(2)) && &buf == b"a\n"
    });
}

/// How many descriptors process `pid` has open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Health settings that take a failing backend down within about 0.3 s.
const FAST_CHECKS: &str = "health: {interval: 100ms, timeout: 100ms, fall: 2}\n";

/// `n` connections to `addr` that never send a byte, opened at once and held until dropped:
/// those the server does not accept wait in its accept queue or keep retrying their SYN.
struct IdleFlood {
    established: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl IdleFlood {
    fn start(addr: SocketAddr, n: usize) -> IdleFlood {
        let established = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let count = Arc::clone(&established);
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                for _ in 0..n {
                    let count = Arc::clone(&count);
                    tokio::spawn(async move {
                        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                            count.fetch_add(1, Ordering::Relaxed);
                            std::future::pending::<()>().await;
                            drop(stream);
                        }
                    });
                }
                let _ = stopped.await;
            });
            // Dropping the runtime cancels every task and closes every socket.
        });
        IdleFlood {
            established,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn established(&self) -> usize {
        self.established.load(Ordering::Relaxed)
    }
}

impl Drop for IdleFlood {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `status::MAX_CONNECTIONS`: status connections the agent serves at once.
const STATUS_MAX_CONNECTIONS: usize = 64;

/// Issue #12, item 11: a local user opened thousands of idle connections to the status port;
/// the agent accepted them all and held each up to 10 s, ran out of descriptors, and the
/// health checks that then failed with EMFILE took every backend down, closing every proxied
/// connection. Now the status server holds at most 64 connections (the rest wait in the
/// kernel's accept queue at no descriptor cost), so the agent's descriptors stay bounded.
#[test]
fn two_thousand_idle_status_connections_leave_proxied_connections_open_and_backends_healthy() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    // 256 descriptors: 2,000 accepted status connections would exhaust them many times over.
    let agent = Agent::start_limited(
        &format!("{}{FAST_CHECKS}", backends_yaml(&[&a, &b])),
        "",
        Some(256),
    );
    let mut proxied: Vec<Conn> = (0..4).map(|_| agent.connect().0).collect();
    let pid = agent.child.id();
    let before = open_descriptors(pid);
    let flood = IdleFlood::start(agent.status, 2_000);
    wait_for("1,000 idle status connections established", || {
        flood.established() >= 1_000
    });
    // 2 s of flood: 20 check intervals, ten times what `fall` needs to take a backend down.
    let (start, mut most) = (Instant::now(), 0);
    while start.elapsed() < Duration::from_secs(2) {
        most = most.max(open_descriptors(pid));
        // New clients still reach both backends in turn: both are up.
        let reached: Vec<String> = (0..2).map(|_| agent.connect().1).collect();
        assert_eq!(counts(reached), counts(["a".into(), "b".into()]));
        thread::sleep(ms(50));
    }
    assert!(
        most <= before + STATUS_MAX_CONNECTIONS + 8,
        "the agent held {most} descriptors under the flood, {before} before it"
    );
    for (i, c) in proxied.iter_mut().enumerate() {
        assert!(c.echo("still open"), "proxied connection {i} was closed");
    }
    drop(flood);
    for name in ["a", "b"] {
        let be = agent.backend(name);
        assert_eq!(
            (
                &be["healthy"],
                &be["closed_on_down_total"],
                &be["checks_failed_total"]
            ),
            (&Value::from(true), &Value::from(0), &Value::from(0)),
            "{be}"
        );
        assert!(be["checks_ok_total"].as_u64().unwrap() >= 20, "{be}");
    }
}

/// Lowers process `pid`'s soft RLIMIT_NOFILE to its lowest free descriptor number, so it can
/// open no descriptor at all until it closes one; restores the limit when dropped.
struct NoDescriptorLeft {
    pid: u32,
    soft: String,
}

impl NoDescriptorLeft {
    fn impose(pid: u32) -> NoDescriptorLeft {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let soft = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap()
            .to_owned();
        let lowest_free = || {
            let used: std::collections::BTreeSet<u32> =
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect();
            (0..).find(|n| !used.contains(n)).unwrap()
        };
        // A check's socket open at the moment of one look hides that number; take the lowest
        // of a few looks.
        let mut limit = lowest_free();
        for _ in 0..4 {
            thread::sleep(ms(20));
            limit = limit.min(lowest_free());
        }
        let set = |value: &str| {
            let ok = Command::new("prlimit")
                .args(["--pid", &pid.to_string(), &format!("--nofile={value}:")])
                .status()
                .unwrap()
                .success();
            assert!(ok, "prlimit --nofile={value}:");
        };
        set(&limit.to_string());
        NoDescriptorLeft { pid, soft }
    }
}

impl Drop for NoDescriptorLeft {
    fn drop(&mut self) {
        let _ = Command::new("prlimit")
            .args([
                "--pid",
                &self.pid.to_string(),
                &format!("--nofile={}:", self.soft),
            ])
            .status();
    }
}

/// Issue #12, item 11: with no descriptor left, a check that cannot open its socket used to
/// count as the backend failing. Now the checks run on a small reserve of descriptors (so a
/// backend that really dies is still taken out) and a check that finds none is "unknown" (so a
/// healthy backend is never taken out for the agent's own shortage).
#[test]
fn health_checks_keep_working_when_the_agent_has_no_descriptor_left() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let agent = Agent::start(&format!("{}{FAST_CHECKS}", backends_yaml(&[&a, &b])));
    let (mut to_a, mut to_b) = (None, None);
    while to_a.is_none() || to_b.is_none() {
        let (conn, name) = agent.connect();
        match name.as_str() {
            "a" => to_a = Some(conn),
            _ => to_b = Some(conn),
        }
    }
    let (mut to_a, mut to_b) = (to_a.unwrap(), to_b.unwrap());
    let exhausted = NoDescriptorLeft::impose(agent.child.id());
    // Proof that nothing is left: a new client is not even accepted.
    let mut refused = agent.hello();
    refused.set_read_timeout(Some(ms(300))).unwrap();
    let waited = refused.read(&mut [0u8; 8]);
    assert!(
        waited.as_ref().is_err_and(|e| matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )),
        "a client was served or closed with no descriptor left: {waited:?}"
    );
    // 1 s: ten check intervals. Both backends stay up, their connections open.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        assert!(
            to_a.echo("a?") && to_b.echo("b?"),
            "a proxied connection was closed"
        );
        thread::sleep(ms(50));
    }
    // The checks still run: b's death is noticed and its connection closed; a's stays.
    b.stop();
    assert!(to_b.closed_by_peer(), "b's connection was not closed");
    assert!(to_a.echo("a still?"));
    drop(exhausted);
    let (be_a, be_b) = (agent.backend("a"), agent.backend("b"));
    assert_eq!(
        (&be_a["healthy"], &be_a["checks_failed_total"]),
        (&Value::from(true), &Value::from(0)),
        "{be_a}"
    );
    assert_eq!(be_b["closed_on_down_total"], 1, "{be_b}");
    assert!(
        agent.status_json()["listener"]["accept_exhausted_total"]
            .as_u64()
            .unwrap()
            > 0
    );
}

// ---------------------------------------------------------------------------------------------
// Config errors and `check`
// ---------------------------------------------------------------------------------------------

/// Runs khagent to completion: exit code, stdout, stderr. Fails (and kills it) if it is still
/// running after `DEADLINE`, as it would be had it started the daemon instead of exiting.
fn run_khagent(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_khagent"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while waiting, so a chatty child never blocks on a full pipe.
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "khagent {args:?} still running after {DEADLINE:?} (killed): it must exit, not run the daemon; stderr: {}",
                err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        out.join().unwrap(),
        err.join().unwrap(),
    )
}

#[test]
fn config_errors_name_the_field_and_exit_2_before_binding() {
    let dir = temp_dir("bad");
    // We hold the listen port: had the agent bound before validating, it would fail with a
    // bind error and exit 1 instead.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap();
    let path = dir.join("agent.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {listen}\nbackends:\n  - {{name: a, address: 127.0.0.1:1}}\n  - {{name: b, address: 127.0.0.1:99999}}\n"
        ),
    )
    .unwrap();
    let (code, _, err) = run_khagent(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("backends[1].address"), "{err}");

    std::fs::write(
        &path,
        format!(
            "listen: {listen}\nbackends:\n  - {{name: a, address: 127.0.0.1:1}}\nhealth: {{kind: https, ca_file: {}}}\n",
            dir.join("missing-ca.pem").display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_khagent(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("health.ca_file: cannot read"), "{err}");
    assert!(!err.contains("cannot listen"), "{err}");
}

#[test]
fn check_validates_without_running() {
    let dir = temp_dir("check");
    let path = dir.join("agent.yaml");
    let p = path.to_str().unwrap();
    std::fs::write(
        &path,
        "listen: 127.0.0.1:7443\nbackends:\n  - {name: a, address: 127.0.0.1:6443}\n",
    )
    .unwrap();
    let (code, out, err) = run_khagent(&["check", "--config", p]);
    assert_eq!(
        (code, out.trim_end()),
        (0, format!("{p}: ok").as_str()),
        "{err}"
    );
    std::fs::write(&path, "listen: 127.0.0.1:7443\nbackends: []\nbogus: 1\n").unwrap();
    let (code, _, err) = run_khagent(&["check", "--config", p]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown field `bogus`"), "{err}");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:7443\nbackends:\n  - {name: a, address: 127.0.0.1:6443}\nvrrp: {interface: eth0, router_id: 0, priority: 100, vip: 10.0.0.100}\n",
    )
    .unwrap();
    let (code, _, err) = run_khagent(&["check", "--config", p]);
    assert_eq!(code, 2);
    assert!(err.contains("vrrp.router_id: 0 is reserved"), "{err}");
    // Issue #12, item 14: status pages on an address other hosts reach need a password or
    // an explicit `public: true`.
    let open_status = "listen: 127.0.0.1:7443\nbackends:\n  - {name: a, address: 127.0.0.1:6443}\nstatus: {listen: 0.0.0.0:9901}\n";
    std::fs::write(&path, open_status).unwrap();
    let (code, _, err) = run_khagent(&["check", "--config", p]);
    assert_eq!(code, 2);
    assert!(
        err.contains("status.listen: 0.0.0.0:9901 can be reached"),
        "{err}"
    );
    std::fs::write(&path, open_status.replace("9901}", "9901, public: true}")).unwrap();
    let (code, _, err) = run_khagent(&["check", "--config", p]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_khagent(&["--conf", p]);
    assert_eq!(code, 2);
    assert!(err.contains("usage"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Status server
// ---------------------------------------------------------------------------------------------

#[test]
fn status_and_metrics_report_real_numbers() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let agent = Agent::start(&backends_yaml(&[&a, &b]));
    for _ in 0..4 {
        let (mut c, _) = agent.connect();
        assert!(c.echo("0123456789"));
    }
    wait_for("all four connections closed", || {
        agent.status_json()["listener"]["closed_done_total"] == 4
    });
    let st = agent.status_json();
    assert_eq!(st["listener"]["accepted_total"], 4);
    assert_eq!(st["listener"]["active_connections"], 0);
    for name in ["a", "b"] {
        let be = agent.backend(name);
        assert_eq!(be["connections_total"], 2, "{be}");
        // Up: the hello and the message; down: the backend's name line and the echo.
        assert_eq!(be["bytes_up_total"], 2 * (HELLO.len() + 11), "{be}");
        assert_eq!(be["bytes_down_total"], 2 * (2 + 11), "{be}");
    }
    assert_eq!(st["vrrp"], Value::Null);

    let (code, head, metrics) = agent.get("/metrics", None);
    assert_eq!(code, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        metrics.contains("khagent_connections_accepted_total 4\n"),
        "{metrics}"
    );
    let up_a = format!(
        "khagent_backend_up{{backend=\"a\",address=\"{}\"}} 1\n",
        a.addr
    );
    assert!(metrics.contains(&up_a), "{metrics}");
    let bytes = format!(
        "khagent_backend_bytes_total{{backend=\"b\",address=\"{}\",direction=\"down\"}} 26\n",
        b.addr
    );
    assert!(metrics.contains(&bytes), "{metrics}");

    let (code, _, html) = agent.get("/", None);
    assert_eq!(code, 200);
    assert!(
        html.contains(&a.addr.to_string()) && html.contains("<table"),
        "{html}"
    );
    assert_eq!(agent.get("/healthz", None).0, 200);
    assert_eq!(agent.get("/nope", None).0, 404);
}

#[test]
fn healthz_fails_when_no_backend_is_healthy() {
    let a = Backend::start("a");
    let agent = Agent::start(&format!(
        "{}health: {{interval: 50ms, timeout: 50ms}}\n",
        backends_yaml(&[&a])
    ));
    assert_eq!(agent.get("/healthz", None).0, 200);
    a.stop();
    wait_for("healthz turns 503", || agent.get("/healthz", None).0 == 503);
    let (_, _, body) = agent.get("/healthz", None);
    assert_eq!(body, "no healthy backend\n");
}

#[test]
fn a_backend_going_down_is_in_the_event_log_with_its_reason_and_time() {
    let a = Backend::start("a");
    let agent = Agent::start(&format!(
        "{}health: {{interval: 50ms, timeout: 50ms, fall: 2, rise: 1}}\n",
        backends_yaml(&[&a])
    ));
    agent.wait_backend_health("a", true);
    let events = |query: &str| -> Value {
        let (code, head, body) = agent.get(&format!("/events{query}"), None);
        assert_eq!(code, 200, "{head}{body}");
        serde_json::from_str(&body).unwrap()
    };
    let before_stop = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    a.stop();
    wait_for("the down event", || {
        events("")["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["to"] == "down")
    });
    let page = events("");
    let down = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "down")
        .unwrap()
        .clone();
    assert_eq!(down["kind"], "backend");
    assert_eq!(down["backend"], "a");
    assert_eq!(down["from"], "up");
    let reason = down["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("2 consecutive checks failed"),
        "{reason}"
    );
    let at = down["unix_us"].as_u64().unwrap();
    assert!(
        at >= before_stop,
        "stamped after the backend stopped: {down}"
    );
    assert!(down["monotonic_us"].as_u64().unwrap() > 0);
    assert_eq!(page["capacity"], 512);
    // `since` pages on from a sequence number; a bad one is refused.
    let seq = down["seq"].as_u64().unwrap();
    assert!(
        events(&format!("?since={seq}"))["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() > seq)
    );
    assert_eq!(agent.get("/events?since=x", None).0, 400);
    // /status shows the newest events too.
    let st = agent.status_json();
    assert!(
        st["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["seq"] == seq),
        "{st}"
    );
}

#[test]
fn basic_auth_guards_every_page_but_healthz() {
    let a = Backend::start("a");
    let dir = temp_dir("auth");
    let pw = dir.join("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let auth = format!(
        "  basic_auth: {{user: admin, password_file: {}}}\n",
        pw.display()
    );
    let agent = Agent::start_with_status(&backends_yaml(&[&a]), &auth);
    // base64("admin:s3cret"), base64("admin:wrong")
    let (good, bad) = ("YWRtaW46czNjcmV0", "YWRtaW46d3Jvbmc=");
    for path in ["/", "/status", "/metrics", "/events"] {
        let (code, head, _) = agent.get(path, None);
        assert_eq!(code, 401, "{path}");
        assert!(head.contains("WWW-Authenticate: Basic"), "{head}");
        assert_eq!(agent.get(path, Some(bad)).0, 401, "{path}");
        assert_eq!(agent.get(path, Some(good)).0, 200, "{path}");
    }
    assert_eq!(agent.get("/healthz", None).0, 200);
}

/// `status::READ_TIMEOUT`: how long the status server waits for a request head.
const STATUS_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// `status::MAX_HEAD`: the largest request head the status server reads.
const STATUS_MAX_HEAD: usize = 8 * 1024;

/// Sends `request` as is to the status server and reads its answer until it closes the
/// connection: `(code, status line and headers, body)`. Fails the test if a read waits longer
/// than `deadline` or the answer is not HTTP (for example, the server closed without one).
fn status_raw(addr: SocketAddr, request: &[u8], deadline: Duration) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(deadline)).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        panic!(
            "no complete answer within {deadline:?}: {e}; got {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not HTTP: {text:?}"));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status code: {text:?}"));
    (code, head.to_owned(), body.to_owned())
}

/// A GET of `/healthz` padded with an `X-Pad` header to exactly `len` bytes, blank line
/// included when `terminated`.
fn padded_head(len: usize, terminated: bool) -> Vec<u8> {
    let start = "GET /healthz HTTP/1.1\r\nHost: khagent\r\nX-Pad: ";
    let end = if terminated { "\r\n\r\n" } else { "" };
    let mut head = start.as_bytes().to_vec();
    head.resize(len - end.len(), b'a');
    head.extend_from_slice(end.as_bytes());
    assert_eq!(head.len(), len);
    head
}

#[test]
fn status_refuses_an_oversized_request_head_with_431() {
    let a = Backend::start("a");
    let agent = Agent::start(&backends_yaml(&[&a]));
    // One byte past the limit and no end of head in sight: refused without waiting for more.
    let (code, head, _) = status_raw(
        agent.status,
        &padded_head(STATUS_MAX_HEAD + 1, false),
        DEADLINE,
    );
    assert_eq!(code, 431, "{head}");
    // A complete head of exactly the limit is still served.
    let (code, head, _) = status_raw(agent.status, &padded_head(STATUS_MAX_HEAD, true), DEADLINE);
    assert_eq!(code, 200, "{head}");
}

#[test]
fn status_times_out_a_client_too_slow_to_send_its_request_head_with_408() {
    let a = Backend::start("a");
    let agent = Agent::start(&backends_yaml(&[&a]));
    let start = Instant::now();
    // The head never ends: no blank line follows.
    let (code, head, _) = status_raw(
        agent.status,
        b"GET /status HTTP/1.1\r\nHost: khagent\r\n",
        STATUS_READ_TIMEOUT + Duration::from_secs(15),
    );
    let waited = start.elapsed();
    assert_eq!(code, 408, "{head}");
    // The server waited its full read timeout (timers do not fire early; the slack is for
    // clock granularity) before giving up.
    assert!(
        waited >= STATUS_READ_TIMEOUT - Duration::from_millis(250),
        "answered after {waited:?}"
    );
}

#[test]
fn status_refuses_methods_other_than_get_and_head_with_405() {
    let a = Backend::start("a");
    let agent = Agent::start(&backends_yaml(&[&a]));
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        for path in ["/status", "/healthz"] {
            let request = format!("{method} {path} HTTP/1.1\r\nHost: khagent\r\n\r\n");
            let (code, head, body) = status_raw(agent.status, request.as_bytes(), DEADLINE);
            assert_eq!(code, 405, "{method} {path}: {head}");
            assert_eq!(body, "only GET\n", "{method} {path}");
        }
    }
}

#[test]
fn status_answers_head_with_the_headers_of_get_and_no_body() {
    let a = Backend::start("a");
    let agent = Agent::start(&backends_yaml(&[&a]));
    let request = |method: &str, path: &str| {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: khagent\r\n\r\n");
        status_raw(agent.status, request.as_bytes(), DEADLINE)
    };
    // /healthz answers the same bytes each time, so the heads must match exactly.
    let (get_code, get_head, get_body) = request("GET", "/healthz");
    let (head_code, head_head, head_body) = request("HEAD", "/healthz");
    assert_eq!((get_code, get_body.as_str()), (200, "ok\n"));
    assert_eq!(head_code, 200);
    assert_eq!(head_head, get_head);
    assert!(
        head_head.contains("\r\nContent-Length: 3\r\n"),
        "{head_head}"
    );
    assert_eq!(head_body, "");
    // /status changes as health checks count up; the header names and the content type
    // match GET's and the length is that of a body HEAD does not send.
    let names = |head: &str| -> Vec<String> {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, _)| k.to_owned())
            .collect()
    };
    let (get_code, get_head, _) = request("GET", "/status");
    let (head_code, head_head, head_body) = request("HEAD", "/status");
    assert_eq!((get_code, head_code), (200, 200));
    assert_eq!(names(&head_head), names(&get_head));
    assert!(
        head_head.contains("\r\nContent-Type: application/json\r\n"),
        "{head_head}"
    );
    let length: usize = head_head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {head_head}"));
    assert!(length > 100, "{head_head}");
    assert_eq!(head_body, "");
}

// ---------------------------------------------------------------------------------------------
// HTTPS health checks against a real TLS server (openssl s_server), certificates made with the
// openssl CLI.
// ---------------------------------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two CAs; a server certificate for IP 127.0.0.1 signed by the first.
fn make_pki(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "1",
                "-subj",
                &format!("/CN={ca}"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=kube-apiserver",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:kubernetes\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// `openssl s_server -WWW` serves files from its directory (and answers 200 to every path).
struct TlsServer {
    child: Child,
    addr: SocketAddr,
    _root: TempDir,
}

impl TlsServer {
    fn start(pki: &Path) -> TlsServer {
        let root = temp_dir("www");
        std::fs::write(root.join("readyz"), "ok").unwrap();
        let port = free_port();
        let child = Command::new("openssl")
            .current_dir(&root)
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(pki.join("server.pem"))
            .arg("-key")
            .arg(pki.join("server.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for("s_server listening", || TcpStream::connect(addr).is_ok());
        TlsServer {
            child,
            addr,
            _root: root,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn https_agent(pki: &Path, ca: &str, server: &TlsServer, extra: &str) -> Agent {
    Agent::start(&format!(
        "backends:\n  - {{name: api, address: {}}}\nhealth:\n  kind: https\n  interval: 500ms\n  timeout: 500ms\n  ca_file: {}\n{extra}",
        server.addr,
        pki.join(ca).display()
    ))
}

#[test]
fn https_check_passes_against_the_cluster_ca() {
    let pki = temp_dir("pki");
    make_pki(&pki);
    let server = TlsServer::start(&pki);
    let agent = https_agent(&pki, "ca.pem", &server, "");
    wait_for("three passed checks", || {
        agent.backend("api")["checks_ok_total"].as_u64().unwrap() >= 3
    });
    let be = agent.backend("api");
    // A probe may time out on a loaded machine; verification itself never fails here.
    assert!(
        !be["last_error"].as_str().unwrap_or("").contains("TLS"),
        "{be}"
    );
    assert_eq!(be["healthy"], true);
}

#[test]
fn https_check_with_a_server_name_verifies_that_name() {
    let pki = temp_dir("pki");
    make_pki(&pki);
    let server = TlsServer::start(&pki);
    let good = https_agent(&pki, "ca.pem", &server, "  server_name: kubernetes\n");
    let bad = https_agent(&pki, "ca.pem", &server, "  server_name: etcd\n");
    wait_for("checks ran", || {
        good.backend("api")["checks_ok_total"].as_u64().unwrap() >= 2
    });
    bad.wait_backend_health("api", false);
    bad.wait_check_error(
        "api",
        "TLS: invalid peer certificate: certificate not valid for name \"etcd\"",
    );
}

#[test]
fn https_check_fails_against_another_ca() {
    let pki = temp_dir("pki");
    make_pki(&pki);
    let server = TlsServer::start(&pki);
    let agent = https_agent(&pki, "other-ca.pem", &server, "");
    agent.wait_backend_health("api", false);
    agent.wait_check_error("api", "UnknownIssuer");
    let be = agent.backend("api");
    assert_eq!(be["checks_ok_total"], 0, "{be}");
}

/// A TLS server (rustls) that answers every request with `503 Service Unavailable`, as a
/// starting apiserver answers /readyz; it accepts TCP and completes TLS like a healthy one.
fn start_not_ready_server(pki: &Path) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chain = CertificateDer::pem_file_iter(pki.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let body = "[-]etcd failed: reason withheld\nreadyz check failed\n";
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    addr
}

#[test]
fn https_backend_not_ready_gets_no_traffic_though_it_accepts_tcp() {
    let pki = temp_dir("pki");
    make_pki(&pki);
    let addr = start_not_ready_server(&pki);
    let agent = Agent::start(&format!(
        "backends:\n  - {{name: api, address: {addr}}}\nhealth:\n  kind: https\n  interval: 500ms\n  timeout: 500ms\n  ca_file: {}\n",
        pki.join("ca.pem").display()
    ));
    agent.wait_backend_health("api", false);
    agent.wait_check_error("api", "/readyz answered `HTTP/1.1 503 Service Unavailable`");
    let total_before = agent.backend("api")["connections_total"].clone();
    let mut c = agent.hello();
    let mut buf = [0u8; 8];
    assert!(is_close(c.read(&mut buf)), "closed without a backend");
    assert_eq!(agent.backend("api")["connections_total"], total_before);
    wait_for("counted", || {
        agent.status_json()["listener"]["no_backend_total"] == 1
    });
}

/// The guides' haproxy `listen stats` block: its own port, its path, its realm, its password;
/// a reload (SIGHUP) brings a new password, user or path without a restart.
#[test]
fn stats_page_has_its_own_listener_realm_and_password_and_a_reload_changes_them() {
    let a = Backend::start("a");
    let dir = temp_dir("stats");
    let pw = dir.join("stats.password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let section = |uri: &str| {
        format!(
            "stats:\n  listen: {stats}\n  uri: {uri}\n  realm: HAProxy Statistics\n  user: admin\n  \
             password_file: {}\n",
            pw.display()
        )
    };
    let body = format!("{}{}", backends_yaml(&[&a]), section("/stats"));
    let agent = Agent::start(&body);
    // base64("admin:s3cret"), base64("admin:n3w"), base64("admin:wrong")
    let (old, new, wrong) = ("YWRtaW46czNjcmV0", "YWRtaW46bjN3", "YWRtaW46d3Jvbmc=");
    wait_for("stats listener up", || TcpStream::connect(stats).is_ok());

    let (code, head, body) = http_get(stats, "/stats", None);
    assert_eq!(code, 401, "{head}");
    assert!(
        head.contains("WWW-Authenticate: Basic realm=\"HAProxy Statistics\""),
        "{head}"
    );
    assert!(!body.contains("<html"), "{body}");
    assert_eq!(http_get(stats, "/stats", Some(wrong)).0, 401);
    let (code, _, page) = http_get(stats, "/stats", Some(old));
    assert_eq!(code, 200);
    assert!(page.contains("<h2>Backends</h2>"), "{page}");
    // Only the page: the JSON and metrics stay on the status listener.
    assert_eq!(http_get(stats, "/status", Some(old)).0, 404);
    // The status listener is untouched by the stats section: no password there.
    assert_eq!(agent.get("/status", None).0, 200);

    std::fs::write(&pw, "n3w\n").unwrap();
    agent.rewrite(&format!(
        "{}{}",
        backends_yaml(&[&a]),
        section("/haproxy?stats")
    ));
    agent.signal("-HUP");
    wait_for("reload failure logged", || {
        agent.log().contains("reload failed")
    });
    assert!(agent.log().contains("stats.uri"), "{}", agent.log());
    assert_eq!(
        http_get(stats, "/stats", Some(old)).0,
        200,
        "a bad reload keeps the old"
    );

    agent.rewrite(&format!("{}{}", backends_yaml(&[&a]), section("/lb-stats")));
    agent.signal("-HUP");
    wait_for("reload applied", || {
        agent.status_json()["reloads_total"] == 1
    });
    assert_eq!(http_get(stats, "/lb-stats", Some(old)).0, 401);
    assert_eq!(http_get(stats, "/lb-stats", Some(new)).0, 200);
    assert_eq!(http_get(stats, "/stats", Some(new)).0, 404);
    assert!(!agent.log().contains("restart"), "{}", agent.log());
}
