/* A small pipeline on a multi_thread runtime, showing the synchronisation
 * primitives, the blocking pool, metrics and the dump:
 *
 *   producer --mpsc(4)--> dispatcher --spawns--> crunchers (at most 3 at a
 *   time: a Semaphore) --spawn_blocking--> the blocking pool
 *
 * Each cruncher adds its result to a total under an async Mutex; the last
 * one rings a Notify that the main task waits on. Meanwhile a named task
 * sleeps, so that the dump has something to show. */
#include <stdatomic.h>
#include <stdio.h>
#include <treadle.h>

#define ITEMS 20

typedef struct {
  treadle_mpsc_rx_t *rx;
  treadle_semaphore_t *slots;
  treadle_mutex_t *lock;
  treadle_notify_t *all_done;
  _Atomic int crunched;
  long total; /* guarded by lock */
} shared_t;

/* ------------------------------------------------------------ producer */

typedef struct {
  treadle_mpsc_tx_t *tx;
  long next;
} producer_t;

static treadle_poll_t producer_poll(treadle_cx_t *cx, void *state) {
  producer_t *p = state;
  while (p->next <= ITEMS) {
    treadle_err_t err;
    if (treadle_mpsc_send_poll(p->tx, cx, (void *)p->next, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING; /* the channel is full: backpressure */
    p->next++;
  }
  return TREADLE_READY; /* drop closes the channel */
}

static void producer_drop(void *state) {
  treadle_mpsc_tx_drop(((producer_t *)state)->tx);
}

/* -------------------------------------------------------------- blocking */

/* Pretend-expensive work, on a blocking-pool thread. */
static treadle_err_t crunch_run(void *state, void **value) {
  unsigned long x = (unsigned long)*(long *)state, h = 1469598103;
  for (unsigned long i = 0; i < 200000; i++)
    h = (h ^ (x + i)) * 1099511628211ul % 1000000007ul;
  *value = (void *)(h % 1000);
  return 0;
}

/* ------------------------------------------------------------ crunchers */

typedef struct {
  shared_t *s;
  long item;
  int step;
  treadle_join_t *job;
  long result;
  treadle_waiter_t wait;
} cruncher_t;

static treadle_poll_t cruncher_poll(treadle_cx_t *cx, void *state) {
  cruncher_t *c = state;
  treadle_err_t err;
  void *value;
  switch (c->step) {
  case 0: {
    static const treadle_blocking_vtable_t vt = {.run = crunch_run};
    if (treadle_spawn_blocking(treadle_cx_handle(cx), &vt, &c->item,
                               sizeof c->item, &c->job) != 0)
      return TREADLE_READY;
    c->step = 1;
  } /* fall through */
  case 1:
    if (treadle_join_poll(c->job, cx, &err, &value) == TREADLE_PENDING)
      return TREADLE_PENDING;
    treadle_join_detach(c->job);
    c->result = (long)value;
    treadle_waiter_init(&c->wait);
    c->step = 2;
    /* fall through */
  case 2:
    if (treadle_mutex_lock_poll(c->s->lock, cx, &c->wait) == TREADLE_PENDING)
      return TREADLE_PENDING;
    c->s->total += c->result;
    treadle_mutex_unlock(c->s->lock);
    treadle_semaphore_release(c->s->slots, 1); /* the dispatcher's permit */
    if (atomic_fetch_add(&c->s->crunched, 1) + 1 == ITEMS)
      treadle_notify_one(c->s->all_done); /* a permit if nobody waits yet */
    return TREADLE_READY;
  }
  return TREADLE_READY;
}

static void cruncher_drop(void *state) {
  cruncher_t *c = state;
  if (c->step == 2)
    treadle_waiter_drop(&c->wait);
}

/* ----------------------------------------------------------- dispatcher */

typedef struct {
  shared_t *s;
  treadle_waiter_t permit;
  void *item;
  bool have_item, have_permit;
} dispatcher_t;

static treadle_poll_t dispatcher_poll(treadle_cx_t *cx, void *state) {
  dispatcher_t *d = state;
  static const treadle_task_vtable_t cruncher_vt = {.poll = cruncher_poll,
                                                    .drop = cruncher_drop};
  for (;;) {
    treadle_err_t err;
    if (!d->have_item) {
      if (treadle_mpsc_recv_poll(d->s->rx, cx, &d->item, &err) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err == TREADLE_ECHANCLOSED)
        return TREADLE_READY; /* the producer is done */
      d->have_item = true;
      treadle_waiter_init(&d->permit);
    }
    if (treadle_semaphore_acquire_poll(d->s->slots, cx, &d->permit, 1,
                                       &err) == TREADLE_PENDING)
      return TREADLE_PENDING; /* three crunchers already run */
    cruncher_t c = {.s = d->s, .item = (long)d->item};
    treadle_spawn(treadle_cx_handle(cx), &cruncher_vt, &c, sizeof c, NULL);
    d->have_item = false;
  }
}

static void dispatcher_drop(void *state) {
  treadle_waiter_drop(&((dispatcher_t *)state)->permit);
}

/* ----------------------------------------------------------- main task */

typedef struct {
  treadle_sleep_t nap;
  bool armed;
} napper_t;

static treadle_poll_t napper_poll(treadle_cx_t *cx, void *state) {
  napper_t *n = state;
  if (!n->armed) {
    treadle_sleep_init(&n->nap, 60 * TREADLE_NSEC_PER_SEC);
    n->armed = true;
  }
  return treadle_sleep_poll(&n->nap, cx, NULL);
}

static void napper_drop(void *state) {
  treadle_sleep_drop(&((napper_t *)state)->nap);
}

/* Starts the pipeline, then waits on the Notify the last cruncher rings. */
typedef struct {
  shared_t *s;
  treadle_waiter_t wait;
  bool started;
} main_t;

static treadle_poll_t main_poll(treadle_cx_t *cx, void *state) {
  main_t *m = state;
  shared_t *s = m->s;
  if (!m->started) {
    m->started = true;
    treadle_handle_t *h = treadle_cx_handle(cx);
    treadle_mpsc_tx_t *tx;
    treadle_mpsc_new(4, NULL, &tx, &s->rx);
    producer_t p = {.tx = tx, .next = 1};
    dispatcher_t d = {.s = s};
    static const treadle_task_vtable_t producer_vt = {.poll = producer_poll,
                                                      .drop = producer_drop};
    static const treadle_task_vtable_t dispatcher_vt = {
        .poll = dispatcher_poll, .drop = dispatcher_drop};
    static const treadle_task_vtable_t napper_vt = {.poll = napper_poll,
                                                    .drop = napper_drop};
    treadle_spawn_opts_t named = TREADLE_SPAWN_OPTS_INIT;
    named.name = "producer";
    treadle_spawn_with(h, &producer_vt, &p, sizeof p, &named, NULL);
    named.name = "dispatcher";
    treadle_spawn_with(h, &dispatcher_vt, &d, sizeof d, &named, NULL);
    named.name = "napper";
    treadle_spawn_with(h, &napper_vt, NULL, sizeof(napper_t), &named, NULL);
    treadle_waiter_init(&m->wait);
  }
  if (treadle_notify_poll(s->all_done, cx, &m->wait) == TREADLE_PENDING)
    return TREADLE_PENDING;
  return TREADLE_READY;
}

int main(void) {
  treadle_builder_t *b;
  treadle_runtime_t *rt;
  treadle_builder_new(TREADLE_MULTI_THREAD, &b);
  treadle_builder_worker_threads(b, 2);
  treadle_builder_max_blocking_threads(b, 4);
  treadle_builder_enable_all(b);
  if (treadle_builder_build(b, &rt) != 0)
    return 1;
  treadle_builder_free(b);

  shared_t s = {0};
  treadle_semaphore_new(3, &s.slots);
  treadle_mutex_new(&s.lock);
  treadle_notify_new(&s.all_done);
  static const treadle_task_vtable_t main_vt = {.poll = main_poll};
  main_t m = {.s = &s};
  treadle_err_t err =
      treadle_runtime_block_on(rt, &main_vt, &m, sizeof m, NULL);
  printf("%d items crunched on the blocking pool, total %ld (%s)\n",
         atomic_load(&s.crunched), s.total, treadle_strerror(err));

  printf("--- dump\n");
  treadle_runtime_dump(rt, stdout);
  treadle_runtime_metrics_t rm;
  treadle_handle_metrics(treadle_runtime_handle(rt), &rm);
  printf("--- metrics: %llu live tasks, %llu blocking threads (%llu idle)\n",
         (unsigned long long)rm.live_tasks,
         (unsigned long long)rm.blocking_threads,
         (unsigned long long)rm.blocking_idle);
  treadle_runtime_free(rt);
  treadle_semaphore_unref(s.slots);
  treadle_mutex_unref(s.lock);
  treadle_notify_unref(s.all_done);
  return err != 0;
}
