/* Stress: millions of spawns from tasks and plain threads, storms of
 * wakes from foreign threads, aborts and joins racing completions, a
 * spawning tree that overflows local queues and forces steals, and the
 * local queue itself under thieves (TESTING.md S2, S3, S4, S8, S9).
 * Every task is counted exactly once (a bitmap, set with fetch_or).
 * Counts scale with TREADLE_TEST_SCALE; under TSan they are smaller, and
 * the tsan preset also shrinks local queues to 4 slots. */
#include "harness.h"
#include "internal.h"

/* ------------------------------------------------------------ helpers */

typedef struct {
  _Atomic uint64_t *bits;
  size_t n;
  _Atomic size_t left;
  _Atomic(treadle_waker_t *) waiter;
} tally_t;

static void tally_init(tally_t *t, size_t n) {
  t->bits = calloc((n + 63) / 64, sizeof *t->bits);
  t->n = n;
  atomic_init(&t->left, n);
  atomic_init(&t->waiter, NULL);
}

/* Marks `i` done; a second mark of the same i fails the test. */
static void tally_mark(tally_t *t, size_t i) {
  uint64_t bit = UINT64_C(1) << (i % 64);
  uint64_t prev = atomic_fetch_or(&t->bits[i / 64], bit);
  assert_true((prev & bit) == 0);
  if (atomic_fetch_sub(&t->left, 1) == 1) {
    treadle_waker_t *w = atomic_exchange(&t->waiter, NULL);
    if (w != NULL)
      treadle_wake(w);
  }
}

static void tally_check_all(tally_t *t) {
  assert_int_equal(atomic_load(&t->left), 0);
  for (size_t i = 0; i < t->n; i++)
    assert_true(atomic_load(&t->bits[i / 64]) & (UINT64_C(1) << (i % 64)));
  free(t->bits);
}

static treadle_poll_t tally_wait_poll(treadle_cx_t *cx, void *st) {
  tally_t *t = *(tally_t **)st;
  if (atomic_load(&t->left) == 0)
    return TREADLE_READY;
  treadle_waker_drop(
      atomic_exchange(&t->waiter, treadle_waker_clone(treadle_cx_waker(cx))));
  if (atomic_load(&t->left) == 0) {
    treadle_waker_drop(atomic_exchange(&t->waiter, NULL));
    return TREADLE_READY;
  }
  return TREADLE_PENDING;
}

static void tally_wait(treadle_runtime_t *rt, tally_t *t) {
  static const treadle_task_vtable_t vt = {.poll = tally_wait_poll};
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &t, sizeof t, NULL), 0);
  treadle_waker_drop(atomic_exchange(&t->waiter, NULL));
}

/* -------------------------------------------------------- spawn storm */

typedef struct {
  tally_t *tally;
  size_t index;
} leaf_t;

static treadle_poll_t leaf_poll(treadle_cx_t *cx, void *st) {
  (void)cx;
  leaf_t *l = st;
  tally_mark(l->tally, l->index);
  return TREADLE_READY;
}

static const treadle_task_vtable_t leaf_vt = {.poll = leaf_poll};

typedef struct {
  tally_t *tally;
  size_t first, count;
} spawner_t;

static treadle_poll_t spawner_poll(treadle_cx_t *cx, void *st) {
  spawner_t *s = st;
  for (size_t i = 0; i < s->count; i++) {
    leaf_t l = {s->tally, s->first + i};
    assert_int_equal(
        treadle_spawn(treadle_cx_handle(cx), &leaf_vt, &l, sizeof l, NULL), 0);
  }
  return TREADLE_READY;
}

static const treadle_task_vtable_t spawner_vt = {.poll = spawner_poll};

typedef struct {
  treadle_handle_t *h;
  spawner_t range;
} thread_spawner_t;

static void *spawn_thread(void *arg) {
  thread_spawner_t *ts = arg;
  for (size_t i = 0; i < ts->range.count; i++) {
    leaf_t l = {ts->range.tally, ts->range.first + i};
    assert_int_equal(treadle_spawn(ts->h, &leaf_vt, &l, sizeof l, NULL), 0);
  }
  return NULL;
}

