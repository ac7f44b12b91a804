"""gmlake: a GPU memory allocator that defeats fragmentation by virtual memory stitching.

    import gmlake
    gmlake.enable()          # before anything initializes CUDA
    import torch             # tensors now live in gmlake's memory; torch.cuda.* works as usual

Also: PyTorch-style statistics (`memory_stats`, `memory_allocated`, `max_memory_reserved`, ...),
`memory_summary()`, `snapshot()`/`dump_snapshot(path)`, and `replay(path)` to see what gmlake
would reserve for a recorded trace, on a machine without a GPU.
"""
import json
import os
import pickle
import threading

from . import _core, _routes

__version__ = _core.__version__
__all__ = [
    "enable", "is_enabled", "route", "memory_stats", "memory_allocated", "max_memory_allocated",
    "memory_reserved", "max_memory_reserved", "reset_peak_memory_stats", "memory_summary",
    "snapshot", "dump_snapshot", "replay", "plot_replay",
]

# GMLake's environment names and their gmlake keys (GMLake's units: fragLimit in bytes, autoGC in GiB).
_GMLAKE_ENV = ("vmmDefragment", "fragLimit", "reuseLimit", "defragLevel", "autoGC")
_lock = threading.Lock()
_route = None  # "cpp" or "pluggable" once enabled
_keep = None  # what must stay alive: the C++ library or PyTorch's CUDAPluggableAllocator object


def _config_from_env():
    parts = []
    conf = os.environ.get("GMLAKE_ALLOC_CONF", "").strip()
    if conf:
        parts.append(conf)
    parts += [f"{name}:{os.environ[name]}" for name in _GMLAKE_ENV if os.environ.get(name)]
    return ",".join(parts)


def replay(path, config=None, capacity=None, fit=False, passes=1, late_events=False):
    """Replays an allocation trace (text, or a PyTorch snapshot pickle from
    `torch.cuda.memory._dump_snapshot`; gzip or plain) through gmlake, and through models of
    PyTorch's native allocator and of its expandable segments, on a simulated device, and returns
    the figures of `gmlake-replay --format json` as a dict: utilization, peak bytes, stitches,
    driver calls, leaks, and `peers` with PyTorch's figures. `capacity` is the simulated device's
    memory in bytes (default: an H200's); with `fit`, each allocator's smallest capacity with no
    out-of-memory too (`fit_capacity_bytes`); with `passes` above 1, the trace replayed that many
    times on one allocator, each pass's cost in `passes`; with `late_events`, gmlake's events
    complete only at a synchronization, as on a GPU that runs behind the CPU. No GPU needed."""
    rows, _ = _core.replay([os.fspath(path)], config, capacity, fit, None, passes, None, late_events)
    return json.loads(rows)[0]


def plot_replay(path, out, config=None, capacity=None):
    """Replays `path` as `replay()` does and draws live bytes and each allocator's reserved bytes
    over the trace into `out` (an .svg file, or .html); returns `replay()`'s dict."""
    rows, _ = _core.replay([os.fspath(path)], config, capacity, False, os.fspath(out))
    return json.loads(rows)[0]


def is_enabled():
    """Whether `enable()` has made gmlake PyTorch's CUDA allocator in this process."""
    return _route is not None


def route():
    """How gmlake is PyTorch's allocator: "cpp" (PyTorch's whole allocator interface), "pluggable"
    (PyTorch's CUDAPluggableAllocator: malloc and free only), or None before `enable()`."""
    return _route


