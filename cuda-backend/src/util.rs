//! Helpers for the GPU checks (`scripts/gpu-check.sh`) and benchmarks: fill, copy and read device
//! memory, and create streams. Not needed to allocate.
//!
//! Each function makes `vmm`'s primary context current first. Errors name the driver call.

use crate::errors::cuda_error;
use crate::{CudaError, CudaVmm};
use cudarc::driver::result::{self, stream::StreamKind};
use cudarc::driver::sys;
use gmlake_core::StreamHandle;

fn bind(vmm: &mut CudaVmm) -> Result<(), CudaError> {
    vmm.mem_info().map(|_| ())
}

/// Copies `data` to device address `dst` (synchronous `cuMemcpyHtoD`).
///
/// # Errors
/// On driver failure (an unmapped address among them).
pub fn write(vmm: &mut CudaVmm, dst: u64, data: &[u8]) -> Result<(), CudaError> {
    bind(vmm)?;
    // SAFETY: `data` is a live slice; the driver checks `dst`.
    unsafe { result::memcpy_htod_sync(dst, data) }.map_err(cuda_error("cuMemcpyHtoD", || {
        format!("{} bytes to {dst:#x}", data.len())
    }))
}

/// Reads `len` bytes from device address `src` (synchronous `cuMemcpyDtoH`).
///
/// # Errors
/// On driver failure.
pub fn read(vmm: &mut CudaVmm, src: u64, len: usize) -> Result<Vec<u8>, CudaError> {
    bind(vmm)?;
    let mut out = vec![0u8; len];
    // SAFETY: `out` is a live slice of `len` bytes; the driver checks `src`.
    unsafe { result::memcpy_dtoh_sync(&mut out, src) }
        .map_err(cuda_error("cuMemcpyDtoH", || {
            format!("{len} bytes from {src:#x}")
        }))?;
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
    bind(vmm)?;
    // SAFETY: the driver checks the address; the stream is the caller's.
    unsafe { result::memset_d8_async(dst, byte, len, stream.0 as sys::CUstream) }.map_err(
        cuda_error("cuMemsetD8Async", || format!("{len} bytes at {dst:#x}")),
    )
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
    bind(vmm)?;
    // SAFETY: the driver checks the addresses; the stream is the caller's.
    unsafe { result::memcpy_dtod_async(dst, src, len, stream.0 as sys::CUstream) }.map_err(
        cuda_error("cuMemcpyDtoDAsync", || {
            format!("{len} bytes {src:#x} -> {dst:#x}")
        }),
    )
}

/// Creates a stream that does not synchronize with the legacy default stream
/// (`CU_STREAM_NON_BLOCKING`). Destroy it with [`destroy_stream`].
///
/// # Errors
/// On driver failure.
pub fn create_stream(vmm: &mut CudaVmm) -> Result<StreamHandle, CudaError> {
    bind(vmm)?;
    let s = result::stream::create(StreamKind::NonBlocking)
        .map_err(cuda_error("cuStreamCreate", String::new))?;
    Ok(StreamHandle(s as u64))
}

/// Destroys a stream made by [`create_stream`].
///
/// # Errors
/// On driver failure.
pub fn destroy_stream(vmm: &mut CudaVmm, stream: StreamHandle) -> Result<(), CudaError> {
    bind(vmm)?;
    // SAFETY: the stream came from `create_stream`.
    unsafe { result::stream::destroy(stream.0 as sys::CUstream) }
        .map_err(cuda_error("cuStreamDestroy", || format!("{:#x}", stream.0)))
}

/// Waits for all work on `stream`.
///
/// # Errors
/// On driver failure.
pub fn sync_stream(vmm: &mut CudaVmm, stream: StreamHandle) -> Result<(), CudaError> {
    bind(vmm)?;
    // SAFETY: the stream is the caller's.
    unsafe { result::stream::synchronize(stream.0 as sys::CUstream) }
        .map_err(cuda_error("cuStreamSynchronize", || {
            format!("{:#x}", stream.0)
        }))
}
