/* receiveuntil's splitter (recvbuf.h): a search that can be resumed as
 * more bytes arrive, so that a long body is scanned once, and that says
 * which bytes may be handed out before the delimiter is seen (the size
 * argument of OpenResty's iterator); and one call of the iterator on top
 * of it (tb_until_step), which ltreadle_cosock.c runs and
 * tests/fuzz/fuzz_until.c checks against a naive splitter. */
#define _GNU_SOURCE
#include <string.h>

#include "recvbuf.h"

/* Whether p[at, len), a tail shorter than the pattern, is a prefix of it. */
static bool tail_begins(const char *p, size_t len, size_t at, const char *pat) {
  return memcmp(p + at, pat, len - at) == 0;
}

size_t tb_until_find(const char *p, size_t len, const char *pat, size_t plen,
                     size_t from, size_t *safe) {
  if (from > len)
    from = len;
  const char *m = len > from ? memmem(p + from, len - from, pat, plen) : NULL;
  if (m != NULL) {
    *safe = (size_t)(m - p);
    return (size_t)(m - p);
  }
  /* No match: only a tail shorter than the pattern may still begin one. */
  size_t at = len >= plen ? len - plen + 1 : 0;
  if (at < from)
    at = from;
  while (at < len && !tail_begins(p, len, at, pat))
    at++;
  *safe = at;
  return len;
}

tb_until_step_t tb_until_step(const char *p, size_t len, const char *pat,
                              size_t plen, bool inclusive, size_t size,
                              uint64_t consumed, uint64_t *scan) {
  tb_until_step_t s = {0};
  /* The scan resumes where the last one stopped, in stream offsets, so
   * that bytes other receives took meanwhile do not matter. */
  size_t from = *scan > consumed ? (size_t)(*scan - consumed) : 0;
  size_t safe;
  size_t at = tb_until_find(p, len, pat, plen, from, &safe);
  *scan = consumed + safe;
  if (at < len) { /* the delimiter is here */
    if (size == 0) {
      s.give = inclusive ? at + plen : at;
      s.skip = inclusive ? 0 : plen;
    } else if (at > 0) {
      s.give = at < size ? at : size;
    } else if (inclusive) { /* the delimiter itself, then the end */
      s.give = plen;
      s.ended = true;
    } else { /* this part ends: the next call reads the next one */
      s.skip = plen;
      s.nil = true;
    }
  } else if (size > 0 && safe > 0) {
    s.give = safe < size ? safe : size;
  } else {
    s.more = true;
  }
  return s;
}
