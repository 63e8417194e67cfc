"""The stand-in kube-controller-manager and kube-scheduler.

Both elect a leader with a Lease in kube-system, as the real ones do, so only one instance
in the cluster is active; an instance that loses its lease exits and the kubelet restarts it.
The controller-manager's leader runs the controllers kubeadm relies on:
- bootstrapsigner: `jws-kubeconfig-<id>` in kube-public/cluster-info for every valid token
  with the signing usage (only when --controllers names it, as kubeadm's manifest does);
- tokencleaner: deletes expired bootstrap-token Secrets (same);
- csrapproving: approves kubelet client CSRs from kubeadm's bootstrap token group (new node)
  or from the node itself (renewal), like the RBAC kubeadm sets up;
- csrsigning: signs approved kubelet client CSRs with --cluster-signing-cert/key-file;
- nodelifecycle: a Node whose Lease is older than the grace period becomes Ready=Unknown;
- a garbage collector for Secrets whose owner Secret is gone (kubeadm-certs).
The scheduler elects its leader and schedules nothing.
"""

import base64
import datetime
import socket
import sys
import threading
import time
import uuid

from . import daemon, env, jws, kubeclient, kubeconfig, tokens, x509util

MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"
KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
NODE_MONITOR_GRACE = 40


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def microtime(t=None):
    return (t or utcnow()).strftime(MICROTIME)


