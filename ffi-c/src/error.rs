//! Status codes, the thread-local error message, and the panic guard of every entry point.

use gmlake_core::Error;
use gmlake_cuda::CudaError;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a gmlake call returned. `GMLAKE_OK` is 0; every other value is an error whose message
/// [`gmlake_last_error`] gives on the same thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum gmlake_status {
    /// Success.
    GMLAKE_OK = 0,
    /// A null pointer where one is not allowed, a string that is not UTF-8, a size of zero or
    /// above 1 PiB, or a value out of range.
    GMLAKE_ERROR_INVALID_ARGUMENT = 1,
    /// The request did not fit, even after releasing cached memory.
    GMLAKE_ERROR_OUT_OF_MEMORY = 2,
    /// The pointer is not a live allocation of this allocator (unknown, or a double free).
    GMLAKE_ERROR_NOT_ALLOCATED = 3,
    /// The configuration string was refused (the message lists the valid keys).
    GMLAKE_ERROR_CONFIG = 4,
    /// No CUDA driver, no such device, or no virtual memory management on it.
    GMLAKE_ERROR_NO_DEVICE = 5,
    /// A driver call failed (the message names it and its `CUresult`).
    GMLAKE_ERROR_DEVICE = 6,
    /// The allocator still has live allocations (destroy with `release_live` to free them).
    GMLAKE_ERROR_LIVE_ALLOCATIONS = 7,
    /// A bug inside gmlake (a caught panic); the allocator should not be used further.
    GMLAKE_ERROR_INTERNAL = 8,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The message of the last error on the calling thread ("" if none yet). The string belongs to
/// gmlake and stays valid until the next gmlake call on this thread. Never null.
#[unsafe(no_mangle)]
pub extern "C" fn gmlake_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// An entry point's error: a status and its message.
pub(crate) struct Failure(pub gmlake_status, pub String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::ZeroSize | Error::TooLarge { .. } | Error::InvalidArgument(_) => {
                gmlake_status::GMLAKE_ERROR_INVALID_ARGUMENT
            }
            Error::NotAllocated { .. } => gmlake_status::GMLAKE_ERROR_NOT_ALLOCATED,
            Error::OutOfMemory(_) => gmlake_status::GMLAKE_ERROR_OUT_OF_MEMORY,
            Error::Device(_) => gmlake_status::GMLAKE_ERROR_DEVICE,
            Error::Config(_) => gmlake_status::GMLAKE_ERROR_CONFIG,
            Error::LiveAllocations { .. } => gmlake_status::GMLAKE_ERROR_LIVE_ALLOCATIONS,
        };
        Failure(status, e.to_string())
    }
}

impl From<CudaError> for Failure {
    fn from(e: CudaError) -> Self {
        let status = match e {
            CudaError::NoDriver | CudaError::NoVmm { .. } => gmlake_status::GMLAKE_ERROR_NO_DEVICE,
            CudaError::Driver {
                call: "cuDeviceGet",
                ..
            } => gmlake_status::GMLAKE_ERROR_NO_DEVICE,
            CudaError::Driver { .. } => gmlake_status::GMLAKE_ERROR_DEVICE,
        };
        Failure(status, e.to_string())
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> Failure {
    Failure(gmlake_status::GMLAKE_ERROR_INVALID_ARGUMENT, message.into())
}

/// Runs an entry point's body: its error becomes a status and the thread's message; a panic is
/// caught and becomes `GMLAKE_ERROR_INTERNAL`.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<(), Failure>) -> gmlake_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => gmlake_status::GMLAKE_OK,
        Ok(Err(Failure(status, message))) => {
            set_error(&format!("{name}: {message}"));
            status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_error(&format!("{name}: internal error (a bug in gmlake): {what}"));
            gmlake_status::GMLAKE_ERROR_INTERNAL
        }
    }
}
