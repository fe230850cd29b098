/* luaopen_treadle: the module, its runtimes and treadle.run (ARCHITECTURE.md
 * "Lua").
 *
 * current_thread: the runtime's one home is the caller's lua_State; tasks
 * are its coroutines and run while rt:block_on runs.
 * multi_thread: block_on(module) starts, on every worker k, a boot task
 * (pinned to k) that makes worker k's own lua_State, loads this module in
 * it and spawns that state's main task: require(module) returns a function,
 * called as main(k); the state's global `arg` is a copy of the caller's.
 * The run ends as a process does when its main thread returns:
 * 1. Worker 0's main returns, or any worker's main (or boot) raises: the
 *    first of these decides the outcome (worker 0's results or that
 *    error) and sets `stopping`. Another worker's main that returns ends
 *    nothing: that worker's other tasks go on.
 * 2. The decider spawns a stop task on every worker; on its worker's
 *    thread it cancels every task of that state (lt_home_stop, as abort:
 *    to-be-closed variables are closed), and tasks spawned from then on.
 * 3. A state whose last task is over says so (lt_home_stopped); the last
 *    one wakes block_on's root, which returns. Then the runtime is freed,
 *    worker 0's results are copied out (as channel values are) and the
 *    worker states are closed, when no thread runs them any more.
 *
 * While block_on waits, its root task (bindings/common's) also listens for
 * SIGINT where the runtime can: on a SIGINT that no task waits for, the
 * runtime shuts down and block_on raises "interrupted". */
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "ltreadle.h"

#define RUNTIME_MT "treadle.runtime"

int luaopen_treadle(lua_State *L);

typedef struct {
  treadle_runtime_t *rt;
  bool multi;
  int workers;
  uint64_t id;              /* unique in the process: names workers share */
  lhome_t **homes;          /* one per worker (current_thread: one) */
  /* multi_thread block_on, written by workers; guarded by mu: */
  pthread_mutex_t mu;
  bool stopping;            /* the outcome is decided (step 1) */
  int running;              /* states that still have tasks (step 3) */
  treadle_waker_t *root;
  char *error;              /* the deciding error's message, or NULL */
  int nresults;             /* worker 0's, in its registry */
  char *entry, *path, *cpath; /* for the worker states */
  void *arg;                  /* the caller's `arg` table, packed, or NULL */
} lrt_t;

/* -------------------------------------------------------- worker mains */

static treadle_poll_t stop_poll(treadle_cx_t *cx, void *state) {
  (void)cx;
  lt_home_stop(*(lhome_t **)state);
  return TREADLE_READY;
}

static const treadle_task_vtable_t stop_vt = {.poll = stop_poll};

/* Step 3: one state less; the last wakes block_on's root. */
static void state_stopped(lrt_t *r) {
  treadle_waker_t *root = NULL;
  pthread_mutex_lock(&r->mu);
  if (--r->running == 0) {
    root = r->root;
    r->root = NULL;
  }
  pthread_mutex_unlock(&r->mu);
  if (root != NULL)
    treadle_wake(root);
}

void lt_home_stopped(lhome_t *home) { state_stopped(home->rt); }

int lt_home_workers(lhome_t *home) { return ((lrt_t *)home->rt)->workers; }

uint64_t lt_home_runtime_id(lhome_t *home) { return ((lrt_t *)home->rt)->id; }

/* Step 1: true when this call decides the outcome: `err` (taken; NULL for
 * worker 0's return) and worker 0's result count. Then step 2. */
static bool decide(lrt_t *r, char *err, int nresults) {
  pthread_mutex_lock(&r->mu);
  bool first = !r->stopping;
  if (first) {
    r->stopping = true;
    r->error = err;
    r->nresults = nresults;
  }
  pthread_mutex_unlock(&r->mu);
  if (!first) {
    free(err);
    return false;
  }
  for (int k = 0; k < r->workers; k++) {
    treadle_spawn_opts_t opts = TREADLE_SPAWN_OPTS_INIT;
    opts.worker = k;
    lhome_t *home = r->homes[k];
    if (treadle_spawn_with(home->h, &stop_vt, &home, sizeof home, &opts,
                           NULL) != 0)
      state_stopped(r); /* shutting down: the runtime drops its tasks */
  }
  return true;
}

