/* The multi_thread scheduler: N workers share the tasks by work stealing
 * (tokio scheduler/multi_thread/worker.rs).
 *
 * Each worker owns a LIFO slot, a local ring (runq.c) and a list of tasks
 * pinned to it; all share the inject queue. The rules (ARCHITECTURE.md "multi_thread"):
 *
 * 1. Spawn or wake on a worker: the task takes the LIFO slot and the slot's
 *    previous occupant goes to the back of the local ring (a full ring moves
 *    half of itself to the inject queue in one batch). A yield goes to the
 *    back of the ring. From any other thread: the inject queue.
 * 2. A task pinned to worker k goes to k's pinned list when k itself wakes
 *    it, else to k's inbox (a locked queue) and k is unparked. Pinned tasks
 *    are never stolen; they run only on k.
 * 3. A worker picks: every global_queue_interval ticks the inject queue and
 *    its inbox first (fairness); then the LIFO slot, its pinned list and
 *    ring (alternating), the inbox, the inject queue (taking a batch into
 *    its ring); then it steals half of a random victim's ring; then parks.
 *    The LIFO slot runs at most 3 tasks in a row before they go to the
 *    back of the ring, so two tasks waking each other cannot starve the
 *    rest.
 * 4. Waking idle workers (idle.c): new work that others could take wakes
 *    one sleeper only if no worker is searching; at most half the workers
 *    search at once; the last searcher to give up looks at every queue
 *    once more before it sleeps. A worker's own driver turn may schedule
 *    tasks onto it; it notifies others only after the turn.
 * 5. Parking (park.c): the first worker to park sleeps in the driver stack,
 *    so timers fire and I/O is polled; the others sleep on condvars. Every
 *    event_interval ticks a busy worker polls the drivers without blocking
 *    if no one else holds them.
 * 6. Owned lists are sharded by task id (plus one shard per worker for its
 *    pinned tasks), each behind a mutex. A task binds the first time it
 *    waits (internal.h), completion unlinks it, shutdown walks them; tasks
 *    that complete without waiting (most short ones) never lock a shard.
 * 7. Shutdown: refuse spawns and close the shards (a task about to wait
 *    is cancelled instead of bound), set `shutdown`, unpark every worker.
 *    Each worker leaves its loop, cancels its pinned tasks on its own
 *    thread (a Lua state lives there) and helps cancel the shared shards;
 *    tasks running elsewhere see CANCELLED when their poll returns. The
 *    queues stay open until the workers are joined, so that no task a
 *    worker queues on its way out is lost. Then the shutdown thread closes
 *    them and, alone, drains everything left until all stays empty (drop
 *    functions may wake and spawn). */
#include <stdio.h>

#include "internal.h"

#define MAX_LIFO_POLLS 3
/* Most tasks taken from the inject queue at once: the list is walked under
 * its lock, and the producer (a spawning worker overflowing into it) waits
 * meanwhile; short batches keep both moving. */
#define INJECT_BATCH 32

typedef struct shard_s {
  treadle__os_mutex_t mu;
  treadle__list_t tasks; /* guarded by mu */
  bool closed;           /* guarded by mu */
  _Atomic size_t count;  /* written under mu; read anywhere */
} __attribute__((aligned(TREADLE_CACHELINE))) shard_t;

typedef struct worker_s worker_t;
typedef struct treadle__mt_s treadle__mt_t;

struct worker_s {
  /* Owned by the worker thread. */
  treadle__task_t *lifo;
  treadle__task_t *pinned_head; /* pinned tasks ready here, FIFO */
  treadle__task_t *pinned_tail;
  unsigned until_event;
  unsigned until_global;
  uint32_t rand;
  bool searching;
  bool in_park; /* inside its own driver turn: defer notifications */
  bool pick_pinned;
  uint32_t credits; /* handle references in reserve (handle.c) */

  /* Any thread. */
  treadle__runq_t queue;
  treadle__inject_t inbox; /* pinned tasks woken from other threads */
  treadle__park_t park;
  _Atomic uint64_t current; /* id of the task being polled, or 0 */

