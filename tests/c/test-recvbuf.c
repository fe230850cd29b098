/* The cosockets' receive buffer and patterns (bindings/common/recvbuf.c,
 * until.c), plain C without a runtime: the buffer against a reference
 * string, receiveuntil's splitter against a naive split of random streams
 * fed in random pieces, the iterator's steps (tb_until_step; the
 * fuzz target fuzz_until drives it against a reference too), and the line
 * pattern. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "recvbuf.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Appends n bytes to the buffer through room and commit. */
static void feed(tb_rbuf_t *b, const char *p, size_t n) {
  size_t room;
  char *dst = tb_rbuf_room(b, n, &room);
  assert_non_null(dst);
  assert_true(room >= n);
  memcpy(dst, p, n);
  tb_rbuf_commit(b, n);
}

static void buffer_matches_a_reference(void **state) {
  (void)state;
  tb_rbuf_t b = {0};
  char *ref = malloc(1 << 20);
  size_t ref_start = 0, ref_end = 0;
  assert_int_equal(tb_rbuf_len(&b), 0);
  assert_non_null(tb_rbuf_data(&b)); /* never NULL, even empty */
  for (int step = 0; step < 20000; step++) {
    if (rng() % 2 == 0 && ref_end < (1 << 20) - 5000) {
      size_t n = rng() % 3000;
      char chunk[3000];
      for (size_t i = 0; i < n; i++)
        chunk[i] = (char)rng();
      feed(&b, chunk, n);
      memcpy(ref + ref_end, chunk, n);
      ref_end += n;
    } else {
      size_t have = ref_end - ref_start;
      size_t n = have > 0 ? rng() % (have + 1) : 0;
      tb_rbuf_consume(&b, n);
      ref_start += n;
    }
    assert_int_equal(tb_rbuf_len(&b), ref_end - ref_start);
    assert_memory_equal(tb_rbuf_data(&b), ref + ref_start, ref_end - ref_start);
    if (ref_end == ref_start)
      assert_true(b.cap <= TB_RBUF_KEEP); /* a big buffer goes once empty */
  }
  tb_rbuf_free(&b);
  free(ref);
}

/* The naive reference: the first match of pat in s[from, len), or len. */
static size_t naive_find(const char *s, size_t len, const char *pat, size_t plen,
                         size_t from) {
  for (size_t i = from; i + plen <= len; i++)
    if (memcmp(s + i, pat, plen) == 0)
      return i;
  return len;
}

/* Splits random streams on random delimiters, fed in random pieces, as the
 * receiveuntil iterator does (resuming each scan at the last `safe`), and
 * compares the parts with a naive split of the whole stream. The `safe`
 * answer is checked too: no byte before it begins a match, and the bytes
 * after it are a beginning of the delimiter. */
static void until_splits_as_a_naive_search(void **state) {
  (void)state;
  for (int round = 0; round < 3000; round++) {
    char pat[6], s[400];
    size_t plen = 1 + rng() % 5, len = rng() % sizeof s;
    int letters = 1 + (int)(rng() % 3); /* small alphabets: many overlaps */
    for (size_t i = 0; i < plen; i++)
      pat[i] = (char)('a' + rng() % (uint64_t)letters);
    for (size_t i = 0; i < len; i++)
      s[i] = (char)('a' + rng() % (uint64_t)letters);
    tb_rbuf_t b = {0};
    size_t fed = 0, scan = 0, pos = 0; /* pos: stream offset of the buffer's start */
    size_t want_at = naive_find(s, len, pat, plen, 0);
    for (;;) {
      size_t blen = tb_rbuf_len(&b), safe;
      const char *p = tb_rbuf_data(&b);
      size_t at = tb_until_find(p, blen, pat, plen, scan, &safe);
      if (at < blen) { /* a part: it must be the naive one */
        assert_int_equal(pos + at, want_at);
        tb_rbuf_consume(&b, at + plen);
        pos += at + plen;
        scan = 0;
        want_at = naive_find(s, len, pat, plen, pos);
        continue;
      }
      for (size_t i = 0; i < safe; i++) /* nothing before safe begins one */
        assert_true(blen - i >= plen ? memcmp(p + i, pat, plen) != 0
                                     : memcmp(p + i, pat, blen - i) != 0);
      assert_memory_equal(p + safe, pat, blen - safe);
      assert_true(want_at >= pos + safe);
      scan = safe;
      if (fed == len)
        break;
      size_t n = 1 + rng() % 7;
      if (n > len - fed)
        n = len - fed;
      feed(&b, s + fed, n);
      fed += n;
    }
    assert_int_equal(want_at, len); /* every naive match was found */
    tb_rbuf_free(&b);
  }
}

