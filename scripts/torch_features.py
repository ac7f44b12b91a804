"""PyTorch's CUDA memory features under its native allocator and under gmlake (the C++ route of
`gmlake.enable()`), each feature in fresh processes, on a GPU machine. Every check asserts data,
not only that nothing raised. Prints a table (one row per feature, one column per allocator) and
writes every figure to OUT_JSON.

    python3 scripts/torch_features.py OUT_JSON [FEATURE ...]

Exit status 0 when every row passes under every allocator. Run by scripts/gpu-check.sh
(CHECKS="features").
"""
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

MODES = ("native", "gmlake")
# Speed rows also run under expandable segments, the alternative a user already has. Their cells
# read: 512 B / 64 KiB / 4 MiB / 64 MiB pairs / window / warm window, in us (Python loop) or ns
# (C++ loop), medians over the repeats.
SPEED_MODES = ("native", "expandable", "gmlake")
SPEED_ROWS = ("speed", "speed_cpp")
SPEED_REPEATS = int(os.environ.get("SPEED_REPEATS", "3"))
MiB = 1 << 20
GiB = 1 << 30
# The speed rows' sizes: pairs of one size, then a window of live tensors of these mixed sizes.
PAIR_SIZES = (512, 64 << 10, 4 * MiB, 64 * MiB)
WINDOW_SIZES = (512, 4096, 1 << 16, MiB, 3 * MiB, 16 * MiB, 40 * MiB)


def window_sizes(n):
    """The window's `n` sizes, the same sequence in every run."""
    import random
    rng = random.Random(0)
    return [rng.choice(WINDOW_SIZES) for _ in range(n)]


def setup(mode):
    """Makes `mode` the allocator of this process; returns torch."""
    if mode == "gmlake":
        import gmlake
        gmlake.enable(mode=os.environ.get("GMLAKE_FEATURE_ROUTE", "cpp"))
    import torch
    return torch


# ---- the features: each runs in a fresh process and returns a dict of figures ------------------

def f_stats(torch, mode):
    x = torch.empty(64 * MiB, dtype=torch.uint8, device="cuda")
    y = torch.empty(3 * MiB + 5, dtype=torch.uint8, device="cuda")
    s = torch.cuda.memory_stats()
    assert s["allocation.all.current"] >= 2, s["allocation.all.current"]
    assert s["allocated_bytes.all.current"] >= 67 * MiB, s["allocated_bytes.all.current"]
    assert s["requested_bytes.all.current"] >= 67 * MiB + 5
    assert s["reserved_bytes.all.current"] >= s["allocated_bytes.all.current"]
    assert torch.cuda.memory_allocated() == s["allocated_bytes.all.current"]
    nested = torch.cuda.memory_stats_as_nested_dict()
    assert nested["allocated_bytes"]["all"]["current"] == s["allocated_bytes.all.current"]
    del x
    torch.cuda.reset_peak_memory_stats()
    s2 = torch.cuda.memory_stats()
    assert s2["allocated_bytes.all.peak"] == s2["allocated_bytes.all.current"] < s["allocated_bytes.all.current"]
    torch.cuda.reset_accumulated_memory_stats()
    s3 = torch.cuda.memory_stats()
    assert s3["allocation.all.allocated"] == 0 and s3["allocated_bytes.all.freed"] == 0
    summary = torch.cuda.memory_summary()
    assert "Allocated memory" in summary and "GPU reserved memory" in summary
    del y
    return {"keys": sorted(s), "n_keys": len(s)}


