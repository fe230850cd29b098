/* The C core of treadle.EventLoop's stream and pipe transports (TCP and
 * Unix stream sockets, pipes; ARCHITECTURE.md "asyncio loop", item 7).
 *
 * StreamCore does the socket's or pipe's system calls; the Python class
 * around it (treadle._loop._StreamTransport, _ReadPipeTransport,
 * _WritePipeTransport) keeps asyncio's transport semantics (close, abort,
 * flow control, the protocol's connection_made/lost), as asyncio's
 * _SelectorSocketTransport and _UnixRead/WritePipeTransport have them.
 * A pipe's core (pipe=PIPE_READ or PIPE_WRITE) read()s and write()s where
 * a socket's recv()s and send()s; a write pipe's task reads nothing but
 * waits for readiness to read, which there is the reader's close, handed
 * to rd_fn as end of file.
 *
 * Its C task (one a transport, corebase.c) waits on the socket or pipe,
 * registered as a treadle async fd, and without the GIL:
 * - reads: while reading is on, recv()s up to 64 KiB (a pipe: read()s up
 *   to 256 KiB) into the core's buffer and queues `rd_fn` in the loop's
 *   ready queue; it reads again only once that chunk was handed over (a
 *   short read drained the fd, but on a terminal). rd_fn runs in an
 *   iteration (GIL, the runtime's Python lane) and gives the chunk to the
 *   protocol:
 *   data_received(bytes), or get_buffer/buffer_updated for a
 *   BufferedProtocol; end of file and errors go to the transport's
 *   _eof_received and _fatal_error. A chunk read before pause_reading
 *   waits in the core until resume_reading.
 * - writes: a small write() to a socket (under COALESCE_MAX) goes into
 *   the core's write buffer and wakes the task, which sends what the
 *   iteration wrote in one send once the iteration has ended (or at once
 *   on another worker): an HTTP response's header and body writes are one
 *   system call, as uvloop's writes queued to the end of its iteration
 *   are. A bigger write, or any to a pipe, with nothing pending is sent at
 *   once (the GIL let go for the call); what is left waits in the buffer,
 *   which the task sends when the fd is writable (a short send says it is
 *   full). It queues `wr_fn` when the buffer falls to the low-water mark
 *   or empties, or a send fails: the transport then resumes the
 *   protocol's writing, finishes a close, or reports the error.
 *   write_eof's shutdown comes after the buffer drains.
 * The system calls run under the core's mutex, which close() takes before
 * it detaches the fd, which the transport closes after: no call uses an fd
 * number that was closed. The task,
 * the set-up, close and the record's head are the ones DatagramCore has
 * too (corebase.c); this file has what is a stream's own. */
#include "pytreadle.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_SIZE (64 * 1024)
/* A pipe's reads, asyncio's max_size for pipes: bigger than a pipe's
 * 64 KiB, so that reading a full pipe is a short read, which clears the
 * readiness (no read that answers EAGAIN after it). */
#define PIPE_READ_SIZE (256 * 1024)
/* Writes to a socket smaller than this wait for the task's send (see
 * above). A pipe's are written at once, as asyncio's are: a program that
 * writes to a child and then reads its answer without the loop (a
 * blocking read) must find the bytes in the pipe. */
#define COALESCE_MAX (16 * 1024)
/* StreamCore(pipe=...): a read pipe's core read()s; a write pipe's
 * write()s and only watches for readiness to read, which on the write end
 * of a pipe (an error event) or a socket means that the reader closed. */
enum { PIPE_READ = 1, PIPE_WRITE = 2 };

typedef struct strm_s {
  corebase_t c;           /* first: the shared head (corebase.c) */
  bool buffered;          /* GIL; protocol is a BufferedProtocol */
  int pipe;               /* PIPE_READ or PIPE_WRITE, else 0; set at init */
  bool short_drains;      /* a short read drained the fd (not a terminal,
                             which hands out a line a read); set at init */
  size_t rsize;           /* c.rbuf's size: READ_SIZE, or PIPE_READ_SIZE
                             for a pipe; set at init */
  /* c.mu: */
  bool rd_done;           /* end of file or an error was read: no more */
  ssize_t rlen;           /* the chunk: bytes, 0 end of file, -errno */
  size_t roff;            /* what a BufferedProtocol took of it */
  char *wbuf;             /* pending bytes: wbuf[woff, wlen) */
  size_t woff, wlen, wcap;
  bool shut_wr;           /* write_eof: shutdown(SHUT_WR) once drained */
  uint64_t task_recvs, task_sends, inline_sends; /* counts, for tests */
} strm_t;

