//! Private pools (CUDA graphs, `torch.cuda.MemPool`): memory of a pool serves only that pool and
//! stays mapped while the pool is in use; released, it goes back to the device; captures record
//! no events; a pool can be checkpointed and restored; `no_split` and `use_on_oom`; and the
//! history of what the allocator did.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, BlockStateInfo, Config, DriverCall, Error, PoolId, StreamHandle};

mod support;
use support::{calls_made, EAGER, MIB};

const S: StreamHandle = StreamHandle(0);
const G1: PoolId = PoolId(1, 0);
const G2: PoolId = PoolId(2, 0);

fn allocator(capacity: u64) -> Allocator<SimulatedDevice> {
    Allocator::new(SimulatedDevice::new(capacity), Config::default()).unwrap()
}

/// The owner pool of the segment or stitched block holding `addr`.
fn owner_of(a: &Allocator<SimulatedDevice>, addr: u64) -> PoolId {
    let snap = a.snapshot();
    if let Some(st) = snap.stitched.iter().find(|s| s.address == addr) {
        return st.owner;
    }
    snap.segments
        .iter()
        .find(|s| s.address <= addr && addr < s.address + s.size)
        .map(|s| s.owner)
        .expect("no segment holds the address")
}

#[test]
fn memory_freed_in_a_private_pool_serves_only_that_pool_until_it_is_released() {
    let mut a = allocator(1 << 40);
    a.create_or_incref_pool(G1).unwrap();
    // A "graph" allocates its intermediate in its pool and the script drops it.
    let x = a.malloc_in(64 * MIB, S, G1).unwrap();
    assert_eq!(owner_of(&a, x), G1);
    a.free(x).unwrap();
    let reserved = a.stats().reserved_bytes.all.current;
    // An ordinary tensor of the same size does not get that memory: the pool keeps it.
    let y = a.malloc(64 * MIB, S).unwrap();
    assert_ne!(y, x);
    assert_eq!(owner_of(&a, y), PoolId::DEFAULT);
    assert_eq!(
        a.stats().reserved_bytes.all.current,
        reserved + 64 * MIB as i64
    );
    // empty_cache does not give it back either: a graph may replay into it.
    a.free(y).unwrap();
    a.empty_cache().unwrap();
    assert_eq!(a.stats().reserved_bytes.all.current, 64 * MIB as i64);
    // The pool itself reuses it, at the same address, with no driver call.
    let before = a.device().calls();
    let x2 = a.malloc_in(64 * MIB, S, G1).unwrap();
    assert_eq!((x2, a.device().calls()), (x, before));
    a.free(x2).unwrap();
    // Released by its only user, it goes back to the device.
    a.release_pool(G1).unwrap();
    assert_eq!(a.stats().reserved_bytes.all.current, 0);
    assert_eq!(a.pool_use_count(G1), 0);
    assert!(matches!(
        a.malloc_in(MIB, S, G1),
        Err(Error::InvalidArgument(_))
    ));
    a.check_invariants().unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
}

#[test]
fn a_shared_pool_lives_until_its_last_user_releases_it_and_its_live_tensors_are_freed() {
    let mut a = allocator(1 << 40);
    a.create_or_incref_pool(G1).unwrap();
    a.create_or_incref_pool(G1).unwrap();
    assert_eq!(a.pool_use_count(G1), 2);
    let out = a.malloc_in(32 * MIB, S, G1).unwrap();
    let tmp = a.malloc_in(32 * MIB, S, G1).unwrap();
    a.free(tmp).unwrap();
    a.release_pool(G1).unwrap();
    assert_eq!(a.stats().reserved_bytes.all.current, 64 * MIB as i64);
    // The last user goes, but a graph's output is still held by the script: it stays, the rest goes.
    a.release_pool(G1).unwrap();
    assert_eq!(a.stats().reserved_bytes.all.current, 32 * MIB as i64);
    assert_eq!(a.pool_live_allocations(G1), vec![out]);
    assert!(a.release_pool(G1).is_err(), "no user left to release");
    a.free(out).unwrap();
    a.empty_cache().unwrap();
    assert_eq!(a.stats().reserved_bytes.all.current, 0);
    a.check_invariants().unwrap();
}

