/* Child processes (ARCHITECTURE.md "Child processes"; tokio's process/unix,
 * libuv's uv_spawn): a command builder, spawn through posix_spawn, and a
 * child's exit as a leaf future.
 *
 * Spawning (treadle_command_spawn):
 * 1. A piped stdio gets a close-on-exec pipe. The parent's end is made
 *    non-blocking and registered with the I/O driver before the process
 *    exists; the child's end stays blocking and a file action dup2()s it
 *    onto 0, 1 or 2 (an end numbered below 3 is moved up first, so no
 *    action overwrites the source of another). /dev/null is opened by a
 *    file action in the child. Every fd treadle opens is close-on-exec, so
 *    treadle gives the child these three and nothing else.
 * 2. posix_spawn (glibc: a clone with CLONE_VM | CLONE_VFORK) returns once
 *    the program was executed or failed: exec's errors (ENOENT, EACCES, a
 *    bad working directory) are spawn's own, and glibc has reaped the
 *    failed process by then. (Under valgrind, which runs that clone as a
 *    fork, the errno cannot come back: the child exits 127 instead.)
 * 3. pidfd_open(pid), and the pidfd is registered with the I/O driver.
 *    Where that fails (ENOSYS before Linux 5.3, EMFILE, a seccomp filter)
 *    the child is waited for through SIGCHLD. Once the process exists,
 *    spawn succeeds: a child with no way to be waited for says so at its
 *    wait and is reaped after its free like any other.
 *
 * Waiting (treadle_child_wait_poll):
 * - pidfd: the pidfd turns readable when the child exits. The task waits
 *   for that edge as any reader does, then waitid(P_PIDFD, WEXITED |
 *   WNOHANG) reaps the child and the pidfd is closed; a wakeup without an
 *   exit clears the readiness and waits again. No system call runs before
 *   the edge.
 * - SIGCHLD: the first poll starts listening for SIGCHLD on the child's
 *   runtime and only then reaps (waitid(P_PID, WNOHANG)): an exit before
 *   the listener existed is found by that reap, one after it moves the
 *   listener's count. Every delivery wakes every waiting task, which reaps
 *   once more: O(children) per SIGCHLD, as Tokio's orphan queue.
 * A reap runs under the child's mutex and records the outcome, and so does
 * every signal sent to it: a signal never reaches a reaped pid, which
 * another process may own by then.
 *
 * No zombie is ever left (TESTING.md D9). Each child is reaped by exactly
 * one of:
 * 1. a wait (wait_poll or try_wait) that sees it exit;
 * 2. treadle_child_free, when it has exited by then (one waitid);
 * 3. an orphan task on its runtime: freeing a child that runs on (killed
 *    or not) spawns a detached task that owns the child, waits for it as
 *    any task does, and destroys it;
 * 4. the process-wide reaper (reaper.c), for a child its runtime can no
 *    longer wait for: freed after the runtime shut down or inside a drop
 *    during shutdown (the orphan task's spawn fails), or whose orphan task
 *    the shutdown cancelled (the task's drop hands the child over).
 * Why: a zombie keeps its pid and its slot in the process table until the
 * parent waits, and nothing else in the program knows the child is
 * there. While the runtime runs it is the cheapest waiter: it needs no
 * thread, and its driver watches the pidfd already. But a runtime may shut
 * down first and the program live on, so the last owner is a thread that
 * exists only while such children exist; an idle process keeps its thread
 * and fd counts (the test harness checks both after every case). A task
 * that waits while its runtime shuts down is cancelled like any other;
 * the child stays its owner's, whose later wait answers TREADLE_ESHUTDOWN
 * (try_wait still reaps) and whose free is case 4.
 * A current_thread runtime reaps its orphans while some thread drives it,
 * or at its shutdown. Not covered: a program that reaps children it did not
 * spawn (waitpid(-1), SIGCHLD set to SIG_IGN) takes their status away, and
 * the wait answers -ECHILD; a process that exits leaves its children to
 * init, which reaps them. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process.h"

extern char **environ;

/* The numbers are the same on every architecture (Linux 5.1 and 5.3). */
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
/* waitid's P_PIDFD (Linux 5.4); glibc has it only as an enum constant. */
#define WAIT_PIDFD ((idtype_t)3)

