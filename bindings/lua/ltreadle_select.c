/* treadle.select (ARCHITECTURE.md "Lua"): waits for the first of several
 * channels to have a value (or be closed and drained), sockets and
 * processes' stdout to be readable, with an optional timeout, as one op of
 * the calling task.
 *
 * The op's poll looks at the items in list order and stops at the first
 * ready one:
 * 1. A channel: its receive leaf (the channel's `filled` semaphore, with a
 *    waiter per item). The value is taken out as a receive would.
 * 2. A socket (treadle.conn): ready at once when its receive buffer holds
 *    bytes or it saw its end; else the stream's read readiness, confirmed
 *    with a MSG_PEEK recv (readiness outlives the bytes that set it) and
 *    cleared and waited for again when there is nothing. A TLS socket is
 *    read instead, into its receive buffer (lt_conn_tls_fill): OpenSSL may
 *    hold decrypted bytes the socket does not show, and the socket may
 *    hold half a record that gives nothing yet. The select holds the
 *    socket's reader slot meanwhile, so no receive runs beside it.
 * 3. A process (treadle.process): its stdout, as a socket (the pipe's
 *    readiness confirmed with poll(2); ltreadle_process.c).
 * Every item's waiter stays queued while none is ready, so each wakes the
 * task. Once one is, the others' waiters are dropped: a channel waiter
 * that was handed a permit passes it on to the next receiver, so no value
 * is lost to a select that took another item. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ltreadle.h"
#include "net.h" /* the stream's source, for its read readiness */

#define MAX_ITEMS 64

typedef struct {
  lchan_t *ch;      /* a channel (referenced), or NULL */
  treadle_waiter_t w;
  lconn_t *conn;    /* a socket, or NULL */
  void *pipe;       /* a process's stdout, or NULL */
} sitem_t;

typedef struct {
  int n;
  int ready;        /* 1-based index of the ready item; 0: none yet */
  treadle_err_t err; /* a channel's: TREADLE_ECLOSED; a socket's error */
  void *blob;       /* a channel's value */
  sitem_t items[];
} lselect_t;

