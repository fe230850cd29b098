/* Bounded multi-producer, single-consumer channels (tokio::sync::mpsc):
 * a ring of `cap` item pointers behind one mutex.
 *
 * 1. One allocation holds the channel, the receiver and the ring; each
 *    sender is a small allocation of its own (it can be cloned, and a
 *    waiting sender's queue link lives in it). `refs` counts the handles;
 *    the last to go frees the channel. Everything else is guarded by
 *    `mu`, and a send or a receive takes it once, allocating nothing.
 * 2. Room: a send may queue its item when the sender holds a reservation,
 *    or when len + reserved < cap and it is not already waiting. Else it
 *    joins `waiting` (FIFO; one link per sender, so never twice) with its
 *    waker and is PENDING.
 * 3. A receive that frees a slot while senders wait reserves the slot for
 *    the first of them (`reserved` on it, ++chan reserved) and wakes it
 *    after unlocking. So while anyone waits, len + reserved == cap: later
 *    senders cannot take the slot first (FIFO, no starvation).
 * 4. A sender dropped with a reservation passes it to the next waiting
 *    sender, or gives the slot back. One dropped while waiting just
 *    leaves the queue.
 * 5. The receiver has one waker slot (a task's waker, or a parker's for
 *    recv_wait); a send takes it out and wakes it after unlocking; so
 *    does the last sender's drop, after which a receive drains the ring
 *    and then returns ECHANCLOSED.
 * 6. rx_close sets `closed`: every send from then on fails with ECHANCLOSED
 *    (the item not taken) and the waiting senders are woken to see it,
 *    TREADLE__WAKE_BATCH at a time. rx_drop closes, then takes the queued
 *    items and gives them to drop_item after unlocking: with `closed` set
 *    nobody else touches the ring again. */
#include "waitq.h"

#define MAX_CAPACITY ((size_t)1 << 30)

typedef struct chan_s chan_t;

struct treadle_mpsc_tx_s {
  chan_t *ch;             /* constant */
  treadle__list_t node;   /* on ch->waiting while waiting; guarded by mu */
  treadle_waker_t *waker; /* set while waiting; guarded by ch->mu */
  bool reserved;          /* a slot is kept for it; guarded by ch->mu */
};

struct treadle_mpsc_rx_s {
  uint8_t unused_;
};

struct chan_s {
  treadle__os_mutex_t mu;
  /* Guarded by mu. */
  size_t head;               /* slot of the oldest item */
  size_t len;                /* items queued */
  size_t reserved;           /* slots kept for woken senders (step 3) */
  size_t senders;            /* live tx handles */
  treadle__list_t waiting;   /* senders waiting for room, FIFO */
  treadle_waker_t *rx_waker; /* the receiver's, or NULL */
  bool closed;               /* sends fail (step 6) */
  /* Constant. */
  size_t cap;
  void (*drop_item)(void *item);
  /* Any thread. */
  _Atomic size_t refs; /* one per tx handle, one for the rx */
  treadle_mpsc_rx_t rx;
  void *buf[]; /* cap slots; guarded by mu */
};

static chan_t *of_rx(treadle_mpsc_rx_t *rx) {
  return treadle__container_of(rx, chan_t, rx);
}

static void chan_unref(chan_t *ch) {
  /* acq_rel: the last handle sees every other handle's use before free. */
  if (atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_acq_rel) != 1)
    return;
  TREADLE_ASSERT(treadle__list_empty(&ch->waiting));
  treadle_waker_drop(ch->rx_waker);
  treadle__os_mutex_destroy(&ch->mu);
  treadle__free(ch);
}

static void tx_init(treadle_mpsc_tx_t *tx, chan_t *ch) {
  tx->ch = ch;
  treadle__list_init(&tx->node);
  tx->waker = NULL;
  tx->reserved = false;
}