static void spawn_storm_counted(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  size_t from_tasks = test_scale(1000000), from_threads = test_scale(200000);
  tally_t tally;
  tally_init(&tally, from_tasks + 2 * from_threads);
  /* Spawner tasks of 1000 leaves each, plus two plain threads. */
  size_t chunk = 1000;
  for (size_t first = 0; first < from_tasks; first += chunk) {
    spawner_t s = {&tally, first,
                   first + chunk <= from_tasks ? chunk : from_tasks - first};
    assert_int_equal(treadle_spawn(h, &spawner_vt, &s, sizeof s, NULL), 0);
  }
  thread_spawner_t ts[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    ts[i] = (thread_spawner_t){h, {&tally, from_tasks + i * from_threads,
                                   from_threads}};
    pthread_create(&th[i], NULL, spawn_thread, &ts[i]);
  }
  tally_wait(rt, &tally);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  tally_check_all(&tally);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------- wake storms */

typedef struct {
  _Atomic(treadle_waker_t *) *slot;
  tally_t *tally;
  size_t index;
  int polls_needed;
} sleeper_t;

static treadle_poll_t sleeper_poll(treadle_cx_t *cx, void *st) {
  sleeper_t *s = st;
  if (--s->polls_needed == 0) {
    tally_mark(s->tally, s->index);
    return TREADLE_READY;
  }
  treadle_waker_drop(
      atomic_exchange(s->slot, treadle_waker_clone(treadle_cx_waker(cx))));
  return TREADLE_PENDING;
}

static void sleeper_drop(void *st) {
  treadle_waker_drop(atomic_exchange(((sleeper_t *)st)->slot, NULL));
}

static const treadle_task_vtable_t sleeper_vt = {.poll = sleeper_poll,
                                                 .drop = sleeper_drop};

typedef struct {
  _Atomic(treadle_waker_t *) *slots;
  size_t n;
  tally_t *tally;
  unsigned seed;
} storm_t;

static void *storm_thread(void *arg) {
  storm_t *s = arg;
  unsigned x = s->seed;
  while (atomic_load(&s->tally->left) > 0) {
    x = x * 1103515245u + 12345u;
    size_t i = (x >> 8) % s->n;
    treadle_waker_t *w = atomic_exchange(&s->slots[i], NULL);
    if (w == NULL)
      continue;
    switch ((x >> 4) % 3) {
    case 0:
      treadle_wake(w);
      break;
    case 1:
      treadle_wake_by_ref(w);
      treadle_wake_by_ref(w);
      treadle_waker_drop(w);
      break;
    default:
      treadle_wake(treadle_waker_clone(w));
      treadle_wake(w);
      break;
    }
  }
  return NULL;
}

static void foreign_wake_storm(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  size_t n = test_scale(5000);
  tally_t tally;
  tally_init(&tally, n);
  _Atomic(treadle_waker_t *) *slots = calloc(n, sizeof *slots);
  for (size_t i = 0; i < n; i++) {
    sleeper_t s = {&slots[i], &tally, i, 20};
    assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &sleeper_vt,
                                   &s, sizeof s, NULL),
                     0);
  }
  enum { THREADS = 3 };
  storm_t st[THREADS];
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++) {
    st[i] = (storm_t){slots, n, &tally, 7u * (unsigned)i + 1};
    pthread_create(&th[i], NULL, storm_thread, &st[i]);
  }
  tally_wait(rt, &tally);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  tally_check_all(&tally);
  assert_int_equal(treadle_runtime_free(rt), 0);
  for (size_t i = 0; i < n; i++)
    assert_null(atomic_load(&slots[i])); /* every drop took its waker */
  free(slots);
}

/* ------------------------------------- aborts and joins vs completion */

static _Atomic int outputs_made, outputs_freed, states_dropped;

typedef struct {
  int yields;
} quick_t;

static treadle_poll_t quick_poll(treadle_cx_t *cx, void *st) {
  quick_t *q = st;
  if (q->yields-- > 0) {
    treadle_cx_yield(cx);
    return TREADLE_PENDING;
  }
  int *v = malloc(sizeof *v);
  *v = 1;
  atomic_fetch_add(&outputs_made, 1);
  treadle_cx_set_output(cx, 0, v);
  return TREADLE_READY;
}

static void quick_drop(void *st) {
  (void)st;
  atomic_fetch_add(&states_dropped, 1);
}