static void main_done(ltask_t *t, void *ud) {
  lrt_t *r = ud;
  bool zero = t->home->worker == 0;
  if (t->status == LT_ERROR) {
    const char *msg = lua_tostring(t->co, -1);
    char *err = strdup(msg != NULL ? msg : "a worker's main raised a non-string error");
    if (decide(r, err != NULL ? err : strdup("out of memory"), 0))
      t->joined = true; /* block_on raises it; a later one is reported */
  } else if (zero && t->status == LT_OK) {
    if (!decide(r, NULL, t->nresults) || t->nresults == 0)
      return;
    /* Keep worker 0's results in its state's registry until block_on
     * copies them: the state outlives the runtime. */
    lua_State *L = t->home->L;
    lua_createtable(L, t->nresults, 0);
    for (int i = 1; i <= t->nresults; i++) {
      lua_pushvalue(t->co, -t->nresults - 1 + i);
      lua_xmove(t->co, L, 1);
      lua_rawseti(L, -2, i);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "treadle.results");
  } else if (zero) { /* cancelled: the runtime shuts down */
    decide(r, NULL, 0);
  }
}

static const char boot_chunk[] =
    "local entry, worker = ...\n"
    "local main = require(entry)\n"
    "if type(main) == 'table' then main = main.main end\n"
    "if type(main) ~= 'function' then\n"
    "  error(\"module '\" .. entry .. \"' must return a function (or a table with main)\", 0)\n"
    "end\n"
    "return main(worker)\n";

typedef struct {
  lrt_t *r;
  int worker;
} boot_t;

static int boot_protected(lua_State *L) {
  lrt_t *r = lua_touserdata(L, 1);
  lhome_t *home = lua_touserdata(L, 2);
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, r->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, r->cpath);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  luaL_requiref(L, "treadle", luaopen_treadle, 0);
  lua_pop(L, 1);
  if (r->arg != NULL) { /* the script's command line, as lua5.4 gave it */
    lt_unpack(L, r->arg);
    lua_setglobal(L, "arg");
  }
  if (luaL_loadbuffer(L, boot_chunk, sizeof boot_chunk - 1, "=treadle.worker") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, r->entry);
  lua_pushinteger(L, home->worker);
  ltask_t *t = lt_spawn(L, home, -3, 2);
  t->on_done = main_done;
  t->on_done_ud = r;
  return 0;
}

static treadle_poll_t boot_poll(treadle_cx_t *cx, void *state) {
  (void)cx;
  boot_t *b = state;
  lrt_t *r = b->r;
  lhome_t *home = r->homes[b->worker];
  if (home->stopping) /* the run ended before this worker began */
    return TREADLE_READY;
  home->L = luaL_newstate();
  const char *err = NULL;
  if (home->L == NULL) {
    err = "cannot create a lua_State";
  } else {
    lua_pushcfunction(home->L, boot_protected);
    lua_pushlightuserdata(home->L, r);
    lua_pushlightuserdata(home->L, home);
    if (lua_pcall(home->L, 2, 0, 0) != LUA_OK)
      err = lua_tostring(home->L, -1);
  }
  if (err != NULL) /* counts as this worker's main failing */
    decide(r, strdup(err), 0);
  return TREADLE_READY;
}

static const treadle_task_vtable_t boot_vt = {.poll = boot_poll};

/* --------------------------------------------------------------- root */

typedef struct {
  lrt_t *r;
  ltask_t *main;    /* current_thread: the main task */
  bool interrupted; /* a SIGINT that no task waits for came */
  tb_root_t root;
} root_t;

