//! Load-or-create for each piece of the PKI, with the rules that keep re-runs
//! harmless: a CA or the service-account key is created once and never replaced
//! (half of one on disk is an error); a leaf is reused while it still matches its
//! spec and re-issued, with a fresh key, when it does not.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair, PublicKeyData};
use time::{Duration, OffsetDateTime};

use super::catalog::{Authority, LeafSpec};
use super::inspect::{self, LeafCheck, Reissue};
use super::store::{self, CERT_MODE, KEY_MODE};
use super::{Outcome, PkiError, PkiReport};
use crate::inventory::PkiSettings;

/// A CA warns this long before it expires: khactl never replaces a CA by itself.
const AUTHORITY_WARNING: Duration = Duration::days(90);

/// A certificate with its key, as stored (and as distributed: byte for byte).
pub struct Pair {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub not_after: OffsetDateTime,
}

/// A CA ready to sign.
pub struct LoadedAuthority {
    pub pair: Pair,
    pub cert_path: PathBuf,
    pub der: Vec<u8>,
    pub not_before: OffsetDateTime,
    /// `sha256:<hex>` of its public key (the kubeadm discovery pin).
    pub spki_pin: String,
    issuer: Issuer<'static, KeyPair>,
}

/// `<base>.crt` and `<base>.key` under `dir`.
pub fn pair_paths(dir: &Path, base: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut s: OsString = dir.join(base).into_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".crt"), with(".key"))
}

pub fn authority(
    dir: &Path,
    authority: Authority,
    settings: &PkiSettings,
    now: OffsetDateTime,
    report: &mut PkiReport,
) -> Result<LoadedAuthority, PkiError> {
    let (cert_path, key_path) = pair_paths(dir, Path::new(authority.base()));
    let what = "a CA";
    let (cert, key) = match (
        store::read_optional(&cert_path)?,
        store::read_optional(&key_path)?,
    ) {
        (Some(cert), Some(key)) => {
            store::ensure_mode(&key_path, KEY_MODE)?;
            report.push(authority.base(), Outcome::Reused);
            (cert, key)
        }
        (None, None) => {
            let key = super::issue::generate_key(settings.key_type)?;
            let cert = super::issue::self_signed_authority(
                authority,
                &key,
                now,
                settings.ca_validity_days,
            )?;
            let key = key.serialize_pem().into_bytes();
            // Key first: a crash in between leaves a lone key, which the next run
            // reports instead of silently issuing under a CA nobody can reproduce.
            store::write_atomic(&key_path, &key, KEY_MODE)?;
            store::write_atomic(&cert_path, cert.as_bytes(), CERT_MODE)?;
            report.push(authority.base(), Outcome::Created);
            (cert.into_bytes(), key)
        }
        (Some(_), None) => {
            return Err(PkiError::HalfPresent {
                what,
                present: cert_path,
                missing: key_path,
            });
        }
        (None, Some(_)) => {
            return Err(PkiError::HalfPresent {
                what,
                present: key_path,
                missing: cert_path,
            });
        }
    };
    let unusable = |reason: String| PkiError::Unusable {
        what,
        path: cert_path.clone(),
        reason,
    };
    let der = inspect::cert_der(&cert).map_err(unusable)?;
    let parsed = inspect::parse(&der).map_err(unusable)?;
    let signing_key = inspect::load_key(&key).map_err(|reason| PkiError::Unusable {
        what: "a CA key",
        path: key_path.clone(),
        reason,
    })?;
    if !inspect::key_matches(&parsed, &signing_key) {
        return Err(PkiError::KeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }
    if let Some(reason) = inspect::authority_problem(&parsed, now) {
        return Err(unusable(reason));
    }
    let not_after = inspect::not_after(&parsed);
    let not_before = inspect::not_before(&parsed);
    let spki_pin = inspect::spki_pin(&parsed);
    if not_after - now < AUTHORITY_WARNING {
        report.warnings.push(format!(
            "the {} CA expires on {}; khactl never renews a CA by itself",
            authority.base(),
            not_after.date()
        ));
    }
    let pem = std::str::from_utf8(&cert).map_err(|_| unusable("not PEM text".into()))?;
    let issuer = Issuer::from_ca_cert_pem(pem, signing_key)
        .map_err(|e| unusable(format!("rcgen cannot sign with it: {e}")))?;
    Ok(LoadedAuthority {
        pair: Pair {
            cert,
            key,
            not_after,
        },
        cert_path,
        der,
        not_before,
        spki_pin,
        issuer,
    })
}

/// The service-account signing key pair (`sa.key`, `sa.pub`). Like a CA it is
/// never replaced: every issued service-account token is signed with it.
pub fn service_account(dir: &Path, report: &mut PkiReport) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    let key_path = dir.join("sa.key");
    let pub_path = dir.join("sa.pub");
    let what = "the service-account key pair";
    match (
        store::read_optional(&key_path)?,
        store::read_optional(&pub_path)?,
    ) {
        (None, None) => {
            // RSA whatever pki.keyType says: every Kubernetes version and every
            // OIDC consumer of the issuer's JWKS accepts RS256.
            let key = super::issue::generate_key(crate::inventory::KeyType::Rsa2048)?;
            let (private, public) = (
                key.serialize_pem().into_bytes(),
                key.public_key_pem().into_bytes(),
            );
            store::write_atomic(&key_path, &private, KEY_MODE)?;
            store::write_atomic(&pub_path, &public, CERT_MODE)?;
            report.push("sa", Outcome::Created);
            Ok((private, public))
        }
        (None, Some(_)) => Err(PkiError::HalfPresent {
            what,
            present: pub_path,
            missing: key_path,
        }),
        (Some(private), public) => {
            let key = inspect::load_key(&private).map_err(|reason| PkiError::Unusable {
                what,
                path: key_path.clone(),
                reason,
            })?;
            store::ensure_mode(&key_path, KEY_MODE)?;
            let public = match public {
                Some(public) => {
                    let spki = inspect::pem_block(&public, "PUBLIC KEY").map_err(|reason| {
                        PkiError::Unusable {
                            what,
                            path: pub_path.clone(),
                            reason,
                        }
                    })?;
                    if spki != key.subject_public_key_info() {
                        return Err(PkiError::KeyMismatch {
                            cert: pub_path,
                            key: key_path,
                        });
                    }
                    report.push("sa", Outcome::Reused);
                    public
                }
                None => {
                    // The public half is derived data: rebuilding it loses nothing.
                    let public = key.public_key_pem().into_bytes();
                    store::write_atomic(&pub_path, &public, CERT_MODE)?;
                    report.push("sa", Outcome::Reissued(Reissue::Missing));
                    public
                }
            };
            Ok((private, public))
        }
    }
}

