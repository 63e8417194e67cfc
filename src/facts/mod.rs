//! Facts gathered from hosts (OS, init system, architecture, modules, current sysctls,
//! managed files), kept apart from the inventory, which says only what the user asked
//! for. One read-only probe per node gathers them in a single round trip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ipnet::Ipv4Net;

use crate::remote::{NodeHandle, RemoteCommand, RemoteError};

mod rhel;

pub use rhel::{Firewalld, SelinuxMode};

const PROBE: &str = include_str!("probe.sh");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitSystem {
    Systemd,
    OpenRc,
    Unknown,
}

/// The digest the probe reports (`sha256sum`'s lowercase hex) for a file holding `contents`.
pub fn sha256_hex(contents: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(contents)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A remote file's digest and mode, for files whose content must not be read back (keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub sha256: String,
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub struct HostFacts {
    pub os_id: String,
    pub os_version: String,
    pub arch: String,
    pub init: InitSystem,
    pub uid: Option<u32>,
    pub swap_active: u32,
    pub can_modprobe: bool,
    /// Kernel features by module name: present (built in or loaded) or not.
    pub modules: BTreeMap<String, bool>,
    pub addresses: Vec<(String, Ipv4Net)>,
    /// Current value of each asked-for sysctl, by its path under /proc/sys
    /// ([`crate::inventory::SysctlKey::path`]); `None` when the key does not exist.
    pub sysctls: BTreeMap<String, Option<String>>,
    /// Content of each asked-for text file (`None` when absent), and of every `*.conf` file
    /// in each asked-for directory.
    pub files: BTreeMap<PathBuf, Option<Vec<u8>>>,
    pub digests: BTreeMap<PathBuf, Option<FileDigest>>,
    /// `hostname` as the node reports it.
    pub hostname: String,
    /// `/etc/machine-id`, when there is one.
    pub machine_id: Option<String>,
    /// The node's clock minus ours as the probe's answer arrived, in seconds (the node reads
    /// it last: the one-way delay is the error); `None` when unknown.
    pub clock_skew: Option<f64>,
    /// The version line each asked-for tool prints; `None` when the tool is not installed.
    pub versions: BTreeMap<String, Option<String>>,
    /// Whether anything listens on each asked-for TCP port (any address, IPv4 or IPv6).
    pub listening: BTreeMap<u16, bool>,
    /// Each asked-for directory: absent, empty, or holding something.
    pub dirs: BTreeMap<PathBuf, DirState>,
    /// Each asked-for path that must be a Unix socket (a container runtime's).
    pub sockets: BTreeMap<PathBuf, bool>,
    /// Each asked-for kubeconfig's server URL (`None`: no such file, or no server line).
    pub kubeconfig_servers: BTreeMap<PathBuf, Option<String>>,
    /// SELinux's mode now (RHEL family; `Absent` elsewhere).
    pub selinux: SelinuxMode,
    /// firewalld, when it is installed.
    pub firewalld: Option<Firewalld>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    Absent,
    Empty,
    NotEmpty,
}

/// What to read besides the fixed facts. Each phase states what it reads; the runner merges
/// the requests of a command's phases into one probe per node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeRequest {
    /// Paths under /proc/sys.
    pub sysctls: Vec<String>,
    pub files: Vec<PathBuf>,
    /// Directories whose `*.conf` files are read (sysctl.d), into [`HostFacts::files`].
    pub conf_dirs: Vec<PathBuf>,
    pub digests: Vec<PathBuf>,
    /// Tools whose version to read (`kubeadm`, `kubelet`, `kubectl`, `curl`).
    pub versions: Vec<String>,
    pub ports: Vec<u16>,
    pub dirs: Vec<PathBuf>,
    pub sockets: Vec<PathBuf>,
    /// Kubeconfigs whose server URL to read (only that line: they may hold a client key).
    pub kubeconfig_servers: Vec<PathBuf>,
}

