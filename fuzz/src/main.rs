//! `gmlake-fuzz`: the stable-toolchain fuzz driver. It runs the corpus, then random inputs (and
//! mutations of corpus inputs) for a given time, through the same [`gmlake_fuzz::run_bytes`] the
//! cargo-fuzz target calls. Without coverage feedback it finds less than libFuzzer per hour, but it
//! needs no nightly toolchain. A failing input is written to `--artifacts` and the exit status is 1.

use clap::Parser;
use rand::{Rng, RngCore, SeedableRng};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Fuzz gmlake's allocator with random operation programs (stable toolchain)")]
struct Args {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seed of the random generator (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Corpus folder: every file is run first, and random mutations of them are run later.
    #[arg(long, default_value = "fuzz/corpus")]
    corpus: PathBuf,
    /// Where a failing input is written.
    #[arg(long, default_value = "fuzz/artifacts")]
    artifacts: PathBuf,
    /// Largest random input, in bytes.
    #[arg(long, default_value_t = 4096)]
    max_len: usize,
}

fn main() {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(&args.corpus) {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if let Ok(bytes) = std::fs::read(&p) {
                corpus.push(bytes);
            }
        }
    }
    let start = Instant::now();
    let deadline = Duration::from_secs(args.seconds);
    let (mut runs, mut ops, mut allocs, mut faults) = (0u64, 0u64, 0u64, 0u64);
    let mut i = 0usize;
    loop {
        let input: Vec<u8> = if i < corpus.len() {
            corpus[i].clone()
        } else if start.elapsed() >= deadline {
            break;
        } else if !corpus.is_empty() && rng.random_bool(0.5) {
            let mut v = corpus[rng.random_range(0..corpus.len())].clone();
            for _ in 0..rng.random_range(1..=8) {
                if v.is_empty() {
                    break;
                }
                let at = rng.random_range(0..v.len());
                v[at] = rng.random();
            }
            v
        } else {
            let mut v = vec![0u8; rng.random_range(1..=args.max_len)];
            rng.fill_bytes(&mut v);
            v
        };
        i += 1;
        match gmlake_fuzz::run_bytes(&input) {
            Ok(o) => {
                runs += 1;
                ops += o.ops;
                allocs += o.allocations;
                faults += o.faults_fired;
            }
            Err(v) => {
                let _ = std::fs::create_dir_all(&args.artifacts);
                let path = args.artifacts.join(format!("crash-{seed}-{runs}"));
                let _ = std::fs::write(&path, &input);
                eprintln!(
                    "invariant violated: {v}\ninput written to {}",
                    path.display()
                );
                std::process::exit(1);
            }
        }
    }
    println!(
        "{runs} programs, {ops} operations, {allocs} allocations, {faults} driver faults fired, 0 violations in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
