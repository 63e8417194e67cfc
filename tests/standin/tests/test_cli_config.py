"""Contract section 7, items 1-5: subcommands, flag rules, documents and versions, unknown
fields, field validation with kubeadm's exit codes. No daemon runs: every case stops before
preflight (or is expected to reach it)."""

import json
import unittest

import harness as H

ROOT_INIT = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: 127.0.0.2\nnodeRegistration:\n  name: cp1\n"
CLUSTER = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: %s\ncontrolPlaneEndpoint: 127.0.0.2:6443\n"


class CliCase(H.NodeTestCase):
    version = "v1.31.2"

    def n(self, version=None):
        return self.node(version=version or self.version, install=False, services=False)

    def init_with(self, node, text, *extra):
        return node.kubeadm("init", "--config", node.write("/root/k.yaml", text), *extra)

    def validate(self, node, text):
        return node.kubeadm("config", "validate", "--config", node.write("/root/k.yaml", text))


class Subcommands(CliCase):
    def test_unknown_flag_exits_1_with_cobras_text(self):
        res = self.n().kubeadm("init", "--x")
        self.assertFails(res, "unknown flag: --x", 1)
        self.assertIn("To see the stack trace of this error execute with --v=5 or higher", res.stderr)

    def test_unknown_flag_on_every_subcommand(self):
        node = self.n()
        for args in (["join", "--nope"], ["reset", "--nope"], ["certs", "check-expiration", "--nope"],
                     ["config", "validate", "--nope"], ["token", "create", "--nope"], ["version", "--nope"]):
            self.assertFails(node.kubeadm(*args), "unknown flag: --nope", 1)

    def test_unknown_command(self):
        self.assertFails(self.n().kubeadm("frobnicate"), 'unknown command "frobnicate" for "kubeadm"', 1)

    def test_version_says_it_is_a_stand_in(self):
        node = self.n()
        res = node.kubeadm("version", "-o", "short")
        self.assertOk(res)
        self.assertEqual(res.stdout.strip(), "v1.31.2")
        self.assertIn("khalab stand-in kubeadm (NOT the real kubeadm) emulating v1.31.2", res.stderr.splitlines()[0])
        info = json.loads(node.kubeadm("version", "-o", "json").stdout)["clientVersion"]
        self.assertEqual((info["major"], info["minor"], info["gitVersion"]), ("1", "31", "v1.31.2"))
        self.assertIn("khalab-standin", info["gitCommit"])
        self.assertIn('GitVersion:"v1.31.2"', node.kubeadm("version").stdout)

    def test_every_invocation_is_recorded_in_the_argv_log(self):
        node = self.n()
        node.kubeadm("version", "-o", "short")
        node.kubeadm("token", "create", "--nope")
        log = node.argv_log()
        self.assertEqual([e["argv"] for e in log], [["kubeadm", "version", "-o", "short"],
                                                     ["kubeadm", "token", "create", "--nope"]])
        self.assertTrue(all(e["pid"] > 0 and e["time"].endswith("Z") for e in log))


class MixedFlags(CliCase):
    def test_config_cannot_be_mixed_with_certificate_key(self):
        node = self.n()
        res = node.kubeadm("init", "--config", node.write("/root/k.yaml", ROOT_INIT),
                           "--certificate-key", "00" * 32, "--control-plane-endpoint", "x:6443")
        # A bare error from flag validation: exit 1 (kubeadm's exit-code switch sees a plain error).
        self.assertFails(res, "can not mix '--config' with arguments [certificate-key control-plane-endpoint]", 1)

    def test_join_control_plane_flag_cannot_be_mixed_with_config(self):
        node = self.n()
        res = node.kubeadm("join", "--config", node.write("/root/j.yaml", "x: 1\n"), "--control-plane")
        self.assertFails(res, "can not mix '--config' with arguments [control-plane]")

    def test_allow_listed_flags_may_accompany_config(self):
        node = self.n()
        bad = ROOT_INIT.replace("127.0.0.2", "not-an-ip") + "---\n" + CLUSTER % "v1.31.2"
        res = node.kubeadm("init", "--config", node.write("/root/k.yaml", bad), "--skip-phases=addon/coredns",
                           "--ignore-preflight-errors=Port-6443", "--node-name=cp1", "--upload-certs",
                           "--v=5", "--rootfs=/", "--skip-token-print")
        self.assertNotIn("can not mix", res.stderr)
        self.assertIn("localAPIEndpoint.advertiseAddress", res.stderr)


