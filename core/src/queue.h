/* Intrusive doubly-linked circular lists with a sentinel (libuv queue.h).
 *
 * A node is embedded in its owner and recovered with treadle__container_of;
 * pushing and unlinking never allocate. An unlinked node points at itself, so
 * treadle__list_linked() tells whether it is on a list. */
#ifndef TREADLE_QUEUE_H
#define TREADLE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#define treadle__container_of(ptr, type, field) \
  ((type *)((char *)(ptr) - offsetof(type, field)))

typedef struct treadle__list_s {
  struct treadle__list_s *prev;
  struct treadle__list_s *next;
} treadle__list_t;

static inline void treadle__list_init(treadle__list_t *l) {
  l->prev = l;
  l->next = l;
}

static inline bool treadle__list_empty(const treadle__list_t *l) {
  return l->next == l;
}

static inline bool treadle__list_linked(const treadle__list_t *n) {
  return n->next != n;
}

static inline void treadle__list_push_back(treadle__list_t *l,
                                           treadle__list_t *n) {
  n->next = l;
  n->prev = l->prev;
  l->prev->next = n;
  l->prev = n;
}

static inline void treadle__list_push_front(treadle__list_t *l,
                                            treadle__list_t *n) {
  n->prev = l;
  n->next = l->next;
  l->next->prev = n;
  l->next = n;
}

static inline void treadle__list_unlink(treadle__list_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n;
  n->next = n;
}

/* Removes and returns the first node, or NULL when the list is empty. */
static inline treadle__list_t *treadle__list_pop_front(treadle__list_t *l) {
  treadle__list_t *n = l->next;
  if (n == l)
    return NULL;
  treadle__list_unlink(n);
  return n;
}

/* Moves every node of `from` to the end of `to`; `from` becomes empty. */
static inline void treadle__list_move_all(treadle__list_t *from,
                                          treadle__list_t *to) {
  if (treadle__list_empty(from))
    return;
  from->next->prev = to->prev;
  to->prev->next = from->next;
  from->prev->next = to;
  to->prev = from->prev;
  treadle__list_init(from);
}

#endif /* TREADLE_QUEUE_H */
