/* TLS over streams (tls.c, ARCHITECTURE.md "TLS"): handshakes over TCP
 * and Unix socket pairs with SNI and ALPN, verification on by default and
 * each way it fails (self-signed, expired, another name, no client
 * certificate), large transfers both ways at once with a reader and a
 * writer task on each end, close_notify and truncation, a peer that
 * closes mid-handshake or does not speak TLS, the two directions pumping
 * for each other (a TLS 1.3 KeyUpdate answered by a reading task, a TLS
 * 1.2 renegotiation that a writing task must read for), and bad input for
 * every function. Every case makes its own certificates (tls_certs.c) in
 * a temp directory and removes them. Tasks record what they saw; the
 * assertions run on the test's thread, after the joins. */
#define _GNU_SOURCE
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "net_util.h"
#include "tls.h"
#include "tls_certs.h"

static tls_certs_t C;

/* ------------------------------------------------------------ configs */

static treadle_tls_config_t *server_config(const char *chain, const char *key) {
  treadle_tls_config_t *c;
  assert_int_equal(treadle_tls_config_new(TREADLE_TLS_SERVER, &c), 0);
  assert_int_equal(treadle_tls_config_set_cert(c, chain, key), 0);
  return c;
}

/* A client trusting `ca` (NULL: the system's store). */
static treadle_tls_config_t *client_config(const char *ca) {
  treadle_tls_config_t *c;
  assert_int_equal(treadle_tls_config_new(TREADLE_TLS_CLIENT, &c), 0);
  if (ca != NULL)
    assert_int_equal(treadle_tls_config_set_ca(c, ca, NULL), 0);
  return c;
}

/* ------------------------------------------------------------- streams */

/* A connected pair of TCP streams on 127.0.0.1. */
static void tcp_streams(treadle_runtime_t *rt, treadle_stream_t **client,
                        treadle_stream_t **server) {
  int port;
  treadle_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  pair_out_t p;
  make_pair(rt, l, "127.0.0.1", port, &p);
  treadle_listener_free(l);
  *client = p.client;
  *server = p.server;
}

static void unix_streams(treadle_runtime_t *rt, treadle_stream_t **client,
                         treadle_stream_t **server) {
  assert_int_equal(
      treadle_unix_stream_pair(treadle_runtime_handle(rt), client, server), 0);
}

typedef struct {
  treadle_tls_t *client, *server;
} tls_pair_t;

static tls_pair_t wrap(treadle_tls_config_t *cc, treadle_tls_config_t *sc,
                       const char *name, treadle_stream_t *c,
                       treadle_stream_t *s) {
  tls_pair_t p;
  assert_int_equal(treadle_tls_client_new(cc, c, name, &p.client), 0);
  assert_int_equal(treadle_tls_server_new(sc, s, &p.server), 0);
  return p;
}

static void pair_free(tls_pair_t *p) {
  treadle_tls_free(p->client);
  treadle_tls_free(p->server);
}

/* --------------------------------------------------------------- jobs */

/* What a job saw, read by the test after the join. */
typedef struct {
  treadle_err_t err;
  size_t bytes;  /* written, read or echoed */
  size_t bad_at; /* the first byte read that was wrong, or SIZE_MAX */
  bool eof;      /* read the end of the stream */
} result_t;

typedef enum { HANDSHAKE, WRITE, READ, ECHO } job_kind_t;

/* One task's work on one TLS stream: a handshake; writing `len` pattern
 * bytes of `id` (write_all) then, if `shutdown`, close_notify; reading
 * (and checking) them, to the end of the stream if `to_eof`; or echoing
 * (partial writes) until the end, then close_notify. */
typedef struct {
  job_kind_t kind;
  treadle_tls_t *t;
  unsigned id;
  size_t len;
  bool shutdown, to_eof;
  result_t *res;
  /* progress */
  uint8_t *msg; /* WRITE: owned */
  size_t done, have, sent;
  bool wrote, ended;
  uint8_t buf[16384];
} job_t;

