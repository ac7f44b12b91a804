//! Chunk splits: before a request lands inside a whole free physical chunk at least four times its
//! size, the chunk is cut in two so that the rest stays stitchable; but not while the free
//! reserved bytes exceed twice the largest request so far (`SPLIT_FREE_FACTOR` in
//! `core/src/allocator/policy.rs`), when the cut is unlikely to be needed and costs about
//! 100 us of driver calls. A cut whose chunk a GPU running behind still uses waits for it
//! (`WAIT_TO_CUT`); where no cut is wanted, nothing waits.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, DriverCall, DriverCallCounts, StreamHandle};

mod support;
use support::{calls_made, teardown, MIB};
const S: StreamHandle = StreamHandle(0);

type A = Allocator<SimulatedDevice>;

fn allocator() -> A {
    Allocator::new(SimulatedDevice::new(1 << 40), Config::default()).unwrap()
}

/// `n` segments of 64 MiB (two 32 MiB handles each: the default's smallest handle), of which the
/// last `freed` are freed again. Returns the live ones.
fn segments(a: &mut A, n: usize, freed: usize) -> Vec<u64> {
    let mut ps: Vec<u64> = (0..n).map(|_| a.malloc(64 * MIB, S).unwrap()).collect();
    for p in ps.split_off(n - freed) {
        a.free(p).unwrap();
    }
    assert_eq!(
        a.stats().reserved_bytes.all.current,
        (n as i64) * 64 * MIB as i64
    );
    ps
}

/// Allocates `size` bytes into `live`, checks the books, and returns the driver calls counted
/// before and after.
fn request(a: &mut A, live: &mut Vec<u64>, size: u64) -> (DriverCallCounts, DriverCallCounts) {
    let before = a.device().calls();
    live.push(a.malloc(size, S).unwrap());
    a.check_invariants().unwrap();
    (before, a.device().calls())
}

/// The sizes of the live (not released) physical chunks, in bytes, sorted.
fn chunk_sizes(a: &A) -> Vec<u64> {
    let mut v: Vec<u64> = a
        .snapshot()
        .segments
        .iter()
        .flat_map(|s| s.chunks.iter().filter(|c| !c.released).map(|c| c.size))
        .collect();
    v.sort_unstable();
    v
}

/// `segments(n, freed)` on a fresh allocator, then a 4 MiB request: the allocator, the live
/// allocations, and the driver calls counted before and after the request.
fn four_mib_after(n: usize, freed: usize) -> (A, Vec<u64>, DriverCallCounts, DriverCallCounts) {
    let mut a = allocator();
    let mut live = segments(&mut a, n, freed);
    let (before, after) = request(&mut a, &mut live, 4 * MIB);
    (a, live, before, after)
}

#[test]
fn a_request_cuts_a_whole_chunk_four_times_its_size_when_free_memory_is_scarce() {
    // Two 64 MiB segments, one freed: 64 MiB free, the largest request 64 MiB.
    let (a, live, before, after) = four_mib_after(2, 1);
    assert_eq!(a.stats().num_chunk_splits, 1);
    // One handle released, two created in its place; no new memory.
    assert_eq!(calls_made(before, after, DriverCall::ReleaseHandle), 1);
    assert_eq!(calls_made(before, after, DriverCall::CreateHandle), 2);
    assert_eq!(a.stats().reserved_bytes.all.current, 128 * MIB as i64);
    // The request has a chunk of its own size; the rest of the cut chunk stays whole and free.
    assert_eq!(
        chunk_sizes(&a),
        vec![4 * MIB, 28 * MIB, 32 * MIB, 32 * MIB, 32 * MIB]
    );
    teardown(a, live);
}

#[test]
fn no_cut_while_the_free_bytes_exceed_twice_the_largest_request() {
    // Three 64 MiB segments, all freed: 192 MiB free, more than twice the largest request.
    let (mut a, mut live, before, after) = four_mib_after(3, 3);
    assert_eq!(a.stats().num_chunk_splits, 0);
    assert_eq!(after, before, "no driver call at all");
    assert_eq!(chunk_sizes(&a), vec![32 * MIB; 6]);

    // Once 128 MiB of it are taken (64 MiB free, no more than the largest request), the next
    // request that would break a whole 32 MiB chunk cuts it.
    live.push(a.malloc(64 * MIB, S).unwrap());
    live.push(a.malloc(60 * MIB, S).unwrap());
    assert_eq!(a.stats().num_chunk_splits, 0);
    live.push(a.malloc(4 * MIB, S).unwrap());
    a.check_invariants().unwrap();
    assert_eq!(a.stats().num_chunk_splits, 1);
    teardown(a, live);
}

#[test]
fn no_cut_of_a_chunk_under_four_times_the_request() {
    let mut a = allocator();
    let mut live = segments(&mut a, 2, 1);
    // 10 MiB in a 32 MiB chunk: 32 < 4 x 10.
    live.push(a.malloc(10 * MIB, S).unwrap());
    a.check_invariants().unwrap();
    assert_eq!(a.stats().num_chunk_splits, 0);
    assert_eq!(chunk_sizes(&a), vec![32 * MIB; 4]);
    teardown(a, live);
}

