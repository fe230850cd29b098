/* The thread-local context: which runtime this thread runs tasks for.
 *
 * Set by a scheduler while it holds its core (current_thread block_on, a
 * multi_thread worker) and cleared when it lets go. spawn and wake read it
 * to choose the local run queue over the inject queue; block_on reads it to
 * refuse nesting. */
#include "internal.h"

__thread treadle__context_t treadle__ctx
    __attribute__((tls_model("initial-exec")));

treadle_handle_t *treadle_handle_current(void) {
  treadle__sched_t *s = treadle__ctx.sched;
  return s != NULL ? s->handle : NULL;
}
