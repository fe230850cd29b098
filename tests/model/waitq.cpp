// Model of the wait queue and its waiters, as the async Mutex (a semaphore
// of one permit) and Notify use them: core/src/waitq.h
// (treadle__waiter_finish lines 101-106), core/src/waitq.c
// (waitq_ref/unref 36-48, waiter_enqueue 61-70, waiter_rewake 72-80,
// treadle_waiter_drop 82-125), core/src/semaphore.c (add_permits_locked
// 49-92, acquire_finish 111-123, acquire_idle 126-187,
// treadle__sem_acquire_poll 189-217, treadle__sem_release 219-249: the
// lock-free release while SEM_QUEUED is clear) and
// core/src/notify.c (notify_locked 54-64, treadle_notify_one 70-78,
// treadle_notify_waiters 80-105, treadle_notify_poll 107-150), with the
// list of core/src/queue.h. Keep the
// transcription in step with those lines. The coop budget is left out
// (treadle_cx_poll_proceed always says go).
//
// Each waiter is a heap object that its owner frees as soon as it is done
// with it; each thread drops its reference to the queue's object, the last
// frees it. Two scenarios, each run under every interleaving:
// 1. mutex_two_waiters: a Mutex held by thread 0, which writes the data it
//    guards and unlocks. Threads 1 and 2 each poll a lock, poll again if it
//    was PENDING, and drop the waiter if it is still not theirs; whoever
//    gets the lock writes the data and unlocks. Checked: at most one holder
//    at a time, each seeing the previous holder's writes (relacy reports a
//    race otherwise); the permit comes back whatever the interleaving (one
//    permit, no waiter, at the end).
// 2. notify_one_two_waiters: thread 0 writes a message and calls
//    notify_one; threads 1 and 2 each poll, poll again, and drop the waiter
//    if still not notified (one dropped once notified passes the
//    notification on, notify.c step 4). Checked: the one notification ends
//    up consumed by exactly one poll or stored, never lost or doubled; a
//    notified poll sees the message.
// 3. semaphore_partial: no permits; thread 0 releases one, then another;
//    thread 1 asks for two (served one at a time), thread 2 for one; each
//    polls twice and drops its waiter if still not served. Checked: both
//    permits are back at the end (none lost in a partial hand-out or a
//    drop, none made up).
// 4. notify_waiters_rounds: thread 0 writes a message and calls
//    notify_waiters, finishing one waiter per lock hold (the C does 32),
//    while threads 1 and 2 poll, poll again and drop, possibly while on the
//    notifier's list between rounds. Checked: a notified poll sees the
//    message; nothing is stored, no waiter is left queued.
// All: no waiter is touched after its owner saw it done and freed it; the
// object and every waker are freed exactly once.
//
// MUTANT=1 weakens treadle__waiter_finish's store (waitq.h line 105) from
// release to relaxed: an owner that sees DONE without taking q.mu goes on
// without seeing what the releaser or notifier did before. relacy reports
// a data race (scenarios 1 and 2).
#include "model.hpp"

#include <cstdint>

