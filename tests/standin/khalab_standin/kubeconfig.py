"""kubeconfig files (client-go's clientcmd layout): build, load, and turn into TLS settings."""

import base64
import os
import ssl
import tempfile

from . import env, yamlio


def _b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def build(cluster_name, server, ca_pem, user_name, cert_pem=None, key_pem=None, token=None,
          cert_file=None, key_file=None):
    user = {}
    if cert_pem is not None:
        user["client-certificate-data"] = _b64(cert_pem)
        user["client-key-data"] = _b64(key_pem)
    if cert_file is not None:
        user["client-certificate"] = cert_file
        user["client-key"] = key_file
    if token is not None:
        user["token"] = token
    ctx = "%s@%s" % (user_name, cluster_name)
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": cluster_name, "cluster": {
            "certificate-authority-data": _b64(ca_pem), "server": server}}],
        "contexts": [{"name": ctx, "context": {"cluster": cluster_name, "user": user_name}}],
        "current-context": ctx,
        "users": [{"name": user_name, "user": user}],
    }


def cluster_info_kubeconfig(server, ca_data_b64):
    """What kubeadm writes into kube-public/cluster-info: one unnamed cluster, nothing else
    (clientcmd.Write of a Config with only Clusters[""])."""
    return ("apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: %s\n"
            "    server: %s\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\n"
            "preferences: {}\nusers: null\n" % (ca_data_b64, server))


def dump(kc):
    return yamlio.dump(kc)


def write(path, kc, mode=0o600):
    from .x509util import write_atomic
    write_atomic(env.host_path(path), dump(kc), mode)


class KubeconfigError(Exception):
    pass


def _named(items, name):
    for it in items or []:
        if it.get("name") == name:
            return it
    return None


class Kubeconfig:
    def __init__(self, data, path=None):
        self.data, self.path = data, path
        if not isinstance(data, dict):
            raise KubeconfigError("invalid kubeconfig %s" % path)
        ctx_name = data.get("current-context") or ""
        ctx = _named(data.get("contexts"), ctx_name)
        clusters = data.get("clusters") or []
        if ctx is not None:
            cluster = _named(clusters, (ctx.get("context") or {}).get("cluster"))
            user = _named(data.get("users"), (ctx.get("context") or {}).get("user"))
        else:
            cluster = clusters[0] if len(clusters) == 1 else None
            user = None
        if cluster is None:
            raise KubeconfigError("no cluster for the current context in %s" % (path or "kubeconfig"))
        self.cluster_name = cluster.get("name", "")
        self.cluster = cluster.get("cluster") or {}
        self.user = (user or {}).get("user") or {}
        self.user_name = (user or {}).get("name", "")

    @property
    def server(self):
        return self.cluster.get("server", "")

    def _data(self, section, key):
        """`<key>-data` (base64) or the file named by `<key>`, as bytes; None if neither."""
        if section.get(key + "-data"):
            return base64.b64decode(section[key + "-data"])
        if section.get(key):
            with open(env.host_path(section[key]), "rb") as f:
                return f.read()
        return None

    def ca_pem(self):
        return self._data(self.cluster, "certificate-authority") or b""

    def client_cert_pem(self):
        return self._data(self.user, "client-certificate")

    def client_key_pem(self):
        return self._data(self.user, "client-key")

    @property
    def token(self):
        return self.user.get("token")

    def ssl_context(self, insecure=False):
        return client_ssl_context(None if insecure else self.ca_pem(), self.client_cert_pem(),
                                  self.client_key_pem())


def parse(text, path=None):
    try:
        data = yamlio.load_plain(text)
    except yamlio.YAMLError as e:
        raise KubeconfigError("failed to load kubeconfig %s: %s" % (path, e)) from None
    return Kubeconfig(data, path)


def load(path):
    try:
        with open(env.host_path(path), encoding="utf-8") as f:
            return parse(f.read(), path)
    except FileNotFoundError:
        raise KubeconfigError("failed to load admin kubeconfig: open %s: no such file or directory"
                              % path) from None


def client_ssl_context(ca_pem, cert_pem=None, key_pem=None):
    """An SSL client context; CA None means no verification (kubeadm's insecure discovery)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_pem is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem)
    if cert_pem:
        load_client_cert(ctx, cert_pem, key_pem)
    return ctx


def load_client_cert(ctx, cert_pem, key_pem):
    # ssl only loads keys from files: write both to a private temporary file, load, delete.
    fd, path = tempfile.mkstemp(prefix="khalab-standin-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem if cert_pem.endswith(b"\n") else cert_pem + b"\n")
            f.write(key_pem or b"")
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
