// Measures the driver calls gmlake's cost table (core/src/sim.rs) estimates, at the sizes the
// traces use, including the multi-GiB segments that PyTorch's allocator cudaMallocs for
// opt13_lora (4.7 and 7.1 GB) and that h200-measurements.md stops short of (512 MiB).
//
// Build and run on the GPU machine (scripts/gpu-check.sh, check "costs"):
//   g++ -O2 -std=c++17 bench/driver_costs.cpp -I$CUDA_HOME/include -L$CUDA_HOME/lib64 -lcudart -lcuda
// Prints one JSON object per line: {"call": ..., "bytes": ..., "handles": ..., "median_us": ..., "n": ...}.
// Each figure is the median of `n` timed calls (wall clock around the call, device idle); the
// allocations of one size are all held before any is freed, as in a growing allocator.
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

static double now_us() {
  using namespace std::chrono;
  return duration<double, std::micro>(steady_clock::now().time_since_epoch()).count();
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

#define CK(x)                                                              \
  do {                                                                     \
    CUresult r_ = (x);                                                     \
    if (r_ != CUDA_SUCCESS) {                                              \
      const char* n_ = nullptr;                                            \
      cuGetErrorName(r_, &n_);                                             \
      std::fprintf(stderr, "%s failed: %s (line %d)\n", #x, n_, __LINE__); \
      std::exit(1);                                                        \
    }                                                                      \
  } while (0)

static void emit(const char* call, size_t bytes, int handles, const std::vector<double>& t) {
  std::printf("{\"call\": \"%s\", \"bytes\": %zu, \"handles\": %d, \"median_us\": %.2f, \"n\": %zu}\n",
              call, bytes, handles, median(t), t.size());
  std::fflush(stdout);
}

int main() {
  const size_t MiB = size_t(1) << 20;
  if (cudaFree(nullptr) != cudaSuccess) {  // creates the primary context, as PyTorch does
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  CUdevice dev;
  CK(cuCtxGetDevice(&dev));

  // cudaMalloc / cudaFree, as PyTorch's caching allocator calls them while it grows: n segments
  // allocated in a row and held, then freed in a row (freeing each at once would let the driver
  // hand the same memory straight back, which a growing allocator never sees).
  for (size_t mib : {2, 20, 96, 192, 512, 1024, 2048, 4096, 7168}) {
    size_t bytes = mib * MiB;
    int n = mib >= 1024 ? 8 : 16;
    std::vector<double> ta, tf;
    std::vector<void*> held;
    for (int i = 0; i < n; i++) {
      void* p = nullptr;
      double t0 = now_us();
      if (cudaMalloc(&p, bytes) != cudaSuccess) {
        std::fprintf(stderr, "cudaMalloc(%zu) failed\n", bytes);
        return 1;
      }
      ta.push_back(now_us() - t0);
      held.push_back(p);
    }
    for (void* p : held) {
      double t0 = now_us();
      cudaFree(p);
      tf.push_back(now_us() - t0);
    }
    emit("cudaMalloc", bytes, 1, ta);
    emit("cudaFree", bytes, 1, tf);
  }

  // The VMM calls of one growth: k handles of `mib` each, mapped back to back into one range.
  CUmemAllocationProp prop = {};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = dev;
  CUmemAccessDesc access = {};
  access.location = prop.location;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  struct Shape {
    size_t mib;
    int k;
  };
  for (Shape s : {Shape{2, 1}, Shape{32, 1}, Shape{32, 8}, Shape{256, 1}, Shape{256, 8}, Shape{1024, 1},
                  Shape{1024, 4}, Shape{4096, 1}}) {
    size_t hb = s.mib * MiB, total = hb * s.k;
    std::vector<double> tc, tm, ts, tu, tr, tv;
    // Eight growths held at once, then torn down, as for cudaMalloc above.
    std::vector<CUdeviceptr> vas(8);
    std::vector<std::vector<CUmemGenericAllocationHandle>> hs(8, std::vector<CUmemGenericAllocationHandle>(s.k));
    for (int i = 0; i < 8; i++) {
      CUdeviceptr& va = vas[i];
      std::vector<CUmemGenericAllocationHandle>& h = hs[i];
      double t0 = now_us();
      CK(cuMemAddressReserve(&va, total, 0, 0, 0));
      tv.push_back(now_us() - t0);
      for (int j = 0; j < s.k; j++) {
        t0 = now_us();
        CK(cuMemCreate(&h[j], hb, &prop, 0));
        tc.push_back(now_us() - t0);
      }
      for (int j = 0; j < s.k; j++) {
        t0 = now_us();
        CK(cuMemMap(va + j * hb, hb, 0, h[j], 0));
        tm.push_back(now_us() - t0);
      }
      t0 = now_us();
      CK(cuMemSetAccess(va, total, &access, 1));
      ts.push_back(now_us() - t0);
    }
    CK(cuCtxSynchronize());
    for (int i = 0; i < 8; i++) {
      double t0 = now_us();
      CK(cuMemUnmap(vas[i], total));
      tu.push_back(now_us() - t0);
      for (int j = 0; j < s.k; j++) {
        t0 = now_us();
        CK(cuMemRelease(hs[i][j]));
        tr.push_back(now_us() - t0);
      }
      CK(cuMemAddressFree(vas[i], total));
    }
    emit("cuMemAddressReserve", total, s.k, tv);
    emit("cuMemCreate", hb, 1, tc);
    emit("cuMemMap", hb, 1, tm);
    emit("cuMemSetAccess", total, s.k, ts);
    emit("cuMemUnmap", total, s.k, tu);
    emit("cuMemRelease", hb, 1, tr);
  }

  // Stitched views: k handles, each already mapped with access in its own range (its segment),
  // mapped back to back into a second range and then a third, as when a stitched block maps chunks
  // that other cached stitched blocks map too. Is access to a handle's further mappings dearer?
  for (Shape s : {Shape{32, 16}, Shape{256, 8}, Shape{1024, 4}}) {
    size_t hb = s.mib * MiB, total = hb * s.k;
    std::vector<double> t1, t2, t3;
    for (int rep = 0; rep < 8; rep++) {
      std::vector<CUmemGenericAllocationHandle> h(s.k);
      std::vector<CUdeviceptr> own(s.k);
      for (int j = 0; j < s.k; j++) {
        CK(cuMemCreate(&h[j], hb, &prop, 0));
        CK(cuMemAddressReserve(&own[j], hb, 0, 0, 0));
        CK(cuMemMap(own[j], hb, 0, h[j], 0));
        double t0 = now_us();
        CK(cuMemSetAccess(own[j], hb, &access, 1));
        t1.push_back(now_us() - t0);
      }
      CUdeviceptr views[2];
      for (int v = 0; v < 2; v++) {
        CK(cuMemAddressReserve(&views[v], total, 0, 0, 0));
        for (int j = 0; j < s.k; j++) CK(cuMemMap(views[v] + j * hb, hb, 0, h[j], 0));
        double t0 = now_us();
        CK(cuMemSetAccess(views[v], total, &access, 1));
        (v == 0 ? t2 : t3).push_back((now_us() - t0) / s.k);
      }
      CK(cuCtxSynchronize());
      for (CUdeviceptr v : views) {
        CK(cuMemUnmap(v, total));
        CK(cuMemAddressFree(v, total));
      }
      for (int j = 0; j < s.k; j++) {
        CK(cuMemUnmap(own[j], hb));
        CK(cuMemAddressFree(own[j], hb));
        CK(cuMemRelease(h[j]));
      }
    }
    // Per handle: the first mapping's grant (one call per handle), then one call over k handles
    // for the second and the third mapping, divided by k.
    emit("cuMemSetAccess first mapping, per handle", hb, 1, t1);
    emit("cuMemSetAccess second mapping, per handle", hb, s.k, t2);
    emit("cuMemSetAccess third mapping, per handle", hb, s.k, t3);
  }
  return 0;
}
