//! Shared code of the benchmark binaries; the criterion benchmarks live in `benches/`, the
//! binaries in `src/bin/`.
//!
//! * [`histogram`]: a log-bucketed latency histogram (HdrHistogram's idea, under 1% error),
//!   used by `kvbench`.

pub mod histogram;
