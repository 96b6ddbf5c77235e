//! How a request is written into the Raft log: a format version, the leader's clock, then the
//! request.
//!
//! ```text
//! command := 2 time_ms:u64le postcard(Request)      -- version 2, written by this release
//!          | 1 postcard(Request)                    -- version 1, still read
//! ```
//!
//! Every replica applies every committed entry, so the log must never hold an entry a replica
//! cannot apply. The leader checks each proposal with [`check`] (raft's
//! [`ProposalCheck`](raft::ProposalCheck)), whether the service proposed it or a follower
//! forwarded it; an entry that still does not decode at apply time (written by a faulty or
//! forged leader) is skipped by every replica alike, at the same index, and never stops one.
//! The version byte lets a later release change the request format and still read the
//! entries this one wrote.
//!
//! **Leader-stamped time** (Raft thesis §6.3). A server proposes an entry with `time_ms` 0;
//! the leader, as it appends the entry (proposed there or forwarded by a follower), writes its
//! wall clock (milliseconds since the Unix epoch) into it, and, for an
//! [`Op::Register`], the new session's random id and the leader's session TTL. The state
//! machine's clock is the largest stamp applied so far, so it never runs backwards even when
//! a new leader's clock is behind the old one's, and it is the same on every replica at every
//! index: session expiry decided from it is deterministic. Version 1 entries carry no stamp
//! and leave the clock as it was.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kvproto::proto::{Op, Request};

/// The format this release writes.
pub const FORMAT_VERSION: u8 = 2;

/// The previous format (no stamp), still read.
pub const FORMAT_V1: u8 = 1;

/// The bytes before the request in a version 2 entry: the version and the stamp.
const HEADER: usize = 9;

/// A decoded log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The leader's clock when it appended the entry (ms since the Unix epoch); `None` for a
    /// version 1 entry, which has none.
    pub time_ms: Option<u64>,
    /// The request.
    pub request: Request,
}

fn encode_with(version: u8, time_ms: Option<u64>, request: &Request) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.push(version);
    if let Some(time) = time_ms {
        out.extend_from_slice(&time.to_le_bytes());
    }
    // Encoding into a Vec fails only if serialization itself does, which the derive rules out.
    out = postcard::to_extend(request, out).expect("a request always encodes");
    out.into()
}

/// Encodes `request` as a log entry to propose: version 2, not stamped yet (the leader stamps
/// it as it appends it).
pub fn encode(request: &Request) -> Bytes {
    encode_with(FORMAT_VERSION, Some(0), request)
}

/// Encodes `request` as a version 2 entry stamped with `time_ms`, as a leader would append it.
pub fn encode_stamped(request: &Request, time_ms: u64) -> Bytes {
    encode_with(FORMAT_VERSION, Some(time_ms), request)
}

/// Encodes `request` in the version 1 format (as the previous release wrote it).
pub fn encode_v1(request: &Request) -> Bytes {
    encode_with(FORMAT_V1, None, request)
}

fn decode_request(bytes: &[u8]) -> Result<Request, String> {
    match postcard::take_from_bytes::<Request>(bytes) {
        Ok((request, [])) => Ok(request),
        Ok((_, trailing)) => Err(format!("{} bytes after the request", trailing.len())),
        Err(e) => Err(format!("not a request: {e}")),
    }
}

/// Decodes a log entry written by [`encode`] (or by the previous release).
///
/// # Errors
/// Why the entry is not a request of a known format, in words.
pub fn decode(entry: &[u8]) -> Result<Command, String> {
    match entry.split_first() {
        Some((&FORMAT_VERSION, rest)) => {
            let Some((time, request)) = rest.split_first_chunk::<8>() else {
                return Err("a version 2 command shorter than its stamp".into());
            };
            let request = decode_request(request)?;
            Ok(Command { time_ms: Some(u64::from_le_bytes(*time)), request })
        }
        Some((&FORMAT_V1, rest)) => Ok(Command { time_ms: None, request: decode_request(rest)? }),
        Some((version, _)) => Err(format!(
            "command format {version} is unknown (this release reads {FORMAT_V1} and \
             {FORMAT_VERSION})"
        )),
        None => Err("an empty command".into()),
    }
}

