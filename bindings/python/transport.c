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
 * A C task of the runtime (one a transport) waits on a dup of the socket,
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
 * it closes the dup: no call uses an fd number that was closed. */
#include "pytreadle.h"

#include <errno.h>
#include <fcntl.h>
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
  ready_fn_t rd_fn, wr_fn;
  _Atomic long refs;
  PyObject *loop;         /* GIL; a reference, dropped at free */
  PyObject *transport;    /* GIL; the Python transport, until close */
  PyObject *protocol;     /* GIL; what rd_fn gives data to */
  bool buffered;          /* GIL; protocol is a BufferedProtocol */
  int pipe;               /* PIPE_READ or PIPE_WRITE, else 0; set at init */
  bool short_drains;      /* a short read drained the fd (not a terminal,
                             which hands out a line a read); set at init */
  treadle_async_fd_t *afd;
  treadle_join_t *join;   /* GIL */
  pthread_mutex_t mu;
  /* mu: */
  treadle_waker_t *waker; /* the task's */
  bool closed;            /* close(): the task ends */
  bool reading;           /* the transport reads */
  bool rd_held;           /* a chunk (or end of file, or error) waits for rd_fn */
  bool rd_queued;         /* rd_fn is in the ready queue */
  bool rd_done;           /* end of file or an error was read: no more */
  ssize_t rlen;           /* the chunk: bytes, 0 end of file, -errno */
  size_t roff;            /* what a BufferedProtocol took of it */
  char *wbuf;             /* pending bytes: wbuf[woff, wlen) */
  size_t woff, wlen, wcap;
  size_t low;             /* the low-water mark: wr_fn when reached */
  bool shut_wr;           /* write_eof: shutdown(SHUT_WR) once drained */
  bool wr_queued;         /* wr_fn is in the ready queue */
  int werr;               /* errno of a failed send: the buffer is dropped */
  uint64_t task_recvs, task_sends, inline_sends; /* counts, for tests */
  size_t rsize;           /* READ_SIZE, or PIPE_READ_SIZE for a pipe */
  char *rbuf;             /* rsize bytes, malloc'd apart: calloc would
                             touch every page, and small reads touch one */
} strm_t;

typedef struct {
  PyObject_HEAD
  strm_t *s;
} coreobj_t;

static PyTypeObject core_type;
static PyObject *str_data_received, *str_get_buffer, *str_buffer_updated,
    *str_eof_received, *str_fatal_error, *str_protocol_error, *str_write_event;

static strm_t *strm_ref(strm_t *s) {
  /* Relaxed: a new reference from one held. */
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  return s;
}

/* Any thread, GIL or not. */
static void strm_unref(strm_t *s) {
  /* acq_rel: the last owner sees the others' writes before freeing. */
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  treadle_async_fd_free(s->afd);
  treadle_waker_drop(s->waker);
  PyGILState_STATE g = PyGILState_Ensure();
  Py_CLEAR(s->transport);
  Py_CLEAR(s->protocol);
  Py_CLEAR(s->loop);
  PyGILState_Release(g);
  pthread_mutex_destroy(&s->mu);
  free(s->wbuf);
  free(s->rbuf);
  free(s);
}

/* mu held: a clone of the task's waker, to wake after unlocking. */
static treadle_waker_t *waker_locked(strm_t *s) {
  return s->waker != NULL ? treadle_waker_clone(s->waker) : NULL;
}

static void wake(treadle_waker_t *w) {
  if (w != NULL)
    treadle_wake(w);
}

/* No GIL. Queues rd_fn or wr_fn (a reference for the queue); mu held, the
 * flag is already set. */
static void queue_fn(strm_t *s, ready_fn_t *f, bool *flag) {
  strm_ref(s);
  if (pyt_loop_push_fn(s->loop, f) < 0) { /* no memory: tried at the next wake */
    *flag = false;
    /* The queue's reference: never the last, the task holds one. */
    atomic_fetch_sub_explicit(&s->refs, 1, memory_order_relaxed);
  }
}

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

