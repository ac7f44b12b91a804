//! Property tests: random allocate / free / record_stream / empty_cache sequences over several
//! streams, checked after every step against a simple model and the allocator's own consistency
//! check (blocks tile segments, pools, page counts, stitched aliases, statistics, and no two live
//! allocations sharing physical memory), then torn down to nothing.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, BlockStateInfo, Config, Device, Error, PoolKind, StreamHandle};
use proptest::prelude::*;
use std::collections::BTreeMap;

const MIB: u64 = 1 << 20;

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: u64, stream: u64 },
    Free { pick: usize },
    RecordStream { pick: usize, stream: u64 },
    EmptyCache,
    FreeGarbage { addr: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop_oneof![1u64..4096, 4096u64..MIB, MIB..(24 * MIB)], 0u64..3).prop_map(|(size, stream)| Op::Alloc { size, stream }),
        5 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => (any::<usize>(), 0u64..3).prop_map(|(pick, stream)| Op::RecordStream { pick, stream }),
        1 => Just(Op::EmptyCache),
        1 => any::<u64>().prop_map(|addr| Op::FreeGarbage { addr }),
    ]
}

/// Live allocations by address: (size, stream).
type Model = BTreeMap<u64, (u64, u64)>;

/// After an out-of-memory error (which released all cached memory first), the request must really
/// not fit: free whole pages plus the device's remaining room are less than it needs, and for a
/// small request no free block is large enough and less than a granule is left.
fn oom_was_real(
    a: &Allocator<SimulatedDevice>,
    size: u64,
    capacity: u64,
) -> Result<(), TestCaseError> {
    const G: u64 = 2 * MIB;
    let rounded = size.div_ceil(512) * 512;
    let room = capacity - a.device().books().unwrap().handle_bytes;
    // Stitching maps whole physical chunks only (the driver's rule): count whole free chunks.
    let mut free_whole = 0;
    let mut largest_free = 0;
    for seg in a.snapshot().segments {
        for b in seg
            .blocks
            .iter()
            .filter(|b| b.state == BlockStateInfo::Inactive)
        {
            largest_free = largest_free.max(b.size);
            if seg.pool == PoolKind::Large {
                for c in seg.chunks.iter().filter(|c| !c.released) {
                    let start = seg.address + c.offset;
                    if start >= b.address && start + c.size <= b.address + b.size {
                        free_whole += c.size;
                    }
                }
            }
        }
    }
    let bad = largest_free >= rounded
        || (rounded <= MIB && room >= G)
        || (rounded > MIB && free_whole + room >= rounded);
    if bad && std::env::var("GMLAKE_DUMP").is_ok() {
        eprintln!(
            "OOM DUMP for {size} room {room} free whole chunks {free_whole} largest {largest_free}"
        );
        for seg in a.snapshot().segments {
            eprintln!(
                "seg {:#x} {:?} stream {} size {}",
                seg.address, seg.pool, seg.stream, seg.size
            );
            for b in seg.blocks {
                eprintln!("   {:#x} {} {:?}", b.address, b.size, b.state);
            }
        }
        for st in a.snapshot().stitched {
            eprintln!(
                "stitched {:#x} {} active {} pieces {}",
                st.address,
                st.size,
                st.active,
                st.pieces.len()
            );
        }
    }
    prop_assert!(
        largest_free < rounded,
        "OOM for {} with a free block of {}",
        size,
        largest_free
    );
    if rounded <= MIB {
        prop_assert!(room < G, "small OOM with {} bytes of room", room);
    } else {
        prop_assert!(
            free_whole + room < rounded,
            "OOM for {}: {} bytes of whole free chunks, {} room",
            size,
            free_whole,
            room
        );
    }
    Ok(())
}

