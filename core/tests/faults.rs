//! Fault injection: every kind of driver call fails at its first, middle, last and many other
//! points of a workload that grows, stitches, reuses and garbage-collects stitched blocks, records
//! events on several streams and empties the cache. After every step the allocator must be
//! consistent; the failed request must leave nothing behind; later requests must be served; and the
//! teardown must leave no handle, range, mapping or event on the device.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, DriverCall, DriverCallCounts, Error, StreamHandle};

const MIB: u64 = 1 << 20;

/// A fixed pseudo-random workload (64-bit LCG), the same every run.
fn workload(a: &mut Allocator<SimulatedDevice>, check: bool) -> (u64, u64) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    let mut live: Vec<u64> = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for step in 0..600 {
        let r = next() % 100;
        if r < 46 || live.is_empty() {
            let size = match next() % 3 {
                0 => 1 + next() % 8192,
                1 => MIB + next() % (3 * MIB),
                _ => 4 * MIB + next() % (20 * MIB),
            };
            match a.malloc(size, StreamHandle(next() % 2)) {
                Ok(p) => {
                    ok += 1;
                    live.push(p);
                }
                Err(Error::OutOfMemory(_)) | Err(Error::Device(_)) => failed += 1,
                Err(e) => panic!("step {step}: unexpected {e}"),
            }
        } else if r < 90 {
            let i = (next() as usize) % live.len();
            a.free(live.swap_remove(i)).unwrap();
        } else if r < 95 {
            let i = (next() as usize) % live.len();
            a.record_stream(live[i], StreamHandle(next() % 2)).unwrap();
        } else {
            let _ = a.empty_cache();
        }
        if check {
            if let Err(e) = a.check_invariants() {
                panic!("step {step}: {e}");
            }
        }
    }
    (ok, failed)
}

fn allocator() -> Allocator<SimulatedDevice> {
    let mut dev = SimulatedDevice::new(192 * MIB);
    dev.set_event_latency(1);
    let cfg = Config::parse(
        "frag_limit:0,max_handle_size:8MB,min_growth:2MB,max_stitch_mappings:12,stitched_bytes_limit:96MB",
    )
    .unwrap();
    Allocator::new(dev, cfg).unwrap()
}

fn clean_run_calls() -> (DriverCallCounts, u64) {
    let mut a = allocator();
    let (ok, _) = workload(&mut a, true);
    assert_eq!(a.release_all().unwrap(), 0);
    (a.device().calls(), ok)
}

#[test]
fn every_call_kind_fails_at_many_points_without_leaks() {
    let (calls, clean_ok) = clean_run_calls();
    let mut tried = 0;
    for kind in DriverCall::ALL {
        let total = calls.get(kind);
        if total == 0 {
            continue;
        }
        let mut points: Vec<u64> = vec![1, 2, total / 2, total.saturating_sub(1), total];
        points.extend((1..=8).map(|i| i * total / 9));
        points.retain(|&n| n >= 1);
        points.sort_unstable();
        points.dedup();
        for n in points {
            tried += 1;
            let mut a = allocator();
            a.device_mut().inject_fault(kind, n);
            let (ok, _) = workload(&mut a, true);
            // The run goes on serving: after one refused call the state may differ (and so may
            // which later requests fit), but nearly all requests are still served.
            assert!(
                ok * 100 >= clean_ok * 95,
                "{kind}:{n}: {ok} served, {clean_ok} without the fault"
            );
            let held = a
                .release_all()
                .unwrap_or_else(|e| panic!("{kind}:{n}: teardown failed: {e}"));
            assert_eq!(held, 0, "{kind}:{n}: allocator still holds device objects");
            let b = a.device().books().unwrap();
            assert_eq!(
                (b.handles, b.ranges, b.mappings, b.events),
                (0, 0, 0, 0),
                "{kind}:{n}: leaked"
            );
        }
    }
    println!("fault points tried: {tried}; calls in the clean run: {calls:?}");
    // All 13 kinds occur in this workload.
    assert!(
        calls.iter().filter(|(_, n)| *n > 0).count() >= 12,
        "{calls:?}"
    );
    assert!(tried > 100, "only {tried} fault points");
}

#[test]
fn a_failed_growth_changes_nothing_and_the_next_request_is_served() {
    for kind in [
        DriverCall::CreateHandle,
        DriverCall::ReserveRange,
        DriverCall::Map,
        DriverCall::SetAccess,
    ] {
        let mut a = allocator();
        a.device_mut().inject_fault(kind, 1);
        let before = a.device().books().unwrap();
        let err = a.malloc(10 * MIB, StreamHandle(0)).unwrap_err();
        assert!(
            matches!(err, Error::Device(ref e) if e.call == kind),
            "{kind}: {err}"
        );
        let after = a.device().books().unwrap();
        assert_eq!(
            (after.handles, after.mappings),
            (before.handles, before.mappings),
            "{kind}"
        );
        assert_eq!(a.stats().reserved_bytes.all.current, 0);
        a.check_invariants().unwrap();
        let p = a.malloc(10 * MIB, StreamHandle(0)).unwrap();
        a.free(p).unwrap();
    }
}

#[test]
fn a_failed_stitch_rolls_back_and_falls_back_to_new_memory() {
    let mut a = allocator();
    // Two free 8 MiB blocks separated by a live one: a 12 MiB request must stitch.
    let x = a.malloc(8 * MIB, StreamHandle(0)).unwrap();
    let y = a.malloc(8 * MIB, StreamHandle(0)).unwrap();
    let z = a.malloc(8 * MIB, StreamHandle(0)).unwrap();
    a.free(x).unwrap();
    a.free(z).unwrap();
    let maps = a.device().calls().get(DriverCall::Map);
    // Fail the second mapping of the stitch: the first must be undone.
    a.device_mut().inject_fault(DriverCall::Map, maps + 2);
    let before = a.stats();
    let p = a.malloc(12 * MIB, StreamHandle(0)).unwrap();
    a.check_invariants().unwrap();
    let st = a.stats();
    assert_eq!(
        st.num_stitches, before.num_stitches,
        "the stitch failed, so none counted"
    );
    assert!(
        st.reserved_bytes.all.current > before.reserved_bytes.all.current,
        "served from new memory"
    );
    assert_eq!(st.stitched_blocks.current, 0);
    for q in [p, y] {
        a.free(q).unwrap();
    }
    assert_eq!(a.release_all().unwrap(), 0);
}
