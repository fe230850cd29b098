/* Python tasks, the awaitable Op, JoinHandle, and the module functions
 * that make ops (ARCHITECTURE.md "Python").
 *
 * A Python task is a treadle task whose state holds a coroutine. Its poll:
 * 1. If the coroutine waits on an op and no cancel is pending, poll the
 *    op's C leaf future without the GIL; PENDING means the leaf holds the
 *    task's waker, so return PENDING.
 * 2. Take the runtime's Python lane (runtime.c), then the GIL. Finish the
 *    op (turn its C outcome into Python objects), or throw CancelledError
 *    if the task was aborted, and send into the coroutine until it yields
 *    its next op or returns.
 * 3. Give back the GIL and the lane; go to 1 with the new op, so that its
 *    system call, too, runs without the GIL.
 * The output is a PyObject (NULL for None): a returned value, or an
 * exception with the pointer's low bit set; cancellation is
 * TREADLE_ECANCELED. An exception nobody retrieves is printed once.
 *
 * Abort is asyncio's cancel: it sets a flag shared with the JoinHandle and
 * wakes the task, which throws CancelledError at its await. A task that
 * the runtime drops at shutdown has its coroutine closed instead. */
#include "pytreadle.h"

#include <limits.h>
#include <signal.h>
#include <stdint.h>

__thread pytask_t *pyt_current;
__thread treadle_cx_t *pyt_current_cx;
static __thread bool dropping; /* a task's coroutine is being closed */

/* What a task shares with its JoinHandle. */
typedef struct {
  _Atomic long refs;
  _Atomic int cancel;                /* 1: abort requested, not thrown yet */
  _Atomic(treadle_waker_t *) waker;  /* the task's, from its first poll */
} shared_t;

struct pytask_s {
  PyObject *coro; /* the iterator we send into; NULL once finished */
  PyObject *ctx;  /* contextvars.Context copied at spawn */
  op_t *op;       /* what the coroutine awaits, or NULL */
  pyrt_t *r;
  shared_t *sh;
  PyObject *tref; /* its TaskRef, asyncio's current_task() in it, or NULL */
};

/* What a JoinHandle knows of its task's end. */
typedef enum {
  JOIN_PENDING,   /* not known yet */
  JOIN_VALUE,     /* `value` is the returned value */
  JOIN_EXCEPTION, /* `value` is the exception it raised */
  JOIN_CANCELLED, /* aborted, or dropped by a runtime shutting down */
} join_outcome_t;

struct joinobj_s {
  PyObject_HEAD
  treadle_join_t *j;
  shared_t *sh;      /* NULL for a blocking job */
  join_outcome_t outcome;
  PyObject *value;   /* the value or the exception */
  bool retrieved;    /* an awaiter saw the outcome */
  bool awaiting;     /* a task awaits it now */
  bool has_pending;  /* block_on's root took the output: pending_* */
  treadle_err_t pending_status;
  void *pending_value;
};

static PyTypeObject join_type;

pyrt_t *pytask_runtime(pytask_t *t) { return t->r; }

#define EXC_TAG ((uintptr_t)1)

static void *tag_exception(PyObject *exc) {
  return (void *)((uintptr_t)exc | EXC_TAG);
}

/* Takes the exception being raised, with its traceback attached, as a
 * tagged output pointer. */
static void *fetch_exception(void) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb != NULL)
    PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  return tag_exception(value);
}

static void shared_unref(shared_t *sh) {
  if (sh == NULL)
    return;
  /* acq_rel: the last owner sees the other's use of the waker. */
  if (atomic_fetch_sub_explicit(&sh->refs, 1, memory_order_acq_rel) != 1)
    return;
  treadle_waker_drop(atomic_load_explicit(&sh->waker, memory_order_relaxed));
  free(sh);
}

/* ----------------------------------------------------------- FutWaker */

/* The done callback a treadle task adds to an asyncio future it awaits:
 * it runs in the loop's iteration, sets `done` and wakes the task. */
typedef struct {
  PyObject_HEAD
  shared_t *sh;
  _Atomic int done;
} futwaker_t;

static PyObject *futwaker_call(futwaker_t *fw, PyObject *Py_UNUSED(args),
                               PyObject *Py_UNUSED(kw)) {
  /* seq_cst: set before the wake; the poll that the wake causes sees it. */
  atomic_store_explicit(&fw->done, 1, memory_order_seq_cst);
  /* seq_cst: the task stored its waker at its first poll, before any
   * step could await a future. */
  treadle_waker_t *w = atomic_load_explicit(&fw->sh->waker, memory_order_seq_cst);
  if (w != NULL)
    treadle_wake_by_ref(w);
  Py_RETURN_NONE;
}

static void futwaker_dealloc(futwaker_t *fw) {
  shared_unref(fw->sh);
  PyObject_Free(fw);
}

static PyTypeObject futwaker_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core.FutureWaker",
    .tp_basicsize = sizeof(futwaker_t),
    .tp_dealloc = (destructor)futwaker_dealloc,
    .tp_call = (ternaryfunc)futwaker_call,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Wakes a treadle task once the asyncio future it awaits is done.",
};

/* No GIL. */
static bool futwaker_done(PyObject *fw) {
  /* seq_cst: see futwaker_call. */
  return atomic_load_explicit(&((futwaker_t *)fw)->done, memory_order_seq_cst) != 0;
}

static void report_unretrieved(PyObject *exc) {
  if (PyErr_GivenExceptionMatches(exc, pyt_CancelledError))
    return;
  PySys_WriteStderr("Task exception was never retrieved\n");
  PyObject *tb = PyException_GetTraceback(exc);
  PyErr_Display((PyObject *)Py_TYPE(exc), exc, tb);
  Py_XDECREF(tb);
}

/* drop_output of tasks and blocking jobs: an output nobody joined. Any
 * thread. */
static void output_drop(void *value) {
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *obj = (PyObject *)((uintptr_t)value & ~EXC_TAG);
  if ((uintptr_t)value & EXC_TAG)
    report_unretrieved(obj);
  Py_DECREF(obj);
  PyGILState_Release(g);
}

/* ----------------------------------------------------------------- Op */

/* Set by an atexit hook: ops freed while the interpreter exits (module
 * globals) were not forgotten by anyone, so they do not warn. */
static bool exiting;

op_t *pyt_op_new(opkind_t kind, PyObject *owner, const char *what) {
  op_t *op = PyObject_New(op_t, &pyt_op_type);
  if (op == NULL)
    return NULL;
  op->kind = kind;
  op->stage = OP_NEW;
  op->what = what;
  op->awaited = false;
  op->anext = false;
  op->wait = false;
  op->has_view = false;
  op->result = NULL;
  op->owner = Py_XNewRef(owner);
  op->waker = NULL;
  op->bridge = NULL;
  tb_op_none(&op->tb);
  return op;
}

void pyt_op_drop(op_t *op) {
  op->awaited = true; /* nobody had it to forget */
  Py_DECREF(op);
}

PyObject *pyt_op_ready(PyObject *value, const char *what) {
  if (value == NULL)
    return NULL;
  op_t *op = pyt_op_new(OP_READY, NULL, what);
  if (op == NULL) {
    Py_DECREF(value);
    return NULL;
  }
  op->result = value;
  op->stage = OP_FINISHED;
  return (PyObject *)op;
}

static void join_take(joinobj_t *jo, treadle_err_t status, void *value);

static void *fetch_exception(void);

PyObject *pyt_op_error(treadle_err_t err, const char *what) {
  if (err != 0)
    pyt_raise(err);
  op_t *op = pyt_op_new(OP_READY, NULL, what);
  void *exc = fetch_exception();
  if (op == NULL) {
    Py_DECREF((PyObject *)((uintptr_t)exc & ~EXC_TAG));
    return NULL;
  }
  op->result = exc;
  op->stage = OP_FINISHED;
  return (PyObject *)op;
}

/* A RuntimeWarning for an op that nobody awaited, as Python gives one for
 * a coroutine: `treadle.sleep(1)` without `await` does nothing. Keeps the
 * exception being raised, if any (dealloc may run in the middle of it). */
static void warn_never_awaited(op_t *op) {
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                       "treadle operation %s was never awaited", op->what) < 0)
    PyErr_WriteUnraisable(NULL); /* op is going: no repr of it */
  PyErr_Restore(type, value, tb);
}