  /* Metrics: the worker writes (relaxed), anyone reads. */
  _Atomic uint64_t polls, steals, steal_ops, parks, unparks, lifo_hits,
      overflows, spawned, finished;

  unsigned index;
  treadle__mt_t *mt;
  treadle__os_thread_t thread;
  bool started;
} __attribute__((aligned(TREADLE_CACHELINE)));

struct treadle__mt_s {
  treadle__sched_t base;
  unsigned nworkers;
  worker_t *workers;
  unsigned nshards; /* shared shards (a power of two); pinned ones follow */
  shard_t *shards;
  treadle__inject_t inject;
  treadle__idle_t idle;
  treadle__os_mutex_t driver_mu; /* held by the worker parked in the driver */
  _Atomic bool shutdown;
  _Atomic bool closed;             /* spawns fail from now on */
  _Atomic uint64_t spawned, finished; /* by threads that are not workers */
};

static treadle__mt_t *as_mt(treadle__sched_t *s) {
  return (treadle__mt_t *)s;
}

static void bump(_Atomic uint64_t *counter) {
  /* Relaxed: one writer; readers want a recent value, not an order. */
  atomic_store_explicit(
      counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
      memory_order_relaxed);
}

static void add(_Atomic uint64_t *counter, uint64_t n) {
  atomic_store_explicit(
      counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
      memory_order_relaxed);
}

static bool is_shutdown(treadle__mt_t *mt) {
  /* acquire: pairs with the release store in mt_shutdown. */
  return atomic_load_explicit(&mt->shutdown, memory_order_acquire);
}

static treadle__driver_t *driver_of(treadle__mt_t *mt) {
  return &mt->base.handle->driver;
}

/* The worker of this runtime the calling thread is, or NULL. */
static worker_t *current_worker(treadle__mt_t *mt) {
  return treadle__ctx.sched == &mt->base ? treadle__ctx.core : NULL;
}

/* ------------------------------------------------------------ shards */

static shard_t *shard_of(treadle__mt_t *mt, treadle__task_t *t) {
  if (t->pinned != 0)
    return &mt->shards[mt->nshards + t->pinned - 1];
  return &mt->shards[t->id & (mt->nshards - 1)];
}

static bool mt_bind(treadle__sched_t *s, treadle__task_t *t) {
  shard_t *sh = shard_of(as_mt(s), t);
  treadle__os_mutex_lock(&sh->mu);
  if (sh->closed) {
    treadle__os_mutex_unlock(&sh->mu);
    return false;
  }
  treadle__list_push_back(&sh->tasks, &t->owned);
  /* Relaxed: changed under sh->mu; read without it only as UNBOUND, which
   * nobody but the poller (holding RUNNING) changes. */
  atomic_store_explicit(&t->owned_state, TREADLE__BOUND, memory_order_relaxed);
  atomic_store_explicit(&sh->count,
                        atomic_load_explicit(&sh->count, memory_order_relaxed) +
                            1,
                        memory_order_relaxed);
  treadle__os_mutex_unlock(&sh->mu);
  return true;
}

static int mt_release(treadle__sched_t *s, treadle__task_t *t) {
  treadle__mt_t *mt = as_mt(s);
  worker_t *w = current_worker(mt);
  if (w != NULL)
    bump(&w->finished);
  else
    /* Relaxed: a counter for metrics. */
    atomic_fetch_add_explicit(&mt->finished, 1, memory_order_relaxed);
  /* The completer holds RUNNING: an UNBOUND task cannot change under us. */
  if (atomic_load_explicit(&t->owned_state, memory_order_relaxed) ==
      TREADLE__UNBOUND) {
    atomic_store_explicit(&t->owned_state, TREADLE__UNLINKED,
                          memory_order_relaxed);
    return 1;
  }
  shard_t *sh = shard_of(mt, t);
  int refs = 0;
  treadle__os_mutex_lock(&sh->mu);
  if (atomic_load_explicit(&t->owned_state, memory_order_relaxed) ==
      TREADLE__BOUND) {
    treadle__list_unlink(&t->owned);
    atomic_store_explicit(
        &sh->count, atomic_load_explicit(&sh->count, memory_order_relaxed) - 1,
        memory_order_relaxed);
    refs = 1;
  }
  atomic_store_explicit(&t->owned_state, TREADLE__UNLINKED,
                        memory_order_relaxed);
  treadle__os_mutex_unlock(&sh->mu);
  return refs;
}

