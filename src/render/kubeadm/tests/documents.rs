//! What each document says, field by field, per API version and purpose.

use super::*;

#[test]
fn init_on_1_31_renders_four_v1beta4_documents() {
    let want = r#"# Managed by khactl: the configuration of `kubeadm init` on "cp1".
# It holds the cluster's bootstrap token: written with mode 0600 and removed once used.
# Generated from the inventory; change the inventory, not this file.
apiVersion: "kubeadm.k8s.io/v1beta4"
kind: InitConfiguration
bootstrapTokens:
  - token: "abcdef.0123456789abcdef"
    description: "khactl: joins the nodes of prod to the cluster"
    ttl: "1h0m0s"
    usages: ["signing", "authentication"]
    groups: ["system:bootstrappers:kubeadm:default-node-token"]
# This node's API server; the cluster's endpoint is controlPlaneEndpoint below.
localAPIEndpoint:
  advertiseAddress: "10.0.0.11"
  bindPort: 6443
nodeRegistration:
  name: "cp1"
  criSocket: "unix:///var/run/crio/crio.sock"
  taints:
    - key: "node-role.kubernetes.io/control-plane"
      effect: "NoSchedule"
  kubeletExtraArgs:
    - name: "max-pods"
      value: "150"
    - name: "node-labels"
      value: "example.com/tier=core"
timeouts:
  controlPlaneComponentHealthCheck: "4m0s"
  kubeletHealthCheck: "4m0s"
---
apiVersion: "kubeadm.k8s.io/v1beta4"
kind: ClusterConfiguration
clusterName: "prod"
kubernetesVersion: "v1.31.2"
# Every client reaches the API servers through khagent's load balancer on the virtual IP.
# Each API server listens on port 6443 of its own node and the balancer on another port,
# so the two never compete for a port and kubeadm's Port-6443 preflight check passes.
controlPlaneEndpoint: "k8s-api.prod.internal:16443"
imageRepository: "registry.example.com/k8s"
networking:
  podSubnet: "10.32.0.0/16"
  serviceSubnet: "10.64.0.0/16"
  dnsDomain: "prod.local"
apiServer:
  # Names of the endpoint, which every API server certificate khactl issues carries.
  certSANs:
    - "10.0.0.100"
    - "k8s-api.prod.internal"
  extraArgs:
    - name: "audit-log-maxage"
      value: "30"
    - name: "audit-log-path"
      value: "/var/log/audit.log"
controllerManager:
  extraArgs:
    - name: "node-monitor-grace-period"
      value: "20s"
scheduler:
  extraArgs:
    - name: "v"
      value: "2"
etcd:
  # Stacked: an etcd member on every control plane, with the certificates khactl placed.
  # The extra SANs are only those every member's certificates carry: this configuration
  # is the cluster's, and a joining member's certificates are checked against it.
  local:
    dataDir: "/var/lib/etcd"
    serverCertSANs:
      - "localhost"
      - "127.0.0.1"
      - "::1"
    peerCertSANs:
      - "localhost"
      - "127.0.0.1"
      - "::1"
    extraArgs:
      - name: "quota-backend-bytes"
        value: "8589934592"
---
apiVersion: "kubelet.config.k8s.io/v1beta1"
kind: KubeletConfiguration
# The kubelet must use the container runtime's cgroup driver; khactl's nodes use systemd's.
cgroupDriver: "systemd"
---
apiVersion: "kubeproxy.config.k8s.io/v1alpha1"
kind: KubeProxyConfiguration
clusterCIDR: "10.32.0.0/16"
"#;
    let docs = render(&inventory("v1.31.2"), "cp1");
    assert_eq!(docs.text(), want);
    assert_eq!(
        (docs.purpose(), docs.api(), docs.node().as_str()),
        (Purpose::Init, KubeadmApi::V1beta4, "cp1")
    );
}