namespace {

constexpr uint64_t W_IDLE = 0, W_WAITING = 1, W_DONE = 2, W_DONE_ALL = 3,
                   W_MASK = 7, W_SHIFT = 3;
constexpr size_t SHIFT = 2; // permits << 2 | SEM_QUEUED | SEM_CLOSED
constexpr size_t QUEUED = 2; // (never closed here)

struct list_t {
  rl::var<list_t *> next, prev;
};
void list_init(list_t *l) {
  l->next($) = l;
  l->prev($) = l;
}
bool list_empty(list_t *l) { return l->next($) == l; }
void list_push_back(list_t *l, list_t *n) {
  n->next($) = l;
  n->prev($) = l->prev($);
  l->prev($)->next($) = n;
  l->prev($) = n;
}
void list_unlink(list_t *n) {
  n->prev($)->next($) = n->next($);
  n->next($)->prev($) = n->prev($);
  n->prev($) = n;
  n->next($) = n;
}
list_t *list_pop_front(list_t *l) {
  list_t *n = l->next($);
  if (n == l)
    return nullptr;
  list_unlink(n);
  return n;
}
void list_move_all(list_t *from, list_t *to) {
  if (list_empty(from))
    return;
  from->next($)->prev($) = to->prev($);
  to->prev($)->next($) = from->next($);
  from->prev($)->next($) = to;
  to->prev($) = from->prev($);
  list_init(from);
}

// A task's waker: refcounted, counts wakes.
struct waker_t {
  rl::atomic<int> refs;
};

enum kind_t { NOTIFY, SEMAPHORE };

// treadle__waitq_t and the object it starts: a semaphore's permits or a
// Notify's stored permit, by kind.
struct waitq_t {
  rl::mutex mu;
  list_t waiters;
  rl::atomic<size_t> refs;
  kind_t kind;
  rl::atomic<size_t> permits; // semaphore.c
  rl::var<bool> permit;       // notify.c; guarded by mu
};

struct waiter_t {
  list_t node; // first: the list holds &node
  rl::var<waker_t *> waker;
  rl::var<waitq_t *> q;
  rl::var<uint64_t> want;
  rl::atomic<uint64_t> state;
};

struct wakelist_t {
  waker_t *w[4];
  unsigned n = 0;
};

// The transcribed code, shared by the scenarios.
struct waitq_core {
  waitq_t *sem;
  waker_t *wakers[3];
  rl::var<int> data; // what the Mutex guards, or the notifier's message
  int holders;       // plain: threads in the critical section now
  int wakes;
  int notified;      // plain: Notify polls that returned READY

  void setup(kind_t kind) {
    sem = new waitq_t;
    list_init(&sem->waiters);
    sem->refs($).store(3, rl::mo_relaxed); // one per thread
    sem->kind = kind;
    sem->permits($).store(0, rl::mo_relaxed); // thread 0 holds the lock
    sem->permit($) = false;
    for (auto &w : wakers) {
      w = new waker_t;
      w->refs($).store(1, rl::mo_relaxed); // the task's own reference
    }
    data($) = 0;
    holders = 0;
    wakes = 0;
    notified = 0;
  }

  waiter_t *waiter_new() {
    waiter_t *w = new waiter_t;
    list_init(&w->node);
    w->waker($) = nullptr;
    w->q($) = nullptr;
    w->want($) = 0;
    w->state($).store(W_IDLE, rl::mo_relaxed);
    return w;
  }

  // ----------------------------------------------------------- wakers
  waker_t *waker_clone(waker_t *w) {
    w->refs($).fetch_add(1, rl::mo_relaxed);
    return w;
  }
  void waker_drop(waker_t *w) {
    if (w != nullptr && w->refs($).fetch_sub(1, rl::mo_acq_rel) == 1)
      delete w;
  }
  void wake(waker_t *w) { // by value: consumes the reference
    wakes++;
    waker_drop(w);
  }
  void wakelist_wake(wakelist_t &wl) {
    for (unsigned i = 0; i < wl.n; i++)
      wake(wl.w[i]);
    wl.n = 0;
  }

  // ----------------------------------------------------------- waitq.c
  void waitq_ref(waitq_t *q) { q->refs($).fetch_add(1, rl::mo_relaxed); }
  void waitq_unref(waitq_t *q) {
    if (q->refs($).fetch_sub(1, rl::mo_acq_rel) != 1)
      return;
    RL_ASSERT(list_empty(&q->waiters));
    delete q;
  }

  void waiter_finish(waiter_t *w, uint64_t state) {
    w->state($).store(state, MO(rl::mo_release, rl::mo_relaxed));
  }

  void waiter_enqueue(waitq_t *q, waiter_t *w, waker_t *mine, uint64_t state) {
    w->q($) = q;
    w->waker($) = waker_clone(mine);
    list_push_back(&q->waiters, &w->node);
    waitq_ref(q);
    w->state($).store(state, rl::mo_relaxed);
  }

  waker_t *waiter_rewake(waiter_t *w, waker_t *mine) {
    if (w->waker($) == mine)
      return nullptr;
    waker_t *old = w->waker($);
    w->waker($) = waker_clone(mine);
    return old;
  }