/* Step 7: cancels every task of one shard. */
static bool drain_shard(shard_t *sh) {
  bool any = false;
  for (;;) {
    treadle__os_mutex_lock(&sh->mu);
    treadle__list_t *n = treadle__list_pop_front(&sh->tasks);
    treadle__task_t *t = NULL;
    if (n != NULL) {
      t = treadle__container_of(n, treadle__task_t, owned);
      atomic_store_explicit(&t->owned_state, TREADLE__UNLINKED,
                            memory_order_relaxed);
      atomic_store_explicit(
          &sh->count,
          atomic_load_explicit(&sh->count, memory_order_relaxed) - 1,
          memory_order_relaxed);
    }
    treadle__os_mutex_unlock(&sh->mu);
    if (t == NULL)
      return any;
    treadle__task_shutdown(t); /* the owned reference */
    any = true;
  }
}

/* --------------------------------------------------------- scheduling */

static void notify_parked(treadle__mt_t *mt) {
  unsigned k;
  if (treadle__idle_worker_to_notify(&mt->idle, &k))
    treadle__park_unpark(&mt->workers[k].park, driver_of(mt));
}

/* Step 4: the last searcher's final look. */
static void notify_if_work_pending(treadle__mt_t *mt) {
  for (unsigned i = 0; i < mt->nworkers; i++) {
    if (treadle__runq_has_stealable(&mt->workers[i].queue)) {
      notify_parked(mt);
      return;
    }
  }
  if (treadle__inject_len(&mt->inject) > 0)
    notify_parked(mt);
}

static void push_ring(worker_t *w, treadle__task_t *t) {
  if (treadle__runq_push(&w->queue, t, &w->mt->inject))
    bump(&w->overflows);
}

static void pinned_push(worker_t *w, treadle__task_t *t) {
  t->next = NULL;
  if (w->pinned_tail != NULL)
    w->pinned_tail->next = t;
  else
    w->pinned_head = t;
  w->pinned_tail = t;
}

static treadle__task_t *pinned_pop(worker_t *w) {
  treadle__task_t *t = w->pinned_head;
  if (t != NULL) {
    w->pinned_head = t->next;
    if (w->pinned_head == NULL)
      w->pinned_tail = NULL;
  }
  return t;
}

/* Step 1, on a worker. Another worker is worth waking only for work this
 * one will not run next: a task pushed behind others, or behind what sits
 * in the LIFO slot. A lone yielding task (or a chain of spawns) stays. */
static void schedule_local(worker_t *w, treadle__task_t *t, bool yield) {
  treadle__task_t *pushed = t;
  if (!yield) {
    pushed = w->lifo;
    w->lifo = t;
    if (pushed == NULL)
      return; /* it runs next, here */
  }
  bool surplus = w->lifo != NULL || treadle__runq_len(&w->queue) > 0;
  push_ring(w, pushed);
  if (surplus && !w->in_park)
    notify_parked(w->mt);
}

/* From a thread that is not the task's worker: the inject queue, or the
 * inbox of the worker it is pinned to; then wake someone. False once the
 * queue is closed (nothing queued). */
static bool push_remote(treadle__mt_t *mt, treadle__task_t *t) {
  if (t->pinned != 0) {
    worker_t *owner = &mt->workers[t->pinned - 1];
    if (!treadle__inject_push(&owner->inbox, t))
      return false;
    treadle__park_unpark(&owner->park, driver_of(mt));
    return true;
  }
  if (!treadle__inject_push(&mt->inject, t))
    return false;
  notify_parked(mt);
  return true;
}

/* Steps 1 and 2 on a worker: false if the task must go through
 * push_remote (pinned to another worker). */
