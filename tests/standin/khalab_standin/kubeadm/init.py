"""`kubeadm init`: the phases in kubeadm's order (k/k cmd/kubeadm/app/cmd/init.go)."""

import base64
import secrets

from .. import kubeclient, kubeconfig, out, yamlio
from ..out import KubeadmError
from . import common, config, kubeconfigs, manifests, pki, preflight, uploadcerts, workflow


class InitData:
    def __init__(self, cfg, opts):
        self.cfg, self.opts = cfg, opts
        self.ignore = set()
        self.external_ca = False
        self.upload_certs = bool(opts.get("upload-certs"))
        self.certificate_key = cfg.init.get("certificateKey") or ""
        self.skip_token_print = bool(opts.get("skip-token-print"))
        self.skip_key_print = bool(opts.get("skip-certificate-key-print"))
        self._client = None

    @property
    def cluster(self):
        return self.cfg.cluster

    def view(self):
        return pki.CertView(self.cluster, self.cfg.node_name, self.cfg.endpoint)

    def client(self):
        """data.Client(): admin.conf, after making sure kubeadm:cluster-admins is bound."""
        if self._client is None:
            ensure_admin_binding(self.cfg.timeout("kubernetesAPICall"))
            self._client = common.api_client("/etc/kubernetes/admin.conf")
        return self._client


def ensure_admin_binding(timeout):
    """kubeconfig.EnsureAdminClusterRoleBinding: admin.conf's group needs a binding to
    cluster-admin; kubeadm creates it with super-admin.conf (system:masters) when needed."""
    admin = common.api_client("/etc/kubernetes/admin.conf", timeout=5)

    def admin_works():
        try:
            admin.list("Namespace")
            return True
        except kubeclient.ApiError as e:
            if e.status == 403:
                return "forbidden"
            raise
    state, last = common.poll(admin_works, timeout)
    if state is True:
        return
    if state != "forbidden":
        raise KubeadmError("could not bootstrap the admin user in file admin.conf: unable to create "
                           "ClusterRoleBinding: %s" % (last.message if last else "timed out"))
    superadmin = common.api_client("/etc/kubernetes/super-admin.conf", timeout=5)
    crb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": {"name": "kubeadm:cluster-admins"},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
           "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}]}
    ok, last = common.poll(lambda: superadmin.create_or_update(crb), timeout)
    if not ok:
        raise KubeadmError("could not bootstrap the admin user in file admin.conf: unable to create "
                           "ClusterRoleBinding: %s" % (last.message if last else "timed out"))
    state, last = common.poll(lambda: admin_works() is True, timeout)
    if not state:
        raise KubeadmError("could not bootstrap the admin user in file admin.conf: the ClusterRoleBinding "
                           "kubeadm:cluster-admins does not take effect")


# phases

def run_preflight(d):
    out.say("[preflight] Running pre-flight checks")
    preflight.run_root_check(d.ignore)
    cfg = {"localAPIEndpoint": d.cfg.endpoint, "cluster": d.cluster,
           "criSocket": d.cfg.init["nodeRegistration"]["criSocket"]}
    preflight.run_checks(preflight.init_checks(cfg), d.ignore, "init")
    out.say("[preflight] Pulling images required for setting up a Kubernetes cluster")
    out.say("[preflight] khalab stand-in: no images to pull, the stand-in runs no containers")


def certs_phases(d):
    def start(_):
        out.say('[certs] Using certificateDir folder "%s"' % d.cluster["certificatesDir"])
        d.certs = pki.CertsPhase(d.view(), check_sans=True)

    def one(spec):
        def run(_):
            if d.cluster["etcd"].get("external") is not None and spec.base.startswith(("etcd/", "apiserver-etcd")):
                out.say("[certs] External etcd mode: Skipping %s certificate generation" % spec.base)
                return
            if spec.is_ca:
                d.certs.run_ca(spec)
            else:
                d.certs.run_leaf(spec)
        return workflow.Phase(spec.phase, run)
    children = [one(s) for s in pki.specs(d.cfg)] + [workflow.Phase("sa", lambda _: d.certs.run_sa())]
    return workflow.Phase("certs", start, children)


