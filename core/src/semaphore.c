/* The batch semaphore (tokio's batch_semaphore), which the async Mutex
 * (mutex.c) is built on; its wait queue and waiters are waitq.c's.
 *
 * 1. `permits` holds the permits nobody has been given, shifted left two,
 *    with SEM_CLOSED in bit 0 and SEM_QUEUED in bit 1. Acquirers take
 *    from it by CAS, with or without q.mu. QUEUED is set, by the CAS of
 *    the acquirer that queues, and cleared, once the queue is empty, only
 *    under q.mu. A release adds by CAS without q.mu while QUEUED is clear
 *    (nobody to hand permits to), and under q.mu otherwise.
 * 2. Fairness: returned permits go to the queued waiters first, in FIFO
 *    order, the head taking all it can even when that is not yet enough;
 *    only what is left once the queue is empty goes back to `permits`.
 *    So `permits` is nonzero only while no waiter is queued, and a CAS
 *    that takes from it never overtakes a waiter (a big waiter is not
 *    starved by small ones).
 * 3. An acquirer that finds too few permits takes what there is, under
 *    q.mu, and queues for the rest: its state word holds the count it
 *    still needs, `want` the count it asked for.
 * 4. A waiter's state moves as waitq.c step 2 says: a releaser makes it
 *    DONE once all its permits are assigned, a closer CLOSED, each under
 *    q.mu with a release store as its last touch. The owner reads the
 *    state with acquire and, while WAITING, takes q.mu before touching
 *    anything else.
 * 5. A waiter dropped while WAITING returns the permits it was partly
 *    given; one dropped while DONE returns all it was given (waitq.c step
 *    3; step 2 hands them on).
 * 6. Wakers are collected under q.mu and woken once it is released,
 *    TREADLE__WAKE_BATCH at a time: a release that completes many waiters
 *    unlocks between batches, holding the permits not yet handed out. */
#include "waitq.h"

_Static_assert(offsetof(struct treadle_semaphore_s, q) == 0,
               "the wait queue must come first");
_Static_assert(offsetof(struct treadle_mutex_s, sem) == 0,
               "the semaphore must come first");

#define MAX_PERMITS TREADLE_SEMAPHORE_MAX_PERMITS
#define CLOSED TREADLE__SEM_CLOSED
#define QUEUED TREADLE__SEM_QUEUED
#define SHIFT TREADLE__SEM_SHIFT

/* ---------------------------------------------------------- semaphore */

void treadle__sem_init(struct treadle_semaphore_s *s, size_t permits) {
  treadle__waitq_init(&s->q, TREADLE__WAITQ_SEMAPHORE);
  atomic_init(&s->permits, permits << SHIFT);
}

void treadle__sem_add_permits_locked(struct treadle_semaphore_s *s,
                                     uint64_t n) {
  treadle__wakelist_t wl = {.n = 0};
  for (;;) {
    treadle__list_t *node;
    while (n > 0 && !treadle__wakelist_full(&wl) &&
           (node = s->q.waiters.next) != &s->q.waiters) {
      treadle__waiter_t *w =
          treadle__container_of(node, treadle__waiter_t, node);
      uint64_t st = atomic_load_explicit(&w->state, memory_order_relaxed);
      uint64_t needed = st >> TREADLE__W_SHIFT;
      if (n < needed) {
        /* Relaxed: a WAITING waiter is read under q.mu (step 4). */
        atomic_store_explicit(
            &w->state, (needed - n) << TREADLE__W_SHIFT | TREADLE__W_WAITING,
            memory_order_relaxed);
        n = 0;
        break;
      }
      n -= needed;
      treadle__list_unlink(node);
      treadle__wakelist_push(&wl, w->waker);
      w->waker = NULL;
      treadle__waiter_finish(w, TREADLE__W_DONE);
    }
    if (treadle__list_empty(&s->q.waiters)) {
      /* Relaxed: QUEUED changes under q.mu only, which we hold. */
      size_t queued =
          atomic_load_explicit(&s->permits, memory_order_relaxed) & QUEUED;
      /* release: the permits carry what the releaser did to the acquirer
       * that takes them (a Mutex's critical section). Clears QUEUED in
       * the same step (subtracting a set bit). */
      if (n > 0 || queued != 0)
        atomic_fetch_add_explicit(&s->permits, ((size_t)n << SHIFT) - queued,
                                  memory_order_release);
      n = 0;
    }
    treadle__os_mutex_unlock(&s->q.mu);
    treadle__wakelist_wake(&wl);
    if (n == 0)
      return;
    treadle__os_mutex_lock(&s->q.mu);
  }
}