/* The main work: current_thread's main task, or multi_thread's mains. */
static treadle_poll_t mains_done(void *ud, treadle_cx_t *cx) {
  root_t *st = ud;
  if (st->main != NULL) { /* current_thread: same thread as the task */
    if (st->main->status != LT_RUNNING)
      return TREADLE_READY;
    if (st->main->joiner == NULL)
      st->main->joiner = treadle_waker_clone(treadle_cx_waker(cx));
    return TREADLE_PENDING;
  }
  lrt_t *r = st->r;
  pthread_mutex_lock(&r->mu);
  bool done = r->stopping && r->running == 0;
  if (!done && r->root == NULL)
    r->root = treadle_waker_clone(treadle_cx_waker(cx));
  pthread_mutex_unlock(&r->mu);
  return done ? TREADLE_READY : TREADLE_PENDING;
}

static treadle_poll_t root_poll(treadle_cx_t *cx, void *state) {
  root_t *st = state;
  tb_root_event_t ev;
  for (;;) {
    if (tb_root_poll(&st->root, cx, &ev) == TREADLE_PENDING)
      return TREADLE_PENDING;
    /* Relaxed: tb_sigint_taken is a flag; a task that waits for SIGINT
     * takes it over, as one waiting in Tokio's ctrl_c does. */
    if (ev == TB_ROOT_SIGINT &&
        atomic_load_explicit(&tb_sigint_taken, memory_order_relaxed))
      continue;
    st->interrupted = ev == TB_ROOT_SIGINT;
    return TREADLE_READY;
  }
}

static void root_drop(void *state) {
  root_t *st = state;
  tb_root_drop(&st->root);
  if (st->main != NULL && st->main->joiner != NULL) {
    treadle_waker_drop(st->main->joiner);
    st->main->joiner = NULL;
  }
}

static treadle_poll_t root_outer(treadle_cx_t *cx, void *state) {
  root_t **pst = state;
  return root_poll(cx, *pst);
}
static void root_outer_drop(void *state) { root_drop(*(root_t **)state); }
static const treadle_task_vtable_t root_vt = {.poll = root_outer, .drop = root_outer_drop};

/* ------------------------------------------------------------ runtime */

static lrt_t *check_rt(lua_State *L) {
  lrt_t *r = luaL_checkudata(L, 1, RUNTIME_MT);
  if (r->rt == NULL)
    luaL_error(L, "the runtime has shut down");
  return r;
}

