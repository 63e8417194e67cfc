#!/usr/bin/env bash
# khalab: a multi-node test lab on this machine, built from network namespaces, overlay roots,
# Debian's real systemd as each node's PID 1 (or, for nodes named with `up --openrc`, Debian's
# OpenRC: /sbin/openrc-init) and real OpenSSH sshd as its ssh service. Every node is a network + mount + UTS + IPC + PID + cgroup namespace in a cgroup of its own; nodes
# share one Linux bridge that has no physical port and does not forward
# (net.ipv4.conf.<bridge>.forwarding=0), and nodes have no default route, so no packet from a
# node can leave the machine.
# See docs/lab.md for the layout, the safety rules and the pitfalls behind each choice.
set -euo pipefail

readonly KHALAB_ROOT=/var/lib/khalab
# Lab K lives on $NET.K.0/24: clear of Kubernetes' default service (10.96.0.0/12) and pod
# (10.244.0.0/16) ranges, which must not contain node addresses.
readonly NET=10.200
readonly NODE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Seconds `up`, `start`, `start-sshd` and `regen-hostkey` wait for every sshd to greet.
readonly SSHD_DEADLINE=${KHALAB_SSHD_DEADLINE:-30}
# Seconds a node's init (systemd or OpenRC) may take to finish booting.
readonly BOOT_DEADLINE=${KHALAB_BOOT_DEADLINE:-60}
# Seconds a clean poweroff (`stop`) may take: the node's init stops every service first.
readonly STOP_DEADLINE=${KHALAB_STOP_DEADLINE:-60}
# Where lab.sh mounts the cgroup2 hierarchy if no mount of it has nsdelegate yet.
readonly CGROUP2_MOUNT=$KHALAB_ROOT/.cgroup2
# Capabilities no node gets: loading kernel modules, setting the machine's clock, raw I/O
# ports and memory, and the LSM's own policy are the machine's, not a node's.
readonly NODE_DROPPED_CAPS=-sys_module,-sys_time,-sys_rawio,-mac_admin,-mac_override
# Units masked in every node: udev and module loading (the host's devices and kernel are not
# the node's), systemd-sysctl (most kernel.*, vm.* and fs.* keys are global: see "Global
# sysctls" in docs/lab.md), networking (it would reconfigure eth0, which lab.sh set up), the
# consoles (a node has none) and machine-id-commit (the node's machine id is a read-only bind).
readonly MASKED_UNITS=(
	systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
	systemd-udev-trigger.service systemd-udev-settle.service systemd-modules-load.service
	systemd-sysctl.service networking.service console-getty.service getty-static.service
	systemd-machine-id-commit.service
)
# OpenRC nodes (`up --openrc`): the runlevels of their base layer (opaque: none of the host's
# runlevel links shows through). Only the lab's sshd (default) and its `net` stub (boot) are in.
readonly OPENRC_RUNLEVELS=(sysinit boot default nonetwork shutdown)
SELF=$(readlink -f "${BASH_SOURCE[0]}")
readonly SELF

# kernel/ and fs/ entries that really are per namespace (UTS, IPC, PID): they are bound back
# from the node's own procfs on top of the snapshot so they keep working.
readonly NAMESPACED_SYSCTLS=(
	kernel/hostname kernel/domainname kernel/ns_last_pid
	kernel/shmmax kernel/shmall kernel/shmmni kernel/shm_rmid_forced kernel/shm_next_id
	kernel/msgmax kernel/msgmnb kernel/msgmni kernel/msg_next_id kernel/sem kernel/sem_next_id
	kernel/random/boot_id kernel/random/uuid
	fs/mqueue
)

usage() {
	cat <<'EOF'
Usage: lab.sh COMMAND [ARGS]   (must run as root)

  up NAME [--index K] [--control-planes C] [--workers W] [--setup SCRIPT] [--openrc NODE[,NODE...]]
        Create lab NAME: nodes cp1..cpC then w1..wW (defaults C=3, W=2, K=1) on subnet
        10.200.K.0/24 (bridge .1, nodes .11, .12, ..., VIP .100). Each node boots systemd,
        or OpenRC (/sbin/openrc-init) if --openrc names it; returns once every node's init has
        finished booting with no failed service and its sshd accepts connections.
        --setup SCRIPT runs `SCRIPT ROOT NODE ROLE` for each node before it boots: files it
        puts under ROOT are in the node as if installed with the OS (units it enables start
        at boot) and stay out of the upper dir. On failure the half-built lab is torn down
        (set KHALAB_KEEP_FAILED=1 to keep it for debugging).
  down NAME             Tear lab NAME down (idempotent, also after a failed up).
  down-all              Tear down every lab that no running test holds; sweep leftovers.
  status NAME           Print node states; exit 0 iff the bridge (not forwarding) and every
                        node are up.
  list                  Print the names of existing labs.
  exec NAME NODE -- CMD...
                        Run CMD inside NODE (its cgroup and its net, mount, UTS, IPC, PID and
                        cgroup namespaces) with a clean environment; stdin/stdout/stderr and
                        the exit code pass through.
  inventory NAME [--index K --control-planes C --workers W]
                        Print a khactl inventory for the lab (with options: for a lab of
                        that shape, which need not exist; --openrc is accepted and changes
                        nothing: the inventory does not name init systems).
  upper NAME NODE       Print NODE's overlay upper dir: exactly the files changed in the node.
  stop NAME NODE [--power-cut]
                        Power NODE off: a clean poweroff (systemd or OpenRC stops every
                        service), or with
                        --power-cut every process SIGKILLed at once. Its files stay.
  start NAME NODE       Boot a stopped NODE again (a reboot is stop + start); waits as `up` does.
  freeze NAME NODE      Freeze every process of NODE (a hung machine: no packet answered).
  thaw NAME NODE        Let a frozen NODE run on.
  stop-sshd NAME NODE   Stop NODE's ssh service (systemd: ssh.service, OpenRC: sshd) and kill
                        every sshd left (listener and sessions): connections are refused.
  start-sshd NAME NODE  Start NODE's ssh service and wait until it accepts connections.
  regen-hostkey NAME NODE
                        Give NODE a new ed25519 host key and restart its sshd.
  ssh NAME NODE [CMD...]
                        ssh into NODE as root with the lab key (known hosts kept in the lab dir).
  help                  This text.

Layout: /var/lib/khalab/NAME/{lab.env,inventory.yaml,ssh/id_ed25519,NODE/{upper,work,pid,boot.log},
        run/ (tmpfs: layers/NODE = base layers, sysctl/NODE = global sysctl snapshots)}
        cgroup: <cgroup2 mount>/khalab/NAME/NODE
        lab.env: LAB_OPENRC lists the nodes that boot OpenRC
EOF
}

die() {
	echo "lab.sh: $*" >&2
	exit 1
}

require_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, bridges and mounts need it)"
}

valid_name() {
	[[ $1 =~ ^[a-z][a-z0-9-]{0,19}$ ]] || die "invalid lab name '$1': use 1-20 lowercase letters, digits and '-', starting with a letter"
}