treadle_err_t treadle__sem_try_acquire(struct treadle_semaphore_s *s,
                                       size_t n) {
  size_t need = n << SHIFT;
  size_t cur = atomic_load_explicit(&s->permits, memory_order_relaxed);
  do {
    if (cur & CLOSED)
      return TREADLE_ECLOSED;
    if (cur < need)
      return TREADLE_EAGAIN; /* too few, or waiters queued (step 2) */
    /* acquire: pairs with treadle__sem_add_permits_locked's release. */
  } while (!atomic_compare_exchange_weak_explicit(&s->permits, &cur, cur - need,
                                                  memory_order_acquire,
                                                  memory_order_relaxed));
  return 0;
}

/* The end of a wait: DONE or CLOSED seen by the owner (step 4). */
static treadle_poll_t acquire_finish(treadle__waiter_t *w, treadle_cx_t *cx,
                                     uint64_t st, treadle_err_t *err) {
  bool done = (st & TREADLE__W_MASK) == TREADLE__W_DONE;
  if (done && !treadle_cx_poll_proceed(cx))
    return TREADLE_PENDING; /* keeps the permits; polled again soon */
  treadle__waitq_t *q = w->q;
  w->q = NULL;
  /* Relaxed: off every queue; only the owner looks at it now. */
  atomic_store_explicit(&w->state, TREADLE__W_IDLE, memory_order_relaxed);
  treadle__waitq_unref(q);
  *err = done ? 0 : TREADLE_ECLOSED;
  return TREADLE_READY;
}

/* An IDLE waiter asks for n permits: take them all, or queue (step 3). */
static treadle_poll_t acquire_idle(struct treadle_semaphore_s *s,
                                   treadle_cx_t *cx, treadle__waiter_t *w,
                                   size_t n, int wait, treadle_err_t *err) {
  size_t need = n << SHIFT;
  size_t cur = atomic_load_explicit(&s->permits, memory_order_relaxed);
  bool spent = false;
  /* Fast path, no lock: enough permits, hence nobody queued (step 2). */
  while (!(cur & CLOSED) && cur >= need) {
    if (!spent && !treadle_cx_poll_proceed(cx))
      return TREADLE_PENDING;
    spent = true;
    /* acquire: pairs with treadle__sem_add_permits_locked's release. */
    if (atomic_compare_exchange_weak_explicit(&s->permits, &cur, cur - need,
                                              memory_order_acquire,
                                              memory_order_relaxed)) {
      *err = 0;
      return TREADLE_READY;
    }
  }
  if (cur & CLOSED) {
    *err = TREADLE_ECLOSED;
    return TREADLE_READY;
  }
  treadle__os_mutex_lock(&s->q.mu);
  cur = atomic_load_explicit(&s->permits, memory_order_relaxed);
  for (;;) {
    if (cur & CLOSED) {
      treadle__os_mutex_unlock(&s->q.mu);
      *err = TREADLE_ECLOSED;
      return TREADLE_READY;
    }
    size_t avail = cur & ~QUEUED; /* CLOSED is clear here */
    size_t take = avail >= need ? need : avail;
    if (take == need && !spent) {
      if (!treadle_cx_poll_proceed(cx)) {
        treadle__os_mutex_unlock(&s->q.mu);
        return TREADLE_PENDING;
      }
      spent = true;
    }
    /* acquire: pairs with the releases' release. One that queues sets
     * QUEUED in the same step, so no release adds without q.mu after. */
    if (atomic_compare_exchange_weak_explicit(
            &s->permits, &cur, (cur - take) | (take < need ? QUEUED : 0),
            memory_order_acquire, memory_order_relaxed))
      break;
  }
  size_t avail = cur & ~QUEUED;
  size_t taken = (avail >= need ? need : avail) >> SHIFT;
  if (taken == n) {
    treadle__os_mutex_unlock(&s->q.mu);
    *err = 0;
    return TREADLE_READY;
  }
  w->want = n;
  treadle__waiter_enqueue(&s->q, w, cx,
                          (uint64_t)(n - taken) << TREADLE__W_SHIFT |
                              TREADLE__W_WAITING);
  treadle__os_mutex_unlock(&s->q.mu);
  treadle__sync_waits_on(cx, wait);
  return TREADLE_PENDING;
}

