"""A small client of etcd v3's JSON gateway (`/v3/...` on the client URL), over mTLS.

etcd 3.4 serves its gRPC API as JSON over HTTPS on the same port, so neither the API server
nor kubeadm needs a gRPC library: keys and values are base64, 64-bit numbers are strings.
"""

import base64
import http.client
import json
import ssl
import urllib.parse


class EtcdError(Exception):
    def __init__(self, message, code=None):
        super().__init__(message)
        self.message, self.code = message, code


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode(text or "")


def prefix_end(prefix):
    """The range_end that selects every key starting with `prefix`."""
    b = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


class Client:
    def __init__(self, endpoints, ca_file, cert_file, key_file, timeout=2.0):
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.load_verify_locations(ca_file)
        self.ctx.load_cert_chain(cert_file, key_file)

    def call_endpoint(self, endpoint, path, body):
        u = urllib.parse.urlsplit(endpoint)
        conn = http.client.HTTPSConnection(u.hostname, u.port or 2379, context=self.ctx,
                                           timeout=self.timeout)
        try:
            conn.request("POST", "/v3/" + path, body=json.dumps(body),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise EtcdError(_dial_error(u, e)) from None
        finally:
            conn.close()
        try:
            obj = json.loads(data or b"{}")
        except ValueError:
            raise EtcdError("etcd answered %d with non-JSON: %r" % (resp.status, data[:200])) from None
        if resp.status != 200:
            raise EtcdError(obj.get("error") or obj.get("message") or "HTTP %d" % resp.status,
                            obj.get("code"))
        return obj

    def call(self, path, body):
        last = None
        for ep in self.endpoints:
            try:
                return self.call_endpoint(ep, path, body)
            except EtcdError as e:
                last = e
                if e.code is not None and "not supported for learner" not in e.message:
                    raise
        raise last or EtcdError("no etcd endpoints")

    # KV
    def get(self, key):
        r = self.call("kv/range", {"key": b64(key)})
        kvs = r.get("kvs") or []
        return kvs[0] if kvs else None

    def range_prefix(self, prefix, limit=0):
        r = self.call("kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix)),
                                   "limit": limit})
        return r.get("kvs") or [], int(r.get("header", {}).get("revision", 0))

    def put(self, key, value):
        return self.call("kv/put", {"key": b64(key), "value": b64(value)})

    def delete(self, key):
        r = self.call("kv/deleterange", {"key": b64(key), "prev_kv": True})
        return (r.get("prev_kvs") or [None])[0]

    def txn_put_if(self, key, value, mod_revision=None, create=False):
        """Put if the key's mod revision is `mod_revision` (or it does not exist, `create`)."""
        if create:
            cmp = {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        else:
            cmp = {"key": b64(key), "target": "MOD", "result": "EQUAL",
                   "mod_revision": str(mod_revision)}
        r = self.call("kv/txn", {"compare": [cmp],
                                 "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
                                 "failure": [{"request_range": {"key": b64(key)}}]})
        return bool(r.get("succeeded")), int(r.get("header", {}).get("revision", 0))

    def txn_delete_if(self, key, mod_revision):
        cmp = {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
        r = self.call("kv/txn", {"compare": [cmp],
                                 "success": [{"request_delete_range": {"key": b64(key)}}]})
        return bool(r.get("succeeded"))

    # Cluster
    def member_list(self):
        return self.call("cluster/member/list", {}).get("members") or []

    def member_add(self, peer_url, learner):
        return self.call("cluster/member/add", {"peerURLs": [peer_url], "isLearner": learner})

    def member_remove(self, member_id):
        return self.call("cluster/member/remove", {"ID": str(member_id)})

    def member_promote(self, member_id):
        return self.call("cluster/member/promote", {"ID": str(member_id)})

    def status(self, endpoint):
        return self.call_endpoint(endpoint, "maintenance/status", {})


def _dial_error(u, e):
    host = "%s:%s" % (u.hostname, u.port or 2379)
    if isinstance(e, ConnectionRefusedError):
        return "dial tcp %s: connect: connection refused" % host
    if isinstance(e, TimeoutError) or "timed out" in str(e):
        return "context deadline exceeded"
    if isinstance(e, ssl.SSLError):
        return "tls: %s" % (e.reason or e)
    return "dial tcp %s: %s" % (host, e)
