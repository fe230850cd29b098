/* oneshot: send and receive from tasks and threads, who owns the value
 * and who drops it, many channels served from a thread. */
#include "sync_util.h"

static _Atomic int values_dropped;
static void count_value_drop(void *v) {
  assert_non_null(v);
  atomic_fetch_add(&values_dropped, 1);
}

typedef struct {
  treadle_oneshot_tx_t *tx;
  treadle_oneshot_rx_t *rx;
  void *value;
} oshared_t;

static void *send_from_thread(void *arg) {
  oshared_t *o = arg;
  assert_int_equal(treadle_oneshot_send(o->tx, o->value), 0);
  return NULL;
}

static void *drop_tx_from_thread(void *arg) {
  treadle_oneshot_tx_drop(((oshared_t *)arg)->tx);
  return NULL;
}

static bool oneshot_recv_step(actor_t *m, treadle_cx_t *cx) {
  oshared_t *o = m->shared;
  void *v = (void *)1;
  treadle_err_t err = 1;
  if (m->stage == 0) {
    assert_int_equal(treadle_oneshot_recv_poll(o->rx, cx, &v, &err),
                     TREADLE_PENDING);
    assert_int_equal(cx->task->waits_on, TREADLE__WAIT_ONESHOT);
    assert_int_equal(treadle_oneshot_recv_poll(o->rx, cx, &v, &err),
                     TREADLE_PENDING); /* again: one waker slot */
    pthread_t *th = m->item;
    pthread_create(th, NULL,
                   m->id == 0 ? send_from_thread : drop_tx_from_thread, o);
    m->stage = 1;
    return false;
  }
  if (treadle_oneshot_recv_poll(o->rx, cx, &v, &err) == TREADLE_PENDING)
    return false;
  m->err = err;
  m->v = value_of(v);
  err = 1;
  assert_int_equal(treadle_oneshot_recv_poll(o->rx, cx, &v, &err),
                   TREADLE_READY);
  assert_int_equal(err, m->err == 0 ? TREADLE_EJOINED : TREADLE_ECHANCLOSED);
  assert_null(v);
  return true;
}

static void oneshot_send_and_recv(void **state) {
  (void)state;
  atomic_store(&values_dropped, 0);
  for (int id = 0; id <= 1; id++) { /* 0: send; 1: sender dropped */
    oshared_t o = {.value = item_of(42)};
    assert_int_equal(treadle_oneshot_new(count_value_drop, &o.tx, &o.rx), 0);
    pthread_t th;
    actor_t m;
    actor_init(&m, oneshot_recv_step, &o, id);
    m.item = &th;
    run_main_joining(&m, &th, 1);
    assert_int_equal(m.err, id == 0 ? 0 : TREADLE_ECHANCLOSED);
    assert_int_equal(m.v, id == 0 ? 42 : 0);
    treadle_oneshot_rx_drop(o.rx);
  }
  assert_int_equal(atomic_load(&values_dropped), 0); /* received: ours */
}

