/* TcpListener and TcpStream: thin objects over bindings/common's stream
 * and listener. Their methods return Ops (task.c) whose leaves run without
 * the GIL. A stream has one read in flight at a time (a second raises
 * RuntimeError, as asyncio's streams do); writes from several tasks queue
 * and go out whole, in order, each with the bytes its buffer held when
 * write() was called. */
#include "pytreadle.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>

typedef struct {
  PyObject_HEAD
  tb_stream_t st;
} streamobj_t;

typedef struct {
  PyObject_HEAD
  tb_listener_t ls;
} listenerobj_t;

/* ----------------------------------------------------------- helpers */

static PyObject *addr_tuple(const struct sockaddr_storage *a) {
  char host[TREADLE_HOST_LEN];
  int port = treadle_sockaddr_host(a, host);
  if (port < 0)
    Py_RETURN_NONE;
  return Py_BuildValue("(si)", host, port);
}

static int check_port(PyObject *arg, int lo, int *port) {
  if (!PyLong_Check(arg)) {
    PyErr_Format(PyExc_TypeError, "port must be an int, not %.100s",
                 Py_TYPE(arg)->tp_name);
    return -1;
  }
  long p = PyLong_AsLong(arg);
  if (p == -1 && PyErr_Occurred())
    PyErr_Clear();
  if (p < lo || p > 65535) {
    PyErr_Format(PyExc_ValueError, "port must be in %d..65535", lo);
    return -1;
  }
  *port = (int)p;
  return 0;
}

static const char *check_host(PyObject *arg) {
  if (arg == Py_None)
    return "";
  if (!PyUnicode_Check(arg)) {
    PyErr_Format(PyExc_TypeError, "host must be a str, not %.100s",
                 Py_TYPE(arg)->tp_name);
    return NULL;
  }
  Py_ssize_t len;
  const char *h = PyUnicode_AsUTF8AndSize(arg, &len);
  if (h != NULL && strlen(h) != (size_t)len) {
    PyErr_SetString(PyExc_ValueError, "host contains a NUL character");
    return NULL;
  }
  return h;
}

/* The runtime of the running treadle task, or of the treadle.EventLoop
 * whose iteration runs (an asyncio task on it). */
static treadle_handle_t *task_handle(void) {
  if (pyt_current != NULL)
    return treadle_cx_handle(pyt_current_cx);
  if (pyt_loop_running != NULL)
    return pyt_loop_runtime(pyt_loop_running)->h;
  PyErr_SetString(PyExc_RuntimeError,
                  "no treadle task or loop is running on this thread");
  return NULL;
}

/* ----------------------------------------------------------- stream */

/* Takes ownership of s (also on failure). */
static PyObject *stream_wrap(treadle_tcp_stream_t *s) {
  streamobj_t *o = PyObject_New(streamobj_t, &pyt_stream_type);
  if (o == NULL) {
    treadle_tcp_stream_free(s);
    return NULL;
  }
  if (tb_stream_init(&o->st, s) != 0) {
    PyObject_Free(o);
    return PyErr_NoMemory();
  }
  return (PyObject *)o;
}

static void stream_dealloc(streamobj_t *o) {
  tb_stream_free(&o->st);
  PyObject_Free(o);
}

/* The op a stream method returns for what tb_op_* said: EBUSY raises now
 * (a program error), other errors raise at the await. */
static PyObject *stream_op(op_t *op, treadle_err_t err, const char *busy) {
  if (err == 0)
    return (PyObject *)op;
  const char *what = op->what;
  pyt_op_drop(op);
  if (err == TREADLE_EBUSY) {
    PyErr_Format(PyExc_RuntimeError, "another task is already %s", busy);
    return NULL;
  }
  return pyt_op_error(err, what);
}