def f_oom(torch, mode):
    seen = []
    torch._C._cuda_attach_out_of_memory_observer(lambda *a: seen.append(a))
    total = torch.cuda.get_device_properties(0).total_memory
    keep = torch.empty(GiB, dtype=torch.uint8, device="cuda").fill_(7)
    try:
        torch.empty(2 * total, dtype=torch.uint8, device="cuda")
        raise AssertionError("no error")
    except torch.cuda.OutOfMemoryError as e:
        msg = str(e)
    assert msg.startswith("CUDA out of memory. Tried to allocate"), msg[:200]
    assert "total capacity" in msg and "reserved" in msg and "allocated" in msg, msg[:400]
    assert seen, "the out-of-memory observer was not called"
    again = torch.empty(8 * GiB, dtype=torch.uint8, device="cuda").fill_(1)
    assert int(again[-1]) == 1 and int(keep.sum()) == 7 * GiB
    assert torch.cuda.memory_stats()["num_ooms"] >= 1
    return {"message": msg[:300]}


def f_history(torch, mode):
    import pickle
    import tempfile
    from torch.cuda import _memory_viz
    torch.cuda.memory._record_memory_history(max_entries=10000)
    xs = [torch.randn(n * MiB // 4, device="cuda") for n in (1, 7, 33, 65)]
    y = xs[1] * 2
    del xs[2]
    snap = torch.cuda.memory._snapshot()
    traces = snap["device_traces"][0]
    actions = {t["action"] for t in traces}
    assert {"alloc", "free_requested"} <= actions, actions
    assert any(t["frames"] for t in traces if t["action"] == "alloc"), "no stack frames"
    assert any(f["filename"].endswith("torch_features.py") for t in traces for f in t["frames"]), "frames miss the caller"
    blocks = [b for s in snap["segments"] for b in s["blocks"] if b["state"] == "active_allocated"]
    assert len(blocks) >= 4, len(blocks)
    keep = os.environ.get("FEATURE_ARTIFACTS")
    path = os.path.join(keep or tempfile.mkdtemp(), "snapshot-%s.pickle" % mode)
    torch.cuda.memory._dump_snapshot(path)
    with open(path, "rb") as f:
        loaded = pickle.load(f)
    html_trace = _memory_viz.trace_plot(loaded)
    html_segments = _memory_viz.segment_plot(loaded)
    assert "<html" in html_trace.lower() and "<html" in html_segments.lower()
    torch.cuda.memory._record_memory_history(enabled=None)
    del y
    import gmlake
    r = gmlake.replay(path)
    assert r["utilization"] > 0, r
    return {"actions": sorted(actions), "trace_entries": len(traces), "html_bytes": len(html_trace) + len(html_segments),
            "replay_utilization": r["utilization"]}


def f_cudnn_benchmark(torch, mode):
    torch.backends.cudnn.benchmark = True
    conv = torch.nn.Conv2d(64, 128, 3, padding=1).cuda()
    x = torch.randn(32, 64, 56, 56, device="cuda", requires_grad=True)
    y = conv(x)
    y.square().mean().backward()
    torch.backends.cudnn.benchmark = False
    ref = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    err = (y.double() - ref).abs().max().item()
    assert err < 1e-2, err
    assert torch.isfinite(x.grad).all()
    return {"max_abs_error": err}


def f_memory_fraction(torch, mode):
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(0.25)
    assert abs(torch.cuda.get_per_process_memory_fraction() - 0.25) < 1e-9
    ok = torch.empty(int(total * 0.2), dtype=torch.uint8, device="cuda")
    try:
        torch.empty(int(total * 0.1), dtype=torch.uint8, device="cuda")
        raise AssertionError("the fraction was not enforced")
    except torch.cuda.OutOfMemoryError:
        pass
    del ok
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.empty(int(total * 0.3), dtype=torch.uint8, device="cuda")
    return {}


def f_cuda_graph(torch, mode):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024)).cuda()
    static_in = torch.randn(256, 1024, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            model(static_in)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        hidden = model[1](model[0](static_in))
        static_out = model[2](hidden)
    del hidden  # the graph still writes there: the memory must stay the graph's
    sentinels = [torch.full((256, 4096), 3.0, device="cuda") for _ in range(8)]
    results = []
    for i in range(3):
        new_in = torch.randn(256, 1024, device="cuda")
        static_in.copy_(new_in)
        g.replay()
        torch.cuda.synchronize()
        with torch.no_grad():
            ref = model(new_in)
        results.append((static_out - ref).abs().max().item())
    assert max(results) < 1e-3, results
    assert all(bool((t == 3.0).all()) for t in sentinels), "a replay overwrote memory handed out after capture"
    # A second graph sharing the first one's pool, then both gone: the memory comes back.
    g2 = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g2, pool=g.pool()):
        out2 = static_out * 2
    g2.replay()
    torch.cuda.synchronize()
    assert torch.allclose(out2, static_out * 2)
    # Destroyed and captured again, several times: replays stay right and memory stays bounded.
    for i in range(3):
        g3 = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g3):
            out3 = model(static_in) + i
        static_in.copy_(torch.randn(256, 1024, device="cuda"))
        g3.replay()
        torch.cuda.synchronize()
        with torch.no_grad():
            assert (out3 - (model(static_in) + i)).abs().max().item() < 1e-3
        del g3, out3
    reserved_with_graphs = torch.cuda.memory_reserved()
    del g, g2, static_out, out2
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    reserved_after = torch.cuda.memory_reserved()
    assert reserved_after < reserved_with_graphs, (reserved_with_graphs, reserved_after)
    return {"max_error": max(results), "reserved_with_graphs": reserved_with_graphs, "reserved_after": reserved_after}


