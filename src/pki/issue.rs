//! Making keys and certificates with rcgen: the three CAs and the leaves, with the
//! extensions of the classic cfssl profiles. Only this file builds certificates.

use std::io::Read;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::PkiError;
use super::catalog::{Authority, LeafSpec};
use crate::inventory::KeyType;

/// How far certificates are backdated, so a node whose clock is a little behind ours
/// does not see them as "not yet valid" (kubeadm backdates by the same amount).
pub const BACKDATE: Duration = Duration::minutes(5);

/// The rcgen algorithm for a configured key type.
pub fn algorithm(key_type: KeyType) -> &'static rcgen::SignatureAlgorithm {
    match key_type {
        KeyType::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
    }
}

/// A fresh key. RSA keys come out 2048-bit (aws-lc-rs's default for `generate_for`).
pub fn generate_key(key_type: KeyType) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(algorithm(key_type)).map_err(PkiError::crypto("generate a private key"))
}

/// A self-signed CA certificate valid for `days` from `now` (minus the backdate).
pub fn self_signed_authority(
    authority: Authority,
    key: &KeyPair,
    now: OffsetDateTime,
    days: u32,
) -> Result<String, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(authority.common_name(), &[]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // RFC 5280 §4.2.1.3: keyCertSign and cRLSign for a CA; digitalSignature too, as
    // cfssl and kubeadm set it (OCSP / CSR signing by the CA key).
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(key).map_err(PkiError::crypto(format!(
        "sign the {} CA certificate",
        authority.base()
    )))?;
    Ok(cert.pem())
}

/// A leaf for `spec`, signed by `issuer`, valid until `not_after`.
pub fn signed_leaf(
    spec: &LeafSpec,
    key: &KeyPair,
    issuer: &Issuer<'_, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<String, PkiError> {
    let what = || format!("issue {}", spec.display_name());
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(&spec.common_name, &spec.organizations);
    params.subject_alt_names = spec
        .dns_names
        .iter()
        .map(|n| n.clone().try_into().map(SanType::DnsName))
        .chain(
            spec.ip_addresses
                .iter()
                .map(|ip| Ok(SanType::IpAddress(*ip))),
        )
        .collect::<Result<_, _>>()
        .map_err(PkiError::crypto(what()))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = leaf_key_usages(key);
    if spec.profile.server_auth() {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if spec.profile.client_auth() {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let cert = params
        .signed_by(key, issuer)
        .map_err(PkiError::crypto(what()))?;
    Ok(cert.pem())
}

/// digitalSignature always; keyEncipherment only for RSA, where TLS key transport
/// may use it. RFC 5480 §3 forbids keyEncipherment on EC keys, and Go's TLS stack
/// (kubeadm does the same) leaves it off for them.
pub fn leaf_key_usages(key: &KeyPair) -> Vec<KeyUsagePurpose> {
    if key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    }
}

fn subject(common_name: &str, organizations: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    // rcgen's DistinguishedName holds one value per attribute type; kubeadm's certs
    // carry at most one O, so that is all we need.
    if let Some(o) = organizations.first() {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// 16 random bytes from the kernel, positive and non-zero as RFC 5280 §4.1.2.2 wants.
/// (rcgen's default, a hash of the public key, would repeat if a key were reused.)
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    let path = std::path::Path::new("/dev/urandom");
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| PkiError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}