static bool push_here(worker_t *w, treadle__task_t *t, bool yield) {
  if (t->pinned == 0) {
    schedule_local(w, t, yield);
    return true;
  }
  if ((unsigned)t->pinned - 1u != w->index)
    return false;
  pinned_push(w, t);
  return true;
}

static void mt_schedule(treadle__sched_t *s, treadle__task_t *t, bool yield) {
  treadle__mt_t *mt = as_mt(s);
  worker_t *w = current_worker(mt);
  if (w != NULL && push_here(w, t, yield))
    return;
  if (!push_remote(mt, t))
    treadle__task_unref(t); /* shut down: nobody will run it */
}

static treadle_err_t mt_spawn(treadle__sched_t *s, treadle__task_t *t) {
  treadle__mt_t *mt = as_mt(s);
  if (t->pinned > mt->nworkers)
    return TREADLE_EINVAL;
  /* acquire: pairs with close_spawns' release. A spawn that slips in just
   * before shutdown is queued and drained like any other task. */
  if (atomic_load_explicit(&mt->closed, memory_order_acquire))
    return TREADLE_ESHUTDOWN;
  worker_t *w = current_worker(mt);
  if (w != NULL && push_here(w, t, false)) {
    bump(&w->spawned); /* a worker drains its own queues at shutdown */
    return 0;
  }
  /* The queue may close under us: then the task was not taken. */
  if (!push_remote(mt, t))
    return TREADLE_ESHUTDOWN;
  if (w != NULL)
    bump(&w->spawned);
  else
    /* Relaxed: a counter for metrics. */
    atomic_fetch_add_explicit(&mt->spawned, 1, memory_order_relaxed);
  return 0;
}

/* -------------------------------------------------------- worker loop */

static uint32_t next_rand(worker_t *w) {
  uint32_t x = w->rand;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  w->rand = x;
  return x;
}

/* The inbox or, failing that, a batch from the inject queue: one task to
 * run, the rest into the ring. */
static treadle__task_t *pop_global(worker_t *w) {
  treadle__task_t *t = NULL;
  if (treadle__inject_len(&w->inbox) > 0 &&
      treadle__inject_pop_batch(&w->inbox, SIZE_MAX, &t) > 0) {
    treadle__task_t *rest = t->next;
    while (rest != NULL) {
      treadle__task_t *next = rest->next;
      pinned_push(w, rest);
      rest = next;
    }
    return t;
  }
  treadle__mt_t *mt = w->mt;
  size_t len = treadle__inject_len(&mt->inject);
  if (len == 0)
    return NULL;
  size_t room = TREADLE__LOCAL_QUEUE_CAPACITY / 2;
  size_t used = treadle__runq_len(&w->queue);
  room = used < room ? room - used : 0;
  size_t want = len / mt->nworkers + 1;
  if (want > INJECT_BATCH)
    want = INJECT_BATCH;
  if (want > room + 1)
    want = room + 1;
  if (treadle__inject_pop_batch(&mt->inject, want, &t) == 0)
    return NULL;
  for (treadle__task_t *rest = t->next; rest != NULL;) {
    treadle__task_t *next = rest->next;
    push_ring(w, rest);
    rest = next;
  }
  return t;
}

/* Step 3, without stealing. */
static treadle__task_t *next_task(worker_t *w) {
  treadle__task_t *t;
  if (--w->until_global == 0) {
    w->until_global = w->mt->base.handle->cfg.global_queue_interval;
    if ((t = pop_global(w)) != NULL)
      return t;
  }
  if ((t = w->lifo) != NULL) {
    w->lifo = NULL;
    return t;
  }
  w->pick_pinned = !w->pick_pinned;
  if (w->pick_pinned && (t = pinned_pop(w)) != NULL)
    return t;
  if ((t = treadle__runq_pop(&w->queue)) != NULL)
    return t;
  if ((t = pinned_pop(w)) != NULL)
    return t;
  return pop_global(w);
}

