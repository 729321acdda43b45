/* proxy/respond.c: what a route that answers itself (routes.[i].return)
 * loads to and the answer it writes, byte for byte. */
#include "unit.h"

#include <string.h>

#include "config.h"
#include "respond.h"
#include "rewrite.h"

#define BASE                                                                  \
	"listen = ( { address = \"127.0.0.1:18080\"; } );\n"                   \
	"backends = { legacy = { url = \"http://127.0.0.1:9001\"; }; };\n" \
	"default_backend = \"legacy\";\n"
#define ROUTE(ret) BASE "routes = ( { name = \"r\"; match = { path = \"/x\"; }; return = " ret "; } );\n"

/* The answer r writes with x, as a string. */
static void assert_written(const struct sp_return *r, const struct sp_return_ctx *x,
			   const char *want)
{
	struct sp_buf b;
	sp_buf_init(&b);
	assert_int_equal(sp_return_write(r, x, &b), 0);
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data, want, b.len);
	sp_buf_deinit(&b);
}

/* A 410 with a body: the status line, the body's type and length, the
 * request id and the date, then the body. */
static void test_a_body_answer_byte_for_byte(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(ROUTE("{ status = 410; body = \"gone\\n\"; }"), NULL);
	const struct sp_route *rt = unit_route(c, "r");
	const struct sp_return *r = &rt->ret;
	assert_int_equal(rt->backend, -1);
	assert_int_equal(r->status, 410);
	assert_int_equal(r->body_len, 5);
	assert_string_equal(r->content_type, "text/plain; charset=utf-8");
	assert_null(r->location);
	struct sp_return_ctx x = {NULL, "rid", "Sat, 28 Nov 2026 06:00:00 GMT", 1, 0};
	assert_written(r, &x,
		       "HTTP/1.1 410 Gone\r\nContent-Type: text/plain; charset=utf-8\r\n"
		       "Content-Length: 5\r\nX-Request-Id: rid\r\n"
		       "Date: Sat, 28 Nov 2026 06:00:00 GMT\r\n\r\ngone\n");
	/* HEAD: the same head, no body; closing: Connection: close */
	struct sp_return_ctx h = {NULL, NULL, NULL, 0, 1};
	assert_written(r, &h,
		       "HTTP/1.1 410 Gone\r\nContent-Type: text/plain; charset=utf-8\r\n"
		       "Content-Length: 5\r\nConnection: close\r\n\r\n");
	sp_config_unref(&c);
}

/* A redirect: its Location as the caller made it, Content-Length: 0. */
static void test_a_redirect(void **state)
{
	(void)state;
	struct sp_config *c =
		unit_load_ok(ROUTE("{ status = 308; location = \"https://n.example$request_uri\"; }"),
			     NULL);
	const struct sp_return *r = &unit_route(c, "r")->ret;
	assert_string_equal(r->location, "https://n.example$request_uri");
	assert_null(r->body);
	assert_null(r->content_type);
	struct sp_return_ctx x = {"https://n.example/x?a", NULL, NULL, 1, 0};
	assert_written(r, &x,
		       "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://n.example/x?a\r\n"
		       "Content-Length: 0\r\n\r\n");
	sp_config_unref(&c);
}

/* $request_uri: the normalised path, a backslash as %5C, "/" for "*", the
 * query after '?'. */
static void test_request_uri(void **state)
{
	(void)state;
	static const struct {
		const char *path, *query, *want;
	} cases[] = {
		{"/a/b", NULL, "/a/b"},	     {"/a", "x=1&y", "/a?x=1&y"},
		{"/\\evil/x", "q=\\", "/%5Cevil/x?q=\\"}, {"/a\\\\b\\", NULL, "/a%5C%5Cb%5C"},
		{"*", NULL, "/"},	     {"/", "", "/?"},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct sp_hdr_vars v = {.path = cases[i].path,
					.path_len = strlen(cases[i].path),
					.query = cases[i].query,
					.query_len = cases[i].query ? strlen(cases[i].query) : 0};
		struct sp_buf b;
		sp_buf_init(&b);
		assert_int_equal(sp_hdr_expand("$request_uri", &v, &b), 0);
		assert_int_equal(b.len, strlen(cases[i].want));
		assert_memory_equal(b.data, cases[i].want, b.len);
		sp_buf_deinit(&b);
	}
}

