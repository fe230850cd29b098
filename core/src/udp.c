/* UDP's front end (ARCHITECTURE.md "Sockets"; tokio net/udp): binding,
 * connecting and the options of a UDP socket. Sending and receiving are
 * dgram.c's, shared with Unix datagram sockets. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <unistd.h>

#include "net.h"

treadle_err_t treadle_udp_bind(treadle_handle_t *h, const char *host, int port,
                               const treadle_udp_bind_opts_t *opts,
                               treadle_dgram_t **out) {
  treadle_udp_bind_opts_t def = TREADLE_UDP_BIND_OPTS_INIT;
  if (opts == NULL)
    opts = &def;
  if (out != NULL)
    *out = NULL;
  if (out == NULL)
    return TREADLE_EINVAL;
  int family;
  int fd = treadle__inet_bind(h, host, port, SOCK_DGRAM, opts->reuse_addr,
                              opts->reuse_port, &family);
  if (fd < 0)
    return fd;
  return treadle__dgram_new(h, fd, family, NULL, out);
}

/* The UDP functions' check: an open UDP socket. */
#define WITH_UDP(d, expr)                                                      \
  do {                                                                         \
    if ((d) != NULL && (d)->family != AF_INET && (d)->family != AF_INET6)      \
      return TREADLE_ENOTSUP;                                                  \
    TREADLE__WITH_FD(d, expr);                                                 \
  } while (0)

static treadle_err_t connect_to(treadle_dgram_t *d,
                                const struct sockaddr_storage *addr,
                                socklen_t len) {
  return connect(d->src.fd, (const struct sockaddr *)addr, len) < 0 ? -errno
                                                                    : 0;
}

treadle_err_t treadle_udp_connect(treadle_dgram_t *d, const char *host,
                                  int port) {
  struct sockaddr_storage addr;
  socklen_t len;
  if (host == NULL || port < 1 || port > 65535 ||
      !treadle__addr_parse(host, port, &addr, &len))
    return TREADLE_EINVAL;
  WITH_UDP(d, connect_to(d, &addr, len));
}

/* An option at IPv4's or IPv6's level, as the socket's family says. */
static treadle_err_t set_ip_opt(treadle_dgram_t *d, int v4, int v6, int value) {
  return d->family == AF_INET
             ? treadle__set_int_opt(d->src.fd, IPPROTO_IP, v4, value)
             : treadle__set_int_opt(d->src.fd, IPPROTO_IPV6, v6, value);
}

static treadle_err_t get_ip_opt(treadle_dgram_t *d, int v4, int v6,
                                unsigned *value) {
  int v;
  treadle_err_t err =
      d->family == AF_INET
          ? treadle__get_int_opt(d->src.fd, IPPROTO_IP, v4, &v)
          : treadle__get_int_opt(d->src.fd, IPPROTO_IPV6, v6, &v);
  *value = (unsigned)v;
  return err;
}

static treadle_err_t get_ip_bool(treadle_dgram_t *d, int v4, int v6,
                                 bool *on) {
  unsigned v;
  treadle_err_t err = get_ip_opt(d, v4, v6, &v);
  *on = v != 0;
  return err;
}

treadle_err_t treadle_udp_set_broadcast(treadle_dgram_t *d, bool on) {
  WITH_UDP(d, treadle__set_int_opt(d->src.fd, SOL_SOCKET, SO_BROADCAST, on));
}

treadle_err_t treadle_udp_broadcast(treadle_dgram_t *d, bool *on) {
  if (on == NULL)
    return TREADLE_EINVAL;
  WITH_UDP(d, treadle__get_bool_opt(d->src.fd, SOL_SOCKET, SO_BROADCAST, on));
}

treadle_err_t treadle_udp_set_ttl(treadle_dgram_t *d, unsigned ttl) {
  if (ttl < 1 || ttl > 255)
    return TREADLE_EINVAL;
  WITH_UDP(d, set_ip_opt(d, IP_TTL, IPV6_UNICAST_HOPS, (int)ttl));
}

