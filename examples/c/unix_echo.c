/* A Unix stream echo server, and its client.
 *
 *     unix_echo PATH                   serve on PATH ("@name": abstract)
 *     unix_echo --client PATH [TEXT]   send TEXT (default "hello"), print
 *                                      the echo
 *
 * The server listens on a path (a stale socket file left by a server that
 * died is bound over; a live one is "address already in use") or an
 * abstract name, and runs one task per connection, as examples/c/
 * echo_server.c does for TCP: the stream functions are the same. For each
 * connection it prints the client's process id and user id (SO_PEERCRED).
 * SIGINT or SIGTERM stops it; closing the listener removes the path, and
 * it says "bye".
 *
 * The client connects, writes TEXT, shuts its write side down, reads the
 * echo to end of stream and prints it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <treadle.h>

/* ---------------------------------------------------------------- server */

typedef struct {
  treadle_stream_t *stream;
  char buf[4096];
  size_t n, done;
} conn_t;

/* Echoes until end of stream. */
static treadle_poll_t conn_poll(treadle_cx_t *cx, void *state) {
  conn_t *c = state;
  treadle_err_t err = 0;
  while (err == 0) {
    if (c->done < c->n) {
      if (treadle_stream_write_all_poll(c->stream, cx, c->buf, c->n, &c->done,
                                        &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
    } else {
      if (treadle_stream_read_poll(c->stream, cx, c->buf, sizeof c->buf, &c->n,
                                   &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (c->n == 0)
        break; /* end of stream */
      c->done = 0;
    }
  }
  return TREADLE_READY;
}

static void conn_drop(void *state) {
  treadle_stream_free(((conn_t *)state)->stream);
}

static const treadle_task_vtable_t conn_vt = {.poll = conn_poll,
                                              .drop = conn_drop};

typedef struct {
  treadle_listener_t *listener;
  treadle_signal_t sigint, sigterm;
} server_t;

static treadle_poll_t server_poll(treadle_cx_t *cx, void *state) {
  server_t *s = state;
  treadle_err_t err;
  if (treadle_signal_poll(&s->sigint, cx, &err) == TREADLE_READY ||
      treadle_signal_poll(&s->sigterm, cx, &err) == TREADLE_READY)
    return TREADLE_READY;
  for (;;) {
    treadle_stream_t *stream;
    if (treadle_listener_accept_poll(s->listener, cx, &stream, NULL, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0) {
      fprintf(stderr, "accept: %s\n", treadle_strerror(err));
      if (err == TREADLE_ECLOSED || err == TREADLE_ESHUTDOWN)
        return TREADLE_READY;
      continue;
    }
    treadle_unix_cred_t cred;
    if (treadle_unix_peer_cred(stream, &cred) == 0)
      printf("connection from pid %ld, uid %ld\n", (long)cred.pid,
             (long)cred.uid);
    fflush(stdout);
    conn_t conn = {.stream = stream};
    err = treadle_spawn(treadle_cx_handle(cx), &conn_vt, &conn, sizeof conn,
                        NULL);
    if (err != 0) {
      fprintf(stderr, "spawn: %s\n", treadle_strerror(err));
      treadle_stream_free(stream);
    }
  }
}

static void server_drop(void *state) {
  server_t *s = state;
  treadle_signal_drop(&s->sigint);
  treadle_signal_drop(&s->sigterm);
  treadle_listener_free(s->listener); /* removes the path */
}

static const treadle_task_vtable_t server_vt = {.poll = server_poll,
                                                .drop = server_drop};

/* ---------------------------------------------------------------- client */

typedef struct {
  treadle_stream_t *stream;
  const char *text;
  size_t done;
  bool shut;
  char reply[4096];
  size_t got;
} client_t;

static treadle_poll_t client_poll(treadle_cx_t *cx, void *state) {
  client_t *c = state;
  treadle_err_t err = 0;
  if (!c->shut) {
    if (treadle_stream_write_all_poll(c->stream, cx, c->text, strlen(c->text),
                                      &c->done, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err == 0)
      err = treadle_stream_shutdown(c->stream); /* the server sees the end */
    c->shut = true;
  }
  while (err == 0 && c->got < sizeof c->reply - 1) {
    size_t n;
    if (treadle_stream_read_poll(c->stream, cx, c->reply + c->got,
                                 sizeof c->reply - 1 - c->got, &n,
                                 &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (n == 0)
      break;
    c->got += n;
  }
  if (err == 0)
    printf("echoed: %.*s\n", (int)c->got, c->reply);
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void client_drop(void *state) {
  treadle_stream_free(((client_t *)state)->stream);
}

static const treadle_task_vtable_t client_vt = {.poll = client_poll,
                                                .drop = client_drop};

/* ------------------------------------------------------------------ main */

static int fail(const char *what, treadle_err_t err) {
  fprintf(stderr, "unix_echo: %s: %s\n", what, treadle_strerror(err));
  return 1;
}

int main(int argc, char **argv) {
  bool client = argc > 1 && strcmp(argv[1], "--client") == 0;
  if (argc < 2 + client) {
    fprintf(stderr, "usage: %s PATH\n       %s --client PATH [TEXT]\n",
            argv[0], argv[0]);
    return 2;
  }
  const char *path = argv[1 + client];
  treadle_runtime_t *rt;
  treadle_err_t err = treadle_runtime_new_current_thread(&rt);
  if (err != 0)
    return fail("runtime", err);
  treadle_handle_t *h = treadle_runtime_handle(rt);
  if (client) {
    client_t c = {.text = argc > 3 ? argv[3] : "hello"};
    err = treadle_unix_connect(h, path, &c.stream);
    if (err == 0)
      err = treadle_runtime_block_on(rt, &client_vt, &c, sizeof c, NULL);
    else
      fail("connect", err);
    treadle_runtime_free(rt);
    return err != 0;
  }

  server_t s = {0};
  err = treadle_unix_bind(h, path, NULL, &s.listener);
  if (err != 0)
    return treadle_runtime_free(rt), fail("bind", err);
  if ((err = treadle_signal_init(&s.sigint, h, SIGINT)) != 0 ||
      (err = treadle_signal_init(&s.sigterm, h, SIGTERM)) != 0) {
    treadle_signal_drop(&s.sigint);
    treadle_listener_free(s.listener);
    return treadle_runtime_free(rt), fail("signal", err);
  }
  struct sockaddr_storage addr;
  char text[128];
  treadle_listener_addr(s.listener, &addr);
  treadle_sockaddr_unix_path(&addr, text, sizeof text);
  printf("listening on %s\n", text);
  fflush(stdout);
  err = treadle_runtime_block_on(rt, &server_vt, &s, sizeof s, NULL);
  printf("bye\n");
  treadle_err_t ferr = treadle_runtime_free(rt);
  return err != 0 || ferr != 0;
}
