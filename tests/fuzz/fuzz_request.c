/* Fuzzes what the proxy does with a client's bytes: the request parser fed in
 * pieces and across pipelined messages, the header checks, path
 * normalisation, and the head written upstream, which must parse back (with
 * a fresh parser) to the same method, path and end-to-end headers.
 *
 * Input: 1 flag byte (bit 0: the proxy sets its own X-Request-Id), 4 piece
 * sizes (0 = the rest), then the bytes a client sends. */
#include <string.h>
#include <strings.h>

#include "fuzz_h1.h"
#include "pathnorm.h"

static const struct sp_h1_limits client_limits = {8192, 32768, 100};
/* The re-parsed head carries the proxy's own headers on top: no limits. */
static const struct sp_h1_limits wide_limits = {1u << 20, 1u << 22, 1u << 16};

#define CLIENT_IP "192.0.2.7"
#define DEFAULT_HOST "127.0.0.1:9001"
#define REQUEST_ID "fuzz-0000000000000001"
/* Other backends' host:port, shorter and longer than DEFAULT_HOST, for
 * sp_http_retarget (a retry or a shadow on another backend). */
static const char *const other_hosts[] = {"b:1", "127.0.0.1:9002", "[::1]:9003",
					  "legacy-backend.internal.example:8443", ""};
/* ...and the path another backend's path_rewrite gives (NULL: the same) */
static const char *const other_paths[] = {NULL, "/", "/orders/7", "/a%2Fb/", NULL};

struct ctx {
	struct sp_h1 *h;
	int check; /* re-parse the heads written (the run fed in pieces) */
	int request_id;
	struct fuzz_trace tr;
	const uint8_t *in; /* the whole input, for looking at raw heads */
	size_t in_n;
	struct sp_buf path, head;
	/* The head written for m, checked after the parser call returns. */
	struct sp_fwd_request f;
	const struct sp_h1_msg *m;
};

struct expect {
	const struct sp_fwd_request *f;
	const struct sp_h1_msg *orig;
	const struct sp_hdr *host; /* the client's Host, NULL: default_host was written */
	int heads;
};

static int keep_orig(const struct sp_hdr *all, size_t n, size_t i, const void *arg)
{
	const struct expect *e = arg;
	/* Host goes first: on_reparsed_head checks it */
	return &all[i] != e->host && !sp_hdr_is_hop(&all[i], all, n) &&
	       !sp_hdr_is_regenerated(&all[i]) &&
	       !sp_hdr_poses_as_managed(&all[i]) &&
	       !(e->f->request_id && sp_hdr_name_is(&all[i], "X-Request-Id"));
}

/* Judged by the client's Connection headers, not by the one the proxy
 * writes ("Connection: upgrade"). */
static int keep_reparsed(const struct sp_hdr *all, size_t n, size_t i, const void *arg)
{
	const struct expect *e = arg;
	(void)n;
	return i != 0 && /* Host, checked apart */
	       !sp_hdr_is_hop(&all[i], e->orig->hdrs, e->orig->nhdrs) &&
	       !sp_hdr_is_regenerated(&all[i]) && !sp_hdr_poses_as_managed(&all[i]) &&
	       !(e->f->request_id && sp_hdr_name_is(&all[i], "X-Request-Id"));
}