class Documents(CliCase):
    def test_missing_kind_is_an_error(self):
        res = self.init_with(self.n(), "apiVersion: kubeadm.k8s.io/v1beta4\nlocalAPIEndpoint: {}\n")
        self.assertFails(res, "invalid configuration for GroupVersionKind kubeadm.k8s.io/v1beta4, Kind=: kind and "
                              "apiVersion is mandatory information that must be specified")

    def test_missing_api_version_is_an_error(self):
        res = self.init_with(self.n(), "kind: InitConfiguration\n")
        self.assertFails(res, "kind and apiVersion is mandatory information")

    def test_a_kind_twice_is_a_validation_error(self):
        res = self.init_with(self.n(), ROOT_INIT + "---\n" + ROOT_INIT)
        self.assertFails(res, 'invalid configuration: kind "InitConfiguration" is specified twice in YAML file', 3)

    def test_v1beta4_is_the_api_of_1_31(self):
        res = self.validate(self.n(), ROOT_INIT + "---\n" + CLUSTER % "v1.31.2")
        self.assertOk(res)
        self.assertEqual(res.stdout.strip(), "ok")

    def test_v1beta3_is_deprecated_with_a_warning_up_to_1_36(self):
        node = self.n("v1.36.1")
        res = self.validate(node, (ROOT_INIT + "---\n" + CLUSTER % "v1.36.1").replace("v1beta4", "v1beta3"))
        self.assertOk(res)
        self.assertIn('your configuration file uses a deprecated API spec: "kubeadm.k8s.io/v1beta3" (kind: '
                      '"InitConfiguration")', res.stderr)

    def test_v1beta3_is_an_old_api_spec_from_1_37(self):
        res = self.validate(self.n("v1.37.0"), (ROOT_INIT + "---\n" + CLUSTER % "v1.37.0").replace("v1beta4", "v1beta3"))
        self.assertFails(res, 'your configuration file uses an old API spec: "kubeadm.k8s.io/v1beta3" (kind: '
                              '"InitConfiguration"). Please use kubeadm v1.36 instead')

    def test_v1beta3_is_current_and_v1beta4_unknown_in_1_30(self):
        node = self.n("v1.30.5")
        res = self.validate(node, (ROOT_INIT + "---\n" + CLUSTER % "v1.30.5").replace("v1beta4", "v1beta3"))
        self.assertOk(res)
        self.assertNotIn("deprecated", res.stderr)
        res = self.validate(node, ROOT_INIT + "---\n" + CLUSTER % "v1.30.5")
        self.assertFails(res, 'no kind "InitConfiguration" is registered for version "kubeadm.k8s.io/v1beta4"')

    def test_v1beta2_is_an_old_api_spec(self):
        res = self.validate(self.n(), ROOT_INIT.replace("v1beta4", "v1beta2"))
        self.assertFails(res, 'your configuration file uses an old API spec: "kubeadm.k8s.io/v1beta2" (kind: '
                              '"InitConfiguration"). Please use kubeadm v1.22 instead')

    def test_v1_is_an_experimental_api_spec(self):
        res = self.validate(self.n("v1.37.0"), ROOT_INIT.replace("v1beta4", "v1"))
        self.assertFails(res, 'experimental API spec: "kubeadm.k8s.io/v1" (kind: "InitConfiguration") is not allowed')

    def test_documents_of_unknown_groups_are_ignored_with_a_warning(self):
        node = self.n()
        res = self.init_with(node, ROOT_INIT + "---\napiVersion: example.com/v1\nkind: Thing\n---\n"
                             + CLUSTER % "v1.31.2" + "networking:\n  dnsDomain: Not_Valid\n")
        self.assertIn("[config] WARNING: Ignored configuration document with GroupVersionKind example.com/v1, "
                      "Kind=Thing", res.stderr)
        self.assertFails(res, "networking.dnsDomain", 3)


