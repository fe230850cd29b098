/* Cosockets: OpenResty's ngx.socket.tcp API on treadle's connections
 * (ARCHITECTURE.md "Lua").
 *
 * A connection (treadle.conn, ltreadle_net.c) gets luasocket's receive
 * patterns over a buffer of its own (bindings/common/recvbuf.c): "*l",
 * "*a", a byte count, receiveany and receiveuntil's iterator. Each wait is
 * one leaf op of the calling task with a deadline (the socket's connect,
 * send or read timeout), never a task of its own:
 * 1. A method looks at the buffer; what the pattern asks for is handed out
 *    at once.
 * 2. Otherwise it reads into the buffer's free room (TB_READ_INTO) as a
 *    LOP_OWN op whose push (absorb) records the outcome in the conn, and
 *    yields with a continuation that goes back to step 1.
 * Errors are OpenResty's strings: nil, "timeout" | "closed" | "connection
 * refused" | ..., and for receive the partial data as a third value. A
 * timeout leaves the connection open; any other error closes it.
 *
 * The keep-alive pool belongs to the home (one per worker's lua_State):
 * setkeepalive moves the stream into it under its key ("host:port",
 * "unix:path" or opts.pool), connect takes the newest live one back.
 * Idle connections are closed once idle_ms passed (a sweeper task of the
 * home's worker sleeps until the earliest such deadline while there is
 * one), when the peer closed them or sent something while idle (looked
 * at whenever the pool is used), when a key holds more than pool_size, and
 * when the runtime ends.
 *
 * UDP sockets (treadle.udp.socket) send and receive whole datagrams on a
 * connected datagram socket, with a read timeout. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ltreadle.h"
#include "net.h" /* the stream's fd, for setoption and the pool's check */

#define UDP_MT "treadle.udp"
#define DEFAULT_TIMEOUT_MS 60000 /* OpenResty's lua_socket_*_timeout */
#define DEFAULT_IDLE_MS 60000    /* lua_socket_keepalive_timeout */
#define DEFAULT_POOL_SIZE 30     /* lua_socket_pool_size */
#define READ_ROOM 4096           /* a read asks for at least this room */
#define UDP_DEFAULT_SIZE 8192
#define UDP_MAX_SIZE 65536

enum { T_CONNECT, T_SEND, T_READ };

/* ------------------------------------------------------------ helpers */

static lconn_t *check_sock(lua_State *L) {
  return luaL_checkudata(L, 1, LT_CONN_MT);
}

static bool connected(const lconn_t *c) {
  return c->st.s != NULL && !c->st.closed;
}

static uint64_t deadline_ns(const int *timeout_ms, int which) {
  int ms = timeout_ms[which];
  return (uint64_t)(ms > 0 ? ms : DEFAULT_TIMEOUT_MS) * 1000000u;
}

/* nil, msg; returns 2. */
static int fail2(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* OpenResty's message for an op's error. */
static const char *io_message(treadle_err_t err, bool timed_out) {
  if (err == TREADLE_ETIMEDOUT && timed_out)
    return "timeout";
  if (err == TREADLE_ECLOSED)
    return "closed";
  return treadle_strerror(err);
}

static void take_bytes(lconn_t *c, size_t n) {
  tb_rbuf_consume(&c->buf, n);
  c->consumed += n;
}

/* Pushes all buffered bytes (the partial data of a failed receive). */
static void push_partial(lua_State *L, lconn_t *c) {
  size_t n = tb_rbuf_len(&c->buf);
  lua_pushlstring(L, tb_rbuf_data(&c->buf), n);
  take_bytes(c, n);
}

/* After an error other than a timeout: OpenResty closes the socket. */
static void close_after_error(lconn_t *c, bool timed_out) {
  if (!timed_out)
    tb_stream_close(&c->st);
}

void lt_conn_op_done(void *conn) { ((lconn_t *)conn)->ops--; }

/* A read in flight writes into the buffer: nobody else may touch it. */
static void check_not_reading(lua_State *L, const lconn_t *c) {
  if (c->st.reading)
    luaL_error(L, "socket busy reading: another task reads this connection");
}

/* The push of a cosocket op (LOP_OWN): records its outcome in the conn,
 * for the method's continuation to read. */
static int absorb(lua_State *co, ltask_t *t) {
  (void)co;
  lconn_t *c = t->op.u.own.ud;
  tb_op_t *op = &t->op.tb;
  c->io_err = op->err;
  c->io_timeout = op->timed_out;
  c->io_got = 0;
  if (op->kind == TB_READ_INTO && op->err == 0) {
    c->io_got = op->u.read_into.got;
    tb_rbuf_commit(&c->buf, c->io_got);
    c->eof = c->io_got == 0;
  } else if (op->kind == TB_READ_INTO && op->err == TREADLE_ECONNRESET &&
             c->st.tls != NULL) {
    /* A TLS peer that closed without close_notify (as many servers do):
     * the end of the stream, as nginx reads it. */
    c->io_err = 0;
    c->eof = true;
  } else if (op->kind == TB_CONNECT && op->err == 0) {
    c->io_err = tb_stream_init(&c->st, tb_op_take_stream(op));
  }
  return 0;
}

/* A TLS connection's readable state is OpenSSL's, not the socket's: bytes
 * may wait decrypted inside OpenSSL while the socket has nothing, and a
 * socket may hold half a record that decrypts to nothing yet. So the only
 * sure answer is a read: it serves buffered plaintext at once, and waits
 * (PENDING) until a whole record brings some. What it reads goes to the
 * receive buffer, where the next receive finds it; the end and a peer that
 * closed without close_notify are the end, as absorb has them. */
treadle_poll_t lt_conn_tls_fill(lconn_t *c, treadle_cx_t *cx, treadle_err_t *err) {
  size_t room, n;
  char *dst = tb_rbuf_room(&c->buf, READ_ROOM, &room);
  if (dst == NULL) {
    *err = TREADLE_ENOMEM;
    return TREADLE_READY;
  }
  if (room > TB_READ_CHUNK * 4)
    room = TB_READ_CHUNK * 4;
  if (treadle_tls_read_poll(c->st.tls, cx, dst, room, &n, err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (*err == TREADLE_ECONNRESET)
    *err = 0; /* n is 0: the end */
  if (*err == 0) {
    tb_rbuf_commit(&c->buf, n);
    c->eof = n == 0;
  }
  return TREADLE_READY;
}

/* Starts the op made in t->op.tb with a deadline; true when it finished at
 * once (outcome in c->io_*), false when the caller must yield. `done` runs
 * when the op is cleared (ops--, and what else the op needs undone). */
static bool io_begin_with(lua_State *L, ltask_t *t, lconn_t *c, uint64_t ns,
                          void (*done)(void *conn)) {
  tb_op_set_deadline(&t->op.tb, ns);
  t->op.kind = LOP_OWN;
  t->op.u.own.push = absorb;
  t->op.u.own.done = done;
  t->op.u.own.ud = c;
  c->ops++;
  if (lt_op_poll(t, lt_current_cx) == TREADLE_PENDING)
    return false;
  lua_pop(L, lt_op_push(L, t));
  return true;
}

static bool io_begin(lua_State *L, ltask_t *t, lconn_t *c, uint64_t ns) {
  return io_begin_with(L, t, c, ns, lt_conn_op_done);
}

/* Starts a read into the buffer's free room: 1 when it finished at once,
 * 0 to yield, -1 with nil, message pushed (2 values) when it cannot. */
static int read_more(lua_State *L, lconn_t *c, ltask_t **tp) {
  if (*tp == NULL)
    *tp = lt_need_task(L, "receive");
  size_t room;
  char *dst = tb_rbuf_room(&c->buf, READ_ROOM, &room);
  if (dst == NULL)
    return fail2(L, "no memory"), -1;
  if (room > TB_READ_CHUNK * 4)
    room = TB_READ_CHUNK * 4;
  treadle_err_t err = tb_op_read_into(&(*tp)->op.tb, &c->st, dst, room);
  if (err == TREADLE_EBUSY)
    luaL_error(L, "socket busy reading: another task reads this connection");
  if (err != 0)
    return fail2(L, io_message(err, false)), -1;
  return io_begin(L, *tp, c, deadline_ns(c->timeout_ms, T_READ)) ? 1 : 0;
}

/* ------------------------------------------------------------ receive */

enum { PAT_LINE, PAT_ALL, PAT_COUNT, PAT_ANY };

/* The pattern at idx: "*l", "l", "*a", "a", a count (also a numeric
 * string: lua-resty-memcached passes one), or none ("*l"). */
static int check_pattern(lua_State *L, int idx, size_t *n) {
  *n = 0;
  int type = lua_type(L, idx);
  if (type == LUA_TNONE || type == LUA_TNIL)
    return PAT_LINE;
  if (type == LUA_TSTRING) { /* the patterns first: no number conversion */
    const char *p = lua_tostring(L, idx);
    if (strcmp(p, "*l") == 0 || strcmp(p, "l") == 0)
      return PAT_LINE;
    if (strcmp(p, "*a") == 0 || strcmp(p, "a") == 0)
      return PAT_ALL;
  }
  if (lua_isnumber(L, idx)) {
    lua_Integer v;
    lua_Number d = lua_tonumber(L, idx);
    if (!lua_isinteger(L, idx)) {
      luaL_argcheck(L, d == d && d >= 0 && d < 9.0e15, idx, "bad pattern argument");
      v = (lua_Integer)d;
    } else {
      v = lua_tointeger(L, idx);
    }
    luaL_argcheck(L, v >= 0, idx, "bad pattern argument: a negative size");
    *n = (size_t)v;
    return PAT_COUNT;
  }
  return luaL_argerror(L, idx, "bad pattern argument (\"*l\", \"*a\" or a size)");
}

/* What the pattern asks for, if the buffer has it: pushes it, returns 1. */
static int pattern_met(lua_State *L, lconn_t *c, int kind, size_t n) {
  size_t len = tb_rbuf_len(&c->buf), used;
  const char *p = tb_rbuf_data(&c->buf);
  switch (kind) {
  case PAT_LINE:
    if (!tb_recv_line(p, len, &used))
      return 0;
    {
      /* the usual line has no CR or one before its LF: no copy to strip */
      size_t end = used - 1;
      const char *cr = memchr(p, '\r', end);
      if (cr == NULL || cr == p + end - 1) {
        lua_pushlstring(L, p, cr == NULL ? end : end - 1);
      } else {
        luaL_Buffer b;
        char *dst = luaL_buffinitsize(L, &b, used);
        luaL_pushresultsize(&b, tb_strip_cr(dst, p, end));
      }
    }
    take_bytes(c, used);
    return 1;
  case PAT_COUNT:
  case PAT_ANY:
    if (kind == PAT_COUNT ? len < n : len == 0)
      return 0;
    if (kind == PAT_ANY && len < n)
      n = len;
    lua_pushlstring(L, p, n);
    take_bytes(c, n);
    return 1;
  default: /* PAT_ALL: only the end of the stream */
    return 0;
  }
}

static int receive_k(lua_State *L, int status, lua_KContext ctx);
static int receiveany_k(lua_State *L, int status, lua_KContext ctx);

/* Steps 1 and 2 of the top, for receive (args at 2) and receiveany. */
static int receive_loop(lua_State *L, lconn_t *c, int kind, size_t n,
                        bool after_io) {
  ltask_t *t = NULL;
  for (;;) {
    if (after_io) {
      after_io = false;
      if (c->io_err != 0) {
        lua_pushnil(L);
        lua_pushstring(L, io_message(c->io_err, c->io_timeout));
        push_partial(L, c);
        close_after_error(c, c->io_timeout);
        return 3;
      }
      if (c->eof) {
        tb_stream_close(&c->st);
        if (kind == PAT_ALL) {
          push_partial(L, c);
          return 1;
        }
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        push_partial(L, c);
        return 3;
      }
    }
    if (pattern_met(L, c, kind, n))
      return 1;
    int r = read_more(L, c, &t);
    if (r < 0)
      return 2;
    if (r == 0)
      return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L),
                        kind == PAT_ANY ? receiveany_k : receive_k);
    after_io = true;
  }
}

/* The continuations: receive's pattern, or receiveany's max, is still
 * argument 2. */
static int receive_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_settop(L, (int)ctx);
  size_t n;
  int kind = check_pattern(L, 2, &n);
  return receive_loop(L, check_sock(L), kind, n, true);
}

