/* The Python binding's C side, shared by its files (ARCHITECTURE.md "Python").
 *
 * runtime.c  the per-runtime record, the Python lane, GIL and thread
 *            hooks, block_on, shutdown, Runtime and Handle types
 * task.c     Python tasks (a C task whose state holds a coroutine), the
 *            awaitable Op type, JoinHandle, sleep/yield/spawn/signals
 * net.c      TcpListener and TcpStream, whose methods return Ops
 * loop.c     LoopCore, the C base of treadle.EventLoop (asyncio's loop)
 * corebase.c what the C cores of its transports share (their task)
 * transport.c StreamCore, the C core of its stream transport
 * datagram.c DatagramCore, the C core of its datagram transport
 *
 * Every function here is called with the GIL held unless its comment says
 * "no GIL". */
#ifndef PYTREADLE_H
#define PYTREADLE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <pthread.h>
#include <limits.h>

#include "tbind.h"
#include "treadle.h"

/* ------------------------------------------------------------ runtime */

/* What the binding keeps per treadle runtime. Counted: the Runtime object,
 * every Python task and every Handle object hold a reference. */
typedef struct pyrt_s {
  _Atomic long refs;
  treadle_runtime_t *rt;     /* NULL once shut down; main thread only */
  treadle_handle_t *h;       /* a reference; outlives rt */
  int flavor;                /* TREADLE_CURRENT_THREAD or _MULTI_THREAD */
  /* The Python lane: at most one thread of this runtime steps Python
   * code at a time; the others queue the task's waker and go on with C
   * work (ARCHITECTURE.md "GIL discipline"). */
  _Atomic int lane_held;
  _Atomic int lane_waiting;  /* wakers queued; read without mu */
  pthread_mutex_t lane_mu;
  treadle_waker_t **lane_wakers; /* guarded by lane_mu */
  size_t lane_len, lane_cap;     /* guarded by lane_mu */
  PyObject *on_start, *on_stop;  /* user hooks or NULL; freed with GIL */
  PyObject *thread_name;         /* str: its threads' name in `threading` */
  PyObject *loop; /* its treadle.EventLoop (borrowed; GIL), or NULL */
} pyrt_t;

/* The runtime that started this thread (a worker or a blocking-pool
 * thread; the thread holds a reference), or NULL. */
extern __thread pyrt_t *pyt_thread_rt;

pyrt_t *pyrt_ref(pyrt_t *r);
void pyrt_unref(pyrt_t *r); /* any thread; takes the GIL itself */

/* Takes the runtime's lane for a task about to step Python code; false
 * when another thread holds it (the task is then woken when it is free).
 * No GIL. */
bool pyrt_lane_enter(pyrt_t *r, treadle_cx_t *cx);
/* No GIL. */
void pyrt_lane_leave(pyrt_t *r);

/* The record of a RuntimeCore (borrowed), or NULL with TypeError. */
pyrt_t *pyt_core_record(PyObject *core);

/* Raises the Python exception for a treadle error code; returns NULL. */
PyObject *pyt_raise(treadle_err_t err);
/* The exception object for a code (new reference), without raising. */
PyObject *pyt_error_object(treadle_err_t err);
/* Seconds (int or float) to nanoseconds: TypeError, ValueError for NaN;
 * negative is 0 and inf is TREADLE_FOREVER. -1 with an exception set. */
int pyt_duration(PyObject *secs, uint64_t *ns);

/* ------------------------------------------------------------- tasks */

/* What the task that is stepping Python code on this thread runs on;
 * NULL outside a step. */
typedef struct pytask_s pytask_t;
extern __thread pytask_t *pyt_current;
extern __thread treadle_cx_t *pyt_current_cx;
pyrt_t *pytask_runtime(pytask_t *t);

typedef struct joinobj_s joinobj_t;
/* Spawns `awaitable` (a coroutine or anything with __await__) as a
 * Python task on `r`; returns a new JoinHandle. */
PyObject *pyt_spawn(pyrt_t *r, PyObject *awaitable);
/* Runs fn(*args[1:], **kw) (args[0] is fn) on r's blocking pool: a new
 * JoinHandle. */
PyObject *pyt_spawn_blocking(pyrt_t *r, PyObject *args, PyObject *kw);
/* A WakeWatch: `fd` (a pipe's non-blocking read end; -1: none) registered
 * with r's I/O driver for pyt_block_on_step, until its close(). */
