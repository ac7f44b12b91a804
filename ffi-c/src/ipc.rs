//! Sharing allocations with other processes (CUDA IPC, as PyTorch's `torch.multiprocessing`
//! does): the exporting side lists an allocation's physical handles as file descriptors
//! (`gmlake_share`); the importing side, in another process, takes them with `pidfd_getfd` and
//! maps them back to back (`gmlake_import`). The importing process need not use gmlake as its
//! allocator.

use crate::api::{gmlake_allocator, with};
use crate::error::{guard, invalid};
use crate::gmlake_status;
use crate::out::{free_box, free_slice, write_slice};
use gmlake_core::SharedPiece;
use gmlake_cuda::ImportedMemory;
use std::ffi::c_void;

/// One physical handle's part of a shared allocation: `size` bytes from `offset` into a handle of
/// `handle_size` bytes, exported as the file descriptor `os_handle` of the exporting process
/// (open as long as the handle lives there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct gmlake_shared_piece {
    /// The exporting process's file descriptor of the handle.
    pub os_handle: i64,
    /// The handle's size in bytes.
    pub handle_size: u64,
    /// Where the piece starts in the handle, in bytes (0 for pieces gmlake makes).
    pub offset: u64,
    /// The piece's size in bytes.
    pub size: u64,
}

/// Shared memory of another process mapped into this one (`gmlake_import`). Opaque; close it
/// with `gmlake_import_close`.
pub struct gmlake_imported {
    /// Held for its `Drop`, which unmaps.
    _mapping: ImportedMemory,
}

/// Lists the physical handles behind the live allocation `ptr` as file descriptors for another
/// process: `*pieces` receives an array of `*count` pieces to map back to back, in order, and
/// `*offset` where the allocation starts in the first (in bytes). Ownership: free the array with
/// `gmlake_shared_free`; the descriptors belong to the allocator and stay open while the memory is
/// held. The receiving side passes the pieces and this process's id to `gmlake_import`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for NULL arguments; `GMLAKE_ERROR_NOT_ALLOCATED` if
/// `ptr` is not a live allocation; `GMLAKE_ERROR_DEVICE` if the device cannot export (a simulated
/// device, a platform without exportable handles). Outputs are zero on error.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_share(
    a: *mut gmlake_allocator,
    ptr: *const c_void,
    pieces: *mut *mut gmlake_shared_piece,
    count: *mut usize,
    offset: *mut u64,
) -> gmlake_status {
    guard("gmlake_share", || {
        if pieces.is_null() || count.is_null() || offset.is_null() {
            return Err(invalid("pieces, count or offset is NULL"));
        }
        // SAFETY: checked non-null.
        unsafe {
            *pieces = std::ptr::null_mut();
            *count = 0;
            *offset = 0;
        }
        let shared = with(a, |a| Ok(a.share(ptr as u64)?))?;
        let v = shared
            .pieces
            .iter()
            .map(|p| gmlake_shared_piece {
                os_handle: p.os_handle,
                handle_size: p.handle_size,
                offset: p.offset,
                size: p.size,
            })
            .collect();
        // SAFETY: checked non-null.
        unsafe {
            write_slice(pieces, count, v);
            *offset = shared.offset;
        }
        Ok(())
    })
}

/// Maps on CUDA device `device` the `count` pieces that process `pid` shared (`gmlake_share`
/// there, or PyTorch's expandable segments), back to back in order: `*out` receives the mapping
/// and `*ptr` its first byte, readable and writable by `device`. O(count) driver calls.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for NULL arguments or no pieces;
/// `GMLAKE_ERROR_NO_DEVICE` without a driver; `GMLAKE_ERROR_DEVICE` naming the call that failed
/// (`pidfd_getfd` when the process is gone or may not be read, as `ptrace` rules say; a driver
/// call). Nothing is left mapped on error; outputs are NULL.
///
/// # Safety
/// Pointer arguments are NULL or valid; `pieces` holds `count` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_import(
    device: i32,
    pid: i32,
    pieces: *const gmlake_shared_piece,
    count: usize,
    out: *mut *mut gmlake_imported,
    ptr: *mut *mut c_void,
) -> gmlake_status {
    guard("gmlake_import", || {
        if out.is_null() || ptr.is_null() || pieces.is_null() || count == 0 {
            return Err(invalid("out, ptr or pieces is NULL, or count is 0"));
        }
        // SAFETY: checked non-null.
        unsafe {
            *out = std::ptr::null_mut();
            *ptr = std::ptr::null_mut();
        }
        // SAFETY: the caller passes `count` valid entries.
        let given = unsafe { std::slice::from_raw_parts(pieces, count) };
        let list: Vec<SharedPiece> = given
            .iter()
            .map(|p| SharedPiece {
                os_handle: p.os_handle,
                handle_size: p.handle_size,
                offset: p.offset,
                size: p.size,
            })
            .collect();
        let inner = ImportedMemory::open(device, pid, &list)?;
        let address = inner.address();
        // SAFETY: checked non-null.
        unsafe {
            *ptr = address as *mut c_void;
            *out = Box::into_raw(Box::new(gmlake_imported { _mapping: inner }));
        }
        Ok(())
    })
}

/// Unmaps memory mapped by `gmlake_import` (after the device's work on it is done) and frees
/// `imported`. NULL is ignored.
///
/// # Safety
/// `imported` is NULL or came from `gmlake_import`, closed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_import_close(imported: *mut gmlake_imported) -> gmlake_status {
    guard("gmlake_import_close", || {
        // SAFETY: documented contract.
        unsafe { free_box(imported) };
        Ok(())
    })
}

/// Frees an array of `count` pieces returned by `gmlake_share`. NULL is ignored.
///
/// # Safety
/// `pieces` is NULL or an array returned by `gmlake_share` with this count, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_shared_free(pieces: *mut gmlake_shared_piece, count: usize) {
    // SAFETY: documented contract.
    unsafe { free_slice(pieces, count) }
}
