#!/usr/bin/env python3
"""khagent's load balancer vs haproxy 2.6 vs nginx stream, one thread each, loopback only.

Every proxy listens on 127.0.0.1:20000 and forwards to a local backend: iperf3 (throughput),
nginx serving a 13-byte file (wrk: new connections/s and keep-alive requests/s on 64
connections), an echo server (ping-pong latency) or nginx again (4,000 idle connections).
Contenders run interleaved (A B C A B C ...) for ROUNDS rounds and each figure is the median;
ratios compare medians of the same run. Latency runs hold /dev/cpu_dma_latency at 0.
The agent's full idle RSS (LB + health + VRRP) is measured in a private network namespace
with a veth pair inside it, so VRRP traffic never leaves that namespace.

Usage (root, from the repository root, after
`CARGO_TARGET_DIR=/work/target-agent cargo build --release -p khagent`):
    python3 embedded-agent/bench/lb/bench.py [--rounds 5] [--seconds 5] [--out results.json]
        [--only tp1,tp8,conn,req,lat,rss,full] [--floor] [--floor-spin US] [--baseline PATH]
--floor adds floor.rs, a bare epoll proxy, to the connection test: the cost no one-thread
proxy can go below. --floor-spin US adds floor.rs again, busy-polling for up to US µs before
each blocking wait ("floor-spin"). --baseline PATH runs another khagent binary ("khagent-base")
in every test beside the others: a change measured before and after in the same run.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.environ.get("CARGO_TARGET_DIR", "/work/target-agent")
KHAGENT = os.environ.get("KHAGENT", os.path.join(TARGET, "release", "khagent"))
BASELINE = ""  # another khagent binary, run as "khagent-base" (--baseline)

LOOP = "127.0.0.1"
PROXY_PORT = 20000
HTTP_PORT = 18080  # nginx backend (HTTP)
IPERF_PORT = 15201
ECHO_PORT = 18090
CONTENDERS = ["khagent", "haproxy", "nginx"]
# Connection limit every contender is configured with (cluster.py raises it to what 20,000
# descriptors allow).
MAXCONN = 9000
NS = "khlb-bench"


def wait_port(port, up=True, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection((LOOP, port), timeout=0.2).close()
            if up:
                return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} did not come {'up' if up else 'down'}")


def proc_cpu(pid):
    """utime + stime of a process in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """CPU seconds the whole machine spent busy (user, nice, system, irq, softirq; not idle,
    iowait or time stolen by the hypervisor), all cores together."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK")


def proc_sleeps(pid):
    """How many times a process has blocked (voluntary context switches, all threads)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def machine_idle():
    """CPU seconds all cores spent idle (idle + iowait)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Proxy:
    """One contender forwarding 127.0.0.1:20000 to one backend port."""

    def __init__(self, kind, backend_port, work):
        self.kind = kind
        self.dir = tempfile.mkdtemp(dir=work, prefix=kind + "-")
        log = open(os.path.join(self.dir, "log"), "w")
        if kind in ("khagent", "khagent-base"):
            cfg = os.path.join(self.dir, "agent.yaml")
            with open(cfg, "w") as f:
                f.write(
                    f"listen: {LOOP}:{PROXY_PORT}\n"
                    f"backends:\n  - {{name: b, address: {LOOP}:{backend_port}}}\n"
                    f"max_connections: {MAXCONN}\n"
                    # One check at start, then none: a probe landing in iperf3's control
                    # port mid-test can disturb it, and haproxy runs without `check` too.
                    "health: {interval: 1h, timeout: 1s}\n"
                )
            argv = [KHAGENT if kind == "khagent" else BASELINE, "--config", cfg]
        elif kind == "haproxy":
            cfg = os.path.join(self.dir, "haproxy.cfg")
            with open(cfg, "w") as f:
                f.write(
                    f"global\n  nbthread 1\n  maxconn {MAXCONN}\n"
                    "defaults\n  mode tcp\n  timeout connect 5s\n"
                    "  timeout client 1h\n  timeout server 1h\n"
                    f"frontend fe\n  bind {LOOP}:{PROXY_PORT}\n  default_backend be\n"
                    f"backend be\n  server s1 {LOOP}:{backend_port}\n"
                )
            argv = ["haproxy", "-db", "-f", cfg]
        elif kind == "floor":
            argv = [FLOOR, str(PROXY_PORT), str(backend_port)]
        elif kind == "floor-spin":
            argv = [FLOOR, str(PROXY_PORT), str(backend_port), str(FLOOR_SPIN_US)]
        elif kind == "nginx":
            cfg = os.path.join(self.dir, "nginx.conf")
            with open(cfg, "w") as f:
                f.write(
                    "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
                    "daemon off;\nmaster_process off;\nworker_processes 1;\n"
                    f"pid {self.dir}/nginx.pid;\nerror_log {self.dir}/error.log;\n"
                    "worker_rlimit_nofile 20000;\n"
                    "events { worker_connections 20000; }\n"
                    f"stream {{ server {{ listen {LOOP}:{PROXY_PORT} backlog=4096;"
                    f" proxy_pass {LOOP}:{backend_port}; proxy_timeout 1h; }} }}\n"
                )
            argv = ["nginx", "-c", cfg, "-p", self.dir]
        else:
            raise ValueError(kind)
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        wait_port(PROXY_PORT)
        self.pid = self.proc.pid

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        wait_port(PROXY_PORT, up=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Backends:
    """nginx (HTTP) and the echo server, on loopback, for the whole run."""

    def __init__(self, work):
        self.dir = tempfile.mkdtemp(dir=work, prefix="backends-")
        www = os.path.join(self.dir, "www")
        os.makedirs(www)
        with open(os.path.join(www, "t"), "w") as f:
            f.write("hello, world\n")
        # nginx workers run as www-data: mkdtemp's 0700 would make every answer a 403.
        for d in (work, self.dir, www):
            os.chmod(d, 0o755)
        os.chmod(os.path.join(www, "t"), 0o644)
        cfg = os.path.join(self.dir, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(
                "daemon off;\nworker_processes 1;\nworker_rlimit_nofile 20000;\n"
                f"pid {self.dir}/nginx.pid;\nerror_log {self.dir}/error.log;\n"
                "events { worker_connections 10000; }\n"
                f"http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300s;"
                f" client_header_timeout 300s;"
                f" server {{ listen {LOOP}:{HTTP_PORT} backlog=4096; root {www}; }} }}\n"
            )
        self.procs = [
            subprocess.Popen(["nginx", "-c", cfg, "-p", self.dir]),
            subprocess.Popen([PINGPONG, "server", f"{LOOP}:{ECHO_PORT}"]),
        ]
        for port in (HTTP_PORT, ECHO_PORT):
            wait_port(port)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()


def listening(port):
    """Whether something listens on 127.0.0.1:port, read from /proc/net/tcp (no probe)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == want and line.split()[3] == "0A"
                   for line in list(f)[1:])


