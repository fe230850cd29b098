/* The Lua module's C side, shared by its files (ARCHITECTURE.md "Lua").
 *
 * ltreadle.c       luaopen_treadle, runtimes, treadle.run, worker states
 * ltreadle_task.c  tasks (a coroutine of one lua_State), the ops a task
 *                  waits on, timeouts, signals, channels
 * ltreadle_net.c   TCP listeners and connections, stdin
 * ltreadle_cosock.c  OpenResty's cosocket API on connections
 *                  (treadle.tcp.socket, receive patterns, timeouts, the
 *                  keep-alive pool) and UDP sockets (treadle.udp.socket)
 * ltreadle_ngx.c   require "treadle.ngx": the ngx table for OpenResty's
 *                  pure-Lua libraries
 * ltreadle_repl.c  treadle.repl, the console
 * ltreadle_value.c channel values: a Lua value copied to another state
 * ltreadle_shdict.c treadle.shared, shared dictionaries (bindings/common/shdict.c)
 * ltreadle_blocking.c treadle.blocking (Lua on the blocking pool) and
 *                  treadle.resolve
 * ltreadle_process.c treadle.process, child processes with buffered pipes
 * ltreadle_select.c treadle.select over channels and sockets' readiness
 * ltreadle_serve.c treadle.tcp.server/serve: a TCP server in one call
 * ltreadle_timer.c treadle.at/every: callback timers (ngx.timer)
 *
 * Threads: a lua_State (a "home") belongs to one thread. On current_thread
 * that is the thread in block_on; on multi_thread each worker makes its own
 * state, and every task of a state is pinned to that worker, so no lua_State
 * is ever touched by two threads. Only wakers and channels cross threads. */
#ifndef LTREADLE_H
#define LTREADLE_H

#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "recvbuf.h"
#include "tbind.h"
#include "treadle.h"

typedef struct ltask_s ltask_t;
typedef struct lpool_s lpool_t;

/* One lua_State's place in a runtime. */
typedef struct lhome_s {
  lua_State *L;           /* the main thread of the state */
  treadle_handle_t *h;    /* a reference */
  void *rt;               /* the runtime's lrt_t (ltreadle.c) */
  int worker;             /* the worker its tasks are pinned to */
  bool owns_state;        /* a worker state: closed after the runtime */
  pthread_t thread;       /* the one thread that runs it (checked in debug) */
  bool thread_known;
  /* Owned by the home's thread: */
  ltask_t *tasks;         /* the live tasks, through ltask_t.live_next */
  bool stopping;          /* lt_home_stop: every task is cancelled */
  bool stopped;           /* and lt_home_stopped was told none is left */
  lpool_t *pool;          /* idle keep-alive connections (cosockets) */
} lhome_t;

/* What a task waits on. */
typedef enum {
  LOP_NONE,    /* nothing: a task that waits on nothing runs on */
  LOP_LEAF,    /* a leaf of bindings/common, in `tb` */
  LOP_JOIN,    /* another task; with a deadline for treadle.timeout */
  LOP_SEND,    /* a channel (`tb` waits on its semaphores) */
  LOP_RECV,
  LOP_OWN,     /* a file's own: `tb` waits, u.own says the rest */
} lopkind_t;

typedef struct lchan_s lchan_t;

typedef struct {
  lopkind_t kind;
  tb_op_t tb;  /* the operation of every kind but LOP_NONE */
  union {
    struct { ltask_t *child; bool is_timeout; } join; /* `tb` waits */
    struct { lchan_t *ch; treadle_waiter_t w; void *blob; } chan;
    struct {
      int (*push)(lua_State *co, ltask_t *t); /* the results (count) */
      void (*done)(void *ud); /* NULL, or after tb is cleared */
      void *ud;               /* the object (stdin, the console) */
    } own;
  } u;
} lop_t;

enum { LT_RUNNING, LT_OK, LT_ERROR, LT_CANCELLED };

/* A task: the userdata "treadle.task". Its uservalue 1 is the coroutine;
 * a registry reference anchors it while the C task lives. */
struct ltask_s {
  lhome_t *home;
  lua_State *co;
  int anchor;               /* registry ref while running, else LUA_NOREF */
  int status;               /* LT_* */
  int nresults;             /* on co's stack once LT_OK; error at top */
  int start_nargs;          /* arguments for the first resume */
  bool started, cancel, joined, reported;
  bool push_in_k;           /* lt_wait's op_k pushes its op's results */
  treadle_waker_t *waker;   /* the C task's, from its first poll */
  treadle_waker_t *joiner;  /* a task waiting in join */
  void (*on_done)(ltask_t *t, void *ud); /* worker mains report here */
  void *on_done_ud;
  ltask_t *live_next, **live_prev; /* on home->tasks until it is over */
  lop_t op;
};

