/* treadle.repl([opts]): a Lua console whose lines run as tasks of a
 * current_thread runtime, reading its input through the runtime's own I/O
 * driver, so that the tasks a line spawns keep running while the console
 * waits for the next one. Its Lua part (repl_chunk) runs each line as a
 * task it can abort, and a watcher task takes SIGINT over. Called from
 * inside a task it runs there; otherwise it starts treadle.run(console,
 * opts) (`lua5.4 -l treadle -e "treadle.repl()"`, or the treadle-lua
 * launcher).
 *
 * Its input is the console object (metatable "treadle.console"), which only
 * the Lua part gets:
 * 1. console:read(prompt) waits for the next line as an op of the calling
 *    task. On a terminal, with GNU readline (TREADLE_HAVE_READLINE), it
 *    installs readline's callback handler with the prompt, waits until
 *    stdin is readable (bindings/common's TB_FD_READABLE, on an async fd of
 *    its own) and hands each byte to rl_callback_read_char until the
 *    handler has the line (kept in the history) or the end of the input;
 *    the handler is removed then, so that the terminal is in its usual
 *    mode while the line runs. Elsewhere (a pipe, a file, no readline) it
 *    writes the prompt and reads stdin (TB_FD_READ) up to a newline. Either
 *    way a line lands in `buf`, newline and all, and the read returns it.
 * 2. console:interrupt() ends a read in progress with false: Ctrl-C at the
 *    prompt, which the watcher sees.
 * 3. Ctrl-C while a line runs: console:arm(task) names the line's task. A
 *    SIGINT handler of the console's own then sets a hook on that task's
 *    coroutine (call, return and every instruction, as lua.c's laction
 *    does) that raises "interrupted" in whatever the line runs, a loop that
 *    never waits included; the watcher aborts a line that waits instead.
 *    Treadle's signal driver stays in front: once the console's handler is
 *    in, a SIGINT listener made at once puts treadle's handler back before
 *    it, chaining to it. console:disarm() ends it (the handler stays, and
 *    does nothing); console:hooked() says, once, that a SIGINT reached the
 *    hook. The handler may run on any thread: lua_sethook is meant to be
 *    called asynchronously, and disarm waits until no handler runs before
 *    the coroutine may go. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef TREADLE_HAVE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

#include "ltreadle.h"

#define CONSOLE_MT "treadle.console"
#define CHUNK 4096

typedef enum { GOT_NOTHING, GOT_LINE, GOT_EOF, GOT_INTERRUPT, GOT_ERROR } got_t;

typedef struct {
  treadle_async_fd_t *afd; /* stdin, on a file description of its own */
  int fd;                  /* plain reads of a dup of fd 0 (afd NULL), or -1 */
  bool readline;           /* a terminal read through readline */
  bool closed;
  bool handler_ours;       /* the SIGINT handler of step 3 went in */
  struct sigaction saved;  /* the SIGINT handler before it */
  /* The read in progress (its task's thread): */
  bool reading;
  ltask_t *reader;         /* its task, for interrupt */
  tb_op_t io;              /* its step: readable, or a read */
  got_t got;
  treadle_err_t err;       /* GOT_ERROR's */
  size_t line_len;         /* GOT_LINE's, at the start of buf */
  size_t used;             /* and with its newline */
  /* Input that came and is not returned yet: */
  char *buf;
  size_t len, cap;
  bool eof;
} lconsole_t;

static lconsole_t *open_console; /* one at a time: readline is global */

static bool buf_add(lconsole_t *con, const char *p, size_t n) {
  if (con->len + n > con->cap) {
    size_t cap = con->cap ? con->cap : CHUNK;
    while (cap < con->len + n)
      cap *= 2;
    char *b = realloc(con->buf, cap);
    if (b == NULL)
      return false;
    con->buf = b;
    con->cap = cap;
  }
  memcpy(con->buf + con->len, p, n);
  con->len += n;
  return true;
}

/* Step 1's end: true once the read has its outcome. */
static bool have_line(lconsole_t *con) {
  if (con->got != GOT_NOTHING)
    return true;
  char *nl = con->len > 0 ? memchr(con->buf, '\n', con->len) : NULL;
  if (nl != NULL) {
    con->line_len = (size_t)(nl - con->buf);
    con->used = con->line_len + 1;
    con->got = GOT_LINE;
  } else if (con->eof) { /* a last line without a newline, then the end */
    con->line_len = con->used = con->len;
    con->got = con->len > 0 ? GOT_LINE : GOT_EOF;
  }
  return con->got != GOT_NOTHING;
}

