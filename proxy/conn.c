/* Connections for both sides of the proxy; see conn.h for why not bufferevents. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "clock.h"
#include "tls.h"

#define READ_CHUNK (64 * 1024)
#define WRITE_IOVECS 64

/* The syscalls of every exchange, issued directly. The process has
 * threads, so glibc's wrappers toggle asynchronous cancellation around each
 * call (a cancellation point; strangler never cancels a thread): 60-80 ns per
 * request, 0.6 % of its CPU. recvfrom and sendto also take the socket path
 * straight, where read and writev go through the VFS (file position lock,
 * rw_verify_area, an iovec copied in): less kernel time, 150-200 ns per
 * request for the receives (perf) and 150-220 ns per send (a loopback loop).
 * A small exchange's message is one extent, so its write is a sendto; writev
 * is kept for several. */
static ssize_t sys_recv(int fd, void *buf, size_t len)
{
	return syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
}

static ssize_t sys_write_iov(int fd, const struct iovec *iov, int n)
{
	if (n == 1)
		return syscall(SYS_sendto, fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL, NULL, 0);
	return syscall(SYS_writev, fd, iov, n);
}

/* libevent's extents as the kernel's (same fields, distinct types). */
static void to_iovec(const struct evbuffer_iovec *v, struct iovec *iov, int n)
{
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
}

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);
static void on_due(evutil_socket_t fd, short what, void *arg);
static int write_some(struct sp_conn *c);
static void update_wev(struct sp_conn *c);
static void splice_end(struct sp_splice *sp);
static void splice_run(struct sp_splice *sp);
static void splice_slow(struct sp_splice *sp);

/* A relay in progress: bytes read from src wait in the pipe until dst takes
 * them. */
struct sp_splice {
	struct sp_conn *src, *dst;
	int rfd, wfd;    /* the pipe's ends */
	size_t cap;      /* the pipe's capacity */
	size_t in_pipe;  /* read from src, not yet written to dst */
	uint64_t to_read;
	int lowat;       /* src's SO_RCVLOWAT: 1 or up to SPLICE_BULK_LOWAT; 0 untouched */
	int notsent;     /* dst's TCP_NOTSENT_LOWAT was set (to cap) */
};

/* 1 MiB (the unprivileged maximum) moved 0.73-0.79x of the direct rate in a
 * 1 GiB download, 256 KiB 0.79x, 4 MiB 0.85x but uploads at half speed. */
#define SPLICE_PIPE_SIZE (1024 * 1024)

/* A fast source wakes the relay only once this much has arrived
 * (SO_RCVLOWAT): each wake-up then moves a large batch, where waking for
 * every 64 KiB segment kept both cores a third idle on the hand-offs. 1 GiB
 * download 0.74-0.78x -> 0.78-0.87x of the direct rate, CPU per GiB -10 %
 * (128 KiB and 512 KiB: no better). A source slower than that per
 * SPLICE_TICK_MS is relayed byte by byte again after one tick, so a trickle
 * waits at most one tick, and its read timeout counts as usual. */
#define SPLICE_BULK_LOWAT (256 * 1024)
#define SPLICE_TICK_MS 10

int sp_err_local(int e)
{
	return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM || e == EADDRNOTAVAIL;
}

static struct sp_conn *conn_alloc(struct event_base *base, evutil_socket_t fd)
{
	struct sp_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->fd = fd;
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, c);
	c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
	c->tev = evtimer_new(base, on_due, c);
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	if (!c->rev || !c->wev || !c->tev || !c->in || !c->out) {
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
	if (c->splice_src)
		splice_end(c->splice_src);
	if (c->splice_dst)
		splice_end(c->splice_dst);
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->tev)
		event_free(c->tev);
	if (c->ssl) {
		if (!c->hs && !c->err)
			SSL_shutdown(c->ssl); /* best effort close_notify; never waits */
		SSL_free(c->ssl);
	}
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
	c->on_data = NULL;
	c->arg = arg;
}

void sp_conn_data(struct sp_conn *c, sp_conn_data_cb on_data)
{
	c->on_data = on_data;
}

/* A batching relay's source: a tick, not the read timeout, watches it. */
static int ticking(const struct sp_conn *c)
{
	return c->splice_src && c->splice_src->lowat > 1;
}

