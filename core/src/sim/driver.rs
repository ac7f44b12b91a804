//! The simulated device's driver calls: each fails if a fault is due, charges its cost from the
//! H200 cost model, and is checked and booked by the device's [`crate::ledger::Ledger`], which
//! refuses what the CUDA driver refuses.

use super::{SimEvent, SimulatedDevice};
use crate::device::{
    Device, DeviceBooks, DeviceError, DeviceErrorKind, DeviceResult, DriverCall, EventHandle,
    PhysHandle, StreamHandle,
};
use alloc::vec::Vec;

impl SimulatedDevice {
    fn invalid(call: DriverCall, what: alloc::string::String) -> DeviceError {
        DeviceError::new(call, DeviceErrorKind::InvalidValue, 1, what)
    }

    /// A call over whole mappings (unmap, access): fails if a fault is due or the range is not
    /// whole mappings, else charges each mapping the per-handle cost by its size and returns the
    /// mappings' starts.
    fn over_mappings(&mut self, call: DriverCall, addr: u64, size: u64) -> DeviceResult<Vec<u64>> {
        self.enter(call)?;
        let keys = self.ledger.check_tiled(call, addr, size)?;
        let curve = match call {
            DriverCall::SetAccess => &self.costs.set_access_per_handle,
            _ => &self.costs.unmap_per_handle,
        };
        let costs: Vec<f64> = self
            .ledger
            .mapping_sizes(&keys)
            .map(|s| curve.at(s))
            .collect();
        // One at a time, in address order, so that the sum is the same to the last bit whatever
        // the grouping of mappings into calls.
        for us in costs {
            self.charge(call, us);
        }
        Ok(keys)
    }
}

impl Device for SimulatedDevice {
    fn granularity(&self) -> u64 {
        self.ledger.granularity()
    }

    fn total_memory(&self) -> u64 {
        match self.fabric() {
            Some(f) => f.capacity(self.member.as_ref().map_or(0, |m| m.id)),
            None => self.ledger.capacity().unwrap_or(0),
        }
    }

    fn free_memory(&mut self) -> Option<u64> {
        let used = match &self.member {
            Some(m) => m.fabric.used(m.id),
            None => self.ledger.used(),
        };
        Some(self.total_memory().saturating_sub(used))
    }

    fn create_handle(&mut self, size: u64) -> DeviceResult<PhysHandle> {
        self.create_in(None, size)
    }

    fn peers(&self) -> Vec<u32> {
        self.peer_ids()
    }

    fn create_peer_handle(&mut self, peer: u32, size: u64) -> DeviceResult<PhysHandle> {
        if !self.peer_ids().contains(&peer) {
            return Err(Self::invalid(
                DriverCall::CreateHandle,
                alloc::format!("device {peer} is not a peer of this device"),
            ));
        }
        self.create_in(Some(peer), size)
    }

    fn release_handle(&mut self, handle: PhysHandle) -> DeviceResult<()> {
        self.enter(DriverCall::ReleaseHandle)?;
        if let Some(size) = self.ledger.handle_size(handle.0) {
            self.charge(
                DriverCall::ReleaseHandle,
                self.costs.release_handle.at(size),
            );
        }
        let size = self.ledger.check_release(handle.0)?;
        self.ledger.remove_handle(handle.0);
        self.give_room(handle.0, size);
        Ok(())
    }

    fn reserve_range(&mut self, size: u64) -> DeviceResult<u64> {
        let call = DriverCall::ReserveRange;
        self.enter(call)?;
        self.charge(call, self.costs.reserve_range);
        self.ledger.check_reserve(size)?;
        let va = self.next_va;
        // Leave one granule between ranges so that no two ranges are adjacent by accident.
        self.next_va = va.checked_add(size + self.granularity()).ok_or_else(|| {
            DeviceError::new(
                call,
                DeviceErrorKind::OutOfMemory,
                2,
                "address space exhausted",
            )
        })?;
        self.ledger.add_range(va, size);
        Ok(va)
    }

    fn free_range(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.enter(DriverCall::FreeRange)?;
        self.charge(DriverCall::FreeRange, self.costs.free_range);
        self.ledger.check_free_range(addr, size)?;
        self.ledger.remove_range(addr);
        Ok(())
    }

    fn map(&mut self, addr: u64, size: u64, handle: PhysHandle, offset: u64) -> DeviceResult<()> {
        self.enter(DriverCall::Map)?;
        self.charge(DriverCall::Map, self.costs.map);
        self.ledger.check_map(addr, size, handle.0, offset)?;
        self.ledger.add_mapping(addr, size, handle.0);
        Ok(())
    }

    fn unmap(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let keys = self.over_mappings(DriverCall::Unmap, addr, size)?;
        self.ledger.remove_mappings(&keys);
        Ok(())
    }

    fn set_access(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let keys = self.over_mappings(DriverCall::SetAccess, addr, size)?;
        self.ledger.grant_access(&keys);
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

    /// The simulated device names a live handle by its id (nothing leaves the process).
    fn export_handle(&mut self, handle: PhysHandle) -> DeviceResult<i64> {
        let call = DriverCall::ExportHandle;
        self.enter(call)?;
        match self.ledger.handle_size(handle.0) {
            Some(_) => Ok(handle.0 as i64),
            None => Err(Self::invalid(
                call,
                alloc::format!("unknown handle {:#x}", handle.0),
            )),
        }
    }

    fn native_malloc_us(&self, bytes: u64) -> Option<f64> {
        Some(self.costs.native_malloc.at(bytes))
    }

    fn books(&self) -> Option<DeviceBooks> {
        Some(DeviceBooks {
            events: self.events.len() as u64,
            ..self.ledger.books(self.estimated_us)
        })
    }
}
