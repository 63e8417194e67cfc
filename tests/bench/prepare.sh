#!/usr/bin/env bash
# Benchmark (not a test) of `khactl up` — connect, gather facts, preflight, prepare hosts,
# distribute certificates — against fresh labs of 3, 10 and 20 nodes, to see how its cost
# grows with the node count. The figures in docs/bench-prepare.md come from this script.
#
# Each repetition builds, for every configuration (nodes:parallelism), a fresh lab, runs
# `khactl up -v` with a fresh state dir (first run: real changes, RSA keys generated), runs
# it again on the same state dir (second run: nothing to change), and tears the lab down.
# Configurations are interleaved within a repetition so that background load (the machine
# is shared) hits every configuration alike. Phase times come from timestamps on khactl's
# own "==> <phase>" / "<phase> done in" lines (millisecond resolution; khactl prints 0.1 s).
#
# Usage (root; build first, the benchmark measures what users run):
#   cargo build --release -p khactl && tests/bench/prepare.sh [OPTIONS]
# (from commit c1472ef on, `up` also installs khagent from next to khactl: add -p khagent)
# Options:
#   --reps R        repetitions (default 5)
#   --budget SECS   no repetition starts when it would end after SECS (default 480); at
#                   least one repetition always runs
#   --configs LIST  CP+W:parallelism (or nodes:parallelism, 3 control planes) pairs
#                   (default "3+2:10 5+5:10 5+15:10")
#   --khactl BIN    binary to measure (default target/release/khactl)
#   --commit REV    measure commit REV instead: exported with `git archive` (so edits in the
#                   working tree are left out) and built with `cargo build --release -p
#                   khactl` in $KHACTL_BENCH_TARGET (default /var/tmp/khactl-bench-target)
#   --out DIR       where raw logs, CSV and the markdown summary go (default: new /tmp dir)
#   --summarize DIR print the summary of an earlier run's DIR again, run nothing
# Labs: bprep-N at index 150 + k (tests/lab/lab.sh); every lab is torn down on exit.
set -euo pipefail

repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
lab=$repo/tests/lab/lab.sh
py=/usr/bin/python3 # not a pyenv shim: ~250 ms per call (docs/lab.md)

reps=5
budget=480
configs="3+2:10 5+5:10 5+15:10"
khactl=$repo/target/release/khactl
out=
commit=
summarize=
cmdline="tests/bench/prepare.sh $*"
while (($#)); do
	case $1 in
	--reps) reps=${2:?--reps needs a value}; shift 2 ;;
	--budget) budget=${2:?--budget needs a value}; shift 2 ;;
	--configs) configs=${2:?--configs needs a value}; shift 2 ;;
	--khactl) khactl=${2:?--khactl needs a value}; shift 2 ;;
	--out) out=${2:?--out needs a value}; shift 2 ;;
	--commit) commit=${2:?--commit needs a value}; shift 2 ;;
	--summarize) summarize=${2:?--summarize needs a value}; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "prepare.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
done

die() { echo "prepare.sh: $*" >&2; exit 1; }

# A reused directory would mix runs, and its baseline known_hosts files would hold the host
# keys of an earlier lab: plain ssh then refuses the new ones.
if [[ -n $out && -e $out && -n $(ls -A "$out") ]]; then
	die "--out $out already holds a run; give a new or empty directory"
fi

