/* Oneshot channels: one value, once, from any thread to a task (or to a
 * thread blocked in recv_wait).
 *
 * 1. One allocation holds both ends; the tx and rx handles point into it
 *    and each holds one of its two references. Everything else is
 *    guarded by `mu`.
 * 2. The value's life: EMPTY -> SENT (send stores it and takes the
 *    receiver's waker) -> RECEIVED (recv takes it). A send after the
 *    receiver went fails with ECHANCLOSED and does not take the value.
 * 3. The sender leaving without sending (tx_drop) marks `tx_gone` and
 *    wakes the receiver, which then sees ECHANCLOSED once nothing is SENT.
 * 4. The receiver leaving (rx_drop) marks `rx_gone` and takes a value that
 *    was SENT but not received; it goes to drop_value after unlocking, as
 *    does a value received by a caller that passed value == NULL.
 * 5. One waker slot: the receiver's task, or a parker's waker for
 *    recv_wait. Wakers are woken and dropped after unlocking. */
#include "waitq.h"

enum { EMPTY = 0, SENT = 1, RECEIVED = 2 };

struct treadle_oneshot_tx_s {
  uint8_t unused_;
};
struct treadle_oneshot_rx_s {
  uint8_t unused_;
};

typedef struct oneshot_s {
  treadle__os_mutex_t mu;
  /* Guarded by mu. */
  void *value;               /* while SENT */
  treadle_waker_t *rx_waker; /* the receiver's, or NULL */
  uint8_t state;             /* EMPTY, SENT or RECEIVED */
  bool tx_gone;
  bool rx_gone;
  /* Constant. */
  void (*drop_value)(void *value);
  /* Any thread. */
  _Atomic uint32_t refs; /* one per live end */
  treadle_oneshot_tx_t tx;
  treadle_oneshot_rx_t rx;
} oneshot_t;

static oneshot_t *of_tx(treadle_oneshot_tx_t *tx) {
  return treadle__container_of(tx, oneshot_t, tx);
}

static oneshot_t *of_rx(treadle_oneshot_rx_t *rx) {
  return treadle__container_of(rx, oneshot_t, rx);
}

static void unref(oneshot_t *o) {
  /* acq_rel: the last end sees the other end's use before free. */
  if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) != 1)
    return;
  treadle_waker_drop(o->rx_waker);
  treadle__os_mutex_destroy(&o->mu);
  treadle__free(o);
}

treadle_err_t treadle_oneshot_new(void (*drop_value)(void *value),
                                  treadle_oneshot_tx_t **tx,
                                  treadle_oneshot_rx_t **rx) {
  if (tx != NULL)
    *tx = NULL;
  if (rx != NULL)
    *rx = NULL;
  if (tx == NULL || rx == NULL)
    return TREADLE_EINVAL;
  oneshot_t *o = treadle__malloc(sizeof *o);
  if (o == NULL)
    return TREADLE_ENOMEM;
  treadle__os_mutex_init(&o->mu);
  o->value = NULL;
  o->rx_waker = NULL;
  o->state = EMPTY;
  o->tx_gone = false;
  o->rx_gone = false;
  o->drop_value = drop_value;
  atomic_init(&o->refs, 2);
  *tx = &o->tx;
  *rx = &o->rx;
  return 0;
}

/* Frees a value nobody will receive (called with no lock held). */
static void drop_value(oneshot_t *o, void *value) {
  if (value != NULL && o->drop_value != NULL)
    o->drop_value(value);
}

/* Step 2 or 3: the sender's last act. */
static treadle_err_t finish_tx(oneshot_t *o, bool send, void *value) {
  treadle_err_t rc = 0;
  treadle__os_mutex_lock(&o->mu);
  if (send) {
    if (o->rx_gone) {
      rc = TREADLE_ECHANCLOSED; /* the value stays the caller's */
    } else {
      o->value = value;
      o->state = SENT;
    }
  }
  o->tx_gone = true;
  treadle_waker_t *w = o->rx_waker;
  o->rx_waker = NULL;
  treadle__os_mutex_unlock(&o->mu);
  treadle_wake(w);
  unref(o);
  return rc;
}

treadle_err_t treadle_oneshot_send(treadle_oneshot_tx_t *tx, void *value) {
  if (tx == NULL)
    return TREADLE_EINVAL;
  return finish_tx(of_tx(tx), true, value);
}

void treadle_oneshot_tx_drop(treadle_oneshot_tx_t *tx) {
  if (tx != NULL)
    (void)finish_tx(of_tx(tx), false, NULL);
}

