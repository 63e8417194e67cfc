#!/usr/bin/env python3
"""VIP takeover after SIGKILL of the holder: khagent vs keepalived, same lab, same interval.

Three nodes (priorities 150 / 100 / 50) on a private bridge (lab.sh, subnet 10.98.80.0/24,
nothing leaves the machine). Per run: start the implementation on all nodes, wait until node 1
holds the VIP alone and has for 1 s, SIGKILL every process of node 1's namespace (a crash of
the whole daemon), and time the first RTM_NEWADDR of the VIP seen by `ip -ts monitor address`
in nodes 2 and 3, and the removal of the dead holder's VIP in node 1 (khagent's expires with
its kernel lifetime; keepalived's stays). A run "moves once" when only node 2 (the next
priority) gets the VIP during the 7 s watched after the kill. Runs alternate A B A B so drift
in machine load hits both alike; we compare medians.

    python3 bench/vrrp/takeover.py --runs 20 --interval 0.1
    python3 bench/vrrp/takeover.py --runs 20 --interval 0.01
    python3 bench/vrrp/takeover.py --runs 20 --interval 0.01 --load 8   # both cores saturated

Needs root, keepalived, and a khagent build (default: $CARGO_TARGET_DIR/release/khagent).
"""

import argparse
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.environ.get("CARGO_TARGET_DIR", "/work/target-agent")
KHAGENT = os.environ.get("KHAGENT", os.path.join(TARGET, "release", "khagent"))
K = 80
NODES = 3
PRIORITIES = [150, 100, 50]
VIP = f"10.98.{K}.100"
WORK = f"/tmp/khagent-vrrp-bench-{K}"
# Seconds watched after each kill: long enough to see the dead holder's VIP expire and any
# later, spurious takeover by the lowest-priority node.
OBSERVE = 7.0


def ns(i):
    return f"khv{K}-{i}"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def lab_up():
    subprocess.run([os.path.join(HERE, "lab.sh"), "down", str(K), str(NODES)], check=False)
    subprocess.run([os.path.join(HERE, "lab.sh"), "up", str(K), str(NODES)], check=True)
    flags = int(open(f"/sys/class/net/khvbr{K}/flags").read().strip(), 16)
    assert flags & 1, "lab bridge is not up"


def lab_down():
    for i in range(1, NODES + 1):
        kill_all(i)
    subprocess.run([os.path.join(HERE, "lab.sh"), "down", str(K), str(NODES)], check=False)


def pids(i):
    return sh("ip", "netns", "pids", ns(i), check=False).split()


def kill_all(i, known=None):
    """A crash of the whole daemon: stop every process of the namespace first, so none can
    react to another's death (keepalived's VRRP child gets SIGTERM when its parent dies and
    would send a priority-0 advert), then SIGKILL them."""
    p = known if known is not None else [int(x) for x in pids(i)]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in p:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    if known is not None:
        return  # the timed kill: the caller observes what follows
    deadline = time.time() + 5
    while pids(i) and time.time() < deadline:
        time.sleep(0.01)


def holders():
    return [i for i in range(1, NODES + 1)
            if f"inet {VIP}/" in sh("ip", "-n", ns(i), "-4", "-o", "addr", "show", "dev", "eth0")]


def clear_vips():
    for i in range(1, NODES + 1):
        subprocess.run(["ip", "-n", ns(i), "addr", "del", f"{VIP}/32", "dev", "eth0"],
                       capture_output=True, check=False)


