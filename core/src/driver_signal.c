/* The signal driver (ARCHITECTURE.md "Signal driver"; tokio signal/unix.rs).
 *
 * Process-wide: one handler per signal, installed by the first runtime
 * that listens for it and put back by the last. The handler counts the
 * delivery and, for every runtime that listens for signals, raises that
 * runtime's `pending` flag and writes its driver's unpark eventfd (both
 * async-signal-safe). Each runtime thus gets its own wakeup: a shared pipe
 * would not do, as the first runtime to drain it would take the edge away
 * from the others. The parked driver then compares each signal's count
 * with the last it dispatched and wakes that signal's listeners; a
 * listener is READY when the count moved past the one it saw last.
 *
 * A runtime leaves the handler's table at shutdown and waits until no
 * handler runs before its eventfd may close. A handler that was a function
 * before treadle's is called after it: the program's own handling goes on
 * while treadle listens. A new listener puts treadle's handler back in
 * front when the program replaced it meanwhile (reassert). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include "internal.h"

#define MAX_SIGNAL 64

#define MAX_RUNTIMES 128

static struct {
  pthread_mutex_t mu;
  unsigned refs[MAX_SIGNAL + 1]; /* runtimes listening; guarded by mu */
  struct sigaction old[MAX_SIGNAL + 1]; /* written before install */
  _Atomic uint64_t count[MAX_SIGNAL + 1];
  /* Runtimes the handler wakes; written under mu, read by the handler. */
  _Atomic(treadle__signal_t *) runtimes[MAX_RUNTIMES];
  _Atomic int in_handler;       /* handlers running now */
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* A listener: treadle_signal_t's private layout. */
typedef struct __attribute__((__may_alias__)) listener_s {
  treadle__list_t node;      /* on sig->waiters[signum] while waiting,
                                else zeroed, so that the listener may be
                                moved (copied into a task) before its
                                first poll; guarded by mu */
  treadle_waker_t *waker;    /* guarded by mu */
  treadle_handle_t *h;       /* holds a reference; NULL once dropped */
  uint64_t seen;             /* deliveries seen; owner only */
  int signum;
} listener_t;

_Static_assert(sizeof(listener_t) <= sizeof(treadle_signal_t),
               "treadle_signal_t too small");

static void on_signal(int signum, siginfo_t *info, void *uctx) {
  int saved = errno;
  /* seq_cst: the closer waits for this count to be 0 after uninstalling. */
  atomic_fetch_add_explicit(&g.in_handler, 1, memory_order_seq_cst);
  if (signum > 0 && signum <= MAX_SIGNAL) {
    /* seq_cst: the count is visible before the byte that announces it. */
    atomic_fetch_add_explicit(&g.count[signum], 1, memory_order_seq_cst);
    for (int i = 0; i < MAX_RUNTIMES; i++) {
      /* seq_cst: a runtime that leaves the table after this load waits
       * for in_handler to drop before its eventfd closes. */
      treadle__signal_t *sig =
          atomic_load_explicit(&g.runtimes[i], memory_order_seq_cst);
      if (sig == NULL)
        continue;
      /* seq_cst: the flag is up before the wakeup that announces it. */
      atomic_store_explicit(&sig->pending, 1, memory_order_seq_cst);
      treadle__eventfd_add(sig->wake_fd);
    }
    const struct sigaction *old = &g.old[signum];
    if (old->sa_flags & SA_SIGINFO) {
      if (old->sa_sigaction != NULL)
        old->sa_sigaction(signum, info, uctx);
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN &&
               old->sa_handler != NULL) {
      old->sa_handler(signum);
    }
  }
  /* seq_cst: see above. */
  atomic_fetch_sub_explicit(&g.in_handler, 1, memory_order_seq_cst);
  errno = saved;
}

static void listener_unlink(listener_t *l) {
  if (l->node.next != NULL)
    treadle__list_unlink(&l->node);
  l->node.next = l->node.prev = NULL;
}

treadle_err_t treadle_signal_check(int signum) {
  switch (signum) {
  case SIGKILL:
  case SIGSTOP:
  case SIGSEGV:
  case SIGBUS:
  case SIGILL:
  case SIGFPE:
    return TREADLE_EINVAL;
  default:
    return signum > 0 && signum <= MAX_SIGNAL && signum < NSIG
               ? 0
               : TREADLE_EINVAL;
  }
}

