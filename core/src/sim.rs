//! A simulated device: it keeps the books of physical handles, virtual ranges, mappings and events
//! the way a GPU driver would, refuses impossible calls (mapping over a mapping, releasing a mapped
//! handle, freeing a range with mappings inside...), counts every call by kind, estimates the time
//! the real driver would have spent from a per-call cost table, and can be told to fail the Nth call
//! of a kind.
//!
//! It stores no data: addresses are bookkeeping only. Thread-safety: a plain value, driven through
//! `&mut self` like any [`Device`].

use crate::device::{
    Device, DeviceBooks, DeviceError, DeviceErrorKind, DeviceResult, DriverCall, DriverCallCounts,
    EventHandle, PhysHandle, StreamHandle,
};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use hashbrown::HashMap;

const MIB: u64 = 1 << 20;

/// A cost that depends on a size: points `(bytes, microseconds)` interpolated linearly in
/// `log2(bytes)`, constant below the first point and extended along the last slope above the last.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeCurve(pub Vec<(u64, f64)>);

impl SizeCurve {
    /// A cost that ignores the size.
    pub fn flat(us: f64) -> Self {
        SizeCurve(alloc::vec![(1, us)])
    }

    /// The cost in microseconds for `bytes`.
    pub fn at(&self, bytes: u64) -> f64 {
        let pts = &self.0;
        match pts.len() {
            0 => 0.0,
            1 => pts[0].1,
            n => {
                if bytes <= pts[0].0 {
                    return pts[0].1;
                }
                let x = log2(bytes);
                let seg = pts
                    .windows(2)
                    .position(|w| bytes <= w[1].0)
                    .unwrap_or(n - 2);
                let (a, b) = (pts[seg], pts[seg + 1]);
                let (xa, xb) = (log2(a.0), log2(b.0));
                let t = if xb > xa { (x - xa) / (xb - xa) } else { 0.0 };
                (a.1 + t * (b.1 - a.1)).max(0.0)
            }
        }
    }
}

fn log2(x: u64) -> f64 {
    // no_std: count the bits, then refine with the fraction of the next power (good to ~0.1 bit).
    let lz = 63 - x.leading_zeros() as i32;
    let base = (1u64 << lz) as f64;
    lz as f64 + (x as f64 / base - 1.0)
}

/// Estimated driver cost of each call kind, in microseconds.
///
/// The defaults were measured on an NVIDIA H200 (driver 580.159, CUDA 13.0) by
/// `bench/driver_costs.cpp` on 2026-11-21 (medians of 8-64 calls, device idle, each size's
/// allocations held until all were made, as in a growing allocator; raw figures in
/// `docs/gpu-runs/2026-11-21-driver-costs.jsonl`), for handle sizes 2 MiB to 4 GiB and `cudaMalloc`
/// sizes 2 MiB to 7 GiB, so that the multi-GiB segments of the traces are measured rather than
/// extrapolated. Mapping and the event calls are the means of gmlake's own GPU replays
/// (`docs/benchmarks.md`). Costs not measured are marked as assumptions.
#[derive(Clone, Debug, PartialEq)]
pub struct CostTable {
    /// `cuMemCreate` by handle size (10.6 us at 2 MiB, 7.9 at 32 MiB, 11.1 at 256 MiB, 33.5 at
    /// 1 GiB, 15,497 at 4 GiB).
    pub create_handle: SizeCurve,
    /// `cuMemRelease` by handle size (8.6 us at 2 MiB, 16.7 at 32 MiB, 75.1 at 256 MiB, 280 at
    /// 1 GiB, 1,077 at 4 GiB).
    pub release_handle: SizeCurve,
    /// `cuMemAddressReserve` of a 64 GiB arena (17-20 us measured by gmlake: 20; ranges up to
    /// 4 GiB cost 1-3 us).
    pub reserve_range: f64,
    /// `cuMemAddressFree`: not measured; assumed 10 us.
    pub free_range: f64,
    /// `cuMemMap` of one handle (1.1-1.3 us measured by gmlake: 1.2).
    pub map: f64,
    /// `cuMemSetAccess`, for each physical handle mapped in the range, by that handle's size
    /// (26.6 us at 2 MiB, 22.9 at 32 MiB, 37.3 at 256 MiB, 60.8 at 1 GiB, 207 at 4 GiB; where
    /// both were measured, the mean of one call over one handle and one call over 4-8 handles).
    pub set_access_per_handle: SizeCurve,
    /// `cuMemUnmap`, for each physical handle mapped in the range, by its size (14.6 us at
    /// 2 MiB, 14.8 at 32 MiB, 20.0 at 256 MiB, 29.0 at 1 GiB, 57.8 at 4 GiB).
    pub unmap_per_handle: SizeCurve,
    /// Event creation, destruction, record and query: 3, 3 (assumed), 4 and 3 us (measured by
    /// gmlake: 2.8-3.2, -, 2.6-5.2, 1.8-4.3).
    pub event: [f64; 4],
    /// Stream or device synchronization of an idle device: not measured; assumed 10 us.
    pub synchronize: f64,
    /// PyTorch's `cudaMalloc` by size, for the native baseline (48.3 us at 2 MiB, 68.7 at
    /// 192 MiB, 60.6 at 512 MiB, 98.9 at 1 GiB, 181 at 4 GiB, 278 at 7 GiB).
    pub native_malloc: SizeCurve,
    /// PyTorch's `cudaFree` by size (35.7 us at 2 MiB, 194 at 512 MiB, 371 at 1 GiB, 2,381 at
    /// 7 GiB).
    pub native_free: SizeCurve,
}

