//! The native model against PyTorch itself: replaying each trace of the repository, the model's
//! peak reserved bytes are within 1% of what PyTorch reserved when the trace was recorded (the
//! peak of its `segment_alloc`/`segment_free` events); the expandable-segments model reserves
//! exactly what PyTorch reserved with `expandable_segments:True` on the same workloads (the H200
//! measurements of `traces/README.md` and `traces/held-out/expandable_results.json`).

use gmlake_core::replay::{TraceAction, TraceEvent};
use gmlake_peers::{replay, Peer};
use std::path::PathBuf;

const CAPACITY: u64 = 150_754_820_096;

fn traces() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces");
    let mut v = Vec::new();
    for dir in [root.clone(), root.join("held-out")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with(".txt.gz") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// PyTorch's own peak reserved bytes: the peak of the running sum of its segment events.
fn recorded_peak(events: &[TraceEvent]) -> u64 {
    let (mut now, mut peak) = (0i128, 0i128);
    for e in events {
        match e.action {
            TraceAction::SegmentAlloc | TraceAction::SegmentMap => now += e.size as i128,
            TraceAction::SegmentFree | TraceAction::SegmentUnmap => now -= e.size as i128,
            _ => {}
        }
        peak = peak.max(now);
    }
    peak as u64
}

#[test]
fn the_native_model_reserves_what_pytorch_reserved_within_one_percent() {
    let mut worst = 0.0f64;
    for path in traces() {
        let events = gmlake_trace::read_trace(&path, None).unwrap();
        let want = recorded_peak(&events);
        let got = replay(Peer::Native, &events, CAPACITY);
        let err = (got.peak_reserved_bytes as f64 - want as f64).abs() / want as f64;
        println!(
            "{:<28} recorded {:>15} model {:>15} error {:.4}%",
            path.file_name().unwrap().to_string_lossy(),
            want,
            got.peak_reserved_bytes,
            err * 100.0
        );
        assert_eq!(got.ooms, 0);
        worst = worst.max(err);
    }
    assert!(worst <= 0.01, "worst error {:.4}%", worst * 100.0);
}

#[test]
fn the_expandable_model_reserves_what_pytorch_reserved_on_the_three_traces() {
    // reserved_bytes.all.peak of the same workloads run with expandable_segments:True
    // (traces/native_results.json).
    let measured = [
        ("gpt2_train", 30_092_034_048u64),
        ("opt13_lora", 33_118_224_384),
        ("llama_generate", 2_508_193_792),
    ];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces");
    for (name, want) in measured {
        expandable_model_reserves(&root.join(format!("{name}.txt.gz")), name, want);
    }
}

/// Replays `path` through the expandable-segments model and asserts its peak reserved bytes are
/// `want`, what PyTorch reserved with `expandable_segments:True` on that workload.
fn expandable_model_reserves(path: &std::path::Path, name: &str, want: u64) {
    let events = gmlake_trace::read_trace(path, None).unwrap();
    let got = replay(Peer::Expandable, &events, CAPACITY);
    println!(
        "{name:<28} measured {want:>15} model {:>15}",
        got.peak_reserved_bytes
    );
    assert_eq!(got.ooms, 0);
    assert_eq!(got.peak_reserved_bytes, want, "{name}");
}

#[test]
fn the_expandable_model_reserves_what_pytorch_reserved_on_every_held_out_workload() {
    // reserved_bytes.all.peak of each held-out workload run again with expandable_segments:True
    // on the H200 (`scripts/record_traces.py --expandable`).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces/held-out");
    let text = std::fs::read_to_string(dir.join("expandable_results.json")).unwrap();
    let measured: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for path in traces().into_iter().filter(|p| p.starts_with(&dir)) {
        let name = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".txt.gz", "");
        let want = measured[&name]["reserved_bytes.all.peak"].as_u64().unwrap();
        expandable_model_reserves(&path, &name, want);
        checked += 1;
    }
    assert_eq!(checked, measured.len(), "a recorded workload has no trace");
}
