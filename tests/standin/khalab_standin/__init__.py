"""khalab stand-in control plane: NOT Kubernetes.

A test-only imitation of kubeadm, kubelet, kube-apiserver, kube-controller-manager,
kube-scheduler and a CRI socket, built for khactl's lab. It reproduces the kubeadm contract
(`/work/shared/KUBEADM-CONTRACT.md`, section 7) with real parts where they matter: real etcd,
real TLS with the certificates it is given, real HS256 JWS and real SPKI pins.

Modules:
- `env`: where files live (root redirection for tests), the emulated version, knobs, argv log.
- `version`: what changes between the emulated Kubernetes minors.
- `out`: kubeadm's output conventions (klog warnings, error text, exit codes).
- `yamlio`, `x509util`, `kubeconfig`, `jws`, `tokens`: formats.
- `etcdclient`, `kubeclient`: clients of etcd's JSON gateway and of the API server.
- `kubeadm/`: the kubeadm CLI; `apiserver/`, `kubelet`, `controllers`, `cri`: the daemons.
"""
