"""Contract section 7 items 8-12: the existing-PKI rules, sa keys and external CA mode,
generation of what is missing, kubeconfigs, static pod manifests. kubeadm init runs only its
file phases here (certs, kubeconfig, etcd, control-plane)."""

import datetime
import os
import subprocess
import tempfile
import unittest

import harness as H
from khalab_standin import kubeconfig, x509util, yamlio

ONLY_FILES = ("preflight,kubelet-start,wait-control-plane,upload-config,upload-certs,mark-control-plane,"
              "bootstrap-token,kubelet-finalize,addon,show-join-command")
ONLY_CERTS = ONLY_FILES + ",etcd,control-plane"


class FilePhases(H.NodeTestCase):
    version = "v1.31.2"
    minor = 31

    def setUp(self):
        super().setUp()
        self.n = self.node(version=self.version, install=False, services=False)
        self.pki = H.PKI(version_minor=self.minor)
        self.cpe = "vip.lab.example:8443"

    def place(self, **overrides):
        files = self.pki.node_certs("cp1", self.n.ip, "vip.lab.example")
        files.update(overrides)
        self.pki.place(self.n.root, files)

    def init(self, skip=ONLY_CERTS, *extra, cpe=None, version=None, init_extra="", cluster_extra=""):
        text = H.init_config(self.n, cpe=cpe or self.cpe, version=version or self.version,
                             extra_init=init_extra, extra_cluster=cluster_extra)
        return self.n.kubeadm("init", "--config", self.n.write("/root/k.yaml", text), "--skip-phases=" + skip, *extra)

    def raw(self, node_path):
        with open(self.n.path(node_path), "rb") as f:
            return f.read()

    def cert(self, base):
        return x509util.load_cert(self.n.path("/etc/kubernetes/pki/%s.crt" % base))


class ExistingPKI(FilePhases):
    def test_existing_cas_and_leaves_are_reused_byte_for_byte(self):
        self.place()
        before = {f: self.raw("/etc/kubernetes/pki/" + f)
                  for f in ("ca.crt", "ca.key", "apiserver.crt", "etcd/peer.key", "sa.key")}
        res = self.init()
        self.assertOk(res)
        for line in ("[certs] Using existing ca certificate authority",
                     '[certs] Using the existing "apiserver" certificate and key',
                     '[certs] Using the existing "etcd/server" certificate and key',
                     '[certs] Using the existing "sa" key'):
            self.assertIn(line, res.stdout)
        for f, data in before.items():
            self.assertEqual(self.raw("/etc/kubernetes/pki/" + f), data, f)

    def test_a_ca_must_be_a_ca(self):
        self.place()
        cert, key = self.pki.leaf("ca", "kubernetes")
        x509util.write_atomic(self.n.path("/etc/kubernetes/pki/ca.crt"), x509util.cert_pem(cert))
        x509util.write_atomic(self.n.path("/etc/kubernetes/pki/ca.key"), x509util.key_pem(key))
        self.assertFails(self.init(), "error execution phase certs/ca: certificate ca is not a CA")

    def test_a_leaf_must_chain_to_its_ca(self):
        other = H.PKI()
        self.place(apiserver=other.node_certs("cp1", self.n.ip, "vip.lab.example")["apiserver"])
        self.assertFails(self.init(), "error execution phase certs/apiserver: certificate apiserver is not signed "
                                      "by corresponding CA")

    def test_the_apiserver_must_name_the_control_plane_endpoint(self):
        self.place(apiserver=self.pki.node_certs("cp1", self.n.ip, "other.example")["apiserver"])
        res = self.init()
        self.assertFails(res, "error execution phase certs/apiserver: certificate apiserver is invalid: x509: "
                              "certificate is valid for cp1, kubernetes, kubernetes.default, kubernetes.default.svc, "
                              "kubernetes.default.svc.cluster.local, other.example, not vip.lab.example")

    def test_the_apiserver_must_name_the_advertise_address(self):
        files = self.pki.node_certs("cp1", "127.0.0.99", "vip.lab.example")
        self.place(apiserver=files["apiserver"])
        self.assertFails(self.init(), "certificate apiserver is invalid: x509: certificate is valid for 10.96.0.1, "
                                      "127.0.0.99, not 127.0.0.2")

    def test_etcd_serving_certs_need_localhost_and_loopback(self):
        self.place(**{"etcd/server": self.pki.leaf("etcd/ca", "cp1", dns=["cp1"], ips=[self.n.ip], server=True,
                                                  client=True)})
        self.assertFails(self.init(), "error execution phase certs/etcd-server: certificate etcd/server is invalid: "
                                      "x509: certificate is valid for cp1, not localhost")

    def test_an_expired_leaf_is_reported_then_fails_the_chain_check(self):
        now = datetime.datetime.utcnow()
        self.place(**{"apiserver-kubelet-client": self.pki.leaf(
            "ca", "kube-apiserver-kubelet-client", ["kubeadm:cluster-admins"], client=True,
            not_before=now - datetime.timedelta(days=3), not_after=now - datetime.timedelta(days=1))})
        res = self.init()
        self.assertIn("WARNING: could not validate bounds for certificate apiserver-kubelet-client: the certificate "
                      "has expired", res.stderr)
        # kubeadm's VerifyCertChain is x509 Verify at the current time (pkiutil.VerifyCertChain).
        self.assertFails(res, "certificate apiserver-kubelet-client is not signed by corresponding CA")

    def test_cn_and_o_are_not_checked_unless_the_lint_is_on(self):
        wrong = self.pki.leaf("ca", "kube-apiserver-kubelet-client", ["system:masters"], client=True)
        self.place(**{"apiserver-kubelet-client": wrong})
        self.assertOk(self.init())
        res = self.n.kubeadm("init", "--config", "/root/k.yaml", "--skip-phases=" + ONLY_CERTS,
                             env={"KHALAB_STANDIN_LINT_SUBJECTS": "warn"})
        self.assertOk(res)
        self.assertIn("[khalab-lint] certificate apiserver-kubelet-client: O is ['system:masters'], kubeadm v1.31.2 "
                      "uses ['kubeadm:cluster-admins']", res.stderr)
        self.n.write("/etc/khalab-standin/lint-subjects", "error\n")
        res = self.n.kubeadm("init", "--config", "/root/k.yaml", "--skip-phases=" + ONLY_CERTS)
        self.assertFails(res, "error execution phase certs/apiserver-kubelet-client: [khalab-lint]")


