/* Operations: one C leaf future each, as a script task waits on it
 * (tbind.h).
 *
 * 1. The binding makes an op under its script lock (tb_op_*): the
 *    arguments are checked and copied, nothing is started.
 * 2. The task polls it without the lock (tb_op_poll): the first poll
 *    starts the leaf (a sleep's deadline counts from there, a connect
 *    resolves, a read gets its buffer) and arms the op's deadline; PENDING
 *    means the leaf, or the deadline, holds the task's waker.
 * 3. READY is final: the outcome stays in the op until the binding turns
 *    it into script values, then clears the op (tb_op_clear), under the
 *    lock again. Clearing a pending op cancels its leaf.
 *
 * Reads land in a buffer of the polling thread's, so that a read of a few
 * bytes costs no allocation; the binding takes the bytes on that thread,
 * or moves them to the heap first (tb_op_keep). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tbind.h"

atomic_bool tb_sigint_taken;

static __thread char read_buf[TB_READ_CHUNK];

/* Sets the header only: each kind's maker sets its own member of u, and
 * the deadline's sleep is touched once armed. Zeroing the whole op (the
 * accept member alone is a sockaddr_storage) was most of a yield's cost. */
static void make(tb_op_t *op, tb_kind_t kind) {
  op->kind = kind;
  op->started = op->ready = op->timed_out = false;
  op->has_deadline = op->deadline_armed = false;
  op->err = 0;
  op->deadline_ns = 0;
}

void tb_op_none(tb_op_t *op) { make(op, TB_NONE); }

void tb_op_yield(tb_op_t *op) { make(op, TB_YIELD); }

void tb_op_sleep(tb_op_t *op, uint64_t ns) {
  make(op, TB_SLEEP);
  op->u.sleep.ns = ns;
}

treadle_err_t tb_op_signal(tb_op_t *op, int signum) {
  make(op, TB_NONE);
  treadle_err_t err = treadle_signal_check(signum);
  if (err != 0)
    return err;
  op->kind = TB_SIGNAL;
  op->u.signal.signum = signum;
  if (signum == SIGINT)
    /* Relaxed: a flag that block_on's root reads; no data hangs on it. */
    atomic_store_explicit(&tb_sigint_taken, true, memory_order_relaxed);
  return 0;
}

void tb_op_join(tb_op_t *op, treadle_join_t *j) {
  make(op, TB_JOIN);
  op->u.join.j = j;
  op->u.join.status = 0;
  op->u.join.value = NULL;
}

void tb_op_wait(tb_op_t *op, tb_wait_fn poll, void (*clear)(void *ud),
                void *ud) {
  make(op, TB_WAIT);
  op->u.wait.poll = poll;
  op->u.wait.clear = clear;
  op->u.wait.ud = ud;
}

treadle_err_t tb_op_accept(tb_op_t *op, tb_listener_t *ls) {
  make(op, TB_NONE);
  if (ls->closed)
    return TREADLE_ECLOSED;
  if (ls->accepting)
    return TREADLE_EBUSY;
  ls->accepting = true;
  op->kind = TB_ACCEPT;
  op->u.accept.ls = ls;
  op->u.accept.out = NULL;
  return 0;
}

treadle_err_t tb_op_connect(tb_op_t *op, const char *host, int port) {
  make(op, TB_NONE);
  char *copy = strdup(host);
  if (copy == NULL)
    return TREADLE_ENOMEM;
  op->kind = TB_CONNECT;
  op->u.connect.host = copy;
  op->u.connect.port = port;
  op->u.connect.out = NULL;
  return 0;
}

/* A closed stream says so before a busy one does: whoever reads it after
 * close() learns that it was closed, not that another task reads. */
static treadle_err_t begin_read(tb_op_t *op, tb_stream_t *st) {
  make(op, TB_NONE);
  if (st->closed)
    return TREADLE_ECLOSED;
  if (st->reading)
    return TREADLE_EBUSY;
  st->reading = true;
  return 0;
}

treadle_err_t tb_op_read(tb_op_t *op, tb_stream_t *st, size_t want) {
  treadle_err_t err = begin_read(op, st);
  if (err != 0)
    return err;
  op->kind = TB_READ;
  op->u.read.st = st;
  op->u.read.want = want;
  op->u.read.got = 0;
  op->u.read.heap = NULL;
  return 0;
}

