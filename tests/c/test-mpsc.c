/* mpsc: FIFO and capacity, ping-pong, backpressure, room and wakes passed
 * on by senders that give up, producer threads, blocking receives, closing
 * and dropping either end, bad input; the coop budget over ready receives
 * and acquires; and every primitive's constructor out of memory. */
#include "sync_util.h"

static void mpsc_fifo_and_capacity(void **state) {
  (void)state;
  treadle_mpsc_tx_t *tx;
  treadle_mpsc_rx_t *rx;
  void *v;
  assert_int_equal(treadle_mpsc_new(4, NULL, &tx, &rx), 0);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_EAGAIN);
  long next_in = 1, next_out = 1;
  /* Around the ring several times, full and empty. */
  for (int round = 0; round < 5; round++) {
    while (treadle_mpsc_try_send(tx, item_of(next_in)) == 0)
      next_in++;
    assert_int_equal(next_in - next_out, 4);
    assert_int_equal(treadle_mpsc_try_send(tx, item_of(99)), TREADLE_EAGAIN);
    for (int k = 0; k < 1 + round % 4; k++) {
      assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
      assert_int_equal(value_of(v), next_out++);
    }
  }
  while (next_out < next_in) {
    assert_int_equal(treadle_mpsc_recv_wait(rx, &v), 0);
    assert_int_equal(value_of(v), next_out++);
  }
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_EAGAIN);
  assert_null(v);
  treadle_mpsc_tx_drop(tx);
  treadle_mpsc_rx_drop(rx);
}

/* Two tasks bounce a counter through two capacity-1 channels. */
typedef struct {
  treadle_mpsc_rx_t *rx1, *rx2;
  treadle_mpsc_tx_t *tx1, *tx2;
  long rounds;
} pingpong_t;

static bool ping_kid(actor_t *a, treadle_cx_t *cx) {
  pingpong_t *p = a->shared;
  treadle_err_t err;
  for (;;) {
    if (a->stage == 0) {
      if (a->i == p->rounds)
        return true; /* the drop function drops tx: pong sees ECHANCLOSED */
      if (treadle_mpsc_send_poll(a->tx, cx, item_of(a->i + 1), &err) ==
          TREADLE_PENDING)
        return false;
      assert_int_equal(err, 0);
      a->stage = 1;
    }
    void *v;
    if (treadle_mpsc_recv_poll(a->rx, cx, &v, &err) == TREADLE_PENDING)
      return false;
    assert_int_equal(err, 0);
    assert_int_equal(value_of(v), a->i + 1);
    a->i++;
    a->stage = 0;
  }
}

static bool pong_kid(actor_t *a, treadle_cx_t *cx) {
  treadle_err_t err;
  for (;;) {
    if (a->stage == 0) {
      if (treadle_mpsc_recv_poll(a->rx, cx, &a->item, &err) == TREADLE_PENDING)
        return false;
      if (err == TREADLE_ECHANCLOSED)
        return true;
      assert_int_equal(err, 0);
      a->stage = 1;
    }
    if (treadle_mpsc_send_poll(a->tx, cx, a->item, &err) == TREADLE_PENDING)
      return false;
    assert_int_equal(err, 0);
    a->i++;
    a->stage = 0;
  }
}