/* glibc's PATH when the environment has none (confstr _CS_PATH). */
#define DEFAULT_PATH "/bin:/usr/bin"

/* The most signal numbers treadle_child_kill takes (as driver_signal.c). */
#define MAX_SIGNAL 64

/* ------------------------------------------------------------- commands */

typedef struct env_edit_s {
  char *entry; /* "KEY=VALUE" to set, "KEY" to remove */
  size_t key_len;
  bool remove;
} env_edit_t;

struct treadle_command_s {
  char *program;
  char **argv; /* argc entries and a NULL */
  size_t argc, argv_cap;
  env_edit_t *env; /* at most one edit per key, in the order first made */
  size_t env_n, env_cap;
  bool env_clear; /* start from an empty environment */
  char *cwd;      /* or NULL */
  treadle_stdio_t stdio[3];
  bool kill_on_drop;
};

/* Makes room for `need` elements of `size` bytes in *arr, which holds
 * `have` (malloc and copy: the allocator has no realloc). */
static bool grow(void **arr, size_t have, size_t need, size_t *cap,
                 size_t size) {
  if (need <= *cap)
    return true;
  size_t new_cap = *cap != 0 ? *cap * 2 : 8;
  void *p = treadle__malloc(new_cap * size);
  if (p == NULL)
    return false;
  if (have != 0)
    memcpy(p, *arr, have * size);
  treadle__free(*arr);
  *arr = p;
  *cap = new_cap;
  return true;
}

treadle_err_t treadle_command_new(const char *program,
                                  treadle_command_t **out) {
  if (out == NULL)
    return TREADLE_EINVAL;
  *out = NULL;
  if (program == NULL || program[0] == '\0')
    return TREADLE_EINVAL;
  treadle_command_t *cmd = treadle__calloc(1, sizeof *cmd);
  if (cmd == NULL)
    return TREADLE_ENOMEM;
  cmd->program = treadle__strdup(program);
  if (cmd->program == NULL || treadle_command_arg(cmd, program) != 0) {
    treadle_command_free(cmd);
    return TREADLE_ENOMEM;
  }
  *out = cmd;
  return 0;
}

treadle_err_t treadle_command_arg(treadle_command_t *cmd, const char *arg) {
  if (cmd == NULL || arg == NULL)
    return TREADLE_EINVAL;
  /* argc + 1 slots are used, with the NULL at the end. */
  if (!grow((void **)&cmd->argv, cmd->argv != NULL ? cmd->argc + 1 : 0,
            cmd->argc + 2, &cmd->argv_cap, sizeof *cmd->argv))
    return TREADLE_ENOMEM;
  char *copy = treadle__strdup(arg);
  if (copy == NULL)
    return TREADLE_ENOMEM;
  cmd->argv[cmd->argc++] = copy;
  cmd->argv[cmd->argc] = NULL;
  return 0;
}

static bool bad_key(const char *key) {
  return key == NULL || key[0] == '\0' || strchr(key, '=') != NULL;
}

/* Does environment entry `entry` ("KEY=VALUE") have the key of edit e? */
static bool same_key(const env_edit_t *e, const char *entry) {
  return strncmp(entry, e->entry, e->key_len) == 0 && entry[e->key_len] == '=';
}

