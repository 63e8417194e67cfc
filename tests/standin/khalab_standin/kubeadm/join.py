"""`kubeadm join`: discovery (token + CA pin, or file), then the phases in kubeadm's order
(k/k cmd/kubeadm/app/cmd/join.go, cmd/phases/join/*)."""

import base64
import os
import time

from .. import env, jws, kubeclient, kubeconfig, out, tokens, version, x509util, yamlio
from ..out import KubeadmError
from . import (common, config, etcdops, failinject, kubeconfigs, manifests, pki, preflight,
               uploadcerts, workflow)

DISCOVERY_RETRY = 5.0
BOOTSTRAP_KUBECONFIG = "/etc/kubernetes/bootstrap-kubelet.conf"

NOT_READY_CP = """One or more conditions for hosting a new control plane instance is not satisfied.

%s

Please ensure that:
* The cluster has a stable controlPlaneEndpoint address.
* The certificates that must be shared among control plane instances are provided.
"""


def _pins(hashes):
    pins = set()
    for h in hashes or []:
        parts = h.split(":")
        if len(parts) != 2:
            raise KubeadmError('invalid discovery token CA certificate hash: invalid hash, expected '
                               '"format:hex-value". Known format(s) are: sha256')
        fmt, value = parts
        if fmt.lower() != "sha256":
            raise KubeadmError('invalid discovery token CA certificate hash: unknown hash format "%s". '
                               'Known format(s) are: sha256' % fmt)
        if len(value) // 2 != 32:
            raise KubeadmError('invalid discovery token CA certificate hash: invalid hash "%s", expected a 32 '
                               'byte SHA-256 hash, found %d bytes' % (h, len(value) // 2))
        try:
            bytes.fromhex(value)
        except ValueError:
            raise KubeadmError('invalid discovery token CA certificate hash: invalid hash "%s", could not '
                               'decode SHA-256 from hex' % h) from None
        pins.add(value.lower())
    return pins


def _get_cluster_info(client, token_id, timeout):
    """getClusterInfo: poll until the ConfigMap has a JWS signature for the token."""
    deadline = time.monotonic() + timeout
    interval = min(DISCOVERY_RETRY, timeout)
    last = None
    while True:
        try:
            cm = client.get("ConfigMap", "cluster-info", "kube-public")
            if ("jws-kubeconfig-" + token_id) in (cm.get("data") or {}):
                return cm
            last = 'could not find a JWS signature in the cluster-info ConfigMap for token ID "%s"' % token_id
        except kubeclient.ApiError as e:
            last = "failed to request the cluster-info ConfigMap: %s" % e.message
        now = time.monotonic()
        if now >= deadline:
            raise KubeadmError(last)
        time.sleep(min(interval, deadline - now))


def discover(join):
    """RetrieveValidatedConfigInfo; returns (server, CA PEM bytes)."""
    disc = join["discovery"]
    if disc.get("file") is not None:
        kc = kubeconfig.load(disc["file"]["kubeConfigPath"])
        return kc.server, kc.ca_pem()
    bt = disc["bootstrapToken"]
    endpoint = bt["apiServerEndpoint"]
    token_id, token_secret = tokens.split(bt["token"])
    timeout = tokens.parse_duration(join["timeouts"]["discovery"])
    if failinject.take("join", "discovery-timeout") is not None:
        raise KubeadmError('could not find a JWS signature in the cluster-info ConfigMap for token ID "%s"' % token_id)
    server = "https://%s" % endpoint
    insecure = kubeclient.Client(server, kubeconfig.client_ssl_context(None), timeout=10)
    cm = _get_cluster_info(insecure, token_id, timeout)
    pins = _pins(bt.get("caCertHashes"))
    data = cm.get("data") or {}
    content = data.get("kubeconfig")
    if not content:
        raise KubeadmError("there is no kubeconfig key in the cluster-info ConfigMap. This API Server isn't set up "
                           "for token bootstrapping, can't connect")
    sig = data.get("jws-kubeconfig-" + token_id)
    if not sig:
        raise KubeadmError('token id "%s" is invalid for this cluster or it has expired. Use "kubeadm token create" '
                           "on the control-plane node to create a new valid token" % token_id)
    if not jws.detached_is_valid(sig, content, token_id, token_secret):
        raise KubeadmError("failed to verify JWS signature of received cluster info object, can't trust this API Server")
    try:
        info = yamlio.load_plain(content) or {}
    except yamlio.YAMLError as e:
        raise KubeadmError("couldn't parse the kubeconfig file in the cluster-info ConfigMap: %s" % e) from None
    clusters = info.get("clusters") or []
    if len(clusters) != 1:
        raise KubeadmError("malformed kubeconfig in the cluster-info ConfigMap: the kubeconfig must have exactly "
                           "one cluster, found %d" % len(clusters))
    cluster = clusters[0].get("cluster") or {}
    ca_pem = base64.b64decode(cluster.get("certificate-authority-data") or "")
    if not pins:
        return cluster.get("server"), ca_pem
    try:
        cas = x509util.certs_from_pem(ca_pem)
    except (x509util.CertError, ValueError) as e:
        raise KubeadmError("failed to parse cluster CA from the cluster-info ConfigMap: %s" % e) from None
    hashes = [x509util.spki_hash(c) for c in cas]
    if not any(h.split(":", 1)[1] in pins for h in hashes):
        raise KubeadmError('cluster CA found in cluster-info ConfigMap is invalid: none of the public keys "%s" '
                           "are pinned" % ":".join(hashes))
    secure = kubeclient.Client(server, kubeconfig.client_ssl_context(ca_pem), timeout=10)
    cm2 = _get_cluster_info(secure, token_id, timeout)
    if (cm2.get("data") or {}).get("kubeconfig") != content:
        raise KubeadmError("the second kubeconfig from the cluster-info ConfigMap (using validated TLS) was "
                           "different from the first")
    return cluster.get("server"), ca_pem


class JoinData:
    def __init__(self, cfg, opts):
        self.cfg, self.opts = cfg, opts
        self.ignore = set()
        self._tls = None
        self._cluster = None
        self._client = None

    @property
    def join(self):
        return self.cfg.join

    @property
    def cp(self):
        return self.cfg.control_plane

    def timeout(self, name):
        return self.cfg.timeout(name)

    def tls_bootstrap(self):
        """TLSBootstrapCfg: discovery, then a token kubeconfig for the server in cluster-info."""
        if self._tls is None:
            try:
                server, ca = discover(self.join)
            except KubeadmError as e:
                raise e.wrap("couldn't validate the identity of the API Server") if not e.wrapped else e
            token = self.join["discovery"].get("tlsBootstrapToken")
            self._tls = kubeconfig.build("kubernetes", server, ca, "tls-bootstrap-token-user", token=token)
        return self._tls

    def bootstrap_client(self):
        return kubeclient.Client.from_kubeconfig(kubeconfig.Kubeconfig(self.tls_bootstrap()), timeout=10)

    def cluster(self):
        """fetchInitConfigurationFromJoinConfiguration: the ClusterConfiguration from the cluster."""
        if self._cluster is None:
            client = self.bootstrap_client()
            out.say('[preflight] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...')
            out.say("[preflight] Use 'kubeadm init phase upload-config kubeadm --config your-config-file' to re-upload it.")
            try:
                cm = client.get("ConfigMap", "kubeadm-config", "kube-system")
            except kubeclient.ApiError as e:
                raise KubeadmError("unable to fetch the kubeadm-config ConfigMap: failed to get config map: %s" % e.message) from None
            text = (cm.get("data") or {}).get("ClusterConfiguration", "")
            self._cluster = config.cluster_from_configmap(text)
            config.normalize_kubernetes_version(self._cluster)
        return self._cluster

    @property
    def endpoint(self):
        return self.cp["localAPIEndpoint"]

    def view(self):
        return pki.CertView(self.cluster(), self.cfg.node_name, self.endpoint)

    def client(self):
        if self._client is None:
            self._client = common.api_client("/etc/kubernetes/admin.conf")
        return self._client

    def local_etcd(self):
        return self.cp is not None and self.cluster()["etcd"].get("local") is not None


def check_ready_for_control_plane(d):
    cluster = d.cluster()
    if not cluster.get("controlPlaneEndpoint"):
        return "unable to add a new control plane instance to a cluster that doesn't have a stable " \
               "controlPlaneEndpoint address"
    if d.cp.get("certificateKey"):
        return None
    certs = cluster["certificatesDir"]
    required = [("ca", "CA"), ("sa", "service account"), ("front-proxy-ca", "front-proxy CA")]
    if cluster["etcd"].get("local") is not None:
        required.append(("etcd/ca", "etcd CA"))
    for base, ux in required:
        for ext in ((".key", ".pub") if base == "sa" else (".crt", ".key")):
            p = os.path.join(certs, base + ext)
            if not os.path.exists(env.host_path(p)):
                return "failure loading %s for %s: couldn't load the %s file %s: open %s: no such file or directory" % (
                    "key" if ext == ".key" else "certificate", ux, "private key" if ext == ".key" else
                    ("public key" if ext == ".pub" else "certificate"), p, p)
        if base != "sa":
            try:
                cert = x509util.load_cert(env.host_path(os.path.join(certs, base + ".crt")))
            except x509util.CertError as e:
                return "failure loading certificate for %s: %s" % (ux, e)
            if not x509util.is_ca(cert):
                return "certificate %s is not a CA" % ux
    return None


def run_preflight(d):
    out.say("[preflight] Running pre-flight checks")
    preflight.run_root_check(d.ignore)
    preflight.run_checks(preflight.join_checks(d.join), d.ignore, "join")
    d.tls_bootstrap()
    d.cluster()
    if d.cp is None:
        return
    problem = check_ready_for_control_plane(d)
    if problem:
        raise KubeadmError(NOT_READY_CP % problem)
    out.say("[preflight] Running pre-flight checks before initializing the new control plane instance")
    cfg = {"localAPIEndpoint": d.endpoint, "cluster": d.cluster(),
           "criSocket": d.join["nodeRegistration"]["criSocket"]}
    preflight.run_checks(preflight.init_checks(cfg, secondary=True), d.ignore, "join")
    out.say("[preflight] Pulling images required for setting up a Kubernetes cluster")
    out.say("[preflight] khalab stand-in: no images to pull, the stand-in runs no containers")


def run_download_certs(d):
    if d.cp is None or not d.cp.get("certificateKey"):
        return
    out.say('[download-certs] Downloading the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')
    uploadcerts.download(d.bootstrap_client(), d.cluster(), d.cp["certificateKey"])


def run_prepare_certs(d):
    if d.cp is None:
        return
    out.say('[certs] Using certificateDir folder "%s"' % d.cluster()["certificatesDir"])
    phase = pki.CertsPhase(d.view(), check_sans=True)
    specs = pki.specs(d.view())
    for spec in specs:
        if d.cluster()["etcd"].get("external") is not None and spec.base.startswith(("etcd/", "apiserver-etcd")):
            continue
        if spec.is_ca:
            phase.run_ca(spec)
    for spec in specs:
        if d.cluster()["etcd"].get("external") is not None and spec.base.startswith(("etcd/", "apiserver-etcd")):
            continue
        if not spec.is_ca:
            phase.run_leaf(spec)
    phase.run_sa()


def run_prepare_kubeconfig(d):
    if d.cp is None:
        return
    out.say("[kubeconfig] Generating kubeconfig files")
    out.say('[kubeconfig] Using kubeconfig folder "%s"' % kubeconfigs.KUBERNETES_DIR)
    ca = kubeconfigs.load_ca(d.cluster())
    for spec in kubeconfigs.specs(d.cluster(), d.cfg.node_name, d.endpoint, init=False):
        kubeconfigs.write_kubeconfig(d.cluster(), spec, *ca)


def run_prepare_control_plane(d):
    if d.cp is None:
        return
    external, _ = pki.using_external_ca(d.view())
    out.say('[control-plane] Using manifest folder "%s"' % manifests.MANIFESTS_DIR)
    for name, build in (("kube-apiserver", lambda: manifests.apiserver(d.cluster(), d.endpoint, external)),
                        ("kube-controller-manager", lambda: manifests.controller_manager(d.cluster(), external)),
                        ("kube-scheduler", lambda: manifests.scheduler(d.cluster()))):
        out.say('[control-plane] Creating static Pod manifest for "%s"' % name)
        manifests.write(name, build())


def run_check_etcd(d):
    if not d.local_etcd():
        return
    out.say("[check-etcd] Checking that the etcd cluster is healthy")
    try:
        cluster = etcdops.EtcdCluster.from_cluster(d.client(), d.cluster()["certificatesDir"],
                                                   d.timeout("etcdAPICall"))
        cluster.check_cluster_health()
    except KubeadmError as e:
        raise KubeadmError("etcd cluster is not healthy: %s" % e.message) from None


def run_kubelet_start(d):
    tls = kubeconfig.Kubeconfig(d.tls_bootstrap())
    nr = d.join["nodeRegistration"]
    boot = d.bootstrap_client()
    try:
        node = boot.get("Node", d.cfg.node_name)
        conds = (node.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
            raise KubeadmError('a Node with name "%s" and status "Ready" already exists in the cluster. You must '
                               "delete the existing Node or change the name of this new joining Node" % d.cfg.node_name)
    except kubeclient.ApiError as e:
        if not e.not_found:
            raise KubeadmError("cannot get Node \"%s\": %s" % (d.cfg.node_name, e.message)) from None
    try:
        cm = boot.get("ConfigMap", "kubelet-config", "kube-system")
    except kubeclient.ApiError as e:
        raise KubeadmError("error downloading the kubelet configuration from the ConfigMap: %s" % e.message) from None
    ca_path = d.join["caCertPath"]
    if not os.path.exists(env.host_path(ca_path)):
        x509util.write_atomic(env.host_path(ca_path), tls.ca_pem(), 0o644)
    server = tls.server
    if d.cp is not None and version.kubelet_local_mode():
        server = kubeconfigs.local_endpoint(d.endpoint)
    boot_kc = kubeconfig.build("kubernetes", server, tls.ca_pem(), "tls-bootstrap-token-user", token=tls.token)
    common.stop_kubelet()
    kubeconfig.write(BOOTSTRAP_KUBECONFIG, boot_kc, 0o600)
    common.write_kubelet_files(nr, (cm.get("data") or {}).get("kubelet", ""), register_taints=d.cp is None)
    out.say("[kubelet-start] Starting the kubelet")
    common.restart_kubelet()
    if not version.kubelet_local_mode():
        wait_bootstrap(d)


def wait_bootstrap(d):
    out.say("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
    common.wait_kubelet(d.timeout("kubeletHealthCheck"))
    ok, _ = common.poll(lambda: os.path.exists(env.host_path("/etc/kubernetes/kubelet.conf")),
                        d.timeout("tlsBootstrap"))
    if not ok:
        raise KubeadmError("error waiting for TLS bootstrap: timed out waiting for the condition")
    try:
        os.unlink(env.host_path(BOOTSTRAP_KUBECONFIG))
    except OSError as e:
        out.warn("[kubelet-start] WARNING: could not remove %s: %s" % (BOOTSTRAP_KUBECONFIG, e), "kubelet.go:86")


def run_etcd_join(d):
    if not d.local_etcd():
        return
    cluster = etcdops.EtcdCluster.from_cluster(d.client(), d.cluster()["certificatesDir"], d.timeout("etcdAPICall"))
    peer = manifests.etcd_peer_url(d.endpoint["advertiseAddress"])
    initial = cluster.add_member_as_learner(d.cfg.node_name, peer)
    out.say("[etcd] Announced new etcd member joining to the existing etcd cluster")
    out.say('[etcd] Creating static Pod manifest for "etcd"')
    manifests.write("etcd", manifests.etcd(d.cluster(), d.cfg.node_name, d.endpoint, initial))
    if failinject.take("join", "etcd-promote-timeout") is not None:
        raise KubeadmError("etcdserver: can only promote a learner member which is in sync with leader")
    try:
        cluster.promote(cluster.member_id(peer))
    except etcdops.NoMemberForPeerURL:
        raise KubeadmError("no member id found for peer URL") from None
    out.say("[etcd] Waiting for the new etcd member to join the cluster. This can take up to 40s")
    cluster.wait_for_cluster_available()


def run_mark_control_plane(d):
    if d.cp is None:
        return
    common.mark_control_plane(d.client(), d.cfg.node_name, d.join["nodeRegistration"]["taints"],
                              d.timeout("kubernetesAPICall"))


def run_wait_control_plane(d):
    if d.cp is None or not version.wait_all_components():
        return
    common.wait_control_plane("join", d.endpoint, d.join["nodeRegistration"]["criSocket"],
                              d.timeout("controlPlaneComponentHealthCheck"))


def phases(d):
    prepare = workflow.Phase("control-plane-prepare", None, [
        workflow.Phase("download-certs", run_download_certs), workflow.Phase("certs", run_prepare_certs),
        workflow.Phase("kubeconfig", run_prepare_kubeconfig),
        workflow.Phase("control-plane", run_prepare_control_plane)])
    if version.kubelet_local_mode():
        return [workflow.Phase("preflight", run_preflight), prepare,
                workflow.Phase("check-etcd", run_check_etcd), workflow.Phase("kubelet-start", run_kubelet_start),
                workflow.Phase("etcd-join", run_etcd_join),
                workflow.Phase("kubelet-wait-bootstrap", lambda d_: wait_bootstrap(d_)),
                workflow.Phase("control-plane-join", None, [
                    workflow.Phase("mark-control-plane", run_mark_control_plane)]),
                workflow.Phase("wait-control-plane", run_wait_control_plane)]
    return [workflow.Phase("preflight", run_preflight), prepare,
            workflow.Phase("check-etcd", run_check_etcd), workflow.Phase("kubelet-start", run_kubelet_start),
            workflow.Phase("control-plane-join", None, [
                workflow.Phase("etcd", run_etcd_join),
                workflow.Phase("mark-control-plane", run_mark_control_plane)]),
            workflow.Phase("wait-control-plane", run_wait_control_plane)]


CP_DONE = """
This node has joined the cluster and a new control plane instance was created:

* Certificate signing request was sent to apiserver and approval was received.
* The Kubelet was informed of the new secure connection details.
* Control plane label and taint were applied to the new node.
* The Kubernetes control plane instances scaled up.
* A new etcd member was added to the local/stacked etcd cluster.

To start administering your cluster from this node, you need to run the following as a regular user:

	mkdir -p $HOME/.kube
	sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config
	sudo chown $(id -u):$(id -g) $HOME/.kube/config

Run 'kubectl get nodes' to see this node join the cluster.
"""

WORKER_DONE = """
This node has joined the cluster:
* Certificate signing request was sent to apiserver and a response was received.
* The Kubelet was informed of the new secure connection details.

Run 'kubectl get nodes' on the control-plane to see this node join the cluster.
"""


def flag_values(opts, args):
    join = {"discovery": {}}
    if args:
        bt = join["discovery"].setdefault("bootstrapToken", {})
        bt["apiServerEndpoint"] = args[0]
    token = opts.get("discovery-token") or opts.get("token")
    if opts.get("discovery-file"):
        join["discovery"]["file"] = {"kubeConfigPath": opts["discovery-file"]}
    elif token or args:
        bt = join["discovery"].setdefault("bootstrapToken", {})
        bt["token"] = token or ""
        bt["caCertHashes"] = opts.get("discovery-token-ca-cert-hash") or []
        bt["unsafeSkipCAVerification"] = bool(opts.get("discovery-token-unsafe-skip-ca-verification"))
    tls = opts.get("tls-bootstrap-token") or opts.get("token")
    if tls:
        join["discovery"]["tlsBootstrapToken"] = tls
    nr = {}
    if opts.get("node-name"):
        nr["name"] = opts["node-name"]
    if opts.get("cri-socket"):
        nr["criSocket"] = opts["cri-socket"]
    join["nodeRegistration"] = nr
    if opts.get("control-plane"):
        ep = {}
        if opts.get("apiserver-advertise-address"):
            ep["advertiseAddress"] = opts["apiserver-advertise-address"]
        if opts.get("apiserver-bind-port"):
            ep["bindPort"] = int(opts["apiserver-bind-port"])
        join["controlPlane"] = {"localAPIEndpoint": ep, "certificateKey": opts.get("certificate-key", "")}
    return join


def run(opts, args):
    path = opts.get("config")
    cfg = config.load_join(path, None if path else flag_values(opts, args))
    d = JoinData(cfg, opts)
    d.ignore = preflight.validate_ignore(opts.get("ignore-preflight-errors"),
                                         cfg.join["nodeRegistration"].get("ignorePreflightErrors"))
    skip = workflow.split_skip(opts.get("skip-phases"), cfg.join.get("skipPhases"))
    workflow.run("join", phases(d), skip, d)
    out.say(CP_DONE if d.cp is not None else WORKER_DONE)
