//! The one conversion of driver errors: a failed call becomes a core [`DeviceError`] (the
//! allocator's calls) or a [`CudaError::Driver`] (setting up, helpers), naming the call, its
//! `CUresult` and the sizes involved. Nothing here panics. Also the two descriptor structs the
//! virtual memory calls take.

use crate::CudaError;
use cudarc::driver::result::DriverError;
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

/// The error of the allocator's call `call` that failed with `e`, with `what` (the sizes and
/// addresses).
pub(crate) fn device_error(
    call: DriverCall,
    what: impl FnOnce() -> String,
) -> impl FnOnce(DriverError) -> DeviceError {
    move |e| {
        let r = e.0;
        DeviceError::new(call, kind_of(r), r as i64, format!("{r:?}: {}", what()))
    }
}

/// The error of the driver function `call` (setting up, copies) that failed with `e`.
pub(crate) fn cuda_error(
    call: &'static str,
    detail: impl FnOnce() -> String,
) -> impl FnOnce(DriverError) -> CudaError {
    move |e| CudaError::Driver {
        call,
        result: format!("{:?}", e.0),
        code: e.0 as i64,
        detail: detail(),
    }
}

/// The allocation properties of pinned device memory on `device`, exportable as a POSIX file
/// descriptor when `shareable` (built on demand: the struct holds a raw pointer and is not
/// `Send`).
pub(crate) fn pinned_prop(device: sys::CUdevice, shareable: bool) -> sys::CUmemAllocationProp {
    sys::CUmemAllocationProp {
        type_: sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        requestedHandleTypes: if shareable {
            sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
        } else {
            sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE
        },
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