static void op_dealloc(op_t *op) {
  if (!op->awaited && !exiting)
    warn_never_awaited(op);
  switch (op->kind) {
  case OP_READY:
  case OP_LEAF:
    break;
  case OP_FUTURE:
    if (op->waker != NULL) { /* a cancelled wait: the future forgets us */
      PyObject *res = PyObject_CallMethod(op->owner, "remove_done_callback", "O", op->waker);
      if (res == NULL)
        PyErr_Clear();
      Py_XDECREF(res);
    }
    break;
  case OP_JOIN:
    /* Polled READY and never finished: keep what was joined. */
    if (op->stage == OP_POLLED && op->tb.ready && !op->tb.timed_out)
      join_take((joinobj_t *)op->owner, op->tb.u.join.status,
                op->tb.u.join.value);
    if (op->stage >= OP_AWAITED && op->stage < OP_CONSUMED) /* still waits */
      ((joinobj_t *)op->owner)->awaiting = false;
    break;
  }
  tb_op_clear(&op->tb);
  if (op->has_view)
    PyBuffer_Release(&op->view);
  Py_XDECREF(op->result);
  Py_XDECREF(op->owner);
  Py_XDECREF(op->waker);
  Py_XDECREF(op->bridge);
  PyObject_Free(op);
}

/* No GIL. The C poll of an op; READY leaves it OP_POLLED. */
static treadle_poll_t op_poll(op_t *op, treadle_cx_t *cx) {
  if (op->stage >= OP_POLLED)
    return TREADLE_READY;
  treadle_poll_t p = TREADLE_READY;
  switch (op->kind) {
  case OP_READY:
    break;
  case OP_LEAF:
    p = tb_op_poll(&op->tb, cx);
    break;
  case OP_JOIN: {
    joinobj_t *jo = (joinobj_t *)op->owner;
    if (jo->outcome == JOIN_PENDING && !jo->has_pending)
      p = tb_op_poll(&op->tb, cx);
    break;
  }
  case OP_FUTURE:
    /* The done callback wakes the task (its shared waker) after it sets
     * the flag, so a PENDING here is followed by a wake. */
    p = futwaker_done(op->waker) ? TREADLE_READY : TREADLE_PENDING;
    break;
  }
  if (p == TREADLE_READY)
    op->stage = OP_POLLED;
  return p;
}

/* GIL. Turns a READY op's C outcome into op->result; -1 with an
 * exception set when the outcome is an error. */
static int op_finish(op_t *op) {
  PyObject *res = NULL;
  switch (op->kind) {
  case OP_READY:
    break;
  case OP_FUTURE: /* Future.__await__ reads the outcome itself */
    Py_CLEAR(op->waker);
    res = Py_NewRef(Py_None);
    break;
  case OP_LEAF:
    if (op->tb.kind == TB_SLEEP || op->tb.kind == TB_YIELD ||
        op->tb.kind == TB_SIGNAL) /* None, or the error */
      res = op->tb.err != 0 ? pyt_raise(op->tb.err) : Py_NewRef(Py_None);
    else
      res = pyt_net_finish(op);
    break;
  case OP_JOIN: {
    joinobj_t *jo = (joinobj_t *)op->owner;
    if (op->tb.timed_out) { /* False; ENOTIME (no timers) raises */
      res = op->tb.err == TREADLE_ETIMEDOUT ? Py_NewRef(Py_False)
                                            : pyt_raise(op->tb.err);
      break;
    }
    if (jo->outcome == JOIN_PENDING) {
      if (jo->has_pending)
        join_take(jo, jo->pending_status, jo->pending_value);
      else
        join_take(jo, op->tb.u.join.status, op->tb.u.join.value);
    }
    op->stage = OP_FINISHED; /* the outcome now belongs to the JoinHandle */
    if (op->wait) { /* treadle.timeout's wait: done */
      res = Py_NewRef(Py_True);
      break;
    }
    jo->retrieved = true;
    if (jo->outcome == JOIN_VALUE)
      res = Py_NewRef(jo->value);
    else if (jo->outcome == JOIN_EXCEPTION)
      PyErr_SetObject((PyObject *)Py_TYPE(jo->value), jo->value);
    else
      pyt_raise(TREADLE_ECANCELED);
    break;
  }
  }
  tb_op_clear(&op->tb); /* the outcome is Python's now */
  op->stage = OP_FINISHED;
  if (res == NULL) {
    op->result = fetch_exception();
    return -1;
  }
  op->result = res;
  return 0;
}

static PyObject *bridge_fn; /* treadle._loop._bridge_op */

/* An op awaited by an asyncio task on a treadle loop: a treadle task
 * runs it (the op's leaf moves to a new op that the task awaits), and
 * the asyncio task awaits a future that the treadle task completes
 * (treadle._loop._bridge_op). Returns the future, or NULL. */
static PyObject *bridge(op_t *op) {
  if (bridge_fn == NULL) {
    PyObject *m = PyImport_ImportModule("treadle._loop");
    bridge_fn = m != NULL ? PyObject_GetAttrString(m, "_bridge_op") : NULL;
    Py_XDECREF(m);
    if (bridge_fn == NULL)
      return NULL;
  }
  op_t *inner = pyt_op_new(op->kind, NULL, op->what);
  if (inner == NULL)
    return NULL;
  inner->tb = op->tb;
  tb_op_none(&op->tb);
  inner->owner = op->owner;
  op->owner = NULL;
  inner->view = op->view;
  inner->has_view = op->has_view;
  op->has_view = false;
  inner->anext = op->anext;
  op->kind = OP_READY; /* what it held is inner's now */
  PyObject *fut = PyObject_CallFunctionObjArgs(bridge_fn, pyt_loop_running,
                                               (PyObject *)inner, NULL);
  Py_DECREF(inner);
  return fut;
}

static PySendResult op_send(op_t *op, PyObject *Py_UNUSED(arg), PyObject **out) {
  op->awaited = true;
  if (op->bridge != NULL) {
    if (op->stage == OP_CONSUMED) {
      PyErr_SetString(PyExc_RuntimeError, "this awaitable was already awaited");
      *out = NULL;
      return PYGEN_ERROR;
    }
    op->stage = OP_CONSUMED;
    *out = PyObject_CallMethod(op->bridge, "result", NULL);
    Py_CLEAR(op->bridge);
    return *out != NULL ? PYGEN_RETURN : PYGEN_ERROR;
  }
  if (op->stage == OP_NEW) {
    if (pyt_current == NULL && pyt_loop_running != NULL) {
      op->bridge = bridge(op);
      if (op->bridge == NULL) {
        *out = NULL;
        return PYGEN_ERROR;
      }
      op->stage = OP_AWAITED;
      *out = Py_NewRef(op->bridge);
      return PYGEN_NEXT;
    }
    if (pyt_current == NULL) {
      if (dropping)
        PyErr_SetString(pyt_ShutdownError, "the task's runtime dropped it");
      else
        PyErr_SetString(PyExc_RuntimeError,
                        "treadle awaitables must be awaited in a treadle task "
                        "(treadle.run, Runtime.block_on or treadle.spawn)");
      *out = NULL;
      return PYGEN_ERROR;
    }
    if (op->kind == OP_JOIN) {
      joinobj_t *jo = (joinobj_t *)op->owner;
      if (jo->awaiting) {
        PyErr_SetString(PyExc_RuntimeError,
                        "another task or thread is already waiting for "
                        "this JoinHandle");
        *out = NULL;
        return PYGEN_ERROR;
      }
      jo->awaiting = true;
    }
    op->stage = OP_AWAITED;
    *out = Py_NewRef((PyObject *)op);
    return PYGEN_NEXT;
  }
  if (op->stage != OP_FINISHED || op->result == NULL) {
    PyErr_SetString(PyExc_RuntimeError,
                    op->stage == OP_CONSUMED ? "this awaitable was already awaited"
                                   : "treadle awaitable resumed before it was ready");
    *out = NULL;
    return PYGEN_ERROR;
  }
  PyObject *res = op->result;
  op->result = NULL;
  op->stage = OP_CONSUMED;
  if (op->kind == OP_JOIN) /* the wait is over, though the op may live on */
    ((joinobj_t *)op->owner)->awaiting = false;
  if ((uintptr_t)res & EXC_TAG) {
    PyObject *exc = (PyObject *)((uintptr_t)res & ~EXC_TAG);
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    *out = NULL;
    return PYGEN_ERROR;
  }
  *out = res;
  return PYGEN_RETURN;
}