treadle_err_t tb_op_read_into(tb_op_t *op, tb_stream_t *st, void *buf,
                              size_t len) {
  treadle_err_t err = begin_read(op, st);
  if (err != 0)
    return err;
  op->kind = TB_READ_INTO;
  op->u.read_into.st = st;
  op->u.read_into.buf = buf;
  op->u.read_into.len = len;
  op->u.read_into.got = 0;
  return 0;
}

treadle_err_t tb_op_write(tb_op_t *op, tb_stream_t *st, const void *buf,
                          size_t len) {
  make(op, TB_NONE);
  if (st->closed)
    return TREADLE_ECLOSED;
  op->kind = TB_WRITE;
  op->u.write.st = st;
  op->u.write.buf = buf;
  op->u.write.len = len;
  op->u.write.done = 0;
  op->u.write.locked = false;
  op->u.write.queued = false;
  op->u.write.shutdown = false;
  return 0;
}

treadle_err_t tb_op_shutdown(tb_op_t *op, tb_stream_t *st) {
  treadle_err_t err = tb_op_write(op, st, NULL, 0);
  op->u.write.shutdown = err == 0;
  return err;
}

void tb_op_fd_read(tb_op_t *op, treadle_async_fd_t *afd, int fd,
                   size_t want) {
  make(op, TB_FD_READ);
  op->u.fd_read.afd = afd;
  op->u.fd_read.fd = fd;
  op->u.fd_read.want = want;
  op->u.fd_read.got = 0;
  op->u.fd_read.heap = NULL;
}

void tb_op_fd_readable(tb_op_t *op, treadle_async_fd_t *afd) {
  make(op, TB_FD_READABLE);
  op->u.fd_readable.afd = afd;
}

void tb_op_set_deadline(tb_op_t *op, uint64_t ns) {
  op->has_deadline = ns != TREADLE_FOREVER;
  op->deadline_ns = ns;
}

/* ---------------------------------------------------------------- poll */

/* The buffer a read of `want` bytes lands in: the thread's, or a heap one
 * of its own (NULL: out of memory). */
static char *read_target(char **heap, size_t want) {
  if (want <= TB_READ_CHUNK)
    return read_buf;
  if (*heap == NULL)
    *heap = malloc(want);
  return *heap;
}

/* A read(2) of an fd that epoll cannot watch: ready at once. */
static void plain_read(int fd, char *buf, size_t len, size_t *got,
                       treadle_err_t *err) {
  ssize_t r;
  do
    r = read(fd, buf, len);
  while (r < 0 && errno == EINTR);
  *err = r < 0 ? -errno : 0;
  *got = r < 0 ? 0 : (size_t)r;
}

/* TB_FD_READABLE's poll. The driver's readiness outlives the input that
 * set it (the caller's reads never answer EAGAIN to clear it), so poll(2)
 * says whether input is there now; if not, the readiness seen is cleared
 * and waited for again (an event since keeps it: nothing is lost). */