class SaAndExternalCA(FilePhases):
    def test_sa_key_must_parse_and_sa_pub_is_not_looked_at(self):
        self.place()
        self.n.write("/etc/kubernetes/pki/sa.pub", "not a key")
        self.assertOk(self.init())
        self.n.write("/etc/kubernetes/pki/sa.key", "not a key")
        self.assertFails(self.init(), "error execution phase certs/sa: file sa.key existed but it could not be "
                                      "loaded properly")

    def test_ca_crt_without_ca_key_is_external_ca_mode(self):
        self.place()
        self.assertOk(self.init(ONLY_FILES.replace(",upload-certs", "")))
        os.unlink(self.n.path("/etc/kubernetes/pki/ca.key"))
        res = self.init(ONLY_FILES, "--upload-certs")
        self.assertFails(res, "can't use upload-certs with an external CA or an external front-proxy CA")
        res = self.init(ONLY_FILES)
        self.assertOk(res)
        self.assertIn("[certs] Using existing ca keyless certificate authority", res.stdout)
        kcm = yamlio.load_plain(self.n.read("/etc/kubernetes/manifests/kube-controller-manager.yaml"))
        self.assertIn("--cluster-signing-key-file=", kcm["spec"]["containers"][0]["command"])

    def test_external_ca_requires_the_apiserver_certs_and_the_kubeconfigs(self):
        self.place()
        os.unlink(self.n.path("/etc/kubernetes/pki/ca.key"))
        os.unlink(self.n.path("/etc/kubernetes/pki/apiserver.crt"))
        self.assertFails(self.init(), "invalid or incomplete external CA: failure loading certificate for API server")


