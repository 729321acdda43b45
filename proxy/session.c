/* A client connection: parses requests, routes each one, relays it to the
 * chosen backend and streams the answer back, one exchange at a time
 * (pipelined requests wait in the input buffer). Bodies are streamed with
 * backpressure in both directions; nothing is buffered whole. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>

#include "clock.h"
#include "conn.h"
#include "h1.h"
#include "health.h"
#include "log.h"
#include "pathnorm.h"
#include "realip.h"
#include "shadow.h"
#include "worker.h"

/* Interim (1xx) answers a backend may send before its final one, per
 * exchange: more is a bad response. Without a cap a backend sending them
 * without end kept the exchange alive at a core's full speed after its
 * client had left (Go's HTTP client allows 5). */
#define MAX_INTERIM 10
static const char ERR_TOO_MANY_INTERIM[] = "more than 10 interim (1xx) answers";

/* Stop reading one side when the other side's output holds this much. */
#define HIGH_WATER (256 * 1024)
#define LOW_WATER (64 * 1024)

/* Failure kinds: one static string each, used in the log line and the body. */
static const char ERR_CONNECT_REFUSED[] = "connect refused";
static const char ERR_CONNECT_FAILED[] = "connect failed";
static const char ERR_CONNECT_TIMEOUT[] = "connect timeout";
static const char ERR_UPSTREAM_TIMEOUT[] = "upstream timeout";
static const char ERR_PER_TRY_TIMEOUT[] = "per try timeout"; /* retried_from only */
static const char ERR_BAD_RESPONSE[] = "bad upstream response";
static const char ERR_UPSTREAM_CLOSED[] = "upstream closed connection";
static const char ERR_UPSTREAM_RESET[] = "upstream reset";
static const char ERR_TRUNCATED[] = "upstream response truncated";
static const char ERR_TLS[] = "upstream TLS handshake failed";
static const char ERR_CLIENT_ABORTED[] = "client closed connection";
static const char ERR_CLIENT_SEND_TIMEOUT[] = "client send timeout";
static const char ERR_UPSTREAM_SEND_TIMEOUT[] = "upstream send timeout";
static const char ERR_DRAIN[] = "drain timeout";
static const char ERR_MAX_CONNS[] = "every server at max_conns";
static const char ERR_NO_SERVER[] = "every server drained or at max_conns";
static const char ERR_TUNNEL_IDLE[] = "tunnel idle timeout";
static const char ERR_QUEUE_TIMEOUT[] = "queue timeout";

/* the client connection's deadline: its next head, its keep-alive, or a
 * request's wait for a connection slot (backends.NAME.queue) */
enum timer_mode { T_NONE, T_HEADER, T_IDLE, T_QUEUE };

/* A listener with proxy_protocol: its header, read before the TLS handshake
 * or the first request, and only its bytes (a peek first, then what belongs
 * to it), so that what follows stays in the socket for the next reader. */
struct sp_proxy_hdr {
	struct event *ev;
	SSL_CTX *tls; /* the handshake that follows, if any (hs_cfg holds it) */
	size_t have;
	unsigned char buf[SP_PROXY_MAX];
};

struct sp_session {
	struct sp_worker *w;
	TAILQ_ENTRY(sp_session) link;
	struct sp_conn *client;
	struct sp_h1 *req;
	struct sp_h1 *resp;
	struct event *resume; /* goes on with pipelined input after an exchange */
	enum timer_mode timer_mode; /* the client connection's deadline */
	/* the connection's peer (after a PROXY header), appended to
	 * X-Forwarded-For; and the client's own address for the exchange, which
	 * the logs and the client_ip key use: that peer, or what trusted proxies
	 * say of the client behind them (real_ip) */
	char client_ip[INET6_ADDRSTRLEN];
	struct sp_ip peer;
	char real_ip[INET6_ADDRSTRLEN];
	struct sp_ip real_sa; /* real_ip, for match.client_ip */
	const char *client_addr;
	struct sp_proxy_hdr *pp; /* a PROXY header being read, before anything else */
	/* the generation whose certificates the TLS handshake uses (its SNI
	 * callback reads them), held until the first request: a reload
	 * meanwhile must not free them */
	struct sp_config *hs_cfg;
	int https; /* the client connection is TLS */
	/* an exchange has ended on the connection: idle now, it is a keep-alive
	 * connection (one that never carried a request is not: a stop lets it
	 * send its first) */
	int exchanged;
	/* the client reached us over https: TLS, or a trusted balancer's
	 * X-Forwarded-Proto says so (the exchange's; a drawn cookie's Secure) */
	int public_https;

	/* the exchange in progress */
	struct sp_config *cfg;
	struct sp_upconn *up;
	struct sp_shadow *shadow; /* the mirror of this exchange, if any */
	int backend;
	struct sp_decision dec;
	struct evbuffer *pending; /* request bytes produced while parsing */
	struct sp_buf head;       /* serialised request head, kept for one retry */
	/* with request_headers in the configuration: the head without them,
	 * which a move to another backend starts from (retarget) */
	struct sp_buf head_plain;
	int head_queued;          /* head is still to go, before pending (flush_pending) */
	struct sp_buf stage;      /* the answer's head and body, while staged (unstage) */
	int may_stage, staged;
	const char *tail;         /* staged too: body bytes where they were read */
	size_t tail_len;
	struct sp_buf tmp;
	struct sp_buf path;
	struct sp_buf query; /* with log_query: the query string, for the logs */
	int has_query;       /* ...and whether the target had a '?' */
	char method[24];
	char reqid[72];
	enum sp_body_mode req_body, resp_body;
	int req_active, req_done, req_keep, client_minor, is_head, upgrade_req;
	int host_defaulted; /* the request had no Host: the head names the backend's */
	/* the client's Host, kept when a backend has host_header (a retry or a
	 * shadow may have to put it back; it may be empty) */
	struct sp_buf client_host;
	int client_host_known;
	int resp_started, resp_done, interim, tunnel, upstream_keep;
	int64_t tunnel_last_us; /* when a byte last crossed the tunnel */
	int ninterim; /* 1xx answers received in this exchange */
	int client_keep;
	int answered_early; /* the final answer began before the request was whole */
	int retried;
	unsigned attempts; /* connections attached for the exchange (send_again) */
	int status;
	const char *error;
	int up_failed; /* the error was the backend's (connect, timeout, protocol) */
	int refused;   /* the proxy answered a routed request's bad body itself (400, 408, 413) */
	int no_room;   /* every server at max_conns: 503 once the request is read */
	/* every server at max_conns, and the backend has a queue: the request
	 * waits in it (waiter.pool set) for a connection to be given back */
	struct sp_waiter waiter;
	struct sp_pool *via; /* the pool it waited in, until it connects through it */
	struct sp_route_stats *wait_stats; /* counting it as waiting (strangler_queue_waiting) */
	struct sp_side_stats *wait_side;   /* there */
	struct timespec t_queued;
	enum sp_queue_end queued; /* it waited, and how that ended (the access log's queue_ms) */
	double queue_ms;          /* set when it left the queue */
	/* the route answers itself (return): once the request is read, its body
	 * dropped; at once (answer_now) when the client waits to send one. A
	 * body still on its way is not waited for: the answer goes out at once
	 * (own_sent: 1, with "Connection: close"; 2, keep-alive), the rest of
	 * the body is dropped as it comes, and the exchange ends with it, as
	 * nginx's return does */
	int own_answer, answer_now, own_sent;
	int fallback_from; /* backend the request moved away from (down or refused), or -1 */
	int server;        /* the server of backend that the exchange goes to, or -1 */
	uint64_t tried;    /* the servers of backend it could not connect to (SP_SERVERS_MAX bits) */
	/* an answer of the backend's retry_on_status, left unread: the status,
	 * and the server the request goes to next (0 when none is pending) */
	int retry_status, retry_to;
	/* a server answered it (retry_on_status) or may be at work on it
	 * (per_try_timeout_ms): it stays on its backend */
	int answered_once;
	int denial_counted; /* its retry_budget refusal is counted (once an exchange) */
	/* the servers it left, for the access log's retried_from */
	struct sp_access_try tries[SP_ACCESS_TRIES];
	unsigned ntries;
	struct timespec t_start, t_up;
	int t_stamped; /* t_start is this request's first byte (else the accept) */
	double upstream_ms;
	double upload_ms; /* of upstream_ms, the time the request body took to come */
	uint64_t bytes_in, bytes_out; /* besides what splice(2) moved: */
	uint64_t interim_out; /* 1xx heads sent (bytes_out is the final answer's) */
	uint64_t spliced_in0, spliced_out0; /* the client's splice counts when the exchange began */
	uint64_t req_body_bytes;

	int closing;       /* close once the client output is flushed */
	int linger;        /* ...then half-close and read what still comes (lingering) */
	int client_eof;    /* the client half-closed: answer what it sent, then close */
	int dead;          /* free at the end of the current callback */
	int in_callback;
	int up_paused;     /* upstream reading stopped: client output full */
	int client_paused; /* client reading stopped: upstream output full */
};

static void session_free(struct sp_session *s);
static void process_client(struct sp_session *s);
static void on_up_read(struct sp_conn *c, void *arg);
static void on_up_data(struct sp_conn *c, const char *p, size_t n, void *arg);
static void on_conn_drain(struct sp_conn *c, void *arg);
static void on_up_event(struct sp_conn *c, short what, void *arg);
static void pump(struct sp_session *s);
static void unstage(struct sp_session *s, int direct);

/* Every libevent entry point brackets its work with enter/leave so that a
 * session is only freed once nothing on the stack still uses it. */
static void enter(struct sp_session *s)
{
	s->in_callback++;
}

static void leave(struct sp_session *s)
{
	if (s->in_callback == 1 && !s->dead)
		pump(s);
	if (--s->in_callback == 0 && s->dead)
		session_free(s);
}

/* The header and keep-alive timeouts are the client connection's deadline,
 * kept by its timer (conn.c). That timer is armed at most a header timeout
 * ahead, so that the next request's first bytes, which set the header
 * deadline, find it pending early enough: a keep-alive exchange costs no
 * timer operation, where a timer of the session's own cost two adds and a
 * delete, each a heap update. An idle connection wakes once per header
 * timeout for it. */
static void set_timer(struct sp_session *s, enum timer_mode mode)
{
	const struct sp_limits *lim = &s->w->cfg->limits;
	int ms = mode == T_HEADER ? lim->header_timeout_ms : lim->keepalive_timeout_ms;
	s->timer_mode = mode;
	sp_conn_deadline(s->client, mode == T_NONE ? 0 : ms, lim->header_timeout_ms);
}

/* The client's read timeout (0: none) and, always, its send timeout:
 * output that makes no progress for timeouts.client_send_ms (a client that
 * stopped reading) ends the connection. */
static void client_timeouts(struct sp_session *s, int read_ms)
{
	sp_conn_timeouts(s->client, read_ms, s->w->cfg->limits.send_timeout_ms);
}

static struct evbuffer *client_out(struct sp_session *s)
{
	return s->client->out;
}

/* Each 64-bit draw gives 16 hex digits, its lowest nibble first, two digits
 * a byte (a table of the 256 pairs: 200 -> 70 instructions per request). */
static void hex16(char *out, uint64_t v)
{
#define HD(n) ((char)((n) < 10 ? '0' + (n) : 'a' + (n) - 10))
#define P1(i) {HD((i) & 15), HD((i) >> 4)}
#define P4(i) P1(i), P1((i) + 1), P1((i) + 2), P1((i) + 3)
#define P16(i) P4(i), P4((i) + 4), P4((i) + 8), P4((i) + 12)
#define P64(i) P16(i), P16((i) + 16), P16((i) + 32), P16((i) + 48)
	static const char pairs[256][2] = {P64(0), P64(64), P64(128), P64(192)};
#undef HD
#undef P1
#undef P4
#undef P16
#undef P64
	for (int i = 0; i < 8; i++, v >>= 8)
		memcpy(out + 2 * i, pairs[v & 255], 2);
}

static void new_request_id(struct sp_session *s)
{
	hex16(s->reqid, sp_rng_next(&s->w->rng));
	hex16(s->reqid + 16, sp_rng_next(&s->w->rng));
	s->reqid[32] = '\0';
}

/* Keeps a client's X-Request-Id when it is short and printable. */
static int take_request_id(struct sp_session *s, const struct sp_h1_msg *m)
{
	for (size_t k = 0; k < m->nhdrs; k++) {
		const struct sp_hdr *h = &m->hdrs[k];
		if (!sp_hdr_name_is(h, "X-Request-Id") || h->value_len == 0 ||
		    h->value_len >= sizeof(s->reqid))
			continue;
		size_t i = 0;
		while (i < h->value_len && h->value[i] > ' ' && h->value[i] < 0x7f)
			i++;
		if (i < h->value_len)
			continue;
		memcpy(s->reqid, h->value, h->value_len);
		s->reqid[h->value_len] = '\0';
		return 1;
	}
	return 0;
}

static void log_exchange(struct sp_session *s)
{
	const struct sp_config *cfg = s->cfg ? s->cfg : s->w->cfg;
	struct sp_access_entry e = {
		.client = s->client_addr,
		.peer = s->client_addr != s->client_ip ? s->client_ip : NULL,
		.method = s->method[0] ? s->method : NULL,
		.path = s->path.len ? s->path.data : NULL,
		.path_len = s->path.len,
		.status = s->status,
		.route = s->dec.route ? s->dec.route->name : NULL,
		.backend = s->backend >= 0 ? cfg->backends[s->backend].name : NULL,
		.server = s->backend >= 0 && s->server >= 0
				  ? cfg->backends[s->backend].servers[s->server].hostport
				  : NULL,
		.has_bucket = s->dec.rolled,
		.bucket = s->dec.bucket,
		.upstream_ms = s->upstream_ms,
		.total_ms = sp_ms_since(&s->t_start),
		.bytes_in = s->bytes_in + (s->client->spliced_in - s->spliced_in0),
		.bytes_out = s->bytes_out + s->interim_out + (s->client->spliced_out - s->spliced_out0),
		.request_id = s->reqid[0] ? s->reqid : NULL,
		.error = s->error,
		.fallback_from = s->fallback_from >= 0 ? cfg->backends[s->fallback_from].name : NULL,
		.tries = s->tries,
		.ntries = s->ntries,
		.queued = s->queued != SP_QUEUE_NONE,
		.queue_ms = s->waiter.pool ? sp_ms_since(&s->t_queued) : s->queue_ms,
		.log_query = cfg->log_query,
		.query = s->has_query ? (s->query.data ? s->query.data : "") : NULL,
		.query_len = s->query.len,
	};
	sp_accesslog_write(s->w->alog, &e, &s->w->logbuf);
	/* the backend's own time: until its answer, without the upload */
	double wait_ms = s->upstream_ms < 0 ? -1
			 : s->upstream_ms - (s->upload_ms < s->upstream_ms ? s->upload_ms : s->upstream_ms);
	/* a refused body is the client's doing, not the backend's: the
	 * proxy's answer in the metrics (and the guard), as before routing */
	sp_worker_count(s->w, cfg, s->dec.route, s->refused ? NULL : e.backend, s->status,
			s->up_failed ? s->error : NULL, e.total_ms, wait_ms);
	if (e.fallback_from)
		sp_worker_count_fallback(s->w, cfg, s->dec.route, e.fallback_from);
	if (s->queued) /* the backend it waited for: the one it may have left since */
		sp_worker_count_queued(s->w, cfg, s->dec.route,
				       e.fallback_from ? e.fallback_from : e.backend, s->queued);
}

