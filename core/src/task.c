/* Tasks: one allocation, one atomic state word, poll / complete / cancel,
 * and the join handle.
 *
 * The state word (internal.h) follows tokio's task/state.rs. Transitions:
 *
 * 1. Spawn: NOTIFIED | JOIN_INTEREST?, refs = owned + run queue (+ join
 *    handle). The task is queued.
 * 2. Run (treadle__task_run): NOTIFIED -> RUNNING; the run queue's
 *    reference becomes the poller's. A task that is already RUNNING or
 *    COMPLETE (shutdown claimed it) just drops that reference. CANCELLED
 *    means: drop the state without polling.
 * 3. After PENDING: the task joins its scheduler's owned list if it never
 *    waited before (it is cancelled instead once the runtime shuts down),
 *    then RUNNING -> idle. If NOTIFIED was set meanwhile (a wake during the
 *    poll, or treadle_cx_yield) the poller's reference goes back to the run
 *    queue; otherwise it is dropped. CANCELLED: drop the state.
 * 4. After READY (or on cancel): the state is dropped and the output
 *    stored, then RUNNING -> COMPLETE in one atomic add (acq_rel, so the
 *    joiner that sees COMPLETE sees the output). The completer then wakes
 *    the join waker, unlinks the task from its owned list and drops the
 *    poller's and the owned list's references.
 * 5. Wake: idle -> NOTIFIED + queue, with a new reference for the queue
 *    (the waker keeps its own until the queueing is done: the task may run
 *    and finish meanwhile); RUNNING -> set NOTIFIED (the poller requeues);
 *    NOTIFIED or COMPLETE -> nothing.
 * 6. Abort: sets CANCELLED, and NOTIFIED + queues the task when idle, so
 *    that the scheduler drops it at its next look (step 2 or 3).
 * 7. Shutdown: sets CANCELLED, and RUNNING when nobody polls it, which
 *    gives the shutdown thread the right to drop the state (step 4).
 *
 * JOIN_WAKER protocol (tokio harness.rs can_read_output): the join side
 * writes join_waker only while JOIN_WAKER is clear and the task is not
 * COMPLETE, then sets JOIN_WAKER with a release CAS that fails once
 * COMPLETE is set. The completer, having seen JOIN_WAKER, wakes it and
 * clears the bit; whichever of completer and join handle goes last drops
 * the waker, so a waker never outlives its owner and a join-waker cycle
 * never leaks (tokio #4724). */
#include <stdio.h>

#include "internal.h"

#define RUNNING TREADLE__RUNNING
#define COMPLETE TREADLE__COMPLETE
#define NOTIFIED TREADLE__NOTIFIED
#define JOIN_INTEREST TREADLE__JOIN_INTEREST
#define JOIN_WAKER TREADLE__JOIN_WAKER
#define CANCELLED TREADLE__CANCELLED
#define REF_ONE TREADLE__REF_ONE

static uint64_t refcount(uint64_t state) {
  return state >> TREADLE__REF_SHIFT;
}

static bool cas(treadle__task_t *t, uint64_t *cur, uint64_t next,
                memory_order success) {
  return atomic_compare_exchange_weak_explicit(&t->state, cur, next, success,
                                               memory_order_relaxed);
}

/* Ids come from a process-wide counter, 1024 at a time per thread, so that
 * spawning does not contend on one cache line. */
static _Atomic uint64_t id_blocks = 1;
static __thread uint64_t id_next, id_end;

uint64_t treadle__task_next_id(void) {
  if (treadle__unlikely(id_next == id_end)) {
    /* Relaxed: only uniqueness matters, and the RMW gives that. */
    id_next =
        atomic_fetch_add_explicit(&id_blocks, 1024, memory_order_relaxed);
    id_end = id_next + 1024;
  }
  return id_next++;
}