/// The variant number of [`Op::Register`] in postcard's encoding of an [`Op`].
const REGISTER_VARIANT: u64 = 9;

/// Reads one postcard varint from the front of `bytes`; returns it and the rest.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// The variant number of the op in an encoded request (after its client id and sequence
/// number), without decoding the rest.
fn op_variant(request: &[u8]) -> Option<u64> {
    let (_client_id, rest) = varint(request)?;
    let (_seq, rest) = varint(rest)?;
    Some(varint(rest)?.0)
}

/// What the leader appends for the proposed `entry`, which passed [`check`]: a version 2 entry
/// stamped with `time_ms`; for a registration, with the session id `new_id` gives (never 0)
/// and `ttl_ms` filled in. Anything but a registration is not decoded again: its bytes are
/// copied behind the new stamp.
///
/// # Errors
/// As [`decode`], for an entry that is not of a known format (or a registration that does
/// not decode).
pub fn stamp(
    entry: &[u8],
    time_ms: u64,
    ttl_ms: u64,
    mut new_id: impl FnMut() -> u64,
) -> Result<Bytes, String> {
    let body = match entry.split_first() {
        Some((&FORMAT_VERSION, rest)) => rest.get(HEADER - 1..),
        Some((&FORMAT_V1, rest)) => Some(rest),
        _ => None,
    };
    let Some(body) = body else { return Err(decode(entry).expect_err("not a known format")) };
    if op_variant(body).is_none_or(|variant| variant == REGISTER_VARIANT) {
        let Command { mut request, .. } = decode(entry)?;
        if let Op::Register { id, ttl_ms: ttl, .. } = &mut request.op {
            *id = std::iter::repeat_with(&mut new_id).take(4).find(|&id| id != 0).unwrap_or(1);
            *ttl = ttl_ms.max(1);
        }
        return Ok(encode_stamped(&request, time_ms));
    }
    // Anything else keeps its bytes: only the stamp changes.
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(body);
    Ok(out.into())
}

/// The leader's wall clock, in milliseconds since the Unix epoch (0 before it).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The check a leader runs on every proposal: it must decode; the leader then stamps it with
/// its wall clock, and gives a registration a random id and `session_ttl`.
pub fn check(session_ttl: Duration) -> raft::ProposalCheck {
    let ttl_ms = u64::try_from(session_ttl.as_millis()).unwrap_or(u64::MAX);
    check_with(wall_clock_ms, ttl_ms, rand::random::<u64>)
}

