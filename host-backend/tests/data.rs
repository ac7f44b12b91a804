//! The allocator on real, aliasing host memory: data written through a stitched view is read back
//! through the blocks it maps (and the other way round); random allocate/free/empty_cache sequences
//! keep every byte of every live allocation; an allocation shared with another process (its memory
//! files mapped back to back as the importing side maps them) shows its bytes and takes writes.
//! Trace replays are in `trace_bytes.rs`.

use gmlake_core::{Allocator, Config, Device, Error, Shared, StreamHandle};
use gmlake_host::HostDevice;
use rustix::fd::BorrowedFd;
use rustix::mm::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use std::ffi::c_void;

const MIB: u64 = 1 << 20;
const S0: StreamHandle = StreamHandle(0);

/// The bytes at a host address the allocator handed out (or a view of its chunks).
fn bytes(addr: u64, len: u64) -> &'static mut [u8] {
    // SAFETY: every address passed here lies in memory the test's allocator has mapped and keeps
    // mapped for as long as the slice is used (the tests use it at once).
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) }
}

fn allocator(capacity: u64, cfg: &str) -> Allocator<HostDevice> {
    Allocator::new(
        HostDevice::new(capacity, 2 * MIB),
        Config::parse(cfg).unwrap(),
    )
    .unwrap()
}

/// Three 8 MiB blocks, the outer two freed, then 12 MiB: stitched over the two free ones. Returns
/// the stitched block and the middle block, both live.
fn stitch_over_two_free_blocks(a: &mut Allocator<HostDevice>) -> (u64, u64) {
    let x = a.malloc(8 * MIB, S0).unwrap();
    let y = a.malloc(8 * MIB, S0).unwrap();
    let z = a.malloc(8 * MIB, S0).unwrap();
    a.free(x).unwrap();
    a.free(z).unwrap();
    let s = a.malloc(12 * MIB, S0).unwrap();
    assert_eq!(a.stats().num_stitches, 1);
    (s, y)
}

#[test]
fn a_stitched_view_and_the_blocks_it_maps_alias() {
    let mut a = allocator(256 * MIB, "frag_limit:0,min_handle_size:2MB");
    let (s, y) = stitch_over_two_free_blocks(&mut a);
    let snap = a.snapshot();
    let st = snap.stitched.iter().find(|t| t.address == s).unwrap();
    let views: Vec<(u64, u64)> = st
        .pieces
        .iter()
        .map(|p| (snap.piece_address(p).unwrap(), p.size))
        .collect();
    let pattern: Vec<u8> = (0..12 * MIB).map(|i| (i * 31 % 251) as u8).collect();
    bytes(s, 12 * MIB).copy_from_slice(&pattern);
    let mut off = 0;
    for &(addr, size) in &views {
        let len = size.min(12 * MIB - off);
        assert!(
            bytes(addr, len) == &pattern[off as usize..(off + len) as usize],
            "primitive view misses the write"
        );
        bytes(addr, len).fill(0x5A);
        off += len;
    }
    assert!(
        bytes(s, 12 * MIB).iter().all(|&b| b == 0x5A),
        "stitched view misses the primitive writes"
    );
    for p in [s, y] {
        a.free(p).unwrap();
    }
    assert_eq!(a.release_all().unwrap(), 0);
    let b = a.device().books().unwrap();
    assert_eq!((b.handles, b.ranges, b.mappings), (0, 0, 0));
}

/// Fills an allocation with its own byte, and its id at the head and (when it has room for both,
/// 16 bytes or more) at the tail.
fn fill(addr: u64, size: u64, id: u64) {
    bytes(addr, size).fill((id % 251) as u8);
    let tag = id.to_le_bytes();
    let n = size.min(8) as usize;
    bytes(addr, n as u64).copy_from_slice(&tag[..n]);
    if size >= 16 {
        bytes(addr + size - 8, 8).copy_from_slice(&tag);
    }
}

fn check(addr: u64, size: u64, id: u64) {
    let n = size.min(8);
    let tag = id.to_le_bytes();
    let b = bytes(addr, size);
    assert_eq!(
        &b[..n as usize],
        &tag[..n as usize],
        "allocation {id}: head overwritten"
    );
    if size >= 16 {
        assert_eq!(
            &b[(size - 8) as usize..],
            &tag[..],
            "allocation {id}: tail overwritten"
        );
    }
    if size > 16 {
        let body = &b[n as usize..(size - n) as usize];
        let want = vec![(id % 251) as u8; body.len()];
        assert!(
            body == want.as_slice(),
            "allocation {id} at {addr:#x}+{size}: body overwritten"
        );
    }
}

