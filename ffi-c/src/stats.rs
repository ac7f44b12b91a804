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
    // Borrowed bytes by lending peer, for the peers lending some now.
    for (peer, &b) in s.borrowed_by_peer.iter().enumerate() {
        if b > 0 {
            m.insert(
                format!("gmlake.borrowed_bytes.peer{peer}.current"),
                b.into(),
            );
        }
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

/// One statistic, as PyTorch's `Stat`: its value now, its peak, and the sums of increases and
/// decreases (bytes or counts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct gmlake_stat {
    /// The value now.
    pub current: i64,
    /// The peak since creation or the last reset of peaks.
    pub peak: i64,
    /// Sum of increases since creation or the last reset of accumulated figures.
    pub allocated: i64,
    /// Sum of decreases, likewise.
    pub freed: i64,
}

/// A statistic for both pools and each (PyTorch's `StatArray`: aggregate, small, large).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct gmlake_stat_array {
    /// Both pools.
    pub all: gmlake_stat,
    /// Requests of at most `small_size` bytes.
    pub small_pool: gmlake_stat,
    /// All other requests.
    pub large_pool: gmlake_stat,
}

/// Every statistic of PyTorch's `DeviceStats`, with gmlake's figures, then gmlake's own.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct gmlake_device_stats {
    /// Live allocations.
    pub allocation: gmlake_stat_array,
    /// Segments (virtual ranges of physical chunks).
    pub segment: gmlake_stat_array,
    /// Active blocks (allocated, or freed and waiting for other streams).
    pub active: gmlake_stat_array,
    /// Free blocks that are part of a split segment.
    pub inactive_split: gmlake_stat_array,
    /// Bytes of live allocations, rounded.
    pub allocated_bytes: gmlake_stat_array,
    /// Physical bytes held.
    pub reserved_bytes: gmlake_stat_array,
    /// Bytes of active blocks.
    pub active_bytes: gmlake_stat_array,
    /// Bytes of free blocks that are part of a split segment.
    pub inactive_split_bytes: gmlake_stat_array,
    /// Bytes callers asked for.
    pub requested_bytes: gmlake_stat_array,
    /// Times an allocation released cached memory and retried.
    pub num_alloc_retries: i64,
    /// Allocations refused for lack of memory.
    pub num_ooms: i64,
    /// Device synchronizations.
    pub num_sync_all_streams: i64,
    /// Physical memory creations and mappings.
    pub num_device_alloc: i64,
    /// Unmappings and releases.
    pub num_device_free: i64,
    /// Stitches made (gmlake).
    pub num_stitches: i64,
    /// Allocations served by a cached stitched block (gmlake).
    pub num_stitch_reuses: i64,
    /// Virtual bytes of stitched blocks (gmlake).
    pub stitched_bytes: gmlake_stat,
}

fn stat(s: &Stat) -> gmlake_stat {
    let [current, peak, allocated, freed] = s.fields().map(|(_, v)| v);
    gmlake_stat {
        current,
        peak,
        allocated,
        freed,
    }
}

impl From<&Stats> for gmlake_device_stats {
    fn from(s: &Stats) -> Self {
        let arr = |a: &gmlake_core::StatArray| gmlake_stat_array {
            all: stat(&a.all),
            small_pool: stat(&a.small_pool),
            large_pool: stat(&a.large_pool),
        };
        gmlake_device_stats {
            allocation: arr(&s.allocation),
            segment: arr(&s.segment),
            active: arr(&s.active),
            inactive_split: arr(&s.inactive_split),
            allocated_bytes: arr(&s.allocated_bytes),
            reserved_bytes: arr(&s.reserved_bytes),
            active_bytes: arr(&s.active_bytes),
            inactive_split_bytes: arr(&s.inactive_split_bytes),
            requested_bytes: arr(&s.requested_bytes),
            num_alloc_retries: s.num_alloc_retries as i64,
            num_ooms: s.num_ooms as i64,
            num_sync_all_streams: s.num_sync_all_streams as i64,
            num_device_alloc: s.num_device_alloc as i64,
            num_device_free: s.num_device_free as i64,
            num_stitches: s.num_stitches as i64,
            num_stitch_reuses: s.num_stitch_reuses as i64,
            stitched_bytes: stat(&s.stitched_bytes),
        }
    }
}