/// `check_oom`: check that every out-of-memory error was real (off for configurations that do
/// not stitch, where fragmentation may refuse a request that free memory could hold).
fn run(
    ops: &[Op],
    cfg: Config,
    capacity: u64,
    check_oom: bool,
    latency: u32,
) -> Result<(), TestCaseError> {
    let mut dev = SimulatedDevice::new(capacity);
    dev.set_event_latency(latency);
    let mut a = Allocator::new(dev, cfg).unwrap();
    let mut model: Model = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Alloc { size, stream } => match a.malloc(size, StreamHandle(stream)) {
                Ok(p) => {
                    prop_assert_eq!(p % 512, 0);
                    // Readable and writable: mapped with access granted over every byte.
                    prop_assert!(
                        a.device().accessible(p, size),
                        "{:#x}+{} not accessible",
                        p,
                        size
                    );
                    // No overlap in address space with any live allocation.
                    if let Some((&q, &(qs, _))) = model.range(..=p).next_back() {
                        prop_assert!(q + qs <= p, "{:#x} overlaps {:#x}+{}", p, q, qs);
                    }
                    if let Some((&q, _)) = model.range(p..).next() {
                        prop_assert!(p + size <= q, "{:#x}+{} overlaps {:#x}", p, size, q);
                    }
                    model.insert(p, (size, stream));
                }
                Err(Error::OutOfMemory(info)) => {
                    prop_assert_eq!(info.requested, size);
                    if check_oom {
                        oom_was_real(&a, size, capacity)?;
                    }
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            },
            Op::Free { pick } if !model.is_empty() => {
                let addr = *model.keys().nth(pick % model.len()).unwrap();
                model.remove(&addr);
                a.free(addr).unwrap();
                prop_assert_eq!(a.free(addr), Err(Error::NotAllocated { addr }));
            }
            Op::RecordStream { pick, stream } if !model.is_empty() => {
                let addr = *model.keys().nth(pick % model.len()).unwrap();
                a.record_stream(addr, StreamHandle(stream)).unwrap();
            }
            Op::EmptyCache => {
                a.empty_cache().unwrap();
                // Everything free and completed went back: only chunks under live data stay.
                let held = a.device().books().unwrap().handle_bytes;
                prop_assert_eq!(held as i64, a.stats().reserved_bytes.all.current);
            }
            Op::FreeGarbage { addr } if !model.contains_key(&addr) => {
                prop_assert_eq!(a.free(addr), Err(Error::NotAllocated { addr }));
            }
            _ => {}
        }
        if let Err(e) = a.check_invariants() {
            prop_assert!(false, "after {op:?}: {e}");
        }
        let st = a.stats();
        prop_assert_eq!(st.allocation.all.current as usize, model.len());
        prop_assert_eq!(
            st.requested_bytes.all.current as u64,
            model.values().map(|v| v.0).sum::<u64>()
        );
        let books = a.device().books().unwrap();
        prop_assert_eq!(books.handle_bytes as i64, st.reserved_bytes.all.current);
    }
    prop_assert_eq!(a.release_all().unwrap(), 0);
    let books = a.device().books().unwrap();
    prop_assert_eq!(
        (books.handles, books.ranges, books.mappings, books.events),
        (0, 0, 0, 0)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn default_config_matches_model(ops in proptest::collection::vec(op(), 1..250), latency in 0u32..3) {
        run(&ops, Config::default(), 256 * MIB, true, latency)?;
    }

    #[test]
    fn eager_stitching_small_handles_matches_model(ops in proptest::collection::vec(op(), 1..250), latency in 0u32..3) {
        let cfg = Config::parse("frag_limit:0,reuse_limit:2,max_handle_size:4MB,min_growth:2MB,max_stitch_mappings:8,stitched_bytes_limit:64MB").unwrap();
        run(&ops, cfg, 128 * MIB, true, latency)?;
    }

    #[test]
    fn free_end_stitching_matches_model(ops in proptest::collection::vec(op(), 1..250), latency in 0u32..3) {
        // One-granule handles on a small device: whole chunks often fall short, and stitches
        // map chunks with a free end, whose other bytes other allocations hold.
        let cfg = Config::parse("stitch_free_ends:true,frag_limit:0,min_handle_size:2MB,max_handle_size:2MB,min_growth:2MB,split_chunks:false").unwrap();
        run(&ops, cfg, 64 * MIB, true, latency)?;
    }

    #[test]
    fn settled_free_end_stitching_matches_model(ops in proptest::collection::vec(op(), 1..250), latency in 0u32..3) {
        // Free ends by default once settled (`free_ends_after`), here after 8 requests without
        // growth, so that random programs reach it; cached stitched blocks grown and reused
        // oldest first.
        let cfg = Config::parse("free_ends_after:8,frag_limit:0,min_handle_size:2MB,max_handle_size:2MB,min_growth:2MB").unwrap();
        run(&ops, cfg, 64 * MIB, true, latency)?;
    }

    #[test]
    fn stitching_off_matches_model(ops in proptest::collection::vec(op(), 1..150)) {
        // Without stitching, fragmentation may cause OOMs anywhere.
        run(&ops, Config::parse("stitching:false").unwrap(), 256 * MIB, false, 1)?;
    }
}
