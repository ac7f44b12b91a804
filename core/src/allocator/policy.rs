//! The allocation policy: every decision the allocator makes, in one place.
//!
//! The other files of this module are mechanics: they decide nothing and ask the functions here,
//! each a small function over plain data with why it is so, its cost and the measurement behind
//! it. Figures are from `gmlake-replay` on the simulated H200 (2 MiB granularity, whole-handle
//! mapping, the driver costs measured on the H200); "driver x" is gmlake's estimated driver time
//! over PyTorch's `cudaMalloc` time for the same trace. What was tried and not kept is in
//! `docs/design.md`.
//!
//! # The allocation order ([`super::Allocator::place`], [`super::Allocator::serve`], walked in `order.rs`)
//! A request is rounded up to [`super::MIN_BLOCK_SIZE`] bytes, assigned a pool kind
//! ([`pool_for`]) and served, within its memory pool (the default or a private one), by the first
//! of these that succeeds (GMLake's order, ASPLOS 2024, its bugs fixed: `docs/design.md`):
//! 1. best fit ([`pick_fit`]; what was freed last at once where it serves: [`reclaims_parked`])
//!    among free blocks of its pool on its stream, then on other streams whose last use has
//!    completed; a small request then tries large-pool blocks before the small pool grows;
//! 2. a cached stitched block ([`reuse_order`]: the oldest that fits);
//! 3. a new stitch of whole free chunks ([`may_stitch`], [`choose_chunks`]; short or settled, free
//!    ends too: [`ends_now`]), growing a cached stitched block that maps ([`growable_candidates`]);
//! 4. new memory for only what the free chunks lack, stitched with them ([`stitch_growing_pays`];
//!    short, free ends too: [`ends_pay`]); else growth in place ([`extension_bytes`]) or a new
//!    segment, of handles sized by [`handle_size`];
//! 5. all cached memory released, then the order once more as a last resort (any size stitches,
//!    exact growth, large requests take small-pool blocks); not while a CUDA graph is captured;
//! 6. a default-pool request may take free blocks of a private pool marked `use_on_oom`
//!    (PyTorch's rule, run in `pools.rs`);
//! 7. with `peer_borrow` on, memory borrowed from a peer GPU ([`may_borrow`], [`peer_limit`]);
//! 8. out of memory.
//!
//! A `no_split` pool hands out whole blocks only ([`super::Allocator::serve_whole`]). A free block's
//! allocation goes to its end that breaks fewer whole chunks ([`placement`]), and a much larger
//! whole chunk under it may be cut ([`split_point`]; short of memory, also those it crosses).
//! Cached stitched blocks go least recently freed first past [`over_stitch_bounds`] (not those of
//! private pools in use).
//!
//! # Convergence: a job that repeats its steps stops stitching and growing
//! Every decision is a function of the allocator's state and the request: the free blocks (best
//! fit by size, then address), the cached stitched blocks ([`reuse_order`]: oldest first) and the
//! counters that say whether the job has settled ([`settled`]) or memory is short. So a step that
//! starts in the state the step before started in makes the same choices. A step that grows
//! changes that state, and then only from the request that grew: its memory is late
//! ([`grows_late`]) and best fit hands it out only after every earlier block, so the requests
//! before that one find what they found before; that one finds the memory grown for it, or the
//! stitched block made of it, which is the oldest that fits and was free at that point. A step
//! that makes new stitches but does not grow leaves the next with more cached blocks, tried after
//! the older ones that failed before: the step after it makes none. Hence, once the shapes repeat,
//! new handles stop one step after the last growth, and new stitches one step after that.
//!
//! Limits, measured (`gmlake-replay --passes 8`, 59 real traces): a step's last use of late memory
//! (a request that found no earlier block) may still differ from the step before, and a job that
//! needs more live bytes than ever grows working memory, not late memory, which the next step may
//! use earlier. From the third pass on no trace created a handle, and new stitches stayed below 1
//! per 1000 allocations on all (at most 0.68, resnet_train; 10 traces with any), with peaks flat;
//! the bound we hold to is that one (`docs/design.md`, "Late memory last"). Releasing cached
//! memory (`empty_cache`, the retry before an out-of-memory) changes the state and starts over;
//! while memory is short, growths are not late (every byte is packed where it fits best).
//!
//! # Complexity
//! With `f` the free blocks of a pool, `n` the cached stitched blocks that fit and `k` a bounded
//! probe count: best fit and placement O(k + log f); reuse O(n log n + n × pieces); a stitch
//! O(free blocks + chunks they hold + k) (only when no free block fits); growth O(segments).

