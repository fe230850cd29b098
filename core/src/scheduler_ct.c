/* The current_thread scheduler: tasks run on the thread that calls
 * block_on, which parks in the driver stack when there is nothing to run.
 *
 * 1. The core (run queue, owned list, tick) belongs to whichever thread
 *    holds `core_taken`; only that thread touches it, without locks. A
 *    second thread that calls block_on meanwhile queues its task through
 *    the inject queue and waits for either its task or the core.
 * 2. spawn and wake on the core's thread push to the local FIFO; from any
 *    other thread they push to the inject queue and unpark the driver.
 *    A task from the inject queue joins the owned list when the core first
 *    takes it, so the owned list needs no lock.
 * 3. Each tick runs one task: every global_queue_interval ticks the inject
 *    queue goes first (fairness); every event_interval ticks the drivers
 *    are polled without blocking, so timers fire under load; with nothing
 *    to run the thread parks in the drivers until a timer, an event or an
 *    unpark.
 * 4. Shutdown takes the core, closes the inject queue and the owned list,
 *    then cancels owned tasks and drains both queues until all three stay
 *    empty: drop functions may wake or spawn (D2). */
#include <sched.h>

#include "internal.h"

typedef struct treadle__ct_s {
  treadle__sched_t base;

  /* Owned by the thread holding the core. */
  treadle__task_t *head; /* run queue, FIFO through task->next */
  treadle__task_t *tail;
  treadle__list_t owned; /* every bound, unfinished task */
  unsigned until_global; /* ticks until the inject queue goes first */
  bool closed;           /* shutdown began: spawns fail */

  /* Any thread. */
  treadle__inject_t inject;
  _Atomic bool core_taken;
  treadle__mutex_t waiters_mu;
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

static void runq_push(treadle__ct_t *ct, treadle__task_t *t) {
  t->next = NULL;
  if (ct->tail != NULL)
    ct->tail->next = t;
  else
    ct->head = t;
  ct->tail = t;
}

static treadle__task_t *runq_pop(treadle__ct_t *ct) {
  treadle__task_t *t = ct->head;
  if (t != NULL) {
    ct->head = t->next;
    if (ct->head == NULL)
      ct->tail = NULL;
  }
  return t;
}

static void bind(treadle__ct_t *ct, treadle__task_t *t) {
  t->owned_state = TREADLE__BOUND;
  treadle__list_push_back(&ct->owned, &t->owned);
}

static treadle__task_t *inject_pop(treadle__ct_t *ct) {
  treadle__task_t *t = treadle__inject_pop(&ct->inject);
  if (t != NULL && t->owned_state == TREADLE__UNBOUND && !ct->closed)
    bind(ct, t);
  return t;
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
  treadle__mutex_lock(&ct->waiters_mu);
  for (treadle__list_t *n = ct->waiters.next; n != &ct->waiters; n = n->next)
    treadle_wake_by_ref(
        &treadle__container_of(n, core_waiter_t, node)->parker->waker);
  treadle__mutex_unlock(&ct->waiters_mu);
}

static treadle_err_t ct_spawn(treadle__sched_t *s, treadle__task_t *t) {
  treadle__ct_t *ct = as_ct(s);
  if (treadle__ctx.core == ct) {
    if (ct->closed)
      return TREADLE_ESHUTDOWN;
    bind(ct, t);
    runq_push(ct, t);
    return 0;
  }
  if (!treadle__inject_push(&ct->inject, t))
    return TREADLE_ESHUTDOWN;
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
  (void)s;
  switch (t->owned_state) {
  case TREADLE__BOUND:
    treadle__list_unlink(&t->owned);
    t->owned_state = TREADLE__UNLINKED;
    return 1;
  case TREADLE__UNBOUND:
    t->owned_state = TREADLE__UNLINKED;
    return 1;
  default:
    return 0;
  }
}

static treadle__task_t *next_task(treadle__ct_t *ct, unsigned interval) {
  treadle__task_t *t;
  if (--ct->until_global == 0) {
    ct->until_global = interval;
    if ((t = inject_pop(ct)) != NULL)
      return t;
  }
  if ((t = runq_pop(ct)) != NULL)
    return t;
  return inject_pop(ct);
}

/* Step 3: runs tasks until `main` completes. The caller holds the core. */
static void run_until(treadle__ct_t *ct, treadle__task_t *main) {
  treadle_handle_t *h = ct->base.handle;
  treadle__driver_t *drv = &h->driver;
  const unsigned event_interval = h->cfg.event_interval;
  const unsigned global_interval = h->cfg.global_queue_interval;
  unsigned until_event = event_interval;
  treadle__context_t saved = treadle__ctx;
  treadle__ctx.sched = &ct->base;
  treadle__ctx.core = ct;
  if (ct->until_global == 0 || ct->until_global > global_interval)
    ct->until_global = global_interval;
  /* acquire: main's output is read after this loop. */
  while (!(atomic_load_explicit(&main->state, memory_order_acquire) &
           TREADLE__COMPLETE)) {
    treadle__task_t *t = next_task(ct, global_interval);
    if (t == NULL) {
      treadle__driver_park(drv, TREADLE_FOREVER);
      until_event = event_interval;
      continue;
    }
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
    treadle__mutex_lock(&ct->waiters_mu);
    treadle__list_push_back(&ct->waiters, &w.node);
    treadle__mutex_unlock(&ct->waiters_mu);
    /* seq_cst: load core_taken after publishing ourselves (see
     * release_core). */
    if (treadle__task_join_register(main, &parker->waker) &&
        atomic_load_explicit(&ct->core_taken, memory_order_seq_cst))
      treadle__parker_park(parker);
    treadle__mutex_lock(&ct->waiters_mu);
    treadle__list_unlink(&w.node);
    treadle__mutex_unlock(&ct->waiters_mu);
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
  treadle__context_t saved = treadle__ctx;
  treadle__ctx.sched = &ct->base;
  treadle__ctx.core = ct;
  ct->closed = true;
  treadle__inject_close(&ct->inject);
  bool any;
  do {
    any = false;
    treadle__list_t *n;
    treadle__task_t *t;
    while ((n = treadle__list_pop_front(&ct->owned)) != NULL) {
      t = treadle__container_of(n, treadle__task_t, owned);
      t->owned_state = TREADLE__UNLINKED;
      treadle__task_shutdown(t);
      any = true;
    }
    while ((t = runq_pop(ct)) != NULL) {
      treadle__task_shutdown(t);
      any = true;
    }
    while ((t = inject_pop(ct)) != NULL) {
      treadle__task_shutdown(t);
      any = true;
    }
  } while (any);
  treadle__ctx = saved;
  release_core(ct);
  return 0;
}

static void ct_free(treadle__sched_t *s) {
  treadle__ct_t *ct = as_ct(s);
  treadle__inject_destroy(&ct->inject);
  treadle__mutex_destroy(&ct->waiters_mu);
  treadle__free(ct);
}

static const treadle__sched_vtable_t ct_vtable = {
    .spawn = ct_spawn,
    .schedule = ct_schedule,
    .release = ct_release,
    .block_on = ct_block_on,
    .shutdown = ct_shutdown,
    .free = ct_free,
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
  treadle__mutex_init(&ct->waiters_mu);
  treadle__list_init(&ct->waiters);
  *out = &ct->base;
  return 0;
}
