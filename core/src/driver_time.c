/* The time driver: the wheel behind a mutex, on CLOCK_MONOTONIC with a
 * 1 ms tick, and the leaf futures built on it (sleep, timeout).
 *
 * 1. Tick t is origin + t ms. A deadline rounds up to the next tick and a
 *    timer fires once the driver has read a clock at or past its tick, so
 *    a sleep never ends early. A zero or past deadline is ready at once.
 * 2. Timers are registered, reset and cancelled from any thread under
 *    `mu`. A timer's state word says where it is; a reader that sees
 *    REGISTERED takes the lock before touching the waker.
 * 3. Firing: under `mu`, take up to 32 due timers out of the wheel, move
 *    each one's waker out and then publish FIRED (release) as the last
 *    touch, because the owner may free the timer as soon as it sees
 *    FIRED. Wake them after unlocking.
 * 4. When to wake is the wheel's answer alone (wheel.c 5): the tick at
 *    which its next slot starts, which for a timer on a coarse level is
 *    earlier than the timer's own tick. The thread that parks in the
 *    driver records it (`parked_until`, under `mu`); a registration from
 *    another thread whose slot starts earlier unparks it. `next_due`
 *    caches it so that a driver turn skips the lock while nothing is due;
 *    a turn at or past it polls the wheel, which fires what is due and
 *    cascades what is not, and moves `next_due` on. So each park ends in
 *    progress: a sleep of any length costs a few parks, one or two per
 *    level its timer passes through, never a number that grows with it.
 * 5. A paused driver (treadle__time_pause, tests only) reads a virtual
 *    clock that stands still until the driver would sleep for a timer;
 *    then the clock jumps to that timer's slot instead (tokio's
 *    auto-advance). */
#include "internal.h"

#define NSEC_PER_TICK TREADLE_NSEC_PER_MSEC
#define BATCH 32
#define TICK_FOREVER (UINT64_C(1) << 62)

_Static_assert(sizeof(treadle__timer_t) <= sizeof(treadle_sleep_t),
               "treadle_sleep_t too small");
_Static_assert(_Alignof(treadle__timer_t) <= _Alignof(treadle_sleep_t),
               "treadle_sleep_t under-aligned");

/* Set while the driver's owner is parked; 0 means awake. */
#define AWAKE 0

static treadle__timer_t *as_timer(treadle_sleep_t *s) {
  return (treadle__timer_t *)(void *)s;
}

static uint64_t tick_floor(const treadle__time_t *tm, uint64_t ns) {
  return ns <= tm->origin_ns ? 0 : (ns - tm->origin_ns) / NSEC_PER_TICK;
}

static uint64_t tick_ceil(const treadle__time_t *tm, uint64_t ns) {
  if (ns <= tm->origin_ns)
    return 0;
  uint64_t d = ns - tm->origin_ns;
  return d / NSEC_PER_TICK + (d % NSEC_PER_TICK != 0);
}

static uint64_t tick_to_ns(const treadle__time_t *tm, uint64_t tick) {
  if (tick >= (UINT64_MAX - tm->origin_ns) / NSEC_PER_TICK)
    return TREADLE_FOREVER;
  return tm->origin_ns + tick * NSEC_PER_TICK;
}

uint64_t treadle_now(void) { return treadle__now(); }

uint64_t treadle__time_now(const treadle__time_t *tm) {
  /* Relaxed: a racing reader sees the clock a step behind, which only
   * delays a registration's "already due" answer to the wheel's, under mu. */
  uint64_t v = atomic_load_explicit(&tm->virtual_ns, memory_order_relaxed);
  return v != 0 ? v : treadle__now();
}

void treadle__time_pause(treadle__time_t *tm) {
  /* Relaxed: see treadle__time_now. */
  atomic_store_explicit(&tm->virtual_ns, treadle__now(), memory_order_relaxed);
}

bool treadle__time_paused(const treadle__time_t *tm) {
  return atomic_load_explicit(&tm->virtual_ns, memory_order_relaxed) != 0;
}

void treadle__time_advance(treadle__time_t *tm, uint64_t ns) {
  /* Relaxed: see treadle__time_now. */
  atomic_fetch_add_explicit(&tm->virtual_ns, ns, memory_order_relaxed);
}

