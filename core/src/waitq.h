/* Internal declarations shared by the synchronisation primitives: the wait
 * queue (waitq.c; used by semaphore.c, notify.c, mutex.c), the private
 * layout of treadle_waiter_t, and a batch of wakers to call once a lock is
 * let go.
 * Nothing here is public API. */
#ifndef TREADLE_WAITQ_H
#define TREADLE_WAITQ_H

#include "internal.h"

/* ------------------------------------------------------------ wakers */

/* Wakers collected under a lock and called after it is released: a wake
 * can run scheduler code, which must never run under our locks. Code that
 * may collect more than TREADLE__WAKE_BATCH unlocks, wakes and relocks. */
#define TREADLE__WAKE_BATCH 32

typedef struct treadle__wakelist_s {
  treadle_waker_t *w[TREADLE__WAKE_BATCH];
  unsigned n;
} treadle__wakelist_t;

static inline bool treadle__wakelist_full(const treadle__wakelist_t *wl) {
  return wl->n == TREADLE__WAKE_BATCH;
}

/* Adds a waker (takes ownership; NULL is ignored). The list must not be
 * full. */
static inline void treadle__wakelist_push(treadle__wakelist_t *wl,
                                          treadle_waker_t *w) {
  if (w != NULL)
    wl->w[wl->n++] = w;
}

/* Wakes (and releases) every waker in the list; call with no lock held. */
static inline void treadle__wakelist_wake(treadle__wakelist_t *wl) {
  for (unsigned i = 0; i < wl->n; i++)
    treadle_wake(wl->w[i]);
  wl->n = 0;
}

/* -------------------------------------------------------- wait queue */

typedef enum {
  TREADLE__WAITQ_NOTIFY = 0,   /* a treadle_notify_t */
  TREADLE__WAITQ_SEMAPHORE = 1 /* a treadle_semaphore_t or treadle_mutex_t */
} treadle__waitq_kind_t;

/* The first member of every object a treadle_waiter_t waits on, so that a
 * waiter can be dropped knowing only its queue, and so that the object's
 * last reference frees it whatever its kind. */
typedef struct treadle__waitq_s {
  treadle__os_mutex_t mu;
  treadle__list_t waiters; /* FIFO of treadle__waiter_t; guarded by mu */
  _Atomic size_t refs;     /* users' references + one per queued or
                              notified waiter; any thread */
  uint8_t kind;            /* treadle__waitq_kind_t; constant */
} treadle__waitq_t;

void treadle__waitq_init(treadle__waitq_t *q, treadle__waitq_kind_t kind);
void treadle__waitq_ref(treadle__waitq_t *q);
/* Drops a reference; the last one destroys the lock and frees the object
 * that starts with `q`. */
void treadle__waitq_unref(treadle__waitq_t *q);

/* ------------------------------------------------------------ waiter */

/* Where a waiter stands; the low bits of treadle__waiter_t.state. */
enum {
  TREADLE__W_IDLE = 0,     /* on no queue, holds nothing */
  TREADLE__W_WAITING = 1,  /* on q->waiters, holds a waker and a q ref */
  TREADLE__W_DONE = 2,     /* notify_one'd, or all its permits assigned */
  TREADLE__W_DONE_ALL = 3, /* notified by notify_waiters */
  TREADLE__W_CLOSED = 4    /* its semaphore was closed */
};
#define TREADLE__W_MASK UINT64_C(7)
#define TREADLE__W_SHIFT 3

/* treadle_waiter_t's private layout. may_alias: the caller's storage is
 * declared as treadle_waiter_t and accessed through this type. */
typedef struct __attribute__((__may_alias__)) treadle__waiter_s {
  treadle__list_t node;   /* on q->waiters (or a notify_waiters batch);
                             guarded by q->mu */
  treadle_waker_t *waker; /* set while WAITING; guarded by q->mu */
  treadle__waitq_t *q;    /* the queue it waits on; set by the owner while
                             IDLE, read until it is IDLE again */
  uint64_t want;          /* semaphore: permits asked; owner, then q->mu */
  _Atomic uint64_t state; /* TREADLE__W_* | permits still needed <<
                             TREADLE__W_SHIFT; written under q->mu (or by
                             the owner while IDLE), read anywhere */
} treadle__waiter_t;