static PyTypeObject core_type;
static PyObject *str_data_received, *str_get_buffer, *str_buffer_updated,
    *str_eof_received, *str_fatal_error, *str_protocol_error, *str_write_event;

/* ----------------------------------------------------------- the task */

/* A socket's send, without SIGPIPE; a pipe's write (SIGPIPE is Python's
 * to ignore, as for asyncio's os.write). EINTR is retried. */
static ssize_t put(const strm_t *s, int fd, const char *p, size_t len) {
  ssize_t n;
  do
    n = s->pipe ? write(fd, p, len) : send(fd, p, len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n;
}

/* c.mu held: the task reads while reading is on and nothing waits for
 * rd_fn, until end of file; it sends what is pending until a send fails. */
static unsigned task_want(corebase_t *c) {
  strm_t *s = (strm_t *)c;
  return (c->reading && !c->rd_held && !s->rd_done ? TREADLE_READABLE : 0) |
         (s->wlen > s->woff && c->werr == 0 ? TREADLE_WRITABLE : 0);
}

/* c.mu held, no GIL: sends what is pending. */
static void task_send(corebase_t *c, int fd, const treadle_ready_t *rdy) {
  strm_t *s = (strm_t *)c;
  size_t before = s->wlen - s->woff;
  while (s->woff < s->wlen) {
    ssize_t n = put(s, fd, s->wbuf + s->woff, s->wlen - s->woff);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      treadle_async_fd_clear_ready(c->afd, rdy, TREADLE_WRITABLE);
      break;
    }
    s->task_sends++;
    if (n < 0) {
      c->werr = errno;
      s->woff = s->wlen = 0;
      break;
    }
    s->woff += (size_t)n;
    if (s->woff < s->wlen) { /* a short write: the kernel's buffer is full */
      treadle_async_fd_clear_ready(c->afd, rdy, TREADLE_WRITABLE);
      break;
    }
  }
  size_t after = s->wlen - s->woff;
  if (after == 0) {
    s->woff = s->wlen = 0;
    if (s->shut_wr && c->werr == 0)
      (void)shutdown(fd, SHUT_WR); /* a failure shows on the next read */
  }
  corebase_sent(c, before, after);
}

/* c.mu held, no GIL: reads one chunk and queues rd_fn. A write pipe
 * reads nothing: its readiness is the reader's close, handed over as end
 * of file. */
static void task_recv(corebase_t *c, int fd, const treadle_ready_t *rdy) {
  strm_t *s = (strm_t *)c;
  ssize_t n = 0;
  if (s->pipe != PIPE_WRITE) {
    do
      n = s->pipe ? read(fd, c->rbuf, s->rsize) : recv(fd, c->rbuf, s->rsize, 0);
    while (n < 0 && errno == EINTR);
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    treadle_async_fd_clear_ready(c->afd, rdy, TREADLE_READABLE);
    return;
  }
  s->task_recvs += s->pipe != PIPE_WRITE; /* a read was made */
  if (n > 0 && (size_t)n < s->rsize && s->short_drains) /* the next edge is new */
    treadle_async_fd_clear_ready(c->afd, rdy, TREADLE_READABLE);
  s->rlen = n < 0 ? -errno : n;
  s->roff = 0;
  s->rd_done = n <= 0;
  c->rd_held = true;
  c->rd_queued = true;
  corebase_queue(c, &c->rd_fn, &c->rd_queued);
}

/* ------------------------------------------------- in the loop (GIL) */

/* GIL: the transport method `name` with (exc, message): _fatal_error or
 * _protocol_error. */
