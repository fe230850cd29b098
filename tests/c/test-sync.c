/* Synchronisation primitives: Notify, Mutex, Semaphore, oneshot and mpsc.
 * FIFO order, hand-off of notifications, permits and slots by waiters
 * that give up, close and drop, the coop budget, bad input and allocation
 * failure, and cross-thread stress (a TSan target). */
#include "harness.h"
#include "internal.h"
#include "waitq.h" /* white-box: which waker a waiter holds */

/* ------------------------------------------------------------ helpers */

/* A task driven by `fn` until it returns true. Its state is a pointer to
 * this struct, which the test owns, so that its waiters stay put. */
typedef struct actor_s actor_t;
struct actor_s {
  bool (*fn)(actor_t *a, treadle_cx_t *cx);
  void *shared;
  int id;
  int stage;
  long i;
  long v;
  bool registered;
  treadle_err_t err;
  void *item;
  treadle_waiter_t w;
  treadle_waiter_t ws[4];
  treadle_mpsc_tx_t *tx;
  treadle_mpsc_tx_t *tx2;
  treadle_mpsc_rx_t *rx;
  treadle_join_t *join;
  actor_t *kids;
  size_t nkids;
  size_t joined;
};

static treadle_poll_t actor_poll(treadle_cx_t *cx, void *st) {
  actor_t *a = *(actor_t **)st;
  return a->fn(a, cx) ? TREADLE_READY : TREADLE_PENDING;
}

/* Runs when the task completes or is cancelled: gives up its waits. */
static void actor_drop(void *st) {
  actor_t *a = *(actor_t **)st;
  treadle_waiter_drop(&a->w);
  for (int i = 0; i < 4; i++)
    treadle_waiter_drop(&a->ws[i]);
  treadle_mpsc_tx_drop(a->tx);
  a->tx = NULL;
  treadle_mpsc_tx_drop(a->tx2);
  a->tx2 = NULL;
  treadle_mpsc_rx_drop(a->rx);
  a->rx = NULL;
}

static const treadle_task_vtable_t actor_vt = {.poll = actor_poll,
                                               .drop = actor_drop};

static void actor_init(actor_t *a, bool (*fn)(actor_t *, treadle_cx_t *),
                       void *shared, int id) {
  memset(a, 0, sizeof *a);
  a->fn = fn;
  a->shared = shared;
  a->id = id;
  treadle_waiter_init(&a->w);
  for (int i = 0; i < 4; i++)
    treadle_waiter_init(&a->ws[i]);
}

static treadle_join_t *spawn_actor(treadle_handle_t *h, actor_t *a) {
  treadle_join_t *j = NULL;
  assert_int_equal(treadle_spawn(h, &actor_vt, &a, sizeof a, &j), 0);
  return j;
}

/* Runs `a` as the main task of a fresh runtime, joins the `n` threads in
 * `th`, then frees the runtime. A thread may still be inside a wake (the
 * scheduler's schedule) when the task it woke has completed; it must be
 * done before the runtime goes. */