now_ms() {
	local s ns
	read -r s ns < <(date '+%s %N')
	echo $((s * 1000 + 10#$ns / 1000000))
}

# --- lab state -------------------------------------------------------------------------------

lab_dir() { echo "$KHALAB_ROOT/$1"; }
# The lab's tmpfs: node base layers and sysctl snapshots (volatile by nature).
layer_of() { echo "$KHALAB_ROOT/$1/run/layers/$2"; }
sysctl_of() { echo "$KHALAB_ROOT/$1/run/sysctl/$2"; }
netns_of() { echo "khl_${1}_${2}"; } # '_' is not allowed in lab names: no prefix collisions
bridge_of() { echo "khl${1}br"; }    # index-derived, at most 9 characters
hostveth_of() { echo "khl${1}n${2}"; }

# Loads lab.env of NAME into LAB_* variables; fails if the lab does not exist.
load_lab() {
	local name=$1 env
	env="$(lab_dir "$name")/lab.env"
	[[ -f $env ]] || die "no lab named '$name' (no $env); create it with: lab.sh up $name"
	# shellcheck source=/dev/null
	source "$env"
	read -r -a LAB_NODE_LIST <<<"$LAB_NODES"
	LAB_OPENRC=${LAB_OPENRC:-} # labs made before --openrc existed
}

# True if NODE of the loaded lab boots OpenRC rather than systemd.
node_openrc() { [[ " $LAB_OPENRC " == *" $1 "* ]]; }
node_init() { if node_openrc "$1"; then echo openrc; else echo systemd; fi; }

node_index() {
	local node=$1 i=0 n
	for n in "${LAB_NODE_LIST[@]}"; do
		i=$((i + 1))
		if [[ $n == "$node" ]]; then
			echo "$i"
			return 0
		fi
	done
	die "lab '$LAB_NAME' has no node '$node' (nodes: ${LAB_NODE_LIST[*]})"
}

node_addr() { echo "$NET.${LAB_INDEX}.$((10 + $(node_index "$1")))"; }

node_pid() {
	local pidfile pid
	pidfile="$(lab_dir "$LAB_NAME")/$1/pid"
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ -n $pid && -d /proc/$pid ]] || return 1
	# The pid file could outlive the node and the pid be reused: the node's PID 1 lives in the
	# node's network namespace, so compare namespace identities.
	[[ -e /run/netns/$(netns_of "$LAB_NAME" "$1") ]] || return 1
	[[ $(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null) == $(stat -L -c %i "/run/netns/$(netns_of "$LAB_NAME" "$1")") ]] || return 1
	echo "$pid"
}

# The lab bridge is up and holds the gateway address. Nothing may be sent to a lab address
# unless this holds: without the bridge's connected route, packets would follow the default
# route off the machine.
bridge_up() {
	local br
	br=$(bridge_of "$LAB_INDEX")
	[[ -d /sys/class/net/$br ]] || return 1
	# Administratively up (IFF_UP) is what installs the connected route; operstate lags
	# behind by up to a second (linkwatch), so it is not the test.
	local flags
	flags=$(<"/sys/class/net/$br/flags")
	(((flags & 1) == 1)) || return 1
	ip -4 -o addr show dev "$br" 2>/dev/null | grep -qF " $NET.$LAB_INDEX.1/24 "
}

# --- host-side checks ------------------------------------------------------------------------

check_host() {
	local t
	for t in ip nsenter unshare setsid setpriv sshd ssh-keygen pivot_root; do
		command -v "$t" >/dev/null || die "missing tool '$t' (tests/lab/install-deps.sh installs what the lab needs)"
	done
	[[ -x /lib/systemd/systemd ]] || die "missing /lib/systemd/systemd, every node's PID 1 (apt-get install systemd)"
	if [[ -n ${1:-} ]]; then
		[[ -x /sbin/openrc-init && -x /sbin/supervise-daemon ]] ||
			die "missing /sbin/openrc-init, PID 1 of --openrc nodes (tests/lab/install-deps.sh installs Debian's openrc)"
	fi
	# The lab's helpers use the distribution's python3 (a pyenv shim costs ~250 ms a call).
	[[ -x /usr/bin/python3 ]] || die "missing /usr/bin/python3 (apt-get install python3)"
}

# --- cgroups -------------------------------------------------------------------------------------

# Prints where the cgroup2 hierarchy is mounted with nsdelegate, mounting it if no mount of it
# has that option yet. nsdelegate makes each node's cgroup namespace a delegation boundary: the
# node's systemd manages the subtree below its cgroup and cannot touch the cgroup itself (nor
# unfreeze it). The option belongs to the hierarchy and only takes effect on a mount made in
# the host's cgroup namespace, hence here and not inside the node.
cgroup2_root() {
	local mp
	mp=$(awk '{ split($0, half, " - "); split(half[2], f, " ")
		if (f[1] == "cgroup2" && f[3] ~ /(^|,)nsdelegate(,|$)/) { print $5; exit } }' /proc/self/mountinfo)
	if [[ -z $mp ]]; then
		mkdir -p "$CGROUP2_MOUNT"
		mountpoint -q "$CGROUP2_MOUNT" || mount -t cgroup2 -o nsdelegate khalab-cgroup2 "$CGROUP2_MOUNT"
		mp=$CGROUP2_MOUNT
	fi
	echo "$mp"
}

# The cgroup of lab NAME (and of its NODE): every process of the node lives below it.
lab_cgroup() { echo "$(cgroup2_root)/khalab/$1"; }
node_cgroup() { echo "$(lab_cgroup "$1")/$2"; }

node_frozen() {
	grep -qx 'frozen 1' "$(node_cgroup "$LAB_NAME" "$1")/cgroup.events" 2>/dev/null
}

node_populated() {
	grep -qx 'populated 1' "$(node_cgroup "$LAB_NAME" "$1")/cgroup.events" 2>/dev/null
}

# --- up ----------------------------------------------------------------------------------------

# One Python process for what would otherwise be hundreds of forks: snapshot the global sysctl
# trees (vm, fs, kernel) as regular files.
py_snapshot_sysctls() {
	/usr/bin/python3 - "$1" <<'PY'
import os, sys
dest = sys.argv[1]
for top in ("vm", "fs", "kernel"):
    for root, dirs, files in os.walk("/proc/sys/" + top):
        rel = os.path.relpath(root, "/proc/sys")
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for f in files:
            try:
                with open(os.path.join(root, f), "rb") as src:
                    data = src.read()
            except OSError:
                data = b""  # write-only or restricted entries: an empty, writable stand-in
            with open(os.path.join(dest, rel, f), "wb") as out:
                out.write(data)
PY
}

# py_make_opaque LAYERS_DIR REL...: in every layer under LAYERS_DIR, creates each REL dir
# and marks it opaque.
py_make_opaque() {
	/usr/bin/python3 - "$@" <<'PY'
import os, sys
layers, rels = sys.argv[1], sys.argv[2:]
for layer in os.listdir(layers):
    for rel in rels:
        d = os.path.join(layers, layer, rel)
        os.makedirs(d, exist_ok=True)
        os.setxattr(d, "trusted.overlay.opaque", b"y")
PY
}

write_sshd_config() {
	local addr=$1
	cat <<EOF
# khalab node sshd: key-only root login, bound to the node's lab address.
ListenAddress $addr
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
# PAM would try session/loginuid modules that have nothing to talk to in a node.
UsePAM no
UseDNS no
MaxSessions 64
MaxStartups 100:30:200
X11Forwarding no
PrintMotd no
PrintLastLog no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel INFO
EOF
}

