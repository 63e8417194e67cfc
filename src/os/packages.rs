//! How each distribution installs what Kubernetes needs: the one line a preflight failure
//! tells the user to run on that node.

use crate::facts::HostFacts;

/// What a node may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// kubeadm, kubelet (and kubectl on control planes) of one minor release.
    Kubernetes,
    /// A container runtime listening on the CRI socket.
    ContainerRuntime,
    Curl,
    /// The etcd server of an external etcd node.
    Etcd,
}

/// The command that installs `need` on a node with these facts (`/etc/os-release` ID).
pub fn install_hint(facts: &HostFacts, need: Need, minor: u32) -> String {
    let family = match facts.os_id.as_str() {
        "debian" | "ubuntu" => Family::Deb,
        "rhel" | "centos" | "rocky" | "almalinux" | "fedora" | "ol" | "amzn" => Family::Rpm,
        "alpine" => Family::Apk,
        _ => Family::Other,
    };
    match (family, need) {
        (Family::Deb, Need::Kubernetes) => format!(
            "add the pkgs.k8s.io repository for v1.{minor} (https://pkgs.k8s.io/core:/stable:/v1.{minor}/deb/), \
             then `apt-get install -y kubelet kubeadm kubectl && apt-mark hold kubelet kubeadm kubectl`"
        ),
        (Family::Rpm, Need::Kubernetes) => format!(
            "add the pkgs.k8s.io repository for v1.{minor} (https://pkgs.k8s.io/core:/stable:/v1.{minor}/rpm/), \
             then `dnf install -y kubelet kubeadm kubectl --disableexcludes=kubernetes`"
        ),
        (Family::Apk, Need::Kubernetes) => {
            "`apk add kubelet kubeadm kubectl` (community repository), then `rc-update add kubelet`"
                .to_owned()
        }
        (Family::Deb, Need::ContainerRuntime) => "`apt-get install -y containerd` (or cri-o), \
             with `SystemdCgroup = true` in /etc/containerd/config.toml"
            .to_owned(),
        (Family::Rpm, Need::ContainerRuntime) => {
            "`dnf install -y containerd.io` (Docker's repository) or cri-o".to_owned()
        }
        (Family::Apk, Need::ContainerRuntime) => {
            "`apk add containerd && rc-update add containerd && rc-service containerd start`"
                .to_owned()
        }
        (Family::Deb, Need::Curl) => "`apt-get install -y curl`".to_owned(),
        (Family::Rpm, Need::Curl) => "`dnf install -y curl`".to_owned(),
        (Family::Apk, Need::Curl) => "`apk add curl`".to_owned(),
        (Family::Other, Need::Kubernetes) => format!(
            "install kubelet, kubeadm and kubectl v1.{minor} from https://pkgs.k8s.io or your \
             distribution"
        ),
        (Family::Other, Need::ContainerRuntime) => {
            "install a CRI runtime (containerd or cri-o) and start it".to_owned()
        }
        (Family::Other, Need::Curl) => "install curl".to_owned(),
        // Debian's package starts its own etcd.service at once; khactl's unit replaces it.
        (Family::Deb, Need::Etcd) => "`apt-get install -y etcd-server`".to_owned(),
        (Family::Rpm, Need::Etcd) => "`dnf install -y etcd`".to_owned(),
        (Family::Apk, Need::Etcd) => "`apk add etcd` (community repository)".to_owned(),
        (Family::Other, Need::Etcd) => "install etcd from your distribution, or place a \
             release binary and name it in the inventory's `etcd.binary`"
            .to_owned(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Family {
    Deb,
    Rpm,
    Apk,
    Other,
}
