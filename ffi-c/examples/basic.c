/* A C program that uses only include/gmlake.h: allocates, stitches, frees and reads statistics on
 * the simulated device, checks that every bad input returns its documented error, and checks the
 * data of a stitched block in host memory (gmlake_create_host), with no GPU.
 * Build: cc basic.c -I../include <dir>/libgmlake.a -lstdc++ -lpthread -ldl -lm
 * With the argument "cuda" it runs on GPU 0 instead (capped at 1% of its memory).
 * Exit status 0 and "c example: ok" when every check passed. */
#include <stdio.h>
#include <string.h>
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
