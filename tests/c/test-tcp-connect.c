/* TCP connect: by name through the resolver (names that do not exist, many at
 * once), refused connections, and the addresses of a connected pair as each
 * end and the listener see them. The harness checks after every case that
 * every fd was closed. No assertion depends on timing. */
#define _GNU_SOURCE
#include "net_util.h"

/* -------------------------------------------------------------- connect */

static void connect_by_name(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  /* "localhost" goes through the resolver on the blocking pool. */
  pair_out_t p;
  make_pair(rt, l, "localhost", port, &p);
  char buf[64], want[64];
  struct sockaddr_storage a;
  assert_int_equal(treadle_tcp_peer_addr(p.client, &a), 0);
  assert_int_equal(treadle_sockaddr_format(&a, buf, sizeof buf), port);
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  assert_string_equal(buf, want);
  treadle_tcp_stream_free(p.client);
  treadle_tcp_stream_free(p.server);
  /* A name that does not exist: an error (ENOHOST here), no stream. */
  treadle_tcp_stream_t *s = (treadle_tcp_stream_t *)1;
  treadle_err_t err = connect_to(rt, "no-such-host.invalid", port, &s);
  fprintf(stderr, "no-such-host.invalid: %s (%s)\n", treadle_err_name(err),
          treadle_strerror(err));
  assert_true(err < 0);
  assert_null(s);
  if (err == TREADLE_ENOHOST)
    assert_string_equal(treadle_strerror(err), "host name not found");
  /* Several names resolved at once, from many tasks. */
  size_t n = test_scale(16);
  treadle_join_t **joins = calloc(n, sizeof *joins);
  treadle_err_t *status = calloc(n, sizeof *status);
  void **values = calloc(n, sizeof *values);
  for (size_t i = 0; i < n; i++) {
    connect_task_t c = {.host = i % 2 ? "localhost" : "no-such-host.invalid",
                        .port = port};
    assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &connect_task_vt,
                                   &c, sizeof c, &joins[i]),
                     0);
  }
  join_all(rt, joins, status, values, n);
  for (size_t i = 0; i < n; i++) {
    if (i % 2) {
      assert_int_equal(status[i], 0);
      assert_non_null(values[i]);
      treadle_tcp_stream_free(values[i]);
    } else {
      assert_true(status[i] < 0);
      assert_null(values[i]);
    }
  }
  free(joins);
  free(status);
  free(values);
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void connect_refused(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  treadle_tcp_listener_free(l); /* nobody listens there now */
  treadle_tcp_stream_t *s = (treadle_tcp_stream_t *)1;
  assert_int_equal(connect_to(rt, "127.0.0.1", port, &s), TREADLE_ECONNREFUSED);
  assert_null(s);
  /* Through the resolver: the last address's error. */
  assert_int_equal(connect_to(rt, "localhost", port, &s), TREADLE_ECONNREFUSED);
  assert_null(s);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------- addresses */

static void format_of(treadle_err_t (*get)(treadle_tcp_stream_t *,
                                           struct sockaddr_storage *),
                      treadle_tcp_stream_t *s, char *buf, size_t len) {
  struct sockaddr_storage a;
  assert_int_equal(get(s, &a), 0);
  assert_true(treadle_sockaddr_format(&a, buf, len) > 0);
}

static void addresses_agree(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  const char *hosts[] = {"127.0.0.1", "::1"};
  for (size_t k = 0; k < TEST_ARRAY_LEN(hosts); k++) {
    if (k == 1 && !test_have_ipv6())
      continue;
    int port;
    treadle_tcp_listener_t *l = listen_on(h, hosts[k], &port);
    pair_out_t p;
    make_pair(rt, l, hosts[k], port, &p);
    char cl[64], cp[64], sl[64], sp[64], ap[64], la[64], want[64];
    format_of(treadle_tcp_local_addr, p.client, cl, sizeof cl);
    format_of(treadle_tcp_peer_addr, p.client, cp, sizeof cp);
    format_of(treadle_tcp_local_addr, p.server, sl, sizeof sl);
    format_of(treadle_tcp_peer_addr, p.server, sp, sizeof sp);
    int cport = treadle_sockaddr_format(&p.accept_peer, ap, sizeof ap);
    struct sockaddr_storage a;
    assert_int_equal(treadle_tcp_listener_addr(l, &a), 0);
    treadle_sockaddr_format(&a, la, sizeof la);
    snprintf(want, sizeof want, k == 0 ? "127.0.0.1:%d" : "[::1]:%d", port);
    assert_string_equal(la, want);
    assert_string_equal(cp, want);
    assert_string_equal(sl, want);
    assert_string_equal(cl, sp);
    assert_string_equal(cl, ap);
    assert_true(cport > 0 && cport != port);
    snprintf(want, sizeof want, k == 0 ? "127.0.0.1:%d" : "[::1]:%d", cport);
    assert_string_equal(cl, want);
    bool on = true;
    assert_int_equal(treadle_tcp_nodelay(p.client, &on), 0);
    assert_false(on); /* the kernel's default: Nagle */
    assert_int_equal(treadle_tcp_set_nodelay(p.client, true), 0);
    assert_int_equal(treadle_tcp_set_nodelay(p.server, true), 0);
    assert_int_equal(treadle_tcp_nodelay(p.server, &on), 0);
    assert_true(on);
    assert_int_equal(treadle_tcp_set_nodelay(p.client, false), 0);
    assert_int_equal(treadle_tcp_nodelay(p.client, &on), 0);
    assert_false(on);
    assert_int_equal(treadle_tcp_nodelay(p.client, NULL), TREADLE_EINVAL);
    treadle_tcp_stream_free(p.client);
    treadle_tcp_stream_free(p.server);
    treadle_tcp_listener_free(l);
  }
  /* Formatting truncates to the buffer, NUL included. */
  struct sockaddr_in v4 = {.sin_family = AF_INET,
                           .sin_port = htons(8080),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  memcpy(&ss, &v4, sizeof v4);
  char small[5];
  assert_int_equal(treadle_sockaddr_format(&ss, small, sizeof small), 8080);
  assert_string_equal(small, "127.");
  char full[32];
  assert_int_equal(treadle_sockaddr_format(&ss, full, sizeof full), 8080);
  assert_string_equal(full, "127.0.0.1:8080");
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(connect_by_name),
    RT_TEST(connect_refused),
    RT_TEST(addresses_agree),
};

TEST_MAIN(tests)
