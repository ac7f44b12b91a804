//! Driver failures on a real GPU: every kind of driver call fails at several points of a workload
//! that grows segments, stitches, reuses a cached stitched block and shares it with another
//! process (exports its handles), garbage-collects stitched blocks,
//! records events on two streams and empties the cache, through the fuzzer's `FaultyDevice` over
//! the CUDA backend. After every step the allocator passes `check_invariants`; at the end the
//! backend holds no physical handle, virtual range, mapping or event, and the driver's free memory
//! is back where it started. The simulated-device version of this is `core/tests/faults.rs`.
//!
//! Needs a CUDA GPU: ignored otherwise, with that reason; `scripts/gpu-check.sh` runs it.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, Device, DriverCall, Error, StreamHandle};
use gmlake_cuda::{util, CudaVmm};
use gmlake_fuzz::FaultyDevice;

const MIB: u64 = 1 << 20;
const S0: StreamHandle = StreamHandle(0);
/// Small handles so that stitches have several pieces; a 40 MB stitched-bytes bound so that the
/// workload's third stitch must garbage-collect a cached one.
const CONF: &str = "frag_limit:0,min_handle_size:2MB,max_handle_size:8MB,min_growth:2MB,\
                    split_chunks:false,stitched_bytes_limit:40MB";

/// Runs one step; a failure must be a device error or out-of-memory, never anything else, and
/// the allocator must stay consistent either way.
fn step<D: Device>(a: &mut Allocator<D>, what: &str, r: Result<(), Error>) {
    if let Err(e) = &r {
        assert!(
            matches!(e, Error::Device(_) | Error::OutOfMemory(_)),
            "{what}: unexpected error {e}"
        );
    }
    a.check_invariants()
        .unwrap_or_else(|e| panic!("{what}: inconsistent after the step: {e}"));
}

fn malloc<D: Device>(
    a: &mut Allocator<D>,
    live: &mut Vec<u64>,
    size: u64,
    s: StreamHandle,
    what: &str,
) -> Option<u64> {
    let r = a.malloc(size, s);
    let p = r.as_ref().ok().copied();
    step(a, what, r.map(|p| live.push(p)));
    p
}

fn free<D: Device>(a: &mut Allocator<D>, live: &mut Vec<u64>, p: Option<u64>, what: &str) {
    if let Some(p) = p {
        live.retain(|&q| q != p);
        let r = a.free(p);
        step(a, what, r);
    }
}

fn workload<D: Device>(a: &mut Allocator<D>, s1: StreamHandle) -> Vec<u64> {
    let mut live = Vec::new();
    // Eight 8 MiB blocks; every other one freed: four separate free chunks.
    let ps: Vec<Option<u64>> = (0..8)
        .map(|_| malloc(a, &mut live, 8 * MIB, S0, "growth"))
        .collect();
    for p in ps.iter().step_by(2) {
        free(a, &mut live, *p, "free");
    }
    // A stitch, freed, then reused from the cache.
    let st = malloc(a, &mut live, 24 * MIB, S0, "stitch");
    free(a, &mut live, st, "free stitched");
    let st = malloc(a, &mut live, 24 * MIB, S0, "reuse");
    // Shared with another process: its handles exported.
    if let Some(p) = st {
        let r = a.share(p).map(|_| ());
        step(a, "share", r);
    }
    // Work on the second stream, freed there, then wanted on the first: events.
    let x = malloc(a, &mut live, 16 * MIB, s1, "growth on stream 1");
    free(a, &mut live, x, "free on stream 1");
    let y = malloc(a, &mut live, 16 * MIB, S0, "cross-stream request");
    if let Some(y) = y {
        let r = a.record_stream(y, s1);
        step(a, "record_stream", r);
    }
    free(a, &mut live, y, "free after record_stream");
    free(a, &mut live, st, "free stitched again");
    // A larger stitch over the 40 MB bound: the cached stitched block is collected first.
    for p in ps.iter().skip(1).step_by(2).take(2) {
        free(a, &mut live, *p, "free");
    }
    let big = malloc(a, &mut live, 32 * MIB, S0, "stitch after GC");
    free(a, &mut live, big, "free");
    let r = a.empty_cache();
    step(a, "empty_cache", r);
    let _ = malloc(a, &mut live, 8 * MIB, S0, "after empty_cache");
    live
}