/* mu held, no GIL: sends what is pending. */
static void task_send(strm_t *s, int fd, const treadle_ready_t *rdy) {
  size_t before = s->wlen - s->woff;
  while (s->woff < s->wlen) {
    ssize_t n = put(s, fd, s->wbuf + s->woff, s->wlen - s->woff);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      treadle_async_fd_clear_ready(s->afd, rdy, TREADLE_WRITABLE);
      break;
    }
    s->task_sends++;
    if (n < 0) {
      s->werr = errno;
      s->woff = s->wlen = 0;
      break;
    }
    s->woff += (size_t)n;
    if (s->woff < s->wlen) { /* a short write: the kernel's buffer is full */
      treadle_async_fd_clear_ready(s->afd, rdy, TREADLE_WRITABLE);
      break;
    }
  }
  size_t after = s->wlen - s->woff;
  if (after == 0) {
    s->woff = s->wlen = 0;
    if (s->shut_wr && s->werr == 0)
      (void)shutdown(fd, SHUT_WR); /* a failure shows on the next read */
  }
  /* The transport hears of an error, of the low-water mark reached and
   * of an empty buffer (resume_writing, close, sendfile's wait). */
  bool tell = s->werr != 0 ||
              (after != before && (after == 0 || (before > s->low && after <= s->low)));
  if (tell && !s->wr_queued) {
    s->wr_queued = true;
    queue_fn(s, &s->wr_fn, &s->wr_queued);
  }
}

/* mu held, no GIL: reads one chunk and queues rd_fn. A write pipe reads
 * nothing: its readiness is the reader's close, handed over as end of
 * file. */
static void task_recv(strm_t *s, int fd, const treadle_ready_t *rdy) {
  ssize_t n = 0;
  if (s->pipe != PIPE_WRITE) {
    do
      n = s->pipe ? read(fd, s->rbuf, s->rsize) : recv(fd, s->rbuf, s->rsize, 0);
    while (n < 0 && errno == EINTR);
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    treadle_async_fd_clear_ready(s->afd, rdy, TREADLE_READABLE);
    return;
  }
  s->task_recvs += s->pipe != PIPE_WRITE; /* a read was made */
  if (n > 0 && (size_t)n < s->rsize && s->short_drains) /* the next edge is new */
    treadle_async_fd_clear_ready(s->afd, rdy, TREADLE_READABLE);
  s->rlen = n < 0 ? -errno : n;
  s->roff = 0;
  s->rd_done = n <= 0;
  s->rd_held = true;
  s->rd_queued = true;
  queue_fn(s, &s->rd_fn, &s->rd_queued);
}

static treadle_poll_t task_poll(treadle_cx_t *cx, void *state) {
  strm_t *s = *(strm_t **)state;
  pthread_mutex_lock(&s->mu);
  if (s->waker == NULL)
    s->waker = treadle_waker_clone(treadle_cx_waker(cx));
  for (;;) {
    if (s->closed) {
      pthread_mutex_unlock(&s->mu);
      return TREADLE_READY;
    }
    unsigned want = (s->reading && !s->rd_held && !s->rd_done ? TREADLE_READABLE : 0) |
                    (s->wlen > s->woff && s->werr == 0 ? TREADLE_WRITABLE : 0);
    pthread_mutex_unlock(&s->mu);
    if (want == 0)
      return TREADLE_PENDING; /* woken by a write, resume or hand-over */
    treadle_ready_t rdy;
    treadle_err_t err;
    if (treadle_async_fd_ready_poll(s->afd, cx, want, &rdy, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0)
      return TREADLE_READY; /* closed, or the runtime shuts down */
    unsigned any_rd = TREADLE_READABLE | TREADLE_READ_CLOSED | TREADLE_FD_ERROR;
    unsigned any_wr = TREADLE_WRITABLE | TREADLE_WRITE_CLOSED | TREADLE_FD_ERROR;
    pthread_mutex_lock(&s->mu);
    int fd = treadle_async_fd_fd(s->afd);
    if (s->closed || fd < 0) {
      pthread_mutex_unlock(&s->mu);
      return TREADLE_READY;
    }
    if ((rdy.bits & any_wr) && s->wlen > s->woff && s->werr == 0)
      task_send(s, fd, &rdy);
    if ((rdy.bits & any_rd) && s->reading && !s->rd_held && !s->rd_done)
      task_recv(s, fd, &rdy);
  }
}

static void task_drop(void *state) { strm_unref(*(strm_t **)state); }

static const treadle_task_vtable_t task_vt = {.poll = task_poll, .drop = task_drop};

/* ------------------------------------------------- in the loop (GIL) */

/* GIL: the transport method `name` with (exc, message): _fatal_error or
 * _protocol_error. */
static void fatal(strm_t *s, PyObject *name, PyObject *exc, const char *message) {
  PyObject *msg = PyUnicode_FromString(message);
  PyObject *res = msg != NULL && s->transport != NULL
                      ? PyObject_CallMethodObjArgs(s->transport, name, exc, msg, NULL)
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
  PyObject *proto = Py_NewRef(s->protocol);
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
    pthread_mutex_lock(&s->mu);
    bool go = s->rd_held && s->reading && !s->closed && s->transport != NULL;
    ssize_t n = s->rlen;
    size_t off = s->roff;
    pthread_mutex_unlock(&s->mu);
    if (!go || pyt_loop_closed(s->loop))
      return;
    if (n <= 0) { /* end of file or an error: once */
      pthread_mutex_lock(&s->mu);
      s->rd_held = false;
      pthread_mutex_unlock(&s->mu);
      PyObject *tr = Py_NewRef(s->transport);
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
      PyObject *data = PyBytes_FromStringAndSize(s->rbuf + off, n - (ssize_t)off);
      pthread_mutex_lock(&s->mu);
      s->rd_held = data == NULL; /* kept for later on no memory */
      pthread_mutex_unlock(&s->mu);
      if (data == NULL)
        return;
      PyObject *proto = Py_NewRef(s->protocol);
      PyObject *res = PyObject_CallMethodOneArg(proto, str_data_received, data);
      Py_DECREF(proto);
      Py_DECREF(data);
      if (res == NULL)
        callback_failed(s, "Fatal error: protocol.data_received() call failed.");
      Py_XDECREF(res);
      return;
    }
    size_t took;
    bool ok = give_buffered(s, s->rbuf + off, (size_t)n - off, &took);
    pthread_mutex_lock(&s->mu);
    s->roff += took;
    if (!ok || s->roff >= (size_t)s->rlen)
      s->rd_held = false;
    pthread_mutex_unlock(&s->mu);
    if (!ok || PyErr_Occurred())
      return;
  }
}