static void fatal(strm_t *s, PyObject *name, PyObject *exc, const char *message) {
  PyObject *msg = PyUnicode_FromString(message);
  PyObject *res = msg != NULL && s->c.transport != NULL
                      ? PyObject_CallMethodObjArgs(s->c.transport, name, exc, msg, NULL)
                      : NULL;
  Py_XDECREF(res);
  Py_XDECREF(msg);
}

/* GIL: a protocol callback raised: SystemExit and KeyboardInterrupt stay
 * set for the loop; anything else goes to the transport's _protocol_error
 * (a socket's fatal error; a read pipe's loop exception handler). */
static bool callback_failed(strm_t *s, const char *message) {
  if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
      PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
    return true;
  PyObject *exc = pyt_fetch_exception();
  fatal(s, str_protocol_error, exc, message);
  Py_DECREF(exc);
  return true;
}

/* GIL: gives bytes to a BufferedProtocol; false when it stopped midway. */
static bool give_buffered(strm_t *s, const char *data, size_t len, size_t *took) {
  *took = 0;
  PyObject *proto = Py_NewRef(s->c.protocol);
  PyObject *arg = PyLong_FromLong(-1);
  PyObject *buf = arg != NULL ? PyObject_CallMethodOneArg(proto, str_get_buffer, arg) : NULL;
  Py_XDECREF(arg);
  Py_buffer view;
  bool ok = false;
  if (buf != NULL && PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) == 0) {
    if (view.len == 0)
      PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
    else {
      *took = (size_t)view.len < len ? (size_t)view.len : len;
      memcpy(view.buf, data, *took);
      ok = true;
    }
    PyBuffer_Release(&view);
  }
  Py_XDECREF(buf);
  if (!ok) {
    callback_failed(s, "Fatal error: protocol.get_buffer() call failed.");
    Py_DECREF(proto);
    return false;
  }
  PyObject *n = PyLong_FromSize_t(*took);
  PyObject *res = n != NULL ? PyObject_CallMethodOneArg(proto, str_buffer_updated, n) : NULL;
  Py_XDECREF(n);
  Py_DECREF(proto);
  if (res == NULL) {
    callback_failed(s, "Fatal error: protocol.buffer_updated() call failed.");
    return false;
  }
  Py_DECREF(res);
  return true;
}

/* GIL: a chunk hands over while the transport still reads it. */
static void deliver(strm_t *s) {
  for (;;) {
    pthread_mutex_lock(&s->c.mu);
    bool go = s->c.rd_held && s->c.reading && !s->c.closed && s->c.transport != NULL;
    ssize_t n = s->rlen;
    size_t off = s->roff;
    pthread_mutex_unlock(&s->c.mu);
    if (!go || pyt_loop_closed(s->c.loop))
      return;
    if (n <= 0) { /* end of file or an error: once */
      pthread_mutex_lock(&s->c.mu);
      s->c.rd_held = false;
      pthread_mutex_unlock(&s->c.mu);
      PyObject *tr = Py_NewRef(s->c.transport);
      if (n == 0) {
        PyObject *res = PyObject_CallMethodNoArgs(tr, str_eof_received);
        Py_XDECREF(res);
      } else {
        errno = (int)-n;
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *exc = pyt_fetch_exception();
        fatal(s, str_fatal_error, exc, s->pipe ? "Fatal read error on pipe transport"
                              : "Fatal read error on socket transport");
        Py_XDECREF(exc);
      }
      Py_DECREF(tr);
      return;
    }
    if (!s->buffered) {
      PyObject *data = PyBytes_FromStringAndSize(s->c.rbuf + off, n - (ssize_t)off);
      pthread_mutex_lock(&s->c.mu);
      s->c.rd_held = data == NULL; /* kept for later on no memory */
      pthread_mutex_unlock(&s->c.mu);
      if (data == NULL)
        return;
      PyObject *proto = Py_NewRef(s->c.protocol);
      PyObject *res = PyObject_CallMethodOneArg(proto, str_data_received, data);
      Py_DECREF(proto);
      Py_DECREF(data);
      if (res == NULL)
        callback_failed(s, "Fatal error: protocol.data_received() call failed.");
      Py_XDECREF(res);
      return;
    }
    size_t took;
    bool ok = give_buffered(s, s->c.rbuf + off, (size_t)n - off, &took);
    pthread_mutex_lock(&s->c.mu);
    s->roff += took;
    if (!ok || s->roff >= (size_t)s->rlen)
      s->c.rd_held = false;
    pthread_mutex_unlock(&s->c.mu);
    if (!ok || PyErr_Occurred())
      return;
  }
}