/* Records one edit, replacing an earlier one for the same key. */
static treadle_err_t edit_env(treadle_command_t *cmd, const char *key,
                              const char *value) {
  size_t key_len = strlen(key);
  size_t len = key_len + (value != NULL ? 1 + strlen(value) : 0);
  char *entry = treadle__malloc(len + 1);
  if (entry == NULL)
    return TREADLE_ENOMEM;
  memcpy(entry, key, key_len);
  if (value != NULL) {
    entry[key_len] = '=';
    memcpy(entry + key_len + 1, value, len - key_len - 1);
  }
  entry[len] = '\0';
  env_edit_t *e = NULL;
  for (size_t i = 0; i < cmd->env_n; i++)
    if (cmd->env[i].key_len == key_len &&
        memcmp(cmd->env[i].entry, key, key_len) == 0)
      e = &cmd->env[i];
  if (e == NULL) {
    if (!grow((void **)&cmd->env, cmd->env_n, cmd->env_n + 1, &cmd->env_cap,
              sizeof *cmd->env)) {
      treadle__free(entry);
      return TREADLE_ENOMEM;
    }
    e = &cmd->env[cmd->env_n++];
  } else {
    treadle__free(e->entry);
  }
  *e =
      (env_edit_t){.entry = entry, .key_len = key_len, .remove = value == NULL};
  return 0;
}

treadle_err_t treadle_command_env(treadle_command_t *cmd, const char *key,
                                  const char *value) {
  if (cmd == NULL || bad_key(key) || value == NULL)
    return TREADLE_EINVAL;
  return edit_env(cmd, key, value);
}

treadle_err_t treadle_command_env_remove(treadle_command_t *cmd,
                                         const char *key) {
  if (cmd == NULL || bad_key(key))
    return TREADLE_EINVAL;
  return edit_env(cmd, key, NULL);
}

treadle_err_t treadle_command_env_clear(treadle_command_t *cmd) {
  if (cmd == NULL)
    return TREADLE_EINVAL;
  for (size_t i = 0; i < cmd->env_n; i++)
    treadle__free(cmd->env[i].entry);
  cmd->env_n = 0;
  cmd->env_clear = true;
  return 0;
}

treadle_err_t treadle_command_cwd(treadle_command_t *cmd, const char *dir) {
  if (cmd == NULL || dir == NULL || dir[0] == '\0')
    return TREADLE_EINVAL;
  char *copy = treadle__strdup(dir);
  if (copy == NULL)
    return TREADLE_ENOMEM;
  treadle__free(cmd->cwd);
  cmd->cwd = copy;
  return 0;
}

static treadle_err_t set_stdio(treadle_command_t *cmd, int which,
                               treadle_stdio_t how) {
  if (cmd == NULL || (how != TREADLE_STDIO_INHERIT &&
                      how != TREADLE_STDIO_NULL && how != TREADLE_STDIO_PIPE &&
                      (how != TREADLE_STDIO_STDOUT || which != 2)))
    return TREADLE_EINVAL;
  cmd->stdio[which] = how;
  return 0;
}

treadle_err_t treadle_command_stdin(treadle_command_t *cmd,
                                    treadle_stdio_t how) {
  return set_stdio(cmd, 0, how);
}

treadle_err_t treadle_command_stdout(treadle_command_t *cmd,
                                     treadle_stdio_t how) {
  return set_stdio(cmd, 1, how);
}

treadle_err_t treadle_command_stderr(treadle_command_t *cmd,
                                     treadle_stdio_t how) {
  return set_stdio(cmd, 2, how);
}

treadle_err_t treadle_command_kill_on_drop(treadle_command_t *cmd, bool on) {
  if (cmd == NULL)
    return TREADLE_EINVAL;
  cmd->kill_on_drop = on;
  return 0;
}

void treadle_command_free(treadle_command_t *cmd) {
  if (cmd == NULL)
    return;
  for (size_t i = 0; i < cmd->argc; i++)
    treadle__free(cmd->argv[i]);
  treadle__free(cmd->argv);
  for (size_t i = 0; i < cmd->env_n; i++)
    treadle__free(cmd->env[i].entry);
  treadle__free(cmd->env);
  treadle__free(cmd->cwd);
  treadle__free(cmd->program);
  treadle__free(cmd);
}

/* ---------------------------------------------------------------- spawn */

/* The child's environment: `environ` itself when the command changes
 * nothing (*owned = NULL), else a new array of borrowed strings. */
