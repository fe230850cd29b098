/* TcpListener and TcpStream: thin objects over treadle's TCP leaves. Their
 * methods return Ops (task.c); the system calls run in pyt_net_poll,
 * without the GIL. A stream has at most one read and one write in flight
 * (a second raises RuntimeError, as asyncio's streams do). */
#include "pytreadle.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>

#define READ_CHUNK 65536

/* Reads land here first; a read whose bytes cannot be turned into a
 * bytes object on this thread moves them to the heap (pyt_net_keep). */
static __thread char read_buf[READ_CHUNK];

typedef struct {
  PyObject_HEAD
  treadle_tcp_listener_t *l;
  bool accepting;
} listenerobj_t;

/* ----------------------------------------------------------- helpers */

PyObject *pyt_addr_tuple(const struct sockaddr_storage *a) {
  char host[INET6_ADDRSTRLEN];
  int port;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const void *)a;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const void *)a;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  } else {
    Py_RETURN_NONE;
  }
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

static treadle_handle_t *task_handle(void) {
  if (pyt_current == NULL) {
    PyErr_SetString(PyExc_RuntimeError,
                    "no treadle task is running on this thread");
    return NULL;
  }
  return treadle_cx_handle(pyt_current_cx);
}

/* ----------------------------------------------------------- stream */

PyObject *pyt_stream_wrap(treadle_tcp_stream_t *s) {
  streamobj_t *o = PyObject_New(streamobj_t, &pyt_stream_type);
  if (o == NULL) {
    treadle_tcp_stream_free(s);
    return NULL;
  }
  o->s = s;
  o->reading = o->writing = false;
  return (PyObject *)o;
}

static void stream_dealloc(streamobj_t *o) {
  treadle_tcp_stream_free(o->s);
  PyObject_Free(o);
}

static op_t *stream_op(streamobj_t *o, opkind_t kind) {
  bool *busy = kind == OP_WRITE ? &o->writing : &o->reading;
  if (*busy) {
    PyErr_Format(PyExc_RuntimeError, "another task is already %s this stream",
                 kind == OP_WRITE ? "writing to" : "reading from");
    return NULL;
  }
  op_t *op = pyt_op_new(kind, (PyObject *)o);
  if (op != NULL)
    *busy = true;
  return op;
}

static PyObject *stream_read(streamobj_t *o, PyObject *const *args,
                             Py_ssize_t n) {
  Py_ssize_t want = READ_CHUNK;
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
  op_t *op = stream_op(o, OP_READ);
  if (op != NULL)
    op->u.read.want = (size_t)want;
  return (PyObject *)op;
}

static PyObject *stream_read_into(streamobj_t *o, PyObject *buf) {
  Py_buffer view;
  if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0)
    return NULL;
  op_t *op = stream_op(o, OP_READ_INTO);
  if (op == NULL) {
    PyBuffer_Release(&view);
    return NULL;
  }
  op->u.io.view = view;
  return (PyObject *)op;
}

static PyObject *stream_write(streamobj_t *o, PyObject *data) {
  Py_buffer view;
  if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
    return NULL;
  op_t *op = stream_op(o, OP_WRITE);
  if (op == NULL) {
    PyBuffer_Release(&view);
    return NULL;
  }
  op->u.io.view = view;
  return (PyObject *)op;
}

static PyObject *stream_shutdown(streamobj_t *o, PyObject *unused) {
  treadle_err_t err = treadle_tcp_shutdown(o->s);
  return err != 0 ? pyt_op_error(err) : pyt_op_ready(Py_NewRef(Py_None));
}

static PyObject *stream_close(streamobj_t *o, PyObject *unused) {
  treadle_tcp_stream_close(o->s);
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
  treadle_err_t err = treadle_tcp_set_nodelay(o->s, on);
  if (err != 0)
    return pyt_raise(err);
  Py_RETURN_NONE;
}

static PyObject *stream_addr(streamobj_t *o, void *peer) {
  struct sockaddr_storage a;
  treadle_err_t err = peer ? treadle_tcp_peer_addr(o->s, &a)
                           : treadle_tcp_local_addr(o->s, &a);
  return err != 0 ? pyt_raise(err) : pyt_addr_tuple(&a);
}

static PyObject *stream_connect(PyObject *cls, PyObject *const *args,
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
  char *copy = strdup(host);
  op_t *op = copy != NULL ? pyt_op_new(OP_CONNECT, NULL) : NULL;
  if (op == NULL) {
    free(copy);
    return PyErr_Occurred() ? NULL : PyErr_NoMemory();
  }
  op->u.connect.host = copy;
  op->u.connect.port = port;
  return (PyObject *)op;
}

static PyObject *self_ready(PyObject *o, PyObject *unused) {
  return pyt_op_ready(Py_NewRef(o));
}

