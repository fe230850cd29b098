/* The seed's exercise 2: 100 tasks on a multi_thread runtime with 4
 * workers. Each task does a little work, yields once (so idle workers can
 * steal it), and records the worker and the OS thread it finished on; the
 * program prints how many ran on each. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <treadle.h>

#define TASKS 100
#define WORKERS 4

static _Atomic int per_worker[WORKERS];
static _Atomic unsigned long thread_of[WORKERS];

typedef struct {
  int step;
} job_t;

static void busy(void) {
  volatile unsigned x = 1;
  for (int i = 0; i < 200000; i++)
    x = x * 1103515245u + 12345u;
}

static treadle_poll_t job_poll(treadle_cx_t *cx, void *state) {
  job_t *j = state;
  busy();
  if (j->step++ == 0) {
    treadle_cx_yield(cx);
    return TREADLE_PENDING;
  }
  int w = treadle_cx_worker(cx);
  atomic_fetch_add(&per_worker[w], 1);
  atomic_store(&thread_of[w], (unsigned long)pthread_self());
  return TREADLE_READY;
}

/* The root task spawns the 100 tasks and joins them all. */
typedef struct {
  treadle_join_t *joins[TASKS];
  int spawned, joined;
} root_t;

static treadle_poll_t root_poll(treadle_cx_t *cx, void *state) {
  root_t *r = state;
  static const treadle_task_vtable_t job_vt = {.poll = job_poll};
  for (; r->spawned < TASKS; r->spawned++)
    if (treadle_spawn(treadle_cx_handle(cx), &job_vt, NULL, sizeof(job_t),
                      &r->joins[r->spawned]) != 0)
      return TREADLE_READY;
  for (; r->joined < TASKS; r->joined++) {
    if (treadle_join_poll(r->joins[r->joined], cx, NULL, NULL) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    treadle_join_detach(r->joins[r->joined]);
  }
  return TREADLE_READY;
}

int main(void) {
  treadle_builder_t *b;
  treadle_runtime_t *rt;
  treadle_builder_new(TREADLE_MULTI_THREAD, &b);
  treadle_builder_worker_threads(b, WORKERS);
  treadle_builder_enable_all(b);
  treadle_err_t err = treadle_builder_build(b, &rt);
  treadle_builder_free(b);
  if (err != 0) {
    fprintf(stderr, "runtime: %s\n", treadle_strerror(err));
    return 1;
  }
  static const treadle_task_vtable_t root_vt = {.poll = root_poll};
  err = treadle_runtime_block_on(rt, &root_vt, NULL, sizeof(root_t), NULL);
  int total = 0;
  printf("%d tasks on %d workers:\n", TASKS, WORKERS);
  for (int w = 0; w < WORKERS; w++) {
    int n = atomic_load(&per_worker[w]);
    total += n;
    printf("  worker %d (thread %#lx): %3d tasks\n", w,
           atomic_load(&thread_of[w]), n);
  }
  for (int w = 0; w < WORKERS; w++) {
    treadle_worker_metrics_t m;
    treadle_handle_worker_metrics(treadle_runtime_handle(rt), (unsigned)w,
                                  &m);
    printf("  worker %d: %llu polls, %llu tasks stolen in %llu steals\n", w,
           (unsigned long long)m.polls, (unsigned long long)m.steals,
           (unsigned long long)m.steal_operations);
  }
  treadle_runtime_free(rt);
  return err != 0 || total != TASKS;
}
