//! The cluster PKI, generated locally with rcgen and laid out exactly as kubeadm
//! expects under `/etc/kubernetes/pki`, with the kubeconfigs kubeadm writes beside it
//! in `/etc/kubernetes`, so kubeadm finds every file and generates nothing. See
//! `docs/pki.md` for the certificate list and the distribution rule.
//!
//! Data flows: inventory → [`catalog`] (which certificates, with which names and
//! which kubeconfig server URLs; pure) → [`lifecycle`] (load from the state directory
//! or create, via [`issue`] for the crypto, [`inspect`] to judge what is on disk,
//! [`store`] for the files) → [`kubeconfig`] (client certificates wrapped as kubeadm
//! writes them) → [`ClusterPki`], from which phases take each node's [`PkiFile`]s and
//! the user's `admin.conf`.
//!
//! Nothing here touches the network or the terminal; progress is the returned
//! [`PkiReport`].

pub mod catalog;
mod error;
mod inspect;
mod issue;
mod kubeconfig;
mod lifecycle;
mod parallel;
mod store;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::inventory::{Inventory, Node, NodeName, Role};
pub use catalog::{Authority, Kubeconfig, control_plane_endpoint};
use catalog::{LeafSpec, Placement};
pub use error::PkiError;
pub use inspect::Reissue;
use lifecycle::Pair;

/// Where kubeadm looks for the PKI on a node.
pub const REMOTE_DIR: &str = "/etc/kubernetes/pki";

/// The files khactl up to this version placed on workers (`ca.crt`), which now make
/// `kubeadm join`'s preflight fail (`FileAvailable--etc-kubernetes-pki-ca.crt`).
///
/// A phase removes them from a worker **before its first join only**, that is while
/// `/etc/kubernetes/kubelet.conf` does not exist: on a worker that has joined,
/// kubeadm wrote `ca.crt` itself from discovery and the kubelet reads it.
pub fn stale_worker_paths() -> Vec<PathBuf> {
    vec![Path::new(REMOTE_DIR).join(format!("{}.crt", Authority::Kubernetes.base()))]
}

/// A PEM certificate's subject and end of validity.
pub fn subject_and_not_after(pem: &[u8]) -> Result<(String, OffsetDateTime), String> {
    let der = inspect::cert_der(pem)?;
    let cert = inspect::parse(&der)?;
    Ok((cert.subject().to_string(), inspect::not_after(&cert)))
}

/// The discovery pin (`sha256:<hex>` of the SubjectPublicKeyInfo) of the cluster CA stored
/// in `dir`, without loading or generating anything else; `None` when there is no CA yet.
pub fn stored_discovery_hash(dir: &Path) -> Result<Option<String>, PkiError> {
    let path = dir.join(format!("{}.crt", Authority::Kubernetes.base()));
    let Some(pem) = store::read_optional(&path)? else {
        return Ok(None);
    };
    let unusable = |reason: String| PkiError::Unusable {
        what: "the cluster CA certificate",
        path: path.clone(),
        reason,
    };
    let der = inspect::cert_der(&pem).map_err(unusable)?;
    let cert = inspect::parse(&der).map_err(unusable)?;
    Ok(Some(inspect::spki_pin(&cert)))
}

/// The pin of a CA made for the moment and never stored (ECDSA P-256): what a preview shows
/// before the cluster's own CA exists. It matches no cluster.
pub fn throwaway_discovery_hash() -> Result<String, PkiError> {
    let key = issue::generate_key(crate::inventory::KeyType::EcdsaP256)?;
    let pem = issue::self_signed_authority(
        Authority::Kubernetes,
        &key,
        time::OffsetDateTime::now_utc(),
        1,
    )?;
    let unusable = |reason: String| PkiError::Unusable {
        what: "a throwaway CA",
        path: PathBuf::new(),
        reason,
    };
    let der = inspect::cert_der(pem.as_bytes()).map_err(unusable)?;
    let cert = inspect::parse(&der).map_err(unusable)?;
    Ok(inspect::spki_pin(&cert))
}

/// The node `kubeadm init` runs on unless a phase chooses another: the first
/// control-plane node in inventory order. [`ClusterPki::files_for`] gives that node
/// `super-admin.conf`.
pub fn default_init_node(inventory: &Inventory) -> Option<&NodeName> {
    inventory.control_plane().next().map(|n| &n.name)
}

