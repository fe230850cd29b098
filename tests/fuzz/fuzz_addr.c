/* libFuzzer target: address parsing and formatting (core/src/sockaddr.c,
 * net.h's treadle__addr_tidy; docs/TESTING.md "Fuzzing").
 *
 * The input's first byte picks what to feed, the next two (or four) a port
 * or buffer size, and the rest is the text, cut at its first NUL:
 * - a host and port to treadle_sockaddr_parse. Accepted means an IPv4 or
 *   IPv6 address whose formatting ("h:p", "[h]:p") parses back to the same
 *   bytes and port; refused means EINVAL with the address zeroed. A port
 *   outside 0-65535 is always refused. The text is also checked against a
 *   reference: inet_pton on it (brackets taken off an IPv6 literal).
 * - a path or "@abstract" name to treadle_sockaddr_unix. Accepted means
 *   treadle_sockaddr_unix_path gives the text back, and treadle__addr_len
 *   and treadle__addr_tidy agree with it; refused means EINVAL for "" and
 *   "@", ENAMETOOLONG past TREADLE_UNIX_PATH_MAX bytes.
 * - raw bytes as a kernel would write them (any family, any length) to
 *   treadle__addr_tidy, then every reader: no read past the struct (ASan),
 *   and formatting into a buffer of any size stays inside it and ends with
 *   a NUL. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/un.h>

#include "net.h"

static void check(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_addr: %s\n", what);
    abort();
  }
}

static bool all_zero(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != 0)
      return false;
  return true;
}

/* What treadle__addr_parse should accept (its doc in net.h). */
static int reference_family(const char *host) {
  unsigned char buf[sizeof(struct in6_addr)];
  if (host[0] == '\0' || strcmp(host, "localhost") == 0)
    return AF_INET;
  if (inet_pton(AF_INET, host, buf) == 1)
    return AF_INET;
  char inner[INET6_ADDRSTRLEN + 2];
  size_t n = strlen(host);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof inner) {
    memcpy(inner, host + 1, n - 2);
    inner[n - 2] = '\0';
    return inet_pton(AF_INET6, inner, buf) == 1 ? AF_INET6 : 0;
  }
  return inet_pton(AF_INET6, host, buf) == 1 ? AF_INET6 : 0;
}

static void fuzz_host(const char *host, int port) {
  struct sockaddr_storage a;
  treadle_err_t err = treadle_sockaddr_parse(host, port, &a);
  int family = port < 0 || port > 65535 ? 0 : reference_family(host);
  if (err != 0) {
    check(err == TREADLE_EINVAL, "parse: an error other than EINVAL");
    check(all_zero(&a, sizeof a), "parse: refused, but the address is set");
    check(family == 0, "parse: refused what inet_pton takes");
    return;
  }
  check(a.ss_family == family, "parse: accepted what inet_pton refuses");
  char text[TREADLE_HOST_LEN + 16];
  int p = treadle_sockaddr_format(&a, text, sizeof text);
  check(p == port, "format: the port changed");
  char h[TREADLE_HOST_LEN];
  check(treadle_sockaddr_host(&a, h) == port, "host: the port changed");
  struct sockaddr_storage b;
  check(treadle_sockaddr_parse(h, port, &b) == 0, "host: does not parse back");
  check(memcmp(&a, &b, sizeof a) == 0, "host: parses back to another address");
  /* The formatted text is host and port: its host part is h. */
  char *colon = strrchr(text, ':');
  check(colon != NULL && atoi(colon + 1) == port, "format: no port");
  socklen_t len;
  check(treadle__addr_parse(host, port, &b, &len) &&
            len == treadle__addr_len(&a),
        "addr_len disagrees with parse");
}

static void fuzz_unix(const char *path) {
  struct sockaddr_storage a;
  treadle_err_t err = treadle_sockaddr_unix(path, &a);
  size_t n = strlen(path);
  bool abstract = path[0] == '@';
  size_t name_len = abstract ? n - 1 : n;
  if (n == 0 || strcmp(path, "@") == 0) {
    check(err == TREADLE_EINVAL, "unix: accepted an empty name");
    return;
  }
  if (name_len > TREADLE_UNIX_PATH_MAX) {
    check(err == TREADLE_ENAMETOOLONG, "unix: accepted a name too long");
    check(all_zero(&a, sizeof a), "unix: refused, but the address is set");
    return;
  }
  check(err == 0, "unix: refused a good name");
  char back[TREADLE_UNIX_PATH_MAX + 2];
  int r = treadle_sockaddr_unix_path(&a, back, sizeof back);
  check(r == (int)n && strcmp(back, path) == 0, "unix_path: not the name given");
  socklen_t len = treadle__addr_len(&a);
  size_t off = offsetof(struct sockaddr_un, sun_path);
  check(len == (abstract ? off + 1 + name_len : off + n + 1),
        "addr_len: wrong for a Unix name");
  /* What the kernel would hand back for it, tidied, is the same address. */
  struct sockaddr_storage b;
  memset(&b, 0xa5, sizeof b);
  memcpy(&b, &a, len);
  treadle__addr_tidy(&b, len, AF_UNIX);
  check(memcmp(&a, &b, sizeof a) == 0, "tidy: changed a Unix address");
}

static void fuzz_raw(const uint8_t *p, size_t n, size_t buf_len) {
  struct sockaddr_storage a;
  memset(&a, 0, sizeof a);
  socklen_t len = (socklen_t)(n < sizeof a ? n : sizeof a);
  memcpy(&a, p, len);
  /* Families the readers know, whatever the bytes said. */
  static const sa_family_t families[] = {AF_UNIX, AF_INET, AF_INET6, AF_UNSPEC};
  if (len >= sizeof(sa_family_t))
    a.ss_family = families[a.ss_family % 4];
  treadle__addr_tidy(&a, len, AF_UNIX);
  socklen_t alen = treadle__addr_len(&a);
  check(alen <= sizeof(struct sockaddr_un) || a.ss_family != AF_UNIX,
        "addr_len: longer than a sockaddr_un");
  char *buf = malloc(buf_len); /* exact size: ASan sees any overrun */
  if (buf == NULL)
    return;
  if (buf_len > 0) {
    treadle_sockaddr_unix_path(&a, buf, buf_len);
    check(memchr(buf, '\0', buf_len) != NULL, "unix_path: no NUL");
    treadle_sockaddr_format(&a, buf, buf_len);
    check(memchr(buf, '\0', buf_len) != NULL, "format: no NUL");
  }
  free(buf);
  char h[TREADLE_HOST_LEN];
  treadle_sockaddr_host(&a, h);
  check(memchr(h, '\0', sizeof h) != NULL, "host: no NUL");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  uint8_t what = data[0];
  int arg = (int16_t)(data[1] << 8 | data[2]); /* negative ports too */
  if (what & 0x80)
    arg = (uint16_t)arg; /* every valid port */
  data += 3;
  size -= 3;
  switch (what % 3) {
  case 0:
  case 1: {
    char *text = malloc(size + 1);
    if (text == NULL)
      return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (what % 3 == 0)
      fuzz_host(text, arg);
    else
      fuzz_unix(text);
    free(text);
    return 0;
  }
  default:
    fuzz_raw(data, size, (size_t)(uint16_t)arg % 300);
    return 0;
  }
}