static treadle__task_t *steal_work(worker_t *w) {
  treadle__mt_t *mt = w->mt;
  if (!w->searching) {
    if (!treadle__idle_transition_to_searching(&mt->idle))
      return NULL;
    w->searching = true;
  }
  unsigned n = mt->nworkers;
  unsigned start = next_rand(w) % n;
  for (unsigned i = 0; i < n; i++) {
    unsigned victim = (start + i) % n;
    if (victim == w->index)
      continue;
    uint32_t stolen = 0;
    treadle__task_t *t = treadle__runq_steal_into(&mt->workers[victim].queue,
                                                  &w->queue, &stolen);
    if (t != NULL) {
      add(&w->steals, stolen);
      bump(&w->steal_ops);
      return t;
    }
  }
  return pop_global(w);
}

static void transition_from_searching(worker_t *w) {
  if (!w->searching)
    return;
  w->searching = false;
  if (treadle__idle_transition_from_searching(&w->mt->idle))
    notify_parked(w->mt); /* we were the last: make sure someone looks */
}

static void run_one(worker_t *w, treadle__task_t *t) {
  bump(&w->polls);
  /* Relaxed: a hint for dumps. */
  atomic_store_explicit(&w->current, (uint64_t)t->id, memory_order_relaxed);
  treadle__task_run(t);
  atomic_store_explicit(&w->current, 0, memory_order_relaxed);
}

/* Runs `t`, then what it put in the LIFO slot, at most MAX_LIFO_POLLS in a
 * row (step 3). */
static void run_task(worker_t *w, treadle__task_t *t) {
  transition_from_searching(w);
  run_one(w, t);
  for (unsigned lifo_polls = 0; w->lifo != NULL; lifo_polls++) {
    treadle__task_t *next = w->lifo;
    w->lifo = NULL;
    if (lifo_polls == MAX_LIFO_POLLS) {
      schedule_local(w, next, true); /* to the back, others may take it */
      return;
    }
    bump(&w->lifo_hits);
    run_one(w, next);
  }
}

static bool has_local_work(worker_t *w) {
  return w->lifo != NULL || w->pinned_head != NULL ||
         treadle__inject_len(&w->inbox) > 0 || treadle__runq_len(&w->queue) > 0;
}

static bool transition_from_parked(worker_t *w) {
  treadle__mt_t *mt = w->mt;
  if (has_local_work(w)) {
    /* Woken with work of its own (a driver turn, a pinned task): not
     * searching, unless a notifier already counted it as a searcher. */
    w->searching = !treadle__idle_unpark_worker_by_id(&mt->idle, w->index);
    return true;
  }
  if (treadle__idle_is_parked(&mt->idle, w->index))
    return false; /* a spurious or driver-only wakeup: sleep again */
  w->searching = true; /* a notifier woke us to look for work */
  return true;
}

/* Step 5. */
static void park(worker_t *w) {
  treadle__mt_t *mt = w->mt;
  if (has_local_work(w))
    return;
  bool last =
      treadle__idle_transition_to_parked(&mt->idle, w->index, w->searching);
  w->searching = false;
  if (last)
    notify_if_work_pending(mt);
  /* A paused clock moves only while every worker is parked (driver.c):
   * the last one to park tells the driver's owner. */
  if (treadle__time_paused(&driver_of(mt)->time) &&
      treadle__idle_all_parked(&mt->idle))
    treadle__driver_unpark(driver_of(mt));
  bump(&w->parks);
  w->in_park = true;
  while (!is_shutdown(mt)) {
    treadle__park_park(&w->park, driver_of(mt), &mt->driver_mu);
    if (transition_from_parked(w))
      break;
  }
  w->in_park = false;
  bump(&w->unparks);
  if (!w->searching && treadle__runq_has_stealable(&w->queue))
    notify_parked(mt); /* the driver turn gave us more than we can run */
}

static void maintenance(worker_t *w) {
  treadle__mt_t *mt = w->mt;
  if (!treadle__os_mutex_trylock(&mt->driver_mu))
    return; /* another worker is parked in the drivers */
  w->in_park = true;
  treadle__driver_park(driver_of(mt), 0);
  w->in_park = false;
  treadle__os_mutex_unlock(&mt->driver_mu);
  if (treadle__runq_has_stealable(&w->queue))
    notify_parked(mt);
}

