/* UDP (issue 14 item 1): bind (IPv4, IPv6, port 0, reuse options),
 * connect, send and receive on a connected socket, send_to and recv_from,
 * empty datagrams, a datagram longer than the buffer, ICMP errors on a
 * connected socket (a waiting reader is woken, the error is read once and
 * nothing spins), and treadle_sockaddr_parse. Bad input, closed sockets and
 * other runtimes are in test-udp-misuse.c, options and batches in
 * test-udp-options.c. Every wait is bounded: a lost datagram fails with
 * ETIMEDOUT, never hangs. */
#define _GNU_SOURCE
#include "dgram_util.h"

/* ------------------------------------------------------------------ bind */

static void bind_reports_an_address(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  struct sockaddr_storage a;
  char buf[64], want[64];

  treadle_dgram_t *d4 = dg_bound(rt, "127.0.0.1", &a);
  assert_int_equal(a.ss_family, AF_INET);
  int port = treadle_sockaddr_format(&a, buf, sizeof buf);
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  assert_string_equal(buf, want);
  /* Not connected: no peer. */
  assert_int_equal(treadle_dgram_peer_addr(d4, &a), TREADLE_ENOTCONN);

  /* NULL or "" is every IPv4 address; "localhost" needs no resolver. */
  treadle_dgram_t *any = dg_bound(rt, NULL, &a);
  assert_string_equal((treadle_sockaddr_host(&a, buf), buf), "0.0.0.0");
  treadle_dgram_t *lh = dg_bound(rt, "localhost", &a);
  assert_string_equal((treadle_sockaddr_host(&a, buf), buf), "127.0.0.1");

  /* An explicit port: the one just seen, once freed. */
  int lport = dg_port(&a);
  treadle_dgram_free(lh);
  treadle_dgram_t *lp = NULL;
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", lport, NULL, &lp), 0);
  assert_int_equal(treadle_dgram_local_addr(lp, &a), 0);
  assert_int_equal(dg_port(&a), lport);

  if (test_have_ipv6()) {
    treadle_dgram_t *d6 = dg_bound(rt, "[::1]", &a);
    assert_int_equal(a.ss_family, AF_INET6);
    int port6 = treadle_sockaddr_format(&a, buf, sizeof buf);
    snprintf(want, sizeof want, "[::1]:%d", port6);
    assert_string_equal(buf, want);
    treadle_dgram_free(d6);
  } else {
    fprintf(stderr, "no IPv6 loopback: skipping ::1\n");
  }
  treadle_dgram_free(lp);
  treadle_dgram_free(any);
  treadle_dgram_free(d4);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void bind_in_use_and_reuse(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  struct sockaddr_storage a;
  treadle_dgram_t *d = dg_bound(rt, "127.0.0.1", &a);
  int port = dg_port(&a);
  treadle_dgram_t *e = (treadle_dgram_t *)1;
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", port, NULL, &e),
                   TREADLE_EADDRINUSE);
  assert_null(e);
  treadle_udp_bind_opts_t o = TREADLE_UDP_BIND_OPTS_INIT;
  o.reuse_port = true;
  /* The first did not ask for it: still in use. */
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", port, &o, &e),
                   TREADLE_EADDRINUSE);
  treadle_dgram_free(d);

  /* Both with reuse_port: they share the port, and both get datagrams. */
  treadle_dgram_t *r1 = NULL, *r2 = NULL;
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", 0, &o, &r1), 0);
  assert_int_equal(treadle_dgram_local_addr(r1, &a), 0);
  port = dg_port(&a);
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", port, &o, &r2), 0);
  /* reuse_addr alone is accepted too. */
  treadle_udp_bind_opts_t ra = TREADLE_UDP_BIND_OPTS_INIT;
  ra.reuse_addr = true;
  treadle_dgram_t *r3 = NULL;
  assert_int_equal(treadle_udp_bind(h, "127.0.0.1", 0, &ra, &r3), 0);
  /* Datagrams from many source ports land on one socket or the other. */
  size_t got1 = 0, got2 = 0;
  for (int i = 0; i < 32; i++) {
    treadle_dgram_t *s = NULL;
    struct sockaddr_storage sa;
    s = dg_bound(rt, "127.0.0.1", &sa);
    assert_int_equal(dg_send(rt, s, "x", 1, &a), 0);
    treadle_dgram_free(s);
  }
  char buf[8];
  size_t n;
  while (dg_recv(rt, r1, buf, sizeof buf, &n, NULL, 50) == 0)
    got1++;
  while (dg_recv(rt, r2, buf, sizeof buf, &n, NULL, 50) == 0)
    got2++;
  assert_int_equal(got1 + got2, 32);
  treadle_dgram_free(r1);
  treadle_dgram_free(r2);
  treadle_dgram_free(r3);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------- send and receive */