static bool opt_bool(lua_State *L, int idx, const char *name, bool def) {
  bool v = def;
  if (lua_getfield(L, idx, name) != LUA_TNIL) {
    luaL_argcheck(L, lua_isboolean(L, -1), idx, lua_pushfstring(L, "%s must be a boolean", name));
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static void free_homes(lrt_t *r) {
  for (int i = 0; i < r->workers && r->homes != NULL; i++) {
    lhome_t *home = r->homes[i];
    if (home == NULL)
      continue;
    if (home->owns_state && home->L != NULL)
      lua_close(home->L);
    lt_pool_free(home);
    treadle_handle_unref(home->h);
    free(home);
  }
  free(r->homes);
  r->homes = NULL;
}

/* Frees the runtime (every task is dropped), then the worker states. */
/* Frees the runtime: every task is dropped and every worker has stopped,
 * so the worker states may be read from this thread afterwards. */
static treadle_err_t rt_stop(lrt_t *r, uint64_t timeout_ns) {
  if (r->rt == NULL)
    return 0;
  treadle_err_t err = timeout_ns == TREADLE_FOREVER
                          ? treadle_runtime_free(r->rt)
                          : treadle_runtime_shutdown_timeout(r->rt, timeout_ns);
  if (err != 0 && err != TREADLE_ETIMEDOUT)
    return err;
  r->rt = NULL;
  return err;
}

/* After rt_stop: closes the worker states, frees the rest. */
static void rt_release(lrt_t *r) {
  if (r->homes == NULL)
    return;
  free_homes(r);
  treadle_waker_drop(r->root);
  r->root = NULL;
  free(r->error);
  free(r->entry);
  free(r->path);
  free(r->cpath);
  free(r->arg);
  r->error = r->entry = r->path = r->cpath = NULL;
  r->arg = NULL;
  pthread_mutex_destroy(&r->mu);
}

static treadle_err_t rt_shutdown(lrt_t *r, uint64_t timeout_ns) {
  treadle_err_t err = rt_stop(r, timeout_ns);
  if (r->rt == NULL)
    rt_release(r);
  return err;
}

/* lua: treadle.runtime([opts])
 * A runtime to run tasks on, for when treadle.run's one call is not enough.
 * opts: flavor ("current_thread", the default, or "multi_thread"), workers
 * (1..1024, default one per CPU), enable_io and enable_time (default true).
 * Returns: the runtime (rt); it shuts down when collected or closed.
 * Errors: raises for bad options or when the runtime cannot be built.
 * Example: local rt <close> = treadle.runtime({flavor = "multi_thread"}) */
static int l_runtime(lua_State *L) {
  const char *flavor = "current_thread";
  lua_Integer workers = 0;
  bool io = true, time = true;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_getfield(L, 1, "flavor") != LUA_TNIL)
      flavor = luaL_checkstring(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "workers") != LUA_TNIL) {
      workers = luaL_checkinteger(L, -1);
      luaL_argcheck(L, workers >= 1 && workers <= TREADLE_MAX_WORKERS, 1,
                    lua_pushfstring(L, "workers must be in 1..%d",
                                    TREADLE_MAX_WORKERS));
    }
    lua_pop(L, 1);
    io = opt_bool(L, 1, "enable_io", true);
    time = opt_bool(L, 1, "enable_time", true);
  }
  bool multi = strcmp(flavor, "multi_thread") == 0;
  if (!multi && strcmp(flavor, "current_thread") != 0)
    return luaL_argerror(L, 1, "flavor must be \"current_thread\" or \"multi_thread\"");
  lrt_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, RUNTIME_MT);
  treadle_builder_t *b;
  treadle_err_t err = treadle_builder_new(multi ? TREADLE_MULTI_THREAD : TREADLE_CURRENT_THREAD, &b);
  if (err == 0 && workers > 0)
    err = treadle_builder_worker_threads(b, (unsigned)workers);
  if (err == 0 && io)
    err = treadle_builder_enable_io(b);
  if (err == 0 && time)
    err = treadle_builder_enable_time(b);
  if (err == 0)
    err = treadle_builder_build(b, &r->rt);
  treadle_builder_free(b);
  if (err != 0)
    return luaL_error(L, "cannot build the runtime: %s", treadle_strerror(err));
  pthread_mutex_init(&r->mu, NULL);
  r->multi = multi;
  treadle_runtime_metrics_t m;
  treadle_handle_metrics(treadle_runtime_handle(r->rt), &m);
  r->workers = multi ? (int)m.workers : 1;
  static _Atomic uint64_t last_id;
  /* Relaxed: only uniqueness matters, no other memory is published. */
  r->id = atomic_fetch_add_explicit(&last_id, 1, memory_order_relaxed) + 1;
  r->homes = calloc((size_t)r->workers, sizeof *r->homes);
  for (int i = 0; r->homes != NULL && i < r->workers; i++) {
    lhome_t *home = r->homes[i] = calloc(1, sizeof *home);
    if (home == NULL)
      break;
    home->h = treadle_handle_ref(treadle_runtime_handle(r->rt));
    home->rt = r;
    home->worker = i;
    home->owns_state = multi;
  }
  if (r->homes == NULL || r->homes[r->workers - 1] == NULL) {
    rt_shutdown(r, TREADLE_FOREVER);
    return luaL_error(L, "not enough memory");
  }
  if (!multi) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    r->homes[0]->L = lua_tothread(L, -1);
    lua_pop(L, 1);
  }
  return 1;
}

/* Drives the runtime until the root says so; raises "interrupted" after a
 * shutdown on SIGINT. */
static void drive(lua_State *L, lrt_t *r, root_t *st) {
  root_t *pst = st;
  st->root.main_poll = mains_done;
  st->root.ud = st;
  st->root.watch = true;
  /* lua5.4's own SIGINT handler would raise "interrupted!" in whatever
   * Lua code the main thread runs next: while treadle's root listens, the
   * handler it chains to is SIG_IGN; lua5.4's comes back afterwards. */
  struct sigaction saved, ign = {.sa_handler = SIG_IGN};
  sigemptyset(&ign.sa_mask);
  bool swapped = sigaction(SIGINT, &ign, &saved) == 0;
  treadle_err_t err = treadle_runtime_block_on(r->rt, &root_vt, &pst, sizeof pst, NULL);
  if (swapped)
    sigaction(SIGINT, &saved, NULL);
  if (err != 0)
    luaL_error(L, "block_on: %s", treadle_strerror(err));
  if (st->interrupted) {
    rt_shutdown(r, TREADLE_FOREVER);
    lua_pushliteral(L, "interrupted");
    lua_error(L);
  }
}

