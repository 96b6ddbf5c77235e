//! The RESP2 codec: wire forms, round trips, incremental and pipelined decoding, every malformed
//! input's error (Redis's own protocol tests among them), the limits, inline commands, and
//! properties over arbitrary values and arbitrary bytes.

use bytes::{Bytes, BytesMut};
use kvproto::resp::{
    self, Command, CommandDecoder, Decoder, Limits, ProtocolError, Value, decode, parse_command,
};
use quickcheck::{Arbitrary, Gen, QuickCheck};

fn limits() -> Limits {
    Limits::default()
}

/// Small limits, so arbitrary inputs reach them.
fn tight() -> Limits {
    Limits { max_bulk_bytes: 16, max_array_len: 4, max_depth: 3, max_inline_bytes: 16 }
}

/// No limit but depth: the decoder must still not trust claimed lengths.
fn unlimited() -> Limits {
    Limits {
        max_bulk_bytes: usize::MAX,
        max_array_len: usize::MAX,
        max_depth: 64,
        max_inline_bytes: usize::MAX,
    }
}

fn wire(value: &Value) -> Vec<u8> {
    value.to_bytes().to_vec()
}

fn bulk(s: &str) -> Value {
    Value::bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn args(list: &[&str]) -> Vec<Bytes> {
    list.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect()
}

fn command(buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
    parse_command(buf, &limits())
}

fn command_error(buf: &[u8]) -> ProtocolError {
    command(buf).expect_err("a malformed command")
}

fn decode_error(buf: &[u8]) -> ProtocolError {
    decode(buf, &limits()).expect_err("a malformed value")
}

// ---- Encoding -------------------------------------------------------------------------------

#[test]
fn each_kind_encodes_to_its_wire_form() {
    let cases: Vec<(Value, &[u8])> = vec![
        (Value::ok(), b"+OK\r\n"),
        (Value::Simple(String::new()), b"+\r\n"),
        (Value::error("ERR unknown command"), b"-ERR unknown command\r\n"),
        (Value::Integer(0), b":0\r\n"),
        (Value::Integer(-42), b":-42\r\n"),
        (Value::Integer(i64::MAX), b":9223372036854775807\r\n"),
        (Value::Integer(i64::MIN), b":-9223372036854775808\r\n"),
        (bulk("foo"), b"$3\r\nfoo\r\n"),
        (bulk(""), b"$0\r\n\r\n"),
        (Value::bulk(&b"a\r\nb\0"[..]), b"$5\r\na\r\nb\0\r\n"),
        (Value::NULL, b"$-1\r\n"),
        (Value::Array(None), b"*-1\r\n"),
        (Value::Array(Some(vec![])), b"*0\r\n"),
        (
            Value::Array(Some(vec![
                Value::Integer(1),
                Value::Array(Some(vec![bulk("x"), Value::NULL])),
                Value::ok(),
            ])),
            b"*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n+OK\r\n",
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(wire(&value), expected, "{value:?}");
    }
}

#[test]
fn line_breaks_in_simple_strings_and_errors_are_written_as_spaces() {
    assert_eq!(wire(&Value::Simple("a\r\nb".into())), b"+a  b\r\n");
    assert_eq!(wire(&Value::error("ERR bad\nkey")), b"-ERR bad key\r\n");
    // What was written decodes, and is the only frame.
    let buf = wire(&Value::error("x\ry"));
    assert_eq!(decode(&buf, &limits()), Ok(Some((Value::error("x y"), buf.len()))));
}

#[test]
fn the_write_functions_append_without_building_values() {
    let mut out = BytesMut::new();
    resp::write_array_len(&mut out, 6);
    resp::write_simple(&mut out, "PONG");
    resp::write_error(&mut out, "WRONGTYPE no");
    resp::write_integer(&mut out, 7);
    resp::write_bulk(&mut out, b"v");
    resp::write_null_bulk(&mut out);
    resp::write_null_array(&mut out);
    assert_eq!(&out[..], b"*6\r\n+PONG\r\n-WRONGTYPE no\r\n:7\r\n$1\r\nv\r\n$-1\r\n*-1\r\n");
    let expected = Value::Array(Some(vec![
        Value::Simple("PONG".into()),
        Value::error("WRONGTYPE no"),
        Value::Integer(7),
        bulk("v"),
        Value::NULL,
        Value::Array(None),
    ]));
    assert_eq!(decode(&out, &limits()), Ok(Some((expected, out.len()))));
}

#[test]
fn a_written_command_parses_back_to_its_arguments() {
    let mut out = BytesMut::new();
    resp::write_command(&mut out, &["SET", "key", "a value\r\n"]);
    assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$9\r\na value\r\n\r\n");
    assert_eq!(command(&out), Ok(Some((args(&["SET", "key", "a value\r\n"]), out.len()))));
}

// ---- Decoding values ------------------------------------------------------------------------

#[test]
fn every_kind_round_trips() {
    let values = [
        Value::ok(),
        Value::Simple("héllo wörld".into()),
        Value::error("ERR no"),
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Integer(0),
        Value::Integer(-1),
        bulk("binary\0\r\n\u{7f}"),
        bulk(""),
        Value::NULL,
        Value::Array(None),
        Value::Array(Some(vec![])),
        Value::Array(Some(vec![Value::Array(Some(vec![Value::Array(Some(vec![]))]))])),
    ];
    for value in values {
        let buf = wire(&value);
        assert_eq!(decode(&buf, &limits()), Ok(Some((value, buf.len()))));
    }
}

#[test]
fn a_partial_frame_fed_byte_by_byte_is_none_until_complete() {
    let value = Value::Array(Some(vec![
        Value::ok(),
        Value::error("ERR x"),
        Value::Integer(-12),
        bulk("hello"),
        Value::NULL,
        Value::Array(Some(vec![Value::Array(None), Value::Array(Some(vec![]))])),
    ]));
    let buf = wire(&value);
    let mut decoder = Decoder::new(limits());
    for end in 0..buf.len() {
        assert_eq!(decode(&buf[..end], &limits()), Ok(None), "prefix of {end} bytes");
        assert_eq!(decoder.decode(&buf[..end]), Ok(None), "prefix of {end} bytes, resumed");
    }
    assert_eq!(decoder.decode(&buf), Ok(Some((value.clone(), buf.len()))));
    // The decoder is ready for the next frame.
    assert_eq!(decoder.decode(&buf), Ok(Some((value, buf.len()))));
}

#[test]
fn pipelined_values_are_read_one_after_another() {
    let values = [Value::ok(), bulk("v"), Value::Integer(3), Value::Array(Some(vec![bulk("a")]))];
    let mut buf: Vec<u8> = values.iter().flat_map(wire).collect();
    buf.extend_from_slice(b"$5\r\nhal"); // The start of a fifth.
    let mut decoder = Decoder::new(limits());
    let mut at = 0;
    for value in &values {
        let (got, consumed) = decode(&buf[at..], &limits()).unwrap().unwrap();
        assert_eq!((&got, consumed), (value, wire(value).len()));
        assert_eq!(decoder.decode(&buf[at..]), Ok(Some((got, consumed))));
        at += consumed;
    }
    assert_eq!(decode(&buf[at..], &limits()), Ok(None));
    assert_eq!(decoder.decode(&buf[at..]), Ok(None));
}

#[test]
fn malformed_values_give_the_right_error() {
    use ProtocolError::*;
    let mut too_long = b"+".to_vec();
    too_long.resize(1 + 64 * 1024 + 1, b'a');
    let cases: Vec<(&[u8], ProtocolError)> = vec![
        (b"*-2\r\n", InvalidMultibulkLength),
        (b"*abc\r\n", InvalidMultibulkLength),
        (b"*01\r\n", InvalidMultibulkLength),
        (b"* 1\r\n", InvalidMultibulkLength),
        (b"*1\rx", InvalidMultibulkLength),
        (b"*1\n", InvalidMultibulkLength),
        (b"*1048577\r\n", InvalidMultibulkLength),
        (b"*99999999999999999999\r\n", InvalidMultibulkLength),
        (b"$-2\r\n", InvalidBulkLength),
        (b"$+3\r\n", InvalidBulkLength),
        (b"$3-\r\n", InvalidBulkLength),
        (b"$67108865\r\n", InvalidBulkLength),
        (b"$3\r\nfooXY", ExpectedCrlf),
        (b"$3\r\nfoo\rX", ExpectedCrlf),
        (b":12a\r\n", InvalidInteger),
        (b":-0\r\n", InvalidInteger),
        (b":007\r\n", InvalidInteger),
        (b":\r\n", InvalidInteger),
        (b":-\r\n", InvalidInteger),
        (b":9223372036854775808\r\n", InvalidInteger),
        (b":-9223372036854775809\r\n", InvalidInteger),
        (b":123456789012345678901", InvalidInteger),
        (b"+OK\n", ExpectedCrlf),
        (b"+OK\rX", ExpectedCrlf),
        (b"-ERR\nx\r\n", ExpectedCrlf),
        (&too_long, TooBigSimpleString),
        (b"?", UnknownType(b'?')),
        (b"PING\r\n", UnknownType(b'P')),
        (b"*2\r\n:1\r\n%0\r\n", UnknownType(b'%')),
    ];
    for (buf, expected) in cases {
        assert_eq!(decode_error(buf), expected, "{:?}", buf.escape_ascii().to_string());
        // A resumable decoder fed the same bytes one at a time finds the same fault.
        let mut decoder = Decoder::new(limits());
        let found = (1..=buf.len()).find_map(|end| decoder.decode(&buf[..end]).err());
        assert_eq!(found, Some(expected), "{:?}, resumed", buf.escape_ascii().to_string());
    }
}

#[test]
fn integers_are_parsed_over_the_whole_range() {
    for (text, n) in [
        (&b":0\r\n"[..], 0),
        (b":-1\r\n", -1),
        (b":10\r\n", 10),
        (b":9223372036854775807\r\n", i64::MAX),
        (b":-9223372036854775808\r\n", i64::MIN),
    ] {
        assert_eq!(decode(text, &limits()), Ok(Some((Value::Integer(n), text.len()))));
    }
}

#[test]
fn a_frame_waits_for_its_final_line_end() {
    for buf in [&b"+OK\r"[..], b":1\r", b"$3\r\nfoo\r", b"*1\r\n", b"*1\r", b"$3\r\nfo"] {
        assert_eq!(decode(buf, &limits()), Ok(None), "{:?}", buf.escape_ascii().to_string());
    }
}

#[test]
fn simple_strings_that_are_not_utf8_are_decoded_lossily() {
    assert_eq!(
        decode(b"+a\xffb\r\n", &limits()),
        Ok(Some((Value::Simple("a\u{fffd}b".into()), 6)))
    );
}

#[test]
fn a_simple_string_may_be_exactly_the_longest_line() {
    let limits = tight();
    let mut buf = b"+".to_vec();
    buf.extend_from_slice(&[b'a'; 16]);
    assert_eq!(decode(&buf, &limits), Ok(None));
    buf.extend_from_slice(b"\r\n");
    let text = "a".repeat(16);
    assert_eq!(decode(&buf, &limits), Ok(Some((Value::Simple(text), buf.len()))));
    let mut longer = b"+".to_vec();
    longer.extend_from_slice(&[b'a'; 17]);
    assert_eq!(decode(&longer, &limits), Err(ProtocolError::TooBigSimpleString));
}

#[test]
fn a_long_simple_string_arriving_in_pieces_is_searched_once() {
    // The resumed search must still find a line end that arrives later, and a CR that
    // arrived at the end of one piece.
    let limits = limits();
    let mut decoder = Decoder::new(limits);
    let mut buf = b"+".to_vec();
    for _ in 0..100 {
        buf.extend_from_slice(b"0123456789");
        assert_eq!(decoder.decode(&buf), Ok(None));
    }
    buf.push(b'\r');
    assert_eq!(decoder.decode(&buf), Ok(None));
    buf.push(b'\n');
    let text = "0123456789".repeat(100);
    assert_eq!(decoder.decode(&buf), Ok(Some((Value::Simple(text), buf.len()))));
}

#[test]
fn arrays_nest_up_to_the_depth_limit() {
    let nested = |depth: usize| {
        let mut value = Value::Integer(1);
        for _ in 0..depth {
            value = Value::Array(Some(vec![value]));
        }
        wire(&value)
    };
    let deepest = nested(8);
    assert!(matches!(decode(&deepest, &limits()), Ok(Some((_, n))) if n == deepest.len()));
    assert_eq!(decode(&nested(9), &limits()), Err(ProtocolError::NestingTooDeep));
    // Refused as soon as the ninth header arrives, before any element.
    assert_eq!(decode(&b"*1\r\n".repeat(9), &limits()), Err(ProtocolError::NestingTooDeep));
    // With no arrays allowed, even an empty one is refused, but a null one is no nesting.
    let flat = Limits { max_depth: 0, ..limits() };
    assert_eq!(decode(b"*0\r\n", &flat), Err(ProtocolError::NestingTooDeep));
    assert_eq!(decode(b"*-1\r\n", &flat), Ok(Some((Value::Array(None), 5))));
}

#[test]
fn limits_bound_bulk_strings_and_arrays_exactly() {
    let limits = tight();
    let at_limit = wire(&bulk(&"b".repeat(16)));
    assert!(matches!(decode(&at_limit, &limits), Ok(Some(_))));
    assert_eq!(decode(b"$17\r\n", &limits), Err(ProtocolError::InvalidBulkLength));
    assert!(matches!(decode(b"*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", &limits), Ok(Some(_))));
    assert_eq!(decode(b"*5\r\n", &limits), Err(ProtocolError::InvalidMultibulkLength));
}

#[test]
fn the_default_limits_are_the_documented_ones() {
    let limits = Limits::default();
    assert_eq!(limits.max_bulk_bytes, 64 * 1024 * 1024);
    assert_eq!(limits.max_array_len, 1024 * 1024);
    assert_eq!(limits.max_depth, 8);
    assert_eq!(limits.max_inline_bytes, 64 * 1024);
}

#[test]
fn hostile_lengths_are_refused_or_wait_for_bytes_that_never_come() {
    use ProtocolError::*;
    // Over the default limits: refused at once.
    assert_eq!(decode_error(b"*1000000000\r\n"), InvalidMultibulkLength);
    assert_eq!(decode_error(b"*2147483647\r\n"), InvalidMultibulkLength);
    assert_eq!(decode_error(b"$999999999\r\n"), InvalidBulkLength);
    assert_eq!(command_error(b"*1000000000\r\n"), InvalidMultibulkLength);
    assert_eq!(command_error(b"*1\r\n$999999999\r\n"), InvalidBulkLength);
    // With no limits, the claims are not believed either: the decoder waits, holding nothing
    // but what arrived (tests/resp_alloc.rs measures the allocations).
    let big = unlimited();
    for buf in [
        &b"*1000000000\r\n"[..],
        b"*2147483647\r\n:1\r\n:2\r\n",
        b"$999999999\r\n",
        b"$9223372036854775807\r\nabc",
        b"*9223372036854775807\r\n*9223372036854775807\r\n",
    ] {
        assert_eq!(decode(buf, &big), Ok(None), "{:?}", buf.escape_ascii().to_string());
    }
    assert_eq!(parse_command(b"*1000000000\r\n$1\r\na\r\n", &big), Ok(None));
    assert_eq!(parse_command(b"*1\r\n$9223372036854775807\r\n", &big), Ok(None));
}

// ---- Commands -------------------------------------------------------------------------------

#[test]
fn array_commands_parse_to_their_arguments() {
    let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
    assert_eq!(command(buf), Ok(Some((args(&["SET", "k", ""]), buf.len()))));
}

#[test]
fn inline_commands_are_split_as_redis_splits_them() {
    let cases: Vec<(&[u8], Vec<&[u8]>)> = vec![
        (b"PING\r\n", vec![b"PING"]),
        (b"PING\n", vec![b"PING"]),
        (b"set k v\r\n", vec![b"set", b"k", b"v"]),
        (b"  set \t k\x0bv\x0c \r\n", vec![b"set", b"k", b"v"]),
        (b"set k \"hello world\"\r\n", vec![b"set", b"k", b"hello world"]),
        (b"set k \"\"\r\n", vec![b"set", b"k", b""]),
        (b"set k ''\r\n", vec![b"set", b"k", b""]),
        (b"echo \"a\\nb\\r\\t\\b\\a\"\r\n", vec![b"echo", b"a\nb\r\t\x08\x07"]),
        (b"echo \"\\x41\\x4a\\x4A\\xff\"\r\n", vec![b"echo", b"AJJ\xff"]),
        (b"echo \"\\xZZ\\x4\"\r\n", vec![b"echo", b"xZZx4"]),
        (b"echo \"q\\\"q\\\\\"\r\n", vec![b"echo", b"q\"q\\"]),
        (b"echo 'it\\'s' '\\n'\r\n", vec![b"echo", b"it's", b"\\n"]),
        (b"echo 'a\"b' \"a'b\"\r\n", vec![b"echo", b"a\"b", b"a'b"]),
        (b"echo a\"b c\" d'e f'\r\n", vec![b"echo", b"ab c", b"de f"]),
        (b"echo \"a\"\t\"b\"\r\n", vec![b"echo", b"a", b"b"]),
        (b"echo \"a\r\"\r\n", vec![b"echo", b"a\r"]),
        (b"echo \"\xff\0\"\r\n", vec![b"echo", b"\xff\0"]),
        (b"$3\r\n", vec![b"$3"]),
    ];
    for (buf, expected) in cases {
        let expected: Vec<Bytes> = expected.into_iter().map(Bytes::from_static).collect();
        assert_eq!(command(buf), Ok(Some((expected, buf.len()))), "{:?}", buf.escape_ascii());
    }
}

#[test]
fn malformed_commands_give_redis_errors() {
    use ProtocolError::*;
    let cases: Vec<(&[u8], ProtocolError)> = vec![
        // Redis's tests/unit/protocol.tcl.
        (b"*20000000\r\n", InvalidMultibulkLength),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n", ExpectedBulk(b'f')),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n", InvalidBulkLength),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n", InvalidBulkLength),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n", InvalidBulkLength),
        (b"*1\r\nfoo\r\n", ExpectedBulk(b'f')),
        // Ours.
        (b"*x\r\n", InvalidMultibulkLength),
        (b"*\x00AAAA", InvalidMultibulkLength),
        (b"*1\r\n$-1\r\n", InvalidBulkLength),
        (b"*1\r\n:1\r\n", ExpectedBulk(b':')),
        (b"*1\r\n$3\r\nfooXY", ExpectedCrlf),
        (b"SET k \"v\r\n", UnbalancedQuotes),
        (b"SET k 'v\r\n", UnbalancedQuotes),
        (b"ECHO \"a\"b\r\n", UnbalancedQuotes),
        (b"ECHO 'a'b\r\n", UnbalancedQuotes),
        (b"ECHO \"a\\\r\n", UnbalancedQuotes),
        (b"ECHO 'a\\'\r\n", UnbalancedQuotes),
    ];
    for (buf, expected) in cases {
        assert_eq!(command_error(buf), expected, "{:?}", buf.escape_ascii().to_string());
        let mut decoder = CommandDecoder::new(limits());
        let found = (1..=buf.len()).find_map(|end| decoder.parse(&buf[..end]).err());
        assert_eq!(found, Some(expected), "{:?}, resumed", buf.escape_ascii().to_string());
    }
}

