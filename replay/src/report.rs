//! The replay report as JSON rows and as a table.

use gmlake_core::replay::{ReplayReport, TraceEvent};
use gmlake_peers::{Peer, PeerReport};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// One trace's results: the JSON object of `--format json` and a line of the table.
#[derive(Debug)]
pub struct Row {
    /// The trace's file name, without its folder: the row's name in the table and in the JSON
    /// (`trace`).
    pub trace: String,
    /// For a snapshot: the device whose trace was replayed.
    pub device: Option<usize>,
    /// The configuration string replayed with.
    pub config: String,
    /// What the replay through gmlake measured (the simulated device's figures, leaks
    /// included).
    pub report: ReplayReport,
    /// Wall time of the replay loop per allocation or free, nanoseconds (host CPU, simulated
    /// device).
    pub replay_ns_per_op: f64,
    /// PyTorch's allocators (the models of `gmlake-peers`) on the same trace and capacity, native
    /// first.
    pub peers: Vec<PeerRow>,
    /// With `--fit`: the smallest capacity at which gmlake runs the trace with no out-of-memory,
    /// in bytes.
    pub fit_capacity_bytes: Option<u64>,
    /// With `--fit`: gmlake's estimated driver time replaying the trace at that capacity, in
    /// microseconds (what working harder under pressure costs).
    pub fit_driver_us: Option<f64>,
    /// With `--passes N`: each pass of the trace replayed N times on one allocator.
    pub passes: Vec<crate::passes::PassRow>,
    /// With a plot asked for: the bytes over the trace (dropped once drawn).
    pub series: Option<Series>,
}

/// One of PyTorch's allocators on a trace.
#[derive(Debug)]
pub struct PeerRow {
    /// Which.
    pub peer: Peer,
    /// What its model reserved.
    pub report: PeerReport,
    /// With `--fit`: the smallest capacity at which it runs the trace with no out-of-memory.
    pub fit_capacity_bytes: Option<u64>,
}

/// Bytes over a trace, at most [`crate::SERIES_POINTS`] points a curve, `(event index, bytes)`:
/// live bytes, and what each allocator reserved.
#[derive(Debug, Default)]
pub struct Series {
    /// Bytes of live allocations.
    pub live: Vec<(u64, u64)>,
    /// `(name, curve)`: gmlake, then each peer.
    pub reserved: Vec<(String, Vec<(u64, u64)>)>,
}

impl Series {
    /// The curves of a trace of `events`: live bytes, gmlake's reserved bytes (`gmlake`, one
    /// point per event) and each peer's (a point where it changed), each thinned to
    /// [`crate::SERIES_POINTS`] points that keep every stretch's highest value.
    pub fn new(events: &[TraceEvent], gmlake: Vec<(u64, u64)>, peers: &[PeerRow]) -> Series {
        let n = events.len() as u64;
        let mut reserved = vec![("gmlake".to_string(), thin(gmlake, n))];
        for p in peers {
            let steps = step_curve(&p.report.reserved_series, n);
            reserved.push((p.peer.name().to_string(), thin(steps, n)));
        }
        Series {
            live: thin(crate::live_bytes(events).collect(), n),
            reserved,
        }
    }
}

/// A curve given at the events where it changed, as one point per event. O(events).
fn step_curve(changes: &[(u64, u64)], n: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(n as usize);
    let (mut at, mut now) = (0, 0);
    for i in 0..n {
        while at < changes.len() && changes[at].0 <= i {
            now = changes[at].1;
            at += 1;
        }
        out.push((i, now));
    }
    out
}

/// The highest value of each of [`crate::SERIES_POINTS`] equal stretches of `0..n` events.
fn thin(points: Vec<(u64, u64)>, n: u64) -> Vec<(u64, u64)> {
    let buckets = crate::SERIES_POINTS as u64;
    if n <= buckets {
        return points;
    }
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(crate::SERIES_POINTS);
    for (i, v) in points {
        let b = i * buckets / n;
        let x = b * n / buckets;
        match out.last_mut() {
            Some(last) if last.0 == x => last.1 = last.1.max(v),
            _ => out.push((x, v)),
        }
    }
    out
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
            device: None,
            config: config.to_string(),
            report,
            replay_ns_per_op,
            peers: Vec::new(),
            fit_capacity_bytes: None,
            fit_driver_us: None,
            passes: Vec::new(),
            series: None,
        }
    }

    /// The peer `peer`'s row, if it was replayed.
    pub fn peer(&self, peer: Peer) -> Option<&PeerRow> {
        self.peers.iter().find(|p| p.peer == peer)
    }
}