impl Default for CostTable {
    fn default() -> Self {
        const GIB: u64 = 1 << 30;
        CostTable {
            create_handle: SizeCurve(alloc::vec![
                (2 * MIB, 10.6),
                (32 * MIB, 7.9),
                (256 * MIB, 11.1),
                (GIB, 33.5),
                (4 * GIB, 15_497.2)
            ]),
            release_handle: SizeCurve(alloc::vec![
                (2 * MIB, 8.6),
                (32 * MIB, 16.7),
                (256 * MIB, 75.1),
                (GIB, 280.2),
                (4 * GIB, 1_077.3)
            ]),
            reserve_range: 20.0,
            free_range: 10.0,
            map: 1.2,
            set_access_per_handle: SizeCurve(alloc::vec![
                (2 * MIB, 26.6),
                (32 * MIB, 22.9),
                (256 * MIB, 37.3),
                (GIB, 60.8),
                (4 * GIB, 206.7)
            ]),
            unmap_per_handle: SizeCurve(alloc::vec![
                (2 * MIB, 14.6),
                (32 * MIB, 14.8),
                (256 * MIB, 20.0),
                (GIB, 29.0),
                (4 * GIB, 57.8)
            ]),
            event: [3.0, 3.0, 4.0, 3.0],
            synchronize: 10.0,
            native_malloc: SizeCurve(alloc::vec![
                (2 * MIB, 48.3),
                (20 * MIB, 49.3),
                (96 * MIB, 47.0),
                (192 * MIB, 68.7),
                (512 * MIB, 60.6),
                (GIB, 98.9),
                (2 * GIB, 147.1),
                (4 * GIB, 181.1),
                (7 * GIB, 278.1)
            ]),
            native_free: SizeCurve(alloc::vec![
                (2 * MIB, 35.7),
                (20 * MIB, 51.9),
                (96 * MIB, 82.4),
                (192 * MIB, 134.4),
                (512 * MIB, 193.7),
                (GIB, 371.3),
                (2 * GIB, 794.4),
                (4 * GIB, 1_225.3),
                (7 * GIB, 2_380.8)
            ]),
        }
    }
}

#[derive(Clone, Debug)]
struct SimHandle {
    size: u64,
    mappings: u32,
}

#[derive(Clone, Debug)]
struct SimMapping {
    size: u64,
    handle: u64,
    /// Access granted (`set_access`) since it was mapped.
    access: bool,
}

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
    granularity: u64,
    capacity: u64,
    used: u64,
    peak_used: u64,
    next_handle: u64,
    next_va: u64,
    next_event: u64,
    handles: HashMap<u64, SimHandle>,
    ranges: BTreeMap<u64, u64>,
    mappings: BTreeMap<u64, SimMapping>,
    events: HashMap<u64, SimEvent>,
    calls: DriverCallCounts,
    faults: Vec<(DriverCall, u64)>,
    costs: CostTable,
    estimated_us: f64,
    us_by_call: [f64; 13],
    event_latency: u32,
}

impl SimulatedDevice {
    /// A device of `capacity` bytes with a 2 MiB granularity (the H200's) and the H200 cost table.
    pub fn new(capacity: u64) -> Self {
        Self::with_granularity(capacity, 2 * MIB)
    }

