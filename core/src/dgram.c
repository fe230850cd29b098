/* Datagram sockets, UDP and Unix alike (ARCHITECTURE.md "Sockets"; tokio
 * net/udp and net/unix/datagram). The front ends (udp.c, unix.c) make the
 * socket; from then on these leaves send and receive for every family.
 *
 * 1. One leaf, one system call: send, sendto, recv, recvfrom, or for a
 *    batch sendmmsg or recvmmsg. Nothing is allocated.
 * 2. Readiness stays after a success (more datagrams may be queued, more
 *    room may be left) and is cleared on EAGAIN, or when a batch receive
 *    came back short: recvmmsg stops at the first EAGAIN (an error that
 *    stops it instead came with an edge of its own, which wakes the
 *    reader again), so the call that would only say EAGAIN is saved. A
 *    short sendmmsg may be one datagram's own error with room left, so a
 *    send keeps readiness after any success. The clear takes the
 *    error and hang-up bits with it: a datagram socket has no end of
 *    stream, and an error (an ICMP "port unreachable" on a connected UDP
 *    socket, which epoll reports as EPOLLERR and which wakes a waiting
 *    reader) is read, and consumed, by the system call that follows. Left
 *    set, such a bit would make every later wait ready at once: a spin.
 * 3. Receives pass MSG_TRUNC, so the kernel returns a datagram's full
 *    length even when the buffer was shorter: that is how a cut datagram
 *    is reported (TREADLE_EMSGSIZE, or the batch's `truncated`). */
#define _GNU_SOURCE
#include <errno.h>
#include <unistd.h>

#include "net.h"

#define RECV_CLEAR                                                             \
  (TREADLE__IO_READABLE | TREADLE__IO_READ_CLOSED | TREADLE__IO_ERROR)
#define SEND_CLEAR                                                             \
  (TREADLE__IO_WRITABLE | TREADLE__IO_WRITE_CLOSED | TREADLE__IO_ERROR)

treadle_err_t treadle__dgram_new(treadle_handle_t *h, int fd, int family,
                                 treadle__unix_path_t *path,
                                 treadle_dgram_t **out) {
  treadle_dgram_t *d = treadle__calloc(1, sizeof *d);
  treadle_err_t err =
      d == NULL ? TREADLE_ENOMEM : treadle__source_open(&d->src, h, fd);
  if (err != 0) {
    treadle__free(d);
    close(fd);
    treadle__unix_path_remove(path);
    return err;
  }
  d->family = family;
  atomic_init(&d->path, path);
  *out = d;
  return 0;
}

/* ------------------------------------------------------------ one at once */

/* One datagram's buffer and address, for call_sendto and call_recvfrom. */
typedef struct {
  void *buf;
  size_t len;
  struct sockaddr_storage *addr; /* to (NULL: the peer), or from (NULL) */
  socklen_t addr_len;
} one_t;

static ssize_t call_sendto(int fd, void *state, bool *full) {
  one_t *o = state;
  *full = true;
  return sendto(fd, o->buf, o->len, MSG_NOSIGNAL,
                (const struct sockaddr *)o->addr, o->addr_len);
}

static ssize_t call_recvfrom(int fd, void *state, bool *full) {
  one_t *o = state;
  *full = true;
  return recvfrom(fd, o->buf, o->len, MSG_TRUNC, (struct sockaddr *)o->addr,
                  o->addr != NULL ? &o->addr_len : NULL);
}

static treadle_poll_t send_one(treadle_dgram_t *d, treadle_cx_t *cx,
                               const void *buf, size_t len,
                               const struct sockaddr_storage *to, bool bad,
                               size_t *n, treadle_err_t *err) {
  if (n != NULL)
    *n = 0;
  one_t o = {(void *)buf, len, (struct sockaddr_storage *)to, 0};
  if (to != NULL) {
    o.addr_len = treadle__addr_len(to);
    bad = bad || o.addr_len == 0;
  }
  treadle_poll_t ret;
  /* Length 1 for leaf_start: an empty datagram is still sent. */
  if (!treadle__leaf_start(d != NULL ? &d->src : NULL, cx,
                           bad || n == NULL || (buf == NULL && len > 0), 1,
                           &ret, err))
    return ret;
  return treadle__leaf_transfer(&d->src, cx, TREADLE__IO_WRITE_INTEREST,
                                SEND_CLEAR, call_sendto, &o, n, err);
}

