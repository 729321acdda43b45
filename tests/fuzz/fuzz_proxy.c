/* Whole-proxy harness: client bytes and backend bytes from the input go
 * through a real worker's event loop. The client is one end of a socketpair
 * handed to the session as an accepted connection; the backend is a loopback
 * listener this harness owns, answering with the input's backend bytes.
 * Whatever the bytes, the proxy must not crash or leak, and what the client
 * receives must be a sequence of well-formed HTTP/1.1 responses (possibly cut
 * short by a close), never a fabricated success.
 *
 * Input: byte 0 = how the rest splits (client part gets (b0 * rest) / 255
 * bytes), byte 1 bit 0 = the backend closes after answering, bits 1-3 / 4-6
 * = how the client / backend bytes are cut into separate writes (pieces[],
 * one write per loop round, so each is its own read in the proxy: heads and
 * bodies split at any point, pipelined requests across reads), bit 7 = a
 * paced backend: the bytes of its k-th final answer go only once the head of
 * the k-th request came (else everything goes at once). A backend
 * connection opened later (a retry, a reconnect) takes over and gets the
 * bytes not yet sent. Checked too: what the proxy sends the backend parses as
 * requests, and each final 2xx/3xx answer the client gets whole carries the
 * body the backend sent for it. Client bytes that begin with a PROXY
 * protocol header come through a proxy_protocol listener, and the peer
 * (127.0.0.1) is a trusted proxy whose X-Forwarded-* are read. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "fuzz.h"
#include "h1.h"
#include "log.h"
#include "worker.h"

static int backend_listener(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		abort();
	*port = ntohs(a.sin_port);
	return fd;
}

/* The final answers (status and body) as one side saw them, in order: what
 * the client reads must be what the backend sent. */
#define ANSWERS 8
struct side {
	int n;    /* answers whose head came (at most ANSWERS) */
	int done; /* answers read whole */
	int status[ANSWERS];
	struct sp_buf body[ANSWERS];
};

/* What the client must be able to parse: answers, one after another. */
static int on_head(void *ud, struct sp_h1_msg *m)
{
	struct side *sd = ud;
	FUZZ_CHECK(m->status >= 100 && m->status <= 599, "status %d sent to the client", m->status);
	if (m->status >= 200 && sd->n < ANSWERS)
		sd->status[sd->n++] = m->status;
	return 0;
}

static int on_body(void *ud, const char *p, size_t n)
{
	struct side *sd = ud;
	if (sd->n > sd->done && sd->n <= ANSWERS && sp_buf_add(&sd->body[sd->n - 1], p, n) < 0)
		abort();
	return 0;
}

static int on_done(void *ud, struct sp_h1_msg *m)
{
	struct side *sd = ud;
	if (m->status >= 200 && sd->done < sd->n)
		sd->done++;
	return 0;
}

static const struct sp_h1_hooks client_hooks = {on_head, on_body, on_done};

/* The backend's side, parsed as a plain client would. */
static int be_head(void *ud, struct sp_h1_msg *m)
{
	struct side *sd = ud;
	if (m->status >= 200 && sd->n < ANSWERS)
		sd->status[sd->n++] = m->status;
	return 0;
}

static const struct sp_h1_hooks be_hooks = {be_head, on_body, on_done};

/* Where each final answer in the backend's bytes ends. */
#define BOUNDS 64
struct bounds {
	size_t n, at[BOUNDS];
	int final;
};

static int bound_head(void *ud, struct sp_h1_msg *m)
{
	struct bounds *b = ud;
	b->final = m->status >= 200;
	return 0;
}

static int bound_body(void *ud, const char *p, size_t n)
{
	(void)ud;
	(void)p;
	(void)n;
	return 0;
}

static int bound_done(void *ud, struct sp_h1_msg *m)
{
	struct bounds *b = ud;
	(void)m;
	return b->final; /* pause after a final answer */
}

static const struct sp_h1_hooks bound_hooks = {bound_head, bound_body, bound_done};