treadle_err_t treadle_duration_from_secs(double secs, uint64_t *ns) {
  if (ns == NULL)
    return TREADLE_EINVAL;
  if (secs != secs)
    return TREADLE_EINVAL; /* NaN: asyncio raises too (cpython gh-105331) */
  if (secs <= 0) {
    *ns = 0;
  } else if (secs >= 18446744073.709551615) {
    *ns = TREADLE_FOREVER; /* also +inf; the cast below would be UB */
  } else {
    double d = secs * 1e9;
    *ns = d >= 18446744073709549568.0 ? TREADLE_FOREVER : (uint64_t)d;
  }
  return 0;
}

void treadle__time_init(treadle__time_t *tm, treadle__driver_t *d) {
  treadle__os_mutex_init(&tm->mu);
  tm->origin_ns = treadle__now();
  atomic_init(&tm->virtual_ns, 0);
  treadle__wheel_init(&tm->wheel, 0);
  tm->shut = false;
  atomic_init(&tm->parked_until, AWAKE);
  atomic_init(&tm->next_due, TREADLE__TICK_NEVER);
  tm->driver = d;
}

void treadle__time_destroy(treadle__time_t *tm) {
  treadle__os_mutex_destroy(&tm->mu);
}

uint64_t treadle__time_park_timeout(treadle__time_t *tm) {
  treadle__os_mutex_lock(&tm->mu);
  uint64_t next = treadle__wheel_next_expiration(&tm->wheel);
  /* Relaxed: read and written under mu (step 4). */
  atomic_store_explicit(&tm->parked_until, next, memory_order_relaxed);
  treadle__os_mutex_unlock(&tm->mu);
  if (next == TREADLE__TICK_NEVER)
    return TREADLE_FOREVER;
  uint64_t at = tick_to_ns(tm, next);
  uint64_t now = treadle__time_now(tm);
  return at > now ? at - now : 0;
}

/* Takes up to BATCH timers out with `take` and wakes or drops their
 * wakers with the lock released; returns how many it took. */
static unsigned drain_batch(treadle__time_t *tm, uint64_t now_tick,
                            bool shutdown) {
  treadle_waker_t *wakers[BATCH];
  unsigned n = 0;
  treadle__os_mutex_lock(&tm->mu);
  while (n < BATCH) {
    treadle__timer_t *t = shutdown ? treadle__wheel_pop_any(&tm->wheel)
                                   : treadle__wheel_poll(&tm->wheel, now_tick);
    if (t == NULL)
      break;
    wakers[n++] = t->waker;
    t->waker = NULL;
    /* release: the last touch (step 3); the owner may free it now. */
    atomic_store_explicit(&t->state,
                          shutdown ? TREADLE__TIMER_SHUTDOWN
                                   : TREADLE__TIMER_FIRED,
                          memory_order_release);
  }
  if (n < BATCH) {
    /* Relaxed: a hint read by time_process (step 4). */
    atomic_store_explicit(&tm->next_due,
                          treadle__wheel_next_expiration(&tm->wheel),
                          memory_order_relaxed);
  }
  treadle__os_mutex_unlock(&tm->mu);
  for (unsigned i = 0; i < n; i++) {
    if (shutdown)
      treadle_waker_drop(wakers[i]);
    else
      treadle_wake(wakers[i]);
  }
  return n;
}

void treadle__time_process(treadle__time_t *tm) {
  atomic_store_explicit(&tm->parked_until, AWAKE, memory_order_relaxed);
  uint64_t now_tick = tick_floor(tm, treadle__time_now(tm));
  if (now_tick < atomic_load_explicit(&tm->next_due, memory_order_relaxed))
    return;
  while (drain_batch(tm, now_tick, false) == BATCH)
    ;
}

void treadle__time_shutdown(treadle__time_t *tm) {
  treadle__os_mutex_lock(&tm->mu);
  tm->shut = true;
  treadle__os_mutex_unlock(&tm->mu);
  while (drain_batch(tm, 0, true) == BATCH)
    ;
}

/* --------------------------------------------------------------- sleep */

void treadle_sleep_until_init(treadle_sleep_t *s, uint64_t deadline_ns) {
  if (s == NULL)
    return;
  treadle__timer_t *t = as_timer(s);
  memset(s, 0, sizeof *s);
  treadle__list_init(&t->node);
  t->deadline_ns = deadline_ns;
  atomic_init(&t->state, TREADLE__TIMER_IDLE);
}

