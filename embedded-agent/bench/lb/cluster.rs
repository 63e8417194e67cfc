//! Load generator for bench/lb's cluster-shaped test (std only, raw epoll; built by cluster.py
//! with `rustc -O --edition 2021`, like floor.rs and pingpong.rs). One program for every
//! contender, so the client's cost and behaviour are the same whichever proxy is measured.
//!
//!   cluster server PORT
//!       the stand-in API server on 127.0.0.1:PORT. A connection says what it is with its first
//!       byte: `W` (a watch: answered at once with one event, then events on command), `Q` (a
//!       request of REQ bytes, answered with RESP bytes, over and over: keep-alive) or `C` (a
//!       control line, straight from the client, not through the proxy:
//!       `C <events> <rate>\n` sends that many events, round-robin over the watches, evenly
//!       paced at <rate> per second, then answers `D\n`).
//!   cluster client PROXY_PORT SERVER_PORT PROXY_PIDS SECONDS EVENT_RATE REQ_RATE WATCHES...
//!       opens 64 request connections and, for each WATCHES step (ascending), watches through
//!       the proxy up to that many; then, for SECONDS, has the server send EVENT_RATE events
//!       per second over the watches while it sends REQ_RATE requests per second over the 64
//!       request connections (open loop, one outstanding per connection, as HTTP/1.1 does).
//!       After the last step it runs the 64 request connections closed loop (each sends its
//!       next request as soon as the answer is in) for SECONDS with the watches held open.
//!       Prints one JSON object per phase on stdout, with the proxy's CPU time (all threads,
//!       from /proc/PID/task/*/schedstat, ns), its voluntary context switches (how often it
//!       blocked) and its RSS; PROXY_PIDS is one PID or several, comma-separated (summed).
//!
//! Latency of an event: the server stamps each event with CLOCK_MONOTONIC just before its
//! `send`, and the client subtracts it from the time its `recv` returned (one clock, one
//! machine). Latency of a request: from the client's `send` to the last byte of the answer.

use std::io::Write;

const EVENT: usize = 300; // a small watch event (a Pod status change is a few hundred bytes)
const REQ: usize = 200; // a short GET with headers
const RESP: usize = 700; // its answer
const WATCH_REQ: usize = 64;
const REQ_CONNS: usize = 64;

mod ffi;
use ffi::*;

const CLOCK_MONOTONIC: i32 = 1;
const TFD_NONBLOCK: i32 = 0o4000;
const EAGAIN: i32 = 11;
const EINPROGRESS: i32 = 115;

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

#[repr(C)]
struct Itimerspec {
    interval: Timespec,
    value: Timespec,
}

extern "C" {
    fn read(fd: i32, buf: *mut u8, len: usize) -> isize;
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    fn timerfd_create(clock: i32, flags: i32) -> i32;
    fn timerfd_settime(fd: i32, flags: i32, new: *const Itimerspec, old: *mut Itimerspec) -> i32;
    fn __errno_location() -> *mut i32;
}

fn errno() -> i32 {
    unsafe { *__errno_location() }
}

fn now_ns() -> u64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

struct Epoll {
    fd: i32,
    events: Vec<EpollEvent>,
}

impl Epoll {
    fn new() -> Epoll {
        Epoll {
            fd: unsafe { epoll_create1(0) },
            events: vec![EpollEvent { events: 0, data: 0 }; 512],
        }
    }
    fn add(&self, fd: i32, events: u32) {
        let mut ev = EpollEvent {
            events,
            data: fd as u64,
        };
        assert!(
            unsafe { epoll_ctl(self.fd, EPOLL_CTL_ADD, fd, &mut ev) } == 0,
            "epoll_ctl"
        );
    }
    fn modify(&self, fd: i32, events: u32) {
        let mut ev = EpollEvent {
            events,
            data: fd as u64,
        };
        unsafe { epoll_ctl(self.fd, EPOLL_CTL_MOD, fd, &mut ev) };
    }
    /// (fd, events) of what is ready, waiting up to `timeout_ms`.
    fn wait(&mut self, timeout_ms: i32) -> Vec<(i32, u32)> {
        let n = unsafe {
            epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        self.events[..n.max(0) as usize]
            .iter()
            .map(|e| (e.data as i32, e.events))
            .collect()
    }
}

/// A periodic timer: readable every `period_ns`; `ticks` says how many periods passed.
fn timer(period_ns: u64) -> i32 {
    let fd = unsafe { timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK) };
    let p = Timespec {
        sec: (period_ns / 1_000_000_000) as i64,
        nsec: (period_ns % 1_000_000_000) as i64,
    };
    let spec = Itimerspec {
        interval: Timespec {
            sec: p.sec,
            nsec: p.nsec,
        },
        value: p,
    };
    unsafe { timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) };
    fd
}

