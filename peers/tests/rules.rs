//! PyTorch's rules, one at a time, on small made-up sequences (the sizes of
//! `CUDACachingAllocator.cpp`: 512-byte rounding, 2 MiB small segments, 20 MiB segments for 1-10
//! MiB, 2 MiB rounding above, 20 MiB pages for expandable segments).

use gmlake_peers::CachingModel;

const MIB: u64 = 1 << 20;

#[test]
fn native_segment_sizes_and_splits() {
    let mut m = CachingModel::new(false, 1 << 40);
    let a = m.malloc(5 * MIB, 0).unwrap();
    assert_eq!(m.reserved(), 20 * MIB, "1-10 MiB: a 20 MiB segment");
    m.malloc(5 * MIB, 0).unwrap();
    assert_eq!(
        m.reserved(),
        20 * MIB,
        "split: the second lies in the first's segment"
    );
    m.malloc(12 * MIB + 1, 0).unwrap();
    assert_eq!(
        m.reserved(),
        34 * MIB,
        "above 10 MiB: the request rounded to 2 MiB"
    );
    m.malloc(1000, 0).unwrap();
    assert_eq!(
        m.reserved(),
        36 * MIB,
        "small requests: a 2 MiB segment of their own pool"
    );
    m.malloc(1000, 7).unwrap();
    assert_eq!(
        m.reserved(),
        38 * MIB,
        "another stream does not share free blocks"
    );
    m.free(a);
    m.malloc(5 * MIB, 0).unwrap();
    assert_eq!(
        m.reserved(),
        38 * MIB,
        "a freed block serves its stream again"
    );
}

#[test]
fn a_large_block_is_not_split_for_a_remainder_of_a_mebibyte_or_less() {
    let mut m = CachingModel::new(false, 1 << 40);
    let a = m.malloc(20 * MIB, 0).unwrap();
    m.free(a);
    m.malloc(19 * MIB, 0).unwrap(); // takes the whole 20 MiB block: 1 MiB left is not split off
    m.malloc(MIB + 512, 0).unwrap();
    assert_eq!(m.reserved(), 40 * MIB, "the 1 MiB tail was not free for it");
}

#[test]
fn native_out_of_memory_after_releasing_only_unsplit_segments() {
    let mut m = CachingModel::new(false, 40 * MIB);
    let a = m.malloc(30 * MIB, 0).unwrap();
    m.free(a);
    let b = m.malloc(20 * MIB, 0).unwrap(); // best fit: the 30 MiB block, split
    assert_eq!(m.reserved(), 30 * MIB);
    assert!(
        m.malloc(15 * MIB, 0).is_none(),
        "16 MiB more does not fit, and the split segment stays"
    );
    m.free(b);
    assert!(m.malloc(15 * MIB, 0).is_some(), "whole again: it serves");
}

#[test]
fn expandable_segments_map_pages_and_unmap_free_ones_when_full() {
    let mut m = CachingModel::new(true, 60 * MIB);
    let a = m.malloc(5 * MIB, 0).unwrap();
    assert_eq!(m.reserved(), 20 * MIB, "one 20 MiB page");
    m.free(a);
    let (a, b, c) = (
        m.malloc(20 * MIB, 0).unwrap(),
        m.malloc(20 * MIB, 0).unwrap(),
        m.malloc(20 * MIB, 0).unwrap(),
    );
    assert_eq!(m.reserved(), 60 * MIB);
    m.free(a);
    m.free(c);
    // 40 MiB: no free block that large; mapping more is past the capacity; the free pages are
    // unmapped, and the 40 MiB are mapped after b, where C's page and the rest of the segment lie.
    let d = m.malloc(40 * MIB, 0);
    assert!(d.is_some());
    assert_eq!(m.reserved(), 60 * MIB);
    m.free(b);
}
