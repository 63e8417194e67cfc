//! From the inventory to the template contexts, one typed struct per template, and the
//! text of a node's configuration file. Every decision about *what* goes into kubeadm's
//! documents is made here; the templates only lay it out and escape it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{KubeadmApi, Purpose, Timeouts};
use crate::inventory::{Inventory, LbMode, Node, Role, Taint, TaintEffect};
use crate::render::{RenderError, Template, render, render_with};

/// The templates of one configuration file; a parameter so that tests can feed the very
/// same pipeline a deliberately broken one.
#[derive(Clone, Copy)]
pub(super) struct Templates {
    pub init: Template,
    pub cluster: Template,
    pub join: Template,
    pub node_registration: Template,
    pub kubelet: Template,
    pub kube_proxy: Template,
}

pub(super) const TEMPLATES: Templates = Templates {
    init: Template {
        name: "kubeadm/init-configuration.yaml.tera",
        text: include_str!("../../../templates/kubeadm/init-configuration.yaml.tera"),
    },
    cluster: Template {
        name: "kubeadm/cluster-configuration.yaml.tera",
        text: include_str!("../../../templates/kubeadm/cluster-configuration.yaml.tera"),
    },
    join: Template {
        name: "kubeadm/join-configuration.yaml.tera",
        text: include_str!("../../../templates/kubeadm/join-configuration.yaml.tera"),
    },
    node_registration: Template {
        name: "kubeadm/node-registration.yaml.tera",
        text: include_str!("../../../templates/kubeadm/node-registration.yaml.tera"),
    },
    kubelet: Template {
        name: "kubeadm/kubelet-configuration.yaml.tera",
        text: include_str!("../../../templates/kubeadm/kubelet-configuration.yaml.tera"),
    },
    kube_proxy: Template {
        name: "kubeadm/kube-proxy-configuration.yaml.tera",
        text: include_str!("../../../templates/kubeadm/kube-proxy-configuration.yaml.tera"),
    },
};

/// The port every API server binds on its own node (kubeadm's default). khagent balances
/// to it; the load balancer itself listens on `vip.port`, which validation keeps off 6443.
pub const API_SERVER_PORT: u16 = crate::inventory::Port::API_SERVER.get();
/// Where kubeadm keeps a stacked etcd member's data (its default, written out).
pub const ETCD_DATA_DIR: &str = "/var/lib/etcd";
/// How long the bootstrap token lives: long enough for every join of one run, short
/// enough that a copy left anywhere is soon worthless (kubeadm's default is 24 h).
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The SANs every etcd member's server and peer certificates carry besides its own name
/// and address (khactl's PKI, like kubeadm, adds loopback so `etcdctl` on the node works).
const ETCD_SHARED_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// With external etcd, the CA the API servers trust etcd's serving certificates with, and
/// their client pair: where khactl's PKI places them (kubeadm's own names, which kubeadm
/// would not issue itself with `etcd.external`).
pub const EXTERNAL_ETCD_CA_FILE: &str = "/etc/kubernetes/pki/etcd/ca.crt";
pub const EXTERNAL_ETCD_CERT_FILE: &str = "/etc/kubernetes/pki/apiserver-etcd-client.crt";
pub const EXTERNAL_ETCD_KEY_FILE: &str = "/etc/kubernetes/pki/apiserver-etcd-client.key";
const CGROUP_DRIVER: &str = "systemd";

/// Everything a node's file is rendered from, resolved by the caller.
pub(super) struct Input<'a> {
    pub inventory: &'a Inventory,
    pub node: &'a Node,
    pub purpose: Purpose,
    pub api: KubeadmApi,
    /// The whole token, `id.secret`.
    pub token: &'a str,
    pub ca_hash: &'a str,
}

/// `host:port` of the API endpoint: the DNS name when there is one, else the VIP.
pub(super) fn control_plane_endpoint(inventory: &Inventory) -> String {
    inventory.api_endpoint().to_string()
}

/// The taints a node registers with: the inventory's when given, else what kubeadm would
/// apply (its control-plane taint on a control plane, none on a worker), written out so
/// the file says it and kubeadm's defaulting never decides. The verify step compares the
/// Node's taints with these.
pub fn effective_taints(node: &Node) -> Vec<Taint> {
    match &node.taints {
        Some(taints) => taints.clone(),
        None if node.role == Role::ControlPlane => vec![Taint {
            key: "node-role.kubernetes.io/control-plane".to_owned(),
            value: None,
            effect: TaintEffect::NoSchedule,
        }],
        None => Vec::new(),
    }
}

/// One `--name=value` of a component.
#[derive(Debug, Serialize)]
struct Arg {
    name: String,
    value: String,
}