fn ticks(fd: i32) -> u64 {
    let mut n = [0u8; 8];
    if unsafe { read(fd, n.as_mut_ptr(), 8) } == 8 {
        u64::from_ne_bytes(n)
    } else {
        0
    }
}

/// Sends all of `buf` or what fits; returns bytes sent (0 when the socket is full).
fn send_some(fd: i32, buf: &[u8]) -> usize {
    let r = unsafe { send(fd, buf.as_ptr(), buf.len(), MSG_NOSIGNAL | MSG_DONTWAIT) };
    if r < 0 {
        0
    } else {
        r as usize
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => server(args[2].parse().expect("PORT")),
        Some("client") => client(&args[2..]),
        _ => {
            eprintln!("usage: cluster server PORT | cluster client PROXY_PORT SERVER_PORT PROXY_PIDS SECONDS EVENT_RATE REQ_RATE WATCHES...");
            std::process::exit(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The stand-in API server.

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    New,
    Watch,
    Request,
    Control,
}

struct Conn {
    kind: Kind,
    /// Bytes of the current inbound message received so far.
    got: usize,
    /// Bytes that did not fit in the socket yet (sent on EPOLLOUT, before anything new).
    out: Vec<u8>,
    line: Vec<u8>,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            kind: Kind::New,
            got: 0,
            out: Vec::new(),
            line: Vec::new(),
        }
    }
}

struct Server {
    ep: Epoll,
    conns: Vec<Option<Conn>>,
    watches: Vec<i32>,
    next_watch: usize,
    control: i32,
    /// Events left to send in the current command, and the pacing timer.
    left: u64,
    tick: i32,
}

impl Server {
    /// Queues `buf` on `fd` behind anything already waiting; sends what the socket takes now.
    fn output(&mut self, fd: i32, buf: &[u8]) {
        let Some(c) = self.conns[fd as usize].as_mut() else {
            return;
        };
        if c.out.is_empty() {
            let n = send_some(fd, buf);
            if n == buf.len() {
                return;
            }
            c.out.extend_from_slice(&buf[n..]);
            self.ep.modify(fd, EPOLLIN | EPOLLOUT);
        } else {
            c.out.extend_from_slice(buf);
        }
    }

    fn flush(&mut self, fd: i32) {
        let Some(c) = self.conns[fd as usize].as_mut() else {
            return;
        };
        let n = send_some(fd, &c.out);
        c.out.drain(..n);
        if c.out.is_empty() {
            self.ep.modify(fd, EPOLLIN);
        }
    }

    fn event(&mut self, fd: i32, stamp: bool) {
        let mut ev = [b'e'; EVENT];
        let ts = if stamp { now_ns() } else { 0 };
        ev[..8].copy_from_slice(&ts.to_le_bytes());
        self.output(fd, &ev);
    }

    fn drop_conn(&mut self, fd: i32) {
        if let Some(c) = self.conns[fd as usize].take() {
            if c.kind == Kind::Watch {
                if let Some(i) = self.watches.iter().position(|&w| w == fd) {
                    self.watches.swap_remove(i);
                }
            }
            if fd == self.control {
                self.control = -1;
            }
            unsafe { close(fd) };
        }
    }

    fn readable(&mut self, fd: i32, buf: &mut [u8]) {
        let r = unsafe { recv(fd, buf.as_mut_ptr(), buf.len(), MSG_DONTWAIT) };
        if r == 0 || (r < 0 && errno() != EAGAIN) {
            self.drop_conn(fd);
            return;
        }
        if r < 0 {
            return;
        }
        let data = &buf[..r as usize];
        let Some(c) = self.conns[fd as usize].as_mut() else {
            return;
        };
        if c.kind == Kind::New {
            c.kind = match data[0] {
                b'W' => Kind::Watch,
                b'Q' => Kind::Request,
                b'C' => Kind::Control,
                _ => {
                    self.drop_conn(fd);
                    return;
                }
            };
        }
        match c.kind {
            Kind::Watch => {
                c.got += data.len();
                if c.got >= WATCH_REQ && !self.watches.contains(&fd) {
                    // Registered: the first event tells the client the watch is through.
                    self.watches.push(fd);
                    self.event(fd, false);
                }
            }
            Kind::Request => {
                c.got += data.len();
                let mut answers = 0;
                while c.got >= REQ {
                    c.got -= REQ;
                    answers += 1;
                }
                for _ in 0..answers {
                    self.output(fd, &[b'a'; RESP]);
                }
            }
            Kind::Control => {
                c.line.extend_from_slice(data);
                if let Some(end) = c.line.iter().position(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(&c.line[..end]).to_string();
                    c.line.clear();
                    let words: Vec<u64> = line
                        .split_whitespace()
                        .skip(1)
                        .map(|w| w.parse().unwrap_or(0))
                        .collect();
                    let (count, rate) = (words[0], words[1].max(1));
                    self.control = fd;
                    self.left = count;
                    self.tick = timer(1_000_000_000 / rate);
                    self.ep.add(self.tick, EPOLLIN);
                }
            }
            Kind::New => {}
        }
    }

    fn on_tick(&mut self) {
        let due = ticks(self.tick).min(self.left);
        for _ in 0..due {
            if self.watches.is_empty() {
                break;
            }
            self.next_watch = (self.next_watch + 1) % self.watches.len();
            let fd = self.watches[self.next_watch];
            self.event(fd, true);
        }
        self.left -= due;
        if self.left == 0 {
            unsafe { close(self.tick) };
            self.tick = -1;
            if self.control >= 0 {
                let c = self.control;
                self.output(c, b"D\n");
            }
        }
    }
}

fn server(port: u16) {
    let l = unsafe { socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0) };
    unsafe { setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &1, 4) };
    unsafe { setsockopt(l, IPPROTO_TCP, TCP_NODELAY, &1, 4) };
    let addr = loopback(port);
    assert!(unsafe { bind(l, &addr, 16) } == 0, "bind 127.0.0.1:{port}");
    unsafe { listen(l, 4096) };
    let mut s = Server {
        ep: Epoll::new(),
        conns: (0..20_100).map(|_| None).collect(),
        watches: Vec::new(),
        next_watch: 0,
        control: -1,
        left: 0,
        tick: -1,
    };
    s.ep.add(l, EPOLLIN);
    let mut buf = vec![0u8; 65536];
    loop {
        for (fd, what) in s.ep.wait(-1) {
            if fd == l {
                loop {
                    let c = unsafe {
                        accept4(l, std::ptr::null_mut(), std::ptr::null_mut(), SOCK_NONBLOCK)
                    };
                    if c < 0 {
                        break;
                    }
                    s.conns[c as usize] = Some(Conn::new());
                    s.ep.add(c, EPOLLIN);
                }
            } else if fd == s.tick {
                s.on_tick();
            } else {
                if what & EPOLLOUT != 0 {
                    s.flush(fd);
                }
                if what & !EPOLLOUT != 0 {
                    s.readable(fd, &mut buf);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The clients: watches and keep-alive requesters, through the proxy.

/// One client socket's state: bytes of the current message received, and for a watch the
/// event's stamp as far as it arrived.
#[derive(Clone, Copy)]
struct ClientConn {
    watch: bool,
    got: usize,
    stamp: [u8; 8],
    /// Watches: the first event (the "you are registered" one) has arrived.
    ready: bool,
    /// Requesters: when the outstanding request was sent (0 when none is).
    sent_at: u64,
}

struct Client {
    ep: Epoll,
    conns: Vec<Option<ClientConn>>,
    proxy: SockaddrIn,
    requesters: Vec<i32>,
    next_req: usize,
    watches: usize,
    ready: usize,
    event_lat: Vec<u32>,
    req_lat: Vec<u32>,
    closed_loop: bool,
    sent_requests: u64,
    skipped: u64,
    errors: u64,
    /// The server said it sent every event of the current command.
    control_done: bool,
}

fn connect_proxy(proxy: &SockaddrIn) -> i32 {
    let fd = unsafe { socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0) };
    unsafe { setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &1, 4) };
    let r = unsafe { connect(fd, proxy, 16) };
    assert!(
        r == 0 || errno() == EINPROGRESS,
        "connect to the proxy: errno {}",
        errno()
    );
    fd
}

impl Client {
    /// Opens a connection through the proxy. A watch says what it is once connected (on
    /// EPOLLOUT, see `writable_watch`); a requester's first request does that.
    fn open(&mut self, watch: bool) {
        let fd = connect_proxy(&self.proxy);
        self.conns[fd as usize] = Some(ClientConn {
            watch,
            got: 0,
            stamp: [0; 8],
            ready: false,
            sent_at: 0,
        });
        if watch {
            self.ep.add(fd, EPOLLIN | EPOLLOUT);
            self.watches += 1;
        } else {
            self.ep.add(fd, EPOLLIN);
            self.requesters.push(fd);
        }
    }

    fn request(&mut self, fd: i32) {
        let Some(c) = self.conns[fd as usize].as_mut() else {
            return;
        };
        c.sent_at = now_ns();
        let mut req = [b'q'; REQ];
        req[0] = b'Q';
        // 200 bytes always fit in an empty socket buffer.
        if send_some(fd, &req) != REQ {
            self.errors += 1;
        }
        self.sent_requests += 1;
    }

    /// The next requester with nothing outstanding, round-robin.
    fn request_next(&mut self) {
        for _ in 0..self.requesters.len() {
            self.next_req = (self.next_req + 1) % self.requesters.len();
            let fd = self.requesters[self.next_req];
            if self.conns[fd as usize].is_some_and(|c| c.sent_at == 0) {
                self.request(fd);
                return;
            }
        }
        self.skipped += 1;
    }

    fn writable_watch(&mut self, fd: i32) {
        // Connected: say which watch this is, once.
        let mut req = [b'w'; WATCH_REQ];
        req[0] = b'W';
        if send_some(fd, &req) != WATCH_REQ {
            self.errors += 1;
        }
        self.ep.modify(fd, EPOLLIN);
    }

    fn readable(&mut self, fd: i32, buf: &mut [u8], measuring: bool) {
        let r = unsafe { recv(fd, buf.as_mut_ptr(), buf.len(), MSG_DONTWAIT) };
        if r <= 0 {
            if r == 0 || errno() != EAGAIN {
                self.errors += 1;
                self.conns[fd as usize] = None;
                unsafe { close(fd) };
            }
            return;
        }
        let now = now_ns();
        let Some(mut c) = self.conns[fd as usize] else {
            return;
        };
        let mut data = &buf[..r as usize];
        let mut again = false;
        while !data.is_empty() {
            if c.watch {
                if c.got < 8 {
                    let take = (8 - c.got).min(data.len());
                    c.stamp[c.got..c.got + take].copy_from_slice(&data[..take]);
                }
                let take = (EVENT - c.got).min(data.len());
                c.got += take;
                data = &data[take..];
                if c.got == EVENT {
                    c.got = 0;
                    let stamp = u64::from_le_bytes(c.stamp);
                    if !c.ready {
                        c.ready = true;
                        self.ready += 1;
                    } else if stamp != 0 && measuring {
                        self.event_lat
                            .push(((now - stamp) / 100).min(u32::MAX as u64) as u32);
                    }
                }
            } else {
                let take = (RESP - c.got).min(data.len());
                c.got += take;
                data = &data[take..];
                if c.got == RESP {
                    c.got = 0;
                    if measuring {
                        self.req_lat
                            .push(((now - c.sent_at) / 100).min(u32::MAX as u64) as u32);
                    }
                    c.sent_at = 0;
                    again = self.closed_loop;
                }
            }
        }
        self.conns[fd as usize] = Some(c);
        if again {
            self.request(fd);
        }
    }

    /// Serves sockets until `done` says stop or `deadline_ns` passes; `timer` (if >= 0) paces
    /// open-loop requests.
    fn serve_until(
        &mut self,
        buf: &mut [u8],
        measuring: bool,
        timer: i32,
        control: i32,
        mut done: impl FnMut(&Client, bool) -> bool,
        deadline_ns: u64,
    ) {
        while !done(self, self.control_done) && now_ns() < deadline_ns {
            for (fd, what) in self.ep.wait(100) {
                if fd == timer {
                    for _ in 0..ticks(timer) {
                        self.request_next();
                    }
                } else if fd == control {
                    let r = unsafe { recv(fd, buf.as_mut_ptr(), buf.len(), MSG_DONTWAIT) };
                    if r > 0 && buf[..r as usize].contains(&b'D') {
                        self.control_done = true;
                    }
                } else if what & EPOLLOUT != 0 && self.conns[fd as usize].is_some_and(|c| c.watch) {
                    self.writable_watch(fd);
                    if what & EPOLLIN != 0 {
                        self.readable(fd, buf, measuring);
                    }
                } else {
                    self.readable(fd, buf, measuring);
                }
            }
        }
    }
}

/// The proxy's CPU time (ns, all threads of all its processes), voluntary context switches
/// and RSS (KiB).
fn proxy_sample(pids: &[u32]) -> (u64, u64, u64) {
    let (mut cpu, mut sleeps, mut rss) = (0, 0, 0);
    for pid in pids {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let p = t.path();
                if let Ok(s) = std::fs::read_to_string(p.join("schedstat")) {
                    cpu += s
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
                if let Ok(s) = std::fs::read_to_string(p.join("status")) {
                    for line in s.lines() {
                        if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                            sleeps += v.trim().parse::<u64>().unwrap_or(0);
                        }
                    }
                }
            }
        }
        rss += std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0);
    }
    (cpu, sleeps, rss)
}