/// One file to place on a node.
#[derive(Clone, PartialEq, Eq)]
pub struct PkiFile {
    pub remote_path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// A private key: upload by stdin, never show contents or diffs.
    pub secret: bool,
}

impl fmt::Debug for PkiFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PkiFile")
            .field("remote_path", &self.remote_path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("secret", &self.secret)
            .field("len", &self.contents.len())
            .finish()
    }
}

/// When one certificate expires, for `khactl certs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    /// kubeadm's name (`apiserver`, `etcd/ca`, `admin.conf`), with the node for
    /// per-node certs; the workstation's is `admin.conf (workstation)`.
    pub name: String,
    pub node: Option<NodeName>,
    pub is_authority: bool,
    pub not_after: OffsetDateTime,
}

/// What `ensure` did with one piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Reused,
    Reissued(Reissue),
}

/// What `ensure` generated and what it reused, for progress output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkiReport {
    /// In order: the three CAs, `sa`, then every leaf.
    pub entries: Vec<(String, Outcome)>,
    /// Things the user should act on that are not errors (a CA expiring soon).
    pub warnings: Vec<String>,
}

impl PkiReport {
    fn push(&mut self, name: &str, outcome: Outcome) {
        self.entries.push((name.to_owned(), outcome));
    }

    /// Appends what a piece made elsewhere reported, and hands back its result.
    fn absorb<T>(
        &mut self,
        (result, own): (Result<T, PkiError>, PkiReport),
    ) -> Result<T, PkiError> {
        self.entries.extend(own.entries);
        self.warnings.extend(own.warnings);
        result
    }

    /// Whether anything on disk changed.
    pub fn changed(&self) -> bool {
        self.entries.iter().any(|(_, o)| *o != Outcome::Reused)
    }

    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, o)| o)
    }
}

impl fmt::Display for PkiReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count =
            |want: fn(&Outcome) -> bool| self.entries.iter().filter(|(_, o)| want(o)).count();
        let created = count(|o| *o == Outcome::Created);
        let reused = count(|o| *o == Outcome::Reused);
        let mut parts = Vec::new();
        if created > 0 {
            parts.push(format!("created {created}"));
        }
        let reissued: Vec<String> = self
            .entries
            .iter()
            .filter_map(|(n, o)| match o {
                Outcome::Reissued(why) => Some(format!("{n} ({why})")),
                _ => None,
            })
            .collect();
        if !reissued.is_empty() {
            parts.push(format!("re-issued {}", reissued.join(", ")));
        }
        if reused > 0 {
            parts.push(format!("reused {reused}"));
        }
        write!(f, "certificates and keys: {}", parts.join("; "))?;
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

/// The loaded PKI: every CA, the service-account keys and every leaf, as the bytes
/// on disk, and the kubeconfigs made from them. Debug output never shows key material.
pub struct ClusterPki {
    authorities: PerAuthority<Pair>,
    service_account: (Vec<u8>, Vec<u8>),
    leaves: Vec<(LeafSpec, Pair)>,
    /// One per kubeconfig leaf placed on nodes, in the order of `leaves`.
    kubeconfigs: Vec<PlacedKubeconfig>,
    /// The workstation's `admin.conf`: its leaf, and the file.
    workstation: (LeafSpec, Pair),
    workstation_admin_conf: Vec<u8>,
    discovery_hash: String,
    /// etcd runs on `role: etcd` nodes: control planes are only its clients.
    external_etcd: bool,
}

/// The etcd client certificate of health checks, on every node that runs a member.
const HEALTHCHECK_CLIENT: &str = "etcd/healthcheck-client";

/// A rendered kubeconfig for a node (or, for `super-admin.conf`, for the init node).
struct PlacedKubeconfig {
    kind: Kubeconfig,
    node: Option<NodeName>,
    contents: Vec<u8>,
}

impl fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPki")
            .field("authorities", &Authority::ALL)
            .field(
                "leaves",
                &self
                    .leaves
                    .iter()
                    .map(|(s, _)| s.display_name())
                    .collect::<Vec<_>>(),
            )
            .field("discovery_hash", &self.discovery_hash)
            .finish_non_exhaustive()
    }
}

