/* The C core of treadle.EventLoop, the asyncio event loop that runs on a
 * treadle runtime (ARCHITECTURE.md "asyncio loop").
 *
 * LoopCore is the C base class of treadle.EventLoop (the Python rest is
 * asyncio's BaseEventLoop). It holds:
 * - the ready queue: asyncio Handles (and the loop's own C callbacks,
 *   tagged pointers) under `mu`, which any thread may push to;
 * - the timers: a binary heap of TimerHandles ordered by (when, seq),
 *   also under `mu`, behind one treadle sleep on the runtime's wheel;
 * - the loop task, a C task of the runtime that runs the loop's
 *   iterations. Each poll, without the GIL, moves due timers to the ready
 *   queue; with nothing ready it arms its sleep for the earliest timer and
 *   waits (a waiting loop wakes for nothing else). With work, it takes
 *   the runtime's Python lane and the GIL and runs one iteration: the
 *   callbacks that were ready when it began, as asyncio's _run_once does.
 * A push to an empty queue, or a timer that becomes the earliest, wakes
 * the loop task through its waker: from any thread, so that
 * call_soon_threadsafe is call_soon plus nothing.
 *
 * An "owned" loop (treadle.new_event_loop) runs only inside run_forever:
 * run_forever spawns the loop task and blocks on it; stop() ends it after
 * its iteration. A runtime's own loop (Runtime.loop, what treadle tasks see
 * as asyncio's running loop) runs as long as its runtime: its task starts
 * at the first callback and ends at shutdown.
 *
 * File descriptor and signal watchers are C tasks too: each waits on its
 * treadle leaf (an async fd's readiness, a signal) and queues its C
 * callback, which runs the user's Handle in an iteration. */
#include "pytreadle.h"

#include <structmember.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <poll.h>
#include <unistd.h>

__thread PyObject *pyt_loop_running;

static PyObject *handle_cls, *timer_cls;     /* asyncio.events.Handle, TimerHandle */
static PyObject *new_handle_fn;              /* treadle._loop._new_handle */
static PyObject *task_cls, *future_cls;      /* asyncio.Task, asyncio.Future */
static PyObject *str_task_factory, *str_create_task_py;
static PyObject *kw_loop; /* ("loop",): the keyword of Task and Future */
/* "context", interned, and the last other "context" str seen: the C
 * Task's and Future's, not interned, at every step and callback. */
static PyObject *str_context_kw, *context_kw_seen;

/* Where asyncio's Handle and TimerHandle keep their __slots__ (member
 * descriptors' offsets), so that the hot paths make and read Handles
 * without running Handle.__init__ or attribute lookups: the objects are
 * still asyncio's own Handles. 0 when a slot is not a plain member. */
static Py_ssize_t off_callback, off_args, off_cancelled, off_loop,
    off_source_tb, off_repr, off_context, off_when, off_scheduled;
static PyObject *set_running, *get_running;  /* asyncio.events._set/_get_running_loop */
static PyObject *str_run, *str_cancelled, *str_callback, *str_args,
    *str_context, *str_handle_error, *str_log_slow, *str_slow_duration,
    *str_run_main_calls, *str_self, *str_done, *str_fut_waiter,
    *str_create_future, *str_set_result, *str_cancelled_m, *str_exception;

#define FN_TAG ((uintptr_t)1)

typedef struct {
  uint64_t when, seq;
  PyObject *h;
} timer_ent_t;

typedef struct {
  void **v;
  size_t len, cap;
} vec_t;

typedef struct loopobj_s {
  PyObject_HEAD
  pyrt_t *r;
  bool owned;   /* runs only inside run_forever */
  bool debug;   /* mirrors BaseEventLoop._debug */
  bool closed;
  pthread_mutex_t mu;
  /* Under mu: */
  vec_t ready, spare;   /* spare: the last batch's array, reused */
  timer_ent_t *heap;
  size_t hlen, hcap;
  uint64_t seq;
  treadle_waker_t *waker; /* the loop task's, while it lives */
  bool task_live;         /* a loop task exists (mu) */
  bool stop_req;          /* stop(): end after the next iteration */
  bool end;               /* the loop task returns at its next look */
  /* GIL: */
  size_t timers_cancelled; /* cancelled TimerHandles still in the heap */
  treadle_join_t *run_join; /* the loop task of run_forever (owned) */
  /* run_forever on the main thread: the read end of the pipe that is
   * Python's signal wakeup fd (a dup, registered with the runtime), and
   * whether a byte on it ended the last wait. Only that thread uses them. */
  treadle_async_fd_t *wake_afd;
  bool woke;
  PyObject *pending_exc;    /* SystemExit or KeyboardInterrupt of a callback */
  PyObject *resolved_args;  /* (a Future of this loop done with None,), lazily */
  PyObject *weakreflist;
} loopobj_t;

static PyTypeObject loop_type;

static int vec_push(vec_t *q, void *p) {
  if (q->len == q->cap) {
    size_t cap = q->cap ? 2 * q->cap : 256;
    void **nv = realloc(q->v, cap * sizeof *nv);
    if (nv == NULL)
      return -1;
    q->v = nv;
    q->cap = cap;
  }
  q->v[q->len++] = p;
  return 0;
}

static bool heap_less(const timer_ent_t *a, const timer_ent_t *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_up(timer_ent_t *h, size_t i) {
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_less(&h[i], &h[p]))
      break;
    timer_ent_t t = h[i];
    h[i] = h[p];
    h[p] = t;
    i = p;
  }
}

