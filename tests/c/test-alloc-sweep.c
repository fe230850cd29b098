/* Every allocation can fail (issue 17, TESTING.md "Allocation sweep").
 *
 * Each scenario builds a runtime, does one kind of work in one task and
 * frees the runtime. The sweep first runs it with alloc.c's counting hook
 * on, which says how many allocations a run makes (its allocation points),
 * then runs it again once for every k, failing the k-th allocation. Each
 * run must end with 0 (the failure was absorbed: a documented retry or
 * degrade) or TREADLE_ENOMEM, free every block it allocated (the
 * allocator's live count is back to zero), and give back every fd; ASan
 * and valgrind check the rest. A SIGALRM watchdog turns a hang into a
 * failure that names the scenario and k. The scenarios are in
 * scenario_util.c. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "scenario_util.h"
#ifdef TREADLE_TEST_TLS
#include "tls_certs.h"
#endif

/* ------------------------------------------------------------ the sweep */

typedef treadle_err_t (*scenario_fn)(treadle_runtime_t *rt);

static const char *hung_name = "";
static long hung_k;

static void on_alarm(int sig) {
  (void)sig;
  char msg[160];
  int n = snprintf(msg, sizeof msg, "alloc-sweep: %s hung failing allocation %ld\n",
                   hung_name, hung_k);
  if (write(2, msg, (size_t)n) < 0) {
  }
  _exit(3);
}

/* Builds a runtime of the flavor under test and runs the scenario on it;
 * the build's own failures count too. */
static treadle_err_t run_once(treadle_builder_t *b, scenario_fn f) {
  treadle_runtime_t *rt = NULL;
  treadle_err_t err = treadle_builder_build(b, &rt);
  if (err != 0) {
    assert_null(rt);
    return err;
  }
  err = f(rt);
  assert_int_equal(treadle_runtime_free(rt), 0);
  return err;
}

/* The sweep itself. Returns the allocation points of one clean run. */
static long sweep(const char *name, scenario_fn f) {
  treadle_builder_t *b = test_builder();
  assert_int_equal(treadle_builder_enable_all(b), 0);
  int fds = test_open_fds();
  signal(SIGALRM, on_alarm);
  hung_name = name;
  hung_k = -1;

  long live = -1;
  alarm(60);
  treadle__alloc_count_start();
  assert_int_equal(run_once(b, f), 0);
  long points = treadle__alloc_count_stop(&live);
  assert_int_equal(live, 0);
  assert_true(points > 0);

  /* Under valgrind and the sanitizers (TREADLE_TEST_SCALE < 1) every
   * stride-th point: 1 / scale. */
  long stride = (long)(test_scale(1000) > 0 ? 1000 / test_scale(1000) : 1);
  long enomem = 0, absorbed = 0, swept = 0;
  for (long k = 0; k < points; k += stride) {
    swept++;
    hung_k = k;
    alarm(60);
    treadle__alloc_count_start();
    treadle__alloc_fail_after(k);
    treadle_err_t err = run_once(b, f);
    bool fired = treadle__alloc_fail_after(-1) < 0;
    /* A child freed while it runs is the process reaper's until it exits
     * (TESTING.md D9): its blocks come back then. */
    for (int i = 0; i < 5000 && treadle__alloc_count_live() != 0; i++)
      test_sleep_ms(1);
    treadle__alloc_count_stop(&live);
    if (err != 0 && err != TREADLE_ENOMEM)
      fprintf(stderr, "alloc-sweep: %s: failing allocation %ld gave %s\n", name,
              k, treadle_err_name(err));
    assert_true(err == 0 || err == TREADLE_ENOMEM);
    if (live != 0)
      fprintf(stderr, "alloc-sweep: %s: failing allocation %ld left %ld blocks\n",
              name, k, live);
    assert_int_equal(live, 0);
    assert_int_equal(test_open_fds(), fds);
    if (err == TREADLE_ENOMEM)
      enomem++;
    else if (fired)
      absorbed++;
  }
  alarm(0);
  treadle_builder_free(b);
  printf("alloc-sweep: %s (%s): %ld allocation points, %ld swept: %ld ENOMEM, "
         "%ld absorbed\n",
         name, test_flavor(), points, swept, enomem, absorbed);
  fflush(stdout);
  return points;
}

/* Every child this process started has been reaped (the reaper may still
 * hold a freed one for a moment). */
static void wait_children_gone(void) {
  for (int i = 0; i < 5000; i++) {
    if (waitpid(-1, NULL, WNOHANG) < 0)
      return;
    test_sleep_ms(1);
  }
  fail_msg("a child was left");
}

/* -------------------------------------------------------------- cases */

static void sweep_spawn_join(void **state) {
  (void)state;
  assert_true(sweep("spawn_join", scenario_spawn_join) > 5);
}

static void sweep_timers(void **state) {
  (void)state;
  assert_true(sweep("timers", scenario_timers) > 3);
}

static void sweep_blocking_pool(void **state) {
  (void)state;
  assert_true(sweep("blocking_pool", scenario_blocking) > 5);
}

static void sweep_tcp_echo(void **state) {
  (void)state;
  assert_true(sweep("tcp_echo", scenario_tcp) > 5);
}

static void sweep_accept_loop(void **state) {
  (void)state;
  assert_true(sweep("accept_loop", scenario_accept_loop) > 5);
}

static void sweep_udp(void **state) {
  (void)state;
  assert_true(sweep("udp", scenario_udp) > 5);
}

static void sweep_process(void **state) {
  (void)state;
  assert_true(sweep("process", scenario_process) > 5);
  wait_children_gone();
}

static void sweep_dns(void **state) {
  (void)state;
  assert_true(sweep("dns", scenario_dns) > 5);
}

/* Both ends of a TLS connection (scenario_tls), with the TLS tests'
 * certificates. Only treadle's allocations fail: OpenSSL's own go to
 * libc's malloc (CRYPTO_set_mem_functions would have to come before
 * OpenSSL's first allocation, which the test harness cannot promise). */
static void sweep_tls(void **state) {
  (void)state;
#ifdef TREADLE_TEST_TLS
  tls_certs_t certs;
  tls_certs_make(&certs);
  scenario_tls_ca = certs.ca;
  scenario_tls_cert = certs.server;
  scenario_tls_key = certs.server_key;
  assert_true(sweep("tls", scenario_tls) > 5);
  tls_certs_remove(&certs);
#else
  skip(); /* built without TLS */
#endif
}

static const struct CMUnitTest tests[] = {
    RT_TEST(sweep_spawn_join),
    RT_TEST(sweep_timers),
    RT_TEST(sweep_blocking_pool),
    RT_TEST(sweep_tcp_echo),
    RT_TEST(sweep_accept_loop),
    RT_TEST(sweep_udp),
    RT_TEST(sweep_process),
    RT_TEST(sweep_dns),
    RT_TEST(sweep_tls),
};

TEST_MAIN(tests)
