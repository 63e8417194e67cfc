"""The four static pod manifests, as kubeadm writes them (k/k phases/controlplane and
phases/etcd/local.go); argument lists sorted, extra args override defaults."""

import os

from .. import env, version, x509util, yamlio

MANIFESTS_DIR = "/etc/kubernetes/manifests"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")


def manifest_path(name):
    return os.path.join(MANIFESTS_DIR, name + ".yaml")


def _host(ip):
    return "[%s]" % ip if ":" in ip else ip


def etcd_client_url(address):
    return "https://%s:%d" % (_host(address), env.port(2379))


def etcd_peer_url(address):
    return "https://%s:%d" % (_host(address), env.port(2380))


def args_to_command(defaults, overrides):
    """kubeadm's ArgumentsToCommand: override by name, keep duplicates from the overrides,
    sort by name."""
    names = {o["name"] for o in overrides or []}
    args = [(k, v) for k, v in defaults.items() if k not in names]
    args += [(o["name"], o.get("value", "")) for o in overrides or []]
    return ["--%s=%s" % (k, v) for k, v in sorted(args, key=lambda kv: kv[0])]


def _vol(name, path, typ="DirectoryOrCreate"):
    return {"name": name, "hostPath": {"path": path, "type": typ}}


def _mount(name, path, ro=True):
    m = {"name": name, "mountPath": path}
    if ro:
        m["readOnly"] = True
    return m


def _probe(host, path, port, scheme, failure=8, initial=10, timeout=15):
    p = {"httpGet": {"host": host, "path": path, "port": port, "scheme": scheme},
         "failureThreshold": failure, "initialDelaySeconds": initial, "periodSeconds": 10,
         "timeoutSeconds": timeout}
    return p


def _pod(name, command, image, mounts, volumes, annotations=None, cpu="250m", probes=None, extra_env=None):
    container = {"command": command, "image": image, "imagePullPolicy": "IfNotPresent", "name": name,
                 "resources": {"requests": {"cpu": cpu}}, "volumeMounts": mounts}
    if name == "etcd":
        container["resources"]["requests"]["memory"] = "100Mi"
    container.update(probes or {})
    if extra_env:
        container["env"] = extra_env
    md = {"labels": {"component": name, "tier": "control-plane"}, "name": name, "namespace": "kube-system"}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md,
            "spec": {"containers": [container], "hostNetwork": True,
                     "priority": 2000001000, "priorityClassName": "system-node-critical",
                     "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "volumes": volumes},
            "status": {}}


def _ca_mounts():
    vols = [_vol("ca-certs", "/etc/ssl/certs"), _vol("etc-ca-certificates", "/etc/ca-certificates"),
            _vol("usr-local-share-ca-certificates", "/usr/local/share/ca-certificates"),
            _vol("usr-share-ca-certificates", "/usr/share/ca-certificates")]
    mounts = [_mount("ca-certs", "/etc/ssl/certs"), _mount("etc-ca-certificates", "/etc/ca-certificates"),
              _mount("usr-local-share-ca-certificates", "/usr/local/share/ca-certificates"),
              _mount("usr-share-ca-certificates", "/usr/share/ca-certificates")]
    return vols, mounts


def _image(cluster, name):
    return "%s/%s:%s" % (cluster.get("imageRepository", "registry.k8s.io"), name, cluster["kubernetesVersion"])


def _extra(cluster, comp):
    c = cluster.get(comp) or {}
    return c.get("extraArgs") or [], c.get("extraEnvs") or []


