/* libFuzzer target: the cosocket receive patterns and receiveuntil's
 * iterator (bindings/common/recvbuf.c and until.c; docs/TESTING.md
 * "Fuzzing").
 *
 * The splitting lives in the common C layer: the buffer (tb_rbuf_*), the
 * line pattern (tb_recv_line, tb_strip_cr) and one step of receiveuntil's
 * iterator (tb_until_step, which keeps its state across reads in a scan
 * offset). ltreadle_cosock.c adds only the Lua values and the reads, so
 * this target drives the C layer as the cosocket does: a read appends the
 * next chunk of the stream to the buffer, the end of the chunks is the
 * peer's close.
 *
 * The input: a header (an alphabet, so that delimiters, CR and LF come up
 * often; two receiveuntil readers, each a pattern of 1-6 bytes and the
 * inclusive option), a program of up to 24 calls (reader 0 or 1 with a
 * size or none, "*l", a count, receiveany(max), "*a"), then the stream as
 * chunks of fuzz-chosen lengths. The same program runs on a plain
 * reference that knows the whole stream and which chunks were read, and
 * searches naively: every call must give the same value (data, nil, or
 * "closed" with the same partial bytes), and after each both must have
 * consumed and read the same number of bytes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recvbuf.h"

#define MAX_OPS 24
#define MAX_CHUNKS 4096
#define STREAM_MAX 8192

static void check(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_until: %s\n", what);
    abort();
  }
}

enum { OP_READER0, OP_READER1, OP_LINE, OP_COUNT, OP_ANY, OP_ALL, OP_KINDS };

typedef struct {
  uint8_t kind;
  size_t arg; /* reader: size (0: none); count: n; any: max */
} op_t;

typedef struct {
  char pat[6];
  size_t plen;
  bool inclusive;
} pattern_t;

/* A call's value: data, nil, or nil, "closed", partial. */
enum { R_DATA, R_NIL, R_CLOSED };
typedef struct {
  int kind;
  char *bytes; /* data or partial (malloc'd; NULL for nil) */
  size_t len;
} result_t;

typedef struct {
  pattern_t readers[2];
  op_t ops[MAX_OPS];
  size_t nops;
  char stream[STREAM_MAX];
  size_t len;
  size_t chunk_end[MAX_CHUNKS]; /* where each chunk ends in the stream */
  size_t nchunks;
} program_t;

static result_t result(int kind, const char *p, size_t n) {
  result_t r = {kind, NULL, n};
  if (kind != R_NIL) {
    r.bytes = malloc(n + 1);
    check(r.bytes != NULL, "out of memory");
    memcpy(r.bytes, p, n);
  }
  return r;
}

/* ------------------------------------------------------ the real code */

typedef struct {
  const program_t *prog;
  tb_rbuf_t buf;
  uint64_t consumed; /* bytes handed out or dropped, as lconn_t's */
  size_t chunks_read;
  uint64_t scan[2]; /* the readers' state (upvalues UV_SCAN, UV_ENDED) */
  bool ended[2];
} conn_t;

static void take(conn_t *c, size_t n) {
  tb_rbuf_consume(&c->buf, n);
  c->consumed += n;
}

/* Takes n bytes as a value of this kind. */
static result_t give(conn_t *c, int kind, size_t n) {
  result_t r = result(kind, tb_rbuf_data(&c->buf), n);
  take(c, n);
  return r;
}

/* A read: the next chunk, as read_more gets it; false at the end. */
static bool read_more(conn_t *c) {
  const program_t *p = c->prog;
  if (c->chunks_read == p->nchunks)
    return false;
  size_t at = c->chunks_read ? p->chunk_end[c->chunks_read - 1] : 0;
  size_t n = p->chunk_end[c->chunks_read] - at, room;
  char *dst = tb_rbuf_room(&c->buf, 4096, &room); /* READ_ROOM */
  check(dst != NULL && room >= n, "tb_rbuf_room");
  memcpy(dst, p->stream + at, n);
  tb_rbuf_commit(&c->buf, n);
  c->chunks_read++;
  return true;
}

/* The stream ended before the pattern was met: "closed" and the rest. */
static result_t closed(conn_t *c) {
  return give(c, R_CLOSED, tb_rbuf_len(&c->buf));
}

