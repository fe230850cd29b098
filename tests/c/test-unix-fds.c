/* File descriptors over Unix streams (issue 14 item 2): SCM_RIGHTS sent
 * with treadle_unix_send_fds_poll arrive close-on-exec and work; more than
 * the receiver has room for is an error that closes every one that came
 * (no descriptor leaks: the process's count is checked); a read stops
 * after bytes that carried descriptors and the bytes behind them are read
 * without a new edge (the short-read rule TCP uses would stall there);
 * and bad input, closed streams, TCP streams and other runtimes. */
#define _GNU_SOURCE
#include <fcntl.h>

#include "net_util.h"

/* One descriptor leaf (send_fds or recv_fds), polled to its end with a
 * deadline; or, with `once`, polled once (its error, 1 when PENDING). */
typedef struct {
  treadle_stream_t *s;
  bool sending, once;
  const void *out;
  void *in;
  size_t len;
  const int *fds;
  int *room_fds;
  size_t nfds, n;
  size_t *nfds_p; /* recv: NULL to pass NULL */
  bool null_n;
  treadle_err_t err;
  test_deadline_t deadline;
} fd_op_t;

static treadle_poll_t fd_step(treadle_cx_t *cx, void *st) {
  fd_op_t *o = st;
  size_t *np = o->null_n ? NULL : &o->n;
  if (o->sending)
    return treadle_unix_send_fds_poll(o->s, cx, o->out, o->len, o->fds,
                                      o->nfds, np, &o->err);
  return treadle_unix_recv_fds_poll(o->s, cx, o->in, o->len, o->room_fds,
                                    o->nfds_p, np, &o->err);
}

static treadle_poll_t fd_op_poll(treadle_cx_t *cx, void *st) {
  fd_op_t *o = *(fd_op_t **)st;
  if (o->once) {
    if (fd_step(cx, o) == TREADLE_PENDING)
      o->err = 1;
    return TREADLE_READY;
  }
  treadle_err_t err;
  if (test_within(&o->deadline, 10000, cx, fd_step, o, &err) ==
      TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err != 0)
    o->err = err;
  treadle_sleep_drop(&o->deadline.sleep);
  return TREADLE_READY;
}

static void run_op(treadle_runtime_t *rt, fd_op_t *o) {
  static const treadle_task_vtable_t vt = {.poll = fd_op_poll};
  assert_int_equal(RUN(rt, &vt, o), 0);
}

static treadle_err_t send_fds(treadle_runtime_t *rt, treadle_stream_t *s,
                              const char *msg, const int *fds, size_t nfds,
                              size_t *n) {
  fd_op_t o = {.s = s, .sending = true, .out = msg, .len = strlen(msg),
               .fds = fds, .nfds = nfds, .n = 99};
  run_op(rt, &o);
  *n = o.n;
  return o.err;
}

/* Receives into buf (len) and fds (room): the error; *n, *got. */
static treadle_err_t recv_fds(treadle_runtime_t *rt, treadle_stream_t *s,
                              char *buf, size_t len, int *fds, size_t room,
                              size_t *n, size_t *got) {
  size_t nfds = room;
  fd_op_t o = {.s = s, .in = buf, .len = len, .room_fds = fds,
               .nfds_p = &nfds, .n = 99};
  run_op(rt, &o);
  *n = o.n;
  *got = nfds;
  return o.err;
}

/* Reads with treadle_stream_read_poll until `want` bytes came or 10 s
 * passed: how many did. */
typedef struct {
  treadle_stream_t *s;
  char *buf;
  size_t want, got, reads;
  test_deadline_t deadline;
  treadle_err_t err;
} reader_t;