/* Out of its backend's queue, if in one: no longer counted as waiting. */
static void unqueue(struct sp_session *s)
{
	sp_pool_unwait(&s->waiter);
	sp_worker_wait_end(s->w, &s->wait_stats, s->wait_side);
}

static void reset_exchange(struct sp_session *s)
{
	s->exchanged = 1;
	unqueue(s);
	sp_pool_release(&s->via);
	sp_shadow_abandon(&s->shadow);
	sp_upconn_free(&s->up);
	sp_config_unref(&s->cfg);
	size_t pending = evbuffer_get_length(s->pending);
	if (pending > 0)
		evbuffer_drain(s->pending, pending);
	s->head_queued = 0;
	unstage(s, 0); /* a staged answer not sent yet is queued: nothing is lost */
	s->backend = -1;
	s->client_addr = s->client_ip;
	memset(&s->dec, 0, sizeof(s->dec));
	s->method[0] = '\0';
	s->reqid[0] = '\0';
	sp_buf_reset(&s->path);
	sp_buf_reset(&s->query);
	s->has_query = 0;
	s->req_active = s->req_done = s->resp_started = s->resp_done = 0;
	s->interim = s->ninterim = s->retried = s->status = 0;
	s->answered_early = 0;
	s->error = NULL;
	s->up_failed = s->refused = s->no_room = s->own_answer = s->answer_now = s->own_sent = 0;
	s->fallback_from = -1;
	s->server = -1;
	s->queued = SP_QUEUE_NONE;
	s->tried = 0;
	s->retry_status = s->answered_once = s->denial_counted = 0;
	s->ntries = 0;
	s->upstream_ms = -1;
	s->t_up = (struct timespec){0, 0}; /* this exchange's connection is not up yet */
	s->upload_ms = 0;
	s->bytes_in = s->bytes_out = s->interim_out = 0;
	s->spliced_in0 = s->client->spliced_in;
	s->spliced_out0 = s->client->spliced_out;
	s->req_body_bytes = 0;
	s->up_paused = 0;
	s->t_stamped = 0; /* t_start is set when the next request's first bytes are read */
}

/* A close with request bytes still unread makes the kernel answer them with
 * a reset, which may destroy the answer before the client read it (a 413 to
 * an upload). So, as nginx's lingering close: once the answer is written,
 * half-close, read and drop what comes for a while, then close. */
#define LINGER_READ_MS 5000   /* silence that ends it */
#define LINGER_TOTAL_MS 30000 /* and at most this long */

static void start_closing(struct sp_session *s)
{
	s->closing = 1;
	s->linger = !s->client_eof && !s->client->plain_http &&
		    (evbuffer_get_length(s->client->in) > 0 || sp_h1_in_message(s->req));
	sp_conn_read(s->client, 0);
	set_timer(s, T_NONE);
	s->client->low_water = 0; /* pump() closes once everything is written */
}

/* With at most this many connections a worker lets each keep its buffers
 * between requests, those a stash would keep (SP_STASH_MAX_BLOCK at most;
 * 3-4 KiB a connection usually, under 512 KiB in all): giving them back to
 * the stash after every exchange and taking them again for the next cost 9
 * stash operations a request, 5 % of its instructions, for memory that only
 * matters with thousands of idle connections. */
#define KEEP_BLOCKS_UPTO 128

/* What a client's request head may hold, as cfg says. */
static struct sp_h1_limits request_limits(const struct sp_config *cfg)
{
	const struct sp_limits *lim = &cfg->limits;
	return (struct sp_h1_limits){(size_t)lim->max_request_line, (size_t)lim->max_header_bytes,
				     (size_t)lim->max_headers};
}

/* The connection waits for its next request; pipelined bytes already read
 * are parsed from the event loop, not from this stack. */
static void continue_keepalive(struct sp_session *s)
{
	if (s->client_eof && evbuffer_get_length(s->client->in) == 0) {
		start_closing(s); /* it sent all it will */
		return;
	}
	s->client_paused = 0;
	sp_conn_read(s->client, 1);
	sp_h1_resume(s->req);
	set_timer(s, T_IDLE);
	if (evbuffer_get_length(s->client->out) > HIGH_WATER) {
		/* a client pipelining without reading: its answers pile up here;
		 * take no more of its requests until they drain (pump) */
		s->client_paused = 1;
		sp_conn_read(s->client, 0);
		return;
	}
	if (evbuffer_get_length(s->client->in) > 0) {
		event_active(s->resume, EV_READ, 0);
	} else {
		/* idle: keep only the fixed parts of the connection (thousands of
		 * idle keep-alive clients would otherwise hold their last head),
		 * or, with few connections, blocks a stash would keep too */
		size_t over = s->w->nsessions > KEEP_BLOCKS_UPTO ? 0 : SP_STASH_MAX_BLOCK;
		struct sp_buf *b[] = {&s->head, &s->head_plain, &s->stage, &s->tmp, &s->path,
				      &s->client_host};
		sp_h1_trim_over(s->req, over);
		sp_h1_trim_over(s->resp, over);
		for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++)
			if (b[i]->cap > over)
				sp_buf_deinit(b[i]);
	}
}

/* The proxy answers by itself (errors, a route's return), then goes on or
 * closes. answer_write: its answer, b, goes out; the exchange is not over
 * yet. */
static void answer_write(struct sp_session *s, int status, const struct sp_buf *b)
{
	evbuffer_add(client_out(s), b->data, b->len);
	s->status = status;
	s->bytes_out += b->len;
}

/* The exchange is over: logged, then the connection goes on or closes. */
static void exchange_end(struct sp_session *s, int keep)
{
	log_exchange(s);
	reset_exchange(s);
	if (keep)
		continue_keepalive(s);
	else
		start_closing(s);
}

/* b goes out and the exchange ends there; the connection goes on when keep. */
static void answered(struct sp_session *s, int status, const struct sp_buf *b, int keep)
{
	answer_write(s, status, b);
	exchange_end(s, keep);
}

static void answer(struct sp_session *s, int status, const char *msg, int keep)
{
	struct sp_buf *b = &s->tmp;
	sp_buf_reset(b);
	keep = keep && !s->w->draining;
	if (sp_http_write_simple(b, status, msg, sp_http_keep(keep, s->client_minor),
				 s->reqid[0] ? s->reqid : NULL,
				 sp_worker_date(s->w), strcmp(s->method, "HEAD") == 0) < 0)
		sp_buf_reset(b);
	answered(s, status, b, keep);
}

/* The route's return answer (its Location made when the head was read, in
 * s->head). early: the request's body is not all read yet; the answer goes
 * out now and the exchange goes on, dropping the body (own_answer_end). */
static void answer_as_route(struct sp_session *s, int early)
{
	const struct sp_return *r = &s->dec.route->ret;
	int keep = s->req_keep && (s->req_done || early) && !s->w->draining;
	struct sp_return_ctx x = {s->head.len ? s->head.data : NULL, s->reqid[0] ? s->reqid : NULL,
				  sp_worker_date(s->w), sp_http_keep(keep, s->client_minor),
				  s->is_head};
	sp_buf_reset(&s->tmp);
	if (sp_return_write(r, &x, &s->tmp) < 0) {
		answer(s, 500, "out of memory", 0);
		return;
	}
	answer_write(s, r->status, &s->tmp);
	if (early)
		s->own_sent = 1 + keep;
	else
		exchange_end(s, keep);
}

/* The exchange whose answer went out before its body ends: the body is all
 * read (why NULL), or it failed (why: it stalled, was malformed, passed the
 * size limit), which ends the connection once the answer is written. */
static void own_answer_end(struct sp_session *s, const char *why)
{
	s->error = why;
	exchange_end(s, !why && s->own_sent == 2 && !s->w->draining);
}

/* The exchange failed on the backend side. */
static void attach_upstream(struct sp_session *s, enum sp_take take);

/* A request that can be sent again as it was when its backend connection
 * turns out closed before any answer: nothing can have happened twice (RFC
 * 9112 9.3.1: never a POST, which may have acted, nor a body already
 * streamed on). Others take a pooled connection only once checked alive. */
static int replayable(const struct sp_session *s)
{
	return sp_http_replayable(s->method, s->req_body != SP_BODY_NONE);
}

static enum sp_take take_for(const struct sp_session *s)
{
	return replayable(s) ? SP_TAKE_IDLE : SP_TAKE_CHECKED;
}

/* The route's other side: the rollout backend for the base, and back. */
static int other_side(const struct sp_session *s)
{
	const struct sp_route *r = s->dec.route;
	if (!r || !r->has_rollout)
		return -1;
	return s->backend == r->backend ? r->rollout.backend : r->backend;
}

/* Where a request its side cannot serve (down, full, refused) may go: the
 * other side, but the rollout backend only while the rollout gives it a
 * share. At 0 % (not started, pulled back, a guard's trip) it serves no
 * user, not even the base side's overflow: the base is the fallback that
 * is always there. */
static int fallback_side(const struct sp_session *s)
{
	int other = other_side(s);
	const struct sp_route *r = s->dec.route;
	if (other < 0 || other == s->backend) /* a rollout to the route's own backend */
		return -1;
	if (other != r->rollout.backend)
		return other;
	/* the share as it is now: a request that started before a pull back
	 * (an admin change, a guard's trip) follows it too */
	const struct sp_route *now = s->w->cfg == s->cfg ? r : sp_config_route(s->w->cfg, r->name);
	uint32_t bp = now && now->has_rollout &&
				      strcmp(s->w->cfg->backends[now->rollout.backend].name,
					     s->cfg->backends[other].name) == 0
			      ? now->rollout.percent_bp
			      : r->rollout.percent_bp;
	return bp == 0 ? -1 : other;
}

/* The server the exchange goes to. */
static const struct sp_server *server_of(const struct sp_session *s)
{
	return &s->cfg->backends[s->backend].servers[s->server];
}

/* What a connection that never came up may be sent again on another: an
 * idempotent request without a body, before any answer (nothing reached the
 * backend, so nothing can have happened twice). */
static int may_resend(const struct sp_session *s)
{
	return !s->resp_started && s->req_done && replayable(s);
}

static void flush_pending(struct sp_session *s);

/* Sends the request again, its head and what is pending of its body (all
 * of it when taken back from a connection that sent none: take_back_unsent),
 * on a connection taken as take says. A connection that fails at once
 * retries inside attach_upstream, and that retry sends the request itself:
 * only the attempt still current queues it, so it goes out once. */
static void send_again(struct sp_session *s, enum sp_take take)
{
	unsigned attempt = ++s->attempts;
	s->head_queued = 1;
	attach_upstream(s, take);
	if (s->up && s->attempts == attempt)
		flush_pending(s);
}

/* The errors of a connection that never carried a byte of the request:
 * it could not be made, or its TLS handshake failed. */
static int connect_error(const char *err)
{
	return strcmp(err, ERR_CONNECT_REFUSED) == 0 || strcmp(err, ERR_CONNECT_FAILED) == 0 ||
	       strcmp(err, ERR_CONNECT_TIMEOUT) == 0 || strcmp(err, ERR_TLS) == 0;
}

/* A request whose new connection failed (connect_error) before any byte
 * went out on it has reached no server: whatever of it the connection held
 * goes back in front of the pending bytes, its head to be queued again,
 * and any request, a POST and its body too, may go to another server as if
 * this one had never been tried (nginx's proxy_next_upstream error, Envoy's
 * connect-failure, for every method). 1 when so; the connection is left
 * empty for the caller to free. */
static int take_back_unsent(struct sp_session *s, const char *err)
{
	if (!connect_error(err))
		return 0;
	if (!s->up) /* failed at once (attach_upstream): nothing was queued */
		return s->head_queued;
	struct sp_conn *c = s->up->conn;
	if (s->up->reused || c->sent || c->spliced_out || sp_conn_committed(c))
		return 0;
	if (!s->head_queued) { /* the head leads what the connection holds */
		if (evbuffer_get_length(c->out) < s->head.len)
			return 0;
		evbuffer_drain(c->out, s->head.len);
		s->head_queued = 1;
	}
	evbuffer_prepend_buffer(s->pending, c->out);
	return 1;
}

/* Whether err leaves a request that may be sent again (may_resend, or
 * unsent: take_back_unsent) free to go to another server: a connection that
 * could not be made (refused, failed, timed out), or one the server closed
 * or reset before any of its answer (nginx's proxy_next_upstream error
 * timeout, for idempotent requests). Not a response timeout: a slow backend
 * would be asked twice, the client kept waiting twice. Not after an interim
 * answer went out. */
static int next_server_may_take(const struct sp_session *s, const char *err, int unsent)
{
	/* by text: a connection that fails at once says so from upstream.c */
	if (!unsent && !may_resend(s))
		return 0;
	if (strcmp(err, ERR_UPSTREAM_RESET) == 0 || strcmp(err, ERR_UPSTREAM_CLOSED) == 0)
		return !s->ninterim && !sp_h1_in_message(s->resp);
	return connect_error(err);
}

