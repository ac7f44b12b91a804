"""Long dynamic-shape runs on the GPU machine, live, under PyTorch's native allocator, expandable
segments and gmlake (the C++ route), each in its own process with the same seed:

- `sft_var`: a 1.1B Llama-style model (bf16, AdamW), 200 steps, each a batch of one of six
  sequence lengths (192 to 2048 tokens, about 8k tokens a batch). Per step: time, reserved
  bytes, and under gmlake the driver calls that make or map memory, driver time and stitches.
- `sft_budget`: the first BUDGET_STEPS steps of `sft_var` under
  `torch.cuda.set_per_process_memory_fraction`, the budget BUDGET_FACTOR x the peak requested
  bytes that `sft_var` saw under the native allocator over those steps.
- `generate_var`: launch-bound batched generation (greedy, a small GPT-2, batch 1-8, prompts of
  16-256 tokens, 48 new tokens), wall time of the whole job.
- `captured_train`: a training step of a transformer encoder captured whole in one CUDA graph
  (capturable AdamW), replayed over 50 batches: losses and peak reserved bytes.

    python3 scripts/torch_dynamic.py OUT_JSON [JOB ...]

Prints one line per run and a table; writes every figure to OUT_JSON. Run by
scripts/gpu-check.sh (CHECKS="dynamic").
"""
import json
import os
import subprocess
import sys
import time

MODES = ("native", "expandable", "gmlake")
BUDGET_STEPS = 60
# The budget's factor over native's peak requested bytes (BUDGET_FACTOR in the environment
# overrides it), and where native's `sft_var` figures come from when this run has none: an
# OUT_JSON of an earlier run (BUDGET_REF), which saves the 200-step runs.
BUDGET_FACTOR = float(os.environ.get("BUDGET_FACTOR", "1.02"))
BUDGET_REF = os.environ.get("BUDGET_REF")
# generate_var: rounds a run, and runs of each allocator, interleaved (native, expandable, gmlake,
# native, ...); each allocator's wall time is the least of its runs.
GEN_ROUNDS = int(os.environ.get("GEN_ROUNDS", "40"))
GEN_REPEATS = int(os.environ.get("GEN_REPEATS", "2"))
MEMORY_CALLS = ("create_handle", "map", "set_access", "unmap", "release_handle", "reserve_range", "free_range")

