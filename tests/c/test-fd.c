/* Async fds: a pipe carried through the I/O driver in both directions
 * (more than the pipe holds, so both sides wait), end of file, an eventfd
 * read with ready_poll/clear_ready (readiness survives until cleared, and
 * an event between a read and the clear is not lost), closing an fd
 * another task waits on, bad input, an async fd that outlives its
 * runtime, and a fork: the child's calls on the parent's runtime answer
 * TREADLE_EFORKED at once, and what it closes leaves the parent's
 * registrations alone; and a close while a dup of the fd keeps its file
 * description open (the epoll set must drop the fd before it is closed); a
 * wait for either side (READABLE | WRITABLE) that only a write edge ends;
 * a detach, which hands the fd back open and unwatched. The
 * harness checks after every case that every fd was closed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

static void pipe_pair(int fds[2], int flags) {
  assert_int_equal(pipe2(fds, O_CLOEXEC | flags), 0);
}

static treadle_async_fd_t *register_fd(treadle_handle_t *h, int fd) {
  treadle_async_fd_t *a = NULL;
  assert_int_equal(treadle_async_fd_new(h, fd, &a), 0);
  assert_non_null(a);
  assert_int_equal(treadle_async_fd_fd(a), fd);
  return a;
}

static uint8_t pattern(size_t i) { return (uint8_t)(i * 2654435761u >> 13); }

/* ------------------------------------------------------ pipe round trip */

#define PIPE_BYTES (4u << 20) /* 64 pipe buffers: both sides wait often */

typedef struct {
  treadle_async_fd_t *fd;
  size_t done;
  size_t *waits;
  uint8_t buf[7001]; /* odd, so reads and writes straddle pipe pages */
} pipe_side_t;

static treadle_poll_t writer_poll(treadle_cx_t *cx, void *st) {
  pipe_side_t *w = st;
  while (w->done < PIPE_BYTES) {
    size_t len = PIPE_BYTES - w->done, n;
    if (len > sizeof w->buf)
      len = sizeof w->buf;
    for (size_t i = 0; i < len; i++)
      w->buf[i] = pattern(w->done + i);
    treadle_err_t err;
    if (treadle_async_fd_write_poll(w->fd, cx, w->buf, len, &n, &err) ==
        TREADLE_PENDING) {
      (*w->waits)++;
      return TREADLE_PENDING;
    }
    assert_int_equal(err, 0);
    assert_true(n > 0 && n <= len);
    w->done += n;
  }
  treadle_async_fd_close(w->fd); /* the reader sees end of file */
  return TREADLE_READY;
}

static treadle_poll_t reader_poll(treadle_cx_t *cx, void *st) {
  pipe_side_t *r = st;
  for (;;) {
    size_t n;
    treadle_err_t err;
    if (treadle_async_fd_read_poll(r->fd, cx, r->buf, sizeof r->buf, &n,
                                   &err) == TREADLE_PENDING) {
      (*r->waits)++;
      return TREADLE_PENDING;
    }
    assert_int_equal(err, 0);
    if (n == 0)
      break;
    for (size_t i = 0; i < n; i++)
      if (r->buf[i] != pattern(r->done + i))
        fail_msg("byte %zu differs", r->done + i);
    r->done += n;
  }
  assert_int_equal(r->done, PIPE_BYTES);
  return TREADLE_READY;
}

static const treadle_task_vtable_t writer_vt = {.poll = writer_poll};
static const treadle_task_vtable_t reader_vt = {.poll = reader_poll};

typedef struct {
  treadle_join_t *joins[2];
} join_two_t;

