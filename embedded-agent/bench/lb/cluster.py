#!/usr/bin/env python3
"""The traffic an API-server load balancer really carries: khagent vs haproxy 2.6 (`mode tcp`)
vs nginx stream, one thread each, loopback only, interleaved (A B C A B C ...).

Per round and contender, `cluster client` (cluster.rs, one Rust load generator for everyone)
opens 64 keep-alive request connections and, in steps, 1,000 / 5,000 / 9,900 watches through
the proxy to `cluster server` (the stand-in API server). At each step, for SECONDS, the server
sends EVENT_RATE events of 300 bytes per second round-robin over the watches while the client
sends REQ_RATE requests per second (200 bytes, answered with 700) over the 64 connections.
After the last step the 64 connections run closed loop (keep-alive requests as fast as they
go) with the watches held open. Reported per step: event and request latency p50/p99/p99.9,
the proxy's CPU per forwarded message (an event is one message, a request and its answer two;
CPU time from /proc/PID/task/*/schedstat), how often it blocked per message, and its RSS; for
the closed loop: requests/s and the proxy's CPU per request.

9,900 watches + 64 request connections is the most the 20,000-descriptor limit allows (a
proxy holds two descriptors per connection). /dev/cpu_dma_latency is held at 0 throughout.

--floor adds floor.rs (a bare epoll proxy: the least a one-thread proxy can spend per message)
and floor-x2 (two floor.rs processes sharing the port with SO_REUSEPORT: whether a second
proxy thread pays on this machine). --baseline PATH adds another khagent binary as
"khagent-base" (the same test before and after a change).

Usage (root, from the repository root, after
`CARGO_TARGET_DIR=/work/target-agent cargo build --release -p khagent`):
    python3 embedded-agent/bench/lb/cluster.py [--rounds 5] [--seconds 5]
        [--event-rate 10000] [--req-rate 2000] [--watches 1000,5000,9900] [--out results.json]
        [--floor] [--baseline PATH]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import bench

SERVER_PORT = 18100


class Contender:
    """One contender's proxy process(es), forwarding 127.0.0.1:20000 to the server."""

    def __init__(self, who, work, floor, baseline):
        if who == "floor-x2":
            bench.FLOOR = floor
            # Two processes on one port (SO_REUSEPORT); wait_port cannot tell them apart,
            # so the second is given a moment to bind.
            self.procs = [bench.Proxy("floor", SERVER_PORT, work)]
            self.procs.append(bench.Proxy("floor", SERVER_PORT, work))
            time.sleep(0.3)
        else:
            bench.FLOOR, bench.BASELINE = floor, baseline
            self.procs = [bench.Proxy(who, SERVER_PORT, work)]
        self.pids = ",".join(str(p.pid) for p in self.procs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if len(self.procs) == 1:
            self.procs[0].stop()
            return
        # Proxy.stop waits for the port to close, which it does only when both are gone.
        for p in self.procs:
            p.proc.terminate()
        for p in self.procs:
            p.proc.wait()
        bench.wait_port(bench.PROXY_PORT, up=False)
        for p in self.procs:
            shutil.rmtree(p.dir, ignore_errors=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--event-rate", type=int, default=10000)
    ap.add_argument("--req-rate", type=int, default=2000)
    ap.add_argument("--watches", default="1000,5000,9900")
    ap.add_argument("--contenders", default=",".join(bench.CONTENDERS))
    ap.add_argument("--out", default="")
    ap.add_argument("--floor", action="store_true",
                    help="also run floor.rs, and two floor.rs processes on one port")
    ap.add_argument("--baseline", default="", metavar="PATH",
                    help="also run this khagent binary, as khagent-base")
    args = ap.parse_args()
    contenders = args.contenders.split(",")
    if args.baseline:
        contenders.append("khagent-base")
    if args.floor:
        contenders += ["floor", "floor-x2"]
    bench.MAXCONN = 9990
    work = tempfile.mkdtemp(prefix="khlb-cluster-")
    gen, floor = os.path.join(work, "cluster"), os.path.join(work, "floor")
    for exe in (gen, floor):
        subprocess.run(["rustc", "-O", "--edition", "2021", "-o", exe,
                        os.path.join(bench.HERE, os.path.basename(exe) + ".rs")], check=True)
    started = {"utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": loadavg()}
    print(f"start {started['utc']}, loadavg {started['loadavg']}", file=sys.stderr)
    server = subprocess.Popen([gen, "server", str(SERVER_PORT)])
    res = {c: {} for c in contenders}
    try:
        bench.wait_port(SERVER_PORT)
        for rnd in range(args.rounds):
            for who in contenders:
                with Contender(who, work, floor, args.baseline) as p, bench.DmaLatency():
                    time.sleep(0.5)
                    argv = [gen, "client", str(bench.PROXY_PORT), str(SERVER_PORT), p.pids,
                            str(args.seconds), str(args.event_rate), str(args.req_rate)]
                    argv += args.watches.split(",")
                    run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
                    if run.returncode != 0:
                        raise RuntimeError(f"{who}: cluster client failed: {run.stderr[-2000:]}")
                for line in run.stdout.splitlines():
                    phase = json.loads(line)
                    tag = (f"w{phase['watches']}" if phase["phase"] == "mix" else "keepalive")
                    for k, v in phase.items():
                        if isinstance(v, (int, float)) and k not in ("watches",):
                            res[who].setdefault(f"{tag}.{k}", []).append(v)
                    if phase.get("errors") or phase.get("requests_skipped"):
                        print(f"{who} round {rnd + 1}: {line}", file=sys.stderr)
                print(f"round {rnd + 1} {who}: " + ", ".join(
                    f"{k}={v[-1]:.4g}" for k, v in res[who].items()
                    if k.endswith(("p99_us", "cpu_us_per_msg", "req_per_s", "cpu_us_per_req"))),
                    file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    ended = {"utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": loadavg()}
    print(f"end {ended['utc']}, loadavg {ended['loadavg']}", file=sys.stderr)

    medians = {who: {k: statistics.median(v) for k, v in d.items()} for who, d in res.items()}
    summary = {"args": vars(args), "start": started, "end": ended, "raw": res,
               "median": medians}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    shown = ("event_p50_us", "event_p99_us", "event_p999_us", "req_p50_us", "req_p99_us",
             "req_p999_us", "cpu_us_per_msg", "sleeps_per_msg", "rss_kib", "req_per_s",
             "cpu_us_per_req", "sleeps_per_req")
    keys = [k for k in medians[contenders[0]] if k.split(".", 1)[1] in shown]
    others = contenders[1:]
    print(f"{'median of ' + str(args.rounds):<28}" + "".join(f"{c:>11}" for c in contenders)
          + "".join(f"{'kh/' + o[:6]:>11}" for o in others))
    for k in keys:
        row = [medians[c].get(k, float("nan")) for c in contenders]
        ratios = [row[0] / r if r else float("nan") for r in row[1:]]
        print(f"{k:<28}" + "".join(f"{v:>11.4g}" for v in row + ratios))
    # Each round pairs runs made seconds apart: the median of the per-round ratios cancels the
    # drift of a shared machine; the range shows the spread.
    if "haproxy" in contenders:
        print(f"per-round ratios {contenders[0]}/haproxy: median (min-max) [each round]")
        for k in keys:
            pairs = [a / b for a, b in zip(res[contenders[0]][k], res["haproxy"].get(k, []))
                     if b]
            if pairs:
                print(f"  {k:<26}{statistics.median(pairs):>7.3f} ({min(pairs):.2f}-"
                      f"{max(pairs):.2f}) [{', '.join(f'{r:.2f}' for r in pairs)}]")


if __name__ == "__main__":
    main()
