"""The stand-in kubeadm's command line: cobra/pflag parsing (`unknown flag: --x`), the
`--config` mixing rule, and the commands."""

import json
import sys

from .. import env, kubeclient, kubeconfig, out, tokens, version, yamlio
from ..out import KubeadmError
from . import certs_cmd, common, config, init, join, reset

S, B, L, I, D = "string", "bool", "slice", "int", "duration"

GLOBAL = {"add-dir-header": B, "log-file": S, "log-file-max-size": S, "one-output": B, "rootfs": S,
          "skip-headers": B, "skip-log-headers": B, "v": S}
SHORT = {"v": "v", "h": "help"}

COMMANDS = {
    "init": {"apiserver-advertise-address": S, "apiserver-bind-port": I, "apiserver-cert-extra-sans": L,
             "cert-dir": S, "certificate-key": S, "config": S, "control-plane-endpoint": S, "cri-socket": S,
             "dry-run": B, "feature-gates": S, "ignore-preflight-errors": L, "image-repository": S,
             "kubernetes-version": S, "node-name": S, "patches": S, "pod-network-cidr": S, "service-cidr": S,
             "service-dns-domain": S, "skip-certificate-key-print": B, "skip-phases": S, "skip-token-print": B,
             "token": S, "token-ttl": D, "upload-certs": B},
    "join": {"apiserver-advertise-address": S, "apiserver-bind-port": I, "certificate-key": S, "config": S,
             "control-plane": B, "cri-socket": S, "discovery-file": S, "discovery-token": S,
             "discovery-token-ca-cert-hash": L, "discovery-token-unsafe-skip-ca-verification": B, "dry-run": B,
             "ignore-preflight-errors": L, "node-name": S, "patches": S, "skip-phases": S,
             "tls-bootstrap-token": S, "token": S},
    "reset": {"cert-dir": S, "cleanup-tmp-dir": B, "config": S, "cri-socket": S, "dry-run": B, "force": B,
              "ignore-preflight-errors": L, "kubeconfig": S, "skip-phases": S},
    "certs check-expiration": {"cert-dir": S, "config": S, "kubeconfig": S, "output": S,
                               "allow-missing-template-keys": B, "show-managed-fields": B},
    "certs renew": {"cert-dir": S, "config": S, "kubeconfig": S},
    "config validate": {"config": S, "allow-experimental-api": B, "kubeconfig": S},
    "token create": {"certificate-key": S, "config": S, "description": S, "groups": L,
                     "print-join-command": B, "ttl": D, "usages": L, "dry-run": B, "kubeconfig": S},
    "version": {"output": S},
}
COMMAND_SHORT = {"reset": {"f": "force"}, "certs check-expiration": {"o": "output"}, "version": {"o": "output"}}
BOOL_VALUES = {"true": True, "1": True, "t": True, "T": True, "TRUE": True, "True": True,
               "false": False, "0": False, "f": False, "F": False, "FALSE": False, "False": False}
ALLOWED_WITH_CONFIG = {"config", "ignore-preflight-errors", "dry-run", "kubeconfig", "node-name",
                       "kubeconfig-dir", "upload-certs", "print-join-command", "rootfs", "v", "log-file"}


class FlagError(Exception):
    pass


