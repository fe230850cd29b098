/* treadle.at and treadle.every: callback timers, OpenResty's ngx.timer
 * (ARCHITECTURE.md "Lua").
 *
 * A timer is a C task of its own (pinned to the worker of the state that
 * made it) with the timer's sleep and an ltask_t in its state: no Lua task
 * and no coroutine while it waits. When it fires, its poll runs
 * fn(premature, ...) right there, as a task step (lt_task_step) on a
 * coroutine taken from the state's cache of idle ones, so the callback may
 * wait like any task (treadle.sleep, cosockets); a callback that returns
 * without waiting gives its coroutine back to the cache, one that waits
 * keeps it until it ends. An error is printed to stderr and ends nothing
 * (an every timer goes on).
 *
 * The handle (the userdata "treadle.timer") holds the timer; a registry
 * reference anchors it while the C task lives. Its user values: 1 the
 * coroutine while a callback runs (an every timer's stays between runs),
 * 2 fn, 3.. the arguments.
 *
 * Premature runs (fn(true, ...)) are plain calls outside any task (what
 * would wait raises): when the state's worker stops (the end of a
 * multi_thread run cancels the timer's task, see lt_home_stop), on the
 * timer's poll; on current_thread when the runtime shuts down with the
 * timer pending (the runtime drops its task on the caller's thread). */
#include <stdio.h>
#include <string.h>

#include "ltreadle.h"

#define TIMER_MT "treadle.timer"
#define CO_CACHE_MAX 64 /* idle coroutines kept per state */

static const char co_cache_key = 0; /* the registry's cache table */

typedef struct {
  ltask_t t;             /* the callback's task; t.co while it runs */
  treadle_sleep_t sleep; /* until the next run */
  uint64_t deadline;     /* of the next run, treadle_now() ns */
  uint64_t interval;     /* every: ns between runs; at: 0 */
  int nargs;             /* arguments after `premature` */
  int ref;               /* registry: the handle, while the C task lives */
  int runs;              /* callbacks started */
  bool running;          /* a callback started and has not ended */
  bool cancelled;        /* timer:cancel() */
  bool over;             /* no run any more; the C task is ending */
} ltimer_t;

/* Pushes the handle; returns its index. */
static int push_handle(lua_State *L, ltimer_t *tm) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, tm->ref);
  return lua_gettop(L);
}

/* A coroutine for a run: the timer's own (every), else an idle one from
 * the state's cache, else a new one; kept in user value 1. */
static lua_State *co_take(lua_State *L, int ud) {
  if (lua_getiuservalue(L, ud, 1) == LUA_TTHREAD) {
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    return co;
  }
  lua_pop(L, 1);
  lua_State *co = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &co_cache_key) == LUA_TTABLE) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n > 0) {
      lua_rawgeti(L, -1, n);
      co = lua_tothread(L, -1);
      lua_pushnil(L);
      lua_rawseti(L, -3, n);
      lua_remove(L, -2); /* the cache; the coroutine is on top */
    }
  }
  if (co == NULL) {
    lua_pop(L, 1);
    co = lua_newthread(L);
  }
  lua_setiuservalue(L, ud, 1);
  return co;
}

/* After a run: a coroutine that ended well goes back to the cache (an
 * every timer keeps it); any other is let go. */
static void co_give(lua_State *L, int ud, ltimer_t *tm, bool reusable) {
  lua_State *co = tm->t.co;
  tm->t.co = NULL;
  if (reusable) {
    lua_settop(co, 0);
    if (tm->interval != 0 && !tm->over)
      return;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &co_cache_key) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_createtable(L, CO_CACHE_MAX, 0);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &co_cache_key);
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n < CO_CACHE_MAX) {
      lua_getiuservalue(L, ud, 1);
      lua_rawseti(L, -2, n + 1);
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  lua_setiuservalue(L, ud, 1);
}

/* The task's on_done: a failed callback is printed, not reported as a task
 * nobody joins. */
