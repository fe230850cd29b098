/* TCP streams and listeners as the bindings hold them (tbind.h). */
#include <stdlib.h>
#include <string.h>

#include "tbind.h"

treadle_err_t tb_stream_init(tb_stream_t *st, treadle_tcp_stream_t *s) {
  memset(st, 0, sizeof *st);
  treadle_err_t err = treadle_mutex_new(&st->write_lock);
  if (err != 0) {
    treadle_tcp_stream_free(s);
    st->closed = true;
    return err;
  }
  st->s = s;
  /* Small writes go out at once, as asyncio, Go and OpenResty have them;
   * a failure leaves Nagle on, which is only slower. */
  (void)treadle_tcp_set_nodelay(s, true);
  return 0;
}

void tb_stream_close(tb_stream_t *st) {
  if (st->tls != NULL)
    treadle_tls_close(st->tls); /* no close_notify: the socket just closes */
  else if (st->s != NULL)
    treadle_tcp_stream_close(st->s);
  st->closed = true;
}

void tb_stream_free(tb_stream_t *st) {
  if (st->tls != NULL)
    treadle_tls_free(st->tls); /* and the stream it owns */
  else
    treadle_tcp_stream_free(st->s);
  st->tls = NULL;
  st->s = NULL;
  treadle_mutex_unref(st->write_lock);
  st->write_lock = NULL;
  st->closed = true;
}

treadle_err_t tb_stream_start_tls(tb_stream_t *st, treadle_tls_config_t *c,
                                  bool server, const char *server_name) {
  if (st->closed || st->s == NULL)
    return TREADLE_ECLOSED;
  if (st->tls != NULL)
    return TREADLE_EINVAL;
  return server ? treadle_tls_server_new(c, st->s, &st->tls)
                : treadle_tls_client_new(c, st->s, server_name, &st->tls);
}

void tb_listener_init(tb_listener_t *ls, treadle_tcp_listener_t *l) {
  memset(ls, 0, sizeof *ls);
  ls->l = l;
}

void tb_listener_close(tb_listener_t *ls) {
  if (ls->l != NULL)
    treadle_tcp_listener_close(ls->l);
  ls->closed = true;
}

void tb_listener_free(tb_listener_t *ls) {
  treadle_tcp_listener_free(ls->l);
  ls->l = NULL;
  ls->closed = true;
}