treadle_err_t treadle_udp_ttl(treadle_dgram_t *d, unsigned *ttl) {
  if (ttl == NULL)
    return TREADLE_EINVAL;
  WITH_UDP(d, get_ip_opt(d, IP_TTL, IPV6_UNICAST_HOPS, ttl));
}

treadle_err_t treadle_udp_set_multicast_ttl(treadle_dgram_t *d, unsigned ttl) {
  if (ttl > 255)
    return TREADLE_EINVAL;
  WITH_UDP(d, set_ip_opt(d, IP_MULTICAST_TTL, IPV6_MULTICAST_HOPS, (int)ttl));
}

treadle_err_t treadle_udp_multicast_ttl(treadle_dgram_t *d, unsigned *ttl) {
  if (ttl == NULL)
    return TREADLE_EINVAL;
  WITH_UDP(d, get_ip_opt(d, IP_MULTICAST_TTL, IPV6_MULTICAST_HOPS, ttl));
}

treadle_err_t treadle_udp_set_multicast_loop(treadle_dgram_t *d, bool on) {
  WITH_UDP(d, set_ip_opt(d, IP_MULTICAST_LOOP, IPV6_MULTICAST_LOOP, on));
}

treadle_err_t treadle_udp_multicast_loop(treadle_dgram_t *d, bool *on) {
  if (on == NULL)
    return TREADLE_EINVAL;
  WITH_UDP(d, get_ip_bool(d, IP_MULTICAST_LOOP, IPV6_MULTICAST_LOOP, on));
}

/* IP_ADD_MEMBERSHIP and friends: `group` must be a multicast address of
 * the socket's own family. */
#ifndef IPV6_MULTICAST_ALL
#define IPV6_MULTICAST_ALL 29 /* Linux 4.20 */
#endif

/* A member receives the groups it joined itself, not every group some
 * socket of the host joined (Linux's default, IP_MULTICAST_ALL on): else
 * leaving would not stop a group that another process is in. Kernels
 * without the option keep their default. */
static void own_groups_only(treadle_dgram_t *d) {
  int off = 0;
  if (d->family == AF_INET)
    (void)setsockopt(d->src.fd, IPPROTO_IP, IP_MULTICAST_ALL, &off, sizeof off);
  else
    (void)setsockopt(d->src.fd, IPPROTO_IPV6, IPV6_MULTICAST_ALL, &off,
                     sizeof off);
}

static treadle_err_t membership(treadle_dgram_t *d, const char *group,
                                unsigned ifindex, bool join) {
  if (join)
    own_groups_only(d);
  if (d->family == AF_INET) {
    struct ip_mreqn m = {.imr_ifindex = (int)ifindex};
    if (inet_pton(AF_INET, group, &m.imr_multiaddr) != 1 ||
        !IN_MULTICAST(ntohl(m.imr_multiaddr.s_addr)))
      return TREADLE_EINVAL;
    int opt = join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP;
    return setsockopt(d->src.fd, IPPROTO_IP, opt, &m, sizeof m) < 0 ? -errno
                                                                    : 0;
  }
  struct ipv6_mreq m = {.ipv6mr_interface = ifindex};
  if (inet_pton(AF_INET6, group, &m.ipv6mr_multiaddr) != 1 ||
      !IN6_IS_ADDR_MULTICAST(&m.ipv6mr_multiaddr))
    return TREADLE_EINVAL;
  int opt = join ? IPV6_ADD_MEMBERSHIP : IPV6_DROP_MEMBERSHIP;
  return setsockopt(d->src.fd, IPPROTO_IPV6, opt, &m, sizeof m) < 0 ? -errno
                                                                    : 0;
}

treadle_err_t treadle_udp_join_multicast(treadle_dgram_t *d, const char *group,
                                         unsigned ifindex) {
  if (group == NULL || ifindex > INT32_MAX)
    return TREADLE_EINVAL;
  WITH_UDP(d, membership(d, group, ifindex, true));
}

treadle_err_t treadle_udp_leave_multicast(treadle_dgram_t *d,
                                          const char *group, unsigned ifindex) {
  if (group == NULL || ifindex > INT32_MAX)
    return TREADLE_EINVAL;
  WITH_UDP(d, membership(d, group, ifindex, false));
}