static void run_main_joining(actor_t *a, pthread_t *th, int n) {
  treadle_runtime_t *rt = test_runtime();
  assert_int_equal(treadle_runtime_block_on(rt, &actor_vt, &a, sizeof a, NULL),
                   0);
  for (int i = 0; i < n; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void run_main(actor_t *a) { run_main_joining(a, NULL, 0); }

/* Spawns n kids with fn (ids 0..n-1) from inside a task. */
static void spawn_kids(actor_t *m, treadle_cx_t *cx, size_t n,
                       bool (*fn)(actor_t *, treadle_cx_t *), void *shared) {
  m->kids = calloc(n, sizeof *m->kids);
  m->nkids = n;
  m->joined = 0;
  for (size_t i = 0; i < n; i++) {
    actor_init(&m->kids[i], fn, shared, (int)i);
    m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
  }
}

/* Joins m's kids in order; true once all completed with status 0. */
static bool join_kids(actor_t *m, treadle_cx_t *cx) {
  while (m->joined < m->nkids) {
    actor_t *k = &m->kids[m->joined];
    treadle_err_t st;
    if (treadle_join_poll(k->join, cx, &st, NULL) == TREADLE_PENDING)
      return false;
    assert_int_equal(st, 0);
    treadle_join_detach(k->join);
    k->join = NULL;
    m->joined++;
  }
  return true;
}

static void free_kids(actor_t *m) {
  free(m->kids);
  m->kids = NULL;
}

/* Counts the first PENDING of an actor in *counter. */
static void note_registered(actor_t *a, _Atomic int *counter) {
  if (!a->registered) {
    a->registered = true;
    atomic_fetch_add(counter, 1);
  }
}

static void *item_of(long v) { return (void *)(uintptr_t)v; }
static long value_of(void *item) { return (long)(uintptr_t)item; }

/* ------------------------------------------------------------- notify */

typedef struct {
  treadle_notify_t *n;
  _Atomic int registered;
  _Atomic int slots; /* log slots taken */
  _Atomic int woke;  /* log entries written */
  int log[16];
} nshared_t;

static bool notify_permit_step(actor_t *m, treadle_cx_t *cx) {
  treadle_notify_t *n = m->shared;
  treadle_waiter_t *w = m->ws;
  if (m->stage == 0) {
    treadle_notify_one(n);
    treadle_notify_one(n); /* permits do not accumulate */
    assert_int_equal(treadle_notify_poll(n, cx, &w[0]), TREADLE_READY);
    assert_int_equal(treadle_notify_poll(n, cx, &w[1]), TREADLE_PENDING);
    assert_int_equal(cx->task->waits_on, TREADLE__WAIT_NOTIFY);
    treadle_notify_one(n); /* goes to w[1], waking this task */
    m->stage = 1;
    return false;
  }
  assert_int_equal(treadle_notify_poll(n, cx, &w[1]), TREADLE_READY);
  /* That notification went to a waiter: nothing is stored. */
  assert_int_equal(treadle_notify_poll(n, cx, &w[2]), TREADLE_PENDING);
  treadle_waiter_drop(&w[2]);
  treadle_waiter_drop(&w[2]); /* idempotent */
  /* A waiter is reusable once READY. */
  treadle_notify_one(n);
  assert_int_equal(treadle_notify_poll(n, cx, &w[1]), TREADLE_READY);
  return true;
}

static void notify_one_stores_one_permit(void **state) {
  (void)state;
  treadle_notify_t *n;
  assert_int_equal(treadle_notify_new(&n), 0);
  actor_t m;
  actor_init(&m, notify_permit_step, n, 0);
  run_main(&m);
  assert_int_equal(m.stage, 1);
  treadle_notify_unref(n);
}

static bool notify_waiting_kid(actor_t *a, treadle_cx_t *cx) {
  nshared_t *s = a->shared;
  if (treadle_notify_poll(s->n, cx, &a->w) == TREADLE_PENDING) {
    note_registered(a, &s->registered);
    return false;
  }
  s->log[atomic_fetch_add(&s->slots, 1)] = a->id;
  atomic_fetch_add(&s->woke, 1); /* publishes the entry */
  return true;
}

enum { NOTIFY_KIDS = 8 };

static bool notify_all_step(actor_t *m, treadle_cx_t *cx) {
  nshared_t *s = m->shared;
  switch (m->stage) {
  case 0:
    spawn_kids(m, cx, NOTIFY_KIDS, notify_waiting_kid, s);
    m->stage = 1;
    /* fall through */
  case 1:
    if (atomic_load(&s->registered) < NOTIFY_KIDS) {
      treadle_cx_yield(cx);
      return false;
    }
    treadle_notify_waiters(s->n);
    /* Nothing stored: a waiter that comes after waits. */
    assert_int_equal(treadle_notify_poll(s->n, cx, &m->w), TREADLE_PENDING);
    m->stage = 2;
    /* fall through */
  default:
    if (!join_kids(m, cx))
      return false;
    assert_int_equal(atomic_load(&s->woke), NOTIFY_KIDS);
    assert_int_equal(treadle_notify_poll(s->n, cx, &m->w), TREADLE_PENDING);
    treadle_notify_one(s->n);
    assert_int_equal(treadle_notify_poll(s->n, cx, &m->w), TREADLE_READY);
    return true;
  }
}

static void notify_waiters_wakes_all_stores_none(void **state) {
  (void)state;
  nshared_t s = {0};
  assert_int_equal(treadle_notify_new(&s.n), 0);
  actor_t m;
  actor_init(&m, notify_all_step, &s, 0);
  run_main(&m);
  free_kids(&m);
  treadle_notify_unref(s.n);
}

/* One task, four waiters: notify_one picks them in the order they came,
 * and a waiter polled twice is still queued once, in its first place. */
static bool notify_fifo_step(actor_t *m, treadle_cx_t *cx) {
  treadle_notify_t *n = m->shared;
  treadle_waiter_t *w = m->ws;
  for (int i = 0; i < 4; i++)
    assert_int_equal(treadle_notify_poll(n, cx, &w[i]), TREADLE_PENDING);
  assert_int_equal(treadle_notify_poll(n, cx, &w[0]), TREADLE_PENDING);
  for (int i = 0; i < 4; i++) {
    treadle_notify_one(n);
    for (int j = i + 1; j < 4; j++)
      assert_int_equal(treadle_notify_poll(n, cx, &w[j]), TREADLE_PENDING);
    assert_int_equal(treadle_notify_poll(n, cx, &w[i]), TREADLE_READY);
  }
  treadle_notify_one(n); /* nobody waits: stored */
  assert_int_equal(treadle_notify_poll(n, cx, &w[3]), TREADLE_READY);
  return true;
}

static void notify_one_is_fifo(void **state) {
  (void)state;
  treadle_notify_t *n;
  assert_int_equal(treadle_notify_new(&n), 0);
  actor_t m;
  actor_init(&m, notify_fifo_step, n, 0);
  run_main(&m);
  treadle_notify_unref(n);
}

/* Tasks that queued one after the other are woken in that order. */
static bool notify_order_step(actor_t *m, treadle_cx_t *cx) {
  nshared_t *s = m->shared;
  if (m->stage == 0) {
    m->kids = calloc(NOTIFY_KIDS, sizeof *m->kids);
    m->nkids = NOTIFY_KIDS;
    m->stage = 1;
  }
  if (m->stage == 1) {
    while (m->i < NOTIFY_KIDS) {
      if (m->i == atomic_load(&s->registered)) {
        actor_t *k = &m->kids[m->i];
        actor_init(k, notify_waiting_kid, s, (int)m->i);
        k->join = spawn_actor(treadle_cx_handle(cx), k);
        m->i++;
      }
      treadle_cx_yield(cx); /* until that kid has queued */
      return false;
    }
    if (atomic_load(&s->registered) < NOTIFY_KIDS) {
      treadle_cx_yield(cx);
      return false;
    }
    m->i = 0;
    m->stage = 2;
  }
  if (m->stage == 2) {
    while (m->i < NOTIFY_KIDS) {
      if (atomic_load(&s->woke) == m->i) {
        if (m->v == m->i) { /* not yet notified for this round */
          treadle_notify_one(s->n);
          m->v++;
        }
        treadle_cx_yield(cx);
        return false;
      }
      assert_int_equal(atomic_load(&s->woke), m->i + 1);
      assert_int_equal(s->log[m->i], m->i);
      m->i++;
    }
    m->stage = 3;
  }
  return join_kids(m, cx);
}

static void notify_wakes_tasks_in_order(void **state) {
  (void)state;
  nshared_t s = {0};
  assert_int_equal(treadle_notify_new(&s.n), 0);
  actor_t m;
  actor_init(&m, notify_order_step, &s, 0);
  run_main(&m);
  for (int i = 0; i < NOTIFY_KIDS; i++)
    assert_int_equal(s.log[i], i);
  free_kids(&m);
  treadle_notify_unref(s.n);
}

/* A waiter dropped after notify_one picked it passes the notification on,
 * to the next waiter or as the stored permit; after notify_waiters, or
 * before it was notified, it passes nothing. */
static bool notify_drop_step(actor_t *m, treadle_cx_t *cx) {
  treadle_notify_t *n = m->shared;
  treadle_waiter_t *w = m->ws;
  /* To the next waiter. */
  assert_int_equal(treadle_notify_poll(n, cx, &w[0]), TREADLE_PENDING);
  assert_int_equal(treadle_notify_poll(n, cx, &w[1]), TREADLE_PENDING);
  treadle_notify_one(n);
  treadle_waiter_drop(&w[0]);
  assert_int_equal(treadle_notify_poll(n, cx, &w[1]), TREADLE_READY);
  /* To the permit. */
  assert_int_equal(treadle_notify_poll(n, cx, &w[0]), TREADLE_PENDING);
  treadle_notify_one(n);
  treadle_waiter_drop(&w[0]);
  assert_int_equal(treadle_notify_poll(n, cx, &w[2]), TREADLE_READY);
  /* notify_waiters: nothing to pass on. */
  assert_int_equal(treadle_notify_poll(n, cx, &w[0]), TREADLE_PENDING);
  assert_int_equal(treadle_notify_poll(n, cx, &w[1]), TREADLE_PENDING);
  treadle_notify_waiters(n);
  treadle_waiter_drop(&w[0]);
  assert_int_equal(treadle_notify_poll(n, cx, &w[2]), TREADLE_PENDING);
  assert_int_equal(treadle_notify_poll(n, cx, &w[1]), TREADLE_READY);
  /* Dropped while waiting: the next notify_one goes to the next one. */
  assert_int_equal(treadle_notify_poll(n, cx, &w[0]), TREADLE_PENDING);
  treadle_waiter_drop(&w[2]); /* queued before w[0] */
  treadle_notify_one(n);
  assert_int_equal(treadle_notify_poll(n, cx, &w[0]), TREADLE_READY);
  return true;
}

static void notify_dropped_waiter_passes_it_on(void **state) {
  (void)state;
  treadle_notify_t *n;
  assert_int_equal(treadle_notify_new(&n), 0);
  actor_t m;
  actor_init(&m, notify_drop_step, n, 0);
  run_main(&m);
  treadle_notify_unref(n);
}

/* A waiter registered by one task and then polled by another wakes the
 * second: the main task can only be woken through the waiter. */
typedef struct {
  treadle_notify_t *n;
  treadle_waiter_t w;
} follow_t;

static bool follow_first(actor_t *a, treadle_cx_t *cx) {
  follow_t *f = a->shared;
  assert_int_equal(treadle_notify_poll(f->n, cx, &f->w), TREADLE_PENDING);
  return true; /* leaves it queued with this task's waker */
}

static bool follow_notifier(actor_t *a, treadle_cx_t *cx) {
  (void)cx;
  treadle_notify_one(((follow_t *)a->shared)->n);
  return true;
}

static bool follow_step(actor_t *m, treadle_cx_t *cx) {
  follow_t *f = m->shared;
  treadle__waiter_t *w = (treadle__waiter_t *)(void *)&f->w;
  switch (m->stage) {
  case 0:
    spawn_kids(m, cx, 1, follow_first, f);
    m->stage = 1;
    /* fall through */
  case 1:
    if (!join_kids(m, cx))
      return false;
    assert_true(w->waker != treadle_cx_waker(cx));
    assert_int_equal(treadle_notify_poll(f->n, cx, &f->w), TREADLE_PENDING);
    assert_ptr_equal(w->waker, treadle_cx_waker(cx)); /* updated */
    assert_int_equal(treadle_notify_poll(f->n, cx, &f->w), TREADLE_PENDING);
    assert_ptr_equal(w->waker, treadle_cx_waker(cx));
    m->kids[0].fn = follow_notifier; /* detached: no join wake */
    assert_int_equal(treadle_spawn(treadle_cx_handle(cx), &actor_vt,
                                   &(actor_t *){&m->kids[0]}, sizeof(actor_t *),
                                   NULL),
                     0);
    m->stage = 2;
    return false;
  default:
    return treadle_notify_poll(f->n, cx, &f->w) == TREADLE_READY;
  }
}

static void waiter_follows_the_task_that_polls_it(void **state) {
  (void)state;
  follow_t f;
  assert_int_equal(treadle_notify_new(&f.n), 0);
  treadle_waiter_init(&f.w);
  actor_t m;
  actor_init(&m, follow_step, &f, 0);
  run_main(&m);
  assert_int_equal(m.stage, 2);
  free_kids(&m);
  treadle_notify_unref(f.n);
}

/* A thread bumps a counter and notifies, many times; the task always sees
 * the last value: a notification is never lost. */
typedef struct {
  treadle_notify_t *n;
  _Atomic long counter;
  long rounds;
} lost_t;

static void *lost_producer(void *arg) {
  lost_t *l = arg;
  for (long i = 1; i <= l->rounds; i++) {
    atomic_store(&l->counter, i);
    treadle_notify_one(l->n);
  }
  return NULL;
}

static bool lost_step(actor_t *m, treadle_cx_t *cx) {
  lost_t *l = m->shared;
  for (;;) {
    if (atomic_load(&l->counter) == l->rounds)
      return true;
    if (treadle_notify_poll(l->n, cx, &m->w) == TREADLE_PENDING)
      return false;
    m->i++;
  }
}

static void notify_never_loses_a_wake(void **state) {
  (void)state;
  lost_t l = {.rounds = (long)test_scale(100000)};
  assert_int_equal(treadle_notify_new(&l.n), 0);
  actor_t m;
  actor_init(&m, lost_step, &l, 0);
  pthread_t th;
  pthread_create(&th, NULL, lost_producer, &l);
  run_main_joining(&m, &th, 1);
  assert_int_equal(atomic_load(&l.counter), l.rounds);
  treadle_notify_unref(l.n);
}

/* -------------------------------------------------------------- mutex */

typedef struct {
  treadle_mutex_t *mu;
  long counter; /* guarded by mu: plain, so TSan checks the hand-off */
  _Atomic int inside;
  _Atomic int registered;
  long rounds;
  int log[16];
  int logged;
} mshared_t;

/* Takes the lock, reads the counter, yields while holding it, writes. */
static bool mutex_kid(actor_t *a, treadle_cx_t *cx) {
  mshared_t *s = a->shared;
  for (;;) {
    if (a->stage == 0) {
      if (treadle_mutex_lock_poll(s->mu, cx, &a->w) == TREADLE_PENDING) {
        assert_int_equal(cx->task->waits_on, TREADLE__WAIT_MUTEX);
        return false;
      }
      assert_int_equal(atomic_exchange(&s->inside, 1), 0);
      a->v = s->counter;
      a->stage = 1;
      treadle_cx_yield(cx); /* hold it across an await */
      return false;
    }
    s->counter = a->v + 1;
    atomic_store(&s->inside, 0);
    treadle_mutex_unlock(s->mu);
    a->stage = 0;
    if (++a->i == s->rounds)
      return true;
  }
}

static bool mutex_many_step(actor_t *m, treadle_cx_t *cx) {
  if (m->stage == 0) {
    spawn_kids(m, cx, 8, mutex_kid, m->shared);
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void mutex_excludes_across_awaits(void **state) {
  (void)state;
  mshared_t s = {.rounds = (long)test_scale(300)};
  assert_int_equal(treadle_mutex_new(&s.mu), 0);
  actor_t m;
  actor_init(&m, mutex_many_step, &s, 0);
  run_main(&m);
  assert_int_equal(s.counter, 8 * s.rounds);
  assert_true(treadle_mutex_try_lock(s.mu)); /* left unlocked */
  free_kids(&m);
  treadle_mutex_unref(s.mu);
}

static bool mutex_order_kid(actor_t *a, treadle_cx_t *cx) {
  mshared_t *s = a->shared;
  if (treadle_mutex_lock_poll(s->mu, cx, &a->w) == TREADLE_PENDING) {
    note_registered(a, &s->registered);
    return false;
  }
  s->log[s->logged++] = a->id; /* under the lock */
  treadle_mutex_unlock(s->mu);
  return true;
}

enum { MUTEX_KIDS = 8 };

static bool mutex_order_step(actor_t *m, treadle_cx_t *cx) {
  mshared_t *s = m->shared;
  if (m->stage == 0) {
    assert_true(treadle_mutex_try_lock(s->mu));
    m->kids = calloc(MUTEX_KIDS, sizeof *m->kids);
    m->nkids = MUTEX_KIDS;
    m->stage = 1;
  }
  if (m->stage == 1) {
    /* Queue the kids one at a time, in id order. */
    while (m->i < MUTEX_KIDS) {
      if (m->i == atomic_load(&s->registered)) {
        actor_t *k = &m->kids[m->i];
        actor_init(k, mutex_order_kid, s, (int)m->i);
        k->join = spawn_actor(treadle_cx_handle(cx), k);
        m->i++;
      }
      treadle_cx_yield(cx);
      return false;
    }
    if (atomic_load(&s->registered) < MUTEX_KIDS) {
      treadle_cx_yield(cx);
      return false;
    }
    assert_false(treadle_mutex_try_lock(s->mu));
    treadle_mutex_unlock(s->mu); /* hands it to kid 0 */
    m->stage = 2;
  }
  return join_kids(m, cx);
}

static void mutex_hands_off_in_fifo_order(void **state) {
  (void)state;
  mshared_t s = {0};
  assert_int_equal(treadle_mutex_new(&s.mu), 0);
  actor_t m;
  actor_init(&m, mutex_order_step, &s, 0);
  run_main(&m);
  assert_int_equal(s.logged, MUTEX_KIDS);
  for (int i = 0; i < MUTEX_KIDS; i++)
    assert_int_equal(s.log[i], i);
  free_kids(&m);
  treadle_mutex_unref(s.mu);
}

static bool mutex_try_step(actor_t *m, treadle_cx_t *cx) {
  treadle_mutex_t *mu = m->shared;
  treadle_waiter_t *w = m->ws;
  assert_true(treadle_mutex_try_lock(mu));
  assert_false(treadle_mutex_try_lock(mu));
  /* Unlock with a waiter: handed over, never free in between. */
  assert_int_equal(treadle_mutex_lock_poll(mu, cx, &w[0]), TREADLE_PENDING);
  treadle_mutex_unlock(mu);
  assert_false(treadle_mutex_try_lock(mu));
  assert_int_equal(treadle_mutex_lock_poll(mu, cx, &w[0]), TREADLE_READY);
  /* A waiter handed the lock and dropped passes it on. */
  assert_int_equal(treadle_mutex_lock_poll(mu, cx, &w[1]), TREADLE_PENDING);
  assert_int_equal(treadle_mutex_lock_poll(mu, cx, &w[2]), TREADLE_PENDING);
  treadle_mutex_unlock(mu);
  treadle_waiter_drop(&w[1]);
  assert_false(treadle_mutex_try_lock(mu));
  assert_int_equal(treadle_mutex_lock_poll(mu, cx, &w[2]), TREADLE_READY);
  treadle_mutex_unlock(mu);
  /* Free again: lock_poll takes it at once. */
  assert_int_equal(treadle_mutex_lock_poll(mu, cx, &w[3]), TREADLE_READY);
  treadle_mutex_unlock(mu);
  return true;
}

static void mutex_try_lock_and_hand_off(void **state) {
  (void)state;
  treadle_mutex_t *mu;
  assert_int_equal(treadle_mutex_new(&mu), 0);
  actor_t m;
  actor_init(&m, mutex_try_step, mu, 0);
  run_main(&m);
  /* Unlocking a free mutex does not make a second lock. */
  treadle_mutex_unlock(mu);
  assert_true(treadle_mutex_try_lock(mu));
  assert_false(treadle_mutex_try_lock(mu));
  treadle_mutex_unlock(mu);
  /* References. */
  assert_ptr_equal(treadle_mutex_ref(mu), mu);
  treadle_mutex_unref(mu);
  treadle_mutex_unref(mu);
  /* Bad input. */
  assert_int_equal(treadle_mutex_new(NULL), TREADLE_EINVAL);
  assert_false(treadle_mutex_try_lock(NULL));
  treadle_mutex_unlock(NULL);
  treadle_mutex_unref(NULL);
  assert_null(treadle_mutex_ref(NULL));
  assert_int_equal(treadle_mutex_lock_poll(NULL, NULL, NULL), TREADLE_READY);
}

/* ---------------------------------------------------------- semaphore */

static bool sem_fair_step(actor_t *m, treadle_cx_t *cx) {
  treadle_semaphore_t *s = m->shared;
  treadle_waiter_t *w = m->ws;
  treadle_err_t err = 1;
  /* The big waiter takes the one permit there is and waits for 2 more. */
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[0], 3, &err),
                   TREADLE_PENDING);
  assert_int_equal(cx->task->waits_on, TREADLE__WAIT_SEMAPHORE);
  assert_int_equal(treadle_semaphore_available(s), 0);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[1], 1, &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_semaphore_try_acquire(s, 1), TREADLE_EAGAIN);
  /* One permit back: it goes to the big waiter, not the small one. */
  assert_int_equal(treadle_semaphore_release(s, 1), 0);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[1], 1, &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_semaphore_try_acquire(s, 1), TREADLE_EAGAIN);
  assert_int_equal(treadle_semaphore_available(s), 0);
  assert_int_equal(treadle_semaphore_release(s, 1), 0);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[1], 1, &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[0], 3, &err),
                   TREADLE_READY);
  assert_int_equal(err, 0);
  /* Three back: one completes the small waiter, two are left over. */
  assert_int_equal(treadle_semaphore_release(s, 3), 0);
  assert_int_equal(treadle_semaphore_available(s), 2);
  err = 1;
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[1], 1, &err),
                   TREADLE_READY);
  assert_int_equal(err, 0);
  assert_int_equal(treadle_semaphore_try_acquire(s, 2), 0);
  assert_int_equal(treadle_semaphore_try_acquire(s, 1), TREADLE_EAGAIN);
  assert_int_equal(treadle_semaphore_release(s, 4), 0);
  return true;
}