# The node's base layer: the lab's own files, between the node's upper dir and the host's /,
# so the upper dir holds only what changed after boot.
prepare_base() {
	local name=$1 node=$2 addr=$3 init=$4
	local d base
	d="$(lab_dir "$name")/$node"
	base=$(layer_of "$name" "$node")
	mkdir -p "$d/upper" "$d/work" "$d/merged" "$base/root/.ssh" "$base/etc/ssh" \
		"$base/usr/sbin" "$base/var/lib/khalab" "$base/var/log/journal" "$base/var/tmp"
	chmod 0700 "$base/root" "$base/root/.ssh"
	install -m 0600 "$(lab_dir "$name")/ssh/id_ed25519.pub" "$base/root/.ssh/authorized_keys"

	ssh-keygen -q -t ed25519 -N '' -C "root@$node" -f "$base/etc/ssh/ssh_host_ed25519_key"
	local k
	for k in /etc/ssh/ssh_host_*; do
		[[ -e $k ]] || continue
		# Whiteouts hide the host's other host keys: a node must never present the host's key.
		[[ -e $base/etc/ssh/${k##*/} ]] || mknod "$base/etc/ssh/${k##*/}" c 0 0
	done
	write_sshd_config "$addr" >"$base/etc/ssh/sshd_config"

	echo "$node" >"$base/etc/hostname"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n' "$addr" "$node" >"$base/etc/hosts"
	# A machine id of its own: the journal, D-Bus and systemd's unit ids derive from it.
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$base/etc/machine-id"
	echo >>"$base/etc/machine-id"

	if [[ $init == openrc ]]; then
		prepare_base_openrc "$base"
	else
		prepare_base_systemd "$base"
	fi
	# What systemd writes at every boot is here already, so booting leaves the upper dir
	# empty: /etc/mtab as systemd-tmpfiles makes it, and fresh .updated stamps, so the units
	# that run after an OS update (ConditionNeedsUpdate: sysusers, hwdb, the journal
	# catalog) see an up-to-date machine and stay off. (OpenRC nodes get them too: the same
	# machine, another init.)
	ln -s ../proc/self/mounts "$base/etc/mtab"
	touch "$base/etc/.updated" "$base/var/.updated"
	printf '#!/bin/sh\n# khalab: package scripts must not start services\nexit 101\n' >"$base/usr/sbin/policy-rc.d"
	chmod 0755 "$base/usr/sbin/policy-rc.d"

	# Login records are written by sshd on every login; they get tmpfs files bound over them
	# at boot, and must exist here so the bind has a target.
	: >"$base/var/log/wtmp"
	: >"$base/var/log/btmp"
	: >"$base/var/log/lastlog"

	cp -a "$(lab_dir "$name")/run/sysctl-template" "$(sysctl_of "$name" "$node")"
}

# systemd's part of a base layer: only ssh.service is enabled (the wants dirs are opaque, see
# opaque_dirs); the units that do not belong in a node are masked; the journal lives in /run,
# out of the upper dir; logind's linger dir exists already.
prepare_base_systemd() {
	local base=$1 unit
	mkdir -p "$base/etc/systemd/system/multi-user.target.wants" "$base/etc/systemd/journald.conf.d" \
		"$base/var/lib/systemd/linger"
	ln -s /lib/systemd/system/ssh.service "$base/etc/systemd/system/multi-user.target.wants/ssh.service"
	for unit in "${MASKED_UNITS[@]}"; do
		ln -s /dev/null "$base/etc/systemd/system/$unit"
	done
	printf '# khalab: the journal stays in /run, out of the upper dir\n[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n' \
		>"$base/etc/systemd/journald.conf.d/khalab.conf"
}

# OpenRC's part of a base layer (`up --openrc`): /etc/rc.conf for a container, and runlevels
# of the node's own (opaque: the host's runlevel links, which Debian's openrc package fills
# with every service the host enabled, stay out) holding only the lab's sshd (default) and its
# `net` provider (boot), both lab-owned openrc-run scripts.
prepare_base_openrc() {
	local base=$1 level
	mkdir -p "$base/etc/init.d"
	for level in "${OPENRC_RUNLEVELS[@]}"; do
		mkdir -p "$base/etc/runlevels/$level"
	done
	/usr/bin/python3 -c 'import os, sys; os.setxattr(sys.argv[1], "trusted.overlay.opaque", b"y")' "$base/etc/runlevels"
	cat >"$base/etc/rc.conf" <<'EOF'
# khalab OpenRC node (tests/lab/lab.sh up --openrc): a system container on this machine.
# lxc: scripts with `keyword -lxc` (clock, kernel modules, consoles, ...) stay off; the
# runlevels hold only what lab.sh put there (sshd, and the `net` stub `networking`).
rc_sys="lxc"
# The node's cgroup2 (the root of its cgroup namespace) is on /sys/fs/cgroup: each service
# gets /sys/fs/cgroup/<service>.
rc_cgroup_mode="unified"
rc_parallel="NO"
rc_logger="NO"
rc_tty_number=0
unicode="YES"
EOF
	cat >"$base/etc/init.d/sshd" <<'EOF'
#!/sbin/openrc-run
# khalab: OpenSSH's sshd in an OpenRC lab node (Debian ships only an LSB script for it),
# in the foreground under supervise-daemon; its configuration is /etc/ssh/sshd_config.
description="OpenSSH server (khalab node)"
command=/usr/sbin/sshd
command_args="-D"
supervisor=supervise-daemon
respawn_delay=1
extra_started_commands="reload"

depend() {
	use net
	after networking
}

start_pre() {
	# The privilege separation directory; then a check of the configuration.
	checkpath -d -m 0755 -o root:root /run/sshd && /usr/sbin/sshd -t
}

reload() {
	ebegin "Reloading $RC_SVCNAME"
	supervise-daemon "$RC_SVCNAME" --signal HUP
	eend $?
}
EOF
	cat >"$base/etc/init.d/networking" <<'EOF'
#!/sbin/openrc-run
# khalab: eth0 and lo of this node were configured by lab.sh from the host. This stub only
# provides `net`, so that services which `need net` (as Alpine's do) start, and it hides any
# `networking` script of the host (Debian's ifupdown would reconfigure eth0).
description="Network (configured by khalab from the host)"

depend() {
	provide net
}

start() {
	return 0
}

stop() {
	return 0
}
EOF
	chmod 0755 "$base/etc/init.d/sshd" "$base/etc/init.d/networking"
	# Debian's LSB script for sshd (ssh, "Provides: sshd") would clash with this `sshd`
	# ("sshd is the name of a real and virtual service"): a whiteout hides it.
	[[ -e /etc/init.d/ssh ]] && mknod "$base/etc/init.d/ssh" c 0 0
	ln -s /etc/init.d/sshd "$base/etc/runlevels/default/sshd"
	ln -s /etc/init.d/networking "$base/etc/runlevels/boot/networking"
}

# Runs the `up --setup` script for NODE against its base layer (see usage).
run_setup() {
	local name=$1 node=$2 role=$3 script=$4
	"$script" "$(layer_of "$name" "$node")" "$node" "$role" </dev/null ||
		die "setup script $script failed for $name/$node"
}

# Directories made opaque in every base layer (relative to /): the host's /root and its shell
# start-up files, every systemd *.wants dir and /etc/rc?.d (nothing the host enabled boots in
# a node), and the labs' own state.
opaque_dirs() {
	local d
	echo root
	echo var/lib/khalab
	echo etc/systemd/system/multi-user.target.wants
	for d in /etc/systemd/system/*.wants /etc/rc?.d; do
		[[ -d $d ]] && echo "${d#/}"
	done
	return 0
}

setup_network() {
	local name=$1 idx=$2
	shift 2
	local br i=0 node ns hv
	br=$(bridge_of "$idx")
	ip link add "$br" type bridge mcast_snooping 0
	# The root namespace may have ip_forward=1 (a Docker host, a CI container); routing input
	# checks forwarding on the *incoming* interface, so with it off on the bridge nothing a
	# node sends is routed anywhere, whatever the global setting.
	echo 0 >"/proc/sys/net/ipv4/conf/$br/forwarding"
	[[ $(<"/proc/sys/net/ipv4/conf/$br/forwarding") == 0 ]] || die "cannot turn forwarding off on $br"
	# No IPv6 on the host side of the lab: the host must not take part in node traffic.
	echo 1 >"/proc/sys/net/ipv6/conf/$br/disable_ipv6"
	ip addr add "$NET.$idx.1/24" dev "$br"
	ip link set "$br" up
	# Batched: one `ip` process for all namespaces and veths, one to attach them, one per node
	# inside it (forks dominate a 20-node up otherwise).
	local create=() attach=()
	for node in "$@"; do
		i=$((i + 1))
		ns=$(netns_of "$name" "$node")
		hv=$(hostveth_of "$idx" "$i")
		create+=("netns add $ns" "link add $hv type veth peer name eth0 netns $ns")
		attach+=("link set $hv master $br up")
	done
	printf '%s\n' "${create[@]}" | ip -batch -
	for ((i = 1; i <= $#; i++)); do
		echo 1 >"/proc/sys/net/ipv6/conf/$(hostveth_of "$idx" "$i")/disable_ipv6"
	done
	printf '%s\n' "${attach[@]}" | ip -batch -
	i=0
	for node in "$@"; do
		i=$((i + 1))
		ip -n "$(netns_of "$name" "$node")" -batch - <<EOF
link set lo up
addr add $NET.$idx.$((10 + i))/24 dev eth0
link set eth0 up
route add 224.0.0.0/4 dev eth0
EOF
	done
}

launch_node() {
	local name=$1 node=$2 init=$3 d cg
	d="$(lab_dir "$name")/$node"
	cg=$(node_cgroup "$name" "$node")
	mkdir -p "$cg"
	rm -f "$d/pid"
	# The node's first process enters the node's cgroup *before* `unshare --cgroup`, so that
	# cgroup becomes the root of the node's cgroup namespace: the node's systemd manages the
	# subtree below it, never the host's own cgroups.
	# setsid, no inherited stdio and no other inherited descriptor: the node must not keep the
	# caller's pipes open (a test harness waiting for lab.sh's output would otherwise wait for
	# the node to die), nor any lock: not the lab lock on fd 9 (every later `down` would wait
	# for the node, which only `down` kills), nor the lock of a caller such as `flock LOCK
	# lab.sh up …`, which the nodes would hold for their whole life.
	setsid /bin/bash -c '
		for fd in /proc/self/fd/*; do
			fd=${fd##*/}
			((fd > 2)) && eval "exec $fd>&-"
		done
		echo $$ >"$1/cgroup.procs" && shift && exec "$@"' _ "$cg" \
		nsenter --net="/run/netns/$(netns_of "$name" "$node")" -- \
		unshare --mount --uts --ipc --pid --cgroup --fork --propagation private -- \
		env -i PATH="$NODE_PATH" /bin/bash "$SELF" __boot "$name" "$node" "$init" \
		</dev/null >"$d/boot.log" 2>&1 &
}

# Runs inside the node's fresh namespaces as its PID 1 (the host's /proc is still mounted):
# builds the node's root, pivots into it and execs INIT (systemd or openrc).
cmd_boot() {
	local name=$1 node=$2 init=${3:-systemd}
	local d m hostpid e f sys
	d="$(lab_dir "$name")/$node"
	sys=$(sysctl_of "$name" "$node")
	m=$d/merged
	# /proc is still the host's procfs here, so /proc/self names our pid in the host's view.
	read -r hostpid _ </proc/self/stat
	echo "$hostpid" >"$d/pid.tmp"
	mv "$d/pid.tmp" "$d/pid"
	# A new netns copies IPv4 settings from the root namespace; a node starts like a fresh
	# host, whose ip_forward is 0. (/proc/sys/net is always the caller's netns.)
	echo 0 >/proc/sys/net/ipv4/ip_forward

	# A volatile overlay leaves a marker in its work dir that refuses the next mount; the
	# previous boot of this node (`stop`, then `start`) is over, and the machine did not
	# crash, so its upper dir is complete.
	rm -rf "$d/work/work/incompat"
	# volatile: no syncs of the upper fs (the machine's root disk); without it every node's
	# teardown flushes the whole disk, which made `down` take seconds.
	mount -t overlay "khalab-$name-$node" \
		-o "lowerdir=$(layer_of "$name" "$node"):/,upperdir=$d/upper,workdir=$d/work,volatile" "$m"

	# A private /dev: the few devices a node needs, bound from the host's, and its own pts,
	# shm and mqueue. Binding the whole host /dev would let journald, tmpfiles and udev in
	# the node write into the machine's devices.
	mount -t tmpfs -o mode=0755,nosuid,size=4m khalab-dev "$m/dev"
	for f in null zero full random urandom tty; do
		: >"$m/dev/$f"
		mount --bind "/dev/$f" "$m/dev/$f"
	done
	mkdir -p "$m/dev/pts" "$m/dev/shm" "$m/dev/mqueue"
	ln -s pts/ptmx "$m/dev/ptmx"
	ln -s /proc/self/fd "$m/dev/fd"
	ln -s /proc/self/fd/0 "$m/dev/stdin"
	ln -s /proc/self/fd/1 "$m/dev/stdout"
	ln -s /proc/self/fd/2 "$m/dev/stderr"
	mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$m/dev/pts"
	mount -t tmpfs -o mode=1777,nosuid,nodev shm "$m/dev/shm"
	mount -t mqueue mqueue "$m/dev/mqueue"
	mount -t proc proc "$m/proc"
	# sysfs read-only (this netns's devices); the node's cgroup, as the root of its cgroup
	# namespace, on /sys/fs/cgroup: systemd sees a pure cgroup2 machine.
	mount -t sysfs -o ro sysfs "$m/sys"
	mount -t cgroup2 -o nsdelegate cgroup2 "$m/sys/fs/cgroup"
	mount -t tmpfs -o mode=0755 run "$m/run"
	mount -t tmpfs -o mode=1777 tmp "$m/tmp"
	# Also in RAM, so that booting leaves the upper dir untouched: /var/tmp, where systemd
	# puts services' PrivateTmp dirs, and /var/log/journal, which systemd-tmpfiles gives ACLs
	# and attributes at every boot (the journal itself is volatile, in /run).
	mount -t tmpfs -o mode=1777 var-tmp "$m/var/tmp"
	mount -t tmpfs -o mode=2755,gid="$(getent group systemd-journal | cut -d: -f3)",size=1m var-log-journal "$m/var/log/journal"
	# The machine id is read-only: systemd opens it for writing at every boot otherwise
	# (copying it into the upper dir), and commits nothing to a read-only one.
	mount --bind "$m/etc/machine-id" "$m/etc/machine-id"
	mount -o remount,bind,ro "$m/etc/machine-id"

	# Global sysctls: the node writes into its own snapshot; the namespaced entries are bound
	# back from the node's own procfs first so they stay live.
	for e in "${NAMESPACED_SYSCTLS[@]}"; do
		[[ -e $m/proc/sys/$e && -e $sys/$e ]] || continue
		mount --bind "$m/proc/sys/$e" "$sys/$e"
	done
	for e in vm fs kernel; do
		mount --rbind "$sys/$e" "$m/proc/sys/$e"
	done

	mkdir -p "$m/run/khalab"
	for f in wtmp btmp lastlog; do
		: >"$m/run/khalab/$f"
		mount --bind "$m/run/khalab/$f" "$m/var/log/$f"
	done

	hostname "$node"
	cd "$m"
	pivot_root . .
	umount -l .
	cd /
	# `container=other`: systemd's container mode (no console, no udev, no kernel setup).
	# From the host, SIGRTMIN+4 to this process is a clean poweroff; SIGTERM would only
	# make systemd re-execute itself. openrc-init runs the sysinit, boot and default
	# runlevels (rc_sys from the base layer's /etc/rc.conf; it ignores `container=other`).
	local argv=(/lib/systemd/systemd --system)
	[[ $init == openrc ]] && argv=(/sbin/openrc-init)
	exec env -i container=other PATH="$NODE_PATH" LANG=C.UTF-8 \
		setpriv --bounding-set="$NODE_DROPPED_CAPS" "${argv[@]}"
}

# Polls until NODE's sshd sends its banner, or the deadline passes.
wait_sshd() {
	local node=$1 addr deadline
	addr=$(node_addr "$node")
	deadline=$(($(now_ms) + SSHD_DEADLINE * 1000))
	while (($(now_ms) < deadline)); do
		if bridge_up && timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/22" && read -r -t 2 l <&3 && [[ $l == SSH-2.0-* ]]' _ "$addr" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	bridge_up || echo "lab.sh: bridge of lab '$LAB_NAME' is down: never contacted $addr" >&2
	echo "lab.sh: sshd of $LAB_NAME/$node ($addr) did not accept connections within ${SSHD_DEADLINE}s" >&2
	node_log "$node" >&2 || true
	return 1
}

# Run in an OpenRC node, prints the state of its boot as one word: `running` once OpenRC has
# finished the default runlevel (no openrc runlevel change under way) with every service of
# sysinit, boot and default started and none crashed or failed; `starting` before that;
# `degraded` otherwise (what is wrong follows on stderr).
readonly OPENRC_STATE='
	level=$(cat /run/openrc/softlevel 2>/dev/null)
	# openrc-init makes its control FIFO only once sysinit, boot and default are done; before,
	# softlevel may already say default while rc.starting is not there yet.
	if [ ! -p /run/openrc/init.ctl ] || [ "$level" != default ] || [ -e /run/openrc/rc.starting ] || [ -e /run/openrc/rc.stopping ] ||
		[ -n "$(ls -A /run/openrc/starting 2>/dev/null)" ]; then
		echo starting; exit 0
	fi
	bad=$(rc-status --crashed 2>/dev/null | tr -d " ")
	[ -z "$bad" ] || echo "crashed: $bad" >&2
	failed=$(ls -A /run/openrc/failed 2>/dev/null)
	[ -z "$failed" ] || { echo "failed: $failed" >&2; bad="$bad$failed"; }
	for s in /etc/runlevels/sysinit/* /etc/runlevels/boot/* /etc/runlevels/default/*; do
		[ -e "$s" ] || continue
		[ -e "/run/openrc/started/${s##*/}" ] || { echo "not started: ${s##*/}" >&2; bad="$bad ${s##*/}"; }
	done
	if [ -z "$bad" ]; then echo running; else echo degraded; fi'

# Polls until NODE's init has finished booting; fails unless it reports `running` (a
# `degraded` node has a failed unit: the lab would test something else than a healthy host).
wait_booted() {
	local node=$1 deadline state=""
	deadline=$(($(now_ms) + BOOT_DEADLINE * 1000))
	if node_openrc "$node"; then
		while (($(now_ms) < deadline)); do
			state=$(node_sh "$node" "$OPENRC_STATE" 2>/dev/null) || true
			case $state in
			running) return 0 ;;
			starting | "") sleep 0.05 ;;
			*) break ;;
			esac
		done
		echo "lab.sh: OpenRC of $LAB_NAME/$node is '${state:-not answering}', not 'running', after booting" >&2
		node_log "$node" >&2 || true
		return 1
	fi
	while (($(now_ms) < deadline)); do
		# Before systemd listens on its socket, systemctl fails at once ("offline"); after,
		# --wait returns when the boot job queue is empty.
		state=$(node_sh "$node" "timeout $BOOT_DEADLINE systemctl is-system-running --wait 2>/dev/null") || true
		case $state in
		running) return 0 ;;
		initializing | starting | offline | "") sleep 0.05 ;;
		*) break ;;
		esac
	done
	echo "lab.sh: systemd of $LAB_NAME/$node is '${state:-not answering}', not 'running', after booting" >&2
	node_log "$node" >&2 || true
	return 1
}

