/* Unit tests for proxy/rewrite.c: which rule applies to a path, what the
 * backend receives, how the rules are read and refused, and the request
 * line's path replaced in a head (http.c's sp_http_repath); the header
 * rules (request_headers, response_headers) on heads, and their checks. */
#include "unit.h"

#include <stdlib.h>

#include "rewrite.h"

/* A configuration whose backend "legacy" (line 3) has settings on line 4. */
static void backend_text(char *text, size_t n, const char *settings)
{
	snprintf(text, n,
		 "listen = ( { address = \"127.0.0.1:8080\"; } );\n"
		 "backends = {\n"
		 "  legacy = { url = \"http://127.0.0.1:9001\";\n"
		 "             %s };\n"
		 "};\n"
		 "default_backend = \"legacy\";\n",
		 settings);
}

static struct sp_config *load_backend(const char *settings, int *warnings)
{
	char text[4096];
	backend_text(text, sizeof(text), settings);
	return unit_load_ok(text, warnings);
}

/* The backend's path_rewrite = ( rules ). */
static struct sp_config *load_rules(const char *rules, int *warnings)
{
	char settings[2048];
	snprintf(settings, sizeof(settings), "path_rewrite = ( %s );", rules);
	return load_backend(settings, warnings);
}

/* The backend's settings are refused, with want among the messages. */
static void check_refused(const char *settings, const char *want)
{
	char text[4096];
	backend_text(text, sizeof(text), settings);
	struct sp_diag d;
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load_string(text, TEST_CONF, &d);
	const char *out = d.text.data ? d.text.data : "";
	if (c || !strstr(out, want))
		fail_msg("%s: %s; want \"%s\" in:\n%s", settings, c ? "loaded" : "refused", want,
			 out);
	sp_config_unref(&c);
	sp_diag_deinit(&d);
}

/* path_rewrite = rules; is refused so. */
static void check_rules_refused(const char *rules, const char *want)
{
	char settings[4096];
	snprintf(settings, sizeof(settings), "path_rewrite = %s;", rules);
	check_refused(settings, want);
}

/* What path becomes under c's rules: "=" when none applies. */
static void assert_rewrite(const struct sp_config *c, const char *path, const char *want)
{
	const struct sp_backend *be = &c->backends[0];
	struct sp_buf out;
	sp_buf_init(&out);
	int k = sp_rewrite_path(be->rewrite, be->nrewrite, path, strlen(path), &out);
	if (strcmp(want, "=") == 0) {
		if (k != -1)
			fail_msg("%s: rewritten to %s by rule %d, want unchanged", path, out.data, k);
	} else if (k < 0 || strcmp(out.data, want) != 0) {
		fail_msg("%s: %s, want %s", path, k < 0 ? "unchanged" : out.data, want);
	}
	sp_buf_deinit(&out);
}

static void test_a_prefix_is_replaced_at_a_segment_boundary(void **state)
{
	(void)state;
	struct sp_config *c = load_rules("{ prefix = \"/api/v1/orders\"; to = \"/orders\"; }", NULL);
	assert_rewrite(c, "/api/v1/orders", "/orders");
	assert_rewrite(c, "/api/v1/orders/", "/orders/");
	assert_rewrite(c, "/api/v1/orders/7", "/orders/7");
	assert_rewrite(c, "/api/v1/orders/7/items/", "/orders/7/items/");
	assert_rewrite(c, "/api/v1/ordersX", "=");
	assert_rewrite(c, "/api/v1/order", "=");
	assert_rewrite(c, "/api/v2/orders/7", "=");
	assert_rewrite(c, "/", "=");
	sp_config_unref(&c);
}

/* A final '/' on either side changes nothing of what lies below: the rest of
 * the path keeps its own '/', never doubled nor lost. */
static void test_final_slashes_neither_double_nor_vanish(void **state)
{
	(void)state;
	static const char *const rules[][2] = {
		{"/api/", "/v2/"}, {"/api/", "/v2"}, {"/api", "/v2/"}, {"/api", "/v2"}};
	for (size_t i = 0; i < NELEM(rules); i++) {
		char text[256];
		snprintf(text, sizeof(text), "{ prefix = \"%s\"; to = \"%s\"; }", rules[i][0],
			 rules[i][1]);
		struct sp_config *c = load_rules(text, NULL);
		assert_rewrite(c, "/api/x", "/v2/x");
		assert_rewrite(c, "/api/x/", "/v2/x/");
		assert_rewrite(c, "/api/", "/v2/");
		/* "/api/" covers what is below it, not "/api" itself, which
		 * becomes to as written */
		assert_rewrite(c, "/api", rules[i][0][4] == '/' ? "=" : rules[i][1]);
		sp_config_unref(&c);
	}
}

