/* The runtime: builder, block_on, handles from other threads, nesting
 * errors, shutdown (every task dropped once, even when drop functions wake
 * and spawn), and use after shutdown (TESTING.md S13, S15, D1-D4, D7,
 * B5, B6). */
#include "harness.h"
#include "internal.h"

/* ----------------------------------------------------------- helpers */

/* A mailbox: a task parks on it until someone posts; any thread posts. */
typedef struct {
  _Atomic(treadle_waker_t *) waker;
  _Atomic int posted;
} mailbox_t;

static void mailbox_post(mailbox_t *mb) {
  atomic_store(&mb->posted, 1);
  treadle_waker_t *w = atomic_exchange(&mb->waker, NULL);
  if (w != NULL)
    treadle_wake(w);
}

static treadle_poll_t mailbox_wait(mailbox_t *mb, treadle_cx_t *cx) {
  if (atomic_load(&mb->posted))
    return TREADLE_READY;
  treadle_waker_drop(
      atomic_exchange(&mb->waker, treadle_waker_clone(treadle_cx_waker(cx))));
  /* Posted meanwhile: the post may have missed the new waker. */
  if (atomic_load(&mb->posted)) {
    treadle_waker_drop(atomic_exchange(&mb->waker, NULL));
    return TREADLE_READY;
  }
  return TREADLE_PENDING;
}

static void mailbox_clear(mailbox_t *mb) {
  treadle_waker_drop(atomic_exchange(&mb->waker, NULL));
}

static treadle_poll_t wait_mailbox_poll(treadle_cx_t *cx, void *st) {
  return mailbox_wait(*(mailbox_t **)st, cx);
}

static treadle_poll_t post_mailbox_poll(treadle_cx_t *cx, void *st) {
  (void)cx;
  mailbox_post(*(mailbox_t **)st);
  return TREADLE_READY;
}

static const treadle_task_vtable_t wait_mailbox_vt = {.poll =
                                                          wait_mailbox_poll};
static const treadle_task_vtable_t post_mailbox_vt = {.poll =
                                                          post_mailbox_poll};

static treadle_poll_t ready_poll(treadle_cx_t *cx, void *st) {
  treadle_cx_set_output(cx, *(int *)st, st);
  return TREADLE_READY;
}

static const treadle_task_vtable_t ready_vt = {.poll = ready_poll};

/* ------------------------------------------------------------- tests */

