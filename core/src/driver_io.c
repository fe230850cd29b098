/* The I/O driver: epoll (edge-triggered), a registration table, and an
 * eventfd that unparks it (ARCHITECTURE.md "I/O driver"; tokio's io/driver.rs
 * and scheduled_io.rs).
 *
 * Every registered fd owns a slot of a grow-only table. Its epoll token is
 * the slot index with the slot's generation above it; releasing a slot
 * bumps the generation, so an event still in flight for a closed (and
 * perhaps reused) fd finds a different generation and is dropped instead of
 * waking the slot's next owner.
 *
 * A slot keeps readiness bits and a tick (a count of events) in one atomic
 * word, and one reader and one writer waker under a spin lock. A task that
 * got EAGAIN clears the bit only if no event came after it read the word
 * (the tick is unchanged), so an edge that arrives between the system call
 * and the clear is never lost (tokio's ClearReadiness).
 *
 * The eventfd is registered edge-triggered; every write makes a new edge,
 * so it is read (reset) only when it fired. epoll_pwait2 gives the park a
 * nanosecond timeout, so timers are not rounded to the next millisecond
 * twice; kernels without it fall back to epoll_wait, rounding up. EINTR is
 * never surfaced: an interrupted wait returns as if unparked. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "io.h"

#define EVENTS 1024 /* as mio/tokio: one park takes a large batch */
#define TOKEN_UNPARK UINT64_MAX
#define NO_SLOT UINT32_MAX

#define BITS(word) ((unsigned)((word) & 0xffffu))
#define TICK(word) ((uint32_t)(((word) >> 16) & 0xffffu))

/* --------------------------------------------------------------- slots */

static void reg_lock(treadle__io_reg_t *r) {
  unsigned spins = 0;
  /* acquire: pairs with reg_unlock's release. */
  while (atomic_exchange_explicit(&r->lock, 1, memory_order_acquire)) {
    while (atomic_load_explicit(&r->lock, memory_order_relaxed)) {
      if (++spins > 64)
        sched_yield(); /* the holder may be preempted (or under valgrind) */
      else
        treadle__cpu_relax();
    }
  }
}

static void reg_unlock(treadle__io_reg_t *r) {
  /* release: publishes the wakers and generation written under the lock. */
  atomic_store_explicit(&r->lock, 0, memory_order_release);
}

static treadle__io_reg_t *slot_at(treadle__io_t *io, uint32_t index) {
  uint32_t page = index >> TREADLE__IO_PAGE_SHIFT;
  if (page >= TREADLE__IO_PAGES)
    return NULL;
  /* acquire: the page's slots were initialised before it was published. */
  treadle__io_reg_t *p =
      atomic_load_explicit(&io->pages[page], memory_order_acquire);
  return p != NULL ? &p[index & (TREADLE__IO_PAGE_SLOTS - 1)] : NULL;
}

/* Under io->mu: a free slot, or NULL when out of memory or slots. */
static treadle__io_reg_t *slot_alloc(treadle__io_t *io) {
  if (io->free_head != NO_SLOT) {
    treadle__io_reg_t *r = slot_at(io, io->free_head);
    io->free_head = r->next_free;
    return r;
  }
  uint32_t index = io->slots;
  uint32_t page = index >> TREADLE__IO_PAGE_SHIFT;
  if (page >= TREADLE__IO_PAGES)
    return NULL;
  if ((index & (TREADLE__IO_PAGE_SLOTS - 1)) == 0) {
    treadle__io_reg_t *p = treadle__aligned_calloc(
        64, TREADLE__IO_PAGE_SLOTS * sizeof(treadle__io_reg_t));
    if (p == NULL)
      return NULL;
    for (uint32_t i = 0; i < TREADLE__IO_PAGE_SLOTS; i++)
      p[i].index = index + i;
    /* release: pairs with slot_at's acquire. */
    atomic_store_explicit(&io->pages[page], p, memory_order_release);
  }
  io->slots++;
  return slot_at(io, index);
}

static uint64_t token_of(treadle__io_reg_t *r) {
  return (uint64_t)r->generation << 32 | r->index;
}

/* Sets `bits` (and ticks) in the word under the slot's lock, and takes
 * the wakers that the new bits concern. */
