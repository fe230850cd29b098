/* The blocking pool: jobs on threads of their own, the thread cap, idle
 * threads leaving, hooks, abort, and shutdown with a timeout
 * (TESTING.md S14, D3). No assertion depends on timing: jobs that must
 * stay busy wait on a gate the test opens. */
#include <time.h>

#include "harness.h"
#include "internal.h"

/* A gate jobs wait on until the test opens it. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool open;
  int waiting;
} gate_t;

#define GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0}

static void gate_wait(gate_t *g) {
  pthread_mutex_lock(&g->mu);
  g->waiting++;
  pthread_cond_broadcast(&g->cv);
  while (!g->open)
    pthread_cond_wait(&g->cv, &g->mu);
  g->waiting--;
  pthread_mutex_unlock(&g->mu);
}

static void gate_until_waiting(gate_t *g, int n) {
  pthread_mutex_lock(&g->mu);
  while (g->waiting < n)
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate_t *g) {
  pthread_mutex_lock(&g->mu);
  g->open = true;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

typedef struct {
  gate_t *gate;             /* NULL: don't wait */
  _Atomic int *running;     /* jobs running now */
  _Atomic int *max_running;
  _Atomic int *runs;
  _Atomic int *drops;
  treadle_handle_t **seen_handle;
  int value;
} job_t;

static treadle_err_t job_run(void *st, void **value) {
  job_t *j = st;
  if (j->runs)
    atomic_fetch_add(j->runs, 1);
  if (j->running) {
    int now = atomic_fetch_add(j->running, 1) + 1;
    int max = atomic_load(j->max_running);
    while (now > max && !atomic_compare_exchange_weak(j->max_running, &max,
                                                      now))
      ;
  }
  if (j->seen_handle)
    *j->seen_handle = treadle_handle_current();
  if (j->gate)
    gate_wait(j->gate);
  if (j->running)
    atomic_fetch_sub(j->running, 1);
  *value = (void *)(intptr_t)j->value;
  return j->value < 0 ? j->value : 0;
}

static void job_drop(void *st) {
  job_t *j = st;
  if (j->drops)
    atomic_fetch_add(j->drops, 1);
}

static const treadle_blocking_vtable_t job_vt = {.run = job_run,
                                                 .drop = job_drop};

static treadle_runtime_t *runtime_with(unsigned max_threads,
                                       uint64_t keep_alive_ns) {
  treadle_builder_t *b = test_builder();
  treadle_builder_enable_all(b);
  assert_int_equal(treadle_builder_max_blocking_threads(b, max_threads), 0);
  assert_int_equal(treadle_builder_thread_keep_alive(b, keep_alive_ns), 0);
  treadle_runtime_t *rt;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  return rt;
}

/* A task that joins a blocking job (spawned inside the task). */
typedef struct {
  job_t job;
  treadle_join_t *j;
  void *out;
} joiner_t;

