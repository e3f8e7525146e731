//! HTTPS on the public listener, with rustls: TLS 1.2 and 1.3 only, ALPN
//! `h2` and `http/1.1`, a certificate chain and key from PEM files
//! (`TLS_CERT_FILE`, `TLS_KEY_FILE`; the key PKCS#8, PKCS#1 RSA or SEC1 EC).
//! The routes, limits and timeouts are the plain listener's: the handshake
//! only wraps the connection before hyper serves it.
//!
//! Certificates rotate without a restart ([`Tls::watch`]): on SIGHUP and when
//! either file changes, the pair is read again and, if it is usable, serves
//! every handshake from then on; connections already made keep theirs. A
//! broken pair (half-written by certbot, a key that does not match) keeps
//! the one in force, and the log says why.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// How often the files are read to see whether they changed.
const POLL: Duration = Duration::from_secs(1);

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
    /// `TLS_CLIENT_CA_FILE` holds no CA certificate rustls can use.
    ClientCa(PathBuf, String),
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
            Self::ClientCa(path, why) => write!(
                f,
                "TLS_CLIENT_CA_FILE ({}): no usable CA certificate in it: {why}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// The listener's TLS: what each accepted connection is handshaken with.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    provider: Arc<CryptoProvider>,
    cert: PathBuf,
    key: PathBuf,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The certificate and key in force, swapped whole on a reload.
struct Current(ArcSwap<CertifiedKey>);

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current(<certificate>)")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The pair in the files, checked to belong together.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
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
    CertifiedKey::from_der(chain, private, provider).map_err(|e| TlsError::Refused(e.to_string()))
}

/// Accepts client certificates signed by the CA(s) in `path`.
fn client_verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let pem = std::fs::read(path)
        .map_err(|e| TlsError::Read("TLS_CLIENT_CA_FILE", path.to_owned(), e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
        roots
            .add(cert)
            .map_err(|e| TlsError::ClientCa(path.to_owned(), e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::ClientCa(
            path.to_owned(),
            "no PEM certificate".to_owned(),
        ));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(provider),
    )
    .build()
    .map_err(|e| TlsError::ClientCa(path.to_owned(), e.to_string()))
}

/// What the files hold now, to tell whether they changed.
fn contents(cert: &Path, key: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    Some((std::fs::read(cert).ok()?, std::fs::read(key).ok()?))
}

impl Tls {
    /// Reads the certificate chain and key; with `client_ca`, every client
    /// must also present a certificate signed by that CA (mutual TLS, in
    /// addition to the token).
    ///
    /// # Errors
    /// A file that cannot be read, holds nothing usable, or a pair rustls
    /// refuses (a key that is not the certificate's); the message names the
    /// variable and the path, never the key.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(cert, key, &provider)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(pair)));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Refused(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, &provider)?),
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            provider,
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// How a failed handshake is counted (see the `tls_handshakes` metric).
    pub(crate) fn failure_kind(error: &std::io::Error) -> &'static str {
        use rustls::{AlertDescription as Alert, Error};
        let Some(error) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
            return "error";
        };
        match error {
            Error::PeerIncompatible(_) => "no_common_version",
            Error::NoCertificatesPresented | Error::InvalidCertificate(_) => "client_cert_refused",
            Error::AlertReceived(
                Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateUnknown
                | Alert::CertificateExpired
                | Alert::CertificateRevoked
                | Alert::UnsupportedCertificate
                | Alert::AccessDenied,
            ) => "bad_certificate",
            Error::AlertReceived(Alert::ProtocolVersion) => "no_common_version",
            _ => "error",
        }
    }

    /// What handshakes accepted connections.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again: a usable pair serves the handshakes from now
    /// on; otherwise the one in force stays.
    ///
    /// # Errors
    /// Why the files' pair was not put in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.cert, &self.key, &self.provider)?;
        self.current.0.store(Arc::new(pair));
        Ok(())
    }

    /// Reloads on SIGHUP and whenever either file's content changes (read
    /// every second), logging each outcome, until dropped.
    pub async fn watch(self) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut last = contents(&self.cert, &self.key);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup_signal = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup_signal = std::future::pending::<()>();
            let reason = tokio::select! {
                () = hangup_signal => "SIGHUP",
                _ = tick.tick() => {
                    let now = contents(&self.cert, &self.key);
                    if now.is_none() || now == last {
                        continue;
                    }
                    "the files changed"
                }
            };
            last = contents(&self.cert, &self.key);
            match self.reload() {
                Ok(()) => tracing::info!(reason, "TLS certificate reloaded"),
                Err(error) => tracing::warn!(
                    reason,
                    %error,
                    "TLS certificate not reloaded; the one in force stays"
                ),
            }
        }
    }
}

/// Writes a self-signed certificate for `hosts` (names, or IP addresses)
/// and its key as `cert.pem` and `key.pem` in `dir` (the key readable by
/// its owner only); refuses to overwrite either. Returns their paths.
///
/// # Errors
/// A host that cannot go in a certificate, or a file that cannot be
/// written (or already exists), as a message for the operator.
pub fn write_self_signed(hosts: &[String], dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err("--hosts: name at least one host name or IP address".to_owned());
    }
    let generated = rcgen::generate_simple_self_signed(hosts)
        .map_err(|e| format!("--hosts: cannot make a certificate for them: {e}"))?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    for path in [&cert, &key] {
        if path.exists() {
            return Err(format!(
                "{} exists; move it away or choose another --out",
                path.display()
            ));
        }
    }
    std::fs::write(&cert, generated.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
    Ok((cert, key))
}

/// Creates `path` readable and writable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