static treadle_poll_t recv_one(treadle_dgram_t *d, treadle_cx_t *cx,
                               void *buf, size_t len,
                               struct sockaddr_storage *from, size_t *n,
                               treadle_err_t *err) {
  if (n != NULL)
    *n = 0;
  treadle_poll_t ret;
  /* Length 1 for leaf_start: a zero-length receive still takes one. */
  if (!treadle__leaf_start(d != NULL ? &d->src : NULL, cx,
                           n == NULL || (buf == NULL && len > 0), 1, &ret,
                           err))
    return ret;
  one_t o = {buf, len, from, sizeof *from};
  ret = treadle__leaf_transfer(&d->src, cx, TREADLE__IO_READ_INTEREST,
                               RECV_CLEAR, call_recvfrom, &o, n, err);
  if (ret == TREADLE_READY && *err == 0) {
    if (*n > len)
      *err = TREADLE_EMSGSIZE; /* cut short: *n is its full length */
    if (from != NULL)
      treadle__addr_tidy(from, o.addr_len, d->family);
  }
  return ret;
}

treadle_poll_t treadle_dgram_send_poll(treadle_dgram_t *d, treadle_cx_t *cx,
                                       const void *buf, size_t len, size_t *n,
                                       treadle_err_t *err) {
  return send_one(d, cx, buf, len, NULL, false, n, err);
}

treadle_poll_t treadle_dgram_send_to_poll(treadle_dgram_t *d, treadle_cx_t *cx,
                                          const void *buf, size_t len,
                                          const struct sockaddr_storage *to,
                                          size_t *n, treadle_err_t *err) {
  return send_one(d, cx, buf, len, to, to == NULL, n, err);
}

treadle_poll_t treadle_dgram_recv_poll(treadle_dgram_t *d, treadle_cx_t *cx,
                                       void *buf, size_t len, size_t *n,
                                       treadle_err_t *err) {
  return recv_one(d, cx, buf, len, NULL, n, err);
}

treadle_poll_t treadle_dgram_recv_from_poll(treadle_dgram_t *d,
                                            treadle_cx_t *cx, void *buf,
                                            size_t len,
                                            struct sockaddr_storage *from,
                                            size_t *n, treadle_err_t *err) {
  return recv_one(d, cx, buf, len, from, n, err);
}

/* ---------------------------------------------------------------- batches */

/* A batch's headers, on the leaf's stack, for call_sendmmsg and
 * call_recvmmsg. */
typedef struct {
  struct mmsghdr hdr[TREADLE_DGRAM_BATCH_MAX];
  struct iovec iov[TREADLE_DGRAM_BATCH_MAX];
  treadle_dgram_msg_t *msgs;
  unsigned count;
  bool sending;
} batch_t;

/* Points b's headers at its messages. The calls below do it, once the
 * socket is ready: a poll that finds nothing to receive fills nothing.
 * Field by field, in two loops without a branch on the direction: this is
 * a receive's cost per datagram when few come at once. */
static void batch_fill(batch_t *b) {
  if (b->sending) {
    for (unsigned i = 0; i < b->count; i++) {
      treadle_dgram_msg_t *m = &b->msgs[i];
      socklen_t alen =
          m->addr.ss_family == AF_UNSPEC ? 0 : treadle__addr_len(&m->addr);
      b->iov[i] = (struct iovec){m->buf, m->len};
      b->hdr[i] = (struct mmsghdr){
          .msg_hdr = {.msg_name = alen != 0 ? &m->addr : NULL,
                      .msg_namelen = alen,
                      .msg_iov = &b->iov[i],
                      .msg_iovlen = 1}};
    }
    return;
  }
  for (unsigned i = 0; i < b->count; i++) {
    treadle_dgram_msg_t *m = &b->msgs[i];
    struct mmsghdr *h = &b->hdr[i];
    b->iov[i].iov_base = m->buf;
    b->iov[i].iov_len = m->len;
    h->msg_hdr.msg_name = &m->addr;
    h->msg_hdr.msg_namelen = sizeof m->addr;
    h->msg_hdr.msg_iov = &b->iov[i];
    h->msg_hdr.msg_iovlen = 1;
    h->msg_hdr.msg_control = NULL;
    h->msg_hdr.msg_controllen = 0;
    h->msg_hdr.msg_flags = 0;
    h->msg_len = 0;
  }
}

static ssize_t call_sendmmsg(int fd, void *state, bool *full) {
  batch_t *b = state;
  batch_fill(b);
  *full = true; /* item 2 of the top */
  return sendmmsg(fd, b->hdr, b->count, MSG_NOSIGNAL);
}

