//! How many physical handles a growth creates: a sixteenth of the request per handle below
//! `large_request_size` (2 GiB), a quarter from there up, always between `min_handle_size` and
//! `max_handle_size` (`docs/design.md`, "Handle size" and "Very large growths").

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, DriverCall, StreamHandle};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The handles created and their sizes (bytes) for one request of `bytes` on an empty allocator
/// configured by `config`.
fn growth(config: &str, bytes: u64) -> (u64, u64) {
    let mut a = Allocator::new(
        SimulatedDevice::new(1 << 40),
        Config::parse(config).unwrap(),
    )
    .unwrap();
    let p = a.malloc(bytes, StreamHandle(0)).unwrap();
    let created = a.stats().driver_calls.get(DriverCall::CreateHandle);
    let held = a.device().books().unwrap().handle_bytes;
    a.free(p).unwrap();
    (created, held)
}

#[test]
fn requests_below_two_gib_grow_in_sixteenths() {
    assert_eq!(growth("", GIB), (16, GIB));
    // Just under the threshold: fifteen handles of 128 MiB and one of the 126 MiB left.
    assert_eq!(growth("", 2 * GIB - 2 * MIB), (16, 2 * GIB - 2 * MIB));
    // A sixteenth under `min_handle_size` (32 MiB) is raised to it.
    assert_eq!(growth("", 256 * MIB), (8, 256 * MIB));
}

#[test]
fn requests_from_two_gib_grow_in_quarters_capped_at_max_handle_size() {
    assert_eq!(growth("", 2 * GIB), (4, 2 * GIB));
    assert_eq!(growth("", 3 * GIB), (4, 3 * GIB));
    // A quarter of 7 GiB is above the 1 GiB cap: seven handles of 1 GiB.
    assert_eq!(growth("", 7 * GIB), (7, 7 * GIB));
}

#[test]
fn the_threshold_and_the_divisions_are_configurable() {
    assert_eq!(growth("large_handle_divisions:16", 3 * GIB), (16, 3 * GIB));
    assert_eq!(growth("large_request_size:1GB", GIB), (4, GIB));
    assert_eq!(growth("large_request_size:8GB", 3 * GIB), (16, 3 * GIB));
}
