/* The datagram tests' shared helpers (dgram_util.h). */
#define _GNU_SOURCE
#include "dgram_util.h"

/* One leaf, polled to its end; the task records, the test asserts. */
typedef struct {
  treadle_dgram_t *d;
  void *buf;
  size_t len;
  const struct sockaddr_storage *to; /* send: NULL for the peer */
  struct sockaddr_storage *from;     /* recv: may be NULL */
  bool sending;
  treadle_err_t err;
  size_t n;
} dg_op_t;

static treadle_poll_t op_step(treadle_cx_t *cx, void *st) {
  dg_op_t *o = st;
  if (o->sending)
    return o->to != NULL
               ? treadle_dgram_send_to_poll(o->d, cx, o->buf, o->len, o->to,
                                            &o->n, &o->err)
               : treadle_dgram_send_poll(o->d, cx, o->buf, o->len, &o->n,
                                         &o->err);
  return treadle_dgram_recv_from_poll(o->d, cx, o->buf, o->len, o->from, &o->n,
                                      &o->err);
}

typedef struct {
  dg_op_t *op;
  test_deadline_t deadline;
  long timeout_ms;
} op_task_t;

static treadle_poll_t op_task_poll(treadle_cx_t *cx, void *st) {
  op_task_t *t = st;
  treadle_err_t err;
  if (test_within(&t->deadline, t->timeout_ms, cx, op_step, t->op, &err) ==
      TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err != 0)
    t->op->err = err; /* ETIMEDOUT */
  return TREADLE_READY;
}

static void op_task_drop(void *st) {
  treadle_sleep_drop(&((op_task_t *)st)->deadline.sleep);
}

static const treadle_task_vtable_t op_task_vt = {.poll = op_task_poll,
                                                 .drop = op_task_drop};

static void run_op(treadle_runtime_t *rt, dg_op_t *op, long timeout_ms) {
  op_task_t t = {.op = op, .timeout_ms = timeout_ms};
  assert_int_equal(RUN(rt, &op_task_vt, t), 0);
}

treadle_err_t dg_send(treadle_runtime_t *rt, treadle_dgram_t *d,
                      const void *buf, size_t len,
                      const struct sockaddr_storage *to) {
  dg_op_t op = {.d = d, .buf = (void *)buf, .len = len, .to = to,
                .sending = true, .n = 12345};
  run_op(rt, &op, 10000);
  if (op.err == 0)
    assert_int_equal(op.n, len);
  else
    assert_int_equal(op.n, 0);
  return op.err;
}

treadle_err_t dg_recv(treadle_runtime_t *rt, treadle_dgram_t *d, void *buf,
                      size_t room, size_t *n, struct sockaddr_storage *from,
                      long timeout_ms) {
  dg_op_t op = {.d = d, .buf = buf, .len = room, .from = from, .n = 12345};
  run_op(rt, &op, timeout_ms);
  *n = op.n;
  return op.err;
}

typedef struct {
  treadle_dgram_t *d;
  treadle_dgram_msg_t *msgs;
  size_t count, done;
  bool sending;
  treadle_err_t err;
} batch_op_t;

static treadle_poll_t batch_poll(treadle_cx_t *cx, void *st) {
  batch_op_t *b = *(batch_op_t **)st;
  return b->sending ? treadle_dgram_send_many_poll(b->d, cx, b->msgs, b->count,
                                                   &b->done, &b->err)
                    : treadle_dgram_recv_many_poll(b->d, cx, b->msgs, b->count,
                                                   &b->done, &b->err);
}

treadle_err_t dg_batch(treadle_runtime_t *rt, treadle_dgram_t *d,
                       treadle_dgram_msg_t *msgs, size_t count, bool sending,
                       size_t *done) {
  static const treadle_task_vtable_t vt = {.poll = batch_poll};
  batch_op_t b = {.d = d, .msgs = msgs, .count = count, .sending = sending,
                  .done = 999};
  batch_op_t *p = &b;
  assert_int_equal(RUN(rt, &vt, p), 0);
  *done = b.done;
  return b.err;
}

static treadle_poll_t waiter_poll(treadle_cx_t *cx, void *st) {
  dg_waiter_t *w = *(dg_waiter_t **)st;
  atomic_fetch_add(&w->polls, 1);
  if (treadle_dgram_recv_poll(w->d, cx, w->buf, sizeof w->buf, &w->n,
                              &w->err) == TREADLE_PENDING) {
    atomic_store(&w->parked, 1);
    return TREADLE_PENDING;
  }
  return TREADLE_READY;
}

static const treadle_task_vtable_t waiter_vt = {.poll = waiter_poll};

treadle_join_t *dg_waiter_spawn(treadle_runtime_t *rt, dg_waiter_t *w) {
  treadle_join_t *j = NULL;
  dg_waiter_t *p = w;
  assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &waiter_vt, &p,
                                 sizeof p, &j),
                   0);
  return j;
}

void dg_waiter_wait_parked(treadle_runtime_t *rt, dg_waiter_t *w) {
  test_until_flags_t u = {.flags = &w->parked, .n = 1};
  assert_int_equal(RUN(rt, &test_until_flags_vt, u), 0);
}

typedef struct {
  treadle_join_t *j;
} join_one_t;

static treadle_poll_t join_one_poll(treadle_cx_t *cx, void *st) {
  join_one_t *o = st;
  treadle_err_t status;
  if (treadle_join_poll(o->j, cx, &status, NULL) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, status, NULL);
  return TREADLE_READY;
}

static const treadle_task_vtable_t join_one_vt = {.poll = join_one_poll};

void dg_waiter_join(treadle_runtime_t *rt, treadle_join_t *j) {
  join_one_t o = {j};
  assert_int_equal(RUN(rt, &join_one_vt, o), 0);
  treadle_join_detach(j);
}

int dg_port(const struct sockaddr_storage *a) {
  char buf[64];
  return treadle_sockaddr_format(a, buf, sizeof buf);
}

treadle_dgram_t *dg_bound(treadle_runtime_t *rt, const char *host,
                          struct sockaddr_storage *addr) {
  treadle_dgram_t *d = NULL;
  assert_int_equal(
      treadle_udp_bind(treadle_runtime_handle(rt), host, 0, NULL, &d), 0);
  assert_non_null(d);
  assert_int_equal(treadle_dgram_local_addr(d, addr), 0);
  assert_true(dg_port(addr) > 0);
  return d;
}
