//! An external etcd member's files: its config file (etcd's `--config-file` YAML) and its
//! systemd unit. The phase that installs them (`phases::install_etcd`) decides nothing
//! beyond the inventory; this module turns one node of it into text.

use serde::Serialize;

use super::{RenderError, Template, render};
use crate::inventory::{Inventory, Node};

const CONFIG: Template = Template {
    name: "etcd/etcd.conf.yml.tera",
    text: include_str!("../../templates/etcd/etcd.conf.yml.tera"),
};
const SYSTEMD: Template = Template {
    name: "etcd/etcd.service.tera",
    text: include_str!("../../templates/etcd/etcd.service.tera"),
};

/// Where the member keeps its data (the guides' and kubeadm's place).
pub const DATA_DIR: &str = "/var/lib/etcd";
/// The config file the unit names.
pub const CONFIG_FILE: &str = "/etc/etcd/etcd.conf.yml";
/// The unit, in `/etc` so it takes the place of a package's own `etcd.service`.
pub const SYSTEMD_UNIT: &str = "/etc/systemd/system/etcd.service";
/// The service's name.
pub const SERVICE: &str = "etcd";
/// The binary of the distribution's package (Debian's and Ubuntu's `etcd-server`, Fedora's
/// and Alpine's `etcd`), used unless the inventory's `etcd.binary` names another.
pub const PACKAGE_BINARY: &str = "/usr/bin/etcd";

const PKI: &str = "/etc/kubernetes/pki/etcd";

/// Whether the member founds the cluster with the others (`new`) or joins a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    New,
    Existing,
}

/// Context of both templates: one member's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtcdMember {
    pub cluster: String,
    pub name: String,
    pub binary: String,
    pub config: &'static str,
    pub data_dir: &'static str,
    /// Its own address and loopback (its server certificate names both), comma-separated.
    pub listen_client_urls: String,
    pub advertise_client_url: String,
    pub peer_url: String,
    /// `name=peer-url` of every member, comma-separated, in inventory order.
    pub initial_cluster: String,
    pub initial_cluster_state: ClusterState,
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub peer_cert: String,
    pub peer_key: String,
}