  void waiter_drop(waiter_t *w) {
    uint64_t st = w->state($).load(rl::mo_acquire);
    if ((st & W_MASK) == W_IDLE)
      return;
    waitq_t *q = w->q($);
    waker_t *own = nullptr;
    wakelist_t wl;
    uint64_t give_back = 0;
    q->mu.lock($);
    st = w->state($).load(rl::mo_relaxed);
    switch (st & W_MASK) {
    case W_WAITING:
      list_unlink(&w->node);
      own = w->waker($);
      w->waker($) = nullptr;
      if (q->kind == SEMAPHORE)
        give_back = w->want($) - (st >> W_SHIFT);
      break;
    case W_DONE:
      if (q->kind == SEMAPHORE)
        give_back = w->want($);
      else
        notify_locked(q, wl);
      break;
    default:
      break;
    }
    w->q($) = nullptr;
    w->state($).store(W_IDLE, rl::mo_relaxed);
    if (q->kind == SEMAPHORE) // also to clear QUEUED once the queue is empty
      add_permits_locked(q, give_back);
    else
      q->mu.unlock($);
    wakelist_wake(wl);
    waker_drop(own);
    waitq_unref(q);
  }

  // ---------------------------------------------------------- notify.c
  void notify_locked(waitq_t *n, wakelist_t &wl) {
    list_t *node = n->waiters.next($);
    if (node == &n->waiters) {
      n->permit($) = true;
      return;
    }
    list_unlink(node);
    waiter_t *w = (waiter_t *)node;
    wl.w[wl.n++] = w->waker($);
    w->waker($) = nullptr;
    waiter_finish(w, W_DONE);
  }

  // treadle_notify_waiters, finishing `batch` waiters per lock hold (the C
  // does TREADLE__WAKE_BATCH, 32; fewer here so that two waiters already
  // take two rounds, with the lock let go between them).
  void notify_waiters(waitq_t *n, unsigned batch) {
    list_t list; // step 3: guarded by q.mu like the queue
    list_init(&list);
    n->mu.lock($);
    list_move_all(&n->waiters, &list);
    for (;;) {
      wakelist_t wl;
      list_t *node;
      while (wl.n < batch && (node = list_pop_front(&list)) != nullptr) {
        waiter_t *w = (waiter_t *)node;
        wl.w[wl.n++] = w->waker($);
        w->waker($) = nullptr;
        waiter_finish(w, W_DONE_ALL);
      }
      bool more = !list_empty(&list);
      n->mu.unlock($);
      wakelist_wake(wl);
      if (!more)
        return;
      n->mu.lock($);
    }
  }

  void notify_one(waitq_t *n) {
    wakelist_t wl;
    n->mu.lock($);
    notify_locked(n, wl);
    n->mu.unlock($);
    wakelist_wake(wl);
  }

  // True: READY.
  bool notify_poll(waitq_t *n, waiter_t *w, waker_t *mine) {
    uint64_t st = w->state($).load(rl::mo_acquire);
    if ((st & W_MASK) == W_IDLE) {
      n->mu.lock($);
      if (n->permit($)) {
        n->permit($) = false;
        n->mu.unlock($);
        return true;
      }
      waiter_enqueue(n, w, mine, W_WAITING);
      n->mu.unlock($);
      return false;
    }
    if ((st & W_MASK) == W_WAITING) {
      waitq_t *q = w->q($);
      q->mu.lock($);
      st = w->state($).load(rl::mo_relaxed);
      if ((st & W_MASK) == W_WAITING) {
        waker_t *old = waiter_rewake(w, mine);
        q->mu.unlock($);
        waker_drop(old);
        return false;
      }
      q->mu.unlock($);
    }
    waitq_t *q = w->q($);
    w->q($) = nullptr;
    w->state($).store(W_IDLE, rl::mo_relaxed);
    waitq_unref(q);
    return true;
  }

  // ------------------------------------------------------- semaphore.c
  void add_permits_locked(waitq_t *s, uint64_t n) {
    wakelist_t wl;
    for (;;) {
      list_t *node;
      while (n > 0 && wl.n < 4 && (node = s->waiters.next($)) != &s->waiters) {
        waiter_t *w = (waiter_t *)node;
        uint64_t st = w->state($).load(rl::mo_relaxed);
        uint64_t needed = st >> W_SHIFT;
        if (n < needed) {
          w->state($).store((needed - n) << W_SHIFT | W_WAITING,
                            rl::mo_relaxed);
          n = 0;
          break;
        }
        n -= needed;
        list_unlink(node);
        wl.w[wl.n++] = w->waker($);
        w->waker($) = nullptr;
        waiter_finish(w, W_DONE);
      }
      if (list_empty(&s->waiters)) {
        size_t queued = s->permits($).load(rl::mo_relaxed) & QUEUED;
        if (n > 0 || queued != 0)
          s->permits($).fetch_add(((size_t)n << SHIFT) - queued,
                                  rl::mo_release);
        n = 0;
      }
      s->mu.unlock($);
      wakelist_wake(wl);
      if (n == 0)
        return;
      s->mu.lock($);
    }
  }

