"""Building stand-in clusters on loopback for the cluster tests."""

import unittest

import harness as H


class Cluster:
    """cp nodes 127.0.0.2.., workers after them; controlPlaneEndpoint = cp1's address and
    API port (there is no load balancer in these tests)."""

    def __init__(self, case, version="v1.31.2", cps=1, workers=0, pki=None, first_ip=2, cpe=True,
                 upload_certs=False, init_extra="", cluster_extra=""):
        self.case, self.version = case, version
        self.minor = int(version.split(".")[1])
        self.api = "kubeadm.k8s.io/v1beta4" if self.minor >= 31 else "kubeadm.k8s.io/v1beta3"
        self.pki = pki or H.PKI(version_minor=self.minor)
        self.cps = [case.node("cp%d" % (i + 1), "127.0.0.%d" % (first_ip + i), version=version) for i in range(cps)]
        self.workers = [case.node("w%d" % (i + 1), "127.0.0.%d" % (first_ip + cps + i), version=version)
                        for i in range(workers)]
        cp1 = self.cps[0]
        self.cpe = "%s:%d" % (cp1.ip, cp1.api_port)
        self.with_cpe = cpe
        for cp in self.cps:
            self.place_pki(cp)
        for n in self.cps + self.workers:
            n.boot()
        text = H.init_config(cp1, cpe=self.cpe if cpe else None, version=version, api=self.api,
                             extra_init=init_extra, extra_cluster=cluster_extra)
        if not cpe:
            text = text.replace("controlPlaneEndpoint: %s\n" % "%s:%d" % (cp1.ip, cp1.api_port), "")
        args = ["init", "--config", cp1.write("/root/kubeadm.yaml", text)] + (["--upload-certs"] if upload_certs else [])
        self.init_result = cp1.kubeadm(*args)
        case.assertOk(self.init_result)
        self.joins = {}
        for cp in self.cps[1:]:
            self.joins[cp.name] = self.join(cp)
            case.assertOk(self.joins[cp.name])
        for w in self.workers:
            self.joins[w.name] = self.join(w, control_plane=False)
            case.assertOk(self.joins[w.name])

    def place_pki(self, node, cpe_host=None):
        self.pki.place(node.root, self.pki.node_certs(node.name, node.ip, cpe_host or self.cps[0].ip))

    def join(self, node, control_plane=True, token="abcdef.0123456789abcdef", ca_hash=None, key="", extra="",
             timeouts="60s", env=None, **kw):
        text = H.join_config(node, self.cpe, ca_hash or self.pki.ca_hash(), token=token,
                             control_plane=control_plane, key=key, api=self.api, extra=extra, timeouts=timeouts, **kw)
        return node.kubeadm("join", "--config", node.write("/root/join.yaml", text), env=env)

    @property
    def cp1(self):
        return self.cps[0]

    def admin(self):
        return self.cp1.client()

    def members(self):
        return self.cp1.etcd().member_list()

    def ready_nodes(self):
        out = {}
        for n in self.admin().list("Node"):
            conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
            out[n["metadata"]["name"]] = conds.get("Ready")
        return out


class ClusterCase(H.NodeTestCase):
    pass


class SharedCluster(H.ResultAsserts, unittest.TestCase):
    """One cluster for a whole class of read-only tests (built in setUpClass)."""
    version = "v1.31.2"
    cps, workers = 2, 1

    @classmethod
    def setUpClass(cls):
        cls._holder = H.NodeTestCase("run")
        cls._holder.setUp()
        try:
            cls.c = Cluster(cls._holder, cls.version, cls.cps, cls.workers)
        except BaseException:
            cls._holder.doCleanups()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._holder.doCleanups()
