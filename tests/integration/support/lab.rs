//! [`Lab`]: real nodes on this machine (network namespaces, overlay roots, systemd as PID 1 — or
//! OpenRC for nodes named in [`LabOptions::openrc`] — real sshd), built and torn down by `tests/lab/lab.sh` (see `docs/lab.md`). A `Lab` value owns its
//! lab: dropping it runs `lab.sh down`.
//!
//! Network safety: nothing may be sent to a lab address unless the lab's bridge is up with its
//! connected route, otherwise the packet would follow the default route off the machine. Every
//! helper here that contacts a node address checks [`Lab::bridge_up`] first; tests that open
//! their own connections must call [`Lab::assert_up`] before doing so.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};

pub use super::claim::{KHALAB_ROOT, LabClaim};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    ControlPlane,
    Worker,
}

/// The node's PID 1 and service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeInit {
    /// Debian's systemd (`systemctl`, the journal); the default.
    Systemd,
    /// Debian's OpenRC: `/sbin/openrc-init`, `rc-service`, `rc-update`, `supervise-daemon`
    /// (`lab.sh up --openrc`, see `docs/lab.md`).
    OpenRc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNode {
    pub name: String,
    pub address: Ipv4Addr,
    pub role: NodeRole,
    pub init: NodeInit,
}

impl LabNode {
    pub fn is_openrc(&self) -> bool {
        self.init == NodeInit::OpenRc
    }
}

/// How [`Lab::up_with`] builds a lab beyond its shape. `LabOptions::default()` is a bare lab
/// of systemd nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LabOptions<'a> {
    /// `lab.sh up --setup SCRIPT`: before each node boots, `SCRIPT ROOT NODE ROLE` installs
    /// what the node should have as if it came with the OS into `ROOT`, a layer below the upper
    /// dir (see `docs/lab.md`).
    pub setup: Option<&'a Path>,
    /// `lab.sh up --openrc`: the nodes that boot OpenRC instead of systemd.
    pub openrc: &'a [&'a str],
}

/// A running lab. Built by [`Lab::up`], torn down on drop.
#[derive(Debug)]
pub struct Lab {
    name: String,
    index: u8,
    nodes: Vec<LabNode>,
    // Dropped after `Drop::drop` has torn the lab down: only then may the index be reused.
    _claim: LabClaim,
}

impl Lab {
    /// Builds lab `name` on subnet `10.200.<index>.0/24` with nodes `cp1..cpN` then `w1..wM`,
    /// and returns once every node's init has finished booting and its sshd accepts connections.
    /// Every node has the lab's stand-in control plane installed (`tests/standin/`: kubeadm,
    /// kubelet and a CRI socket, as the packages would put them), so `khactl up` runs to the
    /// end. Take `index` from [`super::indexes`]. Panics with lab.sh's output if the lab cannot
    /// be built.
    pub fn up(name: &str, index: u8, control_planes: usize, workers: usize) -> Lab {
        let standin = super::repo_root().join("tests/lab/with-standin.sh");
        Lab::up_with_setup(name, index, control_planes, workers, Some(&standin))
    }

    /// [`Lab::up`] without the stand-in control plane: bare Debian nodes.
    pub fn bare(name: &str, index: u8, control_planes: usize, workers: usize) -> Lab {
        Lab::up_with_setup(name, index, control_planes, workers, None)
    }

    /// [`Lab::up`] with `lab.sh up --setup SCRIPT`: before each node boots, `SCRIPT ROOT NODE
    /// ROLE` installs what the node should have as if it came with the OS (binaries, units to
    /// start at boot) into `ROOT`, a layer below the upper dir (see `docs/lab.md`).
    pub fn up_with_setup(
        name: &str,
        index: u8,
        control_planes: usize,
        workers: usize,
        setup: Option<&Path>,
    ) -> Lab {
        Lab::up_with(
            name,
            index,
            control_planes,
            workers,
            LabOptions {
                setup,
                ..LabOptions::default()
            },
        )
    }