#[test]
fn stitching_stays_inside_a_pool() {
    let mut a =
        Allocator::new(SimulatedDevice::new(1 << 40), Config::parse(EAGER).unwrap()).unwrap();
    a.create_or_incref_pool(G1).unwrap();
    // Fragment the pool: four free 8 MiB chunks between live ones.
    let ps: Vec<u64> = (0..8)
        .map(|_| a.malloc_in(8 * MIB, S, G1).unwrap())
        .collect();
    for p in ps.iter().step_by(2) {
        a.free(*p).unwrap();
    }
    // The default pool cannot use them: it grows.
    let reserved = a.stats().reserved_bytes.all.current;
    let d = a.malloc(24 * MIB, S).unwrap();
    assert_eq!(a.stats().num_stitches, 0);
    assert!(a.stats().reserved_bytes.all.current > reserved);
    a.free(d).unwrap();
    // The pool stitches its own free chunks.
    let reserved = a.stats().reserved_bytes.all.current;
    let s = a.malloc_in(24 * MIB, S, G1).unwrap();
    assert_eq!(a.stats().num_stitches, 1);
    assert_eq!(a.stats().reserved_bytes.all.current, reserved);
    assert_eq!(owner_of(&a, s), G1);
    a.free(s).unwrap();
    // The cached stitched block is the pool's: a default request does not reuse it.
    let d2 = a.malloc(24 * MIB, S).unwrap();
    assert_ne!(d2, s);
    assert_eq!(a.stats().num_stitch_reuses, 0);
    a.check_invariants().unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
}

#[test]
fn a_capture_records_no_event_and_frees_on_other_streams_wait_for_its_end() {
    let mut a = allocator(1 << 40);
    a.create_or_incref_pool(G1).unwrap();
    let x = a.malloc(64 * MIB, S).unwrap();
    a.record_stream(x, StreamHandle(7)).unwrap();
    a.begin_capture();
    let before = a.device().calls();
    let y = a.malloc_in(16 * MIB, S, G1).unwrap();
    a.free(y).unwrap();
    a.free(x).unwrap();
    // A request no free block serves does not release cached memory during a capture.
    let _ = a.malloc(1 << 41, S);
    let after = a.device().calls();
    for call in [
        DriverCall::RecordEvent,
        DriverCall::QueryEvent,
        DriverCall::SynchronizeDevice,
        DriverCall::SynchronizeStream,
    ] {
        assert_eq!(calls_made(before, after, call), 0, "{call} during capture");
    }
    // x's memory is not reusable yet: its free waits for stream 7, which waits for the capture.
    assert_eq!(a.stats().active_bytes.all.current, 64 * MIB as i64);
    a.end_capture();
    assert!(calls_made(after, a.device().calls(), DriverCall::RecordEvent) >= 1);
    let z = a.malloc(64 * MIB, S).unwrap();
    assert_eq!(
        z, x,
        "reusable once the capture ended and stream 7's work is done"
    );
    a.check_invariants().unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
}

#[test]
fn a_pool_returns_to_its_checkpoint_at_the_same_addresses() {
    let mut a = allocator(1 << 40);
    a.create_or_incref_pool(G1).unwrap();
    let p = a.malloc_in(8 * MIB, S, G1).unwrap();
    let q = a.malloc_in(8 * MIB, S, G1).unwrap();
    let r = a.malloc_in(8 * MIB, S, G1).unwrap();
    a.free(r).unwrap();
    let cp = a.checkpoint_pool(G1).unwrap();
    assert_eq!(cp.allocations.len(), 2);
    a.free(p).unwrap();
    let t = a.malloc_in(4 * MIB, S, G1).unwrap();
    let restored = a.restore_pool(&cp).unwrap();
    let mut freed = restored.freed.clone();
    freed.sort_unstable();
    let mut expect = vec![q, t];
    expect.sort_unstable();
    assert_eq!(freed, expect);
    assert_eq!(restored.allocated, vec![p.min(q), p.max(q)]);
    assert_eq!(a.pool_live_allocations(G1), vec![p.min(q), p.max(q)]);
    assert_eq!(a.allocation_size(p), Some(8 * MIB));
    a.check_invariants().unwrap();
    assert!(a.checkpoint_pool(PoolId::DEFAULT).is_err());
    assert_eq!(a.release_all().unwrap(), 0);
}

