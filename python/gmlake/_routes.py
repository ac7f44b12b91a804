"""The two ways gmlake becomes PyTorch's CUDA allocator.

- "cpp": gmlake implements PyTorch's whole allocator interface (`csrc/allocator.cpp`), compiled
  against the installed torch with `torch.utils.cpp_extension` the first time (once per gmlake and
  torch version, cached in torch's extension folder) and installed with
  `torch::cuda::CUDAPluggableAllocator::changeCurrentAllocator`. Every torch.cuda memory function
  works, CUDA graphs and MemPool get private pools, out of memory is `torch.cuda.OutOfMemoryError`.
- "pluggable": PyTorch's `CUDAPluggableAllocator` with gmlake's C entry points: no compiler needed,
  but PyTorch passes it only malloc and free.
"""
import os
import re
import sys
import warnings

from . import _core

# The routes enable() accepts.
MODES = ("auto", "cpp", "pluggable")

# What the pluggable route lacks, as said when falling back to it.
PLUGGABLE_LIMITS = (
    "torch.cuda.memory_stats() and memory_summary() through gmlake's patches only, no "
    "_record_memory_history/_snapshot/_dump_snapshot, no cudnn.benchmark, no CUDA graph capture "
    "(refused), no torch.cuda.MemPool or torch.compile(mode='reduce-overhead'), no CUDA IPC, and "
    "out of memory raised as RuntimeError rather than torch.cuda.OutOfMemoryError")


def install_pluggable(torch):
    """Makes gmlake PyTorch's allocator through `CUDAPluggableAllocator`; returns the object to
    keep alive."""
    import ctypes
    path = _core.__file__
    alloc = torch.cuda.memory.CUDAPluggableAllocator(path, "gmlake_torch_malloc", "gmlake_torch_free")
    lib = ctypes.CDLL(path)

    def fn(name):
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value

    a = alloc.allocator()
    a.set_init_fn(fn("gmlake_torch_init"))
    a.set_reset_fn(fn("gmlake_torch_empty_cache"))
    a.set_memory_fraction_fn(fn("gmlake_torch_set_memory_fraction"))
    a.set_record_stream_fn(fn("gmlake_torch_record_stream"))
    torch.cuda.memory.change_current_allocator(alloc)
    return alloc


def _cuda_include_dirs(cpp_extension):
    """Folders holding cuda_runtime_api.h: the CUDA toolkit's, else those of the NVIDIA pip
    packages that torch itself depends on."""
    dirs = []
    home = cpp_extension.CUDA_HOME or os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        dirs.append(os.path.join(home, "include"))
    for base in sys.path:
        nvidia = os.path.join(base, "nvidia")
        if os.path.isdir(nvidia):
            for sub in sorted(os.listdir(nvidia)):
                inc = os.path.join(nvidia, sub, "include")
                if os.path.isfile(os.path.join(inc, "cuda_runtime_api.h")):
                    dirs.append(inc)
    return [d for d in dirs if os.path.isfile(os.path.join(d, "cuda_runtime_api.h"))]


def build(torch, verbose=False):
    """Builds (or finds built) the C++ allocator for this torch; returns the path of its library.
    Raises whatever the build raises (no compiler, no CUDA headers)."""
    from torch.utils import cpp_extension
    here = os.path.dirname(os.path.abspath(__file__))
    name = "gmlake_torch_" + re.sub(r"\W", "_", "%s_%s" % (_core.__version__, torch.__version__))
    cuda_inc = _cuda_include_dirs(cpp_extension)
    if not cuda_inc:
        raise RuntimeError("no CUDA runtime headers (cuda_runtime_api.h) found: set CUDA_HOME")
    try:  # a private helper of torch's: only for the message, never a reason to fail
        built = os.path.exists(os.path.join(cpp_extension._get_build_directory(name, verbose=False), name + ".so"))
    except Exception:
        built = False
    if not built:
        print("gmlake: building its PyTorch allocator for torch %s (once per gmlake and torch version)..."
              % torch.__version__, file=sys.stderr, flush=True)
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    return cpp_extension.load(
        name=name,
        sources=[os.path.join(here, "csrc", "allocator.cpp")],
        extra_include_paths=[os.path.join(here, "include")] + cuda_inc,
        extra_cflags=["-O2"],
        extra_ldflags=["-L" + torch_lib, "-lc10_cuda", "-ltorch_cuda"],
        with_cuda=False,
        is_python_module=False,
        verbose=verbose,
    )


def install_cpp(path):
    """Installs the built C++ allocator at `path`; returns its library (to keep loaded)."""
    import ctypes
    lib = ctypes.CDLL(path)
    err = ctypes.create_string_buffer(4096)
    if lib.gmlake_cpp_install(_core.__file__.encode(), err, len(err)) != 0:
        raise RuntimeError(err.value.decode(errors="replace"))
    return lib


def install(torch, mode):
    """Installs the route `mode` ("cpp", "pluggable" or "auto"); returns (the route used, an
    object to keep alive). "auto" falls back from "cpp" to "pluggable" with one warning naming
    what will not work."""
    if mode not in MODES:
        raise ValueError("mode must be one of %s, not %r" % (", ".join(MODES), mode))
    if mode in ("auto", "cpp"):
        try:
            path = build(torch, verbose=os.environ.get("GMLAKE_BUILD_VERBOSE") == "1")
        except Exception as e:  # any build failure: no compiler, no headers, a torch API change
            if mode == "cpp":
                raise RuntimeError("gmlake: could not build its C++ allocator for torch %s: %s"
                                   % (torch.__version__, e)) from e
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            warnings.warn("gmlake: could not build its C++ allocator (%s); using PyTorch's pluggable "
                          "allocator instead, which lacks: %s. Set GMLAKE_BUILD_VERBOSE=1 to see the "
                          "build." % (first, PLUGGABLE_LIMITS), RuntimeWarning, stacklevel=3)
        else:
            return "cpp", install_cpp(path)
    return "pluggable", install_pluggable(torch)