static void send_to_and_recv_from(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  struct sockaddr_storage aa, ba, from;
  treadle_dgram_t *a = dg_bound(rt, "127.0.0.1", &aa);
  treadle_dgram_t *b = dg_bound(rt, "127.0.0.1", &ba);
  char buf[64];
  size_t n;

  assert_int_equal(dg_send(rt, a, "ping", 4, &ba), 0);
  assert_int_equal(dg_recv(rt, b, buf, sizeof buf, &n, &from, 10000), 0);
  assert_int_equal(n, 4);
  assert_memory_equal(buf, "ping", 4);
  assert_memory_equal(&from, &aa, sizeof(struct sockaddr_in));
  /* The reply goes back to the address recv_from gave. */
  assert_int_equal(dg_send(rt, b, "pong!", 5, &from), 0);
  assert_int_equal(dg_recv(rt, a, buf, sizeof buf, &n, &from, 10000), 0);
  assert_int_equal(n, 5);
  assert_memory_equal(buf, "pong!", 5);
  assert_int_equal(dg_port(&from), dg_port(&ba));

  /* An empty datagram is a datagram: sent, received with n = 0, even
   * into a NULL buffer of length 0. */
  assert_int_equal(dg_send(rt, a, NULL, 0, &ba), 0);
  assert_int_equal(dg_send(rt, a, "after", 5, &ba), 0);
  assert_int_equal(dg_recv(rt, b, NULL, 0, &n, NULL, 10000), 0);
  assert_int_equal(n, 0);
  assert_int_equal(dg_recv(rt, b, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_int_equal(n, 5);

  /* Sending to a port nobody listens on: sent all the same. */
  struct sockaddr_storage gone;
  treadle_dgram_t *g = dg_bound(rt, "127.0.0.1", &gone);
  treadle_dgram_free(g);
  assert_int_equal(dg_send(rt, a, "lost", 4, &gone), 0);
  /* And nothing comes back to an unconnected socket. */
  assert_int_equal(dg_recv(rt, a, buf, sizeof buf, &n, NULL, 50),
                   TREADLE_ETIMEDOUT);

  treadle_dgram_free(a);
  treadle_dgram_free(b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void ipv6_send_to_and_recv_from(void **state) {
  (void)state;
  if (!test_have_ipv6()) {
    fprintf(stderr, "no IPv6 loopback: skipping\n");
    return;
  }
  treadle_runtime_t *rt = test_runtime();
  struct sockaddr_storage aa, ba, from;
  treadle_dgram_t *a = dg_bound(rt, "::1", &aa);
  treadle_dgram_t *b = dg_bound(rt, "::1", &ba);
  char buf[16];
  size_t n;
  assert_int_equal(dg_send(rt, a, "six", 3, &ba), 0);
  assert_int_equal(dg_recv(rt, b, buf, sizeof buf, &n, &from, 10000), 0);
  assert_int_equal(n, 3);
  assert_int_equal(from.ss_family, AF_INET6);
  assert_int_equal(dg_port(&from), dg_port(&aa));
  /* An IPv6 socket is IPv6 only: an IPv4 destination is refused. */
  struct sockaddr_storage v4;
  assert_int_equal(treadle_sockaddr_parse("127.0.0.1", dg_port(&ba), &v4), 0);
  assert_true(dg_send(rt, a, "x", 1, &v4) < 0);
  treadle_dgram_free(a);
  treadle_dgram_free(b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void connected_send_and_recv(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  struct sockaddr_storage aa, ba, ca, peer;
  treadle_dgram_t *a = dg_bound(rt, "127.0.0.1", &aa);
  treadle_dgram_t *b = dg_bound(rt, "127.0.0.1", &ba);
  treadle_dgram_t *c = dg_bound(rt, "127.0.0.1", &ca);
  assert_int_equal(treadle_udp_connect(a, "127.0.0.1", dg_port(&ba)), 0);
  assert_int_equal(treadle_udp_connect(b, "localhost", dg_port(&aa)), 0);
  assert_int_equal(treadle_dgram_peer_addr(a, &peer), 0);
  assert_int_equal(dg_port(&peer), dg_port(&ba));

  char buf[16];
  size_t n;
  /* c is not a's peer: what it sends to a is dropped by the kernel. */
  assert_int_equal(dg_send(rt, c, "from c", 6, &aa), 0);
  assert_int_equal(dg_send(rt, b, "from b", 6, NULL), 0);
  assert_int_equal(dg_recv(rt, a, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_int_equal(n, 6);
  assert_memory_equal(buf, "from b", 6);
  assert_int_equal(dg_send(rt, a, "to b", 4, NULL), 0);
  assert_int_equal(dg_recv(rt, b, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_memory_equal(buf, "to b", 4);

  /* Connecting again moves the socket: now c is the peer. */
  assert_int_equal(treadle_udp_connect(a, "127.0.0.1", dg_port(&ca)), 0);
  assert_int_equal(dg_send(rt, a, "to c", 4, NULL), 0);
  assert_int_equal(dg_recv(rt, c, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_memory_equal(buf, "to c", 4);

  /* Bad destinations for connect. */
  assert_int_equal(treadle_udp_connect(a, "127.0.0.1", 0), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_connect(a, "127.0.0.1", 65536), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_connect(a, "example.com", 53), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_connect(a, NULL, 53), TREADLE_EINVAL);
  assert_int_equal(treadle_udp_connect(NULL, "127.0.0.1", 53), TREADLE_EINVAL);
  if (test_have_ipv6()) /* an IPv4 socket cannot reach an IPv6 address */
    assert_true(treadle_udp_connect(a, "::1", 53) < 0);

  treadle_dgram_free(a);
  treadle_dgram_free(b);
  treadle_dgram_free(c);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------ truncation */

static void long_datagram_is_reported(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  struct sockaddr_storage aa, ba, from;
  treadle_dgram_t *a = dg_bound(rt, "127.0.0.1", &aa);
  treadle_dgram_t *b = dg_bound(rt, "127.0.0.1", &ba);
  char msg[1000], buf[16];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (char)('a' + i % 26);
  size_t n;
  assert_int_equal(dg_send(rt, a, msg, sizeof msg, &ba), 0);
  assert_int_equal(dg_send(rt, a, "next", 4, &ba), 0);
  /* Cut short: EMSGSIZE, the full length, the first bytes, the sender. */
  memset(&from, 0, sizeof from);
  assert_int_equal(dg_recv(rt, b, buf, 10, &n, &from, 10000),
                   TREADLE_EMSGSIZE);
  assert_int_equal(n, sizeof msg);
  assert_memory_equal(buf, msg, 10);
  assert_int_equal(dg_port(&from), dg_port(&aa));
  assert_string_equal(treadle_err_name(TREADLE_EMSGSIZE), "EMSGSIZE");
  assert_non_null(strstr(treadle_strerror(TREADLE_EMSGSIZE), "too long"));
  /* The rest of it is gone: the next receive is the next datagram. */
  assert_int_equal(dg_recv(rt, b, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_int_equal(n, 4);
  assert_memory_equal(buf, "next", 4);
  /* A zero-length buffer still takes a datagram, and says how long. */
  assert_int_equal(dg_send(rt, a, "xyz", 3, &ba), 0);
  assert_int_equal(dg_recv(rt, b, NULL, 0, &n, NULL, 10000), TREADLE_EMSGSIZE);
  assert_int_equal(n, 3);
  /* Too long to send at all: over 65507 bytes for UDP over IPv4. */
  char *big = calloc(1, 70000);
  assert_int_equal(dg_send(rt, a, big, 70000, &ba), TREADLE_EMSGSIZE);
  free(big);
  treadle_dgram_free(a);
  treadle_dgram_free(b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------ ICMP errors */

/* A socket connected to a port nobody listens on. */
static treadle_dgram_t *connected_to_nobody(treadle_runtime_t *rt) {
  struct sockaddr_storage ga, aa;
  treadle_dgram_t *g = dg_bound(rt, "127.0.0.1", &ga);
  treadle_dgram_free(g);
  treadle_dgram_t *a = dg_bound(rt, "127.0.0.1", &aa);
  assert_int_equal(treadle_udp_connect(a, "127.0.0.1", dg_port(&ga)), 0);
  return a;
}

static void icmp_error_comes_from_the_next_call(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_dgram_t *a = connected_to_nobody(rt);
  char buf[8];
  size_t n;
  /* The send goes; the port-unreachable that comes back is the next
   * call's error, once. */
  assert_int_equal(dg_send(rt, a, "hello?", 6, NULL), 0);
  assert_int_equal(dg_recv(rt, a, buf, sizeof buf, &n, NULL, 10000),
                   TREADLE_ECONNREFUSED);
  assert_int_equal(n, 0);
  assert_string_equal(treadle_strerror(TREADLE_ECONNREFUSED),
                      "connection refused");
  /* Read, not kept: the next receive waits (here until its timeout). */
  assert_int_equal(dg_recv(rt, a, buf, sizeof buf, &n, NULL, 50),
                   TREADLE_ETIMEDOUT);
  /* A send can be the call that reports it, too. */
  assert_int_equal(dg_send(rt, a, "again", 5, NULL), 0);
  assert_int_equal(dg_send(rt, a, "and again", 9, NULL), TREADLE_ECONNREFUSED);
  assert_int_equal(dg_send(rt, a, "once more", 9, NULL), 0);
  treadle_dgram_free(a);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void icmp_error_wakes_a_waiting_reader(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_dgram_t *a = connected_to_nobody(rt);
  dg_waiter_t w = {.d = a};
  treadle_join_t *j = dg_waiter_spawn(rt, &w);
  dg_waiter_wait_parked(rt, &w);
  /* Another task sends: the ICMP error's EPOLLERR must wake the reader,
   * which reads the error. */
  assert_int_equal(dg_send(rt, a, "anyone?", 7, NULL), 0);
  dg_waiter_join(rt, j);
  assert_int_equal(w.err, TREADLE_ECONNREFUSED);
  /* Woken once or twice (a wake may race the park), never spun on. */
  assert_true(atomic_load(&w.polls) >= 2 && atomic_load(&w.polls) <= 4);

  /* The error bit is gone with the error: a new reader parks, and stays
   * parked until the socket is closed. */
  dg_waiter_t w2 = {.d = a};
  j = dg_waiter_spawn(rt, &w2);
  dg_waiter_wait_parked(rt, &w2);
  test_sleep_ms(20);
  int polls = atomic_load(&w2.polls);
  treadle_dgram_close(a);
  dg_waiter_join(rt, j);
  assert_int_equal(w2.err, TREADLE_ECLOSED);
  assert_true(polls <= 2);
  treadle_dgram_free(a);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* --------------------------------------------------------- address helpers */

static void sockaddr_parse(void **state) {
  (void)state;
  struct sockaddr_storage a;
  char buf[128];
  assert_int_equal(treadle_sockaddr_parse("10.0.0.1", 53, &a), 0);
  assert_int_equal(treadle_sockaddr_format(&a, buf, sizeof buf), 53);
  assert_string_equal(buf, "10.0.0.1:53");
  assert_int_equal(treadle_sockaddr_parse("[fe80::1]", 0, &a), 0);
  assert_int_equal(a.ss_family, AF_INET6);
  assert_int_equal(treadle_sockaddr_parse(NULL, 9, &a), 0);
  assert_string_equal((treadle_sockaddr_format(&a, buf, sizeof buf), buf),
                      "0.0.0.0:9");
  const char *bad[] = {"example.com", "1.2.3", "::g", "[::1", " 1.2.3.4"};
  for (size_t i = 0; i < TEST_ARRAY_LEN(bad); i++) {
    assert_int_equal(treadle_sockaddr_parse(bad[i], 1, &a), TREADLE_EINVAL);
    assert_int_equal(a.ss_family, AF_UNSPEC); /* nothing half-made */
  }
  assert_int_equal(treadle_sockaddr_parse("1.2.3.4", -1, &a), TREADLE_EINVAL);
  assert_int_equal(treadle_sockaddr_parse("1.2.3.4", 65536, &a),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_sockaddr_parse("1.2.3.4", 1, NULL), TREADLE_EINVAL);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(bind_reports_an_address),
    RT_TEST(bind_in_use_and_reuse),
    RT_TEST(send_to_and_recv_from),
    RT_TEST(ipv6_send_to_and_recv_from),
    RT_TEST(connected_send_and_recv),
    RT_TEST(long_datagram_is_reported),
    RT_TEST(icmp_error_comes_from_the_next_call),
    RT_TEST(icmp_error_wakes_a_waiting_reader),
    TEST(sockaddr_parse),
};

TEST_MAIN(tests)
