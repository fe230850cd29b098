/* The C core of treadle.EventLoop's datagram transport (UDP over IPv4 and
 * IPv6, Unix datagram sockets; ARCHITECTURE.md "asyncio loop", item 7).
 *
 * DatagramCore does the socket's system calls; the Python class around it
 * (treadle._loop._DatagramTransport) keeps asyncio's semantics (sendto's
 * checks, close, abort, flow control, connection_made/lost), as asyncio's
 * _SelectorDatagramTransport has them.
 *
 * Its C task (one a transport, corebase.c) waits on the socket,
 * registered as a treadle async fd, and without the GIL:
 * - reads: while reading is on, recvfrom()s a batch of up to BATCH
 *   datagrams into the core's buffer, packed one after another while the
 *   room left holds the biggest datagram of the family, and queues `rd_fn`
 *   in the loop's ready queue; it reads again once the batch was handed
 *   over. rd_fn runs in an iteration (GIL, the runtime's Python lane) and
 *   calls protocol.datagram_received(data, addr) for each, or
 *   error_received(OSError) for a failed recvfrom (an ICMP error). It
 *   stops when the transport closes; what it had not given is dropped,
 *   as asyncio's reader removed at close would not have read it.
 * - writes: sendto() sends at once (the GIL let go for the call) when no
 *   datagram is queued; else, or on EAGAIN, the datagram and its address
 *   are copied to the queue, which the task sends when the socket is
 *   writable. It queues `wr_fn` when a send fails (the datagram is
 *   dropped; the task waits for wr_fn to report it before sending on),
 *   when the queue falls to the low-water mark or empties: the transport
 *   then calls error_received, resumes the protocol's writing or finishes
 *   a close.
 * The last address read or sent is kept with its Python object (GIL), so
 * an echo converts neither way. The system calls run under the core's
 * mutex, which close() takes before it detaches the fd. The task, the
 * set-up, close and the record's head are the ones StreamCore has too
 * (corebase.c); this file has what is a datagram socket's own. */
#include "pytreadle.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#define BATCH 16
/* The biggest datagram read: 64 KiB for UDP (its length field); asyncio's
 * max_size, 256 KiB, for Unix datagram sockets. The buffer holds two. */
#define INET_MAX (64 * 1024)
#define UNIX_MAX (256 * 1024)

typedef struct qent_s { /* a datagram waiting in the send queue */
  struct qent_s *next;
  size_t len;
  socklen_t alen; /* 0: send() on a connected socket */
  struct sockaddr_storage addr;
  char data[];
} qent_t;

typedef struct {
  ssize_t len; /* bytes, or -errno of a failed recvfrom */
  size_t off;  /* where in rbuf */
  socklen_t alen;
  struct sockaddr_storage addr;
} slot_t;

typedef struct dgram_s {
  corebase_t c;         /* first: the shared head (corebase.c) */
  PyObject *last_addr;  /* GIL; the Python form of last_sa, or NULL */
  struct sockaddr_storage last_sa; /* GIL */
  socklen_t last_len;   /* GIL */
  int family;           /* set at init */
  bool connected;       /* send() without an address; set at init */
  size_t max;           /* the biggest datagram read (c.rbuf holds two) */
  /* c.mu: */
  int nslots, next;     /* the batch: slots[next, nslots) not given yet */
  slot_t slots[BATCH];
  qent_t *qhead, *qtail; /* the send queue */
  size_t qbytes;        /* its datagrams' bytes */
  uint64_t task_recvs, batches, task_sends, inline_sends; /* for tests */
} dgram_t;

static PyTypeObject core_type;
static PyObject *str_datagram_received, *str_error_received, *str_write_event,
    *str_callback_error, *gaierror;

static void queue_clear(dgram_t *s) {
  while (s->qhead != NULL) {
    qent_t *e = s->qhead;
    s->qhead = e->next;
    free(e);
  }
  s->qtail = NULL;
  s->qbytes = 0;
}

