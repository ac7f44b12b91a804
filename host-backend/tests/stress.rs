//! Concurrency: several threads allocate and free on several streams through one
//! `SharedAllocator` on real host memory, each allocation filled with its own pattern and verified
//! before its free. `GMLAKE_STRESS_OPS` sets the operations per thread (default 10,000; the
//! 8 x 100,000 run is in docs/reliability.md).

use gmlake_core::{Allocator, Config, Error, SharedAllocator, StreamHandle};
use gmlake_host::HostDevice;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// Whether all `len` bytes at `addr` equal `byte` (compared 4 KiB at a time, which is fast also in
/// debug builds).
fn holds(addr: u64, len: u64, byte: u8) -> bool {
    let pattern = [byte; 4096];
    bytes(addr, len)
        .chunks(4096)
        .all(|c| c == &pattern[..c.len()])
}

fn bytes(addr: u64, len: u64) -> &'static mut [u8] {
    // SAFETY: the allocation at `addr` is live and owned by the calling thread while it is used.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) }
}

#[test]
fn threads_allocating_and_freeing_on_several_streams_never_share_bytes() {
    let threads = 8u64;
    let ops: u64 = std::env::var("GMLAKE_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dev = HostDevice::new(1 << 30, 2 * MIB);
    let cfg = Config::parse("frag_limit:0,min_handle_size:2MB,max_stitch_mappings:64").unwrap();
    let shared = Arc::new(SharedAllocator::new(Allocator::new(dev, cfg).unwrap()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let a = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let mut live: Vec<(u64, u64, u8)> = Vec::new();
                let (mut errors, mut verified, mut ooms) = (0u64, 0u64, 0u64);
                for i in 0..ops {
                    if next() % 2 == 0 || live.is_empty() {
                        let size = if next() % 8 == 0 {
                            MIB + next() % (4 * MIB)
                        } else {
                            1 + next() % (16 << 10)
                        };
                        let stream = StreamHandle(t * 4 + next() % 2);
                        match a.with(|a| a.malloc(size, stream)) {
                            Ok(p) => {
                                let byte = ((t * 37 + i) % 251) as u8;
                                bytes(p, size).fill(byte);
                                live.push((p, size, byte));
                            }
                            Err(Error::OutOfMemory(_)) => ooms += 1,
                            Err(e) => panic!("thread {t}: {e}"),
                        }
                    } else {
                        let (p, size, byte) =
                            live.swap_remove((next() % live.len() as u64) as usize);
                        if !holds(p, size, byte) {
                            errors += 1;
                        }
                        verified += 1;
                        a.with(|a| a.free(p)).unwrap();
                    }
                }
                for (p, size, byte) in live {
                    if !holds(p, size, byte) {
                        errors += 1;
                    }
                    a.with(|a| a.free(p)).unwrap();
                }
                (errors, verified, ooms)
            })
        })
        .collect();
    let (mut errors, mut verified) = (0, 0);
    for h in handles {
        let (e, v, _) = h.join().unwrap();
        errors += e;
        verified += v;
    }
    let mut a = Arc::try_unwrap(shared).ok().unwrap().into_inner();
    println!("stress: {threads} threads x {ops} operations, {verified} allocations verified, {errors} pattern errors, {} stitches", a.stats().num_stitches);
    assert_eq!(errors, 0);
    assert!(verified >= threads * ops / 3);
    a.check_invariants().unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
}
