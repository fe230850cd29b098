/* Unix signals as futures: every listener sees each delivery once, a
 * second wait needs a second delivery, signals do not wake each other's
 * listeners, two runtimes share a delivery, the handler that was there
 * before is chained while treadle listens and put back afterwards, bad
 * signal numbers are refused, and cancelled listeners release everything
 * (the harness checks the fds). Signals are sent only once the listeners
 * are registered, so none ever hits a default disposition. */
#define _GNU_SOURCE
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* The disposition of `signum` now. */
static struct sigaction current_action(int signum) {
  struct sigaction sa;
  assert_int_equal(sigaction(signum, NULL, &sa), 0);
  return sa;
}

static bool is_default(int signum) {
  struct sigaction sa = current_action(signum);
  return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
}

/* ---------------------------------------------- several waiters, twice */

typedef struct {
  _Atomic int registered, got1, got2;
} counts_t;

/* Waits for two deliveries of `signum`. After the first, the next poll
 * must be PENDING: one delivery is one READY. */
typedef struct {
  int signum;
  counts_t *counts;
  treadle_signal_t sig;
  bool init;
  int seen;
} waiter_t;

static treadle_poll_t waiter_poll(treadle_cx_t *cx, void *st) {
  waiter_t *w = st;
  treadle_err_t err;
  if (!w->init) {
    assert_int_equal(
        treadle_signal_init(&w->sig, treadle_cx_handle(cx), w->signum), 0);
    w->init = true;
    atomic_fetch_add(&w->counts->registered, 1);
  }
  while (w->seen < 2) {
    if (treadle_signal_poll(&w->sig, cx, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    w->seen++;
    if (w->seen == 1) {
      /* The second delivery is sent only once every waiter counted the
       * first, so it cannot have come yet. */
      assert_int_equal(treadle_signal_poll(&w->sig, cx, &err), TREADLE_PENDING);
      atomic_fetch_add(&w->counts->got1, 1);
      return TREADLE_PENDING;
    }
    atomic_fetch_add(&w->counts->got2, 1);
  }
  return TREADLE_READY;
}

static void waiter_drop(void *st) {
  waiter_t *w = st;
  if (w->init) {
    treadle_signal_drop(&w->sig);
    treadle_signal_drop(&w->sig); /* idempotent */
  }
}

static const treadle_task_vtable_t waiter_vt = {.poll = waiter_poll,
                                                .drop = waiter_drop};

enum { HOW_RAISE, HOW_KILL, HOW_THREAD };
#define WAITERS 4

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* kill(getpid()): the kernel picks the main thread, which may be blocked
 * in block_on. ThreadSanitizer runs a handler only when the thread next
 * enters a function it intercepts, and the parker's raw futex wait is not
 * one, so under TSan the sender raises on its own thread instead (other
 * builds cover process-directed delivery). */
static void send_signal(int signum, int how) {
#ifdef UNDER_TSAN
  if (how == HOW_KILL)
    how = HOW_RAISE;
#endif
  if (how == HOW_RAISE)
    assert_int_equal(raise(signum), 0);
  else
    assert_int_equal(kill(getpid(), signum), 0);
}

/* Spawns the waiters, sends (unless a thread does) when every one is
 * registered, again when every one counted the first, then joins them. */
typedef struct {
  int signum, how;
  counts_t *counts;
  int step;
  unsigned joined;
  treadle_join_t *joins[WAITERS];
  test_pause_t pause;
} ctl_t;

static treadle_poll_t ctl_poll(treadle_cx_t *cx, void *st) {
  ctl_t *c = st;
  switch (c->step) {
  case 0:
    for (int i = 0; i < WAITERS; i++) {
      waiter_t w = {.signum = c->signum, .counts = c->counts};
      assert_int_equal(treadle_spawn(treadle_cx_handle(cx), &waiter_vt, &w,
                                     sizeof w, &c->joins[i]),
                       0);
    }
    c->step = 1;
    /* fall through */
  case 1:
    while (atomic_load(&c->counts->registered) < WAITERS)
      if (!test_pause_done(&c->pause, cx))
        return TREADLE_PENDING;
    if (c->how != HOW_THREAD)
      send_signal(c->signum, c->how);
    c->step = 2;
    /* fall through */
  case 2:
    while (atomic_load(&c->counts->got1) < WAITERS)
      if (!test_pause_done(&c->pause, cx))
        return TREADLE_PENDING;
    if (c->how != HOW_THREAD) {
      /* (A sender thread sends the second as soon as got1 is full.) */
      assert_int_equal(atomic_load(&c->counts->got2), 0);
      send_signal(c->signum, c->how);
    }
    c->step = 3;
    /* fall through */
  case 3:
    while (c->joined < WAITERS) {
      treadle_err_t err;
      if (treadle_join_poll(c->joins[c->joined], cx, &err, NULL) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      treadle_join_detach(c->joins[c->joined]);
      c->joins[c->joined++] = NULL;
    }
  }
  assert_int_equal(atomic_load(&c->counts->got2), WAITERS);
  return TREADLE_READY;
}

static void ctl_drop(void *st) {
  ctl_t *c = st;
  treadle_sleep_drop(&c->pause.sleep);
  for (int i = 0; i < WAITERS; i++)
    treadle_join_detach(c->joins[i]);
}

static const treadle_task_vtable_t ctl_vt = {.poll = ctl_poll,
                                             .drop = ctl_drop};

typedef struct {
  int signum;
  counts_t *counts;
} sender_t;

static void *sender_thread(void *arg) {
  sender_t *s = arg;
  while (atomic_load(&s->counts->registered) < WAITERS)
    test_sleep_ms(1);
  send_signal(s->signum, HOW_KILL);
  while (atomic_load(&s->counts->got1) < WAITERS)
    test_sleep_ms(1);
  send_signal(s->signum, HOW_KILL);
  return NULL;
}

static void waiters_see_each_delivery(void **state) {
  (void)state;
  const struct {
    int signum, how;
  } cases[] = {{SIGUSR1, HOW_RAISE}, {SIGUSR2, HOW_KILL},
               {SIGHUP, HOW_THREAD}, {SIGUSR1, HOW_THREAD},
               {SIGUSR2, HOW_RAISE}, {SIGHUP, HOW_KILL}};
  treadle_runtime_t *rt = test_runtime();
  for (size_t i = 0; i < TEST_ARRAY_LEN(cases); i++) {
    counts_t counts = {0};
    ctl_t c = {
        .signum = cases[i].signum, .how = cases[i].how, .counts = &counts};
    sender_t s = {.signum = cases[i].signum, .counts = &counts};
    pthread_t th;
    if (cases[i].how == HOW_THREAD)
      pthread_create(&th, NULL, sender_thread, &s);
    assert_int_equal(RUN(rt, &ctl_vt, c), 0);
    if (cases[i].how == HOW_THREAD)
      pthread_join(th, NULL);
    assert_int_equal(atomic_load(&counts.got1), WAITERS);
    assert_int_equal(atomic_load(&counts.got2), WAITERS);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_true(is_default(SIGUSR1));
  assert_true(is_default(SIGUSR2));
  assert_true(is_default(SIGHUP));
}

/* ------------------------------------------------ one signal, not another */

typedef struct {
  treadle_signal_t s1, s2;
  int step;
  bool init;
} pair_sig_t;

static treadle_poll_t pair_sig_poll(treadle_cx_t *cx, void *st) {
  pair_sig_t *p = st;
  treadle_err_t err;
  if (!p->init) {
    assert_int_equal(
        treadle_signal_init(&p->s1, treadle_cx_handle(cx), SIGUSR1), 0);
    assert_int_equal(
        treadle_signal_init(&p->s2, treadle_cx_handle(cx), SIGUSR2), 0);
    p->init = true;
    /* Sent after init and before the first poll: it counts. */
    assert_int_equal(raise(SIGUSR2), 0);
  }
  if (p->step == 0) {
    if (treadle_signal_poll(&p->s2, cx, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_int_equal(treadle_signal_poll(&p->s1, cx, &err), TREADLE_PENDING);
    assert_int_equal(raise(SIGUSR1), 0);
    p->step = 1;
  }
  if (treadle_signal_poll(&p->s1, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  assert_int_equal(err, 0);
  assert_int_equal(treadle_signal_poll(&p->s2, cx, &err), TREADLE_PENDING);
  return TREADLE_READY;
}

static void pair_sig_drop(void *st) {
  pair_sig_t *p = st;
  if (p->init) {
    treadle_signal_drop(&p->s1);
    treadle_signal_drop(&p->s2);
  }
}

static void signals_do_not_wake_each_other(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  static const treadle_task_vtable_t vt = {.poll = pair_sig_poll,
                                           .drop = pair_sig_drop};
  for (int rep = 0; rep < 3; rep++) {
    pair_sig_t p = {0};
    assert_int_equal(RUN(rt, &vt, p), 0);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------ bad input */

static void bad_signums_are_refused(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  const int bad[] = {0,       -1,      65,     1000,   INT32_MIN, SIGKILL,
                     SIGSTOP, SIGSEGV, SIGBUS, SIGILL, SIGFPE};
  treadle_signal_t s;
  struct sigaction segv_before = current_action(SIGSEGV);
  for (size_t i = 0; i < TEST_ARRAY_LEN(bad); i++) {
    if (treadle_signal_init(&s, h, bad[i]) != TREADLE_EINVAL)
      fail_msg("signal %d was not refused", bad[i]);
  }
  assert_int_equal(treadle_signal_init(NULL, h, SIGUSR1), TREADLE_EINVAL);
  assert_int_equal(treadle_signal_init(&s, NULL, SIGUSR1), TREADLE_EINVAL);
  treadle_signal_drop(NULL);
  /* A refused listener installed nothing. */
  struct sigaction segv_after = current_action(SIGSEGV);
  assert_ptr_equal((void *)segv_after.sa_handler,
                   (void *)segv_before.sa_handler);
  /* Init and drop with no poll at all, from outside a task. */
  assert_int_equal(treadle_signal_init(&s, h, SIGUSR1), 0);
  treadle_signal_drop(&s);
  treadle_signal_drop(&s);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_true(is_default(SIGUSR1));
}

static void runtime_without_io_refuses(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime_without_io();
  treadle_signal_t s;
  assert_int_equal(treadle_signal_init(&s, treadle_runtime_handle(rt), SIGUSR1),
                   TREADLE_ENOIO);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_true(is_default(SIGUSR1));
}

static void init_after_shutdown_refuses(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_handle_ref(treadle_runtime_handle(rt));
  assert_int_equal(treadle_runtime_free(rt), 0);
  treadle_signal_t s;
  assert_int_equal(treadle_signal_init(&s, h, SIGUSR1), TREADLE_ESHUTDOWN);
  treadle_handle_unref(h);
  assert_true(is_default(SIGUSR1));
}

/* ------------------------------------------- the previous handler */

static _Atomic int plain_count, info_count, info_signo;

static void plain_handler(int signum) {
  (void)signum;
  atomic_fetch_add(&plain_count, 1);
}

static void info_handler(int signum, siginfo_t *si, void *uc) {
  (void)signum;
  (void)uc;
  atomic_store(&info_signo, si != NULL ? si->si_signo : -1);
  atomic_fetch_add(&info_count, 1);
}

/* Listens, checks treadle's handler is in place, raises, waits for it. */
typedef struct {
  int signum;
  void *previous; /* the handler that must not be the current one now */
  treadle_signal_t sig;
  bool init;
} self_raise_t;

static treadle_poll_t self_raise_poll(treadle_cx_t *cx, void *st) {
  self_raise_t *r = st;
  treadle_err_t err;
  if (!r->init) {
    assert_int_equal(
        treadle_signal_init(&r->sig, treadle_cx_handle(cx), r->signum), 0);
    r->init = true;
    struct sigaction sa = current_action(r->signum);
    assert_true((void *)sa.sa_handler != r->previous);
    assert_true(sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN);
    assert_int_equal(raise(r->signum), 0);
  }
  if (treadle_signal_poll(&r->sig, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  assert_int_equal(err, 0);
  return TREADLE_READY;
}

static void self_raise_drop(void *st) {
  self_raise_t *r = st;
  if (r->init)
    treadle_signal_drop(&r->sig);
}

static const treadle_task_vtable_t self_raise_vt = {.poll = self_raise_poll,
                                                    .drop = self_raise_drop};

static void previous_handler_chained_and_restored(void **state) {
  (void)state;
  atomic_store(&plain_count, 0);
  atomic_store(&info_count, 0);
  atomic_store(&info_signo, 0);
  struct sigaction plain = {.sa_handler = plain_handler,
                            .sa_flags = SA_RESTART};
  sigemptyset(&plain.sa_mask);
  struct sigaction info = {.sa_sigaction = info_handler,
                           .sa_flags = SA_RESTART | SA_SIGINFO};
  sigemptyset(&info.sa_mask);
  struct sigaction ign = {.sa_handler = SIG_IGN};
  sigemptyset(&ign.sa_mask);
  struct sigaction old_usr2, old_hup, old_usr1;
  assert_int_equal(sigaction(SIGUSR2, &plain, &old_usr2), 0);
  assert_int_equal(sigaction(SIGHUP, &info, &old_hup), 0);
  assert_int_equal(sigaction(SIGUSR1, &ign, &old_usr1), 0);

  for (int rep = 0; rep < 2; rep++) {
    treadle_runtime_t *rt = test_runtime();
    self_raise_t r1 = {.signum = SIGUSR2, .previous = (void *)plain_handler};
    assert_int_equal(RUN(rt, &self_raise_vt, r1), 0);
    /* raise() runs the handler before it returns: the plain handler was
     * chained from treadle's. */
    assert_int_equal(atomic_load(&plain_count), 2 * rep + 1);
    self_raise_t r2 = {.signum = SIGHUP, .previous = (void *)info_handler};
    assert_int_equal(RUN(rt, &self_raise_vt, r2), 0);
    assert_int_equal(atomic_load(&info_count), 2 * rep + 1);
    assert_int_equal(atomic_load(&info_signo), SIGHUP);
    /* An ignored signal: treadle still sees it; nothing else runs. */
    self_raise_t r3 = {.signum = SIGUSR1, .previous = (void *)SIG_IGN};
    assert_int_equal(RUN(rt, &self_raise_vt, r3), 0);
    assert_int_equal(treadle_runtime_free(rt), 0);

    /* Shut down: the previous handlers are back, and run alone. */
    struct sigaction sa = current_action(SIGUSR2);
    assert_false(sa.sa_flags & SA_SIGINFO);
    assert_ptr_equal((void *)sa.sa_handler, (void *)plain_handler);
    assert_int_equal(raise(SIGUSR2), 0);
    assert_int_equal(atomic_load(&plain_count), 2 * rep + 2);
    sa = current_action(SIGHUP);
    assert_true(sa.sa_flags & SA_SIGINFO);
    assert_ptr_equal((void *)sa.sa_sigaction, (void *)info_handler);
    assert_int_equal(raise(SIGHUP), 0);
    assert_int_equal(atomic_load(&info_count), 2 * rep + 2);
    sa = current_action(SIGUSR1);
    assert_false(sa.sa_flags & SA_SIGINFO);
    assert_ptr_equal((void *)sa.sa_handler, (void *)SIG_IGN);
    assert_int_equal(raise(SIGUSR1), 0); /* ignored: nothing happens */
  }
  assert_int_equal(sigaction(SIGUSR2, &old_usr2, NULL), 0);
  assert_int_equal(sigaction(SIGHUP, &old_hup, NULL), 0);
  assert_int_equal(sigaction(SIGUSR1, &old_usr1, NULL), 0);
}

/* A handler the program installs while treadle listens displaces
 * treadle's; the next listener puts treadle's back in front, chaining to
 * the program's (what Python's signal.signal does to treadle). */
static void displaced_handler_is_reasserted(void **state) {
  (void)state;
  atomic_store(&plain_count, 0);
  struct sigaction plain = {.sa_handler = plain_handler, .sa_flags = SA_RESTART};
  sigemptyset(&plain.sa_mask);
  struct sigaction old_usr2;
  assert_int_equal(sigaction(SIGUSR2, NULL, &old_usr2), 0);
  treadle_runtime_t *rt = test_runtime();
  self_raise_t r1 = {.signum = SIGUSR2, .previous = (void *)old_usr2.sa_handler};
  assert_int_equal(RUN(rt, &self_raise_vt, r1), 0);
  /* The program takes SIGUSR2 over: treadle's handler is gone. */
  assert_int_equal(sigaction(SIGUSR2, &plain, NULL), 0);
  self_raise_t r2 = {.signum = SIGUSR2, .previous = (void *)plain_handler};
  assert_int_equal(RUN(rt, &self_raise_vt, r2), 0); /* treadle saw it */
  assert_int_equal(atomic_load(&plain_count), 1);   /* and chained */
  assert_int_equal(treadle_runtime_free(rt), 0);
  /* Shut down: the program's handler is back, alone. */
  struct sigaction sa = current_action(SIGUSR2);
  assert_ptr_equal((void *)sa.sa_handler, (void *)plain_handler);
  assert_int_equal(sigaction(SIGUSR2, &old_usr2, NULL), 0);
}

/* ----------------------------------------------------- two runtimes */

typedef struct {
  int signum;
  _Atomic int *registered;
  treadle_signal_t sig;
  bool init;
} once_t;

static treadle_poll_t once_poll(treadle_cx_t *cx, void *st) {
  once_t *o = st;
  treadle_err_t err;
  if (!o->init) {
    assert_int_equal(
        treadle_signal_init(&o->sig, treadle_cx_handle(cx), o->signum), 0);
    o->init = true;
    atomic_fetch_add(o->registered, 1);
  }
  if (treadle_signal_poll(&o->sig, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void once_drop(void *st) {
  once_t *o = st;
  if (o->init)
    treadle_signal_drop(&o->sig);
}

static const treadle_task_vtable_t once_vt = {.poll = once_poll,
                                              .drop = once_drop};

typedef struct {
  treadle_runtime_t *rt;
  int signum;
  _Atomic int *registered;
  treadle_err_t result;
} block_thread_t;

static void *block_thread(void *arg) {
  block_thread_t *b = arg;
  once_t o = {.signum = b->signum, .registered = b->registered};
  b->result = RUN(b->rt, &once_vt, o);
  return NULL;
}

static void two_runtimes_share_a_delivery(void **state) {
  (void)state;
  treadle_runtime_t *rts[2] = {test_runtime(), test_runtime()};
  _Atomic int registered = 0;
  block_thread_t bt[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    bt[i] = (block_thread_t){.rt = rts[i],
                             .signum = SIGUSR1,
                             .registered = &registered,
                             .result = 1};
    pthread_create(&th[i], NULL, block_thread, &bt[i]);
  }
  while (atomic_load(&registered) < 2)
    test_sleep_ms(1);
  assert_int_equal(kill(getpid(), SIGUSR1), 0); /* once */
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(bt[i].result, 0);
  }
  /* The first runtime goes; the second still listens and still sees. */
  assert_int_equal(treadle_runtime_free(rts[0]), 0);
  atomic_store(&registered, 0);
  bt[1].result = 1;
  pthread_create(&th[1], NULL, block_thread, &bt[1]);
  while (atomic_load(&registered) < 1)
    test_sleep_ms(1);
  assert_false(is_default(SIGUSR1));
  assert_int_equal(kill(getpid(), SIGUSR1), 0);
  pthread_join(th[1], NULL);
  assert_int_equal(bt[1].result, 0);
  assert_int_equal(treadle_runtime_free(rts[1]), 0);
  /* The last one gone: the default disposition is back. */
  assert_true(is_default(SIGUSR1));
}

/* -------------------------------------------------- cancelled listeners */

static _Atomic int drops;

typedef struct {
  int signum;
  _Atomic int *parked;
  treadle_signal_t sig;
  bool init;
} parked_t;

static treadle_poll_t parked_poll(treadle_cx_t *cx, void *st) {
  parked_t *p = st;
  treadle_err_t err;
  if (!p->init) {
    assert_int_equal(
        treadle_signal_init(&p->sig, treadle_cx_handle(cx), p->signum), 0);
    p->init = true;
  }
  if (treadle_signal_poll(&p->sig, cx, &err) == TREADLE_PENDING) {
    atomic_store(p->parked, 1);
    return TREADLE_PENDING;
  }
  fail_msg("signal %d came (%s)", p->signum, treadle_err_name(err));
  return TREADLE_READY;
}

static void parked_drop(void *st) {
  parked_t *p = st;
  if (p->init)
    treadle_signal_drop(&p->sig);
  atomic_fetch_add(&drops, 1);
}

static const treadle_task_vtable_t parked_vt = {.poll = parked_poll,
                                                .drop = parked_drop};

static void cancelled_listeners_release_everything(void **state) {
  (void)state;
  atomic_store(&drops, 0);
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  enum { N = 6 };
  const int sigs[N] = {SIGUSR1, SIGUSR1, SIGUSR2, SIGHUP, SIGTERM, SIGINT};
  _Atomic int parked[N] = {0};
  treadle_join_t *joins[N];
  for (int i = 0; i < N; i++) {
    parked_t p = {.signum = sigs[i], .parked = &parked[i]};
    assert_int_equal(treadle_spawn(h, &parked_vt, &p, sizeof p, &joins[i]), 0);
  }
  test_until_flags_t u = {.flags = parked, .n = N};
  assert_int_equal(RUN(rt, &test_until_flags_vt, u), 0);
  treadle_join_abort(joins[0]);
  /* A current_thread runtime drops it when its scheduler next runs. */
  test_until_flags_t again = {.flags = parked, .n = N};
  assert_int_equal(RUN(rt, &test_until_flags_vt, again), 0);
  assert_int_equal(treadle_join_wait(joins[0], NULL), TREADLE_ECANCELED);
  assert_int_equal(atomic_load(&drops), 1);
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_int_equal(atomic_load(&drops), N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(treadle_join_wait(joins[i], NULL),
                     i == 0 ? TREADLE_EJOINED : TREADLE_ECANCELED);
    treadle_join_detach(joins[i]);
    assert_true(is_default(sigs[i]));
  }
}

/* A listener whose task never drops it: the runtime's shutdown takes it
 * out, and polling it from a new runtime's task says ESHUTDOWN. */
typedef struct {
  treadle_signal_t *sig;
} poll_once_t;

static treadle_poll_t poll_once_poll(treadle_cx_t *cx, void *st) {
  poll_once_t *p = st;
  treadle_err_t err = 1;
  if (treadle_signal_poll(p->sig, cx, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static const treadle_task_vtable_t poll_once_vt = {.poll = poll_once_poll};

static void listener_outliving_runtime_says_shutdown(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_signal_t sig;
  assert_int_equal(
      treadle_signal_init(&sig, treadle_runtime_handle(rt), SIGUSR2), 0);
  assert_false(is_default(SIGUSR2));
  assert_int_equal(treadle_runtime_free(rt), 0);
  assert_true(is_default(SIGUSR2));
  treadle_runtime_t *rt2 = test_runtime();
  poll_once_t p = {.sig = &sig};
  assert_int_equal(RUN(rt2, &poll_once_vt, p), TREADLE_ESHUTDOWN);
  treadle_signal_drop(&sig);
  assert_int_equal(treadle_runtime_free(rt2), 0);
}

/* The name table the bindings use (issue 13): names both ways, and only
 * signals a task may wait for come back from a name. */
static void signal_names_and_checks(void **state) {
  (void)state;
  assert_string_equal(treadle_signal_name(SIGTERM), "SIGTERM");
  assert_string_equal(treadle_signal_name(SIGWINCH), "SIGWINCH");
  assert_string_equal(treadle_signal_name(SIGKILL), "SIGKILL");
  assert_null(treadle_signal_name(0));
  assert_null(treadle_signal_name(-3));
  assert_null(treadle_signal_name(SIGRTMIN));
  assert_int_equal(treadle_signal_from_name("SIGTERM"), SIGTERM);
  assert_int_equal(treadle_signal_from_name("TERM"), SIGTERM);
  assert_int_equal(treadle_signal_from_name("SIGUSR2"), SIGUSR2);
  assert_int_equal(treadle_signal_from_name("SIGKILL"), TREADLE_EINVAL);
  assert_int_equal(treadle_signal_from_name("SEGV"), TREADLE_EINVAL);
  assert_int_equal(treadle_signal_from_name("sigterm"), TREADLE_EINVAL);
  assert_int_equal(treadle_signal_from_name(""), TREADLE_EINVAL);
  assert_int_equal(treadle_signal_from_name("SIG"), TREADLE_EINVAL);
  assert_int_equal(treadle_signal_from_name(NULL), TREADLE_EINVAL);
  for (int s = 1; s < 32; s++) {
    const char *name = treadle_signal_name(s);
    if (name != NULL)
      assert_int_equal(treadle_signal_from_name(name),
                       treadle_signal_check(s) == 0 ? s : TREADLE_EINVAL);
  }
  assert_int_equal(treadle_signal_check(SIGINT), 0);
  assert_int_equal(treadle_signal_check(SIGSTOP), TREADLE_EINVAL);
  assert_int_equal(treadle_signal_check(0), TREADLE_EINVAL);
  assert_int_equal(treadle_signal_check(65), TREADLE_EINVAL);
}

static const struct CMUnitTest tests[] = {
    TEST(signal_names_and_checks),
    RT_TEST(waiters_see_each_delivery),
    RT_TEST(signals_do_not_wake_each_other),
    TEST(bad_signums_are_refused),
    RT_TEST(runtime_without_io_refuses),
    TEST(init_after_shutdown_refuses),
    RT_TEST(previous_handler_chained_and_restored),
    RT_TEST(displaced_handler_is_reasserted),
    RT_TEST(two_runtimes_share_a_delivery),
    RT_TEST(cancelled_listeners_release_everything),
    RT_TEST(listener_outliving_runtime_says_shutdown),
};

TEST_MAIN(tests)