/* No GIL: one sendto (or send, without an address); -1 with errno. */
static ssize_t send_one(int fd, const char *p, size_t len,
                        const struct sockaddr_storage *sa, socklen_t alen) {
  ssize_t n;
  do
    n = alen > 0 ? sendto(fd, p, len, MSG_NOSIGNAL, (const struct sockaddr *)sa, alen)
                 : send(fd, p, len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n;
}

/* ----------------------------------------------------------- the task */

/* c.mu held: the task reads while reading is on and no batch waits for
 * rd_fn; it sends the queue unless a failed send waits for wr_fn. */
static unsigned task_want(corebase_t *c) {
  dgram_t *s = (dgram_t *)c;
  return (c->reading && !c->rd_held ? TREADLE_READABLE : 0) |
         (s->qhead != NULL && c->werr == 0 ? TREADLE_WRITABLE : 0);
}

/* c.mu held, no GIL: sends the queue until EAGAIN or a failure. */
static void task_send(corebase_t *c, int fd, const treadle_ready_t *rdy) {
  dgram_t *s = (dgram_t *)c;
  size_t before = s->qbytes;
  while (s->qhead != NULL) {
    qent_t *e = s->qhead;
    ssize_t n = send_one(fd, e->data, e->len, &e->addr, e->alen);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      treadle_async_fd_clear_ready(c->afd, rdy, TREADLE_WRITABLE);
      break;
    }
    s->task_sends++;
    if (n < 0)
      c->werr = errno; /* the datagram is dropped, as asyncio drops it */
    s->qhead = e->next;
    if (s->qhead == NULL)
      s->qtail = NULL;
    s->qbytes -= e->len;
    free(e);
    if (n < 0)
      break; /* reported before the rest is sent */
  }
  size_t after = s->qbytes;
  corebase_sent(c, before, after);
}

/* c.mu held, no GIL: reads a batch and queues rd_fn. */
static void task_recv(corebase_t *c, int fd, const treadle_ready_t *rdy) {
  dgram_t *s = (dgram_t *)c;
  size_t used = 0;
  int n = 0;
  while (n < BATCH && 2 * s->max - used >= s->max) {
    slot_t *sl = &s->slots[n];
    sl->alen = sizeof sl->addr;
    ssize_t got;
    do
      got = recvfrom(fd, c->rbuf + used, s->max, 0, (struct sockaddr *)&sl->addr, &sl->alen);
    while (got < 0 && errno == EINTR);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      treadle_async_fd_clear_ready(c->afd, rdy, TREADLE_READABLE);
      break;
    }
    s->task_recvs++;
    sl->off = used;
    sl->len = got < 0 ? -errno : got;
    n++;
    if (got < 0)
      break; /* an ICMP error: reported before reading on */
    used += (size_t)got;
  }
  if (n == 0)
    return;
  s->batches++;
  s->nslots = n;
  s->next = 0;
  c->rd_held = true;
  c->rd_queued = true;
  corebase_queue(c, &c->rd_fn, &c->rd_queued);
}

/* ------------------------------------------------------- addresses */

/* GIL: the Python address of a sockaddr, as the socket module gives it. */
static PyObject *addr_to_py(const struct sockaddr_storage *sa, socklen_t len) {
  char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  if (len == 0)
    Py_RETURN_NONE;
  switch (sa->ss_family) {
  case AF_INET: {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    return Py_BuildValue("(si)", host, ntohs(a->sin_port));
  }
  case AF_INET6: {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    if (a->sin6_scope_id == 0)
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    else if (getnameinfo((const struct sockaddr *)a, len, host, sizeof host, NULL, 0,
                         NI_NUMERICHOST) != 0) /* fe80::1%eth0, as Python's */
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    return Py_BuildValue("(siII)", host, ntohs(a->sin6_port),
                         (unsigned)ntohl(a->sin6_flowinfo), (unsigned)a->sin6_scope_id);
  }
  case AF_UNIX: {
    const struct sockaddr_un *a = (const struct sockaddr_un *)sa;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (n > 0 && a->sun_path[0] == '\0') /* Linux's abstract namespace */
      return PyBytes_FromStringAndSize(a->sun_path, (Py_ssize_t)n);
    return PyUnicode_DecodeFSDefaultAndSize(a->sun_path, (Py_ssize_t)strnlen(a->sun_path, n));
  }
  default:
    Py_RETURN_NONE;
  }
}

