"""Bootstrap tokens (k8s.io/cluster-bootstrap/token/api): format, Secrets, expiry; and Go
durations, which kubeadm uses for TTLs and timeouts."""

import base64
import datetime
import re
import secrets as _secrets

TOKEN_RE = re.compile(r"\A([a-z0-9]{6})\.([a-z0-9]{16})\Z")
TOKEN_ID_RE = re.compile(r"\A([a-z0-9]{6})\Z")
SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
DEFAULT_GROUP = "system:bootstrappers:kubeadm:default-node-token"
BOOTSTRAPPERS = "system:bootstrappers"
KNOWN_USAGES = ("signing", "authentication")
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def generate():
    pick = lambda n: "".join(_secrets.choice(_ALPHABET) for _ in range(n))
    return "%s.%s" % (pick(6), pick(16))


def split(token):
    m = TOKEN_RE.match(token or "")
    return (m.group(1), m.group(2)) if m else None


def format_error(token):
    return 'the bootstrap token "%s" was not of the form "%s"' % (
        token, "\\\\A([a-z0-9]{6})\\\\.([a-z0-9]{16})\\\\z")


def rfc3339(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _b64(s):
    return base64.b64encode(s.encode()).decode()


def secret_object(token, expires=None, usages=KNOWN_USAGES, groups=(DEFAULT_GROUP,),
                  description=""):
    token_id, token_secret = split(token)
    data = {"token-id": _b64(token_id), "token-secret": _b64(token_secret)}
    if description:
        data["description"] = _b64(description)
    if expires is not None:
        data["expiration"] = _b64(rfc3339(expires))
    for u in usages:
        data["usage-bootstrap-%s" % u] = _b64("true")
    if groups:
        data["auth-extra-groups"] = _b64(",".join(groups))
    return {
        "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
        "metadata": {"name": SECRET_PREFIX + token_id, "namespace": "kube-system"},
        "data": data,
    }


class TokenInfo:
    def __init__(self, token_id, token_secret, expires, usages, groups, description):
        self.id, self.secret, self.expires = token_id, token_secret, expires
        self.usages, self.groups, self.description = usages, groups, description

    def expired(self, now=None):
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return self.expires is not None and now >= self.expires


def from_secret(obj):
    """Parse a bootstrap-token Secret; None when it is not a well-formed one."""
    if obj.get("type") != SECRET_TYPE:
        return None
    data = {k: base64.b64decode(v).decode(errors="replace")
            for k, v in (obj.get("data") or {}).items()}
    token_id, token_secret = data.get("token-id", ""), data.get("token-secret", "")
    name = (obj.get("metadata") or {}).get("name", "")
    if name != SECRET_PREFIX + token_id or not TOKEN_RE.match("%s.%s" % (token_id, token_secret)):
        return None
    expires = None
    if data.get("expiration"):
        try:
            expires = parse_rfc3339(data["expiration"])
        except ValueError:
            return None
    usages = {u for u in KNOWN_USAGES if data.get("usage-bootstrap-%s" % u) == "true"}
    groups = [g for g in data.get("auth-extra-groups", "").split(",") if g]
    return TokenInfo(token_id, token_secret, expires, usages, groups, data.get("description", ""))


_DUR_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(text):
    """Go's time.ParseDuration, in seconds."""
    s = str(text).strip()
    if s in ("0", ""):
        return 0.0
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    pos, total = 0, 0.0
    for m in _DUR_RE.finditer(s):
        if m.start() != pos:
            raise ValueError('time: invalid duration "%s"' % text)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError('time: invalid duration "%s"' % text)
    return sign * total


def format_duration(seconds):
    """Go's time.Duration.String for whole or fractional seconds."""
    if seconds == 0:
        return "0s"
    neg, seconds = seconds < 0, abs(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if seconds < 1e-3:
        out = "%gµs" % round(seconds * 1e6, 3)
    elif seconds < 1:
        out = "%gms" % round(seconds * 1000, 6)
    else:
        s_text = ("%.9f" % s).rstrip("0").rstrip(".")
        out = ("%dh%dm%ss" % (h, m, s_text)) if h else (("%dm%ss" % (m, s_text)) if m else "%ss" % s_text)
    return ("-" if neg else "") + out
