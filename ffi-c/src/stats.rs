//! Statistics for C callers: a struct with the main figures, and every statistic as JSON with
//! PyTorch's flattened keys (`allocated_bytes.all.current`, ...) plus gmlake's own.

use gmlake_core::{Stat, Stats};

/// The main statistics of an allocator. Bytes are bytes; counts are counts. See
/// `gmlake_stats_json` for all of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct gmlake_stats {
    /// Bytes handed out to live allocations (rounded to 512), now and at peak.
    pub allocated_bytes: u64,
    /// Peak of `allocated_bytes`.
    pub peak_allocated_bytes: u64,
    /// Physical bytes held from the device, now.
    pub reserved_bytes: u64,
    /// Peak of `reserved_bytes`.
    pub peak_reserved_bytes: u64,
    /// Bytes of active blocks (live, or freed and waiting for other streams), now.
    pub active_bytes: u64,
    /// Peak of `active_bytes`.
    pub peak_active_bytes: u64,
    /// Bytes callers asked for, of live allocations, now.
    pub requested_bytes: u64,
    /// Peak of `requested_bytes`.
    pub peak_requested_bytes: u64,
    /// Live allocations.
    pub allocations: u64,
    /// Live segments.
    pub segments: u64,
    /// Virtual bytes of live stitched blocks.
    pub stitched_bytes: u64,
    /// Stitches made.
    pub num_stitches: u64,
    /// Allocations served by reusing a cached stitched block.
    pub num_stitch_reuses: u64,
    /// Times an allocation released cached memory and retried.
    pub num_alloc_retries: u64,
    /// Allocations refused for lack of memory.
    pub num_ooms: u64,
    /// `peak_requested_bytes / peak_reserved_bytes` (0 before anything was reserved).
    pub utilization: f64,
}

fn u(s: &Stat, peak: bool) -> u64 {
    (if peak { s.peak } else { s.current }).max(0) as u64
}

impl From<&Stats> for gmlake_stats {
    fn from(s: &Stats) -> Self {
        gmlake_stats {
            allocated_bytes: u(&s.allocated_bytes.all, false),
            peak_allocated_bytes: u(&s.allocated_bytes.all, true),
            reserved_bytes: u(&s.reserved_bytes.all, false),
            peak_reserved_bytes: u(&s.reserved_bytes.all, true),
            active_bytes: u(&s.active_bytes.all, false),
            peak_active_bytes: u(&s.active_bytes.all, true),
            requested_bytes: u(&s.requested_bytes.all, false),
            peak_requested_bytes: u(&s.requested_bytes.all, true),
            allocations: u(&s.allocation.all, false),
            segments: u(&s.segment.all, false),
            stitched_bytes: u(&s.stitched_bytes, false),
            num_stitches: s.num_stitches,
            num_stitch_reuses: s.num_stitch_reuses,
            num_alloc_retries: s.num_alloc_retries,
            num_ooms: s.num_ooms,
            utilization: s.utilization(),
        }
    }
}

/// Every statistic as a flat JSON object: PyTorch's `memory_stats()` keys, then gmlake's;
/// `gmlake.driver_us` (wall time spent inside driver calls, microseconds) where `driver_us` is
/// given.
pub(crate) fn stats_json(s: &Stats, driver_us: Option<f64>) -> String {
    let mut fields: Vec<(String, String)> = Vec::new();
    for (name, array) in s.arrays() {
        for (pool, stat) in array.parts() {
            for (field, v) in [
                ("current", stat.current),
                ("peak", stat.peak),
                ("allocated", stat.allocated as i64),
                ("freed", stat.freed as i64),
            ] {
                fields.push((format!("{name}.{pool}.{field}"), v.to_string()));
            }
        }
    }
    for (name, v) in [
        ("num_alloc_retries", s.num_alloc_retries),
        ("num_ooms", s.num_ooms),
        ("num_device_alloc", s.num_device_alloc),
        ("num_device_free", s.num_device_free),
        ("num_sync_all_streams", s.num_sync_all_streams),
        ("gmlake.num_stitches", s.num_stitches),
        ("gmlake.num_stitch_reuses", s.num_stitch_reuses),
        ("gmlake.num_stitch_gc", s.num_stitch_gc),
        ("gmlake.num_cross_stream_reuses", s.num_cross_stream_reuses),
    ] {
        fields.push((name.to_string(), v.to_string()));
    }
    for (name, stat) in [
        ("stitched_bytes", &s.stitched_bytes),
        ("stitched_blocks", &s.stitched_blocks),
        ("stitch_mappings", &s.stitch_mappings),
    ] {
        for (field, v) in [
            ("current", stat.current),
            ("peak", stat.peak),
            ("allocated", stat.allocated as i64),
            ("freed", stat.freed as i64),
        ] {
            fields.push((format!("gmlake.{name}.{field}"), v.to_string()));
        }
    }
    for (call, n) in s.driver_calls.iter() {
        fields.push((
            format!("gmlake.driver_calls.{}", call.name()),
            n.to_string(),
        ));
    }
    fields.push((
        "gmlake.utilization".to_string(),
        format!("{}", s.utilization()),
    ));
    if let Some(us) = driver_us.filter(|us| us.is_finite()) {
        fields.push(("gmlake.driver_us".to_string(), format!("{us:.1}")));
    }
    let body: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}
