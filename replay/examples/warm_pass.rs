//! Replays a trace three times on one allocator and prints what each pass cost: a warm pass (the
//! second and third) should need no driver calls. With `GMLAKE_WHY=1`, every allocation of a warm
//! pass that made a new stitch is printed with the cached stitched blocks large enough to serve it
//! and how many bytes of their chunks other blocks were using at that moment, and every free that
//! cost driver time.
use gmlake_core::replay::{TraceAction, TraceEvent};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, BlockStateInfo, Config, StreamHandle};
use std::collections::HashMap;

fn pass(a: &mut Allocator<SimulatedDevice>, ev: &[TraceEvent], why: bool) {
    let mut live: HashMap<u64, u64> = HashMap::new();
    for (i, e) in ev.iter().enumerate() {
        match e.action {
            TraceAction::Alloc => {
                let snap = why.then(|| a.snapshot());
                let n0 = a.stats_ref().num_stitches;
                let (us0, calls0) = (a.device().estimated_us(), a.device().calls());
                let p = a.malloc(e.size, StreamHandle(e.stream)).unwrap();
                let us = a.device().estimated_us() - us0;
                if why && us > 0.0 {
                    let calls = a.device().calls();
                    let made: Vec<String> = gmlake_core::DriverCall::ALL
                        .iter()
                        .filter(|&&c| calls.get(c) > calls0.get(c))
                        .map(|&c| format!("{} {}", c.name(), calls.get(c) - calls0.get(c)))
                        .collect();
                    println!(
                        "  event {i}: alloc {:.1} MB cost {us:.0} us: {}",
                        e.size as f64 / 1e6,
                        made.join(", ")
                    );
                }
                if let Some(snap) = snap.filter(|_| a.stats_ref().num_stitches > n0) {
                    explain(&snap, i, e.size);
                }
                live.insert(e.addr, p);
            }
            TraceAction::FreeRequested => {
                if let Some(p) = live.remove(&e.addr) {
                    let us0 = a.device().estimated_us();
                    a.free(p).unwrap();
                    let us = a.device().estimated_us() - us0;
                    if why && us > 0.0 {
                        println!("  event {i}: free cost {us:.0} us");
                    }
                }
            }
            _ => {}
        }
    }
    for (_, p) in live {
        a.free(p).unwrap();
    }
}

/// For a request that made a new stitch: the cached stitched blocks that could have served it
/// and, for each, the bytes of its chunks that blocks other than free ones covered.
#[allow(dead_code)]
fn explain(snap: &gmlake_core::Snapshot, i: usize, size: u64) {
    println!("  event {i}: new stitch for {:.1} MB", size as f64 / 1e6);
    for st in snap.stitched.iter().filter(|s| !s.active && s.size >= size) {
        let mut busy = 0u64;
        let mut busy_by: Vec<String> = Vec::new();
        let mut busy_pieces = 0;
        for p in &st.pieces {
            let before = busy_by.len();
            let (seg, c) = snap.chunk_of(p).unwrap();
            let (lo, hi) = (seg.address + c.offset, seg.address + c.offset + c.size);
            for b in &seg.blocks {
                if b.address < hi && b.address + b.size > lo && b.state != BlockStateInfo::Inactive
                {
                    busy += b
                        .address
                        .min(hi)
                        .max(lo)
                        .abs_diff((b.address + b.size).min(hi));
                    busy_by.push(format!("{:.1}MB", b.size as f64 / 1e6));
                }
            }
            busy_pieces += usize::from(busy_by.len() > before);
        }
        println!(
            "    cached stitched block of {:.1} MB, {} pieces ({} taken): {:.1} MB of its chunks in use (blocks {})",
            st.size as f64 / 1e6,
            st.pieces.len(),
            busy_pieces,
            busy as f64 / 1e6,
            busy_by.join(" ")
        );
    }
}

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let cfg = Config::parse(&std::env::args().nth(2).unwrap_or_default()).unwrap();
    let ev = gmlake_trace::read_trace(std::path::Path::new(&path), None).unwrap();
    let why = std::env::var_os("GMLAKE_WHY").is_some();
    let mut a = Allocator::new(SimulatedDevice::h200(), cfg).unwrap();
    let passes: usize = std::env::var("GMLAKE_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for i in 0..passes {
        let before = a.stats();
        let us0 = a.device().estimated_us();
        let t0 = std::time::Instant::now();
        pass(&mut a, &ev, why && i > 0);
        let wall = t0.elapsed();
        let s = a.stats();
        let d = |c: gmlake_core::DriverCall| s.driver_calls.get(c) - before.driver_calls.get(c);
        use gmlake_core::DriverCall::*;
        println!("pass {i}: peak reserved {:.2} GB, creates {}, maps {}, unmaps {}, releases {}, set_access {}, stitches {}, reuses {}, splits {}, gc {}, est driver {:.1} ms, host time {:.1} ms",
            s.reserved_bytes.all.peak as f64/1e9, d(CreateHandle), d(Map), d(Unmap), d(ReleaseHandle), d(SetAccess), s.num_stitches - before.num_stitches, s.num_stitch_reuses - before.num_stitch_reuses, s.num_chunk_splits - before.num_chunk_splits, s.num_stitch_gc - before.num_stitch_gc, (a.device().estimated_us() - us0)/1e3, wall.as_secs_f64() * 1e3);
    }
}
