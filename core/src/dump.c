/* Seeing inside: the text dump of live tasks.
 *
 * One line per task: id, name, state (from its state word), the worker
 * that runs or owns it, and what it waits on (set by the leaf future that
 * last returned PENDING). The scheduler walks its owned lists (dump in its
 * vtable); a current_thread runtime's list belongs to the thread driving
 * it, so a dump from elsewhere is taken by a task on that thread. */
#include <stdio.h>

#include "internal.h"

const char *treadle__wait_name(int what) {
  switch (what) {
#define XX(name, text)          \
  case TREADLE__WAIT_##name:    \
    return text;
    TREADLE__WAIT_MAP(XX)
#undef XX
  default:
    return "?";
  }
}

static const char *state_name(uint64_t s) {
  if (s & TREADLE__COMPLETE)
    return "complete";
  if (s & TREADLE__RUNNING)
    return (s & TREADLE__CANCELLED) ? "running, cancelled" : "running";
  if (s & TREADLE__CANCELLED)
    return "cancelled";
  if (s & TREADLE__NOTIFIED)
    return "queued";
  return "waiting";
}

void treadle__dump_task(FILE *out, treadle__task_t *t, int worker) {
  /* Relaxed: a snapshot; the task may change as we print. */
  uint64_t s = atomic_load_explicit(&t->state, memory_order_relaxed);
  uint8_t waits =
      atomic_load_explicit(&t->waits_on, memory_order_relaxed);
  fprintf(out, "task %llu", (unsigned long long)t->id);
  if (t->name != NULL)
    fprintf(out, " '%s'", t->name);
  fprintf(out, ": %s", state_name(s));
  if (worker >= 0)
    fprintf(out, ", worker %d", worker);
  if (!(s & (TREADLE__RUNNING | TREADLE__NOTIFIED)) &&
      waits != TREADLE__WAIT_NONE)
    fprintf(out, ", waits on %s", treadle__wait_name(waits));
  fputc('\n', out);
}
