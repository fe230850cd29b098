/* TCP listeners: bind and its errors (hosts, ports and backlogs that are
 * refused, a port in use, reuse_port), a runtime without I/O, and accept
 * backing off when the process runs out of file descriptors (in a child
 * process). The harness checks after every case that every fd was closed. No
 * assertion depends on timing. */
#define _GNU_SOURCE
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "net_util.h"

/* ------------------------------------------------------------- bind */

static void bind_reports_a_port(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  char buf[64], want[64];
  struct sockaddr_storage a;

  int port;
  treadle_tcp_listener_t *l4 = listen_on(h, "127.0.0.1", &port);
  assert_int_equal(treadle_tcp_listener_addr(l4, &a), 0);
  assert_int_equal(a.ss_family, AF_INET);
  assert_int_equal(treadle_sockaddr_format(&a, buf, sizeof buf), port);
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  assert_string_equal(buf, want);

  /* "localhost" needs no resolver to bind. */
  int lport;
  treadle_tcp_listener_t *lh = listen_on(h, "localhost", &lport);
  assert_true(lport != port);
  assert_int_equal(treadle_tcp_listener_addr(lh, &a), 0);
  assert_true(a.ss_family == AF_INET || a.ss_family == AF_INET6);

  /* An explicit port: the one just seen, once freed. */
  treadle_tcp_listener_free(lh);
  treadle_tcp_listener_t *lp = NULL;
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", lport, NULL, &lp), 0);
  assert_int_equal(treadle_tcp_listener_addr(lp, &a), 0);
  assert_int_equal(addr_port(&a), lport);
  treadle_tcp_listener_free(lp);

  if (test_have_ipv6()) {
    int port6;
    treadle_tcp_listener_t *l6 = listen_on(h, "::1", &port6);
    assert_int_equal(treadle_tcp_listener_addr(l6, &a), 0);
    assert_int_equal(a.ss_family, AF_INET6);
    assert_int_equal(treadle_sockaddr_format(&a, buf, sizeof buf), port6);
    snprintf(want, sizeof want, "[::1]:%d", port6);
    assert_string_equal(buf, want);
    treadle_tcp_listener_free(l6);
  } else {
    fprintf(stderr, "no IPv6 loopback: skipping ::1\n");
  }
  treadle_tcp_listener_free(l4);
  treadle_tcp_listener_free(NULL);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void bind_rejects_bad_input(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_tcp_listener_t *l;
  const char *hosts[] = {"not-an-ip", "300.1.1.1",  "1.2.3",
                         "::g",       "127.0.0.1 ", "example.com"};
  for (size_t i = 0; i < TEST_ARRAY_LEN(hosts); i++) {
    l = (treadle_tcp_listener_t *)1;
    assert_int_equal(treadle_tcp_bind(h, hosts[i], 0, NULL, &l),
                     TREADLE_EINVAL);
  }
  const int ports[] = {-1, 65536, INT_MIN, INT_MAX};
  for (size_t i = 0; i < TEST_ARRAY_LEN(ports); i++)
    assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", ports[i], NULL, &l),
                     TREADLE_EINVAL);
  const int backlogs[] = {0, -1, 65536};
  for (size_t i = 0; i < TEST_ARRAY_LEN(backlogs); i++) {
    treadle_tcp_bind_opts_t o = TREADLE_TCP_BIND_OPTS_INIT;
    o.backlog = backlogs[i];
    assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, &o, &l),
                     TREADLE_EINVAL);
  }
  /* The limits themselves are fine. */
  const int good_backlogs[] = {1, 65535};
  for (size_t i = 0; i < TEST_ARRAY_LEN(good_backlogs); i++) {
    treadle_tcp_bind_opts_t o = TREADLE_TCP_BIND_OPTS_INIT;
    o.backlog = good_backlogs[i];
    assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, &o, &l), 0);
    treadle_tcp_listener_free(l);
  }
  assert_int_equal(treadle_tcp_bind(NULL, "127.0.0.1", 0, NULL, &l),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, NULL, NULL),
                   TREADLE_EINVAL);

  /* Connect's own checks. */
  treadle_tcp_connect_t c;
  const int cports[] = {0, -1, 65536};
  for (size_t i = 0; i < TEST_ARRAY_LEN(cports); i++)
    assert_int_equal(treadle_tcp_connect_init(&c, h, "127.0.0.1", cports[i]),
                     TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_connect_init(NULL, h, "127.0.0.1", 80),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_connect_init(&c, NULL, "127.0.0.1", 80),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_connect_init(&c, h, NULL, 80), TREADLE_EINVAL);
  treadle_tcp_connect_drop(NULL);

  /* Formatting a family other than IPv4/IPv6. */
  struct sockaddr_storage un;
  memset(&un, 0, sizeof un);
  un.ss_family = AF_UNIX;
  char buf[32] = "x";
  assert_int_equal(treadle_sockaddr_format(&un, buf, sizeof buf),
                   TREADLE_EINVAL);
  /* NULL streams and listeners are refused, not dereferenced. */
  struct sockaddr_storage a;
  assert_int_equal(treadle_tcp_listener_addr(NULL, &a), TREADLE_EINVAL);
  assert_int_equal(treadle_tcp_listener_fd_exhaustions(NULL), 0);
  treadle_tcp_listener_close(NULL);
  treadle_tcp_stream_close(NULL);
  treadle_tcp_stream_free(NULL);
  assert_true(treadle_tcp_shutdown(NULL) < 0);
  assert_true(treadle_tcp_set_nodelay(NULL, true) < 0);
  assert_true(treadle_tcp_local_addr(NULL, &a) < 0);
  assert_true(treadle_tcp_peer_addr(NULL, &a) < 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void bind_twice_is_addr_in_use(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int port;
  treadle_tcp_listener_t *a = listen_on(h, "127.0.0.1", &port);
  treadle_tcp_listener_t *b = (treadle_tcp_listener_t *)1;
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", port, NULL, &b),
                   TREADLE_EADDRINUSE);
  assert_string_equal(treadle_err_name(TREADLE_EADDRINUSE), "EADDRINUSE");
  /* Asking for reuse_port does not help when the first did not. */
  treadle_tcp_bind_opts_t rp = TREADLE_TCP_BIND_OPTS_INIT;
  rp.reuse_port = true;
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", port, &rp, &b),
                   TREADLE_EADDRINUSE);
  treadle_tcp_listener_free(a);

  /* With reuse_port on both, two listeners share one port. */
  treadle_tcp_listener_t *r1 = NULL, *r2 = NULL;
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", 0, &rp, &r1), 0);
  struct sockaddr_storage s1, s2;
  assert_int_equal(treadle_tcp_listener_addr(r1, &s1), 0);
  int p1 = addr_port(&s1);
  assert_int_equal(treadle_tcp_bind(h, "127.0.0.1", p1, &rp, &r2), 0);
  assert_int_equal(treadle_tcp_listener_addr(r2, &s2), 0);
  assert_int_equal(addr_port(&s2), p1);
  /* The shared port takes connections. */
  int fd = plain_connect(p1, 0);
  close(fd);
  treadle_tcp_listener_free(r1);
  treadle_tcp_listener_free(r2);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------ runtime without I/O */

