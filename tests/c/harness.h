/* Shared test harness: cmocka plus the runtime flavor matrix and a leak
 * audit (fds and threads back to baseline after every test).
 *
 * Each test file lists its cases in a `tests[]` array with TEST(name) or
 * RT_TEST(name); CMake reads those lines and registers one ctest entry per
 * case (and per flavor for RT_TEST), so each case runs in its own process
 * with a timeout (libuv test/test-list.h). */
#ifndef TREADLE_TEST_HARNESS_H
#define TREADLE_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the four headers above first. */
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "treadle.h"

#define TEST(name) cmocka_unit_test_setup_teardown(name, test_setup, test_teardown)
/* A runtime test: runs once per flavor in TREADLE_TEST_FLAVOR. */
#define RT_TEST(name) TEST(name)

int test_setup(void **state);
int test_teardown(void **state);
int test_main(int argc, char **argv, const struct CMUnitTest *tests,
              size_t count);

/* The flavor under test: "ct" (default), "mt1" or "mt4". */
const char *test_flavor(void);
/* A runtime of the flavor under test with every driver enabled. */
treadle_runtime_t *test_runtime(void);
/* A builder of the flavor under test (no drivers enabled). */
treadle_builder_t *test_builder(void);
/* n scaled by TREADLE_TEST_SCALE (at least 1): stress counts shrink under
 * valgrind and the sanitizers. */
unsigned long test_scale(unsigned long n);
/* This process's resident memory, KiB. */
long test_rss_kib(void);

/* A runtime of the flavor under test with timers and without I/O. */
treadle_runtime_t *test_runtime_without_io(void);
/* How many file descriptors the process has open. */
int test_open_fds(void);
/* True when the machine has an IPv6 loopback (::1 can be bound). */
bool test_have_ipv6(void);

/* A deadline for one wait in a task: test_within polls step(cx, st)
 * until it is READY (*err = 0) or `ms` milliseconds have passed since the
 * first call (*err = TREADLE_ETIMEDOUT); PENDING meanwhile. Drop
 * d->sleep in the task's drop, or after READY. Zero-initialise it. */
typedef struct {
  treadle_sleep_t sleep;
  bool armed;
} test_deadline_t;
treadle_poll_t test_within(test_deadline_t *d, long ms, treadle_cx_t *cx,
                           treadle_poll_fn step, void *st,
                           treadle_err_t *err);

/* Makes a new, empty directory for the case's files (mkdtemp under /tmp)
 * and writes its path into dir. The case removes what it made there, then
 * the directory (rmdir, which fails if anything was left). */
void test_tmpdir(char dir[64]);

/* Sleeps the calling thread for `ms` milliseconds. */
void test_sleep_ms(long ms);

/* A 1 ms pause inside a task: test_pause_done is false (the task returns
 * PENDING) until it passed. Drop p->sleep in the task's drop. */
typedef struct {
  treadle_sleep_t sleep;
  bool armed;
} test_pause_t;
bool test_pause_done(test_pause_t *p, treadle_cx_t *cx);

/* A task that completes once flags[0..n) are all set (it looks every
 * millisecond): "wait until every other task got to its wait". */
typedef struct {
  _Atomic int *flags;
  int n;
  test_pause_t pause;
} test_until_flags_t;
extern const treadle_task_vtable_t test_until_flags_vt;

#define RUN(rt, vt, st) \
  treadle_runtime_block_on((rt), (vt), &(st), sizeof(st), NULL)

#define TEST_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TEST_MAIN(tests)                                                       \
  int main(int argc, char **argv) {                                            \
    return test_main(argc, argv, tests, TEST_ARRAY_LEN(tests));                \
  }

#endif