#[test]
fn inline_lines_are_bounded() {
    let max = limits().max_inline_bytes;
    let mut line = vec![b'a'; max];
    line.extend_from_slice(b"\r\n");
    assert_eq!(command(&line), Ok(Some((vec![Bytes::from(vec![b'a'; max])], max + 2))));

    let mut longer = vec![b'a'; max + 1];
    assert_eq!(command(&longer), Ok(None), "a line end may still come");
    longer.push(b'\r');
    assert_eq!(command(&longer), Err(ProtocolError::TooBigInlineRequest));
    longer.push(b'\n');
    assert_eq!(command(&longer), Err(ProtocolError::TooBigInlineRequest));
    let mut bare = vec![b'a'; max + 1];
    bare.push(b'\n');
    assert_eq!(command(&bare), Err(ProtocolError::TooBigInlineRequest));
    // Redis's protocol desync tests: a stream that never sends a line end is cut off.
    for start in [&b"\x00"[..], b"$\x00"] {
        let mut junk = start.to_vec();
        junk.resize(max + 2, b'A');
        assert_eq!(command(&junk), Err(ProtocolError::TooBigInlineRequest));
    }
}

#[test]
fn a_long_inline_line_arriving_in_pieces_is_found() {
    let mut decoder = CommandDecoder::new(limits());
    let mut buf = b"ECHO ".to_vec();
    for _ in 0..1000 {
        buf.extend_from_slice(b"abcdefgh");
        assert_eq!(decoder.parse(&buf), Ok(None));
    }
    buf.push(b'\r');
    assert_eq!(decoder.parse(&buf), Ok(None));
    buf.push(b'\n');
    let expected = vec![Bytes::from_static(b"ECHO"), Bytes::from("abcdefgh".repeat(1000))];
    assert_eq!(decoder.parse(&buf), Ok(Some((expected, buf.len()))));
}