static void find_bounds(const uint8_t *be, size_t nbe, struct bounds *b,
			const struct sp_h1_limits *limits)
{
	struct sp_h1 *h = sp_h1_new(0, &bound_hooks, b, limits);
	size_t off = 0;
	b->n = 0;
	while (off < nbe && b->n < BOUNDS) {
		size_t used = 0;
		if (sp_h1_execute(h, (const char *)be + off, nbe - off, &used) != SP_H1_PAUSED)
			break;
		off += used;
		b->at[b->n++] = off;
		sp_h1_resume(h);
	}
	sp_h1_free(&h);
}

/* The requests the backend reads: counted, and they must parse. */
static int req_head(void *ud, struct sp_h1_msg *m)
{
	(void)m;
	(*(size_t *)ud)++;
	return 0;
}

static int req_done(void *ud, struct sp_h1_msg *m)
{
	(void)ud;
	(void)m;
	return 0;
}

static const struct sp_h1_hooks req_hooks = {req_head, bound_body, req_done};

static struct sp_config *config(int port, int port2)
{
	static char text[2048];
	int lport, probe = backend_listener(&lport); /* a free port for the worker's listener */
	close(probe);
	struct sp_diag d;
	/* two servers (a retry on the next one, also after a 502 or 503
	 * answer, or 100 ms without one), host_header (a Location naming it maps back), variables in
	 * the header rules */
	snprintf(text, sizeof(text),
		 "listen = ( { address = \"127.0.0.1:%d\"; } );\nworkers = 1;\nlog_level = \"error\";\n"
		 "backends = { b = { servers = [\"http://127.0.0.1:%d\", \"http://127.0.0.1:%d\"];"
		 " connect_timeout_ms = 200; retry_on_status = [502, 503]; per_try_timeout_ms = 100;"
		 " response_timeout_ms = 200; host_header = \"legacy.internal:8080\";"
		 " path_rewrite = ( { prefix = \"/a\"; to = \"/\"; },"
		 " { prefix = \"/\"; to = \"/b\"; } );"
		 " request_headers = { set = { X-Key ="
		 " \"k$remote_addr|${scheme}|$request_id|$http_host|${host}$$\"; };"
		 " remove = [\"Cookie\"]; };"
		 " response_headers = { set = { X-Seen = \"$host:$http_host:${remote_addr}\"; };"
		 " remove = [\"Server\"]; };"
		 " }; };\ndefault_backend = \"b\";\n"
		 /* routes that answer themselves: a redirect made of the request's
		  * words, a body (a request body to read and drop) */
		 "routes = ( { name = \"r\"; match = { path_prefix = \"/r\"; };"
		 " return = { status = 301; location = \"https://x$request_uri#$host\"; }; },"
		 " { name = \"g\"; match = { path_prefix = \"/g\"; }; max_body_bytes = 64;"
		 " return = { status = 410; body = \"gone\"; }; },"
		 /* a location written as a path, of the client's words */
		 " { name = \"p\"; match = { path_prefix = \"/p\"; };"
		 " return = { status = 302; location = \"/$request_id$http_host\"; }; } );\n"
		 "timeouts = { client_header_ms = 200; client_body_ms = 200; };\n"
		 "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"];\n"
		 "trusted_headers = [\"X-Forwarded-Proto\", \"X-Forwarded-Host\"];\n",
		 lport, port, port2);
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load_string(text, "fuzz.conf", &d);
	if (!c)
		fprintf(stderr, "%.*s", (int)d.text.len, d.text.data ? d.text.data : "");
	sp_diag_deinit(&d);
	return c;
}

/* Write sizes (0: all at once). */
static const size_t pieces[8] = {0, 1, 2, 3, 7, 16, 61, 500};

/* Writes the next piece of [*off, n) to fd; 1 if bytes are left. */
static int write_piece(int fd, const uint8_t *p, size_t n, size_t *off, size_t piece)
{
	if (*off >= n)
		return 0;
	size_t k = piece && n - *off > piece ? piece : n - *off;
	ssize_t w = write(fd, p + *off, k);
	if (w > 0)
		*off += (size_t)w;
	else if (w < 0 && errno != EAGAIN)
		*off = n; /* the peer is gone: nothing more to send */
	return *off < n;
}

