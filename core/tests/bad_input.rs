//! Bad input gets a clear error and changes nothing.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, Error, StreamHandle, MAX_REQUEST};

const MIB: u64 = 1 << 20;
const S: StreamHandle = StreamHandle(0);

fn allocator(capacity: u64) -> Allocator<SimulatedDevice> {
    Allocator::new(SimulatedDevice::new(capacity), Config::default()).unwrap()
}

fn untouched(a: &Allocator<SimulatedDevice>) {
    let b = a.device().books().unwrap();
    assert_eq!((b.handles, b.ranges, b.mappings), (0, 0, 0));
    assert_eq!(a.stats().reserved_bytes.all.current, 0);
    a.check_invariants().unwrap();
}

#[test]
fn zero_and_absurd_sizes_are_refused_before_any_device_call() {
    let mut a = allocator(64 * MIB);
    assert_eq!(a.malloc(0, S), Err(Error::ZeroSize));
    assert_eq!(
        a.malloc(MAX_REQUEST + 1, S),
        Err(Error::TooLarge {
            size: MAX_REQUEST + 1,
            max: MAX_REQUEST
        })
    );
    assert!(matches!(a.malloc(u64::MAX, S), Err(Error::TooLarge { .. })));
    assert_eq!(a.device().calls().total(), 0);
    untouched(&a);
}

#[test]
fn unknown_double_and_interior_frees_are_errors() {
    let mut a = allocator(64 * MIB);
    assert_eq!(a.free(0), Err(Error::NotAllocated { addr: 0 }));
    assert_eq!(
        a.free(0xdead_beef),
        Err(Error::NotAllocated { addr: 0xdead_beef })
    );
    let p = a.malloc(3 * MIB, S).unwrap();
    let q = a.malloc(1000, S).unwrap();
    assert_eq!(a.free(p + 512), Err(Error::NotAllocated { addr: p + 512 }));
    a.free(p).unwrap();
    assert_eq!(a.free(p), Err(Error::NotAllocated { addr: p }));
    assert_eq!(
        a.record_stream(p, StreamHandle(9)),
        Err(Error::NotAllocated { addr: p })
    );
    assert_eq!(a.allocation_size(q), Some(1000));
    assert_eq!(a.stats().allocation.all.current, 1);
    a.check_invariants().unwrap();
    a.free(q).unwrap();
    a.empty_cache().unwrap();
    untouched(&a);
    assert!(Error::NotAllocated { addr: 16 }
        .to_string()
        .contains("double free"));
}

#[test]
fn out_of_memory_reports_sizes_and_recovers_after_frees() {
    let mut a = allocator(64 * MIB);
    let err = a.malloc(100 * MIB, S).unwrap_err();
    let Error::OutOfMemory(info) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        (info.requested, info.device_total, info.device_free),
        (100 * MIB, 64 * MIB, Some(64 * MIB))
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("CUDA out of memory. Tried to allocate 100.00 MiB"),
        "{msg}"
    );
    assert_eq!(a.stats().num_ooms, 1);
    // Fill the device, fail, free, and allocate again.
    let mut live = Vec::new();
    loop {
        match a.malloc(5 * MIB, S) {
            Ok(p) => live.push(p),
            Err(Error::OutOfMemory(i)) => {
                assert!(i.reserved + 5 * MIB > 64 * MIB - 4 * MIB, "{i:?}");
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        live.len() >= 11,
        "only {} x 5 MiB fit in 64 MiB",
        live.len()
    );
    for p in live.drain(..) {
        a.free(p).unwrap();
    }
    let big = a.malloc(60 * MIB, S).unwrap();
    a.free(big).unwrap();
    a.check_invariants().unwrap();
}

#[test]
fn memory_fraction_limits_reserved_memory() {
    let mut a = allocator(64 * MIB);
    for bad in [0.0, -1.0, 1.5, f64::NAN] {
        assert!(
            matches!(a.set_memory_fraction(bad), Err(Error::InvalidArgument(_))),
            "{bad}"
        );
    }
    a.set_memory_fraction(0.5).unwrap();
    assert_eq!(a.reserved_limit(), Some(32 * MIB));
    let err = a.malloc(40 * MIB, S).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(i) if i.limit == Some(32 * MIB)));
    let p = a.malloc(20 * MIB, S).unwrap();
    assert!(a.malloc(20 * MIB, S).is_err());
    a.free(p).unwrap();
    untouched_after_empty(&mut a);
}

fn untouched_after_empty(a: &mut Allocator<SimulatedDevice>) {
    a.empty_cache().unwrap();
    assert_eq!(a.stats().reserved_bytes.all.current, 0);
}

#[test]
fn bad_configuration_is_refused() {
    let cfg = Config {
        reuse_limit: 0.5,
        ..Config::default()
    };
    assert!(matches!(
        Allocator::new(SimulatedDevice::new(MIB), cfg),
        Err(Error::Config(_))
    ));
    let e = Config::parse("fragLimit:1,bogus:2").unwrap_err();
    assert!(e.to_string().contains("unknown key `bogus`") && e.to_string().contains("frag_limit"));
}

#[test]
fn teardown_refuses_nothing_but_reports_live_allocations_freed() {
    let mut a = allocator(64 * MIB);
    let _p = a.malloc(MIB, S).unwrap();
    assert_eq!(a.live_allocations(), 1);
    assert_eq!(a.release_all().unwrap(), 0);
    assert_eq!(a.live_allocations(), 0);
    untouched(&a);
}
