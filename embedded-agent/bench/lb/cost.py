#!/usr/bin/env python3
"""What one new connection costs khagent and haproxy, one thread each, loopback only, under
`wrk -t1 -c64 -H 'Connection: close'` through the proxy to bench.py's nginx backend:

- the proxy's CPU split: the share of its utime + stime that is stime (kernel), untraced;
- syscalls per proxied connection: `strace -c -f -p PID` over a second run (strace slows the
  proxy, so this run's CPU figures are not used);
- packets per connection on each leg, client-proxy (port 20000) and proxy-backend (18080):
  `tcpdump -i lo` over a third run, divided by the connections wrk completed.

docs/bench-lb.md ("What a new connection costs") and docs/agent.md quote this script.

Usage (root, from the repository root, after `cargo build --release -p khagent`):
    KHAGENT=target/release/khagent python3 embedded-agent/bench/lb/cost.py [--seconds 3]
        [--rounds 3]
Each figure is the median over the rounds; contenders alternate within a round.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import bench

CONTENDERS = ["khagent", "haproxy"]


def cpu_split(pid):
    """(utime, stime) of a process in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def kernel_share(proxy, seconds):
    u0, s0 = cpu_split(proxy.pid)
    _, conns, _ = bench.wrk(seconds, close=True)
    u1, s1 = cpu_split(proxy.pid)
    return (s1 - s0) / max((u1 - u0) + (s1 - s0), 1e-9), conns


def syscalls_per_connection(proxy, seconds, work):
    out = os.path.join(work, f"strace-{proxy.kind}.txt")
    tracer = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", out, "-p", str(proxy.pid)])
    time.sleep(0.5)  # attached to every thread before the load starts
    _, conns, _ = bench.wrk(seconds, close=True)
    tracer.terminate()
    tracer.wait()
    with open(out) as f:
        total = [line for line in f if line.strip().endswith("total")]
    # "100.00    0.512345           3    170000      1200            total"
    calls = int(total[-1].split()[3])
    return calls / max(conns, 1)


def packets_per_connection(seconds, work):
    pcap = os.path.join(work, "lo.pcap")
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-nn", "-q", "-s", "96", "-w", pcap,
                             f"tcp port {bench.PROXY_PORT} or tcp port {bench.HTTP_PORT}"],
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    _, conns, _ = bench.wrk(seconds, close=True)
    time.sleep(0.2)
    dump.terminate()
    dump.wait()

    def count(port):
        out = subprocess.run(["tcpdump", "-r", pcap, "-nn", f"tcp port {port}"],
                             capture_output=True, text=True, check=True).stdout
        return len(out.splitlines())

    return (count(bench.PROXY_PORT) / max(conns, 1), count(bench.HTTP_PORT) / max(conns, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="khlb-cost-")
    bench.PINGPONG = os.path.join(work, "pingpong")
    subprocess.run(["rustc", "-O", "-o", bench.PINGPONG,
                    os.path.join(bench.HERE, "pingpong.rs")], check=True)
    backends = bench.Backends(work)
    res = {c: {"kernel": [], "syscalls": [], "client_pkts": [], "backend_pkts": []}
           for c in CONTENDERS}
    try:
        for rnd in range(args.rounds):
            for who in CONTENDERS:
                with bench.Proxy(who, bench.HTTP_PORT, work) as p:
                    share, _ = kernel_share(p, args.seconds)
                    res[who]["kernel"].append(share)
                    res[who]["syscalls"].append(syscalls_per_connection(p, args.seconds, work))
                    client, backend = packets_per_connection(args.seconds, work)
                    res[who]["client_pkts"].append(client)
                    res[who]["backend_pkts"].append(backend)
                print(f"round {rnd + 1} {who}: " + ", ".join(
                    f"{k}={v[-1]:.3g}" for k, v in res[who].items()), file=sys.stderr)
    finally:
        backends.stop()
    print(f"{'proxy':10} {'kernel share':>12} {'syscalls/conn':>14} "
          f"{'pkts/conn client':>17} {'pkts/conn backend':>18}")
    for who in CONTENDERS:
        m = {k: statistics.median(v) for k, v in res[who].items()}
        print(f"{who:10} {m['kernel']:>11.0%} {m['syscalls']:>14.1f} "
              f"{m['client_pkts']:>17.1f} {m['backend_pkts']:>18.1f}")


if __name__ == "__main__":
    main()