static PyObject *stream_read(streamobj_t *o, PyObject *const *args,
                             Py_ssize_t n) {
  Py_ssize_t want = TB_READ_CHUNK;
  if (n > 1) {
    PyErr_SetString(PyExc_TypeError, "read(n=65536)");
    return NULL;
  }
  if (n == 1) {
    if (!PyLong_Check(args[0])) {
      PyErr_Format(PyExc_TypeError, "n must be an int, not %.100s",
                   Py_TYPE(args[0])->tp_name);
      return NULL;
    }
    want = PyLong_AsSsize_t(args[0]);
    if (want == -1 && PyErr_Occurred())
      return NULL;
    if (want < 0) {
      PyErr_SetString(PyExc_ValueError, "n must be >= 0");
      return NULL;
    }
  }
  op_t *op = pyt_op_new(OP_LEAF, (PyObject *)o, "TcpStream.read");
  if (op == NULL)
    return NULL;
  return stream_op(op, tb_op_read(&op->tb, &o->st, (size_t)want),
                   "reading from this stream");
}

static PyObject *stream_read_into(streamobj_t *o, PyObject *buf) {
  op_t *op = pyt_op_new(OP_LEAF, (PyObject *)o, "TcpStream.read_into");
  if (op == NULL)
    return NULL;
  if (PyObject_GetBuffer(buf, &op->view, PyBUF_WRITABLE) < 0) {
    pyt_op_drop(op);
    return NULL;
  }
  op->has_view = true;
  return stream_op(op, tb_op_read_into(&op->tb, &o->st, op->view.buf,
                                       (size_t)op->view.len),
                   "reading from this stream");
}

/* True for bytes, and for a memoryview of bytes: buffers nobody can
 * change. */
static bool immutable_buffer(PyObject *data) {
  if (PyMemoryView_Check(data))
    data = PyMemoryView_GET_BASE(data); /* NULL: made from raw memory */
  return data != NULL && PyBytes_Check(data);
}

/* A write sends what `data` holds at the call: a buffer that the caller
 * may change (bytearray, writable memoryview, array) is copied now, as
 * asyncio's transports copy what they cannot send at once, because the
 * op reads it only from its first poll on, and for as long as the peer
 * takes. Bytes are sent from where they are. */
static PyObject *stream_write(streamobj_t *o, PyObject *data) {
  op_t *op = pyt_op_new(OP_LEAF, (PyObject *)o, "TcpStream.write");
  if (op == NULL)
    return NULL;
  if (PyObject_GetBuffer(data, &op->view, PyBUF_SIMPLE) < 0) {
    pyt_op_drop(op);
    return NULL;
  }
  op->has_view = true;
  if (!immutable_buffer(data)) {
    PyObject *copy = PyBytes_FromStringAndSize(op->view.buf, op->view.len);
    PyBuffer_Release(&op->view);
    op->has_view = copy != NULL &&
                   PyObject_GetBuffer(copy, &op->view, PyBUF_SIMPLE) == 0;
    Py_XDECREF(copy); /* the view holds it */
    if (!op->has_view) {
      pyt_op_drop(op);
      return NULL;
    }
  }
  return stream_op(op, tb_op_write(&op->tb, &o->st, op->view.buf,
                                   (size_t)op->view.len),
                   "writing to this stream");
}

static PyObject *stream_shutdown(streamobj_t *o, PyObject *Py_UNUSED(unused)) {
  treadle_err_t err = treadle_tcp_shutdown(o->st.s);
  return err != 0 ? pyt_op_error(err, "TcpStream.shutdown")
                  : pyt_op_ready(Py_NewRef(Py_None), "TcpStream.shutdown");
}

static PyObject *stream_close(streamobj_t *o, PyObject *Py_UNUSED(unused)) {
  tb_stream_close(&o->st);
  Py_RETURN_NONE;
}