class UnknownFields(CliCase):
    DOC = ROOT_INIT + "bogus: 1\n---\n" + CLUSTER % "v1.31.2" + "apiServer:\n  timeoutForControlPlane: 4m0s\n"

    def test_init_only_warns_about_unknown_fields(self):
        res = self.init_with(self.n(), self.DOC)
        self.assertIn('error unmarshaling configuration schema.GroupVersionKind{Group:"kubeadm.k8s.io", '
                      'Version:"v1beta4", Kind:"ClusterConfiguration"}: strict decoding error: unknown field '
                      '"apiServer.timeoutForControlPlane"', res.stderr)
        self.assertIn('unknown field "bogus"', res.stderr)
        # It carried on: the next thing kubeadm does is preflight.
        self.assertIn("[preflight] Running pre-flight checks", res.stdout)

    def test_config_validate_refuses_unknown_fields(self):
        res = self.validate(self.n(), self.DOC)
        self.assertFails(res, "strict decoding error: unknown field")
        self.assertNotIn("ok", res.stdout)

    def test_join_only_warns_about_unknown_fields(self):
        node = self.n()
        text = H.join_config(node, "127.0.0.2:6443", "sha256:" + "0" * 64, control_plane=False) + "surprise: true\n"
        res = node.kubeadm("join", "--config", node.write("/root/j.yaml", text))
        self.assertIn('unknown field "surprise"', res.stderr)
        self.assertIn("[preflight] Running pre-flight checks", res.stdout)

    def test_unknown_fields_of_the_kubelet_configuration_count_too(self):
        res = self.validate(self.n(), ROOT_INIT + "---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: "
                            "KubeletConfiguration\ncgroupDriver: systemd\ncgroupDrivr: systemd\n")
        self.assertFails(res, 'Kind:"KubeletConfiguration"}: strict decoding error: unknown field "cgroupDrivr"')

    def test_a_map_of_extra_args_under_v1beta4_is_a_type_error(self):
        text = ROOT_INIT + "---\n" + CLUSTER % "v1.31.2" + "apiServer:\n  extraArgs:\n    audit-log-path: /x\n"
        for res in (self.init_with(self.n(), text), self.validate(self.n(), text)):
            self.assertFails(res, "json: cannot unmarshal object into Go struct field APIServer.apiServer.extraArgs "
                                  "of type []v1beta4.Arg")
            self.assertNotIn("[preflight]", res.stdout)

    def test_a_number_where_a_string_belongs_is_a_type_error(self):
        text = ROOT_INIT + "---\n" + CLUSTER % "v1.31.2" + "apiServer:\n  extraArgs:\n  - name: v\n    value: 4\n"
        self.assertFails(self.validate(self.n(), text), "cannot unmarshal number into Go struct field "
                                                        "Arg.apiServer.extraArgs.value of type string")


