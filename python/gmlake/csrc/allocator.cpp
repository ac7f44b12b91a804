// gmlake as PyTorch's CUDA allocator: PyTorch's whole allocator interface
// (c10::cuda::CUDACachingAllocator::CUDAAllocator), compiled against the torch that is installed
// (gmlake.enable builds it with torch.utils.cpp_extension), forwarding every call to gmlake's C
// API. It holds no policy: memory, pools, statistics and history are gmlake's; this file only
// translates between PyTorch's types and the C API, gathers PyTorch's stack contexts for the
// history, and raises PyTorch's errors.
//
// The C API is taken from the already loaded gmlake._core library by dlsym, so that this
// extension needs no link-time path to it.
//
// Numbers go into messages as strings (std::to_string, format_size): an integer streamed through
// c10::str from this library crashed in libstdc++'s locale code on the H200 machine
// (docs/design.md, "PyTorch's allocator in C++").

#include <c10/core/CachingDeviceAllocator.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/csrc/cuda/CUDAPluggableAllocator.h>

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "gmlake.h"

namespace gmlake_torch {

namespace cca = c10::cuda::CUDACachingAllocator;
using c10::CachingDeviceAllocator::BlockInfo;
using c10::CachingDeviceAllocator::DeviceStats;
using c10::CachingDeviceAllocator::RecordContext;
using c10::CachingDeviceAllocator::SegmentInfo;
using c10::CachingDeviceAllocator::TraceEntry;
using c10::MempoolId_t;

// The C API, looked up in gmlake._core.
struct Api {
#define GMLAKE_FN(name) decltype(&::name) name = nullptr;
  GMLAKE_FN(gmlake_torch_allocator)
  GMLAKE_FN(gmlake_last_error)
  GMLAKE_FN(gmlake_malloc_ex)
  GMLAKE_FN(gmlake_free_ex)
  GMLAKE_FN(gmlake_record_stream)
  GMLAKE_FN(gmlake_empty_cache)
  GMLAKE_FN(gmlake_set_memory_fraction)
  GMLAKE_FN(gmlake_get_device_stats)
  GMLAKE_FN(gmlake_reset_peak_stats)
  GMLAKE_FN(gmlake_reset_accumulated_stats)
  GMLAKE_FN(gmlake_cache_info)
  GMLAKE_FN(gmlake_pool)
  GMLAKE_FN(gmlake_pool_use_count)
  GMLAKE_FN(gmlake_pool_live)
  GMLAKE_FN(gmlake_capture)
  GMLAKE_FN(gmlake_pool_checkpoint)
  GMLAKE_FN(gmlake_checkpoint_free)
  GMLAKE_FN(gmlake_pool_restore)
  GMLAKE_FN(gmlake_addresses_free)
  GMLAKE_FN(gmlake_record_history)
  GMLAKE_FN(gmlake_history)
  GMLAKE_FN(gmlake_history_free)
  GMLAKE_FN(gmlake_snapshot_take)
  GMLAKE_FN(gmlake_snapshot_segments)
  GMLAKE_FN(gmlake_snapshot_free)
  GMLAKE_FN(gmlake_allocation_size)
  GMLAKE_FN(gmlake_share)
  GMLAKE_FN(gmlake_shared_free)
  GMLAKE_FN(gmlake_import)
  GMLAKE_FN(gmlake_import_close)
#undef GMLAKE_FN
};
static Api api;

static void load_api(const std::string& core_path) {
  void* lib = dlopen(core_path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (!lib) {
    lib = dlopen(core_path.c_str(), RTLD_NOW);
  }
  TORCH_CHECK(lib, "gmlake: cannot open ", core_path, ": ", dlerror());
  auto get = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    TORCH_CHECK(fn, "gmlake: ", core_path, " lacks ", name, " (a gmlake of another version?)");
  };
#define GMLAKE_GET(name) get(api.name, #name);
  GMLAKE_GET(gmlake_torch_allocator)
  GMLAKE_GET(gmlake_last_error)
  GMLAKE_GET(gmlake_malloc_ex)
  GMLAKE_GET(gmlake_free_ex)
  GMLAKE_GET(gmlake_record_stream)
  GMLAKE_GET(gmlake_empty_cache)
  GMLAKE_GET(gmlake_set_memory_fraction)
  GMLAKE_GET(gmlake_get_device_stats)
  GMLAKE_GET(gmlake_reset_peak_stats)
  GMLAKE_GET(gmlake_reset_accumulated_stats)
  GMLAKE_GET(gmlake_cache_info)
  GMLAKE_GET(gmlake_pool)
  GMLAKE_GET(gmlake_pool_use_count)
  GMLAKE_GET(gmlake_pool_live)
  GMLAKE_GET(gmlake_capture)
  GMLAKE_GET(gmlake_pool_checkpoint)
  GMLAKE_GET(gmlake_checkpoint_free)
  GMLAKE_GET(gmlake_pool_restore)
  GMLAKE_GET(gmlake_addresses_free)
  GMLAKE_GET(gmlake_record_history)
  GMLAKE_GET(gmlake_history)
  GMLAKE_GET(gmlake_history_free)
  GMLAKE_GET(gmlake_snapshot_take)
  GMLAKE_GET(gmlake_snapshot_segments)
  GMLAKE_GET(gmlake_snapshot_free)
  GMLAKE_GET(gmlake_allocation_size)
  GMLAKE_GET(gmlake_share)
  GMLAKE_GET(gmlake_shared_free)
  GMLAKE_GET(gmlake_import)
  GMLAKE_GET(gmlake_import_close)
#undef GMLAKE_GET
}

// Raises gmlake's error of the last call as PyTorch's error.
[[noreturn]] static void fail(const char* what) {
  TORCH_CHECK(false, "gmlake: ", what, ": ", api.gmlake_last_error());
}

static void check(gmlake_status s, const char* what) {
  if (s != GMLAKE_OK) {
    fail(what);
  }
}

static std::string format_size(uint64_t bytes) {
  char buf[64];
  if (bytes < (1ull << 20)) {
    snprintf(buf, sizeof buf, "%.2f KiB", bytes / 1024.0);
  } else if (bytes < (1ull << 30)) {
    snprintf(buf, sizeof buf, "%.2f MiB", bytes / 1048576.0);
  } else {
    snprintf(buf, sizeof buf, "%.2f GiB", bytes / 1073741824.0);
  }
  return buf;
}

static int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// What PyTorch's context recorder gathered for a call, and when: the history's records carry the
// call's id.
struct CallContext {
  std::shared_ptr<c10::GatheredContext> frames;
  int64_t time_us;
};

// A checkpoint of a private pool (PyTorch's AllocatorState).
struct PoolState final : cca::AllocatorState {
  gmlake_checkpoint* cp;
  explicit PoolState(gmlake_checkpoint* c) : cp(c) {}
  ~PoolState() override {
    api.gmlake_checkpoint_free(cp);
  }
};

// CUDA IPC handles as PyTorch 2.11 writes them: a version byte, a kind byte, the payload; a bare
// cudaIpcMemHandle_t from older versions. Kinds: PyTorch's (cudaMalloc memory, expandable
// segments) and gmlake's own.
constexpr char kHandleVersion = 2;
constexpr size_t kLegacyHandleSize = sizeof(cudaIpcMemHandle_t);
constexpr char kCudaMallocHandle = 'c';
constexpr char kExpandableSegmentHandle = 'e';
constexpr char kGmlakeHandle = 'g';

// The header of PyTorch's expandable-segment handle (its ShareHeader), followed by
// `num_handles` file descriptors (int) of the sending process, or as many fabric handles
// (CUmemFabricHandle, 64 bytes) where the sender's handles are fabric ones. Each handle is
// `segment_size` bytes, mapped whole, back to back, from the first.
struct ExpandableHeader {
  pid_t pid;
  size_t segment_size;
  size_t num_handles;
};
constexpr size_t kFabricHandleSize = 64;

// The header of gmlake's handle, followed by `count` gmlake_shared_piece.
struct GmlakeHeader {
  int64_t pid;
  uint64_t count;
};

class Allocator;
static Allocator* the_allocator = nullptr;

// The most devices gmlake serves in one process (a deleter each).
constexpr int kMaxDevices = 64;

template <int D>
static void delete_on(void* p);

class Allocator final : public cca::CUDAAllocator {
 public:
  // ---- memory -------------------------------------------------------------------------------

