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

Usage (root, from the repository root, after
`CARGO_TARGET_DIR=/work/target-agent cargo build --release -p khagent`):
    python3 embedded-agent/bench/lb/cluster.py [--rounds 5] [--seconds 5]
        [--event-rate 10000] [--req-rate 2000] [--watches 1000,5000,9900] [--out results.json]
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
    args = ap.parse_args()
    contenders = args.contenders.split(",")
    bench.MAXCONN = 9990
    work = tempfile.mkdtemp(prefix="khlb-cluster-")
    gen = os.path.join(work, "cluster")
    subprocess.run(["rustc", "-O", "--edition", "2021", "-o", gen,
                    os.path.join(bench.HERE, "cluster.rs")], check=True)
    started = {"utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": loadavg()}
    print(f"start {started['utc']}, loadavg {started['loadavg']}", file=sys.stderr)
    server = subprocess.Popen([gen, "server", str(SERVER_PORT)])
    res = {c: {} for c in contenders}
    try:
        bench.wait_port(SERVER_PORT)
        for rnd in range(args.rounds):
            for who in contenders:
                with bench.Proxy(who, SERVER_PORT, work) as p, bench.DmaLatency():
                    time.sleep(0.5)
                    argv = [gen, "client", str(bench.PROXY_PORT), str(SERVER_PORT), str(p.pid),
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
