/* Unit tests of proxy/h1.c (Content-Length bodies whose bytes the caller
 * relays past the parser: sp_h1_body_left/skip) and of what the proxy decides
 * about a parsed head (http.c's sp_request_verdict, sp_response_verdict,
 * sp_response_body_mode), on heads parsed by h1.c. */
#include "unit.h"

#include "h1.h"

struct seen {
	int heads, dones;
	size_t body;         /* body bytes the parser handed out */
	char last_url[64];
};

static int on_head(void *ud, struct sp_h1_msg *m)
{
	struct seen *s = ud;
	s->heads++;
	snprintf(s->last_url, sizeof(s->last_url), "%.*s", (int)m->url_len, m->url);
	return 0;
}

static int on_body(void *ud, const char *p, size_t n)
{
	(void)p;
	((struct seen *)ud)->body += n;
	return 0;
}

static int on_done(void *ud, struct sp_h1_msg *m)
{
	(void)m;
	((struct seen *)ud)->dones++;
	return 0;
}

static const struct sp_h1_hooks hooks = {on_head, on_body, on_done};
static const struct sp_h1_limits limits = {8192, 32768, 100};

static enum sp_h1_rc feed(struct sp_h1 *h, const char *s, size_t n)
{
	size_t used = 0;
	enum sp_h1_rc rc = sp_h1_execute(h, s, n, &used);
	if (rc == SP_H1_OK)
		assert_int_equal(used, n);
	return rc;
}

#define FEED(h, lit) feed((h), (lit), sizeof(lit) - 1)

static void test_body_left_counts_down_and_skip_ends_on_the_last_byte(void **state)
{
	(void)state;
	struct seen s = {0};
	struct sp_h1 *h = sp_h1_new(1, &hooks, &s, &limits);
	assert_int_equal(sp_h1_body_left(h), 0);
	assert_int_equal(FEED(h, "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01"), SP_H1_OK);
	assert_int_equal(s.heads, 1);
	assert_int_equal(s.body, 2);
	assert_int_equal(sp_h1_body_left(h), 8);
	/* the caller relays 7 bytes itself; the parser must see only the last */
	sp_h1_body_skip(h, 7);
	assert_int_equal(sp_h1_body_left(h), 1);
	assert_int_equal(s.dones, 0);
	assert_int_equal(FEED(h, "9GET /next HTTP/1.1\r\nHost: t\r\n\r\n"), SP_H1_OK);
	assert_int_equal(s.body, 3);
	assert_int_equal(s.dones, 2);
	assert_string_equal(s.last_url, "/next");
	assert_int_equal(sp_h1_body_left(h), 0);
	sp_h1_free(&h);
}

static void test_skip_never_takes_the_last_byte(void **state)
{
	(void)state;
	struct seen s = {0};
	struct sp_h1 *h = sp_h1_new(1, &hooks, &s, &limits);
	assert_int_equal(FEED(h, "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n"), SP_H1_OK);
	assert_int_equal(sp_h1_body_left(h), 4);
	sp_h1_body_skip(h, 4); /* ignored: the message would never end */
	sp_h1_body_skip(h, 9);
	assert_int_equal(sp_h1_body_left(h), 4);
	assert_int_equal(FEED(h, "abcd"), SP_H1_OK);
	assert_int_equal(s.dones, 1);
	assert_int_equal(s.body, 4);
	sp_h1_free(&h);
}

