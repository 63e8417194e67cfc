"""kubeadm's phase runner (k/k cmd/kubeadm/app/cmd/phases/workflow/runner.go): phases run
in order, `--skip-phases`/`skipPhases` skip a phase and its children, and an error is
wrapped once as `error execution phase <name>: ...`."""

from ..out import KubeadmError
from . import failinject


class Phase:
    def __init__(self, name, run=None, children=(), hidden=False):
        self.name, self.run, self.children, self.hidden = name, run, list(children), hidden


class _PhaseFailed(Exception):
    def __init__(self, err):
        self.err = err


def run(command, phases, skip, data):
    skip = {s.strip() for s in skip if s.strip()}
    try:
        for p in phases:
            _run(command, p, "", skip, data)
    except _PhaseFailed as f:
        raise f.err from None


def _run(command, phase, parent, skip, data):
    full = "%s/%s" % (parent, phase.name) if parent else phase.name
    if full in skip or (parent and parent in skip):
        return
    try:
        failinject.phase(command, full)
        if phase.run is not None:
            phase.run(data)
    except KubeadmError as e:
        raise _PhaseFailed(e.wrap("error execution phase %s" % full)) from None
    for child in phase.children:
        _run(command, child, full, skip if full not in skip else skip | {full}, data)


def split_skip(flag_value, config_list):
    """The flag wins when it is set; otherwise the configuration's skipPhases."""
    if flag_value:
        return [s for s in flag_value.split(",") if s]
    return list(config_list or [])