static int block_on_current(lua_State *L, lrt_t *r) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  ltask_t *main = lt_spawn(L, r->homes[0], 2, lua_gettop(L) - 2);
  main->joined = true; /* block_on raises its error: no report */
  root_t st = {.r = r, .main = main};
  drive(L, r, &st);
  return lt_task_results(L, main);
}

static int block_on_multi(lua_State *L, lrt_t *r) {
  const char *entry = luaL_checkstring(L, 2);
  if (r->entry != NULL)
    return luaL_error(L, "a multi_thread runtime runs its module once");
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_getfield(L, -2, "cpath");
  r->path = strdup(lua_tostring(L, -2) ? lua_tostring(L, -2) : "");
  r->cpath = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
  lua_pop(L, 3);
  r->entry = strdup(entry);
  if (lua_getglobal(L, "arg") == LUA_TTABLE &&
      (r->arg = lt_pack_protected(L, -1)) == NULL)
    lua_pop(L, 1); /* the packing error: an `arg` with odd values */
  lua_pop(L, 1);
  r->running = r->workers; /* no worker runs yet: no lock needed */
  for (int k = 0; k < r->workers; k++) {
    boot_t b = {r, k};
    treadle_spawn_opts_t opts = TREADLE_SPAWN_OPTS_INIT;
    opts.worker = k;
    treadle_err_t err = treadle_spawn_with(r->homes[k]->h, &boot_vt, &b, sizeof b, &opts, NULL);
    if (err != 0)
      return luaL_error(L, "cannot start worker %d: %s", k, treadle_strerror(err));
  }
  root_t st = {.r = r};
  drive(L, r, &st);
  /* Every Lua task is over (step 3), but the workers' threads run: stop
   * them before this thread reads a worker's state. */
  rt_stop(r, TREADLE_FOREVER);
  if (r->error != NULL) {
    lua_pushstring(L, r->error);
    rt_release(r);
    return lua_error(L);
  }
  /* Copy worker 0's results out of its state before it is closed. */
  int n = r->nresults;
  void *blob = NULL;
  if (n > 0) {
    lua_State *W = r->homes[0]->L;
    lua_getfield(W, LUA_REGISTRYINDEX, "treadle.results");
    blob = lt_pack_protected(W, -1);
    if (blob == NULL) {
      lua_pushfstring(L, "worker 0's main returned %s", lua_tostring(W, -1));
      rt_release(r);
      return lua_error(L);
    }
    lt_unpack(L, blob);
    free(blob);
    luaL_checkstack(L, n, "results");
    for (int i = 1; i <= n; i++)
      lua_rawgeti(L, -i, i);
    lua_remove(L, -n - 1);
  }
  rt_release(r);
  return n;
}

/* lua: rt:block_on(fn, ...) or rt:block_on(module)
 * current_thread: runs fn(...) as the main task on this thread, with the
 * tasks it spawns, until fn returns. multi_thread: every worker requires
 * `module` in a lua_State of its own (with the caller's package.path,
 * package.cpath and a copy of `arg`); the module returns a function (or a
 * table with `main`), called as main(worker) on each worker. The run ends
 * as a process ends with its main thread: when worker 0's main returns, or
 * any worker's main raises (the first of the two decides), the tasks of
 * every worker are cancelled as task:abort cancels them (their
 * to-be-closed variables are closed) and block_on returns. Another
 * worker's main that returns ends nothing: that worker's other tasks go on.
 * So a server stops when worker 0, which waits for the signal, returns.
 * Returns: fn's results; on multi_thread worker 0's, copied as channel
 * values are.
 * Errors: raises fn's error, with its traceback as task:join raises it (on
 * multi_thread, the error of a worker's main that ended the run);
 * "interrupted" after a SIGINT that no task waits for (the runtime has then
 * shut down); a multi_thread runtime runs its module once; not from a task.
 * Example: local a, b = rt:block_on(function() return 1, 2 end) */