/* The names of the standard signals, the one table the bindings use. */
#define NAME(sig) [sig] = #sig
static const char *const signal_names[32] = {
    NAME(SIGHUP),  NAME(SIGINT),    NAME(SIGQUIT),  NAME(SIGILL),
    NAME(SIGTRAP), NAME(SIGABRT),   NAME(SIGBUS),   NAME(SIGFPE),
    NAME(SIGKILL), NAME(SIGUSR1),   NAME(SIGSEGV),  NAME(SIGUSR2),
    NAME(SIGPIPE), NAME(SIGALRM),   NAME(SIGTERM),  NAME(SIGSTKFLT),
    NAME(SIGCHLD), NAME(SIGCONT),   NAME(SIGSTOP),  NAME(SIGTSTP),
    NAME(SIGTTIN), NAME(SIGTTOU),   NAME(SIGURG),   NAME(SIGXCPU),
    NAME(SIGXFSZ), NAME(SIGVTALRM), NAME(SIGPROF),  NAME(SIGWINCH),
    NAME(SIGIO),   NAME(SIGPWR),    NAME(SIGSYS)};
#undef NAME

const char *treadle_signal_name(int signum) {
  return signum > 0 && signum < 32 ? signal_names[signum] : NULL;
}

int treadle_signal_from_name(const char *name) {
  if (name == NULL)
    return TREADLE_EINVAL;
  for (int signum = 1; signum < 32; signum++) {
    const char *n = signal_names[signum];
    if (n != NULL && (strcmp(n, name) == 0 || strcmp(n + 3, name) == 0))
      return treadle_signal_check(signum) == 0 ? signum : TREADLE_EINVAL;
  }
  return TREADLE_EINVAL;
}

/* Under g.mu: puts this runtime in the handler's table. */
static treadle_err_t join_table(treadle__signal_t *sig, int wake_fd) {
  if (sig->slot >= 0)
    return 0;
  for (int i = 0; i < MAX_RUNTIMES; i++) {
    if (atomic_load_explicit(&g.runtimes[i], memory_order_relaxed) == NULL) {
      sig->wake_fd = wake_fd;
      sig->slot = i;
      /* seq_cst: publishes wake_fd to the handler. */
      atomic_store_explicit(&g.runtimes[i], sig, memory_order_seq_cst);
      return 0;
    }
  }
  return TREADLE_EBUSY; /* MAX_RUNTIMES runtimes listen for signals */
}

/* Under g.mu: takes it out again, once no handler can be using it. */
static void leave_table(treadle__signal_t *sig) {
  if (sig->slot < 0)
    return;
  atomic_store_explicit(&g.runtimes[sig->slot], NULL, memory_order_seq_cst);
  sig->slot = -1;
  /* seq_cst: a handler that loaded this runtime is counted here. */
  while (atomic_load_explicit(&g.in_handler, memory_order_seq_cst) != 0)
    sched_yield();
}

/* Under g.mu: installs treadle's handler for the first listener. */
static treadle_err_t install(int signum) {
  if (g.refs[signum]++ != 0)
    return 0;
  struct sigaction sa = {.sa_sigaction = on_signal,
                         .sa_flags = SA_SIGINFO | SA_RESTART};
  sigemptyset(&sa.sa_mask);
  struct sigaction old;
  if (sigaction(signum, NULL, &old) < 0) {
    g.refs[signum]--;
    return -errno;
  }
  g.old[signum] = old; /* written before the handler can run */
  if (sigaction(signum, &sa, NULL) < 0) {
    g.refs[signum]--;
    return -errno;
  }
  return 0;
}

static bool ours(const struct sigaction *sa) {
  return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == on_signal;
}

/* Under g.mu, with treadle listening for signum: when the program has put
 * a handler of its own in since (Python's signal.signal does), puts
 * treadle's back in front of it, chaining to the new one. */