static void builder_rejects_bad_values(void **state) {
  (void)state;
  treadle_builder_t *b = NULL;
  assert_int_equal(treadle_builder_new((treadle_flavor_t)7, &b),
                   TREADLE_EINVAL);
  assert_null(b);
  assert_int_equal(treadle_builder_new(TREADLE_CURRENT_THREAD, NULL),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_builder_new(TREADLE_CURRENT_THREAD, &b), 0);
  assert_int_equal(treadle_builder_worker_threads(b, 0), TREADLE_EINVAL);
  assert_int_equal(treadle_builder_worker_threads(b, 1025), TREADLE_EINVAL);
  assert_int_equal(treadle_builder_worker_threads(b, 4), 0);
  assert_int_equal(treadle_builder_max_blocking_threads(b, 0),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_builder_event_interval(b, 0), TREADLE_EINVAL);
  assert_int_equal(treadle_builder_global_queue_interval(b, 0),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_builder_thread_name(b, NULL), TREADLE_EINVAL);
  assert_int_equal(
      treadle_builder_thread_name(b, "a-thread-name-that-is-far-too-long"),
      TREADLE_EINVAL);
  assert_int_equal(treadle_builder_thread_name(b, "io"), 0);
  assert_int_equal(treadle_builder_enable_all(NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_builder_enable_io(NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_builder_enable_time(NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_builder_on_thread_start(NULL, NULL, NULL),
                   TREADLE_EINVAL);
  treadle_runtime_t *rt = (treadle_runtime_t *)1;
  assert_int_equal(treadle_builder_build(NULL, &rt), TREADLE_EINVAL);
  assert_null(rt);
  assert_int_equal(treadle_builder_build(b, NULL), TREADLE_EINVAL);
  /* A builder builds more than one runtime. */
  treadle_runtime_t *a, *c;
  assert_int_equal(treadle_builder_build(b, &a), 0);
  assert_int_equal(treadle_builder_build(b, &c), 0);
  treadle_builder_free(b);
  treadle_builder_free(NULL);
  assert_int_equal(treadle_runtime_free(a), 0);
  assert_int_equal(treadle_runtime_free(c), 0);
  assert_int_equal(treadle_runtime_free(NULL), 0);
  assert_null(treadle_runtime_handle(NULL));
  assert_int_equal(treadle_runtime_block_on(NULL, &ready_vt, NULL, 0, NULL),
                   TREADLE_EINVAL);
}

static void block_on_returns_the_output(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  int value = -42;
  void *out = NULL;
  assert_int_equal(
      treadle_runtime_block_on(rt, &ready_vt, &value, sizeof value, &out),
      -42);
  assert_non_null(out); /* points into the task's state: gone now, but set */
  assert_int_equal(treadle_runtime_block_on(rt, NULL, NULL, 0, &out),
                   TREADLE_EINVAL);
  assert_null(out);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Inside a task: block_on, join_wait and runtime_free refuse at once. */
typedef struct {
  treadle_runtime_t *rt;
  bool try_free;
  treadle_err_t nested, wait, free_err;
  treadle_handle_t *current;
} nested_t;

static treadle_poll_t nested_poll(treadle_cx_t *cx, void *st) {
  nested_t *n = *(nested_t **)st;
  int v = 0;
  n->nested = treadle_runtime_block_on(n->rt, &ready_vt, &v, sizeof v, NULL);
  treadle_join_t *j;
  assert_int_equal(treadle_spawn(treadle_cx_handle(cx), &ready_vt, &v,
                                 sizeof v, &j),
                   0);
  n->wait = treadle_join_wait(j, NULL);
  treadle_join_detach(j);
  if (n->try_free)
    n->free_err = treadle_runtime_free(n->rt);
  n->current = treadle_handle_current();
  return TREADLE_READY;
}

static void nesting_is_an_error(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  nested_t n = {.rt = rt, .try_free = true};
  nested_t *np = &n;
  static const treadle_task_vtable_t vt = {.poll = nested_poll};
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &np, sizeof np, NULL),
                   0);
  assert_int_equal(n.nested, TREADLE_EINRUNTIME);
  assert_int_equal(n.wait, TREADLE_EINRUNTIME);
  assert_int_equal(n.free_err, TREADLE_EINRUNTIME);
  assert_ptr_equal(n.current, treadle_runtime_handle(rt));
  assert_null(treadle_handle_current());
  /* Another runtime's block_on from inside a task is nested too. */
  treadle_runtime_t *other = test_runtime();
  n.rt = other;
  n.try_free = false;
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &np, sizeof np, NULL),
                   0);
  assert_int_equal(n.nested, TREADLE_EINRUNTIME);
  assert_int_equal(treadle_runtime_free(other), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Plain threads spawn through a handle; the main task waits until every
 * spawned task has run. */
typedef struct {
  treadle_handle_t *h;
  unsigned per_thread;
  _Atomic unsigned *left;
  mailbox_t *done;
} spawner_t;

typedef struct {
  _Atomic unsigned *left;
  mailbox_t *done;
} count_state_t;

static treadle_poll_t count_poll(treadle_cx_t *cx, void *st) {
  (void)cx;
  count_state_t *c = st;
  if (atomic_fetch_sub(c->left, 1) == 1)
    mailbox_post(c->done);
  return TREADLE_READY;
}

static const treadle_task_vtable_t count_vt = {.poll = count_poll};

static void *spawner_thread(void *arg) {
  spawner_t *s = arg;
  for (unsigned i = 0; i < s->per_thread; i++) {
    count_state_t c = {s->left, s->done};
    assert_int_equal(treadle_spawn(s->h, &count_vt, &c, sizeof c, NULL), 0);
  }
  treadle_handle_unref(s->h);
  return NULL;
}

static void spawn_from_plain_threads(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  enum { THREADS = 4 };
  unsigned per = (unsigned)test_scale(20000);
  _Atomic unsigned left = THREADS * per;
  mailbox_t done = {0};
  spawner_t sp[THREADS];
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++) {
    sp[i] = (spawner_t){treadle_handle_ref(treadle_runtime_handle(rt)), per,
                        &left, &done};
    pthread_create(&th[i], NULL, spawner_thread, &sp[i]);
  }
  mailbox_t *mb = &done;
  assert_int_equal(
      treadle_runtime_block_on(rt, &wait_mailbox_vt, &mb, sizeof mb, NULL),
      0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&left), 0);
  mailbox_clear(&done);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* S15: the runtime sits in its driver with no timer and no work; a task
 * spawned from another thread must wake it. Runs with every driver
 * combination: epoll, condvar with timers, condvar alone. */
static void *late_spawner(void *arg) {
  spawner_t *s = arg;
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL); /* let the runtime park first (not required) */
  mailbox_t *mb = s->done;
  assert_int_equal(
      treadle_spawn(s->h, &post_mailbox_vt, &mb, sizeof mb, NULL), 0);
  return NULL;
}

