/* treadle's runtime microbenchmarks, in the shape of ../shared/bench's
 * micro_tokio: each run prints one JSON line.
 *
 *   treadle_bench BENCH [--flavor current|multi] [--workers N] [N]
 *
 * BENCH: spawn_many (N tasks, default 1,000,000), yield_many (1000 tasks x
 * N yields, default 1000), chained_spawn (N, default 1,000,000), timers (N
 * tasks sleeping 0-100 ms, default 100,000), idle_timers (timers with N =
 * 1000 by default: timer precision on an idle runtime), ping_pong (N round
 * trips between two tasks through two capacity-1 channels, default
 * 1,000,000), cpu_bound (64 tasks x N xorshift steps, default 4,000,000:
 * run with --workers 1 and 2 to see the scaling), sleepers_rss (the
 * resident memory of N tasks asleep, default 1,000,000), held_timers (N
 * tasks, default 1000, sleeping from 1 ms to 60 s, spread evenly on a log
 * scale, held for --seconds S, default 10: the process CPU a runtime that
 * only waits uses, beside bench/rust's held_timers_tokio), spawn_processes
 * (N children of --program P, default 1000 of /bin/true, at most
 * --in-flight K at once, default 64, each spawned and waited for by one of
 * K tasks: beside bench/rust's processes_tokio; --wait-sigchld waits for
 * them through SIGCHLD, as Tokio 1.24 does, instead of pidfds, to compare
 * the two paths). --metrics prints the
 * runtime's metrics on stderr at the end.
 *
 * All work starts inside the block_on task, a spawned task like any other
 * (as micro_tokio spawns its root task). */
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "treadle.h"

/* The runtime's test hook (core/src/internal.h): children are waited for
 * through SIGCHLD instead of pidfds (spawn_processes --wait-sigchld). */
void treadle__process_force_sigchld(bool on);

static const char *flavor_name = "current";
static unsigned workers = 2;
static bool show_metrics = false;
static double hold_secs = 10;
static size_t in_flight = 64;
static const char *program = "/bin/true";
static bool wait_sigchld = false;

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

/* ------------------------------------------------------------ ping_pong */

/* A sends a number on channel 1, B sends it back + 1 on channel 2, n times;
 * both channels hold one item (tokio mpsc::channel(1)). Items are numbers
 * carried in the pointer, offset by one so that none is NULL. */
#define NUM(p) ((uint64_t)(uintptr_t)(p) - 1)
#define PTR(n) ((void *)(uintptr_t)((n) + 1))

typedef struct {
  treadle_mpsc_tx_t *tx;
  treadle_mpsc_rx_t *rx;
  size_t left;
  uint64_t v;
  bool sending;
} pinger_t;