#[test]
fn empty_lines_and_empty_arrays_are_skipped() {
    let cases: Vec<&[u8]> = vec![
        b"\r\nPING\r\n",
        b"\n\n   \t\r\nPING\r\n",
        b"*0\r\nPING\r\n",
        b"*-1\r\n*1\r\n$4\r\nPING\r\n",
        b"*-10\r\n\r\nPING\r\n",
    ];
    for buf in cases {
        assert_eq!(command(buf), Ok(Some((args(&["PING"]), buf.len()))), "{:?}", buf);
    }
    // Nothing but skipped input: it is consumed, and there is nothing to run.
    assert_eq!(command(b"\r\n"), Ok(Some((vec![], 2))));
    assert_eq!(command(b"\r\n*0\r\n"), Ok(Some((vec![], 6))));
    // Skipped input before an unfinished command is consumed; the command then waits.
    let mut decoder = CommandDecoder::new(limits());
    let buf = b"\r\n*1\r\n$4\r\nPI";
    assert_eq!(command(buf), Ok(Some((vec![], 2))));
    assert_eq!(decoder.parse(buf), Ok(Some((vec![], 2))));
    assert_eq!(decoder.parse(&buf[2..]), Ok(None));
    assert_eq!(decoder.parse(b"*1\r\n$4\r\nPING\r\n"), Ok(Some((args(&["PING"]), 14))));
    assert_eq!(command(b""), Ok(None));
}

