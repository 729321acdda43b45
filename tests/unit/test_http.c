/* Unit tests of proxy/http.c (header rules, validation, head serialisation,
 * proxy-made responses, chunk framing) and proxy/accesslog.c's line format. */
#include "unit.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdlib.h>
#include <time.h>

#include "accesslog.h"
#include "h1.h"

/* Serialised output compared as a whole, so a missing, extra or reordered
 * header fails with both texts printed. */
#define assert_head(buf, want) assert_string_equal((buf)->data ? (buf)->data : "", (want))

/* --- header helpers ------------------------------------------------------ */

static void test_hdr_name_is_and_find(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {HDR("Host", "a"), HDR("content-length", "5"), HDR("HOST", "b")};
	assert_true(sp_hdr_name_is(&h[0], "host"));
	assert_true(sp_hdr_name_is(&h[0], "HOST"));
	assert_false(sp_hdr_name_is(&h[0], "Hos"));
	assert_false(sp_hdr_name_is(&h[0], "Hostx"));
	assert_true(sp_hdr_name_is(&h[1], "Content-Length"));
	assert_ptr_equal(sp_hdr_find(h, NELEM(h), "host"), &h[0]);
	assert_ptr_equal(sp_hdr_find(h, NELEM(h), "Content-Length"), &h[1]);
	assert_null(sp_hdr_find(h, NELEM(h), "Content-Type"));
	assert_null(sp_hdr_find(h, 0, "Host"));
}

static void test_list_has_token(void **state)
{
	(void)state;
	static const char v[] = "keep-alive, Upgrade ,\tX-Custom";
	assert_true(sp_list_has_token(v, strlen(v), "upgrade"));
	assert_true(sp_list_has_token(v, strlen(v), "Keep-Alive"));
	assert_true(sp_list_has_token(v, strlen(v), "x-custom"));
	assert_false(sp_list_has_token(v, strlen(v), "close"));
	assert_false(sp_list_has_token(v, strlen(v), "keep"));
	assert_false(sp_list_has_token("upgrade-insecure", 16, "upgrade"));
	assert_false(sp_list_has_token("", 0, "close"));
	assert_true(sp_list_has_token("a,,close", 8, "close"));
	/* Only len bytes are looked at. */
	assert_false(sp_list_has_token("a, close", 3, "close"));
}

static void test_hdr_is_hop(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {
		HDR("Connection", "close, X-Drop"), HDR("keep-alive", "timeout=5"),
		HDR("Proxy-Connection", "x"),        HDR("te", "trailers"),
		HDR("Transfer-Encoding", "chunked"), HDR("Upgrade", "h2c"),
		HDR("Trailer", "X-T"),               HDR("Content-Length", "1"),
		HDR("x-drop", "1"),                  HDR("X-Keep", "1"),
		HDR("Host", "h"),                    HDR("Close", "1"),
	};
	for (size_t i = 0; i < 10; i++)
		if (i != 9)
			assert_true(sp_hdr_is_hop(&h[i], h, NELEM(h)));
	assert_false(sp_hdr_is_hop(&h[9], h, NELEM(h)));
	assert_false(sp_hdr_is_hop(&h[10], h, NELEM(h)));
	/* "close" is an option, but it also names a header called Close. */
	assert_true(sp_hdr_is_hop(&h[11], h, NELEM(h)));
	/* Without the Connection header, X-Drop is end-to-end. */
	assert_false(sp_hdr_is_hop(&h[8], h + 1, NELEM(h) - 1));
}

/* --- request validation -------------------------------------------------- */

/* Checks a request's headers: want_why NULL means "any reason" (status 0). */
static void check_req(const struct sp_hdr *h, size_t n, int minor, int want_status,
		      const char *want_why, int line)
{
	const char *why = NULL;
	int st = sp_http_check_request(h, n, minor, &why);
	if (st != want_status || (want_why && (!why || strcmp(why, want_why) != 0)))
		print_error("test line %d: status %d why \"%s\", want %d \"%s\"\n", line, st,
			    why ? why : "(null)", want_status, want_why ? want_why : "(any)");
	assert_int_equal(st, want_status);
	if (want_why)
		assert_string_equal(why, want_why);
}

#define CHECK_REQ(hdrs, minor, want_status, want_why) \
	check_req((hdrs), NELEM(hdrs), (minor), (want_status), (want_why), __LINE__)

static const char *const NO_WHY = NULL;

static void test_check_request_valid(void **state)
{
	(void)state;
	const struct sp_hdr ok11[] = {HDR("Host", "example.com"), HDR("User-Agent", "t/1"),
				      HDR("X-Tab", "a\tb"), HDR("X-Obs", "caf\xc3\xa9 \xff"),
				      HDR("X-Empty", ""), HDR("Transfer-Encoding", "chunked"),
				      HDR("!#$%&'*+-.^_`|~09azAZ", "v")};
	const struct sp_hdr ok10[] = {HDR("Accept", "*/*")};
	const struct sp_hdr te[] = {HDR("host", "h"), HDR("Transfer-Encoding", "chunked")};
	CHECK_REQ(ok11, 1, 0, NO_WHY);
	CHECK_REQ(ok10, 0, 0, NO_WHY); /* Host is optional on HTTP/1.0 */
	CHECK_REQ(te, 1, 0, NO_WHY);
}

static void test_check_request_bad_names(void **state)
{
	(void)state;
	const struct sp_hdr empty[] = {HDR("Host", "h"), HDR("", "v")};
	const struct sp_hdr space[] = {HDR("Host", "h"), HDR("Bad Name", "v")};
	const struct sp_hdr colon[] = {HDR("Host", "h"), HDR("Na:me", "v")};
	const struct sp_hdr high[] = {HDR("Host", "h"), HDR("N\xc3\xa4me", "v")};
	const struct sp_hdr ctl[] = {HDR("Host", "h"), HDR("X\x01", "v")};
	const struct sp_hdr slash[] = {HDR("Host", "h"), HDR("X/Y", "v")};
	const struct sp_hdr nul[] = {HDR("Host", "h"), {"X\0Y", 3, "v", 1}};
	CHECK_REQ(empty, 1, 400, "empty header name");
	CHECK_REQ(space, 1, 400, "invalid character in header name");
	CHECK_REQ(colon, 1, 400, "invalid character in header name");
	CHECK_REQ(high, 1, 400, "invalid character in header name");
	CHECK_REQ(ctl, 1, 400, "invalid character in header name");
	CHECK_REQ(slash, 1, 400, "invalid character in header name");
	CHECK_REQ(nul, 1, 400, "invalid character in header name");
}

static void test_check_request_bad_values(void **state)
{
	(void)state;
	const struct sp_hdr cr[] = {HDR("Host", "h"), HDR("X-A", "a\rb")};
	const struct sp_hdr lf[] = {HDR("Host", "h"), HDR("X-A", "a\nX-Injected: 1")};
	const struct sp_hdr nul[] = {HDR("Host", "h"), {"X-A", 3, "a\0b", 3}};
	const struct sp_hdr del[] = {HDR("Host", "h"), HDR("X-A", "a\x7f")};
	const struct sp_hdr us[] = {HDR("Host", "h\x1f")};
	CHECK_REQ(cr, 1, 400, "invalid character in header value");
	CHECK_REQ(lf, 1, 400, "invalid character in header value");
	CHECK_REQ(nul, 1, 400, "invalid character in header value");
	CHECK_REQ(del, 1, 400, "invalid character in header value");
	CHECK_REQ(us, 0, 400, "invalid character in header value");
}

