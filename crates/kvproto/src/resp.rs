//! RESP2, the Redis serialization protocol (version 2): the codec the server and our client
//! share, so that redis-cli, redis-benchmark and any Redis library can talk to the store.
//!
//! **The format.** Every value starts with a type byte and every line ends with `\r\n`:
//!
//! | type | wire form | [`Value`] |
//! |---|---|---|
//! | simple string | `+OK\r\n` | [`Value::Simple`] |
//! | error | `-ERR message\r\n` | [`Value::Error`] |
//! | integer | `:-42\r\n` | [`Value::Integer`] |
//! | bulk string | `$3\r\nfoo\r\n`, null: `$-1\r\n` | [`Value::Bulk`] |
//! | array | `*2\r\n` then two values, null: `*-1\r\n` | [`Value::Array`] |
//!
//! A client sends a command as an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or,
//! as people typing into telnet or netcat do, as an *inline command*: one line of text split
//! on whitespace (`GET k\r\n`). [`parse_command`] accepts both; [`decode`] reads
//! any value (a reply, for the client). Both are incremental: given the bytes received so far
//! they return `Ok(None)` until a whole frame is there, then the frame and how many bytes it
//! took, so pipelined frames are read one after another from the same buffer. [`Decoder`] and
//! [`CommandDecoder`] do the same but remember how far they got, so a frame that arrives in many
//! pieces is read once rather than again from its start at every piece.
//!
//! **Safety.** The peer may be hostile. The decoders never panic on any input, and they never
//! trust a length the peer merely claims: every claimed length is checked against [`Limits`],
//! and memory is reserved only in proportion to the bytes actually received (a header claiming
//! a billion elements or a gigabyte is refused if it exceeds the limits, and otherwise costs
//! nothing until the bytes arrive). Every line is searched only up to its longest legal
//! length, so a peer that never sends `\r\n` is refused rather than buffered. Arrays nest at
//! most [`Limits::max_depth`] deep, and decoding keeps an explicit stack rather than recursing.
//! What the decoders do *not* bound is the total size of one frame (up to
//! `max_array_len × max_bulk_bytes` in principle): the connection must cap the bytes it buffers
//! for one unfinished frame, as Redis does with `client-query-buffer-limit`.
//!
//! **Errors.** A malformed frame gives a [`ProtocolError`] whose message is Redis's own where
//! Redis has one; the stream cannot be resynchronized after it, so the server sends
//! [`ProtocolError::to_reply`] and closes the connection, as Redis does.
//!
//! A server's read loop, in short:
//!
//! ```
//! use bytes::{Buf, BytesMut};
//! use kvproto::resp::{self, CommandDecoder, Limits, Value};
//!
//! let mut commands = CommandDecoder::new(Limits::default()); // One per connection.
//! let mut input = BytesMut::new(); // What the connection has read so far:
//! input.extend_from_slice(b"*1\r\n$4\r\nPING\r\n"); // an array command,
//! input.extend_from_slice(b"ECHO hi\r\n\r\n"); // an inline one and a blank line,
//! input.extend_from_slice(b"*2\r\n$3\r\nGET"); // part of another.
//! let mut output = BytesMut::new();
//! loop {
//!     let (args, consumed) = match commands.parse(&input) {
//!         Ok(Some(command)) => command,
//!         Ok(None) => break, // Read more input, then parse again.
//!         Err(e) => {
//!             e.to_reply().encode(&mut output); // Then send it and close the connection.
//!             break;
//!         }
//!     };
//!     input.advance(consumed);
//!     match args.first().map(|name| &name[..]) {
//!         None => {} // Only blank lines: nothing to run.
//!         Some(b"PING") => resp::write_simple(&mut output, "PONG"),
//!         Some(b"ECHO") if args.len() == 2 => resp::write_bulk(&mut output, &args[1]),
//!         Some(_) => Value::error("ERR unknown command").encode(&mut output),
//!     }
//! }
//! assert_eq!(&output[..], b"+PONG\r\n$2\r\nhi\r\n");
//! assert_eq!(&input[..], b"*2\r\n$3\r\nGET"); // The start of the next command waits.
//! ```

use std::mem;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