static void heap_down(timer_ent_t *h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, m = i;
    if (l < n && heap_less(&h[l], &h[m]))
      m = l;
    if (l + 1 < n && heap_less(&h[l + 1], &h[m]))
      m = l + 1;
    if (m == i)
      break;
    timer_ent_t t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

/* mu held. Moves the timers due at `now` to the ready queue, earliest
 * first; false when memory ran out (they stay in the heap). */
static void fire_due(loopobj_t *L, uint64_t now) {
  while (L->hlen > 0 && L->heap[0].when <= now) {
    if (vec_push(&L->ready, L->heap[0].h) < 0)
      return; /* stays in the heap: tried again next turn */
    L->heap[0] = L->heap[--L->hlen];
    heap_down(L->heap, L->hlen, 0);
  }
}

/* mu held: a clone of the loop task's waker, to wake after unlocking. */
static treadle_waker_t *waker_for_wake(loopobj_t *L) {
  return L->waker != NULL ? treadle_waker_clone(L->waker) : NULL;
}

static int ensure_task(loopobj_t *L);

/* Any thread, with or without the GIL; `p` is a new reference (a Handle)
 * or a tagged ready_fn_t. -1 on no memory (nothing taken). */
static int push_ready(loopobj_t *L, void *p) {
  pthread_mutex_lock(&L->mu);
  bool was_empty = L->ready.len == 0;
  if (vec_push(&L->ready, p) < 0) {
    pthread_mutex_unlock(&L->mu);
    return -1;
  }
  treadle_waker_t *w = was_empty ? waker_for_wake(L) : NULL;
  pthread_mutex_unlock(&L->mu);
  if (w != NULL)
    treadle_wake(w);
  return 0;
}

/* ----------------------------------------------------- running handles */

/* GIL. Runs an asyncio Handle as Handle._run does: its callback in its
 * context; an exception goes to the loop's exception handler (through
 * EventLoop._handle_error), SystemExit and KeyboardInterrupt to the
 * caller (-1). */
#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

static bool fast_handles; /* every offset above was found */

/* treadle's Handle and TimerHandle: subclasses of asyncio's, so that
 * isinstance holds and their Python methods (cancel, repr, when) are
 * asyncio's, with asyncio's slots as their fields, but made and freed
 * here: a C dealloc and traverse in place of the generic ones, which walk
 * the slots through their descriptors, and a free list of each. NULL
 * where the slots were not found (fast_handles): asyncio's classes then. */
static PyTypeObject *handle_type, *timer_type;
static Py_ssize_t off_weakref; /* asyncio.Handle's __weakref__ slot */

#define FREE_MAX 256
typedef struct {
  PyObject *v[FREE_MAX];
  int n;
} freelist_t;
static freelist_t free_handles, free_timers; /* GIL */

static freelist_t *handle_freelist(PyTypeObject *tp) {
  return tp == timer_type ? &free_timers : &free_handles;
}

static bool is_ours(PyObject *h) {
  return Py_IS_TYPE(h, handle_type) || Py_IS_TYPE(h, timer_type);
}

/* What call_soon keeps back for when memory runs out: RESERVE Handles
 * (freed ones, as in a free list) and RESERVE 1-tuples for their args.
 * CPython's Future drops every callback it has not yet scheduled when the
 * loop's call_soon raises (3.11's future_schedule_callbacks), and a task
 * that awaited it would never wake; with these the call_soon of a
 * Future's callbacks (one argument, the context given) does not fail. A
 * freed Handle refills the reserve before the free list. */
#define RESERVE 8
static PyObject *handle_reserve[RESERVE]; /* GIL */
static int handle_reserve_n;
static PyObject *args_reserve[RESERVE]; /* GIL; (None,) */
static int args_reserve_n;

/* An object of our type with every slot NULL, not yet GC-tracked. */
static PyObject *handle_alloc(PyTypeObject *tp) {
  freelist_t *fl = handle_freelist(tp);
  if (fl->n > 0) {
    PyObject *h = fl->v[--fl->n];
    return PyObject_Init(h, tp); /* a new reference to tp, refcount 1 */
  }
  PyObject *h = PyType_GenericAlloc(tp, 0);
  if (h != NULL) {
    PyObject_GC_UnTrack(h); /* tracked once its slots are set */
    return h;
  }
  if (tp != handle_type || handle_reserve_n == 0)
    return NULL;
  PyErr_Clear();
  return PyObject_Init(handle_reserve[--handle_reserve_n], tp);
}

/* The args tuple of a callback: a reserved one when there is one
 * argument and memory ran out. */
static PyObject *args_tuple(PyObject *const *v, Py_ssize_t n) {
  PyObject *t = pyt_tuple_from_array(v, n);
  if (t != NULL || n != 1 || args_reserve_n == 0)
    return t;
  PyErr_Clear();
  t = args_reserve[--args_reserve_n];
  Py_SETREF(PyTuple_GET_ITEM(t, 0), Py_NewRef(v[0]));
  if (!PyObject_GC_IsTracked(t)) /* the collector untracks a (None,) */
    PyObject_GC_Track(t);
  return t;
}

/* Tops the args reserve up, as far as memory allows. */
static void args_refill(void) {
  while (args_reserve_n < RESERVE) {
    PyObject *t = PyTuple_Pack(1, Py_None);
    if (t == NULL) {
      PyErr_Clear();
      return;
    }
    args_reserve[args_reserve_n++] = t;
  }
}

/* Visits only the slots that may hold containers (asyncio puts a str,
 * bools and a float in the others: _repr, _cancelled, _scheduled, _when),
 * and not None (the _source_traceback of a loop out of debug mode). The
 * type is not visited: it lives as long as the module, which holds it. */
#define VISIT_SLOT(h, off)                                \
  do {                                                    \
    PyObject *v_ = SLOT(h, off);                          \
    if (v_ != NULL && v_ != Py_None) {                    \
      int rc_ = visit(v_, arg);                           \
      if (rc_ != 0)                                       \
        return rc_;                                       \
    }                                                     \
  } while (0)

static int handle_traverse(PyObject *h, visitproc visit, void *arg) {
  VISIT_SLOT(h, off_callback);
  VISIT_SLOT(h, off_args);
  VISIT_SLOT(h, off_context);
  VISIT_SLOT(h, off_loop);
  VISIT_SLOT(h, off_source_tb);
  return 0;
}

static int handle_clear(PyObject *h) {
  Py_CLEAR(SLOT(h, off_callback));
  Py_CLEAR(SLOT(h, off_args));
  Py_CLEAR(SLOT(h, off_context));
  Py_CLEAR(SLOT(h, off_loop));
  Py_CLEAR(SLOT(h, off_source_tb));
  Py_CLEAR(SLOT(h, off_repr));
  Py_CLEAR(SLOT(h, off_cancelled));
  if (Py_IS_TYPE(h, timer_type)) {
    Py_CLEAR(SLOT(h, off_when));
    Py_CLEAR(SLOT(h, off_scheduled));
  }
  return 0;
}

static void handle_dealloc(PyObject *h) {
  PyTypeObject *tp = Py_TYPE(h);
  PyObject_GC_UnTrack(h);
  if (SLOT(h, off_weakref) != NULL)
    PyObject_ClearWeakRefs(h);
  handle_clear(h);
  freelist_t *fl = handle_freelist(tp);
  if (tp == handle_type && handle_reserve_n < RESERVE)
    handle_reserve[handle_reserve_n++] = h; /* untracked, its slots NULL */
  else if (fl->n < FREE_MAX)
    fl->v[fl->n++] = h;
  else
    tp->tp_free(h);
  Py_DECREF(tp);
}

/* A new reference to a slot of an asyncio Handle made here, or NULL with
 * an exception. */
static PyObject *handle_get(PyObject *h, Py_ssize_t off, PyObject *name) {
  if (fast_handles && (is_ours(h) || Py_IS_TYPE(h, (PyTypeObject *)handle_cls) ||
                       Py_IS_TYPE(h, (PyTypeObject *)timer_cls))) {
    PyObject *v = SLOT(h, off);
    if (v != NULL)
      return Py_NewRef(v);
  }
  return PyObject_GetAttr(h, name);
}

/* GIL. The asyncio Task (new reference) whose own step or wakeup `cb`
 * is: what a C Task schedules on its loop, a TaskStepMethWrapper or its
 * bound task_wakeup (CPython's _asyncio names them so). Else NULL. */
static PyObject *task_of_step(PyObject *cb, bool *wakeup) {
  PyObject *task = NULL;
  *wakeup = PyCFunction_Check(cb);
  if (*wakeup) {
    PyObject *self = PyCFunction_GET_SELF(cb);
    if (self != NULL &&
        strcmp(((PyCFunctionObject *)cb)->m_ml->ml_name, "task_wakeup") == 0)
      task = Py_NewRef(self);
  } else if (strcmp(Py_TYPE(cb)->tp_name, "TaskStepMethWrapper") == 0) {
    task = PyObject_GetAttr(cb, str_self);
    PyErr_Clear();
  }
  if (task != NULL && !PyObject_TypeCheck(task, (PyTypeObject *)task_cls))
    Py_CLEAR(task);
  return task;
}

/* GIL. Whether the task whose step or wakeup `cb` raised MemoryError was
 * left pending and waiting on no future, or on one that is done (whose
 * wakeup this was): nothing would ever step it again. CPython's Task is
 * when memory runs out between its coroutine's yield of a future and the
 * wakeup it adds to that future (3.11's task_step_impl), or before the
 * step begins (enter_task, in the step or the wakeup). */
static bool task_stranded(PyObject *cb, bool *wakeup) {
  PyObject *task = task_of_step(cb, wakeup);
  if (task == NULL)
    return false;
  PyObject *done = PyObject_CallMethodNoArgs(task, str_done);
  PyObject *waiter = done == Py_False ? PyObject_GetAttr(task, str_fut_waiter) : NULL;
  PyObject *waiter_done = waiter != NULL && waiter != Py_None
                              ? PyObject_CallMethodNoArgs(waiter, str_done) : NULL;
  bool stranded = waiter == Py_None || waiter_done == Py_True;
  Py_XDECREF(waiter_done);
  Py_XDECREF(waiter);
  Py_XDECREF(done);
  Py_DECREF(task);
  PyErr_Clear();
  return stranded;
}

/* GIL. Queues the step of a stranded task (see task_stranded) again, for
 * the next iteration: a step without an exception, which resumes the
 * coroutine where it waits. At a future's yield that future, unmarked by
 * the failed step, is yielded again; at an await of a future that is
 * done (the step did not begin), the await returns its result or raises
 * its exception. A step
 * wrapper's handle runs again as it is (it steps without an exception,
 * except after a bad yield); a wakeup is given a future done with None in
 * place of the one it had, whose exception the coroutine may have been
 * thrown already. -1: no memory to queue it (the task stays stranded). */
static int step_again(loopobj_t *L, PyObject *h, bool wakeup) {
  if (wakeup && is_ours(h)) {
    if (L->resolved_args == NULL) {
      PyObject *fut = PyObject_VectorcallMethod(str_create_future,
                                                (PyObject *[]){(PyObject *)L}, 1, NULL);
      PyObject *res = fut != NULL ? PyObject_CallMethodOneArg(fut, str_set_result, Py_None)
                                  : NULL;
      if (res != NULL)
        L->resolved_args = PyTuple_Pack(1, fut);
      Py_XDECREF(res);
      Py_XDECREF(fut);
      PyErr_Clear();
    }
    if (L->resolved_args != NULL)
      Py_SETREF(SLOT(h, off_args), Py_NewRef(L->resolved_args));
  }
  if (push_ready(L, Py_NewRef(h)) < 0) {
    Py_DECREF(h);
    return -1;
  }
  return 0;
}

static int run_handle(loopobj_t *L, PyObject *h) {
  if (Py_IS_TYPE(h, timer_type)) /* out of the heap, as asyncio's _run_once
                                    marks it: a cancel() now is no notice */
    Py_SETREF(SLOT(h, off_scheduled), Py_NewRef(Py_False));
  PyObject *cancelled = handle_get(h, off_cancelled, str_cancelled);
  if (cancelled == NULL)
    return -1;
  int skip = cancelled == Py_True;
  Py_DECREF(cancelled);
  if (skip)
    return 0;
  PyObject *cb = handle_get(h, off_callback, str_callback);
  PyObject *args = cb != NULL ? handle_get(h, off_args, str_args) : NULL;
  PyObject *ctx = args != NULL ? handle_get(h, off_context, str_context) : NULL;
  PyObject *res = NULL;
  if (ctx != NULL && PyTuple_Check(args) && PyContext_CheckExact(ctx)) {
    if (PyContext_Enter(ctx) == 0) {
      res = PyObject_Call(cb, args, NULL);
      if (PyContext_Exit(ctx) < 0)
        Py_CLEAR(res);
    }
  } else if (ctx != NULL) {
    res = PyObject_CallMethodNoArgs(h, str_run); /* a Handle of another make */
  }
  Py_XDECREF(args);
  Py_XDECREF(ctx);
  if (res != NULL) {
    Py_DECREF(res);
    Py_DECREF(cb);
    return 0;
  }
  if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
      PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
    Py_XDECREF(cb);
    return -1;
  }
  PyObject *exc = pyt_fetch_exception();
  bool wakeup = false;
  bool again = cb != NULL && PyErr_GivenExceptionMatches(exc, PyExc_MemoryError) &&
               task_stranded(cb, &wakeup) && step_again(L, h, wakeup) == 0;
  Py_XDECREF(cb);
  if (again) { /* not lost: the task steps again next iteration */
    Py_DECREF(exc);
    return 0;
  }
  res = PyObject_CallMethodObjArgs((PyObject *)L, str_handle_error, h, exc, NULL);
  Py_DECREF(exc);
  if (res == NULL) {
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
      return -1;
    PyErr_WriteUnraisable((PyObject *)L);
  }
  Py_XDECREF(res);
  return 0;
}

