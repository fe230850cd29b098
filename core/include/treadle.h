/** @file
 * treadle: an asynchronous runtime for C, built the way Tokio is built.
 *
 * A task is a poll function plus the caller's state, copied into one
 * allocation. The runtime polls it; the poll returns TREADLE_READY when the
 * task is done, or TREADLE_PENDING after it has handed its waker
 * (treadle_cx_waker) to whatever will wake it. Leaf futures (sleep, join, ...)
 * are poll functions the core provides; C programs compose them in their own
 * state machines.
 *
 * Conventions:
 * - Functions that can fail return treadle_err_t: 0, or a negative
 *   TREADLE_E* code (-errno for system errors); treadle_strerror() names it.
 * - Objects are opaque and library-allocated. "Borrowed" pointers stay
 *   valid as long as their owner; "takes ownership" means the callee frees.
 * - Durations and deadlines are nanoseconds of CLOCK_MONOTONIC
 *   (treadle_now()); TREADLE_FOREVER means "never".
 * - If a call that takes a callback or waker fails, the callback is never
 *   called and the waker is never woken. */
#ifndef TREADLE_H
#define TREADLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "treadle/errno.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Everything declared here is exported from the shared library; the rest of
 * the core is built with hidden visibility. */
#pragma GCC visibility push(default)

#define TREADLE_VERSION_MAJOR 0
#define TREADLE_VERSION_MINOR 1
#define TREADLE_VERSION_PATCH 0

/** 0 on success, or a negative TREADLE_E* code. */
typedef int treadle_err_t;

typedef enum { TREADLE_PENDING = 0, TREADLE_READY = 1 } treadle_poll_t;

typedef struct treadle_cx_s treadle_cx_t;
typedef struct treadle_waker_s treadle_waker_t;
typedef struct treadle_builder_s treadle_builder_t;
typedef struct treadle_runtime_s treadle_runtime_t;
typedef struct treadle_handle_s treadle_handle_t;
typedef struct treadle_join_s treadle_join_t;
typedef struct treadle_task_vtable_s treadle_task_vtable_t;

/** A task's poll function. `state` is the task's own copy of the state given
 * to treadle_spawn(); it stays at one address for the task's life. */
typedef treadle_poll_t (*treadle_poll_fn)(treadle_cx_t *cx, void *state);

/* ---------------------------------------------------------------- errors */

/** A message for any treadle_err_t, including plain -errno values. Never
 * NULL; the string is static. Example: treadle_strerror(TREADLE_ENOTIME). */
const char *treadle_strerror(treadle_err_t err);

/** The code's name ("EINVAL", "ENOTIME"), or "UNKNOWN". Static string. */
const char *treadle_err_name(treadle_err_t err);

/* ------------------------------------------------------------------ time */

#define TREADLE_NSEC_PER_USEC UINT64_C(1000)
#define TREADLE_NSEC_PER_MSEC UINT64_C(1000000)
#define TREADLE_NSEC_PER_SEC UINT64_C(1000000000)
#define TREADLE_FOREVER UINT64_MAX

/** Nanoseconds of CLOCK_MONOTONIC: the clock every treadle deadline uses. */
uint64_t treadle_now(void);

/** Converts seconds (as the bindings take them) to nanoseconds: negative and
 * -0.0 become 0, +inf and anything past UINT64_MAX ns become
 * TREADLE_FOREVER, NaN is TREADLE_EINVAL. */
treadle_err_t treadle_duration_from_secs(double secs, uint64_t *ns);

/* ---------------------------------------------------------------- wakers */

/** A waker is a counted reference to something that can be woken: a task,
 * a blocked thread, a binding's event. The vtable is public so that
 * embedders can make their own (as Rust's RawWakerVTable). Every function
 * may be called from any thread, any number of times. */
typedef struct treadle_waker_vtable_s {
  treadle_waker_t *(*clone)(treadle_waker_t *w); /**< new reference */
  void (*wake)(treadle_waker_t *w);              /**< wakes, drops the ref */
  void (*wake_by_ref)(treadle_waker_t *w);       /**< wakes, keeps the ref */
  void (*drop)(treadle_waker_t *w);              /**< drops the ref */
} treadle_waker_vtable_t;

struct treadle_waker_s {
  const treadle_waker_vtable_t *vtable;
};

/** Returns a new reference to `w` (borrowed). */
treadle_waker_t *treadle_waker_clone(treadle_waker_t *w);
/** Wakes and releases `w` (takes ownership). A wake during the task's poll
 * makes the scheduler poll it again; a wake after it completed does
 * nothing. */
void treadle_wake(treadle_waker_t *w);
/** Wakes `w` (borrowed) and keeps the reference. */
void treadle_wake_by_ref(treadle_waker_t *w);
/** Releases `w` without waking (takes ownership). NULL is ignored. */
void treadle_waker_drop(treadle_waker_t *w);

/* --------------------------------------------------------------- builder */

typedef enum {
  TREADLE_CURRENT_THREAD = 0, /**< tasks run on the thread that calls block_on */
  TREADLE_MULTI_THREAD = 1    /**< N worker threads share the tasks */
} treadle_flavor_t;

typedef void (*treadle_thread_cb)(void *userdata);

/** Called when a task nobody joins fails (its status is an error other than
 * TREADLE_ECANCELED). `name` may be NULL. Runs on whichever thread dropped
 * the output. The default prints one line on stderr. */
typedef void (*treadle_task_error_cb)(uint64_t task_id, const char *name,
                                      treadle_err_t status, void *userdata);

/** A builder collects a runtime's settings (Tokio's runtime::Builder). It
 * can build several runtimes. Setters return TREADLE_EINVAL for a NULL
 * builder or an out-of-range value and leave the builder unchanged. */
treadle_err_t treadle_builder_new(treadle_flavor_t flavor,
                                  treadle_builder_t **out);
void treadle_builder_free(treadle_builder_t *b);

/** The most worker threads a multi_thread runtime may have. */
#define TREADLE_MAX_WORKERS 1024

/** Worker threads of a multi_thread runtime, 1..TREADLE_MAX_WORKERS
 * (default: one per CPU). A current_thread runtime ignores it. */
treadle_err_t treadle_builder_worker_threads(treadle_builder_t *b,
                                             unsigned n);
/** Most threads the blocking pool may start, 1..65536 (default 512). */
treadle_err_t treadle_builder_max_blocking_threads(treadle_builder_t *b,
                                                   unsigned n);
/** How long an idle blocking thread waits for work before it exits
 * (default 10 s). */
treadle_err_t treadle_builder_thread_keep_alive(treadle_builder_t *b,
                                                uint64_t ns);
/** Enables the I/O driver (epoll). Without it, I/O operations fail with
 * TREADLE_ENOIO and an idle runtime parks on a condition variable. */
treadle_err_t treadle_builder_enable_io(treadle_builder_t *b);
/** Enables the time driver (timer wheel). Without it, sleeps and timeouts
 * fail with TREADLE_ENOTIME. */
treadle_err_t treadle_builder_enable_time(treadle_builder_t *b);
/** Enables every driver. */
treadle_err_t treadle_builder_enable_all(treadle_builder_t *b);
/** Name given to threads the runtime starts (copied; at most 15 bytes are
 * visible to the kernel). Default "treadle-worker". */
treadle_err_t treadle_builder_thread_name(treadle_builder_t *b,
                                          const char *name);
/** Hooks run on every thread the runtime starts, first and last thing. */
treadle_err_t treadle_builder_on_thread_start(treadle_builder_t *b,
                                              treadle_thread_cb cb,
                                              void *userdata);
treadle_err_t treadle_builder_on_thread_stop(treadle_builder_t *b,
                                             treadle_thread_cb cb,
                                             void *userdata);
/** Scheduler ticks between two polls of the drivers (default 61). */
treadle_err_t treadle_builder_event_interval(treadle_builder_t *b,
                                             unsigned n);
/** Scheduler ticks between two looks at the global queue first (default 31
 * for current_thread, 61 for multi_thread). */
treadle_err_t treadle_builder_global_queue_interval(treadle_builder_t *b,
                                                    unsigned n);
/** Replaces the report of failed, unjoined tasks (NULL restores stderr). */
treadle_err_t treadle_builder_on_task_error(treadle_builder_t *b,
                                            treadle_task_error_cb cb,
                                            void *userdata);
/** Debug option: warn on stderr, naming the task, when one poll takes longer
 * than threshold_ns (0: the default, 100 ms). Costs two clock reads per
 * poll. Off unless called. */
treadle_err_t treadle_builder_warn_slow_polls(treadle_builder_t *b,
                                              uint64_t threshold_ns);
/** Builds a runtime from the builder's settings. */
treadle_err_t treadle_builder_build(const treadle_builder_t *b,
                                    treadle_runtime_t **out);

/* --------------------------------------------------------------- runtime */

/** Shorthand: a current_thread runtime with every driver enabled. */
treadle_err_t treadle_runtime_new_current_thread(treadle_runtime_t **out);

/** The runtime's handle (borrowed: valid until treadle_runtime_free; take a
 * reference with treadle_handle_ref to keep it longer). */
treadle_handle_t *treadle_runtime_handle(treadle_runtime_t *rt);

/** Spawns a task from `poll` and `state` (see treadle_spawn) and blocks the
 * calling thread until it completes; on a current_thread runtime the caller
 * runs the scheduler meanwhile. Returns the task's status and stores its
 * output value in *value (may be NULL; the value then goes to the vtable's
 * drop_output). It returns only once the task completed, or with an error
 * before spawning it (then nothing ran), so its state may point into the
 * caller's memory. From a thread that is running this or another runtime's
 * tasks it returns TREADLE_EINRUNTIME at once: nested block_on would
 * deadlock. */
treadle_err_t treadle_runtime_block_on(treadle_runtime_t *rt,
                                       const treadle_task_vtable_t *vt,
                                       const void *state, size_t state_size,
                                       void **value);

/** Shuts the runtime down and frees it (takes ownership): new spawns fail
 * with TREADLE_ESHUTDOWN, every task is cancelled and dropped (each drop
 * function runs once), the drivers close their fds, every thread the
 * runtime started is joined. Handles, wakers and join handles that outlive
 * it stay safe to use and report TREADLE_ESHUTDOWN or "cancelled".
 * Returns TREADLE_EINRUNTIME (and frees nothing) when called from one of
 * the runtime's own tasks, and TREADLE_EBUSY when another thread is inside
 * block_on on it.
 *
 * After fork(), a runtime built before it belongs to the parent: in the
 * child, its threads do not exist and its epoll set is shared with the
 * parent, so block_on, spawn, spawn_blocking, TCP, async fds, signals and
 * this function answer TREADLE_EFORKED at once and touch nothing (closing
 * or freeing a stream closes only the child's copy of its fd). Build a new
 * runtime in the child. */
treadle_err_t treadle_runtime_free(treadle_runtime_t *rt);

/** treadle_runtime_free, waiting at most timeout_ns for blocking-pool jobs
 * that are already running (queued ones are cancelled). Jobs still running
 * then are left to finish on their own threads, which exit afterwards;
 * the runtime is freed either way and TREADLE_ETIMEDOUT says so. Same
 * refusals as treadle_runtime_free. */
treadle_err_t treadle_runtime_shutdown_timeout(treadle_runtime_t *rt,
                                               uint64_t timeout_ns);

/** Writes a text dump of the live tasks to `out`, one line each: id, name,
 * state, worker, and what it waits on, after a line per worker. Any
 * thread; from outside a busy current_thread runtime the dump is taken by
 * a task on the runtime's thread. */
treadle_err_t treadle_runtime_dump(treadle_runtime_t *rt, FILE *out);

