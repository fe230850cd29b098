/* TCP: listeners, streams and the connect future (ARCHITECTURE.md "Leaf
 * futures"; tokio net/tcp). Sockets are non-blocking sources of the I/O
 * driver; every leaf tries the system call when the registration says
 * ready, and on EAGAIN clears that readiness and waits for the next edge.
 * A short read or write also clears it (the socket was drained or filled),
 * which saves the system call that would only say EAGAIN. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <unistd.h>

#include "io.h"

struct treadle_tcp_stream_s {
  treadle__source_t src;
};

struct treadle_tcp_listener_s {
  treadle__source_t src;
  treadle_sleep_t backoff;   /* pause after EMFILE / ENFILE */
  uint64_t backoff_ns;       /* 0: not backing off */
  _Atomic uint64_t exhaustions;
};

#define BACKOFF_MIN_NS TREADLE_NSEC_PER_MSEC
#define BACKOFF_MAX_NS (128 * TREADLE_NSEC_PER_MSEC)

/* ------------------------------------------------------------ addresses */

/* Parses a numeric host (or "localhost", or NULL/"" for any IPv4 address)
 * into *addr; false if it is not one. */
static bool parse_host(const char *host, int port,
                       struct sockaddr_storage *addr, socklen_t *len) {
  memset(addr, 0, sizeof *addr);
  struct sockaddr_in *v4 = (struct sockaddr_in *)addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)addr;
  if (host == NULL || host[0] == '\0' || strcmp(host, "localhost") == 0) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    v4->sin_addr.s_addr =
        htonl(host != NULL && host[0] != '\0' ? INADDR_LOOPBACK : INADDR_ANY);
    *len = sizeof *v4;
    return true;
  }
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    *len = sizeof *v4;
    return true;
  }
  /* Brackets are allowed around an IPv6 literal ("[::1]"). */
  char buf[INET6_ADDRSTRLEN + 2];
  size_t n = strlen(host);
  if (n >= 2 && n < sizeof buf && host[0] == '[' && host[n - 1] == ']') {
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = '\0';
    host = buf;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    *len = sizeof *v6;
    return true;
  }
  return false;
}

static socklen_t addr_len(const struct sockaddr_storage *a) {
  return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                  : sizeof(struct sockaddr_in);
}

_Static_assert(TREADLE_HOST_LEN >= INET6_ADDRSTRLEN, "TREADLE_HOST_LEN");

int treadle_sockaddr_host(const struct sockaddr_storage *addr,
                          char host[TREADLE_HOST_LEN]) {
  if (host == NULL)
    return TREADLE_EINVAL;
  host[0] = '\0';
  if (addr == NULL)
    return TREADLE_EINVAL;
  if (addr->ss_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
    inet_ntop(AF_INET, &v4->sin_addr, host, TREADLE_HOST_LEN);
    return ntohs(v4->sin_port);
  }
  if (addr->ss_family == AF_INET6) {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
    inet_ntop(AF_INET6, &v6->sin6_addr, host, TREADLE_HOST_LEN);
    return ntohs(v6->sin6_port);
  }
  return TREADLE_EINVAL;
}

int treadle_sockaddr_format(const struct sockaddr_storage *addr, char *buf,
                            size_t len) {
  if (addr == NULL || buf == NULL || len == 0)
    return TREADLE_EINVAL;
  char host[TREADLE_HOST_LEN];
  int port = treadle_sockaddr_host(addr, host);
  if (port < 0)
    buf[0] = '\0';
  else
    snprintf(buf, len, addr->ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host,
             port);
  return port;
}

static treadle_err_t sock_name(int fd, struct sockaddr_storage *addr,
                               bool peer) {
  socklen_t len = sizeof *addr;
  int r = peer ? getpeername(fd, (struct sockaddr *)addr, &len)
               : getsockname(fd, (struct sockaddr *)addr, &len);
  return r < 0 ? -errno : 0;
}

/* ------------------------------------------------------------- helpers */

static treadle_err_t set_int_opt(int fd, int level, int opt, int value) {
  return setsockopt(fd, level, opt, &value, sizeof value) < 0 ? -errno : 0;
}

static treadle_err_t get_bool_opt(int fd, int level, int opt, bool *on) {
  int value = 0;
  socklen_t len = sizeof value;
  if (getsockopt(fd, level, opt, &value, &len) < 0)
    return -errno;
  *on = value != 0;
  return 0;
}