static void remote_spawn_wakes_an_idle_runtime(void **state) {
  (void)state;
  for (int drivers = 0; drivers < 3; drivers++) {
    treadle_builder_t *b = test_builder();
    if (drivers == 0)
      treadle_builder_enable_all(b);
    else if (drivers == 1)
      treadle_builder_enable_time(b);
    treadle_runtime_t *rt;
    assert_int_equal(treadle_builder_build(b, &rt), 0);
    treadle_builder_free(b);
    mailbox_t done = {0};
    spawner_t sp = {.h = treadle_runtime_handle(rt), .done = &done};
    pthread_t th;
    pthread_create(&th, NULL, late_spawner, &sp);
    mailbox_t *mb = &done;
    assert_int_equal(
        treadle_runtime_block_on(rt, &wait_mailbox_vt, &mb, sizeof mb, NULL),
        0);
    pthread_join(th, NULL);
    mailbox_clear(&done);
    assert_int_equal(treadle_runtime_free(rt), 0);
  }
}

/* D1: pending tasks with counting drop functions are dropped exactly once
 * at shutdown; their join handles see "cancelled". */
static _Atomic int dropped;

typedef struct {
  mailbox_t *never;
} pending_state_t;

static treadle_poll_t pending_poll(treadle_cx_t *cx, void *st) {
  (void)cx;
  (void)st;
  return TREADLE_PENDING; /* nobody will wake it */
}

static void count_drop(void *st) {
  (void)st;
  atomic_fetch_add(&dropped, 1);
}

static const treadle_task_vtable_t pending_vt = {.poll = pending_poll,
                                                 .drop = count_drop};

static void shutdown_drops_every_task(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  size_t n = test_scale(10000);
  treadle_join_t **js = calloc(n, sizeof *js);
  atomic_store(&dropped, 0);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(
        treadle_spawn(h, &pending_vt, NULL, 0, i % 2 ? &js[i] : NULL), 0);
  /* Let half of them be polled (pending); the rest stay queued. */
  int v = 0;
  assert_int_equal(treadle_runtime_block_on(rt, &ready_vt, &v, sizeof v, NULL),
                   0);
  for (size_t i = n / 2; i < n; i++)
    assert_int_equal(treadle_spawn(h, &pending_vt, NULL, 0, NULL), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&dropped), (int)(n + (n - n / 2)));
  for (size_t i = 1; i < n; i += 2) {
    assert_int_equal(treadle_join_wait(js[i], NULL), TREADLE_ECANCELED);
    treadle_join_detach(js[i]);
  }
  free(js);
}

/* D2: drop functions that wake other tasks and spawn new ones while the
 * runtime shuts down: no hang, no leak, spawns get ESHUTDOWN, every task
 * is dropped exactly once. */
static _Atomic int spawn_refusals;
static _Atomic(treadle_waker_t *) *meddler_wakers;
static size_t meddler_count;

typedef struct {
  size_t index;
  treadle_handle_t *h;
} meddler_t;

static void meddler_drop(void *st) {
  meddler_t *m = st;
  atomic_fetch_add(&dropped, 1);
  treadle_waker_drop(atomic_exchange(&meddler_wakers[m->index], NULL));
  /* Wake the next task, which may not have been dropped yet. */
  treadle_waker_t *peer = atomic_exchange(
      &meddler_wakers[(m->index + 1) % meddler_count], NULL);
  if (peer != NULL)
    treadle_wake(peer);
  treadle_err_t err = treadle_spawn(m->h, &pending_vt, NULL, 0, NULL);
  if (err == TREADLE_ESHUTDOWN)
    atomic_fetch_add(&spawn_refusals, 1);
}

static treadle_poll_t meddler_poll(treadle_cx_t *cx, void *st) {
  meddler_t *m = st;
  treadle_waker_drop(atomic_exchange(
      &meddler_wakers[m->index], treadle_waker_clone(treadle_cx_waker(cx))));
  return TREADLE_PENDING;
}

static const treadle_task_vtable_t meddler_vt = {.poll = meddler_poll,
                                                 .drop = meddler_drop};

