/* System calls fail too (issue 17, TESTING.md "System-call faults"): each
 * case runs one scenario of tests/c/scenario_util.c under the LD_PRELOAD
 * shim (syscall_shim.c), with the fault spec that CMakeLists.txt gives it
 * in TREADLE_FAULT, and checks the outcome: the scenario succeeds with
 * every byte checked (a retried fault) or fails with the documented error,
 * the fault was made at least once, and the leak audit finds every fd and
 * thread back. A hang is ctest's timeout. */
#include <dlfcn.h>
#include <sys/wait.h>

#include "scenario_util.h"

/* How many faults the shim made (it is preloaded, not linked). */
static unsigned long faults_made(void) {
  unsigned long (*fn)(void) =
      (unsigned long (*)(void))dlsym(RTLD_DEFAULT, "treadle_fault_injected");
  if (fn == NULL)
    fail_msg("the shim is not preloaded (LD_PRELOAD)");
  return fn();
}

static void expect(treadle_err_t (*scenario)(treadle_runtime_t *),
                   treadle_err_t want) {
  treadle_runtime_t *rt = test_runtime();
  treadle_err_t err = scenario(rt);
  assert_int_equal(treadle_runtime_free(rt), 0);
  if (err != want)
    fprintf(stderr, "fault: %s gave %s, not %s\n", getenv("TREADLE_FAULT"),
            treadle_err_name(err), treadle_err_name(want));
  assert_int_equal(err, want);
  unsigned long n = faults_made();
  printf("fault: %s: %lu faults, outcome %s\n", getenv("TREADLE_FAULT"), n,
         err == 0 ? "ok" : treadle_err_name(err));
  assert_true(n > 0);
}

/* Every child this process started has been reaped. */
static void wait_children_gone(void) {
  for (int i = 0; i < 5000; i++) {
    if (waitpid(-1, NULL, WNOHANG) < 0)
      return;
    test_sleep_ms(1);
  }
  fail_msg("a child was left");
}

static void echo_ok(void **state) {
  (void)state;
  expect(scenario_tcp, 0);
}

static void echo_reset(void **state) {
  (void)state;
  expect(scenario_tcp, TREADLE_ECONNRESET);
}

static void echo_timed_out(void **state) {
  (void)state;
  expect(scenario_tcp, TREADLE_ETIMEDOUT);
}

static void echo_out_of_memory(void **state) {
  (void)state;
  expect(scenario_tcp, TREADLE_ENOMEM);
}

static void accept_loop_ok(void **state) {
  (void)state;
  expect(scenario_accept_loop, 0);
}

static void udp_ok(void **state) {
  (void)state;
  expect(scenario_udp, 0);
}

static void process_ok(void **state) {
  (void)state;
  expect(scenario_process, 0);
  wait_children_gone();
}

static void timers_ok(void **state) {
  (void)state;
  expect(scenario_timers, 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(echo_ok),
    RT_TEST(echo_reset),
    RT_TEST(echo_timed_out),
    RT_TEST(echo_out_of_memory),
    RT_TEST(accept_loop_ok),
    RT_TEST(udp_ok),
    RT_TEST(process_ok),
    RT_TEST(timers_ok),
};

TEST_MAIN(tests)
