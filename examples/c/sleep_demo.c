/* The demo: a current_thread runtime runs a main task that spawns workers
 * which sleep for different times, wraps a never-ending task in a timeout,
 * aborts a sleeper, spawns from a plain thread through the handle, and
 * joins everything, printing what happens as it happens. It ends by asking
 * a runtime built without timers to sleep (the seed's exercise 3). */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <treadle.h>

static uint64_t t0;

static void say(const char *who, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("[%4llu ms] %-9s ",
         (unsigned long long)((treadle_now() - t0) / 1000000), who);
  vprintf(fmt, ap);
  putchar('\n');
  fflush(stdout);
  va_end(ap);
}

/* A worker: sleeps `ms`, then returns ms as its output status. */
typedef struct {
  int id;
  long ms;
  int step;
  treadle_sleep_t nap;
} worker_t;

static treadle_poll_t worker_poll(treadle_cx_t *cx, void *state) {
  worker_t *w = state;
  char who[16];
  snprintf(who, sizeof who, "worker %d", w->id);
  if (w->step++ == 0) {
    say(who, "sleeps %ld ms", w->ms);
    treadle_sleep_init(&w->nap, (uint64_t)w->ms * TREADLE_NSEC_PER_MSEC);
  }
  treadle_err_t err;
  if (treadle_sleep_poll(&w->nap, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  say(who, "woke up after %ld ms", w->ms);
  treadle_cx_set_output(cx, err != 0 ? err : (treadle_err_t)w->ms, NULL);
  return TREADLE_READY;
}

static void worker_drop(void *state) {
  worker_t *w = state;
  if (w->step > 0)
    treadle_sleep_drop(&w->nap);
}

static const treadle_task_vtable_t worker_vt = {.poll = worker_poll,
                                                .drop = worker_drop};

/* Never ready: something a timeout has to cut short. */
static treadle_poll_t forever(treadle_cx_t *cx, void *state) {
  (void)cx;
  (void)state;
  return TREADLE_PENDING;
}

/* A plain thread spawns a worker through the runtime's handle. */
typedef struct {
  treadle_handle_t *h;
  treadle_join_t *join;
} remote_t;

static void *remote_thread(void *arg) {
  remote_t *r = arg;
  worker_t w = {.id = 9, .ms = 20};
  say("thread", "spawns worker %d through the handle", 9);
  treadle_spawn(r->h, &worker_vt, &w, sizeof w, &r->join);
  return NULL;
}

typedef struct {
  int step;
  treadle_join_t *joins[3];
  treadle_join_t *doomed;
  int joined;
  long total;
  treadle_sleep_t deadline;
  remote_t remote;
  pthread_t thread;
} main_t;

static treadle_poll_t main_poll(treadle_cx_t *cx, void *state) {
  main_t *m = state;
  treadle_handle_t *h = treadle_cx_handle(cx);
  treadle_err_t err;
  switch (m->step) {
  case 0: {
    say("main", "spawns 3 workers and a slow one");
    const long ms[3] = {30, 10, 20};
    for (int i = 0; i < 3; i++) {
      worker_t w = {.id = i + 1, .ms = ms[i]};
      treadle_spawn(h, &worker_vt, &w, sizeof w, &m->joins[i]);
    }
    worker_t slow = {.id = 4, .ms = 60000};
    treadle_spawn(h, &worker_vt, &slow, sizeof slow, &m->doomed);
    m->remote.h = treadle_handle_ref(h);
    pthread_create(&m->thread, NULL, remote_thread, &m->remote);
    say("main", "waits at most 50 ms for a task that never ends");
    treadle_sleep_init(&m->deadline, 50 * TREADLE_NSEC_PER_MSEC);
    m->step = 1;
  } /* fall through */
  case 1:
    if (treadle_timeout_poll(&m->deadline, cx, forever, NULL, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    say("main", "%s", treadle_strerror(err));
    treadle_sleep_drop(&m->deadline);
    say("main", "aborts worker 4 (it would sleep a minute)");
    treadle_join_abort(m->doomed);
    m->step = 2;
    /* fall through */
  case 2:
    if (treadle_join_poll(m->doomed, cx, &err, NULL) == TREADLE_PENDING)
      return TREADLE_PENDING;
    say("main", "worker 4 ended: %s", treadle_strerror(err));
    treadle_join_detach(m->doomed);
    m->step = 3;
    /* fall through */
  case 3:
    while (m->joined < 3) {
      if (treadle_join_poll(m->joins[m->joined], cx, &err, NULL) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      m->total += err;
      treadle_join_detach(m->joins[m->joined++]);
    }
    pthread_join(m->thread, NULL);
    treadle_handle_unref(m->remote.h);
    m->step = 4;
    /* fall through */
  default:
    if (treadle_join_poll(m->remote.join, cx, &err, NULL) == TREADLE_PENDING)
      return TREADLE_PENDING;
    treadle_join_detach(m->remote.join);
    say("main", "joined every worker; they slept %ld ms in all",
        m->total + err);
    return TREADLE_READY;
  }
}

/* Exercise 3: a runtime built without enable_time. */
static treadle_poll_t nap_poll(treadle_cx_t *cx, void *state) {
  treadle_sleep_t *nap = state;
  treadle_sleep_init(nap, TREADLE_NSEC_PER_MSEC);
  treadle_err_t err;
  treadle_sleep_poll(nap, cx, &err);
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

int main(void) {
  t0 = treadle_now();
  treadle_runtime_t *rt;
  treadle_err_t err = treadle_runtime_new_current_thread(&rt);
  if (err != 0) {
    fprintf(stderr, "runtime: %s\n", treadle_strerror(err));
    return 1;
  }
  say("demo", "current_thread runtime with I/O and timers");
  static const treadle_task_vtable_t main_vt = {.poll = main_poll};
  err = treadle_runtime_block_on(rt, &main_vt, NULL, sizeof(main_t), NULL);
  treadle_runtime_free(rt);
  if (err != 0)
    return 1;

  treadle_builder_t *b;
  treadle_builder_new(TREADLE_CURRENT_THREAD, &b);
  treadle_builder_enable_io(b); /* but not enable_time */
  treadle_builder_build(b, &rt);
  treadle_builder_free(b);
  static const treadle_task_vtable_t nap_vt = {.poll = nap_poll};
  err = treadle_runtime_block_on(rt, &nap_vt, NULL, sizeof(treadle_sleep_t),
                                 NULL);
  say("demo", "sleep on a runtime without timers: %s: %s",
      treadle_err_name(err), treadle_strerror(err));
  treadle_runtime_free(rt);
  return err == TREADLE_ENOTIME ? 0 : 1;
}
