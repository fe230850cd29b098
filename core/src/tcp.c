/* TCP's front end (ARCHITECTURE.md "Sockets"; tokio net/tcp): binding a
 * listener, the connect future (names resolved by dns.c's lookup) and
 * TCP_NODELAY. What a stream or listener does once made is stream.c's,
 * shared with Unix streams. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <unistd.h>

#include "net.h"

/* ----------------------------------------------------------- listeners */

treadle_err_t treadle_tcp_bind(treadle_handle_t *h, const char *host,
                               int port, const treadle_tcp_bind_opts_t *opts,
                               treadle_tcp_listener_t **out) {
  treadle_tcp_bind_opts_t def = TREADLE_TCP_BIND_OPTS_INIT;
  if (opts == NULL)
    opts = &def;
  if (out != NULL)
    *out = NULL;
  if (out == NULL || opts->backlog < 1 || opts->backlog > 65535)
    return TREADLE_EINVAL;
  int family;
  int fd = treadle__inet_bind(h, host, port, SOCK_STREAM, true,
                              opts->reuse_port, &family);
  if (fd < 0)
    return fd;
  return treadle__listener_new(h, fd, family, opts->backlog, NULL, out);
}

/* ------------------------------------------------------------- options */

treadle_err_t treadle_tcp_set_nodelay(treadle_tcp_stream_t *s, bool on) {
  TREADLE__WITH_FD(s, treadle__set_int_opt(s->src.fd, IPPROTO_TCP, TCP_NODELAY,
                                           on));
}

treadle_err_t treadle_tcp_nodelay(treadle_tcp_stream_t *s, bool *on) {
  if (on == NULL)
    return TREADLE_EINVAL;
  TREADLE__WITH_FD(s, treadle__get_bool_opt(s->src.fd, IPPROTO_TCP,
                                            TCP_NODELAY, on));
}


/* ------------------------------------------------------------- connect */

/* treadle_tcp_connect_t's private layout. */
typedef struct __attribute__((__may_alias__)) connect_s {
  treadle_handle_t *h;          /* holds a reference; NULL once dropped */
  int phase;                    /* RESOLVE, NEXT, CONNECTING, DONE */
  treadle_err_t last_err;
  treadle_lookup_t lookup;      /* RESOLVE: the host's addresses (dns.c) */
  treadle_addrs_t *addrs;       /* owned result */
  size_t next;                  /* the address to try next */
  treadle_tcp_stream_t *stream; /* being connected */
} connect_t;

_Static_assert(sizeof(connect_t) <= sizeof(treadle_tcp_connect_t),
               "treadle_tcp_connect_t too small");

enum { RESOLVE, NEXT, CONNECTING, DONE };

treadle_err_t treadle_tcp_connect_init(treadle_tcp_connect_t *fut,
                                       treadle_handle_t *h, const char *host,
                                       int port) {
  connect_t *c = (connect_t *)fut;
  if (c == NULL)
    return TREADLE_EINVAL;
  memset(c, 0, sizeof *c);
  if (h == NULL || host == NULL || host[0] == '\0' || port < 1 ||
      port > 65535)
    return TREADLE_EINVAL;
  if (!h->driver.has_io)
    return TREADLE_ENOIO;
  treadle_err_t err = treadle_lookup_host_init(&c->lookup, h, host, port);
  if (err != 0)
    return err;
  c->h = treadle_handle_ref(h);
  c->phase = RESOLVE;
  c->last_err = TREADLE_ENOHOST;
  return 0;
}

/* Starts a non-blocking connect to `addr`: 0 with c->stream set (now
 * connecting or connected), or an error for this address. */
static treadle_err_t start_connect(connect_t *c,
                                   const struct sockaddr_storage *addr) {
  int fd = treadle__socket(addr->ss_family, SOCK_STREAM);
  if (fd < 0)
    return fd;
  /* Registered after connect(): an unconnected socket polls as hung up.
   * EINTR leaves the connect going on, as EINPROGRESS does. */
  treadle_err_t err = 0;
  if (connect(fd, (const struct sockaddr *)addr, treadle__addr_len(addr)) < 0 &&
      errno != EINPROGRESS && errno != EINTR)
    err = -errno;
  if (err != 0) {
    close(fd);
    return err;
  }
  return treadle__stream_new(c->h, fd, addr->ss_family, &c->stream);
}

