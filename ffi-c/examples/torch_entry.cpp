// PyTorch's entry points called as PyTorch calls them, from C++: a failure must arrive as a C++
// exception (PyTorch does not check for NULL). Without a CUDA driver the allocation fails with a
// message starting "gmlake:"; on a GPU it succeeds, and an impossible request must throw
// "CUDA out of memory.". Exit 0 and "torch entry: ok" when the checks passed.
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include "gmlake.h"

int main() {
  int failures = 0;
  bool gpu = false;
  void* p = nullptr;
  // Configuration: a bad string is refused; a good one is accepted before the first allocation.
  if (gmlake_torch_configure("frag_limit:lots") != GMLAKE_ERROR_CONFIG) failures++;
  if (gmlake_torch_configure("frag_limit:2MB") != GMLAKE_OK) failures++;
  try {
    p = gmlake_torch_malloc(1 << 20, 0, nullptr);
    gpu = true;
  } catch (const std::runtime_error& e) {
    if (std::strncmp(e.what(), "gmlake:", 7) != 0) {
      std::fprintf(stderr, "unexpected message without a GPU: %s\n", e.what());
      failures++;
    }
  }
  if (gpu) {
    if (p == nullptr) failures++;
    // Too late to configure once an allocator exists.
    if (gmlake_torch_configure("frag_limit:4MB") != GMLAKE_ERROR_INVALID_ARGUMENT) failures++;
    gmlake_torch_free(p, 1 << 20, 0, nullptr);
    // Freeing it again, or an unknown pointer, is reported through gmlake_last_error.
    gmlake_torch_free(p, 1 << 20, 0, nullptr);
    if (std::strstr(gmlake_last_error(), "not a live allocation") == nullptr) failures++;
    gmlake_torch_set_memory_fraction(2.0, 0);
    if (std::strstr(gmlake_last_error(), "fraction") == nullptr) failures++;
    if (gmlake_torch_allocator(0) == nullptr) failures++;
    try {
      gmlake_torch_malloc(size_t(1) << 49, 0, nullptr);
      std::fprintf(stderr, "512 TiB did not throw\n");
      failures++;
    } catch (const std::runtime_error& e) {
      if (std::strncmp(e.what(), "CUDA out of memory.", 19) != 0) {
        std::fprintf(stderr, "OOM message: %s\n", e.what());
        failures++;
      }
    }
    gmlake_torch_empty_cache();
  }
  if (gmlake_torch_malloc(0, 0, nullptr) != nullptr) failures++;
  if (gmlake_torch_allocator(-1) != nullptr) failures++;
  gmlake_torch_init(1);
  gmlake_torch_record_stream(nullptr, nullptr);
  gmlake_torch_free(nullptr, 0, 0, nullptr);
  if (failures) {
    std::fprintf(stderr, "torch entry: %d failures\n", failures);
    return 1;
  }
  std::printf("torch entry: ok (%s)\n", gpu ? "GPU" : "no GPU");
  return 0;
}
