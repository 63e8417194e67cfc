"""The stand-in API server's authorizer keeps what it knew of the cluster-admin bindings when
a read of them fails, as kube-apiserver's RBAC informer cache does."""

import unittest
from unittest import mock

import harness  # noqa: F401  (puts khalab_standin on the path)
from khalab_standin import apiauth, apistore

ADMINS = {
    "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
    "subjects": [{"kind": "Group", "name": "kubeadm:cluster-admins"}],
}


class FlakyStore:
    def __init__(self):
        self.fail = False

    def list(self, resource):
        if self.fail:
            raise apistore.StoreError(503, "ServiceUnavailable", "etcdserver: request timed out")
        return [ADMINS], "1"


class ClusterAdmins(unittest.TestCase):
    def test_a_failed_read_keeps_the_admins_known_and_is_retried(self):
        store = FlakyStore()
        authz = apiauth.Authorizer(store)
        admin = apiauth.User("kubernetes-admin", ["kubeadm:cluster-admins", "system:authenticated"])
        clock = [100.0]
        with mock.patch.object(apiauth.time, "monotonic", lambda: clock[0]):
            self.assertTrue(authz.allowed(admin, "create", "", "secrets", "", "kube-system", None))
            store.fail = True
            clock[0] += 2
            self.assertTrue(authz.allowed(admin, "create", "", "secrets", "", "kube-system", None))
            authz.forget()
            self.assertTrue(authz.allowed(admin, "create", "", "secrets", "", "kube-system", None))
            store.fail = False
            store.list = lambda resource: ([], "2")
            clock[0] += 2
            self.assertFalse(authz.allowed(admin, "create", "", "secrets", "", "kube-system", None))


if __name__ == "__main__":
    unittest.main()