static treadle_err_t child_env(const treadle_command_t *cmd, char ***envp,
                               char ***owned) {
  *owned = NULL;
  if (!cmd->env_clear && cmd->env_n == 0) {
    *envp = environ;
    return 0;
  }
  size_t n = 0;
  if (!cmd->env_clear && environ != NULL)
    while (environ[n] != NULL)
      n++;
  char **e = treadle__malloc((n + cmd->env_n + 1) * sizeof *e);
  if (e == NULL)
    return TREADLE_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) { /* O(n * edits): edits are few */
    bool edited = false;
    for (size_t j = 0; j < cmd->env_n && !edited; j++)
      edited = same_key(&cmd->env[j], environ[i]);
    if (!edited)
      e[k++] = environ[i];
  }
  for (size_t j = 0; j < cmd->env_n; j++)
    if (!cmd->env[j].remove)
      e[k++] = cmd->env[j].entry;
  e[k] = NULL;
  *envp = *owned = e;
  return 0;
}

/* The PATH the child will have when the command changes it (set, removed
 * or cleared away), else NULL: the parent's is the child's. */
static const char *changed_path(const treadle_command_t *cmd, bool *changed) {
  for (size_t j = 0; j < cmd->env_n; j++) {
    const env_edit_t *e = &cmd->env[j];
    if (e->key_len == 4 && memcmp(e->entry, "PATH", 4) == 0) {
      *changed = true;
      return e->remove ? DEFAULT_PATH : e->entry + 5;
    }
  }
  *changed = cmd->env_clear;
  return DEFAULT_PATH;
}

/* Looks `name` up in `path` as execvp does: the first directory with an
 * executable regular file of that name (an empty entry is the current
 * directory). TREADLE_EACCES if only files without the right were found,
 * else TREADLE_ENOENT. */
static treadle_err_t search_path(const char *name, const char *path,
                                 char **found) {
  size_t name_len = strlen(name);
  treadle_err_t err = TREADLE_ENOENT;
  for (const char *p = path;;) {
    const char *end = strchrnul(p, ':');
    size_t dir_len = (size_t)(end - p);
    char *cand = treadle__malloc(dir_len + name_len + 2);
    if (cand == NULL)
      return TREADLE_ENOMEM;
    if (dir_len == 0) {
      memcpy(cand, name, name_len + 1);
    } else {
      memcpy(cand, p, dir_len);
      cand[dir_len] = '/';
      memcpy(cand + dir_len + 1, name, name_len + 1);
    }
    struct stat st;
    if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
      if (faccessat(AT_FDCWD, cand, X_OK, AT_EACCESS) == 0) {
        *found = cand;
        return 0;
      }
      err = TREADLE_EACCES;
    }
    treadle__free(cand);
    if (*end == '\0')
      return err;
    p = end + 1;
  }
}

/* A pipe for stdio `which`: the parent's end registered (non-blocking),
 * the child's end blocking and numbered 3 or above. */
static treadle_err_t make_pipe(treadle_handle_t *h, int which, int *child_end,
                               treadle_async_fd_t **parent_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0)
    return -errno;
  int parent = which == 0 ? fds[1] : fds[0];
  int child = which == 0 ? fds[0] : fds[1];
  treadle_err_t err = 0;
  if (child < 3) {
    int moved = fcntl(child, F_DUPFD_CLOEXEC, 3);
    if (moved < 0)
      err = -errno;
    close(child);
    child = moved;
  }
  /* F_SETFL replaces the status flags; a new pipe has none but its
   * access mode, which F_SETFL leaves alone. */
  if (err == 0 && fcntl(parent, F_SETFL, O_NONBLOCK) < 0)
    err = -errno;
  if (err == 0)
    err = treadle__async_fd_adopt(h, parent, parent_end);
  if (err != 0) {
    close(parent);
    if (child >= 0)
      close(child);
    return err;
  }
  *child_end = child;
  return 0;
}

