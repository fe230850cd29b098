/* Internal, for tests only (tests/python/test_alloc_sweep.py): the core's
 * fail-next allocator and allocation counter (core/src/alloc.c, TESTING.md
 * "Fail-next allocator") driven from Python, so that a test can make the
 * k-th allocation treadle makes fail and check the binding turns it into
 * MemoryError. Not part of the API: the names start with _test_ and are
 * not in treadle/_core.pyi. */
#include "pytreadle.h"

#include "internal.h"

static PyObject *fail_alloc(PyObject *Py_UNUSED(m), PyObject *arg) {
  long n = PyLong_AsLong(arg);
  if (n == -1 && PyErr_Occurred())
    return NULL;
  return PyLong_FromLong(treadle__alloc_fail_after(n < 0 ? -1 : n));
}

static PyObject *count_start(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
  treadle__alloc_count_start();
  Py_RETURN_NONE;
}

static PyObject *count_live(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
  return PyLong_FromLong(treadle__alloc_count_live());
}

static PyObject *count_stop(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
  long live = 0;
  long made = treadle__alloc_count_stop(&live);
  return Py_BuildValue("(ll)", made, live);
}

static PyMethodDef test_functions[] = {
    {"_test_fail_alloc", fail_alloc, METH_O,
     "_test_fail_alloc($module, n, /)\n--\n\n"
     "Internal, for tests: the core's allocation after the next n fails "
     "(n < 0: none); returns the countdown it replaced (>= 0: the last one "
     "never fired)."},
    {"_test_alloc_count_start", count_start, METH_NOARGS,
     "_test_alloc_count_start($module, /)\n--\n\n"
     "Internal, for tests: starts counting the core's allocations."},
    {"_test_alloc_count_live", count_live, METH_NOARGS,
     "_test_alloc_count_live($module, /)\n--\n\n"
     "Internal, for tests: blocks counted and not yet freed."},
    {"_test_alloc_count_stop", count_stop, METH_NOARGS,
     "_test_alloc_count_stop($module, /)\n--\n\n"
     "Internal, for tests: stops counting; (allocations, not freed)."},
    {NULL}};

int pyt_testhooks_init(PyObject *m) {
  return PyModule_AddFunctions(m, test_functions);
}