static void free_output(void *v) {
  free(v);
  atomic_fetch_add(&outputs_freed, 1);
}

static const treadle_task_vtable_t quick_vt = {
    .poll = quick_poll, .drop = quick_drop, .drop_output = free_output};

typedef struct {
  treadle_join_t **joins;
  size_t n;
} aborter_t;

static void *abort_thread(void *arg) {
  aborter_t *a = arg;
  for (size_t i = 0; i < a->n; i += 3)
    treadle_join_abort(a->joins[i]);
  for (size_t i = 1; i < a->n; i += 3)
    treadle_join_abort(a->joins[i]);
  return NULL;
}

typedef struct {
  treadle_join_t **joins;
  size_t n, next;
  size_t completed, cancelled;
} join_all_t;

static treadle_poll_t join_all_poll(treadle_cx_t *cx, void *st) {
  join_all_t *a = *(join_all_t **)st;
  while (a->next < a->n) {
    treadle_err_t err;
    void *v;
    if (treadle_join_poll(a->joins[a->next], cx, &err, &v) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err == 0) {
      free_output(v);
      a->completed++;
    } else {
      assert_int_equal(err, TREADLE_ECANCELED);
      assert_null(v);
      a->cancelled++;
    }
    a->next++;
  }
  return TREADLE_READY;
}

static void aborts_and_joins_race_completion(void **state) {
  (void)state;
  size_t n = test_scale(20000);
  unsigned rounds = (unsigned)test_scale(5);
  for (unsigned r = 0; r < rounds; r++) {
    treadle_runtime_t *rt = test_runtime();
    atomic_store(&outputs_made, 0);
    atomic_store(&outputs_freed, 0);
    atomic_store(&states_dropped, 0);
    treadle_join_t **joins = calloc(n, sizeof *joins);
    for (size_t i = 0; i < n; i++) {
      quick_t q = {(int)(i % 4)};
      assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &quick_vt,
                                     &q, sizeof q, &joins[i]),
                       0);
    }
    aborter_t ab = {joins, n};
    pthread_t th;
    pthread_create(&th, NULL, abort_thread, &ab);
    /* Join the first half from a task; the rest are detached after. */
    join_all_t all = {joins, n / 2, 0, 0, 0};
    join_all_t *ap = &all;
    static const treadle_task_vtable_t vt = {.poll = join_all_poll};
    assert_int_equal(treadle_runtime_block_on(rt, &vt, &ap, sizeof ap, NULL),
                     0);
    pthread_join(th, NULL);
    for (size_t i = 0; i < n; i++)
      treadle_join_detach(joins[i]);
    assert_int_equal(treadle_runtime_free(rt), 0);
    /* Every state dropped once; every output freed once, by the joiner or
     * by drop_output; completed + cancelled = joined. */
    assert_int_equal(atomic_load(&states_dropped), (int)n);
    assert_int_equal(all.completed + all.cancelled, n / 2);
    assert_int_equal(atomic_load(&outputs_freed), atomic_load(&outputs_made));
    free(joins);
  }
}

/* --------------------------------------------- a tree that is stolen */

typedef struct {
  tally_t *tally;
  size_t index; /* heap numbering: children 2i+1, 2i+2 */
  int yields;
} node_t;

static treadle_poll_t node_poll(treadle_cx_t *cx, void *st);
static const treadle_task_vtable_t node_vt = {.poll = node_poll};

static treadle_poll_t node_poll(treadle_cx_t *cx, void *st) {
  node_t *n = st;
  if (n->yields == 2) {
    for (size_t c = 2 * n->index + 1; c <= 2 * n->index + 2; c++) {
      if (c >= n->tally->n)
        break;
      node_t child = {n->tally, c, 2};
      assert_int_equal(treadle_spawn(treadle_cx_handle(cx), &node_vt, &child,
                                     sizeof child, NULL),
                       0);
    }
  }
  if (n->yields-- > 0) {
    treadle_cx_yield(cx);
    return TREADLE_PENDING;
  }
  tally_mark(n->tally, n->index);
  return TREADLE_READY;
}

