//! A latency histogram with log-spaced buckets, in the manner of HdrHistogram.
//!
//! Values below `2 * SUB_BUCKETS` (256) each have a bucket of their own and are counted
//! exactly. Above that, each power of two `[2^k, 2^(k+1))` is split into [`SUB_BUCKETS`] equal
//! buckets, so a bucket is never wider than 1/128 of the values in it: every quantile this
//! histogram reports is at least the exact one and less than 1% above it (and never above the
//! largest value recorded). Recording is a few shifts and an increment; the buckets for the
//! whole `u64` range take under 60 KiB, allocated only as far as the largest value needs.
//!
//! One histogram per thread, merged at the end ([`Histogram::merge`]), keeps recording free of
//! shared state.

/// log2 of [`SUB_BUCKETS`].
const SUB_BUCKET_BITS: u32 = 7;

/// How many buckets each power of two is split into above the exact range: the relative
/// precision is `1 / SUB_BUCKETS`.
pub const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// Counts of values (for example, latencies in nanoseconds) in log-spaced buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[i]` is how many recorded values fell in bucket `i` (see [`bucket_of`]).
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

/// The bucket a value falls in.
fn bucket_of(value: u64) -> usize {
    if value < 2 * SUB_BUCKETS {
        return value as usize;
    }
    // The top SUB_BUCKET_BITS + 1 bits of the value, after dropping `shift` low bits, lie in
    // [SUB_BUCKETS, 2 * SUB_BUCKETS); each shift gets the next SUB_BUCKETS buckets.
    let top_bit = 63 - value.leading_zeros();
    let shift = top_bit - SUB_BUCKET_BITS;
    let top = value >> shift;
    (u64::from(shift) * SUB_BUCKETS + top) as usize
}

/// The largest value that falls in `bucket`.
fn highest_in(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < 2 * SUB_BUCKETS {
        return bucket;
    }
    let shift = bucket / SUB_BUCKETS - 1;
    let top = bucket % SUB_BUCKETS + SUB_BUCKETS;
    // For the very last bucket `(top + 1) << shift` is 2^64: compute it as one less first.
    (top << shift) + ((1u64 << shift) - 1)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        let bucket = bucket_of(value);
        if bucket >= self.counts.len() {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
        if self.total == 0 || value < self.min {
            self.min = value;
        }
        self.max = self.max.max(value);
        self.total += 1;
        self.sum += u128::from(value);
    }

    /// Adds every value counted in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min = if self.total == 0 { other.min } else { self.min.min(other.min) };
        self.max = self.max.max(other.max);
        self.total += other.total;
        self.sum += other.sum;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The smallest value recorded (exact); 0 if none was.
    pub fn min(&self) -> u64 {
        self.min
    }

    /// The largest value recorded (exact); 0 if none was.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean of the values recorded (exact up to `f64` rounding); 0 if none was.
    pub fn mean(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.sum as f64 / self.total as f64 }
    }

    /// The value at quantile `q` (0.5 for the median, 0.999 for p99.9): the smallest value
    /// `v` such that at least `q` of the recorded values are `<= v`, rounded up to its bucket's
    /// upper end (less than 1% above it) but never above [`Histogram::max`]. `q` is clamped to
    /// `[0, 1]`; `q = 0` gives the smallest value's bucket. 0 if nothing was recorded.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        // The rank (1-based) of the wanted value in sorted order.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return highest_in(bucket).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labrpc::Rng;

    /// The exact value at quantile `q` of sorted `values`, by the same rank rule.
    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    const QUANTILES: [f64; 9] = [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0];

    #[test]
    fn buckets_tile_the_whole_range_without_gaps() {
        for bucket in 0..bucket_of(u64::MAX) {
            assert_eq!(bucket_of(highest_in(bucket)), bucket);
            assert_eq!(bucket_of(highest_in(bucket) + 1), bucket + 1, "bucket {bucket}");
        }
        assert_eq!(highest_in(bucket_of(u64::MAX)), u64::MAX);
        assert_eq!(bucket_of(0), 0);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        let values: Vec<u64> = (0..2 * SUB_BUCKETS).rev().collect();
        for &v in &values {
            h.record(v);
        }
        let mut sorted = values;
        sorted.sort_unstable();
        for q in QUANTILES {
            assert_eq!(h.value_at_quantile(q), exact(&sorted, q), "q = {q}");
        }
    }

    #[test]
    fn quantiles_match_a_sorted_vector_within_the_precision() {
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let mut h = Histogram::new();
            // Latency-like values: log-uniform over 1 ns .. ~1 hour, plus some heavy repeats.
            let n = 1 + rng.below(5000) as usize;
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                let bits = rng.below(42) as u32;
                let v = if rng.chance(1, 10) { 1_000_000 } else { rng.below(1 << bits) + 1 };
                values.push(v);
                h.record(v);
            }
            values.sort_unstable();
            for q in QUANTILES {
                let (got, want) = (h.value_at_quantile(q), exact(&values, q));
                assert!(got >= want, "seed {seed} q {q}: {got} < exact {want}");
                assert!(got - want <= want / SUB_BUCKETS, "seed {seed} q {q}: {got} vs {want}");
            }
            assert_eq!(h.value_at_quantile(1.0), *values.last().unwrap(), "max is exact");
            assert_eq!(h.min(), values[0]);
            assert_eq!(h.count(), n as u64);
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            assert!((h.mean() - mean).abs() <= mean * 1e-9);
        }
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut rng = Rng::new(7);
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for i in 0..3000 {
            let v = rng.below(1 << 30);
            if i % 3 == 0 { &mut a } else { &mut b }.record(v);
            all.record(v);
        }
        let mut merged = Histogram::new();
        merged.merge(&a);
        merged.merge(&Histogram::new());
        merged.merge(&b);
        assert_eq!(merged, all);
    }

    #[test]
    fn an_empty_histogram_answers_zero() {
        let h = Histogram::new();
        assert_eq!((h.count(), h.min(), h.max(), h.mean()), (0, 0, 0, 0.0));
        assert_eq!(h.value_at_quantile(0.99), 0);
        let mut one = Histogram::new();
        one.record(u64::MAX);
        assert_eq!(one.value_at_quantile(0.5), u64::MAX);
        assert_eq!(one.value_at_quantile(f64::NAN), u64::MAX);
    }
}
