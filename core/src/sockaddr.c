/* Socket addresses (ARCHITECTURE.md "Sockets"): numeric IPv4 and IPv6
 * hosts, Unix paths and abstract names, and the socket calls every
 * transport's front end makes.
 *
 * A Unix address in a struct sockaddr_storage is in treadle's form when
 * the bytes after its path or name are zero: sun_path holds "/path" and
 * NULs, or '\0' then "name" and NULs (an abstract name), or nothing (an
 * unnamed socket). Its length then follows from its bytes, as an IPv4 or
 * IPv6 address's follows from its family, so one struct carries any
 * address from recv_from to send_to. treadle__addr_tidy makes what the
 * kernel wrote into that form. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/un.h>
#include <unistd.h>

#include "net.h"

_Static_assert(TREADLE_HOST_LEN >= INET6_ADDRSTRLEN, "TREADLE_HOST_LEN");
_Static_assert(TREADLE_UNIX_PATH_MAX == sizeof(((struct sockaddr_un *)0)->sun_path) - 1,
               "TREADLE_UNIX_PATH_MAX");
_Static_assert(sizeof(struct sockaddr_un) <= sizeof(struct sockaddr_storage),
               "sockaddr_un fits a sockaddr_storage");

#define SUN_PATH_OFF offsetof(struct sockaddr_un, sun_path)

/* ------------------------------------------------------------ numeric */

bool treadle__addr_parse(const char *host, int port,
                         struct sockaddr_storage *addr, socklen_t *len) {
  memset(addr, 0, sizeof *addr);
  struct sockaddr_in *v4 = (struct sockaddr_in *)addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)addr;
  if (host == NULL || host[0] == '\0' || strcmp(host, "localhost") == 0) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    v4->sin_addr.s_addr =
        htonl(host != NULL && host[0] != '\0' ? INADDR_LOOPBACK : INADDR_ANY);
    *len = sizeof *v4;
    return true;
  }
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    *len = sizeof *v4;
    return true;
  }
  /* Brackets are allowed around an IPv6 literal ("[::1]"). */
  char buf[INET6_ADDRSTRLEN + 2];
  size_t n = strlen(host);
  if (n >= 2 && n < sizeof buf && host[0] == '[' && host[n - 1] == ']') {
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = '\0';
    host = buf;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    *len = sizeof *v6;
    return true;
  }
  return false;
}

treadle_err_t treadle_sockaddr_parse(const char *host, int port,
                                     struct sockaddr_storage *addr) {
  socklen_t len;
  if (addr == NULL)
    return TREADLE_EINVAL;
  if (port < 0 || port > 65535 || !treadle__addr_parse(host, port, addr, &len)) {
    memset(addr, 0, sizeof *addr);
    return TREADLE_EINVAL;
  }
  return 0;
}

int treadle_sockaddr_host(const struct sockaddr_storage *addr,
                          char host[TREADLE_HOST_LEN]) {
  if (host == NULL)
    return TREADLE_EINVAL;
  host[0] = '\0';
  if (addr == NULL)
    return TREADLE_EINVAL;
  if (addr->ss_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
    inet_ntop(AF_INET, &v4->sin_addr, host, TREADLE_HOST_LEN);
    return ntohs(v4->sin_port);
  }
  if (addr->ss_family == AF_INET6) {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
    inet_ntop(AF_INET6, &v6->sin6_addr, host, TREADLE_HOST_LEN);
    return ntohs(v6->sin6_port);
  }
  return TREADLE_EINVAL;
}

int treadle_sockaddr_format(const struct sockaddr_storage *addr, char *buf,
                            size_t len) {
  if (addr == NULL || buf == NULL || len == 0)
    return TREADLE_EINVAL;
  char host[TREADLE_HOST_LEN];
  int port = treadle_sockaddr_host(addr, host);
  if (port < 0)
    buf[0] = '\0';
  else
    snprintf(buf, len, addr->ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host,
             port);
  return port;
}

/* --------------------------------------------------------------- Unix */