static treadle_poll_t pinger_poll(treadle_cx_t *cx, void *st) {
  pinger_t *p = st;
  treadle_err_t err;
  for (;;) {
    if (p->sending) {
      if (p->left == 0) {
        treadle_cx_set_output(cx, 0, PTR(p->v));
        return TREADLE_READY;
      }
      if (treadle_mpsc_send_poll(p->tx, cx, PTR(p->v), &err) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err != 0)
        abort();
      p->sending = false;
    }
    void *item;
    if (treadle_mpsc_recv_poll(p->rx, cx, &item, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      abort();
    p->v = NUM(item);
    p->left--;
    p->sending = true;
  }
}

static void pinger_drop(void *st) {
  pinger_t *p = st;
  treadle_mpsc_tx_drop(p->tx);
  treadle_mpsc_rx_drop(p->rx);
}

static treadle_poll_t ponger_poll(treadle_cx_t *cx, void *st) {
  pinger_t *p = st;
  treadle_err_t err;
  for (;;) {
    if (p->sending) {
      if (treadle_mpsc_send_poll(p->tx, cx, PTR(p->v + 1), &err) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err != 0)
        abort();
      p->sending = false;
    }
    void *item;
    if (treadle_mpsc_recv_poll(p->rx, cx, &item, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err == TREADLE_ECHANCLOSED)
      return TREADLE_READY; /* A is done */
    if (err != 0)
      abort();
    p->v = NUM(item);
    p->sending = true;
  }
}

static const treadle_task_vtable_t pinger_vt = {.poll = pinger_poll,
                                                .drop = pinger_drop};
static const treadle_task_vtable_t ponger_vt = {.poll = ponger_poll,
                                                .drop = pinger_drop};

typedef struct {
  size_t n;
  uint64_t t0;
  treadle_join_t *a, *b;
  int stage;
} ping_pong_t;

static treadle_poll_t ping_pong_poll(treadle_cx_t *cx, void *st) {
  ping_pong_t *s = st;
  treadle_err_t err;
  void *out;
  if (s->stage == 0) {
    treadle_mpsc_tx_t *tx1, *tx2;
    treadle_mpsc_rx_t *rx1, *rx2;
    if (treadle_mpsc_new(1, NULL, &tx1, &rx1) != 0 ||
        treadle_mpsc_new(1, NULL, &tx2, &rx2) != 0)
      abort();
    treadle_handle_t *h = treadle_cx_handle(cx);
    s->t0 = treadle_now();
    pinger_t b = {.tx = tx2, .rx = rx1};
    pinger_t a = {.tx = tx1, .rx = rx2, .left = s->n, .sending = true};
    if (treadle_spawn(h, &ponger_vt, &b, sizeof b, &s->b) != 0 ||
        treadle_spawn(h, &pinger_vt, &a, sizeof a, &s->a) != 0)
      abort();
    s->stage = 1;
  }
  if (s->stage == 1) {
    if (treadle_join_poll(s->a, cx, &err, &out) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0 || NUM(out) != s->n)
      abort(); /* the number went round n times */
    treadle_join_detach(s->a);
    s->stage = 2;
  }
  if (treadle_join_poll(s->b, cx, &err, NULL) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_join_detach(s->b);
  double secs = secs_since(s->t0);
  json_head("ping_pong");
  printf(",\"round_trips\":%zu,\"secs\":%.6f,\"round_trips_per_sec\":%.0f,"
         "\"ns_per_round_trip\":%.1f}\n",
         s->n, secs, (double)s->n / secs, secs * 1e9 / (double)s->n);
  return TREADLE_READY;
}

/* ------------------------------------------------------------ cpu_bound */

/* 64 tasks each do a fixed amount of arithmetic, yielding every 4096
 * steps; run with 1 and 2 workers to see how the work scales. */
typedef struct {
  done_t *done;
  uint64_t left;
  uint64_t x;
  _Atomic uint64_t *sink;
} cruncher_t;

static treadle_poll_t cruncher_poll(treadle_cx_t *cx, void *st) {
  cruncher_t *c = st;
  for (unsigned i = 0; i < 4096 && c->left > 0; i++, c->left--) {
    c->x ^= c->x << 13;
    c->x ^= c->x >> 7;
    c->x ^= c->x << 17;
  }
  if (c->left > 0) {
    treadle_cx_yield(cx);
    return TREADLE_PENDING;
  }
  atomic_fetch_add_explicit(c->sink, c->x, memory_order_relaxed);
  done_one(c->done);
  return TREADLE_READY;
}

static const treadle_task_vtable_t cruncher_vt = {.poll = cruncher_poll};

typedef struct {
  size_t steps;
  int stage;
  uint64_t t0;
  done_t done;
  _Atomic uint64_t sink;
} cpu_bound_t;

static treadle_poll_t cpu_bound_poll(treadle_cx_t *cx, void *st) {
  cpu_bound_t *s = st;
  const size_t tasks = 64;
  if (s->stage == 0) {
    s->stage = 1;
    atomic_init(&s->done.left, tasks);
    done_arm(&s->done, cx);
    s->t0 = treadle_now();
    for (size_t i = 0; i < tasks; i++) {
      cruncher_t c = {&s->done, s->steps, 0x9E3779B97F4A7C15ull + i,
                      &s->sink};
      if (treadle_spawn(treadle_cx_handle(cx), &cruncher_vt, &c, sizeof c,
                        NULL) != 0)
        abort();
    }
  }
  if (!done_finished(&s->done))
    return TREADLE_PENDING;
  double secs = secs_since(s->t0);
  json_head("cpu_bound");
  printf(",\"tasks\":%zu,\"steps_per_task\":%zu,\"secs\":%.6f,"
         "\"steps_per_sec\":%.0f,\"checksum\":%llu}\n",
         tasks, s->steps, secs, (double)(tasks * s->steps) / secs,
         (unsigned long long)atomic_load(&s->sink) % 1000);
  return TREADLE_READY;
}

/* ---------------------------------------------------------- sleepers_rss */

/* N tasks (default 1,000,000) each sleeping an hour: the resident memory
 * they take, read from /proc/self/status before and after. */
static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  if (f != NULL)
    fclose(f);
  return kib;
}

typedef struct {
  treadle_sleep_t nap;
  done_t *started;
  bool armed;
} napper_t;

static treadle_poll_t napper_poll(treadle_cx_t *cx, void *st) {
  napper_t *n = st;
  if (!n->armed) {
    n->armed = true;
    treadle_sleep_init(&n->nap, 3600 * TREADLE_NSEC_PER_SEC);
    treadle_sleep_poll(&n->nap, cx, NULL);
    done_one(n->started);
    return TREADLE_PENDING;
  }
  return treadle_sleep_poll(&n->nap, cx, NULL);
}

static void napper_drop(void *st) { treadle_sleep_drop(&((napper_t *)st)->nap); }

static const treadle_task_vtable_t napper_vt = {.poll = napper_poll,
                                                .drop = napper_drop};

typedef struct {
  size_t n;
  int stage;
  long before;
  done_t started;
} sleepers_t;

static treadle_poll_t sleepers_poll(treadle_cx_t *cx, void *st) {
  sleepers_t *s = st;
  if (s->stage == 0) {
    s->stage = 1;
    atomic_init(&s->started.left, s->n);
    done_arm(&s->started, cx);
    s->before = rss_kib();
    for (size_t i = 0; i < s->n; i++) {
      napper_t nap = {.started = &s->started};
      if (treadle_spawn(treadle_cx_handle(cx), &napper_vt, &nap, sizeof nap,
                        NULL) != 0)
        abort();
    }
  }
  if (!done_finished(&s->started))
    return TREADLE_PENDING;
  long after = rss_kib();
  json_head("sleepers_rss");
  printf(",\"tasks\":%zu,\"rss_mib\":%.1f,\"bytes_per_task\":%.1f}\n",
         s->n, (double)(after - s->before) / 1024.0,
         (double)(after - s->before) * 1024.0 / (double)s->n);
  return TREADLE_READY;
}

/* ---------------------------------------------------------- held_timers */

/* The process's CPU time so far (user + system), seconds. */
static double process_cpu_secs(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

typedef struct {
  size_t n;
  bool started;
  double cpu0;
  uint64_t t0;
  treadle_sleep_t hold;
  uint64_t *starts, *wokes; /* main's: the tasks asleep at the end keep
                               pointers into them until the runtime is
                               freed */
} held_t;

static treadle_poll_t held_poll(treadle_cx_t *cx, void *st) {
  held_t *h = st;
  if (!h->started) {
    h->started = true;
    h->cpu0 = process_cpu_secs();
    h->t0 = treadle_now();
    for (size_t i = 0; i < h->n; i++) {
      /* 1 ms * 60000^(i / (n - 1)): 1 ms to 60 s, as many per decade. */
      double ms = pow(60000.0, h->n > 1 ? (double)i / (double)(h->n - 1) : 0);
      timer_task_t t = {.dur_ns = (uint64_t)(ms * 1e6),
                        .start = &h->starts[i],
                        .woke = &h->wokes[i]};
      if (treadle_spawn(treadle_cx_handle(cx), &timer_task_vt, &t, sizeof t,
                        NULL) != 0)
        abort();
    }
    treadle_sleep_init(&h->hold, (uint64_t)(hold_secs * 1e9));
  }
  if (treadle_sleep_poll(&h->hold, cx, NULL) == TREADLE_PENDING)
    return TREADLE_PENDING;
  double cpu = process_cpu_secs() - h->cpu0;
  double secs = secs_since(h->t0);
  size_t fired = 0;
  for (size_t i = 0; i < h->n; i++)
    fired += h->wokes[i] != 0;
  json_head("held_timers");
  printf(",\"n\":%zu,\"secs\":%.3f,\"fired\":%zu,\"cpu_secs\":%.4f,"
         "\"cpu_pct\":%.3f}\n",
         h->n, secs, fired, cpu, 100.0 * cpu / secs);
  return TREADLE_READY;
}

/* The tasks still asleep are dropped with the runtime, after these. */
static void held_drop(void *st) { treadle_sleep_drop(&((held_t *)st)->hold); }

/* ------------------------------------------------------ spawn_processes */

/* K runner tasks: each takes the next number, spawns the program, waits
 * for it, frees it, until N were started; the root waits for all K. The
 * same work as bench/rust's processes_tokio. */
typedef struct {
  _Atomic size_t next, failed;
  size_t n;
  treadle_command_t *cmd;
  done_t done;
} procs_shared_t;

typedef struct {
  procs_shared_t *sh;
  treadle_child_t *child;
} runner_t;

static treadle_poll_t runner_poll(treadle_cx_t *cx, void *st) {
  runner_t *r = st;
  for (;;) {
    if (r->child == NULL) {
      if (atomic_fetch_add_explicit(&r->sh->next, 1, memory_order_relaxed) >=
          r->sh->n) {
        done_one(&r->sh->done);
        return TREADLE_READY;
      }
      treadle_err_t err =
          treadle_command_spawn(r->sh->cmd, treadle_cx_handle(cx), &r->child);
      if (err != 0) {
        fprintf(stderr, "spawn %s: %s\n", program, treadle_strerror(err));
        abort();
      }
    }
    treadle_exit_status_t status;
    treadle_err_t err;
    if (treadle_child_wait_poll(r->child, cx, &status, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0) {
      fprintf(stderr, "wait: %s\n", treadle_strerror(err));
      abort();
    }
    if (!status.exited || status.code != 0)
      atomic_fetch_add_explicit(&r->sh->failed, 1, memory_order_relaxed);
    treadle_child_free(r->child);
    r->child = NULL;
  }
}

static void runner_drop(void *st) { treadle_child_free(((runner_t *)st)->child); }

static const treadle_task_vtable_t runner_vt = {.poll = runner_poll,
                                                .drop = runner_drop};

/* CPU time so far (user + system), seconds: RUSAGE_SELF or _CHILDREN. */
static double rusage_secs(int who) {
  struct rusage ru;
  getrusage(who, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

typedef struct {
  size_t n;
  bool started;
  double self0, kids0;
  uint64_t t0;
  procs_shared_t *sh; /* main's */
} procs_t;

static treadle_poll_t procs_poll(treadle_cx_t *cx, void *st) {
  procs_t *p = st;
  procs_shared_t *sh = p->sh;
  if (!p->started) {
    p->started = true;
    size_t k = in_flight < p->n ? in_flight : p->n;
    atomic_init(&sh->done.left, k);
    done_arm(&sh->done, cx);
    p->self0 = rusage_secs(RUSAGE_SELF);
    p->kids0 = rusage_secs(RUSAGE_CHILDREN);
    p->t0 = treadle_now();
    for (size_t i = 0; i < k; i++) {
      runner_t r = {.sh = sh};
      if (treadle_spawn(treadle_cx_handle(cx), &runner_vt, &r, sizeof r,
                        NULL) != 0)
        abort();
    }
  }
  if (!done_finished(&sh->done))
    return TREADLE_PENDING;
  double secs = secs_since(p->t0);
  json_head("spawn_processes");
  printf(",\"wait\":\"%s\",\"n\":%zu,\"in_flight\":%zu,\"secs\":%.4f,"
         "\"processes_per_sec\":%.1f,\"failed\":%zu,\"cpu_self_secs\":%.4f,"
         "\"cpu_children_secs\":%.4f}\n",
         wait_sigchld ? "sigchld" : "pidfd", p->n, in_flight, secs,
         (double)p->n / secs,
         atomic_load(&sh->failed), rusage_secs(RUSAGE_SELF) - p->self0,
         rusage_secs(RUSAGE_CHILDREN) - p->kids0);
  return TREADLE_READY;
}

/* ------------------------------------------------------------------ main */

static uint64_t *held_starts, *held_wokes; /* freed after the runtime */

static void usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s spawn_many|yield_many|chained_spawn|ping_pong|timers|"
          "idle_timers|cpu_bound|sleepers_rss|held_timers|spawn_processes"
          " [--flavor current|multi] [--workers N] [--metrics]"
          " [--seconds S] [--in-flight K] [--program PATH] [--wait-sigchld]"
          " [N]\n",
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
    } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      hold_secs = atof(argv[++i]);
      if (!(hold_secs > 0))
        usage(argv[0]);
    } else if (strcmp(argv[i], "--in-flight") == 0 && i + 1 < argc) {
      long k = atol(argv[++i]);
      if (k < 1)
        usage(argv[0]);
      in_flight = (size_t)k;
    } else if (strcmp(argv[i], "--wait-sigchld") == 0) {
      wait_sigchld = true;
      treadle__process_force_sigchld(true);
    } else if (strcmp(argv[i], "--program") == 0 && i + 1 < argc) {
      program = argv[++i];
    } else if (strcmp(argv[i], "--metrics") == 0) {
      show_metrics = true;
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
  } else if (strcmp(bench, "ping_pong") == 0) {
    static const treadle_task_vtable_t vt = {.poll = ping_pong_poll};
    ping_pong_t s = {.n = n > 0 ? (size_t)n : 1000000};
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, NULL);
  } else if (strcmp(bench, "sleepers_rss") == 0) {
    static const treadle_task_vtable_t vt = {.poll = sleepers_poll};
    sleepers_t s = {.n = n > 0 ? (size_t)n : 1000000};
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, NULL);
  } else if (strcmp(bench, "held_timers") == 0) {
    static const treadle_task_vtable_t vt = {.poll = held_poll,
                                             .drop = held_drop};
    held_t s = {.n = n > 0 ? (size_t)n : 1000};
    held_starts = s.starts = calloc(s.n, sizeof *s.starts);
    held_wokes = s.wokes = calloc(s.n, sizeof *s.wokes);
    if (s.starts == NULL || s.wokes == NULL)
      abort();
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, NULL);
  } else if (strcmp(bench, "spawn_processes") == 0) {
    static const treadle_task_vtable_t vt = {.poll = procs_poll};
    static procs_shared_t sh; /* the runners point into it */
    sh.n = n > 0 ? (size_t)n : 1000;
    if (treadle_command_new(program, &sh.cmd) != 0)
      abort();
    procs_t s = {.n = sh.n, .sh = &sh};
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, NULL);
    treadle_command_free(sh.cmd);
  } else if (strcmp(bench, "cpu_bound") == 0) {
    static const treadle_task_vtable_t vt = {.poll = cpu_bound_poll};
    cpu_bound_t s = {.steps = n > 0 ? (size_t)n : 4000000};
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, NULL);
  } else {
    usage(argv[0]);
  }
  fflush(stdout);
  if (show_metrics) {
    treadle_runtime_metrics_t m;
    treadle_handle_metrics(treadle_runtime_handle(rt), &m);
    fprintf(stderr, "live %llu, inject %llu, driver parks %llu\n",
            (unsigned long long)m.live_tasks,
            (unsigned long long)m.inject_queue_depth,
            (unsigned long long)m.driver_parks);
    for (unsigned i = 0; i < m.workers; i++) {
      treadle_worker_metrics_t w;
      treadle_handle_worker_metrics(treadle_runtime_handle(rt), i, &w);
      fprintf(stderr,
              "worker %u: polls %llu steals %llu (%llu ops) parks %llu "
              "unparks %llu lifo %llu overflows %llu\n",
              i, (unsigned long long)w.polls, (unsigned long long)w.steals,
              (unsigned long long)w.steal_operations,
              (unsigned long long)w.parks, (unsigned long long)w.unparks,
              (unsigned long long)w.lifo_hits,
              (unsigned long long)w.overflows);
    }
  }
  if (err != 0) {
    fprintf(stderr, "%s: %s\n", bench, treadle_strerror(err));
    return 1;
  }
  int rc = treadle_runtime_free(rt) == 0 ? 0 : 1;
  free(held_starts);
  free(held_wokes);
  return rc;
}
