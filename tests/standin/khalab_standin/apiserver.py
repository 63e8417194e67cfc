"""The stand-in kube-apiserver: HTTPS with the certificates from its static pod manifest,
client-certificate and bootstrap-token authentication, a fixed rule set for authorization,
and objects stored in the real etcd named by --etcd-servers, so every control plane sees the
same cluster. Enough REST for kubeadm's stand-in, the stand-in kubelet and controllers, and
Debian's kubectl (`get --raw`, `get nodes` with server-side tables).

Not here: watch, server-side apply, admission beyond NodeRestriction's basics, aggregation,
service accounts (the --service-account-* keys are loaded and must parse, nothing more).
"""

import base64
import datetime
import json
import secrets
import socket
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import apiauth, apistore, daemon, env, etcdclient, version, x509util


class Resource:
    def __init__(self, group, plural, kind, namespaced, subs=(), short=(), singular=None):
        self.group, self.plural, self.kind, self.namespaced = group, plural, kind, namespaced
        self.subs, self.short = subs, list(short)
        self.singular = singular or kind.lower()
        self.version = "v1"

    @property
    def api_version(self):
        return "v1" if not self.group else "%s/v1" % self.group

    def discovery(self):
        out = [{"name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
                "kind": self.kind, "verbs": ["create", "delete", "get", "list", "patch", "update"]}]
        if self.short:
            out[0]["shortNames"] = self.short
        for s in self.subs:
            out.append({"name": "%s/%s" % (self.plural, s), "singularName": "",
                        "namespaced": self.namespaced, "kind": self.kind,
                        "verbs": ["get", "patch", "update"]})
        return out


