"""Contract section 7 item 21: failure injection with kubeadm's real texts; and the join of a
1.33+ cluster (kubelet local mode: etcd-join before kubelet-wait-bootstrap, control-plane-check)."""

import time
import unittest

import harness as H
from clusters import Cluster


class Injection(H.NodeTestCase):
    def test_wait_control_plane_timeout_on_init(self):
        n = self.node(version="v1.35.0")
        pki = H.PKI(version_minor=35)
        pki.place(n.root, pki.node_certs("cp1", n.ip, n.ip))
        n.boot()
        text = H.init_config(n, version="v1.35.0")
        start = time.monotonic()
        res = n.kubeadm("init", "--config", n.write("/root/k.yaml", text),
                        env={"KHALAB_STANDIN_FAIL": "init:wait-control-plane-timeout"})
        self.assertLess(time.monotonic() - start, 50)
        self.assertFails(res, "error: error execution phase wait-control-plane: failed while waiting for the control "
                              "plane to start: [kube-apiserver check failed at https://127.0.0.2:%d/livez" % n.api_port, 1)
        self.assertIn("[control-plane-check] kube-apiserver is not healthy after 1m0s", res.stdout)
        self.assertIn("A control plane component may have crashed or exited when started by the container runtime.",
                      res.stdout)

    def test_promote_timeout_and_the_1_35_join_order(self):
        c = Cluster(self, version="v1.35.0", cps=1)
        cp2 = self.node("cp2", "127.0.0.3", version="v1.35.0")
        c.place_pki(cp2)
        cp2.boot()
        res = c.join(cp2, env={"KHALAB_STANDIN_FAIL": "join:etcd-promote-timeout"})
        self.assertFails(res, "error: error execution phase etcd-join: etcdserver: can only promote a learner member "
                              "which is in sync with leader", 1)
        out = res.stdout
        self.assertLess(out.index("[kubelet-start] Starting the kubelet"),
                        out.index("[etcd] Announced new etcd member joining to the existing etcd cluster"))
        learners = [m for m in c.members() if m.get("isLearner")]
        self.assertEqual(len(learners), 1, "the learner stays, as after a real failed promotion")
        self.assertEqual(learners[0]["peerURLs"], ["https://127.0.0.3:%s" % cp2.ports["2380"]])

    def test_preflight_once_then_a_generic_phase(self):
        c = Cluster(self, cps=1)
        w1 = self.node("w1", "127.0.0.5")
        w1.boot()
        w1.write("/etc/khalab-standin/fail", "# lab test\njoin:preflight once\n", 0o644)
        res = c.join(w1, control_plane=False)
        self.assertFails(res, "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward "
                              "contents are not set to 1")
        self.assertEqual(w1.read("/etc/khalab-standin/fail"), "# lab test\n", "a `once` line is consumed")
        res = c.join(w1, control_plane=False, env={"KHALAB_STANDIN_FAIL": "join:phase=kubelet-start"})
        self.assertFails(res, "error execution phase kubelet-start: khalab stand-in: injected failure")
        res = c.join(w1, control_plane=False)
        self.assertOk(res)


if __name__ == "__main__":
    unittest.main()
