/* Shared dictionaries (shdict.h; ARCHITECTURE.md "Shared dictionaries").
 *
 * Rules that keep the critical sections short:
 * 1. A store allocates its new entry before it takes the mutex; entries
 *    that leave the table (replaced, deleted, expired, evicted) go on a
 *    local list and are freed after the mutex is released.
 * 2. incr changes a number in place; only a missing key with an init
 *    allocates, outside the mutex, and then looks again (another thread may
 *    have stored the key meanwhile: the increment is then made in place).
 * 3. shd_keys measures under the mutex, allocates outside, copies under it.
 * 4. A push allocates its item (and, for a new list, the entry) outside;
 *    a pop hands its item to the caller, who frees it after reading it.
 * So the mutex is a spin lock, as nginx's shared-memory mutex and the I/O
 * driver's slot lock are: a waiter spins (the holder is a few hundred
 * instructions from the end), then yields the CPU in case the holder was
 * preempted. A pthread mutex put both workers of a tight incr loop to
 * sleep in futex calls thousands of times a second, at a third of the
 * throughput. */
#define _GNU_SOURCE
#include "shdict.h"

#include "os_thread.h" /* treadle__cpu_relax */

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct lru {
  struct lru *prev, *next;
} lru_t;

/* A list's item (lpush, rpush). */
typedef struct node {
  struct node *prev, *next;
  union {
    int64_t i;
    double n;
  } u;
  uint32_t len;        /* string's length */
  uint8_t type;        /* SHD_INT, SHD_NUM or SHD_STR */
  char data[];         /* the string */
} node_t;

_Static_assert(sizeof(node_t) <= SHD_NODE_OVERHEAD, "node header larger than its charge");

/* A list value: its items, and the bytes they are charged. */
typedef struct {
  node_t *head, *tail;
  size_t len, bytes;
} list_t;

typedef struct entry {
  lru_t lru;           /* first: an lru_t * is its entry */
  struct entry *hnext; /* the bucket's chain; the free list after removal */
  uint64_t hash;
  uint64_t expires;    /* `now` at which it expires; 0: never */
  union {
    bool b;
    int64_t i;
    double n;
    list_t *list;      /* SHD_LIST */
  } u;
  uint32_t flags;
  uint32_t vlen;       /* string value's length */
  uint16_t klen;
  uint8_t type;        /* shd_type_t */
  char data[];         /* the key, then the string value */
} entry_t;

_Static_assert(sizeof(entry_t) <= SHD_ENTRY_OVERHEAD, "entry header larger than its charge");

/* The first cache line holds the lock and what every call reads under it,
 * so a call that takes the lock from another core fetches one line for
 * all of them. */
struct shd_dict {
  _Alignas(64) _Atomic uint32_t mu; /* the spin lock: 1 while held */
  entry_t **buckets;   /* guarded by mu; mask + 1 chains */
  size_t mask;
  lru_t lru;           /* guarded by mu; next: most recently used */
  size_t used, count;  /* guarded by mu */
  shd_clock_fn clock;
  size_t capacity;
  _Atomic long refs;
  char *name;              /* NULL, or its key in `named` */
  struct shd_dict *next;   /* on `named`; guarded by named_mu */
};

static pthread_mutex_t named_mu = PTHREAD_MUTEX_INITIALIZER;
static shd_dict_t *named;

const char *shd_strerror(shd_err_t err) {
  switch (err) {
  case SHD_OK:
    return "ok";
  case SHD_ENOTFOUND:
    return "not found";
  case SHD_EEXISTS:
    return "exists";
  case SHD_ENOMEM:
    return "no memory";
  case SHD_ENOTNUM:
    return "not a number";
  case SHD_ECAPACITY:
    return "exists with another capacity";
  case SHD_ENOTLIST:
    return "value not a list";
  case SHD_EISLIST:
    return "value is a list";
  }
  return "unknown error";
}

static void lock(shd_dict_t *d) {
  unsigned spins = 0;
  /* acquire: pairs with unlock's release. */
  while (atomic_exchange_explicit(&d->mu, 1, memory_order_acquire)) {
    while (atomic_load_explicit(&d->mu, memory_order_relaxed)) {
      if (++spins > 64)
        sched_yield(); /* the holder may be preempted (or under valgrind) */
      else
        treadle__cpu_relax();
    }
  }
}

