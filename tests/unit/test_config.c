/* Unit tests of proxy/config.c and proxy/route_conf.c: every bad setting is
 * reported as "FILE:LINE: path: reason", all errors are collected in one pass,
 * warnings do not stop loading, and a valid file loads with the right values. */
#include "unit.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"

/* Lines 1-6 of most test configs; what a test appends starts on line 7. */
#define L_LISTEN "listen = ( { address = \"127.0.0.1:8080\"; } );\n" /* 1 */
#define L_BACKENDS                                                            \
	"backends = {\n"                                    /* 2 */           \
	"  legacy = { url = \"http://127.0.0.1:9001\"; };\n" /* 3 */           \
	"  modern = { url = \"http://127.0.0.1:9002\"; };\n" /* 4 */           \
	"};\n"                                              /* 5 */
#define L_DEFAULT "default_backend = \"legacy\";\n"         /* 6 */
#define BASE L_LISTEN L_BACKENDS L_DEFAULT

/* A config whose only backend (line 3) has the given settings. */
#define ONE_BACKEND(settings)                                                  \
	L_LISTEN "backends = {\n  legacy = { " settings " };\n};\n" L_DEFAULT

/* A config with one route "r" on line 8 (routes opens on line 7). */
#define ONE_ROUTE(body) BASE "routes = (\n  { name = \"r\"; " body " }\n);\n"

/* A route on line 8 whose rollout holds the given settings. */
#define ONE_ROLLOUT(settings) \
	ONE_ROUTE("backend = \"legacy\"; rollout = { backend = \"modern\"; " settings " };")

/* A route on line 8 whose match holds the given settings. */
#define ONE_MATCH(settings) ONE_ROUTE("backend = \"legacy\"; match = { " settings " };")


/* Loads text that must succeed with nwarnings warnings, each of msgs a line. */
static struct sp_config *check_warned(const char *text, int nwarnings, const char *const *msgs,
				      size_t n, int line)
{
	struct sp_diag d;
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load_string(text, TEST_CONF, &d);
	const char *out = d.text.data ? d.text.data : "";
	int ok = unit_has_lines(out, msgs, n) && c != NULL && d.errors == 0 &&
		 d.warnings == nwarnings;
	if (!ok)
		print_error("test line %d: config %s, %d errors, %d warnings:\n%s---\n%s\n", line,
			    c ? "loaded" : "REJECTED", d.errors, d.warnings, out, text);
	sp_diag_deinit(&d);
	if (!ok)
		sp_config_unref(&c);
	assert_true(ok);
	return c;
}

#define WARNED(text, nwarn, ...) \
	check_warned((text), (nwarn), MSGS(__VA_ARGS__), NELEM(MSGS(__VA_ARGS__)), __LINE__)

static void test_error_unknown_setting_top_level(void **state)
{
	(void)state;
	REJECTED(BASE "colour = \"blue\";\n", 1, "test.conf:7: colour: unknown setting");
}

static void test_error_unknown_setting_in_sections(void **state)
{
	(void)state;
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; retries = 3;"), 1,
		 "test.conf:3: backends.legacy.retries: unknown setting");
	REJECTED(ONE_ROUTE("backend = \"legacy\"; weight = 3;"), 1,
		 "test.conf:8: routes.[0].weight: unknown setting");
	REJECTED(ONE_MATCH("path_prefix = \"/a\"; scheme = \"https\";"), 1,
		 "test.conf:8: routes.[0].match.scheme: unknown setting");
	REJECTED(ONE_ROLLOUT("percent = 5; seed = 1;"), 1,
		 "test.conf:8: routes.[0].rollout.seed: unknown setting");
	REJECTED("listen = ( { address = \"127.0.0.1:8080\"; port = 1; } );\n" L_BACKENDS L_DEFAULT,
		 1, "test.conf:1: listen.[0].port: unknown setting");
	REJECTED(BASE "timeouts = {\n  client_header_ms = 100;\n  idle_ms = 3;\n};\n", 1,
		 "test.conf:9: timeouts.idle_ms: unknown setting");
	REJECTED(BASE "limits = { max_uri = 3; };\n", 1, "test.conf:7: limits.max_uri: unknown setting");
}

static void test_error_unknown_backend(void **state)
{
	(void)state;
	REJECTED(ONE_ROUTE("backend = \"nope\";"), 1,
		 "test.conf:8: routes.[0].backend: unknown backend \"nope\"");
	REJECTED(BASE "routes = (\n  { name = \"r\";\n    backend = \"Legacy\"; }\n);\n", 1,
		 "test.conf:9: routes.[0].backend: unknown backend \"Legacy\"");
	REJECTED(ONE_ROUTE("backend = \"legacy\";\n"
			   "    rollout = { backend = \"nope\"; percent = 5; };"),
		 1, "test.conf:9: routes.[0].rollout.backend: unknown backend \"nope\"");
	REJECTED(L_LISTEN L_BACKENDS "default_backend = \"nope\";\n", 1,
		 "test.conf:6: default_backend: unknown backend \"nope\"");
	/* Required references. */
	REJECTED(ONE_ROUTE("match = { path = \"/x\"; };"), 1, "test.conf:8: routes.[0].backend: required");
	REJECTED(ONE_ROUTE("backend = \"legacy\"; rollout = { percent = 5; };"), 1,
		 "test.conf:8: routes.[0].rollout.backend: required");
	REJECTED(L_LISTEN L_BACKENDS, 1, "test.conf: default_backend: required");
}

static void test_error_bad_url(void **state)
{
	(void)state;
	REJECTED(ONE_BACKEND("url = \"127.0.0.1:9001\";"), 1,
		 "test.conf:3: backends.legacy.url: \"127.0.0.1:9001\": must start with http:// or https://");
	REJECTED(ONE_BACKEND("url = \"ftp://127.0.0.1:9001\";"), 1,
		 "test.conf:3: backends.legacy.url: \"ftp://127.0.0.1:9001\": must start with http:// or https://");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001/api\";"), 1,
		 "test.conf:3: backends.legacy.url: \"http://127.0.0.1:9001/api\": must not carry a "
		 "path, query or fragment (the request path is forwarded as is)");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001?a=1\";"), 1,
		 "test.conf:3: backends.legacy.url: \"http://127.0.0.1:9001?a=1\": must not carry a "
		 "path, query or fragment (the request path is forwarded as is)");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:0\";"), 1,
		 "test.conf:3: backends.legacy.url: \"http://127.0.0.1:0\": port must be a number "
		 "between 1 and 65535");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:65536\";"), 1,
		 "test.conf:3: backends.legacy.url: \"http://127.0.0.1:65536\": port must be a number "
		 "between 1 and 65535");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:http\";"), 1,
		 "test.conf:3: backends.legacy.url: \"http://127.0.0.1:http\": port must be a number "
		 "between 1 and 65535");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:\";"), 1,
		 "test.conf:3: backends.legacy.url: \"http://127.0.0.1:\": port must be a number "
		 "between 1 and 65535");
	/* digits only (strtol took these, and the text went into Host headers) */
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1: 80\";"), 1, "test.conf:3: *");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:+80\";"), 1, "test.conf:3: *");
	struct sp_config *c = unit_load_ok(ONE_BACKEND("url = \"http://127.0.0.1:0080\";"), NULL);
	sp_config_unref(&c);
	REJECTED(ONE_BACKEND("url = \"https://127.0.0.1:9001\"; tls_verify = 1;"), 1,
		 "test.conf:3: backends.legacy.tls_verify: must be true or false");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; tls_verify = false;"), 1,
		 "test.conf:3: backends.legacy: TLS settings need an https:// url");
	REJECTED(ONE_BACKEND("url = \"http://\";"), 1,
		 "test.conf:3: backends.legacy.url: \"http://\": missing host");
	REJECTED(ONE_BACKEND("url = \"http://u:p@127.0.0.1:9001\";"), 1,
		 "test.conf:3: backends.legacy.url: \"http://u:p@127.0.0.1:9001\": user information in "
		 "the URL is not supported");
	REJECTED(ONE_BACKEND("max_idle = 3;"), 1,
		 "test.conf:3: backends.legacy.url: required (or servers, a list of URLs)");
}

/* servers = [...]: several servers for one backend, each checked as a url. */
static void test_servers(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(
		ONE_BACKEND("servers = [\"http://127.0.0.1:9001\", \"http://localhost:9003/\", "
			    "\"http://[::1]\"];"),
		NULL);
	const struct sp_backend *b = &c->backends[0];
	assert_int_equal(b->nservers, 3);
	assert_string_equal(b->servers[0].hostport, "127.0.0.1:9001");
	assert_string_equal(b->servers[1].url, "http://localhost:9003/");
	assert_string_equal(b->servers[1].host, "localhost");
	assert_string_equal(b->servers[2].host, "::1");
	assert_string_equal(b->servers[2].hostport, "[::1]:80");
	assert_int_equal(ntohs(((struct sockaddr_in *)&b->servers[0].addr)->sin_port), 9001);
	assert_int_equal(ntohs(((struct sockaddr_in *)&b->servers[1].addr)->sin_port), 9003);
	assert_int_equal(b->servers[2].addr.ss_family, AF_INET6);
	sp_config_unref(&c);
	c = unit_load_ok(ONE_BACKEND("url = \"http://127.0.0.1:9001\";"), NULL);
	assert_int_equal(c->backends[0].nservers, 1);
	sp_config_unref(&c);

	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; servers = [\"http://127.0.0.1:9002\"];"),
		 1, "test.conf:3: backends.legacy: url and servers: give one or the other");
	REJECTED(ONE_BACKEND("servers = [];"), 1, "test.conf:3: backends.legacy.servers: at least one URL");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; balance = \"random\";"), 1,
		 "test.conf:3: backends.legacy.balance: \"random\": must be \"round_robin\" or "
		 "\"least_conn\"");
#define NOT_A_LIST                                                                         \
	"test.conf:3: backends.legacy.servers: must be a list of URLs, or of groups for servers " \
	"with settings: [\"http://10.0.0.1:9001\", \"http://10.0.0.2:9001\"] or ( { url = "     \
	"\"http://10.0.0.1:9001\"; weight = 3; }, \"http://10.0.0.2:9001\" )"
	REJECTED(ONE_BACKEND("servers = \"http://127.0.0.1:9001\";"), 1, NOT_A_LIST);
	REJECTED(ONE_BACKEND("servers = [1, 2];"), 1, NOT_A_LIST);
	REJECTED(ONE_BACKEND("servers = ( \"http://127.0.0.1:9001\", 2 );"), 1, NOT_A_LIST);