def f_mempool(torch, mode):
    base = torch.cuda.memory_reserved()
    pool = torch.cuda.MemPool()
    with torch.cuda.use_mem_pool(pool):
        x = torch.randn(64 * MiB // 4, device="cuda")
        y = x * 2
    z = torch.randn(MiB, device="cuda")  # outside the pool
    segs = pool.snapshot()
    in_pool = sum(b["size"] for s in segs for b in s["blocks"] if b["state"] == "active_allocated")
    assert in_pool >= 128 * MiB, in_pool
    assert pool.use_count() >= 1
    assert torch.allclose(y, x * 2)
    free_with_pool = torch.cuda.mem_get_info()[0]
    del x, y, segs
    del pool
    torch.cuda.empty_cache()
    after = torch.cuda.memory_reserved()
    assert after <= base + 32 * MiB, (base, after)
    free_after = torch.cuda.mem_get_info()[0]
    assert free_after >= free_with_pool + 120 * MiB, "the driver did not get the pool's memory back"
    del z
    return {"pool_bytes": in_pool, "reserved_after": after, "driver_free_gain": free_after - free_with_pool}


def f_compile_reduce_overhead(torch, mode):
    """cudagraph trees on a small MLP and on one transformer block, three shapes: outputs equal to
    eager, and after warm-up (two rounds over the shapes, 5 calls each) a round of 50 calls per
    shape grows no reserved memory. Two warm-up rounds, because the tree records a new graph for
    each new path, the last shape followed by the first included, and each capture begins with
    `torch.cuda.graph`'s `empty_cache`, after which any allocator's cache is rebuilt."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512)).cuda().eval()
    block = torch.nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True).cuda().eval()
    cases = ((mlp, lambda n: torch.randn(n, 512, device="cuda"), (64, 256, 128)),
             (block, lambda n: torch.randn(8, n, 256, device="cuda"), (64, 128, 96)))
    warm_rounds = 2
    errs, reserved, segments, diag = [], [], [], []
    with torch.no_grad():
        for model, make, shapes in cases:
            fn = torch.compile(model, mode="reduce-overhead")
            for rnd in range(warm_rounds + 1):
                measured = rnd == warm_rounds
                if measured:  # recorded: a growth shows which request made it
                    torch.cuda.memory._record_memory_history(max_entries=200000)
                for n in shapes:
                    for _ in range(50 if measured else 5):
                        x = make(n)
                        errs.append((fn(x) - model(x)).abs().max().item())
                if rnd < warm_rounds - 1:
                    continue
                torch.cuda.synchronize()
                reserved.append(torch.cuda.memory_reserved())
                snap = torch.cuda.memory._snapshot()
                segments.append({(sg["address"], sg["total_size"], str(sg.get("segment_pool_id")), sg.get("segment_type"))
                                 for sg in snap["segments"]})
                if measured:
                    torch.cuda.memory._record_memory_history(enabled=None)
                    diag.append(_segment_events(snap))
    assert max(errs) < 1e-2, max(errs)
    grew = [reserved[i + 1] - reserved[i] for i in range(0, len(reserved), 2)]
    # Where growth came from: the segments (address, bytes, pool, kind) that are new after warm-up.
    new = [sorted(segments[i + 1] - segments[i]) for i in range(0, len(segments), 2)]
    art = os.environ.get("FEATURE_ARTIFACTS")
    if art:
        with open(os.path.join(art, "compile-after-warm-up-%s.json" % mode), "w") as f:
            json.dump(diag, f, indent=1)
    segment_events = [[e for e in d if e[0].startswith("segment")] for d in diag]
    assert all(g <= 0 for g in grew), "reserved memory grew after warm-up: %s, new segments %s" % (grew, new)
    return {"max_error": max(errs), "calls": len(errs), "reserved": reserved,
            "segment_events_after_warm_up": segment_events}


def _segment_events(snap):
    """The trace entries (action, bytes, address, stream), with the Python frames of those that
    made or dropped segments and of the request just before each: where a growth after warm-up
    came from."""
    out, last = [], None
    for e in (snap.get("device_traces") or [[]])[0]:
        row = [e["action"], e["size"], e.get("addr"), e.get("stream")]
        if e["action"] == "alloc":
            last = ["%s:%s %s" % (os.path.basename(f.get("filename", "")), f.get("line"), f.get("name"))
                    for f in (e.get("frames") or []) if f.get("filename", "").endswith(".py")][:6]
        elif e["action"].startswith("segment"):
            row.append(last)
        out.append(row)
    return out


def _ipc_child(q_in, q_out, receiver_mode):
    try:
        if receiver_mode == "gmlake":
            import gmlake
            gmlake.enable(mode="cpp")
        import torch
        while True:
            t = q_in.get()
            if t is None:
                return
            print("receiver: opened %d bytes" % (t.numel() * t.element_size()), file=sys.stderr, flush=True)
            try:
                total = float(t.double().sum().item())
                t.add_(1)
                torch.cuda.synchronize()
                q_out.put(("ok", total))
            except Exception as e:  # reported by the parent
                q_out.put(("error", "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:400])))
            del t
    except Exception as e:
        q_out.put(("error", "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:200])))


def _ipc(torch, receiver_mode):
    """Sends tensors to a process whose allocator is `receiver_mode`, which sums them and adds 1
    in place: the sums must match and the writes must reach the sender. Two sizes: 64 MiB and
    300 MiB (under gmlake: physical handles of one size, and of mixed sizes). A receiver that
    fails or dies is reported, not waited for."""
    import queue
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_ipc_child, args=(q_in, q_out, receiver_mode), daemon=True)
    p.start()
    out = {}
    try:
        for name, nbytes in (("uniform", 64 * MiB), ("mixed", 300 * MiB)):
            t = torch.arange(nbytes // 4, device="cuda", dtype=torch.float32) % 7
            want = float(t.double().sum().item())
            q_in.put(t)
            deadline = time.time() + 120
            while True:
                try:
                    status, got = q_out.get(timeout=2)
                    break
                except queue.Empty:
                    if not p.is_alive() or time.time() > deadline:
                        status, got = "error", "the receiver %s" % (
                            "died (exit status %s)" % p.exitcode if not p.is_alive() else "did not answer in 120 s")
                        break
            torch.cuda.synchronize()
            if status == "ok":
                expect = torch.arange(t.numel(), device="cuda", dtype=torch.float32) % 7 + 1
                assert got == want, (name, got, want)
                assert bool((t == expect).all()), "%s: the receiver's write did not reach the sender" % name
            out[name] = got
            del t
            if not p.is_alive():
                break
    finally:
        if p.is_alive():
            q_in.put(None)
            p.join(30)
        if p.is_alive():
            p.kill()
    return out


def _ipc_checked(torch, receiver_mode):
    out = _ipc(torch, receiver_mode)
    assert all(isinstance(out.get(k), float) for k in ("uniform", "mixed")), out
    return out


def f_ipc(torch, mode):
    """Sender and receiver both use `mode`'s allocator."""
    return _ipc_checked(torch, mode)


def f_ipc_to_native(torch, mode):
    """The receiver uses PyTorch's own allocator. gmlake writes memory of physical handles of one
    size as PyTorch's expandable-segment kind, which that receiver opens: it must arrive with its
    data. Memory of handles of several sizes has no form PyTorch's allocator reads (it maps every
    handle whole, at one size): there the receiver must fail with PyTorch's error, not hang or die."""
    out = _ipc(torch, "native")
    assert isinstance(out.get("uniform"), float), out
    if mode == "gmlake" and not isinstance(out.get("mixed"), float):
        assert "shareable handle type" in str(out.get("mixed")), out
        out["mixed_refused_by_native"] = True
    else:
        assert isinstance(out.get("mixed"), float), out
    return out


def f_ipc_from_native(torch, mode):
    """The sender (this process) uses PyTorch's own allocator, the receiver `mode`'s."""
    return _ipc_checked(torch, mode)


def f_ipc_from_expandable(torch, mode):
    """The sender (this process) uses PyTorch's expandable segments, the receiver `mode`'s."""
    return _ipc_checked(torch, mode)


def f_raw_alloc_and_streams(torch, mode):
    p = torch.cuda.caching_allocator_alloc(10 * MiB)
    assert p != 0
    torch.cuda.caching_allocator_delete(p)
    side = torch.cuda.Stream()
    src = torch.full((256 * MiB,), 0xAA, dtype=torch.uint8, device="cuda")
    x = torch.empty(256 * MiB, dtype=torch.uint8, device="cuda")
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)
        x.copy_(src)
    x.record_stream(side)
    del x
    y = torch.zeros(256 * MiB, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    assert int(y.sum()) == 0, "memory in use by the side stream was reused"
    before = torch.cuda.mem_get_info()[0]
    del y, src
    torch.cuda.empty_cache()
    after = torch.cuda.mem_get_info()[0]
    assert after >= before + 400 * MiB, (before, after)
    return {}


def f_speed(torch, mode):
    """CPU time of torch.empty + del at several sizes, and of a window of live tensors."""
    out = {}
    torch.cuda.synchronize()
    for size in PAIR_SIZES:
        for _ in range(200):
            torch.empty(size, dtype=torch.uint8, device="cuda")
        n = 20000
        t = time.perf_counter()
        for _ in range(n):
            torch.empty(size, dtype=torch.uint8, device="cuda")
        out[f"pair_us_{size}"] = (time.perf_counter() - t) / n * 1e6
    sizes = window_sizes(50000)

    def window_pass():
        window = [None] * 64
        t = time.perf_counter()
        for i, s in enumerate(sizes):
            window[i % 64] = torch.empty(s, dtype=torch.uint8, device="cuda")
        return (time.perf_counter() - t) / len(sizes) * 1e6

    # The first pass fills the cache (each allocator's driver calls are in it: gmlake's stitches,
    # native's cudaMalloc); the second, the same sequence again, is the steady state that the
    # pairs above measure after their warm-up.
    for name in ("window", "window_warm"):
        with window_counters(torch, mode, out, name):
            out[name + "_us_per_op"] = window_pass()
    return out


@contextlib.contextmanager
def window_counters(torch, mode, out, name):
    """Adds to `out`, as `<name>_<counter>`, what the allocator did inside the block: its memory
    driver time in us and stitches (gmlake's own), device allocations (PyTorch's
    `num_device_alloc`: cudaMalloc calls, or gmlake's handle creations and maps) and segments."""
    def counters():
        s = dict(torch.cuda.memory_stats())
        if mode == "gmlake":
            import gmlake
            s.update(gmlake.memory_stats())
        return s
    before = counters()
    yield
    after = counters()
    for key, short in (("gmlake.driver_us", "driver_us"), ("gmlake.num_stitches", "stitches"),
                       ("num_device_alloc", "device_allocs"), ("segment.all.allocated", "segments")):
        if key in after:
            out["%s_%s" % (name, short)] = after[key] - before.get(key, 0)


def speed_loop(torch):
    """scripts/speed_loop.cpp, built against this torch (cached in torch's extension folder) and
    loaded with ctypes."""
    import ctypes
    from torch.utils import cpp_extension
    from gmlake._routes import _cuda_include_dirs
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    path = cpp_extension.load(
        name="gmlake_speed_loop",
        sources=[os.path.join(os.path.dirname(os.path.abspath(__file__)), "speed_loop.cpp")],
        extra_include_paths=_cuda_include_dirs(cpp_extension),
        extra_cflags=["-O2"],
        extra_ldflags=["-L" + torch_lib, "-lc10_cuda", "-lc10"],
        with_cuda=False,
        is_python_module=False,
    )
    lib = ctypes.CDLL(path)
    lib.speed_pairs.restype = ctypes.c_double
    lib.speed_pairs.argtypes = [ctypes.c_size_t, ctypes.c_int]
    lib.speed_window.restype = ctypes.c_double
    lib.speed_window.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_int]
    return lib


