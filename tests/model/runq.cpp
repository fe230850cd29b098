// Model of the local run queue: core/src/runq.c (push lines 98-122 with
// push_overflow 64-96, pop 124-142, steal_batch 146-188, steal_into
// 190-209) and the LIFO slot of core/src/scheduler_mt.c (lines 268-275: a
// spawn takes the slot and pushes the previous occupant). Keep the
// transcription in step with those lines.
//
// Scenario: a queue of 4 slots (TREADLE_TEST_SMALL) whose 32-bit indices
// start 2 below 2^32, so they wrap during the run. The owner spawns tasks
// 1-3 through its LIFO slot, runs one, spawns 4-7 (the queue overflows half
// of itself to the inject queue), then runs what it has; two thieves each
// steal half into their own queue and run it (second scenario: the second
// thief steals from the first one's queue instead). Checked: every task runs
// exactly once (none lost, none twice, inject queue included), each task's
// contents are visible to whoever runs it (a plain field written at spawn:
// relacy reports a race otherwise), slots are never read while rewritten,
// and popping an empty queue leaves head unchanged (TESTING.md S2-S4).
//
// MUTANT=1 weakens the owner's publishing store of tail in push (runq.c
// line 110) from release to relaxed: a thief may then read a slot before
// the owner's write of it is visible. relacy reports a data race.
#include "model.hpp"

#include <cstdint>

namespace {

constexpr uint32_t CAP = 4, MASK = CAP - 1;
constexpr int TASKS = 7, THIEVES = 2;
constexpr uint32_t START = UINT32_MAX - 1; // indices wrap past 2^32

struct task_t {
  rl::var<int> contents; // written at spawn, read by whoever runs it
  rl::var<int> next;     // inject list link (task_t.next), 0 = NULL
};

struct runq_t {
  rl::atomic<uint64_t> head; // steal (low 32) | real (high 32)
  rl::atomic<uint32_t> tail;
  rl::var<int> slots[CAP];
};

uint64_t pack(uint32_t steal, uint32_t real) {
  return (uint64_t)steal | ((uint64_t)real << 32);
}
uint32_t steal_of(uint64_t h) { return (uint32_t)h; }
uint32_t real_of(uint64_t h) { return (uint32_t)(h >> 32); }

// CHAIN: the second thief steals from the first thief's queue instead of
// the owner's, so a queue filled by steal_into is stolen from in turn.
template <bool CHAIN>
struct runq_model : rl::test_suite<runq_model<CHAIN>, 1 + THIEVES> {
  task_t tasks[TASKS + 1]; // 1-based; 0 is NULL
  runq_t queues[1 + THIEVES];
  rl::mutex inject_mu; // inject.c is a locked FIFO
  int inject[TASKS + 1];
  int inject_len;
  int runs[1 + THIEVES][TASKS + 1]; // per thread, summed in after()
  int lifo; // the owner's LIFO slot: plain, only its worker touches it

  void before() {
    for (int i = 1; i <= TASKS; i++) {
      tasks[i].contents($) = 0;
      tasks[i].next($) = 0;
    }
    for (auto &q : queues) {
      q.head($).store(pack(START, START), rl::mo_relaxed);
      q.tail($).store(START, rl::mo_relaxed);
      for (auto &s : q.slots)
        s($) = 0;
    }
    inject_len = 0;
    std::memset(runs, 0, sizeof runs);
    lifo = 0;
  }

  // inject.c push_batch: the list first..last linked through next.
  void inject_push_batch(int first) {
    inject_mu.lock($);
    for (int t = first; t != 0; t = tasks[t].next($))
      inject[inject_len++] = t;
    inject_mu.unlock($);
  }
  void inject_push(int t) {
    inject_mu.lock($);
    inject[inject_len++] = t;
    inject_mu.unlock($);
  }

  // runq.c 64-96.
  bool push_overflow(runq_t &q, int t, uint32_t real, uint32_t tail) {
    const uint32_t n = CAP / 2;
    RL_ASSERT(tail - real == CAP);
    uint64_t prev = pack(real, real);
    if (!q.head($).compare_exchange_strong(prev, pack(real + n, real + n),
                                           rl::mo_release, rl::mo_relaxed))
      return false;
    int first = q.slots[real & MASK]($);
    int last = first;
    for (uint32_t i = 1; i < n; i++) {
      int next = q.slots[(real + i) & MASK]($);
      tasks[last].next($) = next;
      last = next;
    }
    tasks[last].next($) = t;
    tasks[t].next($) = 0;
    inject_push_batch(first);
    return true;
  }

  // runq.c 98-122.
  bool push(runq_t &q, int t) {
    for (;;) {
      uint64_t h = q.head($).load(rl::mo_acquire);
      uint32_t steal = steal_of(h), real = real_of(h);
      uint32_t tail = q.tail($).load(rl::mo_relaxed);
      if ((uint32_t)(tail - steal) < CAP) {
        q.slots[tail & MASK]($) = t;
        q.tail($).store(tail + 1, MO(rl::mo_release, rl::mo_relaxed));
        return false;
      }
      if (steal != real) {
        inject_push(t);
        return true;
      }
      if (push_overflow(q, t, real, tail))
        return true;
    }
  }