static PyObject *op_iternext(op_t *op) {
  PyObject *out;
  PySendResult r = op_send(op, Py_None, &out);
  if (r == PYGEN_NEXT)
    return out;
  if (r == PYGEN_RETURN) {
    if (out == Py_None)
      Py_DECREF(out); /* plain StopIteration */
    else {
      PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, out);
      Py_DECREF(out);
      if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
      }
    }
  }
  return NULL;
}

static PyObject *op_send_method(op_t *op, PyObject *Py_UNUSED(arg)) {
  return op_iternext(op);
}

static PyObject *op_await(op_t *op) { return Py_NewRef((PyObject *)op); }

static PyAsyncMethods op_async = {
    .am_await = (unaryfunc)op_await,
    .am_send = (sendfunc)op_send,
};

static PyMethodDef op_methods[] = {
    {"send", (PyCFunction)op_send_method, METH_O,
     "send($self, value, /)\n--\n\nThe generator protocol (await uses it)."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     "__class_getitem__($type, item, /)\n--\n\n"
     "Op[T]: an op whose await gives a T (PEP 585)."},
    {NULL}};

PyTypeObject pyt_op_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core.Op",
    .tp_basicsize = sizeof(op_t),
    .tp_dealloc = (destructor)op_dealloc,
    .tp_as_async = &op_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A treadle operation; await it inside a treadle task. One "
              "that is freed without ever being awaited gives a "
              "RuntimeWarning, as a coroutine does.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)op_iternext,
    .tp_methods = op_methods,
};

/* --------------------------------------------------------------- tasks */

/* Sends `val` or throws `exc` (both stolen) into the coroutine. */
static PySendResult send_or_throw(PyObject *coro, PyObject *val,
                                  PyObject *exc, PyObject **out) {
  if (exc == NULL) {
    PySendResult r = PyIter_Send(coro, val, out);
    Py_DECREF(val);
    return r;
  }
  PyObject *res = PyObject_CallMethod(coro, "throw", "O", exc);
  if (res == NULL && PyErr_ExceptionMatches(PyExc_AttributeError) &&
      !PyObject_HasAttrString(coro, "throw")) {
    PyErr_Clear(); /* an iterator that cannot take it: fail with it */
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
  }
  Py_DECREF(exc);
  if (res != NULL) {
    *out = res;
    return PYGEN_NEXT;
  }
  if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    *out = PyObject_GetAttrString(value, "value");
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return *out != NULL ? PYGEN_RETURN : PYGEN_ERROR;
  }
  *out = NULL;
  return PYGEN_ERROR;
}

static void task_release_python(pytask_t *t) {
  Py_CLEAR(t->op);
  Py_CLEAR(t->coro);
  Py_CLEAR(t->ctx);
  Py_CLEAR(t->tref);
}

/* ------------------------------------------------------------ TaskRef */

/* What asyncio.current_task() returns in a treadle task: the task as
 * asyncio.timeout and TaskGroup use it (cancel, uncancel, cancelling). */
typedef struct {
  PyObject_HEAD
  shared_t *sh;
  int cancels; /* asyncio's _num_cancels_requested */
  bool done;
  PyObject *name;
} taskref_t;

static PyObject *taskref_new(shared_t *sh);

static PyObject *taskref_cancel(taskref_t *tr, PyObject *args, PyObject *kw) {
  static char *names[] = {"msg", NULL};
  PyObject *msg = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:cancel", names, &msg))
    return NULL;
  if (tr->done)
    Py_RETURN_FALSE;
  tr->cancels++;
  /* seq_cst: Dekker pair with task_poll's waker store, as abort. */
  atomic_store_explicit(&tr->sh->cancel, 1, memory_order_seq_cst);
  treadle_waker_t *w = atomic_load_explicit(&tr->sh->waker, memory_order_seq_cst);
  if (w != NULL)
    treadle_wake_by_ref(w);
  Py_RETURN_TRUE;
}

static PyObject *taskref_uncancel(taskref_t *tr, PyObject *Py_UNUSED(u)) {
  if (tr->cancels > 0)
    tr->cancels--;
  return PyLong_FromLong(tr->cancels);
}

static PyObject *taskref_cancelling(taskref_t *tr, PyObject *Py_UNUSED(u)) {
  return PyLong_FromLong(tr->cancels);
}

static PyObject *taskref_done(taskref_t *tr, PyObject *Py_UNUSED(u)) {
  return PyBool_FromLong(tr->done);
}

static PyObject *taskref_false(taskref_t *Py_UNUSED(tr), PyObject *Py_UNUSED(u)) {
  Py_RETURN_FALSE;
}

static PyObject *taskref_none(taskref_t *Py_UNUSED(tr), PyObject *Py_UNUSED(u)) {
  Py_RETURN_NONE;
}

static PyObject *taskref_get_name(taskref_t *tr, PyObject *Py_UNUSED(u)) {
  return tr->name != NULL ? Py_NewRef(tr->name) : PyUnicode_FromFormat("treadle-task-%p", tr);
}

static PyObject *taskref_set_name(taskref_t *tr, PyObject *name) {
  PyObject *s = PyObject_Str(name);
  if (s == NULL)
    return NULL;
  Py_XSETREF(tr->name, s);
  Py_RETURN_NONE;
}

static PyObject *taskref_repr(taskref_t *tr) {
  PyObject *name = taskref_get_name(tr, NULL);
  PyObject *r = name != NULL ? PyUnicode_FromFormat("<treadle task %U%s>", name,
                                                    tr->done ? " done" : "")
                             : NULL;
  Py_XDECREF(name);
  return r;
}

static void taskref_dealloc(taskref_t *tr) {
  shared_unref(tr->sh);
  Py_XDECREF(tr->name);
  PyObject_Free(tr);
}

static PyMethodDef taskref_methods[] = {
    {"cancel", (PyCFunction)(void (*)(void))taskref_cancel, METH_VARARGS | METH_KEYWORDS,
     "cancel($self, /, msg=None)\n--\n\nThrows CancelledError into the task "
     "at its current await (JoinHandle.abort); counts as asyncio.Task.cancel."},
    {"uncancel", (PyCFunction)taskref_uncancel, METH_NOARGS,
     "uncancel($self, /)\n--\n\nasyncio.Task.uncancel: one request less."},
    {"cancelling", (PyCFunction)taskref_cancelling, METH_NOARGS,
     "cancelling($self, /)\n--\n\nasyncio.Task.cancelling: requests pending."},
    {"done", (PyCFunction)taskref_done, METH_NOARGS,
     "done($self, /)\n--\n\nTrue once the task finished."},
    {"cancelled", (PyCFunction)taskref_false, METH_NOARGS,
     "cancelled($self, /)\n--\n\nFalse: ask its JoinHandle for the outcome."},
    {"get_coro", (PyCFunction)taskref_none, METH_NOARGS,
     "get_coro($self, /)\n--\n\nNone: the coroutine is the task's own."},
    {"get_name", (PyCFunction)taskref_get_name, METH_NOARGS,
     "get_name($self, /)\n--\n\nThe task's name."},
    {"set_name", (PyCFunction)taskref_set_name, METH_O,
     "set_name($self, value, /)\n--\n\nNames the task."},
    {NULL}};

static PyTypeObject taskref_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle.TaskRef",
    .tp_basicsize = sizeof(taskref_t),
    .tp_dealloc = (destructor)taskref_dealloc,
    .tp_repr = (reprfunc)taskref_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A treadle task as asyncio.current_task() shows it inside the "
              "task: cancel/uncancel/cancelling, for asyncio.timeout and "
              "TaskGroup.",
    .tp_methods = taskref_methods,
};

static PyObject *taskref_new(shared_t *sh) {
  taskref_t *tr = PyObject_New(taskref_t, &taskref_type);
  if (tr == NULL)
    return NULL;
  /* Relaxed: a new reference from one held. */
  atomic_fetch_add_explicit(&sh->refs, 1, memory_order_relaxed);
  tr->sh = sh;
  tr->cancels = 0;
  tr->done = false;
  tr->name = NULL;
  return (PyObject *)tr;
}

static PyObject *enter_task_fn, *leave_task_fn; /* asyncio.tasks' */

/* GIL: makes the runtime's loop the running loop of this thread and the
 * task asyncio's current task of that loop, for the step; returns what
 * step_leave_loop needs (the replaced running loop), or NULL. */
