//! Where free memory sits as reserved memory grows to its peak: before each growth to a new peak,
//! how much is free in whole physical chunks (stitchable) and how much inside chunks that also hold
//! live blocks (not stitchable); then, before the last such growth, every partly used chunk with its
//! free bytes and its users.
//!
//! `cargo run --release -p gmlake-replay --example peak_breakdown -- TRACE [CONFIG]`
use gmlake_core::replay::Replayer;
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{BlockStateInfo, Config, PoolKind, Snapshot};

fn mib(x: u64) -> f64 {
    x as f64 / 1048576.0
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: peak_breakdown TRACE [CONFIG]");
    let cfg = Config::parse(&std::env::args().nth(2).unwrap_or_default()).unwrap();
    let ev = gmlake_trace::read_trace(std::path::Path::new(&path), None).unwrap();
    let mut r = Replayer::new(SimulatedDevice::h200(), cfg).unwrap();
    let mut peak = 0;
    let mut lines = Vec::new();
    let mut last = None;
    for e in &ev {
        let before = r.allocator().snapshot();
        r.step(e);
        let s = r.allocator().stats_ref();
        let cur = s.reserved_bytes.all.current;
        if cur > peak {
            peak = cur;
            let (whole, partial, nwhole) = free_split(&before);
            lines.push(format!(
                "grew to {:.0} MiB for {:?} {:.1} MiB: free whole chunks {:.0} MiB ({nwhole}), free in partial chunks {:.0} MiB, live {:.0}",
                mib(peak as u64), e.action, mib(e.size), mib(whole), mib(partial),
                mib(s.requested_bytes.all.current as u64)
            ));
            last = Some((before, *e));
        }
    }
    for l in lines.iter().rev().take(12).rev() {
        println!("{l}");
    }
    let (snap, e) = last.expect("the trace reserved nothing");
    println!(
        "partly used chunks before the last growth ({:?} {} MiB):",
        e.action,
        e.size >> 20
    );
    partial_chunks(&snap);
}

/// Free large-pool bytes in whole free chunks, free bytes in partly used chunks, and the number of
/// whole free chunks.
fn free_split(snap: &Snapshot) -> (u64, u64, u64) {
    let (mut whole, mut partial, mut nwhole) = (0, 0, 0);
    for seg in snap.segments.iter().filter(|s| s.pool == PoolKind::Large) {
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
    (whole, partial, nwhole)
}

/// Prints every large-pool chunk that is partly free and partly used, with its users.
fn partial_chunks(snap: &Snapshot) {
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
                    BlockStateInfo::Lent { .. } => {
                        used.push(format!("{:.1}/{:.1}MiB lent", mib(t - s), mib(b.size)))
                    }
                    _ => used.push(format!("{:.1}/{:.1}MiB alloc", mib(t - s), mib(b.size))),
                }
            }
            if free > 0 && !used.is_empty() {
                println!(
                    "chunk {:>5.0} MiB: free {:>6.1} MiB, used by [{}]",
                    mib(c.size),
                    mib(free),
                    used.join(", ")
                );
            }
        }
    }
}