/* Host is uri-host [":" port] (RFC 9112 §3.2): anything else went to the
 * backend and into X-Forwarded-Host, a list of hosts with two readings. */
static void test_check_request_host_value(void **state)
{
	(void)state;
	static const char *const good[] = {"example.com", "example.com:8080", "a-b.c_d~e",
					   "10.0.0.1:80", "[::1]", "[::1]:443", "a:65535", "a:0",
					   "xn--caf-dma.example", "a%2Db", ""};
	static const char *const bad[] = {"a.example, b.example", "evil.example/x?y", "a b",
					  "user@evil.example", "x:notaport", "x:", "x:123456", "x:65536", "x:99999",
					  "[::1", "[]", "[::g]", "a\\b", "a%zzb", "a%2", "h:80:80",
					  "caf\xc3\xa9.example"};
	for (size_t i = 0; i < NELEM(good); i++) {
		const struct sp_hdr h[] = {{"Host", 4, good[i], strlen(good[i])}};
		const char *why = NULL;
		if (sp_http_check_request(h, 1, 1, &why) != 0)
			fail_msg("Host \"%s\" refused: %s", good[i], why);
	}
	for (size_t i = 0; i < NELEM(bad); i++) {
		const struct sp_hdr h[] = {{"Host", 4, bad[i], strlen(bad[i])}};
		const char *why = NULL;
		if (sp_http_check_request(h, 1, 1, &why) != 400 || strcmp(why, "invalid Host header"))
			fail_msg("Host \"%s\" passed", bad[i]);
	}
}

/* Every byte value at every position of values up to 19 bytes long (whole
 * 8-byte words and the tail both), among tabs and high bytes that are valid:
 * the word-at-a-time scan must agree with the byte rule everywhere. */
static void test_check_values_every_byte_everywhere(void **state)
{
	(void)state;
	char v[19];
	for (size_t len = 1; len <= sizeof(v); len++) {
		for (size_t pos = 0; pos < len; pos++) {
			for (int c = 0; c < 512; c++) {
				/* filled with letters and high bytes, then with tabs too */
				for (size_t k = 0; k < len; k++)
					v[k] = k % 3 == 0 && c >= 256 ? '\t' : k % 2 ? 'a' : '\xe9';
				v[pos] = (char)(c & 0xff);
				const struct sp_hdr h[] = {HDR("Host", "h"), {"X-A", 3, v, len}};
				int b = c & 0xff, bad = (b < 0x20 && b != '\t') || b == 0x7f;
				const char *why = NULL;
				int st = sp_http_check_request(h, NELEM(h), 1, &why);
				if (st != (bad ? 400 : 0))
					fail_msg("len %zu pos %zu byte 0x%02x: status %d", len, pos, b, st);
			}
		}
	}
}

/* Each byte value inside a header name: only RFC 9110 tchar passes. */
static void test_check_names_every_byte(void **state)
{
	(void)state;
	static const char tchar[] = "!#$%&'*+-.^_`|~0123456789"
				    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	for (int c = 0; c < 256; c++) {
		char name[] = {'X', '-', (char)c, 'b'};
		const struct sp_hdr h[] = {HDR("Host", "h"), {name, sizeof(name), "v", 1}};
		int ok = c != 0 && strchr(tchar, c) != NULL;
		const char *why = NULL;
		int st = sp_http_check_request(h, NELEM(h), 1, &why);
		if (st != (ok ? 0 : 400))
			fail_msg("byte 0x%02x in a name: status %d", c, st);
	}
}

/* The same text as inet_ntop for every byte value in every position, and
 * for addresses that mix one-, two- and three-digit parts. */
static void test_ipv4_text_matches_inet_ntop(void **state)
{
	(void)state;
	for (unsigned long x = 0; x < 4 * 256 + 4096; x++) {
		unsigned char a[4] = {10, 0, 0, 1};
		if (x < 4 * 256) {
			a[x / 256] = (unsigned char)(x % 256);
		} else { /* an LCG walk over the whole space */
			uint32_t r = (uint32_t)(x * 2654435761u + 12345u);
			memcpy(a, &r, 4);
		}
		char want[INET_ADDRSTRLEN], got[INET_ADDRSTRLEN];
		assert_non_null(inet_ntop(AF_INET, a, want, sizeof(want)));
		memset(got, 'x', sizeof(got));
		sp_ipv4_text(a, got);
		assert_string_equal(got, want);
	}
}

static void test_check_request_host(void **state)
{
	(void)state;
	const struct sp_hdr none[] = {HDR("Accept", "*/*")};
	const struct sp_hdr two[] = {HDR("Host", "a"), HDR("Accept", "*/*"), HDR("host", "b")};
	const struct sp_hdr same[] = {HDR("Host", "a"), HDR("Host", "a")};
	CHECK_REQ(none, 1, 400, "missing Host header");
	CHECK_REQ(two, 1, 400, "more than one Host header");
	CHECK_REQ(same, 1, 400, "more than one Host header");
	CHECK_REQ(two, 0, 400, "more than one Host header");
	CHECK_REQ(none, 0, 0, NO_WHY);
}

static void test_check_request_transfer_encoding(void **state)
{
	(void)state;
	const struct sp_hdr te10[] = {HDR("Transfer-Encoding", "chunked")};
	const struct sp_hdr lead[] = {HDR("Host", "h"), HDR("Transfer-Encoding", ",chunked")};
	const struct sp_hdr trail[] = {HDR("Host", "h"), HDR("transfer-encoding", "chunked,")};
	const struct sp_hdr mid[] = {HDR("Host", "h"), HDR("Transfer-Encoding", "gzip, ,chunked")};
	const struct sp_hdr empty[] = {HDR("Host", "h"), HDR("Transfer-Encoding", "")};
	CHECK_REQ(te10, 0, 400, "Transfer-Encoding in an HTTP/1.0 request");
	CHECK_REQ(lead, 1, 400, "empty element in Transfer-Encoding");
	CHECK_REQ(trail, 1, 400, "empty element in Transfer-Encoding");
	CHECK_REQ(mid, 1, 400, "empty element in Transfer-Encoding");
	CHECK_REQ(empty, 1, 400, "empty element in Transfer-Encoding");
}