  c10::DataPtr allocate(size_t size) override {
    c10::DeviceIndex device = 0;
    C10_CUDA_CHECK(c10::cuda::GetDevice(&device));
    void* p = size ? malloc_on(device, size, c10::cuda::getCurrentCUDAStream(device)) : nullptr;
    return {p, p, deleter_of(device), c10::Device(c10::DeviceType::CUDA, device)};
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return &raw_delete_fn;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    C10_CUDA_CHECK(cudaMemcpy(dest, src, count, cudaMemcpyDeviceToDevice));
  }

  void* raw_alloc(size_t nbytes) override {
    c10::DeviceIndex device = 0;
    C10_CUDA_CHECK(c10::cuda::GetDevice(&device));
    return raw_alloc_with_stream(nbytes, c10::cuda::getCurrentCUDAStream(device));
  }

  void* raw_alloc_with_stream(size_t nbytes, cudaStream_t stream) override {
    if (nbytes == 0) {
      return nullptr;
    }
    c10::DeviceIndex device = 0;
    C10_CUDA_CHECK(c10::cuda::GetDevice(&device));
    void* p = malloc_on(device, nbytes, stream);
    std::lock_guard<std::mutex> g(raw_mu_);
    raw_device_[p] = device;
    return p;
  }

  void raw_delete(void* ptr) override {
    if (!ptr) {
      return;
    }
    std::optional<c10::DeviceIndex> device;
    {
      std::lock_guard<std::mutex> g(raw_mu_);
      auto it = raw_device_.find(ptr);
      if (it != raw_device_.end()) {
        device = it->second;
        raw_device_.erase(it);
      }
    }
    if (device) {
      free_on(*device, ptr);
      return;
    }
    // Like PyTorch's allocator, raw_delete frees any live allocation, not only raw_alloc's:
    // cudagraph trees free this way the blocks a restored checkpoint (setCheckpointPoolState)
    // made again. The device is the one whose allocator holds the pointer.
    size_t n = 0;
    {
      std::lock_guard<std::mutex> g(mu_);
      n = devices_.size();
    }
    for (size_t d = 0; d < n; ++d) {
      auto* a = existing(static_cast<c10::DeviceIndex>(d));
      uint64_t s = 0;
      if (a && api.gmlake_allocation_size(a, ptr, &s) == GMLAKE_OK) {
        free_on(static_cast<c10::DeviceIndex>(d), ptr);
        return;
      }
    }
    TORCH_CHECK(false, "gmlake: raw_delete of a pointer that is not a live allocation");
  }

  void init(int device_count) override {
    std::lock_guard<std::mutex> g(mu_);
    devices_.resize(std::max<size_t>(devices_.size(), device_count), nullptr);
    captures_.resize(devices_.size());
    initialized_ = true;
  }

  bool initialized() override {
    return initialized_;
  }

  void recordStream(const c10::DataPtr& ptr, c10::cuda::CUDAStream stream) override {
    if (!ptr.get() || !owns(ptr)) {
      return;
    }
    // Unknown pointers (memory from elsewhere) are ignored, as PyTorch's allocator does.
    (void)api.gmlake_record_stream(dev(ptr.device().index()), ptr.get(), stream.stream());
  }

