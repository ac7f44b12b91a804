//! A loom model of the locking: two threads allocate and free on their own streams through one
//! `SharedAllocator` while a third empties the cache; loom explores their interleavings. Only built
//! with `RUSTFLAGS="--cfg loom"` (`.ci/run` does: `cargo test --release -p gmlake-core --test loom`).
#![cfg(loom)]

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, SharedAllocator, StreamHandle};
use loom::sync::Arc;

const MIB: u64 = 1 << 20;

#[test]
fn concurrent_allocate_free_and_empty_cache_stay_consistent() {
    loom::model(|| {
        let cfg = Config::parse("frag_limit:0,min_handle_size:2MB").unwrap();
        let a = Arc::new(SharedAllocator::new(
            Allocator::new(SimulatedDevice::new(64 * MIB), cfg).unwrap(),
        ));
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let a = Arc::clone(&a);
                loom::thread::spawn(move || {
                    let p = a
                        .with(|a| a.malloc((t + 1) * 3 * MIB, StreamHandle(t)))
                        .unwrap();
                    let q = a.with(|a| a.malloc(1000, StreamHandle(t))).unwrap();
                    a.with(|a| a.free(p)).unwrap();
                    a.with(|a| a.free(q)).unwrap();
                })
            })
            .collect();
        a.with(|a| a.empty_cache()).unwrap();
        for w in workers {
            w.join().unwrap();
        }
        a.with(|a| {
            a.check_invariants().unwrap();
            assert_eq!(a.live_allocations(), 0);
            assert_eq!(a.release_all().unwrap(), 0);
        });
    });
}