static void test_check_response(void **state)
{
	(void)state;
	const struct sp_hdr ok[] = {HDR("Content-Type", "text/plain"), HDR("Transfer-Encoding", "chunked")};
	const struct sp_hdr bad_value[] = {HDR("Set-Cookie", "a=1\r\nX: y")};
	const struct sp_hdr bad_name[] = {HDR("Set Cookie", "a=1")};
	const struct sp_hdr te[] = {HDR("Transfer-Encoding", "chunked, ")};
	const char *why = NULL;
	assert_int_equal(sp_http_check_response(ok, NELEM(ok), 1, &why), 0); /* no Host needed */
	assert_int_equal(sp_http_check_response(bad_value, 1, 1, &why), -1);
	assert_string_equal(why, "invalid character in header value");
	assert_int_equal(sp_http_check_response(bad_name, 1, 1, &why), -1);
	assert_string_equal(why, "invalid character in header name");
	assert_int_equal(sp_http_check_response(te, 1, 1, &why), -1);
	assert_string_equal(why, "Transfer-Encoding other than chunked");
	/* a coding the proxy would silently drop is refused (502 upstream) */
	const struct sp_hdr gz[] = {HDR("Transfer-Encoding", "gzip, chunked")};
	assert_int_equal(sp_http_check_response(gz, 1, 1, &why), -1);
	/* chunked does not exist in HTTP/1.0 */
	const struct sp_hdr te10[] = {HDR("Transfer-Encoding", "chunked")};
	assert_int_equal(sp_http_check_response(te10, 1, 1, &why), 0);
	assert_int_equal(sp_http_check_response(te10, 1, 0, &why), -1);
	assert_string_equal(why, "Transfer-Encoding in an HTTP/1.0 response");
}

static void test_check_request_unknown_coding(void **state)
{
	(void)state;
	const struct sp_hdr gz[] = {HDR("Host", "h"), HDR("Transfer-Encoding", "gzip, chunked")};
	const struct sp_hdr upper[] = {HDR("Host", "h"), HDR("Transfer-Encoding", "Chunked")};
	const char *why = NULL;
	assert_int_equal(sp_http_check_request(gz, 2, 1, &why), 501);
	assert_string_equal(why, "transfer coding other than chunked");
	assert_int_equal(sp_http_check_request(upper, 2, 1, &why), 0);
}

static void test_connection_never_strips_host(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {HDR("Host", "example.com"), HDR("Connection", "Host, X-Long")};
	assert_false(sp_hdr_is_hop(&h[0], h, 2));
	/* a named header longer than any fixed buffer is still recognised */
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	const struct sp_hdr l[] = {HDR("Connection", longname), HDR(longname, "v")};
	assert_true(sp_hdr_is_hop(&l[1], l, 2));
}

/* --- request head -------------------------------------------------------- */

static void test_request_head_full(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {
		HDR("Host", "example.com"),
		HDR("User-Agent", "t/1"),
		HDR("Connection", "keep-alive, X-Secret"),
		HDR("Keep-Alive", "timeout=5"),
		HDR("Proxy-Connection", "keep-alive"),
		HDR("TE", "trailers"),
		HDR("Upgrade", "websocket"),
		HDR("Transfer-Encoding", "chunked"),
		HDR("Trailer", "X-Checksum"),
		HDR("x-secret", "s3cret"),
		HDR("X-Forwarded-For", "198.51.100.1"),
		HDR("Accept", "*/*"),
		HDR("x-forwarded-for", "198.51.100.2, 198.51.100.3"),
		HDR("X-Forwarded-Proto", "http"),
		HDR("X-Forwarded-Host", "evil.example"),
		HDR("Cookie", "a=1"),
	};
	struct sp_fwd_request r = {
		.method = "POST",
		.path = "/a%2Fb",
		.path_len = 6,
		.query = "x=1&y",
		.query_len = 5,
		.headers = h,
		.nheaders = NELEM(h),
		.body = SP_BODY_CHUNKED,
		.client_ip = "203.0.113.7",
		.proto = "https",
		.request_id = "rid-1",
	};
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "POST /a%2Fb?x=1&y HTTP/1.1\r\n"
			  "Host: example.com\r\n"
			  "User-Agent: t/1\r\n"
			  "Accept: */*\r\n"
			  "Cookie: a=1\r\n"
			  "Transfer-Encoding: chunked\r\n"
			  "X-Forwarded-For: 198.51.100.1, 198.51.100.2, 198.51.100.3, 203.0.113.7\r\n"
			  "X-Forwarded-Proto: https\r\n"
			  "X-Forwarded-Host: example.com\r\n"
			  "X-Request-Id: rid-1\r\n"
			  "\r\n");
	sp_buf_deinit(&out);
}

/* Connection's tokens are looked at once per message: keep-alive alone
 * names nothing to drop, any other token (even "close") names a header. */
static void test_request_head_connection_tokens(void **state)
{
	(void)state;
	static const struct {
		const char *connection, *want;
	} cases[] = {
		{"keep-alive", "Close: c\r\nX-A: a\r\n"},
		{"Keep-Alive, ", "Close: c\r\nX-A: a\r\n"},
		{"close", "X-A: a\r\n"},
		{"keep-alive, x-a", "Close: c\r\n"},
		{" , KEEP-ALIVE ,X-A", "Close: c\r\n"},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		const char *conn = cases[i].connection;
		const struct sp_hdr h[] = {HDR("Host", "h"), HDR("Close", "c"),
					   {"Connection", 10, conn, strlen(conn)}, HDR("X-A", "a")};
		struct sp_fwd_request r = {.method = "GET", .path = "/", .path_len = 1,
					   .headers = h, .nheaders = NELEM(h)};
		struct sp_buf out, want;
		sp_buf_init(&out);
		sp_buf_init(&want);
		assert_int_equal(sp_http_write_request_head(&r, &out), 0);
		assert_int_equal(sp_buf_adds(&want, "GET / HTTP/1.1\r\nHost: h\r\n"), 0);
		assert_int_equal(sp_buf_adds(&want, cases[i].want), 0);
		assert_int_equal(sp_buf_adds(&want, "X-Forwarded-Host: h\r\n\r\n"), 0);
		assert_head(&out, want.data);
		sp_buf_deinit(&out);
		sp_buf_deinit(&want);
	}
}

/* A request without Host (HTTP/1.0) names the backend it goes to; retried
 * on the rollout's other side, the head names that one (shorter, longer). */
static void test_request_head_rehost(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {HDR("Accept", "*/*")};
	struct sp_fwd_request r = {.method = "GET", .path = "/p", .path_len = 2, .headers = h,
				   .nheaders = NELEM(h), .default_host = "10.0.0.1:9001"};
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "GET /p HTTP/1.1\r\nHost: 10.0.0.1:9001\r\nAccept: */*\r\n\r\n");
	assert_int_equal(sp_http_rehost(&out, "b:1"), 0);
	assert_head(&out, "GET /p HTTP/1.1\r\nHost: b:1\r\nAccept: */*\r\n\r\n");
	assert_int_equal(sp_http_rehost(&out, "modern.internal.example:19002"), 0);
	assert_head(&out, "GET /p HTTP/1.1\r\nHost: modern.internal.example:19002\r\nAccept: "
			  "*/*\r\n\r\n");
	sp_buf_reset(&out);
	assert_int_equal(sp_buf_adds(&out, "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), 0);
	assert_int_equal(sp_http_rehost(&out, "b:1"), -1); /* no default Host line */
	sp_buf_deinit(&out);
}

/* The client's Host goes first (where sp_http_rehost finds it), named
 * "Host" whatever its case; a backend's host_header replaces it, and
 * X-Forwarded-Host keeps the client's. */
static void test_request_head_host_first_and_host_header(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {HDR("Accept", "*/*"), HDR("host", "shop.example")};
	struct sp_fwd_request r = {.method = "GET", .path = "/p", .path_len = 2, .headers = h,
				   .nheaders = NELEM(h), .default_host = "10.0.0.1:9001"};
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "GET /p HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n"
			  "X-Forwarded-Host: shop.example\r\n\r\n");
	assert_int_equal(sp_http_rehost(&out, "b:1"), 0);
	assert_head(&out, "GET /p HTTP/1.1\r\nHost: b:1\r\nAccept: */*\r\n"
			  "X-Forwarded-Host: shop.example\r\n\r\n");
	sp_buf_reset(&out);
	r.host = "orders.internal";
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "GET /p HTTP/1.1\r\nHost: orders.internal\r\nAccept: */*\r\n"
			  "X-Forwarded-Host: shop.example\r\n\r\n");
	sp_buf_reset(&out);
	r.nheaders = 1; /* HTTP/1.0 without Host: host_header before default_host */
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "GET /p HTTP/1.1\r\nHost: orders.internal\r\nAccept: */*\r\n\r\n");
	sp_buf_deinit(&out);
}

