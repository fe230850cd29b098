/* TCP for Lua: listeners and connections over bindings/common's stream and
 * listener, and stdin over an async fd. Methods that wait are ops of the
 * calling task (ltreadle_task.c). I/O failures return nil, message, errno
 * name; wrong arguments raise. A connection has one reader at a time;
 * writers queue and each write goes out whole, in order. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ltreadle.h"

#define LISTENER_MT "treadle.listener"
#define CONN_MT LT_CONN_MT
#define STDIN_MT "treadle.stdin"

typedef struct {
  tb_listener_t ls;
} llistener_t;

/* stdin, read through the I/O driver from a file description of its own
 * (/proc/self/fd/0), so that its O_NONBLOCK does not reach the shell that
 * shares fd 0. Where epoll cannot watch stdin (a regular file, /dev/null)
 * or it cannot be reopened (a socket), reads are plain reads of a dup. */
typedef struct {
  treadle_async_fd_t *afd; /* NULL: plain reads of fd */
  int fd;                  /* plain reads: a dup of fd 0; -1 once closed */
  bool reading;
} lstdin_t;

static int push_addr(lua_State *L, const struct sockaddr_storage *a, bool joined) {
  char host[TREADLE_HOST_LEN];
  int port = treadle_sockaddr_host(a, host);
  if (port < 0) {
    host[0] = '?';
    host[1] = '\0';
    port = 0;
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

/* Pushes a conn for the stream that op accepted or connected (taken from
 * it), or nil, message, errno name. The userdata comes first: when making
 * it raises (no memory), the stream is still the op's, which frees it. */
static int push_conn(lua_State *L, tb_op_t *op) {
  lconn_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  treadle_err_t err = tb_stream_init(&c->st, tb_op_take_stream(op));
  luaL_setmetatable(L, CONN_MT);
  if (err != 0) {
    lua_pop(L, 1);
    return lt_fail(L, err);
  }
  return 1;
}

/* The result of making an op: 0 waits; EBUSY raises (two tasks on one
 * side); other errors return nil, message, errno name at once. */
static int op_made(lua_State *L, ltask_t *t, treadle_err_t err,
                   const char *busy) {
  if (err == 0) {
    t->op.kind = LOP_LEAF;
    return lt_wait(L, t);
  }
  if (err == TREADLE_EBUSY)
    return luaL_error(L, "another task is already %s", busy);
  return lt_fail(L, err);
}

/* An op on conn c: counted in c->ops until it is cleared. */
static int conn_op_made(lua_State *L, ltask_t *t, lconn_t *c,
                        treadle_err_t err, const char *busy) {
  if (err == 0) {
    t->op.kind = LOP_OWN;
    t->op.u.own.push = lt_net_push;
    t->op.u.own.done = lt_conn_op_done;
    t->op.u.own.ud = c;
    c->ops++;
    return lt_wait(L, t);
  }
  if (err == TREADLE_EBUSY)
    return luaL_error(L, "another task is already %s", busy);
  return lt_fail(L, err);
}

/* ----------------------------------------------------------- listener */

/* lua: treadle.tcp.bind(host, port [, opts])
 * Listens on host (a numeric IPv4 or IPv6 address, "localhost", or nil or ""
 * for every IPv4 address) and port (0 lets the system pick one; see
 * listener:addr). opts: backlog (1..65535, default 1024), reuse_port
 * (SO_REUSEPORT, so that each worker can bind the same port).
 * Returns: the listener, or nil, message, errno name (EADDRINUSE, ...).
 * Errors: raises outside a task and for bad arguments.
 * Example: local listener = assert(treadle.tcp.bind("127.0.0.1", 8080)) */
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
  /* The userdata first: making it may raise (no memory), which must not
   * leave a bound listener behind. */
  llistener_t *ud = lua_newuserdatauv(L, sizeof *ud, 0);
  tb_listener_init(&ud->ls, NULL);
  luaL_setmetatable(L, LISTENER_MT);
  treadle_err_t err = treadle_tcp_bind(h, host, port, &opts, &ud->ls.l);
  if (err != 0) {
    lua_pop(L, 1);
    return lt_fail(L, err);
  }
  return 1;
}

static llistener_t *check_listener(lua_State *L) {
  llistener_t *ud = luaL_checkudata(L, 1, LISTENER_MT);
  if (ud->ls.l == NULL)
    luaL_error(L, "the listener was freed");
  return ud;
}

/* lua: listener:accept()
 * Waits for the next connection.
 * Returns: the conn and the peer's address as "host:port", or nil, message,
 * errno name (ECLOSED once the listener is closed).
 * Errors: raises outside a task or while another task accepts on it.
 * Example: local conn, peer = listener:accept() */
static int l_accept(lua_State *L) {
  llistener_t *ud = check_listener(L);
  ltask_t *t = lt_need_task(L, "accept");
  return op_made(L, t, tb_op_accept(&t->op.tb, &ud->ls),
                 "accepting on this listener");
}

/* lua: listener:addr()
 * Returns: the host and port the listener is bound to (the port filled in
 * when 0 was asked for), or nil, message, errno name.
 * Example: local host, port = listener:addr() */
static int l_listener_addr(lua_State *L) {
  struct sockaddr_storage a;
  treadle_err_t err = treadle_tcp_listener_addr(check_listener(L)->ls.l, &a);
  return err != 0 ? lt_fail(L, err) : push_addr(L, &a, false);
}

/* lua: listener:close()
 * Closes the listener; a task waiting in accept gets nil, message, "ECLOSED".
 * Returns: nothing. */
static int l_listener_close(lua_State *L) {
  tb_listener_close(&((llistener_t *)luaL_checkudata(L, 1, LISTENER_MT))->ls);
  return 0;
}

static int l_listener_gc(lua_State *L) {
  tb_listener_free(&((llistener_t *)luaL_checkudata(L, 1, LISTENER_MT))->ls);
  return 0;
}

static int l_listener_tostring(lua_State *L) {
  llistener_t *ud = luaL_checkudata(L, 1, LISTENER_MT);
  struct sockaddr_storage a;
  if (ud->ls.l == NULL || treadle_tcp_listener_addr(ud->ls.l, &a) != 0) {
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
  if (c->st.s == NULL)
    luaL_error(L, "the connection is not connected (a new socket, or one "
                  "given to the keep-alive pool)");
  return c;
}

/* lua: treadle.tcp.connect(host, port)
 * Connects to host (an address, or a name resolved off the worker threads)
 * and port (1..65535). The conn has the cosocket methods too, and
 * sock:setkeepalive pools it under "host:port".
 * Returns: the conn, or nil, message, errno name (ECONNREFUSED, ENOHOST, ...).
 * Errors: raises outside a task and for bad arguments.
 * Example: local conn = assert(treadle.tcp.connect("127.0.0.1", 8080)) */
static int l_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = check_port(L, 2, 1);
  ltask_t *t = lt_need_task(L, "treadle.tcp.connect");
  if (tb_op_connect(&t->op.tb, host, port) != 0)
    return luaL_error(L, "not enough memory");
  t->op.kind = LOP_LEAF;
  return lt_wait(L, t);
}

/* lua: conn:read([n])
 * Waits for data: up to n bytes (default 65536). Bytes that a receive
 * pattern read ahead come first.
 * Returns: a string, nil at the end of the stream, or nil, message, errno
 * name (ECONNRESET; ECLOSED when the conn is closed meanwhile).
 * Errors: raises outside a task or while another task reads the conn.
 * Example: local data = conn:read() */
static int l_read(lua_State *L) {
  lconn_t *c = check_conn(L);
  lua_Integer n = luaL_optinteger(L, 2, TB_READ_CHUNK);
  luaL_argcheck(L, n >= 1, 2, "n must be at least 1");
  size_t have = tb_rbuf_len(&c->buf);
  if (have > 0 && !c->st.reading) {
    size_t take = have < (size_t)n ? have : (size_t)n;
    lua_pushlstring(L, tb_rbuf_data(&c->buf), take);
    tb_rbuf_consume(&c->buf, take);
    c->consumed += take;
    return 1;
  }
  ltask_t *t = lt_need_task(L, "read");
  return conn_op_made(L, t, c, tb_op_read(&t->op.tb, &c->st, (size_t)n),
                      "reading this connection");
}

/* lua: conn:write(s)
 * Writes all of s, waiting while the socket is full. Writes of several
 * tasks queue: each goes out whole, in the order they were called.
 * Returns: true, or nil, message, errno name (EPIPE, ECONNRESET, ECLOSED,
 * ...).
 * Errors: raises outside a task.
 * Example: assert(conn:write("hello\n")) */
static int l_write(lua_State *L) {
  lconn_t *c = check_conn(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len); /* stays on this stack */
  ltask_t *t = lt_need_task(L, "write");
  return conn_op_made(L, t, c, tb_op_write(&t->op.tb, &c->st, s, len),
                      "writing");
}

/* lua: conn:shutdown()
 * Shuts the write side down: the peer reads the end of the stream, and
 * reading goes on. Over TLS it first sends close_notify, after the writes
 * queued before it, waiting as a write does (so in a task).
 * Returns: true, or nil, message, errno name.
 * Errors: raises outside a task on a TLS connection.
 * Example: assert(conn:shutdown()) */
static int l_shutdown(lua_State *L) {
  lconn_t *c = check_conn(L);
  if (c->st.tls != NULL) {
    ltask_t *t = lt_need_task(L, "shutdown of a TLS connection");
    return conn_op_made(L, t, c, tb_op_shutdown(&t->op.tb, &c->st),
                        "writing");
  }
  treadle_err_t err = treadle_tcp_shutdown(c->st.s);
  if (err != 0)
    return lt_fail(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_conn_close(lua_State *L) {
  tb_stream_close(&((lconn_t *)luaL_checkudata(L, 1, CONN_MT))->st);
  return 0;
}

static int l_conn_addr(lua_State *L, bool peer) {
  struct sockaddr_storage a;
  lconn_t *c = check_conn(L);
  treadle_err_t err = peer ? treadle_tcp_peer_addr(c->st.s, &a) : treadle_tcp_local_addr(c->st.s, &a);
  return err != 0 ? lt_fail(L, err) : push_addr(L, &a, false);
}
/* lua: conn:peer()
 * Returns: the peer's host and port, or nil, message, errno name. */
static int l_peer(lua_State *L) { return l_conn_addr(L, true); }
/* lua: conn:addr()
 * Returns: the local host and port, or nil, message, errno name. */
static int l_addr(lua_State *L) { return l_conn_addr(L, false); }

/* lua: conn:set_nodelay([on])
 * Turns TCP_NODELAY on (the default: small writes go out at once) or off
 * (Nagle's algorithm gathers them); see conn:nodelay.
 * Returns: true, or nil, message, errno name.
 * Example: conn:set_nodelay(false) */
static int l_nodelay(lua_State *L) {
  lconn_t *c = check_conn(L);
  treadle_err_t err = treadle_tcp_set_nodelay(c->st.s, lua_isnone(L, 2) || lua_toboolean(L, 2));
  if (err != 0)
    return lt_fail(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* lua: conn:nodelay()
 * Whether TCP_NODELAY is on: it is for every connected and accepted conn
 * until set_nodelay(false).
 * Returns: true or false, or nil, message, errno name.
 * Example: print(conn:nodelay()) */
static int l_get_nodelay(lua_State *L) {
  bool on;
  treadle_err_t err = treadle_tcp_nodelay(check_conn(L)->st.s, &on);
  if (err != 0)
    return lt_fail(L, err);
  lua_pushboolean(L, on);
  return 1;
}

static int l_conn_gc(lua_State *L) {
  lconn_t *c = luaL_checkudata(L, 1, CONN_MT);
  tb_stream_free(&c->st); /* no op is in flight: a waiting task holds c */
  tb_rbuf_free(&c->buf);
  free(c->pool_key);
  c->pool_key = NULL;
  return 0;
}

static int l_conn_tostring(lua_State *L) {
  lconn_t *c = luaL_checkudata(L, 1, CONN_MT);
  struct sockaddr_storage a;
  if (c->st.s == NULL || treadle_tcp_peer_addr(c->st.s, &a) != 0) {
    lua_pushfstring(L, "treadle.conn (closed): %p", (void *)c);
    return 1;
  }
  push_addr(L, &a, true);
  lua_pushfstring(L, "treadle.conn (%s): %p", lua_tostring(L, -1), (void *)c);
  return 1;
}

/* --------------------------------------------------------------- stdin */

treadle_err_t lt_stdin_open(treadle_handle_t *h, treadle_async_fd_t **afd,
                            int *fd) {
  *afd = NULL;
  *fd = -1;
  int own = open("/proc/self/fd/0", O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (own >= 0) {
    treadle_err_t err = treadle_async_fd_new(h, own, afd);
    if (err == 0)
      return 0;
    close(own);
    if (err != -EPERM)
      return err;
  }
  *fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
  return *fd < 0 ? -errno : 0;
}

/* lua: treadle.stdin()
 * Opens the process's standard input for tasks: reads wait in the I/O
 * driver, on a file description of its own, so that the shell's stdin stays
 * blocking. Where epoll cannot watch it (a regular file, /dev/null), reads
 * are plain reads that never wait.
 * Returns: the stdin reader, or nil, message, errno name.
 * Errors: raises outside a task.
 * Example: local input <close> = assert(treadle.stdin()) */
static int l_stdin(lua_State *L) {
  treadle_handle_t *h = need_handle(L, "treadle.stdin");
  lstdin_t *in = lua_newuserdatauv(L, sizeof *in, 0);
  in->afd = NULL;
  in->fd = -1;
  in->reading = false;
  luaL_setmetatable(L, STDIN_MT);
  treadle_err_t err = lt_stdin_open(h, &in->afd, &in->fd);
  return err != 0 ? lt_fail(L, err) : 1;
}

static void stdin_done(void *in) { ((lstdin_t *)in)->reading = false; }

/* lua: stdin:read([n])
 * Waits for input: up to n bytes (default 65536), as they come (a line at a
 * time from a terminal).
 * Returns: a string, nil at the end of the input, or nil, message, errno
 * name (ECLOSED once closed).
 * Errors: raises outside a task or while another task reads it.
 * Example: local line = input:read() */
static int l_stdin_read(lua_State *L) {
  lstdin_t *in = luaL_checkudata(L, 1, STDIN_MT);
  lua_Integer n = luaL_optinteger(L, 2, TB_READ_CHUNK);
  luaL_argcheck(L, n >= 1, 2, "n must be at least 1");
  ltask_t *t = lt_need_task(L, "read");
  if (in->afd == NULL && in->fd < 0)
    return lt_fail(L, TREADLE_ECLOSED);
  if (in->reading)
    return luaL_error(L, "another task is already reading stdin");
  in->reading = true;
  t->op.kind = LOP_OWN;
  t->op.u.own.push = lt_net_push;
  t->op.u.own.done = stdin_done;
  t->op.u.own.ud = in;
  tb_op_fd_read(&t->op.tb, in->afd, in->fd, (size_t)n);
  return lt_wait(L, t);
}

/* lua: stdin:close()
 * Closes the reader (not fd 0); a task waiting in read gets nil, message,
 * "ECLOSED".
 * Returns: nothing. */
static int l_stdin_close(lua_State *L) {
  lstdin_t *in = luaL_checkudata(L, 1, STDIN_MT);
  if (in->afd != NULL)
    treadle_async_fd_close(in->afd);
  if (in->fd >= 0)
    close(in->fd); /* plain reads never wait: none is in progress */
  in->fd = -1;
  return 0;
}

static int l_stdin_gc(lua_State *L) {
  lstdin_t *in = luaL_checkudata(L, 1, STDIN_MT);
  l_stdin_close(L);
  treadle_async_fd_free(in->afd);
  in->afd = NULL;
  return 0;
}

static int l_stdin_tostring(lua_State *L) {
  lstdin_t *in = luaL_checkudata(L, 1, STDIN_MT);
  bool open_ = in->afd != NULL ? treadle_async_fd_fd(in->afd) >= 0 : in->fd >= 0;
  lua_pushfstring(L, "treadle.stdin (%s): %p",
                  !open_ ? "closed" : in->afd != NULL ? "async" : "plain reads", (void *)in);
  return 1;
}

/* ------------------------------------------------------------------ ops */

/* The conn, listener or stdin an op works on is at the op function's
 * argument 1, which stays on the coroutine's stack while it waits. */
int lt_net_push(lua_State *co, ltask_t *t) {
  tb_op_t *op = &t->op.tb;
  if (op->err != 0)
    return lt_fail(co, op->err);
  switch (op->kind) {
  case TB_ACCEPT: {
    int n = push_conn(co, op);
    return n == 1 ? 1 + push_addr(co, &op->u.accept.peer, true) : n;
  }
  case TB_CONNECT: {
    int n = push_conn(co, op);
    if (n == 1) { /* sock:setkeepalive pools it under "host:port" */
      lconn_t *c = lua_touserdata(co, -1);
      lua_pushfstring(co, "%s:%d", op->u.connect.host, op->u.connect.port);
      c->pool_key = strdup(lua_tostring(co, -1)); /* NULL: no pool, said so */
      lua_pop(co, 1);
    }
    return n;
  }
  case TB_READ:
  case TB_FD_READ: {
    size_t got = op->kind == TB_READ ? op->u.read.got : op->u.fd_read.got;
    if (got == 0)
      lua_pushnil(co); /* end of stream */
    else
      lua_pushlstring(co, tb_op_bytes(op), got);
    return 1;
  }
  default:
    lua_pushboolean(co, 1);
    return 1;
  }
}


static const luaL_Reg listener_methods[] = {
    {"accept", l_accept}, {"addr", l_listener_addr}, {"close", l_listener_close}, {NULL, NULL}};
static const luaL_Reg conn_methods[] = {
    {"read", l_read},   {"write", l_write}, {"shutdown", l_shutdown},
    {"peer", l_peer}, {"addr", l_addr},
    {"set_nodelay", l_nodelay}, {"nodelay", l_get_nodelay}, {NULL, NULL}};
static const luaL_Reg stdin_methods[] = {
    {"read", l_stdin_read}, {"close", l_stdin_close}, {NULL, NULL}};
static const luaL_Reg tcp_functions[] = {
    {"bind", l_bind}, {"connect", l_connect}, {NULL, NULL}};

void lt_open_net(lua_State *L) {
  lt_new_class(L, LISTENER_MT, listener_methods, l_listener_gc, l_listener_close,
               l_listener_tostring);
  lt_new_class(L, CONN_MT, conn_methods, l_conn_gc, l_conn_close, l_conn_tostring);
  lt_new_class(L, STDIN_MT, stdin_methods, l_stdin_gc, l_stdin_close, l_stdin_tostring);
  luaL_newlib(L, tcp_functions);
  lt_name_table(L, "treadle.tcp");
  lua_setfield(L, -2, "tcp");
  lua_pushcfunction(L, l_stdin);
  lua_setfield(L, -2, "stdin");
}
