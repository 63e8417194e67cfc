"""`kubeadm certs check-expiration` and `kubeadm certs renew` (k/k cmd/kubeadm/app/cmd/certs.go,
phases/certs/renewal)."""

import base64
import datetime
import json
import os

from .. import env, kubeconfig, out, tokens, x509util, yamlio
from ..out import KubeadmError
from . import common, config, pki

KUBECONFIGS = {"admin.conf": "certificate embedded in the kubeconfig file for the admin to use and for kubeadm itself",
               "super-admin.conf": "certificate embedded in the kubeconfig file for the super-admin",
               "controller-manager.conf": "certificate embedded in the kubeconfig file for the controller manager to use",
               "scheduler.conf": "certificate embedded in the kubeconfig file for the scheduler manager to use"}
LONG_NAMES = {"apiserver": "certificate for serving the Kubernetes API",
              "apiserver-etcd-client": "certificate the apiserver uses to access etcd",
              "apiserver-kubelet-client": "certificate for the API server to connect to kubelet",
              "etcd-healthcheck-client": "certificate for liveness probes to healthcheck etcd",
              "etcd-peer": "certificate for etcd nodes to communicate with each other",
              "etcd-server": "certificate for serving etcd",
              "front-proxy-client": "certificate for the front proxy client"}
LONG_NAMES.update(KUBECONFIGS)


def short_human_duration(seconds):
    """k8s.io/apimachinery duration.ShortHumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm" % (s // 60)
    if s < 86400:
        return "%dh" % (s // 3600)
    if s < 86400 * 365:
        return "%dd" % (s // 86400)
    return "%dy" % (s // (86400 * 365))


def tabwrite(rows, minwidth=10, padding=3):
    """text/tabwriter with kubeadm's settings (minwidth 10, tabwidth 4, padding 3)."""
    widths = [0] * max(len(r) for r in rows)
    for r in rows:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(c) + padding, minwidth)
    return "\n".join("".join(c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)).rstrip()
                     for r in rows)


def load_cluster(opts):
    """The ClusterConfiguration from the cluster (admin.conf), else from --config or defaults."""
    if opts.get("config"):
        return config.load_init(opts["config"]).cluster
    try:
        client = common.api_client(opts.get("kubeconfig") or "/etc/kubernetes/admin.conf", timeout=5)
        cm = client.get("ConfigMap", "kubeadm-config", "kube-system")
        return config.cluster_from_configmap(cm["data"]["ClusterConfiguration"])
    except Exception as e:  # kubeadm falls back to the defaults with a warning
        out.warn("[certs] WARNING: unable to read the kubeadm-config ConfigMap from the cluster, using defaults: %s"
                 % getattr(e, "message", e), "certs.go:300")
        return config.default_cluster({})


def cert_for(cluster, name):
    d = cluster["certificatesDir"]
    if name in KUBECONFIGS:
        path = "/etc/kubernetes/" + name
        if not os.path.exists(env.host_path(path)):
            return None, "ca", True
        pem = kubeconfig.load(path).client_cert_pem()
        return (x509util.certs_from_pem(pem)[0] if pem else None), "ca", False
    base, ca = pki.CERT_FILES[name]
    p = env.host_path(os.path.join(d, base + ".crt"))
    if not os.path.exists(p):
        return None, ca, True
    return x509util.load_cert(p), ca, False


def external(cluster, base):
    d = cluster["certificatesDir"]
    return os.path.exists(env.host_path(os.path.join(d, base + ".crt"))) and \
        not os.path.exists(env.host_path(os.path.join(d, base + ".key")))


