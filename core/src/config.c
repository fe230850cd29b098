/* The builder: validated settings, copied into each runtime it builds. */
#include <stdio.h>
#include <unistd.h>

#include "internal.h"

static unsigned default_workers(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > TREADLE_MAX_WORKERS ? TREADLE_MAX_WORKERS : (unsigned)n;
}

treadle_err_t treadle_builder_new(treadle_flavor_t flavor,
                                  treadle_builder_t **out) {
  if (out == NULL)
    return TREADLE_EINVAL;
  *out = NULL;
  if (flavor != TREADLE_CURRENT_THREAD && flavor != TREADLE_MULTI_THREAD)
    return TREADLE_EINVAL;
  treadle_builder_t *b = treadle__calloc(1, sizeof *b);
  if (b == NULL)
    return TREADLE_ENOMEM;
  treadle__config_t *c = &b->cfg;
  c->flavor = flavor;
  c->worker_threads = default_workers();
  c->max_blocking_threads = 512;
  c->keep_alive_ns = 10 * TREADLE_NSEC_PER_SEC;
  snprintf(c->thread_name, sizeof c->thread_name, "treadle-worker");
  c->event_interval = 61;
  c->global_queue_interval = flavor == TREADLE_CURRENT_THREAD ? 31 : 61;
  *out = b;
  return 0;
}

void treadle_builder_free(treadle_builder_t *b) { treadle__free(b); }

treadle_err_t treadle_builder_worker_threads(treadle_builder_t *b,
                                             unsigned n) {
  if (b == NULL || n < 1 || n > TREADLE_MAX_WORKERS)
    return TREADLE_EINVAL;
  b->cfg.worker_threads = n;
  return 0;
}

treadle_err_t treadle_builder_max_blocking_threads(treadle_builder_t *b,
                                                   unsigned n) {
  if (b == NULL || n < 1 || n > 65536)
    return TREADLE_EINVAL;
  b->cfg.max_blocking_threads = n;
  return 0;
}

treadle_err_t treadle_builder_thread_keep_alive(treadle_builder_t *b,
                                                uint64_t ns) {
  if (b == NULL)
    return TREADLE_EINVAL;
  b->cfg.keep_alive_ns = ns;
  return 0;
}

treadle_err_t treadle_builder_enable_io(treadle_builder_t *b) {
  if (b == NULL)
    return TREADLE_EINVAL;
  b->cfg.enable_io = true;
  return 0;
}

treadle_err_t treadle_builder_enable_time(treadle_builder_t *b) {
  if (b == NULL)
    return TREADLE_EINVAL;
  b->cfg.enable_time = true;
  return 0;
}

treadle_err_t treadle_builder_enable_all(treadle_builder_t *b) {
  if (b == NULL)
    return TREADLE_EINVAL;
  b->cfg.enable_io = true;
  b->cfg.enable_time = true;
  return 0;
}

treadle_err_t treadle_builder_thread_name(treadle_builder_t *b,
                                          const char *name) {
  if (b == NULL || name == NULL || strlen(name) >= sizeof b->cfg.thread_name)
    return TREADLE_EINVAL;
  strcpy(b->cfg.thread_name, name);
  return 0;
}

treadle_err_t treadle_builder_on_thread_start(treadle_builder_t *b,
                                              treadle_thread_cb cb,
                                              void *userdata) {
  if (b == NULL)
    return TREADLE_EINVAL;
  b->cfg.on_thread_start = cb;
  b->cfg.on_thread_start_ud = userdata;
  return 0;
}

treadle_err_t treadle_builder_on_thread_stop(treadle_builder_t *b,
                                             treadle_thread_cb cb,
                                             void *userdata) {
  if (b == NULL)
    return TREADLE_EINVAL;
  b->cfg.on_thread_stop = cb;
  b->cfg.on_thread_stop_ud = userdata;
  return 0;
}

treadle_err_t treadle_builder_event_interval(treadle_builder_t *b,
                                             unsigned n) {
  if (b == NULL || n < 1 || n > 1000000)
    return TREADLE_EINVAL;
  b->cfg.event_interval = n;
  return 0;
}

treadle_err_t treadle_builder_global_queue_interval(treadle_builder_t *b,
                                                    unsigned n) {
  if (b == NULL || n < 1 || n > 1000000)
    return TREADLE_EINVAL;
  b->cfg.global_queue_interval = n;
  return 0;
}

treadle_err_t treadle_builder_warn_slow_polls(treadle_builder_t *b,
                                              uint64_t threshold_ns) {
  if (b == NULL)
    return TREADLE_EINVAL;
  b->cfg.slow_poll_ns =
      threshold_ns != 0 ? threshold_ns : 100 * TREADLE_NSEC_PER_MSEC;
  return 0;
}

treadle_err_t treadle_builder_on_task_error(treadle_builder_t *b,
                                            treadle_task_error_cb cb,
                                            void *userdata) {
  if (b == NULL)
    return TREADLE_EINVAL;
  b->cfg.on_task_error = cb;
  b->cfg.on_task_error_ud = userdata;
  return 0;
}
