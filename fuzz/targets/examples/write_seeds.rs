//! Writes the seed inputs (`fuzz_targets::seeds`) into `fuzz/corpus/<target>/seed-N`, for a new
//! target or after a format change: `cargo run -p fuzz-targets --example write_seeds`. Each seed
//! is run through its target first, so a seed that breaks an invariant is never written.

use std::path::Path;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    for &(name, target) in fuzz_targets::TARGETS {
        let dir = corpus.join(name);
        std::fs::create_dir_all(&dir).expect("the corpus directory can be created");
        let seeds = fuzz_targets::seeds(name);
        for (i, seed) in seeds.iter().enumerate() {
            target(seed);
            std::fs::write(dir.join(format!("seed-{i}")), seed).expect("a seed is written");
        }
        println!("{name}: {} seeds in {}", seeds.len(), dir.display());
    }
}