static int l_block_on(lua_State *L) {
  lrt_t *r = check_rt(L);
  if (lt_current != NULL)
    return luaL_error(L, "cannot start a runtime from within a runtime");
  return r->multi ? block_on_multi(L, r) : block_on_current(L, r);
}

/* lua: rt:spawn(fn, ...)
 * Spawns fn(...) from outside the runtime; it runs while rt:block_on runs.
 * current_thread only (a multi_thread runtime runs Lua in its workers' own
 * states).
 * Returns: the task.
 * Errors: raises on a multi_thread or shut-down runtime. */
static int l_rt_spawn(lua_State *L) {
  lrt_t *r = check_rt(L);
  if (r->multi)
    return luaL_error(L, "a multi_thread runtime runs Lua in its workers' own "
                         "states: give block_on a module name");
  lt_spawn(L, r->homes[0], 2, lua_gettop(L) - 2);
  return 1;
}

/* lua: rt:shutdown([timeout])
 * Cancels every task and stops the runtime's threads, waiting at most
 * `timeout` seconds (default: no limit) for work on the blocking pool.
 * Returns: true, or false when the timeout passed first.
 * Errors: raises when called from one of the runtime's tasks.
 * Example: rt:shutdown(5) */
static int l_rt_shutdown(lua_State *L) {
  lrt_t *r = luaL_checkudata(L, 1, RUNTIME_MT);
  uint64_t ns = lua_isnoneornil(L, 2) ? TREADLE_FOREVER : lt_check_duration(L, 2);
  if (lt_current != NULL && r->rt != NULL)
    return luaL_error(L, "a runtime cannot shut down from inside a task");
  treadle_err_t err = rt_shutdown(r, ns);
  if (err == TREADLE_ETIMEDOUT) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (err != 0)
    return luaL_error(L, "shutdown: %s", treadle_strerror(err));
  lua_pushboolean(L, 1);
  return 1;
}

static void set_count(lua_State *L, const char *name, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, name);
}

/* lua: rt:metrics()
 * The runtime's counters (as treadle_handle_metrics and
 * treadle_handle_worker_metrics in C), read without stopping it; counters
 * only grow, depths are snapshots.
 * Returns: a table: workers, live_tasks, inject_queue_depth,
 * blocking_threads, blocking_idle, blocking_queue_depth, driver_parks (times
 * a thread waited in the driver: a runtime that only waits adds a few per
 * timer) and per_worker, a list of tables with polls, steals,
 * steal_operations, parks, unparks, lifo_hits, overflows and
 * local_queue_depth.
 * Errors: raises once the runtime has shut down.
 * Example: print(rt:metrics().driver_parks) */
static int l_rt_metrics(lua_State *L) {
  treadle_handle_t *h = treadle_runtime_handle(check_rt(L)->rt);
  treadle_runtime_metrics_t m;
  treadle_handle_metrics(h, &m);
  lua_createtable(L, 0, 8);
  set_count(L, "workers", m.workers);
  set_count(L, "live_tasks", m.live_tasks);
  set_count(L, "inject_queue_depth", m.inject_queue_depth);
  set_count(L, "blocking_threads", m.blocking_threads);
  set_count(L, "blocking_idle", m.blocking_idle);
  set_count(L, "blocking_queue_depth", m.blocking_queue_depth);
  set_count(L, "driver_parks", m.driver_parks);
  lua_createtable(L, (int)m.workers, 0);
  for (unsigned i = 0; i < m.workers; i++) {
    treadle_worker_metrics_t w;
    treadle_handle_worker_metrics(h, i, &w);
    lua_createtable(L, 0, 8);
    set_count(L, "polls", w.polls);
    set_count(L, "steals", w.steals);
    set_count(L, "steal_operations", w.steal_operations);
    set_count(L, "parks", w.parks);
    set_count(L, "unparks", w.unparks);
    set_count(L, "lifo_hits", w.lifo_hits);
    set_count(L, "overflows", w.overflows);
    set_count(L, "local_queue_depth", w.local_queue_depth);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "per_worker");
  return 1;
}

