"""`kubeadm reset` (k/k cmd/kubeadm/app/cmd/reset.go, cmd/phases/reset/*): remove this
node's etcd member (a failure only warns), stop the kubelet, remove the "containers" (the
stand-in kubelet's pod processes), empty manifests/, /var/lib/kubelet, the PKI and the etcd
data directory, delete the kubeconfigs. Left alone, as kubeadm leaves them: /etc/cni/net.d,
iptables rules, $HOME/.kube/config and the Node object."""

import os
import shutil
import sys

from .. import env, kubeclient, kubeconfig, kubelet, out, tokens, x509util
from ..out import KubeadmError
from . import common, config, etcdops, manifests, preflight, workflow

FILES = ["admin.conf", "super-admin.conf", "kubelet.conf", "bootstrap-kubelet.conf",
         "controller-manager.conf", "scheduler.conf"]


class ResetData:
    def __init__(self, reset, opts):
        self.reset, self.opts = reset, opts
        self.cluster = None
        self.node_name = None
        self.endpoint = None
        self.client = None
        self.ignore = set()


def clean_dir(path):
    p = env.host_path(path)
    if not os.path.isdir(p):
        return
    for name in os.listdir(p):
        full = os.path.join(p, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except FileNotFoundError:
                pass


def load_cluster(d):
    """Read the ClusterConfiguration from the cluster with admin.conf; without it, reset
    still cleans the node (and cannot remove the etcd member)."""
    if not os.path.exists(env.host_path("/etc/kubernetes/admin.conf")):
        return
    out.say('[reset] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...')
    out.say("[reset] Use 'kubeadm init phase upload-config kubeadm --config your-config-file' to re-upload it.")
    try:
        d.client = common.api_client("/etc/kubernetes/admin.conf", timeout=10)
        cm = d.client.get("ConfigMap", "kubeadm-config", "kube-system")
        d.cluster = config.cluster_from_configmap((cm.get("data") or {}).get("ClusterConfiguration", ""))
    except (KubeadmError, kubeclient.ApiError) as e:
        out.warn("[reset] Unable to fetch the kubeadm-config ConfigMap from cluster: failed to get config map: %s"
                 % getattr(e, "message", e), "reset.go:141")
        d.cluster = None
        return
    d.node_name = node_name_from_kubelet_conf()
    pod = manifests.read("kube-apiserver")
    if pod is not None:
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        ep = ann.get("kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint", "")
        host, _, port = ep.rpartition(":")
        if host:
            d.endpoint = {"advertiseAddress": host.strip("[]"), "bindPort": int(port)}


def node_name_from_kubelet_conf():
    try:
        kc = kubeconfig.load("/etc/kubernetes/kubelet.conf")
        pem = kc.client_cert_pem()
        cn = x509util.subject_cn(x509util.certs_from_pem(pem)[0]) if pem else ""
        return cn[len("system:node:"):] if cn.startswith("system:node:") else None
    except (kubeconfig.KubeconfigError, x509util.CertError, OSError, ValueError):
        return None


def run_preflight(d):
    out.say("[preflight] Running pre-flight checks")
    preflight.run_root_check(d.ignore)


def etcd_data_dir(d):
    pod = manifests.read("etcd")
    if pod is not None:
        return manifests.command_flags(pod).get("data-dir")
    if d.cluster is not None and d.cluster["etcd"].get("local") is not None:
        return d.cluster["etcd"]["local"]["dataDir"]
    return None


def run_remove_etcd_member(d):
    data_dir = etcd_data_dir(d)
    if data_dir is None:
        out.say("[reset] No etcd config found. Assuming external etcd")
        out.say("[reset] Please, manually reset etcd to prevent further issues")
        return
    d.etcd_data_dir = data_dir
    if d.cluster is not None and d.endpoint is not None:
        try:
            remove_member(d)
        except KubeadmError as e:
            out.warn("[reset] Failed to remove etcd member: %s, please manually remove this etcd member using etcdctl"
                     % e.message, "removeetcdmember.go:61")
    else:
        out.say("[reset] No kubeadm config, using etcd pod spec to get data directory")
    clean_dir(data_dir)
    out.say("[reset] Deleted contents of the etcd data directory: %s" % data_dir)


def remove_member(d):
    """RemoveStackedEtcdMemberFromCluster."""
    cluster = etcdops.EtcdCluster.from_cluster(d.client, d.cluster["certificatesDir"],
                                               tokens.parse_duration(d.reset["timeouts"]["etcdAPICall"]))
    members = cluster.list_members()
    if len(members) == 1 and manifests.etcd_client_url(d.endpoint["advertiseAddress"]) in cluster.endpoints:
        return
    try:
        member_id = cluster.member_id(manifests.etcd_peer_url(d.endpoint["advertiseAddress"]))
    except etcdops.NoMemberForPeerURL:
        return
    cluster.remove_member(member_id)


def run_cleanup_node(d):
    if env.init_system_available():
        out.say("[reset] Stopping the kubelet service")
        common.stop_kubelet()
    else:
        out.warn("[reset] The kubelet service could not be stopped by kubeadm. Unable to detect a supported "
                 "init system!", "cleanupnode.go:65")
        out.warn("[reset] Please ensure kubelet is stopped manually", "cleanupnode.go:66")
    kubelet.kill_recorded_pods()
    out.say('[reset] Unmounting mounted directories in "/var/lib/kubelet"')
    certs = d.reset.get("certificatesDir") or "/etc/kubernetes/pki"
    dirs = [manifests.MANIFESTS_DIR, "/var/lib/kubelet", certs]
    if d.reset.get("cleanupTmpDir"):
        dirs.append("/etc/kubernetes/tmp")
    out.say("[reset] Deleting contents of directories: [%s]" % " ".join(dirs))
    for p in dirs:
        clean_dir(p)
    files = ["/etc/kubernetes/" + f for f in FILES]
    out.say("[reset] Deleting files: [%s]" % " ".join(files))
    for f in files:
        try:
            os.unlink(env.host_path(f))
        except FileNotFoundError:
            pass
    kubelet.kill_recorded_pods()
    data_dir = getattr(d, "etcd_data_dir", None)
    if data_dir:
        # The stand-in kubelet restarts pods after 1 s (the real one after 10 s): an etcd it
        # restarted between the phases must not leave data behind.
        clean_dir(data_dir)


NOTICE = """
The reset process does not perform cleanup of CNI plugin configuration,
network filtering rules and kubeconfig files.

For information on how to perform this cleanup manually, please see:
    https://k8s.io/docs/reference/setup-tools/kubeadm/kubeadm-reset/
"""


def run(opts):
    reset = config.load_reset(opts.get("config"))
    if opts.get("cert-dir"):
        reset["certificatesDir"] = opts["cert-dir"]
    if opts.get("cleanup-tmp-dir"):
        reset["cleanupTmpDir"] = True
    d = ResetData(reset, opts)
    d.ignore = preflight.validate_ignore(opts.get("ignore-preflight-errors"), reset.get("ignorePreflightErrors"))
    load_cluster(d)
    force = opts.get("force") or reset.get("force")
    out.warn("[reset] WARNING: Changes made to this host by 'kubeadm init' or 'kubeadm join' will be reverted.",
             "reset.go:123")
    if not force:
        sys.stdout.write("[reset] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer != "y":
            raise KubeadmError("error execution phase preflight: won't proceed; the user didn't answer (Y|y) "
                               "in order to continue", wrapped=True)
    skip = workflow.split_skip(opts.get("skip-phases"), reset.get("skipPhases"))
    workflow.run("reset", [workflow.Phase("preflight", run_preflight),
                           workflow.Phase("remove-etcd-member", run_remove_etcd_member),
                           workflow.Phase("cleanup-node", run_cleanup_node)], skip, d)
    out.say(NOTICE)
