/* Datagram sockets misused (issue 14 items 1 and 4): NULL and bad
 * arguments to every new function, a socket used after close (and close
 * waking a waiting receiver), a runtime without I/O, sending on an
 * unconnected socket without an address, and a socket polled from a task
 * of another runtime (EFOREIGN at once). Each is an error code whose
 * message makes sense; nothing hangs, nothing leaks. */
#define _GNU_SOURCE
#include "dgram_util.h"

/* Every datagram leaf once, at its first poll, on `d` with the given
 * buffers: each one's error (1 when it was PENDING). */
typedef struct {
  treadle_dgram_t *d;
  void *buf;
  size_t len;
  const struct sockaddr_storage *to;
  treadle_dgram_msg_t *msgs;
  size_t count;
  bool null_n;
  treadle_err_t send, send_to, recv, recv_from, send_many, recv_many;
  size_t n; /* what the leaves left in their count: 0 */
} leaves_t;

#define AT_ONCE(call) ((call) == TREADLE_READY ? err : 1)

static treadle_poll_t leaves_poll(treadle_cx_t *cx, void *st) {
  leaves_t *l = *(leaves_t **)st;
  treadle_err_t err = 0;
  size_t n = 7, *np = l->null_n ? NULL : &n;
  struct sockaddr_storage from;
  l->send = AT_ONCE(treadle_dgram_send_poll(l->d, cx, l->buf, l->len, np, &err));
  l->send_to = AT_ONCE(
      treadle_dgram_send_to_poll(l->d, cx, l->buf, l->len, l->to, np, &err));
  l->recv = AT_ONCE(treadle_dgram_recv_poll(l->d, cx, l->buf, l->len, np, &err));
  l->recv_from = AT_ONCE(treadle_dgram_recv_from_poll(l->d, cx, l->buf, l->len,
                                                      &from, np, &err));
  l->send_many = AT_ONCE(
      treadle_dgram_send_many_poll(l->d, cx, l->msgs, l->count, np, &err));
  l->recv_many = AT_ONCE(
      treadle_dgram_recv_many_poll(l->d, cx, l->msgs, l->count, np, &err));
  l->n = l->null_n ? 0 : n;
  return TREADLE_READY;
}

static void run_leaves(treadle_runtime_t *rt, leaves_t *l) {
  static const treadle_task_vtable_t vt = {.poll = leaves_poll};
  assert_int_equal(RUN(rt, &vt, l), 0);
}

static void assert_all(const leaves_t *l, treadle_err_t want) {
  assert_int_equal(l->send, want);
  assert_int_equal(l->send_to, want);
  assert_int_equal(l->recv, want);
  assert_int_equal(l->recv_from, want);
  assert_int_equal(l->send_many, want);
  assert_int_equal(l->recv_many, want);
  assert_int_equal(l->n, 0); /* nothing moved */
}