static PyObject *step_enter_loop(pytask_t *t, PyObject *loop) {
  if (t->tref == NULL && (t->tref = taskref_new(t->sh)) == NULL)
    return NULL;
  PyObject *prev = pyt_loop_enter(loop);
  if (prev == NULL)
    return NULL;
  pyt_loop_thread_hooks(loop);
  PyObject *res = PyObject_CallFunctionObjArgs(enter_task_fn, loop, t->tref, NULL);
  if (res == NULL) {
    PyObject *exc = pyt_fetch_exception();
    if (pyt_loop_leave(loop, prev) < 0)
      PyErr_Clear(); /* not lost: put back at the next entry */
    pyt_restore_exception(exc);
    return NULL;
  }
  Py_DECREF(res);
  return prev;
}

static void step_leave_loop(pytask_t *t, PyObject *loop, PyObject *prev) {
  PyObject *res = PyObject_CallFunctionObjArgs(leave_task_fn, loop, t->tref, NULL);
  if (res == NULL)
    PyErr_WriteUnraisable(leave_task_fn);
  Py_XDECREF(res);
  if (pyt_loop_leave(loop, prev) < 0)
    PyErr_Clear(); /* not lost: put back at the next entry or block_on's end */
}

/* GIL. The op of an asyncio future `fut` that the coroutine yielded (as
 * asyncio.Task.__step takes it), or NULL: with an exception set when it
 * is a future that cannot be awaited here, without when not a future. */
static op_t *future_op(pytask_t *t, PyObject *fut) {
  PyObject *blocking = PyObject_GetAttrString(fut, "_asyncio_future_blocking");
  if (blocking == NULL) {
    PyErr_Clear();
    return NULL;
  }
  Py_DECREF(blocking);
  if (blocking != Py_True) {
    PyErr_Format(PyExc_RuntimeError,
                 "yield was used instead of yield from in treadle task for %R", fut);
    return NULL;
  }
  PyObject *fl = PyObject_CallMethod(fut, "get_loop", NULL);
  if (fl == NULL)
    return NULL;
  Py_DECREF(fl);
  if (fl != t->r->loop) {
    PyErr_Format(PyExc_RuntimeError,
                 "treadle task got Future %R attached to a different loop", fut);
    return NULL;
  }
  if (PyObject_SetAttrString(fut, "_asyncio_future_blocking", Py_False) < 0)
    return NULL;
  futwaker_t *fw = PyObject_New(futwaker_t, &futwaker_type);
  if (fw == NULL)
    return NULL;
  /* Relaxed: a new reference from one held. */
  atomic_fetch_add_explicit(&t->sh->refs, 1, memory_order_relaxed);
  fw->sh = t->sh;
  atomic_init(&fw->done, 0);
  PyObject *res = PyObject_CallMethod(fut, "add_done_callback", "O", (PyObject *)fw);
  if (res == NULL) {
    Py_DECREF(fw);
    return NULL;
  }
  Py_DECREF(res);
  op_t *op = pyt_op_new(OP_FUTURE, fut, "asyncio future");
  if (op == NULL) {
    Py_DECREF(fw);
    return NULL;
  }
  op->waker = (PyObject *)fw;
  op->stage = OP_AWAITED;
  op->awaited = true;
  return op;
}

/* A bare yield (asyncio.sleep(0)): one turn behind the other tasks. */
static op_t *yield_op(void) {
  op_t *op = pyt_op_new(OP_LEAF, NULL, "yield");
  if (op != NULL) {
    tb_op_yield(&op->tb);
    op->stage = OP_AWAITED;
    op->awaited = true;
  }
  return op;
}

/* The RuntimeError (new reference, or NULL) thrown into a coroutine that
 * yielded `out`: neither an op, an asyncio future nor a bare yield. */
static PyObject *not_an_op(PyObject *out) {
  PyObject *msg = PyUnicode_FromFormat(
      "a treadle task awaited %R, which is neither a treadle awaitable nor "
      "an asyncio future", out);
  if (msg == NULL)
    return NULL;
  PyObject *exc = PyObject_CallOneArg(PyExc_RuntimeError, msg);
  Py_DECREF(msg);
  return exc;
}

/* asyncio.sleep(1), asyncio.get_running_loop() and the like raise
 * "no running event loop" in a task of a runtime without an asyncio loop
 * (no I/O or no timers): a note on that exception, as it leaves the task,
 * says why. */
static void add_asyncio_note(PyObject *exc) {
  static const char note[] =
      "this treadle runtime has no asyncio loop: asyncio's objects need a "
      "runtime with enable_io and enable_time (the default), or await "
      "treadle's own awaitables (treadle.sleep, yield_now, spawn, timeout)";
  if (!PyErr_GivenExceptionMatches(exc, PyExc_RuntimeError))
    return;
  PyObject *text = PyObject_Str(exc);
  PyObject *notes = NULL, *res = NULL;
  if (text != NULL &&
      PyUnicode_CompareWithASCIIString(text, "no running event loop") == 0) {
    /* Once, though it leaves several tasks that await each other. */
    notes = PyObject_GetAttrString(exc, "__notes__");
    PyErr_Clear();
    PyObject *str = PyUnicode_FromString(note);
    if (str != NULL && (notes == NULL || PySequence_Contains(notes, str) == 0))
      res = PyObject_CallMethod(exc, "add_note", "O", str);
    Py_XDECREF(str);
  }
  PyErr_Clear(); /* only a hint: never an error of its own */
  Py_XDECREF(res);
  Py_XDECREF(notes);
  Py_XDECREF(text);
}

/* GIL, lane. Runs the coroutine until it awaits an op that is not ready
 * (false) or finishes (true, output set). False with *again set: memory
 * ran out before the coroutine could run (the runtime's loop could not
 * become asyncio's running one, where the coroutine would find no loop);
 * nothing changed, and the step is tried again at the next poll. Another
 * error there is reported, and the step runs without the loop. */
static bool step(pytask_t *t, treadle_cx_t *cx, bool *again) {
  pytask_t *saved = pyt_current;
  treadle_cx_t *saved_cx = pyt_current_cx;
  pyt_current = t;
  pyt_current_cx = cx;
  if (PyContext_Enter(t->ctx) < 0)
    PyErr_WriteUnraisable(t->ctx);
  PyObject *loop = Py_XNewRef(t->r->loop), *prev_loop = NULL;
  if (loop != NULL && (prev_loop = step_enter_loop(t, loop)) == NULL) {
    if (!PyErr_ExceptionMatches(PyExc_MemoryError)) {
      PyErr_WriteUnraisable(loop);
    } else {
      PyErr_Clear();
      Py_DECREF(loop);
      if (PyContext_Exit(t->ctx) < 0)
        PyErr_Clear();
      pyt_current = saved;
      pyt_current_cx = saved_cx;
      *again = true;
      return false;
    }
  }
  PyObject *val = NULL, *exc = NULL;
  /* seq_cst: pairs with abort's store. */
  if (atomic_load_explicit(&t->sh->cancel, memory_order_seq_cst) &&
      (t->op == NULL || t->op->stage < OP_POLLED)) {
    /* seq_cst: taken; an abort from now on is thrown at the next await. */
    atomic_store_explicit(&t->sh->cancel, 0, memory_order_seq_cst);
    if (t->op != NULL && t->op->kind == OP_FUTURE) { /* asyncio's Task.cancel */
      PyObject *res = PyObject_CallMethod(t->op->owner, "cancel", NULL);
      if (res == NULL)
        PyErr_WriteUnraisable(t->op->owner);
      Py_XDECREF(res);
    }
    Py_CLEAR(t->op);
    exc = pyt_error_object(TREADLE_ECANCELED);
  } else {
    if (t->op != NULL) {
      op_finish(t->op); /* the coroutine's await picks up the outcome */
      Py_CLEAR(t->op);
    }
    val = Py_NewRef(Py_None);
  }
  bool done = false;
  for (;;) {
    PyObject *out = NULL;
    if (val == NULL && exc == NULL) /* could not make the exception */
      exc = (PyObject *)((uintptr_t)fetch_exception() & ~EXC_TAG);
    PySendResult r = send_or_throw(t->coro, val, exc, &out);
    val = exc = NULL;
    if (r == PYGEN_NEXT) {
      if (Py_IS_TYPE(out, &pyt_op_type)) {
        t->op = (op_t *)out;
        break;
      }
      op_t *op = out == Py_None ? yield_op() : future_op(t, out);
      if (op != NULL) {
        Py_DECREF(out);
        t->op = op;
        break;
      }
      exc = PyErr_Occurred() ? (PyObject *)((uintptr_t)fetch_exception() & ~EXC_TAG)
                             : not_an_op(out);
      Py_DECREF(out);
      continue;
    }
    done = true;
    if (r == PYGEN_RETURN) {
      if (out == Py_None)
        Py_DECREF(out);
      else
        treadle_cx_set_output(cx, 0, out);
    } else {
      PyObject *value = (PyObject *)((uintptr_t)fetch_exception() & ~EXC_TAG);
      add_asyncio_note(value);
      if (PyErr_GivenExceptionMatches(value, pyt_CancelledError)) {
        Py_DECREF(value);
        treadle_cx_set_output(cx, TREADLE_ECANCELED, NULL);
      } else {
        treadle_cx_set_output(cx, 0, tag_exception(value));
      }
    }
    break;
  }
  if (prev_loop != NULL)
    step_leave_loop(t, loop, prev_loop);
  Py_XDECREF(loop);
  if (PyContext_Exit(t->ctx) < 0)
    PyErr_WriteUnraisable(t->ctx);
  if (done) {
    if (t->tref != NULL)
      ((taskref_t *)t->tref)->done = true;
    task_release_python(t);
  }
  pyt_current = saved;
  pyt_current_cx = saved_cx;
  return done;
}