use super::types::*;
use crate::config::Config;
use crate::stats::PoolKind;
use alloc::vec::Vec;

/// How many of the smallest fitting free blocks best fit examines for one whose use breaks no
/// whole chunk, before the smallest. 64, or all, did no better on nine traces (gpt2m_ckpt worse).
pub(super) const FIT_PROBES: usize = 16;

/// How many of the smallest fitting free blocks best fit looks at in all: late memory
/// ([`grows_late`]) does not count toward [`FIT_PROBES`], so that it shifts no earlier choice.
pub(super) const FIT_SCAN: usize = 4 * FIT_PROBES;

/// How many cached stitched blocks a stitch examines for one to grow (a look-up per piece each).
pub(super) const REUSE_PROBES: usize = 64;

/// Whether a request that found no room may borrow a peer's memory (`peer.rs`, last: NVLink is
/// slower): a large default-pool request outside captures (a graph's pool keeps its memory).
pub(super) fn may_borrow(cfg: &Config, kind: PoolKind, owner: PoolIdx, capture: bool) -> bool {
    cfg.peer_borrow && kind == PoolKind::Large && owner == DEFAULT_POOL && !capture
}

/// The most bytes borrowed from one peer, in whole granules: `peer_borrow_limit`, else a quarter
/// of this device's memory (so that a lender keeps most of its own; a bound, not a measurement).
pub(super) fn peer_limit(cfg: &Config, total: u64, gran: u64) -> u64 {
    cfg.peer_borrow_limit.unwrap_or(total / 4) / gran * gran
}

/// The pool of a request of `rounded` bytes: the small pool (one-granule segments) up to
/// `small_size`, as PyTorch's `kSmallSize`. A small request takes a free large-pool block before
/// the small pool grows ([`super::Allocator::serve`]), and is counted under the pool it uses.
pub(super) fn pool_for(rounded: u64, cfg: &Config) -> PoolKind {
    [PoolKind::Large, PoolKind::Small][(rounded <= cfg.small_size) as usize]
}

/// A chunk under [`CUT_ANY_TIME_BYTES`] is cut only while the free reserved bytes are at most this
/// many times the largest request so far: a cut (about 100 us) keeps a chunk stitchable, a remote
/// need while free bytes are ample. Six traces: driver time 2-13% lower on four, same utilization.
pub(super) const SPLIT_FREE_FACTOR: u64 = 2;

/// A whole free chunk is cut for a request only if it is at least this many times the request
/// (rounded to the granularity): smaller remainders are not worth a stitch, for the same driver
/// calls. At 2x, five of nine traces lost (`docs/design.md`, "Held-out traces").
pub(super) const SPLIT_MIN_RATIO: u64 = 4;

/// The size of the physical handles a growth for a request of `rounded` bytes creates: `rounded /
/// handle_divisions` (`large_handle_divisions` from `large_request_size` up), rounded up to the
/// granularity `gran`, between `min_handle_size` and `max_handle_size`. Why: a stitch maps a handle
/// only when all of it is free; small handles keep memory stitchable but each costs a create, a
/// map and an access (30-60 us on the H200). Given traces: the default (sixteenths, 32 MiB-1 GiB,
/// quarters from 2 GiB) 0.986-0.995 at 1.58-1.86 driver x, 2 MiB 0.98-0.9998 at 22-121 x.
pub(super) fn handle_size(cfg: &Config, gran: u64, rounded: u64) -> u64 {
    let cap = (cfg.max_handle_size.div_ceil(gran) * gran).max(gran);
    let large = rounded >= cfg.large_request_size;
    let k = [cfg.handle_divisions, cfg.large_handle_divisions][large as usize].max(1);
    let floor = (cfg.min_handle_size.div_ceil(gran) * gran).clamp(gran, cap);
    (rounded.div_ceil(k).div_ceil(gran) * gran).clamp(floor, cap)
}

/// While memory is short, a growth's handles hold this fraction of its request, one granule at
/// least (so larger only from 2 GiB): a partly used one strands 1/1024 of it at most. A 3.2B job
/// past 40% of the H200: 20.2 to 10.6 x PyTorch's driver time, fit within 0.0006 on 56 traces.
pub(super) const SHORT_HANDLE_DIVISIONS: u64 = 1024;