static void bad_arguments_are_einval(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  struct sockaddr_storage a;
  treadle_dgram_t *d = dg_bound(rt, "127.0.0.1", &a);
  char buf[8];
  treadle_dgram_msg_t m = {.buf = buf, .len = sizeof buf};

  /* A NULL socket. */
  leaves_t l = {.d = NULL, .buf = buf, .len = 1, .to = &a, .msgs = &m,
                .count = 1};
  leaves_t *lp = &l;
  run_leaves(rt, lp);
  assert_all(&l, TREADLE_EINVAL);
  /* A NULL buffer with a length (and a NULL address to send_to). */
  l = (leaves_t){.d = d, .buf = NULL, .len = 4, .to = NULL, .msgs = NULL,
                 .count = 1};
  run_leaves(rt, lp);
  assert_all(&l, TREADLE_EINVAL);
  /* No room for the count. */
  l = (leaves_t){.d = d, .buf = buf, .len = 1, .to = &a, .msgs = &m,
                 .count = 1, .null_n = true};
  run_leaves(rt, lp);
  assert_all(&l, TREADLE_EINVAL);

  /* bind and the option setters. */
  treadle_dgram_t *out = (treadle_dgram_t *)1;
  const char *hosts[] = {"not-an-ip", "300.1.1.1", "::g", "example.com"};
  for (size_t i = 0; i < TEST_ARRAY_LEN(hosts); i++) {
    assert_int_equal(treadle_udp_bind(h, hosts[i], 0, NULL, &out),
                     TREADLE_EINVAL);
    assert_null(out);
  }
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", -1, NULL, &out),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", 65536, NULL, &out),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_udp_bind(NULL, "127.0.0.1", 0, NULL, &out),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", 0, NULL, NULL),
                   TREADLE_EINVAL);
  /* An address this machine does not have. */
  assert_int_equal(treadle_udp_bind(h, "192.0.2.254", 0, NULL, &out),
                   TREADLE_EADDRNOTAVAIL);
  bool on;
  unsigned ttl;
  assert_int_equal(treadle_udp_set_broadcast(NULL, true), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_broadcast(NULL, &on), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_set_ttl(NULL, 5), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_ttl(NULL, &ttl), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_set_multicast_ttl(NULL, 5), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_multicast_ttl(NULL, &ttl), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_set_multicast_loop(NULL, true), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_multicast_loop(NULL, &on), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_join_multicast(NULL, "239.1.1.1", 0),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_udp_leave_multicast(NULL, "239.1.1.1", 0),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_udp_join_multicast(d, "239.1.1.1", 0x80000000u),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_dgram_local_addr(NULL, &a), TREADLE_EINVAL);
  assert_int_equal(treadle_dgram_local_addr(d, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_dgram_peer_addr(NULL, &a), TREADLE_EINVAL);
  treadle_dgram_close(NULL);
  treadle_dgram_free(NULL);

  /* Sending without an address on an unconnected socket. */
  assert_int_equal(dg_send(rt, d, "x", 1, NULL), TREADLE_EDESTADDRREQ);
  /* An address of no family, or an unnamed Unix one, is not one. */
  struct sockaddr_storage none;
  memset(&none, 0, sizeof none);
  assert_int_equal(dg_send(rt, d, "x", 1, &none), TREADLE_EINVAL);
  none.ss_family = AF_UNIX;
  assert_int_equal(dg_send(rt, d, "x", 1, &none), TREADLE_EINVAL);
  treadle_dgram_free(d);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void use_after_close_is_eclosed(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  struct sockaddr_storage a;
  treadle_dgram_t *d = dg_bound(rt, "127.0.0.1", &a);
  /* A receiver waits; close from this thread wakes it with ECLOSED. */
  dg_waiter_t w = {.d = d};
  treadle_join_t *j = dg_waiter_spawn(rt, &w);
  dg_waiter_wait_parked(rt, &w);
  treadle_dgram_close(d);
  treadle_dgram_close(d); /* idempotent */
  dg_waiter_join(rt, j);
  assert_int_equal(w.err, TREADLE_ECLOSED);
  assert_string_equal(treadle_strerror(TREADLE_ECLOSED),
                      "closed on this side (by a close call)");

  char buf[4];
  treadle_dgram_msg_t m = {.buf = buf, .len = sizeof buf};
  leaves_t l = {.d = d, .buf = buf, .len = sizeof buf, .to = &a, .msgs = &m,
                .count = 1};
  leaves_t *lp = &l;
  run_leaves(rt, lp);
  assert_all(&l, TREADLE_ECLOSED);
  bool on;
  unsigned ttl;
  assert_int_equal(treadle_udp_connect(d, "127.0.0.1", 9), TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_set_broadcast(d, true), TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_broadcast(d, &on), TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_set_ttl(d, 9), TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_ttl(d, &ttl), TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_set_multicast_ttl(d, 9), TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_multicast_ttl(d, &ttl), TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_set_multicast_loop(d, true), TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_multicast_loop(d, &on), TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_join_multicast(d, "239.1.1.1", 0),
                   TREADLE_ECLOSED);
  assert_int_equal(treadle_udp_leave_multicast(d, "239.1.1.1", 0),
                   TREADLE_ECLOSED);
  assert_int_equal(treadle_dgram_local_addr(d, &a), TREADLE_ECLOSED);
  assert_int_equal(treadle_dgram_peer_addr(d, &a), TREADLE_ECLOSED);
  treadle_dgram_free(d);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void runtime_without_io_says_so(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime_without_io();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_dgram_t *d = (treadle_dgram_t *)1;
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", 0, NULL, &d),
                   TREADLE_ENOIO);
  assert_null(d);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void another_runtime_gets_eforeign(void **state) {
  (void)state;
  treadle_runtime_t *a = test_runtime(), *b = test_runtime();
  struct sockaddr_storage addr;
  treadle_dgram_t *d = dg_bound(a, "127.0.0.1", &addr);
  char buf[4];
  treadle_dgram_msg_t m = {.buf = buf, .len = sizeof buf};
  leaves_t l = {.d = d, .buf = buf, .len = sizeof buf, .to = &addr,
                .msgs = &m, .count = 1};
  leaves_t *lp = &l;
  run_leaves(b, lp); /* b's task, a's socket */
  assert_all(&l, TREADLE_EFOREIGN);
  assert_non_null(strstr(treadle_strerror(TREADLE_EFOREIGN),
                         "another runtime"));
  /* Nothing was taken: a's own task still gets the datagram it sends. */
  assert_int_equal(dg_send(a, d, "mine", 4, &addr), 0);
  size_t n;
  assert_int_equal(dg_recv(a, d, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_int_equal(n, 4);
  treadle_dgram_free(d);
  assert_int_equal(treadle_runtime_free(b), 0);
  assert_int_equal(treadle_runtime_free(a), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(bad_arguments_are_einval),
    RT_TEST(use_after_close_is_eclosed),
    RT_TEST(runtime_without_io_says_so),
    RT_TEST(another_runtime_gets_eforeign),
};

TEST_MAIN(tests)