/* How far a paced backend may have sent. */
static size_t upto_now(int paced, const struct bounds *bd, size_t nreq, size_t nbe)
{
	if (paced && nreq <= bd->n)
		return nreq ? bd->at[nreq - 1] : 0;
	return nbe;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int once;
	if (!once) {
		once = 1;
		signal(SIGPIPE, SIG_IGN);
		evthread_use_pthreads();
		sp_log_set_level(SP_LOG_ERROR); /* as the config says: no line per bad input */
	}
	if (size < 2)
		return 0;
	size_t rest = size - 2;
	size_t ncl = (size_t)data[0] * rest / 255;
	const uint8_t *cl = data + 2, *be = data + 2 + ncl;
	size_t nbe = rest - ncl;
	int close_after = data[1] & 1, paced = data[1] >> 7;
	size_t cpiece = pieces[(data[1] >> 1) & 7], bpiece = pieces[(data[1] >> 4) & 7];
	size_t coff = 0, boff = 0;

	int port, lfd = backend_listener(&port), port2, lfd2 = backend_listener(&port2), sv[2], bfd = -1, nconn = 0;
	struct sp_config *cfg = NULL;
	struct sp_worker *w = NULL;
	/* the listener's port was free when probed; the harness's own outgoing
	 * connections (thousands a second, in TIME_WAIT) can take it meanwhile */
	for (int tries = 0; !w && tries < 20; tries++) {
		sp_config_unref(&cfg);
		cfg = config(port, port2);
		FUZZ_CHECK(cfg, "the harness's config does not load");
		w = sp_worker_new(0, cfg, NULL, NULL);
	}
	FUZZ_CHECK(w, "no worker");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	/* client bytes that start as a PROXY header (v1 or v2) come through a
	 * listener with proxy_protocol */
	static const uint8_t v2_sig[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};
	int pp = (ncl >= 6 && memcmp(cl, "PROXY ", 6) == 0) ||
		 (ncl >= 12 && memcmp(cl, v2_sig, 12) == 0);
	sp_session_accept(w, sv[0], (struct sockaddr *)&peer, sizeof(peer), NULL, pp);
	int cleft = write_piece(sv[1], cl, ncl, &coff, cpiece);
	if (!cleft)
		shutdown(sv[1], SHUT_WR);

	static const struct sp_h1_limits limits = {65536, 1 << 20, 10000};
	struct bounds bd = {0};
	if (paced)
		find_bounds(be, nbe, &bd, &limits);
	size_t nreq = 0;
	struct sp_h1 *reqp = NULL;
	struct side got = {0}, want = {0};
	for (int i = 0; i < ANSWERS; i++) {
		sp_buf_init(&got.body[i]);
		sp_buf_init(&want.body[i]);
	}
	struct sp_h1 *client = sp_h1_new(0, &client_hooks, &got, &limits);
	/* answers to HEAD have no body and a tunnel after 101 is not HTTP: the
	 * client-side parse is only checked when neither can happen */
	int check = ncl && !memmem(cl, ncl, "HEAD", 4) && !memmem(cl, ncl, "pgrade", 6) &&
		    !memmem(cl, ncl, "PGRADE", 6);
	int sent = 0, parse_failed = !check;
	char buf[65536];
	for (int round = 0, idle = 0; idle < 200 && round < 20000; round++) {
		event_base_loop(w->base, EVLOOP_NONBLOCK);
		int nfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (nfd < 0)
			nfd = accept4(lfd2, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (nfd >= 0) { /* a later connection takes over the rest */
			if (bfd >= 0)
				close(bfd);
			bfd = nfd;
			sent = 0;
			nconn++;
			sp_h1_free(&reqp);
			reqp = sp_h1_new(1, &req_hooks, &nreq, &limits);
		}
		int bleft = 0;
		if (bfd >= 0) {
			ssize_t k;
			while ((k = read(bfd, buf, sizeof(buf))) > 0) {
				/* the requests the proxy sent must parse */
				size_t used = 0;
				enum sp_h1_rc rc = reqp ? sp_h1_execute(reqp, buf, (size_t)k, &used)
							: SP_H1_OK;
				if (rc == SP_H1_UPGRADE || (rc == SP_H1_ERROR && !check))
					sp_h1_free(&reqp); /* a tunnel's bytes, or after one */
				else
					FUZZ_CHECK(rc != SP_H1_ERROR,
						   "the backend cannot parse the proxy's request: %d %s",
						   sp_h1_error_status(reqp), sp_h1_error_reason(reqp));
			}
			size_t upto = nbe;
			if (paced && nreq <= bd.n)
				upto = nreq ? bd.at[nreq - 1] : 0;
			if (!sent) {
				bleft = write_piece(bfd, be, upto, &boff, bpiece);
				bleft = bleft || boff < nbe;
				if (!bleft) {
					sent = 1;
					if (close_after)
						shutdown(bfd, SHUT_WR);
				}
			}
		}
		if (cleft) {
			cleft = write_piece(sv[1], cl, ncl, &coff, cpiece);
			if (!cleft)
				shutdown(sv[1], SHUT_WR);
		}
		ssize_t n;
		while ((n = read(sv[1], buf, sizeof(buf))) > 0) {
			size_t used = 0;
			/* what the proxy wrote must parse as responses */
			if (!parse_failed && sp_h1_execute(client, buf, (size_t)n, &used) == SP_H1_ERROR) {
				parse_failed = 1;
				FUZZ_CHECK(0, "the client cannot parse the proxy's answer: %s",
					   sp_h1_error_reason(client));
			}
		}
		if (n == 0)
			break; /* the proxy closed the client connection */
		if (w->nsessions == 0)
			break;
		if (cleft || (bleft && boff < upto_now(paced, &bd, nreq, nbe)))
			continue; /* more pieces to go: no wait */
		idle++;
		usleep(100);
	}
	/* each final answer the client got whole with the backend's own
	 * status (2xx, 3xx: never one the proxy makes) carries the backend's
	 * body, byte for byte (framing aside), up to the first that differs;
	 * with one backend connection (a later one gets the bytes left, from
	 * wherever the earlier one stopped) */
	if (!parse_failed && got.done > 0 && nconn == 1) {
		struct sp_h1 *b = sp_h1_new(0, &be_hooks, &want, &limits);
		size_t used = 0;
		if (sp_h1_execute(b, (const char *)be, nbe, &used) != SP_H1_ERROR && close_after)
			sp_h1_finish(b);
		if (getenv("FUZZ_BODY_DEBUG"))
			for (int i = 0; i < got.done || i < want.done; i++)
				fprintf(stderr, "answer %d: client %d %zu bytes, backend %d %zu bytes\n", i,
					i < got.done ? got.status[i] : 0, got.body[i].len,
					i < want.done ? want.status[i] : 0, want.body[i].len);
		for (int i = 0; i < got.done && i < want.done; i++) {
			int st = got.status[i];
			if (st != want.status[i] || st >= 400)
				break;
			if (st == 204 || st == 304)
				continue;
			FUZZ_CHECK(got.body[i].len == want.body[i].len &&
					   (!got.body[i].len || memcmp(got.body[i].data, want.body[i].data,
								       got.body[i].len) == 0),
				   "answer %d, status %d: the backend sent a body of %zu bytes, the "
				   "client got %zu", i, st, want.body[i].len, got.body[i].len);
		}
		sp_h1_free(&b);
	}
	for (int i = 0; i < ANSWERS; i++) {
		sp_buf_deinit(&got.body[i]);
		sp_buf_deinit(&want.body[i]);
	}
	sp_h1_free(&client);
	sp_h1_free(&reqp);
	if (bfd >= 0)
		close(bfd);
	close(lfd);
	close(lfd2);
	close(sv[1]);
	sp_worker_free(&w);
	sp_config_unref(&cfg);
	return 0;
}
