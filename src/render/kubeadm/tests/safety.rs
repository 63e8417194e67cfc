//! Nothing from the inventory or a template bug gets past the render unnoticed.

use super::*;

/// Values come from a validated inventory, but the templates must not rely on it: a value
/// full of YAML syntax stays one string and adds no key, in both API versions.
#[test]
fn hostile_values_cannot_add_keys_to_any_document() {
    for version in ["v1.30.4", "v1.31.2"] {
        let mut inv = inventory(version);
        let evil = "x\"\nfeatureGates: {EvilGate: true}\n# \u{2028}unsafeSkipCAVerification: true";
        inv.kubeadm
            .api_server_extra_args
            .insert("audit-log-path".into(), evil.into());
        inv.kubeadm
            .api_server_extra_args
            .insert(format!("k{evil}"), "v".into());
        inv.kubeadm
            .etcd_extra_args
            .insert("name".into(), "x\n    external: {}".into());
        inv.kubeadm
            .kubelet_extra_args
            .insert("max-pods".into(), "1\n  taints: null".into());
        inv.image_repository = Some("r\"\ncontrolPlaneEndpoint: evil:6443".into());
        let w2 = inv
            .nodes
            .iter_mut()
            .find(|n| n.name.as_str() == "w2")
            .unwrap();
        w2.labels.insert("a".into(), "b\n  controlPlane: {}".into());
        w2.taints.as_mut().unwrap()[0].key = "k\"\n    effect: NoExecute".into();

        let init = render(&inv, "cp1");
        let (api_server, image_repository) = match &init.documents()[1] {
            Document::ClusterV1beta3(c) => {
                (c.api_server.extra_args.clone(), c.image_repository.clone())
            }
            Document::ClusterV1beta4(c) => (
                c.api_server
                    .extra_args
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
                c.image_repository.clone(),
            ),
            other => panic!("{other:?}"),
        };
        assert_eq!(api_server["audit-log-path"], evil, "{version}");
        assert_eq!(api_server[&format!("k{evil}")], "v");
        assert_eq!(image_repository, "r\"\ncontrolPlaneEndpoint: evil:6443");
        // The controls found the endpoint, etcd and gates untouched, or render failed.
        let worker = render(&inv, "w2");
        let taints = match &worker.documents()[0] {
            Document::JoinV1beta3(j) => j.node_registration.taints.clone(),
            Document::JoinV1beta4(j) => j.node_registration.taints.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            taints.unwrap()[0],
            taint("k\"\n    effect: NoExecute", "true", "NoSchedule")
        );
        assert!(init.text().contains(r#"\u2028"#), "{}", init.text());
    }
}

#[test]
fn every_value_in_the_kubeadm_templates_goes_through_the_json_filter() {
    let t = context::TEMPLATES;
    for template in [
        t.init,
        t.cluster,
        t.join,
        t.node_registration,
        t.kubelet,
        t.kube_proxy,
    ] {
        for expr in template.text.split("{{").skip(1) {
            let expr = expr.split("}}").next().unwrap_or_default().trim();
            assert!(
                expr.ends_with("| json"),
                "{}: `{{{{ {expr} }}}}` is printed without the json filter",
                template.name
            );
        }
    }
}

#[test]
fn the_token_is_in_the_file_and_nowhere_else() {
    let inv = inventory("v1.31.2");
    for name in ["cp1", "cp2", "w1"] {
        let docs = render(&inv, name);
        assert!(docs.text().contains(TOKEN), "{name}");
        let redacted = docs.redacted();
        assert!(!redacted.contains("0123456789abcdef"), "{redacted}");
        assert!(redacted.contains("token: \"<redacted>\""), "{redacted}");
        assert_eq!(redacted.replace("<redacted>", TOKEN), docs.text());
        let debug = format!("{docs:?} {:?}", docs.documents());
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }
    let all = render_cluster(&inv, &token(), &hash()).unwrap();
    assert!(!format!("{all:?}").contains("0123456789abcdef"));
}

/// Real `kubeadm init` and `join` only warn about an unknown field and go on without it;
/// here a misspelt key in any template stops the render, naming the field and the line.
#[test]
fn a_typo_in_any_template_is_an_error_before_any_node_is_touched() {
    let cases = [
        (
            "node-registration",
            "kubeletExtraArgs:",
            "kubletExtraArgs:",
            "v1.31.2",
            "cp1",
            "kubletExtraArgs",
        ),
        (
            "node-registration",
            "criSocket:",
            "criSocke:",
            "v1.30.4",
            "w1",
            "criSocke",
        ),
        (
            "cluster-configuration",
            "certSANs:",
            "certSans:",
            "v1.31.2",
            "cp1",
            "certSans",
        ),
        (
            "cluster-configuration",
            "peerCertSANs:",
            "peerCertSans:",
            "v1.30.4",
            "cp1",
            "peerCertSans",
        ),
        (
            "init-configuration",
            "localAPIEndpoint:",
            "localApiEndpoint:",
            "v1.37.0",
            "cp1",
            "localApiEndpoint",
        ),
        (
            "join-configuration",
            "caCertHashes:",
            "caCertHash:",
            "v1.31.2",
            "w1",
            "caCertHash",
        ),
        (
            "join-configuration",
            "  timeout:",
            "  timeOut:",
            "v1.30.4",
            "w1",
            "timeOut",
        ),
        (
            "kubelet-configuration",
            "cgroupDriver:",
            "cgroupdriver:",
            "v1.31.2",
            "cp1",
            "cgroupdriver",
        ),
        (
            "kube-proxy-configuration",
            "clusterCIDR:",
            "clusterCidr:",
            "v1.31.2",
            "cp1",
            "clusterCidr",
        ),
    ];
    for (which, from, to, version, node, field) in cases {
        let t = broken_templates(which, from, to);
        let err = render_with_templates(&t, version, node).unwrap_err();
        let KubeadmError::NotStrict { source, .. } = &err else {
            panic!("{which}: {err}")
        };
        assert!(
            source.detail.contains(&format!("unknown field `{field}`")),
            "{which}: {err}"
        );
        let line = err.to_string();
        assert!(line.starts_with("internal: the "), "{line}");
    }
    // The untouched templates pass the same pipeline.
    render_with_templates(&context::TEMPLATES, "v1.31.2", "cp1").unwrap();
}

/// A value of the wrong type is what kubeadm itself fails on while decoding, e.g. the
/// v1beta3 map form of extra args under v1beta4.
#[test]
fn the_wrong_extra_args_form_for_the_version_is_an_error() {
    let t = broken_templates(
        "node-registration",
        "{%- if list_args %}",
        "{%- if not list_args %}",
    );
    for version in ["v1.30.4", "v1.31.2"] {
        let err = render_with_templates(&t, version, "cp1").unwrap_err();
        assert!(
            matches!(err, KubeadmError::NotStrict { .. }),
            "{version}: {err}"
        );
    }
}

/// Documents kubeadm would accept but that break khactl's layout are refused too.
#[test]
fn documents_that_break_the_layout_are_refused() {
    let cases = [
        (
            "join-configuration",
            "    caCertHashes:",
            "    unsafeSkipCAVerification: true\n    caCertHashes:",
            "w1",
            "never unsafeSkipCAVerification",
        ),
        (
            "join-configuration",
            "controlPlane:\n  localAPIEndpoint:",
            "controlPlane:\n  certificateKey: \"00\"\n  localAPIEndpoint:",
            "cp2",
            "certificateKey",
        ),
        (
            "cluster-configuration",
            "clusterName:",
            "featureGates: { SomeGate: true }\nclusterName:",
            "cp1",
            "featureGates",
        ),
        (
            "node-registration",
            "  taints: []",
            "",
            "w1",
            "leaves taints out",
        ),
        (
            "init-configuration",
            "kind: InitConfiguration",
            "kind: InitConfiguration\nskipPhases: [preflight]",
            "cp1",
            "skipPhases",
        ),
        (
            "init-configuration",
            "ttl: {{ token_ttl | json }}",
            "ttl: \"24h0m0s\"",
            "cp1",
            "one hour",
        ),
        (
            "init-configuration",
            "bindPort: {{ bind_port | json }}",
            "bindPort: 7443",
            "cp1",
            "that khagent balances to",
        ),
        (
            "cluster-configuration",
            "controlPlaneEndpoint: {{ control_plane_endpoint | json }}",
            "controlPlaneEndpoint: \"10.0.0.100:6443\"",
            "cp1",
            "Port-6443",
        ),
    ];
    for (which, from, to, node, fragment) in cases {
        let t = broken_templates(which, from, to);
        let err = render_with_templates(&t, "v1.31.2", node).unwrap_err();
        assert!(
            matches!(err, KubeadmError::Control { .. }),
            "{which}: {err}"
        );
        assert!(err.to_string().contains(fragment), "{which}: {err}");
    }
}
