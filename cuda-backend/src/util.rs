//! Helpers for the GPU checks (`scripts/gpu-check.sh`) and benchmarks: fill, copy and read device
//! memory, and create streams. Not needed to allocate.
//!
//! Each function makes `vmm`'s primary context current first. Errors name the driver call.

use crate::raw::check_call;
use crate::{CudaError, CudaVmm};
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
    // SAFETY: `data` is a live slice of `data.len()` bytes; the driver checks `dst`.
    let r = unsafe { sys::cuMemcpyHtoD_v2(dst, data.as_ptr().cast(), data.len()) };
    check_call(r, "cuMemcpyHtoD", || {
        format!("{} bytes to {dst:#x}", data.len())
    })
}

/// Reads `len` bytes from device address `src` (synchronous `cuMemcpyDtoH`).
///
/// # Errors
/// On driver failure.
pub fn read(vmm: &mut CudaVmm, src: u64, len: usize) -> Result<Vec<u8>, CudaError> {
    bind(vmm)?;
    let mut out = vec![0u8; len];
    // SAFETY: `out` has room for `len` bytes; the driver checks `src`.
    let r = unsafe { sys::cuMemcpyDtoH_v2(out.as_mut_ptr().cast(), src, len) };
    check_call(r, "cuMemcpyDtoH", || format!("{len} bytes from {src:#x}"))?;
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
    let r = unsafe { sys::cuMemsetD8Async(dst, byte, len, stream.0 as sys::CUstream) };
    check_call(r, "cuMemsetD8Async", || format!("{len} bytes at {dst:#x}"))
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
    let r = unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, len, stream.0 as sys::CUstream) };
    check_call(r, "cuMemcpyDtoDAsync", || {
        format!("{len} bytes {src:#x} -> {dst:#x}")
    })
}

/// Creates a stream that does not synchronize with the legacy default stream
/// (`CU_STREAM_NON_BLOCKING`). Destroy it with [`destroy_stream`].
///
/// # Errors
/// On driver failure.
pub fn create_stream(vmm: &mut CudaVmm) -> Result<StreamHandle, CudaError> {
    bind(vmm)?;
    let mut s = std::ptr::null_mut();
    // SAFETY: out-pointer to a live local.
    let r =
        unsafe { sys::cuStreamCreate(&mut s, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32) };
    check_call(r, "cuStreamCreate", String::new)?;
    Ok(StreamHandle(s as u64))
}

/// Destroys a stream made by [`create_stream`].
///
/// # Errors
/// On driver failure.
pub fn destroy_stream(vmm: &mut CudaVmm, stream: StreamHandle) -> Result<(), CudaError> {
    bind(vmm)?;
    // SAFETY: the stream came from `create_stream`.
    let r = unsafe { sys::cuStreamDestroy_v2(stream.0 as sys::CUstream) };
    check_call(r, "cuStreamDestroy", || format!("{:#x}", stream.0))
}

/// Waits for all work on `stream`.
///
/// # Errors
/// On driver failure.
pub fn sync_stream(vmm: &mut CudaVmm, stream: StreamHandle) -> Result<(), CudaError> {
    bind(vmm)?;
    // SAFETY: the stream is the caller's.
    let r = unsafe { sys::cuStreamSynchronize(stream.0 as sys::CUstream) };
    check_call(r, "cuStreamSynchronize", || format!("{:#x}", stream.0))
}