/* An empty X-Forwarded-For adds no element: the backend must not read ""
 * as the first hop (", 10.0.0.9, ..."). */
static void test_request_head_empty_xff_skipped(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {HDR("Host", "h"), HDR("X-Forwarded-For", ""),
				   HDR("X-Forwarded-For", "10.0.0.9")};
	struct sp_fwd_request r = {.method = "GET", .path = "/", .path_len = 1, .headers = h,
				   .nheaders = NELEM(h), .client_ip = "10.0.0.1"};
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "GET / HTTP/1.1\r\n"
			  "Host: h\r\n"
			  "X-Forwarded-For: 10.0.0.9, 10.0.0.1\r\n"
			  "X-Forwarded-Host: h\r\n"
			  "\r\n");
	/* only an empty one: the client's address alone */
	sp_buf_reset(&out);
	r.nheaders = 2;
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "GET / HTTP/1.1\r\n"
			  "Host: h\r\n"
			  "X-Forwarded-For: 10.0.0.1\r\n"
			  "X-Forwarded-Host: h\r\n"
			  "\r\n");
	sp_buf_deinit(&out);
}

static void test_request_head_content_length_regenerated(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {HDR("Host", "h"), HDR("Content-Length", "0005"),
				   HDR("content-length", "5")};
	struct sp_fwd_request r = {.method = "PUT", .path = "/x", .path_len = 2, .headers = h,
				   .nheaders = NELEM(h), .body = SP_BODY_LENGTH, .content_length = 5,
				   .client_ip = "10.0.0.1", .proto = "http"};
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_buf_adds(&out, "prefix|"), 0); /* appends */
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "prefix|PUT /x HTTP/1.1\r\n"
			  "Host: h\r\n"
			  "Content-Length: 5\r\n"
			  "X-Forwarded-For: 10.0.0.1\r\n"
			  "X-Forwarded-Proto: http\r\n"
			  "X-Forwarded-Host: h\r\n"
			  "\r\n");
	/* No body: neither framing header, even when the client sent one. */
	sp_buf_reset(&out);
	r.body = SP_BODY_NONE;
	r.method = "GET";
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_null(strstr(out.data, "Content-Length"));
	assert_null(strstr(out.data, "Transfer-Encoding"));
	sp_buf_deinit(&out);
}

static void test_request_head_without_optional_parts(void **state)
{
	(void)state;
	/* HTTP/1.0 style: no Host, no request id, no proto. */
	const struct sp_hdr h[] = {HDR("Accept", "*/*"), HDR("X-Request-Id", "client-id")};
	struct sp_fwd_request r = {.method = "GET", .path = "/", .path_len = 1, .headers = h,
				   .nheaders = NELEM(h), .body = SP_BODY_NONE, .client_ip = "::1"};
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	/* The client's id passes through untouched; none is added. */
	assert_head(&out, "GET / HTTP/1.1\r\n"
			  "Accept: */*\r\n"
			  "X-Request-Id: client-id\r\n"
			  "X-Forwarded-For: ::1\r\n"
			  "\r\n");
	sp_buf_deinit(&out);
}

static void test_request_head_upgrade(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {HDR("Host", "h"), HDR("Connection", "Upgrade"),
				   HDR("Upgrade", "websocket"), HDR("Sec-WebSocket-Key", "k==")};
	struct sp_fwd_request r = {.method = "GET", .path = "/ws", .path_len = 3, .headers = h,
				   .nheaders = NELEM(h), .body = SP_BODY_NONE, .upgrade = 1};
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "GET /ws HTTP/1.1\r\n"
			  "Host: h\r\n"
			  "Sec-WebSocket-Key: k==\r\n"
			  "Connection: upgrade\r\n"
			  "Upgrade: websocket\r\n"
			  "X-Forwarded-Host: h\r\n"
			  "\r\n");
	/* Not an upgrade: Upgrade is dropped like any hop-by-hop header. */
	sp_buf_reset(&out);
	r.upgrade = 0;
	assert_int_equal(sp_http_write_request_head(&r, &out), 0);
	assert_head(&out, "GET /ws HTTP/1.1\r\n"
			  "Host: h\r\n"
			  "Sec-WebSocket-Key: k==\r\n"
			  "X-Forwarded-Host: h\r\n"
			  "\r\n");
	sp_buf_deinit(&out);
}

/* --- response head ------------------------------------------------------- */

static const struct sp_hdr backend_hdrs[] = {
	HDR("Content-Type", "text/plain"), HDR("Connection", "close, X-Internal"),
	HDR("Keep-Alive", "timeout=1"),     HDR("Transfer-Encoding", "chunked"),
	HDR("Content-Length", "99"),        HDR("X-Internal", "1"),
	HDR("Set-Cookie", "a=1"),           HDR("Set-Cookie", "b=2"),
};

static struct sp_fwd_response response(int minor, int keep_alive, enum sp_body_mode body,
				       uint64_t length)
{
	struct sp_fwd_response r = {.status = 200, .reason = "OK", .reason_len = 2,
				    .headers = backend_hdrs, .nheaders = NELEM(backend_hdrs),
				    .body = body, .content_length = length, .has_length = 1,
				    .client_minor = minor, .keep_alive = keep_alive};
	return r;
}

#define RESP_HEADERS "Content-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"

static void test_response_head_keep_alive_and_close(void **state)
{
	(void)state;
	struct sp_buf out;
	sp_buf_init(&out);
	struct sp_fwd_response r = response(1, 1, SP_BODY_LENGTH, 12);
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.1 200 OK\r\n" RESP_HEADERS "Content-Length: 12\r\n\r\n");
	sp_buf_reset(&out);
	r.keep_alive = 0;
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.1 200 OK\r\n" RESP_HEADERS "Content-Length: 12\r\n"
			  "Connection: close\r\n\r\n");
	sp_buf_deinit(&out);
}

static void test_response_head_http10_client(void **state)
{
	(void)state;
	struct sp_buf out;
	sp_buf_init(&out);
	struct sp_fwd_response r = response(0, 1, SP_BODY_LENGTH, 3);
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.0 200 OK\r\n" RESP_HEADERS "Content-Length: 3\r\n"
			  "Connection: keep-alive\r\n\r\n");
	sp_buf_reset(&out);
	r = response(0, 0, SP_BODY_CLOSE, 0);
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.0 200 OK\r\n" RESP_HEADERS "Connection: close\r\n\r\n");
	sp_buf_deinit(&out);
}

