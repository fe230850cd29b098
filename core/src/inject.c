/* The inject (global) queue: tasks spawned or woken from outside a
 * scheduler's threads, and a multi_thread worker's overflow.
 *
 * A mutex-protected intrusive FIFO through the task's `next` link. `len`
 * is written under the mutex and read without it, so that workers can skip
 * the lock when the queue is empty; a stale zero is safe because whoever
 * pushes also unparks (driver.c), and the unpark's seq_cst exchange orders
 * the push before the parker's next look. */
#include "internal.h"

void treadle__inject_init(treadle__inject_t *q) {
  treadle__os_mutex_init(&q->mu);
  q->head = NULL;
  q->tail = NULL;
  q->closed = false;
  atomic_init(&q->len, 0);
}

void treadle__inject_destroy(treadle__inject_t *q) {
  treadle__os_mutex_destroy(&q->mu);
}

bool treadle__inject_push(treadle__inject_t *q, treadle__task_t *t) {
  treadle__os_mutex_lock(&q->mu);
  if (q->closed) {
    treadle__os_mutex_unlock(&q->mu);
    return false;
  }
  t->next = NULL;
  if (q->tail != NULL)
    q->tail->next = t;
  else
    q->head = t;
  q->tail = t;
  /* Relaxed: the mutex orders it for lockers; lock-free readers only use
   * it as a hint (see above). */
  atomic_store_explicit(&q->len, atomic_load_explicit(&q->len,
                                                      memory_order_relaxed) +
                                     1,
                        memory_order_relaxed);
  treadle__os_mutex_unlock(&q->mu);
  return true;
}

bool treadle__inject_push_batch(treadle__inject_t *q, treadle__task_t *first,
                                treadle__task_t *last, size_t n) {
  treadle__os_mutex_lock(&q->mu);
  if (q->closed) {
    treadle__os_mutex_unlock(&q->mu);
    return false;
  }
  last->next = NULL;
  if (q->tail != NULL)
    q->tail->next = first;
  else
    q->head = first;
  q->tail = last;
  /* Relaxed: as in push. */
  atomic_store_explicit(
      &q->len, atomic_load_explicit(&q->len, memory_order_relaxed) + n,
      memory_order_relaxed);
  treadle__os_mutex_unlock(&q->mu);
  return true;
}

size_t treadle__inject_pop_batch(treadle__inject_t *q, size_t max,
                                 treadle__task_t **first) {
  *first = NULL;
  if (max == 0 || atomic_load_explicit(&q->len, memory_order_relaxed) == 0)
    return 0;
  treadle__os_mutex_lock(&q->mu);
  size_t len = atomic_load_explicit(&q->len, memory_order_relaxed);
  size_t n = len < max ? len : max;
  treadle__task_t *head = q->head, *last = NULL;
  for (size_t i = 0; i < n; i++) {
    last = q->head;
    q->head = q->head->next;
  }
  if (n > 0) {
    last->next = NULL;
    if (q->head == NULL)
      q->tail = NULL;
    *first = head;
    atomic_store_explicit(&q->len, len - n, memory_order_relaxed);
  }
  treadle__os_mutex_unlock(&q->mu);
  return n;
}

treadle__task_t *treadle__inject_pop(treadle__inject_t *q) {
  if (atomic_load_explicit(&q->len, memory_order_relaxed) == 0)
    return NULL;
  treadle__os_mutex_lock(&q->mu);
  treadle__task_t *t = q->head;
  if (t != NULL) {
    q->head = t->next;
    if (q->head == NULL)
      q->tail = NULL;
    t->next = NULL;
    atomic_store_explicit(
        &q->len, atomic_load_explicit(&q->len, memory_order_relaxed) - 1,
        memory_order_relaxed);
  }
  treadle__os_mutex_unlock(&q->mu);
  return t;
}

void treadle__inject_close(treadle__inject_t *q) {
  treadle__os_mutex_lock(&q->mu);
  q->closed = true;
  treadle__os_mutex_unlock(&q->mu);
}