/* Test hook and capability: children are waited for through SIGCHLD. */
static _Atomic bool force_sigchld;
static _Atomic bool no_pidfd;      /* pidfd_open said ENOSYS */
static _Atomic bool no_wait_pidfd; /* waitid(P_PIDFD) said EINVAL (5.3) */

void treadle__process_force_sigchld(bool on) {
  /* Relaxed: set by a test before it spawns. */
  atomic_store_explicit(&force_sigchld, on, memory_order_relaxed);
}

/* Step 3: a registered pidfd, or the SIGCHLD path. */
static void watch_exit(treadle_child_t *c) {
  /* Relaxed: capability flags; a stale false costs one failed call. */
  if (atomic_load_explicit(&force_sigchld, memory_order_relaxed) ||
      atomic_load_explicit(&no_pidfd, memory_order_relaxed))
    return;
  int fd = (int)syscall(SYS_pidfd_open, c->pid, 0); /* close-on-exec */
  if (fd < 0) {
    if (errno == ENOSYS)
      atomic_store_explicit(&no_pidfd, true, memory_order_relaxed);
    return;
  }
  if (treadle__source_open(&c->pidfd, c->h, fd) != 0) {
    close(fd);
    return;
  }
  c->has_pidfd = true;
}

static bool runtime_shut(treadle_handle_t *h) {
  treadle__io_t *io = &h->driver.io;
  treadle__os_mutex_lock(&io->mu);
  bool shut = io->shut;
  treadle__os_mutex_unlock(&io->mu);
  return shut;
}

/* Sets up the file actions and attributes for steps 1 and 2. */
static treadle_err_t prepare(const treadle_command_t *cmd, treadle_handle_t *h,
                             posix_spawn_file_actions_t *fa,
                             posix_spawnattr_t *attr, int child_end[3],
                             treadle_async_fd_t *parent_end[3]) {
  static const int null_flags[3] = {O_RDONLY, O_WRONLY, O_WRONLY};
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++) {
    if (cmd->stdio[i] == TREADLE_STDIO_NULL) {
      rc = posix_spawn_file_actions_addopen(fa, i, "/dev/null", null_flags[i],
                                            0);
    } else if (cmd->stdio[i] == TREADLE_STDIO_PIPE) {
      treadle_err_t err = make_pipe(h, i, &child_end[i], &parent_end[i]);
      if (err != 0)
        return err;
      rc = posix_spawn_file_actions_adddup2(fa, child_end[i], i);
    } else if (cmd->stdio[i] == TREADLE_STDIO_STDOUT) {
      rc = posix_spawn_file_actions_adddup2(fa, 1, 2); /* after stdout's */
    }
  }
  if (rc == 0 && cmd->cwd != NULL)
    rc = posix_spawn_file_actions_addchdir_np(fa, cmd->cwd);
  /* An empty signal mask (a worker's may block some), and SIGPIPE and
   * SIGXFSZ at their defaults even where the parent ignores them (Python
   * does; so does Rust's std for SIGPIPE). */
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGXFSZ);
  if (rc == 0)
    rc = posix_spawnattr_setsigmask(attr, &none);
  if (rc == 0)
    rc = posix_spawnattr_setsigdefault(attr, &defaults);
  if (rc == 0)
    rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF);
  return -rc;
}