static treadle_poll_t join_two_poll(treadle_cx_t *cx, void *st) {
  join_two_t *j = st;
  for (int i = 0; i < 2; i++) {
    if (j->joins[i] == NULL)
      continue;
    treadle_err_t err;
    if (treadle_join_poll(j->joins[i], cx, &err, NULL) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    treadle_join_detach(j->joins[i]);
    j->joins[i] = NULL;
  }
  return TREADLE_READY;
}

static const treadle_task_vtable_t join_two_vt = {.poll = join_two_poll};

static void pipe_round_trip(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int fds[2];
  pipe_pair(fds, O_NONBLOCK);
  size_t reader_waits = 0, writer_waits = 0;
  pipe_side_t r = {.fd = register_fd(h, fds[0]), .waits = &reader_waits};
  pipe_side_t w = {.fd = register_fd(h, fds[1]), .waits = &writer_waits};
  join_two_t j;
  assert_int_equal(treadle_spawn(h, &reader_vt, &r, sizeof r, &j.joins[0]), 0);
  assert_int_equal(treadle_spawn(h, &writer_vt, &w, sizeof w, &j.joins[1]), 0);
  assert_int_equal(RUN(rt, &join_two_vt, j), 0);
  /* The pipe holds 64 KiB: the writer filled it and waited for room. */
  assert_true(writer_waits >= 1);
  assert_int_equal(treadle_async_fd_fd(w.fd), -1); /* closed by the writer */
  treadle_async_fd_free(r.fd);
  treadle_async_fd_free(w.fd);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* -------------------------------------------- eventfd with ready/clear */

typedef struct {
  treadle_async_fd_t *fd;
  uint64_t sum, want;
  unsigned *bits_seen;
} counter_t;

static treadle_poll_t counter_poll(treadle_cx_t *cx, void *st) {
  counter_t *c = st;
  while (c->sum < c->want) {
    treadle_ready_t ready;
    treadle_err_t err;
    if (treadle_async_fd_ready_poll(c->fd, cx, TREADLE_READABLE, &ready,
                                    &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    *c->bits_seen |= ready.bits;
    uint64_t v;
    ssize_t r = read(treadle_async_fd_fd(c->fd), &v, sizeof v);
    if (r < 0) {
      assert_true(errno == EAGAIN);
      treadle_async_fd_clear_ready(c->fd, &ready, TREADLE_READABLE);
      continue;
    }
    assert_int_equal(r, sizeof v);
    c->sum += v;
  }
  return TREADLE_READY;
}

static const treadle_task_vtable_t counter_vt = {.poll = counter_poll};

static void *post_five(void *arg) {
  int fd = *(int *)arg;
  for (int i = 0; i < 5; i++) {
    uint64_t one = 1;
    assert_int_equal(write(fd, &one, sizeof one), sizeof one);
    test_sleep_ms(2);
  }
  return NULL;
}

static void eventfd_ready_and_clear(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  assert_true(efd >= 0);
  /* The counter task reads through the registered fd; the thread posts
   * to a dup of it, as another program would. */
  int post_fd = dup(efd);
  assert_true(post_fd >= 0);
  unsigned bits = 0;
  counter_t c = {.fd = register_fd(treadle_runtime_handle(rt), efd),
                 .want = 5,
                 .bits_seen = &bits};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, post_five, &post_fd), 0);
  assert_int_equal(RUN(rt, &counter_vt, c), 0);
  pthread_join(th, NULL);
  assert_true(bits & TREADLE_READABLE);
  close(post_fd);
  treadle_async_fd_free(c.fd);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* -------------------------------------------------- close wakes waiter */

typedef struct {
  treadle_async_fd_t *fd;
  treadle_err_t *got;
} waiter_t;

static treadle_poll_t waiter_poll(treadle_cx_t *cx, void *st) {
  waiter_t *w = st;
  char b;
  size_t n;
  if (treadle_async_fd_read_poll(w->fd, cx, &b, 1, &n, w->got) ==
      TREADLE_PENDING)
    return TREADLE_PENDING;
  return TREADLE_READY;
}

static const treadle_task_vtable_t waiter_vt = {.poll = waiter_poll};

static void *close_later(void *arg) {
  test_sleep_ms(20);
  treadle_async_fd_close(arg);
  return NULL;
}

static void close_wakes_the_reader(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int fds[2];
  pipe_pair(fds, O_NONBLOCK);
  treadle_err_t got = 1;
  waiter_t w = {.fd = register_fd(treadle_runtime_handle(rt), fds[0]),
                .got = &got};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, close_later, w.fd), 0);
  /* Nothing is ever written: only the close ends the read. */
  assert_int_equal(RUN(rt, &waiter_vt, w), 0);
  pthread_join(th, NULL);
  assert_int_equal(got, TREADLE_ECLOSED);
  assert_int_equal(treadle_async_fd_fd(w.fd), -1);
  treadle_async_fd_free(w.fd);
  close(fds[1]);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------- either side, woken by a write */

typedef struct {
  treadle_async_fd_t *fd;
  unsigned *bits_seen;
} either_t;

/* Waits for READABLE | WRITABLE until the fd is writable; nothing is ever
 * readable, so only the write edge (the peer drained) can end it. */
static treadle_poll_t either_poll(treadle_cx_t *cx, void *st) {
  either_t *e = st;
  for (;;) {
    treadle_ready_t ready;
    treadle_err_t err;
    if (treadle_async_fd_ready_poll(e->fd, cx, TREADLE_READABLE | TREADLE_WRITABLE,
                                    &ready, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    struct pollfd p = {.fd = treadle_async_fd_fd(e->fd), .events = POLLOUT};
    assert_int_equal(poll(&p, 1, 0) >= 0, 1);
    if (p.revents & POLLOUT) {
      *e->bits_seen = ready.bits;
      return TREADLE_READY;
    }
    treadle_async_fd_clear_ready(e->fd, &ready, TREADLE_READABLE | TREADLE_WRITABLE);
  }
}

static const treadle_task_vtable_t either_vt = {.poll = either_poll};

static void *drain_later(void *arg) {
  int fd = *(int *)arg;
  test_sleep_ms(20);
  char buf[65536];
  while (read(fd, buf, sizeof buf) > 0) {
  }
  return NULL;
}

static void either_side_wakes_on_write_edge(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  char fill[65536] = {0};
  while (write(sv[0], fill, sizeof fill) > 0) { /* full: not writable */
  }
  assert_int_equal(errno, EAGAIN);
  unsigned bits = 0;
  either_t e = {.fd = register_fd(treadle_runtime_handle(rt), sv[0]),
                .bits_seen = &bits};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, drain_later, &sv[1]), 0);
  assert_int_equal(RUN(rt, &either_vt, e), 0);
  pthread_join(th, NULL);
  assert_true(bits & TREADLE_WRITABLE);
  treadle_async_fd_free(e.fd);
  close(sv[1]);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ----------------------------------------------------------- bad input */

typedef struct {
  treadle_async_fd_t *fd;
} misuse_t;

static treadle_poll_t misuse_poll(treadle_cx_t *cx, void *st) {
  misuse_t *m = st;
  treadle_ready_t ready;
  treadle_err_t err = 0;
  size_t n = 1;
  assert_int_equal(treadle_async_fd_ready_poll(m->fd, cx, 0, &ready, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  assert_int_equal(treadle_async_fd_ready_poll(m->fd, cx, 0x100, &ready, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  assert_int_equal(
      treadle_async_fd_ready_poll(NULL, cx, TREADLE_READABLE, &ready, &err),
      TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  assert_int_equal(treadle_async_fd_read_poll(m->fd, cx, NULL, 4, &n, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  assert_int_equal(n, 0);
  assert_int_equal(treadle_async_fd_read_poll(NULL, cx, &n, 1, &n, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  /* A zero length is done at once, as for TCP. */
  assert_int_equal(treadle_async_fd_read_poll(m->fd, cx, NULL, 0, &n, &err),
                   TREADLE_READY);
  assert_int_equal(err, 0);
  treadle_async_fd_close(m->fd);
  assert_int_equal(treadle_async_fd_read_poll(m->fd, cx, &n, 1, &n, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_ECLOSED);
  assert_int_equal(
      treadle_async_fd_ready_poll(m->fd, cx, TREADLE_WRITABLE, &ready, &err),
      TREADLE_READY);
  assert_int_equal(err, TREADLE_ECLOSED);
  return TREADLE_READY;
}

static const treadle_task_vtable_t misuse_vt = {.poll = misuse_poll};

static void new_rejects_bad_input(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_async_fd_t *a = NULL;
  int fds[2];
  pipe_pair(fds, 0); /* blocking: a read would block the worker */
  assert_int_equal(treadle_async_fd_new(NULL, fds[0], &a), TREADLE_EINVAL);
  assert_int_equal(treadle_async_fd_new(h, fds[0], NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_async_fd_new(h, -1, &a), TREADLE_EINVAL);
  assert_int_equal(treadle_async_fd_new(h, fds[0], &a), TREADLE_EINVAL);
  assert_null(a);
  assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
  a = register_fd(h, fds[0]);
  treadle_async_fd_t *again = NULL;
  assert_int_equal(treadle_async_fd_new(h, fds[0], &again), -EEXIST);
  /* A regular file: epoll cannot watch it; the fd stays the caller's. */
  int file = memfd_create("test-fd", MFD_CLOEXEC);
  assert_true(file >= 0);
  assert_int_equal(fcntl(file, F_SETFL, O_NONBLOCK), 0);
  assert_int_equal(treadle_async_fd_new(h, file, &again), -EPERM);
  assert_int_equal(close(file), 0);
  assert_int_equal(treadle_async_fd_new(h, file, &again), -EBADF);
  assert_null(again);
  misuse_t m = {.fd = a};
  assert_int_equal(RUN(rt, &misuse_vt, m), 0);
  treadle_async_fd_close(a); /* again: idempotent */
  assert_int_equal(treadle_async_fd_fd(NULL), -1);
  treadle_async_fd_clear_ready(NULL, NULL, TREADLE_READABLE);
  treadle_async_fd_close(NULL);
  treadle_async_fd_free(NULL);
  treadle_async_fd_free(a);
  close(fds[1]);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void runtime_without_io_says_so(void **state) {
  (void)state;
  treadle_builder_t *b = test_builder();
  treadle_runtime_t *rt;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  int fds[2];
  pipe_pair(fds, O_NONBLOCK);
  treadle_async_fd_t *a = NULL;
  assert_int_equal(treadle_async_fd_new(treadle_runtime_handle(rt), fds[0], &a),
                   TREADLE_ENOIO);
  assert_null(a);
  close(fds[0]);
  close(fds[1]);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* The runtime goes first: closing and freeing afterwards stays safe. */
static void outlives_runtime(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int fds[2];
  pipe_pair(fds, O_NONBLOCK);
  treadle_async_fd_t *a = register_fd(treadle_runtime_handle(rt), fds[0]);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_int_equal(treadle_async_fd_fd(a), fds[0]);
  treadle_async_fd_close(a);
  assert_int_equal(treadle_async_fd_fd(a), -1);
  treadle_async_fd_free(a);
  close(fds[1]);
}

/* ---------------------------------------------------------------- fork */

static treadle_poll_t nothing_poll(treadle_cx_t *cx, void *st) {
  (void)cx, (void)st;
  return TREADLE_READY;
}

static treadle_err_t blocking_nothing(void *st, void **value) {
  (void)st, (void)value;
  return 0;
}

/* In the child: every call on the parent's runtime answers EFORKED at
 * once; closing an fd it inherited closes only its copy. Exits with the
 * number of the first check that failed, 0 (by exec) if none. */
static void child_checks(treadle_runtime_t *rt, treadle_async_fd_t *a) {
  alarm(20); /* a hang fails the test instead of stalling it */
  treadle_handle_t *h = treadle_runtime_handle(rt);
  static const treadle_task_vtable_t vt = {.poll = nothing_poll};
  static const treadle_blocking_vtable_t bvt = {.run = blocking_nothing};
  treadle_join_t *j;
  treadle_tcp_listener_t *l;
  treadle_signal_t sig;
  treadle_async_fd_t *b;
  int fds[2];
  int check = 0;
  if (++check, RUN(rt, &vt, check) != TREADLE_EFORKED)
    _exit(check);
  if (++check, treadle_spawn(h, &vt, NULL, 0, &j) != TREADLE_EFORKED)
    _exit(check);
  if (++check, treadle_spawn_blocking(h, &bvt, NULL, 0, &j) != TREADLE_EFORKED)
    _exit(check);
  if (++check, treadle_tcp_bind(h, "127.0.0.1", 0, NULL, &l) != TREADLE_EFORKED)
    _exit(check);
  if (++check, treadle_signal_init(&sig, h, SIGUSR1) != TREADLE_EFORKED)
    _exit(check);
  if (++check, pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0 ||
                   treadle_async_fd_new(h, fds[0], &b) != TREADLE_EFORKED)
    _exit(check);
  treadle_async_fd_free(a); /* the child's copy only */
  if (++check, treadle_runtime_free(rt) != TREADLE_EFORKED)
    _exit(check);
  if (++check, strcmp(treadle_err_name(TREADLE_EFORKED), "EFORKED") != 0)
    _exit(check);
  /* Success ends through exec, not exit: the parent's runtime is left in
   * the child on purpose, and blocks that only its (absent) worker threads
   * pointed to would read as leaks to valgrind's check at exit. */
  execl("/bin/true", "true", (char *)NULL);
  _exit(98);
}

static void forked_child_gets_eforked(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int fds[2];
  pipe_pair(fds, O_NONBLOCK);
  treadle_async_fd_t *a = register_fd(treadle_runtime_handle(rt), fds[0]);
  static const treadle_task_vtable_t vt = {.poll = nothing_poll};
  int unused = 0;
  assert_int_equal(RUN(rt, &vt, unused), 0); /* the runtime has run */
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    child_checks(rt, a);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("the child failed check %d (status %#x)", WEXITSTATUS(status),
             status);
  /* The parent's registration survived the child's close: a write still
   * wakes a reader through the driver. */
  assert_int_equal(write(fds[1], "x", 1), 1);
  close(fds[1]);
  treadle_err_t got = 1;
  waiter_t w = {.fd = a, .got = &got};
  assert_int_equal(RUN(rt, &waiter_vt, w), 0);
  assert_int_equal(got, 0);
  treadle_async_fd_free(a);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------ dup description */

/* True when the epoll instance `epfd` watches fd number `fd` (its
 * /proc/self/fdinfo lists a "tfd:" line per watched fd). */
static bool epoll_watches(int epfd, int fd) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  bool found = false;
  int tfd;
  while (fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "tfd: %d", &tfd) == 1 && tfd == fd)
      found = true;
  fclose(f);
  return found;
}

/* A dup keeps the pipe's description open after the async fd closes its
 * fd: had the driver closed without EPOLL_CTL_DEL first, the epoll set
 * would keep the registration, and events for it, forever (libuv's
 * closed_fd_events, TESTING.md I4). */
static void close_with_a_dup_open(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int epfd = h->driver.io.epfd;
  int fds[2];
  pipe_pair(fds, O_NONBLOCK);
  int dup_fd = dup(fds[0]);
  assert_true(dup_fd >= 0);
  treadle_async_fd_t *a = register_fd(h, fds[0]);
  assert_true(epoll_watches(epfd, fds[0]));
  treadle_async_fd_free(a);
  assert_false(epoll_watches(epfd, fds[0]));
  /* The description is still readable through the dup, and registering
   * the dup works as for any new fd. */
  assert_int_equal(write(fds[1], "y", 1), 1);
  treadle_async_fd_t *b = register_fd(h, dup_fd);
  treadle_err_t got = 1;
  waiter_t w = {.fd = b, .got = &got};
  assert_int_equal(RUN(rt, &waiter_vt, w), 0);
  assert_int_equal(got, 0);
  treadle_async_fd_free(b);
  close(fds[1]);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------- detach */

typedef struct {
  treadle_async_fd_t *a;
  int fd; /* what the detach returned */
} detach_t;

static void *detach_later(void *arg) {
  detach_t *d = arg;
  test_sleep_ms(20);
  d->fd = treadle_async_fd_detach(d->a);
  return NULL;
}

/* treadle_async_fd_detach ends the reader's wait as a close does, but
 * hands the fd back open and no longer watched: the caller reads from it,
 * registers it again, and closes it. A second detach, a detach after a
 * close and a NULL answer -1. */
static void detach_gives_the_fd_back(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int epfd = h->driver.io.epfd;
  int fds[2];
  pipe_pair(fds, O_NONBLOCK);
  treadle_err_t got = 1;
  waiter_t w = {.fd = register_fd(h, fds[0]), .got = &got};
  detach_t arg = {.a = w.fd, .fd = -2};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, detach_later, &arg), 0);
  assert_int_equal(RUN(rt, &waiter_vt, w), 0); /* nothing written: the detach ends it */
  pthread_join(th, NULL);
  assert_int_equal(got, TREADLE_ECLOSED);
  assert_int_equal(arg.fd, fds[0]);
  assert_int_equal(treadle_async_fd_fd(w.fd), -1);
  assert_false(epoll_watches(epfd, fds[0]));
  assert_int_equal(treadle_async_fd_detach(w.fd), -1);
  treadle_async_fd_free(w.fd); /* frees; the fd stays open */
  assert_int_equal(write(fds[1], "z", 1), 1);
  char b = 0;
  assert_int_equal(read(fds[0], &b, 1), 1);
  assert_int_equal(b, 'z');
  /* Registered again, read through the driver, detached at once. */
  assert_int_equal(write(fds[1], "q", 1), 1);
  treadle_async_fd_t *again = register_fd(h, fds[0]);
  got = 1;
  waiter_t w2 = {.fd = again, .got = &got};
  assert_int_equal(RUN(rt, &waiter_vt, w2), 0);
  assert_int_equal(got, 0);
  assert_int_equal(treadle_async_fd_detach(again), fds[0]);
  assert_false(epoll_watches(epfd, fds[0]));
  treadle_async_fd_free(again);
  /* After a close, detach has nothing to give back. */
  int other[2];
  pipe_pair(other, O_NONBLOCK);
  treadle_async_fd_t *closed = register_fd(h, other[0]);
  treadle_async_fd_close(closed);
  assert_int_equal(treadle_async_fd_detach(closed), -1);
  treadle_async_fd_free(closed);
  assert_int_equal(treadle_async_fd_detach(NULL), -1);
  assert_int_equal(fcntl(other[0], F_GETFD), -1); /* the close closed it */
  close(other[1]);
  assert_true(fcntl(fds[0], F_GETFD) >= 0);       /* still the caller's */
  close(fds[0]);
  close(fds[1]);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(pipe_round_trip),
    RT_TEST(eventfd_ready_and_clear),
    RT_TEST(close_wakes_the_reader),
    RT_TEST(either_side_wakes_on_write_edge),
    RT_TEST(new_rejects_bad_input),
    RT_TEST(runtime_without_io_says_so),
    RT_TEST(outlives_runtime),
    RT_TEST(forked_child_gets_eforked),
    RT_TEST(close_with_a_dup_open),
    RT_TEST(detach_gives_the_fd_back),
};

TEST_MAIN(tests)
