use gmlake_core::replay::{TraceAction, TraceEvent};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, StreamHandle};
use std::collections::HashMap;
fn pass(a: &mut Allocator<SimulatedDevice>, ev: &[TraceEvent]) {
    let mut live: HashMap<u64, u64> = HashMap::new();
    for e in ev {
        match e.action {
            TraceAction::Alloc => {
                let p = a.malloc(e.size, StreamHandle(e.stream)).unwrap();
                live.insert(e.addr, p);
            }
            TraceAction::FreeRequested => {
                if let Some(p) = live.remove(&e.addr) {
                    a.free(p).unwrap();
                }
            }
            _ => {}
        }
    }
    for (_, p) in live {
        a.free(p).unwrap();
    }
}
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let cfg = Config::parse(&std::env::args().nth(2).unwrap_or_default()).unwrap();
    let ev = gmlake_trace::read_trace(std::path::Path::new(&path), None).unwrap();
    let mut a = Allocator::new(SimulatedDevice::new(150_754_820_096), cfg).unwrap();
    for i in 0..3 {
        let before = a.stats();
        let us0 = a.device().estimated_us();
        pass(&mut a, &ev);
        let s = a.stats();
        let d = |c: gmlake_core::DriverCall| s.driver_calls.get(c) - before.driver_calls.get(c);
        use gmlake_core::DriverCall::*;
        println!("pass {i}: peak reserved {:.2} GB, creates {}, maps {}, unmaps {}, releases {}, stitches {}, reuses {}, splits {}, gc {}, est driver {:.1} ms",
            s.reserved_bytes.all.peak as f64/1e9, d(CreateHandle), d(Map), d(Unmap), d(ReleaseHandle), s.num_stitches - before.num_stitches, s.num_stitch_reuses - before.num_stitch_reuses, s.num_chunk_splits - before.num_chunk_splits, s.num_stitch_gc - before.num_stitch_gc, (a.device().estimated_us() - us0)/1e3);
    }
}
