//! A device wrapper that adds what the fuzzer needs from any backend: failing a chosen upcoming call
//! of a chosen kind, and a capacity that can be changed between operations (a driver that runs out of
//! memory). Everything else is passed through to the wrapped device.

use gmlake_core::{
    device::{DeviceBooks, DeviceResult},
    Device, DeviceError, DeviceErrorKind, DriverCall, EventHandle, PhysHandle, StreamHandle,
};

/// A device that fails injected calls and enforces a capacity, over any other [`Device`].
///
/// Not thread-safe beyond what [`Device`] requires (`Send`); the fuzzer drives it from one thread.
#[derive(Debug)]
pub struct FaultyDevice<D: Device> {
    inner: D,
    /// Pending faults: (call kind, how many more calls of that kind succeed before one fails).
    faults: Vec<(DriverCall, u32)>,
    capacity: u64,
    injected: u64,
}

impl<D: Device> FaultyDevice<D> {
    /// Wraps `inner`; the capacity starts at `capacity` bytes.
    pub fn new(inner: D, capacity: u64) -> Self {
        FaultyDevice {
            inner,
            faults: Vec::new(),
            capacity,
            injected: 0,
        }
    }

    /// Makes the call of kind `call` that comes after `skip` more successful calls of that kind fail
    /// with `DeviceErrorKind::Other` (an `OutOfMemory` failure for `CreateHandle`, which the allocator
    /// answers by releasing cache and retrying).
    pub fn inject(&mut self, call: DriverCall, skip: u32) {
        self.faults.push((call, skip));
    }

    /// Sets the capacity in bytes; handles already held stay held.
    pub fn set_capacity(&mut self, capacity: u64) {
        self.capacity = capacity;
    }

    /// Drops the faults that have not fired yet.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Faults that have fired so far.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably (for backend-specific calls such as reading the driver's free
    /// memory); calls made through it bypass the injected faults.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Bytes of live physical handles, as the wrapped device counts them (0 for a device that
    /// keeps no books, which then never runs out of the fuzzer's capacity).
    fn handle_bytes(&self) -> u64 {
        self.inner.books().map_or(0, |b| b.handle_bytes)
    }

    fn gate(&mut self, call: DriverCall) -> DeviceResult<()> {
        let mut fire = false;
        self.faults.retain_mut(|(kind, skip)| {
            if *kind != call || fire {
                return true;
            }
            if *skip == 0 {
                fire = true;
                false
            } else {
                *skip -= 1;
                true
            }
        });
        if !fire {
            return Ok(());
        }
        self.injected += 1;
        if std::env::var_os("GMLAKE_FUZZ_TRACE").is_some() {
            eprintln!("fault fired: {call:?}");
        }
        let kind = if call == DriverCall::CreateHandle {
            DeviceErrorKind::OutOfMemory
        } else {
            DeviceErrorKind::Other
        };
        Err(DeviceError::new(call, kind, -1, "injected by the fuzzer"))
    }
}

impl<D: Device> Device for FaultyDevice<D> {
    fn granularity(&self) -> u64 {
        self.inner.granularity()
    }
    fn total_memory(&self) -> u64 {
        self.capacity
    }
    fn free_memory(&mut self) -> Option<u64> {
        Some(self.capacity.saturating_sub(self.handle_bytes()))
    }
    fn create_handle(&mut self, size: u64) -> DeviceResult<PhysHandle> {
        self.gate(DriverCall::CreateHandle)?;
        if self.handle_bytes().saturating_add(size) > self.capacity {
            return Err(DeviceError::new(
                DriverCall::CreateHandle,
                DeviceErrorKind::OutOfMemory,
                2,
                format!("{size} bytes over the fuzzer's capacity"),
            ));
        }
        self.inner.create_handle(size)
    }
    fn peers(&self) -> Vec<u32> {
        self.inner.peers()
    }
    fn create_peer_handle(&mut self, peer: u32, size: u64) -> DeviceResult<PhysHandle> {
        self.gate(DriverCall::CreateHandle)?;
        self.inner.create_peer_handle(peer, size)
    }
    fn release_handle(&mut self, handle: PhysHandle) -> DeviceResult<()> {
        self.gate(DriverCall::ReleaseHandle)?;
        self.inner.release_handle(handle)
    }
    fn reserve_range(&mut self, size: u64) -> DeviceResult<u64> {
        self.gate(DriverCall::ReserveRange)?;
        self.inner.reserve_range(size)
    }
    fn free_range(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.gate(DriverCall::FreeRange)?;
        self.inner.free_range(addr, size)
    }
    fn map(&mut self, addr: u64, size: u64, handle: PhysHandle, offset: u64) -> DeviceResult<()> {
        self.gate(DriverCall::Map)?;
        self.inner.map(addr, size, handle, offset)
    }
    fn unmap(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.gate(DriverCall::Unmap)?;
        self.inner.unmap(addr, size)
    }
    fn set_access(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.gate(DriverCall::SetAccess)?;
        self.inner.set_access(addr, size)
    }
    fn create_event(&mut self) -> DeviceResult<EventHandle> {
        self.gate(DriverCall::CreateEvent)?;
        self.inner.create_event()
    }
    fn destroy_event(&mut self, event: EventHandle) -> DeviceResult<()> {
        self.gate(DriverCall::DestroyEvent)?;
        self.inner.destroy_event(event)
    }
    fn record_event(&mut self, event: EventHandle, stream: StreamHandle) -> DeviceResult<()> {
        self.gate(DriverCall::RecordEvent)?;
        self.inner.record_event(event, stream)
    }
    fn query_event(&mut self, event: EventHandle) -> DeviceResult<bool> {
        self.gate(DriverCall::QueryEvent)?;
        self.inner.query_event(event)
    }
    fn synchronize_stream(&mut self, stream: StreamHandle) -> DeviceResult<()> {
        self.gate(DriverCall::SynchronizeStream)?;
        self.inner.synchronize_stream(stream)
    }
    fn synchronize_device(&mut self) -> DeviceResult<()> {
        self.gate(DriverCall::SynchronizeDevice)?;
        self.inner.synchronize_device()
    }
    fn export_handle(&mut self, handle: PhysHandle) -> DeviceResult<i64> {
        self.gate(DriverCall::ExportHandle)?;
        self.inner.export_handle(handle)
    }
    fn books(&self) -> Option<DeviceBooks> {
        self.inner.books()
    }
}
