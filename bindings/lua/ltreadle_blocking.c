/* Work off the worker (ARCHITECTURE.md "Lua"): treadle.blocking runs Lua
 * code in a fresh lua_State on the blocking pool (luv's queue_work,
 * cqueues' threads), treadle.resolve looks a host name up (the core's
 * lookup_host, getaddrinfo on the pool).
 *
 * A blocking job carries only plain bytes across threads: the code (a
 * module name, a function's bytecode from lua_dump, or a chunk's source),
 * the caller's package.path and cpath, and the arguments packed as channel
 * values are. On a pool thread it makes a state, runs the code in a
 * protected call, packs the results (or copies the error message) and
 * closes the state. The waiting task's op joins the job; a task cancelled
 * meanwhile aborts the job if it is still queued and detaches it if not:
 * the job runs to its end and its output is freed by the pool
 * (drop_output), so nothing leaks and no Lua state is shared. */
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "ltreadle.h"

/* ---------------------------------------------------------- the job */

enum { CODE_MODULE, CODE_FUNCTION, CODE_CHUNK };

typedef struct {
  int kind;
  char *code; /* the module name, the bytecode or the source */
  size_t code_len;
  char *path, *cpath;
  void *args; /* {n = k, ...} packed */
} bjob_t;

/* A job's output: the packed results {n = k, ...}, or an error message. */
typedef struct {
  void *results;
  char *err;
} bout_t;

static void bjob_drop(void *state) {
  bjob_t *j = *(bjob_t **)state;
  free(j->code);
  free(j->path);
  free(j->cpath);
  free(j->args);
  free(j);
}

static void bout_free(void *value) {
  bout_t *o = value;
  if (o == NULL)
    return;
  free(o->results);
  free(o->err);
  free(o);
}

/* Pushes t[1..t.n] of the table on top (popped). Returns how many. */
static int push_packed_list(lua_State *L) {
  lua_getfield(L, -1, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n + 1, "treadle.blocking values");
  for (int i = 1; i <= n; i++)
    lua_rawgeti(L, -i, i);
  lua_remove(L, -n - 1);
  return n;
}

/* Packs the `n` values on top into {n = n, ...} (popped): the blob, or
 * NULL with the message on top. */
static void *pack_list(lua_State *L, int n) {
  lua_createtable(L, n, 1);
  lua_insert(L, -n - 1);
  for (int i = n; i >= 1; i--)
    lua_rawseti(L, -i - 1, i);
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  void *blob = lt_pack_protected(L, -1);
  lua_remove(L, blob != NULL ? -1 : -2);
  return blob;
}

/* In the fresh state, protected: loads and runs the job, returns its
 * results packed (a light userdata). */
static int job_main(lua_State *L) {
  bjob_t *j = lua_touserdata(L, 1);
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, j->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, j->cpath);
  lua_setfield(L, -2, "cpath");
  lua_settop(L, 0);
  if (j->kind == CODE_MODULE) {
    lua_getglobal(L, "require");
    lua_pushstring(L, j->code);
    lua_call(L, 1, 1);
    if (!lua_isfunction(L, -1))
      return luaL_error(L, "module '%s' returned %s, not a function", j->code,
                        luaL_typename(L, -1));
  } else if (luaL_loadbufferx(L, j->code, j->code_len, "=treadle.blocking",
                              j->kind == CODE_FUNCTION ? "b" : "t") != LUA_OK) {
    return lua_error(L);
  }
  lt_unpack(L, j->args);
  int nargs = push_packed_list(L);
  lua_call(L, nargs, LUA_MULTRET);
  void *blob = pack_list(L, lua_gettop(L)); /* the results alone */
  if (blob == NULL)
    return luaL_error(L, "treadle.blocking: a result: %s", lua_tostring(L, -1));
  lua_pushlightuserdata(L, blob);
  return 1;
}

/* The pool thread's part. */
static treadle_err_t job_run(void *state, void **value) {
  bjob_t *j = *(bjob_t **)state;
  bout_t *o = calloc(1, sizeof *o);
  if (o == NULL)
    return TREADLE_ENOMEM;
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    o->err = strdup("not enough memory");
  } else {
    lua_pushcfunction(L, job_main);
    lua_pushlightuserdata(L, j);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
      o->results = lua_touserdata(L, -1);
    } else {
      const char *msg = lua_tostring(L, -1);
      o->err = strdup(msg != NULL ? msg : "(error object is not a string)");
    }
    lua_close(L);
  }
  if (o->results == NULL && o->err == NULL) { /* strdup failed */
    free(o);
    return TREADLE_ENOMEM;
  }
  *value = o;
  return 0;
}

static const treadle_blocking_vtable_t job_vt = {
    .run = job_run, .drop = bjob_drop, .drop_output = bout_free};

/* ------------------------------------------------- the waiting task */

/* The caller's op (LOP_OWN, ud): the job's join handle and what came. */
typedef struct {
  treadle_join_t *j;
  treadle_err_t status;
  bout_t *out;
} bwait_t;