/* GIL. A ready entry: a Handle (new reference, given up here) or a C
 * callback. -1 with SystemExit/KeyboardInterrupt set. */
static int run_entry(loopobj_t *L, void *p) {
  if ((uintptr_t)p & FN_TAG) {
    ready_fn_t *f = (ready_fn_t *)((uintptr_t)p & ~FN_TAG);
    f->fn(f);
    if (PyErr_Occurred()) {
      if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
          PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
      PyErr_WriteUnraisable((PyObject *)L);
    }
    return 0;
  }
  int rc = run_handle(L, p);
  Py_DECREF((PyObject *)p);
  return rc;
}

/* What asyncio's running loop should be on this thread (a reference)
 * when putting it back failed (3.11's _set_running_loop allocates), or
 * NULL. The thread's next entry tries again. */
static __thread PyObject *restore_due;

int pyt_loop_restore_due(void) {
  if (restore_due == NULL)
    return 0;
  PyObject *res = PyObject_CallOneArg(set_running, restore_due);
  if (res == NULL)
    return -1;
  Py_DECREF(res);
  Py_CLEAR(restore_due);
  return 0;
}

/* GIL: makes `loop` asyncio's running loop on this thread; returns the
 * one it replaces (new reference, or NULL with an exception set). */
PyObject *pyt_loop_enter(PyObject *loop) {
  if (pyt_loop_restore_due() < 0)
    return NULL;
  PyObject *prev = PyObject_CallNoArgs(get_running);
  if (prev == NULL)
    return NULL;
  if (prev != loop) {
    PyObject *res = PyObject_CallOneArg(set_running, loop);
    if (res == NULL) {
      Py_DECREF(prev);
      return NULL;
    }
    Py_DECREF(res);
  }
  return prev;
}

static __thread PyObject *hooks_for; /* whose asyncgen hooks this thread has */

/* GIL. On a thread of the loop's runtime (a worker of multi_thread), makes
 * the loop's async generator hooks the thread's (once: the thread runs
 * only this runtime's code), so that shutdown_asyncgens finds the
 * generators first iterated there. run_forever sets them on its own. */
void pyt_loop_thread_hooks(PyObject *loop) {
  loopobj_t *L = (loopobj_t *)loop;
  if (pyt_thread_rt != L->r || hooks_for == loop)
    return;
  hooks_for = loop;
  PyObject *sys = PyImport_ImportModule("sys");
  PyObject *set = sys != NULL ? PyObject_GetAttrString(sys, "set_asyncgen_hooks") : NULL;
  PyObject *first = PyObject_GetAttrString(loop, "_asyncgen_firstiter_hook");
  PyObject *fin = PyObject_GetAttrString(loop, "_asyncgen_finalizer_hook");
  PyObject *res = set != NULL && first != NULL && fin != NULL
                      ? PyObject_CallFunctionObjArgs(set, first, fin, NULL) : NULL;
  if (res == NULL)
    PyErr_WriteUnraisable(loop);
  Py_XDECREF(res);
  Py_XDECREF(fin);
  Py_XDECREF(first);
  Py_XDECREF(set);
  Py_XDECREF(sys);
}

int pyt_loop_leave(PyObject *loop, PyObject *prev) {
  if (prev == loop) {
    Py_DECREF(prev);
    return 0;
  }
  PyObject *res = PyObject_CallOneArg(set_running, prev);
  if (res == NULL) {
    Py_XSETREF(restore_due, prev); /* an inner level's is out of date */
    return -1;
  }
  Py_DECREF(res);
  Py_DECREF(prev);
  Py_CLEAR(restore_due);
  return 0;
}

void pyt_loop_thread_end(void) { Py_CLEAR(restore_due); }

