/* Declarations shared inside the core: the task header, the scheduler and
 * driver interfaces, the handle. Nothing here is public API. */
#ifndef TREADLE_INTERNAL_H
#define TREADLE_INTERNAL_H

#include <stdlib.h>
#include <string.h>

#include "os_thread.h"
#include "queue.h"
#include "treadle.h"

#define TREADLE_UNREACHABLE() __builtin_unreachable()
/* Broken internal invariants only: never for bad input (ARCHITECTURE.md "Errors"). */
/* Thread-locals use the initial-exec model (no __tls_get_addr call) when
 * treadle is linked into a program. A build that is loaded with dlopen (the
 * Python and Lua modules) defines TREADLE_DLOPEN: a dlopened library may
 * not claim static TLS. */
#ifdef TREADLE_DLOPEN
#define TREADLE_TLS_MODEL
#else
#define TREADLE_TLS_MODEL __attribute__((tls_model("initial-exec")))
#endif

#define TREADLE_ASSERT(cond)                                                   \
  do {                                                                         \
    if (treadle__unlikely(!(cond)))                                            \
      treadle__abort_invariant(#cond, __FILE__, __LINE__);                     \
  } while (0)
void treadle__abort_invariant(const char *what, const char *file, int line)
    __attribute__((noreturn));

typedef struct treadle__task_s treadle__task_t;
typedef struct treadle__sched_s treadle__sched_t;
typedef struct treadle__driver_s treadle__driver_t;

/* ----------------------------------------------------------- alloc.c */

void *treadle__malloc(size_t size);
void *treadle__calloc(size_t n, size_t size);
/* Zeroed, `align`-aligned (a power of two); freed with treadle__free. */
void *treadle__aligned_calloc(size_t align, size_t size);
void treadle__free(void *p);
char *treadle__strdup(const char *s);
/* Test hook: the allocation after the next `n` fails (n < 0 disables).
 * Returns the countdown it replaced: >= 0 means the last one set never
 * fired. */
long treadle__alloc_fail_after(long n);
/* Test hook: counts allocations and frees from now on (zeroed first). */
void treadle__alloc_count_start(void);
/* While counting: how many of the blocks counted are not freed yet. */
long treadle__alloc_count_live(void);
/* Stops counting; returns the allocations made since the start and puts
 * in *live (may be NULL) how many of them were not freed. */
long treadle__alloc_count_stop(long *live);
/* Task blocks, from a per-thread cache (alloc.c); *size_class is what
 * treadle__task_free needs back. */
void *treadle__task_alloc(size_t size, uint8_t *size_class);
void treadle__task_free(void *p, uint8_t size_class);
/* Gives the calling thread's cached blocks back to malloc. */
void treadle__alloc_trim(void);

/* ---------------------------------------------------------- config.c */

typedef struct treadle__config_s {
  treadle_flavor_t flavor;
  unsigned worker_threads;        /* multi_thread only */
  unsigned max_blocking_threads;
  uint64_t keep_alive_ns;
  bool enable_io;
  bool enable_time;
  char thread_name[32];
  treadle_thread_cb on_thread_start;
  void *on_thread_start_ud;
  treadle_thread_cb on_thread_stop;
  void *on_thread_stop_ud;
  unsigned event_interval;
  unsigned global_queue_interval;
  treadle_task_error_cb on_task_error;
  void *on_task_error_ud;
  uint64_t slow_poll_ns;          /* warn when a poll takes longer; 0: off */
} treadle__config_t;

struct treadle_builder_s {
  treadle__config_t cfg;
};

/* ------------------------------------------------------------ task.c */

/* The task state word (tokio task/state.rs). Low bits are flags, the rest
 * a reference count. References: one for the scheduler's owned list (until
 * the task is released), one for the join handle, one held by whoever will
 * poll the task (the run queue entry, then the poller), one per waker. */
#define TREADLE__RUNNING (UINT64_C(1) << 0)   /* a thread is polling it */
#define TREADLE__COMPLETE (UINT64_C(1) << 1)  /* state dropped, output set */
#define TREADLE__NOTIFIED (UINT64_C(1) << 2)  /* queued, or re-poll asked */
#define TREADLE__JOIN_INTEREST (UINT64_C(1) << 3) /* a join handle exists */
#define TREADLE__JOIN_WAKER (UINT64_C(1) << 4)    /* join_waker is set */
#define TREADLE__CANCELLED (UINT64_C(1) << 5)     /* abort requested */
#define TREADLE__REF_ONE (UINT64_C(1) << 6)
#define TREADLE__REF_SHIFT 6

/* Coop budget per poll (ARCHITECTURE.md "Coop budget"). */
#define TREADLE__BUDGET 128

/* What a pending task waits on, for dumps: set by leaf futures. */
#define TREADLE__WAIT_MAP(XX)                                                  \
  XX(NONE, "-")                                                                \
  XX(SLEEP, "sleep")                                                           \
  XX(JOIN, "join")                                                             \
  XX(YIELD, "yield")                                                           \
  XX(NOTIFY, "notify")                                                         \
  XX(MUTEX, "mutex")                                                           \
  XX(SEMAPHORE, "semaphore")                                                   \
  XX(ONESHOT, "oneshot recv")                                                  \
  XX(MPSC_SEND, "mpsc send")                                                   \
  XX(MPSC_RECV, "mpsc recv")                                                   \
  XX(IO_READ, "io read")                                                       \
  XX(IO_WRITE, "io write")                                                     \
  XX(SIGNAL, "signal")

typedef enum {
#define XX(name, text) TREADLE__WAIT_##name,
  TREADLE__WAIT_MAP(XX)
#undef XX
} treadle__wait_t;

/* One allocation per task: this header, then the caller's state at
 * TREADLE__TASK_HEADER bytes (16-aligned). 96 bytes: with a small state
 * the whole task stays within malloc's fast bins (<= 120 bytes). */
struct treadle__task_s {
  treadle_waker_t waker;        /* first: &task->waker is its waker */
  _Atomic uint64_t state;       /* flags + refcount; any thread */
  const treadle_task_vtable_t *vt;
  treadle__sched_t *sched;      /* owning scheduler; holds a handle ref */
  treadle__task_t *next;        /* run/inject queue link; owned by the
                                   holder of the NOTIFIED reference */
  treadle__list_t owned;        /* owned list node; guarded by the owner
                                   list's lock (or its single thread) */
  treadle_waker_t *join_waker;  /* JOIN_WAKER protocol, see task.c */
  void *out_value;              /* written before COMPLETE is published */
  treadle_err_t out_err;        /* likewise */
  uint8_t output_taken;         /* join side only */
  _Atomic uint8_t owned_state;  /* TREADLE__UNBOUND, _BOUND, _UNLINKED;
                                   changed under the owned list's lock */
  _Atomic uint8_t waits_on;     /* treadle__wait_t; the poller writes,
                                   dumps read (relaxed) */
  uint8_t size_class;           /* for treadle__task_free; constant */
  uint64_t id : 48;             /* constant */
  uint64_t pinned : 16;         /* worker index + 1, or 0; constant */
  char *name;                   /* owned copy, or NULL; constant */
};

/* Where a task stands with its scheduler's owned list. A task joins the
 * list ("binds") the first time it is about to wait, so that shutdown can
 * find it; a task that is queued or running is found in the queues or by
 * its worker instead, and one that completes without ever waiting never
 * touches the list. Each task holds one "owned" reference from spawn on;
 * it is dropped when the task completes (UNBOUND, BOUND) or handed to the
 * shutdown code that unlinks it (UNLINKED). */
enum { TREADLE__UNBOUND = 0, TREADLE__BOUND = 1, TREADLE__UNLINKED = 2 };

#define TREADLE__TASK_HEADER \
  ((sizeof(treadle__task_t) + 15) & ~(size_t)15)

struct treadle_cx_s {
  treadle__task_t *task;
  uint32_t budget;
  bool yielded;
};

static inline void *treadle__task_state(treadle__task_t *t) {
  return (char *)t + TREADLE__TASK_HEADER;
}

/* Records what a pending task waits on (TREADLE__WAIT_*), for dumps. */
static inline void treadle__task_waits_on(treadle__task_t *t, int what) {
  /* Relaxed: read only by dumps, which show a snapshot. */
  atomic_store_explicit(&t->waits_on, (uint8_t)what, memory_order_relaxed);
}
/* Its text ("sleep", "join", ...). */
const char *treadle__wait_name(int what);

/* Allocates a task in its initial state (NOTIFIED, refs: owned list, run
 * queue, and the join handle when `join`). */
treadle_err_t treadle__task_new(treadle__sched_t *s,
                                const treadle_task_vtable_t *vt,
                                const void *state, size_t state_size,
                                bool join, treadle__task_t **out);
/* Frees a task whose spawn failed: no drop function runs. */
void treadle__task_discard(treadle__task_t *t);
/* Polls the task; consumes the run-queue reference. */
void treadle__task_run(treadle__task_t *t);
/* Shutdown: cancels the task if nobody is polling it, and drops one
 * reference (the owned list's or a run queue's). */
void treadle__task_shutdown(treadle__task_t *t);
/* Drops one reference, freeing the task on the last. */
void treadle__task_unref(treadle__task_t *t);
/* Registers `w` as the join waker; false once the task is COMPLETE. */
bool treadle__task_join_register(treadle__task_t *t, treadle_waker_t *w);
uint64_t treadle__task_next_id(void);

/* ---------------------------------------------------------- schedulers */

typedef struct treadle__sched_vtable_s {
  /* Queues a new task, or returns TREADLE_ESHUTDOWN (or TREADLE_EINVAL
   * for a worker index it does not have). */
  treadle_err_t (*spawn)(treadle__sched_t *s, treadle__task_t *t);
  /* Puts a task that is about to wait on the owned list (the caller holds
   * RUNNING); false once shut down: the caller then cancels it. */
  bool (*bind)(treadle__sched_t *s, treadle__task_t *t);
  /* Queues a task that carries a NOTIFIED reference; `yield`: it asked to
   * go behind the others. After shutdown the reference is dropped. */
  void (*schedule)(treadle__sched_t *s, treadle__task_t *t, bool yield);
  /* Called as a task completes: unlinks it from its owned list and
   * returns how many owned references to drop (0 if shutdown already took
   * it off the list, else 1). */
  int (*release)(treadle__sched_t *s, treadle__task_t *t);
  /* Runs the scheduler on the calling thread until `main` completes
   * (current_thread). NULL: other threads run it (multi_thread), and
   * block_on just waits on main's join handle. */
  treadle_err_t (*block_on)(treadle__sched_t *s, treadle__task_t *main);
  /* Cancels every task and stops the scheduler's threads. */
  treadle_err_t (*shutdown)(treadle__sched_t *s);
  /* Frees the scheduler's memory once no task can reach it. */
  void (*free)(treadle__sched_t *s);
  /* Fills runtime-wide and per-worker metrics (any thread). */
  void (*metrics)(treadle__sched_t *s, treadle_runtime_metrics_t *m);
  treadle_err_t (*worker_metrics)(treadle__sched_t *s, unsigned worker,
                                  treadle_worker_metrics_t *m);
  /* Writes one line per live task (see dump.c); any thread. */
  treadle_err_t (*dump)(treadle__sched_t *s, FILE *out);
  /* True while every worker is parked: no task runs or is about to, so a
   * paused clock may move (driver_time.c step 5). NULL: the thread that
   * parks in the driver is the only one that runs tasks. */
  bool (*all_parked)(treadle__sched_t *s);
} treadle__sched_vtable_t;

struct treadle__sched_s {
  const treadle__sched_vtable_t *vt;
  treadle_handle_t *handle;
};

treadle_err_t treadle__ct_new(treadle_handle_t *h, treadle__sched_t **out);
treadle_err_t treadle__mt_new(treadle_handle_t *h, treadle__sched_t **out);

/* ---------------------------------------------------------- context.c */

/* What the current thread is doing for which runtime. */
typedef struct treadle__context_s {
  treadle__sched_t *sched;   /* scheduler whose tasks this thread runs */
  void *core;                /* that scheduler's core while held, else NULL */
  treadle__task_t *task;     /* task being polled, or NULL */
  treadle_handle_t *handle;  /* runtime this thread works for: its
                                workers, its blocking threads, block_on */
  int worker;                /* worker index while `sched` is set */
  uint32_t *credits;         /* handle references this thread holds in
                                reserve for `handle`'s tasks, or NULL */
} treadle__context_t;

extern __thread treadle__context_t treadle__ctx TREADLE_TLS_MODEL;

/* ----------------------------------------------------------- inject.c */

/* The global queue: a locked intrusive FIFO with an atomic length, so that
 * emptiness checks take no lock (TESTING.md c.3 item 7). */
typedef struct treadle__inject_s {
  treadle__os_mutex_t mu;
  treadle__task_t *head;   /* guarded by mu */
  treadle__task_t *tail;   /* guarded by mu */
  bool closed;             /* guarded by mu */
  _Atomic size_t len;      /* written under mu; read anywhere */
} treadle__inject_t;

void treadle__inject_init(treadle__inject_t *q);
void treadle__inject_destroy(treadle__inject_t *q);
/* Queues `t`; false (and nothing queued) once the queue is closed. */
bool treadle__inject_push(treadle__inject_t *q, treadle__task_t *t);
/* Queues the list first..last (linked through next, n tasks) at once;
 * false (nothing queued) once closed. */
bool treadle__inject_push_batch(treadle__inject_t *q, treadle__task_t *first,
                                treadle__task_t *last, size_t n);
treadle__task_t *treadle__inject_pop(treadle__inject_t *q);
/* Pops up to `max` tasks as a list linked through next; returns the count. */
size_t treadle__inject_pop_batch(treadle__inject_t *q, size_t max,
                                 treadle__task_t **first);
/* Refuses further pushes; what is queued stays to be drained. */
void treadle__inject_close(treadle__inject_t *q);
static inline size_t treadle__inject_len(treadle__inject_t *q) {
  return atomic_load_explicit(&q->len, memory_order_relaxed);
}

/* ------------------------------------------------------------- runq.c */

#ifdef TREADLE_TEST_SMALL
#define TREADLE__LOCAL_QUEUE_CAPACITY 4 /* as tokio under loom */
#else
#define TREADLE__LOCAL_QUEUE_CAPACITY 256
#endif

/* A worker's local run queue (runq.c): one owner, many stealers. */
typedef struct treadle__runq_s {
  _Atomic uint64_t head; /* steal index (low 32) | real head (high 32) */
  _Atomic uint32_t tail; /* written by the owner only */
  treadle__task_t *slots[TREADLE__LOCAL_QUEUE_CAPACITY];
} treadle__runq_t;

void treadle__runq_init(treadle__runq_t *q);
/* Owner: appends `t`; when full, moves half the queue and `t` to `inject`
 * and returns true (an overflow). Tasks refused by a closed inject queue
 * are unreferenced. */
bool treadle__runq_push(treadle__runq_t *q, treadle__task_t *t,
                        treadle__inject_t *inject);
/* Owner: takes the oldest task, or NULL. */
treadle__task_t *treadle__runq_pop(treadle__runq_t *q);
/* Thief: moves half of src into dst (dst's owner calls this) and returns
 * one of them to run now, or NULL; *stolen says how many moved. */
treadle__task_t *treadle__runq_steal_into(treadle__runq_t *src,
                                          treadle__runq_t *dst,
                                          uint32_t *stolen);
size_t treadle__runq_len(treadle__runq_t *q);
bool treadle__runq_has_stealable(treadle__runq_t *q);

/* ------------------------------------------------------------- idle.c */

/* Which workers sleep and how many search (tokio idle.rs). */
typedef struct treadle__idle_s {
  _Atomic uint64_t state;  /* unparked workers << 16 | searching workers */
  unsigned num_workers;
  treadle__os_mutex_t mu;
  unsigned *sleepers;      /* stack of parked worker indices; guarded */
  unsigned num_sleepers;   /* guarded by mu */
  bool *is_sleeping;       /* per worker; guarded by mu */
} treadle__idle_t;

treadle_err_t treadle__idle_init(treadle__idle_t *idle, unsigned workers);
void treadle__idle_destroy(treadle__idle_t *idle);
/* A sleeping worker to wake for new work, marked unparked and searching;
 * false when one is already searching or none sleeps. */
bool treadle__idle_worker_to_notify(treadle__idle_t *idle, unsigned *index);
/* Records worker `index` as parked; true if it was the last searcher. */
bool treadle__idle_transition_to_parked(treadle__idle_t *idle, unsigned index,
                                        bool searching);
/* May this worker start searching (at most half of them do)? */
bool treadle__idle_transition_to_searching(treadle__idle_t *idle);
/* Stops searching; true if it was the last searcher. */
bool treadle__idle_transition_from_searching(treadle__idle_t *idle);
/* Takes `index` off the sleepers (not searching); false if it was not
 * there (somebody else woke it). */
bool treadle__idle_unpark_worker_by_id(treadle__idle_t *idle, unsigned index);
bool treadle__idle_is_parked(treadle__idle_t *idle, unsigned index);
/* True while no worker is unparked (a notified worker counts as unparked). */
bool treadle__idle_all_parked(treadle__idle_t *idle);
unsigned treadle__idle_num_searching(treadle__idle_t *idle);

/* ------------------------------------------------------------- park.c */

/* A multi_thread worker's parker (tokio park.rs): it sleeps in the driver
 * if no other worker does, else on its own condition variable. */
typedef struct treadle__park_s {
  _Atomic uint32_t state; /* EMPTY / PARKED_CONDVAR / PARKED_DRIVER /
                             NOTIFIED, see park.c */
  treadle__os_mutex_t mu;
  treadle__os_cond_t cv;
} treadle__park_t;

void treadle__park_init(treadle__park_t *p);
void treadle__park_destroy(treadle__park_t *p);
/* Sleeps until unparked. `driver_mu` is tried: its holder parks in the
 * driver (timers and I/O are served there). */
void treadle__park_park(treadle__park_t *p, treadle__driver_t *d,
                        treadle__os_mutex_t *driver_mu);
void treadle__park_unpark(treadle__park_t *p, treadle__driver_t *d);

/* ---------------------------------------------------- blocking_pool.c */

typedef struct treadle__blocking_s treadle__blocking_t;
treadle_err_t treadle__blocking_new(treadle_handle_t *h,
                                    treadle__blocking_t **out);
/* Cancels queued jobs, lets running ones finish, waits up to timeout_ns
 * for the threads; threads still running then are left to exit on their
 * own (they hold the memory they use). False if some were left. */
bool treadle__blocking_shutdown(treadle__blocking_t *b, uint64_t timeout_ns);
void treadle__blocking_unref(treadle__blocking_t *b);
void treadle__blocking_metrics(treadle__blocking_t *b, uint64_t *threads,
                               uint64_t *idle, uint64_t *queued);

/* ------------------------------------------------------------ wheel.c */

#define TREADLE__WHEEL_LEVELS 6
#define TREADLE__WHEEL_SLOTS 64
/* Ticks the wheel spans: 64^6 ms, about 795 days. */
#define TREADLE__WHEEL_SPAN (UINT64_C(1) << 36)
#define TREADLE__TICK_NEVER UINT64_MAX

typedef enum {
  TREADLE__TIMER_IDLE = 0,       /* not in any wheel */
  TREADLE__TIMER_REGISTERED = 1, /* in the wheel, waker set */
  TREADLE__TIMER_FIRED = 2,      /* deadline reached */
  TREADLE__TIMER_SHUTDOWN = 3    /* its driver shut down */
} treadle__timer_state_t;

typedef struct treadle__time_s treadle__time_t;

/* A timer entry: treadle_sleep_t's private layout. may_alias: the caller's
 * storage is declared as treadle_sleep_t and accessed through this type. */
typedef struct __attribute__((__may_alias__)) treadle__timer_s {
  treadle__list_t node;       /* slot or pending list; guarded by wheel */
  uint64_t when;              /* deadline tick; guarded by wheel */
  treadle_waker_t *waker;     /* guarded by the time driver's lock */
  treadle__time_t *driver;    /* set when registered */
  uint64_t deadline_ns;       /* owner only */
  _Atomic uint8_t state;      /* treadle__timer_state_t; any thread */
  uint8_t level;              /* guarded by wheel */
} treadle__timer_t;

typedef struct treadle__wheel_s {
  uint64_t elapsed; /* every timer with when <= elapsed has been handed out */
  uint64_t occupied[TREADLE__WHEEL_LEVELS]; /* bit per non-empty slot */
  treadle__list_t slots[TREADLE__WHEEL_LEVELS][TREADLE__WHEEL_SLOTS];
  treadle__list_t pending; /* expired, not yet handed out */
} treadle__wheel_t;

void treadle__wheel_init(treadle__wheel_t *w, uint64_t now);
/* Inserts `t` at t->when, which must be > w->elapsed. O(1). Returns the
 * tick at which the wheel must be polled for it: its slot's start, which is
 * earlier than t->when on every level but the lowest (wheel.c 5). */
uint64_t treadle__wheel_insert(treadle__wheel_t *w, treadle__timer_t *t);
/* Removes an inserted timer. O(1). */
void treadle__wheel_remove(treadle__wheel_t *w, treadle__timer_t *t);
/* Hands out (removing it) one timer with when <= now, cascading entries
 * down the levels as time passes; NULL once none is left, and then
 * elapsed == now. */
treadle__timer_t *treadle__wheel_poll(treadle__wheel_t *w, uint64_t now);
/* The tick at which the wheel must next be polled (the earliest occupied
 * slot's start, or elapsed while timers are pending), or
 * TREADLE__TICK_NEVER. */
uint64_t treadle__wheel_next_expiration(const treadle__wheel_t *w);
/* Removes and returns any timer (for shutdown), or NULL. */
treadle__timer_t *treadle__wheel_pop_any(treadle__wheel_t *w);

/* ------------------------------------------------------ driver_time.c */

struct treadle__time_s {
  treadle__os_mutex_t mu;
  treadle__wheel_t wheel;         /* guarded by mu */
  bool shut;                      /* guarded by mu */
  uint64_t origin_ns;             /* tick 0; constant */
  _Atomic uint64_t parked_until;  /* tick the driver's owner sleeps until
                                     (set under mu), 0 while awake */
  _Atomic uint64_t next_due;      /* wheel's next expiration (set under
                                     mu); a hint read without it */
  _Atomic uint64_t virtual_ns;    /* the paused clock's now; 0: the real
                                     clock (driver_time.c step 5) */
  treadle__driver_t *driver;
};

void treadle__time_init(treadle__time_t *tm, treadle__driver_t *d);
void treadle__time_destroy(treadle__time_t *tm);
/* Nanoseconds until the next timer may fire (0: one is due now;
 * TREADLE_FOREVER: none), and marks the driver parked until then. */
uint64_t treadle__time_park_timeout(treadle__time_t *tm);
/* Fires every timer due by now and marks the driver awake. */
void treadle__time_process(treadle__time_t *tm);
/* Fires every timer with TREADLE__TIMER_SHUTDOWN and refuses new ones. */
void treadle__time_shutdown(treadle__time_t *tm);
/* The driver's clock, in treadle_now()'s nanoseconds: the real one, or the
 * virtual one once paused. */
uint64_t treadle__time_now(const treadle__time_t *tm);
/* Test hook (tokio's time::pause): from now on the driver's clock stands
 * still, and jumps forward to the next timer's slot instead of sleeping
 * for it. Call before the runtime runs; the clock advances only when the
 * parked thread has nothing to do, so it suits tests whose tasks run one
 * at a time. */
void treadle__time_pause(treadle__time_t *tm);
bool treadle__time_paused(const treadle__time_t *tm);
/* Moves the paused clock forward by `ns` (the driver's owner only). */
void treadle__time_advance(treadle__time_t *tm, uint64_t ns);

/* -------------------------------------------------------- driver_io.c */

/* The I/O driver's registration table; what sources, readiness bits and
 * the leaves that use them need is io.h's, included by the I/O files. */

#define TREADLE__IO_PAGE_SHIFT 10
#define TREADLE__IO_PAGE_SLOTS (1u << TREADLE__IO_PAGE_SHIFT)
#define TREADLE__IO_PAGES 4096 /* 4M registrations */

typedef struct treadle__io_reg_s treadle__io_reg_t; /* io.h */

typedef struct treadle__io_s {
  int epfd;  /* epoll instance, -1 when closed; guarded by mu */
  int evfd;  /* eventfd that unparks epoll_wait */
  treadle__os_mutex_t mu;    /* table growth, free list, epoll_ctl, shut */
  bool shut;                 /* guarded by mu */
  uint32_t free_head;        /* UINT32_MAX: none; guarded by mu */
  uint32_t slots;            /* slots handed out so far; guarded by mu */
  _Atomic(treadle__io_reg_t *) pages[TREADLE__IO_PAGES]; /* grow only */
} treadle__io_t;

treadle_err_t treadle__io_init(treadle__io_t *io);
/* Waits for events for at most timeout_ns (TREADLE_FOREVER: no limit) and
 * dispatches them. */
void treadle__io_park(treadle__io_t *io, uint64_t timeout_ns);
void treadle__io_unpark(treadle__io_t *io);
/* Adds one to an eventfd's counter, again after EINTR (a lost add would
 * be a lost wakeup); EAGAIN means it is saturated, i.e. readable already.
 * Async-signal-safe. */
void treadle__eventfd_add(int fd);
/* Wakes every waiter with GONE, closes the epoll and event fds. */
void treadle__io_shutdown(treadle__io_t *io);
void treadle__io_destroy(treadle__io_t *io);

/* ---------------------------------------------------- driver_signal.c */

typedef struct treadle__signal_s {
  treadle__os_mutex_t mu;
  treadle__list_t waiters[65]; /* per signal; guarded by mu */
  uint64_t listening;          /* signals this runtime listens for (bit
                                  n-1 for signal n); guarded by mu */
  uint64_t seen[65];           /* deliveries dispatched; guarded by mu */
  int slot;                    /* in the handler's table, or -1; under
                                  mu and the global lock */
  int wake_fd;                 /* the I/O driver's eventfd; constant once
                                  in the table */
  _Atomic uint32_t pending;    /* raised by the handler */
  bool shut;                   /* guarded by mu */
} treadle__signal_t;

void treadle__signal_init(treadle__signal_t *sig);
/* Wakes the waiters of every signal delivered since the last look (a
 * relaxed load when there is none). */
void treadle__signal_process(treadle__signal_t *sig);
/* Wakes every waiter with ESHUTDOWN, gives back the handlers and pipe. */
void treadle__signal_shutdown(treadle__signal_t *sig);
void treadle__signal_destroy(treadle__signal_t *sig);
/* For the process reaper (reaper.c), which has no runtime: joins the
 * handler's table with `wake_fd` and installs the handler for `signum`;
 * treadle__signal_shutdown undoes both. */
treadle_err_t treadle__signal_attach(treadle__signal_t *sig, int wake_fd,
                                     int signum);

/* --------------------------------------------------------- process.c */

/* Test hook: from now on (on = true) spawned children are waited for
 * through SIGCHLD, as where pidfd_open says ENOSYS; false restores the
 * pidfd. The rest of process.c's internals are in process.h. */
void treadle__process_force_sigchld(bool on);

/* ----------------------------------------------------------- driver.c */

/* The driver stack: park() goes down (time -> io, or a condition variable
 * without io); events come back up (io, then timers). One thread at a time
 * parks in it; any thread may unpark it. */
struct treadle__driver_s {
  bool has_time;
  bool has_io;
  treadle__time_t time;
  treadle__io_t io;
  treadle__signal_t signal;
  _Atomic uint32_t park_state;   /* EMPTY / PARKED / NOTIFIED, see driver.c */
  _Atomic uint64_t parks;        /* parks with a timeout (metrics) */
  treadle__os_mutex_t park_mu;   /* condvar fallback without io */
  treadle__os_cond_t park_cv;
};

treadle_err_t treadle__driver_init(treadle__driver_t *d,
                                   const treadle__config_t *cfg);
/* Parks for at most timeout_ns (0: just poll the drivers), then fires what
 * is ready. Returns early when unparked. */
void treadle__driver_park(treadle__driver_t *d, uint64_t timeout_ns);
/* Wakes the thread parked in the driver, or makes its next park return at
 * once. Any thread. */
void treadle__driver_unpark(treadle__driver_t *d);
/* Fires remaining timers with SHUTDOWN, closes fds. The memory stays. */
void treadle__driver_shutdown(treadle__driver_t *d);
void treadle__driver_destroy(treadle__driver_t *d);

/* ----------------------------------------------------------- handle.c */

struct treadle_handle_s {
  _Atomic uint64_t refs;     /* users' refs + the runtime's + one per task */
  uint32_t fork_gen;         /* treadle__fork_gen at build; constant */
  treadle__config_t cfg;     /* constant after build */
  treadle__sched_t *sched;   /* constant; freed with the handle */
  treadle__blocking_t *blocking; /* constant; refcounted separately */
  treadle__driver_t driver;
};

void treadle__handle_report_error(treadle_handle_t *h, treadle__task_t *t);

/* Bumped in the child of every fork (runtime.c). A runtime built before
 * the fork belongs to the parent: its threads do not exist in the child,
 * its locks may be held forever and its epoll set is shared with the
 * parent, so the child's calls answer TREADLE_EFORKED and touch nothing. */
extern _Atomic uint32_t treadle__fork_gen;
static inline bool treadle__forked(const treadle_handle_t *h) {
  /* Relaxed: written once in the child before any of its other code. */
  return atomic_load_explicit(&treadle__fork_gen, memory_order_relaxed) !=
         h->fork_gen;
}
/* A task's reference to its handle: taken from this thread's reserve when
 * it is a worker of that runtime (no shared atomic), else counted. */
void treadle__handle_ref_task(treadle_handle_t *h);
void treadle__handle_unref_task(treadle_handle_t *h);
/* Gives a worker's reserve back (it stops being a worker). */
void treadle__handle_return_credits(treadle_handle_t *h, uint32_t *credits);
/* Writes the dump line of one task (dump.c). `worker` is the worker that
 * runs or owns it, or -1. */
void treadle__dump_task(FILE *out, treadle__task_t *t, int worker);

/* ----------------------------------------------------------- waker.c */

extern const treadle_waker_vtable_t treadle__task_waker_vtable;

/* A waker that unblocks one OS thread: refcounted, heap-allocated. */
typedef struct treadle__parker_s {
  treadle_waker_t waker;
  _Atomic uint32_t refs;
  _Atomic uint32_t notified; /* futex word: 1 once woken */
} treadle__parker_t;

treadle__parker_t *treadle__parker_new(void);
/* Blocks until woken (consuming the wake, true) or until the monotonic
 * deadline (ns; UINT64_MAX: none) passes (false). */
bool treadle__parker_park_until(treadle__parker_t *p, uint64_t deadline_ns);
/* Blocks until woken (consumes the wake). */
void treadle__parker_park(treadle__parker_t *p);

/* ------------------------------------------------------------ clock */

static inline uint64_t treadle__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * TREADLE_NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

#endif /* TREADLE_INTERNAL_H */
