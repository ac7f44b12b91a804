//! The core's CPU cost of an allocation and its free, at several sizes, on the simulated H200:
//! the part of `scripts/torch_features.py`'s `speed` row that is gmlake's own. Sizes in bytes as
//! arguments (default 512 B, 64 KiB, 4 MiB, 64 MiB, in that order: the 64 MiB pairs then reuse a
//! cached stitched block), then the row's window: 50,000 allocations of mixed sizes with the 64
//! most recent live. Each line gives the driver calls made while timing (a steady state makes
//! none on one stream).
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Stats, StreamHandle};
use std::time::Instant;

const MIB: u64 = 1 << 20;

/// The sizes of the speed rows' window (`WINDOW_SIZES` in `scripts/torch_features.py`).
const WINDOW_SIZES: [u64; 7] = [512, 4096, 1 << 16, MIB, 3 * MIB, 16 * MIB, 40 * MIB];

fn report(what: &str, ns: f64, st0: &Stats, st1: &Stats) {
    println!(
        "{what:>14}: {ns:.0} ns (stitch reuses {}, stitches {}, splits {}, driver calls {})",
        st1.num_stitch_reuses - st0.num_stitch_reuses,
        st1.num_stitches - st0.num_stitches,
        st1.num_chunk_splits - st0.num_chunk_splits,
        st1.driver_calls.total() - st0.driver_calls.total()
    );
}

fn main() {
    let mut a = Allocator::new(SimulatedDevice::h200(), Config::default()).unwrap();
    let s = StreamHandle(0);
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![512, 64 << 10, 4 * MIB, 64 * MIB]
    } else {
        sizes
    };
    for size in sizes {
        for _ in 0..200 {
            let p = a.malloc(size, s).unwrap();
            a.free(p).unwrap();
        }
        let n = 200_000;
        let st0 = a.stats();
        let t = Instant::now();
        for _ in 0..n {
            let p = a.malloc(size, s).unwrap();
            a.free(p).unwrap();
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        report(&format!("{size} B pair"), ns, &st0, &a.stats());
    }
    // The window, twice: the first pass grows the cache, the second is the steady state.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let seq: Vec<u64> = (0..50_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            WINDOW_SIZES[(x % WINDOW_SIZES.len() as u64) as usize]
        })
        .collect();
    let mut window = [0u64; 64];
    for pass in ["window 1", "window 2"] {
        let st0 = a.stats();
        let t = Instant::now();
        for (i, &size) in seq.iter().enumerate() {
            let slot = &mut window[i % 64];
            if *slot != 0 {
                a.free(*slot).unwrap();
            }
            *slot = a.malloc(size, s).unwrap();
        }
        let ns = t.elapsed().as_nanos() as f64 / seq.len() as f64;
        report(pass, ns, &st0, &a.stats());
    }
}