/// The limits a decoder enforces on what a peer may send. See each field for its default.
///
/// Lengths over a limit are refused with a [`ProtocolError`]; lengths within it are still only
/// believed as far as the bytes received bear them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string, in bytes. Default 64 MiB (Redis's `proto-max-bulk-len`
    /// defaults to 512 MiB; a smaller limit bounds what one argument can make the server
    /// buffer).
    pub max_bulk_bytes: usize,
    /// The most elements in one array, and so the most arguments of a command sent as an
    /// array (an inline command's are bounded by its line's length instead). Default
    /// 1,048,576 (2^20, Redis's historical limit on a command's arguments).
    pub max_array_len: usize,
    /// How deeply arrays may nest: a top-level array is depth 1, an array inside it depth 2.
    /// Default 8, enough for any Redis reply we use (commands are flat arrays, depth 1). Keep it
    /// small: dropping or encoding a [`Value`] recurses once per level.
    pub max_depth: usize,
    /// The longest line, in bytes without its line ending, of an inline command or of a
    /// simple string or error. Default 64 KiB (Redis's `PROTO_INLINE_MAX_SIZE`).
    pub max_inline_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_bytes: 64 << 20,
            max_array_len: 1 << 20,
            max_depth: 8,
            max_inline_bytes: 64 << 10,
        }
    }
}

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// A simple string (`+OK`): a short status text with no `\r` or `\n` in it.
    Simple(String),
    /// An error (`-ERR message`): by convention its first word names the kind of error.
    Error(String),
    /// A signed 64-bit integer (`:42`).
    Integer(i64),
    /// A binary-safe bulk string (`$3\r\nfoo`); `None` is the null bulk string (`$-1`), which
    /// Redis returns for a missing key.
    Bulk(Option<Bytes>),
    /// An array of values (`*2`); `None` is the null array (`*-1`).
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The null bulk string, `$-1\r\n`: Redis's reply for a missing key.
    pub const NULL: Value = Value::Bulk(None);

    /// The simple string `+OK\r\n`.
    pub fn ok() -> Value {
        Value::Simple("OK".to_owned())
    }

    /// A bulk string holding `data`.
    pub fn bulk(data: impl Into<Bytes>) -> Value {
        Value::Bulk(Some(data.into()))
    }

    /// An error reply. Redis prefixes the message with a kind (`ERR`, `WRONGTYPE`, ...).
    pub fn error(message: impl Into<String>) -> Value {
        Value::Error(message.into())
    }

    /// Appends this value's wire form to `out`. A `\r` or `\n` inside a simple string or an
    /// error would break the framing, so each is written as a space (as Redis does for errors).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Value::Simple(s) => write_simple(out, s),
            Value::Error(s) => write_error(out, s),
            Value::Integer(n) => write_integer(out, *n),
            Value::Bulk(Some(data)) => write_bulk(out, data),
            Value::Bulk(None) => write_null_bulk(out),
            Value::Array(Some(items)) => {
                write_array_len(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Value::Array(None) => write_null_array(out),
        }
    }

    /// This value's wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

/// Appends the simple string `+text\r\n`, with any `\r` or `\n` in `text` written as a space.
pub fn write_simple(out: &mut BytesMut, text: &str) {
    write_line(out, b'+', text);
}

/// Appends the error `-text\r\n`, with any `\r` or `\n` in `text` written as a space.
pub fn write_error(out: &mut BytesMut, text: &str) {
    write_line(out, b'-', text);
}

/// Appends the integer `:n\r\n`.
pub fn write_integer(out: &mut BytesMut, n: i64) {
    write_number_line(out, b':', n < 0, n.unsigned_abs());
}

/// Appends the bulk string `$len\r\ndata\r\n`.
pub fn write_bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    write_number_line(out, b'$', false, data.len() as u64);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends the null bulk string `$-1\r\n`.
pub fn write_null_bulk(out: &mut BytesMut) {
    out.put_slice(b"$-1\r\n");
}

/// Appends an array header `*len\r\n`; the caller then writes `len` values.
pub fn write_array_len(out: &mut BytesMut, len: usize) {
    write_number_line(out, b'*', false, len as u64);
}

/// Appends the null array `*-1\r\n`.
pub fn write_null_array(out: &mut BytesMut) {
    out.put_slice(b"*-1\r\n");
}

/// Appends a command in the form clients send: an array of bulk strings, one per argument.
pub fn write_command<A: AsRef<[u8]>>(out: &mut BytesMut, args: &[A]) {
    write_array_len(out, args.len());
    for arg in args {
        write_bulk(out, arg.as_ref());
    }
}

