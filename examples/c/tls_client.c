/* A TLS client: connects, sends a line, prints the reply.
 *
 *     tls_client [--ca FILE] [--name NAME] [--insecure] HOST PORT [TEXT]
 *
 * Connects to HOST:PORT over TCP, runs the TLS handshake, writes TEXT
 * (default "hello") and a newline, prints the line that comes back, then
 * sends close_notify and reads to the server's own. The server's
 * certificate is verified: against the system's trust store, or the CA
 * certificates in FILE (--ca), and for the name NAME (--name; default
 * HOST), which is also sent as SNI. --insecure turns verification off
 * (the result is still printed). It offers the ALPN protocol "echo".
 * What the handshake agreed on goes to stderr, the reply to stdout; a
 * failed handshake says why and exits with status 1.
 *
 * examples/c/tls_echo_server.c is a server to try it with. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <treadle.h>

typedef struct {
  const char *host, *name, *text;
  int port;
  treadle_tls_config_t *config; /* borrowed */
  int step;
  treadle_tcp_connect_t connect;
  treadle_tls_t *tls;
  char line[4096];
  size_t len, done;
  char reply[4096];
  size_t got;
} client_t;

enum { CONNECT, HANDSHAKE, SEND, RECEIVE, CLOSE, DRAIN };

static treadle_poll_t client_poll(treadle_cx_t *cx, void *state) {
  client_t *c = state;
  treadle_err_t err = 0;
  size_t n;
  switch (c->step) {
  case CONNECT: {
    treadle_stream_t *stream;
    if (treadle_tcp_connect_poll(&c->connect, cx, &stream, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0) {
      fprintf(stderr, "tls_client: connect: %s\n", treadle_strerror(err));
      break;
    }
    err = treadle_tls_client_new(c->config, stream, c->name, &c->tls);
    if (err != 0) {
      treadle_stream_free(stream);
      fprintf(stderr, "tls_client: %s\n", treadle_strerror(err));
      break;
    }
    c->step = HANDSHAKE;
  } /* fall through */
  case HANDSHAKE: {
    if (treadle_tls_handshake_poll(c->tls, cx, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    long verify = treadle_tls_verify_result(c->tls);
    if (err != 0) {
      fprintf(stderr, "tls_client: handshake: %s: %s\n", treadle_strerror(err),
              treadle_tls_error_message(c->tls));
      break;
    }
    char subject[256];
    const char *alpn = treadle_tls_alpn(c->tls);
    treadle_tls_peer_subject(c->tls, subject, sizeof subject);
    fprintf(stderr,
            "TLS 1.%d with %s, ALPN %s, certificate %s (verification %ld)\n",
            treadle_tls_version(c->tls) - 0x0301, subject,
            alpn ? alpn : "(none)", verify == 0 ? "trusted" : "NOT trusted",
            verify);
    c->len = (size_t)snprintf(c->line, sizeof c->line, "%s\n", c->text);
    if (c->len >= sizeof c->line)
      c->len = sizeof c->line - 1;
    c->step = SEND;
  } /* fall through */
  case SEND:
    if (treadle_tls_write_all_poll(c->tls, cx, c->line, c->len, &c->done,
                                   &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      break;
    c->step = RECEIVE;
    /* fall through */
  case RECEIVE: /* up to the newline */
    while (c->got == 0 || c->reply[c->got - 1] != '\n') {
      if (c->got == sizeof c->reply - 1)
        break;
      if (treadle_tls_read_poll(c->tls, cx, c->reply + c->got,
                                sizeof c->reply - 1 - c->got, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err != 0 || n == 0)
        break;
      c->got += n;
    }
    if (err != 0)
      break;
    printf("%.*s", (int)c->got, c->reply);
    if (c->got > 0 && c->reply[c->got - 1] != '\n')
      printf("\n");
    c->step = CLOSE;
    /* fall through */
  case CLOSE:
    if (treadle_tls_shutdown_poll(c->tls, cx, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      break;
    c->step = DRAIN;
    /* fall through */
  case DRAIN: /* to the server's close_notify */
    do {
      if (treadle_tls_read_poll(c->tls, cx, c->reply, sizeof c->reply, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
    } while (err == 0 && n > 0);
    break;
  }
  if (err != 0 && c->step >= SEND)
    fprintf(stderr, "tls_client: %s %s\n", treadle_strerror(err),
            treadle_tls_error_message(c->tls));
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void client_drop(void *state) {
  client_t *c = state;
  treadle_tcp_connect_drop(&c->connect);
  treadle_tls_free(c->tls);
}

static const treadle_task_vtable_t client_vt = {.poll = client_poll,
                                                .drop = client_drop};

static int usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [--ca FILE] [--name NAME] [--insecure] HOST PORT "
          "[TEXT]\n",
          argv0);
  return 2;
}

int main(int argc, char **argv) {
  const char *ca = NULL, *name = NULL;
  bool insecure = false;
  int i = 1;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
    if (strcmp(argv[i], "--insecure") == 0)
      insecure = true;
    else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc)
      ca = argv[++i];
    else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
      name = argv[++i];
    else
      return usage(argv[0]);
  }
  if (argc - i < 2 || argc - i > 3)
    return usage(argv[0]);
  client_t c = {.host = argv[i],
                .port = atoi(argv[i + 1]),
                .text = argc - i > 2 ? argv[i + 2] : "hello"};
  c.name = name != NULL ? name : c.host;

  treadle_err_t err = treadle_tls_config_new(TREADLE_TLS_CLIENT, &c.config);
  if (err != 0) {
    fprintf(stderr, "tls_client: %s\n", treadle_strerror(err));
    return 1;
  }
  const char *alpn[] = {"echo"};
  if ((ca != NULL && (err = treadle_tls_config_set_ca(c.config, ca, NULL))) ||
      (insecure && (err = treadle_tls_config_set_verify(c.config, false))) ||
      (err = treadle_tls_config_set_alpn(c.config, alpn, 1)) != 0) {
    fprintf(stderr, "tls_client: %s: %s\n", treadle_strerror(err),
            treadle_tls_config_error_message(c.config));
    treadle_tls_config_unref(c.config);
    return 1;
  }
  treadle_runtime_t *rt;
  if ((err = treadle_runtime_new_current_thread(&rt)) == 0) {
    err = treadle_tcp_connect_init(&c.connect, treadle_runtime_handle(rt),
                                   c.host, c.port);
    if (err == 0)
      err = treadle_runtime_block_on(rt, &client_vt, &c, sizeof c, NULL);
    else
      fprintf(stderr, "tls_client: %s\n", treadle_strerror(err));
    treadle_runtime_free(rt);
  }
  treadle_tls_config_unref(c.config);
  return err != 0;
}
