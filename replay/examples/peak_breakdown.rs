use gmlake_core::replay::Replayer;
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::Config;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let cfg = Config::parse(&std::env::args().nth(2).unwrap_or_default()).unwrap();
    let ev = gmlake_trace::read_trace(std::path::Path::new(&path), None).unwrap();
    let mut r = Replayer::new(SimulatedDevice::new(150_754_820_096), cfg).unwrap();
    let mut peak = 0;
    let mut line = String::new();
    for e in &ev {
        r.step(e);
        let s = r.allocator().stats_ref();
        if s.reserved_bytes.all.current > peak {
            peak = s.reserved_bytes.all.current;
            let m = |x: i64| x as f64 / 1048576.0;
            line = format!("reserved {:.0}MiB small res {:.0} alloc {:.0} req {:.0} | large res {:.0} alloc {:.0} req {:.0} | inactive_split large {:.0} n {} | stitched {} live reqall {:.0}",
                m(s.reserved_bytes.all.current), m(s.reserved_bytes.small_pool.current), m(s.allocated_bytes.small_pool.current), m(s.requested_bytes.small_pool.current),
                m(s.reserved_bytes.large_pool.current), m(s.allocated_bytes.large_pool.current), m(s.requested_bytes.large_pool.current),
                m(s.inactive_split_bytes.large_pool.current), s.inactive_split.large_pool.current, s.stitched_blocks.current, m(s.requested_bytes.all.current));
        }
    }
    println!("{line}");
    let s = r.allocator().stats_ref();
    println!(
        "peak requested {:.0}MiB",
        s.requested_bytes.all.peak as f64 / 1048576.0
    );
}
