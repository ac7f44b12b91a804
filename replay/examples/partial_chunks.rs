use gmlake_core::replay::Replayer;
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{BlockStateInfo, Config, PoolKind};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let cfg = Config::parse(&std::env::args().nth(2).unwrap_or_default()).unwrap();
    let ev = gmlake_trace::read_trace(std::path::Path::new(&path), None).unwrap();
    let mut r = Replayer::new(SimulatedDevice::h200(), cfg).unwrap();
    let mut peak = 0;
    let mut last = None;
    for e in &ev {
        let before = r.allocator().snapshot();
        r.step(e);
        let cur = r.allocator().stats_ref().reserved_bytes.all.current;
        if cur > peak {
            peak = cur;
            last = Some((before, *e));
        }
    }
    let (snap, e) = last.unwrap();
    println!("last growth for {:?} {} MiB", e.action, e.size >> 20);
    for seg in snap.segments.iter().filter(|s| s.pool == PoolKind::Large) {
        for c in seg.chunks.iter().filter(|c| !c.released) {
            let (cs, ce) = (seg.address + c.offset, seg.address + c.offset + c.size);
            let mut free = 0;
            let mut used = Vec::new();
            for b in &seg.blocks {
                let (s, t) = (b.address.max(cs), (b.address + b.size).min(ce));
                if s >= t {
                    continue;
                }
                match b.state {
                    BlockStateInfo::Inactive => free += t - s,
                    BlockStateInfo::Released => {}
                    st => used.push((t - s, b.size, st)),
                }
            }
            if free > 0 && !used.is_empty() {
                let u: Vec<String> = used
                    .iter()
                    .map(|(x, full, st)| {
                        format!(
                            "{:.1}/{:.1}MiB {}",
                            *x as f64 / 1048576.0,
                            *full as f64 / 1048576.0,
                            match st {
                                BlockStateInfo::Lent { .. } => "lent",
                                _ => "alloc",
                            }
                        )
                    })
                    .collect();
                println!(
                    "chunk {:>5.0} MiB: free {:>6.1} MiB, used by [{}]",
                    c.size as f64 / 1048576.0,
                    free as f64 / 1048576.0,
                    u.join(", ")
                );
            }
        }
    }
}
