//! The certificates a cluster needs, as data: kubeadm's list (`kubeadm certs
//! check-expiration` shows the same names), with kubeadm's file names, the subjects
//! kubeadm of the target release gives them, their subject alternative names, and for
//! the kubeconfigs' client certificates the server URL kubeadm computes, all from the
//! inventory. No crypto and no I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;

use super::PkiError;
use crate::inventory::{Inventory, KubernetesVersion, Node, NodeName};

/// One of the three certificate authorities kubeadm expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Authority {
    /// `ca`: signs the API server's serving cert, kubelet and user client certs.
    Kubernetes,
    /// `front-proxy-ca`: trusted by the aggregation layer only, so a front-proxy client
    /// cert cannot impersonate a user (kubeadm keeps it separate for that reason).
    FrontProxy,
    /// `etcd/ca`: etcd trusts only certs from this CA, so nothing signed by the cluster
    /// CA (every kubelet holds one) can talk to etcd.
    Etcd,
}

impl Authority {
    pub const ALL: [Authority; 3] = [
        Authority::Kubernetes,
        Authority::FrontProxy,
        Authority::Etcd,
    ];

    /// kubeadm's base name, relative to the PKI directory (`.crt` / `.key` appended).
    pub fn base(self) -> &'static str {
        match self {
            Authority::Kubernetes => "ca",
            Authority::FrontProxy => "front-proxy-ca",
            Authority::Etcd => "etcd/ca",
        }
    }

    pub fn common_name(self) -> &'static str {
        match self {
            Authority::Kubernetes => "kubernetes",
            Authority::FrontProxy => "front-proxy-ca",
            Authority::Etcd => "etcd-ca",
        }
    }
}

/// The cfssl signing profiles of the classic "Kubernetes the hard way"-style guides,
/// which decide the extended key usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Server auth + client auth: etcd (since 3.2) also dials out with its serving cert,
    /// and the guides' server profile always carried both.
    Server,
    /// Client auth only.
    Client,
    /// Server auth + client auth: etcd members are both ends of every peer connection.
    Peer,
}

impl Profile {
    pub fn server_auth(self) -> bool {
        matches!(self, Profile::Server | Profile::Peer)
    }

    pub fn client_auth(self) -> bool {
        true
    }
}

/// Where a leaf goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `<base>.crt` and `<base>.key` under `/etc/kubernetes/pki`.
    PkiDir,
    /// Embedded, with the cluster CA, in a kubeconfig that names this API server URL.
    Kubeconfig { kind: Kubeconfig, server: String },
}

/// The kubeconfigs kubeadm writes on a control-plane node (its `kubeconfig.go`), plus
/// the user's own `admin.conf`. kubelet.conf is not among them: kubeadm writes it (init)
/// or the kubelet's TLS bootstrap makes it (join), and a join refuses to start if it
/// exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kubeconfig {
    /// `admin.conf` on every control plane; kubeadm itself uses it during init and join.
    Admin,
    /// `super-admin.conf`, on the node that runs `kubeadm init` only: init needs a
    /// `system:masters` identity to create the ClusterRoleBinding that gives
    /// `kubeadm:cluster-admins` its rights. One shared certificate, so whichever node
    /// a phase chooses for init can get it.
    SuperAdmin,
    ControllerManager,
    Scheduler,
    /// The `admin.conf` for the user's workstation, which khactl keeps in the state
    /// directory and never places on a node; its own key, so no node holds it.
    Workstation,
}

