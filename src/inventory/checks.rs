//! Field-local rules: each function looks at one YAML value (or one mapping key) and
//! says what is wrong with it and what to write instead. The table in `schema.rs` says
//! which field uses which check; rules that compare fields live in `rules.rs`.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::model::{API_VERSION, KIND};
use super::types::{DnsName, KubernetesVersion};

pub(super) type Check = fn(&Value) -> Result<(), String>;
pub(super) type KeyCheck = fn(&str) -> Result<(), String>;

/// The field's Rust type accepts the value: the model's own deserializer is the rule.
pub(super) fn typed<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_yaml_ng::from_value::<T>(v.clone())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// How a value is shown in messages: strings quoted, other scalars as written.
pub(super) fn show(v: &Value) -> String {
    match v {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Scalars as the text a program would receive (`0` → "0", `true` → "true").
pub(super) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn string(v: &Value, example: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "expected a string such as {example}, found {}",
            show(other)
        )),
    }
}

fn exactly(v: &Value, field: &str, want: &str) -> Result<(), String> {
    match v {
        Value::String(s) if s == want => Ok(()),
        other => Err(format!(
            "unsupported {field} {}: this khactl reads `{field}: {want}`",
            show(other)
        )),
    }
}

pub(super) fn api_version(v: &Value) -> Result<(), String> {
    exactly(v, "apiVersion", API_VERSION)
}

pub(super) fn kind(v: &Value) -> Result<(), String> {
    exactly(v, "kind", KIND)
}

/// `vMAJOR.MINOR.PATCH`, optionally with a pre-release suffix (`v1.31.0-rc.1`), the form
/// kubeadm's `kubernetesVersion` and the release download paths use.
pub(super) fn kubernetes_version(v: &Value) -> Result<(), String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            return Err(format!(
                "{n} is a number; write the full version as a string with a leading v, e.g. v1.31.2"
            ));
        }
        other => {
            return Err(format!(
                "expected a version such as v1.31.2, found {}",
                show(other)
            ));
        }
    };
    let version = KubernetesVersion::new(&s)?;
    version.supported()
}

fn address_use(ip: IpAddr) -> Result<(), String> {
    let why = match ip {
        _ if ip.is_unspecified() => "is the unspecified address",
        _ if ip.is_loopback() => "is a loopback address, reachable only from the machine itself",
        _ if ip.is_multicast() => "is a multicast address",
        IpAddr::V4(v4) if v4.is_broadcast() => "is the broadcast address",
        _ => return Ok(()),
    };
    Err(format!(
        "{ip} {why}; give an address the other machines reach this one at"
    ))
}

/// The VIP: an IPv4 address alone (its prefix length has its own field).
pub(super) fn vip_address(v: &Value) -> Result<(), String> {
    let s = string(v, "192.168.1.100")?;
    if let Some((addr, len)) = s.split_once('/') {
        return Err(format!(
            "write the address alone ({addr}) and the prefix length in `vip.prefixLength: {len}`"
        ));
    }
    let ip: Ipv4Addr = s.parse().map_err(|_| {
        format!("{s:?} is not an IPv4 address; the VIP is IPv4, e.g. 192.168.1.100")
    })?;
    address_use(IpAddr::V4(ip))
}

/// An external balancer's address: IPv4, like the VIP it stands in for.
pub(super) fn external_lb_address(v: &Value) -> Result<(), String> {
    let s = string(v, "192.168.1.200")?;
    let ip: Ipv4Addr = s.parse().map_err(|_| {
        format!(
            "{s:?} is not an IPv4 address; write the balancer's address (e.g. 192.168.1.200), \
             or leave it out and let DNS resolve loadBalancer.dnsName"
        )
    })?;
    address_use(IpAddr::V4(ip))
}

