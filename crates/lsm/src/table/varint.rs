//! LEB128 variable-length integers: seven bits per byte, low bits first, high bit = "more".

pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes a varint at `*at`, advancing it. `None` if truncated or longer than ten bytes.
pub(crate) fn get(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_truncation() {
        for v in [0u64, 1, 127, 128, 300, 1 << 32, u64::MAX] {
            let mut out = Vec::new();
            super::put(&mut out, v);
            let mut at = 0;
            assert_eq!(super::get(&out, &mut at), Some(v));
            assert_eq!(at, out.len());
            let mut at = 0;
            assert_eq!(super::get(&out[..out.len() - 1], &mut at), None);
        }
        let mut at = 0;
        assert_eq!(super::get(&[0xff; 11], &mut at), None, "too long");
    }
}
