"""How enable() chooses its route, without a GPU: the mode is checked first, the C++ allocator's
build failing falls back to PyTorch's pluggable allocator with one warning naming what is lost,
and the C entry points the C++ allocator looks up exist in gmlake._core."""
import ctypes
import os
import re
import sys
import types
import warnings

import pytest

import gmlake
from gmlake import _core, _routes

CSRC = os.path.join(os.path.dirname(gmlake.__file__), "csrc", "allocator.cpp")


def shim_functions():
    """The C functions the C++ allocator looks up in gmlake._core."""
    return [n for n in re.findall(r"GMLAKE_GET\((\w+)\)", open(CSRC).read()) if n != "name"]


def test_a_bad_mode_is_refused_first():
    with pytest.raises(ValueError, match="mode must be one of auto, cpp, pluggable"):
        gmlake.enable(mode="fast")
    with pytest.raises(ValueError, match="mode must be one of"):
        _routes.install(None, "fast")
    assert not gmlake.is_enabled() and gmlake.route() is None


class FakePluggable:
    """Stands for torch.cuda.memory.CUDAPluggableAllocator: records what gmlake gives it."""

    def __init__(self, path, malloc, free):
        self.args = (path, malloc, free)
        self.fns = {}

    def allocator(self):
        fns = self.fns

        class Raw:
            def __getattr__(self, name):
                return lambda ptr: fns.__setitem__(name, ptr)
        return Raw()


def fake_torch(monkeypatch, build_error):
    """A torch whose cpp_extension.load raises `build_error`, with a pluggable allocator that
    records what it is given."""
    installed = []
    memory = types.SimpleNamespace(CUDAPluggableAllocator=FakePluggable, change_current_allocator=installed.append)
    torch = types.SimpleNamespace(__version__="9.9.9", __file__="/nonexistent/torch/__init__.py",
                                  cuda=types.SimpleNamespace(memory=memory))
    cpp_extension = types.ModuleType("torch.utils.cpp_extension")
    cpp_extension.CUDA_HOME = None

    def load(**kwargs):
        raise build_error
    cpp_extension.load = load
    cpp_extension._get_build_directory = lambda name, verbose: "/nonexistent"
    utils = types.ModuleType("torch.utils")
    utils.cpp_extension = cpp_extension
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch.utils", utils)
    monkeypatch.setitem(sys.modules, "torch.utils.cpp_extension", cpp_extension)
    monkeypatch.setattr(_routes, "_cuda_include_dirs", lambda ext: ["/usr/include"])
    return torch, installed


def test_auto_falls_back_to_the_pluggable_allocator_with_one_warning(monkeypatch):
    torch, installed = fake_torch(monkeypatch, RuntimeError("Error building extension: g++ not found"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        route, keep = _routes.install(torch, "auto")
    assert route == "pluggable" and installed == [keep]
    assert len(caught) == 1 and caught[0].category is RuntimeWarning
    text = str(caught[0].message)
    assert "g++ not found" in text and "CUDA graph capture" in text and "OutOfMemoryError" in text
    # The pluggable allocator gets gmlake's entry points, from gmlake._core.
    assert keep.args == (_core.__file__, "gmlake_torch_malloc", "gmlake_torch_free")
    lib = ctypes.CDLL(_core.__file__)
    want = ctypes.cast(lib.gmlake_torch_empty_cache, ctypes.c_void_p).value
    assert keep.fns["set_reset_fn"] == want
    assert set(keep.fns) == {"set_init_fn", "set_reset_fn", "set_memory_fraction_fn", "set_record_stream_fn"}


def test_cpp_mode_raises_when_the_build_fails(monkeypatch):
    torch, installed = fake_torch(monkeypatch, RuntimeError("no compiler"))
    with pytest.raises(RuntimeError, match="could not build its C\\+\\+ allocator for torch 9.9.9: no compiler"):
        _routes.install(torch, "cpp")
    assert installed == []


def test_every_c_function_the_cpp_allocator_looks_up_is_exported():
    names = shim_functions()
    assert len(names) >= 25, names
    lib = ctypes.CDLL(_core.__file__)
    missing = [n for n in names if not hasattr(lib, n)]
    assert missing == []


def test_the_cpp_allocator_ships_with_its_header():
    here = os.path.dirname(gmlake.__file__)
    header = open(os.path.join(here, "include", "gmlake.h")).read()
    for name in shim_functions():
        assert name + "(" in header, name
