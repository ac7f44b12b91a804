//! A stitch whose chunks include all those of a cached stitched block grows that block into the
//! address space it holds after its range, mapping only the chunks it lacks. Checked on the
//! simulated device, which keeps every mapping and its access: the grown block must be accessible
//! throughout, destroying it must leave segments' own mappings in place, and nothing may leak.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, DriverCall, StreamHandle};

mod support;
use support::{add_room, destroy_keeps_segments, eager, fragmented_with_cached, teardown, MIB};
const S: StreamHandle = StreamHandle(0);

/// Four free 8 MiB chunks in segments of their own between live ones, then a stitched block of
/// `first` bytes made over some of them and freed (`fragmented_with_cached`).
fn with_cached_block(first: u64) -> (Allocator<SimulatedDevice>, Vec<u64>, u64) {
    let (mut a, mut live) = (eager(), Vec::new());
    let p = fragmented_with_cached(&mut a, &mut live, first);
    assert_eq!(a.stats().stitched_blocks.current, 1);
    (a, live, p)
}

fn maps(a: &Allocator<SimulatedDevice>) -> u64 {
    a.device().calls().get(DriverCall::Map)
}

#[test]
fn a_cached_block_grows_by_the_chunks_it_lacks() {
    let (mut a, live, cached) = with_cached_block(16 * MIB);
    let (before, m0) = (a.stats(), maps(&a));

    // 24 MiB: the two chunks of the cached 16 MiB block and one more.
    let p = a.malloc(24 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    assert_eq!(p, cached, "the cached block, grown in place, serves it");
    assert_eq!(maps(&a) - m0, 1, "only the chunk it lacked is mapped");
    let st = a.stats();
    assert_eq!(st.num_stitches, before.num_stitches + 1);
    assert_eq!(st.stitched_blocks.current, 1, "no second stitched block");
    assert_eq!(st.stitched_bytes.current, 24 * MIB as i64);
    assert_eq!(
        st.reserved_bytes.all.current,
        before.reserved_bytes.all.current
    );
    assert!(a.device().accessible(p, 24 * MIB));

    // Freed, it serves a 24 MiB request again with no driver call.
    a.free(p).unwrap();
    let calls = a.device().calls();
    let q = a.malloc(24 * MIB, S).unwrap();
    assert_eq!(q, p);
    assert_eq!(a.device().calls(), calls);
    a.free(q).unwrap();
    teardown(a, live);
}

#[test]
fn a_cached_block_grows_with_new_memory_and_its_segment_outlives_it() {
    let (mut a, mut live, cached) = with_cached_block(24 * MIB);
    add_room(&mut a, 8 * MIB);
    let (before, m0, calls) = (a.stats(), maps(&a), a.device().calls());

    // 40 MiB: the cached block's three chunks, the fourth free one and 8 MiB of new memory (one
    // handle, or granules: the device is nearly full).
    let p = a.malloc(40 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    assert_eq!(p, cached, "the cached block, grown in place, serves it");
    let created =
        a.device().calls().get(DriverCall::CreateHandle) - calls.get(DriverCall::CreateHandle);
    assert_eq!(
        maps(&a) - m0,
        1 + created,
        "the new chunks and the free chunk it lacked"
    );
    let st = a.stats();
    assert_eq!(st.segment.all.current, before.segment.all.current + 1);
    assert_eq!(st.stitched_blocks.current, 1, "no second stitched block");
    assert_eq!(
        st.reserved_bytes.all.current - before.reserved_bytes.all.current,
        8 * MIB as i64,
        "only the shortfall is new"
    );
    assert!(a.device().accessible(p, 40 * MIB));
    a.free(p).unwrap();

    // Five 8 MiB requests take the five free chunks as primitive blocks; destroying the stitched
    // block (empty_cache does) must unmap its own mappings only, not the new segment's.
    live.extend(destroy_keeps_segments(&mut a, 5));
    teardown(a, live);
}

#[test]
fn a_block_whose_chunk_is_taken_is_not_grown() {
    let (mut a, mut live, cached) = with_cached_block(16 * MIB);
    // Primitive blocks take three of the four free chunks: one of the cached block's two at least.
    let taken: Vec<u64> = (0..3).map(|_| a.malloc(8 * MIB, S).unwrap()).collect();
    add_room(&mut a, 16 * MIB);
    let before = a.stats();
    let p = a.malloc(24 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    assert_ne!(p, cached);
    assert!(a.device().accessible(p, 24 * MIB));
    assert_eq!(
        a.stats().stitched_blocks.current,
        before.stitched_blocks.current + 1
    );
    live.push(p);
    live.extend(taken);
    teardown(a, live);
}
