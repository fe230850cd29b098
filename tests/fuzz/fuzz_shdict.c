/* libFuzzer target: the shared dictionary (bindings/common/shdict.c;
 * docs/TESTING.md "Fuzzing") against the reference model of
 * tests/c/shdict_model.h (a plain array in LRU order), the model that
 * test-shdict.c drives with a seeded generator.
 *
 * The input: two bytes for the capacity (200 bytes to 64 KiB: room for two
 * entries to hundreds), two for the clock's start, then every choice the
 * model's run makes (the operation: get, get_stale, set, safe_set, add,
 * safe_add, replace, delete, incr with or without init and init_ttl,
 * expire, ttl, flush_all, flush_expired, get_keys, lpush/rpush/lpop/rpop/
 * llen, the clock moving on; its key, value, flags and TTL) as the next
 * input byte, until the input ends. Every result, the free space, the
 * entry count and the key order must equal the model's, which evicts
 * exactly as shdict.h states: up to two expired entries from the LRU tail,
 * then (set, add, incr's init) entries from the tail until it fits, while
 * safe_set and safe_add only free expired ones. On a virtual clock: every
 * timing is the input's. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_shdict: %s\n", what);
    abort();
  }
}

/* cmocka's assertions, as the model uses them. */
#define assert_true(c) check((c) ? 1 : 0, #c)
#define assert_false(c) check((c) ? 0 : 1, "!" #c)
#define assert_int_equal(a, b) check((uint64_t)(a) == (uint64_t)(b), #a " == " #b)
#define assert_memory_equal(a, b, n) check(memcmp((a), (b), (n)) == 0, #a " same bytes as " #b)
#define assert_null(p) check((p) == NULL, #p " is NULL")
#define assert_non_null(p) check((p) != NULL, #p " is not NULL")

static const uint8_t *in_p;
static size_t in_n;

/* The model's next choice: the next input byte (0 once it ended). */
static uint64_t rng(void) {
  if (in_n == 0)
    return 0;
  in_n--;
  return *in_p++;
}

static bool model_more(void) { return in_n > 0; }

#include "shdict_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  in_p = data;
  in_n = size;
  size_t capacity = 200 + (size_t)(rng() << 8 | rng()) % (64 * 1024 - 200);
  uint64_t start = 1 + (rng() << 8 | rng());
  run_against_model(capacity, 1L << 30, start);
  return 0;
}
