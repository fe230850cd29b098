/* The timer wheel on a virtual clock, against a plain reference model:
 * random insert / cancel / advance sequences with deadlines on every level
 * boundary and past the wheel's span (TESTING.md T1, T2, T7). */
#include "harness.h"
#include "internal.h"

typedef struct {
  treadle__timer_t timer;
  bool active; /* in the reference model */
  int fired;   /* times the wheel handed it out */
} ref_timer_t;

static uint64_t rng_state;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static uint64_t pow64(unsigned k) { return UINT64_C(1) << (6 * k); }

/* A delta > 0 chosen to hit every level and its boundaries. */
static uint64_t pick_delta(void) {
  switch (rng() % 8) {
  case 0:
    return 1 + rng() % 63;
  case 1:
  case 2: {
    unsigned k = 1 + (unsigned)(rng() % 6); /* 64^1 .. 64^6 */
    uint64_t d = pow64(k) + (rng() % 3) - 1;
    return d;
  }
  case 3:
    return 1 + rng() % TREADLE__WHEEL_SPAN;
  case 4: /* past the span */
    return TREADLE__WHEEL_SPAN + rng() % (TREADLE__WHEEL_SPAN * 8);
  default:
    return 1 + rng() % (1 + (rng() % 5000));
  }
}

/* Advances the wheel to `now`, checking it against the model. */
static void advance(treadle__wheel_t *w, ref_timer_t *ts, size_t n,
                    uint64_t now) {
  treadle__timer_t *t;
  while ((t = treadle__wheel_poll(w, now)) != NULL) {
    ref_timer_t *r = (ref_timer_t *)t;
    assert_true(r->active);            /* not cancelled, not fired twice */
    assert_true(r->timer.when <= now); /* never early */
    r->fired++;
    r->active = false;
  }
  assert_true(w->elapsed == now);
  for (size_t i = 0; i < n; i++)
    if (ts[i].active)
      assert_true(ts[i].timer.when > now); /* never late */
}

static uint64_t model_min(ref_timer_t *ts, size_t n) {
  uint64_t m = UINT64_MAX;
  for (size_t i = 0; i < n; i++)
    if (ts[i].active && ts[i].timer.when < m)
      m = ts[i].timer.when;
  return m;
}

static void run_sequence(uint64_t seed, uint64_t start, size_t n,
                         unsigned steps) {
  rng_state = seed;
  ref_timer_t *ts = calloc(n, sizeof *ts);
  treadle__wheel_t *w = malloc(sizeof *w);
  treadle__wheel_init(w, start);
  uint64_t now = start;
  for (unsigned step = 0; step < steps; step++) {
    uint64_t op = rng() % 10;
    size_t i = rng() % n;
    if (op < 5) { /* insert */
      if (ts[i].active)
        treadle__wheel_remove(w, &ts[i].timer);
      ts[i].timer.when = now + pick_delta();
      ts[i].active = true;
      ts[i].fired = 0;
      treadle__wheel_insert(w, &ts[i].timer);
    } else if (op < 7) { /* cancel */
      if (ts[i].active) {
        treadle__wheel_remove(w, &ts[i].timer);
        ts[i].active = false;
      }
    } else { /* advance: small, to the next deadline exactly, or big */
      uint64_t next = treadle__wheel_next_expiration(w);
      uint64_t min = model_min(ts, n);
      if (min != UINT64_MAX)
        assert_true(next <= min && next > now);
      else
        assert_true(next == TREADLE__TICK_NEVER);
      uint64_t to;
      switch (rng() % 4) {
      case 0:
        to = now + 1 + rng() % 70;
        break;
      case 1:
        to = min != UINT64_MAX && min - now < (UINT64_C(1) << 38)
                 ? min
                 : now + 1;
        break;
      case 2:
        to = now + pow64(1 + (unsigned)(rng() % 5)) + rng() % 3;
        break;
      default:
        to = now + rng() % (TREADLE__WHEEL_SPAN * 2);
        break;
      }
      advance(w, ts, n, to);
      now = to;
    }
  }
  /* Drain: everything still active fires at its own tick. */
  for (;;) {
    uint64_t min = model_min(ts, n);
    if (min == UINT64_MAX)
      break;
    if (min > now + 64 * TREADLE__WHEEL_SPAN) { /* too far to walk */
      for (size_t i = 0; i < n; i++)
        if (ts[i].active && ts[i].timer.when == min) {
          treadle__wheel_remove(w, &ts[i].timer);
          ts[i].active = false;
        }
      continue;
    }
    if (min > now + 1)
      advance(w, ts, n, min - 1); /* one tick early: must not fire */
    advance(w, ts, n, min);
    now = min;
  }
  for (size_t i = 0; i < n; i++)
    assert_true(ts[i].fired <= 1);
  assert_null(treadle__wheel_pop_any(w));
  free(w);
  free(ts);
}

static void matches_reference_from_zero(void **state) {
  (void)state;
  unsigned seeds = (unsigned)test_scale(40);
  for (unsigned s = 1; s <= seeds; s++)
    run_sequence(0x9E3779B97F4A7C15ull * s, 0, 64, 3000);
}

