"""The stand-in kubelet: static pods as processes, Node registration and heartbeats.

Like the real kubelet started by kubeadm's systemd drop-in, it
- exits with an error while /var/lib/kubelet/config.yaml is missing (systemd restarts it);
- with kubelet.conf, talks to the API server; without it but with --bootstrap-kubeconfig, it
  performs the TLS bootstrap: a CSR for `system:node:<name>` / `system:nodes`, signed by the
  controller-manager after auto-approval, then writes kubelet-client-current.pem and
  kubelet.conf;
- runs every manifest in staticPodPath: the first container's command, with etcd being the
  real binary and kube-* the stand-in programs; restarts them when they exit (1 s doubling
  to 10 s); stops them when their manifest goes away or changes;
- registers its Node, keeps it Ready (status every 10 s, a Lease in kube-node-lease), and
  mirrors its static pods as Pods (kubeadm finds etcd endpoints in their annotations);
- serves /healthz on healthzBindAddress:healthzPort and HTTPS on port 10250.

Unlike a real kubelet, its "containers" are its children: stopping the kubelet stops them
(systemd would too, with KillMode=control-group). Each pod's pid is kept under
/run/khalab-standin/pods so `kubeadm reset` can remove them, as it removes containers.
"""

import base64
import datetime
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

from . import controllers, daemon, env, kubeclient, kubeconfig, version, x509util, yamlio

STANDIN_PROGRAMS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
PID_DIR = "/run/khalab-standin/pods"
POD_LOG_DIR = "/var/log/khalab-standin/pods"
KUBELET_PKI = "/var/lib/kubelet/pki"
KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"


def log(msg):
    sys.stderr.write("kubelet stand-in: %s\n" % msg)
    sys.stderr.flush()


def proc_start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


# kubeadm 1.34+ writes etcd 3.6 flags; the lab runs Debian's etcd 3.4, which knows them by
# their experimental names. (The real kubelet would run the etcd 3.6 image instead.)
ETCD34_FLAGS = {"--feature-gates=InitialCorruptCheck=true": "--experimental-initial-corrupt-check=true"}


def etcd34_argv(args):
    """The manifest's etcd arguments for Debian's etcd 3.4, behaving as the 3.5/3.6 image of
    the real kubelet: flags by their 3.4 names, and Raft pre-vote on, which etcd 3.5 turned on
    by default (etcd-io/etcd#12770) and 3.4 leaves off. Without it a member cut off for a few
    seconds comes back with a higher term and deposes the leader: an etcd outage of seconds
    that no real kubeadm cluster has."""
    out = [etcd34_flag(a) for a in args]
    if not any(a == "--pre-vote" or a.startswith("--pre-vote=") for a in out):
        out.append("--pre-vote=true")
    return out


def etcd34_flag(arg):
    if arg in ETCD34_FLAGS:
        return ETCD34_FLAGS[arg]
    if arg.startswith("--watch-progress-notify-interval="):
        return "--experimental-" + arg[2:]
    return arg


def kill_recorded_pods():
    """Stop the processes of pods recorded under PID_DIR (a previous kubelet's, or for
    `kubeadm reset`). A pid is only signalled if its start time still matches."""
    d = env.host_path(PID_DIR)
    killed = []
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        path = os.path.join(d, name)
        try:
            pid_s, start = open(path).read().split()
            pid = int(pid_s)
        except (OSError, ValueError):
            os.unlink(path)
            continue
        if proc_start_time(pid) == start:
            _terminate_group(pid)
            killed.append(name[: -len(".pid")])
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return killed