static void runtime_without_io_says_so(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime_without_io();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_tcp_listener_t *l = (treadle_tcp_listener_t *)1;
  treadle_err_t err = treadle_tcp_bind(h, "127.0.0.1", 0, NULL, &l);
  assert_int_equal(err, TREADLE_ENOIO);
  assert_string_equal(treadle_strerror(err),
                      "I/O is disabled: build the runtime with enable_io");
  assert_string_equal(treadle_err_name(err), "ENOIO");
  treadle_tcp_connect_t c;
  assert_int_equal(treadle_tcp_connect_init(&c, h, "127.0.0.1", 80),
                   TREADLE_ENOIO);
  assert_int_equal(treadle_tcp_connect_init(&c, h, "localhost", 80),
                   TREADLE_ENOIO);
  treadle_signal_t s;
  assert_int_equal(treadle_signal_init(&s, h, SIGUSR1), TREADLE_ENOIO);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ---------------------------------------------------------------- EMFILE */

#define CHILD_CHECK(c)                                                         \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "child: %s:%d: %s\n", __FILE__, __LINE__, #c);           \
      _exit(3);                                                                \
    }                                                                          \
  } while (0)

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1; /* the directory's own */
}

/* valgrind closes an over-limit fd itself: each back-off eats one. */
#define EMFILE_CLIENTS 24
#define EMFILE_ROOM 4

typedef struct {
  char echoed[2][5]; /* the messages echoed after recovery */
  uint64_t exhaustions_before_free;
} emfile_result_t;

typedef struct {
  treadle_tcp_listener_t *l;
  emfile_result_t *res;
  treadle_tcp_stream_t *acc[EMFILE_CLIENTS];
  unsigned n_acc, target, echo_idx;
  int phase;
  size_t got, done;
  char buf[5];
} emfile_server_t;

static emfile_server_t *emfile_state;

