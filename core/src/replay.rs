//! Replay of allocation traces through an allocator.
//!
//! A trace is PyTorch's allocator history (`torch.cuda.memory._record_memory_history`): `alloc`
//! allocates, `free_requested` frees (the stream-ordered logical free); `segment_alloc`/`segment_free`
//! (and the expandable-segments `segment_map`/`segment_unmap`) are PyTorch's own reservations,
//! whose running sum is the native allocator's reserved memory, the baseline. Addresses in a trace
//! only identify allocations. Readers for trace files live in the `gmlake-trace` crate.

use crate::allocator::Allocator;
use crate::config::Config;
use crate::device::{Device, DriverCallCounts, StreamHandle};
use crate::error::{Error, Result};
use hashbrown::{HashMap, HashSet};

/// A trace event's action (PyTorch's `TraceEntry.action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceAction {
    /// An allocation of `size` bytes at `addr`.
    Alloc,
    /// The caller freed `addr` (stream-ordered).
    FreeRequested,
    /// PyTorch reused the block (after `record_stream` events); ignored by the replay.
    FreeCompleted,
    /// PyTorch reserved a segment (`cudaMalloc`).
    SegmentAlloc,
    /// PyTorch released a segment.
    SegmentFree,
    /// Expandable segments mapped memory.
    SegmentMap,
    /// Expandable segments unmapped memory.
    SegmentUnmap,
    /// PyTorch ran out of memory.
    Oom,
    /// A snapshot was taken.
    Snapshot,
}

impl TraceAction {
    /// Its number in the order above (alloc 0, free_requested 1, ..., oom 7, snapshot 8), as the
    /// C API's history records give it.
    pub fn index(self) -> u32 {
        self as u32
    }

    /// Parses PyTorch's action name (`alloc`, `free_requested`, ...); the legacy `free` reads as
    /// `free_requested`.
    pub fn parse(name: &str) -> Option<TraceAction> {
        Some(match name {
            "alloc" => TraceAction::Alloc,
            "free_requested" | "free" => TraceAction::FreeRequested,
            "free_completed" => TraceAction::FreeCompleted,
            "segment_alloc" => TraceAction::SegmentAlloc,
            "segment_free" => TraceAction::SegmentFree,
            "segment_map" => TraceAction::SegmentMap,
            "segment_unmap" => TraceAction::SegmentUnmap,
            "oom" => TraceAction::Oom,
            "snapshot" => TraceAction::Snapshot,
            _ => return None,
        })
    }
}

/// One trace event. Sizes in bytes; `addr` identifies an allocation; `stream` is the CUDA stream
/// handle as an integer (0 = default stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// What happened.
    pub action: TraceAction,
    /// The address PyTorch's allocator returned or freed.
    pub addr: u64,
    /// Bytes requested (`alloc`, `free_*`) or reserved (`segment_*`).
    pub size: u64,
    /// The stream.
    pub stream: u64,
}

/// What a replay measured. Bytes are bytes; times are microseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayReport {
    /// Events read.
    pub events: u64,
    /// `alloc` events.
    pub allocs: u64,
    /// `free_requested` events that freed an allocation.
    pub frees: u64,
    /// Frees of addresses never allocated in the trace (the trace is a ring buffer).
    pub unmatched_frees: u64,
    /// Allocations of an address that was still live (the earlier one is freed first).
    pub duplicate_allocs: u64,
    /// Allocations gmlake failed (out of memory, or an injected driver fault).
    pub ooms: u64,
    /// Peak of live requested bytes (what callers asked for and had not freed).
    pub peak_active_bytes: u64,
    /// Peak physical bytes gmlake held.
    pub peak_reserved_bytes: u64,
    /// `peak_active_bytes / peak_reserved_bytes`.
    pub utilization: f64,
    /// Peak of PyTorch's own reserved bytes (running sum of the `segment_*` events).
    pub native_peak_reserved_bytes: u64,
    /// Peak live requested bytes over the whole trace / `native_peak_reserved_bytes`.
    pub native_utilization: f64,
    /// PyTorch's `segment_alloc` count.
    pub native_segment_allocs: u64,
    /// PyTorch's estimated driver time: each `segment_alloc` at the device's `cudaMalloc` cost
    /// ([`Device::native_malloc_us`]; 0 where the device models no costs).
    pub native_estimated_driver_us: f64,
    /// Stitches gmlake made.
    pub num_stitches: u64,
    /// Allocations served by a cached stitched block.
    pub num_stitch_reuses: u64,
    /// Stitched blocks garbage-collected.
    pub num_stitch_gc: u64,
    /// Driver calls gmlake made, by kind, over the whole replay including the teardown.
    pub driver_calls: DriverCallCounts,
    /// Driver time during the trace (before the teardown), from the device's books (estimated on
    /// the simulated device); 0 if the device keeps none.
    pub estimated_driver_us: f64,
    /// Driver time of the teardown (freeing what is live and emptying the cache).
    pub teardown_driver_us: f64,
    /// Operations replayed (allocs and frees through gmlake).
    pub ops: u64,
    /// Physical handles held after the teardown (must be 0).
    pub end_handles: u64,
    /// Virtual ranges held after the teardown (must be 0).
    pub end_ranges: u64,
    /// Mappings held after the teardown (must be 0).
    pub end_mappings: u64,
    /// Events held after the teardown (must be 0).
    pub end_events: u64,
    /// The allocator's statistics at the end of the trace, before the teardown.
    pub stats: crate::stats::Stats,
}

/// Drives an allocator through trace events and measures it against the trace's native figures.
pub struct Replayer<D: Device> {
    alloc: Allocator<D>,
    live: HashMap<u64, (u64, u64)>,
    failed: HashSet<u64>,
    trace_live: HashMap<u64, u64>,
    report: ReplayReport,
    live_bytes: u64,
    trace_live_bytes: u64,
    trace_peak_live: u64,
    native_reserved: i64,
}