def _terminate_group(pid, grace=5.0):
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc_start_time(pid) is None:
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class StaticPod:
    def __init__(self, kubelet, path, data):
        self.kubelet, self.path, self.data = kubelet, path, data
        self.hash = hashlib.sha256(data).hexdigest()[:32]
        self.manifest = yamlio.load_plain(data.decode())
        md = self.manifest.get("metadata") or {}
        self.name = md.get("name") or os.path.basename(path).rsplit(".", 1)[0]
        self.namespace = md.get("namespace") or "default"
        self.proc = None
        self.restarts = 0
        self.backoff = 1.0
        self.next_start = 0.0
        self.started_at = None
        self.lock = threading.Lock()

    @property
    def container(self):
        return ((self.manifest.get("spec") or {}).get("containers") or [{}])[0]

    def argv(self):
        c = self.container
        argv = list(c.get("command") or []) + list(c.get("args") or [])
        if not argv:
            raise ValueError("static pod %s has no command" % self.name)
        prog = argv[0]
        if prog in STANDIN_PROGRAMS:
            argv[0] = env.program(prog)
        else:
            found = shutil.which(prog)
            if found is None:
                raise ValueError('exec: "%s": executable file not found in $PATH' % prog)
            argv[0] = found
            if prog == "etcd":
                argv = [argv[0]] + etcd34_argv(argv[1:])
            if env.redirected():
                argv = [argv[0]] + [self._host_arg(a) for a in argv[1:]]
        return argv

    def _host_arg(self, arg):
        """The node paths a real binary sees through its hostPath mounts, redirected."""
        mounts = {}
        vols = {v.get("name"): (v.get("hostPath") or {}).get("path") for v in
                (self.manifest.get("spec") or {}).get("volumes") or []}
        for m in self.container.get("volumeMounts") or []:
            if vols.get(m.get("name")):
                mounts[m["mountPath"]] = vols[m["name"]]
        if not arg.startswith("--") or "=" not in arg:
            return arg
        k, v = arg.split("=", 1)
        for mount in sorted(mounts, key=len, reverse=True):
            if v == mount or v.startswith(mount.rstrip("/") + "/"):
                return "%s=%s" % (k, env.host_path(mounts[mount] + v[len(mount):]))
        return arg

    def maybe_start(self):
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                return
            if self.proc is not None:
                log("static pod %s exited with %s; restarting in %.0fs" % (
                    self.name, self.proc.returncode, self.backoff))
                self.proc = None
                self.restarts += 1
                self.next_start = time.monotonic() + self.backoff
                self.backoff = min(self.backoff * 2, 10.0)
                self._clear_pid()
                return
            if time.monotonic() < self.next_start:
                return
            try:
                argv = self.argv()
            except ValueError as e:
                log(str(e))
                self.next_start = time.monotonic() + 5
                return
            envs = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
            if env.redirected():
                envs[env.ROOT_ENV] = env.root()
            for e in self.container.get("env") or []:
                if "value" in e:
                    envs[e["name"]] = str(e["value"])
            logdir = env.host_path(POD_LOG_DIR)
            os.makedirs(logdir, exist_ok=True)
            out = open(os.path.join(logdir, "%s.log" % self.name), "ab")
            try:
                self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=envs,
                                             start_new_session=True, cwd="/")
            except OSError as e:
                log("cannot start %s: %s" % (self.name, e))
                self.next_start = time.monotonic() + 5
                return
            finally:
                out.close()
            self.started_at = datetime.datetime.now(datetime.timezone.utc)
            self._write_pid()
            log("started static pod %s (pid %d)" % (self.name, self.proc.pid))

    def running_for(self):
        if self.proc is None or self.proc.poll() is not None or self.started_at is None:
            return None
        return (datetime.datetime.now(datetime.timezone.utc) - self.started_at).total_seconds()

    def _pidfile(self):
        return os.path.join(env.host_path(PID_DIR), "%s.pid" % self.name)

    def _write_pid(self):
        os.makedirs(env.host_path(PID_DIR), exist_ok=True)
        with open(self._pidfile(), "w") as f:
            f.write("%d %s\n" % (self.proc.pid, proc_start_time(self.proc.pid)))

    def _clear_pid(self):
        try:
            os.unlink(self._pidfile())
        except FileNotFoundError:
            pass

    def stop(self):
        with self.lock:
            if self.proc is not None:
                _terminate_group(self.proc.pid)
                try:
                    self.proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
                log("stopped static pod %s" % self.name)
            self.proc = None
            self._clear_pid()