/* GIL: host (str) to an address of `family`, as socket.sendto takes it:
 * "" and "<broadcast>", numeric, else a name lookup (the GIL let go). */
static int host_to_addr(int family, PyObject *host, void *out, uint32_t *scope) {
  if (!PyUnicode_Check(host)) {
    PyErr_Format(PyExc_TypeError, "str expected, not %.100s", Py_TYPE(host)->tp_name);
    return -1;
  }
  const char *name = PyUnicode_AsUTF8(host);
  if (name == NULL)
    return -1;
  if (family == AF_INET && name[0] == '\0') {
    ((struct in_addr *)out)->s_addr = htonl(INADDR_ANY);
    return 0;
  }
  if (family == AF_INET && strcmp(name, "<broadcast>") == 0) {
    ((struct in_addr *)out)->s_addr = htonl(INADDR_BROADCAST);
    return 0;
  }
  if (family == AF_INET6 && name[0] == '\0') {
    memset(out, 0, sizeof(struct in6_addr));
    return 0;
  }
  if (strchr(name, '%') == NULL && inet_pton(family, name, out) == 1)
    return 0;
  struct addrinfo hints = {.ai_family = family, .ai_socktype = SOCK_DGRAM}, *res = NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = getaddrinfo(name, NULL, &hints, &res);
  Py_END_ALLOW_THREADS
  if (rc != 0 || res == NULL) {
    PyObject *v = Py_BuildValue("(is)", rc, gai_strerror(rc));
    if (v != NULL)
      PyErr_SetObject(gaierror, v);
    Py_XDECREF(v);
    if (res != NULL)
      freeaddrinfo(res);
    return -1;
  }
  if (family == AF_INET)
    memcpy(out, &((struct sockaddr_in *)res->ai_addr)->sin_addr, sizeof(struct in_addr));
  else {
    memcpy(out, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, sizeof(struct in6_addr));
    *scope = ((struct sockaddr_in6 *)res->ai_addr)->sin6_scope_id;
  }
  freeaddrinfo(res);
  return 0;
}

/* GIL: a Python address of the socket's family to a sockaddr, with the
 * socket module's errors (TypeError, OverflowError, socket.gaierror). */
