"""The stand-in kubelet restarts a static pod when its manifest changes, as the real kubelet
does (a changed manifest is a new pod: the old container is killed, the new one started), and
leaves it running when the manifest is written again unchanged. khactl relies on it to move
the API servers to new etcd endpoints by rewriting `--etcd-servers` in their manifests."""

import os
import shutil
import tempfile
import unittest

import harness  # noqa: F401  (puts khalab_standin on the path)
from khalab_standin import env, kubelet

MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - name: kube-apiserver
    command:
    - sleep
    - "%s"
"""


class StaticPodRestart(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="khalab-kubelet-")
        self.saved_root = os.environ.get(env.ROOT_ENV)
        os.environ[env.ROOT_ENV] = self.root
        self.dir = os.path.join(self.root, "etc/kubernetes/manifests")
        os.makedirs(self.dir)
        self.kubelet = kubelet.Kubelet({"hostname-override": "cp1"},
                                       {"staticPodPath": "/etc/kubernetes/manifests"})

    def tearDown(self):
        self.kubelet.stop_all()
        if self.saved_root is None:
            os.environ.pop(env.ROOT_ENV, None)
        else:
            os.environ[env.ROOT_ENV] = self.saved_root
        shutil.rmtree(self.root, ignore_errors=True)

    def write(self, seconds):
        with open(os.path.join(self.dir, "kube-apiserver.yaml"), "w") as f:
            f.write(MANIFEST % seconds)

    def running(self):
        (pod,) = self.kubelet.pods.values()
        self.assertIsNotNone(pod.proc)
        self.assertIsNone(pod.proc.poll())
        return pod.proc

    def test_a_changed_manifest_stops_the_old_process_and_starts_the_new_one(self):
        self.write(300)
        self.kubelet.sync_pods()
        old = self.running()
        self.write(301)
        self.kubelet.sync_pods()
        new = self.running()
        self.assertNotEqual(new.pid, old.pid)
        self.assertIsNotNone(old.poll(), "the old process still runs")
        self.assertEqual(new.args[-1], "301")

    def test_the_same_manifest_written_again_keeps_the_process(self):
        self.write(300)
        self.kubelet.sync_pods()
        old = self.running()
        self.write(300)
        self.kubelet.sync_pods()
        self.assertEqual(self.running().pid, old.pid)


if __name__ == "__main__":
    unittest.main()