static result_t real_call(conn_t *c, const op_t *op) {
  for (;;) {
    const char *p = tb_rbuf_data(&c->buf);
    size_t len = tb_rbuf_len(&c->buf), used;
    switch (op->kind) {
    case OP_READER0:
    case OP_READER1: { /* until_iter, until_loop */
      int i = op->kind - OP_READER0;
      const pattern_t *pat = &c->prog->readers[i];
      if (c->ended[i]) {
        c->ended[i] = false;
        return result(R_NIL, NULL, 0);
      }
      tb_until_step_t s = tb_until_step(p, len, pat->pat, pat->plen, pat->inclusive,
                                        op->arg, c->consumed, &c->scan[i]);
      if (!s.more) {
        c->ended[i] = s.ended;
        result_t r = s.nil ? result(R_NIL, NULL, 0) : give(c, R_DATA, s.give);
        take(c, s.skip);
        return r;
      }
      break;
    }
    case OP_LINE: /* pattern_met's PAT_LINE */
      if (tb_recv_line(p, len, &used)) {
        result_t r = result(R_DATA, p, used - 1);
        r.len = tb_strip_cr(r.bytes, r.bytes, used - 1);
        take(c, used);
        return r;
      }
      break;
    case OP_COUNT:
      if (op->arg == 0)
        return result(R_DATA, "", 0);
      if (len >= op->arg)
        return give(c, R_DATA, op->arg);
      break;
    case OP_ANY:
      if (len > 0)
        return give(c, R_DATA, len < op->arg ? len : op->arg);
      break;
    default: /* "*a": the rest, once the stream ended */
      break;
    }
    if (!read_more(c))
      return op->kind == OP_ALL ? give(c, R_DATA, len) : closed(c);
  }
}

/* ---------------------------------------------------- the reference */

typedef struct {
  const program_t *prog;
  size_t pos;   /* stream offset of the next byte to hand out */
  size_t avail; /* bytes read so far (whole chunks) */
  size_t chunks_read;
  bool ended[2];
} ref_t;

static bool ref_read(ref_t *r) {
  if (r->chunks_read == r->prog->nchunks)
    return false;
  r->avail = r->prog->chunk_end[r->chunks_read++];
  return true;
}

/* Reads until `want` bytes were read, or the end. */
static void ref_read_to(ref_t *r, size_t want) {
  while (r->avail < want && ref_read(r)) {
  }
}

static result_t ref_take(ref_t *r, int kind, size_t n) {
  result_t res = result(kind, r->prog->stream + r->pos, n);
  r->pos += n;
  return res;
}

static result_t ref_closed(ref_t *r) {
  ref_read_to(r, r->prog->len);
  return ref_take(r, R_CLOSED, r->prog->len - r->pos);
}

/* The first match of pat in the whole stream at or after pos, or SIZE_MAX. */
static size_t naive_find(const program_t *p, size_t pos, const pattern_t *pat) {
  for (size_t i = pos; i + pat->plen <= p->len; i++)
    if (memcmp(p->stream + i, pat->pat, pat->plen) == 0)
      return i;
  return SIZE_MAX;
}

static result_t ref_reader(ref_t *r, int i, size_t size) {
  const program_t *p = r->prog;
  const pattern_t *pat = &p->readers[i];
  if (r->ended[i]) {
    r->ended[i] = false;
    return result(R_NIL, NULL, 0);
  }
  size_t m = naive_find(p, r->pos, pat);
  if (size == 0) { /* the whole part, once its delimiter was read */
    if (m == SIZE_MAX)
      return ref_closed(r);
    ref_read_to(r, m + pat->plen);
    result_t res = ref_take(r, R_DATA, m - r->pos + (pat->inclusive ? pat->plen : 0));
    r->pos = m + pat->plen;
    return res;
  }
  for (;;) {
    if (m != SIZE_MAX && m + pat->plen <= r->avail) { /* the delimiter was read */
      if (m > r->pos)
        return ref_take(r, R_DATA, m - r->pos < size ? m - r->pos : size);
      if (pat->inclusive) {
        r->ended[i] = true;
        return ref_take(r, R_DATA, pat->plen);
      }
      r->pos += pat->plen;
      return result(R_NIL, NULL, 0);
    }
    /* The bytes read that cannot begin the delimiter: up to the first
     * whose rest of what was read is a beginning of it. */
    size_t safe = r->pos;
    while (safe < r->avail &&
           !(r->avail - safe < pat->plen &&
             memcmp(p->stream + safe, pat->pat, r->avail - safe) == 0))
      safe++;
    if (safe > r->pos)
      return ref_take(r, R_DATA, safe - r->pos < size ? safe - r->pos : size);
    if (!ref_read(r))
      return ref_closed(r);
  }
}

