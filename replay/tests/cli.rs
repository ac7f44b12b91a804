//! The `gmlake-replay` command: JSON fields, fault injection, and errors that name the file.

use std::process::Command;

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gmlake-replay"))
        .args(args)
        .output()
        .unwrap()
}

/// The JSON rows of a successful replay with `args`.
fn json(args: &[&str]) -> serde_json::Value {
    let out = replay(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn trace(name: &str) -> String {
    format!("{}/../traces/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn json_has_the_documented_fields() {
    let rows = json(&[
        "--format",
        "json",
        "--inject-fault",
        "map:2",
        &trace("gpt2_train.txt.gz"),
    ]);
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

/// The peers and `--fit`: PyTorch's native model reserves what PyTorch reserved when the trace
/// was recorded; each allocator's fit capacity lies between the trace's peak live bytes and what
/// it reserves on the whole device, and at that capacity the allocator really runs with no
/// out-of-memory while 2 MiB less does not suffice for it.
#[test]
fn peers_and_fit_capacities() {
    let rows = json(&["--format", "json", "--fit", &trace("gpt2_train.txt.gz")]);
    let r = &rows[0];
    let live = r["peak_active_bytes"].as_u64().unwrap();
    let native = &r["peers"]["pytorch_native"];
    assert_eq!(
        native["peak_reserved_bytes"],
        r["native_peak_reserved_bytes"]
    );
    let mut fits = vec![(
        r["fit_capacity_bytes"].as_u64().unwrap(),
        r["peak_reserved_bytes"].as_u64().unwrap(),
        "",
    )];
    for peer in ["pytorch_native", "pytorch_expandable"] {
        let p = &r["peers"][peer];
        assert_eq!(p["ooms"], 0, "{peer}");
        let util = p["utilization"].as_f64().unwrap();
        let reserved = p["peak_reserved_bytes"].as_u64().unwrap();
        assert!(
            (util - live as f64 / reserved as f64).abs() < 1e-9,
            "{peer}"
        );
        fits.push((p["fit_capacity_bytes"].as_u64().unwrap(), reserved, peer));
    }
    for (fit, reserved, who) in fits {
        assert!(
            live <= fit && fit <= reserved,
            "{who}: live {live}, fit {fit}, reserved {reserved}"
        );
        let ooms = |cap: u64| {
            let cap = cap.to_string();
            let rows = json(&[
                "--format",
                "json",
                "--capacity",
                &cap,
                &trace("gpt2_train.txt.gz"),
            ]);
            let r = &rows[0];
            if who.is_empty() {
                r["ooms"].as_u64().unwrap()
            } else {
                r["peers"][who]["ooms"].as_u64().unwrap()
            }
        };
        assert_eq!(ooms(fit), 0, "{who} at its fit capacity");
        assert!(
            ooms(fit - (2 << 20)) > 0,
            "{who} 2 MiB below its fit capacity"
        );
    }
}

/// `--plot` writes an SVG with one curve per allocator and one for live bytes, each peak given in
/// the legend.
#[test]
fn plot_draws_every_allocator() {
    let dir = std::env::temp_dir().join(format!("gmlake-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("gpt2.svg");
    let out = replay(&["--plot", svg.to_str().unwrap(), &trace("gpt2_train.txt.gz")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "not an SVG");
    for label in [
        "live bytes (peak 29.99 GB)",
        "gmlake reserved (peak",
        "pytorch_native reserved (peak 36.96 GB)",
        "pytorch_expandable reserved (peak",
    ] {
        assert!(text.contains(label), "no curve {label}");
    }
    assert!(
        text.matches("<polyline").count() >= 4,
        "fewer than four curves"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--passes N`: N passes on one allocator; the first makes the stitches a single replay makes,
/// and a training trace settles (no handle created from the third pass on).
#[test]
fn passes_report_each_repetition() {
    let rows = json(&[
        "--format",
        "json",
        "--passes",
        "4",
        &trace("opt13_lora.txt.gz"),
    ]);
    let r = &rows[0];
    let passes = r["passes"].as_array().unwrap();
    assert_eq!(passes.len(), 4);
    assert_eq!(passes[0]["new_stitches"], r["num_stitches"]);
    assert_eq!(passes[0]["peak_reserved_bytes"], r["peak_reserved_bytes"]);
    for p in &passes[2..] {
        assert_eq!(p["handles_created"], 0, "{p}");
        assert_eq!(p["ooms"], 0);
    }
    let table = replay(&["--passes", "2", &trace("gpt2_train.txt.gz")]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text
        .lines()
        .any(|l| l.starts_with("gpt2_train.txt.gz") && l.split_whitespace().nth(1) == Some("2")));
}

/// `--late-events`: gmlake's events complete only at a synchronization. Under pressure (a device
/// of 1.02 x the trace's peak live bytes) cuts then wait for their chunks' last use, so stream
/// synchronizations appear that a replay with events completing at once never makes; the trace
/// still runs with no out-of-memory.
#[test]
fn late_events_model_a_gpu_that_runs_behind() {
    let t = trace("gpt2_train.txt.gz");
    let live = json(&["--format", "json", &t])[0]["peak_active_bytes"]
        .as_u64()
        .unwrap();
    let cap = (live as f64 * 1.02) as u64;
    let cap = cap.to_string();
    let syncs = |late: bool| {
        let mut args = vec!["--format", "json", "--capacity", &cap, &t];
        if late {
            args.insert(0, "--late-events");
        }
        let r = &json(&args)[0];
        assert_eq!(r["ooms"], 0, "late events: {late}");
        r["driver_calls"]["synchronize_stream"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(syncs(false), 0);
    assert!(syncs(true) > 0);
}