static PyObject *stream_aexit(streamobj_t *o, PyObject *args) {
  treadle_tcp_stream_close(o->s);
  return pyt_op_ready(Py_NewRef(Py_False));
}

static PyMethodDef stream_methods[] = {
    {"connect", (PyCFunction)(void (*)(void))stream_connect,
     METH_FASTCALL | METH_STATIC,
     "await TcpStream.connect(host, port) -> TcpStream. host is an address "
     "or a name (resolved on the blocking pool)."},
    {"read", (PyCFunction)(void (*)(void))stream_read, METH_FASTCALL,
     "await read(n=65536) -> bytes: up to n bytes; b'' at end of stream."},
    {"read_into", (PyCFunction)stream_read_into, METH_O,
     "await read_into(buffer) -> int: reads into a writable buffer."},
    {"write", (PyCFunction)stream_write, METH_O,
     "await write(data): writes all of a bytes-like object (no copy)."},
    {"shutdown", (PyCFunction)stream_shutdown, METH_NOARGS,
     "await shutdown(): shuts the write side; the peer reads end of stream."},
    {"close", (PyCFunction)stream_close, METH_NOARGS,
     "close(): closes the socket; a task waiting on it gets ClosedError."},
    {"set_nodelay", (PyCFunction)(void (*)(void))stream_set_nodelay, METH_FASTCALL,
     "set_nodelay(on=True): TCP_NODELAY."},
    {"__aenter__", self_ready, METH_NOARGS, "async with: the stream."},
    {"__aexit__", (PyCFunction)stream_aexit, METH_VARARGS, "async with: closes it."},
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
  treadle_tcp_listener_free(o->l);
  PyObject_Free(o);
}

static PyObject *listener_bind(PyObject *cls, PyObject *args, PyObject *kw) {
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
    return pyt_op_error(TREADLE_ENOHOST); /* bind resolves no names */
  }
  treadle_tcp_bind_opts_t opts = {backlog, reuse != 0};
  treadle_tcp_listener_t *l;
  treadle_err_t err = treadle_tcp_bind(h, host, port, &opts, &l);
  if (err != 0)
    return pyt_op_error(err);
  listenerobj_t *o = PyObject_New(listenerobj_t, &pyt_listener_type);
  if (o == NULL) {
    treadle_tcp_listener_free(l);
    return NULL;
  }
  o->l = l;
  o->accepting = false;
  return pyt_op_ready((PyObject *)o);
}

static PyObject *listener_accept(listenerobj_t *o, PyObject *unused) {
  if (o->accepting) {
    PyErr_SetString(PyExc_RuntimeError,
                    "another task is already accepting on this listener");
    return NULL;
  }
  op_t *op = pyt_op_new(OP_ACCEPT, (PyObject *)o);
  if (op != NULL)
    o->accepting = true;
  return (PyObject *)op;
}

static PyObject *listener_anext(listenerobj_t *o) {
  op_t *op = (op_t *)listener_accept(o, NULL);
  if (op != NULL)
    op->u.accept.anext = true;
  return (PyObject *)op;
}

static PyObject *listener_close(listenerobj_t *o, PyObject *unused) {
  treadle_tcp_listener_close(o->l);
  Py_RETURN_NONE;
}

static PyObject *listener_aexit(listenerobj_t *o, PyObject *args) {
  treadle_tcp_listener_close(o->l);
  return pyt_op_ready(Py_NewRef(Py_False));
}

static PyObject *listener_addr(listenerobj_t *o, void *unused) {
  struct sockaddr_storage a;
  treadle_err_t err = treadle_tcp_listener_addr(o->l, &a);
  return err != 0 ? pyt_raise(err) : pyt_addr_tuple(&a);
}

static PyObject *listener_exhaustions(listenerobj_t *o, void *unused) {
  return PyLong_FromUnsignedLongLong(treadle_tcp_listener_fd_exhaustions(o->l));
}

static PyMethodDef listener_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))listener_bind,
     METH_VARARGS | METH_KEYWORDS | METH_STATIC,
     "await TcpListener.bind(host, port, *, backlog=1024, reuse_port=False) "
     "-> TcpListener. host: a numeric IPv4/IPv6 address, \"localhost\", or "
     "\"\"/None for every IPv4 address; port 0 picks one (see local_addr)."},
    {"accept", (PyCFunction)listener_accept, METH_NOARGS,
     "await accept() -> (TcpStream, (host, port))."},
    {"close", (PyCFunction)listener_close, METH_NOARGS,
     "close(): stops listening; a task in accept() gets ClosedError and "
     "`async for` ends."},
    {"__aenter__", self_ready, METH_NOARGS, "async with: the listener."},
    {"__aexit__", (PyCFunction)listener_aexit, METH_VARARGS, "async with: closes it."},
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

