//! Reading certificates and keys back (x509-parser) and deciding whether what is on
//! disk still matches what the inventory asks for. A leaf that matches is reused
//! byte for byte, which is what makes a second `up` change nothing on the nodes.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use rcgen::{KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

use super::catalog::LeafSpec;
use super::issue;
use crate::inventory::KeyType;

/// Leaves are renewed this long before they expire, so a cluster brought up again
/// now will not have certificates lapse before the next routine run.
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// The renewal window for leaves valid `validity_days`: [`RENEW_BEFORE`], but at most
/// half their lifetime, or a 7-day certificate would be renewed on every run.
pub fn renewal_window(validity_days: u32) -> Duration {
    RENEW_BEFORE.min(Duration::days(i64::from(validity_days)) / 2)
}

/// Why a leaf on disk is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reissue {
    /// Certificate or key file absent (first run, or deleted).
    Missing,
    Unreadable(String),
    KeyMismatch,
    KeyTypeChanged,
    SubjectChanged,
    NamesChanged,
    UsagesChanged,
    IssuerChanged,
    NotYetValid,
    ExpiresSoon {
        days: i64,
    },
}

impl fmt::Display for Reissue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reissue::Missing => f.write_str("missing"),
            Reissue::Unreadable(why) => write!(f, "unreadable ({why})"),
            Reissue::KeyMismatch => f.write_str("key does not match the certificate"),
            Reissue::KeyTypeChanged => f.write_str("pki.keyType changed"),
            Reissue::SubjectChanged => f.write_str("subject changed"),
            Reissue::NamesChanged => f.write_str("names (SANs) changed"),
            Reissue::UsagesChanged => f.write_str("key usages changed"),
            Reissue::IssuerChanged => f.write_str("not signed by the current CA"),
            Reissue::NotYetValid => f.write_str("not valid yet (clock skew?)"),
            Reissue::ExpiresSoon { days } => write!(f, "expires in {days} days"),
        }
    }
}

/// The DER inside a PEM `CERTIFICATE` block.
pub fn cert_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    pem_block(pem, "CERTIFICATE")
}

/// The DER inside a PEM block with the given label.
pub fn pem_block(pem: &[u8], label: &str) -> Result<Vec<u8>, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    if block.label != label {
        return Err(format!(
            "PEM block is {:?}, expected {label:?}",
            block.label
        ));
    }
    Ok(block.contents)
}

pub fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(format!("not an X.509 certificate: {e}")),
    }
}

/// A private key in PEM (PKCS#8, or PKCS#1 / SEC1 as other tools write them).
pub fn load_key(pem: &[u8]) -> Result<KeyPair, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_owned())?;
    KeyPair::from_pem(text).map_err(|e| format!("not a usable private key: {e}"))
}

pub fn key_matches(cert: &X509Certificate<'_>, key: &KeyPair) -> bool {
    cert.public_key().raw == key.subject_public_key_info().as_slice()
}

pub fn not_after(cert: &X509Certificate<'_>) -> OffsetDateTime {
    cert.validity().not_after.to_datetime()
}

pub fn not_before(cert: &X509Certificate<'_>) -> OffsetDateTime {
    cert.validity().not_before.to_datetime()
}

/// Why a certificate cannot serve as one of our CAs, if it cannot.
pub fn authority_problem(cert: &X509Certificate<'_>, now: OffsetDateTime) -> Option<String> {
    if !matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca) {
        return Some("it is not a CA certificate (basicConstraints CA:TRUE missing)".into());
    }
    // rcgen rebuilds the issuer name from the parsed subject and can only do that
    // for single-valued RDNs; refuse here rather than fail deep inside signing.
    if cert.subject().iter().any(|rdn| rdn.iter().count() != 1) {
        return Some(
            "its subject has multi-valued or empty RDNs, which khactl cannot sign under".into(),
        );
    }
    let expiry = not_after(cert);
    if expiry <= now {
        return Some(format!("it expired on {}", expiry.date()));
    }
    None
}

/// `sha256:<hex>` of the certificate's SubjectPublicKeyInfo: what `kubeadm join
/// --discovery-token-ca-cert-hash` pins (kubeadm's pubkeypin package).
pub fn spki_pin(cert: &X509Certificate<'_>) -> String {
    let digest = Sha256::digest(cert.public_key().raw);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// What a leaf on disk is judged against.
pub struct LeafCheck<'a> {
    pub spec: &'a LeafSpec,
    pub ca: &'a X509Certificate<'a>,
    pub key_type: KeyType,
    pub now: OffsetDateTime,
    /// Renew when less than this is left.
    pub renew_before: Duration,
    /// When a freshly issued leaf would expire; renewal only helps if that is later.
    pub fresh_not_after: OffsetDateTime,
}

