/* The binding's runtime record, the Python lane, thread hooks, errors and
 * the RuntimeCore and Handle types (ARCHITECTURE.md "Python").
 *
 * GIL protocol:
 * 1. A thread the runtime starts takes a Python thread state once, in its
 *    start hook (PyGILState_Ensure, then PyEval_SaveThread), and gives it
 *    back in its stop hook. Later PyGILState_Ensure calls on it are cheap.
 * 2. Python code of a runtime runs in one lane at a time: a task about to
 *    step takes the lane first (an atomic flag); if another thread holds
 *    it, the task queues its waker and returns PENDING, and the holder
 *    wakes the queued tasks when it leaves, so they run next on its own
 *    thread. No worker ever waits for the GIL behind another worker.
 * 3. Calls into treadle that may block or wait for threads (build,
 *    block_on, shutdown) release the GIL; treadle never calls back into
 *    Python while it holds one of its locks. */
#include "pytreadle.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <string.h>

PyObject *pyt_Error, *pyt_ShutdownError, *pyt_ClosedError, *pyt_CancelledError;
static PyObject *gaierror;
static PyObject *current_thread; /* threading.current_thread */

/* ------------------------------------------------------------- errors */

PyObject *pyt_error_object(treadle_err_t err) {
  if (err == TREADLE_ENOMEM) /* Python's own word for it */
    return PyObject_CallNoArgs(PyExc_MemoryError);
  if (err == TREADLE_ECANCELED)
    return PyObject_CallNoArgs(pyt_CancelledError);
  if (err == TREADLE_ENOHOST)
    return PyObject_CallFunction(gaierror, "is", EAI_NONAME,
                                 treadle_strerror(err));
  if (err > -4000)
    return PyObject_CallFunction(PyExc_OSError, "is", -err, strerror(-err));
  PyObject *cls = err == TREADLE_ESHUTDOWN ? pyt_ShutdownError
                  : err == TREADLE_ECLOSED ? pyt_ClosedError
                                           : pyt_Error;
  PyObject *exc = PyObject_CallFunction(cls, "s", treadle_strerror(err));
  if (exc == NULL)
    return NULL;
  PyObject *code = PyLong_FromLong(err);
  PyObject *name = PyUnicode_FromString(treadle_err_name(err));
  if (code == NULL || name == NULL ||
      PyObject_SetAttrString(exc, "code", code) < 0 ||
      PyObject_SetAttrString(exc, "name", name) < 0)
    Py_CLEAR(exc);
  Py_XDECREF(code);
  Py_XDECREF(name);
  return exc;
}

PyObject *pyt_raise(treadle_err_t err) {
  PyObject *exc = pyt_error_object(err);
  if (exc != NULL) {
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
  }
  return NULL;
}

