//! The allocation history: a bounded ring of what the allocator did, in the actions of PyTorch's
//! memory history (`torch.cuda.memory._record_memory_history`), so that C, C++ and Rust callers
//! can record a trace as PyTorch users do, and replay or view it.
//!
//! Each record carries the caller's context id ([`Allocator::set_context`]): a number the caller
//! maps to what it knows of the call (PyTorch's C++ route maps it to the Python and C++ stack
//! frames PyTorch's context recorder gathered). Stitches appear as the allocations they serve, at
//! the stitched address; the physical memory under them stays in the segments' `segment_map`
//! records, so that reserved memory is counted once.

use super::types::*;
use super::Allocator;
use crate::device::{Device, StreamHandle};
use crate::replay::{TraceAction, TraceEvent};
use alloc::collections::VecDeque;
use alloc::vec::Vec;

pub(crate) use crate::replay::TraceAction as HistoryAction;

pub use super::pools::PoolId;

/// One thing the allocator did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    /// What, where (for `Oom`: the device's free bytes), how many bytes and on which stream.
    pub event: TraceEvent,
    /// The memory pool concerned.
    pub pool: PoolId,
    /// The caller's context id at the time.
    pub context: u64,
}

/// The ring of records.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub enabled: bool,
    max_entries: usize,
    ring: VecDeque<HistoryRecord>,
}

impl<D: Device> Allocator<D> {
    /// Starts (`enabled`) or stops recording the history, keeping at most `max_entries` records
    /// (the oldest go first; at least 1). `clear` empties what was recorded; stopping keeps it.
    pub fn record_history(&mut self, enabled: bool, max_entries: usize, clear: bool) {
        let h = &mut self.history;
        h.enabled = enabled;
        h.max_entries = max_entries.max(1);
        if clear {
            h.ring.clear();
        }
        while h.ring.len() > h.max_entries {
            h.ring.pop_front();
        }
    }

    /// Whether the history is being recorded.
    pub fn history_enabled(&self) -> bool {
        self.history.enabled
    }

    /// The records, oldest first. O(records).
    pub fn history(&self) -> Vec<HistoryRecord> {
        self.history.ring.iter().copied().collect()
    }

    /// Sets the caller's context id that the records of the next calls carry, and that live
    /// allocations made by them keep (see [`Allocator::live_contexts`]).
    pub fn set_context(&mut self, context: u64) {
        self.context = context;
    }

    /// The context ids that records and live allocations still refer to, so that a caller that
    /// maps ids to its own objects can drop the others. O(records + live allocations).
    pub fn live_contexts(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .history
            .ring
            .iter()
            .map(|r| r.context)
            .chain(self.live.values().map(|l| l.context))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Adds a record about stream `s` and pool `p`, if the history is on. One branch when it is
    /// off.
    pub(super) fn record(
        &mut self,
        action: TraceAction,
        addr: u64,
        size: u64,
        s: StreamIdx,
        p: PoolIdx,
    ) {
        if !self.history.enabled {
            return;
        }
        let stream = self
            .streams
            .list
            .get(s as usize)
            .map_or(StreamHandle(0), |st| st.handle);
        let record = HistoryRecord {
            event: TraceEvent {
                action,
                addr,
                size,
                stream: stream.0,
            },
            pool: self.pools.get(p).map_or(PoolId::DEFAULT, |ps| ps.id),
            context: self.context,
        };
        let h = &mut self.history;
        if h.ring.len() >= h.max_entries {
            h.ring.pop_front();
        }
        h.ring.push_back(record);
    }
}