#[test]
fn worker_join_on_1_30_renders_one_v1beta3_document_with_maps() {
    let want = r#"# Managed by khactl: the configuration of `kubeadm join` of "w2" ("worker").
# It holds the cluster's bootstrap token: written with mode 0600 and removed once used.
# Generated from the inventory; change the inventory, not this file.
apiVersion: "kubeadm.k8s.io/v1beta3"
kind: JoinConfiguration
discovery:
  bootstrapToken:
    token: "abcdef.0123456789abcdef"
    apiServerEndpoint: "k8s-api.prod.internal:16443"
    # The public key pin of the cluster CA that khactl generated: discovery trusts the
    # cluster's answer only if it is signed by that CA.
    caCertHashes:
      - "sha256:0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b"
  timeout: "5m0s"
nodeRegistration:
  name: "w2"
  criSocket: "unix:///var/run/crio/crio.sock"
  taints:
    - key: "example.com/gpu"
      value: "true"
      effect: "NoSchedule"
    - key: "example.com/drain"
      effect: "NoExecute"
  kubeletExtraArgs:
    "max-pods": "150"
"#;
    let docs = render(&inventory("v1.30.4"), "w2");
    assert_eq!(docs.text(), want);
    assert_eq!(docs.api(), KubeadmApi::V1beta3);
}