static void reg_set(treadle__io_reg_t *r, unsigned bits,
                    treadle_waker_t **reader, treadle_waker_t **writer) {
  uint64_t cur = atomic_load_explicit(&r->readiness, memory_order_relaxed);
  uint64_t next = (uint64_t)(BITS(cur) | bits) |
                  (uint64_t)((TICK(cur) + 1) & 0xffffu) << 16;
  /* release: a task that sees the bits also sees what the event is about
   * (plain data is not involved; the slot lock orders the wakers). */
  atomic_store_explicit(&r->readiness, next, memory_order_release);
  *reader = *writer = NULL;
  if (bits & TREADLE__IO_READ_INTEREST) {
    *reader = r->reader;
    r->reader = NULL;
  }
  if (bits & TREADLE__IO_WRITE_INTEREST) {
    *writer = r->writer;
    r->writer = NULL;
  }
}

static void wake_both(treadle_waker_t *reader, treadle_waker_t *writer) {
  if (reader != NULL)
    treadle_wake(reader);
  if (writer != NULL)
    treadle_wake(writer);
}

static void dispatch(treadle__io_t *io, uint64_t token, uint32_t events) {
  treadle__io_reg_t *r = slot_at(io, (uint32_t)token);
  if (r == NULL)
    return;
  unsigned bits = 0;
  if (events & EPOLLIN)
    bits |= TREADLE__IO_READABLE;
  if (events & EPOLLOUT)
    bits |= TREADLE__IO_WRITABLE;
  if (events & EPOLLRDHUP)
    bits |= TREADLE__IO_READ_CLOSED;
  if (events & EPOLLHUP)
    bits |= TREADLE__IO_READ_CLOSED | TREADLE__IO_WRITE_CLOSED;
  if (events & EPOLLERR)
    bits |= TREADLE__IO_ERROR;
  treadle_waker_t *reader, *writer;
  reg_lock(r);
  if (r->generation != (uint32_t)(token >> 32)) {
    reg_unlock(r); /* the fd was closed since: not this owner's event */
    return;
  }
  reg_set(r, bits, &reader, &writer);
  reg_unlock(r);
  wake_both(reader, writer);
}

/* -------------------------------------------------------------- driver */

treadle_err_t treadle__io_init(treadle__io_t *io) {
  treadle__os_mutex_init(&io->mu);
  io->free_head = NO_SLOT;
  io->evfd = -1;
  io->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (io->epfd < 0)
    return -errno;
  io->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLET,
                           .data.u64 = TOKEN_UNPARK};
  if (io->evfd < 0 || epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->evfd, &ev) < 0) {
    treadle_err_t err = -errno;
    if (io->evfd >= 0)
      close(io->evfd);
    close(io->epfd);
    io->evfd = io->epfd = -1;
    return err;
  }
  return 0;
}

static int wait_events(treadle__io_t *io, struct epoll_event *events,
                       uint64_t timeout_ns) {
  static _Atomic bool no_pwait2;
  if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
    struct timespec ts = {
        .tv_sec = (time_t)(timeout_ns / TREADLE_NSEC_PER_SEC),
        .tv_nsec = (long)(timeout_ns % TREADLE_NSEC_PER_SEC),
    };
    int n = epoll_pwait2(io->epfd, events, EVENTS,
                         timeout_ns == TREADLE_FOREVER ? NULL : &ts, NULL);
    if (n >= 0 || errno != ENOSYS)
      return n;
    /* Relaxed: a cached capability; racing threads both fall back. */
    atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
  }
  int ms;
  if (timeout_ns == TREADLE_FOREVER)
    ms = -1;
  else if (timeout_ns >= (uint64_t)INT32_MAX * TREADLE_NSEC_PER_MSEC)
    ms = INT32_MAX;
  else
    ms = (int)((timeout_ns + TREADLE_NSEC_PER_MSEC - 1) /
               TREADLE_NSEC_PER_MSEC);
  return epoll_wait(io->epfd, events, EVENTS, ms);
}

void treadle__io_park(treadle__io_t *io, uint64_t timeout_ns) {
  struct epoll_event events[EVENTS];
  /* Only the driver's owner parks, and io->epfd changes only at shutdown,
   * after every parker is gone. */
  int n = wait_events(io, events, timeout_ns);
  for (int i = 0; i < n; i++) {
    uint64_t token = events[i].data.u64;
    if (token == TOKEN_UNPARK) {
      uint64_t count;
      /* Resets the counter; EAGAIN (already reset) is harmless. */
      ssize_t r = read(io->evfd, &count, sizeof count);
      (void)r;
    } else {
      dispatch(io, token, events[i].events);
    }
  }
}