#undef NOT_A_LIST
	/* servers with settings: weight and backup, in groups, strings between */
	c = unit_load_ok(ONE_BACKEND("servers = ( { url = \"http://127.0.0.1:9001\"; weight = 5; },\n"
				     "  \"http://127.0.0.1:9002\",\n"
				     "  { url = \"http://127.0.0.1:9003\"; backup = true; } );"),
			 NULL);
	b = &c->backends[0];
	assert_int_equal(b->nservers, 3);
	assert_true(b->weighted);
	assert_int_equal(b->servers[0].weight, 5);
	assert_int_equal(b->servers[1].weight, 1);
	assert_false(b->servers[1].backup);
	assert_true(b->servers[2].backup);
	assert_string_equal(b->servers[2].hostport, "127.0.0.1:9003");
	sp_config_unref(&c);
	c = unit_load_ok(ONE_BACKEND("servers = ( { url = \"http://127.0.0.1:9001\"; weight = 1; "
				     "backup = false; }, \"http://127.0.0.1:9002\" );"),
			 NULL);
	assert_false(c->backends[0].weighted); /* as written without settings */
	sp_config_unref(&c);
	REJECTED(ONE_BACKEND("servers = ( { weight = 2; } );"), 1,
		 "test.conf:3: backends.legacy.servers.[0].url: required");
	REJECTED(ONE_BACKEND("servers = ( { url = \"http://127.0.0.1:9001\"; weight = 0; } );"), 1,
		 "test.conf:3: backends.legacy.servers.[0].weight: must be between 1 and 1000");
	REJECTED(ONE_BACKEND("servers = ( { url = \"http://127.0.0.1:9001\"; weight = 1001; } );"), 1,
		 "test.conf:3: backends.legacy.servers.[0].weight: must be between 1 and 1000");
	REJECTED(ONE_BACKEND("servers = ( { url = \"http://127.0.0.1:9001\"; backup = 1; } );"), 1,
		 "test.conf:3: backends.legacy.servers.[0].backup: must be true or false");
	REJECTED(ONE_BACKEND("servers = ( { url = \"http://127.0.0.1:9001\"; wieght = 2; } );"), 1,
		 "test.conf:3: backends.legacy.servers.[0].wieght: unknown setting");
	REJECTED(ONE_BACKEND("servers = ( { url = \"ftp://x\"; } );"), 1,
		 "test.conf:3: backends.legacy.servers.[0].url: \"ftp://x\": must start with http:// "
		 "or https://");
	REJECTED(ONE_BACKEND("servers = ( { url = \"http://127.0.0.1:9001\"; backup = true; } );"),
		 1, "test.conf:3: backends.legacy.servers: every server is a backup: at least one must "
		    "not be");
	REJECTED(ONE_BACKEND("servers = ( \"http://127.0.0.1:9001\", { url = \"http://127.0.0.1:9001\"; "
			     "backup = true; } );"),
		 1, "test.conf:3: backends.legacy.servers.[1].url: \"http://127.0.0.1:9001\": the same "
		    "server as servers.[0]");
	REJECTED(ONE_BACKEND("servers = [\"http://127.0.0.1:9001\", \"ftp://127.0.0.1:9002\"];"), 1,
		 "test.conf:3: backends.legacy.servers.[1]: \"ftp://127.0.0.1:9002\": must start with "
		 "http:// or https://");
	REJECTED(ONE_BACKEND("servers = [\"http://127.0.0.1:9001\", \"https://127.0.0.1:9002\"];"), 1,
		 "test.conf:3: backends.legacy.servers.[1]: \"https://127.0.0.1:9002\": http:// and "
		 "https:// servers mixed in one backend");
	REJECTED(ONE_BACKEND("servers = [\"http://127.0.0.1:80\", \"http://127.0.0.1/\"];"), 1,
		 "test.conf:3: backends.legacy.servers.[1]: \"http://127.0.0.1/\": the same server as "
		 "servers.[0]");
	/* written apart, one address */
	REJECTED(ONE_BACKEND("servers = [\"http://127.0.0.1:9001\", \"http://127.0.0.2:9001\", "
			     "\"http://localhost:9001\"];"),
		 1, "test.conf:3: backends.legacy.servers.[2]: \"http://localhost:9001\": the same "
		    "server as servers.[0]");
	/* inet_aton's shorthands are other addresses than written (127.0.0.010
	 * went to 127.0.0.8): refused, in a URL and in a listen address */
	static const char *const shorthands[] = {"127.1", "127.0.0.010", "10.0.5", "2130706433",
						 "0x7f.0.0.1", "192.168.001.010"};
	for (size_t i = 0; i < NELEM(shorthands); i++) {
		char text[512], want[512];
		snprintf(text, sizeof(text), ONE_BACKEND("url = \"http://%s:9001\";"), shorthands[i]);
		snprintf(want, sizeof(want),
			 "test.conf:3: backends.legacy.url: \"http://%s:9001\": not an IPv4 address as "
			 "written: four numbers 0-255 without leading zeros*",
			 shorthands[i]);
		REJECTED(text, 1, want);
	}
	REJECTED("listen = ( { address = \"127.1:8080\"; } );\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen.[0].address: \"127.1:8080\": not an IPv4 address as written*");
	/* inet_aton takes a trailing blank too: a typo, said as one */
	REJECTED("listen = ( { address = \"127.0.0.1 :8080\"; } );\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen.[0].address: \"127.0.0.1 :8080\": a blank in the host");
	REJECTED("listen = ( { address = \"[::ffff:127.0.0.1]:8080\"; } );\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen.[0].address: \"[::ffff:127.0.0.1]:8080\": an IPv4-mapped IPv6 "
		 "address*");
	/* host_header: a Host a client could send, with a host and a real port */
	static const char *const good_hosts[] = {"orders.internal", "orders.internal:8443",
						 "10.0.0.1:80", "[::1]:8443", "[fd00::1]", "a_b-c"};
	for (size_t i = 0; i < NELEM(good_hosts); i++) {
		char text[512];
		snprintf(text, sizeof(text),
			 ONE_BACKEND("url = \"http://127.0.0.1:9001\"; host_header = \"%s\";"),
			 good_hosts[i]);
		c = unit_load_ok(text, NULL);
		assert_string_equal(c->backends[0].host_header, good_hosts[i]);
		assert_true(c->host_headers);
		sp_config_unref(&c);
	}
	static const char *const bad_hosts[] = {"",    "a b", "[",	  ":::",   "a:b:c", "x:99999",
						"]x[", ".",   "host:", "a]:80", "x:0",   "a/b"};
	for (size_t i = 0; i < NELEM(bad_hosts); i++) {
		char text[512], want[256];
		snprintf(text, sizeof(text),
			 ONE_BACKEND("url = \"http://127.0.0.1:9001\"; host_header = \"%s\";"),
			 bad_hosts[i]);
		snprintf(want, sizeof(want),
			 "test.conf:3: backends.legacy.host_header: \"%s\": must be a host name or "
			 "address, with an optional port (at most 255 characters)",
			 bad_hosts[i]);
		unit_rejected(text, 1, MSGS(want), 1, __LINE__);
	}
	c = unit_load_ok(ONE_BACKEND("url = \"http://127.0.0.1:9001\";"), NULL);
	assert_false(c->host_headers);
	sp_config_unref(&c);
	/* an https:// backend's TLS settings apply to all its servers */
	REJECTED(ONE_BACKEND("servers = [\"http://127.0.0.1:9001\"]; tls_verify = false;"), 1,
		 "test.conf:3: backends.legacy: TLS settings need an https:// url");
	struct sp_buf big;
	sp_buf_init(&big);
	sp_buf_adds(&big, L_LISTEN "backends = {\n  legacy = { servers = [");
	for (int i = 0; i <= SP_SERVERS_MAX; i++)
		sp_buf_printf(&big, "%s\"http://127.0.0.1:%d\"", i ? ", " : "", 9000 + i);
	sp_buf_adds(&big, "]; };\n};\n" L_DEFAULT);
	unit_rejected(big.data, 1, MSGS("test.conf:3: backends.legacy.servers: at most 64 servers"), 1,
		       __LINE__);
	sp_buf_deinit(&big);
}

/* retry_on_status: statuses 400 to 599, each once; a bit each, at the edges
 * too, and nothing outside them. */
static void test_retry_on_status(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(
		ONE_BACKEND("servers = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"]; "
			    "retry_on_status = [400, 463, 464, 527, 528, 599];"),
		NULL);
	const struct sp_backend *b = &c->backends[0];
	static const int on[] = {400, 463, 464, 527, 528, 599};
	int n = 0;
	for (int st = 0; st < 1000; st++)
		n += sp_backend_retries_status(b, st);
	assert_int_equal(n, (int)NELEM(on));
	for (size_t i = 0; i < NELEM(on); i++)
		assert_true(sp_backend_retries_status(b, on[i]));
	assert_false(sp_backend_retries_status(b, 600));
	assert_false(sp_backend_retries_status(b, -2147483647 - 1));
	sp_config_unref(&c);
	c = unit_load_ok(ONE_BACKEND("url = \"http://127.0.0.1:9001\";"), NULL);
	for (int st = 100; st < 700; st++)
		assert_false(sp_backend_retries_status(&c->backends[0], st));
	sp_config_unref(&c);
#define TWO "servers = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"]; "
	REJECTED(ONE_BACKEND(TWO "retry_on_status = (399, 600, 503.0, \"503\");"), 4,
		 "test.conf:3: backends.legacy.retry_on_status.[0]: must be a status from 400 to 599",
		 "test.conf:3: backends.legacy.retry_on_status.[1]: must be a status from 400 to 599",
		 "test.conf:3: backends.legacy.retry_on_status.[2]: must be a status from 400 to 599",
		 "test.conf:3: backends.legacy.retry_on_status.[3]: must be a status from 400 to 599");
	REJECTED(ONE_BACKEND(TWO "retry_on_status = 503;"), 1,
		 "test.conf:3: backends.legacy.retry_on_status: must be a list of statuses: [502, "
		 "503, 504]");
	/* per_try_timeout_ms: off unless given; 0 is off and draws no warning */
	int warnings = -1;
	c = unit_load_ok(ONE_BACKEND(TWO "per_try_timeout_ms = 700;"), &warnings);
	assert_int_equal(c->backends[0].per_try_timeout_ms, 700);
	assert_int_equal(warnings, 0);
	sp_config_unref(&c);
	c = unit_load_ok(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; per_try_timeout_ms = 0;"),
			 &warnings);
	assert_int_equal(c->backends[0].per_try_timeout_ms, 0);
	assert_int_equal(warnings, 0);
	sp_config_unref(&c);
	REJECTED(ONE_BACKEND(TWO "per_try_timeout_ms = 86400001;"), 1,
		 "test.conf:3: backends.legacy.per_try_timeout_ms: must be between 0 and 86400000");
#undef TWO
}

/* BUG (proxy/config.c, parse_url): "http://:9001" has an empty host but passes
 * the `hl == 0` check (hl counts the ":9001"), and getaddrinfo(NULL, ...) then
 * resolves it to the loopback address, so the config loads with a backend on
 * 127.0.0.1:9001 instead of reporting "missing host". */
static void test_error_url_empty_host(void **state)
{
	(void)state;
	REJECTED(ONE_BACKEND("url = \"http://:9001\";"), 1,
		 "test.conf:3: backends.legacy.url: \"http://:9001\": missing host");
}

/* A guard's steps climb strictly above 0 % (a step to 0 % or a repeated step
 * would hold the rollout where it is for ever); its window is at least 5 s. */
static void test_guard_steps_and_window_checked(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(
		ONE_ROLLOUT("percent = 1; guard = { max_error_rate = 1; window_s = 5; "
			    "steps = [ 0.5, 10.0, 100.0 ]; };"),
		NULL);
	const struct sp_guard_cfg *g = &c->routes[0].rollout.guard;
	assert_int_equal(g->window_s, 5);
	assert_int_equal(g->nsteps, 3);
	assert_int_equal(g->steps_bp[0], 50);
	assert_int_equal(g->steps_bp[1], 1000);
	assert_int_equal(g->steps_bp[2], 10000);
	sp_config_unref(&c);
	REJECTED(ONE_ROLLOUT("percent = 1; guard = { max_error_rate = 1; steps = [ 10.0, 10.0 ]; };"),
		 1, "test.conf:8: routes.[0].rollout.guard.steps.[1]: steps must increase");
	REJECTED(ONE_ROLLOUT("percent = 1; guard = { max_error_rate = 1; steps = [ 20.0, 10.0 ]; };"),
		 1, "test.conf:8: routes.[0].rollout.guard.steps.[1]: steps must increase");
	REJECTED(ONE_ROLLOUT("percent = 1; guard = { max_error_rate = 1; steps = [ 0.0, 10.0 ]; };"),
		 1, "test.conf:8: routes.[0].rollout.guard.steps.[0]: must be a percent above 0 and "
		    "at most 100, two decimals");
	REJECTED(ONE_ROLLOUT("percent = 1; guard = { max_error_rate = 1; steps = [ 100.5 ]; };"),
		 1, "test.conf:8: routes.[0].rollout.guard.steps.[0]: must be a percent above 0 and "
		    "at most 100, two decimals");
	REJECTED(ONE_ROLLOUT("percent = 1; guard = { max_error_rate = 1; window_s = 4; };"), 1,
		 "test.conf:8: routes.[0].rollout.guard.window_s: must be between 5 and 86400");
}

/* A guard with no bound watches nothing (and would take its steps to 100 %
 * whatever happens): it loads, with a warning. */
static void test_guard_without_bounds_warns(void **state)
{
	(void)state;
	struct sp_config *c = WARNED(
		ONE_ROLLOUT("percent = 1; guard = { steps = [ 5, 100 ]; };"), 1,
		"test.conf:8: warning: routes.[0].rollout.guard: no max_error_rate, max_diff_rate "
		"or max_p99_ratio: it watches nothing and takes its steps whatever happens");
	sp_config_unref(&c);
	c = WARNED(ONE_ROLLOUT("percent = 1; guard = { min_requests = 10; };"), 1,
		   "test.conf:8: warning: routes.[0].rollout.guard: no max_error_rate, max_diff_rate "
		   "or max_p99_ratio: it watches nothing");
	sp_config_unref(&c);
	/* bounds out of range are errors, and no "watches nothing" besides */
	REJECTED(ONE_ROLLOUT("percent = 1; guard = { max_error_rate = 100.5; max_p99_ratio = "
			     "1000.1; };"),
		 2, "test.conf:8: routes.[0].rollout.guard.max_error_rate: *");
	struct sp_diag d;
	sp_diag_init(&d);
	assert_null(sp_config_load_string(
		ONE_ROLLOUT("percent = 1; guard = { max_error_rate = 100.5; };"), TEST_CONF, &d));
	assert_int_equal(d.warnings, 0);
	sp_diag_deinit(&d);
	/* steps = [] passed silently: what was meant? */
	REJECTED(ONE_ROLLOUT("percent = 1; guard = { max_error_rate = 1.0; steps = []; };"), 1,
		 "test.conf:8: routes.[0].rollout.guard.steps: an empty list: give the percents, "
		 "[1, 5, 25, 50, 100], or leave steps out");
}