/* _core._leave_running(prev): pyt_loop_leave for run_forever. */
static PyObject *leave_running(PyObject *Py_UNUSED(m), PyObject *prev) {
  if (pyt_loop_leave(NULL, Py_NewRef(prev)) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* _core._restore_due(): pyt_loop_restore_due for run_forever's check. */
static PyObject *restore_due_m(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
  if (pyt_loop_restore_due() < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyMethodDef loop_functions[] = {
    {"_leave_running", leave_running, METH_O,
     "_leave_running($module, prev, /)\n--\n\n"
     "Internal: makes prev asyncio's running loop of this thread again; "
     "MemoryError when that fails, and the thread's next entry puts it back."},
    {"_restore_due", restore_due_m, METH_NOARGS,
     "_restore_due($module, /)\n--\n\n"
     "Internal: puts back the running loop that a failed _leave_running or "
     "step could not (MemoryError when that fails again)."},
    {NULL}};

/* GIL, lane. One iteration: runs the entries that are ready now. */
static void iterate(loopobj_t *L) {
  pthread_mutex_lock(&L->mu);
  fire_due(L, treadle_now());
  vec_t batch = L->ready;
  L->ready = L->spare;
  L->spare = (vec_t){0};
  pthread_mutex_unlock(&L->mu);
  bool stop = false;

  PyObject *saved_exc = pyt_fetch_exception_or_null();
  PyObject *prev = pyt_loop_enter((PyObject *)L);
  if (prev == NULL)
    PyErr_WriteUnraisable((PyObject *)L);
  pyt_loop_thread_hooks((PyObject *)L);
  PyObject *saved_running = pyt_loop_running;
  pyt_loop_running = (PyObject *)L;
  double slow = 0.1;
  if (L->debug) {
    PyObject *s = PyObject_GetAttr((PyObject *)L, str_slow_duration);
    if (s != NULL)
      slow = PyFloat_AsDouble(s);
    Py_XDECREF(s);
    PyErr_Clear();
  }
  size_t i = 0;
  for (; i < batch.len; i++) {
    uint64_t t0 = L->debug ? treadle_now() : 0;
    void *p = batch.v[i];
    PyObject *keep = ((uintptr_t)p & FN_TAG) || !L->debug ? NULL : Py_NewRef((PyObject *)p);
    int rc = run_entry(L, p);
    if (keep != NULL) {
      double dt = (double)(treadle_now() - t0) / 1e9;
      if (rc == 0 && dt >= slow) {
        PyObject *d = PyFloat_FromDouble(dt);
        PyObject *res = d != NULL ? PyObject_CallMethodObjArgs(
                                        (PyObject *)L, str_log_slow, keep, d, NULL)
                                  : NULL;
        if (res == NULL)
          PyErr_WriteUnraisable((PyObject *)L);
        Py_XDECREF(res);
        Py_XDECREF(d);
      }
      Py_DECREF(keep);
    }
    if (rc < 0) { /* SystemExit, KeyboardInterrupt: leave run_forever */
      Py_XSETREF(L->pending_exc, pyt_fetch_exception());
      stop = true;
      i++;
      break;
    }
  }
  pyt_loop_running = saved_running;
  if (prev != NULL)
    pyt_loop_leave((PyObject *)L, prev); /* a failure: put back at the next entry */
  PyErr_Clear();
  if (saved_exc != NULL)
    pyt_restore_exception(saved_exc);

  pthread_mutex_lock(&L->mu);
  if (i < batch.len) { /* what a raising callback left: first, next time */
    size_t rest = batch.len - i;
    for (size_t k = 0; k < L->ready.len; k++)
      if (vec_push(&batch, L->ready.v[k]) < 0)
        break; /* cannot happen: batch had room for its own */
    memmove(batch.v, batch.v + i, (batch.len - i) * sizeof *batch.v);
    batch.len = rest + L->ready.len;
    vec_t old = L->ready;
    L->ready = batch;
    batch = old;
  }
  batch.len = 0;
  free(L->spare.v);
  L->spare = batch;
  /* stop() during the iteration (or before it) ends run_forever after it,
   * as asyncio's run_forever looks at _stopping after each _run_once. */
  stop = stop || L->stop_req;
  L->stop_req = false;
  if (stop && L->owned)
    L->end = true;
  pthread_mutex_unlock(&L->mu);
}

/* ------------------------------------------------------------ loop task */

typedef struct {
  loopobj_t *L;
  treadle_sleep_t sleep;
} ltask_t;

static treadle_poll_t ltask_poll(treadle_cx_t *cx, void *state) {
  ltask_t *st = state;
  loopobj_t *L = st->L;
  bool iterated = false;
  pthread_mutex_lock(&L->mu);
  if (L->waker == NULL)
    L->waker = treadle_waker_clone(treadle_cx_waker(cx));
  for (;;) {
    if (L->end) {
      pthread_mutex_unlock(&L->mu);
      return TREADLE_READY;
    }
    uint64_t now = treadle_now();
    bool due = L->hlen > 0 && L->heap[0].when <= now;
    if (L->ready.len > 0 || due || L->stop_req) {
      pthread_mutex_unlock(&L->mu);
      if (iterated) { /* one iteration a poll: the other tasks go next */
        treadle_wake_by_ref(treadle_cx_waker(cx));
        return TREADLE_PENDING;
      }
      if (!pyrt_lane_enter(L->r, cx))
        return TREADLE_PENDING; /* woken when the lane is free */
      PyGILState_STATE g = PyGILState_Ensure();
      iterate(L);
      PyGILState_Release(g);
      pyrt_lane_leave(L->r);
      iterated = true;
      pthread_mutex_lock(&L->mu);
      continue;
    }
    /* Nothing to run: sleep until the earliest timer. A push or an
     * earlier timer wakes us through L->waker. */
    uint64_t next = L->hlen > 0 ? L->heap[0].when : TREADLE_FOREVER;
    pthread_mutex_unlock(&L->mu);
    if (treadle_sleep_deadline(&st->sleep) != next)
      treadle_sleep_reset(&st->sleep, next);
    if (next == TREADLE_FOREVER)
      return TREADLE_PENDING;
    treadle_err_t err;
    if (treadle_sleep_poll(&st->sleep, cx, &err) == TREADLE_PENDING ||
        err != 0) /* err: shutting down, the runtime drops us */
      return TREADLE_PENDING;
    pthread_mutex_lock(&L->mu);
  }
}

static void ltask_drop(void *state) {
  ltask_t *st = state;
  loopobj_t *L = st->L;
  treadle_sleep_drop(&st->sleep);
  pthread_mutex_lock(&L->mu);
  treadle_waker_t *w = L->waker;
  L->waker = NULL;
  L->task_live = false;
  pthread_mutex_unlock(&L->mu);
  treadle_waker_drop(w);
  PyGILState_STATE g = PyGILState_Ensure();
  Py_DECREF((PyObject *)L);
  PyGILState_Release(g);
}

static const treadle_task_vtable_t ltask_vt = {.poll = ltask_poll,
                                               .drop = ltask_drop};

/* GIL. Spawns the loop task if none lives; its join handle goes to
 * *join (NULL: detached). */
static int spawn_task(loopobj_t *L, treadle_join_t **join) {
  if (L->r->rt == NULL) {
    pyt_raise(TREADLE_ESHUTDOWN);
    return -1;
  }
  ltask_t st = {.L = L};
  treadle_sleep_until_init(&st.sleep, TREADLE_FOREVER);
  Py_INCREF(L);
  pthread_mutex_lock(&L->mu);
  L->task_live = true;
  L->end = false;
  pthread_mutex_unlock(&L->mu);
  treadle_err_t err = treadle_spawn(L->r->h, &ltask_vt, &st, sizeof st, join);
  if (err != 0) {
    pthread_mutex_lock(&L->mu);
    L->task_live = false;
    pthread_mutex_unlock(&L->mu);
    Py_DECREF(L);
    pyt_raise(err);
    return -1;
  }
  return 0;
}

/* GIL. A runtime's own loop runs whenever it has work: its task starts at
 * the first callback. */
static int ensure_task(loopobj_t *L) {
  if (L->owned || L->r->rt == NULL)
    return 0;
  pthread_mutex_lock(&L->mu);
  bool live = L->task_live;
  pthread_mutex_unlock(&L->mu);
  return live ? 0 : spawn_task(L, NULL);
}

/* ------------------------------------------------------------- methods */

static int check_open(loopobj_t *L) {
  if (L->closed) {
    PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
    return -1;
  }
  return 0;
}

/* Parses (callback, *args, context=None) of call_soon and friends, from
 * index `first` of args. */
static int parse_callback(PyObject *const *args, Py_ssize_t n,
                          PyObject *kwnames, Py_ssize_t first, const char *name,
                          PyObject **cb, PyObject **cbargs, PyObject **ctx) {
  *ctx = Py_None;
  Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; i++) {
    PyObject *kw = PyTuple_GET_ITEM(kwnames, i);
    if (kw != str_context_kw && kw != context_kw_seen) {
      if (PyUnicode_CompareWithASCIIString(kw, "context") != 0) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R",
                     name, kw);
        return -1;
      }
      Py_XSETREF(context_kw_seen, Py_NewRef(kw));
    }
    *ctx = args[n + i];
  }
  if (n <= first) {
    PyErr_Format(PyExc_TypeError, "%s() missing its callback argument", name);
    return -1;
  }
  *cb = args[first];
  *cbargs = args_tuple(args + first + 1, n - first - 1);
  return *cbargs != NULL ? 0 : -1;
}

/* A Handle or TimerHandle: cls(*args). In debug mode a Handle records
 * its caller's stack (sys._getframe(1)), which a worker thread running
 * C code alone does not have: there a Python helper is the caller. */
static PyObject *make_handle(loopobj_t *L, PyObject *cls, PyObject **args,
                             size_t n) {
  if (!L->debug && fast_handles) {
    /* Handle.__init__ without debug, slot by slot. args: [when,] callback,
     * args, loop, context. */
    PyObject *const *a = cls == timer_cls ? args + 1 : args;
    PyObject *ctx = a[3] == Py_None ? PyContext_CopyCurrent() : Py_NewRef(a[3]);
    PyObject *h = ctx != NULL ? handle_alloc(cls == timer_cls ? timer_type : handle_type) : NULL;
    if (h == NULL) {
      Py_XDECREF(ctx);
      return NULL;
    }
    SLOT(h, off_context) = ctx;
    SLOT(h, off_loop) = Py_NewRef(a[2]);
    SLOT(h, off_callback) = Py_NewRef(a[0]);
    SLOT(h, off_args) = Py_NewRef(a[1]);
    SLOT(h, off_cancelled) = Py_NewRef(Py_False);
    SLOT(h, off_repr) = Py_NewRef(Py_None);
    SLOT(h, off_source_tb) = Py_NewRef(Py_None);
    if (cls == timer_cls) {
      SLOT(h, off_when) = Py_NewRef(args[0]);
      SLOT(h, off_scheduled) = Py_NewRef(Py_True); /* in the heap at once */
    }
    PyObject_GC_Track(h);
    return h;
  }
  if (fast_handles) /* Handle.__init__ on ours */
    cls = (PyObject *)(cls == timer_cls ? timer_type : handle_type);
  if (!L->debug || PyEval_GetFrame() != NULL)
    return PyObject_Vectorcall(cls, args, n, NULL);
  if (new_handle_fn == NULL) {
    PyObject *m = PyImport_ImportModule("treadle._loop");
    new_handle_fn = m != NULL ? PyObject_GetAttrString(m, "_new_handle") : NULL;
    Py_XDECREF(m);
    if (new_handle_fn == NULL)
      return NULL;
  }
  PyObject *all[6] = {cls};
  for (size_t i = 0; i < n && i < 5; i++)
    all[i + 1] = args[i];
  return PyObject_Vectorcall(new_handle_fn, all, n + 1, NULL);
}

/* In debug mode: BaseEventLoop's _check_callback and _check_thread. */
static int debug_checks(loopobj_t *L, PyObject *cb, const char *method,
                        bool thread) {
  PyObject *res = PyObject_CallMethod((PyObject *)L, "_check_callback", "Os", cb, method);
  if (res == NULL)
    return -1;
  Py_DECREF(res);
  if (!thread || pyt_loop_running == (PyObject *)L || pyt_current != NULL)
    return 0;
  res = PyObject_CallMethod((PyObject *)L, "_check_thread", NULL);
  Py_XDECREF(res);
  return res != NULL ? 0 : -1;
}

static PyObject *soon(loopobj_t *L, PyObject *const *args, size_t nargsf,
                      PyObject *kwnames, const char *name, bool threadsafe) {
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  PyObject *cb, *cbargs, *ctx;
  if (check_open(L) < 0 ||
      parse_callback(args, n, kwnames, 0, name, &cb, &cbargs, &ctx) < 0)
    return NULL;
  if (L->debug && debug_checks(L, cb, name, !threadsafe) < 0) {
    Py_DECREF(cbargs);
    return NULL;
  }
  PyObject *hargs[4] = {cb, cbargs, (PyObject *)L, ctx};
  PyObject *h = make_handle(L, handle_cls, hargs, 4);
  Py_DECREF(cbargs);
  if (h == NULL || ensure_task(L) < 0) {
    Py_XDECREF(h);
    return NULL;
  }
  if (push_ready(L, Py_NewRef(h)) < 0) {
    Py_DECREF(h);
    Py_DECREF(h);
    return PyErr_NoMemory();
  }
  if (args_reserve_n < RESERVE) /* one was used */
    args_refill();
  return h;
}

static PyObject *loop_call_soon(loopobj_t *L, PyObject *const *args,
                                size_t nargsf, PyObject *kwnames) {
  return soon(L, args, nargsf, kwnames, "call_soon", false);
}

static PyObject *loop_call_soon_threadsafe(loopobj_t *L, PyObject *const *args,
                                           size_t nargsf, PyObject *kwnames) {
  return soon(L, args, nargsf, kwnames, "call_soon_threadsafe", true);
}

static double now_secs(void) { return (double)treadle_now() / 1e9; }

/* Loop time (seconds) to treadle_now() nanoseconds, rounded up so that a
 * timer never fires before time() reaches its `when`. */
static uint64_t when_ns(double when) {
  if (!(when > 0))
    return 0;
  double ns = when * 1e9;
  if (ns >= 1.8e19)
    return TREADLE_FOREVER;
  uint64_t v = (uint64_t)ns;
  return (double)v < ns ? v + 1 : v;
}

static PyObject *at(loopobj_t *L, double when, PyObject *when_obj,
                    PyObject *const *args, Py_ssize_t n, PyObject *kwnames,
                    const char *name) {
  PyObject *cb, *cbargs, *ctx;
  if (check_open(L) < 0 ||
      parse_callback(args, n, kwnames, 1, name, &cb, &cbargs, &ctx) < 0)
    return NULL;
  if (L->debug && debug_checks(L, cb, name, true) < 0) {
    Py_DECREF(cbargs);
    return NULL;
  }
  PyObject *hargs[5] = {when_obj, cb, cbargs, (PyObject *)L, ctx};
  PyObject *h = make_handle(L, timer_cls, hargs, 5);
  Py_DECREF(cbargs);
  if (h == NULL || ensure_task(L) < 0) {
    Py_XDECREF(h);
    return NULL;
  }
  pthread_mutex_lock(&L->mu);
  if (L->hlen == L->hcap) {
    size_t cap = L->hcap ? 2 * L->hcap : 64;
    timer_ent_t *nh = realloc(L->heap, cap * sizeof *nh);
    if (nh == NULL) {
      pthread_mutex_unlock(&L->mu);
      Py_DECREF(h);
      return PyErr_NoMemory();
    }
    L->heap = nh;
    L->hcap = cap;
  }
  L->heap[L->hlen] = (timer_ent_t){when_ns(when), L->seq++, Py_NewRef(h)};
  heap_up(L->heap, L->hlen);
  bool first = L->heap[0].h == h;
  L->hlen++;
  treadle_waker_t *w = first ? waker_for_wake(L) : NULL;
  pthread_mutex_unlock(&L->mu);
  if (w != NULL) /* the loop task re-arms its sleep */
    treadle_wake(w);
  return h;
}

static int number(PyObject *o, const char *what, double *out) {
  if (!PyFloat_Check(o) && !PyLong_Check(o) &&
      !(PyNumber_Check(o) && !PyComplex_Check(o))) {
    PyErr_Format(PyExc_TypeError, "%s must be a number, not %.100s", what,
                 Py_TYPE(o)->tp_name);
    return -1;
  }
  *out = PyFloat_AsDouble(o);
  if (*out == -1.0 && PyErr_Occurred())
    return -1;
  if (isnan(*out)) {
    PyErr_Format(PyExc_ValueError, "%s must not be NaN", what);
    return -1;
  }
  return 0;
}

static PyObject *loop_call_at(loopobj_t *L, PyObject *const *args,
                              size_t nargsf, PyObject *kwnames) {
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  double when;
  if (n < 1) {
    PyErr_SetString(PyExc_TypeError, "call_at() missing its when argument");
    return NULL;
  }
  if (number(args[0], "when", &when) < 0)
    return NULL;
  return at(L, when, args[0], args, n, kwnames, "call_at");
}

static PyObject *loop_call_later(loopobj_t *L, PyObject *const *args,
                                 size_t nargsf, PyObject *kwnames) {
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  double delay;
  if (n < 1) {
    PyErr_SetString(PyExc_TypeError, "call_later() missing its delay argument");
    return NULL;
  }
  if (number(args[0], "delay", &delay) < 0)
    return NULL;
  double when = now_secs() + delay;
  PyObject *when_obj = PyFloat_FromDouble(when);
  if (when_obj == NULL)
    return NULL;
  PyObject *h = at(L, when, when_obj, args, n, kwnames, "call_later");
  Py_DECREF(when_obj);
  return h;
}

/* create_task(coro, *, name=None, context=None): asyncio's Task, made
 * here; with a task factory or in debug mode, BaseEventLoop's own. */
static PyObject *loop_create_task(loopobj_t *L, PyObject *const *args,
                                  size_t nargsf, PyObject *kwnames) {
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  PyObject *factory = NULL;
  if (!L->debug) {
    factory = PyObject_GetAttr((PyObject *)L, str_task_factory);
    if (factory == NULL)
      PyErr_Clear();
  }
  if (L->debug || factory != Py_None || n != 1) {
    Py_XDECREF(factory);
    PyObject *m = PyObject_GetAttr((PyObject *)L, str_create_task_py);
    PyObject *res = m != NULL ? PyObject_Vectorcall(m, args, nargsf, kwnames) : NULL;
    Py_XDECREF(m);
    return res;
  }
  Py_DECREF(factory);
  if (check_open(L) < 0)
    return NULL;
  Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
  PyObject *targs[4] = {args[0], (PyObject *)L};
  if (nkw == 0)
    return PyObject_Vectorcall(task_cls, targs, 1, kw_loop);
  if (nkw > 2) {
    PyErr_SetString(PyExc_TypeError, "create_task(coro, *, name=None, context=None)");
    return NULL;
  }
  PyObject *names = PyTuple_New(1 + nkw);
  if (names == NULL)
    return NULL;
  PyTuple_SET_ITEM(names, 0, Py_NewRef(PyTuple_GET_ITEM(kw_loop, 0)));
  for (Py_ssize_t i = 0; i < nkw; i++) { /* name=, context= */
    PyTuple_SET_ITEM(names, 1 + i, Py_NewRef(PyTuple_GET_ITEM(kwnames, i)));
    targs[2 + i] = args[n + i];
  }
  PyObject *task = PyObject_Vectorcall(task_cls, targs, 1, names);
  Py_DECREF(names);
  return task;
}

static PyObject *loop_create_future(loopobj_t *L, PyObject *Py_UNUSED(u)) {
  PyObject *args[1] = {(PyObject *)L};
  return PyObject_Vectorcall(future_cls, args, 0, kw_loop);
}

static PyObject *loop_time(loopobj_t *Py_UNUSED(L), PyObject *Py_UNUSED(u)) {
  return PyFloat_FromDouble(now_secs());
}

/* TimerHandle.cancel() tells the loop: once half the heap is cancelled
 * timers (and it is not tiny), they are dropped, as BaseEventLoop does. */
static PyObject *loop_timer_cancelled(loopobj_t *L, PyObject *Py_UNUSED(h)) {
  L->timers_cancelled++;
  pthread_mutex_lock(&L->mu);
  size_t n = L->hlen;
  pthread_mutex_unlock(&L->mu);
  if (n < 100 || 2 * L->timers_cancelled < n)
    Py_RETURN_NONE;
  vec_t dropped = {0};
  pthread_mutex_lock(&L->mu); /* no Python call runs under mu: slots only */
  size_t k = 0;
  for (size_t i = 0; i < L->hlen; i++) {
    PyObject *c = PyObject_GetAttr(L->heap[i].h, str_cancelled);
    if (c != Py_True || vec_push(&dropped, L->heap[i].h) < 0)
      L->heap[k++] = L->heap[i];
    Py_XDECREF(c); /* a bool: never frees anything */
  }
  L->hlen = k;
  for (size_t i = k / 2 + 1; i-- > 0;)
    heap_down(L->heap, L->hlen, i);
  pthread_mutex_unlock(&L->mu);
  PyErr_Clear();
  L->timers_cancelled = 0;
  for (size_t i = 0; i < dropped.len; i++)
    Py_DECREF((PyObject *)dropped.v[i]);
  free(dropped.v);
  Py_RETURN_NONE;
}

static PyObject *loop_stop(loopobj_t *L, PyObject *Py_UNUSED(u)) {
  pthread_mutex_lock(&L->mu);
  L->stop_req = L->owned; /* a runtime's loop runs with its runtime */
  treadle_waker_t *w = waker_for_wake(L);
  pthread_mutex_unlock(&L->mu);
  if (w != NULL)
    treadle_wake(w);
  Py_RETURN_NONE;
}

/* run_until_complete's done callback, asyncio's _run_until_complete_cb
 * without its allocations (a bound fut.get_loop): when that one fails
 * for want of memory, nothing stops the loop and run_until_complete
 * never returns. The loop stops unless the future ended in SystemExit or
 * KeyboardInterrupt (run_forever ended already); it stops too when the
 * future cannot say. */
static PyObject *loop_stop_when_done(loopobj_t *L, PyObject *fut) {
  PyObject *cancelled = PyObject_CallMethodNoArgs(fut, str_cancelled_m);
  PyObject *exc = cancelled == Py_False ? PyObject_CallMethodNoArgs(fut, str_exception)
                                        : NULL;
  bool ended = exc != NULL && (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit) ||
                               PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt));
  Py_XDECREF(exc);
  Py_XDECREF(cancelled);
  PyErr_Clear();
  if (ended)
    Py_RETURN_NONE;
  return loop_stop(L, NULL);
}