pub(super) fn node_address(v: &Value) -> Result<(), String> {
    let s = string(v, "192.168.1.11")?;
    if let Some((addr, _)) = s.split_once('/') {
        return Err(format!("write the address without a prefix length: {addr}"));
    }
    let ip: IpAddr = s.parse().map_err(|_| {
        format!("{s:?} is not an IP address (write an address, e.g. 192.168.1.11, not a host name)")
    })?;
    address_use(ip)
}

pub(super) fn prefix_length(v: &Value) -> Result<(), String> {
    match v.as_u64() {
        Some(1..=32) => Ok(()),
        _ => Err(format!(
            "prefix length {} is out of range: use 1-32 (e.g. 24)",
            show(v)
        )),
    }
}

/// A Linux interface name as the kernel accepts it (`dev_valid_name`): 1-15 bytes,
/// not `.` or `..`, no `/`, `:` or whitespace.
pub(super) fn interface(v: &Value) -> Result<(), String> {
    let s = string(v, "eth0")?;
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a Linux interface name: 1-15 characters without '/', ':' or spaces, e.g. eth0"
        ))
    }
}

/// The load balancer's port on the VIP. The kubelet binds 0.0.0.0:10250 on every node, so
/// the balancer cannot take it; 6443, the API server's, only where the control planes hold
/// the VIP, which a rule decides (`rules::vip_against_nodes`): dedicated load-balancer
/// nodes run no API server.
pub(super) fn lb_port(v: &Value) -> Result<(), String> {
    typed::<super::types::Port>(v)?;
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 6443)
        .map_or(Ok(()), balancer_port)
}

/// A port khagent may listen on: not one a Kubernetes component binds on every node.
pub(super) fn balancer_port(port: u16) -> Result<(), String> {
    match port {
        6443 => Err(
            "port 6443 is the API server's own port on every control-plane node \
                           (it binds 0.0.0.0:6443); put the load balancer on 8443 or 16443"
                .to_owned(),
        ),
        10250 => Err("port 10250 is the kubelet's port on every node; \
                            put the load balancer on 8443 or 16443"
            .to_owned()),
        _ => Ok(()),
    }
}

/// The login name for ssh: no whitespace or `@` (the user goes in `-l`, never glued to
/// the host), and no leading `-` so it can never read as an ssh option.
pub(super) fn ssh_user(v: &Value) -> Result<(), String> {
    let s = string(v, "root")?;
    if s.is_empty() {
        return Err("the ssh user is empty; write a login name such as root".to_owned());
    }
    if s.contains('@') {
        return Err(format!(
            "{s:?} contains '@': write only the login name; the address comes from the node"
        ));
    }
    if s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} is not a login name: no spaces, and it may not start with '-'"
        ));
    }
    Ok(())
}

/// A jump host: an IP address or a host name, with user and port in their own fields.
pub(super) fn host(v: &Value) -> Result<(), String> {
    let s = string(v, "bastion.example.com")?;
    if s.is_empty() {
        return Err("the bastion address is empty; write its host name or IP address".to_owned());
    }
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some((user, _)) = s.split_once('@') {
        return Err(format!(
            "write the user in `bastion.user: {user}` and only the host here"
        ));
    }
    if let Some((_, port)) = s.rsplit_once(':') {
        return Err(format!(
            "write the port in `bastion.port: {port}` and only the host here"
        ));
    }
    if DnsName::new(&s.to_ascii_lowercase()).is_ok() {
        Ok(())
    } else {
        Err(format!("{s:?} is neither an IP address nor a host name"))
    }
}

