/* Unix domain sockets' front end (ARCHITECTURE.md "Sockets"; tokio
 * net/unix): listeners, streams, datagram sockets and pairs bound to paths
 * or abstract names, the peer's credentials and file descriptors passed
 * with SCM_RIGHTS. Reading, writing and accepting are stream.c's, sending
 * and receiving datagrams dgram.c's, the same code as for TCP and UDP.
 *
 * The rules for a path (treadle.h, "Unix"):
 * 1. bind over a path that a socket file holds connects to it once; only
 *    ECONNREFUSED (nobody serves it: stale) lets bind remove the file and
 *    bind again. A live socket, or a file that is not a socket, gives
 *    EADDRINUSE and is left alone.
 * 2. The socket records the file bind made (device and inode). Close
 *    removes the path before it closes the socket (once the socket is
 *    closed, another may bind the path, and that file must stay), only if
 *    the file is still that one, and never in a forked child. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "net.h"

/* -------------------------------------------------------------- paths */

void treadle__unix_path_remove(treadle__unix_path_t *p) {
  if (p == NULL)
    return;
  struct stat st;
  if (lstat(p->path, &st) == 0 && st.st_dev == p->dev && st.st_ino == p->ino)
    unlink(p->path);
  treadle__free(p);
}

void treadle__unix_path_release(_Atomic(treadle__unix_path_t *) *slot,
                                treadle_handle_t *h) {
  /* Acquire: the record was written before the socket was handed out;
   * the exchange makes exactly one closer its owner. */
  treadle__unix_path_t *p =
      atomic_exchange_explicit(slot, NULL, memory_order_acquire);
  if (p == NULL)
    return;
  if (treadle__forked(h))
    treadle__free(p); /* the parent's file: the parent removes it */
  else
    treadle__unix_path_remove(p);
}

/* Binds fd to addr; over a stale socket file, by rule 1. */
static treadle_err_t bind_over_stale(int fd, int type, const char *path,
                                     const struct sockaddr_storage *addr,
                                     socklen_t len) {
  const struct sockaddr *sa = (const struct sockaddr *)addr;
  if (bind(fd, sa, len) == 0)
    return 0;
  if (errno != EADDRINUSE || path[0] == '@')
    return -errno;
  struct stat st;
  if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
    return TREADLE_EADDRINUSE;
  int probe = treadle__socket(AF_UNIX, type);
  if (probe < 0)
    return probe;
  int r = connect(probe, sa, len);
  int e = errno;
  close(probe);
  if (r == 0 || e != ECONNREFUSED)
    return TREADLE_EADDRINUSE; /* served, full (EAGAIN), another type, ... */
  if (unlink(path) != 0 && errno != ENOENT)
    return -errno;
  return bind(fd, sa, len) == 0 ? 0 : -errno;
}

/* A socket of `type` bound to `path` (whose address is addr): the fd, and
 * in *rec the record of the file it made (NULL for an abstract name); or
 * -errno, having made nothing. */
static int bind_path(const char *path, const struct sockaddr_storage *addr,
                     int type, treadle__unix_path_t **rec) {
  *rec = NULL;
  int fd = treadle__socket(AF_UNIX, type);
  if (fd < 0)
    return fd;
  treadle_err_t err =
      bind_over_stale(fd, type, path, addr, treadle__addr_len(addr));
  if (err == 0 && path[0] != '@') {
    size_t n = strlen(path);
    struct stat st;
    treadle__unix_path_t *p = treadle__malloc(sizeof *p + n + 1);
    err = p == NULL ? TREADLE_ENOMEM : lstat(path, &st) != 0 ? -errno : 0;
    if (err == 0) {
      p->dev = st.st_dev;
      p->ino = st.st_ino;
      memcpy(p->path, path, n + 1);
      *rec = p;
    } else {
      treadle__free(p);
      unlink(path);
    }
  }
  if (err != 0) {
    close(fd);
    return err;
  }
  return fd;
}