treadle_err_t treadle_command_spawn(const treadle_command_t *cmd,
                                    treadle_handle_t *h,
                                    treadle_child_t **out) {
  if (out == NULL)
    return TREADLE_EINVAL;
  *out = NULL;
  if (cmd == NULL || h == NULL)
    return TREADLE_EINVAL;
  if (treadle__forked(h))
    return TREADLE_EFORKED;
  if (!h->driver.has_io)
    return TREADLE_ENOIO;
  if (runtime_shut(h))
    return TREADLE_ESHUTDOWN;
  treadle_child_t *c = treadle__calloc(1, sizeof *c);
  if (c == NULL)
    return TREADLE_ENOMEM;
  char **envp, **envp_owned = NULL, *found = NULL;
  const char *path = cmd->program;
  bool search = strchr(path, '/') == NULL, path_changed;
  const char *child_path = changed_path(cmd, &path_changed);
  treadle_err_t err = child_env(cmd, &envp, &envp_owned);
  if (err == 0 && search && path_changed) {
    /* posix_spawnp would search the parent's PATH: search the child's. */
    err = search_path(path, child_path, &found);
    path = found;
    search = false;
  }
  int child_end[3] = {-1, -1, -1};
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  if (err == 0)
    err = prepare(cmd, h, &fa, &attr, child_end, c->stdio);
  if (err == 0) {
    int rc = search ? posix_spawnp(&c->pid, path, &fa, &attr, cmd->argv, envp)
                    : posix_spawn(&c->pid, path, &fa, &attr, cmd->argv, envp);
    err = -rc;
  }
  for (int i = 0; i < 3; i++)
    if (child_end[i] >= 0)
      close(child_end[i]);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  treadle__free(envp_owned);
  treadle__free(found);
  if (err != 0) {
    for (int i = 0; i < 3; i++)
      treadle_async_fd_free(c->stdio[i]);
    treadle__free(c);
    return err;
  }
  c->h = treadle_handle_ref(h);
  c->kill_on_drop = cmd->kill_on_drop;
  treadle__os_mutex_init(&c->mu);
  treadle__list_init(&c->orphan);
  watch_exit(c);
  *out = c;
  return 0;
}

/* -------------------------------------------------------------- children */

pid_t treadle_child_pid(const treadle_child_t *c) {
  return c != NULL ? c->pid : -1;
}

static treadle_async_fd_t *take(treadle_child_t *c, int which) {
  if (c == NULL)
    return NULL;
  treadle_async_fd_t *a = c->stdio[which];
  c->stdio[which] = NULL;
  return a;
}

treadle_async_fd_t *treadle_child_take_stdin(treadle_child_t *c) {
  return take(c, 0);
}

treadle_async_fd_t *treadle_child_take_stdout(treadle_child_t *c) {
  return take(c, 1);
}

treadle_async_fd_t *treadle_child_take_stderr(treadle_child_t *c) {
  return take(c, 2);
}

/* Under c->mu: reaps c if it has exited; true once nothing is left to
 * wait for. */
static bool reap_locked(treadle_child_t *c) {
  if (c->state != TREADLE__CHILD_RUNNING)
    return true;
  siginfo_t info;
  for (;;) {
    memset(&info, 0, sizeof info); /* si_pid stays 0 while it runs */
    /* Relaxed: a capability flag. The pidfd is open: it is closed only
     * after the state left RUNNING. */
    bool by_pidfd = c->has_pidfd &&
                    !atomic_load_explicit(&no_wait_pidfd, memory_order_relaxed);
    int r = by_pidfd ? waitid(WAIT_PIDFD, (id_t)c->pidfd.fd, &info,
                              WEXITED | WNOHANG)
                     : waitid(P_PID, (id_t)c->pid, &info, WEXITED | WNOHANG);
    if (r == 0)
      break;
    if (errno == EINTR)
      continue;
    if (errno == EINVAL && by_pidfd) { /* Linux 5.3: no P_PIDFD yet */
      atomic_store_explicit(&no_wait_pidfd, true, memory_order_relaxed);
      continue;
    }
    c->state = TREADLE__CHILD_LOST;
    c->reap_err = -errno;
    return true;
  }
  if (info.si_pid == 0)
    return false;
  treadle_exit_status_t *s = &c->status;
  s->exited = info.si_code == CLD_EXITED;
  s->code = s->exited ? info.si_status : -1;
  s->signal = s->exited ? 0 : info.si_status;
  s->core_dumped = info.si_code == CLD_DUMPED;
  c->state = TREADLE__CHILD_REAPED;
  return true;
}

