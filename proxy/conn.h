/* A non-blocking TCP connection with input and output evbuffers, used on both
 * sides of the proxy instead of libevent's bufferevents: reads up to 64 KiB
 * at once (2.1's bufferevents read 4 KiB), writes as soon as the caller
 * flushes, and watches for writability only while output is left over, so a
 * keep-alive exchange costs no epoll_ctl calls. */
#ifndef SP_CONN_H
#define SP_CONN_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <sys/socket.h>

/* Event bits, as with bufferevents. */
#define SP_CONN_READING 0x01
#define SP_CONN_WRITING 0x02
#define SP_CONN_DEADLINE 0x04 /* with SP_CONN_TIMEOUT: the owner's deadline */
#define SP_CONN_EOF 0x10
#define SP_CONN_ERROR 0x20
#define SP_CONN_TIMEOUT 0x40
#define SP_CONN_CONNECTED 0x80

struct sp_conn;
struct sp_splice;

/* Readiness callbacks run on this thread so far: the worker's loop looks
 * at it to tell whether a pass of the event loop found anything to do. */
extern _Thread_local unsigned long sp_conn_wakeups;
typedef void (*sp_conn_cb)(struct sp_conn *c, void *arg);
typedef void (*sp_conn_event_cb)(struct sp_conn *c, short what, void *arg);
typedef void (*sp_conn_data_cb)(struct sp_conn *c, const char *p, size_t n, void *arg);

struct sp_conn {
	evutil_socket_t fd;
	struct event *rev, *wev;
	struct evbuffer *in, *out;
	sp_conn_cb on_read;  /* new input arrived */
	sp_conn_cb on_drain; /* output went down to low_water (or empty) */
	sp_conn_event_cb on_event;
	/* Optional (sp_conn_data): bytes read while `in` is empty are handed
	 * over where they were read, a per-thread buffer valid only during the
	 * call, instead of being copied into `in` first; the owner puts what it
	 * does not use into `in` before anything else looks there. */
	sp_conn_data_cb on_data;
	void *arg;
	/* Inactivity timeouts (0: none), kept by one timer per connection
	 * rather than on rev and wev: see schedule() in conn.c. Times are in
	 * microseconds of sp_deadline_now_us (clock.h). */
	struct event *tev;
	int64_t rt_us, wt_us;
	int64_t r_at, w_at; /* last read activity, last write progress */
	int64_t tick_at;    /* a batching relay's next tick */
	int64_t u_at;       /* the owner's deadline (sp_conn_deadline; 0: none) */
	int64_t horizon;    /* the timer is armed at most this far ahead (0: any) */
	int64_t t_due;      /* when tev fires (0: not pending) */
	size_t read_max;  /* stop reading while input holds this much (0: no cap) */
	size_t low_water;
	int err;          /* errno of the last failure */
	unsigned reading : 1, rarmed : 1, warmed : 1, connecting : 1, eof : 1;
	unsigned rtick : 1; /* a splice tick, not the read timeout, watches reads */
	unsigned streaming : 1; /* the last read filled the whole chunk */
	/* splice(2) relay (sp_conn_splice): this connection is its source or
	 * its destination; the byte counts run over the connection's life */
	struct sp_splice *splice_src, *splice_dst;
	uint64_t spliced_in, spliced_out;
	/* a byte of its own (not a TLS handshake's) went out on it: what a
	 * request it held may have reached (splices count in spliced_out) */
	int sent;
	/* TLS (NULL ssl: plain TCP) */
	SSL *ssl;
	const char *tls_error; /* OpenSSL's reason for the last failure */
	const char *tls_verify_error; /* why the peer's certificate failed, or NULL */
	unsigned hs : 1, tls_client : 1, tls_handshake_failed : 1;
	unsigned plain_http : 1; /* a TLS listener got a plain HTTP request */
	unsigned hs_peeked : 1;  /* the server side looked at the first byte */
	unsigned shut_wr : 1, shut_done : 1; /* sp_conn_shutdown_write asked / done */
	unsigned hs_want_read : 1, hs_want_write : 1, w_want_read : 1, r_want_write : 1;
	/* a read delivered data and then met the end (a close_notify, a close,
	 * an alert) in the same records: OpenSSL took it off the socket, so
	 * the next call, which sees it again, is made by hand */
	unsigned tls_end : 1;
	/* bytes at the front of out that an SSL_write took and could not send
	 * yet: OpenSSL holds their record, and they must be passed again as
	 * they are (sp_conn_committed) */
	size_t tls_held;
};

/* Whether a socket call failed for want of this process's or host's
 * resources (descriptors, memory, local ports), which says nothing about the
 * peer: EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL. */
int sp_err_local(int e);

/* Wraps an accepted socket (takes ownership of fd). NULL on failure (fd closed). */
struct sp_conn *sp_conn_new(struct event_base *base, evutil_socket_t fd);
/* Starts connecting to sa; the result arrives as SP_CONN_CONNECTED or
 * SP_CONN_ERROR (or a SP_CONN_TIMEOUT|WRITING past the write timeout). NULL
 * with errno set when even that fails. */
struct sp_conn *sp_conn_connect(struct event_base *base, const struct sockaddr *sa,
				socklen_t len);
void sp_conn_free(struct sp_conn **c);
/* How many bytes at the front of c->out are on their way already and may
 * not be taken back or changed (TLS: a record OpenSSL holds). */
static inline size_t sp_conn_committed(const struct sp_conn *c)
{
	return c->tls_held;
}
/* Server side TLS on an accepted connection: the handshake runs before any
 * data reaches on_read. */