static void test_response_head_body_modes(void **state)
{
	(void)state;
	struct sp_buf out;
	sp_buf_init(&out);
	/* HEAD (and 304): no body, the backend's length kept. */
	struct sp_fwd_response r = response(1, 1, SP_BODY_NONE, 1234);
	r.keep_length = 1;
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.1 200 OK\r\n" RESP_HEADERS "Content-Length: 1234\r\n\r\n");
	/* ... but never invented when the backend sent none. */
	sp_buf_reset(&out);
	r.has_length = 0;
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.1 200 OK\r\n" RESP_HEADERS "\r\n");
	/* 204: no body, no length. */
	sp_buf_reset(&out);
	r = response(1, 1, SP_BODY_NONE, 0);
	r.status = 204;
	r.reason = "No Content";
	r.reason_len = 10;
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.1 204 No Content\r\n" RESP_HEADERS "\r\n");
	/* Chunked, regenerated. */
	sp_buf_reset(&out);
	r = response(1, 1, SP_BODY_CHUNKED, 0);
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.1 200 OK\r\n" RESP_HEADERS "Transfer-Encoding: chunked\r\n\r\n");
	sp_buf_deinit(&out);
}

/* What the answer to a HEAD keeps of the backend's Content-Length: the
 * length a GET would get, except for a 204, which has none (RFC 9110 8.6:
 * it went out to a HEAD as the backend wrote it); a 304 keeps it too. */
static void test_head_keeps_a_length_but_for_a_204(void **state)
{
	(void)state;
	struct sp_h1_msg m = {.status = 204, .http_major = 1, .http_minor = 1, .has_length = 1,
			      .content_length = 5};
	assert_false(sp_fwd_response_for(&m, 1, 1).keep_length);
	assert_false(sp_fwd_response_for(&m, 0, 1).keep_length);
	m.status = 200;
	assert_true(sp_fwd_response_for(&m, 1, 1).keep_length);
	assert_false(sp_fwd_response_for(&m, 0, 1).keep_length);
	m.status = 304;
	assert_true(sp_fwd_response_for(&m, 0, 1).keep_length);
}

/* A host may be empty (an HTTP/1.0 request's), never a port without one:
 * "http://:80/p" was taken, Host ":80" sent on (RFC 9110 4.2.1). */
static void test_a_port_without_a_host_is_no_host(void **state)
{
	(void)state;
	static const char *const bad[] = {":80", ":", "[]:80", "a:", "a:123456", "a b"};
	static const char *const good[] = {"", "a", "a:80", "[::1]:8080", "10.0.0.1", "x.example."};
	for (size_t i = 0; i < NELEM(bad); i++)
		assert_false(sp_http_valid_host(bad[i], strlen(bad[i])));
	for (size_t i = 0; i < NELEM(good); i++)
		assert_true(sp_http_valid_host(good[i], strlen(good[i])));
	struct sp_hdr h[2] = {HDR("Host", "x")};
	size_t n = 1;
	const char *why = NULL;
	assert_int_equal(sp_http_absolute_host("http://:80/p", 12, h, &n, 2, &why), 400);
	assert_string_equal(why, "invalid host in the request target");
}

static void test_response_head_status_line(void **state)
{
	(void)state;
	struct sp_buf out;
	sp_buf_init(&out);
	const struct sp_hdr none[] = {HDR("X-A", "1")};
	struct sp_fwd_response r = {.status = 418, .reason = "I'm a teapot!!", .reason_len = 12,
				    .headers = none, .nheaders = 1, .body = SP_BODY_LENGTH,
				    .content_length = 0, .client_minor = 1, .keep_alive = 1};
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.1 418 I'm a teapot\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n");
	sp_buf_reset(&out);
	r.reason_len = 0;
	r.status = 299;
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.1 299 \r\nX-A: 1\r\nContent-Length: 0\r\n\r\n");
	sp_buf_deinit(&out);
}

static void test_response_head_upgrade(void **state)
{
	(void)state;
	const struct sp_hdr h[] = {HDR("Connection", "Upgrade"), HDR("Upgrade", "websocket"),
				   HDR("Sec-WebSocket-Accept", "abc=")};
	struct sp_fwd_response r = {.status = 101, .reason = "Switching Protocols",
				    .reason_len = 19, .headers = h, .nheaders = NELEM(h),
				    .body = SP_BODY_NONE, .client_minor = 1, .keep_alive = 0,
				    .upgrade = 1};
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_http_write_response_head(&r, &out), 0);
	assert_head(&out, "HTTP/1.1 101 Switching Protocols\r\n"
			  "Sec-WebSocket-Accept: abc=\r\n"
			  "Connection: upgrade\r\n"
			  "Upgrade: websocket\r\n\r\n");
	sp_buf_deinit(&out);
}

/* --- proxy-made responses and chunks -------------------------------------- */

static void test_write_simple(void **state)
{
	(void)state;
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_http_write_simple(&out, 502, "bad upstream response", 0, "rid-9",
						      "Fri, 27 Nov 2026 13:45:00 GMT", 0), 0);
	assert_head(&out, "HTTP/1.1 502 Bad Gateway\r\n"
			  "Content-Type: text/plain; charset=utf-8\r\n"
			  "Content-Length: 22\r\n"
			  "Connection: close\r\n"
			  "X-Request-Id: rid-9\r\n"
			  "Date: Fri, 27 Nov 2026 13:45:00 GMT\r\n"
			  "\r\n"
			  "bad upstream response\n");
	sp_buf_reset(&out);
	assert_int_equal(sp_http_write_simple(&out, 404, "", 1, NULL, NULL, 0), 0);
	assert_head(&out, "HTTP/1.1 404 Not Found\r\n"
			  "Content-Type: text/plain; charset=utf-8\r\n"
			  "Content-Length: 1\r\n"
			  "\r\n"
			  "\n");
	/* Content-Length matches the bytes after the head. */
	sp_buf_reset(&out);
	assert_int_equal(sp_http_write_simple(&out, 431, "header fields too large", 1, "x", NULL, 0), 0);
	const char *body = strstr(out.data, "\r\n\r\n");
	assert_non_null(body);
	assert_non_null(strstr(out.data, "\r\nContent-Length: 24\r\n"));
	assert_int_equal(strlen(body + 4), 24);
	assert_non_null(strstr(out.data, "HTTP/1.1 431 Request Header Fields Too Large\r\n"));
	/* to HEAD: the same head, no content */
	sp_buf_reset(&out);
	assert_int_equal(sp_http_write_simple(&out, 502, "bad upstream response", 1, NULL, NULL, 1), 0);
	assert_head(&out, "HTTP/1.1 502 Bad Gateway\r\n"
			  "Content-Type: text/plain; charset=utf-8\r\n"
			  "Content-Length: 22\r\n"
			  "\r\n");
	/* an HTTP/1.0 client that asked to keep the connection is told it is kept */
	sp_buf_reset(&out);
	assert_int_equal(sp_http_write_simple(&out, 503, "x", sp_http_keep(1, 0), NULL, NULL, 1), 0);
	assert_head(&out, "HTTP/1.1 503 Service Unavailable\r\n"
			  "Content-Type: text/plain; charset=utf-8\r\n"
			  "Content-Length: 2\r\n"
			  "Connection: keep-alive\r\n"
			  "\r\n");
	assert_int_equal(sp_http_keep(1, 1), SP_CONN_KEEP);
	assert_int_equal(sp_http_keep(0, 0), SP_CONN_CLOSE);
	assert_int_equal(sp_http_keep(0, 1), SP_CONN_CLOSE);
	sp_buf_deinit(&out);
}