/* Reaps c if it can; on true *status or *err says how it ended. */
static bool reap(treadle_child_t *c, treadle_exit_status_t *status,
                 treadle_err_t *err) {
  treadle__os_mutex_lock(&c->mu);
  bool done = reap_locked(c);
  if (done) {
    *err = c->state == TREADLE__CHILD_LOST ? c->reap_err : 0;
    if (*err == 0 && status != NULL)
      *status = c->status;
  }
  treadle__os_mutex_unlock(&c->mu);
  /* A reaped child's pidfd has nothing more to say; a task waiting on it
   * wakes with ECLOSED and finds the state. */
  if (done && c->has_pidfd)
    treadle__source_close(&c->pidfd);
  return done;
}

bool treadle__child_reap_nowait(treadle_child_t *c) {
  treadle_err_t err;
  return reap(c, NULL, &err);
}

int treadle__child_pidfd(treadle_child_t *c) {
  treadle__os_mutex_lock(&c->mu);
  int fd =
      c->has_pidfd && c->state == TREADLE__CHILD_RUNNING ? c->pidfd.fd : -1;
  treadle__os_mutex_unlock(&c->mu);
  return fd;
}

/* The pidfd path: waits for the pidfd's edge, then reaps. */
static treadle_poll_t wait_pidfd(treadle_child_t *c, treadle_cx_t *cx,
                                 treadle_exit_status_t *status,
                                 treadle_err_t *err) {
  treadle__source_t *src = &c->pidfd;
  if (!treadle__source_enter(src)) { /* closed: reaped meanwhile */
    if (!reap(c, status, err))
      *err = TREADLE_ECLOSED; /* not reached: closed only once reaped */
    return TREADLE_READY;
  }
  for (;;) {
    uint32_t tick;
    if (treadle__source_poll_ready(src, cx, TREADLE__IO_READ_INTEREST, &tick,
                                   err) == TREADLE_PENDING) {
      treadle__source_leave(src);
      return TREADLE_PENDING;
    }
    if (*err != 0 && *err != TREADLE_ECLOSED)
      break; /* ESHUTDOWN */
    treadle_err_t closed = *err;
    if (reap(c, status, err))
      break;
    if (closed != 0) {
      *err = closed; /* not reached, as above */
      break;
    }
    treadle__source_clear(src, TREADLE__IO_READABLE, tick);
  }
  treadle__source_leave(src);
  return TREADLE_READY;
}