/// The handle size of a growth for `rounded` bytes: [`handle_size`], or when memory is short
/// ([`under_pressure`]: a partly used handle is memory lost) a [`SHORT_HANDLE_DIVISIONS`]th.
pub(super) fn growth_handle_size(cfg: &Config, gran: u64, rounded: u64, pressed: bool) -> u64 {
    let short = (rounded / SHORT_HANDLE_DIVISIONS).div_ceil(gran).max(1) * gran;
    [handle_size(cfg, gran, rounded), short][pressed as usize]
}

/// The handle size of what a stitch grows for the `grow` bytes its free chunks lack for `rounded`
/// bytes (`need` = `(rounded, grow)`; `cur`: the request's): a growth of `grow` bytes'
/// ([`handle_size`]) where that is at most half the request, since one request-sized handle is
/// broken whole by the next tensor placed in it, and the next stitch grows again. 24 traces:
/// utilization up on five (mistral_lora 0.980 to 0.985), bloom_train 0.004 down.
pub(super) fn shortfall_handle_size(cfg: &Config, gran: u64, need: (u64, u64), cur: u64) -> u64 {
    let fine = cur.min(handle_size(cfg, gran, need.1));
    [cur, fine][(need.1.saturating_mul(2) <= need.0) as usize]
}

/// The smallest large-pool growth: `min_growth` in granules, none on the last resort. At one
/// granule (the default) a request grows by what it lacks: PyTorch's 20 MiB cost up to 0.05.
pub(super) fn growth_floor(cfg: &Config, gran: u64, last_resort: bool) -> u64 {
    cfg.min_growth.div_ceil(gran) * gran * u64::from(!last_resort)
}

/// Reserved memory past this share (per mille) of what the device or the memory fraction allows
/// is short: small handles ([`SHORT_HANDLE_DIVISIONS`]), stitches over chunks' free ends, and until
/// the job settles cuts of the whole free chunks a placement would break ([`split_point`]). 21
/// traces: fit at most 1.0084 x peak live at 400 (1.0388 at 800, 1.0056 at 0), and at 400 a whole
/// H200 makes the same driver calls (at 0 15x; "Under pressure").
pub(super) const PRESSURE_PER_MILLE: u64 = 400;

/// Whether memory is short: `reserved` bytes past [`PRESSURE_PER_MILLE`] of `cap`.
pub(super) fn under_pressure(reserved: u64, cap: u64) -> bool {
    reserved > cap / 1000 * PRESSURE_PER_MILLE
}

/// A cut waits for its chunk's last use (a stream synchronization) rather than leave the chunk
/// whole: a live GPU runs behind its CPU, and with events completing only at a synchronization,
/// skipping such cuts cost llama_generate 0.034 utilization and 90x driver time, and llama_sft an
/// OOM at 1.01 x its live bytes; 0-48 waits a trace ("Cuts on a GPU that runs behind").
pub(super) const WAIT_TO_CUT: bool = true;

/// A whole free chunk of at least this many bytes may be cut whatever the free memory: a tensor in
/// it strands the rest, often pieces of cached stitched blocks that then grow again. 27 traces:
/// utilization up on gpt2m_ckpt, opt_accum, down nowhere ("Cutting big chunks").
pub(super) const CUT_ANY_TIME_BYTES: u64 = 64 << 20;

/// Whether a chunk of `chunk` bytes may be cut now: at least [`CUT_ANY_TIME_BYTES`], or `free`
/// reserved bytes at most [`SPLIT_FREE_FACTOR`] times the `largest` request so far.
pub(super) fn split_allowed(free: u64, largest: u64, chunk: u64) -> bool {
    chunk >= CUT_ANY_TIME_BYTES || free <= SPLIT_FREE_FACTOR.saturating_mul(largest)
}

