//! The three traces of `traces/` replayed on real, aliasing host memory, with the data checked:
//! every allocation is filled with its own pattern when it is handed out and the pattern is verified
//! when it is freed. Peak reserved and peak requested bytes must equal the simulated device's
//! exactly (same allocator, same decisions, so the same figures).
//!
//! Two modes:
//! - `GMLAKE_VERIFY_ALL_BYTES=1`: every byte of every allocation is written and verified (word `j`
//!   of allocation `id` holds `id * K ^ j`), spread over all cores. opt13_lora allocates 2.7 TB over
//!   its run, so this is for a large machine: `scripts/gpu-check.sh` runs it on the GPU host.
//! - otherwise the first and last 8 bytes of each allocation hold its id (fast; what CI runs).
//!
//! gpt2_train and opt13_lora need about 32 GB of RAM, so their tests are ignored by default (with
//! that reason) and run with `--include-ignored`; even then a trace whose peak needs more RAM than
//! the machine has available is skipped with a printed message. `GMLAKE_TRACES` names the traces'
//! folder.

use gmlake_core::replay::{replay, TraceAction};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, StreamHandle};
use gmlake_host::HostDevice;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

const MIB: u64 = 1 << 20;
/// The simulated H200's capacity, so both devices see the same room.
const CAPACITY: u64 = 150_754_820_096;
/// Multiplier spreading allocation ids over the pattern words (the 64-bit golden ratio).
const K: u64 = 0x9E37_79B9_7F4A_7C15;
/// Allocations at least this large are filled and verified by several threads.
const PARALLEL_FROM: u64 = 32 * MIB;

fn traces_dir() -> PathBuf {
    std::env::var_os("GMLAKE_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces"))
}

/// Bytes of RAM the kernel says are available (`MemAvailable`), if it says.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The words of `[addr, addr + len)`; `addr` is 512-byte aligned (gmlake's block alignment).
fn words(addr: u64, len: u64) -> &'static mut [u64] {
    assert_eq!(addr % 8, 0, "allocation {addr:#x} is not word-aligned");
    // SAFETY: the range lies in an allocation the test's allocator handed out and that stays
    // mapped until the test frees it, after this slice's last use.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u64, (len / 8) as usize) }
}

fn bytes(addr: u64, len: u64) -> &'static mut [u8] {
    // SAFETY: as for `words`.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) }
}

/// Runs `work(first_word, words)` over the words of an allocation, on several threads when large.
fn for_parts(addr: u64, size: u64, work: impl Fn(u64, &mut [u64]) + Sync) {
    let all = words(addr, size);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if size < PARALLEL_FROM || threads == 1 {
        work(0, all);
        return;
    }
    let per = all.len().div_ceil(threads);
    std::thread::scope(|sc| {
        for (i, part) in all.chunks_mut(per).enumerate() {
            let work = &work;
            sc.spawn(move || work((i * per) as u64, part));
        }
    });
}

fn fill_all(addr: u64, size: u64, id: u64) {
    let base = id.wrapping_mul(K);
    for_parts(addr, size, |first, part| {
        for (j, w) in part.iter_mut().enumerate() {
            *w = base ^ (first + j as u64);
        }
    });
    let tail = size % 8;
    bytes(addr + size - tail, tail).fill(id as u8);
}

/// The first wrong byte offset of an allocation filled by `fill_all`, if any.
fn check_all(addr: u64, size: u64, id: u64) -> Option<u64> {
    let base = id.wrapping_mul(K);
    let bad = std::sync::Mutex::new(None::<u64>);
    for_parts(addr, size, |first, part| {
        if let Some(j) = part
            .iter()
            .enumerate()
            .position(|(j, &w)| w != base ^ (first + j as u64))
        {
            let mut b = bad.lock().unwrap();
            let off = (first + j as u64) * 8;
            *b = Some(b.map_or(off, |o| o.min(off)));
        }
    });
    let tail = size % 8;
    let bad = bad.into_inner().unwrap();
    bad.or_else(|| {
        bytes(addr + size - tail, tail)
            .iter()
            .position(|&b| b != id as u8)
            .map(|i| size - tail + i as u64)
    })
}

fn tag(addr: u64, size: u64, id: u64) {
    let t = id.to_le_bytes();
    let n = size.min(8);
    bytes(addr, n).copy_from_slice(&t[..n as usize]);
    if size >= 16 {
        bytes(addr + size - 8, 8).copy_from_slice(&t);
    }
}

fn check_tag(addr: u64, size: u64, id: u64) -> Option<u64> {
    let t = id.to_le_bytes();
    let n = size.min(8);
    if bytes(addr, n) != &t[..n as usize] {
        return Some(0);
    }
    (size >= 16 && bytes(addr + size - 8, 8) != &t[..]).then(|| size - 8)
}