/// Load the PKI from `dir` (the cluster's `<state>/pki`), creating what is missing
/// and re-issuing leaves that no longer match the inventory. CAs and the
/// service-account key are never replaced. Idempotent: a second call with the same
/// inventory changes no byte.
pub fn ensure(dir: &Path, inventory: &Inventory) -> Result<(ClusterPki, PkiReport), PkiError> {
    ensure_at(dir, inventory, OffsetDateTime::now_utc())
}

/// [`ensure`] as if the time were `now` (tests age certificates this way).
pub(crate) fn ensure_at(
    dir: &Path,
    inventory: &Inventory,
    now: OffsetDateTime,
) -> Result<(ClusterPki, PkiReport), PkiError> {
    // Inventory-derived problems surface before anything is written.
    let specs = catalog::leaf_specs(inventory)?;
    crate::state::private_dir(dir)?;
    let settings = &inventory.pki;
    let mut report = PkiReport::default();
    // The three CAs and the service-account key side by side, then every leaf side by side:
    // a leaf needs its CA, nothing else needs anything.
    let (authorities, service_account) = std::thread::scope(|scope| {
        let sa = scope.spawn(|| parallel::reported(|r| lifecycle::service_account(dir, r)));
        let cas = PerAuthority::build(|a| {
            parallel::reported(|r| lifecycle::authority(dir, a, settings, now, r))
        });
        (cas, parallel::join(sa))
    });
    let loaded = PerAuthority {
        kubernetes: report.absorb(authorities.kubernetes)?,
        front_proxy: report.absorb(authorities.front_proxy)?,
        etcd: report.absorb(authorities.etcd)?,
    };
    let service_account = report.absorb(service_account)?;
    let leaf = |spec: &LeafSpec, report: &mut PkiReport| {
        lifecycle::leaf(dir, spec, loaded.get(spec.authority), settings, now, report)
    };
    let workstation_spec = catalog::workstation_admin_spec(inventory);
    let (pairs, workstation) = std::thread::scope(|scope| {
        let workstation = scope.spawn(|| parallel::reported(|r| leaf(&workstation_spec, r)));
        let pairs = parallel::each(&specs, &mut report, leaf);
        (pairs, parallel::join(workstation))
    });
    let leaves: Vec<_> = specs.into_iter().zip(pairs?).collect();
    let workstation = (workstation_spec, report.absorb(workstation)?);

    let cluster = inventory.cluster.name.as_str();
    let ca_der = &loaded.kubernetes.der;
    let kubeconfigs = place_kubeconfigs(cluster, ca_der, &leaves)?;
    let workstation_admin_conf = render_kubeconfig(
        cluster,
        ca_der,
        Kubeconfig::Workstation,
        &catalog::workstation_url(inventory),
        &workstation.1,
    )?;

    let discovery_hash = loaded.kubernetes.spki_pin.clone();
    let authorities = PerAuthority {
        kubernetes: loaded.kubernetes.pair,
        front_proxy: loaded.front_proxy.pair,
        etcd: loaded.etcd.pair,
    };
    Ok((
        ClusterPki {
            authorities,
            service_account,
            leaves,
            kubeconfigs,
            workstation,
            workstation_admin_conf,
            discovery_hash,
            external_etcd: inventory.external_etcd(),
        },
        report,
    ))
}

/// The kubeconfig of every kubeconfig leaf, in order.
fn place_kubeconfigs(
    cluster: &str,
    ca_der: &[u8],
    leaves: &[(LeafSpec, Pair)],
) -> Result<Vec<PlacedKubeconfig>, PkiError> {
    let mut placed = Vec::new();
    for (spec, pair) in leaves {
        if let Placement::Kubeconfig { kind, server } = &spec.placement {
            placed.push(PlacedKubeconfig {
                kind: *kind,
                node: spec.node.clone(),
                contents: render_kubeconfig(cluster, ca_der, *kind, server, pair)?,
            });
        }
    }
    Ok(placed)
}