#[test]
fn pipelined_commands_of_both_forms_are_read_in_order() {
    let buf = concat!(
        "*1\r\n$4\r\nPING\r\n",
        "SET a \"b c\"\r\n",
        "\r\n",
        "*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
        "DEL a\n",
        "*1\r\n$4\r\nPI",
    )
    .as_bytes();
    let expected =
        [args(&["PING"]), args(&["SET", "a", "b c"]), args(&["GET", "a"]), args(&["DEL", "a"])];
    let mut decoder = CommandDecoder::new(limits());
    let mut at = 0;
    for want in &expected {
        let (got, consumed) = command(&buf[at..]).unwrap().unwrap();
        assert_eq!(&got, want);
        assert_eq!(decoder.parse(&buf[at..]), Ok(Some((got, consumed))));
        at += consumed;
    }
    assert_eq!(command(&buf[at..]), Ok(None));
    assert_eq!(decoder.parse(&buf[at..]), Ok(None));
    assert_eq!(&buf[at..], b"*1\r\n$4\r\nPI");
}

#[test]
fn a_partial_command_fed_byte_by_byte_is_none_until_complete() {
    let mut array = BytesMut::new();
    resp::write_command(&mut array, &["SET", "key", "value"]);
    let inline = b"SET key \"value\"\r\n";
    for buf in [&array[..], &inline[..]] {
        let mut decoder = CommandDecoder::new(limits());
        for end in 0..buf.len() {
            assert_eq!(command(&buf[..end]), Ok(None), "prefix of {end} bytes");
            assert_eq!(decoder.parse(&buf[..end]), Ok(None), "prefix of {end} bytes, resumed");
        }
        let expected = Ok(Some((args(&["SET", "key", "value"]), buf.len())));
        assert_eq!(decoder.parse(buf), expected);
    }
}

