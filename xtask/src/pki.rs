//! Throw-away certificates for `cargo xtask cluster`: a CA and one certificate per node, made
//! with rcgen (no `openssl` needed), kept in the cluster directory so a restarted cluster reuses
//! them.
//!
//! Layout of `<cluster dir>/tls/`: `ca.pem` and `ca-key.pem` (the CA), `node<i>.pem` and
//! `node<i>-key.pem` (node `i`'s certificate, for the DNS names `raftkv-node-<i>` and
//! `localhost` and the address 127.0.0.1, and its key). Keys are written readable by the owner
//! only. Good for a local cluster; docs/operations.md ("Security") says how to make real ones.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The files one node's TLS flags name.
pub(crate) struct NodeFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

impl NodeFiles {
    /// kvserver's client TLS flags for these files (the node's certificate serves clients too;
    /// it names localhost and 127.0.0.1).
    pub(crate) fn client_flags(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec!["--tls-cert-file".into(), path(&self.cert), "--tls-key-file".into(), path(&self.key)]
    }

    /// kvserver's peer TLS flags for these files.
    pub(crate) fn peer_flags(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--peer-cert-file".into(),
            path(&self.cert),
            "--peer-key-file".into(),
            path(&self.key),
            "--peer-trusted-ca-file".into(),
            path(&self.ca),
        ]
    }
}

/// The files of nodes `1..=nodes` under `dir/tls`, made (with a new CA) unless they all exist.
pub(crate) fn ensure(dir: &Path, nodes: u16) -> Result<Vec<NodeFiles>, String> {
    let tls = dir.join("tls");
    let files: Vec<NodeFiles> = (1..=nodes)
        .map(|id| NodeFiles {
            cert: tls.join(format!("node{id}.pem")),
            key: tls.join(format!("node{id}-key.pem")),
            ca: tls.join("ca.pem"),
        })
        .collect();
    if files.iter().all(|f| f.cert.is_file() && f.key.is_file() && f.ca.is_file()) {
        return Ok(files);
    }
    fs::create_dir_all(&tls).map_err(|e| format!("cannot create {}: {e}", tls.display()))?;
    let rc = |e: rcgen::Error| format!("cannot make a certificate: {e}");
    let ca_key = rcgen::KeyPair::generate().map_err(rc)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "raftkv local cluster CA");
    let ca = ca_params.self_signed(&ca_key).map_err(rc)?;
    write(&tls.join("ca.pem"), &ca.pem(), false)?;
    write(&tls.join("ca-key.pem"), &ca_key.serialize_pem(), true)?;
    for (id, f) in (1..).zip(&files) {
        let key = rcgen::KeyPair::generate().map_err(rc)?;
        let names = vec![format!("raftkv-node-{id}"), "localhost".into(), "127.0.0.1".into()];
        let mut params = rcgen::CertificateParams::new(names).map_err(rc)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("raftkv-node-{id}"));
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(rc)?;
        write(&f.cert, &cert.pem(), false)?;
        write(&f.key, &key.serialize_pem(), true)?;
    }
    Ok(files)
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The cluster id kept in `dir/cluster-id`, made at random if missing.
pub(crate) fn cluster_id(dir: &Path) -> Result<String, String> {
    let path = dir.join("cluster-id");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 8];
            fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
                .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
            let id = format!("{:016x}", u64::from_le_bytes(bytes).max(1));
            write(&path, &format!("{id}\n"), false)?;
            Ok(id)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("xtask-pki-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let files = ensure(&dir, 2).unwrap();
        assert_eq!(files.len(), 2);
        let first = fs::read_to_string(&files[1].cert).unwrap();
        assert!(first.starts_with("-----BEGIN CERTIFICATE-----"), "{first}");
        let mode = fs::metadata(&files[1].key).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // A second run reuses them.
        let again = ensure(&dir, 2).unwrap();
        assert_eq!(fs::read_to_string(&again[1].cert).unwrap(), first);
        let id = cluster_id(&dir).unwrap();
        assert_eq!(id.len(), 16);
        assert_eq!(cluster_id(&dir).unwrap(), id);
        fs::remove_dir_all(&dir).unwrap();
    }
}