void treadle_sleep_init(treadle_sleep_t *s, uint64_t duration_ns) {
  uint64_t now = treadle__now();
  treadle_sleep_until_init(s, duration_ns >= TREADLE_FOREVER - now
                                  ? TREADLE_FOREVER
                                  : now + duration_ns);
}

uint64_t treadle_sleep_deadline(const treadle_sleep_t *s) {
  return s != NULL ? ((const treadle__timer_t *)(const void *)s)->deadline_ns
                   : 0;
}

static treadle_poll_t sleep_ready(treadle_cx_t *cx, treadle_err_t *err) {
  if (!treadle_cx_poll_proceed(cx))
    return TREADLE_PENDING;
  *err = 0;
  return TREADLE_READY;
}

/* A deadline's tick: rounded up (step 1); TREADLE_FOREVER sits at a tick
 * some 146 million years away, so that it still holds a waker and can be
 * reset or cancelled like any other timer. */
static uint64_t deadline_tick(const treadle__time_t *tm, uint64_t ns) {
  uint64_t tick = ns == TREADLE_FOREVER ? TICK_FOREVER : tick_ceil(tm, ns);
  return tick < TICK_FOREVER ? tick : TICK_FOREVER;
}

/* Puts t (waker set) in the wheel at `tick`, unlocks mu, and unparks the
 * driver if it sleeps past the tick at which the wheel must be polled for
 * t (step 4). */
static void insert_locked(treadle__time_t *tm, treadle__timer_t *t,
                          uint64_t tick) {
  t->when = tick;
  uint64_t due = treadle__wheel_insert(&tm->wheel, t);
  /* release: a thread that sees REGISTERED (acquire) may read t->driver
   * to take its lock (drop, reset from another thread). */
  atomic_store_explicit(&t->state, TREADLE__TIMER_REGISTERED,
                        memory_order_release);
  if (due < atomic_load_explicit(&tm->next_due, memory_order_relaxed))
    atomic_store_explicit(&tm->next_due, due, memory_order_relaxed);
  bool unpark =
      due < atomic_load_explicit(&tm->parked_until, memory_order_relaxed);
  treadle__os_mutex_unlock(&tm->mu);
  if (unpark)
    treadle__driver_unpark(tm->driver);
}

/* Registers an idle timer with the cx's runtime (step 2). */
static treadle_poll_t sleep_register(treadle__timer_t *t, treadle_cx_t *cx,
                                     treadle_err_t *err) {
  treadle_handle_t *h = cx->task->sched->handle;
  if (!h->driver.has_time) {
    *err = TREADLE_ENOTIME;
    return TREADLE_READY;
  }
  treadle__time_t *tm = &h->driver.time;
  if (t->deadline_ns <= treadle__time_now(tm))
    return sleep_ready(cx, err);
  uint64_t tick = deadline_tick(tm, t->deadline_ns);
  treadle__os_mutex_lock(&tm->mu);
  if (tm->shut) {
    treadle__os_mutex_unlock(&tm->mu);
    *err = TREADLE_ESHUTDOWN;
    return TREADLE_READY;
  }
  if (tick <= tm->wheel.elapsed) {
    treadle__os_mutex_unlock(&tm->mu);
    return sleep_ready(cx, err);
  }
  t->waker = treadle_waker_clone(&cx->task->waker);
  t->driver = tm;
  insert_locked(tm, t, tick);
  treadle__task_waits_on(cx->task, TREADLE__WAIT_SLEEP);
  return TREADLE_PENDING;
}

treadle_poll_t treadle_sleep_poll(treadle_sleep_t *s, treadle_cx_t *cx,
                                  treadle_err_t *err) {
  treadle_err_t ignored;
  if (err == NULL)
    err = &ignored;
  if (s == NULL || cx == NULL) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  treadle__timer_t *t = as_timer(s);
  /* acquire: pairs with the driver's FIRED/SHUTDOWN release (step 3). */
  uint8_t state = atomic_load_explicit(&t->state, memory_order_acquire);
  if (state == TREADLE__TIMER_IDLE)
    return sleep_register(t, cx, err);
  if (state == TREADLE__TIMER_REGISTERED) {
    /* Still waiting: make sure it will wake the task polling it now. */
    treadle__time_t *tm = t->driver;
    treadle_waker_t *old = NULL;
    treadle__os_mutex_lock(&tm->mu);
    state = atomic_load_explicit(&t->state, memory_order_relaxed);
    if (state == TREADLE__TIMER_REGISTERED &&
        t->waker != &cx->task->waker) {
      old = t->waker;
      t->waker = treadle_waker_clone(&cx->task->waker);
    }
    treadle__os_mutex_unlock(&tm->mu);
    treadle_waker_drop(old);
    if (state == TREADLE__TIMER_REGISTERED) {
      treadle__task_waits_on(cx->task, TREADLE__WAIT_SLEEP);
      return TREADLE_PENDING;
    }
  }
  if (state == TREADLE__TIMER_SHUTDOWN) {
    *err = TREADLE_ESHUTDOWN;
    return TREADLE_READY;
  }
  return sleep_ready(cx, err);
}

