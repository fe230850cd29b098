/* The receive buffer and the line pattern (recvbuf.h). */
#include <stdlib.h>
#include <string.h>

#include "recvbuf.h"

void tb_rbuf_free(tb_rbuf_t *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

char *tb_rbuf_room(tb_rbuf_t *b, size_t want, size_t *room) {
  size_t len = tb_rbuf_len(b);
  if (b->cap - b->end < want && b->start > 0) { /* slide to the front */
    memmove(b->p, b->p + b->start, len);
    b->start = 0;
    b->end = len;
  }
  if (b->cap - b->end < want) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - len < want) {
      if (cap > ((size_t)-1) / 2)
        return NULL;
      cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL)
      return NULL;
    b->p = p;
    b->cap = cap;
  }
  *room = b->cap - b->end;
  return b->p + b->end;
}

void tb_rbuf_commit(tb_rbuf_t *b, size_t n) { b->end += n; }

void tb_rbuf_consume(tb_rbuf_t *b, size_t n) {
  b->start += n;
  if (b->start != b->end)
    return;
  b->start = b->end = 0; /* empty: the next read starts at the front */
  if (b->cap > TB_RBUF_KEEP) /* a big body came through: give it back */
    tb_rbuf_free(b);
}

bool tb_recv_line(const char *p, size_t len, size_t *used) {
  const char *lf = len > 0 ? memchr(p, '\n', len) : NULL;
  if (lf == NULL)
    return false;
  *used = (size_t)(lf - p) + 1;
  return true;
}

size_t tb_strip_cr(char *dst, const char *src, size_t n) {
  size_t out = 0;
  for (size_t i = 0; i < n; i++)
    if (src[i] != '\r')
      dst[out++] = src[i];
  return out;
}
