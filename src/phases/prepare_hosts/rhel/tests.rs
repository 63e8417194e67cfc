//! Host preparation on RHEL 9 nodes, which the lab does not have: the phase runs against the
//! recording fake host, whose answers are what RHEL 9's tools print (below). The fake keeps
//! each node's SELinux mode, /etc/selinux/config and firewalld rules, and changes them as the
//! real commands would, so a second run shows whether the first one left the node done.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use crate::phases::{Connect, GatherFacts, Mode, Phase, PrepareHosts};
use crate::remote::fake::{FakeConnector, Record, Responder, output};
use crate::remote::{CommandOutput, RemoteCommand, RemoteError};
use crate::report::{Event, Reporter};
use crate::session::{self, NodeOptions};

// What RHEL 9 prints. `getenforce` (libselinux-utils): one word. `firewall-cmd --state`:
// `running` on stdout and exit 0, or `not running` on stderr and exit 252 (NOT_RUNNING).
// `--list-ports`/`--list-protocols`: one line, items between spaces, empty when none (a fresh
// install's public zone has the services ssh, dhcpv6-client and cockpit, but no ports). Every
// change prints `success`; an item already there adds `Warning: ALREADY_ENABLED: …` on
// stderr and still succeeds. `systemctl disable` lists the links it removed on stderr.
const GETENFORCE_ENFORCING: &str = "Enforcing\n";
const FIREWALLD_RUNNING: &str = "running\n";
const FIREWALLD_NOT_RUNNING: &str = "not running\n";
const FIREWALLD_SUCCESS: &str = "success\n";
const SYSTEMCTL_DISABLE_FIREWALLD: &str = "Removed \"/etc/systemd/system/multi-user.target.wants/\
firewalld.service\".\nRemoved \"/etc/systemd/system/dbus-org.fedoraproject.FirewallD1.service\".\n";
/// /etc/selinux/config of a RHEL 9 install.
const SELINUX_CONFIG_RHEL9: &str = "\
# This file controls the state of SELinux on the system.
# SELINUX= can take one of these three values:
#     enforcing - SELinux security policy is enforced.
#     permissive - SELinux prints warnings instead of enforcing.
#     disabled - No SELinux policy is loaded.
# See also:
# https://docs.fedoraproject.org/en-US/quick-docs/getting-started-with-selinux/#getting-started-with-selinux-selinux-states-and-modes
#
# NOTE: In earlier Fedora kernel builds, SELINUX=disabled would also
# fully disable SELinux during boot. If you need a system with SELinux
# fully disabled instead of SELinux running with no policy loaded, you
# need to pass selinux=0 to the kernel command line. You can use grubby
# to persistently set the bootloader to boot with selinux=0:
#
#    grubby --update-kernel ALL --args selinux=0
#
# To revert back to SELinux enabled:
#
#    grubby --update-kernel ALL --remove-args selinux
#
SELINUX=enforcing
# SELINUXTYPE= can take one of these three values:
#     targeted - Targeted processes are protected,
#     minimum - Modification of targeted policy. Only selected processes are protected.
#     mls - Multi Level Security protection.
SELINUXTYPE=targeted
";

const INVENTORY: &str = "\
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: rhel, kubernetesVersion: v1.31.2 }
vip: { address: 10.0.0.100, port: 16443 }
nodes:
  - { name: cp1, address: 10.0.0.11, role: control-plane }
  - { name: w1, address: 10.0.0.21, role: worker }
";

/// One RHEL 9 node as the fake keeps it.
#[derive(Clone)]
struct Rhel9 {
    getenforce: &'static str,
    selinux_config: Vec<u8>,
    firewalld_running: bool,
    firewalld_enabled: bool,
    /// The permanent rules (`--list-ports`, `--list-protocols`).
    ports: Vec<String>,
    protocols: Vec<String>,
    /// The running firewall's ports (adds without `--permanent`; a `--reload` would make
    /// them the permanent ones).
    runtime_ports: Vec<String>,
    sysctls: BTreeMap<String, String>,
}

