/* Scheduler features across flavors: pinned tasks, the current handle,
 * metrics, the dump, the slow-poll warning, shutdown while tasks run and
 * spawns racing shutdown (TESTING.md S5, D4). */
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

static unsigned workers_of(treadle_runtime_t *rt) {
  treadle_runtime_metrics_t m;
  assert_int_equal(treadle_handle_metrics(treadle_runtime_handle(rt), &m), 0);
  return m.workers;
}

/* Counts down a number of tasks; the last wakes whoever waits. */
typedef struct {
  _Atomic int left;
  _Atomic(treadle_waker_t *) waiter;
} latch_t;

static void latch_done(latch_t *l) {
  if (atomic_fetch_sub(&l->left, 1) == 1) {
    treadle_waker_t *w = atomic_exchange(&l->waiter, NULL);
    if (w != NULL)
      treadle_wake(w);
  }
}

static treadle_poll_t latch_poll(treadle_cx_t *cx, void *st) {
  latch_t *l = *(latch_t **)st;
  if (atomic_load(&l->left) == 0)
    return TREADLE_READY;
  treadle_waker_drop(
      atomic_exchange(&l->waiter, treadle_waker_clone(treadle_cx_waker(cx))));
  if (atomic_load(&l->left) == 0) {
    treadle_waker_drop(atomic_exchange(&l->waiter, NULL));
    return TREADLE_READY;
  }
  return TREADLE_PENDING;
}

static const treadle_task_vtable_t latch_vt = {.poll = latch_poll};

static void wait_latch(treadle_runtime_t *rt, latch_t *l) {
  assert_int_equal(treadle_runtime_block_on(rt, &latch_vt, &l, sizeof l,
                                            NULL),
                   0);
  treadle_waker_drop(atomic_exchange(&l->waiter, NULL));
}

/* ------------------------------------------------------ pinned tasks */

typedef struct {
  int want;              /* the worker it is pinned to */
  int polls_left;
  _Atomic int *strays;   /* polls seen on another worker */
  latch_t *latch;
  _Atomic(treadle_waker_t *) *parked; /* woken by a plain thread */
} pinned_t;

static treadle_poll_t pinned_poll(treadle_cx_t *cx, void *st) {
  pinned_t *p = st;
  if (treadle_cx_worker(cx) != p->want)
    atomic_fetch_add(p->strays, 1);
  if (--p->polls_left == 0) {
    latch_done(p->latch);
    return TREADLE_READY;
  }
  if (p->polls_left % 2) {
    treadle_cx_yield(cx);
  } else {
    /* Park; a plain thread wakes it (the inbox path). */
    treadle_waker_drop(atomic_exchange(
        p->parked, treadle_waker_clone(treadle_cx_waker(cx))));
  }
  return TREADLE_PENDING;
}

static const treadle_task_vtable_t pinned_vt = {.poll = pinned_poll};

typedef struct {
  _Atomic(treadle_waker_t *) *slots;
  size_t n;
  latch_t *latch;
} waker_pump_t;

static void *pump_thread(void *arg) {
  waker_pump_t *wp = arg;
  while (atomic_load(&wp->latch->left) > 0) {
    for (size_t i = 0; i < wp->n; i++) {
      treadle_waker_t *w = atomic_exchange(&wp->slots[i], NULL);
      if (w != NULL)
        treadle_wake(w);
    }
    sched_yield();
  }
  return NULL;
}