PyObject *pyt_wake_watch(pyrt_t *r, int fd);
/* One wait of block_on for the main task `join`: drives the runtime on
 * this thread (releasing the GIL) until the task finishes, or until SIGINT
 * arrives (watch_sigint), 50 ms pass (when the runtime cannot watch
 * signals) or a byte arrives on `wake` (a WakeWatch, or None), so that
 * the caller may run Python's signal handlers. Returns True when the task
 * finished, False on such a return early. */
PyObject *pyt_block_on_step(pyrt_t *r, PyObject *join, int watch_sigint, PyObject *wake);

/* ---------------------------------------------------------------- ops */

typedef enum {
  OP_READY,   /* made complete: the await returns result at once */
  OP_LEAF,    /* a leaf of bindings/common, in `tb` */
  OP_JOIN,    /* a JoinHandle (`tb` joins), optionally with a deadline */
  OP_FUTURE,  /* an asyncio future a treadle task awaits (`owner`) */
} opkind_t;

/* Where an op is in its life. */
typedef enum {
  OP_NEW,      /* made, not awaited yet */
  OP_AWAITED,  /* yielded to the task driver, which polls it */
  OP_POLLED,   /* its C leaf is READY: the outcome waits in the op */
  OP_FINISHED, /* the outcome is a Python object in `result` */
  OP_CONSUMED, /* the await returned it */
} op_stage_t;

/* An awaitable leaf operation. `await op` yields the op to the task
 * driver, which polls it without the GIL until READY, then converts its
 * outcome to Python and resumes the coroutine. */
typedef struct op_s {
  PyObject_HEAD
  opkind_t kind;
  op_stage_t stage;
  const char *what;     /* what it is, for messages: "sleep", "TcpStream.read" */
  bool awaited;         /* awaited once (else it warns when freed) */
  bool anext;           /* an accept for `async for`: ECLOSED ends it */
  bool wait;            /* OP_JOIN of wait(): True or False, whatever the
                           deadline (none for infinite seconds) */
  bool has_view;        /* `view` holds a buffer (read_into, write) */
  PyObject *result;     /* OP_READY's value, or the finished outcome */
  PyObject *owner;      /* stream, listener, JoinHandle or future kept alive */
  PyObject *waker;      /* OP_FUTURE: the done callback that wakes the task */
  PyObject *bridge;     /* awaited in an asyncio task: the future that a
                           treadle task running the op completes */
  tb_op_t tb;           /* the operation of OP_LEAF and OP_JOIN */
  Py_buffer view;
} op_t;

extern PyTypeObject pyt_op_type;
/* A new op; `what` (a static string) names it in messages. An op freed
 * without ever being awaited gives a RuntimeWarning. */
op_t *pyt_op_new(opkind_t kind, PyObject *owner, const char *what);
/* Frees an op that was never handed to Python code (no warning). */
void pyt_op_drop(op_t *op);
/* An op whose await returns `value` (stolen) at once. */
PyObject *pyt_op_ready(PyObject *value, const char *what);
/* An op whose await raises the error of `err` (or the exception set now,
 * when err is 0). */
PyObject *pyt_op_error(treadle_err_t err, const char *what);

/* ---------------------------------------------------------------- net */

extern PyTypeObject pyt_stream_type, pyt_listener_type;
/* GIL: the Python outcome of a READY accept, connect, read or write (new
 * ref, or NULL with an exception set). */
PyObject *pyt_net_finish(op_t *op);
int pyt_net_init(PyObject *module);

/* ---------------------------------------------------------------- loop */

/* The treadle.EventLoop whose iteration runs on this thread, or NULL. */
extern __thread PyObject *pyt_loop_running;
/* Makes `loop` asyncio's running loop on this thread: returns the one it
 * replaced (new reference), or NULL with an exception set. */
PyObject *pyt_loop_enter(PyObject *loop);
/* Puts back what pyt_loop_enter replaced (steals prev). -1 with
 * MemoryError when that fails: prev is then put back at this thread's
 * next pyt_loop_enter or pyt_loop_restore_due. */
int pyt_loop_leave(PyObject *loop, PyObject *prev);
/* Puts back what a failed pyt_loop_leave could not: 0 when nothing is
 * due (any more), -1 with MemoryError when it fails again. */
int pyt_loop_restore_due(void);
/* A runtime thread ends: drops what a failed pyt_loop_leave kept to put
 * back (the thread's running loop ends with it). */
