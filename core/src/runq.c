/* A worker's local run queue: a fixed ring of TREADLE__LOCAL_QUEUE_CAPACITY
 * task pointers with one producer (its worker) and many stealers (tokio
 * scheduler/multi_thread/queue.rs).
 *
 * Indices are 32-bit counters that wrap; a slot is index & MASK. `head`
 * packs two of them into one 64-bit word: `steal` (low) and `real` (high).
 * Tasks live in [real, tail); [steal, real) is a batch a thief is copying
 * out right now. steal == real when no theft is in progress.
 *
 * 1. push (owner): if tail - steal < capacity, write slot[tail] and publish
 *    tail + 1 with a release store (thieves acquire tail, so they see the
 *    slot and the task written before it). If full and nobody steals, move
 *    half of the queue plus the task to the inject queue in one batch, by
 *    CAS-ing head forward (claiming those slots as a thief would). If full
 *    while a theft is in progress, push the task alone to the inject queue.
 * 2. pop (owner): CAS real forward by one (acq_rel); if no theft is in
 *    progress, steal moves with it.
 * 3. steal_into (thief): read head and tail (acquire), claim half of
 *    [real, tail) by CAS-ing real forward (acq_rel) while steal stays, copy
 *    the slots into its own queue, then CAS steal up to real to say the
 *    slots may be reused. A second thief that sees steal != real backs off.
 *    The owner never writes a slot in [steal, steal + capacity) beyond
 *    tail, so slots being copied are never overwritten; it learns the copy
 *    is done from the final CAS, which it acquires through head.
 * 4. 32-bit counters make an ABA on head need 2^32 operations while a thief
 *    is preempted between its load and its CAS (tokio #5041 was 16-bit).
 *
 * Every counter is atomic; slots are plain pointers, ordered by the
 * release/acquire pairs above. */
#include "internal.h"

#define CAP TREADLE__LOCAL_QUEUE_CAPACITY
#define MASK (CAP - 1)

_Static_assert((CAP & MASK) == 0 && CAP >= 2, "capacity: a power of two");

static uint64_t pack(uint32_t steal, uint32_t real) {
  return (uint64_t)steal | ((uint64_t)real << 32);
}
static uint32_t steal_of(uint64_t h) { return (uint32_t)h; }
static uint32_t real_of(uint64_t h) { return (uint32_t)(h >> 32); }

void treadle__runq_init(treadle__runq_t *q) {
  atomic_init(&q->head, 0);
  atomic_init(&q->tail, 0);
}

size_t treadle__runq_len(treadle__runq_t *q) {
  /* Relaxed: a snapshot for metrics and heuristics only. */
  uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
  uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
  return (uint32_t)(t - real_of(h));
}

bool treadle__runq_has_stealable(treadle__runq_t *q) {
  /* Acquire: pairs with the owner's tail release, as a thief would. */
  uint64_t h = atomic_load_explicit(&q->head, memory_order_acquire);
  uint32_t t = atomic_load_explicit(&q->tail, memory_order_acquire);
  return t != real_of(h);
}

/* Step 1, full queue: moves half the queue and `t` to the inject queue.
 * False if a thief or the owner's own state changed head meanwhile. */
static bool push_overflow(treadle__runq_t *q, treadle__task_t *t,
                          uint32_t real, uint32_t tail,
                          treadle__inject_t *inject) {
  const uint32_t n = CAP / 2;
  TREADLE_ASSERT(tail - real == CAP);
  uint64_t prev = pack(real, real);
  /* release: the slots we are about to read stay ours; nobody else may
   * touch them once head moves past them. acquire on failure is not needed:
   * the caller reloads head with acquire. */
  if (!atomic_compare_exchange_strong_explicit(
          &q->head, &prev, pack(real + n, real + n), memory_order_release,
          memory_order_relaxed))
    return false;
  /* Link the claimed tasks and `t` into one list and push it in one go. */
  treadle__task_t *first = q->slots[real & MASK];
  treadle__task_t *last = first;
  for (uint32_t i = 1; i < n; i++) {
    treadle__task_t *next = q->slots[(real + i) & MASK];
    last->next = next;
    last = next;
  }
  last->next = t;
  t->next = NULL;
  if (!treadle__inject_push_batch(inject, first, t, n + 1)) {
    /* Shut down: nobody will run them; drop the queue's references. */
    while (first != NULL) {
      treadle__task_t *next = first->next;
      treadle__task_unref(first);
      first = next;
    }
  }
  return true;
}