/* The server of backend, not tried yet, that may take a request which the
 * current server failed (sp_health_pick_retry), or -1; that server then
 * counts as tried. */
static int next_server(struct sp_session *s)
{
	if (s->cfg->backends[s->backend].nservers < 2)
		return -1;
	s->tried |= (uint64_t)1 << s->server;
	return sp_worker_pick_retry(s->w, s->cfg, s->backend, s->tried, s->server);
}

/* The current server, left for another (the access log's retried_from):
 * after its answer with status, or its failure err. */
static void note_left(struct sp_session *s, int status, const char *err)
{
	if (s->ntries < SP_ACCESS_TRIES && s->server >= 0)
		s->tries[s->ntries++] = (struct sp_access_try){server_of(s)->hostport, status, err};
}

/* Sends the request on to server i of its backend, instead of the current
 * one (counted as that one's retry), which it left after its answer with
 * status or its failure err. */
static void resend_to(struct sp_session *s, int i, int status, const char *err)
{
	note_left(s, status, err);
	sp_health_count_retry(server_of(s));
	sp_shadow_primary_retried(s->shadow);
	s->server = i;
	s->retried = 0; /* that server's pooled connection may be stale too (may_retry) */
	send_again(s, take_for(s));
}

/* A request whose exchange failed so (next_server_may_take) goes to another
 * server of the backend, not tried yet, each at most once. */
static int retry_next_server(struct sp_session *s, const char *err, int unsent)
{
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	int i;
	if (!next_server_may_take(s, err, unsent) || (i = next_server(s)) < 0)
		return 0;
	sp_log(SP_LOG_INFO, "backend %s: %s: %s; request %s retried on %s", be->name,
	       server_of(s)->hostport, err, s->reqid, be->servers[i].hostport);
	resend_to(s, i, 0, err);
	return 1;
}

/* The server of the backend, not tried yet, that a retry costing the
 * backend a second exchange (after an answer, or per_try_timeout_ms) goes
 * to, within its retry_budget (spent for it), or -1. The budget first: a
 * pick may take a down server's trial, which a retry the budget refuses
 * would waste. */
static int budgeted_next_server(struct sp_session *s)
{
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	uint64_t all = be->nservers >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << be->nservers) - 1;
	if (be->nservers < 2 || ((s->tried | (uint64_t)1 << s->server) & all) == all)
		return -1; /* no server left to try: no retry the budget could deny */
	if (!sp_worker_retry_fits(s->w, s->cfg, s->backend)) {
		sp_debug("backend %s: %s: request %s not retried: retry_budget spent", be->name,
			 server_of(s)->hostport, s->reqid);
		/* once: a try that timed out may answer a retried status later */
		if (!s->denial_counted)
			sp_health_count_retry_denied(server_of(s));
		s->denial_counted = 1;
		return -1;
	}
	uint64_t tried = s->tried;
	int i = next_server(s);
	if (i < 0) {
		s->tried = tried;
		return -1;
	}
	sp_worker_retry_spend(s->w, s->cfg, s->backend);
	return i;
}

/* retry_on_status: an answer with one of the backend's listed statuses to
 * a request that may be sent again (may_resend), before any answer went to
 * the client (no 1xx either), is left unread and the request goes to
 * another server not tried yet, as after a failed connection (nginx's
 * proxy_next_upstream http_503). 1: so (the parse stops, retry_on_answer
 * sends it). The last server's answer, whatever it is, is the client's. */
static int answer_retries(struct sp_session *s, int status)
{
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	int i;
	if (!be->retry_any && !be->per_try_timeout_ms)
		return 0;
	sp_worker_note_answer(s->w, s->cfg, s->backend);
	if (!sp_backend_retries_status(be, status) || !may_resend(s) || s->ninterim ||
	    (i = budgeted_next_server(s)) < 0)
		return 0;
	s->retry_status = status;
	s->retry_to = i;
	return 1;
}

/* The request whose answer answer_retries left goes to the next server; its
 * connection, with the answer's unread rest, closes. */
static void retry_on_answer(struct sp_session *s)
{
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	sp_log(SP_LOG_INFO, "backend %s: %s answered %d; request %s retried on %s", be->name,
	       server_of(s)->hostport, s->retry_status, s->reqid, be->servers[s->retry_to].hostport);
	int status = s->retry_status;
	s->retry_status = 0;
	s->answered_once = 1;
	sp_upconn_free(&s->up);
	resend_to(s, s->retry_to, status, NULL);
}

/* Whether the try is bounded by the backend's per_try_timeout_ms: one
 * shorter than response_ms (the response timeout), a request that may be
 * sent again (no body), no answer begun, a server not tried yet left. */
static int try_bounded(const struct sp_session *s, int response_ms)
{
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	uint64_t tried = s->tried | (uint64_t)1 << s->server;
	return be->per_try_timeout_ms && be->per_try_timeout_ms < response_ms && replayable(s) &&
	       !s->resp_started && !s->ninterim && !sp_h1_in_message(s->resp) &&
	       (size_t)__builtin_popcountll(tried) < be->nservers;
}

/* per_try_timeout_ms ran out before the server began its answer: the
 * request goes to another server not tried yet, within the retry budget,
 * and the server counts a failed request. Else it waits on for its answer,
 * for the response timeout (which counts from the request's sending). */
static void try_timed_out(struct sp_session *s)
{
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	int i;
	if (s->ninterim || sp_h1_in_message(s->resp) || !may_resend(s) ||
	    (i = budgeted_next_server(s)) < 0)
		return;
	sp_health_report(be, server_of(s), 0);
	sp_log(SP_LOG_INFO,
	       "backend %s: %s: no answer within per_try_timeout_ms; request %s retried on %s",
	       be->name, server_of(s)->hostport, s->reqid, be->servers[i].hostport);
	s->answered_once = 1; /* the server may be at work on it: not the other side's */
	sp_upconn_free(&s->up);
	resend_to(s, i, 0, ERR_PER_TRY_TIMEOUT);
}

/* The Host a request sends to backend b: its host_header, else the
 * client's, else (an HTTP/1.0 request without one) its first server's. NULL:
 * the client's, not kept (no backend has host_header, so none is needed). */
static const char *host_to(const struct sp_session *s, int b)
{
	const struct sp_backend *be = &s->cfg->backends[b];
	if (be->host_header)
		return be->host_header;
	if (s->host_defaulted)
		return sp_server_authority(&be->servers[0]);
	if (!s->client_host_known)
		return NULL;
	return s->client_host.data ? s->client_host.data : "";
}

/* The path backend b receives (its path_rewrite's, written to out, else
 * the request's); NULL when out of memory. */
static const char *path_to(const struct sp_session *s, int b, struct sp_buf *out, size_t *len)
{
	const struct sp_backend *be = &s->cfg->backends[b];
	int rc = be->nrewrite ? sp_rewrite_path(be->rewrite, be->nrewrite, s->path.data,
						s->path.len, out)
			      : -1;
	*len = rc >= 0 ? out->len : s->path.len;
	return rc == -2 ? NULL : rc >= 0 ? out->data : s->path.data;
}

/* What a head made for backend `from` changes for backend `to` (t; the
 * path in s->tmp). 0, or -1 when it cannot be known (a Host not kept, no
 * memory). */
static int retarget_for(struct sp_session *s, int from, int to, struct sp_retarget *t)
{
	const char *was = host_to(s, from), *now = host_to(s, to);
	*t = (struct sp_retarget){NULL, NULL, 0};
	if (!(was == now || (was && now && strcmp(was, now) == 0))) {
		if (!now)
			return -1;
		t->host = now;
	}
	/* the path as `to` takes it, when either has rules (the same path
	 * written again costs nothing that matters there) */
	if (s->cfg->backends[from].nrewrite || s->cfg->backends[to].nrewrite)
		if (!(t->path = path_to(s, to, &s->tmp, &t->path_len)))
			return -1;
	return 0;
}

/* What the variables of header rules stand for in this exchange. */
static struct sp_hdr_vars vars_of(const struct sp_session *s)
{
	struct sp_hdr_vars v = {.remote_addr = s->client_addr,
				.scheme = s->https ? "https" : "http",
				.public_scheme = s->public_https ? "https" : "http",
				.request_id = s->reqid};
	if (s->client_host_known) {
		v.http_host = s->client_host.data ? s->client_host.data : "";
		v.http_host_len = s->client_host.len;
	}
	return v;
}

/* s->head made for backend b from the head without request_headers (which
 * is kept, when the configuration has them, for the next move). */
static int head_for(struct sp_session *s, int b)
{
	const struct sp_hdr_rules *r = &s->cfg->backends[b].req_headers;
	struct sp_hdr_vars v = vars_of(s);
	sp_buf_reset(&s->head);
	return sp_buf_add(&s->head, s->head_plain.data, s->head_plain.len) < 0 ||
			       (sp_hdr_rules_any(r) && sp_hdr_rules_apply(r, &v, &s->head) < 0)
		       ? -1
		       : 0;
}

/* s->head, made for s->backend, made for backend `to` (t: retarget_for). */
static int retarget_head(struct sp_session *s, int to, const struct sp_retarget *t)
{
	if (!s->cfg->request_header_rules)
		return sp_http_retarget(&s->head, t);
	return sp_http_retarget(&s->head_plain, t) < 0 ? -1 : head_for(s, to);
}

/* A refused connection for a request that reached no server (may_resend, or
 * unsent: take_back_unsent) goes once to the route's other side, when no
 * server of its backend took it. */
static int retry_other_side(struct sp_session *s, const char *err, int unsent)
{
	int other = fallback_side(s), k;
	struct sp_retarget t;
	if (strcmp(err, ERR_CONNECT_REFUSED) != 0 || !(unsent || may_resend(s)) || other < 0 ||
	    s->fallback_from >= 0 || s->answered_once ||
	    (k = sp_worker_pick_any(s->w, s->cfg, other)) < 0 ||
	    retarget_for(s, s->backend, other, &t) < 0 || retarget_head(s, other, &t) < 0)
		return 0;
	sp_log(SP_LOG_INFO, "route %s: %s refused the connection; request %s retried on %s",
	       s->dec.route->name, s->cfg->backends[s->backend].name, s->reqid,
	       s->cfg->backends[other].name);
	note_left(s, 0, err);
	s->fallback_from = s->backend;
	s->backend = other;
	s->server = k;
	s->tried = 0;
	sp_shadow_primary_moved(&s->shadow, other);
	send_again(s, take_for(s));
	return 1;
}

/* A response whose head is still entirely in our output buffer (nothing of
 * it reached the client yet, e.g. a bad chunk right after the head) is taken
 * back, so the client gets a clean 502 instead of an aborted answer. */
static void retract_unsent(struct sp_session *s)
{
	struct evbuffer *out = client_out(s), *keep;
	size_t len = evbuffer_get_length(out);
	/* bytes TLS holds in a record are on their way: if any is this
	 * answer's, it cannot be taken back (the caller aborts it) */
	if (len < s->bytes_out || len - s->bytes_out < sp_conn_committed(s->client) ||
	    !(keep = evbuffer_new()))
		return;
	evbuffer_remove_buffer(out, keep, len - s->bytes_out); /* earlier answers */
	evbuffer_drain(out, evbuffer_get_length(out));
	evbuffer_add_buffer(out, keep);
	evbuffer_free(keep);
	s->bytes_out = 0;
	s->resp_started = 0;
}

/* The client's connection is to end with its answer cut: nothing may read
 * as that answer's end. A close-delimited body (an HTTP/1.0 client's
 * answer) would take a FIN for its end, a shorter "complete" answer: that
 * client's connection is reset instead (SO_LINGER 0); a chunked or sized
 * body is visibly cut short by any close. TLS ends without close_notify (a
 * clean TLS end would pass for complete). */
