//! A simulated device: it keeps the books of physical handles, virtual ranges, mappings and events
//! the way a GPU driver would, refuses impossible calls (mapping over a mapping, releasing a mapped
//! handle, freeing a range with mappings inside...), counts every call by kind, charges each the
//! time the real driver would spend by the H200 cost model ([`cost`]), and can be told to fail the
//! Nth call of a kind ([`faults`]).
//!
//! It stores no data: addresses are bookkeeping only. Thread-safety: a plain value, driven through
//! `&mut self` like any [`crate::Device`].

pub mod cost;
mod driver;
pub mod faults;
mod peers;

pub use cost::{CostTable, SizeCurve};
pub use faults::FaultPlan;
pub use peers::Fabric;

use crate::device::{DeviceResult, DriverCall, DriverCallCounts};
use crate::ledger::Ledger;
use hashbrown::HashMap;

const MIB: u64 = 1 << 20;

/// An H200's memory as its driver reports it (`cuMemGetInfo` total: 150,754,820,096 bytes, about
/// 140.4 GiB): the capacity of [`SimulatedDevice::h200`].
pub const H200_TOTAL_BYTES: u64 = 150_754_820_096;

#[derive(Clone, Debug, Default)]
struct SimEvent {
    recorded: bool,
    queries_left: u32,
}

/// Counts of what a simulated device holds, for leak checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimHoldings {
    /// Live physical handles.
    pub handles: u64,
    /// Bytes of live physical handles.
    pub handle_bytes: u64,
    /// Reserved virtual ranges.
    pub ranges: u64,
    /// Live mappings.
    pub mappings: u64,
    /// Live events.
    pub events: u64,
}

/// A device that keeps the books of a GPU's virtual memory management in host memory.
///
/// Errors it returns: `OutOfMemory` past its capacity; `InvalidValue` for anything a driver would
/// refuse (misaligned sizes, unknown handles, overlapping mappings, releasing a mapped handle,
/// freeing a range with mappings in it, unmapping part of a mapping); `Other` for injected faults.
#[derive(Debug)]
pub struct SimulatedDevice {
    ledger: Ledger,
    next_handle: u64,
    next_va: u64,
    next_event: u64,
    events: HashMap<u64, SimEvent>,
    faults: FaultPlan,
    costs: CostTable,
    estimated_us: f64,
    us_by_call: [f64; DriverCall::COUNT],
    event_latency: u32,
    /// Its place among peer devices ([`SimulatedDevice::peers_of`]); `None` for a lone device.
    member: Option<peers::Membership>,
}

impl SimulatedDevice {
    /// A device of `capacity` bytes with a 2 MiB granularity (the H200's) and the H200 cost table.
    pub fn new(capacity: u64) -> Self {
        Self::with_granularity(capacity, 2 * MIB)
    }

    /// An H200: [`H200_TOTAL_BYTES`], 2 MiB granularity, the H200 cost table.
    pub fn h200() -> Self {
        Self::new(H200_TOTAL_BYTES)
    }

    /// A device of `capacity` bytes with the given granularity (a power of two, bytes).
    pub fn with_granularity(capacity: u64, granularity: u64) -> Self {
        SimulatedDevice {
            ledger: Ledger::new(granularity.max(1).next_power_of_two(), Some(capacity)),
            next_handle: 1,
            next_va: 0x7000_0000_0000,
            next_event: 1,
            events: HashMap::new(),
            faults: FaultPlan::default(),
            costs: CostTable::default(),
            estimated_us: 0.0,
            us_by_call: [0.0; DriverCall::COUNT],
            event_latency: 0,
            member: None,
        }
    }

    /// Replaces the cost table.
    pub fn set_costs(&mut self, costs: CostTable) {
        self.costs = costs;
    }

    /// The cost table in use.
    pub fn costs(&self) -> &CostTable {
        &self.costs
    }

    /// Makes every recorded event report "not complete" to its first `queries` queries, as a busy
    /// GPU would; synchronization completes them at once. Default 0 (complete at once).
    pub fn set_event_latency(&mut self, queries: u32) {
        self.event_latency = queries;
    }

    /// Makes the `nth` call (1-based, counted from the device's creation) of kind `call` fail with
    /// `DeviceErrorKind::Other`, doing nothing. Several faults may be pending.
    pub fn inject_fault(&mut self, call: DriverCall, nth: u64) {
        self.faults.inject(call, nth);
    }

    /// Changes the capacity in bytes (what is held stays held).
    pub fn set_capacity(&mut self, capacity: u64) {
        self.ledger.set_capacity(Some(capacity));
    }

    /// Calls made so far, by kind (failed ones included).
    pub fn calls(&self) -> DriverCallCounts {
        self.faults.calls()
    }

    /// Estimated driver time of all calls so far, in microseconds.
    pub fn estimated_us(&self) -> f64 {
        self.estimated_us
    }

    /// Estimated driver time of the calls of one kind so far, in microseconds.
    pub fn estimated_us_of(&self, call: DriverCall) -> f64 {
        self.us_by_call[call.index()]
    }

    /// Adds `us` microseconds of estimated driver time to `call`'s kind.
    pub(super) fn charge(&mut self, call: DriverCall, us: f64) {
        self.estimated_us += us;
        self.us_by_call[call.index()] += us;
    }

    /// Whether every byte of `[addr, addr + len)` lies in mappings with access granted, so that
    /// the GPU could read and write it (for tests of what the allocator hands out).
    pub fn accessible(&self, addr: u64, len: u64) -> bool {
        self.ledger.accessible(addr, len)
    }

    /// Peak bytes of physical handles held at once.
    pub fn peak_used(&self) -> u64 {
        self.ledger.peak_used()
    }

    /// What the device holds now.
    pub fn holdings(&self) -> SimHoldings {
        let b = self.ledger.books(0.0);
        SimHoldings {
            handles: b.handles,
            handle_bytes: b.handle_bytes,
            ranges: b.ranges,
            mappings: b.mappings,
            events: self.events.len() as u64,
        }
    }

    pub(super) fn enter(&mut self, call: DriverCall) -> DeviceResult<()> {
        self.faults.enter(call)
    }
}
