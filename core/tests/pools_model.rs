//! Property tests of private pools: random programs of allocations in and out of two private
//! pools, frees, `record_stream`, pools created, shared and released, captures begun and ended
//! ("still in use" periods), checkpoints restored and `empty_cache`, checked after every step:
//! the allocator's own consistency check (which includes that no two live allocations share a
//! physical byte), that every live allocation lies in memory of its own pool, and that a private
//! pool in use never gives memory back (a graph may replay into it). Torn down to nothing.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, Error, PoolId, Snapshot, StreamHandle};
use proptest::prelude::*;
use std::collections::BTreeMap;

mod support;

const MIB: u64 = 1 << 20;
const POOLS: [PoolId; 2] = [PoolId(1, 0), PoolId(7, 3)];

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: u64, stream: u64, pool: usize },
    Free { pick: usize },
    RecordStream { pick: usize, stream: u64 },
    Incref { pool: usize },
    Release { pool: usize },
    Capture { begin: bool },
    Checkpoint { pool: usize },
    Restore { pool: usize },
    EmptyCache,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![1u64..4096, 4096u64..MIB, MIB..(24 * MIB)];
    prop_oneof![
        8 => (size, 0u64..2, 0usize..3).prop_map(|(size, stream, pool)| Op::Alloc { size, stream, pool }),
        6 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => (any::<usize>(), 0u64..2).prop_map(|(pick, stream)| Op::RecordStream { pick, stream }),
        2 => (0usize..2).prop_map(|pool| Op::Incref { pool }),
        2 => (0usize..2).prop_map(|pool| Op::Release { pool }),
        1 => any::<bool>().prop_map(|begin| Op::Capture { begin }),
        1 => (0usize..2).prop_map(|pool| Op::Checkpoint { pool }),
        1 => (0usize..2).prop_map(|pool| Op::Restore { pool }),
        1 => Just(Op::EmptyCache),
    ]
}

/// The pool owning the memory at `addr`: its stitched block's or its segment's.
fn owner(snap: &Snapshot, addr: u64) -> Option<PoolId> {
    if let Some(st) = snap.stitched.iter().find(|s| s.address == addr) {
        return Some(st.owner);
    }
    snap.segments
        .iter()
        .find(|s| s.address <= addr && addr < s.address + s.size)
        .map(|s| s.owner)
}

/// Bytes of live physical chunks in segments of `pool`.
fn held_by(snap: &Snapshot, pool: PoolId) -> u64 {
    snap.segments
        .iter()
        .filter(|s| s.owner == pool)
        .flat_map(|s| s.chunks.iter().filter(|c| !c.released).map(|c| c.size))
        .sum()
}

fn run(ops: &[Op], cfg: Config) -> Result<(), TestCaseError> {
    let mut a = Allocator::new(SimulatedDevice::new(256 * MIB), cfg).unwrap();
    // Live allocations: address -> (size, pool id).
    let mut live: BTreeMap<u64, (u64, PoolId)> = BTreeMap::new();
    let mut users = [0u32; 2];
    let mut captures = 0u32;
    let mut checkpoints: [Option<gmlake_core::PoolCheckpoint>; 2] = [None, None];
    // While a pool is in use, its memory must not shrink.
    let mut floor = [0u64; 2];
    for op in ops {
        match *op {
            Op::Alloc { size, stream, pool } => {
                let id = if pool == 0 {
                    PoolId::DEFAULT
                } else {
                    POOLS[pool - 1]
                };
                let r = a.malloc_in(size, StreamHandle(stream), id);
                match r {
                    Ok(p) => {
                        prop_assert!(pool == 0 || users[pool - 1] > 0);
                        live.insert(p, (size, id));
                    }
                    Err(Error::InvalidArgument(_)) => {
                        prop_assert!(pool > 0 && users[pool - 1] == 0)
                    }
                    Err(Error::OutOfMemory(_)) => {}
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            Op::Free { pick } if !live.is_empty() => {
                let addr = *live.keys().nth(pick % live.len()).unwrap();
                live.remove(&addr);
                a.free(addr).unwrap();
            }
            Op::RecordStream { pick, stream } if !live.is_empty() => {
                let addr = *live.keys().nth(pick % live.len()).unwrap();
                a.record_stream(addr, StreamHandle(stream)).unwrap();
            }
            Op::Incref { pool } => {
                a.create_or_incref_pool(POOLS[pool]).unwrap();
                users[pool] += 1;
            }
            Op::Release { pool } => {
                let r = a.release_pool(POOLS[pool]);
                if users[pool] > 0 {
                    r.unwrap();
                    users[pool] -= 1;
                    if users[pool] == 0 {
                        floor[pool] = 0;
                        checkpoints[pool] = None;
                    }
                } else {
                    prop_assert!(r.is_err());
                }
            }
            Op::Capture { begin: true } => {
                a.begin_capture();
                captures += 1;
            }
            Op::Capture { begin: false } if captures > 0 => {
                a.end_capture();
                captures -= 1;
            }
            Op::Checkpoint { pool } if users[pool] > 0 => {
                checkpoints[pool] = Some(a.checkpoint_pool(POOLS[pool]).unwrap());
            }
            Op::Restore { pool } if captures == 0 => {
                if let Some(cp) = checkpoints[pool].clone() {
                    let r = a.restore_pool(&cp).unwrap();
                    for f in &r.freed {
                        live.remove(f);
                    }
                    for &(addr, size, _) in &cp.allocations {
                        live.insert(addr, (size, POOLS[pool]));
                    }
                    prop_assert_eq!(a.pool_live_allocations(POOLS[pool]), r.allocated);
                }
            }
            Op::EmptyCache => a.empty_cache().unwrap(),
            _ => {}
        }
        if let Err(e) = a.check_invariants() {
            prop_assert!(false, "after {op:?}: {e}");
        }
        let snap = a.snapshot();
        for (&addr, &(_, pool)) in &live {
            prop_assert_eq!(owner(&snap, addr), Some(pool), "{:#x} after {:?}", addr, op);
        }
        for (i, &id) in POOLS.iter().enumerate() {
            if users[i] > 0 {
                let held = held_by(&snap, id);
                prop_assert!(held >= floor[i], "pool {i} gave memory back after {op:?}");
                floor[i] = held;
            }
        }
        let st = a.stats();
        prop_assert_eq!(st.allocation.all.current as usize, live.len());
        let books = a.device().books().unwrap();
        prop_assert_eq!(books.handle_bytes as i64, st.reserved_bytes.all.current);
    }
    // Nothing left on the device (a panic here fails the case too).
    support::teardown(a, Vec::new());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pools_keep_their_memory_apart(ops in proptest::collection::vec(op(), 1..250)) {
        run(&ops, Config::default())?;
    }

    #[test]
    fn pools_with_eager_stitching_keep_their_memory_apart(ops in proptest::collection::vec(op(), 1..250)) {
        let cfg = Config::parse("frag_limit:0,reuse_limit:2,max_handle_size:4MB,min_growth:2MB,max_stitch_mappings:8,stitched_bytes_limit:64MB").unwrap();
        run(&ops, cfg)?;
    }
}
