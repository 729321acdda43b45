/* Fuzzes what the proxy does with a backend's bytes: the response parser fed
 * in pieces, interim (1xx) answers, HEAD/204/304 bodies, close-delimited
 * bodies ended by EOF, several responses on one connection, the header
 * checks, and the head written to the client, which must parse back (with a
 * fresh parser) to the same status, end-to-end headers and framing.
 *
 * Input: 1 flag byte, 4 piece sizes (0 = the rest), 1 byte of per-exchange
 * bits, then the bytes a backend sends. Flags: bit 0 the request was HEAD,
 * bit 1 it asked for an upgrade, bit 2 the client speaks HTTP/1.0, bit 3 the
 * client wants keep-alive. Per-exchange bits, two per completed response
 * (cycled): reset the parser (else resume it), and whether the next request
 * is a HEAD. */
#include <string.h>

#include "fuzz_h1.h"

static const struct sp_h1_limits backend_limits = {1024, 65536, 200};
static const struct sp_h1_limits wide_limits = {1u << 20, 1u << 22, 1u << 16};

struct ctx {
	struct sp_h1 *h;
	int check; /* re-parse the heads written (the run fed in pieces) */
	int is_head, upgrade_req, client_minor, req_keep;
	uint8_t bits;
	unsigned nbit;
	int interim;
	int interims; /* interim heads since tr.msg_start */
	struct fuzz_trace tr;
	const uint8_t *in; /* the whole input, for looking at raw heads */
	size_t in_n;
	struct sp_buf head;
	/* The head written for m, checked after the parser call returns. */
	struct sp_fwd_response f;
	const struct sp_h1_msg *m;
	int m_is_head;
};

struct expect {
	const struct sp_fwd_response *f;
	const struct sp_h1_msg *orig;
	int is_head;
	int heads;
};

static int keep_orig(const struct sp_hdr *all, size_t n, size_t i, const void *arg)
{
	(void)arg;
	return !sp_hdr_is_hop(&all[i], all, n);
}

/* Judged by the backend's Connection headers, not by the one the proxy
 * writes: its "Connection: close" would otherwise make a (reserved, RFC 9110
 * 18.4) header named Close look hop-by-hop. */
static int keep_reparsed(const struct sp_hdr *all, size_t n, size_t i, const void *arg)
{
	const struct expect *e = arg;
	(void)n;
	return !sp_hdr_is_hop(&all[i], e->orig->hdrs, e->orig->nhdrs);
}

static void check_framing(const struct sp_fwd_response *f, const struct sp_h1_msg *m)
{
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
	case SP_BODY_CLOSE:
		FUZZ_CHECK(
			!m->chunked && !m->has_length && !m->keep_alive,
			"close-delimited body forwarded as has_length=%d chunked=%d keep_alive=%d",
			m->has_length, m->chunked, m->keep_alive);
		break;
	case SP_BODY_NONE:
		if (f->keep_length && f->has_length)
			FUZZ_CHECK(m->has_length && m->content_length == f->content_length,
				   "HEAD/304 Content-Length %llu forwarded as has=%d %llu",
				   (unsigned long long)f->content_length, m->has_length,
				   (unsigned long long)m->content_length);
		else
			FUZZ_CHECK(!m->has_length && !m->chunked,
				   "bodiless response forwarded with has_length=%d chunked=%d",
				   m->has_length, m->chunked);
		break;
	}
}

/* The head as the client parses it. */
static int on_reparsed_head(void *ud, struct sp_h1_msg *m)
{
	struct expect *e = ud;
	const struct sp_fwd_response *f = e->f;
	const char *why = NULL;

	e->heads++;
	FUZZ_CHECK(e->heads == 1, "one head written, %d parsed", e->heads);
	FUZZ_CHECK(m->status == f->status, "status %d forwarded as %d", f->status, m->status);
	FUZZ_CHECK(m->http_major == 1 && m->http_minor == (f->client_minor ? 1 : 0),
		   "HTTP/%d.%d to an HTTP/1.%d client", m->http_major, m->http_minor,
		   f->client_minor);
	FUZZ_CHECK(m->reason_len == f->reason_len &&
			   memcmp(m->reason, f->reason, f->reason_len) == 0,
		   "reason \"%.*s\" forwarded as \"%.*s\"", (int)f->reason_len, f->reason,
		   (int)m->reason_len, m->reason);
	FUZZ_CHECK(sp_http_check_response(m->hdrs, m->nhdrs, m->http_minor, &why) == 0,
		   "the proxy's own head is refused: %s", why);
	same_forwarded(e->orig->hdrs, e->orig->nhdrs, m->hdrs, m->nhdrs, keep_orig, keep_reparsed,
		       e);
	check_framing(f, m);
	/* The client must switch protocols exactly when the proxy starts
	 * tunnelling, or it reads tunnelled bytes as HTTP. */
	FUZZ_CHECK(m->upgrade == f->upgrade || fuzz_known("101-no-upgrade"),
		   "upgrade %d forwarded as %d", f->upgrade, m->upgrade);
	/* An unframed answer to HEAD looks close-delimited while its head is
	 * parsed; h1.c settles keep-alive when the message completes. */
	if (!f->upgrade && !(e->is_head && !m->has_length && !m->chunked))
		FUZZ_CHECK(m->keep_alive == f->keep_alive,
			   "keep-alive %d forwarded as %d (parsed by h1.c)", f->keep_alive,
			   m->keep_alive);
	return 0;
}