static treadle_poll_t read_step(treadle_cx_t *cx, void *st) {
  reader_t *r = st;
  while (r->got < r->want) {
    size_t n;
    if (treadle_stream_read_poll(r->s, cx, r->buf + r->got, 64, &n, &r->err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (r->err != 0 || n == 0)
      break;
    r->got += n;
    r->reads++;
  }
  return TREADLE_READY;
}

static treadle_poll_t reader_poll(treadle_cx_t *cx, void *st) {
  reader_t *r = *(reader_t **)st;
  treadle_err_t err;
  if (test_within(&r->deadline, 10000, cx, read_step, r, &err) ==
      TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err != 0)
    r->err = err;
  treadle_sleep_drop(&r->deadline.sleep);
  return TREADLE_READY;
}

static size_t read_plain(treadle_runtime_t *rt, treadle_stream_t *s, char *buf,
                         size_t want, size_t *reads) {
  static const treadle_task_vtable_t vt = {.poll = reader_poll};
  reader_t r = {.s = s, .buf = buf, .want = want};
  reader_t *rp = &r;
  assert_int_equal(RUN(rt, &vt, rp), 0);
  assert_int_equal(r.err, 0); /* not ETIMEDOUT: nothing stalled */
  if (reads != NULL)
    *reads = r.reads;
  return r.got;
}

/* Writes msg with treadle_stream_write_all_poll. */
typedef struct {
  treadle_stream_t *s;
  const char *msg;
  size_t done;
  treadle_err_t err;
} writer_t;

static treadle_poll_t writer_poll(treadle_cx_t *cx, void *st) {
  writer_t *w = *(writer_t **)st;
  return treadle_stream_write_all_poll(w->s, cx, w->msg, strlen(w->msg),
                                       &w->done, &w->err);
}

static void write_plain(treadle_runtime_t *rt, treadle_stream_t *s,
                        const char *msg) {
  static const treadle_task_vtable_t vt = {.poll = writer_poll};
  writer_t w = {.s = s, .msg = msg};
  writer_t *wp = &w;
  assert_int_equal(RUN(rt, &vt, wp), 0);
  assert_int_equal(w.err, 0);
}

static void descriptors_pass_close_on_exec(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_stream_t *a, *b;
  assert_int_equal(treadle_unix_stream_pair(treadle_runtime_handle(rt), &a, &b),
                   0);
  int p1[2], p2[2];
  assert_int_equal(pipe2(p1, O_CLOEXEC), 0);
  assert_int_equal(pipe2(p2, O_CLOEXEC), 0);
  int out[3] = {p1[1], p2[1], p1[0]};
  size_t n, got;
  assert_int_equal(send_fds(rt, a, "fds!", out, 3, &n), 0);
  assert_int_equal(n, 4);
  char buf[16];
  int in[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
  assert_int_equal(recv_fds(rt, b, buf, sizeof buf, in, 8, &n, &got), 0);
  assert_int_equal(n, 4);
  assert_memory_equal(buf, "fds!", 4);
  assert_int_equal(got, 3);
  for (int i = 0; i < 3; i++) {
    assert_true(in[i] >= 0 && in[i] != out[i]); /* copies, new numbers */
    assert_true(fcntl(in[i], F_GETFD) & FD_CLOEXEC);
  }
  /* The copies are the same pipes. */
  assert_int_equal(write(in[0], "1", 1), 1);
  assert_int_equal(write(in[1], "2", 1), 1);
  char c;
  assert_int_equal(read(in[2], &c, 1), 1); /* p1's read end, via its copy */
  assert_int_equal(c, '1');
  assert_int_equal(read(p2[0], &c, 1), 1);
  assert_int_equal(c, '2');
  for (int i = 0; i < 3; i++)
    close(in[i]);
  /* Plain bytes with room for descriptors: none came. */
  write_plain(rt, a, "plain");
  assert_int_equal(recv_fds(rt, b, buf, sizeof buf, in, 8, &n, &got), 0);
  assert_int_equal(n, 5);
  assert_int_equal(got, 0);
  close(p1[0]);
  close(p1[1]);
  close(p2[0]);
  close(p2[1]);
  treadle_stream_free(a);
  treadle_stream_free(b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void too_many_descriptors_are_all_closed(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_stream_t *a, *b;
  assert_int_equal(treadle_unix_stream_pair(treadle_runtime_handle(rt), &a, &b),
                   0);
  int p[2];
  assert_int_equal(pipe2(p, O_CLOEXEC), 0);
  int out[3] = {p[0], p[1], p[0]};
  size_t n, got;
  char buf[16];
  int in[3] = {-1, -1, -1};
  int before = test_open_fds();
  /* Room for 2 of 3: EMSGSIZE, none kept, the bytes read all the same. */
  assert_int_equal(send_fds(rt, a, "three", out, 3, &n), 0);
  assert_int_equal(recv_fds(rt, b, buf, sizeof buf, in, 2, &n, &got),
                   TREADLE_EMSGSIZE);
  assert_int_equal(n, 5);
  assert_memory_equal(buf, "three", 5);
  assert_int_equal(got, 0);
  assert_int_equal(test_open_fds(), before);
  /* Room for none. */
  assert_int_equal(send_fds(rt, a, "one", out, 1, &n), 0);
  assert_int_equal(recv_fds(rt, b, buf, sizeof buf, NULL, 0, &n, &got),
                   TREADLE_EMSGSIZE);
  assert_int_equal(n, 3);
  assert_int_equal(test_open_fds(), before);
  /* A plain read: the kernel closes them. */
  assert_int_equal(send_fds(rt, a, "two", out, 2, &n), 0);
  assert_int_equal(read_plain(rt, b, buf, 3, NULL), 3);
  assert_int_equal(test_open_fds(), before);
  close(p[0]);
  close(p[1]);
  treadle_stream_free(a);
  treadle_stream_free(b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void bytes_after_descriptors_are_read(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_stream_t *a, *b;
  assert_int_equal(treadle_unix_stream_pair(treadle_runtime_handle(rt), &a, &b),
                   0);
  int p[2];
  assert_int_equal(pipe2(p, O_CLOEXEC), 0);
  int before = test_open_fds();
  /* "P", then "A" with a descriptor, then "BB", all queued before the
   * reader runs: its first read stops after "PA" (short, with "BB"
   * queued and no edge to come). */
  size_t n, reads;
  char buf[256];
  write_plain(rt, a, "P");
  assert_int_equal(send_fds(rt, a, "A", &p[1], 1, &n), 0);
  assert_int_equal(n, 1);
  write_plain(rt, a, "BB");
  assert_int_equal(read_plain(rt, b, buf, 4, &reads), 4);
  assert_int_equal(reads, 2); /* the kernel split them after the fd */
  assert_memory_equal(buf, "PABB", 4);
  assert_int_equal(test_open_fds(), before); /* the plain read's were closed */
  close(p[0]);
  close(p[1]);
  treadle_stream_free(a);
  treadle_stream_free(b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void descriptor_misuse(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime(), *other = test_runtime();
  treadle_stream_t *a, *b;
  assert_int_equal(treadle_unix_stream_pair(treadle_runtime_handle(rt), &a, &b),
                   0);
  int fds[TREADLE_UNIX_MAX_FDS + 1];
  for (size_t i = 0; i < TEST_ARRAY_LEN(fds); i++)
    fds[i] = 0;
  char buf[8];
  size_t room = 1, big_room = TREADLE_UNIX_MAX_FDS + 1;
  int in[1];
  const fd_op_t bad[] = {
      {.s = NULL, .sending = true, .out = "x", .len = 1, .fds = fds, .nfds = 1},
      {.s = a, .sending = true, .out = "x", .len = 0, .fds = fds, .nfds = 1},
      {.s = a, .sending = true, .out = NULL, .len = 1, .fds = fds, .nfds = 1},
      {.s = a, .sending = true, .out = "x", .len = 1, .fds = NULL, .nfds = 1},
      {.s = a, .sending = true, .out = "x", .len = 1, .fds = fds, .nfds = 0},
      {.s = a, .sending = true, .out = "x", .len = 1, .fds = fds,
       .nfds = TREADLE_UNIX_MAX_FDS + 1},
      {.s = a, .sending = true, .out = "x", .len = 1, .fds = fds, .nfds = 1,
       .null_n = true},
      {.s = NULL, .in = buf, .len = 1, .room_fds = in, .nfds_p = &room},
      {.s = b, .in = NULL, .len = 1, .room_fds = in, .nfds_p = &room},
      {.s = b, .in = buf, .len = 1, .room_fds = NULL, .nfds_p = &room},
      {.s = b, .in = buf, .len = 1, .room_fds = in, .nfds_p = NULL},
      {.s = b, .in = buf, .len = 1, .room_fds = in, .nfds_p = &big_room},
      {.s = b, .in = buf, .len = 1, .room_fds = in, .nfds_p = &room,
       .null_n = true},
  };
  for (size_t i = 0; i < TEST_ARRAY_LEN(bad); i++) {
    fd_op_t o = bad[i];
    o.once = true;
    if (o.nfds_p == &big_room)
      big_room = TREADLE_UNIX_MAX_FDS + 1;
    room = 1;
    run_op(rt, &o);
    if (o.err != TREADLE_EINVAL)
      fail_msg("case %zu: %s", i, treadle_err_name(o.err));
  }
  /* A descriptor that is not open. */
  int closed_fd = -1;
  size_t n;
  assert_int_equal(send_fds(rt, a, "x", &closed_fd, 1, &n), TREADLE_EBADF);
  /* Another runtime's task: EFOREIGN at once. */
  int p[2];
  assert_int_equal(pipe2(p, O_CLOEXEC), 0);
  fd_op_t f = {.s = a, .sending = true, .out = "x", .len = 1, .fds = p,
               .nfds = 1, .once = true};
  run_op(other, &f);
  assert_int_equal(f.err, TREADLE_EFOREIGN);
  room = 1;
  fd_op_t g = {.s = b, .in = buf, .len = 1, .room_fds = in, .nfds_p = &room,
               .once = true};
  run_op(other, &g);
  assert_int_equal(g.err, TREADLE_EFOREIGN);
  /* A TCP stream carries no descriptors. */
  int tfd;
  treadle_tcp_stream_t *t = plain_pair(rt, 0, &tfd);
  f.s = t;
  run_op(rt, &f);
  assert_int_equal(f.err, TREADLE_ENOTSUP);
  g.s = t;
  room = 1;
  run_op(rt, &g);
  assert_int_equal(g.err, TREADLE_ENOTSUP);
  treadle_tcp_stream_free(t);
  close(tfd);
  /* Closed. */
  treadle_stream_close(a);
  treadle_stream_close(b);
  f.s = a;
  run_op(rt, &f);
  assert_int_equal(f.err, TREADLE_ECLOSED);
  g.s = b;
  room = 1;
  run_op(rt, &g);
  assert_int_equal(g.err, TREADLE_ECLOSED);
  close(p[0]);
  close(p[1]);
  treadle_stream_free(a);
  treadle_stream_free(b);
  assert_int_equal(treadle_runtime_free(other), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(descriptors_pass_close_on_exec),
    RT_TEST(too_many_descriptors_are_all_closed),
    RT_TEST(bytes_after_descriptors_are_read),
    RT_TEST(descriptor_misuse),
};

TEST_MAIN(tests)