/* shadow_defaults with a diff log on line 7; a route "r" on line 9 whose
 * shadow holds the given settings. */
#define ONE_SHADOW(route, settings)                                              \
	BASE "shadow_defaults = { diff_log = \"-\"; };\n"                          \
	     "routes = (\n  { name = \"r\"; backend = \"legacy\"; " route " shadow = { " \
	     settings " }; }\n);\n"

/* The documented defaults of a shadow (docs/configuration.md), and the
 * settings a shadow is refused for. */
static void test_shadow_defaults_and_errors(void **state)
{
	(void)state;
	int warnings = -1;
	struct sp_config *c = unit_load_ok(ONE_SHADOW("", "backend = \"modern\";"), &warnings);
	const struct sp_shadow_cfg *sh = &c->routes[0].shadow;
	assert_int_equal(warnings, 0);
	assert_int_equal(sh->backend, 1);
	assert_int_equal(sh->percent_bp, 10000);
	assert_int_equal(sh->noise_samples, 0);
	assert_int_equal(sh->nmethods, 3); /* only safe methods unless listed */
	assert_string_equal(sh->methods[0], "GET");
	assert_string_equal(sh->methods[1], "HEAD");
	assert_string_equal(sh->methods[2], "OPTIONS");
	sp_config_unref(&c);
	/* "@other" is the rollout side that did not serve: without a rollout
	 * there is none */
	REJECTED(ONE_SHADOW("", "backend = \"@other\";"), 1,
		 "test.conf:9: routes.[0].shadow.backend: \"@other\" needs a rollout on the route "
		 "(it shadows to the side that did not serve)");
	c = unit_load_ok(ONE_SHADOW("rollout = { backend = \"modern\"; percent = 5; };",
				    "backend = \"@other\"; noise = { samples = 1; };"),
			 NULL);
	assert_int_equal(c->routes[0].shadow.backend, SP_SHADOW_OTHER);
	assert_int_equal(c->routes[0].shadow.noise_samples, 1);
	sp_config_unref(&c);
	REJECTED(ONE_SHADOW("", "backend = \"modern\"; noise = { samples = 2; };"), 1,
		 "test.conf:9: routes.[0].shadow.noise.samples: must be between 0 and 1");
	REJECTED(ONE_SHADOW("", "backend = \"nosuch\";"), 1,
		 "test.conf:9: routes.[0].shadow.backend: unknown backend \"nosuch\"");
}

static void test_error_percent(void **state)
{
	(void)state;
	REJECTED(ONE_ROLLOUT("percent = 100.5;"), 1,
		 "test.conf:8: routes.[0].rollout.percent: 100.5: must be between 0 and 100");
	REJECTED(ONE_ROLLOUT("percent = 101;"), 1,
		 "test.conf:8: routes.[0].rollout.percent: 101: must be between 0 and 100");
	/* the value as written, not %g's six digits ("100: must be between 0 and 100") */
	REJECTED(ONE_ROLLOUT("percent = 100.0000001;"), 1,
		 "test.conf:8: routes.[0].rollout.percent: 100.0000001: must be between 0 and 100");
	REJECTED(ONE_ROLLOUT("percent = 0.5; guard = { max_error_rate = 100.0000001; };"), 1,
		 "test.conf:8: routes.[0].rollout.guard.max_error_rate: 100.0000001: must be between "
		 "0 and 100");
	REJECTED(ONE_ROLLOUT("percent = -1.0;"), 1,
		 "test.conf:8: routes.[0].rollout.percent: -1: must be between 0 and 100");
	REJECTED(ONE_ROLLOUT("percent = 12.345;"), 1,
		 "test.conf:8: routes.[0].rollout.percent: 12.345: at most two decimals (the split "
		 "has 10000 buckets)");
	REJECTED(ONE_ROLLOUT("percent = 0.001;"), 1,
		 "test.conf:8: routes.[0].rollout.percent: 0.001: at most two decimals (the split "
		 "has 10000 buckets)");
	REJECTED(ONE_ROLLOUT("percent = \"25\";"), 1,
		 "test.conf:8: routes.[0].rollout.percent: must be a number");
	REJECTED(ONE_ROLLOUT("sticky = \"client_ip\";"), 1,
		 "test.conf:8: routes.[0].rollout.percent: required");
}

static void test_error_duplicate_route_name(void **state)
{
	(void)state;
	REJECTED(BASE "routes = (\n"
		      "  { name = \"r\"; match = { path = \"/a\"; }; backend = \"legacy\"; },\n"
		      "  { name = \"s\"; match = { path = \"/b\"; }; backend = \"legacy\"; },\n"
		      "  { name = \"r\"; match = { path = \"/c\"; }; backend = \"modern\"; }\n"
		      ");\n",
		 1, "test.conf:10: routes.[2].name: duplicate route name \"r\" (first at line 8)");
	REJECTED(BASE "routes = ( { name = \"\"; backend = \"legacy\"; } );\n", 1,
		 "test.conf:7: routes.[0].name: must be 1 to 64 characters of UTF-8 text");
	REJECTED(BASE "routes = ( { name = \"" "0123456789012345678901234567890123456789"
		 "0123456789012345678901234\"; backend = \"legacy\"; } );\n", 1,
		 "test.conf:7: routes.[0].name: must be 1 to 64 characters of UTF-8 text");
	REJECTED(BASE "routes = ( { backend = \"legacy\"; } );\n", 1,
		 "test.conf:7: routes.[0].name: required");
	/* characters, not bytes: 64 two-byte characters are fine, 65 are not */
	char text[1024], name[300] = "";
	for (int i = 0; i < 64; i++)
		strcat(name, "\xc3\xa9");
	snprintf(text, sizeof(text), BASE "routes = ( { name = \"%s\"; backend = \"legacy\"; } );\n",
		 name);
	struct sp_config *c = unit_load_ok(text, NULL);
	sp_config_unref(&c);
	snprintf(text, sizeof(text), BASE "routes = ( { name = \"%s\xc3\xa9\"; backend = \"legacy\"; } );\n",
		 name);
	REJECTED(text, 1, "test.conf:7: routes.[0].name: must be 1 to 64 characters of UTF-8 text");
	/* not UTF-8 (a file saved as Latin-1; an overlong "/"; a surrogate) or a
	 * control character: the name goes into JSON, metrics labels and URLs */
	static const char *const bad[] = {"r\xe9servations", "a\xc0\xaf" "b", "a\xed\xa0\x80" "b",
					  "a\x7f", "a\tb", "\xf4\x90\x80\x80", "\xe2\x82"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text),
			 BASE "routes = ( { name = \"%s\"; backend = \"legacy\"; } );\n", bad[i]);
		/* bytes that are not UTF-8 are named as in any string */
		REJECTED(text, 1, "test.conf:7: routes.[0].name: must be *");
	}
	/* 4-byte characters: 64 of them (256 bytes) are a name like any other */
	name[0] = '\0';
	for (int i = 0; i < 64; i++)
		strcat(name, "\xf0\x9f\x8c\xb3");
	snprintf(text, sizeof(text), BASE "routes = ( { name = \"%s\"; backend = \"legacy\"; } );\n",
		 name);
	c = unit_load_ok(text, NULL);
	sp_config_unref(&c);
	/* the metrics' name for the default backend's traffic */
	REJECTED(BASE "routes = ( { name = \"(default)\"; backend = \"legacy\"; } );\n", 1,
		 "test.conf:7: routes.[0].name: \"(default)\" is reserved for the default backend's "
		 "traffic");
	/* a backend's name is held like a route's */
	REJECTED(L_LISTEN "backends = { legacy = { url = \"http://127.0.0.1:1\"; };\n"
			  "  b0123456789012345678901234567890123456789012345678901234567890123 = "
			  "{ url = \"http://127.0.0.1:2\"; }; };\n" L_DEFAULT,
		 1, "test.conf:3: backends.b0123456789012345678901234567890123456789012345678901234567890123: "
		    "a backend's name must be at most 64 characters");
	/* libconfig takes '*' in a name: not a backend's (docs, API paths, labels) */
	REJECTED(L_LISTEN "backends = { legacy = { url = \"http://127.0.0.1:1\"; };\n"
			  "  mod*ern = { url = \"http://127.0.0.1:2\"; }; };\n" L_DEFAULT,
		 1, "test.conf:3: backends.mod*ern: a backend's name is a letter, then letters, "
		    "digits, '-' and '_'");
	/* an empty methods list would read as "all" to some and "none" to others */
	REJECTED(ONE_MATCH("methods = [];"), 1,
		 "test.conf:8: routes.[0].match.methods: must list at least one method: "
		 "[\"GET\", \"HEAD\"] (or leave it out)");
}

/* A pattern is refused past 1024 characters (regcomp's memory), not at
 * 1024. */
static void test_regex_length_bound(void **state)
{
	(void)state;
	char re[1100], text[1400], msg[1200];
	re[0] = '/';
	memset(re + 1, 'a', 1023);
	re[1024] = '\0';
	snprintf(text, sizeof(text), ONE_MATCH("path_regex = \"%s\";"), re);
	struct sp_config *c = unit_load_ok(text, NULL);
	assert_string_equal(c->routes[0].match.path_regex, re);
	sp_config_unref(&c);
	strcat(re, "a");
	snprintf(text, sizeof(text), ONE_MATCH("path_regex = \"%s\";"), re);
	snprintf(msg, sizeof(msg),
		 "test.conf:8: routes.[0].match.path_regex: \"%s\": longer than 1024 characters", re);
	REJECTED(text, 1, msg);
}

/* Two listeners that would take the same connections (the same address,
 * or a wildcard's port), or one that takes the admin API's, are refused:
 * both bound (SO_REUSEPORT) and the kernel spread connections between them
 * (plain requests reached a proxy_protocol copy, admin calls the backend). */
static void test_listen_addresses_do_not_overlap(void **state)
{
	(void)state;
	REJECTED("listen = ( { address = \"127.0.0.1:8080\"; },\n"
		 "  { address = \"127.0.0.1:8080\"; proxy_protocol = true; } );\n" L_BACKENDS L_DEFAULT,
		 1, "test.conf:2: listen: \"127.0.0.1:8080\" takes the connections of \"127.0.0.1:8080\" "
		    "(test.conf:1) too: write each address once");
	REJECTED("listen = ( { address = \"0.0.0.0:8080\"; },\n"
		 "  { address = \"[::]:8081\"; }, { address = \"[::1]:8081\"; },\n"
		 "  { address = \"127.0.0.2:8080\"; } );\n" L_BACKENDS L_DEFAULT,
		 2, "test.conf:2: listen: \"[::1]:8081\" takes the connections of \"[::]:8081\" "
		    "(test.conf:2) too: write each address once",
		 "test.conf:3: listen: \"127.0.0.2:8080\" takes the connections of \"0.0.0.0:8080\" "
		 "(test.conf:1) too: write each address once");
	REJECTED(BASE "admin = { address = \"127.0.0.1:8080\"; state_file = \"/tmp/s\"; };\n", 1,
		 "test.conf:1: listen: \"127.0.0.1:8080\" takes the connections of admin.address "
		 "\"127.0.0.1:8080\" (test.conf:7) too: give the admin API a port of its own");
	/* other ports, other addresses, other families: fine */
	struct sp_config *c = unit_load_ok("listen = ( { address = \"127.0.0.1:8080\"; },\n"
					   "  { address = \"127.0.0.2:8080\"; }, { address = \"[::1]:8080\"; },\n"
					   "  { address = \"0.0.0.0:8081\"; } );\n" L_BACKENDS L_DEFAULT
					   "admin = { address = \"127.0.0.1:9901\"; state_file = \"/tmp/s\"; };\n",
					   NULL);
	assert_int_equal(c->nlisten, 4);
	sp_config_unref(&c);
}

