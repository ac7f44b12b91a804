//! Replays a trace on a whole H200 until the live bytes first pass `FRAC` of their peak, then
//! limits reserved memory to `FACTOR` x the peak requested bytes (as a script that calls
//! `torch.cuda.set_per_process_memory_fraction` after loading its model), and reports OOMs.
//!
//! `cargo run --release -p gmlake-replay --example late_cap -- TRACE FACTOR FRAC [CONFIG [LATENCY]]`
//!
//! LATENCY: how many queries each event answers "not complete" before it completes (a GPU that
//! runs behind the CPU, as in a live job; the replay's default is 0).
use gmlake_core::replay::Replayer;
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::Config;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ev = gmlake_trace::read_trace(std::path::Path::new(&args[1]), None).unwrap();
    let factor: f64 = args[2].parse().unwrap();
    let frac: f64 = args[3].parse().unwrap();
    let cfg = Config::parse(args.get(4).map_or("", |s| s.as_str())).unwrap();
    // The peak requested bytes, from a first replay.
    let mut r = Replayer::new(SimulatedDevice::h200(), cfg.clone()).unwrap();
    for e in &ev {
        r.step(e);
    }
    let peak = r.allocator().stats_ref().requested_bytes.all.peak as u64;
    let latency: u32 = args.get(5).map_or(0, |s| s.parse().unwrap());
    let mut dev = SimulatedDevice::h200();
    dev.set_event_latency(latency);
    let mut r = Replayer::new(dev, cfg).unwrap();
    let mut capped_at = None;
    for (i, e) in ev.iter().enumerate() {
        r.step(e);
        let live = r.allocator().stats_ref().requested_bytes.all.current as u64;
        if capped_at.is_none() && live as f64 >= frac * peak as f64 {
            r.allocator_mut()
                .set_reserved_limit(Some((factor * peak as f64) as u64));
            capped_at = Some((i, r.allocator().stats_ref().reserved_bytes.all.current));
        }
    }
    let rep = r.finish().unwrap();
    println!(
        "peak requested {:.3} GB, limit {:.3} GB set at event {:?}; ooms {}, peak reserved {:.3} GB, stream synchronizations {}",
        peak as f64 / 1e9,
        factor * peak as f64 / 1e9,
        capped_at,
        rep.ooms,
        rep.peak_reserved_bytes as f64 / 1e9,
        rep.driver_calls.get(gmlake_core::DriverCall::SynchronizeStream)
    );
}
