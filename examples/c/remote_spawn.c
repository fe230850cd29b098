/* The seed's exercise 4: a Handle from anywhere. A plain pthread (not a
 * runtime thread) spawns tasks onto a multi_thread runtime through a
 * handle reference it owns; each task finds its runtime again with
 * treadle_handle_current() and spawns a follow-up task from inside. The
 * main thread waits on a oneshot channel the last task fills. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <treadle.h>

#define TASKS 10

static _Atomic int left = 2 * TASKS;
static treadle_oneshot_tx_t *done_tx;

static void finish_one(void) {
  if (atomic_fetch_sub(&left, 1) == 1)
    treadle_oneshot_send(done_tx, "all tasks ran");
}

static treadle_poll_t follow_up(treadle_cx_t *cx, void *state) {
  printf("  follow-up of task %d on worker %d\n", *(int *)state,
         treadle_cx_worker(cx));
  finish_one();
  return TREADLE_READY;
}

static treadle_poll_t from_thread(treadle_cx_t *cx, void *state) {
  int n = *(int *)state;
  treadle_handle_t *h = treadle_handle_current(); /* this task's runtime */
  printf("task %d from the plain thread, on worker %d\n", n,
         treadle_cx_worker(cx));
  static const treadle_task_vtable_t vt = {.poll = follow_up};
  treadle_spawn(h, &vt, &n, sizeof n, NULL);
  finish_one();
  return TREADLE_READY;
}

static void *plain_thread(void *arg) {
  treadle_handle_t *h = arg; /* takes ownership of one reference */
  static const treadle_task_vtable_t vt = {.poll = from_thread};
  for (int i = 0; i < TASKS; i++) {
    treadle_err_t err = treadle_spawn(h, &vt, &i, sizeof i, NULL);
    if (err != 0)
      fprintf(stderr, "spawn: %s\n", treadle_strerror(err));
  }
  treadle_handle_unref(h);
  return NULL;
}

int main(void) {
  treadle_builder_t *b;
  treadle_runtime_t *rt;
  treadle_builder_new(TREADLE_MULTI_THREAD, &b);
  treadle_builder_worker_threads(b, 2);
  treadle_builder_enable_all(b);
  treadle_err_t err = treadle_builder_build(b, &rt);
  treadle_builder_free(b);
  if (err != 0)
    return 1;
  treadle_oneshot_rx_t *done_rx;
  treadle_oneshot_new(NULL, &done_tx, &done_rx);

  pthread_t th;
  pthread_create(&th, NULL, plain_thread,
                 treadle_handle_ref(treadle_runtime_handle(rt)));
  void *msg = NULL;
  err = treadle_oneshot_recv_wait(done_rx, &msg); /* a plain thread waits */
  printf("main: %s (%s)\n", err == 0 ? (char *)msg : "failed",
         treadle_strerror(err));
  pthread_join(th, NULL);
  treadle_oneshot_rx_drop(done_rx);
  treadle_runtime_free(rt);
  /* After the runtime is gone, the handle says so instead of crashing. */
  return err != 0;
}