RESOURCES = [
    Resource("", "namespaces", "Namespace", False, ("status",), ("ns",)),
    Resource("", "nodes", "Node", False, ("status",), ("no",)),
    Resource("", "pods", "Pod", True, ("status",), ("po",)),
    Resource("", "configmaps", "ConfigMap", True, (), ("cm",)),
    Resource("", "secrets", "Secret", True),
    Resource("", "events", "Event", True, (), ("ev",)),
    Resource("", "serviceaccounts", "ServiceAccount", True, (), ("sa",)),
    Resource("coordination.k8s.io", "leases", "Lease", True),
    Resource("certificates.k8s.io", "certificatesigningrequests", "CertificateSigningRequest",
             False, ("approval", "status"), ("csr",)),
    Resource("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "rolebindings", "RoleBinding", True),
    Resource("rbac.authorization.k8s.io", "roles", "Role", True),
]
BY_GROUP = {}
for _r in RESOURCES:
    BY_GROUP.setdefault(_r.group, {})[_r.plural] = _r

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
STATUS_SUBRESOURCE = {"nodes", "pods", "certificatesigningrequests", "namespaces"}


def is_resource_path(path):
    """/api/v1/<...> and /apis/<group>/<version>/<...>; shorter paths are discovery."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        return len(parts) > 2
    if parts[0] == "apis":
        return len(parts) > 3
    return False


def status_obj(code, reason, message, details=None):
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    if details:
        s["details"] = details
    return s


class HTTPError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.body = status_obj(code, reason, message, details)
        self.code = code


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(doc, ops):
    """RFC 6902, the operations kubectl and controllers use (add, remove, replace, test)."""
    import copy
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if cur != op.get("value"):
                raise HTTPError(422, "Invalid", "the server rejected our request due to an error in our request")
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        else:
            raise HTTPError(415, "UnsupportedMediaType", "json patch op %r is not supported" % kind)
    return doc


def parse_selector(text):
    reqs = []
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        if "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append((k.strip(), "!=", v.strip()))
        elif "==" in part or "=" in part:
            k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
            reqs.append((k.strip(), "=", v.strip()))
        elif part.startswith("!"):
            reqs.append((part[1:], "!", None))
        else:
            reqs.append((part, "exists", None))
    return reqs


def matches(values, reqs):
    for k, op, v in reqs:
        if op == "=" and values.get(k) != v:
            return False
        if op == "!=" and values.get(k) == v:
            return False
        if op == "exists" and k not in values:
            return False
        if op == "!" and k in values:
            return False
    return True


def field_values(obj):
    md = obj.get("metadata", {})
    vals = {"metadata.name": md.get("name"), "metadata.namespace": md.get("namespace")}
    spec = obj.get("spec") or {}
    if "nodeName" in spec:
        vals["spec.nodeName"] = spec["nodeName"]
    if "signerName" in spec:
        vals["spec.signerName"] = spec["signerName"]
    return vals


def human_duration(seconds):
    """k8s.io/apimachinery's duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm" % m if s % 60 == 0 else "%dm%ds" % (m, s % 60)
    if m < 180:
        return "%dm" % m
    h = s // 3600
    if h < 8:
        return "%dh" % h if m % 60 == 0 else "%dh%dm" % (h, m % 60)
    if h < 48:
        return "%dh" % h
    if h < 24 * 8:
        return "%dd" % (h // 24) if h % 24 == 0 else "%dd%dh" % (h // 24, h % 24)
    if h < 24 * 365 * 2:
        return "%dd" % (h // 24)
    if h < 24 * 365 * 8:
        dy = (h // 24) % 365
        return "%dy" % (h // 24 // 365) if dy == 0 else "%dy%dd" % (h // 24 // 365, dy)
    return "%dy" % (h // 24 // 365)


def age(obj):
    ts = obj.get("metadata", {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return human_duration((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())


def _node_row(o):
    conds = {c.get("type"): c.get("status") for c in (o.get("status") or {}).get("conditions") or []}
    status = {"True": "Ready", "False": "NotReady"}.get(conds.get("Ready"), "NotReady" if "Ready" not in conds else "Unknown")
    if (o.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    roles = sorted(k[len("node-role.kubernetes.io/"):] for k in (o["metadata"].get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    ver = ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return [o["metadata"]["name"], status, ",".join(roles) or "<none>", age(o), ver]


def _pod_row(o):
    st = o.get("status") or {}
    cs = st.get("containerStatuses") or []
    ready = sum(1 for c in cs if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in cs)
    total = len((o.get("spec") or {}).get("containers") or []) or len(cs)
    return [o["metadata"]["name"], "%d/%d" % (ready, total), st.get("phase", "Unknown"), restarts, age(o)]


def _lease_row(o):
    return [o["metadata"]["name"], (o.get("spec") or {}).get("holderIdentity", ""), age(o)]


def _csr_row(o):
    spec, st = o.get("spec") or {}, o.get("status") or {}
    conds = [c.get("type") for c in st.get("conditions") or []]
    cond = ",".join(conds) or "Pending"
    if st.get("certificate"):
        cond += ",Issued"
    return [o["metadata"]["name"], age(o), spec.get("signerName", ""), spec.get("username", ""), cond]


def _col(name, typ="string", fmt=""):
    return {"name": name, "type": typ, "format": fmt, "description": "", "priority": 0}


TABLES = {
    "nodes": ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"), _col("Version")], _node_row),
    "pods": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts", "integer"), _col("Age")], _pod_row),
    "leases": ([_col("Name", fmt="name"), _col("Holder"), _col("Age")], _lease_row),
    "certificatesigningrequests": ([_col("Name", fmt="name"), _col("Age"), _col("SignerName"),
                                    _col("Requestor"), _col("Condition")], _csr_row),
}


def to_table(resource, items, rv, table_version):
    cols, row = TABLES.get(resource, ([_col("Name", fmt="name"), _col("Age")],
                                     lambda o: [o["metadata"]["name"], age(o)]))
    rows = []
    for o in items:
        rows.append({"cells": row(o), "object": {
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/" + table_version,
            "metadata": o.get("metadata", {})}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/" + table_version,
            "metadata": {"resourceVersion": rv}, "columnDefinitions": cols, "rows": rows}


class APIServer:
    def __init__(self, flags):
        self.flags = flags
        etcd_servers = [s for s in flags.get("etcd-servers", "").split(",") if s]
        self.etcd = etcdclient.Client(etcd_servers, env.host_path(flags["etcd-cafile"]),
                                      env.host_path(flags["etcd-certfile"]),
                                      env.host_path(flags["etcd-keyfile"]))
        self.store = apistore.Store(self.etcd)
        self.authz = apiauth.Authorizer(self.store)
        self.advertise = flags.get("advertise-address", "")
        self.port = int(flags.get("secure-port", "6443"))
        self._namespaces_ready = False

    def ensure_namespaces(self):
        if self._namespaces_ready:
            return
        for ns in SYSTEM_NAMESPACES:
            try:
                self.store.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": ns},
                                                       "spec": {"finalizers": ["kubernetes"]},
                                                       "status": {"phase": "Active"}})
            except apistore.StoreError as e:
                if e.status != 409:
                    return
        self._namespaces_ready = True

    def version_info(self):
        v = version.current()
        return {"major": str(v.major), "minor": str(v.minor), "gitVersion": v.text,
                "gitCommit": "khalab-standin-not-a-real-kube-apiserver", "gitTreeState": "clean",
                "buildDate": "1970-01-01T00:00:00Z", "goVersion": "go1.22.0",
                "compiler": "gc", "platform": "linux/amd64"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "khalab-standin-kube-apiserver"
    api = None  # set by serve()

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.handle_method("GET")

    def do_POST(self):
        self.handle_method("POST")

    def do_PUT(self):
        self.handle_method("PUT")

    def do_PATCH(self):
        self.handle_method("PATCH")

    def do_DELETE(self):
        self.handle_method("DELETE")

    def send_json(self, code, obj, content_type="application/json"):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_text(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        raw = self._raw_body
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise HTTPError(400, "BadRequest", "the body of the request was in an unknown format") from None

    def authenticate(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return apiauth.from_bearer(self.api.store, auth)
        user = apiauth.from_peer_cert(self.connection.getpeercert())
        return user or apiauth.ANONYMOUS

    def handle_method(self, method):
        # Every request's body is read before anything answers, whether the route wants it or
        # not: on a kept-alive connection an unread body (a DELETE's DeleteOptions) would be
        # parsed as the next request line, and the client would get an HTTP/0.9-style error.
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        self._raw_body = self.rfile.read(n) if n > 0 else b""
        try:
            u = urllib.parse.urlsplit(self.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query).items()}
            try:
                user = self.authenticate()
            except apiauth.Unauthorized:
                raise HTTPError(401, "Unauthorized", "Unauthorized") from None
            self.route(method, u.path.rstrip("/") or "/", query, user)
        except HTTPError as e:
            self.send_json(e.code, e.body)
        except apistore.StoreError as e:
            self.send_json(e.status, status_obj(e.status, e.reason, e.message, e.details))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bad request never takes the server down
            sys.stderr.write("kube-apiserver stand-in: %s %s: %r\n" % (method, self.path, e))
            try:
                self.send_json(500, status_obj(500, "InternalError", "internal error: %s" % e))
            except OSError:
                pass

    def route(self, method, path, query, user):
        if is_resource_path(path):
            return self.resource_request(method, path, query, user)
        if not self.api.authz.allowed_path(user, path):
            raise HTTPError(403, "Forbidden", 'forbidden: User "%s" cannot %s path "%s"' % (
                user.name, method.lower(), path))
        return self.non_resource(path, query)

    def non_resource(self, path, query):
        api = self.api
        if path in ("/healthz", "/readyz", "/livez") or path.startswith(("/healthz/", "/readyz/", "/livez/")):
            problem = None if path.startswith("/livez") else api.store.healthy()
            if problem is None:
                api.ensure_namespaces()
                if "verbose" in query:
                    return self.send_text(200, "[+]ping ok\n[+]etcd ok\n%s check passed\n" % path.strip("/"))
                return self.send_text(200, "ok")
            return self.send_text(500, "[+]ping ok\n[-]etcd failed: reason withheld\n"
                                  "%s check failed\n" % path.strip("/").split("/")[0])
        if path in ("/version",):
            return self.send_json(200, api.version_info())
        if path == "/api":
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                        "serverAddressByClientCIDRs": [{
                                            "clientCIDR": "0.0.0.0/0",
                                            "serverAddress": "%s:%d" % (api.advertise, api.port)}]})
        if path == "/apis":
            groups = []
            for g in sorted(k for k in BY_GROUP if k):
                gv = {"groupVersion": "%s/v1" % g, "version": "v1"}
                groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path == "/api/v1":
            return self.send_json(200, self.resource_list(""))
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "apis" and parts[2] in BY_GROUP:
            gv = {"groupVersion": "%s/v1" % parts[2], "version": "v1"}
            return self.send_json(200, {"kind": "APIGroup", "apiVersion": "v1", "name": parts[2],
                                        "versions": [gv], "preferredVersion": gv})
        if len(parts) == 4 and parts[1] == "apis" and parts[2] in BY_GROUP and parts[3] == "v1":
            return self.send_json(200, self.resource_list(parts[2]))
        raise HTTPError(404, "NotFound", "the server could not find the requested resource")

    def resource_list(self, group):
        resources = []
        for r in BY_GROUP[group].values():
            resources.extend(r.discovery())
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "v1" if not group else "%s/v1" % group, "resources": resources}

    # Resource paths
    def parse_resource_path(self, path):
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            group, rest = "", parts[2:] if len(parts) > 1 and parts[1] == "v1" else None
        else:
            group = parts[1] if len(parts) > 2 else None
            rest = parts[3:] if len(parts) > 2 and parts[2] == "v1" else None
        if rest is None or group not in BY_GROUP or not rest:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        table = BY_GROUP[group]
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in table and table[rest[2]].namespaced:
            namespace, rest = rest[1], rest[2:]
        res = table.get(rest[0])
        if res is None or len(rest) > 3:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in res.subs:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        if res.namespaced and name is not None and namespace is None:
            raise HTTPError(404, "NotFound", "the server could not find the requested resource")
        return res, namespace, name, sub

    def resource_request(self, method, path, query, user):
        res, namespace, name, sub = self.parse_resource_path(path)
        if query.get("watch") in ("1", "true"):
            raise HTTPError(405, "MethodNotAllowed",
                            "watch is not supported by the khalab stand-in kube-apiserver")
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete" if name else "deletecollection"}[method]
        body = self.read_body() if method in ("POST", "PUT", "PATCH") else None
        check_name = name or (body or {}).get("metadata", {}).get("name")
        if not self.api.authz.allowed(user, verb, res.group, res.plural, sub, namespace, check_name):
            raise HTTPError(403, "Forbidden", apiauth.forbidden_message(
                user, verb, res.group, res.plural, sub, namespace, name),
                {"name": name or "", "group": res.group, "kind": res.plural})
        store, api = self.api.store, self.api
        api.ensure_namespaces()
        if res.plural == "clusterrolebindings" and verb != "get" and verb != "list":
            api.authz.forget()
        if verb == "list":
            items, rv = store.list(res.plural, namespace)
            items = self.filter(items, query)
            return self.respond_list(res, items, rv)
        if verb == "get":
            return self.respond_object(res, store.get(res.plural, namespace, name, res.group))
        if verb == "create":
            if name:
                raise HTTPError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return self.send_json(201, self.create(res, namespace, body or {}, user))
        if verb == "update":
            return self.send_json(200, self.update(res, namespace, name, sub, body or {}, user))
        if verb == "patch":
            return self.send_json(200, self.patch(res, namespace, name, sub, body, user))
        if verb == "delete":
            return self.send_json(200, store.delete(res.plural, namespace, name, res.group))
        raise HTTPError(405, "MethodNotAllowed", "deletecollection is not supported by the stand-in")

    def filter(self, items, query):
        labels = parse_selector(query.get("labelSelector"))
        fields = parse_selector(query.get("fieldSelector"))
        return [o for o in items if matches(o.get("metadata", {}).get("labels") or {}, labels)
                and matches(field_values(o), fields)]

    def table_version(self):
        accept = self.headers.get("Accept", "")
        for part in accept.split(","):
            if "as=Table" in part:
                return "v1beta1" if "v=v1beta1" in part else "v1"
        return None

    def respond_list(self, res, items, rv):
        tv = self.table_version()
        if tv:
            return self.send_json(200, to_table(res.plural, items, rv, tv))
        for o in items:
            o.setdefault("apiVersion", res.api_version)
            o.setdefault("kind", res.kind)
        return self.send_json(200, {"kind": res.kind + "List", "apiVersion": res.api_version,
                                    "metadata": {"resourceVersion": rv}, "items": items})

    def respond_object(self, res, obj):
        tv = self.table_version()
        if tv:
            return self.send_json(200, to_table(res.plural, [obj], obj["metadata"].get("resourceVersion", ""), tv))
        return self.send_json(200, obj)

    def create(self, res, namespace, body, user):
        md = body.setdefault("metadata", {})
        if not md.get("name"):
            if not md.get("generateName"):
                raise HTTPError(422, "Invalid", "%s.%s \"\" is invalid: metadata.name: Required value: "
                                "name or generateName is required" % (res.kind, res.group or "core"))
            md["name"] = md["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        if md.get("namespace") and namespace and md["namespace"] != namespace:
            raise HTTPError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        body["apiVersion"], body["kind"] = res.api_version, res.kind
        if res.namespaced:
            try:
                self.api.store.get("namespaces", None, namespace)
            except apistore.StoreError as e:
                if e.status == 404:
                    raise HTTPError(404, "NotFound", 'namespaces "%s" not found' % namespace,
                                    {"name": namespace, "kind": "namespaces"}) from None
                raise
        if res.plural == "nodes" and user.name.startswith("system:node:") \
                and md["name"] != user.name[len("system:node:"):] \
                and "system:masters" not in user.groups:
            raise HTTPError(403, "Forbidden", 'nodes "%s" is forbidden: node "%s" is not allowed to '
                            "modify node %s" % (md["name"], user.name[len("system:node:"):], md["name"]))
        if res.plural == "certificatesigningrequests":
            self.admit_csr(body, user)
        return self.api.store.create(res.plural, namespace if res.namespaced else None, body, res.group)

    def admit_csr(self, body, user):
        spec = body.setdefault("spec", {})
        try:
            x509util.load_csr_pem(base64.b64decode(spec.get("request", "")))
        except (ValueError, TypeError):
            raise HTTPError(422, "Invalid", 'CertificateSigningRequest.certificates.k8s.io "%s" is invalid: '
                            "spec.request: Invalid value: []byte{...}: PEM block type must be "
                            "CERTIFICATE REQUEST" % body["metadata"]["name"]) from None
        if not spec.get("signerName"):
            raise HTTPError(422, "Invalid", "spec.signerName: Required value")
        spec["username"], spec["groups"] = user.name, user.groups
        body["status"] = {}

    def update(self, res, namespace, name, sub, body, user):
        store = self.api.store
        if (body.get("metadata") or {}).get("name", name) != name:
            raise HTTPError(400, "BadRequest", "the name of the object (%s) does not match the name on the URL (%s)"
                            % (body["metadata"].get("name"), name))
        ns = namespace if res.namespaced else None
        body["apiVersion"], body["kind"] = res.api_version, res.kind
        if sub is not None or res.plural in STATUS_SUBRESOURCE:
            cur = store.get(res.plural, ns, name, res.group)
            body = self.merge_subresource(res, sub, cur, body)
        return store.update(res.plural, ns, name, body, res.group)

    @staticmethod
    def merge_subresource(res, sub, cur, body):
        """Writes to the main resource keep the status; writes to /status keep the rest;
        /approval changes only the conditions."""
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if sub is None:
            new = dict(body)
            new["status"] = cur.get("status", {})
            if res.plural == "certificatesigningrequests":
                new["spec"] = cur.get("spec", {})
        elif sub == "approval":
            new = dict(cur)
            new["status"] = dict(cur.get("status") or {},
                                 conditions=(body.get("status") or {}).get("conditions") or [])
        else:
            new = dict(cur)
            new["status"] = body.get("status", {})
        new["metadata"] = dict(new.get("metadata") if sub else body.get("metadata") or {})
        if rv:
            new["metadata"]["resourceVersion"] = rv
        else:
            new["metadata"].pop("resourceVersion", None)
        return new

    def patch(self, res, namespace, name, sub, patch, user):
        store = self.api.store
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        ns = namespace if res.namespaced else None
        for _ in range(10):
            cur = store.get(res.plural, ns, name, res.group)
            if ctype == "application/json-patch+json":
                new = json_patch(cur, patch or [])
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                new = merge_patch(cur, patch or {})
            else:
                raise HTTPError(415, "UnsupportedMediaType",
                                "the body of the request was in an unknown format - accepted media "
                                "types include: application/json-patch+json, "
                                "application/merge-patch+json, application/strategic-merge-patch+json")
            new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            if sub is not None or res.plural in STATUS_SUBRESOURCE:
                new = self.merge_subresource(res, sub, cur, new)
            try:
                return store.update(res.plural, ns, name, new, res.group)
            except apistore.StoreError as e:
                if e.status != 409:
                    raise
        raise apistore.conflict(res.plural, name, res.group)


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, ctx, family):
        self.address_family = family
        self.ctx = ctx
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's thread, so a slow client blocks no one.
        request.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass


def server_context(flags):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(env.host_path(flags["tls-cert-file"]), env.host_path(flags["tls-private-key-file"]))
    if flags.get("client-ca-file"):
        ctx.load_verify_locations(env.host_path(flags["client-ca-file"]))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


REQUIRED = ("etcd-servers", "etcd-cafile", "etcd-certfile", "etcd-keyfile", "tls-cert-file",
            "tls-private-key-file", "client-ca-file")


def check_service_account_keys(flags):
    """kube-apiserver refuses to start when its service-account keys do not parse."""
    for f in [p for p in flags.get("service-account-key-file", "").split(",") if p]:
        data = x509util.read_bytes(env.host_path(f))
        try:
            x509util.load_public_key_pem(data)
        except ValueError:
            x509util.load_key_pem(data)
    if flags.get("service-account-signing-key-file"):
        x509util.load_key(env.host_path(flags["service-account-signing-key-file"]))


def main(argv):
    flags = daemon.parse_flags(argv)
    missing = [f for f in REQUIRED if not flags.get(f)]
    if missing:
        sys.stderr.write("kube-apiserver stand-in: missing required flags: --%s\n" % ", --".join(missing))
        return 1
    try:
        check_service_account_keys(flags)
        ctx = server_context(flags)
        api = APIServer(flags)
    except (OSError, ValueError, ssl.SSLError, x509util.CertError) as e:
        sys.stderr.write("kube-apiserver stand-in: failed to start: %s\n" % e)
        return 1
    bind = flags.get("bind-address", "0.0.0.0")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    Handler.api = api
    try:
        server = TLSServer((bind, api.port), Handler, ctx, family)
    except OSError as e:
        sys.stderr.write("kube-apiserver stand-in: failed to listen on %s:%d: %s\n" % (bind, api.port, e))
        return 1
    daemon.stop_on_signals(server.shutdown)
    sys.stderr.write("kube-apiserver stand-in: serving on %s:%d, etcd %s\n" % (
        bind, api.port, flags["etcd-servers"]))
    server.serve_forever(poll_interval=0.5)
    return 0