/* The step in con->io is READY: 0, or its error (the read's outcome). */
static bool step_failed(lconsole_t *con) {
  treadle_err_t err = con->io.err;
  if (err == 0 && con->io.kind == TB_FD_READ) {
    size_t got = con->io.u.fd_read.got;
    if (got == 0)
      con->eof = true;
    else if (!buf_add(con, tb_op_bytes(&con->io), got))
      err = TREADLE_ENOMEM;
  }
  tb_op_clear(&con->io);
  if (err != 0) {
    con->got = GOT_ERROR;
    con->err = err;
  }
  return err != 0;
}

/* ------------------------------------------------------------ readline */

#ifdef TREADLE_HAVE_READLINE
static lconsole_t *editing; /* whose handler is installed */

static void on_line(char *line) {
  lconsole_t *con = editing;
  editing = NULL;
  rl_callback_handler_remove(); /* the terminal as it was, for the line */
  if (line == NULL) {
    con->eof = true;
    return;
  }
  if (line[0] != '\0')
    add_history(line);
  if (!buf_add(con, line, strlen(line)) || !buf_add(con, "\n", 1)) {
    con->got = GOT_ERROR;
    con->err = TREADLE_ENOMEM;
  }
  free(line);
}

static void edit_begin(lconsole_t *con, const char *prompt) {
  static bool ready;
  if (!ready) {
    rl_readline_name = "treadle";
    rl_instream = stdin;
    rl_outstream = stdout;
    rl_catch_signals = 0; /* SIGINT is treadle's, and the console's */
    rl_catch_sigwinch = 0;
    rl_change_environment = 0;
    using_history();
    ready = true;
  }
  rl_reset_screen_size(); /* no SIGWINCH handler: ask at each line */
  editing = con;
  rl_callback_handler_install(prompt, on_line);
}

/* Drops a line being typed (Ctrl-C, or the read went away). */
static void edit_drop(lconsole_t *con) {
  if (editing != con)
    return;
  editing = NULL;
  rl_free_line_state();
  rl_callback_sigcleanup();
  rl_callback_handler_remove();
}
#endif

/* ---------------------------------------------------------------- read */

