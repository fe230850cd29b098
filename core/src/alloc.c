/* Allocation wrappers, with a fail-next hook for tests, and a per-thread
 * cache of task blocks.
 *
 * Every allocation the core makes goes through here, so a test can make the
 * N-th one fail and check that the caller returns TREADLE_ENOMEM and loses
 * nothing (TESTING.md "Fail-next allocator"). While counting is on, the
 * allocations and frees are counted, so that the allocation sweep
 * (tests/c/test-alloc-sweep.c) knows how many allocation points a scenario
 * has and that every block came back. The hooks cost two relaxed loads on
 * the allocation path.
 *
 * Task blocks: a task is freed, most often, on the thread that allocated
 * its successor (a chain of spawns, a ping-pong, a worker's steady state).
 * Each thread keeps up to CACHE_MAX freed blocks per size class in a plain
 * free list, which makes the pair
 * malloc/free a pop/push. A block freed on another thread joins that
 * thread's cache. The lists go back to malloc when a thread exits (a
 * pthread key destructor) and when treadle_runtime_free trims the calling
 * thread. Under AddressSanitizer or valgrind the cache is off, so that a
 * use after free of a task is still caught. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define NO_TASK_CACHE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NO_TASK_CACHE 1
#endif
#endif
#if !defined(NO_TASK_CACHE) && __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HAVE_VALGRIND_H 1
#endif

#include "internal.h"

/* < 0: disabled; otherwise allocations left before one fails. */
static _Atomic long fail_countdown = -1;
/* Counting hook: on/off, allocations made, blocks not yet freed. */
static _Atomic bool counting;
static _Atomic long counted_allocs, counted_live;

static bool should_fail(void) {
  long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
  if (treadle__likely(n < 0))
    return false;
  /* Relaxed: the hook is for fault-injection tests; any one allocation
   * may be the one that fails. */
  n = atomic_fetch_sub_explicit(&fail_countdown, 1, memory_order_relaxed);
  if (n == 0) {
    atomic_store_explicit(&fail_countdown, -1, memory_order_relaxed);
    return true;
  }
  return false;
}

/* Counts one allocation (p != NULL) while counting is on. */
static void *counted(void *p) {
  /* Relaxed: plain counters, read after the scenario's threads joined. */
  if (treadle__unlikely(atomic_load_explicit(&counting, memory_order_relaxed)) &&
      p != NULL) {
    atomic_fetch_add_explicit(&counted_allocs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&counted_live, 1, memory_order_relaxed);
  }
  return p;
}

static void count_free(void *p) {
  /* Relaxed: as in counted(). */
  if (treadle__unlikely(atomic_load_explicit(&counting, memory_order_relaxed)) &&
      p != NULL)
    atomic_fetch_sub_explicit(&counted_live, 1, memory_order_relaxed);
}

long treadle__alloc_fail_after(long n) {
  /* Relaxed: a test hook, set between single-threaded steps. */
  return atomic_exchange_explicit(&fail_countdown, n, memory_order_relaxed);
}

void treadle__alloc_count_start(void) {
  /* Relaxed: set before the scenario's threads start. */
  atomic_store_explicit(&counted_allocs, 0, memory_order_relaxed);
  atomic_store_explicit(&counted_live, 0, memory_order_relaxed);
  atomic_store_explicit(&counting, true, memory_order_relaxed);
}

long treadle__alloc_count_live(void) {
  /* Relaxed: a counter a test polls. */
  return atomic_load_explicit(&counted_live, memory_order_relaxed);
}

long treadle__alloc_count_stop(long *live) {
  /* Relaxed: read after the scenario's threads were joined. */
  atomic_store_explicit(&counting, false, memory_order_relaxed);
  if (live != NULL)
    *live = atomic_load_explicit(&counted_live, memory_order_relaxed);
  return atomic_load_explicit(&counted_allocs, memory_order_relaxed);
}

void *treadle__malloc(size_t size) {
  if (should_fail())
    return NULL;
  return counted(malloc(size));
}

void *treadle__calloc(size_t n, size_t size) {
  if (should_fail())
    return NULL;
  return counted(calloc(n, size));
}

void *treadle__aligned_calloc(size_t align, size_t size) {
  if (should_fail())
    return NULL;
  size = (size + align - 1) & ~(align - 1); /* aligned_alloc's rule */
  void *p = aligned_alloc(align, size);
  if (p != NULL)
    memset(p, 0, size);
  return counted(p);
}

void treadle__free(void *p) {
  count_free(p);
  free(p);
}

char *treadle__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *copy = treadle__malloc(n);
  if (copy != NULL)
    memcpy(copy, s, n);
  return copy;
}

/* ----------------------------------------------------------- task blocks */

/* Class k holds blocks of 16k + 8 bytes: exactly what a glibc chunk of
 * 16(k + 1) bytes gives, so rounding a task up to its class costs nothing
 * (a 1,000,000-task benchmark measures it). Up to 504 bytes. */
#define CLASSES 32
#define CLASS_SIZE(k) (16 * (size_t)(k) + 8)
#define CACHE_MAX 256

typedef struct block_s {
  struct block_s *next;
} block_t;

typedef struct {
  block_t *head[CLASSES];
  unsigned count[CLASSES];
  bool registered; /* the exit destructor knows about this cache */
} cache_t;

static __thread cache_t cache TREADLE_TLS_MODEL;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_off;

static void cache_drain(cache_t *c) {
  for (unsigned k = 0; k < CLASSES; k++) {
    while (c->head[k] != NULL) {
      block_t *b = c->head[k];
      c->head[k] = b->next;
      free(b);
    }
    c->count[k] = 0;
  }
}

static void cache_exit(void *arg) { cache_drain(arg); }

static void cache_setup(void) {
  pthread_key_create(&cache_key, cache_exit);
#ifdef NO_TASK_CACHE
  cache_off = true;
#elif defined(HAVE_VALGRIND_H)
  cache_off = RUNNING_ON_VALGRIND;
#endif
}

void *treadle__task_alloc(size_t size, uint8_t *size_class) {
  unsigned k = size <= 8 ? 0 : (unsigned)((size - 8 + 15) / 16);
  if (k >= CLASSES) {
    *size_class = UINT8_MAX;
    return treadle__malloc(size);
  }
  *size_class = (uint8_t)k;
  block_t *b = cache.head[k];
  if (b != NULL) {
    /* A cached block is an allocation point too: the fail-next hook must
     * be able to fail it (falling through to malloc would succeed). */
    if (should_fail())
      return NULL;
    cache.head[k] = b->next;
    cache.count[k]--;
    return counted(b);
  }
  return treadle__malloc(CLASS_SIZE(k));
}

void treadle__task_free(void *p, uint8_t size_class) {
  count_free(p);
  if (size_class >= CLASSES || cache.count[size_class] >= CACHE_MAX) {
    free(p);
    return;
  }
  if (treadle__unlikely(!cache.registered)) {
    pthread_once(&cache_once, cache_setup);
    if (cache_off) {
      free(p);
      return;
    }
    pthread_setspecific(cache_key, &cache);
    cache.registered = true;
  }
  block_t *b = p;
  b->next = cache.head[size_class];
  cache.head[size_class] = b;
  cache.count[size_class]++;
}

void treadle__alloc_trim(void) { cache_drain(&cache); }
