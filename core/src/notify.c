/* Notify (tokio::sync::Notify): tasks wait on a treadle_waiter_t until
 * notified; the wait queue and waiter protocol are waitq.c's.
 *
 * 1. Everything is guarded by q.mu: the FIFO of waiters and the stored
 *    permit. A waiter's state follows waitq.c step 2: DONE when
 *    notify_one picked it, DONE_ALL when notify_waiters did.
 * 2. notify_one wakes the head waiter; with none queued it sets `permit`
 *    (a flag: permits do not accumulate). A poll of an IDLE waiter
 *    consumes the permit and is READY at once.
 * 3. notify_waiters wakes the waiters queued when it is called, and only
 *    those: it moves the whole queue to a list on its own stack, then
 *    finishes them TREADLE__WAKE_BATCH at a time, unlocking between
 *    batches to wake them. A waiter on that list stays WAITING until its
 *    turn: its owner may poll it (new waker) or drop it (unlink, under
 *    q.mu) meanwhile. Waiters that queue meanwhile wait for the next
 *    notification. It stores no permit.
 * 4. A waiter dropped in state DONE passes its notification on as a
 *    notify_one would (tokio's Notified drop); DONE_ALL passes nothing. */
#include "waitq.h"

struct treadle_notify_s {
  treadle__waitq_t q; /* first: see treadle__waitq_t */
  bool permit;        /* a stored notify_one; guarded by q.mu */
};

_Static_assert(offsetof(struct treadle_notify_s, q) == 0,
               "the wait queue must come first");

treadle_err_t treadle_notify_new(treadle_notify_t **out) {
  if (out == NULL)
    return TREADLE_EINVAL;
  *out = NULL;
  treadle_notify_t *n = treadle__malloc(sizeof *n);
  if (n == NULL)
    return TREADLE_ENOMEM;
  treadle__waitq_init(&n->q, TREADLE__WAITQ_NOTIFY);
  n->permit = false;
  *out = n;
  return 0;
}

treadle_notify_t *treadle_notify_ref(treadle_notify_t *n) {
  if (n != NULL)
    treadle__waitq_ref(&n->q);
  return n;
}

void treadle_notify_unref(treadle_notify_t *n) {
  if (n != NULL)
    treadle__waitq_unref(&n->q);
}

/* Step 2, with q.mu held. */
static void notify_locked(treadle_notify_t *n, treadle__wakelist_t *wl) {
  treadle__list_t *node = treadle__list_pop_front(&n->q.waiters);
  if (node == NULL) {
    n->permit = true;
    return;
  }
  treadle__waiter_t *w = treadle__container_of(node, treadle__waiter_t, node);
  treadle__wakelist_push(wl, w->waker);
  w->waker = NULL;
  treadle__waiter_finish(w, TREADLE__W_DONE);
}

void treadle__notify_pass_on(treadle__waitq_t *q, treadle__wakelist_t *wl) {
  notify_locked((treadle_notify_t *)q, wl);
}

void treadle_notify_one(treadle_notify_t *n) {
  if (n == NULL)
    return;
  treadle__wakelist_t wl = {.n = 0};
  treadle__os_mutex_lock(&n->q.mu);
  notify_locked(n, &wl);
  treadle__os_mutex_unlock(&n->q.mu);
  treadle__wakelist_wake(&wl);
}

void treadle_notify_waiters(treadle_notify_t *n) {
  if (n == NULL)
    return;
  treadle__list_t batch; /* step 3: guarded by q.mu like the queue */
  treadle__list_init(&batch);
  treadle__os_mutex_lock(&n->q.mu);
  treadle__list_move_all(&n->q.waiters, &batch);
  for (;;) {
    treadle__wakelist_t wl = {.n = 0};
    treadle__list_t *node;
    while (!treadle__wakelist_full(&wl) &&
           (node = treadle__list_pop_front(&batch)) != NULL) {
      treadle__waiter_t *w =
          treadle__container_of(node, treadle__waiter_t, node);
      treadle__wakelist_push(&wl, w->waker);
      w->waker = NULL;
      treadle__waiter_finish(w, TREADLE__W_DONE_ALL);
    }
    bool more = !treadle__list_empty(&batch);
    treadle__os_mutex_unlock(&n->q.mu);
    treadle__wakelist_wake(&wl);
    if (!more)
      return;
    treadle__os_mutex_lock(&n->q.mu);
  }
}

treadle_poll_t treadle_notify_poll(treadle_notify_t *n, treadle_cx_t *cx,
                                   treadle_waiter_t *wp) {
  if (n == NULL || cx == NULL || wp == NULL)
    return TREADLE_READY; /* nothing to wait for; never hang on bad input */
  treadle__waiter_t *w = treadle__as_waiter(wp);
  /* acquire: pairs with treadle__waiter_finish (waitq.c step 2). */
  uint64_t st = atomic_load_explicit(&w->state, memory_order_acquire);
  if ((st & TREADLE__W_MASK) == TREADLE__W_IDLE) {
    treadle__os_mutex_lock(&n->q.mu);
    if (n->permit) {
      bool go = treadle_cx_poll_proceed(cx); /* else keep it: yield */
      if (go)
        n->permit = false;
      treadle__os_mutex_unlock(&n->q.mu);
      return go ? TREADLE_READY : TREADLE_PENDING;
    }
    treadle__waiter_enqueue(&n->q, w, cx, TREADLE__W_WAITING);
    treadle__os_mutex_unlock(&n->q.mu);
    treadle__sync_waits_on(cx, TREADLE__WAIT_NOTIFY);
    return TREADLE_PENDING;
  }
  if ((st & TREADLE__W_MASK) == TREADLE__W_WAITING) {
    treadle__waitq_t *q = w->q;
    treadle__os_mutex_lock(&q->mu);
    st = atomic_load_explicit(&w->state, memory_order_relaxed);
    if ((st & TREADLE__W_MASK) == TREADLE__W_WAITING) {
      treadle_waker_t *old = treadle__waiter_rewake(w, cx);
      treadle__os_mutex_unlock(&q->mu);
      treadle_waker_drop(old);
      treadle__sync_waits_on(cx, TREADLE__WAIT_NOTIFY);
      return TREADLE_PENDING;
    }
    treadle__os_mutex_unlock(&q->mu); /* notified meanwhile */
  }
  /* DONE or DONE_ALL. */
  if (!treadle_cx_poll_proceed(cx))
    return TREADLE_PENDING; /* still notified; a drop now passes it on */
  treadle__waitq_t *q = w->q;
  w->q = NULL;
  /* Relaxed: off every queue; only the owner looks at it now. */
  atomic_store_explicit(&w->state, TREADLE__W_IDLE, memory_order_relaxed);
  treadle__waitq_unref(q);
  return TREADLE_READY;
}
