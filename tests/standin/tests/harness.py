"""Test harness for the stand-in: node roots on this machine, a tiny systemd for them, a PKI
laid out the way khactl lays it out, and process cleanup.

A "node" is a directory used as KHALAB_STANDIN_ROOT with the stand-in installed in it by
install.sh, its own ports (ports.json) and an address on loopback (127.0.0.x). Its kubelet
and CRI socket run under `Systemd`, which reads the installed unit files (so the kubeadm
drop-in is exercised) and answers the node's `systemctl` (a shim on the node's PATH).

Everything started here is tracked by PID and stopped in tearDown, even after a failure;
temporary directories are removed.
"""

import atexit
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

STANDIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, STANDIN)

from khalab_standin import etcdclient, kubeclient, kubeconfig, x509util  # noqa: E402

PYTHON = "/usr/bin/python3"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_live = set()
_live_lock = threading.Lock()


def _track(proc):
    with _live_lock:
        _live.add(proc)
    return proc


def stop_process(proc, grace=8.0):
    """SIGTERM the process group, SIGKILL after `grace`, reap."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    with _live_lock:
        _live.discard(proc)


@atexit.register
def _kill_leftovers():
    for p in list(_live):
        stop_process(p, grace=2)


def datetime_now():
    import datetime
    return datetime.datetime.now(datetime.timezone.utc)


_handed_out = set()


def free_port():
    """A free TCP port below the kernel's ephemeral range (32768-60999), so that no client
    connection of a test's own processes can take it between allocation and use."""
    import random
    while True:
        port = random.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def wait_for(cond, timeout, what, interval=0.2):
    """Wait for a condition with a deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # keep polling; report the last failure
            last = e
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last error: %r)" % (timeout, what, last))


# PKI, as khactl's src/pki lays it out (docs/pki.md), ECDSA for speed

class PKI:
    def __init__(self, algorithm="ECDSA-P256", version_minor=31):
        self.algo = algorithm
        self.cas = {}
        for base, cn in (("ca", "kubernetes"), ("front-proxy-ca", "front-proxy-ca"), ("etcd/ca", "etcd-ca")):
            key = x509util.new_key(algorithm)
            self.cas[base] = (x509util.new_ca(cn, key), key)
        self.sa = x509util.new_key("RSA-2048")
        org = "system:kubelet-api-admin" if version_minor >= 37 else "kubeadm:cluster-admins"
        self.shared = {
            "apiserver-kubelet-client": self.leaf("ca", "kube-apiserver-kubelet-client", [org], client=True),
            "front-proxy-client": self.leaf("front-proxy-ca", "front-proxy-client", client=True),
            "apiserver-etcd-client": self.leaf("etcd/ca", "kube-apiserver-etcd-client", client=True),
            "etcd/healthcheck-client": self.leaf("etcd/ca", "kube-etcd-healthcheck-client", client=True),
        }

    def leaf(self, ca, cn, orgs=(), dns=(), ips=(), server=False, client=False, **kw):
        ca_cert, ca_key = self.cas[ca]
        key = x509util.new_key(self.algo)
        return x509util.new_signed(ca_cert, ca_key, key, cn, orgs, dns, ips, server=server, client=client, **kw), key

    def ca_hash(self):
        return x509util.spki_hash(self.cas["ca"][0])

    def ca_pem(self, base="ca"):
        return x509util.cert_pem(self.cas[base][0])

    def node_certs(self, name, ip, cpe_host, dns_domain="cluster.local", service_ip="10.96.0.1", extra=()):
        dns = [name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc." + dns_domain]
        ips = [service_ip, ip]
        for h in [cpe_host] + list(extra):
            (ips if h.replace(".", "").isdigit() else dns).append(h)
        return {
            "apiserver": self.leaf("ca", "kube-apiserver", dns=dns, ips=sorted(set(ips), key=ips.index), server=True,
                                   client=True),
            "etcd/server": self.leaf("etcd/ca", name, dns=[name, "localhost"], ips=[ip, "127.0.0.1", "::1"],
                                     server=True, client=True),
            "etcd/peer": self.leaf("etcd/ca", name, dns=[name, "localhost"], ips=[ip, "127.0.0.1", "::1"],
                                   server=True, client=True),
        }

    def place(self, root, files, with_ca_keys=True):
        d = os.path.join(root, "etc/kubernetes/pki")
        for base, (cert, key) in self.cas.items():
            x509util.write_atomic(os.path.join(d, base + ".crt"), x509util.cert_pem(cert), 0o644)
            if with_ca_keys:
                x509util.write_atomic(os.path.join(d, base + ".key"), x509util.key_pem(key), 0o600)
        x509util.write_atomic(os.path.join(d, "sa.key"), x509util.key_pem(self.sa), 0o600)
        x509util.write_atomic(os.path.join(d, "sa.pub"), x509util.public_key_pem(self.sa.public_key()), 0o644)
        for base, (cert, key) in dict(self.shared, **files).items():
            x509util.write_atomic(os.path.join(d, base + ".crt"), x509util.cert_pem(cert), 0o644)
            x509util.write_atomic(os.path.join(d, base + ".key"), x509util.key_pem(key), 0o600)


# A tiny systemd for one node root

SHIM = """#!/usr/bin/python3
# systemctl shim for a khalab stand-in test node: forwards to the test's Systemd.
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(%r)
s.sendall(("\\t".join(sys.argv[1:]) + "\\n").encode())
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
code, _, text = data.decode().partition("\\n")
sys.stdout.write(text)
sys.exit(int(code))
"""


def parse_env_file(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                k, v = line.split("=", 1)
                out[k.strip()] = " ".join(shlex.split(v)) if v else ""
    except FileNotFoundError:
        pass
    return out


class Unit:
    def __init__(self, systemd, name):
        self.systemd, self.name = systemd, name
        self.proc = None
        self.wanted = False
        self.restart_at = None

    def definition(self):
        root = self.systemd.root
        files = [os.path.join(root, "usr/lib/systemd/system", self.name)]
        dropin = os.path.join(root, "etc/systemd/system", self.name + ".d")
        if os.path.isdir(dropin):
            files += [os.path.join(dropin, f) for f in sorted(os.listdir(dropin)) if f.endswith(".conf")]
        env, env_files, execs, restart_sec = {}, [], [], 1.0
        for path in files:
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if line.startswith("Environment="):
                        for item in shlex.split(line[len("Environment="):]):
                            k, _, v = item.partition("=")
                            env[k] = v
                    elif line.startswith("EnvironmentFile="):
                        env_files.append(line[len("EnvironmentFile="):])
                    elif line.startswith("ExecStart="):
                        v = line[len("ExecStart="):]
                        execs = [v] if v else []
                    elif line.startswith("RestartSec="):
                        restart_sec = float(line[len("RestartSec="):])
        return env, env_files, execs[-1], restart_sec

    def start(self):
        env, env_files, cmd, _ = self.definition()
        root = self.systemd.root
        for ef in env_files:
            env.update(parse_env_file(os.path.join(root, ef.lstrip("-").lstrip("/"))))
        argv = []
        for word in shlex.split(cmd):
            if word.startswith("$"):
                argv += env.get(word[1:], "").split()
            else:
                argv.append(word)
        argv[0] = os.path.join(root, argv[0].lstrip("/"))
        log = open(os.path.join(root, "var/log/%s.log" % self.name), "ab")
        self.proc = _track(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.systemd.node.env(), start_new_session=True, cwd="/"))
        log.close()
        self.wanted = True
        self.restart_at = None

    def stop(self):
        self.wanted = False
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        self.systemd.node.kill_pods()

    def active(self):
        return self.proc is not None and self.proc.poll() is None

    def tick(self):
        """Restart=always, after RestartSec."""
        if not self.wanted or self.active():
            return
        now = time.monotonic()
        if self.restart_at is None:
            self.restart_at = now + self.definition()[3]
            self.systemd.node.kill_pods()
        elif now >= self.restart_at:
            self.start()


class Systemd:
    def __init__(self, node):
        self.node, self.root = node, node.root
        self.units = {}
        self.lock = threading.Lock()
        self.sock_path = os.path.join(node.tmp, "systemd.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.sock_path)
        self.srv.listen(16)
        self.srv.settimeout(0.2)
        self.stopping = threading.Event()
        shim_dir = os.path.join(node.tmp, "shim")
        os.makedirs(shim_dir)
        with open(os.path.join(shim_dir, "systemctl"), "w") as f:
            f.write(SHIM % self.sock_path)
        os.chmod(os.path.join(shim_dir, "systemctl"), 0o755)
        self.shim_dir = shim_dir
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def unit(self, name):
        name = name if name.endswith(".service") else name + ".service"
        if name not in self.units:
            self.units[name] = Unit(self, name)
        return self.units[name]

    def enabled(self, name):
        return os.path.lexists(os.path.join(self.root, "etc/systemd/system/multi-user.target.wants", name))

    def command(self, args):
        verb, names = args[0], args[1:]
        with self.lock:
            if verb in ("daemon-reload", "enable"):
                return 0, ""
            if verb == "is-enabled":
                n = names[0] if names[0].endswith(".service") else names[0] + ".service"
                return (0, "enabled\n") if self.enabled(n) else (1, "disabled\n")
            out = []
            for n in names:
                u = self.unit(n)
                if verb in ("start", "restart"):
                    if verb == "restart" or not u.active():
                        u.stop()
                        u.start()
                elif verb == "stop":
                    u.stop()
                elif verb == "is-active":
                    return (0, "active\n") if u.active() else (3, "inactive\n")
                else:
                    return 1, "unsupported verb %s\n" % verb
            return 0, "".join(out)

    def serve(self):
        while not self.stopping.is_set():
            with self.lock:
                for u in list(self.units.values()):
                    u.tick()
            try:
                conn, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                code, text = self.command(data.decode().strip().split("\t"))
                conn.sendall(("%d\n%s" % (code, text)).encode())

    def boot(self):
        """Start the enabled units, as a node's systemd does at boot."""
        for name in ("khalab-cri-standin.service", "kubelet.service"):
            if self.enabled(name):
                with self.lock:
                    self.unit(name).start()

    def shutdown(self):
        self.stopping.set()
        self.thread.join(timeout=5)
        with self.lock:
            for u in self.units.values():
                u.stop()
        self.srv.close()