node_log() {
	local node=$1 d
	d="$(lab_dir "$LAB_NAME")/$node"
	echo "--- $node boot.log:"
	cat "$d/boot.log" 2>/dev/null || true
	if node_pid "$node" >/dev/null && ! node_frozen "$node" && node_openrc "$node"; then
		echo "--- $node: OpenRC (rc-status --all; rc-status --crashed; /run/openrc/failed):"
		node_sh "$node" "rc-status --all --nocolor; rc-status --crashed --nocolor; ls -A /run/openrc/failed; $OPENRC_STATE" 2>&1 || true
	elif node_pid "$node" >/dev/null && ! node_frozen "$node"; then
		echo "--- $node: systemctl --failed; journal (last 40 lines):"
		node_sh "$node" 'systemctl --failed --no-pager --no-legend; journalctl -b --no-pager -n 40' 2>&1 || true
	fi
}

wait_node_pid() {
	local node=$1 deadline
	deadline=$(($(now_ms) + 10000))
	while (($(now_ms) < deadline)); do
		node_pid "$node" >/dev/null && return 0
		sleep 0.02
	done
	echo "lab.sh: node $LAB_NAME/$node did not start" >&2
	node_log "$node" >&2
	return 1
}

# Boots NODE (its base layer and network ready) and waits until its init is up and sshd greets.
boot_node() {
	local node=$1
	launch_node "$LAB_NAME" "$node" "$(node_init "$node")"
	wait_node_pid "$node" && wait_booted "$node" && wait_sshd "$node"
}