static void shutdown_survives_meddling_drops(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  atomic_store(&dropped, 0);
  atomic_store(&spawn_refusals, 0);
  size_t n = test_scale(1000);
  meddler_count = n;
  meddler_wakers = calloc(n, sizeof *meddler_wakers);
  for (size_t i = 0; i < n; i++) {
    meddler_t m = {.index = i, .h = h};
    assert_int_equal(treadle_spawn(h, &meddler_vt, &m, sizeof m, NULL), 0);
  }
  int v = 0;
  assert_int_equal(treadle_runtime_block_on(rt, &ready_vt, &v, sizeof v, NULL),
                   0);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&dropped), (int)n);
  assert_int_equal(atomic_load(&spawn_refusals), (int)n);
  for (size_t i = 0; i < n; i++)
    assert_null(atomic_load(&meddler_wakers[i]));
  free(meddler_wakers);
}

static void use_after_shutdown_is_an_error(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_handle_ref(treadle_runtime_handle(rt));
  assert_int_equal(treadle_runtime_free(rt), 0);
  int v = 3;
  assert_int_equal(treadle_spawn(h, &ready_vt, &v, sizeof v, NULL),
                   TREADLE_ESHUTDOWN);
  assert_int_equal(treadle_handle_block_on(h, &ready_vt, &v, sizeof v, NULL),
                   TREADLE_ESHUTDOWN);
  treadle_handle_unref(h);
  treadle_handle_unref(NULL);
  assert_null(treadle_handle_ref(NULL));
}

/* Two threads call block_on on one current_thread runtime at once: one
 * drives, the other's task runs on it; whoever finishes first hands the
 * core over. */
typedef struct {
  treadle_runtime_t *rt;
  mailbox_t *wait_for; /* NULL: finish at once */
  mailbox_t *post;     /* posted after wait_for */
  treadle_err_t result;
} blocker_t;

typedef struct {
  mailbox_t *wait_for;
  mailbox_t *post;
} wait_post_t;

static treadle_poll_t wait_post_poll(treadle_cx_t *cx, void *st) {
  wait_post_t *w = st;
  if (w->wait_for != NULL && mailbox_wait(w->wait_for, cx) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (w->post != NULL)
    mailbox_post(w->post);
  return TREADLE_READY;
}

static const treadle_task_vtable_t wait_post_vt = {.poll = wait_post_poll};

static void *blocker_thread(void *arg) {
  blocker_t *b = arg;
  wait_post_t w = {b->wait_for, b->post};
  b->result = treadle_runtime_block_on(b->rt, &wait_post_vt, &w, sizeof w,
                                       NULL);
  return NULL;
}

static void block_on_from_two_threads(void **state) {
  (void)state;
  unsigned rounds = (unsigned)test_scale(200);
  treadle_runtime_t *rt = test_runtime();
  for (unsigned i = 0; i < rounds; i++) {
    /* A waits for B's post; B posts, then A finishes (or the reverse
     * order of thread start). */
    mailbox_t ab = {0};
    blocker_t a = {.rt = rt, .wait_for = &ab};
    blocker_t b = {.rt = rt, .post = &ab};
    pthread_t ta, tb;
    if (i % 2) {
      pthread_create(&ta, NULL, blocker_thread, &a);
      pthread_create(&tb, NULL, blocker_thread, &b);
    } else {
      pthread_create(&tb, NULL, blocker_thread, &b);
      pthread_create(&ta, NULL, blocker_thread, &a);
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.result, 0);
    assert_int_equal(b.result, 0);
    mailbox_clear(&ab);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void free_while_another_thread_drives_is_busy(void **state) {
  (void)state;
  if (strcmp(test_flavor(), "ct") != 0)
    skip(); /* multi_thread shuts down from any thread */
  treadle_runtime_t *rt = test_runtime();
  mailbox_t go = {0}, started = {0};
  blocker_t a = {.rt = rt, .wait_for = &go};
  /* A drives the core and waits for `go`; a task it runs tells us. */
  mailbox_t *sp = &started;
  assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &post_mailbox_vt,
                                 &sp, sizeof sp, NULL),
                   0);
  pthread_t ta;
  pthread_create(&ta, NULL, blocker_thread, &a);
  while (!atomic_load(&started.posted))
    sched_yield();
  assert_int_equal(treadle_runtime_free(rt), TREADLE_EBUSY);
  mailbox_post(&go);
  pthread_join(ta, NULL);
  assert_int_equal(a.result, 0);
  mailbox_clear(&go);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* D7: many runtime lifecycles; fds and threads return to baseline
 * (checked by the harness teardown), memory by ASan / valgrind. */
static void create_destroy_cycles(void **state) {
  (void)state;
  unsigned n = (unsigned)test_scale(1000);
  for (unsigned i = 0; i < n; i++) {
    treadle_runtime_t *rt = test_runtime();
    int v = (int)i;
    assert_int_equal(
        treadle_runtime_block_on(rt, &ready_vt, &v, sizeof v, NULL), (int)i);
    /* leave a pending task behind for shutdown */
    assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &pending_vt,
                                   NULL, 0, NULL),
                     0);
    assert_int_equal(treadle_runtime_free(rt), 0);
  }
}