def spawn(i, argv, log):
    out = open(os.path.join(WORK, log), "w")
    return subprocess.Popen(["ip", "netns", "exec", ns(i), *argv], stdout=out, stderr=out,
                            stdin=subprocess.DEVNULL, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def start_khagent(interval):
    procs = []
    for i in range(1, NODES + 1):
        path = os.path.join(WORK, f"khagent-{i}.yaml")
        with open(path, "w") as f:
            f.write("listen: 127.0.0.1:16443\nbackends:\n  - name: local\n    address: 127.0.0.1:6443\n"
                    f"vrrp:\n  interface: eth0\n  router_id: 51\n  priority: {PRIORITIES[i - 1]}\n"
                    f"  vip: {VIP}\n  advert_interval_ms: {round(interval * 1000)}\n"
                    f"  state_dir: {WORK}/state-{i}\n")
        procs.append(spawn(i, [KHAGENT, "--config", path], f"khagent-{i}.log"))
    return procs


def start_keepalived(interval):
    procs = []
    for i in range(1, NODES + 1):
        d = os.path.join(WORK, f"keepalived-{i}")
        os.makedirs(d, exist_ok=True)
        for pidfile in ("k.pid", "v.pid"):
            if os.path.exists(os.path.join(d, pidfile)):
                os.remove(os.path.join(d, pidfile))
        conf = os.path.join(d, "keepalived.conf")
        with open(conf, "w") as f:
            f.write(f"global_defs {{\n  router_id node{i}\n  vrrp_version 3\n}}\n"
                    f"vrrp_instance VI {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n"
                    f"  priority {PRIORITIES[i - 1]}\n  advert_int {interval}\n"
                    f"  virtual_ipaddress {{\n    {VIP}/32\n  }}\n}}\n")
        procs.append(spawn(i, ["keepalived", "-n", "-l", "-D", "-f", conf, "-p", f"{d}/k.pid",
                               "-r", f"{d}/v.pid"], f"keepalived-{i}.log"))
    return procs


TS = re.compile(r"^\[(\S+)\]")


def first_delete(lines):
    """Wall-clock time of the first VIP address removal in the monitor output."""
    for line in lines:
        if f"inet {VIP}/" in line and line.lstrip("[0123456789-T:.] ").startswith("Deleted"):
            m = TS.match(line)
            if m:
                return datetime.datetime.fromisoformat(m.group(1)).timestamp()
    return None


def first_add(lines):
    """Wall-clock time of the first VIP address add in `ip -ts -o monitor address` output."""
    for line in lines:
        if f"inet {VIP}/" in line and not line.lstrip("[0123456789-T:.] ").startswith("Deleted"):
            m = TS.match(line)
            if m:
                return datetime.datetime.fromisoformat(m.group(1)).timestamp()
    return None


def one_run(impl, interval):
    clear_vips()
    procs = (start_khagent if impl == "khagent" else start_keepalived)(interval)
    # Wait for node 1 to hold the VIP alone, continuously for 1 s.
    deadline, stable_since = time.time() + 15, None
    while True:
        if holders() == [1]:
            stable_since = stable_since or time.time()
            if time.time() - stable_since >= 1.0:
                break
        else:
            stable_since = None
        if time.time() > deadline:
            # Under heavy load a 10 ms group may never settle: a failed run, not a crash.
            for i in range(1, NODES + 1):
                kill_all(i)
            for p in procs:
                p.wait()
            return None, False, {"never stable": None}
        time.sleep(0.02)
    # Node 1's processes, looked up before the monitors start (`ip -n` joins the namespace,
    # so a monitor of node 1 would count as one of them) and before the timed kill (`ip netns
    # pids` is slow under load).
    victims = [int(x) for x in pids(1)]
    # `ip -ts` stamps an event when it prints it: run the monitors realtime so CPU load does
    # not delay the stamps.
    monitors = {i: subprocess.Popen(["chrt", "-r", "50", "ip", "-n", ns(i), "-ts", "-o", "monitor", "address",
                                     "dev", "eth0"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for i in (1, 2, 3)}
    time.sleep(0.3)  # let the monitors subscribe before the kill (not a synchronisation of results)
    t0 = time.time()  # kill_all stops node 1's processes within microseconds of this
    kill_all(1, victims)
    time.sleep(OBSERVE)
    adds, gone = {}, None
    for i, m in monitors.items():
        m.terminate()
        out, _ = m.communicate()
        if i == 1:
            gone = first_delete(out.splitlines())
        else:
            adds[i] = first_add(out.splitlines())
    for i in range(1, NODES + 1):
        kill_all(i)
    for p in procs:
        p.wait()
    firsts = {i: t - t0 for i, t in adds.items() if t is not None}
    takeover = min(firsts.values()) if firsts else None
    once = 2 in firsts and 3 not in firsts
    if gone is not None:
        firsts["old holder's VIP gone"] = gone - t0
    return takeover, once, firsts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.1, help="advert interval in seconds")
    ap.add_argument("--load", type=int, default=0, help="busy-looping processes to run meanwhile")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    os.makedirs(WORK, exist_ok=True)
    lab_up()
    results = {"khagent": [], "keepalived": []}
    gone_at = {"khagent": [], "keepalived": []}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    # The harness itself runs realtime so the kill and its timestamp are not delayed by load;
    # what it starts (agents, keepalived) gets normal scheduling back (RESET_ON_FORK).
    os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(50))
    try:
        for r in range(args.runs):
            for impl in ("khagent", "keepalived") if r % 2 == 0 else ("keepalived", "khagent"):
                takeover, once, firsts = one_run(impl, args.interval)
                results[impl].append((takeover, once))
                detail = " ".join(f"node{i}={t:.3f}" if isinstance(i, int) else i if t is None else f"{i} {t:.3f}"
                                  for i, t in sorted(firsts.items(), key=str))
                gone_at[impl].append(firsts.get("old holder's VIP gone"))
                print(f"run {r + 1:2} {impl:10} takeover {takeover if takeover is None else f'{takeover:.3f}'} s"
                      f"  {'once' if once else 'MOVED TWICE/NEVER'}  ({detail})", flush=True)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
        lab_down()
    print(f"\nadvert interval {args.interval} s, {args.runs} runs each, interleaved, "
          f"{args.load} busy loops meanwhile")
    print("| implementation | median s | min s | max s | VIP moved exactly once | dead holder's VIP gone (median s) |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for impl, rs in results.items():
        times = [t for t, _ in rs if t is not None] or [float("nan")]
        medians[impl] = statistics.median(times) if times else float("nan")
        once = sum(1 for _, o in rs if o)
        gone = [g for g in gone_at[impl] if g is not None]
        gone_text = f"{statistics.median(gone):.2f} ({len(gone)} of {len(rs)} runs)" if gone else f"never (0 of {len(rs)})"
        print(f"| {impl} | {medians[impl]:.3f} | {min(times):.3f} | {max(times):.3f} | {once} of {len(rs)} | {gone_text} |")
    print(f"\nkhagent / keepalived median ratio: {medians['khagent'] / medians['keepalived']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
