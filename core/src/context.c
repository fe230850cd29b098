/* The thread-local context: which runtime this thread runs tasks for.
 *
 * `sched` and `core` are set by a scheduler while it holds its core
 * (current_thread block_on, a multi_thread worker) and cleared when it lets
 * go: spawn and wake read them to choose the local run queue over the
 * inject queue, block_on to refuse nesting. `handle` is also set on the
 * blocking pool's threads, for treadle_handle_current. */
#include "internal.h"

__thread treadle__context_t treadle__ctx TREADLE_TLS_MODEL;

treadle_handle_t *treadle_handle_current(void) { return treadle__ctx.handle; }