  void emptyCache(MempoolId_t id) override {
    for (size_t d = 0; d < devices_.size(); ++d) {
      if (!devices_[d]) {
        continue;
      }
      if (id == MempoolId_t{0, 0}) {
        check(api.gmlake_empty_cache(devices_[d]), "empty_cache");
      } else {
        check(api.gmlake_pool(devices_[d], id.first, id.second, GMLAKE_POOL_EMPTY_CACHE), "emptyCache of a pool");
      }
    }
  }

  double getMemoryFraction(c10::DeviceIndex device) override {
    double f = 1.0;
    if (auto* a = existing(device)) {
      check(api.gmlake_cache_info(a, nullptr, &f), "getMemoryFraction");
    }
    return f;
  }

  void setMemoryFraction(double fraction, c10::DeviceIndex device) override {
    check(api.gmlake_set_memory_fraction(dev(device), fraction), "setMemoryFraction");
  }

  std::vector<cca::StreamSegmentSize> getExpandableSegmentSizes(c10::DeviceIndex) override {
    return {};
  }

  void enable(bool value) override {
    enabled_ = value;
  }

  bool isEnabled() const override {
    return enabled_;
  }

  void cacheInfo(c10::DeviceIndex device, size_t* largest) override {
    if (*largest == 0) {
      size_t total = 0;
      c10::cuda::CUDAGuard g(device);
      C10_CUDA_CHECK(cudaMemGetInfo(largest, &total));
    }
    uint64_t cached = 0;
    check(api.gmlake_cache_info(dev(device), &cached, nullptr), "cacheInfo");
    *largest = std::max<size_t>(*largest, cached);
  }

  void* getBaseAllocation(void* ptr, size_t* size) override {
    // Each allocation is shared on its own (see shareIpcHandle): it is its own base.
    if (size) {
      uint64_t s = 0;
      for (auto* a : devices_) {
        if (a && api.gmlake_allocation_size(a, ptr, &s) == GMLAKE_OK) {
          break;
        }
      }
      *size = s;
    }
    return ptr;
  }

  // ---- statistics ---------------------------------------------------------------------------

  // A device gmlake has not served yet has all-zero statistics: asking must not create a CUDA
  // context there (several hundred MiB of that GPU), as PyTorch's own allocator does not.
  DeviceStats getDeviceStats(c10::DeviceIndex device) override {
    gmlake_device_stats s{};
    if (auto* a = existing(device)) {
      check(api.gmlake_get_device_stats(a, &s), "getDeviceStats");
    }
    DeviceStats out;
    auto arr = [](c10::CachingAllocator::StatArray& to, const gmlake_stat_array& from) {
      const gmlake_stat* parts[3] = {&from.all, &from.small_pool, &from.large_pool};
      for (int i = 0; i < 3; ++i) {
        to[i].current = parts[i]->current;
        to[i].peak = parts[i]->peak;
        to[i].allocated = parts[i]->allocated;
        to[i].freed = parts[i]->freed;
      }
    };
    arr(out.allocation, s.allocation);
    arr(out.segment, s.segment);
    arr(out.active, s.active);
    arr(out.inactive_split, s.inactive_split);
    arr(out.allocated_bytes, s.allocated_bytes);
    arr(out.reserved_bytes, s.reserved_bytes);
    arr(out.active_bytes, s.active_bytes);
    arr(out.inactive_split_bytes, s.inactive_split_bytes);
    arr(out.requested_bytes, s.requested_bytes);
    out.num_alloc_retries = s.num_alloc_retries;
    out.num_ooms = s.num_ooms;
    out.num_sync_all_streams = s.num_sync_all_streams;
    out.num_device_alloc = s.num_device_alloc;
    out.num_device_free = s.num_device_free;
    // gmlake splits blocks of any size: there is no oversize block, and no limit.
    out.max_split_size = static_cast<int64_t>(std::numeric_limits<size_t>::max());
    return out;
  }

  void resetAccumulatedStats(c10::DeviceIndex device) override {
    if (auto* a = existing(device)) {
      check(api.gmlake_reset_accumulated_stats(a), "resetAccumulatedStats");
    }
  }

  void resetPeakStats(c10::DeviceIndex device) override {
    if (auto* a = existing(device)) {
      check(api.gmlake_reset_peak_stats(a), "resetPeakStats");
    }
  }

  // ---- history and snapshots ----------------------------------------------------------------

  bool isHistoryEnabled() override {
    return history_;
  }

  void recordHistory(
      bool enabled,
      cca::CreateContextFn recorder,
      size_t max_entries,
      RecordContext when,
      bool clear,
      const std::vector<std::string>& skip_actions) override {
    TORCH_CHECK(when == RecordContext::NEVER || recorder, "a context recorder is needed");
    {
      std::lock_guard<std::mutex> g(ctx_mu_);
      history_ = enabled;
      max_entries_ = max_entries;
      recorder_ = enabled ? recorder : nullptr;
      when_ = enabled ? when : RecordContext::NEVER;
      skip_.clear();
      skip_.insert(skip_actions.begin(), skip_actions.end());
      if (clear || !enabled) {
        contexts_.clear();
      }
    }
    for (auto* a : all_devices()) {
      check(api.gmlake_record_history(a, enabled, max_entries, clear || !enabled), "recordHistory");
    }
  }

