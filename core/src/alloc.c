/* Allocation wrappers, with a fail-next hook for tests.
 *
 * Every allocation the core makes goes through here, so a test can make the
 * N-th one fail and check that the caller returns TREADLE_ENOMEM and loses
 * nothing (STYLE.md "fail-next allocator"). The hook costs one relaxed load
 * on the allocation path. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* < 0: disabled; otherwise allocations left before one fails. */
static _Atomic long fail_countdown = -1;

static bool should_fail(void) {
  long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
  if (treadle__likely(n < 0))
    return false;
  /* Relaxed: the hook is for single-threaded fault-injection tests. */
  n = atomic_fetch_sub_explicit(&fail_countdown, 1, memory_order_relaxed);
  if (n == 0) {
    atomic_store_explicit(&fail_countdown, -1, memory_order_relaxed);
    return true;
  }
  return false;
}

void treadle__alloc_fail_after(long n) {
  atomic_store_explicit(&fail_countdown, n, memory_order_relaxed);
}

void *treadle__malloc(size_t size) {
  if (should_fail())
    return NULL;
  return malloc(size);
}

void *treadle__calloc(size_t n, size_t size) {
  if (should_fail())
    return NULL;
  return calloc(n, size);
}

void *treadle__aligned_calloc(size_t align, size_t size) {
  if (should_fail())
    return NULL;
  size = (size + align - 1) & ~(align - 1); /* aligned_alloc's rule */
  void *p = aligned_alloc(align, size);
  if (p != NULL)
    memset(p, 0, size);
  return p;
}

void treadle__free(void *p) { free(p); }

char *treadle__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *copy = treadle__malloc(n);
  if (copy != NULL)
    memcpy(copy, s, n);
  return copy;
}
