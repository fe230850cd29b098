/* The hierarchical timer wheel: 6 levels of 64 slots, one tick per slot at
 * level 0 (1 ms), 64^l ticks per slot at level l (tokio time/wheel).
 *
 * Invariants:
 * 1. Every timer in the wheel has when > elapsed.
 * 2. A timer sits at the level of the highest 6-bit digit in which `when`
 *    and `elapsed` (at insert) differ, in the slot given by that digit of
 *    `when`. So each level's timers lie in the current block of the level
 *    above, and every timer at level l expires before any at level l+1:
 *    the next expiration is the first occupied slot of the lowest level
 *    that has one.
 * 3. When time reaches a slot's start, its timers are taken out: those due
 *    go to `pending`, the rest are re-inserted (they land at a lower level:
 *    "cascading"). A timer therefore moves at most 6 times in its life.
 * 4. Timers more than the wheel's span (2^36 ticks) ahead go to the top
 *    level's slot for their digit; the top level is a ring that is walked
 *    forever, so such a timer is re-inserted each time its slot comes
 *    round, and fires only when its real tick has come.
 * 5. A slot's deadline, the tick at which its start is reached, is the one
 *    notion of "when must the wheel be polled next": next_expiration
 *    reports the earliest occupied slot's, insert returns the new timer's
 *    slot's, and poll(now) empties every slot whose deadline is <= now.
 *    A driver that sleeps until that tick and then polls therefore
 *    cascades on time, and never wakes for nothing more than once per
 *    level a timer passes through (tokio time/wheel/mod.rs).
 *
 * Insert, remove: O(1). Finding the next expiration: O(levels) with one
 * count-trailing-zeros per level, thanks to the occupied bitmasks. */
#include "internal.h"

#define SLOT_BITS 6
#define SLOT_MASK (TREADLE__WHEEL_SLOTS - 1)
#define LEVEL_PENDING 0xff

static unsigned level_for(uint64_t elapsed, uint64_t when) {
  uint64_t masked = (elapsed ^ when) | SLOT_MASK;
  if (masked >= TREADLE__WHEEL_SPAN)
    masked = TREADLE__WHEEL_SPAN - 1;
  unsigned significant = 63u - (unsigned)__builtin_clzll(masked);
  return significant / SLOT_BITS;
}

static unsigned slot_for(uint64_t when, unsigned level) {
  return (unsigned)(when >> (level * SLOT_BITS)) & SLOT_MASK;
}

static uint64_t slot_range(unsigned level) {
  return UINT64_C(1) << (level * SLOT_BITS);
}

void treadle__wheel_init(treadle__wheel_t *w, uint64_t now) {
  w->elapsed = now;
  for (unsigned l = 0; l < TREADLE__WHEEL_LEVELS; l++) {
    w->occupied[l] = 0;
    for (unsigned s = 0; s < TREADLE__WHEEL_SLOTS; s++)
      treadle__list_init(&w->slots[l][s]);
  }
  treadle__list_init(&w->pending);
}

/* Invariant 5: the tick at which the start of `slot` of `level` is next
 * reached, after elapsed. */
static uint64_t slot_deadline(const treadle__wheel_t *w, unsigned level,
                              unsigned slot) {
  uint64_t level_range = slot_range(level + 1);
  uint64_t level_start = w->elapsed & ~(level_range - 1);
  uint64_t deadline = level_start + slot * slot_range(level);
  if (deadline <= w->elapsed) {
    /* Only the top level wraps (invariant 4): the slot is a turn ahead. */
    TREADLE_ASSERT(level == TREADLE__WHEEL_LEVELS - 1);
    deadline += level_range;
  }
  return deadline;
}

uint64_t treadle__wheel_insert(treadle__wheel_t *w, treadle__timer_t *t) {
  TREADLE_ASSERT(t->when > w->elapsed);
  unsigned level = level_for(w->elapsed, t->when);
  unsigned slot = slot_for(t->when, level);
  t->level = (uint8_t)level;
  treadle__list_push_back(&w->slots[level][slot], &t->node);
  w->occupied[level] |= UINT64_C(1) << slot;
  return slot_deadline(w, level, slot);
}

