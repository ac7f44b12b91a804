use gmlake_core::replay::Replayer;
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{BlockStateInfo, Config, PoolKind};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let cfg = Config::parse(&std::env::args().nth(2).unwrap_or_default()).unwrap();
    let ev = gmlake_trace::read_trace(std::path::Path::new(&path), None).unwrap();
    let mut r = Replayer::new(SimulatedDevice::h200(), cfg).unwrap();
    let mut peak = 0;
    let mut lines = Vec::new();
    for e in &ev {
        let before = r.allocator().stats_ref().reserved_bytes.all.current;
        let snap_before = r.allocator().snapshot();
        r.step(e);
        let s = r.allocator().stats_ref();
        if s.reserved_bytes.all.current > before && s.reserved_bytes.all.current > peak {
            peak = s.reserved_bytes.all.current;
            // Free memory before this growth: in whole free chunks vs inside partly used chunks.
            let (mut whole, mut partial, mut nwhole) = (0u64, 0u64, 0);
            for seg in snap_before
                .segments
                .iter()
                .filter(|s| s.pool == PoolKind::Large)
            {
                for b in seg
                    .blocks
                    .iter()
                    .filter(|b| b.state == BlockStateInfo::Inactive)
                {
                    let mut w = 0;
                    for c in seg.chunks.iter().filter(|c| !c.released) {
                        let cs = seg.address + c.offset;
                        if cs >= b.address && cs + c.size <= b.address + b.size {
                            w += c.size;
                            nwhole += 1;
                        }
                    }
                    whole += w;
                    partial += b.size - w;
                }
            }
            let m = |x: u64| x as f64 / 1048576.0;
            lines.push(format!("grew to {:.0} MiB for {:?} {:.1} MiB: free whole chunks {:.0} MiB ({nwhole}), free in partial chunks {:.0} MiB, live {:.0}",
                m(peak as u64), e.action, m(e.size), m(whole), m(partial), m(s.requested_bytes.all.current as u64)));
        }
    }
    for l in lines.iter().rev().take(12).rev() {
        println!("{l}");
    }
}