static treadle_poll_t fd_readable(treadle_async_fd_t *afd, treadle_cx_t *cx,
                                  treadle_err_t *err) {
  *err = 0;
  if (afd == NULL)
    return TREADLE_READY;
  for (;;) {
    treadle_ready_t ready;
    if (treadle_async_fd_ready_poll(afd, cx, TREADLE_READABLE, &ready,
                                    err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    struct pollfd p = {.fd = treadle_async_fd_fd(afd), .events = POLLIN};
    int r;
    do
      r = poll(&p, 1, 0);
    while (r < 0 && errno == EINTR);
    if (r != 0) { /* input, its end, or an error the caller's read gets */
      *err = r < 0 ? -errno : 0;
      return TREADLE_READY;
    }
    treadle_async_fd_clear_ready(afd, &ready, TREADLE_READABLE);
  }
}

static treadle_poll_t leaf_poll(tb_op_t *op, treadle_cx_t *cx) {
  switch (op->kind) {
  case TB_NONE:
    return TREADLE_READY;
  case TB_YIELD:
    if (op->started)
      return TREADLE_READY;
    op->started = true;
    treadle_cx_yield(cx);
    return TREADLE_PENDING;
  case TB_SLEEP:
    if (!op->started) {
      treadle_sleep_init(&op->u.sleep.s, op->u.sleep.ns);
      op->started = true;
    }
    return treadle_sleep_poll(&op->u.sleep.s, cx, &op->err);
  case TB_SIGNAL:
    if (!op->started) {
      op->err = treadle_signal_init(&op->u.signal.s, treadle_cx_handle(cx),
                                    op->u.signal.signum);
      if (op->err != 0)
        return TREADLE_READY;
      op->started = true;
    }
    return treadle_signal_poll(&op->u.signal.s, cx, &op->err);
  case TB_JOIN:
    return treadle_join_poll(op->u.join.j, cx, &op->u.join.status,
                             &op->u.join.value);
  case TB_WAIT:
    return op->u.wait.poll(op->u.wait.ud, cx, &op->err);
  case TB_ACCEPT:
    return treadle_tcp_accept_poll(op->u.accept.ls->l, cx, &op->u.accept.out,
                                   &op->u.accept.peer, &op->err);
  case TB_CONNECT:
    if (!op->started) {
      op->err = treadle_tcp_connect_init(&op->u.connect.c,
                                         treadle_cx_handle(cx),
                                         op->u.connect.host,
                                         op->u.connect.port);
      if (op->err != 0)
        return TREADLE_READY;
      op->started = true;
    }
    return treadle_tcp_connect_poll(&op->u.connect.c, cx, &op->u.connect.out,
                                    &op->err);
  case TB_READ: {
    char *buf = read_target(&op->u.read.heap, op->u.read.want);
    if (buf == NULL) {
      op->err = TREADLE_ENOMEM;
      return TREADLE_READY;
    }
    if (op->u.read.st->tls != NULL)
      return treadle_tls_read_poll(op->u.read.st->tls, cx, buf,
                                   op->u.read.want, &op->u.read.got, &op->err);
    return treadle_tcp_read_poll(op->u.read.st->s, cx, buf, op->u.read.want,
                                 &op->u.read.got, &op->err);
  }
  case TB_READ_INTO:
    if (op->u.read_into.st->tls != NULL)
      return treadle_tls_read_poll(op->u.read_into.st->tls, cx,
                                   op->u.read_into.buf, op->u.read_into.len,
                                   &op->u.read_into.got, &op->err);
    return treadle_tcp_read_poll(op->u.read_into.st->s, cx,
                                 op->u.read_into.buf, op->u.read_into.len,
                                 &op->u.read_into.got, &op->err);
  case TB_WRITE: {
    /* First the writers queued before this one, then all of its bytes. */
    if (!op->u.write.locked) {
      /* try_lock first: one CAS when nobody writes, and it never
       * overtakes a queued writer; lock_poll queues. */
      if (!treadle_mutex_try_lock(op->u.write.st->write_lock)) {
        if (!op->u.write.queued) {
          treadle_waiter_init(&op->u.write.w);
          op->u.write.queued = true;
        }
        if (treadle_mutex_lock_poll(op->u.write.st->write_lock, cx,
                                    &op->u.write.w) == TREADLE_PENDING)
          return TREADLE_PENDING;
      }
      op->u.write.locked = true;
    }
    tb_stream_t *st = op->u.write.st;
    treadle_poll_t p = TREADLE_READY;
    if (op->u.write.shutdown && st->tls != NULL)
      p = treadle_tls_shutdown_poll(st->tls, cx, &op->err);
    else if (op->u.write.shutdown)
      op->err = treadle_tcp_shutdown(st->s);
    else
      p = st->tls != NULL
            ? treadle_tls_write_all_poll(st->tls, cx, op->u.write.buf,
                                         op->u.write.len, &op->u.write.done,
                                         &op->err)
            : treadle_tcp_write_all_poll(st->s, cx, op->u.write.buf,
                                         op->u.write.len, &op->u.write.done,
                                         &op->err);
    if (p == TREADLE_READY) {
      treadle_mutex_unlock(op->u.write.st->write_lock);
      op->u.write.locked = false;
    }
    return p;
  }
  case TB_FD_READ: {
    char *buf = read_target(&op->u.fd_read.heap, op->u.fd_read.want);
    if (buf == NULL) {
      op->err = TREADLE_ENOMEM;
      return TREADLE_READY;
    }
    if (op->u.fd_read.afd == NULL) {
      plain_read(op->u.fd_read.fd, buf, op->u.fd_read.want,
                 &op->u.fd_read.got, &op->err);
      return TREADLE_READY;
    }
    return treadle_async_fd_read_poll(op->u.fd_read.afd, cx, buf,
                                      op->u.fd_read.want, &op->u.fd_read.got,
                                      &op->err);
  }
  case TB_FD_READABLE:
    return fd_readable(op->u.fd_readable.afd, cx, &op->err);
  }
  return TREADLE_READY;
}

treadle_poll_t tb_op_poll(tb_op_t *op, treadle_cx_t *cx) {
  if (op->ready)
    return TREADLE_READY;
  treadle_poll_t p = leaf_poll(op, cx);
  if (p == TREADLE_PENDING && op->has_deadline) {
    if (!op->deadline_armed) {
      treadle_sleep_init(&op->deadline, op->deadline_ns);
      op->deadline_armed = true;
    }
    treadle_err_t err;
    if (treadle_sleep_poll(&op->deadline, cx, &err) == TREADLE_READY) {
      op->timed_out = true;
      op->err = err != 0 ? err : TREADLE_ETIMEDOUT; /* ENOTIME: no timers */
      p = TREADLE_READY;
    }
  }
  if (p == TREADLE_READY)
    op->ready = true;
  return p;
}

/* ------------------------------------------------------------- results */

const char *tb_op_bytes(const tb_op_t *op) {
  if (op->kind == TB_READ)
    return op->u.read.heap != NULL ? op->u.read.heap : read_buf;
  if (op->kind == TB_FD_READ)
    return op->u.fd_read.heap != NULL ? op->u.fd_read.heap : read_buf;
  return NULL;
}

void tb_op_keep(tb_op_t *op) {
  char **heap = op->kind == TB_READ      ? &op->u.read.heap
                : op->kind == TB_FD_READ ? &op->u.fd_read.heap
                                         : NULL;
  size_t *got = op->kind == TB_READ ? &op->u.read.got : &op->u.fd_read.got;
  if (heap == NULL || !op->ready || *heap != NULL || *got == 0)
    return;
  char *copy = malloc(*got);
  if (copy == NULL) { /* cannot keep them: fail the read, loudly */
    op->err = TREADLE_ENOMEM;
    *got = 0;
    return;
  }
  memcpy(copy, read_buf, *got);
  *heap = copy;
}

treadle_tcp_stream_t *tb_op_take_stream(tb_op_t *op) {
  treadle_tcp_stream_t **slot = op->kind == TB_ACCEPT ? &op->u.accept.out
                                : op->kind == TB_CONNECT ? &op->u.connect.out
                                                         : NULL;
  if (slot == NULL)
    return NULL;
  treadle_tcp_stream_t *s = *slot;
  *slot = NULL;
  return s;
}

void tb_op_clear(tb_op_t *op) {
  switch (op->kind) {
  case TB_NONE:
  case TB_YIELD:
  case TB_JOIN: /* the binding owns the handle and what it joined */
  case TB_FD_READABLE:
    break;
  case TB_SLEEP:
    if (op->started)
      treadle_sleep_drop(&op->u.sleep.s);
    break;
  case TB_SIGNAL:
    if (op->started)
      treadle_signal_drop(&op->u.signal.s);
    break;
  case TB_WAIT:
    if (op->u.wait.clear != NULL)
      op->u.wait.clear(op->u.wait.ud);
    break;
  case TB_ACCEPT:
    treadle_tcp_stream_free(op->u.accept.out);
    op->u.accept.ls->accepting = false;
    break;
  case TB_CONNECT:
    if (op->started)
      treadle_tcp_connect_drop(&op->u.connect.c);
    treadle_tcp_stream_free(op->u.connect.out);
    free(op->u.connect.host);
    break;
  case TB_READ:
    free(op->u.read.heap);
    op->u.read.st->reading = false;
    break;
  case TB_READ_INTO:
    op->u.read_into.st->reading = false;
    break;
  case TB_WRITE:
    if (op->u.write.queued) /* passes the lock on if it was handed it */
      treadle_waiter_drop(&op->u.write.w);
    if (op->u.write.locked)
      treadle_mutex_unlock(op->u.write.st->write_lock);
    break;
  case TB_FD_READ:
    free(op->u.fd_read.heap);
    break;
  }
  if (op->deadline_armed)
    treadle_sleep_drop(&op->deadline);
  make(op, TB_NONE);
}