fn write_line(out: &mut BytesMut, kind: u8, text: &str) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    if text.bytes().any(is_line_end) {
        out.extend(text.bytes().map(|b| if is_line_end(b) { b' ' } else { b }));
    } else {
        out.put_slice(text.as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// Writes `kind`, the decimal form of the number with sign `negative` and magnitude
/// `magnitude`, and `\r\n`.
fn write_number_line(out: &mut BytesMut, kind: u8, negative: bool, mut magnitude: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 decimal digits.
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    out.reserve(24);
    out.put_u8(kind);
    if negative {
        out.put_u8(b'-');
    }
    out.put_slice(&digits[start..]);
    out.put_slice(b"\r\n");
}

fn is_line_end(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// Why a peer's bytes are not valid RESP2. After any of these the stream cannot be
/// resynchronized: reply with [`ProtocolError::to_reply`] and close the connection.
///
/// The messages are Redis's where Redis has one (the first six variants), so clients see the
/// errors they would see from Redis; the rest are ours, worded the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An array's length line is not an integer, is below -1 (or below 0 in a command's
    /// unparsed form, which Redis skips), or exceeds [`Limits::max_array_len`].
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A bulk string's length line is not an integer, is negative (only `$-1`, the null bulk
    /// string, is allowed, and not in a command), or exceeds [`Limits::max_bulk_bytes`].
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An element of a command array does not start with `$` (the byte found is given).
    #[error("Protocol error: expected '$', got '{}'", show_byte(*.0))]
    ExpectedBulk(u8),
    /// An inline command's line is longer than [`Limits::max_inline_bytes`].
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// An inline command has an unterminated quote, or a closing quote followed by something
    /// other than whitespace or the end of the line.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A value starts with a byte that is no RESP2 type (the byte found is given). This is
    /// hiredis's message for the same fault.
    #[error("Protocol error, got \"{}\" as reply type byte", show_byte(*.0))]
    UnknownType(u8),
    /// An integer's line (`:`) is not a decimal integer in the range of `i64`.
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    /// A simple string or error line is longer than [`Limits::max_inline_bytes`].
    #[error("Protocol error: too big simple string")]
    TooBigSimpleString,
    /// A line ends with something other than `\r\n`: a `\r` not followed by `\n`, a bare `\n`
    /// in a simple string or error, or a bulk string's data not followed by `\r\n`.
    #[error("Protocol error: expected '\\r\\n'")]
    ExpectedCrlf,
    /// Arrays nest deeper than [`Limits::max_depth`].
    #[error("Protocol error: arrays nested too deep")]
    NestingTooDeep,
}

impl ProtocolError {
    /// The reply Redis sends before closing the connection: `-ERR <message>`.
    pub fn to_reply(&self) -> Value {
        Value::Error(format!("ERR {self}"))
    }
}

/// A byte as Redis's `%c` would show it when printable, escaped otherwise.
fn show_byte(b: u8) -> String {
    if b == b' ' || b.is_ascii_graphic() {
        char::from(b).to_string()
    } else {
        b.escape_ascii().to_string()
    }
}

/// Decodes one value from the front of `buf`: `Ok(None)` if `buf` holds only part of one,
/// `Ok(Some((value, consumed)))` if its first `consumed` bytes are one, or the reason they
/// cannot be. Bytes after the value (the next pipelined frames) are left alone.
///
/// This starts from the front of `buf` at every call; a [`Decoder`] remembers its progress.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, ProtocolError> {
    Decoder::new(*limits).decode(buf)
}

/// Parses one command from the front of `buf`, in either form a client may send:
///
/// * a buffer starting with `*` holds an array of bulk strings (`*1\r\n$4\r\nPING\r\n`), each
///   one an argument. `$-1` is refused. As in Redis, `*0` and a negative count (`*-1`) are not
///   commands and are skipped.
/// * anything else is an *inline command*: a line ending in `\n` (a `\r` before it is
///   dropped), split into arguments on whitespace (space, tab, `\r`, `\n`, vertical tab, form
///   feed), as Redis splits it. An argument may be quoted, even in part (`a"b c"` is `ab c`):
///   in double quotes, `\n`, `\r`, `\t`, `\b`, `\a`, `\xHH` (two hex digits) and `\` before
///   any other byte (`\"`, `\\`) are escapes; in single quotes only `\'` is. A closing quote
///   must be followed by whitespace or the end of the line. `""` is an empty argument. Empty
///   and blank lines are skipped.
///
/// Returns `Ok(None)` if `buf` holds no whole command yet, or `Ok(Some((args, consumed)))`:
/// drop the first `consumed` bytes and run `args`. Skipped input (blank lines, `*0`) is
/// consumed along with the command after it. `args` is empty only when the buffer held
/// nothing but skipped input before an incomplete command: consume those bytes, run nothing.
///
/// This starts from the front of `buf` at every call; a [`CommandDecoder`] remembers its
/// progress.
pub fn parse_command(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
    CommandDecoder::new(*limits).parse(buf)
}

/// The fewest bytes an element of an array can take (`+\r\n`): an array header's count
/// reserves no more slots than the bytes already received could fill.
const MIN_ELEMENT_BYTES: usize = 3;

/// The fewest bytes an argument of a command can take (`$0\r\n\r\n`).
const MIN_ARGUMENT_BYTES: usize = 6;

/// The longest legal integer line, without its `\r\n`: `-9223372036854775808`.
const MAX_INTEGER_CHARS: usize = 20;

/// What the readers below return: `Ok(None)` if the item is not all there yet, else the item
/// and where the input after it starts.
type Read<T> = Result<Option<(T, usize)>, ProtocolError>;

/// An incremental decoder of [`Value`]s that remembers how far it has read into an
/// unfinished frame, so each byte of a frame that arrives in pieces is examined once.
///
/// The contract: pass the buffer of unconsumed input at every call. After `Ok(None)`, the
/// next call's buffer must start with the same bytes (more may have been appended); after
/// `Ok(Some((_, consumed)))`, drop the first `consumed` bytes before the next call. After an
/// error the decoder starts afresh, but the stream itself is unusable. A buffer shorter than
/// the decoder's progress makes it start over; it never panics, whatever it is given.
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    /// Where the next element starts in the current frame.
    pos: usize,
    /// Where the search for the end of a simple string's line resumes (an offset into the
    /// frame, like `pos`).
    searched: usize,
    /// The arrays being filled, outermost first: the elements so far and how many are to come.
    open: Vec<(Vec<Value>, usize)>,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Decoder {
        Decoder { limits, pos: 0, searched: 0, open: Vec::new() }
    }

    /// Decodes the next value from the front of `buf`, resuming where the last call stopped;
    /// returns as [`decode`] does.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
        if self.pos > buf.len() || self.searched > buf.len() {
            self.reset();
        }
        let result = self.step(buf);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.searched = 0;
        self.open.clear();
    }

    fn step(&mut self, buf: &[u8]) -> Read<Value> {
        loop {
            let Some((element, next)) =
                read_element(buf, self.pos, &self.limits, &mut self.searched)?
            else {
                return Ok(None);
            };
            let mut value = match element {
                Element::Value(value) => value,
                Element::Array(len) => {
                    if self.open.len() >= self.limits.max_depth {
                        return Err(ProtocolError::NestingTooDeep);
                    }
                    if len == 0 {
                        Value::Array(Some(Vec::new()))
                    } else {
                        let present = (buf.len() - next) / MIN_ELEMENT_BYTES;
                        self.open.push((Vec::with_capacity(len.min(present)), len));
                        self.advance(next);
                        continue;
                    }
                }
            };
            self.advance(next);
            // Place the finished value in its array, closing every array it completes.
            loop {
                let Some((items, remaining)) = self.open.last_mut() else {
                    let consumed = self.pos;
                    self.reset();
                    return Ok(Some((value, consumed)));
                };
                items.push(value);
                *remaining -= 1;
                if *remaining > 0 {
                    break;
                }
                value = Value::Array(Some(mem::take(items)));
                self.open.pop();
            }
        }
    }

    fn advance(&mut self, next: usize) {
        self.pos = next;
        self.searched = 0;
    }
}