/// Where to cut the whole free chunk `c` under a placement of `rounded` bytes at `at`, if at all:
/// so that the placement breaks chunks of its own size only and the rest stays stitchable. With
/// room, only a chunk that holds the placement, at least [`SPLIT_MIN_RATIO`] times its size in
/// granules (`gran`) and mapped by no stitched block: destroying cached stitched blocks to cut
/// costs more in later stitches than it saves ("What else each measure is worth"). While `pressed`,
/// one that holds it whatever maps it, and those it enters or leaves part way that none maps: 53
/// traces, fit lower on 29, higher on 5 by 0.0021 at most ("Cutting where a placement crosses
/// chunks"). The cut falls at the granule holding the placement's start, or right after the
/// placement where it starts the chunk (short of memory: enters it at its first granule).
pub(super) fn split_point(c: &SplitView, at: u64, rounded: u64, gran: u64) -> Option<u64> {
    let need = rounded.div_ceil(gran) * gran;
    let room = c.cend - c.cstart >= SPLIT_MIN_RATIO * need && !c.stitch_mapped;
    let ok = [c.pressed && !c.stitch_mapped, c.pressed || room][usize::from(c.holds)];
    let from = (at - c.seg_va) / gran * gran + c.seg_va;
    let to = (at + rounded - c.seg_va).div_ceil(gran) * gran + c.seg_va;
    let cut = [from, to][usize::from(at == c.cstart || (c.pressed && c.cstart >= from))];
    (c.inside && ok && cut > c.cstart && cut < c.cend).then_some(cut)
}

/// Whether a large request of `rounded` bytes may be served by stitching: stitching is on and the
/// request is at least `frag_limit` (GMLake's `fragLimit`; 2 MiB: any request spanning a granule
/// gains, since new memory costs driver calls too), or anything goes (the last resort).
pub(super) fn may_stitch(cfg: &Config, rounded: u64, last_resort: bool) -> bool {
    cfg.stitching && (rounded >= cfg.frag_limit || last_resort)
}

/// Whether to stitch before asking for new memory (`defrag_level` 0, the default, or the last
/// resort); level 1 stitches once the device refuses, level 2 on the last resort only.
pub(super) fn stitch_before_growth(cfg: &Config, last_resort: bool) -> bool {
    cfg.defrag_level == 0 || last_resort
}

/// Whether new memory for only what free chunks lack is stitched with them rather than grown as a
/// segment: for requests over one growth ("Stitching with new memory"); a growth serves the rest.
pub(super) fn stitch_growing_pays(cfg: &Config, gran: u64, bytes: u64, last: bool) -> bool {
    bytes > growth_floor(cfg, gran, false) || last
}

/// Whether a stitch of whole free chunks could serve `rounded` bytes: they hold enough bytes, in
/// at least two chunks (one chunk large enough would lie in a free block that best fit found).
pub(super) fn worth_stitching(free_chunk_bytes: u64, free_chunks: usize, rounded: u64) -> bool {
    free_chunk_bytes >= rounded && free_chunks >= 2
}

/// Whether the job has settled: `since` requests since the last to grow reserved memory (counted
/// with it) exceed `free_ends_after`: a growth now would raise every later step's peak.
pub(super) fn settled(cfg: &Config, since: u64) -> bool {
    since > cfg.free_ends_after
}

/// Whether memory grown now is *late*: the job has settled at some point (`settled_once`), the
/// request does not take live bytes past their most so far (`raises_live_peak`: memory for more
/// work is working memory) and memory is not short (`pressed`: there every byte is packed). Best
/// fit takes late memory last ([`pick_fit`]) and growth in place joins memory of its own kind only.
/// Why: a growth in a settled job patches fragmentation at one request of a step; if the next step
/// used that memory earlier, every later choice would differ, and stitch or grow anew. Held back,
/// the requests before it repeat their choices and the one that grew it finds it. 56 traces of 8
/// passes: from pass 3 no new handle, stitches below 1 per 1000 allocations everywhere (resnet_train
/// 1.36 and vgg_dynres 3.97 before); pass-1 utilization down on 4 by at most 0.0072 (wav2vec2_dynlen),
/// fit equal ("Late memory last").
pub(super) fn grows_late(settled_once: bool, raises_live_peak: bool, pressed: bool) -> bool {
    settled_once && !raises_live_peak && !pressed
}

/// Whether a stitch may map chunks' free ends where whole free chunks fall short: with
/// `stitch_free_ends`, while memory is short (`pressed`, [`under_pressure`]), or once settled.
/// A few more mappings, once (the block is cached), avoid a growth. Settled, 38 traces of 8 passes:
/// peaks flat from pass 3 on all (36 before), pass-1 utilization up on 13, lower on none; short,
/// fit lower on 30 of 42 (vit_dynres 1.0114 to 1.0019), up by 0.0023 at most ("Settling").
pub(super) fn ends_now(cfg: &Config, since: u64, pressed: bool) -> bool {
    cfg.stitching && (cfg.stitch_free_ends || pressed || settled(cfg, since))
}