treadle_poll_t pyt_net_poll(op_t *op, treadle_cx_t *cx) {
  treadle_tcp_stream_t *s =
      op->owner != NULL && Py_IS_TYPE(op->owner, &pyt_stream_type)
          ? ((streamobj_t *)op->owner)->s : NULL;
  switch (op->kind) {
  case OP_ACCEPT:
    return treadle_tcp_accept_poll(((listenerobj_t *)op->owner)->l, cx,
                                   &op->u.accept.out, &op->u.accept.peer, &op->err);
  case OP_CONNECT:
    if (!op->started) {
      op->started = true;
      op->err = treadle_tcp_connect_init(&op->u.connect.c, treadle_cx_handle(cx),
                                         op->u.connect.host, op->u.connect.port);
      if (op->err != 0) {
        op->started = false; /* nothing to drop */
        return TREADLE_READY;
      }
    }
    return treadle_tcp_connect_poll(&op->u.connect.c, cx, &op->u.connect.out,
                                    &op->err);
  case OP_READ: {
    if (!op->started && op->u.read.want > READ_CHUNK) {
      op->u.read.buf = malloc(op->u.read.want);
      if (op->u.read.buf == NULL) {
        op->err = TREADLE_ENOMEM;
        return TREADLE_READY;
      }
      op->u.read.heap = true;
    }
    op->started = true;
    char *buf = op->u.read.heap ? op->u.read.buf : read_buf;
    treadle_poll_t p = treadle_tcp_read_poll(s, cx, buf, op->u.read.want,
                                             &op->u.read.got, &op->err);
    if (p == TREADLE_READY)
      op->u.read.buf = buf;
    return p;
  }
  case OP_READ_INTO:
    return treadle_tcp_read_poll(s, cx, op->u.io.view.buf, op->u.io.view.len,
                                 &op->u.io.done, &op->err);
  case OP_WRITE:
    return treadle_tcp_write_all_poll(s, cx, op->u.io.view.buf,
                                      op->u.io.view.len, &op->u.io.done, &op->err);
  default:
    return TREADLE_READY;
  }
}

void pyt_net_keep(op_t *op) {
  if (op->kind != OP_READ || op->stage != 2 || op->u.read.heap ||
      op->u.read.got == 0)
    return;
  char *copy = malloc(op->u.read.got);
  if (copy == NULL) { /* cannot keep them: fail the read, loudly */
    op->err = TREADLE_ENOMEM;
    op->u.read.got = 0;
    return;
  }
  memcpy(copy, op->u.read.buf, op->u.read.got);
  op->u.read.buf = copy;
  op->u.read.heap = true;
}

PyObject *pyt_net_finish(op_t *op) {
  if (op->err != 0) {
    if (op->kind == OP_ACCEPT && op->u.accept.anext && op->err == TREADLE_ECLOSED) {
      PyErr_SetNone(PyExc_StopAsyncIteration);
      return NULL;
    }
    return pyt_raise(op->err);
  }
  switch (op->kind) {
  case OP_ACCEPT: {
    PyObject *addr = pyt_addr_tuple(&op->u.accept.peer);
    PyObject *st = pyt_stream_wrap(op->u.accept.out);
    op->u.accept.out = NULL;
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
  case OP_CONNECT: {
    PyObject *st = pyt_stream_wrap(op->u.connect.out);
    op->u.connect.out = NULL;
    return st;
  }
  case OP_READ:
    return PyBytes_FromStringAndSize(op->u.read.buf, (Py_ssize_t)op->u.read.got);
  case OP_READ_INTO:
    return PyLong_FromSize_t(op->u.io.done);
  default:
    Py_RETURN_NONE;
  }
}

void pyt_net_op_clear(op_t *op) {
  switch (op->kind) {
  case OP_ACCEPT:
    treadle_tcp_stream_free(op->u.accept.out);
    ((listenerobj_t *)op->owner)->accepting = false;
    break;
  case OP_CONNECT:
    if (op->started)
      treadle_tcp_connect_drop(&op->u.connect.c);
    treadle_tcp_stream_free(op->u.connect.out);
    free(op->u.connect.host);
    break;
  case OP_READ:
    if (op->u.read.heap)
      free(op->u.read.buf);
    ((streamobj_t *)op->owner)->reading = false;
    break;
  case OP_READ_INTO:
    PyBuffer_Release(&op->u.io.view);
    ((streamobj_t *)op->owner)->reading = false;
    break;
  case OP_WRITE:
    PyBuffer_Release(&op->u.io.view);
    ((streamobj_t *)op->owner)->writing = false;
    break;
  default:
    break;
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