class Generation(FilePhases):
    def test_missing_files_are_generated_with_kubeadms_subjects_sans_and_validity(self):
        res = self.init()
        self.assertOk(res)
        self.assertIn('[certs] Generating "ca" certificate and key', res.stdout)
        self.assertIn("[certs] apiserver serving cert is signed for DNS names [cp1 kubernetes kubernetes.default "
                      "kubernetes.default.svc kubernetes.default.svc.cluster.local vip.lab.example] and IPs "
                      "[10.96.0.1 127.0.0.2]", res.stdout)
        self.assertIn('[certs] Generating "sa" key and public key', res.stdout)
        ca, api = self.cert("ca"), self.cert("apiserver")
        self.assertTrue(x509util.is_ca(ca))
        self.assertEqual(x509util.subject_cn(ca), "kubernetes")
        self.assertAlmostEqual((ca.not_valid_after - ca.not_valid_before).days, 3650, delta=1)
        self.assertAlmostEqual((api.not_valid_after - datetime.datetime.utcnow()).days, 365, delta=1)
        self.assertEqual(api.not_valid_before, ca.not_valid_before)
        self.assertIsNone(x509util.check_signature_from(api, ca))
        kc = self.cert("apiserver-kubelet-client")
        self.assertEqual(x509util.subject_orgs(kc), ["kubeadm:cluster-admins"])
        self.assertEqual(x509util.subject_cn(self.cert("etcd/peer")), "cp1")
        self.assertEqual(sorted(x509util.san_ips(self.cert("etcd/server"))), ["127.0.0.1", "127.0.0.2", "::1"])

    def test_subjects_follow_the_emulated_version(self):
        self.n = self.node(name="cp9", version="v1.37.0", install=False, services=False)
        text = H.init_config(self.n, version="v1.37.0").replace("name: cp9", "name: cp1")
        res = self.n.kubeadm("init", "--config", self.n.write("/root/k.yaml", text), "--skip-phases=" + ONLY_CERTS)
        self.assertOk(res)
        self.assertEqual(x509util.subject_orgs(self.cert("apiserver-kubelet-client")), ["system:kubelet-api-admin"])

    def test_the_discovery_hash_is_the_spki_sha256(self):
        self.place()
        out = subprocess.run("openssl x509 -pubkey -noout -in %s | openssl pkey -pubin -outform der | sha256sum"
                             % self.n.path("/etc/kubernetes/pki/ca.crt"), shell=True, capture_output=True,
                             text=True, check=True).stdout.split()[0]
        self.assertEqual(self.pki.ca_hash(), "sha256:" + out)


class Kubeconfigs(FilePhases):
    def kc(self, name):
        return kubeconfig.parse(self.n.read("/etc/kubernetes/" + name))

    def test_server_urls_and_super_admin_on_init(self):
        self.place()
        res = self.init()
        self.assertOk(res)
        local = "https://127.0.0.2:%d" % self.n.api_port
        self.assertEqual(self.kc("admin.conf").server, "https://vip.lab.example:8443")
        self.assertEqual(self.kc("super-admin.conf").server, "https://vip.lab.example:8443")
        self.assertEqual(self.kc("controller-manager.conf").server, local)
        self.assertEqual(self.kc("scheduler.conf").server, local)
        # Before 1.33 the kubelet talks to the control plane endpoint.
        self.assertEqual(self.kc("kubelet.conf").server, "https://vip.lab.example:8443")
        admin = x509util.certs_from_pem(self.kc("admin.conf").client_cert_pem())[0]
        self.assertEqual((x509util.subject_cn(admin), x509util.subject_orgs(admin)),
                         ("kubernetes-admin", ["kubeadm:cluster-admins"]))
        sup = x509util.certs_from_pem(self.kc("super-admin.conf").client_cert_pem())[0]
        self.assertEqual(x509util.subject_orgs(sup), ["system:masters"])

    def test_an_existing_kubeconfig_with_another_ca_is_an_error(self):
        self.place()
        other = H.PKI()
        kc = kubeconfig.build("kubernetes", "https://vip.lab.example:8443", other.ca_pem(), "kubernetes-admin")
        self.n.write("/etc/kubernetes/admin.conf", kubeconfig.dump(kc))
        self.assertFails(self.init(), 'error execution phase kubeconfig/admin: a kubeconfig file '
                                      '"/etc/kubernetes/admin.conf" exists already but has got the wrong CA cert')

    def test_an_existing_kubeconfig_with_another_server_is_only_a_warning(self):
        self.place()
        kc = kubeconfig.build("kubernetes", "https://10.9.9.9:6443", self.pki.ca_pem(), "kubernetes-admin",
                              cert_pem=b"x", key_pem=b"y")
        self.n.write("/etc/kubernetes/admin.conf", kubeconfig.dump(kc))
        res = self.init()
        self.assertOk(res)
        self.assertIn('a kubeconfig file "/etc/kubernetes/admin.conf" exists already but has an unexpected API Server '
                      'URL: expected: https://vip.lab.example:8443, got: https://10.9.9.9:6443', res.stderr)
        self.assertIn('[kubeconfig] Using existing kubeconfig file: "/etc/kubernetes/admin.conf"', res.stdout)