/* The checks every maker does first, in this order: NULL handle or out
 * (*out cleared), a bad name, no I/O driver. */
static treadle_err_t check_new(treadle_handle_t *h, void *out, const char *path,
                               struct sockaddr_storage *addr) {
  if (h == NULL || out == NULL)
    return TREADLE_EINVAL;
  if (path != NULL || addr != NULL) {
    treadle_err_t err = treadle_sockaddr_unix(path, addr);
    if (err != 0)
      return err;
  }
  return h->driver.has_io ? 0 : TREADLE_ENOIO;
}

#define CLEAR(out)                                                             \
  do {                                                                         \
    if ((out) != NULL)                                                         \
      *(out) = NULL;                                                           \
  } while (0)

/* ------------------------------------------------------------ streams */

treadle_err_t treadle_unix_bind(treadle_handle_t *h, const char *path,
                                const treadle_unix_bind_opts_t *opts,
                                treadle_listener_t **out) {
  treadle_unix_bind_opts_t def = TREADLE_UNIX_BIND_OPTS_INIT;
  if (opts == NULL)
    opts = &def;
  CLEAR(out);
  struct sockaddr_storage addr;
  if (opts->backlog < 1 || opts->backlog > 65535)
    return TREADLE_EINVAL;
  treadle_err_t err = check_new(h, out, path, &addr);
  if (err != 0)
    return err;
  treadle__unix_path_t *rec;
  int fd = bind_path(path, &addr, SOCK_STREAM, &rec);
  if (fd < 0)
    return fd;
  return treadle__listener_new(h, fd, AF_UNIX, opts->backlog, rec, out);
}

treadle_err_t treadle_unix_connect(treadle_handle_t *h, const char *path,
                                   treadle_stream_t **out) {
  CLEAR(out);
  struct sockaddr_storage addr;
  treadle_err_t err = check_new(h, out, path, &addr);
  if (err != 0)
    return err;
  int fd = treadle__socket(AF_UNIX, SOCK_STREAM);
  if (fd < 0)
    return fd;
  /* A Unix connect is queued on the listener at once, or fails. */
  if (connect(fd, (struct sockaddr *)&addr, treadle__addr_len(&addr)) < 0) {
    err = -errno;
    close(fd);
    return err;
  }
  return treadle__stream_new(h, fd, AF_UNIX, out);
}

/* socketpair(2) of `type`, non-blocking and close-on-exec. */
static treadle_err_t make_pair(treadle_handle_t *h, void *a, void *b,
                               int type, int fds[2]) {
  treadle_err_t err = check_new(h, a, NULL, NULL);
  if (err == 0 && b == NULL)
    err = TREADLE_EINVAL;
  if (err == 0 &&
      socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
    err = -errno;
  return err;
}

treadle_err_t treadle_unix_stream_pair(treadle_handle_t *h,
                                       treadle_stream_t **a,
                                       treadle_stream_t **b) {
  CLEAR(a);
  CLEAR(b);
  int fds[2];
  treadle_err_t err = make_pair(h, a, b, SOCK_STREAM, fds);
  if (err != 0)
    return err;
  if ((err = treadle__stream_new(h, fds[0], AF_UNIX, a)) != 0) {
    close(fds[1]);
    return err;
  }
  if ((err = treadle__stream_new(h, fds[1], AF_UNIX, b)) != 0) {
    treadle_stream_free(*a);
    *a = NULL;
  }
  return err;
}

/* The Unix functions' check: an open Unix socket. */
#define WITH_UNIX(obj, expr)                                                   \
  do {                                                                         \
    if ((obj) != NULL && (obj)->family != AF_UNIX)                             \
      return TREADLE_ENOTSUP;                                                  \
    TREADLE__WITH_FD(obj, expr);                                               \
  } while (0)

static treadle_err_t peer_cred(int fd, treadle_unix_cred_t *cred) {
  struct ucred u;
  socklen_t len = sizeof u;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &u, &len) < 0)
    return -errno;
  cred->pid = u.pid;
  cred->uid = u.uid;
  cred->gid = u.gid;
  return 0;
}