class FieldValidation(CliCase):
    """Each rule of section 7 item 5; exit 3 before 1.34, 1 with an 'error: ' prefix after."""

    def check(self, init_extra="", cluster_extra="", text=None, expect="", version="v1.31.2"):
        node = self.n(version)
        text = text or (ROOT_INIT + init_extra + "---\n" + CLUSTER % version + cluster_extra)
        res = self.validate(node, text)
        self.assertFails(res, expect, 3 if int(version.split(".")[1]) < 34 else 1)
        return res

    def test_control_plane_endpoint_is_host_and_optional_port(self):
        for bad in ("https://10.0.0.1:6443", "10.0.0.1:99999", "bad_host:6443", "[::1]"):
            self.check(text=ROOT_INIT + "---\n" + (CLUSTER % "v1.31.2").replace("127.0.0.2:6443", '"%s"' % bad),
                       expect='controlPlaneEndpoint: Invalid value: "%s": endpoint is not valid' % bad)

    def test_advertise_address_must_be_an_ip(self):
        self.check(text=ROOT_INIT.replace("127.0.0.2", "cp1.example"),
                   expect='localAPIEndpoint.advertiseAddress: Invalid value: "cp1.example": ip address is not valid')

    def test_bind_port_range(self):
        self.check(init_extra="", text=ROOT_INIT.replace("advertiseAddress: 127.0.0.2",
                                                         "advertiseAddress: 127.0.0.2\n  bindPort: 70000"),
                   expect="localAPIEndpoint.bindPort: Invalid value: 70000: port number is not valid")

    def test_node_name_is_a_dns_subdomain(self):
        self.check(text=ROOT_INIT.replace("name: cp1", "name: CP_1"),
                   expect='nodeRegistration.name: Invalid value: "CP_1": a lowercase RFC 1123 subdomain')

    def test_certificate_key_is_32_bytes_of_hex(self):
        self.check(init_extra="certificateKey: abcd\n",
                   expect='certificateKey: Invalid value: "abcd": invalid certificate key size 2, the key must be '
                          'an AES key of size 32')

    def test_bootstrap_token_format(self):
        # In InitConfiguration the token is a BootstrapTokenString: a bad one fails the decode
        # (a plain error, exit 1), before validation.
        res = self.validate(self.n(), ROOT_INIT + "bootstrapTokens:\n- token: ABCDEF.0123456789abcdef\n")
        self.assertFails(res, 'Kind:"InitConfiguration"}: the bootstrap token "ABCDEF.0123456789abcdef" was not of '
                              'the form "\\\\A([a-z0-9]{6})\\\\.([a-z0-9]{16})\\\\z"', 1)
        # In JoinConfiguration it is a string checked by validation (exit 3).
        node = self.n()
        text = H.join_config(node, "127.0.0.2:6443", "sha256:" + "a" * 64, token="short.token", control_plane=False)
        self.assertFails(self.validate(node, text), 'discovery.bootstrapToken.token: Invalid value: "short.token": '
                                                    "the bootstrap token is invalid", 3)

    def test_ttl_and_expires_are_exclusive(self):
        self.check(init_extra="bootstrapTokens:\n- token: abcdef.0123456789abcdef\n  ttl: 1h\n"
                              "  expires: \"2030-01-01T00:00:00Z\"\n",
                   expect="bootstrapTokens[0]: Invalid value: \"\": the BootstrapToken .TTL and .Expires fields "
                          "are mutually exclusive")

    def test_etcd_local_and_external_are_exclusive(self):
        self.check(cluster_extra="etcd:\n  local:\n    dataDir: /var/lib/etcd\n  external:\n    endpoints: [https://a:2379]\n",
                   expect="etcd: Invalid value: \"\": .Etcd.Local and .Etcd.External are mutually exclusive")

    def test_only_known_feature_gates(self):
        self.check(cluster_extra="featureGates:\n  MadeUpGate: true\n",
                   expect='featureGates: Invalid value: map[string]bool{"MadeUpGate":true}: MadeUpGate is not a '
                          'valid feature name.')

    def test_every_extra_arg_has_a_name(self):
        self.check(cluster_extra="controllerManager:\n  extraArgs:\n  - value: x\n",
                   expect='controllerManager.extraArgs: Invalid value: "index 0": argument has no name')

    def test_cri_socket_must_be_a_unix_url(self):
        self.check(text=ROOT_INIT + "  criSocket: tcp://127.0.0.1:1234\n---\n" + CLUSTER % "v1.31.2",
                   expect='nodeRegistration.criSocket: Invalid value: "tcp://127.0.0.1:1234": only URL scheme '
                          '"unix" is supported, got "tcp"')

    def test_several_errors_are_one_aggregate(self):
        res = self.check(text=ROOT_INIT.replace("name: cp1", "name: A").replace("127.0.0.2", "x") +
                         "---\n" + CLUSTER % "v1.31.2", expect="[")
        self.assertIn('nodeRegistration.name: Invalid value: "A"', res.stderr)
        self.assertIn('localAPIEndpoint.advertiseAddress: Invalid value: "x"', res.stderr)

    def test_from_1_34_errors_are_prefixed_and_exit_1(self):
        res = self.check(text=ROOT_INIT.replace("name: cp1", "name: A") + "---\n" + CLUSTER % "v1.34.0",
                         expect="error: nodeRegistration.name", version="v1.34.0")
        self.assertTrue(res.stderr.splitlines()[1].startswith("error: "))

    def test_join_discovery_needs_a_ca_hash_or_the_unsafe_flag(self):
        node = self.n()
        text = H.join_config(node, "127.0.0.2:6443", "x", control_plane=False).replace("    caCertHashes:\n    - x\n", "")
        self.assertFails(self.validate(node, text), "discovery.bootstrapToken.caCertHashes: Invalid value: \"\": "
                                                    "using token-based discovery without caCertHashes can be unsafe", 3)

    def test_join_endpoint_needs_a_port(self):
        node = self.n()
        text = H.join_config(node, "127.0.0.2", "sha256:" + "a" * 64, control_plane=False)
        self.assertFails(self.validate(node, text), 'discovery.bootstrapToken.apiServerEndpoint: Invalid value: '
                                                    '"127.0.0.2": address 127.0.0.2: missing port in address', 3)

    def test_ignore_preflight_errors_all_cannot_be_combined(self):
        node = self.n()
        res = self.init_with(node, ROOT_INIT + "---\n" + CLUSTER % "v1.31.2", "--ignore-preflight-errors=all,Port-6443")
        self.assertFails(res, "ignore-preflight-errors: Invalid value: \"all,port-6443\": don't specify individual "
                              "checks if 'all' is used", 3)


