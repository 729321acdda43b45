/* Unit tests of proxy/router.c: which route a request view matches, first-match
 * order, the default backend, sp_query_get and sp_route_covers (the check behind
 * the "can never match" warning). Routes come from real configs. */
#include "unit.h"

#include <stdlib.h>
#include <time.h>

#define CONF_HEAD                                                              \
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"                   \
	"backends = {\n"                                                       \
	"  legacy = { url = \"http://127.0.0.1:9001\"; };\n"                   \
	"  modern = { url = \"http://127.0.0.1:9002\"; };\n"                   \
	"  other  = { url = \"http://127.0.0.1:9003\"; };\n"                   \
	"};\n"                                                                 \
	"default_backend = \"legacy\";\n"

/* One route per kind of condition; prefixes are disjoint so order is not tested here. */
static const char routes_conf[] = CONF_HEAD
	"routes = (\n"
	"  { name = \"exact\";     match = { path = \"/exact\"; }; backend = \"modern\"; },\n"
	"  { name = \"users\";     match = { path_prefix = \"/api/users\"; }; backend = \"modern\"; },\n"
	"  { name = \"static\";    match = { path_prefix = \"/static/\"; }; backend = \"modern\"; },\n"
	"  { name = \"versioned\"; match = { path_regex = \"/v[0-9]+/items\"; }; backend = \"modern\"; },\n"
	"  { name = \"optional\"; match = { path_regex = \"/opt/ab*c\"; }; backend = \"modern\"; },\n"
	"  { name = \"plus\"; match = { path_regex = \"/plus/x+y\"; }; backend = \"modern\"; },\n"
	"  { name = \"alt\";       match = { path_regex = \"/alt/(a|b)\"; }; backend = \"modern\"; },\n"
	"  { name = \"writes\";    match = { path_prefix = \"/orders\"; methods = [\"POST\", \"PUT\"]; };\n"
	"    backend = \"other\"; },\n"
	"  { name = \"beta\";      match = { path_prefix = \"/beta\"; headers = { X-Beta = \"yes\"; }; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"tenant\";    match = { path_prefix = \"/t\"; headers = { X-Tenant = \"*\"; }; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"search\";    match = { path = \"/search\"; query = { engine = \"new search\"; }; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"debug\";     match = { path = \"/search\"; query = { debug = \"*\"; }; };\n"
	"    backend = \"other\"; },\n"
	"  { name = \"combo\";     match = { path_prefix = \"/combo\"; methods = [\"GET\"];\n"
	"                                    headers = { X-A = \"1\"; }; query = { q = \"2\"; }; };\n"
	"    backend = \"other\"; }\n"
	");\n";

static struct sp_config *cfg;

static int group_setup(void **state)
{
	(void)state;
	struct sp_diag d;
	sp_diag_init(&d);
	cfg = sp_config_load_string(routes_conf, TEST_CONF, &d);
	if (!cfg || d.warnings)
		fprintf(stderr, "routes_conf: %s\n", d.text.data ? d.text.data : "");
	sp_diag_deinit(&d);
	return cfg ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	sp_config_unref(&cfg);
	return 0;
}

/* Name of the route chosen for the request, or "(default)". */
static const char *route_of(const struct sp_config *c, const char *method, const char *path,
			    const char *query, const struct sp_hdr *h, size_t nh)
{
	struct sp_reqview q = unit_req(method, path, query, h, nh, NULL);
	const struct sp_route *r = sp_router_match(c->routes, c->nroutes, c->route_index, &q);
	/* the index only narrows the routes tried: every route, in order, agrees */
	assert_true(c->route_index || c->nroutes < SP_ROUTE_INDEX_MIN);
	assert_ptr_equal(r, sp_router_match(c->routes, c->nroutes, NULL, &q));
	return r ? r->name : "(default)";
}

#define ROUTE(method, path) route_of(cfg, (method), (path), NULL, NULL, 0)

static void test_exact_path(void **state)
{
	(void)state;
	assert_string_equal(ROUTE("GET", "/exact"), "exact");
	assert_string_equal(ROUTE("GET", "/exact/"), "(default)");
	assert_string_equal(ROUTE("GET", "/exact/x"), "(default)");
	assert_string_equal(ROUTE("GET", "/exac"), "(default)");
	assert_string_equal(ROUTE("GET", "/exactly"), "(default)");
	assert_string_equal(ROUTE("GET", "/EXACT"), "(default)");
}

static void test_prefix_is_segment_aware(void **state)
{
	(void)state;
	assert_string_equal(ROUTE("GET", "/api/users"), "users");
	assert_string_equal(ROUTE("GET", "/api/users/"), "users");
	assert_string_equal(ROUTE("GET", "/api/users/7"), "users");
	assert_string_equal(ROUTE("DELETE", "/api/users/7/orders"), "users");
	assert_string_equal(ROUTE("GET", "/api/usersettings"), "(default)");
	assert_string_equal(ROUTE("GET", "/api/users-old"), "(default)");
	assert_string_equal(ROUTE("GET", "/api/user"), "(default)");
	assert_string_equal(ROUTE("GET", "/api"), "(default)");
	assert_string_equal(ROUTE("GET", "/x/api/users"), "(default)");
}

static void test_prefix_ending_in_slash(void **state)
{
	(void)state;
	assert_string_equal(ROUTE("GET", "/static/"), "static");
	assert_string_equal(ROUTE("GET", "/static/app.js"), "static");
	assert_string_equal(ROUTE("GET", "/static/css/site.css"), "static");
	assert_string_equal(ROUTE("GET", "/static"), "(default)");
	assert_string_equal(ROUTE("GET", "/staticfiles/x"), "(default)");
}

static void test_regex_matches_whole_path(void **state)
{
	(void)state;
	assert_string_equal(ROUTE("GET", "/v1/items"), "versioned");
	assert_string_equal(ROUTE("GET", "/v42/items"), "versioned");
	assert_string_equal(ROUTE("GET", "/v/items"), "(default)");
	assert_string_equal(ROUTE("GET", "/x/v1/items"), "(default)");
	assert_string_equal(ROUTE("GET", "/v1/items/3"), "(default)");
	assert_string_equal(ROUTE("GET", "/v1/itemsx"), "(default)");
	/* The anchors wrap an alternation as a whole. */
	assert_string_equal(ROUTE("GET", "/alt/a"), "alt");
	assert_string_equal(ROUTE("GET", "/alt/b"), "alt");
	assert_string_equal(ROUTE("GET", "/alt/ab"), "(default)");
	assert_string_equal(ROUTE("GET", "/alt/b/c"), "(default)");
	/* The literal prefix checked before regexec stops before a quantified
	 * character: "/opt/ab*c" promises only "/opt/a". */
	assert_string_equal(ROUTE("GET", "/opt/ac"), "optional");
	assert_string_equal(ROUTE("GET", "/opt/abbbc"), "optional");
	assert_string_equal(ROUTE("GET", "/opt/bc"), "(default)");
	assert_string_equal(ROUTE("GET", "/plus/xxy"), "plus");
	assert_string_equal(ROUTE("GET", "/plus/y"), "(default)");
	assert_string_equal(ROUTE("GET", "/plu"), "(default)");
}

static void test_methods(void **state)
{
	(void)state;
	assert_string_equal(ROUTE("POST", "/orders"), "writes");
	assert_string_equal(ROUTE("PUT", "/orders/9"), "writes");
	assert_string_equal(ROUTE("GET", "/orders"), "(default)");
	assert_string_equal(ROUTE("PATCH", "/orders"), "(default)");
	/* Methods are case-sensitive (RFC 9110 9.1). */
	assert_string_equal(ROUTE("post", "/orders"), "(default)");
	assert_string_equal(ROUTE("POSTX", "/orders"), "(default)");
}

static void test_header_values_exact_names_any_case(void **state)
{
	(void)state;
	const struct sp_hdr yes[] = {HDR("Host", "h"), HDR("X-Beta", "yes")};
	const struct sp_hdr lower[] = {HDR("x-beta", "yes")};
	const struct sp_hdr upper[] = {HDR("X-BETA", "yes")};
	const struct sp_hdr other_case[] = {HDR("X-Beta", "Yes")};
	const struct sp_hdr longer[] = {HDR("X-Beta", "yes!")};
	const struct sp_hdr shorter[] = {HDR("X-Beta", "ye")};
	const struct sp_hdr second[] = {HDR("X-Beta", "no"), HDR("X-Beta", "yes")};
	const struct sp_hdr other_name[] = {HDR("X-Betas", "yes")};
	assert_string_equal(route_of(cfg, "GET", "/beta", NULL, yes, NELEM(yes)), "beta");
	assert_string_equal(route_of(cfg, "GET", "/beta", NULL, lower, 1), "beta");
	assert_string_equal(route_of(cfg, "GET", "/beta", NULL, upper, 1), "beta");
	assert_string_equal(route_of(cfg, "GET", "/beta", NULL, other_case, 1), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/beta", NULL, longer, 1), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/beta", NULL, shorter, 1), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/beta", NULL, second, 2), "beta");
	assert_string_equal(route_of(cfg, "GET", "/beta", NULL, other_name, 1), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/beta", NULL, NULL, 0), "(default)");
}

static void test_header_presence(void **state)
{
	(void)state;
	const struct sp_hdr some[] = {HDR("X-Tenant", "acme")};
	const struct sp_hdr empty[] = {HDR("x-tenant", "")};
	const struct sp_hdr absent[] = {HDR("X-Tenants", "acme"), HDR("Tenant", "acme")};
	assert_string_equal(route_of(cfg, "GET", "/t/1", NULL, some, 1), "tenant");
	assert_string_equal(route_of(cfg, "GET", "/t", NULL, empty, 1), "tenant");
	assert_string_equal(route_of(cfg, "GET", "/t/1", NULL, absent, 2), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/t/1", NULL, NULL, 0), "(default)");
}

static void test_query_value_decoded(void **state)
{
	(void)state;
	assert_string_equal(route_of(cfg, "GET", "/search", "engine=new+search", NULL, 0), "search");
	assert_string_equal(route_of(cfg, "GET", "/search", "engine=new%20search", NULL, 0), "search");
	assert_string_equal(route_of(cfg, "GET", "/search", "a=1&engine=new%20search&b", NULL, 0),
			    "search");
	assert_string_equal(route_of(cfg, "GET", "/search", "%65ngine=new+search", NULL, 0), "search");
	assert_string_equal(route_of(cfg, "GET", "/search", "engine=old&engine=new+search", NULL, 0),
			    "search");
	assert_string_equal(route_of(cfg, "GET", "/search", "engine=new", NULL, 0), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/search", "engine=new+search+x", NULL, 0),
			    "(default)");
	assert_string_equal(route_of(cfg, "GET", "/search", "Engine=new+search", NULL, 0), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/search", "xengine=new+search", NULL, 0),
			    "(default)");
	assert_string_equal(route_of(cfg, "GET", "/search", "", NULL, 0), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/search", NULL, NULL, 0), "(default)");
}

static void test_query_presence(void **state)
{
	(void)state;
	assert_string_equal(route_of(cfg, "GET", "/search", "debug", NULL, 0), "debug");
	assert_string_equal(route_of(cfg, "GET", "/search", "debug=", NULL, 0), "debug");
	assert_string_equal(route_of(cfg, "GET", "/search", "x=1&debug=0", NULL, 0), "debug");
	assert_string_equal(route_of(cfg, "GET", "/search", "de%62ug=1", NULL, 0), "debug");
	assert_string_equal(route_of(cfg, "GET", "/search", "debugging=1", NULL, 0), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/search", "x=debug", NULL, 0), "(default)");
	/* the decoded name whole: an encoded NUL does not end it */
	assert_string_equal(route_of(cfg, "GET", "/search", "debug%00x=1", NULL, 0), "(default)");
}

static void test_all_conditions_must_hold(void **state)
{
	(void)state;
	const struct sp_hdr a1[] = {HDR("X-A", "1")};
	const struct sp_hdr a2[] = {HDR("X-A", "2")};
	assert_string_equal(route_of(cfg, "GET", "/combo/x", "q=2", a1, 1), "combo");
	assert_string_equal(route_of(cfg, "POST", "/combo/x", "q=2", a1, 1), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/combox", "q=2", a1, 1), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/combo/x", "q=2", a2, 1), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/combo/x", "q=2", NULL, 0), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/combo/x", "q=3", a1, 1), "(default)");
	assert_string_equal(route_of(cfg, "GET", "/combo/x", NULL, a1, 1), "(default)");
}

/* sp_route_matches on one route agrees with the router. */
static void test_route_matches_single(void **state)
{
	(void)state;
	const struct sp_route *users = unit_route(cfg, "users");
	struct sp_reqview yes = unit_req("GET", "/api/users/1", NULL, NULL, 0, NULL);
	struct sp_reqview no = unit_req("GET", "/api/usersx", NULL, NULL, 0, NULL);
	assert_true(sp_route_matches(users, &yes));
	assert_false(sp_route_matches(users, &no));
}

static void test_first_match_wins(void **state)
{
	(void)state;
	static const char specific_first[] = CONF_HEAD
		"routes = (\n"
		"  { name = \"special\"; match = { path_prefix = \"/p/special\"; }; backend = \"modern\"; },\n"
		"  { name = \"general\"; match = { path_prefix = \"/p\"; }; backend = \"other\"; }\n"
		");\n";
	static const char general_first[] = CONF_HEAD
		"routes = (\n"
		"  { name = \"general\"; match = { path_prefix = \"/p\"; }; backend = \"other\"; },\n"
		"  { name = \"special\"; match = { path_prefix = \"/p/special\"; }; backend = \"modern\"; }\n"
		");\n";
	int warnings;
	struct sp_config *a = unit_load_ok(specific_first, &warnings);
	assert_int_equal(warnings, 0);
	assert_string_equal(route_of(a, "GET", "/p/special/1", NULL, NULL, 0), "special");
	assert_string_equal(route_of(a, "GET", "/p/other", NULL, NULL, 0), "general");
	assert_string_equal(route_of(a, "GET", "/p", NULL, NULL, 0), "general");
	struct sp_config *b = unit_load_ok(general_first, &warnings);
	assert_int_equal(warnings, 1); /* "special" can never match */
	assert_string_equal(route_of(b, "GET", "/p/special/1", NULL, NULL, 0), "general");
	assert_ptr_equal(sp_router_match(b->routes, b->nroutes, b->route_index,
					 &(struct sp_reqview){"GET", "/p/special", 10, NULL, 0,
							      NULL, 0, NULL, NULL}),
			 &b->routes[0]);
	sp_config_unref(&a);
	sp_config_unref(&b);
}

/* The index by first segment against trying every route: routes with and
 * without a known segment interleave in file order, and a regex's literal
 * start gives a segment only when it reaches a '/'. */
static void test_index_keeps_file_order(void **state)
{
	(void)state;
	static const char text[] = CONF_HEAD
		"routes = (\n"
		"  { name = \"a-post\"; match = { path_prefix = \"/a\"; methods = [\"POST\"]; };"
		" backend = \"other\"; },\n"
		"  { name = \"any-host\"; match = { host = \"h.example\"; }; backend = \"other\"; },\n"
		"  { name = \"ab-re\"; match = { path_regex = \"/ab[0-9]*\"; }; backend = \"other\"; },\n"
		"  { name = \"a-exact\"; match = { path = \"/a/b\"; }; backend = \"other\"; },\n"
		"  { name = \"root\"; match = { path = \"/\"; }; backend = \"other\"; },\n"
		"  { name = \"a-slash\"; match = { path_prefix = \"/a/\"; }; backend = \"other\"; },\n"
		"  { name = \"re-a\"; match = { path_regex = \"/a/[0-9]+\"; }; backend = \"other\"; },\n"
		"  { name = \"alt\"; match = { path_regex = \"/x|/q/z\"; }; backend = \"other\"; },\n"
		"  { name = \"beta\"; match = { headers = { X-Beta = \"1\"; }; }; backend = \"other\"; },\n"
		"  { name = \"q-re\"; match = { path_regex = \"/q/[a-y]\"; }; backend = \"other\"; },\n"
		"  { name = \"lit\"; match = { path_regex = \"/lit\"; }; backend = \"other\"; },\n"
		"  { name = \"catch\"; match = { path_prefix = \"/\"; }; backend = \"other\"; }\n"
		");\n";
	static const char *const paths[] = {"/", "/a", "/a/", "/a/b", "/a/1", "/ab", "/ab12",
					    "/abc", "/x", "/q/z", "/q/y", "/b", "/a/b/c", "/A",
					    "/lit", "/lit/x", "/litx", "*"};
	static const char *const methods[] = {"GET", "POST"};
	int warnings;
	struct sp_config *c = unit_load_ok(text, &warnings);
	struct sp_hdr h[2];
	for (size_t p = 0; p < sizeof(paths) / sizeof(*paths); p++)
		for (int v = 0; v < 8; v++) {
			size_t nh = 0;
			if (v & 1)
				h[nh++] = (struct sp_hdr){"Host", 4, "h.example:8080", 14};
			if (v & 2)
				h[nh++] = (struct sp_hdr){"X-Beta", 6, "1", 1};
			route_of(c, methods[v >> 2], paths[p], NULL, h, nh); /* agrees */
		}
	assert_string_equal(route_of(c, "GET", "/a/1", NULL, NULL, 0), "a-slash");
	assert_string_equal(route_of(c, "GET", "/a/1", NULL, h, 1), "any-host");
	assert_string_equal(route_of(c, "GET", "/ab12", NULL, NULL, 0), "ab-re");
	assert_string_equal(route_of(c, "GET", "/a", NULL, NULL, 0), "catch");
	assert_string_equal(route_of(c, "GET", "/a", NULL, &h[1], 1), "beta");
	assert_string_equal(route_of(c, "POST", "/a", NULL, &h[1], 1), "a-post");
	assert_string_equal(route_of(c, "GET", "/", NULL, NULL, 0), "root");
	assert_string_equal(route_of(c, "GET", "/q/z", NULL, NULL, 0), "alt");
	assert_string_equal(route_of(c, "GET", "/q/y", NULL, NULL, 0), "q-re");
	assert_string_equal(route_of(c, "GET", "/a/b", NULL, &h[1], 1), "a-exact");
	assert_string_equal(route_of(c, "GET", "/lit", NULL, NULL, 0), "lit");
	assert_string_equal(route_of(c, "GET", "/litx", NULL, NULL, 0), "catch");
	sp_config_unref(&c);
}

/* A pattern is tried from the path's first character only: searched from
 * every position, "/[a-z0-9/_.-]*[.]json" took 2.6 s of a worker for one
 * 60 KB path that does not end in .json (a time quadratic in the path). */
static void test_regex_time_is_linear_in_the_path(void **state)
{
	(void)state;
	static const char conf[] = CONF_HEAD
		"routes = (\n"
		"  { name = \"json\"; match = { path_regex = \"/[a-z0-9/_.-]*[.]json\"; }; "
		"backend = \"modern\"; },\n"
		"  { name = \"static\"; match = { path_regex = \"/.*[.](png|css)|/s/.*\"; }; "
		"backend = \"modern\"; }\n"
		");\n";
	int warnings;
	struct sp_config *c = unit_load_ok(conf, &warnings);
	assert_int_equal(warnings, 0);
	static char path[60001];
	for (size_t i = 0; i + 1 < sizeof(path); i += 2)
		memcpy(path + i, "/a", 2);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_string_equal(route_of(c, "GET", path, NULL, NULL, 0), "(default)");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (s > 0.5)
		fail_msg("a 60 KB path took %.2f s to route", s);
	/* still the whole path, the alternatives each whole */
	assert_string_equal(route_of(c, "GET", "/a/b.json", NULL, NULL, 0), "json");
	assert_string_equal(route_of(c, "GET", "/a.json/b", NULL, NULL, 0), "(default)");
	assert_string_equal(route_of(c, "GET", "/x/y.css", NULL, NULL, 0), "static");
	assert_string_equal(route_of(c, "GET", "/s/x", NULL, NULL, 0), "static");
	assert_string_equal(route_of(c, "GET", "/x/s/x.txt", NULL, NULL, 0), "(default)");
	assert_string_equal(route_of(c, "GET", "/x.css/y", NULL, NULL, 0), "(default)");
	sp_config_unref(&c);
	/* a ')' that closes no group is the character, as glibc reads the
	 * pattern alone: it must not close the wrapping group ("^(/a)|/b)$"
	 * would take any path ending in "/b)") */
	static const char paren[] = CONF_HEAD
		"routes = (\n"
		"  { name = \"paren\"; match = { path_regex = \"/a)|/b[)]|/c\\\\)\"; }; "
		"backend = \"modern\"; }\n"
		");\n";
	c = unit_load_ok(paren, &warnings);
	static const char *const yes[] = {"/a)", "/b)", "/c)"};
	static const char *const no[] = {"/x/b)", "/a", "/a)x", "/b", "/c"};
	for (size_t i = 0; i < NELEM(yes); i++)
		assert_string_equal(route_of(c, "GET", yes[i], NULL, NULL, 0), "paren");
	for (size_t i = 0; i < NELEM(no); i++)
		assert_string_equal(route_of(c, "GET", no[i], NULL, NULL, 0), "(default)");
	sp_config_unref(&c);
}

static void test_no_match_goes_to_default_backend(void **state)
{
	(void)state;
	struct sp_reqview q = unit_req("GET", "/nowhere", NULL, NULL, 0, "10.0.0.1");
	struct sp_decision d;
	struct sp_buf scratch;
	uint64_t rng = 1;
	sp_buf_init(&scratch);
	assert_null(sp_router_match(cfg->routes, cfg->nroutes, cfg->route_index, &q));
	assert_int_equal(cfg->default_backend, sp_backend_index(cfg, "legacy"));
	sp_decide(cfg->routes, cfg->nroutes, cfg->route_index, cfg->default_backend, &q, &rng,
		  &scratch, &d);
	assert_null(d.route);
	assert_int_equal(d.backend, sp_backend_index(cfg, "legacy"));
	assert_int_equal(d.rolled, 0);
	assert_int_equal(d.to_rollout, 0);
	/* A matching route without rollout sends to its own backend. */
	q = unit_req("POST", "/orders", NULL, NULL, 0, "10.0.0.1");
	sp_decide(cfg->routes, cfg->nroutes, cfg->route_index, cfg->default_backend, &q, &rng,
		  &scratch, &d);
	assert_ptr_equal(d.route, unit_route(cfg, "writes"));
	assert_int_equal(d.backend, sp_backend_index(cfg, "other"));
	assert_int_equal(d.rolled, 0);
	/* No routes at all: always the default. */
	sp_decide(NULL, 0, NULL, 2, &q, &rng, &scratch, &d);
	assert_null(d.route);
	assert_int_equal(d.backend, 2);
	sp_buf_deinit(&scratch);
}

static void test_query_get(void **state)
{
	(void)state;
	struct sp_buf v;
	sp_buf_init(&v);
	static const char qs[] = "a=1&b=x%2Fy+z&a=2&flag&empty=&&%75id=7";
	assert_int_equal(sp_query_get(qs, strlen(qs), "a", 0, &v), 1);
	assert_string_equal(v.data, "1");
	assert_int_equal(sp_query_get(qs, strlen(qs), "b", 0, &v), 1);
	assert_string_equal(v.data, "x/y z");
	assert_int_equal(sp_query_get(qs, strlen(qs), "flag", 0, &v), 1);
	assert_int_equal(v.len, 0);
	assert_int_equal(sp_query_get(qs, strlen(qs), "empty", 0, &v), 1);
	assert_int_equal(v.len, 0);
	assert_int_equal(sp_query_get(qs, strlen(qs), "uid", 0, &v), 1);
	assert_string_equal(v.data, "7");
	assert_int_equal(sp_query_get(qs, strlen(qs), "c", 0, &v), 0);
	assert_int_equal(v.len, 0);
	assert_int_equal(sp_query_get(qs, strlen(qs), "A", 0, &v), 0);
	/* Only len bytes are looked at. */
	assert_int_equal(sp_query_get("a=1&b=2", 3, "b", 0, &v), 0);
	assert_int_equal(sp_query_get("uid%00zzz=u42", 13, "uid", 0, &v), 0);
	assert_int_equal(sp_query_get("", 0, "a", 0, &v), 0);
	/* nonempty (a sticky key): the first value that is not empty */
	assert_int_equal(sp_query_get("u=&u=5&u=6", 10, "u", 1, &v), 1);
	assert_string_equal(v.data, "5");
	assert_int_equal(sp_query_get("u=&u", 4, "u", 1, &v), 0);
	sp_buf_deinit(&v);
}

/* Routes for sp_route_covers: loaded for their match blocks only (warnings
 * expected, since some of them are meant to be covered). */
static const char covers_conf[] = CONF_HEAD
	"routes = (\n"
	"  { name = \"p_api\";       match = { path_prefix = \"/api\"; }; backend = \"modern\"; },\n"
	"  { name = \"p_api_slash\"; match = { path_prefix = \"/api/\"; }; backend = \"modern\"; },\n"
	"  { name = \"p_users\";     match = { path_prefix = \"/api/users\"; }; backend = \"modern\"; },\n"
	"  { name = \"p_userset\";   match = { path_prefix = \"/api/usersettings\"; }; backend = \"modern\"; },\n"
	"  { name = \"p_root\";      match = { path_prefix = \"/\"; }; backend = \"modern\"; },\n"
	"  { name = \"x_api\";       match = { path = \"/api\"; }; backend = \"modern\"; },\n"
	"  { name = \"x_user7\";     match = { path = \"/api/users/7\"; }; backend = \"modern\"; },\n"
	"  { name = \"x_apix\";      match = { path = \"/apix\"; }; backend = \"modern\"; },\n"
	"  { name = \"m_get_head\";  match = { path_prefix = \"/api\"; methods = [\"GET\", \"HEAD\"]; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"m_get\";       match = { path_prefix = \"/api\"; methods = [\"GET\"]; }; backend = \"modern\"; },\n"
	"  { name = \"m_get_post\";  match = { path_prefix = \"/api\"; methods = [\"GET\", \"POST\"]; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"h_any\";       match = { path_prefix = \"/api\"; headers = { X-A = \"*\"; }; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"h_1\";         match = { path_prefix = \"/api\"; headers = { x-a = \"1\"; }; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"h_2\";         match = { path_prefix = \"/api\"; headers = { X-A = \"2\"; }; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"h_1_b\";       match = { path_prefix = \"/api\"; headers = { X-A = \"1\"; X-B = \"2\"; }; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"q_any\";       match = { path_prefix = \"/api\"; query = { q = \"*\"; }; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"q_1\";         match = { path_prefix = \"/api\"; query = { q = \"1\"; }; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"r_v\";         match = { path_regex = \"/api/v[0-9]+\"; }; backend = \"modern\"; },\n"
	"  { name = \"r_v_again\";   match = { path_regex = \"/api/v[0-9]+\"; }; backend = \"modern\"; },\n"
	"  { name = \"x_v1\";        match = { path = \"/api/v1\"; }; backend = \"modern\"; },\n"
	"  { name = \"host_any\";    match = { host = \"*.example.com\"; }; backend = \"modern\"; },\n"
	"  { name = \"host_sub\";    match = { host = \"*.eu.example.com\"; }; backend = \"modern\"; },\n"
	"  { name = \"host_api\";    match = { host = \"API.example.com.\"; }; backend = \"modern\"; },\n"
	"  { name = \"host_apex\";   match = { host = \"example.com\"; }; backend = \"modern\"; },\n"
	"  { name = \"ip_ten\";      match = { client_ip = [\"10.0.0.0/8\", \"2001:db8::/32\"]; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"ip_net\";      match = { client_ip = [\"10.1.0.0/16\", \"2001:db8:1::/48\"]; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"ip_one\";      match = { client_ip = [\"::ffff:10.1.2.3\"]; }; backend = \"modern\"; },\n"
	"  { name = \"ip_mixed\";    match = { client_ip = [\"10.1.2.3\", \"192.0.2.0/24\"]; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"ip_all4\";     match = { client_ip = [\"0.0.0.0/0\"]; }; backend = \"modern\"; },\n"
	"  { name = \"ip_api\";      match = { path_prefix = \"/api\"; client_ip = [\"10.0.0.0/8\"]; };\n"
	"    backend = \"modern\"; },\n"
	"  { name = \"everything\";  backend = \"modern\"; }\n"
	");\n";

static struct sp_config *covers_cfg;

static int covers(const char *earlier, const char *later)
{
	return sp_route_covers(unit_route(covers_cfg, earlier), unit_route(covers_cfg, later));
}

static int covers_setup(void **state)
{
	(void)state;
	struct sp_diag d;
	sp_diag_init(&d);
	covers_cfg = sp_config_load_string(covers_conf, TEST_CONF, &d);
	if (!covers_cfg)
		fprintf(stderr, "covers_conf: %s\n", d.text.data ? d.text.data : "");
	sp_diag_deinit(&d);
	return covers_cfg ? 0 : -1;
}

static int covers_teardown(void **state)
{
	(void)state;
	sp_config_unref(&covers_cfg);
	return 0;
}

static void test_covers_prefixes(void **state)
{
	(void)state;
	assert_true(covers("p_api", "p_users"));
	assert_false(covers("p_users", "p_api"));
	assert_true(covers("p_api", "p_api"));
	assert_true(covers("p_api", "p_api_slash"));
	assert_false(covers("p_api_slash", "p_api")); /* "/api" itself */
	assert_true(covers("p_api_slash", "p_users"));
	assert_false(covers("p_users", "p_userset"));
	assert_true(covers("p_root", "p_api"));
	assert_true(covers("p_root", "p_users"));
	assert_false(covers("p_api", "p_root"));
}

static void test_covers_exact_paths(void **state)
{
	(void)state;
	assert_true(covers("p_api", "x_api"));
	assert_true(covers("p_api", "x_user7"));
	assert_true(covers("p_users", "x_user7"));
	assert_false(covers("p_api", "x_apix"));
	assert_false(covers("p_api_slash", "x_api"));
	assert_true(covers("x_api", "x_api"));
	assert_false(covers("x_api", "p_api"));
	assert_false(covers("x_api", "x_user7"));
}

static void test_covers_methods(void **state)
{
	(void)state;
	assert_true(covers("m_get_head", "m_get"));
	assert_false(covers("m_get", "m_get_head"));
	assert_false(covers("m_get", "m_get_post"));
	assert_false(covers("m_get", "p_api"));     /* later accepts every method */
	assert_true(covers("p_api", "m_get_post")); /* earlier accepts every method */
	assert_true(covers("m_get_post", "m_get"));
}

static void test_covers_headers_and_query(void **state)
{
	(void)state;
	assert_true(covers("h_any", "h_1")); /* names compared case-insensitively */
	assert_false(covers("h_1", "h_any"));
	assert_true(covers("h_1", "h_1_b"));
	assert_false(covers("h_1_b", "h_1"));
	assert_false(covers("h_1", "h_2"));
	assert_false(covers("h_1", "p_api"));
	assert_true(covers("p_api", "h_1_b"));
	assert_true(covers("q_any", "q_1"));
	assert_false(covers("q_1", "q_any"));
	assert_false(covers("q_1", "p_api"));
}

/* match.host: any port, any case, a final dot; *.NAME for the names below
 * NAME at any depth, not NAME itself; no Host, no match. */
static void test_host(void **state)
{
	(void)state;
	static const struct {
		const char *route, *host;
		int yes;
	} cases[] = {
		{"host_api", "api.example.com", 1},   {"host_api", "API.Example.COM:8443", 1},
		{"host_api", "api.example.com.", 1},  {"host_api", "api.example.co", 0},
		{"host_api", "xapi.example.com", 0},  {"host_api", "api.example.com.x", 0},
		{"host_any", "a.example.com", 1},     {"host_any", "a.b.example.com:80", 1},
		{"host_any", "example.com", 0},       {"host_any", "aexample.com", 0},
		{"host_any", ".example.com", 0},      {"host_apex", "example.com:1", 1},
		{"host_apex", "a.example.com", 0},    {"host_sub", "x.eu.example.com", 1},
		{"host_sub", "eu.example.com", 0},    {"host_api", "", 0},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct sp_hdr h = {"Host", 4, cases[i].host, strlen(cases[i].host)};
		struct sp_reqview q = unit_req("GET", "/", NULL, &h, 1, NULL);
		if (sp_route_matches(unit_route(covers_cfg, cases[i].route), &q) != cases[i].yes)
			fail_msg("%s with Host %s: %s", cases[i].route, cases[i].host,
				 cases[i].yes ? "no match" : "a match");
	}
	/* no Host at all (HTTP/1.0) */
	struct sp_reqview none = unit_req("GET", "/", NULL, NULL, 0, NULL);
	assert_false(sp_route_matches(unit_route(covers_cfg, "host_apex"), &none));
	/* the pattern is kept in lower case, without its final dot */
	assert_string_equal(unit_route(covers_cfg, "host_api")->match.host, "api.example.com");
	/* covers: a wildcard covers the names and wildcards below it */
	assert_true(covers("host_any", "host_api"));
	assert_true(covers("host_any", "host_sub"));
	assert_false(covers("host_any", "host_apex"));
	assert_false(covers("host_sub", "host_any"));
	assert_false(covers("host_api", "host_any"));
	assert_false(covers("host_api", "p_root")); /* a host condition covers no hostless route */
	assert_true(covers("everything", "host_any"));
}

/* match.client_ip: the client's address in one of the blocks, IPv4 and
 * IPv6 apart (an IPv4-mapped address is the IPv4 one); an unknown address
 * (a PROXY header's UNKNOWN) matches none. */
static void test_client_ip(void **state)
{
	(void)state;
	static const struct {
		const char *route, *addr;
		int yes;
	} cases[] = {
		{"ip_ten", "10.0.0.1", 1},        {"ip_ten", "10.255.255.255", 1},
		{"ip_ten", "11.0.0.1", 0},        {"ip_ten", "9.255.255.255", 0},
		{"ip_ten", "2001:db8::1", 1},     {"ip_ten", "2001:db9::1", 0},
		{"ip_ten", "::ffff:10.9.9.9", 1}, {"ip_ten", "::a00:1", 0}, /* ::10.0.0.1 is IPv6 */
		{"ip_net", "10.1.200.7", 1},      {"ip_net", "10.2.0.1", 0},
		{"ip_net", "2001:db8:1:ff::1", 1}, {"ip_net", "2001:db8:2::1", 0},
		{"ip_one", "10.1.2.3", 1},        {"ip_one", "10.1.2.4", 0},
		{"ip_one", "::ffff:10.1.2.3", 1}, {"ip_all4", "203.0.113.9", 1},
		{"ip_all4", "::1", 0},            {"ip_api", "10.0.0.1", 1},
		{"ip_mixed", "192.0.2.200", 1},   {"ip_mixed", "192.0.3.1", 0},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		const char *path = strcmp(cases[i].route, "ip_api") == 0 ? "/api/x" : "/";
		struct sp_reqview q = unit_req("GET", path, NULL, NULL, 0, cases[i].addr);
		assert_non_null(q.client_addr);
		if (sp_route_matches(unit_route(covers_cfg, cases[i].route), &q) != cases[i].yes)
			fail_msg("%s from %s: %s", cases[i].route, cases[i].addr,
				 cases[i].yes ? "no match" : "a match");
	}
	struct sp_reqview api_other = unit_req("GET", "/web", NULL, NULL, 0, "10.0.0.1");
	assert_false(sp_route_matches(unit_route(covers_cfg, "ip_api"), &api_other));
	/* the proxy's view after a PROXY header without an address: family 0 */
	struct sp_ip none = {0};
	struct sp_reqview unknown = unit_req("GET", "/", NULL, NULL, 0, NULL);
	unknown.client_addr = &none;
	assert_false(sp_route_matches(unit_route(covers_cfg, "ip_all4"), &unknown));
	assert_false(sp_route_matches(unit_route(covers_cfg, "ip_ten"), &unknown));
	assert_true(sp_route_matches(unit_route(covers_cfg, "everything"), &unknown));
	unknown.client_addr = NULL; /* explain and the tests without an address */
	assert_false(sp_route_matches(unit_route(covers_cfg, "ip_all4"), &unknown));
	/* covers: each of the later route's blocks inside one of the earlier's */
	assert_true(covers("ip_ten", "ip_net"));
	assert_false(covers("ip_net", "ip_ten"));
	assert_true(covers("ip_net", "ip_one"));  /* the mapped address is 10.1.2.3 */
	assert_true(covers("ip_ten", "ip_one"));
	assert_false(covers("ip_ten", "ip_mixed")); /* 192.0.2.0/24 is outside */
	assert_true(covers("ip_all4", "ip_mixed"));
	assert_false(covers("ip_all4", "ip_ten"));  /* 2001:db8::/32 is not IPv4 */
	assert_true(covers("ip_ten", "ip_api"));
	assert_false(covers("ip_api", "ip_ten"));
	assert_false(covers("ip_ten", "everything"));
	assert_true(covers("everything", "ip_ten"));
	assert_true(covers("p_api", "ip_api"));
	assert_false(covers("ip_api", "p_api"));
}

static void test_covers_regex_conservative(void **state)
{
	(void)state;
	/* Prefix "/" does catch "/api/v[0-9]+", but regexes are not analysed. */
	/* a prefix covering a regex's literal prefix at a segment boundary
	 * covers every path it matches ("/api/v[0-9]+" starts "/api/v") */
	assert_true(covers("p_root", "r_v"));
	assert_true(covers("p_api", "r_v"));
	assert_true(covers("p_api_slash", "r_v"));
	assert_false(covers("p_users", "r_v"));
	assert_false(covers("r_v", "x_v1"));
	assert_false(covers("r_v", "p_api"));
	assert_true(covers("r_v", "r_v_again")); /* same source text */
	/* No path condition at all covers everything, regexes included. */
	assert_true(covers("everything", "r_v"));
	assert_true(covers("everything", "h_1_b"));
	assert_false(covers("p_root", "everything"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exact_path),
		cmocka_unit_test(test_regex_time_is_linear_in_the_path),
		cmocka_unit_test(test_prefix_is_segment_aware),
		cmocka_unit_test(test_prefix_ending_in_slash),
		cmocka_unit_test(test_regex_matches_whole_path),
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_header_values_exact_names_any_case),
		cmocka_unit_test(test_header_presence),
		cmocka_unit_test(test_query_value_decoded),
		cmocka_unit_test(test_query_presence),
		cmocka_unit_test(test_all_conditions_must_hold),
		cmocka_unit_test(test_route_matches_single),
		cmocka_unit_test(test_first_match_wins),
		cmocka_unit_test(test_index_keeps_file_order),
		cmocka_unit_test(test_no_match_goes_to_default_backend),
		cmocka_unit_test(test_query_get),
	};
	const struct CMUnitTest covers_tests[] = {
		cmocka_unit_test(test_covers_prefixes),
		cmocka_unit_test(test_covers_exact_paths),
		cmocka_unit_test(test_covers_methods),
		cmocka_unit_test(test_covers_headers_and_query),
		cmocka_unit_test(test_covers_regex_conservative),
		cmocka_unit_test(test_host),
		cmocka_unit_test(test_client_ip),
	};
	int failed = cmocka_run_group_tests_name("router", tests, group_setup, group_teardown);
	failed += cmocka_run_group_tests_name("route_covers", covers_tests, covers_setup,
					      covers_teardown);
	return failed;
}
