/* An LD_PRELOAD shim for the tests only (TESTING.md "System-call faults"):
 * makes chosen system calls fail or come up short, as the environment
 * variable TREADLE_FAULT says, so that the fault tests (test-fault.c) can
 * check that treadle answers each with its documented error or a retry,
 * never a hang, a crash or a lost byte.
 *
 *   TREADLE_FAULT = entry[,entry...]
 *   entry         = call ":" action [":" when]...
 *   call          = read | write | accept4 | connect | so_error |
 *                   epoll_ctl | epoll_wait | pidfd_open
 *   action        = an errno name (EINTR, EAGAIN, ECONNRESET, EMFILE, ...)
 *                 | short=N        (read or write: move at most N bytes)
 *   when          = every=N (every N-th call) | nth=N (the N-th call only)
 *                 | after=N (every call after the N-th) | times=M (at most
 *                 M faults); no `when`: every call
 *
 * e.g. TREADLE_FAULT="read:EINTR:every=3,write:short=1,accept4:EMFILE:nth=1"
 *
 * `read` stands for read, recv, recvfrom and recvmsg; `write` for write,
 * send, sendto and sendmsg; `epoll_wait` for epoll_wait, epoll_pwait and
 * epoll_pwait2; `pidfd_open` for pidfd_open and syscall(SYS_pidfd_open);
 * `so_error` is getsockopt(SO_ERROR) answering the errno: how a
 * non-blocking connect's failure (ETIMEDOUT, ECONNREFUSED) arrives.
 * read and write faults spare fds 0 to 2, so the test's own output gets
 * out; but for EINTR, which may come anywhere, they hit only sockets and
 * pipes (an eventfd is never short and says EAGAIN only when full).
 * epoll_ctl faults hit EPOLL_CTL_ADD only.
 *
 * Each fault is what the kernel could have said: EINTR moves nothing (on
 * connect the connection goes on, as a signal leaves it); EAGAIN moves
 * nothing and re-arms the fd's epoll registration (EPOLL_CTL_MOD with the
 * same event), so a spurious "not ready" is followed by a fresh edge, as
 * after a spurious wakeup; other errors are returned without the call.
 * treadle_fault_injected() says how many faults were made, so a test can
 * check that its fault happened at all. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

enum { C_READ, C_WRITE, C_ACCEPT4, C_CONNECT, C_SO_ERROR, C_EPOLL_CTL,
       C_EPOLL_WAIT, C_PIDFD_OPEN, C_COUNT };
static const char *const call_names[C_COUNT] = {
    "read", "write", "accept4", "connect", "so_error", "epoll_ctl",
    "epoll_wait", "pidfd_open"};

#define MAX_ENTRIES 16
typedef struct {
  int call;
  int err;          /* the errno to fail with, or 0 */
  size_t short_len; /* with err 0: move at most this much */
  long every, nth, after, times;
  _Atomic long calls, faults; /* relaxed: counters */
} entry_t;

static entry_t entries[MAX_ENTRIES];
static int n_entries;
static _Atomic unsigned long injected;

/* Exported for the tests: how many faults were made so far. */
unsigned long treadle_fault_injected(void) {
  /* Relaxed: read after the work that made them was joined. */
  return atomic_load_explicit(&injected, memory_order_relaxed);
}

static const struct {
  const char *name;
  int value;
} errnos[] = {
    {"EINTR", EINTR},         {"EAGAIN", EAGAIN},
    {"ENOMEM", ENOMEM},       {"EMFILE", EMFILE},
    {"ENFILE", ENFILE},       {"ENOBUFS", ENOBUFS},
    {"ECONNABORTED", ECONNABORTED}, {"ECONNRESET", ECONNRESET},
    {"ECONNREFUSED", ECONNREFUSED}, {"ETIMEDOUT", ETIMEDOUT},
    {"ENOSYS", ENOSYS},       {"EPIPE", EPIPE},
    {"EIO", EIO},             {"EPERM", EPERM},
};

static void die(const char *what, const char *spec) {
  fprintf(stderr, "syscall_shim: bad TREADLE_FAULT (%s): %s\n", what, spec);
  abort();
}

