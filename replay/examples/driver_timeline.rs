//! Prints every allocation that cost driver time: event index, request size, what it did.
use gmlake_core::replay::{TraceAction, TraceEvent};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, DriverCall, StreamHandle};
use std::collections::HashMap;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let cfg = Config::parse(&std::env::args().nth(2).unwrap_or_default()).unwrap();
    let ev: Vec<TraceEvent> = gmlake_trace::read_trace(std::path::Path::new(&path), None).unwrap();
    let mut a = Allocator::new(SimulatedDevice::h200(), cfg).unwrap();
    let mut live: HashMap<u64, u64> = HashMap::new();
    let mut live_bytes = 0u64;
    // GMLAKE_PIECES=1: also print the sizes of the pieces of every new stitched block.
    let show_pieces = std::env::var_os("GMLAKE_PIECES").is_some();
    for (i, e) in ev.iter().enumerate() {
        let s0 = a.stats();
        let us0 = a.device().estimated_us();
        match e.action {
            TraceAction::Alloc => {
                let p = a.malloc(e.size, StreamHandle(e.stream)).unwrap();
                if show_pieces && a.stats().num_stitches > s0.num_stitches {
                    print_pieces(&a, p);
                }
                live.insert(e.addr, p);
                live_bytes += e.size;
            }
            TraceAction::FreeRequested => {
                if let Some(p) = live.remove(&e.addr) {
                    live_bytes -= a.allocation_size(p).unwrap_or(0).min(live_bytes);
                    a.free(p).unwrap();
                }
            }
            _ => continue,
        }
        let s = a.stats();
        let d = |c: DriverCall| s.driver_calls.get(c) - s0.driver_calls.get(c);
        let us = a.device().estimated_us() - us0;
        if us > 0.0 {
            println!(
                "{i:7} {:>6} {:>10.1}MB cost {:7.0}us creates {:3} maps {:3} unmaps {:3} stitch {} split {} reserved {:.2}GB live {:.2}GB",
                if e.action == TraceAction::Alloc { "alloc" } else { "free" },
                e.size as f64 / 1048576.0,
                us,
                d(DriverCall::CreateHandle),
                d(DriverCall::Map),
                d(DriverCall::Unmap),
                s.num_stitches - s0.num_stitches,
                s.num_chunk_splits - s0.num_chunk_splits,
                s.reserved_bytes.all.current as f64 / 1e9,
                live_bytes as f64 / 1e9,
            );
        }
    }
    let d = a.device();
    let total = d.estimated_us();
    println!("driver time by call kind, before teardown ({total:.0} us in all):");
    for c in DriverCall::ALL {
        let us = d.estimated_us_of(c);
        if us > 0.0 {
            println!(
                "  {:<20} {:>6} calls {:>9.0} us {:>5.1}%",
                c.name(),
                d.calls().get(c),
                us,
                100.0 * us / total
            );
        }
    }
}

/// Prints the piece sizes (MiB) of the stitched block at `addr`, largest first, with counts.
fn print_pieces(a: &Allocator<SimulatedDevice>, addr: u64) {
    let snap = a.snapshot();
    let Some(st) = snap.stitched.iter().find(|s| s.address == addr) else {
        return;
    };
    let mut sizes: std::collections::BTreeMap<u64, usize> = Default::default();
    for p in &st.pieces {
        *sizes.entry(p.size >> 20).or_default() += 1;
    }
    let list: Vec<String> = sizes
        .iter()
        .rev()
        .map(|(mb, n)| format!("{n}x{mb}"))
        .collect();
    println!("         pieces (MiB): {}", list.join(" "));
}
