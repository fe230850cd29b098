/* What the I/O files (driver_io.c, the sockets' files in net.h,
 * async_fd.c) share: readiness bits, a registration slot's layout,
 * registered sources and the leaf helpers. The driver's table itself
 * (treadle__io_t) is in internal.h, since the driver struct embeds it.
 * Nothing here is public API. */
#ifndef TREADLE_IO_H
#define TREADLE_IO_H

#include <errno.h>
#include <limits.h>
#include <sys/types.h>

#include "internal.h"

/* Readiness bits of a registration (tokio's Ready). */
#define TREADLE__IO_READABLE 0x01u
#define TREADLE__IO_WRITABLE 0x02u
#define TREADLE__IO_READ_CLOSED 0x04u
#define TREADLE__IO_WRITE_CLOSED 0x08u
#define TREADLE__IO_ERROR 0x10u
#define TREADLE__IO_CLOSED 0x20u /* its source was closed */
#define TREADLE__IO_GONE 0x40u   /* the driver shut down */
/* What wakes a reader, a writer. */
#define TREADLE__IO_READ_INTEREST                                              \
  (TREADLE__IO_READABLE | TREADLE__IO_READ_CLOSED | TREADLE__IO_ERROR |        \
   TREADLE__IO_CLOSED | TREADLE__IO_GONE)
#define TREADLE__IO_WRITE_INTEREST                                             \
  (TREADLE__IO_WRITABLE | TREADLE__IO_WRITE_CLOSED | TREADLE__IO_ERROR |       \
   TREADLE__IO_CLOSED | TREADLE__IO_GONE)

/* One slot of the registration table (tokio's ScheduledIo). Slots are
 * never freed before the driver, so an event for a released slot touches
 * valid memory; the generation in the epoll token tells it apart. */
struct treadle__io_reg_s {
  _Atomic uint64_t readiness; /* bits | tick << 16; written under lock */
  _Atomic uint32_t lock;      /* spin lock for the fields below */
  uint32_t generation;        /* bumped at release; guarded by lock */
  treadle_waker_t *reader;    /* guarded by lock */
  treadle_waker_t *writer;    /* guarded by lock */
  uint32_t index;             /* constant */
  uint32_t next_free;         /* free-list link; guarded by io->mu */
} __attribute__((aligned(64)));

/* A registered file descriptor (mio's IoSource): any thread may close it
 * while others use it; the fd is closed by whoever leaves it last, so an
 * operation never touches a closed-and-reused fd. */
typedef struct treadle__source_s {
  int fd;
  _Atomic uint32_t users; /* CLOSED | FINISHED | operations in progress */
  bool keep_fd; /* detach: the finish deregisters but does not close; set
                   before CLOSED, read by whoever finishes */
  treadle__io_reg_t *reg;
  treadle_handle_t *h; /* holds a reference */
} treadle__source_t;

/* Registers `fd` (non-blocking) with h's driver. On failure the fd is
 * left open: TREADLE_ENOIO, TREADLE_ESHUTDOWN, TREADLE_ENOMEM, -errno. */
treadle_err_t treadle__source_open(treadle__source_t *src, treadle_handle_t *h,
                                   int fd);
/* Wakes the waiters and closes the fd (now, or when the last operation
 * leaves); idempotent. */
void treadle__source_close(treadle__source_t *src);
/* As close, but the fd stays open: returns it once the driver no longer
 * watches it (after the last operation left), or -1 when src was closed
 * already. Not concurrently with close or another detach. */
int treadle__source_detach(treadle__source_t *src);
/* Closes if needed and drops the handle reference. Nothing may use src. */
void treadle__source_free(treadle__source_t *src);
/* poll_ready's slow path: stores the task's waker, or finds it ready. */
treadle_poll_t treadle__source_wait(treadle__source_t *src, treadle_cx_t *cx,
                                    unsigned interest, uint32_t *tick,
                                    treadle_err_t *err);

#define TREADLE__SRC_CLOSED (UINT32_C(1) << 31)
#define TREADLE__SRC_FINISHED (UINT32_C(1) << 30) /* the fd was closed */

/* Closes the fd if `now` (the users word just written) says the source is
 * closed and nobody is inside: exactly one caller wins the CAS. */
void treadle__source_try_finish(treadle__source_t *src, uint32_t now);

/* Brackets an operation on src->fd; enter fails once it is closed. */
static inline void treadle__source_leave(treadle__source_t *src) {
  /* acq_rel: the last one out after close closes the fd, after every
   * other user's system call on it. */
  uint32_t now =
      atomic_fetch_sub_explicit(&src->users, 1, memory_order_acq_rel) - 1;
  if (treadle__unlikely(now == TREADLE__SRC_CLOSED))
    treadle__source_try_finish(src, now);
}

static inline bool treadle__source_enter(treadle__source_t *src) {
  /* acquire: pairs with close's release, so a closed source is seen. */
  uint32_t old =
      atomic_fetch_add_explicit(&src->users, 1, memory_order_acquire);
  if (treadle__likely(!(old & TREADLE__SRC_CLOSED)))
    return true;
  treadle__source_leave(src);
  return false;
}

/* READY (*err = 0, *tick for treadle__source_clear) once one of
 * `interest`'s bits is set, or with TREADLE_ECLOSED / TREADLE_ESHUTDOWN.
 * Else stores the task's waker (reader or writer side) and returns
 * PENDING. Must be called between enter and leave. */
