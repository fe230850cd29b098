/* The I/O driver: an epoll instance and an eventfd that unparks it.
 *
 * The eventfd is registered edge-triggered for reading; every write makes a
 * new edge, so it is read (reset) only when it fired. epoll_pwait2 gives
 * the park a nanosecond timeout, so that timers are not rounded to the
 * next millisecond twice; kernels without it fall back to epoll_wait,
 * rounding up. EINTR is never surfaced: an interrupted wait returns as if
 * unparked, and the scheduler looks again. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

#define EVENTS 64

treadle_err_t treadle__io_init(treadle__io_t *io) {
  io->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (io->epfd < 0)
    return -errno;
  io->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (io->evfd < 0) {
    treadle_err_t err = -errno;
    close(io->epfd);
    io->epfd = -1;
    return err;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
  if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->evfd, &ev) < 0) {
    treadle_err_t err = -errno;
    close(io->evfd);
    close(io->epfd);
    io->evfd = io->epfd = -1;
    return err;
  }
  return 0;
}

static int wait_events(treadle__io_t *io, struct epoll_event *events,
                       uint64_t timeout_ns) {
  static _Atomic bool no_pwait2;
  if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
    struct timespec ts = {
        .tv_sec = (time_t)(timeout_ns / TREADLE_NSEC_PER_SEC),
        .tv_nsec = (long)(timeout_ns % TREADLE_NSEC_PER_SEC),
    };
    int n = epoll_pwait2(io->epfd, events, EVENTS,
                         timeout_ns == TREADLE_FOREVER ? NULL : &ts, NULL);
    if (n >= 0 || errno != ENOSYS)
      return n;
    /* Relaxed: a cached capability; racing threads both fall back. */
    atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
  }
  int ms;
  if (timeout_ns == TREADLE_FOREVER)
    ms = -1;
  else if (timeout_ns >= (uint64_t)INT32_MAX * TREADLE_NSEC_PER_MSEC)
    ms = INT32_MAX;
  else
    ms = (int)((timeout_ns + TREADLE_NSEC_PER_MSEC - 1) /
               TREADLE_NSEC_PER_MSEC);
  return epoll_wait(io->epfd, events, EVENTS, ms);
}

void treadle__io_park(treadle__io_t *io, uint64_t timeout_ns) {
  struct epoll_event events[EVENTS];
  int n = wait_events(io, events, timeout_ns);
  for (int i = 0; i < n; i++) {
    if (events[i].data.ptr == NULL) {
      uint64_t count;
      /* Resets the counter; EAGAIN (already reset) is harmless. */
      ssize_t r = read(io->evfd, &count, sizeof count);
      (void)r;
    }
  }
}

void treadle__io_unpark(treadle__io_t *io) {
  uint64_t one = 1;
  /* EAGAIN means the counter is saturated, i.e. already readable. */
  ssize_t r = write(io->evfd, &one, sizeof one);
  (void)r;
}

void treadle__io_shutdown(treadle__io_t *io) {
  if (io->evfd >= 0)
    close(io->evfd);
  if (io->epfd >= 0)
    close(io->epfd);
  io->evfd = io->epfd = -1;
}