  bool acquire_finish(waiter_t *w, uint64_t st) {
    RL_ASSERT((st & W_MASK) == W_DONE);
    waitq_t *q = w->q($);
    w->q($) = nullptr;
    w->state($).store(W_IDLE, rl::mo_relaxed);
    waitq_unref(q);
    return true;
  }

  bool acquire_idle(waitq_t *s, waiter_t *w, waker_t *mine, size_t n) {
    size_t need = n << SHIFT;
    size_t cur = s->permits($).load(rl::mo_relaxed);
    while (cur >= need) {
      if (s->permits($).compare_exchange_weak(cur, cur - need, rl::mo_acquire,
                                              rl::mo_relaxed))
        return true;
    }
    s->mu.lock($);
    cur = s->permits($).load(rl::mo_relaxed);
    for (;;) {
      size_t avail = cur & ~QUEUED;
      size_t take = avail >= need ? need : avail;
      if (s->permits($).compare_exchange_weak(
              cur, (cur - take) | (take < need ? QUEUED : 0), rl::mo_acquire,
              rl::mo_relaxed))
        break;
    }
    size_t avail = cur & ~QUEUED;
    size_t taken = (avail >= need ? need : avail) >> SHIFT;
    if (taken == n) {
      s->mu.unlock($);
      return true;
    }
    w->want($) = n;
    waiter_enqueue(s, w, mine, (uint64_t)(n - taken) << W_SHIFT | W_WAITING);
    s->mu.unlock($);
    return false;
  }

  // True: READY (the permits are ours).
  bool acquire_poll(waitq_t *s, waiter_t *w, waker_t *mine, size_t n) {
    uint64_t st = w->state($).load(rl::mo_acquire);
    switch (st & W_MASK) {
    case W_IDLE:
      return acquire_idle(s, w, mine, n);
    case W_WAITING: {
      waitq_t *q = w->q($);
      q->mu.lock($);
      st = w->state($).load(rl::mo_relaxed);
      if ((st & W_MASK) == W_WAITING) {
        waker_t *old = waiter_rewake(w, mine);
        q->mu.unlock($);
        waker_drop(old);
        return false;
      }
      q->mu.unlock($);
      break;
    }
    default:
      break;
    }
    return acquire_finish(w, st);
  }

  void release(waitq_t *s, size_t n) {
    size_t cur = s->permits($).load(rl::mo_relaxed);
    while (!(cur & QUEUED)) { // nobody queued: no lock
      if (s->permits($).compare_exchange_weak(cur, cur + (n << SHIFT),
                                              rl::mo_release, rl::mo_relaxed))
        return;
    }
    s->mu.lock($);
    add_permits_locked(s, n);
  }

  void critical_section(unsigned index) {
    RL_ASSERT(++holders == 1);
    data($) = data($) + (int)index;
    --holders;
  }
};

// Scenario 1: a Mutex (one permit) held by thread 0; threads 1 and 2 each
// poll a lock, poll again, and drop the waiter if it is still not theirs.
struct mutex_two_waiters : waitq_core, rl::test_suite<mutex_two_waiters, 3> {
  void before() { setup(SEMAPHORE); }

  void thread(unsigned index) {
    waitq_t *s = sem;
    waker_t *mine = wakers[index];
    if (index == 0) {
      critical_section(index);
      release(s, 1);
    } else {
      waiter_t *w = waiter_new();
      bool got = acquire_poll(s, w, mine, 1) || acquire_poll(s, w, mine, 1);
      if (got) {
        critical_section(index);
        release(s, 1);
      } else {
        waiter_drop(w);
      }
      delete w;
    }
    waker_drop(mine);
    if (index != 0)
      waitq_unref(s); // thread 0's goes in after(), once checked
  }

