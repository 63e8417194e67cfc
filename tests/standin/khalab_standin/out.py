"""kubeadm's output conventions: `[phase]` lines on stdout, klog warnings and errors on
stderr, and the exit code rules of the emulated version."""

import datetime
import json
import os
import sys

from . import version

STACK_HINT = "To see the stack trace of this error execute with --v=5 or higher"


def say(line=""):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def klog(severity, msg, where="kubeadm.go:1"):
    """A klog line such as `W0113 07:54:18.346337    7482 initconfiguration.go:332] msg`."""
    t = datetime.datetime.now()
    sys.stderr.write("%s%s %s %7d %s] %s\n" % (
        severity, t.strftime("%m%d"), t.strftime("%H:%M:%S.%f"), os.getpid(), where,
        msg.rstrip("\n")))
    sys.stderr.flush()


def warn(msg, where="kubeadm.go:1"):
    klog("W", msg, where)


def info(msg, where="kubeadm.go:1"):
    klog("I", msg, where)


DEFAULT, PREFLIGHT, VALIDATION = "default", "preflight", "validation"


class KubeadmError(Exception):
    """An error the way kubeadm's exit path sees it: its text, the concrete type it had
    (a validation aggregate, a preflight error, anything else) and whether a phase runner
    wrapped it (wrapping hides the type from kubeadm's exit-code switch)."""

    def __init__(self, message, kind=DEFAULT, wrapped=False):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.wrapped = wrapped

    def wrap(self, prefix):
        return KubeadmError("%s: %s" % (prefix, self.message), self.kind, True)


def aggregate(messages):
    """apimachinery's errors.NewAggregate(...).Error()."""
    msgs = []
    for m in messages:
        if m not in msgs:
            msgs.append(m)
    if len(msgs) == 1:
        return msgs[0]
    return "[" + ", ".join(msgs) + "]"


def go_quote(s):
    return json.dumps(s, ensure_ascii=False)


def field_invalid(path, value, detail):
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, (int, float)):
        shown = str(value)
    elif isinstance(value, str):
        shown = go_quote(value)
    elif value is None:
        shown = "null"
    else:
        shown = go_fmt(value)
    s = "%s: Invalid value: %s" % (path, shown)
    return s + (": " + detail if detail else "")


def field_required(path, detail):
    return "%s: Required value%s" % (path, ": " + detail if detail else "")


def go_fmt(value):
    """Go's %v for the few composite values kubeadm prints."""
    if isinstance(value, list):
        return "[" + " ".join(go_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join("%s:%s" % (k, go_fmt(v)) for k, v in sorted(value.items())) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validation_error(messages):
    return KubeadmError(aggregate(messages), VALIDATION)


def exit_code(err):
    if not version.typed_exit_codes() or err.wrapped:
        return 1
    return {VALIDATION: 3, PREFLIGHT: 2}.get(err.kind, 1)


def fail(err):
    """Print the error as kubeadm's main does and exit."""
    msg = err.message
    if version.error_prefix():
        msg = "error: " + msg
    sys.stdout.flush()
    sys.stderr.write(msg.rstrip("\n") + "\n" + STACK_HINT + "\n")
    sys.stderr.flush()
    sys.exit(exit_code(err))
