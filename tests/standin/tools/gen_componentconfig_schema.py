#!/usr/bin/python3
"""Generate khalab_standin/kubeadm/componentconfig_schema.json from the Go types of
KubeletConfiguration (k8s.io/kubelet config/v1beta1) and KubeProxyConfiguration
(k8s.io/kube-proxy config/v1alpha1), so the stand-in's strict decoding knows their fields.

Usage: gen_componentconfig_schema.py KUBELET_TYPES_GO KUBEPROXY_TYPES_GO [PROVENANCE...] > out.json
(for example from `git show HEAD:config/v1beta1/types.go` in a checkout of kubernetes/kubelet).
"""

import json
import re
import sys

STRUCT_RE = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.S | re.M)
ALIAS_RE = re.compile(r"^type (\w+) (string|int32|int64|bool|float64)\s*$", re.M)
FIELD_RE = re.compile(r"^\s*(\w+)\s+([^\s`]+)\s*`json:\"([^\"]*)\"")
INLINE_RE = re.compile(r"^\s*([\w.]+)\s*`json:\"(,inline)?\"`")

EXTERNAL = {
    "metav1.Duration": "duration", "metav1.Time": "string", "metav1.MicroTime": "string",
    "resource.Quantity": "quantity", "v1.Taint": ["struct", "Taint"],
    "logsapi.LoggingConfiguration": "any", "tracingapi.TracingConfiguration": "any",
    "componentbaseconfigv1alpha1.ClientConnectionConfiguration": ["struct", "ClientConnectionConfiguration"],
    "componentbaseconfigv1alpha1.DebuggingConfiguration": ["struct", "DebuggingConfiguration"],
    "componentbaseconfigv1alpha1.LeaderElectionConfiguration": "any",
    "v1.ResourceName": "string",
}
BASIC = {"string": "string", "bool": "bool", "byte": "int", "float64": "number", "float32": "number"}


def conv(t, structs, aliases):
    t = t.lstrip("*")
    if t.startswith("[]"):
        return ["list", conv(t[2:], structs, aliases)]
    if t.startswith("map["):
        depth, i = 0, 3
        while True:
            if t[i] == "[":
                depth += 1
            elif t[i] == "]":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        return ["map", conv(t[i + 1:], structs, aliases)]
    if t in BASIC:
        return BASIC[t]
    if re.match(r"^u?int(8|16|32|64)?$", t):
        return "int"
    if t in EXTERNAL:
        return EXTERNAL[t]
    if t in aliases:
        return BASIC.get(aliases[t], "int" if "int" in aliases[t] else aliases[t])
    if t in structs:
        return ["struct", t]
    return "any"


def parse(src, types):
    aliases = dict(ALIAS_RE.findall(src))
    bodies = dict(STRUCT_RE.findall(src))
    for name, body in bodies.items():
        fields, inline = {}, []
        for line in body.splitlines():
            if line.strip().startswith("//"):
                continue
            m = INLINE_RE.match(line)
            if m:
                inline.append(m.group(1))
                continue
            m = FIELD_RE.match(line)
            if not m:
                continue
            go_name, go_type, tag = m.groups()
            json_name = tag.split(",")[0] or go_name
            if json_name == "-":
                continue
            fields[json_name] = conv(go_type, bodies, aliases)
        types[name] = {"fields": fields, "inline": inline}


def main():
    types = {}
    for path in sys.argv[1:3]:
        with open(path) as f:
            parse(f.read(), types)
    types["Taint"] = {"fields": {"key": "string", "value": "string", "effect": "string",
                                 "timeAdded": "string"}, "inline": []}
    types["ClientConnectionConfiguration"] = {"fields": {
        "kubeconfig": "string", "acceptContentTypes": "string", "contentType": "string",
        "qps": "number", "burst": "int"}, "inline": []}
    types["DebuggingConfiguration"] = {"fields": {
        "enableProfiling": "bool", "enableContentionProfiling": "bool"}, "inline": []}
    json.dump({"provenance": sys.argv[3:], "types": types}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


main()
