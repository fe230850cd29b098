/* Sleeping and searching workers (tokio scheduler/multi_thread/idle.rs).
 *
 * `state` packs how many workers are unparked (high bits) and how many of
 * them are searching for work (low 16 bits). The sleepers list, under
 * `mu`, says which are parked.
 *
 * 1. A worker may start searching only while fewer than half the workers
 *    search (transition_to_searching), so idle workers do not all hammer
 *    the queues at once.
 * 2. Whoever makes work that another worker could take (a spawn or wake
 *    into a queue others can steal from, a push to the inject queue) then
 *    calls worker_to_notify: if nobody searches and someone sleeps, one
 *    sleeper is taken off the list and counted as unparked and searching
 *    before it is woken. So one new task wakes at most one worker, and a
 *    wake is never needed while a searcher exists: the searcher will find
 *    the work.
 * 3. A searcher that gives up parks through transition_to_parked; if it
 *    was the last searcher it must look at every queue once more
 *    (notify_if_work_pending in scheduler_mt.c): work pushed while it
 *    searched saw "someone searches" and woke nobody.
 * 4. The store-load race between 2 (push, then read state) and 3 (write
 *    state, then read the queues) needs a seq_cst RMW or fence on both
 *    sides (tokio #1788): the notifier fences, the parker's update is a
 *    seq_cst RMW. */
#include "internal.h"

#define SEARCH_MASK UINT64_C(0xffff)
#define UNPARK_SHIFT 16
#define UNPARK_ONE (UINT64_C(1) << UNPARK_SHIFT)

static unsigned searching(uint64_t s) { return (unsigned)(s & SEARCH_MASK); }
static unsigned unparked(uint64_t s) { return (unsigned)(s >> UNPARK_SHIFT); }

treadle_err_t treadle__idle_init(treadle__idle_t *idle, unsigned workers) {
  idle->sleepers = treadle__calloc(workers, sizeof *idle->sleepers);
  idle->is_sleeping = treadle__calloc(workers, sizeof *idle->is_sleeping);
  if (idle->sleepers == NULL || idle->is_sleeping == NULL) {
    treadle__free(idle->sleepers);
    treadle__free(idle->is_sleeping);
    return TREADLE_ENOMEM;
  }
  atomic_init(&idle->state, (uint64_t)workers << UNPARK_SHIFT);
  idle->num_workers = workers;
  idle->num_sleepers = 0;
  treadle__os_mutex_init(&idle->mu);
  return 0;
}

void treadle__idle_destroy(treadle__idle_t *idle) {
  treadle__os_mutex_destroy(&idle->mu);
  treadle__free(idle->sleepers);
  treadle__free(idle->is_sleeping);
}

static bool should_wake(treadle__idle_t *idle) {
  /* seq_cst: step 4, after the caller's fence. */
  uint64_t s = atomic_load_explicit(&idle->state, memory_order_seq_cst);
  return searching(s) == 0 && unparked(s) < idle->num_workers;
}

bool treadle__idle_worker_to_notify(treadle__idle_t *idle, unsigned *index) {
  /* Step 4: the work was pushed before this fence. */
  treadle__fence_seq_cst(&idle->state);
  if (!should_wake(idle))
    return false;
  treadle__os_mutex_lock(&idle->mu);
  if (!should_wake(idle) || idle->num_sleepers == 0) {
    treadle__os_mutex_unlock(&idle->mu);
    return false;
  }
  /* seq_cst: the woken worker counts as unparked and searching before
   * anyone else decides whether to wake one. */
  atomic_fetch_add_explicit(&idle->state, UNPARK_ONE + 1,
                            memory_order_seq_cst);
  *index = idle->sleepers[--idle->num_sleepers];
  idle->is_sleeping[*index] = false;
  treadle__os_mutex_unlock(&idle->mu);
  return true;
}

bool treadle__idle_transition_to_parked(treadle__idle_t *idle, unsigned index,
                                        bool is_searching) {
  treadle__os_mutex_lock(&idle->mu);
  /* seq_cst: step 4, the parker's side. */
  uint64_t prev = atomic_fetch_sub_explicit(
      &idle->state, UNPARK_ONE + (is_searching ? 1 : 0),
      memory_order_seq_cst);
  idle->sleepers[idle->num_sleepers++] = index;
  idle->is_sleeping[index] = true;
  treadle__os_mutex_unlock(&idle->mu);
  return is_searching && searching(prev) == 1;
}

bool treadle__idle_transition_to_searching(treadle__idle_t *idle) {
  /* seq_cst: as every access to state; step 1 itself may be racy (two
   * workers may both pass the check), as in tokio. */
  uint64_t s = atomic_load_explicit(&idle->state, memory_order_seq_cst);
  if (2 * searching(s) >= idle->num_workers)
    return false;
  atomic_fetch_add_explicit(&idle->state, 1, memory_order_seq_cst);
  return true;
}

bool treadle__idle_transition_from_searching(treadle__idle_t *idle) {
  /* seq_cst: a last searcher leaving must be seen by notifiers (step 2). */
  uint64_t prev =
      atomic_fetch_sub_explicit(&idle->state, 1, memory_order_seq_cst);
  return searching(prev) == 1;
}

bool treadle__idle_unpark_worker_by_id(treadle__idle_t *idle, unsigned index) {
  treadle__os_mutex_lock(&idle->mu);
  if (!idle->is_sleeping[index]) {
    treadle__os_mutex_unlock(&idle->mu);
    return false;
  }
  for (unsigned i = 0; i < idle->num_sleepers; i++) {
    if (idle->sleepers[i] == index) {
      idle->sleepers[i] = idle->sleepers[--idle->num_sleepers];
      break;
    }
  }
  idle->is_sleeping[index] = false;
  /* seq_cst: counted unparked (not searching) before it runs. */
  atomic_fetch_add_explicit(&idle->state, UNPARK_ONE, memory_order_seq_cst);
  treadle__os_mutex_unlock(&idle->mu);
  return true;
}

bool treadle__idle_is_parked(treadle__idle_t *idle, unsigned index) {
  treadle__os_mutex_lock(&idle->mu);
  bool parked = idle->is_sleeping[index];
  treadle__os_mutex_unlock(&idle->mu);
  return parked;
}

bool treadle__idle_all_parked(treadle__idle_t *idle) {
  /* seq_cst: as should_wake; a worker notified before is counted. */
  return unparked(atomic_load_explicit(&idle->state, memory_order_seq_cst)) ==
         0;
}

unsigned treadle__idle_num_searching(treadle__idle_t *idle) {
  /* Relaxed: a snapshot for dumps. */
  return searching(atomic_load_explicit(&idle->state, memory_order_relaxed));
}