treadle_err_t treadle_mpsc_new(size_t capacity, void (*drop_item)(void *item),
                               treadle_mpsc_tx_t **tx, treadle_mpsc_rx_t **rx) {
  if (tx != NULL)
    *tx = NULL;
  if (rx != NULL)
    *rx = NULL;
  if (tx == NULL || rx == NULL || capacity < 1 || capacity > MAX_CAPACITY)
    return TREADLE_EINVAL;
  if (capacity > (SIZE_MAX - sizeof(chan_t)) / sizeof(void *))
    return TREADLE_ENOMEM; /* 32-bit: the ring cannot be addressed */
  chan_t *ch = treadle__malloc(sizeof(chan_t) + capacity * sizeof(void *));
  if (ch == NULL)
    return TREADLE_ENOMEM;
  treadle_mpsc_tx_t *t = treadle__malloc(sizeof *t);
  if (t == NULL) {
    treadle__free(ch);
    return TREADLE_ENOMEM;
  }
  treadle__os_mutex_init(&ch->mu);
  ch->head = 0;
  ch->len = 0;
  ch->reserved = 0;
  ch->senders = 1;
  treadle__list_init(&ch->waiting);
  ch->rx_waker = NULL;
  ch->closed = false;
  ch->cap = capacity;
  ch->drop_item = drop_item;
  atomic_init(&ch->refs, 2);
  tx_init(t, ch);
  *tx = t;
  *rx = &ch->rx;
  return 0;
}

/* ----------------------------------------------------------- helpers */

static void push_item(chan_t *ch, void *item) {
  size_t i = ch->head + ch->len;
  if (i >= ch->cap)
    i -= ch->cap;
  ch->buf[i] = item;
  ch->len++;
}

static void *pop_item(chan_t *ch) {
  void *item = ch->buf[ch->head];
  if (++ch->head == ch->cap)
    ch->head = 0;
  ch->len--;
  return item;
}

/* Takes the receiver's waker out, to wake after unlocking. */
static treadle_waker_t *take_rx_waker(chan_t *ch) {
  treadle_waker_t *w = ch->rx_waker;
  ch->rx_waker = NULL;
  return w;
}

/* Step 3 (and 4): a slot is free; keep it for the first waiting sender
 * and return its waker, or NULL if nobody waits. */
static treadle_waker_t *grant_room(chan_t *ch) {
  treadle__list_t *n = treadle__list_pop_front(&ch->waiting);
  if (n == NULL)
    return NULL;
  treadle_mpsc_tx_t *tx = treadle__container_of(n, treadle_mpsc_tx_t, node);
  tx->reserved = true;
  ch->reserved++;
  treadle_waker_t *w = tx->waker;
  tx->waker = NULL;
  return w;
}

/* Step 2: 0 if tx may queue an item now, TREADLE_EAGAIN, or
 * TREADLE_ECHANCLOSED. */
static treadle_err_t room_for(chan_t *ch, treadle_mpsc_tx_t *tx) {
  if (ch->closed) {
    if (tx->reserved) {
      tx->reserved = false;
      ch->reserved--;
    }
    return TREADLE_ECHANCLOSED;
  }
  if (tx->reserved)
    return 0;
  if (treadle__list_linked(&tx->node) || ch->len + ch->reserved >= ch->cap)
    return TREADLE_EAGAIN;
  return 0;
}

/* Queues item after room_for said 0; returns the receiver's waker. */
static treadle_waker_t *push_from(chan_t *ch, treadle_mpsc_tx_t *tx,
                                  void *item) {
  if (tx->reserved) {
    tx->reserved = false;
    ch->reserved--;
  }
  push_item(ch, item);
  return take_rx_waker(ch);
}

/* Makes tx wait for room with `waker` (borrowed): queued once, at the
 * back; a second wait only swaps the waker. Returns the old waker to
 * drop after unlocking, or NULL. */
static treadle_waker_t *wait_for_room(chan_t *ch, treadle_mpsc_tx_t *tx,
                                      treadle_waker_t *waker) {
  if (!treadle__list_linked(&tx->node)) {
    tx->waker = treadle_waker_clone(waker);
    treadle__list_push_back(&ch->waiting, &tx->node);
    return NULL;
  }
  if (tx->waker == waker)
    return NULL;
  treadle_waker_t *old = tx->waker;
  tx->waker = treadle_waker_clone(waker);
  return old;
}