impl Rhel9 {
    fn fresh() -> Self {
        Rhel9 {
            getenforce: GETENFORCE_ENFORCING,
            selinux_config: SELINUX_CONFIG_RHEL9.as_bytes().to_vec(),
            firewalld_running: true,
            firewalld_enabled: true,
            ports: Vec::new(),
            protocols: Vec::new(),
            runtime_ports: Vec::new(),
            sysctls: BTreeMap::new(),
        }
    }

    /// The probe's answer, built from what each tool prints, as probe.sh passes it on.
    fn probe(&self, node: &str, cmd: &RemoteCommand) -> String {
        let octet = if node == "cp1" { 11 } else { 21 };
        let mut out = format!(
            "os id rhel\nos version 9.4\nos arch x86_64\nos init systemd\nos uid 0\n\
             swap active 0\nmodule overlay present\nmodule br_netfilter present\nos modprobe no\n\
             addr lo 127.0.0.1/8\naddr eth0 10.0.0.{octet}/24\n\
             selinux getenforce {}",
            self.getenforce
        );
        let state = if self.firewalld_running {
            FIREWALLD_RUNNING
        } else {
            FIREWALLD_NOT_RUNNING
        };
        out.push_str(&format!("firewalld state {state}"));
        let enabled = if self.firewalld_enabled {
            "enabled"
        } else {
            "disabled"
        };
        out.push_str(&format!("firewalld enabled {enabled}\n"));
        if self.firewalld_running {
            out.push_str(&format!("firewalld ports {}\n", self.ports.join(" ")));
            out.push_str(&format!(
                "firewalld protocols {}\n",
                self.protocols.join(" ")
            ));
        }
        for arg in cmd.argv().iter().skip(4) {
            if let Some(key) = arg.strip_prefix("sysctl:") {
                let v = self.sysctls.get(key).map_or("0", String::as_str);
                out.push_str(&format!("sysctl {key} {v}\n"));
            } else if let Some(path) = arg.strip_prefix("file:") {
                let content = match path {
                    "/etc/selinux/config" => Some(self.selinux_config.clone()),
                    "/etc/hosts" => Some(b"127.0.0.1 localhost\n".to_vec()),
                    _ => None,
                };
                match content {
                    Some(c) => out.push_str(&format!(
                        "file {path} ={}\n",
                        base64::engine::general_purpose::STANDARD.encode(c)
                    )),
                    None => out.push_str(&format!("file {path} -\n")),
                }
            }
        }
        out
    }

    /// Runs one command as RHEL 9 would, changing the node.
    fn answer(&mut self, cmd: &RemoteCommand) -> CommandOutput {
        let argv = cmd.argv();
        let label = cmd.label();
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["setenforce", "0"] => {
                self.getenforce = "Permissive\n";
                output(0, "")
            }
            ["firewall-cmd", "--permanent", adds @ ..] => {
                for a in adds {
                    if let Some(p) = a.strip_prefix("--add-port=") {
                        self.ports.push(p.to_owned());
                    } else if let Some(p) = a.strip_prefix("--add-protocol=") {
                        self.protocols.push(p.to_owned());
                    }
                }
                output(0, FIREWALLD_SUCCESS)
            }
            ["firewall-cmd", "--reload"] => {
                self.runtime_ports = self.ports.clone();
                output(0, FIREWALLD_SUCCESS)
            }
            ["firewall-cmd", adds @ ..] if adds.iter().all(|a| a.starts_with("--add-")) => {
                for a in adds {
                    if let Some(p) = a.strip_prefix("--add-port=") {
                        self.runtime_ports.push(p.to_owned());
                    }
                }
                output(0, FIREWALLD_SUCCESS)
            }
            ["systemctl", "stop", "firewalld"] => {
                self.firewalld_running = false;
                output(0, "")
            }
            ["systemctl", "disable", "firewalld"] => {
                self.firewalld_enabled = false;
                CommandOutput {
                    status: Some(0),
                    stdout: Vec::new(),
                    stderr: SYSTEMCTL_DISABLE_FIREWALLD.as_bytes().to_vec(),
                }
            }
            _ if label.starts_with("write-files") => {
                // path, mode, backup, length in fours; the contents one after another.
                let stdin = cmd.stdin.clone().unwrap_or_default();
                let mut at = 0;
                for four in argv[4..].chunks(4) {
                    let len: usize = four[3].parse().unwrap();
                    if four[0] == "/etc/selinux/config" {
                        self.selinux_config = stdin[at..at + len].to_vec();
                    }
                    at += len;
                }
                output(0, "")
            }
            _ if label.starts_with("sysctl-write") => {
                for pair in argv[4..].chunks(2) {
                    self.sysctls.insert(pair[0].clone(), pair[1].clone());
                }
                output(0, "")
            }
            _ if label.starts_with("sysctl-read-back") => {
                let text: String = argv[4..]
                    .iter()
                    .map(|k| format!("{k}={}\n", self.sysctls.get(k).cloned().unwrap_or_default()))
                    .collect();
                output(0, &text)
            }
            _ => output(0, ""),
        }
    }
}

