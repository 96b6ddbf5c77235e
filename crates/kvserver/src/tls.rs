//! TLS on the client port: [`ClientTls`] (the server's certificate, and optionally the CA
//! client certificates must come from), and the stream a connection's two threads share.
//!
//! A Redis connection has a reader thread and a reply writer thread (see [`crate::redis`]).
//! Over TLS both go through one rustls connection, behind a lock, but neither holds that lock
//! while it waits on the socket: the reader takes bytes off the socket unlocked, then decrypts
//! them under the lock; the writer encrypts under the lock, then writes the records out with
//! the lock released. A second lock orders the socket writes (the writer's replies, and the
//! handshake messages and alerts the reader's side produces), taken before the first is
//! released, so records reach the socket in the order rustls numbered them.
//!
//! As with Redis (`tls-auth-clients`), client certificates are optional when a CA is given
//! (checked if presented) and may be required; without a CA none is asked for.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// Whether clients must present a certificate (Redis's `tls-auth-clients`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    No,
    /// A client may present one; if it does, it must be signed by the CA.
    Optional,
    /// Every client must present a certificate signed by the CA.
    Required,
}

/// The TLS settings of the client port. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls { .. }")
    }
}

impl ClientTls {
    /// Reads the server's certificate chain and key (PEM), and the CA client certificates
    /// must be signed by (PEM), as Redis's `--tls-cert-file`, `--tls-key-file` and
    /// `--tls-ca-cert-file`. `auth` other than [`ClientAuth::No`] needs `ca`.
    ///
    /// # Errors
    /// A message naming the file that cannot be read or used.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        ca: Option<&Path>,
        auth: ClientAuth,
    ) -> Result<ClientTls, String> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
        };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read("certificate", cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!("certificate {}: holds no PEM certificate", cert.display()));
        }
        let key_der = PrivateKeyDer::from_pem_slice(&read("private key", key)?)
            .map_err(|e| format!("private key {}: {e}", key.display()))?;
        let provider = Arc::new(crypto_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match (ca, auth) {
            (_, ClientAuth::No) => builder.with_no_client_auth(),
            (None, _) => return Err("client certificates need a CA (--tls-ca-cert-file)".into()),
            (Some(ca), auth) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&read("CA certificate", ca)?) {
                    let c = c.map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
                    roots.add(c).map_err(|e| format!("CA certificate {}: {e}", ca.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("CA certificate {}: holds no certificate", ca.display()));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
            }
        };
        let config = builder.with_single_cert(certs, key_der).map_err(|e| {
            format!("certificate {} and key {}: {e}", cert.display(), key.display())
        })?;
        Ok(ClientTls { config: Arc::new(config) })
    }
}

/// The cryptography rustls uses: *ring* (see `raft_tcp::tls` for why).
#[allow(deprecated)]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A client connection's socket, plain or TLS, shared by its reader, its reply writer and the
/// server's `stop` (which shuts it down).
pub(crate) struct ClientStream {
    sock: TcpStream,
    tls: Option<TlsState>,
}

struct TlsState {
    session: Mutex<Session>,
    /// Held while writing to the socket, taken before `session` is released.
    send: Mutex<()>,
}

struct Session {
    conn: ServerConnection,
    /// Bytes read off the socket that rustls has not taken yet.
    pending: Vec<u8>,
}

/// Bytes taken off the socket per read.
const RAW_CHUNK: usize = 16 << 10;

impl ClientStream {
    /// `sock`, with TLS (the server side of a handshake yet to run) if `tls` is given.
    pub(crate) fn new(sock: TcpStream, tls: Option<&ClientTls>) -> io::Result<ClientStream> {
        let tls = match tls {
            None => None,
            Some(t) => {
                let conn =
                    ServerConnection::new(Arc::clone(&t.config)).map_err(io::Error::other)?;
                let session = Mutex::new(Session { conn, pending: Vec::new() });
                Some(TlsState { session, send: Mutex::new(()) })
            }
        };
        Ok(ClientStream { sock, tls })
    }

    /// Reads what the client sent (decrypted); 0 at the end of the stream. Errors as the
    /// socket's (a read timeout is `WouldBlock` or `TimedOut`), or `InvalidData` for a TLS
    /// failure (after the alert is sent).
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else { return (&self.sock).read(buf) };
        // On the stack: no allocation per read on the connection's hot path.
        let mut raw = [0u8; RAW_CHUNK];
        loop {
            let mut session = tls.session.lock();
            match session.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !session.pending.is_empty() {
                let Session { conn, pending } = &mut *session;
                let taken = conn.read_tls(&mut &pending[..])?;
                pending.drain(..taken);
                let processed = conn.process_new_packets();
                // Handshake messages to send, or the alert of a failure.
                self.send_records(tls, session)?;
                if let Err(e) = processed {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                if taken == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS input stuck"));
                }
                continue;
            }
            drop(session);
            let n = (&self.sock).read(&mut raw)?;
            if n == 0 {
                return Ok(0);
            }
            tls.session.lock().pending.extend_from_slice(&raw[..n]);
        }
    }

    /// Writes `data` to the client (encrypted), all of it.
    pub(crate) fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        let Some(tls) = &self.tls else { return (&self.sock).write_all(data) };
        while !data.is_empty() {
            let mut session = tls.session.lock();
            let n = session.conn.writer().write(data)?;
            data = &data[n..];
            let sent = self.send_records(tls, session)?;
            if n == 0 && !sent {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
        }
        Ok(())
    }

    /// Writes out the TLS records rustls has ready, releasing `session` before the socket
    /// write but after taking the send lock; whether there were any.
    fn send_records(
        &self,
        tls: &TlsState,
        mut session: parking_lot::MutexGuard<'_, Session>,
    ) -> io::Result<bool> {
        if !session.conn.wants_write() {
            return Ok(false);
        }
        let mut out = Vec::new();
        while session.conn.wants_write() {
            session.conn.write_tls(&mut out)?;
        }
        let _send = tls.send.lock();
        drop(session);
        (&self.sock).write_all(&out)?;
        Ok(true)
    }

    /// Shuts the socket down, waking a thread blocked on it.
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.shutdown(how)
    }
}