static void test_http_date(void **state)
{
	(void)state;
	char d[SP_HTTP_DATE_LEN + 1];
	sp_http_date(1795787100, d); /* 2026-11-27 13:45:00 UTC */
	assert_string_equal(d, "Fri, 27 Nov 2026 13:45:00 GMT");
	sp_http_date(0, d);
	assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 GMT");
	sp_http_date(951782400, d); /* a leap day */
	assert_string_equal(d, "Tue, 29 Feb 2000 00:00:00 GMT");
}

static void test_reason_phrases(void **state)
{
	(void)state;
	assert_string_equal(sp_http_reason(200), "OK");
	assert_string_equal(sp_http_reason(400), "Bad Request");
	assert_string_equal(sp_http_reason(413), "Content Too Large");
	assert_string_equal(sp_http_reason(504), "Gateway Timeout");
	assert_string_equal(sp_http_reason(299), "Unknown");
}

static void test_chunk_header(void **state)
{
	(void)state;
	struct sp_buf out;
	sp_buf_init(&out);
	assert_int_equal(sp_http_chunk_header(&out, 0), 0);
	assert_int_equal(sp_http_chunk_header(&out, 255), 0);
	assert_int_equal(sp_http_chunk_header(&out, 4096), 0);
	assert_int_equal(sp_http_chunk_header(&out, 1), 0);
	assert_head(&out, "0\r\nff\r\n1000\r\n1\r\n");
	sp_buf_deinit(&out);
}

/* --- access log ------------------------------------------------------------ */

/* Formats e, checks it is exactly one line of JSON, and returns the object. */
static json_t *format_and_parse(const struct sp_access_entry *e, struct sp_buf *line)
{
	assert_int_equal(sp_access_format(e, line), 0);
	assert_true(line->len > 2);
	assert_int_equal(line->data[line->len - 1], '\n');
	assert_ptr_equal(memchr(line->data, '\n', line->len), line->data + line->len - 1);
	for (size_t i = 0; i < line->len - 1; i++) {
		unsigned char c = (unsigned char)line->data[i];
		if (c < 0x20 || c >= 0x7f)
			print_error("raw byte 0x%02x at %zu in %s", c, i, line->data);
		assert_in_range(c, 0x20, 0x7e);
	}
	json_error_t err;
	json_t *j = json_loadb(line->data, line->len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
	if (!j)
		print_error("invalid JSON (%s at %d): %s", err.text, err.position, line->data);
	assert_non_null(j);
	assert_true(json_is_object(j));
	return j;
}

static const char *jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v))
		print_error("\"%s\" is not a string\n", key);
	assert_true(json_is_string(v));
	return json_string_value(v);
}

static json_int_t jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

static double jnum(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	assert_true(json_is_number(v));
	return json_number_value(v);
}

static void test_access_format_query(void **state)
{
	(void)state;
	struct sp_access_entry e = {.client = "::1", .method = "GET", .path = "/s", .path_len = 2,
				    .status = 200, .total_ms = 1, .request_id = "r"};
	struct sp_buf line;
	sp_buf_init(&line);
	/* off: no field at all */
	e.query = "q=1";
	e.query_len = 3;
	json_t *j = format_and_parse(&e, &line);
	assert_null(json_object_get(j, "query"));
	json_decref(j);
	/* on: as received, escaped, cut to its length; null without a '?' */
	e.log_query = 1;
	e.query = "q=\"red\"&x=\x01zz";
	e.query_len = 11;
	j = format_and_parse(&e, &line);
	assert_string_equal(jstr(j, "query"), "q=\"red\"&x=\x01");
	json_decref(j);
	e.query = NULL;
	e.query_len = 0;
	j = format_and_parse(&e, &line);
	assert_true(json_is_null(json_object_get(j, "query")));
	json_decref(j);
	sp_buf_deinit(&line);
}

static void test_access_format_fields(void **state)
{
	(void)state;
	struct sp_access_entry e = {
		.client = "203.0.113.7", .method = "GET", .path = "/api/orders/9?x", .path_len = 13,
		.status = 200, .route = "orders", .backend = "modern", .server = "10.0.0.2:9002", .has_bucket = 1,
		.bucket = 8035, .upstream_ms = 12.5, .total_ms = 13.25, .bytes_in = 321,
		.bytes_out = 4294967296ull, .request_id = "rid-1", .error = NULL,
	};
	struct sp_buf line;
	sp_buf_init(&line);
	assert_int_equal(sp_buf_adds(&line, "stale"), 0); /* replaced */
	time_t before = time(NULL);
	json_t *j = format_and_parse(&e, &line);
	time_t after = time(NULL);
	assert_int_equal(json_object_size(j), 14); /* "error" only when set */
	assert_string_equal(jstr(j, "client"), "203.0.113.7");
	assert_string_equal(jstr(j, "method"), "GET");
	assert_string_equal(jstr(j, "path"), "/api/orders/9");
	assert_int_equal(jint(j, "status"), 200);
	assert_string_equal(jstr(j, "route"), "orders");
	assert_string_equal(jstr(j, "backend"), "modern");
	assert_string_equal(jstr(j, "server"), "10.0.0.2:9002");
	assert_int_equal(jint(j, "bucket"), 8035);
	assert_true(jnum(j, "upstream_ms") == 12.5);
	assert_true(jnum(j, "total_ms") == 13.25);
	assert_int_equal(jint(j, "bytes_in"), 321);
	assert_int_equal(jint(j, "bytes_out"), 4294967296ll);
	assert_string_equal(jstr(j, "request_id"), "rid-1");
	assert_null(json_object_get(j, "error"));
	assert_null(json_object_get(j, "peer")); /* only when set */

	/* time: RFC 3339 UTC with milliseconds, taken now. */
	const char *t = jstr(j, "time");
	struct tm tm = {0};
	int ms = -1, n = 0;
	assert_int_equal(strlen(t), 24);
	assert_int_equal(sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year, &tm.tm_mon,
				&tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &n),
			 7);
	assert_int_equal(n, 24);
	assert_in_range(ms, 0, 999);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t at = timegm(&tm);
	assert_in_range(at, before - 1, after + 1);
	json_decref(j);
	/* the proxy the client's address came through: right after it */
	e.peer = "10.0.0.5";
	j = format_and_parse(&e, &line);
	assert_int_equal(json_object_size(j), 15);
	assert_string_equal(jstr(j, "peer"), "10.0.0.5");
	assert_non_null(strstr(line.data, "\"client\":\"203.0.113.7\",\"peer\":\"10.0.0.5\","));
	json_decref(j);
	/* the servers a request left: each with its answer's status or its failure */
	const struct sp_access_try tries[] = {{"10.0.0.1:9001", 503, NULL},
					      {"[::1]:9\"", 0, "connect refused"}};
	e.tries = tries;
	e.ntries = 2;
	j = format_and_parse(&e, &line);
	assert_int_equal(json_object_size(j), 16);
	json_t *rf = json_object_get(j, "retried_from");
	assert_int_equal(json_array_size(rf), 2);
	assert_string_equal(jstr(json_array_get(rf, 0), "server"), "10.0.0.1:9001");
	assert_int_equal(jint(json_array_get(rf, 0), "status"), 503);
	assert_int_equal(json_object_size(json_array_get(rf, 0)), 2);
	assert_string_equal(jstr(json_array_get(rf, 1), "server"), "[::1]:9\"");
	assert_string_equal(jstr(json_array_get(rf, 1), "error"), "connect refused");
	assert_int_equal(json_object_size(json_array_get(rf, 1)), 2);
	json_decref(j);
	sp_buf_deinit(&line);
}

