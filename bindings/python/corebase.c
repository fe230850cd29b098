/* What the C cores of treadle.EventLoop's transports share: StreamCore
 * (transport.c) and DatagramCore (datagram.c); ARCHITECTURE.md "asyncio
 * loop", item 7.
 *
 * A core's record starts with a corebase_t. Its set-up registers the
 * transport's own fd (made non-blocking) as a treadle async fd, one fd a
 * connection as on asyncio's loops, and spawns the core's C task (one a
 * transport), which waits for what the core's ops->want asks and calls
 * ops->send and ops->recv without the GIL, under the record's mutex. The
 * record is counted: the Python object, the task and each C callback in
 * the loop's ready queue (rd_fn, wr_fn) hold a reference. The fd stays the
 * Python socket's or pipe's: close() takes the mutex, so that no system
 * call is under way, ends the task and detaches the fd (the driver stops
 * watching it) before it returns, and only then does the transport close
 * its socket: no call, and no epoll_ctl, uses an fd number that was
 * closed. */
#include "pytreadle.h"

#include <errno.h>
#include <fcntl.h>

corebase_t *corebase_ref(corebase_t *c) {
  /* Relaxed: a new reference from one held. */
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  return c;
}

void corebase_unref(corebase_t *c) {
  /* acq_rel: the last owner sees the others' writes before freeing. */
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  (void)treadle_async_fd_detach(c->afd); /* the fd is Python's: never closed here */
  treadle_async_fd_free(c->afd);
  treadle_waker_drop(c->waker);
  PyGILState_STATE g = PyGILState_Ensure();
  Py_CLEAR(c->transport);
  Py_CLEAR(c->protocol);
  c->ops->free_rest(c);
  Py_CLEAR(c->loop);
  PyGILState_Release(g);
  pthread_mutex_destroy(&c->mu);
  free(c->rbuf);
  free(c);
}

treadle_waker_t *corebase_waker(corebase_t *c) {
  return c->waker != NULL ? treadle_waker_clone(c->waker) : NULL;
}

void corebase_wake(treadle_waker_t *w) {
  if (w != NULL)
    treadle_wake(w);
}

bool corebase_queue(corebase_t *c, ready_fn_t *f, bool *flag) {
  corebase_ref(c);
  if (pyt_loop_push_fn(c->loop, f) == 0)
    return true;
  *flag = false;
  c->requeue |= f == &c->rd_fn ? COREBASE_RD_FN : COREBASE_WR_FN;
  /* The queue's reference: never the last, the task holds one. */
  atomic_fetch_sub_explicit(&c->refs, 1, memory_order_relaxed);
  return false;
}

/* mu held: queues again what could not be queued; false while there is
 * still no memory for it. A callback queued when it is no longer owed
 * finds nothing to do. */
static bool requeue(corebase_t *c) {
  uint8_t owed = c->requeue;
  c->requeue = 0;
  if ((owed & COREBASE_RD_FN) && !c->rd_queued) {
    c->rd_queued = true;
    corebase_queue(c, &c->rd_fn, &c->rd_queued);
  }
  if ((owed & COREBASE_WR_FN) && !c->wr_queued) {
    c->wr_queued = true;
    corebase_queue(c, &c->wr_fn, &c->wr_queued);
  }
  return c->requeue == 0;
}

/* ----------------------------------------------------------- the task */

void corebase_sent(corebase_t *c, size_t before, size_t after) {
  /* The transport hears of an error, of the low-water mark reached and
   * of an empty buffer (resume_writing, close, sendfile's wait). */
  bool tell = c->werr != 0 ||
              (after != before && (after == 0 || (before > c->low && after <= c->low)));
  if (tell && !c->wr_queued) {
    c->wr_queued = true;
    corebase_queue(c, &c->wr_fn, &c->wr_queued);
  }
}