fn render_kubeconfig(
    cluster: &str,
    ca_der: &[u8],
    kind: Kubeconfig,
    server: &str,
    pair: &Pair,
) -> Result<Vec<u8>, PkiError> {
    kubeconfig::render(&kubeconfig::Contents {
        cluster,
        server,
        user: kind.user(),
        ca_der,
        cert_pem: &pair.cert,
        key_pem: &pair.key,
    })
}

/// One value per CA, so no lookup can miss.
struct PerAuthority<T> {
    kubernetes: T,
    front_proxy: T,
    etcd: T,
}

impl<T: Send> PerAuthority<T> {
    /// One value per CA, the three made side by side.
    fn build(make: impl Fn(Authority) -> T + Sync) -> PerAuthority<T> {
        std::thread::scope(|scope| {
            let front_proxy = scope.spawn(|| make(Authority::FrontProxy));
            let etcd = scope.spawn(|| make(Authority::Etcd));
            let kubernetes = make(Authority::Kubernetes);
            PerAuthority {
                kubernetes,
                front_proxy: parallel::join(front_proxy),
                etcd: parallel::join(etcd),
            }
        })
    }
}

impl<T> PerAuthority<T> {
    fn get(&self, authority: Authority) -> &T {
        match authority {
            Authority::Kubernetes => &self.kubernetes,
            Authority::FrontProxy => &self.front_proxy,
            Authority::Etcd => &self.etcd,
        }
    }

    fn iter(&self) -> impl Iterator<Item = (Authority, &T)> {
        Authority::ALL.into_iter().map(|a| (a, self.get(a)))
    }
}

impl ClusterPki {
    /// Exactly the files `node` needs, at kubeadm's paths with their modes.
    ///
    /// A control-plane node gets the three CAs with their keys (kubeadm signs the
    /// kubelet's and the kubeconfigs' client certs on every control-plane node, and a
    /// control-plane join without a certificate key needs them local), the
    /// service-account pair, the shared client certs, its own apiserver and etcd certs
    /// (never another node's), and its own `admin.conf`, `controller-manager.conf`
    /// and `scheduler.conf`. `init_node`, the node a phase runs `kubeadm init` on
    /// ([`default_init_node`] unless it chooses another), also gets
    /// `super-admin.conf`; `None` gives it to no node.
    ///
    /// With external etcd (`role: etcd` nodes) a control plane gets the etcd CA's
    /// certificate without its key and no etcd server, peer or healthcheck pair: it is
    /// only etcd's client (`apiserver-etcd-client`). An etcd node gets the etcd CA's
    /// certificate, its own `etcd/server` and `etcd/peer`, and `etcd/healthcheck-client`.
    ///
    /// A worker gets nothing: `kubeadm join` learns the CA through discovery, and its
    /// preflight fails if `ca.crt` is already there
    /// (`FileAvailable--etc-kubernetes-pki-ca.crt`). A control-plane node this PKI was
    /// not built for gets only the shared files; `ensure` with the same inventory
    /// always covers every control-plane node.
    pub fn files_for(&self, node: &Node, init_node: Option<&NodeName>) -> Vec<PkiFile> {
        let mut files = Vec::new();
        match node.role {
            // A load-balancer node checks the API servers against the cluster CA, which
            // the agent's install writes next to its config.
            Role::Worker | Role::LoadBalancer => return files,
            Role::Etcd => {
                self.push_etcd_member_files(&mut files, node);
                return files;
            }
            Role::ControlPlane => {}
        }
        let external = self.external_etcd;
        for (a, pair) in self.authorities.iter() {
            if external && a == Authority::Etcd {
                // The API server only verifies etcd's serving certs; it signs nothing.
                files.push(public(a.base(), ".crt", &pair.cert));
            } else {
                push_pair(&mut files, a.base(), pair);
            }
        }
        files.push(secret("sa", ".key", &self.service_account.0));
        files.push(public("sa", ".pub", &self.service_account.1));
        for (spec, pair) in &self.leaves {
            let shared_or_own = spec.node.as_ref().is_none_or(|n| *n == node.name);
            // With external etcd a control plane is only etcd's client: no health checks
            // of a local member.
            let for_a_member = spec.base == HEALTHCHECK_CLIENT && external;
            if spec.placement == Placement::PkiDir && shared_or_own && !for_a_member {
                push_pair(&mut files, spec.base, pair);
            }
        }
        for k in &self.kubeconfigs {
            let wanted = match k.kind {
                Kubeconfig::SuperAdmin => init_node == Some(&node.name),
                Kubeconfig::Workstation => false,
                Kubeconfig::Admin | Kubeconfig::ControllerManager | Kubeconfig::Scheduler => {
                    k.node.as_ref() == Some(&node.name)
                }
            };
            if wanted {
                files.push(PkiFile {
                    remote_path: Path::new(kubeconfig::REMOTE_DIR).join(k.kind.file_name()),
                    contents: k.contents.clone(),
                    mode: store::KEY_MODE,
                    secret: true,
                });
            }
        }
        files
    }