void treadle__eventfd_add(int fd) {
  uint64_t one = 1;
  while (write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void treadle__io_unpark(treadle__io_t *io) { treadle__eventfd_add(io->evfd); }

void treadle__io_shutdown(treadle__io_t *io) {
  treadle__os_mutex_lock(&io->mu);
  io->shut = true;
  uint32_t slots = io->slots;
  if (io->evfd >= 0)
    close(io->evfd);
  if (io->epfd >= 0)
    close(io->epfd);
  io->evfd = io->epfd = -1;
  treadle__os_mutex_unlock(&io->mu);
  /* Sources that outlive the runtime see GONE; their waiters wake. */
  for (uint32_t i = 0; i < slots; i++) {
    treadle__io_reg_t *r = slot_at(io, i);
    treadle_waker_t *reader, *writer;
    reg_lock(r);
    reg_set(r, TREADLE__IO_GONE, &reader, &writer);
    reg_unlock(r);
    wake_both(reader, writer);
  }
}

void treadle__io_destroy(treadle__io_t *io) {
  for (uint32_t p = 0; p < TREADLE__IO_PAGES; p++) {
    treadle__io_reg_t *page =
        atomic_load_explicit(&io->pages[p], memory_order_relaxed);
    if (page == NULL)
      break;
    for (uint32_t i = 0; i < TREADLE__IO_PAGE_SLOTS; i++) {
      treadle_waker_drop(page[i].reader);
      treadle_waker_drop(page[i].writer);
    }
    treadle__free(page);
  }
  treadle__os_mutex_destroy(&io->mu);
}

/* ------------------------------------------------------------- sources */

treadle_err_t treadle__source_open(treadle__source_t *src, treadle_handle_t *h,
                                   int fd) {
  if (treadle__forked(h))
    return TREADLE_EFORKED;
  if (!h->driver.has_io)
    return TREADLE_ENOIO;
  treadle__io_t *io = &h->driver.io;
  treadle_err_t err = 0;
  treadle__os_mutex_lock(&io->mu);
  treadle__io_reg_t *r = io->shut ? NULL : slot_alloc(io);
  if (r == NULL) {
    err = io->shut ? TREADLE_ESHUTDOWN : TREADLE_ENOMEM;
  } else {
    reg_lock(r);
    /* Relaxed: the slot is not registered yet; nobody else reads it. */
    atomic_store_explicit(&r->readiness, 0, memory_order_relaxed);
    uint64_t token = token_of(r);
    reg_unlock(r);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP |
                                       EPOLLET,
                             .data.u64 = token};
    if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
      err = -errno;
      r->next_free = io->free_head;
      io->free_head = r->index;
    }
  }
  treadle__os_mutex_unlock(&io->mu);
  if (err != 0)
    return err;
  src->fd = fd;
  atomic_init(&src->users, 0);
  src->keep_fd = false;
  src->reg = r;
  src->h = treadle_handle_ref(h);
  return 0;
}

/* The fd's last user is gone: deregister, close (unless detached), give
 * the slot back. */
static void source_finish_close(treadle__source_t *src) {
  treadle__io_t *io = &src->h->driver.io;
  treadle__io_reg_t *r = src->reg;
  treadle__os_mutex_lock(&io->mu);
  if (io->epfd >= 0)
    epoll_ctl(io->epfd, EPOLL_CTL_DEL, src->fd, NULL);
  if (!src->keep_fd)
    close(src->fd);
  src->fd = -1;
  treadle_waker_t *reader, *writer;
  reg_lock(r);
  r->generation++; /* events still in flight for this fd are dropped */
  reader = r->reader;
  writer = r->writer;
  r->reader = r->writer = NULL;
  reg_unlock(r);
  r->next_free = io->free_head;
  io->free_head = r->index;
  treadle__os_mutex_unlock(&io->mu);
  treadle_waker_drop(reader);
  treadle_waker_drop(writer);
}

void treadle__source_try_finish(treadle__source_t *src, uint32_t now) {
  /* acq_rel: the winner closes the fd after every user's system call. */
  if (atomic_compare_exchange_strong_explicit(
          &src->users, &now, now | TREADLE__SRC_FINISHED,
          memory_order_acq_rel, memory_order_relaxed))
    source_finish_close(src);
}

/* In a forked child: closes the child's copy of the fd once and touches
 * nothing it shares with the parent (the epoll set, the slot, its lock). */
static void source_close_in_child(treadle__source_t *src) {
  /* Relaxed: the child has one thread; users still counted in are the
   * parent's threads, which the child does not have. */
  uint32_t old = atomic_fetch_or_explicit(
      &src->users, TREADLE__SRC_CLOSED | TREADLE__SRC_FINISHED,
      memory_order_relaxed);
  if (!(old & TREADLE__SRC_FINISHED) && !src->keep_fd)
    close(src->fd);
}

