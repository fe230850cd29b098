/* The TCP tests' shared helpers (net_util.h). */
#define _GNU_SOURCE
#include "net_util.h"

int addr_port(const struct sockaddr_storage *a) {
  char buf[64];
  return treadle_sockaddr_format(a, buf, sizeof buf);
}

treadle_tcp_listener_t *listen_on(treadle_handle_t *h, const char *host,
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

int plain_connect(int port, int rcvbuf) {
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

void join_all(treadle_runtime_t *rt, treadle_join_t **joins,
              treadle_err_t *status, void **values, size_t n) {
  join_all_t a = {.joins = joins, .status = status, .values = values, .n = n};
  assert_int_equal(RUN(rt, &join_all_vt, a), 0);
}

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

void make_pair(treadle_runtime_t *rt, treadle_tcp_listener_t *l,
               const char *host, int port, pair_out_t *out) {
  memset(out, 0, sizeof *out);
  pair_t p = {.l = l, .host = host, .port = port, .out = out};
  assert_int_equal(RUN(rt, &pair_vt, p), 0);
  assert_non_null(out->client);
  assert_non_null(out->server);
}

uint8_t pattern(unsigned id, size_t i) {
  return (uint8_t)((i * 2654435761u >> 11) ^ (id * 37u) ^ i);
}

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

const treadle_task_vtable_t echo_vt = {.poll = echo_poll, .drop = echo_drop};

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

void echo_run_on(treadle_runtime_t *rt, const char *host, size_t n,
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

void echo_pair(treadle_runtime_t *rt, treadle_stream_t *client,
               treadle_stream_t *server, size_t len, bool use_writev) {
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_join_t *joins[2];
  treadle_err_t status[2];
  void *values[2];
  echo_t e = {.s = server};
  assert_int_equal(treadle_spawn(h, &echo_vt, &e, sizeof e, &joins[0]), 0);
  /* Already connected: no connect future (a zeroed one drops as none). */
  client_t c = {.len = len, .use_writev = use_writev, .started = true,
                .s = client};
  c.msg = malloc(len);
  for (size_t k = 0; k < len; k++)
    c.msg[k] = pattern(c.id, k);
  assert_int_equal(treadle_spawn(h, &client_vt, &c, sizeof c, &joins[1]), 0);
  join_all(rt, joins, status, values, 2);
  assert_int_equal(status[0], 0);
  assert_int_equal(status[1], 0);
  assert_int_equal((uintptr_t)values[0], len); /* echoed */
  assert_int_equal((uintptr_t)values[1], len); /* checked */
}

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

void stream_drop_output(void *v) { treadle_tcp_stream_free(v); }

const treadle_task_vtable_t connect_task_vt = {.poll = connect_task_poll,
                                               .drop = connect_task_drop,
                                               .drop_output =
                                                   stream_drop_output};

treadle_err_t connect_to(treadle_runtime_t *rt, const char *host, int port,
                         treadle_tcp_stream_t **out) {
  connect_task_t c = {.host = host, .port = port};
  void *v = NULL;
  treadle_err_t err =
      treadle_runtime_block_on(rt, &connect_task_vt, &c, sizeof c, &v);
  *out = v;
  return err;
}

void write_full(int fd, const void *buf, size_t len) {
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

treadle_tcp_stream_t *accept_one(treadle_runtime_t *rt,
                                 treadle_tcp_listener_t *l) {
  accept_one_t a = {.l = l};
  void *v = NULL;
  assert_int_equal(
      treadle_runtime_block_on(rt, &accept_one_vt, &a, sizeof a, &v), 0);
  assert_non_null(v);
  return v;
}

treadle_tcp_stream_t *plain_pair(treadle_runtime_t *rt, int rcvbuf, int *fd) {
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  *fd = plain_connect(port, rcvbuf);
  treadle_tcp_stream_t *s = accept_one(rt, l);
  treadle_tcp_listener_free(l);
  return s;
}