/// Path syntax only: whether the file exists is preflight's business, on the machine
/// that runs khactl, at run time.
pub(super) fn identity_file(v: &Value) -> Result<(), String> {
    let s = string(v, "~/.ssh/id_ed25519")?;
    if s.trim().is_empty() {
        return Err(
            "the identity file path is empty; leave the field out to use ssh's defaults".to_owned(),
        );
    }
    if s.chars().any(|c| c.is_control()) || s != s.trim() {
        return Err(format!(
            "{s:?} has control characters or surrounding spaces; write the bare path"
        ));
    }
    if s.starts_with('~') && s != "~" && !s.starts_with("~/") {
        return Err(format!(
            "{s:?}: only ~/ is expanded; write the path from ~/ or from /"
        ));
    }
    if s.ends_with('/') {
        return Err(format!(
            "{s:?} is a directory; point at the private key file"
        ));
    }
    if s.ends_with(".pub") {
        return Err(format!(
            "{s:?} is a public key; point at the private key (without .pub)"
        ));
    }
    Ok(())
}

fn cidr(v: &Value, example: &str) -> Result<IpNet, String> {
    let s = string(v, example)?;
    let net: IpNet = s.parse().map_err(|_| {
        format!("{s:?} is not a CIDR; write an address and a prefix length, e.g. {example}")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "{s} has bits set after its /{} prefix; write the network itself: {}",
            net.prefix_len(),
            net.trunc()
        ));
    }
    Ok(net)
}

pub(super) fn pod_subnet(v: &Value) -> Result<(), String> {
    cidr(v, "10.244.0.0/16").map(drop)
}

/// kube-apiserver allows at most 2^20 service addresses, and kubeadm gives the first
/// address to the `kubernetes` Service and the tenth to cluster DNS, so both must exist.
pub(super) fn service_subnet(v: &Value) -> Result<(), String> {
    let net = cidr(v, "10.96.0.0/12")?;
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    if host_bits > 20 {
        return Err(format!(
            "{net} is too large: kube-apiserver allows at most 2^20 service addresses \
             (a /{} or longer prefix)",
            u32::from(net.max_prefix_len()) - 20
        ));
    }
    if host_bits < 4 {
        return Err(format!(
            "{net} is too small: kubeadm uses its first address for the kubernetes Service and \
             its tenth for cluster DNS; use at most a /{} prefix",
            net.max_prefix_len() - 4
        ));
    }
    Ok(())
}

/// An image registry and path without scheme, tag or trailing slash, e.g.
/// `registry.k8s.io` or `registry.example.com:5000/k8s`.
pub(super) fn image_repository(v: &Value) -> Result<(), String> {
    let s = string(v, "registry.k8s.io")?;
    if let Some((_, rest)) = s.split_once("://") {
        return Err(format!("write the repository without a scheme: {rest}"));
    }
    let mut parts = s.split('/');
    let host = parts.next().unwrap_or_default();
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
    // Repository path components are lowercase in the OCI distribution spec.
    let path_ok = parts.all(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    });
    if host_ok && path_ok && !s.contains('@') {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not an image repository: write a registry and path such as \
             registry.example.com/k8s (lowercase path, no tag, no trailing '/')"
        ))
    }
}

/// Certificate validity in days: at least one, at most 100 years (X.509 dates end in 9999,
/// and a longer CA lifetime is a mistake rather than a choice).
pub(super) fn validity_days(v: &Value) -> Result<(), String> {
    match v.as_u64() {
        Some(1..=36_500) => Ok(()),
        _ => Err(format!("{} days is out of range: use 1-36500", show(v))),
    }
}

/// `net.ipv4.ip_forward` or `net/ipv4/ip_forward`: the forms sysctl(8) takes (see
/// [`super::types::SysctlKey`]).
pub(super) fn sysctl_key(k: &str) -> Result<(), String> {
    super::types::SysctlKey::parse(k).map(drop)
}

pub(super) fn sysctl_value(v: &Value) -> Result<(), String> {
    match scalar_text(v) {
        Some(s) if !s.trim().is_empty() && !s.contains(['\n', '\r', '\0']) => Ok(()),
        Some(_) => {
            Err("the value is empty or spans lines; write it on one line, e.g. \"1\"".to_owned())
        }
        None => Err(format!(
            "expected a value such as 1 or \"1024 65000\", found {}",
            show(v)
        )),
    }
}

