/* treadle error codes: one X-macro, many outputs (libuv include/uv/errno.h).
 *
 * Every failing treadle function returns a negative code. System errors are
 * -errno, so TREADLE_EINVAL == -EINVAL on Linux; codes that only treadle
 * produces sit in a reserved range below -4000 that no errno reaches.
 *
 * TREADLE_ERRNO_MAP(XX) is the single list: the enum below, treadle_strerror()
 * and treadle_err_name() are generated from it, and so are the bindings'
 * exception and error names. */
#ifndef TREADLE_ERRNO_H
#define TREADLE_ERRNO_H

#include <errno.h>

#define TREADLE__ENOTIME (-4001)
#define TREADLE__ENOIO (-4002)
#define TREADLE__ESHUTDOWN (-4003)
#define TREADLE__EINRUNTIME (-4004)
#define TREADLE__EJOINED (-4005)
#define TREADLE__ECLOSED (-4006)
#define TREADLE__ENOHOST (-4007)
#define TREADLE__EFORKED (-4008)
#define TREADLE__EFOREIGN (-4009)
#define TREADLE__ECHANCLOSED (-4010)
#define TREADLE__ENOTLS (-4011)
#define TREADLE__ETLSHANDSHAKE (-4012)
#define TREADLE__ETLSVERIFY (-4013)
#define TREADLE__ETLS (-4014)

/* XX(name, message) */
#define TREADLE_ERRNO_MAP(XX)                                                  \
  XX(EPERM, -EPERM, "operation not permitted")                                 \
  XX(ENOENT, -ENOENT, "no such file or directory")                             \
  XX(EINTR, -EINTR, "interrupted system call")                                 \
  XX(EIO, -EIO, "i/o error")                                                   \
  XX(EBADF, -EBADF, "bad file descriptor")                                     \
  XX(EAGAIN, -EAGAIN, "resource temporarily unavailable")                      \
  XX(ENOMEM, -ENOMEM, "not enough memory")                                     \
  XX(EACCES, -EACCES, "permission denied")                                     \
  XX(EFAULT, -EFAULT, "bad address in system call argument")                   \
  XX(EBUSY, -EBUSY, "resource busy or locked")                                 \
  XX(EEXIST, -EEXIST, "file already exists")                                   \
  XX(ENODEV, -ENODEV, "no such device")                                        \
  XX(EINVAL, -EINVAL, "invalid argument")                                      \
  XX(EMFILE, -EMFILE, "too many open files")                                   \
  XX(ENFILE, -ENFILE, "file table overflow")                                   \
  XX(ENOSPC, -ENOSPC, "no space left on device")                               \
  XX(EPIPE, -EPIPE, "broken pipe")                                             \
  XX(ERANGE, -ERANGE, "result too large")                                      \
  XX(ENAMETOOLONG, -ENAMETOOLONG, "name too long")                             \
  XX(ENOSYS, -ENOSYS, "function not implemented")                              \
  XX(EDESTADDRREQ, -EDESTADDRREQ,                                              \
     "destination address required: the socket is not connected")             \
  XX(EMSGSIZE, -EMSGSIZE,                                                      \
     "message too long: for the socket, or for the buffer it was received "   \
     "into")                                                                   \
  XX(EPROTOTYPE, -EPROTOTYPE, "protocol wrong type for socket")                \
  XX(ENOTSUP, -ENOTSUP, "operation not supported")                             \
  XX(EAFNOSUPPORT, -EAFNOSUPPORT, "address family not supported")             \
  XX(EADDRINUSE, -EADDRINUSE, "address already in use")                        \
  XX(EADDRNOTAVAIL, -EADDRNOTAVAIL, "address not available")                   \
  XX(ECONNABORTED, -ECONNABORTED, "software caused connection abort")          \
  XX(ECONNRESET, -ECONNRESET, "connection reset by peer")                      \
  XX(ECONNREFUSED, -ECONNREFUSED, "connection refused")                        \
  XX(EISCONN, -EISCONN, "socket is already connected")                        \
  XX(ENOTCONN, -ENOTCONN, "socket is not connected")                           \
  XX(ETIMEDOUT, -ETIMEDOUT, "operation timed out")                             \
  XX(EHOSTUNREACH, -EHOSTUNREACH, "host is unreachable")                       \
  XX(ENETUNREACH, -ENETUNREACH, "network is unreachable")                      \
  XX(EALREADY, -EALREADY, "connection already in progress")                    \
  XX(ECANCELED, -ECANCELED, "operation cancelled")                             \
  XX(ENOTIME, TREADLE__ENOTIME,                                                \
     "timers are disabled: build the runtime with enable_time")                \
  XX(ENOIO, TREADLE__ENOIO,                                                    \
     "I/O is disabled: build the runtime with enable_io")                      \
  XX(ESHUTDOWN, TREADLE__ESHUTDOWN, "the runtime has shut down")               \
  XX(EINRUNTIME, TREADLE__EINRUNTIME,                                          \
     "cannot start a runtime from within a runtime")                           \
  XX(EJOINED, TREADLE__EJOINED, "the task's output was already taken")         \
  XX(ECLOSED, TREADLE__ECLOSED,                                                \
     "closed on this side (by a close call)")                                \
  XX(ENOHOST, TREADLE__ENOHOST, "host name not found")                         \
  XX(EFORKED, TREADLE__EFORKED,                                                \
     "the process forked: this runtime belongs to the parent; build a new "   \
     "one in the child")                                                       \
  XX(EFOREIGN, TREADLE__EFOREIGN,                                              \
     "the object belongs to another runtime: use it from that runtime's "     \
     "tasks")                                                                  \
  XX(ECHANCLOSED, TREADLE__ECHANCLOSED,                                        \
     "the other end of the channel is gone")                                   \
  XX(ENOTLS, TREADLE__ENOTLS,                                                  \
     "TLS support is not built in (treadle was built without OpenSSL)")       \
  XX(ETLSHANDSHAKE, TREADLE__ETLSHANDSHAKE, "TLS handshake failed")            \
  XX(ETLSVERIFY, TREADLE__ETLSVERIFY,                                          \
     "TLS certificate verification failed")                                    \
  XX(ETLS, TREADLE__ETLS, "TLS protocol error")

typedef enum {
#define TREADLE__ERRNO_ENUM(name, code, msg) TREADLE_##name = (code),
  TREADLE_ERRNO_MAP(TREADLE__ERRNO_ENUM)
#undef TREADLE__ERRNO_ENUM
} treadle_errno_t;

#endif /* TREADLE_ERRNO_H */