static void rd_fn(ready_fn_t *f) {
  strm_t *s = (strm_t *)f;
  pthread_mutex_lock(&s->mu);
  s->rd_queued = false;
  pthread_mutex_unlock(&s->mu);
  deliver(s);
  pthread_mutex_lock(&s->mu);
  treadle_waker_t *w = s->rd_held ? NULL : waker_locked(s); /* read on */
  pthread_mutex_unlock(&s->mu);
  wake(w);
  strm_unref(s);
}

static void wr_fn(ready_fn_t *f) {
  strm_t *s = (strm_t *)((char *)f - offsetof(strm_t, wr_fn));
  pthread_mutex_lock(&s->mu);
  s->wr_queued = false;
  int err = s->werr;
  pthread_mutex_unlock(&s->mu);
  if (s->transport != NULL && !pyt_loop_closed(s->loop)) {
    PyObject *tr = Py_NewRef(s->transport);
    PyObject *e = PyLong_FromLong(err);
    PyObject *res = e != NULL ? PyObject_CallMethodOneArg(tr, str_write_event, e) : NULL;
    Py_XDECREF(res);
    Py_XDECREF(e);
    Py_DECREF(tr);
  }
  strm_unref(s);
}

/* -------------------------------------------------------- the methods */

static int check_live(coreobj_t *o) {
  if (o->s == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "StreamCore is not initialised");
    return -1;
  }
  return 0;
}

/* StreamCore(loop, fd, transport, pipe=0): dups fd and starts the task;
 * pipe is PIPE_READ or PIPE_WRITE for a pipe transport's core. */
static int core_init(coreobj_t *o, PyObject *args, PyObject *kw) {
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
  if (o->s != NULL) {
    PyErr_SetString(PyExc_RuntimeError, "StreamCore is initialised already");
    return -1;
  }
  if (!pyt_is_loop(loop)) {
    PyErr_SetString(PyExc_TypeError, "StreamCore(loop, fd, transport) takes a treadle.EventLoop");
    return -1;
  }
  pyrt_t *r = pyt_loop_runtime(loop);
  if (r->rt == NULL) {
    pyt_raise(TREADLE_ESHUTDOWN);
    return -1;
  }
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) {
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
  }
  int fl = fcntl(dup_fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(dup_fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
    PyErr_SetFromErrno(PyExc_OSError);
    close(dup_fd);
    return -1;
  }
  strm_t *s = calloc(1, sizeof *s);
  size_t rsize = kind != 0 ? PIPE_READ_SIZE : READ_SIZE;
  char *rbuf = s != NULL ? malloc(rsize) : NULL;
  if (rbuf == NULL) {
    free(s);
    close(dup_fd);
    PyErr_NoMemory();
    return -1;
  }
  s->rbuf = rbuf;
  s->rsize = rsize;
  s->pipe = kind;
  struct stat st;
  s->short_drains = fstat(dup_fd, &st) == 0 && !S_ISCHR(st.st_mode);
  s->rd_fn.fn = rd_fn;
  s->wr_fn.fn = wr_fn;
  atomic_init(&s->refs, 1);
  pthread_mutex_init(&s->mu, NULL);
  s->loop = Py_NewRef(loop);
  s->transport = Py_NewRef(transport);
  s->protocol = Py_NewRef(Py_None);
  s->low = 16 * 1024;
  treadle_err_t err = treadle_async_fd_new(r->h, dup_fd, &s->afd);
  if (err != 0) {
    close(dup_fd);
    strm_unref(s);
    pyt_raise(err);
    return -1;
  }
  strm_t *task_ref = strm_ref(s);
  err = treadle_spawn(r->h, &task_vt, &task_ref, sizeof task_ref, &s->join);
  if (err != 0) {
    strm_unref(s);
    strm_unref(s);
    pyt_raise(err);
    return -1;
  }
  o->s = s;
  return 0;
}