/* ------------------------------------------------------------- metrics */

typedef struct treadle_runtime_metrics_s {
  unsigned workers;              /**< 1 for current_thread */
  uint64_t live_tasks;           /**< spawned and not yet finished */
  uint64_t inject_queue_depth;   /**< tasks in the global queue */
  uint64_t blocking_threads;     /**< blocking-pool threads alive */
  uint64_t blocking_idle;        /**< ... of which idle */
  uint64_t blocking_queue_depth; /**< blocking jobs waiting for a thread */
  uint64_t driver_parks; /**< times a thread waited in the driver stack
                              (epoll or its condvar) for an event, a timer
                              or an unpark; a runtime that only waits adds
                              a few per timer, whatever its length */
} treadle_runtime_metrics_t;

typedef struct treadle_worker_metrics_s {
  uint64_t polls;             /**< task polls */
  uint64_t steals;            /**< tasks this worker stole */
  uint64_t steal_operations;  /**< successful steal attempts */
  uint64_t parks;             /**< times it went to sleep */
  uint64_t unparks;           /**< times it woke up */
  uint64_t lifo_hits;         /**< tasks run from the LIFO slot */
  uint64_t overflows;         /**< local queue full: half moved to inject */
  uint64_t local_queue_depth; /**< tasks in its local queue now */
} treadle_worker_metrics_t;

/** Counters are monotonic; depths are snapshots. Reading takes no lock a
 * worker needs and may be done from any thread at any time. */
treadle_err_t treadle_handle_metrics(treadle_handle_t *h,
                                     treadle_runtime_metrics_t *out);
/** TREADLE_EINVAL for a worker index past the last. */
treadle_err_t treadle_handle_worker_metrics(treadle_handle_t *h,
                                            unsigned worker,
                                            treadle_worker_metrics_t *out);

/* ---------------------------------------------------------------- handle */

/** The handle of the runtime whose task is running on this thread, or NULL
 * (borrowed: valid while the task runs). */
treadle_handle_t *treadle_handle_current(void);
/** Takes a reference (returns h). Handles are thread-safe. */
treadle_handle_t *treadle_handle_ref(treadle_handle_t *h);
/** Drops a reference; NULL is ignored. */
void treadle_handle_unref(treadle_handle_t *h);
/** treadle_runtime_block_on through a handle, from any thread that is not
 * running a runtime's tasks. */
treadle_err_t treadle_handle_block_on(treadle_handle_t *h,
                                      const treadle_task_vtable_t *vt,
                                      const void *state, size_t state_size,
                                      void **value);

/* ----------------------------------------------------------------- tasks */

/** What a task is made of. The vtable is borrowed for the task's life
 * (normally a static const). */
struct treadle_task_vtable_s {
  treadle_poll_fn poll;            /**< required */
  void (*drop)(void *state);       /**< optional: runs exactly once, when the
                                      task completes or is cancelled */
  void (*drop_output)(void *value); /**< optional: frees an output value that
                                       nobody took */
};

/** Spawns a task onto the runtime of `h` (borrowed) from any thread: copies
 * `state_size` bytes of `state` (or zeroes if state is NULL) into the task.
 * On success the task owns whatever the state refers to and *join (if join
 * is not NULL) receives its join handle; with join NULL the task is
 * detached. On failure nothing is taken and drop is not called:
 * TREADLE_EINVAL (NULL handle, vtable or poll; state over 1 GiB),
 * TREADLE_ENOMEM, TREADLE_ESHUTDOWN. From a runtime thread the task goes
 * to that thread's queue; from elsewhere it is queued and the runtime is
 * woken. */
treadle_err_t treadle_spawn(treadle_handle_t *h,
                            const treadle_task_vtable_t *vt,
                            const void *state, size_t state_size,
                            treadle_join_t **join);

/** Options for treadle_spawn_with. Start from TREADLE_SPAWN_OPTS_INIT. */
typedef struct treadle_spawn_opts_s {
  const char *name; /**< copied; shown in dumps and failure reports */
  int worker;       /**< -1: any worker. k >= 0: pinned to worker k, which
                       alone ever polls it (Tokio's spawn_local); a
                       current_thread runtime has the one worker 0 */
} treadle_spawn_opts_t;
#define TREADLE_SPAWN_OPTS_INIT {NULL, -1}

/** treadle_spawn with options (opts may be NULL). TREADLE_EINVAL for a
 * worker index past the runtime's last worker. */
treadle_err_t treadle_spawn_with(treadle_handle_t *h,
                                 const treadle_task_vtable_t *vt,
                                 const void *state, size_t state_size,
                                 const treadle_spawn_opts_t *opts,
                                 treadle_join_t **join);

/** A job for the blocking pool: plain code that may block its thread. */
typedef struct treadle_blocking_vtable_s {
  /** required: runs once on a pool thread; returns the job's status and
   * may set *value (owned by the joiner, or drop_output) */
  treadle_err_t (*run)(void *state, void **value);
  void (*drop)(void *state);        /**< optional: once, after run, or when
                                       the job is cancelled before it ran */
  void (*drop_output)(void *value); /**< optional: frees an untaken value */
} treadle_blocking_vtable_t;

/** Runs vt->run on a blocking-pool thread (started on demand up to
 * max_blocking_threads; idle ones exit after the keep-alive) with a copy
 * of `state`, as treadle_spawn copies it. The join handle works as a
 * task's: join it from a task (treadle_join_poll) or a thread. Aborting a
 * queued job cancels it; aborting a running one has no effect. Errors as
 * treadle_spawn. Both flavors; any thread. */
treadle_err_t treadle_spawn_blocking(treadle_handle_t *h,
                                     const treadle_blocking_vtable_t *vt,
                                     const void *state, size_t state_size,
                                     treadle_join_t **join);

/** The running task's waker (borrowed, valid during this poll; clone it to
 * keep it). */
treadle_waker_t *treadle_cx_waker(treadle_cx_t *cx);
/** Asks to be polled again after this poll returns TREADLE_PENDING, behind
 * the tasks already queued (Tokio's yield_now). */
void treadle_cx_yield(treadle_cx_t *cx);
/** The handle of the runtime running this task (borrowed). */
treadle_handle_t *treadle_cx_handle(treadle_cx_t *cx);
/** The running task's id (unique in the process, never 0). */
uint64_t treadle_cx_task_id(treadle_cx_t *cx);
/** The index of the worker polling this task (0 on current_thread). */
int treadle_cx_worker(treadle_cx_t *cx);
/** Sets what the task's joiner will receive when this poll returns
 * TREADLE_READY: a status (0 or a TREADLE_E* code) and a value owned by the
 * joiner (or by the vtable's drop_output). Default: 0 and NULL. */
void treadle_cx_set_output(treadle_cx_t *cx, treadle_err_t status,
                           void *value);
/** The cooperative budget (docs/ARCHITECTURE.md "Coop budget"): a leaf future that is about to return
 * TREADLE_READY calls this first. It returns true and spends one unit, or,
 * once the task has had 128 ready leaves in this poll, returns false; the
 * leaf then returns TREADLE_PENDING and the task is polled again later. */
bool treadle_cx_poll_proceed(treadle_cx_t *cx);

/* ----------------------------------------------------------- join handles */

/** Polls for the task's completion from another task. READY stores the
 * task's status in *status (TREADLE_ECANCELED if it was aborted or the
 * runtime shut down) and its value in *value (the caller now owns it; value
 * may be NULL to let drop_output free it). Once the output was taken, READY
 * again with TREADLE_EJOINED. A join handle is used by one thread at a
 * time. */
treadle_poll_t treadle_join_poll(treadle_join_t *j, treadle_cx_t *cx,
                                 treadle_err_t *status, void **value);
/** Blocks the calling thread until the task completes; returns its status
 * and stores its value as treadle_join_poll does. TREADLE_EINRUNTIME from a
 * runtime thread (it would block the tasks it waits for). */
treadle_err_t treadle_join_wait(treadle_join_t *j, void **value);
/** treadle_join_wait for at most `timeout_ns`: TREADLE_ETIMEDOUT (and
 * nothing taken) when the task has not completed by then. */
treadle_err_t treadle_join_wait_timeout(treadle_join_t *j, uint64_t timeout_ns,
                                        void **value);
/** Takes a completed task's output without waiting, from any thread (a
 * runtime's too): its status and value as treadle_join_wait returns them,
 * TREADLE_EAGAIN while it has not completed, TREADLE_EJOINED once taken. */
treadle_err_t treadle_join_try(treadle_join_t *j, void **value);
/** Cancels the task: not yet polled, it never runs; pending, it is dropped
 * at the scheduler's next look (its drop runs once) and its joiner sees
 * TREADLE_ECANCELED; running, it is dropped when this poll returns PENDING.
 * After completion it does nothing. Any thread. */
void treadle_join_abort(treadle_join_t *j);
/** True once the task has completed or been cancelled. */
bool treadle_join_is_finished(const treadle_join_t *j);
/** The task's id. */
uint64_t treadle_join_task_id(const treadle_join_t *j);
/** Releases the join handle (takes ownership). A running task goes on,
 * detached; a completed task's untaken output goes to drop_output. NULL is
 * ignored. */
void treadle_join_detach(treadle_join_t *j);

/* ----------------------------------------------------------------- sleep */

/** A sleep future, embedded in the caller's state (no allocation). Its
 * fields are private. Initialise it, poll it from a task, and drop it before
 * its memory goes away (a task's drop function is the usual place). */
typedef struct treadle_sleep_s {
  uint64_t opaque_[8];
} treadle_sleep_t;

/** Sleep for `duration_ns` from now (TREADLE_FOREVER: never). */
void treadle_sleep_init(treadle_sleep_t *s, uint64_t duration_ns);
/** Sleep until a treadle_now() deadline (TREADLE_FOREVER: never). */
void treadle_sleep_until_init(treadle_sleep_t *s, uint64_t deadline_ns);
/** READY once the deadline has passed (never early: deadlines round up to
 * the next 1 ms tick), with *err = 0; READY at once with *err =
 * TREADLE_ENOTIME on a runtime without enable_time, TREADLE_ESHUTDOWN after
 * its runtime shut down. A zero or past deadline is READY at once. */
treadle_poll_t treadle_sleep_poll(treadle_sleep_t *s, treadle_cx_t *cx,
                                  treadle_err_t *err);
/** Moves the deadline of a sleep: a registered timer moves with its waker
 * (or wakes its task now if the new deadline has passed). Any thread, but
 * not while the same sleep is being polled. */
void treadle_sleep_reset(treadle_sleep_t *s, uint64_t deadline_ns);
/** The deadline, as a treadle_now() value. */
uint64_t treadle_sleep_deadline(const treadle_sleep_t *s);
/** Cancels a registered timer and releases its waker. Any thread, even
 * while the driver fires it or its task polls it; idempotent; the sleep may
 * be re-initialised afterwards. */
void treadle_sleep_drop(treadle_sleep_t *s);

/** Wraps any poll function in a deadline (Tokio's timeout): polls
 * inner(cx, inner_state) first; READY with *err = 0 when it is ready, READY
 * with *err = TREADLE_ETIMEDOUT once `deadline` (a treadle_sleep_t the
 * caller initialised) has passed, or the deadline's own error. */
treadle_poll_t treadle_timeout_poll(treadle_sleep_t *deadline,
                                    treadle_cx_t *cx, treadle_poll_fn inner,
                                    void *inner_state, treadle_err_t *err);


