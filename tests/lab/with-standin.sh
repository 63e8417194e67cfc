#!/usr/bin/env bash
# A `lab.sh up --setup` script: gives a node the lab's stand-in control plane
# (tests/standin/: kubeadm, kubelet, a CRI socket; NOT Kubernetes) as if the kubeadm, kubelet
# and container runtime packages were installed. Called as `with-standin.sh ROOT NODE ROLE`
# before the node boots. The emulated release is $KHALAB_K8S_VERSION (default v1.31.2, the
# version of `lab.sh inventory`).
set -euo pipefail
root=${1:?usage: with-standin.sh ROOT NODE ROLE}
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
exec "$here/../standin/install.sh" --root "$root" --version "${KHALAB_K8S_VERSION:-v1.31.2}"
