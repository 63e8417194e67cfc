#!/usr/bin/env bash
# Installs what the lab and the integration tests need on a Debian 12 machine that has only
# Rust: the Debian packages below. Idempotent; must run as root. Used by .ci/run and
# tests/lab/demo.sh.
set -euo pipefail

[[ $(id -u) -eq 0 ]] || {
	echo "install-deps.sh: must run as root" >&2
	exit 1
}

# One line per need, so a missing tool maps to the package that brings it.
# shellcheck disable=SC2207 # kubernetes-client only when no kubectl is installed: another package's conflicts
readonly PACKAGES=(
	openssh-server openssh-client # sshd in every node, ssh for khactl and tests
	systemd dbus                  # PID 1 of every node (dbus for its logind)
	openrc                        # PID 1 of `lab.sh up --openrc` nodes (brings insserv, librc1, libeinfo1)
	iproute2 util-linux procps    # ip/bridge/veth/netns; nsenter/unshare/pivot_root/setpriv; sysctl/pgrep
	python3                       # the lab's helpers and small test servers in nodes
	curl ca-certificates          # /readyz and etcd checks from tests and khactl, on the host and in nodes
	iptables nftables arping tcpdump
	keepalived haproxy nginx libnginx-mod-stream # baselines and VRRP peers
	etcd-server etcd-client                      # PKI consumers
	python3-cryptography python3-yaml conntrack $(command -v kubectl >/dev/null || echo kubernetes-client) # tests/standin
	openssl                                      # certificate chain checks
	sudo                                         # khactl as a non-root ssh user
	wrk iperf3 hyperfine time                    # benchmarks (time: /usr/bin/time in bench/prepare.sh)
)

have_packages() {
	local status
	status=$(dpkg-query -W -f='${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null) || return 1
	[[ $(grep -cx installed <<<"$status") -eq ${#PACKAGES[@]} ]]
}

# Debian's own kubectl (kubernetes-client), unpacked beside the system rather than installed:
# another package may own /usr/bin/kubectl (this kind of machine ships Google's). The lab
# tests check the admin.conf khactl hands out with this client.
readonly DEBIAN_KUBECTL_DIR=/opt/khalab/kubernetes-client
have_debian_kubectl() { [[ -x $DEBIAN_KUBECTL_DIR/usr/bin/kubectl ]]; }
unpack_debian_kubectl() {
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download -o APT::Sandbox::User=root kubernetes-client)
	mkdir -p "$DEBIAN_KUBECTL_DIR"
	dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$DEBIAN_KUBECTL_DIR"
	rm -rf "$tmp"
}

if have_packages && have_debian_kubectl; then
	echo "install-deps.sh: everything is installed"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Package scripts would start keepalived, haproxy, nginx, etcd and sshd on this machine
# (etcd on 127.0.0.1:2379 and sshd on :22 would then collide with the tests): forbid that
# while installing, as lab nodes do.
created_policy=""
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 0755 /usr/sbin/policy-rc.d
	created_policy=1
fi
cleanup() { [[ -z $created_policy ]] || rm -f /usr/sbin/policy-rc.d; }
trap cleanup EXIT

apt-get update
apt-get install -y --no-install-recommends "${PACKAGES[@]}"
have_debian_kubectl || unpack_debian_kubectl
