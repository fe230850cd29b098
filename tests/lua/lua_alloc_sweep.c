/* The Lua allocation sweep (TESTING.md "Allocation sweep"): runs each
 * scenario of a script (tests/lua/alloc_scenarios.lua, a table of
 * functions) in a lua_State whose allocator can fail on command.
 *
 * For each scenario it first counts the allocations a run makes (only
 * growing ones: Lua assumes a shrink never fails), then, for every k (or
 * every stride-th under TREADLE_TEST_SCALE < 1), runs it again in a
 * forked child whose k-th allocation fails, together with the retry Lua
 * makes after its emergency collection. The child must end with the
 * scenario's true, or an error that says "not enough memory" or "no
 * memory"; a crash, a hang (alarm), another error, a state that does
 * not give back every byte at lua_close, or an fd left open (a runtime
 * never freed, a socket never closed) fails the sweep, naming k. Leaks of
 * treadle's own memory are ASan's and valgrind's to find: the child exits
 * normally.
 *
 * Usage: lua_alloc_sweep SCRIPT [NAME...] (names: all, in order);
 * NAME:K runs NAME once, in this process, with allocation K failing (to
 * debug one point). */
#include <dirent.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

typedef struct {
  long count;  /* growing allocations so far */
  long fail_at; /* the one to fail (-1: none) */
  void *retry_ptr; /* the failed request, which Lua retries once */
  size_t retry_size;
  bool retry_armed;
  long live;   /* bytes held */
} sweep_alloc_t;

static void *sweep_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sweep_alloc_t *a = ud;
  size_t old = ptr != NULL ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    a->live -= (long)old;
    return NULL;
  }
  if (nsize > old) {
    if (a->retry_armed && ptr == a->retry_ptr && nsize == a->retry_size) {
      a->retry_armed = false;
      return NULL;
    }
    if (a->count++ == a->fail_at) {
      a->retry_armed = true;
      a->retry_ptr = ptr;
      a->retry_size = nsize;
      return NULL;
    }
  }
  void *p = realloc(ptr, nsize);
  if (p != NULL)
    a->live += (long)nsize - (long)old;
  return p;
}

/* How many fds this process has open. */
static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  if (d == NULL)
    return -1;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* A state with the libraries and the scenario table at the top. */
static lua_State *new_state(sweep_alloc_t *a, const char *script) {
  lua_State *L = lua_newstate(sweep_alloc, a);
  if (L == NULL)
    return NULL;
  luaL_openlibs(L);
  if (luaL_dofile(L, script) != LUA_OK || !lua_istable(L, -1)) {
    fprintf(stderr, "lua_alloc_sweep: %s: %s\n", script,
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a table");
    exit(2);
  }
  return L;
}

/* Runs scenario `name` with allocation fail_at failing (-1: none). 0: it
 * returned true or failed with a memory error; 1: anything else. *count:
 * the growing allocations it made. */
static int run(const char *script, const char *name, long fail_at,
               long *count) {
  sweep_alloc_t a = {.fail_at = -1};
  int fds = open_fds();
  lua_State *L = new_state(&a, script);
  lua_getfield(L, -1, name);
  a.count = 0;
  a.fail_at = fail_at;
  int st = lua_pcall(L, 0, 1, 0);
  a.fail_at = -1;
  *count = a.count;
  int rc = 0;
  if (st == LUA_OK) {
    if (!lua_toboolean(L, -1)) {
      fprintf(stderr, "lua_alloc_sweep: %s returned %s\n", name,
              luaL_tolstring(L, -1, NULL));
      rc = 1;
    }
  } else {
    const char *msg = luaL_tolstring(L, -1, NULL);
    if (st != LUA_ERRMEM &&
        (msg == NULL || (strstr(msg, "not enough memory") == NULL &&
                         strstr(msg, "no memory") == NULL))) {
      fprintf(stderr, "lua_alloc_sweep: %s, allocation %ld failing: %s\n",
              name, fail_at, msg ? msg : "(not a string)");
      rc = 1;
    }
  }
  lua_close(L);
  if (open_fds() != fds) { /* the runtime's epoll fd, a socket, ... */
    fprintf(stderr, "lua_alloc_sweep: %s, allocation %ld failing: %d fds "
            "left open\n", name, fail_at, open_fds() - fds);
    rc = 1;
  }
  if (a.live != 0) {
    fprintf(stderr, "lua_alloc_sweep: %s, allocation %ld failing: %ld bytes "
            "held after lua_close\n", name, fail_at, a.live);
    rc = 1;
  }
  return rc;
}

static bool sweep(const char *script, const char *name, long stride) {
  long points;
  if (run(script, name, -1, &points) != 0)
    return false;
  long tried = 0, failed = 0;
  for (long k = 0; k < points; k += stride) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
      alarm(20);
      long n;
      exit(run(script, name, k, &n));
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
      perror("lua_alloc_sweep: fork");
      return false;
    }
    tried++;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "lua_alloc_sweep: %s, allocation %ld failing: %s %d\n",
              name, k, WIFEXITED(status) ? "exit" : "signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
      failed++;
    }
  }
  printf("lua-alloc-sweep: %s: %ld allocation points, %ld swept, %ld failed\n",
         name, points, tried, failed);
  return failed == 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SCRIPT [NAME...]\n", argv[0]);
    return 2;
  }
  const char *scale = getenv("TREADLE_TEST_SCALE");
  double s = scale != NULL ? atof(scale) : 1.0;
  long stride = s > 0 && s < 1 ? (long)(1 / s + 0.5) : 1;
  bool ok = true;
  if (argc > 2) {
    for (int i = 2; i < argc; i++) {
      char *colon = strchr(argv[i], ':');
      long n;
      if (colon != NULL) {
        *colon = '\0';
        ok = run(argv[1], argv[i], atol(colon + 1), &n) == 0 && ok;
      } else {
        ok = sweep(argv[1], argv[i], stride) && ok;
      }
    }
  } else {
    /* The names first, and the state closed: a child forked while it is
     * open would hold it (valgrind counts that as lost). */
    char *names[64];
    int n = 0;
    sweep_alloc_t a = {.fail_at = -1};
    lua_State *L = new_state(&a, argv[1]);
    lua_pushnil(L);
    while (n < 64 && lua_next(L, -2) != 0) {
      lua_pop(L, 1);
      names[n++] = strdup(lua_tostring(L, -1));
    }
    lua_close(L);
    for (int i = 0; i < n; i++) {
      ok = sweep(argv[1], names[i], stride) && ok;
      free(names[i]);
    }
  }
  return ok ? 0 : 1;
}