static treadle_poll_t joiner_poll(treadle_cx_t *cx, void *st) {
  joiner_t *s = st;
  if (s->j == NULL)
    assert_int_equal(treadle_spawn_blocking(treadle_cx_handle(cx), &job_vt,
                                            &s->job, sizeof s->job, &s->j),
                     0);
  treadle_err_t err;
  if (treadle_join_poll(s->j, cx, &err, &s->out) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_join_detach(s->j);
  treadle_cx_set_output(cx, err, s->out);
  return TREADLE_READY;
}

static void job_joined_from_a_task(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *seen = NULL;
  _Atomic int drops = 0;
  joiner_t s = {.job = {.value = 42, .seen_handle = &seen, .drops = &drops}};
  static const treadle_task_vtable_t vt = {.poll = joiner_poll};
  void *out = NULL;
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &s, sizeof s, &out), 0);
  assert_int_equal((intptr_t)out, 42);
  assert_ptr_equal(seen, treadle_runtime_handle(rt)); /* handle_current */
  assert_int_equal(atomic_load(&drops), 1);
  /* A failing job's status reaches the joiner. */
  joiner_t f = {.job = {.value = TREADLE_EIO}};
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &f, sizeof f, NULL),
                   TREADLE_EIO);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void job_joined_from_a_thread(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  job_t j = {.value = 7};
  treadle_join_t *h;
  assert_int_equal(
      treadle_spawn_blocking(treadle_runtime_handle(rt), &job_vt, &j,
                             sizeof j, &h),
      0);
  void *out = NULL;
  assert_int_equal(treadle_join_wait(h, &out), 0);
  assert_int_equal((intptr_t)out, 7);
  treadle_join_detach(h);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* A thread that must not block for long looks with treadle_join_try and
 * waits with a timeout (issue 13: Python's JoinHandle.result from outside
 * the runtime): EAGAIN and ETIMEDOUT while the job runs, nothing taken;
 * then the value; then EJOINED. */
static void job_tried_and_waited_with_a_timeout(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  gate_t gate = GATE_INIT;
  job_t j = {.gate = &gate, .value = 9};
  treadle_join_t *h;
  assert_int_equal(treadle_spawn_blocking(treadle_runtime_handle(rt),
                                          &job_vt, &j, sizeof j, &h),
                   0);
  gate_until_waiting(&gate, 1);
  void *out = (void *)1;
  assert_int_equal(treadle_join_try(h, &out), TREADLE_EAGAIN);
  assert_null(out);
  out = (void *)1;
  assert_int_equal(treadle_join_wait_timeout(h, 5 * TREADLE_NSEC_PER_MSEC,
                                             &out),
                   TREADLE_ETIMEDOUT);
  assert_null(out);
  assert_int_equal(treadle_join_wait_timeout(h, 0, &out), TREADLE_ETIMEDOUT);
  gate_open(&gate);
  assert_int_equal(
      treadle_join_wait_timeout(h, 60 * TREADLE_NSEC_PER_SEC, &out), 0);
  assert_int_equal((intptr_t)out, 9);
  assert_int_equal(treadle_join_try(h, &out), TREADLE_EJOINED);
  assert_int_equal(treadle_join_wait_timeout(h, 0, &out), TREADLE_EJOINED);
  treadle_join_detach(h);
  assert_int_equal(treadle_join_try(NULL, &out), TREADLE_EINVAL);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void threads_are_capped(void **state) {
  (void)state;
  treadle_runtime_t *rt = runtime_with(2, 10 * TREADLE_NSEC_PER_SEC);
  gate_t gate = GATE_INIT;
  _Atomic int running = 0, max_running = 0, runs = 0;
  enum { JOBS = 6 };
  treadle_join_t *hs[JOBS];
  for (int i = 0; i < JOBS; i++) {
    job_t j = {.gate = &gate, .running = &running, .max_running = &max_running,
               .runs = &runs, .value = i};
    assert_int_equal(treadle_spawn_blocking(treadle_runtime_handle(rt),
                                            &job_vt, &j, sizeof j, &hs[i]),
                     0);
  }
  gate_until_waiting(&gate, 2); /* the two threads are busy */
  treadle_runtime_metrics_t m;
  assert_int_equal(treadle_handle_metrics(treadle_runtime_handle(rt), &m), 0);
  assert_int_equal(m.blocking_threads, 2);
  assert_int_equal(m.blocking_queue_depth, JOBS - 2);
  gate_open(&gate);
  for (int i = 0; i < JOBS; i++) {
    void *out;
    assert_int_equal(treadle_join_wait(hs[i], &out), 0);
    assert_int_equal((intptr_t)out, i);
    treadle_join_detach(hs[i]);
  }
  assert_int_equal(atomic_load(&runs), JOBS);
  assert_true(atomic_load(&max_running) <= 2);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void idle_threads_leave_after_keep_alive(void **state) {
  (void)state;
  treadle_runtime_t *rt = runtime_with(4, TREADLE_NSEC_PER_MSEC);
  job_t j = {.value = 1};
  treadle_join_t *h;
  assert_int_equal(treadle_spawn_blocking(treadle_runtime_handle(rt), &job_vt,
                                          &j, sizeof j, &h),
                   0);
  assert_int_equal(treadle_join_wait(h, NULL), 0);
  treadle_join_detach(h);
  /* The thread exits on its own once idle for the keep-alive. */
  treadle_runtime_metrics_t m;
  do {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
    assert_int_equal(treadle_handle_metrics(treadle_runtime_handle(rt), &m),
                     0);
  } while (m.blocking_threads != 0);
  /* And a new job starts a new one. */
  assert_int_equal(treadle_spawn_blocking(treadle_runtime_handle(rt), &job_vt,
                                          &j, sizeof j, &h),
                   0);
  assert_int_equal(treadle_join_wait(h, NULL), 0);
  treadle_join_detach(h);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static _Atomic int starts, stops;
static void on_start(void *ud) {
  assert_ptr_equal(ud, &starts);
  atomic_fetch_add(&starts, 1);
}
static void on_stop(void *ud) {
  assert_ptr_equal(ud, &stops);
  atomic_fetch_add(&stops, 1);
}

static void thread_hooks_run_on_every_thread(void **state) {
  (void)state;
  atomic_store(&starts, 0);
  atomic_store(&stops, 0);
  treadle_builder_t *b = test_builder();
  treadle_builder_enable_all(b);
  treadle_builder_on_thread_start(b, on_start, &starts);
  treadle_builder_on_thread_stop(b, on_stop, &stops);
  treadle_runtime_t *rt;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  gate_t gate = GATE_INIT;
  treadle_join_t *hs[3];
  for (int i = 0; i < 3; i++) {
    job_t j = {.gate = &gate};
    assert_int_equal(treadle_spawn_blocking(treadle_runtime_handle(rt),
                                            &job_vt, &j, sizeof j, &hs[i]),
                     0);
  }
  gate_until_waiting(&gate, 3); /* three blocking threads at once */
  gate_open(&gate);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(treadle_join_wait(hs[i], NULL), 0);
    treadle_join_detach(hs[i]);
  }
  treadle_runtime_metrics_t m;
  treadle_handle_metrics(treadle_runtime_handle(rt), &m);
  unsigned workers = strcmp(test_flavor(), "ct") == 0 ? 0 : m.workers;
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&starts), (int)workers + 3);
  assert_int_equal(atomic_load(&stops), (int)workers + 3);
}

static void abort_cancels_queued_but_not_running_jobs(void **state) {
  (void)state;
  treadle_runtime_t *rt = runtime_with(1, 10 * TREADLE_NSEC_PER_SEC);
  gate_t gate = GATE_INIT;
  _Atomic int runs = 0, drops = 0;
  job_t busy = {.gate = &gate, .runs = &runs, .drops = &drops, .value = 1};
  job_t queued = {.runs = &runs, .drops = &drops, .value = 2};
  treadle_join_t *hb, *hq;
  treadle_handle_t *h = treadle_runtime_handle(rt);
  assert_int_equal(
      treadle_spawn_blocking(h, &job_vt, &busy, sizeof busy, &hb), 0);
  gate_until_waiting(&gate, 1);
  assert_int_equal(
      treadle_spawn_blocking(h, &job_vt, &queued, sizeof queued, &hq), 0);
  treadle_join_abort(hb); /* running: no effect */
  treadle_join_abort(hq); /* queued: cancelled when its turn comes */
  gate_open(&gate);
  void *out;
  assert_int_equal(treadle_join_wait(hb, &out), 0);
  assert_int_equal((intptr_t)out, 1);
  assert_int_equal(treadle_join_wait(hq, NULL), TREADLE_ECANCELED);
  treadle_join_detach(hb);
  treadle_join_detach(hq);
  assert_int_equal(atomic_load(&runs), 1);
  assert_int_equal(atomic_load(&drops), 2);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* D3: shutdown_timeout returns with a job still running; queued jobs are
 * cancelled; the running job's thread finishes and exits later. */
static void shutdown_timeout_leaves_a_busy_job(void **state) {
  (void)state;
  const uint64_t timeouts[] = {0, 20 * TREADLE_NSEC_PER_MSEC};
  for (size_t k = 0; k < TEST_ARRAY_LEN(timeouts); k++) {
    treadle_runtime_t *rt = runtime_with(1, 10 * TREADLE_NSEC_PER_SEC);
    gate_t gate = GATE_INIT;
    _Atomic int runs = 0, drops = 0;
    job_t busy = {.gate = &gate, .runs = &runs, .drops = &drops, .value = 1};
    job_t queued = {.runs = &runs, .drops = &drops, .value = 2};
    treadle_join_t *hb, *hq;
    treadle_handle_t *h = treadle_runtime_handle(rt);
    assert_int_equal(
        treadle_spawn_blocking(h, &job_vt, &busy, sizeof busy, &hb), 0);
    gate_until_waiting(&gate, 1);
    assert_int_equal(
        treadle_spawn_blocking(h, &job_vt, &queued, sizeof queued, &hq), 0);
    assert_int_equal(treadle_runtime_shutdown_timeout(rt, timeouts[k]),
                     TREADLE_ETIMEDOUT);
    assert_int_equal(treadle_join_wait(hq, NULL), TREADLE_ECANCELED);
    assert_false(treadle_join_is_finished(hb));
    gate_open(&gate); /* the leftover job ends; its thread exits */
    void *out;
    assert_int_equal(treadle_join_wait(hb, &out), 0);
    assert_int_equal((intptr_t)out, 1);
    treadle_join_detach(hb);
    treadle_join_detach(hq);
    assert_int_equal(atomic_load(&runs), 1);
    assert_int_equal(atomic_load(&drops), 2);
  }
}

static void bad_input_and_after_shutdown(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_handle_ref(treadle_runtime_handle(rt));
  static const treadle_blocking_vtable_t no_run = {0};
  treadle_join_t *j = (treadle_join_t *)1;
  assert_int_equal(treadle_spawn_blocking(NULL, &job_vt, NULL, 0, &j),
                   TREADLE_EINVAL);
  assert_null(j);
  assert_int_equal(treadle_spawn_blocking(h, NULL, NULL, 0, NULL),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_spawn_blocking(h, &no_run, NULL, 0, NULL),
                   TREADLE_EINVAL);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_spawn_blocking(h, &job_vt, NULL, sizeof(job_t), &j),
                   TREADLE_ENOMEM);
  assert_int_equal(treadle_runtime_free(rt), 0);
  job_t jb = {0};
  assert_int_equal(treadle_spawn_blocking(h, &job_vt, &jb, sizeof jb, NULL),
                   TREADLE_ESHUTDOWN);
  treadle_handle_unref(h);
}

/* From a job, block_on the same runtime: allowed (the job is not running
 * tasks), as Tokio's Handle::block_on from spawn_blocking. */
typedef struct {
  treadle_runtime_t *rt;
  treadle_err_t result;
} nested_job_t;

static treadle_poll_t seven_poll(treadle_cx_t *cx, void *st) {
  (void)st;
  treadle_cx_set_output(cx, 7, NULL);
  return TREADLE_READY;
}

static treadle_err_t nested_run(void *st, void **value) {
  (void)value;
  (void)st;
  static const treadle_task_vtable_t vt = {.poll = seven_poll};
  return treadle_handle_block_on(treadle_handle_current(), &vt, NULL, 0,
                                 NULL);
}

static void block_on_from_a_job(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  static const treadle_blocking_vtable_t vt = {.run = nested_run};
  nested_job_t n = {.rt = rt};
  treadle_join_t *h;
  assert_int_equal(treadle_spawn_blocking(treadle_runtime_handle(rt), &vt, &n,
                                          sizeof n, &h),
                   0);
  assert_int_equal(treadle_join_wait(h, NULL), 7);
  treadle_join_detach(h);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(job_joined_from_a_task),
    RT_TEST(job_joined_from_a_thread),
    RT_TEST(job_tried_and_waited_with_a_timeout),
    RT_TEST(threads_are_capped),
    RT_TEST(idle_threads_leave_after_keep_alive),
    RT_TEST(thread_hooks_run_on_every_thread),
    RT_TEST(abort_cancels_queued_but_not_running_jobs),
    RT_TEST(shutdown_timeout_leaves_a_busy_job),
    RT_TEST(bad_input_and_after_shutdown),
    RT_TEST(block_on_from_a_job),
};

TEST_MAIN(tests)
