/* Async fds: any pollable file descriptor as a source of the I/O driver
 * (tokio's AsyncFd). Reads and writes clear readiness only on EAGAIN: a
 * short read says nothing on a terminal, which hands out one line per
 * read(2) while more lines wait. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include "io.h"

struct treadle_async_fd_s {
  treadle__source_t src;
};

treadle_err_t treadle_async_fd_new(treadle_handle_t *h, int fd,
                                   treadle_async_fd_t **out) {
  if (h == NULL || out == NULL || fd < 0)
    return TREADLE_EINVAL;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0)
    return -errno;
  if (!(flags & O_NONBLOCK))
    return TREADLE_EINVAL; /* a read would block the worker */
  return treadle__async_fd_adopt(h, fd, out);
}

treadle_err_t treadle__async_fd_adopt(treadle_handle_t *h, int fd,
                                      treadle_async_fd_t **out) {
  treadle_async_fd_t *a = treadle__calloc(1, sizeof *a);
  if (a == NULL)
    return TREADLE_ENOMEM;
  treadle_err_t err = treadle__source_open(&a->src, h, fd);
  if (err != 0) {
    treadle__free(a);
    return err;
  }
  *out = a;
  return 0;
}

int treadle_async_fd_fd(treadle_async_fd_t *a) {
  if (a == NULL)
    return -1;
  /* Relaxed: a hint; the caller orders its own close against its calls. */
  uint32_t users = atomic_load_explicit(&a->src.users, memory_order_relaxed);
  return users & TREADLE__SRC_CLOSED ? -1 : a->src.fd;
}

/* The driver's wake-up set for the public interest bits. */
static unsigned interest_of(unsigned interest) {
  return (interest & TREADLE_READABLE ? TREADLE__IO_READ_INTEREST : 0) |
         (interest & TREADLE_WRITABLE ? TREADLE__IO_WRITE_INTEREST : 0);
}

treadle_poll_t treadle_async_fd_ready_poll(treadle_async_fd_t *a,
                                           treadle_cx_t *cx, unsigned interest,
                                           treadle_ready_t *ready,
                                           treadle_err_t *err) {
  bool bad = ready == NULL ||
             (interest & (TREADLE_READABLE | TREADLE_WRITABLE)) == 0 ||
             (interest & ~(TREADLE_READABLE | TREADLE_WRITABLE)) != 0;
  treadle_poll_t ret;
  if (!treadle__leaf_start(a != NULL ? &a->src : NULL, cx, bad, 1, &ret, err))
    return ret;
  uint32_t tick;
  ret = treadle__source_poll_ready(
      &a->src, cx, interest_of(interest), &tick, err);
  if (ret == TREADLE_READY && *err == 0) {
    /* Acquire: as poll_ready's load; the bits are at least these. */
    uint64_t word =
        atomic_load_explicit(&a->src.reg->readiness, memory_order_acquire);
    ready->bits = (unsigned)word &
                  (TREADLE_READABLE | TREADLE_WRITABLE | TREADLE_READ_CLOSED |
                   TREADLE_WRITE_CLOSED | TREADLE_FD_ERROR);
    ready->tick = tick;
  }
  treadle__source_leave(&a->src);
  return ret;
}

void treadle_async_fd_clear_ready(treadle_async_fd_t *a,
                                  const treadle_ready_t *ready, unsigned bits) {
  if (a == NULL || ready == NULL)
    return;
  treadle__source_clear(&a->src, bits & (TREADLE_READABLE | TREADLE_WRITABLE),
                        ready->tick);
}

/* A read or write's buffer, for call_transfer. */
typedef struct {
  void *buf;
  size_t len;
  bool writing;
} transfer_t;

/* Readiness stays after any success (see the top). */
static ssize_t call_transfer(int fd, void *state, bool *full) {
  transfer_t *t = state;
  *full = true;
  return t->writing ? write(fd, t->buf, t->len) : read(fd, t->buf, t->len);
}

/* read(2) or write(2) of up to len bytes once the fd is ready for it. */
static treadle_poll_t transfer(treadle_async_fd_t *a, treadle_cx_t *cx,
                               bool writing, void *buf, size_t len, size_t *n,
                               treadle_err_t *err) {
  treadle_poll_t ret;
  *n = 0;
  if (!treadle__leaf_start(a ? &a->src : NULL, cx, buf == NULL && len > 0, len,
                           &ret, err))
    return ret;
  transfer_t t = {buf, len > TREADLE__MAX_IO ? TREADLE__MAX_IO : len, writing};
  unsigned interest =
      writing ? TREADLE__IO_WRITE_INTEREST : TREADLE__IO_READ_INTEREST;
  unsigned bit = writing ? TREADLE__IO_WRITABLE : TREADLE__IO_READABLE;
  return treadle__leaf_transfer(&a->src, cx, interest, bit, call_transfer, &t,
                                n, err);
}

treadle_poll_t treadle_async_fd_read_poll(treadle_async_fd_t *a,
                                          treadle_cx_t *cx, void *buf,
                                          size_t len, size_t *n,
                                          treadle_err_t *err) {
  return transfer(a, cx, false, buf, len, n, err);
}

treadle_poll_t treadle_async_fd_write_poll(treadle_async_fd_t *a,
                                           treadle_cx_t *cx, const void *buf,
                                           size_t len, size_t *n,
                                           treadle_err_t *err) {
  return transfer(a, cx, true, (void *)buf, len, n, err);
}

void treadle_async_fd_close(treadle_async_fd_t *a) {
  if (a != NULL)
    treadle__source_close(&a->src);
}

int treadle_async_fd_detach(treadle_async_fd_t *a) {
  return a != NULL ? treadle__source_detach(&a->src) : -1;
}

void treadle_async_fd_free(treadle_async_fd_t *a) {
  if (a == NULL)
    return;
  treadle__source_free(&a->src);
  treadle__free(a);
}