impl ProbeRequest {
    /// Adds what `other` asks for, each item once, in first-asked order.
    pub fn merge(&mut self, other: ProbeRequest) {
        fn add<T: PartialEq>(into: &mut Vec<T>, items: Vec<T>) {
            for i in items {
                if !into.contains(&i) {
                    into.push(i);
                }
            }
        }
        add(&mut self.sysctls, other.sysctls);
        add(&mut self.files, other.files);
        add(&mut self.conf_dirs, other.conf_dirs);
        add(&mut self.digests, other.digests);
        add(&mut self.versions, other.versions);
        add(&mut self.ports, other.ports);
        add(&mut self.dirs, other.dirs);
        add(&mut self.sockets, other.sockets);
        add(&mut self.kubeconfig_servers, other.kubeconfig_servers);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{node}: unexpected probe output line {line:?}")]
    Parse { node: String, line: String },
}

impl HostFacts {
    pub async fn gather(host: &NodeHandle, req: &ProbeRequest) -> Result<Self, FactsError> {
        let mut args = Vec::new();
        args.extend(req.sysctls.iter().map(|k| format!("sysctl:{k}")));
        args.extend(req.files.iter().map(|p| format!("file:{}", p.display())));
        args.extend(
            req.conf_dirs
                .iter()
                .map(|p| format!("conf:{}", p.display())),
        );
        args.extend(req.digests.iter().map(|p| format!("hash:{}", p.display())));
        args.extend(req.versions.iter().map(|t| format!("version:{t}")));
        args.extend(req.ports.iter().map(|p| format!("port:{p}")));
        args.extend(req.dirs.iter().map(|p| format!("dir:{}", p.display())));
        args.extend(
            req.sockets
                .iter()
                .map(|p| format!("socket:{}", p.display())),
        );
        args.extend(
            req.kubeconfig_servers
                .iter()
                .map(|p| format!("server:{}", p.display())),
        );
        let cmd = RemoteCommand::script("khactl-probe", PROBE, args).read_only();
        let sent = std::time::SystemTime::now();
        let out = host.run(&cmd).await?;
        let received = std::time::SystemTime::now();
        let mut facts = parse(host.node(), &out.stdout_str(), req)?;
        // The probe reads the clock last, so compare with the arrival; a round trip long
        // enough to blur a second makes the reading worthless instead.
        let round_trip = received.duration_since(sent).unwrap_or_default();
        facts.clock_skew = match (facts.clock_skew, seconds(received)) {
            (Some(node), Some(ours)) if round_trip.as_secs_f64() < 0.5 => Some(node - ours),
            _ => None,
        };
        Ok(facts)
    }

    /// The version line of `tool`, when it is installed.
    pub fn version(&self, tool: &str) -> Option<&str> {
        self.versions.get(tool).and_then(|v| v.as_deref())
    }

    /// The server URL of a kubeconfig asked for in [`ProbeRequest::kubeconfig_servers`].
    pub fn kubeconfig_server(&self, path: &Path) -> Option<&str> {
        self.kubeconfig_servers.get(path).and_then(|s| s.as_deref())
    }

    pub fn has_tool(&self, tool: &str) -> bool {
        self.version(tool).is_some()
    }

    pub fn sysctl(&self, key: &str) -> Option<&str> {
        self.sysctls.get(key).and_then(|v| v.as_deref())
    }

    pub fn file(&self, path: &Path) -> Option<&[u8]> {
        self.files.get(path).and_then(|v| v.as_deref())
    }

    /// The `*.conf` files read from `dir` (a [`ProbeRequest::conf_dirs`] entry), by path.
    pub fn conf_files<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = (&'a Path, &'a [u8])> {
        self.files.iter().filter_map(move |(path, content)| {
            let content = content.as_deref()?;
            (path.parent() == Some(dir) && path.extension().is_some_and(|e| e == "conf"))
                .then_some((path.as_path(), content))
        })
    }

    pub fn digest(&self, path: &Path) -> Option<&FileDigest> {
        self.digests.get(path).and_then(Option::as_ref)
    }

    /// What is known of a host before any probe line was read: nothing.
    pub fn unprobed() -> HostFacts {
        HostFacts {
            os_id: "unknown".into(),
            os_version: "unknown".into(),
            arch: "unknown".into(),
            init: InitSystem::Unknown,
            uid: None,
            swap_active: 0,
            can_modprobe: false,
            modules: BTreeMap::new(),
            addresses: Vec::new(),
            sysctls: BTreeMap::new(),
            files: BTreeMap::new(),
            digests: BTreeMap::new(),
            hostname: String::new(),
            machine_id: None,
            clock_skew: None,
            versions: BTreeMap::new(),
            listening: BTreeMap::new(),
            dirs: BTreeMap::new(),
            sockets: BTreeMap::new(),
            kubeconfig_servers: BTreeMap::new(),
            selinux: SelinuxMode::Absent,
            firewalld: None,
        }
    }