/// What [`read_element`] found: a whole value, or the header of a non-null array whose
/// elements follow.
enum Element {
    Value(Value),
    Array(usize),
}

/// Reads the element starting at `buf[pos]`: `Ok(None)` if it is not all there yet, else the
/// element and where the next one starts. `searched` carries a simple string's search for
/// its line end across calls.
fn read_element(buf: &[u8], pos: usize, limits: &Limits, searched: &mut usize) -> Read<Element> {
    let Some(&kind) = buf.get(pos) else { return Ok(None) };
    let body = pos + 1;
    match kind {
        b'+' | b'-' => {
            let Some((text, next)) = read_text_line(buf, body, limits.max_inline_bytes, searched)?
            else {
                return Ok(None);
            };
            let text = String::from_utf8_lossy(&buf[text]).into_owned();
            let value = if kind == b'+' { Value::Simple(text) } else { Value::Error(text) };
            Ok(Some((Element::Value(value), next)))
        }
        b':' => {
            let line = read_integer_line(buf, body).map_err(|()| ProtocolError::InvalidInteger)?;
            Ok(line.map(|(n, next)| (Element::Value(Value::Integer(n)), next)))
        }
        b'$' => {
            let bulk = read_bulk(buf, body, limits, true)?;
            Ok(bulk.map(|(data, next)| {
                let data = data.map(|range| Bytes::copy_from_slice(&buf[range]));
                (Element::Value(Value::Bulk(data)), next)
            }))
        }
        b'*' => {
            let Some((len, next)) =
                read_integer_line(buf, body).map_err(|()| ProtocolError::InvalidMultibulkLength)?
            else {
                return Ok(None);
            };
            if len == -1 {
                return Ok(Some((Element::Value(Value::Array(None)), next)));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= limits.max_array_len)
                .ok_or(ProtocolError::InvalidMultibulkLength)?;
            Ok(Some((Element::Array(len), next)))
        }
        other => Err(ProtocolError::UnknownType(other)),
    }
}