  cca::SnapshotInfo snapshot(MempoolId_t id, bool include_traces) override {
    cca::SnapshotInfo out;
    std::unique_lock<std::mutex> g(ctx_mu_);
    auto ctx_of = [&](uint64_t c) -> std::shared_ptr<c10::GatheredContext> {
      auto it = contexts_.find(c);
      return it == contexts_.end() ? nullptr : it->second.frames;
    };
    out.device_traces.resize(devices_.size());
    for (size_t d = 0; d < devices_.size(); ++d) {
      if (!devices_[d]) {
        continue;
      }
      gmlake_snapshot* snap = nullptr;
      check(api.gmlake_snapshot_take(devices_[d], &snap), "snapshot");
      size_t n = 0;
      const gmlake_segment_info* segs = api.gmlake_snapshot_segments(snap, &n);
      for (size_t i = 0; i < n; ++i) {
        const auto& s = segs[i];
        // A stitched block maps memory its segments already count: its blocks are reported
        // there (as allocated), and the block itself is not a segment of its own.
        if (s.is_stitched || (id != MempoolId_t{0, 0} && MempoolId_t{s.pool0, s.pool1} != id)) {
          continue;
        }
        SegmentInfo seg;
        seg.device = static_cast<c10::DeviceIndex>(d);
        seg.address = s.address;
        seg.stream = reinterpret_cast<void*>(s.stream);
        seg.is_large = s.is_large;
        seg.owner_private_pool_id = {s.pool0, s.pool1};
        for (size_t b = 0; b < s.block_count; ++b) {
          const auto& blk = s.blocks[b];
          if (blk.state == 4) {  // a released chunk's hole: not memory any more
            continue;
          }
          BlockInfo info;
          info.size = blk.size;
          info.requested_size = blk.requested_size;
          info.allocated = blk.state == 0 || blk.state == 3;
          info.active = info.allocated || blk.state == 1;
          info.context_when_allocated = ctx_of(blk.context);
          seg.total_size += info.size;
          if (info.allocated) {
            seg.allocated_size += info.size;
          }
          if (info.active) {
            seg.active_size += info.size;
            seg.requested_size += info.requested_size;
          }
          seg.blocks.push_back(std::move(info));
        }
        if (seg.total_size > 0) {
          out.segments.push_back(std::move(seg));
        }
      }
      api.gmlake_snapshot_free(snap);
      if (include_traces) {
        out.device_traces[d] = traces_of(d, ctx_of);
      }
    }
    std::sort(out.segments.begin(), out.segments.end(), [](const SegmentInfo& a, const SegmentInfo& b) {
      return a.address < b.address;
    });
    out.config_metadata.last_allocator_settings = "gmlake";
    return out;
  }

  void attachOutOfMemoryObserver(cca::OutOfMemoryObserver observer) override {
    std::lock_guard<std::mutex> g(mu_);
    oom_observers_.push_back(std::move(observer));
  }

  void attachAllocatorTraceTracker(cca::AllocatorTraceTracker tracker) override {
    std::lock_guard<std::mutex> g(mu_);
    trackers_.push_back(std::move(tracker));
    tracked_ = true;
  }

  // ---- private pools (CUDA graphs, MemPool, CUDA graph trees) -------------------------------

  void beginAllocateToPool(
      c10::DeviceIndex device,
      MempoolId_t id,
      std::function<bool(cudaStream_t)> filter) override {
    auto* a = dev(device);
    check(api.gmlake_pool(a, id.first, id.second, GMLAKE_POOL_INCREF), "beginAllocateToPool");
    {
      std::lock_guard<std::mutex> g(mu_);
      for (auto& c : captures_[device]) {
        TORCH_CHECK(c.first != id, "beginAllocateToPool: already recording to this pool");
      }
      captures_[device].emplace_back(id, std::move(filter));
      capturing_ += 1;
    }
    check(api.gmlake_capture(a, true), "beginAllocateToPool");
  }

  void endAllocateToPool(c10::DeviceIndex device, MempoolId_t id) override {
    {
      std::lock_guard<std::mutex> g(mu_);
      auto& list = captures_[device];
      auto it = std::find_if(list.begin(), list.end(), [&](auto& c) { return c.first == id; });
      TORCH_CHECK(it != list.end(), "endAllocateToPool: not recording to this pool");
      list.erase(it);
      capturing_ -= 1;
    }
    check(api.gmlake_capture(dev(device), false), "endAllocateToPool");
  }

  void releasePool(c10::DeviceIndex device, MempoolId_t id) override {
    check(api.gmlake_pool(dev(device), id.first, id.second, GMLAKE_POOL_RELEASE), "releasePool");
  }

  int getPoolUseCount(c10::DeviceIndex device, MempoolId_t id) override {
    uint32_t n = 0;
    check(api.gmlake_pool_use_count(dev(device), id.first, id.second, &n), "getPoolUseCount");
    return static_cast<int>(n);
  }

  void createOrIncrefPool(
      c10::DeviceIndex device,
      MempoolId_t id,
      std::shared_ptr<cca::CUDAAllocator> allocator) override {
    TORCH_CHECK(
        !allocator,
        "gmlake: a MemPool with an allocator of its own is not supported while gmlake is PyTorch's "
        "allocator: gmlake serves the pool itself (create it with torch.cuda.MemPool())");
    check(api.gmlake_pool(dev(device), id.first, id.second, GMLAKE_POOL_INCREF), "createOrIncrefPool");
  }

  void setUseOnOOM(c10::DeviceIndex device, MempoolId_t id, bool on) override {
    auto op = on ? GMLAKE_POOL_USE_ON_OOM : GMLAKE_POOL_NO_USE_ON_OOM;
    check(api.gmlake_pool(dev(device), id.first, id.second, op), "setUseOnOOM");
  }

  void setNoSplit(c10::DeviceIndex device, MempoolId_t id) override {
    check(api.gmlake_pool(dev(device), id.first, id.second, GMLAKE_POOL_NO_SPLIT), "setNoSplit");
  }

