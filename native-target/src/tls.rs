//! HTTPS on the public listener, with rustls: TLS 1.2 and 1.3 only, ALPN
//! `h2` and `http/1.1`, a certificate chain and key from PEM files
//! (`TLS_CERT_FILE`, `TLS_KEY_FILE`; the key PKCS#8, PKCS#1 RSA or SEC1 EC).
//! The routes, limits and timeouts are the plain listener's: the handshake
//! only wraps the connection before hyper serves it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Why the certificate and key cannot be used.
#[derive(Debug)]
pub enum TlsError {
    /// A file cannot be read.
    Read(&'static str, PathBuf, std::io::Error),
    /// `TLS_CERT_FILE` holds no PEM certificate.
    NoCertificate(PathBuf),
    /// `TLS_KEY_FILE` holds no PEM private key the proxy can use.
    NoKey(PathBuf),
    /// rustls refused the pair (the key does not match the certificate, or
    /// a kind of key it does not support).
    Refused(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(var, path, error) => {
                write!(f, "{var} ({}): cannot read it: {error}", path.display())
            }
            Self::NoCertificate(path) => write!(
                f,
                "TLS_CERT_FILE ({}): no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
            Self::NoKey(path) => write!(
                f,
                "TLS_KEY_FILE ({}): no PEM private key in it (PKCS#8, RSA or EC)",
                path.display()
            ),
            Self::Refused(why) => {
                write!(
                    f,
                    "TLS_CERT_FILE and TLS_KEY_FILE do not make a usable pair: {why}"
                )
            }
        }
    }
}

impl std::error::Error for TlsError {}

/// The listener's TLS: what each accepted connection is handshaken with.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate chain and key.
    ///
    /// # Errors
    /// A file that cannot be read, holds nothing usable, or a pair rustls
    /// refuses; the message names the variable and the path, never the key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem =
            std::fs::read(cert).map_err(|e| TlsError::Read("TLS_CERT_FILE", cert.to_owned(), e))?;
        let key_pem =
            std::fs::read(key).map_err(|e| TlsError::Read("TLS_KEY_FILE", key.to_owned(), e))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_owned()));
        }
        let private =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(key.to_owned()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Refused(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| TlsError::Refused(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// What handshakes accepted connections.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}