# Parses --index/--control-planes/--workers/--openrc into SHAPE_* (defaults: the default
# lab's; SHAPE_OPENRC: the OpenRC nodes, space-separated).
parse_shape() {
	SHAPE_INDEX=1 SHAPE_CPS=3 SHAPE_WORKERS=2 SHAPE_OPENRC=""
	while (($#)); do
		case $1 in
		--openrc) SHAPE_OPENRC="$SHAPE_OPENRC ${2:?--openrc needs NODE[,NODE...]}"; shift 2 ;;
		--index) SHAPE_INDEX=${2:?--index needs a value}; shift 2 ;;
		--control-planes) SHAPE_CPS=${2:?--control-planes needs a value}; shift 2 ;;
		--workers) SHAPE_WORKERS=${2:?--workers needs a value}; shift 2 ;;
		*) die "unknown option '$1' (expected --index, --control-planes, --workers, --openrc)" ;;
		esac
	done
	[[ $SHAPE_INDEX =~ ^[0-9]+$ ]] && ((SHAPE_INDEX >= 1 && SHAPE_INDEX <= 200)) ||
		die "--index must be 1..200, got '$SHAPE_INDEX'"
	[[ $SHAPE_CPS =~ ^[0-9]+$ && $SHAPE_WORKERS =~ ^[0-9]+$ ]] || die "--control-planes and --workers take numbers"
	((SHAPE_CPS + SHAPE_WORKERS >= 1 && SHAPE_CPS + SHAPE_WORKERS <= 80)) ||
		die "a lab has 1..80 nodes, asked for $((SHAPE_CPS + SHAPE_WORKERS))"
	local all n list=()
	all=" $(shape_nodes "$SHAPE_CPS" "$SHAPE_WORKERS" | tr '\n' ' ')"
	for n in ${SHAPE_OPENRC//,/ }; do
		[[ $n =~ ^(cp|w)[0-9]+$ && $all == *" $n "* ]] || die "--openrc $n: no such node in this lab (nodes:$all)"
		[[ " ${list[*]} " == *" $n "* ]] || list+=("$n")
	done
	SHAPE_OPENRC="${list[*]}"
}

shape_nodes() {
	local i
	for ((i = 1; i <= $1; i++)); do echo "cp$i"; done
	for ((i = 1; i <= $2; i++)); do echo "w$i"; done
}

# Serialises up/down of one lab across processes (fd 9 stays open until lab.sh exits).
lock_lab() {
	# Re-opening would drop a lock this process already holds (up's failure path runs down).
	[[ ${LOCKED_LAB:-} == "$1" ]] && return 0
	exec 9>"$KHALAB_ROOT/.$1.lock"
	flock 9
	LOCKED_LAB=$1
}