static treadle_poll_t bwait_poll(void *ud, treadle_cx_t *cx,
                                 treadle_err_t *err) {
  bwait_t *w = ud;
  void *v = NULL;
  if (treadle_join_poll(w->j, cx, &w->status, &v) == TREADLE_PENDING)
    return TREADLE_PENDING;
  w->out = v;
  *err = 0;
  return TREADLE_READY;
}

/* Pushes ok, then the results or the message. */
static int bwait_push(lua_State *co, ltask_t *t) {
  bwait_t *w = t->op.u.own.ud;
  if (w->status != 0 || w->out == NULL) {
    lua_pushboolean(co, 0);
    lua_pushstring(co, treadle_strerror(w->status != 0 ? w->status : TREADLE_ENOMEM));
    return 2;
  }
  if (w->out->err != NULL) {
    lua_pushboolean(co, 0);
    lua_pushstring(co, w->out->err);
    return 2;
  }
  lua_pushboolean(co, 1);
  lt_unpack(co, w->out->results);
  return 1 + push_packed_list(co);
}

/* After the op (done or cancelled): a job still queued is cancelled, a
 * running one detached (its output goes to drop_output). */
static void bwait_done(void *ud) {
  bwait_t *w = ud;
  if (w->out == NULL)
    treadle_join_abort(w->j);
  treadle_join_detach(w->j);
  bout_free(w->out);
  free(w);
}

/* The op's values sit above `base`: LOP_OWN's true, then bwait_push's. */
static int blocking_finish(lua_State *L, int base) {
  if (!lua_toboolean(L, base + 2))
    return lua_error(L); /* the message is on top */
  return lua_gettop(L) - (base + 2);
}

static int blocking_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return blocking_finish(L, (int)ctx);
}

/* lua_dump's output, grown on the heap. */
typedef struct {
  char *p;
  size_t len, cap;
} dump_t;

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  dump_t *b = ud;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap < b->len + n)
      cap *= 2;
    char *q = realloc(b->p, cap);
    if (q == NULL)
      return 1;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  return 0;
}

/* A module name: what require takes (letters, digits, _ . -), no chunk. */
static bool is_module_name(const char *s, size_t n) {
  if (n == 0 || n > 256)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return false;
  }
  return true;
}

/* Raises unless argument 1 is code a job can carry. */
static void check_code(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING)
    return;
  if (lua_type(L, 1) != LUA_TFUNCTION)
    luaL_typeerror(L, 1, "module name, function or chunk");
  if (lua_iscfunction(L, 1))
    luaL_argerror(L, 1, "a C function cannot run in another state");
  const char *name;
  for (int i = 1; (name = lua_getupvalue(L, 1, i)) != NULL; i++) {
    lua_pop(L, 1);
    if (i > 1 || strcmp(name, "_ENV") != 0) /* _ENV: the new state's globals */
      luaL_argerror(L, 1, lua_pushfstring(L, "the function has an upvalue (%s): "
                    "it cannot run in another state; pass values as "
                    "arguments", name));
  }
}

/* Copies argument 1's code into j: false when out of memory. */
static bool copy_code(lua_State *L, bjob_t *j) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    j->kind = is_module_name(s, n) ? CODE_MODULE : CODE_CHUNK;
    j->code = malloc(n + 1);
    if (j->code != NULL)
      memcpy(j->code, s, n + 1);
    j->code_len = n;
    return j->code != NULL;
  }
  dump_t d = {0};
  lua_pushvalue(L, 1);
  int bad = lua_dump(L, dump_writer, &d, 0);
  lua_pop(L, 1);
  j->kind = CODE_FUNCTION;
  j->code = d.p;
  j->code_len = d.len;
  return bad == 0 && d.p != NULL;
}

/* A copy of package[field] ("" when there is none); NULL: no memory. */
static char *package_string(lua_State *L, const char *field) {
  const char *s = NULL;
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, field);
    s = lua_tostring(L, -1);
  }
  char *copy = strdup(s != NULL ? s : "");
  lua_pop(L, lua_istable(L, -1) ? 1 : 2);
  return copy;
}

/* lua: treadle.blocking(code, ...)
 * Runs Lua code on the blocking pool, in a fresh lua_State of its own (the
 * standard libraries, and the caller's package.path and package.cpath),
 * and waits for its results without blocking the worker (luv's
 * queue_work). code is a module name (letters, digits, "_", "." and "-":
 * required there; it must return a function, which is called with the
 * arguments), a function without upvalues other than _ENV (copied as
 * bytecode: it sees the new state's globals, not the caller's locals), or
 * any other string: a chunk's source, called with the arguments as `...`.
 * Arguments and results are copied as channel values are. The state is
 * closed after. A cancelled task's job is dropped if it is still queued,
 * else it runs to its end and its results are freed.
 * Returns: the code's results.
 * Errors: raises the code's error message (a module that does not load,
 * a syntax error, an error it raised); raises for a function with
 * upvalues, a C function, an argument or result that cannot be copied,
 * and outside a task.
 * Example: local n = treadle.blocking(function(path) return #io.open(path):read("a") end, "/etc/hosts") */