static void rd_fn(ready_fn_t *f) {
  strm_t *s = (strm_t *)f;
  pthread_mutex_lock(&s->c.mu);
  s->c.rd_queued = false;
  pthread_mutex_unlock(&s->c.mu);
  deliver(s);
  pthread_mutex_lock(&s->c.mu);
  treadle_waker_t *w = NULL;
  if (!s->c.rd_held) {
    w = corebase_waker(&s->c); /* read on */
  } else if (s->c.reading && !s->c.closed && PyErr_ExceptionMatches(PyExc_MemoryError)) {
    /* No memory for the bytes: the chunk waits, and the task queues rd_fn
     * again (the next iteration tries once more). */
    PyErr_Clear();
    s->c.requeue |= COREBASE_RD_FN;
    w = corebase_waker(&s->c);
  }
  pthread_mutex_unlock(&s->c.mu);
  corebase_wake(w);
  corebase_unref(&s->c);
}

static void wr_fn(ready_fn_t *f) {
  strm_t *s = (strm_t *)((char *)f - offsetof(corebase_t, wr_fn));
  pthread_mutex_lock(&s->c.mu);
  s->c.wr_queued = false;
  int err = s->c.werr;
  pthread_mutex_unlock(&s->c.mu);
  if (s->c.transport != NULL && !pyt_loop_closed(s->c.loop)) {
    PyObject *tr = Py_NewRef(s->c.transport);
    PyObject *e = PyLong_FromLong(err);
    PyObject *res = e != NULL ? PyObject_CallMethodOneArg(tr, str_write_event, e) : NULL;
    Py_XDECREF(res);
    Py_XDECREF(e);
    Py_DECREF(tr);
  }
  corebase_unref(&s->c);
}

static size_t pending(corebase_t *c) { return ((strm_t *)c)->wlen - ((strm_t *)c)->woff; }

static void drop_pending(corebase_t *c) { ((strm_t *)c)->woff = ((strm_t *)c)->wlen = 0; }

static void free_rest(corebase_t *c) { free(((strm_t *)c)->wbuf); }

static const corebase_ops_t strm_ops = {
    .want = task_want, .send = task_send, .recv = task_recv, .rd_fn = rd_fn, .wr_fn = wr_fn,
    .pending = pending, .drop_pending = drop_pending, .free_rest = free_rest};

/* -------------------------------------------------------- the methods */

/* StreamCore(loop, fd, transport, pipe=0): registers fd and starts the task;
 * pipe is PIPE_READ or PIPE_WRITE for a pipe transport's core. */
static int core_init(corebase_obj_t *o, PyObject *args, PyObject *kw) {
  static char *names[] = {"loop", "fd", "transport", "pipe", NULL};
  PyObject *loop, *transport;
  int fd, kind = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OiO|$i", names, &loop, &fd, &transport, &kind))
    return -1;
  if (kind != 0 && kind != PIPE_READ && kind != PIPE_WRITE) {
    PyErr_Format(PyExc_ValueError, "StreamCore: pipe must be 0, %d (read) or %d (write)",
                 PIPE_READ, PIPE_WRITE);
    return -1;
  }
  pyrt_t *r = corebase_runtime(o, loop, "StreamCore(loop, fd, transport)");
  if (r == NULL)
    return -1;
  size_t rsize = kind != 0 ? PIPE_READ_SIZE : READ_SIZE;
  strm_t *s = (strm_t *)corebase_new(sizeof *s, &strm_ops, r, loop, fd, transport, rsize);
  if (s == NULL)
    return -1;
  s->rsize = rsize;
  s->pipe = kind;
  struct stat st;
  s->short_drains = fstat(treadle_async_fd_fd(s->c.afd), &st) == 0 && !S_ISCHR(st.st_mode);
  return corebase_start(o, &s->c, r);
}

/* write(data): buffers a small write for the task's send; sends a bigger
 * one at once when nothing is pending, keeping the rest; returns the
 * write buffer's size. OSError when the send fails. */
