//! Sharing an allocation with another process, on host memory: the pieces `Allocator::share`
//! gives, mapped back to back as an importing process maps them, show the allocation's bytes from
//! the offset it gives, for a block inside a segment and for a stitched block; writes through the
//! imported view reach the allocation.

use gmlake_core::{Allocator, Config, Shared, StreamHandle};
use gmlake_host::HostDevice;
use rustix::fd::BorrowedFd;
use rustix::mm::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use std::ffi::c_void;

const MIB: u64 = 1 << 20;
const S0: StreamHandle = StreamHandle(0);

fn bytes(addr: u64, len: u64) -> &'static mut [u8] {
    // SAFETY: the tests pass only ranges the allocator or `Import` keeps mapped while used.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) }
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
    let mut a = Allocator::new(
        HostDevice::new(256 * MIB, 2 * MIB),
        Config::parse("min_handle_size:2MB").unwrap(),
    )
    .unwrap();
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
    let mut a = Allocator::new(
        HostDevice::new(256 * MIB, 2 * MIB),
        Config::parse("frag_limit:0,min_handle_size:2MB").unwrap(),
    )
    .unwrap();
    let x = a.malloc(8 * MIB, S0).unwrap();
    let y = a.malloc(8 * MIB, S0).unwrap();
    let z = a.malloc(8 * MIB, S0).unwrap();
    a.free(x).unwrap();
    a.free(z).unwrap();
    let s = a.malloc(12 * MIB, S0).unwrap();
    assert_eq!(a.stats().num_stitches, 1);
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