/// Kubernetes label names: at most 63 characters of alphanumerics, `-`, `_`, `.`,
/// beginning and ending with an alphanumeric.
fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A Kubernetes qualified name, as label keys and taint keys are: `[prefix/]name`
/// where the prefix is a DNS subdomain.
pub(super) fn qualified_name(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| DnsName::new(p).is_ok());
    if prefix_ok && is_label_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{k:?} is not a valid key: use [prefix/]name, where name is up to 63 letters, digits, \
             '-', '_' or '.' starting and ending with a letter or digit and prefix is a DNS name \
             (e.g. example.com/role)"
        ))
    }
}

/// Node labels reach the Node through the kubelet's `--node-labels`, and the kubelet refuses
/// to start with a label in the `kubernetes.io` / `k8s.io` namespaces unless it is one it
/// may set on its own Node (k/k `cmd/kubelet/app/options`, `IsKubeletLabel` in
/// `staging/src/k8s.io/kubelet/pkg/apis/well_known_labels.go`).
pub(super) fn node_label_key(k: &str) -> Result<(), String> {
    qualified_name(k)?;
    let Some((prefix, _)) = k.split_once('/') else {
        return Ok(());
    };
    let within = |domain: &str| prefix == domain || prefix.ends_with(&format!(".{domain}"));
    if !within("kubernetes.io") && !within("k8s.io") {
        return Ok(());
    }
    const KUBELET_LABELS: [&str; 11] = [
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
    ];
    if KUBELET_LABELS.contains(&k)
        || within("kubelet.kubernetes.io")
        || within("node.kubernetes.io")
    {
        return Ok(());
    }
    Err(format!(
        "{k:?} is a label the kubelet may not set on its own Node (it refuses to start with it \
         in --node-labels); use a prefix of your own (e.g. example.com/role), one under \
         node.kubernetes.io/, or add it with kubectl once the node has joined"
    ))
}

pub(super) fn qualified_name_value(v: &Value) -> Result<(), String> {
    match v {
        Value::String(s) => qualified_name(s),
        other => Err(format!(
            "expected a key such as example.com/dedicated, found {}",
            show(other)
        )),
    }
}

/// Label (and taint) values: empty, or a label name.
pub(super) fn label_value(v: &Value) -> Result<(), String> {
    let s = match v {
        Value::Null => return Ok(()),
        other => scalar_text(other)
            .ok_or_else(|| format!("expected a label value, found {}", show(other)))?,
    };
    if s.is_empty() || is_label_name(&s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid label value: up to 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit"
        ))
    }
}

/// Extra args are written without the dashes; kubeadm adds `--` itself.
pub(super) fn extra_arg_key(k: &str) -> Result<(), String> {
    if let Some(bare) = k.strip_prefix('-') {
        return Err(format!(
            "write {:?} without the leading dashes",
            bare.trim_start_matches('-')
        ));
    }
    if let Some((key, value)) = k.split_once('=') {
        return Err(format!("write the flag as `{key}: {value}`, not with '='"));
    }
    let ok = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{k:?} is not a flag name such as audit-log-maxage"))
    }
}

/// Kubelet flags khactl sets itself from other fields: a second value would fight the first
/// (and is a duplicate key in kubeadm's v1beta3 map form).
pub(super) fn kubelet_arg_key(k: &str) -> Result<(), String> {
    extra_arg_key(k)?;
    let instead = match k {
        "node-labels" => "nodes[].labels",
        "register-with-taints" => "nodes[].taints",
        "container-runtime-endpoint" => "kubeadm.criSocket",
        "hostname-override" => "nodes[].name",
        _ => return Ok(()),
    };
    Err(format!(
        "khactl sets the kubelet's --{k} from `{instead}`; write it there instead"
    ))
}