static int receiveany_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_settop(L, (int)ctx);
  return receive_loop(L, check_sock(L), PAT_ANY, (size_t)lua_tointeger(L, 2), true);
}

/* lua: sock:receive([pattern])
 * Reads by pattern, as OpenResty's tcpsock:receive (and luasocket's):
 * "*l" or "l" (the default) a line without its LF (CR bytes are dropped),
 * "*a" or "a" everything until the peer closes, or a number: exactly that
 * many bytes. Waits at most the read timeout (settimeout) per read.
 * Returns: the data, or nil, error, partial: error is "timeout" (the
 * connection stays open), "closed" (the peer closed first: partial is what
 * came) or a system error such as "connection reset by peer" (closed).
 * Errors: raises for a bad pattern, outside a task when it must wait, and
 * while another task reads the connection.
 * Example: local line, err = sock:receive("*l") */
static int l_receive(lua_State *L) {
  lconn_t *c = check_sock(L);
  size_t n;
  int kind = check_pattern(L, 2, &n);
  lua_settop(L, 2);
  if (!connected(c))
    return fail2(L, "closed");
  check_not_reading(L, c);
  if (kind == PAT_COUNT && n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  return receive_loop(L, c, kind, n, false);
}

/* lua: sock:receiveany(max)
 * Returns what has come, at most max bytes, waiting only when nothing has
 * (OpenResty's tcpsock:receiveany).
 * Returns: the data, or nil, error, partial as sock:receive.
 * Errors: raises for a max that is not a positive integer.
 * Example: local data = sock:receiveany(4096) */
static int l_receiveany(lua_State *L) {
  lconn_t *c = check_sock(L);
  lua_Integer max = luaL_checkinteger(L, 2);
  luaL_argcheck(L, max > 0, 2, "bad max argument: must be at least 1");
  lua_settop(L, 2);
  if (!connected(c))
    return fail2(L, "closed");
  check_not_reading(L, c);
  return receive_loop(L, c, PAT_ANY, (size_t)max, false);
}

/* ------------------------------------------------------- receiveuntil */

/* The iterator's upvalues. */
enum { UV_SOCK = 1, UV_PAT, UV_INCLUSIVE, UV_ENDED, UV_SCAN };

static int until_k(lua_State *L, int status, lua_KContext ctx);

/* Pushes data[0, n) and hands it out. */
static int until_give(lua_State *L, lconn_t *c, size_t n) {
  lua_pushlstring(L, tb_rbuf_data(&c->buf), n);
  take_bytes(c, n);
  return 1;
}

static int until_loop(lua_State *L, bool after_io) {
  lconn_t *c = lua_touserdata(L, lua_upvalueindex(UV_SOCK));
  size_t plen;
  const char *pat = lua_tolstring(L, lua_upvalueindex(UV_PAT), &plen);
  bool inclusive = lua_toboolean(L, lua_upvalueindex(UV_INCLUSIVE));
  size_t size = lua_isnoneornil(L, 1) ? 0 : (size_t)lua_tointeger(L, 1);
  ltask_t *t = NULL;
  for (;;) {
    if (after_io) {
      after_io = false;
      if (c->io_err != 0 || c->eof) {
        lua_pushnil(L);
        lua_pushstring(L, c->eof ? "closed" : io_message(c->io_err, c->io_timeout));
        push_partial(L, c);
        close_after_error(c, c->io_err != 0 && c->io_timeout);
        return 3;
      }
    }
    uint64_t scan = (uint64_t)lua_tointeger(L, lua_upvalueindex(UV_SCAN));
    tb_until_step_t s = tb_until_step(tb_rbuf_data(&c->buf), tb_rbuf_len(&c->buf),
                                      pat, plen, inclusive, size, c->consumed, &scan);
    lua_pushinteger(L, (lua_Integer)scan);
    lua_replace(L, lua_upvalueindex(UV_SCAN));
    if (!s.more) {
      if (s.ended) {
        lua_pushboolean(L, 1);
        lua_replace(L, lua_upvalueindex(UV_ENDED));
      }
      if (s.nil)
        lua_pushnil(L);
      else
        until_give(L, c, s.give);
      take_bytes(c, s.skip);
      return 1;
    }
    int r = read_more(L, c, &t);
    if (r < 0)
      return 2;
    if (r == 0)
      return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), until_k);
    after_io = true;
  }
}

static int until_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_settop(L, (int)ctx);
  return until_loop(L, true);
}

/* The iterator: reader([size]). */
static int until_iter(lua_State *L) {
  lconn_t *c = lua_touserdata(L, lua_upvalueindex(UV_SOCK));
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer size = luaL_checkinteger(L, 1);
    luaL_argcheck(L, size > 0, 1, "bad size argument: must be at least 1");
  }
  lua_settop(L, 1);
  if (lua_toboolean(L, lua_upvalueindex(UV_ENDED))) {
    lua_pushboolean(L, 0);
    lua_replace(L, lua_upvalueindex(UV_ENDED));
    lua_pushnil(L);
    return 1;
  }
  if (!connected(c))
    return fail2(L, "closed");
  check_not_reading(L, c);
  return until_loop(L, false);
}

/* lua: sock:receiveuntil(pattern [, opts])
 * Makes an iterator that reads up to the delimiter `pattern` (a plain
 * string, not a Lua pattern), as OpenResty's tcpsock:receiveuntil.
 * reader() returns the data before the delimiter (opts.inclusive = true:
 * with it) and consumes the delimiter. reader(size) returns the data in
 * pieces of at most size bytes, then nil (no error) once the delimiter is
 * reached; the next call reads towards the next delimiter.
 * Returns: the iterator; it returns data, or nil, error, partial as
 * sock:receive ("closed" when the stream ends before the delimiter).
 * Errors: raises for an empty or non-string pattern and bad opts.
 * Example: local reader = sock:receiveuntil("\r\n--boundary") */