static int l_blocking(lua_State *L) {
  check_code(L);
  ltask_t *t = lt_need_task(L, "treadle.blocking");
  int nargs = lua_gettop(L) - 1;
  luaL_checkstack(L, nargs + 4, "treadle.blocking arguments");
  for (int i = 2; i <= nargs + 1; i++)
    lua_pushvalue(L, i);
  void *args = pack_list(L, nargs);
  if (args == NULL)
    return luaL_error(L, "treadle.blocking: an argument: %s", lua_tostring(L, -1));
  /* Nothing below raises before the job is spawned or freed. */
  bjob_t *j = calloc(1, sizeof *j);
  bwait_t *w = calloc(1, sizeof *w);
  bool ok = j != NULL && w != NULL;
  if (ok) {
    j->args = args;
    args = NULL;
    ok = copy_code(L, j);
    j->path = package_string(L, "path");
    j->cpath = package_string(L, "cpath");
    ok = ok && j->path != NULL && j->cpath != NULL;
  }
  treadle_err_t err = ok ? treadle_spawn_blocking(t->home->h, &job_vt, &j, sizeof j, &w->j)
                         : TREADLE_ENOMEM;
  if (err != 0) {
    if (j != NULL)
      bjob_drop(&j);
    free(args);
    free(w);
    return luaL_error(L, "treadle.blocking: %s", treadle_strerror(err));
  }
  tb_op_wait(&t->op.tb, bwait_poll, NULL, w);
  t->op.kind = LOP_OWN;
  t->op.u.own.push = bwait_push;
  t->op.u.own.done = bwait_done;
  t->op.u.own.ud = w;
  int base = lua_gettop(L);
  if (lt_op_poll(t, lt_current_cx) == TREADLE_READY) {
    lt_op_push(L, t);
    return blocking_finish(L, base);
  }
  return lua_yieldk(L, 0, base, blocking_k);
}

/* ------------------------------------------------------------ resolve */

typedef struct {
  treadle_lookup_t lk;
  treadle_addrs_t *addrs;
  treadle_err_t err;
} lresolve_t;

static treadle_poll_t resolve_poll(void *ud, treadle_cx_t *cx,
                                   treadle_err_t *err) {
  lresolve_t *r = ud;
  if (treadle_lookup_host_poll(&r->lk, cx, &r->addrs, &r->err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  *err = r->err;
  return TREADLE_READY;
}

static int resolve_push(lua_State *co, ltask_t *t) {
  lresolve_t *r = t->op.u.own.ud;
  if (r->err != 0)
    return lt_fail(co, r->err);
  size_t n = treadle_addrs_count(r->addrs);
  lua_createtable(co, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    char host[TREADLE_HOST_LEN];
    treadle_sockaddr_host(treadle_addrs_get(r->addrs, i), host);
    lua_pushstring(co, host);
    lua_rawseti(co, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static void resolve_done(void *ud) {
  lresolve_t *r = ud;
  treadle_lookup_host_drop(&r->lk); /* cancels one in flight */
  treadle_addrs_free(r->addrs);
  free(r);
}

/* lua: treadle.resolve(host)
 * Looks a host name up (getaddrinfo on the blocking pool, so the worker
 * goes on; a numeric address answers at once).
 * Returns: a list of address strings (IPv4 and IPv6, in the resolver's
 * order, without repeats), or nil, message, errno name ("ENOHOST" for a
 * name that does not exist).
 * Errors: raises for a host that is not a non-empty string, and outside a
 * task.
 * Example: local addrs = assert(treadle.resolve("localhost")) */
static int l_resolve(lua_State *L) {
  size_t n;
  const char *host = luaL_checklstring(L, 1, &n);
  luaL_argcheck(L, n > 0 && strlen(host) == n, 1, "an empty host, or one with a NUL byte");
  ltask_t *t = lt_need_task(L, "treadle.resolve");
  lresolve_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return luaL_error(L, "not enough memory");
  treadle_err_t err = treadle_lookup_host_init(&r->lk, t->home->h, host, 0);
  if (err != 0) {
    free(r);
    return lt_fail(L, err);
  }
  tb_op_wait(&t->op.tb, resolve_poll, NULL, r);
  t->op.kind = LOP_OWN;
  t->op.u.own.push = resolve_push;
  t->op.u.own.done = resolve_done;
  t->op.u.own.ud = r;
  return lt_wait(L, t);
}

void lt_open_blocking(lua_State *L) {
  lua_pushcfunction(L, l_blocking);
  lua_setfield(L, -2, "blocking");
  lua_pushcfunction(L, l_resolve);
  lua_setfield(L, -2, "resolve");
}
