//! The inventory document as typed data: what the user wrote, already parsed into
//! newtypes and enums. Cross-field rules live in `validate.rs`; facts gathered from
//! hosts live elsewhere (`crate::facts`), never here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::types::{CriSocket, DnsName, KubernetesVersion, Limit, NodeName, Port, RouterId};

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "khactl.io/v1alpha1";
/// The only `kind` of document an inventory file holds.
pub const KIND: &str = "Inventory";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    pub api_version: String,
    pub kind: String,
    pub cluster: Cluster,
    /// Required when `loadBalancer.mode` is `vip` (the default); absent with node-local or
    /// external balancers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Vip>,
    /// Where the API endpoint is balanced: on the VIP (default) or on every node.
    #[serde(default, skip_serializing_if = "is_default")]
    pub load_balancer: LoadBalancer,
    #[serde(default)]
    pub ssh: SshDefaults,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub networking: Networking,
    /// Registry to pull control-plane images from (guides use regional mirrors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
    /// Extra sysctls applied on every node, after khactl's own.
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default)]
    pub pki: PkiSettings,
    #[serde(default)]
    pub kubeadm: KubeadmExtras,
    /// The failover drill's targets and node-down hooks (flags override them).
    #[serde(default, skip_serializing_if = "is_default")]
    pub failover_test: FailoverTestSettings,
    /// khagent's HTML stats page on its own port, behind basic auth (haproxy's `listen stats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_page: Option<super::StatsPage>,
    /// What host preparation does about firewalld and SELinux (RHEL family).
    #[serde(default, skip_serializing_if = "is_default")]
    pub host_preparation: super::HostPreparation,
    /// How the external etcd cluster on the `role: etcd` nodes is installed.
    #[serde(default, skip_serializing_if = "is_default")]
    pub etcd: super::EtcdSettings,
}

/// Targets of `khactl failover-test`; unset ones keep the scenario's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_takeover: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_api_unavailable: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_long_lived_recovery: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_split_brain: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_healthy_after: Option<Limit>,
}

/// Targets for one scenario each, over the common ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScenarioTargets {
    #[serde(default, skip_serializing_if = "is_default")]
    pub agent_crash: TargetSettings,
    #[serde(default, skip_serializing_if = "is_default")]
    pub agent_stop: TargetSettings,
    #[serde(default, skip_serializing_if = "is_default")]
    pub apiserver_down: TargetSettings,
    #[serde(default, skip_serializing_if = "is_default")]
    pub etcd_member_down: TargetSettings,
    #[serde(default, skip_serializing_if = "is_default")]
    pub network_cut: TargetSettings,
    #[serde(default, skip_serializing_if = "is_default")]
    pub node_down: TargetSettings,
}

/// `failoverTest:` in the inventory: targets for every scenario, per scenario, and the
/// node-down hooks, so a cluster's drill is the same whoever runs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverTestSettings {
    /// Every scenario.
    #[serde(default, skip_serializing_if = "is_default")]
    pub targets: TargetSettings,
    #[serde(default, skip_serializing_if = "is_default")]
    pub scenarios: ScenarioTargets,
    /// Run locally with `sh -c`, `{node}` replaced by the node's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_down_cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_up_cmd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// Names the state directory (`.khactl/<name>/`) and the kubeadm clusterName.
    pub name: NodeName,
    /// For example `v1.31.2`.
    pub kubernetes_version: KubernetesVersion,
}

/// The virtual IP that fronts the API servers, and how the agents elect its holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Vip {
    pub address: Ipv4Addr,
    /// Prefix length of the VIP's subnet (e.g. 24), when the user states it; then the
    /// VIP is checked against that subnet's network and broadcast addresses and the
    /// control-plane addresses. When absent, the agents take the prefix of the
    /// interface that holds the node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<u8>,
    /// Interface to hold the VIP on; when absent, the one that holds the node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// VRRP virtual router id, 1..=255, unique on the L2 segment.
    #[serde(default = "default_router_id")]
    pub router_id: RouterId,
    /// Port the load balancer listens on at the VIP (the API endpoint's port).
    #[serde(default = "default_lb_port")]
    pub port: Port,
    /// Optional DNS name for the API endpoint (e.g. `k8s-api.virtual.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<DnsName>,
}

