/* The README's example: a task that sleeps 10 ms, run by block_on. */
#include <stdio.h>
#include <treadle.h>

typedef struct { treadle_sleep_t nap; int step; } hello_t;

static treadle_poll_t hello(treadle_cx_t *cx, void *state) {
  hello_t *h = state;
  if (h->step++ == 0) { puts("hello"); treadle_sleep_init(&h->nap, 10 * TREADLE_NSEC_PER_MSEC); }
  if (treadle_sleep_poll(&h->nap, cx, NULL) == TREADLE_PENDING) return TREADLE_PENDING;
  puts("... world, 10 ms later");
  return TREADLE_READY;
}

int main(void) {
  treadle_runtime_t *rt;
  treadle_runtime_new_current_thread(&rt);
  static const treadle_task_vtable_t vt = {.poll = hello};
  treadle_err_t err = treadle_runtime_block_on(rt, &vt, NULL, sizeof(hello_t), NULL);
  treadle_runtime_free(rt);
  return err != 0;
}