/// The same workload on the simulated device, clean: it must make every kind of call the GPU test
/// fails (so that the GPU test's faults land), and it runs without a GPU.
#[test]
fn the_workload_makes_every_kind_of_driver_call() {
    let dev = SimulatedDevice::new(1 << 34);
    let mut a = Allocator::new(dev, Config::parse(CONF).unwrap()).unwrap();
    let live = workload(&mut a, StreamHandle(7));
    let st = a.stats();
    assert!(
        st.num_stitches >= 2 && st.num_stitch_reuses >= 1 && st.num_stitch_gc >= 1,
        "stitches {}, reuses {}, collected {}",
        st.num_stitches,
        st.num_stitch_reuses,
        st.num_stitch_gc
    );
    let missing: Vec<DriverCall> = DriverCall::ALL
        .into_iter()
        .filter(|&k| st.driver_calls.get(k) == 0)
        .collect();
    for p in live {
        a.free(p).unwrap();
    }
    assert_eq!(a.release_all().unwrap(), 0);
    assert!(missing.len() <= 3, "the workload never makes {missing:?}");
    println!("workload misses only {missing:?} before teardown");
}

#[test]
#[ignore = "needs a CUDA GPU: run by scripts/gpu-check.sh"]
fn every_driver_call_failing_at_several_points_leaks_nothing_on_the_gpu() {
    let mut probe = CudaVmm::new(0).unwrap_or_else(|e| panic!("needs a CUDA GPU: {e}"));
    let s1 = util::create_stream(&mut probe).unwrap();
    let baseline = probe.mem_info().unwrap().0;
    let (mut points, mut fired) = (0u32, 0u64);
    let mut kinds_fired = Vec::new();
    for kind in DriverCall::ALL {
        for skip in [0u32, 1, 2, 5, 9, 20] {
            let dev = CudaVmm::new(0).unwrap();
            let capacity = dev.total_memory();
            let mut faulty = FaultyDevice::new(dev, capacity);
            faulty.inject(kind, skip);
            let mut a = Allocator::new(faulty, Config::parse(CONF).unwrap()).unwrap();
            let live = workload(&mut a, s1);
            let hit = a.device().injected();
            points += 1;
            fired += hit;
            if hit > 0 && !kinds_fired.contains(&kind) {
                kinds_fired.push(kind);
            }
            a.device_mut().clear_faults();
            for p in live {
                a.free(p).unwrap();
            }
            assert_eq!(a.release_all().unwrap(), 0, "{kind:?} #{skip}");
            let b = a.device().inner().books().unwrap();
            assert_eq!(
                (b.handles, b.ranges, b.mappings, b.events),
                (0, 0, 0, 0),
                "{kind:?} failing after {skip} calls: the backend still holds something"
            );
            let free_now = a.device_mut().inner_mut().mem_info().unwrap().0;
            assert!(
                baseline.abs_diff(free_now) < 64 * MIB,
                "{kind:?} #{skip}: driver free memory {free_now}, {baseline} before"
            );
        }
    }
    util::destroy_stream(&mut probe, s1).unwrap();
    println!(
        "gpu faults: {points} fault points over {} call kinds, {fired} faults fired (kinds: {kinds_fired:?}), \
         0 handles, ranges, mappings or events left, driver free memory back each time",
        DriverCall::ALL.len()
    );
    assert!(
        kinds_fired.len() >= 10,
        "the workload reaches too few call kinds: {kinds_fired:?}"
    );
}