/* The head as the backend parses it. */
static int on_reparsed_head(void *ud, struct sp_h1_msg *m)
{
	struct expect *e = ud;
	const struct sp_fwd_request *f = e->f;
	const char *why = NULL;
	size_t hosts = 0;

	e->heads++;
	FUZZ_CHECK(e->heads == 1, "one head written, %d parsed", e->heads);
	FUZZ_CHECK(strcmp(m->method, f->method) == 0, "method %s forwarded as %s", f->method,
		   m->method);
	FUZZ_CHECK(m->http_major == 1 && m->http_minor == 1, "HTTP/%d.%d", m->http_major,
		   m->http_minor);
	size_t want = f->path_len + (f->query ? 1 + f->query_len : 0);
	FUZZ_CHECK(m->url_len == want && memcmp(m->url, f->path, f->path_len) == 0 &&
			   (!f->query ||
			    (m->url[f->path_len] == '?' &&
			     memcmp(m->url + f->path_len + 1, f->query, f->query_len) == 0)),
		   "target \"%.*s\" forwarded as \"%.*s\"", (int)f->path_len, f->path,
		   (int)m->url_len, m->url);
	int st = sp_http_check_request(m->hdrs, m->nhdrs, m->http_minor, &why);
	FUZZ_CHECK(st == 0, "the proxy's own head is refused: %d %s", st, why);
	for (size_t i = 0; i < m->nhdrs; i++)
		hosts += sp_hdr_name_is(&m->hdrs[i], "Host");
	FUZZ_CHECK(hosts == 1, "%zu Host headers forwarded", hosts);
	/* Host first (RFC 9112 3.2): the client's value, or default_host */
	const char *hv = e->host ? e->host->value : f->default_host;
	size_t hl = e->host ? e->host->value_len : strlen(f->default_host);
	FUZZ_CHECK(m->nhdrs > 0 && sp_hdr_name_is(&m->hdrs[0], "Host") &&
			   m->hdrs[0].value_len == hl && memcmp(m->hdrs[0].value, hv, hl) == 0,
		   "the first header is not Host: %.*s", (int)hl, hv);
	same_forwarded(e->orig->hdrs, e->orig->nhdrs, m->hdrs, m->nhdrs, keep_orig, keep_reparsed,
		       e);

	switch (f->body) {
	case SP_BODY_LENGTH:
		FUZZ_CHECK(m->has_length && !m->chunked && m->content_length == f->content_length,
			   "Content-Length %llu forwarded as has=%d %llu chunked=%d",
			   (unsigned long long)f->content_length, m->has_length,
			   (unsigned long long)m->content_length, m->chunked);
		break;
	case SP_BODY_CHUNKED:
		FUZZ_CHECK(m->chunked && !m->has_length,
			   "chunked forwarded as has_length=%d chunked=%d", m->has_length,
			   m->chunked);
		break;
	default:
		FUZZ_CHECK(!m->chunked && !m->has_length, "no body forwarded with a body");
		break;
	}
	FUZZ_CHECK(m->upgrade == f->upgrade, "upgrade %d forwarded as %d", f->upgrade, m->upgrade);
	return 0;
}

static const struct sp_h1_hooks reparse_hooks = {on_reparsed_head, fuzz_reparsed_body,
						 fuzz_reparsed_done};

static void check_reparse(const struct sp_fwd_request *f, const struct sp_h1_msg *orig,
			  const struct sp_buf *head)
{
	struct expect e = {f, orig, sp_hdr_find(orig->hdrs, orig->nhdrs, "Host"), 0};
	struct sp_h1 *h = sp_h1_new(1, &reparse_hooks, &e, &wide_limits);
	size_t used = 0;
	FUZZ_CHECK(h, "out of memory");
	enum sp_h1_rc rc = sp_h1_execute(h, head->data, head->len, &used);
	if (rc == SP_H1_ERROR)
		fprintf(stderr, "head written:\n%.*s\n", (int)head->len, head->data);
	FUZZ_CHECK(rc != SP_H1_ERROR, "the head written does not parse: %d %s",
		   sp_h1_error_status(h), sp_h1_error_reason(h));
	FUZZ_CHECK(used == head->len, "%zu bytes of the head left over", head->len - used);
	FUZZ_CHECK(e.heads == 1, "the head written was not delivered");
	sp_h1_free(&h);
}

/* Raw-byte oracles: the head read as RFC 9112 does (CRLF line ends, which
 * h1.c's scan_head enforces), independently of llhttp. */
static void check_raw(const struct ctx *c, enum sp_body_mode body)
{
	if (c->tr.msg_start == FUZZ_UNKNOWN)
		return;
	const uint8_t *raw = c->in + c->tr.msg_start;
	size_t raw_n = c->in_n - c->tr.msg_start;
	int te, cl;
	FUZZ_CHECK(!head_has_fold(raw, raw_n), "a head with obs-fold was accepted");
	raw_framing(raw, raw_n, &te, &cl);
	FUZZ_CHECK(te	? body == SP_BODY_CHUNKED
		   : cl ? body == SP_BODY_LENGTH
			: body == SP_BODY_NONE,
		   "raw head has TE=%d CL=%d, body framed as %d", te, cl, (int)body);
}

