//! What can go wrong while generating or reloading the PKI. Every message names the
//! file (or inventory field) at fault and says what to do about it.

use std::io;
use std::path::PathBuf;

use ipnet::IpNet;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot prepare the PKI directory: {0}")]
    Dir(#[from] crate::state::StateError),

    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A CA (or the service-account key pair) with one half on disk: generating a new
    /// one would silently break every certificate and token the old one signed.
    #[error(
        "{what}: {present} exists but {missing} does not; khactl never overwrites it. \
         Restore {missing} from your backup, or, if no cluster ever used it, \
         delete {present} so a new one is generated"
    )]
    HalfPresent {
        what: &'static str,
        present: PathBuf,
        missing: PathBuf,
    },

    #[error(
        "{path} is not usable as {what}: {reason}. khactl never overwrites it: restore \
         the file from your backup, or move the PKI directory away to start a new PKI"
    )]
    Unusable {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "the key {key} does not belong to the certificate {cert}: restore the matching \
         pair from your backup"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    #[error(
        "networking.serviceSubnet {subnet} has no room for the first service IP \
         (network address + 1), which the API server certificate must name: use a \
         larger subnet, such as 10.96.0.0/12"
    )]
    ServiceSubnetTooSmall { subnet: IpNet },

    #[error("cannot write the kubeconfig of {user}: {source}")]
    Kubeconfig {
        user: String,
        #[source]
        source: serde_yaml_ng::Error,
    },

    #[error("cannot {what}: {source}")]
    Crypto {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

impl PkiError {
    pub(crate) fn crypto(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
        let what = what.into();
        move |source| PkiError::Crypto { what, source }
    }
}
