"""The stand-in CRI socket: NOT a container runtime.

A container runtime cannot run in the lab, and the stand-in kubelet runs static pods as
plain processes without one. This service only exists so that kubeadm's "container runtime
is reachable" preflight check has a socket to dial at the usual containerd path: it accepts
connections and closes them. It speaks no gRPC; `crictl` against it fails.
"""

import os
import socket
import sys

from . import daemon, env

DEFAULT_SOCKET = "/run/containerd/containerd.sock"


def main(argv):
    flags = daemon.parse_flags(argv)
    path = env.host_path(flags.get("address", DEFAULT_SOCKET))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o660)
    srv.listen(64)
    srv.settimeout(0.5)
    stop = daemon.stop_on_signals(lambda: None)
    sys.stderr.write("khalab CRI stand-in (NOT a container runtime) listening on %s\n" % path)
    sys.stderr.flush()
    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        except OSError:
            break
        conn.close()
    srv.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return 0
