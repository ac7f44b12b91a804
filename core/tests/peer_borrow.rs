//! Borrowing a peer GPU's memory (`peer_borrow`), on two simulated devices that are peers of one
//! another and count each other's borrowed handles as memory they no longer have: a request past
//! a full device is served by the peer's memory, alone or stitched behind the device's own free
//! chunks, within the per-peer limit; the peer's own allocator cannot take what is lent; borrowed
//! memory is used again before more is borrowed, never by ordinary requests, and goes back on
//! `empty_cache`; nothing changes without the setting; nothing leaks, whatever fails. Then random
//! programs on both devices at once (property test), with the books of both checked every step.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, DriverCall, Error, PoolId, StreamHandle};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const S: StreamHandle = StreamHandle(0);
/// Both devices' capacity in the tests below.
const CAP: u64 = 64 * MIB;

/// Allocators on two peer devices of `CAP` bytes: device 0 with `cfg0`, device 1 with defaults.
fn pair(cfg0: &str) -> (Allocator<SimulatedDevice>, Allocator<SimulatedDevice>) {
    let mut devs = SimulatedDevice::peers_of(&[CAP, CAP]).into_iter();
    let a = Allocator::new(devs.next().unwrap(), Config::parse(cfg0).unwrap()).unwrap();
    let b = Allocator::new(devs.next().unwrap(), Config::default()).unwrap();
    (a, b)
}

/// Bytes held in device `d`'s memory, by both devices.
fn used(a: &Allocator<SimulatedDevice>, d: u32) -> u64 {
    a.device().fabric().unwrap().used(d)
}

/// Frees `live`, releases everything on both devices, and checks that neither device's memory
/// holds anything and that nothing is left mapped.
fn teardown(mut a: Allocator<SimulatedDevice>, mut b: Allocator<SimulatedDevice>, live: Vec<u64>) {
    for p in live {
        a.free(p).unwrap();
    }
    a.check_invariants().unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
    assert_eq!(b.release_all().unwrap(), 0);
    assert_eq!(a.stats().borrowed_bytes.current, 0);
    assert_eq!(
        (used(&a, 0), used(&a, 1)),
        (0, 0),
        "both devices' memory is free again"
    );
    assert_eq!(a.device().holdings().mappings, 0);
}

#[test]
fn without_the_setting_nothing_is_borrowed() {
    let (mut a, b) = pair("");
    let full = a.malloc(CAP, S).unwrap();
    assert!(matches!(a.malloc(16 * MIB, S), Err(Error::OutOfMemory(_))));
    assert_eq!(a.stats().borrowed_bytes.peak, 0);
    assert_eq!(used(&a, 1), 0, "the peer's memory is untouched");
    teardown(a, b, vec![full]);
}