impl EtcdMember {
    /// `node`'s member among `members` (the nodes of the initial cluster: every etcd node
    /// at creation, or the running members and `node` when it joins).
    pub fn new<'a>(
        inventory: &Inventory,
        node: &Node,
        members: impl IntoIterator<Item = &'a Node>,
        state: ClusterState,
    ) -> Self {
        let initial_cluster: Vec<String> = members
            .into_iter()
            .map(|m| format!("{}={}", m.name, m.etcd_peer_url()))
            .collect();
        let loopback = match node.address {
            std::net::IpAddr::V4(_) => "https://127.0.0.1:2379",
            std::net::IpAddr::V6(_) => "https://[::1]:2379",
        };
        let pki = |f: &str| format!("{PKI}/{f}");
        Self {
            cluster: inventory.cluster.name.to_string(),
            name: node.name.to_string(),
            binary: inventory
                .etcd
                .binary
                .as_ref()
                .map_or_else(|| PACKAGE_BINARY.to_owned(), |p| p.display().to_string()),
            config: CONFIG_FILE,
            data_dir: DATA_DIR,
            listen_client_urls: format!("{},{loopback}", node.etcd_client_url()),
            advertise_client_url: node.etcd_client_url(),
            peer_url: node.etcd_peer_url(),
            initial_cluster: initial_cluster.join(","),
            initial_cluster_state: state,
            ca: pki("ca.crt"),
            server_cert: pki("server.crt"),
            server_key: pki("server.key"),
            peer_cert: pki("peer.crt"),
            peer_key: pki("peer.key"),
        }
    }

    /// Keeps the `initial-*` settings of the member's config on the node, if it has one:
    /// etcd reads them only while its data directory is empty, so a running member keeps
    /// what it was founded or joined with, and a member added later (`add-etcd`) does not
    /// change, and restart, every other member at the next `up`.
    pub fn keeping_initial_cluster(mut self, existing: Option<&[u8]>) -> Self {
        let Some(old) =
            existing.and_then(|b| serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(b).ok())
        else {
            return self;
        };
        if let (Some(cluster), Some(state)) = (
            old["initial-cluster"].as_str(),
            old["initial-cluster-state"].as_str(),
        ) {
            cluster.clone_into(&mut self.initial_cluster);
            self.initial_cluster_state = if state == "existing" {
                ClusterState::Existing
            } else {
                ClusterState::New
            };
        }
        self
    }

    pub fn render_config(&self) -> Result<String, RenderError> {
        render(&CONFIG, self)
    }

    pub fn render_systemd(&self) -> Result<String, RenderError> {
        render(&SYSTEMD, self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn guide() -> Inventory {
        let text = include_str!("../../inventories/cfssl-external-etcd-guide.yaml");
        crate::inventory::parse(text).unwrap().inventory
    }

    #[test]
    fn the_config_names_every_member_and_this_nodes_own_certificates() {
        let inv = guide();
        let node = inv.node("etcd2").unwrap();
        let m = EtcdMember::new(&inv, node, inv.etcd_nodes(), ClusterState::New);
        let text = m.render_config().unwrap();
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let s = |k: &str| yaml[k].as_str().unwrap().to_owned();
        assert_eq!(s("name"), "etcd2");
        assert_eq!(s("data-dir"), "/var/lib/etcd");
        assert_eq!(
            s("listen-client-urls"),
            "https://192.168.1.22:2379,https://127.0.0.1:2379"
        );
        assert_eq!(s("advertise-client-urls"), "https://192.168.1.22:2379");
        assert_eq!(
            s("initial-advertise-peer-urls"),
            "https://192.168.1.22:2380"
        );
        assert_eq!(
            s("initial-cluster"),
            "etcd1=https://192.168.1.21:2380,etcd2=https://192.168.1.22:2380,\
             etcd3=https://192.168.1.23:2380"
        );
        assert_eq!(s("initial-cluster-state"), "new");
        assert_eq!(s("initial-cluster-token"), "external-etcd");
        for (section, cert) in [
            ("client-transport-security", "server"),
            ("peer-transport-security", "peer"),
        ] {
            let t = &yaml[section];
            assert_eq!(
                t["cert-file"].as_str().unwrap(),
                format!("/etc/kubernetes/pki/etcd/{cert}.crt")
            );
            assert_eq!(
                t["key-file"].as_str().unwrap(),
                format!("/etc/kubernetes/pki/etcd/{cert}.key")
            );
            assert_eq!(
                t["trusted-ca-file"].as_str().unwrap(),
                "/etc/kubernetes/pki/etcd/ca.crt"
            );
            assert_eq!(t["client-cert-auth"].as_bool(), Some(true));
        }
    }

    #[test]
    fn the_unit_runs_the_package_binary_or_the_inventorys_with_the_config_file() {
        let mut inv = guide();
        let node = inv.node("etcd1").unwrap().clone();
        let unit = EtcdMember::new(&inv, &node, inv.etcd_nodes(), ClusterState::New)
            .render_systemd()
            .unwrap();
        assert!(
            unit.contains("\nExecStart=/usr/bin/etcd --config-file /etc/etcd/etcd.conf.yml\n"),
            "{unit}"
        );
        inv.etcd.binary = Some("/opt/etcd v3/etcd".into());
        let unit = EtcdMember::new(&inv, &node, inv.etcd_nodes(), ClusterState::Existing)
            .render_systemd()
            .unwrap();
        assert!(
            unit.contains("\nExecStart=\"/opt/etcd v3/etcd\" --config-file"),
            "{unit}"
        );
    }

    #[test]
    fn a_running_members_initial_cluster_is_kept_whatever_the_inventory_says_now() {
        let inv = guide();
        let node = inv.node("etcd1").unwrap();
        let joined = EtcdMember::new(&inv, node, inv.etcd_nodes().take(2), ClusterState::Existing)
            .render_config()
            .unwrap();
        let now = EtcdMember::new(&inv, node, inv.etcd_nodes(), ClusterState::New)
            .keeping_initial_cluster(Some(joined.as_bytes()));
        assert_eq!(now.render_config().unwrap(), joined);
        let fresh = EtcdMember::new(&inv, node, inv.etcd_nodes(), ClusterState::New);
        assert_eq!(fresh.clone().keeping_initial_cluster(None), fresh);
        assert_eq!(fresh.clone().keeping_initial_cluster(Some(b"{")), fresh);
    }

    #[test]
    fn a_joining_member_says_existing() {
        let inv = guide();
        let node = inv.node("etcd3").unwrap();
        let m = EtcdMember::new(&inv, node, inv.etcd_nodes(), ClusterState::Existing);
        assert!(
            m.render_config()
                .unwrap()
                .contains("initial-cluster-state: \"existing\"")
        );
    }
}
