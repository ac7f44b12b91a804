//! Private memory pools, CUDA graph captures and pool checkpoints for C callers (what PyTorch's
//! full allocator interface needs for CUDA graphs, `torch.cuda.MemPool` and CUDA graph trees).
//! A pool is named by two integers, as PyTorch's `MempoolId_t`; `(0, 0)` is the default pool.

use crate::api::{gmlake_allocator, with};
use crate::error::{guard, invalid};
use crate::gmlake_status;
use crate::out::{free_box, free_slice, get_into, get_into_or, write_slice};
use gmlake_core::{PoolCheckpoint, PoolId, StreamHandle};
use std::ffi::c_void;

/// A checkpoint of a private pool's live allocations (`gmlake_pool_checkpoint`). Opaque; free
/// it with `gmlake_checkpoint_free`.
pub struct gmlake_checkpoint {
    inner: PoolCheckpoint,
}

/// Allocates `size` bytes for `stream` from pool `(pool0, pool1)` (the default pool is `(0, 0)`),
/// recording `context` (a caller-chosen id; 0 for none) in the history and the snapshot. `*out`
/// receives the address, or NULL on any error.
///
/// Errors: as `gmlake_malloc`; `GMLAKE_ERROR_INVALID_ARGUMENT` also for a pool that does not
/// exist or was released.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_malloc_ex(
    a: *mut gmlake_allocator,
    size: usize,
    stream: *mut c_void,
    pool0: u64,
    pool1: u64,
    context: u64,
    out: *mut *mut c_void,
) -> gmlake_status {
    get_into_or(
        "gmlake_malloc_ex",
        a,
        out,
        Some(std::ptr::null_mut()),
        |a| {
            a.set_context(context);
            let pool = PoolId(pool0, pool1);
            Ok(a.malloc_in(size as u64, StreamHandle(stream as u64), pool)? as *mut c_void)
        },
    )
}

/// Frees `ptr` as `gmlake_free` does, recording `context` in the history.
///
/// Errors: as `gmlake_free`.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_free_ex(
    a: *mut gmlake_allocator,
    ptr: *mut c_void,
    context: u64,
) -> gmlake_status {
    guard("gmlake_free_ex", || {
        with(a, |a| {
            a.set_context(context);
            match ptr.is_null() {
                true => Ok(()),
                false => Ok(a.free(ptr as u64)?),
            }
        })
    })
}

/// `gmlake_pool`: create the pool with one user, or add a user (PyTorch's `createOrIncrefPool`).
pub const GMLAKE_POOL_INCREF: u32 = 0;
/// `gmlake_pool`: remove a user; with none left, its free memory goes back (`releasePool`).
pub const GMLAKE_POOL_RELEASE: u32 = 1;
/// `gmlake_pool`: hand out whole blocks only, a segment each (`MemPool(no_split=True)`).
pub const GMLAKE_POOL_NO_SPLIT: u32 = 2;
/// `gmlake_pool`: let default-pool requests that found no memory use its free blocks.
pub const GMLAKE_POOL_USE_ON_OOM: u32 = 3;
/// `gmlake_pool`: stop letting them.
pub const GMLAKE_POOL_NO_USE_ON_OOM: u32 = 4;
/// `gmlake_pool`: return its free memory if no user is left (`emptyCache(mempool_id)`).
pub const GMLAKE_POOL_EMPTY_CACHE: u32 = 5;

/// Applies `op` (one of the `GMLAKE_POOL_*` values) to pool `(pool0, pool1)`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator, an unknown `op`, the default
/// pool where a private one is needed, an unknown pool, or a release of a pool without users; `GMLAKE_ERROR_DEVICE`
/// if the device synchronization of a release failed.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_pool(
    a: *mut gmlake_allocator,
    pool0: u64,
    pool1: u64,
    op: u32,
) -> gmlake_status {
    guard("gmlake_pool", || {
        let id = PoolId(pool0, pool1);
        with(a, |a| {
            match op {
                GMLAKE_POOL_INCREF => a.create_or_incref_pool(id)?,
                GMLAKE_POOL_RELEASE => a.release_pool(id)?,
                GMLAKE_POOL_NO_SPLIT => a.set_pool_no_split(id)?,
                GMLAKE_POOL_USE_ON_OOM => a.set_pool_use_on_oom(id, true)?,
                GMLAKE_POOL_NO_USE_ON_OOM => a.set_pool_use_on_oom(id, false)?,
                GMLAKE_POOL_EMPTY_CACHE => a.empty_pool_cache(id)?,
                _ => return Err(invalid(format!("unknown pool operation {op}"))),
            }
            Ok(())
        })
    })
}