static result_t ref_call(ref_t *r, const op_t *op) {
  const program_t *p = r->prog;
  switch (op->kind) {
  case OP_READER0:
  case OP_READER1:
    return ref_reader(r, op->kind - OP_READER0, op->arg);
  case OP_LINE: {
    const char *nl = memchr(p->stream + r->pos, '\n', p->len - r->pos);
    if (nl == NULL)
      return ref_closed(r);
    size_t end = (size_t)(nl - p->stream);
    ref_read_to(r, end + 1);
    char line[STREAM_MAX];
    size_t n = 0;
    for (size_t i = r->pos; i < end; i++)
      if (p->stream[i] != '\r')
        line[n++] = p->stream[i];
    r->pos = end + 1;
    return result(R_DATA, line, n);
  }
  case OP_COUNT:
    if (op->arg == 0)
      return result(R_DATA, "", 0);
    if (r->pos + op->arg > p->len)
      return ref_closed(r);
    ref_read_to(r, r->pos + op->arg);
    return ref_take(r, R_DATA, op->arg);
  case OP_ANY:
    if (r->avail == r->pos && !ref_read(r))
      return ref_closed(r);
    return ref_take(r, R_DATA, r->avail - r->pos < op->arg ? r->avail - r->pos : op->arg);
  default:
    ref_read_to(r, p->len);
    return ref_take(r, R_DATA, p->len - r->pos);
  }
}

/* ------------------------------------------------------------- input */

typedef struct {
  const uint8_t *p;
  size_t n;
} input_t;

static uint8_t take_byte(input_t *in) {
  if (in->n == 0)
    return 0;
  in->n--;
  return *in->p++;
}

/* Small alphabets make matches, overlaps and partial delimiters common;
 * 0 keeps the bytes as they are. */
static char map_byte(unsigned alphabet, uint8_t b) {
  static const char letters[] = "a\nb\r-xyz";
  return alphabet == 0 ? (char)b : letters[b % alphabet];
}

static void parse(program_t *prog, input_t *in) {
  unsigned alphabet = take_byte(in) % 9;
  for (int i = 0; i < 2; i++) {
    uint8_t b = take_byte(in);
    pattern_t *pat = &prog->readers[i];
    pat->plen = 1 + b % 6;
    pat->inclusive = b & 0x80;
    for (size_t k = 0; k < pat->plen; k++)
      pat->pat[k] = map_byte(alphabet, take_byte(in));
  }
  prog->nops = take_byte(in) % (MAX_OPS + 1);
  for (size_t i = 0; i < prog->nops; i++) {
    op_t *op = &prog->ops[i];
    op->kind = take_byte(in) % OP_KINDS;
    uint8_t arg = take_byte(in);
    if (op->kind <= OP_READER1)
      op->arg = arg % 9; /* a size, or none */
    else if (op->kind == OP_ANY)
      op->arg = 1 + arg % 16;
    else
      op->arg = arg % 24;
  }
  /* The chunks: a length byte (1-64, or 65-1024 for a big one), then its
   * bytes; the last may be short. */
  while (in->n > 0 && prog->nchunks < MAX_CHUNKS) {
    uint8_t b = take_byte(in);
    size_t n = b < 0xf0 ? 1 + (size_t)b % 64 : 65 + (size_t)(b - 0xf0) * 60;
    for (size_t k = 0; k < n && in->n > 0 && prog->len < STREAM_MAX; k++)
      prog->stream[prog->len++] = map_byte(alphabet, take_byte(in));
    size_t start = prog->nchunks ? prog->chunk_end[prog->nchunks - 1] : 0;
    if (prog->len > start) /* a read of 0 bytes would be the end */
      prog->chunk_end[prog->nchunks++] = prog->len;
  }
}

static const char *kind_name(int kind) {
  return kind == R_DATA ? "data" : kind == R_NIL ? "nil" : "closed";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static program_t prog;
  memset(&prog, 0, offsetof(program_t, stream));
  prog.len = prog.nchunks = 0;
  input_t in = {data, size};
  parse(&prog, &in);
  conn_t c = {.prog = &prog};
  ref_t r = {.prog = &prog};
  for (size_t i = 0; i < prog.nops; i++) {
    result_t got = real_call(&c, &prog.ops[i]);
    result_t want = ref_call(&r, &prog.ops[i]);
    if (got.kind != want.kind || got.len != want.len ||
        (got.len > 0 && memcmp(got.bytes, want.bytes, got.len) != 0)) {
      fprintf(stderr, "call %zu (kind %d, arg %zu): got %s %zu bytes, want %s %zu\n", i,
              prog.ops[i].kind, prog.ops[i].arg, kind_name(got.kind), got.len,
              kind_name(want.kind), want.len);
      check(false, "the call's value differs from the reference's");
    }
    free(got.bytes);
    free(want.bytes);
    check(c.consumed == r.pos, "consumed a different number of bytes");
    check(c.chunks_read == r.chunks_read, "read a different number of chunks");
    check(c.consumed + tb_rbuf_len(&c.buf) == r.avail, "buffered bytes lost");
    /* "closed" closes the connection; "*a" read to the end. */
    if (got.kind == R_CLOSED || prog.ops[i].kind == OP_ALL)
      break;
  }
  tb_rbuf_free(&c.buf);
  return 0;
}
