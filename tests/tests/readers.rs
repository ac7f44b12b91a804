//! Trace readers: PyTorch snapshot pickles (plain and gzip) and malformed input.

use gmlake_core::replay::TraceAction;
use serde_pickle::{HashableValue, Value};
use std::collections::BTreeMap;
use std::io::Write;

fn entry(action: &str, addr: i64, size: i64) -> Value {
    let mut d = BTreeMap::new();
    d.insert(
        HashableValue::String("action".into()),
        Value::String(action.into()),
    );
    d.insert(HashableValue::String("addr".into()), Value::I64(addr));
    d.insert(HashableValue::String("size".into()), Value::I64(size));
    d.insert(HashableValue::String("stream".into()), Value::I64(0));
    d.insert(HashableValue::String("frames".into()), Value::List(vec![]));
    Value::Dict(d)
}

fn snapshot_bytes() -> Vec<u8> {
    let traces = Value::List(vec![
        Value::List(vec![]),
        Value::List(vec![
            entry("segment_alloc", 1 << 40, 2 << 20),
            entry("alloc", 1 << 40, 1000),
            entry("free_requested", 1 << 40, 1000),
            entry("free_completed", 1 << 40, 1000),
            entry("annotate", 0, 0),
        ]),
    ]);
    let mut top = BTreeMap::new();
    top.insert(
        HashableValue::String("segments".into()),
        Value::List(vec![]),
    );
    top.insert(HashableValue::String("device_traces".into()), traces);
    serde_pickle::value_to_vec(&Value::Dict(top), serde_pickle::SerOptions::new()).unwrap()
}

/// Snapshots dumped by `torch.cuda.memory._dump_snapshot` with torch 2.11 on the H200
/// (`scripts/torch_features.py`, the history row), under PyTorch's allocator and under gmlake's C++
/// route: both read, with every allocation and free of the script, although their stack frames
/// share objects that serde-pickle cannot follow.
#[test]
fn reads_snapshots_of_torch_2_11_under_both_allocators() {
    read_torch_dump("native", TraceAction::SegmentAlloc);
    read_torch_dump("gmlake", TraceAction::SegmentMap);
}

/// Reads `data/torch-2.11-snapshot-{name}.pickle`: the script's five allocations and one free, and
/// segments made with `segment` (`segment_alloc` natively, `segment_map` under gmlake).
fn read_torch_dump(name: &str, segment: TraceAction) {
    use TraceAction::{Alloc, FreeCompleted};
    const MIB: u64 = 1 << 20;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("data/torch-2.11-snapshot-{name}.pickle"));
    let ev = gmlake_trace::read_trace(&path, None).unwrap();
    let got: Vec<(TraceAction, u64)> = ev
        .iter()
        .filter(|e| matches!(e.action, Alloc | FreeCompleted))
        .map(|e| (e.action, e.size / MIB))
        .collect();
    let want = [(Alloc, 1), (Alloc, 7), (Alloc, 33), (Alloc, 65), (Alloc, 7)];
    assert_eq!(got[..5], want, "{name}");
    assert_eq!(got[5..], [(FreeCompleted, 33)], "{name}");
    assert!(ev.iter().any(|e| e.action == segment), "{name}");
}

#[test]
fn reads_snapshot_pickles_plain_and_gzipped() {
    let dir = std::env::temp_dir().join(format!("gmlake-readers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("snap.pickle");
    std::fs::write(&plain, snapshot_bytes()).unwrap();
    let gz = dir.join("snap.pickle.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&snapshot_bytes()).unwrap();
    enc.finish().unwrap();
    for path in [&plain, &gz] {
        // The first device with events is device 1; unknown actions are skipped.
        let ev = gmlake_trace::read_trace(path, None).unwrap();
        let actions: Vec<_> = ev.iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [
                TraceAction::SegmentAlloc,
                TraceAction::Alloc,
                TraceAction::FreeRequested,
                TraceAction::FreeCompleted
            ]
        );
        assert_eq!((ev[1].addr, ev[1].size), (1 << 40, 1000));
        assert!(gmlake_trace::read_trace(path, Some(0)).unwrap().is_empty());
        let e = gmlake_trace::read_trace(path, Some(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no trace for device 5"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_files_name_the_file() {
    let dir = std::env::temp_dir().join(format!("gmlake-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.txt");
    std::fs::write(
        &bad,
        "# action addr size stream\nalloc 1 2 0\nalloc 1 two 0\n",
    )
    .unwrap();
    let e = gmlake_trace::read_trace(&bad, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("bad.txt:3: size `two` is not a non-negative integer"),
        "{e}"
    );
    let not_snapshot = dir.join("list.pickle");
    std::fs::write(
        &not_snapshot,
        serde_pickle::value_to_vec(&Value::List(vec![]), Default::default()).unwrap(),
    )
    .unwrap();
    let e = gmlake_trace::read_trace(&not_snapshot, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a PyTorch memory snapshot"), "{e}");
    let missing = gmlake_trace::read_trace(&dir.join("nope.txt"), None)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.txt"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}