static void parse_entry(char *s) {
  if (n_entries == MAX_ENTRIES)
    die("too many entries", s);
  entry_t *e = &entries[n_entries++];
  e->call = -1;
  char *save = NULL;
  char *call = strtok_r(s, ":", &save);
  for (int c = 0; call != NULL && c < C_COUNT; c++)
    if (strcmp(call, call_names[c]) == 0)
      e->call = c;
  if (e->call < 0)
    die("unknown call", call ? call : "");
  char *action = strtok_r(NULL, ":", &save);
  if (action == NULL)
    die("no action", call);
  if (strncmp(action, "short=", 6) == 0) {
    e->short_len = strtoul(action + 6, NULL, 10);
    if (e->short_len == 0 || (e->call != C_READ && e->call != C_WRITE))
      die("short= needs read or write and N >= 1", action);
  } else {
    for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; i++)
      if (strcmp(action, errnos[i].name) == 0)
        e->err = errnos[i].value;
    if (e->err == 0)
      die("unknown errno", action);
  }
  for (char *w; (w = strtok_r(NULL, ":", &save)) != NULL;) {
    char *eq = strchr(w, '=');
    if (eq == NULL)
      die("when needs =", w);
    long v = strtol(eq + 1, NULL, 10);
    if (v < 1)
      die("when needs N >= 1", w);
    if (strncmp(w, "every=", 6) == 0)
      e->every = v;
    else if (strncmp(w, "nth=", 4) == 0)
      e->nth = v;
    else if (strncmp(w, "after=", 6) == 0)
      e->after = v;
    else if (strncmp(w, "times=", 6) == 0)
      e->times = v;
    else
      die("unknown when", w);
  }
}

__attribute__((constructor)) static void shim_init(void) {
  const char *spec = getenv("TREADLE_FAULT");
  if (spec == NULL || *spec == '\0')
    return;
  char *copy = strdup(spec);
  char *save = NULL;
  for (char *s = strtok_r(copy, ",", &save); s != NULL;
       s = strtok_r(NULL, ",", &save))
    parse_entry(s);
  free(copy);
}

/* True for a socket or a pipe: the fds whose reads and writes can come
 * up short or say EAGAIN. An eventfd's cannot (a short write is EINVAL,
 * EAGAIN means a full counter), nor a file's. */
static bool is_stream_fd(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && (S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode));
}

/* The entry that fires for this call of `call` on `fd` (-1: no fd to
 * check), or NULL. Only the calls an entry may hit count towards its
 * every=, nth= and after=. */
static entry_t *fault_for(int call, int fd) {
  for (int i = 0; i < n_entries; i++) {
    entry_t *e = &entries[i];
    if (e->call != call || (fd >= 0 && e->err != EINTR && !is_stream_fd(fd)))
      continue;
    /* Relaxed: a call counter; which thread's call is the n-th is the
     * luck of the schedule, as a real fault's timing is. */
    long k = atomic_fetch_add_explicit(&e->calls, 1, memory_order_relaxed) + 1;
    bool hit = (e->every == 0 || k % e->every == 0) &&
               (e->nth == 0 || k == e->nth) && k > e->after;
    if (!hit)
      continue;
    if (e->times != 0 &&
        atomic_fetch_add_explicit(&e->faults, 1, memory_order_relaxed) >=
            e->times)
      continue;
    atomic_fetch_add_explicit(&injected, 1, memory_order_relaxed);
    return e;
  }
  return NULL;
}

/* real_NAME: the next definition of NAME (libc's, or a sanitizer's),
 * looked up once. Relaxed: dlsym answers the same on every thread. */