/* When the tick falls: only while the source is read. A full pipe stops
 * reading it, and that wait is the destination's, not a slow source's (it
 * dropped the low-water mark to 1 byte mid-transfer, 7 times per GiB
 * uploaded). */
static int64_t tick_due(const struct sp_conn *c)
{
	return c->rarmed && ticking(c) ? c->tick_at : INT64_MAX;
}

/* When each deadline falls, INT64_MAX for none: the read timeout while
 * reading is armed (a batching relay's source has its tick instead), the
 * write timeout while output waits, the owner's deadline. */
static int64_t read_due(const struct sp_conn *c)
{
	return c->rarmed && c->rt_us && !ticking(c) ? c->r_at + c->rt_us : INT64_MAX;
}

static int64_t write_due(const struct sp_conn *c)
{
	return c->warmed && c->wt_us ? c->w_at + c->wt_us : INT64_MAX;
}

static int64_t owner_due(const struct sp_conn *c)
{
	return c->u_at ? c->u_at : INT64_MAX;
}

/* The earliest of them, and a batching relay's tick. */
static int64_t next_due(const struct sp_conn *c)
{
	int64_t due = tick_due(c);
	if (read_due(c) < due)
		due = read_due(c);
	if (write_due(c) < due)
		due = write_due(c);
	if (owner_due(c) < due)
		due = owner_due(c);
	return due;
}

/* Arms the timer for the next due moment, lazily. Activity only moves a
 * deadline later and touches no timer: the timer fires at the old moment,
 * finds nothing due and waits again. Only an earlier deadline re-arms it.
 * So a busy connection costs no timer operation per read or write, where
 * timeouts on rev and wev cost a heap update at every wake-up, and every
 * change of timeout another. */
static void schedule(struct sp_conn *c, int64_t now)
{
	int64_t due = next_due(c);
	if (due == INT64_MAX)
		return;
	if (c->horizon && due > now + c->horizon)
		due = now + c->horizon;
	if (c->t_due && c->t_due <= due)
		return;
	struct timeval tv = sp_tv_us(due > now ? due - now : 0);
	event_add(c->tev, &tv);
	c->t_due = due;
}

/* Reports what is due, one thing at a time. The timer is armed again for
 * the rest before the owner hears of it (the owner may free c): a timeout
 * the owner lets pass fires again a whole timeout later, as a persistent
 * event's would. */
static void on_due(evutil_socket_t fd, short what, void *arg)
{
	struct sp_conn *c = arg;
	int64_t now = sp_deadline_now_us();
	short ev = 0;
	(void)fd;
	(void)what;
	c->t_due = 0;
	if (now >= tick_due(c)) {
		splice_slow(c->splice_src);
		return;
	}
	if (now >= read_due(c)) {
		ev = SP_CONN_TIMEOUT | SP_CONN_READING;
		c->r_at = now;
	} else if (now >= write_due(c)) {
		ev = SP_CONN_TIMEOUT | SP_CONN_WRITING;
		c->w_at = now;
	} else if (now >= owner_due(c)) {
		ev = SP_CONN_TIMEOUT | SP_CONN_DEADLINE;
		c->u_at = 0;
	}
	schedule(c, now);
	if (ev)
		c->on_event(c, ev, c->arg);
}

static void arm_read(struct sp_conn *c)
{
	/* TLS reads for its own sake: the handshake, or a write that needs the
	 * peer's records first */
	int want = !c->connecting && !c->eof &&
		   ((c->reading && !c->hs && (!c->read_max || evbuffer_get_length(c->in) < c->read_max)) ||
		    c->hs_want_read || c->w_want_read);
	if (c->splice_src) /* while relaying, only room in the pipe counts */
		want = !c->eof && c->splice_src->to_read > 0 && c->splice_src->in_pipe < c->splice_src->cap;
	int tick = ticking(c);
	if (want && (!c->rarmed || tick || c->rtick)) {
		int64_t now = sp_deadline_now_us();
		if (!c->rarmed)
			event_add(c->rev, NULL);
		/* the read timeout counts from arming, or from the end of a
		 * relay's batching; a tick from the last wake-up */
		if (!c->rarmed || (c->rtick && !tick))
			c->r_at = now;
		if (tick)
			c->tick_at = now + SPLICE_TICK_MS * 1000;
		c->rarmed = 1;
		c->rtick = tick;
		schedule(c, now);
	} else if (!want && c->rarmed) {
		event_del(c->rev);
		c->rarmed = c->rtick = 0;
	}
}