static PyObject *stream_set_nodelay(streamobj_t *o, PyObject *const *args,
                                    Py_ssize_t n) {
  int on = 1;
  if (n > 1 || (n == 1 && (on = PyObject_IsTrue(args[0])) < 0)) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_TypeError, "set_nodelay(on=True)");
    return NULL;
  }
  treadle_err_t err = treadle_tcp_set_nodelay(o->st.s, on);
  if (err != 0)
    return pyt_raise(err);
  Py_RETURN_NONE;
}

static PyObject *stream_addr(streamobj_t *o, void *peer) {
  struct sockaddr_storage a;
  treadle_err_t err = peer ? treadle_tcp_peer_addr(o->st.s, &a)
                           : treadle_tcp_local_addr(o->st.s, &a);
  return err != 0 ? pyt_raise(err) : addr_tuple(&a);
}

static PyObject *stream_connect(PyObject *Py_UNUSED(cls), PyObject *const *args,
                                Py_ssize_t n) {
  int port;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "connect(host, port)");
    return NULL;
  }
  const char *host = check_host(args[0]);
  if (host == NULL || check_port(args[1], 1, &port) < 0)
    return NULL;
  if (*host == '\0') {
    PyErr_SetString(PyExc_ValueError, "connect needs a host");
    return NULL;
  }
  op_t *op = pyt_op_new(OP_LEAF, NULL, "TcpStream.connect");
  if (op != NULL && tb_op_connect(&op->tb, host, port) != 0) {
    pyt_op_drop(op);
    return PyErr_NoMemory();
  }
  return (PyObject *)op;
}

static PyObject *self_ready(PyObject *o, PyObject *Py_UNUSED(unused)) {
  return pyt_op_ready(Py_NewRef(o), Py_IS_TYPE(o, &pyt_stream_type)
                                        ? "TcpStream.__aenter__"
                                        : "TcpListener.__aenter__");
}

static PyObject *stream_aexit(streamobj_t *o, PyObject *Py_UNUSED(args)) {
  tb_stream_close(&o->st);
  return pyt_op_ready(Py_NewRef(Py_False), "TcpStream.__aexit__");
}

static PyMethodDef stream_methods[] = {
    {"connect", (PyCFunction)(void (*)(void))stream_connect,
     METH_FASTCALL | METH_STATIC,
     "connect(host, port, /)\n--\n\n"
     "await TcpStream.connect(host, port) -> TcpStream. host is an address "
     "or a name (resolved on the blocking pool)."},
    {"read", (PyCFunction)(void (*)(void))stream_read, METH_FASTCALL,
     "read($self, n=65536, /)\n--\n\n"
     "await read(n=65536) -> bytes: up to n bytes; b'' at end of stream."},
    {"read_into", (PyCFunction)stream_read_into, METH_O,
     "read_into($self, buffer, /)\n--\n\n"
     "await read_into(buffer) -> int: reads into a writable buffer."},
    {"write", (PyCFunction)stream_write, METH_O,
     "write($self, data, /)\n--\n\n"
     "await write(data): writes all of a bytes-like object, after the "
     "writes other tasks started before it. It sends what data holds when "
     "write() is called: a mutable buffer (bytearray, array, writable "
     "memoryview) is copied then, and may be reused at once; bytes are "
     "sent without a copy."},
    {"shutdown", (PyCFunction)stream_shutdown, METH_NOARGS,
     "shutdown($self, /)\n--\n\n"
     "await shutdown(): shuts the write side; the peer reads end of stream."},
    {"close", (PyCFunction)stream_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Closes the socket; a task waiting on it gets ClosedError."},
    {"set_nodelay", (PyCFunction)(void (*)(void))stream_set_nodelay, METH_FASTCALL,
     "set_nodelay($self, on=True, /)\n--\n\nSets TCP_NODELAY (on by default)."},
    {"__aenter__", self_ready, METH_NOARGS,
     "__aenter__($self, /)\n--\n\nasync with: the stream."},
    {"__aexit__", (PyCFunction)stream_aexit, METH_VARARGS,
     "__aexit__($self, *exc)\n--\n\nasync with: closes it."},
    {NULL}};

static PyGetSetDef stream_getset[] = {
    {"peer_addr", (getter)stream_addr, NULL, "(host, port) of the peer.", (void *)1},
    {"local_addr", (getter)stream_addr, NULL, "(host, port) of this end.", NULL},
    {NULL}};

PyTypeObject pyt_stream_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle.TcpStream",
    .tp_basicsize = sizeof(streamobj_t),
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A TCP connection: `await TcpStream.connect(host, port)` or "
              "`await listener.accept()`.",
    .tp_methods = stream_methods,
    .tp_getset = stream_getset,
};

