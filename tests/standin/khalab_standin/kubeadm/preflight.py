"""kubeadm's preflight checks (k/k cmd/kubeadm/app/preflight/checks.go, checks_linux.go):
real names, `[ERROR X]`/`[WARNING X]`, and --ignore-preflight-errors matched
case-insensitively ("all" ignores everything).

Omitted (README): SystemVerification (kernel config), Firewalld, HTTPProxy, Hostname,
Swap, image pulls.
"""

import errno
import os
import shutil
import socket
import subprocess
import sys

from .. import env, version
from ..out import KubeadmError, PREFLIGHT
from . import failinject, manifests


class Check:
    def __init__(self, name, fn, warning_only=False):
        self.name, self.fn, self.warning_only = name, fn, warning_only

    def run(self):
        """Returns (warnings, errors) as message lists."""
        res = self.fn()
        if res is None:
            return [], []
        warnings, errors = res
        if self.warning_only:
            return warnings + errors, []
        return warnings, errors


def _listen_check(name_port, real_port):
    """PortOpenCheck: net.Listen("tcp", ":PORT"), i.e. every address of both families, with
    SO_REUSEADDR as Go sets it (connections in TIME_WAIT do not count)."""
    def fn():
        for family, addr in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.bind((addr, real_port))
                return None
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return [], ["Port %d is in use" % name_port]
                if family == socket.AF_INET6:
                    continue
                return [], ["error checking if port %d is in use: %s" % (name_port, e)]
            finally:
                s.close()
        return None
    return Check("Port-%d" % name_port, fn)


def port_open(port):
    """A well-known port (10250, 2379, ...): on a test node the port map applies."""
    return _listen_check(port, env.port(port))


def bind_port_check(port):
    """The API server's bindPort, taken as it is."""
    return _listen_check(port, port)


def file_available(path):
    def fn():
        if os.path.lexists(env.host_path(path)):
            return [], ["%s already exists" % path]
        return None
    return Check("FileAvailable-" + path.replace("/", "-"), fn)


def dir_available(path):
    def fn():
        p = env.host_path(path)
        if os.path.isdir(p) and os.listdir(p):
            return [], ["%s is not empty" % path]
        return None
    return Check("DirAvailable-" + path.replace("/", "-"), fn)


def file_content(path, want):
    def fn():
        try:
            with open(env.proc_path(path)) as f:
                got = f.read().strip()
        except OSError as e:
            return [], ["%s: %s" % (path, e.strerror)]
        if got != want:
            return [], ["%s contents are not set to %s" % (path, want)]
        return None
    return Check("FileContent-" + path.replace("/", "-"), fn)


def privileged_user():
    def fn():
        if os.geteuid() != 0:
            return [], ["user is not running as root"]
        return None
    return Check("IsPrivilegedUser", fn)


def in_path(executable, mandatory=True):
    def fn():
        if shutil.which(executable) is None:
            msg = "%s not found in system path" % executable
            return ([], [msg]) if mandatory else ([msg], [])
        return None
    return Check("FileExisting-" + executable, fn)


def num_cpu(minimum=2):
    def fn():
        n = os.cpu_count() or 1
        if n < minimum:
            return [], ["the number of available CPUs %d is less than the required %d" % (n, minimum)]
        return None
    return Check("NumCPU", fn)


def mem(minimum=1700):
    def fn():
        try:
            for line in open(env.proc_path("/proc/meminfo")):
                if line.startswith("MemTotal:"):
                    mb = int(line.split()[1]) // 1024
                    if mb < minimum:
                        return [], ["the system RAM (%d MB) is less than the minimum %d MB" % (mb, minimum)]
        except OSError:
            pass
        return None
    return Check("Mem", fn)


def cri(socket_url):
    def fn():
        path = socket_url[len("unix://"):] if socket_url.startswith("unix://") else socket_url
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(env.host_path(path))
            return None
        except OSError as e:
            reason = "connect: no such file or directory" if isinstance(e, FileNotFoundError) else \
                "connect: connection refused" if isinstance(e, ConnectionRefusedError) else str(e)
            return [], ['container runtime is not running: output: , error: validate CRI v1 runtime API for '
                        'endpoint "%s": rpc error: code = Unavailable desc = connection error: desc = '
                        '"transport: Error while dialing: dial unix %s: %s"' % (socket_url, path, reason)]
        finally:
            s.close()
    return Check("CRI", fn)


def kubernetes_version(k8s_version):
    def fn():
        kv, cur = version.parse(k8s_version), version.current()
        if (kv.major, kv.minor) > (cur.major, cur.minor):
            return ["Kubernetes version is greater than kubeadm version. Please consider to upgrade kubeadm. "
                    "Kubernetes version: %s. Kubeadm version: %d.%d.x" % (kv.text, cur.major, cur.minor)], []
        return None
    return Check("KubernetesVersion", fn)


