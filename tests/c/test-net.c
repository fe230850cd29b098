/* TCP on loopback: bind and its errors, a runtime without I/O, echo of
 * many sizes over many connections at once (every byte checked), writev,
 * name resolution, half-close, resets in the middle of a read and of a
 * write, refused connections, closing a socket another task waits on,
 * running out of file descriptors (in a child process), addresses,
 * streams that outlive their runtime, and tasks cancelled while they wait.
 * I/O driver edges: reads of one byte that go back to the scheduler,
 * readiness raced by slow writers, an fd number reused right after a close,
 * a storm of signals without SA_RESTART, huge and zero lengths, the
 * cooperative budget in a read loop, and partial writes to a slow peer.
 * The harness checks after every case that every fd was closed. No
 * assertion depends on timing. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* ------------------------------------------------------------ helpers */

static int addr_port(const struct sockaddr_storage *a) {
  char buf[64];
  return treadle_sockaddr_format(a, buf, sizeof buf);
}

static treadle_tcp_listener_t *listen_on(treadle_handle_t *h, const char *host,
                                         int *port) {
  treadle_tcp_listener_t *l = NULL;
  assert_int_equal(treadle_tcp_bind(h, host, 0, NULL, &l), 0);
  assert_non_null(l);
  struct sockaddr_storage a;
  assert_int_equal(treadle_tcp_listener_addr(l, &a), 0);
  *port = addr_port(&a);
  assert_true(*port > 0 && *port <= 65535);
  return l;
}

/* True when the machine has an IPv6 loopback. */
static bool have_ipv6(void) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                           .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

/* A plain blocking socket connected to 127.0.0.1:port. */
static int plain_connect(int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  if (rcvbuf > 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

/* Closes with SO_LINGER {1, 0}: the peer gets a reset. */
static void close_with_reset(int fd) {
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

/* Joins every handle in `joins` (and detaches it), keeping each status. */
typedef struct {
  treadle_join_t **joins;
  treadle_err_t *status;
  void **values; /* may be NULL */
  size_t n;
  size_t next;
} join_all_t;

static treadle_poll_t join_all_poll(treadle_cx_t *cx, void *st) {
  join_all_t *a = st;
  while (a->next < a->n) {
    treadle_err_t err;
    void *v = NULL;
    if (treadle_join_poll(a->joins[a->next], cx, &err, &v) == TREADLE_PENDING)
      return TREADLE_PENDING;
    a->status[a->next] = err;
    if (a->values != NULL)
      a->values[a->next] = v;
    treadle_join_detach(a->joins[a->next]);
    a->joins[a->next] = NULL;
    a->next++;
  }
  return TREADLE_READY;
}

static const treadle_task_vtable_t join_all_vt = {.poll = join_all_poll};

static void join_all(treadle_runtime_t *rt, treadle_join_t **joins,
                     treadle_err_t *status, void **values, size_t n) {
  join_all_t a = {.joins = joins, .status = status, .values = values, .n = n};
  assert_int_equal(RUN(rt, &join_all_vt, a), 0);
}

/* Connects a client to host:port and accepts it on `l` in one task (both
 * leaves polled by the same state machine). */
typedef struct {
  treadle_tcp_stream_t *client, *server;
  struct sockaddr_storage accept_peer;
} pair_out_t;

typedef struct {
  treadle_tcp_listener_t *l;
  const char *host;
  int port;
  pair_out_t *out;
  treadle_tcp_connect_t conn;
  bool started;
} pair_t;

static treadle_poll_t pair_poll(treadle_cx_t *cx, void *st) {
  pair_t *p = st;
  treadle_err_t err;
  if (!p->started) {
    assert_int_equal(treadle_tcp_connect_init(&p->conn, treadle_cx_handle(cx),
                                              p->host, p->port),
                     0);
    p->started = true;
  }
  if (p->out->client == NULL) {
    if (treadle_tcp_connect_poll(&p->conn, cx, &p->out->client, &err) ==
        TREADLE_READY) {
      if (err != 0) {
        fprintf(stderr, "connect: %s\n", treadle_err_name(err));
        treadle_cx_set_output(cx, err, NULL);
        return TREADLE_READY;
      }
      assert_non_null(p->out->client);
    }
  }
  if (p->out->server == NULL) {
    if (treadle_tcp_accept_poll(p->l, cx, &p->out->server, &p->out->accept_peer,
                                &err) == TREADLE_READY) {
      if (err != 0) {
        fprintf(stderr, "accept: %s\n", treadle_err_name(err));
        treadle_cx_set_output(cx, err, NULL);
        return TREADLE_READY;
      }
      assert_non_null(p->out->server);
    }
  }
  return p->out->client != NULL && p->out->server != NULL ? TREADLE_READY
                                                          : TREADLE_PENDING;
}

static void pair_drop(void *st) {
  pair_t *p = st;
  if (p->started)
    treadle_tcp_connect_drop(&p->conn);
}

static const treadle_task_vtable_t pair_vt = {.poll = pair_poll,
                                              .drop = pair_drop};

static void make_pair(treadle_runtime_t *rt, treadle_tcp_listener_t *l,
                      const char *host, int port, pair_out_t *out) {
  memset(out, 0, sizeof *out);
  pair_t p = {.l = l, .host = host, .port = port, .out = out};
  assert_int_equal(RUN(rt, &pair_vt, p), 0);
  assert_non_null(out->client);
  assert_non_null(out->server);
}

/* ------------------------------------------------------------- bind */

static void bind_reports_a_port(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  char buf[64], want[64];
  struct sockaddr_storage a;

  int port;
  treadle_tcp_listener_t *l4 = listen_on(h, "127.0.0.1", &port);
  assert_int_equal(treadle_tcp_listener_addr(l4, &a), 0);
  assert_int_equal(a.ss_family, AF_INET);
  assert_int_equal(treadle_sockaddr_format(&a, buf, sizeof buf), port);
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  assert_string_equal(buf, want);

  /* "localhost" needs no resolver to bind. */
  int lport;
  treadle_tcp_listener_t *lh = listen_on(h, "localhost", &lport);
  assert_true(lport != port);
  assert_int_equal(treadle_tcp_listener_addr(lh, &a), 0);
  assert_true(a.ss_family == AF_INET || a.ss_family == AF_INET6);

  /* An explicit port: the one just seen, once freed. */
  treadle_tcp_listener_free(lh);
  treadle_tcp_listener_t *lp = NULL;
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", lport, NULL, &lp), 0);
  assert_int_equal(treadle_tcp_listener_addr(lp, &a), 0);
  assert_int_equal(addr_port(&a), lport);
  treadle_tcp_listener_free(lp);

  if (have_ipv6()) {
    int port6;
    treadle_tcp_listener_t *l6 = listen_on(h, "::1", &port6);
    assert_int_equal(treadle_tcp_listener_addr(l6, &a), 0);
    assert_int_equal(a.ss_family, AF_INET6);
    assert_int_equal(treadle_sockaddr_format(&a, buf, sizeof buf), port6);
    snprintf(want, sizeof want, "[::1]:%d", port6);
    assert_string_equal(buf, want);
    treadle_tcp_listener_free(l6);
  } else {
    fprintf(stderr, "no IPv6 loopback: skipping ::1\n");
  }
  treadle_tcp_listener_free(l4);
  treadle_tcp_listener_free(NULL);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void bind_rejects_bad_input(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_tcp_listener_t *l;
  const char *hosts[] = {"not-an-ip", "300.1.1.1",  "1.2.3",
                         "::g",       "127.0.0.1 ", "example.com"};
  for (size_t i = 0; i < TEST_ARRAY_LEN(hosts); i++) {
    l = (treadle_tcp_listener_t *)1;
    assert_int_equal(treadle_tcp_bind(h, hosts[i], 0, NULL, &l),
                     TREADLE_EINVAL);
  }
  const int ports[] = {-1, 65536, INT_MIN, INT_MAX};
  for (size_t i = 0; i < TEST_ARRAY_LEN(ports); i++)
    assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", ports[i], NULL, &l),
                     TREADLE_EINVAL);
  const int backlogs[] = {0, -1, 65536};
  for (size_t i = 0; i < TEST_ARRAY_LEN(backlogs); i++) {
    treadle_tcp_bind_opts_t o = TREADLE_TCP_BIND_OPTS_INIT;
    o.backlog = backlogs[i];
    assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, &o, &l),
                     TREADLE_EINVAL);
  }
  /* The limits themselves are fine. */
  const int good_backlogs[] = {1, 65535};
  for (size_t i = 0; i < TEST_ARRAY_LEN(good_backlogs); i++) {
    treadle_tcp_bind_opts_t o = TREADLE_TCP_BIND_OPTS_INIT;
    o.backlog = good_backlogs[i];
    assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, &o, &l), 0);
    treadle_tcp_listener_free(l);
  }
  assert_int_equal(treadle_tcp_bind(NULL, "127.0.0.1", 0, NULL, &l),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, NULL, NULL),
                   TREADLE_EINVAL);

  /* Connect's own checks. */
  treadle_tcp_connect_t c;
  const int cports[] = {0, -1, 65536};
  for (size_t i = 0; i < TEST_ARRAY_LEN(cports); i++)
    assert_int_equal(treadle_tcp_connect_init(&c, h, "127.0.0.1", cports[i]),
                     TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_connect_init(NULL, h, "127.0.0.1", 80),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_connect_init(&c, NULL, "127.0.0.1", 80),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_connect_init(&c, h, NULL, 80), TREADLE_EINVAL);
  treadle_tcp_connect_drop(NULL);

  /* Formatting a family other than IPv4/IPv6. */
  struct sockaddr_storage un;
  memset(&un, 0, sizeof un);
  un.ss_family = AF_UNIX;
  char buf[32] = "x";
  assert_int_equal(treadle_sockaddr_format(&un, buf, sizeof buf),
                   TREADLE_EINVAL);
  /* NULL streams and listeners are refused, not dereferenced. */
  struct sockaddr_storage a;
  assert_int_equal(treadle_tcp_listener_addr(NULL, &a), TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_listener_fd_exhaustions(NULL), 0);
  treadle_tcp_listener_close(NULL);
  treadle_tcp_stream_close(NULL);
  treadle_tcp_stream_free(NULL);
  assert_true(treadle_tcp_shutdown(NULL) < 0);
  assert_true(treadle_tcp_set_nodelay(NULL, true) < 0);
  assert_true(treadle_tcp_local_addr(NULL, &a) < 0);
  assert_true(treadle_tcp_peer_addr(NULL, &a) < 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void bind_twice_is_addr_in_use(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int port;
  treadle_tcp_listener_t *a = listen_on(h, "127.0.0.1", &port);
  treadle_tcp_listener_t *b = (treadle_tcp_listener_t *)1;
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", port, NULL, &b),
                   TREADLE_EADDRINUSE);
  assert_string_equal(treadle_err_name(TREADLE_EADDRINUSE), "EADDRINUSE");
  /* Asking for reuse_port does not help when the first did not. */
  treadle_tcp_bind_opts_t rp = TREADLE_TCP_BIND_OPTS_INIT;
  rp.reuse_port = true;
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", port, &rp, &b),
                   TREADLE_EADDRINUSE);
  treadle_tcp_listener_free(a);

  /* With reuse_port on both, two listeners share one port. */
  treadle_tcp_listener_t *r1 = NULL, *r2 = NULL;
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, &rp, &r1), 0);
  struct sockaddr_storage s1, s2;
  assert_int_equal(treadle_tcp_listener_addr(r1, &s1), 0);
  int p1 = addr_port(&s1);
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", p1, &rp, &r2), 0);
  assert_int_equal(treadle_tcp_listener_addr(r2, &s2), 0);
  assert_int_equal(addr_port(&s2), p1);
  /* The shared port takes connections. */
  int fd = plain_connect(p1, 0);
  close(fd);
  treadle_tcp_listener_free(r1);
  treadle_tcp_listener_free(r2);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------ runtime without I/O */