static void pinned_tasks_stay_on_their_worker(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  unsigned workers = workers_of(rt);
  size_t per = 8, n = per * workers;
  _Atomic int strays = 0;
  latch_t latch = {.left = (int)n};
  _Atomic(treadle_waker_t *) *slots = calloc(n, sizeof *slots);
  for (size_t i = 0; i < n; i++) {
    pinned_t p = {.want = (int)(i % workers),
                  .polls_left = (int)test_scale(200) + 1,
                  .strays = &strays,
                  .latch = &latch,
                  .parked = &slots[i]};
    treadle_spawn_opts_t opts = TREADLE_SPAWN_OPTS_INIT;
    opts.worker = p.want;
    opts.name = "pinned";
    assert_int_equal(treadle_spawn_with(treadle_runtime_handle(rt),
                                        &pinned_vt, &p, sizeof p, &opts,
                                        NULL),
                     0);
  }
  waker_pump_t wp = {slots, n, &latch};
  pthread_t th;
  pthread_create(&th, NULL, pump_thread, &wp);
  wait_latch(rt, &latch);
  pthread_join(th, NULL);
  assert_int_equal(atomic_load(&strays), 0);
  for (size_t i = 0; i < n; i++)
    treadle_waker_drop(atomic_load(&slots[i]));
  free(slots);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void pinning_to_a_missing_worker_fails(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_spawn_opts_t opts = TREADLE_SPAWN_OPTS_INIT;
  opts.worker = (int)workers_of(rt);
  latch_t l = {0};
  latch_t *lp = &l;
  treadle_join_t *j = (treadle_join_t *)1;
  assert_int_equal(treadle_spawn_with(treadle_runtime_handle(rt), &latch_vt,
                                      &lp, sizeof lp, &opts, &j),
                   TREADLE_EINVAL);
  assert_null(j);
  opts.worker = -2;
  assert_int_equal(treadle_spawn_with(treadle_runtime_handle(rt), &latch_vt,
                                      &lp, sizeof lp, &opts, NULL),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ----------------------------------------------------------- handles */

static treadle_poll_t current_poll(treadle_cx_t *cx, void *st) {
  treadle_handle_t **seen = *(treadle_handle_t ***)st;
  *seen = treadle_handle_current();
  assert_ptr_equal(*seen, treadle_cx_handle(cx));
  assert_true(treadle_cx_worker(cx) >= 0);
  assert_true(treadle_cx_task_id(cx) != 0);
  return TREADLE_READY;
}

static void handle_current_inside_and_outside(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  assert_null(treadle_handle_current());
  treadle_handle_t *seen = NULL;
  treadle_handle_t **sp = &seen;
  static const treadle_task_vtable_t vt = {.poll = current_poll};
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &sp, sizeof sp, NULL), 0);
  assert_ptr_equal(seen, treadle_runtime_handle(rt));
  assert_null(treadle_handle_current());
  assert_int_equal(treadle_cx_worker(NULL), -1);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ----------------------------------------------------------- metrics */

typedef struct {
  latch_t *latch;
} counted_t;

static treadle_poll_t counted_poll(treadle_cx_t *cx, void *st) {
  (void)cx;
  latch_done(((counted_t *)st)->latch);
  return TREADLE_READY;
}

static const treadle_task_vtable_t counted_vt = {.poll = counted_poll};

static void metrics_add_up(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  size_t n = test_scale(10000);
  latch_t latch = {.left = (int)n};
  for (size_t i = 0; i < n; i++) {
    counted_t c = {&latch};
    assert_int_equal(treadle_spawn(h, &counted_vt, &c, sizeof c, NULL), 0);
  }
  wait_latch(rt, &latch);
  treadle_runtime_metrics_t m;
  assert_int_equal(treadle_handle_metrics(h, &m), 0);
  uint64_t polls = 0;
  for (unsigned i = 0; i < m.workers; i++) {
    treadle_worker_metrics_t w;
    assert_int_equal(treadle_handle_worker_metrics(h, i, &w), 0);
    polls += w.polls;
    assert_true(w.steal_operations <= w.steals);
  }
  assert_true(polls >= n + 1); /* every task, and the latch task */
  treadle_worker_metrics_t w;
  assert_int_equal(treadle_handle_worker_metrics(h, m.workers, &w),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_handle_metrics(NULL, &m), TREADLE_EINVAL);
  assert_int_equal(treadle_handle_metrics(h, NULL), TREADLE_EINVAL);
  /* Every task has finished; live tasks are counted out as they finish,
   * which on multi_thread may be just after the latch opened. */
  do {
    assert_int_equal(treadle_handle_metrics(h, &m), 0);
  } while (m.live_tasks != 0 && (sched_yield(), true));
  assert_int_equal(m.inject_queue_depth, 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* -------------------------------------------------------------- dump */

typedef struct {
  treadle_sleep_t nap;
  latch_t *started;
  bool armed;
} napper_t;

static treadle_poll_t napper_poll(treadle_cx_t *cx, void *st) {
  napper_t *n = st;
  if (!n->armed) {
    treadle_sleep_init(&n->nap, 3600 * TREADLE_NSEC_PER_SEC);
    n->armed = true;
    treadle_err_t err;
    assert_int_equal(treadle_sleep_poll(&n->nap, cx, &err), TREADLE_PENDING);
    latch_done(n->started);
    return TREADLE_PENDING;
  }
  return treadle_sleep_poll(&n->nap, cx, NULL);
}

static void napper_drop(void *st) { treadle_sleep_drop(&((napper_t *)st)->nap); }

static const treadle_task_vtable_t napper_vt = {.poll = napper_poll,
                                                .drop = napper_drop};

static void dump_lists_waiting_tasks(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  latch_t started = {.left = 2};
  napper_t n = {.started = &started};
  treadle_spawn_opts_t opts = TREADLE_SPAWN_OPTS_INIT;
  opts.name = "napper";
  treadle_join_t *j1, *j2;
  assert_int_equal(treadle_spawn_with(treadle_runtime_handle(rt), &napper_vt,
                                      &n, sizeof n, &opts, &j1),
                   0);
  opts.name = "second nap";
  assert_int_equal(treadle_spawn_with(treadle_runtime_handle(rt), &napper_vt,
                                      &n, sizeof n, &opts, &j2),
                   0);
  wait_latch(rt, &started);
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  assert_int_equal(treadle_runtime_dump(rt, out), 0);
  fclose(out);
  char want[64];
  snprintf(want, sizeof want, "task %llu 'napper': waiting",
           (unsigned long long)treadle_join_task_id(j1));
  assert_non_null(strstr(text, want));
  assert_non_null(strstr(text, "'second nap': waiting"));
  assert_non_null(strstr(text, "waits on sleep"));
  assert_non_null(strstr(text, "runtime "));
  assert_non_null(strstr(text, "blocking pool: "));
  free(text);
  assert_int_equal(treadle_runtime_dump(NULL, stderr), TREADLE_EINVAL);
  assert_int_equal(treadle_runtime_dump(rt, NULL), TREADLE_EINVAL);
  treadle_join_detach(j1);
  treadle_join_detach(j2);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* A dump taken from outside while another thread drives a
 * current_thread runtime goes through a task on that thread. */
typedef struct {
  treadle_runtime_t *rt;
  latch_t *go;
} driver_arg_t;

static void *driver_thread(void *arg) {
  driver_arg_t *d = arg;
  wait_latch(d->rt, d->go);
  return NULL;
}

static void dump_while_another_thread_drives(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  latch_t go = {.left = 1};
  driver_arg_t d = {rt, &go};
  pthread_t th;
  pthread_create(&th, NULL, driver_thread, &d);
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  assert_int_equal(treadle_runtime_dump(rt, out), 0);
  fclose(out);
  assert_non_null(strstr(text, "runtime "));
  free(text);
  latch_done(&go);
  pthread_join(th, NULL);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------- slow poll warning */

static treadle_poll_t slow_poll(treadle_cx_t *cx, void *st) {
  (void)cx;
  (void)st;
  struct timespec ts = {0, 20 * 1000 * 1000}; /* blocks its worker */
  nanosleep(&ts, NULL);
  return TREADLE_READY;
}

static void slow_polls_are_reported(void **state) {
  (void)state;
  treadle_builder_t *b = test_builder();
  treadle_builder_enable_all(b);
  assert_int_equal(treadle_builder_warn_slow_polls(b, TREADLE_NSEC_PER_MSEC),
                   0);
  treadle_runtime_t *rt;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  /* Catch stderr in a file for the length of the run. */
  char path[] = "/tmp/treadle-slow-XXXXXX";
  int fd = mkstemp(path);
  fflush(stderr);
  int saved = dup(2);
  dup2(fd, 2);
  static const treadle_task_vtable_t vt = {.poll = slow_poll};
  treadle_spawn_opts_t opts = TREADLE_SPAWN_OPTS_INIT;
  opts.name = "sluggish";
  treadle_join_t *j;
  assert_int_equal(treadle_spawn_with(treadle_runtime_handle(rt), &vt, NULL, 0,
                                      &opts, &j),
                   0);
  latch_t none = {.left = 0};
  wait_latch(rt, &none);
  assert_int_equal(treadle_join_wait(j, NULL), 0);
  treadle_join_detach(j);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  char text[512] = {0};
  assert_true(pread(fd, text, sizeof text - 1, 0) > 0);
  close(fd);
  unlink(path);
  assert_non_null(strstr(text, "'sluggish' took"));
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------ shutdown */

/* Tasks that never stop yielding, on every worker: shutdown cancels them
 * as their polls return; each drop runs once. */
static _Atomic int spinner_drops;

static treadle_poll_t spinner_poll(treadle_cx_t *cx, void *st) {
  latch_t *started = *(latch_t **)st;
  if (started != NULL) {
    latch_done(started);
    *(latch_t **)st = NULL;
  }
  treadle_cx_yield(cx);
  return TREADLE_PENDING;
}

static void spinner_drop(void *st) {
  (void)st;
  atomic_fetch_add(&spinner_drops, 1);
}

static const treadle_task_vtable_t spinner_vt = {.poll = spinner_poll,
                                                 .drop = spinner_drop};

static void shutdown_while_tasks_spin(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  atomic_store(&spinner_drops, 0);
  size_t n = 64;
  latch_t started = {.left = (int)n};
  latch_t *sp = &started;
  for (size_t i = 0; i < n; i++)
    assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &spinner_vt,
                                   &sp, sizeof sp, NULL),
                     0);
  wait_latch(rt, &started);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&spinner_drops), (int)n);
}

/* D4: a thread spawns in a loop while the runtime shuts down: every spawn
 * fails with ESHUTDOWN or gives a handle that resolves. */
typedef struct {
  treadle_handle_t *h;
  _Atomic bool stop;
  treadle_join_t **joins;
  size_t cap;
  _Atomic size_t count;
} racer_t;

static treadle_poll_t quick_poll(treadle_cx_t *cx, void *st) {
  (void)cx;
  (void)st;
  return TREADLE_READY;
}

static const treadle_task_vtable_t quick_vt = {.poll = quick_poll,
                                               .drop = spinner_drop};

static void *spawn_racer(void *arg) {
  racer_t *r = arg;
  for (size_t i = 0; i < r->cap; i++) {
    treadle_join_t *j;
    treadle_err_t err = treadle_spawn(r->h, &quick_vt, NULL, 0, &j);
    if (err == TREADLE_ESHUTDOWN)
      break;
    assert_int_equal(err, 0);
    r->joins[i] = j;
    atomic_store(&r->count, i + 1);
  }
  return NULL;
}

static void spawn_racing_shutdown(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  atomic_store(&spinner_drops, 0);
  racer_t r = {.h = treadle_handle_ref(treadle_runtime_handle(rt)),
               .cap = test_scale(100000)};
  r.joins = calloc(r.cap, sizeof *r.joins);
  pthread_t th;
  pthread_create(&th, NULL, spawn_racer, &r);
  /* Let it get going, then shut down under it. */
  while (atomic_load(&r.count) < 100 && atomic_load(&r.count) < r.cap)
    sched_yield();
  assert_int_equal(treadle_runtime_free(rt), 0);
  pthread_join(th, NULL);
  size_t count = atomic_load(&r.count);
  for (size_t i = 0; i < count; i++) {
    treadle_err_t st = treadle_join_wait(r.joins[i], NULL);
    assert_true(st == 0 || st == TREADLE_ECANCELED);
    treadle_join_detach(r.joins[i]);
  }
  assert_int_equal(atomic_load(&spinner_drops), (int)count);
  free(r.joins);
  treadle_handle_unref(r.h);
}

/* ------------------------------------------------------------ fairness */

/* S5: a task that keeps respawning itself keeps a worker's local queue
 * busy forever; a task injected from a plain thread still runs (the
 * worker looks at the inject queue every 61 ticks), and stops it. */
typedef struct {
  _Atomic int *stop;
} respawner_t;

static treadle_poll_t respawner_poll(treadle_cx_t *cx, void *st);
static const treadle_task_vtable_t respawner_vt = {.poll = respawner_poll};

static treadle_poll_t respawner_poll(treadle_cx_t *cx, void *st) {
  respawner_t *r = st;
  if (!atomic_load(r->stop)) {
    treadle_err_t err =
        treadle_spawn(treadle_cx_handle(cx), &respawner_vt, r, sizeof *r, NULL);
    /* The last one may race the test's shutdown, once the stopper ran. */
    assert_true(err == 0 || err == TREADLE_ESHUTDOWN);
  }
  return TREADLE_READY;
}

static treadle_poll_t stopper_poll(treadle_cx_t *cx, void *st) {
  (void)cx;
  atomic_store(*(_Atomic int **)st, 1);
  return TREADLE_READY;
}

static void injected_task_is_not_starved(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  _Atomic int stop = 0;
  respawner_t r = {&stop};
  static const treadle_task_vtable_t stopper_vt = {.poll = stopper_poll};
  _Atomic int *sp = &stop;
  treadle_join_t *j;
  assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &respawner_vt,
                                 &r, sizeof r, NULL),
                   0);
  /* The stopper goes through the inject queue behind the respawner. */
  assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &stopper_vt, &sp,
                                 sizeof sp, &j),
                   0);
  latch_t none = {.left = 0};
  wait_latch(rt, &none);
  assert_int_equal(treadle_join_wait(j, NULL), 0);
  treadle_join_detach(j);
  assert_int_equal(atomic_load(&stop), 1);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* S6: two tasks waking each other through the LIFO slot cannot starve a
 * task waiting in the ring: the slot runs at most 3 tasks in a row. */
