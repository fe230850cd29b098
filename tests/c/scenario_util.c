/* The scenarios that the allocation sweep (test-alloc-sweep.c) and the
 * system-call fault tests (tests/fault/test-fault.c) run: each does one
 * kind of work on a runtime in one task and returns the task's status.
 * Each is one state machine in one task, so that a failure on one side
 * (say the accept) cannot leave the other side (the client) waiting
 * forever: the task ends with the first error. Bytes are checked; a lost,
 * extra or wrong byte is SCENARIO_LOST. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include "scenario_util.h"

/* ---------------------------------------------------- spawn and join */

typedef struct {
  int step, i;
  treadle_join_t *joins[3];
} spawn_t;

static treadle_poll_t child_poll(treadle_cx_t *cx, void *st) {
  treadle_cx_set_output(cx, 0, (void *)(intptr_t)(*(int *)st * 2));
  return TREADLE_READY;
}
static const treadle_task_vtable_t child_vt = {child_poll, NULL, NULL};

static void spawn_drop(void *st) {
  spawn_t *s = st;
  for (int i = 0; i < 3; i++)
    treadle_join_detach(s->joins[i]);
}

static treadle_poll_t spawn_poll(treadle_cx_t *cx, void *st) {
  spawn_t *s = st;
  if (s->step == 0) {
    for (int i = 0; i < 3; i++) {
      treadle_spawn_opts_t o = TREADLE_SPAWN_OPTS_INIT;
      o.name = i == 1 ? "named child" : NULL;
      treadle_err_t err = treadle_spawn_with(treadle_cx_handle(cx), &child_vt,
                                             &i, sizeof i, &o, &s->joins[i]);
      if (err != 0) {
        treadle_cx_set_output(cx, err, NULL);
        return TREADLE_READY;
      }
    }
    s->step = 1;
  }
  for (; s->i < 3; s->i++) {
    treadle_err_t status;
    void *v;
    if (treadle_join_poll(s->joins[s->i], cx, &status, &v) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (status == 0 && (intptr_t)v != s->i * 2)
      status = TREADLE_EINVAL;
    if (status != 0) {
      treadle_cx_set_output(cx, status, NULL);
      return TREADLE_READY;
    }
  }
  return TREADLE_READY;
}
static const treadle_task_vtable_t spawn_vt = {spawn_poll, spawn_drop, NULL};

treadle_err_t scenario_spawn_join(treadle_runtime_t *rt) {
  spawn_t s = {0};
  return RUN(rt, &spawn_vt, s);
}

/* ------------------------------------------------------------- timers */

typedef struct {
  int step;
  treadle_sleep_t a, b;
} timers_t;

static void timers_drop(void *st) {
  timers_t *t = st;
  treadle_sleep_drop(&t->a);
  treadle_sleep_drop(&t->b);
}

static treadle_poll_t timers_poll(treadle_cx_t *cx, void *st) {
  timers_t *t = st;
  treadle_err_t err = 0;
  if (t->step == 0) {
    /* 100 ms: long enough that the task parks even under valgrind, whose
     * first run of new code is slow */
    treadle_sleep_init(&t->a, 100 * TREADLE_NSEC_PER_MSEC);
    treadle_sleep_init(&t->b, 1000 * TREADLE_NSEC_PER_MSEC);
    t->step = 1;
  }
  if (t->step == 1) {
    /* b waits, so a is not alone in the wheel; then b is moved close. */
    (void)treadle_sleep_poll(&t->b, cx, &err);
    if (err != 0)
      goto done;
    if (treadle_sleep_poll(&t->a, cx, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      goto done;
    treadle_sleep_reset(&t->b, treadle_now() + TREADLE_NSEC_PER_MSEC);
    t->step = 2;
  }
  if (treadle_sleep_poll(&t->b, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
done:
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}
static const treadle_task_vtable_t timers_vt = {timers_poll, timers_drop, NULL};

treadle_err_t scenario_timers(treadle_runtime_t *rt) {
  timers_t t = {0};
  return RUN(rt, &timers_vt, t);
}

/* ------------------------------------------------------ blocking pool */

static treadle_err_t job_run(void *st, void **value) {
  *value = (void *)(intptr_t)(*(int *)st + 1);
  return 0;
}
static const treadle_blocking_vtable_t job_vt = {job_run, NULL, NULL};

static treadle_poll_t blocking_poll(treadle_cx_t *cx, void *st) {
  spawn_t *s = st;
  if (s->step == 0) {
    for (int i = 0; i < 2; i++) {
      treadle_err_t err = treadle_spawn_blocking(
          treadle_cx_handle(cx), &job_vt, &i, sizeof i, &s->joins[i]);
      if (err != 0) {
        treadle_cx_set_output(cx, err, NULL);
        return TREADLE_READY;
      }
    }
    s->step = 1;
  }
  for (; s->i < 2; s->i++) {
    treadle_err_t status;
    void *v;
    if (treadle_join_poll(s->joins[s->i], cx, &status, &v) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (status == 0 && (intptr_t)v != s->i + 1)
      status = TREADLE_EINVAL;
    if (status != 0) {
      treadle_cx_set_output(cx, status, NULL);
      return TREADLE_READY;
    }
  }
  return TREADLE_READY;
}
static const treadle_task_vtable_t blocking_vt = {blocking_poll, spawn_drop,
                                                  NULL};

treadle_err_t scenario_blocking(treadle_runtime_t *rt) {
  spawn_t s = {0};
  return RUN(rt, &blocking_vt, s);
}

/* ---------------------------------------------------------------- TCP */


/* Connect and accept at once, the client sends SCENARIO_TCP_LEN pattern bytes and
 * shuts down, the server echoes them, the client checks every byte. */
typedef struct {
  int step, port;
  treadle_tcp_listener_t *l;
  treadle_tcp_connect_t conn;
  bool conn_live;
  treadle_tcp_stream_t *client, *server;
  size_t sent, echoed, got, have;
  bool server_eof;
  uint8_t buf[8192];
  uint8_t out[SCENARIO_TCP_LEN];
} tcp_t;

static void tcp_drop(void *st) {
  tcp_t *t = st;
  if (t->conn_live)
    treadle_tcp_connect_drop(&t->conn);
  treadle_stream_free(t->client);
  treadle_stream_free(t->server);
  treadle_listener_free(t->l);
}

static treadle_err_t tcp_step(tcp_t *t, treadle_cx_t *cx, bool *pending) {
  treadle_err_t err = 0;
  size_t n;
  *pending = true;
  if (t->l == NULL) {
    err = treadle_tcp_bind(treadle_cx_handle(cx), "127.0.0.1", 0, NULL, &t->l);
    if (err != 0)
      return err;
    struct sockaddr_storage a;
    if ((err = treadle_listener_addr(t->l, &a)) != 0)
      return err;
    t->port = ntohs(((struct sockaddr_in *)&a)->sin_port);
  }
  if (t->step == 0) { /* connect and accept */
    if (t->client == NULL) {
      if (!t->conn_live) {
        err = treadle_tcp_connect_init(&t->conn, treadle_cx_handle(cx),
                                       "127.0.0.1", t->port);
        if (err != 0)
          return err;
        t->conn_live = true;
      }
      if (treadle_tcp_connect_poll(&t->conn, cx, &t->client, &err) ==
          TREADLE_READY) {
        if (err != 0)
          return err;
      }
    }
    if (t->server == NULL &&
        treadle_listener_accept_poll(t->l, cx, &t->server, NULL, &err) ==
            TREADLE_READY &&
        err != 0)
      return err;
    if (t->client == NULL || t->server == NULL)
      return 0;
    t->step = 1;
  }
  bool progress = true;
  while (progress) {
    progress = false;
    if (t->sent < SCENARIO_TCP_LEN) { /* client writes */
      uint8_t chunk[4096];
      size_t len = SCENARIO_TCP_LEN - t->sent < sizeof chunk ? SCENARIO_TCP_LEN - t->sent
                                                    : sizeof chunk;
      for (size_t i = 0; i < len; i++)
        chunk[i] = (uint8_t)((t->sent + i) * 7);
      if (treadle_stream_write_poll(t->client, cx, chunk, len, &n, &err) ==
          TREADLE_READY) {
        if (err != 0)
          return err;
        t->sent += n;
        progress = true;
        if (t->sent == SCENARIO_TCP_LEN && (err = treadle_stream_shutdown(t->client)))
          return err;
      }
    }
    if (t->have > 0) { /* server echoes what it holds */
      if (treadle_stream_write_poll(t->server, cx, t->buf, t->have, &n,
                                    &err) == TREADLE_READY) {
        if (err != 0)
          return err;
        memmove(t->buf, t->buf + n, t->have - n);
        t->have -= n;
        t->echoed += n;
        progress = true;
      }
    } else if (!t->server_eof) { /* server reads */
      if (treadle_stream_read_poll(t->server, cx, t->buf, sizeof t->buf, &n,
                                   &err) == TREADLE_READY) {
        if (err != 0)
          return err;
        if (n == 0) {
          t->server_eof = true;
          if ((err = treadle_stream_shutdown(t->server)))
            return err;
        }
        t->have = n;
        progress = true;
      }
    }
    /* client reads the echo, to its end */
    uint8_t extra;
    size_t room = SCENARIO_TCP_LEN - t->got;
    if (treadle_stream_read_poll(t->client, cx,
                                 room > 0 ? t->out + t->got : &extra,
                                 room > 0 ? room : 1, &n,
                                 &err) == TREADLE_READY) {
      if (err != 0)
        return err;
      if (n > 0 && room == 0)
        return SCENARIO_LOST; /* more than was sent */
      if (n == 0) {
        if (t->got < SCENARIO_TCP_LEN)
          return SCENARIO_LOST; /* lost bytes */
        for (size_t i = 0; i < SCENARIO_TCP_LEN; i++)
          if (t->out[i] != (uint8_t)(i * 7))
            return SCENARIO_LOST;
        *pending = false;
        return 0;
      }
      t->got += n;
      progress = true;
    }
  }
  return 0;
}

static treadle_poll_t tcp_poll(treadle_cx_t *cx, void *st) {
  bool pending;
  treadle_err_t err = tcp_step(st, cx, &pending);
  if (err == 0 && pending)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}
static const treadle_task_vtable_t tcp_vt = {tcp_poll, tcp_drop, NULL};

treadle_err_t scenario_tcp(treadle_runtime_t *rt) {
  /* The task's state starts zeroed (NULL state): it binds in the task,
   * so that a failed spawn leaves nothing to free. */
  return treadle_runtime_block_on(rt, &tcp_vt, NULL, sizeof(tcp_t), NULL);
}

/* --------------------------------------------------------- accept loop */

typedef struct {
  treadle_tcp_listener_t *l;
  int port;
  treadle_tcp_connect_t conn[SCENARIO_CLIENTS];
  bool conn_live[SCENARIO_CLIENTS], wrote[SCENARIO_CLIENTS];
  treadle_tcp_stream_t *client[SCENARIO_CLIENTS], *server[SCENARIO_CLIENTS];
  int accepted, connected, written;
  unsigned seen; /* bit b: byte b arrived */
  bool got[SCENARIO_CLIENTS];
} accept_loop_t;

static void accept_loop_drop(void *st) {
  accept_loop_t *a = st;
  for (int i = 0; i < SCENARIO_CLIENTS; i++) {
    if (a->conn_live[i])
      treadle_tcp_connect_drop(&a->conn[i]);
    treadle_stream_free(a->client[i]);
    treadle_stream_free(a->server[i]);
  }
  treadle_listener_free(a->l);
}

static treadle_err_t accept_loop_step(accept_loop_t *a, treadle_cx_t *cx,
                                      bool *done) {
  treadle_err_t err = 0;
  size_t n;
  treadle_handle_t *h = treadle_cx_handle(cx);
  if (a->l == NULL) {
    if ((err = treadle_tcp_bind(h, "127.0.0.1", 0, NULL, &a->l)) != 0)
      return err;
    struct sockaddr_storage addr;
    if ((err = treadle_listener_addr(a->l, &addr)) != 0)
      return err;
    a->port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
    for (int i = 0; i < SCENARIO_CLIENTS; i++) {
      if ((err = treadle_tcp_connect_init(&a->conn[i], h, "127.0.0.1",
                                          a->port)) != 0)
        return err;
      a->conn_live[i] = true;
    }
  }
  for (int i = 0; i < SCENARIO_CLIENTS; i++) {
    if (a->client[i] == NULL &&
        treadle_tcp_connect_poll(&a->conn[i], cx, &a->client[i], &err) ==
            TREADLE_READY) {
      if (err != 0)
        return err;
      a->connected++;
    }
    uint8_t b = (uint8_t)i;
    if (a->client[i] != NULL && !a->wrote[i] &&
        treadle_stream_write_poll(a->client[i], cx, &b, 1, &n, &err) ==
            TREADLE_READY) {
      if (err != 0)
        return err;
      a->wrote[i] = true;
      a->written++;
    }
  }
  while (a->accepted < SCENARIO_CLIENTS &&
         treadle_listener_accept_poll(a->l, cx, &a->server[a->accepted], NULL,
                                      &err) == TREADLE_READY) {
    if (err != 0)
      return err;
    a->accepted++;
  }
  int got = 0;
  for (int i = 0; i < a->accepted; i++) {
    uint8_t b;
    if (!a->got[i] &&
        treadle_stream_read_poll(a->server[i], cx, &b, 1, &n, &err) ==
            TREADLE_READY) {
      if (err != 0)
        return err;
      if (n != 1 || b >= SCENARIO_CLIENTS || (a->seen & (1u << b)))
        return SCENARIO_LOST;
      a->seen |= 1u << b;
      a->got[i] = true;
    }
    got += a->got[i];
  }
  *done = got == SCENARIO_CLIENTS;
  return 0;
}

static treadle_poll_t accept_loop_poll(treadle_cx_t *cx, void *st) {
  bool done = false;
  treadle_err_t err = accept_loop_step(st, cx, &done);
  if (err == 0 && !done)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}
static const treadle_task_vtable_t accept_loop_vt = {accept_loop_poll,
                                                     accept_loop_drop, NULL};

treadle_err_t scenario_accept_loop(treadle_runtime_t *rt) {
  accept_loop_t a = {0};
  return RUN(rt, &accept_loop_vt, a);
}

/* ---------------------------------------------------------------- UDP */

typedef struct {
  int step;
  treadle_dgram_t *a, *b;
  struct sockaddr_storage to;
  char buf[64];
} udp_t;

static void udp_drop(void *st) {
  udp_t *u = st;
  treadle_dgram_free(u->a);
  treadle_dgram_free(u->b);
}

static treadle_poll_t udp_poll(treadle_cx_t *cx, void *st) {
  udp_t *u = st;
  treadle_err_t err = 0;
  size_t n;
  if (u->a == NULL) {
    treadle_handle_t *h = treadle_cx_handle(cx);
    if ((err = treadle_udp_bind(h, "127.0.0.1", 0, NULL, &u->a)) != 0 ||
        (err = treadle_udp_bind(h, "127.0.0.1", 0, NULL, &u->b)) != 0 ||
        (err = treadle_dgram_local_addr(u->b, &u->to)) != 0)
      goto done;
  }
  if (u->step == 0) {
    if (treadle_dgram_send_to_poll(u->a, cx, "ping", 4, &u->to, &n, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      goto done;
    u->step = 1;
  }
  if (treadle_dgram_recv_from_poll(u->b, cx, u->buf, sizeof u->buf, NULL, &n,
                                   &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err == 0 && (n != 4 || memcmp(u->buf, "ping", 4) != 0))
    err = TREADLE_EINVAL;
done:
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}
static const treadle_task_vtable_t udp_vt = {udp_poll, udp_drop, NULL};

treadle_err_t scenario_udp(treadle_runtime_t *rt) {
  udp_t u = {0};
  return RUN(rt, &udp_vt, u);
}

/* ---------------------------------------------------------- processes */

/* sh -c 'echo hi' with stdout piped: read it to its end, then wait. */
typedef struct {
  int step;
  treadle_child_t *c;
  treadle_async_fd_t *out;
  size_t got;
  char buf[16];
} proc_t;

static void proc_drop(void *st) {
  proc_t *p = st;
  treadle_async_fd_free(p->out);
  treadle_child_free(p->c);
}

static treadle_err_t spawn_echo_hi(treadle_handle_t *h, treadle_child_t **c) {
  treadle_command_t *cmd = NULL;
  treadle_err_t err = treadle_command_new("sh", &cmd);
  if (err == 0)
    err = treadle_command_arg(cmd, "-c");
  if (err == 0)
    err = treadle_command_arg(cmd, "echo hi");
  if (err == 0)
    err = treadle_command_env(cmd, "TREADLE_SWEEP", "1");
  if (err == 0)
    err = treadle_command_stdout(cmd, TREADLE_STDIO_PIPE);
  if (err == 0)
    err = treadle_command_kill_on_drop(cmd, true);
  if (err == 0)
    err = treadle_command_spawn(cmd, h, c);
  treadle_command_free(cmd);
  return err;
}

static treadle_poll_t proc_poll(treadle_cx_t *cx, void *st) {
  proc_t *p = st;
  treadle_err_t err = 0;
  size_t n;
  if (p->c == NULL) {
    if ((err = spawn_echo_hi(treadle_cx_handle(cx), &p->c)) != 0)
      goto done;
    p->out = treadle_child_take_stdout(p->c);
  }
  while (p->step == 0) {
    if (treadle_async_fd_read_poll(p->out, cx, p->buf + p->got,
                                   sizeof p->buf - p->got, &n,
                                   &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      goto done;
    p->got += n;
    if (n == 0)
      p->step = 1;
  }
  treadle_exit_status_t status;
  if (treadle_child_wait_poll(p->c, cx, &status, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err == 0 && (!status.exited || status.code != 0 || p->got != 3 ||
                   memcmp(p->buf, "hi\n", 3) != 0))
    err = TREADLE_EINVAL;
done:
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}
static const treadle_task_vtable_t proc_vt = {proc_poll, proc_drop, NULL};

treadle_err_t scenario_process(treadle_runtime_t *rt) {
  proc_t p = {0};
  return RUN(rt, &proc_vt, p);
}

/* --------------------------------------------------------------- DNS */

typedef struct {
  treadle_lookup_t lk;
  bool live;
} dns_t;

static void dns_drop(void *st) {
  dns_t *d = st;
  if (d->live)
    treadle_lookup_host_drop(&d->lk);
}

static treadle_poll_t dns_poll(treadle_cx_t *cx, void *st) {
  dns_t *d = st;
  treadle_err_t err = 0;
  treadle_addrs_t *a = NULL;
  if (!d->live) {
    err = treadle_lookup_host_init(&d->lk, treadle_cx_handle(cx), "localhost",
                                   80);
    if (err != 0)
      goto done;
    d->live = true;
  }
  if (treadle_lookup_host_poll(&d->lk, cx, &a, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_lookup_host_drop(&d->lk);
  d->live = false;
  if (err == 0 && treadle_addrs_count(a) == 0)
    err = TREADLE_EINVAL;
  treadle_addrs_free(a);
done:
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}
static const treadle_task_vtable_t dns_vt = {dns_poll, dns_drop, NULL};

treadle_err_t scenario_dns(treadle_runtime_t *rt) {
  dns_t d = {0};
  return RUN(rt, &dns_vt, d);
}


/* ---------------------------------------------------------------- TLS */

/* The files scenario_tls reads (set by its caller, tls_certs.h). */
const char *scenario_tls_ca, *scenario_tls_cert, *scenario_tls_key;

/* One task is both ends: it makes the two configurations, binds, connects
 * and accepts, runs both handshakes, sends "ping" one way and "pong" the
 * other, then each side sends close_notify and reads the other's end. */
typedef struct {
  int step;
  treadle_tls_config_t *cc, *sc;
  treadle_tcp_listener_t *l;
  treadle_tcp_connect_t conn;
  bool conn_live;
  treadle_tcp_stream_t *cs, *ss; /* until the TLS streams take them */
  treadle_tls_t *client, *server;
  bool client_hs, server_hs, client_shut, server_shut, client_eof, server_eof;
  size_t sent, got;
  char buf[8];
} tls_scn_t;

static void tls_drop(void *st) {
  tls_scn_t *t = st;
  if (t->conn_live)
    treadle_tcp_connect_drop(&t->conn);
  treadle_tls_free(t->client);
  treadle_tls_free(t->server);
  treadle_stream_free(t->cs);
  treadle_stream_free(t->ss);
  treadle_listener_free(t->l);
  treadle_tls_config_unref(t->cc);
  treadle_tls_config_unref(t->sc);
}

static treadle_err_t tls_setup(tls_scn_t *t, treadle_cx_t *cx) {
  treadle_err_t err;
  if ((err = treadle_tls_config_new(TREADLE_TLS_SERVER, &t->sc)) != 0 ||
      (err = treadle_tls_config_set_cert(t->sc, scenario_tls_cert,
                                         scenario_tls_key)) != 0 ||
      (err = treadle_tls_config_new(TREADLE_TLS_CLIENT, &t->cc)) != 0 ||
      (err = treadle_tls_config_set_ca(t->cc, scenario_tls_ca, NULL)) != 0 ||
      (err = treadle_tcp_bind(treadle_cx_handle(cx), "127.0.0.1", 0, NULL,
                              &t->l)) != 0)
    return err;
  struct sockaddr_storage a;
  if ((err = treadle_listener_addr(t->l, &a)) != 0)
    return err;
  err = treadle_tcp_connect_init(&t->conn, treadle_cx_handle(cx), "127.0.0.1",
                                 ntohs(((struct sockaddr_in *)&a)->sin_port));
  t->conn_live = err == 0;
  return err;
}

/* Reads into buf; READY with the bytes so far in *got, or at the end of
 * the stream. */
static treadle_poll_t tls_read_exact(treadle_tls_t *s, treadle_cx_t *cx,
                                     char *buf, size_t len, size_t *got,
                                     bool *eof, treadle_err_t *err) {
  while (*got < len) {
    size_t n;
    if (treadle_tls_read_poll(s, cx, buf + *got, len - *got, &n, err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    if (n == 0) {
      *eof = true;
      return TREADLE_READY;
    }
    *got += n;
  }
  return TREADLE_READY;
}

static treadle_err_t tls_step(tls_scn_t *t, treadle_cx_t *cx, bool *pending) {
  treadle_err_t err = 0;
  bool eof = false;
  *pending = true;
  if (t->step == 0) {
    if ((err = tls_setup(t, cx)) != 0)
      return err;
    t->step = 1;
  }
  if (t->step == 1) { /* connect and accept */
    if (t->cs == NULL &&
        treadle_tcp_connect_poll(&t->conn, cx, &t->cs, &err) == TREADLE_READY) {
      if (err != 0)
        return err;
      treadle_tcp_connect_drop(&t->conn);
      t->conn_live = false;
    }
    if (t->ss == NULL &&
        treadle_listener_accept_poll(t->l, cx, &t->ss, NULL, &err) ==
            TREADLE_READY &&
        err != 0)
      return err;
    if (t->cs == NULL || t->ss == NULL)
      return 0;
    if ((err = treadle_tls_client_new(t->cc, t->cs, "localhost", &t->client)))
      return err;
    t->cs = NULL; /* the TLS stream's now */
    if ((err = treadle_tls_server_new(t->sc, t->ss, &t->server)))
      return err;
    t->ss = NULL;
    t->step = 2;
  }
  if (t->step == 2) { /* both handshakes */
    if (!t->client_hs &&
        treadle_tls_handshake_poll(t->client, cx, &err) == TREADLE_READY) {
      if (err != 0)
        return err;
      t->client_hs = true;
    }
    if (!t->server_hs &&
        treadle_tls_handshake_poll(t->server, cx, &err) == TREADLE_READY) {
      if (err != 0)
        return err;
      t->server_hs = true;
    }
    if (!t->client_hs || !t->server_hs)
      return 0;
    t->step = 3;
  }
  while (t->step >= 3 && t->step <= 6) {
    if (t->step == 3 || t->step == 5) { /* "ping" out, or "pong" back */
      treadle_tls_t *from = t->step == 3 ? t->client : t->server;
      const char *what = t->step == 3 ? "ping" : "pong";
      if (treadle_tls_write_all_poll(from, cx, what, 4, &t->sent, &err) ==
          TREADLE_PENDING)
        return 0;
      if (err != 0)
        return err;
      t->sent = 0;
      t->got = 0;
      t->step++;
    } else { /* the other end reads it */
      treadle_tls_t *to = t->step == 4 ? t->server : t->client;
      if (tls_read_exact(to, cx, t->buf, 4, &t->got, &eof, &err) ==
          TREADLE_PENDING)
        return 0;
      if (err != 0)
        return err;
      if (eof || memcmp(t->buf, t->step == 4 ? "ping" : "pong", 4) != 0)
        return SCENARIO_LOST;
      t->step++;
    }
  }
  /* step 7: both close_notify, each side reads the other's end */
  if (!t->client_shut &&
      treadle_tls_shutdown_poll(t->client, cx, &err) == TREADLE_READY) {
    if (err != 0)
      return err;
    t->client_shut = true;
  }
  if (!t->server_shut &&
      treadle_tls_shutdown_poll(t->server, cx, &err) == TREADLE_READY) {
    if (err != 0)
      return err;
    t->server_shut = true;
  }
  for (int side = 0; side < 2; side++) {
    bool *done = side == 0 ? &t->client_eof : &t->server_eof;
    size_t got = 0;
    if (*done ||
        tls_read_exact(side == 0 ? t->client : t->server, cx, t->buf, 1, &got,
                       done, &err) == TREADLE_PENDING)
      continue;
    if (err != 0)
      return err;
    if (!*done)
      return SCENARIO_LOST; /* a byte after "pong" */
  }
  *pending = !(t->client_shut && t->server_shut && t->client_eof &&
               t->server_eof);
  return 0;
}

static treadle_poll_t tls_poll(treadle_cx_t *cx, void *st) {
  bool pending;
  treadle_err_t err = tls_step(st, cx, &pending);
  if (err == 0 && pending)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}
static const treadle_task_vtable_t tls_vt = {tls_poll, tls_drop, NULL};

treadle_err_t scenario_tls(treadle_runtime_t *rt) {
  tls_scn_t t = {0};
  return RUN(rt, &tls_vt, t);
}