int pyt_duration(PyObject *secs, uint64_t *ns) {
  double d;
  if (PyFloat_Check(secs)) {
    d = PyFloat_AS_DOUBLE(secs);
  } else if (PyLong_Check(secs)) {
    d = PyLong_AsDouble(secs);
  } else if (PyNumber_Check(secs) && !PyComplex_Check(secs)) {
    d = PyFloat_AsDouble(secs); /* Fraction, Decimal, numpy scalars */
    if (d == -1.0 && PyErr_Occurred())
      return -1;
  } else {
    PyErr_Format(PyExc_TypeError, "seconds must be a number, not %.100s",
                 Py_TYPE(secs)->tp_name);
    return -1;
  }
  if (d == -1.0 && PyErr_Occurred()) { /* an int past a double's range */
    if (!PyErr_ExceptionMatches(PyExc_OverflowError))
      return -1;
    PyErr_Clear();
    int sign; /* past a long's range too: -1 or 1 */
    (void)PyLong_AsLongAndOverflow(secs, &sign);
    d = sign < 0 ? 0.0 : INFINITY;
  }
  if (treadle_duration_from_secs(d, ns) != 0) {
    PyErr_SetString(PyExc_ValueError, "seconds must not be NaN");
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------ records */

pyrt_t *pyrt_ref(pyrt_t *r) {
  /* Relaxed: taking a reference from one already held orders nothing. */
  atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
  return r;
}

void pyrt_unref(pyrt_t *r) {
  if (r == NULL)
    return;
  /* acq_rel: the last owner sees every other owner's writes. */
  if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
    return;
  treadle_handle_unref(r->h);
  if (r->on_start != NULL || r->on_stop != NULL || r->thread_name != NULL) {
    PyGILState_STATE g = PyGILState_Ensure();
    Py_CLEAR(r->on_start);
    Py_CLEAR(r->on_stop);
    Py_CLEAR(r->thread_name);
    PyGILState_Release(g);
  }
  for (size_t i = 0; i < r->lane_len; i++)
    treadle_waker_drop(r->lane_wakers[i]);
  free(r->lane_wakers);
  pthread_mutex_destroy(&r->lane_mu);
  free(r);
}

/* --------------------------------------------------------------- lane */

bool pyrt_lane_enter(pyrt_t *r, treadle_cx_t *cx) {
  if (r->flavor == TREADLE_CURRENT_THREAD)
    return true; /* one thread runs every task */
  int free_ = 0;
  /* seq_cst: with lane_waiting below, a Dekker pair against leave: either
   * this CAS sees the lane free or the holder sees our queued waker. */
  if (atomic_compare_exchange_strong_explicit(&r->lane_held, &free_, 1,
                                              memory_order_seq_cst,
                                              memory_order_seq_cst))
    return true;
  treadle_waker_t *w = treadle_waker_clone(treadle_cx_waker(cx));
  pthread_mutex_lock(&r->lane_mu);
  if (r->lane_len == r->lane_cap) {
    size_t cap = r->lane_cap ? 2 * r->lane_cap : 64;
    treadle_waker_t **nw = realloc(r->lane_wakers, cap * sizeof *nw);
    if (nw == NULL) { /* cannot queue: run again soon instead */
      pthread_mutex_unlock(&r->lane_mu);
      treadle_waker_drop(w);
      treadle_cx_yield(cx);
      return false;
    }
    r->lane_wakers = nw;
    r->lane_cap = cap;
  }
  r->lane_wakers[r->lane_len++] = w;
  /* seq_cst: see the CAS above. */
  atomic_fetch_add_explicit(&r->lane_waiting, 1, memory_order_seq_cst);
  pthread_mutex_unlock(&r->lane_mu);
  free_ = 0;
  /* seq_cst: second half of the Dekker pair. Winning here leaves our own
   * waker queued: one spurious poll, which finds its op still pending. */
  return atomic_compare_exchange_strong_explicit(&r->lane_held, &free_, 1,
                                                 memory_order_seq_cst,
                                                 memory_order_seq_cst);
}

void pyrt_lane_leave(pyrt_t *r) {
  if (r->flavor == TREADLE_CURRENT_THREAD)
    return;
  /* seq_cst: pairs with lane_enter's queue-then-CAS. */
  atomic_store_explicit(&r->lane_held, 0, memory_order_seq_cst);
  /* seq_cst: see lane_enter. */
  if (atomic_load_explicit(&r->lane_waiting, memory_order_seq_cst) == 0)
    return;
  pthread_mutex_lock(&r->lane_mu);
  treadle_waker_t **ws = r->lane_wakers;
  size_t n = r->lane_len;
  r->lane_wakers = NULL;
  r->lane_len = r->lane_cap = 0;
  /* Relaxed: under lane_mu; the CAS pair above carries the ordering. */
  atomic_store_explicit(&r->lane_waiting, 0, memory_order_relaxed);
  pthread_mutex_unlock(&r->lane_mu);
  for (size_t i = 0; i < n; i++) /* from a worker: onto our own queue */
    treadle_wake(ws[i]);
  free(ws);
}

/* -------------------------------------------------------- thread hooks */

__thread pyrt_t *pyt_thread_rt;
static __thread PyGILState_STATE hook_gil;
static __thread PyThreadState *hook_ts;
static __thread PyObject *hook_thread; /* the thread's threading.Thread */

static void call_hook(PyObject *fn) {
  if (fn == NULL)
    return;
  PyObject *res = PyObject_CallNoArgs(fn);
  if (res == NULL)
    PyErr_WriteUnraisable(fn);
  Py_XDECREF(res);
}

/* Names the thread in `threading`, which would call it Dummy-N, after
 * the runtime's thread_name (the OS has it too, cut to 15 bytes). */
static void name_thread(pyrt_t *r) {
  hook_thread = PyObject_CallNoArgs(current_thread);
  if (hook_thread == NULL ||
      PyObject_SetAttrString(hook_thread, "name", r->thread_name) < 0)
    PyErr_WriteUnraisable(current_thread);
}

/* Drops the thread from `threading`'s table of live threads. Python 3.13
 * does that itself for a thread it did not start; 3.11 and 3.12 never do,
 * and would list the thread in threading.enumerate() forever. */
static void forget_thread(void) {
  if (hook_thread == NULL)
    return;
#if PY_VERSION_HEX < 0x030D0000
  PyObject *res = PyObject_CallMethod(hook_thread, "_delete", NULL);
  if (res == NULL)
    PyErr_Clear(); /* a program took it out itself */
  Py_XDECREF(res);
#endif
  Py_CLEAR(hook_thread);
}

/* Each thread holds a reference: blocking threads may outlive a runtime
 * shut down with a timeout. */
static void thread_start(void *ud) {
  pyrt_t *r = pyt_thread_rt = pyrt_ref(ud); /* for Handle.current() */
  hook_gil = PyGILState_Ensure();
  name_thread(r);
  call_hook(r->on_start);
  hook_ts = PyEval_SaveThread();
}

static void thread_stop(void *ud) {
  pyrt_t *r = ud;
  PyEval_RestoreThread(hook_ts);
  call_hook(r->on_stop);
  pyt_loop_thread_end();
  forget_thread();
  PyGILState_Release(hook_gil);
  pyt_thread_rt = NULL;
  pyrt_unref(r);
}

/* ------------------------------------------------------------ Runtime */

typedef struct {
  PyObject_HEAD
  pyrt_t *r;
} coreobj_t;

static PyTypeObject core_type, handle_type;

/* Builds a runtime from a builder the package has configured through
 * the SWIG functions. Called from swig/treadle.i. */
PyObject *treadle_py_build(treadle_builder_t *b, int flavor,
                           PyObject *on_start, PyObject *on_stop,
                           PyObject *thread_name) {
  if (b == NULL) {
    PyErr_SetString(PyExc_ValueError, "no builder");
    return NULL;
  }
  if (!PyUnicode_Check(thread_name)) {
    PyErr_SetString(PyExc_TypeError, "thread_name must be a str");
    return NULL;
  }
  for (PyObject **fn = (PyObject *[]){on_start, on_stop}, **end = fn + 2;
       fn < end; fn++)
    if (*fn != Py_None && !PyCallable_Check(*fn)) {
      PyErr_SetString(PyExc_TypeError, "thread hooks must be callable");
      return NULL;
    }
  coreobj_t *self = PyObject_New(coreobj_t, &core_type);
  if (self == NULL)
    return NULL;
  pyrt_t *r = self->r = calloc(1, sizeof *r);
  if (r == NULL) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  atomic_init(&r->refs, 1);
  pthread_mutex_init(&r->lane_mu, NULL);
  r->flavor = flavor;
  r->on_start = on_start == Py_None ? NULL : Py_NewRef(on_start);
  r->on_stop = on_stop == Py_None ? NULL : Py_NewRef(on_stop);
  r->thread_name = Py_NewRef(thread_name);
  treadle_builder_on_thread_start(b, thread_start, r);
  treadle_builder_on_thread_stop(b, thread_stop, r);
  treadle_runtime_t *rt = NULL;
  treadle_err_t err;
  Py_BEGIN_ALLOW_THREADS /* new threads take the GIL in their hook */
  err = treadle_builder_build(b, &rt);
  Py_END_ALLOW_THREADS
  if (err != 0) {
    Py_DECREF(self);
    return pyt_raise(err);
  }
  r->rt = rt;
  r->h = treadle_handle_ref(treadle_runtime_handle(rt));
  return (PyObject *)self;
}

pyrt_t *pyt_core_record(PyObject *core) {
  if (!PyObject_TypeCheck(core, &core_type)) {
    PyErr_SetString(PyExc_TypeError, "expected a treadle RuntimeCore");
    return NULL;
  }
  return ((coreobj_t *)core)->r;
}

/* The handle of a RuntimeCore, for the SWIG metrics functions
 * (borrowed; NULL with an exception set after shutdown). */
treadle_handle_t *treadle_py_handle(PyObject *core) {
  if (!PyObject_TypeCheck(core, &core_type) && !PyObject_TypeCheck(core, &handle_type)) {
    PyErr_SetString(PyExc_TypeError, "expected a runtime or handle");
    return NULL;
  }
  return ((coreobj_t *)core)->r->h;
}

static treadle_err_t shutdown_runtime(pyrt_t *r, uint64_t timeout_ns) {
  treadle_runtime_t *rt = r->rt;
  if (rt == NULL)
    return 0; /* the core refuses a runtime's own threads: EINRUNTIME */
  treadle_err_t err;
  Py_BEGIN_ALLOW_THREADS /* dropped tasks take the GIL to free coroutines */
  err = timeout_ns == TREADLE_FOREVER ? treadle_runtime_free(rt)
                                      : treadle_runtime_shutdown_timeout(rt, timeout_ns);
  Py_END_ALLOW_THREADS
  if (err == 0 || err == TREADLE_ETIMEDOUT)
    r->rt = NULL;
  return err;
}

static void core_dealloc(coreobj_t *self) {
  treadle_err_t err = self->r != NULL ? shutdown_runtime(self->r, TREADLE_FOREVER) : 0;
  if (err == TREADLE_EFORKED) {
    /* a forked child's copy of the parent's runtime: left alone */
  } else if (err != 0) { /* dropped inside one of its tasks: it cannot stop, so
                     it and its record stay, and we say so */
    PyErr_SetString(pyt_Error, "a runtime dropped inside a treadle task was "
                               "leaked: shut runtimes down outside their tasks");
    PyErr_WriteUnraisable(NULL);
  } else if (self->r != NULL) {
    pyrt_unref(self->r);
  }
  PyObject_Free(self);
}

static PyObject *core_shutdown(coreobj_t *self, PyObject *arg) {
  uint64_t ns = TREADLE_FOREVER;
  if (arg != Py_None && pyt_duration(arg, &ns) < 0)
    return NULL;
  treadle_err_t err = shutdown_runtime(self->r, ns);
  if (err == TREADLE_ETIMEDOUT)
    Py_RETURN_FALSE;
  if (err != 0)
    return pyt_raise(err);
  Py_RETURN_TRUE;
}

static PyObject *core_spawn(coreobj_t *self, PyObject *coro) {
  if (self->r->rt == NULL)
    return pyt_raise(TREADLE_ESHUTDOWN);
  return pyt_spawn(self->r, coro);
}

static PyObject *core_block_on_step(coreobj_t *self, PyObject *args) {
  PyObject *join, *wake = Py_None;
  int watch;
  if (!PyArg_ParseTuple(args, "Op|O", &join, &watch, &wake))
    return NULL;
  if (self->r->rt == NULL)
    return pyt_raise(TREADLE_ESHUTDOWN);
  return pyt_block_on_step(self->r, join, watch, wake);
}

static PyObject *core_watch_wake(coreobj_t *self, PyObject *arg) {
  int fd = pyt_as_int(arg);
  if (fd == -1 && PyErr_Occurred())
    return NULL;
  if (fd < -1) {
    PyErr_SetString(PyExc_ValueError, "fd must be an open fd or -1 (none)");
    return NULL;
  }
  if (self->r->rt == NULL)
    return pyt_raise(TREADLE_ESHUTDOWN);
  return pyt_wake_watch(self->r, fd);
}

static PyObject *core_spawn_blocking(coreobj_t *self, PyObject *args, PyObject *kw) {
  if (self->r->rt == NULL)
    return pyt_raise(TREADLE_ESHUTDOWN);
  return pyt_spawn_blocking(self->r, args, kw);
}

static PyObject *handle_wrap(pyrt_t *r) {
  coreobj_t *h = PyObject_New(coreobj_t, &handle_type);
  if (h != NULL)
    h->r = pyrt_ref(r);
  return (PyObject *)h;
}

static PyObject *core_handle(coreobj_t *self, PyObject *Py_UNUSED(unused)) {
  return handle_wrap(self->r);
}

static PyObject *core_is_shutdown(coreobj_t *self, void *Py_UNUSED(unused)) {
  return PyBool_FromLong(self->r->rt == NULL);
}

static PyObject *core_flavor(coreobj_t *self, void *Py_UNUSED(unused)) {
  return PyUnicode_FromString(self->r->flavor == TREADLE_CURRENT_THREAD
                                  ? "current_thread" : "multi_thread");
}

static PyMethodDef core_methods[] = {
    {"spawn", (PyCFunction)core_spawn, METH_O,
     "spawn($self, coro, /)\n--\n\n"
     "Runs coro as a task of this runtime: a JoinHandle."},
    {"block_on_step", (PyCFunction)core_block_on_step, METH_VARARGS,
     "block_on_step($self, join, watch_sigint, wake=None, /)\n--\n\n"
     "Drives the runtime until the task of `join` finishes (True) or a "
     "signal needs Python (False): SIGINT, or a byte on the fd of `wake` "
     "(a WakeWatch of Python's signal wakeup fd's read end)."},
    {"watch_wake", (PyCFunction)core_watch_wake, METH_O,
     "watch_wake($self, fd, /)\n--\n\n"
     "A WakeWatch: fd (a pipe's non-blocking read end, which stays the "
     "caller's; -1: none) registered for block_on_step until its close()."},
    {"shutdown", (PyCFunction)core_shutdown, METH_O,
     "shutdown($self, timeout, /)\n--\n\n"
     "Cancels every task and joins every thread; False if blocking jobs "
     "were still running after timeout seconds (None: no limit)."},
    {"spawn_blocking", (PyCFunction)(void (*)(void))core_spawn_blocking,
     METH_VARARGS | METH_KEYWORDS,
     "spawn_blocking($self, fn, /, *args, **kwargs)\n--\n\n"
     "Runs fn on the blocking pool, from any thread: a JoinHandle."},
    {"handle", (PyCFunction)core_handle, METH_NOARGS,
     "handle($self, /)\n--\n\nA thread-safe Handle to this runtime."},
    {NULL}};

static PyGetSetDef core_getset[] = {
    {"is_shutdown", (getter)core_is_shutdown, NULL, "True after shutdown.", NULL},
    {"flavor", (getter)core_flavor, NULL, "current_thread or multi_thread.", NULL},
    {NULL}};

static PyTypeObject core_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core.RuntimeCore",
    .tp_basicsize = sizeof(coreobj_t),
    .tp_dealloc = (destructor)core_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The C runtime under treadle.Runtime.",
    .tp_methods = core_methods,
    .tp_getset = core_getset,
};

/* ------------------------------------------------------------- Handle */

static void handle_dealloc(coreobj_t *self) {
  pyrt_unref(self->r);
  PyObject_Free(self);
}

static PyObject *handle_spawn(coreobj_t *self, PyObject *coro) {
  return pyt_spawn(self->r, coro);
}

/* The runtime of the running task, else the one whose thread this is (a
 * blocking job, a thread hook), as treadle_handle_current() finds it. */
static PyObject *handle_current(PyObject *Py_UNUSED(cls), PyObject *Py_UNUSED(unused)) {
  pyrt_t *r = pyt_current != NULL ? pytask_runtime(pyt_current) : pyt_thread_rt;
  if (r == NULL) {
    PyErr_SetString(PyExc_RuntimeError,
                    "no treadle task is running on this thread, and no "
                    "runtime started it");
    return NULL;
  }
  return handle_wrap(r);
}

static PyMethodDef handle_methods[] = {
    {"spawn", (PyCFunction)handle_spawn, METH_O,
     "spawn($self, coro, /)\n--\n\n"
     "Spawns coro onto the runtime, from any thread (a worker, the main "
     "thread, a threading.Thread): a JoinHandle."},
    {"current", (PyCFunction)handle_current, METH_NOARGS | METH_STATIC,
     "current()\n--\n\n"
     "The Handle of the running task's runtime, or of the runtime whose "
     "thread this is (a blocking job, a thread hook); RuntimeError "
     "elsewhere."},
    {NULL}};

static PyTypeObject handle_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle.Handle",
    .tp_basicsize = sizeof(coreobj_t),
    .tp_dealloc = (destructor)handle_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A thread-safe reference to a runtime: spawn onto it from "
              "anywhere. It stays usable after the runtime shut down; "
              "spawns then raise treadle.ShutdownError.",
    .tp_methods = handle_methods,
};

