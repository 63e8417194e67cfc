//! The kubeadm configuration as a specification, by theme:
//! - `documents`: whole files for one init (v1beta4) and one worker join (v1beta3), and
//!   every field read back through kubeadm's types for 1.30, 1.31 and 1.37 and each purpose;
//! - `safety`: the escaping contract, the token's secrecy, and proof that a template typo
//!   or a broken layout rule is an error before any node is touched;
//! - `cluster`: every node at once, the files of `khactl render`, and what is refused;
//! - `external_etcd`: the `role: etcd` topology (`etcd.external`, no kubeadm on etcd nodes).
//!
//! Shared here: the inventory they render and small builders.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod documents;
mod external_etcd;
mod safety;

use super::api::common::Taint;
use super::api::v1beta4;
use super::context::{self, Templates};
use super::*;
use crate::inventory::{self, Inventory};

pub(super) const TOKEN: &str = "abcdef.0123456789abcdef";

pub(super) fn token() -> BootstrapToken {
    BootstrapToken::parse(TOKEN).unwrap()
}

pub(super) fn hash() -> String {
    format!("sha256:{}", "0a1b".repeat(16))
}

/// Three control planes (cp2 without taints, cp3 untainted on purpose) and two workers,
/// with every kind of extra arg, labels, a mirror and CRI-O.
pub(super) fn inventory(version: &str) -> Inventory {
    let text = format!(
        "apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: {{ name: prod, kubernetesVersion: {version} }}
vip: {{ address: 10.0.0.100, port: 16443, dnsName: k8s-api.prod.internal }}
nodes:
  - {{ name: cp1, address: 10.0.0.11, role: control-plane, labels: {{ example.com/tier: core }} }}
  - {{ name: cp2, address: 10.0.0.12, role: control-plane }}
  - {{ name: cp3, address: 10.0.0.13, role: control-plane, taints: [] }}
  - name: w1
    address: 10.0.0.21
    role: worker
    labels: {{ example.com/pool: general, node.kubernetes.io/disk: ssd }}
  - name: w2
    address: 10.0.0.22
    role: worker
    taints:
      - {{ key: example.com/gpu, value: \"true\", effect: NoSchedule }}
      - {{ key: example.com/drain, effect: NoExecute }}
imageRepository: registry.example.com/k8s
networking: {{ podSubnet: 10.32.0.0/16, serviceSubnet: 10.64.0.0/16, dnsDomain: prod.local }}
kubeadm:
  apiServerExtraArgs: {{ audit-log-maxage: 30, audit-log-path: /var/log/audit.log }}
  controllerManagerExtraArgs: {{ node-monitor-grace-period: 20s }}
  schedulerExtraArgs: {{ v: 2 }}
  kubeletExtraArgs: {{ max-pods: 150 }}
  etcdExtraArgs: {{ quota-backend-bytes: 8589934592 }}
  criSocket: unix:///var/run/crio/crio.sock
"
    );
    inventory::parse(&text).unwrap().inventory
}

pub(super) fn render(inv: &Inventory, name: &str) -> KubeadmDocuments {
    let node = inv.node(name).unwrap();
    render_node(
        inv,
        node,
        Purpose::for_node(inv, node).unwrap(),
        &token(),
        &hash(),
    )
    .unwrap()
}

/// Each node's name and purpose, in the order `render_cluster` gave them.
pub(super) fn purposes(all: &ClusterDocuments) -> Vec<(&str, Purpose)> {
    all.nodes
        .iter()
        .map(|d| (d.node().as_str(), d.purpose()))
        .collect()
}

pub(super) fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.into(),
        effect: effect.into(),
        time_added: None,
    }
}

pub(super) fn control_plane_taint() -> Vec<Taint> {
    vec![taint(
        "node-role.kubernetes.io/control-plane",
        "",
        "NoSchedule",
    )]
}

pub(super) fn arg(name: &str, value: &str) -> v1beta4::Arg {
    v1beta4::Arg {
        name: name.into(),
        value: value.into(),
    }
}

pub(super) fn map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A copy of the templates with `from` replaced by `to` in the one named `which`, leaked
/// so it lives as long as the embedded ones.
pub(super) fn broken_templates(which: &str, from: &str, to: &str) -> Templates {
    let mut t = context::TEMPLATES;
    let slot = [
        &mut t.init,
        &mut t.cluster,
        &mut t.join,
        &mut t.node_registration,
        &mut t.kubelet,
        &mut t.kube_proxy,
    ]
    .into_iter()
    .find(|s| s.name.contains(which))
    .unwrap();
    assert!(slot.text.contains(from), "{which} has no {from:?}");
    slot.text = Box::leak(slot.text.replacen(from, to, 1).into_boxed_str());
    t
}

pub(super) fn render_with_templates(
    t: &Templates,
    version: &str,
    name: &str,
) -> Result<KubeadmDocuments, KubeadmError> {
    let inv = inventory(version);
    let node = inv.node(name).unwrap();
    render_node_with(
        t,
        &inv,
        node,
        Purpose::for_node(&inv, node).unwrap(),
        &token(),
        &hash(),
    )
}