def f_speed_cpp(torch, mode):
    """The speed row's loops in C++ (no Python in the timed loop): nanoseconds per allocation and
    free through PyTorch's current allocator, and per allocation in the window."""
    import ctypes
    lib = speed_loop(torch)
    torch.empty(1, device="cuda")
    torch.cuda.synchronize()
    out = {}
    for size in PAIR_SIZES:
        ns = lib.speed_pairs(size, 200000)
        assert ns > 0, "the allocator threw at %d bytes" % size
        out["pair_ns_%d" % size] = ns
    sizes = window_sizes(200000)
    arr = (ctypes.c_uint64 * len(sizes))(*sizes)
    # The second time is the same sequence on the cache the first filled (as f_speed's).
    for name in ("window", "window_warm"):
        with window_counters(torch, mode, out, name):
            ns = lib.speed_window(arr, len(sizes))
        assert ns > 0, "the allocator threw in the %s" % name
        out[name + "_ns_per_op"] = ns
    return out


FEATURES = {name[2:]: fn for name, fn in globals().items() if name.startswith("f_")}


def child(feature, mode):
    # ipc_from_native, ipc_from_expandable: this process (the sender) uses PyTorch's own
    # allocator (with expandable segments for the latter) whatever `mode` is.
    if feature == "ipc_from_expandable":
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    if feature in SPEED_ROWS and hasattr(os, "sched_setaffinity"):
        # Every speed run on the same core: no migration between cores inside a timed loop.
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    torch = setup("native" if feature in ("ipc_from_native", "ipc_from_expandable") else mode)
    ipc = feature.startswith("ipc")
    if ipc:  # a sender stuck on a receiver shows where, and exits
        import faulthandler
        faulthandler.dump_traceback_later(200, exit=True)
    try:
        data = FEATURES[feature](torch, mode)
        print("RESULT", json.dumps({"ok": True, "data": data}), flush=True)
    except Exception as e:  # reported as the row's failure
        import traceback
        traceback.print_exc()
        print("RESULT", json.dumps({"ok": False, "error": "%s: %s" % (type(e).__name__, str(e)[:300])}), flush=True)
    if ipc:
        # A receiver that cannot be killed (stuck in the driver) must not hold this process at
        # exit, where multiprocessing joins its children.
        sys.stderr.flush()
        os._exit(0)


