//! Parked memory (`core/src/allocator/parked.rs`): what was freed last stays as it is until the
//! next request, which takes it back at once where the allocation order would hand out exactly it;
//! meanwhile it is free memory for every question asked and every other request made.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, BlockStateInfo, Config, StreamHandle};

mod support;
use support::{teardown, MIB};
const S: StreamHandle = StreamHandle(0);

/// Bytes of blocks the snapshot shows as inactive (free).
fn inactive(a: &Allocator<SimulatedDevice>) -> u64 {
    let snap = a.snapshot();
    let blocks = snap.segments.iter().flat_map(|s| &s.blocks);
    blocks
        .filter(|b| b.state == BlockStateInfo::Inactive)
        .map(|b| b.size)
        .sum()
}

#[test]
fn a_freed_stitched_block_s_bytes_stay_free_memory() {
    // Four free 8 MiB chunks on a full device, stitched into one 32 MiB block and freed: the
    // block keeps its lent chunks until the next request (`reclaims_parked` in `policy.rs`), yet
    // they are free memory for every question asked and every request made meanwhile.
    let mut a = support::eager();
    let mut live = Vec::new();
    support::fragmented(&mut a, &mut live);
    let p = a.malloc(32 * MIB, S).unwrap();
    a.free(p).unwrap();
    a.check_invariants().unwrap();
    assert_eq!(a.largest_free_block(), 8 * MIB);
    assert_eq!(inactive(&a), 32 * MIB);
    // The same size again takes the block back, with no driver call.
    let calls = a.device().calls();
    let q = a.malloc(32 * MIB, S).unwrap();
    assert_eq!((q, a.device().calls()), (p, calls));
    a.free(q).unwrap();
    // Another size is served from its chunks: nothing else is free and the device is full.
    let reserved = a.stats().reserved_bytes.all.current;
    let parts: Vec<u64> = (0..4).map(|_| a.malloc(8 * MIB, S).unwrap()).collect();
    assert_eq!(a.stats().reserved_bytes.all.current, reserved, "no growth");
    a.check_invariants().unwrap();
    live.extend(parts);
    teardown(a, live);
}

#[test]
fn a_freed_block_is_free_memory_and_comes_back_where_it_was() {
    // One 8 MiB segment on a device with no room left: a 3 MiB block at its start, freed.
    let cfg = Config::parse(support::EAGER).unwrap();
    let mut a = Allocator::new(SimulatedDevice::new(1 << 40), cfg).unwrap();
    let p = a.malloc(3 * MIB, S).unwrap();
    support::add_room(&mut a, 0);
    a.free(p).unwrap();
    a.check_invariants().unwrap();
    let seg = a.stats().reserved_bytes.all.current as u64;
    assert_eq!(
        a.largest_free_block(),
        seg,
        "the freed block and its free neighbour"
    );
    assert_eq!(inactive(&a), seg);
    // The same size again: the same address, nothing else changed.
    let (calls, stats) = (a.device().calls(), a.stats());
    let q = a.malloc(3 * MIB, S).unwrap();
    assert_eq!(q, p);
    assert_eq!(a.device().calls(), calls);
    assert_eq!(
        a.stats().reserved_bytes.all.current,
        stats.reserved_bytes.all.current
    );
    a.check_invariants().unwrap();
    a.free(q).unwrap();
    // Another size uses the freed bytes with their neighbour: the whole segment, no growth.
    let r = a.malloc(seg, S).unwrap();
    assert_eq!(r, p, "the whole segment, from its start");
    a.check_invariants().unwrap();
    teardown(a, vec![r]);
}
