/* treadle.process: child processes with OpenResty's ngx.pipe API
 * (ARCHITECTURE.md "Lua"), over the core's process.c.
 *
 * A process object holds the child and the parent's ends of its pipes,
 * async fds of the runtime. stdout and stderr each keep a receive buffer
 * (bindings/common/recvbuf.c) and are read with the cosockets' patterns:
 * a method serves what the buffer holds; when it cannot, one read into
 * the buffer's free room is the task's op (LOP_OWN, with the pipe's read
 * timeout as its deadline) and the method's continuation looks again. A
 * write is one op that writes the whole string; wait is one op on the
 * child's exit. One task at a time reads a pipe, writes, or waits.
 *
 * SIGPIPE: a write to a pipe whose reader is gone raises SIGPIPE, which
 * would kill a lua5.4 process (it does not ignore it, unlike nginx). The
 * write blocks SIGPIPE on its thread around the call and takes a SIGPIPE it
 * caused before unblocking, so the write just answers EPIPE ("closed"). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ltreadle.h"

#define PROC_MT "treadle.process"
#define DEFAULT_TIMEOUT_MS 10000 /* ngx.pipe's default for each timeout */
#define READ_ROOM 4096
#define READ_MAX (256 * 1024)

enum { T_WRITE, T_STDOUT, T_STDERR, T_WAIT };
enum { RD_LINE, RD_ALL, RD_BYTES, RD_ANY };

typedef struct lproc_s lproc_t;

/* The parent's end of the child's stdout or stderr. */
typedef struct {
  lproc_t *proc;
  treadle_async_fd_t *afd; /* NULL: not a pipe */
  tb_rbuf_t buf;
  bool closed;   /* shut down on this side */
  bool eof;      /* a read saw the end */
  bool reading;  /* a read op is in flight */
  char *dst;     /* where the read in flight writes, and its room */
  size_t room, got;
  treadle_err_t io_err; /* the outcome of the read that just finished */
  bool io_timeout;
} lpipe_t;

struct lproc_s {
  treadle_child_t *c;      /* NULL once freed */
  treadle_async_fd_t *in;  /* NULL: not a pipe */
  bool in_closed, writing, waiting;
  lpipe_t out[2];          /* stdout, stderr */
  int timeout_ms[4];       /* T_*; 0: no limit */
  int ops;                 /* ops in flight */
  /* The write in flight: */
  const char *wbuf;
  size_t wlen, wdone;
  treadle_exit_status_t st;
};

static lproc_t *check_proc(lua_State *L) {
  lproc_t *p = luaL_checkudata(L, 1, PROC_MT);
  if (p->c == NULL)
    luaL_error(L, "process object is closed");
  return p;
}

static uint64_t timeout_ns(const lproc_t *p, int which) {
  int ms = p->timeout_ms[which];
  return ms == 0 ? TREADLE_FOREVER : (uint64_t)ms * 1000000u;
}

static const char *io_message(treadle_err_t err, bool timed_out) {
  if (err == TREADLE_ETIMEDOUT && timed_out)
    return "timeout";
  if (err == TREADLE_ECLOSED || err == TREADLE_EPIPE)
    return "closed";
  return treadle_strerror(err);
}

/* Makes t's op a LOP_OWN wait on `poll` with a deadline; polls it at once:
 * true when it is ready already (its values popped again, the outcome
 * left where push put it), false when the caller must yield. */
static bool own_begin(lua_State *L, ltask_t *t, tb_wait_fn poll, uint64_t ns,
                      int (*push)(lua_State *, ltask_t *), void (*done)(void *),
                      void *ud) {
  tb_op_wait(&t->op.tb, poll, NULL, ud);
  tb_op_set_deadline(&t->op.tb, ns);
  t->op.kind = LOP_OWN;
  t->op.u.own.push = push;
  t->op.u.own.done = done;
  t->op.u.own.ud = ud;
  if (lt_op_poll(t, lt_current_cx) == TREADLE_PENDING)
    return false;
  lua_pop(L, lt_op_push(L, t));
  return true;
}

/* --------------------------------------------------------------- reads */

static treadle_poll_t read_poll(void *ud, treadle_cx_t *cx, treadle_err_t *err) {
  lpipe_t *pp = ud;
  return treadle_async_fd_read_poll(pp->afd, cx, pp->dst, pp->room, &pp->got, err);
}