static void semaphore_big_waiter_is_not_overtaken(void **state) {
  (void)state;
  treadle_semaphore_t *s;
  assert_int_equal(treadle_semaphore_new(1, &s), 0);
  actor_t m;
  actor_init(&m, sem_fair_step, s, 0);
  run_main(&m);
  assert_int_equal(treadle_semaphore_available(s), 4);
  treadle_semaphore_unref(s);
}

static bool sem_drop_step(actor_t *m, treadle_cx_t *cx) {
  treadle_semaphore_t *s = m->shared;
  treadle_waiter_t *w = m->ws;
  treadle_err_t err;
  /* Dropped while waiting: the 2 it was given go to the next waiter. */
  assert_int_equal(treadle_semaphore_release(s, 2), 0);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[0], 3, &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[1], 1, &err),
                   TREADLE_PENDING);
  treadle_waiter_drop(&w[0]);
  assert_int_equal(treadle_semaphore_available(s), 1);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[1], 1, &err),
                   TREADLE_READY);
  assert_int_equal(treadle_semaphore_try_acquire(s, 1), 0);
  /* Dropped after its permits came: all of them go on. */
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[0], 2, &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[1], 1, &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_semaphore_release(s, 2), 0);
  assert_int_equal(treadle_semaphore_available(s), 0);
  treadle_waiter_drop(&w[0]);
  assert_int_equal(treadle_semaphore_available(s), 1);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &w[1], 1, &err),
                   TREADLE_READY);
  assert_int_equal(err, 0);
  return true;
}

static void semaphore_dropped_waiter_returns_permits(void **state) {
  (void)state;
  treadle_semaphore_t *s;
  assert_int_equal(treadle_semaphore_new(0, &s), 0);
  actor_t m;
  actor_init(&m, sem_drop_step, s, 0);
  run_main(&m);
  assert_int_equal(treadle_semaphore_available(s), 1);
  treadle_semaphore_unref(s);
}

typedef struct {
  treadle_semaphore_t *s;
  _Atomic int registered;
} sshared_t;

static bool sem_close_kid(actor_t *a, treadle_cx_t *cx) {
  sshared_t *s = a->shared;
  if (treadle_semaphore_acquire_poll(s->s, cx, &a->w, 1, &a->err) ==
      TREADLE_PENDING) {
    note_registered(a, &s->registered);
    return false;
  }
  return true;
}

static bool sem_close_step(actor_t *m, treadle_cx_t *cx) {
  sshared_t *s = m->shared;
  treadle_err_t err = 1;
  if (m->stage == 0) {
    spawn_kids(m, cx, 6, sem_close_kid, s);
    m->stage = 1;
  }
  if (m->stage == 1) {
    if (atomic_load(&s->registered) < 6) {
      treadle_cx_yield(cx);
      return false;
    }
    /* One more waiter, in this task. */
    assert_int_equal(treadle_semaphore_release(s->s, 0), 0);
    assert_int_equal(treadle_semaphore_acquire_poll(s->s, cx, &m->w, 1, &err),
                     TREADLE_PENDING);
    treadle_semaphore_close(s->s);
    assert_int_equal(treadle_semaphore_acquire_poll(s->s, cx, &m->w, 1, &err),
                     TREADLE_READY);
    assert_int_equal(err, TREADLE_ECLOSED);
    assert_int_equal(
        treadle_semaphore_acquire_poll(s->s, cx, &m->ws[0], 1, &err),
        TREADLE_READY);
    assert_int_equal(err, TREADLE_ECLOSED);
    m->stage = 2;
  }
  if (!join_kids(m, cx))
    return false;
  for (int i = 0; i < 6; i++)
    assert_int_equal(m->kids[i].err, TREADLE_ECLOSED);
  return true;
}

static void semaphore_close_wakes_waiters(void **state) {
  (void)state;
  sshared_t s = {0};
  assert_int_equal(treadle_semaphore_new(0, &s.s), 0);
  actor_t m;
  actor_init(&m, sem_close_step, &s, 0);
  run_main(&m);
  free_kids(&m);
  assert_int_equal(treadle_semaphore_try_acquire(s.s, 1), TREADLE_ECLOSED);
  treadle_semaphore_close(s.s); /* twice: nothing more */
  treadle_semaphore_unref(s.s);
}

