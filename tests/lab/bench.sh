#!/usr/bin/env bash
# Benchmarks lab bring-up and teardown (5 and 20 nodes) with hyperfine; the figures in
# docs/lab.md come from this script. Root. Uses lab "bench" at index 199.
# Usage: tests/lab/bench.sh [RUNS]   (default 5 runs per measurement)
set -euo pipefail

lab=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lab.sh
runs=${1:-5}
trap '"$lab" down bench' EXIT

for shape in "3 2" "3 17"; do
	read -r cps workers <<<"$shape"
	up="$lab up bench --index 199 --control-planes $cps --workers $workers"
	echo "== $((cps + workers)) nodes"
	hyperfine --runs "$runs" --prepare "$lab down bench" --cleanup "$lab down bench" \
		--command-name "up $((cps + workers)) nodes" "$up"
	hyperfine --runs "$runs" --prepare "$lab down bench && $up" \
		--command-name "down $((cps + workers)) nodes" "$lab down bench"
done
