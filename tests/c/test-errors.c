/* Error codes: the map, the messages, system errors outside the map. */
#include "harness.h"

static void system_codes_are_negative_errno(void **state) {
  (void)state;
  assert_int_equal(TREADLE_EINVAL, -EINVAL);
  assert_int_equal(TREADLE_ENOMEM, -ENOMEM);
  assert_int_equal(TREADLE_ETIMEDOUT, -ETIMEDOUT);
  assert_int_equal(TREADLE_ECANCELED, -ECANCELED);
}

static void own_codes_are_below_errno_range(void **state) {
  (void)state;
  const treadle_err_t own[] = {TREADLE_ENOTIME,    TREADLE_ENOIO,
                               TREADLE_ESHUTDOWN,  TREADLE_EINRUNTIME,
                               TREADLE_EJOINED,    TREADLE_ECLOSED,
                               TREADLE_ENOTLS,     TREADLE_ETLSHANDSHAKE,
                               TREADLE_ETLSVERIFY, TREADLE_ETLS};
  for (size_t i = 0; i < TEST_ARRAY_LEN(own); i++)
    assert_true(own[i] <= -4000);
}

static void messages_come_from_the_map(void **state) {
  (void)state;
  assert_string_equal(treadle_strerror(TREADLE_ENOTIME),
                      "timers are disabled: build the runtime with "
                      "enable_time");
  assert_string_equal(treadle_strerror(TREADLE_EINRUNTIME),
                      "cannot start a runtime from within a runtime");
  assert_string_equal(treadle_strerror(TREADLE_EINVAL), "invalid argument");
  assert_string_equal(treadle_strerror(0), "success");
  assert_string_equal(treadle_err_name(TREADLE_ENOTIME), "ENOTIME");
  assert_string_equal(treadle_err_name(TREADLE_ECONNREFUSED), "ECONNREFUSED");
  /* TLS's codes, in every build (with or without OpenSSL). */
  assert_string_equal(treadle_strerror(TREADLE_ENOTLS),
                      "TLS support is not built in (treadle was built "
                      "without OpenSSL)");
  assert_string_equal(treadle_strerror(TREADLE_ETLSHANDSHAKE),
                      "TLS handshake failed");
  assert_string_equal(treadle_strerror(TREADLE_ETLSVERIFY),
                      "TLS certificate verification failed");
  assert_string_equal(treadle_strerror(TREADLE_ETLS), "TLS protocol error");
  assert_string_equal(treadle_err_name(TREADLE_ETLSVERIFY), "ETLSVERIFY");
}

static void unmapped_errors_are_named(void **state) {
  (void)state;
  /* ENOTDIR is not in the map: glibc's text and name are used. */
  assert_string_equal(treadle_err_name(-ENOTDIR), "ENOTDIR");
  assert_string_equal(treadle_strerror(-ENOTDIR), "Not a directory");
  assert_string_equal(treadle_strerror(-99999), "unknown error");
  assert_string_equal(treadle_strerror(12345), "unknown error");
  assert_string_equal(treadle_err_name(-99999), "UNKNOWN");
}

static const struct CMUnitTest tests[] = {
    TEST(system_codes_are_negative_errno),
    TEST(own_codes_are_below_errno_range),
    TEST(messages_come_from_the_map),
    TEST(unmapped_errors_are_named),
};

TEST_MAIN(tests)