#[test]
fn random_sequences_keep_every_byte_of_every_allocation() {
    for cfg in [
        "frag_limit:0,min_handle_size:2MB,max_stitch_mappings:32",
        "",
    ] {
        let mut a = allocator(384 * MIB, cfg);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut live: Vec<(u64, u64, u64)> = Vec::new();
        let mut verified = 0;
        for id in 0..4000u64 {
            let r = next() % 100;
            if r < 50 || live.is_empty() {
                let size = match next() % 3 {
                    0 => 1 + next() % (64 << 10),
                    1 => MIB + next() % (6 * MIB),
                    _ => 8 * MIB + next() % (40 * MIB),
                };
                match a.malloc(size, StreamHandle(next() % 2)) {
                    Ok(p) => {
                        fill(p, size, id);
                        live.push((p, size, id));
                    }
                    Err(Error::OutOfMemory(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            } else if r < 97 {
                let (p, size, id) = live.swap_remove((next() % live.len() as u64) as usize);
                check(p, size, id);
                verified += 1;
                a.free(p).unwrap();
            } else {
                a.empty_cache().unwrap();
            }
        }
        for (p, size, id) in live.drain(..) {
            check(p, size, id);
            a.free(p).unwrap();
        }
        assert!(verified > 1500, "{verified}");
        if cfg.starts_with("frag_limit:0") {
            assert!(
                a.stats().num_stitches > 20,
                "{} stitches",
                a.stats().num_stitches
            );
        }
        a.check_invariants().unwrap();
        assert_eq!(a.release_all().unwrap(), 0);
        let b = a.device().books().unwrap();
        assert_eq!((b.handles, b.ranges, b.mappings), (0, 0, 0));
    }
}

/// The pieces of `shared` mapped back to back in a fresh range, as the importing side does.
struct Import {
    base: *mut c_void,
    len: usize,
}

impl Import {
    fn new(shared: &Shared) -> Import {
        let len: u64 = shared.pieces.iter().map(|p| p.size).sum();
        // SAFETY: a fresh private reservation; pieces are mapped over it with MAP_FIXED below.
        let base = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len as usize,
                ProtFlags::empty(),
                MapFlags::PRIVATE,
            )
        }
        .unwrap();
        let mut at = 0;
        for p in &shared.pieces {
            // SAFETY: the descriptor is the allocator's memory file, open while the handle lives.
            let fd = unsafe { BorrowedFd::borrow_raw(p.os_handle as i32) };
            // SAFETY: the target lies inside the reservation made above.
            unsafe {
                mmap(
                    base.cast::<u8>().add(at as usize).cast(),
                    p.size as usize,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED | MapFlags::FIXED,
                    fd,
                    p.offset,
                )
            }
            .unwrap();
            at += p.size;
        }
        Import {
            base,
            len: len as usize,
        }
    }

    fn addr(&self) -> u64 {
        self.base as u64
    }
}

impl Drop for Import {
    fn drop(&mut self) {
        // SAFETY: the range was mapped in `new` and nothing uses it any more.
        unsafe { munmap(self.base, self.len) }.unwrap();
    }
}

fn pattern(len: u64, seed: u64) -> Vec<u8> {
    (0..len).map(|i| ((i * 131 + seed) % 251) as u8).collect()
}

/// Writes a pattern into the allocation, imports it, and checks both directions.
fn check_round_trip(a: &mut Allocator<HostDevice>, p: u64, len: u64, seed: u64) -> Shared {
    let want = pattern(len, seed);
    bytes(p, len).copy_from_slice(&want);
    let shared = a.share(p).unwrap();
    let covered: u64 = shared.pieces.iter().map(|x| x.size).sum();
    assert!(
        shared.offset + len <= covered,
        "pieces {covered} bytes miss the allocation"
    );
    let imp = Import::new(&shared);
    let seen = bytes(imp.addr() + shared.offset, len);
    assert!(
        seen == &want[..],
        "the imported view misses the allocation's bytes"
    );
    seen.fill(0xC3);
    assert!(
        bytes(p, len).iter().all(|&b| b == 0xC3),
        "a write through the import is lost"
    );
    shared
}

#[test]
fn a_block_inside_a_segment_is_shared_with_its_offset() {
    let mut a = allocator(256 * MIB, "min_handle_size:2MB");
    // Several handles per segment; the second allocation starts past the segment's first handle.
    let x = a.malloc(3 * MIB, S0).unwrap();
    let y = a.malloc(5 * MIB, S0).unwrap();
    for (p, len, seed) in [(x, 3 * MIB, 1), (y, 5 * MIB, 2)] {
        let s = check_round_trip(&mut a, p, len, seed);
        assert!(s
            .pieces
            .iter()
            .all(|q| q.offset == 0 && q.size == q.handle_size));
    }
    let again = a.share(y).unwrap();
    assert_eq!(
        again,
        a.share(y).unwrap(),
        "sharing twice names the same descriptors"
    );
    a.free(x).unwrap();
    a.free(y).unwrap();
    assert!(a.share(y).is_err(), "a freed allocation cannot be shared");
}

#[test]
fn a_stitched_block_is_shared_piece_by_piece() {
    let mut a = allocator(256 * MIB, "frag_limit:0,min_handle_size:2MB");
    let (s, y) = stitch_over_two_free_blocks(&mut a);
    let shared = check_round_trip(&mut a, s, 12 * MIB, 3);
    assert_eq!(shared.offset, 0);
    assert!(
        shared.pieces.len() >= 2,
        "a stitch spans several handles: {shared:?}"
    );
    for p in [s, y] {
        a.free(p).unwrap();
    }
}
