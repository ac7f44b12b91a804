//! Reuse of cached stitched blocks: a request that no free block fits is served by a freed
//! stitched block whose chunks are free again, with no driver call, even when many cached blocks
//! that fit it better have had their chunks taken since they were freed (the search looks at
//! every cached block that fits: `reuse_order` in `core/src/allocator/policy.rs`).

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, StreamHandle};

mod support;
use support::{add_room, teardown, MIB};
const S: StreamHandle = StreamHandle(0);

/// 2 MiB handles (one granule), stitches of any size, no chunk splits.
const SMALL_CHUNKS: &str = "frag_limit:0,max_handle_size:2MB,min_growth:2MB,split_chunks:false";

/// More cached stitched blocks than a search by size alone examines (64).
const CACHED: usize = 80;

/// `CACHED` stitched blocks of 4 MiB, each over two 2 MiB chunks of segments of their own (one
/// chunk each, between live blocks, on a full device) that were freed just before it was made,
/// so that block `i` maps the `2i`-th and `2i+1`-th such chunks in address order; then all freed
/// in the order they were made. Returns the allocator, the live blocks and the stitched blocks'
/// addresses.
fn cached_stitches() -> (Allocator<SimulatedDevice>, Vec<u64>, Vec<u64>) {
    let cfg = Config::parse(SMALL_CHUNKS).unwrap();
    let mut a = Allocator::new(SimulatedDevice::new(1 << 40), cfg).unwrap();
    let all: Vec<u64> = (0..4 * CACHED)
        .map(|_| a.malloc(2 * MIB, S).unwrap())
        .collect();
    add_room(&mut a, 0);
    let (mut live, mut holes) = (Vec::new(), Vec::new());
    for (i, p) in all.into_iter().enumerate() {
        if i % 2 == 0 {
            live.push(p);
        } else {
            holes.push(p);
        }
    }
    let mut stitched = Vec::new();
    for pair in holes.chunks(2) {
        a.free(pair[0]).unwrap();
        a.free(pair[1]).unwrap();
        stitched.push(a.malloc(4 * MIB, S).unwrap());
    }
    assert_eq!(a.stats().num_stitches, CACHED as u64);
    for &p in &stitched {
        a.free(p).unwrap();
    }
    assert_eq!(a.stats().stitched_blocks.current, CACHED as i64);
    a.check_invariants().unwrap();
    (a, live, stitched)
}

#[test]
fn the_most_recently_freed_stitched_block_serves_when_the_best_fitting_ones_are_taken() {
    let (mut a, mut live, stitched) = cached_stitches();
    // Take the chunks of every cached block but the last one freed, as primitive blocks.
    for _ in 0..2 * (CACHED - 1) {
        live.push(a.malloc(2 * MIB, S).unwrap());
    }
    let free_now = a.stats().reserved_bytes.all.current - a.stats().allocated_bytes.all.current;
    assert_eq!(
        free_now,
        4 * MIB as i64,
        "only the last block's two chunks are free"
    );

    let (before, calls) = (a.stats(), a.device().calls());
    let p = a.malloc(4 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    assert_eq!(p, stitched[CACHED - 1], "the last cached block serves it");
    assert_eq!(a.device().calls(), calls, "no driver call");
    let st = a.stats();
    assert_eq!(st.num_stitches, before.num_stitches, "no new stitch");
    assert_eq!(st.num_stitch_reuses, before.num_stitch_reuses + 1);
    assert_eq!(st.stitched_blocks.current, CACHED as i64);
    live.push(p);
    teardown(a, live);
}

#[test]
fn the_best_fitting_usable_block_still_comes_first() {
    let (mut a, mut live, stitched) = cached_stitches();
    // Free chunks under the first and the last cached block only: the first (same size, made
    // first) is the best fit and is taken although the last was freed more recently.
    let taken: Vec<u64> = (0..2 * (CACHED - 1))
        .map(|_| a.malloc(2 * MIB, S).unwrap())
        .collect();
    // Best fit took the free chunks in address order: the first two were the first block's.
    a.free(taken[0]).unwrap();
    a.free(taken[1]).unwrap();
    live.extend_from_slice(&taken[2..]);
    let calls = a.device().calls();
    let p = a.malloc(4 * MIB, S).unwrap();
    assert_eq!(p, stitched[0]);
    assert_eq!(a.device().calls(), calls, "no driver call");
    let q = a.malloc(4 * MIB, S).unwrap();
    assert_eq!(q, stitched[CACHED - 1], "then the other usable one");
    assert_eq!(a.device().calls(), calls, "no driver call");
    a.check_invariants().unwrap();
    live.extend([p, q]);
    teardown(a, live);
}