void sp_conn_timeouts(struct sp_conn *c, int read_ms, int write_ms)
{
	int64_t now = sp_deadline_now_us();
	c->rt_us = (int64_t)read_ms * 1000;
	c->wt_us = (int64_t)write_ms * 1000;
	/* the new timeouts count from now (a batching relay keeps its tick:
	 * the read timeout applies once it stops batching) */
	c->r_at = c->w_at = now;
	schedule(c, now);
}

void sp_conn_deadline(struct sp_conn *c, int ms, int horizon_ms)
{
	c->horizon = (int64_t)horizon_ms * 1000;
	if (!ms) { /* lazily: a pending timer fires, finds nothing, and stops */
		c->u_at = 0;
		return;
	}
	int64_t now = sp_deadline_now_us();
	c->u_at = now + (int64_t)ms * 1000;
	schedule(c, now);
}

/* Reading resumed: what OpenSSL holds (data, or the end) makes no socket
 * event. */
static void tls_resume(struct sp_conn *c)
{
	if (c->reading && c->rarmed && !c->hs && (c->tls_end || SSL_pending(c->ssl) > 0))
		event_active(c->rev, EV_READ, 0);
}

void sp_conn_read(struct sp_conn *c, int enable)
{
	c->reading = enable != 0;
	arm_read(c);
	if (c->ssl)
		tls_resume(c);
}

/* ---- TLS ---- */

static void tls_fail(struct sp_conn *c, short what)
{
	unsigned long e = ERR_peek_error();
	c->err = EPROTO;
	/* no reason queued: the peer closed or reset the connection */
	c->tls_error = e ? ERR_reason_error_string(e)
		       : c->hs ? "connection closed during the handshake"
			       : "TLS failure";
	if (c->hs)
		c->tls_handshake_failed = 1;
	/* the certificate check says which check failed; the error queue only
	 * that one did */
	if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
		long v = SSL_get_verify_result(c->ssl);
		c->tls_verify_error = v != X509_V_OK ? X509_verify_cert_error_string(v) : NULL;
	}
	/* OpenSSL recognises a request line where a ClientHello belongs */
	c->plain_http = !c->tls_client && ERR_GET_LIB(e) == ERR_LIB_SSL &&
			ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST;
	ERR_clear_error();
	c->eof = 1;
	c->hs_want_read = c->w_want_read = 0;
	arm_read(c);
	c->on_event(c, SP_CONN_ERROR | what, c->arg);
}

/* A write failure (c->err set) reported from the loop, for callers inside
 * their own callbacks: on_writable finds c->err. */
static void write_error_later(struct sp_conn *c)
{
	if (!c->warmed) {
		event_add(c->wev, NULL);
		c->warmed = 1;
	}
	event_active(c->wev, EV_WRITE, 0);
}

/* Drives the handshake; reports CONNECTED on the client side once done. */
static void tls_handshake(struct sp_conn *c)
{
	if (!c->ssl) { /* SSL_new failed (sp_conn_tls_accept): never plain HTTP */
		tls_fail(c, SP_CONN_READING);
		return;
	}
	if (!c->tls_client && !c->hs_peeked) {
		/* A TLS record starts with 0x16 (an SSLv2 hello with a set top
		 * bit): anything else is taken for plain HTTP, and answered so
		 * (nginx does the same; OpenSSL knows only GET, POST, HEAD, PUT) */
		unsigned char b;
		ssize_t n = recv(c->fd, &b, 1, MSG_PEEK);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			c->hs_want_read = 1;
			arm_read(c);
			return;
		}
		c->hs_peeked = 1;
		if (n == 0) { /* closed before a byte: a balancer's TCP check, not a failed handshake */
			c->eof = 1;
			c->hs_want_read = 0;
			arm_read(c);
			c->on_event(c, SP_CONN_EOF | SP_CONN_READING, c->arg);
			return;
		}
		if (n == 1 && b != 0x16 && !(b & 0x80)) {
			c->err = EPROTO;
			c->tls_error = "plain HTTP request on a TLS listener";
			c->plain_http = 1;
			c->eof = 1;
			c->hs_want_read = 0;
			arm_read(c);
			c->on_event(c, SP_CONN_ERROR | SP_CONN_READING, c->arg);
			return;
		}
	}
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	c->hs_want_read = c->hs_want_write = 0;
	if (r == 1) {
		c->hs = 0;
		arm_read(c);
		if (write_some(c) < 0) {
			if (!c->tls_client) {
				c->on_event(c, SP_CONN_ERROR | SP_CONN_WRITING, c->arg);
				return;
			}
			/* the connection is up: a write that fails now (a backend
			 * that answered and reset) is reported after CONNECTED */
			write_error_later(c);
		}
		if (c->tls_client)
			c->on_event(c, SP_CONN_CONNECTED, c->arg);
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->hs_want_read = 1;
		break;
	case SSL_ERROR_WANT_WRITE:
		c->hs_want_write = 1;
		break;
	default:
		tls_fail(c, SP_CONN_READING);
		return;
	}
	arm_read(c);
	update_wev(c);
}