/* ------------------------------------------------------------ senders */

treadle_mpsc_tx_t *treadle_mpsc_tx_clone(treadle_mpsc_tx_t *tx) {
  if (tx == NULL)
    return NULL;
  treadle_mpsc_tx_t *t = treadle__malloc(sizeof *t);
  if (t == NULL)
    return NULL;
  chan_t *ch = tx->ch;
  tx_init(t, ch);
  treadle__os_mutex_lock(&ch->mu);
  ch->senders++;
  treadle__os_mutex_unlock(&ch->mu);
  /* Relaxed: made from a reference the caller holds. */
  atomic_fetch_add_explicit(&ch->refs, 1, memory_order_relaxed);
  return t;
}

void treadle_mpsc_tx_drop(treadle_mpsc_tx_t *tx) {
  if (tx == NULL)
    return;
  chan_t *ch = tx->ch;
  treadle_waker_t *own = NULL, *next = NULL, *rx = NULL;
  treadle__os_mutex_lock(&ch->mu);
  if (treadle__list_linked(&tx->node)) {
    treadle__list_unlink(&tx->node);
    own = tx->waker;
    tx->waker = NULL;
  }
  if (tx->reserved) { /* step 4 */
    tx->reserved = false;
    ch->reserved--;
    next = grant_room(ch);
  }
  if (--ch->senders == 0)
    rx = take_rx_waker(ch); /* step 5: the receiver will see ECHANCLOSED */
  treadle__os_mutex_unlock(&ch->mu);
  treadle_waker_drop(own);
  treadle_wake(next);
  treadle_wake(rx);
  treadle__free(tx);
  chan_unref(ch);
}

treadle_poll_t treadle_mpsc_send_poll(treadle_mpsc_tx_t *tx, treadle_cx_t *cx,
                                      void *item, treadle_err_t *err) {
  treadle_err_t ignored;
  if (err == NULL)
    err = &ignored;
  if (tx == NULL || cx == NULL) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  chan_t *ch = tx->ch;
  treadle__os_mutex_lock(&ch->mu);
  treadle_err_t rc = room_for(ch, tx);
  if (rc == 0) {
    if (!treadle_cx_poll_proceed(cx)) {
      treadle__os_mutex_unlock(&ch->mu);
      return TREADLE_PENDING; /* coop budget spent; any reservation kept */
    }
    treadle_waker_t *w = push_from(ch, tx, item);
    treadle__os_mutex_unlock(&ch->mu);
    treadle_wake(w);
    *err = 0;
    return TREADLE_READY;
  }
  if (rc == TREADLE_ECHANCLOSED) {
    treadle__os_mutex_unlock(&ch->mu);
    *err = rc;
    return TREADLE_READY;
  }
  treadle_waker_t *old = wait_for_room(ch, tx, &cx->task->waker);
  treadle__os_mutex_unlock(&ch->mu);
  treadle_waker_drop(old);
  treadle__sync_waits_on(cx, TREADLE__WAIT_MPSC_SEND);
  return TREADLE_PENDING;
}

treadle_err_t treadle_mpsc_try_send(treadle_mpsc_tx_t *tx, void *item) {
  if (tx == NULL)
    return TREADLE_EINVAL;
  chan_t *ch = tx->ch;
  treadle_waker_t *w = NULL;
  treadle__os_mutex_lock(&ch->mu);
  treadle_err_t rc = room_for(ch, tx);
  if (rc == 0)
    w = push_from(ch, tx, item);
  treadle__os_mutex_unlock(&ch->mu);
  treadle_wake(w);
  return rc;
}

