//! The devices a C caller can choose: the CUDA backend, host memory, or the simulated device.

use gmlake_core::device::{DeviceBooks, DeviceResult};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Device, EventHandle, PhysHandle, StreamHandle};
use gmlake_cuda::CudaVmm;
use gmlake_host::HostDevice;

/// Either backend, behind one type so that one allocator type serves both.
// One per allocator, so the size of its largest variant does not matter; boxing would add an
// indirection to every driver call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyDevice {
    /// A CUDA GPU.
    Cuda(CudaVmm),
    /// Host memory (memory files mapped like a GPU's physical handles; its addresses are real).
    Host(HostDevice),
    /// The simulated device (host bookkeeping only; its addresses hold no memory).
    Simulated(SimulatedDevice),
}

macro_rules! both {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            AnyDevice::Cuda($d) => $e,
            AnyDevice::Host($d) => $e,
            AnyDevice::Simulated($d) => $e,
        }
    };
}

impl Device for AnyDevice {
    fn granularity(&self) -> u64 {
        both!(self, d => d.granularity())
    }
    fn total_memory(&self) -> u64 {
        both!(self, d => d.total_memory())
    }
    fn free_memory(&mut self) -> Option<u64> {
        both!(self, d => d.free_memory())
    }
    fn create_handle(&mut self, size: u64) -> DeviceResult<PhysHandle> {
        both!(self, d => d.create_handle(size))
    }
    fn release_handle(&mut self, handle: PhysHandle) -> DeviceResult<()> {
        both!(self, d => d.release_handle(handle))
    }
    fn reserve_range(&mut self, size: u64) -> DeviceResult<u64> {
        both!(self, d => d.reserve_range(size))
    }
    fn free_range(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        both!(self, d => d.free_range(addr, size))
    }
    fn map(&mut self, addr: u64, size: u64, handle: PhysHandle, offset: u64) -> DeviceResult<()> {
        both!(self, d => d.map(addr, size, handle, offset))
    }
    fn unmap(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        both!(self, d => d.unmap(addr, size))
    }
    fn set_access(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        both!(self, d => d.set_access(addr, size))
    }
    fn create_event(&mut self) -> DeviceResult<EventHandle> {
        both!(self, d => d.create_event())
    }
    fn destroy_event(&mut self, event: EventHandle) -> DeviceResult<()> {
        both!(self, d => d.destroy_event(event))
    }
    fn record_event(&mut self, event: EventHandle, stream: StreamHandle) -> DeviceResult<()> {
        both!(self, d => d.record_event(event, stream))
    }
    fn query_event(&mut self, event: EventHandle) -> DeviceResult<bool> {
        both!(self, d => d.query_event(event))
    }
    fn synchronize_stream(&mut self, stream: StreamHandle) -> DeviceResult<()> {
        both!(self, d => d.synchronize_stream(stream))
    }
    fn synchronize_device(&mut self) -> DeviceResult<()> {
        both!(self, d => d.synchronize_device())
    }
    fn export_handle(&mut self, handle: PhysHandle) -> DeviceResult<i64> {
        both!(self, d => d.export_handle(handle))
    }
    fn native_malloc_us(&self, bytes: u64) -> Option<f64> {
        both!(self, d => d.native_malloc_us(bytes))
    }
    fn books(&self) -> Option<DeviceBooks> {
        both!(self, d => d.books())
    }
}
