/* Streams and listeners, TCP and Unix alike (ARCHITECTURE.md "Sockets";
 * tokio net/tcp and net/unix, which share mio's code the same way). The
 * front ends (tcp.c, unix.c) make the socket; from then on one stream
 * reads, writes, shuts down and closes, and one listener accepts, whatever
 * the family.
 *
 * Sockets are non-blocking sources of the I/O driver; every leaf tries the
 * system call when the registration says ready, and on EAGAIN clears that
 * readiness and waits for the next edge. A short read or write also clears
 * it (the socket was drained or filled), which saves the system call that
 * would only say EAGAIN. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <unistd.h>

#include "net.h"

#define BACKOFF_MIN_NS TREADLE_NSEC_PER_MSEC
#define BACKOFF_MAX_NS (128 * TREADLE_NSEC_PER_MSEC)

/* ------------------------------------------------------------- streams */

treadle_err_t treadle__stream_new(treadle_handle_t *h, int fd, int family,
                                  treadle_stream_t **out) {
  treadle_stream_t *s = treadle__calloc(1, sizeof *s);
  treadle_err_t err =
      s == NULL ? TREADLE_ENOMEM : treadle__source_open(&s->src, h, fd);
  if (err != 0) {
    treadle__free(s);
    close(fd);
    return err;
  }
  s->family = family;
  s->read_full = family == AF_UNIX ? SIZE_MAX : 0;
  *out = s;
  return 0;
}

/* A read or write leaf's buffer, for its treadle__io_call_t. */
typedef struct {
  void *buf;
  size_t len;
  const treadle_stream_t *s;
} span_t;

/* A short read of a TCP stream emptied it. A Unix stream's read also
 * stops after bytes that carried file descriptors, with more queued, so
 * there only EAGAIN clears readiness (else those bytes would wait for an
 * edge that never comes): its read_full mask makes every read count as
 * full, at the cost of one OR on TCP's path. */
static ssize_t call_recv(int fd, void *state, bool *full) {
  span_t *sp = state;
  ssize_t r = recv(fd, sp->buf, sp->len, 0);
  *full = r == 0 || ((size_t)r | sp->s->read_full) >= sp->len;
  return r;
}

/* MSG_NOSIGNAL: a closed peer gives EPIPE, never SIGPIPE. */
static ssize_t call_send(int fd, void *state, bool *full) {
  span_t *sp = state;
  ssize_t r = send(fd, sp->buf, sp->len, MSG_NOSIGNAL);
  *full = (size_t)r == sp->len;
  return r;
}

ssize_t treadle__call_sendmsg(int fd, void *state, bool *full) {
  treadle__gather_t *g = state;
  ssize_t r = sendmsg(fd, &g->msg, MSG_NOSIGNAL);
  *full = (size_t)r == g->total;
  return r;
}

treadle_poll_t treadle_stream_read_poll(treadle_stream_t *s, treadle_cx_t *cx,
                                        void *buf, size_t len, size_t *n,
                                        treadle_err_t *err) {
  treadle_poll_t ret;
  *n = 0;
  if (!treadle__leaf_start(s ? &s->src : NULL, cx, buf == NULL && len > 0, len,
                           &ret, err))
    return ret;
  span_t sp = {buf, len > TREADLE__MAX_IO ? TREADLE__MAX_IO : len, s};
  return treadle__leaf_transfer(&s->src, cx, TREADLE__IO_READ_INTEREST,
                                TREADLE__IO_READABLE, call_recv, &sp, n, err);
}

treadle_poll_t treadle_stream_writev_poll(treadle_stream_t *s,
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
  treadle__gather_t g = {
      .msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt},
      .total = total};
  return treadle__leaf_transfer(&s->src, cx, TREADLE__IO_WRITE_INTEREST,
                                TREADLE__IO_WRITABLE, treadle__call_sendmsg, &g, n, err);
}

treadle_poll_t treadle_stream_write_poll(treadle_stream_t *s,
                                         treadle_cx_t *cx, const void *buf,
                                         size_t len, size_t *n,
                                         treadle_err_t *err) {
  treadle_poll_t ret;
  *n = 0;
  if (!treadle__leaf_start(s ? &s->src : NULL, cx, buf == NULL && len > 0, len,
                           &ret, err))
    return ret;
  span_t sp = {(void *)buf, len > TREADLE__MAX_IO ? TREADLE__MAX_IO : len, s};
  return treadle__leaf_transfer(&s->src, cx, TREADLE__IO_WRITE_INTEREST,
                                TREADLE__IO_WRITABLE, call_send, &sp, n, err);
}