    /// [`Lab::up`] with every option of `lab.sh up`: a setup script and nodes that boot
    /// OpenRC (for instance dedicated load-balancer nodes, as Alpine machines would be).
    /// Panics if `options.openrc` names a node the lab does not have.
    pub fn up_with(
        name: &str,
        index: u8,
        control_planes: usize,
        workers: usize,
        options: LabOptions<'_>,
    ) -> Lab {
        super::require_root();
        let names: Vec<(String, NodeRole)> = (1..=control_planes)
            .map(|i| (format!("cp{i}"), NodeRole::ControlPlane))
            .chain((1..=workers).map(|i| (format!("w{i}"), NodeRole::Worker)))
            .collect();
        for node in options.openrc {
            assert!(
                names.iter().any(|(n, _)| n == node),
                "LabOptions::openrc names {node:?}, which lab {name} does not have"
            );
        }
        let claim = LabClaim::acquire(name, index);
        // A lab of this name left behind by an earlier, killed test run would make `up` refuse;
        // with the claim held, no live test owns it.
        run_ok(
            lab_sh().args(["down", name]),
            &format!("lab.sh down {name} (stale lab)"),
        );
        let mut up = lab_sh();
        up.args([
            "up",
            name,
            "--index",
            &index.to_string(),
            "--control-planes",
            &control_planes.to_string(),
            "--workers",
            &workers.to_string(),
        ]);
        if let Some(script) = options.setup {
            up.arg("--setup").arg(script);
        }
        if !options.openrc.is_empty() {
            up.arg("--openrc").arg(options.openrc.join(","));
        }
        run_ok(&mut up, &format!("lab.sh up {name}"));
        let nodes = names
            .into_iter()
            .zip(11u8..)
            .map(|((name, role), host)| LabNode {
                init: if options.openrc.contains(&name.as_str()) {
                    NodeInit::OpenRc
                } else {
                    NodeInit::Systemd
                },
                name,
                address: Ipv4Addr::new(10, 200, index, host),
                role,
            })
            .collect();
        let lab = Lab {
            name: name.to_owned(),
            index,
            nodes,
            _claim: claim,
        };
        lab.assert_up();
        lab
    }

    /// A lab shared by the tests that ask for the same `name` while any of them holds it: the
    /// first caller builds it, the last one to drop its `Arc` tears it down. Only for tests
    /// that leave the lab as they found it (no sshd stops, no host-key changes).
    pub fn shared(name: &str, index: u8, control_planes: usize, workers: usize) -> Arc<Lab> {
        static SHARED: Mutex<BTreeMap<String, Weak<Lab>>> = Mutex::new(BTreeMap::new());
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lab) = shared.get(name).and_then(Weak::upgrade) {
            return lab;
        }
        let lab = Arc::new(Lab::up(name, index, control_planes, workers));
        shared.insert(name.to_owned(), Arc::downgrade(&lab));
        lab
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn index(&self) -> u8 {
        self.index
    }

    /// All nodes, control planes first, in address order.
    pub fn nodes(&self) -> &[LabNode] {
        &self.nodes
    }

    pub fn node(&self, node: &str) -> &LabNode {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .unwrap_or_else(|| panic!("lab {} has no node {node:?}", self.name))
    }

    pub fn node_address(&self, node: &str) -> Ipv4Addr {
        self.node(node).address
    }

