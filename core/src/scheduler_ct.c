/* The current_thread scheduler: tasks run on the thread that calls
 * block_on, which parks in the driver stack when there is nothing to run.
 *
 * 1. The core (run queue, owned list, tick) belongs to whichever thread
 *    holds `core_taken`; only that thread touches it, without locks. A
 *    second thread that calls block_on meanwhile queues its task through
 *    the inject queue and waits for either its task or the core.
 * 2. spawn and wake on the core's thread push to the local FIFO; from any
 *    other thread they push to the inject queue and unpark the driver.
 *    A task joins the owned list when it first waits (internal.h); tasks
 *    only wait after a poll on the core's thread, so the list needs no
 *    lock.
 * 3. Each tick runs one task: every global_queue_interval ticks the inject
 *    queue goes first (fairness); every event_interval ticks the drivers
 *    are polled without blocking, so timers fire under load; with nothing
 *    to run the thread parks in the drivers until a timer, an event or an
 *    unpark.
 * 4. Shutdown takes the core, closes the inject queue and the owned list,
 *    then cancels owned tasks and drains both queues until all three stay
 *    empty: drop functions may wake or spawn (D2). */
#include <sched.h>
#include <stdio.h>

#include "internal.h"

typedef struct treadle__ct_s {
  treadle__sched_t base;

  /* Owned by the thread holding the core. */
  treadle__task_t *head; /* run queue, FIFO through task->next */
  treadle__task_t *tail;
  treadle__list_t owned; /* every bound, unfinished task */
  unsigned until_global; /* ticks until the inject queue goes first */
  bool closed;           /* shutdown began: spawns fail */
  uint32_t credits;      /* handle references in reserve (handle.c) */

  /* Any thread. */
  treadle__inject_t inject;
  _Atomic bool core_taken;
  _Atomic size_t live;      /* spawned, not finished (metrics) */
  _Atomic size_t runq_len;  /* written by the core's holder (metrics) */
  _Atomic uint64_t polls, parks, unparks; /* likewise */
  treadle__os_mutex_t waiters_mu;
  treadle__list_t waiters; /* block_on callers waiting for the core;
                              guarded by waiters_mu */
} treadle__ct_t;

typedef struct core_waiter_s {
  treadle__list_t node;
  treadle__parker_t *parker;
} core_waiter_t;

static treadle__ct_t *as_ct(treadle__sched_t *s) {
  return (treadle__ct_t *)s;
}