/* The read's leaf (TB_WAIT): step 1. */
static treadle_poll_t console_poll(void *ud, treadle_cx_t *cx,
                                   treadle_err_t *err) {
  lconsole_t *con = ud;
  *err = 0;
  while (!have_line(con)) {
    if (con->io.kind == TB_NONE) {
      if (con->readline)
        tb_op_fd_readable(&con->io, con->afd);
      else
        tb_op_fd_read(&con->io, con->afd, con->fd, CHUNK);
    }
    if (tb_op_poll(&con->io, cx) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (step_failed(con))
      break;
#ifdef TREADLE_HAVE_READLINE
    if (con->readline)
      rl_callback_read_char(); /* a byte is there: it does not block */
#endif
  }
  return TREADLE_READY;
}

/* A line (taken off buf), nil at the end of the input, false when
 * interrupted, or nil, message, errno name. */
static int console_push(lua_State *co, ltask_t *t) {
  lconsole_t *con = t->op.u.own.ud;
  switch (con->got) {
  case GOT_LINE:
    lua_pushlstring(co, con->buf, con->line_len);
    memmove(con->buf, con->buf + con->used, con->len - con->used);
    con->len -= con->used;
    return 1;
  case GOT_INTERRUPT:
    lua_pushboolean(co, 0);
    return 1;
  case GOT_ERROR:
    return lt_fail(co, con->err);
  default:
    lua_pushnil(co);
    return 1;
  }
}

/* The read is over, or went away: a line it did not return stays in buf
 * for the next one. */
static void console_done(void *ud) {
  lconsole_t *con = ud;
  tb_op_clear(&con->io);
#ifdef TREADLE_HAVE_READLINE
  edit_drop(con);
#endif
  con->reading = false;
  con->reader = NULL;
  con->got = GOT_NOTHING;
}

static lconsole_t *check_console(lua_State *L) {
  return luaL_checkudata(L, 1, CONSOLE_MT);
}

/* lua: console:read([prompt])
 * Shows the prompt and waits for the next line, as a task's wait: with
 * line editing and history (GNU readline) on a terminal, plain lines
 * otherwise.
 * Returns: the line (without its newline), nil at the end of the input,
 * false after console:interrupt(), or nil, message, errno name.
 * Errors: raises outside a task or while another task reads it.
 * Example: local line = console:read("> ") */
static int l_console_read(lua_State *L) {
  lconsole_t *con = check_console(L);
  const char *prompt = luaL_optstring(L, 2, "");
  ltask_t *t = lt_need_task(L, "console:read");
  if (con->closed)
    return lt_fail(L, TREADLE_ECLOSED);
  if (con->reading)
    return luaL_error(L, "another task is already reading the console");
  con->reading = true;
  con->reader = t;
#ifdef TREADLE_HAVE_READLINE
  if (con->readline)
    edit_begin(con, prompt);
  else
#endif
  {
    fputs(prompt, stdout);
    fflush(stdout);
  }
  t->op.kind = LOP_OWN;
  t->op.u.own.push = console_push;
  t->op.u.own.done = console_done;
  t->op.u.own.ud = con;
  tb_op_wait(&t->op.tb, console_poll, NULL, con);
  return lt_wait(L, t);
}

/* lua: console:interrupt()
 * Ends a read in progress: it returns false, and a line being typed is
 * dropped (Ctrl-C at the prompt).
 * Returns: nothing. */
static int l_console_interrupt(lua_State *L) {
  lconsole_t *con = check_console(L);
  if (con->reading && con->got == GOT_NOTHING) {
    con->got = GOT_INTERRUPT;
    if (con->reader->waker != NULL)
      treadle_wake_by_ref(con->reader->waker);
  }
  return 0;
}

/* ------------------------------------------------------------ Ctrl-C */

static lua_State *_Atomic hook_target; /* the armed line's coroutine */
static _Atomic int hook_busy;          /* handlers running now */
static atomic_bool hook_fired;

static void stop_line(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted");
}

static void on_sigint(int signum) {
  (void)signum;
  int saved = errno;
  /* seq_cst: disarm, having taken the target away, waits for 0 here. */
  atomic_fetch_add(&hook_busy, 1);
  lua_State *L = atomic_load(&hook_target); /* seq_cst: see above */
  if (L != NULL) {
    lua_sethook(L, stop_line, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    /* Relaxed: a flag the watcher reads later; no data hangs on it. */
    atomic_store_explicit(&hook_fired, true, memory_order_relaxed);
  }
  atomic_fetch_sub(&hook_busy, 1); /* seq_cst: see above */
  errno = saved;
}

static void disarm(void) {
  /* seq_cst: a handler that still sees L has counted itself in hook_busy. */
  lua_State *L = atomic_exchange(&hook_target, NULL);
  while (atomic_load(&hook_busy) != 0)
    sched_yield();
  if (L != NULL)
    lua_sethook(L, NULL, 0, 0); /* a hook that never fired */
}

/* Step 3: the console's handler, with treadle's put back in front. */
static void install_sigint(lconsole_t *con, treadle_handle_t *h) {
  struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = SA_RESTART};
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGINT, &sa, &con->saved) != 0)
    return;
  con->handler_ours = true;
  treadle_signal_t s;
  if (treadle_signal_init(&s, h, SIGINT) == 0)
    treadle_signal_drop(&s);
}

/* Puts the handler before it back, unless treadle's is in front: that one
 * chains to the console's, which does nothing disarmed, and block_on puts
 * back the handler it found when it returns. */
static void remove_sigint(lconsole_t *con) {
  struct sigaction cur;
  if (con->handler_ours && sigaction(SIGINT, NULL, &cur) == 0 &&
      !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == on_sigint)
    sigaction(SIGINT, &con->saved, NULL);
  con->handler_ours = false;
}

/* lua: console:arm(task)
 * Ctrl-C from now on raises "interrupted" in the task, also in a loop
 * that never waits, until console:disarm().
 * Returns: nothing. */