/// Feeds `input` to `decoder` in pieces of `piece` bytes, as a connection would (appending to
/// a buffer, dropping what is consumed); returns what it found, and the most bytes the buffer
/// ever held.
fn feed(decoder: &mut CommandDecoder, input: &[u8], piece: usize) -> (Vec<Command>, usize) {
    let mut buf = Vec::new();
    let (mut found, mut most) = (Vec::new(), 0);
    for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        most = most.max(buf.len());
        while let Some((command, used)) = decoder.next_command(&buf).unwrap() {
            buf.drain(..used);
            if command != Command::Args(Vec::new()) {
                found.push(command);
            }
        }
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    (found, most)
}

#[test]
fn an_oversized_command_is_reported_from_its_lengths_and_skipped_unbuffered() {
    let mut input = BytesMut::new();
    resp::write_command(&mut input, &["SET", "a", "1"]);
    let big = vec![b'v'; 100_000];
    resp::write_command(&mut input, &[&b"MSET"[..], b"k1", &big, b"k2", &big]);
    resp::write_command(&mut input, &["GET", "a"]);
    input.extend_from_slice(b"ECHO 0123456789\r\n");
    resp::write_command(&mut input, &[&b"SET"[..], b"b", &[b'x'; 90][..]]);
    resp::write_command(&mut input, &[&b"SET"[..], b"c", &[b'x'; 97][..]]);
    for piece in [1, 7, 4096, input.len()] {
        let mut decoder = CommandDecoder::with_max_command_bytes(limits(), 100);
        let (found, most) = feed(&mut decoder, &input, piece);
        let set_b = vec![Bytes::from_static(b"SET"), "b".into(), Bytes::from(vec![b'x'; 90])];
        assert_eq!(
            found,
            [
                Command::Args(args(&["SET", "a", "1"])),
                // MSET + k1 + the value's declared length: found before the value arrives.
                Command::TooLarge { size: 4 + 2 + 100_000 },
                Command::Args(args(&["GET", "a"])),
                Command::Args(args(&["ECHO", "0123456789"])),
                Command::Args(set_b),
                Command::TooLarge { size: 3 + 1 + 97 },
            ],
            "in pieces of {piece}"
        );
        if piece < 4096 {
            assert!(most < 200, "buffered {most} bytes in pieces of {piece}");
        }
    }
    // An inline command is measured the same way.
    let mut decoder = CommandDecoder::with_max_command_bytes(limits(), 8);
    assert_eq!(
        decoder.next_command(b"ECHO abcde\r\nPING\r\n"),
        Ok(Some((Command::TooLarge { size: 9 }, 12)))
    );
    // `parse` skips an oversized command silently (as no arguments); without a limit nothing
    // is too large.
    let mut decoder = CommandDecoder::with_max_command_bytes(limits(), 8);
    assert_eq!(decoder.parse(b"ECHO abcde\r\nPING\r\n"), Ok(Some((vec![], 12))));
    assert_eq!(decoder.parse(b"PING\r\n"), Ok(Some((args(&["PING"]), 6))));
    let mut decoder = CommandDecoder::new(limits());
    assert_eq!(feed(&mut decoder, &input, 4096).0.len(), 6);
    // A length past max_bulk_bytes is a protocol error still, as in Redis, before the size.
    let mut decoder = CommandDecoder::with_max_command_bytes(limits(), 4);
    assert_eq!(
        decoder.next_command(b"*2\r\n$3\r\nSET\r\n$999999999999\r\n"),
        Err(ProtocolError::InvalidBulkLength)
    );
    // The rest of an oversized command must still be well framed.
    let mut decoder = CommandDecoder::with_max_command_bytes(limits(), 4);
    assert_eq!(
        decoder.next_command(b"*3\r\n$3\r\nSET\r\n$2\r\nab\r\n"),
        Ok(Some((Command::TooLarge { size: 5 }, 17)))
    );
    assert_eq!(decoder.next_command(b"ab\r\n:1\r\n"), Err(ProtocolError::ExpectedBulk(b':')));
    assert_eq!(decoder.next_command(b"PING\r\n"), Ok(Some((Command::Args(args(&["PING"])), 6))));
    let mut decoder = CommandDecoder::with_max_command_bytes(limits(), 4);
    assert_eq!(
        decoder.next_command(b"*1\r\n$9\r\n123456789xx"),
        Ok(Some((Command::TooLarge { size: 9 }, 8)))
    );
    assert_eq!(decoder.next_command(b"123456789xx"), Err(ProtocolError::ExpectedCrlf));
}