  // runq.c 124-142.
  int pop(runq_t &q) {
    uint64_t h = q.head($).load(rl::mo_acquire);
    for (;;) {
      uint32_t steal = steal_of(h), real = real_of(h);
      uint32_t tail = q.tail($).load(rl::mo_relaxed);
      if (real == tail)
        return 0;
      uint64_t next =
          steal == real ? pack(real + 1, real + 1) : pack(steal, real + 1);
      if (q.head($).compare_exchange_weak(h, next, rl::mo_acq_rel,
                                          rl::mo_acquire))
        return q.slots[real & MASK]($);
    }
  }

  // runq.c 146-188.
  uint32_t steal_batch(runq_t &src, runq_t &dst, uint32_t dst_tail) {
    uint64_t prev = src.head($).load(rl::mo_acquire);
    uint64_t next;
    uint32_t n, first;
    for (;;) {
      uint32_t steal = steal_of(prev), real = real_of(prev);
      if (steal != real)
        return 0;
      uint32_t tail = src.tail($).load(rl::mo_acquire);
      n = (uint32_t)(tail - real);
      n -= n / 2;
      if (n == 0)
        return 0;
      if (n > CAP / 2)
        n = CAP / 2;
      first = real;
      next = pack(steal, real + n);
      if (src.head($).compare_exchange_weak(prev, next, rl::mo_acq_rel,
                                            rl::mo_acquire))
        break;
    }
    for (uint32_t i = 0; i < n; i++)
      dst.slots[(dst_tail + i) & MASK]($) = src.slots[(first + i) & MASK]($);
    prev = next;
    for (;;) {
      uint32_t real = real_of(prev);
      if (src.head($).compare_exchange_weak(prev, pack(real, real),
                                            rl::mo_acq_rel, rl::mo_acquire))
        return n;
      RL_ASSERT(steal_of(prev) != real_of(prev));
    }
  }

  // runq.c 190-209.
  int steal_into(runq_t &src, runq_t &dst) {
    uint32_t dst_tail = dst.tail($).load(rl::mo_relaxed);
    uint64_t dh = dst.head($).load(rl::mo_acquire);
    if ((uint32_t)(dst_tail - steal_of(dh)) > CAP / 2)
      return 0;
    uint32_t n = steal_batch(src, dst, dst_tail);
    if (n == 0)
      return 0;
    n--;
    int t = dst.slots[(dst_tail + n) & MASK]($);
    if (n > 0)
      dst.tail($).store(dst_tail + n, rl::mo_release);
    return t;
  }

  void run(unsigned thread, int t) {
    RL_ASSERT(t >= 1 && t <= TASKS);
    RL_ASSERT(tasks[t].contents($) == t); // visible to its runner
    runs[thread][t]++;
  }

  // scheduler_mt.c 268-275: the new task takes the LIFO slot.
  void spawn(int t) {
    tasks[t].contents($) = t;
    int prev = lifo;
    lifo = t;
    if (prev != 0)
      push(queues[0], prev);
  }

  int next_local() {
    if (lifo != 0) {
      int t = lifo;
      lifo = 0;
      return t;
    }
    return pop(queues[0]);
  }

  void thread(unsigned index) {
    if (index == 0) {
      for (int t = 1; t <= 3; t++)
        spawn(t);
      if (int t = next_local())
        run(0, t);
      for (int t = 4; t <= TASKS; t++)
        spawn(t);
      while (int t = next_local())
        run(0, t);
      return;
    }
    runq_t &mine = queues[index];
    runq_t &victim = CHAIN && index == 2 ? queues[1] : queues[0];
    if (int t = steal_into(victim, mine))
      run(index, t);
    while (int t = pop(mine))
      run(index, t);
  }

  void after() {
    // Whatever is left (the inject queue, tasks a thief queued after the
    // owner finished) runs now, single-threaded.
    while (int t = next_local())
      run(0, t);
    for (int i = 0; i < inject_len; i++)
      run(0, inject[i]);
    for (auto &q : queues) {
      uint64_t h = q.head($).load(rl::mo_relaxed);
      RL_ASSERT(pop(q) == 0);
      RL_ASSERT(q.head($).load(rl::mo_relaxed) == h); // S4
      RL_ASSERT(steal_of(h) == real_of(h));           // no theft left open
    }
    for (int t = 1; t <= TASKS; t++) {
      int total = 0;
      for (auto &r : runs)
        total += r[t];
      RL_ASSERT(total == 1); // S2: exactly once
    }
  }
};

} // namespace

int main(int argc, char **argv) {
  model_options o;
  if (!model_options_parse(o, argc, argv))
    return 2;
  return model_verdict(
      {model_run<runq_model<false>>("runq", "owner_and_two_thieves", o),
       model_run<runq_model<true>>("runq", "thief_robs_a_thief", o)});
}