static void unlock(shd_dict_t *d) {
  /* release: publishes what was written under the lock. */
  atomic_store_explicit(&d->mu, 0, memory_order_release);
}

/* FNV-1a: keys are short, and this is a few cycles a byte. */
static uint64_t hash_key(const char *key, size_t klen) {
  uint64_t h = UINT64_C(14695981039346656037);
  for (size_t i = 0; i < klen; i++) {
    h ^= (unsigned char)key[i];
    h *= UINT64_C(1099511628211);
  }
  return h;
}

static size_t node_cost(const node_t *n) { return SHD_NODE_OVERHEAD + n->len; }

/* An entry's charge; a list's changes with its items (d->used with it). */
static size_t cost(const entry_t *e) {
  return SHD_ENTRY_OVERHEAD + e->klen + e->vlen +
         (e->type == SHD_LIST ? e->u.list->bytes : 0);
}

/* One call's view of the clock: read at most once, and only when an entry
 * with an expiry is looked at or made (most counters have none). */
typedef struct {
  shd_dict_t *d;
  uint64_t now; /* 0: not read yet */
} call_t;

static uint64_t now_of(call_t *c) {
  if (c->now == 0)
    c->now = c->d->clock();
  return c->now;
}

static bool expired(call_t *c, const entry_t *e) {
  return e->expires != 0 && e->expires <= now_of(c);
}

static entry_t *tail(shd_dict_t *d) {
  return d->lru.prev == &d->lru ? NULL : (entry_t *)d->lru.prev;
}

static void lru_unlink(entry_t *e) {
  e->lru.prev->next = e->lru.next;
  e->lru.next->prev = e->lru.prev;
}

static void lru_push_head(shd_dict_t *d, entry_t *e) {
  e->lru.prev = &d->lru;
  e->lru.next = d->lru.next;
  d->lru.next->prev = &e->lru;
  d->lru.next = &e->lru;
}

static void touch(shd_dict_t *d, entry_t *e) {
  if (d->lru.next != &e->lru) {
    lru_unlink(e);
    lru_push_head(d, e);
  }
}

static entry_t *find(shd_dict_t *d, uint64_t hash, const char *key, size_t klen) {
  for (entry_t *e = d->buckets[hash & d->mask]; e != NULL; e = e->hnext)
    if (e->hash == hash && e->klen == klen && memcmp(e->data, key, klen) == 0)
      return e;
  return NULL;
}

/* Takes e out of the table onto *garbage (freed after unlocking). */
static void remove_entry(shd_dict_t *d, entry_t *e, entry_t **garbage) {
  entry_t **p = &d->buckets[e->hash & d->mask];
  while (*p != e)
    p = &(*p)->hnext;
  *p = e->hnext;
  lru_unlink(e);
  d->used -= cost(e);
  d->count--;
  e->hnext = *garbage;
  *garbage = e;
}

static void insert_entry(shd_dict_t *d, entry_t *e) {
  entry_t **b = &d->buckets[e->hash & d->mask];
  e->hnext = *b;
  *b = e;
  lru_push_head(d, e);
  d->used += cost(e);
  d->count++;
}

static void free_entry(entry_t *e) {
  if (e->type == SHD_LIST) {
    for (node_t *n = e->u.list->head; n != NULL;) {
      node_t *next = n->next;
      free(n);
      n = next;
    }
    free(e->u.list);
  }
  free(e);
}

static void free_list(entry_t *e) {
  while (e != NULL) {
    entry_t *next = e->hnext;
    free_entry(e);
    e = next;
  }
}

/* ------------------------------------------------------------ the dicts */

