//! The `gmlake-replay` command: JSON fields, fault injection, and errors that name the file.

use std::process::Command;

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gmlake-replay"))
        .args(args)
        .output()
        .unwrap()
}

fn trace(name: &str) -> String {
    format!("{}/../traces/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn json_has_the_documented_fields() {
    let out = replay(&[
        "--format",
        "json",
        "--inject-fault",
        "map:2",
        &trace("gpt2_train.txt.gz"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &rows[0];
    for field in [
        "trace",
        "events",
        "allocs",
        "unmatched_frees",
        "peak_active_bytes",
        "peak_reserved_bytes",
        "utilization",
        "native_peak_reserved_bytes",
        "native_utilization",
        "ooms",
        "num_stitches",
        "driver_calls",
        "estimated_driver_us",
        "replay_ns_per_op",
        "end_handles",
        "end_ranges",
        "end_mappings",
    ] {
        assert!(!r[field].is_null(), "missing {field}");
    }
    assert_eq!(r["trace"], "gpt2_train.txt.gz");
    assert_eq!(r["events"], 39_891);
    assert!(r["driver_calls"]["map"].as_u64().unwrap() > 0);
    assert_eq!(
        (
            r["end_handles"].as_u64(),
            r["end_ranges"].as_u64(),
            r["end_mappings"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert!(r["utilization"].as_f64().unwrap() > r["native_utilization"].as_f64().unwrap());
}

#[test]
fn table_lists_each_trace() {
    let out = replay(&[&trace("gpt2_train.txt.gz"), &trace("opt13_lora.txt.gz")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("opt13_lora.txt.gz"));
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("gmlake-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "alloc 1 2 0\nfree 1\n").unwrap();
    let out = replay(&[bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.txt:2: expected `action addr size stream`"),
        "{err}"
    );
    for args in [
        &["--config", "frag_limit:x", "t"][..],
        &["--inject-fault", "teleport:1", "t"],
        &["--inject-fault", "map:0", "t"],
    ] {
        let out = replay(args);
        assert!(!out.status.success(), "{args:?}");
    }
    let out = replay(&["--config", "bogus:1", bad.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid keys"));
    std::fs::remove_dir_all(&dir).unwrap();
}
