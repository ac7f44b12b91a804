//! Stitching the free ends of chunks (`stitch_free_ends`): where whole free chunks fall short, a
//! stitch may map a chunk whose free bytes end it first (the stitched block serves from those
//! bytes on) and a chunk whose free bytes start it last. Checked on the simulated device with
//! one-granule handles and no room to grow, so that only such a stitch can serve: the request is
//! served without new memory (and, with room, a stitch that grows new memory grows less), no
//! byte of a handle is handed out twice (`check_invariants`), the block is reused from the same
//! address once freed, and nothing leaks. Without the option, the same holds once a job has
//! settled (`free_ends_after`) and while memory is short.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, StreamHandle};

const MIB: u64 = 1 << 20;
const S: StreamHandle = StreamHandle(0);
/// One-granule (2 MiB) handles, stitching at any size, no chunk cuts.
const GRANULE_HANDLES: &str =
    "frag_limit:0,min_handle_size:2MB,max_handle_size:2MB,min_growth:2MB,split_chunks:false";

/// A 10 MiB device holding three segments: a 3 MiB tensor in 4 MiB (its second chunk's last MiB
/// free), a full 4 MiB one, and a whole free 2 MiB chunk. Returns the allocator and its live
/// pointers.
fn fragments(free_ends: bool) -> (Allocator<SimulatedDevice>, Vec<u64>) {
    fragments_on(free_ends, 10 * MIB)
}

/// `fragments` on a device of `capacity` bytes.
fn fragments_on(free_ends: bool, capacity: u64) -> (Allocator<SimulatedDevice>, Vec<u64>) {
    fragments_with(&format!("stitch_free_ends:{free_ends}"), capacity)
}

/// `fragments_on` with `extra` configuration.
fn fragments_with(extra: &str, capacity: u64) -> (Allocator<SimulatedDevice>, Vec<u64>) {
    let cfg = Config::parse(&format!("{GRANULE_HANDLES},{extra}")).unwrap();
    let mut a = Allocator::new(SimulatedDevice::new(capacity), cfg).unwrap();
    // Each on a stream of its own, so that each is a segment of its own (a segment grows in
    // place only for its own stream); the simulated device completes their work at once.
    let head = a.malloc(3 * MIB, StreamHandle(1)).unwrap();
    let full = a.malloc(4 * MIB, StreamHandle(2)).unwrap();
    let spare = a.malloc(2 * MIB, StreamHandle(3)).unwrap();
    a.free(spare).unwrap();
    assert_eq!(a.stats().reserved_bytes.all.current, 10 * MIB as i64);
    (a, Vec::from([head, full]))
}

fn teardown(mut a: Allocator<SimulatedDevice>, live: Vec<u64>) {
    for p in live {
        a.free(p).unwrap();
    }
    a.check_invariants().unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
    let books = a.device().books().unwrap();
    assert_eq!((books.handles, books.ranges, books.mappings), (0, 0, 0));
}

/// A device with room to spare: memory is not short (`policy::under_pressure`).
const ROOMY: u64 = 1 << 30;

#[test]
fn with_room_a_job_still_growing_grows_rather_than_map_a_free_end() {
    let (mut a, mut live) = fragments_on(false, ROOMY);
    // 1 MiB free at a chunk's end and a whole 2 MiB chunk: no stitch of whole chunks holds 3 MiB.
    let p = a.malloc(3 * MIB, S).unwrap();
    assert!(
        a.stats().reserved_bytes.all.current > 10 * MIB as i64,
        "new memory"
    );
    assert_eq!(p % (2 * MIB), 0, "not from a free end");
    live.push(p);
    teardown(a, live);
}

