//! kubeconfig files as kubeadm writes them (`phases/kubeconfig/kubeconfig.go`,
//! `util/kubeconfig/kubeconfig.go`): one cluster named after the cluster, one user named
//! after the client certificate's CN, one context `<user>@<cluster>` that is current,
//! with the CA, the client certificate and its key embedded.
//!
//! kubeadm accepts a kubeconfig it finds in place when its CA data and server URL are
//! the ones it would write, and trusts the client certificate (`validateKubeConfig`).
//! So the server URLs (computed in [`super::catalog`]) are the ones kubeadm computes, and
//! the CA data is the CA certificate re-encoded the way Go's `pem.Encode` writes it,
//! whatever the bytes of `ca.crt` (an adopted CA may carry text around its PEM block).

use serde::{Deserialize, Serialize};

use super::PkiError;

/// Where kubeadm keeps its kubeconfigs on a node.
pub const REMOTE_DIR: &str = "/etc/kubernetes";

/// What one kubeconfig file says.
pub struct Contents<'a> {
    pub cluster: &'a str,
    pub server: &'a str,
    pub user: &'a str,
    /// The CA certificate, DER.
    pub ca_der: &'a [u8],
    /// The client certificate and key, PEM, embedded as they are stored.
    pub cert_pem: &'a [u8],
    pub key_pem: &'a [u8],
}

/// The file, YAML in the field order and layout `clientcmd.Write` gives.
pub fn render(c: &Contents<'_>) -> Result<Vec<u8>, PkiError> {
    let context = format!("{}@{}", c.user, c.cluster);
    let config = Config {
        api_version: "v1".to_owned(),
        clusters: vec![NamedCluster {
            cluster: Cluster {
                certificate_authority_data: base64(&pem("CERTIFICATE", c.ca_der)),
                server: c.server.to_owned(),
            },
            name: c.cluster.to_owned(),
        }],
        contexts: vec![NamedContext {
            context: Context {
                cluster: c.cluster.to_owned(),
                user: c.user.to_owned(),
            },
            name: context.clone(),
        }],
        current_context: context,
        kind: "Config".to_owned(),
        preferences: Preferences {},
        users: vec![NamedUser {
            name: c.user.to_owned(),
            user: User {
                client_certificate_data: base64(c.cert_pem),
                client_key_data: base64(c.key_pem),
            },
        }],
    };
    serde_yaml_ng::to_string(&config)
        .map(String::into_bytes)
        .map_err(|source| PkiError::Kubeconfig {
            user: c.user.to_owned(),
            source,
        })
}

/// kubeconfig `v1`, the subset kubeadm writes, in clientcmd's (alphabetical) order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub clusters: Vec<NamedCluster>,
    pub contexts: Vec<NamedContext>,
    pub current_context: String,
    pub kind: String,
    pub preferences: Preferences,
    pub users: Vec<NamedUser>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedCluster {
    pub cluster: Cluster,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct Cluster {
    pub certificate_authority_data: String,
    pub server: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedContext {
    pub context: Context,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Context {
    pub cluster: String,
    pub user: String,
}

/// Always empty; clientcmd writes it as `{}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Preferences {}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct User {
    pub client_certificate_data: String,
    pub client_key_data: String,
}

/// A PEM block as Go's `pem.Encode` writes it: 64-column base64 lines, LF endings, a
/// final newline. kubeadm compares kubeconfig CA data with this encoding of `ca.crt`.
pub fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let body = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

/// Standard base64 with padding (RFC 4648 §4), what kubeconfig `*-data` fields hold.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    }

    #[test]
    fn pem_wraps_at_64_columns_with_lf_and_a_final_newline() {
        let der: Vec<u8> = (0..=255).collect();
        let text = String::from_utf8(pem("CERTIFICATE", &der)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(*lines.last().unwrap(), "-----END CERTIFICATE-----");
        assert!(lines[1..lines.len() - 2].iter().all(|l| l.len() == 64));
        assert!(text.ends_with("-----\n") && !text.contains('\r'));
        assert_eq!(lines[1..lines.len() - 1].concat(), base64(&der));
    }

    #[test]
    fn render_writes_kubeadms_names_and_layout() {
        let text = String::from_utf8(
            render(&Contents {
                cluster: "lab",
                server: "https://10.77.0.11:6443",
                user: "system:kube-scheduler",
                ca_der: b"ca",
                cert_pem: b"cert",
                key_pem: b"key",
            })
            .unwrap(),
        )
        .unwrap();
        let ca = base64(b"-----BEGIN CERTIFICATE-----\nY2E=\n-----END CERTIFICATE-----\n");
        assert_eq!(
            text,
            format!(
                "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: https://10.77.0.11:6443
  name: lab
contexts:
- context:
    cluster: lab
    user: system:kube-scheduler
  name: system:kube-scheduler@lab
current-context: system:kube-scheduler@lab
kind: Config
preferences: {{}}
users:
- name: system:kube-scheduler
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
"
            )
        );
    }
}
