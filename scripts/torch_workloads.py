"""gmlake as PyTorch's CUDA allocator, on the GPU machine: runs the training workloads of
traces/record.py (and a vision model with cudnn.benchmark) beside PyTorch's native allocator and
expandable segments, each in its own process, with `import gmlake; gmlake.enable()` from the wheel
on PYTHONPATH, through both routes ("cpp" and "pluggable", whose losses must be equal). WORKLOADS
names a subset.

    python3 scripts/torch_workloads.py OUT_JSON

Prints one line per run and a table; writes all figures to OUT_JSON.
"""
import json, os, subprocess, sys, time

from torch_dynamic import MEMORY_CALLS  # the driver calls that make or map memory

WORKER = r'''
import json, os, random, sys, time
mode, wl, steps, fixed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
gm = mode.startswith("gmlake")
if gm:
    import gmlake
    gmlake.enable(mode="pluggable" if mode == "gmlake-pluggable" else "cpp")
import torch

MEMORY_CALLS = MEMORY_CALLS_HERE

def driver_memory_calls():
    j = gmlake.memory_stats()
    return sum(v for k, v in j.items() if k.startswith("gmlake.driver_calls.") and k.split(".")[-1] in MEMORY_CALLS)

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
torch.manual_seed(0); random.seed(0)
torch.use_deterministic_algorithms(True)
torch.backends.cudnn.benchmark = False
dev = "cuda"
losses, times, calls = [], [], []

def step_loop(m, opt, vocab, choices_L, choices_B):
    for step in range(steps):
        L = choices_L[0] if fixed else random.choice(choices_L)
        B = choices_B[0] if fixed else random.choice(choices_B)
        x = torch.randint(0, vocab, (B, L), device=dev)
        torch.cuda.synchronize(); t = time.perf_counter()
        loss = m(input_ids=x, labels=x).loss; loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(); times.append(time.perf_counter() - t)
        losses.append(loss.item())
        if gm:
            calls.append(driver_memory_calls())

if wl == "gpt2_train":
    from transformers import GPT2Config, GPT2LMHeadModel
    m = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12)).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    step_loop(m, opt, 50257, [128, 256, 384, 512, 768, 1024], [8, 12, 16])
elif wl == "opt13_lora":
    from transformers import OPTConfig, OPTForCausalLM
    from peft import LoraConfig, get_peft_model
    cfg = OPTConfig(hidden_size=2048, num_hidden_layers=24, ffn_dim=8192, num_attention_heads=32, vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=2048)
    m = OPTForCausalLM(cfg).to(dev, torch.bfloat16)
    m.gradient_checkpointing_enable(); m.enable_input_require_grads()
    m = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    step_loop(m, opt, 50272, [256, 512, 768, 1024, 1536, 2048], [16, 24, 32])
elif wl == "resnet50_cudnn":
    # A vision training step as most vision scripts run it: cudnn.benchmark on (its algorithm
    # choice is not deterministic, so losses are compared with a tolerance), channels-last, AMP.
    import timm
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    m = timm.create_model("resnet50", num_classes=1000).to(dev, memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        B = 128 if fixed else random.choice([64, 96, 128])
        x = torch.randn(B, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (B,), device=dev)
        torch.cuda.synchronize(); t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(); times.append(time.perf_counter() - t)
        losses.append(loss.item())
torch.cuda.synchronize()
res = {"mode": mode, "workload": wl, "fixed": fixed, "losses": [repr(x) for x in losses], "step_s": times}
st = gmlake.memory_stats() if gm else torch.cuda.memory_stats()
res.update(peak_requested=st["requested_bytes.all.peak"], peak_reserved=st["reserved_bytes.all.peak"],
           utilization=st["requested_bytes.all.peak"] / st["reserved_bytes.all.peak"])
if gm:
    res.update(stitches=st["gmlake.num_stitches"], reuses=st["gmlake.num_stitch_reuses"], driver_calls_after_step=calls)
print("RESULT", json.dumps(res))
'''.replace("MEMORY_CALLS_HERE", repr(MEMORY_CALLS))

def run(code, args, conf="", timeout=300):
    env = dict(os.environ)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    if conf:
        env["PYTORCH_CUDA_ALLOC_CONF"] = conf
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)
    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT")]
    if not line:
        return {"error": p.stderr[-3000:]}
    return json.loads(line[0][7:])

def main():
    out_json = sys.argv[1]
    results = {}
    runs = []
    gmlake_modes = (("gmlake", ""), ("gmlake-pluggable", ""))
    workloads = os.environ.get("WORKLOADS", "gpt2_train opt13_lora resnet50_cudnn").split()
    for wl in workloads:
        steps = {"gpt2_train": 40, "opt13_lora": 20, "resnet50_cudnn": 40}[wl]
        for mode, conf in (("native", ""), ("native", ""), ("expandable", "expandable_segments:True")) + gmlake_modes:
            t = time.time()
            r = run(WORKER, [mode, wl, str(steps), "0"], conf)
            r["secs"] = round(time.time() - t, 1)
            runs.append(r)
            print(wl, mode, json.dumps({k: v for k, v in r.items() if k not in ("losses", "step_s")}), flush=True)
    fixed = run(WORKER, ["gmlake", "gpt2_train", "8", "1"])
    results["fixed_shape_gmlake"] = fixed
    print("fixed shape", json.dumps(fixed.get("driver_calls_after_step")), flush=True)
    results["runs"] = runs
    json.dump(results, open(out_json, "w"), indent=1)
    # Step time: the median over steps after the first two, and over the two native runs for the
    # native reference (their spread says how much of a difference is noise).
    print(f"\n{'workload':<15} {'allocator':<17} {'util':>7} {'peak reserved GB':>17} {'median step ms':>15} {'x native':>9} {'losses':>22}")
    for wl in workloads:
        rs = [r for r in runs if r.get("workload") == wl]
        ok = [r for r in rs if "error" not in r]
        med = lambda r: sorted(r["step_s"][2:])[len(r["step_s"][2:]) // 2] * 1e3 if r["step_s"][2:] else 0
        natives = [med(r) for r in ok if r["mode"] == "native"]
        ref = sorted(natives)[len(natives) // 2] if natives else float("nan")
        base = next((r["losses"] for r in ok if r["mode"] == "gmlake-pluggable"), None) or (ok[0]["losses"] if ok else None)
        for r in rs:
            if "error" in r:
                print(wl, "ERROR", r["error"][-500:]); continue
            same = r["losses"] == base
            if not same and base and len(base) == len(r["losses"]):
                worst = max(abs(float(a) - float(b)) / max(abs(float(b)), 1e-9) for a, b in zip(r["losses"], base))
                note = f"max rel diff {worst:.1e}"
            else:
                note = "equal" if same else "differ"
            print(f"{wl:<15} {r['mode']:<17} {r['utilization']:>7.4f} {r['peak_reserved']/1e9:>17.2f} {med(r):>15.1f} {med(r)/ref:>9.3f} {note:>22}")


if __name__ == "__main__":
    main()
