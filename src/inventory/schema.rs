//! The shape of the inventory document as a table (which fields each mapping has, which
//! are required, which check each value gets), and the walk that holds a parsed YAML
//! tree against it. The walk reports every unknown, missing or malformed field at once,
//! where serde alone would stop at the first. A unit test keeps the table and the serde
//! model in `model.rs` in agreement, so neither can drift without a failing test.

use std::collections::HashSet;

use serde_yaml_ng::{Mapping, Value};

use super::checks::{self, Check, KeyCheck, show, typed};
use super::model::{KeyType, LbMode, Role, TaintEffect};
use super::problems::{FieldPath, Findings};
use super::types::{CriSocket, DnsName, Limit, NodeName, Port, RouterId};

/// The fields of one YAML mapping.
pub(super) struct Shape {
    pub fields: &'static [Field],
}

pub(super) struct Field {
    pub name: &'static str,
    pub presence: Presence,
    pub kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    /// Must be written; the text is an example shown when it is missing.
    Required(&'static str),
    /// May be left out or written empty (`~`), meaning "not set".
    Optional,
    /// May be left out (a default applies) but not written empty.
    Defaulted,
}

pub(super) enum Kind {
    Leaf(Check),
    Struct(&'static Shape),
    List(&'static Shape),
    /// A mapping of free-form keys (sysctls, labels, extra args) to scalar values.
    Map(KeyCheck, Check),
}

use Kind::{Leaf, List, Map, Struct};
use Presence::{Defaulted, Optional, Required};

const fn field(name: &'static str, presence: Presence, kind: Kind) -> Field {
    Field {
        name,
        presence,
        kind,
    }
}

pub(super) static INVENTORY: Shape = Shape {
    fields: &[
        field(
            "apiVersion",
            Required("apiVersion: khactl.io/v1alpha1"),
            Leaf(checks::api_version),
        ),
        field("kind", Required("kind: Inventory"), Leaf(checks::kind)),
        field(
            "cluster",
            Required("cluster: { name: prod, kubernetesVersion: v1.31.2 }"),
            Struct(&CLUSTER),
        ),
        // Required unless `loadBalancer.mode: node-local`: a rule in `rules.rs`.
        field("vip", Optional, Struct(&VIP)),
        field("loadBalancer", Defaulted, Struct(&LOAD_BALANCER)),
        field("ssh", Defaulted, Struct(&SSH)),
        field(
            "nodes",
            Required("nodes: [{ name: cp1, address: 192.168.1.11, role: control-plane }]"),
            List(&NODE),
        ),
        field("networking", Defaulted, Struct(&NETWORKING)),
        field("imageRepository", Optional, Leaf(checks::image_repository)),
        field(
            "sysctls",
            Defaulted,
            Map(checks::sysctl_key, checks::sysctl_value),
        ),
        field("pki", Defaulted, Struct(&PKI)),
        field("kubeadm", Defaulted, Struct(&KUBEADM)),
        field("failoverTest", Defaulted, Struct(&FAILOVER_TEST)),
        field(
            "statsPage",
            Optional,
            Struct(&super::stats_page::STATS_PAGE),
        ),
        field(
            "hostPreparation",
            Defaulted,
            Struct(&super::host_preparation::HOST_PREPARATION),
        ),
        field("etcd", Defaulted, Struct(&super::etcd::ETCD)),
    ],
};

static FAILOVER_TEST: Shape = Shape {
    fields: &[
        field("targets", Defaulted, Struct(&TARGETS)),
        field("scenarios", Defaulted, Struct(&SCENARIO_TARGETS)),
        field("nodeDownCmd", Optional, Leaf(checks::single_line)),
        field("nodeUpCmd", Optional, Leaf(checks::single_line)),
    ],
};

static TARGETS: Shape = Shape {
    fields: &[
        field("maxTakeover", Optional, Leaf(typed::<Limit>)),
        field("maxApiUnavailable", Optional, Leaf(typed::<Limit>)),
        field("maxLongLivedRecovery", Optional, Leaf(typed::<Limit>)),
        field("maxSplitBrain", Optional, Leaf(typed::<Limit>)),
        field("maxHealthyAfter", Optional, Leaf(typed::<Limit>)),
    ],
};

static SCENARIO_TARGETS: Shape = Shape {
    fields: &[
        field("agentCrash", Defaulted, Struct(&TARGETS)),
        field("agentStop", Defaulted, Struct(&TARGETS)),
        field("apiserverDown", Defaulted, Struct(&TARGETS)),
        field("etcdMemberDown", Defaulted, Struct(&TARGETS)),
        field("networkCut", Defaulted, Struct(&TARGETS)),
        field("nodeDown", Defaulted, Struct(&TARGETS)),
    ],
};

static CLUSTER: Shape = Shape {
    fields: &[
        field("name", Required("name: prod"), Leaf(typed::<NodeName>)),
        field(
            "kubernetesVersion",
            Required("kubernetesVersion: v1.31.2"),
            Leaf(checks::kubernetes_version),
        ),
    ],
};

static VIP: Shape = Shape {
    fields: &[
        field(
            "address",
            Required("address: 192.168.1.100"),
            Leaf(checks::vip_address),
        ),
        field("prefixLength", Optional, Leaf(checks::prefix_length)),
        field("interface", Optional, Leaf(checks::interface)),
        field("routerId", Defaulted, Leaf(typed::<RouterId>)),
        field("port", Defaulted, Leaf(checks::lb_port)),
        field("dnsName", Optional, Leaf(typed::<DnsName>)),
    ],
};

static LOAD_BALANCER: Shape = Shape {
    fields: &[
        field("mode", Defaulted, Leaf(typed::<LbMode>)),
        // 6443 is refused for khagent's own balancers and required of an external one: a
        // rule in `rules.rs`, which knows the mode.
        field("port", Optional, Leaf(typed::<Port>)),
        field("dnsName", Optional, Leaf(typed::<DnsName>)),
        field("address", Optional, Leaf(checks::external_lb_address)),
    ],
};

static SSH: Shape = Shape {
    fields: &[
        field("user", Defaulted, Leaf(checks::ssh_user)),
        field("port", Defaulted, Leaf(typed::<Port>)),
        field("identityFile", Optional, Leaf(checks::identity_file)),
        field("sudo", Defaulted, Leaf(typed::<bool>)),
        field("bastion", Optional, Struct(&BASTION)),
    ],
};

static SSH_OVERRIDES: Shape = Shape {
    fields: &[
        field("user", Optional, Leaf(checks::ssh_user)),
        field("port", Optional, Leaf(typed::<Port>)),
        field("identityFile", Optional, Leaf(checks::identity_file)),
        field("sudo", Optional, Leaf(typed::<bool>)),
        field("bastion", Optional, Struct(&BASTION)),
    ],
};

static BASTION: Shape = Shape {
    fields: &[
        field(
            "address",
            Required("address: bastion.example.com"),
            Leaf(checks::host),
        ),
        field("user", Optional, Leaf(checks::ssh_user)),
        field("port", Optional, Leaf(typed::<Port>)),
    ],
};

static NODE: Shape = Shape {
    fields: &[
        field("name", Required("name: cp1"), Leaf(typed::<NodeName>)),
        field(
            "address",
            Required("address: 192.168.1.11"),
            Leaf(checks::node_address),
        ),
        field(
            "role",
            Required("role: control-plane (or worker, etcd, loadbalancer)"),
            Leaf(typed::<Role>),
        ),
        field("ssh", Defaulted, Struct(&SSH_OVERRIDES)),
        field(
            "labels",
            Defaulted,
            Map(checks::node_label_key, checks::label_value),
        ),
        field("taints", Defaulted, List(&TAINT)),
    ],
};

static TAINT: Shape = Shape {
    fields: &[
        field(
            "key",
            Required("key: example.com/dedicated"),
            Leaf(checks::qualified_name_value),
        ),
        field("value", Optional, Leaf(checks::label_value)),
        field(
            "effect",
            Required("effect: NoSchedule"),
            Leaf(typed::<TaintEffect>),
        ),
    ],
};

static NETWORKING: Shape = Shape {
    fields: &[
        field("podSubnet", Defaulted, Leaf(checks::pod_subnet)),
        field("serviceSubnet", Defaulted, Leaf(checks::service_subnet)),
        field("dnsDomain", Defaulted, Leaf(typed::<DnsName>)),
    ],
};

static PKI: Shape = Shape {
    fields: &[
        field("keyType", Defaulted, Leaf(typed::<KeyType>)),
        field("caValidityDays", Defaulted, Leaf(checks::validity_days)),
        field("certValidityDays", Defaulted, Leaf(checks::validity_days)),
    ],
};

const EXTRA_ARGS: Kind = Map(checks::extra_arg_key, checks::single_line);

static KUBEADM: Shape = Shape {
    fields: &[
        field("apiServerExtraArgs", Defaulted, EXTRA_ARGS),
        field("controllerManagerExtraArgs", Defaulted, EXTRA_ARGS),
        field("schedulerExtraArgs", Defaulted, EXTRA_ARGS),
        field(
            "kubeletExtraArgs",
            Defaulted,
            Map(checks::kubelet_arg_key, checks::single_line),
        ),
        field("etcdExtraArgs", Defaulted, EXTRA_ARGS),
        field("criSocket", Defaulted, Leaf(typed::<CriSocket>)),
    ],
};

/// Holds the whole document against [`INVENTORY`], adding every problem to `out`.
pub(super) fn check_document(root: &Value, out: &mut Findings) {
    let path = FieldPath::root();
    match root {
        Value::Mapping(map) => check_mapping(&INVENTORY, map, &path, out),
        Value::Null => out.error(
            &path,
            "the inventory is empty; it starts with `apiVersion: khactl.io/v1alpha1` and \
             `kind: Inventory` (see inventories/ for examples)",
        ),
        other => out.error(
            &path,
            format!(
                "the inventory must be a mapping of fields ({}), not {}",
                names(&INVENTORY),
                show(other)
            ),
        ),
    }
}

fn check_mapping(shape: &Shape, map: &Mapping, path: &FieldPath, out: &mut Findings) {
    // A misspelt required field is one mistake, not two: "did you mean `address`?"
    // already says what "missing field `address`" would.
    let mut suggested: Vec<&str> = Vec::new();
    for (key, value) in map {
        let Value::String(name) = key else {
            out.error(
                path,
                format!(
                    "unexpected key {}; field names are words like `{}`",
                    show(key),
                    shape_first(shape)
                ),
            );
            continue;
        };
        match shape.fields.iter().find(|f| f.name == name) {
            Some(field) => check_field(field, value, &path.key(name), out),
            None => {
                let hint = suggest(name, shape.fields.iter().map(|f| f.name));
                suggested.extend(hint);
                out.error(&path.key(name), unknown_field(name, hint, shape));
            }
        }
    }
    for field in shape.fields {
        if let Required(example) = field.presence
            && !map.contains_key(field.name)
            && !suggested.contains(&field.name)
        {
            out.error(
                &path.key(field.name),
                format!("missing field `{}`; add e.g. `{example}`", field.name),
            );
        }
    }
}

fn check_field(field: &Field, value: &Value, path: &FieldPath, out: &mut Findings) {
    if value.is_null() && field.presence == Optional {
        return;
    }
    match &field.kind {
        Leaf(check) => {
            if let Err(message) = check(value) {
                out.error(path, message);
            }
        }
        Struct(shape) => match value {
            Value::Mapping(map) => check_mapping(shape, map, path, out),
            other => out.error(
                path,
                format!(
                    "expected a mapping with {}, found {}",
                    names(shape),
                    show(other)
                ),
            ),
        },
        List(shape) => match value {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Mapping(map) => check_mapping(shape, map, &path.index(i), out),
                        other => out.error(
                            &path.index(i),
                            format!(
                                "expected a mapping with {}, found {}",
                                names(shape),
                                show(other)
                            ),
                        ),
                    }
                }
            }
            other => out.error(path, format!("expected a list, found {}", show(other))),
        },
        Map(key_check, value_check) => match value {
            // An empty `labels:` is an empty map, as in the model.
            Value::Null => {}
            Value::Mapping(map) => {
                // A set: a list searched once per key made 100,000 sysctls quadratic.
                let mut seen: HashSet<String> = HashSet::new();
                for (k, v) in map {
                    let Some(k) = checks::scalar_text(k) else {
                        out.error(
                            path,
                            format!("unexpected key {}; keys are plain text", show(k)),
                        );
                        continue;
                    };
                    let at = path.key(&k);
                    // `1:` and `"1":` are different YAML keys but the same text.
                    if !seen.insert(k.clone()) {
                        out.error(&at, format!("{k:?} appears twice; keep one"));
                    }
                    if let Err(message) = key_check(&k) {
                        out.error(&at, message);
                    }
                    if let Err(message) = value_check(v) {
                        out.error(&at, message);
                    }
                }
            }
            other => out.error(
                path,
                format!(
                    "expected a mapping of names to values, found {}",
                    show(other)
                ),
            ),
        },
    }
}

