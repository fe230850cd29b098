/* Wakers: the public entry points, and the parker, a waker that unblocks
 * one OS thread (join_wait, block_on on a busy current_thread runtime).
 *
 * A task's waker is the task itself (task.c); its vtable is the task
 * waker vtable. A parker is a futex word: wake stores 1 and futex-wakes,
 * park waits until it reads 1 and resets it to 0, so a wake that comes
 * before the park is never lost. */
#include "internal.h"

treadle_waker_t *treadle_waker_clone(treadle_waker_t *w) {
  return w != NULL ? w->vtable->clone(w) : NULL;
}

void treadle_wake(treadle_waker_t *w) {
  if (w != NULL)
    w->vtable->wake(w);
}

void treadle_wake_by_ref(treadle_waker_t *w) {
  if (w != NULL)
    w->vtable->wake_by_ref(w);
}

void treadle_waker_drop(treadle_waker_t *w) {
  if (w != NULL)
    w->vtable->drop(w);
}

static treadle_waker_t *parker_clone(treadle_waker_t *w) {
  treadle__parker_t *p = (treadle__parker_t *)w;
  /* Relaxed: made from a reference the caller holds. */
  atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
  return w;
}

static void parker_drop(treadle_waker_t *w) {
  treadle__parker_t *p = (treadle__parker_t *)w;
  /* acq_rel: the last owner sees every other owner's use before free. */
  if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
    treadle__free(p);
}

static void parker_wake_by_ref(treadle_waker_t *w) {
  treadle__parker_t *p = (treadle__parker_t *)w;
  /* release: what the waker wrote is visible to the parked thread. */
  if (atomic_exchange_explicit(&p->notified, 1, memory_order_release) == 0)
    treadle__os_futex_wake(&p->notified, 1);
}

static void parker_wake(treadle_waker_t *w) {
  parker_wake_by_ref(w);
  parker_drop(w);
}

static const treadle_waker_vtable_t parker_vtable = {
    .clone = parker_clone,
    .wake = parker_wake,
    .wake_by_ref = parker_wake_by_ref,
    .drop = parker_drop,
};

treadle__parker_t *treadle__parker_new(void) {
  treadle__parker_t *p = treadle__malloc(sizeof *p);
  if (p == NULL)
    return NULL;
  p->waker.vtable = &parker_vtable;
  atomic_init(&p->refs, 1);
  atomic_init(&p->notified, 0);
  return p;
}

void treadle__parker_park(treadle__parker_t *p) {
  treadle__parker_park_until(p, UINT64_MAX);
}

bool treadle__parker_park_until(treadle__parker_t *p, uint64_t deadline_ns) {
  /* acquire: pairs with the waker's release. */
  while (atomic_exchange_explicit(&p->notified, 0, memory_order_acquire) ==
         0) {
    if (deadline_ns != UINT64_MAX && treadle__now() >= deadline_ns)
      return false;
    treadle__os_futex_wait_until(&p->notified, 0, deadline_ns);
  }
  return true;
}