/// Reads a bulk string whose length line starts at `buf[at]` (just after the `$`): `Ok(None)`
/// if it is not all there yet, else its data (`None` for `$-1`, if `allow_null`) and where the
/// next element starts. The data must be followed by `\r\n`.
fn read_bulk(
    buf: &[u8],
    at: usize,
    limits: &Limits,
    allow_null: bool,
) -> Read<Option<Range<usize>>> {
    let Some((len, start)) =
        read_integer_line(buf, at).map_err(|()| ProtocolError::InvalidBulkLength)?
    else {
        return Ok(None);
    };
    if len == -1 && allow_null {
        return Ok(Some((None, start)));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= limits.max_bulk_bytes)
        .ok_or(ProtocolError::InvalidBulkLength)?;
    let end = start.saturating_add(len);
    let next = end.saturating_add(2);
    if buf.len() < next {
        return Ok(None);
    }
    if &buf[end..next] != b"\r\n" {
        return Err(ProtocolError::ExpectedCrlf);
    }
    Ok(Some((Some(start..end), next)))
}

/// Reads the integer line starting at `buf[at]` (just after its type byte): `Ok(None)` if
/// its `\r\n` has not arrived, else the integer and where the next element starts. Refuses,
/// as soon as it is seen, any byte that cannot be part of a legal integer line, so a peer
/// cannot make the search run on. The caller names the error.
fn read_integer_line(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, ()> {
    let line = buf.get(at..).unwrap_or_default();
    for (i, &b) in line.iter().enumerate() {
        match b {
            b'\r' => {
                return match line.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => parse_integer(&line[..i]).map(|n| Some((n, at + i + 2))),
                    Some(_) => Err(()),
                };
            }
            b'-' if i == 0 => {}
            b'0'..=b'9' if i < MAX_INTEGER_CHARS => {}
            _ => return Err(()),
        }
    }
    Ok(None)
}

/// Parses a decimal integer as strictly as Redis's `string2ll`: an optional `-`, then `0`
/// alone or digits not starting with `0`; no `+`, no spaces, no `-0`, no overflow.
fn parse_integer(text: &[u8]) -> Result<i64, ()> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return Err(()),
        [b'0'] if !negative => return Ok(0),
        [b'0', ..] => return Err(()),
        _ => {}
    }
    let mut magnitude: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(());
        }
        magnitude =
            magnitude.checked_mul(10).ok_or(())?.checked_add(i128::from(d - b'0')).ok_or(())?;
    }
    i64::try_from(if negative { -magnitude } else { magnitude }).map_err(|_| ())
}

/// Reads the text of a simple string or error line starting at `buf[at]`: `Ok(None)` if its
/// `\r\n` has not arrived, else the range of its text and where the next element starts.
/// The search for the line end looks at most `max + 1` bytes past `at`, resuming from
/// `*searched`, which it advances when the line is unfinished.
fn read_text_line(buf: &[u8], at: usize, max: usize, searched: &mut usize) -> Read<Range<usize>> {
    let window_end = at.saturating_add(max).saturating_add(1).min(buf.len());
    let from = (*searched).max(at).min(window_end);
    match buf[from..window_end].iter().position(|&b| is_line_end(b)) {
        Some(i) => {
            let cr = from + i;
            if buf[cr] == b'\n' {
                return Err(ProtocolError::ExpectedCrlf);
            }
            match buf.get(cr + 1) {
                None => {
                    *searched = cr;
                    Ok(None)
                }
                Some(b'\n') => Ok(Some((at..cr, cr + 2))),
                Some(_) => Err(ProtocolError::ExpectedCrlf),
            }
        }
        None if window_end - at > max => Err(ProtocolError::TooBigSimpleString),
        None => {
            *searched = window_end;
            Ok(None)
        }
    }
}

