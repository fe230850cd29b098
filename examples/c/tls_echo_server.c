/* A TLS echo server.
 *
 *     tls_echo_server CERT KEY [PORT]
 *
 * Listens on 127.0.0.1:PORT (default 0: the system picks a port, printed
 * as "listening on 127.0.0.1:PORT") and serves TLS with the certificate
 * chain in CERT and its private key in KEY (PEM files; one made with
 * `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
 * -keyout key.pem -out cert.pem -days 30 -subj /CN=localhost -addext
 * subjectAltName=DNS:localhost` does). It offers the ALPN protocol
 * "echo". Each connection is one task: the TLS handshake, then everything
 * it reads is written back, until the client's close_notify, which it
 * answers with its own. The task prints what the handshake agreed on.
 * SIGINT or SIGTERM stops the server, which says "bye".
 *
 * Try it with examples/c/tls_client.c, or with
 * `openssl s_client -connect 127.0.0.1:PORT -CAfile cert.pem`. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <treadle.h>

typedef struct {
  treadle_tls_t *tls;
  int step; /* 0: handshake, 1: echo, 2: close_notify */
  char buf[4096];
  size_t n, done;
} conn_t;

static treadle_poll_t conn_poll(treadle_cx_t *cx, void *state) {
  conn_t *c = state;
  treadle_err_t err = 0;
  if (c->step == 0) {
    if (treadle_tls_handshake_poll(c->tls, cx, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0) {
      printf("handshake failed: %s: %s\n", treadle_strerror(err),
             treadle_tls_error_message(c->tls));
      fflush(stdout);
      return TREADLE_READY;
    }
    const char *alpn = treadle_tls_alpn(c->tls);
    const char *sni = treadle_tls_server_name(c->tls);
    printf("connection: TLS 1.%d, server name %s, ALPN %s\n",
           treadle_tls_version(c->tls) - 0x0301, sni ? sni : "(none)",
           alpn ? alpn : "(none)");
    fflush(stdout);
    c->step = 1;
  }
  while (c->step == 1 && err == 0) {
    if (c->done < c->n) { /* write back what came in */
      if (treadle_tls_write_all_poll(c->tls, cx, c->buf, c->n, &c->done,
                                     &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
    } else {
      if (treadle_tls_read_poll(c->tls, cx, c->buf, sizeof c->buf, &c->n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      c->done = 0;
      if (err == 0 && c->n == 0)
        c->step = 2; /* the client's close_notify */
    }
  }
  if (c->step == 2 &&
      treadle_tls_shutdown_poll(c->tls, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err != 0)
    printf("connection: %s %s\n", treadle_strerror(err),
           treadle_tls_error_message(c->tls));
  return TREADLE_READY;
}

static void conn_drop(void *state) { treadle_tls_free(((conn_t *)state)->tls); }

static const treadle_task_vtable_t conn_vt = {.poll = conn_poll,
                                              .drop = conn_drop};

typedef struct {
  treadle_listener_t *listener;
  treadle_tls_config_t *config;
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
    treadle_tcp_set_nodelay(stream, true); /* small echoes go at once */
    conn_t conn = {0};
    err = treadle_tls_server_new(s->config, stream, &conn.tls);
    if (err == 0)
      err = treadle_spawn(treadle_cx_handle(cx), &conn_vt, &conn, sizeof conn,
                          NULL);
    if (err != 0) {
      fprintf(stderr, "connection: %s\n", treadle_strerror(err));
      if (conn.tls != NULL)
        treadle_tls_free(conn.tls);
      else
        treadle_stream_free(stream);
    }
  }
}

static void server_drop(void *state) {
  server_t *s = state;
  treadle_signal_drop(&s->sigint);
  treadle_signal_drop(&s->sigterm);
  treadle_listener_free(s->listener);
  treadle_tls_config_unref(s->config); /* connections hold their own */
}

static const treadle_task_vtable_t server_vt = {.poll = server_poll,
                                                .drop = server_drop};

static int fail(const char *what, treadle_err_t err, const char *more) {
  fprintf(stderr, "tls_echo_server: %s: %s%s%s\n", what, treadle_strerror(err),
          more != NULL && more[0] != '\0' ? ": " : "", more ? more : "");
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s CERT KEY [PORT]\n", argv[0]);
    return 2;
  }
  int port = argc > 3 ? atoi(argv[3]) : 0;
  server_t s = {0};
  treadle_err_t err = treadle_tls_config_new(TREADLE_TLS_SERVER, &s.config);
  if (err != 0)
    return fail("TLS", err, NULL);
  const char *alpn[] = {"echo"};
  if ((err = treadle_tls_config_set_cert(s.config, argv[1], argv[2])) != 0 ||
      (err = treadle_tls_config_set_alpn(s.config, alpn, 1)) != 0) {
    fail("certificate", err, treadle_tls_config_error_message(s.config));
    treadle_tls_config_unref(s.config);
    return 1;
  }
  treadle_runtime_t *rt;
  if ((err = treadle_runtime_new_current_thread(&rt)) != 0) {
    treadle_tls_config_unref(s.config);
    return fail("runtime", err, NULL);
  }
  treadle_handle_t *h = treadle_runtime_handle(rt);
  if ((err = treadle_tcp_bind(h, "127.0.0.1", port, NULL, &s.listener)) != 0 ||
      (err = treadle_signal_init(&s.sigint, h, SIGINT)) != 0 ||
      (err = treadle_signal_init(&s.sigterm, h, SIGTERM)) != 0) {
    server_drop(&s);
    treadle_runtime_free(rt);
    return fail("listen", err, NULL);
  }
  struct sockaddr_storage addr;
  char text[64];
  treadle_listener_addr(s.listener, &addr);
  treadle_sockaddr_format(&addr, text, sizeof text);
  printf("listening on %s\n", text);
  fflush(stdout);
  err = treadle_runtime_block_on(rt, &server_vt, &s, sizeof s, NULL);
  printf("bye\n");
  treadle_err_t ferr = treadle_runtime_free(rt);
  return err != 0 || ferr != 0;
}