void treadle__wheel_remove(treadle__wheel_t *w, treadle__timer_t *t) {
  if (t->level == LEVEL_PENDING) {
    treadle__list_unlink(&t->node);
    return;
  }
  unsigned slot = slot_for(t->when, t->level);
  treadle__list_unlink(&t->node);
  if (treadle__list_empty(&w->slots[t->level][slot]))
    w->occupied[t->level] &= ~(UINT64_C(1) << slot);
}

typedef struct {
  unsigned level;
  unsigned slot;
  uint64_t deadline; /* tick at which the slot's start is reached */
} expiration_t;

static bool next_expiration(const treadle__wheel_t *w, expiration_t *exp) {
  for (unsigned level = 0; level < TREADLE__WHEEL_LEVELS; level++) {
    uint64_t occupied = w->occupied[level];
    if (occupied == 0)
      continue;
    /* The first occupied slot after the current one, in ring order. The
     * current slot comes last: only the top level's far-future timers
     * (invariant 4) can sit in it, and they are a whole turn away. */
    unsigned from = (slot_for(w->elapsed, level) + 1) & SLOT_MASK;
    uint64_t rotated =
        from == 0 ? occupied : (occupied >> from) | (occupied << (64 - from));
    unsigned slot = (from + (unsigned)__builtin_ctzll(rotated)) & SLOT_MASK;
    exp->level = level;
    exp->slot = slot;
    exp->deadline = slot_deadline(w, level, slot);
    return true;
  }
  return false;
}

uint64_t treadle__wheel_next_expiration(const treadle__wheel_t *w) {
  if (!treadle__list_empty(&w->pending))
    return w->elapsed;
  expiration_t exp;
  return next_expiration(w, &exp) ? exp.deadline : TREADLE__TICK_NEVER;
}

/* Invariant 3: empty the slot, moving due timers to pending and
 * re-inserting the others relative to the slot's start. */
static void process_expiration(treadle__wheel_t *w, const expiration_t *exp) {
  treadle__list_t taken;
  treadle__list_init(&taken);
  treadle__list_move_all(&w->slots[exp->level][exp->slot], &taken);
  w->occupied[exp->level] &= ~(UINT64_C(1) << exp->slot);
  w->elapsed = exp->deadline;
  treadle__list_t *n;
  while ((n = treadle__list_pop_front(&taken)) != NULL) {
    treadle__timer_t *t = treadle__container_of(n, treadle__timer_t, node);
    if (t->when <= exp->deadline) {
      t->level = LEVEL_PENDING;
      treadle__list_push_back(&w->pending, &t->node);
    } else {
      treadle__wheel_insert(w, t);
    }
  }
}

treadle__timer_t *treadle__wheel_poll(treadle__wheel_t *w, uint64_t now) {
  for (;;) {
    treadle__list_t *n = treadle__list_pop_front(&w->pending);
    if (n != NULL)
      return treadle__container_of(n, treadle__timer_t, node);
    expiration_t exp;
    if (!next_expiration(w, &exp) || exp.deadline > now) {
      if (now > w->elapsed)
        w->elapsed = now;
      return NULL;
    }
    process_expiration(w, &exp);
  }
}

treadle__timer_t *treadle__wheel_pop_any(treadle__wheel_t *w) {
  treadle__list_t *n = treadle__list_pop_front(&w->pending);
  if (n != NULL)
    return treadle__container_of(n, treadle__timer_t, node);
  for (unsigned l = 0; l < TREADLE__WHEEL_LEVELS; l++) {
    if (w->occupied[l] == 0)
      continue;
    unsigned s = (unsigned)__builtin_ctzll(w->occupied[l]);
    treadle__timer_t *t = treadle__container_of(w->slots[l][s].next,
                                                treadle__timer_t, node);
    treadle__wheel_remove(w, t);
    return t;
  }
  return NULL;
}