static treadle_err_t reassert(int signum) {
  struct sigaction cur;
  if (sigaction(signum, NULL, &cur) < 0)
    return -errno;
  if (ours(&cur))
    return 0;
  /* seq_cst: a handler still running from before the replacement reads
   * g.old; wait for it before g.old changes (it counts itself first
   * thing, the same window leave_table accepts). */
  while (atomic_load_explicit(&g.in_handler, memory_order_seq_cst) != 0)
    sched_yield();
  g.old[signum] = cur;
  struct sigaction sa = {.sa_sigaction = on_signal,
                         .sa_flags = SA_SIGINFO | SA_RESTART};
  sigemptyset(&sa.sa_mask);
  return sigaction(signum, &sa, NULL) < 0 ? -errno : 0;
}

/* Under g.mu: puts the old handler back after the last listener, unless
 * somebody replaced treadle's since. */
static void uninstall(int signum) {
  if (--g.refs[signum] != 0)
    return;
  struct sigaction cur;
  if (sigaction(signum, NULL, &cur) == 0 && ours(&cur))
    sigaction(signum, &g.old[signum], NULL);
}

void treadle__signal_init(treadle__signal_t *sig) {
  treadle__os_mutex_init(&sig->mu);
  for (int i = 0; i <= MAX_SIGNAL; i++)
    treadle__list_init(&sig->waiters[i]);
  sig->slot = -1;
  sig->wake_fd = -1;
  atomic_init(&sig->pending, 0);
}

void treadle__signal_destroy(treadle__signal_t *sig) {
  treadle__os_mutex_destroy(&sig->mu);
}

/* Takes the listeners waiting on `list` off it and wakes them (after the
 * lock: a wake may run a task's code). */
static void wake_list(treadle__signal_t *sig, treadle__list_t *list) {
  treadle_waker_t *wakers[32];
  for (;;) {
    int n = 0;
    treadle__os_mutex_lock(&sig->mu);
    while (!treadle__list_empty(list) && n < 32) {
      listener_t *l = treadle__container_of(list->next, listener_t, node);
      listener_unlink(l);
      if (l->waker != NULL)
        wakers[n++] = l->waker;
      l->waker = NULL;
    }
    bool more = !treadle__list_empty(list);
    treadle__os_mutex_unlock(&sig->mu);
    for (int i = 0; i < n; i++)
      treadle_wake(wakers[i]);
    if (!more)
      return;
  }
}

void treadle__signal_process(treadle__signal_t *sig) {
  /* Relaxed: a hint; the exchange below decides. */
  if (atomic_load_explicit(&sig->pending, memory_order_relaxed) == 0)
    return;
  /* seq_cst: pairs with the handler's store; counts are read after. */
  atomic_exchange_explicit(&sig->pending, 0, memory_order_seq_cst);
  for (int s = 1; s <= MAX_SIGNAL; s++) {
    treadle__os_mutex_lock(&sig->mu);
    bool fire = false;
    if (sig->listening & (UINT64_C(1) << (s - 1))) {
      /* seq_cst: pairs with the handler's increment. */
      uint64_t c = atomic_load_explicit(&g.count[s], memory_order_seq_cst);
      fire = c != sig->seen[s];
      sig->seen[s] = c;
    }
    treadle__os_mutex_unlock(&sig->mu);
    if (fire)
      wake_list(sig, &sig->waiters[s]);
  }
}

void treadle__signal_shutdown(treadle__signal_t *sig) {
  pthread_mutex_lock(&g.mu);
  treadle__os_mutex_lock(&sig->mu);
  sig->shut = true;
  for (int s = 1; s <= MAX_SIGNAL; s++)
    if (sig->listening & (UINT64_C(1) << (s - 1)))
      uninstall(s);
  sig->listening = 0;
  leave_table(sig);
  treadle__os_mutex_unlock(&sig->mu);
  pthread_mutex_unlock(&g.mu);
  for (int s = 1; s <= MAX_SIGNAL; s++)
    wake_list(sig, &sig->waiters[s]);
}

/* The process reaper's way in (reaper.c): joins the handler's table with
 * `wake_fd`, as a runtime's driver does, and installs the handler for
 * `signum`; treadle__signal_shutdown takes both back. No listener waits on
 * `sig`: the owner polls wake_fd and looks for itself. */
