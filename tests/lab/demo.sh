#!/usr/bin/env bash
# Fresh machine → the default 5-node lab (3 control planes + 2 workers, index 1) and
# `khactl up` on it. Root. The lab stays up afterwards for exploring:
#   tests/lab/lab.sh status lab | exec lab cp1 -- … | ssh lab cp1 | upper lab cp1 | down lab
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."

tests/lab/install-deps.sh
# Both binaries: `up` installs the khagent built beside khactl on the control planes.
cargo build --workspace --bins
tests/lab/lab.sh down lab
# Nodes get the lab's stand-in control plane (tests/standin/, NOT Kubernetes) in place of
# the kubeadm, kubelet and container runtime packages that cannot be installed here.
tests/lab/lab.sh up lab --index 1 --control-planes 3 --workers 2 --setup tests/lab/with-standin.sh
# The cluster state lives in the lab's own dir: a recreated lab is a set of reinstalled
# machines with new host keys, which khactl rightly refuses against an old known_hosts.
target/debug/khactl up -i /var/lib/khalab/lab/inventory.yaml --state-dir /var/lib/khalab/lab/khactl
echo
echo "The lab is still up. Look around: tests/lab/lab.sh status lab; tear down: tests/lab/lab.sh down lab"
