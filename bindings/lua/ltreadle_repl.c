/* treadle.repl([opts]): a Lua console whose lines run as tasks of a
 * current_thread runtime, reading its input through the runtime's own I/O
 * driver (treadle.stdin), so that the tasks a line spawns keep running
 * while the console waits for the next one. Written in Lua, on the
 * module's public functions: a reader task turns stdin into lines, a
 * watcher task takes SIGINT over, and the console runs each line as a task
 * it can abort. Called from inside a task it runs there; otherwise it
 * starts treadle.run(console, opts) (`lua5.4 -l treadle -e
 * "treadle.repl()"`, or the treadle-lua launcher). */
#include "ltreadle.h"

/* lua: treadle.repl([opts])
 * Runs an interactive console on stdin: each line (or block, continued at
 * the ">>" prompt) runs as a task and its results are printed; tasks it
 * spawns keep running between lines. Ctrl-C interrupts the running line
 * (or clears the one being typed); Ctrl-D ends the console. Outside a task
 * it runs treadle.run(console, opts) on current_thread (opts as for
 * treadle.run; another flavor raises); inside a task it runs there.
 * Returns: nothing, once stdin ends.
 * Errors: raises for opts that are not a table, or another flavor.
 * Example: lua5.4 -l treadle -e "treadle.repl()" */
static const char repl_chunk[] =
    "local treadle = ...\n"
    "local function write(...) io.stdout:write(...); io.stdout:flush() end\n"
    "\n"
    "-- Reads stdin and sends {'line', text} per line, then {'eof'}.\n"
    "local function reader(input, events)\n"
    "  local pending = ''\n"
    "  while true do\n"
    "    local data, err = input:read(4096)\n"
    "    if not data then\n"
    "      if pending ~= '' then events:send({'line', pending}) end\n"
    "      if err then write('stdin: ', err, '\\n') end\n"
    "      events:send({'eof'})\n"
    "      return\n"
    "    end\n"
    "    pending = pending .. data\n"
    "    for line, rest in pending:gmatch('([^\\n]*)\\n()') do\n"
    "      events:send({'line', line})\n"
    "    end\n"
    "    pending = pending:match('[^\\n]*$')\n"
    "  end\n"
    "end\n"
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
    "local function show(ok, results)\n"
    "  if not ok then\n"
    "    write(results == 'cancelled' and 'interrupted' or tostring(results), '\\n')\n"
    "  elseif results.n > 0 then\n"
    "    local out = {}\n"
    "    for i = 1, results.n do out[i] = tostring(results[i]) end\n"
    "    write(table.concat(out, '\\t'), '\\n')\n"
    "  end\n"
    "end\n"
    "\n"
    "local function console()\n"
    "  local input <close> = assert(treadle.stdin())\n"
    "  local events = treadle.channel(64)\n"
    "  local running -- the task of the line that runs now\n"
    "  local read_task = treadle.spawn(reader, input, events)\n"
    "  local watch_task = treadle.spawn(function()\n"
    "    while treadle.signal('SIGINT') do\n"
    "      if running then running:abort() else events:send({'sigint'}) end\n"
    "    end\n"
    "  end)\n"
    "  write('treadle ', treadle.version, ' on ', _VERSION, ': lines run as tasks;',\n"
    "        ' tasks you spawn keep running between lines.\\n',\n"
    "        'Ctrl-C interrupts, Ctrl-D exits.\\n')\n"
    "  local buffer\n"
    "  while true do\n"
    "    write(buffer and '>> ' or '> ')\n"
    "    local ev = events:recv()\n"
    "    if ev[1] == 'eof' then write('\\n'); break end\n"
    "    if ev[1] == 'sigint' then\n"
    "      write('\\n')\n"
    "      buffer = nil\n"
    "    else\n"
    "      local text = buffer and buffer .. '\\n' .. ev[2] or ev[2]\n"
    "      local fn, err = compile(text)\n"
    "      buffer = err == true and text or nil\n"
    "      if fn then\n"
    "        running = treadle.spawn(function() return table.pack(fn()) end)\n"
    "        show(pcall(running.join, running))\n"
    "        running = nil\n"
    "      elseif err ~= true then\n"
    "        write(err, '\\n')\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  read_task:abort()\n"
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

void lt_open_repl(lua_State *L) {
  if (luaL_loadbuffer(L, repl_chunk, sizeof repl_chunk - 1, "=treadle.repl") != LUA_OK)
    lua_error(L);
  lua_pushvalue(L, -2);
  lua_call(L, 1, 1);
  lua_setfield(L, -2, "repl");
}