    /// A device of `capacity` bytes with the given granularity (a power of two, bytes).
    pub fn with_granularity(capacity: u64, granularity: u64) -> Self {
        SimulatedDevice {
            granularity: granularity.max(1).next_power_of_two(),
            capacity,
            used: 0,
            peak_used: 0,
            next_handle: 1,
            next_va: 0x7000_0000_0000,
            next_event: 1,
            handles: HashMap::new(),
            ranges: BTreeMap::new(),
            mappings: BTreeMap::new(),
            events: HashMap::new(),
            calls: DriverCallCounts::default(),
            faults: Vec::new(),
            costs: CostTable::default(),
            estimated_us: 0.0,
            us_by_call: [0.0; 13],
            event_latency: 0,
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
        self.faults.push((call, nth));
    }

    /// Changes the capacity in bytes (what is held stays held).
    pub fn set_capacity(&mut self, capacity: u64) {
        self.capacity = capacity;
    }

    /// Calls made so far, by kind (failed ones included).
    pub fn calls(&self) -> DriverCallCounts {
        self.calls
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
    fn charge(&mut self, call: DriverCall, us: f64) {
        self.estimated_us += us;
        self.us_by_call[call.index()] += us;
    }

    /// Whether every byte of `[addr, addr + len)` lies in mappings with access granted, so that
    /// the GPU could read and write it (for tests of what the allocator hands out).
    pub fn accessible(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len.max(1)) else {
            return false;
        };
        let mut at = addr;
        let first = self.mappings.range(..=addr).next_back();
        let rest = self.mappings.range(addr.saturating_add(1)..end);
        for (&va, m) in first.into_iter().chain(rest) {
            if va > at || !m.access {
                return false;
            }
            at = at.max(va + m.size);
            if at >= end {
                return true;
            }
        }
        false
    }

    /// Peak bytes of physical handles held at once.
    pub fn peak_used(&self) -> u64 {
        self.peak_used
    }

    /// What the device holds now.
    pub fn holdings(&self) -> SimHoldings {
        SimHoldings {
            handles: self.handles.len() as u64,
            handle_bytes: self.used,
            ranges: self.ranges.len() as u64,
            mappings: self.mappings.len() as u64,
            events: self.events.len() as u64,
        }
    }

    fn enter(&mut self, call: DriverCall) -> DeviceResult<()> {
        self.calls.bump(call);
        let n = self.calls.get(call);
        if let Some(pos) = self.faults.iter().position(|&(c, k)| c == call && k == n) {
            self.faults.swap_remove(pos);
            return Err(DeviceError::new(
                call,
                DeviceErrorKind::Other,
                -1,
                alloc::format!("injected fault on call #{n}"),
            ));
        }
        Ok(())
    }

    fn invalid(call: DriverCall, what: alloc::string::String) -> DeviceError {
        DeviceError::new(call, DeviceErrorKind::InvalidValue, 1, what)
    }

    fn aligned(&self, x: u64) -> bool {
        x.is_multiple_of(self.granularity)
    }

    /// Mappings exactly tiling `[addr, addr + size)`, or `None`.
    fn tiling(&self, addr: u64, size: u64) -> Option<Vec<u64>> {
        let mut at = addr;
        let mut keys = Vec::new();
        for (&va, m) in self.mappings.range(addr..addr.checked_add(size)?) {
            if va != at {
                return None;
            }
            at = va + m.size;
            keys.push(va);
        }
        (at == addr + size && !keys.is_empty()).then_some(keys)
    }
}

impl Device for SimulatedDevice {
    fn granularity(&self) -> u64 {
        self.granularity
    }

    fn total_memory(&self) -> u64 {
        self.capacity
    }

    fn free_memory(&mut self) -> Option<u64> {
        Some(self.capacity.saturating_sub(self.used))
    }

    fn create_handle(&mut self, size: u64) -> DeviceResult<PhysHandle> {
        let call = DriverCall::CreateHandle;
        self.enter(call)?;
        self.charge(DriverCall::CreateHandle, self.costs.create_handle.at(size));
        if size == 0 || !self.aligned(size) {
            return Err(Self::invalid(
                call,
                alloc::format!("handle size {size} is not a positive multiple of the granularity"),
            ));
        }
        if self.used.saturating_add(size) > self.capacity {
            return Err(DeviceError::new(
                call,
                DeviceErrorKind::OutOfMemory,
                2,
                alloc::format!(
                    "{size} bytes requested, {} of {} bytes in use",
                    self.used,
                    self.capacity
                ),
            ));
        }
        let id = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(id, SimHandle { size, mappings: 0 });
        self.used += size;
        self.peak_used = self.peak_used.max(self.used);
        Ok(PhysHandle(id))
    }

