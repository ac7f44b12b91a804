//! The core's CPU cost of an allocation and its free, at several sizes, on the simulated H200:
//! the part of `scripts/torch_features.py`'s `speed` row that is gmlake's own. Sizes in bytes as
//! arguments (default 512 B, 64 KiB, 4 MiB, 64 MiB, in that order: the 64 MiB pairs then reuse a
//! cached stitched block).
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, StreamHandle};
use std::time::Instant;

fn main() {
    let mut a = Allocator::new(SimulatedDevice::h200(), Config::default()).unwrap();
    let s = StreamHandle(0);
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![512, 64 << 10, 4 << 20, 64 << 20]
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
        let st1 = a.stats();
        println!(
            "{size:>10} B: {:.0} ns a pair (stitch reuses {}, stitches {}, splits {})",
            t.elapsed().as_nanos() as f64 / n as f64,
            st1.num_stitch_reuses - st0.num_stitch_reuses,
            st1.num_stitches - st0.num_stitches,
            st1.num_chunk_splits - st0.num_chunk_splits
        );
    }
}
