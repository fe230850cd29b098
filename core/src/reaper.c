/* The process-wide reaper (ARCHITECTURE.md "Child processes"): reaps the
 * children that no runtime can wait for any more (process.c, case 4 of
 * its opening comment).
 *
 * 1. treadle__reaper_adopt puts a child on the list and wakes the reaper
 *    thread through its eventfd, or starts the thread (detached) when none
 *    runs. The list, whether a thread runs, and the eventfd change only
 *    under the lock.
 * 2. The thread reaps what has exited, then sleeps in poll() on its
 *    eventfd and on the pidfd of every child that has one. A child without
 *    a pidfd (the SIGCHLD path) needs SIGCHLD: the thread then joins the
 *    signal handler's table with its eventfd (treadle__signal_attach), as
 *    a runtime's driver does, and reaps once more before it sleeps, so
 *    that an exit just before the attach is not missed.
 * 3. Once the list is empty, the thread leaves the handler's table, closes
 *    the eventfd and exits, all under the lock: an idle process has no
 *    reaper thread and no extra fd, and the next adopt starts a new one.
 * The thread blocks every signal but SIGCHLD. A fork handler resets the
 * state in the child process, which has no reaper thread and none of the
 * parent's children: the list's children are left there, as is the
 * parent's runtime in a forked child. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "process.h"

static struct {
  pthread_mutex_t mu;
  treadle__list_t orphans; /* children to reap; guarded by mu */
  bool running;            /* a reaper thread owns wake_fd; guarded by mu */
  int wake_fd;             /* its eventfd, or -1; guarded by mu */
  treadle__signal_t *sig;  /* its SIGCHLD registration, or NULL; the
                              thread's own (under mu) */
} r = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .orphans = {.prev = &r.orphans, .next = &r.orphans},
    .wake_fd = -1,
};

/* Step 2's SIGCHLD registration. On failure the thread looks every 10 ms
 * instead. */
static bool attach_sigchld(void) {
  treadle__signal_t *sig = treadle__calloc(1, sizeof *sig);
  if (sig == NULL)
    return false;
  treadle__signal_init(sig);
  if (treadle__signal_attach(sig, r.wake_fd, SIGCHLD) != 0) {
    treadle__signal_shutdown(sig);
    treadle__signal_destroy(sig);
    treadle__free(sig);
    return false;
  }
  r.sig = sig;
  return true;
}

static void detach_sigchld(void) {
  if (r.sig == NULL)
    return;
  /* Leaves the table and waits out a handler that may still write
   * wake_fd, before the caller closes it. */
  treadle__signal_shutdown(r.sig);
  treadle__signal_destroy(r.sig);
  treadle__free(r.sig);
  r.sig = NULL;
}

static void *reaper_main(void *arg) {
  (void)arg;
  sigset_t mask;
  sigfillset(&mask);
  sigdelset(&mask, SIGCHLD);
  pthread_sigmask(SIG_SETMASK, &mask, NULL);
  struct pollfd *fds = NULL;
  size_t cap = 0;
  pthread_mutex_lock(&r.mu);
  for (;;) {
    treadle__list_t reaped;
    treadle__list_init(&reaped);
    size_t pidfds = 0;
    bool need_signal = false;
    for (treadle__list_t *n = r.orphans.next, *next; n != &r.orphans;
         n = next) {
      next = n->next;
      treadle_child_t *c = treadle__container_of(n, treadle_child_t, orphan);
      if (treadle__child_reap_nowait(c)) {
        treadle__list_unlink(n);
        treadle__list_push_back(&reaped, n);
      } else if (treadle__child_pidfd(c) >= 0) {
        pidfds++;
      } else {
        need_signal = true;
      }
    }
    if (!treadle__list_empty(&reaped)) {
      /* Destroying takes runtime locks (the pidfd's driver): not under
       * ours. Then look again: more may have come meanwhile. */
      pthread_mutex_unlock(&r.mu);
      treadle__list_t *n;
      while ((n = treadle__list_pop_front(&reaped)) != NULL)
        treadle__child_destroy(
            treadle__container_of(n, treadle_child_t, orphan));
      pthread_mutex_lock(&r.mu);
      continue;
    }
    if (treadle__list_empty(&r.orphans))
      break;
    int timeout = -1;
    if (need_signal && r.sig == NULL) {
      if (attach_sigchld())
        continue; /* reap once more: step 2 */
      timeout = 10;
    }
    if (pidfds + 1 > cap) {
      struct pollfd *bigger = treadle__malloc((pidfds + 1) * sizeof *bigger);
      if (bigger != NULL) {
        treadle__free(fds);
        fds = bigger;
        cap = pidfds + 1;
      }
    }
    size_t n = 0;
    if (fds != NULL) {
      fds[n++] = (struct pollfd){.fd = r.wake_fd, .events = POLLIN};
      for (treadle__list_t *o = r.orphans.next; o != &r.orphans && n < cap;
           o = o->next) {
        int fd = treadle__child_pidfd(
            treadle__container_of(o, treadle_child_t, orphan));
        if (fd >= 0)
          fds[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
      }
    }
    if (n < pidfds + 1)
      timeout = 10; /* out of memory for the poll set: look now and then */
    int wake_fd = r.wake_fd;
    pthread_mutex_unlock(&r.mu);
    /* The fds stay open: only this thread reaps (and so closes) the
     * pidfds on the list, and only it closes wake_fd. */
    if (n > 0)
      poll(fds, n, timeout);
    else
      poll(NULL, 0, timeout);
    uint64_t count;
    ssize_t got = read(wake_fd, &count, sizeof count); /* EAGAIN: unset */
    (void)got;
    pthread_mutex_lock(&r.mu);
  }
  detach_sigchld();
  close(r.wake_fd);
  r.wake_fd = -1;
  r.running = false;
  pthread_mutex_unlock(&r.mu);
  treadle__free(fds);
  return NULL;
}

static void before_fork(void) { pthread_mutex_lock(&r.mu); }

static void after_fork_parent(void) { pthread_mutex_unlock(&r.mu); }

/* The forked child has no reaper thread and none of the list's children.
 * wake_fd and a SIGCHLD registration stay as they are (open, in the
 * handler's table), as a runtime built before the fork stays. */
static void after_fork_child(void) {
  pthread_mutex_init(&r.mu, NULL);
  treadle__list_init(&r.orphans);
  r.running = false;
  r.wake_fd = -1;
  r.sig = NULL;
}

static void watch_forks(void) {
  pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void treadle__reaper_adopt(treadle_child_t *c) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, watch_forks);
  pthread_mutex_lock(&r.mu);
  treadle__list_push_back(&r.orphans, &c->orphan);
  if (r.running) {
    treadle__eventfd_add(r.wake_fd);
  } else {
    /* Step 1. Without an fd or a thread the child waits on the list for
     * the next adopt. */
    r.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    treadle__os_thread_t th;
    if (r.wake_fd >= 0 && treadle__os_thread_start(&th, reaper_main, NULL,
                                                   "treadle-reaper") == 0) {
      pthread_detach(th);
      r.running = true;
    } else if (r.wake_fd >= 0) {
      close(r.wake_fd);
      r.wake_fd = -1;
    }
  }
  pthread_mutex_unlock(&r.mu);
}