    fn release_handle(&mut self, handle: PhysHandle) -> DeviceResult<()> {
        let call = DriverCall::ReleaseHandle;
        self.enter(call)?;
        let h = self
            .handles
            .get(&handle.0)
            .ok_or_else(|| Self::invalid(call, alloc::format!("unknown handle {}", handle.0)))?;
        let (size, mappings) = (h.size, h.mappings);
        self.charge(call, self.costs.release_handle.at(size));
        if mappings != 0 {
            return Err(Self::invalid(
                call,
                alloc::format!("handle {} is still mapped {mappings} times", handle.0),
            ));
        }
        self.used -= size;
        self.handles.remove(&handle.0);
        Ok(())
    }

    fn reserve_range(&mut self, size: u64) -> DeviceResult<u64> {
        let call = DriverCall::ReserveRange;
        self.enter(call)?;
        self.charge(DriverCall::ReserveRange, self.costs.reserve_range);
        if size == 0 || !self.aligned(size) {
            return Err(Self::invalid(
                call,
                alloc::format!("range size {size} is not a positive multiple of the granularity"),
            ));
        }
        let va = self.next_va;
        // Leave one granule between ranges so that no two ranges are adjacent by accident.
        self.next_va = va.checked_add(size + self.granularity).ok_or_else(|| {
            DeviceError::new(
                call,
                DeviceErrorKind::OutOfMemory,
                2,
                "address space exhausted",
            )
        })?;
        self.ranges.insert(va, size);
        Ok(va)
    }

    fn free_range(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::FreeRange;
        self.enter(call)?;
        self.charge(DriverCall::FreeRange, self.costs.free_range);
        if self.ranges.get(&addr) != Some(&size) {
            return Err(Self::invalid(
                call,
                alloc::format!("no range of {size} bytes was reserved at {addr:#x}"),
            ));
        }
        if self.mappings.range(addr..addr + size).next().is_some() {
            return Err(Self::invalid(
                call,
                alloc::format!("range at {addr:#x} still has mappings"),
            ));
        }
        self.ranges.remove(&addr);
        Ok(())
    }

    fn map(&mut self, addr: u64, size: u64, handle: PhysHandle, offset: u64) -> DeviceResult<()> {
        let call = DriverCall::Map;
        self.enter(call)?;
        self.charge(DriverCall::Map, self.costs.map);
        if size == 0 || !self.aligned(addr) || !self.aligned(size) || !self.aligned(offset) {
            return Err(Self::invalid(
                call,
                alloc::format!("map of {size} bytes at {addr:#x}, offset {offset}: not aligned"),
            ));
        }
        let inside = self
            .ranges
            .range(..=addr)
            .next_back()
            .is_some_and(|(&va, &len)| addr + size <= va + len);
        if !inside {
            return Err(Self::invalid(
                call,
                alloc::format!("{addr:#x}+{size} is not inside a reserved range"),
            ));
        }
        let overlaps_before = self
            .mappings
            .range(..addr)
            .next_back()
            .is_some_and(|(&va, m)| va + m.size > addr);
        let overlaps_inside = self.mappings.range(addr..addr + size).next().is_some();
        if overlaps_before || overlaps_inside {
            return Err(Self::invalid(
                call,
                alloc::format!("{addr:#x}+{size} overlaps a mapping"),
            ));
        }
        let h = self
            .handles
            .get_mut(&handle.0)
            .ok_or_else(|| Self::invalid(call, alloc::format!("unknown handle {}", handle.0)))?;
        // The CUDA driver maps whole handles only: `cuMemMap` returns CUDA_ERROR_NOT_SUPPORTED (801)
        // for a non-zero offset or a partial size (seen on the H200, driver 580.159).
        if offset != 0 || size != h.size {
            return Err(DeviceError::new(
                call,
                DeviceErrorKind::NotSupported,
                801,
                alloc::format!("map of {size} bytes at offset {offset} of a {}-byte handle: only whole handles map", h.size),
            ));
        }
        h.mappings += 1;
        self.mappings.insert(
            addr,
            SimMapping {
                size,
                handle: handle.0,
                access: false,
            },
        );
        Ok(())
    }