static void oneshot_value_ownership(void **state) {
  (void)state;
  atomic_store(&values_dropped, 0);
  treadle_oneshot_tx_t *tx;
  treadle_oneshot_rx_t *rx;
  int value;
  void *v;
  /* Receiver gone: the send fails and the value is not taken. */
  assert_int_equal(treadle_oneshot_new(count_value_drop, &tx, &rx), 0);
  treadle_oneshot_rx_drop(rx);
  assert_int_equal(treadle_oneshot_send(tx, &value), TREADLE_ECHANCLOSED);
  assert_int_equal(atomic_load(&values_dropped), 0);
  /* Sent, never received: dropped with the receiver, once. */
  assert_int_equal(treadle_oneshot_new(count_value_drop, &tx, &rx), 0);
  assert_int_equal(treadle_oneshot_send(tx, &value), 0);
  treadle_oneshot_rx_drop(rx);
  assert_int_equal(atomic_load(&values_dropped), 1);
  /* Sent, received (recv_wait from a plain thread): the receiver's. */
  assert_int_equal(treadle_oneshot_new(count_value_drop, &tx, &rx), 0);
  assert_int_equal(treadle_oneshot_send(tx, &value), 0);
  assert_int_equal(treadle_oneshot_recv_wait(rx, &v), 0);
  assert_ptr_equal(v, &value);
  assert_int_equal(treadle_oneshot_recv_wait(rx, &v), TREADLE_EJOINED);
  assert_null(v);
  treadle_oneshot_rx_drop(rx);
  assert_int_equal(atomic_load(&values_dropped), 1);
  /* Received with value NULL: declined, so dropped. */
  assert_int_equal(treadle_oneshot_new(count_value_drop, &tx, &rx), 0);
  assert_int_equal(treadle_oneshot_send(tx, &value), 0);
  assert_int_equal(treadle_oneshot_recv_wait(rx, NULL), 0);
  treadle_oneshot_rx_drop(rx);
  assert_int_equal(atomic_load(&values_dropped), 2);
  /* Sender dropped: recv_wait sees ECHANCLOSED. */
  assert_int_equal(treadle_oneshot_new(NULL, &tx, &rx), 0);
  treadle_oneshot_tx_drop(tx);
  assert_int_equal(treadle_oneshot_recv_wait(rx, &v), TREADLE_ECHANCLOSED);
  treadle_oneshot_rx_drop(rx);
  /* Bad input. */
  assert_int_equal(treadle_oneshot_new(NULL, NULL, &rx), TREADLE_EINVAL);
  assert_null(rx);
  assert_int_equal(treadle_oneshot_send(NULL, &value), TREADLE_EINVAL);
  assert_int_equal(treadle_oneshot_recv_wait(NULL, &v), TREADLE_EINVAL);
  treadle_err_t err = 0;
  assert_int_equal(treadle_oneshot_recv_poll(NULL, NULL, &v, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  treadle_oneshot_tx_drop(NULL);
  treadle_oneshot_rx_drop(NULL);
}

/* Threads block in recv_wait; tasks send. */
enum { WAIT_THREADS = 8 };

static void *recv_wait_thread(void *arg) {
  oshared_t *o = arg;
  void *v = NULL;
  assert_int_equal(treadle_oneshot_recv_wait(o->rx, &v), 0);
  assert_ptr_equal(v, o->value);
  treadle_oneshot_rx_drop(o->rx);
  return NULL;
}

static bool oneshot_send_kid(actor_t *a, treadle_cx_t *cx) {
  (void)cx;
  oshared_t *o = a->shared;
  assert_int_equal(treadle_oneshot_send(o->tx, o->value), 0);
  return true;
}

static bool oneshot_senders_step(actor_t *m, treadle_cx_t *cx) {
  oshared_t *os = m->shared;
  if (m->stage == 0) {
    /* recv_wait refuses to block a thread that runs tasks. */
    treadle_oneshot_tx_t *tx;
    treadle_oneshot_rx_t *rx;
    void *v = (void *)1;
    assert_int_equal(treadle_oneshot_new(NULL, &tx, &rx), 0);
    assert_int_equal(treadle_oneshot_recv_wait(rx, &v), TREADLE_EINRUNTIME);
    assert_null(v);
    treadle_oneshot_tx_drop(tx);
    treadle_oneshot_rx_drop(rx);
    m->kids = calloc(WAIT_THREADS, sizeof *m->kids);
    m->nkids = WAIT_THREADS;
    for (int i = 0; i < WAIT_THREADS; i++) {
      actor_init(&m->kids[i], oneshot_send_kid, &os[i], i);
      m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
    }
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void oneshot_recv_wait_from_threads(void **state) {
  (void)state;
  oshared_t os[WAIT_THREADS];
  pthread_t th[WAIT_THREADS];
  for (int i = 0; i < WAIT_THREADS; i++) {
    os[i].value = item_of(100 + i);
    assert_int_equal(treadle_oneshot_new(NULL, &os[i].tx, &os[i].rx), 0);
    pthread_create(&th[i], NULL, recv_wait_thread, &os[i]);
  }
  actor_t m;
  actor_init(&m, oneshot_senders_step, os, 0);
  run_main_joining(&m, th, WAIT_THREADS);
  free_kids(&m);
}

/* Many oneshots: each task receives one, sent from a thread. */
typedef struct {
  oshared_t *os;
  size_t n;
} omany_t;

static bool oneshot_recv_kid(actor_t *a, treadle_cx_t *cx) {
  oshared_t *o = a->shared;
  void *v;
  treadle_err_t err;
  if (treadle_oneshot_recv_poll(o->rx, cx, &v, &err) == TREADLE_PENDING)
    return false;
  assert_int_equal(err, 0);
  assert_ptr_equal(v, o->value);
  treadle_oneshot_rx_drop(o->rx);
  o->rx = NULL;
  return true;
}

static void *oneshot_many_sender(void *arg) {
  omany_t *om = arg;
  for (size_t i = 0; i < om->n; i++) {
    if (i % 4 == 3)
      treadle_oneshot_tx_drop(om->os[i].tx);
    else
      assert_int_equal(treadle_oneshot_send(om->os[i].tx, om->os[i].value), 0);
  }
  return NULL;
}

static bool oneshot_closed_kid(actor_t *a, treadle_cx_t *cx) {
  oshared_t *o = a->shared;
  void *v;
  treadle_err_t err;
  if (treadle_oneshot_recv_poll(o->rx, cx, &v, &err) == TREADLE_PENDING)
    return false;
  assert_int_equal(err, TREADLE_ECHANCLOSED);
  treadle_oneshot_rx_drop(o->rx);
  o->rx = NULL;
  return true;
}

static bool oneshot_many_step(actor_t *m, treadle_cx_t *cx) {
  omany_t *om = m->shared;
  if (m->stage == 0) {
    m->kids = calloc(om->n, sizeof *m->kids);
    m->nkids = om->n;
    for (size_t i = 0; i < om->n; i++) {
      actor_init(&m->kids[i],
                 i % 4 == 3 ? oneshot_closed_kid : oneshot_recv_kid, &om->os[i],
                 (int)i);
      m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
    }
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void oneshot_many_from_a_thread(void **state) {
  (void)state;
  omany_t om = {.n = test_scale(2000)};
  om.os = calloc(om.n, sizeof *om.os);
  for (size_t i = 0; i < om.n; i++) {
    om.os[i].value = item_of((long)i + 1);
    assert_int_equal(treadle_oneshot_new(NULL, &om.os[i].tx, &om.os[i].rx), 0);
  }
  pthread_t th;
  pthread_create(&th, NULL, oneshot_many_sender, &om);
  actor_t m;
  actor_init(&m, oneshot_many_step, &om, 0);
  run_main_joining(&m, &th, 1);
  for (size_t i = 0; i < om.n; i++)
    assert_null(om.os[i].rx);
  free_kids(&m);
  free(om.os);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(oneshot_send_and_recv),
    TEST(oneshot_value_ownership),
    RT_TEST(oneshot_recv_wait_from_threads),
    RT_TEST(oneshot_many_from_a_thread),
};

TEST_MAIN(tests)
