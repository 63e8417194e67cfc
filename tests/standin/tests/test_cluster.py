"""A real stand-in cluster on loopback: cp1 init, cp2 control-plane join, w1 worker join,
with real etcd. Contract section 7 items 12-14, 17, 20 and the API server, kubelet and
controller rules of issue 9 part 4, checked on the cluster they built."""

import base64
import json
import os
import shutil
import subprocess
import unittest

import harness as H
from clusters import SharedCluster
from khalab_standin import jws, kubeclient, kubeconfig, tokens, x509util, yamlio


def kubectl():
    return os.environ.get("KHALAB_KUBECTL") or shutil.which("kubectl")


class InitAndJoin(SharedCluster):
    def test_init_prints_the_join_command_with_token_and_ca_hash(self):
        out = self.c.init_result.stdout
        self.assertIn("kubeadm join %s --token abcdef.0123456789abcdef \\\n\t--discovery-token-ca-cert-hash %s "
                      % (self.c.cpe, self.c.pki.ca_hash()), out)
        self.assertIn("Your Kubernetes control-plane has initialized successfully!", out)
        self.assertNotIn("--certificate-key", out)

    def test_the_phases_print_their_lines_in_kubeadms_order(self):
        out = self.c.init_result.stdout
        order = ["[preflight] Running pre-flight checks", "[certs] Using certificateDir folder",
                 "[kubeconfig] Using kubeconfig folder", "[etcd] Creating static Pod manifest for local etcd",
                 "[control-plane] Using manifest folder", "[kubelet-start] Starting the kubelet",
                 "[wait-control-plane] Waiting for the kubelet", "[api-check] The API server is healthy",
                 "[upload-config] Storing the configuration", "[upload-certs] Skipping phase",
                 "[mark-control-plane] Marking the node cp1", "[bootstrap-token] Using token: abcdef.0123456789abcdef",
                 "[kubelet-finalize] Updating", "[addons] Applied essential addon: CoreDNS"]
        positions = [out.index(line) for line in order]
        self.assertEqual(positions, sorted(positions))

    def test_kubeadm_config_and_kubelet_config_are_uploaded(self):
        admin = self.c.admin()
        cc = yamlio.load_plain(admin.get("ConfigMap", "kubeadm-config", "kube-system")["data"]["ClusterConfiguration"])
        self.assertEqual((cc["apiVersion"], cc["kind"]), ("kubeadm.k8s.io/v1beta4", "ClusterConfiguration"))
        self.assertEqual(cc["controlPlaneEndpoint"], self.c.cpe)
        kubelet = yamlio.load_plain(admin.get("ConfigMap", "kubelet-config", "kube-system")["data"]["kubelet"])
        self.assertEqual(kubelet["cgroupDriver"], "systemd")

    def test_the_bootstrap_token_is_a_secret_with_an_expiry(self):
        secret = self.c.admin().get("Secret", "bootstrap-token-abcdef", "kube-system")
        info = tokens.from_secret(secret)
        self.assertEqual((info.id, info.secret), ("abcdef", "0123456789abcdef"))
        self.assertEqual(info.usages, {"signing", "authentication"})
        self.assertEqual(info.groups, ["system:bootstrappers:kubeadm:default-node-token"])
        left = (info.expires - H.datetime_now()).total_seconds()
        self.assertTrue(3000 < left <= 3600, left)

    def test_cluster_info_is_signed_for_the_token(self):
        cm = self.c.admin().get("ConfigMap", "cluster-info", "kube-public")
        content = cm["data"]["kubeconfig"]
        self.assertTrue(jws.detached_is_valid(cm["data"]["jws-kubeconfig-abcdef"], content, "abcdef", "0123456789abcdef"))
        kc = yamlio.load_plain(content)
        self.assertEqual(kc["clusters"][0]["cluster"]["server"], "https://" + self.c.cpe)

    def test_etcd_has_two_voting_members_and_the_join_manifest_says_existing(self):
        members = self.c.members()
        self.assertEqual(sorted(m["name"] for m in members), ["cp1", "cp2"])
        self.assertFalse(any(m.get("isLearner") for m in members))
        cp2 = self.c.cps[1]
        pod = yamlio.load_plain(cp2.read("/etc/kubernetes/manifests/etcd.yaml"))
        flags = dict(a.split("=", 1) for a in pod["spec"]["containers"][0]["command"] if "=" in a)
        self.assertEqual(flags["--initial-cluster-state"], "existing")
        self.assertEqual(sorted(flags["--initial-cluster"].split(",")), sorted(
            "%s=%s" % (m["name"], m["peerURLs"][0]) for m in members))
        self.assertIn("[etcd] Announced new etcd member joining to the existing etcd cluster", self.c.joins["cp2"].stdout)

    def test_every_node_is_registered_ready_and_marked(self):
        H.wait_for(lambda: self.c.ready_nodes() == {"cp1": "True", "cp2": "True", "w1": "True"}, 30, "3 Ready nodes")
        nodes = {n["metadata"]["name"]: n for n in self.c.admin().list("Node")}
        for cp in ("cp1", "cp2"):
            self.assertIn("node-role.kubernetes.io/control-plane", nodes[cp]["metadata"]["labels"])
            self.assertEqual(nodes[cp]["spec"]["taints"], [{"key": "node-role.kubernetes.io/control-plane",
                                                            "effect": "NoSchedule"}])
        self.assertNotIn("node-role.kubernetes.io/control-plane", nodes["w1"]["metadata"]["labels"])
        leases = {l["metadata"]["name"] for l in self.c.admin().list("Lease", "kube-node-lease")}
        self.assertEqual(leases, {"cp1", "cp2", "w1"})

    def test_only_one_controller_manager_and_scheduler_are_active(self):
        admin = self.c.admin()
        for name in ("kube-controller-manager", "kube-scheduler"):
            lease = admin.get("Lease", name, "kube-system")
            self.assertTrue(lease["spec"]["holderIdentity"])
            self.assertEqual(lease["spec"]["leaseDurationSeconds"], 15)
        logs = [cp.read("/var/log/khalab-standin/pods/kube-controller-manager.log") for cp in self.c.cps]
        self.assertEqual(sum("successfully acquired lease" in l for l in logs), 1, logs)

    def test_the_worker_got_its_client_certificate_through_a_csr(self):
        w1 = self.c.workers[0]
        kc = kubeconfig.parse(w1.read("/etc/kubernetes/kubelet.conf"))
        self.assertEqual(kc.user["client-certificate"], "/var/lib/kubelet/pki/kubelet-client-current.pem")
        cert = x509util.certs_from_pem(w1.read(kc.user["client-certificate"]).encode())[0]
        self.assertEqual((x509util.subject_cn(cert), x509util.subject_orgs(cert)), ("system:node:w1", ["system:nodes"]))
        self.assertIsNone(x509util.check_signature_from(cert, self.c.pki.cas["ca"][0]))
        self.assertFalse(w1.exists("/etc/kubernetes/bootstrap-kubelet.conf"))
        self.assertEqual(w1.read("/etc/kubernetes/pki/ca.crt").encode(), self.c.pki.ca_pem())
        csrs = self.c.admin().list("CertificateSigningRequest")
        w1_csr = [c for c in csrs if c["spec"]["username"] == "system:bootstrap:abcdef"]
        self.assertTrue(any(c["status"].get("certificate") for c in w1_csr))

    def test_super_admin_conf_exists_on_the_init_node_only(self):
        self.assertTrue(self.c.cp1.exists("/etc/kubernetes/super-admin.conf"))
        self.assertFalse(self.c.cps[1].exists("/etc/kubernetes/super-admin.conf"))

    def test_no_secret_appears_in_any_argv(self):
        for node in self.c.cps + self.c.workers:
            for entry in node.argv_log():
                self.assertNotIn("0123456789abcdef", " ".join(entry["argv"]), entry)
        self.assertTrue(any(e["program"] == "kubeadm" for e in self.c.cp1.argv_log()))
        self.assertTrue(any(e["program"] == "kube-apiserver" for e in self.c.cp1.argv_log()))


