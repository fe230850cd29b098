// Model of the task state word: core/src/task.c (unref 124-131, unref_n
// 133-140, drop_output 144-150, complete 158-180, cancel_and_complete
// 182-187, treadle__task_run 201-267, treadle__task_shutdown 269-284,
// task_wake 296-324, task_wake_by_ref 326-347, treadle__task_join_register
// 408-439, take_output 441-451, treadle_join_try 479-490, treadle_join_abort
// 523-545, treadle_join_detach 560-588) with the flag layout of
// core/src/internal.h lines 85-92, and the owned list of
// core/src/scheduler_mt.c (mt_bind 145-162, mt_release 164-194,
// drain_shard 197-217; one shard). Keep the transcription in step with
// those lines. The run queue is a locked FIFO: what schedule() does with
// the task is scheduler_mt.c's business; only the reference it carries
// matters here.
//
// The task's poll is READY once an event flag is set, else PENDING; a
// worker (thread 0) runs whatever is queued, up to three times. Two
// scenarios, each run under every interleaving:
// 1. wake_abort_join: thread 1 sets the event and wakes the task by value;
//    thread 2, the join handle, registers a join waker, aborts, tries to
//    read the output and detaches. What is still queued runs in after().
// 2. shutdown: thread 1 sets the event, wakes the task by reference and
//    drops its waker; thread 2 shuts the runtime down as a worker does on
//    its way out (closes the shard, drains it: treadle__task_shutdown on
//    every task that waited), then reads the output and detaches. after()
//    drains the queue as mt_shutdown does, with treadle__task_shutdown.
// Checked: the task's state is polled by one thread at a time and dropped
// exactly once; it completes exactly once, with its output or ECANCELED,
// and the join handle reads that output intact; a join waker registered
// before completion is woken; the task, its output and the join waker are
// each freed exactly once (relacy reports leaks, double frees and use after
// free) (TESTING.md S9, D1).
//
// MUTANT=1 weakens complete()'s RUNNING -> COMPLETE add (task.c line 161)
// from acq_rel to relaxed: a join handle that sees COMPLETE may then read
// the output before the poll's write of it is visible. relacy reports a
// data race (scenario 1 runs first and catches it).
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
  rl::atomic<int> owned_state;
};

enum { UNBOUND = 0, BOUND = 1, UNLINKED = 2 };

// The transcribed code and the world it runs in, shared by the scenarios.
struct task_core {
  task_t *t;
  jwaker_t *jw;
  rl::atomic<int> event;
  rl::mutex queue_mu;
  task_t *queue[8];
  int queue_len, queue_head;
  rl::mutex shard_mu;           // the owned list's shard
  rl::var<bool> shard_closed;   // guarded by shard_mu
  rl::var<task_t *> shard_task; // the list (of one); guarded by shard_mu
  // Counted in plain variables, read in after().
  int polls, drops, completions, joined_cancelled, joined_value;
  bool registered, saw_complete;
  int jw_wakes;

  // Spawned: NOTIFIED, refs: owned list + run queue + join handle + one
  // waker clone for thread 1.
  void setup() {
    t = new task_t;
    t->state($).store(NOTIFIED | JOIN_INTEREST | 4 * REF_ONE, rl::mo_relaxed);
    t->join_waker($) = nullptr;
    t->out_value($) = nullptr;
    t->out_err($) = 0;
    t->output_taken($) = 0;
    t->alive($) = 1;
    t->owned_state($).store(UNBOUND, rl::mo_relaxed);
    jw = new jwaker_t;
    jw->refs($).store(1, rl::mo_relaxed);
    jw->wakes($).store(0, rl::mo_relaxed);
    jw_wakes = 0;
    event($).store(0, rl::mo_relaxed);
    queue_len = queue_head = 0;
    queue[queue_len++] = t;
    shard_closed($) = false;
    shard_task($) = nullptr;
    polls = drops = completions = joined_cancelled = joined_value = 0;
    registered = saw_complete = false;
  }

  // The checks both scenarios end with.
  void check_end() {
    RL_ASSERT(drops == 1);
    RL_ASSERT(completions == 1);
    RL_ASSERT(polls <= 2);
    RL_ASSERT(joined_value + joined_cancelled == (saw_complete ? 1 : 0));
    // A join waker set before completion was woken by it.
    if (registered && saw_complete)
      RL_ASSERT(jw_wakes == 1);
  }

  // The worker: runs what is queued, up to three times.
  void worker() {
    for (int i = 0; i < 3; i++) {
      task_t *task = next_task();
      if (task == nullptr)
        break;
      task_run(task);
    }
  }

