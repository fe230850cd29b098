/* What the socket files share (ARCHITECTURE.md "Sockets"): the layouts of
 * the three socket objects, which every transport uses as they are, and
 * the helpers of their front ends.
 *
 *   stream.c   streams and listeners: read, write, shutdown, accept with
 *              its EMFILE back-off, close
 *   dgram.c    datagram sockets: send, recv, send_to, recv_from and the
 *              batches
 *   tcp.c udp.c   the front ends: binding, connecting, options
 *   sockaddr.c  numeric addresses
 *
 * Nothing here is public API. */
#ifndef TREADLE_NET_H
#define TREADLE_NET_H

#include <sys/socket.h>
#include <sys/types.h>

#include "io.h"

/* A connected byte stream. */
struct treadle_stream_s {
  treadle__source_t src;
  int family; /* AF_INET, AF_INET6; constant */
};

struct treadle_listener_s {
  treadle__source_t src;
  int family;              /* of the streams it accepts; constant */
  treadle_sleep_t backoff; /* pause after EMFILE / ENFILE; accept's task */
  uint64_t backoff_ns;     /* 0: not backing off; accept's task */
  _Atomic uint64_t exhaustions;
};

/* A datagram socket. */
struct treadle_dgram_s {
  treadle__source_t src;
  int family; /* constant */
};

/* Wraps a connected, non-blocking `fd` of `family`. Takes the fd in every
 * case: on failure it is closed. */
treadle_err_t treadle__stream_new(treadle_handle_t *h, int fd, int family,
                                  treadle_stream_t **out);
/* Listens on a bound `fd` and wraps it. Takes the fd in every case: on
 * failure it is closed. */
treadle_err_t treadle__listener_new(treadle_handle_t *h, int fd, int family,
                                    int backlog, treadle_listener_t **out);
/* Wraps a datagram `fd`, taking it as treadle__listener_new. */
treadle_err_t treadle__dgram_new(treadle_handle_t *h, int fd, int family,
                                 treadle_dgram_t **out);

/* ------------------------------------------------------------ addresses */

/* A numeric host (or "localhost", or NULL/"" for every IPv4 address) and
 * port into *addr; false if it is not one. */
bool treadle__addr_parse(const char *host, int port,
                         struct sockaddr_storage *addr, socklen_t *len);
/* The length of an address for bind/connect/sendto: IPv4 or IPv6; 0 for
 * anything else. */
socklen_t treadle__addr_len(const struct sockaddr_storage *addr);
/* getsockname or getpeername into *addr. */
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