def enable(config=None, mode=None, patch_torch=None):
    """Makes gmlake PyTorch's CUDA allocator.

    Call it before anything initializes CUDA (the first CUDA tensor, `torch.cuda.current_device()`,
    ...). `config` is a string such as "frag_limit:64MB,reuse_limit:10"; without it,
    `GMLAKE_ALLOC_CONF` and GMLake's environment variables (vmmDefragment, fragLimit, ...) are read.

    `mode` (default: `GMLAKE_MODE`, else "auto") picks the route: "cpp" implements PyTorch's whole
    allocator interface in C++ compiled against the installed torch (the first time, with
    `torch.utils.cpp_extension`; needs a C++ compiler and CUDA headers), so every torch.cuda memory
    function, CUDA graphs, MemPool and `torch.compile(mode="reduce-overhead")` work as they do
    natively; "pluggable" uses PyTorch's CUDAPluggableAllocator (no compiler; malloc and free only,
    CUDA graph capture refused); "auto" tries "cpp" and falls back to "pluggable" with a warning
    naming what will not work. `patch_torch` (default: on the pluggable route only) makes
    `torch.cuda.memory_stats()` and friends, which raise under a pluggable allocator, return
    gmlake's figures. Calling it again does nothing.

    Raises RuntimeError without PyTorch, without a CUDA GPU, once CUDA is initialized (PyTorch
    cannot change its allocator then), or when mode "cpp" cannot be built; ValueError for a bad
    configuration or mode.
    """
    global _route, _keep
    with _lock:
        if _route is not None:
            return
        mode = mode if mode is not None else (os.environ.get("GMLAKE_MODE") or "auto")
        if mode not in _routes.MODES:
            raise ValueError("mode must be one of %s, not %r" % (", ".join(_routes.MODES), mode))
        conf = config if config is not None else _config_from_env()
        _core.check_config(conf)
        try:
            import torch
        except ImportError as e:
            raise RuntimeError("gmlake.enable() needs PyTorch (import torch failed: %s)" % e) from e
        if not torch.cuda.is_available() or not _core.driver_present():
            raise RuntimeError("gmlake.enable() needs a CUDA GPU: torch.cuda.is_available() is False")
        if torch.cuda.is_initialized():
            raise RuntimeError(
                "gmlake.enable() must run before CUDA is initialized, and something already initialized it "
                "(a CUDA tensor, torch.cuda.current_device(), get_device_properties(), mem_get_info(), or a "
                "library that touches CUDA at import). Call gmlake.enable() first thing in your script, "
                "right after `import gmlake`.")
        _core.configure(conf or None)
        used, keep = _routes.install(torch, mode)
        _route, _keep = used, keep
        if patch_torch if patch_torch is not None else used == "pluggable":
            _patch(torch)


def _device_index(device):
    if device is None:
        try:
            import torch
            if torch.cuda.is_initialized():
                return torch.cuda.current_device()
        except ImportError:
            pass
        return 0
    if isinstance(device, int):
        return device
    index = getattr(device, "index", None)
    if index is not None:
        return index
    text = str(device)
    return int(text.split(":")[1]) if ":" in text else 0


def memory_stats(device=None):
    """Statistics of gmlake's allocator for `device`, with the keys of `torch.cuda.memory_stats()`
    (`allocated_bytes.all.current`, ...) plus gmlake's own (`gmlake.*`, among them
    `gmlake.driver_us`: wall time spent inside CUDA driver calls so far, in microseconds), sorted
    by key."""
    stats = json.loads(_core.stats_json(_device_index(device)))
    return dict(sorted(stats.items()))


def memory_allocated(device=None):
    """Bytes held by live allocations (rounded), like `torch.cuda.memory_allocated`."""
    return memory_stats(device)["allocated_bytes.all.current"]


def max_memory_allocated(device=None):
    """Peak of `memory_allocated`, like `torch.cuda.max_memory_allocated`."""
    return memory_stats(device)["allocated_bytes.all.peak"]


def memory_reserved(device=None):
    """Physical bytes gmlake holds, like `torch.cuda.memory_reserved`."""
    return memory_stats(device)["reserved_bytes.all.current"]


def max_memory_reserved(device=None):
    """Peak of `memory_reserved`, like `torch.cuda.max_memory_reserved`."""
    return memory_stats(device)["reserved_bytes.all.peak"]


def reset_peak_memory_stats(device=None):
    """Sets every peak statistic to its current value."""
    _core.reset_peak_stats(_device_index(device))