static treadle_poll_t task_poll(treadle_cx_t *cx, void *state) {
  corebase_t *c = *(corebase_t **)state;
  pthread_mutex_lock(&c->mu);
  if (c->waker == NULL)
    c->waker = treadle_waker_clone(treadle_cx_waker(cx));
  for (;;) {
    if (c->closed) {
      pthread_mutex_unlock(&c->mu);
      return TREADLE_READY;
    }
    if (c->requeue != 0 && !requeue(c)) {
      pthread_mutex_unlock(&c->mu);
      treadle_cx_yield(cx); /* polled again soon: tried until memory comes back */
      return TREADLE_PENDING;
    }
    unsigned want = c->ops->want(c);
    pthread_mutex_unlock(&c->mu);
    if (want == 0)
      return TREADLE_PENDING; /* woken by a write, a hand-over, resume or wr_fn */
    treadle_ready_t rdy;
    treadle_err_t err;
    if (treadle_async_fd_ready_poll(c->afd, cx, want, &rdy, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      return TREADLE_READY; /* closed, or the runtime shuts down */
    unsigned any_rd = TREADLE_READABLE | TREADLE_READ_CLOSED | TREADLE_FD_ERROR;
    unsigned any_wr = TREADLE_WRITABLE | TREADLE_WRITE_CLOSED | TREADLE_FD_ERROR;
    pthread_mutex_lock(&c->mu);
    int fd = treadle_async_fd_fd(c->afd);
    if (c->closed || fd < 0) {
      pthread_mutex_unlock(&c->mu);
      return TREADLE_READY;
    }
    /* Asked again: the transport ran while mu was free. */
    if ((rdy.bits & any_wr) && (c->ops->want(c) & TREADLE_WRITABLE))
      c->ops->send(c, fd, &rdy);
    if ((rdy.bits & any_rd) && (c->ops->want(c) & TREADLE_READABLE))
      c->ops->recv(c, fd, &rdy);
  }
}

static void task_drop(void *state) { corebase_unref(*(corebase_t **)state); }

static const treadle_task_vtable_t task_vt = {.poll = task_poll, .drop = task_drop};

/* ------------------------------------------------- set-up and close */

/* "StreamCore" of treadle._core.StreamCore, for messages. */
static const char *type_name(corebase_obj_t *o) {
  const char *dot = strrchr(Py_TYPE(o)->tp_name, '.');
  return dot != NULL ? dot + 1 : Py_TYPE(o)->tp_name;
}

corebase_t *corebase_live(corebase_obj_t *o) {
  if (o->c == NULL)
    PyErr_Format(PyExc_RuntimeError, "%s is not initialised", type_name(o));
  return o->c;
}

pyrt_t *corebase_runtime(corebase_obj_t *o, PyObject *loop, const char *usage) {
  if (o->c != NULL) {
    PyErr_Format(PyExc_RuntimeError, "%s is initialised already", type_name(o));
    return NULL;
  }
  if (!pyt_is_loop(loop)) {
    PyErr_Format(PyExc_TypeError, "%s takes a treadle.EventLoop", usage);
    return NULL;
  }
  pyrt_t *r = pyt_loop_runtime(loop);
  if (r->rt == NULL) {
    pyt_raise(TREADLE_ESHUTDOWN);
    return NULL;
  }
  return r;
}

corebase_t *corebase_new(size_t size, const corebase_ops_t *ops, pyrt_t *r, PyObject *loop,
                         int fd, PyObject *transport, size_t rsize) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
    PyErr_SetFromErrno(PyExc_OSError);
    return NULL;
  }
  corebase_t *c = calloc(1, size);
  /* Apart: calloc would touch every page, and small reads touch one. */
  char *rbuf = c != NULL ? malloc(rsize) : NULL;
  if (rbuf == NULL) {
    free(c);
    PyErr_NoMemory();
    return NULL;
  }
  c->rbuf = rbuf;
  c->ops = ops;
  c->rd_fn.fn = ops->rd_fn;
  c->wr_fn.fn = ops->wr_fn;
  atomic_init(&c->refs, 1);
  pthread_mutex_init(&c->mu, NULL);
  c->loop = Py_NewRef(loop);
  c->transport = Py_NewRef(transport);
  c->protocol = Py_NewRef(Py_None);
  c->low = 16 * 1024;
  treadle_err_t err = treadle_async_fd_new(r->h, fd, &c->afd);
  if (err != 0) {
    corebase_unref(c);
    pyt_raise(err);
    return NULL;
  }
  return c;
}