static void run_done(ltask_t *t, void *ud) {
  (void)ud;
  if (t->status != LT_ERROR)
    return;
  const char *msg = lua_tostring(t->co, -1);
  fprintf(stderr, "treadle: a timer callback failed: %s\n",
          msg != NULL ? msg : "(an error object that is not a string)");
  t->joined = true;
}

/* The C task is over: lets go of the handle. */
static treadle_poll_t end_timer(ltimer_t *tm) {
  tm->over = true;
  treadle_sleep_drop(&tm->sleep);
  treadle_waker_drop(tm->t.waker);
  tm->t.waker = NULL;
  if (tm->ref != LUA_NOREF) {
    luaL_unref(tm->t.home->L, LUA_REGISTRYINDEX, tm->ref);
    tm->ref = LUA_NOREF;
  }
  return TREADLE_READY;
}

/* Starts a run: fn(false, args...) as a step of the timer's task. */
static treadle_poll_t start_run(ltimer_t *tm, treadle_cx_t *cx) {
  ltask_t *t = &tm->t;
  lua_State *L = t->home->L;
  int ud = push_handle(L, tm);
  lua_State *co = co_take(L, ud);
  luaL_checkstack(co, tm->nargs + 2, "timer arguments");
  lua_getiuservalue(L, ud, 2);
  lua_pushboolean(L, 0);
  for (int i = 0; i < tm->nargs; i++)
    lua_getiuservalue(L, ud, 3 + i);
  lua_xmove(L, co, tm->nargs + 2);
  lua_pop(L, 1);
  t->co = co;
  t->start_nargs = tm->nargs + 1;
  t->started = false;
  t->cancel = false;
  tm->running = true;
  tm->runs++;
  return lt_task_step(t, cx);
}

static treadle_poll_t timer_poll(treadle_cx_t *cx, void *state);

/* fn(true, ...) as a plain call on the home's state, outside any task:
 * whatever would wait raises. */
