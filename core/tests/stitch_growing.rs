//! A stitch that needs new memory (the free chunks hold part of the request): the new chunks form
//! a segment at the start of the stitched range, mapped once for both. Checked on the simulated
//! device, which keeps every mapping and its access: the stitched block must be accessible
//! throughout, destroying it must leave the segment's own mappings in place, and nothing may leak.

use gmlake_core::{DriverCall, StreamHandle};

mod support;
use support::{add_room, calls_made, destroy_keeps_segments, eager, fragmented, teardown, MIB};
const S: StreamHandle = StreamHandle(0);

#[test]
fn new_chunks_are_mapped_once_and_outlive_the_stitched_block() {
    // Four free 8 MiB chunks, each in a segment of its own between live ones, and room on the
    // device for 8 MiB more.
    let (mut a, mut live) = (eager(), Vec::new());
    fragmented(&mut a, &mut live);
    add_room(&mut a, 8 * MIB);
    let (before, calls) = (a.stats(), a.device().calls());
    let mappings = a.device().holdings().mappings;

    let p = a.malloc(40 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    let (st, after) = (a.stats(), a.device().calls());
    assert_eq!(
        st.num_stitches,
        before.num_stitches + 1,
        "served by a stitch"
    );
    assert_eq!(
        st.segment.all.current,
        before.segment.all.current + 1,
        "with a new segment"
    );
    assert_eq!(
        st.reserved_bytes.all.current - before.reserved_bytes.all.current,
        8 * MIB as i64,
        "only the shortfall is new"
    );
    // The new chunks (one 8 MiB handle, or granules where the device is nearly full) and the four
    // free ones, each mapped once: not twice for the new memory.
    let created = calls_made(calls, after, DriverCall::CreateHandle);
    assert!(created >= 1);
    assert_eq!(calls_made(calls, after, DriverCall::Map), 4 + created);
    assert_eq!(a.device().holdings().mappings, mappings + 4 + created);
    assert!(
        a.device().accessible(p, 40 * MIB),
        "the whole stitched range is accessible"
    );
    a.free(p).unwrap();

    // Five 8 MiB requests take the five free chunks, the new one included, as primitive blocks;
    // destroying the cached stitched block (empty_cache does) must unmap only its own mappings.
    live.extend(destroy_keeps_segments(&mut a, 5));
    teardown(a, live);
}