/// Where clients reach the API servers through khagent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    #[serde(default)]
    pub mode: LbMode,
    /// The node-local balancer's port on `127.0.0.1` (node-local mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// The API endpoint's name: resolved to `127.0.0.1` on every node (node-local mode), or
    /// served by the external balancer (external mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<DnsName>,
    /// The external balancer's address, which workers resolve the name to (external mode
    /// only; without it the name must resolve through DNS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbMode {
    /// khagent on each control plane: VRRP holds `vip.address`, the holder balances.
    #[default]
    Vip,
    /// khagent on every node, workers too, balancing `127.0.0.1:port` to every API
    /// server; no VRRP, no VIP (the kubespray/"nginx on each worker" layout).
    NodeLocal,
    /// A balancer khactl does not run (a cloud LB) forwarding the API name's port to every
    /// API server; no agent anywhere. Such balancers often drop a backend's connection to
    /// itself (no hairpin), so control planes resolve the name to their own API server on
    /// 127.0.0.1 and only workers go through the balancer (the Aliyun SLB guide).
    External,
}

/// The external balancer's settings, once the inventory has validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalLb {
    /// The API endpoint's name (`loadBalancer.dnsName`).
    pub host: String,
    /// Where workers send it; `None`: the name resolves through DNS.
    pub address: Option<Ipv4Addr>,
}

/// The node-local balancer's settings, once the inventory has validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLocal {
    pub port: Port,
    /// The API endpoint's name (`loadBalancer.dnsName`).
    pub host: String,
}

fn default_router_id() -> RouterId {
    RouterId::DEFAULT
}

fn default_lb_port() -> Port {
    Port::API_ENDPOINT_DEFAULT
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshDefaults {
    #[serde(default = "default_ssh_user")]
    pub user: String,
    #[serde(default = "default_ssh_port")]
    pub port: Port,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// Run remote commands through `sudo -n` (needed when `user` is not root).
    #[serde(default)]
    pub sudo: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<Bastion>,
}

impl Default for SshDefaults {
    fn default() -> Self {
        Self {
            user: default_ssh_user(),
            port: default_ssh_port(),
            identity_file: None,
            sudo: false,
            bastion: None,
        }
    }
}

fn default_ssh_user() -> String {
    "root".to_owned()
}

fn default_ssh_port() -> Port {
    Port::SSH_DEFAULT
}

/// A jump host (`ssh -J`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bastion {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
}

/// Per-node SSH settings; each field left out falls back to the inventory's `ssh`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<Bastion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
    /// A member of the external etcd cluster: no kubelet, no kubeadm, only etcd.
    Etcd,
    /// A dedicated load-balancer node (the Alpine + keepalived + haproxy guide's): it runs
    /// khagent (VRRP and the balancer) and nothing of Kubernetes; the control planes then
    /// run no agent.
    #[serde(rename = "loadbalancer", alias = "load-balancer")]
    LoadBalancer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
            Role::Etcd => "etcd",
            Role::LoadBalancer => "loadbalancer",
        }
    }

    /// Whether nodes of this role join the Kubernetes cluster (kubelet and kubeadm).
    pub fn is_kubernetes_node(self) -> bool {
        matches!(self, Role::ControlPlane | Role::Worker)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    pub name: NodeName,
    pub address: IpAddr,
    pub role: Role,
    #[serde(default, skip_serializing_if = "is_default")]
    pub ssh: SshOverrides,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// `None` when the field is left out: a control-plane node then gets kubeadm's
    /// `node-role.kubernetes.io/control-plane:NoSchedule`, a worker none. `Some(vec![])`
    /// (`taints: []`) means no taint at all, also on a control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,
}

/// The port etcd serves clients on (its default, IANA-registered).
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// The port etcd members talk to each other on.
pub const ETCD_PEER_PORT: u16 = 2380;

impl Node {
    /// `https://ADDRESS:2379`, IPv6 in brackets as Go's `net.JoinHostPort` writes it.
    pub fn etcd_client_url(&self) -> String {
        format!(
            "https://{}",
            std::net::SocketAddr::new(self.address, ETCD_CLIENT_PORT)
        )
    }

    /// `https://ADDRESS:2380`, the member's peer URL.
    pub fn etcd_peer_url(&self) -> String {
        format!(
            "https://{}",
            std::net::SocketAddr::new(self.address, ETCD_PEER_PORT)
        )
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(
        default,
        deserialize_with = "scalar_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(default = "default_pod_subnet")]
    pub pod_subnet: IpNet,
    #[serde(default = "default_service_subnet")]
    pub service_subnet: IpNet,
    #[serde(default = "default_dns_domain")]
    pub dns_domain: DnsName,
}

impl Default for Networking {
    fn default() -> Self {
        Self {
            pod_subnet: default_pod_subnet(),
            service_subnet: default_service_subnet(),
            dns_domain: default_dns_domain(),
        }
    }
}

fn default_pod_subnet() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16))
}

fn default_service_subnet() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 12))
}

