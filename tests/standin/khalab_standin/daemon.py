"""What the stand-in daemons share: flag parsing, signals, health endpoints, start-up."""

import os
import signal
import socket
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import env, x509util


def parse_flags(argv):
    """`--name=value`, `--name value` and bare `--name` (true); unknown flags are kept and
    ignored by the caller, as the stand-ins implement only the flags they need."""
    flags, i = {}, 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                k, v = a[2:], argv[i + 1]
                i += 1
            else:
                k, v = a[2:], "true"
            flags[k] = v
        i += 1
    return flags


def stop_on_signals(stop):
    """SIGTERM/SIGINT run `stop` once, from a thread (serve_forever's shutdown must not be
    called from the serving thread)."""
    done = threading.Event()

    def handler(signum, frame):
        if not done.is_set():
            done.set()
            threading.Thread(target=stop, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return done


def self_signed_server_context(names=("localhost",), ips=("127.0.0.1",)):
    """Like kube-controller-manager without --tls-cert-file: a throwaway self-signed cert."""
    key = x509util.new_key("ECDSA-P256")
    ca = x509util.new_ca("khalab-standin-self-signed", key)
    leaf_key = x509util.new_key("ECDSA-P256")
    leaf = x509util.new_signed(ca, key, leaf_key, "localhost", dns=names, ips=ips, server=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fd, path = tempfile.mkstemp(prefix="khalab-standin-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(x509util.cert_pem(leaf) + x509util.key_pem(leaf_key))
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    return ctx


class _HealthHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    check = None

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        problem = self.check(self.path.split("?")[0])
        body = b"ok" if problem is None else problem.encode()
        self.send_response(200 if problem is None else 500)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, family, ctx):
        self.address_family, self.ctx = family, ctx
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        if self.ctx is not None:
            request.settimeout(10)
            try:
                request = self.ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass


def serve_health(bind, port, check, tls_ctx=None):
    """Serve /healthz, /livez, /readyz (any path) on bind:port in a thread; `check(path)`
    returns None when healthy, else the failure text."""
    handler = type("Health", (_HealthHandler,), {"check": staticmethod(check)})
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    server = _Server((bind, port), handler, family, tls_ctx)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
    return server


def run(program_name, main):
    env.record_argv(program_name, sys.argv[1:])
    env.banner(program_name)
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        code = 1
    sys.exit(code or 0)