static PyObject *loop_is_running(loopobj_t *L, PyObject *Py_UNUSED(u)) {
  if (!L->owned)
    return PyBool_FromLong(!L->closed && L->r->rt != NULL);
  return PyBool_FromLong(L->run_join != NULL);
}

static PyObject *loop_set_debug_core(loopobj_t *L, PyObject *on) {
  int v = PyObject_IsTrue(on);
  if (v < 0)
    return NULL;
  L->debug = v;
  Py_RETURN_NONE;
}

/* The root of run_forever's block_on: the loop task's end. */
static treadle_poll_t run_done(void *ud, treadle_cx_t *cx) {
  loopobj_t *L = ud;
  treadle_err_t status;
  void *value;
  return treadle_join_poll(L->run_join, cx, &status, &value);
}

/* GIL. Blocks on the loop task until it ends (*done); else SIGINT
 * (watch) or the wakeup pipe (L->woke) ended the wait, and the caller
 * should run Python's signal handlers. */
static int block_on_task(loopobj_t *L, bool watch, bool *done) {
  tb_root_t st = {.main_poll = run_done, .ud = L, .watch = watch, .tick = true,
                  .wake = L->wake_afd};
  void *value = NULL;
  treadle_err_t err;
  Py_BEGIN_ALLOW_THREADS
  err = treadle_runtime_block_on(L->r->rt, &tb_root_vt, &st, sizeof st, &value);
  Py_END_ALLOW_THREADS
  if (err != 0) {
    pyt_raise(err);
    return -1;
  }
  *done = value == TB_ROOT_DONE_OUT;
  L->woke = value == TB_ROOT_WAKE_OUT;
  return 0;
}

/* run_forever's core (EventLoop.run_forever did asyncio's setup): runs
 * iterations until stop(). Ctrl-C, and SystemExit or KeyboardInterrupt
 * from a callback, end it and raise here. */