WORKER = r'''
import json, os, random, sys, time
mode, job = sys.argv[1], sys.argv[2]
args = json.loads(sys.argv[3])
gm = mode == "gmlake"
if gm:
    import gmlake
    gmlake.enable(mode="cpp")
import torch
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
torch.manual_seed(0); random.seed(0)
dev = "cuda"
MEMORY_CALLS = MEMORY_CALLS_HERE

def stats():
    return gmlake.memory_stats() if gm else torch.cuda.memory_stats()

def gm_counters():
    if not gm:
        return {}
    s = gmlake.memory_stats()
    return {"memory_calls": sum(v for k, v in s.items() if k.startswith("gmlake.driver_calls.") and k.split(".")[-1] in MEMORY_CALLS),
            "driver_us": s.get("gmlake.driver_us", 0), "stitches": s.get("gmlake.num_stitches", 0)}

res = {"mode": mode, "job": job}
if job in ("sft_var", "sft_budget"):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.use_deterministic_algorithms(True)
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
    m = LlamaForCausalLM(cfg).to(dev, torch.bfloat16)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    if job == "sft_budget":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args["budget"] / total))
        # The allocation history, dumped if the budget is not enough: `gmlake-replay` replays it.
        torch.cuda.memory._record_memory_history(max_entries=2_000_000)
    steps, per = args["steps"], []
    try:
        for step in range(steps):
            L = random.choice([192, 384, 512, 1024, 1536, 2048]); B = 8192 // L
            x = torch.randint(0, 32000, (B, L), device=dev)
            torch.cuda.synchronize(); t = time.perf_counter()
            loss = m(input_ids=x, labels=x).loss; loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            s = stats()
            per.append(dict(step_s=time.perf_counter() - t, loss=repr(loss.item()), reserved=s["reserved_bytes.all.current"],
                            requested_peak=s["requested_bytes.all.peak"], **gm_counters()))
        res["completed"] = True
    except torch.cuda.OutOfMemoryError as e:
        res["completed"] = False
        res["oom"] = str(e)
        res["stats_at_oom"] = {k: v for k, v in stats().items() if "all" in k or k.startswith("gmlake.")}
        art = os.environ.get("FEATURE_ARTIFACTS")
        if art:
            torch.cuda.memory._dump_snapshot(os.path.join(art, "sft_budget-%s.pickle" % mode))
    res["steps"] = per
elif job == "generate_var":
    from transformers import GPT2Config, GPT2LMHeadModel
    m = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12)).to(dev).eval()
    outs, per = [], []
    torch.cuda.synchronize(); t0 = time.perf_counter()
    with torch.no_grad():
        for r in range(args["rounds"]):
            B = random.choice([1, 2, 4, 8]); L = random.choice([16, 32, 64, 128, 256])
            x = torch.randint(0, 50257, (B, L), device=dev)
            y = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=48, do_sample=False, pad_token_id=0)
            outs.append(int(y.sum().item()))
            per.append(gm_counters())
    torch.cuda.synchronize()
    res.update(wall_s=time.perf_counter() - t0, outputs=outs, rounds=per)
elif job == "captured_train":
    torch.use_deterministic_algorithms(True)
    layer = torch.nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True, dropout=0.0)
    model = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, 6), torch.nn.Linear(512, 1)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, capturable=True)
    x_static = torch.randn(32, 256, 512, device=dev); y_static = torch.randn(32, 256, 1, device=dev)
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x_static), y_static).backward(); opt.step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        loss_static = torch.nn.functional.mse_loss(model(x_static), y_static)
        loss_static.backward(); opt.step()
    gen = torch.Generator(device=dev); gen.manual_seed(1)
    losses = []
    for i in range(50):
        x_static.copy_(torch.randn(32, 256, 512, device=dev, generator=gen))
        y_static.copy_(torch.randn(32, 256, 1, device=dev, generator=gen))
        # Tensors allocated between replays: the graph must not write them.
        guard = torch.full((8, 1 << 20), float(i), device=dev)
        g.replay()
        losses.append(repr(loss_static.item()))
        assert bool((guard == float(i)).all()), "a replay wrote a tensor allocated after capture"
        del guard
    res["losses"] = losses
st = stats()
res.update(peak_requested=st["requested_bytes.all.peak"], peak_reserved=st["reserved_bytes.all.peak"])
print("RESULT", json.dumps(res))
'''.replace("MEMORY_CALLS_HERE", repr(MEMORY_CALLS))


def run(mode, job, args, timeout=420):
    env = dict(os.environ)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    if mode == "expandable":
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    t = time.time()
    try:
        p = subprocess.run([sys.executable, "-c", WORKER, mode, job, json.dumps(args)],
                           capture_output=True, text=True, timeout=timeout, env=env)
        line = [l for l in p.stdout.splitlines() if l.startswith("RESULT")]
        r = json.loads(line[0][7:]) if line else {"mode": mode, "job": job, "error": p.stderr[-3000:]}
    except subprocess.TimeoutExpired:
        r = {"mode": mode, "job": job, "error": "timed out"}
    r["secs"] = round(time.time() - t, 1)
    return r


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def after_first_quarter(steps, key):
    """The growth of a cumulative counter over the last three quarters of the steps."""
    q = len(steps) // 4
    return steps[-1][key] - steps[q - 1][key] if q else 0