/* Ends the task and closes the dup; drops the transport and protocol. */
static void core_close_s(strm_t *s) {
  pthread_mutex_lock(&s->mu);
  bool was = s->closed;
  s->closed = true;
  s->reading = false;
  treadle_waker_t *w = waker_locked(s);
  pthread_mutex_unlock(&s->mu); /* no system call runs on the dup now */
  wake(w);
  if (was)
    return;
  treadle_async_fd_close(s->afd);
  if (s->join != NULL) {
    treadle_join_abort(s->join); /* ends a wait that no wake reaches */
    treadle_join_detach(s->join);
    s->join = NULL;
  }
  Py_CLEAR(s->transport);
  Py_CLEAR(s->protocol);
}

static PyObject *core_close(coreobj_t *o, PyObject *Py_UNUSED(u)) {
  if (check_live(o) < 0)
    return NULL;
  core_close_s(o->s);
  Py_RETURN_NONE;
}

/* write(data): buffers a small write for the task's send; sends a bigger
 * one at once when nothing is pending, keeping the rest; returns the
 * write buffer's size. OSError when the send fails. */
static PyObject *core_write(coreobj_t *o, PyObject *data) {
  if (check_live(o) < 0)
    return NULL;
  strm_t *s = o->s;
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
  pthread_mutex_lock(&s->mu);
  int fd = treadle_async_fd_fd(s->afd);
  if (s->closed || fd < 0 || s->werr != 0)
    len = 0; /* dropped, as the transport's lost connection drops it */
  if (len > 0 && s->wlen == s->woff && len < COALESCE_MAX && !s->pipe)
    w = waker_locked(s); /* buffered below; the task sends it */
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
      w = waker_locked(s); /* the task now waits for writability */
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
  pthread_mutex_unlock(&s->mu);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&view);
  wake(w);
  if (nomem)
    return PyErr_NoMemory();
  if (err != 0) {
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  return PyLong_FromSize_t(size);
}

static PyObject *core_buffer_size(coreobj_t *o, PyObject *Py_UNUSED(u)) {
  if (check_live(o) < 0)
    return NULL;
  pthread_mutex_lock(&o->s->mu);
  size_t n = o->s->wlen - o->s->woff;
  pthread_mutex_unlock(&o->s->mu);
  return PyLong_FromSize_t(n);
}

/* drop_buffer(): forgets the pending bytes (abort). */
static PyObject *core_drop_buffer(coreobj_t *o, PyObject *Py_UNUSED(u)) {
  if (check_live(o) < 0)
    return NULL;
  pthread_mutex_lock(&o->s->mu);
  o->s->woff = o->s->wlen = 0;
  pthread_mutex_unlock(&o->s->mu);
  Py_RETURN_NONE;
}

static PyObject *core_set_low(coreobj_t *o, PyObject *arg) {
  if (check_live(o) < 0)
    return NULL;
  Py_ssize_t low = PyLong_AsSsize_t(arg);
  if (low == -1 && PyErr_Occurred())
    return NULL;
  pthread_mutex_lock(&o->s->mu);
  o->s->low = low < 0 ? 0 : (size_t)low;
  pthread_mutex_unlock(&o->s->mu);
  Py_RETURN_NONE;
}

/* set_protocol(protocol, buffered). */
static PyObject *core_set_protocol(coreobj_t *o, PyObject *const *args, Py_ssize_t n) {
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "set_protocol(protocol, buffered)");
    return NULL;
  }
  if (check_live(o) < 0)
    return NULL;
  int b = PyObject_IsTrue(args[1]);
  if (b < 0)
    return NULL;
  if (o->s->closed)
    Py_RETURN_NONE;
  Py_XSETREF(o->s->protocol, Py_NewRef(args[0]));
  o->s->buffered = b;
  Py_RETURN_NONE;
}

