//! Replays of the held-out traces (`traces/held-out/`): fifty-three real workloads recorded on the
//! H200 after the default configuration was chosen on the three traces of `traces/`, in 13 sets
//! (each recorded after the one before had been studied). The floors are what the default reaches on
//! them (`docs/design.md`, "Held-out traces"), several below the 0.98 goal: they guard against
//! regressions, and they are not goals. What must hold everywhere: no OOM, better than PyTorch,
//! no OOM at PyTorch's own peak reserved memory, nothing left on the device.

mod trace_replay;

/// The most driver time over PyTorch's estimate on a held-out trace without a guard of its own
/// (1.2x-3.8x, against issue 20's goal of 2x): a regression guard.
const DRIVER_RATIO: f64 = 4.0;

/// mpt_sft's guard: 11.9x measured. At 61 GB it passes 40% of the H200, where memory counts as
/// short: new memory comes in small handles and chunks are cut (`policy::PRESSURE_PER_MILLE`).
const MPT_DRIVER_RATIO: f64 = 13.0;

/// deberta_dynpad's guard: 5.25x measured. Its 147-490 MB attention tensors each grow as 5-16
/// handles of at least 32 MiB where PyTorch makes one `cudaMalloc` (`policy::handle_size`).
const DEBERTA_DRIVER_RATIO: f64 = 5.5;

fn check(name: &str, floor: f64) {
    trace_replay::check("traces/held-out", name, floor, 0.0, DRIVER_RATIO);
}

/// `check` with a driver-time guard of the trace's own: `ratio` x PyTorch's, over what was
/// measured when the trace was added.
fn check_driver(name: &str, floor: f64, ratio: f64) {
    trace_replay::check("traces/held-out", name, floor, 0.0, ratio);
}

#[test]
fn bert_mlm_reaches_its_floor() {
    check("bert_mlm", 0.994);
}

#[test]
fn t5_train_reaches_its_floor() {
    check("t5_train", 0.995);
}

#[test]
fn gpt2m_ckpt_reaches_its_floor() {
    check("gpt2m_ckpt", 0.974);
}

#[test]
fn llama_sft_reaches_its_floor() {
    check("llama_sft", 0.979);
}

#[test]
fn llama_beam_reaches_its_floor() {
    check("llama_beam", 0.983);
}

#[test]
fn vit_train_reaches_its_floor() {
    check("vit_train", 0.981);
}

#[test]
fn mixtral_moe_reaches_its_floor() {
    check("mixtral_moe", 0.984);
}

#[test]
fn roberta_cls_reaches_its_floor() {
    check("roberta_cls", 0.994);
}

#[test]
fn whisper_train_reaches_its_floor() {
    check("whisper_train", 0.985);
}

#[test]
fn resnet_train_reaches_its_floor() {
    check("resnet_train", 0.991);
}

#[test]
fn neox_sample_reaches_its_floor() {
    check("neox_sample", 0.991);
}

#[test]
fn mistral_lora_reaches_its_floor() {
    check("mistral_lora", 0.985);
}

#[test]
fn qwen_sft_reaches_its_floor() {
    check("qwen_sft", 0.990);
}

#[test]
fn llama3_lora_reaches_its_floor() {
    check("llama3_lora", 0.991);
}

#[test]
fn bloom_train_reaches_its_floor() {
    check("bloom_train", 0.995);
}

#[test]
fn bart_train_reaches_its_floor() {
    check("bart_train", 0.986);
}

#[test]
fn clip_train_reaches_its_floor() {
    check("clip_train", 0.989);
}

#[test]
fn convnext_train_reaches_its_floor() {
    check("convnext_train", 0.974);
}

#[test]
fn gpt2_gen_var_reaches_its_floor() {
    check("gpt2_gen_var", 0.991);
}

#[test]
fn bert_dynpad_reaches_its_floor() {
    check("bert_dynpad", 0.985);
}

#[test]
fn vit_dynres_reaches_its_floor() {
    check("vit_dynres", 0.979);
}

#[test]
fn llama_packed_reaches_its_floor() {
    check("llama_packed", 0.951);
}

#[test]
fn opt_accum_reaches_its_floor() {
    check("opt_accum", 0.989);
}

#[test]
fn effnet_dynres_reaches_its_floor() {
    check("effnet_dynres", 0.996);
}

