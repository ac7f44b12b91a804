//! # gmlake-cuda
//!
//! The CUDA backend of gmlake: [`CudaVmm`] fulfils `gmlake_core::Device` with the driver's virtual
//! memory management calls (`cuMemCreate`, `cuMemAddressReserve`, `cuMemMap`, `cuMemSetAccess`, ...)
//! through `cudarc::driver::sys`. libcuda is loaded at run time: this crate builds with no CUDA
//! installed, and [`CudaVmm::new`] returns [`CudaError::NoDriver`] where no driver is present.
//!
//! ```no_run
//! use gmlake_core::{Allocator, Config, StreamHandle};
//! let dev = gmlake_cuda::CudaVmm::new(0)?;
//! let mut a = Allocator::new(dev, Config::default())?;
//! let p = a.malloc(64 << 20, StreamHandle(0))?; // a device pointer, usable by kernels on stream 0
//! a.free(p)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod device;
mod errors;
mod ipc;
pub mod util;
mod vmm;

pub use device::{CallTimings, CudaVmm};
pub use ipc::ImportedMemory;

/// Why the CUDA backend could not start, or a helper call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    /// No CUDA driver library (`libcuda.so`) could be loaded.
    #[error("no CUDA driver: libcuda.so could not be loaded (gmlake's CUDA backend needs an NVIDIA driver)")]
    NoDriver,
    /// A driver call failed.
    #[error("{call} failed with {result} ({code}): {detail}")]
    Driver {
        /// The driver function.
        call: &'static str,
        /// The `CUresult` name.
        result: String,
        /// The numeric `CUresult`.
        code: i64,
        /// The arguments involved (device, sizes, addresses).
        detail: String,
    },
    /// The device cannot do virtual memory management.
    #[error("device {ordinal} does not support virtual memory management (CU_DEVICE_ATTRIBUTE_VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED is 0)")]
    NoVmm {
        /// The device ordinal.
        ordinal: i32,
    },
}

/// Whether `stream` is capturing a CUDA graph now (`cuStreamIsCapturing`): an allocator must not
/// hand out memory on such a stream unless it keeps it for the graph (a private pool), nor make
/// capture-illegal calls (event queries, synchronization) on it.
///
/// # Errors
/// [`CudaError::NoDriver`] without a driver; [`CudaError::Driver`] if the query failed (a
/// stream of another context, a destroyed stream).
pub fn stream_is_capturing(stream: gmlake_core::StreamHandle) -> Result<bool, CudaError> {
    use cudarc::driver::sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    // SAFETY: the library is present; the driver checks the stream.
    let status = unsafe { cudarc::driver::result::stream::is_capturing(stream.0 as _) }.map_err(
        errors::cuda_error("cuStreamIsCapturing", || format!("stream {:#x}", stream.0)),
    )?;
    Ok(status != CU_STREAM_CAPTURE_STATUS_NONE)
}

/// Whether the CUDA driver library can be loaded in this process. Never panics.
pub fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only tries to dlopen the candidate library names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}
