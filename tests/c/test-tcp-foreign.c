/* A socket or async fd belongs to the runtime it was made on: a task of
 * another runtime that polls it gets TREADLE_EFOREIGN at once instead of
 * waiting on a driver that may never run (issue 13). And the address
 * helpers the bindings share: treadle_sockaddr_host and _format. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include "harness.h"

/* What a task of runtime B tries on runtime A's objects: each leaf must
 * be READY at its first poll (a PENDING one counts as 1, not an error).
 * Tasks may run on workers: they record, the test's thread asserts. */
typedef struct {
  treadle_tcp_listener_t *l;
  treadle_tcp_stream_t *s;
  treadle_async_fd_t *fd;
  treadle_handle_t *a; /* for a connect future made with A's handle */
  treadle_err_t accept_err, read_err, fd_err, connect_err;
  bool got_stream;
} foreign_t;

/* The leaf's error if it was READY, else 1. */
#define AT_ONCE(call) ((call) == TREADLE_READY ? err : 1)

static treadle_poll_t foreign_poll(treadle_cx_t *cx, void *st) {
  foreign_t *f = *(foreign_t **)st; /* the test's own, not a copy */
  treadle_tcp_stream_t *out = NULL;
  char buf[8];
  size_t n;
  treadle_err_t err = 0;
  f->accept_err = AT_ONCE(treadle_tcp_accept_poll(f->l, cx, &out, NULL, &err));
  f->got_stream = out != NULL;
  f->read_err = AT_ONCE(treadle_tcp_read_poll(f->s, cx, buf, sizeof buf, &n, &err));
  f->fd_err = AT_ONCE(treadle_async_fd_read_poll(f->fd, cx, buf, sizeof buf, &n, &err));
  treadle_tcp_connect_t c;
  f->connect_err = treadle_tcp_connect_init(&c, f->a, "127.0.0.1", 9);
  if (f->connect_err == 0) {
    f->connect_err = AT_ONCE(treadle_tcp_connect_poll(&c, cx, &out, &err));
    treadle_tcp_connect_drop(&c);
  }
  return TREADLE_READY;
}

/* Connects to `port` on runtime A (a task of A's). */
typedef struct {
  int port;
  treadle_tcp_connect_t c;
  bool started;
  treadle_tcp_stream_t **out;
} dial_t;

static treadle_poll_t dial_poll(treadle_cx_t *cx, void *st) {
  dial_t *d = st;
  treadle_err_t err;
  if (!d->started) {
    err = treadle_tcp_connect_init(&d->c, treadle_cx_handle(cx), "127.0.0.1",
                                   d->port);
    if (err != 0) {
      treadle_cx_set_output(cx, err, NULL);
      return TREADLE_READY;
    }
    d->started = true;
  }
  if (treadle_tcp_connect_poll(&d->c, cx, d->out, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void dial_drop(void *st) {
  dial_t *d = st;
  if (d->started)
    treadle_tcp_connect_drop(&d->c);
}

static void objects_of_another_runtime_fail_at_once(void **state) {
  (void)state;
  treadle_runtime_t *a = test_runtime(), *b = test_runtime();
  treadle_handle_t *ha = treadle_runtime_handle(a);
  treadle_tcp_listener_t *l = NULL;
  assert_int_equal(treadle_tcp_bind(ha, "127.0.0.1", 0, NULL, &l), 0);
  struct sockaddr_storage addr;
  assert_int_equal(treadle_tcp_listener_addr(l, &addr), 0);
  char host[TREADLE_HOST_LEN];
  int port = treadle_sockaddr_host(&addr, host);
  assert_true(port > 0);
  treadle_tcp_stream_t *s = NULL;
  static const treadle_task_vtable_t dial_vt = {.poll = dial_poll,
                                                .drop = dial_drop};
  dial_t d = {.port = port, .out = &s};
  assert_int_equal(RUN(a, &dial_vt, d), 0);
  assert_non_null(s);
  int fds[2];
  assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  treadle_async_fd_t *fd = NULL;
  assert_int_equal(treadle_async_fd_new(ha, fds[0], &fd), 0);

  static const treadle_task_vtable_t vt = {.poll = foreign_poll};
  foreign_t f = {.l = l, .s = s, .fd = fd, .a = ha};
  foreign_t *fp = &f;
  assert_int_equal(RUN(b, &vt, fp), 0);
  assert_false(f.got_stream);
  assert_int_equal(f.accept_err, TREADLE_EFOREIGN);
  assert_int_equal(f.read_err, TREADLE_EFOREIGN);
  assert_int_equal(f.fd_err, TREADLE_EFOREIGN);
  assert_int_equal(f.connect_err, TREADLE_EFOREIGN);
  assert_string_equal(treadle_err_name(TREADLE_EFOREIGN), "EFOREIGN");

  treadle_async_fd_free(fd);
  close(fds[1]);
  treadle_tcp_stream_free(s);
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(b), 0);
  assert_int_equal(treadle_runtime_free(a), 0);
}

static void sockaddr_host_and_format(void **state) {
  (void)state;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
  v4->sin_family = AF_INET;
  v4->sin_port = htons(8080);
  inet_pton(AF_INET, "10.1.2.3", &v4->sin_addr);
  char host[TREADLE_HOST_LEN], buf[64];
  assert_int_equal(treadle_sockaddr_host(&ss, host), 8080);
  assert_string_equal(host, "10.1.2.3");
  assert_int_equal(treadle_sockaddr_format(&ss, buf, sizeof buf), 8080);
  assert_string_equal(buf, "10.1.2.3:8080");

  memset(&ss, 0, sizeof ss);
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(443);
  inet_pton(AF_INET6, "::ffff:255.255.255.255", &v6->sin6_addr);
  assert_int_equal(treadle_sockaddr_host(&ss, host), 443);
  assert_string_equal(host, "::ffff:255.255.255.255"); /* v4-mapped */
  inet_pton(AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &v6->sin6_addr);
  assert_int_equal(treadle_sockaddr_format(&ss, buf, sizeof buf), 443);
  assert_string_equal(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:443");
  assert_int_equal(treadle_sockaddr_format(&ss, buf, 6), 443);
  assert_string_equal(buf, "[ffff"); /* truncated, terminated */

  ss.ss_family = AF_UNIX;
  assert_int_equal(treadle_sockaddr_host(&ss, host), TREADLE_EINVAL);
  assert_string_equal(host, "");
  assert_int_equal(treadle_sockaddr_host(NULL, host), TREADLE_EINVAL);
  assert_int_equal(treadle_sockaddr_host(&ss, NULL), TREADLE_EINVAL);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(objects_of_another_runtime_fail_at_once),
    TEST(sockaddr_host_and_format),
};

TEST_MAIN(tests)