static void end_as_cut(struct sp_session *s)
{
	if (s->resp_body == SP_BODY_CLOSE) {
		struct linger lg = {1, 0};
		setsockopt(s->client->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (s->client->ssl)
		SSL_set_quiet_shutdown(s->client->ssl, 1);
}

/* An answer whose head went out cannot be finished: the connection ends. */
static void abort_answer(struct sp_session *s)
{
	end_as_cut(s);
	log_exchange(s);
	reset_exchange(s);
	s->dead = 1;
}

static void upstream_failed(struct sp_session *s, const char *err, int status)
{
	int unsent = err != SP_ERR_LOCAL && take_back_unsent(s, err);
	sp_upconn_free(&s->up);
	if (err == SP_ERR_LOCAL) {
		/* our shortage (descriptors, memory, ports): not the backend's
		 * failure, and the other side would fare no better */
		status = 503;
	} else {
		sp_health_report(&s->cfg->backends[s->backend], server_of(s), 0);
		if (retry_next_server(s, err, unsent) || retry_other_side(s, err, unsent))
			return;
	}
	if (unsent) { /* not sent elsewhere: what was taken back goes nowhere */
		s->head_queued = 0;
		evbuffer_drain(s->pending, evbuffer_get_length(s->pending));
	}
	s->error = err;
	s->up_failed = 1;
	if (s->t_up.tv_sec && !s->resp_started) /* else: the head's time, already set */
		s->upstream_ms = sp_ms_since(&s->t_up);
	sp_log(SP_LOG_WARN, "backend %s (%s): %s [request %s]", s->cfg->backends[s->backend].name,
	       server_of(s)->hostport, err, s->reqid);
	if (s->resp_started)
		retract_unsent(s);
	/* no answer from the backend: strangler's own 502 or 504 is not one to
	 * compare (it read as the backend's, and fed a guard's max_diff_rate:
	 * the old side failing pulled the new one back) */
	sp_shadow_abandon(&s->shadow);
	if (s->resp_started) {
		/* The head is out: the only honest signal left is an aborted
		 * connection (no terminating chunk, no fake success). */
		abort_answer(s);
		return;
	}
	/* The body may be half read: only a finished request can keep the
	 * connection. */
	answer(s, status, err, s->req_done && s->req_keep);
}

/* Until the connection is up (a TLS handshake included) connect_timeout_ms
 * bounds it both ways. Then the response timeout (the route's, else the
 * backend's) counts once the whole request is sent (as the docs say, and
 * nginx's proxy_read_timeout): during a long upload the client's body
 * timeout and the backend's write timeout watch the transfer. */
static void upstream_timeouts(struct sp_session *s)
{
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	if (!s->up->reused && !s->up->connected) {
		sp_conn_timeouts(s->up->conn, be->connect_timeout_ms, be->connect_timeout_ms);
		return;
	}
	int ms = s->dec.route && s->dec.route->response_timeout_ms ? s->dec.route->response_timeout_ms
								     : be->response_timeout_ms;
	int sent = s->req_done || s->req_body == SP_BODY_NONE; /* or as good as sent */
	sp_conn_timeouts(s->up->conn, sent ? ms : 0, ms);
	if (sent && try_bounded(s, ms))
		sp_conn_deadline(s->up->conn, be->per_try_timeout_ms, 0);
}

static void attach_upstream(struct sp_session *s, enum sp_take take)
{
	const char *why = ERR_CONNECT_FAILED;
	if (s->via) { /* out of a queue: through the pool whose max_conns it waited for */
		s->up = sp_pool_get_as(s->via, &s->cfg->backends[s->backend], s->server, take, &why);
		sp_pool_release(&s->via);
	} else {
		s->up = sp_worker_connect(s->w, s->cfg, s->backend, s->server, take, &why);
	}
	if (!s->up) {
		upstream_failed(s, why, 502);
		return;
	}
	sp_h1_reset(s->resp);
	sp_h1_expect_head(s->resp, s->is_head);
	struct sp_conn *c = s->up->conn;
	sp_conn_setcb(c, on_up_read, on_conn_drain, on_up_event, s);
	sp_conn_data(c, on_up_data);
	upstream_timeouts(s);
	c->low_water = LOW_WATER;
	c->read_max = 0;
	sp_conn_read(c, 1);
	clock_gettime(CLOCK_MONOTONIC, &s->t_up);
	if (s->up->reused)
		sp_shadow_primary_served(s->shadow, s->server, &s->head);
}

/* Moves what the parser produced to the backend, opening the connection on
 * the first bytes of an exchange. */
static void flush_pending(struct sp_session *s)
{
	if (!s->req_active || s->dead)
		return;
	if (s->no_room || s->own_answer) {
		if (s->req_done && s->no_room)
			answer(s, 503, s->error, s->req_keep);
		else if (s->req_done && s->own_sent)
			own_answer_end(s, NULL);
		else if (s->req_done)
			answer_as_route(s, 0);
		else if (s->own_answer && !s->own_sent && evbuffer_get_length(s->client->in) == 0)
			answer_as_route(s, 1); /* the rest of the body is still to come */
		return;
	}
	if (!s->up && s->waiter.pool) {
		/* waiting for a connection slot: the body waits too, up to a
		 * buffer's worth */
		if (evbuffer_get_length(s->pending) > HIGH_WATER && !s->client_paused) {
			s->client_paused = 1;
			sp_conn_read(s->client, 0);
		}
		return;
	}
	if (!s->up) {
		attach_upstream(s, take_for(s));
		if (!s->up)
			return;
	}
	struct evbuffer *out = s->up->conn->out;
	size_t pending = evbuffer_get_length(s->pending);
	if (s->head_queued) {
		/* a request without a body yet: its head goes at once, if it can,
		 * rather than through the output buffer */
		size_t sent = pending == 0 ? sp_conn_write_now(s->up->conn, s->head.data, s->head.len) : 0;
		s->head_queued = 0;
		if (sent < s->head.len)
			evbuffer_add(out, s->head.data + sent, s->head.len - sent);
	}
	if (pending > 0) /* an empty move costs a call, locks and callbacks too */
		evbuffer_add_buffer(out, s->pending);
	if (evbuffer_get_length(out) > HIGH_WATER && !s->client_paused) {
		s->client_paused = 1;
		sp_conn_read(s->client, 0);
	}
}

/* ---- request parsing hooks ---- */

/* The body of a request the proxy answers itself is read and dropped up
 * to this length (a JSON POST), so that the connection goes on; a larger
 * one closes it, unread, when the answer is a 503 at max_conns (a
 * saturated service's proxy does not take uploads in for nothing). */
#define DRAIN_MAX 65536

/* A request leaves the queue unserved (its queue.timeout_ms passed, or
 * every server of its backend is drained): a 503, as at max_conns. */
static void leave_queue(struct sp_session *s, const char *err)
{
	unqueue(s);
	s->queued = err == ERR_QUEUE_TIMEOUT ? SP_QUEUE_TIMEOUT : SP_QUEUE_GAVE_UP;
	s->queue_ms = sp_ms_since(&s->t_queued);
	s->timer_mode = T_NONE;
	s->error = err;
	answer(s, 503, err, s->req_done && s->req_keep);
}

/* Whether every server of be is drained: nothing to wait for. */
static int all_drained(const struct sp_backend *be)
{
	for (size_t i = 0; i < be->nservers; i++)
		if (!sp_health_drained(&be->servers[i]))
			return 0;
	return 1;
}

/* The queue's wake (sp_waiter): a connection of the backend was given back
 * (or room may have come otherwise: a tick, a reload). The request takes a
 * server with room, as the balance picks it on its pool's turn and by the
 * backend's max_conns as it is now, and connects through that pool; none
 * (another took the slot first): it stays first; every server drained: its
 * 503 at once. In a pool a reload retired, it waits for that pool's
 * connections, by its own generation's settings (as requests in flight
 * finish on theirs). */
static int on_slot(struct sp_waiter *wt)
{
	struct sp_session *s = (struct sp_session *)(void *)((char *)wt -
							     offsetof(struct sp_session, waiter));
	struct sp_pool *p = wt->pool;
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	int k = sp_pool_pick(p, p->retired ? be : p->be); /* the same servers, in order */
	if (k < 0 && !all_drained(be))
		return 0;
	enter(s);
	if (k < 0) {
		leave_queue(s, ERR_NO_SERVER);
	} else {
		sp_pool_hold(p);
		s->via = p;
		unqueue(s);
		s->queued = SP_QUEUE_SERVED;
		s->queue_ms = sp_ms_since(&s->t_queued);
		s->server = k;
		set_timer(s, T_NONE);
		flush_pending(s);
		sp_pool_release(&s->via); /* not used: the exchange ended meanwhile */
	}
	leave(s);
	return 1;
}

/* Every server of the request's backend is at max_conns, and the backend
 * has a queue with room (backends.NAME.queue): the request waits in it. 1
 * when so. */
static int enqueue(struct sp_session *s)
{
	clock_gettime(CLOCK_MONOTONIC, &s->t_queued);
	s->waiter.wake = on_slot;
	if (sp_worker_wait(s->w, s->cfg, s->backend, &s->waiter) < 0)
		return 0;
	s->wait_stats = sp_worker_wait_begin(s->w, s->dec.route, s->cfg->backends[s->backend].name,
					     &s->wait_side);
	s->queued = SP_QUEUE_GAVE_UP; /* until it is served or times out (the client may leave) */
	return 1;
}

/* Every server of the request's backend is at max_conns: a 503 at once.
 * A request is answered once read (flush_pending), its body, when it has a
 * Content-Length up to DRAIN_MAX, dropped, keeping the connection (a
 * reconnect is the last thing a saturated service needs); one with a
 * larger or chunked body, one that waits for 100 Continue, or an upgrade
 * closes it, unread. */
static int no_room(struct sp_session *s, const struct sp_h1_msg *m)
{
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	const char *why = ERR_MAX_CONNS;
	for (size_t i = 0; i < be->nservers; i++)
		if (sp_health_drained(&be->servers[i]))
			why = ERR_NO_SERVER;
	int body = m->has_length && m->content_length;
	if (m->chunked || m->upgrade || (body && (m->content_length > DRAIN_MAX ||
						  sp_http_expects_continue(m)))) {
		sp_h1_fail(s->req, 503, why);
		return -1;
	}
	s->no_room = s->req_active = 1;
	s->error = why;
	s->req_body = SP_BODY_NONE;
	set_timer(s, T_NONE);
	if (body)
		client_timeouts(s, s->w->cfg->limits.body_timeout_ms);
	return 0;
}

/* A route that answers itself (return): the answer goes once the request
 * is read, its body, if any, read and dropped (so that the connection goes
 * on, as nginx's return), its Location made now, while the request's
 * words are at hand. A client that waits for a 100 Continue before its
 * body gets the answer at once instead, and the connection closes (its body
 * unread, RFC 9110 10.1.1). */
__attribute__((noinline)) static int answer_itself(struct sp_session *s, const struct sp_h1_msg *m,
						    const struct sp_reqview *q)
{
	const struct sp_return *r = &s->dec.route->ret;
	struct sp_hdr_vars v;
	sp_return_vars(q, s->https ? "https" : "http", s->reqid, &v);
	sp_buf_reset(&s->head);
	if (r->location && (sp_return_location(r, &v, &s->head) < 0 ||
			    sp_buf_addc(&s->head, '\0') < 0)) {
		sp_h1_fail(s->req, 500, "out of memory");
		return -1;
	}
	s->own_answer = s->req_active = 1;
	s->req_body = SP_BODY_NONE; /* nothing goes anywhere */
	if (m->upgrade)
		s->req_keep = 0; /* the parser stays in upgrade state */
	set_timer(s, T_NONE);
	if (!(m->has_length && m->content_length) && !m->chunked)
		return 0;
	if (sp_http_expects_continue(m)) {
		s->answer_now = 1; /* request_error answers */
		sp_h1_fail(s->req, r->status, "answered before the body");
		return -1;
	}
	client_timeouts(s, s->w->cfg->limits.body_timeout_ms);
	return 0;
}

/* Mirrors the request when the route shadows this method and the sample
 * (sticky to the rollout key when there is one) falls inside percent. */
static void maybe_shadow(struct sp_session *s, const struct sp_reqview *q, const struct sp_h1_msg *m)
{
	const struct sp_route *r = s->dec.route;
	const struct sp_shadow_cfg *sc = &r->shadow;
	size_t i;
	for (i = 0; i < sc->nmethods; i++)
		if (strcmp(sc->methods[i], m->method) == 0)
			break;
	if (i == sc->nmethods)
		return;
	if (sc->percent_bp < 10000) {
		const char *key;
		size_t klen;
		uint32_t b;
		if (s->dec.assigned[0] && r->rollout.shadow_salt) { /* the key drawn for it */
			b = sp_rollout_bucket(r->rollout.shadow_salt, s->dec.assigned, SP_ASSIGNED_KEY);
		} else if (r->has_rollout && r->rollout.shadow_salt &&
			   sp_rollout_key(&r->rollout, q, &s->tmp, &key, &klen)) {
			/* a salt of its own, so the shadowed users are not the rolled-out ones */
			b = sp_rollout_bucket(r->rollout.shadow_salt, key, klen);
		} else {
			b = (uint32_t)(sp_rng_next(&s->w->rng) >> 32) % 10000u;
		}
		if (b >= sc->percent_bp)
			return;
	}
	int target = sc->backend;
	if (target == SP_SHADOW_OTHER) /* the side that does not serve it (after a fallback too) */
		target = s->backend == r->backend ? r->rollout.backend : r->backend;
	if (target == s->backend)
		return; /* a rollout request already served by the shadow's backend */
	struct sp_retarget t;
	if (retarget_for(s, s->backend, target, &t) < 0)
		return; /* the shadow backend would need a Host that was not kept (or memory) */
	/* the shadow backend's request_headers apply to the head without the
	 * primary's (sp_shadow_start) */
	const struct sp_buf *head = s->cfg->request_header_rules ? &s->head_plain : &s->head;
	struct sp_hdr_vars vars = vars_of(s);
	s->shadow = sp_shadow_start(s->w, s->cfg, r, target, s->backend, m->method, s->path.data,
				    s->path.len, s->has_query ? &s->query : NULL, s->reqid, &vars, head,
				    s->req_body != SP_BODY_NONE, &t);
}

/* rollout.set_cookie: the key given to a client comes from the kernel's
 * generator, not the worker's xorshift (one answer's key would tell the
 * next ones, and the request ids); that one stays, should it fail. */
__attribute__((cold, noinline)) static void draw_cookie_key(struct sp_session *s)
{
	uint8_t r[SP_ASSIGNED_KEY / 2];
	if (getrandom(r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
		sp_decide_assign(r, &s->dec);
}

/* The peer is a trusted proxy: the client is who its X-Forwarded-For says.
 * Out of line (cold): behind no balancer it never runs, and inlined it grew
 * on_req_head past what LTO inlines into it (75 instructions a request). */
__attribute__((cold, noinline)) static void real_client(struct sp_session *s,
							 const struct sp_h1_msg *m)
{
	struct sp_ip ip = s->peer;
	if (sp_realip_xff(s->cfg->trusted, s->cfg->ntrusted, m->hdrs, m->nhdrs, &ip) > 0) {
		sp_ip_text(&ip, s->real_ip);
		s->real_sa = ip;
		s->client_addr = s->real_ip;
	}
}

/* The value of name when the head has exactly one such field (a second
 * one may be the client's, passed on by a proxy that added its own), or
 * NULL. */
static const struct sp_hdr *only_field(const struct sp_h1_msg *m, const char *name)
{
	const struct sp_hdr *found = NULL;
	for (size_t i = 0; i < m->nhdrs; i++) {
		if (!sp_hdr_name_is(&m->hdrs[i], name))
			continue;
		if (found)
			return NULL;
		found = &m->hdrs[i];
	}
	return found;
}

/* A trusted proxy's X-Forwarded-Proto and X-Forwarded-Host, when
 * trusted_headers names them, are passed on rather than replaced (a
 * TLS-terminating load balancer's "https"), when each is one field holding
 * what a client could mean: http or https, one Host. */
__attribute__((cold, noinline)) static void
trusted_forwarded(const struct sp_config *cfg, const struct sp_h1_msg *m, struct sp_fwd_request *f)
{
	const struct sp_hdr *p = cfg->trusted_headers & SP_FWD_PROTO
					 ? only_field(m, "X-Forwarded-Proto")
					 : NULL;
	const struct sp_hdr *h = cfg->trusted_headers & SP_FWD_HOST
					 ? only_field(m, "X-Forwarded-Host")
					 : NULL;
	if (p && p->value_len == 5 && sp_ascii_ieq(p->value, "https", 5))
		f->proto = "https";
	else if (p && p->value_len == 4 && sp_ascii_ieq(p->value, "http", 4))
		f->proto = "http";
	if (h && h->value_len && sp_http_valid_host(h->value, h->value_len)) {
		f->fwd_host = h->value;
		f->fwd_host_len = h->value_len;
	}
}

/* The request body limit of the exchange (0: none): its route's
 * max_body_bytes, or limits.max_body_bytes; *why is the 413's reason. */
static long long body_limit(const struct sp_session *s, const char **why)
{
	const struct sp_route *r = s->dec.route;
	if (r && r->max_body_bytes >= 0) {
		*why = "request body larger than the route's max_body_bytes";
		return r->max_body_bytes;
	}
	*why = "request body larger than limits.max_body_bytes";
	return s->cfg->limits.max_body_bytes;
}

static int on_req_head(void *ud, struct sp_h1_msg *m)
{
	struct sp_session *s = ud;
	const char *why;
	const struct sp_limits *lim = &s->w->cfg->limits;
	int st;

	sp_copy_str(s->method, sizeof(s->method), m->method);
	int had_id = take_request_id(s, m);
	if (!had_id)
		new_request_id(s);
	const char *query;
	size_t qlen;
	if ((st = sp_request_verdict(m, &s->path, &query, &qlen, &why)) != 0) {
		sp_h1_fail(s->req, st, why);
		return -1;
	}
	if (s->w->cfg->limits.reject_escaped_slashes &&
	    sp_path_has_escaped_slash(s->path.data, s->path.len)) {
		sp_h1_fail(s->req, 400, SP_PATH_ESCAPED_SLASH_WHY);
		return -1;
	}

	if (s->hs_cfg) /* the handshake is over */
		sp_config_unref(&s->hs_cfg);
	s->cfg = sp_config_ref(s->w->cfg);
	int trusted = s->cfg->ntrusted && sp_cidr_has(s->cfg->trusted, s->cfg->ntrusted, &s->peer);
	if (trusted)
		real_client(s, m);
	if (s->cfg->log_query && query) {
		s->has_query = 1;
		sp_buf_add(&s->query, query, qlen); /* out of memory: logged empty */
	}
	struct sp_reqview q = {m->method, s->path.data, s->path.len, query, qlen,
			       m->hdrs,   m->nhdrs,     s->client_addr,
			       s->client_addr == s->real_ip ? &s->real_sa : &s->peer};
	sp_decide(s->cfg->routes, s->cfg->nroutes, s->cfg->route_index, s->cfg->default_backend,
		  &q, &s->w->rng, &s->tmp, &s->dec);
	if (s->dec.assigned[0])
		draw_cookie_key(s);
	/* a Content-Length past it: refused before any of the body is read */
	long long max_body = body_limit(s, &why);
	if (max_body && m->has_length && m->content_length > (uint64_t)max_body) {
		sp_h1_fail(s->req, 413, why);
		return -1;
	}
	s->backend = s->dec.backend;
	s->req_keep = m->keep_alive; /* what any answer to it needs (no_room's too) */
	s->client_minor = m->http_minor;
	s->is_head = strcmp(m->method, "HEAD") == 0;
	if (s->dec.route && s->dec.route->ret.status)
		return answer_itself(s, m, &q);
	/* a backend known to be down (all its servers): the route's other side,
	 * when it is up (and may take it: fallback_side) */
	int other, k;
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	if (!(s->dec.route && s->dec.route->has_rollout) && be->nservers == 1 && !be->max_conns &&
	    !sp_health_drained(&be->servers[0]))
		s->server = 0; /* its only server, up or down: no choice to make */
	else
		s->server = sp_worker_pick(s->w, s->cfg, s->backend, 0, NULL);
	if (s->server < 0 && (other = fallback_side(s)) >= 0 &&
	    (k = sp_worker_pick(s->w, s->cfg, other, 0, NULL)) >= 0) {
		s->fallback_from = s->backend;
		s->backend = other;
		s->server = k;
	}
	if (s->server < 0)
		s->server = sp_worker_next(s->w, s->cfg, s->backend); /* none up: in turn */
	if (s->server >= 0 && sp_worker_queue_ahead(s->w, s->cfg, s->backend)) {
		/* requests wait for the backend already: behind them, and with
		 * the queue full no room, as when every server is at max_conns
		 * (the room a server has is theirs: its wake-up is on its way) */
		if (!enqueue(s))
			return no_room(s, m);
		s->server = -1;
	} else if (s->server < 0 && !enqueue(s)) { /* each at max_conns: no room anywhere */
		return no_room(s, m);
	}
	size_t plen;
	const char *upath = path_to(s, s->backend, &s->tmp, &plen);
	if (!upath) {
		sp_h1_fail(s->req, 500, "out of memory");
		return -1;
	}
	struct sp_fwd_request f = sp_fwd_request_for(m, upath, plen, query, qlen);
	f.client_ip = s->client_ip;
	f.proto = s->https ? "https" : "http";
	if (trusted && s->cfg->trusted_headers)
		trusted_forwarded(s->cfg, m, &f);
	s->public_https = f.proto[4] == 's'; /* "http" or "https" (no strcmp per request) */
	f.default_host = sp_server_authority(&s->cfg->backends[s->backend].servers[0]);
	f.host = s->cfg->backends[s->backend].host_header;
	/* HTTP/1.1 without a Host was refused (400): only a 1.0 request may lack it */
	int keep_host = s->cfg->keep_client_host;
	const struct sp_hdr *host = m->http_minor == 0 || keep_host
					    ? sp_hdr_find(m->hdrs, m->nhdrs, "Host")
					    : NULL;
	s->host_defaulted = m->http_minor == 0 && !host;
	sp_buf_reset(&s->client_host);
	s->client_host_known = keep_host && host &&
			       sp_buf_add(&s->client_host, host->value, host->value_len) == 0;
	f.request_id = s->reqid; /* the logged one, alone, whatever the client sent */
	s->req_body = f.body;
	s->upgrade_req = f.upgrade;
	if (m->upgrade && !f.upgrade)
		s->req_keep = 0; /* an ignored upgrade leaves the parser in upgrade state */
	sp_buf_reset(&s->head);
	sp_buf_reset(&s->head_plain);
	if (s->cfg->request_header_rules
		    ? sp_http_write_request_head(&f, &s->head_plain) < 0 || head_for(s, s->backend) < 0
		    : sp_http_write_request_head(&f, &s->head) < 0) {
		sp_h1_fail(s->req, 500, "out of memory");
		return -1;
	}
	s->head_queued = 1; /* before what pending collects (flush_pending) */
	s->req_active = 1;
	if (s->dec.route && s->dec.route->has_shadow)
		maybe_shadow(s, &q, m);
	if (s->waiter.pool) {
		s->timer_mode = T_QUEUE;
		int ms = s->cfg->backends[s->backend].queue_timeout_ms;
		sp_conn_deadline(s->client, ms, ms);
	} else {
		set_timer(s, T_NONE);
	}
	if (s->req_body != SP_BODY_NONE)
		client_timeouts(s, lim->body_timeout_ms);
	return 0;
}

/* Request bytes for the backend, and for the shadow when there is one;
 * body: how many of them are the body's own (not chunk framing). */
static void emit(struct sp_session *s, const void *p, size_t n, size_t body)
{
	evbuffer_add(s->pending, p, n);
	if (s->shadow)
		sp_shadow_request_bytes(s->shadow, p, n, body);
}

static int on_req_body(void *ud, const char *p, size_t n)
{
	struct sp_session *s = ud;
	const char *why;
	long long max = body_limit(s, &why);
	s->req_body_bytes += n;
	if (max && s->req_body_bytes > (uint64_t)max) {
		/* a chunked body announces no length: it is cut off when it passes */
		sp_h1_fail(s->req, 413, why);
		return -1;
	}
	if (s->own_answer || s->no_room)
		return 0; /* dropped */
	if (s->req_body == SP_BODY_CHUNKED) {
		sp_buf_reset(&s->tmp);
		sp_http_chunk_header(&s->tmp, n);
		emit(s, s->tmp.data, s->tmp.len, 0);
		emit(s, p, n, n);
		emit(s, "\r\n", 2, 0);
	} else {
		emit(s, p, n, n);
	}
	return 0;
}

static int on_req_done(void *ud, struct sp_h1_msg *m)
{
	struct sp_session *s = ud;
	(void)m;
	if (s->req_body == SP_BODY_CHUNKED)
		emit(s, "0\r\n\r\n", 5, 0);
	s->req_done = 1;
	if (s->up && s->req_body != SP_BODY_NONE && !s->resp_started)
		s->upload_ms = sp_ms_since(&s->t_up); /* the client's pace, not the backend's */
	sp_shadow_request_done(s->shadow);
	client_timeouts(s, 0);
	if (s->up && s->req_body != SP_BODY_NONE && (s->up->connected || s->up->reused))
		upstream_timeouts(s);
	return 1; /* one exchange at a time: pipelined requests wait */
}

static const struct sp_h1_hooks req_hooks = {on_req_head, on_req_body, on_req_done};

/* A request refused before its head was whole is logged with as much of its
 * request line as was read ("-" when none). */
static void note_request_line(struct sp_session *s)
{
	const char *method, *url;
	size_t n;
	if (s->method[0])
		return;
	if (sp_h1_request_line(s->req, &method, &url, &n)) {
		sp_copy_str(s->method, sizeof(s->method), method);
		if (n)
			sp_path_as_received(url, n, &s->path);
	} else {
		sp_copy_str(s->method, sizeof(s->method), "-");
	}
}

/* The client left: the exchange it was in is logged as aborted (499), also
 * one whose head was not whole yet (nothing was logged for it: a client
 * silent instead gets its 408 line). */
static void log_client_gone(struct sp_session *s)
{
	if (s->req_active) {
		s->error = ERR_CLIENT_ABORTED;
		s->status = s->status ? s->status : 499;
		log_exchange(s);
	} else if (sp_h1_in_message(s->req) || evbuffer_get_length(s->client->in) > 0) {
		note_request_line(s);
		s->error = ERR_CLIENT_ABORTED;
		s->status = 499;
		log_exchange(s);
	}
}

static void request_error(struct sp_session *s)
{
	if (s->answer_now) {
		s->req_keep = 0;
		answer_as_route(s, 0);
		return;
	}
	int status = sp_h1_error_status(s->req);
	const char *why = sp_h1_error_reason(s->req);
	if (s->own_sent) {
		sp_debug("client %s: %d %s (answered already)", s->client_addr, status, why);
		own_answer_end(s, why);
		return;
	}
	sp_debug("client %s: %d %s", s->client_addr, status, why);
	note_request_line(s);
	if (s->resp_started) {
		s->error = why;
		abort_answer(s);
		return;
	}
	sp_upconn_free(&s->up);
	s->error = why;
	s->refused = status < 500; /* the client's doing (a 503 at max_conns is not) */
	answer(s, status, why, 0);
}

/* ---- response parsing hooks ---- */

/* rollout.set_cookie: the answer gives a client that had no sticky cookie
 * the key it was routed by, for a year, so that its next requests go the
 * same way (HAProxy's "cookie ... insert", Envoy's cookie hash with a ttl).
 * Not when the backend's answer (m) sets that cookie itself: the
 * application's value (a session it just opened) stands, and is the key. */
__attribute__((noinline)) static int add_sticky_cookie(struct sp_session *s,
							const struct sp_h1_msg *m, struct sp_buf *head)
{
	const struct sp_rollout *ro = &s->dec.route->rollout;
	const char *name = ro->sticky[ro->nsticky - 1].name; /* its cookie: the last key */
	size_t n = strlen(name);
	for (size_t i = 0; i < m->nhdrs; i++)
		if (sp_hdr_name_is(&m->hdrs[i], "Set-Cookie") && m->hdrs[i].value_len > n &&
		    memcmp(m->hdrs[i].value, name, n) == 0 && m->hdrs[i].value[n] == '=')
			return 0;
	if (head->len < 4)
		return -1;
	head->len -= 2; /* before the blank line */
	const char *attrs = s->dec.route->rollout.cookie_attrs;
	return !attrs || sp_buf_printf(head, "Set-Cookie: %s=%s%s%s\r\n\r\n", name,
				       s->dec.assigned, attrs,
				       s->public_https ? "; Secure" : "") < 0
		       ? -1
		       : 0;
}

/* The backend's response_headers on the answer's head (out of line: most
 * backends have none). */
__attribute__((noinline)) static int apply_answer_rules(struct sp_session *s,
							 const struct sp_hdr_rules *r,
							 struct sp_buf *head)
{
	struct sp_hdr_vars vars = vars_of(s);
	return sp_hdr_rules_apply(r, &vars, head);
}

/* The answer's Location in the client's terms (location_rewrite), for the
 * head the client gets and for the comparison (m's values point into the
 * worker's locbuf until the hook returns). */
static int map_location(struct sp_session *s, struct sp_h1_msg *m)
{
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	struct sp_hdr_vars v = vars_of(s); /* its http_host: the client's Host, when kept */
	struct sp_location_map lm = {be->rewrite, be->nrewrite, NULL, 0, v.http_host,
				     v.http_host_len, v.public_scheme};
	if (sp_http_head_host(&s->head, &lm.sent_host, &lm.sent_host_len) < 0)
		lm.sent_host = NULL;
	return sp_location_fields(&lm, m->hdrs, m->nhdrs, &s->w->locbuf);
}

static int on_resp_head(void *ud, struct sp_h1_msg *m)
{
	struct sp_session *s = ud;
	const char *why;
	enum sp_resp_verdict v = sp_response_verdict(m, s->upgrade_req, &why);
	if (s->cfg->backends[s->backend].per_try_timeout_ms)
		sp_conn_deadline(s->up->conn, 0, 0); /* answered: no per_try_timeout_ms (a tunnel) */
	if (v == SP_RESP_BAD) {
		sp_h1_fail(s->resp, 502, why);
		return -1;
	}
	if (v == SP_RESP_INTERIM) {
		if (++s->ninterim > MAX_INTERIM) {
			sp_h1_fail(s->resp, 502, ERR_TOO_MANY_INTERIM);
			return -1;
		}
		/* 1xx go to HTTP/1.1 clients (an HTTP/1.0 one knows none); a 100
		 * only while the client still waits to send its body */
		s->interim = 1;
		if (m->status == 100 && s->client_minor >= 1 && !s->req_done) {
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			evbuffer_add(client_out(s), cont, sizeof(cont) - 1);
			s->interim_out += sizeof(cont) - 1;
		} else if (m->status != 100 && s->client_minor >= 1) {
			sp_buf_reset(&s->tmp);
			if (sp_http_write_interim_head(m, &s->tmp) == 0) {
				evbuffer_add(client_out(s), s->tmp.data, s->tmp.len);
				s->interim_out += s->tmp.len;
			}
		}
		return 1;
	}
	const struct sp_backend *be = &s->cfg->backends[s->backend];
	sp_health_report(be, server_of(s), m->status < 500);
	if (answer_retries(s, m->status))
		return -1; /* the parse stops here: retry_on_answer */
	if (be->location_map && map_location(s, m) < 0)
		return -1;
	struct sp_fwd_response f = sp_fwd_response_for(m, s->is_head, s->client_minor);
	s->tunnel = f.upgrade;
	s->answered_early = !s->req_done;
	s->resp_body = f.body;
	s->upstream_keep = m->keep_alive;
	/* A refused upgrade leaves the request parser in upgrade state: close. */
	s->client_keep = s->req_keep && s->req_done && s->resp_body != SP_BODY_CLOSE &&
			 !s->w->draining && !s->upgrade_req;
	f.keep_alive = s->client_keep;
	f.date = sp_worker_date(s->w);
	/* staged when nothing waits for the client before it (see unstage) */
	struct sp_buf *hb = &s->tmp;
	if (s->may_stage && evbuffer_get_length(client_out(s)) == 0)
		hb = &s->stage;
	sp_buf_reset(hb);
	const struct sp_hdr_rules *rules = &be->resp_headers;
	if (sp_http_write_response_head(&f, hb) < 0 ||
	    (sp_hdr_rules_any(rules) && apply_answer_rules(s, rules, hb) < 0) ||
	    (s->dec.assigned[0] && add_sticky_cookie(s, m, hb) < 0))
		return -1;
	if (hb == &s->stage)
		s->staged = 1;
	else
		evbuffer_add(client_out(s), hb->data, hb->len);
	s->bytes_out += hb->len;
	s->status = m->status;
	s->resp_started = 1;
	if (s->tunnel)
		sp_shadow_abandon(&s->shadow);
	sp_shadow_primary_head(s->shadow, m->status, m->hdrs, m->nhdrs);
	s->upstream_ms = sp_ms_since(&s->t_up);
	return 0;
}

/* The answer's head, and the body that came with it in the same read,
 * wait in s->stage during that read's parse (on_up_data) instead of in the
 * client's output buffer; then they go in one send when nothing is queued
 * before them (direct), else into the buffer. Up to this much is staged: a
 * block the worker's stash keeps. */
#define STAGE_MAX 4000

/* Sends p, then q, to the client now when nothing is queued before them
 * (one call, when direct); queues what is left. */
static void send_or_queue(struct sp_session *s, const char *p, size_t n, const char *q, size_t m,
			  int direct)
{
	size_t sent = direct ? sp_conn_write2_now(s->client, p, n, q, m) : 0;
	if (sent < n) {
		evbuffer_add(client_out(s), p + sent, n - sent);
		sent = 0;
	} else {
		sent -= n;
	}
	if (sent < m)
		evbuffer_add(client_out(s), q + sent, m - sent);
}

/* The staged answer leaves the stage: sent (direct) or queued. It is sent
 * once the exchange is logged and counted (finish_exchange), as before,
 * when the answer was written after the parse: a client that has its
 * answer finds it in the access log and the counters. */
static void unstage(struct sp_session *s, int direct)
{
	if (!s->staged)
		return;
	s->staged = 0;
	send_or_queue(s, s->stage.data, s->stage.len, s->tail, s->tail_len, direct);
	s->tail = NULL;
	s->tail_len = 0;
}

static int on_resp_body(void *ud, const char *p, size_t n)
{
	struct sp_session *s = ud;
	struct evbuffer *out = client_out(s);
	if (s->shadow)
		sp_shadow_primary_body(s->shadow, p, n);
	if (s->staged) {
		if (s->resp_body != SP_BODY_CHUNKED && !s->tail && s->stage.len + n <= STAGE_MAX &&
		    sp_buf_add(&s->stage, p, n) == 0) {
			s->bytes_out += n;
			return 0;
		}
		if (s->resp_body == SP_BODY_LENGTH && !s->tail) {
			/* a larger body: staged where it was read (valid until
			 * on_up_data returns), not copied; head and body then go
			 * in one call */
			s->tail = p;
			s->tail_len = n;
			s->bytes_out += n;
			return 0;
		}
		unstage(s, 0);
	}
	if (s->resp_body == SP_BODY_CHUNKED) {
		sp_buf_reset(&s->tmp);
		sp_http_chunk_header(&s->tmp, n);
		evbuffer_add(out, s->tmp.data, s->tmp.len);
		evbuffer_add(out, p, n);
		evbuffer_add(out, "\r\n", 2);
		s->bytes_out += s->tmp.len + n + 2;
	} else {
		evbuffer_add(out, p, n);
		s->bytes_out += n;
	}
	return 0;
}

static int on_resp_done(void *ud, struct sp_h1_msg *m)
{
	struct sp_session *s = ud;
	(void)m;
	if (s->interim) {
		s->interim = 0;
		return 0; /* the final response follows */
	}
	s->upstream_keep = m->keep_alive;
	if (s->resp_body == SP_BODY_CHUNKED) {
		unstage(s, 0);
		evbuffer_add(client_out(s), "0\r\n\r\n", 5);
		s->bytes_out += 5;
	}
	s->resp_done = 1;
	return 1;
}

static const struct sp_h1_hooks resp_hooks = {on_resp_head, on_resp_body, on_resp_done};

/* ---- tunnel (after 101) ---- */

/* Moves bytes from one side to the other; stops reading `from` while the
 * other side's output is full (pump() resumes it). */
/* Hands what `from` read to `to`, counted for the access log. */
static void tunnel_move(struct sp_session *s, struct sp_conn *from, struct sp_conn *to)
{
	size_t n = evbuffer_get_length(from->in);
	if (n && s->cfg->limits.tunnel_idle_ms)
		s->tunnel_last_us = sp_deadline_now_us();
	if (from == s->client)
		s->bytes_in += n;
	else
		s->bytes_out += n;
	evbuffer_add_buffer(to->out, from->in);
}

static void tunnel_relay(struct sp_session *s, struct sp_conn *from, struct sp_conn *to)
{
	tunnel_move(s, from, to);
	if (evbuffer_get_length(to->out) > HIGH_WATER) {
		sp_conn_read(from, 0);
		if (from == s->client)
			s->client_paused = 1;
		else
			s->up_paused = 1;
	}
}

static void tunnel_close(struct sp_session *s)
{
	if (s->req_active) /* not after end_tunnel logged it */
		log_exchange(s);
	reset_exchange(s);
	s->dead = 1;
}

/* Both ends are done (or one failed): the backend connection goes, the
 * client's closes once what is left for it is written. */
static void end_tunnel(struct sp_session *s)
{
	sp_upconn_free(&s->up);
	log_exchange(s);
	reset_exchange(s);
	start_closing(s);
}

static void on_tunnel_up_event(struct sp_conn *c, short what, void *arg)
{
	struct sp_session *s = arg;
	enter(s);
	tunnel_move(s, c, s->client);
	if (what & SP_CONN_TIMEOUT) {
		/* the backend stopped reading what the client sent */
		s->error = ERR_UPSTREAM_SEND_TIMEOUT;
		end_tunnel(s);
	} else if ((what & SP_CONN_EOF) && !(what & SP_CONN_ERROR)) {
		/* a half-close while the client still sends: pass it on, and
		 * relay the client's bytes until it ends too (on_client_event) */
		sp_conn_shutdown_write(s->client);
		sp_conn_flush(s->client);
	} else {
		end_tunnel(s);
	}
	leave(s);
}

/* The tunnel's silence: timeouts.tunnel_idle_ms without a byte either way
 * ends it (a client gone without a word, behind a NAT that dropped it,
 * would otherwise hold the backend connection, and its max_conns slot, for
 * good). The client connection's deadline checks it, moved on by the
 * bytes that crossed meanwhile: no timer work per byte. */
static void tunnel_deadline(struct sp_session *s)
{
	int ms = s->cfg->limits.tunnel_idle_ms;
	if (!ms)
		return;
	/* bytes still waiting for a side are no silence: client_send_ms
	 * watches a receiver that takes none of them */
	if (evbuffer_get_length(s->client->out) || (s->up && evbuffer_get_length(s->up->conn->out)))
		s->tunnel_last_us = sp_deadline_now_us();
	int64_t idle = sp_deadline_now_us() - s->tunnel_last_us;
	if (idle < (int64_t)ms * 1000) {
		int left = (int)((((int64_t)ms * 1000 - idle) + 999) / 1000);
		sp_conn_deadline(s->client, left, left);
		return;
	}
	s->error = ERR_TUNNEL_IDLE;
	tunnel_close(s);
}

/* Silence has a limit in a tunnel (tunnel_deadline), and so has a stuck
 * transfer: bytes that wait for a receiver that takes none of them for
 * timeouts.client_send_ms end it, whichever side that receiver is.
 * (Otherwise a backend that stops reading held the tunnel for good: the
 * client's reading is paused once 256 KiB wait for the backend, so not even
 * the client's close is seen.) */
static void start_tunnel(struct sp_session *s)
{
	struct sp_conn *up = s->up->conn;
	/* the exchange's generation, for both sides, as the rest */
	int idle_ms = s->cfg->limits.tunnel_idle_ms, send_ms = s->cfg->limits.send_timeout_ms;
	set_timer(s, T_NONE);
	s->tunnel_last_us = sp_deadline_now_us();
	if (idle_ms)
		sp_conn_deadline(s->client, idle_ms, idle_ms);
	sp_conn_timeouts(s->client, 0, send_ms);
	sp_conn_timeouts(up, 0, send_ms);
	sp_conn_setcb(up, on_up_read, on_conn_drain, on_tunnel_up_event, s);
	up->low_water = LOW_WATER;
	sp_conn_read(up, 1);
	sp_conn_read(s->client, 1);
	s->client_paused = s->up_paused = 0;
	tunnel_relay(s, up, s->client);
	tunnel_relay(s, s->client, up);
	if (s->client->eof) /* it half-closed before the 101: pass it on */
		sp_conn_shutdown_write(up);
}

/* ---- exchange end ---- */

static void finish_exchange(struct sp_session *s)
{
	struct sp_upconn *up = s->up;
	s->up = NULL;
	/* resp_body is the client's framing: a chunked answer to an HTTP/1.0
	 * client ends with a close there, not on the backend's connection (a
	 * body that ends with the backend's close is not upstream_keep); an
	 * answer read after a failed write (answered_before_reset) never is;
	 * nor one that answered before it took the whole request (an early
	 * 413): what it still has to read is not the next request's */
	if (s->req_done && !s->answered_early && sp_h1_in_message(s->resp) == 0 && !s->tunnel &&
	    evbuffer_get_length(up->conn->in) == 0 && s->upstream_keep && !up->conn->err &&
	    evbuffer_get_length(up->conn->out) == 0 && evbuffer_get_length(s->pending) == 0 &&
	    !up->conn->splice_dst)
		sp_pool_put(&up);
	else
		sp_upconn_free(&up);
	if (s->shadow) /* one clock reading less per unmirrored exchange */
		sp_shadow_primary_done(&s->shadow, s->status, sp_ms_since(&s->t_up));
	log_exchange(s);
	unstage(s, 1); /* logged and counted: the answer may go */
	int keep = s->client_keep && !s->w->draining;
	reset_exchange(s);
	if (!keep) {
		start_closing(s);
		return;
	}
	continue_keepalive(s);
}

/* A Content-Length body that needs no re-framing and no copy for a shadow
 * moves from one side's input to the other's output as whole buffer chains,
 * past the parser (which is told, and sees the last byte itself). Returns
 * the bytes moved. */
static size_t relay_length_body(struct sp_h1 *h, struct evbuffer *from, struct evbuffer *to)
{
	uint64_t left = sp_h1_body_left(h);
	size_t k = evbuffer_get_length(from);
	if (left < 2)
		return 0;
	if (k > left - 1)
		k = (size_t)(left - 1);
	k = (size_t)evbuffer_remove_buffer(from, to, k);
	sp_h1_body_skip(h, k);
	return k;
}

/* Parses what the backend sent; stops reading it while the client's output
 * is full (pump() resumes). */
/* What a step of parsing the backend's answer (rc) leads to: a bad answer
 * fails the exchange, an upgrade starts the tunnel (1: stop), else reading
 * the backend pauses while the client's output is full (0: go on). */
static int after_answer_step(struct sp_session *s, struct sp_conn *c, enum sp_h1_rc rc)
{
	if (rc == SP_H1_ERROR && s->retry_status) {
		retry_on_answer(s);
		return 1;
	}
	if (rc == SP_H1_ERROR) {
		sp_log(SP_LOG_WARN, "backend %s: %s", s->cfg->backends[s->backend].name,
		       sp_h1_error_reason(s->resp));
		upstream_failed(s, ERR_BAD_RESPONSE, 502);
		return 1;
	}
	if (rc == SP_H1_UPGRADE || (rc == SP_H1_PAUSED && s->tunnel)) {
		start_tunnel(s);
		return 1;
	}
	if (evbuffer_get_length(client_out(s)) > HIGH_WATER) {
		s->up_paused = 1;
		sp_conn_read(c, 0);
	}
	return 0;
}

static void parse_upstream(struct sp_session *s)
{
	struct sp_conn *c = s->up->conn;
	while (evbuffer_get_length(c->in) > 0 && !s->resp_done && !s->dead && !s->up_paused) {
		struct evbuffer_iovec v;
		size_t used = 0;
		enum sp_h1_rc rc = SP_H1_OK;
		size_t k = 0;
		if (s->resp_body == SP_BODY_LENGTH && !s->shadow) {
			k = relay_length_body(s->resp, c->in, client_out(s));
			s->bytes_out += k;
		}
		if (!k) {
			evbuffer_peek(c->in, -1, NULL, &v, 1);
			rc = sp_h1_execute(s->resp, v.iov_base, v.iov_len, &used);
			evbuffer_drain(c->in, used);
		}
		if (after_answer_step(s, c, rc))
			return;
	}
	if (s->resp_done)
		finish_exchange(s);
}

static void on_up_read(struct sp_conn *c, void *arg)
{
	struct sp_session *s = arg;
	enter(s);
	if (s->tunnel)
		tunnel_relay(s, c, s->client);
	else
		parse_upstream(s);
	leave(s);
}

/* Puts bytes read but not used into c's input buffer (see on_data in
 * conn.h), where the next steps find them as if they had been read there.
 * -1 when memory runs out, reported as a read error. */
static int keep_input(struct sp_conn *c, const char *p, size_t n)
{
	if (n == 0 || evbuffer_add(c->in, p, n) == 0)
		return 0;
	c->err = ENOMEM;
	c->on_event(c, SP_CONN_ERROR | SP_CONN_READING, c->arg);
	return -1;
}

/* relay_length_body for bytes read in place: sent to `to` at once when
 * nothing is queued there, else copied to its output (as they were copied
 * into the input buffer before). */
static size_t relay_length_bytes(struct sp_h1 *h, const char *p, size_t n, struct sp_conn *to)
{
	uint64_t left = sp_h1_body_left(h);
	if (left < 2)
		return 0;
	size_t k = n > left - 1 ? (size_t)(left - 1) : n;
	size_t sent = sp_conn_write_now(to, p, k);
	if (sent < k && evbuffer_add(to->out, p + sent, k - sent) < 0)
		k = sent;
	if (k)
		sp_h1_body_skip(h, k);
	return k;
}

/* on_up_read for bytes read while the input buffer was empty (the usual
 * case): the first step of parse_upstream runs on them where they were
 * read, what it leaves goes into the buffer, and parse_upstream goes on. */
static void on_up_data(struct sp_conn *c, const char *p, size_t n, void *arg)
{
	struct sp_session *s = arg;
	enter(s);
	if (s->tunnel || s->resp_done || s->dead || s->up_paused) {
		if (keep_input(c, p, n) == 0) {
			if (s->tunnel)
				tunnel_relay(s, c, s->client);
			else
				parse_upstream(s);
		}
		leave(s);
		return;
	}
	size_t used = 0;
	enum sp_h1_rc rc = SP_H1_OK;
	if (s->resp_body == SP_BODY_LENGTH && !s->shadow &&
	    (used = relay_length_bytes(s->resp, p, n, s->client)) > 0)
		s->bytes_out += used;
	else {
		s->may_stage = 1;
		rc = sp_h1_execute(s->resp, p, n, &used);
		s->may_stage = 0;
	}
	/* but for the plain case the staged answer goes into the buffer now:
	 * a failed one where retract_unsent finds it, an upgrade's before the
	 * tunnel's bytes */
	if (rc == SP_H1_ERROR || rc == SP_H1_UPGRADE || s->tunnel || used < n)
		unstage(s, 0);
	if (keep_input(c, p + used, n - used) < 0 || after_answer_step(s, c, rc))
		goto out;
	parse_upstream(s); /* a complete answer is sent there (finish_exchange) */
	unstage(s, 1);     /* the start of one that is not */
out:
	leave(s);
}

/* Output went down on one side: pump() decides what may move again. */
static void on_conn_drain(struct sp_conn *c, void *arg)
{
	struct sp_session *s = arg;
	(void)c;
	enter(s);
	leave(s);
}

static int may_retry(const struct sp_session *s)
{
	/* A pooled connection the backend closed just as we reused it: nothing
	 * was answered (not even an interim 1xx: the request reached it), and
	 * the request can be sent again. */
	return s->up && s->up->reused && !s->retried && !s->resp_started && !s->ninterim &&
	       !sp_h1_in_message(s->resp) && s->req_done && replayable(s);
}

/* The backend's connection ended (EOF, or a reset after its answer): a
 * close-delimited body ends here; anything else is cut short. */
static void upstream_ended(struct sp_session *s)
{
	if (sp_h1_finish(s->resp) == SP_H1_OK && s->resp_done)
		finish_exchange(s);
	else
		upstream_failed(s, s->resp_started ? ERR_TRUNCATED : ERR_UPSTREAM_CLOSED, 502);
}

/* A write to the backend failed: a backend that answers an upload early
 * (413, 401) and closes is reset by its kernel for the bytes it left
 * unread, and the send fails, but its answer came first and stands, as the
 * client would have had it without a proxy. 1 when there was one. */
static int answered_before_reset(struct sp_session *s, struct sp_conn *c)
{
	unsigned attempt = s->attempts;
	if (s->resp_done || !sp_conn_salvage(c))
		return 0;
	parse_upstream(s);
	/* still on c: not answered elsewhere meanwhile (retry_on_status) */
	if (s->up && s->attempts == attempt && !s->dead)
		upstream_ended(s);
	return 1;
}

/* OpenSSL's reason for a backend connection's failure (an alert, a failed
 * check), when it has one. */
static void warn_tls(struct sp_session *s, const struct sp_conn *c)
{
	char why[256];
	if (sp_conn_tls_failure(c, why, sizeof(why)))
		sp_log(SP_LOG_WARN, "backend %s (%s): TLS: %s", s->cfg->backends[s->backend].name,
		       server_of(s)->hostport, why);
}

static void on_up_event(struct sp_conn *c, short what, void *arg)
{
	struct sp_session *s = arg;
	enter(s);
	if (what & SP_CONN_CONNECTED) {
		s->up->connected = 1;
		upstream_timeouts(s);
		sp_shadow_primary_served(s->shadow, s->server, &s->head);
		goto out;
	}
	if (what & SP_CONN_DEADLINE) { /* per_try_timeout_ms */
		try_timed_out(s);
		goto out;
	}
	if (may_retry(s) && (what & (SP_CONN_EOF | SP_CONN_ERROR))) {
		/* an answer read before the failed write stands: not asked twice */
		if ((what & SP_CONN_WRITING) && answered_before_reset(s, c))
			goto out;
		s->retried = 1;
		sp_upconn_free(&s->up);
		send_again(s, SP_TAKE_NEW);
		goto out;
	}
	if (what & SP_CONN_TIMEOUT) {
		int connecting = !s->up->reused && !s->up->connected;
		upstream_failed(s, connecting ? ERR_CONNECT_TIMEOUT : ERR_UPSTREAM_TIMEOUT, 504);
	} else if (what & SP_CONN_EOF) {
		upstream_ended(s);
	} else if (what & SP_CONN_ERROR) {
		if (c->tls_handshake_failed) {
			warn_tls(s, c);
			upstream_failed(s, ERR_TLS, 502);
		} else if (!s->up->reused && !s->up->connected) {
			upstream_failed(s, c->err == ECONNREFUSED ? ERR_CONNECT_REFUSED : ERR_CONNECT_FAILED,
					502);
		} else if (!(what & SP_CONN_WRITING) || !answered_before_reset(s, c)) {
			warn_tls(s, c); /* an alert read before the reset, too */
			upstream_failed(s, ERR_UPSTREAM_RESET, 502);
		}
	}
out:
	leave(s);
}

/* ---- client side ---- */

/* A request's time counts from its first byte, not from the accept of a
 * connection opened early. */
static void stamp_request(struct sp_session *s)
{
	if (!s->req_active && !s->t_stamped) {
		clock_gettime(CLOCK_MONOTONIC, &s->t_start);
		s->t_stamped = 1;
		/* its head by the limits in force now: a keep-alive connection
		 * opened before a reload takes the reload's */
		struct sp_h1_limits lim = request_limits(s->w->cfg);
		sp_h1_set_limits(s->req, &lim);
		if (s->timer_mode != T_HEADER)
			set_timer(s, T_HEADER);
	}
}

static void process_client(struct sp_session *s)
{
	struct evbuffer *in = s->client->in;
	if (s->linger) {
		evbuffer_drain(in, evbuffer_get_length(in)); /* answered: dropped */
		return;
	}
	if (s->tunnel) {
		if (s->up)
			tunnel_relay(s, s->client, s->up->conn);
		return;
	}
	while (evbuffer_get_length(in) > 0 && !s->req_done && !s->closing && !s->dead &&
	       !s->client_paused) {
		struct evbuffer_iovec v;
		size_t used = 0;
		stamp_request(s);
		if (s->req_body == SP_BODY_LENGTH && s->req_active && !s->shadow) {
			size_t k = relay_length_body(s->req, in, s->pending);
			s->bytes_in += k;
			s->req_body_bytes += k;
			if (k) {
				flush_pending(s);
				continue;
			}
		}
		evbuffer_peek(in, -1, NULL, &v, 1);
		enum sp_h1_rc rc = sp_h1_execute(s->req, v.iov_base, v.iov_len, &used);
		if (rc == SP_H1_ERROR)
			used = v.iov_len; /* read, if not parsed: the log counts it */
		evbuffer_drain(in, used);
		s->bytes_in += used;
		if (rc == SP_H1_ERROR) {
			request_error(s);
			return;
		}
		flush_pending(s);
	}
	/* after a half-close, a request still incomplete never will be */
	if (s->client_eof && evbuffer_get_length(in) == 0 && !s->req_done && !s->closing &&
	    !s->dead) {
		log_client_gone(s);
		reset_exchange(s);
		start_closing(s);
	}
}

/* Large Content-Length bodies between two plain TCP connections go kernel to
 * kernel (splice(2)) once nothing of them is buffered here any more: nothing
 * to re-frame, no copy for a shadow. The parser is told at once and sees the
 * last byte itself, which ends the message as usual; any failure meanwhile
 * aborts the exchange like any cut-short body. */
#define SPLICE_MIN (256 * 1024)

static void splice_body(struct sp_session *s, struct sp_h1 *h, struct sp_conn *from,
			struct sp_conn *to)
{
	uint64_t left = sp_h1_body_left(h);
	if (left <= SPLICE_MIN || !sp_conn_can_splice(from, to))
		return;
	if (sp_conn_splice(from, to, left - 1) < 0) {
		sp_debug("request %s: no splice relay (%s); copying", s->reqid, strerror(errno));
		return;
	}
	sp_h1_body_skip(h, left - 1);
	sp_debug("request %s: %s body: %llu bytes relayed by splice", s->reqid,
		 h == s->req ? "request" : "response", (unsigned long long)(left - 1));
}

static void maybe_splice(struct sp_session *s)
{
	if (!s->up || s->shadow || s->tunnel || s->closing)
		return;
	struct sp_conn *up = s->up->conn;
	if (s->resp_started && !s->resp_done && s->resp_body == SP_BODY_LENGTH && !s->up_paused)
		splice_body(s, s->resp, up, s->client);
	else if (s->req_active && !s->req_done && s->req_body == SP_BODY_LENGTH && !s->client_paused &&
		 (s->up->connected || s->up->reused) && !s->head_queued &&
		 evbuffer_get_length(s->pending) == 0)
		splice_body(s, s->req, s->client, up);
}

/* Runs when the outermost callback ends: writes what both sides produced and
 * restarts reading that backpressure stopped, until nothing more moves. */
static void pump(struct sp_session *s)
{
	for (int round = 0; round < 16 && !s->dead; round++) {
		int moved = 0;
		if (s->up)
			sp_conn_flush(s->up->conn);
		sp_conn_flush(s->client);
		if (s->tunnel && s->up && s->req_active && s->client->eof && s->up->conn->eof &&
		    s->up->conn->shut_done) {
			end_tunnel(s);
			continue;
		}
		if (s->closing) {
			if (evbuffer_get_length(s->client->out) > 0)
				return;
			if (!s->linger || s->w->draining) {
				s->dead = 1; /* a shutdown waits for exchanges, not for lingering */
				return;
			}
			if (!s->client->shut_wr) {
				sp_conn_shutdown_write(s->client);
				evbuffer_drain(s->client->in, evbuffer_get_length(s->client->in));
				sp_conn_read(s->client, 1);
				client_timeouts(s, LINGER_READ_MS);
				sp_conn_deadline(s->client, LINGER_TOTAL_MS, 0);
			}
			return;
		}
		if (s->up_paused && s->up && evbuffer_get_length(s->client->out) <= LOW_WATER) {
			s->up_paused = 0;
			sp_conn_read(s->up->conn, 1);
			if (s->tunnel)
				tunnel_relay(s, s->up->conn, s->client);
			else
				parse_upstream(s);
			moved = 1;
		}
		/* (a request waiting in a queue holds its body in pending, not
		 * in a connection's output) */
		if (s->client_paused &&
		    (s->up ? evbuffer_get_length(s->up->conn->out) <= LOW_WATER
			   : !s->waiter.pool || evbuffer_get_length(s->pending) <= LOW_WATER) &&
		    (s->req_active || evbuffer_get_length(s->client->out) <= LOW_WATER)) {
			s->client_paused = 0;
			sp_conn_read(s->client, 1);
			process_client(s);
			moved = 1;
		}
		if (!moved) {
			maybe_splice(s);
			return;
		}
	}
}

static void on_client_read(struct sp_conn *c, void *arg)
{
	struct sp_session *s = arg;
	(void)c;
	enter(s);
	process_client(s);
	leave(s);
}

/* on_client_read for bytes read while the input buffer was empty (the
 * usual case): a request is parsed where it was read, what the parser
 * leaves (a pipelined request) goes into the buffer for process_client.
 * The same steps as process_client's loop; a Content-Length body it relays
 * as whole chains takes that way. */
static void on_client_data(struct sp_conn *c, const char *p, size_t n, void *arg)
{
	struct sp_session *s = arg;
	enter(s);
	if (s->linger || s->tunnel || s->req_done || s->closing || s->dead || s->client_paused ||
	    (s->req_body == SP_BODY_LENGTH && s->req_active && !s->shadow)) {
		if (keep_input(c, p, n) == 0)
			process_client(s);
		leave(s);
		return;
	}
	size_t used = 0;
	stamp_request(s);
	enum sp_h1_rc rc = sp_h1_execute(s->req, p, n, &used);
	if (rc == SP_H1_ERROR)
		used = n; /* read, if not parsed: the log counts it */
	s->bytes_in += used;
	if (keep_input(c, p + used, n - used) < 0)
		goto out;
	if (rc == SP_H1_ERROR) {
		request_error(s);
		goto out;
	}
	flush_pending(s);
	process_client(s);
out:
	leave(s);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct sp_session *s = arg;
	(void)fd;
	(void)what;
	enter(s);
	process_client(s);
	leave(s);
}

/* The header or keep-alive deadline passed. */
static void deadline_passed(struct sp_session *s)
{
	if (s->tunnel) {
		tunnel_deadline(s);
		return;
	}
	if (s->client->hs) { /* the TLS handshake never ended: begun, it failed */
		if (sp_conn_tls_bytes_in(s->client) > 0) {
			sp_count(&s->w->tls_handshake_failures);
			sp_debug("client %s: TLS handshake not done within timeouts.client_header_ms",
				 s->client_ip);
		}
		s->dead = 1;
		return;
	}
	if (s->pp) { /* still no whole PROXY header: a part of one is a failure */
		if (s->pp->have) {
			sp_count(&s->w->proxy_protocol_failures);
			sp_debug("client %s: PROXY header not whole within timeouts.client_header_ms",
				 s->client_ip);
		}
		s->dead = 1;
		return;
	}
	if (s->timer_mode == T_QUEUE) {
		if (s->waiter.pool)
			leave_queue(s, ERR_QUEUE_TIMEOUT);
		return;
	}
	if (s->timer_mode == T_HEADER && !s->req_active &&
	    (sp_h1_in_message(s->req) || evbuffer_get_length(s->client->in))) {
		note_request_line(s);
		s->error = "client header timeout";
		answer(s, 408, "request header timeout", 0);
	} else if (s->timer_mode != T_NONE && !s->req_active) {
		/* idle means nothing left to write: a slow reader of the last
		 * answer is client_send_ms's business */
		if (evbuffer_get_length(s->client->out) > 0)
			set_timer(s, s->timer_mode);
		else
			s->dead = 1;
	}
}

static void on_client_event(struct sp_conn *c, short what, void *arg)
{
	struct sp_session *s = arg;
	enter(s);
	if (s->linger && s->client->shut_wr) {
		s->dead = 1; /* the client's end, its silence, or the time is up */
	} else if (what & SP_CONN_DEADLINE) {
		deadline_passed(s);
	} else if (c->tls_handshake_failed && !c->plain_http) {
		/* a scanner, an old client, one that refuses the certificate:
		 * counted, and said at debug level (nginx: info) */
		sp_count(&s->w->tls_handshake_failures);
		sp_debug("client %s: TLS handshake failed: %s", s->client_ip, c->tls_error);
		s->dead = 1;
	} else if (c->plain_http) {
		/* as nginx does: say so in plain HTTP, then close */
		static const char msg[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
					  "Content-Length: 47\r\nConnection: close\r\n\r\n"
					  "The plain HTTP request was sent to HTTPS port\r\n";
		sp_conn_send_plain(c, msg, sizeof(msg) - 1);
		s->dead = 1;
	} else if (s->tunnel && s->up && (what & SP_CONN_EOF) && !(what & SP_CONN_ERROR)) {
		/* a half-close: pass it on, and relay the backend's answer until
		 * it ends too (on_tunnel_up_event), unless it already has */
		tunnel_move(s, c, s->up->conn);
		sp_conn_shutdown_write(s->up->conn);
		sp_conn_flush(s->up->conn);
		/* ended both ways once what waits for the backend is written (pump) */
	} else if (s->tunnel) {
		if (s->up) {
			tunnel_move(s, c, s->up->conn);
			sp_conn_flush(s->up->conn);
		}
		if ((what & SP_CONN_TIMEOUT) && (what & SP_CONN_WRITING))
			s->error = ERR_CLIENT_SEND_TIMEOUT;
		tunnel_close(s);
	} else if ((what & SP_CONN_TIMEOUT) && (what & SP_CONN_WRITING)) {
		/* the client stopped reading what we send */
		sp_debug("client %s: nothing written for timeouts.client_send_ms", s->client_ip);
		end_as_cut(s); /* what it did not read of its answer is lost */
		if (s->req_active) {
			s->error = ERR_CLIENT_SEND_TIMEOUT;
			log_exchange(s);
		}
		reset_exchange(s);
		s->dead = 1;
	} else if ((what & SP_CONN_TIMEOUT) && s->req_active && !s->req_done) {
		/* the body stalled */
		s->error = "client body timeout";
		if (s->own_sent) {
			own_answer_end(s, s->error);
		} else if (s->resp_started) {
			abort_answer(s);
		} else {
			sp_upconn_free(&s->up);
			s->refused = 1;
			answer(s, 408, "request body timeout", 0);
		}
	} else if ((what & SP_CONN_EOF) && (s->req_done || !s->req_active) &&
		   (s->req_active || evbuffer_get_length(c->in) > 0 ||
		    evbuffer_get_length(c->out) > 0)) {
		/* half-close: answer the requests it sent (pipelined ones
		 * included), finish writing, then close */
		s->client_eof = 1;
		if (!s->req_active && evbuffer_get_length(c->in) == 0)
			start_closing(s);
		else if (s->req_active && evbuffer_get_length(c->in) == 0)
			s->req_keep = s->client_keep = 0; /* the last: "Connection: close" */
	} else {
		log_client_gone(s);
		reset_exchange(s);
		s->dead = 1;
	}
	leave(s);
}

static void proxy_hdr_free(struct sp_session *s)
{
	if (!s->pp)
		return;
	if (s->pp->ev)
		event_free(s->pp->ev);
	free(s->pp);
	s->pp = NULL;
}

/* The client's bytes may come: the TLS handshake, or the first request. */
static void start_client(struct sp_session *s, SSL_CTX *tls)
{
	if (tls) {
		s->https = 1;
		sp_conn_tls_accept(s->client, tls);
	}
	sp_conn_read(s->client, 1);
}

/* The PROXY header is whole: the client's address is the one it gives
 * (from a trusted peer, when trusted_proxies lists any). Then the client's
 * own bytes may come. */
static void proxy_header_done(struct sp_session *s, const struct sp_ip *src)
{
	const struct sp_config *cfg = s->w->cfg;
	if (cfg->ntrusted && !sp_cidr_has(cfg->trusted, cfg->ntrusted, &s->peer)) {
		if (src->family)
			sp_debug("client %s: PROXY header from a peer not in trusted_proxies: its "
				 "address is not used", s->client_ip);
	} else if (src->family) {
		s->peer = *src;
		sp_ip_text(src, s->client_ip);
	} else {
		/* the balancer says nothing of the client, and what follows is
		 * the client's, not the balancer's: its address is logged, its
		 * headers are not believed */
		s->peer.family = 0;
	}
	start_client(s, s->pp->tls);
	proxy_hdr_free(s);
}

/* The PROXY header, as much of it as has come: its bytes are taken off the
 * socket (peeked, then read as far as they are the header's). A header that
 * is not one, or is malformed, ends the connection without an answer, as
 * nginx and HAProxy do: what follows may not even be HTTP. */
static void on_proxy_readable(evutil_socket_t fd, short what, void *arg)
{
	struct sp_session *s = arg;
	struct sp_proxy_hdr *pp = s->pp;
	struct sp_ip src;
	const char *why = NULL, *fail = NULL;
	(void)what;
	enter(s);
	ssize_t n = recv(fd, pp->buf + pp->have, sizeof(pp->buf) - pp->have, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		goto out;
	if (n <= 0) {
		fail = n ? strerror(errno) : pp->have ? "closed in the middle of its PROXY header"
						      : "closed before its PROXY header";
		if (pp->have)
			sp_count(&s->w->proxy_protocol_failures);
		goto out;
	}
	long len = sp_proxy_parse(pp->buf, pp->have + (size_t)n, &src, &why);
	size_t take = len > 0 ? (size_t)len - pp->have : (size_t)n; /* all of it: more to come */
	if (len < 0 || recv(fd, pp->buf + pp->have, take, 0) != (ssize_t)take) {
		fail = len < 0 ? why : "cannot read the PROXY header";
		sp_count(&s->w->proxy_protocol_failures);
		goto out;
	}
	pp->have += take;
	if (len > 0)
		proxy_header_done(s, &src);
out:
	if (fail) {
		sp_debug("client %s: %s", s->client_ip, fail);
		s->dead = 1;
	}
	leave(s);
}

void sp_session_accept(struct sp_worker *w, evutil_socket_t fd, const struct sockaddr *sa,
		       socklen_t len, SSL_CTX *tls, int proxy_protocol)
{
	static const struct sp_h1_limits resp_limits = {1024, 65536, 200};
	struct sp_session *s = calloc(1, sizeof(*s));
	(void)len;
	if (!s) {
		evutil_closesocket(fd);
		return;
	}
	s->w = w;
	s->backend = -1;
	s->fallback_from = -1;
	s->server = -1;
	s->upstream_ms = -1;
	sp_buf_init(&s->head);
	sp_buf_init(&s->head_plain);
	sp_buf_init(&s->stage);
	sp_buf_init(&s->tmp);
	sp_buf_init(&s->path);
	sp_buf_init(&s->query);
	sp_buf_init(&s->client_host);
	s->head.stash = s->head_plain.stash = s->stage.stash = s->tmp.stash = s->path.stash =
		s->query.stash = &w->stash;
	s->client_addr = s->client_ip;
	if (sp_ip_from_sockaddr(sa, &s->peer) == 0)
		sp_ip_text(&s->peer, s->client_ip);
	struct sp_h1_limits req_limits = request_limits(w->cfg);
	s->client = sp_conn_new(w->base, fd); /* TCP_NODELAY: from the listener */
	s->req = sp_h1_new(1, &req_hooks, s, &req_limits);
	s->resp = sp_h1_new(0, &resp_hooks, s, &resp_limits);
	if (s->req)
		sp_h1_set_stash(s->req, &w->stash);
	if (s->resp)
		sp_h1_set_stash(s->resp, &w->stash);
	s->resume = event_new(w->base, -1, 0, on_resume, s);
	s->pending = evbuffer_new();
	if (!s->client || !s->req || !s->resp || !s->resume || !s->pending) {
		TAILQ_INSERT_TAIL(&w->sessions, s, link);
		sp_worker_session_added(w);
		session_free(s);
		return;
	}
	TAILQ_INSERT_TAIL(&w->sessions, s, link);
	sp_worker_session_added(w);
	if (tls)
		s->hs_cfg = sp_config_ref(w->cfg);
	sp_conn_setcb(s->client, on_client_read, on_conn_drain, on_client_event, s);
	sp_conn_data(s->client, on_client_data);
	client_timeouts(s, 0);
	s->client->read_max = HIGH_WATER;
	s->client->low_water = LOW_WATER;
	clock_gettime(CLOCK_MONOTONIC, &s->t_start);
	set_timer(s, T_HEADER); /* a PROXY header too must come within it */
	if (proxy_protocol) {
		s->pp = calloc(1, sizeof(*s->pp));
		if (!s->pp || !(s->pp->ev = event_new(w->base, fd, EV_READ | EV_PERSIST,
						      on_proxy_readable, s)) ||
		    event_add(s->pp->ev, NULL) < 0) {
			session_free(s);
			return;
		}
		s->pp->tls = tls; /* hs_cfg holds it */
		return;
	}
	start_client(s, tls);
}

static void session_free(struct sp_session *s)
{
	struct sp_worker *w = s->w;
	unqueue(s);
	sp_pool_release(&s->via);
	sp_shadow_abandon(&s->shadow); /* counted: primary_incomplete */
	sp_upconn_free(&s->up);
	sp_config_unref(&s->cfg);
	proxy_hdr_free(s);
	sp_conn_free(&s->client); /* its SSL first: hs_cfg holds what it uses */
	sp_config_unref(&s->hs_cfg);
	sp_h1_free(&s->req);
	sp_h1_free(&s->resp);
	if (s->resume)
		event_free(s->resume);
	if (s->pending)
		evbuffer_free(s->pending);
	sp_buf_deinit(&s->head);
	sp_buf_deinit(&s->head_plain);
	sp_buf_deinit(&s->stage);
	sp_buf_deinit(&s->tmp);
	sp_buf_deinit(&s->path);
	sp_buf_deinit(&s->query);
	sp_buf_deinit(&s->client_host);
	TAILQ_REMOVE(&w->sessions, s, link);
	free(s);
	sp_worker_session_gone(w);
}

void sp_sessions_drain(struct sp_worker *w)
{
	struct sp_session *s, *next;
	for (s = TAILQ_FIRST(&w->sessions); s; s = next) {
		next = TAILQ_NEXT(s, link);
		/* a connection accepted just before the stop, its request on
		 * the way (or its TLS handshake, or its PROXY header) is
		 * served: it is closed at client_header_ms if nothing comes */
		int idle = s->exchanged && !s->req_active && !sp_h1_in_message(s->req) &&
			   evbuffer_get_length(s->client->in) == 0;
		int lingering = s->linger && s->client->shut_wr; /* answered: not in flight */
		if (s->in_callback || !(idle || lingering))
			continue;
		if (lingering || evbuffer_get_length(s->client->out) == 0)
			session_free(s);
		else if (!s->closing)
			start_closing(s); /* its last answer is written first (pump) */
	}
}

void sp_sessions_kill(struct sp_worker *w)
{
	struct sp_session *s;
	while ((s = TAILQ_FIRST(&w->sessions)) != NULL) {
		/* an exchange cut by the drain is logged like any other, a tunnel
		 * too; one whose answer had not begun gets a 503 rather than a
		 * bare close (a route's own answer, sent before the body it was
		 * dropping, has: what is left of it goes) */
		if (s->req_active && !s->dead) {
			s->error = ERR_DRAIN;
			if (!s->resp_started && !s->tunnel && !s->own_sent) {
				answer(s, 503, "shutting down", 0);
				sp_conn_flush(s->client);
			} else {
				if (s->own_sent)
					sp_conn_flush(s->client);
				log_exchange(s);
			}
		}
		/* an answer being received, or one whole here but not yet sent:
		 * cut (what a 503 or a route's answer left unsent, too) */
		if (!s->tunnel && ((s->resp_started && !s->resp_done && !s->own_sent) ||
				   evbuffer_get_length(s->client->out) > 0))
			end_as_cut(s);
		session_free(s);
	}
}