static PyObject *core_write(corebase_obj_t *o, PyObject *data) {
  strm_t *s = (strm_t *)corebase_live(o);
  if (s == NULL)
    return NULL;
  Py_buffer view;
  if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
    return NULL;
  const char *p = view.buf;
  size_t len = (size_t)view.len;
  int err = 0;
  bool nomem = false;
  size_t size;
  treadle_waker_t *w = NULL;
  Py_BEGIN_ALLOW_THREADS
  pthread_mutex_lock(&s->c.mu);
  int fd = treadle_async_fd_fd(s->c.afd);
  if (s->c.closed || fd < 0) {
    len = 0; /* dropped, as the transport's lost connection drops it */
  } else if (s->c.werr != 0) {
    /* The task's send failed and wr_fn has not told the transport yet:
     * this write says it, as asyncio's own send would have failed here
     * (a writer that never yields, "write; await drain()" while not
     * paused, would else write into nothing forever). */
    err = s->c.werr;
    len = 0;
  }
  if (len > 0 && s->wlen == s->woff && len < COALESCE_MAX && !s->pipe)
    w = corebase_waker(&s->c); /* buffered below; the task sends it */
  else if (len > 0 && s->wlen == s->woff) {
    ssize_t n = put(s, fd, p, len);
    s->inline_sends++;
    if (n >= 0) {
      p += n;
      len -= (size_t)n;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      err = errno;
      len = 0;
    }
    if (len > 0)
      w = corebase_waker(&s->c); /* the task now waits for writability */
  }
  if (len > 0) {
    if (s->woff > 0 && s->wlen + len > s->wcap) { /* compact first */
      memmove(s->wbuf, s->wbuf + s->woff, s->wlen - s->woff);
      s->wlen -= s->woff;
      s->woff = 0;
    }
    if (s->wlen + len > s->wcap) {
      size_t cap = s->wcap ? s->wcap : 16 * 1024;
      while (cap < s->wlen + len)
        cap *= 2;
      char *nb = realloc(s->wbuf, cap);
      if (nb == NULL)
        nomem = true;
      else {
        s->wbuf = nb;
        s->wcap = cap;
      }
    }
    if (!nomem) {
      memcpy(s->wbuf + s->wlen, p, len);
      s->wlen += len;
    }
  }
  size = s->wlen - s->woff;
  pthread_mutex_unlock(&s->c.mu);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&view);
  corebase_wake(w);
  if (nomem)
    return PyErr_NoMemory();
  if (err != 0) {
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  return PyLong_FromSize_t(size);
}

/* set_protocol(protocol, buffered). */
static PyObject *core_set_protocol(corebase_obj_t *o, PyObject *const *args, Py_ssize_t n) {
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "set_protocol(protocol, buffered)");
    return NULL;
  }
  strm_t *s = (strm_t *)corebase_live(o);
  if (s == NULL)
    return NULL;
  int b = PyObject_IsTrue(args[1]);
  if (b < 0)
    return NULL;
  if (s->c.closed)
    Py_RETURN_NONE;
  Py_XSETREF(s->c.protocol, Py_NewRef(args[0]));
  s->buffered = b;
  Py_RETURN_NONE;
}

/* reading(on): starts or stops reading; a chunk held while stopped is
 * handed over (in the loop) once on again. */
static PyObject *core_reading(corebase_obj_t *o, PyObject *arg) {
  strm_t *s = (strm_t *)corebase_live(o);
  if (s == NULL)
    return NULL;
  int on = PyObject_IsTrue(arg);
  if (on < 0)
    return NULL;
  pthread_mutex_lock(&s->c.mu);
  treadle_waker_t *w = NULL;
  if (!s->c.closed) {
    s->c.reading = on;
    if (on && s->c.rd_held && !s->c.rd_queued) {
      s->c.rd_queued = true;
      if (!corebase_queue(&s->c, &s->c.rd_fn, &s->c.rd_queued))
        w = corebase_waker(&s->c); /* the task queues it */
    } else if (on) {
      w = corebase_waker(&s->c);
    }
  }
  pthread_mutex_unlock(&s->c.mu);
  corebase_wake(w);
  Py_RETURN_NONE;
}

