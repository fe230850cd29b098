/* Reads stdin through the I/O driver (an async fd) while a timer task
 * ticks on the same thread: `seq 100000 | stdin_lines`, or type lines and
 * end with Ctrl-D. Prints the line count at every tick and at the end. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <treadle.h>
#include <unistd.h>

typedef struct {
  treadle_sleep_t nap;
  bool armed;
  const long *lines;
} ticker_t;

static treadle_poll_t tick(treadle_cx_t *cx, void *state) {
  ticker_t *t = state;
  for (;;) {
    if (!t->armed)
      treadle_sleep_init(&t->nap, 500 * TREADLE_NSEC_PER_MSEC), t->armed = true;
    if (treadle_sleep_poll(&t->nap, cx, NULL) == TREADLE_PENDING)
      return TREADLE_PENDING;
    t->armed = false;
    fprintf(stderr, "tick: %ld lines so far\n", *t->lines);
  }
}

static void tick_drop(void *state) {
  treadle_sleep_drop(&((ticker_t *)state)->nap);
}

typedef struct {
  treadle_async_fd_t *in;
  treadle_join_t *ticker;
  long lines;
  char buf[4096];
} reader_t;

static treadle_poll_t read_all(treadle_cx_t *cx, void *state) {
  reader_t *r = state;
  if (r->ticker == NULL) {
    static const treadle_task_vtable_t tick_vt = {.poll = tick,
                                                  .drop = tick_drop};
    ticker_t t = {.lines = &r->lines};
    treadle_spawn(treadle_cx_handle(cx), &tick_vt, &t, sizeof t, &r->ticker);
  }
  for (;;) {
    size_t n;
    treadle_err_t err;
    if (treadle_async_fd_read_poll(r->in, cx, r->buf, sizeof r->buf, &n,
                                   &err) == TREADLE_PENDING)
      return TREADLE_PENDING; /* the ticker runs meanwhile */
    if (err != 0 || n == 0) {
      if (err != 0)
        fprintf(stderr, "read: %s\n", treadle_strerror(err));
      break;
    }
    for (char *p = r->buf; (p = memchr(p, '\n', (size_t)(r->buf + n - p))); p++)
      r->lines++;
  }
  treadle_join_abort(r->ticker);
  treadle_join_detach(r->ticker);
  printf("%ld lines\n", r->lines);
  return TREADLE_READY;
}

int main(void) {
  treadle_builder_t *b = NULL;
  treadle_runtime_t *rt;
  treadle_err_t err = treadle_builder_new(TREADLE_CURRENT_THREAD, &b);
  if (err == 0 && (err = treadle_builder_enable_all(b)) == 0)
    err = treadle_builder_build(b, &rt);
  treadle_builder_free(b);
  if (err != 0)
    return fprintf(stderr, "build: %s\n", treadle_strerror(err)), 1;
  /* A description of our own, so that O_NONBLOCK does not reach the shell
   * that shares fd 0. */
  int fd = open("/proc/self/fd/0", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  reader_t r = {0};
  err = fd < 0 ? TREADLE_EINVAL
               : treadle_async_fd_new(treadle_runtime_handle(rt), fd, &r.in);
  if (err != 0) {
    if (fd >= 0)
      close(fd); /* a failed registration leaves the fd ours */
    treadle_runtime_free(rt);
    fprintf(stderr, "stdin cannot be watched (%s): pipe or type into it\n",
            treadle_strerror(err));
    return 1;
  }
  static const treadle_task_vtable_t vt = {.poll = read_all};
  err = treadle_runtime_block_on(rt, &vt, &r, sizeof r, NULL);
  treadle_runtime_free(rt);
  treadle_async_fd_free(r.in); /* the copy in the task was the same pointer */
  return err != 0;
}