#[test]
fn a_request_past_a_full_device_is_served_by_the_peer() {
    let (mut a, mut b) = pair("peer_borrow:on,peer_borrow_limit:64MB");
    let full = a.malloc(CAP, S).unwrap();
    let p = a.malloc(32 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    assert!(
        a.device().accessible(p, 32 * MIB),
        "mapped for device 0 with access"
    );
    let st = a.stats();
    assert_eq!(st.borrowed_bytes.current, 32 * MIB as i64);
    assert_eq!(st.borrowed_from(1), 32 * MIB);
    assert_eq!(
        st.reserved_bytes.all.current,
        (CAP + 32 * MIB) as i64,
        "reserved counts it too"
    );
    assert_eq!(used(&a, 1), 32 * MIB, "the peer's memory holds it");

    // The lender's own allocator has only what is left, and cannot take what is lent.
    assert!(matches!(b.malloc(48 * MIB, S), Err(Error::OutOfMemory(_))));
    let own = b.malloc(32 * MIB, S).unwrap();
    b.check_invariants().unwrap();
    b.free(own).unwrap();
    b.empty_cache().unwrap();

    // Freed, it stays cached for the next borrower; empty_cache gives it back.
    a.free(p).unwrap();
    assert_eq!(used(&a, 1), 32 * MIB);
    a.empty_cache().unwrap();
    a.check_invariants().unwrap();
    assert_eq!(a.stats().borrowed_bytes.current, 0);
    assert_eq!(used(&a, 1), 0);
    let again = b.malloc(CAP, S).unwrap();
    b.free(again).unwrap();
    teardown(a, b, vec![full]);
}

#[test]
fn a_stitched_block_spans_both_devices() {
    // Eight 8 MiB segments fill device 0; every other one freed leaves four free 8 MiB chunks.
    let (mut a, b) = pair(
        "frag_limit:0,max_handle_size:8MB,min_growth:2MB,split_chunks:false,peer_borrow:on,peer_borrow_limit:32MB",
    );
    let ps: Vec<u64> = (0..8).map(|_| a.malloc(8 * MIB, S).unwrap()).collect();
    let mut live = Vec::new();
    for (i, p) in ps.into_iter().enumerate() {
        if i % 2 == 0 {
            a.free(p).unwrap();
        } else {
            live.push(p);
        }
    }
    let stitches = a.stats().num_stitches;
    let p = a.malloc(48 * MIB, S).unwrap();
    a.check_invariants().unwrap();
    let st = a.stats();
    assert_eq!(st.num_stitches, stitches + 1, "served by a stitch");
    assert_eq!(
        st.borrowed_bytes.current,
        16 * MIB as i64,
        "only the shortfall is borrowed"
    );
    assert_eq!(used(&a, 0), CAP, "device 0's own memory is all in use");
    assert!(a.device().accessible(p, 48 * MIB));
    live.push(p);
    teardown(a, b, live);
}

#[test]
fn the_per_peer_limit_holds() {
    let (mut a, b) = pair("peer_borrow:on,peer_borrow_limit:16MB");
    let full = a.malloc(CAP, S).unwrap();
    assert!(matches!(a.malloc(32 * MIB, S), Err(Error::OutOfMemory(_))));
    a.check_invariants().unwrap();
    assert_eq!(used(&a, 1), 0, "a refused borrow leaves nothing behind");
    let p = a.malloc(16 * MIB, S).unwrap();
    assert!(matches!(a.malloc(2 * MIB, S), Err(Error::OutOfMemory(_))));
    assert_eq!(a.stats().borrowed_bytes.peak, 16 * MIB as i64);
    teardown(a, b, vec![full, p]);
}

#[test]
fn the_default_limit_is_a_quarter_of_the_device() {
    let (mut a, b) = pair("peer_borrow:on");
    let full = a.malloc(CAP, S).unwrap();
    assert!(a.malloc(CAP / 4 + 2 * MIB, S).is_err());
    let p = a.malloc(CAP / 4, S).unwrap();
    teardown(a, b, vec![full, p]);
}

#[test]
fn borrowed_memory_serves_borrowers_again_and_no_one_else() {
    let (mut a, b) = pair("peer_borrow:on,peer_borrow_limit:64MB");
    let half = a.malloc(CAP / 2, S).unwrap();
    let rest = a.malloc(CAP / 2, S).unwrap();
    let p = a.malloc(32 * MIB, S).unwrap();
    a.free(p).unwrap();

    // Once more: the free borrowed block, with nothing borrowed anew.
    let lent = a.stats().borrowed_bytes.allocated;
    let q = a.malloc(32 * MIB, S).unwrap();
    assert_eq!(a.stats().borrowed_bytes.allocated, lent);
    assert_eq!(q, p);
    a.free(q).unwrap();

    // A request the device's own free memory can serve gets that, not the borrowed block.
    a.free(half).unwrap();
    let local = a.malloc(32 * MIB, S).unwrap();
    assert_eq!(local, half, "served by device 0's own memory");
    assert_eq!(a.stats().borrowed_bytes.current, 32 * MIB as i64);
    a.check_invariants().unwrap();
    teardown(a, b, vec![rest, local]);
}

#[test]
fn private_pools_do_not_borrow() {
    let (mut a, b) = pair("peer_borrow:on,peer_borrow_limit:64MB");
    let pool = PoolId(1, 0);
    a.create_or_incref_pool(pool).unwrap();
    let full = a.malloc_in(CAP, S, pool).unwrap();
    assert!(
        a.malloc_in(16 * MIB, S, pool).is_err(),
        "a graph's pool never holds a peer's memory"
    );
    assert_eq!(used(&a, 1), 0);
    a.free(full).unwrap();
    a.release_pool(pool).unwrap();
    teardown(a, b, vec![]);
}

#[test]
fn a_failing_peer_leaves_nothing_behind() {
    // Every call a borrow makes fails once, in turn; the allocator stays consistent and holds
    // nothing of the peer's afterwards.
    for call in [
        DriverCall::CreateHandle,
        DriverCall::Map,
        DriverCall::SetAccess,
        DriverCall::ReserveRange,
    ] {
        let (mut a, b) = pair("peer_borrow:on,peer_borrow_limit:64MB,va_arena_size:2MB");
        let full = a.malloc(CAP, S).unwrap();
        let n = a.device().calls().get(call);
        a.device_mut().inject_fault(call, n + 1);
        let r = a.malloc(32 * MIB, S);
        a.check_invariants().unwrap();
        match r {
            Ok(p) => {
                assert!(
                    a.device().accessible(p, 32 * MIB),
                    "{call}: served after a retry"
                );
                a.free(p).unwrap();
            }
            Err(_) => assert_eq!(used(&a, 1), 0, "{call}: nothing of the peer's held"),
        }
        teardown(a, b, vec![full]);
    }
}

#[test]
fn two_devices_borrow_from_each_other_on_two_threads() {
    let devs = SimulatedDevice::peers_of(&[CAP, CAP]);
    let cfg = Config::parse("peer_borrow:on,peer_borrow_limit:16MB").unwrap();
    let handles: Vec<_> = devs
        .into_iter()
        .map(|d| {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let mut a = Allocator::new(d, cfg).unwrap();
                let mut live = Vec::new();
                for i in 0..200u64 {
                    match a.malloc((i % 7 + 1) * 2 * MIB, S) {
                        Ok(p) => live.push(p),
                        Err(_) => {
                            let p = live.remove(0);
                            a.free(p).unwrap();
                        }
                    }
                    a.check_invariants().unwrap();
                }
                for p in live {
                    a.free(p).unwrap();
                }
                assert_eq!(a.release_all().unwrap(), 0);
                a.device().fabric().unwrap().clone()
            })
        })
        .collect();
    let fabrics: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!((fabrics[0].used(0), fabrics[0].used(1)), (0, 0));
}

