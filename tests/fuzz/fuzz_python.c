/* libFuzzer target: the Python argument parsing of treadle._core's C types
 * (bindings/python, swig/treadle.i; docs/TESTING.md "Fuzzing").
 *
 * Embeds Debian's libpython3.11 and imports the extension as scripts/
 * fuzz.sh builds it: with clang, ASan, UBSan and the fuzzer's coverage,
 * in build-fuzz/python, so that this binary's sanitizer runtime serves
 * both. Each input goes to run_one of fuzz_python.py, which reads from it
 * which entry point to call (module functions in a task or not, SWIG
 * wrappers, constructors, methods of a live runtime) with which edge values
 * (tests/python/test_fuzz_args.py's); a call that raises anything but a
 * TypeError, ValueError, OverflowError, OSError, RuntimeError, treadle.Error
 * or the conversion's own exception fails run_one, and this aborts. The
 * paths come from PYTHONPATH (fuzz.sh sets it). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static PyObject *run_one;

static void fail(const char *what) {
  fprintf(stderr, "fuzz_python: %s\n", what);
  if (PyErr_Occurred())
    PyErr_Print();
  abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  Py_InitializeEx(0);
  PyObject *mod = PyImport_ImportModule("fuzz_python");
  if (mod == NULL)
    fail("cannot import fuzz_python (PYTHONPATH: build-fuzz/python, tests/fuzz, tests/python)");
  run_one = PyObject_GetAttrString(mod, "run_one");
  Py_DECREF(mod);
  if (run_one == NULL)
    fail("no run_one");
  /* The runtime's threads take the GIL too: hold it only during a call. */
  PyEval_SaveThread();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *r = PyObject_CallFunction(run_one, "y#", (const char *)data, (Py_ssize_t)size);
  if (r == NULL)
    fail("run_one failed: a call raised what it must not (above)");
  Py_DECREF(r);
  PyGILState_Release(g);
  return 0;
}
