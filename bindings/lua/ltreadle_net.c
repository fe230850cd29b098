/* TCP for Lua: listeners and connections over treadle's TCP leaves. Methods
 * that wait are ops of the calling task (ltreadle_task.c). I/O failures
 * return nil, message, errno name; wrong arguments raise. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "ltreadle.h"

#define LISTENER_MT "treadle.listener"
#define CONN_MT "treadle.conn"

typedef struct {
  treadle_tcp_listener_t *l;
  bool accepting;
} llistener_t;

typedef struct {
  treadle_tcp_stream_t *s;
  bool reading, writing;
} lconn_t;

static int push_addr(lua_State *L, const struct sockaddr_storage *a, bool joined) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const void *)a;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const void *)a;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  }
  if (joined) {
    lua_pushfstring(L, a->ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
    return 1;
  }
  lua_pushstring(L, host);
  lua_pushinteger(L, port);
  return 2;
}

static int check_port(lua_State *L, int idx, int lo) {
  lua_Integer p = luaL_checkinteger(L, idx);
  luaL_argcheck(L, p >= lo && p <= 65535, idx,
                lo ? "port must be in 1..65535" : "port must be in 0..65535");
  return (int)p;
}

static treadle_handle_t *need_handle(lua_State *L, const char *what) {
  lhome_t *home = lt_home(L);
  if (home == NULL)
    luaL_error(L, "%s needs a running treadle task", what);
  return home->h;
}

static void push_conn(lua_State *L, treadle_tcp_stream_t *s) {
  lconn_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->s = s;
  c->reading = c->writing = false;
  luaL_setmetatable(L, CONN_MT);
}

/* ----------------------------------------------------------- listener */

static int l_bind(lua_State *L) {
  const char *host = luaL_optstring(L, 1, "");
  int port = check_port(L, 2, 0);
  treadle_tcp_bind_opts_t opts = TREADLE_TCP_BIND_OPTS_INIT;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    if (lua_getfield(L, 3, "backlog") != LUA_TNIL) {
      lua_Integer b = luaL_checkinteger(L, -1);
      luaL_argcheck(L, b >= 1 && b <= 65535, 3, "backlog must be in 1..65535");
      opts.backlog = (int)b;
    }
    if (lua_getfield(L, 3, "reuse_port") != LUA_TNIL)
      opts.reuse_port = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  treadle_handle_t *h = need_handle(L, "treadle.tcp.bind");
  treadle_tcp_listener_t *l;
  treadle_err_t err = treadle_tcp_bind(h, host, port, &opts, &l);
  if (err != 0)
    return lt_fail(L, err);
  llistener_t *ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->l = l;
  ud->accepting = false;
  luaL_setmetatable(L, LISTENER_MT);
  return 1;
}

static llistener_t *check_listener(lua_State *L) {
  llistener_t *ud = luaL_checkudata(L, 1, LISTENER_MT);
  if (ud->l == NULL)
    luaL_error(L, "the listener was freed");
  return ud;
}

static int l_accept(lua_State *L) {
  llistener_t *ud = check_listener(L);
  ltask_t *t = lt_need_task(L, "accept");
  if (ud->accepting)
    return luaL_error(L, "another task is already accepting on this listener");
  ud->accepting = true;
  t->op.kind = LOP_ACCEPT;
  t->op.u.accept.listener = ud;
  return lt_wait(L, t);
}

static int l_listener_addr(lua_State *L) {
  struct sockaddr_storage a;
  treadle_err_t err = treadle_tcp_listener_addr(check_listener(L)->l, &a);
  return err != 0 ? lt_fail(L, err) : push_addr(L, &a, false);
}

static int l_listener_close(lua_State *L) {
  llistener_t *ud = luaL_checkudata(L, 1, LISTENER_MT);
  if (ud->l != NULL)
    treadle_tcp_listener_close(ud->l);
  return 0;
}

static int l_listener_gc(lua_State *L) {
  llistener_t *ud = luaL_checkudata(L, 1, LISTENER_MT);
  treadle_tcp_listener_free(ud->l);
  ud->l = NULL;
  return 0;
}

