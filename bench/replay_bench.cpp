// replay_bench: replays an allocation trace (the text format of traces/README.md, uncompressed)
// through one GPU allocator, in passes on the same allocator (a cold pass, then warm passes), and
// prints one JSON line per pass: wall time, ns per operation, time inside driver calls (gmlake only,
// -1 for the others), peak reserved bytes, utilization.
//
//   replay_bench --allocator torch|async|gmlake|gmlake-sim [--config GMLAKE_CONF] [--passes N]
//                [--explain N] TRACE.txt
//
// --passes N (default 2): a cold pass, then N - 1 warm passes ("warm", "warm3", "warm4"...).
//
// --explain N times every call (which slows the pass) and prints to stderr how much of the pass
// went to calls that made driver calls and to those that made none, then the N calls that spent
// the most time outside the driver (gmlake only: the others report no driver time).
//
// Allocators:
//   torch  - PyTorch's CUDA caching allocator (c10::cuda::CUDACachingAllocator::raw_alloc_with_stream
//            and raw_delete, from libc10_cuda), default settings;
//   async  - cudaMallocAsync / cudaFreeAsync on the device's default memory pool, with its release
//            threshold set to the maximum so that it caches like the others;
//   gmlake - gmlake on the CUDA backend through its C API (include/gmlake.h, libgmlake.so);
//   gmlake-sim - gmlake on its simulated device through the same API (no driver calls: the
//            allocator's own time).
//
// Built on the GPU machine by scripts/gpu-check.sh with g++ against the installed PyTorch.
// `alloc` allocates and `free_requested` frees; other actions are ignored. Allocations still live
// at the end of a pass are freed before the next pass. The device is synchronized at the end of
// each pass, inside the timed region.

#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
  // Wall time spent inside driver calls so far, in microseconds; negative where not known.
  virtual double driver_us() { return -1.0; }
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
  // `simulated`: on gmlake's simulated device (bookkeeping only, no driver calls), to tell the
  // allocator's own time from the driver's through the same C API.
  explicit Gmlake(const std::string& config, bool simulated = false) {
    if (simulated)
      check(gmlake_create_simulated(150ull << 30, config.c_str(), &a));
    else
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
  double driver_us() override {
    char* json = nullptr;
    check(gmlake_stats_json(a, &json));
    const char* key = "\"gmlake.driver_us\":";
    const char* at = std::strstr(json, key);
    double us = at ? std::strtod(at + std::strlen(key), nullptr) : -1.0;
    gmlake_string_free(json);
    return us;
  }
  ~Gmlake() override { gmlake_destroy(a, true); }
};

// "cold" for the first pass, "warm" for the second, "warm3", "warm4"... after.
std::string pass_name(int pass) {
  if (pass == 0) return "cold";
  if (pass == 1) return "warm";
  return "warm" + std::to_string(pass + 1);
}

// One timed operation, for --explain.
struct Timed {
  double ns;         // wall time of the call
  double driver_ns;  // of which inside driver calls
  size_t event;      // index in the trace's alloc/free events
  bool alloc;
  uint64_t size;
};

// Prints to stderr where a pass's time went: in calls that made driver calls and in those that
// made none, then the `n` calls with the most time outside the driver.
void report_slowest(std::vector<Timed>& timed, int n, int pass) {
  double with = 0, with_driver = 0, without = 0;
  size_t n_with = 0;
  for (const auto& t : timed) {
    if (t.driver_ns > 0) {
      with += t.ns;
      with_driver += t.driver_ns;
      n_with++;
    } else {
      without += t.ns;
    }
  }
  std::fprintf(stderr,
               "pass %d: %zu calls with driver calls: %.2f ms (%.2f ms in the driver); %zu calls without: %.2f ms "
               "(%.0f ns each)\n",
               pass, n_with, with / 1e6, with_driver / 1e6, timed.size() - n_with, without / 1e6,
               without / (double)(timed.size() - n_with));
  std::sort(timed.begin(), timed.end(),
            [](const Timed& a, const Timed& b) { return a.ns - a.driver_ns > b.ns - b.driver_ns; });
  for (int i = 0; i < n && i < (int)timed.size(); i++) {
    const auto& t = timed[i];
    std::fprintf(stderr, "  event %zu %s %.1f MB: %.1f us, %.1f us outside the driver\n", t.event,
                 t.alloc ? "alloc" : "free", t.size / 1e6, t.ns / 1e3, (t.ns - t.driver_ns) / 1e3);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string which, config, path;
  int explain = 0;  // --explain N: per-call timing (slower), N slowest calls to stderr
  int passes = 2;   // --passes N: a cold pass, then N - 1 warm passes
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "--allocator" && i + 1 < argc) which = argv[++i];
    else if (arg == "--config" && i + 1 < argc) config = argv[++i];
    else if (arg == "--explain" && i + 1 < argc) explain = std::atoi(argv[++i]);
    else if (arg == "--passes" && i + 1 < argc) passes = std::max(1, std::atoi(argv[++i]));
    else path = arg;
  }
  if (which.empty() || path.empty()) {
    std::fprintf(stderr, "usage: replay_bench --allocator torch|async|gmlake|gmlake-sim [--config CONF] [--passes N] "
                         "[--explain N] TRACE.txt\n");
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
    else if (which == "gmlake-sim") alloc = new Gmlake(config, true);
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
    for (int pass = 0; pass < passes; pass++) {
      uint64_t ops = 0;
      double driver_before = alloc->driver_us();
      auto start = std::chrono::steady_clock::now();
      std::vector<Timed> timed;
      for (size_t i = 0; i < events.size(); i++) {
        const auto& e = events[i];
        auto t0 = std::chrono::steady_clock::now();
        double d0 = explain ? alloc->driver_us() : 0.0;
        if (explain) t0 = std::chrono::steady_clock::now();
        bool did = false;
        if (e.alloc) {
          ptrs[e.addr] = alloc->alloc(e.size);
          ops++;
          did = true;
        } else if (auto it = ptrs.find(e.addr); it != ptrs.end()) {
          alloc->free(it->second);
          ptrs.erase(it);
          ops++;
          did = true;
        }
        if (explain && did) {
          double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
          double d = alloc->driver_us() - d0;
          timed.push_back({ns, d * 1e3, i, e.alloc, e.size});
        }
      }
      if (explain) report_slowest(timed, explain, pass);
      for (auto& [addr, p] : ptrs) {
        alloc->free(p);
        ops++;
      }
      ptrs.clear();
      check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      uint64_t peak = alloc->peak_reserved();
      double driver_after = alloc->driver_us();
      double driver_ms = driver_before < 0 ? -1.0 : (driver_after - driver_before) / 1e3;
      std::printf(
          "{\"trace\": \"%s\", \"allocator\": \"%s\", \"pass\": \"%s\", \"ops\": %llu, \"wall_ms\": %.3f, "
          "\"ns_per_op\": %.1f, \"driver_ms\": %.3f, \"peak_active_bytes\": %llu, \"peak_reserved_bytes\": %llu, \"utilization\": %.4f}\n",
          path.substr(path.find_last_of('/') + 1).c_str(), which.c_str(), pass_name(pass).c_str(),
          (unsigned long long)ops, secs * 1e3, secs * 1e9 / (double)ops, driver_ms, (unsigned long long)peak_live,
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
