/* treadle's runtime microbenchmarks, in the shape of ../shared/bench's
 * micro_tokio: each run prints one JSON line.
 *
 *   treadle_bench BENCH [--flavor current|multi] [--workers N] [N]
 *
 * BENCH: spawn_many (N tasks, default 1,000,000), yield_many (1000 tasks x
 * N yields, default 1000), chained_spawn (N, default 1,000,000), timers (N
 * tasks sleeping 0-100 ms, default 100,000), idle_timers (timers with N =
 * 1000 by default: timer precision on an idle runtime).
 *
 * All work starts inside the block_on task, a spawned task like any other
 * (as micro_tokio spawns its root task). */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "treadle.h"

static const char *flavor_name = "current";
static unsigned workers = 2;

static double secs_since(uint64_t t0) {
  return (double)(treadle_now() - t0) / 1e9;
}

static void json_head(const char *bench) {
  if (strcmp(flavor_name, "current") == 0)
    printf("{\"runtime\":\"treadle-current\",\"bench\":\"%s\"", bench);
  else
    printf("{\"runtime\":\"treadle-multi%u\",\"bench\":\"%s\"", workers,
           bench);
}

/* The root parks until the last worker task signals (tokio's Notify). */
typedef struct {
  _Atomic size_t left;
  _Atomic(treadle_waker_t *) root;
} done_t;

static void done_one(done_t *d) {
  /* acq_rel: the last decrement sees every task's work. */
  if (atomic_fetch_sub_explicit(&d->left, 1, memory_order_acq_rel) == 1) {
    treadle_waker_t *w = atomic_exchange(&d->root, NULL);
    if (w != NULL)
      treadle_wake(w);
  }
}

static void done_arm(done_t *d, treadle_cx_t *cx) {
  treadle_waker_drop(
      atomic_exchange(&d->root, treadle_waker_clone(treadle_cx_waker(cx))));
}

static bool done_finished(done_t *d) {
  return atomic_load_explicit(&d->left, memory_order_acquire) == 0;
}

/* ------------------------------------------------------------ spawn_many */

static treadle_poll_t spawn_child_poll(treadle_cx_t *cx, void *st) {
  (void)cx;
  done_one(*(done_t **)st);
  return TREADLE_READY;
}

static const treadle_task_vtable_t spawn_child_vt = {.poll =
                                                         spawn_child_poll};

typedef struct {
  size_t n;
  int stage;
  uint64_t t0;
  done_t done;
} spawn_many_t;

static treadle_poll_t spawn_many_poll(treadle_cx_t *cx, void *st) {
  spawn_many_t *s = st;
  if (s->stage == 0) {
    s->stage = 1;
    atomic_init(&s->done.left, s->n);
    done_arm(&s->done, cx);
    treadle_handle_t *h = treadle_cx_handle(cx);
    done_t *d = &s->done;
    s->t0 = treadle_now();
    for (size_t i = 0; i < s->n; i++)
      if (treadle_spawn(h, &spawn_child_vt, &d, sizeof d, NULL) != 0)
        abort();
  }
  if (!done_finished(&s->done))
    return TREADLE_PENDING;
  double secs = secs_since(s->t0);
  json_head("spawn_many");
  printf(",\"n\":%zu,\"secs\":%.6f,\"tasks_per_sec\":%.0f}\n", s->n, secs,
         (double)s->n / secs);
  return TREADLE_READY;
}

/* ------------------------------------------------------------ yield_many */

typedef struct {
  done_t *done;
  size_t left;
} yielder_t;

static treadle_poll_t yielder_poll(treadle_cx_t *cx, void *st) {
  yielder_t *y = st;
  if (y->left-- > 0) {
    treadle_cx_yield(cx);
    return TREADLE_PENDING;
  }
  done_one(y->done);
  return TREADLE_READY;
}

static const treadle_task_vtable_t yielder_vt = {.poll = yielder_poll};

typedef struct {
  size_t tasks, yields;
  int stage;
  uint64_t t0;
  done_t done;
} yield_many_t;

static treadle_poll_t yield_many_poll(treadle_cx_t *cx, void *st) {
  yield_many_t *s = st;
  if (s->stage == 0) {
    s->stage = 1;
    atomic_init(&s->done.left, s->tasks);
    done_arm(&s->done, cx);
    treadle_handle_t *h = treadle_cx_handle(cx);
    s->t0 = treadle_now();
    for (size_t i = 0; i < s->tasks; i++) {
      yielder_t y = {&s->done, s->yields};
      if (treadle_spawn(h, &yielder_vt, &y, sizeof y, NULL) != 0)
        abort();
    }
  }
  if (!done_finished(&s->done))
    return TREADLE_PENDING;
  double secs = secs_since(s->t0);
  double total = (double)s->tasks * (double)s->yields;
  json_head("yield_many");
  printf(",\"tasks\":%zu,\"yields_per_task\":%zu,\"secs\":%.6f,"
         "\"yields_per_sec\":%.0f}\n",
         s->tasks, s->yields, secs, total / secs);
  return TREADLE_READY;
}

