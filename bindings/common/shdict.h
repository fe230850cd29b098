/* Shared dictionaries: a key-value store of fixed capacity that every
 * thread of the process may use at once (ARCHITECTURE.md "Shared
 * dictionaries"), with OpenResty's ngx.shared.DICT semantics. It knows no
 * scripting language, and reads time from the clock it is given
 * (milliseconds that never go back, >= 1), so that a test or a fuzz target
 * can drive it against a model on a virtual clock. A call reads the clock
 * at most once, and only when it makes or looks at an entry that expires.
 *
 * A dict is a hash table (a fixed number of buckets, chosen from the
 * capacity) over entries kept on an LRU list, all under one mutex. Each
 * call holds the mutex for one lookup and its change; entries are
 * allocated before it is taken and freed after it is released, so nothing
 * allocates or frees under it. Capacity counts every entry as
 * SHD_ENTRY_OVERHEAD bytes plus its key and string value; the buckets are
 * not counted.
 *
 * Expiry is lazy: an entry whose time has come reads as missing (get_stale
 * still returns it) and is freed by the next store that finds it at the
 * LRU tail (two at most per store), by a store that needs its room, or by
 * shd_flush_expired. */
#ifndef TREADLE_SHDICT_H
#define TREADLE_SHDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct shd_dict shd_dict_t;

/* Milliseconds on a clock that never goes back; always >= 1. Called
 * under the dict's mutex, from any thread. */
typedef uint64_t (*shd_clock_fn)(void);

typedef enum { SHD_NIL, SHD_BOOL, SHD_INT, SHD_NUM, SHD_STR, SHD_LIST } shd_type_t;

/* A value. Strings are bytes the caller owns: when storing, `str` points to
 * the value; when reading, shd_get copies into the caller's buffer. */
typedef struct {
  shd_type_t type;
  uint32_t flags; /* the user's flags, stored beside the value */
  union {
    bool b;
    int64_t i;
    double n;
  } u;
  const char *str;
  size_t len; /* SHD_STR: the string's length */
} shd_value_t;

typedef enum {
  SHD_OK = 0,
  SHD_ENOTFOUND,  /* "not found" */
  SHD_EEXISTS,    /* "exists" */
  SHD_ENOMEM,     /* "no memory": full (safe ops, or larger than the dict), or malloc failed */
  SHD_ENOTNUM,    /* "not a number": incr on a value that is not one */
  SHD_ECAPACITY,  /* shd_open: the name exists with another capacity */
  SHD_ENOTLIST,   /* "value not a list": a push, pop or llen on another value */
  SHD_EISLIST,    /* "value is a list": a get of a list */
} shd_err_t;

/* Store operations (ngx.shared.DICT's names). The SAFE ones never evict a
 * valid entry to make room: they fail with SHD_ENOMEM instead. */
typedef enum { SHD_SET, SHD_SAFE_SET, SHD_ADD, SHD_SAFE_ADD, SHD_REPLACE } shd_op_t;

/* What one entry costs beyond its key and string value. */
#define SHD_ENTRY_OVERHEAD 64
#define SHD_KEY_MAX 65535
/* What one list item costs beyond its string. */
#define SHD_NODE_OVERHEAD 40

/* The message of an error: "not found", "exists", "no memory", ... */
const char *shd_strerror(shd_err_t err);

/* A dict without a name, holding one reference; NULL when out of memory,
 * or capacity is 0, or clock NULL. */
shd_dict_t *shd_new(size_t capacity, shd_clock_fn clock);
/* The dict called `name`, made with `capacity` and `clock` if there is
 * none, holding a new reference. SHD_ECAPACITY if it exists with another capacity (and
 * capacity != 0; 0 means "whatever it has", and fails with SHD_ENOTFOUND
 * when there is none), SHD_ENOMEM. */
shd_err_t shd_open(const char *name, size_t capacity, shd_clock_fn clock,
                   shd_dict_t **out);
/* The dict called `name` with a new reference, or NULL. */
shd_dict_t *shd_find(const char *name);
void shd_ref(shd_dict_t *d);
/* Drops a reference; the last one frees the dict and its entries. */
void shd_unref(shd_dict_t *d);
const char *shd_name(const shd_dict_t *d); /* NULL without a name */