typedef struct {
  _Atomic(treadle_waker_t *) *peer; /* the other one's waker */
  _Atomic(treadle_waker_t *) *mine;
  _Atomic int *stop;
} pinger_t;

static treadle_poll_t pinger_poll(treadle_cx_t *cx, void *st) {
  pinger_t *p = st;
  if (atomic_load(p->stop))
    return TREADLE_READY;
  treadle_waker_drop(
      atomic_exchange(p->mine, treadle_waker_clone(treadle_cx_waker(cx))));
  treadle_waker_t *w = atomic_exchange(p->peer, NULL);
  if (w != NULL)
    treadle_wake(w); /* into this worker's LIFO slot */
  return TREADLE_PENDING;
}

static void pinger_drop(void *st) {
  pinger_t *p = st;
  treadle_waker_drop(atomic_exchange(p->mine, NULL));
}

static const treadle_task_vtable_t pinger_vt = {.poll = pinger_poll,
                                                .drop = pinger_drop};

typedef struct {
  pinger_t a, b;
  _Atomic int *stop;
  int step;
} lifo_main_t;

static treadle_poll_t lifo_main_poll(treadle_cx_t *cx, void *st) {
  lifo_main_t *m = *(lifo_main_t **)st;
  if (m->step++ == 0) {
    /* Spawned here, they wake each other into this worker's LIFO slot. */
    assert_int_equal(treadle_spawn(treadle_cx_handle(cx), &pinger_vt, &m->a,
                                   sizeof m->a, NULL),
                     0);
    assert_int_equal(treadle_spawn(treadle_cx_handle(cx), &pinger_vt, &m->b,
                                   sizeof m->b, NULL),
                     0);
    treadle_cx_yield(cx); /* behind them */
    return TREADLE_PENDING;
  }
  atomic_store(m->stop, 1); /* we ran: the ping-pong let us */
  return TREADLE_READY;
}