def parse(command, argv):
    """pflag semantics: --name=value, --name value, bools without a value, repeated slices."""
    spec = dict(GLOBAL, help=B, **COMMANDS[command])
    shorts = dict(SHORT, **COMMAND_SHORT.get(command, {}))
    values, changed, args = {}, [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            args.extend(argv[i:])
            break
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            if name not in spec:
                raise FlagError("unknown flag: --%s" % name)
        elif a.startswith("-") and len(a) > 1:
            short, eq, val = a[1:2], "=" if len(a) > 2 else "", a[2:].lstrip("=")
            if short not in shorts:
                raise FlagError("unknown shorthand flag: '%s' in %s" % (short, a))
            name = shorts[short]
        else:
            args.append(a)
            continue
        kind = spec[name]
        if kind == B:
            if eq:
                if val not in BOOL_VALUES:
                    raise FlagError('invalid argument "%s" for "--%s" flag: strconv.ParseBool: parsing "%s": '
                                    "invalid syntax" % (val, name, val))
                v = BOOL_VALUES[val]
            else:
                v = True
        else:
            if not eq:
                if i >= len(argv):
                    raise FlagError("flag needs an argument: --%s" % name)
                val = argv[i]
                i += 1
            if kind == I:
                try:
                    v = int(val)
                except ValueError:
                    raise FlagError('invalid argument "%s" for "--%s" flag: strconv.ParseInt: parsing "%s": '
                                    "invalid syntax" % (val, name, val)) from None
            elif kind == D:
                try:
                    tokens.parse_duration(val)
                except ValueError as e:
                    raise FlagError('invalid argument "%s" for "--%s" flag: %s' % (val, name, e)) from None
                v = val
            elif kind == L:
                v = values.get(name, []) + [x for x in val.split(",") if x]
            else:
                v = val
        values[name] = v
        if name not in changed:
            changed.append(name)
    return values, changed, args


def validate_mixed(changed):
    """validation.ValidateMixedArguments."""
    if "config" not in changed:
        return
    bad = sorted(f for f in changed if f not in ALLOWED_WITH_CONFIG and not f.startswith("skip-"))
    if bad:
        raise KubeadmError("can not mix '--config' with arguments [%s]" % " ".join(bad))


USAGE = """khalab stand-in kubeadm (NOT the real kubeadm): a test double for khactl's lab.

Usage:
  kubeadm [command]

Available Commands:
  certs       Commands related to handling kubernetes certificates (check-expiration, renew)
  config      Manage configuration for a kubeadm cluster (validate)
  init        Run this command in order to set up the Kubernetes control plane
  join        Run this on any machine you wish to join an existing cluster
  reset       Performs a best effort revert of changes made to this host by 'kubeadm init' or 'kubeadm join'
  token       Manage bootstrap tokens (create)
  version     Print the version of kubeadm
"""


def cmd_version(opts):
    v = version.current()
    info = {"major": str(v.major), "minor": str(v.minor), "gitVersion": v.text,
            "gitCommit": "khalab-standin-not-the-real-kubeadm", "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z", "goVersion": "go1.22.8", "compiler": "gc",
            "platform": "linux/amd64"}
    fmt = opts.get("output", "")
    if fmt == "short":
        out.say(v.text)
    elif fmt == "json":
        out.say(json.dumps({"clientVersion": info}, indent=2))
    elif fmt == "yaml":
        out.say(yamlio.dump({"clientVersion": info}).rstrip())
    elif fmt == "":
        out.say("kubeadm version: &version.Info{Major:\"%s\", Minor:\"%s\", GitVersion:\"%s\", GitCommit:\"%s\", "
                "GitTreeState:\"%s\", BuildDate:\"%s\", GoVersion:\"%s\", Compiler:\"%s\", Platform:\"%s\"}" % (
                    info["major"], info["minor"], info["gitVersion"], info["gitCommit"], info["gitTreeState"],
                    info["buildDate"], info["goVersion"], info["compiler"], info["platform"]))
    else:
        raise KubeadmError("invalid output format: %s" % fmt)


def cmd_config_validate(opts):
    if not opts.get("config"):
        raise KubeadmError("the --config flag is mandatory")
    config.validate_config_file(opts["config"], opts.get("allow-experimental-api", False))
    out.say("ok")


def cmd_token_create(opts, args):
    kc_path = opts.get("kubeconfig") or "/etc/kubernetes/admin.conf"
    if opts.get("config"):
        # As kubeadm's `token create`: with --config the tokens are the InitConfiguration's
        # bootstrapTokens (a missing token generated), every one created, the first printed;
        # --config does not mix with the token flags (ValidateMixedArguments).
        mixed = sorted(k for k in ("ttl", "description", "usages", "groups") if k in opts)
        if mixed:
            raise KubeadmError("can not mix '--config' with arguments %s" % mixed)
        bts = config.load_init(opts["config"]).init["bootstrapTokens"]
    else:
        token = args[0] if args else tokens.generate()
        if tokens.split(token) is None:
            raise KubeadmError(tokens.format_error(token))
        bts = [{"token": token, "ttl": opts.get("ttl", "24h0m0s"),
                "description": opts.get("description", ""),
                "usages": opts.get("usages") or ["signing", "authentication"],
                "groups": opts.get("groups") or [tokens.DEFAULT_GROUP]}]
        from .validation import validate_bootstrap_tokens
        errs = validate_bootstrap_tokens(bts, "bootstrapTokens")
        if errs:
            raise out.validation_error(errs)
    client = common.api_client(kc_path)
    for bt in bts:
        try:
            common.create_token_secret(client, bt)
        except kubeclient.ApiError as e:
            raise KubeadmError("failed to create or update bootstrap token with name %s: %s" % (
                tokens.SECRET_PREFIX + bt["token"].split(".")[0], e.message)) from None
    token = bts[0]["token"]
    if opts.get("print-join-command"):
        kc = kubeconfig.load(kc_path)
        key = opts.get("certificate-key", "")
        out.say(common.join_command(kc.server, kc.ca_pem(), token, bool(key), key, one_line=True))
    else:
        out.say(token)


def dispatch(argv):
    if not argv or argv[0] in ("-h", "--help", "help"):
        out.say(USAGE)
        return
    cmd = argv[0]
    rest = argv[1:]
    if cmd in ("certs", "config", "token"):
        if not rest or rest[0].startswith("-"):
            out.say(USAGE)
            return
        sub = "%s %s" % (cmd, rest[0])
        if sub not in COMMANDS:
            raise KubeadmError('unknown command "%s" for "kubeadm %s"' % (rest[0], cmd))
        cmd, rest = sub, rest[1:]
    elif cmd not in COMMANDS:
        raise KubeadmError('unknown command "%s" for "kubeadm"' % cmd)
    if cmd in ("init", "join", "reset") and rest and rest[0] == "phase":
        raise KubeadmError('khalab stand-in: "kubeadm %s phase" is not implemented' % cmd)
    try:
        opts, changed, args = parse(cmd, rest)
    except FlagError as e:
        raise KubeadmError(str(e)) from None
    if opts.get("help"):
        out.say(USAGE)
        return
    if opts.get("dry-run"):
        raise KubeadmError("khalab stand-in: --dry-run is not implemented")
    if cmd == "init":
        if args:
            raise KubeadmError('unknown command "%s" for "kubeadm init"' % args[0])
        validate_mixed(changed)
        init.run(opts)
    elif cmd == "join":
        if len(args) > 1:
            raise KubeadmError("accepts at most 1 arg(s), received %d" % len(args))
        validate_mixed(changed)
        join.run(opts, args)
    elif cmd == "reset":
        reset.run(opts)
    elif cmd == "certs check-expiration":
        certs_cmd.check_expiration(opts)
    elif cmd == "certs renew":
        if len(args) != 1:
            raise KubeadmError("accepts 1 arg(s), received %d" % len(args))
        certs_cmd.renew(opts, args[0])
    elif cmd == "config validate":
        cmd_config_validate(opts)
    elif cmd == "token create":
        cmd_token_create(opts, args)
    elif cmd == "version":
        cmd_version(opts)


def run():
    argv = sys.argv[1:]
    env.record_argv("kubeadm", argv)
    env.banner("kubeadm")
    try:
        dispatch(argv)
    except KubeadmError as e:
        out.fail(e)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