static bool sem_partial_close_step(actor_t *m, treadle_cx_t *cx) {
  treadle_semaphore_t *s = m->shared;
  treadle_err_t err = 1;
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &m->w, 5, &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_semaphore_available(s), 0);
  treadle_semaphore_close(s);
  assert_int_equal(treadle_semaphore_available(s), 2);
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &m->w, 5, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_ECLOSED);
  return true;
}

static void semaphore_close_returns_partial_permits(void **state) {
  (void)state;
  treadle_semaphore_t *s;
  assert_int_equal(treadle_semaphore_new(2, &s), 0);
  actor_t m;
  actor_init(&m, sem_partial_close_step, s, 0);
  run_main(&m);
  treadle_semaphore_unref(s);
}

static bool sem_bad_step(actor_t *m, treadle_cx_t *cx) {
  treadle_semaphore_t *s = m->shared;
  treadle_err_t err = 0;
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &m->w, 0, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  err = 0;
  assert_int_equal(treadle_semaphore_acquire_poll(
                       s, cx, &m->w, TREADLE_SEMAPHORE_MAX_PERMITS + 1, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  err = 0;
  assert_int_equal(treadle_semaphore_acquire_poll(NULL, cx, &m->w, 1, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  err = 0;
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, NULL, 1, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  /* err may be NULL. */
  assert_int_equal(treadle_semaphore_acquire_poll(s, cx, &m->w, 1, NULL),
                   TREADLE_READY);
  return true;
}

static void semaphore_rejects_bad_input(void **state) {
  (void)state;
  treadle_semaphore_t *s = (treadle_semaphore_t *)1;
  assert_int_equal(treadle_semaphore_new(TREADLE_SEMAPHORE_MAX_PERMITS + 1, &s),
                   TREADLE_EINVAL);
  assert_null(s);
  assert_int_equal(treadle_semaphore_new(1, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_semaphore_new(TREADLE_SEMAPHORE_MAX_PERMITS, &s), 0);
  /* Release past the maximum: refused, nothing added. */
  assert_int_equal(treadle_semaphore_release(s, 1), TREADLE_EINVAL);
  assert_int_equal(treadle_semaphore_available(s),
                   TREADLE_SEMAPHORE_MAX_PERMITS);
  assert_int_equal(treadle_semaphore_try_acquire(s, 0), TREADLE_EINVAL);
  assert_int_equal(
      treadle_semaphore_try_acquire(s, TREADLE_SEMAPHORE_MAX_PERMITS + 1),
      TREADLE_EINVAL);
  assert_int_equal(
      treadle_semaphore_try_acquire(s, TREADLE_SEMAPHORE_MAX_PERMITS), 0);
  assert_int_equal(treadle_semaphore_available(s), 0);
  assert_int_equal(
      treadle_semaphore_release(s, TREADLE_SEMAPHORE_MAX_PERMITS + 1),
      TREADLE_EINVAL);
  assert_int_equal(treadle_semaphore_release(s, TREADLE_SEMAPHORE_MAX_PERMITS),
                   0);
  assert_int_equal(treadle_semaphore_release(s, 0), 0);
  treadle_semaphore_unref(s);
  /* NULL. */
  assert_int_equal(treadle_semaphore_try_acquire(NULL, 1), TREADLE_EINVAL);
  assert_int_equal(treadle_semaphore_release(NULL, 1), TREADLE_EINVAL);
  assert_int_equal(treadle_semaphore_available(NULL), 0);
  assert_null(treadle_semaphore_ref(NULL));
  treadle_semaphore_unref(NULL);
  treadle_semaphore_close(NULL);
  treadle_waiter_init(NULL);
  treadle_waiter_drop(NULL);
  /* Polls with bad input. */
  assert_int_equal(treadle_semaphore_new(1, &s), 0);
  actor_t m;
  actor_init(&m, sem_bad_step, s, 0);
  run_main(&m);
  assert_int_equal(treadle_semaphore_available(s), 0); /* the NULL-err one */
  treadle_semaphore_unref(s);
}

/* Tasks and threads take 1..3 of 3 permits and hold them across a yield;
 * never more than 3 are out. */
typedef struct {
  treadle_semaphore_t *s;
  _Atomic long in_use;
  long rounds;
} sem_stress_t;

static void take_permits(sem_stress_t *st, long n) {
  long now = atomic_fetch_add(&st->in_use, n) + n;
  assert_true(now <= 3);
}

static bool sem_stress_kid(actor_t *a, treadle_cx_t *cx) {
  sem_stress_t *st = a->shared;
  size_t n = 1 + (size_t)a->id % 3;
  for (;;) {
    if (a->stage == 0) {
      treadle_err_t err;
      if (treadle_semaphore_acquire_poll(st->s, cx, &a->w, n, &err) ==
          TREADLE_PENDING)
        return false;
      assert_int_equal(err, 0);
      take_permits(st, (long)n);
      a->stage = 1;
      treadle_cx_yield(cx);
      return false;
    }
    atomic_fetch_sub(&st->in_use, (long)n);
    assert_int_equal(treadle_semaphore_release(st->s, n), 0);
    a->stage = 0;
    if (++a->i == st->rounds)
      return true;
  }
}

static void *sem_stress_thread(void *arg) {
  sem_stress_t *st = arg;
  for (long i = 0; i < st->rounds * 4; i++) {
    if (treadle_semaphore_try_acquire(st->s, 1) == 0) {
      take_permits(st, 1);
      atomic_fetch_sub(&st->in_use, 1);
      assert_int_equal(treadle_semaphore_release(st->s, 1), 0);
    }
  }
  return NULL;
}

static bool sem_stress_step(actor_t *m, treadle_cx_t *cx) {
  if (m->stage == 0) {
    spawn_kids(m, cx, 12, sem_stress_kid, m->shared);
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void semaphore_stress_tasks_and_threads(void **state) {
  (void)state;
  sem_stress_t st = {.rounds = (long)test_scale(500)};
  assert_int_equal(treadle_semaphore_new(3, &st.s), 0);
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, sem_stress_thread, &st);
  actor_t m;
  actor_init(&m, sem_stress_step, &st, 0);
  run_main_joining(&m, th, 2);
  assert_int_equal(atomic_load(&st.in_use), 0);
  assert_int_equal(treadle_semaphore_available(st.s), 3);
  free_kids(&m);
  treadle_semaphore_unref(st.s);
}

/* ------------------------------------------------------------ oneshot */

static _Atomic int values_dropped;
static void count_value_drop(void *v) {
  assert_non_null(v);
  atomic_fetch_add(&values_dropped, 1);
}

typedef struct {
  treadle_oneshot_tx_t *tx;
  treadle_oneshot_rx_t *rx;
  void *value;
} oshared_t;

static void *send_from_thread(void *arg) {
  oshared_t *o = arg;
  assert_int_equal(treadle_oneshot_send(o->tx, o->value), 0);
  return NULL;
}

static void *drop_tx_from_thread(void *arg) {
  treadle_oneshot_tx_drop(((oshared_t *)arg)->tx);
  return NULL;
}

static bool oneshot_recv_step(actor_t *m, treadle_cx_t *cx) {
  oshared_t *o = m->shared;
  void *v = (void *)1;
  treadle_err_t err = 1;
  if (m->stage == 0) {
    assert_int_equal(treadle_oneshot_recv_poll(o->rx, cx, &v, &err),
                     TREADLE_PENDING);
    assert_int_equal(cx->task->waits_on, TREADLE__WAIT_ONESHOT);
    assert_int_equal(treadle_oneshot_recv_poll(o->rx, cx, &v, &err),
                     TREADLE_PENDING); /* again: one waker slot */
    pthread_t *th = m->item;
    pthread_create(th, NULL,
                   m->id == 0 ? send_from_thread : drop_tx_from_thread, o);
    m->stage = 1;
    return false;
  }
  if (treadle_oneshot_recv_poll(o->rx, cx, &v, &err) == TREADLE_PENDING)
    return false;
  m->err = err;
  m->v = value_of(v);
  err = 1;
  assert_int_equal(treadle_oneshot_recv_poll(o->rx, cx, &v, &err),
                   TREADLE_READY);
  assert_int_equal(err, m->err == 0 ? TREADLE_EJOINED : TREADLE_ECLOSED);
  assert_null(v);
  return true;
}

static void oneshot_send_and_recv(void **state) {
  (void)state;
  atomic_store(&values_dropped, 0);
  for (int id = 0; id <= 1; id++) { /* 0: send; 1: sender dropped */
    oshared_t o = {.value = item_of(42)};
    assert_int_equal(treadle_oneshot_new(count_value_drop, &o.tx, &o.rx), 0);
    pthread_t th;
    actor_t m;
    actor_init(&m, oneshot_recv_step, &o, id);
    m.item = &th;
    run_main_joining(&m, &th, 1);
    assert_int_equal(m.err, id == 0 ? 0 : TREADLE_ECLOSED);
    assert_int_equal(m.v, id == 0 ? 42 : 0);
    treadle_oneshot_rx_drop(o.rx);
  }
  assert_int_equal(atomic_load(&values_dropped), 0); /* received: ours */
}

static void oneshot_value_ownership(void **state) {
  (void)state;
  atomic_store(&values_dropped, 0);
  treadle_oneshot_tx_t *tx;
  treadle_oneshot_rx_t *rx;
  int value;
  void *v;
  /* Receiver gone: the send fails and the value is not taken. */
  assert_int_equal(treadle_oneshot_new(count_value_drop, &tx, &rx), 0);
  treadle_oneshot_rx_drop(rx);
  assert_int_equal(treadle_oneshot_send(tx, &value), TREADLE_ECLOSED);
  assert_int_equal(atomic_load(&values_dropped), 0);
  /* Sent, never received: dropped with the receiver, once. */
  assert_int_equal(treadle_oneshot_new(count_value_drop, &tx, &rx), 0);
  assert_int_equal(treadle_oneshot_send(tx, &value), 0);
  treadle_oneshot_rx_drop(rx);
  assert_int_equal(atomic_load(&values_dropped), 1);
  /* Sent, received (recv_wait from a plain thread): the receiver's. */
  assert_int_equal(treadle_oneshot_new(count_value_drop, &tx, &rx), 0);
  assert_int_equal(treadle_oneshot_send(tx, &value), 0);
  assert_int_equal(treadle_oneshot_recv_wait(rx, &v), 0);
  assert_ptr_equal(v, &value);
  assert_int_equal(treadle_oneshot_recv_wait(rx, &v), TREADLE_EJOINED);
  assert_null(v);
  treadle_oneshot_rx_drop(rx);
  assert_int_equal(atomic_load(&values_dropped), 1);
  /* Received with value NULL: declined, so dropped. */
  assert_int_equal(treadle_oneshot_new(count_value_drop, &tx, &rx), 0);
  assert_int_equal(treadle_oneshot_send(tx, &value), 0);
  assert_int_equal(treadle_oneshot_recv_wait(rx, NULL), 0);
  treadle_oneshot_rx_drop(rx);
  assert_int_equal(atomic_load(&values_dropped), 2);
  /* Sender dropped: recv_wait sees ECLOSED. */
  assert_int_equal(treadle_oneshot_new(NULL, &tx, &rx), 0);
  treadle_oneshot_tx_drop(tx);
  assert_int_equal(treadle_oneshot_recv_wait(rx, &v), TREADLE_ECLOSED);
  treadle_oneshot_rx_drop(rx);
  /* Bad input. */
  assert_int_equal(treadle_oneshot_new(NULL, NULL, &rx), TREADLE_EINVAL);
  assert_null(rx);
  assert_int_equal(treadle_oneshot_send(NULL, &value), TREADLE_EINVAL);
  assert_int_equal(treadle_oneshot_recv_wait(NULL, &v), TREADLE_EINVAL);
  treadle_err_t err = 0;
  assert_int_equal(treadle_oneshot_recv_poll(NULL, NULL, &v, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  treadle_oneshot_tx_drop(NULL);
  treadle_oneshot_rx_drop(NULL);
}

/* Threads block in recv_wait; tasks send. */
enum { WAIT_THREADS = 8 };

static void *recv_wait_thread(void *arg) {
  oshared_t *o = arg;
  void *v = NULL;
  assert_int_equal(treadle_oneshot_recv_wait(o->rx, &v), 0);
  assert_ptr_equal(v, o->value);
  treadle_oneshot_rx_drop(o->rx);
  return NULL;
}

static bool oneshot_send_kid(actor_t *a, treadle_cx_t *cx) {
  (void)cx;
  oshared_t *o = a->shared;
  assert_int_equal(treadle_oneshot_send(o->tx, o->value), 0);
  return true;
}

static bool oneshot_senders_step(actor_t *m, treadle_cx_t *cx) {
  oshared_t *os = m->shared;
  if (m->stage == 0) {
    /* recv_wait refuses to block a thread that runs tasks. */
    treadle_oneshot_tx_t *tx;
    treadle_oneshot_rx_t *rx;
    void *v = (void *)1;
    assert_int_equal(treadle_oneshot_new(NULL, &tx, &rx), 0);
    assert_int_equal(treadle_oneshot_recv_wait(rx, &v), TREADLE_EINRUNTIME);
    assert_null(v);
    treadle_oneshot_tx_drop(tx);
    treadle_oneshot_rx_drop(rx);
    m->kids = calloc(WAIT_THREADS, sizeof *m->kids);
    m->nkids = WAIT_THREADS;
    for (int i = 0; i < WAIT_THREADS; i++) {
      actor_init(&m->kids[i], oneshot_send_kid, &os[i], i);
      m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
    }
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void oneshot_recv_wait_from_threads(void **state) {
  (void)state;
  oshared_t os[WAIT_THREADS];
  pthread_t th[WAIT_THREADS];
  for (int i = 0; i < WAIT_THREADS; i++) {
    os[i].value = item_of(100 + i);
    assert_int_equal(treadle_oneshot_new(NULL, &os[i].tx, &os[i].rx), 0);
    pthread_create(&th[i], NULL, recv_wait_thread, &os[i]);
  }
  actor_t m;
  actor_init(&m, oneshot_senders_step, os, 0);
  run_main_joining(&m, th, WAIT_THREADS);
  free_kids(&m);
}

/* Many oneshots: each task receives one, sent from a thread. */
typedef struct {
  oshared_t *os;
  size_t n;
} omany_t;

static bool oneshot_recv_kid(actor_t *a, treadle_cx_t *cx) {
  oshared_t *o = a->shared;
  void *v;
  treadle_err_t err;
  if (treadle_oneshot_recv_poll(o->rx, cx, &v, &err) == TREADLE_PENDING)
    return false;
  assert_int_equal(err, 0);
  assert_ptr_equal(v, o->value);
  treadle_oneshot_rx_drop(o->rx);
  o->rx = NULL;
  return true;
}

static void *oneshot_many_sender(void *arg) {
  omany_t *om = arg;
  for (size_t i = 0; i < om->n; i++) {
    if (i % 4 == 3)
      treadle_oneshot_tx_drop(om->os[i].tx);
    else
      assert_int_equal(treadle_oneshot_send(om->os[i].tx, om->os[i].value), 0);
  }
  return NULL;
}

static bool oneshot_closed_kid(actor_t *a, treadle_cx_t *cx) {
  oshared_t *o = a->shared;
  void *v;
  treadle_err_t err;
  if (treadle_oneshot_recv_poll(o->rx, cx, &v, &err) == TREADLE_PENDING)
    return false;
  assert_int_equal(err, TREADLE_ECLOSED);
  treadle_oneshot_rx_drop(o->rx);
  o->rx = NULL;
  return true;
}

static bool oneshot_many_step(actor_t *m, treadle_cx_t *cx) {
  omany_t *om = m->shared;
  if (m->stage == 0) {
    m->kids = calloc(om->n, sizeof *m->kids);
    m->nkids = om->n;
    for (size_t i = 0; i < om->n; i++) {
      actor_init(&m->kids[i],
                 i % 4 == 3 ? oneshot_closed_kid : oneshot_recv_kid, &om->os[i],
                 (int)i);
      m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
    }
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void oneshot_many_from_a_thread(void **state) {
  (void)state;
  omany_t om = {.n = test_scale(2000)};
  om.os = calloc(om.n, sizeof *om.os);
  for (size_t i = 0; i < om.n; i++) {
    om.os[i].value = item_of((long)i + 1);
    assert_int_equal(treadle_oneshot_new(NULL, &om.os[i].tx, &om.os[i].rx), 0);
  }
  pthread_t th;
  pthread_create(&th, NULL, oneshot_many_sender, &om);
  actor_t m;
  actor_init(&m, oneshot_many_step, &om, 0);
  run_main_joining(&m, &th, 1);
  for (size_t i = 0; i < om.n; i++)
    assert_null(om.os[i].rx);
  free_kids(&m);
  free(om.os);
}

/* --------------------------------------------------------------- mpsc */

static void mpsc_fifo_and_capacity(void **state) {
  (void)state;
  treadle_mpsc_tx_t *tx;
  treadle_mpsc_rx_t *rx;
  void *v;
  assert_int_equal(treadle_mpsc_new(4, NULL, &tx, &rx), 0);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_EAGAIN);
  long next_in = 1, next_out = 1;
  /* Around the ring several times, full and empty. */
  for (int round = 0; round < 5; round++) {
    while (treadle_mpsc_try_send(tx, item_of(next_in)) == 0)
      next_in++;
    assert_int_equal(next_in - next_out, 4);
    assert_int_equal(treadle_mpsc_try_send(tx, item_of(99)), TREADLE_EAGAIN);
    for (int k = 0; k < 1 + round % 4; k++) {
      assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
      assert_int_equal(value_of(v), next_out++);
    }
  }
  while (next_out < next_in) {
    assert_int_equal(treadle_mpsc_recv_wait(rx, &v), 0);
    assert_int_equal(value_of(v), next_out++);
  }
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_EAGAIN);
  assert_null(v);
  treadle_mpsc_tx_drop(tx);
  treadle_mpsc_rx_drop(rx);
}

/* Two tasks bounce a counter through two capacity-1 channels. */
typedef struct {
  treadle_mpsc_rx_t *rx1, *rx2;
  treadle_mpsc_tx_t *tx1, *tx2;
  long rounds;
} pingpong_t;

static bool ping_kid(actor_t *a, treadle_cx_t *cx) {
  pingpong_t *p = a->shared;
  treadle_err_t err;
  for (;;) {
    if (a->stage == 0) {
      if (a->i == p->rounds)
        return true; /* the drop function drops tx: pong sees ECLOSED */
      if (treadle_mpsc_send_poll(a->tx, cx, item_of(a->i + 1), &err) ==
          TREADLE_PENDING)
        return false;
      assert_int_equal(err, 0);
      a->stage = 1;
    }
    void *v;
    if (treadle_mpsc_recv_poll(a->rx, cx, &v, &err) == TREADLE_PENDING)
      return false;
    assert_int_equal(err, 0);
    assert_int_equal(value_of(v), a->i + 1);
    a->i++;
    a->stage = 0;
  }
}

static bool pong_kid(actor_t *a, treadle_cx_t *cx) {
  treadle_err_t err;
  for (;;) {
    if (a->stage == 0) {
      if (treadle_mpsc_recv_poll(a->rx, cx, &a->item, &err) == TREADLE_PENDING)
        return false;
      if (err == TREADLE_ECLOSED)
        return true;
      assert_int_equal(err, 0);
      a->stage = 1;
    }
    if (treadle_mpsc_send_poll(a->tx, cx, a->item, &err) == TREADLE_PENDING)
      return false;
    assert_int_equal(err, 0);
    a->i++;
    a->stage = 0;
  }
}

static bool pingpong_step(actor_t *m, treadle_cx_t *cx) {
  pingpong_t *p = m->shared;
  if (m->stage == 0) {
    m->kids = calloc(2, sizeof *m->kids);
    m->nkids = 2;
    actor_init(&m->kids[0], ping_kid, p, 0);
    m->kids[0].tx = p->tx1;
    m->kids[0].rx = p->rx2;
    actor_init(&m->kids[1], pong_kid, p, 1);
    m->kids[1].tx = p->tx2;
    m->kids[1].rx = p->rx1;
    for (int i = 0; i < 2; i++)
      m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void mpsc_ping_pong(void **state) {
  (void)state;
  pingpong_t p = {.rounds = (long)test_scale(100000)};
  assert_int_equal(treadle_mpsc_new(1, NULL, &p.tx1, &p.rx1), 0);
  assert_int_equal(treadle_mpsc_new(1, NULL, &p.tx2, &p.rx2), 0);
  actor_t m;
  actor_init(&m, pingpong_step, &p, 0);
  run_main(&m);
  assert_int_equal(m.kids[0].i, p.rounds);
  assert_int_equal(m.kids[1].i, p.rounds);
  free_kids(&m);
}

/* Full: send_poll is PENDING and keeps the item; a receive makes room
 * for it, reserved against later senders. */
static bool backpressure_step(actor_t *m, treadle_cx_t *cx) {
  treadle_mpsc_rx_t *rx = m->rx;
  treadle_err_t err = 1;
  void *v;
  if (m->stage == 0) {
    assert_int_equal(treadle_mpsc_send_poll(m->tx, cx, item_of(1), &err),
                     TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(treadle_mpsc_send_poll(m->tx, cx, item_of(2), &err),
                     TREADLE_PENDING);
    assert_int_equal(cx->task->waits_on, TREADLE__WAIT_MPSC_SEND);
    assert_int_equal(treadle_mpsc_send_poll(m->tx, cx, item_of(2), &err),
                     TREADLE_PENDING); /* queued once */
    m->tx2 = treadle_mpsc_tx_clone(m->tx);
    assert_non_null(m->tx2);
    assert_int_equal(treadle_mpsc_try_send(m->tx2, item_of(3)), TREADLE_EAGAIN);
    assert_int_equal(treadle_mpsc_try_send(m->tx, item_of(3)),
                     TREADLE_EAGAIN); /* waiting: not before its turn */
    /* The receive frees the slot for tx, and wakes this task. */
    assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
    assert_int_equal(value_of(v), 1);
    assert_int_equal(treadle_mpsc_try_send(m->tx2, item_of(3)), TREADLE_EAGAIN);
    m->stage = 1;
    return false;
  }
  assert_int_equal(treadle_mpsc_send_poll(m->tx, cx, item_of(2), &err),
                   TREADLE_READY);
  assert_int_equal(err, 0);
  assert_int_equal(treadle_mpsc_recv_poll(rx, cx, &v, &err), TREADLE_READY);
  assert_int_equal(value_of(v), 2);
  assert_int_equal(treadle_mpsc_recv_poll(rx, cx, &v, &err), TREADLE_PENDING);
  assert_int_equal(cx->task->waits_on, TREADLE__WAIT_MPSC_RECV);
  assert_int_equal(treadle_mpsc_try_send(m->tx2, item_of(3)), 0);
  assert_int_equal(treadle_mpsc_recv_poll(rx, cx, &v, &err), TREADLE_READY);
  assert_int_equal(value_of(v), 3);
  return true;
}

static void mpsc_backpressure(void **state) {
  (void)state;
  actor_t m;
  actor_init(&m, backpressure_step, NULL, 0);
  assert_int_equal(treadle_mpsc_new(1, NULL, &m.tx, &m.rx), 0);
  run_main(&m); /* its drop function drops the handles */
  assert_int_equal(m.stage, 1);
  assert_null(m.tx);
  assert_null(m.rx);
}

/* A sender granted room and then dropped passes the slot on; one dropped
 * while waiting just leaves the queue. */
static bool sender_drop_step(actor_t *m, treadle_cx_t *cx) {
  treadle_mpsc_tx_t *t[4];
  treadle_err_t err;
  void *v;
  for (int i = 0; i < 4; i++) {
    t[i] = treadle_mpsc_tx_clone(m->tx);
    assert_non_null(t[i]);
  }
  assert_int_equal(treadle_mpsc_try_send(m->tx, item_of(1)), 0);
  assert_int_equal(treadle_mpsc_send_poll(t[0], cx, item_of(10), &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_mpsc_send_poll(t[1], cx, item_of(11), &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_mpsc_send_poll(t[2], cx, item_of(12), &err),
                   TREADLE_PENDING);
  /* The slot goes to t[0], which is dropped: on to t[1]. */
  assert_int_equal(treadle_mpsc_try_recv(m->rx, &v), 0);
  treadle_mpsc_tx_drop(t[0]);
  assert_int_equal(treadle_mpsc_try_send(t[3], item_of(13)), TREADLE_EAGAIN);
  assert_int_equal(treadle_mpsc_send_poll(t[2], cx, item_of(12), &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_mpsc_send_poll(t[1], cx, item_of(11), &err),
                   TREADLE_READY);
  assert_int_equal(treadle_mpsc_try_recv(m->rx, &v), 0);
  assert_int_equal(value_of(v), 11);
  /* t[2] got that slot; dropped without sending, nobody else waits: the
   * slot is free again. */
  treadle_mpsc_tx_drop(t[2]);
  assert_int_equal(treadle_mpsc_try_send(t[3], item_of(13)), 0);
  /* Dropped while waiting, never granted: the next waiter gets the room. */
  assert_int_equal(treadle_mpsc_send_poll(t[1], cx, item_of(14), &err),
                   TREADLE_PENDING);
  assert_int_equal(treadle_mpsc_send_poll(t[3], cx, item_of(15), &err),
                   TREADLE_PENDING);
  treadle_mpsc_tx_drop(t[1]);
  assert_int_equal(treadle_mpsc_try_recv(m->rx, &v), 0);
  assert_int_equal(value_of(v), 13);
  assert_int_equal(treadle_mpsc_send_poll(t[3], cx, item_of(15), &err),
                   TREADLE_READY);
  treadle_mpsc_tx_drop(t[3]);
  return true;
}

static void mpsc_dropped_sender_passes_room_on(void **state) {
  (void)state;
  actor_t m;
  actor_init(&m, sender_drop_step, NULL, 0);
  assert_int_equal(treadle_mpsc_new(1, NULL, &m.tx, &m.rx), 0);
  run_main(&m);
}

/* The same across tasks: the first blocked sender is woken for room and
 * cancelled before it can use it; the second must still get through. */
typedef struct {
  treadle_mpsc_tx_t *tx;
  _Atomic int registered;
} bshared_t;

static bool blocked_sender_kid(actor_t *a, treadle_cx_t *cx) {
  bshared_t *b = a->shared;
  treadle_err_t err;
  if (treadle_mpsc_send_poll(a->tx, cx, item_of(100 + a->id), &err) ==
      TREADLE_PENDING) {
    note_registered(a, &b->registered);
    return false;
  }
  assert_int_equal(err, 0);
  return true;
}

static bool blocked_senders_step(actor_t *m, treadle_cx_t *cx) {
  bshared_t *b = m->shared;
  void *v;
  treadle_err_t err;
  if (m->stage == 0) {
    assert_int_equal(treadle_mpsc_try_send(b->tx, item_of(1)), 0); /* full */
    m->kids = calloc(2, sizeof *m->kids);
    m->nkids = 2;
    m->stage = 1;
  }
  if (m->stage == 1) {
    while (m->i < 2) { /* queue kid 0, then kid 1 */
      if (m->i == atomic_load(&b->registered)) {
        actor_t *k = &m->kids[m->i];
        actor_init(k, blocked_sender_kid, b, (int)m->i);
        k->tx = treadle_mpsc_tx_clone(b->tx);
        k->join = spawn_actor(treadle_cx_handle(cx), k);
        m->i++;
      }
      treadle_cx_yield(cx);
      return false;
    }
    if (atomic_load(&b->registered) < 2) {
      treadle_cx_yield(cx);
      return false;
    }
    /* Room for kid 0, which is cancelled at once. */
    assert_int_equal(treadle_mpsc_try_recv(m->rx, &v), 0);
    assert_int_equal(value_of(v), 1);
    treadle_join_abort(m->kids[0].join);
    m->stage = 2;
  }
  if (m->stage == 2) {
    /* Receive until kid 1's item came (kid 0's may come first if it ran
     * before the abort). */
    for (;;) {
      if (treadle_mpsc_recv_poll(m->rx, cx, &v, &err) == TREADLE_PENDING)
        return false;
      assert_int_equal(err, 0);
      if (value_of(v) == 101)
        break;
      assert_int_equal(value_of(v), 100);
    }
    m->stage = 3;
  }
  for (int i = 0; i < 2; i++) {
    treadle_err_t st;
    if (m->kids[i].join == NULL)
      continue;
    if (treadle_join_poll(m->kids[i].join, cx, &st, NULL) == TREADLE_PENDING)
      return false;
    if (i == 1 || strcmp(test_flavor(), "ct") != 0)
      assert_true(st == 0 || st == TREADLE_ECANCELED);
    else
      assert_int_equal(st, TREADLE_ECANCELED); /* never ran: one thread */
    treadle_join_detach(m->kids[i].join);
    m->kids[i].join = NULL;
  }
  return true;
}

static void mpsc_cancelled_sender_passes_wake_on(void **state) {
  (void)state;
  bshared_t b = {0};
  actor_t m;
  actor_init(&m, blocked_senders_step, &b, 0);
  assert_int_equal(treadle_mpsc_new(1, NULL, &b.tx, &m.rx), 0);
  run_main(&m);
  treadle_mpsc_tx_drop(b.tx);
  free_kids(&m);
}

/* Threads send (try_send, falling back to send_wait; or send_wait only);
 * one task counts every item once, in order per producer. */
enum { PRODUCERS = 4 };

typedef struct {
  treadle_mpsc_tx_t *tx;
  int id;
  long n;
} producer_t;

static void *producer_thread(void *arg) {
  producer_t *p = arg;
  for (long i = 0; i < p->n; i++) {
    void *item = item_of((long)p->id << 32 | (i + 1));
    treadle_err_t rc =
        p->id % 2 == 0 ? treadle_mpsc_try_send(p->tx, item) : TREADLE_EAGAIN;
    if (rc == TREADLE_EAGAIN)
      rc = treadle_mpsc_send_wait(p->tx, item);
    assert_int_equal(rc, 0);
  }
  treadle_mpsc_tx_drop(p->tx);
  return NULL;
}

static bool consumer_step(actor_t *m, treadle_cx_t *cx) {
  long *next = m->shared; /* PRODUCERS counters */
  for (;;) {
    void *v;
    treadle_err_t err;
    if (treadle_mpsc_recv_poll(m->rx, cx, &v, &err) == TREADLE_PENDING)
      return false;
    if (err == TREADLE_ECLOSED)
      return true;
    assert_int_equal(err, 0);
    long x = value_of(v);
    int p = (int)(x >> 32);
    assert_true(p >= 0 && p < PRODUCERS);
    assert_int_equal(x & 0xffffffff, ++next[p]);
    m->i++;
  }
}

static void mpsc_many_producer_threads(void **state) {
  (void)state;
  long n = (long)test_scale(20000);
  treadle_mpsc_tx_t *tx;
  actor_t m;
  actor_init(&m, consumer_step, NULL, 0);
  long next[PRODUCERS] = {0};
  m.shared = next;
  assert_int_equal(treadle_mpsc_new(16, NULL, &tx, &m.rx), 0);
  producer_t ps[PRODUCERS];
  pthread_t th[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++) {
    ps[i] = (producer_t){.tx = treadle_mpsc_tx_clone(tx), .id = i, .n = n};
    assert_non_null(ps[i].tx);
  }
  treadle_mpsc_tx_drop(tx);
  for (int i = 0; i < PRODUCERS; i++)
    pthread_create(&th[i], NULL, producer_thread, &ps[i]);
  run_main_joining(&m, th, PRODUCERS);
  for (int i = 0; i < PRODUCERS; i++)
    assert_int_equal(next[i], n);
  assert_int_equal(m.i, PRODUCERS * n);
}

/* The other way round: tasks send, a plain thread receives with
 * recv_wait; send_wait and recv_wait refuse to run on a task's thread. */
typedef struct {
  treadle_mpsc_rx_t *rx;
  long n;
  long got;
  long sum;
} waitrx_t;

static void *recv_wait_consumer(void *arg) {
  waitrx_t *w = arg;
  for (;;) {
    void *v;
    treadle_err_t rc = treadle_mpsc_recv_wait(w->rx, &v);
    if (rc == TREADLE_ECLOSED)
      break;
    assert_int_equal(rc, 0);
    w->got++;
    w->sum += value_of(v);
  }
  treadle_mpsc_rx_drop(w->rx);
  return NULL;
}

static bool task_sender_kid(actor_t *a, treadle_cx_t *cx) {
  long n = *(long *)a->shared;
  treadle_err_t err;
  while (a->i < n) {
    if (treadle_mpsc_send_poll(a->tx, cx, item_of(a->i + 1), &err) ==
        TREADLE_PENDING)
      return false;
    assert_int_equal(err, 0);
    a->i++;
  }
  return true; /* drops its tx */
}

static bool task_senders_step(actor_t *m, treadle_cx_t *cx) {
  if (m->stage == 0) {
    /* The blocking calls refuse to run on a thread that runs tasks. The
     * receiver (m->item, borrowed) lives while this task holds m->tx. */
    void *v = (void *)1;
    assert_int_equal(treadle_mpsc_send_wait(m->tx, item_of(1)),
                     TREADLE_EINRUNTIME);
    assert_int_equal(treadle_mpsc_recv_wait(m->item, &v), TREADLE_EINRUNTIME);
    assert_null(v);
    m->kids = calloc(3, sizeof *m->kids);
    m->nkids = 3;
    for (int i = 0; i < 3; i++) {
      actor_init(&m->kids[i], task_sender_kid, m->shared, i);
      m->kids[i].tx = treadle_mpsc_tx_clone(m->tx);
      assert_non_null(m->kids[i].tx);
      m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
    }
    treadle_mpsc_tx_drop(m->tx);
    m->tx = NULL;
    m->stage = 1;
  }
  return join_kids(m, cx);
}

static void mpsc_recv_wait_from_a_thread(void **state) {
  (void)state;
  long n = (long)test_scale(20000);
  waitrx_t w = {.n = n};
  actor_t m;
  actor_init(&m, task_senders_step, &n, 0);
  assert_int_equal(treadle_mpsc_new(2, NULL, &m.tx, &w.rx), 0);
  m.item = w.rx;
  pthread_t th;
  pthread_create(&th, NULL, recv_wait_consumer, &w);
  run_main_joining(&m, &th, 1);
  assert_int_equal(w.got, 3 * n);
  assert_int_equal(w.sum, 3 * (n * (n + 1) / 2));
  free_kids(&m);
}

static void mpsc_closing(void **state) {
  (void)state;
  treadle_mpsc_tx_t *tx, *tx2;
  treadle_mpsc_rx_t *rx;
  void *v;
  /* Last sender gone: drain, then ECLOSED. */
  assert_int_equal(treadle_mpsc_new(8, NULL, &tx, &rx), 0);
  tx2 = treadle_mpsc_tx_clone(tx);
  for (long i = 1; i <= 3; i++)
    assert_int_equal(treadle_mpsc_try_send(i % 2 ? tx : tx2, item_of(i)), 0);
  treadle_mpsc_tx_drop(tx);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
  assert_int_equal(value_of(v), 1);
  treadle_mpsc_tx_drop(tx2);
  for (long i = 2; i <= 3; i++) {
    assert_int_equal(treadle_mpsc_recv_wait(rx, &v), 0);
    assert_int_equal(value_of(v), i);
  }
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_ECLOSED);
  assert_int_equal(treadle_mpsc_recv_wait(rx, &v), TREADLE_ECLOSED);
  treadle_mpsc_rx_drop(rx);
  /* Receiver closed: sends fail, queued items still come. */
  assert_int_equal(treadle_mpsc_new(8, NULL, &tx, &rx), 0);
  assert_int_equal(treadle_mpsc_try_send(tx, item_of(1)), 0);
  assert_int_equal(treadle_mpsc_try_send(tx, item_of(2)), 0);
  treadle_mpsc_rx_close(rx);
  assert_int_equal(treadle_mpsc_try_send(tx, item_of(3)), TREADLE_ECLOSED);
  assert_int_equal(treadle_mpsc_send_wait(tx, item_of(3)), TREADLE_ECLOSED);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
  assert_int_equal(value_of(v), 1);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), 0);
  assert_int_equal(value_of(v), 2);
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_ECLOSED);
  treadle_mpsc_tx_drop(tx);
  treadle_mpsc_rx_drop(rx);
}

/* Receiver dropped: queued items go to drop_item exactly once; sends fail
 * and keep their item; a blocked sender wakes with ECLOSED. */
static _Atomic int items_dropped;
static void free_item(void *item) {
  atomic_fetch_add(&items_dropped, 1);
  free(item);
}

static void *blocked_send_thread(void *arg) {
  treadle_mpsc_tx_t *tx = arg;
  int *item = malloc(sizeof *item);
  assert_int_equal(treadle_mpsc_send_wait(tx, item), TREADLE_ECLOSED);
  free(item); /* not taken */
  treadle_mpsc_tx_drop(tx);
  return NULL;
}

static void mpsc_rx_dropped_drops_items_once(void **state) {
  (void)state;
  atomic_store(&items_dropped, 0);
  treadle_mpsc_tx_t *tx;
  treadle_mpsc_rx_t *rx;
  assert_int_equal(treadle_mpsc_new(3, free_item, &tx, &rx), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(treadle_mpsc_try_send(tx, malloc(sizeof(int))), 0);
  pthread_t th;
  pthread_create(&th, NULL, blocked_send_thread, treadle_mpsc_tx_clone(tx));
  treadle_mpsc_rx_drop(rx);
  assert_int_equal(atomic_load(&items_dropped), 3);
  pthread_join(th, NULL);
  int *mine = malloc(sizeof *mine);
  assert_int_equal(treadle_mpsc_try_send(tx, mine), TREADLE_ECLOSED);
  assert_int_equal(treadle_mpsc_send_wait(tx, mine), TREADLE_ECLOSED);
  free(mine); /* still ours */
  treadle_mpsc_tx_drop(tx);
  assert_int_equal(atomic_load(&items_dropped), 3);
}

/* A task blocked in send_poll sees ECLOSED when the receiver goes, and
 * its item is not taken. */
static bool rx_gone_kid(actor_t *a, treadle_cx_t *cx) {
  if (treadle_mpsc_send_poll(a->tx, cx, a->item, &a->err) == TREADLE_PENDING) {
    note_registered(a, a->shared);
    return false;
  }
  return true;
}

static bool rx_gone_step(actor_t *m, treadle_cx_t *cx) {
  _Atomic int *registered = m->shared;
  if (m->stage == 0) {
    assert_int_equal(treadle_mpsc_try_send(m->tx, m->item), 0); /* full */
    m->item = NULL;
    m->kids = calloc(1, sizeof *m->kids);
    m->nkids = 1;
    actor_init(&m->kids[0], rx_gone_kid, registered, 0);
    m->kids[0].tx = treadle_mpsc_tx_clone(m->tx);
    m->kids[0].item = malloc(sizeof(int));
    m->kids[0].err = 1;
    m->kids[0].join = spawn_actor(treadle_cx_handle(cx), &m->kids[0]);
    m->stage = 1;
  }
  if (m->stage == 1) {
    if (atomic_load(registered) == 0) { /* until the kid is blocked */
      treadle_cx_yield(cx);
      return false;
    }
    treadle_mpsc_rx_drop(m->rx);
    m->rx = NULL;
    assert_int_equal(atomic_load(&items_dropped), 1); /* the queued one */
    m->stage = 2;
  }
  if (!join_kids(m, cx))
    return false;
  assert_int_equal(m->kids[0].err, TREADLE_ECLOSED);
  free(m->kids[0].item); /* not taken */
  return true;
}

static void mpsc_rx_dropped_fails_blocked_task(void **state) {
  (void)state;
  atomic_store(&items_dropped, 0);
  _Atomic int registered = 0;
  actor_t m;
  actor_init(&m, rx_gone_step, &registered, 0);
  assert_int_equal(treadle_mpsc_new(1, free_item, &m.tx, &m.rx), 0);
  m.item = malloc(sizeof(int));
  run_main(&m);
  assert_int_equal(atomic_load(&items_dropped), 1);
  free_kids(&m);
}

/* The coop budget cuts a loop of ready receives and acquires at 128. */
static bool budget_step(actor_t *m, treadle_cx_t *cx) {
  treadle_semaphore_t *s = m->shared;
  if (m->stage == 0) {
    long got = 0;
    for (;;) {
      void *v;
      treadle_err_t err;
      if (treadle_mpsc_recv_poll(m->rx, cx, &v, &err) == TREADLE_PENDING)
        break;
      got++;
    }
    assert_int_equal(got, 128);
    m->stage = 1;
    return false; /* polled again: the budget asked for it */
  }
  if (m->stage == 1) {
    long got = 0;
    for (;;) {
      treadle_err_t err;
      if (treadle_semaphore_acquire_poll(s, cx, &m->w, 1, &err) ==
          TREADLE_PENDING)
        break;
      got++;
    }
    assert_int_equal(got, 128);
    assert_int_equal(treadle_semaphore_available(s), 1000 - 128);
    m->stage = 2;
    return false;
  }
  return true;
}

static void coop_budget_cuts_ready_loops(void **state) {
  (void)state;
  treadle_semaphore_t *s;
  assert_int_equal(treadle_semaphore_new(1000, &s), 0);
  actor_t m;
  actor_init(&m, budget_step, s, 0);
  assert_int_equal(treadle_mpsc_new(300, NULL, &m.tx, &m.rx), 0);
  for (long i = 0; i < 300; i++)
    assert_int_equal(treadle_mpsc_try_send(m.tx, item_of(i)), 0);
  run_main(&m);
  assert_int_equal(m.stage, 2);
  treadle_semaphore_unref(s);
}

static void mpsc_rejects_bad_input(void **state) {
  (void)state;
  treadle_mpsc_tx_t *tx = (treadle_mpsc_tx_t *)1;
  treadle_mpsc_rx_t *rx = (treadle_mpsc_rx_t *)1;
  void *v = (void *)1;
  assert_int_equal(treadle_mpsc_new(0, NULL, &tx, &rx), TREADLE_EINVAL);
  assert_null(tx);
  assert_null(rx);
  assert_int_equal(treadle_mpsc_new(((size_t)1 << 30) + 1, NULL, &tx, &rx),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_mpsc_new(1, NULL, NULL, &rx), TREADLE_EINVAL);
  assert_int_equal(treadle_mpsc_new(1, NULL, &tx, NULL), TREADLE_EINVAL);
  assert_null(treadle_mpsc_tx_clone(NULL));
  treadle_mpsc_tx_drop(NULL);
  treadle_mpsc_rx_drop(NULL);
  treadle_mpsc_rx_close(NULL);
  assert_int_equal(treadle_mpsc_try_send(NULL, v), TREADLE_EINVAL);
  assert_int_equal(treadle_mpsc_send_wait(NULL, v), TREADLE_EINVAL);
  assert_int_equal(treadle_mpsc_try_recv(NULL, &v), TREADLE_EINVAL);
  assert_null(v);
  v = (void *)1;
  assert_int_equal(treadle_mpsc_recv_wait(NULL, &v), TREADLE_EINVAL);
  assert_null(v);
  treadle_err_t err = 0;
  assert_int_equal(treadle_mpsc_send_poll(NULL, NULL, v, &err), TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  err = 0;
  assert_int_equal(treadle_mpsc_recv_poll(NULL, NULL, &v, &err), TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  /* An item received with item == NULL goes to drop_item. */
  atomic_store(&items_dropped, 0);
  assert_int_equal(treadle_mpsc_new(2, free_item, &tx, &rx), 0);
  assert_int_equal(treadle_mpsc_try_send(tx, malloc(1)), 0);
  assert_int_equal(treadle_mpsc_try_recv(rx, NULL), 0);
  assert_int_equal(atomic_load(&items_dropped), 1);
  treadle_mpsc_tx_drop(tx);
  treadle_mpsc_rx_drop(rx);
  /* Notify. */
  assert_int_equal(treadle_notify_new(NULL), TREADLE_EINVAL);
  treadle_notify_one(NULL);
  treadle_notify_waiters(NULL);
  treadle_notify_unref(NULL);
  assert_null(treadle_notify_ref(NULL));
  assert_int_equal(treadle_notify_poll(NULL, NULL, NULL), TREADLE_READY);
}

/* ----------------------------------------------------- out of memory */

static void sync_new_out_of_memory(void **state) {
  (void)state;
  treadle_notify_t *n = (treadle_notify_t *)1;
  treadle_mutex_t *mu = (treadle_mutex_t *)1;
  treadle_semaphore_t *s = (treadle_semaphore_t *)1;
  treadle_oneshot_tx_t *otx = (treadle_oneshot_tx_t *)1;
  treadle_oneshot_rx_t *orx = (treadle_oneshot_rx_t *)1;
  treadle_mpsc_tx_t *tx = (treadle_mpsc_tx_t *)1;
  treadle_mpsc_rx_t *rx = (treadle_mpsc_rx_t *)1;
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_notify_new(&n), TREADLE_ENOMEM);
  assert_null(n);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_mutex_new(&mu), TREADLE_ENOMEM);
  assert_null(mu);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_semaphore_new(1, &s), TREADLE_ENOMEM);
  assert_null(s);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_oneshot_new(NULL, &otx, &orx), TREADLE_ENOMEM);
  assert_null(otx);
  assert_null(orx);
  for (long k = 0; k <= 1; k++) { /* the channel, then its first sender */
    tx = (treadle_mpsc_tx_t *)1;
    rx = (treadle_mpsc_rx_t *)1;
    treadle__alloc_fail_after(k);
    assert_int_equal(treadle_mpsc_new(4, NULL, &tx, &rx), TREADLE_ENOMEM);
    assert_null(tx);
    assert_null(rx);
  }
  treadle__alloc_fail_after(-1);
  /* A clone that cannot be allocated: NULL, the channel unchanged. */
  assert_int_equal(treadle_mpsc_new(1, NULL, &tx, &rx), 0);
  treadle__alloc_fail_after(0);
  assert_null(treadle_mpsc_tx_clone(tx));
  treadle_mpsc_tx_drop(tx);
  void *v;
  assert_int_equal(treadle_mpsc_try_recv(rx, &v), TREADLE_ECLOSED);
  treadle_mpsc_rx_drop(rx);
  /* A blocking wait whose parker cannot be allocated. */
  assert_int_equal(treadle_oneshot_new(NULL, &otx, &orx), 0);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_oneshot_recv_wait(orx, &v), TREADLE_ENOMEM);
  assert_int_equal(treadle_oneshot_send(otx, item_of(5)), 0);
  assert_int_equal(treadle_oneshot_recv_wait(orx, &v), 0);
  assert_int_equal(value_of(v), 5);
  treadle_oneshot_rx_drop(orx);
  assert_int_equal(treadle_mpsc_new(1, NULL, &tx, &rx), 0);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_mpsc_recv_wait(rx, &v), TREADLE_ENOMEM);
  assert_int_equal(treadle_mpsc_try_send(tx, item_of(1)), 0);
  treadle__alloc_fail_after(0);
  assert_int_equal(treadle_mpsc_send_wait(tx, item_of(2)), TREADLE_ENOMEM);
  treadle__alloc_fail_after(-1);
  treadle_mpsc_tx_drop(tx);
  treadle_mpsc_rx_drop(rx);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(notify_one_stores_one_permit),
    RT_TEST(notify_waiters_wakes_all_stores_none),
    RT_TEST(notify_one_is_fifo),
    RT_TEST(notify_wakes_tasks_in_order),
    RT_TEST(notify_dropped_waiter_passes_it_on),
    RT_TEST(waiter_follows_the_task_that_polls_it),
    RT_TEST(notify_never_loses_a_wake),
    RT_TEST(mutex_excludes_across_awaits),
    RT_TEST(mutex_hands_off_in_fifo_order),
    RT_TEST(mutex_try_lock_and_hand_off),
    RT_TEST(semaphore_big_waiter_is_not_overtaken),
    RT_TEST(semaphore_dropped_waiter_returns_permits),
    RT_TEST(semaphore_close_wakes_waiters),
    RT_TEST(semaphore_close_returns_partial_permits),
    RT_TEST(semaphore_rejects_bad_input),
    RT_TEST(semaphore_stress_tasks_and_threads),
    RT_TEST(oneshot_send_and_recv),
    TEST(oneshot_value_ownership),
    RT_TEST(oneshot_recv_wait_from_threads),
    RT_TEST(oneshot_many_from_a_thread),
    TEST(mpsc_fifo_and_capacity),
    RT_TEST(mpsc_ping_pong),
    RT_TEST(mpsc_backpressure),
    RT_TEST(mpsc_dropped_sender_passes_room_on),
    RT_TEST(mpsc_cancelled_sender_passes_wake_on),
    RT_TEST(mpsc_many_producer_threads),
    RT_TEST(mpsc_recv_wait_from_a_thread),
    TEST(mpsc_closing),
    TEST(mpsc_rx_dropped_drops_items_once),
    RT_TEST(mpsc_rx_dropped_fails_blocked_task),
    RT_TEST(coop_budget_cuts_ready_loops),
    TEST(mpsc_rejects_bad_input),
    TEST(sync_new_out_of_memory),
};

TEST_MAIN(tests)
