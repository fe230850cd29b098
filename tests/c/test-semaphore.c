/* Semaphore: a big waiter is not overtaken by small ones, a dropped
 * waiter returns its permits, close wakes the waiters and returns partial
 * permits, bad input, and tasks and threads at once (a TSan target). */
#include "sync_util.h"

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

static const struct CMUnitTest tests[] = {
    RT_TEST(semaphore_big_waiter_is_not_overtaken),
    RT_TEST(semaphore_dropped_waiter_returns_permits),
    RT_TEST(semaphore_close_wakes_waiters),
    RT_TEST(semaphore_close_returns_partial_permits),
    RT_TEST(semaphore_rejects_bad_input),
    RT_TEST(semaphore_stress_tasks_and_threads),
};

TEST_MAIN(tests)