/* --------------------------------------------------------- chained_spawn */

typedef struct {
  done_t *done;
  size_t left;
} link_t;

static treadle_poll_t link_poll(treadle_cx_t *cx, void *st);
static const treadle_task_vtable_t link_vt = {.poll = link_poll};

static treadle_poll_t link_poll(treadle_cx_t *cx, void *st) {
  link_t *l = st;
  if (l->left == 0) {
    done_one(l->done);
    return TREADLE_READY;
  }
  link_t next = {l->done, l->left - 1};
  if (treadle_spawn(treadle_cx_handle(cx), &link_vt, &next, sizeof next,
                    NULL) != 0)
    abort();
  return TREADLE_READY;
}

typedef struct {
  size_t n;
  int stage;
  uint64_t t0;
  done_t done;
} chained_t;

static treadle_poll_t chained_poll(treadle_cx_t *cx, void *st) {
  chained_t *s = st;
  if (s->stage == 0) {
    s->stage = 1;
    atomic_init(&s->done.left, 1);
    done_arm(&s->done, cx);
    s->t0 = treadle_now();
    link_t first = {&s->done, s->n - 1}; /* n tasks in all */
    if (treadle_spawn(treadle_cx_handle(cx), &link_vt, &first, sizeof first,
                      NULL) != 0)
      abort();
  }
  if (!done_finished(&s->done))
    return TREADLE_PENDING;
  double secs = secs_since(s->t0);
  json_head("chained_spawn");
  printf(",\"n\":%zu,\"secs\":%.6f,\"tasks_per_sec\":%.0f}\n", s->n, secs,
         (double)s->n / secs);
  return TREADLE_READY;
}

/* ---------------------------------------------------------------- timers */

/* Per task: sleep a pseudo-random 0-100 ms (the peers' xorshift sequence,
 * microsecond granularity); record when it called sleep and when it woke. */
typedef struct {
  treadle_sleep_t sleep;
  uint64_t dur_ns;
  uint64_t *start; /* out */
  uint64_t *woke;  /* out */
  bool started;
} timer_task_t;

static treadle_poll_t timer_task_poll(treadle_cx_t *cx, void *st) {
  timer_task_t *t = st;
  if (!t->started) {
    t->started = true;
    *t->start = treadle_now();
    treadle_sleep_until_init(&t->sleep, *t->start + t->dur_ns);
  }
  treadle_err_t err;
  if (treadle_sleep_poll(&t->sleep, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err != 0)
    abort();
  *t->woke = treadle_now();
  return TREADLE_READY;
}

static void timer_task_drop(void *st) {
  treadle_sleep_drop(&((timer_task_t *)st)->sleep);
}

static const treadle_task_vtable_t timer_task_vt = {.poll = timer_task_poll,
                                                    .drop = timer_task_drop};

typedef struct {
  const char *name;
  size_t n;
  size_t joined;
  uint64_t t0;
  uint64_t *durs, *starts, *wokes;
  treadle_join_t **joins;
} timers_t;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *sorted, size_t n, double p) {
  size_t idx = (size_t)((p / 100.0) * (double)(n - 1) + 0.5);
  return sorted[idx < n ? idx : n - 1];
}

