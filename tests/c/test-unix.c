/* Unix stream sockets (issue 14 item 2): listeners on paths and on
 * abstract names, connect, echo through the same stream code as TCP,
 * socket pairs, the peer's credentials, the path rules (a live socket is
 * EADDRINUSE, a stale socket file is bound over, anything else is left
 * alone; close removes the path it made, and only that file, and not from
 * a forked child), bad names, closed sockets and other runtimes.
 * Descriptor passing is test-unix-fds.c's, datagrams test-unix-dgram.c's.
 * Paths live in a directory of the case's own; abstract names carry the
 * process id. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "net_util.h"

/* dir/name into path. */
static void path_in(char *path, size_t len, const char *dir,
                    const char *name) {
  snprintf(path, len, "%s/%s", dir, name);
}

/* A name in the abstract namespace, unique to this process. */
static void abstract_name(char *buf, size_t len, const char *tag) {
  snprintf(buf, len, "@treadle-test-%d-%s", (int)getpid(), tag);
}

static bool exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* The Unix address of `addr` as text. */
static const char *unix_text(const struct sockaddr_storage *addr,
                             char *buf, size_t len) {
  assert_true(treadle_sockaddr_unix_path(addr, buf, len) >= 0);
  return buf;
}

/* A listener bound to `path`. */
static treadle_listener_t *listen_unix(treadle_runtime_t *rt,
                                       const char *path) {
  treadle_listener_t *l = NULL;
  assert_int_equal(
      treadle_unix_bind(treadle_runtime_handle(rt), path, NULL, &l), 0);
  assert_non_null(l);
  return l;
}

/* Connects to `path` and accepts on `l`: *client and *server. */
static void connect_pair(treadle_runtime_t *rt, treadle_listener_t *l,
                         const char *path, treadle_stream_t **client,
                         treadle_stream_t **server) {
  *client = NULL;
  assert_int_equal(
      treadle_unix_connect(treadle_runtime_handle(rt), path, client), 0);
  assert_non_null(*client);
  *server = accept_one(rt, l);
}

/* Accepts one stream on l, with the peer's address in *peer. */
typedef struct {
  treadle_listener_t *l;
  struct sockaddr_storage *peer;
} accept_peer_t;

