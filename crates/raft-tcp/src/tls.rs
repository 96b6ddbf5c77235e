//! Mutual TLS between peers for [`TcpTransport`](crate::TcpTransport): [`PeerTls`].
//!
//! Every node holds a certificate signed by the cluster's CA, and trusts only that CA. A
//! connection is set up in two steps: first TLS (TLS 1.2 or 1.3, with rustls), where each side
//! proves it holds a certificate the CA signed; then the transport's own hello inside the
//! encrypted stream, where the connecting node names itself and the node it expects.
//!
//! # Which certificate is which node
//!
//! A node's certificate names the node by a DNS subject alternative name,
//! `raftkv-node-<id>` ([`node_name`]), e.g. `raftkv-node-3` for node 3. A certificate may carry
//! other names too (a host name, an IP address): only this one is checked.
//!
//! * The connecting node checks that the certificate of the node it reached is valid for the
//!   name of the node it meant to reach (the usual TLS server-name check), before it sends
//!   anything.
//! * The accepting node checks that the certificate of the node that connected is valid for
//!   the name of the id its hello claims. A node that holds node 2's certificate cannot speak
//!   as node 1.
//!
//! # What this does not do
//!
//! There is no revocation list: to shut out a node whose key leaked, issue new certificates
//! from a new CA and roll every node over (`docs/operations.md`, "Security"). Certificates and
//! keys are read once, when the transport is configured; a restart picks up new ones.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use raft::NodeId;

/// The DNS name a node's certificate must carry: `raftkv-node-<id>`.
pub fn node_name(id: NodeId) -> String {
    format!("raftkv-node-{id}")
}

/// Why a [`PeerTls`] could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the expected kind.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file: "certificate", "private key" or "trusted CA".
        what: &'static str,
        /// Its path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The certificates, key or CA do not make a valid configuration (a key that does not
    /// match the certificate, a CA that is not a CA …).
    #[error("invalid TLS setup: {0}")]
    Setup(String),
}

/// The TLS side of a node: its certificate and key, and the CA it trusts for peers. Build it
/// with [`PeerTls::from_pem_files`] (or [`PeerTls::from_pem`]) and put it in
/// [`TcpConfig::tls`](crate::TcpConfig::tls). Cheap to clone.
#[derive(Clone)]
pub struct PeerTls {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls { .. }")
    }
}

/// Two configurations are equal when they are the same one (clones of each other).
impl PartialEq for PeerTls {
    fn eq(&self, other: &PeerTls) -> bool {
        Arc::ptr_eq(&self.server, &other.server) && Arc::ptr_eq(&self.client, &other.client)
    }
}

impl Eq for PeerTls {}

impl PeerTls {
    /// Reads the node's certificate chain (`cert`, PEM, the node's certificate first), its
    /// private key (`key`, PEM: PKCS#8, PKCS#1 or SEC1) and the CA certificates peers must be
    /// signed by (`ca`, PEM), as etcd's `--peer-cert-file`, `--peer-key-file` and
    /// `--peer-trusted-ca-file`.
    ///
    /// # Errors
    /// [`TlsError::File`] naming a file that cannot be read or holds nothing usable;
    /// [`TlsError::Setup`] if they do not fit together.
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|e| TlsError::File {
                what,
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        let (cert_pem, key_pem, ca_pem) =
            (read("certificate", cert)?, read("private key", key)?, read("trusted CA", ca)?);
        PeerTls::build(
            &cert_pem,
            &key_pem,
            &ca_pem,
            [cert, key, ca].map(|p| p.display().to_string()),
        )
    }

    /// As [`from_pem_files`](Self::from_pem_files), from the files' contents.
    ///
    /// # Errors
    /// As [`from_pem_files`](Self::from_pem_files).
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<PeerTls, TlsError> {
        PeerTls::build(cert, key, ca, ["(certificate)", "(key)", "(CA)"].map(String::from))
    }

    fn build(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        [cert_path, key_path, ca_path]: [String; 3],
    ) -> Result<PeerTls, TlsError> {
        let file_error = |what, path: &String, reason: String| TlsError::File {
            what,
            path: path.clone(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| file_error("certificate", &cert_path, e.to_string()))?;
        if certs.is_empty() {
            let reason = "holds no PEM certificate".to_string();
            return Err(file_error("certificate", &cert_path, reason));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| file_error("private key", &key_path, e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            let ca = ca.map_err(|e| file_error("trusted CA", &ca_path, e.to_string()))?;
            roots.add(ca).map_err(|e| file_error("trusted CA", &ca_path, e.to_string()))?;
        }
        if roots.is_empty() {
            let reason = "holds no PEM certificate".to_string();
            return Err(file_error("trusted CA", &ca_path, reason));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(crypto_provider());
        let setup = |e: rustls::Error| TlsError::Setup(e.to_string());

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(setup)?;
        // Peer connections carry data one way: the connecting side never reads after the
        // handshake, so nothing may be sent to it unasked (TLS 1.3 session tickets would be).
        server.send_tls13_tickets = 0;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(setup)?;
        Ok(PeerTls { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// The cryptography rustls uses: *ring*, which builds with a C compiler alone (aws-lc-rs, the
/// default, needs more tools and builds far slower). rustls marks it deprecated because it
/// offers no post-quantum key exchange; peers here use classical X25519/ECDHE.
#[allow(deprecated)]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The server name a connecting node expects of node `id`.
pub(crate) fn server_name(id: NodeId) -> ServerName<'static> {
    ServerName::try_from(node_name(id)).expect("raftkv-node-<id> is a valid DNS name")
}

/// Whether `cert` (a peer's end-entity certificate, already verified against the CA) names
/// node `id`; the reason if not.
pub(crate) fn check_names(cert: &CertificateDer<'_>, id: NodeId) -> Result<(), String> {
    let parsed = ParsedCertificate::try_from(cert).map_err(|e| e.to_string())?;
    rustls::client::verify_server_name(&parsed, &server_name(id)).map_err(|e| match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => format!("its certificate is not for {} (it names {presented:?})", node_name(id)),
        e => e.to_string(),
    })
}