def main():
    out_json = sys.argv[1]
    jobs = sys.argv[2:] or ["sft_var", "sft_budget", "generate_var", "captured_train"]
    results = {}
    for job in jobs:
        rows = []
        if job == "sft_budget":  # the budget comes from native's sft_var run, this one's or BUDGET_REF's
            earlier = results.get("sft_var") or (json.load(open(BUDGET_REF)).get("sft_var", []) if BUDGET_REF else [])
            ref = next((r for r in earlier if r["mode"] == "native" and "steps" in r), None)
        order = MODES + (("native",) if job == "sft_var" else ())
        if job == "generate_var":  # interleaved repeats: a launch-bound wall time varies run to run
            order = MODES * GEN_REPEATS
        for mode in order:
            if job == "sft_budget":
                if ref is None:
                    break
                budget = int(BUDGET_FACTOR * ref["steps"][BUDGET_STEPS - 1]["requested_peak"])
                args = {"steps": BUDGET_STEPS, "budget": budget}
            else:
                args = {"sft_var": {"steps": 200}, "generate_var": {"rounds": GEN_ROUNDS}, "captured_train": {}}[job]
            r = run(mode, job, args)
            r["args"] = args
            rows.append(r)
            print("ran", job, mode, r.get("error", "")[-300:] or "ok", "in %.0f s" % r["secs"], flush=True)
        results[job] = rows
        json.dump(results, open(out_json, "w"), indent=1)

    print()
    for job, rows in results.items():
        ok = [r for r in rows if "error" not in r]
        for r in rows:
            if "error" in r:
                print(job, r["mode"], "ERROR", r["error"][-400:])
        if job == "sft_var":
            ref = median([median([s["step_s"] for s in r["steps"][10:]]) for r in ok if r["mode"] == "native"])
            base = next((r for r in ok if r["mode"] == "native"), None)
            print("%-12s %-11s %9s %8s %9s %9s %12s %12s %8s %8s" % ("job", "allocator", "step ms", "x native", "peak GB",
                  "res@50", "res@200", "calls 51-200", "drv ms 51-200", "losses"))
            for r in ok:
                st = r["steps"]
                med = median([s["step_s"] for s in st[10:]])
                calls = after_first_quarter(st, "memory_calls") if "memory_calls" in st[0] else "-"
                drv = "%.1f" % (after_first_quarter(st, "driver_us") / 1e3) if "driver_us" in st[0] else "-"
                same = base and [s["loss"] for s in st] == [s["loss"] for s in base["steps"]]
                print("%-12s %-11s %9.1f %8.3f %9.2f %9.2f %12.2f %12s %8s %8s" % (
                    job, r["mode"], med * 1e3, med / ref, r["peak_reserved"] / 1e9, st[49]["reserved"] / 1e9,
                    st[-1]["reserved"] / 1e9, calls, drv, "equal" if same else "differ"))
        elif job == "sft_budget":
            for r in ok:
                print("%-12s %-11s budget %.2f GB (%.2f x native peak requested): %s, %d steps, peak reserved %.2f GB" % (
                    job, r["mode"], r["args"]["budget"] / 1e9, BUDGET_FACTOR,
                    "completed" if r.get("completed") else "OOM", len(r["steps"]), r["peak_reserved"] / 1e9))
        elif job == "generate_var":
            ref = min(r["wall_s"] for r in ok if r["mode"] == "native")
            base = next((r["outputs"] for r in ok if r["mode"] == "native"), None)
            for mode in MODES:
                runs = [r for r in ok if r["mode"] == mode]
                if not runs:
                    continue
                r = min(runs, key=lambda r: r["wall_s"])
                extra = ""
                if r["rounds"] and r["rounds"][0]:
                    q = len(r["rounds"]) // 4
                    extra = "memory calls after round %d: %d" % (q, r["rounds"][-1]["memory_calls"] - r["rounds"][q - 1]["memory_calls"])
                print("%-12s %-11s wall %.2f s (%.3f x native; runs %s) peak reserved %.2f GB outputs %s %s" % (
                    job, mode, r["wall_s"], r["wall_s"] / ref, " ".join("%.2f" % x["wall_s"] for x in runs),
                    r["peak_reserved"] / 1e9, "equal" if all(x["outputs"] == base for x in runs) else "differ", extra))
        elif job == "captured_train":
            base = next((r["losses"] for r in ok if r["mode"] == "native"), None)
            for r in ok:
                print("%-12s %-11s peak reserved %.3f GB, peak requested %.3f GB, losses %s" % (
                    job, r["mode"], r["peak_reserved"] / 1e9, r["peak_requested"] / 1e9,
                    "equal" if r["losses"] == base else "differ"))
    return 0 if all("error" not in r for rows in results.values() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