fn names(shape: &Shape) -> String {
    let names: Vec<String> = shape
        .fields
        .iter()
        .map(|f| format!("`{}`", f.name))
        .collect();
    names.join(", ")
}

fn shape_first(shape: &Shape) -> &'static str {
    shape.fields.first().map_or("name", |f| f.name)
}

fn unknown_field(name: &str, hint: Option<&str>, shape: &Shape) -> String {
    let known = names(shape);
    match hint {
        Some(s) => format!("unknown field `{name}`; did you mean `{s}`? (fields here: {known})"),
        None => format!("unknown field `{name}`; the fields here are {known}"),
    }
}

/// The known name a typo most likely meant: the same word in other spelling
/// (`router_id` for `routerId`), or one within a small edit distance.
pub(super) fn suggest<'a>(
    typo: &str,
    known: impl Iterator<Item = &'a str> + Clone,
) -> Option<&'a str> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let folded = fold(typo);
    if let Some(same) = known.clone().find(|k| fold(k) == folded) {
        return Some(same);
    }
    let limit = (typo.chars().count() / 3).clamp(1, 3);
    known
        .map(|k| (levenshtein(&folded, &fold(k)), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn suggests_the_field_a_typo_meant() {
        let known = ["name", "address", "role", "ssh", "labels", "taints"];
        assert_eq!(suggest("adress", known.iter().copied()), Some("address"));
        assert_eq!(suggest("Role", known.iter().copied()), Some("role"));
        assert_eq!(suggest("lables", known.iter().copied()), Some("labels"));
        assert_eq!(suggest("hostname", known.iter().copied()), None);
        let vip = ["address", "routerId", "port"];
        assert_eq!(suggest("router_id", vip.iter().copied()), Some("routerId"));
        assert_eq!(suggest("x", vip.iter().copied()), None);
    }

    /// serde's own unknown-field error lists the fields the model accepts; it must list
    /// exactly the fields of the table, for every mapping in the document.
    #[test]
    fn the_table_lists_the_same_fields_as_the_serde_model() {
        use super::super::model::*;
        fn serde_fields<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
            // "unknown field `zz`, expected one of `a`, `b` at line 1 column 1", or
            // "expected `a` or `b`" for two fields.
            let err = serde_yaml_ng::from_str::<T>("zzUnknown: 1")
                .unwrap_err()
                .to_string();
            let list = err.split("expected ").nth(1).unwrap();
            let list = list
                .split(" at line")
                .next()
                .unwrap()
                .trim_start_matches("one of ");
            list.replace(" or ", ", ")
                .split(", ")
                .map(|s| s.trim_matches('`').to_owned())
                .collect()
        }
        fn table_fields(shape: &Shape) -> Vec<String> {
            shape.fields.iter().map(|f| f.name.to_owned()).collect()
        }
        let pairs: Vec<(Vec<String>, &Shape)> = vec![
            (serde_fields::<Inventory>(), &INVENTORY),
            (serde_fields::<Cluster>(), &CLUSTER),
            (serde_fields::<Vip>(), &VIP),
            (serde_fields::<LoadBalancer>(), &LOAD_BALANCER),
            (serde_fields::<SshDefaults>(), &SSH),
            (serde_fields::<SshOverrides>(), &SSH_OVERRIDES),
            (serde_fields::<Bastion>(), &BASTION),
            (serde_fields::<Node>(), &NODE),
            (serde_fields::<Taint>(), &TAINT),
            (serde_fields::<Networking>(), &NETWORKING),
            (serde_fields::<PkiSettings>(), &PKI),
            (serde_fields::<KubeadmExtras>(), &KUBEADM),
            (
                serde_fields::<crate::inventory::StatsPage>(),
                &super::super::stats_page::STATS_PAGE,
            ),
            (
                serde_fields::<crate::inventory::HostPreparation>(),
                &super::super::host_preparation::HOST_PREPARATION,
            ),
        ];
        for (serde, shape) in pairs {
            assert_eq!(serde, table_fields(shape));
        }
    }
}