/* Durations as "%.3f" writes them, without printf: three decimals, the
 * last rounded; and the time stays right across a second (the date and
 * time are written once a second). */
static void test_access_format_numbers_as_printf(void **state)
{
	(void)state;
	static const double ms[] = {0, 0.0004, 0.0005, 0.001, 0.0996, 1, 12.5, 13.25, 999.9995,
				    1234.5678, 86400000.25};
	struct sp_buf line, want;
	sp_buf_init(&line);
	sp_buf_init(&want);
	for (size_t i = 0; i < NELEM(ms); i++) {
		sp_buf_reset(&line);
		sp_buf_reset(&want);
		assert_int_equal(sp_buf_add_fixed3(&line, ms[i]), 0);
		sp_buf_printf(&want, "%.3f", ms[i]);
		/* printf rounds the binary value half to even: the same but at
		 * an exact half, which a measured duration never is */
		if (strcmp(line.data, want.data) != 0 && ms[i] != 0.0005)
			fail_msg("%g: %s, printf %s", ms[i], line.data, want.data);
	}
	struct sp_access_entry e = {.client = "::1", .method = "GET", .path = "/", .path_len = 1,
				    .status = 204, .upstream_ms = 0.25, .total_ms = 1234.5678,
				    .request_id = "r"};
	for (int k = 0; k < 2; k++) {
		json_t *j = format_and_parse(&e, &line);
		assert_non_null(strstr(line.data, ",\"status\":204,"));
		assert_non_null(strstr(line.data, ",\"upstream_ms\":0.250,\"total_ms\":1234.568,"));
		time_t now = time(NULL);
		struct tm tm = {0};
		int msec = -1;
		assert_int_equal(sscanf(jstr(j, "time"), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year,
					&tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec,
					&msec),
				 7);
		tm.tm_year -= 1900;
		tm.tm_mon -= 1;
		assert_in_range(timegm(&tm), now - 1, now);
		json_decref(j);
		if (k == 0) { /* into the next second */
			struct timespec pause = {1, 100 * 1000 * 1000};
			nanosleep(&pause, NULL);
		}
	}
	sp_buf_deinit(&line);
	sp_buf_deinit(&want);
}

static void test_access_format_nulls_and_error(void **state)
{
	(void)state;
	struct sp_access_entry e = {
		.client = "::1", .method = "POST", .path = "/", .path_len = 1, .status = 502,
		.route = NULL, .backend = NULL, .has_bucket = 0, .bucket = 77, .upstream_ms = -1,
		.total_ms = 0.0004, .request_id = NULL, .error = "connect refused",
	};
	struct sp_buf line;
	sp_buf_init(&line);
	json_t *j = format_and_parse(&e, &line);
	assert_int_equal(json_object_size(j), 15);
	assert_true(json_is_null(json_object_get(j, "route")));
	assert_true(json_is_null(json_object_get(j, "backend")));
	assert_true(json_is_null(json_object_get(j, "server")));
	assert_true(json_is_null(json_object_get(j, "bucket")));
	assert_true(json_is_null(json_object_get(j, "upstream_ms")));
	assert_true(json_is_null(json_object_get(j, "request_id")));
	assert_true(jnum(j, "total_ms") == 0.0);
	assert_int_equal(jint(j, "status"), 502);
	assert_int_equal(jint(j, "bytes_in"), 0);
	assert_string_equal(jstr(j, "error"), "connect refused");
	json_decref(j);
	sp_buf_deinit(&line);
}

static void test_access_format_escapes(void **state)
{
	(void)state;
	/* Bytes from the wire: quote, backslash, controls, DEL, UTF-8 and invalid UTF-8. */
	static const char path[] = "/q\"b\\s\n\r\t\x01\x1f\x7f/caf\xc3\xa9/\xff\x80";
	struct sp_access_entry e = {
		.client = "10.0.0.1", .method = "G\"ET", .path = path, .path_len = sizeof(path) - 1,
		.status = 400, .upstream_ms = -1, .request_id = "id\x02", .error = "bad\\request",
	};
	struct sp_buf line;
	sp_buf_init(&line);
	json_t *j = format_and_parse(&e, &line);
	/* Each byte >= 0x80 is escaped on its own as \u00XX, so it reads back as
	 * the code point of that byte (valid JSON whatever the input). */
	static const char want[] = "/q\"b\\s\n\r\t\x01\x1f\x7f/caf\xc3\x83\xc2\xa9/\xc3\xbf\xc2\x80";
	json_t *p = json_object_get(j, "path");
	assert_true(json_is_string(p));
	assert_int_equal(json_string_length(p), sizeof(want) - 1);
	assert_memory_equal(json_string_value(p), want, sizeof(want) - 1);
	assert_non_null(strstr(line.data, "\"path\":\"/q\\\"b\\\\s\\u000a\\u000d\\u0009\\u0001\\u001f"
					  "\\u007f/caf\\u00c3\\u00a9/\\u00ff\\u0080\""));
	assert_string_equal(jstr(j, "method"), "G\"ET");
	assert_string_equal(jstr(j, "request_id"), "id\x02");
	assert_string_equal(jstr(j, "error"), "bad\\request");
	json_decref(j);

	/* NUL bytes inside the path (path_len counts them) survive as \u0000. */
	e.path = "/a\0b";
	e.path_len = 4;
	j = format_and_parse(&e, &line);
	p = json_object_get(j, "path");
	assert_int_equal(json_string_length(p), 4);
	assert_memory_equal(json_string_value(p), "/a\0b", 4);
	json_decref(j);
	sp_buf_deinit(&line);
}

/* A diff's values are JSON strings written as jansson's json_dumps writes
 * them (the diff log's bytes did not change when it stopped being used):
 * the same text for every UTF-8 string, random and chosen; 1 and nothing
 * written for bytes that are not UTF-8, as json_stringn refuses them. */