/* The SIGCHLD path: listen, then reap, then wait for a delivery. */
static treadle_poll_t wait_sigchld(treadle_child_t *c, treadle_cx_t *cx,
                                   treadle_exit_status_t *status,
                                   treadle_err_t *err) {
  if (!c->sigchld_init) {
    *err = treadle_signal_init(&c->sigchld, c->h, SIGCHLD);
    if (*err != 0)
      return TREADLE_READY;
    c->sigchld_init = true;
  }
  for (;;) {
    if (reap(c, status, err))
      return TREADLE_READY;
    if (treadle_signal_poll(&c->sigchld, cx, err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
  }
}

treadle_poll_t treadle_child_wait_poll(treadle_child_t *c, treadle_cx_t *cx,
                                       treadle_exit_status_t *status,
                                       treadle_err_t *err) {
  if (err == NULL)
    return TREADLE_READY;
  if (c == NULL || cx == NULL || status == NULL) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  if (treadle__forked(c->h)) {
    *err = TREADLE_EFORKED;
    return TREADLE_READY;
  }
  if (!treadle__cx_proceed(cx))
    return TREADLE_PENDING;
  treadle__os_mutex_lock(&c->mu);
  bool done = c->state != TREADLE__CHILD_RUNNING;
  treadle__os_mutex_unlock(&c->mu);
  if (done) {
    reap(c, status, err); /* the recorded outcome, no system call */
    return TREADLE_READY;
  }
  if (cx->task->sched->handle != c->h) {
    /* Its runtime's driver is the one that will see the exit. */
    *err = runtime_shut(c->h) ? TREADLE_ESHUTDOWN : TREADLE_EFOREIGN;
    return TREADLE_READY;
  }
  return c->has_pidfd ? wait_pidfd(c, cx, status, err)
                      : wait_sigchld(c, cx, status, err);
}

treadle_err_t treadle_child_try_wait(treadle_child_t *c,
                                     treadle_exit_status_t *status) {
  if (c == NULL || status == NULL)
    return TREADLE_EINVAL;
  if (treadle__forked(c->h))
    return TREADLE_EFORKED;
  treadle_err_t err;
  return reap(c, status, &err) ? err : TREADLE_EAGAIN;
}

treadle_err_t treadle_child_kill(treadle_child_t *c, int signum) {
  if (c == NULL || signum < 0 || signum > MAX_SIGNAL || signum >= NSIG)
    return TREADLE_EINVAL;
  if (treadle__forked(c->h))
    return TREADLE_EFORKED; /* the parent's child, not this process's */
  treadle_err_t err = 0;
  treadle__os_mutex_lock(&c->mu);
  if (c->state == TREADLE__CHILD_RUNNING) {
    /* Not reaped, and no reap can start before the unlock: the pid is
     * still this child's (a zombie's at worst, which takes signals). */
    int r = c->has_pidfd ? (int)syscall(SYS_pidfd_send_signal, c->pidfd.fd,
                                        signum, NULL, 0)
                         : kill(c->pid, signum);
    if (r < 0 && errno == ENOSYS)
      r = kill(c->pid, signum);
    if (r < 0 && errno != ESRCH) /* ESRCH: it has exited */
      err = -errno;
  }
  treadle__os_mutex_unlock(&c->mu);
  return err;
}

void treadle__child_destroy(treadle_child_t *c) {
  for (int i = 0; i < 3; i++)
    treadle_async_fd_free(c->stdio[i]);
  if (c->sigchld_init)
    treadle_signal_drop(&c->sigchld);
  if (c->has_pidfd)
    treadle__source_free(&c->pidfd);
  treadle__os_mutex_destroy(&c->mu);
  treadle_handle_unref(c->h);
  treadle__free(c);
}

/* Case 3 of the top: a detached task that owns a freed child until it is
 * reaped. Its drop runs after the wait, or when shutdown cancels it. */
typedef struct {
  treadle_child_t *c;
} orphan_t;

static treadle_poll_t orphan_poll(treadle_cx_t *cx, void *state) {
  orphan_t *o = state;
  treadle_exit_status_t status;
  treadle_err_t err;
  return treadle_child_wait_poll(o->c, cx, &status, &err);
}

static void orphan_drop(void *state) {
  treadle_child_t *c = ((orphan_t *)state)->c;
  if (treadle__child_reap_nowait(c))
    treadle__child_destroy(c);
  else
    treadle__reaper_adopt(c); /* case 4 */
}

static const treadle_task_vtable_t orphan_vt = {.poll = orphan_poll,
                                                .drop = orphan_drop};

void treadle_child_free(treadle_child_t *c) {
  if (c == NULL)
    return;
  if (treadle__forked(c->h)) {
    /* The parent's child: close this process's copies of the fds and
     * touch nothing else (a parent thread may have held c->mu or the
     * signal driver's lock at the fork). */
    for (int i = 0; i < 3; i++)
      treadle_async_fd_free(c->stdio[i]);
    if (c->has_pidfd)
      treadle__source_free(&c->pidfd);
    treadle__free(c);
    return;
  }
  for (int i = 0; i < 3; i++) { /* the child sees end of file, or EPIPE */
    treadle_async_fd_free(c->stdio[i]);
    c->stdio[i] = NULL;
  }
  if (c->kill_on_drop)
    treadle_child_kill(c, SIGKILL);
  if (treadle__child_reap_nowait(c)) { /* case 2 */
    treadle__child_destroy(c);
    return;
  }
  orphan_t o = {c};
  if (treadle_spawn(c->h, &orphan_vt, &o, sizeof o, NULL) != 0)
    treadle__reaper_adopt(c); /* case 4: shut down, or out of memory */
}