def check_expiration(opts):
    cluster = load_cluster(opts)
    now = datetime.datetime.utcnow()
    certs, cas = [], []
    for name in pki.RENEWABLE:
        cert, ca, missing = cert_for(cluster, name)
        if missing:
            continue
        certs.append((name, cert, ca))
    for name, base in sorted(pki.CA_FILES.items()):
        p = env.host_path(os.path.join(cluster["certificatesDir"], base + ".crt"))
        if os.path.exists(p):
            cas.append((name, x509util.load_cert(p), external(cluster, base)))
    fmt = opts.get("output") or ""
    if fmt in ("yaml", "json"):
        info = {"kind": "CertificateExpirationInfo", "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
                "certificates": [{"name": n, "expirationDate": c.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                  "residualTime": int((c.not_valid_after - now).total_seconds() * 1e9),
                                  "caName": ca, "externallyManaged": external(cluster, pki.CA_FILES[ca]) if ca in pki.CA_FILES else False,
                                  "missing": False} for n, c, ca in certs],
                "certificateAuthorities": [{"name": n, "expirationDate": c.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                            "residualTime": int((c.not_valid_after - now).total_seconds() * 1e9),
                                            "externallyManaged": ext} for n, c, ext in cas]}
        out.say(json.dumps(info, indent=4) if fmt == "json" else yamlio.dump(info).rstrip())
        return
    if fmt not in ("", "text"):
        raise KubeadmError('error: unable to match a printer suitable for the output format "%s", allowed formats '
                           'are: json,text,yaml' % fmt)
    out.say("[check-expiration] Reading configuration from the cluster...")
    out.say("[check-expiration] FYI: You can look at this config file with 'kubectl -n kube-system get cm "
            "kubeadm-config -o yaml'\n")
    exp = lambda c: c.not_valid_after.strftime("%b %d, %Y %H:%M UTC")
    rows = [["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED"]]
    for n, c, ca in certs:
        ext = external(cluster, pki.CA_FILES.get(ca, ca))
        rows.append([n, exp(c), short_human_duration((c.not_valid_after - now).total_seconds()), ca,
                     "yes" if ext else "no"])
    out.say(tabwrite(rows) + "\n")
    rows = [["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED"]]
    for n, c, ext in cas:
        rows.append([n, exp(c), short_human_duration((c.not_valid_after - now).total_seconds()), "yes" if ext else "no"])
    out.say(tabwrite(rows))


def renew(opts, name):
    cluster = load_cluster(opts)
    names = pki.RENEWABLE if name == "all" else [name]
    if name != "all" and name not in pki.RENEWABLE:
        raise KubeadmError('unknown command "%s" for "kubeadm certs renew"' % name)
    validity = datetime.timedelta(seconds=tokens.parse_duration(cluster.get("certificateValidityPeriod") or "8760h"))
    d = cluster["certificatesDir"]
    for n in names:
        cert, ca_name, missing = cert_for(cluster, n)
        if missing or cert is None:
            out.say("MISSING! %s" % LONG_NAMES[n])
            continue
        ca_base = pki.CA_FILES[ca_name]
        ca_cert = x509util.load_cert(env.host_path(os.path.join(d, ca_base + ".crt")))
        ca_key_path = env.host_path(os.path.join(d, ca_base + ".key"))
        if not os.path.exists(ca_key_path):
            out.say("Detected external %s, %s can't be renewed" % (ca_name, LONG_NAMES[n]))
            continue
        ca_key = x509util.load_key(ca_key_path)
        key = x509util.new_key(x509util.key_algorithm(cert))
        new = x509util.renew(cert, ca_cert, ca_key, key, validity)
        if n in KUBECONFIGS:
            path = "/etc/kubernetes/" + n
            kc = kubeconfig.load(path)
            kc.data["users"][0]["user"]["client-certificate-data"] = base64.b64encode(x509util.cert_pem(new)).decode()
            kc.data["users"][0]["user"]["client-key-data"] = base64.b64encode(x509util.key_pem(key)).decode()
            kubeconfig.write(path, kc.data, 0o600)
        else:
            base = pki.CERT_FILES[n][0]
            x509util.write_atomic(env.host_path(os.path.join(d, base + ".key")), x509util.key_pem(key), 0o600)
            x509util.write_atomic(env.host_path(os.path.join(d, base + ".crt")), x509util.cert_pem(new), 0o644)
        out.say("%s renewed" % LONG_NAMES[n])
    out.say("\nDone renewing certificates. You must restart the kube-apiserver, kube-controller-manager, "
            "kube-scheduler and etcd, so that they can use the new certificates.")