static int l_receiveuntil(lua_State *L) {
  check_sock(L);
  size_t plen;
  luaL_checklstring(L, 2, &plen);
  luaL_argcheck(L, plen > 0, 2, "pattern is empty");
  bool inclusive = false;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    int ty = lua_getfield(L, 3, "inclusive");
    luaL_argcheck(L, ty == LUA_TNIL || ty == LUA_TBOOLEAN, 3,
                  "bad \"inclusive\" option value: not a boolean");
    inclusive = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushboolean(L, inclusive);
  lua_pushboolean(L, 0);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, until_iter, 5);
  return 1;
}

/* --------------------------------------------------------------- send */

/* Adds the length of v (a string, number, boolean or array of those,
 * nested up to 64 deep) to *len, or copies it to *dst when dst is set. */
static void send_data(lua_State *L, int idx, size_t *len, char **dst,
                      int depth) {
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
  case LUA_TNUMBER: {
    size_t n;
    lua_pushvalue(L, idx); /* tolstring turns a number copy into a string */
    const char *s = lua_tolstring(L, -1, &n);
    if (*dst != NULL) {
      memcpy(*dst, s, n);
      *dst += n;
    }
    *len += n;
    lua_pop(L, 1);
    return;
  }
  case LUA_TBOOLEAN: {
    const char *s = lua_toboolean(L, idx) ? "true" : "false";
    size_t n = strlen(s);
    if (*dst != NULL) {
      memcpy(*dst, s, n);
      *dst += n;
    }
    *len += n;
    return;
  }
  case LUA_TTABLE:
    if (depth >= 64)
      luaL_error(L, "bad argument #1 to 'send' (tables nested too deep, or a cycle)");
    luaL_checkstack(L, 2, "send");
    for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, idx); i <= n; i++) {
      lua_rawgeti(L, idx, i);
      send_data(L, -1, len, dst, depth + 1);
      lua_pop(L, 1);
    }
    return;
  default:
    luaL_error(L, "bad argument #1 to 'send' (bad data type %s found)",
               luaL_typename(L, idx));
  }
}

static int send_k(lua_State *L, int status, lua_KContext ctx);

static int send_done(lua_State *L, lconn_t *c, size_t len) {
  if (c->io_err != 0) {
    /* A TLS write cut short cannot go on with other bytes: closed. */
    close_after_error(c, c->io_timeout && c->st.tls == NULL);
    return fail2(L, io_message(c->io_err, c->io_timeout));
  }
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}

static int send_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_settop(L, (int)ctx);
  return send_done(L, check_sock(L), lua_rawlen(L, 3));
}

/* lua: sock:send(data)
 * Sends data: a string, a number, a boolean, or an array (nested arrays
 * too) of those, joined, as OpenResty's tcpsock:send. It goes out whole,
 * after the sends of other tasks that came first, within the send timeout.
 * Returns: the number of bytes sent, or nil, error ("timeout", "closed",
 * "broken pipe", ...; other than a timeout, the connection is closed).
 * Errors: raises for other data types and outside a task.
 * Example: local bytes, err = sock:send({"GET / HTTP/1.0\r\n", "\r\n"}) */
static int l_send(lua_State *L) {
  lconn_t *c = check_sock(L);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  size_t len = 0;
  char *dst = NULL;
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
  } else {
    send_data(L, 2, &len, &dst, 0);
    luaL_Buffer b;
    dst = luaL_buffinitsize(L, &b, len);
    size_t again = 0;
    send_data(L, 2, &again, &dst, 0);
    luaL_pushresultsize(&b, len);
  }
  size_t n;
  const char *s = lua_tolstring(L, 3, &n); /* stays on this stack */
  if (!connected(c))
    return fail2(L, "closed");
  ltask_t *t = lt_need_task(L, "send");
  treadle_err_t err = tb_op_write(&t->op.tb, &c->st, s, n);
  if (err != 0)
    return fail2(L, io_message(err, false));
  if (!io_begin(L, t, c, deadline_ns(c->timeout_ms, T_SEND)))
    return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), send_k);
  return send_done(L, c, n);
}

/* -------------------------------------------------------------- pool */

typedef struct lpooled_s {
  struct lpooled_s *next;
  char *key;
  tb_stream_t st;
  int reused;
  uint64_t idle_until; /* treadle_now() deadline; 0: none */
} lpooled_t;

struct lpool_s {
  lpooled_t *head;        /* newest first */
  bool sweeping;          /* the sweeper task runs */
  uint64_t sweep_at;      /* when it wakes next */
  treadle_waker_t *waker; /* its waker, to bring that forward */
};

static void pooled_free(lpooled_t *e) {
  tb_stream_free(&e->st);
  free(e->key);
  free(e);
}

/* Whether an idle connection is still fit to use: open, nothing to read
 * (a peer that closed it, or sent what nobody asked for, makes it unfit;
 * OpenResty closes such a connection the same way). */
static bool still_idle(lpooled_t *e, uint64_t now) {
  if (e->idle_until != 0 && now >= e->idle_until)
    return false;
  int fd = e->st.s != NULL ? e->st.s->src.fd : -1;
  if (fd < 0)
    return false;
  char byte;
  ssize_t r = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Closes the pool's connections that are no longer fit. */
static void pool_sweep(lpool_t *p) {
  uint64_t now = treadle_now();
  for (lpooled_t **e = &p->head; *e != NULL;) {
    if (still_idle(*e, now)) {
      e = &(*e)->next;
      continue;
    }
    lpooled_t *dead = *e;
    *e = dead->next;
    pooled_free(dead);
  }
}

/* The earliest idle deadline in the pool, or 0. */
static uint64_t pool_next_deadline(const lpool_t *p) {
  uint64_t next = 0;
  for (const lpooled_t *e = p->head; e != NULL; e = e->next)
    if (e->idle_until != 0 && (next == 0 || e->idle_until < next))
      next = e->idle_until;
  return next;
}

/* The sweeper: a C task pinned to the home's worker (so it touches the
 * pool on the pool's own thread) that closes connections whose idle time
 * is up, and ends when no connection has a deadline. */
typedef struct {
  lhome_t *home;
  treadle_sleep_t sleep;
  bool armed;
} sweeper_t;

static void sweeper_stop(sweeper_t *sw) {
  lpool_t *p = sw->home->pool;
  if (sw->armed)
    treadle_sleep_drop(&sw->sleep);
  sw->armed = false;
  if (p == NULL)
    return;
  p->sweeping = false;
  treadle_waker_drop(p->waker);
  p->waker = NULL;
}

static treadle_poll_t sweeper_poll(treadle_cx_t *cx, void *state) {
  sweeper_t *sw = state;
  lpool_t *p = sw->home->pool;
  for (;;) {
    pool_sweep(p);
    uint64_t next = pool_next_deadline(p);
    if (next == 0) {
      sweeper_stop(sw);
      return TREADLE_READY;
    }
    if (!sw->armed)
      treadle_sleep_until_init(&sw->sleep, next);
    else if (treadle_sleep_deadline(&sw->sleep) != next)
      treadle_sleep_reset(&sw->sleep, next);
    sw->armed = true;
    p->sweep_at = next;
    if (p->waker == NULL)
      p->waker = treadle_waker_clone(treadle_cx_waker(cx));
    treadle_err_t err;
    if (treadle_sleep_poll(&sw->sleep, cx, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err != 0) { /* no timers, or shutting down: sweep at use only */
      sweeper_stop(sw);
      return TREADLE_READY;
    }
  }
}

static void sweeper_drop(void *state) {
  sweeper_t *sw = state;
  if (sw->home->pool != NULL && sw->home->pool->sweeping)
    sweeper_stop(sw);
}

static const treadle_task_vtable_t sweeper_vt = {.poll = sweeper_poll,
                                                 .drop = sweeper_drop};

/* After a connection with an idle deadline came into the pool: starts the
 * sweeper, or wakes it if that deadline comes before its own. */
static void pool_watch(lhome_t *home, uint64_t idle_until) {
  lpool_t *p = home->pool;
  if (idle_until == 0)
    return;
  if (p->sweeping) {
    if (idle_until < p->sweep_at && p->waker != NULL)
      treadle_wake_by_ref(p->waker);
    return;
  }
  sweeper_t sw = {.home = home};
  treadle_spawn_opts_t opts = TREADLE_SPAWN_OPTS_INIT;
  opts.worker = home->worker;
  /* A failed spawn (shutting down) leaves the sweeps at use. */
  p->sweeping = treadle_spawn_with(home->h, &sweeper_vt, &sw, sizeof sw,
                                   &opts, NULL) == 0;
  p->sweep_at = idle_until;
}

void lt_pool_free(lhome_t *home) {
  lpool_t *p = home->pool;
  if (p == NULL)
    return;
  while (p->head != NULL) {
    lpooled_t *e = p->head;
    p->head = e->next;
    pooled_free(e);
  }
  treadle_waker_drop(p->waker);
  free(p);
  home->pool = NULL;
}

/* Takes the newest fit connection of `key` into c; false if none. */
static bool pool_take(lhome_t *home, const char *key, lconn_t *c) {
  if (home->pool == NULL)
    return false;
  pool_sweep(home->pool);
  for (lpooled_t **e = &home->pool->head; *e != NULL; e = &(*e)->next) {
    if (strcmp((*e)->key, key) != 0)
      continue;
    lpooled_t *got = *e;
    *e = got->next;
    c->st = got->st; /* no op refers to the entry's copy */
    c->reused = got->reused + 1;
    free(got->key);
    free(got);
    return true;
  }
  return false;
}

/* ---------------------------------------------------------- connect */

/* Lets go of the stream c had (no op may be in flight) and its bytes. */
static void sock_reset(lconn_t *c) {
  tb_stream_free(&c->st);
  memset(&c->st, 0, sizeof c->st);
  c->st.closed = true;
  take_bytes(c, tb_rbuf_len(&c->buf));
  c->eof = false;
  c->reused = 0;
}

static int connect_k(lua_State *L, int status, lua_KContext ctx);

static int connect_done(lua_State *L, lconn_t *c) {
  if (c->io_err == TREADLE_ENOHOST) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s could not be resolved", lua_tostring(L, 2));
    return 2;
  }
  if (c->io_err != 0)
    return fail2(L, io_message(c->io_err, c->io_timeout));
  lua_pushinteger(L, 1);
  return 1;
}

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_settop(L, (int)ctx);
  return connect_done(L, check_sock(L));
}