fn args(map: &BTreeMap<String, String>) -> Vec<Arg> {
    map.iter()
        .map(|(name, value)| Arg {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

#[derive(Serialize)]
struct ClusterContext<'a> {
    api_version: &'static str,
    list_args: bool,
    cluster_name: &'a str,
    kubernetes_version: &'a str,
    control_plane_endpoint: String,
    /// `vip`, `node-local` or `external`: what the comment above the endpoint explains.
    endpoint_layout: &'static str,
    image_repository: Option<&'a str>,
    pod_subnet: String,
    service_subnet: String,
    dns_domain: &'a str,
    cert_sans: Vec<String>,
    /// v1beta3 only; v1beta4 moved it to `timeouts`.
    timeout_for_control_plane: Option<String>,
    api_server_args: Vec<Arg>,
    controller_manager_args: Vec<Arg>,
    scheduler_args: Vec<Arg>,
    etcd_data_dir: &'static str,
    etcd_cert_sans: [&'static str; 3],
    etcd_args: Vec<Arg>,
    /// Set in the external topology, in place of the stacked `local` block.
    etcd_external: Option<ExternalEtcdContext>,
}

#[derive(Serialize)]
struct ExternalEtcdContext {
    endpoints: Vec<String>,
    ca_file: &'static str,
    cert_file: &'static str,
    key_file: &'static str,
}

#[derive(Serialize)]
struct TaintContext {
    key: String,
    value: Option<String>,
    effect: &'static str,
}

#[derive(Serialize)]
struct NodeRegistrationContext<'a> {
    name: &'a str,
    cri_socket: &'a str,
    taints: Vec<TaintContext>,
    kubelet_args: Vec<Arg>,
}

#[derive(Serialize)]
struct TimeoutsContext {
    control_plane: String,
    kubelet: String,
    etcd_api_call: String,
    tls_bootstrap: String,
    discovery: String,
}

#[derive(Serialize)]
struct InitContext<'a> {
    node: &'a str,
    api_version: &'static str,
    list_args: bool,
    token: &'a str,
    token_description: String,
    token_ttl: String,
    advertise_address: String,
    bind_port: u16,
    node_registration: NodeRegistrationContext<'a>,
    timeouts: Option<TimeoutsContext>,
}

#[derive(Serialize)]
struct ApiEndpointContext {
    advertise_address: String,
    bind_port: u16,
}

#[derive(Serialize)]
struct JoinContext<'a> {
    node: &'a str,
    role: &'static str,
    api_version: &'static str,
    list_args: bool,
    token: &'a str,
    api_server_endpoint: String,
    ca_cert_hash: &'a str,
    /// v1beta3 only; v1beta4 moved it to `timeouts.discovery`.
    discovery_timeout: Option<String>,
    control_plane: Option<ApiEndpointContext>,
    node_registration: NodeRegistrationContext<'a>,
    timeouts: Option<TimeoutsContext>,
}

#[derive(Serialize)]
struct KubeletContext {
    cgroup_driver: &'static str,
}

#[derive(Serialize)]
struct KubeProxyContext {
    cluster_cidr: String,
}

/// The text of `input.node`'s configuration file: for init the InitConfiguration,
/// ClusterConfiguration, KubeletConfiguration and KubeProxyConfiguration (the component
/// configs are read at init only: joining nodes get them from the cluster); for a join
/// only the JoinConfiguration, since `kubeadm join` reads nothing else from its file.
pub(super) fn render_file(t: &Templates, input: &Input<'_>) -> Result<String, RenderError> {
    let mut documents = Vec::new();
    match input.purpose {
        Purpose::Init => {
            documents.push(render_with(&t.init, &[&t.node_registration], &init(input))?);
            documents.push(render(&t.cluster, &cluster(input))?);
            let kubelet = KubeletContext {
                cgroup_driver: CGROUP_DRIVER,
            };
            documents.push(render(&t.kubelet, &kubelet)?);
            let proxy = KubeProxyContext {
                cluster_cidr: input.inventory.networking.pod_subnet.to_string(),
            };
            documents.push(render(&t.kube_proxy, &proxy)?);
        }
        Purpose::JoinControlPlane | Purpose::JoinWorker => {
            documents.push(render_with(&t.join, &[&t.node_registration], &join(input))?);
        }
    }
    Ok(documents.join("---\n"))
}

fn cluster<'a>(input: &Input<'a>) -> ClusterContext<'a> {
    let inv = input.inventory;
    // The same extra names as khactl's own certificates (`pki::catalog`): the VIP, or in
    // node-local mode 127.0.0.1, or an external balancer's address and 127.0.0.1, and the
    // endpoint's DNS name.
    let mut cert_sans: Vec<String> = inv.vip.iter().map(|v| v.address.to_string()).collect();
    let external = inv.external_lb();
    cert_sans.extend(
        external
            .as_ref()
            .and_then(|e| e.address)
            .map(|a| a.to_string()),
    );
    if inv.node_local().is_some() || external.is_some() {
        cert_sans.push(std::net::Ipv4Addr::LOCALHOST.to_string());
    }
    cert_sans.extend(inv.api_dns_name().map(|n| n.to_string()));
    let v1beta3 = input.api == KubeadmApi::V1beta3;
    ClusterContext {
        api_version: input.api.as_str(),
        list_args: !v1beta3,
        cluster_name: inv.cluster.name.as_str(),
        kubernetes_version: inv.cluster.kubernetes_version.as_str(),
        control_plane_endpoint: control_plane_endpoint(inv),
        endpoint_layout: match inv.load_balancer.mode {
            LbMode::Vip => "vip",
            LbMode::NodeLocal => "node-local",
            LbMode::External => "external",
        },
        image_repository: inv.image_repository.as_deref(),
        pod_subnet: inv.networking.pod_subnet.to_string(),
        service_subnet: inv.networking.service_subnet.to_string(),
        dns_domain: inv.networking.dns_domain.as_str(),
        cert_sans,
        timeout_for_control_plane: v1beta3.then(|| go_duration(Timeouts::KUBEADM.control_plane)),
        api_server_args: args(&inv.kubeadm.api_server_extra_args),
        controller_manager_args: args(&inv.kubeadm.controller_manager_extra_args),
        scheduler_args: args(&inv.kubeadm.scheduler_extra_args),
        etcd_data_dir: ETCD_DATA_DIR,
        etcd_cert_sans: ETCD_SHARED_SANS,
        etcd_args: args(&inv.kubeadm.etcd_extra_args),
        etcd_external: inv.external_etcd().then(|| ExternalEtcdContext {
            endpoints: external_etcd_endpoints(inv),
            ca_file: EXTERNAL_ETCD_CA_FILE,
            cert_file: EXTERNAL_ETCD_CERT_FILE,
            key_file: EXTERNAL_ETCD_KEY_FILE,
        }),
    }
}

