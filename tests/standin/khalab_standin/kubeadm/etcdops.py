"""kubeadm's etcd client (k/k cmd/kubeadm/app/util/etcd/etcd.go), over the real etcd's JSON
gateway with the etcd/healthcheck-client certificate.

Endpoints are found as kubeadm finds them: the `kubeadm.kubernetes.io/etcd.advertise-client-urls`
annotation of the etcd mirror pods, then synced from the member list (clientv3's Sync keeps
only started voting members). Every call is retried every 500 ms up to etcdAPICall (2 min by
default), as kubeadm does.
"""

import ssl
import time

from .. import env, etcdclient, kubeclient
from ..out import KubeadmError
from . import manifests

RETRY = 0.5
ANNOTATION = "kubeadm.kubernetes.io/etcd.advertise-client-urls"


class NoMemberForPeerURL(Exception):
    pass


def _poll(fn, timeout, retry=RETRY):
    """wait.PollUntilContextTimeout(immediate): returns fn's value or raises its last error."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            return fn()
        except etcdclient.EtcdError as e:
            last = e
        if time.monotonic() + retry > deadline:
            raise KubeadmError(last.message if last else "context deadline exceeded")
        time.sleep(retry)


class EtcdCluster:
    def __init__(self, endpoints, certs_dir, api_timeout):
        self.endpoints = list(endpoints)
        self.certs = certs_dir
        self.timeout = api_timeout

    def client(self, endpoints=None):
        c = self.certs
        try:
            return etcdclient.Client(endpoints or self.endpoints, env.host_path(c + "/etcd/ca.crt"),
                                     env.host_path(c + "/etcd/healthcheck-client.crt"),
                                     env.host_path(c + "/etcd/healthcheck-client.key"))
        except (OSError, ssl.SSLError) as e:
            raise KubeadmError("error creating etcd client for %s endpoints: open %s/etcd/healthcheck-client: %s"
                               % (self.endpoints, c, getattr(e, "strerror", None) or e)) from None

    @classmethod
    def from_cluster(cls, api, certs_dir, api_timeout):
        deadline = time.monotonic() + 15
        endpoints, last = [], None
        while True:
            try:
                pods = api.list("Pod", "kube-system", "component=etcd,tier=control-plane")
                endpoints = [p["metadata"].get("annotations", {}).get(ANNOTATION) for p in pods]
                endpoints = [e for e in endpoints if e]
                if endpoints:
                    break
                if pods:
                    raise KubeadmError("could not retrieve the list of etcd endpoints: etcd Pods exist, but no "
                                       "etcd endpoint annotations were found")
                last = "etcd pods are not mirrored in the API yet"
            except kubeclient.ApiError as e:
                last = e.message
            if time.monotonic() > deadline:
                raise KubeadmError("could not retrieve the list of etcd endpoints: %s" % last)
            time.sleep(0.5)
        c = cls(endpoints, certs_dir, api_timeout)
        c.sync()
        return c

    def sync(self):
        members = _poll(lambda: self.client().member_list(), self.timeout)
        eps = []
        for m in members:
            if m.get("name") and not m.get("isLearner"):
                eps.extend(m.get("clientURLs") or [])
        if eps:
            self.endpoints = eps

    def list_members(self):
        return _poll(lambda: self.client().member_list(), self.timeout)

    def check_cluster_health(self):
        for ep in self.endpoints:
            _poll(lambda: self.client().status(ep), self.timeout)

    def member_id(self, peer_url):
        for m in self.list_members():
            if (m.get("peerURLs") or [""])[0] == peer_url:
                return m["ID"]
        raise NoMemberForPeerURL()

    def add_member_as_learner(self, name, peer_url):
        """addMember: skip when the peer URL is already a member, else MemberAddAsLearner.
        Returns [(name, peerURL)] for --initial-cluster."""
        def attempt():
            c = self.client()
            members = c.member_list()
            if any((m.get("peerURLs") or [""])[0] == peer_url for m in members):
                return members
            return c.member_add(peer_url, True)["members"]
        members = _poll(attempt, self.timeout)
        result = []
        for m in members:
            url = (m.get("peerURLs") or [""])[0]
            if url == peer_url:
                result.append((name, url))
            else:
                result.append((m.get("name") or "%x" % int(m["ID"]), url))
        host = peer_url.split("//", 1)[1].rsplit(":", 1)[0]
        self.endpoints.append(manifests.etcd_client_url(host.strip("[]")))
        return result

    def is_learner(self, member_id):
        return any(m["ID"] == member_id and m.get("isLearner") for m in self.list_members())

    def promote(self, member_id):
        if not self.is_learner(member_id):
            return

        def attempt():
            if not self.is_learner(member_id):
                return True
            self.client().member_promote(member_id)
            return True
        _poll(attempt, self.timeout)

    def wait_for_cluster_available(self, retries=8, interval=5.0):
        for i in range(retries):
            if i:
                time.sleep(interval)
            try:
                for ep in self.endpoints:
                    self.client().status(ep)
                return
            except etcdclient.EtcdError:
                continue
        raise KubeadmError("timeout waiting for etcd cluster to be available")

    def remove_member(self, member_id):
        return _poll(lambda: self.client().member_remove(member_id), self.timeout)
