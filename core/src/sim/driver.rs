//! The simulated device's driver calls: each checks what the CUDA driver would refuse, charges
//! its cost, and keeps the books.

use super::{SimEvent, SimHandle, SimMapping, SimulatedDevice};
use crate::device::{
    Device, DeviceBooks, DeviceError, DeviceErrorKind, DeviceResult, DriverCall, EventHandle,
    PhysHandle, StreamHandle,
};

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

    fn native_malloc_us(&self, bytes: u64) -> Option<f64> {
        Some(self.costs.native_malloc.at(bytes))
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
