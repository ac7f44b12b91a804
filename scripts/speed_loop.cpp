// The allocator's own CPU time, without Python: allocation and free through PyTorch's current CUDA
// allocator (`c10::cuda::CUDACachingAllocator::get()`, whichever is installed), timed in C++.
// Built and called by `scripts/torch_features.py` (the `speed_cpp` row) through ctypes, so that
// the native allocator and gmlake are measured by the same loop.
#include <c10/cuda/CUDACachingAllocator.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <vector>

namespace {

double ns_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

// Nanoseconds per allocation and free of `size` bytes, over `n` pairs after 200 unmeasured ones;
// -1 if the allocator threw.
extern "C" __attribute__((visibility("default"))) double speed_pairs(size_t size, int n) {
  try {
    auto* a = c10::cuda::CUDACachingAllocator::get();
    for (int i = 0; i < 200; ++i) {
      c10::DataPtr p = a->allocate(size);
    }
    auto t = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      c10::DataPtr p = a->allocate(size);
    }
    return ns_since(t) / n;
  } catch (const std::exception&) {
    return -1;
  }
}

// Nanoseconds per allocation in a window of the 64 most recent live allocations, their sizes
// `sizes[0..count)` in turn (the free of the allocation 64 back is in the figure); -1 if the
// allocator threw.
extern "C" __attribute__((visibility("default"))) double speed_window(const uint64_t* sizes, int count) {
  try {
    auto* a = c10::cuda::CUDACachingAllocator::get();
    std::vector<c10::DataPtr> window(64);
    auto t = std::chrono::steady_clock::now();
    for (int i = 0; i < count; ++i) {
      window[i % 64] = a->allocate(sizes[i]);
    }
    double ns = ns_since(t) / count;
    window.clear();
    return ns;
  } catch (const std::exception&) {
    return -1;
  }
}