static void run(worker_t *w) {
  const treadle__config_t *cfg = &w->mt->base.handle->cfg;
  w->until_event = cfg->event_interval;
  w->until_global = cfg->global_queue_interval;
  while (!is_shutdown(w->mt)) {
    if (--w->until_event == 0) {
      w->until_event = cfg->event_interval;
      maintenance(w);
    }
    treadle__task_t *t = next_task(w);
    if (t == NULL)
      t = steal_work(w);
    if (t != NULL)
      run_task(w, t);
    else
      park(w);
  }
}

/* Drops whatever sits in a worker's queues (the owner, or the shutdown
 * thread after joining it). */
static bool drain_worker(worker_t *w) {
  bool any = false;
  treadle__task_t *t;
  if ((t = w->lifo) != NULL) {
    w->lifo = NULL;
    treadle__task_shutdown(t);
    any = true;
  }
  while ((t = pinned_pop(w)) != NULL || (t = treadle__runq_pop(&w->queue)) ||
         (t = treadle__inject_pop(&w->inbox))) {
    treadle__task_shutdown(t);
    any = true;
  }
  return any;
}

/* Step 7, on the worker. */
static void worker_shutdown(worker_t *w) {
  treadle__mt_t *mt = w->mt;
  drain_shard(&mt->shards[mt->nshards + w->index]);
  for (unsigned i = w->index; i < mt->nshards; i += mt->nworkers)
    drain_shard(&mt->shards[i]);
  drain_worker(w);
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  treadle_handle_t *h = w->mt->base.handle;
  treadle__ctx.sched = &w->mt->base;
  treadle__ctx.core = w;
  treadle__ctx.handle = h;
  treadle__ctx.worker = (int)w->index;
  treadle__ctx.credits = &w->credits;
  if (h->cfg.on_thread_start != NULL)
    h->cfg.on_thread_start(h->cfg.on_thread_start_ud);
  run(w);
  worker_shutdown(w);
  if (h->cfg.on_thread_stop != NULL)
    h->cfg.on_thread_stop(h->cfg.on_thread_stop_ud);
  treadle__handle_return_credits(h, &w->credits);
  memset(&treadle__ctx, 0, sizeof treadle__ctx);
  return NULL;
}

/* ---------------------------------------------------------- lifecycle */

/* Step 7, first half: no more spawns, no more binding (a task about to
 * wait is cancelled instead). The queues stay open while workers run:
 * a worker whose ring overflows, or that wakes a task pinned elsewhere,
 * must not lose the task. */
static void close_spawns(treadle__mt_t *mt) {
  /* release: pairs with mt_spawn's acquire. */
  atomic_store_explicit(&mt->closed, true, memory_order_release);
  for (unsigned i = 0; i < mt->nshards + mt->nworkers; i++) {
    treadle__os_mutex_lock(&mt->shards[i].mu);
    mt->shards[i].closed = true;
    treadle__os_mutex_unlock(&mt->shards[i].mu);
  }
}

/* Second half, once the workers are joined: what is queued now is drained
 * below; what a stray waker queues later is refused (and was bound). */
static void close_queues(treadle__mt_t *mt) {
  treadle__inject_close(&mt->inject);
  for (unsigned i = 0; i < mt->nworkers; i++)
    treadle__inject_close(&mt->workers[i].inbox);
}

/* Stops and joins the workers that started. */
static void stop_workers(treadle__mt_t *mt) {
  /* release: workers that see it also see the closed queues. */
  atomic_store_explicit(&mt->shutdown, true, memory_order_release);
  for (unsigned i = 0; i < mt->nworkers; i++)
    if (mt->workers[i].started)
      treadle__park_unpark(&mt->workers[i].park, driver_of(mt));
  for (unsigned i = 0; i < mt->nworkers; i++) {
    if (mt->workers[i].started) {
      treadle__os_thread_join(mt->workers[i].thread);
      mt->workers[i].started = false;
    }
  }
}