class IperfServer:
    """An iperf3 server that lives only for one throughput test. It must never see a probe
    connection: iperf3 3.12 takes any connection for a test's control channel, and one that
    closes at once ("unable to receive parameters from client") can leave it spinning on a
    core for the rest of the run, stealing CPU from every later test."""

    def __enter__(self):
        self.proc = subprocess.Popen(["iperf3", "-s", "-B", LOOP, "-p", str(IPERF_PORT)],
                                     stdout=subprocess.DEVNULL)
        end = time.time() + 10
        while not listening(IPERF_PORT):
            if time.time() > end:
                raise RuntimeError("iperf3 -s did not start listening")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


def iperf(streams, seconds):
    # iperf3's server serves one test at a time and may still be finishing the previous one
    # ("the server is busy"): retry a few times.
    for _ in range(5):
        run = subprocess.run(
            ["iperf3", "-c", LOOP, "-p", str(PROXY_PORT), "-t", str(seconds), "-P",
             str(streams), "-J"],
            capture_output=True, text=True)
        try:
            return json.loads(run.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        except (KeyError, ValueError):
            time.sleep(1)
    raise RuntimeError(f"iperf3 failed: {run.stdout[-500:]}")


def wrk(seconds, close):
    argv = ["wrk", "-t1", "-c64", f"-d{seconds}s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(argv + [f"http://{LOOP}:{PROXY_PORT}/t"], capture_output=True,
                         text=True, check=True).stdout
    rps = total = errors = 0
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        elif " requests in " in line:
            total = int(line.split()[0])
        elif line.startswith("Non-2xx"):
            errors += int(line.split()[-1])
        elif line.startswith("Socket errors"):
            errors += sum(int(w.strip(",")) for w in line.split() if w.strip(",").isdigit())
    if errors:
        print(f"wrk reported {errors} errors:\n{out}", file=sys.stderr)
    return rps, total, errors


class DmaLatency:
    """Holds /dev/cpu_dma_latency at 0 (idle cores stay out of deep C-states)."""

    def __enter__(self):
        try:
            self.f = open("/dev/cpu_dma_latency", "wb", buffering=0)
            self.f.write(struct.pack("i", 0))
        except OSError:
            self.f = None
        return self

    def __exit__(self, *exc):
        if self.f:
            self.f.close()


def pingpong(port, n=20000):
    out = subprocess.run([PINGPONG, "client", f"{LOOP}:{port}", str(n), "64"],
                         capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def idle_conns(pid, count=4000):
    base = proc_rss_kib(pid)
    hold = subprocess.Popen([PINGPONG, "hold", f"{LOOP}:{PROXY_PORT}", str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert hold.stdout.readline().strip() == "ready"
    # Wait until the proxy has accepted and connected them all: RSS stops growing.
    end, last = time.time() + 20, -1
    while time.time() < end:
        rss = proc_rss_kib(pid)
        if rss == last:
            break
        last = rss
        time.sleep(0.5)
    per_conn = (last - base) * 1024 / count
    hold.stdin.close()
    hold.wait()
    return last, per_conn


def full_agent_idle_rss(work):
    """RSS of khagent with LB + health + VRRP, inside our own namespace."""
    ns = ["ip", "netns", "exec", NS]
    subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for cmd in (["link", "set", "lo", "up"],
                    ["link", "add", "kha", "type", "veth", "peer", "name", "khb"],
                    ["addr", "add", "10.97.0.1/24", "dev", "kha"],
                    ["addr", "add", "10.97.0.2/24", "dev", "khb"],
                    ["link", "set", "kha", "up"], ["link", "set", "khb", "up"]):
            subprocess.run(ns + ["ip"] + cmd, check=True)
        cfg = os.path.join(work, "full.yaml")
        with open(cfg, "w") as f:
            f.write(
                f"listen: {LOOP}:{PROXY_PORT}\n"
                f"backends:\n  - {{name: b, address: {LOOP}:{ECHO_PORT}}}\n"
                f"track:\n  - {{name: lb, listener: true, fault: true}}\n"
                "vrrp:\n  interface: kha\n  router_id: 51\n  priority: 100\n"
                "  vip: 10.97.0.100\n  source_address: 10.97.0.1\n  peers: [10.97.0.2]\n"
            )
        echo = subprocess.Popen(ns + [PINGPONG, "server", f"{LOOP}:{ECHO_PORT}"])
        agent = subprocess.Popen(ns + [KHAGENT, "--config", cfg], stderr=subprocess.DEVNULL)
        # `ip netns exec` execs the command, so the pid is the agent's.
        time.sleep(3)  # let it become master and settle; we sample RSS, nothing else
        rss = proc_rss_kib(agent.pid)
        threads = len(os.listdir(f"/proc/{agent.pid}/task"))
        agent.terminate()
        agent.wait()
        echo.terminate()
        echo.wait()
        return rss, threads
    finally:
        subprocess.run(["ip", "netns", "del", NS])


def connection_test(who, proxy, seconds, record):
    """New connections/s through `proxy` and what each costs, in the proxy and machine-wide."""
    c0, m0, s0, i0 = proc_cpu(proxy.pid), machine_busy(), proc_sleeps(proxy.pid), machine_idle()
    t0 = time.monotonic()
    rps, total, errors = wrk(seconds, close=True)
    wall = time.monotonic() - t0
    record(who, "conn_per_s", rps)
    record(who, "cpu_us_per_conn", (proc_cpu(proxy.pid) - c0) / total * 1e6)
    # How often the proxy ran out of work and blocked: each time, a client or backend packet
    # has to wake it again.
    record(who, "proxy_sleeps_per_conn", (proc_sleeps(proxy.pid) - s0) / total)
    # Share of both cores left idle while wrk ran: capacity no contender turned into work.
    record(who, "idle_share", (machine_idle() - i0) / (wall * os.cpu_count()))
    # Client, proxy, backend and kernel together: on a saturated machine this, not the
    # proxy's share alone, sets the rate.
    record(who, "machine_us_per_conn", (machine_busy() - m0) / total * 1e6)
    record(who, "conn_errors", errors)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    global PINGPONG, FLOOR, FLOOR_SPIN_US, BASELINE
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--only", default="tp1,tp8,conn,req,lat,rss,full")
    ap.add_argument("--out", default="")
    ap.add_argument("--floor", action="store_true",
                    help="also run floor.rs (a bare epoll proxy) in the connection test")
    ap.add_argument("--floor-spin", type=int, default=0, metavar="US",
                    help="also run floor.rs busy-polling up to US µs before each blocking wait")
    ap.add_argument("--baseline", default="", metavar="PATH",
                    help="also run this khagent binary (khagent-base) in every test but 'full'")
    args = ap.parse_args()
    BASELINE = args.baseline
    base = ["khagent-base"] if BASELINE else []
    only = set(args.only.split(","))
    work = tempfile.mkdtemp(prefix="khlb-bench-")
    PINGPONG = os.path.join(work, "pingpong")
    subprocess.run(["rustc", "-O", "-o", PINGPONG, os.path.join(HERE, "pingpong.rs")],
                   check=True)
    FLOOR = os.path.join(work, "floor")
    FLOOR_SPIN_US = args.floor_spin
    floors = (["floor"] if args.floor else []) + (["floor-spin"] if args.floor_spin else [])
    if floors:
        subprocess.run(["rustc", "-O", "--edition", "2021", "-o", FLOOR,
                        os.path.join(HERE, "floor.rs")], check=True)
    backends = Backends(work)
    res = {c: {} for c in CONTENDERS + ["direct", "floor", "floor-spin", "khagent-base"]}

    def record(who, key, value):
        res[who].setdefault(key, []).append(value)

    try:
        for rnd in range(args.rounds):
            for who in CONTENDERS + base + floors:
                if who in floors:
                    # Short connections only: floor.rs is a measuring stick, not a proxy.
                    if "conn" in only:
                        with Proxy(who, HTTP_PORT, work) as p:
                            connection_test(who, p, args.seconds, record)
                        print(f"round {rnd + 1} {who}: " + ", ".join(
                            f"{k}={v[-1]:.4g}" for k, v in res[who].items()), file=sys.stderr)
                    continue
                if "tp1" in only or "tp8" in only:
                    # The proxy starts first: its start-up probes (khagent's health check)
                    # find no iperf3 to disturb.
                    with Proxy(who, IPERF_PORT, work) as p, IperfServer():
                        for streams in (1, 8):
                            if f"tp{streams}" not in only:
                                continue
                            c0 = proc_cpu(p.pid)
                            gbps = iperf(streams, args.seconds)
                            record(who, f"gbps_{streams}", gbps)
                            record(who, f"cpu_s_per_gbit_{streams}",
                                   (proc_cpu(p.pid) - c0) / (gbps * args.seconds))
                if "conn" in only or "req" in only:
                    with Proxy(who, HTTP_PORT, work) as p:
                        if "conn" in only:
                            connection_test(who, p, args.seconds, record)
                        if "req" in only:
                            rps, _, errors = wrk(args.seconds, close=False)
                            record(who, "req_per_s", rps)
                if "lat" in only:
                    with Proxy(who, ECHO_PORT, work) as p:
                        with DmaLatency():
                            record(who, "p50_us", pingpong(PROXY_PORT))
                            if who == CONTENDERS[0]:
                                record("direct", "p50_us", pingpong(ECHO_PORT))
                if "rss" in only:
                    with Proxy(who, HTTP_PORT, work) as p:
                        time.sleep(1)  # idle sample after start-up settles
                        record(who, "idle_rss_kib", proc_rss_kib(p.pid))
                        rss, per_conn = idle_conns(p.pid)
                        record(who, "rss_4000_kib", rss)
                        record(who, "bytes_per_idle_conn", per_conn)
                print(f"round {rnd + 1} {who}: " + ", ".join(
                    f"{k}={v[-1]:.4g}" for k, v in res[who].items()), file=sys.stderr)
        if "full" in only:
            rss, threads = full_agent_idle_rss(work)
            res["khagent"]["full_agent_idle_rss_kib"] = [rss]
            res["khagent"]["full_agent_threads"] = [threads]
    finally:
        backends.stop()
        shutil.rmtree(work, ignore_errors=True)

    medians = {who: {k: median(v) for k, v in d.items()} for who, d in res.items()}
    summary = {"rounds": args.rounds, "seconds": args.seconds, "raw": res, "median": medians}
    if "lat" in only:
        for who in CONTENDERS + base:
            medians[who]["added_p50_us"] = medians[who]["p50_us"] - medians["direct"]["p50_us"]
    text = json.dumps(summary, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    keys = sorted({k for who in CONTENDERS for k in medians[who]})
    print(f"{'median':<26}" + "".join(f"{c:>12}" for c in CONTENDERS)
          + f"{'kh/haproxy':>12}{'kh/nginx':>12}")
    for k in keys:
        row = [medians[c].get(k, float("nan")) for c in CONTENDERS]
        ratio = [row[0] / row[1] if row[1] else float("nan"),
                 row[0] / row[2] if row[2] else float("nan")]
        print(f"{k:<26}" + "".join(f"{v:>12.4g}" for v in row + ratio))
    if "lat" in only:
        print(f"{'direct p50_us':<26}{medians['direct']['p50_us']:>12.4g}")
    # Rounds are interleaved, so each round's khagent/haproxy ratio pairs runs made a few
    # seconds apart; its median cancels the drift of a shared machine between rounds.
    for who in ("floor", "floor-spin"):
        if res[who]:
            print(f"{who} (floor.rs, a bare epoll proxy), medians; khagent/{who}:")
            for k in ("conn_per_s", "cpu_us_per_conn", "machine_us_per_conn",
                      "proxy_sleeps_per_conn", "idle_share"):
                fl = medians[who][k]
                print(f"  {k:<24}{fl:>12.4g}"
                      f"{medians['khagent'][k] / fl if fl else float('nan'):>10.3f}")
    for other in ["haproxy"] + base:
        if other == "khagent-base":
            print("khagent-base (--baseline), medians; khagent/khagent-base:")
            for k in keys:
                b = medians[other].get(k)
                if b:
                    print(f"  {k:<24}{b:>12.4g}{medians['khagent'][k] / b:>10.3f}")
        print(f"median of per-round ratios khagent/{other}:")
        for k in keys:
            kh, them = res["khagent"].get(k, []), res[other].get(k, [])
            pairs = [a / b for a, b in zip(kh, them) if b]
            if pairs:
                print(f"  {k:<24}{median(pairs):>8.3f}  ({', '.join(f'{r:.2f}' for r in pairs)})")


if __name__ == "__main__":
    main()
