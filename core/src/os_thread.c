/* OS thread, condition variable and futex helpers behind os_thread.h. */
#define _GNU_SOURCE
#include "os_thread.h"

#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

void treadle__os_cond_init(treadle__os_cond_t *cv) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &attr);
  pthread_condattr_destroy(&attr);
}

bool treadle__os_cond_wait_until(treadle__os_cond_t *cv,
                                 treadle__os_mutex_t *mu,
                                 uint64_t deadline_ns) {
  if (deadline_ns == TREADLE_FOREVER) {
    pthread_cond_wait(cv, mu);
    return true;
  }
  struct timespec ts = {
      .tv_sec = (time_t)(deadline_ns / TREADLE_NSEC_PER_SEC),
      .tv_nsec = (long)(deadline_ns % TREADLE_NSEC_PER_SEC),
  };
  return pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT;
}

void treadle__os_futex_wait(_Atomic uint32_t *word, uint32_t expected) {
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL,
          0);
}

bool treadle__os_futex_wait_until(_Atomic uint32_t *word, uint32_t expected,
                                  uint64_t deadline_ns) {
  if (deadline_ns == UINT64_MAX) {
    treadle__os_futex_wait(word, expected);
    return true;
  }
  struct timespec ts = {
      .tv_sec = (time_t)(deadline_ns / TREADLE_NSEC_PER_SEC),
      .tv_nsec = (long)(deadline_ns % TREADLE_NSEC_PER_SEC),
  };
  /* WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. */
  return syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET_PRIVATE,
                 expected, &ts, NULL, FUTEX_BITSET_MATCH_ANY) == 0 ||
         errno != ETIMEDOUT;
}

void treadle__os_futex_wake(_Atomic uint32_t *word, int count) {
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, count, NULL, NULL,
          0);
}

/* What a new thread needs before it runs fn: its name, set by itself so
 * that anything it runs (a start hook reading the name) sees it. */
typedef struct {
  void *(*fn)(void *);
  void *arg;
  char name[16]; /* the kernel keeps 15 bytes and a NUL */
} start_t;

static void *thread_main(void *p) {
  start_t st = *(start_t *)p;
  treadle__free(p);
  if (st.name[0] != '\0')
    pthread_setname_np(pthread_self(), st.name);
  return st.fn(st.arg);
}

int treadle__os_thread_start(treadle__os_thread_t *th, void *(*fn)(void *),
                             void *arg, const char *name) {
  start_t *st = treadle__malloc(sizeof *st);
  if (st == NULL)
    return TREADLE_ENOMEM;
  st->fn = fn;
  st->arg = arg;
  snprintf(st->name, sizeof st->name, "%s", name != NULL ? name : "");
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  /* 2 MiB like Tokio's default; glibc's default follows ulimit -s (8 MiB). */
  pthread_attr_setstacksize(&attr, 2u << 20);
  int rc = pthread_create(th, &attr, thread_main, st);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    treadle__free(st);
    return -rc;
  }
  return 0;
}

void treadle__os_thread_join(treadle__os_thread_t th) {
  pthread_join(th, NULL);
}
