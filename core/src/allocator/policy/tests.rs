//! Each decision of the policy on small cases worked out by hand.

use super::*;

const MIB: u64 = 1 << 20;
const G: u64 = 2 * MIB;

#[test]
fn handle_sizes_follow_the_request_within_bounds() {
    let cfg = Config::default();
    assert_eq!(handle_size(&cfg, G, 64 * MIB), 32 * MIB, "floor");
    assert_eq!(handle_size(&cfg, G, 1600 * MIB), 100 * MIB, "a sixteenth");
    assert_eq!(
        handle_size(&cfg, G, 3 << 30),
        768 * MIB,
        "a quarter from 2 GiB"
    );
    assert_eq!(handle_size(&cfg, G, 8 << 30), 1 << 30, "cap");
}

#[test]
fn a_stitch_grows_a_small_shortfall_in_handles_sized_for_it() {
    let cfg = Config::default();
    // 4 GiB request (quarters: 1 GiB handles) short of 256 MiB: sixteenths of the shortfall,
    // at least 32 MiB.
    let cur = handle_size(&cfg, G, 4 << 30);
    assert_eq!(cur, 1 << 30);
    assert_eq!(
        shortfall_handle_size(&cfg, G, (4 << 30, 256 * MIB), cur),
        32 * MIB
    );
    assert_eq!(
        shortfall_handle_size(&cfg, G, (4 << 30, 1600 * MIB), cur),
        100 * MIB
    );
    // Exactly half the request still counts as small (a 2 GiB shortfall: quarters); more than
    // half keeps the request's size.
    assert_eq!(
        shortfall_handle_size(&cfg, G, (4 << 30, 2 << 30), cur),
        512 * MIB
    );
    assert_eq!(
        shortfall_handle_size(&cfg, G, (4 << 30, (2 << 30) + G), cur),
        cur
    );
    // Never larger than the request's size (one granule when memory is short).
    assert_eq!(shortfall_handle_size(&cfg, G, (4 << 30, 256 * MIB), G), G);
}

#[test]
fn chunks_are_chosen_largest_first_then_smallest_covering() {
    let sizes = [64, 32, 32, 16, 8];
    assert_eq!(choose_chunks(&sizes, 70), [0, 4]);
    assert_eq!(choose_chunks(&sizes, 100), [0, 1, 4]);
    assert_eq!(choose_chunks(&sizes, 64), [0]);
    assert_eq!(choose_chunks(&sizes, 200), [0, 1, 2, 3, 4]);
}

#[test]
fn split_points_fall_on_granules_inside_the_chunk() {
    let c = SplitView {
        cstart: 0,
        cend: 64 * G,
        inside: true,
        holds: true,
        stitch_mapped: false,
        seg_va: 0,
        pressed: false,
    };
    assert_eq!(split_point(&c, 0, 3 * G, G), Some(3 * G));
    assert_eq!(split_point(&c, 5 * G + 512, G, G), Some(5 * G));
    assert_eq!(split_point(&c, 0, 17 * G, G), None, "under 4x");
    let mapped = SplitView {
        stitch_mapped: true,
        ..c
    };
    assert_eq!(split_point(&mapped, 0, G, G), None);
    assert!(split_allowed(4 * G, 2 * G, G) && !split_allowed(4 * G + 1, 2 * G, G));
    // A chunk of 64 MiB or more may be cut however much reserved memory is free.
    assert!(split_allowed(u64::MAX, G, 64 * MIB) && !split_allowed(u64::MAX, G, 64 * MIB - G));
    // Memory short: any chunk larger than the request is cut, mapped by a cached stitch or not.
    let pressed = SplitView {
        pressed: true,
        ..mapped
    };
    assert_eq!(split_point(&pressed, 0, 17 * G, G), Some(17 * G));
    assert_eq!(
        split_point(&pressed, 0, 64 * G, G),
        None,
        "nothing left to cut off"
    );
    // A placement of 20 granules from 10.5 crosses the chunks [0, 16) and [16, 32): short of
    // memory, the first is cut at the granule holding its start, the second after its end.
    let (at, len) = (10 * G + G / 2, 20 * G);
    let first = SplitView {
        cend: 16 * G,
        holds: false,
        stitch_mapped: false,
        ..pressed
    };
    let second = SplitView {
        cstart: 16 * G,
        cend: 32 * G,
        ..first
    };
    assert_eq!(split_point(&first, at, len, G), Some(10 * G));
    assert_eq!(split_point(&second, at, len, G), Some(31 * G));
    // Not with room, nor where a cached stitched block maps the chunk.
    for c in [first, second] {
        let room = SplitView {
            pressed: false,
            ..c
        };
        let mapped = SplitView {
            stitch_mapped: true,
            ..c
        };
        assert_eq!(split_point(&room, at, len, G), None);
        assert_eq!(split_point(&mapped, at, len, G), None);
    }
}