shd_dict_t *shd_new(size_t capacity, shd_clock_fn clock) {
  if (capacity == 0 || clock == NULL)
    return NULL;
  /* About one bucket per 128 bytes of capacity: chains stay short even
   * when every entry is the smallest there is (65 bytes). */
  size_t n = 16;
  while (n < capacity / 128 && n < ((size_t)1 << 24))
    n *= 2;
  shd_dict_t *d = aligned_alloc(64, sizeof *d); /* a multiple of 64 */
  entry_t **buckets = d != NULL ? calloc(n, sizeof *buckets) : NULL;
  if (buckets == NULL) {
    free(d);
    return NULL;
  }
  memset(d, 0, sizeof *d);
  atomic_init(&d->mu, 0);
  d->clock = clock;
  d->capacity = capacity;
  d->lru.prev = d->lru.next = &d->lru;
  d->buckets = buckets;
  d->mask = n - 1;
  atomic_init(&d->refs, 1);
  return d;
}

shd_err_t shd_open(const char *name, size_t capacity, shd_clock_fn clock,
                   shd_dict_t **out) {
  *out = NULL;
  shd_err_t err = SHD_OK;
  pthread_mutex_lock(&named_mu);
  shd_dict_t *d = named;
  while (d != NULL && strcmp(d->name, name) != 0)
    d = d->next;
  if (d != NULL && capacity != 0 && d->capacity != capacity) {
    err = SHD_ECAPACITY;
  } else if (d != NULL) {
    /* Relaxed: named_mu orders it against the last unref. */
    atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
    *out = d;
  } else if (capacity == 0) {
    err = SHD_ENOTFOUND;
  } else {
    d = shd_new(capacity, clock);
    char *copy = d != NULL ? strdup(name) : NULL;
    if (copy == NULL) {
      shd_unref(d);
      err = SHD_ENOMEM;
    } else {
      d->name = copy;
      d->next = named;
      named = d;
      *out = d;
    }
  }
  pthread_mutex_unlock(&named_mu);
  return err;
}

shd_dict_t *shd_find(const char *name) {
  shd_dict_t *d = NULL;
  return shd_open(name, 0, NULL, &d) == SHD_OK ? d : NULL;
}

void shd_ref(shd_dict_t *d) {
  /* Relaxed: a new reference from one the caller holds. */
  atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
}

void shd_unref(shd_dict_t *d) {
  if (d == NULL)
    return;
  if (d->name != NULL)
    pthread_mutex_lock(&named_mu);
  /* acq_rel: the last owner sees every other owner's writes. */
  bool last = atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) == 1;
  if (last && d->name != NULL)
    for (shd_dict_t **p = &named; *p != NULL; p = &(*p)->next)
      if (*p == d) {
        *p = d->next;
        break;
      }
  if (d->name != NULL)
    pthread_mutex_unlock(&named_mu);
  if (!last)
    return;
  for (lru_t *l = d->lru.next; l != &d->lru;) {
    lru_t *next = l->next;
    free_entry((entry_t *)l);
    l = next;
  }
  free(d->buckets);
  free(d->name);
  free(d);
}

const char *shd_name(const shd_dict_t *d) { return d->name; }

size_t shd_capacity(const shd_dict_t *d) { return d->capacity; }

size_t shd_free_space(shd_dict_t *d) {
  lock(d);
  size_t free_bytes = d->capacity - d->used;
  unlock(d);
  return free_bytes;
}

size_t shd_count(shd_dict_t *d) {
  lock(d);
  size_t n = d->count;
  unlock(d);
  return n;
}

/* ------------------------------------------------------------ reads */

static void read_value(const entry_t *e, shd_value_t *out, char *buf, size_t bufcap) {
  out->type = (shd_type_t)e->type;
  out->flags = e->flags;
  out->u.i = 0;
  out->str = NULL;
  out->len = 0;
  switch (out->type) {
  case SHD_BOOL:
    out->u.b = e->u.b;
    break;
  case SHD_INT:
    out->u.i = e->u.i;
    break;
  case SHD_NUM:
    out->u.n = e->u.n;
    break;
  case SHD_STR:
    out->len = e->vlen;
    if (e->vlen <= bufcap) {
      memcpy(buf, e->data + e->klen, e->vlen);
      out->str = buf;
    }
    break;
  case SHD_NIL:
  case SHD_LIST:
    break;
  }
}

