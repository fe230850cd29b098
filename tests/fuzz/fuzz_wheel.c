/* libFuzzer target: the timer wheel (core/src/wheel.c) against a plain
 * reference model on a virtual clock (docs/TESTING.md "Fuzzing", T1, T2).
 *
 * The input is a program: the first 8 bytes pick the starting clock (any
 * tick below 2^44, so the top level's wrap at 2^36 is in reach), then each
 * op byte inserts, cancels, resets or advances, with a delta read from the
 * next bytes that lands on level boundaries, inside a level or past the
 * wheel's span. Checked after every step: no timer is handed out early,
 * twice or after it was cancelled; after advancing to `now` none that is
 * due is left behind; the next expiration is never later than the
 * earliest deadline, never in the past, and is `elapsed` exactly while
 * timers are pending; insert's answer is never later than the timer's
 * deadline. At the end pop_any drains every remaining timer once. */
#include <stdlib.h>

#include "internal.h"

#define NTIMERS 64

typedef struct {
  treadle__timer_t timer;
  bool active; /* in the wheel, per the model */
} ref_timer_t;

typedef struct {
  const uint8_t *p;
  size_t n;
} input_t;

static uint64_t take(input_t *in, unsigned bytes) {
  uint64_t v = 0;
  for (unsigned i = 0; i < bytes && in->n > 0; i++, in->p++, in->n--)
    v = v << 8 | *in->p;
  return v;
}

/* A delta >= 1 of the kind the next byte picks. */
static uint64_t delta(input_t *in) {
  uint64_t kind = take(in, 1);
  switch (kind % 5) {
  case 0: /* inside level 0 */
    return 1 + take(in, 1) % 64;
  case 1: { /* on a level boundary, +-1 */
    unsigned level = 1 + (unsigned)(take(in, 1) % 6);
    uint64_t b = UINT64_C(1) << (6 * level);
    return b - 1 + take(in, 1) % 3;
  }
  case 2: /* anywhere in the span */
    return 1 + take(in, 5) % TREADLE__WHEEL_SPAN;
  case 3: /* past the span (invariant 4) */
    return TREADLE__WHEEL_SPAN + take(in, 5) % (TREADLE__WHEEL_SPAN * 4);
  default:
    return 1 + take(in, 2);
  }
}

static void check(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_wheel: %s\n", what);
    abort();
  }
}

static uint64_t model_min(const ref_timer_t *ts) {
  uint64_t min = UINT64_MAX;
  for (int i = 0; i < NTIMERS; i++)
    if (ts[i].active && ts[i].timer.when < min)
      min = ts[i].timer.when;
  return min;
}

static void insert(treadle__wheel_t *w, ref_timer_t *r, uint64_t when) {
  r->timer.when = when;
  uint64_t poll_at = treadle__wheel_insert(w, &r->timer);
  check(poll_at <= when && poll_at > w->elapsed, "insert's poll tick");
  r->active = true;
}

/* Polls the wheel at `now` and checks it against the model. */
static void advance(treadle__wheel_t *w, ref_timer_t *ts, uint64_t now) {
  treadle__timer_t *t;
  while ((t = treadle__wheel_poll(w, now)) != NULL) {
    ref_timer_t *r = (ref_timer_t *)t;
    check(r >= ts && r < ts + NTIMERS, "a timer that was never inserted");
    check(r->active, "fired twice, or after cancel");
    check(r->timer.when <= now, "fired early");
    r->active = false;
  }
  check(w->elapsed == now, "elapsed != now after a poll");
  check(model_min(ts) > now, "a due timer was left behind");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  input_t in = {data, size};
  static ref_timer_t ts[NTIMERS];
  static treadle__wheel_t w;
  memset(ts, 0, sizeof ts);
  uint64_t now = take(&in, 8) % (UINT64_C(1) << 44);
  treadle__wheel_init(&w, now);
  while (in.n > 0) {
    uint64_t op = take(&in, 1);
    ref_timer_t *r = &ts[(op >> 2) % NTIMERS];
    switch (op & 3) {
    case 0: /* insert (or reset: remove, then insert) */
    case 1:
      if (r->active)
        treadle__wheel_remove(&w, &r->timer);
      r->active = false;
      insert(&w, r, w.elapsed + delta(&in));
      break;
    case 2: /* cancel */
      if (r->active) {
        treadle__wheel_remove(&w, &r->timer);
        r->active = false;
      }
      break;
    default: { /* advance: by a delta, or to the next expiration */
      uint64_t next = treadle__wheel_next_expiration(&w);
      uint64_t min = model_min(ts);
      check(next <= min, "next expiration after the earliest deadline");
      check(next >= w.elapsed, "next expiration in the past");
      uint64_t to = (op & 4) && next != TREADLE__TICK_NEVER
                        ? next
                        : w.elapsed + delta(&in);
      advance(&w, ts, to);
      break;
    }
    }
  }
  /* Shutdown: pop_any hands out each remaining timer once. */
  treadle__timer_t *t;
  while ((t = treadle__wheel_pop_any(&w)) != NULL) {
    ref_timer_t *r = (ref_timer_t *)t;
    check(r->active, "pop_any: a timer not in the wheel");
    r->active = false;
  }
  check(model_min(ts) == UINT64_MAX, "pop_any left a timer behind");
  return 0;
}