impl Kubeconfig {
    /// The file name under `/etc/kubernetes` (the workstation's is `admin.conf` too).
    pub fn file_name(self) -> &'static str {
        match self {
            Kubeconfig::Admin | Kubeconfig::Workstation => "admin.conf",
            Kubeconfig::SuperAdmin => "super-admin.conf",
            Kubeconfig::ControllerManager => "controller-manager.conf",
            Kubeconfig::Scheduler => "scheduler.conf",
        }
    }

    /// How reports and `khactl certs` name its certificate, as kubeadm's `certs
    /// check-expiration` does.
    fn name(self) -> &'static str {
        match self {
            Kubeconfig::Workstation => "admin.conf (workstation)",
            other => other.file_name(),
        }
    }

    /// The client certificate's pair in the state directory, before `nodes/<node>/`
    /// for per-node ones.
    fn local_base(self) -> &'static str {
        match self {
            Kubeconfig::Admin => "kubeconfig/admin",
            Kubeconfig::SuperAdmin => "kubeconfig/super-admin",
            Kubeconfig::ControllerManager => "kubeconfig/controller-manager",
            Kubeconfig::Scheduler => "kubeconfig/scheduler",
            Kubeconfig::Workstation => "kubeconfig/workstation-admin",
        }
    }

    /// The user: the client certificate's CN, which is also kubeadm's user name in the
    /// file.
    pub fn user(self) -> &'static str {
        match self {
            Kubeconfig::Admin | Kubeconfig::Workstation => "kubernetes-admin",
            Kubeconfig::SuperAdmin => "kubernetes-super-admin",
            Kubeconfig::ControllerManager => "system:kube-controller-manager",
            Kubeconfig::Scheduler => "system:kube-scheduler",
        }
    }

    fn organizations(self, kubernetes_version: &KubernetesVersion) -> Vec<String> {
        match self {
            Kubeconfig::Admin | Kubeconfig::Workstation => {
                vec![admin_group(kubernetes_version).to_owned()]
            }
            Kubeconfig::SuperAdmin => vec![SYSTEM_MASTERS.to_owned()],
            Kubeconfig::ControllerManager | Kubeconfig::Scheduler => vec![],
        }
    }
}

/// Everything that identifies one leaf certificate. Two specs that compare equal
/// describe interchangeable certificates; that is what makes a leaf reusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// The pair's path in the state directory, without extension and without the
    /// `nodes/<node>/` of per-node ones; for [`Placement::PkiDir`] also kubeadm's
    /// base name under the PKI directory (`apiserver`, `etcd/peer`).
    pub base: &'static str,
    /// The node a per-node certificate belongs to; `None` for shared ones.
    pub node: Option<NodeName>,
    pub placement: Placement,
    pub authority: Authority,
    pub common_name: String,
    pub organizations: Vec<String>,
    pub profile: Profile,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

impl LeafSpec {
    /// Where the pair lives in the local state, without extension: shared certs at
    /// kubeadm's place, per-node certs under `nodes/<node>/` with the same layout.
    pub fn local_base(&self) -> PathBuf {
        match &self.node {
            Some(node) => PathBuf::from("nodes").join(node.as_str()).join(self.base),
            None => PathBuf::from(self.base),
        }
    }

    /// kubeadm's name: the base name of a PKI file, or the kubeconfig's file name.
    pub fn name(&self) -> &'static str {
        match &self.placement {
            Placement::PkiDir => self.base,
            Placement::Kubeconfig { kind, .. } => kind.name(),
        }
    }

    /// How progress output and `khactl certs` name it: `etcd/peer (cp-1)`.
    pub fn display_name(&self) -> String {
        match &self.node {
            Some(node) => format!("{} ({node})", self.name()),
            None => self.name().to_owned(),
        }
    }
}

/// Every leaf certificate placed on nodes, shared ones first, then per control-plane
/// node in inventory order, then (external etcd) per etcd node. Nothing of one node's depends on another node, so adding a
/// control plane adds its leaves and changes no other.
pub fn leaf_specs(inventory: &Inventory) -> Result<Vec<LeafSpec>, PkiError> {
    let service_ip = first_service_ip(inventory.networking.service_subnet)?;
    let version = &inventory.cluster.kubernetes_version;
    let mut specs = vec![
        client(
            "apiserver-kubelet-client",
            Authority::Kubernetes,
            "kube-apiserver-kubelet-client",
            vec![kubelet_client_group(version).to_owned()],
        ),
        client(
            "front-proxy-client",
            Authority::FrontProxy,
            "front-proxy-client",
            vec![],
        ),
        client(
            "apiserver-etcd-client",
            Authority::Etcd,
            "kube-apiserver-etcd-client",
            vec![],
        ),
        client(
            "etcd/healthcheck-client",
            Authority::Etcd,
            "kube-etcd-healthcheck-client",
            vec![],
        ),
        kubeconfig_client(
            Kubeconfig::SuperAdmin,
            None,
            version,
            endpoint_url(inventory),
        ),
    ];
    for node in inventory.control_plane() {
        specs.push(LeafSpec {
            base: "apiserver",
            node: Some(node.name.clone()),
            placement: Placement::PkiDir,
            authority: Authority::Kubernetes,
            common_name: "kube-apiserver".to_owned(),
            organizations: vec![],
            profile: Profile::Server,
            dns_names: apiserver_dns_names(inventory, node),
            ip_addresses: apiserver_ips(inventory, node, service_ip),
        });
        if !inventory.external_etcd() {
            specs.extend(etcd_member_specs(node));
        }
        // kubeadm writes these on every control plane, each with its own key; the
        // components reach their own node's API server, the admin the endpoint.
        for (kind, server) in [
            (Kubeconfig::Admin, endpoint_url(inventory)),
            (Kubeconfig::ControllerManager, local_api_url(node)),
            (Kubeconfig::Scheduler, local_api_url(node)),
        ] {
            specs.push(kubeconfig_client(kind, Some(&node.name), version, server));
        }
    }
    // External etcd: the members are the `role: etcd` nodes (the cfssl guide's server and
    // peer profiles), after every control plane so theirs keep their order.
    if inventory.external_etcd() {
        for node in inventory.etcd_nodes() {
            specs.extend(etcd_member_specs(node));
        }
    }
    Ok(specs)
}