#[test]
fn decoders_given_a_shorter_buffer_than_promised_start_over() {
    // Breaking the contract gives meaningless results but no panic; here, a fresh start.
    let mut decoder = Decoder::new(limits());
    assert_eq!(decoder.decode(b"*2\r\n:1\r\n"), Ok(None));
    assert_eq!(decoder.decode(b":7\r\n"), Ok(Some((Value::Integer(7), 4))));
    assert_eq!(decoder.decode(b"+abcdef"), Ok(None));
    assert_eq!(decoder.decode(b"+ab\r\n"), Ok(Some((Value::Simple("ab".into()), 5))));

    let mut commands = CommandDecoder::new(limits());
    assert_eq!(commands.parse(b"*2\r\n$3\r\nGET\r\n"), Ok(None));
    assert_eq!(commands.parse(b"PING\r\n"), Ok(Some((args(&["PING"]), 6))));
    assert_eq!(commands.parse(b"ECHO abcdef"), Ok(None));
    assert_eq!(commands.parse(b"ECHO\r\n"), Ok(Some((args(&["ECHO"]), 6))));
}

#[test]
fn a_decoder_is_reusable_after_an_error() {
    let mut decoder = Decoder::new(limits());
    assert_eq!(decoder.decode(b"*2\r\n:1\r\n?"), Err(ProtocolError::UnknownType(b'?')));
    assert_eq!(decoder.decode(b":1\r\n"), Ok(Some((Value::Integer(1), 4))));
    let mut commands = CommandDecoder::new(limits());
    assert_eq!(commands.parse(b"*2\r\n$1\r\na\r\nx"), Err(ProtocolError::ExpectedBulk(b'x')));
    assert_eq!(commands.parse(b"PING\r\n"), Ok(Some((args(&["PING"]), 6))));
}

// ---- Errors ---------------------------------------------------------------------------------