static int l_rt_gc(lua_State *L) {
  lrt_t *r = luaL_checkudata(L, 1, RUNTIME_MT);
  if (r->rt != NULL && lt_current == NULL)
    rt_shutdown(r, TREADLE_FOREVER);
  return 0;
}

static int l_rt_tostring(lua_State *L) {
  lrt_t *r = luaL_checkudata(L, 1, RUNTIME_MT);
  lua_pushfstring(L, "treadle.runtime (%s, %d worker%s%s): %p",
                  r->multi ? "multi_thread" : "current_thread", r->workers,
                  r->workers == 1 ? "" : "s", r->rt == NULL ? ", shut down" : "",
                  (void *)r);
  return 1;
}

/* lua: treadle.run(fn_or_module [, opts])
 * Builds a runtime (treadle.runtime(opts)), runs rt:block_on(fn_or_module)
 * and shuts the runtime down: the usual way in. Ctrl-C while it waits shuts
 * the runtime down (every task's to-be-closed variables are closed, as an
 * abort closes them) and raises "interrupted", unless a task waits for
 * SIGINT itself (treadle.signal).
 * Returns: the main function's results (multi_thread: worker 0's).
 * Errors: as treadle.runtime and rt:block_on.
 * Example: print(treadle.run(function() treadle.sleep(1) return "ok" end)) */
static const char run_chunk[] =
    "local runtime = ...\n"
    "return function(entry, opts)\n"
    "  local rt <close> = runtime(opts)\n"
    "  return rt:block_on(entry)\n"
    "end\n";

static const luaL_Reg rt_methods[] = {
    {"block_on", l_block_on}, {"spawn", l_rt_spawn}, {"shutdown", l_rt_shutdown},
    {"metrics", l_rt_metrics}, {NULL, NULL}};

/* lua: require "treadle"
 * Loads the module: Lua coroutines become treadle tasks. Functions that wait
 * (treadle.sleep, conn:read, ch:recv, task:join, ...) suspend the calling
 * task and let the others run; they need a running task (inside treadle.run,
 * rt:block_on or treadle.spawn). A task stays on the worker (and lua_State)
 * that started it.
 * Returns: the module table: the functions below, treadle.tcp, and
 * treadle.version ("0.1.0").
 * Errors: I/O failures return nil, a message and the errno name (nil,
 * "connection refused", "ECONNREFUSED"); wrong arguments and misuse raise.
 * Argument errors name the function, also when it is called through pcall:
 * treadle.tcp and the method tables are package.loaded["treadle.tcp"],
 * ["treadle.conn"], ["treadle.listener"], ["treadle.task"],
 * ["treadle.channel"], ["treadle.stdin"] and ["treadle.runtime"], where Lua
 * looks such names up ("bad argument #2 to 'treadle.conn.read'").
 * Handles (runtime, task, channel, listener, conn) close when collected
 * and at the end of a `<close>` variable; tostring names them.
 * Example: local treadle = require "treadle" */
__attribute__((visibility("default"))) int luaopen_treadle(lua_State *L) {
  luaL_checkversion(L);
  lt_new_class(L, RUNTIME_MT, rt_methods, l_rt_gc, l_rt_gc, l_rt_tostring);
  lua_newtable(L);
  lt_open_task(L);
  lt_open_net(L);
  lt_open_shdict(L);
  lt_open_cosock(L);
  lt_open_blocking(L);
  lt_open_process(L);
  lt_open_select(L);
  lt_open_serve(L);
  lt_open_timer(L);
  lua_pushcfunction(L, l_runtime);
  lua_setfield(L, -2, "runtime");
  if (luaL_loadbuffer(L, run_chunk, sizeof run_chunk - 1, "=treadle.run") != LUA_OK)
    return lua_error(L);
  lua_pushcfunction(L, l_runtime);
  lua_call(L, 1, 1);
  lua_setfield(L, -2, "run");
  lt_open_repl(L);
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "version");
  return 1;
}
