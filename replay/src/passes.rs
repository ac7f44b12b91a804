//! A trace replayed several times on one allocator, as a job repeats its steps: what each pass
//! cost, so that one can see whether the allocator settles (no new stitches, no new handles, no
//! driver time, a flat peak) once it has seen every shape.

use anyhow::Result;
use gmlake_core::replay::{TraceAction, TraceEvent};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, DriverCall, StreamHandle};
use serde::Serialize;
use std::collections::HashMap;

/// What one pass over the trace cost. Bytes and microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PassRow {
    /// The pass, from 1.
    pub pass: u32,
    /// Stitched blocks made during the pass.
    pub new_stitches: u64,
    /// Physical handles created during the pass.
    pub handles_created: u64,
    /// Estimated driver time of the pass.
    pub driver_us: f64,
    /// The most reserved memory during the pass.
    pub peak_reserved_bytes: u64,
    /// Allocations that found no memory during the pass.
    pub ooms: u64,
}

/// Replays `events` `passes` times on one allocator with `cfg` on a simulated device of
/// `capacity` bytes: allocations at `alloc`, frees at `free_requested`, and what a pass leaves
/// live freed at its end (a step's tensors do not outlive it); with `late_events`, events complete
/// only at a synchronization (`Options::late_events`). O(passes × events × the cost of an
/// allocation).
///
/// # Errors
/// A configuration the allocator refuses, or a free it refuses (not a failed allocation: those
/// are counted).
pub fn replay_passes(
    events: &[TraceEvent],
    cfg: &Config,
    capacity: u64,
    passes: u32,
    late_events: bool,
) -> Result<Vec<PassRow>> {
    let mut dev = SimulatedDevice::new(capacity);
    if late_events {
        dev.set_event_latency(u32::MAX);
    }
    let mut a = Allocator::new(dev, cfg.clone())?;
    let mut rows = Vec::new();
    for pass in 1..=passes {
        let (st, us) = (a.stats(), a.device().estimated_us());
        a.reset_peak_stats();
        let mut live: HashMap<u64, u64> = HashMap::new();
        let mut ooms = 0;
        for e in events {
            match e.action {
                TraceAction::Alloc => match a.malloc(e.size, StreamHandle(e.stream)) {
                    Ok(p) => {
                        live.insert(e.addr, p);
                    }
                    Err(_) => ooms += 1,
                },
                TraceAction::FreeRequested => {
                    if let Some(p) = live.remove(&e.addr) {
                        a.free(p)?;
                    }
                }
                _ => {}
            }
        }
        for (_, p) in live {
            a.free(p)?;
        }
        let now = a.stats();
        let created = DriverCall::CreateHandle;
        rows.push(PassRow {
            pass,
            new_stitches: now.num_stitches - st.num_stitches,
            handles_created: now.driver_calls.get(created) - st.driver_calls.get(created),
            driver_us: a.device().estimated_us() - us,
            peak_reserved_bytes: now.reserved_bytes.all.peak.max(0) as u64,
            ooms,
        });
    }
    Ok(rows)
}