static inline treadle__waiter_t *treadle__as_waiter(treadle_waiter_t *w) {
  return (treadle__waiter_t *)(void *)w;
}

/* Publishes a final state (DONE, DONE_ALL, CLOSED) for a waiter that the
 * caller (holding q->mu) has just unlinked and whose waker it took: the
 * last touch, since the owner may reuse or free the waiter once it sees
 * the state. */
static inline void treadle__waiter_finish(treadle__waiter_t *w,
                                          uint64_t state) {
  /* release: the owner's acquire load then sees the unlink and the waker
   * taken; nothing here touches w afterwards. */
  atomic_store_explicit(&w->state, state, memory_order_release);
}

/* Enqueues an IDLE waiter at the back of q (q->mu held): takes a q
 * reference and a clone of the task's waker. */
void treadle__waiter_enqueue(treadle__waitq_t *q, treadle__waiter_t *w,
                             treadle_cx_t *cx, uint64_t state);
/* A WAITING waiter is polled again (q->mu held): its waker becomes the
 * polling task's. Returns the old waker to drop after unlocking, or
 * NULL. */
treadle_waker_t *treadle__waiter_rewake(treadle__waiter_t *w, treadle_cx_t *cx);

/* notify.c: a waiter that was notify_one'd is dropped without consuming
 * the notification; pass it on (q->mu held). */
void treadle__notify_pass_on(treadle__waitq_t *q, treadle__wakelist_t *wl);

/* --------------------------------------------------------- semaphore */

/* permits << 2 | SEM_QUEUED | SEM_CLOSED: tokio's batch_semaphore layout
 * and a bit set while a waiter is queued, so that a release with nobody
 * queued (an uncontended unlock) adds its permits without q.mu. */
#define TREADLE__SEM_CLOSED ((size_t)1)
#define TREADLE__SEM_QUEUED ((size_t)2)
#define TREADLE__SEM_SHIFT 2

struct treadle_semaphore_s {
  treadle__waitq_t q;     /* first: see treadle__waitq_t */
  _Atomic size_t permits; /* unassigned permits << 2 | SEM_QUEUED |
                             SEM_CLOSED; QUEUED is set and cleared under
                             q.mu only, and while it is set permits are
                             added under q.mu only; decreased by CAS
                             anywhere; nonzero permits imply no waiter */
};

struct treadle_mutex_s {
  struct treadle_semaphore_s sem; /* first: one permit, the lock */
};

void treadle__sem_init(struct treadle_semaphore_s *s, size_t permits);
/* treadle_semaphore_acquire_poll, recording `wait` (TREADLE__WAIT_MUTEX or
 * _SEMAPHORE) as what the task waits on. */
treadle_poll_t treadle__sem_acquire_poll(struct treadle_semaphore_s *s,
                                         treadle_cx_t *cx, treadle_waiter_t *w,
                                         size_t n, int wait,
                                         treadle_err_t *err);
/* 0, TREADLE_EAGAIN or TREADLE_ECLOSED. */
treadle_err_t treadle__sem_try_acquire(struct treadle_semaphore_s *s, size_t n);
/* Returns n permits, TREADLE_EINVAL (nothing returned) if the unassigned
 * permits would pass `max`. */
treadle_err_t treadle__sem_release(struct treadle_semaphore_s *s, size_t n,
                                   size_t max);
/* Hands `n` permits to the waiters, then to `permits` (semaphore.c step
 * 2). Called with q.mu held; returns with it released, having woken every
 * waiter it completed (step 6). */
void treadle__sem_add_permits_locked(struct treadle_semaphore_s *s, uint64_t n);

/* Records what the polling task waits on, for dumps. */
static inline void treadle__sync_waits_on(treadle_cx_t *cx, int what) {
  treadle__task_waits_on(cx->task, what);
}

#endif /* TREADLE_WAITQ_H */