static void test_error_bad_regex(void **state)
{
	(void)state;
	/* PCRE's escapes (nginx's regular expressions) are refused, not read
	 * as POSIX does: "\\d" as the letter d, "[\\d]" as a backslash or a d */
	REJECTED(ONE_MATCH("path_regex = \"/api/v\\\\d+/items\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"/api/v\\d+/items\": \\d is no "
		 "escape of POSIX regular expressions (it would match the letter d): write [0-9]");
	REJECTED(ONE_MATCH("path_regex = \"/a\\\\D\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"/a\\D\": \\D is no escape of POSIX "
		 "regular expressions (it would match the letter D): write [^0-9]");
	REJECTED(ONE_MATCH("path_regex = \"/a[\\\\d]\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"/a[\\d]\": [...\\d...]: a backslash in "
		 "brackets is itself in POSIX regular expressions, not an escape: write 0-9");
	REJECTED(ONE_MATCH("path_regex = \"/a[\\\\w-]+\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"/a[\\w-]+\": [...\\w...]: a backslash "
		 "in brackets is itself in POSIX regular expressions, not an escape");
	/* glibc's own classes and escaped punctuation stay */
	static const char *const ok[] = {"/a\\\\w+", "/a\\\\.b", "/a\\\\s?[[:digit:]]+"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char text[1024];
		snprintf(text, sizeof(text), ONE_MATCH("path_regex = \"%s\";"), ok[i]);
		struct sp_config *c = unit_load_ok(text, NULL);
		sp_config_unref(&c);
	}
	REJECTED(ONE_MATCH("path_regex = \"(\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"(\": *");
	REJECTED(ONE_MATCH("path_regex = \"/x[z-a]\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"/x[z-a]\": *");
	REJECTED(ONE_MATCH("path_regex = \"/a{2\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"/a{2\": *");
	REJECTED(ONE_MATCH("path_regex = \"/a+*\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"/a+*\": a repetition of a repetition "
		 "(write it once)");
	REJECTED(ONE_MATCH("path_regex = \"/[a]+*\";"), 1, "test.conf:8: *");
	/* a back-reference matches in exponential time (one request held a
	 * worker for minutes); counted repetitions nested in groups multiply
	 * regcomp's memory (22 characters took gigabytes) */
	REJECTED(ONE_MATCH("path_regex = \"/(a*)(a*)\\\\1\\\\2x\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"/(a*)(a*)\\1\\2x\": \\1: a "
		 "back-reference, not POSIX ERE (glibc's extension matches in a time exponential "
		 "in the path: one request could hold a worker for minutes)");
	static const char *const nested[] = {"/((a{255}){255}){255}", "/(a{100}b){11}",
					     "/((x{2,40}y){3,}z){9}", "/a{1001}"};
	for (size_t i = 0; i < NELEM(nested); i++) {
		char text[512], want[512];
		snprintf(text, sizeof(text), ONE_MATCH("path_regex = \"%s\";"), nested[i]);
		snprintf(want, sizeof(want),
			 "test.conf:8: routes.[0].match.path_regex: \"%s\": counted repetitions "
			 "({n}) of more than 1000 copies, nested ones multiplied (glibc builds each "
			 "copy: [^/]{1,1024} alone takes 80 MB)",
			 nested[i]);
		REJECTED(text, 1, want);
	}
	char deep[128] = "/";
	for (int i = 0; i < 33; i++)
		strcat(deep, "(");
	strcat(deep, "a");
	for (int i = 0; i < 33; i++)
		strcat(deep, ")");
	char text[512], want[512];
	snprintf(text, sizeof(text), ONE_MATCH("path_regex = \"%s\";"), deep);
	snprintf(want, sizeof(want),
		 "test.conf:8: routes.[0].match.path_regex: \"%s\": groups nested more than 32 deep",
		 deep);
	REJECTED(text, 1, want);
	/* a group's whole contents are built for each of its copies */
	char wide[1100] = "/(";
	for (int i = 0; i < 300; i++)
		strcat(wide, "a|");
	strcat(wide, "b){999}");
	char wtext[1400], wwant[1400];
	snprintf(wtext, sizeof(wtext), ONE_MATCH("path_regex = \"%s\";"), wide);
	snprintf(wwant, sizeof(wwant),
		 "test.conf:8: routes.[0].match.path_regex: \"%s\": more than 10000 atoms once its "
		 "counted repetitions are expanded (glibc builds each copy of a group whole: "
		 "(a|b|...){999} with 500 alternatives takes gigabytes)", wide);
	REJECTED(wtext, 1, wwant);
	static const char *const counted[] = {"/v([0-9]{1,3}[.]){3}[0-9]{1,3}", "/(a{100}b){10}",
					      "/(a|b|c|d){1000}", "/([a-z]{1,10}/){10}",
					      "/[{(]{999}x", "/\\\\({5}\\\\)"};
	for (size_t i = 0; i < NELEM(counted); i++) {
		char text[512];
		snprintf(text, sizeof(text), ONE_MATCH("path_regex = \"%s\";"), counted[i]);
		struct sp_config *c = unit_load_ok(text, NULL);
		sp_config_unref(&c);
	}
	/* no request's path holds '?' or '#': the route could never match */
	REJECTED(ONE_MATCH("path = \"/api/search?q=1\";"), 1,
		 "test.conf:8: routes.[0].match.path: \"/api/search?q=1\": a path, without a query "
		 "or a fragment ('?' is %3F, '#' is %23)");
	REJECTED(ONE_MATCH("path_prefix = \"/docs#intro\";"), 1,
		 "test.conf:8: routes.[0].match.path_prefix: \"/docs#intro\": a path, without a "
		 "query or a fragment ('?' is %3F, '#' is %23)");
	REJECTED(ONE_MATCH("path_regex = \"/[[:alpha:]]*+\";"), 1, "test.conf:8: *");
	/* repetition characters inside a bracket expression, or escaped, are
	 * members or literals, not repetitions */
	static const char *const fine[] = {
		"path_regex = \"/a[+*]b\";",	 "path_regex = \"/v[0-9]+[?]x\";",
		"path_regex = \"/[]+*]x\";",	 "path_regex = \"/[^]*+]x\";",
		"path_regex = \"/[[:digit:]+*]\";", "path_regex = \"/a\\\\+\\\\*\";",
	};
	for (size_t i = 0; i < NELEM(fine); i++) {
		char text[512];
		snprintf(text, sizeof(text), ONE_MATCH("%s"), fine[i]);
		struct sp_config *c = unit_load_ok(text, NULL);
		sp_config_unref(&c);
	}
}

/* BUG (proxy/route_conf.c, load_regex): the source is wrapped as "^(%s)$"
 * without checking that it compiles on its own, so an unbalanced regex closes
 * the wrapper's group: "/a)|(/b" becomes "^(/a)|(/b)$", which compiles, loads,
 * and matches every path that merely starts with "/a" or ends with "/b"
 * ("/a/anything", "/x/b"); the route is no longer anchored to the whole path. */
static void test_error_regex_escaping_anchors(void **state)
{
	(void)state;
	REJECTED(ONE_MATCH("path_regex = \"/a)|(/b\";"), 1,
		 "test.conf:8: routes.[0].match.path_regex: \"/a)|(/b\": *");
}

static void test_error_bad_sticky(void **state)
{
	(void)state;
	REJECTED(ONE_ROLLOUT("percent = 5; sticky = \"bogus\";"), 1,
		 "test.conf:8: routes.[0].rollout.sticky: \"bogus\": must be \"header:NAME\", "
		 "\"cookie:NAME\", \"query:NAME\" or \"client_ip\"");
	REJECTED(ONE_ROLLOUT("percent = 5; sticky = \"header:\";"), 1,
		 "test.conf:8: routes.[0].rollout.sticky: \"header:\": missing name after ':' (e.g. "
		 "\"header:X-User-Id\")");
	REJECTED(ONE_ROLLOUT("percent = 5; sticky = \"cookie:a b\";"), 1,
		 "test.conf:8: routes.[0].rollout.sticky: \"cookie:a b\": name contains a character "
		 "not allowed in a token");
	REJECTED(ONE_ROLLOUT("percent = 5; cohort = \"\";"), 1,
		 "test.conf:8: routes.[0].rollout.cohort: must not be empty");
}

static void test_error_path_not_normalised(void **state)
{
	(void)state;
	REJECTED(ONE_MATCH("path_prefix = \"/api//users\";"), 1,
		 "test.conf:8: routes.[0].match.path_prefix: \"/api//users\" is not normalised and "
		 "would never match; write \"/api/users\"");
	REJECTED(ONE_MATCH("path_prefix = \"/api/./v1/../x\";"), 1,
		 "test.conf:8: routes.[0].match.path_prefix: \"/api/./v1/../x\" is not normalised and "
		 "would never match; write \"/api/x\"");
	REJECTED(ONE_MATCH("path = \"/%7euser/a%2fb\";"), 1,
		 "test.conf:8: routes.[0].match.path: \"/%7euser/a%2fb\" is not normalised and would "
		 "never match; write \"/~user/a%2Fb\"");
	REJECTED(ONE_MATCH("path_prefix = \"/%2e%2e/etc\";"), 1,
		 "test.conf:8: routes.[0].match.path_prefix: \"/%2e%2e/etc\": path climbs above the "
		 "root");
	REJECTED(ONE_MATCH("path_prefix = \"api\";"), 1,
		 "test.conf:8: routes.[0].match.path_prefix: \"api\": path does not start with '/'");
	/* no request line carries these: the route would never match */
	REJECTED(ONE_MATCH("path_prefix = \"/my docs\";"), 1,
		 "test.conf:8: routes.[0].match.path_prefix: \"/my docs\": only visible ASCII, no "
		 "spaces or control characters (write them percent-encoded: a space is %20)");
	REJECTED(ONE_MATCH("path = \"/caf\xc3\xa9\";"), 1,
		 "test.conf:8: routes.[0].match.path: \"/caf\xc3\xa9\": only visible ASCII, no "
		 "spaces or control characters (write them percent-encoded: a space is %20)");
	REJECTED(ONE_MATCH("path = \"/a%zz\";"), 1,
		 "test.conf:8: routes.[0].match.path: \"/a%zz\": bad percent-encoding in path");
}

static void test_error_listen(void **state)
{
	(void)state;
	REJECTED(L_BACKENDS L_DEFAULT, 1, "test.conf: listen: at least one listen address is required");
	REJECTED("listen = ( );\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen: at least one listen address is required");
	REJECTED("listen = ( { address = \"127.0.0.1\"; } );\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen.[0].address: \"127.0.0.1\": must be \"host:port\" (IPv6 as "
		 "\"[::1]:8080\")");
	REJECTED("listen = ( { address = \"::1:8080\"; } );\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen.[0].address: \"::1:8080\": must be \"host:port\" (IPv6 as "
		 "\"[::1]:8080\")");
	REJECTED("listen = ( { address = \"[::1\"; } );\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen.[0].address: \"[::1\": IPv6 addresses are written \"[::1]:8080\"");
	REJECTED("listen = ( { address = \"127.0.0.1:99999\"; } );\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen.[0].address: \"127.0.0.1:99999\": port must be a number between "
		 "1 and 65535");
	REJECTED("listen = (\n  { address = \"127.0.0.1:8080\"; },\n  { }\n);\n" L_BACKENDS L_DEFAULT,
		 1, "test.conf:3: listen.[1].address: required");
}

/* A certificate file that cannot be used is reported at its own setting's
 * line, with the entry's full path (it was the tls group's line and path, or
 * the ca_file line for a client certificate). tests/integration/test_tls.py
 * has the cases that need real certificates (a key on its own line). */
static void test_error_tls_files_named_at_their_line(void **state)
{
	(void)state;
	REJECTED("listen = ( { address = \"127.0.0.1:8080\";\n" /* 1 */
		 "  tls = { certificates = (\n"                 /* 2 */
		 "    { private_key = \"/nonexistent/a.key\";\n" /* 3 */
		 "      certificate = \"/nonexistent/a.pem\"; }\n" /* 4 */
		 "  ); }; } );\n" L_BACKENDS L_DEFAULT,
		 1,
		 "test.conf:4: listen.[0].tls.certificates.[0].certificate: \"/nonexistent/a.pem\": "
		 "No such file or directory");
	REJECTED("listen = ( { address = \"127.0.0.1:8080\";\n" /* 1 */
		 "  tls = {\n"                                   /* 2 */
		 "    certificate = \"/\"; private_key = \"/\"; }; } );\n" L_BACKENDS L_DEFAULT,
		 1, "test.conf:3: listen.[0].tls.certificate: \"/\": not a regular file (a directory)");
	REJECTED(L_LISTEN "backends = {\n"                     /* 2 */
		 "  legacy = { url = \"https://127.0.0.1:9001\";\n" /* 3 */
		 "    ca_file = \"/\";\n"                         /* 4 */
		 "  };\n};\n" L_DEFAULT,
		 1, "test.conf:4: backends.legacy.ca_file: \"/\": not a regular file (a directory)");
	REJECTED(L_LISTEN "backends = {\n"                          /* 2 */
		 "  legacy = { url = \"https://127.0.0.1:9001\";\n"  /* 3 */
		 "    tls_verify = false;\n"                          /* 4 */
		 "    client_private_key = \"/nonexistent.key\";\n"   /* 5 */
		 "    client_certificate = \"/nonexistent.crt\";\n"   /* 6 */
		 "  };\n};\n" L_DEFAULT,
		 1,
		 "test.conf:6: backends.legacy.client_certificate: \"/nonexistent.crt\": No such file "
		 "or directory");
}

/* Integer ranges are inclusive at both ends: the first value past the bound
 * is refused. */
static void test_integer_bounds_are_exact(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(BASE "workers = 1024;\n", NULL);
	assert_int_equal(c->workers, 1024);
	sp_config_unref(&c);
	REJECTED(BASE "workers = 1025;\n", 1, "test.conf:7: workers: must be between 0 and 1024");
	REJECTED(BASE "workers = -1;\n", 1, "test.conf:7: workers: must be between 0 and 1024");
	c = unit_load_ok(BASE "idle_spin_us = 1000;\n", NULL);
	assert_int_equal(c->idle_spin_us, 1000);
	sp_config_unref(&c);
	c = unit_load_ok(BASE "idle_spin_us = 0;\n", NULL);
	assert_int_equal(c->idle_spin_us, 0);
	sp_config_unref(&c);
	c = unit_load_ok(BASE, NULL);
	assert_int_equal(c->idle_spin_us, SP_IDLE_SPIN_US);
	sp_config_unref(&c);
	REJECTED(BASE "idle_spin_us = 1001;\n", 1,
		 "test.conf:7: idle_spin_us: must be between 0 and 1000");
	REJECTED(BASE "idle_spin_us = -1;\n", 1, "test.conf:7: idle_spin_us: must be between 0 and 1000");
	/* a check that needs no passes or no failures would flip at once */
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; health = { path = \"/h\"; healthy = 0; };"),
		 1, "test.conf:3: backends.legacy.health.healthy: must be between 1 and 100");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; health = { unhealthy = 0; };"), 1,
		 "test.conf:3: backends.legacy.health.unhealthy: must be between 1 and 100");
}

/* The admin token is 16 to 1024 characters (blanks around it are not
 * part of it): a short one is a config error, not a weak lock. */
static void test_admin_token_length(void **state)
{
	(void)state;
	char path[] = "/tmp/strangler-token-XXXXXX", text[512], msg[256];
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, " 0123456789abcde \n", 18), 18); /* 15 characters */
	snprintf(text, sizeof(text), BASE "admin = { token_file = \"%s\"; };\n", path);
	snprintf(msg, sizeof(msg),
		 "test.conf:7: admin.token_file: \"%s\": the token must be at least 16 characters",
		 path);
	REJECTED(text, 1, msg);
	assert_int_equal(pwrite(fd, "0123456789abcdef\n", 17, 0), 17);
	struct sp_config *c = unit_load_ok(text, NULL);
	assert_string_equal(c->admin.token, "0123456789abcdef");
	sp_config_unref(&c);
	/* at most 1024: a longer one was cut to its first 511 bytes, silently */
	char token[1100];
	memset(token, 'k', 1025);
	token[1025] = '\n';
	assert_int_equal(pwrite(fd, token, 1026, 0), 1026);
	snprintf(msg, sizeof(msg),
		 "test.conf:7: admin.token_file: \"%s\": the token must be at most 1024 characters",
		 path);
	REJECTED(text, 1, msg);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, token + 1, 1025, 0), 1025); /* 1024 and the newline */
	c = unit_load_ok(text, NULL);
	assert_int_equal(strlen(c->admin.token), 1024);
	sp_config_unref(&c);
	/* blanks before it do not make room: 1100 characters after 4 blanks
	 * were cut to 1021 and taken, 1024 after 2 to 1023 */
	char line[1200];
	memset(line, ' ', 4);
	memset(line + 4, 'k', 1100);
	line[1104] = '\n';
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, line, 1105, 0), 1105);
	REJECTED(text, 1, msg);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, line + 2, 2 + 1024, 0), 1026);
	assert_int_equal(pwrite(fd, "\n", 1, 1026), 1);
	c = unit_load_ok(text, NULL);
	assert_int_equal(strlen(c->admin.token), 1024);
	sp_config_unref(&c);
	close(fd);
	unlink(path);
}

/* An admin group without an address listens on 127.0.0.1:9901, as
 * documented, and needs no token there. */
static void test_admin_default_address(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(BASE "admin = { };\n", NULL);
	assert_true(c->has_admin);
	assert_string_equal(c->admin.address, "127.0.0.1:9901");
	assert_null(c->admin.token);
	sp_config_unref(&c);
}

/* A shadowed route without a diff log loads, with a warning saying the
 * differences are only counted. */
static void test_shadow_without_diff_log_warns(void **state)
{
	(void)state;
	struct sp_diag d;
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load_string(
		ONE_ROUTE("backend = \"legacy\"; shadow = { backend = \"modern\"; };"), TEST_CONF, &d);
	assert_non_null(c);
	assert_int_equal(d.errors, 0);
	assert_int_equal(d.warnings, 1);
	assert_true(unit_has_line(d.text.data, "test.conf:8: warning: routes.[0].shadow: no "
					  "shadow_defaults.diff_log: differences are counted but not "
					  "recorded"));
	sp_config_unref(&c);
	sp_diag_deinit(&d);
}

/* A shadow to the route's own backend mirrors nothing (a request is never
 * shadowed to the backend that served it): the warning says so (it said
 * every request was sent twice). */
static void test_shadow_to_own_backend_warns(void **state)
{
	(void)state;
	struct sp_config *c = WARNED(
		ONE_SHADOW("", "backend = \"legacy\";"), 1,
		"test.conf:9: warning: routes.[0].shadow.backend: the route's own backend: nothing "
		"is mirrored (a request is never shadowed to the backend that served it)");
	sp_config_unref(&c);
}

static void test_error_wrong_types(void **state)
{
	(void)state;
	REJECTED(BASE "workers = \"4\";\n", 1, "test.conf:7: workers: must be an integer");
	REJECTED(BASE "workers = 2000;\n", 1, "test.conf:7: workers: must be between 0 and 1024");
	REJECTED(BASE "log_level = \"loud\";\n", 1,
		 "test.conf:7: log_level: \"loud\": must be debug, info, warn or error");
	REJECTED(BASE "access_log = \"\";\n", 1,
		 "test.conf:7: access_log: must be a path or \"-\" (remove the setting to turn it off)");
	REJECTED(BASE "access_log = 1;\n", 1, "test.conf:7: access_log: must be a string");
	/* an empty path passed -t: the start then failed, or wrote no state */
	REJECTED(BASE "pid_file = \"\";\n", 1,
		 "test.conf:7: pid_file: must be a path (remove the setting to write none)");
	REJECTED(BASE "admin = { address = \"127.0.0.1:9901\"; state_file = \"\"; };\n", 1,
		 "test.conf:7: admin.state_file: must be a path*");
	REJECTED("listen = \"127.0.0.1:8080\";\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen: must be a list: ( { address = \"127.0.0.1:8080\"; } )");
	REJECTED("listen = ( \"127.0.0.1:8080\" );\n" L_BACKENDS L_DEFAULT, 1,
		 "test.conf:1: listen.[0]: must be a group: { address = \"host:port\"; }");
	REJECTED(L_LISTEN "backends = ( );\n" L_DEFAULT, -1,
		 "test.conf:2: backends: must be a group: { name = { url = \"http://...\"; }; }");
	REJECTED(ONE_BACKEND("url = 9001;"), 1, "test.conf:3: backends.legacy.url: must be a string");
	REJECTED(L_LISTEN "backends = {\n  legacy = \"http://127.0.0.1:9001\";\n};\n" L_DEFAULT, 1,
		 "test.conf:3: backends.legacy: must be a group: { url = \"http://host:port\"; }");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; connect_timeout_ms = \"5\";"), 1,
		 "test.conf:3: backends.legacy.connect_timeout_ms: must be an integer");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; connect_timeout_ms = 0;"), 1,
		 "test.conf:3: backends.legacy.connect_timeout_ms: must be between 1 and 3600000");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; max_idle = 1.5;"), 1,
		 "test.conf:3: backends.legacy.max_idle: must be an integer");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; idle_timeout_ms = 0;"), 1,
		 "test.conf:3: backends.legacy.idle_timeout_ms: must be between 1 and 86400000");
	REJECTED(L_LISTEN L_BACKENDS "default_backend = 1;\n", 1,
		 "test.conf:6: default_backend: must be a string");
	REJECTED(BASE "timeouts = 5;\n", 1, "test.conf:7: timeouts: must be a group");
	REJECTED(BASE "limits = { max_headers = 1; };\n", 1,
		 "test.conf:7: limits.max_headers: must be between 8 and 10000");
	REJECTED(BASE "routes = { };\n", 1, "test.conf:7: routes: must be a list: ( { name = ...; }, ... )");
	REJECTED(BASE "routes = ( \"r\" );\n", 1,
		 "test.conf:7: routes.[0]: must be a group: { name = \"...\"; match = {...}; backend = "
		 "\"...\"; }");
	REJECTED(BASE "routes = ( { name = 5; backend = \"legacy\"; } );\n", 1,
		 "test.conf:7: routes.[0].name: must be a string");
	REJECTED(ONE_ROUTE("backend = \"legacy\"; match = \"/x\";"), 1,
		 "test.conf:8: routes.[0].match: must be a group: { path_prefix = \"/api\"; }");
	REJECTED(ONE_ROUTE("backend = \"legacy\"; rollout = 5;"), 1,
		 "test.conf:8: routes.[0].rollout: must be a group: { backend = \"modern\"; percent = "
		 "10.0; }");
	REJECTED(ONE_MATCH("path = 5;"), 1, "test.conf:8: routes.[0].match.path: must be a string");
	REJECTED(ONE_MATCH("methods = \"GET\";"), 1,
		 "test.conf:8: routes.[0].match.methods: must be an array of strings: [\"GET\", \"HEAD\"]");
	REJECTED(ONE_MATCH("methods = [ 1 ];"), 1,
		 "test.conf:8: routes.[0].match.methods.[0]: must be a string");
	REJECTED(ONE_MATCH("methods = [ \"GET\", \"GE T\" ];"), 1,
		 "test.conf:8: routes.[0].match.methods.[1]: must be a method name such as \"GET\"");
	REJECTED(ONE_MATCH("headers = [ \"X-A\" ];"), 1,
		 "test.conf:8: routes.[0].match.headers: must be a group: { Name = \"value\"; Other = "
		 "\"*\"; }");
	REJECTED(ONE_MATCH("headers = { X-A = 1; };"), 1,
		 "test.conf:8: routes.[0].match.headers.X-A: must be a string (\"*\" for any value)");
	REJECTED(ONE_MATCH("query = { v = true; };"), 1,
		 "test.conf:8: routes.[0].match.query.v: must be a string (\"*\" for any value)");
	REJECTED(ONE_ROLLOUT("percent = 5; sticky = 1;"), 1,
		 "test.conf:8: routes.[0].rollout.sticky: must be a key (\"header:X-User-Id\") or a "
		 "list of keys, the first the request has deciding: [\"header:X-User-Id\", "
		 "\"client_ip\"]");
}