static void lifo_slot_cannot_starve_the_queue(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  _Atomic int stop = 0;
  _Atomic(treadle_waker_t *) wa = NULL, wb = NULL;
  lifo_main_t m = {.a = {&wb, &wa, &stop}, .b = {&wa, &wb, &stop},
                   .stop = &stop};
  lifo_main_t *mp = &m;
  static const treadle_task_vtable_t vt = {.poll = lifo_main_poll};
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &mp, sizeof mp, NULL),
                   0);
  /* Let the pingers see `stop`: wake whichever is parked. */
  treadle_waker_t *w;
  if ((w = atomic_exchange(&wa, NULL)) != NULL)
    treadle_wake(w);
  if ((w = atomic_exchange(&wb, NULL)) != NULL)
    treadle_wake(w);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&stop), 1);
}

/* S11: with many idle workers, a task spawned from outside wakes about one
 * of them, not all (one unpark per notification, at most half search). */
static void one_spawn_wakes_few_workers(void **state) {
  (void)state;
  if (strcmp(test_flavor(), "ct") == 0)
    skip();
  treadle_builder_t *b;
  assert_int_equal(treadle_builder_new(TREADLE_MULTI_THREAD, &b), 0);
  treadle_builder_worker_threads(b, 8);
  treadle_builder_enable_all(b);
  treadle_runtime_t *rt;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  treadle_handle_t *h = treadle_runtime_handle(rt);
  latch_t none = {.left = 0};
  latch_t *lp = &none;
  unsigned spawns = (unsigned)test_scale(2000);
  uint64_t before = 0, after = 0;
  treadle_worker_metrics_t w;
  for (unsigned i = 0; i < 8; i++) {
    treadle_handle_worker_metrics(h, i, &w);
    before += w.unparks;
  }
  for (unsigned i = 0; i < spawns; i++) {
    treadle_join_t *j;
    assert_int_equal(treadle_spawn(h, &latch_vt, &lp, sizeof lp, &j), 0);
    assert_int_equal(treadle_join_wait(j, NULL), 0);
    treadle_join_detach(j);
  }
  for (unsigned i = 0; i < 8; i++) {
    treadle_handle_worker_metrics(h, i, &w);
    after += w.unparks;
  }
  /* One worker woken per spawn, plus at most one more when the first one
   * stops searching while the queue is not yet seen empty. */
  assert_true(after - before <= 2 * (uint64_t)spawns);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------- memory */

/* Issue 3: 1,000,000 sleeping tasks fit in 256 MiB of resident memory.
 * Only on plain builds (sanitizers and valgrind change the sizes). */
static void million_sleepers_fit_in_256_mib(void **state) {
  (void)state;
  if (test_scale(100) != 100)
    skip();
  treadle_runtime_t *rt = test_runtime();
  size_t n = 1000000;
  latch_t started = {.left = (int)n};
  long before = test_rss_kib();
  for (size_t i = 0; i < n; i++) {
    napper_t nap = {.started = &started};
    assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &napper_vt,
                                   &nap, sizeof nap, NULL),
                     0);
  }
  wait_latch(rt, &started);
  long grown = test_rss_kib() - before;
  assert_true(grown > 0);
  assert_true(grown <= 256 * 1024);
  /* The latch task is counted out just after its joiner saw it finish. */
  treadle_runtime_metrics_t m;
  do {
    assert_int_equal(treadle_handle_metrics(treadle_runtime_handle(rt), &m),
                     0);
    assert_true(m.live_tasks >= n);
  } while (m.live_tasks != n && (sched_yield(), true));
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(million_sleepers_fit_in_256_mib),
    RT_TEST(pinned_tasks_stay_on_their_worker),
    RT_TEST(pinning_to_a_missing_worker_fails),
    RT_TEST(handle_current_inside_and_outside),
    RT_TEST(metrics_add_up),
    RT_TEST(dump_lists_waiting_tasks),
    RT_TEST(dump_while_another_thread_drives),
    RT_TEST(slow_polls_are_reported),
    RT_TEST(shutdown_while_tasks_spin),
    RT_TEST(spawn_racing_shutdown),
    RT_TEST(injected_task_is_not_starved),
    RT_TEST(lifo_slot_cannot_starve_the_queue),
    RT_TEST(one_spawn_wakes_few_workers),
};

TEST_MAIN(tests)