/* With mu held: 0 (value taken), ECHANCLOSED, EJOINED, or EAGAIN (wait). */
static treadle_err_t try_take(oneshot_t *o, void **value) {
  if (o->state == SENT) {
    *value = o->value;
    o->value = NULL;
    o->state = RECEIVED;
    return 0;
  }
  if (o->state == RECEIVED)
    return TREADLE_EJOINED;
  return o->tx_gone ? TREADLE_ECHANCLOSED : TREADLE_EAGAIN;
}

treadle_poll_t treadle_oneshot_recv_poll(treadle_oneshot_rx_t *rx,
                                         treadle_cx_t *cx, void **value,
                                         treadle_err_t *err) {
  treadle_err_t ignored;
  void *declined = NULL;
  if (err == NULL)
    err = &ignored;
  bool keep = value != NULL;
  if (!keep)
    value = &declined; /* received, then freed with drop_value */
  *value = NULL;
  if (rx == NULL || cx == NULL) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  oneshot_t *o = of_rx(rx);
  treadle_waker_t *old = NULL;
  treadle__os_mutex_lock(&o->mu);
  if (o->state == SENT && !treadle_cx_poll_proceed(cx)) {
    treadle__os_mutex_unlock(&o->mu);
    return TREADLE_PENDING; /* coop budget spent: polled again soon */
  }
  treadle_err_t rc = try_take(o, value);
  if (rc == TREADLE_EAGAIN) {
    treadle_waker_t *mine = &cx->task->waker;
    if (o->rx_waker != mine) {
      old = o->rx_waker;
      o->rx_waker = treadle_waker_clone(mine);
    }
  } else {
    old = o->rx_waker; /* no longer needed */
    o->rx_waker = NULL;
  }
  treadle__os_mutex_unlock(&o->mu);
  treadle_waker_drop(old);
  if (rc == TREADLE_EAGAIN) {
    treadle__sync_waits_on(cx, TREADLE__WAIT_ONESHOT);
    return TREADLE_PENDING;
  }
  if (!keep)
    drop_value(o, declined);
  *err = rc;
  return TREADLE_READY;
}

treadle_err_t treadle_oneshot_recv_wait(treadle_oneshot_rx_t *rx,
                                        void **value) {
  void *declined = NULL;
  bool keep = value != NULL;
  if (!keep)
    value = &declined; /* received, then freed with drop_value */
  *value = NULL;
  if (rx == NULL)
    return TREADLE_EINVAL;
  if (treadle__ctx.sched != NULL)
    return TREADLE_EINRUNTIME; /* it would block the tasks it waits for */
  oneshot_t *o = of_rx(rx);
  treadle__parker_t *p = NULL;
  treadle_waker_t *old = NULL;
  treadle_err_t rc;
  treadle__os_mutex_lock(&o->mu);
  while ((rc = try_take(o, value)) == TREADLE_EAGAIN) {
    if (p == NULL) {
      treadle__os_mutex_unlock(&o->mu);
      p = treadle__parker_new();
      if (p == NULL)
        return TREADLE_ENOMEM;
      treadle__os_mutex_lock(&o->mu);
      continue; /* the value may have come meanwhile */
    }
    if (o->rx_waker != &p->waker) {
      old = o->rx_waker;
      o->rx_waker = treadle_waker_clone(&p->waker);
    }
    treadle__os_mutex_unlock(&o->mu);
    treadle_waker_drop(old);
    old = NULL;
    treadle__parker_park(p);
    treadle__os_mutex_lock(&o->mu);
  }
  old = o->rx_waker; /* ours, if the sender has not taken it */
  o->rx_waker = NULL;
  treadle__os_mutex_unlock(&o->mu);
  treadle_waker_drop(old);
  if (p != NULL)
    treadle_waker_drop(&p->waker);
  if (!keep)
    drop_value(o, declined);
  return rc;
}

void treadle_oneshot_rx_drop(treadle_oneshot_rx_t *rx) {
  if (rx == NULL)
    return;
  oneshot_t *o = of_rx(rx);
  void *value = NULL;
  treadle__os_mutex_lock(&o->mu);
  o->rx_gone = true;
  bool had = o->state == SENT; /* step 4 */
  if (had) {
    value = o->value;
    o->value = NULL;
    o->state = RECEIVED;
  }
  treadle_waker_t *w = o->rx_waker;
  o->rx_waker = NULL;
  treadle__os_mutex_unlock(&o->mu);
  treadle_waker_drop(w);
  if (had)
    drop_value(o, value);
  unref(o);
}
