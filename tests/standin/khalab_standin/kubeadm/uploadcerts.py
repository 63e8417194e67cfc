"""`--upload-certs` and the join's download-certs (k/k phases/copycerts): the shared CA and
service-account files, each AES-GCM encrypted with the certificate key (nonce first), in
Secret kube-system/kubeadm-certs, owned by a bootstrap token that expires in 2 hours (the
controller-manager's garbage collector removes the Secret with the token)."""

import base64
import datetime
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import env, kubeclient, tokens, x509util
from ..out import KubeadmError

FILES = ["ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub",
         "etcd/ca.crt", "etcd/ca.key"]
SECRET = "kubeadm-certs"


def _secret_key(name):
    return name.replace("/", "-")


def encrypt(data, key_hex):
    nonce = os.urandom(12)
    return nonce + AESGCM(bytes.fromhex(key_hex)).encrypt(nonce, data, None)


def decrypt(blob, key_hex):
    return AESGCM(bytes.fromhex(key_hex)).decrypt(blob[:12], blob[12:], None)


def upload(client, cluster, key_hex):
    d = cluster["certificatesDir"]
    files = FILES if cluster["etcd"].get("local") is not None else FILES[:6]
    data = {}
    for f in files:
        p = env.host_path(os.path.join(d, f))
        if os.path.exists(p):
            with open(p, "rb") as fh:
                data[_secret_key(f)] = base64.b64encode(encrypt(fh.read(), key_hex)).decode()
    token = tokens.generate()
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    owner = client.create_or_update(tokens.secret_object(
        token, expires, usages=(), groups=(), description="Proxy for managing TTL for the kubeadm-certs secret"))
    client.create_or_update({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": "kube-system", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Secret", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "blockOwnerDeletion": True, "controller": True}]},
        "data": data})


def download(client, cluster, key_hex):
    try:
        secret = client.get("Secret", SECRET, "kube-system")
    except kubeclient.ApiError as e:
        if e.not_found:
            raise KubeadmError('error downloading certs: error downloading the secret: Secret "kubeadm-certs" was '
                               'not found in the "kube-system" Namespace. This Secret might have expired. Please, '
                               'run `kubeadm init phase upload-certs --upload-certs` on a control plane to generate '
                               'a new one') from None
        raise KubeadmError("error downloading certs: error downloading the secret: %s" % e.message) from None
    d = cluster["certificatesDir"]
    for f in FILES:
        blob = (secret.get("data") or {}).get(_secret_key(f))
        if blob is None:
            continue
        try:
            plain = decrypt(base64.b64decode(blob), key_hex)
        except (InvalidTag, ValueError):
            raise KubeadmError("error downloading certs: error decoding secret data with provided key: "
                               "cipher: message authentication failed") from None
        x509util.write_atomic(env.host_path(os.path.join(d, f)), plain,
                              0o600 if f.endswith(".key") else 0o644)
