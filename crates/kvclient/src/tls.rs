//! TLS for clients of a server that serves them over TLS (kvserver's `--tls-cert-file`):
//! [`TlsConfig`], which [`RespServers::with_tls`](crate::RespServers::with_tls) and kvcli's
//! `--tls` use, and the stream a connection reads and writes.
//!
//! The server's certificate is checked against the CA given (`--cacert`, as redis-cli names
//! it) and against the name the client connects by: the server name set with
//! [`TlsConfig::server_name`], else the address's IP, so a certificate for a server reached
//! by address must carry that address (an IP subject alternative name).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// How to reach a TLS server: the CA its certificate must be signed by, optionally a client
/// certificate, and the name to check. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Trusts the CA certificates in `ca` (PEM); presents the certificate chain and key in
    /// `client` (PEM files), if given, to a server that asks for one.
    ///
    /// # Errors
    /// A message naming the file that cannot be read or used.
    pub fn new(ca: &Path, client: Option<(&Path, &Path)>) -> Result<TlsConfig, String> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
        };
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&read("CA certificate", ca)?) {
            let c = c.map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
            roots.add(c).map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("CA certificate {}: holds no certificate", ca.display()));
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(&read("certificate", cert)?)
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
                let key_der = PrivateKeyDer::from_pem_slice(&read("private key", key)?)
                    .map_err(|e| format!("private key {}: {e}", key.display()))?;
                builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                    format!("certificate {} and key {}: {e}", cert.display(), key.display())
                })?
            }
        };
        Ok(TlsConfig { config: Arc::new(config), server_name: None })
    }

    /// Checks the server's certificate for `name` (a DNS name or an IP address) rather than
    /// the address connected to (redis-cli's `--sni`).
    ///
    /// # Errors
    /// If `name` is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: &str) -> Result<TlsConfig, String> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| format!("server name {name:?}: {e}"))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// Runs the TLS handshake with the server at `addr` over `sock` (blocking, within the
    /// socket's timeouts) and returns the stream to read and write through.
    ///
    /// # Errors
    /// The socket's, or `InvalidData` if the handshake fails (the server's certificate is
    /// not trusted or not for this name, or the server does not speak TLS).
    pub fn connect(&self, sock: TcpStream, addr: SocketAddr) -> io::Result<Stream> {
        let name = self.server_name.clone().unwrap_or(ServerName::IpAddress(addr.ip().into()));
        let conn =
            ClientConnection::new(Arc::clone(&self.config), name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// The cryptography rustls uses: *ring*, which builds with a C compiler alone. rustls marks
/// it deprecated because it offers no post-quantum key exchange.
#[allow(deprecated)]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A connection to a server: plain, or TLS over the socket. Read and write it as the socket.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over the socket.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The socket under the stream (for its timeouts).
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