#[test]
fn gemma_sft_reaches_its_floor() {
    check("gemma_sft", 0.990);
}

#[test]
fn phi_ckpt_reaches_its_floor() {
    check("phi_ckpt", 0.996);
}

#[test]
fn t5_beam_reaches_its_floor() {
    check("t5_beam", 0.982);
}

#[test]
fn deberta_dynpad_reaches_its_floor() {
    check_driver("deberta_dynpad", 0.974, DEBERTA_DRIVER_RATIO);
}

#[test]
fn densenet_dynres_reaches_its_floor() {
    check("densenet_dynres", 0.980);
}

#[test]
fn qwen_gen_sample_reaches_its_floor() {
    check("qwen_gen_sample", 0.978);
}

#[test]
fn stablelm_fused_reaches_its_floor() {
    check("stablelm_fused", 0.989);
}

#[test]
fn falcon_sft_reaches_its_floor() {
    check("falcon_sft", 0.983);
}

#[test]
fn regnet_dynres_reaches_its_floor() {
    check("regnet_dynres", 0.944);
}

#[test]
fn starcoder_gen_reaches_its_floor() {
    check("starcoder_gen", 0.968);
}

#[test]
fn qwen_moe_sft_reaches_its_floor() {
    check("qwen_moe_sft", 0.993);
}

#[test]
fn mpt_sft_reaches_its_floor() {
    check_driver("mpt_sft", 0.989, MPT_DRIVER_RATIO);
}

#[test]
fn resnext_dynres_reaches_its_floor() {
    // 4.08x measured: 610 handles of its grouped convolutions' activations.
    check_driver("resnext_dynres", 0.992, 4.5);
}

#[test]
fn gptneo_gen_reaches_its_floor() {
    // 5.42x measured: PyTorch's cache makes 84 cudaMalloc calls, gmlake 307 handles.
    check_driver("gptneo_gen", 0.999, 6.0);
}

#[test]
fn llama_dpo_reaches_its_floor() {
    check("llama_dpo", 0.991);
}

#[test]
fn pythia_sft_reaches_its_floor() {
    // 15.0x measured: 76 GB live, past 40% of the H200 (see `MPT_DRIVER_RATIO`).
    check_driver("pythia_sft", 0.980, 16.0);
}

#[test]
fn vgg_dynres_reaches_its_floor() {
    // 6.23x measured: PyTorch's cache makes 46 cudaMalloc calls, gmlake 253 handles.
    check_driver("vgg_dynres", 0.987, 7.0);
}

#[test]
fn bart_gen_sample_reaches_its_floor() {
    check("bart_gen_sample", 0.999);
}

#[test]
fn mistral_tokens_reaches_its_floor() {
    check("mistral_tokens", 0.945);
}

#[test]
fn mobilenet_dynres_reaches_its_floor() {
    check("mobilenet_dynres", 0.982);
}

#[test]
fn phi3_gen_reaches_its_floor() {
    // 5.22x measured: PyTorch's cache makes 179 cudaMalloc calls over 862,220 allocations.
    check_driver("phi3_gen", 0.999, 5.5);
}

#[test]
fn gemma2_lora4_reaches_its_floor() {
    check("gemma2_lora4", 0.983);
}

#[test]
fn qwen2_tokens_reaches_its_floor() {
    // 11.0x measured: 88 GB live, past 40% of the H200 (see `MPT_DRIVER_RATIO`).
    check_driver("qwen2_tokens", 0.989, 12.0);
}

#[test]
fn dla_dynres_reaches_its_floor() {
    check("dla_dynres", 0.981);
}

#[test]
fn opt_beam_reaches_its_floor() {
    check("opt_beam", 0.985);
}

#[test]
fn wav2vec2_dynlen_reaches_its_floor() {
    check("wav2vec2_dynlen", 0.992);
}

#[test]
fn llama3b_sft_reaches_its_floor() {
    // 10.6x measured: 82 GB live, past 40% of the H200 (see `MPT_DRIVER_RATIO`).
    check_driver("llama3b_sft", 0.989, 11.5);
}

#[test]
fn gemma_gen_long_reaches_its_floor() {
    check("gemma_gen_long", 0.997);
}

#[test]
fn inception_dynres_reaches_its_floor() {
    check("inception_dynres", 0.995);
}
