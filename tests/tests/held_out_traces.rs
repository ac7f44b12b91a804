//! Replays of the held-out traces (`traces/held-out/`): fifty-six real workloads recorded on the
//! H200 after the default configuration was chosen on the three traces of `traces/`, in 14 sets
//! (each recorded after the one before had been studied). The floors are what the default reaches on
//! them (`docs/design.md`, "Held-out traces"), several below the 0.98 goal: they guard against
//! regressions, and they are not goals. What must hold everywhere: no OOM, better than PyTorch,
//! no OOM at PyTorch's own peak reserved memory, nothing left on the device.

mod trace_replay;

use gmlake_core::replay::TraceAction;
use gmlake_core::Config;
use gmlake_replay::passes::replay_passes;

/// The most driver time over PyTorch's estimate on a held-out trace without a guard of its own
/// (1.2x-3.8x, against issue 20's goal of 2x): a regression guard.
const DRIVER_RATIO: f64 = 4.0;

/// mpt_sft's guard: 11.9x measured. At 61 GB it passes 40% of the H200, where memory counts as
/// short: new memory comes in small handles and chunks are cut (`policy::PRESSURE_PER_MILLE`).
const MPT_DRIVER_RATIO: f64 = 13.0;

/// deberta_dynpad's guard: 5.25x measured. Its 147-490 MB attention tensors each grow as 5-16
/// handles of at least 32 MiB where PyTorch makes one `cudaMalloc` (`policy::handle_size`).
const DEBERTA_DRIVER_RATIO: f64 = 5.5;

/// One test per held-out trace, named after it: `name: floor;` replays it with [`DRIVER_RATIO`]
/// as its driver-time guard, `name: floor, ratio;` with a guard of its own (`ratio` x PyTorch's
/// estimate, over what was measured when the trace was added).
macro_rules! floors {
    (@ratio) => { DRIVER_RATIO };
    (@ratio $ratio:expr) => { $ratio };
    ($($name:ident: $floor:expr $(, $ratio:expr)?;)*) => {$(
        #[test]
        fn $name() {
            let ratio = floors!(@ratio $($ratio)?);
            trace_replay::check("traces/held-out", stringify!($name), $floor, 0.0, ratio);
        }
    )*};
}

floors! {
    bert_mlm: 0.994;
    t5_train: 0.995;
    gpt2m_ckpt: 0.974;
    llama_sft: 0.979;
    llama_beam: 0.983;
    vit_train: 0.981;
    mixtral_moe: 0.984;
    roberta_cls: 0.994;
    whisper_train: 0.985;
    resnet_train: 0.991;
    neox_sample: 0.991;
    mistral_lora: 0.985;
    qwen_sft: 0.990;
    llama3_lora: 0.991;
    bloom_train: 0.995;
    bart_train: 0.986;
    clip_train: 0.989;
    convnext_train: 0.974;
    gpt2_gen_var: 0.991;
    bert_dynpad: 0.985;
    vit_dynres: 0.979;
    llama_packed: 0.951;
    opt_accum: 0.989;
    effnet_dynres: 0.996;
    gemma_sft: 0.990;
    phi_ckpt: 0.996;
    t5_beam: 0.982;
    deberta_dynpad: 0.972, DEBERTA_DRIVER_RATIO;
    densenet_dynres: 0.980;
    qwen_gen_sample: 0.978;
    stablelm_fused: 0.989;
    falcon_sft: 0.983;
    regnet_dynres: 0.944;
    starcoder_gen: 0.968;
    qwen_moe_sft: 0.993;
    mpt_sft: 0.989, MPT_DRIVER_RATIO;
    // 4.08x measured: 610 handles of its grouped convolutions' activations.
    resnext_dynres: 0.992, 4.5;
    // 5.42x measured: PyTorch's cache makes 84 cudaMalloc calls, gmlake 307 handles.
    gptneo_gen: 0.999, 6.0;
    llama_dpo: 0.990;
    // 15.0x measured: 76 GB live, past 40% of the H200 (see `MPT_DRIVER_RATIO`).
    pythia_sft: 0.980, 16.0;
    // 6.23x measured: PyTorch's cache makes 46 cudaMalloc calls, gmlake 253 handles.
    vgg_dynres: 0.987, 7.0;
    bart_gen_sample: 0.999;
    mistral_tokens: 0.945;
    mobilenet_dynres: 0.982;
    // 5.22x measured: PyTorch's cache makes 179 cudaMalloc calls over 862,220 allocations.
    phi3_gen: 0.999, 5.5;
    gemma2_lora4: 0.983;
    // 11.0x measured: 88 GB live, past 40% of the H200 (see `MPT_DRIVER_RATIO`).
    qwen2_tokens: 0.989, 12.0;
    dla_dynres: 0.981;
    opt_beam: 0.985;
    wav2vec2_dynlen: 0.985;
    // 10.6x measured: 82 GB live, past 40% of the H200 (see `MPT_DRIVER_RATIO`).
    llama3b_sft: 0.988, 11.5;
    gemma_gen_long: 0.997;
    inception_dynres: 0.995;
    res2net_dynres: 0.995;
    electra_dynpad: 0.995;
    mistral_gen: 0.996;
}

/// Warm passes settle (issue 24's bar): each trace replayed 4 times on one allocator, as a job
/// repeats its steps, makes from the third pass on no new handle and fewer than 1 new stitch per
/// 1000 allocations, at a flat peak. These two stitched again in pass 3 (15 and 12 times) while the
/// memory their second pass grew was used first by the steps before the request that grew it
/// (`policy::grows_late`).
#[test]
fn warm_passes_settle_from_the_third() {
    for name in ["vgg_dynres", "resnet_train"] {
        let events = trace_replay::trace("traces/held-out", name);
        let allocs = events
            .iter()
            .filter(|e| e.action == TraceAction::Alloc)
            .count() as u64;
        let cfg = Config::default();
        let rows = replay_passes(&events, &cfg, trace_replay::H200_BYTES, 4, false).unwrap();
        for p in &rows[2..] {
            assert_eq!(
                (p.handles_created, p.ooms),
                (0, 0),
                "{name}: pass {}",
                p.pass
            );
            assert!(
                p.new_stitches * 1000 < allocs,
                "{name}: {} new stitches in pass {} of {allocs} allocations",
                p.new_stitches,
                p.pass
            );
            assert_eq!(p.peak_reserved_bytes, rows[2].peak_reserved_bytes, "{name}");
        }
    }
}
