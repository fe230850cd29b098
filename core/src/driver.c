/* The driver stack: time over I/O, or over a condition variable when the
 * runtime has no I/O (ARCHITECTURE.md "Driver stack").
 *
 * park(timeout) goes down: the time layer shortens the timeout to the next
 * timer, then the thread sleeps in epoll or on the condvar. Coming back up,
 * I/O events were dispatched inside the I/O park, then due timers fire.
 *
 * Unpark protocol (tokio park.rs), one atomic word:
 * 1. unpark: swap in NOTIFIED (seq_cst). If the old value was PARKED, the
 *    parker is asleep or about to be: write the eventfd, or signal the
 *    condvar under its mutex.
 * 2. park: CAS EMPTY -> PARKED (seq_cst). If that fails the word was
 *    NOTIFIED: consume it and return without sleeping. Otherwise sleep,
 *    then swap EMPTY back.
 * 3. Whoever queues work for a parked thread does it before step 1, and
 *    the parker looks at its queues before step 2, so a push is either
 *    seen by that look or followed by a NOTIFIED that step 2 cannot miss.
 *    An old NOTIFIED only costs one spurious return. */
#include "internal.h"

enum { EMPTY = 0, PARKED = 1, NOTIFIED = 2 };

treadle_err_t treadle__driver_init(treadle__driver_t *d,
                                   const treadle__config_t *cfg) {
  d->has_time = cfg->enable_time;
  d->has_io = cfg->enable_io;
  atomic_init(&d->park_state, EMPTY);
  atomic_init(&d->parks, 0);
  d->io.epfd = d->io.evfd = -1;
  treadle__signal_init(&d->signal);
  treadle__os_mutex_init(&d->park_mu);
  treadle__os_cond_init(&d->park_cv);
  treadle__time_init(&d->time, d);
  if (d->has_io) {
    treadle_err_t err = treadle__io_init(&d->io);
    if (err != 0) {
      d->has_io = false; /* nothing of it to shut down */
      treadle__io_destroy(&d->io);
      treadle__driver_destroy(d);
      return err;
    }
  }
  return 0;
}

static void sleep_condvar(treadle__driver_t *d, uint64_t timeout_ns) {
  uint64_t deadline = timeout_ns == TREADLE_FOREVER
                          ? TREADLE_FOREVER
                          : treadle__now() + timeout_ns;
  treadle__os_mutex_lock(&d->park_mu);
  /* The unparker signals under park_mu, so checking the word under it
   * before each wait cannot miss the signal. */
  while (atomic_load_explicit(&d->park_state, memory_order_seq_cst) ==
         PARKED) {
    if (!treadle__os_cond_wait_until(&d->park_cv, &d->park_mu, deadline))
      break;
  }
  treadle__os_mutex_unlock(&d->park_mu);
}

/* For a paused clock (driver_time.c step 5): true when no other thread
 * runs tasks of the runtime that the driver belongs to. */
static bool runtime_idle(treadle__driver_t *d) {
  treadle__sched_t *s =
      treadle__container_of(d, treadle_handle_t, driver)->sched;
  return s->vt->all_parked == NULL || s->vt->all_parked(s);
}

void treadle__driver_park(treadle__driver_t *d, uint64_t timeout_ns) {
  uint64_t skip_ns = 0; /* a paused clock's jump instead of the sleep */
  if (timeout_ns != 0) {
    /* Relaxed: a counter (metrics). */
    atomic_fetch_add_explicit(&d->parks, 1, memory_order_relaxed);
    if (d->has_time) {
      uint64_t t = treadle__time_park_timeout(&d->time);
      if (!treadle__time_paused(&d->time)) {
        if (t < timeout_ns)
          timeout_ns = t;
      } else if (t < timeout_ns && runtime_idle(d)) {
        /* A paused clock jumps instead, once no task runs (step 5 of
         * driver_time.c). While one runs, real time means nothing to it:
         * sleep until the last worker to park unparks us
         * (scheduler_mt.c park), or an event comes. */
        skip_ns = t;
        timeout_ns = 0;
      }
    }
  }
  if (timeout_ns != 0) {
    uint32_t expected = EMPTY;
    /* seq_cst: step 2 against step 1 (a store-load handshake). */
    if (atomic_compare_exchange_strong_explicit(
            &d->park_state, &expected, PARKED, memory_order_seq_cst,
            memory_order_seq_cst)) {
      if (d->has_io)
        treadle__io_park(&d->io, timeout_ns);
      else
        sleep_condvar(d, timeout_ns);
    }
    /* seq_cst: consume NOTIFIED before the caller looks at its queues. */
    atomic_exchange_explicit(&d->park_state, EMPTY, memory_order_seq_cst);
  } else if (d->has_io) {
    treadle__io_park(&d->io, 0); /* a busy thread's look at the events */
  }
  /* seq_cst: consumes an unpark as step 2 would; one means work to run
   * before time may move on, and so does a worker woken by the I/O poll. */
  if (skip_ns != 0 &&
      atomic_exchange_explicit(&d->park_state, EMPTY, memory_order_seq_cst) !=
          NOTIFIED &&
      runtime_idle(d))
    treadle__time_advance(&d->time, skip_ns);
  if (d->has_time)
    treadle__time_process(&d->time);
  if (d->has_io)
    treadle__signal_process(&d->signal);
}

void treadle__driver_unpark(treadle__driver_t *d) {
  /* seq_cst: step 1; orders the caller's queue push before the check. */
  if (atomic_exchange_explicit(&d->park_state, NOTIFIED,
                               memory_order_seq_cst) != PARKED)
    return;
  if (d->has_io) {
    treadle__io_unpark(&d->io);
  } else {
    treadle__os_mutex_lock(&d->park_mu);
    treadle__os_cond_signal(&d->park_cv);
    treadle__os_mutex_unlock(&d->park_mu);
  }
}

void treadle__driver_shutdown(treadle__driver_t *d) {
  if (d->has_time)
    treadle__time_shutdown(&d->time);
  if (d->has_io) {
    treadle__signal_shutdown(&d->signal);
    treadle__io_shutdown(&d->io);
  }
}

void treadle__driver_destroy(treadle__driver_t *d) {
  if (d->has_io)
    treadle__io_destroy(&d->io);
  treadle__signal_destroy(&d->signal);
  treadle__time_destroy(&d->time);
  treadle__os_cond_destroy(&d->park_cv);
  treadle__os_mutex_destroy(&d->park_mu);
}