static ssize_t call_recvmmsg(int fd, void *state, bool *full) {
  batch_t *b = state;
  batch_fill(b);
  ssize_t r = recvmmsg(fd, b->hdr, b->count, MSG_TRUNC, NULL);
  *full = r == (ssize_t)b->count; /* short: the queue is empty (item 2) */
  return r;
}

/* False for a bad message: a NULL buffer with a length; when sending, an
 * address that is not one. */
static bool batch_check(const treadle_dgram_msg_t *msgs, size_t count,
                        bool sending) {
  bool bad = false;
  for (size_t i = 0; i < count; i++) /* no early exit: no branch per message */
    bad |= msgs[i].buf == NULL && msgs[i].len > 0;
  if (sending)
    for (size_t i = 0; i < count && !bad; i++)
      bad = msgs[i].addr.ss_family != AF_UNSPEC &&
            treadle__addr_len(&msgs[i].addr) == 0;
  return !bad;
}

/* The batch leaves' start: clamps count, checks the messages and begins
 * as every leaf does. */
static bool batch_start(treadle_dgram_t *d, treadle_cx_t *cx,
                        treadle_dgram_msg_t *msgs, size_t *count, size_t *done,
                        bool sending, batch_t *b, treadle_poll_t *ret,
                        treadle_err_t *err) {
  if (done != NULL)
    *done = 0;
  if (*count > TREADLE_DGRAM_BATCH_MAX)
    *count = TREADLE_DGRAM_BATCH_MAX;
  bool bad = done == NULL || msgs == NULL || *count == 0 ||
             !batch_check(msgs, *count, sending);
  b->msgs = msgs; /* field by field: a compound literal would zero 5 KiB */
  b->count = (unsigned)*count;
  b->sending = sending;
  return treadle__leaf_start(d != NULL ? &d->src : NULL, cx, bad, 1, ret,
                             err);
}

treadle_poll_t treadle_dgram_send_many_poll(treadle_dgram_t *d,
                                            treadle_cx_t *cx,
                                            const treadle_dgram_msg_t *msgs,
                                            size_t count, size_t *sent,
                                            treadle_err_t *err) {
  batch_t b;
  treadle_poll_t ret;
  if (!batch_start(d, cx, (treadle_dgram_msg_t *)msgs, &count, sent, true, &b,
                   &ret, err))
    return ret;
  return treadle__leaf_transfer(&d->src, cx, TREADLE__IO_WRITE_INTEREST,
                                SEND_CLEAR, call_sendmmsg, &b, sent, err);
}

treadle_poll_t treadle_dgram_recv_many_poll(treadle_dgram_t *d,
                                            treadle_cx_t *cx,
                                            treadle_dgram_msg_t *msgs,
                                            size_t count, size_t *received,
                                            treadle_err_t *err) {
  batch_t b;
  treadle_poll_t ret;
  if (!batch_start(d, cx, msgs, &count, received, false, &b, &ret, err))
    return ret;
  ret = treadle__leaf_transfer(&d->src, cx, TREADLE__IO_READ_INTEREST,
                               RECV_CLEAR, call_recvmmsg, &b, received, err);
  if (ret == TREADLE_READY && *err == 0) {
    for (size_t i = 0; i < *received; i++) {
      treadle_dgram_msg_t *m = &msgs[i];
      m->n = b.hdr[i].msg_len;
      m->truncated = (b.hdr[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
      treadle__addr_tidy(&m->addr, b.hdr[i].msg_hdr.msg_namelen, d->family);
    }
  }
  return ret;
}

/* ------------------------------------------------------------ the rest */

treadle_err_t treadle_dgram_local_addr(treadle_dgram_t *d,
                                       struct sockaddr_storage *addr) {
  if (addr == NULL)
    return TREADLE_EINVAL;
  TREADLE__WITH_FD(d, treadle__sock_name(d->src.fd, addr, false));
}

treadle_err_t treadle_dgram_peer_addr(treadle_dgram_t *d,
                                      struct sockaddr_storage *addr) {
  if (addr == NULL)
    return TREADLE_EINVAL;
  TREADLE__WITH_FD(d, treadle__sock_name(d->src.fd, addr, true));
}

void treadle_dgram_close(treadle_dgram_t *d) {
  if (d == NULL)
    return;
  /* The path goes first, as a listener's (stream.c). */
  treadle__unix_path_release(&d->path, d->src.h);
  treadle__source_close(&d->src);
}

void treadle_dgram_free(treadle_dgram_t *d) {
  if (d == NULL)
    return;
  treadle_dgram_close(d);
  treadle__source_free(&d->src);
  treadle__free(d);
}
