"""A small Kubernetes REST client (JSON over HTTPS) with client-go's error wording."""

import http.client
import json
import ssl
import urllib.parse

from . import kubeconfig as kc_mod


class ApiError(Exception):
    def __init__(self, message, status=0, reason=""):
        super().__init__(message)
        self.message, self.status, self.reason = message, status, reason

    @property
    def not_found(self):
        return self.status == 404

    @property
    def conflict(self):
        return self.status == 409


RESOURCES = {
    # kind: (api prefix, plural, namespaced)
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Pod": ("/api/v1", "pods", True),
    "Node": ("/api/v1", "nodes", False),
    "Namespace": ("/api/v1", "namespaces", False),
    "Event": ("/api/v1", "events", True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "CertificateSigningRequest": ("/apis/certificates.k8s.io/v1", "certificatesigningrequests", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
}


def path_for(kind, namespace=None, name=None, sub=None):
    prefix, plural, namespaced = RESOURCES[kind]
    p = prefix
    if namespaced and namespace:
        p += "/namespaces/" + namespace
    p += "/" + plural
    if name:
        p += "/" + name
    if sub:
        p += "/" + sub
    return p


class Client:
    def __init__(self, server, ssl_context, token=None, timeout=10.0):
        self.server = server.rstrip("/")
        u = urllib.parse.urlsplit(self.server)
        self.host, self.port = u.hostname, u.port or 443
        self.ctx, self.token, self.timeout = ssl_context, token, timeout

    @classmethod
    def from_kubeconfig(cls, kc, timeout=10.0, insecure=False):
        return cls(kc.server, kc.ssl_context(insecure=insecure), token=kc.token, timeout=timeout)

    @classmethod
    def from_file(cls, path, timeout=10.0):
        return cls.from_kubeconfig(kc_mod.load(path), timeout=timeout)

    def request(self, method, path, body=None, content_type="application/json", query=None):
        q = dict(query or {})
        q.setdefault("timeout", "%ds" % int(self.timeout))
        full = path + "?" + urllib.parse.urlencode(q)
        url = self.server + full
        headers = {"Accept": "application/json", "User-Agent": "khalab-standin"}
        if body is not None:
            headers["Content-Type"] = content_type
            body = json.dumps(body)
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                           timeout=self.timeout)
        verb = method.capitalize() if method != "PATCH" else "Patch"
        try:
            conn.request(method, full, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except ssl.SSLCertVerificationError as e:
            raise ApiError('%s "%s": tls: failed to verify certificate: %s' % (
                verb, url, e.verify_message or e)) from None
        except ConnectionRefusedError:
            raise ApiError('%s "%s": dial tcp %s:%d: connect: connection refused' % (
                verb, url, self.host, self.port)) from None
        except (OSError, http.client.HTTPException) as e:
            raise ApiError('%s "%s": %s' % (verb, url, _net_text(e))) from None
        finally:
            conn.close()
        try:
            obj = json.loads(data) if data else {}
        except ValueError:
            obj = {"message": data.decode(errors="replace")}
        if resp.status >= 400:
            msg = obj.get("message") if isinstance(obj, dict) else None
            raise ApiError(msg or "the server returned HTTP %d" % resp.status, resp.status,
                           obj.get("reason", "") if isinstance(obj, dict) else "")
        return obj

    def get(self, kind, name, namespace=None, sub=None):
        return self.request("GET", path_for(kind, namespace, name, sub))

    def list(self, kind, namespace=None, label_selector=None):
        q = {"labelSelector": label_selector} if label_selector else None
        return self.request("GET", path_for(kind, namespace), query=q).get("items") or []

    def create(self, obj):
        md = obj.get("metadata", {})
        return self.request("POST", path_for(obj["kind"], md.get("namespace")), obj)

    def update(self, obj, sub=None):
        md = obj.get("metadata", {})
        return self.request("PUT", path_for(obj["kind"], md.get("namespace"), md["name"], sub), obj)

    def patch(self, kind, name, patch, namespace=None, sub=None):
        return self.request("PATCH", path_for(kind, namespace, name, sub), patch,
                            content_type="application/merge-patch+json")

    def delete(self, kind, name, namespace=None):
        return self.request("DELETE", path_for(kind, namespace, name))

    def create_or_update(self, obj):
        try:
            return self.create(obj)
        except ApiError as e:
            if e.status != 409:
                raise
        md = obj["metadata"]
        cur = self.get(obj["kind"], md["name"], md.get("namespace"))
        obj = dict(obj)
        obj["metadata"] = dict(md, resourceVersion=cur["metadata"]["resourceVersion"])
        return self.update(obj)

    def raw(self, path):
        return self.request("GET", path)


def _net_text(e):
    if isinstance(e, TimeoutError) or "timed out" in str(e):
        return "net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)"
    if isinstance(e, ssl.SSLError):
        return "remote error: tls: %s" % (e.reason or e)
    return str(e)
