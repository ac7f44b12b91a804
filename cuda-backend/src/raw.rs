//! Checked calls into the CUDA driver: every failure becomes a [`DeviceError`] naming the call,
//! the `CUresult` and the sizes involved. Nothing here panics; callers must have checked that the
//! driver library is present (`sys::is_culib_present`), since cudarc panics on a missing library.

use crate::CudaError;
use cudarc::driver::sys::{self, CUresult};
use gmlake_core::{DeviceError, DeviceErrorKind, DriverCall};

/// How a failed `CUresult` maps onto the core's error classes.
pub(crate) fn kind_of(r: CUresult) -> DeviceErrorKind {
    use CUresult::*;
    match r {
        CUDA_ERROR_OUT_OF_MEMORY => DeviceErrorKind::OutOfMemory,
        CUDA_ERROR_INVALID_VALUE | CUDA_ERROR_INVALID_HANDLE | CUDA_ERROR_INVALID_DEVICE => {
            DeviceErrorKind::InvalidValue
        }
        CUDA_ERROR_NOT_SUPPORTED | CUDA_ERROR_NOT_PERMITTED => DeviceErrorKind::NotSupported,
        CUDA_ERROR_NO_DEVICE
        | CUDA_ERROR_NOT_INITIALIZED
        | CUDA_ERROR_DEINITIALIZED
        | CUDA_ERROR_STUB_LIBRARY => DeviceErrorKind::NoDevice,
        _ => DeviceErrorKind::Other,
    }
}

/// Turns a `CUresult` into `Ok(())` or an error for `call` with `what` (the sizes and addresses).
pub(crate) fn check(
    r: CUresult,
    call: DriverCall,
    what: impl FnOnce() -> String,
) -> Result<(), DeviceError> {
    if r == CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    Err(DeviceError::new(
        call,
        kind_of(r),
        r as i64,
        format!("{r:?}: {}", what()),
    ))
}

/// A driver call outside the allocator's own kinds (initialization, copies): `Ok(())` or a
/// [`CudaError::Driver`] naming the call.
pub(crate) fn check_call(
    r: CUresult,
    call: &'static str,
    detail: impl FnOnce() -> String,
) -> Result<(), CudaError> {
    if r == CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    Err(CudaError::Driver {
        call,
        result: format!("{r:?}"),
        code: r as i64,
        detail: detail(),
    })
}

/// The allocation properties of pinned device memory on `device` (built on demand: the struct holds
/// a raw pointer and is not `Send`).
pub(crate) fn pinned_prop(device: sys::CUdevice) -> sys::CUmemAllocationProp {
    sys::CUmemAllocationProp {
        type_: sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        requestedHandleTypes: sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE,
        location: sys::CUmemLocation {
            type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
            id: device,
        },
        win32HandleMetaData: std::ptr::null_mut(),
        allocFlags: sys::CUmemAllocationProp_st__bindgen_ty_1 {
            compressionType: 0,
            gpuDirectRDMACapable: 0,
            usage: 0,
            reserved: [0; 4],
        },
    }
}

/// Read/write access for `device`.
pub(crate) fn rw_access(device: sys::CUdevice) -> sys::CUmemAccessDesc {
    sys::CUmemAccessDesc {
        location: sys::CUmemLocation {
            type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
            id: device,
        },
        flags: sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
    }
}