#[test]
fn memory_is_short_past_the_pressure_share_and_then_grows_by_granules() {
    let cap = 1000 * G;
    let at = cap / 1000 * PRESSURE_PER_MILLE;
    assert!(!under_pressure(at, cap) && under_pressure(at + 1, cap));
    let cfg = Config::default();
    assert_eq!(growth_handle_size(&cfg, G, 1024 * G, true), G);
    // From 2 GiB up, a 1024th of the request, in granules.
    assert_eq!(growth_handle_size(&cfg, G, 4096 * G, true), 4 * G);
    assert_eq!(growth_handle_size(&cfg, G, 4100 * G, true), 5 * G);
    assert_eq!(
        growth_handle_size(&cfg, G, 1024 * G, false),
        handle_size(&cfg, G, 1024 * G)
    );
}

#[test]
fn best_fit_prefers_a_block_that_keeps_chunks_whole() {
    let views = [
        FitView {
            size: 10 * G,
            addr: 0,
            whole: (0, 10 * G),
            small_pool: false,
            late: false,
        },
        FitView {
            size: 12 * G,
            addr: 100 * G,
            whole: (u64::MAX, 0),
            small_pool: false,
            late: false,
        },
    ];
    let pick = pick_fit(0..2, G, |b| Some(views[b as usize]));
    assert_eq!(pick, Some(1));
    let unusable = pick_fit(0..2, G, |b| (b == 0).then_some(views[0]));
    assert_eq!(
        unusable,
        Some(0),
        "the smallest usable when none keeps chunks whole"
    );
}

/// A free block of `size` granules at `at` granules: whole chunks all through it (`whole`: a
/// placement breaks one) or none.
fn fit(size: u64, at: u64, whole: bool, late: bool) -> FitView {
    let addr = at * G;
    let span = if whole {
        (addr, addr + size * G)
    } else {
        (u64::MAX, 0)
    };
    FitView {
        size: size * G,
        addr,
        whole: span,
        small_pool: false,
        late,
    }
}

#[test]
fn best_fit_takes_late_memory_last() {
    // Smallest first: late and keeping chunks whole, early breaking a chunk, early keeping them.
    let views = [
        fit(4, 0, false, true),
        fit(5, 10, true, false),
        fit(6, 20, false, false),
    ];
    let pick = |v: &[FitView]| pick_fit(0..v.len() as BlockId, 2 * G, |b| Some(v[b as usize]));
    assert_eq!(
        pick(&views),
        Some(2),
        "an earlier block keeping chunks whole"
    );
    assert_eq!(
        pick(&views[..2]),
        Some(0),
        "else a late one keeping them whole"
    );
    let breaking = [fit(4, 0, true, true), fit(5, 10, true, false)];
    assert_eq!(pick(&breaking), Some(1), "else the smallest earlier block");
    assert_eq!(pick(&breaking[..1]), Some(0), "else the smallest late one");
    // Late blocks do not count toward the probes: an earlier block keeping chunks whole after
    // FIT_PROBES late ones and FIT_PROBES - 1 earlier ones is still found.
    let mut many = alloc::vec![fit(3, 0, true, true); FIT_PROBES];
    many.extend(core::iter::repeat_n(fit(4, 0, true, false), FIT_PROBES - 1));
    many.push(fit(5, 50, false, false));
    assert_eq!(pick(&many), Some(2 * FIT_PROBES as BlockId - 1));
    many.insert(FIT_PROBES, fit(4, 0, true, false));
    assert_eq!(
        pick(&many),
        Some(FIT_PROBES as BlockId),
        "not past FIT_PROBES earlier ones"
    );
}

#[test]
fn memory_is_late_when_a_settled_job_grows_below_its_live_peak_with_room() {
    assert!(grows_late(true, false, false));
    assert!(
        !grows_late(false, false, false),
        "not before the job has settled"
    );
    assert!(
        !grows_late(true, true, false),
        "not for more live bytes than ever"
    );
    assert!(!grows_late(true, false, true), "not while memory is short");
}