static void test_json_utf8_writes_what_jansson_writes(void **state)
{
	(void)state;
	static const char *const chosen[] = {
	    "", "ok\n", "\"q\" \\ /", "\b\f\n\r\t\x01\x1b\x1f \x7f", "caf\xc3\xa9 \xe2\x80\xa6",
	    "\xf0\x9f\x8c\xb3\xe2\x80\xa8", "\xc3\xa9\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80"};
	struct sp_buf b;
	sp_buf_init(&b);
	srand(7);
	for (int i = 0; i < 20000; i++) {
		char s[24];
		size_t len;
		if (i < (int)(sizeof(chosen) / sizeof(*chosen))) {
			len = strlen(chosen[i]);
			memcpy(s, chosen[i], len);
		} else { /* bytes drawn to make UTF-8 likely: ASCII, controls, leads, tails */
			static const unsigned char pool[] = {'a', '"', '\\', '/', 0, 1, 0x1f, 0x7f, 0xc3, 0xa9,
							     0xe2, 0x80, 0xa6, 0xf0, 0x9f, 0x8c, 0xb3, ' '};
			len = (size_t)(rand() % 12);
			for (size_t k = 0; k < len; k++)
				s[k] = (char)pool[rand() % (int)sizeof(pool)];
		}
		json_t *j = json_stringn(s, len);
		char *want = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
		sp_buf_reset(&b);
		int rc = sp_buf_add_json_utf8(&b, s, len);
		if (!want) {
			assert_int_equal(rc, 1);
			assert_int_equal(b.len, 0);
		} else {
			assert_int_equal(rc, 0);
			assert_int_equal(b.len, strlen(want) - 2); /* jansson's has the quotes */
			assert_memory_equal(b.data, want + 1, b.len);
		}
		free(want);
		json_decref(j);
	}
	/* text made UTF-8: each byte that begins no character becomes U+FFFD */
	static const struct {
		const char *in, *out;
	} fixes[] = {{"str\xe4ngler", "str\xef\xbf\xbdngler"},
		     {"caf\xc3\xa9", "caf\xc3\xa9"},
		     {"\xc3", "\xef\xbf\xbd"},
		     {"\xed\xa0\x80!", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!"},
		     {"", ""}};
	for (size_t i = 0; i < sizeof(fixes) / sizeof(*fixes); i++) {
		sp_buf_reset(&b);
		assert_int_equal(sp_buf_add_utf8_valid(&b, fixes[i].in, strlen(fixes[i].in)), 0);
		assert_int_equal(b.len, strlen(fixes[i].out));
		assert_memory_equal(b.data ? b.data : "", fixes[i].out, b.len);
	}
	/* sp_buf_printf: into the room there is, or grown once past it */
	sp_buf_reset(&b);
	for (int i = 0; i < 200; i++)
		assert_int_equal(sp_buf_printf(&b, "%d:%s;", i, "abcdefgh"), 0);
	assert_int_equal(b.len, strlen(b.data));
	assert_memory_equal(b.data, "0:abcdefgh;1:abcdefgh;", 22);
	assert_string_equal(b.data + b.len - 13, "199:abcdefgh;");
	sp_buf_deinit(&b);
}

/* Names from the configuration are UTF-8 text: each character is escaped
 * as itself ("café" reads back as café, not as the bytes' code points, which
 * diff-report --route could not find), above U+FFFF as a surrogate pair; and
 * a diff line's values, UTF-8 as jansson wrote them, are made ASCII. */
static void test_json_text_escapes_characters(void **state)
{
	(void)state;
	struct sp_buf b;
	sp_buf_init(&b);
	static const char name[] = "caf\xc3\xa9 \xe2\x80\xae\xf0\x9f\x8c\xb3 \"q\" \xff";
	assert_int_equal(sp_buf_add_json_text(&b, name, sizeof(name) - 1), 0);
	assert_string_equal(b.data, "caf\\u00e9 \\u202e\\ud83c\\udf33 \\\"q\\\" \\u00ff");
	sp_buf_reset(&b);
	struct sp_access_entry e = {.client = "10.0.0.1", .method = "GET", .path = "/", .path_len = 1,
				    .status = 200, .upstream_ms = -1, .route = "caf\xc3\xa9",
				    .server = "unix:/run/\xc3\xa9.sock"};
	json_t *j = format_and_parse(&e, &b);
	assert_string_equal(jstr(j, "route"), "caf\xc3\xa9");
	assert_string_equal(jstr(j, "server"), "unix:/run/\xc3\xa9.sock");
	for (size_t i = 0; i < b.len; i++)
		assert_true((unsigned char)b.data[i] < 0x7f);
	json_decref(j);

	/* the ASCII pass: from an offset on, characters and DEL become escapes */
	sp_buf_reset(&b);
	static const char line[] = "{\"k\":\"\xc2\x9b" "2J\x7f\xe2\x80\xa8\xf0\x9f\x8c\xb3\"}";
	sp_buf_add(&b, "x\xc3\xa9", 3);
	sp_buf_add(&b, line, sizeof(line) - 1);
	assert_int_equal(sp_buf_json_ascii(&b, 3), 0);
	assert_memory_equal(b.data, "x\xc3\xa9", 3); /* before the offset: as it was */
	assert_string_equal(b.data + 3, "{\"k\":\"\\u009b2J\\u007f\\u2028\\ud83c\\udf33\"}");
	json_error_t err;
	j = json_loadb(b.data + 3, b.len - 3, 0, &err);
	assert_non_null(j);
	assert_string_equal(jstr(j, "k"), "\xc2\x9b" "2J\x7f\xe2\x80\xa8\xf0\x9f\x8c\xb3");
	json_decref(j);
	sp_buf_deinit(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_name_is_and_find),
		cmocka_unit_test(test_list_has_token),
		cmocka_unit_test(test_hdr_is_hop),
		cmocka_unit_test(test_check_request_valid),
		cmocka_unit_test(test_check_request_bad_names),
		cmocka_unit_test(test_check_values_every_byte_everywhere),
		cmocka_unit_test(test_check_names_every_byte),
		cmocka_unit_test(test_ipv4_text_matches_inet_ntop),
		cmocka_unit_test(test_check_request_bad_values),
		cmocka_unit_test(test_check_request_host),
		cmocka_unit_test(test_check_request_host_value),
		cmocka_unit_test(test_http_date),
		cmocka_unit_test(test_check_request_transfer_encoding),
		cmocka_unit_test(test_check_response),
		cmocka_unit_test(test_check_request_unknown_coding),
		cmocka_unit_test(test_connection_never_strips_host),
		cmocka_unit_test(test_request_head_full),
		cmocka_unit_test(test_request_head_connection_tokens),
		cmocka_unit_test(test_request_head_rehost),
		cmocka_unit_test(test_request_head_host_first_and_host_header),
		cmocka_unit_test(test_request_head_empty_xff_skipped),
		cmocka_unit_test(test_request_head_content_length_regenerated),
		cmocka_unit_test(test_request_head_without_optional_parts),
		cmocka_unit_test(test_request_head_upgrade),
		cmocka_unit_test(test_response_head_keep_alive_and_close),
		cmocka_unit_test(test_response_head_http10_client),
		cmocka_unit_test(test_response_head_body_modes),
		cmocka_unit_test(test_head_keeps_a_length_but_for_a_204),
		cmocka_unit_test(test_a_port_without_a_host_is_no_host),
		cmocka_unit_test(test_response_head_status_line),
		cmocka_unit_test(test_response_head_upgrade),
		cmocka_unit_test(test_write_simple),
		cmocka_unit_test(test_reason_phrases),
		cmocka_unit_test(test_chunk_header),
		cmocka_unit_test(test_access_format_fields),
		cmocka_unit_test(test_access_format_numbers_as_printf),
		cmocka_unit_test(test_access_format_query),
		cmocka_unit_test(test_access_format_nulls_and_error),
		cmocka_unit_test(test_access_format_escapes),
		cmocka_unit_test(test_json_utf8_writes_what_jansson_writes),
		cmocka_unit_test(test_json_text_escapes_characters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