void pyt_loop_thread_end(void);
/* On a thread of the loop's runtime: its asyncgen hooks become the
 * thread's (once). */
void pyt_loop_thread_hooks(PyObject *loop);
int pyt_loop_init(PyObject *module);
/* The runtime record of a treadle.EventLoop (borrowed). */
pyrt_t *pyt_loop_runtime(PyObject *loop);
/* o is a treadle.EventLoop. */
bool pyt_is_loop(PyObject *o);
/* GIL: close() has run on the loop (its queued C callbacks only give
 * their references back). */
bool pyt_loop_closed(PyObject *loop);

/* A C callback in a loop's ready queue: it runs `fn` with the GIL, in the
 * runtime's lane, in an iteration (or at close, when pyt_loop_closed).
 * The queue holds the entry's owner by a reference the callback gives
 * back. An exception it leaves set is reported (SystemExit and
 * KeyboardInterrupt end run_forever). */
typedef struct ready_fn_s {
  void (*fn)(struct ready_fn_s *self);
} ready_fn_t;
/* Any thread, GIL or not: queues f (the loop wakes). -1: no memory. */
int pyt_loop_push_fn(PyObject *loop, ready_fn_t *f);

/* ----------------------------------------------------------- transport */

/* What the two transport cores, StreamCore and DatagramCore, share
 * (corebase.c): the head of their record, its task, set-up and close.
 * Each core's record starts with a corebase_t; its ops say what differs. */
typedef struct corebase_s corebase_t;
typedef struct {
  /* mu held: what the task waits for now (TREADLE_READABLE and/or
   * TREADLE_WRITABLE), 0 for nothing: a wake asks again. */
  unsigned (*want)(corebase_t *c);
  /* mu held, no GIL: sends what waits; reads and queues rd_fn. */
  void (*send)(corebase_t *c, int fd, const treadle_ready_t *rdy);
  void (*recv)(corebase_t *c, int fd, const treadle_ready_t *rdy);
  /* The core's C callbacks in the loop's ready queue (GIL): hand over
   * what was read; report writes (flow control, errors, close). */
  void (*rd_fn)(ready_fn_t *f);
  void (*wr_fn)(ready_fn_t *f);
  /* mu held: the bytes waiting to be sent; forgets them (abort). */
  size_t (*pending)(corebase_t *c);
  void (*drop_pending)(corebase_t *c);
  /* GIL, at the last reference: frees what the record holds past its head. */
  void (*free_rest)(corebase_t *c);
} corebase_ops_t;

struct corebase_s {
  ready_fn_t rd_fn;       /* first: rd_fn's address is the record's */
  ready_fn_t wr_fn;       /* its record: (char *)f - offsetof(corebase_t, wr_fn) */
  const corebase_ops_t *ops;
  _Atomic long refs;      /* the Python object, the task, each queued fn */
  PyObject *loop;         /* GIL; a reference, dropped at free */
  PyObject *transport;    /* GIL; the Python transport, until close */
  PyObject *protocol;     /* GIL; what rd_fn gives data to */
  treadle_async_fd_t *afd; /* the transport's fd, registered; never closed here */
  treadle_join_t *join;   /* GIL */
  char *rbuf;             /* the read buffer, malloc'd apart from the record */
  pthread_mutex_t mu;
  /* mu: */
  treadle_waker_t *waker; /* the task's */
  bool closed;            /* close(): the task ends */
  bool reading;           /* the transport reads */
  bool rd_held;           /* what was read waits for rd_fn */
  bool rd_queued;         /* rd_fn is in the ready queue */
  bool wr_queued;         /* wr_fn is in the ready queue */
  uint8_t requeue;        /* COREBASE_RD_FN / _WR_FN: owed, but its queueing
                             found no memory; the task queues it again */
  int werr;               /* errno of a failed send: StreamCore sends no more;
                             DatagramCore sends on once wr_fn reported it */
  size_t low;             /* the low-water mark: wr_fn when reached */
};

/* A core's Python object; c is NULL until __init__ succeeds. */
typedef struct {
  PyObject_HEAD
  corebase_t *c;
} corebase_obj_t;

