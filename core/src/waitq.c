/* The wait queue and the waiter that the semaphore (semaphore.c), the
 * async Mutex (mutex.c, a semaphore of one permit) and Notify (notify.c)
 * share.
 *
 * 1. A queue is the first member of the object its waiters wait on. Its
 *    count holds the users' references and one per queued or notified
 *    waiter; the last reference frees the object, whatever its kind.
 * 2. A waiter's state: IDLE -> WAITING (its owner, under q.mu: takes a q
 *    reference and a clone of the task's waker) -> DONE, DONE_ALL or
 *    CLOSED (a notifier, releaser or closer, under q.mu: unlinks it, takes
 *    its waker, then stores the state with release as its last touch) ->
 *    IDLE (the owner, when its poll returns READY or it is dropped; the q
 *    reference goes then). The owner reads the state with acquire and,
 *    while WAITING, takes q.mu before touching anything else.
 * 3. A waiter dropped before its poll saw it done hands on what it was
 *    given: a semaphore waiter its permits, all of them when DONE, the
 *    part it was given when still WAITING (semaphore.c step 2 passes them
 *    to the next waiters); a Notify waiter dropped after notify_one its
 *    notification (notify.c step 4). */
#include "waitq.h"

_Static_assert(sizeof(treadle__waiter_t) <= sizeof(treadle_waiter_t),
               "treadle_waiter_t too small");
_Static_assert(_Alignof(treadle__waiter_t) <= _Alignof(treadle_waiter_t),
               "treadle_waiter_t under-aligned");

/* --------------------------------------------------------- wait queue */

void treadle__waitq_init(treadle__waitq_t *q, treadle__waitq_kind_t kind) {
  treadle__os_mutex_init(&q->mu);
  treadle__list_init(&q->waiters);
  atomic_init(&q->refs, 1);
  q->kind = (uint8_t)kind;
}

void treadle__waitq_ref(treadle__waitq_t *q) {
  /* Relaxed: made from a reference the caller holds. */
  atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
}

void treadle__waitq_unref(treadle__waitq_t *q) {
  /* acq_rel: the last owner sees every other owner's use before free. */
  if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
    return;
  TREADLE_ASSERT(treadle__list_empty(&q->waiters)); /* each holds a ref */
  treadle__os_mutex_destroy(&q->mu);
  treadle__free(q); /* the object starts with q */
}

/* ------------------------------------------------------------- waiter */

void treadle_waiter_init(treadle_waiter_t *wp) {
  if (wp == NULL)
    return;
  treadle__waiter_t *w = treadle__as_waiter(wp);
  memset(wp, 0, sizeof *wp);
  treadle__list_init(&w->node);
  atomic_init(&w->state, TREADLE__W_IDLE);
}

void treadle__waiter_enqueue(treadle__waitq_t *q, treadle__waiter_t *w,
                             treadle_cx_t *cx, uint64_t state) {
  w->q = q;
  w->waker = treadle_waker_clone(&cx->task->waker);
  treadle__list_push_back(&q->waiters, &w->node);
  treadle__waitq_ref(q);
  /* Relaxed: any other thread reads a WAITING waiter under q->mu, which
   * we hold (step 2). */
  atomic_store_explicit(&w->state, state, memory_order_relaxed);
}

treadle_waker_t *treadle__waiter_rewake(treadle__waiter_t *w,
                                        treadle_cx_t *cx) {
  treadle_waker_t *mine = &cx->task->waker;
  if (w->waker == mine)
    return NULL;
  treadle_waker_t *old = w->waker;
  w->waker = treadle_waker_clone(mine);
  return old;
}

void treadle_waiter_drop(treadle_waiter_t *wp) {
  if (wp == NULL)
    return;
  treadle__waiter_t *w = treadle__as_waiter(wp);
  /* acquire: pairs with treadle__waiter_finish (step 2). */
  uint64_t st = atomic_load_explicit(&w->state, memory_order_acquire);
  if ((st & TREADLE__W_MASK) == TREADLE__W_IDLE)
    return;
  treadle__waitq_t *q = w->q;
  treadle_waker_t *own = NULL;
  treadle__wakelist_t wl = {.n = 0};
  uint64_t give_back = 0;
  treadle__os_mutex_lock(&q->mu);
  st = atomic_load_explicit(&w->state, memory_order_relaxed);
  switch (st & TREADLE__W_MASK) {
  case TREADLE__W_WAITING:
    treadle__list_unlink(&w->node);
    own = w->waker;
    w->waker = NULL;
    if (q->kind == TREADLE__WAITQ_SEMAPHORE)
      give_back = w->want - (st >> TREADLE__W_SHIFT); /* step 3 */
    break;
  case TREADLE__W_DONE:
    if (q->kind == TREADLE__WAITQ_SEMAPHORE)
      give_back = w->want;
    else
      treadle__notify_pass_on(q, &wl);
    break;
  default: /* DONE_ALL, CLOSED: nothing to pass on */
    break;
  }
  w->q = NULL;
  /* Relaxed: off every queue; only the owner looks at it from now on. */
  atomic_store_explicit(&w->state, TREADLE__W_IDLE, memory_order_relaxed);
  if (q->kind == TREADLE__WAITQ_SEMAPHORE)
    /* Even with nothing to give back: the queue may be empty now, and
     * SEM_QUEUED must be cleared with it (semaphore.c step 1). */
    treadle__sem_add_permits_locked((struct treadle_semaphore_s *)q, give_back);
  else
    treadle__os_mutex_unlock(&q->mu);
  treadle__wakelist_wake(&wl);
  treadle_waker_drop(own);
  treadle__waitq_unref(q);
}