/// An incremental parser of commands, in both the forms [`parse_command`] accepts, that
/// remembers how far it has read into an unfinished command, so each byte of a command that
/// arrives in pieces is examined once. The server keeps one per connection.
///
/// The contract is [`Decoder`]'s: pass the unconsumed input at every call; after `Ok(None)`
/// only append to it; after `Ok(Some((_, consumed)))` drop `consumed` bytes from its front.
/// It never panics, whatever it is given.
///
/// **Command size.** A decoder made with
/// [`with_max_command_bytes`](Self::with_max_command_bytes) also bounds the *size* of a
/// command: the sum of its arguments' lengths (the command name included; not the framing).
/// Each length must still be within [`Limits::max_bulk_bytes`] (a larger one is a protocol
/// error, as in Redis). It decides from the lengths the client declares, as each argument's
/// header is read and before its data is buffered: once they add up to more than the limit,
/// [`next_command`](Self::next_command) reports [`Command::TooLarge`] at once, and from then on
/// consumes the rest of that command's bytes as they arrive without keeping them (only the
/// short `$len` headers are read, to find where the command ends), so the command after it is
/// read as usual. The stream stays usable; the server answers the oversized command with an
/// error in its place among the replies.
#[derive(Debug, Clone)]
pub struct CommandDecoder {
    limits: Limits,
    /// The largest command, as the sum of its arguments' lengths.
    max_command_bytes: u64,
    /// Where the next argument starts in the current array command.
    pos: usize,
    /// Where the search for the end of an inline command's line resumes.
    searched: usize,
    /// The arguments of the current array command so far.
    args: Vec<Bytes>,
    /// The sum of the lengths of the current array command's arguments declared so far.
    size: u64,
    /// How many arguments of the current array command are still to come; 0 between commands.
    remaining: usize,
    /// The rest of an oversized command being consumed, if one is.
    discard: Option<Discard>,
}

/// What is left of an oversized command whose bytes are being consumed unread.
#[derive(Debug, Clone, Copy)]
struct Discard {
    /// Data bytes of the current argument still to skip.
    data: u64,
    /// Whether the current argument's closing `\r\n` is still to come.
    crlf: bool,
    /// Arguments after the current one.
    args: usize,
}

/// What [`CommandDecoder::next_command`] found at the front of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A whole command's arguments. Empty when only skipped input (blank lines, `*0`, or part
    /// of an oversized command) was consumed: run nothing.
    Args(Vec<Bytes>),
    /// A command whose arguments add up to more than the decoder's maximum command size: at
    /// least `size` bytes (the lengths declared when it was found too large; later arguments
    /// are not counted). Its remaining bytes are consumed by the next calls.
    TooLarge {
        /// The sum of the argument lengths declared so far, over the limit.
        size: u64,
    },
}

impl CommandDecoder {
    /// A command decoder enforcing `limits`, with no bound on a command's total size.
    pub fn new(limits: Limits) -> CommandDecoder {
        CommandDecoder::with_max_command_bytes(limits, u64::MAX)
    }

    /// A command decoder enforcing `limits` that also reports commands whose arguments add up
    /// to more than `max_command_bytes` bytes (see the type's docs).
    pub fn with_max_command_bytes(limits: Limits, max_command_bytes: u64) -> CommandDecoder {
        CommandDecoder {
            limits,
            max_command_bytes,
            pos: 0,
            searched: 0,
            args: Vec::new(),
            size: 0,
            remaining: 0,
            discard: None,
        }
    }