void treadle__source_close(treadle__source_t *src) {
  if (src->reg == NULL)
    return;
  if (treadle__forked(src->h)) {
    source_close_in_child(src);
    return;
  }
  /* acq_rel: orders against enter/leave (see there). */
  uint32_t old = atomic_fetch_or_explicit(&src->users, TREADLE__SRC_CLOSED,
                                          memory_order_acq_rel);
  if (old & TREADLE__SRC_CLOSED)
    return;
  treadle__io_reg_t *r = src->reg;
  treadle_waker_t *reader, *writer;
  reg_lock(r);
  reg_set(r, TREADLE__IO_CLOSED, &reader, &writer);
  reg_unlock(r);
  wake_both(reader, writer);
  if (old == 0)
    treadle__source_try_finish(src, TREADLE__SRC_CLOSED);
}

int treadle__source_detach(treadle__source_t *src) {
  /* Relaxed: a close that came before this call is seen (its caller
   * ordered the two); one racing with it is the caller's error. */
  if (src->reg == NULL ||
      atomic_load_explicit(&src->users, memory_order_relaxed) & TREADLE__SRC_CLOSED)
    return -1;
  int fd = src->fd;
  src->keep_fd = true; /* published by close's acq_rel fetch_or */
  treadle__source_close(src);
  /* An operation still inside (a system call on another thread, which
   * does not block: the fd is non-blocking) finishes it when it leaves;
   * the caller may close the fd only after the epoll_ctl DEL.
   * acquire: pairs with the finisher's CAS. */
  while (!(atomic_load_explicit(&src->users, memory_order_acquire) &
           TREADLE__SRC_FINISHED))
    sched_yield();
  return fd;
}

void treadle__source_free(treadle__source_t *src) {
  if (src->reg == NULL)
    return;
  treadle__source_close(src);
  if (!treadle__forked(src->h)) /* in a child the runtime stays the parent's */
    treadle_handle_unref(src->h);
  src->reg = NULL;
  src->h = NULL;
}

treadle_poll_t treadle__source_wait(treadle__source_t *src, treadle_cx_t *cx,
                                    unsigned interest, uint32_t *tick,
                                    treadle_err_t *err) {
  treadle__io_reg_t *r = src->reg;
  treadle_waker_t *mine = treadle_cx_waker(cx);
  treadle_waker_t *old_rd = NULL, *old_wr = NULL;
  bool reading = interest & TREADLE__IO_READABLE;
  bool writing = interest & TREADLE__IO_WRITABLE;
  reg_lock(r);
  /* Relaxed: the lock orders it against reg_set. */
  uint64_t word = atomic_load_explicit(&r->readiness, memory_order_relaxed);
  if (!(BITS(word) & interest)) {
    /* A wait for both sides (an AsyncFd's ready(R|W)) sits in both
     * slots, so that an edge of either side wakes it. */
    if (reading && r->reader != mine) {
      old_rd = r->reader;
      r->reader = treadle_waker_clone(mine);
    }
    if (writing && r->writer != mine) {
      old_wr = r->writer;
      r->writer = treadle_waker_clone(mine);
    }
    reg_unlock(r);
    treadle_waker_drop(old_rd);
    treadle_waker_drop(old_wr);
    treadle__task_waits_on(cx->task, reading ? TREADLE__WAIT_IO_READ
                                             : TREADLE__WAIT_IO_WRITE);
    return TREADLE_PENDING;
  }
  reg_unlock(r);
  unsigned bits = BITS(word);
  *tick = TICK(word);
  if (bits & TREADLE__IO_CLOSED)
    *err = TREADLE_ECLOSED;
  else if (bits & TREADLE__IO_GONE)
    *err = TREADLE_ESHUTDOWN;
  else
    *err = 0;
  return TREADLE_READY;
}

void treadle__source_clear(treadle__source_t *src, unsigned bits,
                           uint32_t tick) {
  treadle__io_reg_t *r = src->reg;
  uint64_t cur = atomic_load_explicit(&r->readiness, memory_order_relaxed);
  while (TICK(cur) == tick) {
    /* Relaxed: a failed CAS (an event came in) leaves the bits set; the
     * next poll_ready re-reads the word under the lock. */
    if (atomic_compare_exchange_weak_explicit(
            &r->readiness, &cur, cur & ~(uint64_t)bits, memory_order_relaxed,
            memory_order_relaxed))
      return;
  }
}
