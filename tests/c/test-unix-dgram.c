/* Unix datagram sockets (issue 14 item 2): bound to paths and abstract
 * names, unbound senders (unnamed), connect, pairs, a datagram longer than
 * the buffer, batches, the path rules as for listeners (stale files bound
 * over, close removes its own path), and the errors of sending to nobody.
 * The leaves are the ones UDP uses (dgram.c), so this checks what is
 * Unix's: names, and the kernel's answers. */
#define _GNU_SOURCE
#include <sys/stat.h>
#include <sys/un.h>

#include "dgram_util.h"

static treadle_dgram_t *bind_unix(treadle_runtime_t *rt, const char *path) {
  treadle_dgram_t *d = NULL;
  assert_int_equal(
      treadle_unix_dgram_bind(treadle_runtime_handle(rt), path, &d), 0);
  assert_non_null(d);
  return d;
}

static const char *text(const struct sockaddr_storage *a, char *buf,
                        size_t len) {
  assert_true(treadle_sockaddr_unix_path(a, buf, len) >= 0);
  return buf;
}

static bool exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static void paths_names_and_unbound(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  char dir[64], pa[128], nb[64], buf[128];
  test_tmpdir(dir);
  snprintf(pa, sizeof pa, "%s/a.sock", dir);
  snprintf(nb, sizeof nb, "@treadle-test-%d-b", (int)getpid());
  treadle_dgram_t *a = bind_unix(rt, pa), *b = bind_unix(rt, nb);
  struct sockaddr_storage to_a, to_b, from, local;
  assert_int_equal(treadle_sockaddr_unix(pa, &to_a), 0);
  assert_int_equal(treadle_sockaddr_unix(nb, &to_b), 0);
  assert_int_equal(treadle_dgram_local_addr(a, &local), 0);
  assert_string_equal(text(&local, buf, sizeof buf), pa);

  /* Path to name and back, each seeing the other's address. */
  size_t n;
  assert_int_equal(dg_send(rt, a, "to b", 4, &to_b), 0);
  assert_int_equal(dg_recv(rt, b, buf, sizeof buf, &n, &from, 10000), 0);
  assert_int_equal(n, 4);
  assert_string_equal(text(&from, buf, sizeof buf), pa);
  assert_int_equal(dg_send(rt, b, "to a", 4, &from), 0); /* reply to from */
  assert_int_equal(dg_recv(rt, a, buf, sizeof buf, &n, &from, 10000), 0);
  assert_string_equal(text(&from, buf, sizeof buf), nb);

  /* An unbound sender is unnamed, and cannot be replied to. */
  treadle_dgram_t *u = NULL;
  assert_int_equal(treadle_unix_dgram_unbound(h, &u), 0);
  assert_int_equal(dg_send(rt, u, "anon", 4, &to_a), 0);
  memset(&from, 0x55, sizeof from);
  assert_int_equal(dg_recv(rt, a, buf, sizeof buf, &n, &from, 10000), 0);
  assert_int_equal(from.ss_family, AF_UNIX);
  assert_string_equal(text(&from, buf, sizeof buf), "");
  assert_int_equal(dg_send(rt, a, "back?", 5, &from), TREADLE_EINVAL);

  /* Connected: send and recv without addresses; peer_addr. */
  assert_int_equal(treadle_unix_dgram_connect(u, nb), 0);
  assert_int_equal(treadle_dgram_peer_addr(u, &from), 0);
  assert_string_equal(text(&from, buf, sizeof buf), nb);
  assert_int_equal(dg_send(rt, u, "conn", 4, NULL), 0);
  assert_int_equal(dg_recv(rt, b, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_int_equal(n, 4);
  assert_memory_equal(buf, "conn", 4);

  treadle_dgram_free(u);
  treadle_dgram_free(b);
  treadle_dgram_free(a);
  assert_false(exists(pa)); /* close removed it */
  assert_int_equal(rmdir(dir), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void pairs_truncation_and_batches(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_dgram_t *a = NULL, *b = NULL;
  assert_int_equal(treadle_unix_dgram_pair(treadle_runtime_handle(rt), &a, &b),
                   0);
  char buf[16];
  size_t n;
  assert_int_equal(dg_send(rt, a, "hello", 5, NULL), 0);
  assert_int_equal(dg_recv(rt, b, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_int_equal(n, 5);
  char big[300];
  memset(big, 'z', sizeof big);
  assert_int_equal(dg_send(rt, b, big, sizeof big, NULL), 0);
  assert_int_equal(dg_recv(rt, a, buf, 8, &n, NULL, 10000), TREADLE_EMSGSIZE);
  assert_int_equal(n, sizeof big);
  assert_int_equal(dg_send(rt, b, NULL, 0, NULL), 0); /* empty */
  assert_int_equal(dg_recv(rt, a, buf, sizeof buf, &n, NULL, 10000), 0);
  assert_int_equal(n, 0);

  /* A batch of 5 each way. */
  char out[5][4] = {"0", "11", "222", "3333", "4"};
  treadle_dgram_msg_t msgs[5];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < 5; i++) {
    msgs[i].buf = out[i];
    msgs[i].len = strlen(out[i]);
  }
  size_t done = 0, k;
  while (done < 5) {
    assert_int_equal(dg_batch(rt, a, msgs + done, 5 - done, true, &k), 0);
    done += k;
  }
  char in[5][3];
  treadle_dgram_msg_t rm[5];
  memset(rm, 0, sizeof rm);
  for (int i = 0; i < 5; i++) {
    rm[i].buf = in[i];
    rm[i].len = sizeof in[i];
  }
  done = 0;
  while (done < 5) {
    assert_int_equal(dg_batch(rt, b, rm + done, 5 - done, false, &k), 0);
    for (size_t i = done; i < done + k; i++) {
      assert_int_equal(rm[i].n, strlen(out[i]));
      assert_int_equal(rm[i].truncated, rm[i].n > 3);
      assert_memory_equal(in[i], out[i], rm[i].n > 3 ? 3 : rm[i].n);
      assert_int_equal(rm[i].addr.ss_family, AF_UNIX); /* unnamed pair end */
    }
    done += k;
  }
  treadle_dgram_free(a);
  treadle_dgram_free(b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void sending_to_nobody(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  char dir[64], path[128], buf[8];
  test_tmpdir(dir);
  snprintf(path, sizeof path, "%s/gone.sock", dir);
  treadle_dgram_t *u = NULL;
  assert_int_equal(treadle_unix_dgram_unbound(h, &u), 0);
  struct sockaddr_storage to;
  assert_int_equal(treadle_sockaddr_unix(path, &to), 0);
  size_t n;
  /* No such file. */
  assert_int_equal(dg_send(rt, u, "x", 1, &to), TREADLE_ENOENT);
  assert_int_equal(treadle_unix_dgram_connect(u, path), TREADLE_ENOENT);
  /* A stale file (its socket closed without removing it): refused; then
   * a bind removes it and binds over it. */
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  assert_int_equal(
      bind(fd, (struct sockaddr *)&to, sizeof(struct sockaddr_un)), 0);
  close(fd);
  assert_true(exists(path));
  assert_int_equal(dg_send(rt, u, "x", 1, &to), TREADLE_ECONNREFUSED);
  assert_int_equal(treadle_unix_dgram_connect(u, path), TREADLE_ECONNREFUSED);
  treadle_dgram_t *d = bind_unix(rt, path);
  /* Now live: a second bind is in use. */
  treadle_dgram_t *e = (treadle_dgram_t *)1;
  assert_int_equal(treadle_unix_dgram_bind(h, path, &e), TREADLE_EADDRINUSE);
  assert_null(e);
  /* Connected, then the peer goes: the next send is refused. */
  assert_int_equal(treadle_unix_dgram_connect(u, path), 0);
  assert_int_equal(dg_send(rt, u, "hi", 2, NULL), 0);
  assert_int_equal(dg_recv(rt, d, buf, sizeof buf, &n, NULL, 10000), 0);
  treadle_dgram_free(d);
  assert_false(exists(path));
  treadle_err_t err = dg_send(rt, u, "hi", 2, NULL);
  assert_true(err == TREADLE_ECONNREFUSED || err == TREADLE_ECONNRESET);
  /* A stream listener's path is the wrong type. */
  treadle_listener_t *l = NULL;
  assert_int_equal(treadle_unix_bind(h, path, NULL, &l), 0);
  assert_int_equal(dg_send(rt, u, "x", 1, &to), TREADLE_EPROTOTYPE);
  treadle_dgram_t *u2 = NULL;
  assert_int_equal(treadle_unix_dgram_unbound(h, &u2), 0);
  assert_int_equal(treadle_unix_dgram_connect(u2, path), TREADLE_EPROTOTYPE);
  treadle_listener_free(l);
  /* Bad names, NULLs. */
  assert_int_equal(treadle_unix_dgram_connect(u2, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_dgram_connect(NULL, path), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_dgram_bind(h, "", &e), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_dgram_bind(h, "/nonexistent-treadle/x", &e),
                   TREADLE_ENOENT);
  assert_int_equal(treadle_unix_dgram_bind(NULL, path, &e), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_dgram_bind(h, path, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_dgram_unbound(NULL, &e), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_dgram_unbound(h, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_dgram_pair(h, NULL, &e), TREADLE_EINVAL);
  assert_int_equal(treadle_unix_dgram_pair(h, &e, NULL), TREADLE_EINVAL);
  assert_null(e);
  treadle_dgram_free(u);
  treadle_dgram_free(u2);
  assert_int_equal(rmdir(dir), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* The UDP options on a Unix datagram socket, and the other way round. */
static void wrong_family_is_enotsup(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_dgram_t *u = NULL, *v = NULL;
  assert_int_equal(treadle_unix_dgram_pair(h, &u, &v), 0);
  bool on;
  unsigned ttl;
  assert_int_equal(treadle_udp_connect(u, "127.0.0.1", 9), TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_set_broadcast(u, true), TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_broadcast(u, &on), TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_set_ttl(u, 9), TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_ttl(u, &ttl), TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_set_multicast_ttl(u, 9), TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_multicast_ttl(u, &ttl), TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_set_multicast_loop(u, true), TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_multicast_loop(u, &on), TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_join_multicast(u, "239.1.1.1", 0),
                   TREADLE_ENOTSUP);
  assert_int_equal(treadle_udp_leave_multicast(u, "239.1.1.1", 0),
                   TREADLE_ENOTSUP);
  assert_string_equal(treadle_err_name(TREADLE_ENOTSUP), "ENOTSUP");
  struct sockaddr_storage a;
  treadle_dgram_t *d = dg_bound(rt, "127.0.0.1", &a);
  assert_int_equal(treadle_unix_dgram_connect(d, "@x"), TREADLE_ENOTSUP);
  /* A Unix address to a UDP socket: the kernel refuses the family. */
  struct sockaddr_storage to;
  assert_int_equal(treadle_sockaddr_unix("/nonexistent/x", &to), 0);
  assert_int_equal(dg_send(rt, d, "x", 1, &to), -EAFNOSUPPORT);
  assert_string_equal(treadle_err_name(-EAFNOSUPPORT), "EAFNOSUPPORT");
  treadle_dgram_free(d);
  treadle_dgram_free(u);
  treadle_dgram_free(v);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(paths_names_and_unbound),
    RT_TEST(pairs_truncation_and_batches),
    RT_TEST(sending_to_nobody),
    RT_TEST(wrong_family_is_enotsup),
};

TEST_MAIN(tests)