static int l_listener_tostring(lua_State *L) {
  llistener_t *ud = luaL_checkudata(L, 1, LISTENER_MT);
  struct sockaddr_storage a;
  if (ud->l == NULL || treadle_tcp_listener_addr(ud->l, &a) != 0) {
    lua_pushfstring(L, "treadle.listener (closed): %p", (void *)ud);
    return 1;
  }
  push_addr(L, &a, true);
  lua_pushfstring(L, "treadle.listener (%s): %p", lua_tostring(L, -1), (void *)ud);
  return 1;
}

/* ---------------------------------------------------------------- conn */

static lconn_t *check_conn(lua_State *L) {
  lconn_t *c = luaL_checkudata(L, 1, CONN_MT);
  if (c->s == NULL)
    luaL_error(L, "the connection was freed");
  return c;
}

static int l_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = check_port(L, 2, 1);
  ltask_t *t = lt_need_task(L, "treadle.tcp.connect");
  char *copy = strdup(host);
  if (copy == NULL)
    return luaL_error(L, "not enough memory");
  t->op.kind = LOP_CONNECT;
  t->op.u.connect.host = copy;
  t->op.u.connect.port = port;
  return lt_wait(L, t);
}

static int l_read(lua_State *L) {
  lconn_t *c = check_conn(L);
  lua_Integer n = luaL_optinteger(L, 2, LT_READ_CHUNK);
  luaL_argcheck(L, n >= 1, 2, "n must be at least 1");
  ltask_t *t = lt_need_task(L, "read");
  if (c->reading)
    return luaL_error(L, "another task is already reading this connection");
  c->reading = true;
  t->op.kind = LOP_READ;
  t->op.u.read.conn = c;
  t->op.u.read.s = c->s;
  t->op.u.read.want = (size_t)n;
  return lt_wait(L, t);
}

static int l_write(lua_State *L) {
  lconn_t *c = check_conn(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len); /* stays on this stack */
  ltask_t *t = lt_need_task(L, "write");
  if (c->writing)
    return luaL_error(L, "another task is already writing to this connection");
  c->writing = true;
  t->op.kind = LOP_WRITE;
  t->op.u.write.conn = c;
  t->op.u.write.s = c->s;
  t->op.u.write.buf = s;
  t->op.u.write.len = len;
  return lt_wait(L, t);
}

