/* What the datagram tests (test-udp*.c, test-unix-dgram.c) share: one
 * leaf run to its end in a task of the runtime under test, with its
 * results brought back to the test's thread for the assertions, and
 * a wait for a task to be parked in a receive. Names are the test files'
 * own; nothing here is public. */
#ifndef TREADLE_TEST_DGRAM_UTIL_H
#define TREADLE_TEST_DGRAM_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* Sends one datagram (to `to`, or to the connected peer when NULL) from a
 * task of rt: the leaf's error; on success it checks that all went. */
treadle_err_t dg_send(treadle_runtime_t *rt, treadle_dgram_t *d,
                      const void *buf, size_t len,
                      const struct sockaddr_storage *to);

/* Receives one datagram into buf (room bytes) in a task of rt, giving up
 * after timeout_ms (then TREADLE_ETIMEDOUT): the leaf's error, with its
 * *n and, when from is not NULL, the sender. */
treadle_err_t dg_recv(treadle_runtime_t *rt, treadle_dgram_t *d, void *buf,
                      size_t room, size_t *n, struct sockaddr_storage *from,
                      long timeout_ms);

/* Runs a batch leaf (send_many, or recv_many) once to its end in a task
 * of rt: its error, and in *done its count. */
treadle_err_t dg_batch(treadle_runtime_t *rt, treadle_dgram_t *d,
                       treadle_dgram_msg_t *msgs, size_t count, bool sending,
                       size_t *done);

/* A task that receives once on d and records what came: spawn it with
 * dg_waiter_spawn, wait for `parked` (it is then waiting in the driver),
 * act, and join it (dg_waiter_join). Its polls are counted. */
typedef struct {
  treadle_dgram_t *d;
  _Atomic int parked; /* set at its first PENDING */
  _Atomic int polls;
  treadle_err_t err;
  size_t n;
  char buf[64];
} dg_waiter_t;

treadle_join_t *dg_waiter_spawn(treadle_runtime_t *rt, dg_waiter_t *w);
/* Waits (in a task of rt) until w is parked. */
void dg_waiter_wait_parked(treadle_runtime_t *rt, dg_waiter_t *w);
void dg_waiter_join(treadle_runtime_t *rt, treadle_join_t *j);

/* A UDP socket of rt bound to host, port 0; *addr is where it is. */
treadle_dgram_t *dg_bound(treadle_runtime_t *rt, const char *host,
                          struct sockaddr_storage *addr);

/* The port of an IPv4 or IPv6 address. */
int dg_port(const struct sockaddr_storage *a);

#endif