static void matches_reference_after_long_uptime(void **state) {
  (void)state;
  /* T2: start where the top level's slot wraps (tokio PR #8334). */
  const uint64_t starts[] = {UINT64_C(1) << 30, (UINT64_C(1) << 36) - 3,
                             UINT64_C(1) << 36, (UINT64_C(1) << 40) + 12345};
  for (size_t i = 0; i < TEST_ARRAY_LEN(starts); i++)
    run_sequence(0xDEADBEEF + i, starts[i], 48, (unsigned)test_scale(4000));
}

static void fires_exactly_on_level_boundaries(void **state) {
  (void)state;
  for (unsigned k = 0; k <= 6; k++) {
    for (int off = -1; off <= 1; off++) {
      if (pow64(k) + (uint64_t)off == 0)
        continue;
      treadle__wheel_t *w = malloc(sizeof *w);
      treadle__wheel_init(w, 0);
      ref_timer_t r = {.active = true};
      r.timer.when = pow64(k) + (uint64_t)(int64_t)off;
      treadle__wheel_insert(w, &r.timer);
      assert_null(treadle__wheel_poll(w, r.timer.when - 1));
      assert_ptr_equal(treadle__wheel_poll(w, r.timer.when), &r.timer);
      assert_null(treadle__wheel_poll(w, r.timer.when + 100));
      free(w);
    }
  }
}

static void far_future_waits_its_turn(void **state) {
  (void)state;
  /* Past the span: parked in the top level ring, re-inserted each time its
   * slot comes round, fired only at its own tick. */
  treadle__wheel_t *w = malloc(sizeof *w);
  treadle__wheel_init(w, 7);
  ref_timer_t far = {.active = true}, near = {.active = true};
  far.timer.when = 7 + 3 * TREADLE__WHEEL_SPAN + 5;
  near.timer.when = 9;
  treadle__wheel_insert(w, &far.timer);
  treadle__wheel_insert(w, &near.timer);
  assert_ptr_equal(treadle__wheel_poll(w, 9), &near.timer);
  assert_null(treadle__wheel_poll(w, 9));
  for (uint64_t t = 9 + TREADLE__WHEEL_SPAN / 2; t < far.timer.when;
       t += TREADLE__WHEEL_SPAN / 2)
    assert_null(treadle__wheel_poll(w, t));
  assert_null(treadle__wheel_poll(w, far.timer.when - 1));
  assert_ptr_equal(treadle__wheel_poll(w, far.timer.when), &far.timer);
  free(w);
}

static void cancel_from_pending_list(void **state) {
  (void)state;
  /* A timer moved to `pending` by a cascade can still be cancelled. */
  treadle__wheel_t *w = malloc(sizeof *w);
  treadle__wheel_init(w, 0);
  ref_timer_t a = {.active = true}, b = {.active = true};
  a.timer.when = b.timer.when = 4096; /* level 2 slot */
  treadle__wheel_insert(w, &a.timer);
  treadle__wheel_insert(w, &b.timer);
  treadle__timer_t *first = treadle__wheel_poll(w, 5000);
  assert_non_null(first);
  treadle__timer_t *other = first == &a.timer ? &b.timer : &a.timer;
  treadle__wheel_remove(w, other);
  assert_null(treadle__wheel_poll(w, 5000));
  free(w);
}

static void million_timers_half_cancelled(void **state) {
  (void)state;
  /* T7: O(1) insert and cancel; everything left fires exactly once. */
  size_t n = test_scale(1000000);
  ref_timer_t *ts = calloc(n, sizeof *ts);
  treadle__wheel_t *w = malloc(sizeof *w);
  treadle__wheel_init(w, 0);
  rng_state = 42;
  for (size_t i = 0; i < n; i++) {
    ts[i].timer.when = 1 + rng() % 100000;
    ts[i].active = true;
    treadle__wheel_insert(w, &ts[i].timer);
  }
  for (size_t i = 0; i < n; i += 2) {
    treadle__wheel_remove(w, &ts[i].timer);
    ts[i].active = false;
  }
  size_t fired = 0;
  treadle__timer_t *t;
  for (uint64_t now = 0; now <= 100000; now += 1 + rng() % 700)
    while ((t = treadle__wheel_poll(w, now)) != NULL) {
      ref_timer_t *r = (ref_timer_t *)t;
      assert_true(r->active && r->timer.when <= now);
      r->active = false;
      fired++;
    }
  while ((t = treadle__wheel_poll(w, 100000)) != NULL) {
    ((ref_timer_t *)t)->active = false;
    fired++;
  }
  assert_int_equal(fired, n / 2);
  free(w);
  free(ts);
}

static const struct CMUnitTest tests[] = {
    TEST(matches_reference_from_zero),
    TEST(matches_reference_after_long_uptime),
    TEST(fires_exactly_on_level_boundaries),
    TEST(far_future_waits_its_turn),
    TEST(cancel_from_pending_list),
    TEST(million_timers_half_cancelled),
};

TEST_MAIN(tests)
