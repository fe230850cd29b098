// Model of the task state word: core/src/task.c (unref 124-131, unref_n
// 133-140, drop_output 144-150, complete 158-180, cancel_and_complete
// 182-187, treadle__task_run 201-267, task_wake 296-324,
// treadle__task_join_register 408-439, take_output 441-451,
// treadle_join_try 479-490, treadle_join_abort 523-545, treadle_join_detach
// 560-588) with the flag layout of core/src/internal.h lines 85-92. Keep the
// transcription in step with those lines. The scheduler is a locked FIFO
// (what schedule() does with the task is scheduler_mt.c's business; only
// the reference it carries matters here) and release() always gives back
// the owned list's reference, as mt_release does for a task that never
// waited or that it unlinks.
//
// Scenario: one task with a join handle and a waker clone held by another
// thread. The task's poll is READY once an event flag is set, else
// PENDING. Thread 0, a worker, runs the queue up to three times; thread 1
// sets the event and wakes the task by value; thread 2, the join handle,
// registers a join waker, aborts, tries to read the output and detaches.
// Whatever is still queued runs in after(). Checked: the task's state is
// polled by one thread at a time and dropped exactly once; it completes
// exactly once, with its output or ECANCELED, and the join handle reads
// that output intact; a join waker registered before completion is woken;
// the task, its output and the join waker are each freed exactly once
// (relacy reports leaks, double frees and use after free) (TESTING.md S9).
//
// MUTANT=1 weakens complete()'s RUNNING -> COMPLETE add (task.c line 161)
// from acq_rel to relaxed: a join handle that sees COMPLETE may then read
// the output before the poll's write of it is visible. relacy reports a
// data race.
#include "model.hpp"

#include <cstdint>

namespace {

constexpr uint64_t RUNNING = 1 << 0, COMPLETE = 1 << 1, NOTIFIED = 1 << 2,
                   JOIN_INTEREST = 1 << 3, JOIN_WAKER = 1 << 4,
                   CANCELLED = 1 << 5, REF_ONE = 1 << 6, REF_SHIFT = 6;
constexpr int ECANCELED_ = 125, EAGAIN_ = 11;

uint64_t refcount(uint64_t s) { return s >> REF_SHIFT; }

// The join waker: a refcounted waker that counts its wakes.
struct jwaker_t {
  rl::atomic<int> refs;
  rl::atomic<int> wakes;
};

struct output_t {
  rl::var<int> value;
};

struct task_t {
  rl::atomic<uint64_t> state;
  rl::var<jwaker_t *> join_waker;
  rl::var<output_t *> out_value;
  rl::var<int> out_err;
  rl::var<int> output_taken;
  rl::var<int> alive; // the caller's state: 1 until dropped
};

struct task_model : rl::test_suite<task_model, 3> {
  task_t *t;
  jwaker_t *jw;
  rl::atomic<int> event;
  rl::mutex queue_mu;
  task_t *queue[8];
  int queue_len, queue_head;
  // Counted in plain variables, read in after().
  int polls, drops, completions, joined_cancelled, joined_value;
  bool registered, saw_complete;
  int jw_wakes;

  // ---------------------------------------------------------- scheduler
  void schedule(task_t *task) {
    queue_mu.lock($);
    queue[queue_len++] = task;
    queue_mu.unlock($);
  }
  task_t *next_task() {
    queue_mu.lock($);
    task_t *task = queue_head < queue_len ? queue[queue_head++] : nullptr;
    queue_mu.unlock($);
    return task;
  }

  // -------------------------------------------------------- join waker
  jwaker_t *jw_clone(jwaker_t *w) {
    w->refs($).fetch_add(1, rl::mo_relaxed);
    return w;
  }
  void jw_drop(jwaker_t *w) {
    if (w != nullptr && w->refs($).fetch_sub(1, rl::mo_acq_rel) == 1)
      delete w;
  }
  void jw_wake_by_ref(jwaker_t *w) {
    w->wakes($).fetch_add(1, rl::mo_relaxed); // touches w: alive?
    jw_wakes++;
  }

  // ------------------------------------------------------------ task.c
  bool cas(task_t *task, uint64_t &cur, uint64_t next, rl::memory_order mo) {
    return task->state($).compare_exchange_weak(cur, next, mo, rl::mo_relaxed);
  }

  void dealloc(task_t *task) {
    jwaker_t *w = task->join_waker($);
    if (w != nullptr)
      jw_drop(w);
    delete task;
  }