/* A socket's read readiness (step 2). */
static treadle_poll_t conn_readable(lconn_t *c, treadle_cx_t *cx,
                                    treadle_err_t *err) {
  *err = 0;
  if (tb_rbuf_len(&c->buf) > 0 || c->eof || c->st.s == NULL || c->st.closed)
    return TREADLE_READY;
  if (c->st.tls != NULL)
    return lt_conn_tls_fill(c, cx, err);
  treadle__source_t *src = &c->st.s->src;
  if (!treadle__source_enter(src)) {
    *err = TREADLE_ECLOSED;
    return TREADLE_READY;
  }
  treadle_poll_t r;
  for (;;) {
    uint32_t tick;
    r = treadle__source_poll_ready(src, cx, TREADLE__IO_READ_INTEREST, &tick, err);
    if (r == TREADLE_PENDING || *err != 0)
      break;
    char byte;
    ssize_t got;
    do
      got = recv(src->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    while (got < 0 && errno == EINTR);
    if (got >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
      break; /* bytes, the end, or an error: a receive answers at once */
    treadle__source_clear(src, TREADLE__IO_READABLE, tick);
  }
  treadle__source_leave(src);
  return r;
}

/* Drops every item's wait but the ready one's. */
static void drop_waits(lselect_t *s) {
  for (int i = 0; i < s->n; i++)
    if (s->items[i].ch != NULL)
      treadle_waiter_drop(&s->items[i].w);
}

static treadle_poll_t select_poll(void *ud, treadle_cx_t *cx, treadle_err_t *err) {
  lselect_t *s = ud;
  *err = 0;
  for (int i = 0; i < s->n; i++) {
    sitem_t *it = &s->items[i];
    treadle_poll_t r =
        it->ch != NULL     ? lt_chan_recv_poll(it->ch, cx, &it->w, &s->blob, &s->err)
        : it->conn != NULL ? conn_readable(it->conn, cx, &s->err)
                           : lt_select_pipe_poll(it->pipe, cx, &s->err);
    if (r == TREADLE_READY) {
      s->ready = i + 1;
      drop_waits(s);
      return TREADLE_READY;
    }
  }
  return TREADLE_PENDING;
}

/* Pushes the ready item's index (0: timed out) and its values. */
static int select_push(lua_State *co, ltask_t *t) {
  lselect_t *s = t->op.u.own.ud;
  if (s->ready == 0) {
    lua_pushinteger(co, 0);
    lua_pushstring(co, t->op.tb.timed_out && t->op.tb.err == TREADLE_ETIMEDOUT
                           ? "timeout" : treadle_strerror(t->op.tb.err));
    return 2;
  }
  lua_pushinteger(co, s->ready);
  if (s->items[s->ready - 1].ch == NULL) {
    if (s->err == 0) {
      lua_pushboolean(co, 1);
      return 2;
    }
    lua_pushnil(co);
    lua_pushstring(co, s->err == TREADLE_ECLOSED ? "closed" : treadle_strerror(s->err));
    return 3;
  }
  if (s->err != 0) {
    lua_pushnil(co);
    lua_pushliteral(co, "closed");
    return 3;
  }
  void *blob = s->blob;
  s->blob = NULL;
  lt_unpack_free(co, blob);
  return 2;
}

static void select_done(void *ud) {
  lselect_t *s = ud;
  drop_waits(s);
  for (int i = 0; i < s->n; i++) {
    if (s->items[i].ch != NULL)
      lt_chan_unref(s->items[i].ch);
    if (s->items[i].conn != NULL) {
      s->items[i].conn->st.reading = false;
      lt_conn_op_done(s->items[i].conn);
    }
    if (s->items[i].pipe != NULL)
      lt_select_pipe_end(s->items[i].pipe);
  }
  free(s->blob);
  free(s);
}

/* The op's values sit above `base`: LOP_OWN's true, the index, the rest. */
static int select_finish(lua_State *L, int base) {
  lua_Integer idx = lua_tointeger(L, base + 2);
  if (idx == 0)
    lua_pushnil(L);
  else
    lua_rawgeti(L, 1, idx);
  lua_replace(L, base + 2);
  return lua_gettop(L) - (base + 1);
}

static int select_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return select_finish(L, (int)ctx);
}

/* lua: treadle.select(items [, timeout])
 * Waits until one of items is ready, at most timeout seconds (nil: no
 * limit; 0 or less: only looks, never waits). items is a list of up to 64
 * channels (ready when a value can be received, or once the channel is
 * closed and drained), sockets from treadle.tcp (ready when a receive
 * would find bytes or the end of the stream, without taking any; for a
 * TLS socket, once a whole record brought plaintext, which waits in the
 * socket's receive buffer) and
 * processes from treadle.process.spawn (their stdout, likewise). The
 * first ready item in list order wins; a channel's value is received,
 * the other channels lose nothing. While it waits, the sockets and pipes
 * are this task's to read (a receive elsewhere raises "busy").
 * Returns: the item and, for a channel, the value it received (or nil,
 * "closed"), for a socket or process true (or nil and an error); or nil,
 * "timeout".
 * Errors: raises for items that are not a list of channels, sockets and
 * processes (an empty list needs a timeout), a socket or stdout another
 * task reads (or a TLS socket another task runs the handshake on), a bad
 * timeout, and outside a task.
 * Example: local item, v = treadle.select({jobs, quit, sock}, 5) */
static int l_select(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  bool forever = lua_isnoneornil(L, 2);
  uint64_t ns = forever ? TREADLE_FOREVER : lt_check_duration(L, 2);
  lua_settop(L, 2);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  luaL_argcheck(L, n <= MAX_ITEMS, 1, "at most 64 items");
  luaL_argcheck(L, n > 0 || !forever, 1, "no items and no timeout: it would wait forever");
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    if (lt_to_chan(L, -1) == NULL && lt_select_pipe(L, -1) == NULL) {
      lconn_t *c = luaL_testudata(L, -1, LT_CONN_MT);
      if (c == NULL)
        luaL_error(L, "bad argument #1 to 'treadle.select' (item %d is %s, not "
                      "a channel, a socket or a process)", (int)i,
                   luaL_typename(L, -1));
      if (c->st.reading)
        luaL_error(L, "socket busy reading: another task reads item %d", (int)i);
    }
    lua_pop(L, 1);
  }
  ltask_t *t = lt_need_task(L, "treadle.select");
  lselect_t *s = calloc(1, sizeof *s + (size_t)n * sizeof s->items[0]);
  if (s == NULL)
    return luaL_error(L, "not enough memory");
  s->n = (int)n;
  for (int i = 0; i < s->n; i++) {
    sitem_t *it = &s->items[i];
    lua_rawgeti(L, 1, i + 1);
    it->ch = lt_to_chan(L, -1);
    treadle_waiter_init(&it->w);
    void *pipe = it->ch == NULL ? lt_select_pipe(L, -1) : NULL;
    if (it->ch != NULL) {
      lt_chan_ref(it->ch);
    } else if (pipe != NULL) {
      if (!lt_select_pipe_begin(pipe)) {
        lua_pop(L, 1);
        select_done(s);
        return luaL_error(L, "bad argument #1 to 'treadle.select' (a process "
                             "is listed twice, or another task reads its "
                             "stdout)");
      }
      it->pipe = pipe;
    } else {
      lconn_t *c = lua_touserdata(L, -1);
      if (c->st.reading) { /* the same socket twice */
        lua_pop(L, 1);
        select_done(s);
        return luaL_error(L, "bad argument #1 to 'treadle.select' (a socket "
                             "is listed twice)");
      }
      it->conn = c;
      it->conn->st.reading = true;
      it->conn->ops++;
    }
    lua_pop(L, 1);
  }
  tb_op_wait(&t->op.tb, select_poll, NULL, s);
  tb_op_set_deadline(&t->op.tb, ns);
  t->op.kind = LOP_OWN;
  t->op.u.own.push = select_push;
  t->op.u.own.done = select_done;
  t->op.u.own.ud = s;
  int base = lua_gettop(L);
  if (lt_op_poll(t, lt_current_cx) == TREADLE_READY) {
    lt_op_push(L, t);
    return select_finish(L, base);
  }
  return lua_yieldk(L, 0, base, select_k);
}

void lt_open_select(lua_State *L) {
  lua_pushcfunction(L, l_select);
  lua_setfield(L, -2, "select");
}
