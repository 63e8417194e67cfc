//! Types that kubeadm's `v1beta3` and `v1beta4` share field for field, mirrored once, with
//! the `bootstraptoken/v1` types and the few `core/v1` and `meta/v1` types they embed.
//!
//! Every field is renamed to its Go JSON tag verbatim (Kubernetes decodes case-sensitively),
//! every struct denies unknown fields and, like Go, treats a missing field as its zero
//! value. Values kubeadm checks while decoding (a bootstrap token, a duration) are checked
//! here while deserializing too.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// `metav1.TypeMeta`, read first to pick the type a document decodes into.
#[derive(Debug, Default, Deserialize)]
pub struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(rename = "kind", default)]
    pub kind: String,
}

/// `APIEndpoint`: where one API server advertises itself and which port it binds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiEndpoint {
    #[serde(rename = "advertiseAddress")]
    pub advertise_address: String,
    #[serde(rename = "bindPort")]
    pub bind_port: i32,
}

/// `Networking`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Networking {
    #[serde(rename = "serviceSubnet")]
    pub service_subnet: String,
    #[serde(rename = "podSubnet")]
    pub pod_subnet: String,
    #[serde(rename = "dnsDomain")]
    pub dns_domain: String,
}

/// `ExternalEtcd`, rendered in the external topology (`role: etcd` nodes). Its 1.35
/// `httpEndpoints` is left out: khactl targets kubeadm releases that lack it too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalEtcd {
    #[serde(rename = "endpoints")]
    pub endpoints: Vec<String>,
    #[serde(rename = "caFile")]
    pub ca_file: String,
    #[serde(rename = "certFile")]
    pub cert_file: String,
    #[serde(rename = "keyFile")]
    pub key_file: String,
}

/// `HostPathMount`, the items of `extraVolumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostPathMount {
    #[serde(rename = "name")]
    pub name: String,
    #[serde(rename = "hostPath")]
    pub host_path: String,
    #[serde(rename = "mountPath")]
    pub mount_path: String,
    #[serde(rename = "readOnly")]
    pub read_only: bool,
    #[serde(rename = "pathType")]
    pub path_type: String,
}

/// `Patches`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Patches {
    #[serde(rename = "directory")]
    pub directory: String,
}

/// `JoinControlPlane`: present in a JoinConfiguration exactly when the node joins as a
/// control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JoinControlPlane {
    #[serde(rename = "localAPIEndpoint")]
    pub local_api_endpoint: ApiEndpoint,
    #[serde(rename = "certificateKey")]
    pub certificate_key: String,
}

/// `BootstrapTokenDiscovery`. `token` is a plain string in Go (checked later by
/// validation), tagged `datapolicy:"token"`, hence [`Secret`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapTokenDiscovery {
    #[serde(rename = "token")]
    pub token: Secret,
    #[serde(rename = "apiServerEndpoint")]
    pub api_server_endpoint: String,
    #[serde(rename = "caCertHashes")]
    pub ca_cert_hashes: Vec<String>,
    #[serde(rename = "unsafeSkipCAVerification")]
    pub unsafe_skip_ca_verification: bool,
}

/// `FileDiscovery`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileDiscovery {
    #[serde(rename = "kubeConfigPath")]
    pub kube_config_path: String,
}

/// `core/v1` `Taint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Taint {
    #[serde(rename = "key")]
    pub key: String,
    #[serde(rename = "value")]
    pub value: String,
    #[serde(rename = "effect")]
    pub effect: String,
    /// `metav1.Time`; only the API server sets it.
    #[serde(rename = "timeAdded")]
    pub time_added: Option<String>,
}

/// `bootstraptoken/v1` `BootstrapToken`, an item of `InitConfiguration.bootstrapTokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapToken {
    #[serde(rename = "token")]
    pub token: Option<BootstrapTokenString>,
    #[serde(rename = "description")]
    pub description: String,
    #[serde(rename = "ttl")]
    pub ttl: Option<GoDuration>,
    /// `metav1.Time` (RFC 3339); khactl uses `ttl`, which excludes it.
    #[serde(rename = "expires")]
    pub expires: Option<String>,
    #[serde(rename = "usages")]
    pub usages: Vec<String>,
    #[serde(rename = "groups")]
    pub groups: Vec<String>,
}

/// `BootstrapTokenString`: kubeadm's `UnmarshalJSON` rejects anything but
/// `[a-z0-9]{6}.[a-z0-9]{16}` while decoding, so this does too. Debug hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapTokenString {
    pub id: String,
    secret: String,
}

impl BootstrapTokenString {
    /// The token as kubeadm writes it, `id.secret`.
    pub fn reveal(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for BootstrapTokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.<redacted>", self.id)
    }
}

impl<'de> Deserialize<'de> for BootstrapTokenString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match crate::render::kubeadm::token::split_token(&text) {
            Some((id, secret)) => Ok(Self {
                id: id.to_owned(),
                secret: secret.to_owned(),
            }),
            None => Err(de::Error::custom(
                "the bootstrap token is not of the form \"\\\\A([a-z0-9]{6})\\\\.([a-z0-9]{16})\\\\z\"",
            )),
        }
    }
}

/// A string kubeadm tags `datapolicy:"token"`: kept, but never shown by Debug.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

/// `metav1.Duration`: Go's `time.ParseDuration` syntax (`1h0m0s`, `90s`, `1.5h`), which
/// kubeadm applies while decoding. Negative durations, which Go accepts, are refused:
/// no kubeadm timeout or TTL means anything with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("time: invalid duration {text:?}");
        if text == "0" {
            return Ok(Self(Duration::ZERO));
        }
        let mut rest = text;
        let mut nanos: u128 = 0;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .ok_or_else(|| format!("time: missing unit in duration {text:?}"))?;
            let (number, tail) = rest.split_at(number_len);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let scale: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(format!("time: missing unit in duration {text:?}")),
                _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
            };
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
                return Err(bad());
            }
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let mut part = whole.checked_mul(scale).ok_or_else(bad)?;
            let mut place = scale;
            for digit in fraction.bytes() {
                place /= 10;
                part += u128::from(digit - b'0') * place;
            }
            nanos = nanos.checked_add(part).ok_or_else(bad)?;
            rest = tail;
        }
        let nanos = u64::try_from(nanos).map_err(|_| bad())?;
        Ok(Self(Duration::from_nanos(nanos)))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        GoDuration::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_time_parse_duration_does() {
        let d = |s: &str| GoDuration::parse(s).map(|d| d.0);
        assert_eq!(d("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("4m0s"), Ok(Duration::from_secs(240)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        for bad in ["", "1", "h", "1hour", "1h30", "-1h", "1..5h", ".h", "1d"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }
}