    fn unmap(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::Unmap;
        self.enter(call)?;
        let keys = self.tiling(addr, size).ok_or_else(|| {
            Self::invalid(
                call,
                alloc::format!("{addr:#x}+{size} is not covered by whole mappings"),
            )
        })?;
        for k in &keys {
            let size = self.mappings.get(k).map_or(0, |m| m.size);
            self.charge(DriverCall::Unmap, self.costs.unmap_per_handle.at(size));
        }
        for k in keys {
            if let Some(m) = self.mappings.remove(&k) {
                if let Some(h) = self.handles.get_mut(&m.handle) {
                    h.mappings -= 1;
                }
            }
        }
        Ok(())
    }

    fn set_access(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::SetAccess;
        self.enter(call)?;
        let keys = self.tiling(addr, size).ok_or_else(|| {
            Self::invalid(call, alloc::format!("{addr:#x}+{size} is not fully mapped"))
        })?;
        for k in &keys {
            let size = self.mappings.get(k).map_or(0, |m| m.size);
            self.charge(call, self.costs.set_access_per_handle.at(size));
        }
        for k in keys {
            if let Some(m) = self.mappings.get_mut(&k) {
                m.access = true;
            }
        }
        Ok(())
    }

    fn create_event(&mut self) -> DeviceResult<EventHandle> {
        self.enter(DriverCall::CreateEvent)?;
        self.charge(DriverCall::CreateEvent, self.costs.event[0]);
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, SimEvent::default());
        Ok(EventHandle(id))
    }

    fn destroy_event(&mut self, event: EventHandle) -> DeviceResult<()> {
        let call = DriverCall::DestroyEvent;
        self.enter(call)?;
        self.charge(DriverCall::DestroyEvent, self.costs.event[1]);
        self.events
            .remove(&event.0)
            .map(|_| ())
            .ok_or_else(|| Self::invalid(call, alloc::format!("unknown event {}", event.0)))
    }

    fn record_event(&mut self, event: EventHandle, _stream: StreamHandle) -> DeviceResult<()> {
        let call = DriverCall::RecordEvent;
        self.enter(call)?;
        self.charge(DriverCall::RecordEvent, self.costs.event[2]);
        let latency = self.event_latency;
        let e = self
            .events
            .get_mut(&event.0)
            .ok_or_else(|| Self::invalid(call, alloc::format!("unknown event {}", event.0)))?;
        e.recorded = true;
        e.queries_left = latency;
        Ok(())
    }

    fn query_event(&mut self, event: EventHandle) -> DeviceResult<bool> {
        let call = DriverCall::QueryEvent;
        self.enter(call)?;
        self.charge(DriverCall::QueryEvent, self.costs.event[3]);
        let e = self
            .events
            .get_mut(&event.0)
            .ok_or_else(|| Self::invalid(call, alloc::format!("unknown event {}", event.0)))?;
        if e.queries_left > 0 {
            e.queries_left -= 1;
            return Ok(false);
        }
        Ok(true)
    }

    fn synchronize_stream(&mut self, _stream: StreamHandle) -> DeviceResult<()> {
        self.enter(DriverCall::SynchronizeStream)?;
        self.charge(DriverCall::SynchronizeStream, self.costs.synchronize);
        // The simulator does not track which stream an event was recorded on: complete them all,
        // which is what a synchronization of the stream they were recorded on would do.
        for e in self.events.values_mut() {
            e.queries_left = 0;
        }
        Ok(())
    }

    fn synchronize_device(&mut self) -> DeviceResult<()> {
        self.enter(DriverCall::SynchronizeDevice)?;
        self.charge(DriverCall::SynchronizeDevice, self.costs.synchronize);
        for e in self.events.values_mut() {
            e.queries_left = 0;
        }
        Ok(())
    }

