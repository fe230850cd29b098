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

/* Every wrapper gets a signature: SWIG's autodoc writes the parameter
 * names into its docstring ("name(a, b) -> type"), and %init turns that
 * into the form inspect.signature reads (swig_text_signatures). */
%feature("autodoc", "0");

%begin %{
/* Two warnings of the generated code, off for this file alone: SWIG gives
 * every wrapper a `self` parameter, used or not; and SWIG 4.1's own type
 * objects leave out the PyTypeObject fields that Python 3.12 and 3.13
 * added (tp_watched, tp_versions_used), which are zero as they should be. */
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
%}

%{
#include "treadle.h"
#include "pytreadle.h"

PyObject *treadle_py_build(treadle_builder_t *b, int flavor,
                           PyObject *on_start, PyObject *on_stop,
                           PyObject *thread_name);
treadle_handle_t *treadle_py_handle(PyObject *core);
int treadle_py_init(PyObject *m);

/* Rewrites the docstring of each wrapper, "name(a, b) -> type" as SWIG's
 * autodoc writes it, into the form that inspect.signature reads:
 * "name($module, a, b, /)\n--\n\nname(a, b) -> type". The SWIG runtime's
 * own helpers (swigregister, swiginit) have no docstring: one object, or
 * *args. Runs once (the module is initialised once); the strings live as
 * long as the table does, that is until the process ends. */
static int swig_text_signatures(PyMethodDef *defs) {
  static int done;
  if (done)
    return 0;
  for (PyMethodDef *d = defs; d->ml_name != NULL; d++) {
    const char *doc = d->ml_doc != NULL ? d->ml_doc : "";
    const char *open = strchr(doc, '(');
    const char *close = open != NULL ? strchr(open, ')') : NULL;
    const char *params = (d->ml_flags & METH_O) ? "obj" : "*args";
    int len = (int)strlen(params);
    if (close != NULL) { /* the names between the parentheses */
      params = open + 1;
      len = (int)(close - params);
    }
    const char *fmt = len > 0 && *params == '*'
                          ? "%s($module%s%.*s)\n--\n\n%s"
                          : "%s($module%s%.*s, /)\n--\n\n%s";
    const char *comma = len == 0 ? "" : ", ";
    int n = snprintf(NULL, 0, fmt, d->ml_name, comma, len, params, doc);
    char *text = malloc((size_t)n + 1);
    if (text == NULL) {
      PyErr_NoMemory();
      return -1;
    }
    snprintf(text, (size_t)n + 1, fmt, d->ml_name, comma, len, params, doc);
    d->ml_doc = text;
  }
  done = 1;
  return 0;
}

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
  if (swig_text_signatures(SwigMethods) < 0 || treadle_py_init(m) < 0)
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

/* A str argument is passed as its UTF-8 (None as NULL), as SWIG's own
 * typemap does, except that a conversion that fails for want of memory
 * raises that MemoryError instead of SWIG's TypeError. */
%typemap(in) const char * {
  if ($input == Py_None) {
    $1 = NULL;
  } else if (PyUnicode_Check($input)) {
    $1 = (char *)PyUnicode_AsUTF8($input);
    if ($1 == NULL)
      SWIG_fail;
  } else {
    PyErr_Format(PyExc_TypeError,
                 "in method '$symname', argument $argnum of type 'char const *'");
    SWIG_fail;
  }
}
%typemap(freearg) const char * "" /* the str keeps its UTF-8 */

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

/* What the out-parameter typemaps above return, for autodoc (which would
 * name the C return type, treadle_err_t). */
%feature("autodoc", "treadle_builder_new(flavor) -> treadle_builder_t")
    treadle_builder_new;
%feature("autodoc", "treadle_handle_metrics(h) -> treadle_runtime_metrics_t")
    treadle_handle_metrics;
%feature("autodoc",
         "treadle_handle_worker_metrics(h, worker) -> treadle_worker_metrics_t")
    treadle_handle_worker_metrics;

/* `core_handle` takes a RuntimeCore or Handle object. Every wrapped
 * function that takes a handle takes one of those, so the header's
 * parameter name (`h`) gets the typemap too. */
%typemap(in) treadle_handle_t *core_handle {
  $1 = treadle_py_handle($input);
  if ($1 == NULL)
    SWIG_fail;
}

%apply treadle_handle_t *core_handle { treadle_handle_t *h };

/* ------------------------------------------------------------ allow-list
 * SWIG reads the public header itself, so that types, fields and values are
 * written once, in treadle.h. Every treadle_ and TREADLE_ name is ignored
 * (the regex), unless it is named below (a rename of an exact name wins over
 * a regex): functions that take callbacks or raw pointers, and anything
 * else the package does not use, stay out of Python. An enum's or a
 * struct's members follow it; a struct is named by its tag. */
%rename("$ignore", regextarget=1) "^(treadle|TREADLE)_";

/* Version macros and the runtime flavors. */
%rename("%s") TREADLE_VERSION_MAJOR;
%rename("%s") TREADLE_VERSION_MINOR;
%rename("%s") TREADLE_VERSION_PATCH;
%rename("%s") TREADLE_MAX_WORKERS;
%rename("%s") treadle_flavor_t;
%rename("%s") TREADLE_CURRENT_THREAD;
%rename("%s") TREADLE_MULTI_THREAD;

/* Errors and time. */
%rename("%s") treadle_strerror;
%rename("%s") treadle_err_name;
%rename("%s") treadle_now;

/* The builder's plain setters (the thread hooks go through
 * treadle_py_build, which owns the Python callables). */
%rename("%s") treadle_builder_new;
%rename("%s") treadle_builder_free;
%rename("%s") treadle_builder_worker_threads;
%rename("%s") treadle_builder_max_blocking_threads;
%rename("%s") treadle_builder_thread_keep_alive;
%rename("%s") treadle_builder_enable_io;
%rename("%s") treadle_builder_enable_time;
%rename("%s") treadle_builder_thread_name;
%rename("%s") treadle_builder_event_interval;
%rename("%s") treadle_builder_global_queue_interval;

/* The metrics structs' accessors (treadle_*_metrics_t_<field>_get/_set)
 * read through their first argument: None, which SWIG turns into NULL,
 * raises TypeError instead of crashing. */
%typemap(check) struct treadle_runtime_metrics_s *self, struct treadle_worker_metrics_s *self {
  if ($1 == NULL)
    SWIG_exception_fail(SWIG_TypeError, "in method '$symname', argument $argnum is None");
}

/* Metrics: the structs (the proxies treadle_runtime_metrics_t and
 * treadle_worker_metrics_t, whose fields Metrics and WorkerMetrics in
 * __init__.py copy) and the functions that fill them. */
%rename("%s") treadle_runtime_metrics_s;
%rename("%s") treadle_worker_metrics_s;
%rename("%s") treadle_handle_metrics;
%rename("%s") treadle_handle_worker_metrics;

/* The binding's own functions, declared below. */
%rename("%s") treadle_py_error_map;
%rename("%s") treadle_py_build;

%include <stdint.i>
%include "treadle.h"

/* --------------------------------------------------- the binding's own */
PyObject *treadle_py_error_map(void);
/* Builds the runtime; the hooks (callables or None) run on every thread
 * the runtime starts, which `threading` knows as thread_name (a str, the
 * name given to the builder). Returns the RuntimeCore. */
PyObject *treadle_py_build(treadle_builder_t *b, int flavor,
                           PyObject *on_start, PyObject *on_stop,
                           PyObject *thread_name);