def kubeconfig_phases(d):
    def start(_):
        out.say('[kubeconfig] Using kubeconfig folder "%s"' % kubeconfigs.KUBERNETES_DIR)
        d.ca = kubeconfigs.load_ca(d.cluster)

    def one(spec):
        return workflow.Phase(spec.phase, lambda _: kubeconfigs.write_kubeconfig(d.cluster, spec, *d.ca))
    specs = kubeconfigs.specs(d.cluster, d.cfg.node_name, d.cfg.endpoint, init=True)
    return workflow.Phase("kubeconfig", start, [one(s) for s in specs])


def run_etcd_local(d):
    if d.cluster["etcd"].get("local") is None:
        return
    out.say('[etcd] Creating static Pod manifest for local etcd in "%s"' % manifests.MANIFESTS_DIR)
    manifests.write("etcd", manifests.etcd(d.cluster, d.cfg.node_name, d.cfg.endpoint))


def control_plane_phases(d, announce="[control-plane] Using manifest folder \"%s\"" % manifests.MANIFESTS_DIR):
    def start(_):
        out.say(announce)

    def comp(name, build):
        def run(_):
            out.say('[control-plane] Creating static Pod manifest for "%s"' % name)
            manifests.write(name, build())
        return workflow.Phase(name.replace("kube-", ""), run)
    return workflow.Phase("control-plane", start, [
        comp("kube-apiserver", lambda: manifests.apiserver(d.cluster, d.cfg.endpoint, d.external_ca)),
        comp("kube-controller-manager", lambda: manifests.controller_manager(d.cluster, d.external_ca)),
        comp("kube-scheduler", lambda: manifests.scheduler(d.cluster)),
    ])


def kubelet_config_text(d):
    return yamlio.dump(common.default_kubelet_config(d.cluster, d.cfg.kubelet))


def run_kubelet_start(d):
    common.stop_kubelet()
    common.write_kubelet_files(d.cfg.init["nodeRegistration"], kubelet_config_text(d), register_taints=False)
    out.say("[kubelet-start] Starting the kubelet")
    common.restart_kubelet()


def run_wait_control_plane(d):
    out.say('[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from '
            'directory "%s"' % manifests.MANIFESTS_DIR)
    try:
        common.wait_kubelet(d.cfg.timeout("kubeletHealthCheck"))
    except KubeadmError as e:
        out.say(common.KUBELET_FAIL_HELP)
        raise KubeadmError("failed while waiting for the kubelet to start: %s" % e.message)
    common.wait_control_plane("init", d.cfg.endpoint, d.cfg.init["nodeRegistration"]["criSocket"],
                              d.cfg.timeout("controlPlaneComponentHealthCheck"))


def run_upload_config(d):
    client = d.client()
    out.say('[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the "kube-system" Namespace')
    client.create_or_update({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                             "data": {"ClusterConfiguration": config.cluster_document(d.cluster)}})
    out.say('[kubelet] Creating a ConfigMap "kubelet-config" in namespace kube-system with the configuration '
            'for the kubelets in the cluster')
    client.create_or_update({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "kubelet-config", "namespace": "kube-system"},
                             "data": {"kubelet": kubelet_config_text(d)}})


def run_upload_certs(d):
    if not d.upload_certs:
        out.say("[upload-certs] Skipping phase. Please see --upload-certs")
        return
    out.say('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')
    uploadcerts.upload(d.client(), d.cluster, d.certificate_key)
    if not d.skip_key_print:
        out.say("[upload-certs] Using certificate key:\n%s" % d.certificate_key)


def run_mark_control_plane(d):
    common.mark_control_plane(d.client(), d.cfg.node_name, d.cfg.init["nodeRegistration"]["taints"],
                              d.cfg.timeout("kubernetesAPICall"))