static treadle_poll_t job_read(job_t *j, treadle_cx_t *cx, treadle_err_t *err) {
  for (;;) {
    size_t n;
    if (treadle_tls_read_poll(j->t, cx, j->buf, sizeof j->buf, &n, err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    if (n == 0) {
      j->res->eof = true;
      return TREADLE_READY;
    }
    for (size_t i = 0; i < n && j->res->bad_at == SIZE_MAX; i++)
      if (j->done + i >= j->len || j->buf[i] != pattern(j->id, j->done + i))
        j->res->bad_at = j->done + i;
    j->done += n;
    if (!j->to_eof && j->done >= j->len)
      return TREADLE_READY;
  }
}

static treadle_poll_t job_echo(job_t *j, treadle_cx_t *cx, treadle_err_t *err) {
  while (!j->ended) {
    size_t n;
    if (j->sent < j->have) {
      if (treadle_tls_write_poll(j->t, cx, j->buf + j->sent, j->have - j->sent,
                                 &n, err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (*err != 0)
        return TREADLE_READY;
      j->sent += n;
      continue;
    }
    if (treadle_tls_read_poll(j->t, cx, j->buf, sizeof j->buf, &n, err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    j->ended = n == 0;
    j->have = n;
    j->sent = 0;
    j->done += n;
  }
  j->res->eof = true;
  return treadle_tls_shutdown_poll(j->t, cx, err);
}

/* True on a thread while it polls a job's TLS leaf (see
 * encryption_runs_in_the_leaves). */
static __thread bool in_leaf;
/* While set, every job leaves an error on its thread's OpenSSL error
 * queue before each poll, as careless code of the same thread might (see
 * stale_errors_are_not_ours). */
static _Atomic bool push_stale;

static treadle_poll_t job_poll(treadle_cx_t *cx, void *st) {
  job_t *j = st;
  treadle_err_t err = 0;
  treadle_poll_t p = TREADLE_READY;
  /* relaxed: set and cleared by the test between runs */
  if (atomic_load_explicit(&push_stale, memory_order_relaxed))
    ERR_raise(ERR_LIB_USER, 42);
  in_leaf = true;
  switch (j->kind) {
  case HANDSHAKE:
    p = treadle_tls_handshake_poll(j->t, cx, &err);
    break;
  case WRITE:
    if (!j->wrote) {
      p = treadle_tls_write_all_poll(j->t, cx, j->msg, j->len, &j->done, &err);
      if (p == TREADLE_PENDING || err != 0)
        break;
      j->wrote = true;
    }
    if (j->shutdown)
      p = treadle_tls_shutdown_poll(j->t, cx, &err);
    break;
  case READ:
    p = job_read(j, cx, &err);
    break;
  case ECHO:
    p = job_echo(j, cx, &err);
    break;
  }
  in_leaf = false;
  if (p == TREADLE_PENDING)
    return TREADLE_PENDING;
  j->res->err = err;
  j->res->bytes = j->done;
  return TREADLE_READY;
}

static void job_drop(void *st) { free(((job_t *)st)->msg); }

static const treadle_task_vtable_t job_vt = {.poll = job_poll,
                                             .drop = job_drop};

static job_t job(job_kind_t kind, treadle_tls_t *t, result_t *res) {
  job_t j = {.kind = kind, .t = t, .res = res};
  res->err = 1; /* "never ran" */
  res->bytes = 0;
  res->bad_at = SIZE_MAX;
  res->eof = false;
  return j;
}

static job_t writer(treadle_tls_t *t, unsigned id, size_t len, bool shutdown,
                    result_t *res) {
  job_t j = job(WRITE, t, res);
  j.id = id;
  j.len = len;
  j.shutdown = shutdown;
  j.msg = malloc(len > 0 ? len : 1);
  assert_non_null(j.msg);
  for (size_t i = 0; i < len; i++)
    j.msg[i] = pattern(id, i);
  return j;
}

static job_t reader(treadle_tls_t *t, unsigned id, size_t len, bool to_eof,
                    result_t *res) {
  job_t j = job(READ, t, res);
  j.id = id;
  j.len = len;
  j.to_eof = to_eof;
  return j;
}

/* Spawns every job (each a task of its own, so that on multi_thread a
 * reader and a writer of one TLS stream run on two workers at once) and
 * joins them all. jobs[] is copied; its results land in their res. */
static void run_jobs(treadle_runtime_t *rt, job_t *jobs, size_t n) {
  treadle_join_t *joins[8];
  treadle_err_t status[8];
  assert_true(n <= 8);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &job_vt,
                                   &jobs[i], sizeof jobs[i], &joins[i]),
                     0);
  join_all(rt, joins, status, NULL, n);
}

/* Both handshakes, each in its task; the results in res[0] (client) and
 * res[1] (server). */
static void handshake_both(treadle_runtime_t *rt, tls_pair_t *p,
                           result_t res[2]) {
  job_t jobs[2] = {job(HANDSHAKE, p->client, &res[0]),
                   job(HANDSHAKE, p->server, &res[1])};
  run_jobs(rt, jobs, 2);
}

static void handshake_ok(treadle_runtime_t *rt, tls_pair_t *p) {
  result_t res[2];
  handshake_both(rt, p, res);
  if (res[0].err != 0 || res[1].err != 0)
    fprintf(stderr, "client: %s (%s); server: %s (%s)\n",
            treadle_err_name(res[0].err), treadle_tls_error_message(p->client),
            treadle_err_name(res[1].err), treadle_tls_error_message(p->server));
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
}

/* Both ends write `len` bytes (and shut down, with `end`) while both read
 * them (to the end of the stream, with `end`): four tasks. Asserts every
 * byte. */
static void duplex_run(treadle_runtime_t *rt, tls_pair_t *p, size_t len,
                       bool end) {
  result_t res[4];
  job_t jobs[4] = {writer(p->client, 1, len, end, &res[0]),
                   reader(p->server, 1, len, end, &res[1]),
                   writer(p->server, 2, len, end, &res[2]),
                   reader(p->client, 2, len, end, &res[3])};
  run_jobs(rt, jobs, 4);
  for (int i = 0; i < 4; i++) {
    if (res[i].err != 0)
      fprintf(
          stderr, "job %d: %s (%s)\n", i, treadle_err_name(res[i].err),
          treadle_tls_error_message(i == 0 || i == 3 ? p->client : p->server));
    assert_int_equal(res[i].err, 0);
    assert_int_equal(res[i].bytes, len);
  }
  for (int i = 1; i < 4; i += 2) {
    assert_int_equal(res[i].bad_at, SIZE_MAX);
    assert_true(res[i].eof == end);
  }
}

static void duplex(treadle_runtime_t *rt, tls_pair_t *p, size_t len) {
  duplex_run(rt, p, len, true);
}

/* The client writes `len` bytes and shuts down while reading the echo to
 * the end; the server echoes in one task. */
static void echo(treadle_runtime_t *rt, tls_pair_t *p, size_t len) {
  result_t res[3];
  job_t jobs[3] = {writer(p->client, 7, len, true, &res[0]),
                   reader(p->client, 7, len, true, &res[1]),
                   job(ECHO, p->server, &res[2])};
  run_jobs(rt, jobs, 3);
  for (int i = 0; i < 3; i++) {
    if (res[i].err != 0)
      fprintf(stderr, "job %d: %s (%s)\n", i, treadle_err_name(res[i].err),
              treadle_tls_error_message(i < 2 ? p->client : p->server));
    assert_int_equal(res[i].err, 0);
    assert_int_equal(res[i].bytes, len);
  }
  assert_int_equal(res[1].bad_at, SIZE_MAX);
  assert_true(res[1].eof);
  assert_true(res[2].eof);
}

/* ------------------------------------------------------------ sessions */

/* One connection of client config cc to server config sc for `name`,
 * capped at TLS version `max`, offering the session in `resume` (NULL:
 * none): both handshakes, an echo (whose reads bring TLS 1.3's tickets)
 * and close_notify both ways. *out (if out) gets the client's session,
 * taken right after the handshake. Returns whether the handshake resumed,
 * which both ends must agree on. */
static int one_connection(treadle_runtime_t *rt, treadle_tls_config_t *cc,
                          treadle_tls_config_t *sc, const char *name, int max,
                          treadle_tls_session_t *resume,
                          treadle_tls_session_t **out) {
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, name, c, s);
  assert_int_equal(SSL_set_max_proto_version(treadle__tls_ssl(p.client), max),
                   1);
  assert_int_equal(treadle_tls_session_reused(p.client), TREADLE_ENOTCONN);
  if (resume != NULL)
    assert_int_equal(treadle_tls_set_session(p.client, resume), 0);
  handshake_ok(rt, &p);
  assert_int_equal(treadle_tls_version(p.client), max);
  if (out != NULL)
    assert_non_null(*out = treadle_tls_session(p.client));
  assert_null(treadle_tls_session(p.server));
  echo(rt, &p, 1000);
  int reused = treadle_tls_session_reused(p.client);
  assert_true(reused == 0 || reused == 1);
  assert_int_equal(treadle_tls_session_reused(p.server), reused);
  if (resume != NULL) /* too late once the handshake ran */
    assert_int_equal(treadle_tls_set_session(p.client, resume), TREADLE_EBUSY);
  pair_free(&p);
  return reused;
}

static void sessions_resume(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *sc2 = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  treadle_tls_config_t *cc2 = client_config(C.ca);
  const int versions[] = {TREADLE_TLS_VERSION_1_2, TREADLE_TLS_VERSION_1_3};
  for (int i = 0; i < 2; i++) {
    int v = versions[i];
    treadle_tls_session_t *s1, *s2, *s3;
    assert_int_equal(one_connection(rt, cc, sc, "localhost", v, NULL, &s1), 0);
    /* s1 was taken before the echo: in TLS 1.3 it filled afterwards. */
    assert_int_equal(one_connection(rt, cc, sc, "localhost", v, s1, &s2), 1);
    /* Not offered from another configuration or for another name (a full
     * handshake), so s2 stays unspent for the next one. */
    assert_int_equal(one_connection(rt, cc2, sc, "localhost", v, s2, NULL), 0);
    assert_int_equal(one_connection(rt, cc, sc, "127.0.0.1", v, s2, NULL), 0);
    assert_int_equal(one_connection(rt, cc, sc, "localhost", v, s2, &s3), 1);
    /* A server of another configuration knows no session of sc's. */
    assert_int_equal(one_connection(rt, cc, sc2, "localhost", v, s3, NULL), 0);
    treadle_tls_session_free(s1);
    treadle_tls_session_free(s2);
    treadle_tls_session_free(s3);
  }
  /* Bad input. */
  treadle_stream_t *c, *s;
  unix_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  treadle_tls_session_t *none = treadle_tls_session(p.client);
  assert_non_null(none); /* empty until a handshake: offering it does nothing */
  assert_null(treadle_tls_session(NULL));
  assert_null(treadle_tls_session(p.server));
  assert_int_equal(treadle_tls_set_session(NULL, none), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_set_session(p.client, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_set_session(p.server, none), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_set_session(p.client, none), 0);
  assert_int_equal(treadle_tls_session_reused(NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_session_reused(p.server), TREADLE_ENOTCONN);
  treadle_tls_session_free(NULL);
  pair_free(&p);
  treadle_tls_session_free(none); /* outlives its connection */
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(cc2);
  treadle_tls_config_unref(sc);
  treadle_tls_config_unref(sc2);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* ------------------------------------------------- handshakes, SNI, ALPN */

static void tcp_handshake_sni_alpn_echo(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  const char *theirs[] = {"h2", "http/1.1"};
  const char *ours[] = {"http/1.1", "h2"};
  assert_int_equal(treadle_tls_config_set_alpn(cc, theirs, 2), 0);
  assert_int_equal(treadle_tls_config_set_alpn(sc, ours, 2), 0);
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  /* The configurations are shared and frozen now. */
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_ptr_equal(treadle_tls_stream(p.client), c);
  assert_string_equal(treadle_tls_server_name(p.client), "localhost");
  assert_null(treadle_tls_server_name(p.server));
  handshake_ok(rt, &p);
  /* SNI reached the server; ALPN went the server's way. */
  assert_string_equal(treadle_tls_server_name(p.server), "localhost");
  assert_string_equal(treadle_tls_alpn(p.client), "http/1.1");
  assert_string_equal(treadle_tls_alpn(p.server), "http/1.1");
  assert_int_equal(treadle_tls_version(p.client), TREADLE_TLS_VERSION_1_3);
  assert_int_equal(treadle_tls_version(p.server), TREADLE_TLS_VERSION_1_3);
  assert_int_equal(treadle_tls_verify_result(p.client), X509_V_OK);
  char subject[128];
  int n = treadle_tls_peer_subject(p.client, subject, sizeof subject);
  assert_string_equal(subject, "CN=localhost,O=treadle tests");
  assert_int_equal(n, strlen(subject));
  /* Truncated as snprintf would. */
  assert_int_equal(treadle_tls_peer_subject(p.client, subject, 5), n);
  assert_string_equal(subject, "CN=l");
  /* No client certificate was asked for. */
  assert_int_equal(treadle_tls_peer_subject(p.server, subject, sizeof subject),
                   0);
  assert_string_equal(subject, "");
  assert_string_equal(treadle_tls_error_message(p.client), "");
  /* A second handshake poll is done at once. */
  handshake_ok(rt, &p);
  echo(rt, &p, 100);
  pair_free(&p);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

static void unix_pair_echo(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  treadle_stream_t *c, *s;
  unix_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  handshake_ok(rt, &p);
  assert_null(treadle_tls_alpn(p.client)); /* none offered */
  echo(rt, &p, test_scale(1 << 20));
  pair_free(&p);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* ------------------------------------------------------ large transfers */

/* More than the socket buffers and many records, both ways at once. */
static void large_transfers_both_ways(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  size_t len = test_scale(8 << 20);
  for (int unix_ = 0; unix_ < 2; unix_++) {
    treadle_stream_t *c, *s;
    if (unix_)
      unix_streams(rt, &c, &s);
    else
      tcp_streams(rt, &c, &s);
    tls_pair_t p = wrap(cc, sc, "localhost", c, s);
    handshake_ok(rt, &p);
    duplex(rt, &p, len);
    pair_free(&p);
  }
  /* And an echo of as much through one server task. */
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  handshake_ok(rt, &p);
  echo(rt, &p, len);
  pair_free(&p);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* Many connections at once share the two configurations. */
static void many_connections_share_configs(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  enum { N = 8 };
  size_t rounds = test_scale(4);
  for (size_t r = 0; r < rounds; r++) {
    tls_pair_t p[N];
    for (int i = 0; i < N; i++) {
      treadle_stream_t *c, *s;
      if (i % 2)
        unix_streams(rt, &c, &s);
      else
        tcp_streams(rt, &c, &s);
      p[i] = wrap(cc, sc, "localhost", c, s);
    }
    /* Every handshake at once: 2N tasks. */
    treadle_join_t *joins[2 * N];
    treadle_err_t status[2 * N];
    result_t res[2 * N];
    for (int i = 0; i < N; i++) {
      job_t j[2] = {job(HANDSHAKE, p[i].client, &res[2 * i]),
                    job(HANDSHAKE, p[i].server, &res[2 * i + 1])};
      for (int k = 0; k < 2; k++)
        assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &job_vt,
                                       &j[k], sizeof j[k], &joins[2 * i + k]),
                         0);
    }
    join_all(rt, joins, status, NULL, 2 * N);
    for (int i = 0; i < 2 * N; i++)
      assert_int_equal(res[i].err, 0);
    for (int i = 0; i < N; i++) {
      echo(rt, &p[i], 1000 + (size_t)i * 7777);
      pair_free(&p[i]);
    }
  }
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* ---------------------------------------------------------- verification */

/* A handshake of a client trusting `ca` (NULL: the system's store; "off":
 * verification off), asking for `name`, with a server showing chain/key.
 * Fills res (client, server). */
static tls_pair_t try_handshake(treadle_runtime_t *rt, const char *ca,
                                const char *name, const char *chain,
                                const char *key, result_t res[2]) {
  treadle_tls_config_t *sc = server_config(chain, key);
  treadle_tls_config_t *cc;
  if (ca != NULL && strcmp(ca, "off") == 0) {
    cc = client_config(NULL);
    assert_int_equal(treadle_tls_config_set_verify(cc, false), 0);
  } else {
    cc = client_config(ca);
  }
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, name, c, s);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  handshake_both(rt, &p, res);
  return p;
}

/* The client refused the server's certificate, with `reason` in its
 * message; the server heard why (an alert), so its handshake failed. */
static void assert_refused(tls_pair_t *p, result_t res[2], long verify,
                           const char *reason) {
  const char *msg = treadle_tls_error_message(p->client);
  if (res[0].err != TREADLE_ETLSVERIFY)
    fprintf(stderr, "client: %s (%s)\n", treadle_err_name(res[0].err), msg);
  assert_int_equal(res[0].err, TREADLE_ETLSVERIFY);
  assert_int_equal(treadle_tls_verify_result(p->client), verify);
  assert_non_null(strstr(msg, reason));
  assert_non_null(strstr(msg, "certificate verify failed"));
  assert_int_equal(res[1].err, TREADLE_ETLSHANDSHAKE);
  assert_non_null(strstr(treadle_tls_error_message(p->server), "alert"));
  assert_int_equal(treadle_tls_version(p->client), TREADLE_ENOTCONN);
  assert_null(treadle_tls_alpn(p->client));
  char buf[8];
  assert_int_equal(treadle_tls_peer_subject(p->client, buf, sizeof buf),
                   TREADLE_ENOTCONN);
}

static void verify_is_on_by_default(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  result_t res[2];
  /* A self-signed certificate, against the system's store. */
  tls_pair_t p = try_handshake(rt, NULL, "localhost", C.self, C.self_key, res);
  assert_refused(&p, res, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
                 "self-signed certificate");
  /* The error stays. */
  job_t jobs[2] = {job(HANDSHAKE, p.client, &res[0]),
                   reader(p.client, 0, 1, false, &res[1])};
  run_jobs(rt, jobs, 2);
  assert_int_equal(res[0].err, TREADLE_ETLSVERIFY);
  assert_int_equal(res[1].err, TREADLE_ETLSVERIFY);
  pair_free(&p);
  /* A certificate of our own CA, which the system does not know. */
  p = try_handshake(rt, NULL, "localhost", C.server, C.server_key, res);
  assert_refused(&p, res, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                 "unable to get local issuer certificate");
  pair_free(&p);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

static void ca_file_makes_it_pass(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  result_t res[2];
  /* The self-signed certificate, trusted as it is. */
  tls_pair_t p =
      try_handshake(rt, C.self, "localhost", C.self, C.self_key, res);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
  assert_int_equal(treadle_tls_verify_result(p.client), X509_V_OK);
  pair_free(&p);
  /* Our CA: the server sends the intermediate with its certificate. */
  p = try_handshake(rt, C.ca, "localhost", C.server, C.server_key, res);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
  echo(rt, &p, 5000);
  pair_free(&p);
  /* The CA as a directory of hashed names (c_rehash's layout). */
  char link[TLS_PATH_LEN + 16];
  X509 *ca = NULL;
  FILE *f = fopen(C.ca, "r");
  assert_non_null(f);
  ca = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  assert_non_null(ca);
  snprintf(link, sizeof link, "%s/%08lx.0", C.dir, X509_subject_name_hash(ca));
  X509_free(ca);
  assert_int_equal(symlink(C.ca, link), 0);
  treadle_tls_config_t *cc = client_config(NULL);
  assert_int_equal(treadle_tls_config_set_ca(cc, NULL, C.dir), 0);
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  p = wrap(cc, sc, "localhost", c, s);
  handshake_ok(rt, &p);
  pair_free(&p);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(unlink(link), 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

static void wrong_hostname_fails(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  result_t res[2];
  tls_pair_t p =
      try_handshake(rt, C.ca, "wrong.example", C.server, C.server_key, res);
  assert_refused(&p, res, X509_V_ERR_HOSTNAME_MISMATCH, "hostname mismatch");
  assert_string_equal(treadle_tls_server_name(p.client), "wrong.example");
  pair_free(&p);
  /* An address is checked against the certificate's addresses. */
  p = try_handshake(rt, C.ca, "127.0.0.1", C.server, C.server_key, res);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
  assert_null(treadle_tls_server_name(p.server)); /* not sent as SNI */
  pair_free(&p);
  p = try_handshake(rt, C.ca, "127.0.0.2", C.server, C.server_key, res);
  assert_refused(&p, res, X509_V_ERR_IP_ADDRESS_MISMATCH,
                 "IP address mismatch");
  pair_free(&p);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

static void expired_certificate_fails(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  result_t res[2];
  tls_pair_t p =
      try_handshake(rt, C.ca, "localhost", C.expired, C.server_key, res);
  assert_refused(&p, res, X509_V_ERR_CERT_HAS_EXPIRED,
                 "certificate has expired");
  pair_free(&p);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

static void verify_off_passes(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  result_t res[2];
  /* Without a name (allowed only with verification off): */
  tls_pair_t p = try_handshake(rt, "off", NULL, C.self, C.self_key, res);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
  /* The result is still there to read. */
  assert_int_equal(treadle_tls_verify_result(p.client),
                   X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT);
  assert_null(treadle_tls_server_name(p.client));
  echo(rt, &p, 3000);
  pair_free(&p);
  /* An expired certificate for another name too. */
  p = try_handshake(rt, "off", "wrong.example", C.expired, C.server_key, res);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
  assert_true(treadle_tls_verify_result(p.client) != X509_V_OK);
  pair_free(&p);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* A server that verifies clients: none shown is refused, ours passes. */
static void client_certificates(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  assert_int_equal(treadle_tls_config_set_verify(sc, true), 0);
  assert_int_equal(treadle_tls_config_set_ca(sc, C.ca, NULL), 0);
  treadle_tls_config_t *anon = client_config(C.ca);
  treadle_tls_config_t *known = client_config(C.ca);
  assert_int_equal(treadle_tls_config_set_cert(known, C.client, C.client_key),
                   0);
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(anon, sc, "localhost", c, s);
  result_t res[2];
  handshake_both(rt, &p, res);
  assert_int_equal(res[1].err, TREADLE_ETLSVERIFY);
  assert_string_equal(treadle_tls_error_message(p.server),
                      "the peer showed no certificate");
  /* TLS 1.3: the client finished first, and hears of it as it reads. */
  if (res[0].err == 0) {
    job_t j = reader(p.client, 0, 1, false, &res[0]);
    run_jobs(rt, &j, 1);
  }
  assert_int_equal(res[0].err, TREADLE_ETLS);
  assert_non_null(strstr(treadle_tls_error_message(p.client), "alert"));
  pair_free(&p);
  tcp_streams(rt, &c, &s);
  p = wrap(known, sc, "localhost", c, s);
  handshake_ok(rt, &p);
  char subject[128];
  assert_true(treadle_tls_peer_subject(p.server, subject, sizeof subject) > 0);
  assert_string_equal(subject, "CN=treadle client,O=treadle tests");
  assert_int_equal(treadle_tls_verify_result(p.server), X509_V_OK);
  echo(rt, &p, 777);
  pair_free(&p);
  treadle_tls_config_unref(anon);
  treadle_tls_config_unref(known);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* --------------------------------------------------- handshake failures */

static void alpn_mismatch_fails_the_handshake(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  const char *h2[] = {"h2"};
  const char *h1[] = {"http/1.1"};
  assert_int_equal(treadle_tls_config_set_alpn(cc, h2, 1), 0);
  assert_int_equal(treadle_tls_config_set_alpn(sc, h1, 1), 0);
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  result_t res[2];
  handshake_both(rt, &p, res);
  assert_int_equal(res[0].err, TREADLE_ETLSHANDSHAKE);
  assert_int_equal(res[1].err, TREADLE_ETLSHANDSHAKE);
  assert_non_null(
      strstr(treadle_tls_error_message(p.client), "no application protocol"));
  assert_non_null(
      strstr(treadle_tls_error_message(p.server), "no application protocol"));
  pair_free(&p);
  /* A client that offers nothing is served without ALPN. */
  treadle_tls_config_t *plain = client_config(C.ca);
  tcp_streams(rt, &c, &s);
  p = wrap(plain, sc, "localhost", c, s);
  handshake_ok(rt, &p);
  assert_null(treadle_tls_alpn(p.server));
  pair_free(&p);
  treadle_tls_config_unref(plain);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* A plain-stream peer for the TLS end: optionally reads what the TLS end
 * sent first (one read), then writes `len` bytes of `text` (if any), then
 * closes. */
typedef struct {
  treadle_stream_t *s;
  bool read_first;
  const char *text;
  size_t len, done;
  uint8_t buf[4096];
} raw_peer_t;

static treadle_poll_t raw_peer_poll(treadle_cx_t *cx, void *st) {
  raw_peer_t *r = st;
  treadle_err_t err = 0;
  size_t n;
  if (r->read_first) {
    if (treadle_stream_read_poll(r->s, cx, r->buf, sizeof r->buf, &n, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    r->read_first = false;
  }
  if (err == 0 && r->text != NULL &&
      treadle_stream_write_all_poll(r->s, cx, r->text, r->len, &r->done,
                                    &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_stream_free(r->s);
  r->s = NULL;
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void raw_peer_drop(void *st) {
  treadle_stream_free(((raw_peer_t *)st)->s);
}

static const treadle_task_vtable_t raw_peer_vt = {.poll = raw_peer_poll,
                                                  .drop = raw_peer_drop};

/* The TLS end's handshake against a raw peer on `raw` (see raw_peer_t). */
static treadle_err_t handshake_against_raw(treadle_runtime_t *rt,
                                           treadle_tls_t *t,
                                           treadle_stream_t *raw,
                                           bool read_first, const char *text,
                                           size_t len) {
  result_t res;
  job_t j = job(HANDSHAKE, t, &res);
  raw_peer_t r = {.s = raw, .read_first = read_first, .text = text, .len = len};
  treadle_join_t *joins[2];
  treadle_err_t status[2];
  assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &job_vt, &j,
                                 sizeof j, &joins[0]),
                   0);
  assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &raw_peer_vt, &r,
                                 sizeof r, &joins[1]),
                   0);
  join_all(rt, joins, status, NULL, 2);
  assert_int_equal(status[1], 0);
  return res.err;
}

static void peer_closes_mid_handshake(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  for (int unix_ = 0; unix_ < 2; unix_++) {
    treadle_stream_t *c, *s;
    /* The server goes away: the client's handshake hears of it. */
    if (unix_)
      unix_streams(rt, &c, &s);
    else
      tcp_streams(rt, &c, &s);
    treadle_tls_t *t;
    assert_int_equal(treadle_tls_client_new(cc, c, "localhost", &t), 0);
    assert_int_equal(handshake_against_raw(rt, t, s, false, NULL, 0),
                     TREADLE_ECONNRESET);
    assert_non_null(strstr(treadle_tls_error_message(t), "handshake"));
    treadle_tls_free(t);
    /* The server reads the ClientHello, then goes away. */
    if (unix_)
      unix_streams(rt, &c, &s);
    else
      tcp_streams(rt, &c, &s);
    assert_int_equal(treadle_tls_client_new(cc, c, "localhost", &t), 0);
    assert_int_equal(handshake_against_raw(rt, t, s, true, NULL, 0),
                     TREADLE_ECONNRESET);
    assert_non_null(strstr(treadle_tls_error_message(t), "handshake"));
    treadle_tls_free(t);
    /* The client goes away: so does the server's. */
    if (unix_)
      unix_streams(rt, &c, &s);
    else
      tcp_streams(rt, &c, &s);
    assert_int_equal(treadle_tls_server_new(sc, s, &t), 0);
    assert_int_equal(handshake_against_raw(rt, t, c, false, NULL, 0),
                     TREADLE_ECONNRESET);
    assert_non_null(strstr(treadle_tls_error_message(t), "handshake"));
    treadle_tls_free(t);
    /* The client goes away in the middle of its ClientHello: a record
     * header that promises 512 bytes, and 6 of them. */
    static const char part[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    if (unix_)
      unix_streams(rt, &c, &s);
    else
      tcp_streams(rt, &c, &s);
    assert_int_equal(treadle_tls_server_new(sc, s, &t), 0);
    assert_int_equal(
        handshake_against_raw(rt, t, c, false, part, sizeof part - 1),
        TREADLE_ECONNRESET);
    treadle_tls_free(t);
  }
  /* A client that speaks HTTP to a TLS server. */
  static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  treadle_tls_t *t;
  assert_int_equal(treadle_tls_server_new(sc, s, &t), 0);
  assert_int_equal(handshake_against_raw(rt, t, c, false, get, sizeof get - 1),
                   TREADLE_ETLSHANDSHAKE);
  assert_true(strlen(treadle_tls_error_message(t)) > 0);
  treadle_tls_free(t);
  /* A server that answers the ClientHello in plain text (over a Unix
   * pair: the text stays readable after that peer closes, where TCP could
   * reset first). */
  static const char bad[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
  unix_streams(rt, &c, &s);
  assert_int_equal(treadle_tls_client_new(cc, c, "localhost", &t), 0);
  assert_int_equal(handshake_against_raw(rt, t, s, true, bad, sizeof bad - 1),
                   TREADLE_ETLSHANDSHAKE);
  assert_true(strlen(treadle_tls_error_message(t)) > 0);
  assert_int_equal(treadle_tls_version(t), TREADLE_ENOTCONN);
  /* The error stays. */
  result_t res;
  job_t j = job(HANDSHAKE, t, &res);
  run_jobs(rt, &j, 1);
  assert_int_equal(res.err, TREADLE_ETLSHANDSHAKE);
  treadle_tls_free(t);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* ------------------------------------------------- close_notify, the end */

/* Half-close: the client sends and shuts down (close_notify); the server
 * reads to the end, answers, shuts down; the client reads the answer and
 * the end. Writes after shutdown are EPIPE. */
static void shutdown_sends_close_notify(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  handshake_ok(rt, &p);
  result_t res[2];
  job_t jobs[2] = {writer(p.client, 3, 5000, true, &res[0]),
                   reader(p.server, 3, 5000, true, &res[1])};
  run_jobs(rt, jobs, 2);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
  assert_int_equal(res[1].bytes, 5000);
  assert_int_equal(res[1].bad_at, SIZE_MAX);
  assert_true(res[1].eof);
  /* The client shut down: its writes are EPIPE, it still reads. */
  job_t more[3] = {writer(p.client, 3, 10, false, &res[0]),
                   writer(p.server, 4, 70000, true, &res[1]),
                   reader(p.client, 4, 70000, true, &res[0])};
  result_t late;
  more[0].res = &late;
  late.err = 1;
  run_jobs(rt, more, 3);
  assert_int_equal(late.err, TREADLE_EPIPE);
  assert_int_equal(res[1].err, 0);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[0].bytes, 70000);
  assert_int_equal(res[0].bad_at, SIZE_MAX);
  assert_true(res[0].eof);
  /* The end stays the end. */
  job_t again = reader(p.server, 3, 0, true, &res[1]);
  run_jobs(rt, &again, 1);
  assert_int_equal(res[1].err, 0);
  assert_true(res[1].eof);
  assert_string_equal(treadle_tls_error_message(p.client), "");
  pair_free(&p);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* The peer's stream ends without close_notify: ECONNRESET, and it stays. */
static void truncation_is_reported(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  treadle_stream_t *c, *s;
  unix_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  handshake_ok(rt, &p);
  result_t res[2];
  job_t jobs[2] = {writer(p.server, 5, 300, false, &res[0]),
                   reader(p.client, 5, 300, false, &res[1])};
  run_jobs(rt, jobs, 2);
  assert_int_equal(res[1].err, 0);
  assert_int_equal(res[1].bad_at, SIZE_MAX);
  assert_int_equal(treadle_stream_shutdown(treadle_tls_stream(p.server)), 0);
  for (int i = 0; i < 2; i++) {
    job_t j = reader(p.client, 5, 1, true, &res[0]);
    run_jobs(rt, &j, 1);
    assert_int_equal(res[0].err, TREADLE_ECONNRESET);
    assert_string_equal(treadle_tls_error_message(p.client),
                        "the peer closed the connection without close_notify");
  }
  pair_free(&p);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* Closing wakes a task waiting in a TLS read with ECLOSED. */
typedef struct {
  treadle_tls_t *t;
  test_pause_t pause;
  int step;
} closer_t;

static treadle_poll_t closer_poll(treadle_cx_t *cx, void *st) {
  closer_t *c = st;
  for (; c->step < 3; c->step++) /* let the reader get to its wait */
    if (!test_pause_done(&c->pause, cx))
      return TREADLE_PENDING;
    else
      c->pause.armed = false;
  treadle_tls_close(c->t);
  treadle_tls_close(c->t); /* idempotent */
  return TREADLE_READY;
}

static void closer_drop(void *st) {
  treadle_sleep_drop(&((closer_t *)st)->pause.sleep);
}

static const treadle_task_vtable_t closer_vt = {.poll = closer_poll,
                                                .drop = closer_drop};

static void close_wakes_a_waiting_reader(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  handshake_ok(rt, &p);
  result_t res;
  job_t j = reader(p.client, 0, 1, false, &res);
  closer_t cl = {.t = p.client};
  treadle_join_t *joins[2];
  treadle_err_t status[2];
  assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &job_vt, &j,
                                 sizeof j, &joins[0]),
                   0);
  assert_int_equal(treadle_spawn(treadle_runtime_handle(rt), &closer_vt, &cl,
                                 sizeof cl, &joins[1]),
                   0);
  join_all(rt, joins, status, NULL, 2);
  assert_int_equal(res.err, TREADLE_ECLOSED);
  pair_free(&p);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* --------------------------------------- the directions pump each other */

/* Counts the KeyUpdate messages an SSL receives (OpenSSL's message
 * callback, on whichever thread runs it). */
static void count_key_updates(int write_p, int version, int content_type,
                              const void *buf, size_t len, SSL *ssl,
                              void *arg) {
  (void)version;
  (void)ssl;
  if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
      ((const uint8_t *)buf)[0] == SSL3_MT_KEY_UPDATE)
    atomic_fetch_add((_Atomic int *)arg, 1);
}

/* A read that must write (step 2): the client asks for a KeyUpdate; the
 * server, which only reads, answers it from its reading task. Then both
 * ask at once while both ends read and write. */
static void key_update_is_answered_by_the_reader(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  handshake_ok(rt, &p);
  SSL *cs = treadle__tls_ssl(p.client), *ss = treadle__tls_ssl(p.server);
  _Atomic int client_got = 0, server_got = 0;
  SSL_set_msg_callback(cs, count_key_updates);
  SSL_set_msg_callback_arg(cs, &client_got);
  SSL_set_msg_callback(ss, count_key_updates);
  SSL_set_msg_callback_arg(ss, &server_got);
  assert_int_equal(SSL_key_update(cs, SSL_KEY_UPDATE_REQUESTED), 1);
  result_t res[2];
  job_t jobs[2] = {writer(p.client, 8, 100000, false, &res[0]),
                   reader(p.server, 8, 100000, false, &res[1])};
  run_jobs(rt, jobs, 2);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
  assert_int_equal(res[1].bad_at, SIZE_MAX);
  assert_int_equal(atomic_load(&server_got), 1);
  /* The server's reader sent the answer itself: nothing waits. */
  assert_int_equal(treadle__tls_unsent(p.server), 0);
  /* The client hears the answer with the server's next bytes. */
  job_t jobs2[2] = {writer(p.server, 9, 10, false, &res[1]),
                    reader(p.client, 9, 10, false, &res[0])};
  run_jobs(rt, jobs2, 2);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(atomic_load(&client_got), 1);
  /* Both ask at once, mid-transfer both ways. */
  assert_int_equal(SSL_key_update(cs, SSL_KEY_UPDATE_REQUESTED), 1);
  assert_int_equal(SSL_key_update(ss, SSL_KEY_UPDATE_REQUESTED), 1);
  duplex(rt, &p, test_scale(2 << 20));
  assert_true(atomic_load(&server_got) >= 2);
  assert_true(atomic_load(&client_got) >= 2);
  pair_free(&p);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* Records a TLS stream encrypted or decrypted, by where it happened:
 * within a leaf polled by a task, or anywhere else. */
typedef struct {
  _Atomic long inside, outside;
} record_count_t;

/* OpenSSL's message callback: once per record header and message, on the
 * thread that writes or reads the record. */
static void count_records(int write_p, int version, int content_type,
                          const void *buf, size_t len, SSL *ssl, void *arg) {
  (void)write_p;
  (void)version;
  (void)content_type;
  (void)buf;
  (void)len;
  (void)ssl;
  record_count_t *c = arg;
  /* relaxed: counters, read after the joins */
  atomic_fetch_add_explicit(in_leaf ? &c->inside : &c->outside, 1,
                            memory_order_relaxed);
}

/* The handshake, the encryption and the decryption run on the thread that
 * polls the leaf (a worker, in the task's poll), never on a thread of the
 * runtime's own (blocking pool, driver) or in treadle_tls_free. */
static void encryption_runs_in_the_leaves(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  for (int unix_ = 0; unix_ < 2; unix_++) {
    treadle_stream_t *c, *s;
    if (unix_)
      unix_streams(rt, &c, &s);
    else
      tcp_streams(rt, &c, &s);
    tls_pair_t p = wrap(cc, sc, "localhost", c, s);
    record_count_t counts = {0, 0};
    SSL *ssls[2] = {treadle__tls_ssl(p.client), treadle__tls_ssl(p.server)};
    for (int i = 0; i < 2; i++) {
      SSL_set_msg_callback(ssls[i], count_records);
      SSL_set_msg_callback_arg(ssls[i], &counts);
    }
    handshake_ok(rt, &p);
    long after_handshake = atomic_load(&counts.inside);
    assert_true(after_handshake > 0);
    duplex(rt, &p, test_scale(1 << 20));
    /* At least one record per 16 KiB each way, and each end's reading. */
    assert_true(atomic_load(&counts.inside) - after_handshake >=
                2 * 2 * (long)(test_scale(1 << 20) / 16384));
    pair_free(&p);
    assert_int_equal(atomic_load(&counts.outside), 0);
  }
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* An error left on a worker's OpenSSL error queue by someone else (here
 * before every poll) is not taken for the TLS stream's own: handshakes,
 * reads that wait for the rest of a record, writes, close_notify and the
 * reads after it all go through (tls.c, clear_errors). */
static void stale_errors_are_not_ours(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  atomic_store(&push_stale, true);
  handshake_ok(rt, &p);
  duplex_run(rt, &p, test_scale(1 << 20), false);
  echo(rt, &p, 100000);
  atomic_store(&push_stale, false);
  assert_string_equal(treadle_tls_error_message(p.client), "");
  assert_string_equal(treadle_tls_error_message(p.server), "");
  pair_free(&p);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  ERR_clear_error();
  tls_certs_remove(&C);
}

/* The server asks for a renegotiation: a HelloRequest goes out with its
 * next write, which the client's reader takes (the client's next read or
 * write then starts the handshake). No close_notify may come first: after
 * one, OpenSSL drops handshake messages. */
static void ask_renegotiation(treadle_runtime_t *rt, tls_pair_t *p, SSL *ss,
                              unsigned id) {
  assert_int_equal(SSL_renegotiate(ss), 1);
  result_t res[2];
  job_t ask[2] = {writer(p->server, id, 10, false, &res[0]),
                  reader(p->client, id, 10, false, &res[1])};
  run_jobs(rt, ask, 2);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
  assert_int_equal(res[1].bad_at, SIZE_MAX);
}

/* The client writes `len` bytes and the server reads them while the
 * renegotiation runs: the client's writer must read (step 4), the
 * server's reader must write (step 2). */
static void write_through_renegotiation(treadle_runtime_t *rt, tls_pair_t *p,
                                        unsigned id, size_t len) {
  result_t res[2];
  job_t jobs[2] = {writer(p->client, id, len, false, &res[0]),
                   reader(p->server, id, len, false, &res[1])};
  run_jobs(rt, jobs, 2);
  assert_int_equal(res[0].err, 0);
  assert_int_equal(res[1].err, 0);
  assert_int_equal(res[1].bytes, len);
  assert_int_equal(res[1].bad_at, SIZE_MAX);
}

/* Steps 2 and 4 in a TLS 1.2 renegotiation, which treadle refuses (the
 * test turns it on inside the SSL objects). The client's writer must read
 * the server's handshake messages: first with no reading task on the
 * client (it reads for itself), then with one parked in a read (it waits
 * for that one, which runs the handshake); the server's reader answers
 * the client's messages (a read that must write). OpenSSL lets only
 * SSL_read take application data in the middle of a renegotiation, so
 * the server sends none while the client's writer runs it. */
static void renegotiation_pumps_both_ways(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  treadle_stream_t *c, *s;
  tcp_streams(rt, &c, &s);
  tls_pair_t p = wrap(cc, sc, "localhost", c, s);
  SSL *cs = treadle__tls_ssl(p.client), *ss = treadle__tls_ssl(p.server);
  assert_int_equal(SSL_set_max_proto_version(cs, TLS1_2_VERSION), 1);
  SSL_clear_options(cs, SSL_OP_NO_RENEGOTIATION);
  SSL_clear_options(ss, SSL_OP_NO_RENEGOTIATION);
  handshake_ok(rt, &p);
  assert_int_equal(treadle_tls_version(p.client), TREADLE_TLS_VERSION_1_2);
  size_t len = test_scale(1 << 20);
  /* The client's writer reads for itself. */
  ask_renegotiation(rt, &p, ss, 6);
  write_through_renegotiation(rt, &p, 7, len);
  assert_int_equal(SSL_renegotiate_pending(ss), 0);
  assert_int_equal(SSL_renegotiate_pending(cs), 0);
  long first = SSL_total_renegotiations(cs);
  assert_true(first >= 1);
  /* A reader of the client waits meanwhile: the writer waits for it. */
  ask_renegotiation(rt, &p, ss, 8);
  result_t late;
  job_t r = reader(p.client, 9, 10, false, &late);
  treadle_join_t *rj;
  treadle_err_t status;
  assert_int_equal(
      treadle_spawn(treadle_runtime_handle(rt), &job_vt, &r, sizeof r, &rj), 0);
  write_through_renegotiation(rt, &p, 10, len);
  assert_int_equal(SSL_renegotiate_pending(ss), 0);
  assert_int_equal(SSL_renegotiate_pending(cs), 0);
  assert_true(SSL_total_renegotiations(cs) > first);
  result_t res;
  job_t w = writer(p.server, 9, 10, false, &res);
  run_jobs(rt, &w, 1);
  assert_int_equal(res.err, 0);
  join_all(rt, &rj, &status, NULL, 1);
  assert_int_equal(late.err, 0);
  assert_int_equal(late.bytes, 10);
  assert_int_equal(late.bad_at, SIZE_MAX);
  duplex(rt, &p, 1000);
  pair_free(&p);
  /* Refused by default: the server cannot even ask. */
  tcp_streams(rt, &c, &s);
  p = wrap(cc, sc, "localhost", c, s);
  assert_int_equal(
      SSL_set_max_proto_version(treadle__tls_ssl(p.client), TLS1_2_VERSION), 1);
  handshake_ok(rt, &p);
  assert_int_equal(SSL_renegotiate(treadle__tls_ssl(p.server)), 0);
  ERR_clear_error();
  echo(rt, &p, 1000);
  pair_free(&p);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

/* ------------------------------------------------------------ bad input */

static void configs_refuse_bad_input(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_tls_config_t *c = (treadle_tls_config_t *)1;
  assert_int_equal(treadle_tls_config_new(TREADLE_TLS_SERVER, NULL),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_new((treadle_tls_role_t)7, &c),
                   TREADLE_EINVAL);
  assert_null(c);
  assert_null(treadle_tls_config_ref(NULL));
  treadle_tls_config_unref(NULL);
  assert_string_equal(treadle_tls_config_error_message(NULL), "");
  /* Every setter: NULL. */
  assert_int_equal(treadle_tls_config_set_verify(NULL, true), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_ca(NULL, C.ca, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_cert(NULL, C.server, C.server_key),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_alpn(NULL, NULL, 0), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_min_version(NULL, 0x0304),
                   TREADLE_EINVAL);

  assert_int_equal(treadle_tls_config_new(TREADLE_TLS_SERVER, &c), 0);
  /* Missing files, a garbage certificate, a key that does not match. */
  assert_int_equal(treadle_tls_config_set_cert(c, NULL, C.server_key),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_cert(c, C.server, NULL),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_cert(c, C.missing, C.server_key),
                   TREADLE_ENOENT);
  assert_non_null(strstr(treadle_tls_config_error_message(c), "missing.pem"));
  assert_int_equal(treadle_tls_config_set_cert(c, C.server, C.missing),
                   TREADLE_ENOENT);
  assert_int_equal(treadle_tls_config_set_cert(c, C.dir, C.server_key),
                   -EISDIR);
  assert_int_equal(treadle_tls_config_set_cert(c, C.garbage, C.server_key),
                   TREADLE_ETLS);
  assert_non_null(strstr(treadle_tls_config_error_message(c), "certificate"));
  assert_int_equal(treadle_tls_config_set_cert(c, C.server, C.garbage),
                   TREADLE_ETLS);
  assert_non_null(strstr(treadle_tls_config_error_message(c), "key"));
  assert_int_equal(treadle_tls_config_set_cert(c, C.server, C.other_key),
                   TREADLE_ETLS);
  assert_string_equal(treadle_tls_config_error_message(c),
                      "the private key does not match the certificate");
  assert_int_equal(treadle_tls_config_set_cert(c, C.server_key, C.server_key),
                   TREADLE_ETLS);
  /* A success clears the message. */
  assert_int_equal(treadle_tls_config_set_cert(c, C.server, C.server_key), 0);
  assert_string_equal(treadle_tls_config_error_message(c), "");
  /* CAs. */
  assert_int_equal(treadle_tls_config_set_ca(c, NULL, NULL), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_ca(c, C.missing, NULL),
                   TREADLE_ENOENT);
  assert_int_equal(treadle_tls_config_set_ca(c, NULL, C.missing),
                   TREADLE_ENOENT);
  assert_int_equal(treadle_tls_config_set_ca(c, NULL, C.ca), -ENOTDIR);
  assert_int_equal(treadle_tls_config_set_ca(c, C.garbage, NULL), TREADLE_ETLS);
  assert_int_equal(treadle_tls_config_set_ca(c, C.ca, C.dir), 0);
  /* ALPN names: 1..255 bytes. */
  char big[300];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  const char *bad1[] = {""};
  const char *bad2[] = {big};
  const char *bad3[] = {"h2", NULL};
  assert_int_equal(treadle_tls_config_set_alpn(c, NULL, 1), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_alpn(c, bad1, 1), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_alpn(c, bad2, 1), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_alpn(c, bad3, 2), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_alpn(c, bad3, 1), 0);
  assert_int_equal(treadle_tls_config_set_alpn(c, NULL, 0), 0);
  /* Versions. */
  assert_int_equal(treadle_tls_config_set_min_version(c, 0x0301),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_min_version(c, 0x0305),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tls_config_set_min_version(c, 0x0304), 0);
  assert_int_equal(treadle_tls_config_set_verify(c, false), 0);
  assert_ptr_equal(treadle_tls_config_ref(c), c);
  treadle_tls_config_unref(c);
  treadle_tls_config_unref(c);
  tls_certs_remove(&C);
}

/* A task of another runtime polling every leaf of a TLS stream. */
typedef struct {
  treadle_tls_t *t;
  treadle_err_t *errs; /* 5, the test's */
} foreign_t;

static treadle_poll_t foreign_poll(treadle_cx_t *cx, void *st) {
  foreign_t *f = st;
  char buf[4];
  size_t n, done = 0;
  treadle_tls_handshake_poll(f->t, cx, &f->errs[0]);
  treadle_tls_read_poll(f->t, cx, buf, sizeof buf, &n, &f->errs[1]);
  treadle_tls_write_poll(f->t, cx, "x", 1, &n, &f->errs[2]);
  treadle_tls_write_all_poll(f->t, cx, "x", 1, &done, &f->errs[3]);
  treadle_tls_shutdown_poll(f->t, cx, &f->errs[4]);
  return TREADLE_READY;
}

static const treadle_task_vtable_t foreign_vt = {.poll = foreign_poll};

/* Every leaf and getter of a TLS stream with NULL, before the handshake,
 * from another runtime, and once closed. */
typedef struct {
  treadle_tls_t *t;
  treadle_err_t *errs; /* 10, the test's */
} misuse_t;

static treadle_poll_t misuse_poll(treadle_cx_t *cx, void *st) {
  misuse_t *m = st;
  char buf[4];
  size_t n, done = 0, big = 2;
  treadle_tls_handshake_poll(NULL, cx, &m->errs[0]);
  treadle_tls_read_poll(NULL, cx, buf, sizeof buf, &n, &m->errs[1]);
  treadle_tls_write_poll(NULL, cx, "x", 1, &n, &m->errs[2]);
  treadle_tls_write_all_poll(NULL, cx, "x", 1, &done, &m->errs[3]);
  treadle_tls_shutdown_poll(NULL, cx, &m->errs[4]);
  treadle_tls_read_poll(m->t, cx, NULL, 1, &n, &m->errs[5]);
  treadle_tls_write_all_poll(m->t, cx, "x", 1, &big, &m->errs[6]);
  /* Before the handshake. */
  treadle_tls_read_poll(m->t, cx, buf, sizeof buf, &n, &m->errs[7]);
  treadle_tls_write_poll(m->t, cx, "x", 1, &n, &m->errs[8]);
  treadle_tls_shutdown_poll(m->t, cx, &m->errs[9]);
  return TREADLE_READY;
}

static const treadle_task_vtable_t misuse_vt = {.poll = misuse_poll};

static void streams_refuse_bad_input(void **state) {
  (void)state;
  tls_certs_make(&C);
  treadle_runtime_t *rt = test_runtime();
  treadle_tls_config_t *sc = server_config(C.server, C.server_key);
  treadle_tls_config_t *cc = client_config(C.ca);
  treadle_stream_t *c, *s;
  unix_streams(rt, &c, &s);
  treadle_tls_t *t = (treadle_tls_t *)1;
  assert_int_equal(treadle_tls_client_new(NULL, c, "localhost", &t),
                   TREADLE_EINVAL);
  assert_null(t);
  assert_int_equal(treadle_tls_client_new(cc, NULL, "localhost", &t),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tls_client_new(cc, c, "localhost", NULL),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_tls_server_new(cc, s, &t), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_client_new(sc, c, "localhost", &t),
                   TREADLE_EINVAL);
  /* No name while verifying; an empty or overlong one. */
  assert_int_equal(treadle_tls_client_new(cc, c, NULL, &t), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_client_new(cc, c, "", &t), TREADLE_EINVAL);
  char longname[300];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  assert_int_equal(treadle_tls_client_new(cc, c, longname, &t), TREADLE_EINVAL);
  /* None of that took the streams; a closed one is refused. */
  treadle_stream_close(s);
  assert_int_equal(treadle_tls_server_new(sc, s, &t), TREADLE_ECLOSED);
  treadle_stream_free(s);
  /* Getters and misuse on NULL. */
  assert_null(treadle_tls_alpn(NULL));
  assert_int_equal(treadle_tls_version(NULL), TREADLE_EINVAL);
  assert_null(treadle_tls_server_name(NULL));
  assert_int_equal(treadle_tls_peer_subject(NULL, NULL, 0), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_verify_result(NULL), TREADLE_EINVAL);
  assert_string_equal(treadle_tls_error_message(NULL), "");
  assert_null(treadle_tls_stream(NULL));
  treadle_tls_close(NULL);
  treadle_tls_free(NULL);

  assert_int_equal(treadle_tls_client_new(cc, c, "localhost", &t), 0);
  /* The configuration is frozen now. */
  assert_int_equal(treadle_tls_config_set_verify(cc, false), TREADLE_EBUSY);
  assert_int_equal(treadle_tls_config_set_ca(cc, C.ca, NULL), TREADLE_EBUSY);
  assert_int_equal(treadle_tls_config_set_cert(cc, C.client, C.client_key),
                   TREADLE_EBUSY);
  assert_int_equal(treadle_tls_config_set_alpn(cc, NULL, 0), TREADLE_EBUSY);
  assert_int_equal(treadle_tls_config_set_min_version(cc, 0x0303),
                   TREADLE_EBUSY);
  /* Getters before the handshake. */
  char buf[8];
  assert_null(treadle_tls_alpn(t));
  assert_int_equal(treadle_tls_version(t), TREADLE_ENOTCONN);
  assert_int_equal(treadle_tls_peer_subject(t, buf, sizeof buf),
                   TREADLE_ENOTCONN);
  assert_int_equal(treadle_tls_peer_subject(t, NULL, 3), TREADLE_EINVAL);
  assert_int_equal(treadle_tls_verify_result(t), TREADLE_ENOTCONN);
  assert_string_equal(treadle_tls_error_message(t), "");
  /* The leaves. */
  treadle_err_t errs[10];
  misuse_t m = {.t = t, .errs = errs};
  assert_int_equal(RUN(rt, &misuse_vt, m), 0);
  for (int i = 0; i < 7; i++)
    assert_int_equal(errs[i], TREADLE_EINVAL);
  for (int i = 7; i < 10; i++)
    assert_int_equal(errs[i], TREADLE_ENOTCONN);
  /* Another runtime's task. */
  treadle_runtime_t *other = test_runtime();
  foreign_t f = {.t = t, .errs = errs};
  assert_int_equal(RUN(other, &foreign_vt, f), 0);
  for (int i = 0; i < 5; i++)
    assert_int_equal(errs[i], TREADLE_EFOREIGN);
  assert_int_equal(treadle_runtime_free(other), 0);
  /* Closed. */
  treadle_tls_close(t);
  misuse_t closed = {.t = t, .errs = errs};
  assert_int_equal(RUN(rt, &misuse_vt, closed), 0);
  for (int i = 7; i < 10; i++)
    assert_int_equal(errs[i], TREADLE_ECLOSED);
  result_t res;
  job_t j = job(HANDSHAKE, t, &res);
  run_jobs(rt, &j, 1);
  assert_int_equal(res.err, TREADLE_ECLOSED);
  treadle_tls_free(t);
  treadle_tls_config_unref(cc);
  treadle_tls_config_unref(sc);
  assert_int_equal(treadle_runtime_free(rt), 0);
  tls_certs_remove(&C);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(tcp_handshake_sni_alpn_echo),
    RT_TEST(unix_pair_echo),
    RT_TEST(large_transfers_both_ways),
    RT_TEST(many_connections_share_configs),
    RT_TEST(verify_is_on_by_default),
    RT_TEST(ca_file_makes_it_pass),
    RT_TEST(wrong_hostname_fails),
    RT_TEST(expired_certificate_fails),
    RT_TEST(verify_off_passes),
    RT_TEST(client_certificates),
    RT_TEST(alpn_mismatch_fails_the_handshake),
    RT_TEST(peer_closes_mid_handshake),
    RT_TEST(shutdown_sends_close_notify),
    RT_TEST(truncation_is_reported),
    RT_TEST(close_wakes_a_waiting_reader),
    RT_TEST(key_update_is_answered_by_the_reader),
    RT_TEST(encryption_runs_in_the_leaves),
    RT_TEST(stale_errors_are_not_ours),
    RT_TEST(renegotiation_pumps_both_ways),
    TEST(configs_refuse_bad_input),
    RT_TEST(streams_refuse_bad_input),
    RT_TEST(sessions_resume),
};

TEST_MAIN(tests)