/// [`check`] with another clock and source of session ids (a simulation's virtual clock and
/// seeded generator).
pub fn check_with(
    clock: impl Fn() -> u64 + Send + Sync + 'static,
    ttl_ms: u64,
    ids: impl Fn() -> u64 + Send + Sync + 'static,
) -> raft::ProposalCheck {
    raft::ProposalCheck::new(|entry| decode(entry).map(drop))
        .stamping(move |entry| stamp(entry, clock(), ttl_ms, &ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            client_id: 7,
            seq: 3,
            op: Op::Put { key: "k".into(), value: "v".into() },
            ordered: true,
        }
    }

    #[test]
    fn a_request_round_trips_with_its_version_and_stamp_first() {
        let entry = encode(&request());
        assert_eq!(entry[0], FORMAT_VERSION);
        assert_eq!(decode(&entry), Ok(Command { time_ms: Some(0), request: request() }));
        assert!(check(Duration::from_secs(1)).check(&entry).is_ok());
        let stamped = encode_stamped(&request(), 1234);
        assert_eq!(decode(&stamped), Ok(Command { time_ms: Some(1234), request: request() }));
    }

    #[test]
    fn version_1_entries_still_decode_without_a_stamp() {
        let old = encode_v1(&request());
        assert_eq!(old[0], FORMAT_V1);
        assert_eq!(decode(&old), Ok(Command { time_ms: None, request: request() }));
        // The leader turns a version 1 proposal into a stamped version 2 entry.
        let stamped = stamp(&old, 99, 5, || 1).unwrap();
        assert_eq!(decode(&stamped), Ok(Command { time_ms: Some(99), request: request() }));
    }

    #[test]
    fn the_leader_stamps_time_and_fills_in_a_registration() {
        let check = check_with(|| 77, 5000, || 0xabcd);
        let stamped = check.stamp(encode(&request())).unwrap();
        assert_eq!(decode(&stamped), Ok(Command { time_ms: Some(77), request: request() }));
        // Whatever a client asks for, the id and TTL are the leader's.
        let register = Request {
            client_id: 5,
            seq: 0,
            op: Op::Register { id: 42, ttl_ms: u64::MAX, retire: Some(9) },
            ordered: false,
        };
        let stamped = decode(&check.stamp(encode(&register)).unwrap()).unwrap();
        assert_eq!(stamped.time_ms, Some(77));
        assert_eq!(stamped.request.op, Op::Register { id: 0xabcd, ttl_ms: 5000, retire: Some(9) });
        // A session id is never 0.
        let mut ids = [0, 0, 6].into_iter();
        let stamped = stamp(&encode(&register), 1, 1, || ids.next().unwrap()).unwrap();
        assert!(matches!(decode(&stamped).unwrap().request.op, Op::Register { id: 6, .. }));
    }

    /// The fast path that finds registrations without decoding reads postcard's layout right:
    /// every op's variant, with client ids and numbers of every varint length.
    #[test]
    fn registrations_are_found_without_decoding() {
        let ops = [
            Op::Get { key: "k".into() },
            Op::Put { key: "k".into(), value: "v".into() },
            Op::Append { key: "k".into(), value: "v".into() },
            Op::Delete { key: "k".into() },
            Op::GetMany { keys: vec![] },
            Op::PutMany { pairs: vec![] },
            Op::DeleteMany { keys: vec![] },
            Op::Count,
            Op::Scan { start: "a".into(), end: None, limit: 1 },
            Op::Register { id: 0, ttl_ms: 0, retire: Some(3) },
            Op::EndSession { id: 3 },
        ];
        for (variant, op) in ops.into_iter().enumerate() {
            for n in [0, 127, 128, 1 << 40, u64::MAX] {
                let request = Request { client_id: n, seq: n, op: op.clone(), ordered: true };
                let entry = encode(&request);
                assert_eq!(op_variant(&entry[HEADER..]), Some(variant as u64), "{op:?}");
                let stamped = decode(&stamp(&entry, 5, 6, || 7).unwrap()).unwrap();
                let register = matches!(op, Op::Register { .. });
                let expect = if register {
                    Op::Register { id: 7, ttl_ms: 6, retire: Some(3) }
                } else {
                    op.clone()
                };
                assert_eq!(
                    stamped,
                    Command { time_ms: Some(5), request: Request { op: expect, ..request } }
                );
            }
        }
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        let entry = encode(&request());
        let mut other_version = entry.to_vec();
        other_version[0] = 3;
        assert!(decode(&other_version).unwrap_err().contains("format 3 is unknown"));
        assert!(decode(&[]).unwrap_err().contains("empty"));
        assert!(decode(&[0xff]).unwrap_err().contains("unknown"));
        assert!(decode(&[FORMAT_VERSION, 1, 2]).unwrap_err().contains("shorter than its stamp"));
        assert!(decode(&entry[..entry.len() - 1]).unwrap_err().contains("not a request"));
        let mut trailing = entry.to_vec();
        trailing.push(0);
        assert!(decode(&trailing).unwrap_err().contains("after the request"));
        let check = check(Duration::from_secs(1));
        assert!(check.check(&[FORMAT_VERSION, 0xff]).is_err());
        assert!(check.check(&[FORMAT_V1, 0xff]).is_err());
    }
}