/* ------------------------------------------------------------- streams */

static treadle_err_t stream_new(treadle_handle_t *h, int fd,
                                treadle_tcp_stream_t **out) {
  treadle_tcp_stream_t *s = treadle__calloc(1, sizeof *s);
  if (s == NULL)
    return TREADLE_ENOMEM;
  treadle_err_t err = treadle__source_open(&s->src, h, fd);
  if (err != 0) {
    treadle__free(s);
    return err;
  }
  *out = s;
  return 0;
}

/* A read or write leaf's buffer, for its treadle__io_call_t. */
typedef struct {
  void *buf;
  size_t len;
} span_t;

static ssize_t call_recv(int fd, void *state, bool *full) {
  span_t *sp = state;
  ssize_t r = recv(fd, sp->buf, sp->len, 0);
  *full = r == 0 || (size_t)r == sp->len;
  return r;
}

/* MSG_NOSIGNAL: a closed peer gives EPIPE, never SIGPIPE. */
static ssize_t call_send(int fd, void *state, bool *full) {
  span_t *sp = state;
  ssize_t r = send(fd, sp->buf, sp->len, MSG_NOSIGNAL);
  *full = (size_t)r == sp->len;
  return r;
}

typedef struct {
  struct msghdr msg;
  size_t total;
} gather_t;

static ssize_t call_sendmsg(int fd, void *state, bool *full) {
  gather_t *g = state;
  ssize_t r = sendmsg(fd, &g->msg, MSG_NOSIGNAL);
  *full = (size_t)r == g->total;
  return r;
}

treadle_poll_t treadle_tcp_read_poll(treadle_tcp_stream_t *s, treadle_cx_t *cx,
                                     void *buf, size_t len, size_t *n,
                                     treadle_err_t *err) {
  treadle_poll_t ret;
  *n = 0;
  if (!treadle__leaf_start(s ? &s->src : NULL, cx, buf == NULL && len > 0, len,
                           &ret, err))
    return ret;
  span_t sp = {buf, len > TREADLE__MAX_IO ? TREADLE__MAX_IO : len};
  return treadle__leaf_transfer(&s->src, cx, TREADLE__IO_READ_INTEREST,
                                TREADLE__IO_READABLE, call_recv, &sp, n, err);
}

treadle_poll_t treadle_tcp_writev_poll(treadle_tcp_stream_t *s,
                                       treadle_cx_t *cx,
                                       const struct iovec *iov, int iovcnt,
                                       size_t *n, treadle_err_t *err) {
  *n = 0;
  bool bad = iovcnt < 0 || iovcnt > IOV_MAX || (iov == NULL && iovcnt > 0);
  size_t total = 0;
  for (int i = 0; !bad && i < iovcnt; i++) {
    /* more than one call moves */
    bad = iov[i].iov_len > TREADLE__MAX_IO - total;
    total += iov[i].iov_len;
  }
  treadle_poll_t ret;
  if (!treadle__leaf_start(s ? &s->src : NULL, cx, bad, total, &ret,
                           err))
    return ret;
  gather_t g = {
      .msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt},
      .total = total};
  return treadle__leaf_transfer(&s->src, cx, TREADLE__IO_WRITE_INTEREST,
                                TREADLE__IO_WRITABLE, call_sendmsg, &g, n, err);
}

treadle_poll_t treadle_tcp_write_poll(treadle_tcp_stream_t *s,
                                      treadle_cx_t *cx, const void *buf,
                                      size_t len, size_t *n,
                                      treadle_err_t *err) {
  treadle_poll_t ret;
  *n = 0;
  if (!treadle__leaf_start(s ? &s->src : NULL, cx, buf == NULL && len > 0, len,
                           &ret, err))
    return ret;
  span_t sp = {(void *)buf, len > TREADLE__MAX_IO ? TREADLE__MAX_IO : len};
  return treadle__leaf_transfer(&s->src, cx, TREADLE__IO_WRITE_INTEREST,
                                TREADLE__IO_WRITABLE, call_send, &sp, n, err);
}