static void line_pattern(void **state) {
  (void)state;
  size_t used;
  assert_false(tb_recv_line("", 0, &used));
  assert_false(tb_recv_line("abc", 3, &used));
  assert_true(tb_recv_line("ab\r\ncd\n", 7, &used));
  assert_int_equal(used, 4);
  char out[16];
  assert_int_equal(tb_strip_cr(out, "a\rb\r\r", 5), 2);
  assert_memory_equal(out, "ab", 2);
  char in_place[] = "\rx\ry";
  assert_int_equal(tb_strip_cr(in_place, in_place, 4), 2);
  assert_memory_equal(in_place, "xy", 2);
}

/* One step over s (the buffered bytes, starting at stream offset consumed). */
static tb_until_step_t step(const char *s, const char *pat, bool inclusive, size_t size,
                            uint64_t consumed, uint64_t *scan) {
  return tb_until_step(s, strlen(s), pat, strlen(pat), inclusive, size, consumed, scan);
}

static void until_steps(void **state) {
  (void)state;
  uint64_t scan = 0;
  /* no size: the whole part once the delimiter is here, which is dropped */
  tb_until_step_t s = step("ab-", "--", false, 0, 0, &scan);
  assert_true(s.more);
  assert_int_equal(scan, 2); /* "ab" cannot begin "--"; "-" may */
  s = step("ab--c", "--", false, 0, 0, &scan);
  assert_false(s.more || s.nil || s.ended);
  assert_int_equal(s.give, 2);
  assert_int_equal(s.skip, 2);
  /* inclusive: the delimiter goes with the part */
  scan = 0;
  s = step("ab--c", "--", true, 0, 0, &scan);
  assert_int_equal(s.give, 4);
  assert_int_equal(s.skip, 0);
  /* a size: pieces of the bytes that cannot begin the delimiter */
  scan = 0;
  s = step("abcde-", "--", false, 3, 0, &scan);
  assert_false(s.more);
  assert_int_equal(s.give, 3);
  s = step("de-", "--", false, 3, 3, &scan); /* 3 bytes were taken */
  assert_int_equal(s.give, 2);
  s = step("-", "--", false, 3, 5, &scan);
  assert_true(s.more); /* "-" may begin "--": wait for more */
  assert_int_equal(scan, 5);
  s = step("--x", "--", false, 3, 5, &scan);
  assert_true(s.nil); /* the part ends: nil, and the delimiter goes */
  assert_int_equal(s.give, 0);
  assert_int_equal(s.skip, 2);
  /* inclusive with a size: the delimiter is the last piece, then nil */
  scan = 0;
  s = step("--x", "--", true, 1, 0, &scan);
  assert_true(s.ended);
  assert_int_equal(s.give, 2);
  /* the scan is a stream offset: other receives taking bytes meanwhile
   * (consumed moved past it) start the next search at the buffer's start */
  scan = 2;
  s = step("b--", "--", false, 0, 10, &scan);
  assert_int_equal(s.give, 1);
  assert_int_equal(scan, 11);
}

static const struct CMUnitTest tests[] = {
    TEST(buffer_matches_a_reference),
    TEST(until_splits_as_a_naive_search),
    TEST(until_steps),
    TEST(line_pattern),
};

TEST_MAIN(tests)
