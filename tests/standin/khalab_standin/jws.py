"""Detached JWS with HS256, as k8s.io/cluster-bootstrap/token/jws: the bootstrap signer signs
the cluster-info kubeconfig with each token's secret, `kid` = token id, payload detached."""

import base64
import hashlib
import hmac
import json


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compute_detached(content, token_id, token_secret):
    header = _b64(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":"),
                             sort_keys=True).encode())
    payload = _b64(content.encode() if isinstance(content, str) else content)
    sig = hmac.new(token_secret.encode(), ("%s.%s" % (header, payload)).encode(),
                   hashlib.sha256).digest()
    return "%s..%s" % (header, _b64(sig))


def detached_is_valid(detached, content, token_id, token_secret):
    """cluster-bootstrap's DetachedTokenIsValid."""
    parts = detached.split(".")
    if len(parts) != 3 or parts[1] != "":
        return False
    try:
        header = json.loads(_unb64(parts[0]))
        sig = _unb64(parts[2])
    except (ValueError, TypeError):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or header.get("kid") != token_id:
        return False
    payload = _b64(content.encode() if isinstance(content, str) else content)
    expected = hmac.new(token_secret.encode(), ("%s.%s" % (parts[0], payload)).encode(),
                        hashlib.sha256).digest()
    return hmac.compare_digest(sig, expected)