static int addr_from_py(int family, PyObject *addr, struct sockaddr_storage *sa,
                        socklen_t *len) {
  memset(sa, 0, sizeof *sa);
  if (family == AF_UNIX) {
    struct sockaddr_un *a = (struct sockaddr_un *)sa;
    PyObject *path = NULL;
    if (PyUnicode_Check(addr))
      path = PyUnicode_EncodeFSDefault(addr);
    else if (PyBytes_Check(addr) || PyByteArray_Check(addr))
      path = PyBytes_FromObject(addr);
    else
      PyErr_Format(PyExc_TypeError, "sendto(): AF_UNIX address must be str or bytes, not %.100s",
                   Py_TYPE(addr)->tp_name);
    if (path == NULL)
      return -1;
    size_t n = (size_t)PyBytes_GET_SIZE(path);
    if (n >= sizeof a->sun_path) {
      Py_DECREF(path);
      PyErr_SetString(PyExc_OSError, "AF_UNIX path too long");
      return -1;
    }
    a->sun_family = AF_UNIX;
    memcpy(a->sun_path, PyBytes_AS_STRING(path), n);
    Py_DECREF(path);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 0;
  }
  const char *fam = family == AF_INET ? "AF_INET" : "AF_INET6";
  if (!PyTuple_Check(addr)) {
    PyErr_Format(PyExc_TypeError, "sendto(): %s address must be tuple, not %.100s", fam,
                 Py_TYPE(addr)->tp_name);
    return -1;
  }
  Py_ssize_t n = PyTuple_GET_SIZE(addr);
  if (family == AF_INET ? n != 2 : n < 2 || n > 4) {
    PyErr_Format(PyExc_TypeError, "sendto(): %s address must be a tuple of %s", fam,
                 family == AF_INET ? "(host, port)" : "(host, port[, flowinfo[, scopeid]])");
    return -1;
  }
  long port = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
  if (port == -1 && PyErr_Occurred())
    return -1;
  if (port < 0 || port > 0xffff) {
    PyErr_SetString(PyExc_OverflowError, "sendto(): port must be 0-65535.");
    return -1;
  }
  if (family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)sa;
    if (host_to_addr(AF_INET, PyTuple_GET_ITEM(addr, 0), &a->sin_addr, NULL) < 0)
      return -1;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *len = sizeof *a;
    return 0;
  }
  struct sockaddr_in6 *a = (struct sockaddr_in6 *)sa;
  unsigned long flow = 0, scope = 0;
  if (n > 2 && ((flow = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 2))) == (unsigned long)-1 &&
                PyErr_Occurred()))
    return -1;
  if (n > 3 && ((scope = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 3))) == (unsigned long)-1 &&
                PyErr_Occurred()))
    return -1;
  if (flow > 0xfffff) {
    PyErr_SetString(PyExc_OverflowError, "sendto(): flowinfo must be 0-1048575.");
    return -1;
  }
  uint32_t found = 0;
  if (host_to_addr(AF_INET6, PyTuple_GET_ITEM(addr, 0), &a->sin6_addr, &found) < 0)
    return -1;
  a->sin6_family = AF_INET6;
  a->sin6_port = htons((uint16_t)port);
  a->sin6_flowinfo = htonl((uint32_t)flow);
  a->sin6_scope_id = scope != 0 ? (uint32_t)scope : found;
  *len = sizeof *a;
  return 0;
}

/* GIL: remembers sa and its Python form (a new reference taken). */
static void remember(dgram_t *s, const struct sockaddr_storage *sa, socklen_t len,
                     PyObject *obj) {
  Py_XSETREF(s->last_addr, Py_NewRef(obj));
  memcpy(&s->last_sa, sa, len);
  s->last_len = len;
}

/* ------------------------------------------------- in the loop (GIL) */

/* GIL: a protocol callback raised (the exception set): SystemExit and
 * KeyboardInterrupt stay set for the loop (true); anything else goes to
 * the transport's _callback_error (the loop's exception handler, as a
 * callback of asyncio's that raised). */
static bool callback_failed(dgram_t *s, const char *where) {
  if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
      PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
    return true;
  PyObject *exc = pyt_fetch_exception();
  PyObject *w = PyUnicode_FromString(where);
  PyObject *res = w != NULL && s->c.transport != NULL
                      ? PyObject_CallMethodObjArgs(s->c.transport, str_callback_error, exc, w, NULL)
                      : NULL;
  Py_XDECREF(res);
  Py_XDECREF(w);
  Py_XDECREF(exc);
  return PyErr_Occurred() != NULL;
}

/* GIL: error_received(OSError(err)). */
static void give_error(dgram_t *s, int err) {
  errno = err;
  PyErr_SetFromErrno(PyExc_OSError);
  PyObject *exc = pyt_fetch_exception();
  PyObject *proto = Py_NewRef(s->c.protocol);
  PyObject *res = exc != NULL ? PyObject_CallMethodOneArg(proto, str_error_received, exc) : NULL;
  Py_DECREF(proto);
  Py_XDECREF(exc);
  if (res == NULL)
    callback_failed(s, "protocol.error_received()");
  Py_XDECREF(res);
}

/* GIL: gives the batch's datagrams while the transport reads; false when
 * an exception (SystemExit, KeyboardInterrupt) stopped it midway. */