static void tls_readable(struct sp_conn *c)
{
	static _Thread_local char buf[READ_CHUNK];
	size_t total = 0;
	int got = 0;
	if (c->hs) {
		tls_handshake(c);
		return;
	}
	if (c->w_want_read) { /* a write waited for the peer's records */
		c->w_want_read = 0;
		if (write_some(c) < 0) {
			c->on_event(c, SP_CONN_ERROR | SP_CONN_WRITING, c->arg);
			return;
		}
		arm_read(c);
		if (!c->reading)
			return;
	}
	c->r_want_write = 0;
	c->tls_end = 0; /* SSL_read reports it again */
	while (total < READ_CHUNK) {
		ERR_clear_error();
		int n = SSL_read(c->ssl, buf, (int)sizeof(buf));
		if (n > 0) {
			if (evbuffer_add(c->in, buf, (size_t)n) < 0) {
				c->err = ENOMEM;
				c->on_event(c, SP_CONN_ERROR | SP_CONN_READING, c->arg);
				return;
			}
			total += (size_t)n;
			got = 1;
			continue;
		}
		int e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_WANT_WRITE) {
			c->r_want_write = 1;
			update_wev(c);
			break;
		}
		if (got) {
			/* deliver what came; the end is seen on the next call, which
			 * no socket event will make: it is made below */
			c->tls_end = 1;
			break;
		}
		if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
			/* close_notify, or a close without one (ZERO_RETURN too under
			 * SSL_OP_IGNORE_UNEXPECTED_EOF, tls.c): an HTTP parser
			 * decides whether the message was complete */
			c->eof = 1;
			arm_read(c);
			c->on_event(c, SP_CONN_EOF | SP_CONN_READING, c->arg);
			return;
		}
		tls_fail(c, SP_CONN_READING);
		return;
	}
	/* records already decrypted, or the end, wait in OpenSSL, not in the
	 * socket (the event is dropped if the connection is freed meanwhile) */
	if (SSL_pending(c->ssl) > 0 || c->tls_end)
		event_active(c->rev, EV_READ, 0);
	if (c->read_max && evbuffer_get_length(c->in) >= c->read_max)
		arm_read(c);
	if (got)
		c->on_read(c, c->arg);
}

void sp_conn_tls_why(const struct sp_conn *c, char *buf, size_t len)
{
	const char *reason = c->tls_error ? c->tls_error : "handshake failed";
	if (c->tls_verify_error)
		snprintf(buf, len, "%s (%s)", reason, c->tls_verify_error);
	else
		snprintf(buf, len, "%s", reason);
}

unsigned long sp_conn_tls_bytes_in(const struct sp_conn *c)
{
	BIO *rbio = c->ssl ? SSL_get_rbio(c->ssl) : NULL;
	return rbio ? (unsigned long)BIO_number_read(rbio) : 0;
}

int sp_conn_tls_failure(const struct sp_conn *c, char *buf, size_t len)
{
	if (!c->tls_error || c->err != EPROTO)
		return 0;
	sp_conn_tls_why(c, buf, len);
	return 1;
}

void sp_conn_send_plain(struct sp_conn *c, const char *p, size_t n)
{
	(void)send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT); /* the close follows anyway */
}

/* Partial writes: the output evbuffer keeps what is left. Released buffers:
 * OpenSSL frees a connection's record buffers (about 17 KiB read, 17 KiB
 * write) whenever they are empty, as nginx has it do, instead of holding them
 * for the connection's life: an idle keep-alive TLS client took 26 kB, now
 * 16-17 (docs/performance.md). */