treadle_poll_t treadle__sem_acquire_poll(struct treadle_semaphore_s *s,
                                         treadle_cx_t *cx, treadle_waiter_t *wp,
                                         size_t n, int wait,
                                         treadle_err_t *err) {
  treadle__waiter_t *w = treadle__as_waiter(wp);
  /* acquire: pairs with treadle__waiter_finish (step 4). */
  uint64_t st = atomic_load_explicit(&w->state, memory_order_acquire);
  switch (st & TREADLE__W_MASK) {
  case TREADLE__W_IDLE:
    return acquire_idle(s, cx, w, n, wait, err);
  case TREADLE__W_WAITING: {
    treadle__waitq_t *q = w->q;
    treadle__os_mutex_lock(&q->mu);
    st = atomic_load_explicit(&w->state, memory_order_relaxed);
    if ((st & TREADLE__W_MASK) == TREADLE__W_WAITING) {
      treadle_waker_t *old = treadle__waiter_rewake(w, cx);
      treadle__os_mutex_unlock(&q->mu);
      treadle_waker_drop(old);
      treadle__sync_waits_on(cx, wait);
      return TREADLE_PENDING;
    }
    treadle__os_mutex_unlock(&q->mu); /* finished meanwhile; q.mu ordered it */
    break;
  }
  default:
    break;
  }
  return acquire_finish(w, cx, st, err);
}

treadle_err_t treadle__sem_release(struct treadle_semaphore_s *s, size_t n,
                                   size_t max) {
  if (n == 0)
    return 0;
  if (n > max)
    return TREADLE_EINVAL;
  /* Fast path, no lock: nobody queued, so the permits go to `permits`. */
  size_t cur = atomic_load_explicit(&s->permits, memory_order_relaxed);
  while (!(cur & QUEUED)) {
    if ((cur >> SHIFT) > max - n)
      return TREADLE_EINVAL;
    /* release: pairs with the acquirers' acquire CAS (a Mutex's critical
     * section goes to the next holder); fails if QUEUED was set since. */
    if (atomic_compare_exchange_weak_explicit(&s->permits, &cur,
                                              cur + ((size_t)n << SHIFT),
                                              memory_order_release,
                                              memory_order_relaxed))
      return 0;
  }
  treadle__os_mutex_lock(&s->q.mu);
  /* Relaxed: increases happen under q.mu, which we hold; a decrease we
   * miss only makes the check stricter. */
  size_t avail =
      atomic_load_explicit(&s->permits, memory_order_relaxed) >> SHIFT;
  if (avail > max - n) {
    treadle__os_mutex_unlock(&s->q.mu);
    return TREADLE_EINVAL;
  }
  treadle__sem_add_permits_locked(s, n);
  return 0;
}