/// The client URLs of the external etcd members, in inventory order; empty when etcd is
/// stacked.
pub fn external_etcd_endpoints(inv: &Inventory) -> Vec<String> {
    inv.etcd_nodes().map(Node::etcd_client_url).collect()
}

fn node_registration<'a>(input: &Input<'a>) -> NodeRegistrationContext<'a> {
    let node = input.node;
    let mut kubelet_args = input.inventory.kubeadm.kubelet_extra_args.clone();
    if !node.labels.is_empty() {
        // Label keys and values cannot hold ',' or '=' (validated), so this is unambiguous.
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        kubelet_args.insert("node-labels".to_owned(), labels.join(","));
    }
    if input.inventory.node_local().is_some() || input.inventory.external_lb().is_some() {
        // The kubelet picks its node IP from the route to the API server when not told; with
        // the API server on 127.0.0.1 (every node with node-local balancers, control planes
        // behind an external one) that would be loopback (or whatever the default route
        // says), so the node's inventory address is stated, as the node-local guides do. A
        // user's own `node-ip` wins.
        kubelet_args
            .entry("node-ip".to_owned())
            .or_insert_with(|| node.address.to_string());
    }
    NodeRegistrationContext {
        name: node.name.as_str(),
        cri_socket: input.inventory.kubeadm.cri_socket.as_str(),
        taints: effective_taints(node)
            .into_iter()
            .map(|t| TaintContext {
                key: t.key,
                value: t.value,
                effect: match t.effect {
                    TaintEffect::NoSchedule => "NoSchedule",
                    TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                    TaintEffect::NoExecute => "NoExecute",
                },
            })
            .collect(),
        kubelet_args: args(&kubelet_args),
    }
}

fn timeouts(input: &Input<'_>) -> Option<TimeoutsContext> {
    let t = Timeouts::KUBEADM;
    (input.api == KubeadmApi::V1beta4).then(|| TimeoutsContext {
        control_plane: go_duration(t.control_plane),
        kubelet: go_duration(t.kubelet),
        etcd_api_call: go_duration(t.etcd_api_call),
        tls_bootstrap: go_duration(t.tls_bootstrap),
        discovery: go_duration(t.discovery),
    })
}

fn init<'a>(input: &Input<'a>) -> InitContext<'a> {
    InitContext {
        node: input.node.name.as_str(),
        api_version: input.api.as_str(),
        list_args: input.api == KubeadmApi::V1beta4,
        token: input.token,
        token_description: format!(
            "khactl: joins the nodes of {} to the cluster",
            input.inventory.cluster.name
        ),
        token_ttl: go_duration(TOKEN_TTL),
        advertise_address: input.node.address.to_string(),
        bind_port: API_SERVER_PORT,
        node_registration: node_registration(input),
        timeouts: timeouts(input),
    }
}

fn join<'a>(input: &Input<'a>) -> JoinContext<'a> {
    let control_plane = input.purpose == Purpose::JoinControlPlane;
    JoinContext {
        node: input.node.name.as_str(),
        role: input.node.role.as_str(),
        api_version: input.api.as_str(),
        list_args: input.api == KubeadmApi::V1beta4,
        token: input.token,
        api_server_endpoint: control_plane_endpoint(input.inventory),
        ca_cert_hash: input.ca_hash,
        discovery_timeout: (input.api == KubeadmApi::V1beta3)
            .then(|| go_duration(Timeouts::KUBEADM.discovery)),
        control_plane: control_plane.then(|| ApiEndpointContext {
            advertise_address: input.node.address.to_string(),
            bind_port: API_SERVER_PORT,
        }),
        node_registration: node_registration(input),
        timeouts: timeouts(input),
    }
}

/// A whole-second duration as Go's `Duration.String` writes it (`1h0m0s`, `4m0s`, `30s`),
/// the form kubeadm prints its own configuration in.
pub(super) fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}
