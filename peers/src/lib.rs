//! # gmlake-peers
//!
//! What PyTorch's own CUDA allocator would reserve for a trace, so that a replay can set gmlake
//! beside the two allocators a PyTorch user already has: the native caching allocator and its
//! `expandable_segments:True` mode. [`CachingModel`] follows PyTorch 2.11's
//! `c10/cuda/CUDACachingAllocator.cpp` rule for rule (rounding, the small and large pools,
//! segment sizes, best fit per stream, splitting, coalescing, the release of cached memory and
//! retry when the device is full, the growth and unmapping of expandable segments); it keeps
//! books only (no memory). Settings that are off by default (`max_split_size_mb`,
//! `roundup_power2_divisions`, `garbage_collection_threshold`) are not modelled.
//!
//! ```
//! use gmlake_core::replay::{TraceAction, TraceEvent};
//! use gmlake_peers::{replay, Peer};
//! let ev = |action, addr, size| TraceEvent { action, addr, size, stream: 0 };
//! let trace = [ev(TraceAction::Alloc, 1, 5 << 20), ev(TraceAction::FreeRequested, 1, 5 << 20)];
//! let r = replay(Peer::Native, &trace, 1 << 40);
//! assert_eq!(r.peak_reserved_bytes, 20 << 20); // a 5 MiB tensor takes a 20 MiB segment
//! ```

mod model;

pub use model::CachingModel;

use gmlake_core::replay::{TraceAction, TraceEvent};
use std::collections::HashMap;

/// One of PyTorch's allocators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The caching allocator with its defaults (`cudaMalloc` segments).
    Native,
    /// The caching allocator with `expandable_segments:True`.
    Expandable,
}

impl Peer {
    /// Both, in report order.
    pub const ALL: [Peer; 2] = [Peer::Native, Peer::Expandable];

    /// The name used in reports: `pytorch_native`, `pytorch_expandable`.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Native => "pytorch_native",
            Peer::Expandable => "pytorch_expandable",
        }
    }
}

/// What a peer reserved over a trace. Bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerReport {
    /// The most memory it held from the device at once (segments, or mapped pages).
    pub peak_reserved_bytes: u64,
    /// Allocations it could not serve within the capacity, even after releasing its cache.
    pub ooms: u64,
    /// Reserved bytes after each event that changed them, as `(event index, bytes)`, for plots.
    pub reserved_series: Vec<(u64, u64)>,
}

/// Replays `events` through `peer` on a device of `capacity` bytes. Allocations are `alloc`
/// events; an allocation goes back to its pool at its `free_completed` event where the trace has
/// them (PyTorch reuses a block only then), else at `free_requested`. The native model takes the
/// addresses of the trace's `segment_alloc` events for its segments
/// ([`CachingModel::hint_segment_address`]). O(events × log blocks).
pub fn replay(peer: Peer, events: &[TraceEvent], capacity: u64) -> PeerReport {
    let completes = events
        .iter()
        .any(|e| e.action == TraceAction::FreeCompleted);
    let frees = if completes {
        TraceAction::FreeCompleted
    } else {
        TraceAction::FreeRequested
    };
    let mut m = CachingModel::new(peer == Peer::Expandable, capacity);
    let mut live: HashMap<u64, usize> = HashMap::new();
    let mut report = PeerReport::default();
    let mut last = 0;
    for (i, e) in events.iter().enumerate() {
        match e.action {
            TraceAction::SegmentAlloc => m.hint_segment_address(e.addr, e.size),
            TraceAction::Alloc if e.size > 0 => match m.malloc(e.size, e.stream) {
                Some(id) => {
                    live.insert(e.addr, id);
                }
                None => report.ooms += 1,
            },
            a if a == frees => {
                if let Some(id) = live.remove(&e.addr) {
                    m.free(id);
                }
            }
            _ => {}
        }
        let now = m.reserved();
        report.peak_reserved_bytes = report.peak_reserved_bytes.max(now);
        if now != last {
            report.reserved_series.push((i as u64, now));
            last = now;
        }
    }
    report
}

/// The smallest capacity, to `step` bytes, at which `run(capacity)` reports no out-of-memory,
/// searched by bisection between `lo` (too small, or 0) and `hi` (enough), assuming that more
/// memory never causes an out-of-memory. O(log((hi - lo) / step)) runs.
pub fn fit_capacity(mut lo: u64, mut hi: u64, step: u64, mut run: impl FnMut(u64) -> bool) -> u64 {
    let step = step.max(1);
    while hi - lo > step {
        let mid = lo + (hi - lo) / 2 / step * step;
        let mid = if mid == lo { lo + step } else { mid };
        if run(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}
