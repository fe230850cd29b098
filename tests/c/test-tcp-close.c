/* Closing TCP sockets: resets in the middle of a read and of a write, closing
 * a socket another task waits on, streams that outlive their runtime, tasks
 * cancelled while they wait, and an fd number reused right after a close. The
 * harness checks after every case that every fd was closed. No assertion
 * depends on timing. */
#define _GNU_SOURCE
#include <signal.h>

#include "net_util.h"

/* Closes with SO_LINGER {1, 0}: the peer gets a reset. */
static void close_with_reset(int fd) {
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
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

/* ------------------------------------------------------------- fd reuse */

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

static const treadle_task_vtable_t reuser_vt = {.poll = reuser_poll,
                                                .drop = reuser_drop,
                                                .drop_output =
                                                    stream_drop_output};

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
    assert_int_equal(
        treadle_spawn(h, &stale_waiter_vt, &w, sizeof w, &joins[0]), 0);
    reuser_t r = {.l = l,
                  .a = a,
                  .poke_fd = rep % 2 ? pa : -1,
                  .parked = &parked,
                  .before = before,
                  .after = after};
    void *bv = NULL;
    assert_int_equal(
        treadle_runtime_block_on(rt, &reuser_vt, &r, sizeof r, &bv), 0);
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

static const struct CMUnitTest tests[] = {
    RT_TEST(peer_reset_mid_read),
    RT_TEST(peer_reset_mid_write),
    RT_TEST(close_wakes_waiters),
    RT_TEST(streams_outlive_runtime),
    RT_TEST(cancelled_waiters_release_everything),
    RT_TEST(fd_reuse_after_close),
};

TEST_MAIN(tests)