treadle_err_t treadle__task_new(treadle__sched_t *s,
                                const treadle_task_vtable_t *vt,
                                const void *state, size_t state_size,
                                bool join, treadle__task_t **out) {
  uint8_t size_class;
  treadle__task_t *t =
      treadle__task_alloc(TREADLE__TASK_HEADER + state_size, &size_class);
  if (t == NULL)
    return TREADLE_ENOMEM;
  t->size_class = size_class;
  uint64_t refs = join ? 3 : 2;
  t->waker.vtable = &treadle__task_waker_vtable;
  atomic_init(&t->state,
              NOTIFIED | (join ? JOIN_INTEREST : 0) | refs * REF_ONE);
  t->vt = vt;
  t->sched = s;
  t->next = NULL;
  treadle__list_init(&t->owned);
  t->join_waker = NULL;
  t->out_value = NULL;
  t->out_err = 0;
  t->output_taken = 0;
  atomic_init(&t->owned_state, TREADLE__UNBOUND);
  atomic_init(&t->waits_on, TREADLE__WAIT_NONE);
  t->id = treadle__task_next_id();
  t->pinned = 0;
  t->name = NULL;
  if (state_size > 0) {
    if (state != NULL)
      memcpy(treadle__task_state(t), state, state_size);
    else
      memset(treadle__task_state(t), 0, state_size);
  }
  treadle__handle_ref_task(s->handle);
  *out = t;
  return 0;
}

static void dealloc(treadle__task_t *t) {
  treadle_handle_t *h = t->sched->handle;
  if (t->join_waker != NULL)
    treadle_waker_drop(t->join_waker);
  treadle__free(t->name);
  treadle__task_free(t, t->size_class);
  treadle__handle_unref_task(h);
}

void treadle__task_discard(treadle__task_t *t) { dealloc(t); }

void treadle__task_unref(treadle__task_t *t) {
  /* acq_rel: release this owner's writes; acquire everyone's before free. */
  uint64_t prev =
      atomic_fetch_sub_explicit(&t->state, REF_ONE, memory_order_acq_rel);
  TREADLE_ASSERT(refcount(prev) >= 1);
  if (refcount(prev) == 1)
    dealloc(t);
}

static void unref_n(treadle__task_t *t, uint64_t n) {
  /* acq_rel: as treadle__task_unref. */
  uint64_t prev = atomic_fetch_sub_explicit(&t->state, n * REF_ONE,
                                            memory_order_acq_rel);
  TREADLE_ASSERT(refcount(prev) >= n);
  if (refcount(prev) == n)
    dealloc(t);
}

/* Drops an output that no joiner will read: reports a failure once, then
 * frees the value. Called by exactly one of completer and join handle. */
static void drop_output(treadle__task_t *t) {
  if (t->out_err != 0 && t->out_err != TREADLE_ECANCELED)
    treadle__handle_report_error(t->sched->handle, t);
  if (t->out_value != NULL && t->vt->drop_output != NULL)
    t->vt->drop_output(t->out_value);
  t->out_value = NULL;
}

static void drop_state(treadle__task_t *t) {
  if (t->vt->drop != NULL)
    t->vt->drop(treadle__task_state(t));
}

/* Step 4. The caller holds RUNNING and one reference (the poller's). */
static void complete(treadle__task_t *t) {
  /* acq_rel: release publishes the output to the joiner; acquire makes the
   * join side's join_waker store (released with JOIN_WAKER) visible. */
  uint64_t prev = atomic_fetch_add_explicit(&t->state, COMPLETE - RUNNING,
                                            memory_order_acq_rel);
  TREADLE_ASSERT((prev & (RUNNING | COMPLETE)) == RUNNING);
  if (!(prev & JOIN_INTEREST)) {
    drop_output(t);
  } else if (prev & JOIN_WAKER) {
    treadle_wake_by_ref(t->join_waker);
    /* After COMPLETE only the completer clears JOIN_WAKER, so a subtract is
     * exact. acq_rel: release our last read of join_waker to the join
     * handle; acquire its JOIN_INTEREST clear if it already went. */
    uint64_t now = atomic_fetch_sub_explicit(&t->state, JOIN_WAKER,
                                             memory_order_acq_rel);
    if (!(now & JOIN_INTEREST)) {
      treadle_waker_drop(t->join_waker);
      t->join_waker = NULL;
    }
  }
  int released = t->sched->vt->release(t->sched, t);
  unref_n(t, 1 + (uint64_t)released);
}

