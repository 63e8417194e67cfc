//! Every node at once, the files of `khactl render`, and what render_node refuses.

use super::*;

#[test]
fn render_cluster_gives_each_node_its_purpose_in_inventory_order() {
    let inv = inventory("v1.31.2");
    let all = render_cluster(&inv, &token(), &hash()).unwrap();
    assert_eq!(
        purposes(&all),
        [
            ("cp1", Purpose::Init),
            ("cp2", Purpose::JoinControlPlane),
            ("cp3", Purpose::JoinControlPlane),
            ("w1", Purpose::JoinWorker),
            ("w2", Purpose::JoinWorker),
        ]
    );
    assert_eq!(init_node(&inv).unwrap().name.as_str(), "cp1");
    let redacted = all.files(Secrets::Redacted);
    let names: Vec<&str> = redacted.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cp1-kubeadm-init.yaml",
            "cp2-kubeadm-join-control-plane.yaml",
            "cp3-kubeadm-join-control-plane.yaml",
            "w1-kubeadm-join-worker.yaml",
            "w2-kubeadm-join-worker.yaml",
        ]
    );
    assert!(
        redacted
            .iter()
            .all(|f| f.mode == 0o644 && !f.contents.contains(TOKEN))
    );
    let shown = all.files(Secrets::Shown);
    assert!(
        shown
            .iter()
            .all(|f| f.mode == 0o600 && f.contents.contains(TOKEN))
    );
}

#[test]
fn write_files_sets_the_mode_before_writing_even_over_an_old_file() {
    use std::os::unix::fs::PermissionsExt;
    let inv = inventory("v1.31.2");
    let all = render_cluster(&inv, &token(), &hash()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let first = out.join("cp1-kubeadm-init.yaml");
    std::fs::write(&first, "old and longer than nothing ".repeat(400)).unwrap();
    std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o666)).unwrap();
    let files = all.files(Secrets::Shown);
    let written = write_files(&out, &files).unwrap();
    assert_eq!(written.len(), 5);
    for (path, file) in written.iter().zip(&files) {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            path.display()
        );
        assert_eq!(std::fs::read_to_string(path).unwrap(), file.contents);
    }
    let fresh = dir.path().join("fresh");
    write_files(&fresh, &all.files(Secrets::Redacted)).unwrap();
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_node_is_rendered_only_for_what_its_role_allows() {
    let inv = inventory("v1.31.2");
    let w1 = inv.node("w1").unwrap();
    let cp2 = inv.node("cp2").unwrap();
    for (node, purpose) in [
        (w1, Purpose::Init),
        (w1, Purpose::JoinControlPlane),
        (cp2, Purpose::JoinWorker),
    ] {
        let err = render_node(&inv, node, purpose, &token(), &hash()).unwrap_err();
        assert!(matches!(err, KubeadmError::WrongRole { .. }), "{err}");
    }
    // Any control plane can be rendered for init (the phases pick the node).
    render_node(&inv, cp2, Purpose::Init, &token(), &hash()).unwrap();
    let mut stranger = w1.clone();
    stranger.name = crate::inventory::NodeName::new("w9").unwrap();
    let err = render_node(&inv, &stranger, Purpose::JoinWorker, &token(), &hash()).unwrap_err();
    assert_eq!(err.to_string(), "node w9 is not in the inventory");
}

#[test]
fn a_ca_hash_must_be_a_sha256_pin() {
    let inv = inventory("v1.31.2");
    let w1 = inv.node("w1").unwrap();
    for bad in [
        "",
        "0a1b",
        "sha1:0a1b",
        &format!("sha256:{}", "0A1B".repeat(16)),
        &format!("sha256:{}", "0a1b".repeat(15)),
    ] {
        let err = render_node(&inv, w1, Purpose::JoinWorker, &token(), bad).unwrap_err();
        assert!(matches!(err, KubeadmError::CaHash(_)), "{bad}: {err}");
    }
}

#[test]
fn api_versions_follow_the_kubernetes_release() {
    let api = |v: &str| KubeadmApi::for_version(&KubernetesVersion::new(v).unwrap());
    assert_eq!(api("v1.29.0").unwrap(), KubeadmApi::V1beta3);
    assert_eq!(api("v1.30.9").unwrap(), KubeadmApi::V1beta3);
    assert_eq!(api("v1.31.0-rc.1").unwrap(), KubeadmApi::V1beta4);
    assert_eq!(api("v1.37.2").unwrap(), KubeadmApi::V1beta4);
    for old_or_new in ["v1.28.15", "v1.38.0"] {
        let err = api(old_or_new).unwrap_err();
        assert!(err.to_string().contains("v1.29.x to v1.37.x"), "{err}");
    }
}

#[test]
fn go_durations_are_written_as_kubeadm_prints_them() {
    use std::time::Duration;
    assert_eq!(context::go_duration(TOKEN_TTL), "1h0m0s");
    assert_eq!(context::go_duration(Duration::from_secs(240)), "4m0s");
    assert_eq!(context::go_duration(Duration::from_secs(45)), "45s");
    assert_eq!(context::go_duration(Duration::from_secs(5430)), "1h30m30s");
}
