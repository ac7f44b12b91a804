//! How memory is made and cut (part of the allocation policy, `policy.rs`): the size of new
//! physical handles and growths, when memory counts as short, and when and where a whole free
//! chunk is cut for a placement.

use super::super::types::SplitView;
use crate::config::Config;

/// A chunk is cut for a request only while the free reserved bytes are at most this many times
/// the largest request so far. A cut (an unmap, a release, two creates, two maps and an access:
/// about 100 us on the H200) keeps a chunk stitchable for a later request that no free block
/// fits; while the free bytes are several times any request ever made, that need is remote and a
/// cut made then is often paid for nothing. On six traces not used to choose it, driver time was
/// 2-13% lower on four and utilization within 0.002 on all (`docs/design.md`, "A second held-out
/// set").
pub(in crate::allocator) const SPLIT_FREE_FACTOR: u64 = 2;

/// A whole free chunk is cut for a request only if it is at least this many times the request
/// (rounded to the granularity): smaller cuts leave remainders too small to be worth a stitch,
/// and cost the same driver calls. At 2x, five of nine traces lost utilization or driver time
/// (`docs/design.md`, "Held-out traces").
pub(in crate::allocator) const SPLIT_MIN_RATIO: u64 = 4;

/// The size of the physical handles a growth for a request of `rounded` bytes creates:
/// `rounded / handle_divisions` (`large_handle_divisions` from `large_request_size` up), rounded
/// up to the granularity `gran`, between `min_handle_size` and `max_handle_size`.
///
/// Why: the driver maps whole handles only, so a stitch can use a handle only when all of it is
/// free; small handles keep free memory stitchable, but each costs a create, a map and an access
/// (about 30-60 us on the H200). Sizing handles by the request gives large tensors few large
/// chunks and small ones small chunks. On the three given traces the default (sixteenths, 32 MiB
/// to 1 GiB; quarters from 2 GiB) reaches 0.986-0.995 utilization at 1.58-1.86 driver x, where
/// 2 MiB handles reach 0.98-0.9998 at 22-121 driver x and one handle per growth 0.95-0.99 at
/// 1.4-1.7 (`docs/design.md`, "Handle size", "Very large growths").
pub(in crate::allocator) fn handle_size(cfg: &Config, gran: u64, rounded: u64) -> u64 {
    let cap = (cfg.max_handle_size.div_ceil(gran) * gran).max(gran);
    let k = if rounded >= cfg.large_request_size {
        cfg.large_handle_divisions
    } else {
        cfg.handle_divisions
    }
    .max(1);
    let floor = (cfg.min_handle_size.div_ceil(gran) * gran).clamp(gran, cap);
    (rounded.div_ceil(k).div_ceil(gran) * gran).clamp(floor, cap)
}

/// The handle size of a growth for `rounded` bytes: [`handle_size`], or one granule when memory
/// is short ([`under_pressure`]), where every partly used handle is memory lost to stitching.
pub(in crate::allocator) fn growth_handle_size(
    cfg: &Config,
    gran: u64,
    rounded: u64,
    pressed: bool,
) -> u64 {
    if pressed {
        gran
    } else {
        handle_size(cfg, gran, rounded)
    }
}

/// The smallest large-pool growth in bytes (`min_growth` rounded up to the granularity). At one
/// granule (the default), a request grows by what it lacks only: larger growths (PyTorch's
/// 20 MiB) lowered driver time but cost up to 0.05 utilization on held-out traces
/// (`docs/design.md`, "Held-out traces").
pub(in crate::allocator) fn min_growth(cfg: &Config, gran: u64) -> u64 {
    cfg.min_growth.div_ceil(gran) * gran
}

/// The smallest growth allowed now: [`min_growth`], or nothing on the last resort, where every
/// byte counts.
pub(in crate::allocator) fn growth_floor(cfg: &Config, gran: u64, last_resort: bool) -> u64 {
    min_growth(cfg, gran) * u64::from(!last_resort)
}

/// Reserved memory past this share of what the device (or the memory fraction) allows, in per
/// mille, is short. Then new memory comes in handles of one granule, and a whole free chunk is cut
/// for any placement that would break it (cached stitched blocks that map it destroyed first), so
/// that free memory stays in whole chunks a stitch can use: a request fails only when the live
/// bytes nearly fill the device. Below it, the fast path (large handles, few cuts) is unchanged.
/// Over the 21 traces, the smallest device each replays on is at most 1.0084 x its peak live
/// bytes at 400 (1.0388 at 800, 1.0078 at 200, 1.0056 at 0); at 400 or above, replays on a whole
/// H200 make the same driver calls as before (none of them passes 40% of it), at 200 the driver
/// time of the larger ones grows by half, at 0 fifteenfold (`docs/design.md`, "Under pressure").
pub(in crate::allocator) const PRESSURE_PER_MILLE: u64 = 400;

/// Whether memory is short: `reserved` bytes past [`PRESSURE_PER_MILLE`] of `cap`.
pub(in crate::allocator) fn under_pressure(reserved: u64, cap: u64) -> bool {
    reserved > cap / 1000 * PRESSURE_PER_MILLE
}

/// Whether a chunk may be cut at all now: free reserved bytes at most [`SPLIT_FREE_FACTOR`] times
/// the largest request so far.
pub(in crate::allocator) fn split_allowed(free_reserved: u64, largest_request: u64) -> bool {
    free_reserved <= SPLIT_FREE_FACTOR.saturating_mul(largest_request)
}

/// Where to cut the chunk under a placement of `rounded` bytes at `at`, if it should be cut: so
/// that the allocation breaks a chunk of its own size only and the rest stays stitchable. Only a
/// chunk at least [`SPLIT_MIN_RATIO`] times the request (rounded to the granularity `gran`) that
/// no stitched block maps: destroying cached stitched blocks to cut a chunk costs more in later
/// stitches than it saves (`docs/design.md`, "What else each measure is worth"). The cut is right
/// after the allocation when it starts the chunk, else at the granule holding its start.
pub(in crate::allocator) fn split_point(
    c: &SplitView,
    at: u64,
    rounded: u64,
    gran: u64,
) -> Option<u64> {
    let need = rounded.div_ceil(gran) * gran;
    let ratio = if c.pressed { 1 } else { SPLIT_MIN_RATIO };
    if !c.inside || c.cend - c.cstart < ratio * need || (c.stitch_mapped && !c.pressed) {
        return None;
    }
    let cut = if at == c.cstart {
        c.cstart + need
    } else {
        (at - c.seg_va) / gran * gran + c.seg_va
    };
    (cut > c.cstart && cut < c.cend).then_some(cut)
}