static void cancel_and_complete(treadle__task_t *t) {
  drop_state(t);
  t->out_err = TREADLE_ECANCELED;
  t->out_value = NULL;
  complete(t);
}

/* The debug option treadle_builder_warn_slow_polls. */
static void warn_if_slow(treadle__task_t *t, uint64_t took, uint64_t limit) {
  if (took <= limit)
    return;
  fprintf(stderr,
          "treadle: task %llu%s%s%s took %.1f ms in one poll (over %.1f ms):"
          " it blocks its worker\n",
          (unsigned long long)t->id, t->name ? " '" : "",
          t->name ? t->name : "", t->name ? "'" : "", (double)took / 1e6,
          (double)limit / 1e6);
}

void treadle__task_run(treadle__task_t *t) {
  uint64_t cur = atomic_load_explicit(&t->state, memory_order_relaxed);
  uint64_t next;
  /* Step 2. */
  do {
    if (cur & (RUNNING | COMPLETE)) {
      /* Shutdown claimed it while it sat in the queue. */
      treadle__task_unref(t);
      return;
    }
    TREADLE_ASSERT(cur & NOTIFIED);
    next = (cur | RUNNING) & ~NOTIFIED;
    /* acquire: see what the previous poll and the waker wrote. */
  } while (!cas(t, &cur, next, memory_order_acquire));
  if (next & CANCELLED) {
    cancel_and_complete(t);
    return;
  }

  treadle_cx_t cx = {.task = t, .budget = TREADLE__BUDGET, .yielded = false};
  treadle__task_waits_on(t, TREADLE__WAIT_NONE); /* leaves say what they wait on */
  treadle__task_t *outer = treadle__ctx.task;
  treadle__ctx.task = t;
  const uint64_t slow = t->sched->handle->cfg.slow_poll_ns;
  uint64_t t0 = slow != 0 ? treadle__now() : 0;
  treadle_poll_t r = t->vt->poll(&cx, treadle__task_state(t));
  if (slow != 0)
    warn_if_slow(t, treadle__now() - t0, slow);
  treadle__ctx.task = outer;
  if (r == TREADLE_READY) {
    drop_state(t); /* the output stays where treadle_cx_set_output put it */
    complete(t);
    return;
  }
  /* An output set by a poll that then returned PENDING is not an output. */
  t->out_value = NULL;
  t->out_err = 0;
  /* About to wait: shutdown must be able to find it (internal.h). A
   * yielding task goes back to a queue instead. */
  if (!cx.yielded &&
      atomic_load_explicit(&t->owned_state, memory_order_relaxed) ==
          TREADLE__UNBOUND &&
      !t->sched->vt->bind(t->sched, t)) {
    cancel_and_complete(t);
    return;
  }

  /* Step 3. */
  cur = atomic_load_explicit(&t->state, memory_order_relaxed);
  do {
    if (cur & CANCELLED) {
      cancel_and_complete(t);
      return;
    }
    next = cur & ~RUNNING;
    if (cx.yielded)
      next |= NOTIFIED;
    if (!(next & NOTIFIED))
      next -= REF_ONE;
    /* acq_rel: release this poll's writes to the next poller; acquire in
     * case ours was the last reference. */
  } while (!cas(t, &cur, next, memory_order_acq_rel));
  if (next & NOTIFIED)
    t->sched->vt->schedule(t->sched, t, true);
  else if (refcount(next) == 0)
    dealloc(t);
}

