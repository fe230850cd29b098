/* The blocking pool: plain functions on threads of their own, so that they
 * never block a worker (tokio blocking/pool.rs). Shared by both flavors.
 *
 * 1. A job is a task whose poll runs the function to completion once; its
 *    scheduler is the pool, so join handles, abort and output work as for
 *    any task. Its task vtable lives in its own state (it carries the
 *    caller's drop_output).
 * 2. spawn queues the job under `mu`; an idle thread is signalled, or a
 *    new thread starts while fewer than max_blocking_threads exist. At the
 *    cap, jobs wait in the queue.
 * 3. A thread runs queued jobs until there are none, then waits up to
 *    keep_alive for more and exits if none came (detaching itself).
 * 4. Shutdown: refuse new jobs, cancel the queued ones, wake every thread,
 *    wait up to the timeout for them to finish their current job, join
 *    those that did. Threads still busy are detached and left to exit on
 *    their own; they hold a reference to the pool, whose memory goes with
 *    the last reference. */
#include "internal.h"

typedef struct pool_thread_s {
  treadle__list_t node;   /* on pool->threads_list while joinable */
  treadle__os_thread_t th;
  treadle__blocking_t *pool;
  bool exited;            /* guarded by pool->mu */
  bool detached;          /* guarded by pool->mu: nobody will join it */
} pool_thread_t;

struct treadle__blocking_s {
  treadle__sched_t base;     /* the scheduler of job tasks */
  treadle__config_t cfg;     /* a copy: threads may outlive the handle */
  _Atomic uint64_t refs;     /* the handle's + one per live thread */
  treadle__os_mutex_t mu;
  treadle__os_cond_t work_cv; /* idle threads wait for jobs */
  treadle__os_cond_t exit_cv; /* shutdown waits for threads */
  treadle__task_t *head;     /* queued jobs; guarded by mu */
  treadle__task_t *tail;
  size_t queued;             /* guarded by mu */
  unsigned threads;          /* started, not exited; guarded by mu */
  unsigned idle;             /* of which waiting for work; guarded */
  unsigned signalled;        /* idle threads already signalled; guarded */
  bool shutdown;             /* guarded by mu */
  treadle__list_t threads_list; /* joinable threads; guarded by mu */
};

/* A job's state: this header, then the caller's state at JOB_HEADER. */
typedef struct job_s {
  treadle_task_vtable_t tvt; /* the task's vtable (step 1) */
  const treadle_blocking_vtable_t *bvt;
} job_t;

#define JOB_HEADER ((sizeof(job_t) + 15) & ~(size_t)15)

static void *job_state(job_t *j) { return (char *)j + JOB_HEADER; }

static treadle_poll_t job_poll(treadle_cx_t *cx, void *state) {
  job_t *j = state;
  void *value = NULL;
  treadle_err_t status = j->bvt->run(job_state(j), &value);
  treadle_cx_set_output(cx, status, value);
  return TREADLE_READY;
}

static void job_drop(void *state) {
  job_t *j = state;
  if (j->bvt->drop != NULL)
    j->bvt->drop(job_state(j));
}

static void pool_unref(treadle__blocking_t *b) {
  /* acq_rel: the last owner sees every thread's writes before free. */
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
    return;
  treadle__os_cond_destroy(&b->work_cv);
  treadle__os_cond_destroy(&b->exit_cv);
  treadle__os_mutex_destroy(&b->mu);
  treadle__free(b);
}

void treadle__blocking_unref(treadle__blocking_t *b) { pool_unref(b); }