bool treadle__runq_push(treadle__runq_t *q, treadle__task_t *t,
                        treadle__inject_t *inject) {
  for (;;) {
    /* acquire: a thief's final CAS (its copy is done) happens-before we
     * reuse the slots it copied. */
    uint64_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint32_t steal = steal_of(h), real = real_of(h);
    /* Only the owner writes tail: a relaxed load reads its own store. */
    uint32_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    if ((uint32_t)(tail - steal) < CAP) {
      q->slots[tail & MASK] = t;
      /* release: publishes the slot (and the task) to thieves. */
      atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
      return false;
    }
    if (steal != real) {
      /* A thief is copying: it will free half the queue; don't wait. */
      if (!treadle__inject_push(inject, t))
        treadle__task_unref(t); /* shut down */
      return true;
    }
    if (push_overflow(q, t, real, tail, inject))
      return true;
  }
}

treadle__task_t *treadle__runq_pop(treadle__runq_t *q) {
  /* acquire: the freshest head, as thieves leave it; the CAS below
   * re-validates it. The slot itself was written by this thread. */
  uint64_t h = atomic_load_explicit(&q->head, memory_order_acquire);
  for (;;) {
    uint32_t steal = steal_of(h), real = real_of(h);
    uint32_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    if (real == tail)
      return NULL;
    uint64_t next = steal == real ? pack(real + 1, real + 1)
                                  : pack(steal, real + 1);
    /* acq_rel: orders our slot read after claiming it against thieves'
     * claims on the same head word. */
    if (atomic_compare_exchange_weak_explicit(&q->head, &h, next,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
      return q->slots[real & MASK];
  }
}

/* Step 3: claims and copies half of `src` into `dst` starting at
 * dst_tail; returns how many. */
static uint32_t steal_batch(treadle__runq_t *src, treadle__runq_t *dst,
                            uint32_t dst_tail) {
  /* acquire: pairs with other thieves' and the owner's CAS on head. */
  uint64_t prev = atomic_load_explicit(&src->head, memory_order_acquire);
  uint64_t next;
  uint32_t n, first;
  for (;;) {
    uint32_t steal = steal_of(prev), real = real_of(prev);
    if (steal != real)
      return 0; /* another thief is at work */
    /* acquire: pairs with the owner's tail release: slots are visible. */
    uint32_t tail = atomic_load_explicit(&src->tail, memory_order_acquire);
    n = (uint32_t)(tail - real);
    n -= n / 2; /* half, rounded up */
    if (n == 0)
      return 0;
    if (n > CAP / 2)
      n = CAP / 2; /* a stale tail can look larger than the queue */
    first = real;
    next = pack(steal, real + n);
    /* acq_rel: claim [real, real + n) before reading those slots. */
    if (atomic_compare_exchange_weak_explicit(&src->head, &prev, next,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
      break;
  }
  for (uint32_t i = 0; i < n; i++)
    dst->slots[(dst_tail + i) & MASK] = src->slots[(first + i) & MASK];
  /* Tell the owner the slots may be reused: steal catches up with real.
   * The owner may have popped meanwhile (real moved), never steal. */
  prev = next;
  for (;;) {
    uint32_t real = real_of(prev);
    /* acq_rel: release our slot reads to the owner, who acquires head
     * before overwriting them (step 1). */
    if (atomic_compare_exchange_weak_explicit(&src->head, &prev,
                                              pack(real, real),
                                              memory_order_acq_rel,
                                              memory_order_acquire))
      return n;
    TREADLE_ASSERT(steal_of(prev) != real_of(prev));
  }
}

treadle__task_t *treadle__runq_steal_into(treadle__runq_t *src,
                                          treadle__runq_t *dst,
                                          uint32_t *stolen) {
  uint32_t dst_tail = atomic_load_explicit(&dst->tail, memory_order_relaxed);
  /* acquire: as in push (we are dst's owner). */
  uint64_t dh = atomic_load_explicit(&dst->head, memory_order_acquire);
  if ((uint32_t)(dst_tail - steal_of(dh)) > CAP / 2)
    return NULL; /* no room for half a queue */
  uint32_t n = steal_batch(src, dst, dst_tail);
  *stolen = n;
  if (n == 0)
    return NULL;
  /* The last task copied is returned to run now; the rest are published. */
  n--;
  treadle__task_t *t = dst->slots[(dst_tail + n) & MASK];
  if (n > 0)
    /* release: publishes the copied slots to dst's thieves. */
    atomic_store_explicit(&dst->tail, dst_tail + n, memory_order_release);
  return t;
}
