// The C++ API on the simulated device (or, with the argument "cuda", on GPU 0): RAII allocator and
// buffers, the memory resource, a stitch, statistics, the snapshot, and every error thrown.
// Exit 0 and "cpp example: ok" when every check passed.
#include <cstdio>
#include <cstring>
#include <string>

#include "gmlake/gmlake.hpp"

static int failures = 0;
#define CHECK(cond, what)                                  \
  do {                                                     \
    if (!(cond)) {                                         \
      std::fprintf(stderr, "FAILED: %s\n", what);          \
      failures++;                                          \
    }                                                      \
  } while (0)

template <class F>
static std::string error_of(F f) {
  try {
    f();
  } catch (const gmlake::Error& e) {
    return e.what();
  }
  return "";
}

int main(int argc, char** argv) {
  const std::size_t MiB = 1 << 20;
  const bool cuda = argc > 1 && std::strcmp(argv[1], "cuda") == 0;
  CHECK(error_of([] { gmlake::Allocator::simulated(1 << 30, "bogus:1"); }).find("valid keys") != std::string::npos, "bad config throws");
  CHECK(!error_of([] { gmlake::Allocator::simulated(0); }).empty(), "zero capacity throws");
  CHECK(!error_of([] { gmlake::Allocator::simulated(1 << 30, "frag_limit:lots"); }).empty(), "malformed config value throws");
  CHECK(!error_of([] { gmlake::Allocator::cuda(-1); }).empty(), "bad device throws");
  {
    gmlake::Allocator a = cuda ? gmlake::Allocator::cuda(0, "frag_limit:0,min_handle_size:2MB")
                               : gmlake::Allocator::simulated(1024 * MiB, "frag_limit:0,min_handle_size:2MB");
    void* x = a.allocate(8 * MiB);
    {
      gmlake::Buffer y(a, 8 * MiB);
      void* z = a.allocate(8 * MiB);
      a.deallocate(x);
      a.deallocate(z);
      gmlake::Buffer s(a, 12 * MiB);  // stitched from x's and z's chunks
      CHECK(a.stats().num_stitches == 1, "one stitch");
      CHECK(a.live_allocations() == 2, "two live allocations");
      CHECK(a.snapshot_json().find("lent_to_stitched") != std::string::npos, "snapshot shows lent blocks");
      gmlake::Buffer moved = std::move(s);
      CHECK(s.data() == nullptr && moved.data() != nullptr, "buffers move");
    }
    CHECK(a.live_allocations() == 0, "buffers freed on scope exit");
    gmlake::MemoryResource mr(a);
    void* p = mr.allocate(3 * MiB, nullptr);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 512 == 0, "aligned");
    mr.deallocate(p, 3 * MiB, nullptr);
    CHECK(mr.is_equal(gmlake::MemoryResource(a)), "resources over one allocator are equal");

    CHECK(!error_of([&] { a.allocate(0); }).empty(), "zero size throws");
    CHECK(error_of([&] { a.allocate(std::size_t(1) << 49); }).rfind("CUDA out of memory.", 0) == 0, "OOM throws its message");
    CHECK(error_of([&] { a.deallocate(p); }).find("double free") != std::string::npos, "double free throws");
    CHECK(!error_of([&] { a.record_stream(p, nullptr); }).empty(), "record_stream of a freed pointer throws");
    CHECK(error_of([&] { a.allocate(std::size_t(1) << 51); }).find("larger than") != std::string::npos, "absurd size throws");
    CHECK(error_of([&] { a.deallocate(reinterpret_cast<void*>(0xdeadbeef)); }).find("0xdeadbeef") != std::string::npos,
          "unknown free throws naming the address");
    {
      gmlake::Buffer b(a, 4096);
      char* inner = static_cast<char*>(b.data()) + 512;
      CHECK(error_of([&] { a.deallocate(inner); }).find("not the start of an allocation") != std::string::npos,
            "interior free throws");
      CHECK(a.live_allocations() == 1, "the buffer survives a bad free of its interior");
    }
    CHECK(!error_of([&] { a.set_memory_fraction(2.0); }).empty(), "bad fraction throws");
    a.empty_cache();
    CHECK(a.stats().reserved_bytes == 0, "everything returned");
    (void)a.allocate(5 * MiB);  // left live on purpose: the destructor frees it
  }
  if (failures) return 1;
  std::printf("cpp example: ok (%s)\n", cuda ? "cuda" : "simulated");
  return 0;
}
