/* What process.c (commands, children) and reaper.c (the process-wide
 * reaper) share: the child's layout and the calls between them
 * (ARCHITECTURE.md "Child processes"). Nothing here is public API. */
#ifndef TREADLE_PROCESS_H
#define TREADLE_PROCESS_H

#include <sys/types.h>

#include "io.h"

/* Where a child stands; changes under its mutex. */
enum {
  TREADLE__CHILD_RUNNING = 0, /* not reaped (it may have exited) */
  TREADLE__CHILD_REAPED = 1,  /* its status is in `status` */
  TREADLE__CHILD_LOST = 2     /* reaped elsewhere (ECHILD): `reap_err` */
};

struct treadle_child_s {
  /* Constant after spawn. */
  treadle_handle_t *h; /* holds a reference */
  pid_t pid;
  bool kill_on_drop;
  bool has_pidfd; /* waited for through `pidfd`, else through SIGCHLD */

  /* The pidfd, registered with h's I/O driver; closed once reaped. */
  treadle__source_t pidfd;

  /* The SIGCHLD path's listener: set up by the first wait poll, used by
   * one waiting task at a time (the poller owns it). */
  treadle_signal_t sigchld;
  bool sigchld_init;

  /* Pipe ends not yet taken; the owner's. */
  treadle_async_fd_t *stdio[3];

  /* Guarded by mu: reaping, and signals sent while it may not be reaped. */
  treadle__os_mutex_t mu;
  int state;                    /* TREADLE__CHILD_* */
  treadle_exit_status_t status; /* once REAPED */
  treadle_err_t reap_err;       /* once LOST */

  /* On the reaper's list once adopted; guarded by the reaper's lock. */
  treadle__list_t orphan;
};

/* Reaps `c` if it has exited (waitid with WNOHANG, under c->mu). True once
 * it is reaped or lost: nothing is left to wait for. */
bool treadle__child_reap_nowait(treadle_child_t *c);
/* The child's pidfd while it is open, else -1 (then SIGCHLD must tell the
 * reaper when to look). */
int treadle__child_pidfd(treadle_child_t *c);
/* Frees a child that nobody uses any more: its pidfd, listener, pipes,
 * handle reference and memory. Sends nothing and reaps nothing. */
void treadle__child_destroy(treadle_child_t *c);

/* Takes over a child that is not reaped and whose runtime can no longer
 * wait for it: the process-wide reaper thread (started on demand, gone
 * once it has nothing left to wait for) reaps and destroys it. Any
 * thread. */
void treadle__reaper_adopt(treadle_child_t *c);

#endif /* TREADLE_PROCESS_H */