/// The same inventory on 1.31 and on 1.37 gives identical v1beta4 documents apart from
/// the version; every field is read back through kubeadm's types.
#[test]
fn v1beta4_documents_hold_every_field_for_1_31_and_1_37() {
    for version in ["v1.31.2", "v1.37.0"] {
        let inv = inventory(version);
        let init = render(&inv, "cp1");
        let [
            Document::InitV1beta4(i),
            Document::ClusterV1beta4(c),
            Document::Kubelet(k),
            Document::KubeProxy(p),
        ] = init.documents()
        else {
            panic!("{version}: {:?}", init.documents())
        };
        assert_eq!(i.api_version, "kubeadm.k8s.io/v1beta4");
        let bt = &i.bootstrap_tokens[..];
        assert_eq!(bt.len(), 1);
        assert_eq!(bt[0].token.as_ref().unwrap().reveal(), TOKEN);
        assert_eq!(bt[0].ttl.unwrap().0, TOKEN_TTL);
        assert_eq!(bt[0].usages, ["signing", "authentication"]);
        assert_eq!(
            bt[0].groups,
            ["system:bootstrappers:kubeadm:default-node-token"]
        );
        assert_eq!(
            (
                i.local_api_endpoint.advertise_address.as_str(),
                i.local_api_endpoint.bind_port
            ),
            ("10.0.0.11", 6443)
        );
        let r = &i.node_registration;
        assert_eq!(
            (r.name.as_str(), r.cri_socket.as_str()),
            ("cp1", "unix:///var/run/crio/crio.sock")
        );
        assert_eq!(r.taints, Some(control_plane_taint()));
        assert_eq!(
            r.kubelet_extra_args,
            [
                arg("max-pods", "150"),
                arg("node-labels", "example.com/tier=core")
            ]
        );
        assert!(i.certificate_key.is_empty() && i.skip_phases.is_empty() && i.patches.is_none());
        let t = i.timeouts.as_ref().unwrap();
        assert_eq!(
            t.control_plane_component_health_check.unwrap().0,
            Timeouts::KUBEADM.control_plane
        );
        assert_eq!(t.kubelet_health_check.unwrap().0, Timeouts::KUBEADM.kubelet);

        assert_eq!(
            (c.cluster_name.as_str(), c.kubernetes_version.as_str()),
            ("prod", version)
        );
        assert_eq!(c.control_plane_endpoint, "k8s-api.prod.internal:16443");
        assert_eq!(c.image_repository, "registry.example.com/k8s");
        assert_eq!(
            (
                c.networking.pod_subnet.as_str(),
                c.networking.service_subnet.as_str(),
                c.networking.dns_domain.as_str()
            ),
            ("10.32.0.0/16", "10.64.0.0/16", "prod.local")
        );
        assert_eq!(
            c.api_server.cert_sans,
            ["10.0.0.100", "k8s-api.prod.internal"]
        );
        assert_eq!(
            c.api_server.extra_args,
            [
                arg("audit-log-maxage", "30"),
                arg("audit-log-path", "/var/log/audit.log")
            ]
        );
        assert_eq!(
            c.controller_manager.extra_args,
            [arg("node-monitor-grace-period", "20s")]
        );
        assert_eq!(c.scheduler.extra_args, [arg("v", "2")]);
        let etcd = c.etcd.local.as_ref().unwrap();
        assert!(c.etcd.external.is_none());
        assert_eq!(etcd.data_dir, "/var/lib/etcd");
        assert_eq!(etcd.server_cert_sans, ["localhost", "127.0.0.1", "::1"]);
        assert_eq!(etcd.peer_cert_sans, etcd.server_cert_sans);
        assert_eq!(etcd.extra_args, [arg("quota-backend-bytes", "8589934592")]);
        assert!(c.feature_gates.is_empty());
        assert_eq!(k.cgroup_driver, "systemd");
        assert_eq!(p.cluster_cidr, "10.32.0.0/16");

        let cp = render(&inv, "cp2");
        let [Document::JoinV1beta4(j)] = cp.documents() else {
            panic!("{:?}", cp.documents())
        };
        let d = j.discovery.bootstrap_token.as_ref().unwrap();
        assert_eq!(d.token.0, TOKEN);
        assert_eq!(d.api_server_endpoint, "k8s-api.prod.internal:16443");
        assert_eq!(d.ca_cert_hashes, [hash()]);
        assert!(!d.unsafe_skip_ca_verification && j.discovery.file.is_none());
        let plane = j.control_plane.as_ref().unwrap();
        assert_eq!(
            (
                plane.local_api_endpoint.advertise_address.as_str(),
                plane.local_api_endpoint.bind_port
            ),
            ("10.0.0.12", 6443)
        );
        assert!(plane.certificate_key.is_empty());
        assert_eq!(j.node_registration.name, "cp2");
        assert_eq!(j.node_registration.taints, Some(control_plane_taint()));
        assert_eq!(
            j.node_registration.kubelet_extra_args,
            [arg("max-pods", "150")]
        );
        let t = j.timeouts.as_ref().unwrap();
        assert_eq!(t.discovery.unwrap().0, Timeouts::KUBEADM.discovery);
        assert_eq!(t.tls_bootstrap.unwrap().0, Timeouts::KUBEADM.tls_bootstrap);
        assert_eq!(t.etcd_api_call.unwrap().0, Timeouts::KUBEADM.etcd_api_call);

        let worker = render(&inv, "w1");
        let [Document::JoinV1beta4(w)] = worker.documents() else {
            panic!("{:?}", worker.documents())
        };
        assert!(w.control_plane.is_none());
        assert_eq!(
            w.discovery.bootstrap_token.as_ref().unwrap().ca_cert_hashes,
            [hash()]
        );
        assert_eq!(w.node_registration.taints, Some(vec![]));
        assert_eq!(
            w.node_registration.kubelet_extra_args,
            [
                arg("max-pods", "150"),
                arg(
                    "node-labels",
                    "example.com/pool=general,node.kubernetes.io/disk=ssd"
                )
            ]
        );
    }
}

