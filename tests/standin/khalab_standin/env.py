"""Where the stand-in finds its files, its emulated version and its knobs.

On a lab node everything is at the real paths (`/etc/kubernetes`, `/var/lib/etcd`, ...). Tests
run several "nodes" on one machine, so every absolute node path goes through `host_path`,
which prefixes `$KHALAB_STANDIN_ROOT` when it is set. The variable is inherited by every
process the stand-in starts, so a whole node (kubeadm, kubelet, its static pods) lives under
one directory.

Files read here (all under the root):
- `/usr/lib/khalab-standin/VERSION`: the emulated Kubernetes version, written by install.sh.
- `/etc/khalab-standin/ports.json`: optional `{"2379": 23791, ...}`; tests give each loopback
  node its own ports. Check names and messages keep the canonical port.
- `/etc/khalab-standin/fail`: failure injection (see `failinject`).
- `/etc/khalab-standin/lint-subjects`: `warn` or `error` turns on the certificate subject lint.
- `/var/log/khalab-standin/argv.log`: every stand-in process appends its argv (JSON lines).
"""

import datetime
import json
import os
import shutil
import sys

ROOT_ENV = "KHALAB_STANDIN_ROOT"
NO_INITSYSTEM_ENV = "KHALAB_STANDIN_NO_INITSYSTEM"
FAIL_ENV = "KHALAB_STANDIN_FAIL"
LINT_ENV = "KHALAB_STANDIN_LINT_SUBJECTS"

# The directory holding the `khalab_standin` package and `bin/` (source tree or install).
INSTALL_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

VERSION_FILE = "/usr/lib/khalab-standin/VERSION"
PORTS_FILE = "/etc/khalab-standin/ports.json"
FAIL_FILE = "/etc/khalab-standin/fail"
LINT_FILE = "/etc/khalab-standin/lint-subjects"
ARGV_LOG = "/var/log/khalab-standin/argv.log"

BANNER_NAMES = {
    "kubeadm": "kubeadm",
    "kubelet": "kubelet",
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
    "khalab-cri-standin": "CRI socket",
}


def root():
    return os.environ.get(ROOT_ENV) or "/"


def redirected():
    return root() != "/"


def host_path(path):
    """The file behind node path `path` (absolute) for this process's root."""
    if not redirected() or not os.path.isabs(path):
        return path
    return os.path.join(root(), path.lstrip("/"))


def proc_path(path):
    """Like host_path, but falls back to the real /proc when a test root does not fake it."""
    p = host_path(path)
    return p if os.path.exists(p) else path


def program(name):
    """The stand-in program `name` (kube-apiserver, ...) of this installation."""
    return os.path.join(INSTALL_DIR, "bin", name)


def read_text(path, default=None):
    try:
        with open(host_path(path), encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return default


def emulated_version():
    text = read_text(VERSION_FILE)
    if text is None:
        sys.stderr.write(
            "khalab stand-in: no emulated version at %s (install with tests/standin/install.sh)\n"
            % host_path(VERSION_FILE))
        sys.exit(1)
    return text.strip()


_ports = None


def port(canonical):
    """The port this node really uses for a well-known port (identity on lab nodes)."""
    global _ports
    if _ports is None:
        text = read_text(PORTS_FILE)
        _ports = {int(k): int(v) for k, v in json.loads(text).items()} if text else {}
    return _ports.get(int(canonical), int(canonical))


def init_system_available():
    """kubeadm drives systemd through systemctl; tests run without one."""
    if os.environ.get(NO_INITSYSTEM_ENV) == "1":
        return False
    return shutil.which("systemctl") is not None


def lint_mode():
    mode = os.environ.get(LINT_ENV) or (read_text(LINT_FILE) or "").strip()
    return mode if mode in ("warn", "error") else ""


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def record_argv(program_name, argv):
    """Append this invocation's argv to the node's argv log, so tests can prove that no
    secret was ever passed on a command line (where `ps` shows it)."""
    path = host_path(ARGV_LOG)
    entry = {
        "time": now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "pid": os.getpid(),
        "program": program_name,
        "argv": [program_name] + list(argv),
    }
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as e:
        sys.stderr.write("khalab stand-in: cannot write the argv log %s: %s\n" % (path, e))


def banner(program_name):
    sys.stderr.write("khalab stand-in %s (NOT the real %s) emulating %s\n" % (
        BANNER_NAMES.get(program_name, program_name), program_name, emulated_version()))
    sys.stderr.flush()
