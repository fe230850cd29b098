/* TCP's front end (ARCHITECTURE.md "Sockets"; tokio net/tcp): binding a
 * listener, the connect future (names resolved on the blocking pool) and
 * TCP_NODELAY. What a stream or listener does once made is stream.c's,
 * shared with Unix streams. */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
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
  treadle_handle_t *h;         /* holds a reference; NULL once dropped */
  char *host;                  /* owned copy */
  int port;
  int phase;                   /* RESOLVE, NEXT, CONNECTING, DONE */
  treadle_join_t *resolver;    /* getaddrinfo job */
  struct addrinfo *ai_head;    /* owned result */
  struct addrinfo *ai;         /* next to try */
  treadle_tcp_stream_t *stream; /* being connected */
  treadle_err_t last_err;
  struct sockaddr_storage *numeric; /* when the host was an address */
} connect_t;

_Static_assert(sizeof(connect_t) <= sizeof(treadle_tcp_connect_t),
               "treadle_tcp_connect_t too small");

enum { RESOLVE, NEXT, CONNECTING, DONE };

typedef struct {
  char *host;
  int port;
} resolve_job_t;

static treadle_err_t resolve_run(void *state, void **value) {
  resolve_job_t *job = state;
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV};
  char port[8];
  snprintf(port, sizeof port, "%d", job->port);
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(job->host, port, &hints, &res);
  if (rc != 0) {
    if (rc == EAI_SYSTEM)
      return -errno;
    if (rc == EAI_MEMORY)
      return TREADLE_ENOMEM;
    return TREADLE_ENOHOST;
  }
  *value = res;
  return 0;
}

static void resolve_drop(void *state) {
  treadle__free(((resolve_job_t *)state)->host);
}

static void resolve_drop_output(void *value) { freeaddrinfo(value); }

static const treadle_blocking_vtable_t resolve_vt = {
    .run = resolve_run,
    .drop = resolve_drop,
    .drop_output = resolve_drop_output};

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
  struct sockaddr_storage addr;
  socklen_t len;
  if (strcmp(host, "localhost") != 0 && treadle__addr_parse(host, port, &addr, &len)) {
    c->numeric = treadle__malloc(sizeof addr);
    if (c->numeric == NULL)
      return TREADLE_ENOMEM;
    memcpy(c->numeric, &addr, sizeof addr);
    c->phase = NEXT;
  } else {
    c->host = treadle__strdup(host);
    if (c->host == NULL)
      return TREADLE_ENOMEM;
    c->phase = RESOLVE;
  }
  c->h = treadle_handle_ref(h);
  c->port = port;
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
      if (c->resolver == NULL) {
        resolve_job_t job = {.host = c->host, .port = c->port};
        *err = treadle_spawn_blocking(c->h, &resolve_vt, &job, sizeof job,
                                      &c->resolver);
        if (*err != 0) {
          c->phase = DONE;
          return TREADLE_READY;
        }
        c->host = NULL; /* the job owns it now */
      }
      void *res = NULL;
      treadle_err_t status;
      if (treadle_join_poll(c->resolver, cx, &status, &res) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      treadle_join_detach(c->resolver);
      c->resolver = NULL;
      if (status != 0) {
        *err = status;
        c->phase = DONE;
        return TREADLE_READY;
      }
      c->ai_head = c->ai = res;
      c->phase = NEXT;
      break;
    }
    case NEXT: {
      const struct sockaddr_storage *addr = NULL;
      struct sockaddr_storage tmp;
      if (c->numeric != NULL) {
        addr = c->numeric;
      } else {
        while (c->ai != NULL && c->ai->ai_family != AF_INET &&
               c->ai->ai_family != AF_INET6)
          c->ai = c->ai->ai_next;
        if (c->ai != NULL) {
          memset(&tmp, 0, sizeof tmp);
          memcpy(&tmp, c->ai->ai_addr, c->ai->ai_addrlen);
          addr = &tmp;
          c->ai = c->ai->ai_next;
        }
      }
      if (addr == NULL) {
        *err = c->last_err;
        c->phase = DONE;
        return TREADLE_READY;
      }
      treadle_err_t e = start_connect(c, addr);
      if (c->numeric != NULL) {
        treadle__free(c->numeric);
        c->numeric = NULL;
      }
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
  if (c->resolver != NULL) {
    treadle_join_abort(c->resolver);
    treadle_join_detach(c->resolver);
  }
  treadle__free(c->host);
  treadle__free(c->numeric);
  if (c->ai_head != NULL)
    freeaddrinfo(c->ai_head);
  treadle_tcp_stream_free(c->stream);
  treadle_handle_unref(c->h);
  memset(c, 0, sizeof *c);
}
