/* The root future of a binding's block_on (tbind.h): the main work, and
 * SIGINT so that the thread in block_on can act on Ctrl-C.
 *
 * 1. Each poll first asks main_poll; READY ends the wait with DONE.
 * 2. The first poll that watches arms a SIGINT listener; on a runtime
 *    without a signal driver it arms a 50 ms tick instead (when asked for),
 *    and with neither it waits for the main work alone.
 * 3. A delivery ends the wait with SIGINT and the listener stays armed for
 *    the next one; a tick ends it with TICK and is armed again on the
 *    next poll.
 * 4. A byte on the wake fd ends it with WAKE, the pipe drained. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "tbind.h"

#define TICK_NS (50 * TREADLE_NSEC_PER_MSEC)

static void arm(tb_root_t *r, treadle_cx_t *cx) {
  if (treadle_signal_init(&r->sig, treadle_cx_handle(cx), SIGINT) == 0) {
    r->sig_armed = true;
  } else if (r->tick) {
    treadle_sleep_init(&r->tick_sleep, TICK_NS);
    r->tick_armed = true;
  } else {
    r->unwatched = true;
  }
}

/* A byte on the wake fd: drains the pipe and says true. */
static bool wake_poll(treadle_async_fd_t *wake, treadle_cx_t *cx) {
  treadle_ready_t rdy;
  treadle_err_t err;
  if (treadle_async_fd_ready_poll(wake, cx, TREADLE_READABLE, &rdy, &err) ==
          TREADLE_PENDING ||
      err != 0) /* shutting down: the main work's end comes next */
    return false;
  char buf[256];
  int fd = treadle_async_fd_fd(wake);
  while (read(fd, buf, sizeof buf) > 0)
    ;
  treadle_async_fd_clear_ready(wake, &rdy, TREADLE_READABLE);
  return true;
}

treadle_err_t tb_root_wake_open(treadle_handle_t *h, int fd,
                                treadle_async_fd_t **out) {
  *out = NULL;
  if (fd < 0)
    return 0;
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0)
    return -errno;
  treadle_err_t err = treadle_async_fd_new(h, dup_fd, out);
  if (err != 0)
    close(dup_fd);
  return err;
}

treadle_poll_t tb_root_poll(tb_root_t *r, treadle_cx_t *cx,
                            tb_root_event_t *ev) {
  if (r->main_poll(r->ud, cx) == TREADLE_READY) {
    *ev = TB_ROOT_DONE;
    return TREADLE_READY;
  }
  if (r->wake != NULL && wake_poll(r->wake, cx)) {
    *ev = TB_ROOT_WAKE;
    return TREADLE_READY;
  }
  if (!r->watch || r->unwatched)
    return TREADLE_PENDING;
  if (!r->sig_armed && !r->tick_armed)
    arm(r, cx);
  treadle_err_t err;
  if (r->sig_armed &&
      treadle_signal_poll(&r->sig, cx, &err) == TREADLE_READY) {
    if (err == 0) {
      *ev = TB_ROOT_SIGINT;
      return TREADLE_READY;
    }
    r->unwatched = true; /* the runtime is shutting down */
  }
  if (r->tick_armed &&
      treadle_sleep_poll(&r->tick_sleep, cx, &err) == TREADLE_READY) {
    treadle_sleep_drop(&r->tick_sleep);
    r->tick_armed = false;
    if (err == 0) {
      *ev = TB_ROOT_TICK;
      return TREADLE_READY;
    }
    r->unwatched = true; /* no timers either */
  }
  return TREADLE_PENDING;
}

void tb_root_drop(tb_root_t *r) {
  if (r->sig_armed)
    treadle_signal_drop(&r->sig);
  if (r->tick_armed)
    treadle_sleep_drop(&r->tick_sleep);
  r->sig_armed = r->tick_armed = false;
}

static treadle_poll_t root_task_poll(treadle_cx_t *cx, void *state) {
  tb_root_event_t ev;
  if (tb_root_poll(state, cx, &ev) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (ev == TB_ROOT_DONE || ev == TB_ROOT_WAKE)
    treadle_cx_set_output(cx, 0, ev == TB_ROOT_DONE ? TB_ROOT_DONE_OUT : TB_ROOT_WAKE_OUT);
  return TREADLE_READY;
}

static void root_task_drop(void *state) { tb_root_drop(state); }

const treadle_task_vtable_t tb_root_vt = {.poll = root_task_poll,
                                          .drop = root_task_drop};