static bool pingpong_step(actor_t *m, treadle_cx_t *cx) {
  pingpong_t *p = m->shared;
  if (m->stage == 0) {
    m->kids = calloc(2, sizeof *m->kids);
    m->nkids = 2;
    actor_init(&m->kids[0], ping_kid, p, 0);
    m->kids[0].tx = p->tx1;
    m->kids[0].rx = p->rx2;
    actor_init(&m->kids[1], pong_kid, p, 1);
    m->kids[1].tx = p->tx2;
    m->kids[1].rx = p->rx1;
    for (int i = 0; i < 2; i++)
      m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void mpsc_ping_pong(void **state) {
  (void)state;
  pingpong_t p = {.rounds = (long)test_scale(100000)};
  assert_int_equal(treadle_mpsc_new(1, NULL, &p.tx1, &p.rx1), 0);
  assert_int_equal(treadle_mpsc_new(1, NULL, &p.tx2, &p.rx2), 0);
  actor_t m;
  actor_init(&m, pingpong_step, &p, 0);
  run_main(&m);
  assert_int_equal(m.kids[0].i, p.rounds);
  assert_int_equal(m.kids[1].i, p.rounds);
  free_kids(&m);
}

/* Full: send_poll is PENDING and keeps the item; a receive makes room
 * for it, reserved against later senders. */
static bool backpressure_step(actor_t *m, treadle_cx_t *cx) {
  treadle_mpsc_rx_t *rx = m->rx;
  treadle_err_t err = 1;
  void *v;
  if (m->stage == 0) {
    assert_int_equal(treadle_mpsc_send_poll(m->tx, cx, item_of(1), &err),
                     TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(treadle_mpsc_send_poll(m->tx, cx, item_of(2), &err),
                     TREADLE_PENDING);
    assert_int_equal(cx->task->waits_on, TREADLE__WAIT_MPSC_SEND);
    assert_int_equal(treadle_mpsc_send_poll(m->tx, cx, item_of(2), &err),
                     TREADLE_PENDING); /* queued once */
    m->tx2 = treadle_mpsc_tx_clone(m->tx);
    assert_non_null(m->tx2);
    assert_int_equal(treadle_mpsc_try_send(m->tx2, item_of(3)), TREADLE_EAGAIN);
    assert_int_equal(treadle_mpsc_try_send(m->tx, item_of(3)),
                     TREADLE_EAGAIN); /* waiting: not before its turn */
    /* The receive frees the slot for tx, and wakes this task. */
    assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
    assert_int_equal(value_of(v), 1);
    assert_int_equal(treadle_mpsc_try_send(m->tx2, item_of(3)), TREADLE_EAGAIN);
    m->stage = 1;
    return false;
  }
  assert_int_equal(treadle_mpsc_send_poll(m->tx, cx, item_of(2), &err),
                   TREADLE_READY);
  assert_int_equal(err, 0);
  assert_int_equal(treadle_mpsc_recv_poll(rx, cx, &v, &err), TREADLE_READY);
  assert_int_equal(value_of(v), 2);
  assert_int_equal(treadle_mpsc_recv_poll(rx, cx, &v, &err), TREADLE_PENDING);
  assert_int_equal(cx->task->waits_on, TREADLE__WAIT_MPSC_RECV);
  assert_int_equal(treadle_mpsc_try_send(m->tx2, item_of(3)), 0);
  assert_int_equal(treadle_mpsc_recv_poll(rx, cx, &v, &err), TREADLE_READY);
  assert_int_equal(value_of(v), 3);
  return true;
}

static void mpsc_backpressure(void **state) {
  (void)state;
  actor_t m;
  actor_init(&m, backpressure_step, NULL, 0);
  assert_int_equal(treadle_mpsc_new(1, NULL, &m.tx, &m.rx), 0);
  run_main(&m); /* its drop function drops the handles */
  assert_int_equal(m.stage, 1);
  assert_null(m.tx);
  assert_null(m.rx);
}

/* A sender granted room and then dropped passes the slot on; one dropped
 * while waiting just leaves the queue. */
static bool sender_drop_step(actor_t *m, treadle_cx_t *cx) {
  treadle_mpsc_tx_t *t[4];
  treadle_err_t err;
  void *v;
  for (int i = 0; i < 4; i++) {
    t[i] = treadle_mpsc_tx_clone(m->tx);
    assert_non_null(t[i]);
  }
  assert_int_equal(treadle_mpsc_try_send(m->tx, item_of(1)), 0);
  assert_int_equal(treadle_mpsc_send_poll(t[0], cx, item_of(10), &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_mpsc_send_poll(t[1], cx, item_of(11), &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_mpsc_send_poll(t[2], cx, item_of(12), &err),
                   TREADLE_PENDING);
  /* The slot goes to t[0], which is dropped: on to t[1]. */
  assert_int_equal(treadle_mpsc_try_recv(m->rx, &v), 0);
  treadle_mpsc_tx_drop(t[0]);
  assert_int_equal(treadle_mpsc_try_send(t[3], item_of(13)), TREADLE_EAGAIN);
  assert_int_equal(treadle_mpsc_send_poll(t[2], cx, item_of(12), &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_mpsc_send_poll(t[1], cx, item_of(11), &err),
                   TREADLE_READY);
  assert_int_equal(treadle_mpsc_try_recv(m->rx, &v), 0);
  assert_int_equal(value_of(v), 11);
  /* t[2] got that slot; dropped without sending, nobody else waits: the
   * slot is free again. */
  treadle_mpsc_tx_drop(t[2]);
  assert_int_equal(treadle_mpsc_try_send(t[3], item_of(13)), 0);
  /* Dropped while waiting, never granted: the next waiter gets the room. */
  assert_int_equal(treadle_mpsc_send_poll(t[1], cx, item_of(14), &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_mpsc_send_poll(t[3], cx, item_of(15), &err),
                   TREADLE_PENDING);
  treadle_mpsc_tx_drop(t[1]);
  assert_int_equal(treadle_mpsc_try_recv(m->rx, &v), 0);
  assert_int_equal(value_of(v), 13);
  assert_int_equal(treadle_mpsc_send_poll(t[3], cx, item_of(15), &err),
                   TREADLE_READY);
  treadle_mpsc_tx_drop(t[3]);
  return true;
}

static void mpsc_dropped_sender_passes_room_on(void **state) {
  (void)state;
  actor_t m;
  actor_init(&m, sender_drop_step, NULL, 0);
  assert_int_equal(treadle_mpsc_new(1, NULL, &m.tx, &m.rx), 0);
  run_main(&m);
}

/* The same across tasks: the first blocked sender is woken for room and
 * cancelled before it can use it; the second must still get through. */
typedef struct {
  treadle_mpsc_tx_t *tx;
  _Atomic int registered;
} bshared_t;

static bool blocked_sender_kid(actor_t *a, treadle_cx_t *cx) {
  bshared_t *b = a->shared;
  treadle_err_t err;
  if (treadle_mpsc_send_poll(a->tx, cx, item_of(100 + a->id), &err) ==
      TREADLE_PENDING) {
    note_registered(a, &b->registered);
    return false;
  }
  assert_int_equal(err, 0);
  return true;
}

static bool blocked_senders_step(actor_t *m, treadle_cx_t *cx) {
  bshared_t *b = m->shared;
  void *v;
  treadle_err_t err;
  if (m->stage == 0) {
    assert_int_equal(treadle_mpsc_try_send(b->tx, item_of(1)), 0); /* full */
    m->kids = calloc(2, sizeof *m->kids);
    m->nkids = 2;
    m->stage = 1;
  }
  if (m->stage == 1) {
    while (m->i < 2) { /* queue kid 0, then kid 1 */
      if (m->i == atomic_load(&b->registered)) {
        actor_t *k = &m->kids[m->i];
        actor_init(k, blocked_sender_kid, b, (int)m->i);
        k->tx = treadle_mpsc_tx_clone(b->tx);
        k->join = spawn_actor(treadle_cx_handle(cx), k);
        m->i++;
      }
      treadle_cx_yield(cx);
      return false;
    }
    if (atomic_load(&b->registered) < 2) {
      treadle_cx_yield(cx);
      return false;
    }
    /* Room for kid 0, which is cancelled at once. */
    assert_int_equal(treadle_mpsc_try_recv(m->rx, &v), 0);
    assert_int_equal(value_of(v), 1);
    treadle_join_abort(m->kids[0].join);
    m->stage = 2;
  }
  if (m->stage == 2) {
    /* Receive until kid 1's item came (kid 0's may come first if it ran
     * before the abort). */
    for (;;) {
      if (treadle_mpsc_recv_poll(m->rx, cx, &v, &err) == TREADLE_PENDING)
        return false;
      assert_int_equal(err, 0);
      if (value_of(v) == 101)
        break;
      assert_int_equal(value_of(v), 100);
    }
    m->stage = 3;
  }
  for (int i = 0; i < 2; i++) {
    treadle_err_t st;
    if (m->kids[i].join == NULL)
      continue;
    if (treadle_join_poll(m->kids[i].join, cx, &st, NULL) == TREADLE_PENDING)
      return false;
    if (i == 1 || strcmp(test_flavor(), "ct") != 0)
      assert_true(st == 0 || st == TREADLE_ECANCELED);
    else
      assert_int_equal(st, TREADLE_ECANCELED); /* never ran: one thread */
    treadle_join_detach(m->kids[i].join);
    m->kids[i].join = NULL;
  }
  return true;
}

static void mpsc_cancelled_sender_passes_wake_on(void **state) {
  (void)state;
  bshared_t b = {0};
  actor_t m;
  actor_init(&m, blocked_senders_step, &b, 0);
  assert_int_equal(treadle_mpsc_new(1, NULL, &b.tx, &m.rx), 0);
  run_main(&m);
  treadle_mpsc_tx_drop(b.tx);
  free_kids(&m);
}

/* Threads send (try_send, falling back to send_wait; or send_wait only);
 * one task counts every item once, in order per producer. */
enum { PRODUCERS = 4 };

typedef struct {
  treadle_mpsc_tx_t *tx;
  int id;
  long n;
} producer_t;

static void *producer_thread(void *arg) {
  producer_t *p = arg;
  for (long i = 0; i < p->n; i++) {
    void *item = item_of((long)p->id << 32 | (i + 1));
    treadle_err_t rc =
        p->id % 2 == 0 ? treadle_mpsc_try_send(p->tx, item) : TREADLE_EAGAIN;
    if (rc == TREADLE_EAGAIN)
      rc = treadle_mpsc_send_wait(p->tx, item);
    assert_int_equal(rc, 0);
  }
  treadle_mpsc_tx_drop(p->tx);
  return NULL;
}

static bool consumer_step(actor_t *m, treadle_cx_t *cx) {
  long *next = m->shared; /* PRODUCERS counters */
  for (;;) {
    void *v;
    treadle_err_t err;
    if (treadle_mpsc_recv_poll(m->rx, cx, &v, &err) == TREADLE_PENDING)
      return false;
    if (err == TREADLE_ECHANCLOSED)
      return true;
    assert_int_equal(err, 0);
    long x = value_of(v);
    int p = (int)(x >> 32);
    assert_true(p >= 0 && p < PRODUCERS);
    assert_int_equal(x & 0xffffffff, ++next[p]);
    m->i++;
  }
}

static void mpsc_many_producer_threads(void **state) {
  (void)state;
  long n = (long)test_scale(20000);
  treadle_mpsc_tx_t *tx;
  actor_t m;
  actor_init(&m, consumer_step, NULL, 0);
  long next[PRODUCERS] = {0};
  m.shared = next;
  assert_int_equal(treadle_mpsc_new(16, NULL, &tx, &m.rx), 0);
  producer_t ps[PRODUCERS];
  pthread_t th[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++) {
    ps[i] = (producer_t){.tx = treadle_mpsc_tx_clone(tx), .id = i, .n = n};
    assert_non_null(ps[i].tx);
  }
  treadle_mpsc_tx_drop(tx);
  for (int i = 0; i < PRODUCERS; i++)
    pthread_create(&th[i], NULL, producer_thread, &ps[i]);
  run_main_joining(&m, th, PRODUCERS);
  for (int i = 0; i < PRODUCERS; i++)
    assert_int_equal(next[i], n);
  assert_int_equal(m.i, PRODUCERS * n);
}

/* The other way round: tasks send, a plain thread receives with
 * recv_wait; send_wait and recv_wait refuse to run on a task's thread. */
typedef struct {
  treadle_mpsc_rx_t *rx;
  long n;
  long got;
  long sum;
} waitrx_t;

static void *recv_wait_consumer(void *arg) {
  waitrx_t *w = arg;
  for (;;) {
    void *v;
    treadle_err_t rc = treadle_mpsc_recv_wait(w->rx, &v);
    if (rc == TREADLE_ECHANCLOSED)
      break;
    assert_int_equal(rc, 0);
    w->got++;
    w->sum += value_of(v);
  }
  treadle_mpsc_rx_drop(w->rx);
  return NULL;
}

static bool task_sender_kid(actor_t *a, treadle_cx_t *cx) {
  long n = *(long *)a->shared;
  treadle_err_t err;
  while (a->i < n) {
    if (treadle_mpsc_send_poll(a->tx, cx, item_of(a->i + 1), &err) ==
        TREADLE_PENDING)
      return false;
    assert_int_equal(err, 0);
    a->i++;
  }
  return true; /* drops its tx */
}

static bool task_senders_step(actor_t *m, treadle_cx_t *cx) {
  if (m->stage == 0) {
    /* The blocking calls refuse to run on a thread that runs tasks. The
     * receiver (m->item, borrowed) lives while this task holds m->tx. */
    void *v = (void *)1;
    assert_int_equal(treadle_mpsc_send_wait(m->tx, item_of(1)),
                     TREADLE_EINRUNTIME);
    assert_int_equal(treadle_mpsc_recv_wait(m->item, &v), TREADLE_EINRUNTIME);
    assert_null(v);
    m->kids = calloc(3, sizeof *m->kids);
    m->nkids = 3;
    for (int i = 0; i < 3; i++) {
      actor_init(&m->kids[i], task_sender_kid, m->shared, i);
      m->kids[i].tx = treadle_mpsc_tx_clone(m->tx);
      assert_non_null(m->kids[i].tx);
      m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
    }
    treadle_mpsc_tx_drop(m->tx);
    m->tx = NULL;
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void mpsc_recv_wait_from_a_thread(void **state) {
  (void)state;
  long n = (long)test_scale(20000);
  waitrx_t w = {.n = n};
  actor_t m;
  actor_init(&m, task_senders_step, &n, 0);
  assert_int_equal(treadle_mpsc_new(2, NULL, &m.tx, &w.rx), 0);
  m.item = w.rx;
  pthread_t th;
  pthread_create(&th, NULL, recv_wait_consumer, &w);
  run_main_joining(&m, &th, 1);
  assert_int_equal(w.got, 3 * n);
  assert_int_equal(w.sum, 3 * (n * (n + 1) / 2));
  free_kids(&m);
}

static void mpsc_closing(void **state) {
  (void)state;
  treadle_mpsc_tx_t *tx, *tx2;
  treadle_mpsc_rx_t *rx;
  void *v;
  /* Last sender gone: drain, then ECHANCLOSED. */
  assert_int_equal(treadle_mpsc_new(8, NULL, &tx, &rx), 0);
  tx2 = treadle_mpsc_tx_clone(tx);
  for (long i = 1; i <= 3; i++)
    assert_int_equal(treadle_mpsc_try_send(i % 2 ? tx : tx2, item_of(i)), 0);
  treadle_mpsc_tx_drop(tx);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
  assert_int_equal(value_of(v), 1);
  treadle_mpsc_tx_drop(tx2);
  for (long i = 2; i <= 3; i++) {
    assert_int_equal(treadle_mpsc_recv_wait(rx, &v), 0);
    assert_int_equal(value_of(v), i);
  }
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_ECHANCLOSED);
  assert_int_equal(treadle_mpsc_recv_wait(rx, &v), TREADLE_ECHANCLOSED);
  treadle_mpsc_rx_drop(rx);
  /* Receiver closed: sends fail, queued items still come. */
  assert_int_equal(treadle_mpsc_new(8, NULL, &tx, &rx), 0);
  assert_int_equal(treadle_mpsc_try_send(tx, item_of(1)), 0);
  assert_int_equal(treadle_mpsc_try_send(tx, item_of(2)), 0);
  treadle_mpsc_rx_close(rx);
  assert_int_equal(treadle_mpsc_try_send(tx, item_of(3)), TREADLE_ECHANCLOSED);
  assert_int_equal(treadle_mpsc_send_wait(tx, item_of(3)), TREADLE_ECHANCLOSED);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
  assert_int_equal(value_of(v), 1);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
  assert_int_equal(value_of(v), 2);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_ECHANCLOSED);
  treadle_mpsc_tx_drop(tx);
  treadle_mpsc_rx_drop(rx);
}

/* Receiver dropped: queued items go to drop_item exactly once; sends fail
 * and keep their item; a blocked sender wakes with ECHANCLOSED. */
static _Atomic int items_dropped;
static void free_item(void *item) {
  atomic_fetch_add(&items_dropped, 1);
  free(item);
}

static void *blocked_send_thread(void *arg) {
  treadle_mpsc_tx_t *tx = arg;
  int *item = malloc(sizeof *item);
  assert_int_equal(treadle_mpsc_send_wait(tx, item), TREADLE_ECHANCLOSED);
  free(item); /* not taken */
  treadle_mpsc_tx_drop(tx);
  return NULL;
}

static void mpsc_rx_dropped_drops_items_once(void **state) {
  (void)state;
  atomic_store(&items_dropped, 0);
  treadle_mpsc_tx_t *tx;
  treadle_mpsc_rx_t *rx;
  assert_int_equal(treadle_mpsc_new(3, free_item, &tx, &rx), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(treadle_mpsc_try_send(tx, malloc(sizeof(int))), 0);
  pthread_t th;
  pthread_create(&th, NULL, blocked_send_thread, treadle_mpsc_tx_clone(tx));
  treadle_mpsc_rx_drop(rx);
  assert_int_equal(atomic_load(&items_dropped), 3);
  pthread_join(th, NULL);
  int *mine = malloc(sizeof *mine);
  assert_int_equal(treadle_mpsc_try_send(tx, mine), TREADLE_ECHANCLOSED);
  assert_int_equal(treadle_mpsc_send_wait(tx, mine), TREADLE_ECHANCLOSED);
  free(mine); /* still ours */
  treadle_mpsc_tx_drop(tx);
  assert_int_equal(atomic_load(&items_dropped), 3);
}

/* A task blocked in send_poll sees ECHANCLOSED when the receiver goes, and
 * its item is not taken. */
static bool rx_gone_kid(actor_t *a, treadle_cx_t *cx) {
  if (treadle_mpsc_send_poll(a->tx, cx, a->item, &a->err) == TREADLE_PENDING) {
    note_registered(a, a->shared);
    return false;
  }
  return true;
}

static bool rx_gone_step(actor_t *m, treadle_cx_t *cx) {
  _Atomic int *registered = m->shared;
  if (m->stage == 0) {
    assert_int_equal(treadle_mpsc_try_send(m->tx, m->item), 0); /* full */
    m->item = NULL;
    m->kids = calloc(1, sizeof *m->kids);
    m->nkids = 1;
    actor_init(&m->kids[0], rx_gone_kid, registered, 0);
    m->kids[0].tx = treadle_mpsc_tx_clone(m->tx);
    m->kids[0].item = malloc(sizeof(int));
    m->kids[0].err = 1;
    m->kids[0].join = spawn_actor(treadle_cx_handle(cx), &m->kids[0]);
    m->stage = 1;
  }
  if (m->stage == 1) {
    if (atomic_load(registered) == 0) { /* until the kid is blocked */
      treadle_cx_yield(cx);
      return false;
    }
    treadle_mpsc_rx_drop(m->rx);
    m->rx = NULL;
    assert_int_equal(atomic_load(&items_dropped), 1); /* the queued one */
    m->stage = 2;
  }
  if (!join_kids(m, cx))
    return false;
  assert_int_equal(m->kids[0].err, TREADLE_ECHANCLOSED);
  free(m->kids[0].item); /* not taken */
  return true;
}

static void mpsc_rx_dropped_fails_blocked_task(void **state) {
  (void)state;
  atomic_store(&items_dropped, 0);
  _Atomic int registered = 0;
  actor_t m;
  actor_init(&m, rx_gone_step, &registered, 0);
  assert_int_equal(treadle_mpsc_new(1, free_item, &m.tx, &m.rx), 0);
  m.item = malloc(sizeof(int));
  run_main(&m);
  assert_int_equal(atomic_load(&items_dropped), 1);
  free_kids(&m);
}

/* The coop budget cuts a loop of ready receives and acquires at 128. */
static bool budget_step(actor_t *m, treadle_cx_t *cx) {
  treadle_semaphore_t *s = m->shared;
  if (m->stage == 0) {
    long got = 0;
    for (;;) {
      void *v;
      treadle_err_t err;
      if (treadle_mpsc_recv_poll(m->rx, cx, &v, &err) == TREADLE_PENDING)
        break;
      got++;
    }
    assert_int_equal(got, 128);
    m->stage = 1;
    return false; /* polled again: the budget asked for it */
  }
  if (m->stage == 1) {
    long got = 0;
    for (;;) {
      treadle_err_t err;
      if (treadle_semaphore_acquire_poll(s, cx, &m->w, 1, &err) ==
          TREADLE_PENDING)
        break;
      got++;
    }
    assert_int_equal(got, 128);
    assert_int_equal(treadle_semaphore_available(s), 1000 - 128);
    m->stage = 2;
    return false;
  }
  return true;
}

static void coop_budget_cuts_ready_loops(void **state) {
  (void)state;
  treadle_semaphore_t *s;
  assert_int_equal(treadle_semaphore_new(1000, &s), 0);
  actor_t m;
  actor_init(&m, budget_step, s, 0);
  assert_int_equal(treadle_mpsc_new(300, NULL, &m.tx, &m.rx), 0);
  for (long i = 0; i < 300; i++)
    assert_int_equal(treadle_mpsc_try_send(m.tx, item_of(i)), 0);
  run_main(&m);
  assert_int_equal(m.stage, 2);
  treadle_semaphore_unref(s);
}

static void mpsc_rejects_bad_input(void **state) {
  (void)state;
  treadle_mpsc_tx_t *tx = (treadle_mpsc_tx_t *)1;
  treadle_mpsc_rx_t *rx = (treadle_mpsc_rx_t *)1;
  void *v = (void *)1;
  assert_int_equal(treadle_mpsc_new(0, NULL, &tx, &rx), TREADLE_EINVAL);
  assert_null(tx);
  assert_null(rx);
  assert_int_equal(treadle_mpsc_new(((size_t)1 << 30) + 1, NULL, &tx, &rx),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_mpsc_new(1, NULL, NULL, &rx), TREADLE_EINVAL);
  assert_int_equal(treadle_mpsc_new(1, NULL, &tx, NULL), TREADLE_EINVAL);
  assert_null(treadle_mpsc_tx_clone(NULL));
  treadle_mpsc_tx_drop(NULL);
  treadle_mpsc_rx_drop(NULL);
  treadle_mpsc_rx_close(NULL);
  assert_int_equal(treadle_mpsc_try_send(NULL, v), TREADLE_EINVAL);
  assert_int_equal(treadle_mpsc_send_wait(NULL, v), TREADLE_EINVAL);
  assert_int_equal(treadle_mpsc_try_recv(NULL, &v), TREADLE_EINVAL);
  assert_null(v);
  v = (void *)1;
  assert_int_equal(treadle_mpsc_recv_wait(NULL, &v), TREADLE_EINVAL);
  assert_null(v);
  treadle_err_t err = 0;
  assert_int_equal(treadle_mpsc_send_poll(NULL, NULL, v, &err), TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  err = 0;
  assert_int_equal(treadle_mpsc_recv_poll(NULL, NULL, &v, &err), TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  /* An item received with item == NULL goes to drop_item. */
  atomic_store(&items_dropped, 0);
  assert_int_equal(treadle_mpsc_new(2, free_item, &tx, &rx), 0);
  assert_int_equal(treadle_mpsc_try_send(tx, malloc(1)), 0);
  assert_int_equal(treadle_mpsc_try_recv(rx, NULL), 0);
  assert_int_equal(atomic_load(&items_dropped), 1);
  treadle_mpsc_tx_drop(tx);
  treadle_mpsc_rx_drop(rx);
  /* Notify. */
  assert_int_equal(treadle_notify_new(NULL), TREADLE_EINVAL);
  treadle_notify_one(NULL);
  treadle_notify_waiters(NULL);
  treadle_notify_unref(NULL);
  assert_null(treadle_notify_ref(NULL));
  assert_int_equal(treadle_notify_poll(NULL, NULL, NULL), TREADLE_READY);
}

/* ----------------------------------------------------- out of memory */

static void sync_new_out_of_memory(void **state) {
  (void)state;
  treadle_notify_t *n = (treadle_notify_t *)1;
  treadle_mutex_t *mu = (treadle_mutex_t *)1;
  treadle_semaphore_t *s = (treadle_semaphore_t *)1;
  treadle_oneshot_tx_t *otx = (treadle_oneshot_tx_t *)1;
  treadle_oneshot_rx_t *orx = (treadle_oneshot_rx_t *)1;
  treadle_mpsc_tx_t *tx = (treadle_mpsc_tx_t *)1;
  treadle_mpsc_rx_t *rx = (treadle_mpsc_rx_t *)1;
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_notify_new(&n), TREADLE_ENOMEM);
  assert_null(n);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_mutex_new(&mu), TREADLE_ENOMEM);
  assert_null(mu);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_semaphore_new(1, &s), TREADLE_ENOMEM);
  assert_null(s);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_oneshot_new(NULL, &otx, &orx), TREADLE_ENOMEM);
  assert_null(otx);
  assert_null(orx);
  for (long k = 0; k <= 1; k++) { /* the channel, then its first sender */
    tx = (treadle_mpsc_tx_t *)1;
    rx = (treadle_mpsc_rx_t *)1;
    treadle__alloc_fail_after(k);
    assert_int_equal(treadle_mpsc_new(4, NULL, &tx, &rx), TREADLE_ENOMEM);
    assert_null(tx);
    assert_null(rx);
  }
  treadle__alloc_fail_after(-1);
  /* A clone that cannot be allocated: NULL, the channel unchanged. */
  assert_int_equal(treadle_mpsc_new(1, NULL, &tx, &rx), 0);
  treadle__alloc_fail_after(0);
  assert_null(treadle_mpsc_tx_clone(tx));
  treadle_mpsc_tx_drop(tx);
  void *v;
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_ECHANCLOSED);
  treadle_mpsc_rx_drop(rx);
  /* A blocking wait whose parker cannot be allocated. */
  assert_int_equal(treadle_oneshot_new(NULL, &otx, &orx), 0);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_oneshot_recv_wait(orx, &v), TREADLE_ENOMEM);
  assert_int_equal(treadle_oneshot_send(otx, item_of(5)), 0);
  assert_int_equal(treadle_oneshot_recv_wait(orx, &v), 0);
  assert_int_equal(value_of(v), 5);
  treadle_oneshot_rx_drop(orx);
  assert_int_equal(treadle_mpsc_new(1, NULL, &tx, &rx), 0);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_mpsc_recv_wait(rx, &v), TREADLE_ENOMEM);
  assert_int_equal(treadle_mpsc_try_send(tx, item_of(1)), 0);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_mpsc_send_wait(tx, item_of(2)), TREADLE_ENOMEM);
  treadle__alloc_fail_after(-1);
  treadle_mpsc_tx_drop(tx);
  treadle_mpsc_rx_drop(rx);
}

static const struct CMUnitTest tests[] = {
    TEST(mpsc_fifo_and_capacity),
    RT_TEST(mpsc_ping_pong),
    RT_TEST(mpsc_backpressure),
    RT_TEST(mpsc_dropped_sender_passes_room_on),
    RT_TEST(mpsc_cancelled_sender_passes_wake_on),
    RT_TEST(mpsc_many_producer_threads),
    RT_TEST(mpsc_recv_wait_from_a_thread),
    TEST(mpsc_closing),
    TEST(mpsc_rx_dropped_drops_items_once),
    RT_TEST(mpsc_rx_dropped_fails_blocked_task),
    RT_TEST(coop_budget_cuts_ready_loops),
    TEST(mpsc_rejects_bad_input),
    TEST(sync_new_out_of_memory),
};

TEST_MAIN(tests)