#define TLS_MODES                                                                     \
	(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |        \
	 SSL_MODE_RELEASE_BUFFERS)

void sp_conn_tls_accept(struct sp_conn *c, SSL_CTX *ctx)
{
	c->ssl = SSL_new(ctx);
	c->hs = 1;
	c->hs_want_read = 1;
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
		/* the handshake fails once the client speaks (tls_handshake) */
		SSL_free(c->ssl);
		c->ssl = NULL;
		c->err = ENOMEM;
		arm_read(c);
		return;
	}
	SSL_set_accept_state(c->ssl);
	SSL_set_mode(c->ssl, TLS_MODES);
	arm_read(c);
}

int sp_conn_tls_connect(struct sp_conn *c, SSL_CTX *ctx, const char *host, int is_ip,
			struct sp_tls_resume *resume)
{
	c->ssl = SSL_new(ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
		return -1;
	sp_tls_resume_offer(c->ssl, resume);
	SSL_set_connect_state(c->ssl);
	SSL_set_mode(c->ssl, TLS_MODES);
	if (!is_ip && SSL_set_tlsext_host_name(c->ssl, host) != 1)
		return -1;
	if (SSL_get_verify_mode(c->ssl) != SSL_VERIFY_NONE) {
		X509_VERIFY_PARAM *p = SSL_get0_param(c->ssl);
		if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(p, host) != 1
			  : X509_VERIFY_PARAM_set1_host(p, host, 0) != 1)
			return -1;
	}
	c->hs = 1;
	c->tls_client = 1;
	return 0;
}