static PyObject *loop_run_core(loopobj_t *L, PyObject *const *args, Py_ssize_t n) {
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "_run_core(watch_sigint, wakeup_fd)");
    return NULL;
  }
  int wake_fd = pyt_as_int(args[1]);
  if (wake_fd == -1 && PyErr_Occurred())
    return NULL;
  if (check_open(L) < 0)
    return NULL;
  if (!L->owned || L->run_join != NULL) {
    PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");
    return NULL;
  }
  if (pyt_current != NULL || pyt_loop_running != NULL)
    return pyt_raise(TREADLE_EINRUNTIME);
  if (spawn_task(L, &L->run_join) < 0)
    return NULL;
  bool watch = PyObject_IsTrue(args[0]) == 1; /* the main thread's */
  bool done = false;
  int rc = 0;
  treadle_err_t werr = tb_root_wake_open(L->r->h, wake_fd, &L->wake_afd);
  if (werr != 0) {
    pyt_raise(werr);
    rc = -1;
  }
  while (rc == 0 && !done) {
    rc = block_on_task(L, watch, &done);
    if (rc == 0 && !done && PyErr_CheckSignals() < 0)
      rc = -1;
    if (rc == 0 && !done && L->woke) {
      PyObject *r = PyObject_CallMethodNoArgs((PyObject *)L, str_run_main_calls);
      Py_XDECREF(r);
      if (r == NULL)
        rc = -1;
    }
  }
  if (!done) { /* an error here: end the task, then wait for it */
    PyObject *exc = pyt_fetch_exception();
    pthread_mutex_lock(&L->mu);
    L->end = true;
    treadle_waker_t *w = waker_for_wake(L);
    pthread_mutex_unlock(&L->mu);
    if (w != NULL)
      treadle_wake(w);
    while (!done && block_on_task(L, false, &done) == 0)
      ;
    PyErr_Clear();
    pyt_restore_exception(exc);
  }
  treadle_join_detach(L->run_join);
  L->run_join = NULL;
  treadle_async_fd_free(L->wake_afd); /* its last poll was block_on's */
  L->wake_afd = NULL;
  if (rc == 0 && L->pending_exc != NULL) {
    pyt_restore_exception(L->pending_exc);
    L->pending_exc = NULL;
    return NULL;
  }
  if (rc < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* Drops every queued callback and timer (close). */
static void clear_queues(loopobj_t *L) {
  pthread_mutex_lock(&L->mu);
  vec_t ready = L->ready;
  L->ready = (vec_t){0};
  timer_ent_t *heap = L->heap;
  size_t hlen = L->hlen;
  L->heap = NULL;
  L->hlen = L->hcap = 0;
  pthread_mutex_unlock(&L->mu);
  for (size_t i = 0; i < ready.len; i++) {
    void *p = ready.v[i];
    if ((uintptr_t)p & FN_TAG) { /* a watcher's: it gives its reference back */
      ready_fn_t *f = (ready_fn_t *)((uintptr_t)p & ~FN_TAG);
      f->fn(f);
      PyErr_Clear();
    } else {
      Py_DECREF((PyObject *)p);
    }
  }
  free(ready.v);
  for (size_t i = 0; i < hlen; i++)
    Py_DECREF(heap[i].h);
  free(heap);
}

static PyObject *loop_close_core(loopobj_t *L, PyObject *Py_UNUSED(u)) {
  L->closed = true;
  clear_queues(L);
  Py_RETURN_NONE;
}

/* Counts for tests: ready entries and timers. */
static PyObject *loop_counts(loopobj_t *L, PyObject *Py_UNUSED(u)) {
  pthread_mutex_lock(&L->mu);
  size_t r = L->ready.len, t = L->hlen;
  pthread_mutex_unlock(&L->mu);
  return Py_BuildValue("nn", (Py_ssize_t)r, (Py_ssize_t)t);
}

pyrt_t *pyt_loop_runtime(PyObject *loop) { return ((loopobj_t *)loop)->r; }

bool pyt_is_loop(PyObject *o) { return PyObject_TypeCheck(o, &loop_type); }

bool pyt_loop_closed(PyObject *loop) { return ((loopobj_t *)loop)->closed; }

int pyt_loop_push_fn(PyObject *loop, ready_fn_t *f) {
  return push_ready((loopobj_t *)loop, (void *)((uintptr_t)f | FN_TAG));
}

/* ------------------------------------------------------------- watchers */

/* A watcher: a C task that waits on a leaf (fd readiness or a signal) and
 * queues `fire` (one entry at a time), which runs the user's Handle. */
typedef struct watch_s {
  ready_fn_t fire_rd, fire_wr;
  _Atomic long refs;
  loopobj_t *L;           /* a reference, dropped with the GIL */
  pthread_mutex_t mu;
  bool has_rd, has_wr;    /* mu: a reader / writer is set */
  bool queued_rd, queued_wr; /* mu: its fire entry is in the ready queue */
  bool closed;            /* mu */
  treadle_waker_t *waker; /* mu: the watcher task's */
  treadle_join_t *join;
  /* fd watchers */
  int fd;
  treadle_async_fd_t *afd;
  /* signal watchers */
  int signum;
  treadle_signal_t sig;
  bool sig_armed;
  /* GIL: the user's Handles */
  PyObject *reader, *writer;
} watch_t;

static void watch_unref(watch_t *w) {
  /* acq_rel: the last owner sees the others' writes before freeing. */
  if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (w->afd != NULL)
    treadle_async_fd_free(w->afd);
  treadle_waker_drop(w->waker);
  PyGILState_STATE g = PyGILState_Ensure();
  Py_CLEAR(w->reader);
  Py_CLEAR(w->writer);
  Py_CLEAR(w->L);
  PyGILState_Release(g);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

static watch_t *watch_ref(watch_t *w) {
  /* Relaxed: a new reference from one held. */
  atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
  return w;
}

static void watch_wake(watch_t *w) {
  pthread_mutex_lock(&w->mu);
  treadle_waker_t *k = w->waker != NULL ? treadle_waker_clone(w->waker) : NULL;
  pthread_mutex_unlock(&w->mu);
  if (k != NULL)
    treadle_wake(k);
}

/* GIL: the queued entry runs (or is dropped at close): run the Handle,
 * then let the watcher look again. */
static void fire(watch_t *w, bool rd) {
  pthread_mutex_lock(&w->mu);
  if (rd)
    w->queued_rd = false;
  else
    w->queued_wr = false;
  bool closed = w->closed || w->L->closed;
  pthread_mutex_unlock(&w->mu);
  PyObject *h = Py_XNewRef(rd ? w->reader : w->writer);
  if (h != NULL && !closed)
    (void)run_handle(w->L, h); /* SystemExit and the like stay set */
  Py_XDECREF(h);
  watch_wake(w);
  watch_unref(w);
}

static void fire_rd(ready_fn_t *f) { fire((watch_t *)f, true); }

static void fire_wr(ready_fn_t *f) {
  fire((watch_t *)((char *)f - offsetof(watch_t, fire_wr)), false);
}

/* No GIL. Queues the fire entry of a side (a reference for the queue). */
static void queue_fire(watch_t *w, bool rd) {
  watch_ref(w);
  ready_fn_t *f = rd ? &w->fire_rd : &w->fire_wr;
  if (push_ready(w->L, (void *)((uintptr_t)f | FN_TAG)) < 0) {
    pthread_mutex_lock(&w->mu);
    if (rd)
      w->queued_rd = false;
    else
      w->queued_wr = false;
    pthread_mutex_unlock(&w->mu);
    watch_unref(w); /* no memory: tried again at the next wake */
  }
}

/* Is the fd readable / writable right now (level, as asyncio's selector
 * reports it)? An error or hang-up counts as both, as epoll says. */
static unsigned level(int fd, unsigned want) {
  struct pollfd p = {.fd = fd,
                     .events = (short)(((want & TREADLE_READABLE) ? POLLIN : 0) |
                                       ((want & TREADLE_WRITABLE) ? POLLOUT : 0))};
  if (poll(&p, 1, 0) <= 0)
    return 0;
  unsigned bits = 0;
  if (p.revents & (POLLIN | POLLHUP | POLLERR | POLLRDHUP))
    bits |= TREADLE_READABLE;
  if (p.revents & (POLLOUT | POLLERR | POLLHUP))
    bits |= TREADLE_WRITABLE;
  return bits & want;
}

static treadle_poll_t fdw_poll(treadle_cx_t *cx, void *state) {
  watch_t *w = *(watch_t **)state;
  pthread_mutex_lock(&w->mu);
  if (w->waker == NULL)
    w->waker = treadle_waker_clone(treadle_cx_waker(cx));
  for (;;) {
    if (w->closed) {
      pthread_mutex_unlock(&w->mu);
      return TREADLE_READY;
    }
    unsigned want = (w->has_rd && !w->queued_rd ? TREADLE_READABLE : 0) |
                    (w->has_wr && !w->queued_wr ? TREADLE_WRITABLE : 0);
    pthread_mutex_unlock(&w->mu);
    if (want == 0)
      return TREADLE_PENDING; /* woken by a fire or a change */
    treadle_ready_t rdy;
    treadle_err_t err;
    if (treadle_async_fd_ready_poll(w->afd, cx, want, &rdy, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      return TREADLE_READY; /* closed or shutting down */
    unsigned now = level(treadle_async_fd_fd(w->afd), want);
    if (now != want) /* an edge seen before: clear what is not there */
      treadle_async_fd_clear_ready(w->afd, &rdy, want & ~now);
    pthread_mutex_lock(&w->mu);
    bool rd = (now & TREADLE_READABLE) && w->has_rd && !w->queued_rd && !w->closed;
    bool wr = (now & TREADLE_WRITABLE) && w->has_wr && !w->queued_wr && !w->closed;
    if (rd)
      w->queued_rd = true;
    if (wr)
      w->queued_wr = true;
    pthread_mutex_unlock(&w->mu);
    if (rd)
      queue_fire(w, true);
    if (wr)
      queue_fire(w, false);
    pthread_mutex_lock(&w->mu);
  }
}

static treadle_poll_t sigw_poll(treadle_cx_t *cx, void *state) {
  watch_t *w = *(watch_t **)state;
  pthread_mutex_lock(&w->mu);
  if (w->waker == NULL)
    w->waker = treadle_waker_clone(treadle_cx_waker(cx));
  bool closed = w->closed;
  pthread_mutex_unlock(&w->mu);
  while (!closed) {
    treadle_err_t err;
    if (treadle_signal_poll(&w->sig, cx, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      return TREADLE_READY;
    pthread_mutex_lock(&w->mu);
    closed = w->closed;
    bool q = !closed && !w->queued_rd;
    w->queued_rd = w->queued_rd || q;
    pthread_mutex_unlock(&w->mu);
    if (q) /* deliveries while queued count once, as the kernel's do */
      queue_fire(w, true);
  }
  return TREADLE_READY;
}

static void watch_task_drop(void *state) {
  watch_t *w = *(watch_t **)state;
  if (w->sig_armed)
    treadle_signal_drop(&w->sig);
  w->sig_armed = false;
  watch_unref(w);
}

static const treadle_task_vtable_t fdw_vt = {.poll = fdw_poll,
                                             .drop = watch_task_drop};
static const treadle_task_vtable_t sigw_vt = {.poll = sigw_poll,
                                              .drop = watch_task_drop};

/* The Python face of a watcher: made by the loop, kept in its dict. */
typedef struct {
  PyObject_HEAD
  watch_t *w;
} watchobj_t;

static PyTypeObject watch_type;

static watch_t *watch_new(loopobj_t *L) {
  watch_t *w = calloc(1, sizeof *w);
  if (w == NULL)
    return NULL;
  w->fire_rd.fn = fire_rd;
  w->fire_wr.fn = fire_wr;
  atomic_init(&w->refs, 1);
  pthread_mutex_init(&w->mu, NULL);
  w->L = (loopobj_t *)Py_NewRef((PyObject *)L);
  w->fd = -1;
  return w;
}

static PyObject *watch_start(watch_t *w, const treadle_task_vtable_t *vt) {
  watch_t *task_ref = watch_ref(w);
  treadle_err_t err = treadle_spawn(w->L->r->h, vt, &task_ref, sizeof task_ref, &w->join);
  if (err != 0) {
    watch_unref(w);
    watch_unref(w);
    return pyt_raise(err);
  }
  watchobj_t *o = PyObject_New(watchobj_t, &watch_type);
  if (o == NULL) {
    pthread_mutex_lock(&w->mu);
    w->closed = true;
    pthread_mutex_unlock(&w->mu);
    treadle_join_abort(w->join);
    treadle_join_detach(w->join);
    w->join = NULL;
    watch_unref(w);
    return NULL;
  }
  o->w = w;
  return (PyObject *)o;
}

/* _watch_fd(fd): a watcher of fd's readiness (a dup of it is registered
 * with the runtime's epoll, so that closing fd stays the caller's). */
static PyObject *loop_watch_fd(loopobj_t *L, PyObject *arg) {
  int fd = pyt_as_int(arg);
  if (fd == -1 && PyErr_Occurred())
    return NULL;
  if (check_open(L) < 0 || ensure_task(L) < 0)
    return NULL;
  if (L->r->rt == NULL)
    return pyt_raise(TREADLE_ESHUTDOWN);
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0)
    return PyErr_SetFromErrno(PyExc_OSError);
  int fl = fcntl(dup_fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(dup_fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
    close(dup_fd);
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  watch_t *w = watch_new(L);
  if (w == NULL) {
    close(dup_fd);
    return PyErr_NoMemory();
  }
  w->fd = fd;
  treadle_err_t err = treadle_async_fd_new(L->r->h, dup_fd, &w->afd);
  if (err != 0) {
    close(dup_fd);
    watch_unref(w);
    return pyt_raise(err);
  }
  return watch_start(w, &fdw_vt);
}

/* _watch_signal(signum, handle): runs handle at each delivery. */
static PyObject *loop_watch_signal(loopobj_t *L, PyObject *const *args, Py_ssize_t n) {
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "_watch_signal(signum, handle)");
    return NULL;
  }
  int signum = pyt_as_int(args[0]);
  if (signum == -1 && PyErr_Occurred())
    return NULL;
  if (check_open(L) < 0 || ensure_task(L) < 0)
    return NULL;
  if (L->r->rt == NULL)
    return pyt_raise(TREADLE_ESHUTDOWN);
  watch_t *w = watch_new(L);
  if (w == NULL)
    return PyErr_NoMemory();
  w->signum = signum;
  treadle_err_t err = treadle_signal_init(&w->sig, L->r->h, signum);
  if (err != 0) {
    watch_unref(w);
    return pyt_raise(err);
  }
  w->sig_armed = true;
  w->reader = Py_NewRef(args[1]);
  w->has_rd = true;
  return watch_start(w, &sigw_vt);
}

/* set(readable, handle or None): the reader (True) or writer's Handle. */
static PyObject *watch_set(watchobj_t *o, PyObject *const *args, Py_ssize_t n) {
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "set(readable, handle)");
    return NULL;
  }
  watch_t *w = o->w;
  int rd = PyObject_IsTrue(args[0]);
  if (rd < 0)
    return NULL;
  PyObject *h = args[1] == Py_None ? NULL : Py_NewRef(args[1]);
  Py_XSETREF(*(rd ? &w->reader : &w->writer), h);
  pthread_mutex_lock(&w->mu);
  if (rd)
    w->has_rd = h != NULL;
  else
    w->has_wr = h != NULL;
  pthread_mutex_unlock(&w->mu);
  watch_wake(w);
  Py_RETURN_NONE;
}

static void watch_close(watch_t *w) {
  pthread_mutex_lock(&w->mu);
  bool was = w->closed;
  w->closed = true;
  pthread_mutex_unlock(&w->mu);
  if (was)
    return;
  watch_wake(w);
  if (w->join != NULL) {
    treadle_join_abort(w->join); /* ends a wait that no wake reaches */
    treadle_join_detach(w->join);
    w->join = NULL;
  }
}

static PyObject *watch_close_m(watchobj_t *o, PyObject *Py_UNUSED(u)) {
  watch_close(o->w);
  Py_CLEAR(o->w->reader);
  Py_CLEAR(o->w->writer);
  Py_RETURN_NONE;
}

static PyObject *watch_handles(watchobj_t *o, PyObject *Py_UNUSED(u)) {
  return Py_BuildValue("(OO)", o->w->reader ? o->w->reader : Py_None,
                       o->w->writer ? o->w->writer : Py_None);
}

static void watch_dealloc(watchobj_t *o) {
  watch_close(o->w);
  watch_unref(o->w);
  PyObject_Free(o);
}

static PyMethodDef watch_methods[] = {
    {"set", (PyCFunction)(void (*)(void))watch_set, METH_FASTCALL,
     "set($self, readable, handle, /)\n--\n\nSets or clears (None) the reader or writer."},
    {"close", (PyCFunction)watch_close_m, METH_NOARGS,
     "close($self, /)\n--\n\nStops watching and drops the handles."},
    {"handles", (PyCFunction)watch_handles, METH_NOARGS,
     "handles($self, /)\n--\n\n(reader, writer): the Handles, or None."},
    {NULL}};

static PyTypeObject watch_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core.Watcher",
    .tp_basicsize = sizeof(watchobj_t),
    .tp_dealloc = (destructor)watch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An fd or signal watcher of a treadle.EventLoop (internal).",
    .tp_methods = watch_methods,
};

/* --------------------------------------------------------- the type */

static int loop_init(loopobj_t *L, PyObject *args, PyObject *kw) {
  static char *names[] = {"runtime", "owned", NULL};
  PyObject *core;
  int owned;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "Op", names, &core, &owned))
    return -1;
  pyrt_t *r = pyt_core_record(core);
  if (r == NULL)
    return -1;
  if (L->r != NULL) {
    PyErr_SetString(PyExc_RuntimeError, "the loop is initialised already");
    return -1;
  }
  if (r->loop != NULL) {
    PyErr_SetString(PyExc_RuntimeError, "this runtime has a loop already");
    return -1;
  }
  L->r = pyrt_ref(r);
  L->owned = owned;
  r->loop = (PyObject *)L; /* borrowed: cleared when L goes */
  return 0;
}

