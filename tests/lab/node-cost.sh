#!/usr/bin/env bash
# What one booted lab node costs: systemd's own boot time, the memory of its processes and of
# its tmpfs mounts, and the machine's MemAvailable drop per node. The figures in docs/lab.md
# ("Boot time and memory") come from this script. Root; uses lab "cost" at index 198, torn
# down on exit. Run it under the host-wide lab lock when the machine is shared.
# Usage: tests/lab/node-cost.sh [NODES]   (default 10: 3 control planes + 7 workers)
set -euo pipefail

lab=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lab.sh
nodes=${1:-10}
((nodes >= 3)) || {
	echo "node-cost.sh: at least 3 nodes" >&2
	exit 2
}
trap '"$lab" down cost' EXIT
"$lab" down cost

mem_available_kib() { awk '/^MemAvailable:/ { print $2 }' /proc/meminfo; }

# Let page cache and slab settle a moment so the drop is the nodes', not a build's.
sync
before=$(mem_available_kib)
"$lab" up cost --index 198 --control-planes 3 --workers $((nodes - 3))
sleep 2 # a booted node's daemons finish their start-up allocations
after=$(mem_available_kib)

echo
echo "== $nodes nodes; per node:"
printf '%-5s %10s %9s %9s %9s\n' node "boot(ms)" "PSS(KiB)" "RSS(KiB)" "tmpfs(KiB)"
for node in $("$lab" status cost | awk '$3 == "up" { print $1 }'); do
	# systemd's own measure: from PID 1's start to the default target, in userspace.
	boot=$("$lab" exec cost "$node" -- systemd-analyze time |
		sed -n 's/.*in \([0-9.]*\)\(m\?s\) (userspace).*/\1 \2/p' |
		awk '{ print ($2 == "s") ? $1 * 1000 : $1 }')
	# Every process of the node, as the node's own /proc sees it (this exec excepted).
	read -r pss rss < <("$lab" exec cost "$node" -- sh -c '
		for p in /proc/[0-9]*; do
			[ "${p#/proc/}" = "$$" ] && continue
			awk "/^Pss:/ { pss += \$2 } /^Rss:/ { rss += \$2 } END { print pss + 0, rss + 0 }" \
				"$p/smaps_rollup" 2>/dev/null
		done | awk "{ pss += \$1; rss += \$2 } END { print pss, rss }"')
	# tmpfs is RAM: the node's own /run (the journal), /dev, /dev/shm, /tmp, /var/tmp,
	# /var/log/journal; not the lab's tmpfs bound in (sysctl snapshots), counted below.
	tmpfs=$("$lab" exec cost "$node" -- df -k -t tmpfs --output=source,used |
		awk 'NR > 1 && $1 != "khalab-cost" { s += $2 } END { print s }')
	printf '%-5s %10s %9s %9s %9s\n' "$node" "$boot" "$pss" "$rss" "$tmpfs"
done
echo
echo "machine MemAvailable: $((before / 1024)) MiB before up, $((after / 1024)) MiB after:" \
	"$(((before - after) / nodes)) KiB per node (kernel memory, page cache and other users included)"
echo "the lab's own tmpfs (base layers, sysctl snapshots): $(($(df -k --output=used /var/lib/khalab/cost/run | tail -1) / nodes)) KiB per node"
du -sk /var/lib/khalab/cost/*/upper | awk '{ s += $1 } END { print "upper dirs after boot: " s " KiB in all" }'