void treadle__task_shutdown(treadle__task_t *t) {
  uint64_t cur = atomic_load_explicit(&t->state, memory_order_relaxed);
  uint64_t next;
  do {
    next = cur | CANCELLED;
    if (!(cur & (RUNNING | COMPLETE)))
      next |= RUNNING;
    /* acquire: we may drop the state the last poll wrote. */
  } while (!cas(t, &cur, next, memory_order_acq_rel));
  if (cur & (RUNNING | COMPLETE)) {
    /* Running elsewhere (it will see CANCELLED) or already done. */
    treadle__task_unref(t);
    return;
  }
  cancel_and_complete(t);
}

/* ------------------------------------------------------------- wakers */

static treadle_waker_t *task_waker_clone(treadle_waker_t *w) {
  treadle__task_t *t = (treadle__task_t *)w;
  /* Relaxed: a new reference is made from one the caller holds (as
   * Arc::clone); no data is published by it. */
  atomic_fetch_add_explicit(&t->state, REF_ONE, memory_order_relaxed);
  return w;
}

static void task_wake(treadle_waker_t *w) {
  treadle__task_t *t = (treadle__task_t *)w;
  uint64_t cur = atomic_load_explicit(&t->state, memory_order_relaxed);
  uint64_t next;
  enum { NOTHING, SUBMIT, DEALLOC } action;
  do {
    if (cur & RUNNING) {
      next = (cur | NOTIFIED) - REF_ONE; /* the poller requeues it */
      action = NOTHING;
    } else if (cur & (COMPLETE | NOTIFIED)) {
      next = cur - REF_ONE;
      action = refcount(next) == 0 ? DEALLOC : NOTHING;
    } else {
      /* A new reference for the queue: ours keeps the task (and so its
       * runtime) alive until schedule returns, for the task may run and
       * finish on a worker before then (tokio does the same). */
      next = (cur | NOTIFIED) + REF_ONE;
      action = SUBMIT;
    }
    /* acq_rel: release what the waker wrote to the next poll; acquire in
     * case we free. */
  } while (!cas(t, &cur, next, memory_order_acq_rel));
  if (action == SUBMIT) {
    t->sched->vt->schedule(t->sched, t, false);
    treadle__task_unref(t);
  } else if (action == DEALLOC) {
    dealloc(t);
  }
}

static void task_wake_by_ref(treadle_waker_t *w) {
  treadle__task_t *t = (treadle__task_t *)w;
  uint64_t cur = atomic_load_explicit(&t->state, memory_order_relaxed);
  uint64_t next;
  bool submit;
  do {
    if (cur & (COMPLETE | NOTIFIED))
      return;
    if (cur & RUNNING) {
      next = cur | NOTIFIED;
      submit = false;
    } else {
      next = (cur | NOTIFIED) + REF_ONE;
      submit = true;
    }
    /* acq_rel: release what the waker wrote to the next poll; acquire what
     * the last poller's worker did with the task (its queue link) before we
     * queue it. */
  } while (!cas(t, &cur, next, memory_order_acq_rel));
  if (submit)
    t->sched->vt->schedule(t->sched, t, false);
}

static void task_waker_drop(treadle_waker_t *w) {
  treadle__task_unref((treadle__task_t *)w);
}

const treadle_waker_vtable_t treadle__task_waker_vtable = {
    .clone = task_waker_clone,
    .wake = task_wake,
    .wake_by_ref = task_wake_by_ref,
    .drop = task_waker_drop,
};

/* ----------------------------------------------------------------- cx */

treadle_waker_t *treadle_cx_waker(treadle_cx_t *cx) {
  return cx != NULL ? &cx->task->waker : NULL;
}

void treadle_cx_yield(treadle_cx_t *cx) {
  if (cx != NULL) {
    cx->yielded = true;
    treadle__task_waits_on(cx->task, TREADLE__WAIT_YIELD);
  }
}

treadle_handle_t *treadle_cx_handle(treadle_cx_t *cx) {
  return cx != NULL ? cx->task->sched->handle : NULL;
}