static bool deliver(dgram_t *s) {
  for (;;) {
    pthread_mutex_lock(&s->c.mu);
    bool go = s->c.rd_held && s->c.reading && !s->c.closed && s->c.transport != NULL &&
              s->next < s->nslots;
    slot_t *sl = go ? &s->slots[s->next++] : NULL;
    pthread_mutex_unlock(&s->c.mu);
    if (!go || pyt_loop_closed(s->c.loop))
      return true;
    if (sl->len < 0) {
      give_error(s, (int)-sl->len);
    } else {
      PyObject *addr;
      if (s->last_addr != NULL && sl->alen == s->last_len &&
          memcmp(&sl->addr, &s->last_sa, sl->alen) == 0)
        addr = Py_NewRef(s->last_addr);
      else if ((addr = addr_to_py(&sl->addr, sl->alen)) != NULL && sl->alen > 0)
        remember(s, &sl->addr, sl->alen, addr);
      PyObject *data = addr != NULL ? PyBytes_FromStringAndSize(s->c.rbuf + sl->off, sl->len) : NULL;
      if (data == NULL) { /* no memory: this one is lost */
        Py_XDECREF(addr);
        return false;
      }
      PyObject *args[] = {Py_NewRef(s->c.protocol), data, addr};
      PyObject *res = PyObject_VectorcallMethod(str_datagram_received, args,
                                                3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
      Py_DECREF(args[0]);
      Py_DECREF(data);
      Py_DECREF(addr);
      if (res == NULL)
        callback_failed(s, "protocol.datagram_received()");
      Py_XDECREF(res);
    }
    if (PyErr_Occurred())
      return false;
  }
}

static void rd_fn(ready_fn_t *f) {
  dgram_t *s = (dgram_t *)f;
  pthread_mutex_lock(&s->c.mu);
  s->c.rd_queued = false;
  pthread_mutex_unlock(&s->c.mu);
  bool whole = deliver(s);
  pthread_mutex_lock(&s->c.mu);
  treadle_waker_t *w = NULL;
  if (whole || s->next >= s->nslots) { /* the batch is done: read on */
    s->c.rd_held = false;
    w = corebase_waker(&s->c);
  } else if (!s->c.rd_queued) { /* the rest in the next iteration */
    s->c.rd_queued = true;
    if (!corebase_queue(&s->c, &s->c.rd_fn, &s->c.rd_queued))
      w = corebase_waker(&s->c); /* the task queues it */
  }
  pthread_mutex_unlock(&s->c.mu);
  corebase_wake(w);
  corebase_unref(&s->c);
}

static void wr_fn(ready_fn_t *f) {
  dgram_t *s = (dgram_t *)((char *)f - offsetof(corebase_t, wr_fn));
  pthread_mutex_lock(&s->c.mu);
  s->c.wr_queued = false;
  int err = s->c.werr;
  s->c.werr = 0;
  treadle_waker_t *w = err != 0 ? corebase_waker(&s->c) : NULL; /* sends on */
  pthread_mutex_unlock(&s->c.mu);
  corebase_wake(w);
  if (s->c.transport != NULL && !pyt_loop_closed(s->c.loop)) {
    PyObject *tr = Py_NewRef(s->c.transport);
    PyObject *e = PyLong_FromLong(err);
    PyObject *res = e != NULL ? PyObject_CallMethodOneArg(tr, str_write_event, e) : NULL;
    if (res == NULL && e != NULL)
      callback_failed(s, "_DatagramTransport._sendto_ready()");
    Py_XDECREF(res);
    Py_XDECREF(e);
    Py_DECREF(tr);
  }
  corebase_unref(&s->c);
}

/* GIL. */
static void free_rest(corebase_t *c) {
  dgram_t *s = (dgram_t *)c;
  Py_CLEAR(s->last_addr);
  queue_clear(s);
}

static size_t pending(corebase_t *c) { return ((dgram_t *)c)->qbytes; }

static void drop_pending(corebase_t *c) { queue_clear((dgram_t *)c); }

static const corebase_ops_t dgram_ops = {
    .want = task_want, .send = task_send, .recv = task_recv, .rd_fn = rd_fn, .wr_fn = wr_fn,
    .pending = pending, .drop_pending = drop_pending, .free_rest = free_rest};

/* -------------------------------------------------------- the methods */

/* DatagramCore(loop, fd, transport, connected): registers fd and starts
 * the task. */
static int core_init(corebase_obj_t *o, PyObject *args, PyObject *kw) {
  static char *names[] = {"loop", "fd", "transport", "connected", NULL};
  PyObject *loop, *transport;
  int fd, connected;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OiOp", names, &loop, &fd, &transport, &connected))
    return -1;
  pyrt_t *r = corebase_runtime(o, loop, "DatagramCore(loop, fd, transport, connected)");
  if (r == NULL)
    return -1;
  struct sockaddr_storage sa;
  socklen_t salen = sizeof sa;
  int type = 0;
  socklen_t tlen = sizeof type;
  if (getsockname(fd, (struct sockaddr *)&sa, &salen) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0) {
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
  }
  if (type != SOCK_DGRAM ||
      (sa.ss_family != AF_INET && sa.ss_family != AF_INET6 && sa.ss_family != AF_UNIX)) {
    PyErr_SetString(PyExc_ValueError,
                    "DatagramCore takes an AF_INET, AF_INET6 or AF_UNIX SOCK_DGRAM socket");
    return -1;
  }
  size_t max = sa.ss_family == AF_UNIX ? UNIX_MAX : INET_MAX;
  dgram_t *s = (dgram_t *)corebase_new(sizeof *s, &dgram_ops, r, loop, fd, transport, 2 * max);
  if (s == NULL)
    return -1;
  s->max = max;
  s->family = sa.ss_family;
  s->connected = connected;
  return corebase_start(o, &s->c, r);
}

/* sendto(data, addr): sends at once when nothing is queued, else (or on
 * EAGAIN) queues a copy; returns the queue's size. addr is None on a
 * connected socket. OSError when the send fails; the socket module's
 * errors for a bad address. Nothing is sent once closed. */
static PyObject *core_sendto(corebase_obj_t *o, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "sendto(data, addr)");
    return NULL;
  }
  dgram_t *s = (dgram_t *)corebase_live(o);
  if (s == NULL)
    return NULL;
  PyObject *addr = args[1];
  struct sockaddr_storage sa;
  socklen_t alen = 0;
  if (!s->connected) {
    if (addr == s->last_addr && addr != NULL) {
      memcpy(&sa, &s->last_sa, s->last_len);
      alen = s->last_len;
    } else if (addr_from_py(s->family, addr, &sa, &alen) < 0) {
      return NULL;
    } else if (PyTuple_CheckExact(addr) || PyUnicode_CheckExact(addr) ||
               PyBytes_CheckExact(addr)) { /* immutable: kept */
      remember(s, &sa, alen, addr);
    }
  }
  Py_buffer view;
  if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
    return NULL;
  int err = 0;
  bool nomem = false;
  size_t size;
  treadle_waker_t *w = NULL;
  Py_BEGIN_ALLOW_THREADS
  pthread_mutex_lock(&s->c.mu);
  int fd = treadle_async_fd_fd(s->c.afd);
  bool queue = !s->c.closed && fd >= 0;
  if (queue && s->qhead == NULL) {
    ssize_t n = send_one(fd, view.buf, (size_t)view.len, &sa, alen);
    s->inline_sends++;
    if (n >= 0)
      queue = false;
    else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      err = errno;
      queue = false;
    }
  }
  if (queue) {
    qent_t *e = malloc(offsetof(qent_t, data) + (size_t)view.len);
    if (e == NULL)
      nomem = true;
    else {
      e->next = NULL;
      e->len = (size_t)view.len;
      e->alen = alen;
      if (alen > 0)
        memcpy(&e->addr, &sa, alen);
      memcpy(e->data, view.buf, e->len);
      if (s->qtail != NULL)
        s->qtail->next = e;
      else {
        s->qhead = e;
        w = corebase_waker(&s->c); /* the task now waits for writability */
      }
      s->qtail = e;
      s->qbytes += e->len;
    }
  }
  size = s->qbytes;
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

