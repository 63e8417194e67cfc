"""The kubelet stand-in runs Debian's etcd 3.4 where the real kubelet runs the etcd 3.5/3.6
image kubeadm names: the manifest's flags are translated, and 3.5's defaults that change
behaviour are set explicitly."""

import unittest

import harness  # noqa: F401  (puts khalab_standin on the path)
from khalab_standin import kubelet


class Etcd34Flags(unittest.TestCase):
    def test_flags_get_their_3_4_names_and_pre_vote_is_on_as_in_3_5(self):
        argv = kubelet.etcd34_argv([
            "--name=cp1",
            "--feature-gates=InitialCorruptCheck=true",
            "--watch-progress-notify-interval=5s",
        ])
        self.assertEqual(argv, [
            "--name=cp1",
            "--experimental-initial-corrupt-check=true",
            "--experimental-watch-progress-notify-interval=5s",
            "--pre-vote=true",
        ])

    def test_a_pre_vote_the_manifest_sets_is_kept(self):
        self.assertEqual(kubelet.etcd34_argv(["--pre-vote=false"]), ["--pre-vote=false"])


if __name__ == "__main__":
    unittest.main()