/* The read op's push: records the outcome for the continuation. */
static int read_absorb(lua_State *co, ltask_t *t) {
  (void)co;
  lpipe_t *pp = t->op.u.own.ud;
  pp->io_err = t->op.tb.err;
  pp->io_timeout = t->op.tb.timed_out;
  if (pp->io_err == 0) {
    tb_rbuf_commit(&pp->buf, pp->got);
    pp->eof = pp->got == 0;
  }
  return 0;
}

static void read_done(void *ud) {
  lpipe_t *pp = ud;
  pp->reading = false;
  pp->proc->ops--;
}

/* Pushes and hands out n buffered bytes. */
static void give(lua_State *L, lpipe_t *pp, size_t n) {
  lua_pushlstring(L, tb_rbuf_data(&pp->buf), n);
  tb_rbuf_consume(&pp->buf, n);
}

/* What the pattern asks for, if the buffer has it: pushes it, returns 1. */
static int pattern_met(lua_State *L, lpipe_t *pp, int kind, size_t n) {
  size_t len = tb_rbuf_len(&pp->buf), used;
  const char *p = tb_rbuf_data(&pp->buf);
  switch (kind) {
  case RD_LINE:
    if (!tb_recv_line(p, len, &used))
      return 0;
    {
      luaL_Buffer b;
      char *dst = luaL_buffinitsize(L, &b, used);
      luaL_pushresultsize(&b, tb_strip_cr(dst, p, used - 1));
    }
    tb_rbuf_consume(&pp->buf, used);
    return 1;
  case RD_BYTES:
  case RD_ANY:
    if (kind == RD_BYTES ? len < n : len == 0)
      return 0;
    give(L, pp, kind == RD_ANY && len < n ? len : n);
    return 1;
  default: /* RD_ALL: only at the end */
    return 0;
  }
}

static int read_k(lua_State *L, int status, lua_KContext ctx);

/* The read methods' loop (arguments: self, n). ctx: which * 4 + kind. */
static int read_loop(lua_State *L, lproc_t *p, int which, int kind, size_t n,
                     bool after_io) {
  lpipe_t *pp = &p->out[which];
  for (;;) {
    if (after_io && pp->io_err != 0) {
      lua_pushnil(L);
      lua_pushstring(L, io_message(pp->io_err, pp->io_timeout));
      give(L, pp, tb_rbuf_len(&pp->buf));
      return 3;
    }
    after_io = false;
    if (pattern_met(L, pp, kind, n))
      return 1;
    if (pp->eof || pp->closed || pp->afd == NULL) {
      if (kind == RD_ALL && pp->eof) {
        give(L, pp, tb_rbuf_len(&pp->buf));
        return 1;
      }
      lua_pushnil(L);
      lua_pushliteral(L, "closed");
      give(L, pp, tb_rbuf_len(&pp->buf));
      return 3;
    }
    ltask_t *t = lt_need_task(L, which == 0 ? "a read of stdout" : "a read of stderr");
    pp->dst = tb_rbuf_room(&pp->buf, READ_ROOM, &pp->room);
    if (pp->dst == NULL)
      return luaL_error(L, "not enough memory");
    if (pp->room > READ_MAX)
      pp->room = READ_MAX;
    pp->reading = true;
    p->ops++;
    if (!own_begin(L, t, read_poll, timeout_ns(p, T_STDOUT + which), read_absorb,
                   read_done, pp))
      return lua_yieldk(L, 0, (lua_KContext)(which * 4 + kind), read_k);
    after_io = true;
  }
}

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_settop(L, 2);
  size_t n = lua_isinteger(L, 2) ? (size_t)lua_tointeger(L, 2) : 0;
  return read_loop(L, check_proc(L), (int)ctx / 4, (int)ctx % 4, n, true);
}