static void test_error_syntax(void **state)
{
	(void)state;
	REJECTED(L_LISTEN "workers = ;\n", 1, "test.conf:2: syntax error: *");
	REJECTED(L_LISTEN "routes = (\n  { name = \"r\";\n    backend = ; }\n);\n", 1,
		 "test.conf:4: syntax error: *");
}

/* Every problem in the file is reported in one pass. */
static void test_multiple_errors_collected(void **state)
{
	(void)state;
	static const char text[] =
		"listen = ( { address = \"127.0.0.1\"; } );\n"       /* 1 */
		"workers = \"many\";\n"                               /* 2 */
		"backends = {\n"                                      /* 3 */
		"  legacy = { url = \"http://127.0.0.1:9001/x\"; };\n" /* 4 */
		"  modern = { url = \"http://127.0.0.1:9002\"; tls = true; };\n" /* 5 */
		"};\n"                                                /* 6 */
		"default_backend = \"nope\";\n"                       /* 7 */
		"routes = (\n"                                        /* 8 */
		"  { name = \"a\"; match = { path_prefix = \"/a/\"; path_regex = \"(\"; };\n" /* 9 */
		"    backend = \"gone\"; },\n"                        /* 10 */
		"  { name = \"b\"; backend = \"legacy\";\n"           /* 11 */
		"    rollout = { backend = \"modern\"; percent = 150; sticky = \"ip\"; }; },\n" /* 12 */
		"  { name = \"a\"; match = { path_prefix = \"/c//\"; }; backend = \"modern\"; }\n" /* 13 */
		");\n"                                                /* 14 */
		"extra = 1;\n";                                       /* 15 */
	REJECTED(text, 12,
		 "test.conf:15: extra: unknown setting",
		 "test.conf:2: workers: must be an integer",
		 "test.conf:1: listen.[0].address: \"127.0.0.1\": must be \"host:port\" (IPv6 as "
		 "\"[::1]:8080\")",
		 "test.conf:4: backends.legacy.url: \"http://127.0.0.1:9001/x\": must not carry a path, "
		 "query or fragment (the request path is forwarded as is)",
		 "test.conf:5: backends.modern.tls: unknown setting",
		 "test.conf:7: default_backend: unknown backend \"nope\"",
		 "test.conf:10: routes.[0].backend: unknown backend \"gone\"",
		 "test.conf:9: routes.[0].match.path_regex: \"(\": *",
		 "test.conf:12: routes.[1].rollout.percent: 150: must be between 0 and 100",
		 "test.conf:12: routes.[1].rollout.sticky: \"ip\": must be \"header:NAME\", "
		 "\"cookie:NAME\", \"query:NAME\" or \"client_ip\"",
		 "test.conf:13: routes.[2].match.path_prefix: \"/c//\" is not normalised and would "
		 "never match; write \"/c/\"",
		 "test.conf:13: routes.[2].name: duplicate route name \"a\" (first at line 9)");
}

