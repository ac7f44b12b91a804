//! The simulated device refuses what the CUDA driver refuses, charges the H200 cost model, loses
//! access at unmap, and fails injected calls without effect.

use gmlake_core::sim::{CostTable, SimHoldings, SimulatedDevice};
use gmlake_core::{Device, DeviceErrorKind, DriverCall, StreamHandle};

const MIB: u64 = 1 << 20;
const G: u64 = 2 * MIB;

/// A device with two handles of one granule mapped back to back at the start of a range of
/// `range` bytes; returns it, the range and the first handle.
fn two_mappings(range: u64) -> (SimulatedDevice, u64, gmlake_core::PhysHandle) {
    let mut d = SimulatedDevice::new(8 * G);
    let a = d.create_handle(G).unwrap();
    let b = d.create_handle(G).unwrap();
    let va = d.reserve_range(range).unwrap();
    d.map(va, G, a, 0).unwrap();
    d.map(va + G, G, b, 0).unwrap();
    (d, va, a)
}

#[test]
fn refuses_impossible_calls() {
    let mut d = SimulatedDevice::new(8 * G);
    let h = d.create_handle(2 * G).unwrap();
    assert_eq!(
        d.create_handle(G + 1).unwrap_err().kind,
        DeviceErrorKind::InvalidValue
    );
    assert_eq!(
        d.create_handle(7 * G).unwrap_err().kind,
        DeviceErrorKind::OutOfMemory
    );
    let va = d.reserve_range(4 * G).unwrap();
    d.map(va, 2 * G, h, 0).unwrap();
    // Mapping over a mapping, past the handle, outside a range.
    assert!(d.map(va + G, G, h, 0).is_err());
    assert!(d.map(va + 2 * G, 2 * G, h, G).is_err());
    // Only whole handles map, as with the CUDA driver.
    assert_eq!(
        d.map(va + 2 * G, G, h, 0).unwrap_err().kind,
        DeviceErrorKind::NotSupported
    );
    assert!(d.map(va + 8 * G, G, h, 0).is_err());
    // Releasing a mapped handle, freeing a range with mappings, partial unmap.
    assert!(d.release_handle(h).is_err());
    assert!(d.free_range(va, 4 * G).is_err());
    assert!(d.unmap(va, G).is_err());
    d.set_access(va, 2 * G).unwrap();
    assert!(d.set_access(va, 3 * G).is_err());
    d.unmap(va, 2 * G).unwrap();
    d.release_handle(h).unwrap();
    d.free_range(va, 4 * G).unwrap();
    assert_eq!(d.holdings(), SimHoldings::default());
}

#[test]
fn one_unmap_may_cover_several_mappings_and_costs_per_handle() {
    let (mut d, va, _) = two_mappings(2 * G);
    let before = d.estimated_us();
    d.unmap(va, 2 * G).unwrap();
    let per_handle = d.costs().unmap_per_handle.at(G);
    assert!((d.estimated_us() - before - 2.0 * per_handle).abs() < 1e-9);
    assert_eq!(d.holdings().mappings, 0);
}

#[test]
fn access_is_granted_per_mapping_and_lost_at_unmap() {
    let (mut d, va, a) = two_mappings(4 * G);
    assert!(!d.accessible(va, 1));
    d.set_access(va + G, G).unwrap();
    assert!(d.accessible(va + G, G));
    assert!(
        !d.accessible(va, 2 * G),
        "the first mapping has no access yet"
    );
    d.set_access(va, G).unwrap();
    assert!(d.accessible(va + 100, 2 * G - 100));
    assert!(!d.accessible(va + G, 2 * G), "past the mappings");
    let sa = d.estimated_us_of(DriverCall::SetAccess);
    assert!((sa - 2.0 * d.costs().set_access_per_handle.at(G)).abs() < 1e-9);
    d.unmap(va, 2 * G).unwrap();
    d.map(va, G, a, 0).unwrap();
    assert!(!d.accessible(va, G), "a new mapping starts without access");
}

#[test]
fn injected_faults_fail_once_and_change_nothing() {
    let mut d = SimulatedDevice::new(8 * G);
    d.inject_fault(DriverCall::CreateHandle, 2);
    d.create_handle(G).unwrap();
    assert_eq!(d.create_handle(G).unwrap_err().kind, DeviceErrorKind::Other);
    assert_eq!(d.holdings().handles, 1);
    d.create_handle(G).unwrap();
    assert_eq!(d.calls().get(DriverCall::CreateHandle), 3);
}

#[test]
fn events_complete_after_latency_or_sync() {
    let mut d = SimulatedDevice::new(G);
    d.set_event_latency(2);
    let e = d.create_event().unwrap();
    d.record_event(e, StreamHandle(7)).unwrap();
    assert!(!d.query_event(e).unwrap());
    d.synchronize_device().unwrap();
    assert!(d.query_event(e).unwrap());
}

#[test]
fn size_curves_interpolate_in_log_size() {
    let c = CostTable::default();
    assert!((c.native_malloc.at(2 * MIB) - 48.3).abs() < 1e-9);
    assert!((c.native_malloc.at(1 << 30) - 98.9).abs() < 1e-9);
    let mid = c.native_malloc.at(1536 * MIB);
    assert!(mid > 98.9 && mid < 147.1);
    // Above the last point, along the last slope.
    assert!(c.native_malloc.at(14 << 30) > 278.1);
    assert!((c.native_malloc.at(4096) - 48.3).abs() < 1e-9);
}