static treadle_poll_t accept_peer_poll(treadle_cx_t *cx, void *st) {
  accept_peer_t *a = st;
  treadle_stream_t *s = NULL;
  treadle_err_t err;
  if (treadle_listener_accept_poll(a->l, cx, &s, a->peer, &err) ==
      TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_cx_set_output(cx, err, s);
  return TREADLE_READY;
}

static treadle_stream_t *accept_peer(treadle_runtime_t *rt,
                                     treadle_listener_t *l,
                                     struct sockaddr_storage *peer) {
  static const treadle_task_vtable_t vt = {.poll = accept_peer_poll,
                                           .drop_output = stream_drop_output};
  accept_peer_t a = {l, peer};
  void *v = NULL;
  assert_int_equal(treadle_runtime_block_on(rt, &vt, &a, sizeof a, &v), 0);
  assert_non_null(v);
  return v;
}

/* A plain socket of `type` bound to path, listening (streams) or not;
 * with close_it, closed at once without removing its file: stale. */
static int plain_bound(const char *path, int type, bool close_it) {
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_storage a;
  assert_int_equal(treadle_sockaddr_unix(path, &a), 0);
  socklen_t len = offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
  assert_int_equal(bind(fd, (struct sockaddr *)&a, len), 0);
  if (type == SOCK_STREAM)
    assert_int_equal(listen(fd, 8), 0);
  if (close_it) {
    close(fd);
    return -1;
  }
  return fd;
}

/* ------------------------------------------------------------ streams */

static void path_listener_serves_streams(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  char dir[64], path[128], buf[128];
  test_tmpdir(dir);
  path_in(path, sizeof path, dir, "echo.sock");
  treadle_listener_t *l = listen_unix(rt, path);
  struct sockaddr_storage a;
  assert_int_equal(treadle_listener_addr(l, &a), 0);
  assert_int_equal(a.ss_family, AF_UNIX);
  assert_string_equal(unix_text(&a, buf, sizeof buf), path);
  struct stat st;
  assert_int_equal(lstat(path, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));

  for (int i = 0; i < 3; i++) {
    treadle_stream_t *c, *s;
    connect_pair(rt, l, path, &c, &s);
    /* The client never bound: unnamed; its peer is the path. */
    assert_int_equal(treadle_stream_local_addr(c, &a), 0);
    assert_string_equal(unix_text(&a, buf, sizeof buf), "");
    assert_int_equal(treadle_stream_peer_addr(c, &a), 0);
    assert_string_equal(unix_text(&a, buf, sizeof buf), path);
    assert_int_equal(treadle_stream_local_addr(s, &a), 0);
    assert_string_equal(unix_text(&a, buf, sizeof buf), path);
    /* The same stream code as TCP: every byte back, with partial writes
     * (1 MiB outruns the socket buffers) and writev on the second. */
    echo_pair(rt, c, s, (size_t)test_scale(1) << 20, i == 1);
  }
  /* The accept leaf fills in the peer's address: unnamed here, its name
   * when the client bound one first (a plain socket here). */
  treadle_stream_t *c = NULL;
  assert_int_equal(treadle_unix_connect(treadle_runtime_handle(rt), path, &c),
                   0);
  memset(&a, 0xee, sizeof a);
  treadle_stream_t *s = accept_peer(rt, l, &a);
  assert_string_equal(unix_text(&a, buf, sizeof buf), "");
  treadle_stream_free(s);
  treadle_stream_free(c);
  char named[64];
  abstract_name(named, sizeof named, "client");
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_storage me, to;
  assert_int_equal(treadle_sockaddr_unix(named, &me), 0);
  assert_int_equal(treadle_sockaddr_unix(path, &to), 0);
  assert_int_equal(
      bind(fd, (struct sockaddr *)&me,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(named))),
      0);
  assert_int_equal(
      connect(fd, (struct sockaddr *)&to, sizeof(struct sockaddr_un)), 0);
  s = accept_peer(rt, l, &a);
  assert_string_equal(unix_text(&a, buf, sizeof buf), named);
  treadle_stream_free(s);
  close(fd);
  treadle_listener_free(l);
  assert_false(exists(path)); /* close removed what bind made */
  assert_int_equal(rmdir(dir), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void abstract_names_have_no_file(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  char name[64], buf[128];
  abstract_name(name, sizeof name, "abstract");
  treadle_listener_t *l = listen_unix(rt, name);
  struct sockaddr_storage a;
  assert_int_equal(treadle_listener_addr(l, &a), 0);
  assert_string_equal(unix_text(&a, buf, sizeof buf), name);
  assert_int_equal(((struct sockaddr_un *)&a)->sun_path[0], '\0');
  /* A live abstract name is in use; there is no stale file to remove. */
  treadle_listener_t *l2 = (treadle_listener_t *)1;
  assert_int_equal(treadle_unix_bind(h, name, NULL, &l2), TREADLE_EADDRINUSE);
  assert_null(l2);
  treadle_stream_t *c, *s;
  connect_pair(rt, l, name, &c, &s);
  assert_int_equal(treadle_stream_peer_addr(c, &a), 0);
  assert_string_equal(unix_text(&a, buf, sizeof buf), name);
  echo_pair(rt, c, s, 4096, false);
  /* The name goes with its last socket: bound again at once. */
  treadle_listener_free(l);
  l = listen_unix(rt, name);
  treadle_listener_free(l);
  /* A path that starts with '@' is written "./@...". */
  char dir[64], cwd[4096], rel[80];
  test_tmpdir(dir);
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(dir), 0);
  snprintf(rel, sizeof rel, "./%s", name);
  l = listen_unix(rt, rel);
  assert_true(exists(name)); /* a file named "@treadle-..." */
  treadle_listener_free(l);
  assert_false(exists(name));
  assert_int_equal(chdir(cwd), 0);
  assert_int_equal(rmdir(dir), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void stream_pair_and_peer_cred(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_stream_t *a = NULL, *b = NULL;
  assert_int_equal(treadle_unix_stream_pair(h, &a, &b), 0);
  treadle_unix_cred_t cred = {.pid = -1};
  assert_int_equal(treadle_unix_peer_cred(a, &cred), 0);
  assert_int_equal(cred.pid, getpid());
  assert_int_equal(cred.uid, getuid());
  assert_int_equal(cred.gid, getgid());
  assert_int_equal(treadle_unix_peer_cred(a, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_peer_cred(NULL, &cred), TREADLE_EINVAL);
  /* TCP's options are not a Unix stream's. */
  assert_int_equal(treadle_tcp_set_nodelay(a, true), TREADLE_ENOTSUP);
  echo_pair(rt, a, b, 100000, true);

  /* Through a listener: both ends see this process. */
  char name[64];
  abstract_name(name, sizeof name, "cred");
  treadle_listener_t *l = listen_unix(rt, name);
  treadle_stream_t *c, *s;
  connect_pair(rt, l, name, &c, &s);
  memset(&cred, 0, sizeof cred);
  assert_int_equal(treadle_unix_peer_cred(s, &cred), 0);
  assert_int_equal(cred.pid, getpid());
  assert_int_equal(treadle_unix_peer_cred(c, &cred), 0);
  assert_int_equal(cred.uid, getuid());
  treadle_stream_close(c);
  assert_int_equal(treadle_unix_peer_cred(c, &cred), TREADLE_ECLOSED);
  treadle_stream_free(c);
  treadle_stream_free(s);
  treadle_listener_free(l);

  /* A TCP stream has no peer credentials. */
  int fd;
  treadle_tcp_stream_t *t = plain_pair(rt, 0, &fd);
  assert_int_equal(treadle_unix_peer_cred(t, &cred), TREADLE_ENOTSUP);
  treadle_tcp_stream_free(t);
  close(fd);
  /* Pairs' bad input. */
  assert_int_equal(treadle_unix_stream_pair(NULL, &a, &b), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_stream_pair(h, NULL, &b), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_stream_pair(h, &a, NULL), TREADLE_EINVAL);
  assert_null(a);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------- paths */

static void stale_path_is_bound_over(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  char dir[64], path[128];
  test_tmpdir(dir);
  path_in(path, sizeof path, dir, "stale.sock");
  plain_bound(path, SOCK_STREAM, true); /* its program "exited" */
  assert_true(exists(path));
  /* Nobody serves it: a connect is refused... */
  treadle_stream_t *c = (treadle_stream_t *)1;
  assert_int_equal(treadle_unix_connect(h, path, &c), TREADLE_ECONNREFUSED);
  assert_null(c);
  /* ...so bind removes it and binds over it. */
  treadle_listener_t *l = listen_unix(rt, path);
  treadle_stream_t *s;
  connect_pair(rt, l, path, &c, &s);
  echo_pair(rt, c, s, 1000, false);
  treadle_listener_free(l);
  assert_false(exists(path));
  assert_int_equal(rmdir(dir), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void live_or_foreign_path_is_in_use(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  char dir[64], path[128], file[128];
  test_tmpdir(dir);
  path_in(path, sizeof path, dir, "live.sock");
  treadle_listener_t *l = NULL;

  /* A live listener of another program: in use, and it still works. */
  int fd = plain_bound(path, SOCK_STREAM, false);
  assert_int_equal(treadle_unix_bind(h, path, NULL, &l), TREADLE_EADDRINUSE);
  assert_true(exists(path));
  /* The check's connection is in its backlog, closed at once. */
  int probe = accept(fd, NULL, NULL);
  assert_true(probe >= 0);
  char x;
  assert_int_equal(read(probe, &x, 1), 0);
  close(probe);
  close(fd);
  unlink(path);

  /* A live datagram socket there: in use (the check gets EPROTOTYPE). */
  fd = plain_bound(path, SOCK_DGRAM, false);
  assert_int_equal(treadle_unix_bind(h, path, NULL, &l), TREADLE_EADDRINUSE);
  close(fd);
  unlink(path);

  /* A treadle listener there. */
  treadle_listener_t *mine = listen_unix(rt, path);
  assert_int_equal(treadle_unix_bind(h, path, NULL, &l), TREADLE_EADDRINUSE);
  treadle_listener_free(mine);

  /* A file that is not a socket is never removed. */
  path_in(file, sizeof file, dir, "data.txt");
  int f = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  assert_true(f >= 0);
  assert_int_equal(write(f, "keep", 4), 4);
  close(f);
  assert_int_equal(treadle_unix_bind(h, file, NULL, &l), TREADLE_EADDRINUSE);
  struct stat st;
  assert_int_equal(lstat(file, &st), 0);
  assert_int_equal(st.st_size, 4);
  /* Connecting to it is refused, as to any socket nobody serves. */
  treadle_stream_t *c;
  assert_int_equal(treadle_unix_connect(h, file, &c), TREADLE_ECONNREFUSED);
  assert_int_equal(unlink(file), 0);
  assert_int_equal(rmdir(dir), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void close_removes_only_its_own_path(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  char dir[64], path[128];
  test_tmpdir(dir);
  path_in(path, sizeof path, dir, "own.sock");

  /* Close removes it (and free after close does nothing more). */
  treadle_listener_t *l = listen_unix(rt, path);
  treadle_listener_close(l);
  assert_false(exists(path));
  treadle_listener_close(l);
  treadle_listener_free(l);
  /* Free without close removes it too. */
  l = listen_unix(rt, path);
  treadle_listener_free(l);
  assert_false(exists(path));

  /* Somebody replaced the file: it stays. */
  l = listen_unix(rt, path);
  assert_int_equal(unlink(path), 0);
  int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  assert_true(f >= 0);
  close(f);
  treadle_listener_free(l);
  assert_true(exists(path));
  assert_int_equal(unlink(path), 0);

  /* A relative path is removed where it was made, not where the process
   * is when it closes. */
  char cwd[4096];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(dir), 0);
  l = listen_unix(rt, "rel.sock");
  assert_int_equal(chdir(cwd), 0);
  char rel[128];
  path_in(rel, sizeof rel, dir, "rel.sock");
  assert_true(exists(rel));
  treadle_listener_free(l); /* "rel.sock" here is not that file */
  assert_true(exists(rel));
  assert_int_equal(unlink(rel), 0);

  /* A forked child that frees its copy leaves the parent's path. */
  l = listen_unix(rt, path);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(20);
    treadle_listener_free(l);
    /* As test-fd.c's child: end by exec, the parent's runtime left. */
    execl("/bin/true", "true", (char *)NULL);
    _exit(98);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_true(exists(path));
  treadle_stream_t *c, *s;
  connect_pair(rt, l, path, &c, &s); /* and the parent still serves */
  treadle_stream_free(c);
  treadle_stream_free(s);
  treadle_listener_free(l);
  assert_false(exists(path));
  assert_int_equal(rmdir(dir), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------ addresses */

static void unix_addresses(void **state) {
  (void)state;
  struct sockaddr_storage a;
  char buf[128];
  assert_int_equal(treadle_sockaddr_unix("/run/x.sock", &a), 0);
  assert_int_equal(a.ss_family, AF_UNIX);
  assert_int_equal(treadle_sockaddr_unix_path(&a, buf, sizeof buf), 11);
  assert_string_equal(buf, "/run/x.sock");
  assert_int_equal(treadle_sockaddr_unix("@name", &a), 0);
  assert_int_equal(((struct sockaddr_un *)&a)->sun_path[0], '\0');
  assert_memory_equal(((struct sockaddr_un *)&a)->sun_path + 1, "name", 4);
  assert_int_equal(treadle_sockaddr_unix_path(&a, buf, sizeof buf), 5);
  assert_string_equal(buf, "@name");
  assert_int_equal(treadle_sockaddr_unix_path(&a, buf, 3), 5); /* truncated */
  assert_string_equal(buf, "@n");
  /* The longest name fits, one more byte does not. */
  char longest[TREADLE_UNIX_PATH_MAX + 3];
  memset(longest, 'p', sizeof longest);
  longest[TREADLE_UNIX_PATH_MAX] = '\0';
  assert_int_equal(treadle_sockaddr_unix(longest, &a), 0);
  assert_int_equal(treadle_sockaddr_unix_path(&a, buf, sizeof buf),
                   TREADLE_UNIX_PATH_MAX);
  longest[TREADLE_UNIX_PATH_MAX] = 'p';
  longest[TREADLE_UNIX_PATH_MAX + 1] = '\0';
  assert_int_equal(treadle_sockaddr_unix(longest, &a), TREADLE_ENAMETOOLONG);
  assert_string_equal(treadle_strerror(TREADLE_ENAMETOOLONG), "name too long");
  longest[0] = '@'; /* 107 bytes of name after the '@': fits */
  assert_int_equal(treadle_sockaddr_unix(longest, &a), 0);
  longest[TREADLE_UNIX_PATH_MAX + 1] = 'p';
  longest[TREADLE_UNIX_PATH_MAX + 2] = '\0';
  assert_int_equal(treadle_sockaddr_unix(longest, &a), TREADLE_ENAMETOOLONG);
  assert_int_equal(treadle_sockaddr_unix(NULL, &a), TREADLE_EINVAL);
  assert_int_equal(treadle_sockaddr_unix("", &a), TREADLE_EINVAL);
  assert_int_equal(treadle_sockaddr_unix("@", &a), TREADLE_EINVAL);
  assert_int_equal(treadle_sockaddr_unix("/x", NULL), TREADLE_EINVAL);
  /* An unnamed address, and the families that are not Unix. */
  memset(&a, 0, sizeof a);
  a.ss_family = AF_UNIX;
  assert_int_equal(treadle_sockaddr_unix_path(&a, buf, sizeof buf), 0);
  assert_string_equal(buf, "");
  assert_int_equal(treadle_sockaddr_parse("1.2.3.4", 1, &a), 0);
  assert_int_equal(treadle_sockaddr_unix_path(&a, buf, sizeof buf),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_sockaddr_unix_path(NULL, buf, sizeof buf),
                   TREADLE_EINVAL);
}

/* ------------------------------------------------------------ misuse */

static void bad_names_and_input(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_listener_t *l = (treadle_listener_t *)1;
  treadle_stream_t *c = (treadle_stream_t *)1;
  char longest[TREADLE_UNIX_PATH_MAX + 3];
  memset(longest, 'x', sizeof longest);
  longest[0] = '/';
  longest[TREADLE_UNIX_PATH_MAX + 1] = '\0'; /* one byte too long */
  const struct {
    const char *path;
    treadle_err_t err;
  } cases[] = {
      {NULL, TREADLE_EINVAL},
      {"", TREADLE_EINVAL},
      {"@", TREADLE_EINVAL},
      {longest, TREADLE_ENAMETOOLONG},
      {"/nonexistent-treadle-dir/x.sock", TREADLE_ENOENT},
      {"/etc/passwd/x.sock", -ENOTDIR},
  };
  for (size_t i = 0; i < TEST_ARRAY_LEN(cases); i++) {
    assert_int_equal(treadle_unix_bind(h, cases[i].path, NULL, &l),
                     cases[i].err);
    assert_null(l);
    assert_int_equal(treadle_unix_connect(h, cases[i].path, &c),
                     cases[i].err);
    assert_null(c);
  }
  longest[0] = '@';
  longest[TREADLE_UNIX_PATH_MAX + 1] = 'x';
  longest[TREADLE_UNIX_PATH_MAX + 2] = '\0'; /* 108 bytes of name */
  assert_int_equal(treadle_unix_bind(h, longest, NULL, &l),
                   TREADLE_ENAMETOOLONG);
  assert_string_equal(treadle_strerror(TREADLE_ENOENT),
                      "no such file or directory");
  assert_string_equal(treadle_strerror(-ENOTDIR), "Not a directory");
  /* Backlogs, NULL handles and outs. */
  char name[64];
  abstract_name(name, sizeof name, "bad");
  const int backlogs[] = {0, -1, 65536};
  for (size_t i = 0; i < TEST_ARRAY_LEN(backlogs); i++) {
    treadle_unix_bind_opts_t o = TREADLE_UNIX_BIND_OPTS_INIT;
    o.backlog = backlogs[i];
    assert_int_equal(treadle_unix_bind(h, name, &o, &l), TREADLE_EINVAL);
  }
  assert_int_equal(treadle_unix_bind(NULL, name, NULL, &l), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_bind(h, name, NULL, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_connect(NULL, name, &c), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_connect(h, name, NULL), TREADLE_EINVAL);
  /* Nobody has the name: refused. Abstract names are per socket type, so
   * a datagram socket's name is still nobody's for a stream; at a path,
   * a datagram socket is the wrong type. */
  assert_int_equal(treadle_unix_connect(h, name, &c), TREADLE_ECONNREFUSED);
  treadle_dgram_t *d = NULL;
  assert_int_equal(treadle_unix_dgram_bind(h, name, &d), 0);
  assert_int_equal(treadle_unix_connect(h, name, &c), TREADLE_ECONNREFUSED);
  treadle_dgram_free(d);
  char dir[64], path[128];
  test_tmpdir(dir);
  snprintf(path, sizeof path, "%s/dgram.sock", dir);
  assert_int_equal(treadle_unix_dgram_bind(h, path, &d), 0);
  assert_int_equal(treadle_unix_connect(h, path, &c), TREADLE_EPROTOTYPE);
  assert_string_equal(treadle_strerror(TREADLE_EPROTOTYPE),
                      "protocol wrong type for socket");
  treadle_dgram_free(d);
  assert_int_equal(rmdir(dir), 0);
  /* NULL listeners and streams. */
  struct sockaddr_storage a;
  assert_int_equal(treadle_listener_addr(NULL, &a), TREADLE_EINVAL);
  assert_int_equal(treadle_listener_fd_exhaustions(NULL), 0);
  treadle_listener_close(NULL);
  treadle_listener_free(NULL);
  treadle_stream_close(NULL);
  treadle_stream_free(NULL);
  assert_int_equal(treadle_stream_shutdown(NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_stream_local_addr(NULL, &a), TREADLE_EINVAL);
  assert_int_equal(treadle_stream_peer_addr(NULL, &a), TREADLE_EINVAL);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Each stream and listener leaf once, at its first poll: its error, or 1
 * when it was PENDING. */
typedef struct {
  treadle_listener_t *l;
  treadle_stream_t *s;
  treadle_err_t accept, read, write, write_all, writev;
  bool got_stream;
} leaves_t;

#define AT_ONCE(call) ((call) == TREADLE_READY ? err : 1)

static treadle_poll_t leaves_poll(treadle_cx_t *cx, void *st) {
  leaves_t *v = *(leaves_t **)st;
  treadle_err_t err = 0;
  treadle_stream_t *out = NULL;
  char buf[4] = "abc";
  size_t n, done = 0;
  struct iovec iov = {buf, 3};
  v->accept = AT_ONCE(treadle_listener_accept_poll(v->l, cx, &out, NULL, &err));
  v->got_stream = out != NULL;
  treadle_stream_free(out);
  v->read = AT_ONCE(treadle_stream_read_poll(v->s, cx, buf, 3, &n, &err));
  v->write = AT_ONCE(treadle_stream_write_poll(v->s, cx, buf, 3, &n, &err));
  v->write_all =
      AT_ONCE(treadle_stream_write_all_poll(v->s, cx, buf, 3, &done, &err));
  v->writev = AT_ONCE(treadle_stream_writev_poll(v->s, cx, &iov, 1, &n, &err));
  return TREADLE_READY;
}

static void run_leaves(treadle_runtime_t *rt, leaves_t *v) {
  static const treadle_task_vtable_t vt = {.poll = leaves_poll};
  assert_int_equal(RUN(rt, &vt, v), 0);
}

static void closed_and_foreign_sockets(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime(), *other = test_runtime();
  char name[64];
  abstract_name(name, sizeof name, "closed");
  treadle_listener_t *l = listen_unix(rt, name);
  treadle_stream_t *c, *s;
  connect_pair(rt, l, name, &c, &s);

  /* A task of another runtime: EFOREIGN at once, nothing taken. */
  leaves_t v = {.l = l, .s = c};
  run_leaves(other, &v);
  assert_int_equal(v.accept, TREADLE_EFOREIGN);
  assert_false(v.got_stream);
  assert_int_equal(v.read, TREADLE_EFOREIGN);
  assert_int_equal(v.write, TREADLE_EFOREIGN);
  assert_int_equal(v.write_all, TREADLE_EFOREIGN);
  assert_int_equal(v.writev, TREADLE_EFOREIGN);

  /* Closed: ECLOSED from every leaf and call. */
  treadle_listener_close(l);
  treadle_stream_close(c);
  run_leaves(rt, &v);
  assert_int_equal(v.accept, TREADLE_ECLOSED);
  assert_int_equal(v.read, TREADLE_ECLOSED);
  assert_int_equal(v.write, TREADLE_ECLOSED);
  assert_int_equal(v.write_all, TREADLE_ECLOSED);
  assert_int_equal(v.writev, TREADLE_ECLOSED);
  struct sockaddr_storage a;
  assert_int_equal(treadle_listener_addr(l, &a), TREADLE_ECLOSED);
  assert_int_equal(treadle_stream_shutdown(c), TREADLE_ECLOSED);
  assert_int_equal(treadle_stream_local_addr(c, &a), TREADLE_ECLOSED);
  treadle_listener_free(l);
  treadle_stream_free(c);
  /* The other end sees the close as end of stream: an echo of it reads
   * end of stream at once and echoes nothing. */
  echo_t e = {.s = s};
  void *echoed = (void *)1;
  assert_int_equal(
      treadle_runtime_block_on(rt, &echo_vt, &e, sizeof e, &echoed), 0);
  assert_null(echoed);
  assert_int_equal(treadle_runtime_free(other), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void runtime_without_io_says_so(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime_without_io();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_dgram_t *d = (treadle_dgram_t *)1, *e = NULL;
  assert_int_equal(treadle_unix_dgram_bind(h, "@treadle-no-io", &d),
                   TREADLE_ENOIO);
  assert_null(d);
  assert_int_equal(treadle_unix_dgram_unbound(h, &d), TREADLE_ENOIO);
  assert_int_equal(treadle_unix_dgram_pair(h, &d, &e), TREADLE_ENOIO);
  treadle_listener_t *l = (treadle_listener_t *)1;
  assert_int_equal(treadle_unix_bind(h, "@treadle-no-io", NULL, &l),
                   TREADLE_ENOIO);
  assert_null(l);
  treadle_stream_t *s, *t;
  assert_int_equal(treadle_unix_connect(h, "@treadle-no-io", &s),
                   TREADLE_ENOIO);
  assert_int_equal(treadle_unix_stream_pair(h, &s, &t), TREADLE_ENOIO);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(path_listener_serves_streams),
    RT_TEST(abstract_names_have_no_file),
    RT_TEST(stream_pair_and_peer_cred),
    RT_TEST(stale_path_is_bound_over),
    RT_TEST(live_or_foreign_path_is_in_use),
    RT_TEST(close_removes_only_its_own_path),
    RT_TEST(bad_names_and_input),
    RT_TEST(closed_and_foreign_sockets),
    TEST(unix_addresses),
    RT_TEST(runtime_without_io_says_so),
};

TEST_MAIN(tests)
