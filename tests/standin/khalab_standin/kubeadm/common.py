"""What init and join share: API clients, the kubelet-start phase, waiting for the kubelet
and the control plane, node marking, systemctl, join commands."""

import datetime
import http.client
import socket
import ssl
import subprocess
import time
import urllib.parse

from .. import env, kubeclient, kubeconfig, out, tokens, version, x509util, yamlio
from ..out import KubeadmError
from . import failinject, manifests

KUBELET_DIR = "/var/lib/kubelet"
FLAGS_ENV = KUBELET_DIR + "/kubeadm-flags.env"
KUBELET_CONFIG = KUBELET_DIR + "/config.yaml"
INSTANCE_CONFIG = KUBELET_DIR + "/instance-config.yaml"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


def api_client(path="/etc/kubernetes/admin.conf", timeout=10):
    try:
        return kubeclient.Client.from_file(path, timeout=timeout)
    except kubeconfig.KubeconfigError as e:
        raise KubeadmError('couldn\'t create a Kubernetes client from file "%s": %s' % (path, e)) from None


def poll(fn, timeout, interval=0.5):
    """Call fn until it returns a true value or the timeout passes; returns (value, last error)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v, None
        except (kubeclient.ApiError, OSError) as e:
            last = e
        if time.monotonic() >= deadline:
            return None, last
        time.sleep(interval)


# systemd

def systemctl(*args):
    return subprocess.run(["systemctl"] + list(args), capture_output=True, text=True)


def restart_kubelet():
    """kubeletphase.TryStartKubelet."""
    if not env.init_system_available():
        out.say("[kubelet-start] No supported init system detected, won't make sure the kubelet is running properly.")
        return
    r = systemctl("restart", "kubelet")
    if r.returncode != 0:
        out.warn("[kubelet-start] WARNING: unable to start the kubelet service: [%s]" % (r.stderr.strip(),),
                 "kubelet.go:58")


def stop_kubelet():
    if env.init_system_available():
        systemctl("stop", "kubelet")


# kubelet-start

def taint_string(t):
    s = t["key"]
    if t.get("value"):
        s += "=" + t["value"]
    return s + ":" + t.get("effect", "")


def kubelet_flags(node_reg, register_taints):
    flags = {}
    if not version.node_local_cri_socket():
        flags["container-runtime-endpoint"] = node_reg["criSocket"]
    if register_taints and node_reg.get("taints"):
        flags["register-with-taints"] = ",".join(taint_string(t) for t in node_reg["taints"])
    if node_reg["name"] != socket.gethostname().lower():
        flags["hostname-override"] = node_reg["name"]
    overrides = node_reg.get("kubeletExtraArgs") or []
    return manifests.args_to_command(flags, overrides)


def default_kubelet_config(cluster, user_doc=None):
    """kubeadm's KubeletConfiguration defaults, with the user's document on top."""
    dns = cluster["networking"]["serviceSubnet"].split(",")[0]
    import ipaddress
    net = ipaddress.ip_network(dns.strip(), strict=False)
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"cacheTTL": "0s", "enabled": True},
                           "x509": {"clientCAFile": cluster["certificatesDir"] + "/ca.crt"}},
        "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "0s", "cacheUnauthorizedTTL": "0s"}},
        "cgroupDriver": "systemd", "clusterDNS": [str(net.network_address + 10)],
        "clusterDomain": cluster["networking"]["dnsDomain"], "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248, "rotateCertificates": True, "staticPodPath": manifests.MANIFESTS_DIR,
        "containerRuntimeEndpoint": "", "logging": {"flushFrequency": 0, "options": {"json": {"infoBufferSize": "0"}},
                                                   "verbosity": 0},
        "memorySwap": {}, "runtimeRequestTimeout": "0s", "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s", "streamingConnectionIdleTimeout": "0s",
        "syncFrequency": "0s", "volumeStatsAggPeriod": "0s", "cpuManagerReconcilePeriod": "0s",
        "evictionPressureTransitionPeriod": "0s", "fileCheckFrequency": "0s", "httpCheckFrequency": "0s",
        "imageMinimumGCAge": "0s", "nodeStatusReportFrequency": "0s", "nodeStatusUpdateFrequency": "0s",
    }
    if user_doc:
        merged = dict(cfg)
        for k, v in user_doc.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = dict(merged[k], **v)
            else:
                merged[k] = v
        cfg = merged
    return cfg


def write_kubelet_files(node_reg, kubelet_config_text, register_taints):
    flags = kubelet_flags(node_reg, register_taints)
    out.say('[kubelet-start] Writing kubelet environment file with flags to file "%s"' % FLAGS_ENV)
    x509util.write_atomic(env.host_path(FLAGS_ENV), 'KUBELET_KUBEADM_ARGS="%s"\n' % " ".join(flags), 0o644)
    cfg = yamlio.load_plain(kubelet_config_text) or {}
    if version.node_local_cri_socket():
        instance = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                    "containerRuntimeEndpoint": node_reg["criSocket"]}
        out.say('[kubelet-start] Writing kubelet configuration to file "%s"' % INSTANCE_CONFIG)
        x509util.write_atomic(env.host_path(INSTANCE_CONFIG), yamlio.dump(instance), 0o644)
        cfg["containerRuntimeEndpoint"] = node_reg["criSocket"]
    out.say('[kubelet-start] Writing kubelet configuration to file "%s"' % KUBELET_CONFIG)
    x509util.write_atomic(env.host_path(KUBELET_CONFIG), yamlio.dump(cfg), 0o644)


# waiting

def _http_get(url, insecure_tls=True, timeout=2.0):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", u.path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body
    finally:
        conn.close()


def _get_error(url, e):
    u = urllib.parse.urlsplit(url)
    if isinstance(e, ConnectionRefusedError):
        return 'Get "%s": dial tcp %s:%d: connect: connection refused' % (url, u.hostname, u.port)
    return 'Get "%s": %s' % (url, e)


def wait_kubelet(timeout):
    url = "http://127.0.0.1:%d/healthz" % env.port(10248)
    shown = "http://127.0.0.1:10248/healthz"
    out.say("[kubelet-check] Waiting for a healthy kubelet at %s. This can take up to %s"
            % (shown, tokens.format_duration(timeout)))
    start = time.monotonic()
    deadline = start + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status, _ = _http_get(url)
            if status == 200:
                out.say("[kubelet-check] The kubelet is healthy after %s" % _elapsed(start))
                return
            last = "the kubelet returned HTTP %d" % status
        except OSError as e:
            last = _get_error(shown, e)
        time.sleep(0.5)
    out.say("[kubelet-check] The kubelet is not healthy after %s" % _elapsed(start))
    raise KubeadmError("The HTTP call equal to 'curl -sSL %s' returned error: %s" % (shown, last))


def _elapsed(start):
    return tokens.format_duration(round(time.monotonic() - start, 6))


KUBELET_FAIL_HELP = """
Unfortunately, an error has occurred, likely caused by:
	- The kubelet is not running
	- The kubelet is unhealthy due to a misconfiguration of the node in some way (required cgroups disabled)