extern __thread ltask_t *lt_current;
extern __thread treadle_cx_t *lt_current_cx;

/* The home of the running task, or NULL outside a task. */
lhome_t *lt_home(lua_State *L);

/* The task calling this op, or raises: ops need a task's own coroutine. */
ltask_t *lt_need_task(lua_State *L, const char *what);
/* Polls the op the running task just set up; when it is not ready, yields
 * to the task driver, which resumes the task once it is. Either way the
 * op's results are what the calling Lua function returns. */
int lt_wait(lua_State *L, ltask_t *t);
/* Runs ops: the C poll (READY leaves the op's outcome in it) and the
 * results (pushes a flag, true to return the values after it, false to
 * raise the one after it; returns how many values). */
treadle_poll_t lt_op_poll(ltask_t *t, treadle_cx_t *cx);
int lt_op_push(lua_State *co, ltask_t *t);
/* Releases what an op holds (no Lua calls: any thread); idempotent. */
void lt_op_clear(ltask_t *t);
/* The task at idx, or raises. */
ltask_t *lt_check_task(lua_State *L, int idx);
/* Pushes a finished task's results (or raises its error) on L. */
int lt_task_results(lua_State *L, ltask_t *t);

/* Spawns fn (at `idx`, followed by nargs arguments on top) as a task of
 * `home`; pushes the task userdata. Raises on failure. A stopping home's
 * new task is cancelled before it runs. */
ltask_t *lt_spawn(lua_State *L, lhome_t *home, int idx, int nargs);

/* A task driven by another C task than lt_spawn's (a timer, which keeps
 * its ltask_t in its own state; co, start_nargs and the coroutine's anchor
 * are the caller's): lt_task_live puts it on its home's list of live tasks
 * (so that a stopping home cancels it; once, before it is stepped);
 * lt_task_step runs it as lt_spawn's task's poll does (READY once over: it
 * has left the list); lt_task_drop is the runtime dropping it unfinished;
 * lt_task_cancel is task:abort. */
void lt_task_live(ltask_t *t);
treadle_poll_t lt_task_step(ltask_t *t, treadle_cx_t *cx);
void lt_task_drop(ltask_t *t);
void lt_task_cancel(ltask_t *t);

/* On the home's thread: cancels every task of the home (as task:abort
 * does: their to-be-closed variables are closed), and every task spawned
 * there from now on; once none is left, calls lt_home_stopped (at once
 * when there is none). */
void lt_home_stop(lhome_t *home);
/* ltreadle.c: a stopping home has no task left (its thread, once). */
void lt_home_stopped(lhome_t *home);

/* Pushes nil, message, errno name; returns 3. */
int lt_fail(lua_State *L, treadle_err_t err);
/* Seconds argument to ns: raises for NaN and non-numbers. */
uint64_t lt_check_duration(lua_State *L, int idx);

/* Registers metatable `name`: methods as __index, and __gc, __close,
 * __tostring where given (NULL: none). The methods are also
 * package.loaded[name] (lt_name_table). */
void lt_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                  lua_CFunction gc, lua_CFunction close, lua_CFunction tostring);

/* Makes the table on top package.loaded[name] (kept on the stack), where
 * luaL_argerror looks for the names of functions called without a name
 * (through pcall): "bad argument #1 to 'treadle.tcp.connect'", not '?'. */
void lt_name_table(lua_State *L, const char *name);

/* A TCP or Unix stream connection, the userdata "treadle.conn": made by
 * treadle.tcp.connect, listener:accept or (unconnected) treadle.tcp.socket.
 * Every op on it counts in `ops`, so that its stream is freed only when
 * none is in flight. */
#define LT_CONN_MT "treadle.conn"
typedef struct lconn_s {
  tb_stream_t st;      /* st.s NULL: not connected (new, or pooled) */
  tb_rbuf_t buf;       /* received, not yet handed out */
  uint64_t consumed;   /* bytes handed out so far (receiveuntil's scans) */
  int ops;             /* ops in flight on st */
  int timeout_ms[3];   /* connect, send, read; 0: the default, 60 s */
  int reused;          /* times this connection came from the pool */
  char *pool_key;      /* "host:port", "unix:path" or opts.pool; NULL */
  bool eof;            /* a read saw the end of the stream */
  /* The outcome of the op that just finished (cosock_absorb): */
  treadle_err_t io_err;
  bool io_timeout;
  size_t io_got;
} lconn_t;