/// The free ends a stitch maps, `(tail, head)`, where whole chunks lack `lack` bytes and the
/// largest free tail, head hold `t`, `h`: the smaller covering `lack`, or both; else None.
pub(super) fn free_ends_for(t: u64, h: u64, lack: u64) -> Option<(bool, bool)> {
    let (alone_t, alone_h) = (t >= lack && t > 0, h >= lack && h > 0);
    let pick = [(alone_t, alone_h), (t <= h, h < t), (true, true)];
    let i = [usize::from(alone_t && alone_h), 2][usize::from(!alone_t && !alone_h)];
    let fits = alone_t || alone_h || (t > 0 && h > 0 && t + h >= lack);
    fits.then_some(pick[i])
}

/// Whether a growing stitch maps free ends of `ends` bytes too (with `stitch_free_ends`, or while
/// memory is short): where its growth for the `lack` bytes whole chunks lack (`grown`, in
/// granules) is then smaller.
pub(super) fn ends_pay<F: Fn(u64) -> u64>(lack: u64, ends: u64, grown: F) -> bool {
    ends > 0 && ends < lack && grown(lack - ends) < grown(lack)
}

/// Best fit: among the [`FIT_PROBES`] smallest free blocks of at least `rounded` bytes
/// (`smallest_first`) that are not late memory ([`grows_late`]), the first whose use breaks no
/// whole physical chunk; else such a late block; else the smallest earlier block, else the
/// smallest late one. `view` gives what is known of a block, or `None` if the stream may not use
/// it yet. Why: a free chunk broken by a small tensor cannot be stitched until that tensor goes,
/// so among near-equal fits the one that keeps chunks whole is worth a few bytes more. O([`FIT_SCAN`]).
pub(super) fn pick_fit(
    smallest_first: impl Iterator<Item = BlockId>,
    rounded: u64,
    view: impl Fn(BlockId) -> Option<FitView>,
) -> Option<BlockId> {
    // The first block keeping whole chunks and the smallest, of earlier and of late memory.
    let (mut whole, mut smallest) = ([None; 2], [None; 2]);
    let mut probes = 0;
    for b in smallest_first.take(FIT_SCAN) {
        let Some(v) = view(b) else { continue };
        let late = usize::from(v.late);
        if late == 0 && v.keeps_whole_chunks(rounded) {
            return Some(b);
        }
        if v.keeps_whole_chunks(rounded) {
            whole[late].get_or_insert(b);
        }
        smallest[late].get_or_insert(b);
        probes += 1 - late;
        if probes == FIT_PROBES {
            break;
        }
    }
    whole[1].or(smallest[0]).or(smallest[1])
}

/// Where `rounded` bytes of the free block `v` go: at whichever end uses up or breaks fewer bytes
/// of whole free chunks (`loss(at)` gives those bytes for a placement at `at`, O(1) with the
/// segment's chunk table); the front on a tie, and at once where the front breaks no whole chunk
/// or the segment has fewer than two chunks.
pub(super) fn placement(
    v: &FitView,
    rounded: u64,
    several_chunks: bool,
    loss: impl Fn(u64) -> u64,
) -> u64 {
    let (addr, end) = (v.addr, v.addr + v.size);
    if v.size == rounded || !several_chunks || addr + rounded <= v.whole.0 {
        return addr;
    }
    let front = loss(addr);
    [addr, end - rounded][usize::from(front > 0 && loss(end - rounded) < front)]
}