fn replay_on_host_memory(name: &str) {
    let path = traces_dir().join(format!("{name}.txt.gz"));
    let events = gmlake_trace::read_trace(&path, None).unwrap();
    let sim = replay(
        SimulatedDevice::new(CAPACITY),
        Config::default(),
        events.iter().copied(),
    )
    .unwrap();
    // The memfd pages of the peak, plus room for the test itself.
    let need = sim.peak_reserved_bytes + 2 * (1 << 30);
    match mem_available() {
        Some(have) if have >= need => {}
        have => {
            println!(
                "SKIPPED {name} on host memory: needs {:.1} GB of RAM, {} available here; \
                 scripts/gpu-check.sh runs it on the GPU machine",
                need as f64 / 1e9,
                have.map_or("unknown".to_string(), |h| format!(
                    "{:.1} GB",
                    h as f64 / 1e9
                )),
            );
            return;
        }
    }
    let all_bytes = std::env::var("GMLAKE_VERIFY_ALL_BYTES").is_ok_and(|v| v == "1");
    let start = Instant::now();
    let mut a = Allocator::new(HostDevice::new(CAPACITY, 2 * MIB), Config::default()).unwrap();
    let mut live: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    let (mut verified, mut verified_bytes) = (0u64, 0u64);
    let mut finish = |p: u64, size: u64, id: u64| {
        let bad = if all_bytes {
            check_all(p, size, id)
        } else {
            check_tag(p, size, id)
        };
        if let Some(off) = bad {
            panic!("{name}: allocation {id} ({size} bytes) overwritten at byte {off}");
        }
        verified += 1;
        verified_bytes += if all_bytes { size } else { size.min(16) };
    };
    for (i, e) in events.iter().enumerate() {
        match e.action {
            TraceAction::Alloc => {
                if let Some((q, size, id)) = live.remove(&e.addr) {
                    // The trace reused an address it never freed (a ring buffer's wrap): freed
                    // first, as `gmlake_core::replay` does.
                    finish(q, size, id);
                    a.free(q).unwrap();
                }
                let p = a.malloc(e.size, StreamHandle(e.stream)).unwrap();
                if all_bytes {
                    fill_all(p, e.size, i as u64);
                } else {
                    tag(p, e.size, i as u64);
                }
                live.insert(e.addr, (p, e.size, i as u64));
            }
            TraceAction::FreeRequested => {
                if let Some((p, size, id)) = live.remove(&e.addr) {
                    finish(p, size, id);
                    a.free(p).unwrap();
                }
            }
            _ => {}
        }
    }
    for (_, (p, size, id)) in live.drain() {
        finish(p, size, id);
        a.free(p).unwrap();
    }
    let host = a.stats();
    assert_eq!(
        host.reserved_bytes.all.peak as u64, sim.peak_reserved_bytes,
        "{name}: host and simulated peak reserved bytes differ"
    );
    assert_eq!(
        host.requested_bytes.all.peak as u64, sim.peak_active_bytes,
        "{name}: host and simulated peak requested bytes differ"
    );
    assert_eq!(
        host.num_stitches, sim.num_stitches,
        "{name}: stitch counts differ"
    );
    assert_eq!(a.release_all().unwrap(), 0);
    let books = a.device().books().unwrap();
    assert_eq!(
        (books.handles, books.ranges, books.mappings, books.events),
        (0, 0, 0, 0),
        "{name}: the host device still holds something"
    );
    println!(
        "host replay {name}: {} mode, {verified} allocations verified, {:.1} GB checked, \
         0 errors, utilization {:.4} (simulated {:.4}), peak reserved {} bytes (simulated {}), \
         {} stitches, {:.1} s",
        if all_bytes { "every-byte" } else { "tag" },
        verified_bytes as f64 / 1e9,
        host.requested_bytes.all.peak as f64 / host.reserved_bytes.all.peak as f64,
        sim.utilization,
        host.reserved_bytes.all.peak,
        sim.peak_reserved_bytes,
        host.num_stitches,
        start.elapsed().as_secs_f64(),
    );
}

#[test]
#[ignore = "needs about 32 GB of RAM: run by scripts/gpu-check.sh (check host) with --include-ignored"]
fn gpt2_train_on_host_memory() {
    replay_on_host_memory("gpt2_train");
}

#[test]
#[ignore = "needs about 32 GB of RAM: run by scripts/gpu-check.sh (check host) with --include-ignored"]
fn opt13_lora_on_host_memory() {
    replay_on_host_memory("opt13_lora");
}

#[test]
fn llama_generate_on_host_memory() {
    replay_on_host_memory("llama_generate");
}