treadle_err_t treadle_sockaddr_unix(const char *path,
                                    struct sockaddr_storage *addr) {
  if (addr == NULL)
    return TREADLE_EINVAL;
  memset(addr, 0, sizeof *addr);
  if (path == NULL || path[0] == '\0' || strcmp(path, "@") == 0)
    return TREADLE_EINVAL;
  struct sockaddr_un *un = (struct sockaddr_un *)addr;
  bool abstract = path[0] == '@';
  const char *name = abstract ? path + 1 : path;
  size_t n = strlen(name);
  if (n > TREADLE_UNIX_PATH_MAX)
    return TREADLE_ENAMETOOLONG;
  un->sun_family = AF_UNIX;
  /* An abstract name starts with a NUL byte; a path ends with one. */
  memcpy(un->sun_path + abstract, name, n);
  return 0;
}

int treadle_sockaddr_unix_path(const struct sockaddr_storage *addr, char *buf,
                               size_t len) {
  if (addr == NULL || buf == NULL || len == 0 || addr->ss_family != AF_UNIX) {
    if (buf != NULL && len > 0)
      buf[0] = '\0';
    return TREADLE_EINVAL;
  }
  const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
  if (un->sun_path[0] != '\0')
    return snprintf(buf, len, "%.*s", (int)sizeof un->sun_path, un->sun_path);
  int n = (int)strnlen(un->sun_path + 1, sizeof un->sun_path - 1);
  if (n == 0) {
    buf[0] = '\0'; /* unnamed */
    return 0;
  }
  return snprintf(buf, len, "@%.*s", n, un->sun_path + 1);
}

socklen_t treadle__addr_len(const struct sockaddr_storage *addr) {
  switch (addr->ss_family) {
  case AF_INET:
    return sizeof(struct sockaddr_in);
  case AF_INET6:
    return sizeof(struct sockaddr_in6);
  case AF_UNIX: {
    const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
    if (un->sun_path[0] != '\0') /* a path, with its NUL if it fits */
      return (socklen_t)(SUN_PATH_OFF +
                         strnlen(un->sun_path, sizeof un->sun_path - 1) + 1);
    size_t n = strnlen(un->sun_path + 1, sizeof un->sun_path - 1);
    return n == 0 ? 0 : (socklen_t)(SUN_PATH_OFF + 1 + n); /* abstract */
  }
  default:
    return 0;
  }
}

/* ----------------------------------------------------------- sockets */

treadle_err_t treadle__sock_name(int fd, struct sockaddr_storage *addr,
                                 bool peer) {
  socklen_t len = sizeof *addr;
  int r = peer ? getpeername(fd, (struct sockaddr *)addr, &len)
               : getsockname(fd, (struct sockaddr *)addr, &len);
  if (r < 0)
    return -errno;
  treadle__addr_tidy(addr, len, AF_UNIX);
  return 0;
}

int treadle__socket(int family, int type) {
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

int treadle__inet_bind(treadle_handle_t *h, const char *host, int port,
                       int type, bool reuse_addr, bool reuse_port,
                       int *family) {
  struct sockaddr_storage addr;
  socklen_t len;
  if (h == NULL || port < 0 || port > 65535 ||
      !treadle__addr_parse(host, port, &addr, &len))
    return TREADLE_EINVAL;
  if (!h->driver.has_io)
    return TREADLE_ENOIO;
  int fd = treadle__socket(addr.ss_family, type);
  if (fd < 0)
    return fd;
  treadle_err_t err = 0;
  if (reuse_addr)
    err = treadle__set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  if (err == 0 && reuse_port)
    err = treadle__set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
  if (err == 0 && addr.ss_family == AF_INET6)
    err = treadle__set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
  if (err == 0 && bind(fd, (const struct sockaddr *)&addr, len) < 0)
    err = -errno;
  if (err != 0) {
    close(fd);
    return err;
  }
  *family = addr.ss_family;
  return fd;
}

treadle_err_t treadle__set_int_opt(int fd, int level, int opt, int value) {
  return setsockopt(fd, level, opt, &value, sizeof value) < 0 ? -errno : 0;
}

treadle_err_t treadle__get_int_opt(int fd, int level, int opt, int *value) {
  *value = 0;
  socklen_t len = sizeof *value;
  return getsockopt(fd, level, opt, value, &len) < 0 ? -errno : 0;
}