  void after() {
    RL_ASSERT(list_empty(&sem->waiters));
    RL_ASSERT(sem->permits($).load(rl::mo_relaxed) == 1 << SHIFT);
    waitq_unref(sem); // the last reference: frees it
  }
};

// Scenario 3: a semaphore with no permits; thread 0 releases one permit
// twice; thread 1 asks for two (so it is given them one at a time, partly
// served in between), thread 2 for one. Each polls, polls again, and drops
// the waiter if still not served, handing back what it was partly given.
struct semaphore_partial : waitq_core, rl::test_suite<semaphore_partial, 3> {
  void before() { setup(SEMAPHORE); }

  void thread(unsigned index) {
    waitq_t *s = sem;
    waker_t *mine = wakers[index];
    if (index == 0) {
      release(s, 1);
      release(s, 1);
    } else {
      size_t want = index == 1 ? 2 : 1;
      waiter_t *w = waiter_new();
      if (acquire_poll(s, w, mine, want) || acquire_poll(s, w, mine, want))
        release(s, want);
      else
        waiter_drop(w);
      delete w;
    }
    waker_drop(mine);
    if (index != 0)
      waitq_unref(s);
  }

  void after() {
    // Every permit is back, none made up.
    RL_ASSERT(list_empty(&sem->waiters));
    RL_ASSERT(sem->permits($).load(rl::mo_relaxed) == 2 << SHIFT);
    waitq_unref(sem);
  }
};

// Scenario 4: notify_waiters, one waiter per round, while the waiters poll
// again or drop (possibly while on the notifier's list, between rounds).
struct notify_waiters_rounds : waitq_core,
                               rl::test_suite<notify_waiters_rounds, 3> {
  int done_all; // plain: polls READY through DONE_ALL

  void before() {
    setup(NOTIFY);
    done_all = 0;
  }

  void thread(unsigned index) {
    waitq_t *n = sem;
    waker_t *mine = wakers[index];
    if (index == 0) {
      data($) = 42;
      notify_waiters(n, 1);
    } else {
      waiter_t *w = waiter_new();
      if (notify_poll(n, w, mine) || notify_poll(n, w, mine)) {
        RL_ASSERT(data($) == 42);
        done_all++;
      } else {
        waiter_drop(w);
      }
      delete w;
    }
    waker_drop(mine);
    if (index != 0)
      waitq_unref(n);
  }

  void after() {
    // notify_waiters stores nothing, and leaves no waiter behind that it
    // took (any still queued came after it and dropped; none is left).
    RL_ASSERT(!sem->permit($));
    RL_ASSERT(list_empty(&sem->waiters));
    RL_ASSERT(done_all <= 2);
    waitq_unref(sem);
  }
};

// Scenario 2: Notify. Thread 0 writes a message and calls notify_one;
// threads 1 and 2 each poll, poll again, and drop the waiter if it was not
// notified (a waiter dropped once notified passes the notification on).
struct notify_one_two_waiters : waitq_core,
                                rl::test_suite<notify_one_two_waiters, 3> {
  void before() { setup(NOTIFY); }

  void thread(unsigned index) {
    waitq_t *n = sem;
    waker_t *mine = wakers[index];
    if (index == 0) {
      data($) = 42;
      notify_one(n);
    } else {
      waiter_t *w = waiter_new();
      if (notify_poll(n, w, mine) || notify_poll(n, w, mine)) {
        RL_ASSERT(data($) == 42); // what came before the notify is seen
        notified++;
      } else {
        waiter_drop(w);
      }
      delete w;
    }
    waker_drop(mine);
    if (index != 0)
      waitq_unref(n);
  }

  void after() {
    // The one notification is consumed once or kept, never lost or doubled.
    RL_ASSERT(notified + (sem->permit($) ? 1 : 0) == 1);
    RL_ASSERT(list_empty(&sem->waiters));
    waitq_unref(sem);
  }
};

} // namespace

int main(int argc, char **argv) {
  model_options o;
  if (!model_options_parse(o, argc, argv))
    return 2;
  return model_verdict(
      {model_run<mutex_two_waiters>("waitq", "mutex_two_waiters", o),
       model_run<notify_one_two_waiters>("waitq", "notify_one_two_waiters",
                                         o),
       model_run<semaphore_partial>("waitq", "semaphore_partial", o),
       model_run<notify_waiters_rounds>("waitq", "notify_waiters_rounds", o)});
}