treadle_err_t treadle_unix_peer_cred(treadle_stream_t *s,
                                     treadle_unix_cred_t *cred) {
  if (cred == NULL)
    return TREADLE_EINVAL;
  WITH_UNIX(s, peer_cred(s->src.fd, cred));
}

/* --------------------------------------------------------- descriptors */

/* Room for a control message of TREADLE_UNIX_MAX_FDS descriptors. */
typedef union {
  char buf[CMSG_SPACE(sizeof(int) * TREADLE_UNIX_MAX_FDS)];
  struct cmsghdr align;
} control_t;

/* A descriptor leaf's start: leaf_start, then TREADLE_ENOTSUP (and the
 * source left) for a stream that is not a Unix one. */
static bool fds_start(treadle_stream_t *s, treadle_cx_t *cx, bool bad,
                      treadle_poll_t *ret, treadle_err_t *err) {
  if (!treadle__leaf_start(s != NULL ? &s->src : NULL, cx, bad, 1, ret, err))
    return false;
  if (s->family == AF_UNIX)
    return true;
  treadle__source_leave(&s->src);
  *err = TREADLE_ENOTSUP;
  return false;
}

treadle_poll_t treadle_unix_send_fds_poll(treadle_stream_t *s,
                                          treadle_cx_t *cx, const void *buf,
                                          size_t len, const int *fds,
                                          size_t nfds, size_t *n,
                                          treadle_err_t *err) {
  if (n != NULL)
    *n = 0;
  treadle_poll_t ret;
  if (!fds_start(s, cx,
                 n == NULL || buf == NULL || len == 0 || fds == NULL ||
                     nfds == 0 || nfds > TREADLE_UNIX_MAX_FDS,
                 &ret, err))
    return ret;
  control_t control;
  struct iovec iov = {(void *)buf, len > TREADLE__MAX_IO ? TREADLE__MAX_IO : len};
  treadle__gather_t g = {.msg = {.msg_iov = &iov,
                                 .msg_iovlen = 1,
                                 .msg_control = control.buf,
                                 .msg_controllen =
                                     CMSG_SPACE(sizeof(int) * nfds)},
                         .total = iov.iov_len};
  memset(control.buf, 0, g.msg.msg_controllen); /* the padding too */
  struct cmsghdr *c = CMSG_FIRSTHDR(&g.msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  return treadle__leaf_transfer(&s->src, cx, TREADLE__IO_WRITE_INTEREST,
                                TREADLE__IO_WRITABLE, treadle__call_sendmsg,
                                &g, n, err);
}

/* A Unix stream's read stops after bytes that carried descriptors, with
 * more perhaps queued: only EAGAIN clears readiness (stream.c). */
static ssize_t call_recvmsg(int fd, void *state, bool *full) {
  *full = true;
  return recvmsg(fd, state, MSG_CMSG_CLOEXEC);
}

/* Takes the descriptors of msg's control messages into fds (room of
 * them): how many, or, when more came than fit (or the kernel cut them:
 * MSG_CTRUNC), -1 after closing every one. */
static long take_fds(struct msghdr *msg, int *fds, size_t room) {
  size_t got = 0;
  bool over = (msg->msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL;
       c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (got < room) {
        fds[got++] = fd;
      } else {
        close(fd);
        over = true;
      }
    }
  }
  if (!over)
    return (long)got;
  while (got > 0)
    close(fds[--got]);
  return -1;
}