static const struct sp_h1_hooks reparse_hooks = {on_reparsed_head, fuzz_reparsed_body,
						 fuzz_reparsed_done};

static void check_reparse(const struct sp_fwd_response *f, const struct sp_h1_msg *orig,
			  int is_head, const struct sp_buf *head)
{
	struct expect e = {f, orig, is_head, 0};
	struct sp_h1 *h = sp_h1_new(0, &reparse_hooks, &e, &wide_limits);
	size_t used = 0;
	FUZZ_CHECK(h, "out of memory");
	sp_h1_expect_head(h, is_head);
	enum sp_h1_rc rc = sp_h1_execute(h, head->data, head->len, &used);
	if (rc == SP_H1_ERROR)
		fprintf(stderr, "head written:\n%.*s\n", (int)head->len, head->data);
	FUZZ_CHECK(rc != SP_H1_ERROR, "the head written does not parse: %d %s",
		   sp_h1_error_status(h), sp_h1_error_reason(h));
	FUZZ_CHECK(used == head->len, "%zu bytes of the head left over", head->len - used);
	FUZZ_CHECK(e.heads == 1, "the head written was not delivered");
	sp_h1_free(&h);
}

/* What session.c's on_resp_head does (with the request fully sent). */
static int on_head(void *ud, struct sp_h1_msg *m)
{
	struct ctx *c = ud;
	const char *why = NULL;

	trace_msg(&c->tr, m);
	enum sp_resp_verdict v = sp_response_verdict(m, c->upgrade_req, &why);
	if (v == SP_RESP_BAD) {
		trace_ev(&c->tr, "refused %s", why);
		sp_h1_fail(c->h, 502, why);
		return -1;
	}
	if (v == SP_RESP_INTERIM) {
		c->interim = 1;
		trace_ev(&c->tr, "interim");
		return 1;
	}
	/* RFC 9110 15: three digits, 100-599; llhttp 8.1 takes "0", "20" or
	 * "0200" as a status (status-range). */
	FUZZ_CHECK((m->status >= 100 && m->status <= 599) || fuzz_known("status-range"),
		   "status %d forwarded", m->status);
	c->f = sp_fwd_response_for(m, c->is_head, c->client_minor);
	c->f.keep_alive = c->req_keep && c->f.body != SP_BODY_CLOSE && !c->upgrade_req;
	sp_buf_reset(&c->head);
	FUZZ_CHECK(sp_http_write_response_head(&c->f, &c->head) == 0, "out of memory");
	trace_ev(&c->tr, "forward %zu", c->head.len);
	trace_bytes(&c->tr, c->head.data, c->head.len);
	FUZZ_CHECK(!c->m, "two final heads in one parser call");
	c->m = m; /* checked once the parser call returns without an error */
	c->m_is_head = c->is_head;
	return 0;
}

/* "Transfer-Encoding: chunked<HTAB>": http.c accepts the OWS, llhttp 8.1 does
 * not see chunked and reads to EOF (te-trailing-tab). */
static int te_has_tab(const struct sp_h1_msg *m)
{
	for (size_t i = 0; i < m->nhdrs; i++)
		if (sp_hdr_name_is(&m->hdrs[i], "Transfer-Encoding") &&
		    memchr(m->hdrs[i].value, '\t', m->hdrs[i].value_len))
			return 1;
	return 0;
}

/* Raw-byte oracles: the head read as RFC 9112 does (CRLF line ends, which
 * h1.c's scan_head enforces), independently of llhttp. */