  bool checkPoolLiveAllocations(
      c10::DeviceIndex device,
      MempoolId_t id,
      const std::unordered_set<void*>& expected) override {
    auto live = pool_live(device, id);
    if (live.size() != expected.size()) {
      return false;
    }
    for (uint64_t p : live) {
      if (!expected.count(reinterpret_cast<void*>(p))) {
        return false;
      }
    }
    return true;
  }

  std::shared_ptr<cca::AllocatorState> getCheckpointState(c10::DeviceIndex device, MempoolId_t id) override {
    gmlake_checkpoint* cp = nullptr;
    check(api.gmlake_pool_checkpoint(dev(device), id.first, id.second, &cp), "getCheckpointState");
    return std::make_shared<PoolState>(cp);
  }

  cca::CheckpointDelta setCheckpointPoolState(
      c10::DeviceIndex device,
      std::shared_ptr<cca::AllocatorState> state) override {
    auto ps = std::dynamic_pointer_cast<PoolState>(state);
    TORCH_CHECK(ps, "gmlake: a checkpoint of another allocator");
    uint64_t *freed = nullptr, *made = nullptr;
    size_t n_freed = 0, n_made = 0;
    check(api.gmlake_pool_restore(dev(device), ps->cp, &freed, &n_freed, &made, &n_made), "setCheckpointPoolState");
    cca::CheckpointDelta delta;
    for (size_t i = 0; i < n_freed; ++i) {
      delta.ptrs_freed.push_back(reinterpret_cast<void*>(freed[i]));
    }
    for (size_t i = 0; i < n_made; ++i) {
      void* p = reinterpret_cast<void*>(made[i]);
      delta.dataptrs_allocd.emplace_back(p, p, deleter_of(device), c10::Device(c10::DeviceType::CUDA, device));
    }
    api.gmlake_addresses_free(freed, n_freed);
    api.gmlake_addresses_free(made, n_made);
    return delta;
  }

  // ---- other devices and processes ----------------------------------------------------------

  // An allocation is shared on its own (getBaseAllocation returns it): its physical handles as
  // file descriptors that the receiving process takes with pidfd_getfd. Where the handles are of
  // one size and the allocation covers them back to back (from anywhere in the first to anywhere
  // in the last), it is written as PyTorch's expandable-segment kind, which PyTorch's own
  // allocator opens too; otherwise (handles of several sizes, or a stitched block of parts of
  // handles) in gmlake's own kind, which only a receiver using gmlake opens: PyTorch's format
  // maps every handle whole at one size, and cannot describe such memory.
  cca::ShareableHandle shareIpcHandle(void* ptr) override {
    gmlake_shared_piece* pieces = nullptr;
    size_t n = 0;
    uint64_t offset = 0;
    gmlake_status st = GMLAKE_ERROR_NOT_ALLOCATED;
    for (auto* a : all_devices()) {
      st = api.gmlake_share(a, ptr, &pieces, &n, &offset);
      if (st != GMLAKE_ERROR_NOT_ALLOCATED) {
        break;
      }
    }
    check(st, "shareIpcHandle");
    std::string out(1, kHandleVersion);
    if (expandable_compatible(pieces, n)) {
      out.push_back(kExpandableSegmentHandle);
      ExpandableHeader h{getpid(), pieces[0].handle_size, n};
      out.append(reinterpret_cast<const char*>(&h), sizeof h);
      for (size_t i = 0; i < n; ++i) {
        int fd = static_cast<int>(pieces[i].os_handle);
        out.append(reinterpret_cast<const char*>(&fd), sizeof fd);
      }
      offset += pieces[0].offset;
    } else {
      out.push_back(kGmlakeHandle);
      GmlakeHeader h{getpid(), n};
      out.append(reinterpret_cast<const char*>(&h), sizeof h);
      out.append(reinterpret_cast<const char*>(pieces), n * sizeof(gmlake_shared_piece));
    }
    api.gmlake_shared_free(pieces, n);
    return {static_cast<ptrdiff_t>(offset), out};
  }

  // Whether `pieces` can be written as PyTorch's expandable-segment kind: handles of one size,
  // each piece running to its handle's end but the last, each starting at its handle's start but
  // the first. O(n).
  static bool expandable_compatible(const gmlake_shared_piece* pieces, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const auto& q = pieces[i];
      if (q.handle_size != pieces[0].handle_size || (i > 0 && q.offset != 0) ||
          (i + 1 < n && q.offset + q.size != q.handle_size)) {
        return false;
      }
    }
    return n > 0;
  }