int pyt_runtime_init(PyObject *m) {
  PyObject *sock = PyImport_ImportModule("socket");
  PyObject *aio = PyImport_ImportModule("asyncio");
  PyObject *threading = PyImport_ImportModule("threading");
  if (sock == NULL || aio == NULL || threading == NULL) {
    Py_XDECREF(sock);
    Py_XDECREF(aio);
    Py_XDECREF(threading);
    return -1;
  }
  gaierror = PyObject_GetAttrString(sock, "gaierror");
  pyt_CancelledError = PyObject_GetAttrString(aio, "CancelledError");
  current_thread = PyObject_GetAttrString(threading, "current_thread");
  Py_DECREF(sock);
  Py_DECREF(aio);
  Py_DECREF(threading);
  if (gaierror == NULL || pyt_CancelledError == NULL || current_thread == NULL)
    return -1;
  pyt_Error = PyErr_NewExceptionWithDoc(
      "treadle.Error", "An error from treadle's core; .code and .name "
      "give its TREADLE_E* code.", NULL, NULL);
  pyt_ShutdownError = PyErr_NewExceptionWithDoc(
      "treadle.ShutdownError", "The runtime has shut down.", pyt_Error, NULL);
  pyt_ClosedError = PyErr_NewExceptionWithDoc(
      "treadle.ClosedError", "The stream or listener was closed while "
      "this operation waited.", pyt_Error, NULL);
  if (pyt_Error == NULL || pyt_ShutdownError == NULL || pyt_ClosedError == NULL)
    return -1;
  if (PyType_Ready(&core_type) < 0 || PyType_Ready(&handle_type) < 0)
    return -1;
  if (PyModule_AddObjectRef(m, "Error", pyt_Error) < 0 ||
      PyModule_AddObjectRef(m, "ShutdownError", pyt_ShutdownError) < 0 ||
      PyModule_AddObjectRef(m, "ClosedError", pyt_ClosedError) < 0 ||
      PyModule_AddObjectRef(m, "CancelledError", pyt_CancelledError) < 0 ||
      PyModule_AddObjectRef(m, "RuntimeCore", (PyObject *)&core_type) < 0 ||
      PyModule_AddObjectRef(m, "Handle", (PyObject *)&handle_type) < 0)
    return -1;
  return 0;
}

/* Called from the SWIG module's init. */
int treadle_py_init(PyObject *m) {
  if (pyt_runtime_init(m) < 0 || pyt_task_init(m) < 0 || pyt_net_init(m) < 0 ||
      pyt_loop_init(m) < 0 || pyt_transport_init(m) < 0 || pyt_datagram_init(m) < 0 ||
      pyt_testhooks_init(m) < 0)
    return -1;
  return 0;
}