/* --------------------------------------------------------- listener */

static void listener_dealloc(listenerobj_t *o) {
  tb_listener_free(&o->ls);
  PyObject_Free(o);
}

static PyObject *listener_bind(PyObject *Py_UNUSED(cls), PyObject *args, PyObject *kw) {
  static char *names[] = {"host", "port", "backlog", "reuse_port", NULL};
  PyObject *hostobj, *portobj;
  int backlog = 1024, reuse = 0, port;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$ip:bind", names, &hostobj,
                                   &portobj, &backlog, &reuse))
    return NULL;
  const char *host = check_host(hostobj);
  if (host == NULL || check_port(portobj, 0, &port) < 0)
    return NULL;
  if (backlog < 1 || backlog > 65535) {
    PyErr_SetString(PyExc_ValueError, "backlog must be in 1..65535");
    return NULL;
  }
  treadle_handle_t *h = task_handle();
  if (h == NULL)
    return NULL;
  unsigned char addr[sizeof(struct in6_addr)];
  if (*host != '\0' && strcmp(host, "localhost") != 0 &&
      inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1) {
    /* bind resolves no names */
    return pyt_op_error(TREADLE_ENOHOST, "TcpListener.bind");
  }
  treadle_tcp_bind_opts_t opts = {backlog, reuse != 0};
  treadle_tcp_listener_t *l;
  treadle_err_t err = treadle_tcp_bind(h, host, port, &opts, &l);
  if (err != 0)
    return pyt_op_error(err, "TcpListener.bind");
  listenerobj_t *o = PyObject_New(listenerobj_t, &pyt_listener_type);
  if (o == NULL) {
    treadle_tcp_listener_free(l);
    return NULL;
  }
  tb_listener_init(&o->ls, l);
  return pyt_op_ready((PyObject *)o, "TcpListener.bind");
}

static op_t *accept_op(listenerobj_t *o) {
  op_t *op = pyt_op_new(OP_LEAF, (PyObject *)o, "TcpListener.accept");
  if (op == NULL)
    return NULL;
  return (op_t *)stream_op(op, tb_op_accept(&op->tb, &o->ls),
                           "accepting on this listener");
}

static PyObject *listener_accept(listenerobj_t *o, PyObject *Py_UNUSED(unused)) {
  return (PyObject *)accept_op(o);
}

static PyObject *listener_anext(listenerobj_t *o) {
  op_t *op = accept_op(o);
  if (op != NULL)
    op->anext = true;
  return (PyObject *)op;
}

static PyObject *listener_close(listenerobj_t *o, PyObject *Py_UNUSED(unused)) {
  tb_listener_close(&o->ls);
  Py_RETURN_NONE;
}

static PyObject *listener_aexit(listenerobj_t *o, PyObject *Py_UNUSED(args)) {
  tb_listener_close(&o->ls);
  return pyt_op_ready(Py_NewRef(Py_False), "TcpListener.__aexit__");
}

static PyObject *listener_addr(listenerobj_t *o, void *Py_UNUSED(unused)) {
  struct sockaddr_storage a;
  treadle_err_t err = treadle_tcp_listener_addr(o->ls.l, &a);
  return err != 0 ? pyt_raise(err) : addr_tuple(&a);
}