/* lua: sock:connect(host, port [, opts]) or sock:connect("unix:/path" [, opts])
 * Connects, as OpenResty's tcpsock:connect: host is an address or a name
 * (looked up off the workers, treadle_lookup_host), port 1..65535; or a
 * Unix socket path after "unix:". First takes an idle connection of the
 * same pool if there is one (see sock:setkeepalive). opts: pool (the pool's
 * name; default "host:port" or "unix:/path"), pool_size and backlog
 * (accepted for OpenResty's sake). A connected socket is closed first.
 * Waits at most the connect timeout.
 * Returns: 1, or nil, error: "timeout", "connection refused", "HOST could
 * not be resolved", ...
 * Errors: raises for bad arguments, outside a task, and while another task
 * uses the socket.
 * Example: local ok, err = sock:connect("127.0.0.1", 6379) */
static int l_connect(lua_State *L) {
  lconn_t *c = check_sock(L);
  const char *host = luaL_checkstring(L, 2);
  bool is_unix = strncmp(host, "unix:", 5) == 0;
  int port = 0, opts = is_unix ? 3 : 4;
  if (!is_unix) {
    lua_Integer p = luaL_checkinteger(L, 3);
    luaL_argcheck(L, p >= 1 && p <= 65535, 3, "port must be in 1..65535");
    port = (int)p;
  } else {
    luaL_argcheck(L, host[5] != '\0', 2, "no path after \"unix:\"");
  }
  const char *pool = NULL;
  if (!lua_isnoneornil(L, opts)) {
    luaL_checktype(L, opts, LUA_TTABLE);
    if (lua_getfield(L, opts, "pool") != LUA_TNIL)
      pool = luaL_checkstring(L, -1); /* stays on the stack */
    if (lua_getfield(L, opts, "pool_size") != LUA_TNIL)
      luaL_argcheck(L, luaL_checkinteger(L, -1) > 0, opts,
                    "bad \"pool_size\" option value: must be at least 1");
    if (lua_getfield(L, opts, "backlog") != LUA_TNIL)
      luaL_argcheck(L, luaL_checkinteger(L, -1) >= 0, opts,
                    "bad \"backlog\" option value");
    lua_pop(L, 2);
  }
  if (pool == NULL)
    pool = is_unix ? host : lua_pushfstring(L, "%s:%d", host, port);
  ltask_t *t = lt_need_task(L, "connect");
  if (c->ops > 0)
    return luaL_error(L, "socket busy: another task uses this connection");
  sock_reset(c);
  char *key = strdup(pool);
  if (key == NULL)
    return luaL_error(L, "not enough memory");
  free(c->pool_key);
  c->pool_key = key;
  lua_settop(L, 2);
  if (pool_take(t->home, key, c)) {
    lua_pushinteger(L, 1);
    return 1;
  }
  if (is_unix) {
    treadle_stream_t *s;
    treadle_err_t err = treadle_unix_connect(t->home->h, host + 5, &s);
    if (err == 0)
      err = tb_stream_init(&c->st, s);
    if (err != 0)
      return fail2(L, io_message(err, false));
    lua_pushinteger(L, 1);
    return 1;
  }
  if (tb_op_connect(&t->op.tb, host, port) != 0)
    return luaL_error(L, "not enough memory");
  if (!io_begin(L, t, c, deadline_ns(c->timeout_ms, T_CONNECT)))
    return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), connect_k);
  return connect_done(L, c);
}

/* lua: sock:setkeepalive([idle_ms [, pool_size]])
 * Puts the connection into this worker's pool for a later connect to the
 * same host and port (or pool name) to reuse, as OpenResty's
 * tcpsock:setkeepalive; the socket object is closed. idle_ms: how long it
 * may stay idle (default 60000; 0: no limit); pool_size: how many idle
 * connections the pool keeps (default 30; the oldest goes first).
 * Returns: 1, or nil, error: "closed", "unread data in buffer", "socket
 * busy" (another task reads or writes it), "no pool for an accepted
 * connection".
 * Errors: raises for a negative idle_ms, a pool_size below 1, and outside a
 * task.
 * Example: local ok, err = sock:setkeepalive(10000, 100) */
static int l_setkeepalive(lua_State *L) {
  lconn_t *c = check_sock(L);
  lua_Integer idle = luaL_optinteger(L, 2, DEFAULT_IDLE_MS);
  lua_Integer size = luaL_optinteger(L, 3, DEFAULT_POOL_SIZE);
  luaL_argcheck(L, idle >= 0, 2, "bad timeout: must not be negative");
  if (size <= 0)
    return luaL_error(L, "bad \"pool_size\" option value: %d", (int)size);
  lhome_t *home = lt_home(L);
  if (home == NULL)
    return luaL_error(L, "setkeepalive needs a running treadle task");
  if (!connected(c))
    return fail2(L, "closed");
  if (c->pool_key == NULL) /* an accepted conn (or strdup failed) */
    return fail2(L, "no pool for an accepted connection");
  if (c->ops > 0)
    return fail2(L, "socket busy");
  if (tb_rbuf_len(&c->buf) > 0)
    return fail2(L, "unread data in buffer");
  if (home->pool == NULL && (home->pool = calloc(1, sizeof *home->pool)) == NULL)
    return luaL_error(L, "not enough memory");
  lpooled_t *e = calloc(1, sizeof *e);
  char *key = strdup(c->pool_key);
  if (e == NULL || key == NULL) {
    free(e);
    free(key);
    return luaL_error(L, "not enough memory");
  }
  pool_sweep(home->pool);
  /* Room for it: the oldest of this key beyond pool_size - 1 go. */
  lua_Integer kept = 0;
  for (lpooled_t **p = &home->pool->head; *p != NULL;) {
    if (strcmp((*p)->key, key) == 0 && ++kept >= size) {
      lpooled_t *old = *p;
      *p = old->next;
      pooled_free(old);
      continue;
    }
    p = &(*p)->next;
  }
  e->key = key;
  e->st = c->st;
  e->reused = c->reused;
  e->idle_until = idle > 0 ? treadle_now() + (uint64_t)idle * 1000000u : 0;
  e->next = home->pool->head;
  home->pool->head = e;
  memset(&c->st, 0, sizeof c->st);
  c->st.closed = true;
  pool_watch(home, e->idle_until);
  lua_pushinteger(L, 1);
  return 1;
}

/* lua: sock:getreusedtimes()
 * Returns: how many times this connection came from the pool (0 for a new
 * one), or nil, "closed". */
static int l_getreusedtimes(lua_State *L) {
  lconn_t *c = check_sock(L);
  if (!connected(c))
    return fail2(L, "closed");
  lua_pushinteger(L, c->reused);
  return 1;
}

/* ------------------------------------------------------------ options */

/* A timeout in ms, read as OpenResty reads one (lua_tonumber): a value
 * that is not a number is 0, the default (lua-resty-redis-connector
 * passes a table, and OpenResty takes it); negative, NaN or 2^31 and more
 * raise. */
static int check_ms(lua_State *L, int idx) {
  lua_Number ms = lua_tonumber(L, idx);
  luaL_argcheck(L, ms == ms && ms >= 0 && ms <= 2147483647.0, idx,
                "bad timeout value");
  return (int)ms;
}

/* lua: sock:settimeout(ms)
 * Sets the connect, send and read timeouts to ms milliseconds (0: the
 * default, 60000). Each wait of a method is bounded by one; a timeout
 * ends the wait with nil, "timeout", and is a deadline on that wait, not
 * a task.
 * A value that is not a number (nor a numeric string) means 0, as
 * OpenResty reads it.
 * Returns: nothing.
 * Errors: raises for a negative or NaN ms, or one of 2^31 or more.
 * Example: sock:settimeout(1000) */
static int l_settimeout(lua_State *L) {
  lconn_t *c = check_sock(L);
  int ms = check_ms(L, 2);
  for (int i = 0; i < 3; i++)
    c->timeout_ms[i] = ms;
  return 0;
}