    /// Parses the next command from the front of `buf`, resuming where the last call stopped;
    /// returns as [`parse_command`] does. An oversized command (only with
    /// [`with_max_command_bytes`](Self::with_max_command_bytes)) is consumed and returned as
    /// no arguments here, like skipped input: [`next_command`](Self::next_command) reports it.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
        Ok(self.next_command(buf)?.map(|(command, consumed)| match command {
            Command::Args(args) => (args, consumed),
            Command::TooLarge { .. } => (Vec::new(), consumed),
        }))
    }

    /// Parses the next command from the front of `buf`, resuming where the last call stopped:
    /// `Ok(None)` if there is nothing to consume yet, else what was found and how many bytes
    /// to drop. Reports an oversized command as [`Command::TooLarge`] as soon as its declared
    /// lengths pass the limit; the calls after it consume its remaining bytes (as
    /// [`Command::Args`] with no arguments) until the next command starts.
    pub fn next_command(&mut self, buf: &[u8]) -> Result<Option<(Command, usize)>, ProtocolError> {
        if self.pos > buf.len() || self.searched > buf.len() {
            self.restart();
        }
        let mut start = 0;
        loop {
            if self.discard.is_some() {
                match self.skip(&buf[start..]) {
                    Err(e) => {
                        self.reset();
                        return Err(e);
                    }
                    Ok((used, finished)) => {
                        start += used;
                        if !finished {
                            return Ok((start > 0).then(|| (Command::Args(Vec::new()), start)));
                        }
                        continue;
                    }
                }
            }
            match self.frame(&buf[start..]) {
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
                Ok(None) => return Ok((start > 0).then(|| (Command::Args(Vec::new()), start))),
                Ok(Some((command, consumed))) => {
                    self.restart();
                    start += consumed;
                    match command {
                        Command::Args(args) if args.is_empty() => {}
                        command => return Ok(Some((command, start))),
                    }
                }
            }
        }
    }

    /// Forgets everything, an oversized command being consumed included.
    fn reset(&mut self) {
        self.restart();
        self.discard = None;
    }

    /// Forgets the progress into the current command (but not a discard in progress).
    fn restart(&mut self) {
        self.pos = 0;
        self.searched = 0;
        self.args = Vec::new();
        self.size = 0;
        self.remaining = 0;
    }

    /// Consumes what it can of an oversized command's rest from the front of `buf`: the bytes
    /// used, and whether the command is finished.
    fn skip(&mut self, buf: &[u8]) -> Result<(usize, bool), ProtocolError> {
        let mut pos = 0;
        while let Some(d) = self.discard.as_mut() {
            if d.data > 0 {
                let n = usize::try_from(d.data).unwrap_or(usize::MAX).min(buf.len() - pos);
                pos += n;
                d.data -= n as u64;
                if d.data > 0 {
                    return Ok((pos, false));
                }
            }
            if d.crlf {
                let Some(end) = buf.get(pos..pos + 2) else { return Ok((pos, false)) };
                if end != b"\r\n" {
                    return Err(ProtocolError::ExpectedCrlf);
                }
                pos += 2;
                d.crlf = false;
            }
            if d.args == 0 {
                self.discard = None;
                return Ok((pos, true));
            }
            match buf.get(pos) {
                None => return Ok((pos, false)),
                Some(b'$') => {}
                Some(&other) => return Err(ProtocolError::ExpectedBulk(other)),
            }
            let Some((len, next)) =
                read_integer_line(buf, pos + 1).map_err(|()| ProtocolError::InvalidBulkLength)?
            else {
                return Ok((pos, false));
            };
            let len = self.bulk_len(len)?;
            let Some(d) = self.discard.as_mut() else { break };
            d.data = len;
            d.crlf = true;
            d.args -= 1;
            pos = next;
        }
        Ok((pos, true))
    }

    /// Reads one frame from the front of `buf`: a command, skipped input (no arguments), or
    /// the start of an oversized command.
    fn frame(&mut self, buf: &[u8]) -> Read<Command> {
        if self.remaining == 0 {
            match buf.first() {
                None => return Ok(None),
                Some(b'*') => {
                    let Some((count, next)) = read_integer_line(buf, 1)
                        .map_err(|()| ProtocolError::InvalidMultibulkLength)?
                    else {
                        return Ok(None);
                    };
                    if count <= 0 {
                        return Ok(Some((Command::Args(Vec::new()), next)));
                    }
                    let count = usize::try_from(count)
                        .ok()
                        .filter(|&count| count <= self.limits.max_array_len)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    let present = (buf.len() - next) / MIN_ARGUMENT_BYTES;
                    self.args = Vec::with_capacity(count.min(present));
                    self.remaining = count;
                    self.pos = next;
                }
                Some(_) => return self.inline(buf),
            }
        }
        while self.remaining > 0 {
            let Some(&kind) = buf.get(self.pos) else { return Ok(None) };
            if kind != b'$' {
                return Err(ProtocolError::ExpectedBulk(kind));
            }
            // The declared length decides, before the data is waited for.
            let Some((len, data_start)) = read_integer_line(buf, self.pos + 1)
                .map_err(|()| ProtocolError::InvalidBulkLength)?
            else {
                return Ok(None);
            };
            let len = self.bulk_len(len)?;
            let size = self.size.saturating_add(len);
            if size > self.max_command_bytes {
                self.discard = Some(Discard { data: len, crlf: true, args: self.remaining - 1 });
                return Ok(Some((Command::TooLarge { size }, data_start)));
            }
            let Some((Some(data), next)) = read_bulk(buf, self.pos + 1, &self.limits, false)?
            else {
                return Ok(None);
            };
            self.args.push(Bytes::copy_from_slice(&buf[data]));
            self.size = size;
            self.pos = next;
            self.remaining -= 1;
        }
        Ok(Some((Command::Args(mem::take(&mut self.args)), self.pos)))
    }

    /// A declared argument length, checked: not negative, at most [`Limits::max_bulk_bytes`].
    fn bulk_len(&self, len: i64) -> Result<u64, ProtocolError> {
        u64::try_from(len)
            .ok()
            .filter(|&len| len <= self.limits.max_bulk_bytes as u64)
            .ok_or(ProtocolError::InvalidBulkLength)
    }

    /// Reads an inline command's line from the front of `buf` and splits it.
    fn inline(&mut self, buf: &[u8]) -> Read<Command> {
        let max = self.limits.max_inline_bytes;
        // The line, a '\r' and the '\n': beyond that, a missing '\n' means too long a line.
        let window_end = max.saturating_add(2).min(buf.len());
        let from = self.searched.min(window_end);
        let Some(i) = buf[from..window_end].iter().position(|&b| b == b'\n') else {
            if window_end - 1 > max {
                return Err(ProtocolError::TooBigInlineRequest);
            }
            self.searched = window_end;
            return Ok(None);
        };
        let newline = from + i;
        let end = if newline > 0 && buf[newline - 1] == b'\r' { newline - 1 } else { newline };
        if end > max {
            return Err(ProtocolError::TooBigInlineRequest);
        }
        let args = split_inline(&buf[..end])?;
        let size = args.iter().map(|a| a.len() as u64).fold(0u64, u64::saturating_add);
        if size > self.max_command_bytes {
            return Ok(Some((Command::TooLarge { size }, newline + 1)));
        }
        Ok(Some((Command::Args(args), newline + 1)))
    }
}