static int l_console_arm(lua_State *L) {
  check_console(L);
  ltask_t *t = lt_check_task(L, 2);
  disarm();
  if (t->status == LT_RUNNING)
    atomic_store(&hook_target, t->co); /* seq_cst: see on_sigint */
  return 0;
}

/* lua: console:disarm()
 * Ends console:arm: Ctrl-C no longer reaches the task's code.
 * Returns: nothing. */
static int l_console_disarm(lua_State *L) {
  check_console(L);
  disarm();
  return 0;
}

/* lua: console:hooked()
 * Returns: true once after a Ctrl-C reached an armed task's code (the
 * watcher then leaves that Ctrl-C alone), else false. */
static int l_console_hooked(lua_State *L) {
  check_console(L);
  /* Relaxed: see on_sigint. */
  lua_pushboolean(L, atomic_exchange_explicit(&hook_fired, false,
                                              memory_order_relaxed));
  return 1;
}

/* ------------------------------------------------------------ the object */

/* The console on stdin (in a task); one at a time. */
static int l_console_open(lua_State *L) {
  lhome_t *home = lt_home(L);
  if (home == NULL)
    return luaL_error(L, "the console needs a running treadle task");
  if (open_console != NULL)
    return luaL_error(L, "a console is already open");
  lconsole_t *con = lua_newuserdatauv(L, sizeof *con, 0);
  memset(con, 0, sizeof *con);
  con->fd = -1;
  con->closed = true; /* until it is open */
  luaL_setmetatable(L, CONSOLE_MT);
  treadle_err_t err = lt_stdin_open(home->h, &con->afd, &con->fd);
  if (err != 0)
    return lt_fail(L, err);
  con->closed = false;
#ifdef TREADLE_HAVE_READLINE
  con->readline = con->afd != NULL && isatty(0);
#endif
  install_sigint(con, home->h);
  open_console = con;
  return 1;
}

/* lua: console:close()
 * Closes the console (not fd 0): a read in progress gets nil, message,
 * "ECLOSED"; Ctrl-C no longer reaches a task's code.
 * Returns: nothing. */
static int l_console_close(lua_State *L) {
  lconsole_t *con = check_console(L);
  if (con->closed)
    return 0;
  con->closed = true;
  if (con->afd != NULL)
    treadle_async_fd_close(con->afd);
  if (con->fd >= 0)
    close(con->fd); /* plain reads never wait: none is in progress */
  con->fd = -1;
#ifdef TREADLE_HAVE_READLINE
  edit_drop(con);
#endif
  disarm();
  remove_sigint(con);
  if (open_console == con)
    open_console = NULL;
  return 0;
}

static int l_console_gc(lua_State *L) {
  lconsole_t *con = check_console(L);
  l_console_close(L);
  treadle_async_fd_free(con->afd);
  con->afd = NULL;
  free(con->buf);
  con->buf = NULL;
  return 0;
}

static int l_console_tostring(lua_State *L) {
  lconsole_t *con = check_console(L);
  lua_pushfstring(L, "treadle.console (%s): %p",
                  con->closed     ? "closed"
                  : con->readline ? "readline"
                                  : "plain lines",
                  (void *)con);
  return 1;
}

/* -------------------------------------------------------------- Lua part */

/* lua: treadle.repl([opts])
 * Runs an interactive console on stdin: each line (or block, continued at
 * the ">>" prompt) runs as a task and its results are printed; tasks it
 * spawns keep running between lines. On a terminal, lines are edited and
 * recalled (Up, Down) with GNU readline, as in lua5.4's own console, when
 * treadle was built with it. Ctrl-C interrupts the running line, also one
 * that never waits (while true do end), or clears the one being typed;
 * Ctrl-D ends the console. Outside a task it runs treadle.run(console,
 * opts) on current_thread (opts as for treadle.run; another flavor raises);
 * inside a task it runs there.
 * Returns: nothing, once stdin ends.
 * Errors: raises for opts that are not a table, or another flavor.
 * Example: lua5.4 -l treadle -e "treadle.repl()" */