static PyObject *loop_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  loopobj_t *L = (loopobj_t *)PyType_GenericNew(type, args, kw);
  if (L != NULL)
    pthread_mutex_init(&L->mu, NULL);
  return (PyObject *)L;
}

static int loop_traverse(loopobj_t *L, visitproc visit, void *arg) {
  Py_VISIT(L->pending_exc); /* subtype_traverse visits the type */
  Py_VISIT(L->resolved_args);
  pthread_mutex_lock(&L->mu);
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < L->ready.len; i++)
    if (!((uintptr_t)L->ready.v[i] & FN_TAG))
      rc = visit((PyObject *)L->ready.v[i], arg);
  for (size_t i = 0; rc == 0 && i < L->hlen; i++)
    rc = visit(L->heap[i].h, arg);
  pthread_mutex_unlock(&L->mu);
  return rc;
}

static int loop_clear(loopobj_t *L) {
  clear_queues(L);
  Py_CLEAR(L->pending_exc);
  Py_CLEAR(L->resolved_args);
  return 0;
}

static void loop_dealloc(loopobj_t *L) {
  PyObject_GC_UnTrack(L);
  if (L->weakreflist != NULL)
    PyObject_ClearWeakRefs((PyObject *)L);
  loop_clear(L);
  if (L->r != NULL) {
    if (L->r->loop == (PyObject *)L)
      L->r->loop = NULL;
    pyrt_unref(L->r);
  }
  free(L->spare.v);
  pthread_mutex_destroy(&L->mu);
  Py_TYPE(L)->tp_free(L); /* subtype_dealloc drops the type's reference */
}