/* lua: sock:settimeouts(connect_ms, send_ms, read_ms)
 * Sets the three timeouts apart, as sock:settimeout.
 * Returns: nothing.
 * Errors: as sock:settimeout, and for fewer or more than three values.
 * Example: sock:settimeouts(1000, 5000, 30000) */
static int l_settimeouts(lua_State *L) {
  lconn_t *c = check_sock(L);
  if (lua_gettop(L) != 4)
    return luaL_error(L, "settimeouts: expecting 3 timeouts, got %d",
                      lua_gettop(L) - 1);
  int ms[3];
  for (int i = 0; i < 3; i++)
    ms[i] = check_ms(L, 2 + i);
  memcpy(c->timeout_ms, ms, sizeof ms);
  return 0;
}

/* lua: sock:setoption(name, value)
 * Sets a socket option, as OpenResty's tcpsock:setoption: "keepalive"
 * (SO_KEEPALIVE, boolean), "reuseaddr" (SO_REUSEADDR, boolean or 0/1),
 * "tcp-nodelay" (boolean), "sndbuf" and "rcvbuf" (bytes).
 * Returns: true, or nil, error ("closed", a system error).
 * Errors: raises for an unknown option or a bad value.
 * Example: sock:setoption("keepalive", true) */
static int l_setoption(lua_State *L) {
  lconn_t *c = check_sock(L);
  static const char *const names[] = {"keepalive", "reuseaddr", "tcp-nodelay",
                                      "sndbuf", "rcvbuf", NULL};
  static const int levels[] = {SOL_SOCKET, SOL_SOCKET, IPPROTO_TCP, SOL_SOCKET,
                               SOL_SOCKET};
  static const int opts[] = {SO_KEEPALIVE, SO_REUSEADDR, TCP_NODELAY, SO_SNDBUF,
                             SO_RCVBUF};
  int which = luaL_checkoption(L, 2, NULL, names);
  int v;
  if (lua_type(L, 3) == LUA_TBOOLEAN && which <= 2) {
    v = lua_toboolean(L, 3);
  } else {
    lua_Integer i = luaL_checkinteger(L, 3);
    luaL_argcheck(L, i >= 0 && i <= 0x7fffffff, 3, "bad option value");
    v = (int)i;
  }
  if (!connected(c))
    return fail2(L, "closed");
  if (setsockopt(c->st.s->src.fd, levels[which], opts[which], &v, sizeof v) != 0)
    return fail2(L, treadle_strerror(-errno));
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- TLS */

#define SESSION_MT "treadle.tls.session"

/* The client configurations every worker shares (one OpenSSL SSL_CTX
 * each, its trust store loaded once): [1] verifies, against the system's
 * store or the file of treadle.tls.set_ca_file; [0] does not. Made at
 * first use, under tls_mu; a configuration is safe from any thread once
 * made, and each TLS stream holds a reference of its own. They live while
 * a Lua state has the module open (tls_users): the last one to close
 * frees them, before it unloads the module that points to them. */
static pthread_mutex_t tls_mu = PTHREAD_MUTEX_INITIALIZER;
static treadle_tls_config_t *tls_client[2];
static char *tls_ca_file; /* NULL: the system's store */
static int tls_users;     /* Lua states with the module open */

/* The server configurations of sslhandshake_server, one per pair of files,
 * kept as the client ones are: a configuration holds the server's session
 * cache and ticket keys, so a client resumes a session only with a server
 * of the configuration that gave it. */
typedef struct srv_config_s {
  struct srv_config_s *next;
  treadle_tls_config_t *cfg;
  char *cert, *key;
} srv_config_t;
static srv_config_t *tls_servers; /* guarded by tls_mu */

/* A session object (SESSION_MT): the holder of a client connection's
 * session, NULL when there was no memory for it (it then resumes nothing). */
typedef struct {
  treadle_tls_session_t *s;
} lsession_t;

static int session_gc(lua_State *L) {
  lsession_t *ls = luaL_checkudata(L, 1, SESSION_MT);
  treadle_tls_session_free(ls->s);
  ls->s = NULL;
  return 0;
}

/* The __gc of the token each state keeps in its registry. */
static int tls_user_gc(lua_State *L) {
  (void)L;
  pthread_mutex_lock(&tls_mu);
  if (--tls_users == 0) {
    for (int i = 0; i < 2; i++) {
      treadle_tls_config_unref(tls_client[i]);
      tls_client[i] = NULL;
    }
    free(tls_ca_file);
    tls_ca_file = NULL;
    while (tls_servers != NULL) {
      srv_config_t *e = tls_servers;
      tls_servers = e->next;
      treadle_tls_config_unref(e->cfg);
      free(e->cert);
      free(e->key);
      free(e);
    }
  }
  pthread_mutex_unlock(&tls_mu);
  return 0;
}

/* A new client configuration; on failure NULL with the reason in why. */
static treadle_tls_config_t *client_config_new(bool verify, const char *ca,
                                               char *why, size_t len) {
  treadle_tls_config_t *c;
  treadle_err_t err = treadle_tls_config_new(TREADLE_TLS_CLIENT, &c);
  if (err != 0) {
    snprintf(why, len, "%s", treadle_strerror(err));
    return NULL;
  }
  err = verify ? (ca != NULL ? treadle_tls_config_set_ca(c, ca, NULL) : 0)
               : treadle_tls_config_set_verify(c, false);
  if (err != 0) {
    const char *m = treadle_tls_config_error_message(c);
    snprintf(why, len, "%s", *m != '\0' ? m : treadle_strerror(err));
    treadle_tls_config_unref(c);
    return NULL;
  }
  return c;
}

/* A reference to the shared client configuration, or NULL with why. */
static treadle_tls_config_t *client_config(bool verify, char *why, size_t len) {
  pthread_mutex_lock(&tls_mu);
  if (tls_client[verify] == NULL)
    tls_client[verify] = client_config_new(verify, tls_ca_file, why, len);
  treadle_tls_config_t *c = tls_client[verify];
  if (c != NULL)
    treadle_tls_config_ref(c);
  pthread_mutex_unlock(&tls_mu);
  return c;
}

/* A reference to the server configuration of the files cert and key, made
 * at their first use; or NULL with the reason in why. */
static treadle_tls_config_t *server_config(const char *cert, const char *key,
                                           char *why, size_t len) {
  pthread_mutex_lock(&tls_mu);
  srv_config_t *e = tls_servers;
  while (e != NULL && (strcmp(e->cert, cert) != 0 || strcmp(e->key, key) != 0))
    e = e->next;
  treadle_tls_config_t *c = NULL;
  if (e != NULL) {
    c = treadle_tls_config_ref(e->cfg);
  } else {
    treadle_err_t err = treadle_tls_config_new(TREADLE_TLS_SERVER, &c);
    if (err == 0 && (err = treadle_tls_config_set_cert(c, cert, key)) != 0) {
      const char *m = treadle_tls_config_error_message(c);
      snprintf(why, len, "%s", *m != '\0' ? m : treadle_strerror(err));
      treadle_tls_config_unref(c);
      c = NULL;
    } else if (err != 0) {
      snprintf(why, len, "%s", treadle_strerror(err));
    } else if ((e = calloc(1, sizeof *e)) == NULL ||
               (e->cert = strdup(cert)) == NULL ||
               (e->key = strdup(key)) == NULL) {
      snprintf(why, len, "no memory");
      if (e != NULL)
        free(e->cert);
      free(e);
      treadle_tls_config_unref(c);
      c = NULL;
    } else {
      e->cfg = treadle_tls_config_ref(c);
      e->next = tls_servers;
      tls_servers = e;
    }
  }
  pthread_mutex_unlock(&tls_mu);
  return c;
}

/* lua: treadle.tls.set_ca_file(path)
 * Trusts the certificates in the PEM file `path` instead of the system's
 * store for every later sock:sslhandshake that verifies, on every worker
 * (nginx's lua_ssl_trusted_certificate); nil goes back to the system's
 * store. Handshakes already made keep what they trusted.
 * Returns: true, or nil, error (a file that cannot be read or holds no
 * certificate).
 * Errors: raises for a path that is not a string or nil.
 * Example: assert(treadle.tls.set_ca_file("/etc/myapp/ca.pem")) */
static int l_tls_set_ca_file(lua_State *L) {
  const char *path = lua_isnoneornil(L, 1) ? NULL : luaL_checkstring(L, 1);
  char why[256];
  treadle_tls_config_t *c = client_config_new(true, path, why, sizeof why);
  char *copy = path != NULL ? strdup(path) : NULL;
  if (c == NULL || (path != NULL && copy == NULL)) {
    treadle_tls_config_unref(c);
    free(copy);
    return fail2(L, c == NULL ? why : "no memory");
  }
  pthread_mutex_lock(&tls_mu);
  treadle_tls_config_t *old = tls_client[1];
  tls_client[1] = c;
  free(tls_ca_file);
  tls_ca_file = copy;
  pthread_mutex_unlock(&tls_mu);
  treadle_tls_config_unref(old);
  lua_pushboolean(L, 1);
  return 1;
}

static treadle_poll_t handshake_poll(void *ud, treadle_cx_t *cx,
                                     treadle_err_t *err) {
  return treadle_tls_handshake_poll(((lconn_t *)ud)->st.tls, cx, err);
}

/* The handshake reads and writes the stream: receive raises "busy" and
 * the op's end lets it read again. */
static void handshake_op_done(void *conn) {
  lconn_t *c = conn;
  c->ops--;
  c->st.reading = false;
}

static bool handshake_done_ok(const lconn_t *c) {
  return c->st.tls != NULL && treadle_tls_version(c->st.tls) > 0;
}

/* What sslhandshake returns on success: true when reused_session (arg 2)
 * is false, else a session object, the holder of c's session. */
static int push_session(lua_State *L, lconn_t *c) {
  if (lua_type(L, 2) == LUA_TBOOLEAN) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lsession_t *ls = lua_newuserdatauv(L, sizeof *ls, 0);
  ls->s = NULL;
  luaL_setmetatable(L, SESSION_MT);
  ls->s = treadle_tls_session(c->st.tls);
  return 1;
}

static int handshake_finish(lua_State *L, lconn_t *c) {
  if (c->io_err == 0)
    return push_session(L, c);
  const char *msg;
  if (c->io_err == TREADLE_ETLSVERIFY)
    msg = treadle_tls_error_message(c->st.tls);
  else if (c->io_err == TREADLE_ETLSHANDSHAKE || c->io_err == TREADLE_ECONNRESET)
    msg = "handshake failed"; /* OpenResty's words */
  else
    msg = io_message(c->io_err, c->io_timeout);
  lua_pushnil(L);
  lua_pushstring(L, msg);
  tb_stream_close(&c->st); /* half a handshake: nothing more to do on it */
  return 2;
}

static int handshake_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_settop(L, (int)ctx);
  return handshake_finish(L, check_sock(L));
}