size_t sp_conn_salvage(struct sp_conn *c)
{
	static _Thread_local char buf[READ_CHUNK];
	size_t total = 0;
	ssize_t n;
	if (c->splice_src)
		return 0;
	if (c->ssl) {
		/* records that came before a reset are still in the socket */
		int r;
		ERR_clear_error();
		while ((r = SSL_read(c->ssl, buf, (int)sizeof(buf))) > 0 &&
		       evbuffer_add(c->in, buf, (size_t)r) == 0)
			total += (size_t)r;
		/* an alert before the reset says why (a TLS 1.3 server that
		 * wanted a client certificate) */
		unsigned long e = r <= 0 && SSL_get_error(c->ssl, r) == SSL_ERROR_SSL
					  ? ERR_peek_error()
					  : 0;
		if (e) {
			c->tls_error = ERR_reason_error_string(e);
			c->err = EPROTO;
		}
		ERR_clear_error();
		return total;
	}
	while ((n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0 &&
	       evbuffer_add(c->in, buf, (size_t)n) == 0)
		total += (size_t)n;
	return total;
}

int sp_conn_idle_alive(struct sp_conn *c)
{
	char b;
	if (c->ssl) {
		/* records that carry no data (a session ticket) are taken in;
		 * close_notify, an end without it, or data end the connection */
		ERR_clear_error();
		int n = SSL_peek(c->ssl, &b, 1);
		int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
		ERR_clear_error();
		return e == SSL_ERROR_WANT_READ;
	}
	ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n < 0 && (errno == EAGAIN || errno == EINTR);
}

_Thread_local unsigned long sp_conn_wakeups;

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct sp_conn *c = arg;
	(void)what;
	sp_conn_wakeups++;
	if (c->rt_us) /* any wake-up counts as activity, as a persistent event's timeout would */
		c->r_at = sp_deadline_now_us();
	if (c->splice_src) {
		splice_run(c->splice_src);
		return;
	}
	if (c->ssl || c->hs) { /* hs without ssl: SSL_new failed, the handshake fails */
		tls_readable(c);
		return;
	}
	/* Small exchanges read into a per-thread buffer and copy what came:
	 * reserving 64 KiB in every connection's evbuffer would cost that much
	 * memory per connection for requests of a few hundred bytes. Once a read
	 * fills the whole chunk the peer is streaming, and reads go straight
	 * into the evbuffer, whose chains then move on without a copy. */
	static _Thread_local char buf[READ_CHUNK];
	struct evbuffer_iovec v[2];
	int nv = c->streaming ? evbuffer_reserve_space(c->in, READ_CHUNK, v, 2) : 0;
	ssize_t n;
	if (nv > 0) {
		struct iovec iov[2];
		to_iovec(v, iov, nv);
		n = readv(fd, iov, nv);
	} else {
		n = sys_recv(fd, buf, sizeof(buf));
	}
	if (n <= 0) {
		if (nv > 0)
			evbuffer_commit_space(c->in, v, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		c->err = n < 0 ? errno : 0;
		c->eof = 1;
		arm_read(c);
		c->on_event(c, (n < 0 ? SP_CONN_ERROR : SP_CONN_EOF) | SP_CONN_READING, c->arg);
		return;
	}
	c->streaming = n >= READ_CHUNK;
	if (nv == 0 && c->on_data && evbuffer_get_length(c->in) == 0 &&
	    (!c->read_max || (size_t)n < c->read_max)) {
		/* less than read_max: what the owner keeps stops no reading */
		c->on_data(c, buf, (size_t)n, c->arg);
		return;
	}
	int added;
	if (nv > 0) {
		size_t left = (size_t)n;
		for (int i = 0; i < nv; i++) {
			v[i].iov_len = left < v[i].iov_len ? left : v[i].iov_len;
			left -= v[i].iov_len;
		}
		added = evbuffer_commit_space(c->in, v, nv);
	} else {
		added = evbuffer_add(c->in, buf, (size_t)n);
	}
	if (added < 0) {
		c->err = ENOMEM;
		c->on_event(c, SP_CONN_ERROR | SP_CONN_READING, c->arg);
		return;
	}
	if (c->read_max && evbuffer_get_length(c->in) >= c->read_max)
		arm_read(c);
	c->on_read(c, c->arg);
}

/* Watches writability while output is left, or TLS asks for it. */
static void update_wev(struct sp_conn *c)
{
	int want = (evbuffer_get_length(c->out) > 0 && !c->w_want_read) || c->hs_want_write ||
		   c->r_want_write || (c->splice_dst && c->splice_dst->in_pipe > 0);
	if (want && !c->warmed) {
		event_add(c->wev, NULL);
		c->warmed = 1;
		if (c->wt_us) { /* the write timeout counts from here */
			int64_t now = sp_deadline_now_us();
			c->w_at = now;
			schedule(c, now);
		}
	} else if (!want && c->warmed) {
		event_del(c->wev);
		c->warmed = 0;
	}
}

static int tls_write_some(struct sp_conn *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		struct evbuffer_iovec v;
		/* a retry passes at least what OpenSSL holds, whatever the chains */
		if (c->tls_held && evbuffer_pullup(c->out, (ev_ssize_t)c->tls_held) == NULL) {
			c->err = ENOMEM;
			return -1;
		}
		evbuffer_peek(c->out, -1, NULL, &v, 1);
		size_t len = v.iov_len > 16384 ? 16384 : v.iov_len;
		if (len < c->tls_held)
			len = c->tls_held;
		ERR_clear_error();
		int n = SSL_write(c->ssl, v.iov_base, (int)len);
		if (n > 0) {
			evbuffer_drain(c->out, (size_t)n);
			c->sent = 1;
			c->tls_held = 0;
			continue;
		}
		int e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
			c->tls_held = len; /* encrypted and held: to be passed again */
		if (e == SSL_ERROR_WANT_WRITE)
			break;
		if (e == SSL_ERROR_WANT_READ) {
			c->w_want_read = 1;
			arm_read(c);
			break;
		}
		unsigned long ee = ERR_peek_error();
		c->tls_error = ee ? ERR_reason_error_string(ee) : "TLS write failed";
		ERR_clear_error();
		/* errno is the socket's only for SSL_ERROR_SYSCALL (else stale) */
		c->err = e == SSL_ERROR_SYSCALL && errno ? errno : ee ? EPROTO : EPIPE;
		return -1;
	}
	return 0;
}

/* Writes; returns -1 on a hard error (c->err set). */
/* The half-close asked for, once nothing is left to write. */
static void maybe_shutdown(struct sp_conn *c)
{
	if (!c->shut_wr || c->shut_done || c->connecting || evbuffer_get_length(c->out) > 0 ||
	    c->splice_dst || (c->ssl && c->hs))
		return;
	c->shut_done = 1;
	if (c->ssl)
		SSL_shutdown(c->ssl); /* close_notify; the peer may still send */
	shutdown(c->fd, SHUT_WR);
}

void sp_conn_shutdown_write(struct sp_conn *c)
{
	c->shut_wr = 1;
	maybe_shutdown(c);
}