def run(feature, mode):
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    if mode == "expandable":
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    t = time.time()
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", feature, mode],
                           capture_output=True, text=True, timeout=300, env=env)
        lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        r = json.loads(lines[-1][7:]) if lines else {
            "ok": False, "error": "exit status %d, no result: %s" % (p.returncode, p.stderr[-600:])}
        r["log"] = p.stderr[-3000:]
    except subprocess.TimeoutExpired:
        r = {"ok": False, "error": "timed out"}
    r["secs"] = round(time.time() - t, 1)
    return r


def main():
    if sys.argv[1] == "--child":
        return child(sys.argv[2], "native" if sys.argv[3] == "expandable" else sys.argv[3])
    out_json = sys.argv[1]
    wanted = sys.argv[2:] or list(FEATURES)
    results = {}
    for feature in wanted:
        # Speed rows run SPEED_REPEATS times per allocator, interleaved, and keep each
        # figure's least value: a single run per allocator varies by as much as they differ.
        order = SPEED_MODES * SPEED_REPEATS if feature in SPEED_ROWS else MODES
        for mode in order:
            r = run(feature, mode)
            prev = results.get((feature, mode))
            if r["ok"] and feature in SPEED_ROWS:
                r["every_run"] = [r["data"]]
            if prev is not None and prev["ok"] and r["ok"]:
                r["every_run"] = prev.get("every_run", [prev["data"]]) + r["every_run"]
                r["data"] = {k: min(v, prev["data"][k]) for k, v in r["data"].items()}
                r["runs"] = prev.get("runs", 1) + 1
            # A failed run fails the row, whichever repeat it was.
            results[(feature, mode)] = prev if prev is not None and not prev["ok"] else r
            # One line per run as it ends, so that a run cut short still says what it saw.
            print("ran %s %s: %s in %.0f s" % (feature, mode, "PASS" if r["ok"] else "FAIL " + r.get("error", "")[:200], r["secs"]), flush=True)
    # Rows that compare allocators: every native statistics key is there under gmlake.
    if ("stats", "native") in results and results[("stats", "gmlake")].get("ok"):
        native = set(results[("stats", "native")].get("data", {}).get("keys", []))
        ours = set(results[("stats", "gmlake")]["data"]["keys"])
        missing = sorted(native - ours)
        if missing:
            results[("stats", "gmlake")].update(ok=False, error="keys missing: %s" % missing[:10])
    json.dump({"%s/%s" % k: v for k, v in results.items()}, open(out_json, "w"), indent=1)
    failed = 0
    print("%-26s %s" % ("feature", "".join("%-40s" % m for m in SPEED_MODES)))
    for feature in wanted:
        cells = []
        for mode in SPEED_MODES:
            r = results.get((feature, mode))
            if r is None:
                cells.append("%-40s" % "-")
                continue
            failed += not r["ok"]
            if feature in SPEED_ROWS and r["ok"]:
                # Medians over the repeats (the JSON keeps every run, and the least in "data").
                runs = r.get("every_run", [r["data"]])
                d = {k: statistics.median(x[k] for x in runs) for k in r["data"]}
                unit = "us" if feature == "speed" else "ns"
                figures = [d["pair_%s_%d" % (unit, s)] for s in PAIR_SIZES]
                figures += [d["%s_%s_per_op" % (w, unit)] for w in ("window", "window_warm")]
                detail = "/".join("%.3g" % x for x in figures) + " " + unit
            else:
                detail = "" if r["ok"] else r.get("error", "")[:60]
            cells.append("%-40s" % (("PASS " if r["ok"] else "FAIL ") + detail))
        print("%-26s %s" % (feature, "".join(cells)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
