/* A lua5.4 stand-in for the sanitizer builds: the same interpreter, but an
 * executable compiled with the sanitizer, so its runtime is linked in and
 * nothing has to be preloaded (a preloaded TSan runtime crashes /bin/sh,
 * which io.popen runs). Runs `lua_runner SCRIPT ARGS...` or
 * `lua_runner -e CHUNK`, with `arg` set as lua5.4 sets it. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static int traceback(lua_State *L) {
  luaL_traceback(L, L, luaL_tolstring(L, 1, NULL), 1);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SCRIPT [ARGS...] | -e CHUNK\n", argv[0]);
    return 2;
  }
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  bool chunk = strcmp(argv[1], "-e") == 0 && argc >= 3;
  int first = chunk ? 2 : 1; /* arg[0] */
  lua_createtable(L, argc, first + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - first);
  }
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, traceback);
  int status = chunk ? luaL_loadstring(L, argv[2]) : luaL_loadfile(L, argv[1]);
  int nargs = 0;
  for (int i = first + 1; !chunk && i < argc; i++, nargs++)
    lua_pushstring(L, argv[i]);
  if (status == LUA_OK)
    status = lua_pcall(L, nargs, 0, 1);
  if (status != LUA_OK)
    fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
  lua_close(L);
  return status == LUA_OK ? 0 : 1;
}