/* Counters written only by the core's holder: relaxed load + store. */
static void add(_Atomic size_t *c, size_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

static void bump(_Atomic uint64_t *c) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

static void runq_push(treadle__ct_t *ct, treadle__task_t *t) {
  t->next = NULL;
  if (ct->tail != NULL)
    ct->tail->next = t;
  else
    ct->head = t;
  ct->tail = t;
  add(&ct->runq_len, 1);
}

static treadle__task_t *runq_pop(treadle__ct_t *ct) {
  treadle__task_t *t = ct->head;
  if (t != NULL) {
    ct->head = t->next;
    if (ct->head == NULL)
      ct->tail = NULL;
    add(&ct->runq_len, (size_t)-1);
  }
  return t;
}

/* Taking and letting go of the core also sets the thread's context. */
static void enter(treadle__ct_t *ct, treadle__context_t *saved) {
  *saved = treadle__ctx;
  treadle__ctx.sched = &ct->base;
  treadle__ctx.core = ct;
  treadle__ctx.handle = ct->base.handle;
  treadle__ctx.worker = 0;
  treadle__ctx.credits = &ct->credits;
}

static bool ct_bind(treadle__sched_t *s, treadle__task_t *t) {
  treadle__ct_t *ct = as_ct(s);
  if (ct->closed)
    return false;
  /* Relaxed: owned_state is the core holder's alone here. */
  atomic_store_explicit(&t->owned_state, TREADLE__BOUND, memory_order_relaxed);
  treadle__list_push_back(&ct->owned, &t->owned);
  return true;
}

static bool take_core(treadle__ct_t *ct) {
  /* acquire: see what the previous holder left in the core. */
  return !atomic_exchange_explicit(&ct->core_taken, true,
                                   memory_order_acquire);
}

static void release_core(treadle__ct_t *ct) {
  /* seq_cst: release the core to the next holder, and order this store
   * before the waiter list is read (a waiter pushes, then loads). */
  atomic_store_explicit(&ct->core_taken, false, memory_order_seq_cst);
  treadle__os_mutex_lock(&ct->waiters_mu);
  for (treadle__list_t *n = ct->waiters.next; n != &ct->waiters; n = n->next)
    treadle_wake_by_ref(
        &treadle__container_of(n, core_waiter_t, node)->parker->waker);
  treadle__os_mutex_unlock(&ct->waiters_mu);
}

static treadle_err_t ct_spawn(treadle__sched_t *s, treadle__task_t *t) {
  treadle__ct_t *ct = as_ct(s);
  if (t->pinned > 1)
    return TREADLE_EINVAL; /* one worker: index 0 */
  if (treadle__ctx.core == ct) {
    if (ct->closed)
      return TREADLE_ESHUTDOWN;
    runq_push(ct, t);
    /* Relaxed: a counter for metrics. */
    atomic_fetch_add_explicit(&ct->live, 1, memory_order_relaxed);
    return 0;
  }
  /* Counted before it is queued, so that release never goes below 0. */
  atomic_fetch_add_explicit(&ct->live, 1, memory_order_relaxed);
  if (!treadle__inject_push(&ct->inject, t)) {
    atomic_fetch_sub_explicit(&ct->live, 1, memory_order_relaxed);
    return TREADLE_ESHUTDOWN;
  }
  treadle__driver_unpark(&s->handle->driver);
  return 0;
}

static void ct_schedule(treadle__sched_t *s, treadle__task_t *t, bool yield) {
  (void)yield; /* a FIFO: every wake goes to the back */
  treadle__ct_t *ct = as_ct(s);
  if (treadle__ctx.core == ct) {
    runq_push(ct, t);
    return;
  }
  if (!treadle__inject_push(&ct->inject, t)) {
    treadle__task_unref(t); /* shut down: nobody will run it */
    return;
  }
  treadle__driver_unpark(&s->handle->driver);
}

static int ct_release(treadle__sched_t *s, treadle__task_t *t) {
  treadle__ct_t *ct = as_ct(s);
  /* Relaxed: a counter for metrics. */
  atomic_fetch_sub_explicit(&ct->live, 1, memory_order_relaxed);
  /* Relaxed: owned_state is the core holder's alone here. */
  uint8_t st = atomic_load_explicit(&t->owned_state, memory_order_relaxed);
  atomic_store_explicit(&t->owned_state, TREADLE__UNLINKED,
                        memory_order_relaxed);
  if (st == TREADLE__BOUND)
    treadle__list_unlink(&t->owned);
  return st == TREADLE__UNLINKED ? 0 : 1;
}

static treadle__task_t *next_task(treadle__ct_t *ct, unsigned interval) {
  treadle__task_t *t;
  if (--ct->until_global == 0) {
    ct->until_global = interval;
    if ((t = treadle__inject_pop(&ct->inject)) != NULL)
      return t;
  }
  if ((t = runq_pop(ct)) != NULL)
    return t;
  return treadle__inject_pop(&ct->inject);
}

/* Step 3: runs tasks until `main` completes. The caller holds the core. */
static void run_until(treadle__ct_t *ct, treadle__task_t *main) {
  treadle_handle_t *h = ct->base.handle;
  treadle__driver_t *drv = &h->driver;
  const unsigned event_interval = h->cfg.event_interval;
  const unsigned global_interval = h->cfg.global_queue_interval;
  unsigned until_event = event_interval;
  treadle__context_t saved;
  enter(ct, &saved);
  if (ct->until_global == 0 || ct->until_global > global_interval)
    ct->until_global = global_interval;
  /* acquire: main's output is read after this loop. */
  while (!(atomic_load_explicit(&main->state, memory_order_acquire) &
           TREADLE__COMPLETE)) {
    treadle__task_t *t = next_task(ct, global_interval);
    if (t == NULL) {
      bump(&ct->parks);
      treadle__driver_park(drv, TREADLE_FOREVER);
      bump(&ct->unparks);
      until_event = event_interval;
      continue;
    }
    bump(&ct->polls);
    treadle__task_run(t);
    if (--until_event == 0) {
      treadle__driver_park(drv, 0);
      until_event = event_interval;
    }
  }
  treadle__ctx = saved;
}

static bool is_complete(treadle__task_t *t) {
  /* acquire: the caller reads the output next. */
  return (atomic_load_explicit(&t->state, memory_order_acquire) &
          TREADLE__COMPLETE) != 0;
}

/* Step 1: drive the core if it is free, else wait for main or the core. */
static treadle_err_t ct_block_on(treadle__sched_t *s, treadle__task_t *main) {
  treadle__ct_t *ct = as_ct(s);
  treadle__parker_t *parker = NULL;
  while (!is_complete(main)) {
    if (take_core(ct)) {
      run_until(ct, main);
      release_core(ct);
      break;
    }
    if (parker == NULL && (parker = treadle__parker_new()) == NULL) {
      sched_yield(); /* out of memory: poll instead of parking */
      continue;
    }
    core_waiter_t w = {.parker = parker};
    treadle__os_mutex_lock(&ct->waiters_mu);
    treadle__list_push_back(&ct->waiters, &w.node);
    treadle__os_mutex_unlock(&ct->waiters_mu);
    /* seq_cst: load core_taken after publishing ourselves (see
     * release_core). */
    if (treadle__task_join_register(main, &parker->waker) &&
        atomic_load_explicit(&ct->core_taken, memory_order_seq_cst))
      treadle__parker_park(parker);
    treadle__os_mutex_lock(&ct->waiters_mu);
    treadle__list_unlink(&w.node);
    treadle__os_mutex_unlock(&ct->waiters_mu);
  }
  if (parker != NULL)
    treadle_waker_drop(&parker->waker);
  return 0;
}

/* Step 4. */
static treadle_err_t ct_shutdown(treadle__sched_t *s) {
  treadle__ct_t *ct = as_ct(s);
  if (!take_core(ct))
    return TREADLE_EBUSY;
  treadle__context_t saved;
  enter(ct, &saved);
  ct->closed = true;
  treadle__inject_close(&ct->inject);
  bool any;
  do {
    any = false;
    treadle__list_t *n;
    treadle__task_t *t;
    while ((n = treadle__list_pop_front(&ct->owned)) != NULL) {
      t = treadle__container_of(n, treadle__task_t, owned);
      atomic_store_explicit(&t->owned_state, TREADLE__UNLINKED,
                            memory_order_relaxed);
      treadle__task_shutdown(t);
      any = true;
    }
    while ((t = runq_pop(ct)) != NULL) {
      treadle__task_shutdown(t);
      any = true;
    }
    while ((t = treadle__inject_pop(&ct->inject)) != NULL) {
      treadle__task_shutdown(t);
      any = true;
    }
  } while (any);
  treadle__handle_return_credits(ct->base.handle, &ct->credits);
  treadle__ctx = saved;
  release_core(ct);
  return 0;
}

static void ct_free(treadle__sched_t *s) {
  treadle__ct_t *ct = as_ct(s);
  treadle__inject_destroy(&ct->inject);
  treadle__os_mutex_destroy(&ct->waiters_mu);
  treadle__free(ct);
}

static void ct_metrics(treadle__sched_t *s, treadle_runtime_metrics_t *m) {
  treadle__ct_t *ct = as_ct(s);
  m->workers = 1;
  m->live_tasks = atomic_load_explicit(&ct->live, memory_order_relaxed);
  m->inject_queue_depth = treadle__inject_len(&ct->inject);
}

static treadle_err_t ct_worker_metrics(treadle__sched_t *s, unsigned worker,
                                       treadle_worker_metrics_t *m) {
  treadle__ct_t *ct = as_ct(s);
  if (worker != 0)
    return TREADLE_EINVAL;
  memset(m, 0, sizeof *m);
  m->polls = atomic_load_explicit(&ct->polls, memory_order_relaxed);
  m->parks = atomic_load_explicit(&ct->parks, memory_order_relaxed);
  m->unparks = atomic_load_explicit(&ct->unparks, memory_order_relaxed);
  m->local_queue_depth =
      atomic_load_explicit(&ct->runq_len, memory_order_relaxed);
  return 0;
}

/* Walks the core's lists; the caller holds the core. */
static void dump_locked(treadle__ct_t *ct, FILE *out) {
  fprintf(out, "runtime current_thread, run queue %zu, inject %zu\n",
          atomic_load_explicit(&ct->runq_len, memory_order_relaxed),
          treadle__inject_len(&ct->inject));
  /* Waiting tasks are on the owned list; queued ones in the queues (a
   * woken task is in both: show it once). */
  for (treadle__list_t *n = ct->owned.next; n != &ct->owned; n = n->next) {
    treadle__task_t *t = treadle__container_of(n, treadle__task_t, owned);
    if (!(atomic_load_explicit(&t->state, memory_order_relaxed) &
          TREADLE__NOTIFIED))
      treadle__dump_task(out, t, 0);
  }
  for (treadle__task_t *t = ct->head; t != NULL; t = t->next)
    treadle__dump_task(out, t, 0);
  treadle__os_mutex_lock(&ct->inject.mu);
  for (treadle__task_t *t = ct->inject.head; t != NULL; t = t->next)
    treadle__dump_task(out, t, 0);
  treadle__os_mutex_unlock(&ct->inject.mu);
}

typedef struct {
  treadle__ct_t *ct;
  FILE *out;
} dump_state_t;

static treadle_poll_t dump_poll(treadle_cx_t *cx, void *state) {
  (void)cx;
  dump_state_t *d = state;
  dump_locked(d->ct, d->out);
  return TREADLE_READY;
}

static treadle_err_t ct_dump(treadle__sched_t *s, FILE *out) {
  treadle__ct_t *ct = as_ct(s);
  if (treadle__ctx.core == ct) {
    dump_locked(ct, out);
    return 0;
  }
  if (take_core(ct)) {
    dump_locked(ct, out);
    release_core(ct);
    return 0;
  }
  /* Another thread drives the runtime: let a task there write it. */
  static const treadle_task_vtable_t vt = {.poll = dump_poll};
  dump_state_t d = {ct, out};
  treadle_join_t *j;
  treadle_err_t err =
      treadle_spawn(s->handle, &vt, &d, sizeof d, &j);
  if (err != 0)
    return err;
  err = treadle_join_wait(j, NULL);
  treadle_join_detach(j);
  return err;
}

static const treadle__sched_vtable_t ct_vtable = {
    .spawn = ct_spawn,
    .bind = ct_bind,
    .schedule = ct_schedule,
    .release = ct_release,
    .block_on = ct_block_on,
    .shutdown = ct_shutdown,
    .free = ct_free,
    .metrics = ct_metrics,
    .worker_metrics = ct_worker_metrics,
    .dump = ct_dump,
};

treadle_err_t treadle__ct_new(treadle_handle_t *h, treadle__sched_t **out) {
  treadle__ct_t *ct = treadle__calloc(1, sizeof *ct);
  if (ct == NULL)
    return TREADLE_ENOMEM;
  ct->base.vt = &ct_vtable;
  ct->base.handle = h;
  treadle__list_init(&ct->owned);
  treadle__inject_init(&ct->inject);
  atomic_init(&ct->core_taken, false);
  atomic_init(&ct->live, 0);
  atomic_init(&ct->runq_len, 0);
  atomic_init(&ct->polls, 0);
  atomic_init(&ct->parks, 0);
  atomic_init(&ct->unparks, 0);
  treadle__os_mutex_init(&ct->waiters_mu);
  treadle__list_init(&ct->waiters);
  *out = &ct->base;
  return 0;
}
