//! Setups and checks shared by the core's integration tests. Each test binary uses a subset.
#![allow(dead_code)]

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, DriverCall, DriverCallCounts, StreamHandle};

pub const MIB: u64 = 1 << 20;

/// A configuration that stitches any size from 8 MiB handles at most and never splits chunks:
/// what `fragmented` needs.
pub const EAGER: &str = "frag_limit:0,max_handle_size:8MB,min_growth:2MB,split_chunks:false";

/// An allocator with the `EAGER` configuration on a simulated device of 1 TiB.
pub fn eager() -> Allocator<SimulatedDevice> {
    Allocator::new(SimulatedDevice::new(1 << 40), Config::parse(EAGER).unwrap()).unwrap()
}

/// Eight separate 8 MiB segments, every other one freed: four free 8 MiB chunks that no single
/// block can serve a 24 MiB request from; the device is then full, so only a stitch can. The
/// allocator must make 8 MiB handles at most (`max_handle_size:8MB`) and not split chunks.
pub fn fragmented(a: &mut Allocator<SimulatedDevice>, live: &mut Vec<u64>) {
    let ps: Vec<u64> = (0..8)
        .map(|_| a.malloc(8 * MIB, StreamHandle(0)).unwrap())
        .collect();
    for (i, p) in ps.into_iter().enumerate() {
        if i % 2 == 0 {
            a.free(p).unwrap();
        } else {
            live.push(p);
        }
    }
    let held = a.device().books().unwrap().handle_bytes;
    a.device_mut().set_capacity(held);
}

/// `fragmented`, then a stitched block of `bytes` made over some of the free chunks and freed: it
/// stays cached. Returns its address.
pub fn fragmented_with_cached(
    a: &mut Allocator<SimulatedDevice>,
    live: &mut Vec<u64>,
    bytes: u64,
) -> u64 {
    fragmented(a, live);
    let p = a.malloc(bytes, StreamHandle(0)).unwrap();
    a.free(p).unwrap();
    p
}

/// Lets the device hold `bytes` more than the handles it holds now.
pub fn add_room(a: &mut Allocator<SimulatedDevice>, bytes: u64) {
    let held = a.device().books().unwrap().handle_bytes;
    a.device_mut().set_capacity(held + bytes);
}

/// With a freed stitched block cached over `chunks` free 8 MiB chunks (one of them a segment it
/// shares): takes them all as primitive blocks, destroys the stitched block (`empty_cache`), and
/// checks that every one of them kept its mapping. Returns the blocks.
pub fn destroy_keeps_segments(a: &mut Allocator<SimulatedDevice>, chunks: usize) -> Vec<u64> {
    let reserved = a.stats().reserved_bytes.all.current;
    let parts: Vec<u64> = (0..chunks)
        .map(|_| a.malloc(8 * MIB, StreamHandle(0)).unwrap())
        .collect();
    assert_eq!(a.stats().reserved_bytes.all.current, reserved);
    a.empty_cache().unwrap();
    assert_eq!(a.stats().stitched_blocks.current, 0);
    a.check_invariants().unwrap();
    for &q in &parts {
        assert!(
            a.device().accessible(q, 8 * MIB),
            "{q:#x} lost its mapping with the stitched block"
        );
    }
    parts
}

/// How many driver calls of `kind` were made between the counts `before` and `after`.
pub fn calls_made(before: DriverCallCounts, after: DriverCallCounts, kind: DriverCall) -> u64 {
    after.get(kind) - before.get(kind)
}

/// Frees `live`, empties the cache and checks that the device holds nothing.
pub fn teardown(mut a: Allocator<SimulatedDevice>, live: Vec<u64>) {
    for q in live {
        a.free(q).unwrap();
    }
    assert_eq!(a.release_all().unwrap(), 0);
    let h = a.device().holdings();
    assert_eq!((h.handles, h.ranges, h.mappings, h.events), (0, 0, 0, 0));
}
