//! Release scales linearly with the handles held: one allocation of `n` physical handles of
//! 2 MiB each (the smallest handle on the H200) is freed, then the cache is emptied (every handle
//! unmapped and released), or the allocator is dropped with the allocation live. The throughput
//! column is handles released per second; it should not fall as `n` grows 16-fold, from 65,536
//! handles (128 GiB) to 1,048,576 (2 TiB, on a simulated device of that size).
//!
//! `cargo bench -p gmlake-core --bench release`

use divan::counter::ItemsCount;
use divan::Bencher;
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, StreamHandle};

const HANDLE: u64 = 2 << 20;
const HANDLES: [u64; 2] = [1 << 16, 1 << 20];

fn main() {
    divan::main();
}

/// An allocator holding one live allocation of `n` handles of 2 MiB, and its address.
fn holding(n: u64) -> (Allocator<SimulatedDevice>, u64) {
    let cfg = Config::parse("min_handle_size:2MiB,max_handle_size:2MiB").unwrap();
    let mut a = Allocator::new(SimulatedDevice::new(n * HANDLE), cfg).unwrap();
    let p = a.malloc(n * HANDLE, StreamHandle(0)).unwrap();
    (a, p)
}

#[divan::bench(args = HANDLES, sample_count = 3, sample_size = 1)]
fn free_then_empty_cache(bencher: Bencher, n: u64) {
    bencher
        .counter(ItemsCount::new(n))
        .with_inputs(|| {
            let (mut a, p) = holding(n);
            a.free(p).unwrap();
            a
        })
        .bench_local_values(|mut a| {
            a.empty_cache().unwrap();
            assert_eq!(a.device().holdings().handles, 0);
            a
        });
}

#[divan::bench(args = HANDLES, sample_count = 3, sample_size = 1)]
fn drop_with_the_allocation_live(bencher: Bencher, n: u64) {
    bencher
        .counter(ItemsCount::new(n))
        .with_inputs(|| holding(n).0)
        .bench_local_values(drop);
}