/// Every warning the run showed.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Reporter for Warnings {
    fn event(&self, event: &Event<'_>) {
        if let Event::Warning { node, message } = event {
            let line = format!("{}: {message}", node.unwrap_or("-"));
            self.0.lock().unwrap().push(line);
        }
    }
}

struct Fleet {
    nodes: Rc<RefCell<BTreeMap<String, Rhel9>>>,
    record: Record,
}

impl Fleet {
    fn new(node: Rhel9) -> Self {
        let nodes = ["cp1", "w1"].map(|n| (n.to_owned(), node.clone()));
        Fleet {
            nodes: Rc::new(RefCell::new(nodes.into_iter().collect())),
            record: Rc::default(),
        }
    }

    /// `khactl up`'s host preparation with `extra` added to the inventory: the commands
    /// each node saw (argv joined) and the warnings.
    async fn prepare(&self, extra: &str) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
        self.record.borrow_mut().clear();
        let dir = tempfile::tempdir().unwrap();
        let inventory = dir.path().join("inventory.yaml");
        std::fs::write(&inventory, format!("{INVENTORY}{extra}")).unwrap();
        let opts = NodeOptions {
            inventory,
            parallelism: 10,
            connect_timeout: std::time::Duration::from_secs(1),
            state_dir: Some(dir.path().join("state")),
        };
        let nodes = Rc::clone(&self.nodes);
        let responder: Responder = Rc::new(move |node: &str, cmd: &RemoteCommand| {
            let mut nodes = nodes.borrow_mut();
            let host = nodes.get_mut(node).unwrap();
            let out = if cmd.label().starts_with("khactl-probe") {
                output(0, &host.probe(node, cmd))
            } else {
                host.answer(cmd)
            };
            Ok::<_, RemoteError>(out)
        });
        let connector = Box::new(FakeConnector {
            responder,
            record: Rc::clone(&self.record),
        });
        let warnings = Warnings::default();
        let mut ctx = session::load(&opts)
            .unwrap()
            .start_with("up", Mode::Apply, Box::new(warnings.clone()), connector)
            .unwrap();
        let phases: Vec<Box<dyn Phase>> = vec![
            Box::new(Connect),
            Box::new(GatherFacts),
            Box::new(PrepareHosts),
        ];
        crate::phases::run(&mut ctx, phases).await.unwrap();
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.record.borrow().iter() {
            let relevant = matches!(
                s.argv.first().map(String::as_str),
                Some("setenforce" | "firewall-cmd" | "systemctl")
            ) || s.argv.iter().any(|a| a == "/etc/selinux/config");
            if relevant {
                let shown = if s.argv[0] == "sh" {
                    format!("write-files {}", s.argv[4..].join(" "))
                } else {
                    s.argv.join(" ")
                };
                seen.entry(s.node.clone()).or_default().push(shown);
            }
        }
        let warnings = warnings.0.lock().unwrap().clone();
        (seen, warnings)
    }

    fn node(&self, name: &str) -> Rhel9 {
        self.nodes.borrow()[name].clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_fresh_rhel9_node_gets_permissive_selinux_and_its_roles_ports_then_nothing() {
    let fleet = Fleet::new(Rhel9::fresh());
    let (seen, warnings) = fleet.prepare("").await;
    assert_eq!(
        seen["cp1"],
        [
            "setenforce 0",
            "write-files /etc/selinux/config 0644 /etc/selinux/config.khactl.bak 1185",
            "firewall-cmd --add-port=6443/tcp --add-port=2379-2380/tcp \
             --add-port=10250/tcp --add-port=10257/tcp --add-port=10259/tcp \
             --add-port=16443/tcp --add-protocol=vrrp",
            "firewall-cmd --permanent --add-port=6443/tcp --add-port=2379-2380/tcp \
             --add-port=10250/tcp --add-port=10257/tcp --add-port=10259/tcp \
             --add-port=16443/tcp --add-protocol=vrrp",
        ]
    );
    assert_eq!(
        seen["w1"][2..],
        [
            "firewall-cmd --add-port=10250/tcp --add-port=30000-32767/tcp",
            "firewall-cmd --permanent --add-port=10250/tcp --add-port=30000-32767/tcp",
        ],
        "a worker: the kubelet and NodePorts, no VRRP"
    );
    let cp1 = fleet.node("cp1");
    assert_eq!(cp1.getenforce, "Permissive\n");
    let config = String::from_utf8(cp1.selinux_config.clone()).unwrap();
    assert_eq!(
        config,
        SELINUX_CONFIG_RHEL9.replace("\nSELINUX=enforcing\n", "\nSELINUX=permissive\n"),
        "only that line changed"
    );
    assert_eq!(
        cp1.runtime_ports, cp1.ports,
        "opened in the running firewall too"
    );
    assert_eq!(cp1.protocols, ["vrrp"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("cp1: SELinux was enforcing: set to permissive")),
        "{warnings:?}"
    );

    let (again, warnings) = fleet.prepare("").await;
    assert!(again.is_empty(), "a second run changes nothing: {again:?}");
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn ports_already_open_are_not_added_again_and_the_stats_page_port_is_opened() {
    let mut node = Rhel9::fresh();
    node.ports = vec![
        "6443/tcp".into(),
        "2379-2380/tcp".into(),
        "10250/tcp".into(),
    ];
    node.protocols = vec!["vrrp".into()];
    let fleet = Fleet::new(node);
    let (seen, _) = fleet
        .prepare("statsPage: {}\nhostPreparation: { selinux: leave }\n")
        .await;
    assert_eq!(
        seen["cp1"],
        [
            "firewall-cmd --add-port=10257/tcp --add-port=10259/tcp \
             --add-port=16443/tcp --add-port=9000/tcp",
            "firewall-cmd --permanent --add-port=10257/tcp --add-port=10259/tcp \
             --add-port=16443/tcp --add-port=9000/tcp",
        ]
    );
    assert_eq!(
        fleet.node("cp1").getenforce,
        GETENFORCE_ENFORCING,
        "left enforcing"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn firewalld_stop_stops_and_disables_it_once_with_a_warning() {
    let fleet = Fleet::new(Rhel9::fresh());
    let extra = "hostPreparation: { firewalld: stop, selinux: leave }\n";
    let (seen, warnings) = fleet.prepare(extra).await;
    assert_eq!(
        seen["cp1"],
        ["systemctl stop firewalld", "systemctl disable firewalld"]
    );
    let cp1 = fleet.node("cp1");
    assert!(!cp1.firewalld_running && !cp1.firewalld_enabled);
    assert!(
        cp1.ports.is_empty(),
        "no rules added to a firewall being stopped"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("firewalld stopped and disabled")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("SELinux is enforcing")),
        "leave still says what it means: {warnings:?}"
    );
    let (again, _) = fleet.prepare(extra).await;
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn firewalld_enabled_but_stopped_is_a_warning_not_a_change() {
    let mut node = Rhel9::fresh();
    node.firewalld_running = false;
    node.getenforce = "Permissive\n";
    node.selinux_config = SELINUX_CONFIG_RHEL9
        .replace("SELINUX=enforcing", "SELINUX=permissive")
        .into_bytes();
    let fleet = Fleet::new(node);
    let (seen, warnings) = fleet.prepare("").await;
    assert!(seen.is_empty(), "{seen:?}");
    assert!(
        warnings.iter().any(
            |w| w.starts_with("cp1: firewalld is enabled but not running")
                && w.contains("6443/tcp")
        ),
        "{warnings:?}"
    );
}

#[test]
fn the_selinux_config_is_read_as_libselinux_reads_it() {
    use super::permissive_config;
    for enforcing in [
        "SELINUX=enforcing\n",
        "SELINUX=Enforcing\n",
        "SELINUX=enforcing # set by the installer\n",
        "  SELINUX=ENFORCING\n",
    ] {
        let file = format!("# comment SELINUX=enforcing\n{enforcing}SELINUXTYPE=targeted\n");
        let new = permissive_config(file.as_bytes()).expect(enforcing);
        assert_eq!(
            String::from_utf8(new).unwrap(),
            "# comment SELINUX=enforcing\nSELINUX=permissive\nSELINUXTYPE=targeted\n",
            "{enforcing:?}"
        );
    }
    for other in [
        "SELINUX=permissive\n",
        "SELINUX=disabled\n",
        "#SELINUX=enforcing\n",
    ] {
        assert_eq!(permissive_config(other.as_bytes()), None, "{other:?}");
    }
}

#[test]
fn a_node_without_running_selinux_keeps_its_config_file() {
    use crate::facts::{HostFacts, SelinuxMode};
    let inv = crate::inventory::parse(
        "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
         cluster: { name: t, kubernetesVersion: v1.31.2 }\nvip: { address: 10.0.0.100 }\n\
         nodes:\n  - { name: cp1, address: 10.0.0.11, role: control-plane }\n",
    )
    .unwrap()
    .inventory;
    for mode in [SelinuxMode::Absent, SelinuxMode::Disabled] {
        let mut facts = HostFacts {
            selinux: mode,
            ..crate::phases::test_support::debian_host()
        };
        facts.files.insert(
            super::SELINUX_CONFIG.into(),
            Some(b"SELINUX=enforcing\n".to_vec()),
        );
        let (changes, warnings) = super::plan(&inv, &inv.nodes[0], &facts).unwrap();
        assert!(
            changes
                .iter()
                .all(|c| !c.headline().contains("/etc/selinux/config")),
            "{mode:?}: {changes:?}"
        );
        assert!(
            warnings.iter().all(|w| !w.contains("SELinux")),
            "{warnings:?}"
        );
    }
}

/// With external etcd the etcd nodes open etcd's ports and the control planes no longer do.
#[test]
fn with_external_etcd_the_etcd_nodes_open_etcds_ports_and_the_control_planes_do_not() {
    let text = include_str!("../../../../inventories/cfssl-external-etcd-guide.yaml");
    let inv = crate::inventory::parse(text).unwrap().inventory;
    let (etcd, vrrp) = super::needed(&inv, inv.node("etcd1").unwrap());
    assert_eq!((etcd, vrrp), (vec!["2379-2380/tcp".to_owned()], false));
    let (cp, _) = super::needed(&inv, inv.node("master1").unwrap());
    assert!(cp.contains(&"6443/tcp".to_owned()), "{cp:?}");
    assert!(!cp.contains(&"2379-2380/tcp".to_owned()), "{cp:?}");
}

/// A dedicated load-balancer node opens only the VIP's port and VRRP; the control planes
/// behind it no longer speak VRRP.
#[test]
fn a_load_balancer_node_opens_the_vip_port_and_vrrp_only() {
    let text = include_str!("../../../../inventories/alpine-keepalived-haproxy-lb-nodes.yaml");
    let inv = crate::inventory::parse(text).unwrap().inventory;
    let (lb, vrrp) = super::needed(&inv, inv.node("lb1").unwrap());
    assert_eq!((lb, vrrp), (vec!["6443/tcp".to_owned()], true));
    let (cp, vrrp) = super::needed(&inv, inv.node("master1").unwrap());
    assert!(!vrrp && cp.contains(&"6443/tcp".to_owned()), "{cp:?}");
}