#[test]
fn error_messages_are_redis_words() {
    use ProtocolError::*;
    let cases = [
        (InvalidMultibulkLength, "Protocol error: invalid multibulk length"),
        (InvalidBulkLength, "Protocol error: invalid bulk length"),
        (ExpectedBulk(b'x'), "Protocol error: expected '$', got 'x'"),
        (ExpectedBulk(b' '), "Protocol error: expected '$', got ' '"),
        (ExpectedBulk(0), "Protocol error: expected '$', got '\\x00'"),
        (ExpectedBulk(b'\r'), "Protocol error: expected '$', got '\\r'"),
        (TooBigInlineRequest, "Protocol error: too big inline request"),
        (UnbalancedQuotes, "Protocol error: unbalanced quotes in request"),
        (UnknownType(b'x'), "Protocol error, got \"x\" as reply type byte"),
        (UnknownType(0xff), "Protocol error, got \"\\xff\" as reply type byte"),
        (InvalidInteger, "Protocol error: invalid integer"),
        (TooBigSimpleString, "Protocol error: too big simple string"),
        (ExpectedCrlf, "Protocol error: expected '\\r\\n'"),
        (NestingTooDeep, "Protocol error: arrays nested too deep"),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn the_reply_to_a_protocol_error_is_an_err_line() {
    let reply = ProtocolError::ExpectedBulk(b'f').to_reply();
    assert_eq!(&reply.to_bytes()[..], b"-ERR Protocol error: expected '$', got 'f'\r\n");
    // Even for a byte that is a line break, the reply stays one line.
    let reply = ProtocolError::ExpectedBulk(b'\n').to_reply().to_bytes();
    assert_eq!(decode(&reply, &limits()).unwrap().unwrap().1, reply.len());
}

// ---- Properties -----------------------------------------------------------------------------

fn quickcheck(tests: u64) -> QuickCheck {
    // QUICKCHECK_TESTS=<n> runs more (or fewer) cases.
    let tests =
        std::env::var("QUICKCHECK_TESTS").ok().and_then(|s| s.parse().ok()).unwrap_or(tests);
    QuickCheck::new().tests(tests).max_tests(tests * 10)
}

/// A value within the default limits (at most 8 arrays deep).
#[derive(Debug, Clone)]
struct AnyValue(Value);

impl Arbitrary for AnyValue {
    fn arbitrary(g: &mut Gen) -> AnyValue {
        AnyValue(any_value(g, limits().max_depth))
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = AnyValue>> {
        match &self.0 {
            Value::Array(Some(items)) => Box::new(items.clone().into_iter().map(AnyValue)),
            _ => Box::new(std::iter::empty()),
        }
    }
}

fn any_text(g: &mut Gen) -> String {
    String::arbitrary(g).replace(['\r', '\n'], " ")
}

fn any_value(g: &mut Gen, depth: usize) -> Value {
    let kinds = if depth > 0 { 9 } else { 7 };
    match u8::arbitrary(g) % kinds {
        0 => Value::Simple(any_text(g)),
        1 => Value::Error(any_text(g)),
        2 => Value::Integer(i64::arbitrary(g)),
        3 => Value::Integer(*g.choose(&[i64::MIN, i64::MAX, 0, -1, 1]).unwrap()),
        4 => Value::bulk(Vec::<u8>::arbitrary(g)),
        5 => Value::NULL,
        6 => Value::Array(None),
        _ => {
            let len = usize::arbitrary(g) % 5;
            Value::Array(Some((0..len).map(|_| any_value(g, depth - 1)).collect()))
        }
    }
}

/// Bytes that look like RESP often enough to reach deep into the decoders: pieces of frames,
/// quotes and escapes, odd bytes; sometimes a valid frame with a few bytes changed.
#[derive(Debug, Clone)]
struct AnyBytes(Vec<u8>);

const PIECES: &[&[u8]] = &[
    b"*",
    b"$",
    b"+",
    b"-",
    b":",
    b"\r\n",
    b"\r",
    b"\n",
    b"0",
    b"1",
    b"2",
    b"3",
    b"-1",
    b"-2",
    b"16",
    b"17",
    b"99999999999999999999",
    b"abc",
    b" ",
    b"\t",
    b"\"",
    b"'",
    b"\\",
    b"\\x4",
    b"\\x41",
    b"*1\r\n",
    b"*2\r\n",
    b"$3\r\nfoo\r\n",
    b"$0\r\n\r\n",
    b"+OK\r\n",
    b":7\r\n",
    b"\x00",
    b"\xff",
    b"PING",
    b"SET k v\r\n",
    b"a\"b c\"",
];

impl Arbitrary for AnyBytes {
    fn arbitrary(g: &mut Gen) -> AnyBytes {
        let mut bytes = Vec::new();
        if bool::arbitrary(g) {
            bytes = wire(&any_value(g, 4));
            for _ in 0..u8::arbitrary(g) % 4 {
                let at = usize::arbitrary(g) % (bytes.len() + 1);
                match u8::arbitrary(g) % 3 {
                    0 if at < bytes.len() => bytes[at] = u8::arbitrary(g),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes
                        .splice(at..at, g.choose(PIECES).unwrap().iter().copied())
                        .for_each(drop),
                }
            }
        }
        for _ in 0..usize::arbitrary(g) % 16 {
            if u8::arbitrary(g) % 8 == 0 {
                bytes.push(u8::arbitrary(g));
            } else {
                bytes.extend_from_slice(g.choose(PIECES).unwrap());
            }
        }
        AnyBytes(bytes)
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = AnyBytes>> {
        Box::new(self.0.shrink().map(AnyBytes))
    }
}

/// Every frame a decoder finds in `buf`, reading as a server does: frames are cut from the
/// front as they are returned. Ends at the first error, or with the unfinished rest.
struct Run<T> {
    frames: Vec<T>,
    end: Result<Vec<u8>, ProtocolError>,
}

/// Reads `chunks` one after another through `next` (a decoder's one call), as if each chunk
/// were one read from a socket.
fn run<T>(
    chunks: &[&[u8]],
    mut next: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, ProtocolError>,
) -> Run<T> {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match next(&buf) {
                Err(e) => return Run { frames, end: Err(e) },
                Ok(None) => break,
                Ok(Some((frame, consumed))) => {
                    assert!(consumed > 0 && consumed <= buf.len(), "consumed {consumed}");
                    buf.drain(..consumed);
                    frames.push(frame);
                }
            }
        }
    }
    Run { frames, end: Ok(buf) }
}

/// Cuts `bytes` into pieces of the given sizes (the last piece takes the rest).
fn pieces<'a>(bytes: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for &size in sizes {
        let (piece, tail) = rest.split_at((size as usize % 8).min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out.push(rest);
    out
}

/// Decoding any value written within the limits gives it back, and takes all its bytes.
#[test]
fn property_encode_then_decode_is_the_identity() {
    fn property(value: AnyValue) -> bool {
        let buf = wire(&value.0);
        decode(&buf, &limits()) == Ok(Some((value.0, buf.len())))
    }
    quickcheck(1000).quickcheck(property as fn(AnyValue) -> bool);
}

/// Every proper prefix of a valid encoding is incomplete, and a decoder that saw any prefix
/// first then returns the value as if it had seen the whole at once. Likewise for commands.
#[test]
fn property_every_split_point_of_a_valid_encoding_gives_the_same_result() {
    fn property(value: AnyValue, command: Vec<Vec<u8>>) -> bool {
        let buf = wire(&value.0);
        let whole = Ok(Some((value.0, buf.len())));
        for split in 0..buf.len() {
            let mut decoder = Decoder::new(limits());
            if decode(&buf[..split], &limits()) != Ok(None)
                || decoder.decode(&buf[..split]) != Ok(None)
                || decoder.decode(&buf) != whole
            {
                return false;
            }
        }
        if command.is_empty() {
            return true;
        }
        let mut buf = BytesMut::new();
        resp::write_command(&mut buf, &command);
        let args: Vec<Bytes> = command.into_iter().map(Bytes::from).collect();
        let whole = Ok(Some((args, buf.len())));
        (0..buf.len()).all(|split| {
            let mut decoder = CommandDecoder::new(limits());
            parse_command(&buf[..split], &limits()) == Ok(None)
                && decoder.parse(&buf[..split]) == Ok(None)
                && decoder.parse(&buf) == whole
        })
    }
    // Every split point is tried, so keep the values small.
    quickcheck(300).rng(Gen::new(20)).quickcheck(property as fn(AnyValue, Vec<Vec<u8>>) -> bool);
}

/// Any bytes, cut into any pieces: no panic, and the frames and the outcome (an error, or the
/// unfinished rest) are the same whether the bytes come at once or piece by piece, through the
/// resumable decoders or the one-shot functions, with the default or tight limits.
#[test]
fn property_any_bytes_decode_the_same_however_they_arrive() {
    fn property(bytes: AnyBytes, sizes: Vec<u8>, tight_limits: bool) -> bool {
        let limits = if tight_limits { tight() } else { limits() };
        let chunks = pieces(&bytes.0, &sizes);

        let once = run(&[&bytes.0], |buf| decode(buf, &limits));
        let mut decoder = Decoder::new(limits);
        let resumed = run(&chunks, |buf| decoder.decode(buf));
        let retried = run(&chunks, |buf| decode(buf, &limits));
        let values_agree = [&resumed, &retried]
            .iter()
            .all(|other| other.frames == once.frames && other.end == once.end);

        let once = run(&[&bytes.0], |buf| parse_command(buf, &limits));
        let mut decoder = CommandDecoder::new(limits);
        let resumed = run(&chunks, |buf| decoder.parse(buf));
        // Skipped input can be reported separately from the command after it (as an empty
        // argument list) when the two arrive apart, so compare the commands alone.
        let commands = |run: &Run<Vec<Bytes>>| -> Vec<Vec<Bytes>> {
            run.frames.iter().filter(|args| !args.is_empty()).cloned().collect()
        };
        let commands_agree = commands(&resumed) == commands(&once)
            && match (&resumed.end, &once.end) {
                (Err(a), Err(b)) => a == b,
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
        values_agree && commands_agree
    }
    quickcheck(3000).quickcheck(property as fn(AnyBytes, Vec<u8>, bool) -> bool);
}

/// An inline command quoting each byte as `\xHH` gives back any arguments, and plain words
/// separated by any whitespace are split back into the words.
#[test]
fn property_inline_commands_give_back_their_arguments() {
    fn property(words: Vec<Vec<u8>>, separators: Vec<u8>) -> bool {
        if words.is_empty() {
            return true;
        }
        let mut quoted = Vec::new();
        for word in &words {
            quoted.push(b'"');
            for b in word {
                quoted.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            quoted.extend_from_slice(b"\" ");
        }
        quoted.extend_from_slice(b"\r\n");
        let expected: Vec<Bytes> = words.iter().cloned().map(Bytes::from).collect();
        if command(&quoted) != Ok(Some((expected, quoted.len()))) {
            return false;
        }

        let plain: Vec<Vec<u8>> = words
            .iter()
            .map(|w| w.iter().map(|b| b'a' + b % 26).collect::<Vec<u8>>())
            .filter(|w| !w.is_empty())
            .collect();
        let space =
            |i: usize| [b' ', b'\t', 0x0b, 0x0c][separators.get(i).map_or(0, |&s| s as usize % 4)];
        let mut line = vec![space(0)];
        for (i, word) in plain.iter().enumerate() {
            line.extend_from_slice(word);
            line.push(space(i + 1));
        }
        line.push(b'\n');
        let expected: Vec<Bytes> = plain.into_iter().map(Bytes::from).collect();
        command(&line) == Ok(Some((expected, line.len())))
    }
    quickcheck(500).quickcheck(property as fn(Vec<Vec<u8>>, Vec<u8>) -> bool);
}