def apiserver(cluster, endpoint, external_ca=False):
    certs = cluster["certificatesDir"]
    adv = endpoint["advertiseAddress"]
    local = cluster["etcd"].get("local") is not None
    defaults = {
        "advertise-address": adv, "allow-privileged": "true", "authorization-mode": "Node,RBAC",
        "client-ca-file": certs + "/ca.crt", "enable-admission-plugins": "NodeRestriction",
        "enable-bootstrap-token-auth": "true",
        "kubelet-client-certificate": certs + "/apiserver-kubelet-client.crt",
        "kubelet-client-key": certs + "/apiserver-kubelet-client.key",
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "proxy-client-cert-file": certs + "/front-proxy-client.crt",
        "proxy-client-key-file": certs + "/front-proxy-client.key",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-client-ca-file": certs + "/front-proxy-ca.crt",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group", "requestheader-username-headers": "X-Remote-User",
        "secure-port": str(endpoint["bindPort"]),
        "service-account-issuer": "https://kubernetes.default.svc.%s" % cluster["networking"]["dnsDomain"],
        "service-account-key-file": certs + "/sa.pub", "service-account-signing-key-file": certs + "/sa.key",
        "service-cluster-ip-range": cluster["networking"]["serviceSubnet"],
        "tls-cert-file": certs + "/apiserver.crt", "tls-private-key-file": certs + "/apiserver.key",
    }
    if local:
        loopback = "::1" if ":" in adv else "127.0.0.1"
        defaults.update({"etcd-servers": etcd_client_url(loopback), "etcd-cafile": certs + "/etcd/ca.crt",
                         "etcd-certfile": certs + "/apiserver-etcd-client.crt",
                         "etcd-keyfile": certs + "/apiserver-etcd-client.key"})
    else:
        ext = cluster["etcd"]["external"]
        defaults["etcd-servers"] = ",".join(ext.get("endpoints") or [])
        for flag, key in (("etcd-cafile", "caFile"), ("etcd-certfile", "certFile"), ("etcd-keyfile", "keyFile")):
            if ext.get(key):
                defaults[flag] = ext[key]
    extra, envs = _extra(cluster, "apiServer")
    vols, mounts = _ca_mounts()
    vols.insert(2, _vol("k8s-certs", certs))
    mounts.insert(2, _mount("k8s-certs", certs))
    port = int(endpoint["bindPort"])
    probes = {"livenessProbe": _probe(adv, "/livez", port, "HTTPS"),
              "readinessProbe": _probe(adv, "/readyz", port, "HTTPS", failure=3, initial=0),
              "startupProbe": _probe(adv, "/livez", port, "HTTPS", failure=24)}
    return _pod("kube-apiserver", ["kube-apiserver"] + args_to_command(defaults, extra),
                _image(cluster, "kube-apiserver"), mounts, vols,
                {"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint":
                 "%s:%d" % (_host(adv), port)}, probes=probes, extra_env=envs)


