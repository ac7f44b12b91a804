"""gmlake as PyTorch's allocator on a GPU: run by scripts/gpu-check.sh (each test in its own
process, since PyTorch's allocator can be changed only before CUDA starts). Skipped without PyTorch
and a CUDA GPU."""
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch; run by scripts/gpu-check.sh")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU; run by scripts/gpu-check.sh", allow_module_level=True)


def run(code, enable="gmlake.enable()"):
    """Runs `code` after `import gmlake, torch` and `enable` in a fresh interpreter."""
    prog = "import gmlake, torch\n" + enable + "\n" + textwrap.dedent(code)
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_tensors_live_in_gmlake_memory_and_statistics_work():
    out = run("""
        x = torch.randn(4096, 4096, device="cuda")
        y = (x @ x).cpu()
        assert torch.allclose(y, x.cpu() @ x.cpu(), rtol=1e-3, atol=1e-2)
        s = gmlake.memory_stats()
        assert s["allocation.all.current"] >= 2 and s["reserved_bytes.all.current"] >= 2 * 64 << 20
        assert gmlake.route() == "cpp", gmlake.route()
        assert torch.cuda.memory_allocated() == gmlake.memory_allocated() > 0
        assert "gmlake" not in torch.cuda.memory_stats.__module__   # no monkeypatching
        assert torch.cuda.max_memory_reserved() >= torch.cuda.memory_reserved()
        assert "Allocated memory" in torch.cuda.memory_summary()   # PyTorch's own, gmlake's figures
        assert "Stitches" in gmlake.memory_summary()
        snap = gmlake.snapshot()
        assert any(b["state"] == "active_allocated" for seg in snap["segments"] for b in seg["blocks"])
        gmlake.enable()   # twice is harmless
        print("ok")
    """)
    assert "ok" in out


def test_enable_after_cuda_started_says_what_to_do():
    p = subprocess.run([sys.executable, "-c", "import torch, gmlake\ntorch.zeros(1, device='cuda')\ngmlake.enable()"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "before CUDA is initialized" in p.stderr


def test_out_of_memory_is_catchable_and_memory_comes_back():
    out = run("""
        held = []
        try:
            while True:
                held.append(torch.empty(8 << 30, dtype=torch.uint8, device="cuda"))
        except RuntimeError as e:
            assert str(e).startswith("CUDA out of memory."), str(e)
        n = len(held)
        del held
        again = [torch.empty(8 << 30, dtype=torch.uint8, device="cuda") for _ in range(n)]
        print("ok", n)
    """)
    assert "ok" in out


def test_empty_cache_returns_memory_to_the_driver():
    out = run("""
        x = torch.empty(32 << 30, dtype=torch.uint8, device="cuda")
        del x
        before = torch.cuda.mem_get_info()[0]
        torch.cuda.empty_cache()
        after = torch.cuda.mem_get_info()[0]
        assert after >= before + (30 << 30), (before, after)
        print("ok")
    """)
    assert "ok" in out


def test_record_stream_keeps_a_block_until_the_other_streams_work_is_done():
    out = run("""
        side = torch.cuda.Stream()
        src = torch.full((256 << 20,), 0xAA, dtype=torch.uint8, device="cuda")
        x = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        with torch.cuda.stream(side):
            for _ in range(200):
                x.copy_(src)
        x.record_stream(side)
        del x
        y = torch.full((256 << 20,), 0x55, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        assert bool((y == 0x55).all()), "a block still written by the side stream was reused"
        print("ok")
    """)
    assert "ok" in out


def test_the_pluggable_route_patches_statistics_and_refuses_graph_capture():
    out = run("""
        assert gmlake.route() == "pluggable"
        x = torch.randn(1024, 1024, device="cuda")
        assert torch.cuda.memory_allocated() == gmlake.memory_allocated() > 0   # patched
        g = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(g):
                y = x * 2
            raise SystemExit("capture was not refused")
        except RuntimeError as e:
            assert "capturing a CUDA graph" in str(e), str(e)
        print("ok")
    """, enable='gmlake.enable(mode="pluggable")')
    assert "ok" in out