static const char repl_chunk[] =
    "local treadle, open_console = ...\n"
    "local function write(...) io.stdout:write(...); io.stdout:flush() end\n"
    "\n"
    "-- Compiles a line as lua.c does: as an expression first, then as a\n"
    "-- statement. Returns the function, or nil and the error, or nil and\n"
    "-- true when the statement is not finished yet.\n"
    "local function compile(text)\n"
    "  local fn = load('return ' .. text, '=stdin')\n"
    "  if fn then return fn end\n"
    "  local err\n"
    "  fn, err = load(text, '=stdin')\n"
    "  if fn then return fn end\n"
    "  if err:sub(-5) == '<eof>' then return nil, true end\n"
    "  return nil, err\n"
    "end\n"
    "\n"
    "-- r: table.pack(pcall(task.join, task))\n"
    "local function show(r)\n"
    "  if not r[1] then\n"
    "    write(r[2] == 'cancelled' and 'interrupted' or tostring(r[2]), '\\n')\n"
    "  elseif r.n > 1 then\n"
    "    local out = {}\n"
    "    for i = 2, r.n do out[#out + 1] = tostring(r[i]) end\n"
    "    write(table.concat(out, '\\t'), '\\n')\n"
    "  end\n"
    "end\n"
    "\n"
    "local function console()\n"
    "  local input <close> = assert(open_console())\n"
    "  local running -- the task of the line that runs now\n"
    "  local watch_task = treadle.spawn(function()\n"
    "    while treadle.signal('SIGINT') do\n"
    "      local hooked = input:hooked() -- it stopped a line's code itself\n"
    "      if running then\n"
    "        input:disarm()\n"
    "        running:abort()\n"
    "      elseif not hooked then\n"
    "        input:interrupt()\n"
    "      end\n"
    "    end\n"
    "  end)\n"
    "  write('treadle ', treadle.version, ' on ', _VERSION, ': lines run as tasks;',\n"
    "        ' tasks you spawn keep running between lines.\\n',\n"
    "        'Ctrl-C interrupts, Ctrl-D exits.\\n')\n"
    "  local buffer\n"
    "  while true do\n"
    "    local line, err = input:read(buffer and '>> ' or '> ')\n"
    "    if line == nil then\n"
    "      if err then write('stdin: ', err, '\\n') end\n"
    "      write('\\n')\n"
    "      break\n"
    "    elseif line == false then -- Ctrl-C at the prompt\n"
    "      write('\\n')\n"
    "      buffer = nil\n"
    "    else\n"
    "      local text = buffer and buffer .. '\\n' .. line or line\n"
    "      local fn, cerr = compile(text)\n"
    "      buffer = cerr == true and text or nil\n"
    "      if fn then\n"
    "        running = treadle.spawn(fn)\n"
    "        input:arm(running)\n"
    "        show(table.pack(pcall(running.join, running)))\n"
    "        input:disarm()\n"
    "        running = nil\n"
    "      elseif cerr ~= true then\n"
    "        write(cerr, '\\n')\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  watch_task:abort()\n"
    "end\n"
    "\n"
    "return function(opts)\n"
    "  if opts ~= nil and type(opts) ~= 'table' then\n"
    "    error(\"bad argument #1 to 'repl' (table expected, got \" .. type(opts) .. ')', 2)\n"
    "  end\n"
    "  if pcall(treadle.worker) then return console() end\n"
    "  local o = {}\n"
    "  for k, v in pairs(opts or {}) do o[k] = v end\n"
    "  if o.flavor ~= nil and o.flavor ~= 'current_thread' then\n"
    "    error('treadle.repl runs on current_thread', 2)\n"
    "  end\n"
    "  o.flavor = 'current_thread'\n"
    "  return treadle.run(console, o)\n"
    "end\n";

static const luaL_Reg console_methods[] = {
    {"read", l_console_read},     {"interrupt", l_console_interrupt},
    {"arm", l_console_arm},       {"disarm", l_console_disarm},
    {"hooked", l_console_hooked}, {"close", l_console_close},
    {NULL, NULL}};

void lt_open_repl(lua_State *L) {
  lt_new_class(L, CONSOLE_MT, console_methods, l_console_gc, l_console_close,
               l_console_tostring);
  if (luaL_loadbuffer(L, repl_chunk, sizeof repl_chunk - 1, "=treadle.repl") != LUA_OK)
    lua_error(L);
  lua_pushvalue(L, -2);
  lua_pushcfunction(L, l_console_open);
  lua_call(L, 2, 1);
  lua_setfield(L, -2, "repl");
}