static treadle_poll_t task_poll(treadle_cx_t *cx, void *state) {
  pytask_t *t = state;
  shared_t *sh = t->sh;
  /* Relaxed: only this task's poll writes it. */
  if (atomic_load_explicit(&sh->waker, memory_order_relaxed) == NULL)
    /* seq_cst: with abort's cancel store, a Dekker pair: abort sees the
     * waker, or the load of cancel below sees the abort. */
    atomic_store_explicit(&sh->waker, treadle_waker_clone(treadle_cx_waker(cx)),
                          memory_order_seq_cst);
  for (;;) {
    /* seq_cst: see above. */
    bool cancel = atomic_load_explicit(&sh->cancel, memory_order_seq_cst);
    if (t->op != NULL && !cancel && op_poll(t->op, cx) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (!pyrt_lane_enter(t->r, cx)) {
      if (t->op != NULL)
        tb_op_keep(&t->op->tb); /* its bytes may be taken on another thread */
      return TREADLE_PENDING;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    bool again = false;
    bool done = step(t, cx, &again);
    PyGILState_Release(g);
    pyrt_lane_leave(t->r);
    if (done)
      return TREADLE_READY;
    if (again) { /* the other tasks go first */
      treadle_wake_by_ref(treadle_cx_waker(cx));
      return TREADLE_PENDING;
    }
  }
}

/* Runs once: at completion (nothing left but refs) or when the runtime
 * drops the task (close the coroutine, as a dropped generator is). */
static void task_drop(void *state) {
  pytask_t *t = state;
  if (t->coro != NULL || t->op != NULL || t->ctx != NULL) {
    PyGILState_STATE g = PyGILState_Ensure();
    Py_CLEAR(t->op);
    if (t->coro != NULL && PyContext_Enter(t->ctx) == 0) {
      bool saved = dropping;
      dropping = true;
      PyObject *res = PyObject_CallMethod(t->coro, "close", NULL);
      dropping = saved;
      if (res == NULL && !PyErr_ExceptionMatches(pyt_ShutdownError))
        PyErr_WriteUnraisable(t->coro);
      PyErr_Clear();
      Py_XDECREF(res);
      PyContext_Exit(t->ctx);
    }
    task_release_python(t);
    PyGILState_Release(g);
  }
  shared_unref(t->sh);
  pyrt_unref(t->r);
}

static const treadle_task_vtable_t task_vt = {
    .poll = task_poll, .drop = task_drop, .drop_output = output_drop};

static PyObject *to_iterator(PyObject *aw) {
  if (PyCoro_CheckExact(aw))
    return Py_NewRef(aw);
  unaryfunc am_await = Py_TYPE(aw)->tp_as_async != NULL
                           ? Py_TYPE(aw)->tp_as_async->am_await : NULL;
  if (am_await == NULL) {
    PyErr_Format(PyExc_TypeError,
                 "a coroutine or awaitable was expected, got %.100s",
                 Py_TYPE(aw)->tp_name);
    return NULL;
  }
  PyObject *it = am_await(aw);
  if (it != NULL && !PyIter_Check(it)) {
    PyErr_Format(PyExc_TypeError, "__await__() returned non-iterator %.100s",
                 Py_TYPE(it)->tp_name);
    Py_CLEAR(it);
  }
  return it;
}

static joinobj_t *join_new(shared_t *sh) {
  joinobj_t *jo = PyObject_GC_New(joinobj_t, &join_type);
  if (jo == NULL)
    return NULL;
  jo->j = NULL;
  jo->sh = sh;
  jo->outcome = JOIN_PENDING;
  jo->value = NULL;
  jo->retrieved = jo->awaiting = jo->has_pending = false;
  PyObject_GC_Track(jo);
  return jo;
}

PyObject *pyt_spawn(pyrt_t *r, PyObject *aw) {
  PyObject *it = to_iterator(aw);
  if (it == NULL)
    return NULL;
  PyObject *ctx = PyContext_CopyCurrent();
  shared_t *sh = calloc(1, sizeof *sh);
  joinobj_t *jo = sh != NULL ? join_new(sh) : NULL;
  if (ctx == NULL || jo == NULL) {
    if (jo != NULL) { /* sh is freed below, not by jo */
      jo->sh = NULL;
      Py_DECREF(jo);
    }
    Py_DECREF(it);
    Py_XDECREF(ctx);
    free(sh);
    return ctx == NULL ? NULL : PyErr_NoMemory();
  }
  atomic_init(&sh->refs, 2);
  pytask_t st = {.coro = it, .ctx = ctx, .r = pyrt_ref(r), .sh = sh};
  treadle_err_t err = treadle_spawn(r->h, &task_vt, &st, sizeof st, &jo->j);
  if (err != 0) {
    pyrt_unref(r);
    Py_DECREF(it);
    Py_DECREF(ctx);
    /* Relaxed: nobody else has seen sh; the task's reference never was. */
    atomic_store_explicit(&sh->refs, 1, memory_order_relaxed);
    Py_DECREF(jo); /* frees sh */
    return pyt_raise(err);
  }
  return (PyObject *)jo;
}

/* ------------------------------------------------------------ block_on */

/* A WakeWatch: the read end of a wake pipe (Python's signal wakeup fd)
 * registered once with the runtime's I/O driver, for every block_on_step
 * of one block_on (a registration per step made a failure possible on
 * each). `afd` is NULL when nothing is watched: fd -1, or a runtime
 * without I/O, where the root's 50 ms tick stands in. */
typedef struct {
  PyObject_HEAD
  pyrt_t *r;               /* a reference: the runtime it is registered with */
  treadle_async_fd_t *afd; /* freed by close() */
  bool closed;
  bool busy; /* a block_on_step polls it (the GIL is released meanwhile) */
} wakeobj_t;

static PyTypeObject wake_type;

PyObject *pyt_wake_watch(pyrt_t *r, int fd) {
  wakeobj_t *w = PyObject_New(wakeobj_t, &wake_type);
  if (w == NULL)
    return NULL;
  w->r = pyrt_ref(r);
  w->afd = NULL;
  w->closed = w->busy = false;
  treadle_err_t err = tb_root_wake_open(r->h, fd, &w->afd);
  if (err != 0 && err != TREADLE_ENOIO) {
    Py_DECREF(w);
    return pyt_raise(err);
  }
  return (PyObject *)w;
}

static PyObject *wake_close(wakeobj_t *w, PyObject *Py_UNUSED(unused)) {
  if (w->busy) {
    PyErr_SetString(PyExc_RuntimeError, "a block_on_step is watching it");
    return NULL;
  }
  treadle_async_fd_free(w->afd); /* its last poll was a block_on's */
  w->afd = NULL;
  w->closed = true;
  Py_RETURN_NONE;
}

static PyObject *wake_enter(PyObject *w, PyObject *Py_UNUSED(unused)) {
  return Py_NewRef(w);
}

static PyObject *wake_exit(wakeobj_t *w, PyObject *Py_UNUSED(args)) {
  PyObject *r = wake_close(w, NULL);
  if (r == NULL)
    return NULL;
  Py_DECREF(r);
  Py_RETURN_FALSE;
}

static void wake_dealloc(wakeobj_t *w) {
  treadle_async_fd_free(w->afd); /* not busy: a step holds a reference */
  pyrt_unref(w->r);
  PyObject_Free(w);
}

static PyMethodDef wake_methods[] = {
    {"close", (PyCFunction)wake_close, METH_NOARGS,
     "close($self, /)\n--\n\nEnds the registration (idempotent)."},
    {"__enter__", (PyCFunction)wake_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nReturns self."},
    {"__exit__", (PyCFunction)wake_exit, METH_VARARGS,
     "__exit__($self, /, *exc)\n--\n\nCloses it."},
    {NULL}};

static PyTypeObject wake_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core.WakeWatch",
    .tp_basicsize = sizeof(wakeobj_t),
    .tp_dealloc = (destructor)wake_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A wake fd registered for RuntimeCore.block_on_step "
              "(RuntimeCore.watch_wake); close() or `with` ends it.",
    .tp_methods = wake_methods,
};

/* The root future of block_on (bindings/common's): waits for the main
 * task, and for SIGINT (or a 50 ms tick where signals cannot be watched)
 * and a byte on Python's signal wakeup fd, so that the thread calling
 * block_on may run Python's signal handlers.
 * Its output is 1 once the main task finished. */
static treadle_poll_t main_done(void *ud, treadle_cx_t *cx) {
  joinobj_t *jo = ud;
  if (treadle_join_poll(jo->j, cx, &jo->pending_status, &jo->pending_value) ==
      TREADLE_PENDING)
    return TREADLE_PENDING;
  jo->has_pending = true; /* read by the caller after block_on returns */
  return TREADLE_READY;
}

PyObject *pyt_block_on_step(pyrt_t *r, PyObject *join, int watch, PyObject *wake) {
  if (!Py_IS_TYPE(join, &join_type)) {
    PyErr_SetString(PyExc_TypeError, "expected a JoinHandle");
    return NULL;
  }
  wakeobj_t *w = NULL;
  if (wake != Py_None) {
    if (!Py_IS_TYPE(wake, &wake_type)) {
      PyErr_SetString(PyExc_TypeError, "expected a WakeWatch or None");
      return NULL;
    }
    w = (wakeobj_t *)wake;
    if (w->r != r || w->closed) {
      PyErr_SetString(PyExc_ValueError, w->closed ? "the WakeWatch is closed"
                                                  : "a WakeWatch of another runtime");
      return NULL;
    }
    if (w->busy) {
      PyErr_SetString(PyExc_RuntimeError, "another block_on_step is watching it");
      return NULL;
    }
  }
  joinobj_t *jo = (joinobj_t *)join;
  if (pyt_current != NULL)
    return pyt_raise(TREADLE_EINRUNTIME);
  if (jo->outcome != JOIN_PENDING || jo->has_pending)
    Py_RETURN_TRUE;
  if (jo->awaiting || jo->j == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "this JoinHandle is awaited elsewhere");
    return NULL;
  }
  /* block_on returns only once the root completed (or before it ran), so
   * that the wake fd is no longer polled when the step returns. */
  tb_root_t st = {.main_poll = main_done, .ud = jo, .watch = watch != 0,
                  .tick = true, .wake = w != NULL ? w->afd : NULL};
  treadle_err_t err;
  void *value = NULL;
  jo->awaiting = true;
  if (w != NULL)
    w->busy = true;
  Py_BEGIN_ALLOW_THREADS
  err = treadle_runtime_block_on(r->rt, &tb_root_vt, &st, sizeof st, &value);
  Py_END_ALLOW_THREADS
  jo->awaiting = false;
  if (w != NULL)
    w->busy = false;
  if (pyt_loop_restore_due() < 0) /* a step's failed: due again next entry */
    PyErr_Clear();
  if (err != 0)
    return pyt_raise(err);
  return PyBool_FromLong(value == TB_ROOT_DONE_OUT);
}

/* ---------------------------------------------------------- JoinHandle */

/* GIL. Records a joined output in the JoinHandle. */
static void join_take(joinobj_t *jo, treadle_err_t status, void *value) {
  jo->has_pending = false;
  if (jo->outcome != JOIN_PENDING)
    return;
  PyObject *obj = (PyObject *)((uintptr_t)value & ~EXC_TAG);
  if (status == TREADLE_ECANCELED) {
    jo->outcome = JOIN_CANCELLED;
    Py_XDECREF(obj);
  } else if (status != 0) {
    jo->outcome = JOIN_EXCEPTION;
    Py_XDECREF(obj);
    jo->value = pyt_error_object(status);
    if (jo->value == NULL) {
      PyObject *type, *tb;
      PyErr_Fetch(&type, &jo->value, &tb);
      Py_XDECREF(type);
      Py_XDECREF(tb);
    }
  } else if ((uintptr_t)value & EXC_TAG) {
    jo->outcome = JOIN_EXCEPTION;
    jo->value = obj;
  } else {
    jo->outcome = JOIN_VALUE;
    jo->value = obj != NULL ? obj : Py_NewRef(Py_None);
  }
}

static void join_dealloc(joinobj_t *jo) {
  PyObject_GC_UnTrack(jo);
  if (jo->has_pending)
    join_take(jo, jo->pending_status, jo->pending_value);
  if (jo->outcome == JOIN_EXCEPTION && !jo->retrieved && jo->value != NULL)
    report_unretrieved(jo->value);
  Py_XDECREF(jo->value);
  treadle_join_detach(jo->j); /* an output dropped here re-enters the GIL */
  shared_unref(jo->sh);
  PyObject_GC_Del(jo);
}

/* A handle holds its task's exception, whose traceback holds the frames
 * that hold the handle (`h = spawn(...); await h` raising; block_on's
 * `main`): the collector must see that cycle. Only `value` is a Python
 * reference the GIL guards (the pending output belongs to block_on's root
 * until join_take). */
static int join_traverse(joinobj_t *jo, visitproc visit, void *arg) {
  Py_VISIT(jo->value);
  return 0;
}

static int join_clear(joinobj_t *jo) {
  Py_CLEAR(jo->value);
  return 0;
}

static PyObject *join_await(joinobj_t *jo) {
  op_t *op = pyt_op_new(OP_JOIN, (PyObject *)jo, "JoinHandle");
  if (op != NULL)
    tb_op_join(&op->tb, jo->j);
  return (PyObject *)op;
}

static PyObject *join_abort(joinobj_t *jo, PyObject *Py_UNUSED(unused)) {
  if (jo->j == NULL || jo->outcome != JOIN_PENDING)
    Py_RETURN_NONE;
  if (jo->sh == NULL) {
    treadle_join_abort(jo->j); /* a blocking job: cancels it if queued */
    Py_RETURN_NONE;
  }
  /* seq_cst: Dekker pair with task_poll's waker store. */
  atomic_store_explicit(&jo->sh->cancel, 1, memory_order_seq_cst);
  treadle_waker_t *w = atomic_load_explicit(&jo->sh->waker, memory_order_seq_cst);
  if (w != NULL)
    treadle_wake_by_ref(w);
  Py_RETURN_NONE;
}

static PyObject *join_done(joinobj_t *jo, PyObject *Py_UNUSED(unused)) {
  return PyBool_FromLong(jo->outcome != JOIN_PENDING || jo->has_pending ||
                         (jo->j != NULL && treadle_join_is_finished(jo->j)));
}

/* What result() says on a thread that runs the runtime's tasks, where
 * waiting would stall the very tasks it waits for. */
static PyObject *no_wait_here(void) {
  PyErr_SetString(PyExc_RuntimeError,
                  "the task has not finished, and a thread that runs treadle "
                  "tasks cannot wait for it: `await` the JoinHandle instead "
                  "of calling result()");
  return NULL;
}

/* How long one wait of result() lasts at most, so that Ctrl-C reaches a
 * main thread that waits (Python runs signal handlers between waits). */
#define RESULT_SLICE_NS (100 * 1000 * 1000ull)

/* GIL. Brings the task's outcome into the JoinHandle, waiting up to `ns`
 * for it outside the runtime's threads (without the GIL). 0, or -1 with
 * an exception set: TimeoutError, or RuntimeError where it cannot wait.
 * The core's join is used by one thread at a time: `awaiting` marks the
 * task or thread that uses it without the GIL. */
static int join_collect(joinobj_t *jo, uint64_t ns) {
  if (jo->has_pending)
    join_take(jo, jo->pending_status, jo->pending_value);
  if (jo->outcome != JOIN_PENDING)
    return 0;
  if (jo->awaiting) {
    PyErr_SetString(PyExc_RuntimeError,
                    "another task or thread is already waiting for this "
                    "JoinHandle");
    return -1;
  }
  void *value = NULL;
  treadle_err_t err = treadle_join_try(jo->j, &value);
  if (err != TREADLE_EAGAIN) {
    join_take(jo, err, value);
    return 0;
  }
  if (ns == 0) {
    PyErr_SetString(PyExc_TimeoutError, "the task has not finished");
    return -1;
  }
  if (pyt_current != NULL) {
    no_wait_here();
    return -1;
  }
  uint64_t start = treadle_now();
  jo->awaiting = true;
  for (;;) {
    uint64_t spent = treadle_now() - start;
    if (spent >= ns) {
      err = TREADLE_ETIMEDOUT;
      break;
    }
    uint64_t slice = ns - spent < RESULT_SLICE_NS ? ns - spent : RESULT_SLICE_NS;
    Py_BEGIN_ALLOW_THREADS
    err = treadle_join_wait_timeout(jo->j, slice, &value);
    Py_END_ALLOW_THREADS
    if (err != TREADLE_ETIMEDOUT || PyErr_CheckSignals() < 0)
      break;
  }
  jo->awaiting = false;
  if (PyErr_Occurred()) /* a signal handler raised (KeyboardInterrupt) */
    return -1;
  switch (err) {
  case TREADLE_ETIMEDOUT: /* a task's status is never ETIMEDOUT */
    PyErr_SetString(PyExc_TimeoutError, "the task has not finished");
    return -1;
  case TREADLE_EINRUNTIME: /* a runtime's thread outside a task: a hook */
    no_wait_here();
    return -1;
  case TREADLE_ENOMEM:
    PyErr_NoMemory();
    return -1;
  default:
    join_take(jo, err, value);
    return 0;
  }
}

static PyObject *join_result(joinobj_t *jo, PyObject *args, PyObject *kw) {
  static char *names[] = {"timeout", NULL};
  PyObject *timeout = Py_None;
  uint64_t ns = TREADLE_FOREVER;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:result", names, &timeout) ||
      (timeout != Py_None && pyt_duration(timeout, &ns) < 0) ||
      join_collect(jo, ns) < 0)
    return NULL;
  jo->retrieved = true;
  if (jo->outcome == JOIN_VALUE)
    return Py_NewRef(jo->value);
  if (jo->outcome == JOIN_EXCEPTION) {
    PyErr_SetObject((PyObject *)Py_TYPE(jo->value), jo->value);
    return NULL;
  }
  return pyt_raise(TREADLE_ECANCELED); /* JOIN_CANCELLED */
}

