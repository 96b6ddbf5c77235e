//! How a request is written into the Raft log: a format version, then the request.
//!
//! ```text
//! command := version:u8 postcard(Request)        -- version = 1
//! ```
//!
//! Every replica applies every committed entry, so the log must never hold an entry a replica
//! cannot apply. The leader checks each proposal with [`check`] (raft's
//! [`ProposalCheck`](raft::ProposalCheck)), whether the service proposed it or a follower
//! forwarded it; an entry that still does not decode at apply time (written by a faulty or
//! forged leader) is skipped by every replica alike, at the same index, and never stops one.
//! The version byte lets a later release change the request format and still read the
//! entries this one wrote.

use bytes::Bytes;
use kvclient::proto::Request;

/// The format this release writes, and the only one it reads.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes `request` as a log entry.
pub fn encode(request: &Request) -> Bytes {
    let mut out = vec![FORMAT_VERSION];
    // Encoding into a Vec fails only if serialization itself does, which the derive rules out.
    out = postcard::to_extend(request, out).expect("a request always encodes");
    out.into()
}

/// Decodes a log entry written by [`encode`].
///
/// # Errors
/// Why the entry is not a request of this format, in words.
pub fn decode(entry: &[u8]) -> Result<Request, String> {
    match entry.split_first() {
        Some((&FORMAT_VERSION, rest)) => match postcard::take_from_bytes::<Request>(rest) {
            Ok((request, [])) => Ok(request),
            Ok((_, trailing)) => Err(format!("{} bytes after the request", trailing.len())),
            Err(e) => Err(format!("not a request: {e}")),
        },
        Some((version, _)) => Err(format!(
            "command format {version} is unknown (this release reads {FORMAT_VERSION})"
        )),
        None => Err("an empty command".into()),
    }
}

/// The check a leader runs on every proposal: it must decode.
pub fn check() -> raft::ProposalCheck {
    raft::ProposalCheck::new(|entry| decode(entry).map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvclient::proto::Op;

    fn request() -> Request {
        Request {
            client_id: 7,
            seq: 3,
            op: Op::Put { key: "k".into(), value: "v".into() },
            ordered: true,
        }
    }

    #[test]
    fn a_request_round_trips_with_its_version_first() {
        let entry = encode(&request());
        assert_eq!(entry[0], FORMAT_VERSION);
        assert_eq!(decode(&entry), Ok(request()));
        assert!(check().check(&entry).is_ok());
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        let entry = encode(&request());
        let mut other_version = entry.to_vec();
        other_version[0] = 2;
        assert!(decode(&other_version).unwrap_err().contains("format 2 is unknown"));
        assert!(decode(&[]).unwrap_err().contains("empty"));
        assert!(decode(&[0xff]).unwrap_err().contains("unknown"));
        assert!(decode(&entry[..entry.len() - 1]).unwrap_err().contains("not a request"));
        let mut trailing = entry.to_vec();
        trailing.push(0);
        assert!(decode(&trailing).unwrap_err().contains("after the request"));
        assert!(check().check(&[FORMAT_VERSION, 0xff]).is_err());
    }
}
