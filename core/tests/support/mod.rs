//! Setups shared by the core's integration tests.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Device, StreamHandle};

pub const MIB: u64 = 1 << 20;

/// Eight separate 8 MiB segments, every other one freed: four free 8 MiB chunks that no single
/// block can serve a 24 MiB request from; the device is then full, so only a stitch can. The
/// allocator must make 8 MiB handles at most (`max_handle_size:8MB`) and not split chunks.
pub fn fragmented(a: &mut Allocator<SimulatedDevice>, live: &mut Vec<u64>) {
    let ps: Vec<u64> = (0..8)
        .map(|_| a.malloc(8 * MIB, StreamHandle(0)).unwrap())
        .collect();
    for (i, p) in ps.into_iter().enumerate() {
        if i % 2 == 0 {
            a.free(p).unwrap();
        } else {
            live.push(p);
        }
    }
    let held = a.device().books().unwrap().handle_bytes;
    a.device_mut().set_capacity(held);
}