/* reading(on): starts or stops reading; a chunk held while stopped is
 * handed over (in the loop) once on again. */
static PyObject *core_reading(coreobj_t *o, PyObject *arg) {
  if (check_live(o) < 0)
    return NULL;
  int on = PyObject_IsTrue(arg);
  if (on < 0)
    return NULL;
  strm_t *s = o->s;
  pthread_mutex_lock(&s->mu);
  treadle_waker_t *w = NULL;
  if (!s->closed) {
    s->reading = on;
    if (on && s->rd_held && !s->rd_queued) {
      s->rd_queued = true;
      queue_fn(s, &s->rd_fn, &s->rd_queued);
    } else if (on) {
      w = waker_locked(s);
    }
  }
  pthread_mutex_unlock(&s->mu);
  wake(w);
  Py_RETURN_NONE;
}

/* shutdown_after_drain(): write_eof's SHUT_WR, now when nothing is
 * pending, else once the task drained the buffer. */
static PyObject *core_shutdown(coreobj_t *o, PyObject *Py_UNUSED(u)) {
  if (check_live(o) < 0)
    return NULL;
  strm_t *s = o->s;
  int err = 0;
  pthread_mutex_lock(&s->mu);
  int fd = treadle_async_fd_fd(s->afd);
  if (s->pipe) {
    PyErr_SetString(PyExc_ValueError, "shutdown_after_drain() is for sockets");
    pthread_mutex_unlock(&s->mu);
    return NULL;
  }
  if (!s->closed && fd >= 0) {
    if (s->wlen == s->woff) {
      if (shutdown(fd, SHUT_WR) < 0)
        err = errno;
    } else {
      s->shut_wr = true;
    }
  }
  pthread_mutex_unlock(&s->mu);
  if (err != 0) {
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  Py_RETURN_NONE;
}

/* counts(): (recvs by the task, sends by the task, sends in write();
 * a pipe's reads and writes):
 * the task's calls ran on the runtime's threads without the GIL. */
static PyObject *core_counts(coreobj_t *o, PyObject *Py_UNUSED(u)) {
  if (check_live(o) < 0)
    return NULL;
  pthread_mutex_lock(&o->s->mu);
  unsigned long long r = o->s->task_recvs, ts = o->s->task_sends, is = o->s->inline_sends;
  pthread_mutex_unlock(&o->s->mu);
  return Py_BuildValue("KKK", r, ts, is);
}

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  return PyType_GenericNew(type, args, kw);
}

static void core_dealloc(coreobj_t *o) {
  if (o->s != NULL) {
    core_close_s(o->s);
    strm_unref(o->s);
  }
  Py_TYPE(o)->tp_free(o);
}

static PyMethodDef core_methods[] = {
    {"write", (PyCFunction)core_write, METH_O,
     "write($self, data, /)\n--\n\nSends or buffers data; the buffer's size."},
    {"get_write_buffer_size", (PyCFunction)core_buffer_size, METH_NOARGS,
     "get_write_buffer_size($self, /)\n--\n\nBytes waiting to be sent."},
    {"drop_buffer", (PyCFunction)core_drop_buffer, METH_NOARGS,
     "drop_buffer($self, /)\n--\n\nForgets the bytes waiting to be sent."},
    {"set_low", (PyCFunction)core_set_low, METH_O,
     "set_low($self, low, /)\n--\n\nThe low-water mark the task reports."},
    {"set_protocol", (PyCFunction)(void (*)(void))core_set_protocol, METH_FASTCALL,
     "set_protocol($self, protocol, buffered, /)\n--\n\nWho gets the data."},
    {"reading", (PyCFunction)core_reading, METH_O,
     "reading($self, on, /)\n--\n\nStarts or stops reading."},
    {"shutdown_after_drain", (PyCFunction)core_shutdown, METH_NOARGS,
     "shutdown_after_drain($self, /)\n--\n\nwrite_eof's shutdown(SHUT_WR)."},
    {"close", (PyCFunction)core_close, METH_NOARGS,
     "close($self, /)\n--\n\nEnds the task and closes its dup of the socket."},
    {"counts", (PyCFunction)core_counts, METH_NOARGS,
     "counts($self, /)\n--\n\n(task recvs, task sends, write() sends)."},
    {NULL}};

static PyTypeObject core_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core.StreamCore",
    .tp_basicsize = sizeof(coreobj_t),
    .tp_dealloc = (destructor)core_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The C core of treadle.EventLoop's stream transport (internal).",
    .tp_methods = core_methods,
    .tp_init = (initproc)core_init,
    .tp_new = core_new,
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
