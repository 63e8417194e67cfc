//! The VRRP lab: a bridge in the root namespace with no physical port, and network namespaces
//! on it (subnet 10.98.K.0/24, K distinct per test so tests run in parallel), the real khagent
//! binary (or keepalived) in each. Nothing here sends to an address outside the lab, and
//! nothing connects to a lab address before [`Lab::assert_up`] has seen the bridge up.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::claim::LabClaim;

pub const VIP_HOST: u8 = 100;
pub const STATUS_PORT: u16 = 9100;
pub const ROUTER_ID: u8 = 51;

/// Runs a command and returns its stdout, panicking with stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring failure (teardown of what may not exist).
fn run_quiet(cmd: &str, args: &[&str]) {
    let _ = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Polls `cond` every 5 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// The lab for one test; torn down on drop, even when the test fails.
pub struct Lab {
    pub k: u8,
    pub nodes: usize,
    pub dir: PathBuf,
    // Released after `Drop::drop` has torn the lab down: only then may another run build it.
    _claim: LabClaim,
}

impl Lab {
    /// Claims lab `k` host-wide (waiting while another test process holds it), then builds it.
    pub fn new(k: u8, nodes: usize) -> Lab {
        let claim = LabClaim::acquire_key(&format!("vrrp-{k}"), &format!("subnet-10.98.{k}"));
        let lab = Lab {
            k,
            nodes,
            dir: std::env::temp_dir().join(format!("khagent-vrrp-lab-{k}")),
            _claim: claim,
        };
        // Leftovers of an aborted run: with the claim held, no live test owns them.
        lab.teardown();
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir).unwrap();
        let br = lab.bridge();
        run("ip", &["link", "add", &br, "type", "bridge"]);
        run(
            "ip",
            &["addr", "add", &format!("10.98.{k}.1/24"), "dev", &br],
        );
        run("ip", &["link", "set", &br, "up"]);
        for i in 1..=nodes {
            let (ns, host) = (lab.ns(i), lab.host_veth(i));
            run("ip", &["netns", "add", &ns]);
            run(
                "ip",
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            run("ip", &["link", "set", &host, "master", &br, "up"]);
            let addr = format!("{}/24", lab.addr(i));
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            // Multicast adverts need a route; there is deliberately no default route.
            run(
                "ip",
                &["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"],
            );
        }
        lab.assert_up();
        lab
    }

    pub fn bridge(&self) -> String {
        format!("khvbr{}", self.k)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("khv{}-{i}", self.k)
    }

    fn host_veth(&self, i: usize) -> String {
        format!("khv{}h{i}", self.k)
    }

    /// Node i's own address: 10.98.K.(i+1).
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, self.k, u8::try_from(i + 1).unwrap())
    }

    /// Node i's khagent state directory: the nodes share the host's filesystem, so each needs
    /// its own (a real node has `/var/lib/khagent`).
    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("state-{i}"))
    }

    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, self.k, VIP_HOST)
    }

    /// The bridge is up and every namespace exists: only then may anything be sent to a lab
    /// address, or it could leave the machine.
    pub fn assert_up(&self) {
        let flags = std::fs::read_to_string(format!("/sys/class/net/{}/flags", self.bridge()))
            .unwrap_or_else(|_| panic!("lab bridge {} is missing", self.bridge()));
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
        assert!(flags & 1 != 0, "lab bridge {} is not up", self.bridge());
        for i in 1..=self.nodes {
            assert!(
                Path::new("/run/netns").join(self.ns(i)).exists(),
                "netns {} is missing",
                self.ns(i)
            );
        }
    }

    /// Which nodes have the VIP on their interface right now.
    pub fn holders(&self) -> Vec<usize> {
        let vip = format!("inet {}/", self.vip());
        (1..=self.nodes)
            .filter(|&i| {
                run(
                    "ip",
                    &["-n", &self.ns(i), "-4", "-o", "addr", "show", "dev", "eth0"],
                )
                .contains(&vip)
            })
            .collect()
    }

    /// A MAC address as `ip` prints it.
    pub fn mac(&self, i: usize) -> String {
        let out = run(
            "ip",
            &["-n", &self.ns(i), "-o", "link", "show", "dev", "eth0"],
        );
        out.split("link/ether ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap()
            .to_owned()
    }

    /// The MAC node `from` has cached for the VIP, if any.
    pub fn neighbour_of_vip(&self, from: usize) -> Option<String> {
        let out = run(
            "ip",
            &[
                "-n",
                &self.ns(from),
                "neigh",
                "show",
                &self.vip().to_string(),
            ],
        );
        out.split("lladdr ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned)
    }

    /// Runs a Python 3 snippet inside node `from` (after checking the lab is up).
    fn python(&self, from: usize, script: &str, args: &[&str]) -> std::process::Output {
        self.assert_up();
        Command::new("ip")
            .args(["netns", "exec", &self.ns(from), "python3", "-c", script])
            .args(args)
            .output()
            .unwrap()
    }

    /// Connects from node `from` to VIP:16443 (the holder's load balancer in front of its
    /// [`greeter`]), sends a line and returns the answer: which node answered, or "" if none did.
    pub fn ask_vip(&self, from: usize) -> String {
        let script = "import socket,sys\n\
            s=socket.create_connection((sys.argv[1],16443),1); s.settimeout(1)\n\
            s.sendall(b'who\\n'); print(s.recv(64).decode().strip())\n";
        let out = self.python(from, script, &[&self.vip().to_string()]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Sends a raw IPv4 datagram (header included, as written) from node `from`.
    pub fn inject(&self, from: usize, dst: Ipv4Addr, datagram: &[u8]) {
        let hex: String = datagram.iter().map(|b| format!("{b:02x}")).collect();
        let script = "import socket,sys\n\
            s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n\
            s.setsockopt(socket.SOL_SOCKET,socket.SO_BINDTODEVICE,b'eth0')\n\
            s.sendto(bytes.fromhex(sys.argv[2]),(sys.argv[1],0))\n";
        let out = self.python(from, script, &[&dst.to_string(), &hex]);
        assert!(
            out.status.success(),
            "inject: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// GET /status of node i's khagent, parsed.
    pub fn status(&self, i: usize) -> Option<Value> {
        self.assert_up();
        let addr = SocketAddr::from((self.addr(i), STATUS_PORT));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /status HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        serde_json::from_str(response.split("\r\n\r\n").nth(1)?).ok()
    }

    /// The `vrrp` part of node i's status.
    pub fn vrrp(&self, i: usize) -> Value {
        self.status(i)
            .map(|s| s["vrrp"].clone())
            .unwrap_or(Value::Null)
    }

    /// Node i's VRRP state (`master`, `backup`…), or "" while unreachable.
    pub fn state(&self, i: usize) -> String {
        self.vrrp(i)["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn counter(&self, i: usize, name: &str) -> u64 {
        self.vrrp(i)["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("node {i}: no counter {name}"))
    }

    /// SIGKILLs every process in node i's namespace: a crash of the whole daemon (keepalived
    /// runs a monitor and a VRRP child; killing only one makes the other react).
    pub fn kill_all(&self, i: usize) {
        let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns(i)])
            .output()
        else {
            return;
        };
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !pids.is_empty() {
            // Stop all first, so none can react to another's death (keepalived's VRRP child
            // gets SIGTERM when its parent dies and would send a priority-0 advert).
            for signal in ["-STOP", "-KILL"] {
                let mut args = vec![signal];
                args.extend(pids.iter().map(String::as_str));
                run_quiet("kill", &args);
            }
        }
    }

    fn teardown(&self) {
        for i in 1..=self.nodes {
            self.kill_all(i);
            run_quiet("ip", &["link", "del", &self.host_veth(i)]);
            run_quiet("ip", &["netns", "del", &self.ns(i)]);
        }
        run_quiet("ip", &["link", "del", &self.bridge()]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A process running inside a lab namespace; SIGKILLed on drop.
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(lab: &Lab, i: usize, name: &str, program: &str, args: &[&str]) -> Proc {
        let log = lab.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(i), program])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            log,
        }
    }

    /// `ip netns exec` execs the program, so this is the program's own pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        run("kill", &[&format!("-{sig}"), &self.pid().to_string()]);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself; returns whether it exited 0.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "process did not exit within {limit:?}; log: {}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP server on 127.0.0.1:6443 inside node i that answers each connection's first message
/// with `node<i>` (clients speak first, as TLS clients of an apiserver do, which the load
/// balancer's deferred accept relies on): the "local apiserver" behind khagent's load balancer
/// and its health checks.
pub fn greeter(lab: &Lab, i: usize) -> Proc {
    let script = "import socket,sys\n\
        s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
        s.bind(('127.0.0.1',6443)); s.listen(64)\n\
        while True:\n    c,_=s.accept(); c.settimeout(1)\n    try: c.recv(64); c.sendall(sys.argv[1].encode()+b'\\n')\n    except OSError: pass\n    c.close()\n";
    let proc = Proc::spawn(
        lab,
        i,
        &format!("greeter-{i}"),
        "python3",
        &["-c", script, &format!("node{i}")],
    );
    wait_for(
        &format!("the greeter on node {i}"),
        Duration::from_secs(5),
        || run("ip", &["netns", "exec", &lab.ns(i), "ss", "-Hltn"]).contains("127.0.0.1:6443"),
    );
    proc
}

/// Starts khagent on node i with priority `priority`; `extra` is appended to its `vrrp:`
/// section and `top` to the file (e.g. `track:`). The LB part is minimal: a loopback listener
/// with one loopback backend.
pub fn khagent(lab: &Lab, i: usize, priority: u8, extra: &str, top: &str) -> Proc {
    let path = write_config(lab, i, priority, extra, top);
    let proc = Proc::spawn(
        lab,
        i,
        &format!("khagent-{i}"),
        env!("CARGO_BIN_EXE_khagent"),
        &["--config", path.to_str().unwrap()],
    );
    let log = proc.log.clone();
    wait_for(
        &format!("khagent on node {i} to serve status ({})", log.display()),
        Duration::from_secs(10),
        || lab.status(i).is_some(),
    );
    proc
}

/// Writes node i's khagent config (see [`khagent`]) and returns its path.
pub fn write_config(lab: &Lab, i: usize, priority: u8, extra: &str, top: &str) -> PathBuf {
    let config = format!(
        "listen: 0.0.0.0:16443\n\
         backends:\n  - name: local\n    address: 127.0.0.1:6443\n\
         health:\n  interval: 100ms\n  timeout: 100ms\n  rise: 1\n  fall: 1\n\
         status:\n  listen: {addr}:{STATUS_PORT}\n  public: true\n\
         {top}\
         vrrp:\n  interface: eth0\n  router_id: {ROUTER_ID}\n  priority: {priority}\n  vip: {vip}\n\
         \x20 state_dir: {state}\n{extra}",
        addr = lab.addr(i),
        vip = lab.vip(),
        state = lab.state_dir(i).display(),
    );
    let path = lab.dir.join(format!("khagent-{i}.yaml"));
    std::fs::write(&path, config).unwrap();
    path
}

/// Starts Debian's keepalived on node i (VRRPv3, same VRID, VIP and interval as khagent).
pub fn keepalived(lab: &Lab, i: usize, priority: u8, advert_int: &str) -> Proc {
    let conf = format!(
        "global_defs {{\n  router_id node{i}\n  vrrp_version 3\n  script_user root\n}}\n\
         vrrp_instance VI {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {ROUTER_ID}\n  \
         priority {priority}\n  advert_int {advert_int}\n  virtual_ipaddress {{\n    {vip}/32\n  }}\n}}\n",
        vip = lab.vip()
    );
    let dir = lab.dir.join(format!("keepalived-{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf_path = dir.join("keepalived.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let (pid, vrrp_pid) = (dir.join("k.pid"), dir.join("v.pid"));
    // A SIGKILLed keepalived leaves pid files naming processes that may still be unreaped
    // zombies, and then refuses to start ("daemon is already running").
    let _ = std::fs::remove_file(&pid);
    let _ = std::fs::remove_file(&vrrp_pid);
    Proc::spawn(
        lab,
        i,
        &format!("keepalived-{i}"),
        "keepalived",
        &[
            "-n",
            "-l",
            "-D",
            "-f",
            conf_path.to_str().unwrap(),
            "-p",
            pid.to_str().unwrap(),
            "-r",
            vrrp_pid.to_str().unwrap(),
        ],
    )
}

/// One VRRP advert as it crossed the lab's bridge.
#[derive(Clone, Copy, Debug)]
pub struct Advert {
    /// The kernel's receive timestamp on the bridge (wall clock).
    pub at: SystemTime,
    pub src: Ipv4Addr,
    pub priority: u8,
}

/// Every VRRP advert on the lab's bridge, timestamped by the kernel as it crossed it
/// (tcpdump in the root namespace, on the lab's own bridge, whose only ports are the lab's
/// veths). The agents' timing is read from these, not from samples taken by forking `ip`.
pub struct AdvertCapture {
    child: Child,
    log: PathBuf,
}

impl AdvertCapture {
    /// Starts capturing and returns once the first advert has been captured.
    pub fn start(lab: &Lab) -> AdvertCapture {
        lab.assert_up();
        let log = lab.dir.join("adverts.txt");
        let err = lab.dir.join("adverts.err");
        let child = Command::new("tcpdump")
            .args(["-i", &lab.bridge(), "-nn", "-tt", "-l", "--immediate-mode"])
            .args(["--time-stamp-precision=micro", "ip", "proto", "112"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let capture = AdvertCapture { child, log };
        wait_for(
            &format!("tcpdump to capture an advert ({})", err.display()),
            Duration::from_secs(5),
            || !capture.adverts().is_empty(),
        );
        capture
    }

    /// The adverts captured so far, in order.
    pub fn adverts(&self) -> Vec<Advert> {
        // 1733362812.123456 IP 10.98.91.2 > 224.0.0.18: VRRPv3, Advertisement, vrid 51, prio 150, …
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let at: f64 = words.next()?.parse().ok()?;
                let src = words.nth(1)?.parse().ok()?;
                let priority = line
                    .split("prio ")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some(Advert {
                    at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(at),
                    src,
                    priority,
                })
            })
            .collect()
    }

    /// The last advert from `src` before `before`.
    pub fn last_from(&self, src: Ipv4Addr, before: SystemTime) -> Advert {
        *self
            .adverts()
            .iter()
            .rev()
            .find(|a| a.src == src && a.at < before)
            .unwrap_or_else(|| panic!("no advert from {src} before {before:?}"))
    }

    /// The first advert from `src` after `after`.
    pub fn first_from(&self, src: Ipv4Addr, after: SystemTime) -> Advert {
        *self
            .adverts()
            .iter()
            .find(|a| a.src == src && a.at > after)
            .unwrap_or_else(|| panic!("no advert from {src} after {after:?}"))
    }
}

impl Drop for AdvertCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Address changes in node i's namespace (`ip monitor address`), each stamped with the wall
/// clock as it was read: one long-lived process, not a fork per sample.
pub struct AddressMonitor {
    child: Child,
    events: std::sync::Arc<std::sync::Mutex<Vec<(SystemTime, String)>>>,
}

impl AddressMonitor {
    pub fn start(lab: &Lab, i: usize) -> AddressMonitor {
        let mut child = Command::new("ip")
            .args(["-n", &lab.ns(i), "-o", "monitor", "address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&events);
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((SystemTime::now(), line));
            }
        });
        AddressMonitor { child, events }
    }

    /// When `address` was first seen deleted from the namespace.
    pub fn deleted(&self, address: Ipv4Addr) -> Option<SystemTime> {
        let needle = format!(" inet {address}/");
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.starts_with("Deleted") && l.contains(&needle))
            .map(|(at, _)| *at)
    }
}

impl Drop for AddressMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