static void test_no_length_body_outside_content_length(void **state)
{
	(void)state;
	struct seen s = {0};
	struct sp_h1 *req = sp_h1_new(1, &hooks, &s, &limits);
	assert_int_equal(FEED(req, "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
			 SP_H1_OK);
	assert_int_equal(sp_h1_body_left(req), 0); /* chunked: framing must be parsed */
	sp_h1_free(&req);

	struct sp_h1 *resp = sp_h1_new(0, &hooks, &s, &limits);
	sp_h1_expect_head(resp, 1);
	assert_int_equal(FEED(resp, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"), SP_H1_OK);
	assert_int_equal(sp_h1_body_left(resp), 0); /* a HEAD answer has no body */
	sp_h1_free(&resp);

	struct sp_h1 *r304 = sp_h1_new(0, &hooks, &s, &limits);
	assert_int_equal(FEED(r304, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"), SP_H1_OK);
	assert_int_equal(sp_h1_body_left(r304), 0);
	sp_h1_free(&r304);

	struct sp_h1 *empty = sp_h1_new(0, &hooks, &s, &limits);
	assert_int_equal(FEED(empty, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), SP_H1_OK);
	assert_int_equal(sp_h1_body_left(empty), 0);
	sp_h1_free(&empty);
}

static void test_response_body_skipped_across_reads(void **state)
{
	(void)state;
	struct seen s = {0};
	struct sp_h1 *h = sp_h1_new(0, &hooks, &s, &limits);
	assert_int_equal(FEED(h, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"), SP_H1_OK);
	for (int i = 0; i < 9; i++) {
		assert_int_equal(sp_h1_body_left(h), 1000 - 111 * i);
		sp_h1_body_skip(h, 111);
	}
	assert_int_equal(sp_h1_body_left(h), 1);
	assert_int_equal(s.dones, 0);
	assert_int_equal(FEED(h, "z"), SP_H1_OK);
	assert_int_equal(s.dones, 1);
	assert_int_equal(s.body, 1);
	sp_h1_free(&h);
}

/* Parses one head and keeps a copy of its view for the verdict tests. */
struct parsed {
	struct sp_h1 *h;
	struct sp_h1_msg m;
	int got;
};

static int keep_head(void *ud, struct sp_h1_msg *m)
{
	struct parsed *p = ud;
	p->m = *m;
	p->got = 1;
	return 0;
}

static int ignore_body(void *ud, const char *p, size_t n)
{
	(void)ud;
	(void)p;
	(void)n;
	return 0;
}

static int stop_after(void *ud, struct sp_h1_msg *m)
{
	(void)ud;
	(void)m;
	return 1;
}

static const struct sp_h1_hooks keep_hooks = {keep_head, ignore_body, stop_after};

static void parse(struct parsed *p, int is_request, const char *head, int is_head)
{
	memset(p, 0, sizeof(*p));
	p->h = sp_h1_new(is_request, &keep_hooks, p, &limits);
	sp_h1_expect_head(p->h, is_head);
	size_t used;
	sp_h1_execute(p->h, head, strlen(head), &used);
	assert_true(p->got);
}

/* The verdict on a request head; path gets the normalised path and query,
 * host (when not NULL) the Host it is routed and sent by: an absolute-form
 * target's host, "" when it is refused (then *why). */
static int verdict_of(const char *head, const char **why, char *path, char *host)
{
	struct parsed p;
	struct sp_buf b;
	const char *q = NULL;
	size_t qlen = 0;
	sp_buf_init(&b);
	parse(&p, 1, head, 0);
	*why = NULL;
	int st = sp_request_verdict(&p.m, &b, &q, &qlen, why);
	if (path)
		snprintf(path, 64, "%s%s%.*s", b.data ? b.data : "", q ? "?" : "", (int)qlen, q ? q : "");
	const struct sp_hdr *h = sp_hdr_find(p.m.hdrs, p.m.nhdrs, "Host");
	if (host)
		snprintf(host, 64, "%.*s", st == 0 && h ? (int)h->value_len : 0, h ? h->value : "");
	sp_buf_deinit(&b);
	sp_h1_free(&p.h);
	return st;
}

static int request_verdict(const char *head, const char **why, char *path)
{
	return verdict_of(head, why, path, NULL);
}

static int absolute_host(const char *head, char *host, const char **why)
{
	return verdict_of(head, why, NULL, host);
}

static void test_an_absolute_form_target_names_the_host(void **state)
{
	(void)state;
	const char *why;
	char host[64];
	assert_int_equal(absolute_host("GET http://a.example:8080/p?q HTTP/1.1\r\nHost: b\r\n\r\n",
				       host, &why), 0);
	assert_string_equal(host, "a.example:8080");
	assert_int_equal(absolute_host("GET HTTPS://A.example?x HTTP/1.1\r\nHost: b\r\n\r\n", host,
				       &why), 0);
	assert_string_equal(host, "A.example");
	assert_int_equal(absolute_host("GET http://[::1]:81/ HTTP/1.1\r\nHost: b\r\n\r\n", host,
				       &why), 0);
	assert_string_equal(host, "[::1]:81");
	/* origin-form: the Host as sent */
	assert_int_equal(absolute_host("GET /p HTTP/1.1\r\nHost: b\r\n\r\n", host, &why), 0);
	assert_string_equal(host, "b");
	/* user info, or a host that is not one: refused */
	assert_int_equal(absolute_host("GET http://u:p@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
				       host, &why), 400);
	assert_string_equal(why, "invalid host in the request target");
	assert_int_equal(absolute_host("GET https:// HTTP/1.1\r\nHost: b\r\n\r\n", host, &why), 400);
	assert_int_equal(absolute_host("GET http://?x HTTP/1.1\r\nHost: b\r\n\r\n", host, &why), 400);
	assert_int_equal(absolute_host("GET http://[zz]/ HTTP/1.1\r\nHost: b\r\n\r\n", host, &why),
			 400);
	/* HTTP/1.1 still needs its Host field (RFC 9112 3.2) */
	assert_int_equal(absolute_host("GET http://a.example/ HTTP/1.1\r\n\r\n", host, &why), 400);
	assert_string_equal(why, "missing Host header");
	/* HTTP/1.0 may go without: the target's host is its Host, added */
	assert_int_equal(absolute_host("GET http://a.example:81/p HTTP/1.0\r\nX: y\r\n\r\n", host,
				       &why), 0);
	assert_string_equal(host, "a.example:81");
	assert_int_equal(absolute_host("GET http://a.example/p HTTP/1.0\r\n\r\n", host, &why), 0);
	assert_string_equal(host, "a.example");
	assert_int_equal(absolute_host("GET /p HTTP/1.0\r\n\r\n", host, &why), 0);
	assert_string_equal(host, "");
	assert_int_equal(absolute_host("GET http:// HTTP/1.0\r\n\r\n", host, &why), 400);
	assert_string_equal(why, "invalid host in the request target");
}

/* sp_http_absolute_host adds a Host only where there is room for it. */
static void test_an_absolute_host_is_added_only_with_room(void **state)
{
	(void)state;
	const char *why = NULL, *url = "http://a.example/p";
	struct sp_hdr h[2] = {{"X", 1, "y", 1}, {"", 0, "", 0}};
	size_t n = 1;
	assert_int_equal(sp_http_absolute_host(url, strlen(url), h, &n, 1, &why), 0);
	assert_int_equal(n, 1);
	assert_int_equal(sp_http_absolute_host(url, strlen(url), h, &n, 2, &why), 0);
	assert_int_equal(n, 2);
	assert_true(sp_hdr_name_is(&h[1], "Host"));
	assert_int_equal(h[1].value_len, 9);
	assert_memory_equal(h[1].value, "a.example", 9);
	/* a second call replaces it, adds none */
	assert_int_equal(sp_http_absolute_host("https://b/", 10, h, &n, 2, &why), 0);
	assert_int_equal(n, 2);
	assert_int_equal(h[1].value_len, 1);
}

static void test_request_verdict_in_order(void **state)
{
	(void)state;
	const char *why;
	char path[64];
	assert_int_equal(request_verdict("GET /a/./b/../c?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", &why, path), 0);
	assert_string_equal(path, "/a/c?x=1");
	assert_int_equal(request_verdict("CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", &why, NULL),
			 405);
	assert_string_equal(why, "CONNECT is not supported");
	assert_int_equal(request_verdict("GET / HTTP/1.1\r\n\r\n", &why, NULL), 400); /* no Host */
	/* no body limit here: the route's is checked once it is known */
	assert_int_equal(request_verdict("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n", &why, NULL),
			 0);
	assert_int_equal(request_verdict("POST /%zz HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n", &why, NULL),
			 400);
	assert_int_equal(request_verdict("GET /a/../../b HTTP/1.1\r\nHost: t\r\n\r\n", &why, NULL), 400);
	assert_non_null(why);
	/* llhttp does not read "chunked<TAB>" as chunked: refused, whatever
	 * trailing blanks other values lose (the body would be the next
	 * request for llhttp) */
	assert_int_equal(request_verdict("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\t\r\n"
					 "\r\n", &why, NULL),
			 501);
	assert_int_equal(request_verdict("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked \r\n"
					 "\r\n", &why, NULL),
			 0);
}

static enum sp_resp_verdict response_verdict(const char *head, int upgrade_req, const char **why,
					     int is_head, int client_minor, enum sp_body_mode *body)
{
	struct parsed p;
	parse(&p, 0, head, is_head);
	*why = NULL;
	enum sp_resp_verdict v = sp_response_verdict(&p.m, upgrade_req, why);
	*body = sp_response_body_mode(&p.m, is_head, client_minor);
	sp_h1_free(&p.h);
	return v;
}

static void test_response_verdict_and_body_mode(void **state)
{
	(void)state;
	const char *why;
	enum sp_body_mode b;
	assert_int_equal(response_verdict("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", 0, &why, 0, 1, &b),
			 SP_RESP_FORWARD);
	assert_int_equal(b, SP_BODY_LENGTH);
	assert_int_equal(response_verdict("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", 0, &why, 1, 1, &b),
			 SP_RESP_FORWARD);
	assert_int_equal(b, SP_BODY_NONE); /* answer to HEAD */
	response_verdict("HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", 0, &why, 0, 1, &b);
	assert_int_equal(b, SP_BODY_NONE);
	response_verdict("HTTP/1.1 204 No Content\r\n\r\n", 0, &why, 0, 1, &b);
	assert_int_equal(b, SP_BODY_NONE);
	response_verdict("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, &why, 0, 1, &b);
	assert_int_equal(b, SP_BODY_CHUNKED);
	response_verdict("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, &why, 0, 0, &b);
	assert_int_equal(b, SP_BODY_CLOSE); /* an HTTP/1.0 client */
	response_verdict("HTTP/1.1 200 OK\r\n\r\n", 0, &why, 0, 1, &b);
	assert_int_equal(b, SP_BODY_CHUNKED); /* close-delimited from the backend */
	assert_int_equal(response_verdict("HTTP/1.1 100 Continue\r\n\r\n", 0, &why, 0, 1, &b),
			 SP_RESP_INTERIM);
	assert_int_equal(response_verdict("HTTP/1.1 101 Switching\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
					  0, &why, 0, 1, &b),
			 SP_RESP_BAD);
	assert_string_equal(why, "101 without an upgrade request");
	assert_int_equal(response_verdict("HTTP/1.1 101 Switching\r\nConnection: upgrade\r\n\r\n", 1, &why, 0, 1,
					  &b),
			 SP_RESP_BAD);
	assert_string_equal(why, "101 without an Upgrade header");
	/* found by fuzz_response: only the first Upgrade would be forwarded, and
	 * the client would not see an upgrade where the proxy starts a tunnel */
	assert_int_equal(response_verdict("HTTP/1.1 101 Switching\r\nUpgrade: \r\nUpgrade: websocket\r\n\r\n",
					  1, &why, 0, 1, &b),
			 SP_RESP_BAD);
	assert_string_equal(why, "101 with an empty or repeated Upgrade header");
	assert_int_equal(response_verdict("HTTP/1.1 101 Switching\r\nUpgrade: ws\r\nupgrade: h2c\r\n\r\n",
					  1, &why, 0, 1, &b),
			 SP_RESP_BAD);
	assert_string_equal(why, "101 with an empty or repeated Upgrade header");
	assert_int_equal(response_verdict("HTTP/1.1 101 Switching\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n",
					  1, &why, 0, 1, &b),
			 SP_RESP_FORWARD);
	assert_int_equal(b, SP_BODY_NONE);
	assert_int_equal(response_verdict("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, &why, 0, 1,
					  &b),
			 SP_RESP_BAD);
	assert_string_equal(why, "Transfer-Encoding in an HTTP/1.0 response");
}

static void test_forwarded_heads_follow_the_parsed_ones(void **state)
{
	(void)state;
	struct parsed p;
	parse(&p, 0, "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", 0);
	struct sp_fwd_response r = sp_fwd_response_for(&p.m, 0, 1);
	assert_int_equal(r.status, 304);
	assert_int_equal(r.body, SP_BODY_NONE);
	assert_true(r.keep_length && r.has_length && r.content_length == 9);
	assert_false(r.upgrade);
	assert_int_equal(r.keep_alive, 0); /* the caller's to decide */
	sp_h1_free(&p.h);
	parse(&p, 0, "HTTP/1.1 101 Switching\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n", 0);
	r = sp_fwd_response_for(&p.m, 0, 1);
	assert_true(r.upgrade);
	assert_int_equal(r.body, SP_BODY_NONE);
	sp_h1_free(&p.h);
	parse(&p, 0, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", 1);
	r = sp_fwd_response_for(&p.m, 1, 0);
	assert_true(r.keep_length); /* the answer to HEAD keeps its length */
	assert_int_equal(r.client_minor, 0);
	sp_h1_free(&p.h);

	parse(&p, 1, "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 0);
	struct sp_fwd_request q = sp_fwd_request_for(&p.m, "/x", 2, "a=1", 3);
	assert_string_equal(q.method, "POST");
	assert_int_equal(q.body, SP_BODY_CHUNKED);
	assert_false(q.upgrade);
	assert_null(q.client_ip); /* the caller's to add */
	sp_h1_free(&p.h);
	parse(&p, 1, "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n", 0);
	q = sp_fwd_request_for(&p.m, "/ws", 3, NULL, 0);
	assert_true(q.upgrade);
	assert_int_equal(q.body, SP_BODY_NONE);
	sp_h1_free(&p.h);
	parse(&p, 1, "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n", 0);
	q = sp_fwd_request_for(&p.m, "/x", 2, NULL, 0);
	assert_int_equal(q.body, SP_BODY_LENGTH);
	assert_true(q.content_length == 4);
	sp_h1_free(&p.h);
}

/* --- the stash of spare head buffers (buf.c), as h1.c uses it ------------ */

static void test_stash_takes_a_block_large_enough_and_is_bounded(void **state)
{
	(void)state;
	struct sp_stash st = {0};
	char *small = malloc(64), *big = malloc(512);
	sp_stash_put(&st, small, 64);
	sp_stash_put(&st, big, 512);
	sp_stash_put(&st, malloc(SP_STASH_MAX_BLOCK + 1), SP_STASH_MAX_BLOCK + 1); /* freed */
	sp_stash_put(&st, NULL, 0);
	assert_int_equal(st.n, 2);
	size_t got = 0;
	assert_ptr_equal(sp_stash_take(&st, 100, &got), big); /* 64 is too small */
	assert_int_equal(got, 512);
	assert_null(sp_stash_take(&st, 100, &got));
	assert_ptr_equal(sp_stash_take(&st, 64, &got), small);
	assert_int_equal(st.n, 0);
	free(small);
	free(big);
	for (int i = 0; i < SP_STASH_SLOTS + 5; i++)
		sp_stash_put(&st, malloc(32), 32); /* the extra five are freed */
	assert_int_equal(st.n, SP_STASH_SLOTS);
	sp_stash_clear(&st);
	assert_int_equal(st.n, 0);
	assert_null(sp_stash_take(NULL, 1, &got));
}

static void test_stash_grow_takes_a_kept_block_for_an_empty_array_only(void **state)
{
	(void)state;
	struct sp_stash st = {0};
	void *kept = malloc(256);
	sp_stash_put(&st, kept, 256);
	size_t cap = 0;
	int *a = sp_stash_grow(&st, NULL, &cap, 10, sizeof(int));
	assert_ptr_equal(a, kept);
	assert_int_equal(cap, 256 / sizeof(int)); /* the whole block counts */
	assert_int_equal(st.n, 0);
	for (int i = 0; i < 64; i++)
		a[i] = i;
	sp_stash_put(&st, malloc(4096), 4096);
	int *b = sp_stash_grow(&st, a, &cap, 128, sizeof(int)); /* a non-empty array: realloc */
	assert_non_null(b);
	assert_int_equal(cap, 128);
	assert_int_equal(st.n, 1);
	assert_int_equal(b[63], 63);
	free(b);
	int *c = sp_stash_grow(NULL, NULL, &cap, 3, sizeof(int)); /* no stash: malloc */
	assert_non_null(c);
	assert_int_equal(cap, 3);
	free(c);
	sp_stash_clear(&st);
}

static int keep_tenant(void *ud, struct sp_h1_msg *m)
{
	const struct sp_hdr *t = sp_hdr_find(m->hdrs, m->nhdrs, "X-Tenant");
	snprintf(((struct seen *)ud)->last_url, sizeof(((struct seen *)ud)->last_url), "[%.*s]",
		 t ? (int)t->value_len : 0, t ? t->value : "");
	return 0;
}

/* Trailing blanks are not part of a value (RFC 9110 5.5): "acme \t" is
 * "acme" for routing, stickiness and comparison; inner ones stay. */
static void test_values_lose_trailing_whitespace(void **state)
{
	(void)state;
	static const struct sp_h1_hooks tenant = {keep_tenant, on_body, on_done};
	static const struct {
		const char *line, *want;
	} cases[] = {
		{"X-Tenant: acme \t \r\n", "[acme]"},
		{"X-Tenant:acme\r\n", "[acme]"},
		{"X-Tenant: a b  \r\n", "[a b]"},
		{"X-Tenant:   \r\n", "[]"},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct seen s = {0};
		char head[256];
		struct sp_h1 *h = sp_h1_new(1, &tenant, &s, &limits);
		snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: t\r\n%s\r\n", cases[i].line);
		assert_int_equal(feed(h, head, strlen(head)), SP_H1_OK);
		assert_string_equal(s.last_url, cases[i].want);
		sp_h1_free(&h);
	}
}

/* The trailer section after the last chunk is checked like a head: every
 * line ends with CRLF (llhttp 8.1 takes a bare LF ending it, so "0\r\n\n"
 * followed by a request would be one message here and two elsewhere), and
 * parsing goes on after it, also when it comes a byte at a time. */
static void test_trailer_lines_end_with_crlf(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
		"5\r\nhello\r\n0\r\n\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
		"0\r\nX-T: 1\n\r\n",
		"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
		"0\r\nX-T: 1\r\n folded\r\n\r\n",
	};
	for (size_t i = 0; i < NELEM(bad); i++) {
		struct seen s = {0};
		struct sp_h1 *h = sp_h1_new(1, &hooks, &s, &limits);
		assert_int_equal(feed(h, bad[i], strlen(bad[i])), SP_H1_ERROR);
		assert_int_equal(sp_h1_error_status(h), 400);
		assert_int_equal(s.heads, 1);
		sp_h1_free(&h);
	}
	static const char good[] = "POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
				   "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
				   "GET /next HTTP/1.1\r\nHost: t\r\n\r\n";
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		struct seen s = {0};
		struct sp_h1 *h = sp_h1_new(1, &hooks, &s, &limits);
		if (bytewise)
			for (size_t i = 0; i < sizeof(good) - 1; i++)
				assert_int_equal(feed(h, good + i, 1), SP_H1_OK);
		else
			assert_int_equal(FEED(h, good), SP_H1_OK);
		assert_int_equal(s.body, 5);
		assert_int_equal(s.dones, 2);
		assert_string_equal(s.last_url, "/next");
		sp_h1_free(&h);
	}
}

/* A CR in a start line must end it. llhttp 8.1 skips a bare one before the
 * request line ("\rGET /", "\r\r\n") and reads one before the line's end as
 * a bad version (a 505): other parsers end a line there. Empty lines
 * (CRLF) before a request line stay allowed (RFC 9112 2.2). Each case is also
 * fed in two parts split at every byte, as a CR ending one read must be
 * judged by the next one's first byte. */
static void test_a_bare_cr_in_the_start_line_is_refused(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"\rGET / HTTP/1.1\r\nHost: t\r\n\r\n",
		"\r\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET / HTTP/1.1\r\r\nHost: t\r\n\r\n",
		"GET /\r HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET /a-path-longer-than-sixteen HTTP/1.1\r\r\nHost: t\r\n\r\n",
		"\r\nGET /a-path-longer-than-sixteen\rHTTP/1.1\r\nHost: t\r\n\r\n",
	};
	for (size_t i = 0; i < NELEM(bad); i++) {
		size_t len = strlen(bad[i]);
		for (size_t cut = 0; cut < len; cut++) {
			struct seen s = {0};
			struct sp_h1 *h = sp_h1_new(1, &hooks, &s, &limits);
			enum sp_h1_rc rc = cut ? feed(h, bad[i], cut) : SP_H1_OK;
			if (rc == SP_H1_OK)
				rc = feed(h, bad[i] + cut, len - cut);
			assert_int_equal(rc, SP_H1_ERROR);
			assert_int_equal(sp_h1_error_status(h), 400);
			assert_int_equal(s.heads, 0);
			sp_h1_free(&h);
		}
	}
	static const char good[] = "\r\n\r\nGET /a-path-longer-than-sixteen HTTP/1.1\r\nHost: t\r\n\r\n";
	for (size_t cut = 0; cut < sizeof(good) - 1; cut++) {
		struct seen s = {0};
		struct sp_h1 *h = sp_h1_new(1, &hooks, &s, &limits);
		assert_int_equal(feed(h, good, cut), SP_H1_OK);
		assert_int_equal(feed(h, good + cut, sizeof(good) - 1 - cut), SP_H1_OK);
		assert_int_equal(s.dones, 1);
		assert_string_equal(s.last_url, "/a-path-longer-than-sixteen");
		sp_h1_free(&h);
	}
}

static void test_trimmed_head_buffers_serve_the_next_message(void **state)
{
	(void)state;
	struct sp_stash st = {0};
	struct seen s = {0};
	struct sp_h1 *h = sp_h1_new(1, &hooks, &s, &limits);
	sp_h1_set_stash(h, &st);
	assert_int_equal(FEED(h, "GET /first HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\r\n"), SP_H1_OK);
	assert_int_equal(st.n, 0);
	sp_h1_resume(h);
	sp_h1_trim(h);
	assert_int_equal(st.n, 3); /* the head's bytes, its header index, its header views */
	assert_int_equal(FEED(h, "GET /second HTTP/1.1\r\nHost: u\r\n\r\n"), SP_H1_OK);
	assert_string_equal(s.last_url, "/second");
	assert_int_equal(st.n, 0); /* all three taken again, none allocated */
	sp_h1_free(&h);
	assert_int_equal(st.n, 3);
	sp_stash_clear(&st);
	assert_int_equal(s.heads, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_body_left_counts_down_and_skip_ends_on_the_last_byte),
		cmocka_unit_test(test_skip_never_takes_the_last_byte),
		cmocka_unit_test(test_no_length_body_outside_content_length),
		cmocka_unit_test(test_response_body_skipped_across_reads),
		cmocka_unit_test(test_request_verdict_in_order),
		cmocka_unit_test(test_an_absolute_form_target_names_the_host),
		cmocka_unit_test(test_an_absolute_host_is_added_only_with_room),
		cmocka_unit_test(test_response_verdict_and_body_mode),
		cmocka_unit_test(test_forwarded_heads_follow_the_parsed_ones),
		cmocka_unit_test(test_stash_takes_a_block_large_enough_and_is_bounded),
		cmocka_unit_test(test_stash_grow_takes_a_kept_block_for_an_empty_array_only),
		cmocka_unit_test(test_trimmed_head_buffers_serve_the_next_message),
		cmocka_unit_test(test_trailer_lines_end_with_crlf),
		cmocka_unit_test(test_a_bare_cr_in_the_start_line_is_refused),
		cmocka_unit_test(test_values_lose_trailing_whitespace),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
