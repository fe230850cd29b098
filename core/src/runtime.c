/* The runtime: build from a builder, block_on, and the shutdown order.
 *
 * Shutdown (treadle_runtime_free):
 * 1. The scheduler closes its queues to new tasks, cancels and drops every
 *    task (each drop function once; drop functions that spawn get
 *    TREADLE_ESHUTDOWN, wakes they make are drained too) and joins the
 *    threads it started.
 * 2. The blocking pool cancels queued jobs and waits (up to the timeout)
 *    for running ones; threads that outlast it exit on their own later.
 * 3. The drivers fire what is left with TREADLE_ESHUTDOWN and close their
 *    fds; no worker uses them any more.
 * 4. The runtime drops its handle reference. The handle's memory (and the
 *    scheduler's) goes with the last reference, which may be a waker or
 *    join handle the user still holds. */
#include <pthread.h>
#include <stdio.h>

#include "internal.h"

struct treadle_runtime_s {
  treadle_handle_t *handle;
};

_Atomic uint32_t treadle__fork_gen;

static void forked_child(void) {
  /* Relaxed: the child has one thread, which runs this before returning
   * from fork(). */
  atomic_fetch_add_explicit(&treadle__fork_gen, 1, memory_order_relaxed);
}

static void watch_forks(void) { pthread_atfork(NULL, NULL, forked_child); }

treadle_err_t treadle_builder_build(const treadle_builder_t *b,
                                    treadle_runtime_t **out) {
  if (out == NULL)
    return TREADLE_EINVAL;
  *out = NULL;
  if (b == NULL)
    return TREADLE_EINVAL;
  treadle_runtime_t *rt = treadle__malloc(sizeof *rt);
  treadle_handle_t *h = treadle__calloc(1, sizeof *h);
  if (rt == NULL || h == NULL) {
    treadle__free(rt);
    treadle__free(h);
    return TREADLE_ENOMEM;
  }
  static pthread_once_t watching = PTHREAD_ONCE_INIT;
  pthread_once(&watching, watch_forks);
  atomic_init(&h->refs, 1);
  /* Relaxed: as in treadle__forked. */
  h->fork_gen = atomic_load_explicit(&treadle__fork_gen, memory_order_relaxed);
  h->cfg = b->cfg;
  treadle_err_t err = treadle__driver_init(&h->driver, &h->cfg);
  if (err != 0) {
    treadle__free(rt);
    treadle__free(h);
    return err;
  }
  err = treadle__blocking_new(h, &h->blocking);
  if (err == 0) {
    if (h->cfg.flavor == TREADLE_CURRENT_THREAD)
      err = treadle__ct_new(h, &h->sched);
    else
      err = treadle__mt_new(h, &h->sched);
    if (err != 0)
      treadle__blocking_unref(h->blocking);
  }
  if (err != 0) {
    treadle__driver_shutdown(&h->driver);
    treadle__driver_destroy(&h->driver);
    treadle__free(rt);
    treadle__free(h);
    return err;
  }
  rt->handle = h;
  *out = rt;
  return 0;
}

treadle_err_t treadle_runtime_new_current_thread(treadle_runtime_t **out) {
  treadle_builder_t *b;
  treadle_err_t err = treadle_builder_new(TREADLE_CURRENT_THREAD, &b);
  if (err != 0)
    return err;
  treadle_builder_enable_all(b);
  err = treadle_builder_build(b, out);
  treadle_builder_free(b);
  return err;
}

treadle_handle_t *treadle_runtime_handle(treadle_runtime_t *rt) {
  return rt != NULL ? rt->handle : NULL;
}

treadle_err_t treadle_runtime_block_on(treadle_runtime_t *rt,
                                       const treadle_task_vtable_t *vt,
                                       const void *state, size_t state_size,
                                       void **value) {
  if (value != NULL)
    *value = NULL;
  if (rt == NULL)
    return TREADLE_EINVAL;
  return treadle_handle_block_on(rt->handle, vt, state, state_size, value);
}

treadle_err_t treadle_runtime_shutdown_timeout(treadle_runtime_t *rt,
                                               uint64_t timeout_ns) {
  if (rt == NULL)
    return 0;
  treadle_handle_t *h = rt->handle;
  if (treadle__forked(h))
    return TREADLE_EFORKED; /* the parent's: left alone (its memory too) */
  if (treadle__ctx.handle == h)
    return TREADLE_EINRUNTIME; /* it would wait for its own thread */
  treadle_err_t err = h->sched->vt->shutdown(h->sched);
  if (err != 0)
    return err;
  bool all_done = treadle__blocking_shutdown(h->blocking, timeout_ns);
  treadle__driver_shutdown(&h->driver);
  treadle__free(rt);
  treadle_handle_unref(h);
  treadle__alloc_trim(); /* the blocks this thread freed while shutting down */
  return all_done ? 0 : TREADLE_ETIMEDOUT;
}

treadle_err_t treadle_runtime_free(treadle_runtime_t *rt) {
  return treadle_runtime_shutdown_timeout(rt, TREADLE_FOREVER);
}

treadle_err_t treadle_runtime_dump(treadle_runtime_t *rt, FILE *out) {
  if (rt == NULL || out == NULL)
    return TREADLE_EINVAL;
  treadle_handle_t *h = rt->handle;
  treadle_err_t err = h->sched->vt->dump(h->sched, out);
  uint64_t threads, idle, queued;
  treadle__blocking_metrics(h->blocking, &threads, &idle, &queued);
  fprintf(out, "blocking pool: %llu threads (%llu idle), %llu jobs queued\n",
          (unsigned long long)threads, (unsigned long long)idle,
          (unsigned long long)queued);
  return err;
}
