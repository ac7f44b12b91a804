//! The allocator on real, aliasing host memory: data written through a stitched view is read back
//! through the blocks it maps (and the other way round); random allocate/free/empty_cache sequences
//! keep every byte of every live allocation. Trace replays are in `trace_bytes.rs`.

use gmlake_core::{Allocator, Config, Device, Error, StreamHandle};
use gmlake_host::HostDevice;

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

#[test]
fn a_stitched_view_and_the_blocks_it_maps_alias() {
    let mut a = allocator(256 * MIB, "frag_limit:0,min_handle_size:2MB");
    let x = a.malloc(8 * MIB, S0).unwrap();
    let y = a.malloc(8 * MIB, S0).unwrap();
    let z = a.malloc(8 * MIB, S0).unwrap();
    a.free(x).unwrap();
    a.free(z).unwrap();
    let s = a.malloc(12 * MIB, S0).unwrap();
    assert_eq!(a.stats().num_stitches, 1);
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
