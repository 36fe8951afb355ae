//! [`TlsConfig`]: the certificate and key [`serve_tls`](crate::server::serve_tls)
//! terminates TLS with (rustls, the ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`).
//!
//! The files are read once, at start: PEM, the certificate file holding the server's
//! certificate first and then any intermediates, the key file one private key (PKCS#8,
//! PKCS#1 or SEC1). Every error names the file at fault.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key section.
    #[error(
        "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refuses the pair: the key does not belong to the certificate, or either is
    /// of a kind it does not support.
    #[error("{} and {} cannot be used together: {source}", cert.display(), key.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

impl TlsError {
    /// The file at fault (the certificate file when the pair is refused).
    pub fn path(&self) -> &Path {
        match self {
            TlsError::Read { path, .. }
            | TlsError::Pem { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::NoKey { path } => path,
            TlsError::Rejected { cert, .. } => cert,
        }
    }
}

/// A server certificate with its key, ready to accept TLS connections. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads the PEM certificate chain at `cert` and the PEM private key at `key`, and
    /// checks that they belong together.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                path: cert.to_owned(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert.to_owned(),
            });
        }
        let key_pem = read(key)?;
        let private_key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(private_key) => private_key,
            Err(pem::Error::NoItemsFound) => {
                return Err(TlsError::NoKey {
                    path: key.to_owned(),
                });
            }
            Err(source) => {
                return Err(TlsError::Pem {
                    path: key.to_owned(),
                    source,
                });
            }
        };
        let rejected = |source| TlsError::Rejected {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(rejected)?;
        // The server speaks HTTP/1.1 only; saying so lets clients that offer h2 fall back.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor for the server loop.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = TlsConfig::from_pem_files(&missing, &missing).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert_eq!(e.path(), missing);
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let e = TlsConfig::from_pem_files(&text, &missing).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        assert!(e.to_string().contains("notes.txt"), "{e}");

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = TlsConfig::from_pem_files(&broken, &missing).unwrap_err();
        assert!(matches!(e, TlsError::Pem { .. }), "{e}");
        assert!(e.to_string().contains("broken.pem"), "{e}");

        let truncated = dir.path().join("truncated.pem");
        std::fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let e = TlsConfig::from_pem_files(&truncated, &missing).unwrap_err();
        assert!(matches!(e, TlsError::Pem { .. }), "{e}");

        // PEM that decodes, but is no certificate rustls can use: the key file is read
        // next, then the pair is refused.
        let cert = dir.path().join("cert.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = TlsConfig::from_pem_files(&cert, &text).unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        assert_eq!(e.path(), text);
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = TlsConfig::from_pem_files(&cert, &key).unwrap_err();
        assert!(matches!(e, TlsError::Rejected { .. }), "{e}");
        assert!(
            e.to_string().contains("cert.pem") && e.to_string().contains("key.pem"),
            "{e}"
        );
    }
}