/* --------------------------------------------------------------- sockets
 *
 * Three kinds of socket object, whatever the transport: a stream (a
 * connected byte stream: TCP or Unix), a listener (accepts streams: TCP
 * or Unix) and a datagram socket (UDP or Unix). The transport's functions
 * (treadle_tcp_*, treadle_udp_*, treadle_unix_*) make them and set their
 * options; reading, writing, accepting, sending and receiving are the same
 * functions for every transport (treadle_stream_*, treadle_listener_*,
 * treadle_dgram_*), so code over a stream (a protocol, a TLS layer) serves
 * TCP and Unix streams alike.
 *
 * Sockets are non-blocking and registered with the runtime's I/O driver
 * (epoll, edge-triggered). Leaf futures (accept, connect, read, write,
 * send, recv) are polled from a task: they hand the task's waker to the
 * driver and return TREADLE_PENDING until the socket is ready. Every one
 * needs a runtime built with enable_io (else TREADLE_ENOIO). A socket is
 * used by one reading and one writing task at a time; any thread may close
 * it. Closing wakes the tasks that wait on it, which then see
 * TREADLE_ECLOSED; the memory stays until _free. Writes never raise
 * SIGPIPE (EPIPE is returned instead). After the runtime shut down, waits
 * end with TREADLE_ESHUTDOWN. A socket belongs to the runtime it was made
 * on: a task of another runtime that polls it gets TREADLE_EFOREIGN at
 * once (that runtime's driver might never run to wake it); so do async
 * fds. Sockets are close-on-exec. A NULL object is TREADLE_EINVAL. */

typedef struct treadle_stream_s treadle_stream_t;
typedef struct treadle_listener_s treadle_listener_t;
typedef struct treadle_dgram_s treadle_dgram_t;

/* ---------------------------------------------------------------- streams */

/** Reads up to `len` bytes (one call moves at most 2 GiB - 4 KiB; longer
 * lengths are clamped): READY with *n > 0, or *n = 0 at end of stream (or
 * for len 0), with *err = 0; or an error (*n = 0): TREADLE_ECONNRESET,
 * TREADLE_ECLOSED, ... */
treadle_poll_t treadle_stream_read_poll(treadle_stream_t *s, treadle_cx_t *cx,
                                        void *buf, size_t len, size_t *n,
                                        treadle_err_t *err);
/** Writes some of `len` bytes: READY with *n > 0 written (the socket took
 * what it could), or an error (TREADLE_EPIPE, TREADLE_ECONNRESET, ...). */
treadle_poll_t treadle_stream_write_poll(treadle_stream_t *s,
                                         treadle_cx_t *cx, const void *buf,
                                         size_t len, size_t *n,
                                         treadle_err_t *err);
/** Writes all `len` bytes. *done counts what was written so far: set it to
 * 0 before the first poll and keep it between polls; READY when *done ==
 * len (*err = 0) or on error (*done says how much went out). */
treadle_poll_t treadle_stream_write_all_poll(treadle_stream_t *s,
                                             treadle_cx_t *cx, const void *buf,
                                             size_t len, size_t *done,
                                             treadle_err_t *err);
/** Gathers up to `iovcnt` buffers (at most IOV_MAX, together under 2 GiB)
 * in one system call: READY with *n bytes written, as
 * treadle_stream_write_poll. */
treadle_poll_t treadle_stream_writev_poll(treadle_stream_t *s,
                                          treadle_cx_t *cx,
                                          const struct iovec *iov, int iovcnt,
                                          size_t *n, treadle_err_t *err);
/** Shuts the write side down: the peer reads end of stream; reading goes
 * on. */
treadle_err_t treadle_stream_shutdown(treadle_stream_t *s);
/** This end's address: IPv4 or IPv6 for TCP; for Unix, the path or name it
 * was bound to, or an unnamed address (see treadle_sockaddr_unix_path). */
treadle_err_t treadle_stream_local_addr(treadle_stream_t *s,
                                        struct sockaddr_storage *addr);
/** The other end's address, as treadle_stream_local_addr. */
treadle_err_t treadle_stream_peer_addr(treadle_stream_t *s,
                                       struct sockaddr_storage *addr);
/** Closes the socket and wakes its waiters (idempotent, any thread). */
void treadle_stream_close(treadle_stream_t *s);
/** Closes (if needed) and frees (takes ownership; NULL ignored). No task
 * may be polling it. */
void treadle_stream_free(treadle_stream_t *s);

/* -------------------------------------------------------------- listeners */

/** READY with a new stream in *out and *err = 0 (and the peer's address in
 * *peer when peer is not NULL), or with *out = NULL and an error: -errno,
 * TREADLE_ECLOSED. Accepted sockets are non-blocking and close-on-exec.
 * When the process is out of file descriptors (EMFILE, ENFILE) the
 * listener does not fail or spin: it retries with a growing pause (1 ms
 * up to 128 ms) and serves again once descriptors free up. */
treadle_poll_t treadle_listener_accept_poll(treadle_listener_t *l,
                                            treadle_cx_t *cx,
                                            treadle_stream_t **out,
                                            struct sockaddr_storage *peer,
                                            treadle_err_t *err);
/** The address the listener is bound to (a TCP port filled in, a Unix path
 * or name). */
treadle_err_t treadle_listener_addr(treadle_listener_t *l,
                                    struct sockaddr_storage *addr);
/** How many times accept ran out of file descriptors and backed off. */
uint64_t treadle_listener_fd_exhaustions(treadle_listener_t *l);
/** Closes the socket and wakes a task waiting in accept (idempotent, any
 * thread). A Unix listener bound to a path removes it first (see "Unix
 * sockets"). */
void treadle_listener_close(treadle_listener_t *l);
/** Closes (if needed) and frees (takes ownership; NULL ignored). No task
 * may be polling it. */
void treadle_listener_free(treadle_listener_t *l);

/* -------------------------------------------------------------------- TCP */

/** A TCP stream is a stream, a TCP listener a listener: these names are
 * the same types, kept for the programs written with them. */
typedef treadle_stream_t treadle_tcp_stream_t;
typedef treadle_listener_t treadle_tcp_listener_t;

/** Options for treadle_tcp_bind. Start from TREADLE_TCP_BIND_OPTS_INIT. */
typedef struct treadle_tcp_bind_opts_s {
  int backlog;     /**< listen() backlog, 1..65535 (default 1024) */
  bool reuse_port; /**< SO_REUSEPORT, so several listeners share the port */
} treadle_tcp_bind_opts_t;
#define TREADLE_TCP_BIND_OPTS_INIT {1024, false}

/** Binds a listener to `host` (a numeric IPv4 or IPv6 address, "localhost",
 * or NULL/"" for every IPv4 address) and `port` (0: the system picks one;
 * see treadle_listener_addr). SO_REUSEADDR is on. opts may be NULL.
 * Any thread. Errors: TREADLE_EINVAL (NULL handle or out, a host that is
 * not an address, a bad backlog), TREADLE_ENOIO, TREADLE_ESHUTDOWN,
 * TREADLE_EADDRINUSE and other -errno. */
treadle_err_t treadle_tcp_bind(treadle_handle_t *h, const char *host,
                               int port, const treadle_tcp_bind_opts_t *opts,
                               treadle_tcp_listener_t **out);

/* ------------------------------------------------------------ host names */

/** A host name lookup future (Tokio's lookup_host), embedded in the
 * caller's state. Fields are private. getaddrinfo runs on the blocking
 * pool, so a slow resolver never blocks a worker; a numeric address is
 * the result at once. */
typedef struct treadle_lookup_s {
  uint64_t opaque_[6];
} treadle_lookup_t;

/** The addresses a lookup found (library-allocated; free with
 * treadle_addrs_free). */
typedef struct treadle_addrs_s treadle_addrs_t;

/** Prepares a lookup of `host` (a name, or a numeric IPv4 or IPv6 address,
 * "[::1]" too) for `port` (0..65535, written into every address). Errors:
 * TREADLE_EINVAL (NULL, an empty host, a bad port), TREADLE_ENOMEM; the
 * future then need not be dropped. Any thread. */
treadle_err_t treadle_lookup_host_init(treadle_lookup_t *lk,
                                       treadle_handle_t *h, const char *host,
                                       int port);
/** READY with the IPv4 and IPv6 addresses in the resolver's order, without
 * repeats, in *out (the caller's) and *err = 0; or *out = NULL and
 * TREADLE_ENOHOST (no such host), TREADLE_ENOMEM, TREADLE_ESHUTDOWN, or
 * -errno. READY once: poll it no more after. */
treadle_poll_t treadle_lookup_host_poll(treadle_lookup_t *lk, treadle_cx_t *cx,
                                        treadle_addrs_t **out,
                                        treadle_err_t *err);
/** Cancels a lookup in flight (its result, when it comes, is freed) and
 * releases the future; idempotent, any thread. */
void treadle_lookup_host_drop(treadle_lookup_t *lk);
/** How many addresses (0 for NULL). */
size_t treadle_addrs_count(const treadle_addrs_t *a);
/** The i-th address, or NULL past the last. */
const struct sockaddr_storage *treadle_addrs_get(const treadle_addrs_t *a,
                                                 size_t i);
/** Frees the list (NULL ignored). */
void treadle_addrs_free(treadle_addrs_t *a);

/** A connect future, embedded in the caller's state (no allocation of its
 * own beyond the lookup of its host). Fields are private. */
typedef struct treadle_tcp_connect_s {
  uint64_t opaque_[12];
} treadle_tcp_connect_t;

/** Prepares a connection to `host` (an address, or a name resolved with
 * treadle_lookup_host) and `port` (1..65535). Errors: TREADLE_EINVAL,
 * TREADLE_ENOIO, TREADLE_ENOMEM; the future then need not be dropped. */
treadle_err_t treadle_tcp_connect_init(treadle_tcp_connect_t *c,
                                       treadle_handle_t *h, const char *host,
                                       int port);
/** READY with the connected stream in *out and *err = 0, or *out = NULL and
 * the error of the last address tried (TREADLE_ECONNREFUSED, ...), or a
 * resolver failure (TREADLE_ENOHOST: no such host). Addresses are tried in
 * the resolver's order. */
treadle_poll_t treadle_tcp_connect_poll(treadle_tcp_connect_t *c,
                                        treadle_cx_t *cx,
                                        treadle_tcp_stream_t **out,
                                        treadle_err_t *err);
/** Releases what the future holds (a socket not yet handed out, the
 * resolver job); idempotent. Any thread. */
void treadle_tcp_connect_drop(treadle_tcp_connect_t *c);

/** TCP_NODELAY on or off (off, Nagle's algorithm, is the kernel's default
 * for the C API's streams; the Python and Lua bindings turn it on). On a
 * Unix stream: TREADLE_ENOTSUP. */
treadle_err_t treadle_tcp_set_nodelay(treadle_tcp_stream_t *s, bool on);
/** Whether TCP_NODELAY is on. */
treadle_err_t treadle_tcp_nodelay(treadle_tcp_stream_t *s, bool *on);

/* The TCP names the stream and listener functions had before every
 * transport shared them: each is the treadle_stream_ or treadle_listener_
 * function it names, so programs written with them build unchanged. */
#define treadle_tcp_read_poll treadle_stream_read_poll
#define treadle_tcp_write_poll treadle_stream_write_poll
#define treadle_tcp_write_all_poll treadle_stream_write_all_poll
#define treadle_tcp_writev_poll treadle_stream_writev_poll
#define treadle_tcp_shutdown treadle_stream_shutdown
#define treadle_tcp_local_addr treadle_stream_local_addr
#define treadle_tcp_peer_addr treadle_stream_peer_addr
#define treadle_tcp_stream_close treadle_stream_close
#define treadle_tcp_stream_free treadle_stream_free
#define treadle_tcp_accept_poll treadle_listener_accept_poll
#define treadle_tcp_listener_addr treadle_listener_addr
#define treadle_tcp_listener_fd_exhaustions treadle_listener_fd_exhaustions
#define treadle_tcp_listener_close treadle_listener_close
#define treadle_tcp_listener_free treadle_listener_free

