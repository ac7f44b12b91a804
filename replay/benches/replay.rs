//! The core's own cost per allocation or free: replays of the repository's traces through gmlake on
//! the simulated device, each operation timed on its own; the median, p90 and mean in nanoseconds
//! are printed per trace. Run with `cargo bench -p gmlake-replay --bench replay`.
//!
//! Each trace is replayed `RUNS` times, the traces in turn, and the replay with the lowest median
//! is reported: the one least disturbed by other work on the machine. (With three replays of one
//! trace after the other, a shared 2-core machine gave gpt2_train medians of 200 to 330 ns from
//! one process to the next; with ten interleaved rounds, 200-201 ns in eight processes.)
//!
//! Divan measures the whole replay (its median over samples, divided by the operation count, is
//! the mean cost per operation); the per-operation median comes from timing each call.

use gmlake_core::replay::{TraceAction, TraceEvent};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, StreamHandle};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

const TRACES: [&str; 3] = ["gpt2_train", "opt13_lora", "llama_generate"];
/// Timed replays of each trace; the one with the lowest median is reported.
const RUNS: usize = 10;

/// The trace `name` from `$GMLAKE_TRACES` if set (a prebuilt bench run elsewhere, as by
/// scripts/gpu-check.sh), else from the repository's `traces/`.
fn load(name: &str) -> Vec<TraceEvent> {
    let dir = std::env::var_os("GMLAKE_TRACES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces"),
        std::path::PathBuf::from,
    );
    let path = dir.join(format!("{name}.txt.gz"));
    gmlake_trace::read_trace(&path, None).expect("trace")
}

/// The trace as a flat list of allocator operations: (alloc size or 0 for a free, slot).
fn ops(events: &[TraceEvent]) -> Vec<(u64, u64, usize)> {
    let mut slots: HashMap<u64, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut next = 0;
    for e in events {
        match e.action {
            TraceAction::Alloc => {
                let slot = *slots.entry(e.addr).or_insert_with(|| {
                    next += 1;
                    next - 1
                });
                out.push((e.size, e.stream, slot));
            }
            TraceAction::FreeRequested => {
                if let Some(slot) = slots.remove(&e.addr) {
                    out.push((0, e.stream, slot));
                }
            }
            _ => {}
        }
    }
    out
}

fn run(ops: &[(u64, u64, usize)], mut times: Option<&mut Vec<u32>>) {
    let slots = ops.iter().map(|o| o.2).max().map_or(0, |m| m + 1);
    let mut live = vec![0u64; slots];
    let mut a = Allocator::new(SimulatedDevice::h200(), Config::default()).unwrap();
    for &(size, stream, slot) in ops {
        let t = times.as_ref().map(|_| Instant::now());
        if size > 0 {
            live[slot] = a.malloc(size, StreamHandle(stream)).unwrap();
        } else {
            a.free(live[slot]).unwrap();
        }
        if let (Some(t), Some(v)) = (t, times.as_mut()) {
            v.push(t.elapsed().as_nanos() as u32);
        }
    }
    divan::black_box(&a);
}

#[divan::bench(args = TRACES, sample_count = 10, sample_size = 1)]
fn replay_trace(bencher: divan::Bencher, name: &str) {
    let ops = ops(&load(name));
    bencher
        .counter(divan::counter::ItemsCount::new(ops.len()))
        .bench_local(|| run(&ops, None));
}

/// Median nanoseconds of timing nothing (`Instant::now` then `elapsed`), which every
/// per-operation figure includes.
fn timer_overhead_ns() -> u32 {
    let mut t: Vec<u32> = (0..100_000)
        .map(|_| {
            let s = Instant::now();
            divan::black_box(());
            s.elapsed().as_nanos() as u32
        })
        .collect();
    t.sort_unstable();
    t[t.len() / 2]
}

fn main() {
    let overhead = timer_overhead_ns();
    println!(
        "per-operation cost (each malloc/free timed alone; timing nothing takes {overhead} ns, \
         included in the first three columns and taken off the last):"
    );
    println!(
        "{:<16} {:>9} {:>10} {:>10} {:>10} {:>11}",
        "trace", "ops", "median ns", "p90 ns", "mean ns", "net median"
    );
    // Rounds interleave the traces so that a slow spell of a shared machine hits every trace a
    // little rather than one trace's every run; each trace keeps its run of lowest median.
    let all: Vec<Vec<(u64, u64, usize)>> = TRACES.iter().map(|n| ops(&load(n))).collect();
    let mut best: Vec<Option<Vec<u32>>> = vec![None; TRACES.len()];
    for _ in 0..RUNS {
        for (ops, best) in all.iter().zip(best.iter_mut()) {
            let mut t = Vec::with_capacity(ops.len());
            run(ops, Some(&mut t));
            t.sort_unstable();
            if best
                .as_ref()
                .is_none_or(|b| t[t.len() / 2] < b[b.len() / 2])
            {
                *best = Some(t);
            }
        }
    }
    for (name, t) in TRACES.iter().zip(best) {
        let t = t.unwrap_or_default();
        let mean = t.iter().map(|&x| x as f64).sum::<f64>() / t.len().max(1) as f64;
        println!(
            "{:<16} {:>9} {:>10} {:>10} {:>10.0} {:>11}",
            name,
            t.len(),
            t[t.len() / 2],
            t[t.len() * 9 / 10],
            mean,
            t[t.len() / 2].saturating_sub(overhead)
        );
    }
    divan::main();
}
