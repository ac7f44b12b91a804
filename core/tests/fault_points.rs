//! Fault points placed *within* one operation: for a segment growth, a stitch (also of a chunk's
//! free end, with and without new memory), a chunk split (also where a placement crosses chunks,
//! memory short), an `empty_cache` and a garbage
//! collection of stitched blocks (StitchFree), every kind of driver
//! call the operation makes fails at its first, middle and last call of that kind inside the
//! operation.
//! Each time: the operation returns `Ok` or a `Device`/`OutOfMemory` error, the allocator stays
//! consistent, the next request is served, and the teardown leaves no handle, range, mapping or
//! event on the device. The clean run of each scenario is checked to really do what it is named for
//! (a growth grows, a stitch stitches, a GC collects), so the faults land where intended.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, DriverCall, Error, Stats, StreamHandle};

mod support;
use support::{add_room, calls_made, fragmented, fragmented_with_cached, EAGER, MIB};
const S: StreamHandle = StreamHandle(0);

type A = Allocator<SimulatedDevice>;

fn allocator(conf: &str) -> A {
    Allocator::new(SimulatedDevice::new(1 << 40), Config::parse(conf).unwrap()).unwrap()
}

struct Scenario {
    name: &'static str,
    conf: &'static str,
    setup: fn(&mut A, &mut Vec<u64>),
    op: fn(&mut A, &mut Vec<u64>) -> Result<(), Error>,
    /// Checks, on the clean run, that the operation did what the scenario is named for.
    did_it: fn(&Stats, &Stats) -> bool,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "segment growth",
            conf: EAGER,
            setup: |a, live| live.push(a.malloc(MIB, S).unwrap()),
            op: |a, live| a.malloc(40 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| after.segment.all.current > before.segment.all.current,
        },
        Scenario {
            name: "stitch",
            conf: EAGER,
            setup: fragmented,
            op: |a, live| a.malloc(24 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| after.num_stitches > before.num_stitches,
        },
        Scenario {
            name: "stitch with new memory",
            conf: EAGER,
            setup: |a, live| {
                fragmented(a, live);
                add_room(a, 8 * MIB);
            },
            op: |a, live| a.malloc(40 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| {
                after.num_stitches > before.num_stitches
                    && after.segment.all.current > before.segment.all.current
            },
        },
        Scenario {
            name: "growing a cached stitched block",
            conf: EAGER,
            setup: |a, live| {
                fragmented_with_cached(a, live, 16 * MIB);
            },
            op: |a, live| a.malloc(24 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| {
                after.num_stitches > before.num_stitches
                    && after.stitched_blocks.current == before.stitched_blocks.current
            },
        },
        Scenario {
            name: "growing a cached stitched block with new memory",
            conf: EAGER,
            setup: |a, live| {
                fragmented_with_cached(a, live, 24 * MIB);
                add_room(a, 8 * MIB);
            },
            op: |a, live| a.malloc(40 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| {
                after.num_stitches > before.num_stitches
                    && after.segment.all.current > before.segment.all.current
                    && after.stitched_blocks.current == before.stitched_blocks.current
            },
        },
        Scenario {
            name: "chunk split",
            conf: "",
            // A free 64 MiB segment of two 32 MiB handles beside a live one: a 4 MiB request
            // cuts one of the handles in two (`core/tests/chunk_splits.rs`).
            setup: |a, live| {
                live.push(a.malloc(64 * MIB, S).unwrap());
                let p = a.malloc(64 * MIB, S).unwrap();
                a.free(p).unwrap();
            },
            op: |a, live| a.malloc(4 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| after.num_chunk_splits > before.num_chunk_splits,
        },
        Scenario {
            name: "cuts where a placement crosses chunks",
            conf: "",
            // A free 64 MiB segment of two 32 MiB handles on a device with 32 MiB more: memory
            // is short, and a 40 MiB request at the front cuts the second handle after it.
            setup: |a, _| {
                let p = a.malloc(64 * MIB, S).unwrap();
                a.free(p).unwrap();
                add_room(a, 32 * MIB);
            },
            op: |a, live| a.malloc(40 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| after.num_chunk_splits > before.num_chunk_splits,
        },
        Scenario {
            name: "empty_cache",
            conf: EAGER,
            setup: |a, live| {
                fragmented_with_cached(a, live, 24 * MIB);
                a.free(live.pop().unwrap()).unwrap();
            },
            op: |a, _| a.empty_cache(),
            did_it: |before, after| {
                after.reserved_bytes.all.current < before.reserved_bytes.all.current
                    && after.stitched_blocks.current == 0
                    && before.stitched_blocks.current > 0
            },
        },
        Scenario {
            name: "stitch of a chunk's free end",
            conf: FREE_ENDS,
            setup: |a, live| free_end_fragments(a, live, 0),
            op: |a, live| a.malloc(3 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| {
                after.num_stitches > before.num_stitches
                    && after.reserved_bytes.all.current == before.reserved_bytes.all.current
            },
        },
        Scenario {
            name: "stitch with new memory after a chunk's free end",
            conf: FREE_ENDS,
            setup: |a, live| free_end_fragments(a, live, 4 * MIB),
            op: |a, live| a.malloc(5 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| {
                after.num_stitches > before.num_stitches
                    && after.reserved_bytes.all.current - before.reserved_bytes.all.current
                        == 2 * MIB as i64
            },
        },
        Scenario {
            name: "stitched-block garbage collection",
            conf: "frag_limit:0,max_handle_size:8MB,min_growth:2MB,split_chunks:false,stitched_bytes_limit:40MB",
            // A cached block over three of the four free chunks, one of which a primitive block
            // then takes: the next stitch cannot grow it and makes a new one, past the bound.
            setup: |a, live| {
                fragmented_with_cached(a, live, 24 * MIB);
                live.push(a.malloc(8 * MIB, S).unwrap());
            },
            op: |a, live| a.malloc(24 * MIB, S).map(|p| live.push(p)),
            did_it: |before, after| after.num_stitch_gc > before.num_stitch_gc,
        },
    ]
}

/// One-granule handles, and stitches that may map chunks' free ends.
const FREE_ENDS: &str = "frag_limit:0,min_handle_size:2MB,max_handle_size:2MB,min_growth:2MB,split_chunks:false,stitch_free_ends:true";

/// Three segments, each of its own stream: a 3 MiB tensor in 4 MiB (the last MiB of its second
/// chunk free), a full 4 MiB one, and a free 2 MiB chunk; then the device's room cut to `room`.
fn free_end_fragments(a: &mut A, live: &mut Vec<u64>, room: u64) {
    live.push(a.malloc(3 * MIB, StreamHandle(1)).unwrap());
    live.push(a.malloc(4 * MIB, StreamHandle(2)).unwrap());
    let spare = a.malloc(2 * MIB, StreamHandle(3)).unwrap();
    a.free(spare).unwrap();
    let reserved = a.stats().reserved_bytes.all.current as u64;
    a.device_mut().set_capacity(reserved + room);
}

fn teardown(mut a: A, mut live: Vec<u64>, what: &str) {
    a.device_mut().set_capacity(1 << 40);
    let p = a
        .malloc(3 * MIB, S)
        .unwrap_or_else(|e| panic!("{what}: next request refused: {e}"));
    live.push(p);
    a.check_invariants()
        .unwrap_or_else(|e| panic!("{what}: after the next request: {e}"));
    for p in live {
        a.free(p).unwrap();
    }
    assert_eq!(a.release_all().unwrap(), 0, "{what}: objects still held");
    let h = a.device().holdings();
    assert_eq!(
        (h.handles, h.ranges, h.mappings, h.events),
        (0, 0, 0, 0),
        "{what}: leaked"
    );
}

#[test]
fn every_call_kind_fails_at_the_first_middle_and_last_point_of_each_operation() {
    let mut tried = 0;
    for sc in scenarios() {
        // Clean run: which calls the operation makes, and a check that it does its job.
        let mut a = allocator(sc.conf);
        let mut live = Vec::new();
        (sc.setup)(&mut a, &mut live);
        let before_stats = a.stats();
        let before = a.device().calls();
        (sc.op)(&mut a, &mut live).unwrap_or_else(|e| panic!("{}: clean run: {e}", sc.name));
        let after = a.device().calls();
        assert!(
            (sc.did_it)(&before_stats, &a.stats()),
            "{}: the clean run did not do it",
            sc.name
        );
        teardown(a, live, sc.name);

        for kind in DriverCall::ALL {
            let n = calls_made(before, after, kind);
            if n == 0 {
                continue;
            }
            println!("{}: {} x{n}", sc.name, kind.name());
            let mut points = vec![1, n.div_ceil(2), n];
            points.dedup();
            // Each point alone, and with the cleanup's next unmap or handle release refused too
            // (the rollback's own failure paths).
            let seconds = [
                None,
                Some(DriverCall::Unmap),
                Some(DriverCall::ReleaseHandle),
            ];
            for (k, second) in points.into_iter().flat_map(|k| seconds.map(|s| (k, s))) {
                let what = format!("{}: {} #{k} of {n}, then {second:?}", sc.name, kind.name());
                let mut a = allocator(sc.conf);
                let mut live = Vec::new();
                (sc.setup)(&mut a, &mut live);
                let start = a.device().calls().get(kind);
                a.device_mut().inject_fault(kind, start + k);
                if let Some(second) = second {
                    let at = if second == kind {
                        start + k + 1
                    } else {
                        a.device().calls().get(second) + calls_made(before, after, second) + 1
                    };
                    a.device_mut().inject_fault(second, at);
                }
                match (sc.op)(&mut a, &mut live) {
                    Ok(()) | Err(Error::Device(_)) | Err(Error::OutOfMemory(_)) => {}
                    Err(e) => panic!("{what}: unexpected {e}"),
                }
                assert!(
                    a.device().calls().get(kind) >= start + k,
                    "{what}: the fault point was not reached"
                );
                a.check_invariants()
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                teardown(a, live, &what);
                tried += 1;
            }
        }
    }
    println!("{tried} fault points tried within operations");
    assert!(tried >= 60, "only {tried} fault points");
}