/* What session.c's on_req_head does up to writing the upstream head. */
static int on_head(void *ud, struct sp_h1_msg *m)
{
	struct ctx *c = ud;
	const char *why = "", *query = NULL;
	size_t qlen = 0;

	trace_msg(&c->tr, m);
	int st = sp_request_verdict(m, &c->path, &query, &qlen, &why);
	if (st) {
		trace_ev(&c->tr, "refused %d %s", st, why);
		sp_h1_fail(c->h, st, why);
		return -1;
	}
	if (c->path.data[0] == '/') {
		/* Normalising is idempotent: what the router saw is what the
		 * backend will see. */
		struct sp_buf again;
		sp_buf_init(&again);
		FUZZ_CHECK(sp_path_normalize(c->path.data, c->path.len, &again) == SP_PATH_OK &&
				   again.len == c->path.len &&
				   memcmp(again.data, c->path.data, again.len) == 0,
			   "\"%s\" normalises to \"%s\"", c->path.data,
			   again.data ? again.data : "");
		sp_buf_deinit(&again);
	}
	c->f = sp_fwd_request_for(m, c->path.data, c->path.len, query, qlen);
	c->f.client_ip = CLIENT_IP;
	c->f.proto = "http";
	c->f.request_id = c->request_id ? REQUEST_ID : NULL;
	c->f.default_host = DEFAULT_HOST;
	sp_buf_reset(&c->head);
	FUZZ_CHECK(sp_http_write_request_head(&c->f, &c->head) == 0, "out of memory");
	trace_ev(&c->tr, "forward %zu", c->head.len);
	trace_bytes(&c->tr, c->head.data, c->head.len);
	if (c->check) {
		/* session.c: a head made for one backend, retargeted for another,
		 * is the head written with that backend's host_header (or, for
		 * a request without Host, its default_host: the same bytes) and
		 * the path its path_rewrite gives */
		for (size_t i = 0; i < sizeof(other_hosts) / sizeof(other_hosts[0]); i++) {
			struct sp_buf moved, direct;
			struct sp_fwd_request o = c->f;
			sp_buf_init(&moved);
			sp_buf_init(&direct);
			struct sp_retarget t = {other_hosts[i], other_paths[i],
						other_paths[i] ? strlen(other_paths[i]) : 0};
			o.host = other_hosts[i];
			if (t.path) {
				o.path = t.path;
				o.path_len = t.path_len;
			}
			FUZZ_CHECK(sp_buf_add(&moved, c->head.data, c->head.len) == 0 &&
					   sp_http_write_request_head(&o, &direct) == 0,
				   "out of memory");
			FUZZ_CHECK(sp_http_retarget(&moved, &t) == 0,
				   "no Host line or request line to retarget in:\n%.*s",
				   (int)c->head.len, c->head.data);
			FUZZ_CHECK(moved.len == direct.len &&
					   memcmp(moved.data, direct.data, moved.len) == 0 &&
					   moved.data[moved.len] == '\0',
				   "retargeted to %s %s:\n%.*s\nwritten for it:\n%.*s", other_hosts[i],
				   t.path ? t.path : "(same path)",
				   (int)moved.len, moved.data, (int)direct.len, direct.data);
			sp_buf_deinit(&moved);
			sp_buf_deinit(&direct);
		}
	}
	FUZZ_CHECK(!c->m, "two heads in one parser call");
	c->m = m; /* checked once the parser call returns without an error */
	return 0;
}

static void after_exec(void *ud)
{
	struct ctx *c = ud;
	if (c->m && c->check) {
		check_raw(c, c->f.body);
		check_reparse(&c->f, c->m, &c->head);
	}
	c->m = NULL;
}

static int on_body(void *ud, const char *p, size_t n)
{
	struct ctx *c = ud;
	trace_body(&c->tr, p, n);
	return 0;
}

static int on_done(void *ud, struct sp_h1_msg *m)
{
	struct ctx *c = ud;
	(void)m;
	trace_ev(&c->tr, "done");
	return 1; /* one exchange at a time, as session.c does */
}

static const struct sp_h1_hooks hooks = {on_head, on_body, on_done};

static void on_pause(void *ud)
{
	struct ctx *c = ud;
	sp_h1_resume(c->h);
}

static const struct fuzz_feed_hooks feed_hooks = {after_exec, on_pause};

static void run(struct ctx *c, const uint8_t *data, size_t size, const uint8_t *split)
{
	c->h = sp_h1_new(1, &hooks, c, &client_limits);
	FUZZ_CHECK(c->h, "out of memory");
	sp_buf_init(&c->tr.t);
	c->tr.msg_start = 0;
	c->in = data;
	c->in_n = size;
	sp_buf_init(&c->path);
	sp_buf_init(&c->head);
	c->m = NULL;
	if (fuzz_feed(c->h, data, size, split, &c->tr, &feed_hooks, c) == SP_H1_OK)
		trace_ev(&c->tr, "end in_message=%d", sp_h1_in_message(c->h));
	sp_buf_deinit(&c->path);
	sp_buf_deinit(&c->head);
	sp_h1_free(&c->h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = {data, size};
	uint8_t flags = fuzz_byte(&in), split[FUZZ_NSPLIT];
	for (size_t i = 0; i < FUZZ_NSPLIT; i++)
		split[i] = fuzz_byte(&in);

	struct ctx pieces = {.check = 1, .request_id = flags & 1};
	struct ctx whole = {.check = 0, .request_id = flags & 1};
	run(&pieces, in.p, in.n, split);
	run(&whole, in.p, in.n, NULL);
	trace_same(&pieces.tr.t, &whole.tr.t);
	sp_buf_deinit(&pieces.tr.t);
	sp_buf_deinit(&whole.tr.t);
	return 0;
}
