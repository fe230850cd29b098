/* The SWIG interface of treadle's Python module (treadle._core, proxies in
 * treadle/core.py): runtime and builder options, handles, metrics, errors.
 * The coroutine driver and the awaitables are C in bindings/python/ and
 * join the same extension module at init (treadle_py_init).
 *
 * GIL: nothing wrapped here blocks, so every wrapper keeps the GIL
 * (%nothread). The calls that block or join threads (build, block_on,
 * shutdown) live in bindings/python/runtime.c and task.c, which release
 * the GIL themselves around the C call. */
%module(package="treadle", threads="1") core
%nothread;

%{
#include "treadle.h"
#include "pytreadle.h"

PyObject *treadle_py_build(treadle_builder_t *b, int flavor,
                           PyObject *on_start, PyObject *on_stop);
treadle_handle_t *treadle_py_handle(PyObject *core);
int treadle_py_init(PyObject *m);

/* The error map, for the package's exception table. */
static PyObject *treadle_py_error_map(void) {
  PyObject *list = PyList_New(0);
#define XX(name, code, msg)                                                  \
  if (list != NULL) {                                                        \
    PyObject *item = Py_BuildValue("(sis)", #name, (int)(code), msg);       \
    if (item == NULL || PyList_Append(list, item) < 0)                       \
      Py_CLEAR(list);                                                        \
    Py_XDECREF(item);                                                        \
  }
  TREADLE_ERRNO_MAP(XX)
#undef XX
  return list;
}
%}

%init %{
  if (treadle_py_init(m) < 0)
    return NULL;
%}

/* A failing treadle_err_t raises the exception the error map gives it
 * (an OSError subclass for system errors, treadle.Error otherwise). */
%typemap(out) treadle_err_t {
  if ($1 < 0) {
    pyt_raise($1);
    SWIG_fail;
  }
  $result = SWIG_Py_Void();
}

%typemap(in, numinputs=0) treadle_builder_t **out (treadle_builder_t *tmp = NULL) {
  $1 = &tmp;
}
%typemap(argout) treadle_builder_t **out {
  Py_DECREF($result);
  $result = SWIG_NewPointerObj(tmp$argnum, $descriptor(treadle_builder_t *), 0);
}

%define METRICS_OUT(TYPE)
%typemap(in, numinputs=0) TYPE *out (TYPE tmp) {
  memset(&tmp, 0, sizeof tmp);
  $1 = &tmp;
}
%typemap(argout) TYPE *out {
  TYPE *copy = (TYPE *)malloc(sizeof(TYPE));
  if (copy == NULL) {
    PyErr_NoMemory();
    SWIG_fail;
  }
  *copy = tmp$argnum;
  Py_DECREF($result);
  $result = SWIG_NewPointerObj(copy, $descriptor(TYPE *), SWIG_POINTER_OWN);
}
%enddef
METRICS_OUT(treadle_runtime_metrics_t)
METRICS_OUT(treadle_worker_metrics_t)

%typemap(in) treadle_handle_t *core_handle {
  $1 = treadle_py_handle($input);
  if ($1 == NULL)
    SWIG_fail;
}

typedef int treadle_err_t;
typedef struct treadle_builder_s treadle_builder_t;

%immutable;
#define TREADLE_VERSION_MAJOR 0
#define TREADLE_VERSION_MINOR 1
#define TREADLE_VERSION_PATCH 0
%mutable;

typedef enum { TREADLE_CURRENT_THREAD = 0, TREADLE_MULTI_THREAD = 1 } treadle_flavor_t;

/* ---------------------------------------------------------- errors, time */
const char *treadle_strerror(treadle_err_t err);
const char *treadle_err_name(treadle_err_t err);
unsigned long long treadle_now(void);
PyObject *treadle_py_error_map(void);

/* ------------------------------------------------------------- builder */
treadle_err_t treadle_builder_new(treadle_flavor_t flavor, treadle_builder_t **out);
void treadle_builder_free(treadle_builder_t *b);
treadle_err_t treadle_builder_worker_threads(treadle_builder_t *b, unsigned n);
treadle_err_t treadle_builder_max_blocking_threads(treadle_builder_t *b, unsigned n);
treadle_err_t treadle_builder_thread_keep_alive(treadle_builder_t *b, unsigned long long ns);
treadle_err_t treadle_builder_enable_io(treadle_builder_t *b);
treadle_err_t treadle_builder_enable_time(treadle_builder_t *b);
treadle_err_t treadle_builder_thread_name(treadle_builder_t *b, const char *name);
treadle_err_t treadle_builder_event_interval(treadle_builder_t *b, unsigned n);
treadle_err_t treadle_builder_global_queue_interval(treadle_builder_t *b, unsigned n);
/* Builds the runtime; the hooks (callables or None) run on every thread
 * the runtime starts. Returns the RuntimeCore. */
PyObject *treadle_py_build(treadle_builder_t *b, int flavor,
                           PyObject *on_start, PyObject *on_stop);

/* ------------------------------------------------------------- metrics */
typedef struct treadle_runtime_metrics_s {
  unsigned workers;
  unsigned long long live_tasks;
  unsigned long long inject_queue_depth;
  unsigned long long blocking_threads;
  unsigned long long blocking_idle;
  unsigned long long blocking_queue_depth;
  unsigned long long driver_parks;
} treadle_runtime_metrics_t;

typedef struct treadle_worker_metrics_s {
  unsigned long long polls;
  unsigned long long steals;
  unsigned long long steal_operations;
  unsigned long long parks;
  unsigned long long unparks;
  unsigned long long lifo_hits;
  unsigned long long overflows;
  unsigned long long local_queue_depth;
} treadle_worker_metrics_t;

/* `core_handle` takes a RuntimeCore or Handle object. */
treadle_err_t treadle_handle_metrics(treadle_handle_t *core_handle,
                                     treadle_runtime_metrics_t *out);
treadle_err_t treadle_handle_worker_metrics(treadle_handle_t *core_handle,
                                            unsigned worker,
                                            treadle_worker_metrics_t *out);
