/* Notify: one stored permit, notify_waiters wakes the waiters queued and
 * stores nothing, FIFO order among waiters and among tasks, a dropped
 * waiter passes its notification on, a waiter follows the task that polls
 * it, and no wake is lost to a thread that notifies in a loop. */
#include "sync_util.h"
#include "waitq.h" /* white-box: which waker a waiter holds */

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

static const struct CMUnitTest tests[] = {
    RT_TEST(notify_one_stores_one_permit),
    RT_TEST(notify_waiters_wakes_all_stores_none),
    RT_TEST(notify_one_is_fifo),
    RT_TEST(notify_wakes_tasks_in_order),
    RT_TEST(notify_dropped_waiter_passes_it_on),
    RT_TEST(waiter_follows_the_task_that_polls_it),
    RT_TEST(notify_never_loses_a_wake),
};

TEST_MAIN(tests)