def kubelet_version(k8s_version):
    def fn():
        try:
            text = subprocess.run(["kubelet", "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            return [], ["couldn't get kubelet version: %s" % e]
        try:
            kubelet = version.parse(text.replace("Kubernetes", "").strip())
        except ValueError:
            return [], ["couldn't get kubelet version: cannot parse %r" % text]
        cp = version.parse(k8s_version) if k8s_version else version.current()
        if (kubelet.major, kubelet.minor) > (cp.major, cp.minor):
            return [], ['the kubelet version is higher than the control plane version. This is not a supported '
                        'version skew and may lead to a malfunctional cluster. Kubelet version: "%s" Control '
                        'plane version: "%s"' % (kubelet.text, cp.text)]
        if cp.minor - kubelet.minor > 3:
            return [], ['Kubelet version "%s" is lower than kubeadm can support. Please upgrade kubelet'
                        % kubelet.text]
        return None
    return Check("KubeletVersion", fn)


def kubelet_service():
    def fn():
        if not env.init_system_available():
            return ["no supported init system detected, skipping checking for services"], []
        r = subprocess.run(["systemctl", "is-enabled", "kubelet.service"], capture_output=True, text=True)
        if r.returncode != 0:
            return ["kubelet service is not enabled, please run 'systemctl enable kubelet.service'"], []
        return None
    return Check("Service-Kubelet", fn, warning_only=True)


def common_checks(k8s_version, cri_socket, checks):
    checks.append(cri(cri_socket))
    for exe in ["ip", "iptables", "mount", "nsenter"] + (["conntrack"] if version.needs_conntrack() else []):
        checks.append(in_path(exe))
    for exe in ["ebtables", "ethtool", "socat", "tc", "touch"]:
        checks.append(in_path(exe, mandatory=False))
    checks.append(kubelet_version(k8s_version))
    checks.append(kubelet_service())
    checks.append(port_open(10250))
    return checks


def init_checks(cfg, secondary=False):
    """RunInitNodeChecks (also the control-plane part of a control-plane join)."""
    ep = cfg["localAPIEndpoint"]
    cluster = cfg["cluster"]
    checks = []
    if not secondary:
        checks += [num_cpu(), mem(), kubernetes_version(cluster["kubernetesVersion"])]
    checks += [bind_port_check(int(ep["bindPort"])), port_open(10259), port_open(10257)]
    checks += [file_available(manifests.manifest_path(c)) for c in manifests.COMPONENTS]
    ipv6 = ":" in ep["advertiseAddress"]
    if not secondary:
        checks = common_checks(cluster["kubernetesVersion"], cfg["criSocket"], checks)
    checks.append(file_content("/proc/sys/net/ipv6/conf/default/forwarding" if ipv6
                               else "/proc/sys/net/ipv4/ip_forward", "1"))
    if cluster["etcd"].get("local") is not None:
        checks += [port_open(2379), port_open(2380), dir_available(cluster["etcd"]["local"]["dataDir"])]
    return checks


def join_checks(join):
    checks = [dir_available("/etc/kubernetes/manifests"), file_available("/etc/kubernetes/kubelet.conf"),
              file_available("/etc/kubernetes/bootstrap-kubelet.conf")]
    checks = common_checks("", join["nodeRegistration"]["criSocket"], checks)
    if join.get("controlPlane") is None:
        checks.append(file_available(join["caCertPath"]))
    checks.append(file_content("/proc/sys/net/ipv4/ip_forward", "1"))
    return checks


def ignored(name, ignore):
    return "all" in ignore or name.lower() in ignore


def run_root_check(ignore):
    run_checks([privileged_user()], ignore)


def run_checks(checks, ignore, command=None):
    """RunChecks: warnings printed, errors collected into one preflight error."""
    errors = []
    for c in checks:
        warnings, errs = c.run()
        for w in warnings:
            sys.stderr.write("\t[WARNING %s]: %s\n" % (c.name, w))
        for e in errs:
            if ignored(c.name, ignore):
                sys.stderr.write("\t[WARNING %s]: %s\n" % (c.name, e))
            else:
                errors.append((c.name, e))
    if command is not None:
        for name, msg in failinject.preflight_errors(command):
            if not ignored(name, ignore) or name == failinject.INJECTED_CHECK:
                errors.append((name, msg))
    sys.stderr.flush()
    if errors:
        raise preflight_error(errors)


def preflight_error(errors):
    lines = "".join("\t[ERROR %s]: %s\n" % (n, m) for n, m in errors)
    hint = "[preflight] If you know what you are doing, you can make a check non-fatal with " \
           "`--ignore-preflight-errors=...`"
    if version.error_prefix():
        # 1.34+ (k/k PR #132080) prints the list itself and returns a short error.
        sys.stdout.flush()
        sys.stderr.write("[preflight] Some fatal errors occurred:\n%s%s\n" % (lines, hint))
        sys.stderr.flush()
        return KubeadmError("preflight checks failed", PREFLIGHT)
    return KubeadmError("[preflight] Some fatal errors occurred:\n%s%s" % (lines, hint), PREFLIGHT)


def validate_ignore(cli, cfg_list):
    """ValidateIgnorePreflightErrors: case-insensitive set; "all" cannot be combined."""
    from ..out import field_invalid, validation_error
    items = {i.lower() for i in (cfg_list or [])} | {i.lower() for i in (cli or [])}
    if "all" in items and len(items) > 1:
        raise validation_error([field_invalid("ignore-preflight-errors", ",".join(sorted(items)),
                                              "don't specify individual checks if 'all' is used")])
    return items