If you are on a systemd-powered system, you can try to troubleshoot the error with the following commands:
	- 'systemctl status kubelet'
	- 'journalctl -xeu kubelet'
"""

CP_FAIL_HELP = """
A control plane component may have crashed or exited when started by the container runtime.
To troubleshoot, list all containers using your preferred container runtimes CLI.
Here is one example how you may list all running Kubernetes containers by using crictl:
	- 'crictl --runtime-endpoint %s ps -a | grep kube | grep -v pause'
	Once you have found the failing container, you can inspect its logs with:
	- 'crictl --runtime-endpoint %s logs CONTAINERID'
"""


def component_urls(endpoint):
    """(name, URL to poll, URL to print) for each control plane component, from the flags in
    the static pod manifests (as kubeadm 1.33+ does)."""
    res = []
    api = manifests.read("kube-apiserver")
    if api is not None:
        f = manifests.command_flags(api)
        host = f.get("advertise-address") or endpoint["advertiseAddress"]
        port = f.get("secure-port", "6443")
        h = "[%s]" % host if ":" in host else host
        res.append(("kube-apiserver", "https://%s:%s/livez" % (h, port), "https://%s:%s/livez" % (h, port)))
    for name, path, default in (("kube-controller-manager", "/healthz", 10257), ("kube-scheduler", "/livez", 10259)):
        pod = manifests.read(name)
        if pod is None:
            continue
        f = manifests.command_flags(pod)
        host = f.get("bind-address", "127.0.0.1")
        host = "127.0.0.1" if host == "0.0.0.0" else ("::1" if host == "::" else host)
        port = int(f.get("secure-port", default))
        h = "[%s]" % host if ":" in host else host
        res.append((name, "https://%s:%d%s" % (h, env.port(port), path), "https://%s:%d%s" % (h, port, path)))
    return res


def wait_control_plane(command, endpoint, cri_socket, timeout, admin_path="/etc/kubernetes/admin.conf"):
    """The control-plane check (1.33+: every component) or the API check (before)."""
    injected = failinject.take(command, "wait-control-plane-timeout") is not None
    if version.wait_all_components():
        out.say("[control-plane-check] Waiting for healthy control plane components. This can take up to %s"
                % tokens.format_duration(timeout))
        comps = component_urls(endpoint)
        for name, _, shown in comps:
            out.say("[control-plane-check] Checking %s at %s" % (name, shown))
        start = time.monotonic()
        pending = {name: (url, shown) for name, url, shown in comps}
        errors = {}
        deadline = start + timeout
        while pending and not injected:
            for name in list(pending):
                url, shown = pending[name]
                try:
                    status, _ = _http_get(url)
                    if status == 200:
                        out.say("[control-plane-check] %s is healthy after %s" % (name, _elapsed(start)))
                        del pending[name]
                        continue
                    errors[name] = "%s check failed at %s: the server returned HTTP %d" % (name, shown, status)
                except OSError as e:
                    errors[name] = "%s check failed at %s: %s" % (name, shown, _get_error(shown, e))
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if pending:
            for name in pending:
                out.say("[control-plane-check] %s is not healthy after %s" % (
                    name, tokens.format_duration(timeout) if injected else _elapsed(start)))
                if injected:
                    errors[name] = "%s check failed at %s: client rate limiter Wait returned an error: rate: " \
                                   "Wait(n=1) would exceed context deadline" % (name, pending[name][1])
            out.say(CP_FAIL_HELP % (cri_socket, cri_socket))
            raise KubeadmError("failed while waiting for the control plane to start: [%s]" % ", ".join(
                errors.get(n, "%s check failed" % n) for n in pending))
        return
    out.say("[api-check] Waiting for a healthy API server. This can take up to %s" % tokens.format_duration(timeout))
    start = time.monotonic()
    if injected:
        out.say("[api-check] The API server is not healthy after %s" % tokens.format_duration(timeout))
        out.say(CP_FAIL_HELP % (cri_socket, cri_socket))
        raise KubeadmError("failed while waiting for the control plane to start: context deadline exceeded")
    client = api_client(admin_path, timeout=5)
    ok, last = poll(lambda: client.request("GET", "/healthz") is not None, timeout)
    if not ok:
        out.say("[api-check] The API server is not healthy after %s" % _elapsed(start))
        out.say(CP_FAIL_HELP % (cri_socket, cri_socket))
        raise KubeadmError("failed while waiting for the control plane to start: %s" % (
            last.message if isinstance(last, kubeclient.ApiError) else "context deadline exceeded"))
    out.say("[api-check] The API server is healthy after %s" % _elapsed(start))


def mark_control_plane(client, node_name, taints, timeout):
    labels = [CONTROL_PLANE_LABEL, EXCLUDE_LB_LABEL]
    out.say("[mark-control-plane] Marking the node %s as control-plane by adding the labels: [%s]"
            % (node_name, " ".join(labels)))
    if taints:
        out.say("[mark-control-plane] Marking the node %s as control-plane by adding the taints [%s]"
                % (node_name, " ".join(taint_string(t) for t in taints)))

    def patch():
        node = client.get("Node", node_name)
        md = node.setdefault("metadata", {})
        md.setdefault("labels", {}).update({l: "" for l in labels})
        spec = node.setdefault("spec", {})
        have = spec.get("taints") or []
        for t in taints:
            if not any(h.get("key") == t["key"] and h.get("effect") == t.get("effect") for h in have):
                have.append({k: v for k, v in t.items() if k in ("key", "value", "effect")})
        spec["taints"] = have
        client.update(node)
        return True
    ok, last = poll(patch, timeout)
    if not ok:
        raise KubeadmError('error patching node "%s" through apiserver: %s' % (
            node_name, last.message if isinstance(last, kubeclient.ApiError) else "timed out waiting for the condition"))


def join_command(server, ca_pems, token, control_plane=False, certificate_key="", one_line=False):
    """The join command kubeadm prints (cmd/util/join.go): with line continuations after init,
    on one line from `kubeadm token create --print-join-command`."""
    host_port = server.split("://", 1)[-1].rstrip("/")
    hashes = [x509util.spki_hash(c) for c in x509util.certs_from_pem(ca_pems)]
    brk = "" if one_line else "\\\n\t"
    s = "kubeadm join %s --token %s %s%s" % (host_port, token, brk, "".join(
        "--discovery-token-ca-cert-hash %s " % h for h in hashes))
    if control_plane:
        s += brk + "--control-plane "
        if certificate_key:
            s += "--certificate-key %s" % certificate_key
    return s


def create_token_secret(client, bt):
    """Create (or update) the Secret of a bootstrap token as kubeadm's tokens phase does."""
    expires = None
    if bt.get("expires"):
        expires = tokens.parse_rfc3339(bt["expires"])
    elif bt.get("ttl") not in (None, "0", "0s"):
        seconds = tokens.parse_duration(bt["ttl"])
        if seconds > 0:
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    obj = tokens.secret_object(bt["token"], expires, bt.get("usages") or [], bt.get("groups") or [],
                               bt.get("description", ""))
    return client.create_or_update(obj)