/* -------------------------------------------------------------- datagrams
 *
 * A datagram socket (UDP or Unix) sends and receives whole messages. A
 * datagram is never split: a receive takes one datagram, and one longer
 * than the buffer is cut short and reported (TREADLE_EMSGSIZE with its
 * full length). Zero-length datagrams are datagrams. On a connected
 * socket, an error the network reports later (an ICMP "port unreachable"
 * for UDP) comes back once, from the next send or receive, as
 * TREADLE_ECONNREFUSED; a task waiting to receive is woken for it. */

/** One datagram of a batch (treadle_dgram_send_many_poll,
 * treadle_dgram_recv_many_poll). */
typedef struct treadle_dgram_msg_s {
  void *buf;   /**< send: the datagram; receive: room for it */
  size_t len;  /**< send: its length; receive: buf's size */
  size_t n;    /**< receive: the datagram's full length, which is more than
                  len when it was cut short (then only len bytes are in
                  buf); send: unused */
  bool truncated; /**< receive: n > len, the rest of it is lost */
  struct sockaddr_storage addr; /**< receive: the sender; send: where to, or
                                   ss_family AF_UNSPEC (zeroed) for the
                                   connected peer */
} treadle_dgram_msg_t;

/** The most datagrams one batch call moves; more are left to the next. */
#define TREADLE_DGRAM_BATCH_MAX 64

/** Sends one datagram of `len` bytes to the connected peer: READY with
 * *n = len and *err = 0, or an error: TREADLE_EDESTADDRREQ (not
 * connected), TREADLE_EMSGSIZE (too long for the socket: over 65507 bytes
 * for UDP on IPv4), TREADLE_ECONNREFUSED (an earlier datagram found nobody),
 * TREADLE_ECLOSED, ... */
treadle_poll_t treadle_dgram_send_poll(treadle_dgram_t *d, treadle_cx_t *cx,
                                       const void *buf, size_t len, size_t *n,
                                       treadle_err_t *err);
/** Receives one datagram into buf: READY with its length in *n and *err =
 * 0; or, when it was longer than len, *err = TREADLE_EMSGSIZE, its full
 * length in *n and its first len bytes in buf (the rest is lost); or
 * another error (*n = 0): TREADLE_ECONNREFUSED, TREADLE_ECLOSED, ... */
treadle_poll_t treadle_dgram_recv_poll(treadle_dgram_t *d, treadle_cx_t *cx,
                                       void *buf, size_t len, size_t *n,
                                       treadle_err_t *err);
/** treadle_dgram_send_poll to `to` (an address from treadle_sockaddr_parse,
 * treadle_sockaddr_unix, or a receive's sender). TREADLE_EINVAL for a NULL
 * or unnamed address; a UDP datagram to a port nobody listens on is sent
 * all the same (*err = 0). */
treadle_poll_t treadle_dgram_send_to_poll(treadle_dgram_t *d, treadle_cx_t *cx,
                                          const void *buf, size_t len,
                                          const struct sockaddr_storage *to,
                                          size_t *n, treadle_err_t *err);
/** treadle_dgram_recv_poll that also stores the sender's address in *from
 * (may be NULL); with TREADLE_EMSGSIZE too. */
treadle_poll_t treadle_dgram_recv_from_poll(treadle_dgram_t *d,
                                            treadle_cx_t *cx, void *buf,
                                            size_t len,
                                            struct sockaddr_storage *from,
                                            size_t *n, treadle_err_t *err);
/** Sends up to `count` datagrams (at most TREADLE_DGRAM_BATCH_MAX) in one
 * system call (sendmmsg): READY with *sent >= 1, the first *sent of msgs
 * went out (send the rest in another call), and *err = 0; or an error for
 * msgs[0], as treadle_dgram_send_to_poll (*sent = 0). TREADLE_EINVAL for
 * count 0 or a bad address. */
treadle_poll_t treadle_dgram_send_many_poll(treadle_dgram_t *d,
                                            treadle_cx_t *cx,
                                            const treadle_dgram_msg_t *msgs,
                                            size_t count, size_t *sent,
                                            treadle_err_t *err);
/** Receives up to `count` datagrams (at most TREADLE_DGRAM_BATCH_MAX) in
 * one system call (recvmmsg), as many as are queued: READY with *received
 * >= 1 and, for each of the first *received of msgs, its length, whether
 * it was cut short and its sender; or an error (*received = 0), as
 * treadle_dgram_recv_poll. An error met after the first datagram comes
 * from the next call. TREADLE_EINVAL for count 0. */
treadle_poll_t treadle_dgram_recv_many_poll(treadle_dgram_t *d,
                                            treadle_cx_t *cx,
                                            treadle_dgram_msg_t *msgs,
                                            size_t count, size_t *received,
                                            treadle_err_t *err);
/** The address the socket is bound to (a UDP port filled in). */
treadle_err_t treadle_dgram_local_addr(treadle_dgram_t *d,
                                       struct sockaddr_storage *addr);
/** The connected peer's address; TREADLE_ENOTCONN when not connected. */
treadle_err_t treadle_dgram_peer_addr(treadle_dgram_t *d,
                                      struct sockaddr_storage *addr);
/** Closes the socket and wakes its waiters (idempotent, any thread); a
 * Unix socket bound to a path removes it first. */
void treadle_dgram_close(treadle_dgram_t *d);
/** Closes (if needed) and frees (takes ownership; NULL ignored). No task
 * may be polling it. */
void treadle_dgram_free(treadle_dgram_t *d);

/* -------------------------------------------------------------------- UDP */

/** Options for treadle_udp_bind. Start from TREADLE_UDP_BIND_OPTS_INIT. */
typedef struct treadle_udp_bind_opts_s {
  bool reuse_addr; /**< SO_REUSEADDR (off by default, as Tokio's) */
  bool reuse_port; /**< SO_REUSEPORT: several sockets share the port and
                      the kernel spreads the datagrams over them */
} treadle_udp_bind_opts_t;
#define TREADLE_UDP_BIND_OPTS_INIT {false, false}

/** A UDP socket bound to `host` (a numeric IPv4 or IPv6 address,
 * "localhost", or NULL/"" for every IPv4 address; an IPv6 socket is IPv6
 * only) and `port` (0: the system picks one, see treadle_dgram_local_addr).
 * opts may be NULL. Any thread. Errors: TREADLE_EINVAL (NULL handle or
 * out, a host that is not an address, a port outside 0..65535),
 * TREADLE_ENOIO, TREADLE_ESHUTDOWN, TREADLE_EADDRINUSE,
 * TREADLE_EADDRNOTAVAIL (an address this machine does not have), ... */
treadle_err_t treadle_udp_bind(treadle_handle_t *h, const char *host, int port,
                               const treadle_udp_bind_opts_t *opts,
                               treadle_dgram_t **out);
/** Connects the socket to `host` (a numeric address or "localhost": names
 * are not resolved here yet; resolve them first) and `port` (1..65535):
 * from then on it receives only from there, treadle_dgram_send_poll sends
 * there, and an ICMP error for what it sent comes back as
 * TREADLE_ECONNREFUSED. Connecting again moves it. No waiting: UDP has no
 * handshake. TREADLE_ENOTSUP on a Unix socket. */
treadle_err_t treadle_udp_connect(treadle_dgram_t *d, const char *host,
                                  int port);
/** SO_BROADCAST: may send to a broadcast address (off by default). */
treadle_err_t treadle_udp_set_broadcast(treadle_dgram_t *d, bool on);
/** Whether SO_BROADCAST is on. */
treadle_err_t treadle_udp_broadcast(treadle_dgram_t *d, bool *on);
/** The unicast TTL (IPv6: hop limit), 1..255. */
treadle_err_t treadle_udp_set_ttl(treadle_dgram_t *d, unsigned ttl);
/** The unicast TTL (IPv6: hop limit). */
treadle_err_t treadle_udp_ttl(treadle_dgram_t *d, unsigned *ttl);
/** The TTL (IPv6: hop limit) of multicast datagrams, 0..255 (default 1:
 * the local network; 0: this host only). */
treadle_err_t treadle_udp_set_multicast_ttl(treadle_dgram_t *d, unsigned ttl);
/** The multicast TTL (IPv6: hop limit). */
treadle_err_t treadle_udp_multicast_ttl(treadle_dgram_t *d, unsigned *ttl);
/** Whether multicast datagrams this host sends come back to its own
 * members (IP_MULTICAST_LOOP, IPV6_MULTICAST_LOOP; on by default). */
treadle_err_t treadle_udp_set_multicast_loop(treadle_dgram_t *d, bool on);
/** Whether multicast loopback is on. */
treadle_err_t treadle_udp_multicast_loop(treadle_dgram_t *d, bool *on);
/** Joins the multicast group `group` (a numeric address of the socket's
 * family: 224.0.0.0/4, ff00::/8) on the interface of index `ifindex`
 * (if_nametoindex; 0: the system's choice): the socket, bound to the
 * group's port, then receives its datagrams, and only the groups it joined
 * itself (IP_MULTICAST_ALL is turned off: Linux would otherwise deliver
 * every group that any socket of the host joined). Errors: TREADLE_EINVAL (not a
 * multicast address, or of the other family), TREADLE_EADDRINUSE (joined
 * already), TREADLE_ENODEV (no such interface), ... */
treadle_err_t treadle_udp_join_multicast(treadle_dgram_t *d, const char *group,
                                         unsigned ifindex);
/** Leaves a group joined with treadle_udp_join_multicast (the same group
 * and ifindex); TREADLE_EADDRNOTAVAIL when not a member. */
treadle_err_t treadle_udp_leave_multicast(treadle_dgram_t *d,
                                          const char *group, unsigned ifindex);

/* ------------------------------------------------------------------- Unix
 *
 * Unix domain sockets (Linux): streams and listeners, datagram sockets,
 * pairs of connected sockets, the peer's credentials, and passing file
 * descriptors.
 *
 * Names. A path names a file ("/run/app.sock", "rel/app.sock"): at most
 * TREADLE_UNIX_PATH_MAX (107) bytes. A leading '@' names a socket in
 * Linux's abstract namespace instead: "@app" is the abstract name "app"
 * (on the wire, sun_path is '\0' followed by "app", and the address's
 * length ends the name, as `ss -x` and systemd show it). An abstract name
 * is at most 107 bytes after the '@', has no file (nothing to remove, no
 * permissions), is freed when its last socket closes, and belongs to one
 * socket type (a stream socket and a datagram socket may each hold
 * "@app"). A path that
 * starts with '@' is written "./@name". Names are text: an abstract name
 * padded with NUL bytes by another program is not reachable by name.
 * Errors for a name: TREADLE_EINVAL (NULL, "", "@"), TREADLE_ENAMETOOLONG
 * (over 107 bytes), and the file system's (TREADLE_ENOENT for a directory
 * that does not exist, TREADLE_EACCES).
 *
 * Binding a path: TREADLE_EADDRINUSE when a live socket has it (or a file
 * that is not a socket is there: it is never removed). A socket file that
 * nobody serves any more (a connect to it answers ECONNREFUSED: its
 * program exited without removing it) is stale: bind removes it and binds
 * over it. The check connects once, so a live listener sees a connection
 * that closes at once.
 *
 * Closing a listener or datagram socket bound to a path removes the path
 * (as Go does, and unlike libuv and Tokio, which leave the file behind),
 * before closing the socket, and only if the file there is still the one
 * its bind made: a file someone put in its place since stays. A forked
 * child that closes its copy of the parent's socket leaves the path to
 * the parent. Abstract names need none of this. */

