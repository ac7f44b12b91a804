"""The Python package without a GPU: replay, the command line, configuration errors, and enable()'s
refusals."""
import os
import subprocess
import sys

import pytest

import gmlake
from gmlake import _core

TRACES = os.path.join(os.path.dirname(__file__), "..", "..", "traces")


def trace(name):
    return os.path.join(TRACES, name + ".txt.gz")


def test_replay_returns_the_cli_fields_and_reaches_the_floor():
    r = gmlake.replay(trace("gpt2_train"))
    for field in ("trace", "events", "allocs", "unmatched_frees", "peak_active_bytes", "peak_reserved_bytes",
                  "utilization", "native_peak_reserved_bytes", "native_utilization", "ooms", "num_stitches",
                  "driver_calls", "estimated_driver_us", "replay_ns_per_op", "end_handles", "end_ranges",
                  "end_mappings"):
        assert field in r, field
    assert r["trace"] == "gpt2_train.txt.gz" and r["events"] == 39891
    assert r["utilization"] >= 0.994 and r["ooms"] == 0
    assert r["native_utilization"] < 0.82
    assert (r["end_handles"], r["end_ranges"], r["end_mappings"]) == (0, 0, 0)
    assert r["driver_calls"]["map"] > 0


def test_replay_sets_gmlake_beside_pytorchs_allocators_and_draws_them(tmp_path):
    r = gmlake.replay(trace("gpt2_train"), fit=True)
    native, expandable = r["peers"]["pytorch_native"], r["peers"]["pytorch_expandable"]
    assert native["peak_reserved_bytes"] == r["native_peak_reserved_bytes"]   # the model is PyTorch
    assert r["peak_active_bytes"] <= r["fit_capacity_bytes"] <= r["peak_reserved_bytes"]
    assert expandable["fit_capacity_bytes"] < native["fit_capacity_bytes"]
    out = tmp_path / "gpt2.svg"
    again = gmlake.plot_replay(trace("gpt2_train"), out)
    assert again["peak_reserved_bytes"] == r["peak_reserved_bytes"]
    text = out.read_text()
    assert text.startswith("<svg") and "pytorch_expandable reserved" in text
    html = tmp_path / "gpt2.html"
    subprocess.run([sys.executable, "-m", "gmlake", "replay", "--plot", str(html), trace("gpt2_train")],
                   check=True, capture_output=True)
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_replay_repeats_a_trace_on_one_allocator():
    r = gmlake.replay(trace("gpt2_train"), passes=3)
    assert [p["pass"] for p in r["passes"]] == [1, 2, 3]
    assert r["passes"][0]["new_stitches"] == r["num_stitches"]


def test_late_events_make_cuts_wait_under_pressure():
    live = gmlake.replay(trace("gpt2_train"))["peak_active_bytes"]
    cap = int(live * 1.02)
    prompt = gmlake.replay(trace("gpt2_train"), capacity=cap)
    late = gmlake.replay(trace("gpt2_train"), capacity=cap, late_events=True)
    assert prompt["ooms"] == 0 and late["ooms"] == 0
    assert prompt["driver_calls"].get("synchronize_stream", 0) == 0
    assert late["driver_calls"]["synchronize_stream"] > 0


def test_replay_takes_a_configuration_and_a_capacity():
    r = gmlake.replay(trace("gpt2_train"), config="stitching:false", capacity=36_956_012_544)
    assert r["num_stitches"] == 0 and r["ooms"] == 0
    tiny = gmlake.replay(trace("gpt2_train"), capacity=1 << 30)
    assert tiny["ooms"] > 0 and tiny["end_handles"] == 0


def test_bad_input_raises_clear_errors(tmp_path):
    with pytest.raises(OSError, match="nope.txt"):
        gmlake.replay(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("alloc 1 2 0\nalloc x 2 0\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        gmlake.replay(bad)
    with pytest.raises(ValueError, match="valid keys"):
        gmlake.replay(trace("gpt2_train"), config="bogus:1")
    with pytest.raises(ValueError, match="valid keys"):
        _core.check_config("frag_limit:lots")


def test_command_line_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "gmlake", "replay", trace("gpt2_train"), trace("opt13_lora")],
                         capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("trace") and "opt13_lora.txt.gz" in lines[2]
    bad = subprocess.run([sys.executable, "-m", "gmlake", "replay", "/nonexistent.txt"], capture_output=True, text=True)
    assert bad.returncode == 1 and "nonexistent" in bad.stderr


def test_enable_refuses_clearly_without_torch_or_gpu():
    try:
        import torch
    except ImportError:
        with pytest.raises(RuntimeError, match="needs PyTorch"):
            gmlake.enable()
        assert not gmlake.is_enabled()
        return
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            gmlake.enable()
        return
    pytest.skip("a GPU is present: tests/test_gpu.py covers enable()")


def test_the_native_module_shares_the_c_entry_points():
    import ctypes
    lib = ctypes.CDLL(_core.__file__)
    for name in ("gmlake_torch_malloc", "gmlake_torch_free", "gmlake_torch_empty_cache",
                 "gmlake_torch_set_memory_fraction", "gmlake_torch_record_stream", "gmlake_version"):
        assert getattr(lib, name) is not None
    lib.gmlake_version.restype = ctypes.c_char_p
    assert lib.gmlake_version().decode() == gmlake.__version__


README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_the_readmes_python_examples_compile_and_name_what_exists():
    text = open(README).read()
    blocks = [b.split("```")[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) >= 2
    for b in blocks:
        compile(b, "README.md", "exec")
    import re
    for name in set(re.findall(r"(?<![\w/])gmlake\.(\w+)\(", text)):
        assert hasattr(gmlake, name), name


def test_the_readmes_replay_command_runs_on_a_recorded_snapshot(tmp_path):
    text = open(README).read()
    line = next(l for l in text.splitlines() if l.startswith("python -m gmlake replay"))
    snapshot = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data",
                            "torch-2.11-snapshot-native.pickle")
    args = line.split()[1:]
    args = [snapshot if a == "my_job.pickle" else str(tmp_path / a) if a == "my_job.svg" else a for a in args]
    out = subprocess.run([sys.executable] + args, capture_output=True, text=True, check=True).stdout
    assert "fit gml" in out and "torch-2.11-snapshot-native.pickle (device 0)" in out
    assert (tmp_path / "my_job.svg").read_text().startswith("<svg")