static treadle_poll_t timers_poll(treadle_cx_t *cx, void *st) {
  timers_t *s = st;
  if (s->joins == NULL) {
    s->durs = calloc(s->n, sizeof *s->durs);
    s->starts = calloc(s->n, sizeof *s->starts);
    s->wokes = calloc(s->n, sizeof *s->wokes);
    s->joins = calloc(s->n, sizeof *s->joins);
    uint64_t x = UINT64_C(0x9E3779B97F4A7C15);
    for (size_t i = 0; i < s->n; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      s->durs[i] = (x % 100001) * TREADLE_NSEC_PER_USEC;
    }
    treadle_handle_t *h = treadle_cx_handle(cx);
    s->t0 = treadle_now();
    for (size_t i = 0; i < s->n; i++) {
      timer_task_t t = {.dur_ns = s->durs[i],
                        .start = &s->starts[i],
                        .woke = &s->wokes[i]};
      if (treadle_spawn(h, &timer_task_vt, &t, sizeof t, &s->joins[i]) != 0)
        abort();
    }
  }
  while (s->joined < s->n) {
    treadle_err_t err;
    if (treadle_join_poll(s->joins[s->joined], cx, &err, NULL) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    treadle_join_detach(s->joins[s->joined]);
    s->joined++;
  }
  double wall_ms = (double)(treadle_now() - s->t0) / 1e6;
  double *over = calloc(s->n, sizeof *over);
  uint64_t last = s->t0, last_start = s->t0, max_d = 0;
  for (size_t i = 0; i < s->n; i++) {
    uint64_t deadline = s->starts[i] + s->durs[i];
    over[i] = s->wokes[i] > deadline ? (double)(s->wokes[i] - deadline) / 1e3
                                     : 0.0;
    if (s->wokes[i] < deadline) {
      fprintf(stderr, "timer %zu woke %" PRIu64 " ns early\n", i,
              deadline - s->wokes[i]);
      abort();
    }
    if (s->wokes[i] > last)
      last = s->wokes[i];
    if (s->starts[i] > last_start)
      last_start = s->starts[i];
    if (s->durs[i] > max_d)
      max_d = s->durs[i];
  }
  qsort(over, s->n, sizeof *over, cmp_double);
  json_head(s->name);
  printf(",\"n\":%zu,\"wall_ms\":%.3f,\"all_started_ms\":%.3f,"
         "\"overshoot_p50_us\":%.1f,\"overshoot_p99_us\":%.1f,"
         "\"overshoot_max_us\":%.1f,\"last_wake_late_us\":%.1f}\n",
         s->n, wall_ms, (double)(last_start - s->t0) / 1e6,
         pct(over, s->n, 50), pct(over, s->n, 99), over[s->n - 1],
         ((double)(last - s->t0) - (double)max_d) / 1e3);
  free(over);
  free(s->durs);
  free(s->starts);
  free(s->wokes);
  free(s->joins);
  return TREADLE_READY;
}

/* ------------------------------------------------------------------ main */

static void usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s spawn_many|yield_many|chained_spawn|timers|idle_timers"
          " [--flavor current|multi] [--workers N] [N]\n",
          argv0);
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 2)
    usage(argv[0]);
  const char *bench = argv[1];
  long n = -1;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--flavor") == 0 && i + 1 < argc) {
      flavor_name = argv[++i];
      if (strcmp(flavor_name, "current") != 0 &&
          strcmp(flavor_name, "multi") != 0)
        usage(argv[0]);
    } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
      workers = (unsigned)atoi(argv[++i]);
    } else if (argv[i][0] >= '0' && argv[i][0] <= '9') {
      n = atol(argv[i]);
    } else {
      usage(argv[0]);
    }
  }

  treadle_builder_t *b;
  treadle_flavor_t flavor = strcmp(flavor_name, "current") == 0
                                ? TREADLE_CURRENT_THREAD
                                : TREADLE_MULTI_THREAD;
  if (treadle_builder_new(flavor, &b) != 0 ||
      treadle_builder_worker_threads(b, workers) != 0 ||
      treadle_builder_enable_all(b) != 0) {
    fprintf(stderr, "bad runtime settings\n");
    return 2;
  }
  treadle_runtime_t *rt;
  treadle_err_t err = treadle_builder_build(b, &rt);
  treadle_builder_free(b);
  if (err != 0) {
    fprintf(stderr, "building the runtime: %s\n", treadle_strerror(err));
    return 1;
  }

  if (strcmp(bench, "spawn_many") == 0) {
    static const treadle_task_vtable_t vt = {.poll = spawn_many_poll};
    spawn_many_t s = {.n = n > 0 ? (size_t)n : 1000000};
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, NULL);
  } else if (strcmp(bench, "yield_many") == 0) {
    static const treadle_task_vtable_t vt = {.poll = yield_many_poll};
    yield_many_t s = {.tasks = 1000, .yields = n > 0 ? (size_t)n : 1000};
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, NULL);
  } else if (strcmp(bench, "chained_spawn") == 0) {
    static const treadle_task_vtable_t vt = {.poll = chained_poll};
    chained_t s = {.n = n > 0 ? (size_t)n : 1000000};
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, NULL);
  } else if (strcmp(bench, "timers") == 0 ||
             strcmp(bench, "idle_timers") == 0) {
    static const treadle_task_vtable_t vt = {.poll = timers_poll};
    bool idle = strcmp(bench, "idle_timers") == 0;
    timers_t s = {.name = bench,
                  .n = n > 0 ? (size_t)n : idle ? 1000 : 100000};
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, NULL);
  } else {
    usage(argv[0]);
  }
  fflush(stdout);
  if (err != 0) {
    fprintf(stderr, "%s: %s\n", bench, treadle_strerror(err));
    return 1;
  }
  return treadle_runtime_free(rt) == 0 ? 0 : 1;
}