    /// An external etcd member's files: the etcd CA's certificate (not its key: nothing is
    /// signed on an etcd node), its own server and peer pairs, and the healthcheck client
    /// that `etcdctl` and khactl's checks use on the node.
    fn push_etcd_member_files(&self, files: &mut Vec<PkiFile>, node: &Node) {
        files.push(public(
            Authority::Etcd.base(),
            ".crt",
            &self.authorities.etcd.cert,
        ));
        for (spec, pair) in &self.leaves {
            let own = spec.node.as_ref() == Some(&node.name) && spec.authority == Authority::Etcd;
            if spec.placement == Placement::PkiDir && (own || spec.base == HEALTHCHECK_CLIENT) {
                push_pair(files, spec.base, pair);
            }
        }
    }

    /// The `admin.conf` for the user's workstation: `kubernetes-admin` in
    /// `kubeadm:cluster-admins`, with a key of its own that no node holds, and the VIP
    /// by address as its server (it need not resolve the VIP's DNS name). It contains
    /// a private key: store it with [`Self::save_workstation_admin_conf`], never print it.
    pub fn workstation_admin_conf(&self) -> &[u8] {
        &self.workstation_admin_conf
    }

    /// Writes [`Self::workstation_admin_conf`] to `path` (the state directory's
    /// `admin.conf`, say), mode 0600 from the first byte, atomically, with 0700
    /// parents. Leaves a file with the same bytes alone, so a re-run changes nothing.
    pub fn save_workstation_admin_conf(&self, path: &Path) -> Result<(), PkiError> {
        if store::read_optional(path)?.as_deref() == Some(self.workstation_admin_conf()) {
            return store::ensure_mode(path, store::KEY_MODE);
        }
        store::write_atomic(path, self.workstation_admin_conf(), store::KEY_MODE)
    }

    /// `sha256:<hex>` of the cluster CA's public key, for `kubeadm join
    /// --discovery-token-ca-cert-hash`.
    pub fn discovery_hash(&self) -> String {
        self.discovery_hash.clone()
    }

    /// The PEM certificate of a CA (for kubeconfigs and clients of etcd).
    pub fn authority_cert(&self, authority: Authority) -> &[u8] {
        &self.authorities.get(authority).cert
    }

    /// Every certificate with its expiry: the CAs first, then the leaves.
    pub fn expiries(&self) -> Vec<CertExpiry> {
        let cas = self.authorities.iter().map(|(a, p)| CertExpiry {
            name: a.base().to_owned(),
            node: None,
            is_authority: true,
            not_after: p.not_after,
        });
        let leaves = self.leaves.iter().chain([&self.workstation]);
        let leaves = leaves.map(|(s, p)| CertExpiry {
            name: s.name().to_owned(),
            node: s.node.clone(),
            is_authority: false,
            not_after: p.not_after,
        });
        cas.chain(leaves).collect()
    }
}

fn push_pair(files: &mut Vec<PkiFile>, base: &str, pair: &Pair) {
    files.push(public(base, ".crt", &pair.cert));
    files.push(secret(base, ".key", &pair.key));
}

fn public(base: &str, ext: &str, contents: &[u8]) -> PkiFile {
    PkiFile {
        remote_path: Path::new(REMOTE_DIR).join(format!("{base}{ext}")),
        contents: contents.to_vec(),
        mode: store::CERT_MODE,
        secret: false,
    }
}

fn secret(base: &str, ext: &str, contents: &[u8]) -> PkiFile {
    PkiFile {
        mode: store::KEY_MODE,
        secret: true,
        ..public(base, ext, contents)
    }
}