/* Step 3. */
static void *pool_thread_main(void *arg) {
  pool_thread_t *pt = arg;
  treadle__blocking_t *b = pt->pool;
  const treadle__config_t *cfg = &b->cfg;
  /* The handle outlives this thread's jobs, not necessarily the thread:
   * after the last job only the pool (which this thread keeps) is used. */
  treadle__ctx.handle = b->base.handle;
  treadle__ctx.worker = -1;
  if (cfg->on_thread_start != NULL)
    cfg->on_thread_start(cfg->on_thread_start_ud);
  bool expired = false;
  treadle__os_mutex_lock(&b->mu);
  for (;;) {
    treadle__task_t *t = b->head;
    if (t != NULL) {
      b->head = t->next;
      if (b->head == NULL)
        b->tail = NULL;
      b->queued--;
      treadle__os_mutex_unlock(&b->mu);
      treadle__task_run(t);
      treadle__os_mutex_lock(&b->mu);
      continue;
    }
    if (b->shutdown)
      break;
    b->idle++;
    uint64_t keep_alive = cfg->keep_alive_ns;
    uint64_t deadline = keep_alive >= TREADLE_FOREVER - treadle__now()
                            ? TREADLE_FOREVER
                            : treadle__now() + keep_alive;
    bool woken = true;
    while (b->signalled == 0 && !b->shutdown && woken)
      woken = treadle__os_cond_wait_until(&b->work_cv, &b->mu, deadline);
    b->idle--;
    if (b->signalled > 0) {
      b->signalled--;
    } else if (!b->shutdown && b->head == NULL) {
      expired = true; /* keep-alive over, no work: exit */
      break;
    }
  }
  treadle__os_mutex_unlock(&b->mu);
  memset(&treadle__ctx, 0, sizeof treadle__ctx);
  if (cfg->on_thread_stop != NULL)
    cfg->on_thread_stop(cfg->on_thread_stop_ud);
  treadle__os_mutex_lock(&b->mu);
  b->threads--;
  pt->exited = true;
  bool free_record = false;
  if (expired && !pt->detached) {
    /* Nobody will join us: leave the joinable list and detach. */
    treadle__list_unlink(&pt->node);
    pthread_detach(pt->th);
    free_record = true;
  } else if (pt->detached) {
    free_record = true; /* shutdown gave up on us (step 4) */
  }
  treadle__os_cond_broadcast(&b->exit_cv);
  treadle__os_mutex_unlock(&b->mu);
  if (free_record)
    treadle__free(pt);
  pool_unref(b);
  return NULL;
}

/* Step 2, under mu: queue the job and find it a thread. */
static treadle_err_t enqueue_locked(treadle__blocking_t *b,
                                    treadle__task_t *t) {
  if (b->shutdown)
    return TREADLE_ESHUTDOWN;
  t->next = NULL;
  if (b->tail != NULL)
    b->tail->next = t;
  else
    b->head = t;
  b->tail = t;
  b->queued++;
  if (b->idle > b->signalled) {
    b->signalled++;
    treadle__os_cond_signal(&b->work_cv);
    return 0;
  }
  if (b->threads >= b->cfg.max_blocking_threads)
    return 0; /* at the cap: a busy thread will take it */
  pool_thread_t *pt = treadle__calloc(1, sizeof *pt);
  treadle_err_t err = pt == NULL ? TREADLE_ENOMEM : 0;
  if (err == 0) {
    pt->pool = b;
    /* Relaxed: a new reference made from the one the caller holds. */
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    err = treadle__os_thread_start(&pt->th, pool_thread_main, pt,
                                   b->cfg.thread_name);
    if (err != 0) {
      atomic_fetch_sub_explicit(&b->refs, 1, memory_order_relaxed);
      treadle__free(pt);
    } else {
      b->threads++;
      treadle__list_push_back(&b->threads_list, &pt->node);
    }
  }
  if (err != 0 && b->threads == 0) {
    /* No thread exists to run it: undo the push and fail the spawn. */
    b->tail = NULL;
    b->queued--;
    if (b->head == t) {
      b->head = NULL;
    } else {
      treadle__task_t *p = b->head;
      while (p->next != t)
        p = p->next;
      p->next = NULL;
      b->tail = p;
    }
    return err;
  }
  return 0;
}

static treadle_err_t pool_spawn(treadle__sched_t *s, treadle__task_t *t) {
  treadle__blocking_t *b = (treadle__blocking_t *)s;
  treadle__os_mutex_lock(&b->mu);
  treadle_err_t err = enqueue_locked(b, t);
  treadle__os_mutex_unlock(&b->mu);
  return err;
}

/* Jobs never return PENDING, so nothing wakes them after their one run;
 * a wake before it (a stray clone of its waker) queues it like a spawn. */
static void pool_schedule(treadle__sched_t *s, treadle__task_t *t,
                          bool yield) {
  (void)yield;
  if (pool_spawn(s, t) != 0)
    treadle__task_unref(t);
}

static bool pool_bind(treadle__sched_t *s, treadle__task_t *t) {
  (void)s;
  (void)t;
  return true; /* jobs never wait, so they are never bound */
}

static int pool_release(treadle__sched_t *s, treadle__task_t *t) {
  (void)s;
  (void)t;
  return 1; /* jobs are never on an owned list: drop the reference */
}