impl Serialize for PeerRow {
    /// `peak_reserved_bytes`, `utilization` (peak live bytes of the trace over it, filled in by
    /// the row), `ooms`, and `fit_capacity_bytes` where found.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("peak_reserved_bytes", &self.report.peak_reserved_bytes)?;
        m.serialize_entry("ooms", &self.report.ooms)?;
        if let Some(f) = self.fit_capacity_bytes {
            m.serialize_entry("fit_capacity_bytes", &f)?;
        }
        m.end()
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
        if let Some(d) = self.device {
            m.serialize_entry("device", &d)?;
        }
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
        if let Some(f) = self.fit_capacity_bytes {
            m.serialize_entry("fit_capacity_bytes", &f)?;
        }
        if let Some(us) = self.fit_driver_us {
            m.serialize_entry("fit_estimated_driver_us", &us)?;
        }
        let peers: BTreeMap<&str, Value> = self
            .peers
            .iter()
            .map(|p| {
                let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
                v["utilization"] = ratio(r.peak_active_bytes, p.report.peak_reserved_bytes).into();
                (p.peer.name(), v)
            })
            .collect();
        m.serialize_entry("peers", &peers)?;
        if !self.passes.is_empty() {
            m.serialize_entry("passes", &self.passes)?;
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

/// `num / den`, 0 where `den` is 0.
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// A fixed-width table, one line per trace: gmlake's peak reserved bytes and utilization beside
/// PyTorch's native allocator and its expandable segments (their models), out-of-memory counts
/// (gmlake/native/expandable), with `--fit` the capacity each needs (and gmlake's driver time
/// there), and gmlake's stitches,
/// driver time and leaks.
pub fn table(rows: &[Row]) -> String {
    let fit = rows.iter().any(|r| r.fit_capacity_bytes.is_some());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<24} {:>9} {:>8} {:>9} {:>7} {:>9} {:>7} {:>9} {:>7} {:>8}",
        "trace",
        "allocs",
        "live GB",
        "gmlake GB",
        "util",
        "native GB",
        "util",
        "expand GB",
        "util",
        "ooms"
    );
    if fit {
        let _ = write!(
            out,
            " {:>9} {:>9} {:>9} {:>8}",
            "fit gml", "fit nat", "fit exp", "fit ms"
        );
    }
    let _ = writeln!(
        out,
        " {:>8} {:>10} {:>10} {:>6} {:>11}",
        "stitches", "driver ms", "native ms", "ns/op", "leaks h/r/m"
    );
    for r in rows {
        let peer = |p| {
            r.peer(p).map_or((0, 0, None), |p| {
                (
                    p.report.peak_reserved_bytes,
                    p.report.ooms,
                    p.fit_capacity_bytes,
                )
            })
        };
        let (nat, nat_ooms, nat_fit) = peer(Peer::Native);
        let (exp, exp_ooms, exp_fit) = peer(Peer::Expandable);
        let live = r.report.peak_active_bytes;
        // A snapshot says which device's trace it was.
        let name = r
            .device
            .map_or(r.trace.clone(), |d| format!("{} (device {d})", r.trace));
        let _ = write!(
            out,
            "{:<24} {:>9} {:>8.2} {:>9.2} {:>7.4} {:>9.2} {:>7.4} {:>9.2} {:>7.4} {:>8}",
            name,
            r.report.allocs,
            gb(live),
            gb(r.report.peak_reserved_bytes),
            r.report.utilization,
            gb(nat),
            ratio(live, nat),
            gb(exp),
            ratio(live, exp),
            format!("{}/{}/{}", r.report.ooms, nat_ooms, exp_ooms),
        );
        if fit {
            let f = |v: Option<u64>| v.map_or("-".to_string(), |b| format!("{:.2}", gb(b)));
            let ms = r
                .fit_driver_us
                .map_or("-".to_string(), |us| format!("{:.1}", us / 1e3));
            let _ = write!(
                out,
                " {:>9} {:>9} {:>9} {:>8}",
                f(r.fit_capacity_bytes),
                f(nat_fit),
                f(exp_fit),
                ms
            );
        }
        let _ = writeln!(
            out,
            " {:>8} {:>10.1} {:>10.1} {:>6.0} {:>5}/{}/{}",
            r.report.num_stitches,
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

/// With `--passes N`: a line per pass of each trace replayed N times on one allocator; empty
/// without.
pub fn passes_table(rows: &[Row]) -> String {
    let mut out = String::new();
    if rows.iter().all(|r| r.passes.is_empty()) {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:>5} {:>9} {:>8} {:>10} {:>8} {:>5}",
        "trace", "pass", "stitches", "handles", "driver ms", "peak GB", "ooms"
    );
    for r in rows {
        for p in &r.passes {
            let _ = writeln!(
                out,
                "{:<24} {:>5} {:>9} {:>8} {:>10.1} {:>8.2} {:>5}",
                r.trace,
                p.pass,
                p.new_stitches,
                p.handles_created,
                p.driver_us / 1e3,
                gb(p.peak_reserved_bytes),
                p.ooms
            );
        }
    }
    out
}