treadle_err_t treadle_mpsc_send_wait(treadle_mpsc_tx_t *tx, void *item) {
  if (tx == NULL)
    return TREADLE_EINVAL;
  if (treadle__ctx.sched != NULL)
    return TREADLE_EINRUNTIME; /* it would block the tasks it waits for */
  chan_t *ch = tx->ch;
  treadle__parker_t *p = NULL;
  treadle_err_t rc;
  treadle__os_mutex_lock(&ch->mu);
  while ((rc = room_for(ch, tx)) == TREADLE_EAGAIN) {
    if (p == NULL) {
      treadle__os_mutex_unlock(&ch->mu);
      p = treadle__parker_new();
      if (p == NULL)
        return TREADLE_ENOMEM;
      treadle__os_mutex_lock(&ch->mu);
      continue; /* room may have come meanwhile */
    }
    treadle_waker_t *old = wait_for_room(ch, tx, &p->waker);
    treadle__os_mutex_unlock(&ch->mu);
    treadle_waker_drop(old);
    treadle__parker_park(p);
    treadle__os_mutex_lock(&ch->mu);
  }
  /* Granted (step 3) or closed (step 6): either way off `waiting`, and
   * whoever unlinked us took the parker's waker. */
  treadle_waker_t *w = rc == 0 ? push_from(ch, tx, item) : NULL;
  treadle__os_mutex_unlock(&ch->mu);
  treadle_wake(w);
  if (p != NULL)
    treadle_waker_drop(&p->waker);
  return rc;
}

/* ----------------------------------------------------------- receiver */

/* An item nobody will receive (rx_drop's, or one a receive was asked for
 * with item == NULL) goes to drop_item. Called with no lock held. */
static void drop_unreceived(chan_t *ch, void *item) {
  if (item != NULL && ch->drop_item != NULL)
    ch->drop_item(item);
}

/* With mu held: 0 and an item, TREADLE_ECHANCLOSED or TREADLE_EAGAIN. *wake
 * gets the waker of a sender granted the freed slot. */
static treadle_err_t recv_locked(chan_t *ch, void **item,
                                 treadle_waker_t **wake) {
  if (ch->len > 0) {
    *item = pop_item(ch);
    *wake = grant_room(ch);
    return 0;
  }
  if (ch->closed || ch->senders == 0)
    return TREADLE_ECHANCLOSED;
  return TREADLE_EAGAIN;
}

treadle_poll_t treadle_mpsc_recv_poll(treadle_mpsc_rx_t *rx, treadle_cx_t *cx,
                                      void **item, treadle_err_t *err) {
  treadle_err_t ignored;
  void *declined = NULL;
  if (err == NULL)
    err = &ignored;
  bool keep = item != NULL;
  if (!keep)
    item = &declined;
  *item = NULL;
  if (rx == NULL || cx == NULL) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  chan_t *ch = of_rx(rx);
  treadle_waker_t *wake = NULL;
  treadle__os_mutex_lock(&ch->mu);
  if (ch->len > 0 && !treadle_cx_poll_proceed(cx)) {
    treadle__os_mutex_unlock(&ch->mu);
    return TREADLE_PENDING; /* coop budget spent: polled again soon */
  }
  treadle_err_t rc = recv_locked(ch, item, &wake);
  if (rc == TREADLE_EAGAIN) {
    treadle_waker_t *mine = &cx->task->waker;
    if (ch->rx_waker != mine) {
      wake = ch->rx_waker; /* the old one, dropped below */
      ch->rx_waker = treadle_waker_clone(mine);
    }
    treadle__os_mutex_unlock(&ch->mu);
    treadle_waker_drop(wake);
    treadle__sync_waits_on(cx, TREADLE__WAIT_MPSC_RECV);
    return TREADLE_PENDING;
  }
  treadle__os_mutex_unlock(&ch->mu);
  treadle_wake(wake);
  if (!keep)
    drop_unreceived(ch, declined);
  *err = rc;
  return TREADLE_READY;
}