static const treadle__sched_vtable_t pool_vtable = {
    .spawn = pool_spawn,
    .bind = pool_bind,
    .schedule = pool_schedule,
    .release = pool_release,
};

treadle_err_t treadle__blocking_new(treadle_handle_t *h,
                                    treadle__blocking_t **out) {
  treadle__blocking_t *b = treadle__calloc(1, sizeof *b);
  if (b == NULL)
    return TREADLE_ENOMEM;
  b->base.vt = &pool_vtable;
  b->base.handle = h;
  b->cfg = h->cfg;
  atomic_init(&b->refs, 1);
  treadle__os_mutex_init(&b->mu);
  treadle__os_cond_init(&b->work_cv);
  treadle__os_cond_init(&b->exit_cv);
  treadle__list_init(&b->threads_list);
  *out = b;
  return 0;
}

bool treadle__blocking_shutdown(treadle__blocking_t *b, uint64_t timeout_ns) {
  uint64_t deadline = timeout_ns >= TREADLE_FOREVER - treadle__now()
                          ? TREADLE_FOREVER
                          : treadle__now() + timeout_ns;
  treadle__os_mutex_lock(&b->mu);
  b->shutdown = true;
  treadle__task_t *queued = b->head;
  b->head = b->tail = NULL;
  b->queued = 0;
  treadle__os_cond_broadcast(&b->work_cv);
  treadle__os_mutex_unlock(&b->mu);
  /* Cancel what never started (their join handles see ECANCELED). */
  while (queued != NULL) {
    treadle__task_t *next = queued->next;
    treadle__task_shutdown(queued);
    queued = next;
  }
  treadle__list_t joinable;
  treadle__list_init(&joinable);
  treadle__os_mutex_lock(&b->mu);
  while (b->threads > 0 &&
         treadle__os_cond_wait_until(&b->exit_cv, &b->mu, deadline))
    ;
  bool all_done = b->threads == 0;
  treadle__list_t *n;
  while ((n = treadle__list_pop_front(&b->threads_list)) != NULL) {
    pool_thread_t *pt = treadle__container_of(n, pool_thread_t, node);
    if (pt->exited) {
      treadle__list_push_back(&joinable, n);
    } else {
      pt->detached = true; /* still busy: it frees itself */
      pthread_detach(pt->th);
    }
  }
  treadle__os_mutex_unlock(&b->mu);
  while ((n = treadle__list_pop_front(&joinable)) != NULL) {
    pool_thread_t *pt = treadle__container_of(n, pool_thread_t, node);
    treadle__os_thread_join(pt->th);
    treadle__free(pt);
  }
  return all_done;
}

void treadle__blocking_metrics(treadle__blocking_t *b, uint64_t *threads,
                               uint64_t *idle, uint64_t *queued) {
  treadle__os_mutex_lock(&b->mu);
  *threads = b->threads;
  *idle = b->idle;
  *queued = b->queued;
  treadle__os_mutex_unlock(&b->mu);
}

treadle_err_t treadle_spawn_blocking(treadle_handle_t *h,
                                     const treadle_blocking_vtable_t *vt,
                                     const void *state, size_t state_size,
                                     treadle_join_t **join) {
  if (join != NULL)
    *join = NULL;
  if (h == NULL || vt == NULL || vt->run == NULL ||
      state_size > (UINT32_C(1) << 30))
    return TREADLE_EINVAL;
  if (treadle__forked(h))
    return TREADLE_EFORKED;
  static const treadle_task_vtable_t placeholder = {.poll = job_poll};
  treadle__blocking_t *b = h->blocking;
  treadle__task_t *t;
  treadle_err_t err = treadle__task_new(&b->base, &placeholder, NULL,
                                        JOB_HEADER + state_size,
                                        join != NULL, &t);
  if (err != 0)
    return err;
  job_t *j = treadle__task_state(t);
  j->tvt.poll = job_poll;
  j->tvt.drop = job_drop;
  j->tvt.drop_output = vt->drop_output;
  j->bvt = vt;
  if (state != NULL && state_size > 0)
    memcpy(job_state(j), state, state_size);
  t->vt = &j->tvt;
  err = pool_spawn(&b->base, t);
  if (err != 0) {
    treadle__task_discard(t);
    return err;
  }
  if (join != NULL)
    *join = (treadle_join_t *)t;
  return 0;
}