/* set_protocol(protocol). */
static PyObject *core_set_protocol(corebase_obj_t *o, PyObject *protocol) {
  dgram_t *s = (dgram_t *)corebase_live(o);
  if (s == NULL)
    return NULL;
  if (!s->c.closed)
    Py_XSETREF(s->c.protocol, Py_NewRef(protocol));
  Py_RETURN_NONE;
}

/* reading(on): starts or stops reading. */
static PyObject *core_reading(corebase_obj_t *o, PyObject *arg) {
  dgram_t *s = (dgram_t *)corebase_live(o);
  if (s == NULL)
    return NULL;
  int on = PyObject_IsTrue(arg);
  if (on < 0)
    return NULL;
  pthread_mutex_lock(&s->c.mu);
  treadle_waker_t *w = NULL;
  if (!s->c.closed) {
    s->c.reading = on;
    if (on)
      w = corebase_waker(&s->c);
  }
  pthread_mutex_unlock(&s->c.mu);
  corebase_wake(w);
  Py_RETURN_NONE;
}

/* counts(): (recvfroms by the task, batches it handed over, sends by the
 * task, sends in sendto()): the task's ran without the GIL. */
static PyObject *core_counts(corebase_obj_t *o, PyObject *Py_UNUSED(u)) {
  dgram_t *s = (dgram_t *)corebase_live(o);
  if (s == NULL)
    return NULL;
  pthread_mutex_lock(&s->c.mu);
  unsigned long long r = s->task_recvs, b = s->batches, ts = s->task_sends,
                     is = s->inline_sends;
  pthread_mutex_unlock(&s->c.mu);
  return Py_BuildValue("KKKK", r, b, ts, is);
}

