//! Settling on dynamic shapes: a job that repeats its steps makes the allocator repeat its
//! choices once it stops growing. Reuse of cached stitched blocks tries the oldest first
//! (`reuse_order` in `core/src/allocator/policy.rs`), so after a pass over the same requests that
//! created no physical handle, the next pass makes no new stitch and no driver call. Checked on
//! random programs of dynamic-shape steps on the simulated device, as `gmlake-replay --passes`
//! replays a trace.

use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, DriverCall, StreamHandle};

const MIB: u64 = 1 << 20;
const S: StreamHandle = StreamHandle(0);

enum Op {
    Alloc(usize, u64),
    Free(usize),
}

/// A small deterministic generator (a linear congruential one), so that each seed is one program.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Twelve training-like steps, each of one of five shapes: per layer an activation kept until
/// the backward pass (sized by the shape, not a multiple of the granularity) and a temporary
/// freed at once; then the backward pass frees the activations in reverse, with gradients of
/// the layer's size living across two layers.
fn program(seed: u64) -> Vec<Op> {
    let mut r = Lcg(seed);
    let mut ops = Vec::new();
    let mut id = 0;
    let mut next = |ops: &mut Vec<Op>, size: u64| {
        ops.push(Op::Alloc(id, size));
        id += 1;
        id - 1
    };
    for _ in 0..24 {
        let shape = 1 + r.below(8);
        let mut acts = Vec::new();
        for layer in 0..12 {
            let a = next(&mut ops, shape * (3 * MIB + layer * 700 * 1024) + 4096);
            acts.push(a);
            let t = next(&mut ops, shape * 5 * MIB / 2 + r.below(6) * MIB);
            if r.below(3) == 0 && acts.len() > 2 {
                let k = r.below(acts.len() as u64 - 1) as usize;
                ops.push(Op::Free(acts.remove(k)));
            }
            ops.push(Op::Free(t));
        }
        let mut grad = None;
        for a in acts.into_iter().rev() {
            let g = next(&mut ops, shape * 2 * MIB + r.below(3) * 512 * 1024);
            ops.push(Op::Free(a));
            if let Some(old) = grad.replace(g) {
                ops.push(Op::Free(old));
            }
        }
        ops.push(Op::Free(grad.unwrap()));
    }
    ops
}

/// Runs the program once on `a`; returns (new stitches, handles created, driver calls).
fn pass(a: &mut Allocator<SimulatedDevice>, ops: &[Op]) -> (u64, u64, u64) {
    let before = a.stats();
    let calls = a.device().calls().total();
    let mut live = std::collections::HashMap::new();
    for op in ops {
        match *op {
            Op::Alloc(id, size) => {
                live.insert(id, a.malloc(size, S).unwrap());
            }
            Op::Free(id) => a.free(live.remove(&id).unwrap()).unwrap(),
        }
    }
    assert!(live.is_empty());
    a.check_invariants().unwrap();
    let after = a.stats();
    let handles = after.driver_calls.get(DriverCall::CreateHandle)
        - before.driver_calls.get(DriverCall::CreateHandle);
    let stitches = after.num_stitches - before.num_stitches;
    (stitches, handles, a.device().calls().total() - calls)
}

#[test]
fn a_pass_after_one_that_created_no_handle_makes_no_new_stitch() {
    for seed in 0..16 {
        let ops = program(seed);
        let cfg = Config::parse("").unwrap();
        let mut a = Allocator::new(SimulatedDevice::new(64 << 30), cfg).unwrap();
        let mut history = Vec::new();
        let quiet = (0..12).find(|_| {
            let (stitches, handles, _) = pass(&mut a, &ops);
            history.push((stitches, handles));
            handles == 0 && history.len() > 1
        });
        assert!(
            quiet.is_some(),
            "seed {seed}: still creating handles: {history:?}"
        );
        assert!(
            history.iter().any(|&(s, _)| s > 0),
            "seed {seed}: never stitched"
        );
        let (stitches, handles, calls) = pass(&mut a, &ops);
        assert_eq!(
            (stitches, handles, calls),
            (0, 0, 0),
            "seed {seed}: after {history:?}"
        );
    }
}