/** The longest path or abstract name, in bytes (sun_path less its NUL). */
#define TREADLE_UNIX_PATH_MAX 107
/** The most file descriptors one message carries (the kernel's
 * SCM_MAX_FD). */
#define TREADLE_UNIX_MAX_FDS 253

/** Options for treadle_unix_bind. Start from TREADLE_UNIX_BIND_OPTS_INIT. */
typedef struct treadle_unix_bind_opts_s {
  int backlog; /**< listen() backlog, 1..65535 (default 1024) */
} treadle_unix_bind_opts_t;
#define TREADLE_UNIX_BIND_OPTS_INIT {1024}

/** A Unix stream listener on `path` (a path or "@name", see above). opts
 * may be NULL. Any thread. Errors: those of a name, TREADLE_EADDRINUSE,
 * TREADLE_EINVAL (NULL handle or out, a bad backlog), TREADLE_ENOIO,
 * TREADLE_ESHUTDOWN, ... */
treadle_err_t treadle_unix_bind(treadle_handle_t *h, const char *path,
                                const treadle_unix_bind_opts_t *opts,
                                treadle_listener_t **out);
/** A Unix stream connected to the listener at `path`. A Unix connect does
 * not wait: the connection is queued on the listener at once. Errors:
 * those of a name, TREADLE_ENOENT (no such file), TREADLE_ECONNREFUSED
 * (nobody listens there), TREADLE_EAGAIN (the listener's backlog is full:
 * try again later), TREADLE_EPROTOTYPE (a datagram socket has that path),
 * ... */
treadle_err_t treadle_unix_connect(treadle_handle_t *h, const char *path,
                                   treadle_stream_t **out);
/** Two Unix streams connected to each other (socketpair). */
treadle_err_t treadle_unix_stream_pair(treadle_handle_t *h,
                                       treadle_stream_t **a,
                                       treadle_stream_t **b);

/** A Unix datagram socket bound to `path`: others send to it there. Errors
 * as treadle_unix_bind. */
treadle_err_t treadle_unix_dgram_bind(treadle_handle_t *h, const char *path,
                                      treadle_dgram_t **out);
/** A Unix datagram socket bound to nothing: it can send (to a path, or to
 * its peer once connected) but nobody can send to it by name. */
treadle_err_t treadle_unix_dgram_unbound(treadle_handle_t *h,
                                         treadle_dgram_t **out);
/** Connects a Unix datagram socket to the one bound at `path`: it then
 * sends there with treadle_dgram_send_poll and receives only from there.
 * Errors: those of a name, TREADLE_ENOENT, TREADLE_ECONNREFUSED (nobody
 * bound there), TREADLE_EPROTOTYPE (a stream socket is there),
 * TREADLE_ENOTSUP on a UDP socket. (Abstract names are per socket type:
 * a stream socket's name is nobody's to a datagram socket, ECONNREFUSED.)
 */
treadle_err_t treadle_unix_dgram_connect(treadle_dgram_t *d, const char *path);
/** Two Unix datagram sockets connected to each other (socketpair). */
treadle_err_t treadle_unix_dgram_pair(treadle_handle_t *h, treadle_dgram_t **a,
                                      treadle_dgram_t **b);

/** The credentials of the process at the other end of a Unix stream, as
 * they were when it connected (or made the pair): SO_PEERCRED. */
typedef struct treadle_unix_cred_s {
  pid_t pid;
  uid_t uid;
  gid_t gid;
} treadle_unix_cred_t;

/** Fills *cred; TREADLE_ENOTSUP for a TCP stream. */
treadle_err_t treadle_unix_peer_cred(treadle_stream_t *s,
                                     treadle_unix_cred_t *cred);

/** Writes some of `len` bytes (at least 1), as treadle_stream_write_poll,
 * with copies of the file descriptors fds[0..nfds) (1..TREADLE_UNIX_MAX_FDS)
 * attached to the first byte (SCM_RIGHTS). READY with *n > 0 means the
 * descriptors went too (the caller keeps its own; write the rest of the
 * bytes with treadle_stream_write_poll). Errors: TREADLE_EINVAL (len 0, nfds
 * out of range, NULL pointers), TREADLE_EBADF (one is not open),
 * TREADLE_ENOTSUP (a TCP stream), those of a write. */
treadle_poll_t treadle_unix_send_fds_poll(treadle_stream_t *s,
                                          treadle_cx_t *cx, const void *buf,
                                          size_t len, const int *fds,
                                          size_t nfds, size_t *n,
                                          treadle_err_t *err);
/** Reads as treadle_stream_read_poll and takes the file descriptors that
 * came with those bytes: *nfds is fds' room on the way in (0 to
 * TREADLE_UNIX_MAX_FDS) and how many arrived on the way out (it is left
 * alone while PENDING); they are the caller's, close-on-exec. When more
 * arrived than fit, all that did arrive are closed (none leaks), *nfds =
 * 0 and *err = TREADLE_EMSGSIZE; the *n bytes read are in buf all the
 * same. A read (this one or treadle_stream_read_poll) ends right after
 * the bytes that carried descriptors, so each read takes at most one
 * sender's batch of them. Descriptors that come to a plain
 * treadle_stream_read_poll are closed by the kernel: on a stream that may
 * carry them, read with this function. */
treadle_poll_t treadle_unix_recv_fds_poll(treadle_stream_t *s,
                                          treadle_cx_t *cx, void *buf,
                                          size_t len, int *fds, size_t *nfds,
                                          size_t *n, treadle_err_t *err);

/* -------------------------------------------------------------------- TLS
 *
 * TLS (OpenSSL 3) over any stream, TCP or Unix. A configuration
 * (treadle_tls_config_t) says which side it serves, what to trust, which
 * certificate to show, the ALPN protocols and the lowest protocol
 * version; it is reference-counted and shared by every TLS stream made
 * from it (one OpenSSL SSL_CTX), and it is frozen once the first of them
 * is made: its setters then answer TREADLE_EBUSY. Set it up from one
 * thread, then share it with any.
 *
 * A TLS stream (treadle_tls_t) takes over a connected treadle_stream_t.
 * Its leaves follow the stream's rules: one reading task and one writing
 * task at a time (two tasks on two workers, or one task doing both),
 * closing from any thread wakes them with TREADLE_ECLOSED, a task of
 * another runtime gets TREADLE_EFOREIGN, each leaf spends the coop budget.
 * The encryption runs on the thread that polls the leaf, and every system
 * call is one of the stream's own leaves. Run treadle_tls_handshake_poll
 * to completion first; reads and writes before it answer
 * TREADLE_ENOTCONN.
 *
 * A client verifies the server by default: the certificate must chain to
 * the system's trust store (or to the CA file or directory given with
 * treadle_tls_config_set_ca) and name the host given to
 * treadle_tls_client_new. A server asks for no client certificate unless
 * treadle_tls_config_set_verify turns that on. Renegotiation (TLS 1.2) is
 * refused.
 *
 * Errors, each with a text from treadle_tls_error_message:
 * TREADLE_ETLSVERIFY (the peer's certificate is not trusted: self-signed,
 * expired, issued for another name, by an unknown issuer),
 * TREADLE_ETLSHANDSHAKE (the handshake failed otherwise: no common
 * version, cipher suite or ALPN protocol; an alert from the peer, as when
 * it refused our certificate; a peer that does not speak TLS),
 * TREADLE_ETLS (a TLS error after the handshake, such as a corrupt
 * record), TREADLE_ECONNRESET (the peer closed the connection during the
 * handshake, or after it without close_notify, as a truncation attack
 * would), TREADLE_ENOMEM (no memory for a record: "out of memory").
 * These are final: every later call on the TLS stream answers the same.
 * Errors of the stream (TREADLE_EPIPE, TREADLE_ECLOSED, ...) come through
 * as they are.
 *
 * Built without OpenSSL, treadle still declares all of this, and every
 * function answers TREADLE_ENOTLS (the constructors take nothing). */

/** A TLS configuration, shared by many TLS streams. */
typedef struct treadle_tls_config_s treadle_tls_config_t;
/** A TLS stream over a treadle_stream_t. */
typedef struct treadle_tls_s treadle_tls_t;

/** Which side of the handshake a configuration serves. */
typedef enum {
  TREADLE_TLS_CLIENT = 0, /**< connects: sends the server name, verifies */
  TREADLE_TLS_SERVER = 1  /**< accepts: shows a certificate */
} treadle_tls_role_t;

/** TLS 1.2, for treadle_tls_config_set_min_version and treadle_tls_version. */
#define TREADLE_TLS_VERSION_1_2 0x0303
/** TLS 1.3. */
#define TREADLE_TLS_VERSION_1_3 0x0304

/** A new configuration for `role`, with one reference: TLS 1.2 and up;
 * for a client, verification on against the system's trust store; for a
 * server, no client certificate asked for (and a certificate to set with
 * treadle_tls_config_set_cert before use). Errors: TREADLE_EINVAL,
 * TREADLE_ENOMEM, TREADLE_ENOTLS. */
treadle_err_t treadle_tls_config_new(treadle_tls_role_t role,
                                     treadle_tls_config_t **out);
/** Takes a reference (returns c). Any thread. */
treadle_tls_config_t *treadle_tls_config_ref(treadle_tls_config_t *c);
/** Drops a reference; the last one frees it (NULL is ignored). TLS streams
 * hold their own. Any thread. */
void treadle_tls_config_unref(treadle_tls_config_t *c);
/** Verification of the peer's certificate on or off. A client verifies by
 * default; turning it off (for tests, or a peer pinned some other way)
 * accepts any certificate: the result is still readable afterwards
 * (treadle_tls_verify_result). On a server, on means every client must
 * show a certificate that chains to the configured CAs. */
treadle_err_t treadle_tls_config_set_verify(treadle_tls_config_t *c, bool on);
/** Trusts the certificates in `file` (PEM, one or more) and/or in `dir`
 * (hashed names, as c_rehash makes them) instead of the system's store
 * (either may be NULL, not both). Errors: TREADLE_EINVAL, -errno for a
 * file or directory that cannot be read (TREADLE_ENOENT), TREADLE_ETLS
 * when `file` holds no certificate (treadle_tls_config_error_message). */
treadle_err_t treadle_tls_config_set_ca(treadle_tls_config_t *c,
                                        const char *file, const char *dir);
/** The certificate this side shows: `chain_file` (PEM: the certificate,
 * then its intermediates) and `key_file` (its private key, PEM,
 * unencrypted). Needed by a server; a client shows one only to a server
 * that asks. Errors: TREADLE_EINVAL, -errno for a file that cannot be
 * read (TREADLE_ENOENT), TREADLE_ETLS for a file that holds no certificate
 * or key, or a key that does not match the certificate
 * (treadle_tls_config_error_message says which); the configuration is
 * then unchanged. */
treadle_err_t treadle_tls_config_set_cert(treadle_tls_config_t *c,
                                          const char *chain_file,
                                          const char *key_file);
/** The ALPN protocols ("h2", "http/1.1", ...: 1 to 255 bytes each), most
 * preferred first; count 0 clears them. A client offers them; a server
 * picks the first of its own that the client offers, and refuses the
 * handshake when the client offers some and none of them matches (a
 * client that offers none is served without ALPN). Errors: TREADLE_EINVAL
 * (an empty or longer name, NULL), TREADLE_ENOMEM. */
treadle_err_t treadle_tls_config_set_alpn(treadle_tls_config_t *c,
                                          const char *const *protos,
                                          size_t count);