treadle_poll_t treadle_stream_write_all_poll(treadle_stream_t *s,
                                             treadle_cx_t *cx, const void *buf,
                                             size_t len, size_t *done,
                                             treadle_err_t *err) {
  if (done == NULL || *done > len) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  while (*done < len) {
    size_t n;
    if (treadle_stream_write_poll(s, cx, (const char *)buf + *done,
                                  len - *done, &n, err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    *done += n;
  }
  *err = s == NULL ? TREADLE_EINVAL : 0;
  return TREADLE_READY;
}

treadle_err_t treadle_stream_shutdown(treadle_stream_t *s) {
  TREADLE__WITH_FD(s, shutdown(s->src.fd, SHUT_WR) < 0 ? -errno : 0);
}

treadle_err_t treadle_stream_local_addr(treadle_stream_t *s,
                                        struct sockaddr_storage *addr) {
  if (addr == NULL)
    return TREADLE_EINVAL;
  TREADLE__WITH_FD(s, treadle__sock_name(s->src.fd, addr, false));
}

treadle_err_t treadle_stream_peer_addr(treadle_stream_t *s,
                                       struct sockaddr_storage *addr) {
  if (addr == NULL)
    return TREADLE_EINVAL;
  TREADLE__WITH_FD(s, treadle__sock_name(s->src.fd, addr, true));
}

void treadle_stream_close(treadle_stream_t *s) {
  if (s != NULL)
    treadle__source_close(&s->src);
}

void treadle_stream_free(treadle_stream_t *s) {
  if (s == NULL)
    return;
  treadle__source_free(&s->src);
  treadle__free(s);
}

/* ----------------------------------------------------------- listeners */

treadle_err_t treadle__listener_new(treadle_handle_t *h, int fd, int family,
                                    int backlog, treadle__unix_path_t *path,
                                    treadle_listener_t **out) {
  treadle_err_t err = listen(fd, backlog) < 0 ? -errno : 0;
  treadle_listener_t *l = NULL;
  if (err == 0) {
    l = treadle__calloc(1, sizeof *l);
    err = l == NULL ? TREADLE_ENOMEM : treadle__source_open(&l->src, h, fd);
  }
  if (err != 0) {
    treadle__free(l);
    close(fd);
    treadle__unix_path_remove(path);
    return err;
  }
  l->family = family;
  atomic_init(&l->exhaustions, 0);
  atomic_init(&l->path, path);
  *out = l;
  return 0;
}

treadle_err_t treadle_listener_addr(treadle_listener_t *l,
                                    struct sockaddr_storage *addr) {
  if (addr == NULL)
    return TREADLE_EINVAL;
  TREADLE__WITH_FD(l, treadle__sock_name(l->src.fd, addr, false));
}

uint64_t treadle_listener_fd_exhaustions(treadle_listener_t *l) {
  /* Relaxed: a statistic. */
  return l != NULL ? atomic_load_explicit(&l->exhaustions,
                                          memory_order_relaxed)
                   : 0;
}

/* Out of fds: wait on the backoff timer (longer each time) instead of
 * failing or spinning; the backlog keeps the connections meanwhile. False
 * when there is no timer to wait on. */
static bool start_backoff(treadle_listener_t *l) {
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

treadle_poll_t treadle_listener_accept_poll(treadle_listener_t *l,
                                            treadle_cx_t *cx,
                                            treadle_stream_t **out,
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
      *err = treadle__stream_new(l->src.h, (int)r, l->family, out);
      if (*err == 0 && peer != NULL) {
        treadle__addr_tidy(&a.addr, a.len, l->family);
        memcpy(peer, &a.addr, sizeof a.addr);
      }
    }
    break;
  }
  treadle__source_leave(&l->src);
  return TREADLE_READY;
}

void treadle_listener_close(treadle_listener_t *l) {
  if (l == NULL)
    return;
  /* The path goes first: once the fd is closed, another listener may bind
   * it, and its file must stay. */
  treadle__unix_path_release(&l->path, l->src.h);
  treadle__source_close(&l->src);
}

void treadle_listener_free(treadle_listener_t *l) {
  if (l == NULL)
    return;
  treadle_listener_close(l);
  treadle_sleep_drop(&l->backoff);
  treadle__source_free(&l->src);
  treadle__free(l);
}