def _fmt(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024.0


def memory_summary(device=None, abbreviated=False):
    """A table of the statistics, in the layout of `torch.cuda.memory_summary()`."""
    s = memory_stats(device)
    rows = [("Allocated memory", "allocated_bytes", True), ("Active memory", "active_bytes", True),
            ("Requested memory", "requested_bytes", True), ("GPU reserved memory", "reserved_bytes", True),
            ("Non-releasable memory", "inactive_split_bytes", True), ("Allocations", "allocation", False),
            ("Active allocs", "active", False), ("GPU reserved segments", "segment", False)]
    line = "|" + "=" * 75 + "|"
    out = [line, "|" + " gmlake memory summary, device ID %d " % _device_index(device) + " " * 38 + "|", line,
           "|        Metric         | Cur Usage  | Peak Usage | Tot Alloc  | Tot Freed  |", line]
    for title, key, is_bytes in rows:
        cells = []
        for field in ("current", "peak", "allocated", "freed"):
            v = s.get(f"{key}.all.{field}", 0)
            cells.append(_fmt(v) if is_bytes else str(v))
        out.append("| %-21s | %10s | %10s | %10s | %10s |" % (title, *cells))
    out.append(line)
    util = s.get("gmlake.utilization", 0.0)
    out.append("| Stitches: %d, reused: %d, utilization (peak requested / peak reserved): %.4f" % (
        s.get("gmlake.num_stitches", 0), s.get("gmlake.num_stitch_reuses", 0), util))
    out.append(line)
    return "\n".join(out)


def snapshot(device=None):
    """A snapshot in the structure of `torch.cuda.memory._snapshot()` (`segments` with `blocks`,
    `device_traces`), for PyTorch's memory viewer. Stitched blocks appear as segments with
    `"is_stitched": True`; the primitive blocks lent to them have state "active_allocated" and a
    `"stitched_into"` address."""
    dev = _device_index(device)
    raw = json.loads(_core.snapshot_json(dev))
    segments = []
    for seg in raw["segments"]:
        blocks = []
        for b in seg["blocks"]:
            state = b["state"]
            entry = {"address": b["address"], "size": b["size"], "requested_size": b["requested_size"], "frames": []}
            if isinstance(state, dict):
                entry["state"] = "active_allocated"
                entry["stitched_into"] = state["lent_to_stitched"]
            elif state == "released":
                continue
            else:
                entry["state"] = state
            blocks.append(entry)
        active = [b for b in blocks if b["state"] != "inactive"]
        segments.append({
            "device": dev, "address": seg["address"], "total_size": seg["total_size"],
            "allocated_size": sum(b["size"] for b in active), "active_size": sum(b["size"] for b in active),
            "requested_size": sum(b["requested_size"] for b in active), "stream": seg["stream"],
            "segment_type": seg["segment_type"], "segment_pool_id": (0, 0), "is_expandable": False,
            "is_stitched": False, "frames": [], "blocks": blocks, "chunks": seg["chunks"]})
    for st in raw["stitched"]:
        state = "active_allocated" if st["active"] else "inactive"
        segments.append({
            "device": dev, "address": st["address"], "total_size": st["size"],
            "allocated_size": st["size"] if st["active"] else 0, "active_size": st["size"] if st["active"] else 0,
            "requested_size": st["requested_size"], "stream": 0, "segment_type": "large",
            "segment_pool_id": (0, 0), "is_expandable": False, "is_stitched": True, "frames": [],
            "pieces": st["pieces"],
            "blocks": [{"address": st["address"], "size": st["size"], "requested_size": st["requested_size"],
                        "state": state, "frames": []}]})
    return {"segments": segments, "device_traces": [[]], "allocator_settings": {"allocator": "gmlake"}}


def dump_snapshot(path, device=None):
    """Pickles `snapshot()` to `path`, as `torch.cuda.memory._dump_snapshot` does."""
    with open(path, "wb") as f:
        pickle.dump(snapshot(device), f)


def _patch(torch):
    """Makes PyTorch's memory statistics functions return gmlake's figures."""
    cuda = torch.cuda
    memory = torch.cuda.memory
    for name, fn in (("memory_stats", memory_stats), ("memory_allocated", memory_allocated),
                     ("max_memory_allocated", max_memory_allocated), ("memory_reserved", memory_reserved),
                     ("max_memory_reserved", max_memory_reserved), ("reset_peak_memory_stats", reset_peak_memory_stats),
                     ("memory_summary", memory_summary)):
        setattr(cuda, name, fn)
        setattr(memory, name, fn)