/* Puts TLS of config `cfg` (a reference the call takes) over c, offering
 * the session in `resume` (a client's; may be NULL), and runs the
 * handshake within the connect timeout. */
static int handshake_start(lua_State *L, lconn_t *c, treadle_tls_config_t *cfg,
                           bool server, const char *name,
                           treadle_tls_session_t *resume) {
  ltask_t *t = lt_need_task(L, "sslhandshake");
  treadle_err_t err = tb_stream_start_tls(&c->st, cfg, server, name);
  treadle_tls_config_unref(cfg);
  if (err == 0 && resume != NULL)
    err = treadle_tls_set_session(c->st.tls, resume);
  if (err != 0)
    return fail2(L, io_message(err, false));
  tb_op_wait(&t->op.tb, handshake_poll, NULL, c);
  c->st.reading = true;
  if (!io_begin_with(L, t, c, deadline_ns(c->timeout_ms, T_CONNECT),
                     handshake_op_done))
    return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), handshake_k);
  return handshake_finish(L, c);
}

/* Whether the value at idx is nil, none or a boolean (raises otherwise). */
static bool check_optbool(lua_State *L, int idx, const char *what) {
  int ty = lua_type(L, idx);
  if (ty != LUA_TNONE && ty != LUA_TNIL && ty != LUA_TBOOLEAN)
    luaL_argerror(L, idx, lua_pushfstring(L, "bad %s: a boolean or nil", what));
  return lua_toboolean(L, idx);
}

/* The checks both handshakes start with: 0 to go on; else the count of
 * values pushed for the caller to return. */
static int handshake_check(lua_State *L, lconn_t *c) {
  if (!connected(c))
    return fail2(L, "closed");
  if (c->st.tls != NULL) {
    if (handshake_done_ok(c)) /* twice, or a pooled TLS connection */
      return push_session(L, c);
    if (c->ops > 0)
      return luaL_error(L, "socket busy: another task runs the handshake");
    tb_stream_close(&c->st); /* a handshake cut short: its task was killed */
    return fail2(L, "handshake failed");
  }
  if (c->ops > 0 || c->st.reading)
    return luaL_error(L, "socket busy: another task uses this connection");
  return 0;
}

/* lua: sock:sslhandshake([reused_session [, server_name [, ssl_verify [, send_status_req]]]])
 * Turns the connected socket into a TLS client connection, as OpenResty's
 * tcpsock:sslhandshake: server_name (a string, or nil) is sent as SNI and,
 * when ssl_verify is true, checked against the server's certificate,
 * which must chain to the system's trust store (or to the file of
 * treadle.tls.set_ca_file). After it, send, receive, receiveany,
 * receiveuntil, setkeepalive and close work over TLS; close sends
 * close_notify first. A connection from the pool that is already TLS returns at
 * once (as OpenResty: give TLS and plain connections to one host
 * different pool names). reused_session is a session object that an
 * earlier sslhandshake returned: its session is offered to the server, and
 * if the server still knows it the handshake is an abbreviated one, with
 * no certificate sent or verified (sslinfo().session_reused says so); a
 * session of another server name or another ssl_verify is not offered,
 * and a server that no longer knows it gets a full handshake. A session
 * object follows its connection: in TLS 1.3 the server sends its tickets
 * after the handshake, and they arrive with the connection's first
 * receive, so pass it on once the connection was used; and each serves
 * one resumption, so pass on the one the newest handshake returned
 * (sess = sock:sslhandshake(sess, ...), as OpenResty's callers do). A
 * TLS 1.2 session resumes again and again. false asks for no
 * session object. send_status_req (OCSP) is ignored. Waits at most the
 * connect timeout. A failed handshake closes the socket.
 * Returns: a session object (true when reused_session is false), or nil,
 * error: "handshake failed", "certificate verify failed: REASON"
 * (self-signed certificate, hostname mismatch, ...), "timeout", "closed",
 * "no server name to verify the certificate against".
 * Errors: raises for arguments of the wrong type (a reused_session that is
 * not nil, false or a session object), outside a task, and while another
 * task uses the socket.
 * Example: local sess, err = sock:sslhandshake(prev_sess, "example.com", true) */
static int l_sslhandshake(lua_State *L) {
  lconn_t *c = check_sock(L);
  int ty = lua_type(L, 2);
  lsession_t *resume = luaL_testudata(L, 2, SESSION_MT);
  luaL_argcheck(L, ty == LUA_TNONE || ty == LUA_TNIL || resume != NULL ||
                       (ty == LUA_TBOOLEAN && !lua_toboolean(L, 2)),
                2, "bad reused_session: nil, false or a session from sslhandshake");
  ty = lua_type(L, 3);
  luaL_argcheck(L, ty == LUA_TNONE || ty == LUA_TNIL || ty == LUA_TSTRING, 3,
                "bad server_name: a string or nil");
  bool verify = check_optbool(L, 4, "ssl_verify");
  check_optbool(L, 5, "send_status_req");
  lua_settop(L, 3);
  int r = handshake_check(L, c);
  if (r != 0)
    return r;
  const char *name = lua_tostring(L, 3);
  if (verify && name == NULL)
    return fail2(L, "no server name to verify the certificate against");
  char why[256];
  treadle_tls_config_t *cfg = client_config(verify, why, sizeof why);
  if (cfg == NULL)
    return fail2(L, why);
  return handshake_start(L, c, cfg, false, name,
                         resume != NULL ? resume->s : NULL);
}

/* lua: sock:sslhandshake_server({cert = PATH, key = PATH})
 * Turns an accepted connection into a TLS server connection (a treadle
 * addition): shows the certificate chain in the PEM file cert, with its
 * unencrypted private key in key, asking the client for no certificate.
 * The files are read at the first call with these two names: the
 * configuration made from them is kept while the module is open and
 * shared by every worker, with its session cache and ticket keys, so that
 * clients resume their sessions (a small server's, or a test's, tool).
 * Then the cosocket methods work over TLS as after sock:sslhandshake.
 * Waits at most the connect timeout; a failed handshake closes the
 * connection.
 * Returns: true, or nil, error: "handshake failed", "timeout", "closed",
 * or why the files do not do.
 * Errors: raises for opts that are not a table with cert and key strings,
 * outside a task, and while another task uses the connection.
 * Example: assert(conn:sslhandshake_server{cert = "cert.pem", key = "key.pem"}) */