    pub fn has_module(&self, name: &str) -> bool {
        self.modules.get(name).copied().unwrap_or(false)
    }
}

fn parse(node: &str, text: &str, req: &ProbeRequest) -> Result<HostFacts, FactsError> {
    let bad = |line: &str| FactsError::Parse {
        node: node.to_owned(),
        line: line.to_owned(),
    };
    let mut f = HostFacts::unprobed();
    let mut sums = BTreeMap::new();
    let mut modes = BTreeMap::new();
    for line in text.lines() {
        let (kind, rest) = line.split_once(' ').ok_or_else(|| bad(line))?;
        match kind {
            "os" | "swap" | "module" | "addr" => {
                let (key, value) = rest.split_once(' ').ok_or_else(|| bad(line))?;
                match (kind, key) {
                    ("os", "id") => f.os_id = value.to_owned(),
                    ("os", "version") => f.os_version = value.to_owned(),
                    ("os", "arch") => f.arch = value.to_owned(),
                    ("os", "uid") => f.uid = value.parse().ok(),
                    ("os", "modprobe") => f.can_modprobe = value == "yes",
                    ("os", "hostname") => value.clone_into(&mut f.hostname),
                    ("os", "machine-id") => f.machine_id = Some(value.to_owned()),
                    // Until `gather` subtracts our own clock, this is the node's.
                    ("os", "clock") => f.clock_skew = value.parse().ok(),
                    ("os", "init") => {
                        f.init = match value {
                            "systemd" => InitSystem::Systemd,
                            "openrc" => InitSystem::OpenRc,
                            _ => InitSystem::Unknown,
                        }
                    }
                    ("swap", "active") => f.swap_active = value.parse().map_err(|_| bad(line))?,
                    ("module", name) => {
                        f.modules.insert(name.to_owned(), value == "present");
                    }
                    ("addr", dev) => {
                        if let Ok(net) = value.parse() {
                            f.addresses.push((dev.to_owned(), net));
                        }
                    }
                    _ => {}
                }
            }
            // Values may contain spaces (sysctls) and paths may too: match on the
            // requested names instead of splitting blindly.
            "sysctl" => {
                let key = req
                    .sysctls
                    .iter()
                    .find(|k| rest.starts_with(k.as_str()) && rest[k.len()..].starts_with(' '))
                    .ok_or_else(|| bad(line))?;
                let value = &rest[key.len() + 1..];
                f.sysctls
                    .insert(key.clone(), (value != "-").then(|| value.to_owned()));
            }
            "file" => {
                let (path, value) = rest.rsplit_once(' ').ok_or_else(|| bad(line))?;
                let content = match value.strip_prefix('=') {
                    Some(b64) => Some(STANDARD.decode(b64).map_err(|_| bad(line))?),
                    None => None,
                };
                f.files.insert(PathBuf::from(path), content);
            }
            "version" => {
                let (tool, value) = rest.split_once(' ').ok_or_else(|| bad(line))?;
                f.versions
                    .insert(tool.to_owned(), (value != "-").then(|| value.to_owned()));
            }
            "port" => {
                let (port, state) = rest.split_once(' ').ok_or_else(|| bad(line))?;
                let port = port.parse().map_err(|_| bad(line))?;
                f.listening.insert(port, state == "listen");
            }
            "dir" => {
                let (path, state) = rest.rsplit_once(' ').ok_or_else(|| bad(line))?;
                let state = match state {
                    "absent" => DirState::Absent,
                    "empty" => DirState::Empty,
                    "full" => DirState::NotEmpty,
                    _ => return Err(bad(line)),
                };
                f.dirs.insert(PathBuf::from(path), state);
            }
            "socket" => {
                let (path, state) = rest.rsplit_once(' ').ok_or_else(|| bad(line))?;
                f.sockets.insert(PathBuf::from(path), state == "yes");
            }
            "server" => {
                let (path, url) = rest.rsplit_once(' ').ok_or_else(|| bad(line))?;
                let url = (url != "-").then(|| url.to_owned());
                f.kubeconfig_servers.insert(PathBuf::from(path), url);
            }
            "selinux" | "firewalld" => {
                rhel::parse_line(kind, rest, &mut f.selinux, &mut f.firewalld)
                    .map_err(|()| bad(line))?;
            }
            "hash" => {
                let (path, _) = rest.rsplit_once(' ').ok_or_else(|| bad(line))?;
                f.digests.insert(PathBuf::from(path), None);
            }
            "sum" => {
                let (sha, path) = rest.split_once("  ").ok_or_else(|| bad(line))?;
                sums.insert(PathBuf::from(path), sha.to_owned());
            }
            "mode" => {
                let (mode, path) = rest.split_once(' ').ok_or_else(|| bad(line))?;
                let mode = u32::from_str_radix(mode, 8).map_err(|_| bad(line))?;
                modes.insert(PathBuf::from(path), mode);
            }
            _ => return Err(bad(line)),
        }
    }
    for (path, sha256) in sums {
        let mode = *modes
            .get(&path)
            .ok_or_else(|| bad(&format!("no mode for {}", path.display())))?;
        f.digests.insert(path, Some(FileDigest { sha256, mode }));
    }
    Ok(f)
}

/// Seconds since the epoch.
fn seconds(t: std::time::SystemTime) -> Option<f64> {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

impl std::fmt::Display for InitSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InitSystem::Systemd => "systemd",
            InitSystem::OpenRc => "openrc",
            InitSystem::Unknown => "unknown init",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ProbeRequest {
        ProbeRequest {
            sysctls: vec![
                "net.ipv4.ip_forward".into(),
                "net.bridge.bridge-nf-call-iptables".into(),
            ],
            files: vec!["/etc/my file.conf".into(), "/etc/hosts".into()],
            digests: vec![
                "/etc/kubernetes/pki/ca.key".into(),
                "/etc/kubernetes/pki/x.crt".into(),
            ],
            ..ProbeRequest::default()
        }
    }

    #[test]
    fn parses_every_kind_of_fact() {
        let text = "os id debian\nos version 12\nos arch x86_64\nos init systemd\nos uid 0\n\
            swap active 0\nmodule overlay present\nmodule br_netfilter absent\nos modprobe no\n\
            addr eth0 10.200.1.11/24\n\
            sysctl net.ipv4.ip_forward 0\nsysctl net.bridge.bridge-nf-call-iptables -\n\
            file /etc/my file.conf =aGVsbG8gd29ybGQK\nfile /etc/hosts -\n\
            sum abc123  /etc/kubernetes/pki/ca.key\nmode 600 /etc/kubernetes/pki/ca.key\n\
            hash /etc/kubernetes/pki/x.crt -\n";
        let f = parse("cp1", text, &req()).unwrap();
        assert_eq!(f.os_id, "debian");
        assert_eq!(f.init, InitSystem::Systemd);
        assert!(f.has_module("overlay"));
        assert!(!f.has_module("br_netfilter"));
        assert_eq!(f.sysctl("net.ipv4.ip_forward"), Some("0"));
        assert_eq!(f.sysctl("net.bridge.bridge-nf-call-iptables"), None);
        assert_eq!(
            f.file(Path::new("/etc/my file.conf")),
            Some(&b"hello world\n"[..])
        );
        assert_eq!(f.file(Path::new("/etc/hosts")), None);
        let d = f.digest(Path::new("/etc/kubernetes/pki/ca.key")).unwrap();
        assert_eq!((d.sha256.as_str(), d.mode), ("abc123", 0o600));
        assert!(f.digest(Path::new("/etc/kubernetes/pki/x.crt")).is_none());
        assert_eq!(f.addresses[0].1.prefix_len(), 24);
    }

    #[test]
    fn parses_tools_ports_dirs_sockets_and_identity() {
        let text = "os hostname cp1\nos machine-id 0123abcd\nos clock 1700000000.5\n\
            version kubeadm v1.31.2\nversion kubelet Kubernetes v1.31.2\nversion kubectl -\n\
            port 6443 listen\nport 2379 free\n\
            dir /var/lib/etcd empty\ndir /var/lib/my dir full\ndir /x absent\n\
            socket /run/containerd/containerd.sock yes\n";
        let f = parse("cp1", text, &req()).unwrap();
        assert_eq!(
            (f.hostname.as_str(), f.machine_id.as_deref()),
            ("cp1", Some("0123abcd"))
        );
        assert_eq!(f.clock_skew, Some(1_700_000_000.5));
        assert_eq!(f.version("kubeadm"), Some("v1.31.2"));
        assert_eq!(f.version("kubelet"), Some("Kubernetes v1.31.2"));
        assert!(!f.has_tool("kubectl"));
        assert_eq!((f.listening[&6443], f.listening[&2379]), (true, false));
        assert_eq!(f.dirs[Path::new("/var/lib/etcd")], DirState::Empty);
        assert_eq!(f.dirs[Path::new("/var/lib/my dir")], DirState::NotEmpty);
        assert_eq!(f.dirs[Path::new("/x")], DirState::Absent);
        assert!(f.sockets[Path::new("/run/containerd/containerd.sock")]);
    }

    /// Runs the probe script here, as a node would, with `args`.
    fn probe_here(args: &[String]) -> String {
        probe_with_tools(args, None)
    }

    /// [`probe_here`] with `tools` first on PATH (stand-ins for a node's own commands).
    pub(super) fn probe_with_tools(args: &[String], tools: Option<&Path>) -> String {
        let mut command = std::process::Command::new("/bin/sh");
        command.args(["-c", PROBE, "khactl-probe"]).args(args);
        if let Some(dir) = tools {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", dir.display()));
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn the_probe_tells_a_listening_port_from_a_free_one_and_reads_directories() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("member"), "x").unwrap();
        let request = ProbeRequest {
            ports: vec![open, free],
            dirs: vec![empty.clone(), full.clone(), dir.path().join("absent")],
            versions: vec!["sh".into(), "no-such-tool-here".into()],
            ..ProbeRequest::default()
        };
        let mut args: Vec<String> = request.ports.iter().map(|p| format!("port:{p}")).collect();
        args.extend(request.dirs.iter().map(|d| format!("dir:{}", d.display())));
        args.extend(request.versions.iter().map(|t| format!("version:{t}")));
        let f = parse("here", &probe_here(&args), &request).unwrap();
        assert!(f.listening[&open], "{open} listens");
        assert!(!f.listening[&free], "{free} is free");
        assert_eq!(f.dirs[&empty], DirState::Empty);
        assert_eq!(f.dirs[&full], DirState::NotEmpty);
        assert_eq!(f.dirs[&dir.path().join("absent")], DirState::Absent);
        assert!(f.has_tool("sh"));
        assert!(!f.has_tool("no-such-tool-here"));
        assert!(f.clock_skew.is_some() && !f.hostname.is_empty());
    }

    /// Only the server line leaves the node: a kubeconfig may embed a client key.
    #[test]
    fn the_probe_reads_a_kubeconfigs_server_and_nothing_else_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("kubelet.conf");
        std::fs::write(
            &conf,
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    \
             server: https://10.0.0.100:8443\n  name: k\nusers:\n- user:\n    \
             client-key-data: U0VDUkVU\n",
        )
        .unwrap();
        let absent = dir.path().join("absent.conf");
        let request = ProbeRequest {
            kubeconfig_servers: vec![conf.clone(), absent.clone()],
            ..ProbeRequest::default()
        };
        let args: Vec<String> = request
            .kubeconfig_servers
            .iter()
            .map(|p| format!("server:{}", p.display()))
            .collect();
        let out = probe_here(&args);
        assert!(!out.contains("U0VDUkVU"), "the key left the node: {out}");
        let f = parse("here", &out, &request).unwrap();
        assert_eq!(f.kubeconfig_server(&conf), Some("https://10.0.0.100:8443"));
        assert_eq!(f.kubeconfig_server(&absent), None);
    }