fn default_dns_domain() -> DnsName {
    DnsName::cluster_local()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// RSA 2048, what kubeadm generates and every consumer accepts.
    #[default]
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    EcdsaP256,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PkiSettings {
    #[serde(default)]
    pub key_type: KeyType,
    /// Validity of the CAs, in days (kubeadm: 10 years).
    #[serde(default = "default_ca_days")]
    pub ca_validity_days: u32,
    /// Validity of leaf certificates, in days (kubeadm: 1 year).
    #[serde(default = "default_leaf_days")]
    pub cert_validity_days: u32,
}

impl Default for PkiSettings {
    fn default() -> Self {
        Self {
            key_type: KeyType::default(),
            ca_validity_days: default_ca_days(),
            cert_validity_days: default_leaf_days(),
        }
    }
}

fn default_ca_days() -> u32 {
    3650
}

fn default_leaf_days() -> u32 {
    365
}

/// Settings passed through to the rendered kubeadm configuration: free-form extra args per
/// component and the CRI socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeadmExtras {
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub api_server_extra_args: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub controller_manager_extra_args: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub scheduler_extra_args: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub kubelet_extra_args: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub etcd_extra_args: BTreeMap<String, String>,
    /// The container runtime's CRI endpoint on every node (kubeadm's `criSocket`).
    #[serde(default)]
    pub cri_socket: CriSocket,
}

/// Text the user may write as any YAML scalar: `vm.swappiness: 0`, `v: "2"` and
/// `enabled: true` all mean the string a program on the node receives.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_yaml_ng::Value;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Self(s)),
            Value::Number(n) => Ok(Self(n.to_string())),
            Value::Bool(b) => Ok(Self(b.to_string())),
            // `key:` with nothing after it: an empty label value.
            Value::Null => Ok(Self(String::new())),
            _ => Err(serde::de::Error::custom(
                "expected a single value (text, number or boolean)",
            )),
        }
    }
}

/// A map of scalars to scalars, empty when written as `~` or left empty.
fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map: Option<BTreeMap<ScalarText, ScalarText>> = Option::deserialize(d)?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.0, v.0))
        .collect())
}

fn scalar_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<ScalarText>::deserialize(d)?.map(|s| s.0))
}

impl Inventory {
    pub fn control_plane(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }

