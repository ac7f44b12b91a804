//! Thin wrappers of the driver's virtual memory management calls, which cudarc's `result` layer
//! does not cover, written as that layer is: one function per driver call, returning the
//! `CUresult` as a [`DriverError`], and nothing else (no bookkeeping, no error conversion; see
//! `errors.rs` and `device.rs`). Every other driver call of this crate goes through
//! `cudarc::driver::result` itself.

use cudarc::driver::result::DriverError;
use cudarc::driver::sys;
use std::mem::MaybeUninit;

/// `cuMemCreate`: a physical allocation of `size` bytes with the properties `prop`.
///
/// # Safety
/// The driver library is loaded and a context is current; `size` is a multiple of the
/// granularity for `prop`.
pub unsafe fn create(
    size: usize,
    prop: &sys::CUmemAllocationProp,
) -> Result<sys::CUmemGenericAllocationHandle, DriverError> {
    let mut h = MaybeUninit::uninit();
    sys::cuMemCreate(h.as_mut_ptr(), size, prop, 0).result()?;
    Ok(h.assume_init())
}

/// `cuDeviceCanAccessPeer`: whether `dev` can access memory of `peer`.
///
/// # Safety
/// The driver library is loaded and initialized; both are valid devices.
pub unsafe fn can_access_peer(
    dev: sys::CUdevice,
    peer: sys::CUdevice,
) -> Result<bool, DriverError> {
    let mut v = MaybeUninit::uninit();
    sys::cuDeviceCanAccessPeer(v.as_mut_ptr(), dev, peer).result()?;
    Ok(v.assume_init() != 0)
}

/// `cuMemRelease`.
///
/// # Safety
/// `handle` came from [`create`] and is released once.
pub unsafe fn release(handle: sys::CUmemGenericAllocationHandle) -> Result<(), DriverError> {
    sys::cuMemRelease(handle).result()
}

/// `cuMemAddressReserve` of `size` bytes aligned to `alignment`, anywhere.
///
/// # Safety
/// A context is current.
pub unsafe fn address_reserve(size: usize, alignment: usize) -> Result<u64, DriverError> {
    let mut va = MaybeUninit::uninit();
    sys::cuMemAddressReserve(va.as_mut_ptr(), size, alignment, 0, 0).result()?;
    Ok(va.assume_init())
}

/// `cuMemAddressFree`.
///
/// # Safety
/// The range came from [`address_reserve`] with nothing mapped in it.
pub unsafe fn address_free(va: u64, size: usize) -> Result<(), DriverError> {
    sys::cuMemAddressFree(va, size).result()
}

/// `cuMemMap` of `size` bytes of `handle`, from `offset` into it, at `va`.
///
/// # Safety
/// `va` lies in a reserved range where nothing is mapped; the handle is live.
pub unsafe fn map(
    va: u64,
    size: usize,
    offset: usize,
    handle: sys::CUmemGenericAllocationHandle,
) -> Result<(), DriverError> {
    sys::cuMemMap(va, size, offset, handle, 0).result()
}

/// `cuMemUnmap`.
///
/// # Safety
/// The range covers whole mappings.
pub unsafe fn unmap(va: u64, size: usize) -> Result<(), DriverError> {
    sys::cuMemUnmap(va, size).result()
}

/// `cuMemSetAccess` with one descriptor.
///
/// # Safety
/// The range is mapped.
pub unsafe fn set_access(
    va: u64,
    size: usize,
    desc: &sys::CUmemAccessDesc,
) -> Result<(), DriverError> {
    sys::cuMemSetAccess(va, size, desc, 1).result()
}

/// `cuMemGetAllocationGranularity`.
///
/// # Safety
/// The driver library is loaded and initialized.
pub unsafe fn granularity(
    prop: &sys::CUmemAllocationProp,
    option: sys::CUmemAllocationGranularity_flags,
) -> Result<usize, DriverError> {
    let mut g = MaybeUninit::uninit();
    sys::cuMemGetAllocationGranularity(g.as_mut_ptr(), prop, option).result()?;
    Ok(g.assume_init())
}

/// `cuMemExportToShareableHandle` as a POSIX file descriptor, which the caller owns.
///
/// # Safety
/// `handle` is live and was created with the POSIX file descriptor handle type requested.
pub unsafe fn export_fd(handle: sys::CUmemGenericAllocationHandle) -> Result<i32, DriverError> {
    const FD: sys::CUmemAllocationHandleType =
        sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    let mut fd: i32 = -1;
    sys::cuMemExportToShareableHandle((&mut fd as *mut i32).cast(), handle, FD, 0).result()?;
    Ok(fd)
}

/// `cuMemImportFromShareableHandle` of a POSIX file descriptor (which the caller still owns).
///
/// # Safety
/// A context is current; `fd` is open.
pub unsafe fn import_fd(fd: i32) -> Result<sys::CUmemGenericAllocationHandle, DriverError> {
    const FD: sys::CUmemAllocationHandleType =
        sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    let mut h = MaybeUninit::uninit();
    sys::cuMemImportFromShareableHandle(h.as_mut_ptr(), fd as usize as *mut std::ffi::c_void, FD)
        .result()?;
    Ok(h.assume_init())
}
