/* Test harness: flavor matrix, scale, leak audit. */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int test_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

/* A number from a "Name: value" line of /proc/self/status, or -1. */
static long proc_status(const char *format) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long n = -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, format, &n) == 1)
      break;
  fclose(f);
  return n;
}

static int count_threads(void) { return (int)proc_status("Threads: %ld"); }

long test_rss_kib(void) { return proc_status("VmRSS: %ld kB"); }

static int baseline_fds, baseline_threads;

treadle_runtime_t *test_runtime_without_io(void) {
  treadle_builder_t *b = test_builder();
  assert_int_equal(treadle_builder_enable_time(b), 0);
  treadle_runtime_t *rt;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  return rt;
}

bool test_have_ipv6(void) {
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                           .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

treadle_poll_t test_within(test_deadline_t *d, long ms, treadle_cx_t *cx,
                           treadle_poll_fn step, void *st,
                           treadle_err_t *err) {
  if (!d->armed) {
    treadle_sleep_init(&d->sleep, (uint64_t)ms * TREADLE_NSEC_PER_MSEC);
    d->armed = true;
  }
  return treadle_timeout_poll(&d->sleep, cx, step, st, err);
}

void test_tmpdir(char dir[64]) {
  snprintf(dir, 64, "/tmp/treadle-test-XXXXXX");
  assert_non_null(mkdtemp(dir));
}

/* Stores its thread id in *arg. */
static void *noop_thread(void *arg) {
  *(pid_t *)arg = gettid();
  return NULL;
}

/* Sleeps 5 ms at a time, at most 1 s in all, until done() says so. */
static void wait_until(bool (*done)(void *), void *arg) {
  for (int i = 0; i < 200 && !done(arg); i++) {
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* True once the thread's /proc entry is gone: pthread_join can return
 * before the kernel reaps it. */
static bool thread_gone(void *tid) {
  char path[64];
  struct stat st;
  snprintf(path, sizeof path, "/proc/self/task/%d", (int)*(pid_t *)tid);
  return stat(path, &st) != 0;
}

static bool threads_back(void *arg) {
  (void)arg;
  return count_threads() == baseline_threads;
}

int test_setup(void **state) {
  (void)state;
  /* ThreadSanitizer starts a helper thread of its own at the first
   * pthread_create; start it before the baseline is taken. */
  pthread_t th;
  pid_t tid = 0;
  pthread_create(&th, NULL, noop_thread, &tid);
  pthread_join(th, NULL);
  wait_until(thread_gone, &tid); /* else the baseline counts it */
  baseline_fds = test_open_fds();
  baseline_threads = count_threads();
  return 0;
}

int test_teardown(void **state) {
  (void)state;
  /* Threads the runtime started are joined by treadle_runtime_free, but
   * the kernel may take a moment to reap a joined thread's entry. */
  wait_until(threads_back, NULL);
  assert_int_equal(test_open_fds(), baseline_fds);
  assert_int_equal(count_threads(), baseline_threads);
  return 0;
}

const char *test_flavor(void) {
  const char *f = getenv("TREADLE_TEST_FLAVOR");
  return f != NULL && f[0] != '\0' ? f : "ct";
}

treadle_builder_t *test_builder(void) {
  const char *f = test_flavor();
  treadle_builder_t *b = NULL;
  if (strcmp(f, "ct") == 0) {
    assert_int_equal(treadle_builder_new(TREADLE_CURRENT_THREAD, &b), 0);
  } else {
    assert_int_equal(treadle_builder_new(TREADLE_MULTI_THREAD, &b), 0);
    assert_int_equal(
        treadle_builder_worker_threads(b, (unsigned)atoi(f + 2)), 0);
  }
  return b;
}

treadle_runtime_t *test_runtime(void) {
  treadle_builder_t *b = test_builder();
  treadle_runtime_t *rt = NULL;
  assert_int_equal(treadle_builder_enable_all(b), 0);
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  return rt;
}

unsigned long test_scale(unsigned long n) {
  const char *s = getenv("TREADLE_TEST_SCALE");
  double k = s != NULL ? atof(s) : 1.0;
  if (k <= 0)
    k = 1.0;
  unsigned long r = (unsigned long)((double)n * k);
  return r > 0 ? r : 1;
}

int test_main(int argc, char **argv, const struct CMUnitTest *tests,
              size_t count) {
  if (argc > 1)
    cmocka_set_test_filter(argv[1]);
  return _cmocka_run_group_tests(argv[0], tests, count, NULL, NULL);
}

void test_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

bool test_pause_done(test_pause_t *p, treadle_cx_t *cx) {
  if (!p->armed) {
    treadle_sleep_init(&p->sleep, TREADLE_NSEC_PER_MSEC);
    p->armed = true;
  }
  treadle_err_t err;
  if (treadle_sleep_poll(&p->sleep, cx, &err) == TREADLE_PENDING)
    return false;
  assert_int_equal(err, 0);
  p->armed = false;
  return true;
}

static treadle_poll_t until_flags_poll(treadle_cx_t *cx, void *st) {
  test_until_flags_t *u = st;
  for (;;) {
    int k = 0;
    while (k < u->n && atomic_load(&u->flags[k]))
      k++;
    if (k == u->n)
      return TREADLE_READY;
    if (!test_pause_done(&u->pause, cx))
      return TREADLE_PENDING;
  }
}

static void until_flags_drop(void *st) {
  treadle_sleep_drop(&((test_until_flags_t *)st)->pause.sleep);
}

const treadle_task_vtable_t test_until_flags_vt = {.poll = until_flags_poll,
                                                   .drop = until_flags_drop};