pub fn leaf(
    dir: &Path,
    spec: &LeafSpec,
    ca: &LoadedAuthority,
    settings: &PkiSettings,
    now: OffsetDateTime,
    report: &mut PkiReport,
) -> Result<Pair, PkiError> {
    let (cert_path, key_path) = pair_paths(dir, &spec.local_base());
    // A leaf never outlives its CA: past that it would not verify anyway.
    let fresh_not_after =
        (now + Duration::days(i64::from(settings.cert_validity_days))).min(ca.pair.not_after);
    let not_before = (now - super::issue::BACKDATE).max(ca.not_before);
    let ca_cert = inspect::parse(&ca.der).map_err(|reason| PkiError::Unusable {
        what: "a CA",
        path: ca.cert_path.clone(),
        reason,
    })?;
    let check = LeafCheck {
        spec,
        ca: &ca_cert,
        key_type: settings.key_type,
        now,
        renew_before: inspect::renewal_window(settings.cert_validity_days),
        fresh_not_after,
    };
    let existing = (
        store::read_optional(&cert_path)?,
        store::read_optional(&key_path)?,
    );
    let verdict = match &existing {
        (Some(cert), Some(key)) => check.verdict(cert, key),
        _ => Some(Reissue::Missing),
    };
    let name = spec.display_name();
    match (verdict, existing) {
        (None, (Some(cert), Some(key))) => {
            store::ensure_mode(&key_path, KEY_MODE)?;
            let not_after = pem_not_after(&cert).unwrap_or(fresh_not_after);
            report.push(&name, Outcome::Reused);
            Ok(Pair {
                cert,
                key,
                not_after,
            })
        }
        (verdict, _) => {
            let key = super::issue::generate_key(settings.key_type)?;
            let cert =
                super::issue::signed_leaf(spec, &key, &ca.issuer, not_before, fresh_not_after)?;
            let key = key.serialize_pem().into_bytes();
            store::write_atomic(&key_path, &key, KEY_MODE)?;
            store::write_atomic(&cert_path, cert.as_bytes(), CERT_MODE)?;
            let outcome = match verdict {
                None | Some(Reissue::Missing) => Outcome::Created,
                Some(reason) => Outcome::Reissued(reason),
            };
            report.push(&name, outcome);
            let cert = cert.into_bytes();
            let not_after = pem_not_after(&cert).unwrap_or(fresh_not_after);
            Ok(Pair {
                cert,
                key,
                not_after,
            })
        }
    }
}

/// The expiry written in a PEM certificate (rcgen drops sub-second precision, so
/// this is the value to show, not the one we asked for).
fn pem_not_after(pem: &[u8]) -> Option<OffsetDateTime> {
    let der = inspect::cert_der(pem).ok()?;
    inspect::parse(&der).ok().map(|c| inspect::not_after(&c))
}
