//! Small requests (at most `small_size`) and the large pool's free memory: before the small pool
//! grows, a small request takes a free large-pool block, even one whose use breaks a whole
//! physical chunk, since a growth adds to reserved memory for certain.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, StreamHandle};

mod support;
use support::{teardown, MIB};
const S: StreamHandle = StreamHandle(0);

#[test]
fn a_small_request_uses_free_large_memory_before_the_small_pool_grows() {
    let mut a = Allocator::new(SimulatedDevice::new(1 << 40), Config::default()).unwrap();
    // A 64 MiB segment of whole chunks (32 MiB handles by default), all free.
    let big = a.malloc(64 * MIB, S).unwrap();
    a.free(big).unwrap();
    let before = a.stats();
    assert_eq!(before.reserved_bytes.all.current, 64 * MIB as i64);

    let p = a.malloc(512 * 1024, S).unwrap();
    a.check_invariants().unwrap();
    let after = a.stats();
    assert_eq!(
        after.reserved_bytes.all.current, before.reserved_bytes.all.current,
        "no growth while free large-pool memory can serve the request"
    );
    assert_eq!(
        after.segment.small_pool.current, 0,
        "the small pool did not grow"
    );
    assert_eq!(after.allocation.all.current, 1);

    // Once the large pool's free memory is taken (the rest of its granule, then the other
    // 62 MiB), the small pool grows by one granule.
    let tail = a.malloc(1536 * 1024, S).unwrap();
    let rest = a.malloc(62 * MIB, S).unwrap();
    assert_eq!(a.stats().reserved_bytes.all.current, 64 * MIB as i64);
    let q = a.malloc(512 * 1024, S).unwrap();
    a.check_invariants().unwrap();
    assert_eq!(a.stats().segment.small_pool.current, 1);
    assert_eq!(a.stats().reserved_bytes.all.current, 66 * MIB as i64);
    teardown(a, vec![p, tail, rest, q]);
}