static treadle_err_t mt_shutdown(treadle__sched_t *s) {
  treadle__mt_t *mt = as_mt(s);
  close_spawns(mt);
  stop_workers(mt);
  close_queues(mt);
  /* Alone now (the joins ordered every worker's writes before us). */
  bool any;
  do {
    any = false;
    for (unsigned i = 0; i < mt->nshards + mt->nworkers; i++)
      any |= drain_shard(&mt->shards[i]);
    for (unsigned i = 0; i < mt->nworkers; i++)
      any |= drain_worker(&mt->workers[i]);
    treadle__task_t *t;
    while ((t = treadle__inject_pop(&mt->inject)) != NULL) {
      treadle__task_shutdown(t);
      any = true;
    }
  } while (any);
  return 0;
}

static void mt_free(treadle__sched_t *s) {
  treadle__mt_t *mt = as_mt(s);
  for (unsigned i = 0; i < mt->nworkers; i++) {
    treadle__inject_destroy(&mt->workers[i].inbox);
    treadle__park_destroy(&mt->workers[i].park);
  }
  for (unsigned i = 0; i < mt->nshards + mt->nworkers; i++)
    treadle__os_mutex_destroy(&mt->shards[i].mu);
  treadle__inject_destroy(&mt->inject);
  treadle__idle_destroy(&mt->idle);
  treadle__os_mutex_destroy(&mt->driver_mu);
  treadle__free(mt->shards);
  treadle__free(mt->workers);
  treadle__free(mt);
}

/* ---------------------------------------------------- metrics, dump */

static void mt_metrics(treadle__sched_t *s, treadle_runtime_metrics_t *m) {
  treadle__mt_t *mt = as_mt(s);
  m->workers = mt->nworkers;
  /* Relaxed: a snapshot; counters taken at different moments may be off
   * by the tasks spawned or finished meanwhile. */
  uint64_t spawned =
      atomic_load_explicit(&mt->spawned, memory_order_relaxed);
  uint64_t finished =
      atomic_load_explicit(&mt->finished, memory_order_relaxed);
  for (unsigned i = 0; i < mt->nworkers; i++) {
    finished +=
        atomic_load_explicit(&mt->workers[i].finished, memory_order_relaxed);
    spawned +=
        atomic_load_explicit(&mt->workers[i].spawned, memory_order_relaxed);
  }
  m->live_tasks = spawned > finished ? spawned - finished : 0;
  m->inject_queue_depth = treadle__inject_len(&mt->inject);
}

static treadle_err_t mt_worker_metrics(treadle__sched_t *s, unsigned index,
                                       treadle_worker_metrics_t *m) {
  treadle__mt_t *mt = as_mt(s);
  if (index >= mt->nworkers)
    return TREADLE_EINVAL;
  worker_t *w = &mt->workers[index];
#define LOAD(f) atomic_load_explicit(&w->f, memory_order_relaxed)
  m->polls = LOAD(polls);
  m->steals = LOAD(steals);
  m->steal_operations = LOAD(steal_ops);
  m->parks = LOAD(parks);
  m->unparks = LOAD(unparks);
  m->lifo_hits = LOAD(lifo_hits);
  m->overflows = LOAD(overflows);
#undef LOAD
  m->local_queue_depth = treadle__runq_len(&w->queue);
  return 0;
}

/* Waiting tasks are on the shards and are listed one by one; queued and
 * running ones are shown per worker (reading another worker's ring could
 * meet a task that is being freed). */