def run_bootstrap_token(d):
    client = d.client()
    if not d.skip_token_print:
        out.say("[bootstrap-token] Using token: %s" % d.cfg.init["bootstrapTokens"][0]["token"])
    out.say("[bootstrap-token] Configuring bootstrap tokens, cluster-info ConfigMap, RBAC Roles")
    for bt in d.cfg.init["bootstrapTokens"]:
        common.create_token_secret(client, bt)
    out.say("[bootstrap-token] Configured RBAC rules to allow Node Bootstrap tokens to get nodes")
    out.say("[bootstrap-token] Configured RBAC rules to allow Node Bootstrap tokens to post CSRs in order for "
            "nodes to get long term certificate credentials")
    out.say("[bootstrap-token] Configured RBAC rules to allow the csrapprover controller automatically approve "
            "CSRs from a Node Bootstrap Token")
    out.say("[bootstrap-token] Configured RBAC rules to allow certificate rotation for all node client "
            "certificates in the cluster")
    out.say('[bootstrap-token] Creating the "cluster-info" ConfigMap in the "kube-public" namespace')
    admin = kubeconfig.load("/etc/kubernetes/admin.conf")
    ca_b64 = admin.cluster.get("certificate-authority-data") or base64.b64encode(admin.ca_pem()).decode()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-info", "namespace": "kube-public"},
          "data": {"kubeconfig": kubeconfig.cluster_info_kubeconfig(admin.server, ca_b64)}}
    try:
        client.create(cm)
    except kubeclient.ApiError as e:
        if not e.conflict:
            raise


def run_kubelet_finalize(d):
    kubeconfigs.kubelet_finalize()


def addon_phases(d):
    def marker(name, key):
        def run(_):
            if (d.cluster.get(key) or {}).get("disabled"):
                return
            d.client().create_or_update({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                    "name": name, "namespace": "kube-system",
                    "annotations": {"khalab.standin/marker": "a stand-in marker; no addon runs"}},
                "data": {"khalab-standin": "marker for the %s addon" % name}})
            out.say("[addons] Applied essential addon: %s" % ("CoreDNS" if name == "coredns" else "kube-proxy"))
        return run
    return workflow.Phase("addon", None, [workflow.Phase("coredns", marker("coredns", "dns")),
                                         workflow.Phase("kube-proxy", marker("kube-proxy", "proxy"))])


def run_show_join_command(d):
    admin = kubeconfig.load("/etc/kubernetes/admin.conf")
    token = d.cfg.init["bootstrapTokens"][0]["token"]
    shown_token = "<value withheld>" if d.skip_token_print else token
    ca = admin.ca_pem()
    out.say("\nYour Kubernetes control-plane has initialized successfully!\n")
    out.say("To start using your cluster, you need to run the following as a regular user:\n")
    out.say("  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n"
            "  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n")
    out.say("Alternatively, if you are the root user, you can run:\n\n  export KUBECONFIG=/etc/kubernetes/admin.conf\n")
    out.say("You should now deploy a pod network to the cluster.\nRun \"kubectl apply -f [podnetwork].yaml\" with "
            "one of the options listed at:\n  https://kubernetes.io/docs/concepts/cluster-administration/addons/\n")
    if d.cluster.get("controlPlaneEndpoint"):
        if d.upload_certs:
            key = "<value withheld>" if d.skip_key_print else d.certificate_key
            out.say("You can now join any number of control-plane nodes running the following command on each "
                    "as root:\n")
            out.say(common.join_command(admin.server, ca, shown_token, True, key) + "\n")
            out.say("Please note that the certificate-key gives access to cluster sensitive data, keep it secret!\n"
                    "As a safeguard, uploaded-certs will be deleted in two hours; If necessary, you can use\n"
                    "\"kubeadm init phase upload-certs --upload-certs\" to reload certs afterward.\n")
        else:
            out.say("You can now join any number of control-plane nodes by copying certificate authorities\n"
                    "and service account keys on each node and then running the following as root:\n")
            out.say(common.join_command(admin.server, ca, shown_token, True) + "\n")
    out.say("Then you can join any number of worker nodes by running the following on each as root:\n")
    out.say(common.join_command(admin.server, ca, shown_token))