/* match.client_ip: 1-256 address blocks, as trusted_proxies takes them,
 * each error at its own entry; an internal-only route before the public one
 * of the same path is not "covered". */
static void test_client_ip_blocks(void **state)
{
	(void)state;
	REJECTED(ONE_MATCH("client_ip = [\"10.0.0.1/8\", \"nowhere\", \"10.0.0.0/33\"];"), 3,
		 "test.conf:8: routes.[0].match.client_ip.[0]: \"10.0.0.1/8\": bits set past the /8 "
		 "prefix: write 10.0.0.0/8 (the block) or 10.0.0.1 (the address)",
		 "test.conf:8: routes.[0].match.client_ip.[1]: \"nowhere\": not an IP address or an "
		 "address block (10.0.0.0/8, 2001:db8::/32); host names are not resolved here",
		 "test.conf:8: routes.[0].match.client_ip.[2]: \"10.0.0.0/33\": the prefix length "
		 "after / must be 0-32 for an IPv4 address");
	REJECTED(ONE_MATCH("client_ip = [];"), 1,
		 "test.conf:8: routes.[0].match.client_ip: at least one entry (remove the setting for "
		 "none)");
	REJECTED(ONE_MATCH("client_ip = \"10.0.0.0/8\";"), 1,
		 "test.conf:8: routes.[0].match.client_ip: must be a list of addresses or blocks: "
		 "[\"10.0.0.0/8\", \"192.0.2.7\"]");
	struct sp_config *c = WARNED(
		BASE "routes = (\n"
		     "  { name = \"staff\"; match = { path_prefix = \"/admin\";\n"
		     "    client_ip = [\"10.0.0.0/8\", \"2001:db8::/32\"]; }; backend = \"modern\"; },\n"
		     "  { name = \"closed\"; match = { path_prefix = \"/admin\"; }; return = 403; },\n"
		     "  { name = \"office\"; match = { path_prefix = \"/admin/x\";\n"
		     "    client_ip = [\"10.1.0.0/16\"]; }; backend = \"legacy\"; }\n"
		     ");\n",
		1,
		"test.conf:11: warning: routes.[2]: route \"office\" can never match: route \"staff\" "
		"(line 8) catches every request it would");
	assert_int_equal(c->routes[0].match.nclient_ip, 2);
	assert_int_equal(c->routes[0].match.client_ip[1].bits, 32);
	sp_config_unref(&c);
}

static void test_warning_unreachable_after_catch_all(void **state)
{
	(void)state;
	struct sp_config *c = WARNED(
		BASE "routes = (\n"
		     "  { name = \"all\"; match = { path_prefix = \"/\"; }; backend = \"legacy\"; },\n"
		     "  { name = \"api\"; match = { path_prefix = \"/api\"; methods = [\"GET\"]; };\n"
		     "    backend = \"modern\"; }\n"
		     ");\n",
		1,
		"test.conf:9: warning: routes.[1]: route \"api\" can never match: route \"all\" (line 8) "
		"catches every request it would");
	assert_int_equal(c->nroutes, 2);
	sp_config_unref(&c);
	/* A route without any match condition catches everything as well. */
	c = WARNED(BASE "routes = (\n"
			"  { name = \"rest\"; backend = \"legacy\"; },\n"
			"  { name = \"x\"; match = { path = \"/x\"; }; backend = \"modern\"; }\n"
			");\n",
		   1,
		   "test.conf:9: warning: routes.[1]: route \"x\" can never match: route \"rest\" (line "
		   "8) catches every request it would");
	sp_config_unref(&c);
}

static void test_warning_unreachable_beside_errors(void **state)
{
	(void)state;
	/* a file with errors still gets its warnings (they came only once the
	 * errors were fixed); a route with an error takes no part */
	REJECTED(BASE "routes = (\n"
		      "  { name = \"bad\"; match = { path_prefix = \"/\"; }; backend = \"nope\"; },\n"
		      "  { name = \"all\"; match = { path_prefix = \"/\"; }; backend = \"legacy\"; },\n"
		      "  { name = \"api\"; match = { path_prefix = \"/api\"; }; backend = \"modern\"; }\n"
		      ");\n",
		 1, "test.conf:10: warning: routes.[2]: route \"api\" can never match: route \"all\" "
		    "(line 9) catches every request it would");
}

static void test_warning_unreachable_identical_prefix(void **state)
{
	(void)state;
	struct sp_config *c = WARNED(
		BASE "routes = (\n"
		     "  { name = \"one\"; match = { path_prefix = \"/api\"; }; backend = \"legacy\"; },\n"
		     "  { name = \"two\"; match = { path_prefix = \"/b\"; }; backend = \"legacy\"; },\n"
		     "  { name = \"three\"; match = { path_prefix = \"/api\"; }; backend = \"modern\"; }\n"
		     ");\n",
		1,
		"test.conf:10: warning: routes.[2]: route \"three\" can never match: route \"one\" (line "
		"8) catches every request it would");
	sp_config_unref(&c);
	/* The specific route first is the right order: no warning. */
	c = WARNED(BASE "routes = (\n"
			"  { name = \"users\"; match = { path_prefix = \"/api/users\"; }; backend = \"modern\"; },\n"
			"  { name = \"api\"; match = { path_prefix = \"/api\"; }; backend = \"legacy\"; },\n"
			"  { name = \"get\"; match = { path_prefix = \"/api\"; methods = [\"GET\"];\n"
			"    headers = { X-A = \"1\"; }; }; backend = \"modern\"; }\n"
			");\n",
		   1,
		   "test.conf:10: warning: routes.[2]: route \"get\" can never match: route \"api\" (line "
		   "9) catches every request it would");
	sp_config_unref(&c);
}

/* max_connections below workers: each worker takes one at least, so the
 * process holds more than asked; said so (it was silent). */
static void test_warning_max_connections_below_workers(void **state)
{
	(void)state;
	struct sp_config *c = WARNED(BASE "workers = 4;\nmax_connections = 3;\n", 1,
				     "test.conf:8: warning: max_connections: 3 is less than workers "
				     "(4): each worker takes one connection at least, 4 at once in all");
	sp_config_unref(&c);
	int warnings = -1;
	c = unit_load_ok(BASE "workers = 4;\nmax_connections = 4;\n", &warnings);
	assert_int_equal(warnings, 0);
	sp_config_unref(&c);
}

static void test_warning_lowercase_method(void **state)
{
	(void)state;
	struct sp_config *c = WARNED(
		ONE_MATCH("path_prefix = \"/x\"; methods = [\"POST\", \"get\"];"), 1,
		"test.conf:8: warning: routes.[0].match.methods.[1]: \"get\": methods are "
		"case-sensitive; clients send upper case");
	const struct sp_match *m = &c->routes[0].match;
	assert_int_equal(m->nmethods, 2);
	assert_string_equal(m->methods[0], "POST");
	assert_string_equal(m->methods[1], "get");
	sp_config_unref(&c);
	/* a shadow's methods too: ["get"] mirrored nothing, without a word */
	c = WARNED(ONE_SHADOW("", "backend = \"modern\"; methods = [\"get\"];"), 1,
		   "test.conf:9: warning: routes.[0].shadow.methods.[0]: \"get\": methods are "
		   "case-sensitive; clients send upper case");
	sp_config_unref(&c);
	/* a method no request reaches routing with: CONNECT (405), one the
	 * parser does not know (501); the parser's own pass */
	c = WARNED(ONE_MATCH("methods = [\"GET\", \"CONNECT\", \"M-SEARCH\", \"QUERY\"];"), 2,
		   "test.conf:8: warning: routes.[0].match.methods.[1]: \"CONNECT\": never routed "
		   "(strangler is no forward proxy: answered 405)",
		   "test.conf:8: warning: routes.[0].match.methods.[3]: \"QUERY\": never routed (a "
		   "method the HTTP parser does not know: answered 501)");
	sp_config_unref(&c);
}

static void test_warning_rollout_to_same_backend(void **state)
{
	(void)state;
	struct sp_config *c = WARNED(
		ONE_ROUTE("backend = \"modern\"; rollout = { backend = \"modern\"; percent = 5; };"), 1,
		"test.conf:8: warning: routes.[0].rollout.backend: same backend as the route; the "
		"rollout changes nothing");
	sp_config_unref(&c);
}

/* A health block without path tunes the passive checks only; the settings
 * that only active checks use are reported as doing nothing. */
static void test_warning_health_without_path(void **state)
{
	(void)state;
	struct sp_config *c = WARNED(
		ONE_BACKEND("url = \"http://127.0.0.1:9001\";\n"
			    "  health = { unhealthy = 1; interval_ms = 300;\n" /* 4 */
			    "    healthy = 4; timeout_ms = 50; };"),            /* 5 */
		2,
		"test.conf:5: warning: backends.legacy.health.timeout_ms: has no effect without "
		"backends.legacy.health.path (passive checks only)",
		"test.conf:5: warning: backends.legacy.health.healthy: has no effect without "
		"backends.legacy.health.path (passive checks only)");
	const struct sp_backend *b = &c->backends[0];
	assert_false(b->has_health);
	assert_null(b->health_path);
	assert_int_equal(b->health_unhealthy, 1);
	assert_int_equal(b->health_interval_ms, 300);
	sp_config_unref(&c);
	c = unit_load_ok(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; health = { unhealthy = 2; };"),
			 NULL);
	assert_false(c->backends[0].has_health);
	assert_int_equal(c->backends[0].health_unhealthy, 2);
	assert_int_equal(c->backends[0].health_interval_ms, 5000);
	sp_config_unref(&c);
}

/* BUG (proxy/route_conf.c, sp_load_routes): the unreachable-route check runs
 * only when `L->diag->errors == 0`, i.e. when the caller's diag has never
 * held an error, while load() in config.c deliberately counts errors relative
 * to `before`. Loading a config into a diag that already holds an error (from
 * an earlier file, as the accumulating sp_diag allows) silently drops the
 * "can never match" warning for a config that is itself valid. */
static void test_warning_with_reused_diag(void **state)
{
	(void)state;
	struct sp_diag d;
	sp_diag_init(&d);
	assert_null(sp_config_load_string(BASE "oops = 1;\n", "first.conf", &d));
	assert_int_equal(d.errors, 1);
	struct sp_config *c = sp_config_load_string(
		BASE "routes = (\n"
		     "  { name = \"all\"; match = { path_prefix = \"/\"; }; backend = \"legacy\"; },\n"
		     "  { name = \"api\"; match = { path_prefix = \"/api\"; }; backend = \"modern\"; }\n"
		     ");\n",
		TEST_CONF, &d);
	int warnings = d.warnings, errors = d.errors;
	if (warnings != 1)
		print_error("diagnostics:\n%s", d.text.data);
	sp_config_unref(&c);
	sp_diag_deinit(&d);
	assert_int_equal(errors, 1);
	assert_int_equal(warnings, 1);
}