static treadle_err_t mt_dump(treadle__sched_t *s, FILE *out) {
  treadle__mt_t *mt = as_mt(s);
  fprintf(out, "runtime multi_thread, %u workers, %u searching, inject %zu\n",
          mt->nworkers, treadle__idle_num_searching(&mt->idle),
          treadle__inject_len(&mt->inject));
  for (unsigned i = 0; i < mt->nworkers; i++) {
    worker_t *w = &mt->workers[i];
    uint64_t cur = atomic_load_explicit(&w->current, memory_order_relaxed);
    fprintf(out, "worker %u: ", i);
    if (cur != 0)
      fprintf(out, "running task %llu", (unsigned long long)cur);
    else
      fprintf(out, "%s", treadle__idle_is_parked(&mt->idle, i) ? "parked"
                                                               : "idle");
    fprintf(out, ", local queue %zu, inbox %zu, polls %llu\n",
            treadle__runq_len(&w->queue), treadle__inject_len(&w->inbox),
            (unsigned long long)atomic_load_explicit(&w->polls,
                                                     memory_order_relaxed));
  }
  for (unsigned i = 0; i < mt->nshards + mt->nworkers; i++) {
    shard_t *sh = &mt->shards[i];
    treadle__os_mutex_lock(&sh->mu);
    for (treadle__list_t *n = sh->tasks.next; n != &sh->tasks; n = n->next) {
      treadle__task_t *t = treadle__container_of(n, treadle__task_t, owned);
      treadle__dump_task(out, t, t->pinned != 0 ? (int)t->pinned - 1 : -1);
    }
    treadle__os_mutex_unlock(&sh->mu);
  }
  return 0;
}

static bool mt_all_parked(treadle__sched_t *s) {
  return treadle__idle_all_parked(&as_mt(s)->idle);
}

static const treadle__sched_vtable_t mt_vtable = {
    .spawn = mt_spawn,
    .bind = mt_bind,
    .schedule = mt_schedule,
    .release = mt_release,
    .block_on = NULL, /* the workers run main; block_on waits on it */
    .shutdown = mt_shutdown,
    .free = mt_free,
    .metrics = mt_metrics,
    .worker_metrics = mt_worker_metrics,
    .dump = mt_dump,
    .all_parked = mt_all_parked,
};

static unsigned next_pow2(unsigned n) {
  unsigned p = 1;
  while (p < n)
    p <<= 1;
  return p;
}

treadle_err_t treadle__mt_new(treadle_handle_t *h, treadle__sched_t **out) {
  unsigned n = h->cfg.worker_threads;
  treadle__mt_t *mt = treadle__calloc(1, sizeof *mt);
  if (mt == NULL)
    return TREADLE_ENOMEM;
  mt->base.vt = &mt_vtable;
  mt->base.handle = h;
  mt->nworkers = n;
  mt->nshards = next_pow2(4 * n);
  mt->workers = treadle__aligned_calloc(TREADLE_CACHELINE,
                                        n * sizeof(worker_t));
  mt->shards = treadle__aligned_calloc(TREADLE_CACHELINE,
                                       (mt->nshards + n) * sizeof(shard_t));
  if (mt->workers == NULL || mt->shards == NULL ||
      treadle__idle_init(&mt->idle, n) != 0) {
    treadle__free(mt->workers);
    treadle__free(mt->shards);
    treadle__free(mt);
    return TREADLE_ENOMEM;
  }
  for (unsigned i = 0; i < mt->nshards + n; i++) {
    treadle__os_mutex_init(&mt->shards[i].mu);
    treadle__list_init(&mt->shards[i].tasks);
    atomic_init(&mt->shards[i].count, 0);
  }
  treadle__inject_init(&mt->inject);
  treadle__os_mutex_init(&mt->driver_mu);
  atomic_init(&mt->shutdown, false);
  atomic_init(&mt->closed, false);
  for (unsigned i = 0; i < n; i++) {
    worker_t *w = &mt->workers[i];
    w->index = i;
    w->mt = mt;
    w->rand = 0x9E3779B9u * (i + 1);
    treadle__runq_init(&w->queue);
    treadle__inject_init(&w->inbox);
    treadle__park_init(&w->park);
    atomic_init(&w->current, 0);
  }
  treadle_err_t err = 0;
  for (unsigned i = 0; i < n && err == 0; i++) {
    worker_t *w = &mt->workers[i];
    err = treadle__os_thread_start(&w->thread, worker_main, w,
                                   h->cfg.thread_name);
    w->started = err == 0;
  }
  if (err != 0) {
    close_spawns(mt);
    stop_workers(mt);
    close_queues(mt);
    mt_free(&mt->base);
    return err;
  }
  *out = &mt->base;
  return 0;
}