void sp_conn_tls_accept(struct sp_conn *c, SSL_CTX *ctx);
/* Client side TLS on a connecting connection: SNI and certificate check for
 * host; SP_CONN_CONNECTED is reported once the handshake is done. resume
 * (or NULL): the server's session to offer and keep (sp_tls_resume). */
struct sp_tls_resume;
int sp_conn_tls_connect(struct sp_conn *c, SSL_CTX *ctx, const char *host, int is_ip,
			struct sp_tls_resume *resume);
/* Bytes read from the peer by a TLS connection (its handshake's too). */
unsigned long sp_conn_tls_bytes_in(const struct sp_conn *c);
/* Why the TLS handshake failed, for a log line: OpenSSL's reason, with the
 * certificate check's own (X509_verify_cert_error_string) when that is what
 * failed, e.g. "certificate verify failed (certificate has expired)". */
void sp_conn_tls_why(const struct sp_conn *c, char *buf, size_t len);
/* As sp_conn_tls_why for a connection that failed with OpenSSL's reason (a
 * check, an alert, a close in the handshake): 1, else 0 and nothing written. */
int sp_conn_tls_failure(const struct sp_conn *c, char *buf, size_t len);

void sp_conn_setcb(struct sp_conn *c, sp_conn_cb on_read, sp_conn_cb on_drain,
		   sp_conn_event_cb on_event, void *arg);
/* Sets on_data (sp_conn_setcb clears it). A small exchange then costs no
 * buffer chain, copy and drain per read. */
void sp_conn_data(struct sp_conn *c, sp_conn_data_cb on_data);
/* Read and write inactivity timeouts in milliseconds, 0 for none; both count
 * from now. The read timeout runs while reading is enabled and no byte comes,
 * the write timeout while output is left and none of it goes; either ends in
 * on_event(SP_CONN_TIMEOUT | SP_CONN_READING or SP_CONN_WRITING). */
void sp_conn_timeouts(struct sp_conn *c, int read_ms, int write_ms);
/* The owner's own deadline, ms from now (0: none), reported as
 * on_event(SP_CONN_TIMEOUT | SP_CONN_DEADLINE) unless moved or cleared
 * before. The connection's one timer is armed at most horizon_ms ahead (0:
 * no limit), so that a later deadline at least that far off costs no timer
 * operation: a connection moving between an idle deadline and a shorter
 * header deadline at every request passes the header timeout. */
void sp_conn_deadline(struct sp_conn *c, int ms, int horizon_ms);
void sp_conn_read(struct sp_conn *c, int enable);
/* After a failed write: what the peer sent before it reset the connection,
 * which the kernel still holds (an early answer to an upload, then a reset
 * for the bytes it left unread), added to c->in. Plain TCP only; returns the
 * bytes added. */
size_t sp_conn_salvage(struct sp_conn *c);
/* An idle connection's last look before use: 0 when its peer has closed or
 * reset it, or sent bytes nobody asked for (TLS: records that carry no data,
 * such as a session ticket, are read in and do not count). */
int sp_conn_idle_alive(struct sp_conn *c);
/* Writes what it can now; arms the write event for the rest. Also resumes
 * reading that read_max paused once the input has been consumed. */
void sp_conn_flush(struct sp_conn *c);
/* Sends p now, one send(2), when nothing would go before it: plain TCP,
 * connected, nothing queued in out, no relay, no half-close asked. Returns
 * the bytes sent (0 when it did not try or nothing went, a failure
 * included: the caller queues the rest in out, and the flush that follows
 * finds the failure again). Saves queueing a small message in out (a chain
 * allocated, filled, peeked, drained and freed) only to send it whole. */
size_t sp_conn_write_now(struct sp_conn *c, const char *p, size_t n);
/* The same for up to two pieces (p, n and q, m), one call. */
size_t sp_conn_write2_now(struct sp_conn *c, const char *p, size_t n, const char *q, size_t m);

/* 1 when src's next bytes may be relayed to dst by sp_conn_splice: both plain
 * TCP, connected, with nothing buffered (src->in and dst->out empty), and
 * neither already in a relay. */
int sp_conn_can_splice(const struct sp_conn *src, const struct sp_conn *dst);

/* Moves the next n bytes arriving on src's socket to dst's socket through a
 * pipe, kernel to kernel, never through user space. The pair must pass
 * sp_conn_can_splice (else -1 with errno EINVAL).
 * Once all n are written both connections go back to what they did before
 * (src's next read, with its usual callbacks, brings what follows). Meanwhile
 * src->on_read and dst->on_drain stay quiet; an end of stream or a failure
 * on either side ends the relay and is reported by that side's on_event as
 * usual; freeing either side ends it too. A fast source is read in batches
 * (SO_RCVLOWAT), a slow one as it comes: nothing waits longer than a few
 * milliseconds, and src's read timeout still counts from its last byte.
 * Returns -1 with errno set when no pipe can be had (nothing changed: relay
 * the bytes the usual way). */
int sp_conn_splice(struct sp_conn *src, struct sp_conn *dst, uint64_t n);

/* Ends the sending direction once what is queued is written (TCP FIN, and
 * TLS close_notify), while reading goes on: a half-close passed on. */
void sp_conn_shutdown_write(struct sp_conn *c);

/* Best effort, bypassing TLS and the buffers: the few bytes of a plain
 * answer to a client that spoke plain HTTP to a TLS listener (plain_http),
 * before the connection is closed. */
void sp_conn_send_plain(struct sp_conn *c, const char *p, size_t n);

#endif
