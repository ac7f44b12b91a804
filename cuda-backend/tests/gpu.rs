//! The CUDA backend on a real GPU. These tests need a CUDA driver and GPU; without one they are
//! ignored with that reason, and `scripts/gpu-check.sh` runs them on the GPU machine
//! (`--ignored`). They check data, not timing: every allocation holds its own pattern, verified
//! before it is freed; stitched views are read back through the blocks they alias; stream safety
//! is checked by what the memory holds after the streams' work.

use gmlake_core::replay::{Replayer, TraceAction};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, DriverCall, Error, StreamHandle};
use gmlake_cuda::{util, CudaError, CudaVmm};
use std::path::PathBuf;

const MIB: u64 = 1 << 20;
const S0: StreamHandle = StreamHandle(0);
const NEEDS_GPU: &str = "needs a CUDA GPU: run by scripts/gpu-check.sh";

fn allocator(cfg: &str) -> Allocator<CudaVmm> {
    let dev = CudaVmm::new(0).unwrap_or_else(|e| panic!("{NEEDS_GPU}: {e}"));
    Allocator::new(dev, Config::parse(cfg).unwrap()).unwrap()
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2654435761).wrapping_add(seed * 97) >> 7) as u8)
        .collect()
}

#[test]
fn opening_a_device_fails_cleanly_without_a_driver_or_with_a_bad_ordinal() {
    match CudaVmm::new(0) {
        Ok(dev) => {
            assert!(dev.granularity().is_power_of_two() && dev.total_memory() > 0);
            assert!(matches!(
                CudaVmm::new(9999),
                Err(CudaError::Driver {
                    call: "cuDeviceGet",
                    ..
                })
            ));
        }
        Err(e) => {
            assert!(
                !gmlake_cuda::driver_present(),
                "a driver is present but opening failed: {e}"
            );
            assert_eq!(e, CudaError::NoDriver);
            assert!(matches!(CudaVmm::new(9999), Err(CudaError::NoDriver)));
            eprintln!(
                "no CUDA driver here; the GPU tests of this file are run by scripts/gpu-check.sh"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/gpu-check.sh"]
fn stitched_views_alias_the_blocks_they_map() {
    let mut a = allocator("frag_limit:0");
    let x = a.malloc(8 * MIB, S0).unwrap();
    let y = a.malloc(8 * MIB, S0).unwrap();
    let z = a.malloc(8 * MIB, S0).unwrap();
    a.free(x).unwrap();
    a.free(z).unwrap();
    let p = a.malloc(12 * MIB, S0).unwrap();
    assert_eq!(
        a.stats().num_stitches,
        1,
        "12 MiB over two free 8 MiB blocks must stitch"
    );
    let snap = a.snapshot();
    let st = snap
        .stitched
        .iter()
        .find(|s| s.address == p)
        .expect("the stitched block");
    // Primitive addresses of each piece, in the stitched order.
    let mut views = Vec::new();
    for piece in &st.pieces {
        views.push((snap.piece_address(piece).unwrap(), piece.size));
    }
    assert!(views.len() >= 2, "{views:?}");
    // Write through the stitched range, read through the primitive views...
    let data = pattern(1, (12 * MIB) as usize);
    util::write(a.device_mut(), p, &data).unwrap();
    let mut off = 0usize;
    for &(addr, size) in &views {
        let len = (size as usize).min(data.len() - off);
        let got = util::read(a.device_mut(), addr, len).unwrap();
        assert!(
            got == data[off..off + len],
            "primitive view at {addr:#x} does not see the stitched write"
        );
        off += len;
    }
    // ...and the other way round.
    let data2 = pattern(2, (12 * MIB) as usize);
    let mut off = 0usize;
    for &(addr, size) in &views {
        let len = (size as usize).min(data2.len() - off);
        util::write(a.device_mut(), addr, &data2[off..off + len]).unwrap();
        off += len;
    }
    assert!(
        util::read(a.device_mut(), p, data2.len()).unwrap() == data2,
        "stitched view does not see primitive writes"
    );
    for q in [p, y] {
        a.free(q).unwrap();
    }
    assert_eq!(a.release_all().unwrap(), 0);
    let b = a.device().books().unwrap();
    assert_eq!((b.handles, b.ranges, b.mappings, b.events), (0, 0, 0, 0));
}

/// Fills an allocation with its own pattern: a byte value over all of it, and its id at both ends.
fn stamp(a: &mut Allocator<CudaVmm>, p: u64, size: u64, id: u64) {
    util::fill_async(a.device_mut(), p, (id % 251) as u8, size as usize, S0).unwrap();
    let tag = id.to_le_bytes();
    let n = (size as usize).min(8);
    util::write(a.device_mut(), p, &tag[..n]).unwrap();
    util::write(a.device_mut(), p + size - n as u64, &tag[..n]).unwrap();
}

fn verify(a: &mut Allocator<CudaVmm>, p: u64, size: u64, id: u64) {
    let n = (size as usize).min(8);
    let tag = id.to_le_bytes();
    let head = util::read(a.device_mut(), p, n).unwrap();
    let tail = util::read(a.device_mut(), p + size - n as u64, n).unwrap();
    assert_eq!(
        (&head[..], &tail[..]),
        (&tag[..n], &tag[..n]),
        "allocation {id} at {p:#x}+{size}: ends overwritten"
    );
    let fill = (id % 251) as u8;
    // The whole body when small, three 64 KiB stripes otherwise.
    let spans: Vec<(u64, u64)> = if size <= 4 * MIB {
        vec![(0, size)]
    } else {
        vec![
            (0, 64 << 10),
            (size / 2, 64 << 10),
            (size - (64 << 10), 64 << 10),
        ]
    };
    for (off, len) in spans {
        let got = util::read(a.device_mut(), p + off, len as usize).unwrap();
        let bad = got.iter().enumerate().find(|&(i, &b)| {
            let at = off + i as u64;
            b != fill && at >= n as u64 && at < size - n as u64
        });
        assert!(
            bad.is_none(),
            "allocation {id} at {p:#x}+{size}: byte {:?} overwritten",
            bad.map(|(i, _)| off + i as u64)
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/gpu-check.sh"]
fn random_sequences_keep_every_allocations_pattern() {
    random_sequence("frag_limit:0,max_handle_size:64MB,max_stitch_mappings:64");
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/gpu-check.sh"]
fn random_sequences_keep_every_pattern_when_stitches_map_free_ends() {
    // One-granule handles: whole chunks often fall short, and stitched blocks map chunks whose
    // other bytes live tensors hold (`stitch_free_ends`).
    let cfg = "frag_limit:0,min_handle_size:2MB,max_handle_size:2MB,stitch_free_ends:true";
    let leads = random_sequence(cfg);
    assert!(
        leads > 0,
        "some stitched block must serve from inside a chunk"
    );
}

/// 3,000 random allocations, frees and `empty_cache` calls under a 1 GiB limit with configuration
/// `cfg`, each allocation stamped with a pattern that is verified before it is freed. Returns how
/// many live stitched blocks served from inside a chunk (a free end) at the invariant checks.
fn random_sequence(cfg: &str) -> usize {
    let mut a = allocator(cfg);
    a.set_reserved_limit(Some(1 << 30));
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut live: Vec<(u64, u64, u64)> = Vec::new();
    let (mut ooms, mut verified, mut leads) = (0, 0, 0);
    for id in 0..3000u64 {
        let r = next() % 100;
        if r < 52 || live.is_empty() {
            let size = match next() % 3 {
                0 => 1 + next() % (64 << 10),
                1 => MIB + next() % (8 * MIB),
                _ => 8 * MIB + next() % (88 * MIB),
            };
            match a.malloc(size, S0) {
                Ok(p) => {
                    stamp(&mut a, p, size, id);
                    live.push((p, size, id));
                }
                Err(Error::OutOfMemory(_)) => ooms += 1,
                Err(e) => panic!("{e}"),
            }
        } else if r < 97 {
            let (p, size, id) = live.swap_remove((next() % live.len() as u64) as usize);
            verify(&mut a, p, size, id);
            verified += 1;
            a.free(p).unwrap();
        } else {
            a.empty_cache().unwrap();
        }
        if id % 100 == 0 {
            a.check_invariants().unwrap();
            let gran = a.granularity();
            leads += a
                .snapshot()
                .stitched
                .iter()
                .filter(|s| s.active && s.address % gran != 0)
                .count();
        }
    }
    for (p, size, id) in live.drain(..) {
        verify(&mut a, p, size, id);
        a.free(p).unwrap();
    }
    let st = a.stats();
    println!(
        "random: {verified} allocations verified, {ooms} OOMs at the 1 GiB limit, {} stitches, {} reuses",
        st.num_stitches, st.num_stitch_reuses
    );
    assert!(st.num_stitches > 10, "the sequence must stitch");
    assert_eq!(a.release_all().unwrap(), 0);
    let b = a.device().books().unwrap();
    assert_eq!((b.handles, b.ranges, b.mappings, b.events), (0, 0, 0, 0));
    leads
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/gpu-check.sh"]
fn a_refused_growth_rolls_back_completely() {
    let mut a = allocator("");
    let total = a.device().total_memory();
    let before = a.device_mut().mem_info().unwrap().0;
    // More than the device has: the driver refuses a handle part-way; everything is released.
    let err = a.malloc(total + total / 2, S0).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    let b = a.device().books().unwrap();
    assert_eq!(
        (b.handles, b.mappings),
        (0, 0),
        "handles of the refused growth were kept"
    );
    assert_eq!(a.stats().reserved_bytes.all.current, 0);
    let after = a.device_mut().mem_info().unwrap().0;
    assert!(
        before.abs_diff(after) < 64 * MIB,
        "driver free memory moved from {before} to {after}"
    );
    a.check_invariants().unwrap();
    // The limit refuses without a driver call; the next request is served.
    a.set_memory_fraction(0.001).unwrap();
    assert!(matches!(a.malloc(1 << 30, S0), Err(Error::OutOfMemory(i)) if i.limit.is_some()));
    a.set_reserved_limit(None);
    let p = a.malloc(64 * MIB, S0).unwrap();
    stamp(&mut a, p, 64 * MIB, 7);
    verify(&mut a, p, 64 * MIB, 7);
    a.free(p).unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
}

/// Block `x` is freed on stream A while 200 copies into it are still queued on A; a request of the
/// same size on stream B follows at once and is filled on B. If the allocator handed B the memory
/// A is still writing, A's copies would land on B's fill.
fn stream_scenario(same_stream_misuse: bool) -> (bool, u64, u64) {
    let mut a = allocator("");
    let sa = util::create_stream(a.device_mut()).unwrap();
    let sb = util::create_stream(a.device_mut()).unwrap();
    let size = 256 * MIB;
    let src = a.malloc(size, sa).unwrap();
    util::fill_async(a.device_mut(), src, 0xAA, size as usize, sa).unwrap();
    let x = a.malloc(size, sa).unwrap();
    for _ in 0..200 {
        util::copy_async(a.device_mut(), x, src, size as usize, sa).unwrap();
    }
    a.free(x).unwrap();
    // The misuse control allocates on A (where reuse is legitimately immediate) but then writes
    // on B without record_stream: the check must see the corruption then.
    let y = a
        .malloc(size, if same_stream_misuse { sa } else { sb })
        .unwrap();
    util::fill_async(a.device_mut(), y, 0x55, size as usize, sb).unwrap();
    util::sync_stream(a.device_mut(), sb).unwrap();
    util::sync_stream(a.device_mut(), sa).unwrap();
    let got = util::read(a.device_mut(), y, size as usize).unwrap();
    let clean = got.iter().all(|&b| b == 0x55);
    a.free(y).unwrap();
    a.free(src).unwrap();
    assert_eq!(a.release_all().unwrap(), 0);
    util::destroy_stream(a.device_mut(), sa).unwrap();
    util::destroy_stream(a.device_mut(), sb).unwrap();
    (clean, x, y)
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/gpu-check.sh"]
fn a_block_freed_on_a_busy_stream_is_not_reused_by_another_until_its_work_is_done() {
    let (clean, x, y) = stream_scenario(false);
    assert!(
        clean,
        "B's allocation {y:#x} was overwritten by A's copies into freed {x:#x}"
    );
    // Negative control: the check does detect reuse while A is busy.
    let (clean, x, y) = stream_scenario(true);
    assert_eq!(
        x, y,
        "the control reuses the block at once on its own stream"
    );
    assert!(!clean, "control: writing on B into a block A still copies into should be corrupted; the copies were too short to tell");
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/gpu-check.sh"]
fn record_stream_keeps_a_block_until_the_other_streams_work_is_done() {
    let mut a = allocator("");
    let sa = util::create_stream(a.device_mut()).unwrap();
    let sb = util::create_stream(a.device_mut()).unwrap();
    let size = 256 * MIB;
    let src = a.malloc(size, sb).unwrap();
    util::fill_async(a.device_mut(), src, 0xAA, size as usize, sb).unwrap();
    // x belongs to A but B copies into it: record_stream says so.
    let x = a.malloc(size, sa).unwrap();
    util::sync_stream(a.device_mut(), sb).unwrap();
    for _ in 0..200 {
        util::copy_async(a.device_mut(), x, src, size as usize, sb).unwrap();
    }
    a.record_stream(x, sb).unwrap();
    a.free(x).unwrap();
    let y = a.malloc(size, sa).unwrap();
    util::fill_async(a.device_mut(), y, 0x55, size as usize, sa).unwrap();
    util::sync_stream(a.device_mut(), sa).unwrap();
    util::sync_stream(a.device_mut(), sb).unwrap();
    let got = util::read(a.device_mut(), y, size as usize).unwrap();
    assert!(
        got.iter().all(|&b| b == 0x55),
        "y {y:#x} was overwritten by B's copies into x {x:#x}"
    );
    for p in [y, src] {
        a.free(p).unwrap();
    }
    assert_eq!(a.release_all().unwrap(), 0);
    util::destroy_stream(a.device_mut(), sa).unwrap();
    util::destroy_stream(a.device_mut(), sb).unwrap();
}

/// The repository's traces; `GMLAKE_TRACES` names their folder where the test binary runs on
/// another machine than the one that built it.
fn trace(name: &str) -> Vec<gmlake_core::replay::TraceEvent> {
    let dir = std::env::var_os("GMLAKE_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces"));
    let path = dir.join(format!("{name}.txt.gz"));
    gmlake_trace::read_trace(&path, None).unwrap()
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/gpu-check.sh"]
fn trace_replays_on_the_gpu_match_the_driver_and_the_simulation() {
    // The three traces the defaults were chosen on must reach 0.98; the held-out ones
    // (`traces/held-out/`) must match the simulation, whatever it reaches.
    const TRACES: [(&str, bool); 21] = [
        ("gpt2_train", true),
        ("opt13_lora", true),
        ("llama_generate", true),
        ("held-out/bert_mlm", false),
        ("held-out/t5_train", false),
        ("held-out/gpt2m_ckpt", false),
        ("held-out/llama_sft", false),
        ("held-out/llama_beam", false),
        ("held-out/vit_train", false),
        ("held-out/mixtral_moe", false),
        ("held-out/roberta_cls", false),
        ("held-out/whisper_train", false),
        ("held-out/resnet_train", false),
        ("held-out/neox_sample", false),
        ("held-out/mistral_lora", false),
        ("held-out/qwen_sft", false),
        ("held-out/llama3_lora", false),
        ("held-out/bloom_train", false),
        ("held-out/bart_train", false),
        ("held-out/clip_train", false),
        ("held-out/convnext_train", false),
    ];
    for (name, goal) in TRACES {
        let events = trace(name);
        let dev = CudaVmm::new(0).unwrap();
        let gran = dev.granularity();
        let total = dev.total_memory();
        let mut r = Replayer::new(dev, Config::default()).unwrap();
        let (free0, _) = r.allocator_mut().device_mut().mem_info().unwrap();
        let mut worst: u64 = 0;
        let start = std::time::Instant::now();
        for (i, ev) in events.iter().enumerate() {
            r.step(ev);
            if i % 2000 == 0 || (ev.action == TraceAction::Alloc && i % 97 == 0) {
                let reserved = r.allocator().stats_ref().reserved_bytes.all.current as u64;
                let (free, _) = r.allocator_mut().device_mut().mem_info().unwrap();
                let used = free0.saturating_sub(free);
                worst = worst.max(used.abs_diff(reserved));
            }
        }
        let wall = start.elapsed();
        let timings = r.allocator().device().timings();
        let gpu = r.finish().unwrap();
        let sim =
            gmlake_core::replay::replay(SimulatedDevice::new(total), Config::default(), events)
                .unwrap();
        println!(
            "replay {name}: util gpu {:.4} sim {:.4}; peak reserved {} vs {}; OOMs {}; driver-used minus reserved: worst {} bytes ({:.1} granules); wall {:.1} ms; driver {:.1} ms measured vs {:.1} ms estimated (PyTorch est. {:.1} ms)",
            gpu.utilization,
            sim.utilization,
            gpu.peak_reserved_bytes,
            sim.peak_reserved_bytes,
            gpu.ooms,
            worst,
            worst as f64 / gran as f64,
            wall.as_secs_f64() * 1e3,
            gpu.estimated_driver_us / 1e3,
            sim.estimated_driver_us / 1e3,
            sim.native_estimated_driver_us / 1e3
        );
        for call in DriverCall::ALL {
            if let Some(us) = timings.mean_us(call) {
                println!(
                    "  {name} {call}: {} calls, mean {us:.1} us",
                    timings.calls[call.index()]
                );
            }
        }
        println!(
            "  {name} mappings covered: set_access {}, unmap {}",
            timings.mappings_covered[0], timings.mappings_covered[1]
        );
        assert_eq!(gpu.ooms, 0, "{name}");
        assert!(
            !goal || gpu.utilization >= 0.98,
            "{name}: {}",
            gpu.utilization
        );
        assert!(
            (gpu.utilization - sim.utilization).abs() <= 0.005,
            "{name}: gpu {} sim {}",
            gpu.utilization,
            sim.utilization
        );
        assert!(
            worst <= 4 * gran,
            "{name}: driver-used and reserved differ by {worst} bytes"
        );
        assert_eq!(
            (
                gpu.end_handles,
                gpu.end_ranges,
                gpu.end_mappings,
                gpu.end_events
            ),
            (0, 0, 0, 0),
            "{name}"
        );
    }
}

/// Fills `size` bytes at `p` `rounds` times and returns the bandwidth in GB/s (wall time around
/// the fills and a device synchronization).
fn fill_bandwidth(a: &mut Allocator<CudaVmm>, p: u64, size: u64, rounds: u32) -> f64 {
    a.device_mut().synchronize_device().unwrap();
    let t = std::time::Instant::now();
    for r in 0..rounds {
        util::fill_async(a.device_mut(), p, r as u8, size as usize, S0).unwrap();
    }
    a.device_mut().synchronize_device().unwrap();
    (size * rounds as u64) as f64 / t.elapsed().as_secs_f64() / 1e9
}

#[test]
#[ignore = "needs two CUDA GPUs with peer access: run by scripts/gpu-check.sh on nvidia-h200-x2"]
fn a_stitched_block_spanning_two_gpus_holds_its_data() {
    let mut a = allocator("peer_borrow:on,peer_borrow_limit:1GB,max_handle_size:64MB");
    if a.device().peers().is_empty() {
        eprintln!("skipped: GPU 0 has no peer GPU (needs two GPUs with peer access)");
        return;
    }
    // Device 0 limited to 256 MiB and full; two 64 MiB blocks freed.
    a.set_reserved_limit(Some(256 * MIB));
    let ps: Vec<u64> = (0..4).map(|_| a.malloc(64 * MIB, S0).unwrap()).collect();
    a.free(ps[0]).unwrap();
    a.free(ps[2]).unwrap();
    let p = a.malloc(256 * MIB, S0).unwrap();
    let st = a.stats();
    assert_eq!(
        st.borrowed_bytes.current,
        128 * MIB as i64,
        "half of it is the peer's"
    );
    assert!(
        st.num_stitches >= 1,
        "one stitched block over both GPUs' memory"
    );
    a.check_invariants().unwrap();
    stamp(&mut a, p, 256 * MIB, 11);
    verify(&mut a, p, 256 * MIB, 11);
    // Bandwidth of device 0 writing the peer's memory (new memory starts a stitched block) and
    // its own (the rest).
    let remote = fill_bandwidth(&mut a, p, 128 * MIB, 20);
    let local = fill_bandwidth(&mut a, p + 128 * MIB, 128 * MIB, 20);
    eprintln!("peer borrow: fill bandwidth local {local:.0} GB/s, borrowed {remote:.0} GB/s");
    a.free(p).unwrap();
    a.free(ps[1]).unwrap();
    a.free(ps[3]).unwrap();
    a.empty_cache().unwrap();
    assert_eq!(
        a.stats().borrowed_bytes.current,
        0,
        "empty_cache returns the peer's memory"
    );
    assert_eq!(a.release_all().unwrap(), 0);
}
