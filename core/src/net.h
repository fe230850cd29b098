/* What the socket files share (ARCHITECTURE.md "Sockets"): the layouts of
 * the three socket objects, which every transport uses as they are, and
 * the helpers of their front ends.
 *
 *   stream.c   streams and listeners: read, write, shutdown, accept with
 *              its EMFILE back-off, close (TCP and Unix alike)
 *   dgram.c    datagram sockets: send, recv, send_to, recv_from and the
 *              batches (UDP and Unix alike)
 *   tcp.c udp.c unix.c   the front ends: binding, connecting, options
 *   sockaddr.c  numeric and Unix addresses
 *
 * Nothing here is public API. */
#ifndef TREADLE_NET_H
#define TREADLE_NET_H

#include <sys/socket.h>
#include <sys/types.h>

#include "io.h"

/* A Unix socket's path, which close removes (unix.c). dev and ino are the
 * file's as bind made it: a file someone put there since is left alone. */
typedef struct treadle__unix_path_s {
  dev_t dev;
  ino_t ino;
  char path[]; /* NUL-terminated */
} treadle__unix_path_t;

/* A connected byte stream: TCP or Unix. */
struct treadle_stream_s {
  treadle__source_t src;
  int family;       /* AF_INET, AF_INET6, AF_UNIX; constant */
  size_t read_full; /* 0, or all ones: every read counts as full (Unix,
                       stream.c's call_recv); constant */
};

struct treadle_listener_s {
  treadle__source_t src;
  int family;              /* of the streams it accepts; constant */
  treadle_sleep_t backoff; /* pause after EMFILE / ENFILE; accept's task */
  uint64_t backoff_ns;     /* 0: not backing off; accept's task */
  _Atomic uint64_t exhaustions;
  _Atomic(treadle__unix_path_t *) path; /* removed at close; NULL: none */
};

/* A datagram socket: UDP or Unix. */
struct treadle_dgram_s {
  treadle__source_t src;
  int family; /* constant */
  _Atomic(treadle__unix_path_t *) path; /* removed at close; NULL: none */
};

/* Wraps a connected, non-blocking `fd` of `family`. Takes the fd in every
 * case: on failure it is closed. */
treadle_err_t treadle__stream_new(treadle_handle_t *h, int fd, int family,
                                  treadle_stream_t **out);
/* Listens on a bound `fd` and wraps it. Takes the fd and `path` (may be
 * NULL) in every case: on failure the fd is closed and the path removed. */
treadle_err_t treadle__listener_new(treadle_handle_t *h, int fd, int family,
                                    int backlog, treadle__unix_path_t *path,
                                    treadle_listener_t **out);
/* Wraps a datagram `fd`, taking it and `path` as treadle__listener_new. */
treadle_err_t treadle__dgram_new(treadle_handle_t *h, int fd, int family,
                                 treadle__unix_path_t *path,
                                 treadle_dgram_t **out);

/* Removes `p`'s file if it is still the one bind made, and frees p (NULL
 * is ignored). */
void treadle__unix_path_remove(treadle__unix_path_t *p);
/* What close does with a socket's path (unix.c): takes it from *slot (so
 * once, whoever closes first) and removes it, except in a forked child,
 * where the parent still serves it. */
void treadle__unix_path_release(_Atomic(treadle__unix_path_t *) *slot,
                                treadle_handle_t *h);

/* ------------------------------------------------------------ addresses */

/* A numeric host (or "localhost", or NULL/"" for every IPv4 address) and
 * port into *addr; false if it is not one. */
bool treadle__addr_parse(const char *host, int port,
                         struct sockaddr_storage *addr, socklen_t *len);
/* The length of an address for bind/connect/sendto: IPv4, IPv6, or a
 * Unix path or abstract name as treadle_sockaddr_unix makes them; 0 for
 * anything else (an unnamed Unix address included). */
socklen_t treadle__addr_len(const struct sockaddr_storage *addr);
/* What the kernel wrote (`len` bytes) made into treadle's form: a Unix
 * address's unused tail is zeroed, so that its path or name ends there,
 * and nothing at all (recvfrom from an unnamed Unix socket) becomes an
 * unnamed address of `family`. */
static inline void treadle__addr_tidy(struct sockaddr_storage *addr,
                                      socklen_t len, int family) {
  if (treadle__unlikely(len < sizeof(sa_family_t))) { /* an unnamed sender */
    memset(addr, 0, sizeof *addr);
    addr->ss_family = (sa_family_t)family;
  } else if (treadle__unlikely(addr->ss_family == AF_UNIX) &&
             len < sizeof *addr) {
    memset((char *)addr + len, 0, sizeof *addr - len);
  }
}
/* getsockname or getpeername into *addr, tidied. */
treadle_err_t treadle__sock_name(int fd, struct sockaddr_storage *addr,
                                 bool peer);

/* ---------------------------------------------------------- socket calls */

/* socket(2), non-blocking and close-on-exec: the fd, or -errno. */
int treadle__socket(int family, int type);
/* TCP's and UDP's bind: a socket of `type` bound to host and port (IPv6
 * only for an IPv6 address, as Tokio's), with *family its family: the fd,
 * or TREADLE_EINVAL (NULL handle, a port outside 0..65535, a host that is
 * not an address), TREADLE_ENOIO, -errno. */
int treadle__inet_bind(treadle_handle_t *h, const char *host, int port,
                       int type, bool reuse_addr, bool reuse_port,
                       int *family);
treadle_err_t treadle__set_int_opt(int fd, int level, int opt, int value);
treadle_err_t treadle__get_int_opt(int fd, int level, int opt, int *value);
static inline treadle_err_t treadle__get_bool_opt(int fd, int level, int opt,
                                                  bool *on) {
  int value;
  treadle_err_t err = treadle__get_int_opt(fd, level, opt, &value);
  *on = value != 0;
  return err;
}

/* A sendmsg leaf's message (stream.c's writev, unix.c's descriptors):
 * full when all `total` bytes went. */
typedef struct treadle__gather_s {
  struct msghdr msg;
  size_t total;
} treadle__gather_t;
ssize_t treadle__call_sendmsg(int fd, void *state, bool *full);

/* Runs `expr` (an error code) with the object's fd entered: EINVAL for
 * NULL, ECLOSED once closed. Returns from the calling function. */
#define TREADLE__WITH_FD(obj, expr)                                            \
  do {                                                                         \
    if ((obj) == NULL)                                                         \
      return TREADLE_EINVAL;                                                   \
    if (!treadle__source_enter(&(obj)->src))                                   \
      return TREADLE_ECLOSED;                                                  \
    treadle_err_t e_ = (expr);                                                 \
    treadle__source_leave(&(obj)->src);                                        \
    return e_;                                                                 \
  } while (0)

#endif /* TREADLE_NET_H */