def parse_time(text):
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElector:
    """client-go's leaderelection with a Lease lock (15 s lease, renew every 2 s)."""

    def __init__(self, client, name, namespace="kube-system", lease_duration=15, retry=2.0):
        self.client, self.name, self.namespace = client, name, namespace
        self.identity = "%s_%s" % (socket.gethostname(), uuid.uuid4())
        self.lease_duration, self.retry = lease_duration, retry
        self.leader = False
        self.observed = None

    def try_acquire_or_renew(self):
        now = utcnow()
        try:
            lease = self.client.get("Lease", self.name, self.namespace)
        except kubeclient.ApiError as e:
            if not e.not_found:
                return False
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.name, "namespace": self.namespace},
                     "spec": {"holderIdentity": self.identity,
                              "leaseDurationSeconds": self.lease_duration,
                              "acquireTime": microtime(now), "renewTime": microtime(now),
                              "leaseTransitions": 0}}
            try:
                self.client.create(lease)
                return True
            except kubeclient.ApiError:
                return False
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity")
        renew = parse_time(spec.get("renewTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and renew and \
                (now - renew).total_seconds() < duration:
            return False
        if holder != self.identity:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
            spec["acquireTime"] = microtime(now)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = self.lease_duration
        spec["renewTime"] = microtime(now)
        try:
            self.client.update(lease)
            return True
        except kubeclient.ApiError:
            return False

    def run(self, on_lead, stop):
        """Block until leader, call on_lead() in a thread, keep renewing; exit the process
        when the lease is lost (what kube-controller-manager does: "leaderelection lost")."""
        deadline = None
        while not stop.is_set():
            ok = self.try_acquire_or_renew()
            if ok:
                deadline = time.monotonic() + self.lease_duration * 2 / 3
                if not self.leader:
                    self.leader = True
                    sys.stderr.write("%s stand-in: successfully acquired lease %s/%s as %s\n" % (
                        self.name, self.namespace, self.name, self.identity))
                    threading.Thread(target=on_lead, daemon=True).start()
            elif self.leader and deadline is not None and time.monotonic() > deadline:
                sys.stderr.write("%s stand-in: leaderelection lost\n" % self.name)
                sys.stderr.flush()
                raise SystemExit(1)
            stop.wait(self.retry)


def _client(flags, default):
    path = flags.get("kubeconfig") or default
    kc = kubeconfig.load(path)
    return kubeclient.Client.from_kubeconfig(kc, timeout=5)


class ControllerManager:
    def __init__(self, flags, client):
        self.flags, self.client = flags, client
        controllers = [c.strip() for c in flags.get("controllers", "*").split(",")]
        self.enabled = lambda name, default=True: (
            name in controllers or ("*" in controllers and default and "-" + name not in controllers))
        self.signing = None
        cert, key = flags.get("cluster-signing-cert-file"), flags.get("cluster-signing-key-file")
        if cert and key:
            self.signing = (x509util.load_cert(env.host_path(cert)), x509util.load_key(env.host_path(key)))
        self.duration = tokens.parse_duration(flags.get("cluster-signing-duration", "8760h"))

    def loop(self, stop):
        while not stop.is_set():
            for name, fn, default in (("bootstrapsigner", self.bootstrap_signer, False),
                                      ("tokencleaner", self.token_cleaner, False),
                                      ("csrapproving", self.csr_approving, True),
                                      ("csrsigning", self.csr_signing, True),
                                      ("nodelifecycle", self.node_lifecycle, True),
                                      ("garbagecollector", self.garbage_collector, True)):
                if not self.enabled(name, default):
                    continue
                try:
                    fn()
                except (kubeclient.ApiError, OSError, ValueError) as e:
                    sys.stderr.write("kube-controller-manager stand-in: %s: %s\n" % (name, e))
            stop.wait(1.0)

    def _token_secrets(self):
        out = []
        for s in self.client.list("Secret", "kube-system"):
            info = tokens.from_secret(s)
            if info is not None:
                out.append((s, info))
        return out

    def bootstrap_signer(self):
        try:
            cm = self.client.get("ConfigMap", "cluster-info", "kube-public")
        except kubeclient.ApiError as e:
            if e.not_found:
                return
            raise
        data = dict(cm.get("data") or {})
        content = data.get("kubeconfig")
        if content is None:
            return
        want = {k: v for k, v in data.items() if not k.startswith("jws-kubeconfig-")}
        for _, info in self._token_secrets():
            if "signing" in info.usages and not info.expired():
                want["jws-kubeconfig-" + info.id] = jws.compute_detached(content, info.id, info.secret)
        if want != data:
            cm["data"] = want
            self.client.update(cm)

    def token_cleaner(self):
        for s, info in self._token_secrets():
            if info.expired():
                self.client.delete("Secret", s["metadata"]["name"], "kube-system")

    def garbage_collector(self):
        secrets = self.client.list("Secret", "kube-system")
        uids = {s["metadata"].get("uid") for s in secrets}
        for s in secrets:
            owners = s["metadata"].get("ownerReferences") or []
            if owners and all(o.get("uid") not in uids for o in owners):
                self.client.delete("Secret", s["metadata"]["name"], "kube-system")

    def csr_approving(self):
        for csr in self.client.list("CertificateSigningRequest"):
            spec, st = csr.get("spec") or {}, csr.get("status") or {}
            if spec.get("signerName") != KUBELET_CLIENT_SIGNER or st.get("conditions"):
                continue
            reason = self._kubelet_client_approval(spec)
            if reason is None:
                continue
            now = microtime().split(".")[0] + "Z"
            csr["status"] = {"conditions": [{
                "type": "Approved", "status": "True", "reason": "AutoApproved", "message": reason,
                "lastUpdateTime": now, "lastTransitionTime": now}]}
            self.client.update(csr, sub="approval")

    @staticmethod
    def _kubelet_client_approval(spec):
        try:
            req = x509util.load_csr_pem(base64.b64decode(spec.get("request", "")))
        except ValueError:
            return None
        cn, orgs = x509util.subject_cn(req), x509util.subject_orgs(req)
        if not cn.startswith("system:node:") or orgs != ["system:nodes"]:
            return None
        usages = set(spec.get("usages") or [])
        if "client auth" not in usages or not usages <= {"digital signature", "key encipherment", "client auth"}:
            return None
        groups = spec.get("groups") or []
        if spec.get("username") == cn and "system:nodes" in groups:
            return "Auto approving self kubelet client certificate after SubjectAccessReview."
        if tokens.DEFAULT_GROUP in groups:
            return "Auto approving kubelet client certificate after SubjectAccessReview."
        return None

    def csr_signing(self):
        if self.signing is None:
            return
        ca_cert, ca_key = self.signing
        for csr in self.client.list("CertificateSigningRequest"):
            spec, st = csr.get("spec") or {}, csr.get("status") or {}
            approved = any(c.get("type") == "Approved" and c.get("status") == "True"
                           for c in st.get("conditions") or [])
            if not approved or st.get("certificate") or spec.get("signerName") not in (
                    KUBELET_CLIENT_SIGNER, "kubernetes.io/kube-apiserver-client"):
                continue
            req = x509util.load_csr_pem(base64.b64decode(spec["request"]))
            validity = self.duration
            if spec.get("expirationSeconds"):
                validity = min(validity, int(spec["expirationSeconds"]))
            now = datetime.datetime.utcnow()
            cert = x509util.new_signed(ca_cert, ca_key, _PublicKeyHolder(req.public_key()),
                                       x509util.subject_cn(req), x509util.subject_orgs(req),
                                       client=True,
                                       not_before=now - datetime.timedelta(minutes=5),
                                       not_after=now + datetime.timedelta(seconds=validity))
            csr["status"] = dict(st, certificate=base64.b64encode(x509util.cert_pem(cert)).decode())
            self.client.update(csr, sub="status")

    def node_lifecycle(self):
        leases = {l["metadata"]["name"]: l for l in self.client.list("Lease", "kube-node-lease")}
        now = utcnow()
        for node in self.client.list("Node"):
            name = node["metadata"]["name"]
            conds = (node.get("status") or {}).get("conditions") or []
            ready = next((c for c in conds if c.get("type") == "Ready"), None)
            # The last sign of life: the Lease, the status heartbeat, or registration itself.
            seen = [parse_time(((leases.get(name) or {}).get("spec") or {}).get("renewTime")),
                    parse_time((ready or {}).get("lastHeartbeatTime")),
                    parse_time(node["metadata"].get("creationTimestamp"))]
            seen = [t for t in seen if t is not None]
            stale = not seen or (now - max(seen)).total_seconds() > NODE_MONITOR_GRACE
            if not stale or ready is None or ready.get("status") == "Unknown":
                continue
            t = microtime(now).split(".")[0] + "Z"
            for c in conds:
                c.update({"status": "Unknown", "reason": "NodeStatusUnknown",
                          "message": "Kubelet stopped posting node status.",
                          "lastTransitionTime": t})
            self.client.update(node, sub="status")


class _PublicKeyHolder:
    """Lets x509util.new_signed sign a CSR's public key (it asks key.public_key())."""

    def __init__(self, pub):
        self._pub = pub

    def public_key(self):
        return self._pub


def _serve_health(flags, default_port):
    bind = flags.get("bind-address", "0.0.0.0")
    port = env.port(int(flags.get("secure-port", default_port)))
    return daemon.serve_health(bind, port, lambda path: None,
                               daemon.self_signed_server_context())


def controller_manager_main(argv):
    flags = daemon.parse_flags(argv)
    try:
        client = _client(flags, "/etc/kubernetes/controller-manager.conf")
        cm = ControllerManager(flags, client)
        _serve_health(flags, 10257)
    except (kubeconfig.KubeconfigError, x509util.CertError, OSError, ValueError) as e:
        sys.stderr.write("kube-controller-manager stand-in: failed to start: %s\n" % e)
        return 1
    stop = daemon.stop_on_signals(lambda: None)
    if flags.get("leader-elect", "true") == "false":
        cm.loop(stop)
        return 0
    LeaderElector(client, "kube-controller-manager").run(lambda: cm.loop(stop), stop)
    return 0


def scheduler_main(argv):
    flags = daemon.parse_flags(argv)
    try:
        client = _client(flags, "/etc/kubernetes/scheduler.conf")
        _serve_health(flags, 10259)
    except (kubeconfig.KubeconfigError, OSError, ValueError) as e:
        sys.stderr.write("kube-scheduler stand-in: failed to start: %s\n" % e)
        return 1
    stop = daemon.stop_on_signals(lambda: None)
    if flags.get("leader-elect", "true") == "false":
        stop.wait()
        return 0
    LeaderElector(client, "kube-scheduler").run(lambda: None, stop)
    return 0