/// On a GPU that runs behind (every event "not complete" until a synchronization): `n` segments
/// of which `freed` are freed, reserved memory limited to `limit` if given, then a 4 MiB request.
/// Returns the chunk cuts and the stream synchronizations it made.
fn behind(n: usize, freed: usize, limit: Option<u64>) -> (u64, u64) {
    let mut dev = SimulatedDevice::new(1 << 40);
    dev.set_event_latency(u32::MAX);
    let mut a = Allocator::new(dev, Config::default()).unwrap();
    let mut live = segments(&mut a, n, freed);
    a.set_reserved_limit(limit);
    let (before, after) = request(&mut a, &mut live, 4 * MIB);
    let cuts = a.stats().num_chunk_splits;
    teardown(a, live);
    (
        cuts,
        calls_made(before, after, DriverCall::SynchronizeStream),
    )
}

#[test]
fn a_cut_waits_for_the_chunks_last_use() {
    // Under pressure: 128 MiB reserved of 160 MiB allowed.
    assert_eq!(behind(2, 1, Some(160 * MIB)), (1, 1));
    // With room to spare, where a cut is wanted (64 MiB free, the largest request 64 MiB).
    assert_eq!(behind(2, 1, None), (1, 1));
    // No cut wanted (192 MiB free, more than twice the largest request): nothing waits.
    assert_eq!(behind(3, 3, None), (0, 0));
}

/// Handles created for a 16 MiB request on a device that four 64 MiB segments fill (memory is
/// short, so a whole chunk under a placement is cut whatever its size: otherwise only one at
/// least four times the request), the first segment (two 32 MiB handles, grown before memory
/// was short) free, after `warm` requests of 64 MiB served from it since the last growth
/// (`free_ends_after:4`).
fn handles_for_a_request_when_short(warm: usize) -> u64 {
    let cfg = Config::parse("free_ends_after:4").unwrap();
    let mut a = Allocator::new(SimulatedDevice::new(256 * MIB), cfg).unwrap();
    let mut live: Vec<u64> = (0..4).map(|_| a.malloc(64 * MIB, S).unwrap()).collect();
    a.free(live.remove(0)).unwrap();
    for _ in 0..warm {
        let p = a.malloc(64 * MIB, S).unwrap();
        a.free(p).unwrap();
    }
    assert_eq!(a.stats().reserved_bytes.all.current, 256 * MIB as i64);
    let (before, after) = request(&mut a, &mut live, 16 * MIB);
    teardown(a, live);
    after.get(DriverCall::CreateHandle) - before.get(DriverCall::CreateHandle)
}

#[test]
fn a_settled_job_short_of_memory_cuts_no_more_chunks() {
    // Three requests since the last growth: still cut; four: settled, the chunk stays whole (its
    // cut would destroy cached stitched blocks over it, to be stitched again next step).
    assert_eq!(handles_for_a_request_when_short(3), 2);
    assert_eq!(handles_for_a_request_when_short(4), 0);
}

/// Chunk sizes after a 40 MiB request on two free 64 MiB segments (two 32 MiB handles each),
/// reserved memory limited to `limit` if given, with the bytes an 80 MiB request (no free block
/// holds it: a stitch of whole free chunks) then added to reserved memory.
fn crossing(limit: Option<u64>) -> (Vec<u64>, i64) {
    let mut a = allocator();
    // Each on a stream of its own, so that each is a segment of its own.
    let ps: Vec<u64> = (1..=2)
        .map(|s| a.malloc(64 * MIB, StreamHandle(s)).unwrap())
        .collect();
    for p in ps {
        a.free(p).unwrap();
    }
    a.set_reserved_limit(limit);
    let mut live = Vec::new();
    // At a segment's front: all of its first chunk and 8 MiB of its second.
    request(&mut a, &mut live, 40 * MIB);
    let sizes = chunk_sizes(&a);
    let before = a.stats().reserved_bytes.all.current;
    request(&mut a, &mut live, 80 * MIB);
    let grown = a.stats().reserved_bytes.all.current - before;
    teardown(a, live);
    (sizes, grown)
}

#[test]
fn short_of_memory_a_placement_cuts_the_chunk_it_leaves_part_way() {
    // 128 MiB reserved of 256 MiB allowed: short. The second chunk is cut after the placement's
    // last granule, and its whole 24 MiB rest joins the other segment's chunks in a stitch.
    let (whole, cut) = (32 * MIB, [8 * MIB, 24 * MIB]);
    assert_eq!(
        crossing(Some(256 * MIB)),
        (vec![cut[0], cut[1], whole, whole, whole], 0)
    );
    // With room, the chunk stays whole under the placement, and the stitch grows by what the
    // other segment's chunks lack.
    assert_eq!(crossing(None), (vec![whole; 4], 16 * MIB as i64));
}