uint64_t treadle_cx_task_id(treadle_cx_t *cx) {
  return cx != NULL ? cx->task->id : 0;
}

int treadle_cx_worker(treadle_cx_t *cx) {
  return cx != NULL && treadle__ctx.sched != NULL ? treadle__ctx.worker : -1;
}

void treadle_cx_set_output(treadle_cx_t *cx, treadle_err_t status,
                           void *value) {
  if (cx == NULL)
    return;
  cx->task->out_err = status;
  cx->task->out_value = value;
}

bool treadle_cx_poll_proceed(treadle_cx_t *cx) {
  if (cx == NULL)
    return true;
  if (cx->budget == 0) {
    cx->yielded = true;
    return false;
  }
  cx->budget--;
  return true;
}

/* --------------------------------------------------------- join handles */

/* Registers `w` to be woken at completion. False once the task is
 * COMPLETE (the output can be read now). */
bool treadle__task_join_register(treadle__task_t *t, treadle_waker_t *w) {
  /* acquire: if COMPLETE, the output is visible. */
  uint64_t cur = atomic_load_explicit(&t->state, memory_order_acquire);
  if (cur & COMPLETE)
    return false;
  if (cur & JOIN_WAKER) {
    if (t->join_waker == w)
      return true;
    /* Take the old waker back before storing the new one. */
    do {
      if (cur & COMPLETE)
        return false;
      /* acq_rel: acquire as above; release nothing new (symmetry). */
    } while (!cas(t, &cur, cur & ~JOIN_WAKER, memory_order_acq_rel));
    treadle_waker_drop(t->join_waker);
    t->join_waker = NULL;
  }
  t->join_waker = treadle_waker_clone(w);
  cur = atomic_load_explicit(&t->state, memory_order_relaxed);
  do {
    if (cur & COMPLETE) {
      treadle_waker_drop(t->join_waker);
      t->join_waker = NULL;
      /* acquire: pairs with the completer's release; the output is
       * visible. */
      (void)atomic_load_explicit(&t->state, memory_order_acquire);
      return false;
    }
    /* acq_rel: release publishes join_waker to the completer. */
  } while (!cas(t, &cur, cur | JOIN_WAKER, memory_order_acq_rel));
  return true;
}

static treadle_err_t take_output(treadle__task_t *t, void **value) {
  treadle_err_t status = t->out_err;
  if (value != NULL) {
    *value = t->out_value;
  } else if (t->out_value != NULL && t->vt->drop_output != NULL) {
    t->vt->drop_output(t->out_value);
  }
  t->out_value = NULL;
  t->output_taken = 1;
  return status;
}