static void check_raw(const struct ctx *c, const struct sp_h1_msg *m)
{
	if (c->tr.msg_start == FUZZ_UNKNOWN)
		return;
	const uint8_t *raw = c->in + c->tr.msg_start;
	size_t raw_n = c->in_n - c->tr.msg_start;
	int te, cl;
	/* Past the interim heads (no bodies) to the final one. */
	for (int k = 0; k < c->interims; k++) {
		size_t i = skip_empty_lines(raw, raw_n);
		/* scan_head knows an interim head by "HTTP/1.x 1" and is blind to
		 * "HTTP/1.1 0100", which llhttp reads as 100 (interim-zero). */
		if (fuzz_known("interim-zero") && (raw_n - i < 10 || raw[i + 9] != '1'))
			return;
		const uint8_t *end = NULL;
		for (; i + 3 < raw_n && !end; i++)
			if (memcmp(raw + i, "\r\n\r\n", 4) == 0)
				end = raw + i + 4;
		FUZZ_CHECK(end, "interim head %d not ended by an empty CRLF line", k);
		raw_n -= (size_t)(end - raw);
		raw = end;
	}
	FUZZ_CHECK(!head_has_fold(raw, raw_n), "a head with obs-fold was accepted");
	raw_framing(raw, raw_n, &te, &cl);
	FUZZ_CHECK((te	 ? m->chunked
		    : cl ? m->has_length && !m->chunked
			 : !m->has_length && !m->chunked) ||
			   (fuzz_known("te-trailing-tab") && te_has_tab(m)),
		   "raw head has TE=%d CL=%d, parsed as chunked=%d has_length=%d", te, cl,
		   m->chunked, m->has_length);
}

static void after_exec(void *ud)
{
	struct ctx *c = ud;
	if (c->m && c->check) {
		check_raw(c, c->m);
		check_reparse(&c->f, c->m, c->m_is_head, &c->head);
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
	if (c->interim) {
		c->interim = 0;
		c->interims++; /* the final answer's head follows this one */
		return 0;      /* the final response follows */
	}
	return 1;
}

static const struct sp_h1_hooks hooks = {on_head, on_body, on_done};

static int next_bit(struct ctx *c)
{
	return (c->bits >> (c->nbit++ % 8)) & 1;
}

/* After a final response: the next exchange, on the same connection. */
static void on_pause(void *ud)
{
	struct ctx *c = ud;
	int reset = next_bit(c);
	c->is_head = next_bit(c);
	if (reset)
		sp_h1_reset(c->h); /* also forgets expect_head */
	else
		sp_h1_resume(c->h);
	sp_h1_expect_head(c->h, c->is_head);
	c->interims = 0;
	trace_ev(&c->tr, "next reset=%d head=%d", reset, c->is_head);
}

static const struct fuzz_feed_hooks feed_hooks = {after_exec, on_pause};

static void run(struct ctx *c, const uint8_t *data, size_t size, const uint8_t *split)
{
	c->h = sp_h1_new(0, &hooks, c, &backend_limits);
	FUZZ_CHECK(c->h, "out of memory");
	sp_h1_expect_head(c->h, c->is_head);
	sp_buf_init(&c->tr.t);
	c->tr.msg_start = 0;
	c->in = data;
	c->in_n = size;
	sp_buf_init(&c->head);
	c->m = NULL;
	c->interims = 0;
	if (fuzz_feed(c->h, data, size, split, &c->tr, &feed_hooks, c) == SP_H1_OK) {
		/* The backend closed the connection. */
		enum sp_h1_rc rc = sp_h1_finish(c->h);
		trace_ev(&c->tr, "eof %d in_message=%d", rc, sp_h1_in_message(c->h));
	}
	sp_buf_deinit(&c->head);
	sp_h1_free(&c->h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = {data, size};
	uint8_t flags = fuzz_byte(&in), split[FUZZ_NSPLIT];
	for (size_t i = 0; i < FUZZ_NSPLIT; i++)
		split[i] = fuzz_byte(&in);
	uint8_t bits = fuzz_byte(&in);

	struct ctx proto = {
		.is_head = flags & 1,
		.upgrade_req = (flags >> 1) & 1,
		.client_minor = (flags >> 2) & 1 ? 0 : 1,
		.req_keep = (flags >> 3) & 1,
		.bits = bits,
	};
	struct ctx pieces = proto, whole = proto;
	pieces.check = 1;
	run(&pieces, in.p, in.n, split);
	run(&whole, in.p, in.n, NULL);
	trace_same(&pieces.tr.t, &whole.tr.t);
	sp_buf_deinit(&pieces.tr.t);
	sp_buf_deinit(&whole.tr.t);
	return 0;
}