#[derive(Clone, Debug)]
enum Op {
    Alloc { dev: usize, size: u64 },
    Free { dev: usize, pick: usize },
    EmptyCache { dev: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![1u64..MIB, MIB..(24 * MIB)];
    prop_oneof![
        8 => (0usize..2, size).prop_map(|(dev, size)| Op::Alloc { dev, size }),
        6 => (0usize..2, any::<usize>()).prop_map(|(dev, pick)| Op::Free { dev, pick }),
        1 => (0usize..2).prop_map(|dev| Op::EmptyCache { dev }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Both devices borrow from each other at random: after every step both allocators are
    /// consistent, every live allocation is accessible to its device, and each device's memory
    /// holds exactly its own reserved bytes plus what the other borrowed from it.
    #[test]
    fn books_of_two_borrowing_devices_agree(ops in proptest::collection::vec(op(), 1..120)) {
        let cfg = Config::parse("peer_borrow:on,peer_borrow_limit:24MB").unwrap();
        let mut allocs: Vec<Allocator<SimulatedDevice>> = SimulatedDevice::peers_of(&[CAP, CAP])
            .into_iter()
            .map(|d| Allocator::new(d, cfg.clone()).unwrap())
            .collect();
        let mut live: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for op in ops {
            match op {
                Op::Alloc { dev, size } => {
                    if let Ok(p) = allocs[dev].malloc(size, S) {
                        live[dev].push((p, size));
                    }
                }
                Op::Free { dev, pick } => {
                    if !live[dev].is_empty() {
                        let (p, _) = live[dev].swap_remove(pick % live[dev].len());
                        allocs[dev].free(p).unwrap();
                    }
                }
                Op::EmptyCache { dev } => allocs[dev].empty_cache().unwrap(),
            }
            for d in 0..2 {
                allocs[d].check_invariants().map_err(TestCaseError::fail)?;
                for &(p, size) in &live[d] {
                    prop_assert!(allocs[d].device().accessible(p, size));
                }
                let own = allocs[d].stats().reserved_bytes.all.current - allocs[d].stats().borrowed_bytes.current;
                let lent = allocs[1 - d].stats().borrowed_from(d as u32);
                prop_assert_eq!(used(&allocs[0], d as u32), own as u64 + lent);
                prop_assert!(allocs[d].stats().borrowed_from(1 - d as u32) <= 24 * MIB);
            }
        }
        for (d, a) in allocs.iter_mut().enumerate() {
            for &(p, _) in &live[d] {
                a.free(p).unwrap();
            }
            prop_assert_eq!(a.release_all().unwrap(), 0);
        }
        prop_assert_eq!((used(&allocs[0], 0), used(&allocs[0], 1)), (0, 0));
    }
}