treadle_err_t treadle_semaphore_new(size_t permits, treadle_semaphore_t **out) {
  if (out == NULL)
    return TREADLE_EINVAL;
  *out = NULL;
  if (permits > MAX_PERMITS)
    return TREADLE_EINVAL;
  treadle_semaphore_t *s = treadle__malloc(sizeof *s);
  if (s == NULL)
    return TREADLE_ENOMEM;
  treadle__sem_init(s, permits);
  *out = s;
  return 0;
}

treadle_semaphore_t *treadle_semaphore_ref(treadle_semaphore_t *s) {
  if (s != NULL)
    treadle__waitq_ref(&s->q);
  return s;
}

void treadle_semaphore_unref(treadle_semaphore_t *s) {
  if (s != NULL)
    treadle__waitq_unref(&s->q);
}

treadle_poll_t treadle_semaphore_acquire_poll(treadle_semaphore_t *s,
                                              treadle_cx_t *cx,
                                              treadle_waiter_t *w, size_t n,
                                              treadle_err_t *err) {
  treadle_err_t ignored;
  if (err == NULL)
    err = &ignored;
  if (s == NULL || cx == NULL || w == NULL || n == 0 || n > MAX_PERMITS) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  return treadle__sem_acquire_poll(s, cx, w, n, TREADLE__WAIT_SEMAPHORE, err);
}

treadle_err_t treadle_semaphore_try_acquire(treadle_semaphore_t *s, size_t n) {
  if (s == NULL || n == 0 || n > MAX_PERMITS)
    return TREADLE_EINVAL;
  return treadle__sem_try_acquire(s, n);
}

treadle_err_t treadle_semaphore_release(treadle_semaphore_t *s, size_t n) {
  if (s == NULL)
    return TREADLE_EINVAL;
  return treadle__sem_release(s, n, MAX_PERMITS);
}

void treadle_semaphore_close(treadle_semaphore_t *s) {
  if (s == NULL)
    return;
  treadle__os_mutex_lock(&s->q.mu);
  /* Relaxed: acquirers that see CLOSED take nothing; under q.mu, so no
   * waiter queues after this. */
  atomic_fetch_or_explicit(&s->permits, CLOSED, memory_order_relaxed);
  for (;;) {
    treadle__wakelist_t wl = {.n = 0};
    uint64_t back = 0;
    treadle__list_t *node;
    while (!treadle__wakelist_full(&wl) &&
           (node = treadle__list_pop_front(&s->q.waiters)) != NULL) {
      treadle__waiter_t *w =
          treadle__container_of(node, treadle__waiter_t, node);
      uint64_t st = atomic_load_explicit(&w->state, memory_order_relaxed);
      back += w->want - (st >> TREADLE__W_SHIFT); /* partly given */
      treadle__wakelist_push(&wl, w->waker);
      w->waker = NULL;
      treadle__waiter_finish(w, TREADLE__W_CLOSED);
    }
    if (back > 0) {
      /* release: as treadle__sem_add_permits_locked (available() counts
       * them). */
      atomic_fetch_add_explicit(&s->permits, (size_t)back << SHIFT,
                                memory_order_release);
    }
    bool more = !treadle__list_empty(&s->q.waiters);
    if (!more)
      /* Relaxed: under q.mu; the queue is empty for good (CLOSED). */
      atomic_fetch_and_explicit(&s->permits, ~QUEUED, memory_order_relaxed);
    treadle__os_mutex_unlock(&s->q.mu);
    treadle__wakelist_wake(&wl);
    if (!more)
      return;
    treadle__os_mutex_lock(&s->q.mu);
  }
}

size_t treadle_semaphore_available(treadle_semaphore_t *s) {
  if (s == NULL)
    return 0;
  /* Relaxed: a snapshot. */
  return atomic_load_explicit(&s->permits, memory_order_relaxed) >> SHIFT;
}