shd_err_t shd_get(shd_dict_t *d, const char *key, size_t klen, shd_value_t *out,
                  char *buf, size_t bufcap, bool *stale) {
  uint64_t hash = hash_key(key, klen);
  call_t c = {d, 0};
  shd_err_t err = SHD_ENOTFOUND;
  lock(d);
  entry_t *e = find(d, hash, key, klen);
  if (e != NULL && (stale != NULL || !expired(&c, e))) {
    if (stale != NULL)
      *stale = expired(&c, e);
    if (e->type == SHD_LIST) {
      err = SHD_EISLIST;
    } else {
      touch(d, e);
      read_value(e, out, buf, bufcap);
      err = SHD_OK;
    }
  }
  unlock(d);
  return err;
}

shd_err_t shd_ttl(shd_dict_t *d, const char *key, size_t klen, uint64_t *ms) {
  uint64_t hash = hash_key(key, klen);
  call_t c = {d, 0};
  shd_err_t err = SHD_ENOTFOUND;
  lock(d);
  entry_t *e = find(d, hash, key, klen);
  if (e != NULL && !expired(&c, e)) {
    *ms = e->expires == 0 ? 0 : e->expires - now_of(&c);
    err = SHD_OK;
  }
  unlock(d);
  return err;
}

shd_err_t shd_expire(shd_dict_t *d, const char *key, size_t klen, uint64_t ttl_ms) {
  uint64_t hash = hash_key(key, klen);
  call_t c = {d, 0};
  shd_err_t err = SHD_ENOTFOUND;
  lock(d);
  entry_t *e = find(d, hash, key, klen);
  if (e != NULL && !expired(&c, e)) {
    e->expires = ttl_ms == 0 ? 0 : now_of(&c) + ttl_ms;
    err = SHD_OK;
  }
  unlock(d);
  return err;
}

/* ------------------------------------------------------------ stores */

/* A new entry for key and v (not SHD_NIL), or NULL: out of memory. */
static entry_t *new_entry(call_t *c, uint64_t hash, const char *key, size_t klen,
                          const shd_value_t *v, uint64_t ttl_ms) {
  size_t vlen = v->type == SHD_STR ? v->len : 0;
  if (vlen > UINT32_MAX)
    return NULL;
  entry_t *e = malloc(sizeof *e + klen + vlen);
  if (e == NULL)
    return NULL;
  e->hash = hash;
  e->expires = ttl_ms == 0 ? 0 : now_of(c) + ttl_ms;
  e->u.i = 0;
  switch (v->type) {
  case SHD_BOOL:
    e->u.b = v->u.b;
    break;
  case SHD_INT:
    e->u.i = v->u.i;
    break;
  case SHD_NUM:
    e->u.n = v->u.n;
    break;
  default:
    break;
  }
  e->flags = v->flags;
  e->vlen = (uint32_t)vlen;
  e->klen = (uint16_t)klen;
  e->type = (uint8_t)v->type;
  memcpy(e->data, key, klen);
  if (vlen != 0)
    memcpy(e->data + klen, v->str, vlen);
  return e;
}

/* Under mu: puts `fresh` in the place of `old` (the key's entry, or NULL).
 * First frees up to two expired entries at the LRU tail (lazy expiry);
 * then, if it does not fit, a safe store frees expired entries from the
 * tail on and fails if that is not enough (old stays), any other evicts
 * entries from the tail until it fits (*forcible: a valid one went). */
static shd_err_t put_locked(call_t *c, entry_t *old, entry_t *fresh, bool safe,
                            bool *forcible, entry_t **garbage) {
  shd_dict_t *d = c->d;
  size_t need = cost(fresh);
  if (need > d->capacity)
    return SHD_ENOMEM;
  for (int i = 0; i < 2; i++) {
    entry_t *t = tail(d);
    if (t == NULL || !expired(c, t))
      break;
    if (t == old)
      old = NULL;
    remove_entry(d, t, garbage);
  }
  size_t room = d->capacity - d->used + (old != NULL ? cost(old) : 0);
  if (need > room && safe) {
    for (lru_t *l = d->lru.prev; l != &d->lru && need > room;) {
      entry_t *e = (entry_t *)l;
      l = l->prev;
      if (e != old && expired(c, e)) {
        room += cost(e);
        remove_entry(d, e, garbage);
      }
    }
    if (need > room)
      return SHD_ENOMEM;
  }
  if (old != NULL)
    remove_entry(d, old, garbage);
  while (d->capacity - d->used < need) {
    entry_t *t = tail(d); /* not NULL: need <= capacity */
    if (!expired(c, t))
      *forcible = true;
    remove_entry(d, t, garbage);
  }
  insert_entry(d, fresh);
  return SHD_OK;
}

