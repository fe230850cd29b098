/* treadle.tcp.server and treadle.tcp.serve: a TCP server in one call
 * (ARCHITECTURE.md "Lua").
 *
 * Plain Lua over treadle.tcp.bind and treadle.spawn, built into the module
 * as a chunk: one accept loop task per server and one task per connection,
 * whose handler(conn, server) gets the accepted conn with the cosocket
 * methods (receive patterns, send). Nothing here is on a request's path: a
 * keep-alive connection costs only its handler's own calls.
 *
 * On multi_thread every worker's main calls it (the module runs on every
 * worker), so every worker binds the port with SO_REUSEPORT and the kernel
 * spreads the connections over the workers' listeners. Port 0 there: worker
 * 0 binds first and gives the port it got to the others over a named
 * channel ("treadle.serve:N", N counting the state's port-0 servers, so
 * the workers, running the same module, pair their calls up). */
#include "ltreadle.h"

/* lua: treadle.tcp.server(host, port, handler [, opts])
 * Listens on host:port (as treadle.tcp.bind) and runs handler(conn, server)
 * as a task of this worker for every connection it accepts; the conn has
 * the cosocket methods (conn:receive("*l"), conn:send, ...) and is closed
 * when the handler returns or raises (the error and its traceback go to
 * stderr, "treadle.tcp.server: a handler failed: ..."; the server goes on). On multi_thread every
 * worker's main makes its own server on the same port: reuse_port is then
 * on by default and the kernel spreads the connections over the workers
 * (port 0: worker 0 picks the port, the others bind the same one).
 * opts: backlog (default 4096), reuse_port (default: on with more than one
 * worker), max_connections (a connection beyond it is closed at once,
 * counted in server.refused; default no limit).
 * Returns: the server, or nil, message, errno name when it cannot listen
 * (EADDRINUSE, ...). server:addr() gives host, port; server.accepted,
 * server.active and server.refused count connections; server:close()
 * stops accepting, closes the listener and aborts the connections' tasks
 * (also at the end of a `<close>` variable); server:wait() waits until the
 * server is closed.
 * Errors: raises outside a task and for bad arguments.
 * Example: local srv = assert(treadle.tcp.server("127.0.0.1", 0, function(conn) conn:send(conn:receive("*l")) end)) */
static const char serve_chunk[] =
    "local treadle, tcp, runtime_id = ...\n"
    "local spawn, bind, channel, worker = treadle.spawn, tcp.bind, treadle.channel, treadle.worker\n"
    "local setmetatable, pcall, error, type = setmetatable, pcall, error, type\n"
    "local server = {}\n"
    "server.__index = server\n"
    "server.__name = 'treadle.server'\n"
    "server.__close = function(s) s:close() end\n"
    "server.__tostring = function(s)\n"
    "  return ('treadle.server (%s:%d, %s)'):format(s.host, s.port, s.closed and 'closed' or 'open')\n"
    "end\n"
    "local port0 = 0\n"
    "-- the guard's __close ends a connection: its conn closes, the server forgets it\n"
    "local guard_mt = {__close = function(g)\n"
    "  local s = g.server\n"
    "  s.conns[g.conn] = nil\n"
    "  s.active = s.active - 1\n"
    "  g.conn:close()\n"
    "end}\n"
    "-- a handler's error is printed here: the guard must close the conn now\n"
    "-- (a failed coroutine closes its to-be-closed variables only when reset)\n"
    "local traceback = debug.traceback\n"
    "local function run_conn(s, handler, conn)\n"
    "  local _ <close> = setmetatable({server = s, conn = conn}, guard_mt)\n"
    "  local ok, err = xpcall(handler, traceback, conn, s)\n"
    "  if not ok then io.stderr:write('treadle.tcp.server: a handler failed: ', tostring(err), '\\n') end\n"
    "end\n"
    "local function accept_loop(s, handler, max)\n"
    "  local l, conns = s.listener, s.conns\n"
    "  while true do\n"
    "    local conn, err, ename = l:accept()\n"
    "    if conn then\n"
    "      s.accepted = s.accepted + 1\n"
    "      if s.active >= max then\n"
    "        s.refused = s.refused + 1\n"
    "        conn:close()\n"
    "      else\n"
    "        s.active = s.active + 1\n"
    "        conns[conn] = spawn(run_conn, s, handler, conn)\n"
    "      end\n"
    "    elseif ename == 'ECLOSED' then\n"
    "      return\n"
    "    else -- EMFILE and the like: say so, let connections end, go on\n"
    "      io.stderr:write('treadle.tcp.server: accept: ', tostring(err), '\\n')\n"
    "      treadle.sleep(0.01)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function check_opts(opts, what)\n"
    "  if opts == nil then return {} end\n"
    "  if type(opts) ~= 'table' then error(\"bad argument #4 to '\" .. what .. \"' (table expected, got \" .. type(opts) .. ')', 4) end\n"
    "  local max = opts.max_connections\n"
    "  if max ~= nil and (math.type(max) ~= 'integer' or max < 1) then\n"
    "    error(\"bad argument #4 to '\" .. what .. \"' (max_connections must be a positive integer)\", 4)\n"
    "  end\n"
    "  return opts\n"
    "end\n"
    "local function new_server(host, port, handler, opts, what)\n"
    "  if type(handler) ~= 'function' then\n"
    "    error(\"bad argument #3 to '\" .. what .. \"' (function expected, got \" .. type(handler) .. ')', 3)\n"
    "  end\n"
    "  if math.type(port) ~= 'integer' or port < 0 or port > 65535 then\n"
    "    error(\"bad argument #2 to '\" .. what .. \"' (a port in 0..65535 expected, got \" .. tostring(port) .. ')', 3)\n"
    "  end\n"
    "  opts = check_opts(opts, what)\n"
    "  local workers = treadle.workers()\n"
    "  local reuse = opts.reuse_port\n"
    "  if reuse == nil then reuse = workers > 1 end\n"
    "  local portch\n"
    "  if port == 0 and workers > 1 and reuse then\n"
    "    port0 = port0 + 1\n"
    "    -- named for this runtime: a channel of an earlier runtime may still\n"
    "    -- hold ports its other workers never took (named channels keep values)\n"
    "    portch = channel(workers, 'treadle.serve:' .. runtime_id() .. ':' .. port0)\n"
    "    if worker() ~= 0 then\n"
    "      port = portch:recv()\n"
    "      if not port then return nil, 'worker 0 could not listen', 'EPEER' end\n"
    "      portch = nil\n"
    "    end\n"
    "  end\n"
    "  local l, err, ename = bind(host, port, {backlog = opts.backlog or 4096, reuse_port = reuse})\n"
    "  if portch then -- worker 0 of port 0: the others bind the port it got\n"
    "    local got = l and select(2, l:addr()) or false\n"
    "    -- never waits: a worker that makes no such server takes none\n"
    "    for _ = 2, workers do portch:try_send(got) end\n"
    "  end\n"
    "  if not l then return nil, err, ename end\n"
    "  local h, p = l:addr()\n"
    "  local s = setmetatable({listener = l, host = h, port = p, conns = {},\n"
    "                          accepted = 0, active = 0, refused = 0, closed = false}, server)\n"
    "  s.task = spawn(accept_loop, s, handler, opts.max_connections or math.huge)\n"
    "  return s\n"
    "end\n"
    "function server:close()\n"
    "  if self.closed then return end\n"
    "  self.closed = true\n"
    "  self.listener:close() -- the accept loop gets ECLOSED and returns\n"
    "  for conn, t in pairs(self.conns) do t:abort() end\n"
    "end\n"
    "function server:wait()\n"
    "  local ok, err = pcall(self.task.join, self.task)\n"
    "  if not ok and err ~= 'cancelled' then error(err, 0) end\n"
    "  return true\n"
    "end\n"
    "function server:addr() return self.host, self.port end\n"
    "local function serve(host, port, handler, opts)\n"
    "  local s, err, ename = new_server(host, port, handler, opts, 'treadle.tcp.serve')\n"
    "  if not s then return nil, err, ename end\n"
    "  local why = 'closed'\n"
    "  local signals = opts and opts.signals\n"
    "  if signals == nil then signals = {'SIGINT', 'SIGTERM'} end\n"
    "  local watchers = {}\n"
    "  for i, name in ipairs(signals or {}) do\n"
    "    watchers[i] = spawn(function()\n"
    "      treadle.signal(name)\n"
    "      why = name\n"
    "      s:close()\n"
    "    end)\n"
    "  end\n"
    "  s:wait()\n"
    "  for _, w in ipairs(watchers) do w:abort() end\n"
    "  s:close() -- its connections too\n"
    "  return why\n"
    "end\n"
    "return function(host, port, handler, opts)\n"
    "  local s, err, ename = new_server(host, port, handler, opts, 'treadle.tcp.server')\n"
    "  return s, err, ename -- not a tail call: errors point at the caller\n"
    "end, serve\n";

