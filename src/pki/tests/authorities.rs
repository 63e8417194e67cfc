//! The CAs and the service-account key: created once, never replaced, and every way one
//! can be broken on disk is an error that names the file.

use std::fs;

use time::{Duration, OffsetDateTime};

use super::{inventory, openssl, snapshot, verify};
use crate::pki::{Authority, Outcome, PkiError, ensure, ensure_at};

#[test]
fn a_ca_with_its_key_missing_is_an_error_and_nothing_is_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    fs::remove_file(tmp.path().join("etcd/ca.key")).unwrap();
    let before = snapshot(tmp.path());
    let err = ensure(tmp.path(), &inventory(1, 0)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PkiError::HalfPresent { .. }), "{err:?}");
    assert!(
        msg.contains("etcd/ca.crt exists but") && msg.contains("etcd/ca.key does not"),
        "{msg}"
    );
    assert!(msg.contains("never overwrites"), "{msg}");
    assert_eq!(snapshot(tmp.path()), before);
}

#[test]
fn a_ca_key_without_its_certificate_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    fs::remove_file(tmp.path().join("ca.crt")).unwrap();
    let err = ensure(tmp.path(), &inventory(1, 0)).unwrap_err();
    assert!(err.to_string().contains("ca.key exists but"), "{err}");
    assert!(!tmp.path().join("ca.crt").exists());
}

#[test]
fn a_ca_whose_key_belongs_elsewhere_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    fs::copy(
        tmp.path().join("front-proxy-ca.key"),
        tmp.path().join("ca.key"),
    )
    .unwrap();
    let err = ensure(tmp.path(), &inventory(1, 0)).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn a_garbled_ca_certificate_is_an_error_not_a_new_ca() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    fs::write(tmp.path().join("ca.crt"), b"garbage").unwrap();
    let err = ensure(tmp.path(), &inventory(1, 0)).unwrap_err();
    assert!(err.to_string().contains("is not usable as a CA"), "{err}");
    assert_eq!(fs::read(tmp.path().join("ca.crt")).unwrap(), b"garbage");
}

#[test]
fn a_leaf_in_place_of_a_ca_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    for ext in ["crt", "key"] {
        let from = tmp.path().join(format!("front-proxy-client.{ext}"));
        fs::copy(from, tmp.path().join(format!("front-proxy-ca.{ext}"))).unwrap();
    }
    let err = ensure(tmp.path(), &inventory(1, 0)).unwrap_err();
    assert!(err.to_string().contains("not a CA certificate"), "{err}");
}

#[test]
fn an_expired_ca_is_an_error_not_a_silent_replacement() {
    let tmp = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    ensure_at(tmp.path(), &inventory(1, 0), now).unwrap();
    let later = now + Duration::days(3651);
    let err = ensure_at(tmp.path(), &inventory(1, 0), later).unwrap_err();
    assert!(
        err.to_string()
            .contains("ca.crt is not usable as a CA: it expired on"),
        "{err}"
    );
}

#[test]
fn the_service_account_key_is_kept_and_its_public_half_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    let sa_key = fs::read(tmp.path().join("sa.key")).unwrap();
    let sa_pub = fs::read(tmp.path().join("sa.pub")).unwrap();
    fs::remove_file(tmp.path().join("sa.pub")).unwrap();
    ensure(tmp.path(), &inventory(1, 0)).unwrap();
    assert_eq!(fs::read(tmp.path().join("sa.key")).unwrap(), sa_key);
    assert_eq!(fs::read(tmp.path().join("sa.pub")).unwrap(), sa_pub);

    fs::remove_file(tmp.path().join("sa.key")).unwrap();
    let err = ensure(tmp.path(), &inventory(1, 0)).unwrap_err();
    assert!(err.to_string().contains("sa.pub exists but"), "{err}");
}

#[test]
fn an_existing_openssl_made_ca_is_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("etcd")).unwrap();
    // A PKCS#1 ("RSA PRIVATE KEY") key, as older kubeadm and openssl genrsa write them.
    let (ok, out) = openssl(
        &["genrsa", "-traditional", "-out", "etcd/ca.key", "2048"],
        tmp.path(),
    );
    assert!(ok, "{out}");
    assert!(
        fs::read_to_string(tmp.path().join("etcd/ca.key"))
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY")
    );
    let (ok, out) = openssl(
        &[
            "req",
            "-x509",
            "-key",
            "etcd/ca.key",
            "-out",
            "etcd/ca.crt",
            "-days",
            "30",
            "-subj",
            "/CN=etcd-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ],
        tmp.path(),
    );
    assert!(ok, "{out}");
    let theirs = fs::read(tmp.path().join("etcd/ca.crt")).unwrap();
    let (pki, report) = ensure(tmp.path(), &inventory(1, 0)).unwrap();
    assert_eq!(report.outcome("etcd/ca"), Some(&Outcome::Reused));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("etcd/ca CA expires")),
        "{report}"
    );
    assert_eq!(pki.authority_cert(Authority::Etcd), theirs.as_slice());
    let (ok, out) = verify(tmp.path(), "etcd/ca.crt", "nodes/cp-1/etcd/peer.crt", &[]);
    assert!(ok, "{out}");
    let peer = pki
        .expiries()
        .into_iter()
        .find(|e| e.name == "etcd/peer")
        .unwrap();
    let ca = pki
        .expiries()
        .into_iter()
        .find(|e| e.name == "etcd/ca")
        .unwrap();
    assert_eq!(peer.not_after, ca.not_after, "a leaf never outlives its CA");
    let (_, again) = ensure(tmp.path(), &inventory(1, 0)).unwrap();
    assert!(
        !again.changed(),
        "capped leaves are not renewed on every run: {again}"
    );
}