/** The lowest protocol version accepted: TREADLE_TLS_VERSION_1_2 (the
 * default) or TREADLE_TLS_VERSION_1_3; TREADLE_EINVAL for another. */
treadle_err_t treadle_tls_config_set_min_version(treadle_tls_config_t *c,
                                                 int version);
/** Why the last setter of `c` failed (OpenSSL's reason, or treadle's), or
 * "" (never NULL). Valid until the next setter call. */
const char *treadle_tls_config_error_message(const treadle_tls_config_t *c);

/** A client TLS stream over `s` (connected; TCP or Unix), which it takes
 * over on success (treadle_tls_free frees it; on failure it stays the
 * caller's). `server_name` is sent as SNI and checked against the
 * server's certificate (a numeric IPv4 or IPv6 address is checked against
 * the certificate's IP addresses and not sent); it may be NULL only with
 * verification off. Holds a reference to `c` and freezes it. Any thread.
 * Errors: TREADLE_EINVAL (NULL, a server configuration, a name over 255
 * bytes), TREADLE_ECLOSED (the stream is closed), TREADLE_ENOMEM,
 * TREADLE_ENOTLS. */
treadle_err_t treadle_tls_client_new(treadle_tls_config_t *c,
                                     treadle_stream_t *s,
                                     const char *server_name,
                                     treadle_tls_t **out);
/** A server TLS stream over `s` (an accepted stream), taken as
 * treadle_tls_client_new takes it. Errors as treadle_tls_client_new (a
 * client configuration is TREADLE_EINVAL). */
treadle_err_t treadle_tls_server_new(treadle_tls_config_t *c,
                                     treadle_stream_t *s, treadle_tls_t **out);
/** Runs the handshake: READY with *err = 0 once it is done (again at
 * once after that), or with an error (TREADLE_ETLSVERIFY,
 * TREADLE_ETLSHANDSHAKE, TREADLE_ECONNRESET, TREADLE_ENOMEM, errors of the
 * stream). One task polls it; no read or write may run meanwhile. */
treadle_poll_t treadle_tls_handshake_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                          treadle_err_t *err);
/** Reads up to `len` bytes of plaintext: READY with *n > 0, or *n = 0 at
 * the end of the stream (the peer's close_notify) or for len 0, with *err
 * = 0; or an error (*n = 0): TREADLE_ECONNRESET (closed without
 * close_notify), TREADLE_ETLS, TREADLE_ENOMEM, TREADLE_ENOTCONN (before
 * the handshake), the stream's. */
treadle_poll_t treadle_tls_read_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                     void *buf, size_t len, size_t *n,
                                     treadle_err_t *err);
/** Writes some of `len` bytes (up to 64 KiB a call): READY with *n > 0
 * once they are encrypted and handed to the socket, or an error
 * (TREADLE_EPIPE, also after treadle_tls_shutdown_poll; TREADLE_ENOTCONN
 * before the handshake; the stream's). After PENDING, poll again with the
 * same bytes: some of them may already be encrypted and on their way. */
treadle_poll_t treadle_tls_write_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                      const void *buf, size_t len, size_t *n,
                                      treadle_err_t *err);
/** Writes all `len` bytes, as treadle_stream_write_all_poll: *done counts
 * what went out (0 before the first poll); READY when *done == len or on
 * error. */
treadle_poll_t treadle_tls_write_all_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                          const void *buf, size_t len,
                                          size_t *done, treadle_err_t *err);
/** Closes the writing side: sends close_notify, then shuts the stream's
 * write side down, READY (*err = 0) once both went out. The peer reads
 * the end of the stream; reading here goes on until the peer's own
 * close_notify. A write side's call (not during a write). */
treadle_poll_t treadle_tls_shutdown_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                         treadle_err_t *err);
/** The ALPN protocol agreed on, or NULL (none, or before the handshake).
 * Valid as long as `t`. */
const char *treadle_tls_alpn(treadle_tls_t *t);
/** The protocol version agreed on (TREADLE_TLS_VERSION_1_2 or _1_3), or
 * TREADLE_ENOTCONN before the handshake (or after it failed),
 * TREADLE_EINVAL for NULL. */
int treadle_tls_version(treadle_tls_t *t);
/** On a client, the server name it was given; on a server after the
 * handshake, the name the client sent (SNI). NULL when there is none.
 * Valid as long as `t`. */
const char *treadle_tls_server_name(treadle_tls_t *t);
/** Writes the peer certificate's subject ("CN=localhost,O=Example", RFC
 * 2253) into buf (NUL-terminated, truncated to len) after the handshake.
 * Returns the length of the whole text (as snprintf; 0 when the peer
 * showed no certificate), TREADLE_ENOTCONN before the handshake (or after
 * it failed), TREADLE_EINVAL for NULL. */
int treadle_tls_peer_subject(treadle_tls_t *t, char *buf, size_t len);
/** The verification of the peer's certificate, once the handshake ended
 * (done or failed): 0 when it was trusted (or none was shown), else
 * OpenSSL's X509_V_ERR_ code (10: expired, 18: self-signed, 20: unknown
 * issuer, 62: another host name), even with verification off.
 * TREADLE_ENOTCONN before that, TREADLE_EINVAL for NULL. */
long treadle_tls_verify_result(treadle_tls_t *t);
/** Why the TLS stream failed (OpenSSL's reason, or treadle's: "certificate
 * verify failed: certificate has expired"), or "" while it has not
 * (never NULL). Valid as long as `t`. */
const char *treadle_tls_error_message(treadle_tls_t *t);
/** The stream underneath (borrowed: for its addresses, TCP_NODELAY, the
 * peer's credentials; reading or writing it would corrupt the TLS
 * stream). NULL for NULL. */
treadle_stream_t *treadle_tls_stream(treadle_tls_t *t);
/** A client's TLS session, kept to resume it on a later connection. */
typedef struct treadle_tls_session_s treadle_tls_session_t;
/** The session of client `t`, to resume on a later connection to the same
 * server (treadle_tls_set_session): that handshake is an abbreviated one,
 * with no certificate sent or verified again. Returns a new reference to
 * the connection's session holder (treadle_tls_session_free drops it), or
 * NULL for NULL, a server, or no memory. The holder keeps the newest
 * session the server gave this connection: in TLS 1.2 at the end of the
 * handshake; in TLS 1.3 in the tickets the server sends after it, which
 * the connection takes in with its reads (a holder taken right after the
 * handshake fills once the first read ran). It goes on taking newer ones
 * while the connection lives, and outlives it. A TLS 1.3 session serves
 * one resumption (RFC 8446 asks clients not to use a ticket twice, and
 * OpenSSL marks it spent): resume from the newest connection's holder.
 * Any thread. */
treadle_tls_session_t *treadle_tls_session(treadle_tls_t *t);
/** Drops a reference to a session holder (NULL ignored). Any thread. */
void treadle_tls_session_free(treadle_tls_session_t *s);
/** Offers the session in `s` in the handshake of client `t`, which has
 * not started. It is offered only when `s` holds a session that came from
 * a connection of the same configuration and server name as `t` (so that
 * resuming never skips a verification `t` would make); otherwise, and when
 * the server no longer knows it, a full handshake runs. Errors:
 * TREADLE_EINVAL (NULL, a server), TREADLE_EBUSY (the handshake started),
 * TREADLE_ENOMEM. */
treadle_err_t treadle_tls_set_session(treadle_tls_t *t,
                                      treadle_tls_session_t *s);
/** After the handshake, 1 when it resumed a session, 0 when it was a full
 * one (either side); TREADLE_ENOTCONN before it (or after it failed),
 * TREADLE_EINVAL for NULL. */
int treadle_tls_session_reused(treadle_tls_t *t);
/** Closes the stream underneath and wakes the TLS stream's waiters, which
 * see TREADLE_ECLOSED (idempotent, any thread). No close_notify is sent:
 * for a clean end, treadle_tls_shutdown_poll first. */
void treadle_tls_close(treadle_tls_t *t);
/** Closes (if needed) and frees the TLS stream and its stream (takes
 * ownership; NULL ignored). No task may be polling it. */
void treadle_tls_free(treadle_tls_t *t);

/* -------------------------------------------------------------- addresses */

/** Room for the host part of an address, NUL included. */
#define TREADLE_HOST_LEN 46 /* INET6_ADDRSTRLEN */
/** Writes the address's host ("1.2.3.4" or "::1") into host (of
 * TREADLE_HOST_LEN bytes); returns the port, or TREADLE_EINVAL for a NULL
 * argument or a family other than AF_INET/AF_INET6 (host is then ""). */
int treadle_sockaddr_host(const struct sockaddr_storage *addr,
                          char host[TREADLE_HOST_LEN]);
/** Writes "1.2.3.4:80" or "[::1]:80" into buf (NUL-terminated, truncated
 * to len); returns the port, or TREADLE_EINVAL for a family other than
 * AF_INET/AF_INET6. */
int treadle_sockaddr_format(const struct sockaddr_storage *addr, char *buf,
                            size_t len);
/** Makes an IPv4 or IPv6 address (for treadle_dgram_send_to_poll) from a
 * numeric host (or "localhost", or NULL/"" for 0.0.0.0) and a port,
 * 0..65535; TREADLE_EINVAL otherwise (names are not resolved here). */
treadle_err_t treadle_sockaddr_parse(const char *host, int port,
                                     struct sockaddr_storage *addr);
/** Makes a Unix address from a path or "@name" (see "Unix" above); errors
 * as for a name. */
treadle_err_t treadle_sockaddr_unix(const char *path,
                                    struct sockaddr_storage *addr);
/** Writes a Unix address as treadle takes it: "/path", "@name", or "" for
 * an unnamed socket (a client that never bound); NUL-terminated, truncated
 * to len. Returns the length of the whole text (as snprintf), or
 * TREADLE_EINVAL for another family or a NULL argument. */
int treadle_sockaddr_unix_path(const struct sockaddr_storage *addr, char *buf,
                               size_t len);

/* ------------------------------------------------------------ async fds
 *
 * Any file descriptor that epoll can watch (a pipe, a terminal, an
 * eventfd, a timerfd, inotify, a socket treadle does not wrap), registered
 * with the runtime's I/O driver, as tokio's AsyncFd. The fd must be
 * non-blocking. The rules of TCP streams hold: one reading and one writing
 * task at a time, close from any thread wakes them with TREADLE_ECLOSED,
 * waits end with TREADLE_ESHUTDOWN after the runtime shut down. Example:
 * examples/c/stdin_lines.c. */

typedef struct treadle_async_fd_s treadle_async_fd_t;

/** Readiness bits for treadle_async_fd_ready_poll. */
#define TREADLE_READABLE 0x01u
#define TREADLE_WRITABLE 0x02u
#define TREADLE_READ_CLOSED 0x04u  /**< the other end stopped writing */
#define TREADLE_WRITE_CLOSED 0x08u /**< the other end stopped reading */
#define TREADLE_FD_ERROR 0x10u     /**< EPOLLERR: a pending error */

/** What treadle_async_fd_ready_poll saw: `bits` (TREADLE_READABLE, ...)
 * and the event count that treadle_async_fd_clear_ready checks. */
typedef struct treadle_ready_s {
  unsigned bits;
  uint32_t tick;
} treadle_ready_t;

/** Registers `fd` with h's I/O driver and takes it over: from then on it
 * is closed by treadle_async_fd_close or _free (dup() it first to keep
 * one, or take it back with treadle_async_fd_detach). On failure the fd
 * stays open and the caller's. Any thread.
 * Errors: TREADLE_EINVAL (NULL handle or out, a negative fd, an fd
 * without O_NONBLOCK), TREADLE_ENOIO, TREADLE_ESHUTDOWN, TREADLE_ENOMEM,
 * -EPERM (epoll cannot watch it: a regular file or a directory), -EBADF,
 * -EEXIST (already registered with this runtime). */
