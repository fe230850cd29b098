/* The async Mutex: exclusion across awaits (a TSan target), hand-off in
 * FIFO order, try_lock. */
#include "sync_util.h"

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

static const struct CMUnitTest tests[] = {
    RT_TEST(mutex_excludes_across_awaits),
    RT_TEST(mutex_hands_off_in_fifo_order),
    RT_TEST(mutex_try_lock_and_hand_off),
};

TEST_MAIN(tests)
