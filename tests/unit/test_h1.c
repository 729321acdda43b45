/* Unit tests of proxy/h1.c: message views, and Content-Length bodies whose
 * bytes the caller relays past the parser (sp_h1_body_left/skip). */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_body_left_counts_down_and_skip_ends_on_the_last_byte),
		cmocka_unit_test(test_skip_never_takes_the_last_byte),
		cmocka_unit_test(test_no_length_body_outside_content_length),
		cmocka_unit_test(test_response_body_skipped_across_reads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
