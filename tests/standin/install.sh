#!/usr/bin/env bash
# Installs the khalab stand-in control plane (NOT Kubernetes; see README.md) into a node's
# root directory, laid out as the Kubernetes packages lay out theirs:
#   /usr/bin/kubeadm, /usr/bin/kubelet               -> /usr/lib/khalab-standin/bin/...
#   /lib/systemd/system/kubelet.service + /etc/systemd/system/kubelet.service.d/10-kubeadm.conf
#   /lib/systemd/system/khalab-cri-standin.service   (a socket at containerd's path)
#   both enabled (multi-user.target.wants), as package scripts do; /etc/kubernetes/manifests
# The emulated Kubernetes version is fixed here, in /usr/lib/khalab-standin/VERSION.
# Needs on the machine (the node's lower layer): python3, python3-cryptography, python3-yaml,
# etcd-server. Idempotent: a second run replaces the programs and keeps node state.
set -euo pipefail

usage() {
	echo "usage: install.sh --root DIR --version vX.Y.Z (1.29 to 1.37)" >&2
	exit 2
}

root="" ver=""
while (($#)); do
	case $1 in
	--root) root=${2:-}; shift 2 || usage ;;
	--root=*) root=${1#--root=}; shift ;;
	--version) ver=${2:-}; shift 2 || usage ;;
	--version=*) ver=${1#--version=}; shift ;;
	*) usage ;;
	esac
done
[[ -n $root && -n $ver ]] || usage
[[ $ver =~ ^v1\.(29|3[0-7])\.[0-9]+$ ]] || {
	echo "install.sh: version $ver is not one the stand-in emulates (v1.29.x to v1.37.x)" >&2
	exit 2
}
[[ -d $root ]] || {
	echo "install.sh: root $root is not a directory" >&2
	exit 2
}

src=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
dest="$root/usr/lib/khalab-standin"
tmp="$dest.new.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
cp -r "$src/bin" "$src/README.md" "$tmp/"
(cd "$src" && find khalab_standin -name '*.py' -o -name '*.json') | while read -r f; do
	mkdir -p "$tmp/$(dirname "$f")"
	cp "$src/$f" "$tmp/$f"
done
echo "$ver" >"$tmp/VERSION"
rm -rf "$dest"
mv "$tmp" "$dest"

mkdir -p "$root/usr/bin"
ln -sfn ../lib/khalab-standin/bin/kubeadm "$root/usr/bin/kubeadm"
ln -sfn ../lib/khalab-standin/bin/kubelet "$root/usr/bin/kubelet"

# Debian 12 merges /lib into /usr/lib (/lib is a symlink). In a node's overlay upper dir a real
# "$root/lib" directory would hide the host's /lib symlink and break the node: write the units
# where /lib/systemd/system really is.
libdir=lib
if [[ -L $root/lib || (! -e $root/lib && -L /lib) ]]; then
	libdir=usr/lib
fi
units="$root/$libdir/systemd/system"
mkdir -p "$units" "$root/etc/systemd/system/kubelet.service.d" "$root/etc/systemd/system/multi-user.target.wants"
install -m 0644 "$src/systemd/kubelet.service" "$units/kubelet.service"
install -m 0644 "$src/systemd/khalab-cri-standin.service" "$units/khalab-cri-standin.service"
install -m 0644 "$src/systemd/10-kubeadm.conf" "$root/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
for unit in kubelet.service khalab-cri-standin.service; do
	ln -sfn "/lib/systemd/system/$unit" "$root/etc/systemd/system/multi-user.target.wants/$unit"
done
mkdir -p "$root/etc/kubernetes/manifests" "$root/var/lib/kubelet"
echo "install.sh: khalab stand-in control plane $ver installed in $root"