static PyObject *join_id(joinobj_t *jo, void *Py_UNUSED(unused)) {
  return PyLong_FromUnsignedLongLong(jo->j ? treadle_join_task_id(jo->j) : 0);
}

static PyMethodDef join_methods[] = {
    {"abort", (PyCFunction)join_abort, METH_NOARGS,
     "abort($self, /)\n--\n\n"
     "Cancels the task: CancelledError is thrown into it at its current "
     "await (before its first step, it never runs). A blocking job is "
     "cancelled only if it has not started."},
    {"done", (PyCFunction)join_done, METH_NOARGS,
     "done($self, /)\n--\n\n"
     "True once the task has finished, failed or been cancelled."},
    {"result", (PyCFunction)(void (*)(void))join_result,
     METH_VARARGS | METH_KEYWORDS,
     "result($self, /, timeout=None)\n--\n\n"
     "The task's value; raises its exception, or "
     "CancelledError. From any thread once the task has finished (done()). "
     "Until then a thread outside the runtime waits for it, at most timeout "
     "seconds (TimeoutError), without the GIL (concurrent.futures.Future."
     "result); timeout=0 never waits. A thread that runs the runtime's "
     "tasks never waits: inside a task, await the handle."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     "__class_getitem__($type, item, /)\n--\n\n"
     "JoinHandle[T]: the handle of a task that returns a T (PEP 585)."},
    {NULL}};