size_t shd_capacity(const shd_dict_t *d);
/* Bytes not in use by entries (expired ones count as in use until freed). */
size_t shd_free_space(shd_dict_t *d);
/* Entries held, expired ones included. */
size_t shd_count(shd_dict_t *d);

/* Keys are 1..SHD_KEY_MAX bytes; the callers check that. */

/* Reads `key`: SHD_OK with *out (flags included; a string is copied into
 * buf when out->len <= bufcap, else only out->len is set and the caller
 * asks again with a larger buffer), or SHD_ENOTFOUND. Expired entries are
 * found only when `stale` is not NULL (get_stale), which says whether it
 * was. A found entry becomes the most recently used. */
shd_err_t shd_get(shd_dict_t *d, const char *key, size_t klen, shd_value_t *out,
                  char *buf, size_t bufcap, bool *stale);
/* A list's items count against the capacity too; get answers SHD_EISLIST
 * for a list, incr SHD_ENOTNUM, and a store replaces it. */
/* set, safe_set, add, safe_add, replace: stores v under key, expiring
 * in ttl_ms (0: never). A SHD_NIL value removes the key (add: stores
 * nothing; replace: "not found" when missing). *forcible says whether valid
 * entries were evicted to make room. A safe op or a replace that fails
 * leaves the old value in place. */
shd_err_t shd_store(shd_dict_t *d, shd_op_t op, const char *key, size_t klen,
                    const shd_value_t *v, uint64_t ttl_ms, bool *forcible);
/* incr: adds delta (SHD_INT or SHD_NUM) to the number under key and puts
 * the sum in *out; integers stay integers unless the sum overflows. A
 * missing key is SHD_ENOTFOUND unless init (not NULL) is given: then the
 * key is stored as init + delta, expiring in init_ttl_ms (0: never),
 * evicting as set does (*forcible). The TTL of an existing key is kept. */
shd_err_t shd_incr(shd_dict_t *d, const char *key, size_t klen,
                   const shd_value_t *delta, const shd_value_t *init,
                   uint64_t init_ttl_ms, shd_value_t *out, bool *forcible);
/* The key's TTL: *ms left, 0 for one that never expires; SHD_ENOTFOUND for
 * a missing or expired key. */
shd_err_t shd_ttl(shd_dict_t *d, const char *key, size_t klen, uint64_t *ms);
/* Sets a valid key's TTL to ttl_ms from now (0: never); SHD_ENOTFOUND. */
shd_err_t shd_expire(shd_dict_t *d, const char *key, size_t klen, uint64_t ttl_ms);
/* Marks every entry expired (get_stale still finds them until freed). */
void shd_flush_all(shd_dict_t *d);
/* Frees up to max expired entries (0: all), least recently used first;
 * returns how many. */
size_t shd_flush_expired(shd_dict_t *d, size_t max);

/* lpush (left) and rpush: adds v (SHD_INT, SHD_NUM or SHD_STR) at one end
 * of the list under key, made (never expiring) when the key is missing or
 * expired; *len: its length after. Makes room as set does, but never by
 * evicting the list itself (SHD_ENOMEM). SHD_ENOTLIST for another value. */
shd_err_t shd_push(shd_dict_t *d, const char *key, size_t klen, bool left,
                   const shd_value_t *v, size_t *len);
/* lpop (left) and rpop: takes the item at one end into *out, whose string
 * lives in *item until shd_item_free(*item); the key goes with the last
 * item. SHD_ENOTFOUND (missing or expired), SHD_ENOTLIST. */
shd_err_t shd_pop(shd_dict_t *d, const char *key, size_t klen, bool left,
                  shd_value_t *out, void **item);
void shd_item_free(void *item);
/* The list's length (0 when missing or expired); SHD_ENOTLIST. */
shd_err_t shd_llen(shd_dict_t *d, const char *key, size_t klen, size_t *len);

/* The keys of valid entries, most recently used first, up to max (0:
 * all): a malloc'd block of *count keys, each a uint16_t length then its
 * bytes, to be freed by the caller; NULL with *count 0 when there are none
 * or malloc failed (*err SHD_ENOMEM). Iterate with shd_keys_next. */
void *shd_keys(shd_dict_t *d, size_t max, size_t *count, shd_err_t *err);
/* The key at *pos in such a block (its bytes, *klen), and moves *pos on. */
const char *shd_keys_next(const void *block, size_t *pos, size_t *klen);

#endif