/* A location written as a path stays a path on this site whatever its
 * variables bring: "/$request_id" with a client's id "/evil.example" was
 * "//evil.example", another site to a browser. A location written as
 * "//..." or with a scheme is left as the writer meant it. */
static void test_location_stays_a_path(void **state)
{
	(void)state;
	static const struct {
		const char *location, *id, *want;
	} cases[] = {
		{"/$request_id", "/evil.example", "/%2Fevil.example"},
		{"/${request_id}/x", "\\evil.example", "/%5Cevil.example/x"},
		{"/$request_id", "a/b", "/a/b"},
		{"$request_id", "//x", "//x"}, /* not written as a path: as it comes */
		{"//cdn.example/$request_id", "/y", "//cdn.example//y"},
		{"https://n.example/$request_id", "/z", "https://n.example//z"},
		{"/", "", "/"},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct sp_return r = {.status = 302, .location = (char *)cases[i].location};
		struct sp_hdr_vars v = {.request_id = cases[i].id};
		struct sp_buf b;
		sp_buf_init(&b);
		sp_buf_adds(&b, "Location: ");
		assert_int_equal(sp_return_location(&r, &v, &b), 0);
		assert_string_equal(b.data + 10, cases[i].want);
		sp_buf_deinit(&b);
	}
}

/* 204 and 304 have no content: no Content-Length either (RFC 9110 8.6). */
static void test_no_content_has_no_length(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(ROUTE("204"), NULL);
	const struct sp_return *r = &unit_route(c, "r")->ret;
	struct sp_return_ctx x = {NULL, NULL, NULL, 1, 0};
	assert_written(r, &x, "HTTP/1.1 204 No Content\r\n\r\n");
	sp_config_unref(&c);
	c = unit_load_ok(ROUTE("{ status = 304; location = \"/x\"; }"), NULL);
	r = &unit_route(c, "r")->ret;
	struct sp_return_ctx y = {"/x", NULL, NULL, 1, 0};
	assert_written(r, &y, "HTTP/1.1 304 Not Modified\r\nLocation: /x\r\n\r\n");
	sp_config_unref(&c);
}

/* The variables a Location may name, and the body's size. */
static void test_checks(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(
		ROUTE("{ status = 302; location = \"$scheme://${host}:1$request_uri?$request_id$$"
		      "$remote_addr$http_host\"; }"),
		NULL);
	sp_config_unref(&c);
	struct sp_buf big;
	sp_buf_init(&big);
	sp_buf_adds(&big, BASE "routes = ( { name = \"r\"; match = { path = \"/x\"; }; "
			    "return = { status = 200; body = \"");
	for (int i = 0; i < SP_RETURN_BODY_MAX; i++)
		sp_buf_addc(&big, 'a');
	sp_buf_adds(&big, "\"; }; } );\n");
	c = unit_load_ok(big.data, NULL);
	assert_int_equal(unit_route(c, "r")->ret.body_len, SP_RETURN_BODY_MAX);
	sp_config_unref(&c);
	/* one byte more: refused */
	big.len -= strlen("\"; }; } );\n");
	sp_buf_adds(&big, "a\"; }; } );\n");
	struct sp_diag d;
	sp_diag_init(&d);
	c = sp_config_load_string(big.data, TEST_CONF, &d);
	assert_null(c);
	assert_non_null(strstr(d.text.data, "routes.[0].return.body: at most 65536 bytes"));
	sp_diag_deinit(&d);
	sp_buf_deinit(&big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_body_answer_byte_for_byte),
		cmocka_unit_test(test_a_redirect),
		cmocka_unit_test(test_request_uri),
		cmocka_unit_test(test_location_stays_a_path),
		cmocka_unit_test(test_no_content_has_no_length),
		cmocka_unit_test(test_checks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
