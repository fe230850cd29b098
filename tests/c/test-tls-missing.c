/* A build without OpenSSL (TREADLE_TLS=OFF, or no libssl-dev): the TLS
 * API is declared all the same, and every function answers
 * TREADLE_ENOTLS, takes nothing and crashes on nothing. Registered
 * instead of test-tls.c in such builds. */
#include "harness.h"

typedef struct {
  treadle_err_t *errs; /* 5, the test's */
} leaves_t;

static treadle_poll_t leaves_poll(treadle_cx_t *cx, void *st) {
  leaves_t *l = st;
  char buf[4];
  size_t n, done = 0;
  treadle_tls_handshake_poll(NULL, cx, &l->errs[0]);
  treadle_tls_read_poll(NULL, cx, buf, sizeof buf, &n, &l->errs[1]);
  treadle_tls_write_poll(NULL, cx, "x", 1, &n, &l->errs[2]);
  treadle_tls_write_all_poll(NULL, cx, "x", 1, &done, &l->errs[3]);
  treadle_tls_shutdown_poll(NULL, cx, &l->errs[4]);
  return TREADLE_READY;
}

static const treadle_task_vtable_t leaves_vt = {.poll = leaves_poll};

static void every_function_says_enotls(void **state) {
  (void)state;
  treadle_tls_config_t *c = (treadle_tls_config_t *)1;
  assert_int_equal(treadle_tls_config_new(TREADLE_TLS_CLIENT, &c),
                   TREADLE_ENOTLS);
  assert_null(c);
  assert_string_equal(treadle_strerror(TREADLE_ENOTLS),
                      "TLS support is not built in (treadle was built "
                      "without OpenSSL)");
  assert_string_equal(treadle_err_name(TREADLE_ENOTLS), "ENOTLS");
  assert_int_equal(treadle_tls_config_set_verify(NULL, true), TREADLE_ENOTLS);
  assert_int_equal(treadle_tls_config_set_ca(NULL, "x", NULL), TREADLE_ENOTLS);
  assert_int_equal(treadle_tls_config_set_cert(NULL, "x", "y"), TREADLE_ENOTLS);
  assert_int_equal(treadle_tls_config_set_alpn(NULL, NULL, 0), TREADLE_ENOTLS);
  assert_int_equal(treadle_tls_config_set_min_version(NULL, 0x0304),
                   TREADLE_ENOTLS);
  assert_null(treadle_tls_config_ref(NULL));
  treadle_tls_config_unref(NULL);
  assert_non_null(treadle_tls_config_error_message(NULL));

  /* The constructors leave the stream to the caller. */
  treadle_runtime_t *rt = test_runtime();
  treadle_stream_t *a, *b;
  assert_int_equal(treadle_unix_stream_pair(treadle_runtime_handle(rt), &a, &b),
                   0);
  treadle_tls_t *t = (treadle_tls_t *)1;
  assert_int_equal(treadle_tls_client_new(NULL, a, "localhost", &t),
                   TREADLE_ENOTLS);
  assert_null(t);
  assert_int_equal(treadle_tls_server_new(NULL, b, &t), TREADLE_ENOTLS);
  treadle_err_t errs[5];
  leaves_t l = {errs};
  assert_int_equal(RUN(rt, &leaves_vt, l), 0);
  for (int i = 0; i < 5; i++)
    assert_int_equal(errs[i], TREADLE_ENOTLS);
  assert_null(treadle_tls_alpn(NULL));
  assert_int_equal(treadle_tls_version(NULL), TREADLE_ENOTLS);
  assert_null(treadle_tls_server_name(NULL));
  char buf[4] = "abc";
  assert_int_equal(treadle_tls_peer_subject(NULL, buf, sizeof buf),
                   TREADLE_ENOTLS);
  assert_string_equal(buf, "");
  assert_int_equal(treadle_tls_verify_result(NULL), TREADLE_ENOTLS);
  assert_non_null(treadle_tls_error_message(NULL));
  assert_null(treadle_tls_stream(NULL));
  assert_null(treadle_tls_session(NULL));
  treadle_tls_session_free(NULL);
  assert_int_equal(treadle_tls_set_session(NULL, NULL), TREADLE_ENOTLS);
  assert_int_equal(treadle_tls_session_reused(NULL), TREADLE_ENOTLS);
  treadle_tls_close(NULL);
  treadle_tls_free(NULL);
  treadle_stream_free(a);
  treadle_stream_free(b);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(every_function_says_enotls),
};

TEST_MAIN(tests)
