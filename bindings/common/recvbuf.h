/* A receive buffer and the receive patterns of OpenResty's cosockets
 * (ngx.socket.tcp's receive and receiveuntil), in plain C: no Lua, no
 * treadle, no I/O, so that a fuzz target can drive them directly.
 *
 * recvbuf.c  the buffer (bytes read but not yet handed out) and the line
 *            and byte-count patterns
 * until.c    receiveuntil's splitter: where a delimiter starts in the
 *            bytes seen so far, how many of them cannot begin it, and
 *            what one call of the iterator hands out (tests/fuzz/
 *            fuzz_until.c drives it against a plain splitter) */
#include <stdint.h>
#ifndef TB_RECVBUF_H
#define TB_RECVBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes received and not yet consumed: p[start, end), room up to cap. */
typedef struct tb_rbuf_s {
  char *p;
  size_t start, end, cap;
} tb_rbuf_t;

/* An empty buffer keeps at most this much room (a bigger one is freed
 * once empty), so a connection that read one big body does not hold it. */
#define TB_RBUF_KEEP 65536

/* An empty buffer needs no init beyond zeroing. Frees the bytes. */
void tb_rbuf_free(tb_rbuf_t *b);
static inline size_t tb_rbuf_len(const tb_rbuf_t *b) { return b->end - b->start; }
static inline const char *tb_rbuf_data(const tb_rbuf_t *b) {
  return b->p != NULL ? b->p + b->start : ""; /* never NULL, for memchr */
}
/* Room for at least `want` more bytes at the end (moving the unconsumed
 * bytes to the front, or growing): the place to read into, its size in
 * *room; NULL when out of memory. The pointer is valid until the next
 * tb_rbuf_room. */
char *tb_rbuf_room(tb_rbuf_t *b, size_t want, size_t *room);
/* `n` bytes were written at what tb_rbuf_room returned. */
void tb_rbuf_commit(tb_rbuf_t *b, size_t n);
/* Drops the first n bytes (n <= tb_rbuf_len). */
void tb_rbuf_consume(tb_rbuf_t *b, size_t n);

/* The "*l" pattern: whether the bytes hold a whole line (ended by LF);
 * then *used is its length with the LF. */
bool tb_recv_line(const char *p, size_t len, size_t *used);
/* Copies src to dst without its CR bytes, which "*l" ignores (as
 * luasocket and OpenResty do); returns how many were copied. dst may be
 * src. */
size_t tb_strip_cr(char *dst, const char *src, size_t n);

/* receiveuntil's splitter. Looks for pat (plen >= 1) in p[0, len),
 * starting at `from` (bytes before it are known not to begin a match).
 * Returns the offset of the first match, or len when there is none; then
 * *safe is how many leading bytes cannot begin a match however the
 * stream goes on (len - (plen - 1) at least, more where the tail cannot
 * begin the pattern), the next call's `from`. */
size_t tb_until_find(const char *p, size_t len, const char *pat, size_t plen,
                     size_t from, size_t *safe);

/* What one call of receiveuntil's iterator, reader([size]), does with the
 * buffered bytes. */
typedef struct {
  bool more;   /* nothing to hand out yet: read more, then step again */
  bool nil;    /* return nil: the part ended (give is 0) */
  bool ended;  /* the next call returns nil without reading (inclusive,
                  with a size: the delimiter was this piece) */
  size_t give; /* else hand out p[0, give) */
  size_t skip; /* then drop this many more bytes: the delimiter */
} tb_until_step_t;

/* One step of the iterator over p[0, len), the buffered bytes, which
 * begin at stream offset `consumed`; size is reader's argument (0: none),
 * inclusive its option. *scan is the iterator's state across calls (0 at
 * first): the stream offset its next search may start from. Without a
 * size a part is handed out whole once its delimiter is here; with one,
 * at most size bytes that cannot begin the delimiter, then nil. */
tb_until_step_t tb_until_step(const char *p, size_t len, const char *pat,
                              size_t plen, bool inclusive, size_t size,
                              uint64_t consumed, uint64_t *scan);

#endif