  // Opens memory another process shared: gmlake's kind or PyTorch's expandable-segment kind
  // (from gmlake or from PyTorch's expandable segments) through gmlake_import, PyTorch's
  // cudaMalloc kind through cudaIpcOpenMemHandle.
  // One mapping per handle string, while any tensor uses it (as PyTorch's allocator does).
  std::shared_ptr<void> getIpcDevPtr(std::string handle) override {
    std::lock_guard<std::mutex> g(ipc_mu_);
    auto it = imports_.find(handle);
    if (it != imports_.end()) {
      if (auto sp = it->second.lock()) {
        return sp;
      }
    }
    c10::DeviceIndex device = 0;
    C10_CUDA_CHECK(c10::cuda::GetDevice(&device));
    char kind = kCudaMallocHandle;
    const char* p = handle.data();
    size_t left = handle.size();
    if (left != kLegacyHandleSize) {
      TORCH_CHECK(left >= 2, "gmlake: a truncated CUDA IPC handle");
      TORCH_CHECK(p[0] <= kHandleVersion, "gmlake: a CUDA IPC handle of a newer torch (version ", std::to_string(p[0]), ")");
      kind = p[1];
      p += 2;
      left -= 2;
    }
    std::shared_ptr<void> sp;
    auto erase = [this, handle]() {
      std::lock_guard<std::mutex> g2(ipc_mu_);
      imports_.erase(handle);
    };
    if (kind == kCudaMallocHandle) {
      TORCH_CHECK(left >= sizeof(cudaIpcMemHandle_t), "gmlake: a truncated CUDA IPC handle");
      cudaIpcMemHandle_t h;
      std::memcpy(&h, p, sizeof h);
      void* dev_ptr = nullptr;
      C10_CUDA_CHECK(cudaIpcOpenMemHandle(&dev_ptr, h, cudaIpcMemLazyEnablePeerAccess));
      sp = std::shared_ptr<void>(dev_ptr, [device, erase](void* q) {
        c10::cuda::CUDAGuard guard(device);
        (void)cudaIpcCloseMemHandle(q);
        erase();
      });
    } else {
      int pid = 0;
      std::vector<gmlake_shared_piece> pieces;
      if (kind == kExpandableSegmentHandle) {
        ExpandableHeader h{};
        TORCH_CHECK(left >= sizeof h, "gmlake: a truncated CUDA IPC handle");
        std::memcpy(&h, p, sizeof h);
        TORCH_CHECK(
            left != sizeof h + h.num_handles * kFabricHandleSize || h.num_handles == 0,
            "gmlake: the sender shared fabric handles (CU_MEM_HANDLE_TYPE_FABRIC), which gmlake does "
            "not import; set the sender's expandable_segments_handle_type to POSIX file descriptors");
        TORCH_CHECK(left == sizeof h + h.num_handles * sizeof(int), "gmlake: a malformed CUDA IPC handle");
        pid = h.pid;
        for (size_t i = 0; i < h.num_handles; ++i) {
          int fd = 0;
          std::memcpy(&fd, p + sizeof h + i * sizeof fd, sizeof fd);
          pieces.push_back({fd, h.segment_size, 0, h.segment_size});
        }
      } else {
        TORCH_CHECK(kind == kGmlakeHandle, "gmlake: an unknown kind of CUDA IPC handle");
        GmlakeHeader h{};
        TORCH_CHECK(left >= sizeof h, "gmlake: a truncated CUDA IPC handle");
        std::memcpy(&h, p, sizeof h);
        TORCH_CHECK(left == sizeof h + h.count * sizeof(gmlake_shared_piece), "gmlake: a malformed CUDA IPC handle");
        pid = static_cast<int>(h.pid);
        pieces.resize(h.count);
        std::memcpy(pieces.data(), p + sizeof h, h.count * sizeof(gmlake_shared_piece));
      }
      gmlake_imported* imp = nullptr;
      void* base = nullptr;
      check(api.gmlake_import(device, pid, pieces.data(), pieces.size(), &imp, &base), "getIpcDevPtr");
      sp = std::shared_ptr<void>(base, [imp, erase](void*) {
        (void)api.gmlake_import_close(imp);
        erase();
      });
    }
    imports_[handle] = sp;
    return sp;
  }

  void enablePeerAccess(c10::DeviceIndex dev_, c10::DeviceIndex dev_to_access) override {
    c10::cuda::CUDAGuard g(dev_);
    cudaError_t err = cudaDeviceEnablePeerAccess(dev_to_access, 0);
    if (err == cudaErrorPeerAccessAlreadyEnabled) {
      (void)cudaGetLastError();
    } else {
      C10_CUDA_CHECK(err);
    }
  }

  cudaError_t memcpyAsync(
      void* dst,
      int dst_device,
      const void* src,
      int src_device,
      size_t count,
      cudaStream_t stream,
      bool) override {
    // gmlake's memory is mapped for its own device only: across devices the peer copy, which
    // needs no mapping on the other device, is the one that works.
    if (dst_device == src_device) {
      return cudaMemcpyAsync(dst, src, count, cudaMemcpyDeviceToDevice, stream);
    }
    return cudaMemcpyPeerAsync(dst, dst_device, src, src_device, count, stream);
  }

  std::string name() override {
    return "gmlake";
  }

  // ---- the work of the above ----------------------------------------------------------------

  void* malloc_on(c10::DeviceIndex device, size_t size, cudaStream_t stream) {
    auto* a = dev(device);
    MempoolId_t pool = pool_for(device, stream);
    uint64_t ctx = enter(RecordContext::STATE);
    std::optional<c10::cuda::CUDAStreamCaptureModeGuard> relaxed;
    if (capturing_ > 0) {
      relaxed.emplace(cudaStreamCaptureModeRelaxed);
    }
    void* p = nullptr;
    gmlake_status st = api.gmlake_malloc_ex(a, size, stream, pool.first, pool.second, ctx, &p);
    if (st == GMLAKE_OK) {
      track(TraceEntry::ALLOC, device, p, size, stream, pool);
      return p;
    }
    if (st == GMLAKE_ERROR_OUT_OF_MEMORY) {
      out_of_memory(device, size);
    }
    fail("allocation");
  }

  void free_on(c10::DeviceIndex device, void* p) {
    uint64_t ctx = enter(RecordContext::ALL);
    std::optional<c10::cuda::CUDAStreamCaptureModeGuard> relaxed;
    if (capturing_ > 0) {
      relaxed.emplace(cudaStreamCaptureModeRelaxed);
    }
    check(api.gmlake_free_ex(dev(device), p, ctx), "free");
    track(TraceEntry::FREE_REQUESTED, device, p, 0, nullptr, {0, 0});
  }

  c10::DeleterFnPtr deleter_of(c10::DeviceIndex device);

 private:
  static void raw_delete_fn(void* p) {
    the_allocator->raw_delete(p);
  }

  bool owns(const c10::DataPtr& ptr) const {
    auto d = ptr.get_deleter();
    return d == deleter_of_const(ptr.device().index());
  }

  c10::DeleterFnPtr deleter_of_const(c10::DeviceIndex device) const;