static void premature_call(ltimer_t *tm) {
  lua_State *L = tm->t.home->L;
  ltask_t *saved = lt_current;
  lt_current = NULL;
  int ud = push_handle(L, tm);
  lua_getiuservalue(L, ud, 2);
  lua_pushboolean(L, 1);
  for (int i = 0; i < tm->nargs; i++)
    lua_getiuservalue(L, ud, 3 + i);
  tm->runs++;
  if (lua_pcall(L, tm->nargs + 1, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "treadle: a timer callback failed: %s\n",
            msg != NULL ? msg : "(an error object that is not a string)");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lt_current = saved;
}

/* A run ended (the task is off the live list): an every timer sleeps
 * again, an at timer is over. */
static treadle_poll_t after_run(ltimer_t *tm, treadle_cx_t *cx) {
  ltask_t *t = &tm->t;
  lua_State *L = t->home->L;
  tm->running = false;
  int status = t->status;
  bool again = tm->interval != 0 && !tm->cancelled &&
               status != LT_CANCELLED && !t->home->stopping;
  if (!again)
    tm->over = true;
  int ud = push_handle(L, tm);
  co_give(L, ud, tm, status == LT_OK);
  lua_pop(L, 1);
  if (!again)
    return end_timer(tm);
  uint64_t now = treadle_now();
  tm->deadline += tm->interval;
  if (tm->deadline < now)
    tm->deadline = now; /* a run that took longer: the next one now */
  treadle_sleep_until_init(&tm->sleep, tm->deadline);
  t->status = LT_RUNNING;
  t->joined = t->reported = false;
  t->nresults = 0;
  lt_task_live(t);
  return timer_poll(cx, &tm);
}

static treadle_poll_t timer_poll(treadle_cx_t *cx, void *state) {
  ltimer_t *tm = *(ltimer_t **)state;
  ltask_t *t = &tm->t;
  if (tm->running) {
    if (lt_task_step(t, cx) == TREADLE_PENDING)
      return TREADLE_PENDING;
    return after_run(tm, cx);
  }
  if (t->cancel) { /* timer:cancel, or the worker stops: premature */
    if (!tm->cancelled && t->home->stopping)
      premature_call(tm);
    lt_task_drop(t); /* cancelled, off the live list */
    return end_timer(tm);
  }
  treadle_err_t err = 0;
  if (treadle_sleep_poll(&tm->sleep, cx, &err) == TREADLE_PENDING) {
    if (t->waker == NULL) /* task_cancel wakes it */
      t->waker = treadle_waker_clone(treadle_cx_waker(cx));
    return TREADLE_PENDING;
  }
  if (err != 0) { /* a runtime without timers */
    fprintf(stderr, "treadle: a timer cannot run: %s\n", treadle_strerror(err));
    lt_task_drop(t);
    return end_timer(tm);
  }
  if (start_run(tm, cx) == TREADLE_PENDING)
    return TREADLE_PENDING;
  return after_run(tm, cx);
}

/* Once: after READY, or when the runtime drops the task unfinished. */
static void timer_drop(void *state) {
  ltimer_t *tm = *(ltimer_t **)state;
  if (tm->over)
    return;
  lhome_t *home = tm->t.home;
  bool home_thread = !home->thread_known || pthread_equal(home->thread, pthread_self());
  /* current_thread shutting down with the timer pending: the premature
   * call, on the caller's state (no task: it cannot wait) */
  if (!tm->running && !tm->cancelled && home_thread && !home->owns_state)
    premature_call(tm);
  tm->over = true;
  lt_task_drop(&tm->t); /* status, live list, waker */
  treadle_sleep_drop(&tm->sleep);
  if (home_thread && tm->ref != LUA_NOREF) /* else the state is closed next */
    luaL_unref(home->L, LUA_REGISTRYINDEX, tm->ref);
  tm->ref = LUA_NOREF;
}

static const treadle_task_vtable_t timer_vt = {.poll = timer_poll, .drop = timer_drop};

static int new_timer(lua_State *L, bool every, const char *what) {
  uint64_t ns = lt_check_duration(L, 1);
  if (every && ns == 0)
    return luaL_argerror(L, 1, "interval must be > 0");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lhome_t *home = lt_home(L);
  if (home == NULL)
    return luaL_error(L, "%s needs a running treadle task (treadle.run or rt:block_on)", what);
  int nargs = lua_gettop(L) - 2;
  ltimer_t *tm = lua_newuserdatauv(L, sizeof *tm, 2 + nargs);
  memset(tm, 0, sizeof *tm);
  tm->ref = LUA_NOREF;
  tm->t.anchor = LUA_NOREF;
  tm->t.home = home;
  tm->t.on_done = run_done;
  tm->nargs = nargs;
  tm->interval = every ? ns : 0;
  luaL_setmetatable(L, TIMER_MT);
  for (int i = 0; i <= nargs; i++) {
    lua_pushvalue(L, 2 + i);
    lua_setiuservalue(L, -2, 2 + i);
  }
  uint64_t now = treadle_now();
  tm->deadline = ns > UINT64_MAX - now ? UINT64_MAX : now + ns;
  treadle_sleep_until_init(&tm->sleep, tm->deadline);
  lua_pushvalue(L, -1);
  tm->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  treadle_spawn_opts_t opts = TREADLE_SPAWN_OPTS_INIT;
  opts.worker = home->worker;
  treadle_err_t err = treadle_spawn_with(home->h, &timer_vt, &tm, sizeof tm, &opts, NULL);
  if (err != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, tm->ref);
    tm->ref = LUA_NOREF;
    tm->over = true;
    return luaL_error(L, "cannot start the timer: %s", treadle_strerror(err));
  }
  lt_task_live(&tm->t); /* it runs on this thread, after we return */
  return 1;
}