    pub fn workers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Worker)
    }

    /// The nodes with `role: etcd`: the external etcd cluster, when there are any.
    pub fn etcd_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Etcd)
    }

    /// The nodes with `role: loadbalancer`: dedicated balancers holding the VIP.
    pub fn load_balancer_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::LoadBalancer)
    }

    /// Whether the VIP and the balancer run on dedicated `role: loadbalancer` nodes rather
    /// than on the control planes.
    pub fn dedicated_lb(&self) -> bool {
        self.load_balancer_nodes().next().is_some()
    }

    /// The nodes that run VRRP for the VIP, in inventory order: the `role: loadbalancer`
    /// nodes when there are any, else the control planes. Empty without a VIP.
    pub fn vrrp_nodes(&self) -> impl Iterator<Item = &Node> {
        let role = if self.dedicated_lb() {
            Role::LoadBalancer
        } else {
            Role::ControlPlane
        };
        let vip = self.vip.is_some() && self.load_balancer.mode == LbMode::Vip;
        self.nodes.iter().filter(move |n| vip && n.role == role)
    }

    /// What the VRRP nodes are called in messages: "control-plane" or "load-balancer".
    pub fn vrrp_role_name(&self) -> &'static str {
        if self.dedicated_lb() {
            "load-balancer"
        } else {
            "control-plane"
        }
    }

    /// Whether etcd runs on its own nodes (kubeadm's `etcd.external`) rather than stacked
    /// on the control planes.
    pub fn external_etcd(&self) -> bool {
        self.etcd_nodes().next().is_some()
    }

    /// The nodes that run an etcd member: the `role: etcd` nodes in the external
    /// topology, else every control plane (kubeadm's stacked etcd).
    pub fn etcd_members(&self) -> impl Iterator<Item = &Node> {
        let external = self.external_etcd();
        self.nodes.iter().filter(move |n| {
            n.role
                == if external {
                    Role::Etcd
                } else {
                    Role::ControlPlane
                }
        })
    }

    /// The node-local balancer, when `loadBalancer.mode` is `node-local`.
    pub fn node_local(&self) -> Option<NodeLocal> {
        let lb = &self.load_balancer;
        (lb.mode == LbMode::NodeLocal).then(|| NodeLocal {
            port: lb.port.unwrap_or(Port::NODE_LOCAL_DEFAULT),
            // Validation requires the name; an unvalidated one still names a host.
            host: lb
                .dns_name
                .as_ref()
                .map_or_else(|| "127.0.0.1".to_owned(), ToString::to_string),
        })
    }

    /// The external balancer, when `loadBalancer.mode` is `external`.
    pub fn external_lb(&self) -> Option<ExternalLb> {
        let lb = &self.load_balancer;
        (lb.mode == LbMode::External).then(|| ExternalLb {
            // Validation requires the name; an unvalidated one still names a host.
            host: lb.dns_name.as_ref().map_or_else(
                || lb.address.unwrap_or(Ipv4Addr::LOCALHOST).to_string(),
                ToString::to_string,
            ),
            address: lb.address,
        })
    }

    /// The API endpoint every kubeconfig and kubeadm names: the node-local name and port,
    /// the external balancer's name and the API servers' port (6443: control planes reach
    /// their own there), or the VIP's DNS name (else its address) and port. A validated
    /// inventory has one of them; one that is not falls back to the node-local defaults.
    pub fn api_endpoint(&self) -> ApiEndpoint {
        if let Some(ext) = self.external_lb() {
            return ApiEndpoint {
                host: ext.host,
                port: Port::API_SERVER.get(),
            };
        }
        match (&self.vip, self.node_local()) {
            (Some(vip), None) => ApiEndpoint {
                host: vip
                    .dns_name
                    .as_ref()
                    .map_or_else(|| vip.address.to_string(), ToString::to_string),
                port: vip.port.get(),
            },
            (_, nl) => {
                let nl = nl.unwrap_or(NodeLocal {
                    port: Port::NODE_LOCAL_DEFAULT,
                    host: "127.0.0.1".to_owned(),
                });
                ApiEndpoint {
                    host: nl.host,
                    port: nl.port.get(),
                }
            }
        }
    }

    /// The DNS name of the API endpoint, if there is one.
    pub fn api_dns_name(&self) -> Option<&DnsName> {
        match self.load_balancer.mode {
            LbMode::NodeLocal | LbMode::External => self.load_balancer.dns_name.as_ref(),
            LbMode::Vip => self.vip.as_ref()?.dns_name.as_ref(),
        }
    }

    /// Whether `node` runs khagent: every VRRP node behind the VIP (the control planes, or
    /// the dedicated `role: loadbalancer` nodes), in node-local mode every Kubernetes node
    /// (etcd nodes never dial the API), and behind an external balancer none.
    pub fn runs_agent(&self, node: &Node) -> bool {
        match self.load_balancer.mode {
            LbMode::Vip => self.vrrp_nodes().any(|n| n.name == node.name),
            LbMode::NodeLocal => node.role.is_kubernetes_node(),
            LbMode::External => false,
        }
    }

    /// Whether adding or removing node `name` changes every agent's backends, workers'
    /// included: a control plane, with node-local balancers. Behind a VIP only the control
    /// planes or the `role: loadbalancer` nodes run agents (runs that change the control
    /// planes always see those).
    pub fn changes_every_agent(&self, name: &str) -> bool {
        self.load_balancer.mode == LbMode::NodeLocal
            && self
                .node(name)
                .is_some_and(|n| n.role == Role::ControlPlane)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }

    /// The SSH settings for one node: its overrides over the inventory's defaults, with a
    /// leading `~/` in the identity file expanded to `$HOME` (the path is opened locally
    /// before connecting, where no shell expands it).
    pub fn ssh_for(&self, node: &Node) -> SshTarget {
        let o = &node.ssh;
        SshTarget {
            node: node.name.clone(),
            address: node.address,
            user: o.user.clone().unwrap_or_else(|| self.ssh.user.clone()),
            port: o.port.unwrap_or(self.ssh.port),
            identity_file: o
                .identity_file
                .as_ref()
                .or(self.ssh.identity_file.as_ref())
                .map(|p| expand_home(p, std::env::var_os("HOME").map(PathBuf::from))),
            sudo: o.sudo.unwrap_or(self.ssh.sudo),
            bastion: o.bastion.clone().or_else(|| self.ssh.bastion.clone()),
        }
    }
}

/// `~/key` → `$HOME/key`; other paths, or no `HOME`, unchanged.
pub(super) fn expand_home(path: &std::path::Path, home: Option<PathBuf>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

/// `host:port` of the API endpoint (host a DNS name or an IPv4 address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEndpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for ApiEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Everything needed to reach one node, resolved from overrides and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SshTarget {
    pub node: NodeName,
    pub address: IpAddr,
    pub user: String,
    pub port: Port,
    pub identity_file: Option<PathBuf>,
    pub sudo: bool,
    pub bastion: Option<Bastion>,
}
