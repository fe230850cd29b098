/* The handle: the thread-safe, refcounted face of a runtime. spawn and
 * block_on go through it from any thread; tasks keep it alive (one
 * reference each) so that a waker or join handle that outlives the runtime
 * still finds a scheduler to ask, which then answers "shut down". */
#include <stdio.h>

#include "internal.h"

treadle_handle_t *treadle_handle_ref(treadle_handle_t *h) {
  /* Relaxed: made from a reference the caller holds (Arc::clone). */
  if (h != NULL)
    atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
  return h;
}

void treadle_handle_unref(treadle_handle_t *h) {
  if (h == NULL)
    return;
  /* acq_rel: the last owner sees every other owner's writes before free. */
  if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1)
    return;
  h->sched->vt->free(h->sched);
  treadle__blocking_unref(h->blocking);
  treadle__driver_destroy(&h->driver);
  treadle__free(h);
}

/* Credits (internal.h): a worker keeps a reserve of handle references so
 * that spawning and freeing tasks does not bounce the handle's refcount
 * between cores. The reserve is part of `refs`, so the handle cannot go
 * while a worker holds one; it is given back when the worker stops. */
#define CREDIT_BATCH 64

void treadle__handle_ref_task(treadle_handle_t *h) {
  uint32_t *c = treadle__ctx.handle == h ? treadle__ctx.credits : NULL;
  if (c == NULL) {
    treadle_handle_ref(h);
    return;
  }
  if (*c == 0) {
    /* Relaxed: made from the reference the runtime holds. */
    atomic_fetch_add_explicit(&h->refs, CREDIT_BATCH, memory_order_relaxed);
    *c = CREDIT_BATCH;
  }
  (*c)--;
}

void treadle__handle_unref_task(treadle_handle_t *h) {
  uint32_t *c = treadle__ctx.handle == h ? treadle__ctx.credits : NULL;
  if (c == NULL) {
    treadle_handle_unref(h);
    return;
  }
  if (++*c == 2 * CREDIT_BATCH) {
    /* release: as unref; cannot reach zero, the runtime holds one. */
    atomic_fetch_sub_explicit(&h->refs, CREDIT_BATCH, memory_order_release);
    *c -= CREDIT_BATCH;
  }
}

void treadle__handle_return_credits(treadle_handle_t *h, uint32_t *credits) {
  if (*credits == 0)
    return;
  /* release: as unref; cannot reach zero, the runtime holds one. */
  atomic_fetch_sub_explicit(&h->refs, *credits, memory_order_release);
  *credits = 0;
}

treadle_err_t treadle_spawn_with(treadle_handle_t *h,
                                 const treadle_task_vtable_t *vt,
                                 const void *state, size_t state_size,
                                 const treadle_spawn_opts_t *opts,
                                 treadle_join_t **join) {
  if (join != NULL)
    *join = NULL;
  if (h == NULL || vt == NULL || vt->poll == NULL ||
      state_size > (UINT32_C(1) << 30))
    return TREADLE_EINVAL;
  if (opts != NULL && (opts->worker < -1 || opts->worker >= 65535))
    return TREADLE_EINVAL;
  if (treadle__forked(h))
    return TREADLE_EFORKED;
  treadle__task_t *t;
  treadle_err_t err =
      treadle__task_new(h->sched, vt, state, state_size, join != NULL, &t);
  if (err != 0)
    return err;
  if (opts != NULL) {
    t->pinned = (uint16_t)(opts->worker + 1);
    if (opts->name != NULL && (t->name = treadle__strdup(opts->name)) == NULL)
      err = TREADLE_ENOMEM;
  }
  if (err == 0)
    err = h->sched->vt->spawn(h->sched, t);
  if (err != 0) {
    treadle__task_discard(t);
    return err;
  }
  if (join != NULL)
    *join = (treadle_join_t *)t;
  return 0;
}

treadle_err_t treadle_spawn(treadle_handle_t *h,
                            const treadle_task_vtable_t *vt,
                            const void *state, size_t state_size,
                            treadle_join_t **join) {
  return treadle_spawn_with(h, vt, state, state_size, NULL, join);
}

treadle_err_t treadle_handle_metrics(treadle_handle_t *h,
                                     treadle_runtime_metrics_t *out) {
  if (h == NULL || out == NULL)
    return TREADLE_EINVAL;
  memset(out, 0, sizeof *out);
  h->sched->vt->metrics(h->sched, out);
  /* Relaxed: a counter. */
  out->driver_parks =
      atomic_load_explicit(&h->driver.parks, memory_order_relaxed);
  treadle__blocking_metrics(h->blocking, &out->blocking_threads,
                            &out->blocking_idle, &out->blocking_queue_depth);
  return 0;
}

treadle_err_t treadle_handle_worker_metrics(treadle_handle_t *h,
                                            unsigned worker,
                                            treadle_worker_metrics_t *out) {
  if (h == NULL || out == NULL)
    return TREADLE_EINVAL;
  memset(out, 0, sizeof *out);
  return h->sched->vt->worker_metrics(h->sched, worker, out);
}

treadle_err_t treadle_handle_block_on(treadle_handle_t *h,
                                      const treadle_task_vtable_t *vt,
                                      const void *state, size_t state_size,
                                      void **value) {
  if (value != NULL)
    *value = NULL;
  if (h == NULL || vt == NULL || vt->poll == NULL)
    return TREADLE_EINVAL;
  if (treadle__forked(h))
    return TREADLE_EFORKED;
  if (treadle__ctx.sched != NULL)
    return TREADLE_EINRUNTIME; /* running tasks: waiting would deadlock */
  /* Once spawned, the task may use memory of the caller's (a binding's
   * root future does), so nothing may end the wait before it completes:
   * on multi_thread, where this thread parks while a worker runs it, the
   * parker is made first. current_thread's block_on returns once main
   * completed. */
  treadle__parker_t *p = NULL;
  if (h->sched->vt->block_on == NULL && (p = treadle__parker_new()) == NULL)
    return TREADLE_ENOMEM;
  treadle_join_t *j;
  treadle_err_t err = treadle_spawn(h, vt, state, state_size, &j);
  if (err == 0) {
    treadle__task_t *main = (treadle__task_t *)j;
    if (p == NULL)
      h->sched->vt->block_on(h->sched, main);
    else
      while (treadle__task_join_register(main, &p->waker))
        treadle__parker_park(p);
    err = treadle_join_try(j, value);
    treadle_join_detach(j);
  }
  if (p != NULL)
    treadle_waker_drop(&p->waker);
  return err;
}

void treadle__handle_report_error(treadle_handle_t *h, treadle__task_t *t) {
  if (h->cfg.on_task_error != NULL) {
    h->cfg.on_task_error((uint64_t)t->id, t->name, t->out_err, h->cfg.on_task_error_ud);
    return;
  }
  fprintf(stderr, "treadle: task %llu%s%s%s failed and nobody joined it: %s\n",
          (unsigned long long)t->id, t->name ? " '" : "",
          t->name ? t->name : "", t->name ? "'" : "",
          treadle_strerror(t->out_err));
}