#define VC(fn) (PyCFunction)(void (*)(void))(fn), METH_FASTCALL | METH_KEYWORDS

static PyMethodDef loop_methods[] = {
    {"call_soon", VC(loop_call_soon),
     "call_soon($self, callback, /, *args, context=None)\n--\n\n"
     "Runs callback(*args) in the loop's next iteration: an asyncio.Handle."},
    {"call_soon_threadsafe", VC(loop_call_soon_threadsafe),
     "call_soon_threadsafe($self, callback, /, *args, context=None)\n--\n\n"
     "call_soon from any thread; wakes the loop through the runtime."},
    {"call_at", VC(loop_call_at),
     "call_at($self, when, callback, /, *args, context=None)\n--\n\n"
     "Runs callback(*args) once time() reaches when: an asyncio.TimerHandle."},
    {"call_later", VC(loop_call_later),
     "call_later($self, delay, callback, /, *args, context=None)\n--\n\n"
     "call_at(time() + delay, ...)."},
    {"create_task", VC(loop_create_task),
     "create_task($self, coro, /, *, name=None, context=None)\n--\n\n"
     "Schedules coro as an asyncio.Task of this loop."},
    {"create_future", (PyCFunction)loop_create_future, METH_NOARGS,
     "create_future($self, /)\n--\n\nAn asyncio.Future of this loop."},
    {"time", (PyCFunction)loop_time, METH_NOARGS,
     "time($self, /)\n--\n\nThe loop's clock: treadle's monotonic clock, in seconds."},
    {"stop", (PyCFunction)loop_stop, METH_NOARGS,
     "stop($self, /)\n--\n\nEnds run_forever after the current iteration."},
    {"_stop_when_done", (PyCFunction)loop_stop_when_done, METH_O,
     "_stop_when_done($self, future, /)\n--\n\nrun_until_complete's done callback: "
     "stop(), unless the future ended in SystemExit or KeyboardInterrupt."},
    {"is_running", (PyCFunction)loop_is_running, METH_NOARGS,
     "is_running($self, /)\n--\n\nTrue inside run_forever (a runtime's own "
     "loop: while its runtime runs)."},
    {"_timer_handle_cancelled", (PyCFunction)loop_timer_cancelled, METH_O,
     "_timer_handle_cancelled($self, handle, /)\n--\n\nTimerHandle.cancel's notice."},
    {"_set_debug_core", (PyCFunction)loop_set_debug_core, METH_O,
     "_set_debug_core($self, on, /)\n--\n\nMirrors set_debug in C."},
    {"_run_core", (PyCFunction)(void (*)(void))loop_run_core, METH_FASTCALL,
     "_run_core($self, watch_sigint, wakeup_fd, /)\n--\n\nrun_forever's wait, without "
     "the GIL; a byte on wakeup_fd (-1: none) wakes it to run Python's signal handlers "
     "and _run_main_calls."},
    {"_close_core", (PyCFunction)loop_close_core, METH_NOARGS,
     "_close_core($self, /)\n--\n\nMarks the loop closed; drops its callbacks."},
    {"_counts", (PyCFunction)loop_counts, METH_NOARGS,
     "_counts($self, /)\n--\n\n(ready callbacks, timers) now."},
    {"_watch_fd", (PyCFunction)loop_watch_fd, METH_O,
     "_watch_fd($self, fd, /)\n--\n\nA readiness watcher of fd."},
    {"_watch_signal", (PyCFunction)(void (*)(void))loop_watch_signal, METH_FASTCALL,
     "_watch_signal($self, signum, handle, /)\n--\n\nRuns handle at each delivery."},
    {NULL}};

static PyTypeObject loop_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core.LoopCore",
    .tp_basicsize = sizeof(loopobj_t),
    .tp_dealloc = (destructor)loop_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The C core of treadle.EventLoop: ready queue, timers, the "
              "loop task (internal; use treadle.EventLoop).",
    .tp_traverse = (traverseproc)loop_traverse,
    .tp_clear = (inquiry)loop_clear,
    .tp_weaklistoffset = offsetof(loopobj_t, weakreflist),
    .tp_methods = loop_methods,
    .tp_init = (initproc)loop_init,
    .tp_new = loop_new,
};

static PyObject *import_attr(const char *mod, const char *name) {
  PyObject *m = PyImport_ImportModule(mod);
  PyObject *a = m != NULL ? PyObject_GetAttrString(m, name) : NULL;
  Py_XDECREF(m);
  return a;
}

/* Our Handle and TimerHandle classes, asyncio's subclassed. */
static int make_handle_types(void) {
  PyType_Slot slots[] = {
      {Py_tp_dealloc, handle_dealloc},
      {Py_tp_traverse, handle_traverse},
      {Py_tp_clear, handle_clear},
      {Py_tp_doc, "asyncio's Handle, made by treadle.EventLoop (internal)."},
      {0, NULL}};
  PyType_Spec spec = {.name = "treadle._core.Handle",
                      .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
                      .slots = slots};
  handle_type = (PyTypeObject *)PyType_FromSpecWithBases(&spec, handle_cls);
  if (handle_type == NULL)
    return -1;
  spec.name = "treadle._core.TimerHandle";
  slots[3].pfunc = "asyncio's TimerHandle, made by treadle.EventLoop (internal).";
  timer_type = (PyTypeObject *)PyType_FromSpecWithBases(&spec, timer_cls);
  if (timer_type == NULL)
    return -1;
  /* call_soon's reserve (RESERVE): Handles made and freed, into it */
  for (int i = 0; i < RESERVE; i++) {
    PyObject *h = PyType_GenericAlloc(handle_type, 0);
    if (h == NULL)
      return -1;
    Py_DECREF(h);
  }
  args_refill();
  if (args_reserve_n < RESERVE) {
    PyErr_NoMemory();
    return -1;
  }
  return 0;
}

int pyt_loop_init(PyObject *m) {
  handle_cls = import_attr("asyncio.events", "Handle");
  timer_cls = import_attr("asyncio.events", "TimerHandle");
  task_cls = import_attr("asyncio.tasks", "Task");
  future_cls = import_attr("asyncio.futures", "Future");
  if (task_cls == NULL || future_cls == NULL)
    return -1;
  set_running = import_attr("asyncio.events", "_set_running_loop");
  get_running = import_attr("asyncio.events", "_get_running_loop");
  if (handle_cls == NULL || timer_cls == NULL || set_running == NULL ||
      get_running == NULL)
    return -1;
  struct { PyObject **s; const char *v; } strs[] = {
      {&str_run, "_run"}, {&str_cancelled, "_cancelled"},
      {&str_callback, "_callback"}, {&str_args, "_args"},
      {&str_context, "_context"}, {&str_handle_error, "_handle_error"},
      {&str_log_slow, "_log_slow_callback"},
      {&str_slow_duration, "slow_callback_duration"},
      {&str_run_main_calls, "_run_main_calls"}, {&str_self, "__self__"},
      {&str_done, "done"}, {&str_fut_waiter, "_fut_waiter"},
      {&str_create_future, "create_future"}, {&str_set_result, "set_result"},
      {&str_cancelled_m, "cancelled"}, {&str_exception, "exception"},
      {&str_task_factory, "_task_factory"}, {&str_create_task_py, "_create_task_py"},
      {&str_context_kw, "context"}};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
    if ((*strs[i].s = PyUnicode_InternFromString(strs[i].v)) == NULL)
      return -1;
  if ((kw_loop = Py_BuildValue("(s)", "loop")) == NULL)
    return -1;
  struct { Py_ssize_t *off; PyObject *cls; const char *name; } slots[] = {
      {&off_callback, handle_cls, "_callback"}, {&off_args, handle_cls, "_args"},
      {&off_cancelled, handle_cls, "_cancelled"}, {&off_loop, handle_cls, "_loop"},
      {&off_source_tb, handle_cls, "_source_traceback"},
      {&off_repr, handle_cls, "_repr"}, {&off_context, handle_cls, "_context"},
      {&off_when, timer_cls, "_when"}, {&off_scheduled, timer_cls, "_scheduled"}};
  fast_handles = true;
  for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
    PyObject *d = PyObject_GetAttrString(slots[i].cls, slots[i].name);
    if (d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) &&
        ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX)
      *slots[i].off = ((PyMemberDescrObject *)d)->d_member->offset;
    else
      fast_handles = false; /* another Python's Handle: call the class */
    Py_XDECREF(d);
    PyErr_Clear();
  }
  off_weakref = ((PyTypeObject *)handle_cls)->tp_weaklistoffset;
  fast_handles = fast_handles && off_weakref > 0;
  if (fast_handles && make_handle_types() < 0)
    return -1;
  if (PyType_Ready(&loop_type) < 0 || PyType_Ready(&watch_type) < 0 ||
      PyModule_AddFunctions(m, loop_functions) < 0)
    return -1;
  return PyModule_AddObjectRef(m, "LoopCore", (PyObject *)&loop_type);
}