static void runtime_without_io_says_so(void **state) {
  (void)state;
  treadle_builder_t *b = test_builder();
  assert_int_equal(treadle_builder_enable_time(b), 0);
  treadle_runtime_t *rt;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_tcp_listener_t *l = (treadle_tcp_listener_t *)1;
  treadle_err_t err = treadle_tcp_bind(h, "127.0.0.1", 0, NULL, &l);
  assert_int_equal(err, TREADLE_ENOIO);
  assert_string_equal(treadle_strerror(err),
                      "I/O is disabled: build the runtime with enable_io");
  assert_string_equal(treadle_err_name(err), "ENOIO");
  treadle_tcp_connect_t c;
  assert_int_equal(treadle_tcp_connect_init(&c, h, "127.0.0.1", 80),
                   TREADLE_ENOIO);
  assert_int_equal(treadle_tcp_connect_init(&c, h, "localhost", 80),
                   TREADLE_ENOIO);
  treadle_signal_t s;
  assert_int_equal(treadle_signal_init(&s, h, SIGUSR1), TREADLE_ENOIO);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ----------------------------------------------------------------- echo */

static uint8_t pattern(unsigned id, size_t i) {
  return (uint8_t)((i * 2654435761u >> 11) ^ (id * 37u) ^ i);
}

/* Echoes what it reads until end of stream, with write_poll (partial
 * writes), then closes. Output: its status, and the bytes echoed. */
typedef struct {
  treadle_tcp_stream_t *s;
  size_t have, sent;
  uint64_t total;
  uint8_t buf[16384];
} echo_t;

static treadle_poll_t echo_poll(treadle_cx_t *cx, void *st) {
  echo_t *e = st;
  treadle_err_t err;
  size_t n;
  for (;;) {
    if (e->sent < e->have) {
      if (treadle_tcp_write_poll(e->s, cx, e->buf + e->sent, e->have - e->sent,
                                 &n, &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err != 0)
        break;
      assert_true(n > 0 && n <= e->have - e->sent);
      e->sent += n;
      continue;
    }
    e->have = e->sent = 0;
    if (treadle_tcp_read_poll(e->s, cx, e->buf, sizeof e->buf, &n, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      break;
    assert_true(n <= sizeof e->buf);
    if (n == 0)
      break;
    e->have = n;
    e->total += n;
  }
  if (err != 0)
    fprintf(stderr, "echo: %s\n", treadle_err_name(err));
  treadle_cx_set_output(cx, err, (void *)(uintptr_t)e->total);
  return TREADLE_READY;
}

static void echo_drop(void *st) { treadle_tcp_stream_free(((echo_t *)st)->s); }

static const treadle_task_vtable_t echo_vt = {.poll = echo_poll,
                                              .drop = echo_drop};

/* Accepts `n` connections, an echo task each; joins them. */
typedef struct {
  treadle_tcp_listener_t *l;
  size_t n, accepted, joined;
  treadle_join_t **joins;
  uint64_t total;
  treadle_err_t first_err;
} server_t;

static treadle_poll_t server_poll(treadle_cx_t *cx, void *st) {
  server_t *s = st;
  while (s->accepted < s->n) {
    treadle_tcp_stream_t *c;
    treadle_err_t err;
    if (treadle_tcp_accept_poll(s->l, cx, &c, NULL, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0) {
      fprintf(stderr, "accept: %s\n", treadle_err_name(err));
      treadle_cx_set_output(cx, err, NULL);
      return TREADLE_READY;
    }
    echo_t e = {.s = c};
    assert_int_equal(treadle_spawn(treadle_cx_handle(cx), &echo_vt, &e,
                                   sizeof e, &s->joins[s->accepted]),
                     0);
    s->accepted++;
  }
  while (s->joined < s->n) {
    treadle_err_t err;
    void *v;
    if (treadle_join_poll(s->joins[s->joined], cx, &err, &v) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0 && s->first_err == 0)
      s->first_err = err;
    s->total += (uintptr_t)v;
    treadle_join_detach(s->joins[s->joined]);
    s->joins[s->joined] = NULL;
    s->joined++;
  }
  treadle_cx_set_output(cx, s->first_err, (void *)(uintptr_t)s->total);
  return TREADLE_READY;
}

static void server_drop(void *st) {
  server_t *s = st;
  for (size_t i = 0; i < s->n; i++)
    treadle_join_detach(s->joins[i]);
  free(s->joins);
}

static const treadle_task_vtable_t server_vt = {.poll = server_poll,
                                                .drop = server_drop};

/* Connects, writes `len` bytes (write_all, or writev in pieces) while it
 * reads the echo back, shuts the write side down, reads to end of
 * stream, and checks every byte. */
typedef struct {
  const char *host;
  int port;
  unsigned id;
  size_t len;
  bool use_writev;
  uint8_t *msg; /* len bytes, owned */
  treadle_tcp_connect_t conn;
  bool started;
  treadle_tcp_stream_t *s;
  size_t wdone, rdone;
  bool wfinished, rfinished;
  uint8_t rbuf[8192];
} client_t;

/* The iovecs covering msg[from..len): five uneven pieces (one empty). */
static int client_iov(client_t *c, struct iovec *iov) {
  size_t cuts[] = {0,          c->len / 7,          c->len / 7,
                   c->len / 2, c->len - c->len / 5, c->len};
  int n = 0;
  for (size_t k = 0; k + 1 < TEST_ARRAY_LEN(cuts); k++) {
    size_t lo = cuts[k], hi = cuts[k + 1];
    if (hi <= c->wdone)
      continue;
    if (lo < c->wdone)
      lo = c->wdone;
    iov[n].iov_base = c->msg + lo;
    iov[n].iov_len = hi - lo;
    n++;
  }
  return n;
}

static treadle_poll_t client_poll(treadle_cx_t *cx, void *st) {
  client_t *c = st;
  treadle_err_t err = 0;
  size_t n;
  if (!c->started) {
    assert_int_equal(treadle_tcp_connect_init(&c->conn, treadle_cx_handle(cx),
                                              c->host, c->port),
                     0);
    c->started = true;
  }
  if (c->s == NULL) {
    if (treadle_tcp_connect_poll(&c->conn, cx, &c->s, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      goto fail;
    assert_non_null(c->s);
  }
  while (!c->wfinished) {
    if (c->use_writev) {
      struct iovec iov[8];
      int cnt = client_iov(c, iov);
      if (treadle_tcp_writev_poll(c->s, cx, iov, cnt, &n, &err) ==
          TREADLE_PENDING)
        break;
      if (err != 0)
        goto fail;
      assert_true(n > 0 && n <= c->len - c->wdone);
      c->wdone += n;
    } else {
      if (treadle_tcp_write_all_poll(c->s, cx, c->msg, c->len, &c->wdone,
                                     &err) == TREADLE_PENDING)
        break;
      if (err != 0)
        goto fail;
      assert_int_equal(c->wdone, c->len);
    }
    if (c->wdone == c->len) {
      assert_int_equal(treadle_tcp_shutdown(c->s), 0);
      c->wfinished = true;
    }
  }
  while (!c->rfinished) {
    if (treadle_tcp_read_poll(c->s, cx, c->rbuf, sizeof c->rbuf, &n, &err) ==
        TREADLE_PENDING)
      break;
    if (err != 0)
      goto fail;
    if (n == 0) {
      c->rfinished = true;
      break;
    }
    assert_true(c->rdone + n <= c->len);
    for (size_t i = 0; i < n; i++) {
      if (c->rbuf[i] != pattern(c->id, c->rdone + i)) {
        fprintf(stderr, "client %u: byte %zu of %zu is %u, not %u\n", c->id,
                c->rdone + i, c->len, c->rbuf[i], pattern(c->id, c->rdone + i));
        err = TREADLE_EIO;
        goto fail;
      }
    }
    c->rdone += n;
  }
  if (!c->wfinished || !c->rfinished)
    return TREADLE_PENDING;
  /* End of stream came only once every byte was back. */
  assert_int_equal(c->rdone, c->len);
  treadle_cx_set_output(cx, 0, (void *)(uintptr_t)c->rdone);
  return TREADLE_READY;
fail:
  fprintf(stderr, "client %u (len %zu, wrote %zu, read %zu): %s\n", c->id,
          c->len, c->wdone, c->rdone, treadle_err_name(err));
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void client_drop(void *st) {
  client_t *c = st;
  if (c->started)
    treadle_tcp_connect_drop(&c->conn);
  treadle_tcp_stream_free(c->s);
  free(c->msg);
}

static const treadle_task_vtable_t client_vt = {.poll = client_poll,
                                                .drop = client_drop};

/* Runs the echo of n connections on `rt` (which stays up). */
static void echo_run_on(treadle_runtime_t *rt, const char *host, size_t n,
                        const size_t *sizes, size_t nsizes, bool writev_all) {
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int port;
  treadle_tcp_listener_t *l = listen_on(h, host, &port);
  treadle_join_t **joins = calloc(n + 1, sizeof *joins);
  treadle_err_t *status = calloc(n + 1, sizeof *status);
  void **values = calloc(n + 1, sizeof *values);
  server_t srv = {.l = l, .n = n, .joins = calloc(n, sizeof(treadle_join_t *))};
  assert_int_equal(treadle_spawn(h, &server_vt, &srv, sizeof srv, &joins[0]),
                   0);
  uint64_t expect = 0;
  for (size_t i = 0; i < n; i++) {
    client_t c = {.host = host,
                  .port = port,
                  .id = (unsigned)i,
                  .len = sizes[i % nsizes],
                  .use_writev = writev_all || (i / nsizes) % 2 == 1};
    c.msg = malloc(c.len);
    for (size_t k = 0; k < c.len; k++)
      c.msg[k] = pattern(c.id, k);
    expect += c.len;
    assert_int_equal(treadle_spawn(h, &client_vt, &c, sizeof c, &joins[i + 1]),
                     0);
  }
  join_all(rt, joins, status, values, n + 1);
  for (size_t i = 0; i <= n; i++) {
    if (status[i] != 0)
      fprintf(stderr, "task %zu: %s\n", i, treadle_err_name(status[i]));
    assert_int_equal(status[i], 0);
  }
  for (size_t i = 0; i < n; i++)
    assert_int_equal((uintptr_t)values[i + 1], sizes[i % nsizes]);
  assert_int_equal((uintptr_t)values[0], expect); /* the server's total */
  treadle_tcp_listener_free(l);
  free(joins);
  free(status);
  free(values);
}

static void echo_run(const char *host, size_t n, const size_t *sizes,
                     size_t nsizes, bool writev_all) {
  treadle_runtime_t *rt = test_runtime();
  echo_run_on(rt, host, n, sizes, nsizes, writev_all);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void echo_many_sizes_many_connections(void **state) {
  (void)state;
  size_t big = test_scale(1 << 20);
  const size_t sizes[] = {1, 100, 4096, 65536, big};
  echo_run("127.0.0.1", test_scale(64), sizes, TEST_ARRAY_LEN(sizes), false);
}

static void echo_over_ipv6(void **state) {
  (void)state;
  if (!have_ipv6()) {
    fprintf(stderr, "no IPv6 loopback: skipped\n");
    return;
  }
  const size_t sizes[] = {7, 300000};
  echo_run("::1", test_scale(8), sizes, TEST_ARRAY_LEN(sizes), false);
}

/* writev: many small buffers (and empty ones) arrive as one stream, in
 * order; more than IOV_MAX buffers are refused. */
typedef struct {
  treadle_tcp_stream_t *client, *server;
  size_t total, wdone, rdone;
  bool checked_limit;
  uint8_t data[64 * 65 / 2];
  uint8_t rbuf[4096];
} gather_t;

/* Piece k (0..64) has k bytes; the iovecs from wdone on, empty ones
 * included. */
static int gather_iov(gather_t *g, struct iovec *iov) {
  size_t off = 0;
  int n = 0;
  for (size_t k = 0; k <= 64; k++) {
    size_t lo = off, hi = off + k;
    off = hi;
    if (hi < g->wdone || (hi == g->wdone && k != 0))
      continue;
    if (lo < g->wdone)
      lo = g->wdone;
    iov[n].iov_base = g->data + lo;
    iov[n].iov_len = hi - lo;
    n++;
  }
  return n;
}

static treadle_poll_t gather_poll(treadle_cx_t *cx, void *st) {
  gather_t *g = st;
  treadle_err_t err;
  size_t n;
  if (!g->checked_limit) {
    struct iovec *many = calloc(IOV_MAX + 1, sizeof *many);
    for (int i = 0; i <= IOV_MAX; i++) {
      many[i].iov_base = g->data;
      many[i].iov_len = 1;
    }
    assert_int_equal(
        treadle_tcp_writev_poll(g->client, cx, many, IOV_MAX + 1, &n, &err),
        TREADLE_READY);
    assert_int_equal(err, TREADLE_EINVAL);
    free(many);
    g->checked_limit = true;
  }
  while (g->wdone < g->total) {
    struct iovec iov[65];
    int cnt = gather_iov(g, iov);
    assert_true(cnt > 0);
    if (treadle_tcp_writev_poll(g->client, cx, iov, cnt, &n, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_true(n > 0 && n <= g->total - g->wdone);
    g->wdone += n;
  }
  while (g->rdone < g->total) {
    if (treadle_tcp_read_poll(g->server, cx, g->rbuf, sizeof g->rbuf, &n,
                              &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_true(n > 0 && g->rdone + n <= g->total);
    assert_memory_equal(g->rbuf, g->data + g->rdone, n);
    g->rdone += n;
  }
  return TREADLE_READY;
}

static void writev_gathers_buffers(void **state) {
  (void)state;
  /* Echo where every client writes with writev, in uneven pieces. */
  const size_t sizes[] = {3, 1000, 200000};
  echo_run("127.0.0.1", test_scale(6), sizes, TEST_ARRAY_LEN(sizes), true);

  /* 65 pieces of 0..64 bytes, in one go. */
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  pair_out_t p;
  make_pair(rt, l, "127.0.0.1", port, &p);
  gather_t *g = calloc(1, sizeof *g);
  g->client = p.client;
  g->server = p.server;
  size_t off = 0;
  for (int k = 0; k <= 64; k++)
    for (int b = 0; b < k; b++)
      g->data[off++] = (uint8_t)(k * 3 + b);
  g->total = off;
  assert_int_equal(g->total, sizeof g->data);
  static const treadle_task_vtable_t vt = {.poll = gather_poll};
  assert_int_equal(treadle_runtime_block_on(rt, &vt, g, sizeof *g, NULL), 0);
  free(g);
  treadle_tcp_stream_free(p.client);
  treadle_tcp_stream_free(p.server);
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* -------------------------------------------------------------- connect */

/* Connects; output: the status, and the stream (or NULL). */
typedef struct {
  const char *host;
  int port;
  treadle_tcp_connect_t conn;
  bool started;
} connect_task_t;

static treadle_poll_t connect_task_poll(treadle_cx_t *cx, void *st) {
  connect_task_t *c = st;
  if (!c->started) {
    treadle_err_t e = treadle_tcp_connect_init(&c->conn, treadle_cx_handle(cx),
                                               c->host, c->port);
    if (e != 0) {
      treadle_cx_set_output(cx, e, NULL);
      return TREADLE_READY;
    }
    c->started = true;
  }
  treadle_tcp_stream_t *s = (treadle_tcp_stream_t *)1;
  treadle_err_t err = 1;
  if (treadle_tcp_connect_poll(&c->conn, cx, &s, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  assert_true(err <= 0);
  if (err != 0)
    assert_null(s);
  else
    assert_non_null(s);
  treadle_cx_set_output(cx, err, s);
  return TREADLE_READY;
}

static void connect_task_drop(void *st) {
  connect_task_t *c = st;
  if (c->started) {
    treadle_tcp_connect_drop(&c->conn);
    treadle_tcp_connect_drop(&c->conn); /* idempotent */
  }
}

static void stream_drop_output(void *v) { treadle_tcp_stream_free(v); }

static const treadle_task_vtable_t connect_task_vt = {.poll = connect_task_poll,
                                                      .drop = connect_task_drop,
                                                      .drop_output =
                                                          stream_drop_output};

static treadle_err_t connect_to(treadle_runtime_t *rt, const char *host,
                                int port, treadle_tcp_stream_t **out) {
  connect_task_t c = {.host = host, .port = port};
  void *v = NULL;
  treadle_err_t err =
      treadle_runtime_block_on(rt, &connect_task_vt, &c, sizeof c, &v);
  *out = v;
  return err;
}

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

/* ------------------------------------------------------------ half-close */

typedef struct {
  treadle_tcp_stream_t *client, *server;
  int step;
  size_t done, got;
  char buf[64];
} half_t;

static treadle_poll_t half_poll(treadle_cx_t *cx, void *st) {
  half_t *h = st;
  treadle_err_t err;
  size_t n;
  static const char reply[] = "pong after eof";
  switch (h->step) {
  case 0:
    if (treadle_tcp_write_all_poll(h->client, cx, "ping", 4, &h->done, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_int_equal(h->done, 4);
    assert_int_equal(treadle_tcp_shutdown(h->client), 0);
    /* Writing after shutdown: EPIPE, and no SIGPIPE. */
    assert_int_equal(treadle_tcp_write_poll(h->client, cx, "x", 1, &n, &err),
                     TREADLE_READY);
    assert_int_equal(err, TREADLE_EPIPE);
    h->step = 1;
    /* fall through */
  case 1:
    for (;;) {
      if (treadle_tcp_read_poll(h->server, cx, h->buf + h->got,
                                sizeof h->buf - h->got, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      if (n == 0)
        break;
      h->got += n;
    }
    assert_int_equal(h->got, 4);
    assert_memory_equal(h->buf, "ping", 4);
    /* End of stream stays end of stream. */
    assert_int_equal(
        treadle_tcp_read_poll(h->server, cx, h->buf, sizeof h->buf, &n, &err),
        TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(n, 0);
    h->step = 2;
    h->done = 0;
    /* fall through */
  case 2:
    /* The server read end of stream and can still write. */
    if (treadle_tcp_write_all_poll(h->server, cx, reply, sizeof reply - 1,
                                   &h->done, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_int_equal(treadle_tcp_shutdown(h->server), 0);
    h->step = 3;
    h->got = 0;
    /* fall through */
  case 3:
    for (;;) {
      if (treadle_tcp_read_poll(h->client, cx, h->buf + h->got,
                                sizeof h->buf - h->got, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      if (n == 0)
        break;
      h->got += n;
    }
    assert_int_equal(h->got, sizeof reply - 1);
    assert_memory_equal(h->buf, reply, sizeof reply - 1);
    /* A read of 0 bytes is READY with 0 at once. */
    assert_int_equal(treadle_tcp_read_poll(h->client, cx, h->buf, 0, &n, &err),
                     TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(n, 0);
    return TREADLE_READY;
  }
  return TREADLE_READY;
}

static void half_close(void **state) {
  (void)state;
  signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test */
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  for (unsigned rep = 0; rep < 3; rep++) {
    pair_out_t p;
    make_pair(rt, l, "127.0.0.1", port, &p);
    half_t h = {.client = p.client, .server = p.server};
    static const treadle_task_vtable_t vt = {.poll = half_poll};
    assert_int_equal(RUN(rt, &vt, h), 0);
    treadle_tcp_stream_free(p.client);
    treadle_tcp_stream_free(p.server);
  }
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ---------------------------------------------------------------- resets */

/* A plain blocking socket on a thread of its own: connects, waits until
 * the treadle task is parked, then resets the connection. */
typedef struct {
  int port;
  int rcvbuf;
  _Atomic int parked;
} resetter_t;

static void *resetter_thread(void *arg) {
  resetter_t *r = arg;
  int fd = plain_connect(r->port, r->rcvbuf);
  while (!atomic_load(&r->parked))
    test_sleep_ms(1);
  close_with_reset(fd);
  return NULL;
}

typedef struct {
  treadle_tcp_listener_t *l;
  resetter_t *r;
  bool writing;
  treadle_tcp_stream_t *s;
  uint8_t *chunk;
  size_t chunk_len, done;
  uint8_t buf[256];
} victim_t;

static treadle_poll_t victim_poll(treadle_cx_t *cx, void *st) {
  victim_t *v = st;
  treadle_err_t err;
  size_t n;
  if (v->s == NULL) {
    if (treadle_tcp_accept_poll(v->l, cx, &v->s, NULL, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
  }
  if (!v->writing) {
    if (treadle_tcp_read_poll(v->s, cx, v->buf, sizeof v->buf, &n, &err) ==
        TREADLE_PENDING) {
      atomic_store(&v->r->parked, 1);
      return TREADLE_PENDING;
    }
    assert_int_equal(n, 0); /* the peer never sends */
    treadle_cx_set_output(cx, err, NULL);
    return TREADLE_READY;
  }
  for (;;) {
    if (treadle_tcp_write_all_poll(v->s, cx, v->chunk, v->chunk_len, &v->done,
                                   &err) == TREADLE_PENDING) {
      atomic_store(&v->r->parked, 1);
      return TREADLE_PENDING;
    }
    if (err != 0)
      break;
    v->done = 0;
  }
  /* Once more after the error: fails again at once, no SIGPIPE. */
  treadle_err_t again = 1;
  assert_int_equal(
      treadle_tcp_write_poll(v->s, cx, v->chunk, v->chunk_len, &n, &again),
      TREADLE_READY);
  treadle_cx_set_output(cx, err, (void *)(intptr_t)again);
  return TREADLE_READY;
}

static void victim_drop(void *st) {
  victim_t *v = st;
  treadle_tcp_stream_free(v->s);
  free(v->chunk);
}

static const treadle_task_vtable_t victim_vt = {.poll = victim_poll,
                                                .drop = victim_drop};

static void peer_reset_mid_read(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  for (unsigned rep = 0; rep < 3; rep++) {
    resetter_t r = {.port = port};
    pthread_t th;
    pthread_create(&th, NULL, resetter_thread, &r);
    victim_t v = {.l = l, .r = &r};
    treadle_err_t err = RUN(rt, &victim_vt, v);
    pthread_join(th, NULL);
    fprintf(stderr, "read after reset: %s\n", treadle_err_name(err));
    assert_true(err == TREADLE_ECONNRESET || err == 0);
  }
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void peer_reset_mid_write(void **state) {
  (void)state;
  signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test */
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  for (unsigned rep = 0; rep < 2; rep++) {
    resetter_t r = {.port = port, .rcvbuf = 4096};
    pthread_t th;
    pthread_create(&th, NULL, resetter_thread, &r);
    victim_t v = {.l = l, .r = &r, .writing = true, .chunk_len = 1 << 20};
    v.chunk = malloc(v.chunk_len);
    memset(v.chunk, 'w', v.chunk_len);
    void *again = NULL;
    treadle_err_t err =
        treadle_runtime_block_on(rt, &victim_vt, &v, sizeof v, &again);
    pthread_join(th, NULL);
    treadle_err_t err2 = (treadle_err_t)(intptr_t)again;
    fprintf(stderr, "write after reset: %s, then %s\n", treadle_err_name(err),
            treadle_err_name(err2));
    assert_true(err == TREADLE_ECONNRESET || err == TREADLE_EPIPE);
    assert_true(err2 == TREADLE_ECONNRESET || err2 == TREADLE_EPIPE);
  }
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------- close while waiting */

typedef struct {
  treadle_tcp_stream_t *s;   /* waits in read when set */
  treadle_tcp_listener_t *l; /* else waits in accept */
  _Atomic int *parked;
} closewait_t;

static treadle_poll_t closewait_poll(treadle_cx_t *cx, void *st) {
  closewait_t *w = st;
  treadle_err_t err = 1;
  if (w->s != NULL) {
    uint8_t buf[64];
    size_t n = 99;
    if (treadle_tcp_read_poll(w->s, cx, buf, sizeof buf, &n, &err) ==
        TREADLE_PENDING) {
      atomic_store(w->parked, 1);
      return TREADLE_PENDING;
    }
    assert_int_equal(n, 0);
  } else {
    treadle_tcp_stream_t *out = (treadle_tcp_stream_t *)1;
    if (treadle_tcp_accept_poll(w->l, cx, &out, NULL, &err) ==
        TREADLE_PENDING) {
      atomic_store(w->parked, 1);
      return TREADLE_PENDING;
    }
    assert_null(out);
  }
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static const treadle_task_vtable_t closewait_vt = {.poll = closewait_poll};

typedef struct {
  _Atomic int *f1, *f2;
  treadle_tcp_stream_t *s;
  treadle_tcp_listener_t *l;
  test_pause_t pause;
} closer_t;

static treadle_poll_t closer_poll(treadle_cx_t *cx, void *st) {
  closer_t *c = st;
  while (!atomic_load(c->f1) || !atomic_load(c->f2))
    if (!test_pause_done(&c->pause, cx))
      return TREADLE_PENDING;
  treadle_tcp_stream_close(c->s);
  treadle_tcp_listener_close(c->l);
  return TREADLE_READY;
}

static void closer_drop(void *st) {
  treadle_sleep_drop(&((closer_t *)st)->pause.sleep);
}

static const treadle_task_vtable_t closer_vt = {.poll = closer_poll,
                                                .drop = closer_drop};

static void *closer_thread(void *arg) {
  closer_t *c = arg;
  while (!atomic_load(c->f1) || !atomic_load(c->f2))
    test_sleep_ms(1);
  treadle_tcp_stream_close(c->s);
  treadle_tcp_listener_close(c->l);
  return NULL;
}

/* After close: every operation says ECLOSED at once. */
typedef struct {
  treadle_tcp_stream_t *s, *peer;
  treadle_tcp_listener_t *l;
} after_close_t;

static treadle_poll_t after_close_poll(treadle_cx_t *cx, void *st) {
  after_close_t *a = st;
  uint8_t buf[16];
  size_t n, done = 0;
  treadle_err_t err;
  assert_int_equal(treadle_tcp_read_poll(a->s, cx, buf, sizeof buf, &n, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_ECLOSED);
  assert_int_equal(treadle_tcp_write_poll(a->s, cx, "x", 1, &n, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_ECLOSED);
  assert_int_equal(treadle_tcp_write_all_poll(a->s, cx, "xyz", 3, &done, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_ECLOSED);
  assert_int_equal(done, 0);
  struct iovec iov = {.iov_base = buf, .iov_len = 1};
  assert_int_equal(treadle_tcp_writev_poll(a->s, cx, &iov, 1, &n, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_ECLOSED);
  treadle_tcp_stream_t *out = (treadle_tcp_stream_t *)1;
  assert_int_equal(treadle_tcp_accept_poll(a->l, cx, &out, NULL, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_ECLOSED);
  assert_null(out);
  /* The other end saw the socket close: end of stream. */
  if (treadle_tcp_read_poll(a->peer, cx, buf, sizeof buf, &n, &err) ==
      TREADLE_PENDING)
    return TREADLE_PENDING;
  assert_int_equal(err, 0);
  assert_int_equal(n, 0);
  return TREADLE_READY;
}

static const treadle_task_vtable_t after_close_vt = {.poll = after_close_poll};

static void close_wakes_waiters(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  for (int from_thread = 0; from_thread <= 1; from_thread++) {
    int port, port2;
    treadle_tcp_listener_t *l = listen_on(h, "127.0.0.1", &port);
    treadle_tcp_listener_t *l2 = listen_on(h, "127.0.0.1", &port2);
    pair_out_t p;
    make_pair(rt, l, "127.0.0.1", port, &p);
    _Atomic int f1 = 0, f2 = 0;
    closewait_t reader = {.s = p.server, .parked = &f1};
    closewait_t acceptor = {.l = l2, .parked = &f2};
    closer_t c = {.f1 = &f1, .f2 = &f2, .s = p.server, .l = l2};
    treadle_join_t *joins[3];
    treadle_err_t status[3];
    assert_int_equal(
        treadle_spawn(h, &closewait_vt, &reader, sizeof reader, &joins[0]), 0);
    assert_int_equal(
        treadle_spawn(h, &closewait_vt, &acceptor, sizeof acceptor, &joins[1]),
        0);
    pthread_t th;
    if (from_thread) {
      pthread_create(&th, NULL, closer_thread, &c);
      join_all(rt, joins, status, NULL, 2);
      pthread_join(th, NULL);
    } else {
      assert_int_equal(treadle_spawn(h, &closer_vt, &c, sizeof c, &joins[2]),
                       0);
      join_all(rt, joins, status, NULL, 3);
      assert_int_equal(status[2], 0);
    }
    assert_int_equal(status[0], TREADLE_ECLOSED);
    assert_int_equal(status[1], TREADLE_ECLOSED);
    treadle_tcp_stream_close(p.server); /* idempotent */
    treadle_tcp_listener_close(l2);
    after_close_t a = {.s = p.server, .peer = p.client, .l = l2};
    assert_int_equal(RUN(rt, &after_close_vt, a), 0);
    treadle_tcp_stream_free(p.server);
    treadle_tcp_stream_free(p.client);
    treadle_tcp_listener_free(l2);
    treadle_tcp_listener_free(l);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ---------------------------------------------------------------- EMFILE */

#define CHILD_CHECK(c)                                                         \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "child: %s:%d: %s\n", __FILE__, __LINE__, #c);           \
      _exit(3);                                                                \
    }                                                                          \
  } while (0)

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1; /* the directory's own */
}

#define EMFILE_CLIENTS 24 /* valgrind closes an over-limit fd itself: each back-off eats one */
#define EMFILE_ROOM 4

typedef struct {
  char echoed[2][5]; /* the messages echoed after recovery */
  uint64_t exhaustions_before_free;
} emfile_result_t;

typedef struct {
  treadle_tcp_listener_t *l;
  emfile_result_t *res;
  treadle_tcp_stream_t *acc[EMFILE_CLIENTS];
  unsigned n_acc, target, echo_idx;
  int phase;
  size_t got, done;
  char buf[5];
} emfile_server_t;

static emfile_server_t *emfile_state;

static treadle_poll_t emfile_poll(treadle_cx_t *cx, void *st) {
  emfile_server_t *s = st;
  emfile_state = s; /* for the alarm's message */
  treadle_err_t err;
  while (s->phase < 2) {
    treadle_tcp_stream_t *c;
    if (s->phase == 1 && s->n_acc == s->target) {
      s->phase = 2;
      break;
    }
    if (treadle_tcp_accept_poll(s->l, cx, &c, NULL, &err) == TREADLE_READY) {
      if (err != 0)
        fprintf(stderr, "child: accept: %s\n", treadle_err_name(err));
      CHILD_CHECK(err == 0);
      CHILD_CHECK(s->n_acc < EMFILE_CLIENTS);
      s->acc[s->n_acc++] = c;
      continue;
    }
    /* Pending: the listener is out of fds and waits, or nothing queued. */
    if (s->phase == 0 && treadle_tcp_listener_fd_exhaustions(s->l) > 0) {
      /* Every descriptor went; free two. */
      s->res->exhaustions_before_free =
          treadle_tcp_listener_fd_exhaustions(s->l);
      CHILD_CHECK(s->n_acc >= 2);
      CHILD_CHECK(s->n_acc < EMFILE_CLIENTS);
      treadle_tcp_stream_free(s->acc[0]);
      treadle_tcp_stream_free(s->acc[1]);
      s->acc[0] = s->acc[1] = NULL;
      s->target = s->n_acc + 2;
      s->phase = 1;
      continue;
    }
    return TREADLE_PENDING;
  }
  /* Echo 4 bytes on each of the two accepted after recovery. */
  while (s->echo_idx < 2) {
    treadle_tcp_stream_t *c = s->acc[s->target - 2 + s->echo_idx];
    while (s->got < 4) {
      size_t n;
      if (treadle_tcp_read_poll(c, cx, s->buf + s->got, 4 - s->got, &n, &err) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      CHILD_CHECK(err == 0 && n > 0);
      s->got += n;
    }
    if (treadle_tcp_write_all_poll(c, cx, s->buf, 4, &s->done, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    CHILD_CHECK(err == 0);
    memcpy(s->res->echoed[s->echo_idx], s->buf, 4);
    s->echo_idx++;
    s->got = s->done = 0;
  }
  return TREADLE_READY;
}

static void emfile_drop(void *st) {
  emfile_server_t *s = st;
  for (unsigned i = 0; i < s->n_acc; i++)
    treadle_tcp_stream_free(s->acc[i]);
}

static const treadle_task_vtable_t emfile_vt = {.poll = emfile_poll,
                                                .drop = emfile_drop};

/* Says where the child was when its alarm fires. */
static void emfile_alarm(int sig) {
  char msg[160];
  emfile_server_t *s = emfile_state;
  int n = snprintf(msg, sizeof msg,
                   "child: alarm: phase %d, accepted %u, target %u, "
                   "echoed %u, exhaustions %llu\n",
                   s ? s->phase : -1, s ? s->n_acc : 0, s ? s->target : 0,
                   s ? s->echo_idx : 0,
                   s ? (unsigned long long)treadle_tcp_listener_fd_exhaustions(s->l) : 0ULL);
  ssize_t w = write(2, msg, (size_t)n);
  (void)w;
  (void)sig;
  _exit(5);
}

static void emfile_child(void) {
  /* Generous: under valgrind on a loaded machine the child is slow. */
  signal(SIGALRM, emfile_alarm);
  alarm(test_scale(100) < 100 ? 120 : 20);
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  /* The clients connect (the backlog holds them) and send their message
   * before the limit drops. */
  int clients[EMFILE_CLIENTS];
  for (int i = 0; i < EMFILE_CLIENTS; i++) {
    clients[i] = plain_connect(port, 0);
    char msg[5];
    snprintf(msg, sizeof msg, "m%02d", i);
    CHILD_CHECK(write(clients[i], msg, 4) == 4);
    struct timeval tv = {10, 0};
    setsockopt(clients[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  struct rlimit rl;
  CHILD_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  rl.rlim_cur = (rlim_t)open_fds() + EMFILE_ROOM;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    fprintf(stderr, "child: setrlimit: %s\n", strerror(errno));
    _exit(4);
  }
  emfile_result_t res;
  memset(&res, 0, sizeof res);
  emfile_server_t s = {.l = l, .res = &res};
  CHILD_CHECK(RUN(rt, &emfile_vt, s) == 0);
  CHILD_CHECK(res.exhaustions_before_free > 0);
  CHILD_CHECK(treadle_tcp_listener_fd_exhaustions(l) >=
              res.exhaustions_before_free);
  /* The two served after recovery echoed their client's message. */
  for (int k = 0; k < 2; k++) {
    int i = atoi(res.echoed[k] + 1);
    CHILD_CHECK(res.echoed[k][0] == 'm' && i >= 0 && i < EMFILE_CLIENTS);
    char back[5] = {0};
    CHILD_CHECK(read(clients[i], back, 4) == 4);
    CHILD_CHECK(memcmp(back, res.echoed[k], 4) == 0);
  }
  for (int i = 0; i < EMFILE_CLIENTS; i++)
    close(clients[i]);
  treadle_tcp_listener_free(l);
  CHILD_CHECK(treadle_runtime_free(rt) == 0);
  _exit(0);
}

static void accept_backs_off_when_out_of_fds(void **state) {
  (void)state;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    emfile_child();
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFSIGNALED(status))
    fprintf(stderr, "child killed by signal %d\n", WTERMSIG(status));
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
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
    if (k == 1 && !have_ipv6())
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
    assert_int_equal(treadle_tcp_set_nodelay(p.client, true), 0);
    assert_int_equal(treadle_tcp_set_nodelay(p.server, true), 0);
    assert_int_equal(treadle_tcp_set_nodelay(p.client, false), 0);
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

/* --------------------------------------------- outliving the runtime */

static void streams_outlive_runtime(void **state) {
  (void)state;
  for (int closed_first = 0; closed_first <= 1; closed_first++) {
    treadle_runtime_t *rt = test_runtime();
    treadle_handle_t *h = treadle_handle_ref(treadle_runtime_handle(rt));
    int port;
    treadle_tcp_listener_t *l = listen_on(h, "127.0.0.1", &port);
    /* The streams come out of a task, as its output. */
    pair_out_t p;
    make_pair(rt, l, "127.0.0.1", port, &p);
    treadle_tcp_stream_t *s = NULL;
    assert_int_equal(connect_to(rt, "127.0.0.1", port, &s), 0);
    assert_non_null(s);
    if (closed_first)
      treadle_tcp_stream_close(p.client);
    assert_int_equal(treadle_runtime_free(rt), 0);
    /* After shutdown: no new listener; the old objects free cleanly. */
    treadle_tcp_listener_t *l2 = (treadle_tcp_listener_t *)1;
    assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, NULL, &l2),
                     TREADLE_ESHUTDOWN);
    treadle_tcp_stream_close(p.server);
    treadle_tcp_stream_close(p.server);
    treadle_tcp_stream_free(p.client);
    treadle_tcp_stream_free(p.server);
    treadle_tcp_stream_free(s);
    treadle_tcp_listener_close(l);
    treadle_tcp_listener_free(l);
    treadle_handle_unref(h);
  }
}

/* ------------------------------------------- cancelled while waiting */

static _Atomic int waiter_drops;

typedef struct {
  treadle_tcp_listener_t *l;  /* accept; freed at drop */
  treadle_tcp_stream_t *s;    /* read, or write when writing; freed */
  treadle_tcp_stream_t *peer; /* freed at drop */
  const char *host;           /* connect, then read */
  int port;
  bool writing, started;
  treadle_tcp_connect_t conn;
  _Atomic int *parked;
  uint8_t *chunk;
  size_t done;
} hang_t;

static treadle_poll_t hang_poll(treadle_cx_t *cx, void *st) {
  hang_t *w = st;
  treadle_err_t err;
  size_t n;
  uint8_t buf[64];
  if (w->host != NULL && w->s == NULL) {
    if (!w->started) {
      assert_int_equal(treadle_tcp_connect_init(&w->conn, treadle_cx_handle(cx),
                                                w->host, w->port),
                       0);
      w->started = true;
    }
    if (treadle_tcp_connect_poll(&w->conn, cx, &w->s, &err) ==
        TREADLE_PENDING) {
      atomic_store(w->parked, 1);
      return TREADLE_PENDING;
    }
    assert_int_equal(err, 0);
  }
  if (w->l != NULL) {
    treadle_tcp_stream_t *c;
    if (treadle_tcp_accept_poll(w->l, cx, &c, NULL, &err) == TREADLE_PENDING) {
      atomic_store(w->parked, 1);
      return TREADLE_PENDING;
    }
    fail_msg("accepted a connection nobody made (%s)", treadle_err_name(err));
  }
  if (w->writing) {
    for (;;) {
      if (treadle_tcp_write_all_poll(w->s, cx, w->chunk, 1 << 20, &w->done,
                                     &err) == TREADLE_PENDING) {
        atomic_store(w->parked, 1);
        return TREADLE_PENDING;
      }
      assert_int_equal(err, 0);
      w->done = 0;
    }
  }
  if (treadle_tcp_read_poll(w->s, cx, buf, sizeof buf, &n, &err) ==
      TREADLE_PENDING) {
    atomic_store(w->parked, 1);
    return TREADLE_PENDING;
  }
  fail_msg("read returned (%zu, %s)", n, treadle_err_name(err));
  return TREADLE_READY;
}

static void hang_drop(void *st) {
  hang_t *w = st;
  if (w->started)
    treadle_tcp_connect_drop(&w->conn);
  treadle_tcp_listener_free(w->l);
  treadle_tcp_stream_free(w->s);
  treadle_tcp_stream_free(w->peer);
  free(w->chunk);
  atomic_fetch_add(&waiter_drops, 1);
}

static const treadle_task_vtable_t hang_vt = {.poll = hang_poll,
                                              .drop = hang_drop};

static void cancelled_waiters_release_everything(void **state) {
  (void)state;
  atomic_store(&waiter_drops, 0);
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int port, port_full;
  treadle_tcp_listener_t *l = listen_on(h, "127.0.0.1", &port);
  /* A listener with a full backlog that never accepts: a connect to it
   * stays pending (or completes and then waits in read). */
  treadle_tcp_bind_opts_t o = TREADLE_TCP_BIND_OPTS_INIT;
  o.backlog = 1;
  treadle_tcp_listener_t *full = NULL;
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, &o, &full), 0);
  struct sockaddr_storage fa;
  assert_int_equal(treadle_tcp_listener_addr(full, &fa), 0);
  port_full = addr_port(&fa);
  int fillers[4];
  for (int i = 0; i < 4; i++) {
    fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port_full),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int r = connect(fillers[i], (struct sockaddr *)&a, sizeof a);
    assert_true(r == 0 || errno == EINPROGRESS);
  }
  pair_out_t p1, p2;
  make_pair(rt, l, "127.0.0.1", port, &p1);
  make_pair(rt, l, "127.0.0.1", port, &p2);
  int l2port;
  treadle_tcp_listener_t *l2 = listen_on(h, "127.0.0.1", &l2port);
  enum { N = 6 };
  _Atomic int parked[N] = {0};
  hang_t tasks[N] = {
      {.l = l2},        /* accept */
      {.s = p1.server}, /* read */
      {.s = p1.client}, /* read, other end */
      {.s = p2.server, .peer = p2.client, .writing = true}, /* write */
      {.host = "127.0.0.1", .port = port_full},             /* connect */
      {.host = "localhost", .port = port_full}, /* resolve, connect */
  };
  treadle_join_t *joins[N];
  for (int i = 0; i < N; i++) {
    tasks[i].parked = &parked[i];
    if (tasks[i].writing) {
      tasks[i].chunk = malloc(1 << 20);
      memset(tasks[i].chunk, 'z', 1 << 20);
    }
    assert_int_equal(
        treadle_spawn(h, &hang_vt, &tasks[i], sizeof tasks[i], &joins[i]), 0);
  }
  test_until_flags_t u = {.flags = parked, .n = N};
  assert_int_equal(RUN(rt, &test_until_flags_vt, u), 0);
  for (int i = 0; i < N; i++)
    assert_false(treadle_join_is_finished(joins[i]));
  /* One is aborted; the rest go with the runtime. */
  treadle_join_abort(joins[0]);
  /* A current_thread runtime drops it when its scheduler next runs. */
  test_until_flags_t again = {.flags = parked, .n = N};
  assert_int_equal(RUN(rt, &test_until_flags_vt, again), 0);
  assert_int_equal(treadle_join_wait(joins[0], NULL), TREADLE_ECANCELED);
  assert_int_equal(atomic_load(&waiter_drops), 1);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&waiter_drops), N);
  for (int i = 0; i < N; i++) {
    assert_true(treadle_join_is_finished(joins[i]));
    assert_int_equal(treadle_join_wait(joins[i], NULL),
                     i == 0 ? TREADLE_EJOINED : TREADLE_ECANCELED);
    treadle_join_detach(joins[i]);
  }
  for (int i = 0; i < 4; i++)
    close(fillers[i]);
  treadle_tcp_listener_free(full);
  treadle_tcp_listener_free(l);
}

/* ------------------------------------------------ I/O driver edge cases */

/* A check in a plain (non-test) thread: abort with the line. */
#define PLAIN_CHECK(c)                                                         \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "%s:%d: %s (errno %d)\n", __FILE__, __LINE__, #c,        \
              errno);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static void write_full(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t r = write(fd, p, len);
    if (r < 0 && errno == EINTR)
      continue;
    PLAIN_CHECK(r > 0);
    p += r;
    len -= (size_t)r;
  }
}

/* Accepts one connection on `l`; output: the stream. */
typedef struct {
  treadle_tcp_listener_t *l;
} accept_one_t;

static treadle_poll_t accept_one_poll(treadle_cx_t *cx, void *st) {
  accept_one_t *a = st;
  treadle_tcp_stream_t *s = NULL;
  treadle_err_t err;
  if (treadle_tcp_accept_poll(a->l, cx, &s, NULL, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, s);
  return TREADLE_READY;
}

static const treadle_task_vtable_t accept_one_vt = {
    .poll = accept_one_poll, .drop_output = stream_drop_output};

static treadle_tcp_stream_t *accept_one(treadle_runtime_t *rt,
                                        treadle_tcp_listener_t *l) {
  accept_one_t a = {.l = l};
  void *v = NULL;
  assert_int_equal(
      treadle_runtime_block_on(rt, &accept_one_vt, &a, sizeof a, &v), 0);
  assert_non_null(v);
  return v;
}

/* A plain blocking socket (*fd, with SO_RCVBUF rcvbuf if > 0) connected to
 * the returned treadle stream. */
static treadle_tcp_stream_t *plain_pair(treadle_runtime_t *rt, int rcvbuf,
                                        int *fd) {
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  *fd = plain_connect(port, rcvbuf);
  treadle_tcp_stream_t *s = accept_one(rt, l);
  treadle_tcp_listener_free(l);
  return s;
}

/* Counts its polls, yielding each time, until *stop is set. */
typedef struct {
  _Atomic unsigned long *count;
  _Atomic int *stop;
} spinner_t;

static treadle_poll_t spinner_poll(treadle_cx_t *cx, void *st) {
  spinner_t *s = st;
  if (atomic_load(s->stop))
    return TREADLE_READY;
  atomic_fetch_add(s->count, 1);
  treadle_cx_yield(cx);
  return TREADLE_PENDING;
}

static const treadle_task_vtable_t spinner_vt = {.poll = spinner_poll};

/* A peer thread writes `len` pattern bytes (at once or in small random
 * pieces) and keeps the connection open until the reader has them all: an
 * end of stream would be a fresh edge that hides a lost one. */
typedef struct {
  int fd;
  unsigned id;
  size_t len;
  bool chunked;
  _Atomic int done;
} trickle_t;

static void *trickle_thread(void *arg) {
  trickle_t *t = arg;
  uint8_t *msg = malloc(t->len);
  PLAIN_CHECK(msg != NULL);
  for (size_t i = 0; i < t->len; i++)
    msg[i] = pattern(t->id, i);
  unsigned seed = t->id + 1;
  for (size_t off = 0; off < t->len;) {
    size_t k = t->chunked ? 1 + (size_t)rand_r(&seed) % 100 : t->len - off;
    if (k > t->len - off)
      k = t->len - off;
    write_full(t->fd, msg + off, k);
    off += k;
  }
  free(msg);
  while (!atomic_load(&t->done))
    test_sleep_ms(1);
  close(t->fd);
  return NULL;
}

/* Reads one byte per read_poll and goes back to the scheduler (yield,
 * PENDING) every 5 bytes, with readiness left set in between. */
typedef struct {
  treadle_tcp_stream_t *s;
  trickle_t *t;
  size_t got;
  unsigned long yields;
} sip_t;

static treadle_poll_t sip_poll(treadle_cx_t *cx, void *st) {
  sip_t *r = st;
  treadle_err_t err;
  size_t n;
  uint8_t b;
  while (r->got < r->t->len) {
    if (treadle_tcp_read_poll(r->s, cx, &b, 1, &n, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_int_equal(n, 1);
    if (b != pattern(r->t->id, r->got))
      fail_msg("byte %zu is %u, not %u", r->got, b,
               pattern(r->t->id, r->got));
    r->got++;
    if (r->got % 5 == 0 && r->got < r->t->len) {
      r->yields++;
      treadle_cx_yield(cx);
      return TREADLE_PENDING;
    }
  }
  atomic_store(&r->t->done, 1);
  /* Then end of stream, and not one byte more. */
  if (treadle_tcp_read_poll(r->s, cx, &b, 1, &n, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  assert_int_equal(err, 0);
  assert_int_equal(n, 0);
  treadle_cx_set_output(cx, 0, (void *)(uintptr_t)r->yields);
  return TREADLE_READY;
}

static const treadle_task_vtable_t sip_vt = {.poll = sip_poll};

static void et_partial_read(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  for (unsigned rep = 0; rep < 2; rep++) {
    trickle_t t = {.id = rep, .len = 64 * 1024, .chunked = rep == 1};
    treadle_tcp_stream_t *s = plain_pair(rt, 0, &t.fd);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, trickle_thread, &t), 0);
    sip_t r = {.s = s, .t = &t};
    void *yields = NULL;
    assert_int_equal(treadle_runtime_block_on(rt, &sip_vt, &r, sizeof r,
                                              &yields),
                     0);
    pthread_join(th, NULL);
    assert_int_equal((uintptr_t)yields, (t.len - 1) / 5);
    treadle_tcp_stream_free(s);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Two plain threads write one byte at a time, 0-200 us apart, each into
 * its own connection; one task reads both, each until PENDING, in turn.
 * The writers hold their connection open until every byte arrived, so a
 * readiness bit cleared by a stale event would hang (ctest's timeout). */
typedef struct {
  int fd;
  unsigned id;
  size_t count;
  _Atomic int *done;
} dripper_t;

static void *dripper_thread(void *arg) {
  dripper_t *d = arg;
  unsigned seed = d->id * 7919u + 1;
  prctl(PR_SET_TIMERSLACK, 1000UL); /* sleeps of 1 us grain, not 50 */
  for (size_t i = 0; i < d->count; i++) {
    uint8_t b = pattern(d->id, i);
    write_full(d->fd, &b, 1);
    long us = rand_r(&seed) % 201;
    if (us > 0) {
      struct timespec ts = {0, us * 1000L};
      nanosleep(&ts, NULL);
    }
  }
  while (!atomic_load(d->done))
    test_sleep_ms(1);
  close(d->fd);
  return NULL;
}

typedef struct {
  treadle_tcp_stream_t *s[2];
  unsigned id[2];
  size_t want[2], got[2];
  _Atomic int *done;
  unsigned long pendings;
} alternate_t;

static treadle_poll_t alternate_poll(treadle_cx_t *cx, void *st) {
  alternate_t *a = st;
  for (;;) {
    bool progress = false;
    for (int k = 0; k < 2; k++) {
      while (a->got[k] < a->want[k]) {
        uint8_t buf[64];
        size_t n;
        treadle_err_t err;
        if (treadle_tcp_read_poll(a->s[k], cx, buf, sizeof buf, &n, &err) ==
            TREADLE_PENDING)
          break;
        assert_int_equal(err, 0);
        assert_true(n > 0 && a->got[k] + n <= a->want[k]);
        for (size_t i = 0; i < n; i++)
          if (buf[i] != pattern(a->id[k], a->got[k] + i))
            fail_msg("stream %d byte %zu is %u", k, a->got[k] + i, buf[i]);
        a->got[k] += n;
        progress = true;
      }
    }
    if (a->got[0] == a->want[0] && a->got[1] == a->want[1]) {
      atomic_store(a->done, 1);
      treadle_cx_set_output(cx, 0, (void *)(uintptr_t)a->pendings);
      return TREADLE_READY;
    }
    if (!progress) {
      a->pendings++;
      return TREADLE_PENDING;
    }
  }
}

static const treadle_task_vtable_t alternate_vt = {.poll = alternate_poll};

static void readiness_clear_race(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  size_t total = test_scale(20000);
  _Atomic int done = 0;
  dripper_t d[2];
  alternate_t a = {.done = &done};
  pthread_t th[2];
  for (int k = 0; k < 2; k++) {
    d[k] = (dripper_t){.id = 10u + (unsigned)k,
                       .count = k == 0 ? total / 2 : total - total / 2,
                       .done = &done};
    if (d[k].count == 0)
      d[k].count = 1;
    a.s[k] = plain_pair(rt, 0, &d[k].fd);
    a.id[k] = d[k].id;
    a.want[k] = d[k].count;
  }
  for (int k = 0; k < 2; k++)
    assert_int_equal(pthread_create(&th[k], NULL, dripper_thread, &d[k]), 0);
  void *pendings = NULL;
  assert_int_equal(
      treadle_runtime_block_on(rt, &alternate_vt, &a, sizeof a, &pendings), 0);
  for (int k = 0; k < 2; k++)
    pthread_join(th[k], NULL);
  fprintf(stderr, "%zu bytes, reader went back to wait %lu times\n",
          d[0].count + d[1].count, (unsigned long)(uintptr_t)pendings);
  /* The reader did wait for readiness (it is not a spin that got lucky). */
  assert_true((uintptr_t)pendings > 0);
  treadle_tcp_stream_free(a.s[0]);
  treadle_tcp_stream_free(a.s[1]);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Close stream A while a task waits in read on it (and, every other
 * round, while an event for it is fresh), then accept B at once: B likely
 * gets A's fd number and A's driver slot (with a new generation). A's
 * waiter sees ECLOSED; B echoes exactly. */
#define FD_SNAP 256

typedef struct {
  char link[FD_SNAP][48];
} fd_snap_t;

static void fd_snapshot(fd_snap_t *s) {
  for (int fd = 0; fd < FD_SNAP; fd++) {
    char path[40];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t r = readlink(path, s->link[fd], sizeof s->link[fd] - 1);
    s->link[fd][r < 0 ? 0 : r] = '\0';
  }
}

/* Fds that held one socket before and hold another one now. */
static int fd_reused(const fd_snap_t *before, const fd_snap_t *after) {
  int n = 0;
  for (int fd = 0; fd < FD_SNAP; fd++)
    if (strncmp(before->link[fd], "socket:", 7) == 0 &&
        strncmp(after->link[fd], "socket:", 7) == 0 &&
        strcmp(before->link[fd], after->link[fd]) != 0)
      n++;
  return n;
}

typedef struct {
  treadle_tcp_stream_t *s;
  _Atomic int *parked;
  size_t got;
} stale_waiter_t;

static treadle_poll_t stale_waiter_poll(treadle_cx_t *cx, void *st) {
  stale_waiter_t *w = st;
  for (;;) {
    uint8_t buf[16];
    size_t n;
    treadle_err_t err;
    if (treadle_tcp_read_poll(w->s, cx, buf, sizeof buf, &n, &err) ==
        TREADLE_PENDING) {
      atomic_store(w->parked, 1);
      return TREADLE_PENDING;
    }
    if (err != 0) {
      assert_int_equal(n, 0);
      treadle_cx_set_output(cx, err, (void *)(uintptr_t)w->got);
      return TREADLE_READY;
    }
    if (n == 0) {
      fprintf(stderr, "A's waiter read end of stream\n");
      treadle_cx_set_output(cx, TREADLE_EIO, NULL);
      return TREADLE_READY;
    }
    w->got += n;
  }
}

static const treadle_task_vtable_t stale_waiter_vt = {.poll =
                                                          stale_waiter_poll};

typedef struct {
  treadle_tcp_listener_t *l;
  treadle_tcp_stream_t *a;
  int poke_fd; /* A's peer: one byte just before the close; -1: none */
  _Atomic int *parked;
  fd_snap_t *before, *after;
  test_pause_t pause;
  bool closed;
} reuser_t;

static treadle_poll_t reuser_poll(treadle_cx_t *cx, void *st) {
  reuser_t *r = st;
  if (!r->closed) {
    while (!atomic_load(r->parked))
      if (!test_pause_done(&r->pause, cx))
        return TREADLE_PENDING;
    fd_snapshot(r->before);
    if (r->poke_fd >= 0)
      write_full(r->poke_fd, "x", 1);
    treadle_tcp_stream_close(r->a);
    r->closed = true;
  }
  treadle_tcp_stream_t *b = NULL;
  treadle_err_t err;
  if (treadle_tcp_accept_poll(r->l, cx, &b, NULL, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  assert_int_equal(err, 0);
  fd_snapshot(r->after);
  treadle_cx_set_output(cx, 0, b);
  return TREADLE_READY;
}

static void reuser_drop(void *st) {
  treadle_sleep_drop(&((reuser_t *)st)->pause.sleep);
}

static const treadle_task_vtable_t reuser_vt = {
    .poll = reuser_poll, .drop = reuser_drop, .drop_output = stream_drop_output};

/* A plain peer of an echo: 4 KiB out, the same 4 KiB back, to `len`; then
 * its own end of stream, and the echo's. */
typedef struct {
  int fd;
  unsigned id;
  size_t len, echoed;
} echo_peer_t;

static void *echo_peer_thread(void *arg) {
  echo_peer_t *p = arg;
  uint8_t out[4096], in[4096];
  for (size_t off = 0; off < p->len;) {
    size_t k = p->len - off < sizeof out ? p->len - off : sizeof out;
    for (size_t i = 0; i < k; i++)
      out[i] = pattern(p->id, off + i);
    write_full(p->fd, out, k);
    for (size_t got = 0; got < k;) {
      ssize_t r = read(p->fd, in + got, k - got);
      if (r < 0 && errno == EINTR)
        continue;
      PLAIN_CHECK(r > 0);
      got += (size_t)r;
    }
    PLAIN_CHECK(memcmp(in, out, k) == 0);
    off += k;
    p->echoed = off;
  }
  PLAIN_CHECK(shutdown(p->fd, SHUT_WR) == 0);
  PLAIN_CHECK(read(p->fd, in, sizeof in) == 0);
  close(p->fd);
  return NULL;
}

static void fd_reuse_after_close(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int port;
  treadle_tcp_listener_t *l = listen_on(h, "127.0.0.1", &port);
  fd_snap_t *before = malloc(sizeof *before), *after = malloc(sizeof *after);
  unsigned reps = 6, reused = 0;
  for (unsigned rep = 0; rep < reps; rep++) {
    int pa = plain_connect(port, 0);
    treadle_tcp_stream_t *a = accept_one(rt, l);
    /* B's client is queued before A closes: the accept that follows
     * takes the lowest free fd, A's. */
    int pb = plain_connect(port, 0);
    _Atomic int parked = 0;
    treadle_join_t *joins[2];
    treadle_err_t status[2];
    void *values[2];
    stale_waiter_t w = {.s = a, .parked = &parked};
    assert_int_equal(treadle_spawn(h, &stale_waiter_vt, &w, sizeof w, &joins[0]),
                     0);
    reuser_t r = {.l = l,
                  .a = a,
                  .poke_fd = rep % 2 ? pa : -1,
                  .parked = &parked,
                  .before = before,
                  .after = after};
    void *bv = NULL;
    assert_int_equal(treadle_runtime_block_on(rt, &reuser_vt, &r, sizeof r, &bv),
                     0);
    treadle_tcp_stream_t *b = bv;
    assert_non_null(b);
    bool same_fd = fd_reused(before, after) > 0;
    reused += same_fd;
    /* A stall from here on (ctest's timeout) is a wakeup B lost. */
    fprintf(stderr, "round %u: B %s A's fd number; echo on B\n", rep,
            same_fd ? "took" : "did not take");
    echo_peer_t peer = {.fd = pb, .id = 20u + rep, .len = 16 * 1024};
    echo_t e = {.s = b};
    assert_int_equal(treadle_spawn(h, &echo_vt, &e, sizeof e, &joins[1]), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, echo_peer_thread, &peer), 0);
    join_all(rt, joins, status, values, 2);
    pthread_join(th, NULL);
    assert_int_equal(status[0], TREADLE_ECLOSED);
    assert_true((uintptr_t)values[0] <= (rep % 2 ? 1u : 0u));
    assert_int_equal(status[1], 0);
    assert_int_equal((uintptr_t)values[1], peer.len);
    assert_int_equal(peer.echoed, peer.len);
    treadle_tcp_stream_free(a);
    close(pa);
  }
  fprintf(stderr, "B took A's fd number in %u of %u rounds\n", reused, reps);
  free(before);
  free(after);
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* SIGUSR1 with a handler and no SA_RESTART, sent to every runtime thread
 * (and the block_on thread) every 50-100 us during an echo over 8
 * connections (connect and accept included): byte-exact, and no EINTR
 * reaches the API (echo_run_on asserts every status is 0). */
static _Atomic unsigned long usr1_seen;

static void usr1_handler(int sig) {
  (void)sig;
  atomic_fetch_add_explicit(&usr1_seen, 1, memory_order_relaxed);
}

typedef struct {
  pthread_mutex_t mu;
  pthread_t ids[64];
  int n, started;
} rt_threads_t;

static void storm_thread_start(void *ud) {
  rt_threads_t *t = ud;
  pthread_mutex_lock(&t->mu);
  if (t->n < (int)TEST_ARRAY_LEN(t->ids))
    t->ids[t->n++] = pthread_self();
  t->started++;
  pthread_mutex_unlock(&t->mu);
}

static void storm_thread_stop(void *ud) {
  rt_threads_t *t = ud;
  pthread_mutex_lock(&t->mu);
  for (int i = 0; i < t->n; i++)
    if (pthread_equal(t->ids[i], pthread_self())) {
      t->ids[i] = t->ids[--t->n];
      break;
    }
  pthread_mutex_unlock(&t->mu);
}

typedef struct {
  rt_threads_t *threads;
  pthread_t main_thread;
  unsigned long max_rounds, rounds, sent;
  _Atomic int stop;
} storm_t;

static void *storm_thread(void *arg) {
  storm_t *s = arg;
  unsigned seed = 12345;
  while (!atomic_load(&s->stop) && s->rounds < s->max_rounds) {
    /* Under the lock, so that no thread leaves meanwhile. */
    pthread_mutex_lock(&s->threads->mu);
    for (int i = 0; i < s->threads->n; i++)
      if (pthread_kill(s->threads->ids[i], SIGUSR1) == 0)
        s->sent++;
    pthread_mutex_unlock(&s->threads->mu);
    if (pthread_kill(s->main_thread, SIGUSR1) == 0)
      s->sent++;
    s->rounds++;
    struct timespec ts = {0, (50 + rand_r(&seed) % 51) * 1000L};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static void eintr_storm(void **state) {
  (void)state;
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = usr1_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: blocking calls fail with EINTR */
  assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
  atomic_store(&usr1_seen, 0);

  rt_threads_t threads;
  memset(&threads, 0, sizeof threads);
  pthread_mutex_init(&threads.mu, NULL);
  treadle_builder_t *b = test_builder();
  assert_int_equal(treadle_builder_enable_all(b), 0);
  assert_int_equal(
      treadle_builder_on_thread_start(b, storm_thread_start, &threads), 0);
  assert_int_equal(treadle_builder_on_thread_stop(b, storm_thread_stop, &threads),
                   0);
  treadle_runtime_t *rt = NULL;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);

  storm_t s = {.threads = &threads,
               .main_thread = pthread_self(),
               .max_rounds = 1000000};
  pthread_t killer;
  assert_int_equal(pthread_create(&killer, NULL, storm_thread, &s), 0);
  while (atomic_load(&usr1_seen) == 0)
    test_sleep_ms(1);

  const size_t sizes[] = {test_scale(1 << 20)};
  unsigned long before = atomic_load(&usr1_seen);
  unsigned long target = test_scale(500);
  unsigned reps = 0;
  do {
    echo_run_on(rt, "127.0.0.1", 8, sizes, 1, false);
    reps++;
  } while (atomic_load(&usr1_seen) - before < target && reps < 10);
  unsigned long during = atomic_load(&usr1_seen) - before;

  atomic_store(&s.stop, 1);
  pthread_join(killer, NULL);
  assert_int_equal(treadle_runtime_free(rt), 0);
  /* Every runtime thread ran its stop hook (none left to signal). */
  assert_int_equal(threads.n, 0);
  pthread_mutex_destroy(&threads.mu);
  assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
  fprintf(stderr,
          "%u echo rounds; %lu signals sent, %lu handled during the echo "
          "(%d runtime threads)\n",
          reps, s.sent, during, threads.started);
  assert_true(during > 0);
}

/* Lengths at the edges: SIZE_MAX and SSIZE_MAX are clamped (to what one
 * system call moves), 0 is READY with nothing and is not end of stream,
 * and writev lengths past 2 GiB (or wrapping around) are refused before
 * any system call. */
#define HUGE_REGION ((size_t)1 << 31)

typedef struct {
  treadle_tcp_stream_t *client, *server;
  uint8_t *big; /* HUGE_REGION bytes, reserved but untouched */
  int step;
  size_t done, got;
  uint8_t buf[16];
} huge_t;

static void huge_writev_refused(huge_t *h, treadle_cx_t *cx, size_t len0,
                                size_t len1, int cnt) {
  struct iovec iov[2] = {{h->buf, len0}, {h->buf, len1}};
  size_t n = 99;
  treadle_err_t err = 1;
  assert_int_equal(treadle_tcp_writev_poll(h->client, cx, iov, cnt, &n, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  assert_int_equal(n, 0);
}

static treadle_poll_t huge_poll(treadle_cx_t *cx, void *st) {
  huge_t *h = st;
  treadle_err_t err;
  size_t n;
  switch (h->step) {
  case 0:
    if (treadle_tcp_write_all_poll(h->client, cx, "hello", 5, &h->done,
                                   &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    h->step = 1;
    h->got = 0;
    /* fall through */
  case 1:
    while (h->got < 5) {
      n = 99;
      err = 1;
      if (treadle_tcp_read_poll(h->server, cx, h->big + h->got, SIZE_MAX, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      assert_true(n > 0 && h->got + n <= 5);
      h->got += n;
    }
    assert_memory_equal(h->big, "hello", 5);
    /* len 0, with nothing to read: READY with 0 at once. */
    n = 99;
    err = 1;
    assert_int_equal(treadle_tcp_read_poll(h->server, cx, h->buf, 0, &n, &err),
                     TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(n, 0);
    n = 99;
    err = 1;
    assert_int_equal(treadle_tcp_read_poll(h->server, cx, NULL, 0, &n, &err),
                     TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(n, 0);
    /* writev over 2 GiB from a 16-byte buffer: refused, nothing sent. */
    huge_writev_refused(h, cx, (size_t)1 << 31, 0, 1);
    huge_writev_refused(h, cx, (size_t)1 << 30, (size_t)1 << 30, 2);
    huge_writev_refused(h, cx, SIZE_MAX, 1, 2);
    huge_writev_refused(h, cx, 1, SIZE_MAX, 2);
    huge_writev_refused(h, cx, SIZE_MAX / 2 + 1, SIZE_MAX / 2 + 1, 2);
    h->step = 2;
    h->done = 0;
    /* fall through */
  case 2: {
    /* The stream still works: "wor" + "ld!" in one writev. */
    struct iovec iov[2] = {{(void *)"wor", 3}, {(void *)"ld!", 3}};
    while (h->done < 6) {
      struct iovec rest[2];
      int cnt = 0;
      for (int k = 0; k < 2; k++) {
        size_t lo = (size_t)k * 3;
        if (h->done >= lo + 3)
          continue;
        size_t skip = h->done > lo ? h->done - lo : 0;
        rest[cnt].iov_base = (char *)iov[k].iov_base + skip;
        rest[cnt].iov_len = 3 - skip;
        cnt++;
      }
      if (treadle_tcp_writev_poll(h->client, cx, rest, cnt, &n, &err) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      assert_true(n > 0 && h->done + n <= 6);
      h->done += n;
    }
    assert_int_equal(treadle_tcp_shutdown(h->client), 0);
    h->step = 3;
  }
    /* fall through */
  case 3:
    /* len 1: exactly one byte. */
    n = 99;
    if (treadle_tcp_read_poll(h->server, cx, h->buf, 1, &n, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_int_equal(n, 1);
    assert_int_equal(h->buf[0], 'w');
    h->step = 4;
    h->got = 0;
    /* fall through */
  case 4:
    /* SSIZE_MAX: the rest, then end of stream; none of the refused
     * writevs sent a byte. */
    for (;;) {
      if (treadle_tcp_read_poll(h->server, cx, h->big + h->got, SSIZE_MAX, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      if (n == 0)
        break;
      assert_true(h->got + n <= 5);
      h->got += n;
    }
    assert_int_equal(h->got, 5);
    assert_memory_equal(h->big, "orld!", 5);
    return TREADLE_READY;
  }
  return TREADLE_READY;
}

static void huge_read_len(void **state) {
  (void)state;
  /* A buffer as long as one call may fill (2 GiB), reserved but never
   * touched past the few bytes that arrive, so that no tool sees a read
   * into memory that is not there. */
  uint8_t *big = mmap(NULL, HUGE_REGION, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  assert_true(big != MAP_FAILED);
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  pair_out_t p;
  make_pair(rt, l, "127.0.0.1", port, &p);
  huge_t h = {.client = p.client, .server = p.server, .big = big};
  static const treadle_task_vtable_t vt = {.poll = huge_poll};
  assert_int_equal(RUN(rt, &vt, h), 0);
  treadle_tcp_stream_free(p.client);
  treadle_tcp_stream_free(p.server);
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
  munmap(big, HUGE_REGION);
}

/* The cooperative budget in I/O: a reader that reads 1 byte at a time
 * from a socket whose data is all there never sees EAGAIN, and its loop
 * never returns PENDING itself; the budget (128 ready leaves per poll)
 * must make it yield, so a spinner spawned before it keeps running. */
typedef struct {
  treadle_tcp_stream_t *s;
  size_t total, queued; /* queued: bytes already in the socket */
  size_t got;
  _Atomic unsigned long *count;
  _Atomic int *stop;
  unsigned long at_first, at_queued, yields;
} gulp_t;

static treadle_poll_t gulp_poll(treadle_cx_t *cx, void *st) {
  gulp_t *g = st;
  for (;;) {
    uint8_t b;
    size_t n;
    treadle_err_t err;
    if (treadle_tcp_read_poll(g->s, cx, &b, 1, &n, &err) == TREADLE_PENDING) {
      if (g->got > 0 && g->got < g->queued)
        g->yields++; /* the data is there: only the budget says PENDING */
      return TREADLE_PENDING;
    }
    assert_int_equal(err, 0);
    if (n == 0)
      break;
    if (b != pattern(7, g->got))
      fail_msg("byte %zu is %u", g->got, b);
    if (g->got == 0)
      g->at_first = atomic_load(g->count);
    g->got++;
    if (g->got == g->queued)
      g->at_queued = atomic_load(g->count);
  }
  assert_int_equal(g->got, g->total);
  atomic_store(g->stop, 1);
  return TREADLE_READY;
}

static void gulp_drop_output(void *v) { free(v); }

static treadle_poll_t gulp_wrap_poll(treadle_cx_t *cx, void *st) {
  if (gulp_poll(cx, st) == TREADLE_PENDING)
    return TREADLE_PENDING;
  gulp_t *copy = malloc(sizeof *copy);
  memcpy(copy, st, sizeof *copy);
  treadle_cx_set_output(cx, 0, copy);
  return TREADLE_READY;
}

static const treadle_task_vtable_t gulp_vt = {.poll = gulp_wrap_poll,
                                              .drop_output = gulp_drop_output};

static void coop_budget_io(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int fd;
  treadle_tcp_stream_t *s = plain_pair(rt, 0, &fd);
  /* Write up to 1 MiB, 4 KiB at a time, for as long as the kernel hands
   * every byte to the receiver at once (nothing left unsent, SIOCOUTQNSD):
   * on loopback the receive window admits some tens of KiB. */
  size_t target = test_scale(1 << 20), written = 0, unsent = 0;
  assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  uint8_t chunk[4096];
  while (written < target && unsent == 0) {
    size_t k = target - written < sizeof chunk ? target - written : sizeof chunk;
    for (size_t i = 0; i < k; i++)
      chunk[i] = pattern(7, written + i);
    ssize_t r = write(fd, chunk, k);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && errno == EAGAIN)
      break;
    assert_true(r > 0);
    written += (size_t)r;
    int q = 0;
    for (int i = 0; i < 20; i++) {
      assert_int_equal(ioctl(fd, SIOCOUTQNSD, &q), 0);
      if (q == 0)
        break;
      test_sleep_ms(1);
    }
    unsent = (size_t)q;
  }
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  size_t queued = written - unsent;
  fprintf(stderr, "%zu bytes written, %zu of them in the receiver's queue\n",
          written, queued);
  assert_true(queued >= 4096);

  _Atomic unsigned long count = 0;
  _Atomic int stop = 0;
  spinner_t sp = {.count = &count, .stop = &stop};
  gulp_t g = {.s = s,
              .total = written,
              .queued = queued,
              .count = &count,
              .stop = &stop};
  treadle_join_t *joins[2];
  treadle_err_t status[2];
  void *values[2];
  assert_int_equal(treadle_spawn(h, &spinner_vt, &sp, sizeof sp, &joins[0]), 0);
  assert_int_equal(treadle_spawn(h, &gulp_vt, &g, sizeof g, &joins[1]), 0);
  join_all(rt, joins, status, values, 2);
  assert_int_equal(status[0], 0);
  assert_int_equal(status[1], 0);
  gulp_t *out = values[1];
  fprintf(stderr,
          "reader yielded %lu times over %zu queued bytes; the spinner ran %lu "
          "times meanwhile (%lu in all)\n",
          out->yields, queued, out->at_queued - out->at_first,
          atomic_load(&count));
  /* The budget made the reader yield... */
  assert_true(out->yields >= 2);
  /* ...and, where the two share one worker, let the spinner run. (On mt4
   * the spinner may sit on a worker of its own, running or not.) */
  if (strcmp(test_flavor(), "mt4") != 0)
    assert_true(out->at_queued - out->at_first >= 2);
  free(out);
  close(fd);
  treadle_tcp_stream_free(s);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* write_all of 4 MiB (scaled, but never less than the kernel's largest
 * send buffer plus 1 MiB, so that the socket must fill) to a peer with a
 * 4 KiB SO_RCVBUF. The peer reads nothing until the writer has stalled
 * part-way (or finished), then reads 1 KiB and sleeps 1 ms for its first
 * reads, then reads fast. A spinner runs alongside. Every byte arrives,
 * in order, with the same checksum. */
static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211u;
  return h;
}

#define FNV_INIT 14695981039346656037u

/* The third field of /proc/sys/net/ipv4/tcp_wmem, or 4 MiB. */
static size_t tcp_wmem_max(void) {
  FILE *f = fopen("/proc/sys/net/ipv4/tcp_wmem", "r");
  unsigned long lo, def, hi;
  size_t r = 4u << 20;
  if (f != NULL) {
    if (fscanf(f, "%lu %lu %lu", &lo, &def, &hi) == 3)
      r = hi;
    fclose(f);
  }
  return r;
}

typedef struct {
  int fd;
  unsigned id;
  size_t slow_reads;
  _Atomic int *go; /* set once the writer stalled or finished */
  size_t got, bad_at;
  uint64_t sum;
} slow_reader_t;

static void *slow_reader_thread(void *arg) {
  slow_reader_t *r = arg;
  uint8_t *buf = malloc(65536);
  PLAIN_CHECK(buf != NULL);
  r->sum = FNV_INIT;
  r->bad_at = SIZE_MAX;
  while (!atomic_load(r->go))
    test_sleep_ms(1);
  for (size_t reads = 0;; reads++) {
    bool slow = reads < r->slow_reads;
    ssize_t n = read(r->fd, buf, slow ? 1024 : 65536);
    if (n < 0 && errno == EINTR)
      continue;
    PLAIN_CHECK(n >= 0);
    if (n == 0)
      break;
    for (ssize_t i = 0; i < n && r->bad_at == SIZE_MAX; i++)
      if (buf[i] != pattern(r->id, r->got + (size_t)i))
        r->bad_at = r->got + (size_t)i;
    r->sum = fnv1a(r->sum, buf, (size_t)n);
    r->got += (size_t)n;
    if (slow)
      test_sleep_ms(1);
  }
  free(buf);
  close(r->fd);
  return NULL;
}

typedef struct {
  treadle_tcp_stream_t *s;
  const uint8_t *msg;
  size_t len, done;
  unsigned long stalls; /* PENDING with part of the message out */
  _Atomic int *stop, *go;
} pour_t;

static treadle_poll_t pour_poll(treadle_cx_t *cx, void *st) {
  pour_t *p = st;
  treadle_err_t err;
  if (treadle_tcp_write_all_poll(p->s, cx, p->msg, p->len, &p->done, &err) ==
      TREADLE_PENDING) {
    if (p->done > 0 && p->done < p->len) {
      p->stalls++;
      atomic_store(p->go, 1);
    }
    return TREADLE_PENDING;
  }
  assert_int_equal(err, 0);
  assert_int_equal(p->done, p->len);
  assert_int_equal(treadle_tcp_shutdown(p->s), 0);
  atomic_store(p->go, 1);
  atomic_store(p->stop, 1);
  treadle_cx_set_output(cx, 0, (void *)(uintptr_t)p->stalls);
  return TREADLE_READY;
}

static const treadle_task_vtable_t pour_vt = {.poll = pour_poll};

static void partial_write_small_rcvbuf(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  _Atomic int go = 0, stop = 0;
  slow_reader_t r = {.id = 42, .slow_reads = test_scale(200), .go = &go};
  treadle_tcp_stream_t *s = plain_pair(rt, 4096, &r.fd);
  size_t len = test_scale(4 << 20), floor_len = tcp_wmem_max() + (1 << 20);
  if (len < floor_len)
    len = floor_len;
  uint8_t *msg = malloc(len);
  for (size_t i = 0; i < len; i++)
    msg[i] = pattern(r.id, i);
  uint64_t want = fnv1a(FNV_INIT, msg, len);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, slow_reader_thread, &r), 0);
  _Atomic unsigned long count = 0;
  spinner_t sp = {.count = &count, .stop = &stop};
  pour_t p = {.s = s, .msg = msg, .len = len, .stop = &stop, .go = &go};
  treadle_join_t *joins[2];
  treadle_err_t status[2];
  void *values[2];
  assert_int_equal(treadle_spawn(h, &spinner_vt, &sp, sizeof sp, &joins[0]), 0);
  assert_int_equal(treadle_spawn(h, &pour_vt, &p, sizeof p, &joins[1]), 0);
  join_all(rt, joins, status, values, 2);
  pthread_join(th, NULL);
  unsigned long stalls = (unsigned long)(uintptr_t)values[1];
  fprintf(stderr,
          "%zu bytes: the writer stalled part-way %lu times, the spinner ran "
          "%lu times\n",
          len, stalls, atomic_load(&count));
  assert_int_equal(status[0], 0);
  assert_int_equal(status[1], 0);
  if (r.bad_at != SIZE_MAX)
    fail_msg("byte %zu differs", r.bad_at);
  assert_int_equal(r.got, len);
  assert_true(r.sum == want);
  /* More than the send buffer holds, with nobody reading: the socket
   * filled part-way through, so partial writes were resumed. */
  assert_true(stalls >= 1);
  /* With one worker, the spinner (spawned first) ran again while the
   * writer waited for room. */
  if (strcmp(test_flavor(), "mt4") != 0)
    assert_true(atomic_load(&count) >= 2);
  free(msg);
  treadle_tcp_stream_free(s);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(bind_reports_a_port),
    TEST(bind_rejects_bad_input),
    TEST(bind_twice_is_addr_in_use),
    RT_TEST(runtime_without_io_says_so),
    RT_TEST(echo_many_sizes_many_connections),
    RT_TEST(echo_over_ipv6),
    RT_TEST(writev_gathers_buffers),
    RT_TEST(connect_by_name),
    RT_TEST(connect_refused),
    RT_TEST(half_close),
    RT_TEST(peer_reset_mid_read),
    RT_TEST(peer_reset_mid_write),
    RT_TEST(close_wakes_waiters),
    RT_TEST(accept_backs_off_when_out_of_fds),
    RT_TEST(addresses_agree),
    RT_TEST(streams_outlive_runtime),
    RT_TEST(cancelled_waiters_release_everything),
    RT_TEST(et_partial_read),
    RT_TEST(readiness_clear_race),
    RT_TEST(fd_reuse_after_close),
    RT_TEST(eintr_storm),
    RT_TEST(huge_read_len),
    RT_TEST(coop_budget_io),
    RT_TEST(partial_write_small_rcvbuf),
};

TEST_MAIN(tests)
