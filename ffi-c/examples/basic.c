/* A C program that uses only include/gmlake.h: allocates, stitches, frees and reads statistics on
 * the simulated device, checks that every bad input returns its documented error, and checks the
 * data of a stitched block in host memory (gmlake_create_host), with no GPU.
 * Build: cc basic.c -I../include <dir>/libgmlake.a -lstdc++ -lpthread -ldl -lm
 * With the argument "cuda" it runs on GPU 0 instead (capped at 1% of its memory).
 * Exit status 0 and "c example: ok" when every check passed. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "gmlake.h"

static int failures = 0;
#define CHECK(cond, what)                                             \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "FAILED: %s (last error: %s)\n", what, gmlake_last_error()); \
      failures++;                                                     \
    }                                                                 \
  } while (0)

int main(int argc, char **argv) {
  const size_t MiB = 1 << 20;
  const int cuda = argc > 1 && strcmp(argv[1], "cuda") == 0;
  gmlake_allocator *a = NULL;
  CHECK(strlen(gmlake_version()) > 0, "version");

  /* Bad creation arguments. */
  CHECK(gmlake_create_simulated(1024 * MiB, "frag_limit:0", NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "NULL out");
  CHECK(gmlake_create_simulated(0, NULL, &a) == GMLAKE_ERROR_INVALID_ARGUMENT, "zero capacity");
  CHECK(gmlake_create_simulated(1024 * MiB, "bogus:1", &a) == GMLAKE_ERROR_CONFIG, "bad config");
  CHECK(strstr(gmlake_last_error(), "valid keys") != NULL, "config error lists valid keys");
  CHECK(gmlake_create_cuda(-1, NULL, &a) != GMLAKE_OK, "bad CUDA device");
  CHECK(gmlake_create_cuda(0, NULL, NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "create_cuda NULL out");
  CHECK(gmlake_create_cuda(0, "frag_limit:lots", &a) == GMLAKE_ERROR_CONFIG, "create_cuda bad config");
  CHECK(a == NULL, "no allocator after failures");

  if (cuda) {
    CHECK(gmlake_create_cuda(0, "frag_limit:0,min_handle_size:2MB", &a) == GMLAKE_OK, "create on GPU 0");
    CHECK(gmlake_set_memory_fraction(a, 0.01) == GMLAKE_OK, "cap at 1% so that 2 GiB runs out");
  } else {
    CHECK(gmlake_create_simulated(1024 * MiB, "frag_limit:0,min_handle_size:2MB", &a) == GMLAKE_OK, "create");
  }
  if (a == NULL) {
    fprintf(stderr, "no allocator: %s\n", gmlake_last_error());
    return 1;
  }

  /* Allocate, free, stitch. */
  void *x = NULL, *y = NULL, *z = NULL, *s = NULL;
  CHECK(gmlake_malloc(a, 8 * MiB, NULL, &x) == GMLAKE_OK && x != NULL, "malloc x");
  CHECK(gmlake_malloc(a, 8 * MiB, NULL, &y) == GMLAKE_OK, "malloc y");
  CHECK(gmlake_malloc(a, 8 * MiB, NULL, &z) == GMLAKE_OK, "malloc z");
  CHECK(((size_t)x % 512) == 0, "alignment");
  CHECK(gmlake_free(a, x) == GMLAKE_OK, "free x");
  CHECK(gmlake_free(a, z) == GMLAKE_OK, "free z");
  CHECK(gmlake_malloc(a, 12 * MiB, NULL, &s) == GMLAKE_OK, "malloc stitched");
  gmlake_stats st;
  CHECK(gmlake_get_stats(a, &st) == GMLAKE_OK, "stats");
  CHECK(st.num_stitches == 1, "one stitch");
  CHECK(st.allocations == 2 && st.requested_bytes == 20 * MiB, "live allocations");
  CHECK(st.reserved_bytes == 24 * MiB, "reserved bytes");
  char *json = NULL;
  CHECK(gmlake_stats_json(a, &json) == GMLAKE_OK && strstr(json, "\"reserved_bytes.all.current\":25165824") != NULL, "json");
  CHECK(strstr(json, "\"gmlake.driver_us\":") != NULL, "json has the driver time");
  gmlake_string_free(json);
  gmlake_string_free(NULL);
  char *snap = NULL;
  CHECK(gmlake_snapshot_json(a, &snap) == GMLAKE_OK && strstr(snap, "\"stitched\":[{") != NULL
        && strstr(snap, "lent_to_stitched") != NULL, "snapshot shows the stitched block and its lent blocks");
  gmlake_string_free(snap);
  CHECK(gmlake_snapshot_json(a, NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "snapshot NULL out");

  /* Sharing with another process: the stitched block's handles (descriptors on a GPU, handle
   * ids on the simulated device). On a GPU this process imports its own export (pidfd_getfd
   * works on oneself), as a receiving process would. */
  gmlake_shared_piece *pieces = NULL;
  size_t npieces = 0;
  uint64_t share_offset = 1;
  CHECK(gmlake_share(a, s, &pieces, &npieces, &share_offset) == GMLAKE_OK && npieces >= 2 && share_offset == 0,
        "share the stitched block");
  uint64_t covered = 0;
  for (size_t i = 0; i < npieces; i++) covered += pieces[i].size;
  CHECK(covered >= 12 * MiB, "the pieces cover the allocation");
  if (cuda) {
    gmlake_imported *imp = NULL;
    void *mapped = NULL;
    CHECK(gmlake_import(0, (int32_t)getpid(), pieces, npieces, &imp, &mapped) == GMLAKE_OK && mapped != NULL
          && mapped != s, "import the shared pieces");
    CHECK(gmlake_import_close(imp) == GMLAKE_OK, "close the import");
  }
  gmlake_shared_free(pieces, npieces);
  CHECK(gmlake_share(a, (char *)s + 512, &pieces, &npieces, &share_offset) == GMLAKE_ERROR_NOT_ALLOCATED,
        "share of an interior pointer");
  CHECK(gmlake_import(0, (int32_t)getpid(), NULL, 0, NULL, NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "import NULL");

  /* Bad use. */
  void *p = (void *)1;
  CHECK(gmlake_malloc(a, 0, NULL, &p) == GMLAKE_ERROR_INVALID_ARGUMENT && p == NULL, "zero size, out cleared");
  CHECK(gmlake_malloc(a, (size_t)1 << 51, NULL, &p) == GMLAKE_ERROR_INVALID_ARGUMENT, "absurd size");
  CHECK(gmlake_malloc(a, 2048 * MiB, NULL, &p) == GMLAKE_ERROR_OUT_OF_MEMORY, "out of memory");
  CHECK(strncmp(strchr(gmlake_last_error(), ' ') + 1, "CUDA out of memory.", 19) == 0, "OOM message");
  CHECK(gmlake_malloc(NULL, 8, NULL, &p) == GMLAKE_ERROR_INVALID_ARGUMENT, "NULL allocator");
  CHECK(gmlake_malloc(a, 8, NULL, NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "NULL out");
  CHECK(gmlake_free(a, x) == GMLAKE_ERROR_NOT_ALLOCATED, "double free");
  CHECK(gmlake_free(a, (char *)y + 512) == GMLAKE_ERROR_NOT_ALLOCATED, "interior free");
  CHECK(gmlake_free(a, (void *)0xdeadbeef) == GMLAKE_ERROR_NOT_ALLOCATED
        && strstr(gmlake_last_error(), "0xdeadbeef") != NULL, "unknown free names the address");
  CHECK(gmlake_free(NULL, y) == GMLAKE_ERROR_INVALID_ARGUMENT, "free on NULL allocator");
  CHECK(gmlake_free(a, NULL) == GMLAKE_OK, "free(NULL) does nothing, as C's free");
  CHECK(gmlake_get_stats(a, &st) == GMLAKE_OK && st.allocations == 2, "free(NULL) changed nothing");
  CHECK(gmlake_record_stream(a, x, NULL) == GMLAKE_ERROR_NOT_ALLOCATED, "record_stream unknown");
  CHECK(gmlake_record_stream(NULL, y, NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "record_stream NULL allocator");
  CHECK(gmlake_set_memory_fraction(NULL, 0.5) == GMLAKE_ERROR_INVALID_ARGUMENT, "fraction NULL allocator");
  CHECK(gmlake_get_stats(NULL, &st) == GMLAKE_ERROR_INVALID_ARGUMENT, "stats NULL allocator");
  CHECK(gmlake_snapshot_json(NULL, &json) == GMLAKE_ERROR_INVALID_ARGUMENT, "snapshot NULL allocator");
  CHECK(gmlake_stats_json(a, NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "json NULL out");
  CHECK(gmlake_set_memory_fraction(a, 1.5) == GMLAKE_ERROR_INVALID_ARGUMENT, "bad fraction");
  CHECK(gmlake_get_stats(a, NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "stats NULL out");
  CHECK(gmlake_stats_json(NULL, &json) == GMLAKE_ERROR_INVALID_ARGUMENT, "json NULL allocator");
  CHECK(gmlake_destroy(a, false) == GMLAKE_ERROR_LIVE_ALLOCATIONS, "destroy with live allocations");

  CHECK(gmlake_free(a, y) == GMLAKE_OK && gmlake_free(a, s) == GMLAKE_OK, "free the rest");
  CHECK(gmlake_empty_cache(a) == GMLAKE_OK, "empty cache");
  CHECK(gmlake_reset_peak_stats(a) == GMLAKE_OK && gmlake_reset_peak_stats(NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "reset peaks");
  CHECK(gmlake_empty_cache(NULL) == GMLAKE_ERROR_INVALID_ARGUMENT, "empty cache NULL");
  CHECK(gmlake_get_stats(a, &st) == GMLAKE_OK && st.reserved_bytes == 0, "everything returned");
  CHECK(gmlake_destroy(a, false) == GMLAKE_OK, "destroy");
  CHECK(gmlake_destroy(NULL, false) == GMLAKE_OK, "destroy NULL");

  /* Private pools, the history, every statistic and a snapshot as structs (what PyTorch's full
   * allocator interface uses). */
  gmlake_allocator *g = NULL;
  CHECK(gmlake_create_simulated(1024 * MiB, NULL, &g) == GMLAKE_OK, "pools: create");
  if (g != NULL) {
    CHECK(gmlake_record_history(g, true, 1000, true) == GMLAKE_OK, "history on");
    CHECK(gmlake_pool(g, 1, 0, GMLAKE_POOL_INCREF) == GMLAKE_OK, "pool incref");
    CHECK(gmlake_pool(g, 1, 0, 99) == GMLAKE_ERROR_INVALID_ARGUMENT && strstr(gmlake_last_error(), "unknown pool operation") != NULL, "bad pool operation");
    void *gp = NULL, *dp = NULL;
    CHECK(gmlake_malloc_ex(g, 64 * MiB, NULL, 1, 0, 42, &gp) == GMLAKE_OK, "malloc in the pool");
    CHECK(gmlake_free_ex(g, gp, 43) == GMLAKE_OK, "free in the pool");
    CHECK(gmlake_malloc(g, 64 * MiB, NULL, &dp) == GMLAKE_OK && dp != gp, "the pool keeps its memory");
    CHECK(gmlake_malloc_ex(g, 8, NULL, 9, 9, 0, &gp) == GMLAKE_ERROR_INVALID_ARGUMENT && gp == NULL, "unknown pool");
    uint32_t users = 0;
    size_t nlive = 7;
    CHECK(gmlake_pool_use_count(g, 1, 0, &users) == GMLAKE_OK && users == 1, "use count");
    CHECK(gmlake_pool_live(g, 1, 0, NULL, 0, &nlive) == GMLAKE_OK && nlive == 0, "nothing live in the pool");
    gmlake_device_stats ds;
    CHECK(gmlake_get_device_stats(g, &ds) == GMLAKE_OK && ds.reserved_bytes.all.current == 128 * (int64_t)MiB
          && ds.allocation.large_pool.current == 1, "device stats");
    uint64_t largest = 0;
    double fraction = 0;
    CHECK(gmlake_cache_info(g, &largest, &fraction) == GMLAKE_OK && largest == 64 * MiB && fraction == 1.0, "cache info");
    CHECK(gmlake_pool(g, 1, 0, GMLAKE_POOL_RELEASE) == GMLAKE_OK, "pool release");
    CHECK(gmlake_get_device_stats(g, &ds) == GMLAKE_OK && ds.reserved_bytes.all.current == 64 * (int64_t)MiB, "released");
    CHECK(gmlake_pool(g, 1, 0, GMLAKE_POOL_RELEASE) == GMLAKE_ERROR_INVALID_ARGUMENT, "no user left");
    gmlake_history_record *h = NULL;
    size_t nh = 0, nctx = 0;
    uint64_t *ctx = NULL;
    CHECK(gmlake_history(g, &h, &nh, &ctx, &nctx) == GMLAKE_OK && nh >= 5, "history");
    CHECK(h != NULL && h[1].action == 0 && h[1].context == 42 && h[1].pool0 == 1, "an alloc in the pool, with its context");
    CHECK(h != NULL && h[2].action == 1 && h[2].context == 43, "its free");
    gmlake_history_free(h, nh);
    gmlake_addresses_free(ctx, nctx);
    gmlake_snapshot *snap2 = NULL;
    size_t nseg = 0;
    CHECK(gmlake_snapshot_take(g, &snap2) == GMLAKE_OK, "snapshot");
    const gmlake_segment_info *segs = gmlake_snapshot_segments(snap2, &nseg);
    CHECK(nseg == 1 && segs[0].block_count == 1 && segs[0].blocks[0].state == 0
          && segs[0].blocks[0].address == (uint64_t)dp, "the snapshot shows the live block");
    gmlake_snapshot_free(snap2);
    CHECK(gmlake_free(g, dp) == GMLAKE_OK && gmlake_destroy(g, false) == GMLAKE_OK, "pools: destroy");
  }

  /* Host memory: the same allocator on this machine's memory, whose addresses the CPU can use. */
  gmlake_allocator *h = NULL;
  CHECK(gmlake_create_host(0, 0, NULL, &h) == GMLAKE_ERROR_INVALID_ARGUMENT, "host: zero capacity");
  CHECK(gmlake_create_host(64 * MiB, 0, "frag_limit:0,min_handle_size:2MB", &h) == GMLAKE_OK, "host: create");
  if (h != NULL) {
    unsigned char *b[3];
    for (int i = 0; i < 3; i++) {
      CHECK(gmlake_malloc(h, 4 * MiB, NULL, (void **)&b[i]) == GMLAKE_OK, "host: malloc");
      memset(b[i], 0x10 + i, 4 * MiB);
    }
    CHECK(gmlake_free(h, b[0]) == GMLAKE_OK && gmlake_free(h, b[2]) == GMLAKE_OK, "host: free two");
    unsigned char *big = NULL;
    CHECK(gmlake_malloc(h, 8 * MiB, NULL, (void **)&big) == GMLAKE_OK, "host: stitched malloc");
    CHECK(gmlake_get_stats(h, &st) == GMLAKE_OK && st.num_stitches == 1 && st.reserved_bytes == 12 * MiB,
          "host: served by a stitch, no growth");
    memset(big, 0x7f, 8 * MiB);
    int intact = 1;
    for (size_t i = 0; i < 4 * MiB; i += 4096) intact &= b[1][i] == 0x11;
    CHECK(intact && big[0] == 0x7f && big[8 * MiB - 1] == 0x7f, "host: stitched data and its neighbour hold");
    CHECK(gmlake_free(h, big) == GMLAKE_OK && gmlake_free(h, b[1]) == GMLAKE_OK, "host: free");
    CHECK(gmlake_destroy(h, false) == GMLAKE_OK, "host: destroy");
  }

  if (failures) {
    fprintf(stderr, "c example: %d failures\n", failures);
    return 1;
  }
  printf("c example: ok (%s)\n", cuda ? "cuda" : "simulated");
  return 0;
}
