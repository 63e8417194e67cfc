"""Contract section 7 item 7: preflight checks with kubeadm's names, [ERROR X]/[WARNING X],
case-insensitive --ignore-preflight-errors, and the output of each emulated era."""

import os
import socket
import subprocess
import unittest

import harness as H
from test_cli_config import CLUSTER

AFTER_PREFLIGHT = ("certs,kubeconfig,etcd,control-plane,kubelet-start,wait-control-plane,upload-config,"
                   "upload-certs,mark-control-plane,bootstrap-token,kubelet-finalize,addon,show-join-command")


class Preflight(H.NodeTestCase):
    def prepare(self, version="v1.31.2", bind_port=None):
        node = self.node(version=version)
        node.systemd.unit("khalab-cri-standin").start()
        H.wait_for(lambda: node.exists("/run/containerd/containerd.sock"), 10, "the CRI socket")
        port = bind_port or node.api_port
        text = ("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: "
                "%s\n  bindPort: %d\nnodeRegistration:\n  name: cp1\n---\n" % (node.ip, port)) + CLUSTER % version
        return node, node.write("/root/k.yaml", text, 0o644)

    def preflight(self, node, cfg, *extra, **kw):
        return node.kubeadm("init", "--config", cfg, "--skip-phases=" + AFTER_PREFLIGHT, *extra, **kw)

    def test_a_clean_node_passes(self):
        node, cfg = self.prepare()
        res = self.preflight(node, cfg)
        self.assertOk(res)
        self.assertIn("[preflight] Running pre-flight checks", res.stdout)

    def test_port_check_is_a_bind_on_every_address(self):
        node, cfg = self.prepare()
        # A listener on one specific address makes kubeadm's net.Listen(":PORT") fail.
        with socket.socket() as s:
            s.bind(("127.0.0.9", node.api_port))
            s.listen()
            res = self.preflight(node, cfg)
        self.assertFails(res, "\t[ERROR Port-%d]: Port %d is in use" % (node.api_port, node.api_port), 1)

    def test_port_6443_in_use_is_reported_by_that_name(self):
        node, cfg = self.prepare(bind_port=6443)
        holder = socket.socket()
        try:
            holder.bind(("127.0.0.9", 6443))
            holder.listen()
        except OSError:
            pass  # someone on this machine already listens on 6443: the check must fail just the same
        try:
            res = self.preflight(node, cfg)
        finally:
            holder.close()
        self.assertFails(res, "[ERROR Port-6443]: Port 6443 is in use")

    def test_existing_manifests_and_etcd_data(self):
        node, cfg = self.prepare()
        node.write("/etc/kubernetes/manifests/kube-apiserver.yaml", "x")
        node.write("/var/lib/etcd/member/snap/db", "x")
        res = self.preflight(node, cfg)
        self.assertFails(res, "[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: "
                              "/etc/kubernetes/manifests/kube-apiserver.yaml already exists")
        self.assertIn("[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty", res.stderr)

    def test_ip_forward_must_be_1_and_ignoring_is_case_insensitive(self):
        node, cfg = self.prepare()
        node.write("/proc/sys/net/ipv4/ip_forward", "0\n")
        res = self.preflight(node, cfg)
        self.assertFails(res, "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward "
                              "contents are not set to 1")
        res = self.preflight(node, cfg, "--ignore-preflight-errors=filecontent--PROC-sys-net-ipv4-ip_forward")
        self.assertOk(res)
        self.assertIn("[WARNING FileContent--proc-sys-net-ipv4-ip_forward]", res.stderr)

    def test_ignore_all(self):
        node, cfg = self.prepare()
        node.write("/etc/kubernetes/manifests/etcd.yaml", "x")
        self.assertOk(self.preflight(node, cfg, "--ignore-preflight-errors=all"))

    def test_the_cri_socket_must_answer(self):
        node, cfg = self.prepare()
        node.systemd.unit("khalab-cri-standin").stop()
        res = self.preflight(node, cfg)
        self.assertFails(res, "[ERROR CRI]: container runtime is not running")

    def test_only_root_may_run_it(self):
        node, cfg = self.prepare()
        for d, _, files in os.walk(node.tmp):  # let "nobody" read the node's files
            os.chmod(d, os.stat(d).st_mode | 0o055)
            for f in (os.path.join(d, f) for f in files):
                if not os.path.islink(f):
                    os.chmod(f, os.stat(f).st_mode | 0o044)
        exe = os.path.join(node.root, "usr/bin/kubeadm")
        res = subprocess.run([exe, "init", "--config", cfg, "--skip-phases=" + AFTER_PREFLIGHT],
                             capture_output=True, text=True, env=node.env(), user=65534, group=65534, timeout=60)
        self.assertFails(res, "[ERROR IsPrivilegedUser]: user is not running as root")

    def test_workers_must_not_have_a_ca_certificate_before_joining(self):
        node, _ = self.prepare()
        node.write("/etc/kubernetes/pki/ca.crt", "anything", 0o644)
        text = H.join_config(node, "127.0.0.2:6443", "sha256:" + "a" * 64, control_plane=False)
        res = node.kubeadm("join", "--config", node.write("/root/j.yaml", text))
        self.assertFails(res, "[ERROR FileAvailable--etc-kubernetes-pki-ca.crt]: /etc/kubernetes/pki/ca.crt "
                              "already exists")
        self.assertIn("error execution phase preflight", res.stderr)

    def test_output_and_exit_code_before_1_34(self):
        node, cfg = self.prepare("v1.31.2")
        node.write("/proc/sys/net/ipv4/ip_forward", "0\n")
        res = self.preflight(node, cfg)
        # A phase error wraps the preflight error: kubeadm's exit-code switch then sees a plain error.
        self.assertFails(res, "error execution phase preflight: [preflight] Some fatal errors occurred:\n"
                              "\t[ERROR FileContent--proc-sys-net-ipv4-ip_forward]", 1)
        self.assertIn("[preflight] If you know what you are doing, you can make a check non-fatal with "
                      "`--ignore-preflight-errors=...`\nTo see the stack trace", res.stderr)

    def test_output_and_exit_code_from_1_34(self):
        node, cfg = self.prepare("v1.35.0")
        node.write("/proc/sys/net/ipv4/ip_forward", "0\n")
        res = self.preflight(node, cfg)
        self.assertFails(res, "[preflight] Some fatal errors occurred:\n\t[ERROR FileContent--proc-sys-net-ipv4-"
                              "ip_forward]", 1)
        self.assertIn("error: error execution phase preflight: preflight checks failed\n", res.stderr)


if __name__ == "__main__":
    unittest.main()
