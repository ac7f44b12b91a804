//! What PyTorch's full allocator interface asks of an allocator besides memory: every statistic,
//! the largest cached block, the memory fraction, the allocation history and a snapshot as C
//! structs. All entry points lock the allocator for the call.

use crate::api::{gmlake_allocator, with};
use crate::error::{guard, invalid};
use crate::gmlake_status;
use crate::out::{free_box, free_slice, get_into, write_slice};
use crate::stats::gmlake_device_stats;
use gmlake_core::{BlockStateInfo, PoolKind, Snapshot};

/// Copies every statistic into `*out`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `out`.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_get_device_stats(
    a: *const gmlake_allocator,
    out: *mut gmlake_device_stats,
) -> gmlake_status {
    get_into("gmlake_get_device_stats", a, out, |a| {
        Ok(gmlake_device_stats::from(a.stats_ref()))
    })
}

/// Zeroes the accumulated figures and event counters
/// (`torch.cuda.reset_accumulated_memory_stats`).
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_reset_accumulated_stats(a: *mut gmlake_allocator) -> gmlake_status {
    guard("gmlake_reset_accumulated_stats", || {
        with(a, |a| {
            a.reset_accumulated_stats();
            Ok(())
        })
    })
}

/// The largest free block held in cache into `*largest`, in bytes (PyTorch's `cacheInfo`, which
/// cuDNN's benchmark mode asks), and the memory fraction reserved memory is limited to into
/// `*fraction` (1.0 without a limit). Either pointer may be NULL.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_cache_info(
    a: *const gmlake_allocator,
    largest: *mut u64,
    fraction: *mut f64,
) -> gmlake_status {
    guard("gmlake_cache_info", || {
        let (l, f) = with(a, |a| Ok((a.largest_free_block(), a.memory_fraction())))?;
        // SAFETY: each written only if non-null.
        unsafe {
            if !largest.is_null() {
                *largest = l;
            }
            if !fraction.is_null() {
                *fraction = f;
            }
        }
        Ok(())
    })
}

/// Starts (`enabled`) or stops recording the allocation history, keeping at most `max_entries`
/// records; `clear` empties it.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_record_history(
    a: *mut gmlake_allocator,
    enabled: bool,
    max_entries: usize,
    clear: bool,
) -> gmlake_status {
    guard("gmlake_record_history", || {
        with(a, |a| {
            a.record_history(enabled, max_entries, clear);
            Ok(())
        })
    })
}

/// One record of the allocation history. `action` is PyTorch's trace action: 0 alloc,
/// 1 free_requested, 2 free_completed, 3 segment_alloc, 4 segment_free, 5 segment_map,
/// 6 segment_unmap, 7 oom, 8 snapshot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct gmlake_history_record {
    /// PyTorch's trace action, numbered as above.
    pub action: u32,
    /// The address (for `oom`, the device's free bytes).
    pub address: u64,
    /// Bytes.
    pub size: u64,
    /// The stream.
    pub stream: u64,
    /// The memory pool.
    pub pool0: u64,
    /// The memory pool, second half.
    pub pool1: u64,
    /// The caller's context id.
    pub context: u64,
}

/// The history, oldest first, into `*out` (`*count` records, owned by the caller: free with
/// `gmlake_history_free`), and into `*live_contexts` (`*n_live` ids, free with
/// `gmlake_addresses_free`) the context ids that the history and live allocations still refer
/// to. `live_contexts` may be NULL.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator, `out` or `count`.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_history(
    a: *const gmlake_allocator,
    out: *mut *mut gmlake_history_record,
    count: *mut usize,
    live_contexts: *mut *mut u64,
    n_live: *mut usize,
) -> gmlake_status {
    guard("gmlake_history", || {
        if out.is_null() || count.is_null() {
            return Err(invalid("out or count is NULL"));
        }
        let (h, ctx) = with(a, |a| Ok((a.history(), a.live_contexts())))?;
        let records: Vec<gmlake_history_record> = h
            .iter()
            .map(|r| gmlake_history_record {
                action: r.event.action.index(),
                address: r.event.addr,
                size: r.event.size,
                stream: r.event.stream,
                pool0: r.pool.0,
                pool1: r.pool.1,
                context: r.context,
            })
            .collect();
        // SAFETY: checked non-null; `live_contexts`/`n_live` written only if both non-null.
        unsafe {
            write_slice(out, count, records);
            if !live_contexts.is_null() && !n_live.is_null() {
                write_slice(live_contexts, n_live, ctx);
            }
        }
        Ok(())
    })
}

/// Frees what `gmlake_history` returned. NULL is ignored.
///
/// # Safety
/// `p` is NULL or came from `gmlake_history` with `count` records, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_history_free(p: *mut gmlake_history_record, count: usize) {
    // SAFETY: documented contract.
    unsafe { free_slice(p, count) }
}

