"""Contract section 7 item 14: token discovery. The insecure fetch of cluster-info, the HS256
detached JWS with kid = token id, the SPKI pin matching any CA of the bundle, the verified
re-fetch that must be identical, and the failures' real texts."""

import base64
import json
import ssl
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness as H
from clusters import SharedCluster
from khalab_standin import jws, kubeconfig, tokens, x509util

TOKEN = "abcdef.0123456789abcdef"


class AgainstACluster(SharedCluster):
    cps, workers = 1, 0

    def setUp(self):
        self.holder = H.NodeTestCase("run")
        self.holder.setUp()
        self.addCleanup(self.holder.doCleanups)
        self.w = self.holder.node("w9", "127.0.0.9")
        self.w.boot()

    def join(self, **kw):
        kw.setdefault("discovery", "3s")
        return self.c.join(self.w, control_plane=False, **kw)

    def test_a_pin_of_another_key_is_refused(self):
        res = self.join(ca_hash="sha256:" + "ab" * 32)
        self.assertFails(res, 'error execution phase preflight: couldn\'t validate the identity of the API Server: '
                              'cluster CA found in cluster-info ConfigMap is invalid: none of the public keys "%s" '
                              'are pinned' % self.c.pki.ca_hash())

    def test_a_malformed_pin_is_refused(self):
        res = self.join(ca_hash="sha256:1234")
        self.assertFails(res, 'invalid discovery token CA certificate hash: invalid hash "sha256:1234", expected a 32 '
                              'byte SHA-256 hash, found 2 bytes')

    def test_an_unknown_token_fails_after_the_discovery_timeout(self):
        start = time.monotonic()
        res = self.join(token="zzzzzz.zzzzzzzzzzzzzzzz")
        self.assertGreaterEqual(time.monotonic() - start, 3)
        self.assertFails(res, 'couldn\'t validate the identity of the API Server: could not find a JWS signature in '
                              'the cluster-info ConfigMap for token ID "zzzzzz"')

    def test_the_wrong_secret_fails_the_jws_check(self):
        res = self.join(token="abcdef.zzzzzzzzzzzzzzzz")
        self.assertFails(res, "failed to verify JWS signature of received cluster info object, can't trust this "
                              "API Server")

    def test_an_expired_token_loses_its_signature(self):
        admin = self.c.admin()
        expired = H.datetime_now().replace(microsecond=0)
        admin.create(tokens.secret_object("olddid.0123456789abcdef", expires=expired))
        H.wait_for(lambda: "jws-kubeconfig-olddid" not in admin.get("ConfigMap", "cluster-info", "kube-public")["data"],
                   15, "the signer to drop the expired token")
        H.wait_for(lambda: not [s for s in admin.list("Secret", "kube-system")
                                if s["metadata"]["name"] == "bootstrap-token-olddid"], 15, "the token cleaner")
        res = self.join(token="olddid.0123456789abcdef")
        self.assertFails(res, 'could not find a JWS signature in the cluster-info ConfigMap for token ID "olddid"')

    def test_injected_discovery_timeout(self):
        start = time.monotonic()
        res = self.join(env={"KHALAB_STANDIN_FAIL": "join:discovery-timeout"})
        self.assertLess(time.monotonic() - start, 10)
        self.assertFails(res, 'error execution phase preflight: couldn\'t validate the identity of the API Server: '
                              'could not find a JWS signature in the cluster-info ConfigMap for token ID "abcdef"')


class FakeAPIServer:
    """Serves kube-public/cluster-info only, with a different kubeconfig from the second
    request on (what a man in the middle could do)."""

    def __init__(self, pki, ip, contents):
        self.contents, self.calls = contents, 0
        port = H.free_port()
        cert, key = pki.leaf("ca", "kube-apiserver", ips=[ip], server=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        kubeconfig.load_client_cert(ctx, x509util.cert_pem(cert), x509util.key_pem(key))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                content = outer.contents[min(outer.calls, len(outer.contents) - 1)]
                outer.calls += 1
                tid, secret = TOKEN.split(".")
                cm = {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                      "data": {"kubeconfig": content, "jws-kubeconfig-" + tid: jws.compute_detached(content, tid, secret)}}
                body = json.dumps(cm).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((ip, port), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.endpoint = "%s:%d" % (ip, port)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class AgainstAFakeServer(H.NodeTestCase):
    def setUp(self):
        super().setUp()
        self.pki = H.PKI()
        self.w = self.node("w9", "127.0.0.9")
        self.w.boot()

    def serve(self, *contents):
        srv = FakeAPIServer(self.pki, "127.0.0.8", list(contents))
        self.addCleanup(srv.close)
        return srv

    def info(self, ca_pems):
        return kubeconfig.cluster_info_kubeconfig("https://127.0.0.8:1", base64.b64encode(ca_pems).decode())

    def join(self, srv):
        text = H.join_config(self.w, srv.endpoint, self.pki.ca_hash(), control_plane=False, discovery="3s")
        return self.w.kubeadm("join", "--config", self.w.write("/root/j.yaml", text))

    def test_the_verified_refetch_must_be_identical(self):
        first = self.info(self.pki.ca_pem())
        srv = self.serve(first, first.replace("127.0.0.8:1", "127.0.0.8:2"))
        res = self.join(srv)
        self.assertFails(res, "the second kubeconfig from the cluster-info ConfigMap (using validated TLS) was "
                              "different from the first")
        self.assertEqual(srv.calls, 2)

    def test_the_pin_may_match_any_ca_of_the_bundle(self):
        other = H.PKI()
        srv = self.serve(self.info(other.ca_pem() + self.pki.ca_pem()))
        res = self.join(srv)
        # Discovery passed (both fetches). The TLS bootstrap then uses the server named in
        # cluster-info, not the discovery endpoint.
        self.assertEqual(srv.calls, 2)
        self.assertFails(res, 'unable to fetch the kubeadm-config ConfigMap: failed to get config map: Get '
                              '"https://127.0.0.8:1/api/v1/namespaces/kube-system/configmaps/kubeadm-config')


if __name__ == "__main__":
    unittest.main()
