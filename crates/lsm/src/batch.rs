//! Atomic write batches and their encoding in the WAL.

use bytes::Bytes;

use crate::format::{OP_DELETE, OP_PUT};

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
}

/// Changes applied atomically: after a crash either all of a batch is there or none of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put of `key` to `value`.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> &mut WriteBatch {
        self.ops.push(Op::Put { key: key.into(), value: value.into() });
        self
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: impl Into<Bytes>) -> &mut WriteBatch {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends the WAL payload for this batch, whose first operation gets sequence number `seq`:
    /// `seq:u64le count:u32le ( op:u8 klen:u32le key [vlen:u32le value] )*`.
    pub(crate) fn encode(&self, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for op in &self.ops {
            match op {
                Op::Put { key, value } => {
                    out.push(OP_PUT);
                    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    out.extend_from_slice(key);
                    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    out.extend_from_slice(value);
                }
                Op::Delete { key } => {
                    out.push(OP_DELETE);
                    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    out.extend_from_slice(key);
                }
            }
        }
    }

    /// Decodes a payload written by [`encode`](Self::encode): the first sequence number and
    /// the batch. `None` if the payload does not parse.
    pub(crate) fn decode(payload: &[u8]) -> Option<(u64, WriteBatch)> {
        let mut r = Reader { buf: payload, at: 0 };
        let seq = r.u64()?;
        let count = r.u32()? as usize;
        let mut ops = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let op = r.u8()?;
            let klen = r.u32()? as usize;
            let key = Bytes::copy_from_slice(r.take(klen)?);
            match op {
                OP_PUT => {
                    let vlen = r.u32()? as usize;
                    let value = Bytes::copy_from_slice(r.take(vlen)?);
                    ops.push(Op::Put { key, value });
                }
                OP_DELETE => ops.push(Op::Delete { key }),
                _ => return None,
            }
        }
        (r.at == payload.len()).then_some((seq, WriteBatch { ops }))
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.buf.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Some(u64::from_le_bytes(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = WriteBatch::new();
        b.put("k1", "v1").delete("k2").put(Bytes::new(), Bytes::from(vec![0u8, 255]));
        let mut out = Vec::new();
        b.encode(42, &mut out);
        assert_eq!(WriteBatch::decode(&out), Some((42, b.clone())));
        assert_eq!(b.len(), 3);
        assert!(!b.is_empty());
        // Any truncation or trailing byte is refused.
        for cut in 0..out.len() {
            assert_eq!(WriteBatch::decode(&out[..cut]), None, "cut at {cut}");
        }
        out.push(0);
        assert_eq!(WriteBatch::decode(&out), None);
    }

    #[test]
    fn unknown_op_is_refused() {
        let mut out = Vec::new();
        WriteBatch::new().delete("k").encode(1, &mut out);
        out[12] = 9;
        assert_eq!(WriteBatch::decode(&out), None);
    }
}
