/* The time driver on the real clock: sleeps never end early, zero and past
 * deadlines complete at once, huge ones clamp, a runtime without timers
 * says so, timeouts wrap any poll function, timers are cancelled and reset
 * from other threads (TESTING.md T3-T6). Only lower bounds on elapsed
 * time are asserted: upper bounds belong to benchmarks. */
#include "harness.h"
#include "internal.h"

typedef struct {
  treadle_sleep_t sleep;
  uint64_t duration_ns;
  uint64_t until_ns; /* if not 0: sleep_until this instead */
  bool started;
  int polls;
  uint64_t *elapsed_ns; /* out */
} sleeper_t;

static treadle_poll_t sleeper_poll(treadle_cx_t *cx, void *st) {
  sleeper_t *s = st;
  if (!s->started) {
    if (s->until_ns != 0)
      treadle_sleep_until_init(&s->sleep, s->until_ns);
    else
      treadle_sleep_init(&s->sleep, s->duration_ns);
    s->started = true;
  }
  s->polls++;
  treadle_err_t err;
  if (treadle_sleep_poll(&s->sleep, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (s->elapsed_ns != NULL)
    *s->elapsed_ns = treadle_now() -
                     (treadle_sleep_deadline(&s->sleep) - s->duration_ns);
  treadle_cx_set_output(cx, err, (void *)(intptr_t)s->polls);
  return TREADLE_READY;
}

static void sleeper_drop(void *st) {
  treadle_sleep_drop(&((sleeper_t *)st)->sleep);
}

static const treadle_task_vtable_t sleeper_vt = {.poll = sleeper_poll,
                                                 .drop = sleeper_drop};

static treadle_err_t sleep_for(treadle_runtime_t *rt, uint64_t ns,
                               uint64_t *elapsed, int *polls) {
  sleeper_t s = {.duration_ns = ns, .elapsed_ns = elapsed};
  void *out = NULL;
  treadle_err_t err =
      treadle_runtime_block_on(rt, &sleeper_vt, &s, sizeof s, &out);
  if (polls != NULL)
    *polls = (int)(intptr_t)out;
  return err;
}

static void sleep_never_ends_early(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  const uint64_t ms[] = {1, 2, 3, 7, 15};
  for (unsigned rep = 0; rep < 5; rep++) {
    for (size_t i = 0; i < TEST_ARRAY_LEN(ms); i++) {
      uint64_t d = ms[i] * TREADLE_NSEC_PER_MSEC + rep * 137000;
      uint64_t elapsed = 0;
      assert_int_equal(sleep_for(rt, d, &elapsed, NULL), 0);
      assert_true(elapsed >= d);
    }
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void zero_and_past_deadlines_are_ready_at_once(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int polls = 0;
  assert_int_equal(sleep_for(rt, 0, NULL, &polls), 0);
  assert_int_equal(polls, 1);
  const uint64_t past[] = {1, treadle_now() - TREADLE_NSEC_PER_SEC,
                           treadle_now()};
  for (size_t i = 0; i < TEST_ARRAY_LEN(past); i++) {
    sleeper_t s = {.until_ns = past[i]};
    void *out = NULL;
    assert_int_equal(
        treadle_runtime_block_on(rt, &sleeper_vt, &s, sizeof s, &out), 0);
    assert_int_equal((int)(intptr_t)out, 1);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Joins every handle in `joins`, one after the other. */
typedef struct {
  treadle_join_t **joins;
  size_t n;
  size_t next;
} join_all_t;

static treadle_poll_t join_all_poll(treadle_cx_t *cx, void *st) {
  join_all_t *a = st;
  while (a->next < a->n) {
    treadle_err_t err;
    if (treadle_join_poll(a->joins[a->next], cx, &err, NULL) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0) {
      treadle_cx_set_output(cx, err, NULL);
      return TREADLE_READY;
    }
    a->next++;
  }
  return TREADLE_READY;
}

static const treadle_task_vtable_t join_all_vt = {.poll = join_all_poll};

/* Many sleepers with random durations: each wakes no earlier than its
 * deadline; all wake. */
static void many_sleepers_all_wake_in_time(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  size_t n = test_scale(5000);
  treadle_join_t **js = calloc(n, sizeof *js);
  uint64_t *elapsed = calloc(n, sizeof *elapsed);
  uint64_t *durs = calloc(n, sizeof *durs);
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    durs[i] = x % (20 * TREADLE_NSEC_PER_MSEC);
    sleeper_t s = {.duration_ns = durs[i], .elapsed_ns = &elapsed[i]};
    assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &sleeper_vt,
                                   &s, sizeof s, &js[i]),
                     0);
  }
  join_all_t all = {.joins = js, .n = n};
  assert_int_equal(
      treadle_runtime_block_on(rt, &join_all_vt, &all, sizeof all, NULL), 0);
  for (size_t i = 0; i < n; i++) {
    assert_true(elapsed[i] >= durs[i]);
    treadle_join_detach(js[i]);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
  free(js);
  free(elapsed);
  free(durs);
}

static void huge_and_forever_sleeps_wait_and_cancel(void **state) {
  (void)state;
  /* A sleep of UINT64_MAX - 1 ns or TREADLE_FOREVER stays pending; aborting
   * its task cancels the timer and drops it once. */
  const uint64_t durs[] = {UINT64_MAX - 1, TREADLE_FOREVER,
                           (uint64_t)1 << 62, TREADLE_NSEC_PER_SEC * 86400 * 900};
  treadle_runtime_t *rt = test_runtime();
  for (size_t i = 0; i < TEST_ARRAY_LEN(durs); i++) {
    sleeper_t s = {.duration_ns = durs[i]};
    treadle_join_t *j;
    assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &sleeper_vt,
                                   &s, sizeof s, &j),
                     0);
    /* Let it register: a short sleep in block_on runs the queue first. */
    assert_int_equal(sleep_for(rt, TREADLE_NSEC_PER_MSEC, NULL, NULL), 0);
    assert_false(treadle_join_is_finished(j));
    treadle_join_abort(j);
    assert_int_equal(sleep_for(rt, 0, NULL, NULL), 0);
    assert_int_equal(treadle_join_wait(j, NULL), TREADLE_ECANCELED);
    treadle_join_detach(j);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void runtime_without_timers_says_so(void **state) {
  (void)state;
  treadle_builder_t *b = test_builder();
  assert_int_equal(treadle_builder_enable_io(b), 0);
  treadle_runtime_t *rt;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  int polls = 0;
  treadle_err_t err = sleep_for(rt, TREADLE_NSEC_PER_MSEC, NULL, &polls);
  assert_int_equal(err, TREADLE_ENOTIME);
  assert_int_equal(polls, 1);
  assert_string_equal(treadle_strerror(err),
                      "timers are disabled: build the runtime with "
                      "enable_time");
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Timeout around a poll function that never completes, and one that
 * completes at once. */
typedef struct {
  treadle_sleep_t deadline;
  uint64_t after_ns;
  bool inner_ready;
  bool started;
  uint64_t start;
} timeout_t;

static treadle_poll_t never_ready(treadle_cx_t *cx, void *st) {
  (void)cx;
  (void)st;
  return TREADLE_PENDING;
}

static treadle_poll_t always_ready(treadle_cx_t *cx, void *st) {
  (void)cx;
  (void)st;
  return TREADLE_READY;
}

static treadle_poll_t timeout_poll(treadle_cx_t *cx, void *st) {
  timeout_t *t = st;
  if (!t->started) {
    t->start = treadle_now();
    treadle_sleep_init(&t->deadline, t->after_ns);
    t->started = true;
  }
  treadle_err_t err;
  if (treadle_timeout_poll(&t->deadline, cx,
                           t->inner_ready ? always_ready : never_ready, NULL,
                           &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err == TREADLE_ETIMEDOUT && treadle_now() - t->start < t->after_ns)
    err = TREADLE_EINVAL; /* fired early: fail below */
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void timeout_drop(void *st) {
  treadle_sleep_drop(&((timeout_t *)st)->deadline);
}

static void timeout_wraps_any_poll(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  static const treadle_task_vtable_t vt = {.poll = timeout_poll,
                                           .drop = timeout_drop};
  timeout_t t = {.after_ns = 5 * TREADLE_NSEC_PER_MSEC};
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &t, sizeof t, NULL),
                   TREADLE_ETIMEDOUT);
  timeout_t r = {.after_ns = 5 * TREADLE_NSEC_PER_MSEC, .inner_ready = true};
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &r, sizeof r, NULL), 0);
  treadle_err_t err;
  assert_int_equal(treadle_timeout_poll(NULL, NULL, NULL, NULL, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Reset: a sleeper waiting on a long deadline is moved to a short one (it
 * wakes), or to a past one (it wakes at once). Cancel from another thread
 * while the task waits, then abort it. */
typedef struct {
  treadle_sleep_t *sleep; /* lives in the test, shared with a thread */
  bool registered;
} waiter_t;

static treadle_poll_t waiter_poll(treadle_cx_t *cx, void *st) {
  waiter_t *w = st;
  treadle_err_t err;
  if (treadle_sleep_poll(w->sleep, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static const treadle_task_vtable_t waiter_vt = {.poll = waiter_poll};

static void *reset_thread(void *arg) {
  treadle_sleep_t *s = arg;
  /* Wait until the task has registered, then move the deadline near. */
  while (atomic_load_explicit(
             &((treadle__timer_t *)(void *)s)->state, memory_order_acquire) !=
         TREADLE__TIMER_REGISTERED)
    sched_yield();
  treadle_sleep_reset(s, treadle_now() + 2 * TREADLE_NSEC_PER_MSEC);
  return NULL;
}

static void reset_moves_a_waiting_timer(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_sleep_t s;
  for (int past = 0; past <= 1; past++) {
    treadle_sleep_init(&s, 3600 * TREADLE_NSEC_PER_SEC);
    waiter_t w = {.sleep = &s};
    pthread_t th;
    if (past) {
      /* Reset from inside: a deadline already passed wakes it at once. */
      treadle_join_t *j;
      assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &waiter_vt,
                                     &w, sizeof w, &j),
                       0);
      /* Wait until it registered: a reset must not race the owner's poll
       * (its contract); from then on only the driver touches it. */
      while (atomic_load_explicit(&((treadle__timer_t *)(void *)&s)->state,
                                  memory_order_acquire) !=
             TREADLE__TIMER_REGISTERED)
        assert_int_equal(sleep_for(rt, 0, NULL, NULL), 0);
      treadle_sleep_reset(&s, 1);
      assert_int_equal(sleep_for(rt, 0, NULL, NULL), 0);
      assert_int_equal(treadle_join_wait(j, NULL), 0);
      treadle_join_detach(j);
    } else {
      pthread_create(&th, NULL, reset_thread, &s);
      uint64_t t0 = treadle_now();
      assert_int_equal(
          treadle_runtime_block_on(rt, &waiter_vt, &w, sizeof w, NULL), 0);
      pthread_join(th, NULL);
      assert_true(treadle_now() - t0 < 3600 * TREADLE_NSEC_PER_SEC);
    }
    treadle_sleep_drop(&s);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

typedef struct {
  treadle_sleep_t *sleep;
  _Atomic bool done;
} canceller_t;

static void *cancel_thread(void *arg) {
  canceller_t *c = arg;
  while (!atomic_load(&c->done))
    treadle_sleep_drop(c->sleep); /* idempotent; races registration/fire */
  return NULL;
}

static void cancel_from_another_thread(void **state) {
  (void)state;
  unsigned rounds = (unsigned)test_scale(200);
  treadle_runtime_t *rt = test_runtime();
  for (unsigned i = 0; i < rounds; i++) {
    treadle_sleep_t s;
    /* Durations 0, 0.5, 1 ms race the cancel with the timer firing. */
    treadle_sleep_init(&s, (i % 3) * TREADLE_NSEC_PER_MSEC / 2);
    waiter_t w = {.sleep = &s};
    treadle_join_t *j;
    assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &waiter_vt,
                                   &w, sizeof w, &j),
                     0);
    canceller_t c = {.sleep = &s};
    pthread_t th;
    pthread_create(&th, NULL, cancel_thread, &c);
    assert_int_equal(sleep_for(rt, 2 * TREADLE_NSEC_PER_MSEC, NULL, NULL), 0);
    /* The waiter fired, or a cancel stranded it: abort settles both. */
    treadle_join_abort(j);
    assert_int_equal(sleep_for(rt, 0, NULL, NULL), 0);
    treadle_err_t st = treadle_join_wait(j, NULL);
    assert_true(st == 0 || st == TREADLE_ECANCELED);
    treadle_join_detach(j);
    atomic_store(&c.done, true);
    pthread_join(th, NULL);
    treadle_sleep_drop(&s);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void duration_from_secs_rejects_nan(void **state) {
  (void)state;
  uint64_t ns = 7;
  assert_int_equal(treadle_duration_from_secs(0.0 / 0.0, &ns),
                   TREADLE_EINVAL);
  assert_int_equal(ns, 7);
  assert_int_equal(treadle_duration_from_secs(-1.0, &ns), 0);
  assert_int_equal(ns, 0);
  assert_int_equal(treadle_duration_from_secs(-0.0, &ns), 0);
  assert_int_equal(ns, 0);
  assert_int_equal(treadle_duration_from_secs(1.0 / 0.0, &ns), 0);
  assert_true(ns == TREADLE_FOREVER);
  assert_int_equal(treadle_duration_from_secs(-1.0 / 0.0, &ns), 0);
  assert_int_equal(ns, 0);
  assert_int_equal(treadle_duration_from_secs(1e300, &ns), 0);
  assert_true(ns == TREADLE_FOREVER);
  assert_int_equal(treadle_duration_from_secs(1.5, &ns), 0);
  assert_int_equal(ns, 1500000000);
  assert_int_equal(treadle_duration_from_secs(5e-324, &ns), 0);
  assert_int_equal(ns, 0);
  assert_int_equal(treadle_duration_from_secs(1.0, NULL), TREADLE_EINVAL);
}

/* A task whose drop function does not drop its sleep: the runtime's
 * shutdown takes the timer out (SHUTDOWN) and nothing leaks; polling the
 * orphaned sleep afterwards says the runtime is gone. */
static treadle_poll_t leaky_poll(treadle_cx_t *cx, void *st) {
  treadle_sleep_t **sp = st;
  treadle_err_t err;
  treadle_sleep_poll(*sp, cx, &err);
  return TREADLE_PENDING;
}

static void shutdown_takes_orphaned_timers(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_sleep_t s;
  treadle_sleep_init(&s, 3600 * TREADLE_NSEC_PER_SEC);
  treadle_sleep_t *sp = &s;
  static const treadle_task_vtable_t vt = {.poll = leaky_poll};
  assert_int_equal(
      treadle_spawn(treadle_runtime_handle(rt), &vt, &sp, sizeof sp, NULL), 0);
  assert_int_equal(sleep_for(rt, TREADLE_NSEC_PER_MSEC, NULL, NULL), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&((treadle__timer_t *)(void *)&s)->state),
                   TREADLE__TIMER_SHUTDOWN);
  treadle_sleep_drop(&s); /* safe: not registered any more */
  treadle_sleep_reset(&s, 5);
}

static void bad_input_is_an_error(void **state) {
  (void)state;
  treadle_err_t err = 0;
  assert_int_equal(treadle_sleep_poll(NULL, NULL, &err), TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  treadle_sleep_init(NULL, 5);
  treadle_sleep_until_init(NULL, 5);
  treadle_sleep_drop(NULL);
  treadle_sleep_reset(NULL, 5);
  assert_int_equal(treadle_sleep_deadline(NULL), 0);
  /* A zeroed sleep is a deadline of 0: ready at once, never registered. */
  treadle_sleep_t z;
  memset(&z, 0, sizeof z);
  treadle_sleep_drop(&z);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(sleep_never_ends_early),
    RT_TEST(zero_and_past_deadlines_are_ready_at_once),
    RT_TEST(many_sleepers_all_wake_in_time),
    RT_TEST(huge_and_forever_sleeps_wait_and_cancel),
    RT_TEST(runtime_without_timers_says_so),
    RT_TEST(timeout_wraps_any_poll),
    RT_TEST(reset_moves_a_waiting_timer),
    RT_TEST(cancel_from_another_thread),
    TEST(duration_from_secs_rejects_nan),
    RT_TEST(shutdown_takes_orphaned_timers),
    TEST(bad_input_is_an_error),
};

TEST_MAIN(tests)