static int write_some(struct sp_conn *c)
{
	if (c->ssl) {
		if (c->hs)
			return 0; /* application data waits for the handshake */
		if (tls_write_some(c) < 0)
			return -1;
		update_wev(c);
		maybe_shutdown(c);
		return 0;
	}
	if (c->splice_dst) { /* what was queued after the relay waits for it */
		update_wev(c);
		return 0;
	}
	while (evbuffer_get_length(c->out) > 0) {
		struct evbuffer_iovec v[WRITE_IOVECS];
		struct iovec iov[WRITE_IOVECS];
		int nv = evbuffer_peek(c->out, -1, NULL, v, WRITE_IOVECS);
		if (nv > WRITE_IOVECS)
			nv = WRITE_IOVECS;
		to_iovec(v, iov, nv);
		ssize_t n = sys_write_iov(c->fd, iov, nv);
		if (n > 0) {
			evbuffer_drain(c->out, (size_t)n);
			c->sent = 1;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		c->err = n < 0 ? errno : EPIPE;
		return -1;
	}
	update_wev(c);
	maybe_shutdown(c);
	return 0;
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct sp_conn *c = arg;
	(void)what;
	sp_conn_wakeups++;
	if (c->wt_us)
		c->w_at = sp_deadline_now_us();
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
		if (c->ssl) { /* TCP is up; CONNECTED comes after the handshake */
			tls_handshake(c);
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
	if (c->ssl && c->hs) {
		tls_handshake(c);
		return;
	}
	if (c->ssl && c->r_want_write) { /* a read waited for our records to go */
		c->r_want_write = 0;
		update_wev(c);
		tls_readable(c);
		return;
	}
	if (c->splice_dst) {
		splice_run(c->splice_dst);
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
	arm_read(c); /* resumes reading that read_max paused */
	if (c->ssl)
		tls_resume(c);
	if (c->connecting || c->err || evbuffer_get_length(c->out) == 0 || (c->ssl && c->hs))
		return;
	if (write_some(c) < 0) {
		/* Callers are inside their own callbacks: report from the loop. */
		write_error_later(c);
	}
}

size_t sp_conn_write_now(struct sp_conn *c, const char *p, size_t n)
{
	return sp_conn_write2_now(c, p, n, NULL, 0);
}

size_t sp_conn_write2_now(struct sp_conn *c, const char *p, size_t n, const char *q, size_t m)
{
	if (n + m == 0 || c->ssl || c->connecting || c->err || c->splice_dst || c->shut_wr ||
	    evbuffer_get_length(c->out) > 0)
		return 0;
	struct iovec iov[2] = {{(void *)p, n}, {(void *)q, m}};
	ssize_t w = n && m ? sys_write_iov(c->fd, iov, 2) : sys_write_iov(c->fd, n ? iov : iov + 1, 1);
	if (w <= 0)
		return 0;
	c->sent = 1;
	return (size_t)w;
}

/* ---- splice relay ---- */

int sp_conn_can_splice(const struct sp_conn *src, const struct sp_conn *dst)
{
	return !src->ssl && !dst->ssl && !src->connecting && !dst->connecting &&
	       !src->splice_src && !src->splice_dst && !dst->splice_src && !dst->splice_dst &&
	       evbuffer_get_length(src->in) == 0 && evbuffer_get_length(dst->out) == 0;
}

int sp_conn_splice(struct sp_conn *src, struct sp_conn *dst, uint64_t n)
{
	int fds[2];
	if (n == 0 || !sp_conn_can_splice(src, dst)) {
		errno = EINVAL;
		return -1;
	}
	struct sp_splice *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -1;
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		free(sp);
		return -1;
	}
	/* A larger pipe moves more per call; the default (64 KiB) if refused. */
	int cap = fcntl(fds[1], F_SETPIPE_SZ, SPLICE_PIPE_SIZE);
	if (cap <= 0)
		cap = fcntl(fds[1], F_GETPIPE_SZ);
	sp->rfd = fds[0];
	sp->wfd = fds[1];
	sp->cap = cap > 0 ? (size_t)cap : 65536;
	sp->src = src;
	sp->dst = dst;
	sp->to_read = n;
	src->splice_src = sp;
	dst->splice_dst = sp;
	/* dst holds at most a pipe's worth of unsent bytes (the default lets
	 * the whole send buffer, up to 4 MiB, wait there). What the peer's
	 * window cannot take yet stays in the pipe, and the relay sends it
	 * itself when the window opens, where otherwise the kernel sends the
	 * backlog from the peer's ACKs, in the softirq of whichever core they
	 * arrive on (on one host: the peer's, taking its time from the peer).
	 * 1 GiB upload 0.67-0.71x -> 0.76-0.83x of the direct rate, 4 GiB
	 * download +10 %; 128 and 256 KiB: no faster than without. */
	int notsent = (int)sp->cap;
	sp->notsent = setsockopt(dst->fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &notsent,
				 sizeof(notsent)) == 0;
	arm_read(src);
	update_wev(dst);
	/* the first moves happen from the loop, not inside the caller */
	event_active(src->rev, EV_READ, 0);
	return 0;
}

/* Closes the pipe and gives both connections back their usual events. */
static void splice_end(struct sp_splice *sp)
{
	struct sp_conn *src = sp->src, *dst = sp->dst;
	int one = 1, sysctl_default = 0;
	if (sp->lowat > 1)
		setsockopt(src->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	if (sp->notsent)
		setsockopt(dst->fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &sysctl_default,
			   sizeof(sysctl_default));
	src->splice_src = NULL;
	dst->splice_dst = NULL;
	close(sp->rfd);
	close(sp->wfd);
	free(sp);
	arm_read(src);
	update_wev(dst);
}

static void set_lowat(struct sp_splice *sp, int v)
{
	/* arm_read, which always follows, arms the timeout of the new mode */
	if (v != sp->lowat && setsockopt(sp->src->fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) == 0)
		sp->lowat = v;
}

/* The low-water mark suits a source that brings a batch per wake-up: one
 * whose last read moved a quarter of one, or that never woke us yet. Near
 * the end of the relay it is what is left (an end of stream wakes anyway). */
static void adapt_lowat(struct sp_splice *sp, ssize_t last_read)
{
	if (sp->lowat != 1 || last_read >= SPLICE_BULK_LOWAT / 4) {
		uint64_t v = sp->to_read < SPLICE_BULK_LOWAT ? sp->to_read : SPLICE_BULK_LOWAT;
		set_lowat(sp, v > 0 ? (int)v : 1);
	}
}

/* A tick with less than the low-water mark: the source is slow; what it
 * sent goes now, and from here on every byte wakes the relay. */
static void splice_slow(struct sp_splice *sp)
{
	set_lowat(sp, 1);
	splice_run(sp);
}

/* Moves what it can both ways until neither side can take more. */
static void splice_run(struct sp_splice *sp)
{
	struct sp_conn *src = sp->src, *dst = sp->dst;
	ssize_t last_read = 0;
	for (;;) {
		int moved = 0;
		if (sp->in_pipe > 0) {
			ssize_t w = splice(sp->rfd, NULL, dst->fd, NULL, sp->in_pipe,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (w > 0) {
				sp->in_pipe -= (size_t)w;
				dst->spliced_out += (uint64_t)w;
				moved = 1;
			} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
				dst->err = errno;
				splice_end(sp);
				dst->on_event(dst, SP_CONN_ERROR | SP_CONN_WRITING, dst->arg);
				return;
			}
		}
		if (sp->to_read > 0 && sp->in_pipe < sp->cap) {
			size_t want = sp->cap - sp->in_pipe;
			if (want > sp->to_read)
				want = (size_t)sp->to_read;
			ssize_t r = splice(src->fd, NULL, sp->wfd, NULL, want,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (r > 0) {
				last_read = r;
				sp->in_pipe += (size_t)r;
				sp->to_read -= (uint64_t)r;
				src->spliced_in += (uint64_t)r;
				moved = 1;
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				/* the stream ended or failed inside the relayed bytes */
				src->err = r == 0 ? 0 : errno;
				src->eof = 1;
				splice_end(sp);
				src->on_event(src, (r == 0 ? SP_CONN_EOF : SP_CONN_ERROR) | SP_CONN_READING,
					      src->arg);
				return;
			}
		}
		if (sp->to_read == 0 && sp->in_pipe == 0) {
			splice_end(sp);
			/* what the destination queued meanwhile goes now */
			if (evbuffer_get_length(dst->out) > 0)
				event_active(dst->wev, EV_WRITE, 0);
			return;
		}
		if (!moved)
			break;
	}
	adapt_lowat(sp, last_read);
	arm_read(src);
	update_wev(dst);
}
