"""YAML the way Kubernetes' Go libraries read and write it (enough of it).

Reading: YAML 1.1 scalars like go-yaml v2 (so `yes` is a bool), but timestamps stay strings
(Kubernetes turns YAML into JSON first), and duplicate keys are recorded, since strict
decoding reports them. Writing: keys sorted, sequences not indented, double quotes,
like sigs.k8s.io/yaml.
"""

import re

import yaml


class DuplicateKey:
    def __init__(self, key, line):
        self.key, self.line = key, line

    def message(self):
        return 'key %s already set in map' % _q(self.key)


def _q(s):
    return '"%s"' % str(s).replace("\\", "\\\\").replace('"', '\\"')


class _Loader(yaml.SafeLoader):
    pass


# Kubernetes converts YAML to JSON before decoding, so a timestamp-looking scalar stays a
# string; PyYAML's SafeLoader would make it a datetime.
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    result = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            key = _scalar_key(key)
        if key in result:
            loader.duplicates.append(DuplicateKey(key, key_node.start_mark.line + 1))
        result[key] = loader.construct_object(value_node, deep=deep)
    return result


def _scalar_key(key):
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    return str(key)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class YAMLError(Exception):
    pass


def load(text):
    """Parse one YAML document; returns (object, duplicate keys)."""
    loader = _Loader(text)
    loader.duplicates = []
    try:
        obj = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        raise YAMLError("yaml: line %d: %s" % (line, e.problem or e.context)) from None
    except yaml.YAMLError as e:
        raise YAMLError("yaml: %s" % e) from None
    finally:
        loader.dispose()
    return obj, loader.duplicates


def load_plain(text):
    return load(text)[0]


_SEPARATOR = re.compile(r"^---\s*$")


def split_documents(text):
    """k8s.io/apimachinery's YAMLReader: documents are separated by `---` lines."""
    docs, cur = [], []
    for line in text.splitlines(keepends=True):
        if _SEPARATOR.match(line.rstrip("\n")):
            docs.append("".join(cur))
            cur = []
        else:
            cur.append(line)
    docs.append("".join(cur))
    return [d for d in docs if d.strip() and not _only_comments(d)]


def _only_comments(doc):
    return all(not l.strip() or l.lstrip().startswith("#") for l in doc.splitlines())


class _Dumper(yaml.SafeDumper):
    def choose_scalar_style(self):
        style = super().choose_scalar_style()
        return '"' if style == "'" else style

    def ignore_aliases(self, data):
        return True


def _str_representer(dumper, data):
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dump(obj):
    return yaml.dump(obj, Dumper=_Dumper, default_flow_style=False, sort_keys=True,
                     allow_unicode=True, width=1 << 20)