treadle_err_t treadle_async_fd_new(treadle_handle_t *h, int fd,
                                   treadle_async_fd_t **out);
/** The registered fd, or -1 once closed (or for NULL). For system calls
 * made between treadle_async_fd_ready_poll and _clear_ready. */
int treadle_async_fd_fd(treadle_async_fd_t *a);
/** READY once one of `interest`'s bits (TREADLE_READABLE and/or
 * TREADLE_WRITABLE) is set, with *ready filled and *err = 0 (the other
 * bits: see treadle_ready_t); READY with TREADLE_ECLOSED,
 * TREADLE_ESHUTDOWN or TREADLE_EINVAL; else PENDING with the task's waker
 * stored. Readiness stays set until cleared: after a system call on the
 * fd answers EAGAIN, call treadle_async_fd_clear_ready. */
treadle_poll_t treadle_async_fd_ready_poll(treadle_async_fd_t *a,
                                           treadle_cx_t *cx, unsigned interest,
                                           treadle_ready_t *ready,
                                           treadle_err_t *err);
/** Clears `bits` of the readiness that `ready` saw, unless an event came
 * in since (then the next ready_poll is READY again: nothing is lost). */
void treadle_async_fd_clear_ready(treadle_async_fd_t *a,
                                  const treadle_ready_t *ready, unsigned bits);
/** read(2) of up to `len` bytes once readable: READY with *n > 0, *n = 0
 * at end of file (or for len 0) with *err = 0, or an error (-errno,
 * TREADLE_ECLOSED, ...). */
treadle_poll_t treadle_async_fd_read_poll(treadle_async_fd_t *a,
                                          treadle_cx_t *cx, void *buf,
                                          size_t len, size_t *n,
                                          treadle_err_t *err);
/** write(2) of some of `len` bytes once writable: READY with *n > 0, or
 * an error (TREADLE_EPIPE, ...). SIGPIPE is not blocked here: on a pipe
 * whose reader is gone, block or ignore it in the program first. */
treadle_poll_t treadle_async_fd_write_poll(treadle_async_fd_t *a,
                                           treadle_cx_t *cx, const void *buf,
                                           size_t len, size_t *n,
                                           treadle_err_t *err);
/** Wakes the waiting tasks and closes the fd once no call uses it
 * (idempotent, any thread). */
void treadle_async_fd_close(treadle_async_fd_t *a);
/** As treadle_async_fd_close, but the fd stays open and is the caller's
 * again (tokio's AsyncFd::into_inner): wakes the waiting tasks and returns
 * the fd once the I/O driver no longer watches it (a system call in
 * progress on another thread is waited for), so that the caller may close
 * it at once. -1 for NULL or an async fd closed or detached before. Not
 * concurrently with _close or another _detach of `a`. Free `a` with
 * treadle_async_fd_free as usual. Any thread. */
int treadle_async_fd_detach(treadle_async_fd_t *a);
/** Closes (if needed) and frees (NULL ignored). No task may be polling it. */
void treadle_async_fd_free(treadle_async_fd_t *a);

/* --------------------------------------------------------------- signals
 *
 * A task waits for a Unix signal (SIGINT, SIGTERM, SIGHUP, SIGUSR1, ...).
 * The first listener for a signal in the process installs treadle's handler
 * (SA_RESTART); the handler that was there before still runs when it was a
 * function, and it is put back when the last runtime listening for that
 * signal shuts down. If the program installs a handler of its own later,
 * the next treadle_signal_init for that signal puts treadle's back in front
 * of it (chaining to it). Needs enable_io. */

/** A signal listener, embedded in the caller's state. Fields private. */
typedef struct treadle_signal_s {
  uint64_t opaque_[6];
} treadle_signal_t;

/** Starts listening for `signum` on the runtime of `h`: deliveries from now
 * on count. Errors: TREADLE_EINVAL (no such signal, or one that cannot be
 * caught or must not be: SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGILL,
 * SIGFPE), TREADLE_ENOIO, TREADLE_ESHUTDOWN, TREADLE_EBUSY (128 runtimes
 * listen for signals already); the listener then need not be
 * dropped. It may be copied (into a task's state) before its first poll,
 * not after. */
treadle_err_t treadle_signal_init(treadle_signal_t *s, treadle_handle_t *h,
                                  int signum);
/** READY (*err = 0) once the signal was delivered since init or since the
 * last READY (deliveries that arrive together count once, as the kernel
 * merges them); every listener of the signal sees each delivery. *err =
 * TREADLE_ESHUTDOWN once the runtime shut down. */
treadle_poll_t treadle_signal_poll(treadle_signal_t *s, treadle_cx_t *cx,
                                   treadle_err_t *err);
/** Stops listening (idempotent; any thread). */
void treadle_signal_drop(treadle_signal_t *s);
/** 0 if a task may wait for `signum` (what treadle_signal_init accepts),
 * else TREADLE_EINVAL. */
treadle_err_t treadle_signal_check(int signum);
/** "SIGTERM" for SIGTERM: the names of the standard signals 1..31, or NULL
 * for another number. */
const char *treadle_signal_name(int signum);
/** The number of a signal a task may wait for, named "SIGTERM" or "TERM";
 * TREADLE_EINVAL for any other name (and for SIGKILL, SIGSEGV, ...). */
int treadle_signal_from_name(const char *name);


/* ------------------------------------------------------ child processes
 *
 * Tokio's tokio::process for C: a command builder, spawn, and the child's
 * exit as a leaf future. Spawning uses posix_spawn (a vfork-like clone
 * that returns once the program was executed, so a missing program or a
 * bad working directory is an error of spawn itself), and never blocks
 * the calling thread for longer than that. A piped stdin, stdout or stderr
 * is an async fd of the runtime (see "async fds": read and write it with
 * treadle_async_fd_read_poll and _write_poll). The exit is waited for
 * through a pidfd registered with the I/O driver (Linux 5.3 and later),
 * else through the runtime's SIGCHLD listener. Every fd treadle opens is
 * close-on-exec, so a child gets only its stdin, stdout and stderr (and
 * whatever fds the program itself left inheritable).
 *
 * No zombie is left behind: a child freed before it was waited for is
 * reaped by its runtime, or, once that has shut down, by a process-wide
 * reaper thread that exists only while such children run. Without
 * kill-on-drop a freed child runs on. Needs enable_io. After fork(), a
 * runtime's children and commands spawned on a runtime built before it
 * answer TREADLE_EFORKED in the forked process. Example:
 * examples/c/process_pipe.c. */

/** What a command does with one of the child's stdin, stdout, stderr. */
typedef enum {
  TREADLE_STDIO_INHERIT = 0, /**< the parent's (the default) */
  TREADLE_STDIO_NULL = 1,    /**< /dev/null */
  TREADLE_STDIO_PIPE = 2,    /**< a pipe to the parent: see
                                  treadle_child_take_stdin() */
  TREADLE_STDIO_STDOUT = 3   /**< stderr only: wherever the child's stdout
                                  goes, its pipe included (a shell's 2>&1) */
} treadle_stdio_t;

typedef struct treadle_command_s treadle_command_t;
typedef struct treadle_child_s treadle_child_t;

/** How a child ended. */
typedef struct treadle_exit_status_s {
  bool exited;      /**< true: it exited with `code`; false: `signal`
                         killed it */
  int code;         /**< the exit code 0..255, or -1 when killed */
  int signal;       /**< the signal that killed it, or 0 when it exited */
  bool core_dumped; /**< killed, and the kernel dumped core */
} treadle_exit_status_t;

/** A command that runs `program` (copied): a path when it contains a
 * '/', else a name looked up in PATH (the PATH the child will have: the
 * parent's, unless this command sets, removes or clears it; without any,
 * "/bin:/usr/bin"). argv[0] is `program`; the environment, working
 * directory and stdio are the parent's until changed. A command may spawn
 * any number of children. Errors: TREADLE_EINVAL (NULL or empty program,
 * NULL out), TREADLE_ENOMEM. */
treadle_err_t treadle_command_new(const char *program,
                                  treadle_command_t **out);
/** Appends one argument (copied; may be empty). TREADLE_EINVAL for a NULL
 * command or argument, TREADLE_ENOMEM. */
treadle_err_t treadle_command_arg(treadle_command_t *cmd, const char *arg);
/** Sets the child's environment variable `key` to `value` (both copied;
 * a later call for the same key wins). TREADLE_EINVAL for a NULL
 * argument, an empty key or a key containing '='; TREADLE_ENOMEM. */
treadle_err_t treadle_command_env(treadle_command_t *cmd, const char *key,
                                  const char *value);
/** Removes `key` from the child's environment (TREADLE_EINVAL as for
 * treadle_command_env). */
treadle_err_t treadle_command_env_remove(treadle_command_t *cmd,
                                         const char *key);
/** The child starts from an empty environment instead of the parent's,
 * and the variables set so far are forgotten; later _env calls add to
 * it. */
treadle_err_t treadle_command_env_clear(treadle_command_t *cmd);
/** The child's working directory (copied; non-empty). A relative program
 * path is then taken relative to it, as exec would. */
treadle_err_t treadle_command_cwd(treadle_command_t *cmd, const char *dir);
/** What the child's stdin is: TREADLE_STDIO_INHERIT, _NULL or _PIPE
 * (else TREADLE_EINVAL). */
treadle_err_t treadle_command_stdin(treadle_command_t *cmd,
                                    treadle_stdio_t how);
/** What the child's stdout is (as treadle_command_stdin). */
treadle_err_t treadle_command_stdout(treadle_command_t *cmd,
                                     treadle_stdio_t how);
/** What the child's stderr is (as treadle_command_stdin), or
 * TREADLE_STDIO_STDOUT: the same file as its stdout. */
treadle_err_t treadle_command_stderr(treadle_command_t *cmd,
                                     treadle_stdio_t how);
/** With `on`, treadle_child_free sends SIGKILL to a child that is still
 * running (Tokio's kill_on_drop); it is reaped either way. Default off:
 * a freed child runs on. */
treadle_err_t treadle_command_kill_on_drop(treadle_command_t *cmd, bool on);
/** Frees the command (NULL ignored); children it spawned live on. */
void treadle_command_free(treadle_command_t *cmd);

/** Starts the command's program as a child of this process, tied to the
 * runtime of `h` (borrowed), from any thread. The calling thread waits
 * only until the program was executed (posix_spawn). The child's signal
 * mask is empty and SIGPIPE and SIGXFSZ are back to their defaults
 * whatever the parent ignores. Once the process exists, spawn succeeds.
 * Errors, with no process left behind: TREADLE_EINVAL (NULL argument),
 * TREADLE_EFORKED, TREADLE_ENOIO, TREADLE_ESHUTDOWN, TREADLE_ENOMEM,
 * TREADLE_ENOENT (no such program, or no such working directory),
 * TREADLE_EACCES, -ENOTDIR, -ENOEXEC, TREADLE_EMFILE (no fds for the
 * pipes) and other -errno of exec. The caller owns *out: free it with
 * treadle_child_free. The environment is read from `environ` during the
 * call: do not setenv() in another thread meanwhile. */
treadle_err_t treadle_command_spawn(const treadle_command_t *cmd,
                                    treadle_handle_t *h,
                                    treadle_child_t **out);

/** The child's process id (-1 for NULL). Once the child was waited for,
 * the id may name another process. */
