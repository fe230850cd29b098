/* Host name lookups (ARCHITECTURE.md "Sockets"; tokio net/addr.rs
 * lookup_host): getaddrinfo on the blocking pool, so that a slow resolver
 * never blocks a worker.
 *
 * 1. init takes a copy of the host. A numeric address (IPv4, IPv6, with or
 *    without brackets) is the result at once: no job, no system call.
 * 2. The first poll spawns the job; later polls join it. The job copies the
 *    IPv4 and IPv6 addresses getaddrinfo gives, in its order and without
 *    repeats, into one allocation (treadle_addrs_t) and frees the
 *    addrinfo list itself.
 * 3. drop aborts a job not yet started and detaches one that runs: its
 *    result then goes to the job's drop_output, so a cancelled lookup
 *    returns nothing and leaks nothing. */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <stdio.h>

#include "net.h"

struct treadle_addrs_s {
  size_t count;
  struct sockaddr_storage addr[];
};

/* treadle_lookup_t's private layout. */
typedef struct __attribute__((__may_alias__)) lookup_s {
  treadle_handle_t *h;      /* holds a reference; NULL once dropped */
  char *host;               /* owned until the job takes it */
  int port;
  bool done;                /* READY was returned */
  treadle_join_t *job;      /* getaddrinfo on the blocking pool */
  treadle_addrs_t *numeric; /* a numeric host's result, made at init */
} lookup_t;

_Static_assert(sizeof(lookup_t) <= sizeof(treadle_lookup_t),
               "treadle_lookup_t too small");

static treadle_addrs_t *addrs_new(size_t n) {
  treadle_addrs_t *a =
      treadle__malloc(sizeof *a + n * sizeof(struct sockaddr_storage));
  if (a != NULL)
    a->count = 0;
  return a;
}

/* Adds addr unless it is there already. */
static void addrs_add(treadle_addrs_t *a, const struct sockaddr *addr,
                      socklen_t len) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  memcpy(&ss, addr, len);
  for (size_t i = 0; i < a->count; i++)
    if (memcmp(&a->addr[i], &ss, sizeof ss) == 0)
      return;
  a->addr[a->count++] = ss;
}

size_t treadle_addrs_count(const treadle_addrs_t *a) {
  return a != NULL ? a->count : 0;
}

const struct sockaddr_storage *treadle_addrs_get(const treadle_addrs_t *a,
                                                 size_t i) {
  return a != NULL && i < a->count ? &a->addr[i] : NULL;
}

void treadle_addrs_free(treadle_addrs_t *a) { treadle__free(a); }

/* ------------------------------------------------------------- the job */

typedef struct {
  char *host;
  int port;
} job_t;

static treadle_err_t job_run(void *state, void **value) {
  job_t *job = state;
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV};
  char port[8];
  snprintf(port, sizeof port, "%d", job->port);
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(job->host, port, &hints, &res);
  if (rc != 0) {
    if (rc == EAI_SYSTEM)
      return errno != 0 ? -errno : TREADLE_ENOHOST;
    return rc == EAI_MEMORY ? TREADLE_ENOMEM : TREADLE_ENOHOST;
  }
  size_t n = 0;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
    n++;
  treadle_addrs_t *a = addrs_new(n);
  if (a == NULL) {
    freeaddrinfo(res);
    return TREADLE_ENOMEM;
  }
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
    if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
        ai->ai_addrlen <= sizeof(struct sockaddr_storage))
      addrs_add(a, ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(res);
  if (a->count == 0) {
    treadle_addrs_free(a);
    return TREADLE_ENOHOST;
  }
  *value = a;
  return 0;
}

static void job_drop(void *state) { treadle__free(((job_t *)state)->host); }

static void job_drop_output(void *value) { treadle_addrs_free(value); }

static const treadle_blocking_vtable_t job_vt = {
    .run = job_run, .drop = job_drop, .drop_output = job_drop_output};

/* -------------------------------------------------------------- lookup */

treadle_err_t treadle_lookup_host_init(treadle_lookup_t *lk,
                                       treadle_handle_t *h, const char *host,
                                       int port) {
  lookup_t *l = (lookup_t *)lk;
  if (l == NULL)
    return TREADLE_EINVAL;
  memset(l, 0, sizeof *l);
  if (h == NULL || host == NULL || host[0] == '\0' || port < 0 ||
      port > 65535)
    return TREADLE_EINVAL;
  struct sockaddr_storage addr;
  socklen_t len;
  /* "localhost" has an IPv6 address too: the resolver's to give. */
  if (strcmp(host, "localhost") != 0 &&
      treadle__addr_parse(host, port, &addr, &len)) {
    l->numeric = addrs_new(1);
    if (l->numeric == NULL)
      return TREADLE_ENOMEM;
    addrs_add(l->numeric, (const struct sockaddr *)&addr, len);
  } else {
    l->host = treadle__strdup(host);
    if (l->host == NULL)
      return TREADLE_ENOMEM;
  }
  l->h = treadle_handle_ref(h);
  l->port = port;
  return 0;
}

treadle_poll_t treadle_lookup_host_poll(treadle_lookup_t *lk, treadle_cx_t *cx,
                                        treadle_addrs_t **out,
                                        treadle_err_t *err) {
  lookup_t *l = (lookup_t *)lk;
  if (out != NULL)
    *out = NULL;
  if (l == NULL || cx == NULL || out == NULL || l->h == NULL || l->done) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  if (l->numeric != NULL) {
    if (!treadle_cx_poll_proceed(cx))
      return TREADLE_PENDING;
    *out = l->numeric;
    l->numeric = NULL;
    *err = 0;
    l->done = true;
    return TREADLE_READY;
  }
  if (l->job == NULL) {
    job_t job = {.host = l->host, .port = l->port};
    *err = treadle_spawn_blocking(l->h, &job_vt, &job, sizeof job, &l->job);
    if (*err != 0) {
      l->done = true;
      return TREADLE_READY;
    }
    l->host = NULL; /* the job owns it now */
  }
  void *value = NULL;
  treadle_err_t status;
  if (treadle_join_poll(l->job, cx, &status, &value) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_join_detach(l->job);
  l->job = NULL;
  *out = value;
  *err = status;
  l->done = true;
  return TREADLE_READY;
}

void treadle_lookup_host_drop(treadle_lookup_t *lk) {
  lookup_t *l = (lookup_t *)lk;
  if (l == NULL || l->h == NULL)
    return;
  if (l->job != NULL) { /* step 3 */
    treadle_join_abort(l->job);
    treadle_join_detach(l->job);
  }
  treadle__free(l->host);
  treadle_addrs_free(l->numeric);
  treadle_handle_unref(l->h);
  memset(l, 0, sizeof *l);
}