static void spawning_tree_is_stolen(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  tally_t tally;
  tally_init(&tally, test_scale(500000));
  node_t root = {&tally, 0, 2};
  assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &node_vt, &root,
                                 sizeof root, NULL),
                   0);
  tally_wait(rt, &tally);
  tally_check_all(&tally);
  treadle_runtime_metrics_t m;
  treadle_handle_metrics(treadle_runtime_handle(rt), &m);
  uint64_t polls = 0;
  for (unsigned i = 0; i < m.workers; i++) {
    treadle_worker_metrics_t w;
    treadle_handle_worker_metrics(treadle_runtime_handle(rt), i, &w);
    polls += w.polls;
  }
  assert_true(polls >= 3 * tally.n); /* three polls per node */
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* --------------------------------------------- the local queue itself */

/* S2/S3: the owner pushes ids and pops some while thieves steal; with the
 * inject queue catching overflows, every id is seen exactly once. */
typedef struct {
  treadle__runq_t *victim;
  treadle__runq_t own;
  treadle__task_t *base;
  tally_t *tally;
  _Atomic bool *stop;
} thief_t;

static void *thief_main(void *arg) {
  thief_t *t = arg;
  for (;;) {
    bool stop = atomic_load(t->stop);
    uint32_t stolen;
    treadle__task_t *task =
        treadle__runq_steal_into(t->victim, &t->own, &stolen);
    if (task == NULL && stop)
      break;
    while (task != NULL) {
      tally_mark(t->tally, (size_t)(task - t->base));
      task = treadle__runq_pop(&t->own);
    }
  }
  return NULL;
}

static void run_conservation(uint32_t start) {
  size_t n = test_scale(1000000);
  treadle__task_t *tasks = calloc(n, sizeof *tasks);
  tally_t tally;
  tally_init(&tally, n);
  treadle__runq_t *q = calloc(1, sizeof *q);
  treadle__runq_init(q);
  /* S3: start the counters just before they wrap. */
  atomic_store(&q->head, (uint64_t)start | ((uint64_t)start << 32));
  atomic_store(&q->tail, start);
  treadle__inject_t inject;
  treadle__inject_init(&inject);
  _Atomic bool stop = false;
  enum { THIEVES = 3 };
  thief_t *thieves = calloc(THIEVES, sizeof *thieves);
  pthread_t th[THIEVES];
  for (int i = 0; i < THIEVES; i++) {
    thieves[i] = (thief_t){.victim = q, .base = tasks, .tally = &tally,
                           .stop = &stop};
    treadle__runq_init(&thieves[i].own);
    atomic_store(&thieves[i].own.head,
                 (uint64_t)start | ((uint64_t)start << 32));
    atomic_store(&thieves[i].own.tail, start);
    pthread_create(&th[i], NULL, thief_main, &thieves[i]);
  }
  treadle__task_t *t;
  for (size_t i = 0; i < n; i++) {
    treadle__runq_push(q, &tasks[i], &inject);
    if (i % 3 == 0 && (t = treadle__runq_pop(q)) != NULL)
      tally_mark(&tally, (size_t)(t - tasks));
    if (i % 64 == 0)
      while ((t = treadle__inject_pop(&inject)) != NULL)
        tally_mark(&tally, (size_t)(t - tasks));
  }
  while ((t = treadle__runq_pop(q)) != NULL)
    tally_mark(&tally, (size_t)(t - tasks));
  atomic_store(&stop, true);
  for (int i = 0; i < THIEVES; i++)
    pthread_join(th[i], NULL);
  while ((t = treadle__inject_pop(&inject)) != NULL)
    tally_mark(&tally, (size_t)(t - tasks));
  tally_check_all(&tally);
  /* S4: popping an empty queue returns nothing and changes nothing. */
  uint64_t head = atomic_load(&q->head);
  assert_null(treadle__runq_pop(q));
  assert_true(atomic_load(&q->head) == head);
  treadle__inject_destroy(&inject);
  free(thieves);
  free(q);
  free(tasks);
}

static void local_queue_conserves_tasks(void **state) {
  (void)state;
  run_conservation(0);
}

static void local_queue_indices_wrap(void **state) {
  (void)state;
  run_conservation(UINT32_MAX - 5);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(spawn_storm_counted),
    RT_TEST(foreign_wake_storm),
    RT_TEST(aborts_and_joins_race_completion),
    RT_TEST(spawning_tree_is_stolen),
    TEST(local_queue_conserves_tasks),
    TEST(local_queue_indices_wrap),
};

TEST_MAIN(tests)
