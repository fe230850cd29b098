/* UDP options and batches (issue 14 item 1): SO_BROADCAST (a datagram to
 * 127.255.255.255 is refused without it and arrives with it), the unicast
 * and multicast TTL, multicast loopback, joining and leaving groups (IPv4
 * and IPv6, with delivery where the machine routes multicast), and
 * sendmmsg/recvmmsg through the batch leaves (a short receive batch clears
 * readiness). */
#define _GNU_SOURCE
#include <net/if.h>

#include "dgram_util.h"

/* -------------------------------------------------------------- options */

static void broadcast_needs_the_option(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  struct sockaddr_storage ra, sa, to;
  treadle_dgram_t *r = dg_bound(rt, NULL, &ra); /* 0.0.0.0: takes broadcasts */
  treadle_dgram_t *s = dg_bound(rt, "127.0.0.1", &sa);
  assert_int_equal(treadle_sockaddr_parse("127.255.255.255", dg_port(&ra), &to),
                   0);
  bool on = true;
  assert_int_equal(treadle_udp_broadcast(s, &on), 0);
  assert_false(on);
  assert_int_equal(dg_send(rt, s, "b", 1, &to), TREADLE_EACCES);
  assert_int_equal(treadle_udp_set_broadcast(s, true), 0);
  assert_int_equal(treadle_udp_broadcast(s, &on), 0);
  assert_true(on);
  assert_int_equal(dg_send(rt, s, "b", 1, &to), 0);
  char buf[4];
  size_t n;
  assert_int_equal(dg_recv(rt, r, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_int_equal(n, 1);
  assert_int_equal(treadle_udp_set_broadcast(s, false), 0);
  assert_int_equal(treadle_udp_broadcast(s, &on), 0);
  assert_false(on);
  treadle_dgram_free(r);
  treadle_dgram_free(s);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* TTLs and loopback of one socket (IPv4 or IPv6): set, read back, and the
 * values refused. */
static void check_ttls(treadle_dgram_t *d) {
  unsigned ttl = 0;
  assert_int_equal(treadle_udp_ttl(d, &ttl), 0);
  assert_true(ttl >= 1 && ttl <= 255); /* the system's default */
  assert_int_equal(treadle_udp_set_ttl(d, 7), 0);
  assert_int_equal(treadle_udp_ttl(d, &ttl), 0);
  assert_int_equal(ttl, 7);
  assert_int_equal(treadle_udp_set_ttl(d, 255), 0);
  assert_int_equal(treadle_udp_set_ttl(d, 0), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_set_ttl(d, 256), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_multicast_ttl(d, &ttl), 0);
  assert_int_equal(ttl, 1); /* the local network, by default */
  assert_int_equal(treadle_udp_set_multicast_ttl(d, 0), 0);
  assert_int_equal(treadle_udp_multicast_ttl(d, &ttl), 0);
  assert_int_equal(ttl, 0);
  assert_int_equal(treadle_udp_set_multicast_ttl(d, 32), 0);
  assert_int_equal(treadle_udp_multicast_ttl(d, &ttl), 0);
  assert_int_equal(ttl, 32);
  assert_int_equal(treadle_udp_set_multicast_ttl(d, 256), TREADLE_EINVAL);
  bool on = false;
  assert_int_equal(treadle_udp_multicast_loop(d, &on), 0);
  assert_true(on);
  assert_int_equal(treadle_udp_set_multicast_loop(d, false), 0);
  assert_int_equal(treadle_udp_multicast_loop(d, &on), 0);
  assert_false(on);
  assert_int_equal(treadle_udp_set_multicast_loop(d, true), 0);
  assert_int_equal(treadle_udp_ttl(d, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_multicast_ttl(d, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_multicast_loop(d, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_broadcast(d, NULL), TREADLE_EINVAL);
}

static void ttl_and_multicast_loop(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  struct sockaddr_storage a;
  treadle_dgram_t *d4 = dg_bound(rt, "127.0.0.1", &a);
  check_ttls(d4);
  treadle_dgram_free(d4);
  if (test_have_ipv6()) {
    treadle_dgram_t *d6 = dg_bound(rt, "::1", &a);
    check_ttls(d6);
    treadle_dgram_free(d6);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Joins `group` on a socket bound to every address of its family, sends
 * to it and, where the machine routes multicast, receives it; then the
 * membership errors. */
static void check_group(treadle_runtime_t *rt, const char *any,
                        const char *group, const char *other_family_group) {
  struct sockaddr_storage ra, sa, to;
  treadle_dgram_t *r = dg_bound(rt, any, &ra);
  treadle_dgram_t *s = dg_bound(rt, any, &sa);
  assert_int_equal(treadle_udp_join_multicast(r, group, 0), 0);
  /* Joined already; and what is not a group of this family. */
  assert_int_equal(treadle_udp_join_multicast(r, group, 0),
                   TREADLE_EADDRINUSE);
  assert_int_equal(treadle_udp_join_multicast(r, other_family_group, 0),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_udp_join_multicast(r, "127.0.0.1", 0),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_udp_join_multicast(r, "::1", 0), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_join_multicast(r, "not an address", 0),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_udp_join_multicast(r, NULL, 0), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_join_multicast(r, group, 0x7fff0000u),
                   TREADLE_ENODEV);
  assert_string_equal(treadle_err_name(TREADLE_ENODEV), "ENODEV");

  assert_int_equal(treadle_sockaddr_parse(group, dg_port(&ra), &to), 0);
  treadle_err_t e = dg_send(rt, s, "group", 5, &to);
  if (e == TREADLE_ENETUNREACH) {
    fprintf(stderr, "no multicast route: skipping delivery to %s\n", group);
  } else {
    assert_int_equal(e, 0);
    char buf[8];
    size_t n;
    assert_int_equal(dg_recv(rt, r, buf, sizeof buf, &n, NULL, 10000), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "group", 5);
  }
  assert_int_equal(treadle_udp_leave_multicast(r, group, 0), 0);
  assert_int_equal(treadle_udp_leave_multicast(r, group, 0),
                   TREADLE_EADDRNOTAVAIL);
  assert_int_equal(treadle_udp_leave_multicast(r, NULL, 0), TREADLE_EINVAL);
  if (e == 0) { /* left: nothing more arrives */
    assert_int_equal(dg_send(rt, s, "gone", 4, &to), 0);
    char buf[8];
    size_t n;
    assert_int_equal(dg_recv(rt, r, buf, sizeof buf, &n, NULL, 50),
                     TREADLE_ETIMEDOUT);
  }
  treadle_dgram_free(r);
  treadle_dgram_free(s);
}

static void multicast_join_and_leave(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  check_group(rt, "0.0.0.0", "239.255.42.99", "ff02::42:99");
  if (test_have_ipv6())
    check_group(rt, "::", "ff02::42:99", "239.255.42.99");
  /* On the loopback interface by index. */
  struct sockaddr_storage a;
  treadle_dgram_t *d = dg_bound(rt, "0.0.0.0", &a);
  unsigned lo = if_nametoindex("lo");
  if (lo != 0) {
    assert_int_equal(treadle_udp_join_multicast(d, "239.255.42.98", lo), 0);
    assert_int_equal(treadle_udp_leave_multicast(d, "239.255.42.98", lo), 0);
  }
  treadle_dgram_free(d);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* --------------------------------------------------------------- batches */

#define BATCH 10

static void batches_send_and_receive_many(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  struct sockaddr_storage aa, ba, ca;
  treadle_dgram_t *a = dg_bound(rt, "127.0.0.1", &aa);
  treadle_dgram_t *b = dg_bound(rt, "127.0.0.1", &ba);
  treadle_dgram_t *c = dg_bound(rt, "127.0.0.1", &ca);
  assert_int_equal(treadle_udp_connect(a, "127.0.0.1", dg_port(&ba)), 0);

  /* Ten datagrams of lengths 0..9 from a: the even ones to its peer b
   * (no address), the odd ones to b by address. */
  char out[BATCH][16];
  treadle_dgram_msg_t msgs[BATCH];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < BATCH; i++) {
    memset(out[i], 'A' + i, sizeof out[i]);
    msgs[i].buf = out[i];
    msgs[i].len = (size_t)i;
    if (i % 2 == 1)
      msgs[i].addr = ba;
  }
  size_t sent = 0;
  while (sent < BATCH) {
    size_t k;
    assert_int_equal(dg_batch(rt, a, msgs + sent, BATCH - sent, true, &k), 0);
    assert_true(k >= 1 && k <= BATCH - sent);
    sent += k;
  }
  /* One from c too: b tells the senders apart. */
  assert_int_equal(dg_send(rt, c, "from c", 6, &ba), 0);

  /* Received in batches with room for 64 (more is clamped) and buffers of
   * 5 bytes: lengths over 5 are cut short and flagged. */
  char in[80][5];
  treadle_dgram_msg_t rmsgs[80];
  size_t got = 0;
  while (got < BATCH + 1) {
    memset(rmsgs, 0, sizeof rmsgs);
    for (int i = 0; i < 80; i++) {
      rmsgs[i].buf = in[i];
      rmsgs[i].len = sizeof in[i];
    }
    size_t k;
    assert_int_equal(dg_batch(rt, b, rmsgs, 80, false, &k), 0);
    assert_true(k >= 1 && k <= TREADLE_DGRAM_BATCH_MAX);
    for (size_t i = 0; i < k; i++, got++) {
      treadle_dgram_msg_t *m = &rmsgs[i];
      if (got == BATCH) { /* c's */
        assert_int_equal(m->n, 6);
        assert_true(m->truncated);
        assert_memory_equal(m->buf, "from ", 5);
        assert_int_equal(dg_port(&m->addr), dg_port(&ca));
        continue;
      }
      assert_int_equal(m->n, got);
      assert_int_equal(m->truncated, got > 5);
      for (size_t x = 0; x < m->n && x < 5; x++)
        assert_int_equal(in[i][x], 'A' + (int)got);
      assert_int_equal(dg_port(&m->addr), dg_port(&aa));
    }
  }
  assert_int_equal(got, BATCH + 1);

  /* Bad batches: count 0, NULL arrays, a buffer-less length, an address
   * that is not one; and an unconnected socket's message without one. */
  size_t k;
  assert_int_equal(dg_batch(rt, b, rmsgs, 0, false, &k), TREADLE_EINVAL);
  assert_int_equal(k, 0);
  assert_int_equal(dg_batch(rt, b, NULL, 1, false, &k), TREADLE_EINVAL);
  assert_int_equal(dg_batch(rt, a, NULL, 1, true, &k), TREADLE_EINVAL);
  treadle_dgram_msg_t bad = {.buf = NULL, .len = 3};
  assert_int_equal(dg_batch(rt, a, &bad, 1, true, &k), TREADLE_EINVAL);
  treadle_dgram_msg_t odd = {.buf = "x", .len = 1};
  odd.addr.ss_family = AF_UNIX; /* unnamed: not an address */
  assert_int_equal(dg_batch(rt, a, &odd, 1, true, &k), TREADLE_EINVAL);
  treadle_dgram_msg_t nowhere = {.buf = "x", .len = 1};
  assert_int_equal(dg_batch(rt, c, &nowhere, 1, true, &k),
                   TREADLE_EDESTADDRREQ);
  assert_int_equal(k, 0);
  assert_non_null(strstr(treadle_strerror(TREADLE_EDESTADDRREQ), "not connected"));
  treadle_dgram_free(a);
  treadle_dgram_free(b);
  treadle_dgram_free(c);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* A batch receive that comes back short has emptied the socket: it clears
 * readiness, so the next receive waits for the next datagram's edge
 * instead of making a call that would only say EAGAIN; and that edge
 * wakes it. A plain socket sends. On current_thread the driver cannot run
 * between the two receives, so the second finds readiness cleared and
 * waits even with "2" already queued: counted as `waited_with_one_queued`.
 * Elsewhere a worker's driver may see the edge first; the datagram must
 * come all the same. */
typedef struct {
  treadle_dgram_t *b;
  int plain;
  struct sockaddr_storage to;
  treadle_dgram_msg_t msgs[8];
  char in[8][4];
  int phase; /* 0: receive "1"; 1: send "2", receive it */
  size_t got[2];
  char first[2];
  ssize_t sent2;
  int waited_with_one_queued;
  treadle_err_t err;
} short_batch_t;

static treadle_poll_t short_batch_step(treadle_cx_t *cx, void *st) {
  short_batch_t *t = st;
  for (;;) {
    for (int i = 0; i < 8; i++)
      t->msgs[i] = (treadle_dgram_msg_t){.buf = t->in[i], .len = 4};
    size_t k;
    if (treadle_dgram_recv_many_poll(t->b, cx, t->msgs, 8, &k, &t->err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (t->err != 0)
      return TREADLE_READY;
    t->got[t->phase] = k;
    t->first[t->phase] = t->in[0][0];
    if (t->phase == 1)
      return TREADLE_READY;
    t->phase = 1;
    t->sent2 = sendto(t->plain, "2", 1, 0, (struct sockaddr *)&t->to,
                      sizeof(struct sockaddr_in));
    for (int i = 0; i < 8; i++)
      t->msgs[i] = (treadle_dgram_msg_t){.buf = t->in[i], .len = 4};
    if (treadle_dgram_recv_many_poll(t->b, cx, t->msgs, 8, &k, &t->err) ==
        TREADLE_PENDING) {
      t->waited_with_one_queued++;
      return TREADLE_PENDING;
    }
    if (t->err != 0)
      return TREADLE_READY;
    t->got[1] = k;
    t->first[1] = t->in[0][0];
    return TREADLE_READY;
  }
}

typedef struct {
  short_batch_t *t;
  test_deadline_t deadline;
} short_batch_task_t;

static treadle_poll_t short_batch_poll(treadle_cx_t *cx, void *st) {
  short_batch_task_t *s = st;
  treadle_err_t err;
  if (test_within(&s->deadline, 10000, cx, short_batch_step, s->t, &err) ==
      TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err != 0)
    s->t->err = err; /* ETIMEDOUT: the edge was lost */
  return TREADLE_READY;
}

static void short_batch_drop(void *st) {
  treadle_sleep_drop(&((short_batch_task_t *)st)->deadline.sleep);
}

static void short_batch_clears_readiness(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  short_batch_t t = {.got = {99, 99}};
  t.b = dg_bound(rt, "127.0.0.1", &t.to);
  t.plain = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  assert_true(t.plain >= 0);
  assert_int_equal(sendto(t.plain, "1", 1, 0, (struct sockaddr *)&t.to,
                          sizeof(struct sockaddr_in)),
                   1);
  static const treadle_task_vtable_t vt = {.poll = short_batch_poll,
                                           .drop = short_batch_drop};
  short_batch_task_t task = {.t = &t};
  assert_int_equal(RUN(rt, &vt, task), 0);
  assert_int_equal(t.err, 0);
  assert_int_equal(t.sent2, 1);
  assert_int_equal(t.got[0], 1);
  assert_int_equal(t.first[0], '1');
  assert_int_equal(t.got[1], 1);
  assert_int_equal(t.first[1], '2');
  if (strcmp(test_flavor(), "ct") == 0)
    assert_int_equal(t.waited_with_one_queued, 1);
  close(t.plain);
  treadle_dgram_free(t.b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(broadcast_needs_the_option),
    RT_TEST(ttl_and_multicast_loop),
    RT_TEST(multicast_join_and_leave),
    RT_TEST(batches_send_and_receive_many),
    RT_TEST(short_batch_clears_readiness),
};

TEST_MAIN(tests)