/* shutdown_after_drain(): write_eof's SHUT_WR, now when nothing is
 * pending, else once the task drained the buffer. */
static PyObject *core_shutdown(corebase_obj_t *o, PyObject *Py_UNUSED(u)) {
  strm_t *s = (strm_t *)corebase_live(o);
  if (s == NULL)
    return NULL;
  int err = 0;
  pthread_mutex_lock(&s->c.mu);
  int fd = treadle_async_fd_fd(s->c.afd);
  if (s->pipe) {
    PyErr_SetString(PyExc_ValueError, "shutdown_after_drain() is for sockets");
    pthread_mutex_unlock(&s->c.mu);
    return NULL;
  }
  if (!s->c.closed && fd >= 0) {
    if (s->wlen == s->woff) {
      if (shutdown(fd, SHUT_WR) < 0)
        err = errno;
    } else {
      s->shut_wr = true;
    }
  }
  pthread_mutex_unlock(&s->c.mu);
  if (err != 0) {
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  Py_RETURN_NONE;
}

/* counts(): (recvs by the task, sends by the task, sends in write();
 * a pipe's reads and writes):
 * the task's calls ran on the runtime's threads without the GIL. */
static PyObject *core_counts(corebase_obj_t *o, PyObject *Py_UNUSED(u)) {
  strm_t *s = (strm_t *)corebase_live(o);
  if (s == NULL)
    return NULL;
  pthread_mutex_lock(&s->c.mu);
  unsigned long long r = s->task_recvs, ts = s->task_sends, is = s->inline_sends;
  pthread_mutex_unlock(&s->c.mu);
  return Py_BuildValue("KKK", r, ts, is);
}

static PyMethodDef core_methods[] = {
    {"write", (PyCFunction)core_write, METH_O,
     "write($self, data, /)\n--\n\nSends or buffers data; the buffer's size."},
    {"set_protocol", (PyCFunction)(void (*)(void))core_set_protocol, METH_FASTCALL,
     "set_protocol($self, protocol, buffered, /)\n--\n\nWho gets the data."},
    {"reading", (PyCFunction)core_reading, METH_O,
     "reading($self, on, /)\n--\n\nStarts or stops reading."},
    {"shutdown_after_drain", (PyCFunction)core_shutdown, METH_NOARGS,
     "shutdown_after_drain($self, /)\n--\n\nwrite_eof's shutdown(SHUT_WR)."},
    {"counts", (PyCFunction)core_counts, METH_NOARGS,
     "counts($self, /)\n--\n\n(task recvs, task sends, write() sends)."},
    {NULL}};

static PyTypeObject core_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core.StreamCore",
    .tp_base = &corebase_type, /* dealloc, the methods both cores have */
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The C core of treadle.EventLoop's stream transport (internal).",
    .tp_methods = core_methods,
    .tp_init = (initproc)core_init,
    .tp_new = PyType_GenericNew,
};

int pyt_transport_init(PyObject *m) {
  struct { PyObject **s; const char *v; } strs[] = {
      {&str_data_received, "data_received"}, {&str_get_buffer, "get_buffer"},
      {&str_buffer_updated, "buffer_updated"}, {&str_eof_received, "_eof_received"},
      {&str_fatal_error, "_fatal_error"}, {&str_protocol_error, "_protocol_error"},
      {&str_write_event, "_write_event"}};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
    if ((*strs[i].s = PyUnicode_InternFromString(strs[i].v)) == NULL)
      return -1;
  if (PyType_Ready(&core_type) < 0)
    return -1;
  struct { const char *name; long v; } consts[] = {{"PIPE_READ", PIPE_READ},
                                                   {"PIPE_WRITE", PIPE_WRITE}};
  for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++) {
    PyObject *v = PyLong_FromLong(consts[i].v);
    int rc = v != NULL ? PyDict_SetItemString(core_type.tp_dict, consts[i].name, v) : -1;
    Py_XDECREF(v);
    if (rc < 0)
      return -1;
  }
  PyType_Modified(&core_type);
  return PyModule_AddObjectRef(m, "StreamCore", (PyObject *)&core_type);
}