static int l_sslhandshake_server(lua_State *L) {
  lconn_t *c = check_sock(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_getfield(L, 2, "cert");
  lua_getfield(L, 2, "key");
  luaL_argcheck(L, lua_type(L, 3) == LUA_TSTRING && lua_type(L, 4) == LUA_TSTRING,
                2, "cert and key must be file names");
  lua_pushboolean(L, 0); /* push_session's "true" */
  lua_replace(L, 2);
  int r = handshake_check(L, c);
  if (r != 0)
    return r;
  char why[256];
  treadle_tls_config_t *cfg =
      server_config(lua_tostring(L, 3), lua_tostring(L, 4), why, sizeof why);
  if (cfg == NULL)
    return fail2(L, why);
  return handshake_start(L, c, cfg, true, NULL, NULL);
}

/* lua: sock:sslinfo()
 * What the TLS handshake agreed on (a treadle addition): a table with
 * version ("TLSv1.2" or "TLSv1.3"), server_name (on a client, the name it
 * gave sslhandshake; on a server, the name the client sent (SNI); nil if
 * none), peer_subject (the peer certificate's subject, "CN=localhost";
 * nil when it showed none) and session_reused (true when the handshake
 * resumed a session: sslhandshake's reused_session).
 * Returns: the table, or nil, error: "closed", "not TLS".
 * Example: local info = sock:sslinfo(); print(info.version, info.server_name) */
static int l_sslinfo(lua_State *L) {
  lconn_t *c = check_sock(L);
  if (!connected(c))
    return fail2(L, "closed");
  if (!handshake_done_ok(c))
    return fail2(L, "not TLS");
  lua_createtable(L, 0, 4);
  lua_pushboolean(L, treadle_tls_session_reused(c->st.tls) == 1);
  lua_setfield(L, -2, "session_reused");
  int v = treadle_tls_version(c->st.tls);
  lua_pushstring(L, v == TREADLE_TLS_VERSION_1_3 ? "TLSv1.3" : "TLSv1.2");
  lua_setfield(L, -2, "version");
  const char *name = treadle_tls_server_name(c->st.tls);
  if (name != NULL) {
    lua_pushstring(L, name);
    lua_setfield(L, -2, "server_name");
  }
  char subject[512];
  if (treadle_tls_peer_subject(c->st.tls, subject, sizeof subject) > 0) {
    lua_pushstring(L, subject);
    lua_setfield(L, -2, "peer_subject");
  }
  return 1;
}

static int close_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  tb_stream_close(&check_sock(L)->st);
  lua_pushinteger(L, 1);
  return 1;
}

/* lua: sock:close()
 * Closes the connection; tasks waiting on it get nil, "closed" (conn:read
 * and conn:write: nil, message, "ECLOSED"). Bytes read ahead are dropped.
 * Over TLS, called in a task, it first sends close_notify (after the
 * writes queued before it, within the send timeout; a failure is
 * ignored), as nginx does, so that the peer sees a clean end.
 * Returns: 1, or nil, "closed" when it was not connected.
 * Example: sock:close() */
static int l_close(lua_State *L) {
  lconn_t *c = check_sock(L);
  if (!connected(c))
    return fail2(L, "closed");
  ltask_t *t = lt_current;
  if (c->st.tls != NULL && t != NULL && t->co == L) {
    t = lt_need_task(L, "close"); /* clears a leftover op */
    if (tb_op_shutdown(&t->op.tb, &c->st) == 0 &&
        !io_begin(L, t, c, deadline_ns(c->timeout_ms, T_SEND)))
      return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), close_k);
  }
  return close_k(L, LUA_OK, 0);
}

/* lua: treadle.tcp.socket()
 * A new, unconnected TCP (or Unix stream) socket object with OpenResty's
 * cosocket API (ngx.socket.tcp): connect, send, receive, receiveany,
 * receiveuntil, settimeout(s), setkeepalive, getreusedtimes, setoption,
 * close. It is a treadle.conn: once connected, conn:read, conn:write and
 * the rest work on it too, and accepted conns have these methods as well,
 * TLS included: sslhandshake (a client), sslhandshake_server.
 * Returns: the socket.
 * Example: local sock = treadle.tcp.socket() */
static int l_tcp_socket(lua_State *L) {
  lconn_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->st.closed = true;
  luaL_setmetatable(L, LT_CONN_MT);
  return 1;
}

/* ----------------------------------------------------------------- UDP */

typedef struct {
  treadle_dgram_t *d; /* NULL until setpeername, and once freed */
  int ops;            /* ops in flight: at most a send and a receive */
  bool sending, receiving;
  int timeout_ms[3];  /* only T_READ is used */
  bool closed;
  size_t want, got;   /* a receive in flight: its size, what came */
  struct sockaddr_storage from; /* and from where */
  char *buf;          /* its bytes (UDP_MAX_SIZE) */
  const char *out;    /* a send in flight */
  size_t out_len;
} ludp_t;

static ludp_t *check_udp(lua_State *L) { return luaL_checkudata(L, 1, UDP_MT); }

static treadle_poll_t udp_recv_poll(void *ud, treadle_cx_t *cx,
                                    treadle_err_t *err) {
  ludp_t *u = ud;
  return treadle_dgram_recv_from_poll(u->d, cx, u->buf, u->want, &u->from,
                                      &u->got, err);
}

/* receivefrom's poll: the same leaf; the push adds the address. */
static treadle_poll_t udp_recvfrom_poll(void *ud, treadle_cx_t *cx,
                                        treadle_err_t *err) {
  return udp_recv_poll(ud, cx, err);
}

static treadle_poll_t udp_send_poll(void *ud, treadle_cx_t *cx,
                                    treadle_err_t *err) {
  ludp_t *u = ud;
  size_t sent;
  return treadle_dgram_send_poll(u->d, cx, u->out, u->out_len, &sent, err);
}

static void udp_send_done(void *ud) {
  ((ludp_t *)ud)->ops--;
  ((ludp_t *)ud)->sending = false;
}

static void udp_recv_done(void *ud) {
  ((ludp_t *)ud)->ops--;
  ((ludp_t *)ud)->receiving = false;
}

static int udp_push(lua_State *co, ltask_t *t) {
  ludp_t *u = t->op.u.own.ud;
  tb_op_t *op = &t->op.tb;
  if (op->err != 0) {
    lua_pushnil(co);
    lua_pushstring(co, io_message(op->err, op->timed_out));
    return 2;
  }
  if (op->u.wait.poll == udp_send_poll) {
    lua_pushinteger(co, 1);
    return 1;
  }
  lua_pushlstring(co, u->buf, u->got);
  if (op->u.wait.poll == udp_recv_poll)
    return 1;
  char host[TREADLE_HOST_LEN];
  int port = treadle_sockaddr_host(&u->from, host);
  lua_pushstring(co, port < 0 ? "?" : host);
  lua_pushinteger(co, port < 0 ? 0 : port);
  return 3;
}

/* A send and a receive may wait at once (from two tasks), not two of
 * either. */
static int udp_wait(lua_State *L, ludp_t *u, tb_wait_fn poll, uint64_t ns) {
  bool recv = poll != udp_send_poll;
  ltask_t *t = lt_need_task(L, recv ? "receive" : "send");
  if (recv ? u->receiving : u->sending)
    return luaL_error(L, "socket busy %s: another task %s on this socket",
                      recv ? "reading" : "writing", recv ? "receives" : "sends");
  tb_op_wait(&t->op.tb, poll, NULL, u);
  tb_op_set_deadline(&t->op.tb, ns);
  t->op.kind = LOP_OWN;
  t->op.u.own.push = udp_push;
  t->op.u.own.done = recv ? udp_recv_done : udp_send_done;
  t->op.u.own.ud = u;
  u->ops++;
  *(recv ? &u->receiving : &u->sending) = true;
  return lt_wait(L, t);
}

/* lua: treadle.udp.socket()
 * A new UDP socket object with OpenResty's API (ngx.socket.udp):
 * setpeername, bind, send, receive, settimeout, close (and getsockname).
 * Returns: the socket.
 * Example: local u = treadle.udp.socket() */
static int l_udp_socket(lua_State *L) {
  ludp_t *u = lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  luaL_setmetatable(L, UDP_MT);
  return 1;
}

/* lua: udp:bind(host [, port])
 * Binds a fresh datagram socket to a local numeric address (or
 * "localhost") and port (default 0: the system picks one; see
 * udp:getsockname), as OpenResty's udpsock:bind; setpeername then keeps it.
 * Returns: 1, or nil, error.
 * Errors: raises for bad arguments, outside a task, and while a send or
 * receive is in flight.
 * Example: assert(u:bind("127.0.0.1", 0)) */
static int l_udp_bind(lua_State *L) {
  ludp_t *u = check_udp(L);
  const char *host = luaL_checkstring(L, 2);
  lua_Integer port = luaL_optinteger(L, 3, 0);
  luaL_argcheck(L, port >= 0 && port <= 65535, 3, "port must be in 0..65535");
  lhome_t *home = lt_home(L);
  if (home == NULL)
    return luaL_error(L, "bind needs a running treadle task");
  if (u->ops > 0)
    return luaL_error(L, "socket busy: another task uses this socket");
  treadle_dgram_free(u->d);
  u->d = NULL;
  u->closed = false;
  treadle_udp_bind_opts_t opts = TREADLE_UDP_BIND_OPTS_INIT;
  treadle_err_t err = treadle_udp_bind(home->h, host, (int)port, &opts, &u->d);
  if (err != 0)
    return fail2(L, io_message(err, false));
  lua_pushinteger(L, 1);
  return 1;
}

/* lua: udp:getsockname()
 * Returns: the local host and port (a treadle addition), or nil, error.
 * Example: local host, port = u:getsockname() */
static int l_udp_getsockname(lua_State *L) {
  ludp_t *u = check_udp(L);
  if (u->d == NULL || u->closed)
    return fail2(L, "closed");
  struct sockaddr_storage a;
  treadle_err_t err = treadle_dgram_local_addr(u->d, &a);
  if (err != 0)
    return fail2(L, io_message(err, false));
  char host[TREADLE_HOST_LEN];
  int port = treadle_sockaddr_host(&a, host);
  lua_pushstring(L, port < 0 ? "?" : host);
  lua_pushinteger(L, port < 0 ? 0 : port);
  return 2;
}