static void test_valid_full_config(void **state)
{
	(void)state;
	static const char text[] =
		"listen = ( { address = \"127.0.0.1:8080\"; }, { address = \"[::1]:8081\"; } );\n" /* 1 */
		"workers = 0;\n"                                                                   /* 2 */
		"log_level = \"debug\";\n"                                                         /* 3 */
		"access_log = \"-\";\n"                                                            /* 4 */
		"backends = {\n"                                                                   /* 5 */
		"  legacy = { url = \"http://127.0.0.1:9001\"; };\n"                               /* 6 */
		"  modern = { url = \"http://127.0.0.1:9002/\"; connect_timeout_ms = 500;\n"       /* 7 */
		"             response_timeout_ms = 1500; max_idle = 0; idle_timeout_ms = 900; };\n"
		"  plain = { url = \"http://127.0.0.1\"; };\n"                                     /* 9 */
		"};\n"                                                                             /* 10 */
		"default_backend = \"plain\";\n"                                                   /* 11 */
		"timeouts = { client_header_ms = 5000; };\n"                                       /* 12 */
		"limits = { max_headers = 50; max_body_bytes = 1048576; };\n"                      /* 13 */
		"routes = (\n"                                                                     /* 14 */
		"  { name = \"users\";\n"                                                          /* 15 */
		"    match = { path_prefix = \"/api/users\"; methods = [\"GET\", \"HEAD\"];\n"     /* 16 */
		"              headers = { X-Beta = \"*\"; X-Env = \"prod\"; }; query = { v = \"2\"; }; };\n"
		"    backend = \"modern\"; },\n"                                                   /* 18 */
		"  { name = \"orders\"; match = { path_regex = \"/api/orders/[0-9]+\"; };\n"       /* 19 */
		"    backend = \"legacy\";\n"                                                      /* 20 */
		"    rollout = { backend = \"modern\"; percent = 25.0; sticky = \"header:X-User-Id\"; }; },\n"
		"  { name = \"search\"; match = { path = \"/api/search\"; }; backend = \"legacy\";\n" /* 22 */
		"    rollout = { backend = \"modern\"; percent = 33.33; sticky = \"cookie:sid\";\n"
		"                cohort = \"shared\"; }; },\n"                                     /* 24 */
		"  { name = \"keyless\"; match = { path = \"/k\"; }; backend = \"legacy\";\n"      /* 25 */
		"    rollout = { backend = \"plain\"; percent = 7; }; }\n"                         /* 26 */
		");\n";
	int warnings = -1;
	struct sp_config *c = unit_load_ok(text, &warnings);
	assert_int_equal(warnings, 0);
	assert_string_equal(c->file, "test.conf");
	assert_int_equal(atomic_load(&c->refs), 1);

	assert_int_equal(c->nlisten, 2);
	assert_string_equal(c->listen[0].address, "127.0.0.1:8080");
	assert_int_equal(c->listen[0].addr.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&c->listen[0].addr)->sin_port), 8080);
	assert_int_equal(c->listen[1].addr.ss_family, AF_INET6);
	assert_int_equal(ntohs(((struct sockaddr_in6 *)&c->listen[1].addr)->sin6_port), 8081);
	assert_true(c->workers >= 1);
	assert_int_equal(c->log_level, SP_LOG_DEBUG);
	assert_string_equal(c->access_log, "-");

	assert_int_equal(c->nbackends, 3);
	const struct sp_backend *legacy = &c->backends[0], *modern = &c->backends[1],
				*plain = &c->backends[2];
	assert_string_equal(legacy->name, "legacy");
	assert_string_equal(legacy->servers[0].url, "http://127.0.0.1:9001");
	assert_int_equal(legacy->line, 6);
	assert_string_equal(legacy->servers[0].host, "127.0.0.1");
	assert_string_equal(legacy->servers[0].hostport, "127.0.0.1:9001");
	assert_int_equal(ntohs(((struct sockaddr_in *)&legacy->servers[0].addr)->sin_port), 9001);
	assert_int_equal(legacy->connect_timeout_ms, 2000);
	assert_int_equal(legacy->response_timeout_ms, 30000);
	assert_int_equal(legacy->max_idle, 64);
	assert_int_equal(legacy->idle_timeout_ms, 60000);
	assert_string_equal(modern->servers[0].hostport, "127.0.0.1:9002");
	assert_int_equal(modern->connect_timeout_ms, 500);
	assert_int_equal(modern->response_timeout_ms, 1500);
	assert_int_equal(modern->max_idle, 0);
	assert_int_equal(modern->idle_timeout_ms, 900);
	assert_string_equal(plain->servers[0].host, "127.0.0.1");
	assert_string_equal(plain->servers[0].hostport, "127.0.0.1:80");
	assert_int_equal(c->default_backend, 2);
	assert_int_equal(sp_backend_index(c, "modern"), 1);
	assert_int_equal(sp_backend_index(c, "nope"), -1);

	assert_int_equal(c->limits.header_timeout_ms, 5000);
	assert_int_equal(c->limits.keepalive_timeout_ms, 60000);
	assert_int_equal(c->limits.body_timeout_ms, 30000);
	assert_int_equal(c->limits.max_headers, 50);
	assert_int_equal(c->limits.max_body_bytes, 1048576);
	assert_int_equal(c->limits.max_request_line, 8192);
	assert_int_equal(c->limits.max_header_bytes, 32768);

	assert_int_equal(c->nroutes, 4);
	const struct sp_route *users = &c->routes[0], *orders = &c->routes[1],
			      *search = &c->routes[2], *keyless = &c->routes[3];
	assert_string_equal(users->name, "users");
	assert_int_equal(users->line, 15);
	assert_int_equal(users->backend, 1);
	assert_int_equal(users->has_rollout, 0);
	assert_string_equal(users->match.path_prefix, "/api/users");
	assert_int_equal(users->match.prefix_len, 10);
	assert_null(users->match.path);
	assert_null(users->match.path_regex);
	assert_int_equal(users->match.nmethods, 2);
	assert_string_equal(users->match.methods[1], "HEAD");
	assert_int_equal(users->match.nheaders, 2);
	assert_string_equal(users->match.headers[0].name, "X-Beta");
	assert_int_equal(users->match.headers[0].any, 1);
	assert_string_equal(users->match.headers[1].value, "prod");
	assert_int_equal(users->match.headers[1].any, 0);
	assert_int_equal(users->match.nquery, 1);
	assert_string_equal(users->match.query[0].name, "v");
	assert_string_equal(users->match.query[0].value, "2");

	assert_string_equal(orders->match.path_regex, "/api/orders/[0-9]+");
	assert_int_equal(orders->line, 19);
	assert_int_equal(orders->backend, 0);
	assert_int_equal(orders->has_rollout, 1);
	assert_int_equal(orders->rollout.backend, 1);
	assert_int_equal(orders->rollout.percent_bp, 2500);
	assert_string_equal(orders->rollout.cohort, "orders");
	assert_int_equal(orders->rollout.nsticky, 1);
	assert_int_equal(orders->rollout.sticky[0].kind, SP_STICKY_HEADER);
	assert_string_equal(orders->rollout.sticky[0].name, "X-User-Id");

	assert_string_equal(search->match.path, "/api/search");
	assert_int_equal(search->rollout.percent_bp, 3333);
	assert_string_equal(search->rollout.cohort, "shared");
	assert_int_equal(search->rollout.nsticky, 1);
	assert_int_equal(search->rollout.sticky[0].kind, SP_STICKY_COOKIE);
	assert_string_equal(search->rollout.sticky[0].name, "sid");

	assert_int_equal(keyless->rollout.percent_bp, 700);
	assert_int_equal(keyless->rollout.backend, 2);
	assert_int_equal(keyless->rollout.nsticky, 0);
	assert_string_equal(keyless->rollout.cohort, "keyless");

	struct sp_config *again = sp_config_ref(c);
	assert_ptr_equal(again, c);
	assert_int_equal(atomic_load(&c->refs), 2);
	sp_config_unref(&again);
	assert_null(again);
	assert_int_equal(atomic_load(&c->refs), 1);
	sp_config_unref(&c);
	assert_null(c);
}

static void test_valid_minimal_defaults(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(BASE, NULL);
	assert_int_equal(c->nroutes, 0);
	assert_true(c->workers >= 1);
	assert_int_equal(c->log_level, SP_LOG_INFO);
	assert_null(c->access_log);
	assert_int_equal(c->default_backend, 0);
	assert_int_equal(c->limits.header_timeout_ms, 10000);
	assert_int_equal(c->limits.drain_timeout_ms, 30000);
	assert_int_equal(c->limits.max_body_bytes, 0);
	sp_config_unref(&c);
	/* ":8080" and "*:8080" listen on all addresses. */
	c = unit_load_ok("listen = ( { address = \":8080\"; }, { address = \"*:8081\"; } );\n"
			 L_BACKENDS L_DEFAULT "workers = 3;\ndrain_timeout_ms = 0;\n", NULL);
	assert_int_equal(c->nlisten, 2);
	assert_int_equal(c->workers, 3);
	assert_int_equal(c->limits.drain_timeout_ms, 0);
	sp_config_unref(&c);
}

/* libconfig 1.5 wraps an integer literal past 32 bits without the L suffix
 * (4294967297 read as 1, so a 2-byte body got 413, and 4294967296 as 0, no
 * limit at all); such literals are widened before parsing. */
static void test_wide_integers_keep_their_value(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(BASE "limits = { max_body_bytes = 4294967297; };\n", NULL);
	assert_int_equal(c->limits.max_body_bytes, 4294967297LL);
	sp_config_unref(&c);
	c = unit_load_ok(BASE "limits = { max_body_bytes = 0x100000000; };\n", NULL);
	assert_int_equal(c->limits.max_body_bytes, 4294967296LL);
	sp_config_unref(&c);
	REJECTED(BASE "shadow_defaults = { max_body_bytes = 5000000000; };\n", 1,
		 "test.conf:7: shadow_defaults.max_body_bytes: must be between 0 and 1073741824");
	REJECTED(BASE "workers = 4294967297;\n", 1, "test.conf:7: workers: must be between 0 and 1024");
	REJECTED(ONE_ROLLOUT("percent = 5; guard = { max_error_rate = 5000000000; };"), 1,
		 "test.conf:8: routes.[0].rollout.guard.max_error_rate: 5000000000: must be between 0 and 100");
}

static void test_promote_ints_leaves_strings_comments_and_names(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"a = 4294967297;", "a = 4294967297L;"},
		{"a = -2147483648; b = -2147483649;", "a = -2147483648; b = -2147483649L;"},
		{"a = 2147483647; b = 2147483648;", "a = 2147483647; b = 2147483648L;"},
		{"a = 12345678901L; b = 1.5e10; c = 99999999999.0;",
		 "a = 12345678901L; b = 1.5e10; c = 99999999999.0;"},
		{"a = 0x7fffffff; b = 0xffffffff;", "a = 0x7fffffff; b = 0xffffffffL;"},
		{"s = \"4294967297 \\\" 4294967297\"; # 4294967297\n// 4294967297\n",
		 "s = \"4294967297 \\\" 4294967297\"; # 4294967297\n// 4294967297\n"},
		{"/* 4294967297 */ x4294967297 = [4294967297, 1];",
		 "/* 4294967297 */ x4294967297 = [4294967297L, 1];"},
		{"name-4294967297 = 1; a=+4294967297;", "name-4294967297 = 1; a=+4294967297L;"},
		{"unterminated = \"4294967297", "unterminated = \"4294967297"},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char *got = sp_config_promote_ints(cases[i].in);
		assert_non_null(got);
		if (strcmp(got, cases[i].out) != 0)
			print_error("case %zu: %s -> %s (want %s)\n", i, cases[i].in, got, cases[i].out);
		assert_string_equal(got, cases[i].out);
		free(got);
	}
}

static void test_valid_percent_boundaries(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		uint32_t bp;
	} cases[] = {{"0", 0},         {"0.0", 0},       {"0.01", 1},   {"0.29", 29},
		     {"12.5", 1250},   {"33.33", 3333},  {"99.99", 9999}, {"100", 10000},
		     {"100.0", 10000}, {"7", 700}};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char text[1024];
		snprintf(text, sizeof(text), ONE_ROLLOUT("percent = %s;"), cases[i].text);
		struct sp_config *c = unit_load_ok(text, NULL);
		if (c->routes[0].rollout.percent_bp != cases[i].bp)
			print_error("percent %s\n", cases[i].text);
		assert_int_equal(c->routes[0].rollout.percent_bp, cases[i].bp);
		sp_config_unref(&c);
	}
}

#define COMPARE(rules)                                                                      \
	ONE_ROUTE("backend = \"legacy\"; shadow = { backend = \"modern\"; percent = 1.0; "  \
		  "compare = { " rules " }; };")

/* ignore_json = [""] passed -t and made every JSON comparison identical;
 * a '~' that is no RFC 6901 escape passed and never matched. */
static void test_compare_pointers(void **state)
{
	(void)state;
	REJECTED(COMPARE("ignore_json = [\"/a\", \"\"];"), 1,
		 TEST_CONF ":8: routes.[0].shadow.compare.ignore_json.[1]: \"\" is the whole body: "
			   "ignoring it compares no JSON body (write body = \"none\" to compare "
			   "status and headers only)");
	REJECTED(COMPARE("ignore_json = [\"/a~b\"];"), 1,
		 TEST_CONF ":8: routes.[0].shadow.compare.ignore_json.[0]: '~' must be followed by 0 "
			   "or 1 (RFC 6901: ~0 is '~', ~1 is '/')");
	REJECTED(COMPARE("redact_json = [\"/x~\"];"), 1,
		 TEST_CONF ":8: routes.[0].shadow.compare.redact_json.[0]: '~' must be followed by 0 "
			   "or 1*");
	REJECTED(COMPARE("redact_json = [\"x\"];"), 1,
		 TEST_CONF ":8: routes.[0].shadow.compare.redact_json.[0]: must be a JSON Pointer*");
	/* escapes, an empty key, and the whole body redacted are fine */
	struct sp_config *c = check_warned(
		COMPARE("ignore_json = [\"/a~1b/~0\", \"/x/\"]; redact_json = [\"\"];"), 1,
		NULL, 0, __LINE__);
	sp_config_unref(&c);
}

/* The shipped example (conf/strangler.conf, quoted in docs/configuration.md)
 * loads cleanly; meson passes its path in SP_EXAMPLE_CONF. */
