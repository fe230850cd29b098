/* OS threads, their locks and condition variables, futexes, atomics: the
 * one place treadle's threads, locks and atomics come from. (The async
 * treadle_mutex_t of the public API is mutex.c; these are the OS's.)
 *
 * Atomics are C11 <stdatomic.h>; every non-relaxed use carries a one-line
 * reason beside it. Locks and condition variables are pthread's, so that
 * ThreadSanitizer and valgrind understand them. A thread parker is a futex
 * word. TSan does not model stand-alone fences (TESTING.md c.4), so
 * treadle__fence_seq_cst() becomes a seq_cst RMW on the caller's own word
 * under TSan. */
#ifndef TREADLE_OS_THREAD_H
#define TREADLE_OS_THREAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#if defined(__SANITIZE_THREAD__)
#define TREADLE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TREADLE_TSAN 1
#endif
#endif

#define TREADLE_CACHELINE 64
#define treadle__likely(x) __builtin_expect(!!(x), 1)
#define treadle__unlikely(x) __builtin_expect(!!(x), 0)

/* A spin-wait hint to the CPU: pause on x86, yield on ARM, elsewhere only
 * a compiler barrier (the loop reloads what it waits on). */
static inline void treadle__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ volatile("yield" ::: "memory");
#else
  __asm__ volatile("" ::: "memory");
#endif
}

/* A full barrier that TSan can see: on plain builds a fence, under TSan a
 * seq_cst RMW on `word` (an atomic the protocol already touches). */
#ifdef TREADLE_TSAN
#define treadle__fence_seq_cst(word)                                           \
  ((void)atomic_fetch_add_explicit((word), 0, memory_order_seq_cst))
#else
#define treadle__fence_seq_cst(word)                                           \
  ((void)(word), atomic_thread_fence(memory_order_seq_cst))
#endif

typedef pthread_mutex_t treadle__os_mutex_t;
typedef pthread_cond_t treadle__os_cond_t;
typedef pthread_t treadle__os_thread_t;

static inline void treadle__os_mutex_init(treadle__os_mutex_t *mu) {
  pthread_mutex_init(mu, NULL);
}
static inline void treadle__os_mutex_destroy(treadle__os_mutex_t *mu) {
  pthread_mutex_destroy(mu);
}
static inline void treadle__os_mutex_lock(treadle__os_mutex_t *mu) {
  pthread_mutex_lock(mu);
}
static inline void treadle__os_mutex_unlock(treadle__os_mutex_t *mu) {
  pthread_mutex_unlock(mu);
}
static inline bool treadle__os_mutex_trylock(treadle__os_mutex_t *mu) {
  return pthread_mutex_trylock(mu) == 0;
}

/* Condition variables wait on CLOCK_MONOTONIC, like every treadle deadline. */
void treadle__os_cond_init(treadle__os_cond_t *cv);
static inline void treadle__os_cond_destroy(treadle__os_cond_t *cv) {
  pthread_cond_destroy(cv);
}
static inline void treadle__os_cond_signal(treadle__os_cond_t *cv) {
  pthread_cond_signal(cv);
}
static inline void treadle__os_cond_broadcast(treadle__os_cond_t *cv) {
  pthread_cond_broadcast(cv);
}
/* Waits until signalled or until the monotonic deadline (ns; UINT64_MAX:
 * no deadline). Returns false on timeout. */
bool treadle__os_cond_wait_until(treadle__os_cond_t *cv,
                                 treadle__os_mutex_t *mu, uint64_t deadline_ns);

/* Futex wait while *word == expected (spurious returns allowed), and wake.
 * _until gives up at a monotonic deadline (ns; UINT64_MAX: none) and then
 * returns false. */
void treadle__os_futex_wait(_Atomic uint32_t *word, uint32_t expected);
bool treadle__os_futex_wait_until(_Atomic uint32_t *word, uint32_t expected,
                                  uint64_t deadline_ns);
void treadle__os_futex_wake(_Atomic uint32_t *word, int count);

/* Starts a joinable thread with a small default stack; returns 0 or -errno. */
int treadle__os_thread_start(treadle__os_thread_t *th, void *(*fn)(void *),
                             void *arg, const char *name);
void treadle__os_thread_join(treadle__os_thread_t th);

#endif /* TREADLE_OS_THREAD_H */