static void out_of_memory_while_building(void **state) {
  (void)state;
  /* Every allocation the build makes fails in turn: each attempt returns
   * ENOMEM and leaks nothing, until one succeeds. */
  treadle_builder_t *b = test_builder();
  treadle_builder_enable_all(b);
  treadle_runtime_t *rt = NULL;
  long k = 0;
  for (;; k++) {
    treadle__alloc_fail_after(k);
    treadle_err_t err = treadle_builder_build(b, &rt);
    treadle__alloc_fail_after(-1);
    if (err == 0)
      break;
    assert_int_equal(err, TREADLE_ENOMEM);
    assert_null(rt);
  }
  assert_true(k >= 2);
  treadle_builder_free(b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* block_on returns only once its task completed, or before the task ran:
 * a binding's root future points into the caller's memory (Python's
 * block_on freed a wake fd the root still polled on a worker, issue 15).
 * Each allocation in turn fails while the task sleeps 20 ms; its polls
 * and its drop count those that came after block_on returned. */
typedef struct {
  _Atomic int returned; /* block_on returned */
  _Atomic int late;     /* polls and drops after that */
  _Atomic int live;     /* polled, not yet dropped */
} late_probe_t;

typedef struct {
  late_probe_t *p;
  treadle_sleep_t sleep;
  bool armed;
} late_task_t;

static treadle_poll_t late_poll(treadle_cx_t *cx, void *st) {
  late_task_t *t = st;
  if (atomic_load(&t->p->returned))
    atomic_fetch_add(&t->p->late, 1);
  if (!t->armed) {
    treadle_sleep_init(&t->sleep, 20 * TREADLE_NSEC_PER_MSEC);
    t->armed = true;
    atomic_fetch_add(&t->p->live, 1);
  }
  treadle_err_t err;
  if (treadle_sleep_poll(&t->sleep, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void late_drop(void *st) {
  late_task_t *t = st;
  if (atomic_load(&t->p->returned))
    atomic_fetch_add(&t->p->late, 1);
  if (t->armed) {
    treadle_sleep_drop(&t->sleep);
    atomic_fetch_sub(&t->p->live, 1);
  }
}

static const treadle_task_vtable_t late_vt = {.poll = late_poll,
                                              .drop = late_drop};

static void out_of_memory_in_block_on(void **state) {
  (void)state;
  long k = 0, enomem = 0;
  for (bool fired = true; fired; k++) {
    treadle_runtime_t *rt = test_runtime();
    late_probe_t probe = {0};
    late_task_t task = {.p = &probe};
    treadle__alloc_fail_after(k);
    treadle_err_t err =
        treadle_runtime_block_on(rt, &late_vt, &task, sizeof task, NULL);
    atomic_store(&probe.returned, 1);
    fired = treadle__alloc_fail_after(-1) < 0;
    assert_int_equal(atomic_load(&probe.live), 0);
    assert_int_equal(treadle_runtime_free(rt), 0); /* drops a task left */
    assert_int_equal(atomic_load(&probe.late), 0);
    if (err == TREADLE_ENOMEM)
      enomem++;
    else
      assert_int_equal(err, 0);
  }
  assert_true(enomem >= 1);
}

static const struct CMUnitTest tests[] = {
    TEST(builder_rejects_bad_values),
    RT_TEST(block_on_returns_the_output),
    RT_TEST(nesting_is_an_error),
    RT_TEST(spawn_from_plain_threads),
    RT_TEST(remote_spawn_wakes_an_idle_runtime),
    RT_TEST(shutdown_drops_every_task),
    RT_TEST(shutdown_survives_meddling_drops),
    RT_TEST(use_after_shutdown_is_an_error),
    RT_TEST(block_on_from_two_threads),
    RT_TEST(free_while_another_thread_drives_is_busy),
    RT_TEST(create_destroy_cycles),
    RT_TEST(out_of_memory_while_building),
    RT_TEST(out_of_memory_in_block_on),
};

TEST_MAIN(tests)