shd_err_t shd_store(shd_dict_t *d, shd_op_t op, const char *key, size_t klen,
                    const shd_value_t *v, uint64_t ttl_ms, bool *forcible) {
  *forcible = false;
  uint64_t hash = hash_key(key, klen);
  call_t c = {d, 0};
  entry_t *fresh = NULL;
  if (v->type != SHD_NIL) {
    fresh = new_entry(&c, hash, key, klen, v, ttl_ms);
    if (fresh == NULL)
      return SHD_ENOMEM;
  }
  entry_t *garbage = NULL;
  shd_err_t err = SHD_OK;
  lock(d);
  entry_t *old = find(d, hash, key, klen);
  bool valid = old != NULL && !expired(&c, old);
  if ((op == SHD_ADD || op == SHD_SAFE_ADD) && valid)
    err = SHD_EEXISTS;
  else if (op == SHD_REPLACE && !valid)
    err = SHD_ENOTFOUND;
  else if (fresh == NULL) { /* nil: the key goes */
    if (old != NULL)
      remove_entry(d, old, &garbage);
  } else {
    err = put_locked(&c, old, fresh, op == SHD_SAFE_SET || op == SHD_SAFE_ADD, forcible,
                     &garbage);
    if (err == SHD_OK)
      fresh = NULL;
  }
  unlock(d);
  if (fresh != NULL)
    free_entry(fresh);
  free_list(garbage);
  return err;
}

static bool is_number(shd_type_t t) { return t == SHD_INT || t == SHD_NUM; }

static double as_double(const shd_value_t *v) {
  return v->type == SHD_INT ? (double)v->u.i : v->u.n;
}

/* a + b: integers while both are and the sum fits, else a double. */
static shd_value_t add_numbers(const shd_value_t *a, const shd_value_t *b) {
  shd_value_t r = {.type = SHD_INT};
  if (a->type == SHD_INT && b->type == SHD_INT &&
      !__builtin_add_overflow(a->u.i, b->u.i, &r.u.i))
    return r;
  r.type = SHD_NUM;
  r.u.n = as_double(a) + as_double(b);
  return r;
}

shd_err_t shd_incr(shd_dict_t *d, const char *key, size_t klen,
                   const shd_value_t *delta, const shd_value_t *init,
                   uint64_t init_ttl_ms, shd_value_t *out, bool *forcible) {
  *forcible = false;
  uint64_t hash = hash_key(key, klen);
  call_t c = {d, 0};
  entry_t *fresh = NULL, *garbage = NULL;
  shd_err_t err;
  for (;;) {
    lock(d);
    entry_t *e = find(d, hash, key, klen);
    if (e != NULL && !expired(&c, e)) {
      if (!is_number((shd_type_t)e->type)) {
        err = SHD_ENOTNUM;
      } else {
        shd_value_t cur = {.type = (shd_type_t)e->type, .u.i = e->u.i};
        *out = add_numbers(&cur, delta);
        e->type = (uint8_t)out->type;
        e->u.i = out->u.i; /* the union's bytes, whichever it holds */
        touch(d, e);
        err = SHD_OK;
      }
      break;
    }
    if (init == NULL) {
      err = SHD_ENOTFOUND;
      break;
    }
    if (fresh != NULL) { /* allocated in the last round, still missing */
      *out = add_numbers(init, delta);
      err = put_locked(&c, e, fresh, false, forcible, &garbage);
      if (err == SHD_OK)
        fresh = NULL;
      break;
    }
    unlock(d);
    shd_value_t first = add_numbers(init, delta);
    fresh = new_entry(&c, hash, key, klen, &first, init_ttl_ms);
    if (fresh == NULL)
      return SHD_ENOMEM;
  }
  unlock(d);
  free(fresh);
  free_list(garbage);
  return err;
}

