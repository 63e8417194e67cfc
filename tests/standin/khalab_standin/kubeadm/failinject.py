"""Failure injection for lab tests: make a chosen phase fail with kubeadm's real text.

Directives come from the node file /etc/khalab-standin/fail (one per line) and from
$KHALAB_STANDIN_FAIL (separated by `;`). Syntax: `[COMMAND:]DIRECTIVE[=ARG] [once]`, where
COMMAND is init, join or reset (default: any) and `once` removes the line from the file
after it fired (so a retried `khactl up` succeeds). Directives:

- `preflight[=CHECK]`: preflight fails with `[ERROR CHECK]` (default
  FileContent--proc-sys-net-ipv4-ip_forward, which khactl never ignores); it cannot be
  ignored with --ignore-preflight-errors.
- `wait-control-plane-timeout`: wait-control-plane fails as if the control plane never became
  healthy within controlPlaneComponentHealthCheck (immediately, with the timeout's text).
- `etcd-promote-timeout`: join adds the learner, writes etcd.yaml, then promotion fails with
  etcd's "can only promote a learner member which is in sync with leader" (the learner stays,
  as it does in real life).
- `discovery-timeout`: join's discovery fails as with an unknown or expired token.
- `phase=NAME`: phase NAME (e.g. kubelet-start, upload-config, control-plane-prepare/certs)
  fails with "khalab stand-in: injected failure".
"""

import os

from .. import env

INJECTED_CHECK = "FileContent--proc-sys-net-ipv4-ip_forward"
PREFLIGHT_MESSAGES = {
    "FileContent--proc-sys-net-ipv4-ip_forward": "/proc/sys/net/ipv4/ip_forward contents are not set to 1",
    "IsPrivilegedUser": "user is not running as root",
    "CRI": "container runtime is not running",
}


def _lines():
    out = []
    text = env.read_text(env.FAIL_FILE) or ""
    for line in text.splitlines():
        if line.strip() and not line.strip().startswith("#"):
            out.append((line, True))
    for part in (os.environ.get(env.FAIL_ENV) or "").split(";"):
        if part.strip():
            out.append((part, False))
    return out


def _parse(line):
    words = line.split()
    once = len(words) > 1 and words[-1] == "once"
    spec = words[0]
    command = None
    if ":" in spec.split("=")[0]:
        command, spec = spec.split(":", 1)
    name, _, arg = spec.partition("=")
    return command, name, arg, once


def take(command, directive):
    """The argument of a matching directive (or "" if it has none), None if none matches;
    a `once` directive is consumed."""
    for line, from_file in _lines():
        cmd, name, arg, once = _parse(line)
        if name != directive or (cmd and cmd != command):
            continue
        if once and from_file:
            _remove(line)
        return arg
    return None


def _remove(line):
    path = env.host_path(env.FAIL_FILE)
    try:
        with open(path) as f:
            kept = [l for l in f.read().splitlines() if l != line]
        with open(path, "w") as f:
            f.write("".join(l + "\n" for l in kept))
    except OSError:
        pass


def preflight_errors(command):
    arg = take(command, "preflight")
    if arg is None:
        return []
    name = arg or INJECTED_CHECK
    return [(name, PREFLIGHT_MESSAGES.get(name, "khalab stand-in: injected preflight failure"))]


def phase(command, name):
    """Raise the generic injected failure for phase `name` if asked to."""
    from ..out import KubeadmError
    for line, from_file in _lines():
        cmd, directive, arg, once = _parse(line)
        if directive == "phase" and arg == name and (not cmd or cmd == command):
            if once and from_file:
                _remove(line)
            raise KubeadmError("khalab stand-in: injected failure")
