//! Statistics for C callers: a struct with the main figures, and every statistic as JSON with
//! PyTorch's flattened keys (`allocated_bytes.all.current`, ...) plus gmlake's own.

use gmlake_core::{Stat, Stats};
use serde_json::{Map, Value};

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
    let mut m = Map::new();
    let mut put = |prefix: String, stat: &Stat| {
        for (field, v) in stat.fields() {
            m.insert(format!("{prefix}.{field}"), v.into());
        }
    };
    for (name, array) in s.arrays() {
        for (pool, stat) in array.parts() {
            put(format!("{name}.{pool}"), stat);
        }
    }
    for (name, stat) in s.stitch_stats() {
        put(format!("gmlake.{name}"), stat);
    }
    for (name, v) in s.counters() {
        m.insert(name.to_string(), v.into());
    }
    for (call, n) in s.driver_calls.iter() {
        m.insert(format!("gmlake.driver_calls.{}", call.name()), n.into());
    }
    m.insert("gmlake.utilization".to_string(), s.utilization().into());
    if let Some(us) = driver_us.filter(|us| us.is_finite()) {
        m.insert("gmlake.driver_us".to_string(), us.into());
    }
    Value::Object(m).to_string()
}