/* "/" as prefix adds a prefix to every path; "/" as to removes one. */
static void test_root_adds_or_removes_a_prefix(void **state)
{
	(void)state;
	struct sp_config *c = load_rules("{ prefix = \"/\"; to = \"/legacy\"; }", NULL);
	assert_rewrite(c, "/", "/legacy/");
	assert_rewrite(c, "/x/y", "/legacy/x/y");
	sp_config_unref(&c);
	c = load_rules("{ prefix = \"/legacy\"; to = \"/\"; }", NULL);
	assert_rewrite(c, "/legacy", "/");
	assert_rewrite(c, "/legacy/", "/");
	assert_rewrite(c, "/legacy/x", "/x");
	assert_rewrite(c, "/legacyx", "=");
	sp_config_unref(&c);
}

/* The first rule that covers the path applies, in the order written; a rule
 * an earlier one covers entirely is warned about. */
static void test_the_first_rule_that_covers_applies(void **state)
{
	(void)state;
	int warnings = -1;
	struct sp_config *c = load_rules("{ prefix = \"/api/orders\"; to = \"/orders\"; },\n"
					 "{ prefix = \"/api\"; to = \"/\"; }",
					 &warnings);
	assert_int_equal(warnings, 0);
	assert_rewrite(c, "/api/orders/7", "/orders/7");
	assert_rewrite(c, "/api/users/7", "/users/7");
	assert_rewrite(c, "/apis", "=");
	sp_config_unref(&c);
	c = load_rules("{ prefix = \"/api\"; to = \"/\"; },\n"
		       "{ prefix = \"/api/orders\"; to = \"/o\"; }",
		       &warnings);
	assert_int_equal(warnings, 1);
	assert_rewrite(c, "/api/orders/7", "/orders/7"); /* by the first, not "/o/7" */
	sp_config_unref(&c);
}

/* Escapes stay as normalisation left them: an encoded slash is not a
 * separator, before or after. */
static void test_escapes_go_through_as_they_are(void **state)
{
	(void)state;
	struct sp_config *c = load_rules("{ prefix = \"/a%2Fb\"; to = \"/c%20d\"; }", NULL);
	assert_rewrite(c, "/a%2Fb/x%3F", "/c%20d/x%3F");
	assert_rewrite(c, "/a/b/x", "=");
	sp_config_unref(&c);
}