#[test]
fn a_no_split_pool_hands_out_whole_segments() {
    let mut a = allocator(1 << 40);
    a.create_or_incref_pool(G1).unwrap();
    a.set_pool_no_split(G1).unwrap();
    let p = a.malloc_in(10 * MIB, S, G1).unwrap();
    let q = a.malloc_in(10 * MIB, S, G1).unwrap();
    assert_eq!(a.snapshot().segments.len(), 2, "a segment each");
    a.free(p).unwrap();
    let allocated = a.stats().allocated_bytes.all.current;
    let r = a.malloc_in(MIB + 1, S, G1).unwrap();
    assert_eq!(r, p, "the free segment, whole");
    assert_eq!(
        a.stats().allocated_bytes.all.current - allocated,
        10 * MIB as i64
    );
    let seg = a
        .snapshot()
        .segments
        .into_iter()
        .find(|s| s.address == r)
        .unwrap();
    assert_eq!(seg.blocks.len(), 1);
    assert_eq!(seg.blocks[0].state, BlockStateInfo::ActiveAllocated);
    let _ = q;
    a.check_invariants().unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
}

#[test]
fn a_use_on_oom_pool_lends_its_free_blocks_to_the_default_pool_when_memory_runs_out() {
    let mut a = allocator(128 * MIB);
    a.create_or_incref_pool(G1).unwrap();
    a.create_or_incref_pool(G2).unwrap();
    let x = a.malloc_in(64 * MIB, S, G1).unwrap();
    a.free(x).unwrap();
    let _fill = a.malloc(64 * MIB, S).unwrap();
    assert!(matches!(a.malloc(32 * MIB, S), Err(Error::OutOfMemory(_))));
    a.set_pool_use_on_oom(G1, true).unwrap();
    let y = a.malloc(32 * MIB, S).unwrap();
    assert_eq!(owner_of(&a, y), G1);
    assert_eq!(a.pool_live_allocations(G1), vec![y]);
    assert!(a.set_pool_use_on_oom(PoolId::DEFAULT, true).is_err());
    a.check_invariants().unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
}

#[test]
fn the_history_records_what_happened_with_the_callers_context() {
    use gmlake_core::replay::TraceAction::*;
    let mut a = allocator(1 << 40);
    a.record_history(true, 100, true);
    a.set_context(7);
    let p = a.malloc(64 * MIB, S).unwrap();
    a.set_context(8);
    a.free(p).unwrap();
    a.empty_cache().unwrap();
    let h = a.history();
    let actions: Vec<_> = h.iter().map(|r| r.event.action).collect();
    assert_eq!(
        actions,
        [
            SegmentMap,
            Alloc,
            FreeRequested,
            FreeCompleted,
            SegmentUnmap,
            SegmentUnmap
        ]
    );
    assert_eq!(
        (h[1].event.addr, h[1].event.size, h[1].context),
        (p, 64 * MIB, 7)
    );
    assert_eq!((h[2].context, h[2].pool), (8, PoolId::DEFAULT));
    assert_eq!(a.live_contexts(), vec![7, 8]);
    // Bounded: the oldest go first.
    a.record_history(true, 3, false);
    assert_eq!(a.history().len(), 3);
    a.record_history(false, 3, false);
    let _ = a.malloc(MIB, S).unwrap();
    assert_eq!(a.history().len(), 3, "nothing recorded once stopped");
    assert_eq!(a.release_all().unwrap(), 0);
}

#[test]
fn a_mempool_destroyed_as_pytorch_does_returns_its_memory() {
    // PyTorch's ~MemPool: releasePool, then emptyCache(id) of the pool just forgotten.
    let mut a = allocator(1 << 40);
    a.create_or_incref_pool(G2).unwrap();
    let x = a.malloc_in(96 * MIB, S, G2).unwrap();
    let kept = a.malloc(8 * MIB, S).unwrap();
    let with_pool = a.stats().reserved_bytes.all.current;
    a.free(x).unwrap();
    a.release_pool(G2).unwrap();
    a.empty_pool_cache(G2).unwrap();
    assert_eq!(a.pool_use_count(G2), 0);
    assert!(
        a.stats().reserved_bytes.all.current <= with_pool - 96 * MIB as i64,
        "the pool's memory stayed reserved"
    );
    assert!(
        matches!(a.malloc_in(MIB, S, G2), Err(Error::InvalidArgument(_))),
        "a destroyed pool serves nothing"
    );
    a.free(kept).unwrap();
}