treadle_poll_t treadle_join_poll(treadle_join_t *j, treadle_cx_t *cx,
                                 treadle_err_t *status, void **value) {
  treadle__task_t *t = (treadle__task_t *)j;
  treadle_err_t ignored;
  if (status == NULL)
    status = &ignored;
  if (value != NULL)
    *value = NULL;
  if (t == NULL || cx == NULL) {
    *status = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  if (t->output_taken) {
    *status = TREADLE_EJOINED;
    return TREADLE_READY;
  }
  if (treadle__task_join_register(t, &cx->task->waker)) {
    treadle__task_waits_on(cx->task, TREADLE__WAIT_JOIN);
    return TREADLE_PENDING;
  }
  if (!treadle_cx_poll_proceed(cx))
    return TREADLE_PENDING;
  *status = take_output(t, value);
  return TREADLE_READY;
}

treadle_err_t treadle_join_try(treadle_join_t *j, void **value) {
  treadle__task_t *t = (treadle__task_t *)j;
  if (value != NULL)
    *value = NULL;
  if (t == NULL)
    return TREADLE_EINVAL;
  if (t->output_taken)
    return TREADLE_EJOINED;
  if (!(atomic_load_explicit(&t->state, memory_order_acquire) & COMPLETE))
    return TREADLE_EAGAIN;
  return take_output(t, value); /* acquire above: output visible */
}

treadle_err_t treadle_join_wait_timeout(treadle_join_t *j, uint64_t timeout_ns,
                                        void **value) {
  treadle__task_t *t = (treadle__task_t *)j;
  if (t != NULL && treadle__ctx.sched != NULL) {
    if (value != NULL)
      *value = NULL;
    return TREADLE_EINRUNTIME;
  }
  treadle_err_t err = treadle_join_try(j, value);
  if (err != TREADLE_EAGAIN)
    return err;
  uint64_t now = treadle__now();
  uint64_t deadline =
      timeout_ns >= UINT64_MAX - now ? UINT64_MAX : now + timeout_ns;
  treadle__parker_t *p = treadle__parker_new();
  if (p == NULL)
    return TREADLE_ENOMEM;
  bool done = true;
  while (done && treadle__task_join_register(t, &p->waker))
    done = treadle__parker_park_until(p, deadline);
  /* On a timeout the task keeps a reference to the parker as its join
   * waker; a later join replaces it, and the wake of a parker that nobody
   * parks on is harmless. */
  treadle_waker_drop(&p->waker);
  return done ? take_output(t, value) : TREADLE_ETIMEDOUT;
}

treadle_err_t treadle_join_wait(treadle_join_t *j, void **value) {
  return treadle_join_wait_timeout(j, TREADLE_FOREVER, value);
}

void treadle_join_abort(treadle_join_t *j) {
  treadle__task_t *t = (treadle__task_t *)j;
  if (t == NULL)
    return;
  uint64_t cur = atomic_load_explicit(&t->state, memory_order_relaxed);
  uint64_t next;
  bool submit;
  do {
    if (cur & (COMPLETE | CANCELLED))
      return;
    next = cur | CANCELLED;
    submit = false;
    if (cur & RUNNING) {
      next |= NOTIFIED;
    } else if (!(cur & NOTIFIED)) {
      next = (next | NOTIFIED) + REF_ONE;
      submit = true;
    }
    /* acq_rel: as a wake by reference. */
  } while (!cas(t, &cur, next, memory_order_acq_rel));
  if (submit)
    t->sched->vt->schedule(t->sched, t, false);
}

bool treadle_join_is_finished(const treadle_join_t *j) {
  const treadle__task_t *t = (const treadle__task_t *)j;
  if (t == NULL)
    return false;
  /* acquire: a caller that sees true may go on to read the output. */
  return (atomic_load_explicit(&t->state, memory_order_acquire) & COMPLETE) !=
         0;
}

uint64_t treadle_join_task_id(const treadle_join_t *j) {
  return j != NULL ? ((const treadle__task_t *)j)->id : 0;
}

void treadle_join_detach(treadle_join_t *j) {
  treadle__task_t *t = (treadle__task_t *)j;
  if (t == NULL)
    return;
  uint64_t cur = atomic_load_explicit(&t->state, memory_order_relaxed);
  uint64_t next;
  do {
    next = cur & ~JOIN_INTEREST;
    if (!(cur & COMPLETE))
      next &= ~JOIN_WAKER; /* take the waker back */
    /* acq_rel: acquire the output if complete; release our join_waker
     * writes to the completer. */
  } while (!cas(t, &cur, next, memory_order_acq_rel));
  bool own_waker;
  if (cur & COMPLETE) {
    if (!t->output_taken)
      drop_output(t);
    /* JOIN_WAKER still set: the completer has not finished with it and
     * will drop it when it sees JOIN_INTEREST gone. */
    own_waker = !(cur & JOIN_WAKER);
  } else {
    own_waker = (cur & JOIN_WAKER) != 0;
  }
  if (own_waker && t->join_waker != NULL) {
    treadle_waker_drop(t->join_waker);
    t->join_waker = NULL;
  }
  treadle__task_unref(t);
}
