"""Training on several GPUs under torchrun (one process a GPU), with DDP and with FSDP2 plus
activation checkpointing, under PyTorch's native allocator, expandable segments and gmlake (the
C++ route, on every rank): losses per step (equal to native's), and per rank the peak reserved
bytes and the median step time. Then, where the ranks' GPUs are peers, gmlake's peer borrowing on
a job that does not fit on one GPU. Needs NCCL and at least two GPUs (nvidia-h200-x2); NVLink
multicast stays off (NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1),
as the GPU machines require.

    python3 scripts/torch_multi_gpu.py OUT_JSON          # driver: every run, a table
    torchrun --nproc_per_node=N scripts/torch_multi_gpu.py --worker ALLOC STRATEGY OUT_JSON

Run by scripts/gpu-check.sh (CHECKS="multigpu").
"""
import json
import os
import subprocess
import sys
import time

SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
STEPS = 20


def worker(alloc, strategy, out_json):
    if alloc == "gmlake":
        import gmlake
        gmlake.enable(mode="cpp")
    import random
    import torch
    import torch.distributed as dist
    from transformers import GPT2Config, GPT2LMHeadModel

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(0)
    random.seed(rank)
    torch.use_deterministic_algorithms(True)
    cfg = GPT2Config(n_layer=24, n_embd=1024, n_head=16)  # GPT-2 medium, 355M
    model = GPT2LMHeadModel(cfg).cuda()
    if strategy == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local])
    else:
        from torch.distributed.fsdp import fully_shard
        model.gradient_checkpointing_enable()
        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses, times = [], []
    for step in range(STEPS):
        L = random.choice([256, 512, 768, 1024])
        x = torch.randint(0, 50257, (8, L), device="cuda")
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        avg = loss.detach().clone()
        dist.all_reduce(avg)
        losses.append(repr((avg / world).item()))
    st = gmlake.memory_stats() if alloc == "gmlake" else torch.cuda.memory_stats()
    res = {"rank": rank, "alloc": alloc, "strategy": strategy, "losses": losses, "step_s": times,
           "peak_reserved": st["reserved_bytes.all.peak"], "peak_requested": st["requested_bytes.all.peak"]}
    gathered = [None] * world
    dist.all_gather_object(gathered, res)
    if rank == 0:
        json.dump(gathered, open(out_json, "w"))
    dist.destroy_process_group()


def borrow_worker(out_json):
    """One process on GPU 0 with GPU 1 as its peer: a KV-cache-like job that needs more than GPU 0
    may reserve (its memory fraction), served with peer borrowing; its tokens per second against
    the same job at half the batch, which fits."""
    import gmlake
    gmlake.enable("peer_borrow:on,peer_borrow_limit:48GB", mode="cpp")
    import torch
    torch.cuda.set_device(0)
    out = {}
    for batch in (64, 32):
        torch.cuda.set_per_process_memory_fraction(0.25)  # about 35 GiB of GPU 0
        cache = []
        torch.cuda.synchronize()
        t = time.perf_counter()
        try:
            for step in range(2000):
                # One new K and V per step (24 layers, batch x 32 heads x 128, bf16: 25 MB at
                # batch 64, 50 GB after 2000 steps, over the 35 GiB allowed), and every 100 steps
                # a pass that reads the whole cache, as attention does.
                cache.append(torch.empty(24, 2, batch, 32, 128, dtype=torch.bfloat16, device="cuda").normal_())
                if step % 100 == 99:
                    acc = torch.zeros((), device="cuda")
                    for c in cache:
                        acc += c.sum(dtype=torch.float32)
            torch.cuda.synchronize()
            ok = True
        except torch.cuda.OutOfMemoryError:
            ok = False
        secs = time.perf_counter() - t
        st = gmlake.memory_stats()
        out[batch] = {"completed": ok, "tokens_per_s": batch * len(cache) / secs,
                      "borrowed_peak": st.get("gmlake.borrowed_bytes.peak", 0)}
        del cache
        torch.cuda.empty_cache()
    json.dump(out, open(out_json, "w"))


def main():
    out_json = sys.argv[1]
    import torch
    n = torch.cuda.device_count()
    if n < 2:
        print("skipped: %d GPU(s); the multi-GPU runs need at least two" % n)
        return 0
    env = dict(os.environ, **SAFE_ENV)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    runs = []
    for strategy in ("ddp", "fsdp2"):
        for alloc in ("native", "expandable", "gmlake"):
            e = dict(env)
            if alloc == "expandable":
                e["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
            tmp = "%s.%s.%s.json" % (out_json, strategy, alloc)
            t = time.time()
            p = subprocess.run(["torchrun", "--nproc_per_node=2", os.path.abspath(__file__), "--worker", alloc, strategy, tmp],
                               env=e, capture_output=True, text=True, timeout=600)
            r = json.load(open(tmp)) if p.returncode == 0 and os.path.exists(tmp) else [{"error": p.stderr[-2000:]}]
            runs.append({"strategy": strategy, "alloc": alloc, "ranks": r, "secs": round(time.time() - t, 1)})
            print("ran", strategy, alloc, "ok" if "error" not in r[0] else r[0]["error"][-300:], flush=True)
    tmp = out_json + ".borrow.json"
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--borrow", tmp], env=env, capture_output=True, text=True, timeout=600)
    borrow = json.load(open(tmp)) if p.returncode == 0 else {"error": p.stderr[-2000:]}
    json.dump({"runs": runs, "borrow": borrow}, open(out_json, "w"), indent=1)
    print("\n%-7s %-11s %-6s %14s %12s %8s" % ("", "allocator", "rank", "peak reserved GB", "step ms", "losses"))
    failed = 0
    for r in runs:
        base = next((x["ranks"][0]["losses"] for x in runs if x["strategy"] == r["strategy"] and x["alloc"] == "native" and "error" not in x["ranks"][0]), None)
        for k in r["ranks"]:
            if "error" in k:
                failed += 1
                print(r["strategy"], r["alloc"], "ERROR")
                continue
            med = sorted(k["step_s"][2:])[len(k["step_s"][2:]) // 2]
            same = k["losses"] == base
            failed += not same
            print("%-7s %-11s %-6d %14.2f %12.1f %8s" % (r["strategy"], r["alloc"], k["rank"], k["peak_reserved"] / 1e9, med * 1e3, "equal" if same else "differ"))
    print("peer borrowing:", json.dumps(borrow))
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
    elif sys.argv[1] == "--borrow":
        borrow_worker(sys.argv[2])
    else:
        sys.exit(main())