class Manifests(FilePhases):
    def flags(self, name):
        pod = yamlio.load_plain(self.n.read("/etc/kubernetes/manifests/%s.yaml" % name))
        return {a.split("=", 1)[0]: a.split("=", 1)[1] for a in pod["spec"]["containers"][0]["command"] if "=" in a}

    def test_four_static_pod_manifests_with_a_new_one_member_etcd(self):
        self.place()
        res = self.init(ONLY_FILES)
        self.assertOk(res)
        self.assertIn('[etcd] Creating static Pod manifest for local etcd in "/etc/kubernetes/manifests"', res.stdout)
        self.assertEqual(sorted(os.listdir(self.n.path("/etc/kubernetes/manifests"))),
                         ["etcd.yaml", "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"])
        etcd = self.flags("etcd")
        peer = "https://127.0.0.2:%s" % self.n.ports["2380"]
        self.assertEqual(etcd["--initial-cluster"], "cp1=" + peer)
        self.assertNotIn("--initial-cluster-state", etcd)
        self.assertEqual(etcd["--initial-advertise-peer-urls"], peer)
        self.assertEqual(etcd["--cert-file"], "/etc/kubernetes/pki/etcd/server.crt")
        api = self.flags("kube-apiserver")
        self.assertEqual(api["--advertise-address"], "127.0.0.2")
        self.assertEqual(api["--secure-port"], str(self.n.api_port))
        self.assertEqual(api["--etcd-servers"], "https://127.0.0.1:%s" % self.n.ports["2379"])
        self.assertEqual(api["--tls-cert-file"], "/etc/kubernetes/pki/apiserver.crt")
        kcm = self.flags("kube-controller-manager")
        self.assertEqual(kcm["--cluster-signing-key-file"], "/etc/kubernetes/pki/ca.key")
        self.assertEqual(kcm["--controllers"], "*,bootstrapsigner,tokencleaner")

    def test_extra_args_override_defaults_and_are_sorted(self):
        self.place()
        res = self.init(ONLY_FILES, cluster_extra="apiServer:\n  extraArgs:\n  - name: secure-port\n    value: \"%d\"\n"
                                                  "  - name: audit-log-maxage\n    value: \"7\"\n" % self.n.api_port)
        self.assertOk(res)
        pod = yamlio.load_plain(self.n.read("/etc/kubernetes/manifests/kube-apiserver.yaml"))
        cmd = pod["spec"]["containers"][0]["command"]
        self.assertEqual(cmd[1:], sorted(cmd[1:]))
        self.assertIn("--audit-log-maxage=7", cmd)


if __name__ == "__main__":
    unittest.main()



class SignedByAForeignCA(unittest.TestCase):
    def test_a_leaf_names_its_ca_by_the_cas_own_key_id_as_go_does(self):
        """khactl's CA (rcgen) derives its Subject Key Identifier otherwise than SHA-1 of the
        key; a leaf's Authority Key Identifier must copy it, or OpenSSL cannot build the chain
        (the API server then refuses every kubelet as signed by an unknown CA)."""
        from cryptography import x509
        key = x509util.new_key("ECDSA-P256")
        now = datetime.datetime.utcnow()
        odd_id = bytes(range(20))
        ca = (x509.CertificateBuilder()
              .subject_name(x509util._name("kubernetes")).issuer_name(x509util._name("kubernetes"))
              .public_key(key.public_key()).serial_number(7)
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.SubjectKeyIdentifier(odd_id), critical=False)
              .sign(key, x509util._sign_hash(key)))
        leaf_key = x509util.new_key("ECDSA-P256")
        leaf = x509util.new_signed(ca, key, leaf_key, "system:node:cp1", ["system:nodes"], client=True)
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        self.assertEqual(aki.key_identifier, odd_id)
        with tempfile.TemporaryDirectory() as d:
            ca_path, leaf_path = os.path.join(d, "ca.crt"), os.path.join(d, "leaf.crt")
            with open(ca_path, "wb") as f:
                f.write(x509util.cert_pem(ca))
            with open(leaf_path, "wb") as f:
                f.write(x509util.cert_pem(leaf))
            r = subprocess.run(["openssl", "verify", "-CAfile", ca_path, leaf_path],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
