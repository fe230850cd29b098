/* The seed's exercises 1 and 5: a TCP echo server, one task per
 * connection, on either runtime flavor.
 *
 *     echo_server PORT [current_thread|multi_thread] [WORKERS]
 *
 * Listens on 127.0.0.1:PORT (0 picks a port; the line "listening on ..."
 * says which). The main task accepts and spawns; each connection task
 * reads up to 16 KiB into its thread's buffer and writes it all back
 * (keeping only what the socket did not take) until the peer closes. SIGINT
 * or SIGTERM (through treadle's signal driver) stops it cleanly; it then
 * prints how many connections it served, how many threads the process
 * had, and which worker first ran each connection (multi_thread spreads
 * them; current_thread runs everything on its one thread). */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <treadle.h>

#define BUF 16384
#define MAX_WORKERS 64

static _Atomic unsigned long accepted;
static _Atomic unsigned long by_worker[MAX_WORKERS];

/* One read buffer per thread, as the bare epoll server has: a connection
 * keeps bytes of its own only when the socket did not take them all. */
static __thread char buf[BUF];

typedef struct {
  treadle_tcp_stream_t *stream;
  bool counted;
  char *pending; /* unsent bytes (after a short write), or NULL */
  size_t len, done;
} conn_t;

static treadle_poll_t conn_poll(treadle_cx_t *cx, void *state) {
  conn_t *c = state;
  if (!c->counted) {
    c->counted = true;
    atomic_fetch_add(&by_worker[treadle_cx_worker(cx) % MAX_WORKERS], 1);
  }
  treadle_err_t err;
  for (;;) {
    if (c->pending != NULL) {
      if (treadle_tcp_write_all_poll(c->stream, cx, c->pending, c->len,
                                     &c->done, &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      free(c->pending);
      c->pending = NULL;
      if (err != 0)
        return TREADLE_READY;
    }
    size_t n;
    if (treadle_tcp_read_poll(c->stream, cx, buf, BUF, &n, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0 || n == 0)
      return TREADLE_READY; /* peer closed or failed: drop closes */
    size_t done = 0;
    if (treadle_tcp_write_all_poll(c->stream, cx, buf, n, &done, &err) ==
        TREADLE_READY) {
      if (err != 0)
        return TREADLE_READY;
      continue;
    }
    /* The socket is full: keep the rest until it drains. */
    c->pending = malloc(n - done);
    if (c->pending == NULL)
      return TREADLE_READY;
    memcpy(c->pending, buf + done, n - done);
    c->len = n - done;
    c->done = 0;
    return TREADLE_PENDING;
  }
}

static void conn_drop(void *state) {
  conn_t *c = state;
  free(c->pending);
  treadle_tcp_stream_free(c->stream);
}

static const treadle_task_vtable_t conn_vt = {.poll = conn_poll,
                                              .drop = conn_drop};

typedef struct {
  treadle_tcp_listener_t *listener;
  treadle_signal_t sigint, sigterm;
} server_t;

static treadle_poll_t server_poll(treadle_cx_t *cx, void *state) {
  server_t *s = state;
  treadle_err_t err;
  if (treadle_signal_poll(&s->sigint, cx, &err) == TREADLE_READY ||
      treadle_signal_poll(&s->sigterm, cx, &err) == TREADLE_READY)
    return TREADLE_READY;
  for (;;) {
    treadle_tcp_stream_t *stream;
    if (treadle_tcp_accept_poll(s->listener, cx, &stream, NULL, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0) {
      fprintf(stderr, "accept: %s\n", treadle_strerror(err));
      if (err == TREADLE_ECLOSED || err == TREADLE_ESHUTDOWN)
        return TREADLE_READY;
      continue;
    }
    atomic_fetch_add(&accepted, 1);
    treadle_tcp_set_nodelay(stream, true);
    conn_t conn = {.stream = stream};
    err = treadle_spawn(treadle_cx_handle(cx), &conn_vt, &conn, sizeof conn,
                        NULL);
    if (err != 0) {
      fprintf(stderr, "spawn: %s\n", treadle_strerror(err));
      treadle_tcp_stream_free(stream);
    }
  }
}

static void server_drop(void *state) {
  server_t *s = state;
  treadle_signal_drop(&s->sigint);
  treadle_signal_drop(&s->sigterm);
  treadle_tcp_listener_free(s->listener);
}

static const treadle_task_vtable_t server_vt = {.poll = server_poll,
                                                .drop = server_drop};

static int threads_now(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  int n = -1;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "Threads: %d", &n) == 1)
      break;
  if (f != NULL)
    fclose(f);
  return n;
}

static int fail(const char *what, treadle_err_t err) {
  fprintf(stderr, "echo_server: %s: %s\n", what, treadle_strerror(err));
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT [current_thread|multi_thread] [WORKERS]\n",
            argv[0]);
    return 2;
  }
  int port = atoi(argv[1]);
  const char *flavor = argc > 2 ? argv[2] : "current_thread";
  unsigned workers = argc > 3 ? (unsigned)atoi(argv[3]) : 2;
  bool multi = strcmp(flavor, "multi_thread") == 0;
  if (!multi && strcmp(flavor, "current_thread") != 0) {
    fprintf(stderr, "FLAVOR must be current_thread or multi_thread\n");
    return 2;
  }
  treadle_builder_t *b;
  treadle_err_t err = treadle_builder_new(
      multi ? TREADLE_MULTI_THREAD : TREADLE_CURRENT_THREAD, &b);
  if (err == 0 && multi)
    err = treadle_builder_worker_threads(b, workers);
  if (err != 0)
    return fail("builder", err);
  treadle_builder_enable_all(b);
  treadle_runtime_t *rt;
  err = treadle_builder_build(b, &rt);
  treadle_builder_free(b);
  if (err != 0)
    return fail("runtime", err);
  treadle_handle_t *h = treadle_runtime_handle(rt);

  server_t s = {0};
  err = treadle_tcp_bind(h, "127.0.0.1", port, NULL, &s.listener);
  if (err != 0)
    return treadle_runtime_free(rt), fail("bind", err);
  if ((err = treadle_signal_init(&s.sigint, h, SIGINT)) != 0 ||
      (err = treadle_signal_init(&s.sigterm, h, SIGTERM)) != 0) {
    treadle_signal_drop(&s.sigint);
    treadle_tcp_listener_free(s.listener);
    return treadle_runtime_free(rt), fail("signal", err);
  }
  struct sockaddr_storage addr;
  char text[64];
  treadle_tcp_listener_addr(s.listener, &addr);
  treadle_sockaddr_format(&addr, text, sizeof text);
  if (multi)
    printf("listening on %s (multi_thread, %u workers)\n", text, workers);
  else
    printf("listening on %s (current_thread)\n", text);
  fflush(stdout);

  err = treadle_runtime_block_on(rt, &server_vt, &s, sizeof s, NULL);
  int threads = threads_now();
  fprintf(stderr, "served %lu connections; %d thread%s in the process",
          atomic_load(&accepted), threads, threads == 1 ? "" : "s");
  fprintf(stderr, "; first run by worker:");
  for (unsigned i = 0; i < (multi ? workers : 1) && i < MAX_WORKERS; i++)
    fprintf(stderr, " %u:%lu", i, atomic_load(&by_worker[i]));
  fprintf(stderr, "\n");
  for (unsigned i = 0; i < (multi ? workers : 1); i++) {
    treadle_worker_metrics_t m;
    if (treadle_handle_worker_metrics(h, i, &m) == 0)
      fprintf(stderr,
              "worker %u: %llu polls, %llu stolen, %llu parks, %llu unparks\n",
              i, (unsigned long long)m.polls, (unsigned long long)m.steals,
              (unsigned long long)m.parks, (unsigned long long)m.unparks);
  }
  treadle_err_t ferr = treadle_runtime_free(rt);
  return err != 0 || ferr != 0;
}