/* lua: udp:setpeername(host, port) or udp:setpeername("unix:/path")
 * Connects the socket (bound first to an address of the system's choice,
 * unless udp:bind did it) to a numeric address (or "localhost") and port,
 * or to a Unix datagram socket path: send goes there and receive takes
 * only what comes from there. Again: a new peer.
 * Returns: 1, or nil, error.
 * Errors: raises for bad arguments, outside a task, and while a send or
 * receive is in flight.
 * Example: assert(u:setpeername("127.0.0.1", 53)) */
static int l_setpeername(lua_State *L) {
  ludp_t *u = check_udp(L);
  const char *host = luaL_checkstring(L, 2);
  bool is_unix = strncmp(host, "unix:", 5) == 0;
  int port = 0;
  if (!is_unix) {
    lua_Integer p = luaL_checkinteger(L, 3);
    luaL_argcheck(L, p >= 1 && p <= 65535, 3, "port must be in 1..65535");
    port = (int)p;
  }
  lhome_t *home = lt_home(L);
  if (home == NULL)
    return luaL_error(L, "setpeername needs a running treadle task");
  if (u->ops > 0)
    return luaL_error(L, "socket busy: another task uses this socket");
  bool keep = u->d != NULL && !u->closed && !is_unix; /* bound by udp:bind */
  treadle_err_t err = 0;
  if (!keep) {
    treadle_dgram_free(u->d);
    u->d = NULL;
    u->closed = false;
    if (is_unix) {
      err = treadle_unix_dgram_unbound(home->h, &u->d);
    } else {
      treadle_udp_bind_opts_t opts = TREADLE_UDP_BIND_OPTS_INIT;
      err = treadle_udp_bind(home->h, strchr(host, ':') != NULL ? "::" : "0.0.0.0",
                             0, &opts, &u->d);
    }
  }
  if (err == 0)
    err = is_unix ? treadle_unix_dgram_connect(u->d, host + 5)
                  : treadle_udp_connect(u->d, host, port);
  if (err != 0) {
    treadle_dgram_free(u->d);
    u->d = NULL;
    return fail2(L, io_message(err, false));
  }
  lua_pushinteger(L, 1);
  return 1;
}

/* lua: udp:send(data)
 * Sends one datagram: a string, or an array of strings and numbers joined
 * (as sock:send).
 * Returns: 1, or nil, error ("closed", "connection refused" after an ICMP
 * error for an earlier datagram, ...).
 * Errors: raises for other data, outside a task, and while another task
 * sends on it (a receive may wait meanwhile).
 * Example: assert(u:send("ping")) */
static int l_udp_send(lua_State *L) {
  ludp_t *u = check_udp(L);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  size_t len = 0;
  char *dst = NULL;
  send_data(L, 2, &len, &dst, 0);
  luaL_Buffer b;
  dst = luaL_buffinitsize(L, &b, len);
  size_t again = 0;
  send_data(L, 2, &again, &dst, 0);
  luaL_pushresultsize(&b, len);
  if (u->d == NULL || u->closed)
    return fail2(L, "closed");
  if (u->sending) /* before u->out changes under the send in flight */
    return luaL_error(L, "socket busy writing: another task sends on this socket");
  u->out = lua_tolstring(L, 3, &u->out_len); /* stays on this stack */
  return udp_wait(L, u, udp_send_poll, deadline_ns(u->timeout_ms, T_SEND));
}

static int udp_receive(lua_State *L, tb_wait_fn poll) {
  ludp_t *u = check_udp(L);
  lua_Integer size = luaL_optinteger(L, 2, UDP_DEFAULT_SIZE);
  luaL_argcheck(L, size >= 1 && size <= UDP_MAX_SIZE, 2,
                "bad size argument: must be in 1..65536");
  if (u->d == NULL || u->closed)
    return fail2(L, "closed");
  if (u->receiving) /* before u->want changes under the receive in flight */
    return luaL_error(L, "socket busy reading: another task receives on this socket");
  if (u->buf == NULL && (u->buf = malloc(UDP_MAX_SIZE)) == NULL)
    return luaL_error(L, "not enough memory");
  u->want = (size_t)size;
  return udp_wait(L, u, poll, deadline_ns(u->timeout_ms, T_READ));
}

/* lua: udp:receive([size])
 * Waits for the next datagram, at most size bytes of it (default 8192, at
 * most 65536), within the read timeout.
 * Returns: the data, or nil, error ("timeout", "closed", "connection
 * refused", "message too long" for a datagram longer than size).
 * Errors: raises for a bad size, outside a task, and while another task
 * receives on it.
 * Example: local data, err = u:receive() */
static int l_udp_receive(lua_State *L) { return udp_receive(L, udp_recv_poll); }

/* lua: udp:receivefrom([size])
 * As udp:receive, on a socket that udp:bind bound and nothing connected
 * (a treadle addition: a small UDP server); reply with
 * udp:setpeername(host, port) and udp:send.
 * Returns: the data, the sender's host and port; or nil, error.
 * Errors: as udp:receive.
 * Example: local query, host, port = u:receivefrom() */
static int l_udp_receivefrom(lua_State *L) { return udp_receive(L, udp_recvfrom_poll); }

/* lua: udp:settimeout(ms)
 * The timeout of receive and send in milliseconds (0: the default, 60000).
 * Returns: nothing.
 * Errors: raises for a negative, NaN or non-number ms. */
static int l_udp_settimeout(lua_State *L) {
  ludp_t *u = check_udp(L);
  int ms = check_ms(L, 2);
  for (int i = 0; i < 3; i++)
    u->timeout_ms[i] = ms;
  return 0;
}

/* lua: udp:close()
 * Closes the socket; a task waiting in receive gets nil, "closed".
 * Returns: 1, or nil, "closed" when it was not open. */
static int l_udp_close(lua_State *L) {
  ludp_t *u = check_udp(L);
  if (u->d == NULL || u->closed)
    return fail2(L, "closed");
  treadle_dgram_close(u->d);
  u->closed = true;
  lua_pushinteger(L, 1);
  return 1;
}

static int l_udp_gc(lua_State *L) {
  ludp_t *u = check_udp(L);
  treadle_dgram_free(u->d); /* no op is in flight: a waiting task holds u */
  u->d = NULL;
  free(u->buf);
  u->buf = NULL;
  return 0;
}

static int l_udp_tostring(lua_State *L) {
  ludp_t *u = check_udp(L);
  lua_pushfstring(L, "treadle.udp (%s): %p", u->d == NULL || u->closed ? "closed" : "connected",
                  (void *)u);
  return 1;
}

static const luaL_Reg cosock_methods[] = {
    {"connect", l_connect},         {"send", l_send},
    {"receive", l_receive},         {"receiveany", l_receiveany},
    {"receiveuntil", l_receiveuntil}, {"settimeout", l_settimeout},
    {"settimeouts", l_settimeouts}, {"setkeepalive", l_setkeepalive},
    {"getreusedtimes", l_getreusedtimes}, {"setoption", l_setoption},
    {"sslhandshake", l_sslhandshake},
    {"sslhandshake_server", l_sslhandshake_server},
    {"sslinfo", l_sslinfo},
    {"close", l_close},             {NULL, NULL}};
static const luaL_Reg udp_methods[] = {
    {"setpeername", l_setpeername}, {"bind", l_udp_bind},
    {"getsockname", l_udp_getsockname}, {"send", l_udp_send},
    {"receive", l_udp_receive},     {"receivefrom", l_udp_receivefrom},
    {"settimeout", l_udp_settimeout},
    {"close", l_udp_close},         {NULL, NULL}};

/* On the module table on top, after lt_open_net made treadle.conn and
 * treadle.tcp. */
void lt_open_cosock(lua_State *L) {
  luaL_getmetatable(L, LT_CONN_MT);
  lua_getfield(L, -1, "__index");
  luaL_setfuncs(L, cosock_methods, 0);
  lua_pop(L, 2);
  lua_getfield(L, -1, "tcp");
  lua_pushcfunction(L, l_tcp_socket);
  lua_setfield(L, -2, "socket");
  lua_pop(L, 1);
  lt_new_class(L, UDP_MT, udp_methods, l_udp_gc, l_udp_gc, l_udp_tostring);
  lua_newtable(L);
  lua_pushcfunction(L, l_udp_socket);
  lua_setfield(L, -2, "socket");
  lt_name_table(L, "treadle.udp");
  lua_setfield(L, -2, "udp");
  luaL_newmetatable(L, SESSION_MT);
  lua_pushcfunction(L, session_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  /* This state's token: made after package's table of loaded C libraries,
   * so that lua_close collects it before it unloads them. */
  lua_newuserdatauv(L, 0, 0);
  lua_newtable(L);
  lua_pushcfunction(L, tls_user_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  pthread_mutex_lock(&tls_mu);
  tls_users++;
  pthread_mutex_unlock(&tls_mu);
  lua_setfield(L, LUA_REGISTRYINDEX, "treadle.tls.user");
  lua_newtable(L);
  lua_pushcfunction(L, l_tls_set_ca_file);
  lua_setfield(L, -2, "set_ca_file");
  lt_name_table(L, "treadle.tls");
  lua_setfield(L, -2, "tls");
}