#[test]
fn v1beta3_documents_hold_every_field_for_1_30() {
    let inv = inventory("v1.30.4");
    let init = render(&inv, "cp1");
    let [
        Document::InitV1beta3(i),
        Document::ClusterV1beta3(c),
        Document::Kubelet(_),
        Document::KubeProxy(_),
    ] = init.documents()
    else {
        panic!("{:?}", init.documents())
    };
    assert_eq!(
        i.bootstrap_tokens[0].token.as_ref().unwrap().reveal(),
        TOKEN
    );
    assert_eq!(i.local_api_endpoint.advertise_address, "10.0.0.11");
    assert_eq!(
        i.node_registration.kubelet_extra_args,
        map(&[
            ("max-pods", "150"),
            ("node-labels", "example.com/tier=core")
        ])
    );
    assert_eq!(i.node_registration.taints, Some(control_plane_taint()));
    assert_eq!(c.kubernetes_version, "v1.30.4");
    assert_eq!(c.control_plane_endpoint, "k8s-api.prod.internal:16443");
    assert_eq!(
        c.api_server.extra_args,
        map(&[
            ("audit-log-maxage", "30"),
            ("audit-log-path", "/var/log/audit.log")
        ])
    );
    assert_eq!(
        c.api_server.timeout_for_control_plane.unwrap().0,
        Timeouts::KUBEADM.control_plane
    );
    assert_eq!(
        c.controller_manager.extra_args,
        map(&[("node-monitor-grace-period", "20s")])
    );
    assert_eq!(c.scheduler.extra_args, map(&[("v", "2")]));
    let etcd = c.etcd.local.as_ref().unwrap();
    assert_eq!(
        etcd.extra_args,
        map(&[("quota-backend-bytes", "8589934592")])
    );
    assert_eq!(etcd.server_cert_sans, ["localhost", "127.0.0.1", "::1"]);

    let cp = render(&inv, "cp3");
    let [Document::JoinV1beta3(j)] = cp.documents() else {
        panic!("{:?}", cp.documents())
    };
    assert_eq!(
        j.control_plane
            .as_ref()
            .unwrap()
            .local_api_endpoint
            .advertise_address,
        "10.0.0.13"
    );
    assert_eq!(j.discovery.timeout.unwrap().0, Timeouts::KUBEADM.discovery);
    // `taints: []` in the inventory: no taint, not kubeadm's default.
    assert_eq!(j.node_registration.taints, Some(vec![]));
    let effective = |name: &str| effective_taints(inv.node(name).unwrap());
    assert_eq!(effective("cp3"), []);
    assert_eq!(effective("w1"), []);
    let cp2 = effective("cp2");
    assert_eq!(
        (cp2[0].key.as_str(), cp2[0].value.as_deref(), cp2[0].effect),
        (
            "node-role.kubernetes.io/control-plane",
            None,
            inventory::TaintEffect::NoSchedule
        )
    );
    assert_eq!(effective("w2").len(), 2);

    let worker = render(&inv, "w1");
    let [Document::JoinV1beta3(w)] = worker.documents() else {
        panic!("{:?}", worker.documents())
    };
    assert!(w.control_plane.is_none());
    assert_eq!(
        w.node_registration.kubelet_extra_args["node-labels"],
        "example.com/pool=general,node.kubernetes.io/disk=ssd"
    );
}

/// The endpoint is the VIP when there is no DNS name; an unset mirror is not rendered.
#[test]
fn without_a_dns_name_the_endpoint_is_the_vip() {
    let text = "apiVersion: khactl.io/v1alpha1\nkind: Inventory\n\
                cluster: { name: demo, kubernetesVersion: v1.33.1 }\nvip: { address: 10.0.0.100 }\n\
                nodes: [{ name: cp1, address: 10.0.0.11, role: control-plane }, \
                { name: w1, address: 10.0.0.21, role: worker }]\n";
    let inv = inventory::parse(text).unwrap().inventory;
    let init = render(&inv, "cp1");
    let Document::ClusterV1beta4(c) = &init.documents()[1] else {
        panic!()
    };
    assert_eq!(c.control_plane_endpoint, "10.0.0.100:8443");
    assert_eq!(c.api_server.cert_sans, ["10.0.0.100"]);
    assert_eq!(c.image_repository, "");
    assert!(c.api_server.extra_args.is_empty() && c.controller_manager.extra_args.is_empty());
    assert_eq!(
        c.networking.pod_subnet,
        inv.networking.pod_subnet.to_string()
    );
    assert!(!init.text().contains("imageRepository") && !init.text().contains("controllerManager"));
    let worker = render(&inv, "w1");
    let Document::JoinV1beta4(w) = &worker.documents()[0] else {
        panic!()
    };
    let d = w.discovery.bootstrap_token.as_ref().unwrap();
    assert_eq!(d.api_server_endpoint, "10.0.0.100:8443");
    assert!(w.node_registration.kubelet_extra_args.is_empty());
    assert!(!worker.text().contains("kubeletExtraArgs"));
}

