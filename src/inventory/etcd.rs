//! `etcd:` and the nodes with `role: etcd`: the external etcd topology (the cfssl guide's),
//! where etcd runs on nodes of its own as a service khactl installs. The type, its table of
//! fields, its field check and its cross-field rule live together so the section is one file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::checks;
use super::model::{Node, Role};
use super::problems::{FieldPath, Findings};
use super::rules::{Draft, node_path, who};
use super::schema::{Field, Kind, Presence, Shape};

/// `etcd:` in the inventory, for the external topology (nodes with `role: etcd`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdSettings {
    /// The etcd binary already on every etcd node; when absent, the distribution's
    /// package (`etcd-server` on Debian and Ubuntu, `etcd` elsewhere) provides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
}

pub(super) static ETCD: Shape = Shape {
    fields: &[Field {
        name: "binary",
        presence: Presence::Optional,
        kind: Kind::Leaf(binary),
    }],
};

/// `etcd.binary`: an absolute path on the etcd nodes (no shell expands it there).
fn binary(v: &Value) -> Result<(), String> {
    let Value::String(s) = v else {
        return Err(format!(
            "expected a path such as /usr/local/bin/etcd, found {}",
            checks::show(v)
        ));
    };
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{s:?} has spaces or control characters; write the bare path, e.g. /usr/local/bin/etcd"
        ));
    }
    if !s.starts_with('/') || s.ends_with('/') || s.split('/').any(|p| p == "..") {
        return Err(format!(
            "{s:?} is not an absolute path to a file; write e.g. /usr/local/bin/etcd, or leave \
             `binary` out to install the distribution's etcd package"
        ));
    }
    Ok(())
}

/// The external etcd topology (nodes with `role: etcd`): the quorum warning counts the
/// etcd nodes, and what only a Kubernetes node or kubeadm's stacked etcd reads is refused
/// on them rather than silently ignored.
pub(super) fn external_etcd(d: &Draft, out: &mut Findings) {
    let etcd: Vec<(usize, &Node)> = d
        .parsed_nodes()
        .filter(|(_, n)| n.role == Role::Etcd)
        .collect();
    if etcd.is_empty() {
        if d.etcd
            .as_ref()
            .is_some_and(|e| *e != EtcdSettings::default())
        {
            out.error(
                &FieldPath::root().key("etcd"),
                "`etcd` configures the external etcd cluster, but no node has `role: etcd`; \
                 add etcd nodes, or remove `etcd` to keep etcd stacked on the control planes",
            );
        }
        return;
    }
    for (i, node) in &etcd {
        // khactl asks each member on 127.0.0.1 and its peers by address over IPv4.
        if node.address.is_ipv6() {
            out.error(
                &node_path(*i).key("address"),
                format!(
                    "etcd node {} has an IPv6 address, and khactl runs external etcd over IPv4 \
                     only: give {} its IPv4 address",
                    node.address,
                    who(*i, node)
                ),
            );
        }
        super::rules::no_kubernetes_fields(*i, node, "etcd", out);
    }
    if d.kubeadm
        .as_ref()
        .is_some_and(|k| k.api_server_extra_args.contains_key("etcd-servers"))
    {
        out.error(
            &FieldPath::root()
                .key("kubeadm")
                .key("apiServerExtraArgs")
                .key("etcd-servers"),
            "with `role: etcd` nodes khactl points the API servers at the etcd members (and \
             follows add-etcd and remove-node); remove etcd-servers here",
        );
    }
    if d.kubeadm
        .as_ref()
        .is_some_and(|k| !k.etcd_extra_args.is_empty())
    {
        out.error(
            &FieldPath::root().key("kubeadm").key("etcdExtraArgs"),
            "kubeadm.etcdExtraArgs configures kubeadm's stacked etcd, and with `role: etcd` \
             nodes kubeadm runs no etcd; remove it (khactl configures the etcd service on the \
             etcd nodes itself)",
        );
    }
    // Counted only when every node parsed, like the control planes: a guess would mislead.
    let Some(all) = d.all_nodes() else { return };
    let n = all.iter().filter(|(_, n)| n.role == Role::Etcd).count();
    if n % 2 == 0 {
        out.warning(
            &FieldPath::root().key("nodes"),
            super::rules::quorum_warning(n, "etcd nodes"),
        );
    }
}