static int l_shutdown(lua_State *L) {
  treadle_err_t err = treadle_tcp_shutdown(check_conn(L)->s);
  if (err != 0)
    return lt_fail(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_conn_close(lua_State *L) {
  lconn_t *c = luaL_checkudata(L, 1, CONN_MT);
  if (c->s != NULL)
    treadle_tcp_stream_close(c->s);
  return 0;
}

static int l_conn_addr(lua_State *L, bool peer) {
  struct sockaddr_storage a;
  lconn_t *c = check_conn(L);
  treadle_err_t err = peer ? treadle_tcp_peer_addr(c->s, &a) : treadle_tcp_local_addr(c->s, &a);
  return err != 0 ? lt_fail(L, err) : push_addr(L, &a, false);
}
static int l_peer(lua_State *L) { return l_conn_addr(L, true); }
static int l_addr(lua_State *L) { return l_conn_addr(L, false); }

static int l_nodelay(lua_State *L) {
  lconn_t *c = check_conn(L);
  treadle_err_t err = treadle_tcp_set_nodelay(c->s, lua_isnone(L, 2) || lua_toboolean(L, 2));
  if (err != 0)
    return lt_fail(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_conn_gc(lua_State *L) {
  lconn_t *c = luaL_checkudata(L, 1, CONN_MT);
  treadle_tcp_stream_free(c->s);
  c->s = NULL;
  return 0;
}

static int l_conn_tostring(lua_State *L) {
  lconn_t *c = luaL_checkudata(L, 1, CONN_MT);
  struct sockaddr_storage a;
  if (c->s == NULL || treadle_tcp_peer_addr(c->s, &a) != 0) {
    lua_pushfstring(L, "treadle.conn (closed): %p", (void *)c);
    return 1;
  }
  push_addr(L, &a, true);
  lua_pushfstring(L, "treadle.conn (%s): %p", lua_tostring(L, -1), (void *)c);
  return 1;
}

/* ------------------------------------------------------------------ ops */

/* The conn or listener an op works on is at the op function's argument 1,
 * which stays on the coroutine's stack while it waits; the ops keep the
 * raw pointers. */
treadle_poll_t lt_net_poll(ltask_t *t, treadle_cx_t *cx) {
  lop_t *op = &t->op;
  switch (op->kind) {
  case LOP_ACCEPT:
    return treadle_tcp_accept_poll(((llistener_t *)op->u.accept.listener)->l, cx,
                                   &op->u.accept.out, &op->u.accept.peer, &op->err);
  case LOP_CONNECT:
    if (!op->started) {
      op->err = treadle_tcp_connect_init(&op->u.connect.c, treadle_cx_handle(cx),
                                         op->u.connect.host, op->u.connect.port);
      if (op->err != 0)
        return TREADLE_READY;
      op->started = true;
    }
    return treadle_tcp_connect_poll(&op->u.connect.c, cx, &op->u.connect.out, &op->err);
  case LOP_READ: {
    if (op->u.read.want > LT_READ_CHUNK && op->u.read.heap == NULL) {
      op->u.read.heap = malloc(op->u.read.want);
      if (op->u.read.heap == NULL) {
        op->err = TREADLE_ENOMEM;
        return TREADLE_READY;
      }
    }
    char *buf = op->u.read.heap != NULL ? op->u.read.heap : t->home->read_buf;
    return treadle_tcp_read_poll(op->u.read.s, cx, buf, op->u.read.want,
                                 &op->u.read.got, &op->err);
  }
  case LOP_WRITE:
    return treadle_tcp_write_all_poll(op->u.write.s, cx, op->u.write.buf,
                                      op->u.write.len, &op->u.write.done, &op->err);
  default:
    return TREADLE_READY;
  }
}

int lt_net_push(lua_State *co, ltask_t *t) {
  lop_t *op = &t->op;
  if (op->err != 0)
    return lt_fail(co, op->err);
  switch (op->kind) {
  case LOP_ACCEPT:
    push_conn(co, op->u.accept.out);
    op->u.accept.out = NULL;
    return 1 + push_addr(co, &op->u.accept.peer, true);
  case LOP_CONNECT:
    push_conn(co, op->u.connect.out);
    op->u.connect.out = NULL;
    return 1;
  case LOP_READ:
    if (op->u.read.got == 0) {
      lua_pushnil(co); /* end of stream */
      return 1;
    }
    lua_pushlstring(co, op->u.read.heap != NULL ? op->u.read.heap : t->home->read_buf,
                    op->u.read.got);
    return 1;
  default:
    lua_pushboolean(co, 1);
    return 1;
  }
}

void lt_net_clear(lop_t *op) {
  switch (op->kind) {
  case LOP_ACCEPT:
    treadle_tcp_stream_free(op->u.accept.out);
    ((llistener_t *)op->u.accept.listener)->accepting = false;
    break;
  case LOP_CONNECT:
    if (op->started)
      treadle_tcp_connect_drop(&op->u.connect.c);
    treadle_tcp_stream_free(op->u.connect.out);
    free(op->u.connect.host);
    break;
  case LOP_READ:
    free(op->u.read.heap);
    ((lconn_t *)op->u.read.conn)->reading = false;
    break;
  case LOP_WRITE:
    ((lconn_t *)op->u.write.conn)->writing = false;
    break;
  default:
    break;
  }
}

static const luaL_Reg listener_methods[] = {
    {"accept", l_accept}, {"addr", l_listener_addr}, {"close", l_listener_close}, {NULL, NULL}};
static const luaL_Reg conn_methods[] = {
    {"read", l_read},   {"write", l_write}, {"shutdown", l_shutdown},
    {"close", l_conn_close}, {"peer", l_peer}, {"addr", l_addr},
    {"set_nodelay", l_nodelay}, {NULL, NULL}};
static const luaL_Reg tcp_functions[] = {
    {"bind", l_bind}, {"connect", l_connect}, {NULL, NULL}};

void lt_open_net(lua_State *L) {
  lt_new_class(L, LISTENER_MT, listener_methods, l_listener_gc, l_listener_close,
               l_listener_tostring);
  lt_new_class(L, CONN_MT, conn_methods, l_conn_gc, l_conn_close, l_conn_tostring);
  luaL_newlib(L, tcp_functions);
  lua_setfield(L, -2, "tcp");
}