/* ------------------------------------------------------------ lists */

static node_t *new_node(const shd_value_t *v) {
  size_t len = v->type == SHD_STR ? v->len : 0;
  if (len > UINT32_MAX)
    return NULL;
  node_t *n = malloc(sizeof *n + len);
  if (n == NULL)
    return NULL;
  n->prev = n->next = NULL;
  n->type = (uint8_t)v->type;
  n->len = (uint32_t)len;
  if (v->type == SHD_INT)
    n->u.i = v->u.i;
  else
    n->u.n = v->type == SHD_NUM ? v->u.n : 0;
  if (len != 0)
    memcpy(n->data, v->str, len);
  return n;
}

static void link_node(list_t *l, node_t *n, bool left) {
  if (left) {
    n->next = l->head;
    if (l->head != NULL)
      l->head->prev = n;
    l->head = n;
    if (l->tail == NULL)
      l->tail = n;
  } else {
    n->prev = l->tail;
    if (l->tail != NULL)
      l->tail->next = n;
    l->tail = n;
    if (l->head == NULL)
      l->head = n;
  }
  l->len++;
  l->bytes += node_cost(n);
}

shd_err_t shd_push(shd_dict_t *d, const char *key, size_t klen, bool left,
                   const shd_value_t *v, size_t *len) {
  node_t *n = new_node(v);
  if (n == NULL)
    return SHD_ENOMEM;
  uint64_t hash = hash_key(key, klen);
  call_t c = {d, 0};
  entry_t *fresh = NULL, *garbage = NULL;
  shd_err_t err;
  for (;;) {
    lock(d);
    entry_t *e = find(d, hash, key, klen);
    if (e != NULL && !expired(&c, e)) {
      if (e->type != SHD_LIST) {
        err = SHD_ENOTLIST;
        break;
      }
      /* First the list, then evictions from the tail: only a list that is
       * alone in the dict can be reached, and then it does not fit. */
      size_t need = node_cost(n);
      touch(d, e);
      err = SHD_OK;
      while (d->capacity - d->used < need) {
        entry_t *t = tail(d);
        if (t == e) {
          err = SHD_ENOMEM;
          break;
        }
        remove_entry(d, t, &garbage);
      }
      if (err == SHD_OK) {
        link_node(e->u.list, n, left);
        d->used += need;
        *len = e->u.list->len;
        n = NULL;
      }
      break;
    }
    if (fresh != NULL) { /* made in the last round: a new list of one */
      link_node(fresh->u.list, n, left);
      n = NULL;
      err = put_locked(&c, e, fresh, false, &(bool){false}, &garbage);
      if (err == SHD_OK) {
        fresh = NULL;
        *len = 1;
      }
      break;
    }
    unlock(d);
    shd_value_t empty = {.type = SHD_LIST};
    fresh = new_entry(&c, hash, key, klen, &empty, 0);
    list_t *l = fresh != NULL ? calloc(1, sizeof *l) : NULL;
    if (l == NULL) {
      free(fresh);
      free(n);
      return SHD_ENOMEM;
    }
    fresh->u.list = l;
  }
  unlock(d);
  free(n);
  if (fresh != NULL)
    free_entry(fresh);
  free_list(garbage);
  return err;
}