/// An etcd member's server and peer certificates. kubeadm: CN and first SAN are the node
/// name, plus loopback in every form so `etcdctl --endpoints https://127.0.0.1:2379`
/// verifies too.
fn etcd_member_specs(node: &Node) -> [LeafSpec; 2] {
    [
        ("etcd/server", Profile::Server),
        ("etcd/peer", Profile::Peer),
    ]
    .map(|(base, profile)| LeafSpec {
        base,
        node: Some(node.name.clone()),
        placement: Placement::PkiDir,
        authority: Authority::Etcd,
        common_name: node.name.to_string(),
        organizations: vec![],
        profile,
        dns_names: vec![node.name.to_string(), "localhost".to_owned()],
        ip_addresses: dedup(vec![
            node.address,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]),
    })
}

/// The client certificate of the workstation's `admin.conf`: kept apart from
/// [`leaf_specs`] because no node ever gets it.
pub fn workstation_admin_spec(inventory: &Inventory) -> LeafSpec {
    kubeconfig_client(
        Kubeconfig::Workstation,
        None,
        &inventory.cluster.kubernetes_version,
        workstation_url(inventory),
    )
}

fn kubeconfig_client(
    kind: Kubeconfig,
    node: Option<&NodeName>,
    version: &KubernetesVersion,
    server: String,
) -> LeafSpec {
    LeafSpec {
        node: node.cloned(),
        placement: Placement::Kubeconfig { kind, server },
        ..client(
            kind.local_base(),
            Authority::Kubernetes,
            kind.user(),
            kind.organizations(version),
        )
    }
}

fn client(
    base: &'static str,
    authority: Authority,
    common_name: &str,
    organizations: Vec<String>,
) -> LeafSpec {
    LeafSpec {
        base,
        node: None,
        placement: Placement::PkiDir,
        authority,
        common_name: common_name.to_owned(),
        organizations,
        profile: Profile::Client,
        dns_names: vec![],
        ip_addresses: vec![],
    }
}

/// The group of `admin.conf`'s user: `kubeadm:cluster-admins` since kubeadm 1.29, which
/// stopped putting everyday admins in `system:masters` (RBAC cannot restrict it, so a
/// leaked admin.conf could not be revoked by removing a binding).
pub fn admin_group(kubernetes_version: &KubernetesVersion) -> &'static str {
    if kubernetes_version.at_least(1, 29) {
        CLUSTER_ADMINS
    } else {
        SYSTEM_MASTERS
    }
}

/// The group of the API server's kubelet client cert, as kubeadm's `certlist.go` has
/// it for each release:
/// - before 1.29, `system:masters`, which no RBAC rule can restrict;
/// - 1.29 to 1.36, `kubeadm:cluster-admins`, bound to cluster-admin by a
///   ClusterRoleBinding kubeadm creates;
/// - from 1.37, `system:kubelet-api-admin`, which holds only the kubelet API
///   permissions the API server needs (k/k PR #138957).
///
/// kubeadm never checks the O of an existing cert, so a wrong one would pass `init` and
/// grant the API server too much or too little on kubelets; the version decides it here.
pub fn kubelet_client_group(kubernetes_version: &KubernetesVersion) -> &'static str {
    if kubernetes_version.at_least(1, 37) {
        "system:kubelet-api-admin"
    } else {
        admin_group(kubernetes_version)
    }
}

