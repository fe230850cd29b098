/* Runs the command given on the command line and streams its stdout line
 * by line as it comes, each line stamped with the milliseconds since the
 * start, then waits for it and prints how it ended:
 *
 *   process_pipe sh -c 'for i in 1 2 3; do echo line $i; sleep 0.2; done'
 *
 * The child's stdout is a pipe read through the runtime's I/O driver (an
 * async fd); its stdin and stderr are this program's. The exit status is
 * the child's: its exit code, or 128 + the signal that killed it. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <treadle.h>

typedef struct {
  treadle_child_t *child;
  treadle_async_fd_t *out;
  uint64_t start;
  size_t used; /* bytes of a line not finished yet, at the start of buf */
  bool eof;
  char buf[64 * 1024];
} stream_t;

static void print_line(stream_t *s, const char *line, size_t len) {
  uint64_t ms = (treadle_now() - s->start) / TREADLE_NSEC_PER_MSEC;
  printf("[%5llu ms] %.*s\n", (unsigned long long)ms, (int)len, line);
}

static treadle_poll_t stream(treadle_cx_t *cx, void *state) {
  stream_t *s = state;
  while (!s->eof) {
    size_t n;
    treadle_err_t err;
    if (treadle_async_fd_read_poll(s->out, cx, s->buf + s->used,
                                   sizeof s->buf - s->used, &n,
                                   &err) == TREADLE_PENDING)
      return TREADLE_PENDING; /* nothing new yet: wait for the pipe */
    if (err != 0) {
      fprintf(stderr, "process_pipe: read: %s\n", treadle_strerror(err));
      n = 0;
    }
    if (n == 0) { /* end of file: the child closed its stdout */
      if (s->used > 0)
        print_line(s, s->buf, s->used); /* a last line without '\n' */
      s->eof = true;
      break;
    }
    s->used += n;
    char *line = s->buf, *nl;
    while ((nl = memchr(line, '\n', (size_t)(s->buf + s->used - line)))) {
      print_line(s, line, (size_t)(nl - line));
      line = nl + 1;
    }
    s->used -= (size_t)(line - s->buf);
    memmove(s->buf, line, s->used);
    if (s->used == sizeof s->buf) { /* a longer line comes in pieces */
      print_line(s, s->buf, s->used);
      s->used = 0;
    }
  }
  treadle_exit_status_t status;
  treadle_err_t err;
  if (treadle_child_wait_poll(s->child, cx, &status, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  int code = 1;
  if (err != 0) {
    fprintf(stderr, "process_pipe: wait: %s\n", treadle_strerror(err));
  } else if (status.exited) {
    printf("pid %d exited with code %d\n", (int)treadle_child_pid(s->child),
           status.code);
    code = status.code;
  } else {
    const char *name = treadle_signal_name(status.signal);
    printf("pid %d killed by signal %s (%d)%s\n",
           (int)treadle_child_pid(s->child), name != NULL ? name : "?",
           status.signal, status.core_dumped ? ", core dumped" : "");
    code = 128 + status.signal;
  }
  treadle_cx_set_output(cx, 0, (void *)(intptr_t)code);
  return TREADLE_READY;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: process_pipe PROGRAM [ARG...]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0); /* each line leaves at once */
  treadle_runtime_t *rt;
  treadle_command_t *cmd = NULL;
  treadle_err_t err = treadle_runtime_new_current_thread(&rt);
  if (err != 0) {
    fprintf(stderr, "process_pipe: runtime: %s\n", treadle_strerror(err));
    return 1;
  }
  err = treadle_command_new(argv[1], &cmd);
  for (int i = 2; err == 0 && i < argc; i++)
    err = treadle_command_arg(cmd, argv[i]);
  if (err == 0)
    err = treadle_command_stdout(cmd, TREADLE_STDIO_PIPE);
  static stream_t s; /* 64 KiB: block_on copies it into the task */
  if (err == 0)
    err = treadle_command_spawn(cmd, treadle_runtime_handle(rt), &s.child);
  treadle_command_free(cmd);
  void *code = (void *)(intptr_t)1;
  if (err == 0) {
    s.out = treadle_child_take_stdout(s.child);
    s.start = treadle_now();
    static const treadle_task_vtable_t vt = {.poll = stream};
    err = treadle_runtime_block_on(rt, &vt, &s, sizeof s, &code);
    treadle_async_fd_free(s.out);
    treadle_child_free(s.child); /* reaped by its wait: nothing left */
  }
  if (err != 0)
    fprintf(stderr, "process_pipe: %s: %s\n", argv[1], treadle_strerror(err));
  treadle_runtime_free(rt);
  return (int)(intptr_t)code;
}
