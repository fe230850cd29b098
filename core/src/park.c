/* A multi_thread worker's parker (tokio scheduler/multi_thread/park.rs).
 *
 * One worker at a time parks in the driver stack (it holds driver_mu, a
 * try-lock), so that timers fire and I/O is polled while the runtime is
 * idle; the others sleep on their own condition variable.
 *
 * 1. unpark: swap in NOTIFIED (seq_cst). The old value says how the
 *    worker sleeps: PARKED_CONDVAR, signal it under its mutex;
 *    PARKED_DRIVER, unpark the driver (driver.c has its own handshake);
 *    EMPTY or NOTIFIED, nothing: its next park returns at once.
 * 2. park: consume NOTIFIED if set; else CAS EMPTY -> PARKED_* and sleep;
 *    a failed CAS means NOTIFIED arrived: consume it and return. After
 *    sleeping, swap EMPTY back (consuming a NOTIFIED that woke us).
 * 3. Waking up does not mean there is work: the caller decides (it asks
 *    the idle list whether somebody unparked it). */
#include "internal.h"

enum { EMPTY = 0, PARKED_CONDVAR = 1, PARKED_DRIVER = 2, NOTIFIED = 3 };

void treadle__park_init(treadle__park_t *p) {
  atomic_init(&p->state, EMPTY);
  treadle__os_mutex_init(&p->mu);
  treadle__os_cond_init(&p->cv);
}

void treadle__park_destroy(treadle__park_t *p) {
  treadle__os_cond_destroy(&p->cv);
  treadle__os_mutex_destroy(&p->mu);
}

static bool consume_notified(treadle__park_t *p) {
  uint32_t expected = NOTIFIED;
  /* seq_cst: step 2; pairs with the unparker's swap. */
  return atomic_compare_exchange_strong_explicit(
      &p->state, &expected, EMPTY, memory_order_seq_cst, memory_order_seq_cst);
}

static void park_condvar(treadle__park_t *p) {
  treadle__os_mutex_lock(&p->mu);
  uint32_t expected = EMPTY;
  /* seq_cst: step 2. */
  if (!atomic_compare_exchange_strong_explicit(&p->state, &expected,
                                               PARKED_CONDVAR,
                                               memory_order_seq_cst,
                                               memory_order_seq_cst)) {
    atomic_store_explicit(&p->state, EMPTY, memory_order_seq_cst);
    treadle__os_mutex_unlock(&p->mu);
    return;
  }
  /* The unparker signals under mu, after its swap: waiting while the word
   * still says PARKED_CONDVAR cannot miss it; spurious wakeups loop. */
  while (!consume_notified(p))
    treadle__os_cond_wait_until(&p->cv, &p->mu, TREADLE_FOREVER);
  treadle__os_mutex_unlock(&p->mu);
}

static void park_driver(treadle__park_t *p, treadle__driver_t *d) {
  uint32_t expected = EMPTY;
  /* seq_cst: step 2. */
  if (!atomic_compare_exchange_strong_explicit(&p->state, &expected,
                                               PARKED_DRIVER,
                                               memory_order_seq_cst,
                                               memory_order_seq_cst)) {
    atomic_store_explicit(&p->state, EMPTY, memory_order_seq_cst);
    return;
  }
  treadle__driver_park(d, TREADLE_FOREVER);
  /* seq_cst: consume a NOTIFIED (or our PARKED_DRIVER) before the caller
   * looks at its queues. */
  atomic_exchange_explicit(&p->state, EMPTY, memory_order_seq_cst);
}

void treadle__park_park(treadle__park_t *p, treadle__driver_t *d,
                        treadle__os_mutex_t *driver_mu) {
  if (consume_notified(p))
    return;
  if (treadle__os_mutex_trylock(driver_mu)) {
    park_driver(p, d);
    treadle__os_mutex_unlock(driver_mu);
  } else {
    park_condvar(p);
  }
}

void treadle__park_unpark(treadle__park_t *p, treadle__driver_t *d) {
  /* seq_cst: step 1; orders the caller's queue push before the check. */
  switch (atomic_exchange_explicit(&p->state, NOTIFIED, memory_order_seq_cst)) {
  case PARKED_CONDVAR:
    treadle__os_mutex_lock(&p->mu);
    treadle__os_mutex_unlock(&p->mu);
    treadle__os_cond_signal(&p->cv);
    break;
  case PARKED_DRIVER:
    treadle__driver_unpark(d);
    break;
  default:
    break;
  }
}