  void unref_n(task_t *task, uint64_t n) {
    uint64_t prev = task->state($).fetch_sub(n * REF_ONE, rl::mo_acq_rel);
    RL_ASSERT(refcount(prev) >= n);
    if (refcount(prev) == n)
      dealloc(task);
  }
  void unref(task_t *task) { unref_n(task, 1); }

  void drop_output(task_t *task) {
    output_t *o = task->out_value($);
    if (o != nullptr)
      delete o;
    task->out_value($) = nullptr;
  }

  void drop_state(task_t *task) {
    RL_ASSERT(task->alive($) == 1);
    task->alive($) = 0;
    drops++;
  }

  void complete(task_t *task) {
    completions++;
    uint64_t prev = task->state($).fetch_add(
        COMPLETE - RUNNING, MO(rl::mo_acq_rel, rl::mo_relaxed));
    RL_ASSERT((prev & (RUNNING | COMPLETE)) == RUNNING);
    if (!(prev & JOIN_INTEREST)) {
      drop_output(task);
    } else if (prev & JOIN_WAKER) {
      jw_wake_by_ref(task->join_waker($));
      uint64_t now = task->state($).fetch_sub(JOIN_WAKER, rl::mo_acq_rel);
      if (!(now & JOIN_INTEREST)) {
        jw_drop(task->join_waker($));
        task->join_waker($) = nullptr;
      }
    }
    int released = 1; // release(): the owned list's reference
    unref_n(task, 1 + (uint64_t)released);
  }

  void cancel_and_complete(task_t *task) {
    drop_state(task);
    task->out_err($) = ECANCELED_;
    task->out_value($) = nullptr;
    complete(task);
  }

  // The task's poll function: READY once the event is set.
  bool poll(task_t *task) {
    RL_ASSERT(task->alive($) == 1);
    polls++;
    if (event($).load(rl::mo_acquire) == 0)
      return false;
    output_t *o = new output_t;
    o->value($) = 42;
    task->out_err($) = 0;
    task->out_value($) = o;
    return true;
  }

  void task_run(task_t *task) {
    uint64_t cur = task->state($).load(rl::mo_relaxed);
    uint64_t next;
    do {
      if (cur & (RUNNING | COMPLETE)) {
        unref(task);
        return;
      }
      RL_ASSERT(cur & NOTIFIED);
      next = (cur | RUNNING) & ~NOTIFIED;
    } while (!cas(task, cur, next, rl::mo_acquire));
    if (next & CANCELLED) {
      cancel_and_complete(task);
      return;
    }
    if (poll(task)) {
      drop_state(task);
      complete(task);
      return;
    }
    task->out_value($) = nullptr;
    task->out_err($) = 0;
    cur = task->state($).load(rl::mo_relaxed);
    do {
      if (cur & CANCELLED) {
        cancel_and_complete(task);
        return;
      }
      next = cur & ~RUNNING;
      if (!(next & NOTIFIED))
        next -= REF_ONE;
    } while (!cas(task, cur, next, rl::mo_acq_rel));
    if (next & NOTIFIED)
      schedule(task);
    else if (refcount(next) == 0)
      dealloc(task);
  }

  void task_wake(task_t *task) {
    uint64_t cur = task->state($).load(rl::mo_relaxed);
    uint64_t next;
    enum { NOTHING, SUBMIT, DEALLOC } action;
    do {
      if (cur & RUNNING) {
        next = (cur | NOTIFIED) - REF_ONE;
        action = NOTHING;
      } else if (cur & (COMPLETE | NOTIFIED)) {
        next = cur - REF_ONE;
        action = refcount(next) == 0 ? DEALLOC : NOTHING;
      } else {
        next = (cur | NOTIFIED) + REF_ONE;
        action = SUBMIT;
      }
    } while (!cas(task, cur, next, rl::mo_acq_rel));
    if (action == SUBMIT) {
      schedule(task);
      unref(task);
    } else if (action == DEALLOC) {
      dealloc(task);
    }
  }

  bool join_register(task_t *task, jwaker_t *w) {
    uint64_t cur = task->state($).load(rl::mo_acquire);
    if (cur & COMPLETE)
      return false;
    if (cur & JOIN_WAKER) {
      if (task->join_waker($) == w)
        return true;
      do {
        if (cur & COMPLETE)
          return false;
      } while (!cas(task, cur, cur & ~JOIN_WAKER, rl::mo_acq_rel));
      jw_drop(task->join_waker($));
      task->join_waker($) = nullptr;
    }
    task->join_waker($) = jw_clone(w);
    cur = task->state($).load(rl::mo_relaxed);
    do {
      if (cur & COMPLETE) {
        jw_drop(task->join_waker($));
        task->join_waker($) = nullptr;
        (void)task->state($).load(rl::mo_acquire);
        return false;
      }
    } while (!cas(task, cur, cur | JOIN_WAKER, rl::mo_acq_rel));
    return true;
  }