static PyObject *listener_exhaustions(listenerobj_t *o, void *Py_UNUSED(unused)) {
  return PyLong_FromUnsignedLongLong(
      treadle_tcp_listener_fd_exhaustions(o->ls.l));
}

static PyMethodDef listener_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))listener_bind,
     METH_VARARGS | METH_KEYWORDS | METH_STATIC,
     "bind(host, port, *, backlog=1024, reuse_port=False)\n--\n\n"
     "await TcpListener.bind(host, port, *, backlog=1024, reuse_port=False) "
     "-> TcpListener. host: a numeric IPv4/IPv6 address, \"localhost\", or "
     "\"\"/None for every IPv4 address; port 0 picks one (see local_addr)."},
    {"accept", (PyCFunction)listener_accept, METH_NOARGS,
     "accept($self, /)\n--\n\n"
     "await accept() -> (TcpStream, (host, port))."},
    {"close", (PyCFunction)listener_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Stops listening; a task in accept() gets ClosedError and "
     "`async for` ends."},
    {"__aenter__", self_ready, METH_NOARGS,
     "__aenter__($self, /)\n--\n\nasync with: the listener."},
    {"__aexit__", (PyCFunction)listener_aexit, METH_VARARGS,
     "__aexit__($self, *exc)\n--\n\nasync with: closes it."},
    {NULL}};

static PyGetSetDef listener_getset[] = {
    {"local_addr", (getter)listener_addr, NULL, "(host, port) it listens on.", NULL},
    {"fd_exhaustions", (getter)listener_exhaustions, NULL,
     "Times accept ran out of file descriptors and backed off.", NULL},
    {NULL}};

static PyAsyncMethods listener_async = {
    .am_aiter = PyObject_SelfIter,
    .am_anext = (unaryfunc)listener_anext,
};

PyTypeObject pyt_listener_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle.TcpListener",
    .tp_basicsize = sizeof(listenerobj_t),
    .tp_dealloc = (destructor)listener_dealloc,
    .tp_as_async = &listener_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A listening TCP socket. `async for stream, addr in listener` "
              "accepts until it is closed.",
    .tp_methods = listener_methods,
    .tp_getset = listener_getset,
};

/* ------------------------------------------------------------- ops */

PyObject *pyt_net_finish(op_t *op) {
  tb_op_t *tb = &op->tb;
  if (tb->err != 0) {
    if (op->anext && tb->err == TREADLE_ECLOSED) {
      PyErr_SetNone(PyExc_StopAsyncIteration);
      return NULL;
    }
    return pyt_raise(tb->err);
  }
  switch (tb->kind) {
  case TB_ACCEPT: {
    PyObject *addr = addr_tuple(&tb->u.accept.peer);
    PyObject *st = stream_wrap(tb_op_take_stream(tb));
    if (addr == NULL || st == NULL) {
      Py_XDECREF(addr);
      Py_XDECREF(st);
      return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, st, addr);
    Py_DECREF(st);
    Py_DECREF(addr);
    return pair;
  }
  case TB_CONNECT:
    return stream_wrap(tb_op_take_stream(tb));
  case TB_READ:
    return PyBytes_FromStringAndSize(tb_op_bytes(tb),
                                     (Py_ssize_t)tb->u.read.got);
  case TB_READ_INTO:
    return PyLong_FromSize_t(tb->u.read_into.got);
  default:
    Py_RETURN_NONE;
  }
}

int pyt_net_init(PyObject *m) {
  if (PyType_Ready(&pyt_stream_type) < 0 || PyType_Ready(&pyt_listener_type) < 0)
    return -1;
  if (PyModule_AddObjectRef(m, "TcpStream", (PyObject *)&pyt_stream_type) < 0 ||
      PyModule_AddObjectRef(m, "TcpListener", (PyObject *)&pyt_listener_type) < 0)
    return -1;
  return 0;
}