  gmlake_allocator* dev(c10::DeviceIndex device) {
    TORCH_CHECK(device >= 0, "gmlake: no device ", std::to_string(device));
    // Every allocation and free asks: once made, an allocator is read without a lock (it lives
    // as long as the process).
    if (device < kMaxDevices) {
      if (auto* a = known_[device].load(std::memory_order_acquire)) {
        return a;
      }
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      if (static_cast<size_t>(device) < devices_.size() && devices_[device]) {
        return devices_[device];
      }
    }
    auto* a = const_cast<gmlake_allocator*>(api.gmlake_torch_allocator(device));
    if (!a) {
      fail("no allocator for the device");
    }
    std::lock_guard<std::mutex> g(mu_);
    if (static_cast<size_t>(device) >= devices_.size()) {
      devices_.resize(device + 1, nullptr);
      captures_.resize(device + 1);
    }
    devices_[device] = a;
    if (device < kMaxDevices) {
      known_[device].store(a, std::memory_order_release);
    }
    if (history_) {
      (void)api.gmlake_record_history(a, true, max_entries_, false);
    }
    return a;
  }

  // The allocator of `device` if gmlake has made it, else nullptr (making none).
  gmlake_allocator* existing(c10::DeviceIndex device) {
    std::lock_guard<std::mutex> g(mu_);
    return device >= 0 && static_cast<size_t>(device) < devices_.size() ? devices_[device] : nullptr;
  }

  std::vector<gmlake_allocator*> all_devices() {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<gmlake_allocator*> v;
    for (auto* a : devices_) {
      if (a) {
        v.push_back(a);
      }
    }
    return v;
  }

  // The pool a request on `stream` goes to: the most recent capture or MemPool context whose
  // filter takes the stream, else the default pool.
  MempoolId_t pool_for(c10::DeviceIndex device, cudaStream_t stream) {
    if (capturing_ == 0) {
      return {0, 0};
    }
    std::lock_guard<std::mutex> g(mu_);
    auto& list = captures_[device];
    for (auto it = list.rbegin(); it != list.rend(); ++it) {
      if (it->second(stream)) {
        return it->first;
      }
    }
    return {0, 0};
  }

  std::vector<uint64_t> pool_live(c10::DeviceIndex device, MempoolId_t id) {
    size_t n = 0;
    check(api.gmlake_pool_live(dev(device), id.first, id.second, nullptr, 0, &n), "pool live");
    std::vector<uint64_t> v(n);
    check(api.gmlake_pool_live(dev(device), id.first, id.second, v.data(), n, &n), "pool live");
    v.resize(std::min(n, v.size()));
    return v;
  }

  // The context id of a call now: a fresh id with PyTorch's stack context (if history asks for
  // it at `level`) and the time, or 0 while no history is recorded.
  uint64_t enter(RecordContext level) {
    if (!history_) {
      return 0;
    }
    std::shared_ptr<c10::GatheredContext> frames;
    cca::CreateContextFn recorder = nullptr;
    RecordContext when = RecordContext::NEVER;
    {
      std::lock_guard<std::mutex> g(ctx_mu_);
      recorder = recorder_;
      when = when_;
    }
    if (recorder && when >= level) {
      frames = recorder();
    }
    std::lock_guard<std::mutex> g(ctx_mu_);
    uint64_t id = next_ctx_++;
    contexts_[id] = CallContext{std::move(frames), now_us()};
    if (contexts_.size() > prune_at_) {
      prune_contexts();
    }
    return id;
  }

  // Drops contexts that neither the history nor a live allocation refers to any more.
  void prune_contexts() {
    std::unordered_set<uint64_t> keep;
    for (auto* a : devices_) {
      if (!a) {
        continue;
      }
      gmlake_history_record* h = nullptr;
      size_t n = 0, n_live = 0;
      uint64_t* live = nullptr;
      if (api.gmlake_history(a, &h, &n, &live, &n_live) != GMLAKE_OK) {
        return;
      }
      keep.insert(live, live + n_live);
      api.gmlake_history_free(h, n);
      api.gmlake_addresses_free(live, n_live);
    }
    for (auto it = contexts_.begin(); it != contexts_.end();) {
      it = keep.count(it->first) ? std::next(it) : contexts_.erase(it);
    }
    prune_at_ = std::max<size_t>(4096, 2 * contexts_.size());
  }

  template <typename CtxOf>
  std::vector<TraceEntry> traces_of(size_t device, CtxOf&& ctx_of) {
    static const TraceEntry::Action actions[] = {
        TraceEntry::ALLOC,         TraceEntry::FREE_REQUESTED, TraceEntry::FREE_COMPLETED,
        TraceEntry::SEGMENT_ALLOC, TraceEntry::SEGMENT_FREE,   TraceEntry::SEGMENT_MAP,
        TraceEntry::SEGMENT_UNMAP, TraceEntry::OOM,            TraceEntry::SNAPSHOT};
    static const char* names[] = {
        "alloc", "free_requested", "free_completed", "segment_alloc", "segment_free",
        "segment_map", "segment_unmap", "oom", "snapshot"};
    std::vector<TraceEntry> out;
    gmlake_history_record* h = nullptr;
    size_t n = 0;
    check(api.gmlake_history(devices_[device], &h, &n, nullptr, nullptr), "history");
    for (size_t i = 0; i < n; ++i) {
      const auto& r = h[i];
      if (r.action > 8 || skip_.count(names[r.action])) {
        continue;
      }
      auto it = contexts_.find(r.context);
      TraceEntry te(
          actions[r.action],
          static_cast<c10::DeviceIndex>(device),
          r.address,
          r.size,
          reinterpret_cast<void*>(r.stream),
          MempoolId_t{r.pool0, r.pool1},
          0,
          ctx_of(r.context));
      te.time_.t_ = it == contexts_.end() ? 0 : it->second.time_us;
      out.push_back(std::move(te));
    }
    api.gmlake_history_free(h, n);
    return out;
  }