static treadle_poll_t emfile_poll(treadle_cx_t *cx, void *st) {
  emfile_server_t *s = st;
  emfile_state = s; /* for the alarm's message */
  treadle_err_t err;
  while (s->phase < 2) {
    treadle_tcp_stream_t *c;
    if (s->phase == 1 && s->n_acc == s->target) {
      s->phase = 2;
      break;
    }
    if (treadle_tcp_accept_poll(s->l, cx, &c, NULL, &err) == TREADLE_READY) {
      if (err != 0)
        fprintf(stderr, "child: accept: %s\n", treadle_err_name(err));
      CHILD_CHECK(err == 0);
      CHILD_CHECK(s->n_acc < EMFILE_CLIENTS);
      s->acc[s->n_acc++] = c;
      continue;
    }
    /* Pending: the listener is out of fds and waits, or nothing queued. */
    if (s->phase == 0 && treadle_tcp_listener_fd_exhaustions(s->l) > 0) {
      /* Every descriptor went; free two. */
      s->res->exhaustions_before_free =
          treadle_tcp_listener_fd_exhaustions(s->l);
      CHILD_CHECK(s->n_acc >= 2);
      CHILD_CHECK(s->n_acc < EMFILE_CLIENTS);
      treadle_tcp_stream_free(s->acc[0]);
      treadle_tcp_stream_free(s->acc[1]);
      s->acc[0] = s->acc[1] = NULL;
      s->target = s->n_acc + 2;
      s->phase = 1;
      continue;
    }
    return TREADLE_PENDING;
  }
  /* Echo 4 bytes on each of the two accepted after recovery. */
  while (s->echo_idx < 2) {
    treadle_tcp_stream_t *c = s->acc[s->target - 2 + s->echo_idx];
    while (s->got < 4) {
      size_t n;
      if (treadle_tcp_read_poll(c, cx, s->buf + s->got, 4 - s->got, &n, &err) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      CHILD_CHECK(err == 0 && n > 0);
      s->got += n;
    }
    if (treadle_tcp_write_all_poll(c, cx, s->buf, 4, &s->done, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    CHILD_CHECK(err == 0);
    memcpy(s->res->echoed[s->echo_idx], s->buf, 4);
    s->echo_idx++;
    s->got = s->done = 0;
  }
  return TREADLE_READY;
}

static void emfile_drop(void *st) {
  emfile_server_t *s = st;
  for (unsigned i = 0; i < s->n_acc; i++)
    treadle_tcp_stream_free(s->acc[i]);
}

static const treadle_task_vtable_t emfile_vt = {.poll = emfile_poll,
                                                .drop = emfile_drop};

/* Says where the child was when its alarm fires. */
static void emfile_alarm(int sig) {
  char msg[160];
  emfile_server_t *s = emfile_state;
  int n = snprintf(
      msg, sizeof msg,
      "child: alarm: phase %d, accepted %u, target %u, "
      "echoed %u, exhaustions %llu\n",
      s ? s->phase : -1, s ? s->n_acc : 0, s ? s->target : 0,
      s ? s->echo_idx : 0,
      s ? (unsigned long long)treadle_tcp_listener_fd_exhaustions(s->l) : 0ULL);
  ssize_t w = write(2, msg, (size_t)n);
  (void)w;
  (void)sig;
  _exit(5);
}

static void emfile_child(void) {
  /* Generous: under valgrind on a loaded machine the child is slow. */
  signal(SIGALRM, emfile_alarm);
  alarm(test_scale(100) < 100 ? 120 : 20);
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  /* The clients connect (the backlog holds them) and send their message
   * before the limit drops. */
  int clients[EMFILE_CLIENTS];
  for (int i = 0; i < EMFILE_CLIENTS; i++) {
    clients[i] = plain_connect(port, 0);
    char msg[5];
    snprintf(msg, sizeof msg, "m%02d", i);
    CHILD_CHECK(write(clients[i], msg, 4) == 4);
    struct timeval tv = {10, 0};
    setsockopt(clients[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  struct rlimit rl;
  CHILD_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  rl.rlim_cur = (rlim_t)open_fds() + EMFILE_ROOM;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    fprintf(stderr, "child: setrlimit: %s\n", strerror(errno));
    _exit(4);
  }
  emfile_result_t res;
  memset(&res, 0, sizeof res);
  emfile_server_t s = {.l = l, .res = &res};
  CHILD_CHECK(RUN(rt, &emfile_vt, s) == 0);
  CHILD_CHECK(res.exhaustions_before_free > 0);
  CHILD_CHECK(treadle_tcp_listener_fd_exhaustions(l) >=
              res.exhaustions_before_free);
  /* The two served after recovery echoed their client's message. */
  for (int k = 0; k < 2; k++) {
    int i = atoi(res.echoed[k] + 1);
    CHILD_CHECK(res.echoed[k][0] == 'm' && i >= 0 && i < EMFILE_CLIENTS);
    char back[5] = {0};
    CHILD_CHECK(read(clients[i], back, 4) == 4);
    CHILD_CHECK(memcmp(back, res.echoed[k], 4) == 0);
  }
  for (int i = 0; i < EMFILE_CLIENTS; i++)
    close(clients[i]);
  treadle_tcp_listener_free(l);
  CHILD_CHECK(treadle_runtime_free(rt) == 0);
  _exit(0);
}

static void accept_backs_off_when_out_of_fds(void **state) {
  (void)state;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    emfile_child();
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFSIGNALED(status))
    fprintf(stderr, "child killed by signal %d\n", WTERMSIG(status));
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(bind_reports_a_port),
    TEST(bind_rejects_bad_input),
    TEST(bind_twice_is_addr_in_use),
    RT_TEST(runtime_without_io_says_so),
    RT_TEST(accept_backs_off_when_out_of_fds),
};

TEST_MAIN(tests)