/// The order in which a stitch considers whole free chunks, `(bytes, start)`: largest first (fewest
/// mappings, each about 25 us to map and 25-60 us to grant access on the H200), then by address.
pub(super) fn stitch_order(a: (u64, u64), b: (u64, u64)) -> core::cmp::Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Which chunks a stitch of `need` bytes maps, as indices into `sizes` (in [`stitch_order`],
/// summing to at least `need`): largest first, and for the last part the smallest chunk that
/// covers what is left (GMLake takes the largest there and splits it, which the driver's
/// whole-handle rule forbids). O(chosen + log chunks).
pub(super) fn choose_chunks(sizes: &[u64], need: u64) -> Vec<usize> {
    let mut chosen = Vec::new();
    let mut left = need;
    let mut i = 0;
    while left > 0 && i < sizes.len() {
        if sizes[i] >= left {
            chosen.push(i + sizes[i..].partition_point(|&s| s >= left) - 1);
            left = 0;
        } else {
            chosen.push(i);
            left -= sizes[i];
            i += 1;
        }
    }
    chosen
}

/// The largest cached stitched block that may serve `rounded` bytes: `reuse_limit` (GMLake's
/// `reuseLimit`, 10) times it; a reused block's unused tail stays free, so it pins address only.
pub(super) fn reuse_max(rounded: u64, cfg: &Config) -> u64 {
    (rounded as f64 * cfg.reuse_limit) as u64
}

/// What was freed last (a block, or a stitched block with its lent blocks) is *parked* until the
/// next request, which takes it back at once if it asks the size last handed out (`held`) and the
/// order would hand out exactly it (`parked.rs`); else it returns to the pools first, so every
/// placement is as without parking. Why: it skips a free's merge and the next allocation's split:
/// C ABI pairs of 512 B or 4 MiB 2,070 to 1,493 instructions, a cached 64 MiB stitched block's
/// 6,300 to 1,400 (callgrind); replays unchanged (`docs/design.md`, "Parked blocks").
pub(super) fn reclaims_parked(held: u64, rounded: u64) -> bool {
    held == rounded
}

/// The cached stitched blocks a reuse tries: all that fit (`fitting`: `(size, born, id)` of the
/// pool's cached blocks of at least the request's size, smallest first) up to `max` bytes
/// ([`reuse_max`]), oldest first (`born`: when made or last grown). Why: a job repeating its steps
/// repeats its choices: up to a request that made a new stitch in the step before, every block a
/// step finds was there before and older ones come first; at that request the block made then is
/// free. So a step after one with no growth makes no new stitch (`core/tests/settling.rs`); best
/// fitting first, neox_sample made 94-213 new stitches every warm pass, none from its fourth now.
pub(super) fn reuse_order(
    fitting: impl Iterator<Item = (u64, u64, StitchId)>,
    max: u64,
) -> Vec<StitchId> {
    let fit = fitting.take_while(|f| f.0 <= max);
    let mut by_age: Vec<_> = fit.map(|f| (f.1, f.2)).collect();
    by_age.sort_unstable();
    by_age.into_iter().map(|(_, sid)| sid).collect()
}

/// The cached stitched blocks a stitch for `rounded` bytes may grow instead of mapping their
/// chunks again, in the order tried: the [`REUSE_PROBES`] largest smaller than the request
/// (`smaller`: `(size, id)` of the pool's cached blocks smaller than `rounded`, by size); it maps
/// only the chunks the block lacks, after it: on opt13_lora a 4.7 GB request so reuses the 42
/// mappings of a freed 2.3 GB block (`docs/design.md`, "Growing a cached stitched block").
pub(super) fn growable_candidates(
    smaller: impl DoubleEndedIterator<Item = (u64, StitchId)>,
) -> impl Iterator<Item = StitchId> {
    smaller.rev().take(REUSE_PROBES).map(|(_, sid)| sid)
}

/// The address space a new stitched block of `size` bytes holds after its range to grow into, in
/// granules: as much again (training requests often double: opt13_lora's 2.3 GB then 4.7 GB), never
/// past the device's memory `total`. Address space is plentiful and held at no driver cost.
pub(super) fn headroom_for(size: u64, total: u64, gran: u64) -> u64 {
    size.min(total.saturating_sub(size) / gran * gran)
}

/// Whether the cached stitched blocks are past their bounds, so that the least recently freed
/// must go (GMLake's StitchFree): `bytes_maps`, their virtual bytes over `stitched_bytes_limit`
/// (default twice the device's memory `total`) or their mappings over `max_stitch_mappings`:
/// wide, since cached blocks cost address space and mappings but no physical memory.
pub(super) fn over_stitch_bounds(bytes_maps: (u64, u64), cfg: &Config, total: u64) -> bool {
    bytes_maps.0 > cfg.stitched_bytes_limit.unwrap_or(2 * total)
        || bytes_maps.1 > cfg.max_stitch_mappings
}

/// How many bytes growing a segment in place for `rounded` bytes takes, given the free tail `tail`
/// it already has: what the tail lacks, rounded up to the granularity, at least `floor` and one
/// granule. The segment with the smallest such growth is grown (its tail saves the most).
pub(super) fn extension_bytes(rounded: u64, tail: u64, floor: u64, gran: u64) -> u64 {
    (rounded.saturating_sub(tail).div_ceil(gran) * gran).max(floor.max(gran))
}

#[cfg(test)]
mod tests;