impl<D: Device> Replayer<D> {
    /// A replayer over a fresh allocator on `dev` with `cfg`.
    ///
    /// # Errors
    /// As [`Allocator::new`].
    pub fn new(dev: D, cfg: Config) -> Result<Self> {
        Ok(Replayer {
            alloc: Allocator::new(dev, cfg)?,
            live: HashMap::new(),
            failed: HashSet::new(),
            trace_live: HashMap::new(),
            report: ReplayReport::default(),
            live_bytes: 0,
            trace_live_bytes: 0,
            trace_peak_live: 0,
            native_reserved: 0,
        })
    }

    /// The allocator being driven.
    pub fn allocator(&self) -> &Allocator<D> {
        &self.alloc
    }

    /// The allocator being driven, mutably (to inject faults into its device, say).
    pub fn allocator_mut(&mut self) -> &mut Allocator<D> {
        &mut self.alloc
    }

    /// Replays one event. Allocation failures are counted, never fatal.
    pub fn step(&mut self, ev: &TraceEvent) {
        self.report.events += 1;
        match ev.action {
            TraceAction::Alloc => self.on_alloc(ev),
            TraceAction::FreeRequested => self.on_free(ev),
            TraceAction::SegmentAlloc | TraceAction::SegmentMap => {
                if ev.action == TraceAction::SegmentAlloc {
                    self.report.native_segment_allocs += 1;
                    self.report.native_estimated_driver_us +=
                        self.alloc.device().native_malloc_us(ev.size).unwrap_or(0.0);
                }
                self.native_reserved += ev.size as i64;
                self.report.native_peak_reserved_bytes = self
                    .report
                    .native_peak_reserved_bytes
                    .max(self.native_reserved.max(0) as u64);
            }
            TraceAction::SegmentFree | TraceAction::SegmentUnmap => {
                self.native_reserved -= ev.size as i64
            }
            TraceAction::FreeCompleted | TraceAction::Oom | TraceAction::Snapshot => {}
        }
    }

    fn on_alloc(&mut self, ev: &TraceEvent) {
        self.report.allocs += 1;
        if self.live.contains_key(&ev.addr) || self.failed.contains(&ev.addr) {
            self.report.duplicate_allocs += 1;
            self.on_free(&TraceEvent {
                action: TraceAction::FreeRequested,
                ..*ev
            });
        }
        self.trace_live.insert(ev.addr, ev.size);
        self.trace_live_bytes += ev.size;
        self.trace_peak_live = self.trace_peak_live.max(self.trace_live_bytes);
        self.report.ops += 1;
        match self.alloc.malloc(ev.size, StreamHandle(ev.stream)) {
            Ok(p) => {
                self.live.insert(ev.addr, (p, ev.size));
                self.live_bytes += ev.size;
                self.report.peak_active_bytes = self.report.peak_active_bytes.max(self.live_bytes);
            }
            Err(_) => {
                self.report.ooms += 1;
                self.failed.insert(ev.addr);
            }
        }
    }

    fn on_free(&mut self, ev: &TraceEvent) {
        if let Some(size) = self.trace_live.remove(&ev.addr) {
            self.trace_live_bytes -= size;
        }
        if let Some((p, size)) = self.live.remove(&ev.addr) {
            self.report.ops += 1;
            self.report.frees += 1;
            self.live_bytes -= size;
            if let Err(e) = self.alloc.free(p) {
                // Cannot happen for an address gmlake returned; count it rather than hide it.
                debug_assert!(false, "free of a live allocation failed: {e}");
                self.report.unmatched_frees += 1;
            }
        } else if !self.failed.remove(&ev.addr) {
            self.report.unmatched_frees += 1;
        }
    }

    /// Frees what is still live, empties the cache, destroys pooled events and reports.
    ///
    /// # Errors
    /// `Device` if the final synchronization failed.
    pub fn finish(mut self) -> Result<ReplayReport> {
        let before = self.alloc.device().books().map_or(0.0, |b| b.driver_us);
        let stats = self.alloc.stats();
        let mut r = core::mem::take(&mut self.report);
        r.peak_reserved_bytes = stats.reserved_bytes.all.peak as u64;
        r.utilization = ratio(r.peak_active_bytes, r.peak_reserved_bytes);
        r.native_utilization = ratio(self.trace_peak_live, r.native_peak_reserved_bytes);
        r.num_stitches = stats.num_stitches;
        r.num_stitch_reuses = stats.num_stitch_reuses;
        r.num_stitch_gc = stats.num_stitch_gc;
        r.estimated_driver_us = before;
        r.stats = stats;
        self.alloc.release_all().map_err(|e| match e {
            Error::Device(d) => Error::Device(d),
            other => other,
        })?;
        r.driver_calls = self.alloc.stats_ref().driver_calls;
        if let Some(b) = self.alloc.device().books() {
            r.teardown_driver_us = b.driver_us - before;
            r.end_handles = b.handles;
            r.end_ranges = b.ranges;
            r.end_mappings = b.mappings;
            r.end_events = b.events;
        }
        Ok(r)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Replays `events` on a fresh allocator over `dev` and reports.
///
/// # Errors
/// As [`Replayer::new`] and [`Replayer::finish`].
pub fn replay<D: Device>(
    dev: D,
    cfg: Config,
    events: impl IntoIterator<Item = TraceEvent>,
) -> Result<ReplayReport> {
    let mut r = Replayer::new(dev, cfg)?;
    for ev in events {
        r.step(&ev);
    }
    r.finish()
}