treadle_err_t treadle__signal_attach(treadle__signal_t *sig, int wake_fd,
                                     int signum) {
  if (treadle_signal_check(signum) != 0)
    return TREADLE_EINVAL;
  pthread_mutex_lock(&g.mu);
  treadle__os_mutex_lock(&sig->mu);
  uint64_t bit = UINT64_C(1) << (signum - 1);
  treadle_err_t err = 0;
  if (sig->shut) {
    err = TREADLE_ESHUTDOWN;
  } else if (!(sig->listening & bit)) {
    err = join_table(sig, wake_fd);
    if (err == 0)
      err = install(signum);
    if (err == 0)
      sig->listening |= bit;
  }
  if (err == 0)
    err = reassert(signum);
  treadle__os_mutex_unlock(&sig->mu);
  pthread_mutex_unlock(&g.mu);
  return err;
}

treadle_err_t treadle_signal_init(treadle_signal_t *s, treadle_handle_t *h,
                                  int signum) {
  listener_t *l = (listener_t *)s;
  if (l == NULL)
    return TREADLE_EINVAL;
  memset(l, 0, sizeof *l);
  if (h == NULL || treadle_signal_check(signum) != 0)
    return TREADLE_EINVAL;
  if (treadle__forked(h))
    return TREADLE_EFORKED;
  if (!h->driver.has_io)
    return TREADLE_ENOIO;
  treadle__signal_t *sig = &h->driver.signal;
  treadle_err_t err = 0;
  pthread_mutex_lock(&g.mu);
  treadle__os_mutex_lock(&sig->mu);
  uint64_t bit = UINT64_C(1) << (signum - 1);
  if (sig->shut) {
    err = TREADLE_ESHUTDOWN;
  } else if (!(sig->listening & bit)) {
    err = join_table(sig, h->driver.io.evfd);
    if (err == 0)
      err = install(signum);
    if (err == 0) {
      sig->listening |= bit;
      /* seq_cst: pairs with the handler's increment. */
      sig->seen[signum] =
          atomic_load_explicit(&g.count[signum], memory_order_seq_cst);
    }
  }
  if (err == 0)
    err = reassert(signum);
  if (err == 0) {
    /* seq_cst: deliveries from now on count for this listener. */
    l->seen = atomic_load_explicit(&g.count[signum], memory_order_seq_cst);
  }
  treadle__os_mutex_unlock(&sig->mu);
  pthread_mutex_unlock(&g.mu);
  if (err != 0)
    return err;
  l->h = treadle_handle_ref(h);
  l->signum = signum;
  return 0;
}

treadle_poll_t treadle_signal_poll(treadle_signal_t *s, treadle_cx_t *cx,
                                   treadle_err_t *err) {
  listener_t *l = (listener_t *)s;
  if (l == NULL || l->h == NULL) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  if (!treadle_cx_poll_proceed(cx))
    return TREADLE_PENDING;
  treadle__signal_t *sig = &l->h->driver.signal;
  treadle_waker_t *mine = treadle_cx_waker(cx), *old = NULL;
  treadle__os_mutex_lock(&sig->mu);
  /* seq_cst: pairs with the handler's increment. */
  uint64_t c = atomic_load_explicit(&g.count[l->signum], memory_order_seq_cst);
  bool ready = c != l->seen || sig->shut;
  if (ready) {
    listener_unlink(l);
    old = l->waker;
    l->waker = NULL;
    l->seen = c;
    *err = sig->shut ? TREADLE_ESHUTDOWN : 0;
  } else {
    if (l->node.next == NULL)
      treadle__list_push_back(&sig->waiters[l->signum], &l->node);
    if (l->waker != mine) {
      old = l->waker;
      l->waker = treadle_waker_clone(mine);
    }
  }
  treadle__os_mutex_unlock(&sig->mu);
  treadle_waker_drop(old);
  if (!ready) {
    treadle__task_waits_on(cx->task, TREADLE__WAIT_SIGNAL);
    return TREADLE_PENDING;
  }
  return TREADLE_READY;
}

void treadle_signal_drop(treadle_signal_t *s) {
  listener_t *l = (listener_t *)s;
  if (l == NULL || l->h == NULL)
    return;
  treadle__signal_t *sig = &l->h->driver.signal;
  treadle__os_mutex_lock(&sig->mu);
  listener_unlink(l);
  treadle_waker_t *w = l->waker;
  l->waker = NULL;
  treadle__os_mutex_unlock(&sig->mu);
  treadle_waker_drop(w);
  treadle_handle_unref(l->h);
  l->h = NULL;
}