/* Takes a registered timer out of its wheel; returns its waker (the
 * caller drops or reuses it), or NULL if it was not registered. */
static treadle_waker_t *sleep_cancel(treadle__timer_t *t) {
  /* acquire: pairs with the driver's release, as in poll. */
  if (atomic_load_explicit(&t->state, memory_order_acquire) !=
      TREADLE__TIMER_REGISTERED)
    return NULL;
  treadle__time_t *tm = t->driver;
  treadle_waker_t *w = NULL;
  treadle__os_mutex_lock(&tm->mu);
  if (atomic_load_explicit(&t->state, memory_order_relaxed) ==
      TREADLE__TIMER_REGISTERED) {
    treadle__wheel_remove(&tm->wheel, t);
    w = t->waker;
    t->waker = NULL;
    atomic_store_explicit(&t->state, TREADLE__TIMER_IDLE,
                          memory_order_relaxed);
  }
  treadle__os_mutex_unlock(&tm->mu);
  return w;
}

void treadle_sleep_drop(treadle_sleep_t *s) {
  if (s != NULL)
    treadle_waker_drop(sleep_cancel(as_timer(s)));
}

void treadle_sleep_reset(treadle_sleep_t *s, uint64_t deadline_ns) {
  if (s == NULL)
    return;
  treadle__timer_t *t = as_timer(s);
  /* acquire: pairs with the driver's release, as in poll. */
  uint8_t state = atomic_load_explicit(&t->state, memory_order_acquire);
  if (state == TREADLE__TIMER_REGISTERED) {
    /* A task waits on it: move it in place, keeping its waker, or wake
     * the task now if the new deadline has already passed. */
    treadle__time_t *tm = t->driver;
    treadle__os_mutex_lock(&tm->mu);
    state = atomic_load_explicit(&t->state, memory_order_relaxed);
    if (state == TREADLE__TIMER_REGISTERED) {
      treadle__wheel_remove(&tm->wheel, t);
      t->deadline_ns = deadline_ns;
      uint64_t tick = deadline_tick(tm, deadline_ns);
      if (deadline_ns > treadle__time_now(tm) && tick > tm->wheel.elapsed) {
        insert_locked(tm, t, tick); /* unlocks */
        return;
      }
      treadle_waker_t *w = t->waker;
      t->waker = NULL;
      atomic_store_explicit(&t->state, TREADLE__TIMER_IDLE,
                            memory_order_relaxed);
      treadle__os_mutex_unlock(&tm->mu);
      treadle_wake(w);
      return;
    }
    treadle__os_mutex_unlock(&tm->mu);
  }
  t->deadline_ns = deadline_ns;
  if (state == TREADLE__TIMER_FIRED)
    atomic_store_explicit(&t->state, TREADLE__TIMER_IDLE,
                          memory_order_relaxed);
}

treadle_poll_t treadle_timeout_poll(treadle_sleep_t *deadline,
                                    treadle_cx_t *cx, treadle_poll_fn inner,
                                    void *inner_state, treadle_err_t *err) {
  treadle_err_t ignored;
  if (err == NULL)
    err = &ignored;
  if (deadline == NULL || cx == NULL || inner == NULL) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  if (inner(cx, inner_state) == TREADLE_READY) {
    *err = 0;
    return TREADLE_READY;
  }
  treadle_err_t e;
  if (treadle_sleep_poll(deadline, cx, &e) == TREADLE_READY) {
    *err = e != 0 ? e : TREADLE_ETIMEDOUT;
    return TREADLE_READY;
  }
  return TREADLE_PENDING;
}