class APIServer(SharedCluster):
    cps, workers = 1, 0

    def url(self):
        return "https://%s" % self.c.cpe

    def anonymous(self):
        ctx = kubeconfig.client_ssl_context(self.c.pki.ca_pem())
        return kubeclient.Client(self.url(), ctx)

    def test_anonymous_may_read_health_version_and_cluster_info_only(self):
        anon = self.anonymous()
        self.assertEqual(anon.request("GET", "/version")["gitVersion"], "v1.31.2")
        self.assertIn("kubeconfig", anon.get("ConfigMap", "cluster-info", "kube-public")["data"])
        with self.assertRaises(kubeclient.ApiError) as e:
            anon.list("Node")
        self.assertEqual(e.exception.status, 403)
        self.assertIn('nodes is forbidden: User "system:anonymous" cannot list resource "nodes" in API group "" at '
                      "the cluster scope", e.exception.message)
        with self.assertRaises(kubeclient.ApiError):
            anon.get("ConfigMap", "kubeadm-config", "kube-system")

    def test_client_certificates_must_come_from_the_ca(self):
        other = H.PKI()
        cert, key = other.leaf("ca", "kubernetes-admin", ["system:masters"], client=True)
        ctx = kubeconfig.client_ssl_context(self.c.pki.ca_pem(), x509util.cert_pem(cert), x509util.key_pem(key))
        with self.assertRaises(kubeclient.ApiError):
            kubeclient.Client(self.url(), ctx).list("Node")

    def test_a_valid_client_certificate_names_the_user_and_groups(self):
        cert, key = self.c.pki.leaf("ca", "someone", ["nobody-group"], client=True)
        ctx = kubeconfig.client_ssl_context(self.c.pki.ca_pem(), x509util.cert_pem(cert), x509util.key_pem(key))
        with self.assertRaises(kubeclient.ApiError) as e:
            kubeclient.Client(self.url(), ctx).list("Secret", "kube-system")
        self.assertIn('User "someone" cannot list resource "secrets"', e.exception.message)
        cert, key = self.c.pki.leaf("ca", "root", ["system:masters"], client=True)
        ctx = kubeconfig.client_ssl_context(self.c.pki.ca_pem(), x509util.cert_pem(cert), x509util.key_pem(key))
        self.assertTrue(kubeclient.Client(self.url(), ctx).list("Secret", "kube-system"))

    def test_bootstrap_tokens_authenticate_as_bootstrappers(self):
        ctx = kubeconfig.client_ssl_context(self.c.pki.ca_pem())
        boot = kubeclient.Client(self.url(), ctx, token="abcdef.0123456789abcdef")
        self.assertEqual(boot.get("Node", "cp1")["metadata"]["name"], "cp1")
        with self.assertRaises(kubeclient.ApiError) as e:
            boot.list("Secret", "kube-system")
        self.assertIn('User "system:bootstrap:abcdef"', e.exception.message)
        with self.assertRaises(kubeclient.ApiError) as e:
            kubeclient.Client(self.url(), ctx, token="abcdef.wrongwrongwrong0").get("Node", "cp1")
        self.assertEqual(e.exception.status, 401)

    def test_readyz_follows_etcd(self):
        cp1 = self.c.cp1
        anon = self.anonymous()
        self.assertEqual(_status(anon, "/readyz"), 200)
        pid = int(cp1.read("/run/khalab-standin/pods/etcd.pid").split()[0])
        os.kill(pid, 19)  # SIGSTOP: etcd stops answering, the kubelet sees it still running
        try:
            H.wait_for(lambda: _status(anon, "/readyz") == 500, 20, "/readyz to fail")
            self.assertEqual(_status(anon, "/livez"), 200)
        finally:
            os.kill(pid, 18)  # SIGCONT
        H.wait_for(lambda: _status(anon, "/readyz") == 200, 20, "/readyz to recover")

    def test_objects_are_stored_in_etcd(self):
        kv = self.c.cp1.etcd().get("/registry/configmaps/kube-system/kubeadm-config")
        obj = json.loads(base64.b64decode(kv["value"]))
        self.assertEqual(obj["metadata"]["name"], "kubeadm-config")

    def test_debians_kubectl_works_with_admin_conf(self):
        exe = kubectl()
        if not exe:
            self.skipTest("no kubectl (Debian's kubernetes-client) installed")
        conf = self.c.cp1.path("/etc/kubernetes/admin.conf")
        run = lambda *a: subprocess.run([exe, "--kubeconfig", conf] + list(a), capture_output=True, text=True,
                                        timeout=60)
        r = run("get", "--raw", "/readyz")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "ok"), r.stderr)
        r = run("get", "--raw", "/api/v1/nodes")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([n["metadata"]["name"] for n in json.loads(r.stdout)["items"]], ["cp1"])
        r = run("get", "nodes")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"cp1\s+Ready\s+control-plane\s+\S+\s+v1\.31\.2")

    def test_token_create_prints_a_one_line_join_command(self):
        res = self.c.cp1.kubeadm("token", "create", "--print-join-command", "--ttl", "10m")
        self.assertEqual(res.returncode, 0, res.stderr)
        line = res.stdout.strip()
        self.assertRegex(line, r"^kubeadm join %s --token [a-z0-9]{6}\.[a-z0-9]{16} --discovery-token-ca-cert-hash %s$"
                         % (self.c.cpe.replace(".", r"\."), self.c.pki.ca_hash()))
        token = line.split("--token ")[1].split()[0]
        info = tokens.from_secret(self.c.admin().get("Secret", "bootstrap-token-" + token.split(".")[0], "kube-system"))
        self.assertEqual(info.secret, token.split(".")[1])
        self.assertTrue(540 < (info.expires - H.datetime_now()).total_seconds() <= 600)

    def test_token_create_with_config_creates_exactly_the_configured_token(self):
        # kubeadm's `token create --config`: the InitConfiguration's bootstrapTokens are created
        # and the first one printed; flags of the token do not mix with --config.
        path = self.c.cp1.write("/run/token-init.yaml",
                                H.init_config(self.c.cp1, cpe=self.c.cpe, token="zyxwvu.0123456789zyxwvu"))
        res = self.c.cp1.kubeadm("token", "create", "--config", path)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout.strip(), "zyxwvu.0123456789zyxwvu")
        info = tokens.from_secret(self.c.admin().get("Secret", "bootstrap-token-zyxwvu", "kube-system"))
        self.assertEqual(info.secret, "0123456789zyxwvu")
        res = self.c.cp1.kubeadm("token", "create", "--config", path, "--ttl", "1h")
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("can not mix '--config' with arguments", res.stderr)

    def test_a_delete_with_options_and_a_get_share_one_kept_alive_connection(self):
        # kubectl delete sends DeleteOptions in the body, then polls on the same connection:
        # the body must not be read as the next request.
        import http.client
        c = self.c.admin()
        c.create({"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "keepalive-probe", "namespace": "default"}})
        conn = http.client.HTTPSConnection(c.host, c.port, context=c.ctx, timeout=10)
        try:
            body = json.dumps({"kind": "DeleteOptions", "apiVersion": "v1",
                               "propagationPolicy": "Background"})
            path = "/api/v1/namespaces/default/configmaps/keepalive-probe"
            conn.request("DELETE", path, body=body, headers={"Content-Type": "application/json"})
            first = conn.getresponse()
            first.read()
            self.assertEqual(first.status, 200)
            conn.request("GET", path)
            second = conn.getresponse()
            self.assertEqual((second.version, second.status), (11, 404), second.read())
        finally:
            conn.close()

    def test_certs_check_expiration_lists_certificates_and_authorities(self):
        res = self.c.cp1.kubeadm("certs", "check-expiration")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertRegex(res.stdout, r"CERTIFICATE\s+EXPIRES\s+RESIDUAL TIME\s+CERTIFICATE AUTHORITY\s+EXTERNALLY MANAGED")
        self.assertRegex(res.stdout, r"\napiserver\s+\w{3} \d\d, \d{4} \d\d:\d\d UTC\s+36\dd\s+ca\s+no")
        self.assertRegex(res.stdout, r"\netcd-ca\s+\w{3} \d\d, \d{4} \d\d:\d\d UTC\s+9y\s+no")
        info = yamlio.load_plain(self.c.cp1.kubeadm("certs", "check-expiration", "-o", "yaml").stdout)
        self.assertEqual(info["apiVersion"], "output.kubeadm.k8s.io/v1alpha3")
        self.assertIn("admin.conf", [c["name"] for c in info["certificates"]])


def _status(client, path):
    try:
        client.request("GET", path)
        return 200
    except kubeclient.ApiError as e:
        return e.status


if __name__ == "__main__":
    unittest.main()
