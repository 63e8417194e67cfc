//! When a node's certificates expire: every certificate under `/etc/kubernetes/pki`, the
//! client certificates embedded in kubeadm's kubeconfigs, and the kubelet's rotated client
//! certificate. Only certificate blocks leave the node (never a key: the kubelet's `.pem` and
//! the kubeconfigs also hold keys, so the node prints the certificate part alone); they are
//! parsed here, so the node needs no `openssl`.

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use time::OffsetDateTime;

use crate::pki;
use crate::remote::{NodeHandle, RemoteCommand};

/// Certificates closer to their end than this are worth a warning.
pub const WARN_DAYS: i64 = 30;

/// Prints `== PATH` before each source, then only its certificate: PEM certificate blocks of
/// files, the `client-certificate-data` value (base64 of PEM) of kubeconfigs.
const READ: &str = r#"find /etc/kubernetes/pki -name '*.crt' -type f 2>/dev/null | sort | while read -r f; do
  echo "== $f"
  sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$f"
done
for f in /etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf \
  /etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf \
  /etc/kubernetes/kubelet.conf; do
  [ -r "$f" ] || continue
  data=$(sed -n 's/^ *client-certificate-data: *//p' "$f")
  [ -n "$data" ] || continue
  echo "== $f"
  echo "$data"
done
f=/var/lib/kubelet/pki/kubelet-client-current.pem
if [ -r "$f" ]; then
  echo "== $f"
  sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$f"
fi
exit 0
"#;

/// One certificate on a node and when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertExpiry {
    pub path: String,
    pub subject: String,
    /// RFC 3339.
    pub not_after: String,
    /// Whole days left (negative: expired that many days ago).
    pub days_left: i64,
}

/// Every certificate `host` has, soonest expiry first.
pub async fn read(host: &NodeHandle) -> anyhow::Result<Vec<CertExpiry>> {
    let cmd = RemoteCommand::script("cert-expiry", READ, Vec::<String>::new())
        .read_only()
        .timeout(Duration::from_secs(20));
    let out = host.run(&cmd).await?.stdout_str();
    Ok(parse(&out, OffsetDateTime::now_utc()))
}

/// Parses [`READ`]'s output; sources that hold no readable certificate are left out.
pub fn parse(text: &str, now: OffsetDateTime) -> Vec<CertExpiry> {
    let mut found = Vec::new();
    let mut sections: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("== ") {
            sections.push((path, String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    for (path, body) in sections {
        let pem = if body.contains("-----BEGIN") {
            body.into_bytes()
        } else {
            let data: String = body.split_whitespace().collect();
            match base64::engine::general_purpose::STANDARD.decode(data) {
                Ok(p) => p,
                Err(_) => continue,
            }
        };
        let Ok((subject, end)) = pki::subject_and_not_after(&pem) else {
            continue;
        };
        found.push(CertExpiry {
            path: path.to_owned(),
            subject,
            not_after: end
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            days_left: (end - now).whole_days(),
        });
    }
    found.sort_by(|a, b| a.days_left.cmp(&b.days_left).then(a.path.cmp(&b.path)));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_valid_for(days: i64) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(days);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn reads_files_and_kubeconfig_data_soonest_first_and_skips_what_is_not_a_certificate() {
        let long = pem_valid_for(3650);
        let soon = pem_valid_for(10);
        let data = base64::engine::general_purpose::STANDARD.encode(soon.as_bytes());
        let text = format!(
            "== /etc/kubernetes/pki/ca.crt\n{long}== /etc/kubernetes/admin.conf\n{data}\n\
             == /etc/kubernetes/pki/broken.crt\nnot a certificate\n"
        );
        let certs = parse(&text, OffsetDateTime::now_utc());
        assert_eq!(certs.len(), 2, "{certs:?}");
        assert_eq!(certs[0].path, "/etc/kubernetes/admin.conf");
        assert!((9..=10).contains(&certs[0].days_left), "{certs:?}");
        assert_eq!(certs[1].path, "/etc/kubernetes/pki/ca.crt");
        assert!(certs[1].days_left > 3000);
    }

    #[test]
    fn the_node_script_sends_certificate_blocks_only() {
        // Keys share files with certificates (kubelet-client-current.pem, kubeconfigs): the
        // script must never print a whole file.
        assert!(!READ.contains("cat "), "{READ}");
        assert!(!READ.contains("client-key-data"));
        assert_eq!(
            READ.matches("sed -n '/-----BEGIN CERTIFICATE-----/")
                .count(),
            2
        );
    }
}