treadle_poll_t treadle_tcp_write_all_poll(treadle_tcp_stream_t *s,
                                          treadle_cx_t *cx, const void *buf,
                                          size_t len, size_t *done,
                                          treadle_err_t *err) {
  if (done == NULL || *done > len) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  while (*done < len) {
    size_t n;
    if (treadle_tcp_write_poll(s, cx, (const char *)buf + *done, len - *done,
                               &n, err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    *done += n;
  }
  *err = s == NULL ? TREADLE_EINVAL : 0;
  return TREADLE_READY;
}

/* Runs `fn` on the stream's fd unless it is closed. */
#define WITH_FD(s, expr)                                                       \
  do {                                                                         \
    if ((s) == NULL)                                                           \
      return TREADLE_EINVAL;                                                   \
    if (!treadle__source_enter(&(s)->src))                                     \
      return TREADLE_ECLOSED;                                                  \
    treadle_err_t e_ = (expr);                                                 \
    treadle__source_leave(&(s)->src);                                          \
    return e_;                                                                 \
  } while (0)

treadle_err_t treadle_tcp_shutdown(treadle_tcp_stream_t *s) {
  WITH_FD(s, shutdown(s->src.fd, SHUT_WR) < 0 ? -errno : 0);
}

treadle_err_t treadle_tcp_set_nodelay(treadle_tcp_stream_t *s, bool on) {
  WITH_FD(s, set_int_opt(s->src.fd, IPPROTO_TCP, TCP_NODELAY, on));
}

treadle_err_t treadle_tcp_nodelay(treadle_tcp_stream_t *s, bool *on) {
  if (on == NULL)
    return TREADLE_EINVAL;
  WITH_FD(s, get_bool_opt(s->src.fd, IPPROTO_TCP, TCP_NODELAY, on));
}

treadle_err_t treadle_tcp_local_addr(treadle_tcp_stream_t *s,
                                     struct sockaddr_storage *addr) {
  if (addr == NULL)
    return TREADLE_EINVAL;
  WITH_FD(s, sock_name(s->src.fd, addr, false));
}

treadle_err_t treadle_tcp_peer_addr(treadle_tcp_stream_t *s,
                                    struct sockaddr_storage *addr) {
  if (addr == NULL)
    return TREADLE_EINVAL;
  WITH_FD(s, sock_name(s->src.fd, addr, true));
}

void treadle_tcp_stream_close(treadle_tcp_stream_t *s) {
  if (s != NULL)
    treadle__source_close(&s->src);
}

void treadle_tcp_stream_free(treadle_tcp_stream_t *s) {
  if (s == NULL)
    return;
  treadle__source_free(&s->src);
  treadle__free(s);
}

/* ----------------------------------------------------------- listeners */

treadle_err_t treadle_tcp_bind(treadle_handle_t *h, const char *host,
                               int port, const treadle_tcp_bind_opts_t *opts,
                               treadle_tcp_listener_t **out) {
  treadle_tcp_bind_opts_t def = TREADLE_TCP_BIND_OPTS_INIT;
  if (opts == NULL)
    opts = &def;
  if (out != NULL)
    *out = NULL;
  struct sockaddr_storage addr;
  socklen_t len;
  if (h == NULL || out == NULL || port < 0 || port > 65535 ||
      opts->backlog < 1 || opts->backlog > 65535 ||
      !parse_host(host, port, &addr, &len))
    return TREADLE_EINVAL;
  if (!h->driver.has_io)
    return TREADLE_ENOIO;
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  0);
  if (fd < 0)
    return -errno;
  treadle_err_t err = set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  if (err == 0 && opts->reuse_port)
    err = set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
  if (err == 0 && addr.ss_family == AF_INET6)
    err = set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
  if (err == 0 && bind(fd, (struct sockaddr *)&addr, len) < 0)
    err = -errno;
  if (err == 0 && listen(fd, opts->backlog) < 0)
    err = -errno;
  treadle_tcp_listener_t *l = NULL;
  if (err == 0) {
    l = treadle__calloc(1, sizeof *l);
    if (l == NULL)
      err = TREADLE_ENOMEM;
    else
      err = treadle__source_open(&l->src, h, fd);
  }
  if (err != 0) {
    treadle__free(l);
    close(fd);
    return err;
  }
  atomic_init(&l->exhaustions, 0);
  *out = l;
  return 0;
}

treadle_err_t treadle_tcp_listener_addr(treadle_tcp_listener_t *l,
                                        struct sockaddr_storage *addr) {
  if (addr == NULL)
    return TREADLE_EINVAL;
  WITH_FD(l, sock_name(l->src.fd, addr, false));
}

uint64_t treadle_tcp_listener_fd_exhaustions(treadle_tcp_listener_t *l) {
  /* Relaxed: a statistic. */
  return l != NULL ? atomic_load_explicit(&l->exhaustions,
                                          memory_order_relaxed)
                   : 0;
}

/* Out of fds: wait on the backoff timer (longer each time) instead of
 * failing or spinning; the backlog keeps the connections meanwhile. False
 * when there is no timer to wait on. */
static bool start_backoff(treadle_tcp_listener_t *l) {
  if (!l->src.h->driver.has_time)
    return false;
  /* Relaxed: a statistic. */
  atomic_fetch_add_explicit(&l->exhaustions, 1, memory_order_relaxed);
  l->backoff_ns = l->backoff_ns == 0 ? BACKOFF_MIN_NS : l->backoff_ns * 2;
  if (l->backoff_ns > BACKOFF_MAX_NS)
    l->backoff_ns = BACKOFF_MAX_NS;
  treadle_sleep_drop(&l->backoff);
  treadle_sleep_init(&l->backoff, l->backoff_ns);
  return true;
}

/* The peer's address, for call_accept. */
typedef struct {
  struct sockaddr_storage addr;
  socklen_t len;
} accepted_t;

/* Readiness stays after a success: more connections may be queued. */
static ssize_t call_accept(int fd, void *state, bool *full) {
  accepted_t *a = state;
  *full = true;
  return accept4(fd, (struct sockaddr *)&a->addr, &a->len,
                 SOCK_NONBLOCK | SOCK_CLOEXEC);
}

treadle_poll_t treadle_tcp_accept_poll(treadle_tcp_listener_t *l,
                                       treadle_cx_t *cx,
                                       treadle_tcp_stream_t **out,
                                       struct sockaddr_storage *peer,
                                       treadle_err_t *err) {
  if (out != NULL)
    *out = NULL;
  treadle_poll_t ret;
  if (!treadle__leaf_start(l != NULL ? &l->src : NULL, cx, out == NULL, 1,
                           &ret, err))
    return ret;
  for (;;) {
    if (l->backoff_ns != 0) {
      treadle_err_t serr;
      if (treadle_sleep_poll(&l->backoff, cx, &serr) == TREADLE_PENDING) {
        treadle__source_leave(&l->src);
        return TREADLE_PENDING;
      }
    }
    accepted_t a;
    a.len = sizeof a.addr;
    ssize_t r = -1;
    if (treadle__io_loop(&l->src, cx, TREADLE__IO_READ_INTEREST,
                         TREADLE__IO_READABLE, call_accept, &a, &r,
                         err) == TREADLE_PENDING) {
      treadle__source_leave(&l->src);
      return TREADLE_PENDING;
    }
    if (*err == TREADLE_EMFILE || *err == TREADLE_ENFILE ||
        *err == -ENOBUFS || *err == -ENOMEM) {
      if (start_backoff(l))
        continue;
    } else if (*err == TREADLE_ECONNABORTED) {
      continue; /* the peer gave up while queued: take the next one */
    }
    if (*err == 0) {
      l->backoff_ns = 0;
      *err = stream_new(l->src.h, (int)r, out);
      if (*err != 0)
        close((int)r);
      else if (peer != NULL)
        memcpy(peer, &a.addr, sizeof a.addr);
    }
    break;
  }
  treadle__source_leave(&l->src);
  return TREADLE_READY;
}

void treadle_tcp_listener_close(treadle_tcp_listener_t *l) {
  if (l != NULL)
    treadle__source_close(&l->src);
}

void treadle_tcp_listener_free(treadle_tcp_listener_t *l) {
  if (l == NULL)
    return;
  treadle_sleep_drop(&l->backoff);
  treadle__source_free(&l->src);
  treadle__free(l);
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
  if (strcmp(host, "localhost") != 0 && parse_host(host, port, &addr, &len)) {
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
  int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  0);
  if (fd < 0)
    return -errno;
  /* Registered after connect(): an unconnected socket polls as hung up.
   * EINTR leaves the connect going on, as EINPROGRESS does. */
  treadle_err_t err = 0;
  if (connect(fd, (const struct sockaddr *)addr, addr_len(addr)) < 0 &&
      errno != EINPROGRESS && errno != EINTR)
    err = -errno;
  if (err == 0)
    err = stream_new(c->h, fd, &c->stream);
  if (err != 0)
    close(fd);
  return err;
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
