/* treadle_strerror / treadle_err_name, generated from TREADLE_ERRNO_MAP. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *treadle_strerror(treadle_err_t err) {
  switch (err) {
  case 0:
    return "success";
#define XX(name, code, msg) \
  case code:                \
    return msg;
    TREADLE_ERRNO_MAP(XX)
#undef XX
  default:
    break;
  }
  /* A system error outside the map: strerror's table is static text for
   * every errno glibc knows; anything else is unknown. */
  if (err < 0 && err > -4096) {
    const char *s = strerrordesc_np(-err);
    if (s != NULL)
      return s;
  }
  return "unknown error";
}

const char *treadle_err_name(treadle_err_t err) {
  switch (err) {
#define XX(name, code, msg) \
  case code:                \
    return #name;
    TREADLE_ERRNO_MAP(XX)
#undef XX
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    const char *s = strerrorname_np(-err);
    if (s != NULL)
      return s;
  }
  return "UNKNOWN";
}

void treadle__abort_invariant(const char *what, const char *file, int line) {
  fprintf(stderr, "treadle: internal invariant broken: %s (%s:%d)\n", what,
          file, line);
  abort();
}