cmd_up() {
	local name=${1:-}
	[[ -n $name ]] || die "usage: lab.sh up NAME [--index K] [--control-planes C] [--workers W] [--setup SCRIPT] [--openrc NODE[,NODE...]]"
	shift
	valid_name "$name"
	lock_lab "$name"
	local setup="" shape=()
	while (($#)); do
		case $1 in
		--setup) setup=${2:?--setup needs a script}; shift 2 ;;
		*) shape+=("$1"); shift ;;
		esac
	done
	if [[ -n $setup ]]; then
		setup=$(readlink -f "$setup")
		[[ -f $setup && -x $setup ]] || die "--setup $setup is not an executable file"
	fi
	parse_shape "${shape[@]}"
	local idx=$SHAPE_INDEX cps=$SHAPE_CPS workers=$SHAPE_WORKERS openrc=$SHAPE_OPENRC
	check_host "$openrc"

	local dir
	dir=$(lab_dir "$name")
	[[ ! -e $dir ]] || die "lab '$name' already exists ($dir); tear it down first: lab.sh down $name"
	[[ ! -e /sys/class/net/$(bridge_of "$idx") ]] || die "index $idx is taken by another lab (bridge $(bridge_of "$idx") exists); pick another --index"
	[[ -z $(ip -4 route show "$NET.$idx.0/24") ]] || die "subnet $NET.$idx.0/24 is already routed on this machine; pick another --index"
	# With br_netfilter on, bridged node-to-node traffic passes this namespace's FORWARD chain.
	if [[ $(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null) == 1 ]] &&
		iptables -S FORWARD 2>/dev/null | grep -qx -- '-P FORWARD DROP'; then
		echo "lab.sh: warning: iptables FORWARD policy is DROP and bridge-nf-call-iptables=1: lab nodes may not reach each other" >&2
	fi

	local nodes=() i
	mapfile -t nodes < <(shape_nodes "$cps" "$workers")

	# lab.env first: from here on `down` can always find and remove what exists.
	mkdir -p "$dir/ssh"
	chmod 0700 "$dir" "$dir/ssh"
	cat >"$dir/lab.env" <<EOF
LAB_NAME=$name
LAB_INDEX=$idx
LAB_CONTROL_PLANES=$cps
LAB_WORKERS=$workers
LAB_NODES="${nodes[*]}"
LAB_OPENRC="$openrc"
EOF
	if [[ -z ${KHALAB_KEEP_FAILED:-} ]]; then
		UP_NAME=$name # the trap runs after cmd_up's locals are gone
		trap 'echo "lab.sh: up $UP_NAME failed; tearing the half-built lab down" >&2; cmd_down "$UP_NAME" >&2 || true' EXIT
	fi
	load_lab "$name"
	local t0
	t0=$(now_ms)

	ssh-keygen -q -t ed25519 -N '' -C "khalab-$name" -f "$dir/ssh/id_ed25519"
	# Base layers live on a tmpfs: overlayfs refuses (ELOOP) a lower layer that sits below
	# another lower layer ("/") on the same filesystem.
	mkdir -p "$dir/run"
	mount -t tmpfs -o mode=0700,size=512m "khalab-$name" "$dir/run"
	mkdir -p "$dir/run/layers" "$dir/run/sysctl"
	py_snapshot_sysctls "$dir/run/sysctl-template"

	local pids=() node addr
	i=0
	for node in "${nodes[@]}"; do
		i=$((i + 1))
		addr="$NET.$idx.$((10 + i))"
		prepare_base "$name" "$node" "$addr" "$(node_init "$node")" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i"; done
	if [[ -n $setup ]]; then
		i=0
		for node in "${nodes[@]}"; do
			i=$((i + 1))
			local role=worker
			((i <= cps)) && role=control-plane
			run_setup "$name" "$node" "$role" "$setup"
		done
	fi
	local opaque=()
	mapfile -t opaque < <(opaque_dirs)
	py_make_opaque "$dir/run/layers" "${opaque[@]}"

	setup_network "$name" "$idx" "${nodes[@]}"
	pids=()
	for node in "${nodes[@]}"; do
		boot_node "$node" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i"; done

	cmd_inventory "$name" >"$dir/inventory.yaml"
	trap - EXIT
	echo "lab $name up: ${#nodes[@]} nodes on $NET.$idx.0/24 in $(($(now_ms) - t0)) ms; inventory: $dir/inventory.yaml"
}

# --- down --------------------------------------------------------------------------------------