# summary DIR: the markdown summary of a run — medians per configuration and run, then the
# scaling with node count.
summary() {
	cat "$1/header.md"
	echo
	"$py" - "$1/runs.csv" <<'EOF'
import csv, re, statistics, sys

PHASES = [("Generate certificates", "PKI gen"), ("Connect to nodes", "Connect"),
          ("Gather facts", "Gather facts"), ("Preflight checks", "Preflight"),
          ("Prepare hosts", "Prepare hosts"), ("Distribute certificates", "Distribute")]
# Phases later commits added (the agent, kubeadm): a column each when a run has them.
LATER = [("Check the kubeadm configuration", "kubeadm check"), ("Install the agent", "Agent"),
         ("Wait for the virtual IP", "VIP"), ("Initialize the control plane", "kubeadm init"),
         ("Join control planes", "Join CPs"), ("Join workers", "Join workers"),
         ("Verify the cluster", "Verify")]
SSH = ["Connect to nodes", "Gather facts", "Preflight checks", "Prepare hosts",
       "Distribute certificates"]

def phases(path):
    """Seconds per phase, from the stamped `-v` log; phases past these six are summed
    into "other" (later commits add phases after the certificates)."""
    start, took = {}, {}
    for line in open(path):
        ts, _, text = line.rstrip("\n").partition(" ")
        m = re.match(r"==> (.+)$", text)
        if m:
            start[m.group(1)] = float(ts)
        m = re.match(r"    (.+) done in [0-9.]+s$", text)
        if m and m.group(1) in start:
            took[m.group(1)] = float(ts) - start[m.group(1)]
    missing = [p for p, _ in PHASES if p not in took]
    if missing:
        sys.exit(f"{path}: no timing for {missing}")
    known = dict(PHASES) | dict(LATER)
    took["other"] = sum(t for p, t in took.items() if p not in known)
    return took

groups = {}
for row in csv.DictReader(open(sys.argv[1])):
    wall, user, sys_ = map(float, open(row["time"]).read().split())
    r = phases(row["log"])
    r["total"], r["cpu"], r["load"] = wall, user + sys_, float(row["load1"])
    r["ssh"] = sum(r[p] for p in SSH)
    r["changes"] = int(row["changes"])
    r["baseline"] = float(row["baseline"])
    groups.setdefault((row["run"], int(row["nodes"]), int(row["parallel"])), []).append(r)

def med(rows, key):
    return statistics.median(r[key] for r in rows)

# The "other phases" column only when there are any.
OTHER = any(r["other"] > 0 for rows in groups.values() for r in rows)
PHASES = PHASES + [(k, s) for k, s in LATER
                   if any(k in r for rows in groups.values() for r in rows)]

def table(run, title):
    print(f"**{title}** (medians, seconds)\n")
    print("| nodes | --parallel | runs | " + " | ".join(s for _, s in PHASES)
          + (" | other phases" if OTHER else "")
          + " | SSH phases | total wall | khactl CPU | changes | plain ssh | load1 |")
    print("|---:|---:|---:|" + "---:|" * (len(PHASES) + 6 + OTHER))
    for (rn, n, p), rows in sorted(groups.items()):
        if rn != run:
            continue
        cells = [f"{med(rows, k):.3f}" if all(k in r for r in rows) else "–"
                 for k, _ in PHASES]
        lo, hi = min(r["total"] for r in rows), max(r["total"] for r in rows)
        print(f"| {n} | {p} | {len(rows)} | " + " | ".join(cells)
              + (f" | {med(rows, 'other'):.3f}" if OTHER else "")
              + f" | {med(rows, 'ssh'):.3f} | {med(rows, 'total'):.2f} ({lo:.2f}–{hi:.2f})"
              + f" | {med(rows, 'cpu'):.2f} | {med(rows, 'changes'):.0f}"
              + f" | {med(rows, 'baseline'):.3f} | {med(rows, 'load'):.1f} |")
    print()

table("first", "First run: fresh lab, fresh state dir (real changes, PKI generated)")
table("second", "Second run: same lab and state dir (nothing to change)")

# Scaling at the default parallelism: cost relative to the smallest lab vs the node ratio,
# and a least-squares line through the medians (fixed cost + marginal cost per node).
def growth(rows, base, key):
    b = med(base, key)
    return f"{med(rows, key) / b:.2f}×" if b >= 0.01 else "—"

print("**Scaling with node count** (`--parallel 10`, medians; growth = cost ÷ cost of the "
      "smallest lab, to compare with the node ratio)\n")
print("| run | nodes | node ratio | total wall | growth | per node | SSH phases | growth"
      " | per node | Connect growth | Prepare hosts growth |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
fits = []
for run in ("first", "second"):
    sizes = sorted(n for (rn, n, p) in groups if rn == run and p == 10)
    if not sizes:
        continue
    base = groups[(run, sizes[0], 10)]
    for n in sizes:
        rows = groups[(run, n, 10)]
        t, s = med(rows, "total"), med(rows, "ssh")
        print(f"| {run} | {n} | {n / sizes[0]:.2f}× | {t:.2f} s | {growth(rows, base, 'total')}"
              f" | {1000 * t / n:.0f} ms | {s:.2f} s | {growth(rows, base, 'ssh')}"
              f" | {1000 * s / n:.0f} ms | {growth(rows, base, 'Connect to nodes')}"
              f" | {growth(rows, base, 'Prepare hosts')} |")
    if len(sizes) >= 2:
        for key, what in (("total", "total wall"), ("ssh", "SSH phases")):
            ys = [med(groups[(run, n, 10)], key) for n in sizes]
            slope, icept = statistics.linear_regression(sizes, ys)
            fits.append(f"- {run} run, {what}: {icept:.2f} s + {1000 * slope:.0f} ms × nodes")
print()
if fits:
    print("Least-squares line through those medians (fixed cost + marginal cost per node):\n")
    print("\n".join(fits))
    print()
EOF
}

if [[ -n $summarize ]]; then
	summary "$summarize"
	exit 0
fi
((EUID == 0)) || die "must run as root (the lab needs namespaces)"
if [[ -n $commit ]]; then
	rev=$(git -C "$repo" rev-parse --verify "$commit^{commit}") || die "no commit '$commit'"
	src=/var/tmp/khactl-bench-src-${rev:0:12}
	if [[ ! -d $src ]]; then
		mkdir -p "$src.tmp"
		git -C "$repo" archive "$rev" | tar -x -C "$src.tmp"
		mv "$src.tmp" "$src"
	fi
	target=${KHACTL_BENCH_TARGET:-/var/tmp/khactl-bench-target}
	echo "prepare.sh: building $rev (release) in $target" >&2
	packages=(-p khactl)
	# From c1472ef on, `up` installs khagent, which it looks for next to its own binary.
	if grep -q agent_binary "$src/src/cli.rs"; then packages+=(-p khagent); fi
	CARGO_TARGET_DIR=$target cargo build --release "${packages[@]}" --manifest-path "$src/Cargo.toml" >&2
	khactl=$target/release/khactl
	built_from="commit ${rev:0:12} (clean export)"
else
	built_from="working tree at commit $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' + uncommitted changes in src')"
fi
[[ -x $khactl ]] || die "no binary at $khactl: run 'cargo build --release -p khactl' first"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps takes a positive number"
[[ $budget =~ ^[1-9][0-9]*$ ]] || die "--budget takes a positive number of seconds"

# Lab name and index per node count; sizes are 3 control planes + workers.
declare -A lab_index=() cps_of=()
sizes=()
for c in $configs; do
	[[ $c =~ ^([0-9]+)(\+([0-9]+))?:([0-9]+)$ ]] || die "bad config '$c' (want NODES:PARALLEL or CP+W:PARALLEL)"
	if [[ -n ${BASH_REMATCH[2]} ]]; then
		cp=${BASH_REMATCH[1]} n=$((BASH_REMATCH[1] + BASH_REMATCH[3]))
	else
		cp=3 n=${BASH_REMATCH[1]}
	fi
	((cp >= 1 && n >= cp && n <= 80)) || die "config '$c': 1.. control planes, at most 80 nodes"
	[[ -z ${cps_of[$n]:-} || ${cps_of[$n]} == "$cp" ]] || die "config '$c': one shape per node count"
	cps_of[$n]=$cp
	if [[ -z ${lab_index[$n]:-} ]]; then
		lab_index[$n]=$((150 + ${#sizes[@]}))
		sizes+=("$n")
	fi
done
((${#sizes[@]} <= 21)) || die "at most 21 node counts (indexes 150-170)"

out=${out:-$(mktemp -d /tmp/khactl-bench-prepare.XXXXXX)}
mkdir -p "$out/logs"
chmod 0700 "$out"
csv=$out/runs.csv

teardown() {
	local n
	for n in "${sizes[@]}"; do
		"$lab" down "bprep-$n" >/dev/null 2>&1 || echo "prepare.sh: warning: 'lab.sh down bprep-$n' failed" >&2
	done
	# The state dirs hold the throwaway clusters' private keys; the logs stay.
	rm -rf "$out/state"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prefixes each line with the wall clock (s, µs resolution) at which it was read.
stamp() {
	"$py" -u -c 'import sys, time
for line in sys.stdin:
    sys.stdout.write(f"{time.time():.6f} {line}")'
}

# run_khactl LABEL NAME NODES PARALLEL STATE: one `khactl up -v`; appends a CSV row.
run_khactl() {
	local label=$1 name=$2 nodes=$3 par=$4 state=$5 rep=$6 baseline=$7 log load rc changes
	log=$out/logs/rep$rep-n$nodes-p$par-$label
	# Network safety: never contact lab addresses unless the lab's bridge and nodes are up.
	"$lab" status "$name" >/dev/null || die "lab $name is not up; refusing to contact its addresses"
	read -r load _ </proc/loadavg
	set +e
	/usr/bin/time -f '%e %U %S' -o "$log.time" \
		timeout 180 "$khactl" up -v -i "/var/lib/khalab/$name/inventory.yaml" \
		--state-dir "$state" --parallel "$par" 2>&1 </dev/null | stamp >"$log.log"
	rc=${PIPESTATUS[0]}
	set -e
	((rc == 0)) || die "khactl ($label run, $nodes nodes, --parallel $par) exited $rc; see $log.log"
	if grep -q 'up: nothing to change' "$log.log"; then
		changes=0
	else
		changes=$(sed -n 's/.*up: made \([0-9]*\) change(s).*/\1/p' "$log.log")
	fi
	[[ -n $changes ]] || die "no change summary in $log.log"
	# The benchmark compares a real run with a no-op run: anything else is not a valid sample.
	if [[ $label == first ]] && ((changes == 0)); then die "first run changed nothing ($log.log)"; fi
	if [[ $label == second ]] && ((changes != 0)); then die "second run made $changes changes: not idempotent ($log.log)"; fi
	echo "$rep,$nodes,$par,$label,$load,$changes,$log.log,$log.time,$baseline" >>"$csv"
	printf '  %-6s %2d nodes --parallel %-2d %3d changes  %ss wall (load %s; plain ssh %ss)\n' \
		"$label" "$nodes" "$par" "$changes" "$(cut -d' ' -f1 "$log.time")" "$load" "$baseline"
}

# ssh_baseline NAME NODES PARALLEL REP: the lab's own cost of what Connect does — one fresh
# `ssh … true` per node (key exchange, authentication, host key accepted into an empty
# known_hosts), PARALLEL at a time, no khactl involved. Prints seconds.
ssh_baseline() {
	local name=$1 nodes=$2 par=$3 rep=$4 kh t0 t1
	kh=$out/logs/rep$rep-n$nodes-p$par-baseline.known_hosts
	"$lab" status "$name" >/dev/null || die "lab $name is not up; refusing to contact its addresses"
	t0=$EPOCHREALTIME
	sed -n 's/^ *- {.*address: \([0-9.]*\),.*role:.*/\1/p' "/var/lib/khalab/$name/inventory.yaml" |
		xargs -P "$par" -I{} ssh -n -i "/var/lib/khalab/$name/ssh/id_ed25519" -o BatchMode=yes -o LogLevel=ERROR \
			-o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="$kh" \
			-o ConnectTimeout=10 -l root {} true ||
		die "plain ssh to a node of $name failed"
	t1=$EPOCHREALTIME
	(($(wc -l <"$kh") == nodes)) || die "baseline reached $(wc -l <"$kh") of $nodes nodes"
	echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }'
}

# The run's facts, written before the runs so that --summarize can show them again.
{
	echo "Run $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), kernel $(uname -r)."
	echo "khactl $("$khactl" --version | cut -d' ' -f2) ($khactl), $built_from."
	echo "Command: \`$cmdline\`."
	echo "Load average (1, 5, 15 min) at start: $(cut -d' ' -f1-3 /proc/loadavg)."
} >"$out/header.md"
echo "rep,nodes,parallel,run,load1,changes,log,time,baseline" >"$csv"
started=$SECONDS
echo "prepare.sh: $reps repetitions of [$configs], budget ${budget}s, results in $out"
done_reps=0
last_rep=0
for ((rep = 1; rep <= reps; rep++)); do
	if ((rep > 1 && SECONDS - started + last_rep > budget)); then
		echo "prepare.sh: stopping after $done_reps repetitions: another would pass the ${budget}s budget" >&2
		break
	fi
	rep_started=$SECONDS
	echo "repetition $rep"
	for c in $configs; do
		n=${c%%:*} par=${c##*:}
		if [[ $n == *+* ]]; then n=$((${n%%+*} + ${n##*+})); fi
		name=bprep-$n
		"$lab" down "$name" >/dev/null 2>&1 || true
		# The nodes carry the lab's stand-in control plane (tests/standin): `up` runs kubeadm.
		"$lab" up "$name" --index "${lab_index[$n]}" --control-planes "${cps_of[$n]}" \
			--workers $((n - ${cps_of[$n]})) --setup "$repo/tests/lab/with-standin.sh" >/dev/null
		state=$out/state/rep$rep-n$n-p$par
		baseline=$(ssh_baseline "$name" "$n" "$par" "$rep")
		run_khactl first "$name" "$n" "$par" "$state" "$rep" "$baseline"
		run_khactl second "$name" "$n" "$par" "$state" "$rep" "$baseline"
		"$lab" down "$name" >/dev/null
	done
	done_reps=$rep
	last_rep=$((SECONDS - rep_started))
done

echo "$done_reps repetitions in $((SECONDS - started))s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)." >>"$out/header.md"
summary "$out" | tee "$out/summary.md"
echo "prepare.sh: raw logs and CSV in $out (summary: $out/summary.md)"