treadle_err_t treadle_mpsc_try_recv(treadle_mpsc_rx_t *rx, void **item) {
  void *declined = NULL;
  bool keep = item != NULL;
  if (!keep)
    item = &declined;
  *item = NULL;
  if (rx == NULL)
    return TREADLE_EINVAL;
  chan_t *ch = of_rx(rx);
  treadle_waker_t *wake = NULL;
  treadle__os_mutex_lock(&ch->mu);
  treadle_err_t rc = recv_locked(ch, item, &wake);
  treadle__os_mutex_unlock(&ch->mu);
  treadle_wake(wake);
  if (!keep)
    drop_unreceived(ch, declined);
  return rc;
}

treadle_err_t treadle_mpsc_recv_wait(treadle_mpsc_rx_t *rx, void **item) {
  void *declined = NULL;
  bool keep = item != NULL;
  if (!keep)
    item = &declined;
  *item = NULL;
  if (rx == NULL)
    return TREADLE_EINVAL;
  if (treadle__ctx.sched != NULL)
    return TREADLE_EINRUNTIME; /* it would block the tasks it waits for */
  chan_t *ch = of_rx(rx);
  treadle__parker_t *p = NULL;
  treadle_waker_t *wake = NULL;
  treadle_err_t rc;
  treadle__os_mutex_lock(&ch->mu);
  while ((rc = recv_locked(ch, item, &wake)) == TREADLE_EAGAIN) {
    if (p == NULL) {
      treadle__os_mutex_unlock(&ch->mu);
      p = treadle__parker_new();
      if (p == NULL)
        return TREADLE_ENOMEM;
      treadle__os_mutex_lock(&ch->mu);
      continue; /* an item may have come meanwhile */
    }
    treadle_waker_t *old = NULL;
    if (ch->rx_waker != &p->waker) {
      old = ch->rx_waker;
      ch->rx_waker = treadle_waker_clone(&p->waker);
    }
    treadle__os_mutex_unlock(&ch->mu);
    treadle_waker_drop(old);
    treadle__parker_park(p);
    treadle__os_mutex_lock(&ch->mu);
  }
  treadle_waker_t *mine = NULL;
  if (p != NULL && ch->rx_waker == &p->waker)
    mine = take_rx_waker(ch); /* not taken by a sender: ours to drop */
  treadle__os_mutex_unlock(&ch->mu);
  treadle_wake(wake);
  treadle_waker_drop(mine);
  if (p != NULL)
    treadle_waker_drop(&p->waker);
  if (!keep)
    drop_unreceived(ch, declined);
  return rc;
}

/* Step 6: refuses sends and wakes every waiting sender. */
static void close_chan(chan_t *ch) {
  treadle__os_mutex_lock(&ch->mu);
  ch->closed = true;
  for (;;) {
    treadle__wakelist_t wl = {.n = 0};
    treadle__list_t *n;
    while (!treadle__wakelist_full(&wl) &&
           (n = treadle__list_pop_front(&ch->waiting)) != NULL) {
      treadle_mpsc_tx_t *tx = treadle__container_of(n, treadle_mpsc_tx_t, node);
      treadle__wakelist_push(&wl, tx->waker);
      tx->waker = NULL;
    }
    bool more = !treadle__list_empty(&ch->waiting);
    treadle__os_mutex_unlock(&ch->mu);
    treadle__wakelist_wake(&wl);
    if (!more)
      return;
    treadle__os_mutex_lock(&ch->mu);
  }
}

void treadle_mpsc_rx_close(treadle_mpsc_rx_t *rx) {
  if (rx != NULL)
    close_chan(of_rx(rx));
}

void treadle_mpsc_rx_drop(treadle_mpsc_rx_t *rx) {
  if (rx == NULL)
    return;
  chan_t *ch = of_rx(rx);
  close_chan(ch);
  treadle__os_mutex_lock(&ch->mu);
  size_t head = ch->head, len = ch->len;
  ch->len = 0; /* closed: nobody queues again; we were the only reader */
  treadle_waker_t *w = take_rx_waker(ch);
  treadle__os_mutex_unlock(&ch->mu);
  treadle_waker_drop(w);
  for (size_t i = 0; i < len; i++) {
    drop_unreceived(ch, ch->buf[(head + i) % ch->cap]);
  }
  chan_unref(ch);
}