KHACTL_LIKE = {
    # What khactl renders per version (issue 9): v1beta3 for 1.30, v1beta4 from 1.31.
    "v1beta4": """apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
  ttl: 1h0m0s
  usages: [signing, authentication]
  groups: [system:bootstrappers:kubeadm:default-node-token]
localAPIEndpoint:
  advertiseAddress: 10.200.1.11
  bindPort: 6443
nodeRegistration:
  name: cp1
  criSocket: unix:///run/containerd/containerd.sock
  taints:
  - key: node-role.kubernetes.io/control-plane
    effect: NoSchedule
  kubeletExtraArgs:
  - name: node-labels
    value: tier=front
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: %(v)s
clusterName: lab
controlPlaneEndpoint: 10.200.1.100:8443
imageRepository: registry.k8s.io
apiServer:
  certSANs: [10.200.1.100, api.lab.example]
  extraArgs:
  - name: audit-log-maxage
    value: "7"
etcd:
  local:
    dataDir: /var/lib/etcd
    serverCertSANs: [cp1, 10.200.1.11]
    peerCertSANs: [cp1, 10.200.1.11]
networking:
  serviceSubnet: 10.96.0.0/12
  podSubnet: 10.244.0.0/16
  dnsDomain: cluster.local
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
""",
}
KHACTL_LIKE["v1beta3"] = (KHACTL_LIKE["v1beta4"].replace("v1beta4", "v1beta3")
                          .replace("  kubeletExtraArgs:\n  - name: node-labels\n    value: tier=front",
                                   "  kubeletExtraArgs:\n    node-labels: tier=front")
                          .replace("  extraArgs:\n  - name: audit-log-maxage\n    value: \"7\"",
                                   "  extraArgs:\n    audit-log-maxage: \"7\""))
KHACTL_JOIN = """apiVersion: kubeadm.k8s.io/%(api)s
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: 10.200.1.100:8443
    token: abcdef.0123456789abcdef
    caCertHashes: [sha256:%(h)s]
nodeRegistration:
  name: cp2
  criSocket: unix:///run/containerd/containerd.sock
controlPlane:
  localAPIEndpoint:
    advertiseAddress: 10.200.1.12
    bindPort: 6443
"""


class KhactlDocuments(CliCase):
    def test_strict_validate_accepts_documents_of_the_kind_khactl_renders(self):
        for version, api in (("v1.30.5", "v1beta3"), ("v1.31.2", "v1beta4"), ("v1.37.0", "v1beta4")):
            with self.subTest(version=version):
                node = self.n(version)
                self.assertOk(self.validate(node, KHACTL_LIKE[api] % {"v": version}))
                self.assertOk(self.validate(node, KHACTL_JOIN % {"api": api, "h": "ab" * 32}))


if __name__ == "__main__":
    unittest.main()