treadle_poll_t treadle_unix_recv_fds_poll(treadle_stream_t *s,
                                          treadle_cx_t *cx, void *buf,
                                          size_t len, int *fds, size_t *nfds,
                                          size_t *n, treadle_err_t *err) {
  /* *nfds is the room until the leaf is READY: PENDING leaves it be. */
  size_t room = nfds != NULL ? *nfds : 0;
  if (n != NULL)
    *n = 0;
  treadle_poll_t ret;
  if (!fds_start(s, cx,
                 n == NULL || nfds == NULL || (buf == NULL && len > 0) ||
                     room > TREADLE_UNIX_MAX_FDS || (fds == NULL && room > 0),
                 &ret, err)) {
    if (ret == TREADLE_READY && nfds != NULL)
      *nfds = 0;
    return ret;
  }
  control_t control;
  struct iovec iov = {buf, len > TREADLE__MAX_IO ? TREADLE__MAX_IO : len};
  /* Exactly `room` descriptors fit: the kernel installs no more (CMSG_LEN,
   * not CMSG_SPACE, whose padding may hold one more). */
  struct msghdr msg = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = room > 0 ? control.buf : NULL,
                       .msg_controllen =
                           room > 0 ? CMSG_LEN(sizeof(int) * room) : 0};
  ret = treadle__leaf_transfer(&s->src, cx, TREADLE__IO_READ_INTEREST,
                               TREADLE__IO_READABLE, call_recvmsg, &msg, n,
                               err);
  if (ret == TREADLE_READY) {
    long got = *err == 0 ? take_fds(&msg, fds, room) : 0;
    if (got < 0)
      *err = TREADLE_EMSGSIZE; /* *n bytes were read all the same */
    *nfds = got > 0 ? (size_t)got : 0;
  }
  return ret;
}

/* ------------------------------------------------------------ datagrams */

treadle_err_t treadle_unix_dgram_bind(treadle_handle_t *h, const char *path,
                                      treadle_dgram_t **out) {
  CLEAR(out);
  struct sockaddr_storage addr;
  treadle_err_t err = check_new(h, out, path, &addr);
  if (err != 0)
    return err;
  treadle__unix_path_t *rec;
  int fd = bind_path(path, &addr, SOCK_DGRAM, &rec);
  if (fd < 0)
    return fd;
  return treadle__dgram_new(h, fd, AF_UNIX, rec, out);
}

treadle_err_t treadle_unix_dgram_unbound(treadle_handle_t *h,
                                         treadle_dgram_t **out) {
  CLEAR(out);
  treadle_err_t err = check_new(h, out, NULL, NULL);
  if (err != 0)
    return err;
  int fd = treadle__socket(AF_UNIX, SOCK_DGRAM);
  if (fd < 0)
    return fd;
  return treadle__dgram_new(h, fd, AF_UNIX, NULL, out);
}

static treadle_err_t connect_to(int fd, const struct sockaddr_storage *addr) {
  return connect(fd, (const struct sockaddr *)addr, treadle__addr_len(addr)) <
                 0
             ? -errno
             : 0;
}

treadle_err_t treadle_unix_dgram_connect(treadle_dgram_t *d,
                                         const char *path) {
  struct sockaddr_storage addr;
  treadle_err_t err = treadle_sockaddr_unix(path, &addr);
  if (err != 0)
    return err;
  WITH_UNIX(d, connect_to(d->src.fd, &addr));
}

treadle_err_t treadle_unix_dgram_pair(treadle_handle_t *h, treadle_dgram_t **a,
                                      treadle_dgram_t **b) {
  CLEAR(a);
  CLEAR(b);
  int fds[2];
  treadle_err_t err = make_pair(h, a, b, SOCK_DGRAM, fds);
  if (err != 0)
    return err;
  if ((err = treadle__dgram_new(h, fds[0], AF_UNIX, NULL, a)) != 0) {
    close(fds[1]);
    return err;
  }
  if ((err = treadle__dgram_new(h, fds[1], AF_UNIX, NULL, b)) != 0) {
    treadle_dgram_free(*a);
    *a = NULL;
  }
  return err;
}