def phases(d):
    return [
        workflow.Phase("preflight", run_preflight),
        certs_phases(d),
        kubeconfig_phases(d),
        workflow.Phase("etcd", None, [workflow.Phase("local", run_etcd_local)]),
        control_plane_phases(d),
        workflow.Phase("kubelet-start", run_kubelet_start),
        workflow.Phase("wait-control-plane", run_wait_control_plane),
        workflow.Phase("upload-config", None, [workflow.Phase("kubeadm", run_upload_config)]),
        workflow.Phase("upload-certs", run_upload_certs),
        workflow.Phase("mark-control-plane", run_mark_control_plane),
        workflow.Phase("bootstrap-token", run_bootstrap_token),
        workflow.Phase("kubelet-finalize", None, [workflow.Phase("enable-client-cert-rotation", run_kubelet_finalize)]),
        addon_phases(d),
        workflow.Phase("show-join-command", run_show_join_command),
    ]


def flag_overrides(opts):
    """Flags that map into the configuration when no --config is given."""
    init, cluster = {}, {}
    if opts.get("apiserver-advertise-address"):
        init.setdefault("localAPIEndpoint", {})["advertiseAddress"] = opts["apiserver-advertise-address"]
    if opts.get("apiserver-bind-port"):
        init.setdefault("localAPIEndpoint", {})["bindPort"] = int(opts["apiserver-bind-port"])
    if opts.get("node-name"):
        init.setdefault("nodeRegistration", {})["name"] = opts["node-name"]
    if opts.get("cri-socket"):
        init.setdefault("nodeRegistration", {})["criSocket"] = opts["cri-socket"]
    if opts.get("token") or opts.get("token-ttl"):
        bt = {}
        if opts.get("token"):
            bt["token"] = opts["token"]
        if opts.get("token-ttl"):
            bt["ttl"] = opts["token-ttl"]
        init["bootstrapTokens"] = [bt]
    if opts.get("certificate-key"):
        init["certificateKey"] = opts["certificate-key"]
    for flag, path in (("control-plane-endpoint", ("controlPlaneEndpoint",)),
                       ("kubernetes-version", ("kubernetesVersion",)),
                       ("pod-network-cidr", ("networking", "podSubnet")),
                       ("service-cidr", ("networking", "serviceSubnet")),
                       ("service-dns-domain", ("networking", "dnsDomain")),
                       ("cert-dir", ("certificatesDir",)), ("image-repository", ("imageRepository",))):
        if opts.get(flag):
            t = cluster
            for p in path[:-1]:
                t = t.setdefault(p, {})
            t[path[-1]] = opts[flag]
    if opts.get("apiserver-cert-extra-sans"):
        cluster.setdefault("apiServer", {})["certSANs"] = opts["apiserver-cert-extra-sans"]
    if opts.get("feature-gates"):
        gates = {}
        for kv in opts["feature-gates"].split(","):
            k, _, v = kv.partition("=")
            gates[k] = v.lower() == "true"
        cluster["featureGates"] = gates
    return {"init": init, "cluster": cluster}


def run(opts):
    path = opts.get("config")
    cfg = config.load_init(path, None if path else flag_overrides(opts))
    d = InitData(cfg, opts)
    d.ignore = preflight.validate_ignore(opts.get("ignore-preflight-errors"),
                                         cfg.init["nodeRegistration"].get("ignorePreflightErrors"))
    view = d.view()
    external, problem = pki.using_external_ca(view)
    if external:
        if problem:
            raise KubeadmError("invalid or incomplete external CA: %s" % problem)
        kubeconfigs.validate_for_external_ca(d.cluster, cfg.node_name, cfg.endpoint)
    front_external, _ = pki.using_external_ca(view, "front-proxy-ca", (("front-proxy-client", "front-proxy client"),))
    d.external_ca = external
    if d.upload_certs and (external or front_external):
        raise KubeadmError("can't use upload-certs with an external CA or an external front-proxy CA")
    if d.upload_certs and not d.certificate_key:
        d.certificate_key = secrets.token_hex(32)
    skip = workflow.split_skip(opts.get("skip-phases"), cfg.init.get("skipPhases"))
    if "addon/coredns" in skip or "addon" in skip:
        d.cluster["dns"]["disabled"] = True
    if "addon/kube-proxy" in skip or "addon" in skip:
        d.cluster["proxy"]["disabled"] = True
    out.say("[init] Using Kubernetes version: %s" % d.cluster["kubernetesVersion"])
    workflow.run("init", phases(d), skip, d)
