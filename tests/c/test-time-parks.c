/* A runtime that only waits must not wake up (issue 18): a sleep, a
 * timeout around a read, and a sleep moved by treadle_sleep_reset each
 * cost the driver a few parks, at most two per wheel level the timer
 * passes through, never a number that grows with the duration. Counted
 * with the runtime's driver_parks metric, on the virtual clock (every
 * level, beyond the wheel's span) and on the real one (the lower levels:
 * a test cannot wait for days). */
#define _GNU_SOURCE
#include "harness.h"
#include "internal.h"

#include <fcntl.h>
#include <unistd.h>

#define MS TREADLE_NSEC_PER_MSEC

static uint64_t driver_parks(treadle_runtime_t *rt) {
  treadle_runtime_metrics_t m;
  assert_int_equal(treadle_handle_metrics(treadle_runtime_handle(rt), &m), 0);
  return m.driver_parks;
}

static treadle__time_t *time_of(treadle_runtime_t *rt) {
  return &treadle_runtime_handle(rt)->driver.time;
}

/* The levels a timer `ticks` ahead passes through on its way down (the
 * wheel puts it at the level of its highest differing 6-bit digit, at
 * most the top one), plus the turns of the top level it waits out when
 * it lies beyond the wheel's span. */
static uint64_t levels_crossed(uint64_t ticks) {
  uint64_t levels = 1;
  for (uint64_t span = TREADLE__WHEEL_SLOTS;
       levels < TREADLE__WHEEL_LEVELS && ticks >= span;
       span *= TREADLE__WHEEL_SLOTS)
    levels++;
  return levels + ticks / TREADLE__WHEEL_SPAN;
}

/* The bound of the issue: two parks per level crossed, plus the few that
 * starting and waking a worker may cost. */
static uint64_t park_bound(uint64_t duration_ns) {
  return 2 * levels_crossed(duration_ns / MS + 1) + 3;
}

/* A spinning driver never lets a virtual clock move: a watchdog thread
 * turns that hang into a failure that says so. */
typedef struct {
  treadle_runtime_t *rt;
  uint64_t limit;
  _Atomic bool stop;
  pthread_t thread;
} watchdog_t;

static void *watchdog_main(void *arg) {
  watchdog_t *w = arg;
  while (!atomic_load(&w->stop)) {
    uint64_t parks = driver_parks(w->rt);
    if (parks > w->limit) {
      fprintf(stderr, "the driver spins: %llu parks (limit %llu)\n",
              (unsigned long long)parks, (unsigned long long)w->limit);
      abort();
    }
    test_sleep_ms(2);
  }
  return NULL;
}

static void watchdog_start(watchdog_t *w, treadle_runtime_t *rt) {
  w->rt = rt;
  w->limit = driver_parks(rt) + 10000;
  atomic_init(&w->stop, false);
  assert_int_equal(pthread_create(&w->thread, NULL, watchdog_main, w), 0);
}

static void watchdog_stop(watchdog_t *w) {
  atomic_store(&w->stop, true);
  assert_int_equal(pthread_join(w->thread, NULL), 0);
}

/* ------------------------------------------------------- the three waits */

/* Waits on one of three things until `deadline`:
 * SLEEP:   a sleep;
 * TIMEOUT: a read of a pipe nobody writes to, under treadle_timeout_poll;
 * RESET:   a sleep first set to `first`, moved to `deadline` by
 *          treadle_sleep_reset once a 10 ms sleep has passed. */
typedef enum { SLEEP, TIMEOUT, RESET } wait_kind_t;

typedef struct {
  wait_kind_t kind;
  treadle__time_t *tm;
  uint64_t deadline, first;
  treadle_sleep_t sleep, kick;
  bool started, kicked;
  treadle_async_fd_t *fd;
  char buf[8];
  uint64_t parks_at_first_wait; /* driver_parks when it first waited */
  /* Out (asserted by the test's thread: a task may run on a worker). */
  uint64_t *woke_at; /* the driver's clock when the wait ended */
  treadle_err_t *err; /* the wait's result (a kick's error, if any) */
  uint64_t *parks;    /* driver parks from the first wait to the end: the
                         wait's own, not block_on's start-up */
} waiter_t;

static uint64_t parks_of(treadle_cx_t *cx) {
  treadle_runtime_metrics_t m;
  treadle_handle_metrics(treadle_cx_handle(cx), &m);
  return m.driver_parks;
}

static treadle_poll_t read_pipe(treadle_cx_t *cx, void *st) {
  waiter_t *w = st;
  size_t n;
  treadle_err_t err;
  return treadle_async_fd_read_poll(w->fd, cx, w->buf, sizeof w->buf, &n,
                                    &err);
}

static treadle_poll_t waiter_poll(treadle_cx_t *cx, void *st) {
  waiter_t *w = st;
  uint64_t now = treadle__time_now(w->tm);
  if (!w->started) {
    w->started = true;
    treadle_sleep_until_init(&w->sleep,
                             w->kind == RESET ? w->first : w->deadline);
    treadle_sleep_until_init(&w->kick, now + 10 * MS);
  }
  treadle_err_t err = 0;
  if (w->kind == RESET && !w->kicked) {
    if (treadle_sleep_poll(&w->kick, cx, &err) == TREADLE_READY) {
      w->kicked = true;
      if (err != 0) {
        *w->err = err;
        return TREADLE_READY;
      }
      treadle_sleep_reset(&w->sleep, w->deadline);
    }
  }
  treadle_poll_t p =
      w->kind == TIMEOUT
          ? treadle_timeout_poll(&w->sleep, cx, read_pipe, w, &err)
          : treadle_sleep_poll(&w->sleep, cx, &err);
  if (p == TREADLE_PENDING) {
    if (w->parks_at_first_wait == 0)
      w->parks_at_first_wait = parks_of(cx) + 1; /* + 1: never 0 */
    return TREADLE_PENDING;
  }
  /* A reset's sleep must not end before the kick moved it. */
  *w->err = w->kind == RESET && !w->kicked ? TREADLE_EINVAL : err;
  *w->woke_at = treadle__time_now(w->tm);
  *w->parks = w->parks_at_first_wait == 0
                  ? 0
                  : parks_of(cx) + 1 - w->parks_at_first_wait;
  return TREADLE_READY;
}

