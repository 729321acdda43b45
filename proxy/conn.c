/* Connections for both sides of the proxy; see conn.h for why not bufferevents. */
#include "conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);

static struct sp_conn *conn_alloc(struct event_base *base, evutil_socket_t fd)
{
	struct sp_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->fd = fd;
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, c);
	c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	if (!c->rev || !c->wev || !c->in || !c->out) {
		c->fd = -1;
		sp_conn_free(&c);
	}
	return c;
}

struct sp_conn *sp_conn_new(struct event_base *base, evutil_socket_t fd)
{
	struct sp_conn *c = conn_alloc(base, fd);
	if (!c)
		close(fd);
	return c;
}

struct sp_conn *sp_conn_connect(struct event_base *base, const struct sockaddr *sa,
				socklen_t len)
{
	int one = 1, e;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
		e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	struct sp_conn *c = conn_alloc(base, fd);
	if (!c) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	/* Writability reports the outcome, even for an immediate success. */
	c->connecting = 1;
	event_add(c->wev, NULL);
	c->warmed = 1;
	return c;
}

void sp_conn_free(struct sp_conn **cp)
{
	struct sp_conn *c = *cp;
	if (!c)
		return;
	*cp = NULL;
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->in)
		evbuffer_free(c->in);
	if (c->out)
		evbuffer_free(c->out);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

void sp_conn_setcb(struct sp_conn *c, sp_conn_cb on_read, sp_conn_cb on_drain,
		   sp_conn_event_cb on_event, void *arg)
{
	c->on_read = on_read;
	c->on_drain = on_drain;
	c->on_event = on_event;
	c->arg = arg;
}

static void arm_read(struct sp_conn *c)
{
	int want = c->reading && !c->connecting && !c->eof &&
		   (!c->read_max || evbuffer_get_length(c->in) < c->read_max);
	if (want && !c->rarmed) {
		event_add(c->rev, c->has_rtv ? &c->rtv : NULL);
		c->rarmed = 1;
	} else if (!want && c->rarmed) {
		event_del(c->rev);
		c->rarmed = 0;
	}
}

void sp_conn_timeouts(struct sp_conn *c, const struct timeval *r, const struct timeval *w)
{
	c->has_rtv = r != NULL;
	if (r)
		c->rtv = *r;
	c->has_wtv = w != NULL;
	if (w)
		c->wtv = *w;
	/* re-arm so the new timeouts count from now */
	if (c->rarmed) {
		event_add(c->rev, c->has_rtv ? &c->rtv : NULL);
	}
	if (c->warmed)
		event_add(c->wev, c->has_wtv ? &c->wtv : NULL);
}

void sp_conn_read(struct sp_conn *c, int enable)
{
	c->reading = enable != 0;
	arm_read(c);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct sp_conn *c = arg;
	if (what & EV_TIMEOUT) {
		c->on_event(c, SP_CONN_TIMEOUT | SP_CONN_READING, c->arg);
		return;
	}
	/* Read into a per-thread buffer and copy what came: reserving 64 KiB in
	 * every connection's evbuffer would cost that much memory per
	 * connection for requests that are a few hundred bytes. */
	static _Thread_local char buf[READ_CHUNK];
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		c->err = errno;
		c->eof = 1;
		arm_read(c);
		c->on_event(c, SP_CONN_ERROR | SP_CONN_READING, c->arg);
		return;
	}
	if (n == 0) {
		c->eof = 1;
		arm_read(c);
		c->on_event(c, SP_CONN_EOF | SP_CONN_READING, c->arg);
		return;
	}
	if (evbuffer_add(c->in, buf, (size_t)n) < 0) {
		c->err = ENOMEM;
		c->on_event(c, SP_CONN_ERROR | SP_CONN_READING, c->arg);
		return;
	}
	if (c->read_max && evbuffer_get_length(c->in) >= c->read_max)
		arm_read(c);
	c->on_read(c, c->arg);
}

/* Writes; returns -1 on a hard error (c->err set). */
static int write_some(struct sp_conn *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		int n = evbuffer_write(c->out, c->fd);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		c->err = n < 0 ? errno : EPIPE;
		return -1;
	}
	int want = evbuffer_get_length(c->out) > 0;
	if (want && !c->warmed) {
		event_add(c->wev, c->has_wtv ? &c->wtv : NULL);
		c->warmed = 1;
	} else if (!want && c->warmed) {
		event_del(c->wev);
		c->warmed = 0;
	}
	return 0;
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct sp_conn *c = arg;
	if (what & EV_TIMEOUT) {
		c->on_event(c, SP_CONN_TIMEOUT | SP_CONN_WRITING, c->arg);
		return;
	}
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err == EINPROGRESS)
			return;
		c->connecting = 0;
		if (err) {
			c->err = err;
			event_del(c->wev);
			c->warmed = 0;
			c->on_event(c, SP_CONN_ERROR | SP_CONN_WRITING, c->arg);
			return;
		}
		arm_read(c);
		if (write_some(c) < 0) {
			c->on_event(c, SP_CONN_ERROR | SP_CONN_WRITING, c->arg);
			return;
		}
		c->on_event(c, SP_CONN_CONNECTED, c->arg);
		return;
	}
	if (c->err) { /* a failure found by sp_conn_flush, reported from the loop */
		event_del(c->wev);
		c->warmed = 0;
		c->on_event(c, SP_CONN_ERROR | SP_CONN_WRITING, c->arg);
		return;
	}
	if (write_some(c) < 0) {
		c->on_event(c, SP_CONN_ERROR | SP_CONN_WRITING, c->arg);
		return;
	}
	if (evbuffer_get_length(c->out) <= c->low_water && c->on_drain)
		c->on_drain(c, c->arg);
}

void sp_conn_flush(struct sp_conn *c)
{
	if (!c)
		return;
	arm_read(c);
	if (c->connecting || c->err || evbuffer_get_length(c->out) == 0)
		return;
	if (write_some(c) < 0) {
		/* Callers are inside their own callbacks: report from the loop. */
		if (!c->warmed) {
			event_add(c->wev, NULL);
			c->warmed = 1;
		}
		event_active(c->wev, EV_WRITE, 0);
	}
}