static PyGetSetDef join_getset[] = {
    {"id", (getter)join_id, NULL, "The task's id, unique in the process.", NULL},
    {NULL}};

static PyAsyncMethods join_async = {.am_await = (unaryfunc)join_await};

static PyTypeObject join_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle.JoinHandle",
    .tp_basicsize = sizeof(joinobj_t),
    .tp_dealloc = (destructor)join_dealloc,
    .tp_as_async = &join_async,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)join_traverse,
    .tp_clear = (inquiry)join_clear,
    .tp_doc = "A spawned task. `await handle` returns its value or raises "
              "its exception (CancelledError once aborted). Dropping it "
              "detaches the task.\n\n"
              "Outside a task, result() gives the outcome, waiting for it on "
              "a thread outside the runtime:\n\n"
              "    h = runtime.spawn(main())\n"
              "    value = h.result(timeout=10)\n\n"
              "asyncio code waits with `await asyncio.to_thread(h.result)`; "
              "`executor.submit(h.result)` makes a concurrent.futures.Future "
              "of it (asyncio.wrap_future takes that).",
    .tp_methods = join_methods,
    .tp_getset = join_getset,
};

/* ------------------------------------------------------ blocking jobs */

typedef struct {
  PyObject *fn, *args, *kwargs, *ctx; /* kwargs: a dict of its own, or NULL */
} bjob_t;

static treadle_err_t bjob_run(void *state, void **value) {
  bjob_t *b = state;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *res = PyContext_Enter(b->ctx) == 0 ? PyObject_Call(b->fn, b->args, b->kwargs) : NULL;
  if (res != NULL) {
    *value = res == Py_None ? (Py_DECREF(res), NULL) : res;
  } else {
    *value = fetch_exception();
  }
  PyContext_Exit(b->ctx);
  PyErr_Clear();
  PyGILState_Release(g);
  return 0;
}

static void bjob_drop(void *state) {
  bjob_t *b = state;
  PyGILState_STATE g = PyGILState_Ensure();
  Py_XDECREF(b->fn);
  Py_XDECREF(b->args);
  Py_XDECREF(b->kwargs);
  Py_XDECREF(b->ctx);
  PyGILState_Release(g);
}

static const treadle_blocking_vtable_t bjob_vt = {
    .run = bjob_run, .drop = bjob_drop, .drop_output = output_drop};

/* ---------------------------------------------------- module functions */

/* The runtime of the running treadle task, or of the treadle.EventLoop
 * whose iteration runs (an asyncio task on it spawns onto its runtime);
 * NULL with RuntimeError elsewhere. */
static pyrt_t *need_runtime(void) {
  if (pyt_current != NULL)
    return pyt_current->r;
  if (pyt_loop_running != NULL)
    return pyt_loop_runtime(pyt_loop_running);
  PyErr_SetString(PyExc_RuntimeError,
                  pyt_thread_rt != NULL
                      ? "no treadle task or loop is running on this thread (a "
                        "runtime's thread outside its tasks, such as a "
                        "blocking job, spawns with "
                        "treadle.Handle.current().spawn)"
                      : "no treadle task or loop is running on this thread");
  return NULL;
}

static pytask_t *need_task(void) {
  if (pyt_current == NULL)
    PyErr_SetString(PyExc_RuntimeError,
                    pyt_thread_rt != NULL
                        ? "no treadle task is running on this thread (a "
                          "runtime's thread outside its tasks, such as a "
                          "blocking job, spawns with "
                          "treadle.Handle.current().spawn)"
                        : "no treadle task is running on this thread");
  return pyt_current;
}

static PyObject *mod_sleep(PyObject *Py_UNUSED(m), PyObject *secs) {
  uint64_t ns;
  if (pyt_duration(secs, &ns) < 0)
    return NULL;
  op_t *op = pyt_op_new(OP_LEAF, NULL, "sleep");
  if (op != NULL)
    tb_op_sleep(&op->tb, ns);
  return (PyObject *)op;
}