  // take_output with a caller that reads the value and frees it.
  int take_output(task_t *task) {
    int status = task->out_err($);
    output_t *o = task->out_value($);
    if (o != nullptr) {
      RL_ASSERT(o->value($) == 42);
      delete o;
      joined_value++;
    } else {
      RL_ASSERT(status == ECANCELED_);
      joined_cancelled++;
    }
    task->out_value($) = nullptr;
    task->output_taken($) = 1;
    return status;
  }

  int join_try(task_t *task) {
    if (task->output_taken($))
      return -1;
    if (!(task->state($).load(rl::mo_acquire) & COMPLETE))
      return EAGAIN_;
    return take_output(task);
  }

  void join_abort(task_t *task) {
    uint64_t cur = task->state($).load(rl::mo_relaxed);
    uint64_t next;
    bool submit;
    do {
      if (cur & (COMPLETE | CANCELLED))
        return;
      next = cur | CANCELLED;
      submit = false;
      if (cur & RUNNING) {
        next |= NOTIFIED;
      } else if (!(cur & NOTIFIED)) {
        next = (next | NOTIFIED) + REF_ONE;
        submit = true;
      }
    } while (!cas(task, cur, next, rl::mo_acq_rel));
    if (submit)
      schedule(task);
  }

  void join_detach(task_t *task) {
    uint64_t cur = task->state($).load(rl::mo_relaxed);
    uint64_t next;
    do {
      next = cur & ~JOIN_INTEREST;
      if (!(cur & COMPLETE))
        next &= ~JOIN_WAKER;
    } while (!cas(task, cur, next, rl::mo_acq_rel));
    bool own_waker;
    if (cur & COMPLETE) {
      if (!task->output_taken($))
        drop_output(task);
      own_waker = !(cur & JOIN_WAKER);
    } else {
      own_waker = (cur & JOIN_WAKER) != 0;
    }
    if (own_waker && task->join_waker($) != nullptr) {
      jw_drop(task->join_waker($));
      task->join_waker($) = nullptr;
    }
    unref(task);
  }

  // ----------------------------------------------------------- scenario
  void before() {
    t = new task_t;
    // Spawned: owned list + run queue + join handle, + thread 1's waker.
    t->state($).store(NOTIFIED | JOIN_INTEREST | 4 * REF_ONE, rl::mo_relaxed);
    t->join_waker($) = nullptr;
    t->out_value($) = nullptr;
    t->out_err($) = 0;
    t->output_taken($) = 0;
    t->alive($) = 1;
    jw = new jwaker_t;
    jw->refs($).store(1, rl::mo_relaxed);
    jw->wakes($).store(0, rl::mo_relaxed);
    jw_wakes = 0;
    event($).store(0, rl::mo_relaxed);
    queue_len = queue_head = 0;
    queue[queue_len++] = t;
    polls = drops = completions = joined_cancelled = joined_value = 0;
    registered = saw_complete = false;
  }

  void thread(unsigned index) {
    if (index == 0) {
      for (int i = 0; i < 3; i++) {
        task_t *task = next_task();
        if (task == nullptr)
          break;
        task_run(task);
      }
    } else if (index == 1) {
      event($).store(1, rl::mo_release);
      task_wake(t);
    } else {
      task_t *task = t;
      jwaker_t *mine = jw;
      registered = join_register(task, mine);
      join_abort(task);
      int err = join_try(task);
      saw_complete = err != EAGAIN_;
      join_detach(task);
      jw_drop(mine);
    }
  }

  void after() {
    while (task_t *task = next_task())
      task_run(task);
    RL_ASSERT(drops == 1);
    RL_ASSERT(completions == 1);
    RL_ASSERT(polls <= 2);
    RL_ASSERT(joined_value + joined_cancelled == (saw_complete ? 1 : 0));
    // A join waker set before completion was woken by it.
    if (registered && saw_complete)
      RL_ASSERT(jw_wakes == 1);
  }
};

} // namespace

int main(int argc, char **argv) {
  return model_main<task_model>("task_state", argc, argv,
                                rl::fair_context_bound_scheduler_type, 2);
}