# Mount points under DIR in the root namespace, deepest first.
mounts_under() {
	local dir=$1
	awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

cmd_down() {
	local name=${1:-}
	[[ -n $name ]] || die "usage: lab.sh down NAME"
	valid_name "$name"
	lock_lab "$name"
	local dir
	dir=$(lab_dir "$name")
	local nodes=() idx=""
	if [[ -f $dir/lab.env ]]; then
		load_lab "$name"
		nodes=("${LAB_NODE_LIST[@]}")
		idx=$LAB_INDEX
	fi
	# Namespaces that exist even if lab.env does not list them (belt and braces).
	local ns
	while read -r ns _; do
		[[ $ns == "khl_${name}_"* ]] || continue
		local n=${ns#"khl_${name}_"}
		[[ " ${nodes[*]} " == *" $n "* ]] || nodes+=("$n")
	done < <(ip netns list 2>/dev/null)

	# 1. Kill every process of every node: everything in the lab's cgroup at once (frozen
	# nodes included: a fatal signal ends a frozen process), PID 1 of any node outside it
	# (the kernel then kills its PID namespace), then anything else still in a node's network
	# namespace.
	local cg node pid victims=() deadline
	cg=$(lab_cgroup "$name")
	if [[ -d $cg ]]; then
		echo 1 >"$cg/cgroup.kill"
		deadline=$(($(now_ms) + 10000))
		while grep -qx 'populated 1' "$cg/cgroup.events"; do
			(($(now_ms) < deadline)) || die "down $name: processes in $cg survive cgroup.kill"
			sleep 0.01
		done
		# Deepest first: the nodes' systemd left their own sub-cgroups behind.
		find "$cg" -depth -type d -exec rmdir {} + || die "down $name: cannot remove cgroup $cg"
	fi
	for node in "${nodes[@]}"; do
		if [[ -f $dir/$node/pid ]]; then
			pid=$(<"$dir/$node/pid")
			ns=$(netns_of "$name" "$node")
			if [[ -n $pid && -e /run/netns/$ns && -d /proc/$pid ]] &&
				[[ $(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null) == $(stat -L -c %i "/run/netns/$ns") ]]; then
				kill -KILL "$pid" 2>/dev/null || true
			fi
		fi
	done
	deadline=$(($(now_ms) + 10000))
	while :; do
		victims=()
		for node in "${nodes[@]}"; do
			ns=$(netns_of "$name" "$node")
			[[ -e /run/netns/$ns ]] || continue
			while read -r pid; do victims+=("$pid"); done < <(ip netns pids "$ns" 2>/dev/null)
		done
		((${#victims[@]} == 0)) && break
		(($(now_ms) < deadline)) || die "down $name: processes ${victims[*]} survive SIGKILL"
		kill -KILL "${victims[@]}" 2>/dev/null || true
		sleep 0.02
	done

	# 2. Host-side veths first: deleting them is synchronous, `ip netns del` is not.
	if [[ -n $idx ]]; then
		local l
		for l in /sys/class/net/"$(hostveth_of "$idx" "")"*; do
			[[ -e $l ]] || continue
			[[ ${l##*/} =~ ^khl${idx}n[0-9]+$ ]] || continue
			ip link del "${l##*/}" 2>/dev/null || [[ ! -e $l ]] || die "down $name: cannot delete ${l##*/}"
		done
	fi
	for node in "${nodes[@]}"; do
		ns=$(netns_of "$name" "$node")
		[[ -e /run/netns/$ns ]] && ip netns del "$ns"
	done
	if [[ -n $idx && -e /sys/class/net/$(bridge_of "$idx") ]]; then
		ip link del "$(bridge_of "$idx")"
	fi

	# 3. Mounts left in the root namespace (none in normal operation: node mounts live in the
	# nodes' own mount namespaces and die with them).
	if [[ -d $dir ]]; then
		local mp
		while read -r mp; do
			umount -l "$mp" || true
		done < <(mounts_under "$dir")
		[[ -z $(mounts_under "$dir") ]] || die "down $name: mounts remain under $dir; not removing it"
		rm -rf --one-file-system "$dir"
	fi
}

# True if a test process holds lab NAME (the Rust harness keeps an flock on
# $KHALAB_ROOT/.hold-NAME for a lab's whole life; the kernel drops it when the process dies).
lab_held() {
	local hold="$KHALAB_ROOT/.hold-$1"
	[[ -e $hold ]] || return 1
	! flock -n "$hold" true
}

# Removes every lab not held by a running test process, then sweeps namespaces and links that
# belong to no remaining lab.
cmd_down_all() {
	local d name ns l kept_indexes=" "
	for d in "$KHALAB_ROOT"/*/; do
		[[ -d $d ]] || continue
		name=$(basename "$d")
		[[ $name =~ ^[a-z][a-z0-9-]{0,19}$ ]] || continue
		if lab_held "$name"; then
			echo "lab.sh: keeping lab $name: a running test holds it" >&2
			kept_indexes+="$(sed -n 's/^LAB_INDEX=//p' "$d/lab.env" 2>/dev/null) "
			continue
		fi
		(cmd_down "$name")
	done
	while read -r ns _; do
		[[ $ns =~ ^khl_([a-z][a-z0-9-]{0,19})_ ]] || continue
		name=${BASH_REMATCH[1]}
		[[ -d $KHALAB_ROOT/$name ]] && continue # kept above
		(cmd_down "$name")
	done < <(ip netns list 2>/dev/null)
	# Cgroups of labs whose state and namespaces are gone (a `down` killed halfway).
	for d in "$(cgroup2_root)"/khalab/*/; do
		[[ -d $d ]] || continue
		name=$(basename "$d")
		[[ $name =~ ^[a-z][a-z0-9-]{0,19}$ && ! -d $KHALAB_ROOT/$name ]] || continue
		(cmd_down "$name")
	done
	for l in /sys/class/net/khl*; do
		[[ -e $l && ${l##*/} =~ ^khl([0-9]+)n[0-9]+$ ]] || continue
		[[ $kept_indexes == *" ${BASH_REMATCH[1]} "* ]] || ip link del "${l##*/}" 2>/dev/null || true
	done
	for l in /sys/class/net/khl*; do
		[[ -e $l && ${l##*/} =~ ^khl([0-9]+)br$ ]] || continue
		[[ $kept_indexes == *" ${BASH_REMATCH[1]} "* ]] || ip link del "${l##*/}"
	done
	return 0
}

# --- queries and node operations ---------------------------------------------------------------

cmd_status() {
	local name=${1:?usage: lab.sh status NAME}
	load_lab "$name"
	local ok=0 node pid system sshd
	if bridge_up; then
		echo "bridge $(bridge_of "$LAB_INDEX") $NET.$LAB_INDEX.1/24 up"
		# Writing the global ip_forward later propagates to every interface, ours included.
		if [[ $(<"/proc/sys/net/ipv4/conf/$(bridge_of "$LAB_INDEX")/forwarding") != 0 ]]; then
			echo "bridge $(bridge_of "$LAB_INDEX") FORWARDS (someone set ip_forward=1 since up): node traffic could be routed off this machine"
			ok=1
		fi
	else
		echo "bridge $(bridge_of "$LAB_INDEX") DOWN"
		ok=1
	fi
	for node in "${LAB_NODE_LIST[@]}"; do
		if ! pid=$(node_pid "$node"); then
			echo "$node $(node_addr "$node") DOWN"
			ok=1
		elif node_frozen "$node"; then
			echo "$node $(node_addr "$node") FROZEN pid=$pid"
			ok=1
		else
			# One entry into the node for both answers; the system state alone decides.
			if node_openrc "$node"; then
				read -r system sshd < <(node_sh "$node" "echo \"\$( ($OPENRC_STATE) 2>/dev/null) \$(rc-service sshd status >/dev/null 2>&1 && echo active || echo inactive)\"" 2>/dev/null || true)
			else
				read -r system sshd < <(node_sh "$node" 'echo "$(systemctl is-system-running) $(systemctl is-active ssh.service)"' 2>/dev/null || true)
			fi
			echo "$node $(node_addr "$node") up pid=$pid init=$(node_init "$node") system=${system:-unknown} sshd=${sshd:-unknown}"
			[[ $system == running ]] || ok=1
		fi
	done
	return $ok
}

cmd_list() {
	local d
	for d in "$KHALAB_ROOT"/*/lab.env; do
		[[ -f $d ]] || continue
		basename "$(dirname "$d")"
	done
}

running_pid() {
	local pid
	node_index "$1" >/dev/null
	pid=$(node_pid "$1") || die "node $LAB_NAME/$1 is not running (lab.sh status $LAB_NAME)"
	echo "$pid"
}

# Replaces this process with CMD inside NODE: in the node's cgroup (so a `freeze` or a `stop`
# of the node reaches it too) and in all of the node's namespaces, with a clean environment.
exec_in_node() {
	local node=$1 pid
	shift
	pid=$(running_pid "$node")
	echo "$BASHPID" >"$(node_cgroup "$LAB_NAME" "$node")/cgroup.procs"
	exec nsenter -t "$pid" -m -u -i -n -p -C -r -w -- \
		env -i PATH="$NODE_PATH" HOME=/root LANG=C.UTF-8 "$@"
}

cmd_exec() {
	local name=${1:?usage: lab.sh exec NAME NODE -- CMD...} node=${2:?usage: lab.sh exec NAME NODE -- CMD...}
	shift 2
	[[ ${1:-} == -- ]] && shift
	(($#)) || die "usage: lab.sh exec NAME NODE -- CMD..."
	load_lab "$name"
	exec_in_node "$node" "$@"
}

cmd_inventory() {
	local name=${1:?usage: lab.sh inventory NAME [--index K --control-planes C --workers W]}
	shift
	if (($#)); then
		# Render for a lab that need not exist (how inventories/lab.yaml is checked).
		valid_name "$name"
		parse_shape "$@"
		LAB_NAME=$name LAB_INDEX=$SHAPE_INDEX LAB_CONTROL_PLANES=$SHAPE_CPS
		mapfile -t LAB_NODE_LIST < <(shape_nodes "$SHAPE_CPS" "$SHAPE_WORKERS")
	else
		load_lab "$name"
	fi
	local node i=0 role
	cat <<EOF
apiVersion: khactl.io/v1alpha1
kind: Inventory
cluster: { name: $name, kubernetesVersion: v1.31.2 }
vip: { address: $NET.$LAB_INDEX.100, routerId: $((50 + LAB_INDEX)), port: 8443, dnsName: k8s-api.$name.local }
ssh: { user: root, port: 22, identityFile: $(lab_dir "$name")/ssh/id_ed25519 }
nodes:
EOF
	for node in "${LAB_NODE_LIST[@]}"; do
		i=$((i + 1))
		role=worker
		((i <= LAB_CONTROL_PLANES)) && role=control-plane
		echo "  - { name: $node, address: $NET.$LAB_INDEX.$((10 + i)), role: $role }"
	done
}

cmd_upper() {
	local name=${1:?usage: lab.sh upper NAME NODE} node=${2:?usage: lab.sh upper NAME NODE}
	load_lab "$name"
	node_index "$node" >/dev/null
	echo "$(lab_dir "$name")/$node/upper"
}

# Runs a lab-authored script (never user input) inside NODE.
node_sh() {
	(exec_in_node "$1" /bin/sh -c "$2")
}

cmd_stop_sshd() {
	local name=${1:?usage: lab.sh stop-sshd NAME NODE} node=${2:?usage: lab.sh stop-sshd NAME NODE}
	load_lab "$name"
	# Debian's ssh.service has KillMode=process (and OpenRC's supervise-daemon signals the
	# listener only): stopping it ends the listener, so the sessions are killed by hand, as a
	# crashed sshd would lose them.
	local stop='systemctl stop ssh.service'
	node_openrc "$node" && stop='rc-service --quiet sshd stop'
	node_sh "$node" "$stop"' || exit 1
		pkill -KILL -x sshd || true
		i=0
		while pgrep -x sshd >/dev/null; do
			i=$((i + 1)); [ $i -lt 500 ] || { echo "sshd survives SIGKILL" >&2; exit 1; }
			sleep 0.01
		done'
}

cmd_start_sshd() {
	local name=${1:?usage: lab.sh start-sshd NAME NODE} node=${2:?usage: lab.sh start-sshd NAME NODE}
	load_lab "$name"
	if node_openrc "$node"; then
		node_sh "$node" 'rc-service --quiet sshd start'
	else
		node_sh "$node" 'systemctl start ssh.service'
	fi
	wait_sshd "$node"
}

cmd_regen_hostkey() {
	local name=${1:?usage: lab.sh regen-hostkey NAME NODE} node=${2:?usage: lab.sh regen-hostkey NAME NODE}
	load_lab "$name"
	cmd_stop_sshd "$name" "$node"
	node_sh "$node" "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub &&
		ssh-keygen -q -t ed25519 -N '' -C root@$node -f /etc/ssh/ssh_host_ed25519_key"
	# Only the convenience known_hosts of `lab.sh ssh` forgets the key; clients with their own
	# known_hosts see the change, which is the point.
	if [[ -f $(lab_dir "$name")/ssh/known_hosts ]]; then
		ssh-keygen -q -R "$(node_addr "$node")" -f "$(lab_dir "$name")/ssh/known_hosts" >/dev/null 2>&1
	fi
	cmd_start_sshd "$name" "$node"
}

# Waits until NODE's cgroup holds no process (its PID 1 and everything else gone).
wait_node_gone() {
	local node=$1 deadline=$2
	deadline=$(($(now_ms) + deadline * 1000))
	while node_populated "$node"; do
		(($(now_ms) < deadline)) || return 1
		sleep 0.02
	done
}

# True once the OpenRC node whose PID 1 is PID (host view) has run its shutdown runlevel (no
# runlevel change under way) and nothing but PID 1 and its parent (`unshare`, outside the
# node's PID namespace) is left in its cgroup CG.
openrc_shutdown_done() {
	local pid=$1 cg=$2 level p parent
	level=$(cat "/proc/$pid/root/run/openrc/softlevel" 2>/dev/null) || return 1
	[[ $level == shutdown && ! -e /proc/$pid/root/run/openrc/rc.stopping ]] || return 1
	read -r _ _ _ parent _ <"/proc/$pid/stat" || return 1
	while read -r p; do
		[[ $p == "$pid" || $p == "$parent" ]] || return 1
	done < <(find "$cg" -name cgroup.procs -exec cat {} +)
}

cmd_stop() {
	local usage="usage: lab.sh stop NAME NODE [--power-cut]"
	local name=${1:?$usage} node=${2:?$usage} cut=${3:-}
	[[ -z $cut || $cut == --power-cut ]] || die "$usage"
	load_lab "$name"
	local pid cg
	pid=$(running_pid "$node")
	cg=$(node_cgroup "$name" "$node")
	if [[ -n $cut ]]; then
		echo 1 >"$cg/cgroup.kill"
	else
		# A frozen node cannot run its own shutdown.
		node_frozen "$node" && die "$name/$node is frozen: thaw it first, or cut its power (--power-cut)"
		if node_openrc "$node"; then
			# openrc-init runs the shutdown runlevel (every service stopped), sends SIGTERM
			# to every process left, sleeps 3 s, sends SIGKILL and calls reboot(2), which in
			# a PID namespace ends the node. Once the runlevel is done and PID 1 is alone,
			# the rest is that sleep: the node's power is cut then rather than 3 s later.
			node_sh "$node" 'openrc-shutdown --poweroff now' >/dev/null ||
				die "$name/$node: openrc-shutdown failed"
			local deadline=$(($(now_ms) + STOP_DEADLINE * 1000))
			until openrc_shutdown_done "$pid" "$cg"; do
				[[ -d /proc/$pid ]] || break
				(($(now_ms) < deadline)) || break
				sleep 0.02
			done
			[[ -d /proc/$pid ]] && openrc_shutdown_done "$pid" "$cg" && echo 1 >"$cg/cgroup.kill"
		else
			# SIGRTMIN+4 is systemd's "poweroff" request; the node's PID 1 then stops every
			# unit and exits, which ends the node.
			kill -s RTMIN+4 "$pid"
		fi
	fi
	wait_node_gone "$node" "$STOP_DEADLINE" ||
		die "$name/$node still has processes ${STOP_DEADLINE}s after ${cut:-poweroff}"
}

cmd_start() {
	local name=${1:?usage: lab.sh start NAME NODE} node=${2:?usage: lab.sh start NAME NODE}
	load_lab "$name"
	node_index "$node" >/dev/null
	! node_pid "$node" >/dev/null || die "$name/$node is running; stop it first (lab.sh stop $name $node)"
	# The previous boot's processes are gone, but the kernel releases its mounts (the overlay
	# on this upper dir among them) only once nothing holds them: wait for that too.
	wait_node_gone "$node" 10 || die "$name/$node still has processes; stop it first"
	bridge_up || die "bridge of lab '$name' is down"
	boot_node "$node"
}

# Writes VALUE (1 freeze, 0 thaw) to NODE's cgroup.freeze and waits until the kernel says done.
set_frozen() {
	local node=$1 value=$2 cg deadline
	running_pid "$node" >/dev/null
	cg=$(node_cgroup "$LAB_NAME" "$node")
	echo "$value" >"$cg/cgroup.freeze"
	deadline=$(($(now_ms) + 10000))
	until grep -qx "frozen $value" "$cg/cgroup.events"; do
		(($(now_ms) < deadline)) || die "$LAB_NAME/$node: cgroup.events never said frozen $value"
		sleep 0.01
	done
}

cmd_freeze() {
	local name=${1:?usage: lab.sh freeze NAME NODE} node=${2:?usage: lab.sh freeze NAME NODE}
	load_lab "$name"
	set_frozen "$node" 1
}

cmd_thaw() {
	local name=${1:?usage: lab.sh thaw NAME NODE} node=${2:?usage: lab.sh thaw NAME NODE}
	load_lab "$name"
	set_frozen "$node" 0
}

cmd_ssh() {
	local name=${1:?usage: lab.sh ssh NAME NODE [CMD...]} node=${2:?usage: lab.sh ssh NAME NODE [CMD...]}
	shift 2
	[[ ${1:-} == -- ]] && shift
	load_lab "$name"
	bridge_up || die "bridge of lab '$name' is down: not contacting $(node_addr "$node")"
	local dir
	dir=$(lab_dir "$name")
	exec ssh -i "$dir/ssh/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
		-o UserKnownHostsFile="$dir/ssh/known_hosts" -o StrictHostKeyChecking=accept-new \
		"root@$(node_addr "$node")" "$@"
}

main() {
	local cmd=${1:-help}
	(($#)) && shift
	case $cmd in
	help | -h | --help) usage ;;
	__boot) cmd_boot "$@" ;;
	*)
		require_root
		mkdir -p "$KHALAB_ROOT"
		case $cmd in
		up) cmd_up "$@" ;;
		down) cmd_down "$@" ;;
		down-all) cmd_down_all ;;
		status) cmd_status "$@" ;;
		list) cmd_list ;;
		exec) cmd_exec "$@" ;;
		inventory) cmd_inventory "$@" ;;
		upper) cmd_upper "$@" ;;
		stop) cmd_stop "$@" ;;
		start) cmd_start "$@" ;;
		freeze) cmd_freeze "$@" ;;
		thaw) cmd_thaw "$@" ;;
		stop-sshd) cmd_stop_sshd "$@" ;;
		start-sshd) cmd_start_sshd "$@" ;;
		regen-hostkey) cmd_regen_hostkey "$@" ;;
		ssh) cmd_ssh "$@" ;;
		*)
			usage >&2
			exit 2
			;;
		esac
		;;
	esac
}

main "$@"