/// kubeadm's group for cluster administrators since 1.29 (`admin.conf`).
const CLUSTER_ADMINS: &str = "kubeadm:cluster-admins";
/// The group the API server grants everything, bypassing RBAC (`super-admin.conf`).
const SYSTEM_MASTERS: &str = "system:masters";

/// kubeadm's required names for a node's API server (`GetAPIServerAltNames`): the
/// node's name and address, the in-cluster service names and IP, and the
/// controlPlaneEndpoint host, which is ours: the VIP's DNS name when set, and the VIP
/// itself either way, so clients that dial the bare VIP verify too.
///
/// Only this node: a kubeadm-made cert names no other control plane, and naming them
/// would re-issue every node's cert whenever one is added or removed. Nothing dials a
/// node's API server by another node's name or address.
fn apiserver_dns_names(inventory: &Inventory, node: &Node) -> Vec<String> {
    let mut names = vec![node.name.to_string()];
    names.extend(["kubernetes", "kubernetes.default", "kubernetes.default.svc"].map(str::to_owned));
    names.push(format!(
        "kubernetes.default.svc.{}",
        inventory.networking.dns_domain
    ));
    if let Some(dns) = inventory.api_dns_name() {
        names.push(dns.to_string());
    }
    dedup(names)
}

/// The node-local balancer dials its backends by address, but kubelets and kube-proxy
/// reach the API as `https://<name>:<port>` resolved to 127.0.0.1; a client that uses the
/// bare loopback address must verify too, so 127.0.0.1 is named as well. Behind an
/// external balancer control planes resolve the name to 127.0.0.1 too, and a client may
/// dial the balancer's address.
fn apiserver_ips(inventory: &Inventory, node: &Node, service_ip: IpAddr) -> Vec<IpAddr> {
    let mut ips = vec![service_ip, node.address];
    ips.extend(inventory.vip.as_ref().map(|v| IpAddr::V4(v.address)));
    let external = inventory.external_lb();
    ips.extend(external.as_ref().and_then(|e| e.address).map(IpAddr::V4));
    if inventory.node_local().is_some() || external.is_some() {
        ips.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    dedup(ips)
}

/// The port every kube-apiserver binds on its node (kubeadm's default
/// `localAPIEndpoint.bindPort`, which khactl's kubeadm configuration keeps).
pub const APISERVER_BIND_PORT: u16 = crate::inventory::Port::API_SERVER.get();

/// The controlPlaneEndpoint, `host:port`: the VIP's DNS name when the inventory has one,
/// else the VIP, with the load balancer's port. The kubeadm configuration must use
/// exactly this value: `admin.conf`'s server URL is derived from it, and kubeadm
/// compares that URL with the one in a kubeconfig it finds in place.
pub fn control_plane_endpoint(inventory: &Inventory) -> String {
    inventory.api_endpoint().to_string()
}

/// kubeadm's URL for `admin.conf` and `super-admin.conf` (`GetControlPlaneEndpoint`):
/// the controlPlaneEndpoint with its own port, which overrides the bind port.
pub fn endpoint_url(inventory: &Inventory) -> String {
    format!("https://{}", control_plane_endpoint(inventory))
}

/// kubeadm's URL for `controller-manager.conf` and `scheduler.conf`
/// (`GetLocalAPIEndpoint`): the node's own API server, so neither depends on the VIP.
/// IPv6 addresses come in brackets, as Go's `net.JoinHostPort` writes them.
pub fn local_api_url(node: &Node) -> String {
    format!(
        "https://{}",
        SocketAddr::new(node.address, APISERVER_BIND_PORT)
    )
}

/// The URL of the workstation's `admin.conf`: the VIP by address, which works where the
/// VIP's DNS name does not resolve (it is often only in the nodes' `/etc/hosts`); every
/// API server certificate names the VIP. Without a VIP (node-local balancers, whose name
/// means 127.0.0.1 on the nodes only) it is the first control plane's own API server,
/// whose certificate names its address. Behind an external balancer it is the balancer
/// (a workstation is not one of its backends), by address when the inventory has it.
pub fn workstation_url(inventory: &Inventory) -> String {
    if let Some(ext) = inventory.external_lb() {
        return match ext.address {
            Some(a) => format!("https://{a}:{APISERVER_BIND_PORT}"),
            None => endpoint_url(inventory),
        };
    }
    match (&inventory.vip, inventory.control_plane().next()) {
        (Some(vip), _) => format!("https://{}:{}", vip.address, vip.port.get()),
        (None, Some(cp)) => local_api_url(cp),
        (None, None) => endpoint_url(inventory),
    }
}

/// The `kubernetes` service's cluster IP: the service subnet's network address + 1,
/// which the apiserver allocates to itself.
pub fn first_service_ip(subnet: IpNet) -> Result<IpAddr, PkiError> {
    let too_small = || PkiError::ServiceSubnetTooSmall { subnet };
    let ip = match subnet.network() {
        IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(
            u32::from(n).checked_add(1).ok_or_else(too_small)?,
        )),
        IpAddr::V6(n) => IpAddr::V6(Ipv6Addr::from(
            u128::from(n).checked_add(1).ok_or_else(too_small)?,
        )),
    };
    if subnet.contains(&ip) {
        Ok(ip)
    } else {
        Err(too_small())
    }
}

fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::inventory::DnsName;
    use crate::pki::tests::inventory;

    fn spec<'a>(specs: &'a [LeafSpec], base: &str, node: Option<&str>) -> &'a LeafSpec {
        specs
            .iter()
            .find(|s| s.base == base && s.node.as_ref().map(NodeName::as_str) == node)
            .unwrap()
    }

    #[test]
    fn the_endpoint_is_the_dns_name_or_the_vip_with_the_load_balancer_port() {
        let mut inv = inventory(1, 0);
        assert_eq!(control_plane_endpoint(&inv), "k8s-api.lab.test:8443");
        assert_eq!(endpoint_url(&inv), "https://k8s-api.lab.test:8443");
        inv.vip.as_mut().unwrap().dns_name = None;
        assert_eq!(endpoint_url(&inv), "https://10.77.0.100:8443");
        inv.vip.as_mut().unwrap().dns_name = Some(DnsName::new("api.example").unwrap());
        assert_eq!(
            workstation_url(&inv),
            "https://10.77.0.100:8443",
            "the workstation dials the VIP itself"
        );
    }

    #[test]
    fn the_local_url_is_the_nodes_address_and_the_bind_port() {
        let mut inv = inventory(1, 0);
        assert_eq!(local_api_url(&inv.nodes[0]), "https://10.77.0.11:6443");
        inv.nodes[0].address = "fd00::11".parse().unwrap();
        assert_eq!(local_api_url(&inv.nodes[0]), "https://[fd00::11]:6443");
    }

    #[test]
    fn first_service_ip_is_network_plus_one() {
        assert_eq!(
            first_service_ip("10.96.0.0/12".parse().unwrap()).unwrap(),
            "10.96.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_service_ip("10.96.5.7/12".parse().unwrap()).unwrap(),
            "10.96.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_service_ip("fd00:10::/108".parse().unwrap()).unwrap(),
            "fd00:10::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn rejects_a_service_subnet_without_room() {
        let err = first_service_ip("10.96.0.7/32".parse().unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("networking.serviceSubnet 10.96.0.7/32"),
            "{err}"
        );
    }

    #[test]
    fn apiserver_names_kubeadms_required_set_plus_the_vip_and_no_other_node() {
        let specs = leaf_specs(&inventory(3, 1)).unwrap();
        let api = spec(&specs, "apiserver", Some("cp-2"));
        assert_eq!(api.common_name, "kube-apiserver");
        assert_eq!(
            api.dns_names,
            [
                "cp-2",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "k8s-api.lab.test",
            ]
        );
        let ips: Vec<String> = api.ip_addresses.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.96.0.1", "10.77.0.12", "10.77.0.100"]);
    }

    #[test]
    fn node_local_apiservers_name_the_endpoint_and_loopback_and_no_vip() {
        let example = include_str!("../../inventories/nginx-on-every-node.yaml");
        let inv = crate::inventory::parse(example).unwrap().inventory;
        let specs = leaf_specs(&inv).unwrap();
        let api = spec(&specs, "apiserver", Some("master2"));
        assert!(
            api.dns_names
                .contains(&"k8s-api.cluster.internal".to_owned())
        );
        let ips: Vec<String> = api.ip_addresses.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.96.0.1", "192.168.1.102", "127.0.0.1"]);
        assert_eq!(
            control_plane_endpoint(&inv),
            "k8s-api.cluster.internal:6444"
        );
        assert_eq!(
            workstation_url(&inv),
            "https://192.168.1.101:6443",
            "no VIP: the workstation dials the first control plane"
        );
    }

    #[test]
    fn apiserver_names_follow_the_dns_domain() {
        let mut inv = inventory(1, 0);
        inv.networking.dns_domain = DnsName::new("corp.example").unwrap();
        let specs = leaf_specs(&inv).unwrap();
        let names = &spec(&specs, "apiserver", Some("cp-1")).dns_names;
        assert!(names.contains(&"kubernetes.default.svc.corp.example".to_owned()));
        assert!(!names.iter().any(|n| n.ends_with("cluster.local")));
    }

    #[test]
    fn apiserver_has_no_dns_name_san_when_the_vip_has_none() {
        let mut inv = inventory(1, 0);
        inv.vip.as_mut().unwrap().dns_name = None;
        let specs = leaf_specs(&inv).unwrap();
        assert!(
            !spec(&specs, "apiserver", Some("cp-1"))
                .dns_names
                .iter()
                .any(|n| n.contains("lab.test"))
        );
    }

    #[test]
    fn etcd_certs_are_named_after_their_node_and_loopback() {
        let specs = leaf_specs(&inventory(2, 0)).unwrap();
        for base in ["etcd/server", "etcd/peer"] {
            let s = spec(&specs, base, Some("cp-2"));
            assert_eq!(s.common_name, "cp-2");
            assert_eq!(s.authority, Authority::Etcd);
            assert_eq!(s.dns_names, ["cp-2", "localhost"]);
            let ips: Vec<String> = s.ip_addresses.iter().map(ToString::to_string).collect();
            assert_eq!(ips, ["10.77.0.12", "127.0.0.1", "::1"]);
        }
    }

    #[test]
    fn workers_get_no_per_node_certificates() {
        let specs = leaf_specs(&inventory(1, 2)).unwrap();
        assert_eq!(specs.len(), 5 + 6);
        assert!(
            specs
                .iter()
                .all(|s| s.node.as_ref().is_none_or(|n| n.as_str() == "cp-1"))
        );
    }

    #[test]
    fn client_certificates_follow_kubeadm_subjects() {
        let specs = leaf_specs(&inventory(1, 0)).unwrap();
        let subject = |base| {
            let s = spec(&specs, base, None);
            assert_eq!(s.profile, Profile::Client);
            (s.common_name.clone(), s.organizations.clone(), s.authority)
        };
        assert_eq!(
            subject("apiserver-kubelet-client"),
            (
                "kube-apiserver-kubelet-client".into(),
                vec!["kubeadm:cluster-admins".into()],
                Authority::Kubernetes
            )
        );
        assert_eq!(
            subject("front-proxy-client"),
            ("front-proxy-client".into(), vec![], Authority::FrontProxy)
        );
        assert_eq!(
            subject("apiserver-etcd-client"),
            ("kube-apiserver-etcd-client".into(), vec![], Authority::Etcd)
        );
        assert_eq!(
            subject("etcd/healthcheck-client"),
            (
                "kube-etcd-healthcheck-client".into(),
                vec![],
                Authority::Etcd
            )
        );
    }

    #[test]
    fn kubelet_client_group_follows_the_kubeadm_version() {
        for (version, group) in [
            ("v1.28.9", "system:masters"),
            ("v1.29.0", "kubeadm:cluster-admins"),
            ("v1.31.2", "kubeadm:cluster-admins"),
            ("v1.36.9", "kubeadm:cluster-admins"),
            ("v1.37.0", "system:kubelet-api-admin"),
        ] {
            let v = KubernetesVersion::new(version).unwrap();
            assert_eq!(kubelet_client_group(&v), group, "{version}");
        }
    }

    #[test]
    fn per_node_certificates_live_under_their_node() {
        let specs = leaf_specs(&inventory(1, 0)).unwrap();
        assert_eq!(
            spec(&specs, "etcd/peer", Some("cp-1")).local_base(),
            PathBuf::from("nodes/cp-1/etcd/peer")
        );
        assert_eq!(
            spec(&specs, "etcd/healthcheck-client", None).local_base(),
            PathBuf::from("etcd/healthcheck-client")
        );
        assert_eq!(
            spec(&specs, "etcd/peer", Some("cp-1")).display_name(),
            "etcd/peer (cp-1)"
        );
    }
}
