/* What the tests of the synchronisation primitives (test-notify.c,
 * test-mutex.c, test-semaphore.c, test-oneshot.c, test-mpsc.c) share: the
 * actor, one task vtable driven by a step function, and its helpers. */
#ifndef TREADLE_TEST_SYNC_UTIL_H
#define TREADLE_TEST_SYNC_UTIL_H

#include "harness.h"
#include "internal.h"

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

/* Polls the actor; its drop gives up its waits, senders and receiver. The
 * task's state is an actor_t *. */
extern const treadle_task_vtable_t actor_vt;

void actor_init(actor_t *a, bool (*fn)(actor_t *, treadle_cx_t *), void *shared,
                int id);
treadle_join_t *spawn_actor(treadle_handle_t *h, actor_t *a);
/* Runs `a` as the main task of a fresh runtime, joins the `n` threads in
 * `th`, then frees the runtime. A thread may still be inside a wake (the
 * scheduler's schedule) when the task it woke has completed; it must be
 * done before the runtime goes. */
void run_main_joining(actor_t *a, pthread_t *th, int n);
void run_main(actor_t *a);
/* Spawns n kids with fn (ids 0..n-1) from inside a task. */
void spawn_kids(actor_t *m, treadle_cx_t *cx, size_t n,
                bool (*fn)(actor_t *, treadle_cx_t *), void *shared);
/* Joins m's kids in order; true once all completed with status 0. */
bool join_kids(actor_t *m, treadle_cx_t *cx);
void free_kids(actor_t *m);
/* Counts the first PENDING of an actor in *counter. */
void note_registered(actor_t *a, _Atomic int *counter);

static inline void *item_of(long v) { return (void *)(uintptr_t)v; }
static inline long value_of(void *item) { return (long)(uintptr_t)item; }

#endif