static PyObject *mod_yield_now(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(unused)) {
  op_t *op = pyt_op_new(OP_LEAF, NULL, "yield_now");
  if (op != NULL)
    tb_op_yield(&op->tb);
  return (PyObject *)op;
}

static PyObject *mod_spawn(PyObject *Py_UNUSED(m), PyObject *coro) {
  pyrt_t *r = need_runtime();
  return r != NULL ? pyt_spawn(r, coro) : NULL;
}

/* spawn_blocking(fn, /, *args, **kwargs): the keywords are copied, as
 * asyncio.to_thread's are, so that the caller may change its dict. */
static PyObject *mod_spawn_blocking(PyObject *Py_UNUSED(m), PyObject *args,
                                    PyObject *kw) {
  pyrt_t *r = need_runtime();
  return r != NULL ? pyt_spawn_blocking(r, args, kw) : NULL;
}

PyObject *pyt_spawn_blocking(pyrt_t *r, PyObject *args, PyObject *kw) {
  if (PyTuple_GET_SIZE(args) < 1 || !PyCallable_Check(PyTuple_GET_ITEM(args, 0))) {
    PyErr_SetString(PyExc_TypeError,
                    "spawn_blocking(fn, /, *args, **kwargs): fn must be callable");
    return NULL;
  }
  bjob_t b = {.fn = Py_NewRef(PyTuple_GET_ITEM(args, 0)),
              .args = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args)),
              .kwargs = kw != NULL ? PyDict_Copy(kw) : NULL,
              .ctx = PyContext_CopyCurrent()};
  joinobj_t *jo = join_new(NULL);
  if (b.args == NULL || (kw != NULL && b.kwargs == NULL) || b.ctx == NULL ||
      jo == NULL) {
    Py_XDECREF(jo);
    bjob_drop(&b);
    return NULL;
  }
  treadle_err_t err = treadle_spawn_blocking(r->h, &bjob_vt, &b, sizeof b, &jo->j);
  if (err != 0) {
    Py_DECREF(jo);
    bjob_drop(&b);
    return pyt_raise(err);
  }
  return (PyObject *)jo;
}

static PyObject *mod_current_worker(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(unused)) {
  return need_task() ? PyLong_FromLong(treadle_cx_worker(pyt_current_cx)) : NULL;
}

static PyObject *mod_signal(PyObject *Py_UNUSED(m), PyObject *arg) {
  if (!PyLong_Check(arg)) {
    PyErr_Format(PyExc_TypeError, "signal number must be an int, not %.100s",
                 Py_TYPE(arg)->tp_name);
    return NULL;
  }
  int overflow;
  long signum = PyLong_AsLongAndOverflow(arg, &overflow);
  if (signum == -1 && PyErr_Occurred())
    return NULL;
  op_t *op = pyt_op_new(OP_LEAF, NULL, "signal");
  if (op == NULL)
    return NULL;
  if (overflow != 0 || signum < INT_MIN || signum > INT_MAX ||
      tb_op_signal(&op->tb, (int)signum) != 0) {
    pyt_op_drop(op);
    return PyErr_Format(PyExc_ValueError, "cannot wait for signal %R", arg);
  }
  return (PyObject *)op;
}

/* True once a task waited for SIGINT: from then on block_on's Ctrl-C
 * policy leaves SIGINT to such tasks (Tokio's ctrl_c takes it over for
 * the rest of the process, too). */
static PyObject *mod_sigint_taken(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(unused)) {
  /* Relaxed: a flag (tbind.h). */
  return PyBool_FromLong(
      atomic_load_explicit(&tb_sigint_taken, memory_order_relaxed));
}

/* Raises EINRUNTIME on a thread that runs a treadle task. */
static PyObject *mod_check_not_in_task(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(unused)) {
  if (pyt_current != NULL)
    return pyt_raise(TREADLE_EINRUNTIME);
  Py_RETURN_NONE;
}

/* wait(join, seconds): True once the task finished, False at the deadline
 * (treadle.timeout's building block). */
static PyObject *mod_wait(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t n) {
  uint64_t ns;
  if (n != 2 || !Py_IS_TYPE(args[0], &join_type)) {
    PyErr_SetString(PyExc_TypeError, "wait(join_handle, seconds)");
    return NULL;
  }
  if (pyt_duration(args[1], &ns) < 0)
    return NULL;
  op_t *op = pyt_op_new(OP_JOIN, args[0], "wait");
  if (op != NULL) {
    op->wait = true;
    tb_op_join(&op->tb, ((joinobj_t *)args[0])->j);
    tb_op_set_deadline(&op->tb, ns); /* counted from the first poll */
  }
  return (PyObject *)op;
}

static PyMethodDef task_functions[] = {
    {"sleep", mod_sleep, METH_O,
     "sleep($module, seconds, /)\n--\n\nAn op: await it to sleep."},
    {"yield_now", mod_yield_now, METH_NOARGS,
     "yield_now($module, /)\n--\n\nAn op: await it to let others run."},
    {"spawn", mod_spawn, METH_O,
     "spawn($module, coro, /)\n--\n\n"
     "Spawns coro onto the running task's runtime: a JoinHandle."},
    {"spawn_blocking", (PyCFunction)(void (*)(void))mod_spawn_blocking,
     METH_VARARGS | METH_KEYWORDS,
     "spawn_blocking($module, fn, /, *args, **kwargs)\n--\n\n"
     "Runs fn(*args, **kwargs) on the blocking pool: a JoinHandle."},
    {"current_worker", mod_current_worker, METH_NOARGS,
     "current_worker($module, /)\n--\n\n"
     "The index of the worker running this task (0 on current_thread)."},
    {"signal", mod_signal, METH_O,
     "signal($module, signum, /)\n--\n\n"
     "An op: await it for the next delivery of a Unix signal."},
    {"sigint_taken", mod_sigint_taken, METH_NOARGS,
     "sigint_taken($module, /)\n--\n\nTrue once a task has waited for "
     "SIGINT."},
    {"check_not_in_task", mod_check_not_in_task, METH_NOARGS,
     "check_not_in_task($module, /)\n--\n\n"
     "Raises treadle.Error (EINRUNTIME) inside a treadle task."},
    {"wait", (PyCFunction)(void (*)(void))mod_wait, METH_FASTCALL,
     "wait($module, join, seconds, /)\n--\n\n"
     "An op: True once the task finished, False at the deadline."},
    {NULL}};

static PyObject *mark_exiting(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(unused)) {
  exiting = true;
  Py_RETURN_NONE;
}

static PyMethodDef exiting_def = {
    "_mark_exiting", mark_exiting, METH_NOARGS,
    "_mark_exiting($module, /)\n--\n\n"
    "An atexit hook: ops freed from now on do not warn."};

/* Runs mark_exiting when the interpreter exits. */
static int register_exiting(void) {
  PyObject *atexit = PyImport_ImportModule("atexit");
  PyObject *fn = PyCFunction_New(&exiting_def, NULL);
  PyObject *res = atexit != NULL && fn != NULL
                      ? PyObject_CallMethod(atexit, "register", "O", fn)
                      : NULL;
  Py_XDECREF(atexit);
  Py_XDECREF(fn);
  Py_XDECREF(res);
  return res != NULL ? 0 : -1;
}

int pyt_task_init(PyObject *m) {
  if (PyType_Ready(&pyt_op_type) < 0 || PyType_Ready(&join_type) < 0 ||
      PyType_Ready(&futwaker_type) < 0 || PyType_Ready(&taskref_type) < 0 ||
      PyType_Ready(&wake_type) < 0 || register_exiting() < 0)
    return -1;
  PyObject *tasks = PyImport_ImportModule("asyncio.tasks");
  enter_task_fn = tasks != NULL ? PyObject_GetAttrString(tasks, "_enter_task") : NULL;
  leave_task_fn = tasks != NULL ? PyObject_GetAttrString(tasks, "_leave_task") : NULL;
  Py_XDECREF(tasks);
  if (enter_task_fn == NULL || leave_task_fn == NULL)
    return -1;
  if (PyModule_AddObjectRef(m, "JoinHandle", (PyObject *)&join_type) < 0 ||
      PyModule_AddObjectRef(m, "Op", (PyObject *)&pyt_op_type) < 0 ||
      PyModule_AddObjectRef(m, "WakeWatch", (PyObject *)&wake_type) < 0)
    return -1;
  return PyModule_AddFunctions(m, task_functions);
}