corebase_t *corebase_ref(corebase_t *c);
/* Any thread, GIL or not. */
void corebase_unref(corebase_t *c);
/* mu held: a clone of the task's waker (or NULL), to wake after unlocking. */
treadle_waker_t *corebase_waker(corebase_t *c);
/* Wakes and drops w; NULL is nothing. */
void corebase_wake(treadle_waker_t *w);
enum { COREBASE_RD_FN = 1, COREBASE_WR_FN = 2 };
/* Any thread, mu held: queues f, rd_fn or wr_fn, with a reference for the
 * queue; *flag (rd_queued or wr_queued) is set already. False when there
 * is no memory: *flag is cleared again and the task queues f at its next
 * poll (a caller outside the task wakes it), every poll until it can. */
bool corebase_queue(corebase_t *c, ready_fn_t *f, bool *flag);
/* mu held, no GIL: the task's send took what waits to be sent from
 * `before` bytes to `after`; queues wr_fn when the transport must hear of
 * it (a failed send, the low-water mark reached, nothing left). */
void corebase_sent(corebase_t *c, size_t before, size_t after);
/* o's core, or NULL with RuntimeError when __init__ has not run. */
corebase_t *corebase_live(corebase_obj_t *o);
/* __init__'s first checks: o is not initialised, loop is a treadle.EventLoop
 * (`usage` names the call in the TypeError), its runtime runs. The loop's
 * runtime, or NULL with an exception set. */
pyrt_t *corebase_runtime(corebase_obj_t *o, PyObject *loop, const char *usage);
/* A record of `size` bytes (zeroed; a corebase_t at its head) with an
 * rsize-byte read buffer, over fd (made non-blocking; it stays the
 * caller's) registered on r's I/O driver; NULL with an exception set. The caller
 * fills in its own fields, then calls corebase_start. */
corebase_t *corebase_new(size_t size, const corebase_ops_t *ops, pyrt_t *r, PyObject *loop,
                         int fd, PyObject *transport, size_t rsize);
/* Spawns c's task on r and gives c to o: 0; -1 with an exception set, c
 * freed. */
int corebase_start(corebase_obj_t *o, corebase_t *c, pyrt_t *r);
/* Ends the task and detaches the fd (once: the driver no longer watches it
 * when this returns, and the caller may close it); drops the transport and
 * the protocol. */
void corebase_close(corebase_t *c);
/* The cores' base type, treadle._core._CoreBase: their dealloc and the
 * methods they share: close(), set_low(low), get_write_buffer_size() and
 * drop_buffer(). Not instantiable. */
extern PyTypeObject corebase_type;

/* The C stream transport's type, treadle._core.StreamCore (transport.c). */
int pyt_transport_init(PyObject *module);
/* The C datagram transport's type, treadle._core.DatagramCore
 * (datagram.c). */
int pyt_datagram_init(PyObject *module);

/* ------------------------------------------------------------ compat */

/* The exception being raised (new reference, traceback attached), taken
 * off the thread: PyErr_GetRaisedException of 3.12, for 3.11. */
static inline PyObject *pyt_fetch_exception(void) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  if (type == NULL)
    return NULL;
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb != NULL)
    PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  return value;
}
#define pyt_fetch_exception_or_null pyt_fetch_exception
/* Raises exc again (stolen). */
static inline void pyt_restore_exception(PyObject *exc) {
  if (exc == NULL)
    return;
  PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc,
                PyException_GetTraceback(exc));
}
static inline PyObject *pyt_tuple_from_array(PyObject *const *v, Py_ssize_t n) {
  PyObject *t = PyTuple_New(n);
  if (t == NULL)
    return NULL;
  for (Py_ssize_t i = 0; i < n; i++)
    PyTuple_SET_ITEM(t, i, Py_NewRef(v[i]));
  return t;
}
static inline int pyt_as_int(PyObject *o) {
  if (!PyLong_Check(o)) {
    PyErr_Format(PyExc_TypeError, "an int was expected, not %.100s",
                 Py_TYPE(o)->tp_name);
    return -1;
  }
  int overflow;
  long v = PyLong_AsLongAndOverflow(o, &overflow);
  if (overflow != 0 || v < INT_MIN || v > INT_MAX) {
    PyErr_SetString(PyExc_OverflowError, "value out of range");
    return -1;
  }
  return (int)v;
}

int pyt_runtime_init(PyObject *module);
int pyt_task_init(PyObject *module);
/* Internal test hooks (testhooks.c): _core._test_fail_alloc and friends. */
int pyt_testhooks_init(PyObject *module);

/* The module's exceptions. */
extern PyObject *pyt_Error, *pyt_ShutdownError, *pyt_ClosedError,
    *pyt_CancelledError;

#endif
