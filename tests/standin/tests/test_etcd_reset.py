"""Contract section 7 items 15-18: control-plane join requirements, check-etcd, etcd learner
join and promotion, reset; and the lab's "wiped control plane rejoins" scenario."""

import os
import time
import unittest

import harness as H
from clusters import Cluster
from khalab_standin import x509util


def wipe(node):
    """A control plane reinstalled out of band: processes gone, /etc/kubernetes, the etcd data
    and the kubelet's state removed; its etcd member stays in the cluster."""
    node.systemd.shutdown()
    node.kill_pods()
    import shutil
    for d in ("/etc/kubernetes", "/var/lib/etcd", "/var/lib/kubelet", "/run/khalab-standin"):
        shutil.rmtree(node.path(d), ignore_errors=True)
    os.makedirs(node.path("/etc/kubernetes/manifests"))
    os.unlink(os.path.join(node.tmp, "systemd.sock"))
    shutil.rmtree(os.path.join(node.tmp, "shim"))
    node.systemd = H.Systemd(node)


class EtcdJoin(H.NodeTestCase):
    def test_an_existing_peer_url_is_reused_and_a_second_learner_is_refused(self):
        c = Cluster(self, cps=1)
        cp2 = self.node("cp2", "127.0.0.3")
        c.place_pki(cp2)
        cp2.boot()
        peer2 = "https://127.0.0.3:%s" % cp2.ports["2380"]
        added = c.cp1.etcd().member_add(peer2, True)["member"]["ID"]
        self.assertOk(c.join(cp2))
        members = {m["ID"]: m for m in c.members()}
        self.assertEqual(len(members), 2)
        self.assertEqual(members[added]["name"], "cp2")
        self.assertFalse(members[added].get("isLearner"))

        # A learner that never starts (etcd refuses changes for a few seconds after a promotion).
        H.wait_for(lambda: c.cp1.etcd().member_add("https://127.0.0.99:2380", True), 30, "etcd to accept a learner")
        cp3 = self.node("cp3", "127.0.0.4")
        c.place_pki(cp3)
        cp3.boot()
        res = c.join(cp3, etcd_api="3s")
        self.assertFails(res, "error execution phase control-plane-join/etcd: etcdserver: too many learner members "
                              "in cluster")


class StaleMember(H.NodeTestCase):
    def test_a_wiped_control_plane_fails_check_etcd_until_its_member_is_removed(self):
        c = Cluster(self, cps=3)
        cp3 = c.cps[2]
        stale = next(m for m in c.members() if m["name"] == "cp3")
        wipe(cp3)
        c.place_pki(cp3)
        cp3.boot()
        res = c.join(cp3, etcd_api="3s")
        self.assertFails(res, "error execution phase check-etcd: etcd cluster is not healthy: dial tcp 127.0.0.4:%s: "
                              "connect: connection refused" % cp3.ports["2379"])
        c.cp1.etcd().member_remove(stale["ID"])
        # The failed join left manifests behind: like any installer, clean up before retrying.
        self.assertIn("[ERROR DirAvailable--etc-kubernetes-manifests]", c.join(cp3).stderr)
        self.assertOk(cp3.kubeadm("reset", "-f"))
        c.place_pki(cp3)  # reset empties the PKI directory, khactl puts it back
        # The old Node is still Ready (its lease has not run out yet): kubeadm refuses to join
        # under that name, so the stale Node object must go too.
        self.assertFails(c.join(cp3), 'error execution phase kubelet-start: a Node with name "cp3" and status "Ready" '
                                      'already exists in the cluster')
        self.assertOk(cp3.kubeadm("reset", "-f"))
        c.place_pki(cp3)
        c.admin().delete("Node", "cp3")
        self.assertOk(c.join(cp3))
        members = c.members()
        self.assertEqual(sorted(m["name"] for m in members), ["cp1", "cp2", "cp3"])
        self.assertFalse(any(m.get("isLearner") for m in members))

        # A reset whose member removal fails only warns, exits 0 and still empties the data dir.
        os.unlink(cp3.path("/etc/kubernetes/pki/etcd/healthcheck-client.key"))
        res = cp3.kubeadm("reset", "-f")
        self.assertOk(res)
        self.assertIn("[reset] Failed to remove etcd member: ", res.stderr)
        self.assertIn(", please manually remove this etcd member using etcdctl", res.stderr)
        self.assertIn("cp3", [m["name"] for m in c.members()])
        self.assertEqual(os.listdir(cp3.path("/var/lib/etcd")), [])


class Reset(H.NodeTestCase):
    def test_reset_removes_the_member_and_the_files_and_keeps_cni_and_the_node(self):
        c = Cluster(self, cps=2, workers=1)
        cp2, w1 = c.cps[1], c.workers[0]
        cp2.write("/etc/cni/net.d/10-test.conflist", "{}", 0o644)
        res = cp2.kubeadm("reset")
        self.assertFails(res, "won't proceed; the user didn't answer (Y|y) in order to continue")
        res = cp2.kubeadm("reset", "-f")
        self.assertOk(res)
        self.assertEqual([m["name"] for m in c.members()], ["cp1"])
        for f in ("admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"):
            self.assertFalse(cp2.exists("/etc/kubernetes/" + f), f)
        for d in ("/etc/kubernetes/manifests", "/var/lib/kubelet", "/etc/kubernetes/pki", "/var/lib/etcd"):
            self.assertEqual(os.listdir(cp2.path(d)), [], d)
        self.assertTrue(cp2.exists("/etc/cni/net.d/10-test.conflist"))
        self.assertIn("cp2", [n["metadata"]["name"] for n in c.admin().list("Node")])
        self.assertIn("The reset process does not perform cleanup of CNI plugin configuration", res.stdout)
        self.assertFalse(cp2.systemd.unit("kubelet").active())

        res = w1.kubeadm("reset", "-f")
        self.assertOk(res)
        self.assertIn("[reset] No etcd config found. Assuming external etcd", res.stdout)

        res = c.cp1.kubeadm("reset", "-f")  # the last member: nothing to remove from
        self.assertOk(res)
        self.assertNotIn("Failed to remove etcd member", res.stderr)
        self.assertEqual(os.listdir(c.cp1.path("/var/lib/etcd")), [])