static PyMethodDef core_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))core_sendto, METH_FASTCALL,
     "sendto($self, data, addr, /)\n--\n\nSends or queues a datagram; the queue's size."},
    {"set_protocol", (PyCFunction)core_set_protocol, METH_O,
     "set_protocol($self, protocol, /)\n--\n\nWho gets the datagrams."},
    {"reading", (PyCFunction)core_reading, METH_O,
     "reading($self, on, /)\n--\n\nStarts or stops reading."},
    {"counts", (PyCFunction)core_counts, METH_NOARGS,
     "counts($self, /)\n--\n\n(task recvfroms, batches, task sends, sendto() sends)."},
    {NULL}};

static PyTypeObject core_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "treadle._core.DatagramCore",
    .tp_base = &corebase_type, /* dealloc, the methods both cores have */
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The C core of treadle.EventLoop's datagram transport (internal).",
    .tp_methods = core_methods,
    .tp_init = (initproc)core_init,
    .tp_new = PyType_GenericNew,
};

int pyt_datagram_init(PyObject *m) {
  struct { PyObject **s; const char *v; } strs[] = {
      {&str_datagram_received, "datagram_received"}, {&str_error_received, "error_received"},
      {&str_write_event, "_write_event"}, {&str_callback_error, "_callback_error"}};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
    if ((*strs[i].s = PyUnicode_InternFromString(strs[i].v)) == NULL)
      return -1;
  PyObject *socket = PyImport_ImportModule("socket");
  if (socket == NULL)
    return -1;
  gaierror = PyObject_GetAttrString(socket, "gaierror");
  Py_DECREF(socket);
  if (gaierror == NULL || PyType_Ready(&core_type) < 0)
    return -1;
  return PyModule_AddObjectRef(m, "DatagramCore", (PyObject *)&core_type);
}
