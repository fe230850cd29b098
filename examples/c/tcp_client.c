/* A TCP client and server in one program: the client side of the TCP API.
 *
 * The main task binds a listener on 127.0.0.1 (port 0: the system picks
 * one) and spawns a server task that accepts one connection and echoes it
 * upper-cased. The main task then looks "localhost" up (treadle_lookup_host:
 * getaddrinfo on the blocking pool) and prints what it found, connects by
 * that name (the connect future looks it up the same way and tries the
 * addresses in order), sends a request in two pieces with one writev,
 * shuts its write side down so that the server sees end of stream, reads
 * the reply to its own end of stream, and prints both ends' addresses. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <treadle.h>

typedef struct {
  treadle_tcp_listener_t *listener; /* owned: handed over by the client */
  treadle_tcp_stream_t *conn;
  char buf[256];
  size_t len, done;
  int step;
} server_t;

/* Accepts one connection, reads it to end of stream, writes it back
 * upper-cased, and closes. */
static treadle_poll_t server_poll(treadle_cx_t *cx, void *state) {
  server_t *s = state;
  treadle_err_t err = 0;
  size_t n;
  switch (s->step) {
  case 0:
    if (treadle_tcp_accept_poll(s->listener, cx, &s->conn, NULL, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      break;
    s->step = 1;
    /* fall through */
  case 1:
    while (s->len < sizeof s->buf) {
      if (treadle_tcp_read_poll(s->conn, cx, s->buf + s->len,
                                sizeof s->buf - s->len, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err != 0 || n == 0)
        break; /* n == 0: the client shut its side down */
      s->len += n;
    }
    for (size_t i = 0; i < s->len; i++)
      s->buf[i] = (char)toupper((unsigned char)s->buf[i]);
    s->step = 2;
    /* fall through */
  case 2:
    if (treadle_tcp_write_all_poll(s->conn, cx, s->buf, s->len, &s->done,
                                   &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    break;
  }
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void server_drop(void *state) {
  server_t *s = state;
  treadle_tcp_stream_free(s->conn); /* closes: the client reads EOF */
  treadle_tcp_listener_close(s->listener); /* idempotent; free closes too */
  treadle_tcp_listener_free(s->listener);
}

static const treadle_task_vtable_t server_vt = {.poll = server_poll,
                                                .drop = server_drop};

typedef struct {
  int step;
  treadle_join_t *server;
  int port;
  treadle_lookup_t lookup;
  treadle_tcp_connect_t connect;
  treadle_tcp_stream_t *conn;
  size_t sent;
  char reply[256];
  size_t got;
} client_t;

static treadle_poll_t client_poll(treadle_cx_t *cx, void *state) {
  client_t *c = state;
  treadle_handle_t *h = treadle_cx_handle(cx);
  treadle_err_t err = 0;
  struct sockaddr_storage addr;
  char text[64];
  size_t n;
  switch (c->step) {
  case 0: {
    server_t srv = {0};
    if ((err = treadle_tcp_bind(h, "127.0.0.1", 0, NULL, &srv.listener)) != 0)
      break;
    treadle_tcp_listener_addr(srv.listener, &addr);
    int port = treadle_sockaddr_format(&addr, text, sizeof text);
    printf("server listening on %s\n", text);
    /* The server task owns the listener from here on. */
    if ((err = treadle_spawn(h, &server_vt, &srv, sizeof srv, &c->server)) !=
        0) {
      treadle_tcp_listener_free(srv.listener);
      break;
    }
    c->port = port;
    if ((err = treadle_lookup_host_init(&c->lookup, h, "localhost", port)) != 0)
      break;
    c->step = 1;
  }
    /* fall through */
  case 1: {
    treadle_addrs_t *addrs;
    if (treadle_lookup_host_poll(&c->lookup, cx, &addrs, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      break;
    printf("localhost is");
    for (size_t i = 0; i < treadle_addrs_count(addrs); i++) {
      treadle_sockaddr_format(treadle_addrs_get(addrs, i), text, sizeof text);
      printf(" %s", text);
    }
    printf("\n");
    treadle_addrs_free(addrs);
    if ((err = treadle_tcp_connect_init(&c->connect, h, "localhost",
                                        c->port)) != 0)
      break;
    c->step = 2;
  }
    /* fall through */
  case 2:
    if (treadle_tcp_connect_poll(&c->connect, cx, &c->conn, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      break;
    treadle_tcp_set_nodelay(c->conn, true);
    treadle_tcp_local_addr(c->conn, &addr);
    treadle_sockaddr_format(&addr, text, sizeof text);
    printf("client connected from %s", text);
    treadle_tcp_peer_addr(c->conn, &addr);
    treadle_sockaddr_format(&addr, text, sizeof text);
    printf(" to %s\n", text);
    c->step = 3;
    /* fall through */
  case 3: {
    static const char part1[] = "hello, ", part2[] = "treadle";
    const size_t total = sizeof part1 - 1 + sizeof part2 - 1;
    while (c->sent < total) {
      /* One writev for both pieces; resume after a partial write. */
      struct iovec iov[2] = {{(void *)part1, sizeof part1 - 1},
                             {(void *)part2, sizeof part2 - 1}};
      int first = c->sent < iov[0].iov_len ? 0 : 1;
      size_t skip = first == 0 ? c->sent : c->sent - iov[0].iov_len;
      iov[first].iov_base = (char *)iov[first].iov_base + skip;
      iov[first].iov_len -= skip;
      if (treadle_tcp_writev_poll(c->conn, cx, iov + first, 2 - first, &n,
                                  &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err != 0)
        break;
      c->sent += n;
    }
    if (err != 0)
      break;
    printf("client sent \"%s%s\" and shut its write side\n", part1, part2);
    if ((err = treadle_tcp_shutdown(c->conn)) != 0)
      break;
    c->step = 4;
  }
    /* fall through */
  case 4:
    for (;;) {
      if (treadle_tcp_read_poll(c->conn, cx, c->reply + c->got,
                                sizeof c->reply - 1 - c->got, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err != 0 || n == 0)
        break;
      c->got += n;
    }
    if (err != 0)
      break;
    printf("client read \"%s\" and then end of stream\n", c->reply);
    c->step = 5;
    /* fall through */
  case 5: {
    treadle_err_t status;
    if (treadle_join_poll(c->server, cx, &status, NULL) == TREADLE_PENDING)
      return TREADLE_PENDING;
    err = status;
    break;
  }
  }
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void client_drop(void *state) {
  client_t *c = state;
  treadle_join_detach(c->server);
  treadle_lookup_host_drop(&c->lookup);
  treadle_tcp_connect_drop(&c->connect);
  treadle_tcp_stream_free(c->conn);
}

static const treadle_task_vtable_t client_vt = {.poll = client_poll,
                                                .drop = client_drop};

int main(void) {
  treadle_runtime_t *rt;
  treadle_err_t err = treadle_runtime_new_current_thread(&rt);
  if (err != 0) {
    fprintf(stderr, "runtime: %s\n", treadle_strerror(err));
    return 1;
  }
  client_t c = {0};
  err = treadle_runtime_block_on(rt, &client_vt, &c, sizeof c, NULL);
  if (err != 0)
    fprintf(stderr, "tcp_client: %s (%s)\n", treadle_strerror(err),
            treadle_err_name(err));
  treadle_runtime_free(rt);
  return err != 0;
}