static void test_bad_rules_are_refused_with_their_place(void **state)
{
	(void)state;
	check_rules_refused("()", "test.conf:4: backends.legacy.path_rewrite: must be a list of 1 to 64 "
			    "rules, in parentheses");
	check_rules_refused("[\"/a\"]", "test.conf:4: backends.legacy.path_rewrite: must be a list");
	check_rules_refused("{ prefix = \"/a\"; to = \"/b\"; }", "backends.legacy.path_rewrite: must be "
							     "a list");
	check_rules_refused("( \"/a\" )", "test.conf:4: backends.legacy.path_rewrite.[0]: must be a "
				    "group: { prefix = \"/api/v1/orders\"; to = \"/orders\"; }");
	check_rules_refused("( { to = \"/b\"; } )",
		      "test.conf:4: backends.legacy.path_rewrite.[0].prefix: required");
	check_rules_refused("( { prefix = \"/a\"; } )",
		      "test.conf:4: backends.legacy.path_rewrite.[0].to: required");
	/* a refused rule is not looked at by the next one's check */
	check_rules_refused("( { prefix = \"/a\"; }, { prefix = \"/a/b\"; to = \"/\"; } )",
		      "test.conf:4: backends.legacy.path_rewrite.[0].to: required");
	check_rules_refused("( { prefix = \"/a\"; to = \"/b\"; strip = true; } )",
		      "backends.legacy.path_rewrite.[0].strip: unknown setting");
	check_rules_refused("( { prefix = \"a\"; to = \"/b\"; } )",
		      "test.conf:4: backends.legacy.path_rewrite.[0].prefix: \"a\": ");
	check_rules_refused("( { prefix = \"/a//b\"; to = \"/b\"; } )",
		      "backends.legacy.path_rewrite.[0].prefix: \"/a//b\" is not normalised and "
		      "would never apply; write \"/a/b\"");
	check_rules_refused("( { prefix = \"/a\"; to = \"/b/../c\"; } )",
		      "backends.legacy.path_rewrite.[0].to: \"/b/../c\" is not normalised and a "
		      "backend only receives normalised paths; write \"/c\"");
	check_rules_refused("( { prefix = \"/a\"; to = \"/b?x=1\"; } )",
		      "backends.legacy.path_rewrite.[0].to: \"/b?x=1\": a path, without a query or "
		      "a fragment ('?' is %3F, '#' is %23)");
	check_rules_refused("( { prefix = \"/a#f\"; to = \"/b\"; } )",
		      "backends.legacy.path_rewrite.[0].prefix: \"/a#f\": a path, without");
	/* bytes no request line carries, which would end up in one */
	check_rules_refused("( { prefix = \"/a\"; to = \"/x HTTP/1.1\\r\\nX-Injected: yes\"; } )",
			    "backends.legacy.path_rewrite.[0].to: \"/x HTTP/1.1??X-Injected: yes\": "
			    "only visible ASCII, no spaces or control characters (write them "
			    "percent-encoded: a space is %20)");
	check_rules_refused("( { prefix = \"/a b\"; to = \"/b\"; } )",
			    "backends.legacy.path_rewrite.[0].prefix: \"/a b\": only visible ASCII");
	check_rules_refused("( { prefix = \"/a\"; to = \"/caf\xc3\xa9\"; } )",
			    "backends.legacy.path_rewrite.[0].to: \"/caf\xc3\xa9\": only visible ASCII");
	check_rules_refused("( { prefix = 3; to = \"/b\"; } )",
		      "backends.legacy.path_rewrite.[0].prefix: must be a string");
	char many[64 * 40 + 16] = "(";
	for (int i = 0; i < 65; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s{prefix=\"/%d\";to=\"/\";}",
			 i ? "," : "", i);
	strcat(many, ")");
	check_rules_refused(many, "backends.legacy.path_rewrite: must be a list of 1 to 64 rules");
}

/* The request line's path, and only it, changes: the query and the rest of
 * the head stay byte for byte. */
static void test_repath_changes_only_the_path(void **state)
{
	(void)state;
	static const char *const heads[][3] = {
		{"GET /api/v1/orders/7?x=1&y=/a HTTP/1.1\r\nHost: a\r\n\r\n", "/orders/7",
		 "GET /orders/7?x=1&y=/a HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"POST /a HTTP/1.1\r\nHost: a\r\nX: /a?b\r\n\r\n", "/a/much/longer/path",
		 "POST /a/much/longer/path HTTP/1.1\r\nHost: a\r\nX: /a?b\r\n\r\n"},
		{"GET /long/path/here? HTTP/1.1\r\n\r\n", "/", "GET /? HTTP/1.1\r\n\r\n"},
	};
	for (size_t i = 0; i < NELEM(heads); i++) {
		struct sp_buf b;
		sp_buf_init(&b);
		sp_buf_adds(&b, heads[i][0]);
		assert_int_equal(sp_http_repath(&b, heads[i][1], strlen(heads[i][1])), 0);
		assert_string_equal(b.data, heads[i][2]);
		assert_int_equal(b.len, strlen(heads[i][2]));
		sp_buf_deinit(&b);
	}
	struct sp_buf b;
	sp_buf_init(&b);
	sp_buf_adds(&b, "GARBAGE");
	assert_int_equal(sp_http_repath(&b, "/x", 2), -1);
	sp_buf_deinit(&b);
}

/* The rules on head, with vars, give want; twice, nothing more changes. */
static void assert_applied_with(const struct sp_hdr_rules *r, const struct sp_hdr_vars *vars,
				const char *head, const char *want)
{
	struct sp_buf b;
	sp_buf_init(&b);
	sp_buf_adds(&b, head);
	assert_int_equal(sp_hdr_rules_apply(r, vars, &b), 0);
	assert_string_equal(b.data, want);
	assert_int_equal(b.len, strlen(want));
	assert_int_equal(sp_hdr_rules_apply(r, vars, &b), 0);
	assert_string_equal(b.data, want);
	sp_buf_deinit(&b);
}

static void assert_applied(const struct sp_hdr_rules *r, const char *head, const char *want)
{
	assert_applied_with(r, NULL, head, want);
}

/* Every field of a set or removed name goes, whatever its case, the set
 * fields come last in the order written; the request line, Host and the
 * other fields stay as they were, in their order. */
static void test_header_rules_on_a_request_head(void **state)
{
	(void)state;
	struct sp_config *c = load_backend(
		"request_headers = { set = { X-Api-Key = \"s3cr3t\"; X-Via = \"strangler 1\"; };\n"
		"                    remove = [\"X-Debug\", \"cookie\"]; };", NULL);
	const struct sp_hdr_rules *r = &c->backends[0].req_headers;
	assert_int_equal(c->request_header_rules, 1);
	assert_applied(r,
		       "GET /a?b HTTP/1.1\r\nHost: h\r\nx-api-key: client\r\nAccept: */*\r\n"
		       "X-DEBUG: 1\r\nCookie: a=1\r\nX-Api-Key: again\r\nX-Debugger: kept\r\n"
		       "X-Request-Id: r1\r\n\r\n",
		       "GET /a?b HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Debugger: kept\r\n"
		       "X-Request-Id: r1\r\nX-Api-Key: s3cr3t\r\nX-Via: strangler 1\r\n\r\n");
	/* nothing to remove: the set fields are added */
	assert_applied(r, "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		       "GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: s3cr3t\r\nX-Via: strangler 1\r\n"
		       "\r\n");
	/* a name with '_' that reads as a rule's goes too (a CGI-style backend
	 * reads X_Debug as X-Debug): no way past a remove, no twin of a set */
	assert_applied(r, "GET / HTTP/1.1\r\nHost: h\r\nX_Debug: 1\r\nx_api_KEY: twin\r\n"
			  "X_Other: kept\r\n\r\n",
		       "GET / HTTP/1.1\r\nHost: h\r\nX_Other: kept\r\nX-Api-Key: s3cr3t\r\n"
		       "X-Via: strangler 1\r\n\r\n");
	/* a value with a colon is not a name */
	assert_applied(r, "GET / HTTP/1.1\r\nHost: h\r\nX-Note: Cookie: x\r\n\r\n",
		       "GET / HTTP/1.1\r\nHost: h\r\nX-Note: Cookie: x\r\nX-Api-Key: s3cr3t\r\n"
		       "X-Via: strangler 1\r\n\r\n");
	struct sp_buf b;
	sp_buf_init(&b);
	sp_buf_adds(&b, "GET / HTTP/1.1\r\nHost: h\r\n"); /* no blank line: not a head */
	assert_int_equal(sp_hdr_rules_apply(r, NULL, &b), -1);
	assert_string_equal(b.data, "GET / HTTP/1.1\r\nHost: h\r\n");
	sp_buf_deinit(&b);
	sp_config_unref(&c);
}

/* Variables in set values: the exchange's, empty without one (a health
 * check), $$ a '$'; an unknown one is refused with the list. */
static void test_header_rules_with_variables(void **state)
{
	(void)state;
	struct sp_config *c = load_backend(
		"request_headers = { set = { X-Real-IP = \"$remote_addr\";\n"
		"  X-Orig = \"${scheme}://$http_host/ ($host) $request_id $$5\"; }; };", NULL);
	const struct sp_hdr_rules *r = &c->backends[0].req_headers;
	assert_true(r->vars);
	assert_true(r->host_vars);
	assert_true(c->keep_client_host);
	struct sp_hdr_vars v = {"10.1.2.3", "https", "rid7", "Shop.Example:8443", 17, NULL, NULL, 0, 0, NULL};
	assert_applied_with(r, &v, "GET / HTTP/1.1\r\nHost: h\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
			    "GET / HTTP/1.1\r\nHost: h\r\nX-Real-IP: 10.1.2.3\r\n"
			    "X-Orig: https://Shop.Example:8443/ (shop.example) rid7 $5\r\n\r\n");
	struct sp_hdr_vars v6 = {"::1", "http", "r", "[::1]:80", 8, NULL, NULL, 0, 0, NULL};
	assert_applied_with(r, &v6, "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
			    "GET / HTTP/1.1\r\nHost: h\r\nX-Real-IP: ::1\r\n"
			    "X-Orig: http://[::1]:80/ ([::1]) r $5\r\n\r\n");
	/* $host without a final dot, as routing reads the name */
	struct sp_hdr_vars dot = {"1.2.3.4", "http", "r", "Shop.Example.:8080", 18, NULL, NULL, 0, 0, NULL};
	assert_applied_with(r, &dot, "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
			    "GET / HTTP/1.1\r\nHost: h\r\nX-Real-IP: 1.2.3.4\r\n"
			    "X-Orig: http://Shop.Example.:8080/ (shop.example) r $5\r\n\r\n");
	struct sp_buf b;
	sp_buf_init(&b);
	assert_int_equal(sp_hdr_expand("a $remote_addr b$$ ${host}", NULL, &b), 0);
	assert_int_equal(b.len, 6);
	assert_memory_equal(b.data, "a  b$ ", 6);
	sp_buf_deinit(&b);
	sp_config_unref(&c);
	/* a value its variables leave empty is not sent, as nginx's
	 * proxy_set_header (it went as "X-Host: "); the client's field of that
	 * name is still replaced, by nothing */
	c = load_backend("request_headers = { set = { X-Host = \"$host\"; X-B = \"b\"; }; };", NULL);
	struct sp_hdr_vars none = {"1.2.3.4", "http", "r", NULL, 0, NULL, NULL, 0, 0, NULL};
	assert_applied_with(&c->backends[0].req_headers, &none,
			    "GET / HTTP/1.0\r\nX-Host: spoofed\r\n\r\n",
			    "GET / HTTP/1.0\r\nX-B: b\r\n\r\n");
	sp_config_unref(&c);
	/* no '$': no variables, no Host kept for them */
	c = load_backend("request_headers = { set = { X-A = \"b\"; }; };", NULL);
	assert_false(c->backends[0].req_headers.vars);
	assert_false(c->keep_client_host);
	sp_config_unref(&c);
	static const char *const bad[] = {"$remote", "$", "a$", "${host", "${}", "$Host", "$1",
					  "$remote_addr$hostx"};
	for (size_t i = 0; i < NELEM(bad); i++) {
		char text[256];
		snprintf(text, sizeof(text), "request_headers = { set = { X-A = \"%s\"; }; };",
			 bad[i]);
		check_refused(text, "backends.legacy.request_headers.set.X-A: \"");
		check_refused(text, "'$' starts a variable: $remote_addr, $scheme, $request_id, "
				    "$http_host or $host (or ${name}); write $$ for a '$'");
	}
}

static void test_header_rules_on_a_response_head(void **state)
{
	(void)state;
	struct sp_config *c = load_backend(
		"response_headers = { set = { Cache-Control = \"no-store\"; };\n"
		"                     remove = [\"Server\", \"X-Powered-By\"]; };", NULL);
	const struct sp_hdr_rules *r = &c->backends[0].resp_headers;
	assert_int_equal(c->request_header_rules, 0); /* answers only */
	assert_false(sp_hdr_rules_any(&c->backends[0].req_headers));
	assert_applied(r,
		       "HTTP/1.1 200 OK\r\nServer: hyper\r\nCache-Control: max-age=60\r\n"
		       "Content-Type: application/json\r\nx-powered-by: rust\r\nContent-Length: 2\r\n"
		       "\r\n",
		       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
		       "Cache-Control: no-store\r\n\r\n");
	sp_config_unref(&c);
}

static void test_bad_header_rules_are_refused_with_their_place(void **state)
{
	(void)state;
	check_refused("request_headers = [\"X-A\"];",
			      "test.conf:4: backends.legacy.request_headers: must be a group: { set "
			      "= { X-Api-Version = \"2\"; }; remove = [\"X-Debug\"]; }");
	check_refused("request_headers = { add = { X-A = \"1\"; }; };",
			      "test.conf:4: backends.legacy.request_headers.add: unknown setting");
	check_refused("request_headers = { set = [\"X-A\"]; };",
			      "test.conf:4: backends.legacy.request_headers.set: must be a group of "
			      "1 to 64 fields");
	check_refused("request_headers = { set = {}; };",
		      "test.conf:4: backends.legacy.request_headers.set: must be a group of 1 to 64 "
		      "fields");
	check_refused("response_headers = {};",
		      "test.conf:4: backends.legacy.response_headers: sets or removes nothing: give "
		      "set, remove or both");
	check_refused("request_headers = { set = { X-A = 1; }; };",
			      "test.conf:4: backends.legacy.request_headers.set.X-A: must be a "
			      "string of 1 to 4096 bytes");
	check_refused("request_headers = { set = { X-A = \"\"; }; };",
			      "request_headers.set.X-A: must be a string of 1 to 4096 bytes, "
			      "no control characters but tabs, no blank at either end (to drop the "
			      "header, list it in remove)");
	check_refused("request_headers = { set = { X-A = \"a\\nb\"; }; };",
			      "request_headers.set.X-A: must be a string");
	check_refused("request_headers = { set = { X-A = \" a\"; }; };",
			      "request_headers.set.X-A: must be a string");
	check_refused("request_headers = { set = { X-A = \"1\"; x-a = \"2\"; }; };",
			      "request_headers.set.x-a: set twice (header names are "
			      "case-insensitive, '_' reads as '-')");
	check_refused("request_headers = { set = { X-A = \"1\"; X_A = \"2\"; }; };",
		      "request_headers.set.X_A: set twice");
	check_refused("request_headers = { set = { X-A = \"1\"; }; remove = [\"x-a\"]; };",
			      "request_headers.remove.[0]: \"x-a\": also in set: a header is set or "
			      "removed, not both");
	check_refused("request_headers = { remove = [\"X-B\", \"X-b\"]; };",
			      "request_headers.remove.[1]: \"X-b\": listed twice");
	check_refused("request_headers = { remove = []; };",
			      "request_headers.remove: must be a list of 1 to 64 header names");
	check_refused("request_headers = { remove = [\"X A\"]; };",
			      "request_headers.remove.[0]: \"X A\": not a header name");
	check_refused("request_headers = { remove = [1]; };",
			      "request_headers.remove.[0]: must be a string");
	/* what the proxy writes itself */
	static const char *const managed[][2] = {
		{"Host", "set the backend's Host with host_header"},
		{"expect", "strangler passes the backend's 100 Continue on: without Expect the "
			   "backend sends none and the client waits"},
		{"Content-Length", "a hop-by-hop or framing header"},
		{"Transfer_Encoding", "a hop-by-hop or framing header"},
		{"Connection", "a hop-by-hop or framing header"},
		{"X-Forwarded-For", "strangler writes it itself"},
		{"x-request-id", "strangler writes it itself"},
		{"X-Strangler-Shadow", "strangler writes it itself"},
	};
	for (size_t i = 0; i < NELEM(managed); i++) {
		char text[256], want[256];
		snprintf(text, sizeof(text), "request_headers = { remove = [\"%s\"]; };",
			 managed[i][0]);
		snprintf(want, sizeof(want), "request_headers.remove.[0]: \"%s\": %s",
			 managed[i][0], managed[i][1]);
		check_refused(text, want);
	}
	check_refused("response_headers = { set = { Date = \"x\"; }; };",
			      "response_headers.set.Date: strangler keeps the backend's Date, or "
			      "adds one");
	check_refused("response_headers = { remove = [\"Transfer-Encoding\"]; };",
			      "response_headers.remove.[0]: \"Transfer-Encoding\": a hop-by-hop");
	/* X-Request-Id and X-Forwarded-* are the backend's own in an answer */
	struct sp_config *c = load_backend(
		"response_headers = { remove = [\"X-Request-Id\", \"X-Forwarded-For\"]; };", NULL);
	assert_int_equal(c->backends[0].resp_headers.nremove, 2);
	sp_config_unref(&c);
}

/* What a Location value v from c's backend becomes for the client, the
 * backend having been sent Host sent and the client's being public (NULL:
 * unknown), the client having come by scheme (NULL: unknown): "=" when it
 * stays. */
static void assert_location_by(const struct sp_config *c, const char *sent, const char *public,
			       const char *scheme, const char *v, const char *want)
{
	const struct sp_backend *be = &c->backends[0];
	struct sp_location_map m = {be->rewrite, be->nrewrite, sent, sent ? strlen(sent) : 0,
				    public, public ? strlen(public) : 0, scheme};
	struct sp_buf out;
	sp_buf_init(&out);
	int rc = sp_location_public(&m, v, strlen(v), &out);
	if (strcmp(want, "=") == 0) {
		if (rc != 0)
			fail_msg("%s: %s, want it as it is", v, rc < 0 ? "error" : out.data);
	} else if (rc != 1 || out.len != strlen(want) || memcmp(out.data, want, out.len) != 0) {
		fail_msg("%s: %s, want %s", v, rc != 1 ? "as it is" : out.data, want);
	}
	sp_buf_deinit(&out);
}

static void assert_location(const struct sp_config *c, const char *sent, const char *public,
			    const char *v, const char *want)
{
	assert_location_by(c, sent, public, NULL, v, want);
}

/* A path the backend names goes back through its rules to the one the
 * client used; query and fragment stay. */
static void test_a_location_names_the_public_path(void **state)
{
	(void)state;
	struct sp_config *c = load_rules("{ prefix = \"/api/v1/orders\"; to = \"/orders\"; },\n"
					 "{ prefix = \"/api/v1/\"; to = \"/\"; }",
					 NULL);
	const char *h = "shop.example";
	assert_location(c, h, h, "/orders/7", "/api/v1/orders/7");
	assert_location(c, h, h, "/orders/7?a=/orders&b#f", "/api/v1/orders/7?a=/orders&b#f");
	assert_location(c, h, h, "/orders", "/api/v1/orders");
	assert_location(c, h, h, "/orders/", "/api/v1/orders/");
	/* the longest `to` that covers it: "/orders" before "/" */
	assert_location(c, h, h, "/users/1", "/api/v1/users/1");
	assert_location(c, h, h, "/", "/api/v1/");
	assert_location(c, h, h, "/ordersX", "/api/v1/ordersX");
	/* a URL naming the Host the backend got: its path only */
	assert_location(c, h, h, "http://shop.example/orders/7", "http://shop.example/api/v1/orders/7");
	assert_location(c, h, h, "HTTPS://Shop.Example/orders?x", "HTTPS://Shop.Example/api/v1/orders?x");
	assert_location(c, h, h, "//shop.example/orders/1", "//shop.example/api/v1/orders/1");
	/* another host's, a relative reference, another scheme, a path not in
	 * normal form: as they are */
	assert_location(c, h, h, "http://elsewhere.example/orders/7", "=");
	assert_location(c, h, h, "http://user@shop.example/orders/7", "=");
	assert_location(c, h, h, "http://shop.example:8080/orders/7", "=");
	assert_location(c, h, h, "orders/7", "=");
	assert_location(c, h, h, "../orders/7", "=");
	assert_location(c, h, h, "ftp://shop.example/orders/7", "=");
	assert_location(c, h, h, "/orders//7", "=");
	assert_location(c, h, h, "/orders/./7", "=");
	assert_location(c, h, h, "/orders/%7e", "=");
	assert_location(c, h, h, "", "=");
	/* a URL naming the client's Host maps (a backend that writes its
	 * URLs from X-Forwarded-Host); without either Host, it stays; a path
	 * still maps */
	assert_location(c, NULL, h, "http://shop.example/orders/7", "http://shop.example/api/v1/orders/7");
	assert_location(c, NULL, NULL, "http://shop.example/orders/7", "=");
	assert_location(c, NULL, NULL, "/orders/7", "/api/v1/orders/7");
	sp_config_unref(&c);
}

/* Only a public path the backend would receive as this one is given back:
 * a path under a `to` that an earlier rule's prefix takes elsewhere stays. */
static void test_a_location_goes_back_only_where_it_comes_from(void **state)
{
	(void)state;
	struct sp_config *c = load_rules("{ prefix = \"/a/x\"; to = \"/y\"; },\n"
					 "{ prefix = \"/a\"; to = \"/\"; }",
					 NULL);
	/* "/x/1" back through "/" is "/a/x/1", which the first rule sends as
	 * "/y/1": no public path reaches "/x/1" */
	assert_location(c, "h", "h", "/x/1", "=");
	assert_location(c, "h", "h", "/y/1", "/a/x/1");
	assert_location(c, "h", "h", "/z", "/a/z");
	sp_config_unref(&c);
	/* "/" as prefix: the backend serves everything under "/legacy" */
	c = load_rules("{ prefix = \"/\"; to = \"/legacy\"; }", NULL);
	assert_location(c, "h", "h", "/legacy/x", "/x");
	assert_location(c, "h", "h", "/legacy", "=");
	assert_location(c, "h", "h", "/legacy/", "/");
	assert_location(c, "h", "h", "/other", "=");
	/* "/legacy/\\evil.example" would be "/\\evil.example", which a
	 * browser reads as "//evil.example": another site */
	assert_location(c, "h", "h", "/legacy/\\evil.example/", "=");
	assert_location(c, "h", "h", "/legacy/a\\b", "/a\\b");
	/* browsers drop TAB, CR and LF inside a URL: "/\t/evil.example" is
	 * "//evil.example" there. A path with a byte no request target can
	 * carry is never mapped */
	static const char *const unmapped[] = {"/legacy/\t/evil.example/", "/legacy/\r\n/evil.example/",
					       "/legacy/ /x", "/legacy/\x7f/x", "/legacy/caf\xc3\xa9"};
	for (size_t i = 0; i < sizeof(unmapped) / sizeof(unmapped[0]); i++)
		assert_location(c, "h", "h", unmapped[i], "=");
	assert_location(c, "h", "h", "/legacy/caf%C3%A9", "/caf%C3%A9");
	sp_config_unref(&c);
	/* a candidate no rule covers is sent as it is: "/api" (under no
	 * prefix) is no way to "/v2", "/old/v2" is */
	c = load_rules("{ prefix = \"/old\"; to = \"/\"; },\n"
		       "{ prefix = \"/api/\"; to = \"/v2\"; }",
		       NULL);
	assert_location(c, "h", "h", "/v2", "/old/v2");
	assert_location(c, "h", "h", "/v2/x", "/api/x");
	sp_config_unref(&c);
}

/* With host_header, the Host the backend got is the client's again. */
static void test_a_location_names_the_clients_host(void **state)
{
	(void)state;
	struct sp_config *c =
		load_backend("host_header = \"modern.internal\";\n"
			     "path_rewrite = ( { prefix = \"/api/v1/\"; to = \"/\"; } );",
			     NULL);
	const char *sent = "modern.internal", *pub = "shop.example:8443";
	assert_location(c, sent, pub, "https://modern.internal/orders/7?x",
			"https://shop.example:8443/api/v1/orders/7?x");
	assert_location(c, sent, pub, "http://MODERN.internal", "http://shop.example:8443");
	assert_location(c, sent, pub, "//modern.internal?q", "//shop.example:8443?q");
	assert_location(c, sent, pub, "/x", "/api/v1/x");
	assert_location(c, sent, pub, "http://other.internal/x", "=");
	/* a URL naming the client's Host: its path maps */
	assert_location(c, sent, pub, "https://shop.example:8443/x", "https://shop.example:8443/api/v1/x");
	/* the client's Host unknown (HTTP/1.0 without one) or empty: the
	 * backend's URL stays whole, a path maps */
	assert_location(c, sent, NULL, "http://modern.internal/x", "=");
	assert_location(c, sent, "", "http://modern.internal/x", "=");
	assert_location(c, sent, "", "//modern.internal", "=");
	assert_location(c, sent, "", "/x", "/api/v1/x");
	/* the backend's own http URL comes back as https to an https client,
	 * who was sent to http (the backend spoke plain HTTP to the proxy); an
	 * https one stays (a redirect to https: force_ssl behind the proxy
	 * would loop otherwise), so does a URL naming the client's Host, and
	 * "//" */
	assert_location_by(c, sent, pub, "https", "http://modern.internal/orders/7",
			   "https://shop.example:8443/api/v1/orders/7");
	assert_location_by(c, sent, pub, "https", "HTTP://modern.internal/x",
			   "https://shop.example:8443/api/v1/x");
	assert_location_by(c, sent, pub, "http", "https://modern.internal/x",
			   "https://shop.example:8443/api/v1/x");
	assert_location_by(c, sent, pub, "http", "http://modern.internal/x",
			   "http://shop.example:8443/api/v1/x");
	assert_location_by(c, sent, pub, "https", "http://shop.example:8443/x",
			   "http://shop.example:8443/api/v1/x");
	assert_location_by(c, sent, pub, "https", "//modern.internal/x", "//shop.example:8443/api/v1/x");
	sp_config_unref(&c);
}

/* location_rewrite: on where there is something to map, off when false;
 * a warning where it has nothing to do. */
static void test_location_rewrite_is_on_where_it_has_work(void **state)
{
	(void)state;
	int warnings = -1;
	struct sp_config *c = load_rules("{ prefix = \"/a\"; to = \"/b\"; }", &warnings);
	assert_true(c->backends[0].location_map);
	assert_true(c->keep_client_host); /* for the Location of a URL */
	sp_config_unref(&c);
	c = load_backend("host_header = \"x.internal\";", NULL);
	assert_true(c->backends[0].location_map);
	sp_config_unref(&c);
	c = load_backend("host_header = \"x.internal\"; location_rewrite = false;", &warnings);
	assert_false(c->backends[0].location_map);
	assert_int_equal(warnings, 0);
	sp_config_unref(&c);
	c = load_backend("location_rewrite = true;", &warnings);
	assert_false(c->backends[0].location_map);
	assert_int_equal(warnings, 1);
	sp_config_unref(&c);
	check_refused("location_rewrite = \"yes\";",
		      "test.conf:4: backends.legacy.location_rewrite: must be true or false");
}

/* Every Location field of an answer, each with its own value; the others
 * untouched. */
static void test_location_fields_of_a_head(void **state)
{
	(void)state;
	struct sp_config *c = load_rules("{ prefix = \"/api\"; to = \"/\"; }", NULL);
	const struct sp_backend *be = &c->backends[0];
	struct sp_location_map m = {be->rewrite, be->nrewrite, "h", 1, "h", 1, NULL};
	struct sp_hdr h[] = {{"Location", 8, "/a", 2},
			     {"Content-Location", 16, "/b", 2},
			     {"location", 8, "http://other/x", 14},
			     {"LOCATION", 8, "/ccc?q", 6}};
	struct sp_buf scratch;
	sp_buf_init(&scratch);
	assert_int_equal(sp_location_fields(&m, h, NELEM(h), &scratch), 0);
	assert_int_equal(h[0].value_len, 6);
	assert_memory_equal(h[0].value, "/api/a", 6);
	assert_memory_equal(h[1].value, "/b", 2);
	assert_memory_equal(h[2].value, "http://other/x", 14);
	assert_int_equal(h[3].value_len, 10);
	assert_memory_equal(h[3].value, "/api/ccc?q", 10);
	sp_buf_deinit(&scratch);
	sp_config_unref(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_prefix_is_replaced_at_a_segment_boundary),
		cmocka_unit_test(test_final_slashes_neither_double_nor_vanish),
		cmocka_unit_test(test_root_adds_or_removes_a_prefix),
		cmocka_unit_test(test_the_first_rule_that_covers_applies),
		cmocka_unit_test(test_escapes_go_through_as_they_are),
		cmocka_unit_test(test_bad_rules_are_refused_with_their_place),
		cmocka_unit_test(test_repath_changes_only_the_path),
		cmocka_unit_test(test_header_rules_on_a_request_head),
		cmocka_unit_test(test_header_rules_on_a_response_head),
		cmocka_unit_test(test_header_rules_with_variables),
		cmocka_unit_test(test_bad_header_rules_are_refused_with_their_place),
		cmocka_unit_test(test_a_location_names_the_public_path),
		cmocka_unit_test(test_a_location_goes_back_only_where_it_comes_from),
		cmocka_unit_test(test_a_location_names_the_clients_host),
		cmocka_unit_test(test_location_rewrite_is_on_where_it_has_work),
		cmocka_unit_test(test_location_fields_of_a_head),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