static inline treadle_poll_t treadle__source_poll_ready(treadle__source_t *src,
                                                        treadle_cx_t *cx,
                                                        unsigned interest,
                                                        uint32_t *tick,
                                                        treadle_err_t *err) {
  /* acquire: pairs with the driver's release of the readiness word. */
  uint64_t word =
      atomic_load_explicit(&src->reg->readiness, memory_order_acquire);
  unsigned bits = (unsigned)(word & 0xffffu);
  if (treadle__unlikely(!(bits & interest) ||
                        (bits & (TREADLE__IO_CLOSED | TREADLE__IO_GONE))))
    return treadle__source_wait(src, cx, interest, tick, err);
  *tick = (uint32_t)((word >> 16) & 0xffffu);
  *err = 0;
  return TREADLE_READY;
}

/* Clears readiness `bits` after EAGAIN, unless an event came in after
 * `tick` was read. */
void treadle__source_clear(treadle__source_t *src, unsigned bits,
                           uint32_t tick);

/* treadle_cx_poll_proceed for the core's own leaves. */
static inline bool treadle__cx_proceed(treadle_cx_t *cx) {
  if (treadle__unlikely(cx->budget == 0)) {
    cx->yielded = true;
    return false;
  }
  cx->budget--;
  return true;
}

/* What the I/O leaves (stream.c, dgram.c, unix.c, async_fd.c) share. */

/* The budget check every leaf makes first: a task that had its 128 ready
 * leaves in this poll yields (ARCHITECTURE.md "Coop budget"). */
#define TREADLE__LEAF_BUDGET(cx)                                               \
  do {                                                                         \
    if (!treadle__cx_proceed(cx))                                              \
      return TREADLE_PENDING;                                                  \
  } while (0)

/* One non-blocking system call on `fd` for treadle__io_loop: returns its
 * result, or -1 with errno set. On success it sets *full when the call
 * may have left more to do (a full read or write), so that readiness
 * stays. */
typedef ssize_t (*treadle__io_call_t)(int fd, void *state, bool *full);

/* Runs `call(src->fd, state, ...)` when src is ready for `interest`,
 * retrying on EINTR and, on EAGAIN, clearing `clear_bit` and waiting for
 * the next edge. A success that was not full clears it too, which saves
 * the system call that would only say EAGAIN. PENDING: the task's waker is
 * stored. READY: *err = 0 and *r = the call's result, or *err = the
 * error (*r untouched). Call it between enter and leave; it leaves
 * nothing. always_inline: `call` is then a direct call the compiler
 * inlines, as the system call written in place would be. */
static inline __attribute__((always_inline)) treadle_poll_t
treadle__io_loop(treadle__source_t *src, treadle_cx_t *cx, unsigned interest,
                 unsigned clear_bit, treadle__io_call_t call, void *state,
                 ssize_t *r, treadle_err_t *err) {
  for (;;) {
    uint32_t tick;
    if (treadle__source_poll_ready(src, cx, interest, &tick, err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    bool full = false;
    ssize_t res = call(src->fd, state, &full);
    if (res >= 0) {
      if (!full)
        treadle__source_clear(src, clear_bit, tick);
      *r = res;
      return TREADLE_READY;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      treadle__source_clear(src, clear_bit, tick);
      continue;
    }
    *err = -errno;
    return TREADLE_READY;
  }
}

/* The most one system call moves (the kernel's MAX_RW_COUNT): longer
 * lengths are clamped, so a huge len is not an error. */
#define TREADLE__MAX_IO ((size_t)INT_MAX & ~(size_t)4095)

/* The start every read and write leaf shares: a NULL source or `bad`
 * arguments give EINVAL, a task of another runtime EFOREIGN (its driver
 * may never run: the task would wait forever), then the coop budget is
 * spent, then the source is entered (ECLOSED once closed); a zero length
 * is done at once. True: go on to the system call, inside the source;
 * false: return *ret. */
static inline bool treadle__leaf_start(treadle__source_t *src, treadle_cx_t *cx,
                                       bool bad, size_t len,
                                       treadle_poll_t *ret,
                                       treadle_err_t *err) {
  *ret = TREADLE_READY;
  if (src == NULL || bad) {
    *err = TREADLE_EINVAL;
    return false;
  }
  if (cx->task->sched->handle != src->h) {
    *err = TREADLE_EFOREIGN;
    return false;
  }
  if (!treadle__cx_proceed(cx)) {
    *ret = TREADLE_PENDING;
    return false;
  }
  if (!treadle__source_enter(src)) {
    *err = TREADLE_ECLOSED;
    return false;
  }
  if (len == 0) {
    *err = 0;
    treadle__source_leave(src);
    return false;
  }
  return true;
}

/* The end every read and write leaf shares, after treadle__leaf_start:
 * treadle__io_loop, then leave the source; *n is the bytes moved once
 * READY without error. */
static inline __attribute__((always_inline)) treadle_poll_t
treadle__leaf_transfer(treadle__source_t *src, treadle_cx_t *cx,
                       unsigned interest, unsigned clear_bit,
                       treadle__io_call_t call, void *state, size_t *n,
                       treadle_err_t *err) {
  ssize_t r = -1;
  treadle_poll_t ret =
      treadle__io_loop(src, cx, interest, clear_bit, call, state, &r, err);
  treadle__source_leave(src);
  if (ret == TREADLE_READY && *err == 0)
    *n = (size_t)r;
  return ret;
}

/* treadle_async_fd_new for an fd the caller knows to be non-blocking (a
 * child's pipe, process.c): no F_GETFL. On failure the fd stays open. */
treadle_err_t treadle__async_fd_adopt(treadle_handle_t *h, int fd,
                                      treadle_async_fd_t **out);

#endif /* TREADLE_IO_H */