    /// The lab inventory's virtual IP (`10.200.<index>.100`); no node holds it at start.
    pub fn vip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.index, 100)
    }

    /// The bridge's own address in the lab subnet (the root namespace's side).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.index, 1)
    }

    pub fn bridge_name(&self) -> String {
        format!("khl{}br", self.index)
    }

    pub fn dir(&self) -> PathBuf {
        Path::new(KHALAB_ROOT).join(&self.name)
    }

    /// The lab's inventory, as `lab.sh inventory` prints it, written by `lab.sh up`.
    pub fn inventory_path(&self) -> PathBuf {
        self.dir().join("inventory.yaml")
    }

    /// The lab's client key, authorised for root on every node (mode 0600).
    pub fn ssh_key_path(&self) -> PathBuf {
        self.dir().join("ssh/id_ed25519")
    }

    /// The node's overlay upper dir: exactly the files created, changed or deleted in the node
    /// since it booted (the lab's own files live in a layer below it).
    pub fn upper_dir(&self, node: &str) -> PathBuf {
        self.node(node);
        self.dir().join(node).join("upper")
    }

    /// Every non-directory entry of the node's upper dir, as absolute paths inside the node:
    /// files written, symlinks made, and whiteouts (files deleted). Booting and `sshd` logins
    /// write nothing there.
    pub fn changed_paths(&self, node: &str) -> BTreeSet<PathBuf> {
        let upper = self.upper_dir(node);
        let mut found = BTreeSet::new();
        let mut stack = vec![upper.clone()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
            for entry in entries {
                let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
                let kind = entry.file_type().expect("file type of an upper-dir entry");
                if kind.is_dir() {
                    stack.push(entry.path());
                } else {
                    let rel = entry
                        .path()
                        .strip_prefix(&upper)
                        .expect("under upper")
                        .to_owned();
                    found.insert(Path::new("/").join(rel));
                }
            }
        }
        found
    }

    /// The host pid of the node's PID 1 (systemd or openrc-init), if the node is running.
    pub fn node_pid(&self, node: &str) -> Option<u32> {
        self.node(node);
        let pid: u32 = std::fs::read_to_string(self.dir().join(node).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // A stale pid file could name a reused pid: the node's PID 1 is in the node's netns.
        let netns = std::fs::metadata(format!("/run/netns/khl_{}_{node}", self.name)).ok()?;
        let its = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
        (netns.ino() == its.ino() && netns.dev() == its.dev()).then_some(pid)
    }

    /// The bridge exists, is administratively up and the root namespace has the lab subnet's
    /// connected route through it: packets to lab addresses stay on this machine.
    pub fn bridge_up(&self) -> bool {
        let flags = std::fs::read_to_string(format!("/sys/class/net/{}/flags", self.bridge_name()));
        let Some(flags) = flags
            .ok()
            .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        else {
            return false;
        };
        flags & 1 == 1 && has_connected_route(&self.bridge_name(), [10, 200, self.index, 0])
    }

    /// Bridge up and every node's PID 1 alive.
    pub fn is_up(&self) -> bool {
        self.bridge_up() && self.nodes.iter().all(|n| self.node_pid(&n.name).is_some())
    }

    /// Panics unless [`Lab::is_up`]: call before contacting a lab address yourself.
    pub fn assert_up(&self) {
        assert!(
            self.is_up(),
            "lab {} is not up (bridge or a node is down): refusing to contact its addresses; \
             see `tests/lab/lab.sh status {}`",
            self.name,
            self.name
        );
    }

    /// Runs `argv` inside the node (its cgroup and its network, mount, UTS, IPC, PID and cgroup
    /// namespaces) with a clean environment and no stdin. Does not judge the exit status: that
    /// is the caller's. Output is collected until every holder of stdout/stderr exits: a
    /// daemon started here must redirect its stdio (`systemctl start` does), or the call waits
    /// for the daemon.
    pub fn exec<S: AsRef<OsStr>>(&self, node: &str, argv: &[S]) -> Output {
        self.exec_with_input(node, argv, &[])
    }

    /// [`Lab::exec`] with `input` on the command's stdin.
    pub fn exec_with_input<S: AsRef<OsStr>>(&self, node: &str, argv: &[S], input: &[u8]) -> Output {
        self.node(node);
        let mut cmd = lab_sh();
        cmd.args(["exec", &self.name, node, "--"]).args(argv);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning lab.sh exec");
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A command that never reads its stdin closes the pipe: that is not the test's failure.
        let _ignored_epipe = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().expect("waiting for lab.sh exec")
    }

    /// Runs `argv` in the node and panics (with its output) unless it exits 0; returns stdout.
    pub fn exec_ok<S: AsRef<OsStr>>(&self, node: &str, argv: &[S]) -> String {
        let out = self.exec(node, argv);
        assert!(
            out.status.success(),
            "{:?} in {}/{node} failed ({}):\nstdout: {}\nstderr: {}",
            argv.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>(),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// The file's content as the node sees it, or `None` if it does not exist there.
    pub fn read_file(&self, node: &str, path: &str) -> Option<String> {
        let out = self.exec(
            node,
            &[
                "sh",
                "-c",
                r#"if [ -e "$1" ]; then exec cat -- "$1"; else exit 3; fi"#,
                "read_file",
                path,
            ],
        );
        match out.status.code() {
            Some(0) => Some(String::from_utf8(out.stdout).expect("utf-8 file content")),
            Some(3) => None,
            _ => panic!(
                "reading {path} in {}/{node}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Writes `content` to `path` inside the node (parent directories must exist).
    pub fn write_file(&self, node: &str, path: &str, content: &str) {
        let out = self.exec_with_input(
            node,
            &["sh", "-c", r#"cat > "$1""#, "write_file", path],
            content.as_bytes(),
        );
        assert!(
            out.status.success(),
            "writing {path} in {}/{node}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether the node boots OpenRC rather than systemd.
    pub fn is_openrc(&self, node: &str) -> bool {
        self.node(node).is_openrc()
    }

    /// What the node knows of a service since it booted. systemd: its journal, one message a
    /// line. OpenRC (`unit` with or without `.service`): `rc-service NAME status`, then the
    /// files its script (or `/etc/conf.d/NAME`) names as `output_log` and `error_log`, each
    /// after a `== PATH` line. (supervise-daemon's own messages — respawns, crashes — go to
    /// syslog, which OpenRC nodes do not run.)
    pub fn unit_log(&self, node: &str, unit: &str) -> String {
        if !self.is_openrc(node) {
            return self.exec_ok(
                node,
                &["journalctl", "--no-pager", "-b", "-o", "cat", "-u", unit],
            );
        }
        let service = unit.strip_suffix(".service").unwrap_or(unit);
        self.exec_ok(node, &["sh", "-c", OPENRC_SERVICE_LOG, "unit_log", service])
    }

    /// Powers the node off: a clean poweroff (systemd or OpenRC stops every service first), or with
    /// `power_cut` every process of the node SIGKILLed at once. Its files stay for
    /// [`Lab::start_node`].
    pub fn stop_node(&self, node: &str, power_cut: bool) {
        self.node(node);
        let mut cmd = lab_sh();
        cmd.args(["stop", &self.name, node]);
        if power_cut {
            cmd.arg("--power-cut");
        }
        run_ok(&mut cmd, "lab.sh stop");
    }

    /// Boots a stopped node again; returns once its init has booted (systemd `running`, OpenRC
    /// done with its default runlevel, no failed service) and sshd greets.
    pub fn start_node(&self, node: &str) {
        self.node(node);
        run_ok(lab_sh().args(["start", &self.name, node]), "lab.sh start");
    }

    /// Freezes every process of the node (a hung machine), or lets it run on again.
    pub fn set_frozen(&self, node: &str, frozen: bool) {
        self.node(node);
        let verb = if frozen { "freeze" } else { "thaw" };
        run_ok(
            lab_sh().args([verb, &self.name, node]),
            "lab.sh freeze/thaw",
        );
    }

    /// Stops the node's ssh service (`ssh.service`, or OpenRC's `sshd`) and kills every sshd
    /// (listener and sessions): ssh to it is refused.
    pub fn stop_sshd(&self, node: &str) {
        self.node(node);
        run_ok(
            lab_sh().args(["stop-sshd", &self.name, node]),
            "lab.sh stop-sshd",
        );
    }

    /// Starts the node's ssh service and returns once it accepts connections.
    pub fn start_sshd(&self, node: &str) {
        self.node(node);
        run_ok(
            lab_sh().args(["start-sshd", &self.name, node]),
            "lab.sh start-sshd",
        );
    }

    /// Gives the node a new host key and restarts its sshd (for changed-host-key tests).
    pub fn regen_hostkey(&self, node: &str) {
        self.node(node);
        run_ok(
            lab_sh().args(["regen-hostkey", &self.name, node]),
            "lab.sh regen-hostkey",
        );
    }

    /// A system `ssh` command to root@node with the lab key, host keys checked against (and
    /// first-seen keys added to) `known_hosts`; append the remote command. Checks the bridge
    /// is up first (the node itself may be stopped or frozen: that is for the test to see).
    pub fn ssh_command(&self, node: &str, known_hosts: &Path) -> Command {
        assert!(
            self.bridge_up(),
            "lab {}'s bridge is down: refusing to contact its addresses",
            self.name
        );
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(self.ssh_key_path())
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "LogLevel=ERROR",
                "-p",
                "22",
            ])
            .arg(format!("root@{}", self.node_address(node)))
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = lab_sh().args(["down", &self.name]).output();
        let failure = match out {
            Ok(out) if out.status.success() => return,
            Ok(out) => format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => e.to_string(),
        };
        let message = format!("lab.sh down {} failed: {failure}", self.name);
        if std::thread::panicking() {
            // A second panic would abort the test binary and hide the first failure.
            let _best_effort = writeln!(std::io::stderr(), "{message}");
        } else {
            panic!("{message}");
        }
    }
}

/// `sh -c` script for [`Lab::unit_log`] on an OpenRC node (`$1`: the service). The log paths
/// come from sourcing the service's conf.d file and script in a subshell, as openrc-run does
/// before it starts the service.
const OPENRC_SERVICE_LOG: &str = r#"svc=$1
echo "== rc-service $svc status"
rc-service "$svc" status 2>&1
logs=$(
    RC_SVCNAME=$svc SVCNAME=$svc
    { [ ! -r "/etc/conf.d/$svc" ] || . "/etc/conf.d/$svc"; . "/etc/init.d/$svc"; } >/dev/null 2>&1
    printf '%s
' "${output_log:-}" "${error_log:-}" | sort -u
)
for f in $logs; do
    [ -f "$f" ] || continue
    echo "== $f"
    cat "$f"
done
exit 0
"#;

/// `tests/lab/lab.sh` as a command.
pub fn lab_sh() -> Command {
    Command::new(super::repo_root().join("tests/lab/lab.sh"))
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether the root namespace routes `subnet`/24 through `iface` (`/proc/net/route` prints
/// addresses as the hex of the in-memory big-endian word, i.e. little-endian on x86).
fn has_connected_route(iface: &str, subnet: [u8; 4]) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/route") else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| f.get(i).and_then(|v| u32::from_str_radix(v, 16).ok());
        f.first() == Some(&iface)
            && hex(1).map(u32::to_ne_bytes) == Some(subnet)
            && hex(7).map(u32::to_ne_bytes) == Some([255, 255, 255, 0])
            && hex(3).is_some_and(|flags| flags & 1 == 1)
    })
}