class ControlPlaneJoinRequirements(H.NodeTestCase):
    def test_no_control_plane_endpoint_no_control_plane_join(self):
        c = Cluster(self, cps=1, cpe=False)
        cp2 = self.node("cp2", "127.0.0.3")
        c.place_pki(cp2)
        cp2.boot()
        res = c.join(cp2)
        self.assertFails(res, "error execution phase preflight: One or more conditions for hosting a new control plane "
                              "instance is not satisfied.\n\nunable to add a new control plane instance to a cluster "
                              "that doesn't have a stable controlPlaneEndpoint address\n\nPlease ensure that:\n* The "
                              "cluster has a stable controlPlaneEndpoint address.\n* The certificates that must be "
                              "shared among control plane instances are provided.")

    def test_upload_certs_and_the_certificate_key(self):
        c = Cluster(self, cps=1, upload_certs=True)
        out = c.init_result.stdout
        key = out.split("[upload-certs] Using certificate key:\n")[1].split()[0]
        self.assertRegex(key, r"^[0-9a-f]{64}$")
        self.assertIn("--control-plane --certificate-key %s" % key, out)
        admin = c.admin()
        secret = admin.get("Secret", "kubeadm-certs", "kube-system")
        self.assertEqual(sorted(secret["data"]), ["ca.crt", "ca.key", "etcd-ca.crt", "etcd-ca.key", "front-proxy-ca.crt",
                                                  "front-proxy-ca.key", "sa.key", "sa.pub"])
        owner = secret["metadata"]["ownerReferences"][0]
        from khalab_standin import tokens
        info = tokens.from_secret(admin.get("Secret", owner["name"], "kube-system"))
        self.assertTrue(7000 < (info.expires - H.datetime_now()).total_seconds() <= 7200)

        # Without a key, the shared certificates must be on the node.
        cp2 = self.node("cp2", "127.0.0.3")
        cp2.boot()
        res = c.join(cp2)
        self.assertFails(res, "One or more conditions for hosting a new control plane instance is not satisfied.\n\n"
                              "failure loading certificate for CA")
        # With the key, they are downloaded and the node's own certificates generated.
        res = c.join(cp2, key=key)
        self.assertOk(res)
        self.assertIn('[download-certs] Downloading the certificates in Secret "kubeadm-certs"', res.stdout)
        self.assertIn('[certs] Generating "apiserver" certificate and key', res.stdout)
        self.assertEqual(cp2.read("/etc/kubernetes/pki/ca.crt").encode(), c.pki.ca_pem())

        cp3 = self.node("cp3", "127.0.0.4")
        cp3.boot()
        res = c.join(cp3, key="ab" * 32)
        self.assertFails(res, "error execution phase control-plane-prepare/download-certs: error downloading certs: "
                              "error decoding secret data with provided key: cipher: message authentication failed")
        admin.delete("Secret", owner["name"], "kube-system")
        H.wait_for(lambda: "kubeadm-certs" not in [s["metadata"]["name"] for s in admin.list("Secret", "kube-system")],
                   15, "the garbage collector to delete kubeadm-certs with its token")
        res = c.join(cp3, key=key)
        self.assertFails(res, 'Secret "kubeadm-certs" was not found in the "kube-system" Namespace. This Secret might '
                              'have expired.')


class CertsRenew(H.NodeTestCase):
    def test_renew_all_moves_not_after_and_keeps_names(self):
        c = Cluster(self, cps=1)
        cp1 = c.cp1
        before = x509util.load_cert(cp1.path("/etc/kubernetes/pki/apiserver.crt"))
        time.sleep(1.1)  # NotAfter has a one-second resolution: let it move
        res = cp1.kubeadm("certs", "renew", "all")
        self.assertOk(res)
        self.assertIn("certificate for serving the Kubernetes API renewed", res.stdout)
        self.assertIn("certificate embedded in the kubeconfig file for the admin to use and for kubeadm itself renewed",
                      res.stdout)
        self.assertIn("Done renewing certificates. You must restart the kube-apiserver, kube-controller-manager, "
                      "kube-scheduler and etcd, so that they can use the new certificates.", res.stdout)
        after = x509util.load_cert(cp1.path("/etc/kubernetes/pki/apiserver.crt"))
        self.assertGreater(after.not_valid_after, before.not_valid_after)
        self.assertEqual(x509util.san_dns(after), x509util.san_dns(before))
        self.assertEqual(x509util.san_ips(after), x509util.san_ips(before))
        self.assertEqual(x509util.subject_cn(after), "kube-apiserver")
        self.assertIsNone(x509util.check_signature_from(after, c.pki.cas["ca"][0]))
        self.assertTrue(c.admin().list("Node"))  # the renewed admin.conf still works


if __name__ == "__main__":
    unittest.main()