    fn books(&self) -> Option<DeviceBooks> {
        let h = self.holdings();
        Some(DeviceBooks {
            handles: h.handles,
            handle_bytes: h.handle_bytes,
            peak_handle_bytes: self.peak_used,
            ranges: h.ranges,
            mappings: h.mappings,
            events: h.events,
            driver_us: self.estimated_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 2 * MIB;

    #[test]
    fn refuses_impossible_calls() {
        let mut d = SimulatedDevice::new(8 * G);
        let h = d.create_handle(2 * G).unwrap();
        assert_eq!(
            d.create_handle(G + 1).unwrap_err().kind,
            DeviceErrorKind::InvalidValue
        );
        assert_eq!(
            d.create_handle(7 * G).unwrap_err().kind,
            DeviceErrorKind::OutOfMemory
        );
        let va = d.reserve_range(4 * G).unwrap();
        d.map(va, 2 * G, h, 0).unwrap();
        // Mapping over a mapping, past the handle, outside a range.
        assert!(d.map(va + G, G, h, 0).is_err());
        assert!(d.map(va + 2 * G, 2 * G, h, G).is_err());
        // Only whole handles map, as with the CUDA driver.
        assert_eq!(
            d.map(va + 2 * G, G, h, 0).unwrap_err().kind,
            DeviceErrorKind::NotSupported
        );
        assert!(d.map(va + 8 * G, G, h, 0).is_err());
        // Releasing a mapped handle, freeing a range with mappings, partial unmap.
        assert!(d.release_handle(h).is_err());
        assert!(d.free_range(va, 4 * G).is_err());
        assert!(d.unmap(va, G).is_err());
        d.set_access(va, 2 * G).unwrap();
        assert!(d.set_access(va, 3 * G).is_err());
        d.unmap(va, 2 * G).unwrap();
        d.release_handle(h).unwrap();
        d.free_range(va, 4 * G).unwrap();
        assert_eq!(d.holdings(), SimHoldings::default());
    }

    #[test]
    fn one_unmap_may_cover_several_mappings_and_costs_per_handle() {
        let mut d = SimulatedDevice::new(8 * G);
        let a = d.create_handle(G).unwrap();
        let b = d.create_handle(G).unwrap();
        let va = d.reserve_range(2 * G).unwrap();
        d.map(va, G, a, 0).unwrap();
        d.map(va + G, G, b, 0).unwrap();
        let before = d.estimated_us();
        d.unmap(va, 2 * G).unwrap();
        let per_handle = d.costs().unmap_per_handle.at(G);
        assert!((d.estimated_us() - before - 2.0 * per_handle).abs() < 1e-9);
        assert_eq!(d.holdings().mappings, 0);
    }

    #[test]
    fn access_is_granted_per_mapping_and_lost_at_unmap() {
        let mut d = SimulatedDevice::new(8 * G);
        let a = d.create_handle(G).unwrap();
        let b = d.create_handle(G).unwrap();
        let va = d.reserve_range(4 * G).unwrap();
        d.map(va, G, a, 0).unwrap();
        d.map(va + G, G, b, 0).unwrap();
        assert!(!d.accessible(va, 1));
        d.set_access(va + G, G).unwrap();
        assert!(d.accessible(va + G, G));
        assert!(
            !d.accessible(va, 2 * G),
            "the first mapping has no access yet"
        );
        d.set_access(va, G).unwrap();
        assert!(d.accessible(va + 100, 2 * G - 100));
        assert!(!d.accessible(va + G, 2 * G), "past the mappings");
        let sa = d.estimated_us_of(DriverCall::SetAccess);
        assert!((sa - 2.0 * d.costs().set_access_per_handle.at(G)).abs() < 1e-9);
        d.unmap(va, 2 * G).unwrap();
        d.map(va, G, a, 0).unwrap();
        assert!(!d.accessible(va, G), "a new mapping starts without access");
    }

    #[test]
    fn injected_faults_fail_once_and_change_nothing() {
        let mut d = SimulatedDevice::new(8 * G);
        d.inject_fault(DriverCall::CreateHandle, 2);
        d.create_handle(G).unwrap();
        assert_eq!(d.create_handle(G).unwrap_err().kind, DeviceErrorKind::Other);
        assert_eq!(d.holdings().handles, 1);
        d.create_handle(G).unwrap();
        assert_eq!(d.calls().get(DriverCall::CreateHandle), 3);
    }

    #[test]
    fn events_complete_after_latency_or_sync() {
        let mut d = SimulatedDevice::new(G);
        d.set_event_latency(2);
        let e = d.create_event().unwrap();
        d.record_event(e, StreamHandle(7)).unwrap();
        assert!(!d.query_event(e).unwrap());
        d.synchronize_device().unwrap();
        assert!(d.query_event(e).unwrap());
    }

    #[test]
    fn size_curves_interpolate_in_log_size() {
        let c = CostTable::default();
        assert!((c.native_malloc.at(2 * MIB) - 48.3).abs() < 1e-9);
        assert!((c.native_malloc.at(1 << 30) - 98.9).abs() < 1e-9);
        let mid = c.native_malloc.at(1536 * MIB);
        assert!(mid > 98.9 && mid < 147.1);
        // Above the last point, along the last slope.
        assert!(c.native_malloc.at(14 << 30) > 278.1);
        assert!((c.native_malloc.at(4096) - 48.3).abs() < 1e-9);
    }
}