static int read_method(lua_State *L, int which, int kind) {
  lproc_t *p = check_proc(L);
  size_t n = 0;
  if (kind == RD_BYTES || kind == RD_ANY) {
    lua_Integer v = luaL_checkinteger(L, 2);
    luaL_argcheck(L, kind == RD_BYTES ? v >= 0 : v > 0, 2,
                  kind == RD_BYTES ? "a negative size" : "max must be at least 1");
    n = (size_t)v;
  }
  lua_settop(L, 2);
  lpipe_t *pp = &p->out[which];
  if (pp->afd == NULL && !pp->closed)
    return luaL_error(L, "%s is not a pipe (spawn with %s = \"pipe\")",
                      which == 0 ? "stdout" : "stderr", which == 0 ? "stdout" : "stderr");
  if (pp->reading)
    return luaL_error(L, "pipe busy reading: another task reads this %s",
                      which == 0 ? "stdout" : "stderr");
  if (kind == RD_BYTES && n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  return read_loop(L, p, which, kind, n, false);
}

/* lua: proc:stdout_read_line()
 * Reads a line of the child's stdout, without its LF (CR bytes are
 * dropped), waiting at most the stdout read timeout (set_timeouts) per
 * read. The same for stderr: proc:stderr_read_line().
 * Returns: the line, or nil, error, partial: "closed" at the end of the
 * output or after shutdown (partial: what came after the last LF),
 * "timeout", or a system error.
 * Errors: raises when the stream is not a pipe, while another task reads
 * it, and outside a task when it must wait.
 * Example: for line in function() return proc:stdout_read_line() end do print(line) end */
static int l_stdout_read_line(lua_State *L) { return read_method(L, 0, RD_LINE); }
/* lua: proc:stderr_read_line()
 * Reads a line of the child's stderr (spawned with stderr = "pipe"), as
 * proc:stdout_read_line reads stdout, with the stderr read timeout.
 * Returns: as proc:stdout_read_line.
 * Example: local msg = proc:stderr_read_line() */
static int l_stderr_read_line(lua_State *L) { return read_method(L, 1, RD_LINE); }

/* lua: proc:stdout_read_all()
 * Reads the child's stdout to its end (proc:stderr_read_all() likewise).
 * Returns: the data, or nil, error, partial as stdout_read_line.
 * Example: local out = assert(proc:stdout_read_all()) */
static int l_stdout_read_all(lua_State *L) { return read_method(L, 0, RD_ALL); }

/* lua: proc:stderr_read_all()
 * Reads everything to the end of the child's stderr (spawned with stderr = "pipe"), as
 * proc:stdout_read_all reads stdout, with the stderr read timeout.
 * Returns: as proc:stdout_read_all.
 * Example: local errors = proc:stderr_read_all() */
static int l_stderr_read_all(lua_State *L) { return read_method(L, 1, RD_ALL); }

/* lua: proc:stdout_read_bytes(n)
 * Reads exactly n bytes of the child's stdout (proc:stderr_read_bytes
 * likewise).
 * Returns: the data, or nil, error, partial as stdout_read_line.
 * Errors: raises for a size that is not an integer >= 0.
 * Example: local header = proc:stdout_read_bytes(4) */
static int l_stdout_read_bytes(lua_State *L) { return read_method(L, 0, RD_BYTES); }

/* lua: proc:stderr_read_bytes(n)
 * Reads exactly n bytes of the child's stderr (spawned with stderr = "pipe"), as
 * proc:stdout_read_bytes reads stdout, with the stderr read timeout.
 * Returns: as proc:stdout_read_bytes.
 * Example: local b = proc:stderr_read_bytes(4) */
static int l_stderr_read_bytes(lua_State *L) { return read_method(L, 1, RD_BYTES); }

/* lua: proc:stdout_read_any(max)
 * Returns what has come on the child's stdout, at most max bytes, waiting
 * only when nothing has (proc:stderr_read_any likewise).
 * Returns: the data, or nil, error, partial as stdout_read_line.
 * Errors: raises for a max that is not an integer >= 1.
 * Example: local chunk = proc:stdout_read_any(4096) */
static int l_stdout_read_any(lua_State *L) { return read_method(L, 0, RD_ANY); }

/* lua: proc:stderr_read_any(max)
 * Reads what has come, at most max bytes of the child's stderr (spawned with stderr = "pipe"), as
 * proc:stdout_read_any reads stdout, with the stderr read timeout.
 * Returns: as proc:stdout_read_any.
 * Example: local chunk = proc:stderr_read_any(4096) */
static int l_stderr_read_any(lua_State *L) { return read_method(L, 1, RD_ANY); }

/* ------------------------------------------------ treadle.select's part */

void *lt_select_pipe(lua_State *L, int idx) {
  lproc_t *p = luaL_testudata(L, idx, PROC_MT);
  if (p == NULL)
    return NULL;
  if (p->c == NULL)
    luaL_error(L, "process object is closed");
  if (p->out[0].afd == NULL && !p->out[0].closed)
    luaL_error(L, "stdout is not a pipe (spawn with stdout = \"pipe\")");
  return &p->out[0];
}

bool lt_select_pipe_begin(void *pipe) {
  lpipe_t *pp = pipe;
  if (pp->reading)
    return false;
  pp->reading = true;
  pp->proc->ops++;
  return true;
}

void lt_select_pipe_end(void *pipe) { read_done(pipe); }

/* Ready when a read would answer at once: buffered bytes, the end, or an
 * error. The fd's readiness outlives the input that set it, so poll(2)
 * confirms it; when there is nothing, it is cleared and waited for again
 * (an event since keeps it set: nothing is lost). */
treadle_poll_t lt_select_pipe_poll(void *pipe, treadle_cx_t *cx,
                                   treadle_err_t *err) {
  lpipe_t *pp = pipe;
  *err = 0;
  if (tb_rbuf_len(&pp->buf) > 0 || pp->eof || pp->closed)
    return TREADLE_READY;
  for (;;) {
    treadle_ready_t ready;
    if (treadle_async_fd_ready_poll(pp->afd, cx, TREADLE_READABLE, &ready, err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    struct pollfd pfd = {.fd = treadle_async_fd_fd(pp->afd), .events = POLLIN};
    int r;
    do
      r = poll(&pfd, 1, 0);
    while (r < 0 && errno == EINTR);
    if (r != 0)
      return TREADLE_READY; /* input, its end, or an error a read gets */
    treadle_async_fd_clear_ready(pp->afd, &ready, TREADLE_READABLE);
  }
}

/* --------------------------------------------------------------- write */

/* One write with SIGPIPE blocked on this thread (see the top). */
static treadle_poll_t write_quiet(treadle_async_fd_t *afd, treadle_cx_t *cx,
                                  const char *buf, size_t len, size_t *n,
                                  treadle_err_t *err) {
  sigset_t pipe_only, old, pending;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  sigpending(&pending);
  bool was_pending = sigismember(&pending, SIGPIPE);
  treadle_poll_t r = treadle_async_fd_write_poll(afd, cx, buf, len, n, err);
  if (r == TREADLE_READY && *err == TREADLE_EPIPE && !was_pending) {
    struct timespec zero = {0, 0};
    sigtimedwait(&pipe_only, NULL, &zero); /* the SIGPIPE this write raised */
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return r;
}

static treadle_poll_t write_poll(void *ud, treadle_cx_t *cx, treadle_err_t *err) {
  lproc_t *p = ud;
  *err = 0;
  while (p->wdone < p->wlen) {
    size_t n = 0;
    if (write_quiet(p->in, cx, p->wbuf + p->wdone, p->wlen - p->wdone, &n, err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      break;
    p->wdone += n;
  }
  return TREADLE_READY;
}

static int write_push(lua_State *co, ltask_t *t) {
  lproc_t *p = t->op.u.own.ud;
  if (t->op.tb.err != 0) {
    lua_pushnil(co);
    lua_pushstring(co, io_message(t->op.tb.err, t->op.tb.timed_out));
    return 2;
  }
  lua_pushinteger(co, (lua_Integer)p->wdone);
  return 1;
}

static void write_done(void *ud) {
  lproc_t *p = ud;
  p->writing = false;
  p->wbuf = NULL;
  p->ops--;
}

/* lua: proc:write(data)
 * Writes all of data (a string) to the child's stdin, waiting at most the
 * write timeout (set_timeouts). The string is kept alive by the call.
 * Returns: the number of bytes written, or nil, "closed" (the child closed
 * its stdin or exited, or shutdown("stdin") was called), "timeout", or a
 * system error.
 * Errors: raises when stdin is not a pipe, while another task writes, for
 * data that is not a string, and outside a task when it must wait.
 * Example: assert(proc:write("b\na\n")) */
static int l_write(lua_State *L) {
  lproc_t *p = check_proc(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  lua_settop(L, 2);
  if (p->in == NULL && !p->in_closed)
    return luaL_error(L, "stdin is not a pipe (spawn with stdin = \"pipe\")");
  if (p->writing)
    return luaL_error(L, "pipe busy writing: another task writes stdin");
  if (p->in_closed) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  if (len == 0) {
    lua_pushinteger(L, 0);
    return 1;
  }
  ltask_t *t = lt_need_task(L, "proc:write");
  p->wbuf = data;
  p->wlen = len;
  p->wdone = 0;
  p->writing = true;
  p->ops++;
  tb_op_wait(&t->op.tb, write_poll, NULL, p);
  tb_op_set_deadline(&t->op.tb, timeout_ns(p, T_WRITE));
  t->op.kind = LOP_OWN;
  t->op.u.own.push = write_push;
  t->op.u.own.done = write_done;
  t->op.u.own.ud = p;
  return lt_wait(L, t);
}

/* ---------------------------------------------------------------- wait */

static treadle_poll_t wait_poll(void *ud, treadle_cx_t *cx, treadle_err_t *err) {
  lproc_t *p = ud;
  return treadle_child_wait_poll(p->c, cx, &p->st, err);
}

static int wait_push(lua_State *co, ltask_t *t) {
  lproc_t *p = t->op.u.own.ud;
  if (t->op.tb.err != 0) {
    lua_pushnil(co);
    lua_pushstring(co, io_message(t->op.tb.err, t->op.tb.timed_out));
    return 2;
  }
  lua_pushboolean(co, p->st.exited && p->st.code == 0);
  lua_pushstring(co, p->st.exited ? "exit" : "signal");
  lua_pushinteger(co, p->st.exited ? p->st.code : p->st.signal);
  return 3;
}

static void wait_done(void *ud) {
  lproc_t *p = ud;
  p->waiting = false;
  p->ops--;
}

/* lua: proc:wait()
 * Waits for the child to end, at most the wait timeout (set_timeouts). A
 * later call answers the same at once.
 * Returns: ok, reason, status as ngx.pipe's: true, "exit", 0 for a
 * success; false, "exit", code for another exit code; false, "signal",
 * signum when a signal killed it. Or nil, "timeout" (the child runs on),
 * or nil and a system error.
 * Errors: raises while another task waits, and outside a task when it
 * must wait.
 * Example: local ok, reason, status = proc:wait() */
static int l_wait(lua_State *L) {
  lproc_t *p = check_proc(L);
  if (p->waiting)
    return luaL_error(L, "another task waits for this process");
  ltask_t *t = lt_need_task(L, "proc:wait");
  p->waiting = true;
  p->ops++;
  tb_op_wait(&t->op.tb, wait_poll, NULL, p);
  tb_op_set_deadline(&t->op.tb, timeout_ns(p, T_WAIT));
  t->op.kind = LOP_OWN;
  t->op.u.own.push = wait_push;
  t->op.u.own.done = wait_done;
  t->op.u.own.ud = p;
  return lt_wait(L, t);
}

/* --------------------------------------------------------------- other */

/* lua: proc:pid()
 * Returns: the child's process id.
 * Example: print(proc:pid()) */
static int l_pid(lua_State *L) {
  lua_pushinteger(L, treadle_child_pid(check_proc(L)->c));
  return 1;
}

/* lua: proc:kill(signal)
 * Sends a signal (a number, or a name: "SIGTERM", "TERM", "SIGKILL", ...)
 * to the child; one that has ended is not signalled (its pid may be
 * another process's by then).
 * Returns: true, or nil, message, errno name.
 * Errors: raises for a signal that is not one.
 * Example: proc:kill("SIGTERM") */
static int l_kill(lua_State *L) {
  lproc_t *p = check_proc(L);
  int signum;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer v = luaL_checkinteger(L, 2);
    luaL_argcheck(L, v >= 0 && v <= 64, 2, "a signal number is 0..64");
    signum = (int)v;
  } else {
    const char *name = luaL_checkstring(L, 2);
    static const struct { const char *name; int num; } extra[] = {
        {"SIGKILL", SIGKILL}, {"KILL", SIGKILL}, {"SIGSTOP", SIGSTOP},
        {"STOP", SIGSTOP}, {"SIGCONT", SIGCONT}, {"CONT", SIGCONT}};
    signum = treadle_signal_from_name(name);
    for (size_t i = 0; signum < 0 && i < sizeof extra / sizeof extra[0]; i++)
      if (strcmp(extra[i].name, name) == 0)
        signum = extra[i].num;
    luaL_argcheck(L, signum >= 0, 2, "not a signal name (\"SIGTERM\", \"KILL\", ...)");
  }
  treadle_err_t err = treadle_child_kill(p->c, signum);
  if (err != 0)
    return lt_fail(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

static void pipe_close(lpipe_t *pp) {
  pp->closed = true;
  if (pp->afd != NULL)
    treadle_async_fd_close(pp->afd); /* wakes a read in flight: "closed" */
}

/* lua: proc:shutdown(which)
 * Closes this side of a pipe: "stdin" gives the child the end of its input
 * (as sort needs before it writes); "stdout" or "stderr" stops reading
 * (the child gets SIGPIPE or EPIPE if it writes on). A read or write of
 * that pipe then answers nil, "closed".
 * Returns: true, or nil, "not a pipe".
 * Errors: raises for another name.
 * Example: proc:shutdown("stdin") */
static int l_shutdown(lua_State *L) {
  lproc_t *p = check_proc(L);
  static const char *const names[] = {"stdin", "stdout", "stderr", NULL};
  int which = luaL_checkoption(L, 2, NULL, names);
  bool piped = which == 0 ? p->in != NULL : p->out[which - 1].afd != NULL;
  if (!piped) {
    lua_pushnil(L);
    lua_pushliteral(L, "not a pipe");
    return 2;
  }
  if (which == 0) {
    p->in_closed = true;
    treadle_async_fd_close(p->in);
  } else {
    pipe_close(&p->out[which - 1]);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int check_ms(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return -1;
  lua_Integer ms = luaL_checkinteger(L, idx);
  luaL_argcheck(L, ms >= 0 && ms <= 0x7fffffff, idx,
                "a timeout is 0 (no limit) or a positive number of milliseconds");
  return (int)ms;
}

/* lua: proc:set_timeouts(write_ms, stdout_read_ms, stderr_read_ms, wait_ms)
 * Sets the timeouts of writes, of each read of stdout and of stderr, and
 * of wait, in milliseconds (ngx.pipe's); nil keeps one as it is, 0 means
 * no limit. The default of each is 10000.
 * Returns: nothing.
 * Errors: raises for negative or non-integer values.
 * Example: proc:set_timeouts(nil, 0, nil, 60000) */
static int l_set_timeouts(lua_State *L) {
  lproc_t *p = check_proc(L);
  for (int i = 0; i < 4; i++) {
    int ms = check_ms(L, i + 2);
    if (ms >= 0)
      p->timeout_ms[i] = ms;
  }
  return 0;
}

static void proc_free(lproc_t *p) {
  if (p->c == NULL)
    return;
  treadle_async_fd_free(p->in);
  for (int i = 0; i < 2; i++) {
    treadle_async_fd_free(p->out[i].afd);
    tb_rbuf_free(&p->out[i].buf);
  }
  treadle_child_free(p->c); /* kill_on_drop, and the reaping, are its */
  memset(p, 0, sizeof *p);
}

/* __gc and __close: no op can be in flight, since a waiting task's
 * coroutine holds the object (an aborted one cleared its op). */
static int l_proc_gc(lua_State *L) {
  lproc_t *p = luaL_checkudata(L, 1, PROC_MT);
  if (p->ops == 0)
    proc_free(p);
  return 0;
}

static int l_proc_tostring(lua_State *L) {
  lproc_t *p = luaL_checkudata(L, 1, PROC_MT);
  if (p->c == NULL)
    lua_pushliteral(L, "treadle.process (closed)");
  else
    lua_pushfstring(L, "treadle.process (pid %d)", (int)treadle_child_pid(p->c));
  return 1;
}

/* -------------------------------------------------------------- spawn */

/* Indexed by treadle_stdio_t; "stdout" (2>&1) is for stderr only. */
static const char *const stdio_names[] = {"inherit", "null", "pipe", "stdout", NULL};
static const char *const option_names[] = {"cwd", "env", "clear_env", "stdin",
                                           "stdout", "stderr", "kill_on_drop", NULL};

/* Raises unless the spawn table at 1 is well formed. */
static void check_spawn_table(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  luaL_argcheck(L, n >= 1, 1, "the command is empty: {\"program\", \"arg\", ...}");
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "bad argument #1 to 'treadle.process.spawn' (command item %d "
                    "is %s, not a string)", (int)i, luaL_typename(L, -1));
    size_t len;
    const char *s = lua_tolstring(L, -1, &len); /* a number becomes a string */
    if (strlen(s) != len || (i == 1 && len == 0))
      luaL_error(L, "bad argument #1 to 'treadle.process.spawn' (command item %d "
                    "is empty or holds a NUL byte)", (int)i);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TNUMBER)
      continue;
    const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    bool known = false;
    for (int i = 0; option_names[i] != NULL; i++)
      known = known || strcmp(option_names[i], key) == 0;
    if (!known)
      luaL_error(L, "bad argument #1 to 'treadle.process.spawn' (unknown option "
                    "'%s')", key);
  }
  lua_getfield(L, 1, "cwd");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "bad argument #1 to 'treadle.process.spawn' (cwd must be a string)");
  lua_getfield(L, 1, "env");
  if (!lua_isnil(L, -1)) {
    if (!lua_istable(L, -1))
      luaL_error(L, "bad argument #1 to 'treadle.process.spawn' (env must be a "
                    "table of NAME = value)");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      int vt = lua_type(L, -1);
      if (lua_type(L, -2) != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNUMBER &&
                                             !(vt == LUA_TBOOLEAN && !lua_toboolean(L, -1))))
        luaL_error(L, "bad argument #1 to 'treadle.process.spawn' (env: names are "
                      "strings, values strings, numbers or false to remove)");
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
  const char *streams[] = {"stdin", "stdout", "stderr"};
  for (int i = 0; i < 3; i++) {
    lua_getfield(L, 1, streams[i]);
    const char *v = lua_isnil(L, -1) ? "inherit"
                    : lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    bool ok = false;
    for (int k = 0; stdio_names[k] != NULL; k++)
      ok = ok || (strcmp(stdio_names[k], v) == 0 &&
                  (k != TREADLE_STDIO_STDOUT || i == 2));
    if (!ok)
      luaL_error(L, "bad argument #1 to 'treadle.process.spawn' (%s must be "
                    "\"pipe\", \"null\"%s or \"inherit\")", streams[i],
                 i == 2 ? ", \"stdout\"" : "");
    lua_pop(L, 1);
  }
}

/* The stdio choice for streams[i], default `dflt` (checked already). */
static treadle_stdio_t stdio_of(lua_State *L, const char *field, treadle_stdio_t dflt) {
  lua_getfield(L, 1, field);
  treadle_stdio_t how = dflt;
  if (lua_type(L, -1) == LUA_TSTRING)
    for (int k = 0; stdio_names[k] != NULL; k++)
      if (strcmp(stdio_names[k], lua_tostring(L, -1)) == 0)
        how = (treadle_stdio_t)k;
  lua_pop(L, 1);
  return how;
}

/* Builds the command from the checked table (no raising but for memory). */
static treadle_err_t build_command(lua_State *L, treadle_command_t **out) {
  lua_rawgeti(L, 1, 1);
  treadle_err_t err = treadle_command_new(lua_tostring(L, -1), out);
  lua_pop(L, 1);
  if (err != 0)
    return err;
  treadle_command_t *cmd = *out;
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  for (lua_Integer i = 2; err == 0 && i <= n; i++) {
    lua_rawgeti(L, 1, i);
    err = treadle_command_arg(cmd, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_getfield(L, 1, "cwd");
  if (err == 0 && lua_isstring(L, -1))
    err = treadle_command_cwd(cmd, lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_getfield(L, 1, "clear_env");
  if (err == 0 && lua_toboolean(L, -1))
    err = treadle_command_env_clear(cmd);
  lua_pop(L, 1);
  lua_getfield(L, 1, "env");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      if (err == 0)
        err = lua_type(L, -1) == LUA_TBOOLEAN
                  ? treadle_command_env_remove(cmd, lua_tostring(L, -2))
                  : treadle_command_env(cmd, lua_tostring(L, -2), lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (err == 0)
    err = treadle_command_stdin(cmd, stdio_of(L, "stdin", TREADLE_STDIO_PIPE));
  if (err == 0)
    err = treadle_command_stdout(cmd, stdio_of(L, "stdout", TREADLE_STDIO_PIPE));
  if (err == 0)
    err = treadle_command_stderr(cmd, stdio_of(L, "stderr", TREADLE_STDIO_INHERIT));
  lua_getfield(L, 1, "kill_on_drop");
  if (err == 0)
    err = treadle_command_kill_on_drop(cmd, lua_toboolean(L, -1));
  lua_pop(L, 1);
  return err;
}

/* lua: treadle.process.spawn(cmd)
 * Starts a child process (OpenResty's ngx.pipe.spawn). cmd is a table
 * {program, arg, ..., cwd =, env =, clear_env =, stdin =, stdout =,
 * stderr =, kill_on_drop =}, usually written as the call's one argument
 * (treadle.process.spawn{"sort", "-r"}). program is a path,
 * or a name looked up in PATH; the other items are its arguments, passed
 * as they are (no shell). cwd: its working directory. env: variables to
 * set (NAME = "value") or remove (NAME = false) in a copy of this
 * process's environment (of an empty one with clear_env = true). stdin,
 * stdout, stderr: "pipe" (the default for stdin and stdout), "inherit"
 * (the default for stderr) or "null"; stderr may also be "stdout", where
 * stdout goes (a shell's 2>&1: both read through stdout_read_*). kill_on_drop: SIGKILL the child when
 * the object is collected while it runs. A child is always reaped. The
 * object has write, shutdown, stdout_read_line/_all/_bytes/_any (and
 * stderr_...), wait, kill, pid and set_timeouts.
 * Returns: the process object, or nil, "program: message", errno name
 * ("ENOENT" for a program or cwd that does not exist).
 * Errors: raises for a malformed table (an empty command, an item that is
 * not a string, an unknown option, a bad stdio value), and outside a task.
 * Example: local proc = assert(treadle.process.spawn{"sort", stdin = "pipe", stdout = "pipe"}) */
static int l_spawn(lua_State *L) {
  check_spawn_table(L);
  lhome_t *home = lt_home(L);
  if (home == NULL)
    lt_need_task(L, "treadle.process.spawn"); /* raises */
  lua_settop(L, 1);
  lproc_t *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  luaL_setmetatable(L, PROC_MT);
  for (int i = 0; i < 4; i++)
    p->timeout_ms[i] = DEFAULT_TIMEOUT_MS;
  treadle_command_t *cmd = NULL;
  treadle_err_t err = build_command(L, &cmd);
  if (err == 0)
    err = treadle_command_spawn(cmd, home->h, &p->c);
  treadle_command_free(cmd);
  if (err != 0) {
    lua_rawgeti(L, 1, 1);
    const char *prog = lua_tostring(L, -1);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", prog, treadle_strerror(err));
    lua_pushstring(L, treadle_err_name(err));
    return 3;
  }
  p->in = treadle_child_take_stdin(p->c);
  for (int i = 0; i < 2; i++) {
    p->out[i].proc = p;
    p->out[i].afd = i == 0 ? treadle_child_take_stdout(p->c)
                           : treadle_child_take_stderr(p->c);
  }
  return 1;
}

static const luaL_Reg proc_methods[] = {
    {"pid", l_pid},
    {"kill", l_kill},
    {"wait", l_wait},
    {"write", l_write},
    {"shutdown", l_shutdown},
    {"set_timeouts", l_set_timeouts},
    {"stdout_read_line", l_stdout_read_line},
    {"stdout_read_all", l_stdout_read_all},
    {"stdout_read_bytes", l_stdout_read_bytes},
    {"stdout_read_any", l_stdout_read_any},
    {"stderr_read_line", l_stderr_read_line},
    {"stderr_read_all", l_stderr_read_all},
    {"stderr_read_bytes", l_stderr_read_bytes},
    {"stderr_read_any", l_stderr_read_any},
    {NULL, NULL}};

static const luaL_Reg process_functions[] = {{"spawn", l_spawn}, {NULL, NULL}};

void lt_open_process(lua_State *L) {
  lt_new_class(L, PROC_MT, proc_methods, l_proc_gc, l_proc_gc, l_proc_tostring);
  luaL_newlib(L, process_functions);
  lt_name_table(L, "treadle.process");
  lua_setfield(L, -2, "process");
}