int corebase_start(corebase_obj_t *o, corebase_t *c, pyrt_t *r) {
  corebase_t *task_ref = corebase_ref(c);
  treadle_err_t err = treadle_spawn(r->h, &task_vt, &task_ref, sizeof task_ref, &c->join);
  if (err != 0) {
    corebase_unref(c);
    corebase_unref(c);
    pyt_raise(err);
    return -1;
  }
  o->c = c;
  return 0;
}

void corebase_close(corebase_t *c) {
  pthread_mutex_lock(&c->mu);
  bool was = c->closed;
  c->closed = true;
  c->reading = false;
  treadle_waker_t *w = corebase_waker(c);
  pthread_mutex_unlock(&c->mu); /* no system call runs on the fd now */
  corebase_wake(w);
  if (was)
    return;
  (void)treadle_async_fd_detach(c->afd); /* returns once epoll let the fd go */
  if (c->join != NULL) {
    treadle_join_abort(c->join); /* ends a wait that no wake reaches */
    treadle_join_detach(c->join);
    c->join = NULL;
  }
  Py_CLEAR(c->transport);
  Py_CLEAR(c->protocol);
}

/* ------------------------------------------------- the base type */

static PyObject *close_method(corebase_obj_t *o, PyObject *Py_UNUSED(u)) {
  if (corebase_live(o) == NULL)
    return NULL;
  corebase_close(o->c);
  Py_RETURN_NONE;
}

static PyObject *set_low_method(corebase_obj_t *o, PyObject *arg) {
  if (corebase_live(o) == NULL)
    return NULL;
  Py_ssize_t low = PyLong_AsSsize_t(arg);
  if (low == -1 && PyErr_Occurred())
    return NULL;
  pthread_mutex_lock(&o->c->mu);
  o->c->low = low < 0 ? 0 : (size_t)low;
  pthread_mutex_unlock(&o->c->mu);
  Py_RETURN_NONE;
}

static PyObject *buffer_size_method(corebase_obj_t *o, PyObject *Py_UNUSED(u)) {
  if (corebase_live(o) == NULL)
    return NULL;
  pthread_mutex_lock(&o->c->mu);
  size_t n = o->c->ops->pending(o->c);
  pthread_mutex_unlock(&o->c->mu);
  return PyLong_FromSize_t(n);
}

/* drop_buffer(): forgets what waits to be sent (abort). */
static PyObject *drop_buffer_method(corebase_obj_t *o, PyObject *Py_UNUSED(u)) {
  if (corebase_live(o) == NULL)
    return NULL;
  pthread_mutex_lock(&o->c->mu);
  o->c->ops->drop_pending(o->c);
  pthread_mutex_unlock(&o->c->mu);
  Py_RETURN_NONE;
}

static void dealloc(corebase_obj_t *o) {
  if (o->c != NULL) {
    corebase_close(o->c);
    corebase_unref(o->c);
  }
  Py_TYPE(o)->tp_free(o);
}

static PyMethodDef methods[] = {
    {"get_write_buffer_size", (PyCFunction)buffer_size_method, METH_NOARGS,
     "get_write_buffer_size($self, /)\n--\n\nBytes waiting to be sent."},
    {"drop_buffer", (PyCFunction)drop_buffer_method, METH_NOARGS,
     "drop_buffer($self, /)\n--\n\nForgets the bytes waiting to be sent."},
    {"set_low", (PyCFunction)set_low_method, METH_O,
     "set_low($self, low, /)\n--\n\nThe low-water mark the task reports."},
    {"close", (PyCFunction)close_method, METH_NOARGS,
     "close($self, /)\n--\n\nEnds the task and stops watching the fd (the caller closes it after)."},
    {NULL}};

PyTypeObject corebase_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core._CoreBase",
    .tp_basicsize = sizeof(corebase_obj_t),
    .tp_dealloc = (destructor)dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What the C cores of treadle.EventLoop's transports share (internal).",
    .tp_methods = methods,
};
