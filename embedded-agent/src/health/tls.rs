//! HTTPS health checks: `GET /readyz` over TLS, verified against the cluster CA, with an
//! optional client certificate. The TLS client config is built once from the files read during
//! config validation, so a bad CA or key is a config error (exit 2), not a failing check.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::CheckError;
use crate::config::{HealthConfig, Material, Problem};

/// Everything an HTTPS check needs besides the address.
#[derive(Clone)]
pub struct TlsSettings {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    path: String,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn problem(field: &str, message: String) -> Problem {
    Problem {
        field: field.into(),
        message,
    }
}

impl TlsSettings {
    pub fn new(health: &HealthConfig, material: &Material) -> Result<TlsSettings, Problem> {
        let ca_pem = material.ca_pem.as_deref().unwrap_or_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| problem("health.ca_file", format!("bad PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| problem("health.ca_file", format!("not a usable CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(problem(
                "health.ca_file",
                "holds no CERTIFICATE block".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| problem("health", format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots);
        let config = match (&material.client_cert_pem, &material.client_key_pem) {
            (Some(cert_pem), Some(key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| problem("health.client_cert_file", format!("bad PEM: {e}")))?;
                if chain.is_empty() {
                    return Err(problem(
                        "health.client_cert_file",
                        "holds no CERTIFICATE block".into(),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
                    problem(
                        "health.client_key_file",
                        format!("no usable private key: {e}"),
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    problem(
                        "health.client_key_file",
                        format!("does not fit the certificate: {e}"),
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        let server_name = match &health.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| {
                problem(
                    "health.server_name",
                    format!("`{name}` is not a DNS name or IP: {e}"),
                )
            })?),
            None => None,
        };
        Ok(TlsSettings {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            path: health.path.clone(),
        })
    }

    /// One check over `tcp`, connected to `address`: TLS handshake verified against the CA,
    /// `GET path`, status 200 or it failed.
    pub async fn check(&self, tcp: TcpStream, address: SocketAddr) -> Result<(), CheckError> {
        let name = self
            .server_name
            .clone()
            .unwrap_or(ServerName::IpAddress(address.ip().into()));
        let host = match &name {
            ServerName::DnsName(d) => d.as_ref().to_owned(),
            _ => address.ip().to_string(),
        };
        let mut tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| CheckError::io("TLS", &e))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: khagent\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.path
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| CheckError::io("send", &e))?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = tls
                .read(&mut buf)
                .await
                .map_err(|e| CheckError::io("read", &e))?;
            if n == 0 || head.len() > 4096 {
                return Err(CheckError::Backend(
                    "no HTTP status line in the answer".into(),
                ));
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let line = line.lines().next().unwrap_or_default();
        let code = line.split_whitespace().nth(1).unwrap_or_default();
        if line.starts_with("HTTP/1.") && code == "200" {
            Ok(())
        } else {
            Err(CheckError::Backend(format!(
                "{} answered `{line}`",
                self.path
            )))
        }
    }
}