/// One block of a snapshot segment. `state`: 0 active (allocated), 1 pending free (waiting for
/// other streams), 2 inactive (free), 3 lent to the stitched block at `stitched_address` (in use
/// through it), 4 released (a hole).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct gmlake_block_info {
    /// Start address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
    /// Bytes the caller asked for (0 unless allocated or pending free).
    pub requested_size: u64,
    /// The state, numbered as above.
    pub state: u32,
    /// For a lent block: the stitched block's address.
    pub stitched_address: u64,
    /// The caller's context id of the allocation (0 if none).
    pub context: u64,
}

/// One segment of a snapshot: a virtual range of physical chunks, and its blocks (`blocks`,
/// `block_count` of them, in address order), or, with `is_stitched`, a stitched block (its one
/// block is the allocation it serves, if active).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gmlake_segment_info {
    /// Start address.
    pub address: u64,
    /// Bytes of the range.
    pub size: u64,
    /// The stream whose free lists hold its free blocks (0 for stitched blocks).
    pub stream: u64,
    /// Whether it is in the large pool.
    pub is_large: bool,
    /// Whether it is a stitched block (a view of other segments' memory, not memory of its own).
    pub is_stitched: bool,
    /// The owning memory pool.
    pub pool0: u64,
    /// The owning memory pool, second half.
    pub pool1: u64,
    /// Its blocks.
    pub blocks: *const gmlake_block_info,
    /// How many.
    pub block_count: usize,
}

/// A snapshot of an allocator's segments and stitched blocks (`gmlake_snapshot_take`). Opaque;
/// read it with `gmlake_snapshot_segments`, free it with `gmlake_snapshot_free`.
pub struct gmlake_snapshot {
    segments: Vec<gmlake_segment_info>,
    _blocks: Vec<Box<[gmlake_block_info]>>,
}

fn block_state(s: BlockStateInfo) -> (u32, u64) {
    match s {
        BlockStateInfo::ActiveAllocated => (0, 0),
        BlockStateInfo::ActivePendingFree => (1, 0),
        BlockStateInfo::Inactive => (2, 0),
        BlockStateInfo::Lent { stitched_address } => (3, stitched_address),
        BlockStateInfo::Released => (4, 0),
    }
}

fn to_c(snap: Snapshot) -> gmlake_snapshot {
    let mut out = gmlake_snapshot {
        segments: Vec::new(),
        _blocks: Vec::new(),
    };
    let mut push = |info: gmlake_segment_info, blocks: Box<[gmlake_block_info]>| {
        out.segments.push(gmlake_segment_info {
            blocks: blocks.as_ptr(),
            block_count: blocks.len(),
            ..info
        });
        out._blocks.push(blocks);
    };
    for seg in snap.segments {
        let blocks = seg
            .blocks
            .iter()
            .map(|b| {
                let (state, stitched_address) = block_state(b.state);
                gmlake_block_info {
                    address: b.address,
                    size: b.size,
                    requested_size: b.requested_size,
                    state,
                    stitched_address,
                    context: b.context,
                }
            })
            .collect();
        let info = gmlake_segment_info {
            address: seg.address,
            size: seg.size,
            stream: seg.stream,
            is_large: seg.pool == PoolKind::Large,
            is_stitched: false,
            pool0: seg.owner.0,
            pool1: seg.owner.1,
            blocks: std::ptr::null(),
            block_count: 0,
        };
        push(info, blocks);
    }
    for st in snap.stitched {
        let block = gmlake_block_info {
            address: st.address,
            size: st.size,
            requested_size: st.requested_size,
            state: if st.active { 0 } else { 2 },
            stitched_address: 0,
            context: st.context,
        };
        let info = gmlake_segment_info {
            address: st.address,
            size: st.size,
            stream: 0,
            is_large: true,
            is_stitched: true,
            pool0: st.owner.0,
            pool1: st.owner.1,
            blocks: std::ptr::null(),
            block_count: 0,
        };
        push(info, Box::new([block]));
    }
    out
}

/// Takes a snapshot of everything the allocator holds into `*out`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `out`.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_snapshot_take(
    a: *const gmlake_allocator,
    out: *mut *mut gmlake_snapshot,
) -> gmlake_status {
    get_into("gmlake_snapshot_take", a, out, |a| {
        Ok(Box::into_raw(Box::new(to_c(a.snapshot()))))
    })
}

/// The segments of a snapshot (`*count` of them; the array and the blocks it points to live as
/// long as the snapshot). NULL if `snap` is NULL.
///
/// # Safety
/// `snap` is NULL or a live snapshot; `count` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_snapshot_segments(
    snap: *const gmlake_snapshot,
    count: *mut usize,
) -> *const gmlake_segment_info {
    if snap.is_null() || count.is_null() {
        return std::ptr::null();
    }
    // SAFETY: documented contract.
    let s = unsafe { &*snap };
    // SAFETY: checked non-null.
    unsafe { *count = s.segments.len() };
    s.segments.as_ptr()
}

/// Frees a snapshot. NULL is ignored.
///
/// # Safety
/// `snap` is NULL or came from `gmlake_snapshot_take`, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_snapshot_free(snap: *mut gmlake_snapshot) {
    // SAFETY: documented contract.
    unsafe { free_box(snap) }
}