#define REAL(ret, name, ...)                                                   \
  static _Atomic(void *) real_ptr_##name;                                      \
  void *real_p_##name =                                                        \
      atomic_load_explicit(&real_ptr_##name, memory_order_relaxed);            \
  if (real_p_##name == NULL) {                                                 \
    real_p_##name = dlsym(RTLD_NEXT, #name);                                   \
    atomic_store_explicit(&real_ptr_##name, real_p_##name,                     \
                          memory_order_relaxed);                               \
  }                                                                            \
  ret (*real_##name)(__VA_ARGS__) = (ret(*)(__VA_ARGS__))real_p_##name

/* --------------------------------------------------------- epoll rearm */

/* Each fd's epoll registration, so that an injected EAGAIN can re-arm
 * it; guarded by regs_mu. */
#define MAX_FD 4096
static struct {
  int epfd; /* 0 = none; epfd + 1 */
  struct epoll_event ev;
} regs[MAX_FD];
static pthread_mutex_t regs_mu = PTHREAD_MUTEX_INITIALIZER;

static void rearm(int fd) {
  REAL(int, epoll_ctl, int, int, int, struct epoll_event *);
  if (fd < 0 || fd >= MAX_FD)
    return;
  pthread_mutex_lock(&regs_mu);
  int ep = regs[fd].epfd - 1;
  struct epoll_event ev = regs[fd].ev;
  pthread_mutex_unlock(&regs_mu);
  if (ep >= 0)
    real_epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static void set_reg(int fd, int epfd, const struct epoll_event *ev) {
  if (fd < 0 || fd >= MAX_FD)
    return;
  pthread_mutex_lock(&regs_mu);
  regs[fd].epfd = epfd + 1;
  if (ev != NULL)
    regs[fd].ev = *ev;
  pthread_mutex_unlock(&regs_mu);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
  REAL(int, epoll_ctl, int, int, int, struct epoll_event *);
  if (op == EPOLL_CTL_ADD) {
    entry_t *e = fault_for(C_EPOLL_CTL, -1);
    if (e != NULL) {
      errno = e->err;
      return -1;
    }
  }
  int r = real_epoll_ctl(epfd, op, fd, ev);
  if (r == 0)
    set_reg(fd, op == EPOLL_CTL_DEL ? -1 : epfd, op == EPOLL_CTL_DEL ? NULL : ev);
  return r;
}

int close(int fd) {
  REAL(int, close, int);
  set_reg(fd, -1, NULL);
  return real_close(fd);
}

/* ------------------------------------------------------- read and write */

/* For a read or write of fd: false (do the call, *len cut for short=), or
 * true: fail with errno set. EINTR may hit any fd past 2. */
static bool io_fault(int call, int fd, size_t *len) {
  if (fd <= 2)
    return false;
  entry_t *e = fault_for(call, fd);
  if (e == NULL)
    return false;

  if (e->err == 0) {
    if (*len > e->short_len)
      *len = e->short_len;
    return false;
  }
  if (e->err == EAGAIN)
    rearm(fd);
  errno = e->err;
  return true;
}

/* Cuts an iovec array to at most `len` bytes in `out` (room for cnt). */
static int cut_iov(const struct iovec *iov, int cnt, size_t len,
                   struct iovec *out) {
  int n = 0;
  for (int i = 0; i < cnt && len > 0; i++) {
    out[n] = iov[i];
    if (out[n].iov_len > len)
      out[n].iov_len = len;
    len -= out[n].iov_len;
    n++;
  }
  return n;
}

static size_t iov_total(const struct iovec *iov, size_t cnt) {
  size_t t = 0;
  for (size_t i = 0; i < cnt; i++)
    t += iov[i].iov_len;
  return t;
}

ssize_t read(int fd, void *buf, size_t len) {
  REAL(ssize_t, read, int, void *, size_t);
  if (io_fault(C_READ, fd, &len))
    return -1;
  return real_read(fd, buf, len);
}

ssize_t recv(int fd, void *buf, size_t len, int flags) {
  REAL(ssize_t, recv, int, void *, size_t, int);
  if (io_fault(C_READ, fd, &len))
    return -1;
  return real_recv(fd, buf, len, flags);
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags,
                 struct sockaddr *addr, socklen_t *alen) {
  REAL(ssize_t, recvfrom, int, void *, size_t, int, struct sockaddr *,
       socklen_t *);
  if (io_fault(C_READ, fd, &len))
    return -1;
  return real_recvfrom(fd, buf, len, flags, addr, alen);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  REAL(ssize_t, recvmsg, int, struct msghdr *, int);
  size_t total = iov_total(msg->msg_iov, msg->msg_iovlen);
  size_t len = total;
  if (io_fault(C_READ, fd, &len))
    return -1;
  if (len == total || msg->msg_iovlen > 64)
    return real_recvmsg(fd, msg, flags);
  struct iovec cut[64];
  struct msghdr m = *msg;
  m.msg_iov = cut;
  m.msg_iovlen = (size_t)cut_iov(msg->msg_iov, (int)msg->msg_iovlen, len, cut);
  ssize_t r = real_recvmsg(fd, &m, flags);
  msg->msg_controllen = m.msg_controllen;
  msg->msg_flags = m.msg_flags;
  msg->msg_namelen = m.msg_namelen;
  return r;
}

ssize_t write(int fd, const void *buf, size_t len) {
  REAL(ssize_t, write, int, const void *, size_t);
  if (io_fault(C_WRITE, fd, &len))
    return -1;
  return real_write(fd, buf, len);
}

ssize_t send(int fd, const void *buf, size_t len, int flags) {
  REAL(ssize_t, send, int, const void *, size_t, int);
  if (io_fault(C_WRITE, fd, &len))
    return -1;
  return real_send(fd, buf, len, flags);
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags,
               const struct sockaddr *addr, socklen_t alen) {
  REAL(ssize_t, sendto, int, const void *, size_t, int,
       const struct sockaddr *, socklen_t);
  if (io_fault(C_WRITE, fd, &len))
    return -1;
  return real_sendto(fd, buf, len, flags, addr, alen);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  REAL(ssize_t, sendmsg, int, const struct msghdr *, int);
  size_t total = iov_total(msg->msg_iov, msg->msg_iovlen);
  size_t len = total;
  if (io_fault(C_WRITE, fd, &len))
    return -1;
  if (len == total || msg->msg_iovlen > 64)
    return real_sendmsg(fd, msg, flags);
  struct iovec cut[64];
  struct msghdr m = *msg;
  m.msg_iov = cut;
  m.msg_iovlen = (size_t)cut_iov(msg->msg_iov, (int)msg->msg_iovlen, len, cut);
  return real_sendmsg(fd, &m, flags);
}

/* ------------------------------------------------- accept and connect */

int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags) {
  REAL(int, accept4, int, struct sockaddr *, socklen_t *, int);
  entry_t *e = fault_for(C_ACCEPT4, -1);
  if (e != NULL) {
    if (e->err == EAGAIN)
      rearm(fd);
    errno = e->err;
    return -1;
  }
  return real_accept4(fd, addr, alen, flags);
}

int connect(int fd, const struct sockaddr *addr, socklen_t alen) {
  REAL(int, connect, int, const struct sockaddr *, socklen_t);
  entry_t *e = fault_for(C_CONNECT, -1);
  if (e == NULL)
    return real_connect(fd, addr, alen);
  if (e->err == EINTR) { /* the connection goes on without the caller */
    int r = real_connect(fd, addr, alen);
    if (r < 0 && errno != EINPROGRESS)
      return r;
  }
  errno = e->err;
  return -1;
}

int getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
  REAL(int, getsockopt, int, int, int, void *, socklen_t *);
  int r = real_getsockopt(fd, level, name, val, len);
  if (r == 0 && level == SOL_SOCKET && name == SO_ERROR &&
      *len >= sizeof(int)) {
    entry_t *e = fault_for(C_SO_ERROR, -1);
    if (e != NULL)
      *(int *)val = e->err;
  }
  return r;
}

/* ----------------------------------------------------------- epoll wait */

static bool wait_fault(void) {
  entry_t *e = fault_for(C_EPOLL_WAIT, -1);
  if (e == NULL)
    return false;
  errno = e->err;
  return true;
}

int epoll_wait(int epfd, struct epoll_event *ev, int max, int ms) {
  REAL(int, epoll_wait, int, struct epoll_event *, int, int);
  return wait_fault() ? -1 : real_epoll_wait(epfd, ev, max, ms);
}

int epoll_pwait(int epfd, struct epoll_event *ev, int max, int ms,
                const sigset_t *mask) {
  REAL(int, epoll_pwait, int, struct epoll_event *, int, int,
       const sigset_t *);
  return wait_fault() ? -1 : real_epoll_pwait(epfd, ev, max, ms, mask);
}

int epoll_pwait2(int epfd, struct epoll_event *ev, int max,
                 const struct timespec *ts, const sigset_t *mask) {
  REAL(int, epoll_pwait2, int, struct epoll_event *, int,
       const struct timespec *, const sigset_t *);
  return wait_fault() ? -1 : real_epoll_pwait2(epfd, ev, max, ts, mask);
}

/* ----------------------------------------------------------- pidfd_open */

int pidfd_open(pid_t pid, unsigned int flags) {
  REAL(long, syscall, long, ...);
  entry_t *e = fault_for(C_PIDFD_OPEN, -1);
  if (e != NULL) {
    errno = e->err;
    return -1;
  }
  return (int)real_syscall(SYS_pidfd_open, pid, flags);
}

/* treadle calls pidfd_open through syscall(2) (older glibc has no
 * wrapper); every other number passes straight through. Six long
 * arguments: what the x86-64 and arm64 calling conventions pass. */
long syscall(long number, ...) {
  REAL(long, syscall, long, ...);
  va_list ap;
  va_start(ap, number);
  long a[6];
  for (int i = 0; i < 6; i++)
    a[i] = va_arg(ap, long);
  va_end(ap);
  if (number == SYS_pidfd_open) {
    entry_t *e = fault_for(C_PIDFD_OPEN, -1);
    if (e != NULL) {
      errno = e->err;
      return -1;
    }
  }
  return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