/* lua: treadle.workers()
 * Returns: how many workers run this runtime's Lua (1 on current_thread).
 * Errors: raises outside a task.
 * Example: if treadle.workers() > 1 then print("multi_thread") end */
static int l_workers(lua_State *L) {
  lhome_t *home = lt_home(L);
  if (home == NULL)
    return luaL_error(L, "treadle.workers needs a running treadle task");
  lua_pushinteger(L, lt_home_workers(home));
  return 1;
}

/* lua: treadle.tcp.serve(host, port, handler [, opts])
 * treadle.tcp.server(host, port, handler, opts), then waits until the
 * server is closed: by server:close() (the server is the handler's second
 * argument), or by one of the signals in opts.signals (default {"SIGINT",
 * "SIGTERM"}; false: none). Then its connections are aborted too. On
 * multi_thread every worker's main calls it: a multi-core server is the
 * module and this one line, and worker 0's return on SIGTERM ends the run.
 * Returns: the name of the signal that stopped it, or "closed"; nil,
 * message, errno name when it cannot listen.
 * Errors: as treadle.tcp.server.
 * Example: treadle.tcp.serve("127.0.0.1", 8080, function(conn) conn:send("hi\n") end) */
/* The serve chunk's runtime_id(): lt_home_runtime_id of the caller's. */
static int serve_runtime_id(lua_State *L) {
  lhome_t *home = lt_home(L);
  if (home == NULL)
    return luaL_error(L, "treadle.tcp.server needs a running treadle task");
  lua_pushinteger(L, (lua_Integer)lt_home_runtime_id(home));
  return 1;
}

void lt_open_serve(lua_State *L) {
  /* the module table is on top, with tcp set */
  lua_pushcfunction(L, l_workers);
  lua_setfield(L, -2, "workers");
  if (luaL_loadbuffer(L, serve_chunk, sizeof serve_chunk - 1, "=treadle.tcp.serve") != LUA_OK)
    lua_error(L);
  lua_pushvalue(L, -2);
  lua_getfield(L, -3, "tcp");
  lua_pushcfunction(L, serve_runtime_id);
  lua_call(L, 3, 2);
  lua_getfield(L, -3, "tcp");
  lua_insert(L, -3);
  lua_setfield(L, -3, "serve");
  lua_setfield(L, -2, "server");
  lua_pop(L, 1);
}