  void track(TraceEntry::Action action, c10::DeviceIndex device, void* p, size_t size, cudaStream_t stream, MempoolId_t pool) {
    if (!tracked_) {
      return;
    }
    TraceEntry te(action, device, reinterpret_cast<size_t>(p), size, stream, pool, c10::getApproximateTime());
    std::lock_guard<std::mutex> g(mu_);
    for (auto& t : trackers_) {
      t(te);
    }
  }

  // PyTorch's out-of-memory error, with gmlake's figures, after its observers were told.
  [[noreturn]] void out_of_memory(c10::DeviceIndex device, size_t size) {
    std::string gm = api.gmlake_last_error();
    gmlake_device_stats s{};
    (void)api.gmlake_get_device_stats(dev(device), &s);
    size_t free = 0, total = 0;
    {
      c10::cuda::CUDAGuard g(device);
      if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
        (void)cudaGetLastError();
      }
    }
    double fraction = 1.0;
    (void)api.gmlake_cache_info(dev(device), nullptr, &fraction);
    uint64_t allocated = s.allocated_bytes.all.current;
    uint64_t reserved = s.reserved_bytes.all.current;
    std::vector<cca::OutOfMemoryObserver> observers;
    {
      std::lock_guard<std::mutex> g(mu_);
      observers = oom_observers_;
    }
    size_t allowed = fraction < 1.0 ? static_cast<size_t>(fraction * total) : total;
    for (auto& o : observers) {
      o(device, size, allowed, free);
    }
    std::string allowed_info = fraction < 1.0 ? format_size(allowed) + " allowed; " : "";
    TORCH_CHECK_WITH(
        OutOfMemoryError,
        false,
        "CUDA out of memory. Tried to allocate ",
        format_size(size),
        ". GPU ",
        std::to_string(device),
        " has a total capacity of ",
        format_size(total),
        " of which ",
        format_size(free),
        " is free. ",
        allowed_info,
        "Of the allocated memory ",
        format_size(allocated),
        " is allocated by PyTorch, and ",
        format_size(reserved > allocated ? reserved - allocated : 0),
        " is reserved by PyTorch but unallocated (gmlake: stitching found no free physical "
        "chunks to serve it either). ",
        gm);
  }

  std::mutex mu_;
  std::vector<gmlake_allocator*> devices_;
  // devices_' entries below kMaxDevices, for reading without mu_.
  std::array<std::atomic<gmlake_allocator*>, kMaxDevices> known_{};
  std::vector<std::vector<std::pair<MempoolId_t, std::function<bool(cudaStream_t)>>>> captures_;
  std::atomic<int> capturing_{0};
  std::vector<cca::OutOfMemoryObserver> oom_observers_;
  std::vector<cca::AllocatorTraceTracker> trackers_;
  std::atomic<bool> tracked_{false};
  std::mutex ipc_mu_;
  std::unordered_map<std::string, std::weak_ptr<void>> imports_;
  std::mutex raw_mu_;
  std::unordered_map<void*, c10::DeviceIndex> raw_device_;
  bool initialized_ = false;
  bool enabled_ = true;
  // History.
  std::mutex ctx_mu_;
  std::atomic<bool> history_{false};
  size_t max_entries_ = 1;
  cca::CreateContextFn recorder_ = nullptr;
  RecordContext when_ = RecordContext::NEVER;
  std::unordered_set<std::string> skip_;
  std::unordered_map<uint64_t, CallContext> contexts_;
  uint64_t next_ctx_ = 1;
  size_t prune_at_ = 4096;
};

// A deleter per device, so that freeing a tensor needs no look-up of its device.
template <int D>
static void delete_on(void* p) {
  if (p) {
    the_allocator->free_on(D, p);
  }
}

template <int... I>
static constexpr std::array<c10::DeleterFnPtr, sizeof...(I)> make_deleters(std::integer_sequence<int, I...>) {
  return {&delete_on<I>...};
}

static constexpr auto deleters = make_deleters(std::make_integer_sequence<int, kMaxDevices>{});

c10::DeleterFnPtr Allocator::deleter_of(c10::DeviceIndex device) {
  TORCH_CHECK(device >= 0 && device < kMaxDevices, "gmlake: device ", std::to_string(device), " out of range");
  return deleters[device];
}

c10::DeleterFnPtr Allocator::deleter_of_const(c10::DeviceIndex device) const {
  return device >= 0 && device < kMaxDevices ? deleters[device] : nullptr;
}

// Makes gmlake PyTorch's CUDA allocator. `core_path` is gmlake._core's library.
static void install(const std::string& core_path) {
  TORCH_CHECK(!the_allocator, "gmlake: already installed");
  load_api(core_path);
  auto a = std::make_shared<Allocator>();
  the_allocator = a.get();
  torch::cuda::CUDAPluggableAllocator::changeCurrentAllocator(a);
}

}  // namespace gmlake_torch

// The one entry point, called through ctypes (no Python binding, so that the build includes no
// more of torch than the allocator interface): installs gmlake as PyTorch's CUDA allocator.
// Returns 0, or -1 with the reason in `err` (NUL-terminated, cut to `err_len` bytes). Never
// throws.
extern "C" __attribute__((visibility("default"))) int gmlake_cpp_install(
    const char* core_path,
    char* err,
    size_t err_len) {
  try {
    gmlake_torch::install(core_path ? core_path : "");
    return 0;
  } catch (const std::exception& e) {
    if (err && err_len) {
      std::strncpy(err, e.what(), err_len - 1);
      err[err_len - 1] = '\0';
    }
    return -1;
  }
}