impl LeafCheck<'_> {
    /// `None` when the leaf can be reused as it is, else why not.
    pub fn verdict(&self, cert_pem: &[u8], key_pem: &[u8]) -> Option<Reissue> {
        let der = match cert_der(cert_pem) {
            Ok(der) => der,
            Err(e) => return Some(Reissue::Unreadable(e)),
        };
        let cert = match parse(&der) {
            Ok(c) => c,
            Err(e) => return Some(Reissue::Unreadable(e)),
        };
        let key = match load_key(key_pem) {
            Ok(k) => k,
            Err(e) => return Some(Reissue::Unreadable(e)),
        };
        self.compare(&cert, &key)
    }

    fn compare(&self, cert: &X509Certificate<'_>, key: &KeyPair) -> Option<Reissue> {
        if !key_matches(cert, key) {
            return Some(Reissue::KeyMismatch);
        }
        if !has_key_type(cert, key, self.key_type) {
            return Some(Reissue::KeyTypeChanged);
        }
        if cert.issuer().as_raw() != self.ca.subject().as_raw()
            || cert.verify_signature(Some(self.ca.public_key())).is_err()
        {
            return Some(Reissue::IssuerChanged);
        }
        if !same_subject(cert, self.spec) {
            return Some(Reissue::SubjectChanged);
        }
        if names(cert) != expected_names(self.spec) {
            return Some(Reissue::NamesChanged);
        }
        if !same_usages(cert, key, self.spec) {
            return Some(Reissue::UsagesChanged);
        }
        if not_before(cert) > self.now {
            return Some(Reissue::NotYetValid);
        }
        let expiry = not_after(cert);
        if expiry - self.now < self.renew_before && self.fresh_not_after > expiry {
            return Some(Reissue::ExpiresSoon {
                days: (expiry - self.now).whole_days(),
            });
        }
        None
    }
}

fn has_key_type(cert: &X509Certificate<'_>, key: &KeyPair, key_type: KeyType) -> bool {
    if key.algorithm() != issue::algorithm(key_type) {
        return false;
    }
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => rsa.key_size() == 2048,
        Ok(PublicKey::EC(_)) => true,
        _ => false,
    }
}

fn same_subject(cert: &X509Certificate<'_>, spec: &LeafSpec) -> bool {
    let subject = cert.subject();
    let cns: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let total = subject.iter_attributes().count();
    cns == [spec.common_name.as_str()]
        && orgs
            == spec
                .organizations
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        && total == 1 + spec.organizations.len()
}

#[derive(Debug, PartialEq, Eq)]
struct Names {
    dns: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    other: usize,
}

fn names(cert: &X509Certificate<'_>) -> Names {
    let mut out = Names {
        dns: BTreeSet::new(),
        ips: BTreeSet::new(),
        other: 0,
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return out;
    };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(n) => {
                out.dns.insert((*n).to_owned());
            }
            GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
                Some(ip) => {
                    out.ips.insert(ip);
                }
                None => out.other += 1,
            },
            _ => out.other += 1,
        }
    }
    out
}

fn expected_names(spec: &LeafSpec) -> Names {
    Names {
        dns: spec.dns_names.iter().cloned().collect(),
        ips: spec.ip_addresses.iter().copied().collect(),
        other: 0,
    }
}

pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(v4))
    } else {
        <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
    }
}

fn same_usages(cert: &X509Certificate<'_>, key: &KeyPair, spec: &LeafSpec) -> bool {
    use rcgen::KeyUsagePurpose as K;
    let want = issue::leaf_key_usages(key);
    let ku_ok = match cert.key_usage() {
        Ok(Some(ku)) => {
            let ku = ku.value;
            ku.digital_signature() == want.contains(&K::DigitalSignature)
                && ku.key_encipherment() == want.contains(&K::KeyEncipherment)
                && !ku.key_cert_sign()
                && !ku.crl_sign()
        }
        _ => false,
    };
    let eku_ok = match cert.extended_key_usage() {
        Ok(Some(eku)) => {
            let eku = eku.value;
            eku.server_auth == spec.profile.server_auth()
                && eku.client_auth == spec.profile.client_auth()
                && !eku.any
                && eku.other.is_empty()
        }
        _ => false,
    };
    let not_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if !bc.value.ca);
    ku_ok && eku_ok && not_ca
}