static void waiter_drop(void *st) {
  waiter_t *w = st;
  treadle_sleep_drop(&w->sleep);
  treadle_sleep_drop(&w->kick);
}

static const treadle_task_vtable_t waiter_vt = {.poll = waiter_poll,
                                                .drop = waiter_drop};

/* Runs one wait of `duration_ns` (for RESET: moved there from `first_ns`)
 * and checks the parks it cost and when it ended. */
static void wait_once(treadle_runtime_t *rt, wait_kind_t kind,
                      uint64_t duration_ns, uint64_t first_ns) {
  treadle__time_t *tm = time_of(rt);
  int pipe_fds[2] = {-1, -1};
  waiter_t w = {.kind = kind, .tm = tm};
  if (kind == TIMEOUT) {
    assert_int_equal(pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(
        treadle_async_fd_new(treadle_runtime_handle(rt), pipe_fds[0], &w.fd),
        0);
  }
  uint64_t woke_at = 0, parks = 0;
  treadle_err_t err = 1;
  w.woke_at = &woke_at;
  w.err = &err;
  w.parks = &parks;
  uint64_t start = treadle__time_now(tm);
  w.deadline = start + duration_ns;
  w.first = start + first_ns;
  assert_int_equal(RUN(rt, &waiter_vt, w), 0);
  assert_int_equal(err, kind == TIMEOUT ? TREADLE_ETIMEDOUT : 0);
  /* A reset waits out the 10 ms kick and then the rest, on its own
   * levels; its first deadline only ever needed the parks to the kick. */
  uint64_t bound = park_bound(duration_ns);
  if (kind == RESET)
    bound += park_bound(10 * MS);
  printf("kind %d: %llu ms: %llu parks (bound %llu)\n", (int)kind,
         (unsigned long long)(duration_ns / MS), (unsigned long long)parks,
         (unsigned long long)bound);
  assert_true(parks <= bound);
  assert_true(woke_at >= w.deadline); /* never early */
  if (treadle__time_paused(tm))
    assert_true(woke_at - w.deadline < MS); /* the next tick, exactly */
  if (kind == TIMEOUT) {
    treadle_async_fd_free(w.fd);
    close(pipe_fds[1]);
  }
}

/* Durations at both ends of every level (64^l ms), one beyond the span. */
static const uint64_t virtual_ms[] = {
    1,         2,           63,           64,           65,
    1000,      4095,        4096,         4097,         100000,
    262143,    262144,      262145,       16777215,     16777216,
    16777217,  1073741823,  1073741824,   1073741825,   60000000000ull,
    68719476735ull, 68719476736ull, 68719476737ull, 3 * 68719476736ull + 5,
};

static treadle_runtime_t *paused_runtime(void) {
  treadle_runtime_t *rt = test_runtime();
  treadle__time_pause(time_of(rt));
  return rt;
}

static void virtual_clock_waits(wait_kind_t kind) {
  treadle_runtime_t *rt = paused_runtime();
  watchdog_t dog;
  watchdog_start(&dog, rt);
  for (size_t i = 0; i < TEST_ARRAY_LEN(virtual_ms); i++) {
    uint64_t d = virtual_ms[i] * MS;
    if (kind != RESET) {
      wait_once(rt, kind, d, 0);
    } else if (d > 20 * MS) {
      /* Later: from 20 ms to d. Earlier: from twice d to d. */
      wait_once(rt, RESET, d, 20 * MS);
      wait_once(rt, RESET, d, 2 * d);
    }
  }
  watchdog_stop(&dog);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void sleeps_park_a_few_times_on_the_virtual_clock(void **state) {
  (void)state;
  virtual_clock_waits(SLEEP);
}

static void timeouts_park_a_few_times_on_the_virtual_clock(void **state) {
  (void)state;
  virtual_clock_waits(TIMEOUT);
}

static void resets_park_a_few_times_on_the_virtual_clock(void **state) {
  (void)state;
  virtual_clock_waits(RESET);
}

/* On the real clock: levels 0, 1 and 2 (the spin lasted up to 63
 * ms below 4.096 s and up to 4 s from there). */
static void waits_park_a_few_times_on_the_real_clock(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  const uint64_t ms[] = {1, 70, 1100, 4200};
  for (size_t i = 0; i < TEST_ARRAY_LEN(ms); i++)
    wait_once(rt, SLEEP, ms[i] * MS, 0);
  wait_once(rt, TIMEOUT, 1100 * MS, 0);
  wait_once(rt, RESET, 1100 * MS, 30 * MS);   /* later */
  wait_once(rt, RESET, 1100 * MS, 5000 * MS); /* earlier */
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(sleeps_park_a_few_times_on_the_virtual_clock),
    RT_TEST(timeouts_park_a_few_times_on_the_virtual_clock),
    RT_TEST(resets_park_a_few_times_on_the_virtual_clock),
    RT_TEST(waits_park_a_few_times_on_the_real_clock),
};

TEST_MAIN(tests)