pub(super) fn single_line(v: &Value) -> Result<(), String> {
    match scalar_text(v) {
        Some(s) if !s.contains(['\n', '\r', '\0']) => Ok(()),
        Some(_) => Err("the value spans lines; write it on one line".to_owned()),
        None => Err(format!("expected a single value, found {}", show(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::String(text.to_owned())
    }

    #[test]
    fn kubernetes_version_needs_v_major_minor_patch() {
        for ok in ["v1.31.2", "v1.30.0", "v1.31.0-rc.1", "v1.29.0", "v1.37.2"] {
            assert_eq!(kubernetes_version(&s(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "1.31.2", "v1.31", "v1.31.x", "v01.31.2", "v1.31.2-", "v1..2", "latest", "",
        ] {
            assert!(kubernetes_version(&s(bad)).is_err(), "{bad}");
        }
        assert!(
            kubernetes_version(&Value::from(1.31))
                .unwrap_err()
                .contains("number")
        );
    }

    #[test]
    fn kubernetes_versions_outside_the_supported_range_are_refused_naming_it() {
        for old_or_new in ["v1.28.9", "v1.38.0", "v2.0.10", "v0.31.0"] {
            let err = kubernetes_version(&s(old_or_new)).unwrap_err();
            assert!(err.contains("v1.29.x to v1.37.x"), "{old_or_new}: {err}");
        }
    }

    #[test]
    fn label_and_taint_keys_follow_kubernetes_qualified_names() {
        for ok in [
            "app",
            "node-role.kubernetes.io/worker",
            "example.com/Team_A.x",
            "a",
        ] {
            assert_eq!(qualified_name(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "-app",
            "app-",
            "Example.com/x",
            "a/b/c",
            "/x",
            "x/",
            "with space",
            &long,
        ] {
            assert!(qualified_name(bad).is_err(), "{bad}");
        }
        assert_eq!(label_value(&s("")), Ok(()));
        assert_eq!(label_value(&Value::Bool(true)), Ok(()));
        assert!(label_value(&s("a b")).is_err());
    }

    #[test]
    fn sysctl_keys_are_dotted_or_slashed_names() {
        for ok in [
            "net.ipv4.ip_forward",
            "net/ipv4/conf/eth0.100/rp_filter",
            "vm.swappiness",
        ] {
            assert_eq!(sysctl_key(ok), Ok(()), "{ok}");
        }
        for bad in [
            "swappiness",
            "net..ipv4",
            ".net.ipv4",
            "net.ipv4.ip_forward=1",
            "net.ipv4 x",
            "",
        ] {
            assert!(sysctl_key(bad).is_err(), "{bad}");
        }
        assert_eq!(sysctl_value(&Value::from(0)), Ok(()));
        assert_eq!(sysctl_value(&s("1024 65000")), Ok(()));
        assert!(sysctl_value(&s(" ")).is_err());
        assert!(sysctl_value(&s("1\n2")).is_err());
        assert!(sysctl_value(&Value::Null).is_err());
    }

    #[test]
    fn ssh_users_and_bastions_cannot_smuggle_options_or_hosts() {
        assert_eq!(ssh_user(&s("debian")), Ok(()));
        assert!(ssh_user(&s("")).is_err());
        assert!(ssh_user(&s("root@host")).unwrap_err().contains("'@'"));
        assert!(ssh_user(&s("-oProxyCommand=x")).is_err());
        assert!(ssh_user(&s("a b")).is_err());
        assert_eq!(host(&s("Bastion.Example.com")), Ok(()));
        assert_eq!(host(&s("2001:db8::1")), Ok(()));
        assert!(host(&s("")).is_err());
        assert!(host(&s("ops@jump")).unwrap_err().contains("bastion.user"));
        assert!(host(&s("jump:2222")).unwrap_err().contains("bastion.port"));
    }

    #[test]
    fn identity_files_are_checked_for_syntax_only() {
        assert_eq!(identity_file(&s("/does/not/exist/id_ed25519")), Ok(()));
        assert_eq!(identity_file(&s("~/.ssh/id_rsa")), Ok(()));
        for bad in [
            "",
            " ",
            "/keys/",
            "~/.ssh/id_rsa.pub",
            "key\n",
            "~ops/.ssh/id_rsa",
        ] {
            assert!(identity_file(&s(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn service_subnet_must_hold_the_kubernetes_and_dns_addresses() {
        assert_eq!(service_subnet(&s("10.96.0.0/12")), Ok(()));
        assert_eq!(service_subnet(&s("10.96.0.0/28")), Ok(()));
        assert!(
            service_subnet(&s("10.96.0.0/29"))
                .unwrap_err()
                .contains("tenth")
        );
        assert!(
            service_subnet(&s("10.0.0.0/8"))
                .unwrap_err()
                .contains("2^20")
        );
        assert!(
            service_subnet(&s("10.96.0.1/12"))
                .unwrap_err()
                .contains("10.96.0.0/12")
        );
        assert!(pod_subnet(&s("10.244.0.0")).is_err());
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert_eq!(interface(&s("enp0s31f6")), Ok(()));
        for bad in ["", "a-very-long-name0", "eth0:1", "a/b", "..", "a b"] {
            assert!(interface(&s(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn extra_arg_keys_are_bare_flag_names() {
        assert_eq!(extra_arg_key("audit-log-maxage"), Ok(()));
        assert!(
            extra_arg_key("--audit-log-maxage")
                .unwrap_err()
                .contains("\"audit-log-maxage\"")
        );
        assert!(extra_arg_key("v=2").is_err());
        assert!(extra_arg_key("").is_err());
    }

    #[test]
    fn node_labels_stay_out_of_the_namespaces_the_kubelet_may_not_set() {
        for ok in [
            "example.com/pool",
            "app",
            "node.kubernetes.io/pool",
            "team.node.kubernetes.io/x",
            "kubelet.kubernetes.io/x",
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
            "notkubernetes.io/x",
        ] {
            assert_eq!(node_label_key(ok), Ok(()), "{ok}");
        }
        for bad in [
            "node-role.kubernetes.io/worker",
            "kubernetes.io/role",
            "example.k8s.io/x",
            "node-restriction.kubernetes.io/x",
        ] {
            assert!(
                node_label_key(bad)
                    .unwrap_err()
                    .contains("add it with kubectl"),
                "{bad}"
            );
        }
        assert!(
            node_label_key("-x")
                .unwrap_err()
                .contains("not a valid key")
        );
    }

    #[test]
    fn kubelet_args_khactl_derives_from_other_fields_are_refused() {
        assert_eq!(kubelet_arg_key("max-pods"), Ok(()));
        assert!(
            kubelet_arg_key("node-labels")
                .unwrap_err()
                .contains("nodes[].labels")
        );
        assert!(
            kubelet_arg_key("container-runtime-endpoint")
                .unwrap_err()
                .contains("kubeadm.criSocket")
        );
        assert!(kubelet_arg_key("--max-pods").is_err());
    }

    #[test]
    fn image_repositories_are_registry_paths() {
        for ok in [
            "registry.k8s.io",
            "registry.example.com:5000/k8s",
            "registry.aliyuncs.com/google_containers",
        ] {
            assert_eq!(image_repository(&s(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "https://registry.k8s.io",
            "registry.k8s.io/",
            "reg.io/K8s",
            "reg.io/k8s@sha256",
            "",
        ] {
            assert!(image_repository(&s(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn lb_port_avoids_the_apiserver_and_kubelet_ports() {
        assert_eq!(lb_port(&Value::from(8443)), Ok(()));
        // Refused by a rule where the control planes hold the VIP.
        assert_eq!(lb_port(&Value::from(6443)), Ok(()));
        assert!(lb_port(&Value::from(10250)).is_err());
        assert!(lb_port(&Value::from(0)).is_err());
        assert!(lb_port(&Value::from(70000)).is_err());
    }
}