def controller_manager(cluster, external_ca=False):
    certs = cluster["certificatesDir"]
    kc = "/etc/kubernetes/controller-manager.conf"
    defaults = {
        "authentication-kubeconfig": kc, "authorization-kubeconfig": kc, "bind-address": "127.0.0.1",
        "client-ca-file": certs + "/ca.crt", "cluster-name": cluster.get("clusterName", "kubernetes"),
        "controllers": "*,bootstrapsigner,tokencleaner", "kubeconfig": kc, "leader-elect": "true",
        "requestheader-client-ca-file": certs + "/front-proxy-ca.crt", "root-ca-file": certs + "/ca.crt",
        "service-account-private-key-file": certs + "/sa.key",
        "service-cluster-ip-range": cluster["networking"]["serviceSubnet"],
        "use-service-account-credentials": "true",
    }
    if external_ca:
        defaults["cluster-signing-cert-file"] = ""
        defaults["cluster-signing-key-file"] = ""
    else:
        defaults["cluster-signing-cert-file"] = certs + "/ca.crt"
        defaults["cluster-signing-key-file"] = certs + "/ca.key"
    if cluster["networking"].get("podSubnet"):
        defaults["allocate-node-cidrs"] = "true"
        defaults["cluster-cidr"] = cluster["networking"]["podSubnet"]
    extra, envs = _extra(cluster, "controllerManager")
    vols, mounts = _ca_mounts()
    vols += [_vol("flexvolume-dir", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"),
             _vol("k8s-certs", certs), _vol("kubeconfig", kc, "FileOrCreate")]
    mounts += [_mount("flexvolume-dir", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec", False),
               _mount("k8s-certs", certs), _mount("kubeconfig", kc)]
    probes = {"livenessProbe": _probe("127.0.0.1", "/healthz", 10257, "HTTPS"),
              "startupProbe": _probe("127.0.0.1", "/healthz", 10257, "HTTPS", failure=24)}
    return _pod("kube-controller-manager", ["kube-controller-manager"] + args_to_command(defaults, extra),
                _image(cluster, "kube-controller-manager"), mounts, vols, cpu="200m", probes=probes,
                extra_env=envs)


def scheduler(cluster):
    kc = "/etc/kubernetes/scheduler.conf"
    defaults = {"authentication-kubeconfig": kc, "authorization-kubeconfig": kc, "bind-address": "127.0.0.1",
                "kubeconfig": kc, "leader-elect": "true"}
    extra, envs = _extra(cluster, "scheduler")
    probes = {"livenessProbe": _probe("127.0.0.1", "/livez", 10259, "HTTPS"),
              "readinessProbe": _probe("127.0.0.1", "/readyz", 10259, "HTTPS", failure=3, initial=0, timeout=15),
              "startupProbe": _probe("127.0.0.1", "/livez", 10259, "HTTPS", failure=24)}
    return _pod("kube-scheduler", ["kube-scheduler"] + args_to_command(defaults, extra),
                _image(cluster, "kube-scheduler"), [_mount("kubeconfig", kc)],
                [_vol("kubeconfig", kc, "FileOrCreate")], cpu="100m", probes=probes, extra_env=envs)


def etcd(cluster, node_name, endpoint, initial_cluster=None):
    """CreateLocalEtcdStaticPodManifestFile / CreateStackedEtcdStaticPodManifestFile: a new
    one-member cluster, or (with the member list) `--initial-cluster-state=existing`."""
    local = cluster["etcd"]["local"]
    certs = cluster["certificatesDir"]
    adv = endpoint["advertiseAddress"]
    loopback = "::1" if ":" in adv else "127.0.0.1"
    data_dir = local["dataDir"]
    defaults = {
        "name": node_name, "feature-gates": "InitialCorruptCheck=true",
        "listen-client-urls": "%s,%s" % (etcd_client_url(loopback), etcd_client_url(adv)),
        "advertise-client-urls": etcd_client_url(adv),
        "listen-peer-urls": etcd_peer_url(adv), "initial-advertise-peer-urls": etcd_peer_url(adv),
        "data-dir": data_dir,
        "cert-file": certs + "/etcd/server.crt", "key-file": certs + "/etcd/server.key",
        "trusted-ca-file": certs + "/etcd/ca.crt", "client-cert-auth": "true",
        "peer-cert-file": certs + "/etcd/peer.crt", "peer-key-file": certs + "/etcd/peer.key",
        "peer-trusted-ca-file": certs + "/etcd/ca.crt", "peer-client-cert-auth": "true",
        "snapshot-count": "10000",
        "listen-metrics-urls": "http://%s:%d" % (_host(loopback), env.port(2381)),
        "watch-progress-notify-interval": "5s",
    }
    if version.minor() < 34:
        # etcd 3.5 flags, as kubeadm wrote them before moving to etcd 3.6 (1.34).
        del defaults["feature-gates"]
        defaults["experimental-initial-corrupt-check"] = "true"
        del defaults["watch-progress-notify-interval"]
        defaults["experimental-watch-progress-notify-interval"] = "5s"
    if not initial_cluster:
        defaults["initial-cluster"] = "%s=%s" % (node_name, etcd_peer_url(adv))
    else:
        defaults["initial-cluster"] = ",".join("%s=%s" % (n, u) for n, u in initial_cluster)
        defaults["initial-cluster-state"] = "existing"
    extra = local.get("extraArgs") or []
    probe_port = env.port(2381)
    probes = {"livenessProbe": _probe(loopback, "/livez", probe_port, "HTTP"),
              "readinessProbe": _probe(loopback, "/readyz", probe_port, "HTTP", failure=3, initial=0),
              "startupProbe": _probe(loopback, "/readyz", probe_port, "HTTP", failure=24)}
    return _pod("etcd", ["etcd"] + args_to_command(defaults, extra),
                "%s/etcd:%s" % (cluster.get("imageRepository", "registry.k8s.io"), version.etcd_version_for_manifest()),
                [_mount("etcd-data", data_dir, False), _mount("etcd-certs", certs + "/etcd", False)],
                [_vol("etcd-certs", certs + "/etcd"), _vol("etcd-data", data_dir)],
                {"kubeadm.kubernetes.io/etcd.advertise-client-urls": etcd_client_url(adv)},
                cpu="100m", probes=probes, extra_env=local.get("extraEnvs") or None)


def write(name, pod):
    x509util.write_atomic(env.host_path(manifest_path(name)), yamlio.dump(pod), 0o600)


def read(name):
    text = env.read_text(manifest_path(name))
    return yamlio.load_plain(text) if text else None


def command_flags(pod):
    """The `--name=value` flags of a static pod's container command."""
    flags = {}
    for a in ((pod.get("spec") or {}).get("containers") or [{}])[0].get("command") or []:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            flags[k] = v
    return flags