class Node:
    """One stand-in node: a root directory, an address, ports, the installed stand-in."""

    def __init__(self, name, ip, version="v1.31.2", install=True, services=True):
        self.name, self.ip, self.version = name, ip, version
        self.tmp = tempfile.mkdtemp(prefix="khalab-standin-%s-" % name)
        self.root = os.path.join(self.tmp, "root")
        os.makedirs(self.root)
        self.ports = {str(p): free_port() for p in (2379, 2380, 2381, 10248, 10250, 10257, 10259)}
        self.api_port = free_port()
        self._write("etc/khalab-standin/ports.json", json.dumps(self.ports))
        self._write("proc/sys/net/ipv4/ip_forward", "1\n")
        self._write("etc/machine-id", "%032x\n" % (hash(self.tmp) & (2 ** 128 - 1)))
        os.makedirs(os.path.join(self.root, "run"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "var/log"), exist_ok=True)
        os.symlink("../run", os.path.join(self.root, "var/run"))
        if install:
            subprocess.run([os.path.join(STANDIN, "install.sh"), "--root", self.root, "--version", version],
                           check=True, capture_output=True)
        else:
            self._write("usr/lib/khalab-standin/VERSION", version + "\n")
        self.systemd = Systemd(self) if services else None

    def _write(self, rel, text, mode=0o644):
        x509util.write_atomic(os.path.join(self.root, rel), text, mode)

    def write(self, node_path, text, mode=0o600):
        self._write(node_path.lstrip("/"), text, mode)
        return node_path

    def path(self, node_path):
        return os.path.join(self.root, node_path.lstrip("/"))

    def exists(self, node_path):
        return os.path.lexists(self.path(node_path))

    def read(self, node_path):
        with open(self.path(node_path)) as f:
            return f.read()

    def env(self, extra=None):
        e = {"KHALAB_STANDIN_ROOT": self.root, "LANG": "C.UTF-8",
             "PATH": ":".join(([self.systemd.shim_dir] if self.systemd else []) +
                              [os.path.join(self.root, "usr/bin"), SYSTEM_PATH])}
        if self.systemd is None:
            e["KHALAB_STANDIN_NO_INITSYSTEM"] = "1"
        e.update(extra or {})
        return e

    def kubeadm(self, *args, stdin=None, timeout=240, env=None):
        exe = os.path.join(self.root, "usr/bin/kubeadm")
        if not os.path.exists(exe):
            exe = os.path.join(STANDIN, "bin", "kubeadm")
        p = _track(subprocess.Popen([exe] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.PIPE, env=self.env(env), start_new_session=True, text=True))
        try:
            out, err = p.communicate(stdin or "", timeout=timeout)
        finally:
            stop_process(p, grace=1)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def boot(self):
        self.systemd.boot()
        if self.systemd.enabled("khalab-cri-standin.service"):
            wait_for(lambda: os.path.exists(self.path("/run/containerd/containerd.sock")), 15, "the CRI socket")

    def kill_pods(self):
        """What systemd's KillMode=control-group does to a stopped kubelet's children."""
        d = self.path("/run/khalab-standin/pods")
        if not os.path.isdir(d):
            return
        for f in os.listdir(d):
            try:
                with open(os.path.join(d, f)) as fh:
                    pid = int(fh.read().split()[0])
                os.killpg(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass

    def client(self, kubeconfig_path="/etc/kubernetes/admin.conf"):
        return kubeclient.Client.from_kubeconfig(kubeconfig.parse(self.read(kubeconfig_path)), timeout=5)

    def etcd(self, endpoints=None):
        pki = self.path("/etc/kubernetes/pki/etcd")
        return etcdclient.Client(endpoints or ["https://%s:%s" % (self.ip, self.ports["2379"])],
                                 pki + "/ca.crt", pki + "/healthcheck-client.crt", pki + "/healthcheck-client.key")

    def argv_log(self):
        p = self.path("/var/log/khalab-standin/argv.log")
        if not os.path.exists(p):
            return []
        with open(p) as f:
            return [json.loads(l) for l in f if l.strip()]

    def destroy(self):
        if self.systemd is not None:
            self.systemd.shutdown()
        self.kill_pods()
        shutil.rmtree(self.tmp, ignore_errors=True)


def init_config(node, cpe=None, version="v1.31.2", api="kubeadm.k8s.io/v1beta4", token="abcdef.0123456789abcdef",
                extra_cluster="", extra_init="", timeouts=True):
    """An init configuration of the kind khactl renders, for a loopback node."""
    cpe = cpe or "%s:%d" % (node.ip, node.api_port)
    args = "  kubeletExtraArgs:\n  - name: node-ip\n    value: %s\n" % node.ip if api.endswith("v1beta4") \
        else "  kubeletExtraArgs:\n    node-ip: %s\n" % node.ip
    t = ("timeouts:\n  controlPlaneComponentHealthCheck: 60s\n  kubeletHealthCheck: 60s\n"
         "  kubernetesAPICall: 30s\n  etcdAPICall: 30s\n") if timeouts and api.endswith("v1beta4") else ""
    return """apiVersion: %(api)s
kind: InitConfiguration
bootstrapTokens:
- token: %(token)s
  ttl: 1h0m0s
localAPIEndpoint:
  advertiseAddress: %(ip)s
  bindPort: %(port)d
nodeRegistration:
  name: %(name)s
  criSocket: unix:///var/run/containerd/containerd.sock
%(args)s%(timeouts)s%(extra_init)s---
apiVersion: %(api)s
kind: ClusterConfiguration
kubernetesVersion: %(version)s
clusterName: kubernetes
controlPlaneEndpoint: %(cpe)s
networking:
  serviceSubnet: 10.96.0.0/12
  podSubnet: 10.244.0.0/16
  dnsDomain: cluster.local
encryptionAlgorithm: ECDSA-P256
%(extra_cluster)s---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
""" % {"api": api, "token": token, "ip": node.ip, "port": node.api_port, "name": node.name, "args": args,
       "timeouts": t, "extra_init": extra_init, "version": version, "cpe": cpe, "extra_cluster": extra_cluster}


def join_config(node, endpoint, ca_hash, token="abcdef.0123456789abcdef", control_plane=True, key="",
                api="kubeadm.k8s.io/v1beta4", extra="", timeouts="60s", discovery="20s", etcd_api="30s"):
    cp = ""
    if control_plane:
        cp = "controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: %s\n    bindPort: %d\n" % (node.ip, node.api_port)
        if key:
            cp += "  certificateKey: %s\n" % key
    t = ("timeouts:\n  controlPlaneComponentHealthCheck: %s\n  kubeletHealthCheck: %s\n  kubernetesAPICall: 30s\n"
         "  etcdAPICall: %s\n  discovery: %s\n  tlsBootstrap: 60s\n" % (timeouts, timeouts, etcd_api, discovery)) \
        if api.endswith("v1beta4") else ""
    args = "  kubeletExtraArgs:\n  - name: node-ip\n    value: %s\n" % node.ip if api.endswith("v1beta4") \
        else "  kubeletExtraArgs:\n    node-ip: %s\n" % node.ip
    return """apiVersion: %(api)s
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: %(endpoint)s
    token: %(token)s
    caCertHashes:
    - %(hash)s
nodeRegistration:
  name: %(name)s
  criSocket: unix:///var/run/containerd/containerd.sock
%(args)s%(cp)s%(t)s%(extra)s""" % {"api": api, "endpoint": endpoint, "token": token, "hash": ca_hash,
                                   "name": node.name, "args": args, "cp": cp, "t": t, "extra": extra}


class ResultAsserts:
    def assertOk(self, res):
        self.assertEqual(res.returncode, 0, "stdout:\n%s\nstderr:\n%s" % (res.stdout, res.stderr))

    def assertFails(self, res, text, code=None):
        self.assertNotEqual(res.returncode, 0, "expected a failure; stdout:\n%s" % res.stdout)
        if code is not None:
            self.assertEqual(res.returncode, code, res.stderr)
        self.assertIn(text, res.stderr)


class NodeTestCase(ResultAsserts, unittest.TestCase):
    """Creates nodes on demand and always destroys them."""

    def setUp(self):
        self._nodes = []
        self.addCleanup(self._destroy)

    def _destroy(self):
        for n in reversed(self._nodes):
            n.destroy()

    def node(self, name="cp1", ip="127.0.0.2", **kw):
        n = Node(name, ip, **kw)
        self._nodes.append(n)
        return n