  // ------------------------------------------------ owned list (mt_*)
  bool bind(task_t *task) {
    shard_mu.lock($);
    if (shard_closed($)) {
      shard_mu.unlock($);
      return false;
    }
    shard_task($) = task;
    task->owned_state($).store(BOUND, rl::mo_relaxed);
    shard_mu.unlock($);
    return true;
  }

  int release(task_t *task) {
    if (task->owned_state($).load(rl::mo_relaxed) == UNBOUND) {
      task->owned_state($).store(UNLINKED, rl::mo_relaxed);
      return 1;
    }
    int refs = 0;
    shard_mu.lock($);
    if (task->owned_state($).load(rl::mo_relaxed) == BOUND) {
      shard_task($) = nullptr;
      refs = 1;
    }
    task->owned_state($).store(UNLINKED, rl::mo_relaxed);
    shard_mu.unlock($);
    return refs;
  }

  // close_spawns' part for the shard, then drain_shard.
  void close_and_drain_shard() {
    shard_mu.lock($);
    shard_closed($) = true;
    shard_mu.unlock($);
    shard_mu.lock($);
    task_t *task = shard_task($);
    if (task != nullptr) {
      shard_task($) = nullptr;
      task->owned_state($).store(UNLINKED, rl::mo_relaxed);
    }
    shard_mu.unlock($);
    if (task != nullptr)
      task_shutdown(task);
  }

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
    int released = release(task);
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
    if (task->owned_state($).load(rl::mo_relaxed) == UNBOUND && !bind(task)) {
      cancel_and_complete(task);
      return;
    }
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

  void task_shutdown(task_t *task) {
    uint64_t cur = task->state($).load(rl::mo_relaxed);
    uint64_t next;
    do {
      next = cur | CANCELLED;
      if (!(cur & (RUNNING | COMPLETE)))
        next |= RUNNING;
    } while (!cas(task, cur, next, rl::mo_acq_rel));
    if (cur & (RUNNING | COMPLETE)) {
      unref(task);
      return;
    }
    cancel_and_complete(task);
  }

  void task_wake_by_ref(task_t *task) {
    uint64_t cur = task->state($).load(rl::mo_relaxed);
    uint64_t next;
    bool submit;
    do {
      if (cur & (COMPLETE | NOTIFIED))
        return;
      if (cur & RUNNING) {
        next = cur | NOTIFIED;
        submit = false;
      } else {
        next = (cur | NOTIFIED) + REF_ONE;
        submit = true;
      }
    } while (!cas(task, cur, next, rl::mo_acq_rel));
    if (submit)
      schedule(task);
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

};

// Scenario 1: wake by value, abort and join race the poll.
struct wake_abort_join : task_core, rl::test_suite<wake_abort_join, 3> {
  void before() { setup(); }

  void thread(unsigned index) {
    if (index == 0) {
      worker();
    } else if (index == 1) {
      event($).store(1, rl::mo_release);
      task_wake(t);
    } else {
      task_t *task = t;
      jwaker_t *mine = jw;
      registered = join_register(task, mine);
      join_abort(task);
      saw_complete = join_try(task) != EAGAIN_;
      join_detach(task);
      jw_drop(mine);
    }
  }

  void after() {
    while (task_t *task = next_task())
      task_run(task);
    check_end();
  }
};

// Scenario 2: a worker shutting down drains the owned list while the task
// runs and another thread wakes it by reference.
struct shutdown_race : task_core, rl::test_suite<shutdown_race, 3> {
  void before() {
    setup();
    jw_drop(jw); // no join waker here
  }

  void thread(unsigned index) {
    if (index == 0) {
      worker();
    } else if (index == 1) {
      event($).store(1, rl::mo_release);
      task_wake_by_ref(t);
      unref(t); // treadle_waker_drop
    } else {
      task_t *task = t;
      close_and_drain_shard();
      saw_complete = join_try(task) != EAGAIN_;
      join_detach(task);
    }
  }

  void after() {
    // mt_shutdown, the workers joined: the queues are drained with
    // treadle__task_shutdown, then the shard once more.
    while (task_t *task = next_task())
      task_shutdown(task);
    close_and_drain_shard();
    check_end();
  }
};

} // namespace

int main(int argc, char **argv) {
  model_options o;
  if (!model_options_parse(o, argc, argv))
    return 2;
  return model_verdict(
      {model_run<wake_abort_join>("task_state", "wake_abort_join", o),
       model_run<shutdown_race>("task_state", "shutdown_race", o)});
}