pid_t treadle_child_pid(const treadle_child_t *c);
/** Hands the parent's end of a piped stdin to the caller, who owns it from
 * now on (write with treadle_async_fd_write_poll; treadle_async_fd_close
 * gives the child end of file; free it with treadle_async_fd_free). NULL
 * when stdin was not a pipe or was taken already. */
treadle_async_fd_t *treadle_child_take_stdin(treadle_child_t *c);
/** The parent's end of a piped stdout (as treadle_child_take_stdin; read
 * it with treadle_async_fd_read_poll to end of file). */
treadle_async_fd_t *treadle_child_take_stdout(treadle_child_t *c);
/** The parent's end of a piped stderr (as treadle_child_take_stdout). */
treadle_async_fd_t *treadle_child_take_stderr(treadle_child_t *c);

/** READY once the child has exited, with *status filled and *err = 0, or
 * with *err set: TREADLE_EINVAL (NULL argument), TREADLE_EFORKED,
 * TREADLE_ESHUTDOWN (the child's runtime shut down: treadle_child_try_wait
 * still works), TREADLE_EFOREIGN (a task of another runtime), -ECHILD
 * (something else in the program reaped it, such as waitpid(-1) or SIGCHLD
 * set to SIG_IGN), TREADLE_EBUSY (128 runtimes listen for signals: the
 * SIGCHLD path only). Else PENDING with the task's waker stored. Once it
 * was READY, every later call (and treadle_child_try_wait) answers the
 * same status at once. One task waits at a time; a child's stdout may be
 * read to the end before or after its wait. */
treadle_poll_t treadle_child_wait_poll(treadle_child_t *c, treadle_cx_t *cx,
                                       treadle_exit_status_t *status,
                                       treadle_err_t *err);
/** Reaps the child if it has exited, without waiting, from any thread: 0
 * with *status filled, TREADLE_EAGAIN while it runs, TREADLE_EINVAL,
 * TREADLE_EFORKED, -ECHILD. Works after the runtime shut down too. */
treadle_err_t treadle_child_try_wait(treadle_child_t *c,
                                     treadle_exit_status_t *status);
/** Sends `signum` (0..64; 0 only checks) to the child, any thread. A
 * child that has exited is not signalled, and the answer is 0: the signal
 * never reaches another process that took its id. TREADLE_EINVAL,
 * TREADLE_EFORKED, -EPERM. */
treadle_err_t treadle_child_kill(treadle_child_t *c, int signum);
/** Frees the child (takes ownership; NULL ignored; no task may be
 * waiting on it): closes the pipe ends nobody took, sends SIGKILL if the
 * command asked for kill-on-drop and the child has not exited, and leaves
 * a child that was not waited for to be reaped when it exits, by its
 * runtime or, once that has shut down, by the process-wide reaper. Using
 * `c` afterwards is undefined, as for any freed object. In a forked
 * process (runtime built before the fork) it closes only that process's
 * copies of the fds and signals nothing. */
void treadle_child_free(treadle_child_t *c);

/* ------------------------------------------------------ synchronisation
 *
 * Tokio's tokio::sync for C: Notify, an async Mutex, a Semaphore, oneshot
 * and bounded mpsc channels. Objects are library-allocated and refcounted
 * (_new gives one reference; _ref/_unref); every function may be called
 * from any thread, the _poll functions from a task. Waiting is FIFO and
 * never loses a wake: a waiter that gives up (treadle_waiter_drop) after it
 * was handed a notification or permits passes them to the next waiter.
 * Channel items and oneshot values are pointers; a drop function given at
 * creation frees those nobody received. */

/** A wait node for Notify, Mutex and Semaphore, embedded in the caller's
 * state (no allocation). Initialise it once, pass it to the same _poll
 * function until that returns READY, then it may be reused; drop it if the
 * task stops waiting before (its drop function is the usual place). Used
 * by one task at a time. */
typedef struct treadle_waiter_s {
  uint64_t opaque_[6];
} treadle_waiter_t;

void treadle_waiter_init(treadle_waiter_t *w);
/** Leaves the wait queue it is on, if any (any thread, idempotent). */
void treadle_waiter_drop(treadle_waiter_t *w);

/** Notify (tokio::sync::Notify): tasks wait until notified. */
typedef struct treadle_notify_s treadle_notify_t;
treadle_err_t treadle_notify_new(treadle_notify_t **out);
treadle_notify_t *treadle_notify_ref(treadle_notify_t *n);
void treadle_notify_unref(treadle_notify_t *n);
/** Wakes the first waiter, or, with none, stores one permit that the next
 * poll consumes at once (permits do not accumulate). */
void treadle_notify_one(treadle_notify_t *n);
/** Wakes every task waiting now; stores no permit. */
void treadle_notify_waiters(treadle_notify_t *n);
/** READY once this waiter was notified (or consumed the stored permit). */
treadle_poll_t treadle_notify_poll(treadle_notify_t *n, treadle_cx_t *cx,
                                   treadle_waiter_t *w);

/** An async Mutex (tokio::sync::Mutex): the lock is held across awaits and
 * handed to waiters in FIFO order. It guards no data of its own. */
typedef struct treadle_mutex_s treadle_mutex_t;
treadle_err_t treadle_mutex_new(treadle_mutex_t **out);
treadle_mutex_t *treadle_mutex_ref(treadle_mutex_t *m);
void treadle_mutex_unref(treadle_mutex_t *m);
/** READY when the caller holds the lock. */
treadle_poll_t treadle_mutex_lock_poll(treadle_mutex_t *m, treadle_cx_t *cx,
                                       treadle_waiter_t *w);
/** True if the lock was free and is now held by the caller. */
bool treadle_mutex_try_lock(treadle_mutex_t *m);
/** Releases the lock, handing it to the first waiter. */
void treadle_mutex_unlock(treadle_mutex_t *m);

/** A counting Semaphore (tokio::sync::Semaphore), fair: a waiter for many
 * permits is not overtaken by later waiters for few. */
typedef struct treadle_semaphore_s treadle_semaphore_t;
#define TREADLE_SEMAPHORE_MAX_PERMITS (SIZE_MAX >> 3)
/** TREADLE_EINVAL if permits > TREADLE_SEMAPHORE_MAX_PERMITS. */
treadle_err_t treadle_semaphore_new(size_t permits, treadle_semaphore_t **out);
treadle_semaphore_t *treadle_semaphore_ref(treadle_semaphore_t *s);
void treadle_semaphore_unref(treadle_semaphore_t *s);
/** READY with *err = 0 once `n` permits are the caller's, TREADLE_ECLOSED
 * once the semaphore is closed, TREADLE_EINVAL for n = 0 or n above the
 * maximum. */
treadle_poll_t treadle_semaphore_acquire_poll(treadle_semaphore_t *s,
                                              treadle_cx_t *cx,
                                              treadle_waiter_t *w, size_t n,
                                              treadle_err_t *err);
/** 0, TREADLE_EAGAIN (not enough now, or others wait first),
 * TREADLE_ECLOSED, TREADLE_EINVAL. */
treadle_err_t treadle_semaphore_try_acquire(treadle_semaphore_t *s, size_t n);
/** Returns `n` permits (TREADLE_EINVAL past the maximum). */
treadle_err_t treadle_semaphore_release(treadle_semaphore_t *s, size_t n);
/** Wakes every waiter with TREADLE_ECLOSED; later acquires fail the same. */
void treadle_semaphore_close(treadle_semaphore_t *s);
size_t treadle_semaphore_available(treadle_semaphore_t *s);

/** A oneshot channel: one value, once, from any thread to a task. */
typedef struct treadle_oneshot_tx_s treadle_oneshot_tx_t;
typedef struct treadle_oneshot_rx_s treadle_oneshot_rx_t;
/** `drop_value` (may be NULL) frees a value sent but never received. */
treadle_err_t treadle_oneshot_new(void (*drop_value)(void *value),
                                  treadle_oneshot_tx_t **tx,
                                  treadle_oneshot_rx_t **rx);
/** Sends and releases the sender (takes ownership of tx, always). 0, or
 * TREADLE_ECHANCLOSED when the receiver is gone: the value is then not taken. */
treadle_err_t treadle_oneshot_send(treadle_oneshot_tx_t *tx, void *value);
/** Releases the sender without sending: the receiver sees TREADLE_ECHANCLOSED. */
void treadle_oneshot_tx_drop(treadle_oneshot_tx_t *tx);
/** READY with the value (*err = 0), or *err = TREADLE_ECHANCLOSED if the
 * sender went without sending, TREADLE_EJOINED if it was received. */
treadle_poll_t treadle_oneshot_recv_poll(treadle_oneshot_rx_t *rx,
                                         treadle_cx_t *cx, void **value,
                                         treadle_err_t *err);
/** Blocks a thread that is not running tasks until the value comes. */
treadle_err_t treadle_oneshot_recv_wait(treadle_oneshot_rx_t *rx,
                                        void **value);
/** Releases the receiver; a value sent and not received is dropped. */
void treadle_oneshot_rx_drop(treadle_oneshot_rx_t *rx);

/** A bounded multi-producer, single-consumer channel (tokio mpsc). */
typedef struct treadle_mpsc_tx_s treadle_mpsc_tx_t;
typedef struct treadle_mpsc_rx_s treadle_mpsc_rx_t;
/** capacity 1..2^30; `drop_item` (may be NULL) frees items never received. */
treadle_err_t treadle_mpsc_new(size_t capacity, void (*drop_item)(void *item),
                               treadle_mpsc_tx_t **tx,
                               treadle_mpsc_rx_t **rx);
/** Another sender for the same channel (NULL when out of memory). */
treadle_mpsc_tx_t *treadle_mpsc_tx_clone(treadle_mpsc_tx_t *tx);
/** Releases a sender; when the last goes, the receiver drains what is
 * queued and then sees TREADLE_ECHANCLOSED. */
void treadle_mpsc_tx_drop(treadle_mpsc_tx_t *tx);
/** READY with *err = 0 once `item` is queued (the channel owns it), or
 * *err = TREADLE_ECHANCLOSED (receiver gone; the item was not taken). PENDING
 * while full: the item was not taken; poll again with it. */
treadle_poll_t treadle_mpsc_send_poll(treadle_mpsc_tx_t *tx, treadle_cx_t *cx,
                                      void *item, treadle_err_t *err);
/** 0, TREADLE_EAGAIN (full), TREADLE_ECHANCLOSED. Any thread. */
treadle_err_t treadle_mpsc_try_send(treadle_mpsc_tx_t *tx, void *item);
/** Blocks a thread that is not running tasks until there is room. */
treadle_err_t treadle_mpsc_send_wait(treadle_mpsc_tx_t *tx, void *item);
/** READY with an item (*err = 0), or *err = TREADLE_ECHANCLOSED once every
 * sender is gone and the queue is empty. */
treadle_poll_t treadle_mpsc_recv_poll(treadle_mpsc_rx_t *rx, treadle_cx_t *cx,
                                      void **item, treadle_err_t *err);
/** 0, TREADLE_EAGAIN (empty), TREADLE_ECHANCLOSED. */
treadle_err_t treadle_mpsc_try_recv(treadle_mpsc_rx_t *rx, void **item);
/** Blocks a thread that is not running tasks until an item comes. */
treadle_err_t treadle_mpsc_recv_wait(treadle_mpsc_rx_t *rx, void **item);
/** Refuses further sends (senders see TREADLE_ECHANCLOSED); queued items can
 * still be received. */
void treadle_mpsc_rx_close(treadle_mpsc_rx_t *rx);
/** Releases the receiver: closes the channel and drops queued items. */
void treadle_mpsc_rx_drop(treadle_mpsc_rx_t *rx);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif

#endif /* TREADLE_H */
