//! Helpers for the GPU checks (`scripts/gpu-check.sh`) and benchmarks: fill, copy and read device
//! memory, and create streams. Not needed to allocate.
//!
//! Each function makes `vmm`'s primary context current first. Errors name the driver call.

use crate::errors::cuda_error;
use crate::{CudaError, CudaVmm};
use cudarc::driver::result::{self, stream::StreamKind, DriverError};
use cudarc::driver::sys;
use gmlake_core::StreamHandle;

/// Makes `vmm`'s context current and makes the driver call `f`, named `call`, described by
/// `detail` if it fails.
fn driver<T>(
    vmm: &mut CudaVmm,
    call: &'static str,
    detail: impl FnOnce() -> String,
    f: impl FnOnce() -> Result<T, DriverError>,
) -> Result<T, CudaError> {
    vmm.mem_info()?;
    f().map_err(cuda_error(call, detail))
}

/// Copies `data` to device address `dst` (synchronous `cuMemcpyHtoD`).
///
/// # Errors
/// On driver failure (an unmapped address among them).
pub fn write(vmm: &mut CudaVmm, dst: u64, data: &[u8]) -> Result<(), CudaError> {
    let detail = || format!("{} bytes to {dst:#x}", data.len());
    // SAFETY: `data` is a live slice; the driver checks `dst`.
    driver(vmm, "cuMemcpyHtoD", detail, || unsafe {
        result::memcpy_htod_sync(dst, data)
    })
}

/// Reads `len` bytes from device address `src` (synchronous `cuMemcpyDtoH`).
///
/// # Errors
/// On driver failure.
pub fn read(vmm: &mut CudaVmm, src: u64, len: usize) -> Result<Vec<u8>, CudaError> {
    let mut out = vec![0u8; len];
    let detail = || format!("{len} bytes from {src:#x}");
    // SAFETY: `out` is a live slice of `len` bytes; the driver checks `src`.
    driver(vmm, "cuMemcpyDtoH", detail, || unsafe {
        result::memcpy_dtoh_sync(&mut out, src)
    })?;
    Ok(out)
}

/// Fills `len` bytes at `dst` with `byte`, ordered on `stream` (`cuMemsetD8Async`).
///
/// # Errors
/// On driver failure.
pub fn fill_async(
    vmm: &mut CudaVmm,
    dst: u64,
    byte: u8,
    len: usize,
    stream: StreamHandle,
) -> Result<(), CudaError> {
    let detail = || format!("{len} bytes at {dst:#x}");
    // SAFETY: the driver checks the address; the stream is the caller's.
    driver(vmm, "cuMemsetD8Async", detail, || unsafe {
        result::memset_d8_async(dst, byte, len, stream.0 as sys::CUstream)
    })
}

/// Copies `len` bytes from `src` to `dst` on the device, ordered on `stream` (`cuMemcpyDtoDAsync`).
///
/// # Errors
/// On driver failure.
pub fn copy_async(
    vmm: &mut CudaVmm,
    dst: u64,
    src: u64,
    len: usize,
    stream: StreamHandle,
) -> Result<(), CudaError> {
    let detail = || format!("{len} bytes {src:#x} -> {dst:#x}");
    // SAFETY: the driver checks the addresses; the stream is the caller's.
    driver(vmm, "cuMemcpyDtoDAsync", detail, || unsafe {
        result::memcpy_dtod_async(dst, src, len, stream.0 as sys::CUstream)
    })
}

/// Creates a stream that does not synchronize with the legacy default stream
/// (`CU_STREAM_NON_BLOCKING`). Destroy it with [`destroy_stream`].
///
/// # Errors
/// On driver failure.
pub fn create_stream(vmm: &mut CudaVmm) -> Result<StreamHandle, CudaError> {
    let s = driver(vmm, "cuStreamCreate", String::new, || {
        result::stream::create(StreamKind::NonBlocking)
    })?;
    Ok(StreamHandle(s as u64))
}

/// Destroys a stream made by [`create_stream`].
///
/// # Errors
/// On driver failure.
pub fn destroy_stream(vmm: &mut CudaVmm, stream: StreamHandle) -> Result<(), CudaError> {
    let detail = || format!("{:#x}", stream.0);
    // SAFETY: the stream came from `create_stream`.
    driver(vmm, "cuStreamDestroy", detail, || unsafe {
        result::stream::destroy(stream.0 as sys::CUstream)
    })
}

/// Waits for all work on `stream`.
///
/// # Errors
/// On driver failure.
pub fn sync_stream(vmm: &mut CudaVmm, stream: StreamHandle) -> Result<(), CudaError> {
    let detail = || format!("{:#x}", stream.0);
    // SAFETY: the stream is the caller's.
    driver(vmm, "cuStreamSynchronize", detail, || unsafe {
        result::stream::synchronize(stream.0 as sys::CUstream)
    })
}
