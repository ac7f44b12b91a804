//! A stitch that needs new memory (the free chunks hold part of the request): the new chunks form
//! a segment at the start of the stitched range, mapped once for both. Checked on the simulated
//! device, which keeps every mapping and its access: the stitched block must be accessible
//! throughout, destroying it must leave the segment's own mappings in place, and nothing may leak.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, DriverCall, StreamHandle};

mod support;
use support::{fragmented, MIB};
const S: StreamHandle = StreamHandle(0);

/// Four free 8 MiB chunks, each in a segment of its own between live ones, and room on the
/// device for 8 MiB more.
fn fragmented_with_room() -> (Allocator<SimulatedDevice>, Vec<u64>) {
    let cfg = Config::parse("frag_limit:0,max_handle_size:8MB,min_growth:2MB,split_chunks:false")
        .unwrap();
    let mut a = Allocator::new(SimulatedDevice::new(1 << 40), cfg).unwrap();
    let mut live = Vec::new();
    fragmented(&mut a, &mut live);
    let held = a.device().books().unwrap().handle_bytes;
    a.device_mut().set_capacity(held + 8 * MIB);
    (a, live)
}

#[test]
fn new_chunks_are_mapped_once_and_outlive_the_stitched_block() {
    let (mut a, mut live) = fragmented_with_room();
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
    // One new 8 MiB chunk and the four free ones: five mappings, not six.
    assert_eq!(after.get(DriverCall::Map) - calls.get(DriverCall::Map), 5);
    assert_eq!(a.device().holdings().mappings, mappings + 5);
    assert!(
        a.device().accessible(p, 40 * MIB),
        "the whole stitched range is accessible"
    );
    a.free(p).unwrap();

    // Five 8 MiB requests take the five free chunks, the new one included, as primitive blocks.
    let mut parts = Vec::new();
    for _ in 0..5 {
        parts.push(a.malloc(8 * MIB, S).unwrap());
    }
    assert_eq!(
        a.stats().reserved_bytes.all.current,
        st.reserved_bytes.all.current
    );
    // Destroying the cached stitched block (empty_cache does) must unmap only its own mappings.
    a.empty_cache().unwrap();
    assert_eq!(a.stats().stitched_blocks.current, 0);
    a.check_invariants().unwrap();
    for &q in &parts {
        assert!(
            a.device().accessible(q, 8 * MIB),
            "{q:#x} lost its mapping with the stitched block"
        );
    }
    live.extend(parts);
    for q in live {
        a.free(q).unwrap();
    }
    assert_eq!(a.release_all().unwrap(), 0);
    let h = a.device().holdings();
    assert_eq!((h.handles, h.ranges, h.mappings), (0, 0, 0));
}
