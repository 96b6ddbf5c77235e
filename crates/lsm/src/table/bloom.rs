//! A bloom filter over a table's user keys: "definitely absent" or "maybe present".
//!
//! `bits_per_key` bits per key and k = bits_per_key × ln 2 probes give a false-positive rate
//! near 1% at 10 bits per key. Probes use double hashing over one 64-bit hash, which is part of
//! the on-disk format (FNV-1a, then a SplitMix64 finalizer).

pub(crate) struct Bloom {
    bits: Vec<u8>,
    k: u8,
}

fn hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Bloom {
    pub(crate) fn build<'a>(
        keys: impl ExactSizeIterator<Item = &'a [u8]>,
        bits_per_key: usize,
    ) -> Bloom {
        let nbits = (keys.len() * bits_per_key).max(64);
        let k = ((bits_per_key as f64 * std::f64::consts::LN_2) as u8).clamp(1, 30);
        let mut bloom = Bloom { bits: vec![0; nbits.div_ceil(8)], k };
        for key in keys {
            for bit in bloom.probes(key) {
                bloom.bits[bit / 8] |= 1 << (bit % 8);
            }
        }
        bloom
    }

    fn probes(&self, key: &[u8]) -> impl Iterator<Item = usize> + use<> {
        let h = hash(key);
        let (h1, h2) = (h as u32 as u64, (h >> 32) | 1);
        let nbits = (self.bits.len() * 8) as u64;
        (0..u64::from(self.k)).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % nbits) as usize)
    }

    pub(crate) fn may_contain(&self, key: &[u8]) -> bool {
        self.probes(key).all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.bits.clone();
        out.push(self.k);
        out
    }

    pub(crate) fn decode(mut bytes: Vec<u8>) -> Option<Bloom> {
        let k = bytes.pop()?;
        (k >= 1 && !bytes.is_empty()).then_some(Bloom { bits: bytes, k })
    }
}