/// The users of pool `(pool0, pool1)` into `*out` (0 if it does not exist).
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `out`.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_pool_use_count(
    a: *const gmlake_allocator,
    pool0: u64,
    pool1: u64,
    out: *mut u32,
) -> gmlake_status {
    get_into("gmlake_pool_use_count", a, out, |a| {
        Ok(a.pool_use_count(PoolId(pool0, pool1)))
    })
}

/// The addresses of the live allocations of pool `(pool0, pool1)`, sorted: up to `capacity` of
/// them into `addrs` (which may be NULL when `capacity` is 0), and their number into `*count`
/// (call with `capacity` 0 first to learn it).
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `count`, or a NULL `addrs`
/// with a non-zero `capacity`.
///
/// # Safety
/// `addrs` has room for `capacity` values; other pointer arguments as the header's conventions
/// say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_pool_live(
    a: *const gmlake_allocator,
    pool0: u64,
    pool1: u64,
    addrs: *mut u64,
    capacity: usize,
    count: *mut usize,
) -> gmlake_status {
    guard("gmlake_pool_live", || {
        if count.is_null() || (addrs.is_null() && capacity > 0) {
            return Err(invalid("count is NULL, or addrs is NULL with room"));
        }
        let live = with(a, |a| Ok(a.pool_live_allocations(PoolId(pool0, pool1))))?;
        // SAFETY: documented contract: `addrs` has room for `capacity` values; `count` non-null.
        unsafe {
            for (i, &p) in live.iter().take(capacity).enumerate() {
                *addrs.add(i) = p;
            }
            *count = live.len();
        }
        Ok(())
    })
}

/// A CUDA graph capture begins (`begin`) or ends: during captures the allocator records no
/// event, queries none and synchronizes nothing (illegal during capture). Captures nest.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_capture(a: *mut gmlake_allocator, begin: bool) -> gmlake_status {
    guard("gmlake_capture", || {
        with(a, |a| {
            match begin {
                true => a.begin_capture(),
                false => a.end_capture(),
            }
            Ok(())
        })
    })
}

/// Checkpoints the live allocations of private pool `(pool0, pool1)` into `*out` (PyTorch's
/// `getCheckpointState`). Free it with `gmlake_checkpoint_free`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `out`, or a pool that is not
/// a private pool in use.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_pool_checkpoint(
    a: *const gmlake_allocator,
    pool0: u64,
    pool1: u64,
    out: *mut *mut gmlake_checkpoint,
) -> gmlake_status {
    get_into("gmlake_pool_checkpoint", a, out, |a| {
        let inner = a.checkpoint_pool(PoolId(pool0, pool1))?;
        Ok(Box::into_raw(Box::new(gmlake_checkpoint { inner })))
    })
}

/// Frees a checkpoint. NULL is ignored.
///
/// # Safety
/// `cp` is NULL or came from `gmlake_pool_checkpoint` and is freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_checkpoint_free(cp: *mut gmlake_checkpoint) {
    // SAFETY: documented contract.
    unsafe { free_box(cp) }
}

/// Returns the checkpoint's pool to it (PyTorch's `setCheckpointPoolState`): frees every live
/// allocation of the pool and makes each allocation of the checkpoint again at its address.
/// `freed` and `allocated` receive arrays of the addresses freed and made (`*n_freed`,
/// `*n_allocated` long) owned by the caller: free them with `gmlake_addresses_free`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL argument, a pool no longer in use, or
/// during a capture; `GMLAKE_ERROR_DEVICE` if the device synchronization failed;
/// `GMLAKE_ERROR_NOT_ALLOCATED` if an allocation could not be made again at its address.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_pool_restore(
    a: *mut gmlake_allocator,
    cp: *const gmlake_checkpoint,
    freed: *mut *mut u64,
    n_freed: *mut usize,
    allocated: *mut *mut u64,
    n_allocated: *mut usize,
) -> gmlake_status {
    guard("gmlake_pool_restore", || {
        if cp.is_null() || [freed.is_null(), allocated.is_null()].contains(&true) {
            return Err(invalid("a NULL argument"));
        }
        if n_freed.is_null() || n_allocated.is_null() {
            return Err(invalid("a NULL count"));
        }
        // SAFETY: checked non-null; documented contract.
        let cp = unsafe { &(*cp).inner };
        let r = with(a, |a| Ok(a.restore_pool(cp)?))?;
        // SAFETY: checked non-null.
        unsafe {
            write_slice(freed, n_freed, r.freed);
            write_slice(allocated, n_allocated, r.allocated);
        }
        Ok(())
    })
}

/// Frees an array of `n` addresses returned by gmlake. NULL is ignored.
///
/// # Safety
/// `p` is NULL or an array of `n` values returned by gmlake, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_addresses_free(p: *mut u64, n: usize) {
    // SAFETY: documented contract.
    unsafe { free_slice(p, n) }
}
