/* receiveuntil's splitter (recvbuf.h): a search that can be resumed as
 * more bytes arrive, so that a long body is scanned once, and that says
 * which bytes may be handed out before the delimiter is seen (the size
 * argument of OpenResty's iterator). */
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