/* ltreadle_cosock.c: the cosocket methods (added to treadle.conn's),
 * treadle.tcp.socket and treadle.udp; a home's pool, freed with it. */
void lt_open_cosock(lua_State *L);
void lt_pool_free(lhome_t *home);
/* The op done hook of every conn op (ops--). */
void lt_conn_op_done(void *conn);
/* A TLS connection's read readiness, for treadle.select: one read of
 * plaintext into the receive buffer (READY: bytes, the end, or an error in
 * *err; PENDING: no whole record yet, the task's waker is in the stream's
 * read slot). The caller holds the reader's slot. */
treadle_poll_t lt_conn_tls_fill(lconn_t *c, treadle_cx_t *cx, treadle_err_t *err);
/* ltreadle_re.c: pushes the ngx.re table (PCRE2). */
void lt_push_re(lua_State *L);
/* Pushes require "ffi"'s byte-buffer subset (ltreadle_ffi.c). */
void lt_push_ffi(lua_State *L);
/* ltreadle.c: how many workers the home's runtime has. */
int lt_home_workers(lhome_t *home);
/* A number no other runtime of this process had: for the names of shared
 * objects that one runtime's workers meet at (tcp.server's port channel). */
uint64_t lt_home_runtime_id(lhome_t *home);

/* Net ops (ltreadle_net.c): the results of a ready accept, connect, read
 * or write leaf. */
int lt_net_push(lua_State *co, ltask_t *t);
/* Opens stdin for the I/O driver: an async fd of a file description of its
 * own (*afd), or where epoll refuses it, a dup of fd 0 for plain reads
 * (*fd). 0 or an error. */
treadle_err_t lt_stdin_open(treadle_handle_t *h, treadle_async_fd_t **afd,
                            int *fd);
void lt_open_net(lua_State *L);
/* Sets treadle.repl in the module table on top (ltreadle_repl.c). */
void lt_open_repl(lua_State *L);

/* Channel values (ltreadle_value.c): plain values copied between states.
 * lt_pack_protected packs the value at idx into a malloc'd blob, or returns
 * NULL and leaves the error message on top of L; lt_pack raises instead.
 * lt_unpack pushes the value a blob holds (the caller frees the blob). */
void *lt_pack_protected(lua_State *L, int idx);
void *lt_pack(lua_State *L, int idx);
void lt_unpack(lua_State *L, const void *blob);
/* lt_unpack, then frees the blob, also when unpacking raises (no memory):
 * the value is then lost, its memory is not. */
void lt_unpack_free(lua_State *L, void *blob);
void lt_open_task(lua_State *L);
/* The channel at idx, or NULL when it is not one (raises for a released
 * handle). */
lchan_t *lt_to_chan(lua_State *L, int idx);
void lt_chan_ref(lchan_t *ch);
void lt_chan_unref(lchan_t *ch);
/* A receive's leaf, as ch:recv's: READY with *blob (the caller's) and
 * *err = 0, or *err = TREADLE_ECLOSED once closed and drained. Drop w
 * (treadle_waiter_drop) when giving up before READY. */
treadle_poll_t lt_chan_recv_poll(lchan_t *ch, treadle_cx_t *cx,
                                 treadle_waiter_t *w, void **blob,
                                 treadle_err_t *err);
/* treadle.select's view of a process's stdout (ltreadle_process.c): the
 * pipe of the process object at idx, or NULL when it is not one (raises
 * for a closed object or a stdout that is not a pipe); begin takes its
 * reader's slot (false: another task reads it), end gives it back; poll is
 * READY once a read would answer at once. */
void *lt_select_pipe(lua_State *L, int idx);
bool lt_select_pipe_begin(void *pipe);
void lt_select_pipe_end(void *pipe);
treadle_poll_t lt_select_pipe_poll(void *pipe, treadle_cx_t *cx,
                                   treadle_err_t *err);
/* Sets treadle.select (ltreadle_select.c). */
void lt_open_select(lua_State *L);
/* Sets treadle.shared in the module table on top (ltreadle_shdict.c). */
void lt_open_shdict(lua_State *L);
/* Sets treadle.blocking and treadle.resolve (ltreadle_blocking.c). */
void lt_open_blocking(lua_State *L);
/* Sets treadle.process (ltreadle_process.c). */
void lt_open_process(lua_State *L);
/* Sets treadle.workers, treadle.tcp.server and treadle.tcp.serve in the
 * module table on top, which has tcp (ltreadle_serve.c). */
void lt_open_serve(lua_State *L);
/* Sets treadle.at and treadle.every (ltreadle_timer.c). */
void lt_open_timer(lua_State *L);

#endif
