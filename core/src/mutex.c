/* The async Mutex (tokio::sync::Mutex): a semaphore of one permit.
 *
 * 1. The permit is the lock. lock_poll and try_lock take it as any
 *    acquirer does (semaphore.c): a CAS on `permits` when it is free,
 *    which it is only while nobody waits, so the fast path never
 *    overtakes a queued task.
 * 2. unlock returns the permit: by a CAS on `permits` when nobody waits
 *    (no lock taken), else under q.mu straight to the first waiter (FIFO
 *    hand-off; the lock is never free in between, so a try_lock racing
 *    the hand-off fails). Release/acquire on either carries the holder's
 *    writes to the next holder.
 * 3. A waiter handed the lock and then dropped without polling passes it
 *    to the next waiter (semaphore.c step 5).
 * 4. Unlocking a mutex that is not locked does nothing: the permits
 *    would pass the maximum of 1. */
#include "waitq.h"

treadle_err_t treadle_mutex_new(treadle_mutex_t **out) {
  if (out == NULL)
    return TREADLE_EINVAL;
  *out = NULL;
  treadle_mutex_t *m = treadle__malloc(sizeof *m);
  if (m == NULL)
    return TREADLE_ENOMEM;
  treadle__sem_init(&m->sem, 1);
  *out = m;
  return 0;
}

treadle_mutex_t *treadle_mutex_ref(treadle_mutex_t *m) {
  if (m != NULL)
    treadle__waitq_ref(&m->sem.q);
  return m;
}

void treadle_mutex_unref(treadle_mutex_t *m) {
  if (m != NULL)
    treadle__waitq_unref(&m->sem.q);
}

treadle_poll_t treadle_mutex_lock_poll(treadle_mutex_t *m, treadle_cx_t *cx,
                                       treadle_waiter_t *w) {
  if (m == NULL || cx == NULL || w == NULL)
    return TREADLE_READY; /* nothing to wait for; never hang on bad input */
  treadle_err_t err;
  return treadle__sem_acquire_poll(&m->sem, cx, w, 1, TREADLE__WAIT_MUTEX,
                                   &err); /* never closed: err is 0 */
}

bool treadle_mutex_try_lock(treadle_mutex_t *m) {
  return m != NULL && treadle__sem_try_acquire(&m->sem, 1) == 0;
}

void treadle_mutex_unlock(treadle_mutex_t *m) {
  if (m != NULL)
    (void)treadle__sem_release(&m->sem, 1, 1); /* step 4 */
}