shd_err_t shd_pop(shd_dict_t *d, const char *key, size_t klen, bool left,
                  shd_value_t *out, void **item) {
  *item = NULL;
  uint64_t hash = hash_key(key, klen);
  call_t c = {d, 0};
  entry_t *garbage = NULL;
  shd_err_t err = SHD_ENOTFOUND;
  lock(d);
  entry_t *e = find(d, hash, key, klen);
  if (e != NULL && !expired(&c, e)) {
    if (e->type != SHD_LIST) {
      err = SHD_ENOTLIST;
    } else {
      list_t *l = e->u.list;
      node_t *n = left ? l->head : l->tail;
      if (left) {
        l->head = n->next;
        if (l->head != NULL)
          l->head->prev = NULL;
        else
          l->tail = NULL;
      } else {
        l->tail = n->prev;
        if (l->tail != NULL)
          l->tail->next = NULL;
        else
          l->head = NULL;
      }
      l->len--;
      l->bytes -= node_cost(n);
      d->used -= node_cost(n);
      if (l->len == 0) /* an empty list is no list: the key goes */
        remove_entry(d, e, &garbage);
      *item = n;
      err = SHD_OK;
    }
  }
  unlock(d);
  free_list(garbage);
  if (err == SHD_OK) {
    node_t *n = *item;
    memset(out, 0, sizeof *out);
    out->type = (shd_type_t)n->type;
    if (n->type == SHD_STR) {
      out->str = n->data;
      out->len = n->len;
    } else {
      out->u.i = n->u.i; /* the union's bytes, whichever it holds */
    }
  }
  return err;
}

void shd_item_free(void *item) { free(item); }

shd_err_t shd_llen(shd_dict_t *d, const char *key, size_t klen, size_t *len) {
  uint64_t hash = hash_key(key, klen);
  call_t c = {d, 0};
  shd_err_t err = SHD_OK;
  *len = 0;
  lock(d);
  entry_t *e = find(d, hash, key, klen);
  if (e != NULL && !expired(&c, e)) {
    if (e->type != SHD_LIST)
      err = SHD_ENOTLIST;
    else
      *len = e->u.list->len;
  }
  unlock(d);
  return err;
}

/* ------------------------------------------------------------ flushes */

void shd_flush_all(shd_dict_t *d) {
  lock(d);
  for (lru_t *l = d->lru.next; l != &d->lru; l = l->next)
    ((entry_t *)l)->expires = 1; /* the clock says >= 1 */
  unlock(d);
}

size_t shd_flush_expired(shd_dict_t *d, size_t max) {
  call_t c = {d, 0};
  entry_t *garbage = NULL;
  size_t n = 0;
  lock(d);
  for (lru_t *l = d->lru.prev; l != &d->lru && (max == 0 || n < max);) {
    entry_t *e = (entry_t *)l;
    l = l->prev;
    if (expired(&c, e)) {
      remove_entry(d, e, &garbage);
      n++;
    }
  }
  unlock(d);
  free_list(garbage);
  return n;
}

/* Walks the valid keys from the most recent, up to max (0: all) and, when
 * block is not NULL, while they fit in `size` bytes, copying them there.
 * Returns the bytes they take; *count the keys. */
static size_t walk_keys(shd_dict_t *d, size_t max, char *block, size_t size,
                        size_t *count) {
  call_t c = {d, 0};
  size_t at = 0, n = 0;
  for (lru_t *l = d->lru.next; l != &d->lru && (max == 0 || n < max); l = l->next) {
    entry_t *e = (entry_t *)l;
    if (expired(&c, e))
      continue;
    if (block != NULL) {
      if (at + 2 + e->klen > size)
        break;
      memcpy(block + at, &e->klen, 2);
      memcpy(block + at + 2, e->data, e->klen);
    }
    at += 2 + e->klen;
    n++;
  }
  *count = n;
  return at;
}

void *shd_keys(shd_dict_t *d, size_t max, size_t *count, shd_err_t *err) {
  *err = SHD_OK;
  lock(d);
  size_t size = walk_keys(d, max, NULL, 0, count);
  unlock(d);
  if (*count == 0)
    return NULL;
  /* Keys may come meanwhile: the copy takes those that fit. */
  char *block = malloc(size);
  if (block == NULL) {
    *count = 0;
    *err = SHD_ENOMEM;
    return NULL;
  }
  lock(d);
  walk_keys(d, max, block, size, count);
  unlock(d);
  if (*count == 0) {
    free(block);
    return NULL;
  }
  return block;
}

const char *shd_keys_next(const void *block, size_t *pos, size_t *klen) {
  const char *p = (const char *)block + *pos;
  uint16_t len;
  memcpy(&len, p, 2);
  *klen = len;
  *pos += 2 + (size_t)len;
  return p + 2;
}