class Kubelet:
    def __init__(self, flags, config):
        self.flags, self.config = flags, config
        self.node_name = (flags.get("hostname-override") or socket.gethostname()).lower()
        self.pods = {}
        self.stop_event = threading.Event()
        self.client = None
        self._kc_stamp = None
        self.node_ip = flags.get("node-ip")
        self.registered = False
        self.last_status = 0.0
        self.mirrored = {}

    # Static pods
    def manifest_dir(self):
        return env.host_path(self.config.get("staticPodPath") or "/etc/kubernetes/manifests")

    def sync_pods(self):
        d = self.manifest_dir()
        seen = {}
        if os.path.isdir(d):
            for fn in sorted(os.listdir(d)):
                if fn.startswith(".") or not fn.endswith((".yaml", ".yml", ".json")):
                    continue
                path = os.path.join(d, fn)
                try:
                    with open(path, "rb") as f:
                        seen[path] = f.read()
                except OSError:
                    continue
        for path in list(self.pods):
            pod = self.pods[path]
            if path not in seen or hashlib.sha256(seen[path]).hexdigest()[:32] != pod.hash:
                pod.stop()
                del self.pods[path]
        for path, data in seen.items():
            if path not in self.pods:
                try:
                    self.pods[path] = StaticPod(self, path, data)
                except (yamlio.YAMLError, AttributeError) as e:
                    log("invalid static pod manifest %s: %s" % (path, e))
                    continue
            self.pods[path].maybe_start()

    def stop_all(self):
        for pod in list(self.pods.values()):
            pod.stop()
        self.pods.clear()

    # API
    def kubeconfig_path(self):
        return self.flags.get("kubeconfig") or "/etc/kubernetes/kubelet.conf"

    def api_client(self):
        path = env.host_path(self.kubeconfig_path())
        try:
            stamp = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            self.client = None
            return None
        if stamp != self._kc_stamp:
            try:
                kc = kubeconfig.load(self.kubeconfig_path())
                self.client = kubeclient.Client.from_kubeconfig(kc, timeout=5)
                self._kc_stamp = stamp
                self.ensure_client_cert_file(kc)
            except (kubeconfig.KubeconfigError, OSError, ValueError) as e:
                log("cannot use %s: %s" % (self.kubeconfig_path(), e))
                self.client = None
        return self.client

    def ensure_client_cert_file(self, kc):
        """With an embedded client cert (kubeadm init's kubelet.conf), the real kubelet's
        certificate manager stores it as kubelet-client-current.pem, which kubeadm's
        kubelet-finalize phase then points kubelet.conf at."""
        cur = env.host_path(KUBELET_PKI + "/kubelet-client-current.pem")
        if os.path.exists(cur) or not kc.user.get("client-certificate-data"):
            return
        self.store_client_pem(kc.client_cert_pem() + kc.client_key_pem())

    def store_client_pem(self, pem):
        d = env.host_path(KUBELET_PKI)
        os.makedirs(d, exist_ok=True)
        name = "kubelet-client-%s.pem" % datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        x509util.write_atomic(os.path.join(d, name), pem, 0o600)
        link = os.path.join(d, "kubelet-client-current.pem")
        tmp = link + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.join(KUBELET_PKI, name) if not env.redirected() else name, tmp)
        os.replace(tmp, link)

    def tls_bootstrap(self):
        """Get a client certificate with the bootstrap token; returns True when kubelet.conf
        exists afterwards."""
        boot = self.flags.get("bootstrap-kubeconfig")
        if not boot or not os.path.exists(env.host_path(boot)):
            return False
        try:
            kc = kubeconfig.load(boot)
            client = kubeclient.Client.from_kubeconfig(kc, timeout=5)
            key = x509util.new_key("ECDSA-P256")
            csr = x509util.new_csr(key, "system:node:" + self.node_name, ["system:nodes"])
            obj = client.create({
                "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                "metadata": {"generateName": "csr-"},
                "spec": {"request": base64.b64encode(x509util.csr_pem(csr)).decode(),
                         "signerName": KUBELET_CLIENT_SIGNER,
                         "usages": ["digital signature", "client auth"]}})
            name = obj["metadata"]["name"]
            log("TLS bootstrap: created CSR %s" % name)
            deadline = time.monotonic() + 300
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                cur = client.get("CertificateSigningRequest", name)
                st = cur.get("status") or {}
                if any(c.get("type") in ("Denied", "Failed") for c in st.get("conditions") or []):
                    log("TLS bootstrap: CSR %s was denied or failed" % name)
                    return False
                if st.get("certificate"):
                    pem = base64.b64decode(st["certificate"])
                    self.store_client_pem(pem + x509util.key_pem(key))
                    current = KUBELET_PKI + "/kubelet-client-current.pem"
                    new = kubeconfig.build("default-cluster", kc.server, kc.ca_pem(), "default-auth",
                                           cert_file=current, key_file=current)
                    new["contexts"][0]["name"] = "default-context"
                    new["contexts"][0]["context"]["namespace"] = "default"
                    new["current-context"] = "default-context"
                    kubeconfig.write(self.kubeconfig_path(), new)
                    log("TLS bootstrap: wrote %s" % self.kubeconfig_path())
                    return True
                self.stop_event.wait(1)
        except (kubeclient.ApiError, kubeconfig.KubeconfigError, OSError, ValueError) as e:
            log("TLS bootstrap failed: %s" % e)
        return False

    def discover_node_ip(self):
        if self.node_ip:
            return self.node_ip
        if self.client is not None:
            host = urllib.parse.urlsplit(self.client.server).hostname
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.connect((host, 9))
                    return s.getsockname()[0]
            except OSError:
                pass
        return "127.0.0.1"

    def node_object(self):
        labels = {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": "amd64"}
        for kv in [p for p in self.flags.get("node-labels", "").split(",") if p]:
            k, _, v = kv.partition("=")
            labels[k] = v
        taints = []
        for t in [p for p in self.flags.get("register-with-taints", "").split(",") if p]:
            kv, _, effect = t.partition(":")
            k, _, v = kv.partition("=")
            taint = {"key": k, "effect": effect}
            if v:
                taint["value"] = v
            taints.append(taint)
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": labels, "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
                "spec": {}}
        if taints:
            node["spec"]["taints"] = taints
        return node

    def node_status(self, old=None):
        now = controllers.microtime().split(".")[0] + "Z"
        prev = {c.get("type"): c for c in ((old or {}).get("conditions") or [])}

        def cond(t, status, reason, message):
            p = prev.get(t) or {}
            changed = p.get("status") != status
            return {"type": t, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now if changed else p.get("lastTransitionTime", now)}

        ip = self.discover_node_ip()
        mem_kib = 0
        try:
            for line in open(env.proc_path("/proc/meminfo")):
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
        except OSError:
            pass
        cap = {"cpu": str(os.cpu_count() or 1), "memory": "%dKi" % mem_kib, "pods": "110",
               "ephemeral-storage": "10Gi"}
        return {
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady",
                     "kubelet is posting ready status (khalab stand-in kubelet: no CNI is needed)"),
            ],
            "addresses": [{"type": "InternalIP", "address": ip},
                          {"type": "Hostname", "address": self.node_name}],
            "capacity": cap, "allocatable": cap,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": env.port(int(self.config.get("port", 10250)))}},
            "nodeInfo": {
                "machineID": (env.read_text("/etc/machine-id") or "").strip(),
                "systemUUID": "", "bootID": "",
                "kernelVersion": platform.release(), "osImage": "khalab stand-in node",
                "containerRuntimeVersion": "khalab-standin://0.0.0 (not a container runtime)",
                "kubeletVersion": version.current().text, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64"},
        }

    def sync_node(self):
        client = self.client
        if not self.registered:
            try:
                client.create(dict(self.node_object(), status=self.node_status()))
                log("registered node %s" % self.node_name)
            except kubeclient.ApiError as e:
                if not e.conflict:
                    raise
            self.registered = True
            self.last_status = 0
        if time.monotonic() - self.last_status >= 10:
            node = client.get("Node", self.node_name)
            node["status"] = self.node_status(node.get("status"))
            client.update(node, sub="status")
            self.last_status = time.monotonic()
            self.renew_lease(node)

    def renew_lease(self, node):
        client = self.client
        now = controllers.microtime()
        try:
            lease = client.get("Lease", self.node_name, "kube-node-lease")
            lease["spec"]["renewTime"] = now
            lease["spec"]["holderIdentity"] = self.node_name
            client.update(lease)
        except kubeclient.ApiError as e:
            if not e.not_found:
                raise
            client.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                           "metadata": {"name": self.node_name, "namespace": "kube-node-lease",
                                        "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                             "name": self.node_name,
                                                             "uid": node["metadata"].get("uid")}]},
                           "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40,
                                    "renewTime": now}})

    def mirror_pod(self, pod):
        md = pod.manifest.get("metadata") or {}
        ann = dict(md.get("annotations") or {})
        ann.update({"kubernetes.io/config.hash": pod.hash, "kubernetes.io/config.mirror": pod.hash,
                    "kubernetes.io/config.source": "file"})
        spec = dict(pod.manifest.get("spec") or {}, nodeName=self.node_name)
        running = pod.running_for() is not None
        started = pod.started_at.strftime("%Y-%m-%dT%H:%M:%SZ") if pod.started_at else None
        ip = self.discover_node_ip()
        state = {"running": {"startedAt": started}} if running else {"waiting": {"reason": "CrashLoopBackOff"}}
        status = {"phase": "Running" if running else "Pending", "hostIP": ip, "podIP": ip,
                  "podIPs": [{"ip": ip}], "startTime": started,
                  "conditions": [{"type": "Ready", "status": "True" if running else "False"}],
                  "containerStatuses": [{"name": pod.container.get("name", pod.name), "ready": running,
                                         "restartCount": pod.restarts, "started": running,
                                         "image": pod.container.get("image", ""), "imageID": "",
                                         "containerID": "khalab-standin://%d" % (pod.proc.pid if running else 0),
                                         "state": state}]}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "%s-%s" % (pod.name, self.node_name), "namespace": pod.namespace,
                             "labels": md.get("labels") or {}, "annotations": ann},
                "spec": spec, "status": status}

    def sync_mirror_pods(self):
        client = self.client
        want = {}
        for pod in self.pods.values():
            m = self.mirror_pod(pod)
            want[(m["metadata"]["namespace"], m["metadata"]["name"])] = m
        for key, m in want.items():
            sig = (m["metadata"]["annotations"]["kubernetes.io/config.hash"],
                   m["status"]["phase"], m["status"]["containerStatuses"][0]["restartCount"])
            if self.mirrored.get(key) == sig:
                continue
            try:
                cur = client.get("Pod", key[1], key[0])
                if cur["metadata"].get("annotations", {}).get("kubernetes.io/config.hash") != sig[0]:
                    client.delete("Pod", key[1], key[0])
                    client.create(m)
                else:
                    cur["status"] = m["status"]
                    client.update(cur, sub="status")
            except kubeclient.ApiError as e:
                if not e.not_found:
                    raise
                client.create(m)
            self.mirrored[key] = sig
        for key in list(self.mirrored):
            if key not in want:
                try:
                    client.delete("Pod", key[1], key[0])
                except kubeclient.ApiError as e:
                    if not e.not_found:
                        raise
                del self.mirrored[key]

    def api_loop(self):
        while not self.stop_event.is_set():
            try:
                if self.api_client() is None:
                    if self.tls_bootstrap():
                        continue
                else:
                    self.sync_node()
                    self.sync_mirror_pods()
            except (kubeclient.ApiError, OSError, ValueError, KeyError) as e:
                log("API sync: %s" % e)
            self.stop_event.wait(2)

    def run(self):
        killed = kill_recorded_pods()
        if killed:
            log("stopped pods left by a previous kubelet: %s" % ", ".join(killed))
        bind = self.config.get("healthzBindAddress", "127.0.0.1")
        daemon.serve_health(bind, env.port(int(self.config.get("healthzPort", 10248))), lambda p: None)
        daemon.serve_health("0.0.0.0", env.port(int(self.config.get("port", 10250))), lambda p: None,
                            daemon.self_signed_server_context(names=(self.node_name, "localhost")))
        daemon.stop_on_signals(self.stop_event.set)
        threading.Thread(target=self.api_loop, daemon=True).start()
        log("node %s: static pods from %s" % (self.node_name, self.manifest_dir()))
        while not self.stop_event.is_set():
            self.sync_pods()
            self.stop_event.wait(1)
        self.stop_all()


def load_config(path):
    text = env.read_text(path)
    if text is None:
        return None, ('failed to load kubelet config file, path: %s, error: failed to load Kubelet '
                      'config file %s, error failed to read kubelet config file "%s", error: open %s: '
                      'no such file or directory' % (path, path, path, path))
    try:
        cfg = yamlio.load_plain(text) or {}
    except yamlio.YAMLError as e:
        return None, "failed to load kubelet config file, path: %s, error: %s" % (path, e)
    return cfg, None


def main(argv):
    flags = daemon.parse_flags(argv)
    if flags.get("version") == "true" or "--version" in argv:
        sys.stdout.write("Kubernetes %s\n" % version.current().text)
        return 0
    path = flags.get("config") or "/var/lib/kubelet/config.yaml"
    cfg, err = load_config(path)
    if cfg is None:
        sys.stderr.write('E%s run.go:72] "command failed" err="%s"\n' % (
            datetime.datetime.now().strftime("%m%d %H:%M:%S.%f"), err.replace('"', '\\"')))
        return 1
    try:
        Kubelet(flags, cfg).run()
    except OSError as e:
        log("failed: %s" % e)
        return 1
    return 0
