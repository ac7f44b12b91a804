//! The replay report as JSON rows and as a table.

use gmlake_core::replay::ReplayReport;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// One trace's results: the JSON object of `--format json` and a line of the table.
#[derive(Debug)]
pub struct Row {
    /// The trace's file name.
    pub trace: String,
    /// The configuration string replayed with.
    pub config: String,
    /// What the replay measured.
    pub report: ReplayReport,
    /// Wall time of the replay loop per allocation or free, nanoseconds (host CPU, simulated
    /// device).
    pub replay_ns_per_op: f64,
}

impl Row {
    /// The row of a replay of `trace` with `config` that took `elapsed` over its operations.
    pub fn new(trace: String, report: ReplayReport, elapsed: Duration, config: &str) -> Row {
        let replay_ns_per_op = if report.ops == 0 {
            0.0
        } else {
            elapsed.as_nanos() as f64 / report.ops as f64
        };
        Row {
            trace,
            config: config.to_string(),
            report,
            replay_ns_per_op,
        }
    }
}

impl Serialize for Row {
    /// The JSON object of a row: the trace and configuration, every figure of the report (bytes,
    /// counts, microseconds, as named in `ReplayReport`), `driver_calls` by kind,
    /// `replay_ns_per_op`, and `segments_created` (small pool, large pool).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = &self.report;
        let calls: BTreeMap<&str, u64> =
            r.driver_calls.iter().map(|(c, n)| (c.name(), n)).collect();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("trace", &self.trace)?;
        m.serialize_entry("config", &self.config)?;
        let figures: [(&str, Value); 23] = [
            ("events", r.events.into()),
            ("allocs", r.allocs.into()),
            ("frees", r.frees.into()),
            ("unmatched_frees", r.unmatched_frees.into()),
            ("duplicate_allocs", r.duplicate_allocs.into()),
            ("peak_active_bytes", r.peak_active_bytes.into()),
            ("peak_reserved_bytes", r.peak_reserved_bytes.into()),
            ("utilization", r.utilization.into()),
            (
                "native_peak_reserved_bytes",
                r.native_peak_reserved_bytes.into(),
            ),
            ("native_utilization", r.native_utilization.into()),
            ("native_segment_allocs", r.native_segment_allocs.into()),
            (
                "native_estimated_driver_us",
                r.native_estimated_driver_us.into(),
            ),
            ("ooms", r.ooms.into()),
            ("num_stitches", r.num_stitches.into()),
            ("num_stitch_reuses", r.num_stitch_reuses.into()),
            ("num_stitch_gc", r.num_stitch_gc.into()),
            ("estimated_driver_us", r.estimated_driver_us.into()),
            ("teardown_driver_us", r.teardown_driver_us.into()),
            ("replay_ns_per_op", self.replay_ns_per_op.into()),
            ("end_handles", r.end_handles.into()),
            ("end_ranges", r.end_ranges.into()),
            ("end_mappings", r.end_mappings.into()),
            ("end_events", r.end_events.into()),
        ];
        for (key, v) in &figures {
            m.serialize_entry(key, v)?;
        }
        m.serialize_entry("driver_calls", &calls)?;
        let segments = &r.stats.segment;
        m.serialize_entry(
            "segments_created",
            &[segments.small_pool.allocated, segments.large_pool.allocated],
        )?;
        m.end()
    }
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

/// A fixed-width table, one line per trace, gmlake's figures beside PyTorch's.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>9} {:>10} {:>12} {:>8} {:>12} {:>8} {:>5} {:>8} {:>7} {:>11} {:>11} {:>7} {:>9}",
        "trace",
        "allocs",
        "peak GB",
        "gmlake GB",
        "util",
        "native GB",
        "native",
        "ooms",
        "stitches",
        "reuses",
        "driver ms",
        "native ms",
        "ns/op",
        "leaks h/r/m"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>10.2} {:>12.2} {:>8.4} {:>12.2} {:>8.4} {:>5} {:>8} {:>7} {:>11.1} {:>11.1} {:>7.0} {:>3}/{}/{}",
            r.trace,
            r.report.allocs,
            gb(r.report.peak_active_bytes),
            gb(r.report.peak_reserved_bytes),
            r.report.utilization,
            gb(r.report.native_peak_reserved_bytes),
            r.report.native_utilization,
            r.report.ooms,
            r.report.num_stitches,
            r.report.num_stitch_reuses,
            r.report.estimated_driver_us / 1e3,
            r.report.native_estimated_driver_us / 1e3,
            r.replay_ns_per_op,
            r.report.end_handles,
            r.report.end_ranges,
            r.report.end_mappings
        );
    }
    out
}