/* Polls the connect in flight: READY with *err = 0 once connected. */
static treadle_poll_t poll_connecting(connect_t *c, treadle_cx_t *cx,
                                      treadle_err_t *err) {
  treadle__source_t *src = &c->stream->src;
  if (!treadle__source_enter(src)) {
    *err = TREADLE_ECLOSED;
    return TREADLE_READY;
  }
  uint32_t tick;
  if (treadle__source_poll_ready(src, cx, TREADLE__IO_WRITE_INTEREST, &tick,
                                 err) == TREADLE_PENDING) {
    treadle__source_leave(src);
    return TREADLE_PENDING;
  }
  if (*err == 0) {
    int so_err = 0;
    socklen_t len = sizeof so_err;
    if (getsockopt(src->fd, SOL_SOCKET, SO_ERROR, &so_err, &len) < 0)
      so_err = errno;
    *err = -so_err;
  }
  treadle__source_leave(src);
  return TREADLE_READY;
}

treadle_poll_t treadle_tcp_connect_poll(treadle_tcp_connect_t *fut,
                                        treadle_cx_t *cx,
                                        treadle_tcp_stream_t **out,
                                        treadle_err_t *err) {
  connect_t *c = (connect_t *)fut;
  if (out != NULL)
    *out = NULL;
  if (c == NULL || out == NULL || c->h == NULL || c->phase == DONE) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  if (cx->task->sched->handle != c->h) {
    *err = TREADLE_EFOREIGN; /* leaf_start's rule */
    return TREADLE_READY;
  }
  TREADLE__LEAF_BUDGET(cx);
  for (;;) {
    switch (c->phase) {
    case RESOLVE: {
      treadle_err_t e;
      if (treadle_lookup_host_poll(&c->lookup, cx, &c->addrs, &e) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      treadle_lookup_host_drop(&c->lookup);
      if (e != 0) {
        *err = e;
        c->phase = DONE;
        return TREADLE_READY;
      }
      c->phase = NEXT;
      break;
    }
    case NEXT: {
      const struct sockaddr_storage *addr = treadle_addrs_get(c->addrs, c->next);
      if (addr == NULL) {
        *err = c->last_err;
        c->phase = DONE;
        return TREADLE_READY;
      }
      c->next++;
      treadle_err_t e = start_connect(c, addr);
      if (e != 0) {
        c->last_err = e;
        if (e == TREADLE_ENOIO || e == TREADLE_ESHUTDOWN ||
            e == TREADLE_ENOMEM) {
          *err = e;
          c->phase = DONE;
          return TREADLE_READY;
        }
        break; /* next address */
      }
      c->phase = CONNECTING;
      break;
    }
    case CONNECTING: {
      treadle_err_t e;
      if (poll_connecting(c, cx, &e) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (e == 0) {
        *out = c->stream;
        c->stream = NULL;
        *err = 0;
        c->phase = DONE;
        return TREADLE_READY;
      }
      treadle_tcp_stream_free(c->stream);
      c->stream = NULL;
      c->last_err = e;
      if (e == TREADLE_ESHUTDOWN) {
        *err = e;
        c->phase = DONE;
        return TREADLE_READY;
      }
      c->phase = NEXT;
      break;
    }
    default:
      TREADLE_UNREACHABLE();
    }
  }
}

void treadle_tcp_connect_drop(treadle_tcp_connect_t *fut) {
  connect_t *c = (connect_t *)fut;
  if (c == NULL || c->h == NULL)
    return;
  treadle_lookup_host_drop(&c->lookup);
  treadle_addrs_free(c->addrs);
  treadle_tcp_stream_free(c->stream);
  treadle_handle_unref(c->h);
  memset(c, 0, sizeof *c);
}