/// Node-local balancers: every node dials the endpoint's name, which its `/etc/hosts` makes
/// 127.0.0.1 (its own khagent); the API server certificates name it and 127.0.0.1, no VIP.
#[test]
fn with_node_local_balancers_the_endpoint_is_the_name_on_the_local_port() {
    let example = include_str!("../../../../inventories/nginx-on-every-node.yaml");
    let inv = inventory::parse(example).unwrap().inventory;
    let init = render(&inv, "master1");
    let Document::ClusterV1beta4(c) = &init.documents()[1] else {
        panic!()
    };
    assert_eq!(c.control_plane_endpoint, "k8s-api.cluster.internal:6444");
    assert_eq!(
        c.api_server.cert_sans,
        ["127.0.0.1", "k8s-api.cluster.internal"]
    );
    let worker = render(&inv, "node1");
    let Document::JoinV1beta4(w) = &worker.documents()[0] else {
        panic!()
    };
    let d = w.discovery.bootstrap_token.as_ref().unwrap();
    assert_eq!(d.api_server_endpoint, "k8s-api.cluster.internal:6444");
    // The node IP cannot come from the route to 127.0.0.1: it is the inventory's.
    assert!(
        worker.text().contains("node-ip") && worker.text().contains("192.168.1.111"),
        "{}",
        worker.text()
    );
}

/// An external balancer without hairpin (the cloud-LB guide): the endpoint is the name on
/// the API servers' own 6443 (control planes resolve it to themselves); the certificates
/// name the balancer's address, 127.0.0.1 and the name; the comment says which layout.
#[test]
fn behind_an_external_balancer_the_endpoint_is_the_name_on_6443() {
    let example = include_str!("../../../../inventories/cloud-lb-without-hairpin.yaml");
    let inv = inventory::parse(example).unwrap().inventory;
    let init = render(&inv, "master1");
    let Document::ClusterV1beta4(c) = &init.documents()[1] else {
        panic!()
    };
    assert_eq!(c.control_plane_endpoint, "k8s-api.cluster.internal:6443");
    assert_eq!(
        c.api_server.cert_sans,
        ["192.168.1.200", "127.0.0.1", "k8s-api.cluster.internal"]
    );
    assert!(
        init.text().contains("An external load balancer"),
        "{}",
        init.text()
    );
    for node in ["master2", "node1"] {
        let join = render(&inv, node);
        let Document::JoinV1beta4(j) = &join.documents()[0] else {
            panic!()
        };
        let d = j.discovery.bootstrap_token.as_ref().unwrap();
        assert_eq!(d.api_server_endpoint, "k8s-api.cluster.internal:6443");
        assert!(join.text().contains("node-ip"), "{node}: {}", join.text());
    }
}

/// Every example in `inventories/` (each named after the guide it replaces) renders every
/// node's documents, and the ClusterConfiguration says which layout the endpoint has.
#[test]
fn every_example_inventory_renders_each_node_with_its_layout_explained() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let inv = inventory::parse(&text).unwrap().inventory;
        let layout = match inv.load_balancer.mode {
            inventory::LbMode::Vip => "through khagent's load balancer on the virtual IP",
            inventory::LbMode::NodeLocal => "Every node resolves this name to 127.0.0.1",
            inventory::LbMode::External => "An external load balancer",
        };
        for node in &inv.nodes {
            // An etcd node (external etcd) runs no kubeadm.
            let Some(purpose) = Purpose::for_node(&inv, node) else {
                continue;
            };
            let docs = render(&inv, node.name.as_str());
            if purpose == Purpose::Init {
                assert!(
                    docs.text().contains(layout),
                    "{}: {}",
                    path.display(),
                    docs.text()
                );
            }
        }
        seen += 1;
    }
    assert!(seen >= 5, "examples missing in {}", dir.display());
}