/* A string that is not UTF-8 passed -t, then broke the route's JSON in the
 * admin API (GET /api/routes left the route out, a PATCH answered nothing). */
static void test_error_strings_must_be_utf8(void **state)
{
	(void)state;
	REJECTED(ONE_ROLLOUT("percent = 5.0; cohort = \"caf\xe9\";"), 1,
		 TEST_CONF ":8: routes.[0].rollout.cohort: must be UTF-8 text (byte 0xe9 at offset "
			   "3 is not): save the file as UTF-8");
	REJECTED(ONE_ROLLOUT("percent = 5.0; sticky = \"header:X-\xff\";"), 1,
		 TEST_CONF ":8: routes.[0].rollout.sticky: must be UTF-8 text*");
	REJECTED(ONE_ROUTE("backend = \"legacy\"; shadow = { backend = \"modern\"; percent = 1.0; "
			   "compare = { ignore_json = [\"/a\xc3\"]; }; };"),
		 -1, TEST_CONF ":8: routes.[0].shadow.compare.ignore_json.[0]: must be UTF-8 text");
	REJECTED(ONE_BACKEND("url = \"http://127.0.0.1:9001\"; health = { path = \"/h\xc0\xaf\"; };"),
		 1, TEST_CONF ":3: backends.legacy.health.path: must be UTF-8 text (byte 0xc0 at "
			   "offset 2 is not): save the file as UTF-8");
	/* file names are any bytes */
	struct sp_config *c = check_warned(BASE "pid_file = \"/tmp/caf\xe9.pid\";\n", 0, NULL, 0,
					   __LINE__);
	sp_config_unref(&c);
}

/* libconfig says only "syntax error" for a byte order mark, and "mismatched
 * element type in array" for steps = [1, 2.5]: say what to do. */
static void test_syntax_errors_say_what_to_do(void **state)
{
	(void)state;
	REJECTED("\xef\xbb\xbf" BASE, 1,
		 TEST_CONF ":1: the file starts with a UTF-8 byte order mark: save it without one");
	REJECTED(ONE_ROLLOUT("percent = 1.0; guard = { steps = [1, 2.5, 5]; };"), 1,
		 TEST_CONF ":8: syntax error: mismatched element type in array: the elements of an "
			   "array all have one type: all strings, or all numbers written alike (each "
			   "with a decimal point, e.g. steps = [1.0, 2.5, 5.0]; an integer past "
			   "2147483647 among smaller ones is another type)");
	/* the setting named when its line starts with it */
	REJECTED(BASE "routes = ( { name = \"r\"; backend = \"legacy\";\n"
		      "  match = { path_prefix = \"/a\";\n"
		      "    methods = [\"GET\", 1]; }; } );\n",
		 1, TEST_CONF ":9: methods: syntax error: mismatched element type in array*");
	/* a group in brackets, on the bracket's line or the next; a '[' in a
	 * string is not one */
	static const char *const groups[] = {
		"servers = [ { url = \"http://127.0.0.1:9001\"; weight = 3; } ];",
		"servers = [\n { url = \"http://127.0.0.1:9001\"; } ];",
	};
	for (size_t i = 0; i < NELEM(groups); i++) {
		char text[512], want[256];
		snprintf(text, sizeof(text), ONE_BACKEND("%s"), groups[i]);
		snprintf(want, sizeof(want),
			 TEST_CONF ":%zu: syntax error: a group in [ ]: a list of groups is written in "
				   "parentheses, ( { ... }, { ... } ); [ ] holds only strings, numbers or "
				   "booleans",
			 3 + i);
		unit_rejected(text, 1, MSGS(want), 1, __LINE__);
	}
	REJECTED(ONE_BACKEND("url = \"http://[::1\" { ;"), 1, TEST_CONF ":3: syntax error: syntax error");
}

static void test_example_config_loads(void **state)
{
	(void)state;
	const char *path = getenv("SP_EXAMPLE_CONF");
	if (!path)
		skip();
	struct sp_diag d;
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load(path, &d);
	if (!c || d.warnings)
		print_error("%s", d.text.data ? d.text.data : "");
	int warnings = d.warnings;
	sp_diag_deinit(&d);
	assert_non_null(c);
	assert_int_equal(warnings, 0);
	assert_string_equal(c->file, path);
	assert_int_equal(c->nroutes, 3);
	const struct sp_route *orders = unit_route(c, "orders");
	assert_int_equal(orders->has_rollout, 1);
	assert_int_equal(orders->rollout.percent_bp, 2500);
	assert_string_equal(orders->rollout.cohort, "orders");
	assert_int_equal(orders->rollout.backend, sp_backend_index(c, "modern"));
	assert_int_equal(c->default_backend, sp_backend_index(c, "legacy"));
	sp_config_unref(&c);
}

static void test_missing_file(void **state)
{
	(void)state;
	struct sp_diag d;
	sp_diag_init(&d);
	assert_null(sp_config_load("/nonexistent/strangler-test.conf", &d));
	assert_int_equal(d.errors, 1);
	assert_string_equal(d.text.data,
			    "/nonexistent/strangler-test.conf: cannot read: No such file or directory\n");
	sp_diag_deinit(&d);
}

/* A file past SP_FILE_MAX is refused, not read into memory without bound (a
 * state file or configuration that is not one); one at the limit is read. */
static void test_huge_file(void **state)
{
	(void)state;
	char path[] = "/tmp/strangler-huge-XXXXXX", want[128];
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, SP_FILE_MAX), 0); /* sparse: no disk */
	close(fd);
	struct sp_diag d;
	size_t len = 0;
	sp_diag_init(&d);
	char *text = sp_config_read(path, &len, &d);
	assert_non_null(text);
	assert_int_equal(len, SP_FILE_MAX);
	free(text);
	assert_int_equal(truncate(path, SP_FILE_MAX + 1), 0);
	assert_null(sp_config_read(path, &len, &d));
	snprintf(want, sizeof(want), "%s: larger than 16 MiB: not read\n", path);
	assert_string_equal(d.text.data, want);
	assert_int_equal(d.errors, 1);
	sp_diag_deinit(&d);
	unlink(path);
}

/* sp_diag formats "FILE:LINE: msg" and "FILE: msg" and counts both kinds. */
static void test_diag_format(void **state)
{
	(void)state;
	struct sp_diag d;
	sp_diag_init(&d);
	sp_diag_add(&d, 1, "a.conf", 3, "x.y: %s", "bad");
	sp_diag_add(&d, 0, "a.conf", 4, "z: %d", 5);
	sp_diag_add(&d, 1, "a.conf", 0, "listen: required");
	assert_string_equal(d.text.data,
			    "a.conf:3: x.y: bad\na.conf:4: warning: z: 5\na.conf: listen: required\n");
	assert_int_equal(d.errors, 2);
	assert_int_equal(d.warnings, 1);
	sp_diag_deinit(&d);
}

/* A route's own max_body_bytes (absent: -1, limits' applies) and
 * response_timeout_ms (absent: 0, the backend's applies). */
static void test_route_limits(void **state)
{
	(void)state;
	static const struct {
		const char *global, *a, *b;
		long long a_max;
	} cases[] = {
		{"", "", "", -1},
		{"limits = { max_body_bytes = 1000; };", "", "", -1},
		{"limits = { max_body_bytes = 1000; };", "max_body_bytes = 5000;", "max_body_bytes = 10;",
		 5000},
		{"limits = { max_body_bytes = 1000; };", "max_body_bytes = 0;", "", 0},
		{"", "max_body_bytes = 10;", "", 10},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char text[1024];
		snprintf(text, sizeof(text),
			 BASE "%s\nroutes = ( { name = \"a\"; backend = \"legacy\"; %s\n"
			      "  match = { path_prefix = \"/a\"; }; },\n"
			      "  { name = \"b\"; backend = \"legacy\"; %s response_timeout_ms = 50; } );\n",
			 cases[i].global, cases[i].a, cases[i].b);
		struct sp_config *c = unit_load_ok(text, NULL);
		assert_int_equal(c->limits.max_body_bytes, *cases[i].global ? 1000 : 0);
		assert_int_equal(c->routes[0].max_body_bytes, cases[i].a_max);
		assert_int_equal(c->routes[0].response_timeout_ms, 0);
		assert_int_equal(c->routes[1].response_timeout_ms, 50);
		sp_config_unref(&c);
	}
	REJECTED(ONE_ROUTE("backend = \"legacy\"; max_body_bytes = -1;"), 1,
		 "test.conf:8: routes.[0].max_body_bytes: must be between 0 and 1125899906842624");
	REJECTED(ONE_ROUTE("backend = \"legacy\"; response_timeout_ms = 0;"), 1,
		 "test.conf:8: routes.[0].response_timeout_ms: must be between 1 and 86400000");
	/* match.host: a host without a port, or *.NAME */
	static const char *const good[] = {"example.com", "*.example.com", "10.0.0.1", "[::1]",
					   "a_b.internal", "Example.COM."};
	for (size_t i = 0; i < NELEM(good); i++) {
		char text[512];
		snprintf(text, sizeof(text), ONE_MATCH("host = \"%s\";"), good[i]);
		struct sp_config *c = unit_load_ok(text, NULL);
		assert_non_null(c->routes[0].match.host);
		sp_config_unref(&c);
	}
	static const char *const bad[] = {"example.com:80", "*", "*.", "a.*.com", "ex*ample.com",
					  "", "a b", "*.[::1]", "[::1]:80", "a/b", ".example.com",
					  "api.example.com..", "a..b", "[:]", "[::1].", "[::g]", "[]"};
	for (size_t i = 0; i < NELEM(bad); i++) {
		char text[512], want[256];
		snprintf(text, sizeof(text), ONE_MATCH("host = \"%s\";"), bad[i]);
		snprintf(want, sizeof(want),
			 "test.conf:8: routes.[0].match.host: \"%s\": must be a host name or address "
			 "without a port (any port matches), or *.NAME for the names below NAME",
			 bad[i]);
		unit_rejected(text, 1, MSGS(want), 1, __LINE__);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_unknown_setting_top_level),
		cmocka_unit_test(test_error_unknown_setting_in_sections),
		cmocka_unit_test(test_error_unknown_backend),
		cmocka_unit_test(test_error_bad_url),
		cmocka_unit_test(test_servers),
		cmocka_unit_test(test_retry_on_status),
		cmocka_unit_test(test_route_limits),
		cmocka_unit_test(test_error_url_empty_host),
		cmocka_unit_test(test_error_percent),
		cmocka_unit_test(test_shadow_defaults_and_errors),
		cmocka_unit_test(test_guard_steps_and_window_checked),
		cmocka_unit_test(test_error_duplicate_route_name),
		cmocka_unit_test(test_error_bad_regex),
		cmocka_unit_test(test_listen_addresses_do_not_overlap),
		cmocka_unit_test(test_regex_length_bound),
		cmocka_unit_test(test_error_regex_escaping_anchors),
		cmocka_unit_test(test_error_bad_sticky),
		cmocka_unit_test(test_error_path_not_normalised),
		cmocka_unit_test(test_error_listen),
		cmocka_unit_test(test_error_tls_files_named_at_their_line),
		cmocka_unit_test(test_error_wrong_types),
		cmocka_unit_test(test_integer_bounds_are_exact),
		cmocka_unit_test(test_admin_token_length),
		cmocka_unit_test(test_admin_default_address),
		cmocka_unit_test(test_shadow_without_diff_log_warns),
		cmocka_unit_test(test_guard_without_bounds_warns),
		cmocka_unit_test(test_shadow_to_own_backend_warns),
		cmocka_unit_test(test_error_syntax),
		cmocka_unit_test(test_multiple_errors_collected),
		cmocka_unit_test(test_client_ip_blocks),
		cmocka_unit_test(test_warning_unreachable_after_catch_all),
		cmocka_unit_test(test_warning_unreachable_beside_errors),
		cmocka_unit_test(test_warning_unreachable_identical_prefix),
		cmocka_unit_test(test_warning_lowercase_method),
		cmocka_unit_test(test_warning_max_connections_below_workers),
		cmocka_unit_test(test_warning_rollout_to_same_backend),
		cmocka_unit_test(test_warning_health_without_path),
		cmocka_unit_test(test_warning_with_reused_diag),
		cmocka_unit_test(test_valid_full_config),
		cmocka_unit_test(test_valid_minimal_defaults),
		cmocka_unit_test(test_valid_percent_boundaries),
		cmocka_unit_test(test_wide_integers_keep_their_value),
		cmocka_unit_test(test_promote_ints_leaves_strings_comments_and_names),
		cmocka_unit_test(test_error_strings_must_be_utf8),
		cmocka_unit_test(test_compare_pointers),
		cmocka_unit_test(test_syntax_errors_say_what_to_do),
		cmocka_unit_test(test_example_config_loads),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_huge_file),
		cmocka_unit_test(test_diag_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