/// p50, p99 and p99.9 in µs of latencies kept in units of 100 ns.
fn percentiles(lat: &mut [u32]) -> [f64; 3] {
    if lat.is_empty() {
        return [f64::NAN; 3];
    }
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 10.0;
    [q(0.5), q(0.99), q(0.999)]
}

fn client(args: &[String]) {
    let num = |i: usize| -> u64 { args[i].parse().expect("a number") };
    let (proxy_port, server_port) = (num(0) as u16, num(1) as u16);
    let pids: Vec<u32> = args[2]
        .split(',')
        .map(|p| p.parse().expect("a PID"))
        .collect();
    let (seconds, event_rate, req_rate) = (num(3), num(4), num(5));
    let steps: Vec<usize> = (6..args.len()).map(|i| num(i) as usize).collect();
    let mut c = Client {
        ep: Epoll::new(),
        conns: vec![None; 20_100],
        proxy: loopback(proxy_port),
        requesters: Vec::new(),
        next_req: 0,
        watches: 0,
        ready: 0,
        event_lat: Vec::new(),
        req_lat: Vec::new(),
        closed_loop: false,
        sent_requests: 0,
        skipped: 0,
        errors: 0,
        control_done: false,
    };
    let mut buf = vec![0u8; 65536];
    let control = unsafe { socket(AF_INET, SOCK_STREAM, 0) };
    let server_addr = loopback(server_port);
    assert!(
        unsafe { connect(control, &server_addr, 16) } == 0,
        "connect to the server"
    );
    c.ep.add(control, EPOLLIN);
    for _ in 0..REQ_CONNS {
        c.open(false);
    }
    let mut out = std::io::stdout();
    for &target in &steps {
        // Open the watches in batches so the proxy's and server's backlogs never overflow.
        while c.watches < target {
            let batch = (target - c.watches).min(500);
            for _ in 0..batch {
                c.open(true);
            }
            let want = c.watches;
            c.serve_until(
                &mut buf,
                false,
                -1,
                control,
                |c, _| c.ready >= want,
                now_ns() + 60_000_000_000,
            );
            assert!(
                c.ready >= want,
                "only {} of {want} watches came through",
                c.ready
            );
        }
        // Warm the request connections up (their first request opens the backend leg).
        let ok = c.errors;
        for i in 0..c.requesters.len() {
            let fd = c.requesters[i];
            c.request(fd);
        }
        let idle = |c: &Client, _: bool| {
            c.requesters
                .iter()
                .all(|&fd| c.conns[fd as usize].is_some_and(|x| x.sent_at == 0))
        };
        c.serve_until(
            &mut buf,
            false,
            -1,
            control,
            idle,
            now_ns() + 10_000_000_000,
        );
        assert!(c.errors == ok, "request connections failed");
        std::thread::sleep(std::time::Duration::from_millis(300));

        let events = event_rate * seconds;
        let (cpu0, sleeps0, _) = proxy_sample(&pids);
        let (sent0, skipped0) = (c.sent_requests, c.skipped);
        c.control_done = false;
        let t0 = now_ns();
        let line = format!("C {events} {event_rate}\n");
        unsafe { send(control, line.as_ptr(), line.len(), MSG_NOSIGNAL) };
        let pace = timer(1_000_000_000 / req_rate.max(1));
        c.ep.add(pace, EPOLLIN);
        let end = t0 + seconds * 1_000_000_000;
        c.serve_until(&mut buf, true, pace, control, |_, _| false, end);
        unsafe { close(pace) };
        // The rest of the events (the server's pace ends about now) and answers.
        c.serve_until(
            &mut buf,
            true,
            -1,
            control,
            |c, d| d && c.event_lat.len() as u64 >= events && idle(c, d),
            now_ns() + 5_000_000_000,
        );
        let wall = (now_ns() - t0) as f64 / 1e9;
        let (cpu1, sleeps1, rss) = proxy_sample(&pids);
        let requests = (c.sent_requests - sent0) as f64;
        let got_events = c.event_lat.len() as f64;
        let messages = got_events + 2.0 * requests;
        let [e50, e99, e999] = percentiles(&mut c.event_lat);
        let [r50, r99, r999] = percentiles(&mut c.req_lat);
        writeln!(
            out,
            "{{\"phase\": \"mix\", \"watches\": {target}, \"seconds\": {wall:.3}, \"events\": {got_events}, \
             \"events_expected\": {events}, \"requests\": {requests}, \"requests_skipped\": {}, \
             \"event_p50_us\": {e50}, \"event_p99_us\": {e99}, \"event_p999_us\": {e999}, \
             \"req_p50_us\": {r50}, \"req_p99_us\": {r99}, \"req_p999_us\": {r999}, \
             \"cpu_us_per_msg\": {:.3}, \"sleeps_per_msg\": {:.4}, \"rss_kib\": {rss}, \"errors\": {}}}",
            c.skipped - skipped0,
            (cpu1 - cpu0) as f64 / 1e3 / messages,
            (sleeps1 - sleeps0) as f64 / messages,
            c.errors
        )
        .ok();
        out.flush().ok();
        c.event_lat.clear();
        c.req_lat.clear();
    }
    // Keep-alive requests as fast as they go, the watches held open and quiet.
    let (cpu0, sleeps0, _) = proxy_sample(&pids);
    let sent0 = c.sent_requests;
    c.closed_loop = true;
    let t0 = now_ns();
    for i in 0..c.requesters.len() {
        let fd = c.requesters[i];
        c.request(fd);
    }
    c.serve_until(
        &mut buf,
        true,
        -1,
        control,
        |_, _| false,
        t0 + seconds * 1_000_000_000,
    );
    c.closed_loop = false;
    let done = c.req_lat.len() as f64;
    let wall = (now_ns() - t0) as f64 / 1e9;
    let (cpu1, sleeps1, rss) = proxy_sample(&pids);
    let _ = c.sent_requests - sent0;
    let [r50, r99, r999] = percentiles(&mut c.req_lat);
    writeln!(
        out,
        "{{\"phase\": \"keepalive\", \"watches\": {}, \"seconds\": {wall:.3}, \"requests\": {done}, \
         \"req_per_s\": {:.1}, \"req_p50_us\": {r50}, \"req_p99_us\": {r99}, \"req_p999_us\": {r999}, \
         \"cpu_us_per_req\": {:.3}, \"sleeps_per_req\": {:.4}, \"rss_kib\": {rss}, \"errors\": {}}}",
        c.watches,
        done / wall,
        (cpu1 - cpu0) as f64 / 1e3 / done,
        (sleeps1 - sleeps0) as f64 / done,
        c.errors
    )
    .ok();
}