    #[test]
    fn conf_files_are_those_read_from_the_directory() {
        let text = "file /etc/sysctl.d/10-a.conf =YQ==\nfile /etc/sysctl.d/b.txt =Yg==\n\
                    file /etc/hosts -\nfile /usr/lib/sysctl.d/x.conf =eA==\n";
        let f = parse("n", text, &req()).unwrap();
        let dir = Path::new("/etc/sysctl.d");
        let found: Vec<_> = f.conf_files(dir).collect();
        assert_eq!(found, [(Path::new("/etc/sysctl.d/10-a.conf"), &b"a"[..])]);
    }

    #[test]
    fn empty_file_is_present_and_empty() {
        let f = parse("n", "file /etc/hosts =\n", &req()).unwrap();
        assert_eq!(f.file(Path::new("/etc/hosts")), Some(&b""[..]));
    }

    #[test]
    fn garbage_is_an_error_naming_the_node() {
        let err = parse("cp2", "what is this\n", &req()).unwrap_err();
        assert!(err.to_string().starts_with("cp2:"), "{err}");
    }

    #[test]
    fn file_contents_arrive_as_coreutils_base64_of_any_length() {
        for (b64, want) in [("", ""), ("YQ==", "a"), ("YWI=", "ab"), ("YWJj", "abc")] {
            let f = parse("n", &format!("file /etc/hosts ={b64}\n"), &req()).unwrap();
            assert_eq!(f.file(Path::new("/etc/hosts")), Some(want.as_bytes()));
        }
        assert!(parse("n", "file /etc/hosts =a$==\n", &req()).is_err());
    }
}
