"""Who is asking (authentication) and may they (authorization) in the stand-in API server.

Authentication as kube-apiserver: a client certificate verified against --client-ca-file
(CN = user, O = groups), a bootstrap token (`Bearer <id>.<secret>`, checked against its
Secret: usage, expiry, extra groups), else anonymous.

Authorization is a fixed rule set standing in for RBAC and the Node authorizer; the rules
are the bindings kubeadm creates, written out. One part is data: a ClusterRoleBinding to the
`cluster-admin` role (kubeadm creates `kubeadm:cluster-admins` during init) makes its
subjects superusers, so admin.conf only works once kubeadm has created that binding.
"""

import threading
import time

from . import apistore, tokens

SUPERUSER_GROUP = "system:masters"
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
DISCOVERY_PREFIXES = ("/api", "/apis", "/openapi")
KUBEADM_TOKEN_GROUP = tokens.DEFAULT_GROUP


class User:
    def __init__(self, name, groups):
        self.name, self.groups = name, list(groups)

    @property
    def anonymous(self):
        return self.name == "system:anonymous"


ANONYMOUS = User("system:anonymous", ["system:unauthenticated"])


class Unauthorized(Exception):
    pass


def from_peer_cert(peercert):
    if not peercert:
        return None
    cn, orgs = "", []
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
            elif k == "organizationName":
                orgs.append(v)
    return User(cn, orgs + ["system:authenticated"])


def from_bearer(store, header):
    """A bootstrap token; anything else in a bearer header is refused (401)."""
    token = header[len("Bearer "):].strip()
    parts = tokens.split(token)
    if parts is None:
        raise Unauthorized()
    token_id, secret = parts
    try:
        obj = store.get("secrets", "kube-system", tokens.SECRET_PREFIX + token_id)
    except apistore.StoreError:
        raise Unauthorized() from None
    info = tokens.from_secret(obj)
    if (info is None or info.secret != secret or "authentication" not in info.usages
            or info.expired()):
        raise Unauthorized()
    groups = [tokens.BOOTSTRAPPERS] + [g for g in info.groups if g.startswith(tokens.BOOTSTRAPPERS)]
    return User("system:bootstrap:" + token_id, groups + ["system:authenticated"])


class Authorizer:
    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._admins = (0.0, set(), set())

    def forget(self):
        """A ClusterRoleBinding changed through this server: read them again."""
        with self._lock:
            _, users, groups = self._admins
            self._admins = (0.0, users, groups)

    def _cluster_admins(self):
        """Users and groups bound to the cluster-admin ClusterRole (cached for 1 s, the
        stand-in's informer). A list that fails (etcd slow or electing) keeps what was known,
        as an informer's cache does, and is retried on the next request: an empty answer
        cached for a second made admin.conf forbidden on a loaded machine."""
        with self._lock:
            stamp, users, groups = self._admins
            if time.monotonic() - stamp < 1:
                return users, groups
            try:
                items, _ = self.store.list("clusterrolebindings")
            except apistore.StoreError:
                return users, groups
            users, groups = set(), set()
            for crb in items:
                ref = crb.get("roleRef") or {}
                if ref.get("kind") != "ClusterRole" or ref.get("name") != "cluster-admin":
                    continue
                for s in crb.get("subjects") or []:
                    (users if s.get("kind") == "User" else groups).add(s.get("name"))
            self._admins = (time.monotonic(), users, groups)
            return users, groups

    def allowed_path(self, user, path):
        if any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS):
            return True
        if self._superuser(user):
            return True
        if user.anonymous:
            return False
        return any(path == p or path.startswith(p + "/") for p in DISCOVERY_PREFIXES)

    def _superuser(self, user):
        if SUPERUSER_GROUP in user.groups:
            return True
        users, groups = self._cluster_admins()
        return user.name in users or any(g in groups for g in user.groups)

    def allowed(self, user, verb, group, resource, sub, namespace, name):
        if self._superuser(user):
            return True
        res = resource + ("/" + sub if sub else "")
        if user.anonymous:
            return (verb == "get" and res == "configmaps" and namespace == "kube-public"
                    and name == "cluster-info")
        if user.name == "system:kube-controller-manager":
            # Stand-in simplification: the controller-manager's ~30 roles collapse into one.
            return True
        if user.name == "system:kube-scheduler":
            return self._scheduler(verb, res, namespace)
        if "system:nodes" in user.groups and user.name.startswith("system:node:"):
            if self._node(user.name[len("system:node:"):], verb, res, namespace, name):
                return True
        if KUBEADM_TOKEN_GROUP in user.groups or "system:nodes" in user.groups:
            if self._kubeadm_bootstrap(user, verb, res, namespace, name):
                return True
        return False

    @staticmethod
    def _scheduler(verb, res, namespace):
        if res == "leases":
            return namespace == "kube-system"
        if res in ("nodes", "pods", "namespaces") and verb in ("get", "list", "watch"):
            return True
        return res == "events" and verb in ("create", "patch", "update")

    @staticmethod
    def _node(node, verb, res, namespace, name):
        """The Node authorizer and NodeRestriction, reduced to what a kubelet does here."""
        read = verb in ("get", "list", "watch")
        if res in ("nodes", "nodes/status"):
            return read or verb == "create" or (verb in ("update", "patch") and name == node)
        if res == "leases":
            return namespace == "kube-node-lease" and (name == node or verb == "create")
        if res in ("pods", "pods/status"):
            return read or (namespace == "kube-system" and (name or "").endswith("-" + node)) \
                or (verb == "create" and namespace == "kube-system")
        if res == "certificatesigningrequests":
            return verb in ("create", "get", "list", "watch")
        if res == "events":
            return verb in ("create", "patch", "update")
        if res == "configmaps":
            return verb == "get" and ((namespace, name) in (
                ("kube-system", "kubelet-config"), ("kube-system", "kubeadm-config"),
                ("kube-public", "cluster-info")))
        return False

    @staticmethod
    def _kubeadm_bootstrap(user, verb, res, namespace, name):
        """The roles `kubeadm init` binds to its token group (and partly to system:nodes):
        system:node-bootstrapper, kubeadm:get-nodes, kubeadm:nodes-kubeadm-config,
        kubeadm:kubelet-config and kubeadm:kubeadm-certs."""
        if res == "certificatesigningrequests":
            return verb in ("create", "get", "list", "watch")
        if res == "nodes":
            return verb == "get"
        if res == "configmaps":
            return verb == "get" and namespace == "kube-system" and name in (
                "kubeadm-config", "kubelet-config")
        if res == "secrets" and KUBEADM_TOKEN_GROUP in user.groups:
            return verb == "get" and namespace == "kube-system" and name == "kubeadm-certs"
        return False


def forbidden_message(user, verb, group, resource, sub, namespace, name):
    res = resource + ("/" + sub if sub else "")
    what = '%s "%s"' % (resource if not group else "%s.%s" % (resource, group), name) if name \
        else (resource if not group else "%s.%s" % (resource, group))
    where = ('in the namespace "%s"' % namespace) if namespace else "at the cluster scope"
    return '%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s" %s' % (
        what, user.name, verb, res, group, where)
