// replay_bench: replays an allocation trace (the text format of traces/README.md, uncompressed)
// through one GPU allocator, twice on the same allocator (a cold pass, then a warm pass), and
// prints one JSON line per pass: wall time, ns per operation, peak reserved bytes, utilization.
//
//   replay_bench --allocator torch|async|gmlake [--config GMLAKE_CONF] TRACE.txt
//
// Allocators:
//   torch  - PyTorch's CUDA caching allocator (c10::cuda::CUDACachingAllocator::raw_alloc_with_stream
//            and raw_delete, from libc10_cuda), default settings;
//   async  - cudaMallocAsync / cudaFreeAsync on the device's default memory pool, with its release
//            threshold set to the maximum so that it caches like the others;
//   gmlake - gmlake on the CUDA backend through its C API (include/gmlake.h, libgmlake.so).
//
// Built on the GPU machine by scripts/gpu-check.sh with g++ against the installed PyTorch.
// `alloc` allocates and `free_requested` frees; other actions are ignored. Allocations still live
// at the end of a pass are freed before the next pass. The device is synchronized at the end of
// each pass, inside the timed region.

#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "gmlake.h"

namespace {

struct Event {
  bool alloc;  // false: free_requested
  uint64_t addr;
  uint64_t size;
};

std::vector<Event> read_trace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<Event> events;
  std::string line, action;
  uint64_t addr = 0, size = 0, stream = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    if (!(fields >> action >> addr >> size >> stream)) throw std::runtime_error("bad line: " + line);
    if (action == "alloc") events.push_back({true, addr, size});
    if (action == "free_requested") events.push_back({false, addr, size});
  }
  return events;
}

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// One allocator under test.
struct Allocator {
  virtual ~Allocator() = default;
  virtual void* alloc(size_t size) = 0;
  virtual void free(void* p) = 0;
  virtual uint64_t peak_reserved() = 0;
};

struct Torch : Allocator {
  Torch() {
    int n = 0;
    check_cuda(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
    c10::cuda::CUDACachingAllocator::init(n);
  }
  void* alloc(size_t size) override {
    return c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(size, cudaStreamLegacy);
  }
  void free(void* p) override { c10::cuda::CUDACachingAllocator::raw_delete(p); }
  uint64_t peak_reserved() override {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
    return stats.reserved_bytes[0].peak;
  }
  ~Torch() override { c10::cuda::CUDACachingAllocator::emptyCache(); }
};

struct Async : Allocator {
  cudaMemPool_t pool{};
  Async() {
    check_cuda(cudaDeviceGetDefaultMemPool(&pool, 0), "cudaDeviceGetDefaultMemPool");
    uint64_t threshold = UINT64_MAX;
    check_cuda(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold), "release threshold");
  }
  void* alloc(size_t size) override {
    void* p = nullptr;
    check_cuda(cudaMallocAsync(&p, size, cudaStreamLegacy), "cudaMallocAsync");
    return p;
  }
  void free(void* p) override { check_cuda(cudaFreeAsync(p, cudaStreamLegacy), "cudaFreeAsync"); }
  uint64_t peak_reserved() override {
    uint64_t high = 0;
    check_cuda(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &high), "reserved high");
    return high;
  }
  ~Async() override {
    cudaDeviceSynchronize();
    cudaMemPoolTrimTo(pool, 0);
  }
};

struct Gmlake : Allocator {
  gmlake_allocator* a = nullptr;
  explicit Gmlake(const std::string& config) {
    check(gmlake_create_cuda(0, config.c_str(), &a));
  }
  static void check(gmlake_status s) {
    if (s != GMLAKE_OK) throw std::runtime_error(gmlake_last_error());
  }
  void* alloc(size_t size) override {
    void* p = nullptr;
    check(gmlake_malloc(a, size, nullptr, &p));
    return p;
  }
  void free(void* p) override { check(gmlake_free(a, p)); }
  uint64_t peak_reserved() override {
    gmlake_stats s{};
    check(gmlake_get_stats(a, &s));
    return s.peak_reserved_bytes;
  }
  ~Gmlake() override { gmlake_destroy(a, true); }
};

}  // namespace

int main(int argc, char** argv) {
  std::string which, config, path;
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "--allocator" && i + 1 < argc) which = argv[++i];
    else if (arg == "--config" && i + 1 < argc) config = argv[++i];
    else path = arg;
  }
  if (which.empty() || path.empty()) {
    std::fprintf(stderr, "usage: replay_bench --allocator torch|async|gmlake [--config CONF] TRACE.txt\n");
    return 2;
  }
  try {
    auto events = read_trace(path);
    check_cuda(cudaSetDevice(0), "cudaSetDevice");
    check_cuda(cudaFree(nullptr), "context init");
    Allocator* alloc = nullptr;
    if (which == "torch") alloc = new Torch();
    else if (which == "async") alloc = new Async();
    else if (which == "gmlake") alloc = new Gmlake(config);
    else throw std::runtime_error("unknown allocator " + which);

    // Peak of live requested bytes, from the trace.
    uint64_t live = 0, peak_live = 0;
    {
      std::unordered_map<uint64_t, uint64_t> sizes;
      for (const auto& e : events) {
        if (e.alloc) {
          sizes[e.addr] = e.size;
          live += e.size;
          if (live > peak_live) peak_live = live;
        } else if (auto it = sizes.find(e.addr); it != sizes.end()) {
          live -= it->second;
          sizes.erase(it);
        }
      }
    }
    std::unordered_map<uint64_t, void*> ptrs;
    ptrs.reserve(1 << 16);
    for (int pass = 0; pass < 2; pass++) {
      uint64_t ops = 0;
      auto start = std::chrono::steady_clock::now();
      for (const auto& e : events) {
        if (e.alloc) {
          ptrs[e.addr] = alloc->alloc(e.size);
          ops++;
        } else if (auto it = ptrs.find(e.addr); it != ptrs.end()) {
          alloc->free(it->second);
          ptrs.erase(it);
          ops++;
        }
      }
      for (auto& [addr, p] : ptrs) {
        alloc->free(p);
        ops++;
      }
      ptrs.clear();
      check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      uint64_t peak = alloc->peak_reserved();
      std::printf(
          "{\"trace\": \"%s\", \"allocator\": \"%s\", \"pass\": \"%s\", \"ops\": %llu, \"wall_ms\": %.3f, "
          "\"ns_per_op\": %.1f, \"peak_active_bytes\": %llu, \"peak_reserved_bytes\": %llu, \"utilization\": %.4f}\n",
          path.substr(path.find_last_of('/') + 1).c_str(), which.c_str(), pass == 0 ? "cold" : "warm",
          (unsigned long long)ops, secs * 1e3, secs * 1e9 / (double)ops, (unsigned long long)peak_live,
          (unsigned long long)peak, peak ? (double)peak_live / (double)peak : 0.0);
      std::fflush(stdout);
    }
    delete alloc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "replay_bench: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "replay_bench: unknown C++ exception\n");
    return 1;
  }
  return 0;
}
