//! The RESP decoders, as the server's connections use them.

use bytes::BytesMut;
use kvproto::resp::{self, Command, CommandDecoder, Limits, ProtocolError, Value};
use kvserver::redis::RedisConfig;

/// What one connection made of its input: each command (or refusal), then how it ended.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Args(Vec<Vec<u8>>),
    TooLarge(u64),
}

/// Feeds `input` to a server-style connection loop, `chunk` bytes per read: the commands it
/// finds, the protocol error that ends it (if any), and the bytes left unparsed.
fn connection(
    limits: Limits,
    max_request: u64,
    input: &[u8],
    chunk: usize,
) -> (Vec<Seen>, Option<ProtocolError>, usize) {
    let mut decoder = CommandDecoder::with_max_command_bytes(limits, max_request);
    let mut buffer = BytesMut::new();
    let mut seen = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buffer.extend_from_slice(piece);
        loop {
            match decoder.next_command(&buffer) {
                Ok(Some((command, used))) => {
                    assert!(
                        used > 0 && used <= buffer.len(),
                        "consumed {used} of {}",
                        buffer.len()
                    );
                    let _ = buffer.split_to(used);
                    match command {
                        Command::Args(args) if args.is_empty() => {}
                        Command::Args(args) => {
                            let size: u64 = args.iter().map(|a| a.len() as u64).sum();
                            assert!(
                                size <= max_request,
                                "{size} bytes passed the {max_request} limit"
                            );
                            seen.push(Seen::Args(args.iter().map(|a| a.to_vec()).collect()));
                        }
                        Command::TooLarge { size } => {
                            assert!(size > max_request, "refused {size} bytes under {max_request}");
                            seen.push(Seen::TooLarge(size));
                        }
                    }
                }
                Ok(None) => break,
                // What is left after an error is not looked at: the connection closes.
                Err(e) => return (seen, Some(e), 0),
            }
        }
    }
    (seen, None, buffer.len())
}

/// The RESP command decoder with the server's limits and a request-size limit, fed whole and
/// in pieces; and the value decoder.
///
/// Input: `limit_byte chunk_byte rest`. `limit_byte` picks the request-size limit (small ones
/// make the oversized-command path reachable; 0 picks the server's default), `chunk_byte` how
/// many bytes arrive per read. Invariants: no panic; the commands found, their order and the
/// error that ends the stream do not depend on how the bytes arrive; every command stays within
/// the limit or is refused as too large; a command re-encoded as a RESP array parses back to
/// the same arguments; a decoded value re-encodes to bytes that decode to the same value (with
/// room for the lossy UTF-8 conversion of simple strings and errors).
pub fn resp(data: &[u8]) {
    let [limit_byte, chunk_byte, rest @ ..] = data else { return };
    let config = RedisConfig::default();
    let limits = Limits { max_inline_bytes: 1024, max_depth: 4, ..config.limits };
    let max_request =
        if *limit_byte == 0 { config.max_request_bytes } else { u64::from(*limit_byte) };

    let whole = connection(limits, max_request, rest, rest.len());
    let pieces = connection(limits, max_request, rest, usize::from(*chunk_byte % 16) + 1);
    assert_eq!(whole, pieces, "the outcome depends on how the bytes arrive");

    for seen in &whole.0 {
        if let Seen::Args(args) = seen {
            let mut encoded = BytesMut::new();
            resp::write_command(&mut encoded, args);
            let again = resp::parse_command(&encoded, &limits)
                .expect("a re-encoded command parses")
                .expect("a re-encoded command is whole");
            assert_eq!(again.1, encoded.len(), "the re-encoded command is consumed whole");
            let again: Vec<Vec<u8>> = again.0.iter().map(|a| a.to_vec()).collect();
            assert_eq!(&again, args, "a re-encoded command parses to the same arguments");
        }
    }

    // The value decoder (replies, as a client reads them).
    if let Ok(Some((value, used))) = resp::decode(rest, &limits) {
        assert!(used > 0 && used <= rest.len());
        let encoded = value.to_bytes();
        // Simple strings and errors are decoded lossily into Strings: each invalid UTF-8 byte
        // becomes a 3-byte U+FFFD, so the re-encoded line may be up to 3 times longer.
        let relaxed = Limits { max_inline_bytes: limits.max_inline_bytes * 3, ..limits };
        let again = resp::decode(&encoded, &relaxed);
        let expected: Result<Option<(Value, usize)>, ProtocolError> =
            Ok(Some((value, encoded.len())));
        assert_eq!(again, expected, "a decoded value re-encodes to itself");
    }
}