/// Whitespace between inline arguments: C's `isspace` in the "C" locale, as Redis uses.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits an inline command's line into arguments (see [`parse_command`] for the syntax).
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_space(b)) {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        while let Some(&b) = line.get(i) {
            i = match b {
                b'"' => double_quoted(line, i + 1, &mut arg)?,
                b'\'' => single_quoted(line, i + 1, &mut arg)?,
                b if is_space(b) => break,
                b => {
                    arg.push(b);
                    i + 1
                }
            };
        }
        args.push(Bytes::from(arg));
    }
}

/// Appends the double-quoted text starting at `line[i]` (after the opening quote) to `arg`;
/// returns where the text after the closing quote starts.
fn double_quoted(line: &[u8], mut i: usize, arg: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match line.get(i..).unwrap_or_default() {
            [b'\\', b'x', hi, lo, ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                arg.push(hex_value(*hi) << 4 | hex_value(*lo));
                i += 4;
            }
            [b'\\', escaped, ..] => {
                arg.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => *other,
                });
                i += 2;
            }
            [b'"', ..] => return after_closing_quote(line, i),
            [b, ..] => {
                arg.push(*b);
                i += 1;
            }
            [] => return Err(ProtocolError::UnbalancedQuotes),
        }
    }
}

/// Appends the single-quoted text starting at `line[i]` (after the opening quote) to `arg`;
/// returns where the text after the closing quote starts. Only `\'` is an escape.
fn single_quoted(line: &[u8], mut i: usize, arg: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match line.get(i..).unwrap_or_default() {
            [b'\\', b'\'', ..] => {
                arg.push(b'\'');
                i += 2;
            }
            [b'\'', ..] => return after_closing_quote(line, i),
            [b, ..] => {
                arg.push(*b);
                i += 1;
            }
            [] => return Err(ProtocolError::UnbalancedQuotes),
        }
    }
}

/// Checks that the closing quote at `line[quote]` ends its argument; returns the position
/// after it.
fn after_closing_quote(line: &[u8], quote: usize) -> Result<usize, ProtocolError> {
    match line.get(quote + 1) {
        Some(&b) if !is_space(b) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(quote + 1),
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse_integer` is strict on its own, whatever its caller filtered out first.
    #[test]
    fn integers_are_parsed_as_strictly_as_redis_does() {
        for (text, n) in [("0", 0), ("7", 7), ("-7", -7), ("10", 10)] {
            assert_eq!(parse_integer(text.as_bytes()), Ok(n), "{text}");
        }
        assert_eq!(parse_integer(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_integer(b"-9223372036854775808"), Ok(i64::MIN));
        for text in [
            "",
            "-",
            "-0",
            "00",
            "01",
            "+1",
            " 1",
            "1 ",
            "1-2",
            "--1",
            "1x",
            "9223372036854775808",
            "-9223372036854775809",
            "999999999999999999999999999999999999999999",
        ] {
            assert_eq!(parse_integer(text.as_bytes()), Err(()), "{text:?}");
        }
    }
}