#[test]
fn when_memory_is_short_a_free_end_serves_without_the_option() {
    // The same on a full device: memory is short, and free ends serve by default.
    let (mut a, mut live) = fragments(false);
    let p = a.malloc(3 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    assert_eq!(
        a.stats().reserved_bytes.all.current,
        10 * MIB as i64,
        "no new memory"
    );
    assert_eq!(p % (2 * MIB), MIB, "served from the free end on");
    assert!(a.device().accessible(p, 3 * MIB));
    live.push(p);
    teardown(a, live);
}

#[test]
fn a_chunks_free_end_starts_a_stitched_block() {
    let (mut a, mut live) = fragments(true);
    let before = a.stats();
    let p = a.malloc(3 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    let st = a.stats();
    assert_eq!(
        st.num_stitches,
        before.num_stitches + 1,
        "served by a stitch"
    );
    assert_eq!(
        st.reserved_bytes.all.current, before.reserved_bytes.all.current,
        "with no new memory"
    );
    // The block serves from the free megabyte on: 1 MiB into its first (2 MiB) chunk.
    assert_eq!(p % (2 * MIB), MIB);
    assert!(a.device().accessible(p, 3 * MIB));

    // Freed and asked for again, the cached block serves from the same address, no driver call.
    a.free(p).unwrap();
    let (reuses, calls) = (a.stats().num_stitch_reuses, a.device().calls());
    a.malloc(2 * MIB, S).map(|q| a.free(q)).unwrap().unwrap();
    let q = a.malloc(3 * MIB, S).unwrap();
    assert_eq!(q, p);
    assert!(a.stats().num_stitch_reuses > reuses);
    assert_eq!(a.device().calls(), calls, "reuse makes no driver call");
    a.check_invariants().unwrap();

    // The tensor before the free end goes, and its bytes serve again while the block lives.
    let head = live.remove(0);
    a.free(head).unwrap();
    let again = a.malloc(3 * MIB, StreamHandle(1)).unwrap();
    a.check_invariants().unwrap();
    live.extend([q, again]);
    teardown(a, live);
}

/// Reserved bytes after a 5 MiB request on the fragments on a device of `capacity` bytes: the
/// free end (1 MiB) and the whole chunk (2 MiB) lack 2 MiB, the whole chunk alone 3 MiB (4 MiB in
/// granules).
fn growth_for_five(free_ends: bool, capacity: u64) -> (i64, u64) {
    let (mut a, mut live) = fragments_on(free_ends, capacity);
    let before = a.stats().reserved_bytes.all.current;
    let p = a.malloc(5 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    assert!(a.device().accessible(p, 5 * MIB));
    let grown = a.stats().reserved_bytes.all.current - before;
    live.push(p);
    teardown(a, live);
    (grown, p)
}

#[test]
fn a_stitch_that_grows_maps_a_free_end_and_grows_less() {
    let (without, _) = growth_for_five(false, ROOMY);
    let (with, p) = growth_for_five(true, ROOMY);
    assert_eq!(without, 4 * MIB as i64);
    assert_eq!(with, 2 * MIB as i64);
    assert_eq!(p % (2 * MIB), MIB, "served from the free end on");
    // With 4 MiB of room, memory is short: the same without the option.
    let (short, p) = growth_for_five(false, 14 * MIB);
    assert_eq!(short, 2 * MIB as i64);
    assert_eq!(p % (2 * MIB), MIB);
}

/// Reserved bytes after a 3 MiB request on the fragments with room to spare, `after` requests
/// having been served from cached memory since the last growth (`free_ends_after:SETTLE`).
fn growth_once_settled(after: u64) -> i64 {
    const SETTLE: u64 = 8;
    let (mut a, mut live) = fragments_with(&format!("free_ends_after:{SETTLE}"), ROOMY);
    for _ in 0..after {
        // 512 KiB from the free bytes of the large pool: no new memory.
        let p = a.malloc(MIB / 2, S).unwrap();
        a.free(p).unwrap();
    }
    assert_eq!(a.stats().reserved_bytes.all.current, 10 * MIB as i64);
    let before = a.stats();
    let p = a.malloc(3 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    assert!(a.device().accessible(p, 3 * MIB));
    assert_eq!(
        a.stats().num_stitches,
        before.num_stitches + 1,
        "served by a stitch"
    );
    live.push(p);
    let grown = a.stats().reserved_bytes.all.current - before.reserved_bytes.all.current;
    teardown(a, live);
    grown
}

#[test]
fn a_settled_job_stitches_free_ends_before_it_grows() {
    // Still growing (7 requests since the last growth, fewer than 8): the whole free chunk and a
    // new granule; settled (8): the free megabyte at a chunk's end and the whole chunk.
    assert_eq!(growth_once_settled(7), 2 * MIB as i64);
    assert_eq!(growth_once_settled(8), 0);
}
