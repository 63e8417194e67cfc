"""Kubernetes objects in the real etcd, the way kube-apiserver keys them
(`/registry/<resource>/<namespace>/<name>`), as JSON so `etcdctl get` shows them plainly.

resourceVersion is etcd's mod revision; updates that carry one are compare-and-swap
transactions, so two writers (two controller-managers, a kubelet and kubeadm) cannot
overwrite each other blindly.
"""

import datetime
import json
import uuid

from . import etcdclient


class StoreError(Exception):
    def __init__(self, status, reason, message, details=None):
        super().__init__(message)
        self.status, self.reason, self.message, self.details = status, reason, message, details or {}


def not_found(resource, name, group=""):
    res = resource if not group else "%s.%s" % (resource, group)
    return StoreError(404, "NotFound", '%s "%s" not found' % (res, name),
                      {"name": name, "kind": resource, "group": group})


def already_exists(resource, name, group=""):
    res = resource if not group else "%s.%s" % (resource, group)
    return StoreError(409, "AlreadyExists", '%s "%s" already exists' % (res, name),
                      {"name": name, "kind": resource, "group": group})


def conflict(resource, name, group=""):
    res = resource if not group else "%s.%s" % (resource, group)
    return StoreError(409, "Conflict",
                      'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                      "please apply your changes to the latest version and try again" % (res, name),
                      {"name": name, "kind": resource, "group": group})


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def key(resource, namespace, name):
    if namespace:
        return "/registry/%s/%s/%s" % (resource, namespace, name)
    return "/registry/%s/%s" % (resource, name)


def _decode(kv):
    obj = json.loads(etcdclient.unb64(kv["value"]))
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv["mod_revision"])
    return obj


class Store:
    def __init__(self, etcd):
        self.etcd = etcd

    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except etcdclient.EtcdError as e:
            raise StoreError(500, "InternalError", e.message) from None

    def get(self, resource, namespace, name, group=""):
        kv = self._call(self.etcd.get, key(resource, namespace, name))
        if kv is None:
            raise not_found(resource, name, group)
        return _decode(kv)

    def list(self, resource, namespace=None):
        prefix = "/registry/%s/" % resource + (namespace + "/" if namespace else "")
        kvs, rev = self._call(self.etcd.range_prefix, prefix)
        return [_decode(kv) for kv in kvs], str(rev)

    def create(self, resource, namespace, obj, group=""):
        md = obj.setdefault("metadata", {})
        name = md.get("name")
        md.pop("resourceVersion", None)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_rfc3339()
        if namespace:
            md["namespace"] = namespace
        ok, rev = self._call(self.etcd.txn_put_if, key(resource, namespace, name),
                             json.dumps(obj), create=True)
        if not ok:
            raise already_exists(resource, name, group)
        md["resourceVersion"] = str(rev)
        return obj

    def update(self, resource, namespace, name, obj, group=""):
        """Replace the object; the caller's resourceVersion (if any) must be current."""
        k = key(resource, namespace, name)
        kv = self._call(self.etcd.get, k)
        if kv is None:
            raise not_found(resource, name, group)
        cur = _decode(kv)
        md = obj.setdefault("metadata", {})
        want = md.pop("resourceVersion", None)
        if want and str(want) != str(kv["mod_revision"]):
            raise conflict(resource, name, group)
        for keep in ("uid", "creationTimestamp"):
            if keep in cur["metadata"]:
                md[keep] = cur["metadata"][keep]
        if namespace:
            md["namespace"] = namespace
        ok, rev = self._call(self.etcd.txn_put_if, k, json.dumps(obj), mod_revision=kv["mod_revision"])
        if not ok:
            raise conflict(resource, name, group)
        md["resourceVersion"] = str(rev)
        return obj

    def delete(self, resource, namespace, name, group=""):
        k = key(resource, namespace, name)
        kv = self._call(self.etcd.get, k)
        if kv is None:
            raise not_found(resource, name, group)
        obj = _decode(kv)
        if not self._call(self.etcd.txn_delete_if, k, kv["mod_revision"]):
            raise conflict(resource, name, group)
        return obj

    def healthy(self):
        """A linearizable read, as kube-apiserver's etcd health check (a learner refuses it)."""
        try:
            self.etcd.call("kv/range", {"key": etcdclient.b64("health"), "serializable": False})
            return None
        except etcdclient.EtcdError as e:
            return e.message