/* lua: treadle.at(delay, fn, ...)
 * Calls fn(premature, ...) once, `delay` seconds from now, on this worker
 * (OpenResty's ngx.timer.at). No task or coroutine is made for the wait;
 * fn runs as a task when the timer fires, so it may wait too (treadle.sleep,
 * cosockets). premature is true when the run ends before the timer fires:
 * on multi_thread when the workers stop, on current_thread when the runtime
 * shuts down; a premature fn is a plain call, where waiting raises. An error in fn is printed to
 * stderr ("treadle: a timer callback failed: ...") and ends nothing. On a
 * runtime without timers (enable_time = false) it never runs and says so
 * on stderr.
 * Returns: the timer; timer:cancel() stops it before it fires (true, or
 * false when it already fired or was cancelled), timer:pending() says
 * whether it will still run, timer:runs() counts its calls.
 * Errors: raises outside a task, for a delay that is not a number (or NaN)
 * and when fn is not a function.
 * Example: treadle.at(0.5, function(premature, who) print("hi", who) end, "ada") */
static int l_at(lua_State *L) { return new_timer(L, false, "treadle.at"); }

/* lua: treadle.every(interval, fn, ...)
 * Calls fn(premature, ...) every `interval` seconds on this worker, the
 * first time `interval` from now (OpenResty's ngx.timer.every), until
 * timer:cancel() (also from fn itself) or the end of the run. The next run
 * is counted from the previous one's time, not from its end; a run that
 * waits delays the next until it ends (runs never overlap). An error in fn
 * is printed to stderr and the timer goes on. Otherwise as treadle.at.
 * Returns: the timer (see treadle.at).
 * Errors: as treadle.at; an interval of 0 raises.
 * Example: local tick = treadle.every(1, function() print("tick") end) */
static int l_every(lua_State *L) { return new_timer(L, true, "treadle.every"); }

static ltimer_t *check_timer(lua_State *L) { return luaL_checkudata(L, 1, TIMER_MT); }

/* lua: timer:cancel()
 * Stops the timer: it does not fire (again). A callback that is running
 * now (one that waits) finishes its run.
 * Returns: true when the timer was still pending; false when it had fired
 * (treadle.at), was cancelled or its run ended. */
static int l_timer_cancel(lua_State *L) {
  ltimer_t *tm = check_timer(L);
  bool pending = !tm->over && !tm->cancelled && !(tm->interval == 0 && tm->runs > 0);
  if (!tm->over && !tm->cancelled) {
    tm->cancelled = true;
    if (!tm->running)
      lt_task_cancel(&tm->t);
  }
  lua_pushboolean(L, pending);
  return 1;
}

/* lua: timer:pending()
 * Returns: true while the timer will still call its function. */
static int l_timer_pending(lua_State *L) {
  ltimer_t *tm = check_timer(L);
  lua_pushboolean(L, !tm->over && !tm->cancelled && !(tm->interval == 0 && tm->runs > 0));
  return 1;
}

/* lua: timer:runs()
 * Returns: how many times the timer has called its function so far. */
static int l_timer_runs(lua_State *L) {
  lua_pushinteger(L, check_timer(L)->runs);
  return 1;
}

static int l_timer_tostring(lua_State *L) {
  ltimer_t *tm = check_timer(L);
  const char *state = tm->cancelled ? "cancelled"
                      : tm->over || (tm->interval == 0 && tm->runs > 0) ? "done"
                                                                         : "pending";
  lua_pushfstring(L, "treadle.timer (%s, %s, %d run%s): %p", tm->interval ? "every" : "at",
                  state, tm->runs, tm->runs == 1 ? "" : "s", (void *)tm);
  return 1;
}

static const luaL_Reg timer_methods[] = {
    {"cancel", l_timer_cancel}, {"pending", l_timer_pending}, {"runs", l_timer_runs}, {NULL, NULL}};

void lt_open_timer(lua_State *L) {
  lt_new_class(L, TIMER_MT, timer_methods, NULL, NULL, l_timer_tostring);
  lua_pushcfunction(L, l_at);
  lua_setfield(L, -2, "at");
  lua_pushcfunction(L, l_every);
  lua_setfield(L, -2, "every");
}
