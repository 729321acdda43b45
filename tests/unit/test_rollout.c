/* Unit tests of proxy/rollout.c: the documented bucket hash (FNV-1a 32 over
 * cohort ":" key, mod 10000), sticky keys, and the properties a percentage
 * rollout must keep: deterministic, grow-only, shared per cohort, and close to
 * the configured split. */
#include "unit.h"

#include <stdlib.h>

#define NKEYS 10000

#define CONF_HEAD                                                              \
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"                   \
	"backends = {\n"                                                       \
	"  legacy = { url = \"http://127.0.0.1:9001\"; };\n"                   \
	"  modern = { url = \"http://127.0.0.1:9002\"; };\n"                   \
	"};\n"                                                                 \
	"default_backend = \"legacy\";\n"

/* Reference FNV-1a 32, written from the published definition, independent of
 * proxy/rollout.c. */
static uint32_t ref_fnv1a(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 16777619u;
	}
	return h;
}

/* The hash of the documented input "cohort:key". */
static uint32_t ref_rollout_hash(const char *cohort, const char *key)
{
	char in[256];
	int n = snprintf(in, sizeof(in), "%s:%s", cohort, key);
	assert_in_range(n, 1, (int)sizeof(in) - 1);
	return ref_fnv1a(in, (size_t)n);
}

static void key_of(char *buf, size_t len, int i)
{
	snprintf(buf, len, "user-%d", i);
}

/* A config with one rollout route "r" on prefix "/" at percent (text) and sticky. */
/* Route "r" with a rollout whose sticky setting is written as value. */
static struct sp_config *rollout_config_as(const char *percent, const char *value, const char *more)
{
	char text[1024];
	snprintf(text, sizeof(text),
		 CONF_HEAD "routes = ( { name = \"r\"; match = { path_prefix = \"/\"; };\n"
			   "  backend = \"legacy\";\n"
			   "  rollout = { backend = \"modern\"; percent = %s; sticky = %s;%s }; } );\n",
		 percent, value, more);
	return unit_load_ok(text, NULL);
}

static struct sp_config *rollout_config(const char *percent, const char *sticky)
{
	char value[256];
	snprintf(value, sizeof(value), "\"%s\"", sticky);
	return rollout_config_as(percent, value, "");
}

/* Decision for a request carrying key as X-User-Id. */
static void decide_for_key(const struct sp_config *c, const char *path, const char *key,
			   struct sp_decision *d)
{
	struct sp_hdr h = {"X-User-Id", 9, key, strlen(key)};
	struct sp_reqview q = unit_req("GET", path, NULL, &h, 1, "192.0.2.1");
	struct sp_buf scratch;
	uint64_t rng = 42;
	sp_buf_init(&scratch);
	sp_decide(c->routes, c->nroutes, c->route_index, c->default_backend, &q, &rng, &scratch, d);
	sp_buf_deinit(&scratch);
}

static void test_reference_fnv_is_fnv1a(void **state)
{
	(void)state;
	/* Published FNV-1a 32 test vectors (isthe.com/chongo/tech/comp/fnv). */
	assert_int_equal(ref_fnv1a("", 0), 0x811c9dc5u);
	assert_int_equal(ref_fnv1a("a", 1), 0xe40c292cu);
	assert_int_equal(ref_fnv1a("foobar", 6), 0xbf9cf968u);
}

static void test_hash_vectors(void **state)
{
	(void)state;
	/* Constants computed separately (Python) over the bytes of cohort ":" key. */
	assert_int_equal(sp_rollout_hash("orders", "u42", 3), 1410818035u);
	assert_int_equal(sp_rollout_hash("a", "b", 1), 146638144u);
	assert_int_equal(sp_rollout_hash("cohort", "user-1", 6), 816344871u);
	assert_int_equal(sp_rollout_hash("orders", "", 0), 552039138u);
	/* The worked example of docs/configuration.md. */
	assert_int_equal(sp_rollout_hash("orders", "user-3", 6), 1183281809u);
	assert_int_equal(sp_rollout_bucket("orders", "user-3", 6), 1809u);
	assert_int_equal(sp_rollout_hash("orders", "u42", 3), ref_rollout_hash("orders", "u42"));
	/* key_len bounds the key; bytes after it do not count. */
	assert_int_equal(sp_rollout_hash("orders", "u42-and-more", 3), 1410818035u);
	/* Embedded NUL bytes in the key are hashed. */
	assert_int_equal(sp_rollout_hash("c", "k\0x", 3), ref_fnv1a("c:k\0x", 5));
	char key[32];
	for (int i = 0; i < 1000; i++) {
		key_of(key, sizeof(key), i);
		assert_int_equal(sp_rollout_hash("orders", key, strlen(key)),
				 ref_rollout_hash("orders", key));
	}
}

static void test_bucket_is_hash_mod_10000(void **state)
{
	(void)state;
	assert_int_equal(sp_rollout_bucket("orders", "u42", 3), 8035u);
	assert_int_equal(sp_rollout_bucket("a", "b", 1), 8144u);
	assert_int_equal(sp_rollout_bucket("cohort", "user-1", 6), 4871u);
	char key[32];
	for (int i = 0; i < 1000; i++) {
		key_of(key, sizeof(key), i);
		uint32_t b = sp_rollout_bucket("checkout", key, strlen(key));
		assert_int_equal(b, ref_rollout_hash("checkout", key) % 10000u);
		assert_true(b < 10000u);
	}
}

static void test_deterministic(void **state)
{
	(void)state;
	struct sp_config *c = rollout_config("30.0", "header:X-User-Id");
	char key[32];
	for (int i = 0; i < 500; i++) {
		struct sp_decision a, b;
		key_of(key, sizeof(key), i);
		decide_for_key(c, "/x", key, &a);
		decide_for_key(c, "/y/z", key, &b);
		assert_int_equal(a.sticky, 1);
		assert_int_equal(a.bucket, b.bucket);
		assert_int_equal(a.to_rollout, b.to_rollout);
		assert_int_equal(a.backend, b.backend);
		assert_int_equal(a.bucket, sp_rollout_bucket("r", key, strlen(key)));
	}
	sp_config_unref(&c);
}

/* Raising the percentage only ever moves keys to the rollout side. */
static void test_grow_only(void **state)
{
	(void)state;
	static const char *const percents[] = {"0", "0.01", "1", "5.5", "10", "25",
					       "33.33", "50", "75", "99.99", "100"};
	enum { NP = NELEM(percents) };
	static unsigned char rolled[NP][NKEYS];
	char key[32];
	for (size_t p = 0; p < NP; p++) {
		struct sp_config *c = rollout_config(percents[p], "header:X-User-Id");
		uint32_t bp = c->routes[0].rollout.percent_bp;
		int modern = sp_backend_index(c, "modern"), legacy = sp_backend_index(c, "legacy");
		for (int i = 0; i < NKEYS; i++) {
			struct sp_decision d;
			key_of(key, sizeof(key), i);
			decide_for_key(c, "/", key, &d);
			rolled[p][i] = (unsigned char)d.to_rollout;
			assert_int_equal(d.backend, d.to_rollout ? modern : legacy);
			/* Exactly the keys whose reference bucket is below the threshold. */
			assert_int_equal(d.to_rollout, ref_rollout_hash("r", key) % 10000u < bp);
		}
		sp_config_unref(&c);
	}
	for (int i = 0; i < NKEYS; i++)
		for (size_t p = 1; p < NP; p++)
			if (rolled[p - 1][i] && !rolled[p][i]) {
				print_error("key user-%d left the rollout going from %s%% to %s%%\n", i,
					    percents[p - 1], percents[p]);
				fail();
			}
}

static void test_cohort_sharing(void **state)
{
	(void)state;
	static const char text[] = CONF_HEAD
		"routes = (\n"
		"  { name = \"a\"; match = { path_prefix = \"/a\"; }; backend = \"legacy\";\n"
		"    rollout = { backend = \"modern\"; percent = 50; sticky = \"header:X-User-Id\";\n"
		"                cohort = \"shared\"; }; },\n"
		"  { name = \"b\"; match = { path_prefix = \"/b\"; }; backend = \"legacy\";\n"
		"    rollout = { backend = \"modern\"; percent = 50; sticky = \"header:X-User-Id\";\n"
		"                cohort = \"shared\"; }; },\n"
		"  { name = \"c\"; match = { path_prefix = \"/c\"; }; backend = \"legacy\";\n"
		"    rollout = { backend = \"modern\"; percent = 50; sticky = \"header:X-User-Id\"; }; }\n"
		");\n";
	struct sp_config *c = unit_load_ok(text, NULL);
	assert_string_equal(unit_route(c, "a")->rollout.cohort, "shared");
	assert_string_equal(unit_route(c, "c")->rollout.cohort, "c");
	int differ = 0;
	char key[32];
	for (int i = 0; i < NKEYS; i++) {
		struct sp_decision da, db, dc;
		key_of(key, sizeof(key), i);
		decide_for_key(c, "/a", key, &da);
		decide_for_key(c, "/b", key, &db);
		decide_for_key(c, "/c", key, &dc);
		assert_ptr_equal(da.route, unit_route(c, "a"));
		assert_ptr_equal(db.route, unit_route(c, "b"));
		assert_int_equal(da.bucket, db.bucket);
		assert_int_equal(da.to_rollout, db.to_rollout);
		assert_int_equal(dc.bucket, sp_rollout_bucket("c", key, strlen(key)));
		differ += da.to_rollout != dc.to_rollout;
	}
	/* Independent 50% splits disagree on about half of the keys. */
	assert_in_range(differ, NKEYS / 4, NKEYS * 3 / 4);
	sp_config_unref(&c);
}

static void test_distribution(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int bp;
	} cases[] = {{"1", 100}, {"10", 1000}, {"25.0", 2500}, {"50", 5000}, {"99", 9900}};
	char key[32];
	for (size_t k = 0; k < NELEM(cases); k++) {
		struct sp_config *c = rollout_config(cases[k].text, "header:X-User-Id");
		assert_int_equal(c->routes[0].rollout.percent_bp, (uint32_t)cases[k].bp);
		int n = 0;
		for (int i = 0; i < NKEYS; i++) {
			struct sp_decision d;
			key_of(key, sizeof(key), i);
			decide_for_key(c, "/", key, &d);
			n += d.to_rollout;
		}
		/* Within +-2 percentage points of NKEYS keys. */
		int ok = n >= cases[k].bp - 200 && n <= cases[k].bp + 200;
		if (!ok)
			print_error("percent %s: %d of %d keys rolled\n", cases[k].text, n, NKEYS);
		assert_true(ok);
		sp_config_unref(&c);
	}
}

static void test_zero_and_hundred_percent(void **state)
{
	(void)state;
	struct sp_config *zero = rollout_config("0", "header:X-User-Id");
	struct sp_config *all = rollout_config("100", "header:X-User-Id");
	assert_int_equal(zero->routes[0].rollout.percent_bp, 0);
	assert_int_equal(all->routes[0].rollout.percent_bp, 10000);
	struct sp_buf scratch;
	sp_buf_init(&scratch);
	uint64_t rng = 7;
	char key[32];
	for (int i = 0; i < NKEYS; i++) {
		struct sp_decision d;
		key_of(key, sizeof(key), i);
		decide_for_key(zero, "/", key, &d);
		assert_int_equal(d.to_rollout, 0);
		assert_int_equal(d.backend, sp_backend_index(zero, "legacy"));
		decide_for_key(all, "/", key, &d);
		assert_int_equal(d.to_rollout, 1);
		assert_int_equal(d.backend, sp_backend_index(all, "modern"));
		/* Key-less (random) requests obey the same bounds. */
		struct sp_reqview q = unit_req("GET", "/", NULL, NULL, 0, NULL);
		sp_decide(zero->routes, zero->nroutes, zero->route_index, zero->default_backend, &q,
			  &rng, &scratch, &d);
		assert_int_equal(d.sticky, 0);
		assert_int_equal(d.to_rollout, 0);
		sp_decide(all->routes, all->nroutes, all->route_index, all->default_backend, &q,
			  &rng, &scratch, &d);
		assert_int_equal(d.to_rollout, 1);
	}
	sp_buf_deinit(&scratch);
	sp_config_unref(&zero);
	sp_config_unref(&all);
}

/* Decides for a request with headers, query and client address under route "r". */
static struct sp_decision decide_req(const struct sp_config *c, const struct sp_hdr *h, size_t nh,
				     const char *query, const char *ip, uint64_t *rng)
{
	struct sp_reqview q = unit_req("GET", "/p", query, h, nh, ip);
	struct sp_buf scratch;
	struct sp_decision d;
	sp_buf_init(&scratch);
	sp_decide(c->routes, c->nroutes, c->route_index, c->default_backend, &q, rng, &scratch, &d);
	sp_buf_deinit(&scratch);
	return d;
}

#define BUCKET_R(key) sp_rollout_bucket("r", (key), sizeof(key) - 1)

static void test_sticky_header(void **state)
{
	(void)state;
	struct sp_config *c = rollout_config("50", "header:X-User-Id");
	uint64_t rng = 1;
	const struct sp_hdr h[] = {HDR("Host", "x"), HDR("x-user-id", "u42")};
	const struct sp_hdr two[] = {HDR("X-User-Id", "u42"), HDR("X-User-Id", "other")};
	const struct sp_hdr empty[] = {HDR("X-User-Id", "")};
	const struct sp_hdr other[] = {HDR("X-User", "u42")};
	struct sp_decision d = decide_req(c, h, NELEM(h), NULL, "10.0.0.1", &rng);
	assert_int_equal(d.rolled, 1);
	assert_int_equal(d.sticky, 1);
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	assert_int_equal(d.to_rollout, d.bucket < 5000u);
	d = decide_req(c, two, 2, NULL, NULL, &rng);
	assert_int_equal(d.sticky, 1);
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	d = decide_req(c, empty, 1, NULL, NULL, &rng);
	assert_int_equal(d.rolled, 1);
	assert_int_equal(d.sticky, 0);
	/* an empty field is passed over, as a cookie's empty value: the user
	 * is the one the next field names (it was sent at random) */
	const struct sp_hdr empty_then[] = {HDR("X-User-Id", ""), HDR("X-User-Id", "u42")};
	d = decide_req(c, empty_then, 2, NULL, NULL, &rng);
	assert_int_equal(d.sticky, 1);
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	d = decide_req(c, other, 1, "X-User-Id=u42", "10.0.0.1", &rng);
	assert_int_equal(d.sticky, 0);
	sp_config_unref(&c);
}

static void test_sticky_cookie(void **state)
{
	(void)state;
	struct sp_config *c = rollout_config("50", "cookie:uid");
	uint64_t rng = 1;
	const uint32_t want = BUCKET_R("u42");
	const struct sp_hdr plain[] = {HDR("Cookie", "uid=u42")};
	const struct sp_hdr several[] = {HDR("Cookie", "a=1; uid=u42; b=2")};
	const struct sp_hdr quoted[] = {HDR("cookie", "a=1;uid=\"u42\"; b=2")};
	const struct sp_hdr lookalikes[] = {HDR("Cookie", "xuid=no; uid2=no;  uid=u42")};
	const struct sp_hdr split[] = {HDR("Cookie", "a=1; b=2"), HDR("Accept", "*/*"),
				       HDR("Cookie", "uid=u42")};
	const struct sp_hdr trailing[] = {HDR("Cookie", "uid=u42 ; z=1")};
	const struct sp_hdr absent[] = {HDR("Cookie", "a=1; b=2"), HDR("X-uid", "u42")};
	const struct sp_hdr empty[] = {HDR("Cookie", "uid=; a=1")};
	/* an empty one is passed over, in one header as across several: the
	 * split must not change the decision */
	const struct sp_hdr empty_then[] = {HDR("Cookie", "uid=; uid=u42")};
	const struct sp_hdr empty_then_split[] = {HDR("Cookie", "uid="), HDR("Cookie", "uid=u42")};
	/* every one of these carries uid=u42 */
	const struct {
		const struct sp_hdr *h;
		size_t n;
	} sticky[] = {
		{plain, NELEM(plain)},		 {several, NELEM(several)},
		{quoted, NELEM(quoted)},	 {lookalikes, NELEM(lookalikes)},
		{split, NELEM(split)},		 {trailing, NELEM(trailing)},
		{empty_then, NELEM(empty_then)}, {empty_then_split, NELEM(empty_then_split)},
	};
	struct sp_decision d;
	for (size_t i = 0; i < NELEM(sticky); i++) {
		d = decide_req(c, sticky[i].h, sticky[i].n, NULL, NULL, &rng);
		assert_int_equal(d.sticky, 1);
		assert_int_equal(d.bucket, want);
	}
	d = decide_req(c, absent, NELEM(absent), "uid=u42", "10.0.0.1", &rng);
	assert_int_equal(d.rolled, 1);
	assert_int_equal(d.sticky, 0);
	d = decide_req(c, empty, 1, NULL, NULL, &rng);
	assert_int_equal(d.sticky, 0);
	sp_config_unref(&c);
}

/* rollout.set_cookie: a request without the cookie gets a key drawn for
 * it (16 hex digits), and its bucket is that key's, as the next request,
 * which carries the cookie, will have; with the cookie nothing is drawn. */
static void test_set_cookie_draws_a_key(void **state)
{
	(void)state;
	char text[1024];
	snprintf(text, sizeof(text),
		 CONF_HEAD "routes = ( { name = \"r\"; match = { path_prefix = \"/\"; };\n"
			   "  backend = \"legacy\";\n"
			   "  rollout = { backend = \"modern\"; percent = 50; sticky = \"cookie:uid\";\n"
			   "              set_cookie = true; }; } );\n");
	struct sp_config *c = unit_load_ok(text, NULL);
	uint64_t rng = 7;
	const struct sp_hdr other[] = {HDR("Cookie", "a=1")};
	const struct sp_hdr with[] = {HDR("Cookie", "uid=u42")};
	int sides[2] = {0, 0};
	char first[SP_ASSIGNED_KEY + 1] = "";
	for (int i = 0; i < 200; i++) {
		struct sp_decision d = decide_req(c, other, NELEM(other), NULL, NULL, &rng);
		assert_int_equal(strlen(d.assigned), SP_ASSIGNED_KEY);
		assert_int_equal(strspn(d.assigned, "0123456789abcdef"), SP_ASSIGNED_KEY);
		assert_int_equal(d.sticky, 1);
		assert_int_equal(d.bucket, sp_rollout_bucket("r", d.assigned, SP_ASSIGNED_KEY));
		assert_int_equal(d.to_rollout, d.bucket < 5000);
		sides[d.to_rollout]++;
		if (i == 0)
			memcpy(first, d.assigned, sizeof(first));
		else
			assert_string_not_equal(d.assigned, first);
	}
	assert_true(sides[0] > 60 && sides[1] > 60); /* drawn, not one side */
	struct sp_decision d = decide_req(c, with, NELEM(with), NULL, NULL, &rng);
	assert_string_equal(d.assigned, "");
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	sp_config_unref(&c);
	/* only with a sticky cookie */
	snprintf(text, sizeof(text),
		 CONF_HEAD "routes = ( { name = \"r\"; match = { path_prefix = \"/\"; };\n"
			   "  backend = \"legacy\";\n"
			   "  rollout = { backend = \"modern\"; percent = 50; sticky = \"header:X-U\";\n"
			   "              set_cookie = true; }; } );\n");
	REJECTED(text, 1, TEST_CONF ":10: routes.[0].rollout.set_cookie: needs sticky = "
			  "\"cookie:NAME\", or a list of keys that ends with it (the cookie it sets)");
}

static void test_sticky_query(void **state)
{
	(void)state;
	struct sp_config *c = rollout_config("50", "query:user");
	uint64_t rng = 1;
	const struct sp_hdr h[] = {HDR("User", "u42")};
	struct sp_decision d;
	d = decide_req(c, NULL, 0, "user=u42", NULL, &rng);
	assert_int_equal(d.sticky, 1);
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	/* Percent-decoded before hashing. */
	d = decide_req(c, NULL, 0, "x=1&user=u%342&user=zzz", NULL, &rng);
	assert_int_equal(d.sticky, 1);
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	d = decide_req(c, NULL, 0, "user=a+b", NULL, &rng);
	assert_int_equal(d.bucket, BUCKET_R("a b"));
	d = decide_req(c, h, 1, "users=u42", "10.0.0.1", &rng);
	assert_int_equal(d.sticky, 0);
	d = decide_req(c, NULL, 0, "user=", NULL, &rng);
	assert_int_equal(d.sticky, 0);
	d = decide_req(c, NULL, 0, "user=&user=u42", NULL, &rng); /* the first not empty */
	assert_int_equal(d.sticky, 1);
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	d = decide_req(c, NULL, 0, NULL, NULL, &rng);
	assert_int_equal(d.sticky, 0);
	assert_int_equal(d.rolled, 1);
	sp_config_unref(&c);
}

/* sticky = [keys...]: the first key the request has decides, hashed as that
 * key alone would be; none: random, or with set_cookie a drawn key for the
 * cookie, which is the last key. */
static void test_sticky_list(void **state)
{
	(void)state;
	struct sp_config *c =
		rollout_config_as("50", "[\"header:X-User-Id\", \"cookie:sid\", \"client_ip\"]", "");
	assert_int_equal(c->routes[0].rollout.nsticky, 3);
	uint64_t rng = 1;
	const struct sp_hdr both[] = {HDR("Cookie", "sid=s7"), HDR("X-User-Id", "u42")};
	const struct sp_hdr cookie[] = {HDR("Cookie", "sid=s7")};
	const struct sp_hdr empty_id[] = {HDR("X-User-Id", ""), HDR("Cookie", "sid=s7")};
	struct sp_decision d = decide_req(c, both, NELEM(both), NULL, "192.0.2.7", &rng);
	assert_int_equal(d.sticky, 1);
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	d = decide_req(c, cookie, NELEM(cookie), NULL, "192.0.2.7", &rng);
	assert_int_equal(d.sticky, 2);
	assert_int_equal(d.bucket, BUCKET_R("s7"));
	d = decide_req(c, empty_id, NELEM(empty_id), NULL, "192.0.2.7", &rng);
	assert_int_equal(d.sticky, 2); /* an empty value is no key */
	d = decide_req(c, NULL, 0, NULL, "192.0.2.7", &rng);
	assert_int_equal(d.sticky, 3);
	assert_int_equal(d.bucket, BUCKET_R("192.0.2.7"));
	d = decide_req(c, NULL, 0, NULL, NULL, &rng);
	assert_int_equal(d.sticky, 0); /* no address known: random */
	assert_int_equal(d.rolled, 1);
	/* the shadow sample's key is the same first key */
	struct sp_reqview q = unit_req("GET", "/p", NULL, cookie, NELEM(cookie), "192.0.2.7");
	struct sp_buf scratch;
	const char *key;
	size_t len;
	sp_buf_init(&scratch);
	assert_int_equal(sp_rollout_key(&c->routes[0].rollout, &q, &scratch, &key, &len), 2);
	assert_int_equal(len, 2);
	assert_memory_equal(key, "s7", 2);
	sp_buf_deinit(&scratch);
	sp_config_unref(&c);
	/* a single key written as a list of one is that key */
	c = rollout_config_as("50", "[\"query:u\"]", "");
	d = decide_req(c, NULL, 0, "u=u42", "192.0.2.7", &rng);
	assert_int_equal(d.sticky, 1);
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	sp_config_unref(&c);
	/* set_cookie: the list's last key is the cookie drawn for the others */
	c = rollout_config_as("50", "[\"header:X-User-Id\", \"cookie:sid\"]", " set_cookie = true;");
	d = decide_req(c, NULL, 0, NULL, "192.0.2.7", &rng);
	assert_int_equal(strlen(d.assigned), SP_ASSIGNED_KEY);
	assert_int_equal(d.sticky, 2);
	assert_int_equal(d.bucket, sp_rollout_bucket("r", d.assigned, SP_ASSIGNED_KEY));
	d = decide_req(c, both, NELEM(both), NULL, NULL, &rng);
	assert_string_equal(d.assigned, "");
	assert_int_equal(d.bucket, BUCKET_R("u42"));
	sp_config_unref(&c);
}

static void test_sticky_list_errors(void **state)
{
	(void)state;
	static const struct {
		const char *value, *more, *msg;
	} cases[] = {
		{"[\"header:A\", \"header:a\"]", "",
		 ":9: routes.[0].rollout.sticky.[1]: \"header:a\": listed twice"},
		{"[\"cookie:a\", \"cookie:A\", \"cookie:a\"]", "",
		 ":9: routes.[0].rollout.sticky.[2]: \"cookie:a\": listed twice"},
		{"[\"client_ip\", \"header:X-User-Id\"]", "",
		 ":9: routes.[0].rollout.sticky.[1]: \"header:X-User-Id\": after client_ip, which "
		 "every request has: never used"},
		{"[]", "", ":9: routes.[0].rollout.sticky: at least one key (or leave sticky out: a "
			   "random side per request)"},
		{"[\"query:a\", \"query:b\", \"query:c\", \"query:d\", \"query:e\"]", "",
		 ":9: routes.[0].rollout.sticky: at most 4 keys"},
		{"[\"header:A\", \"nope\"]", "",
		 ":9: routes.[0].rollout.sticky.[1]: \"nope\": must be \"header:NAME\", "
		 "\"cookie:NAME\", \"query:NAME\" or \"client_ip\""},
		{"(\"header:A\", 1)", "", /* a list may mix types; an array may not */
		 ":9: routes.[0].rollout.sticky: must be a key (\"header:X-User-Id\") or a list of "
		 "keys, the first the request has deciding: [\"header:X-User-Id\", \"client_ip\"]"},
		{"[\"cookie:sid\", \"header:A\"]", " set_cookie = true;",
		 ":9: routes.[0].rollout.set_cookie: needs sticky = \"cookie:NAME\", or a list of "
		 "keys that ends with it (the cookie it sets)"},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		char text[1024];
		snprintf(text, sizeof(text),
			 CONF_HEAD "routes = ( { name = \"r\"; match = { path_prefix = \"/\"; };\n"
				   "  backend = \"legacy\";\n"
				   "  rollout = { backend = \"modern\"; percent = 5; sticky = %s;%s }; } );\n",
			 cases[i].value, cases[i].more);
		char want[512];
		snprintf(want, sizeof(want), TEST_CONF "%s", cases[i].msg);
		unit_rejected(text, 1, MSGS(want), 1, __LINE__);
	}
}

static void test_sticky_client_ip(void **state)
{
	(void)state;
	struct sp_config *c = rollout_config("50", "client_ip");
	uint64_t rng = 1;
	const struct sp_hdr h[] = {HDR("X-Forwarded-For", "203.0.113.9")};
	struct sp_decision d;
	d = decide_req(c, h, 1, NULL, "192.0.2.7", &rng);
	assert_int_equal(d.sticky, 1);
	assert_int_equal(d.bucket, BUCKET_R("192.0.2.7"));
	d = decide_req(c, NULL, 0, NULL, "2001:db8::1", &rng);
	assert_int_equal(d.bucket, BUCKET_R("2001:db8::1"));
	d = decide_req(c, h, 1, NULL, NULL, &rng);
	assert_int_equal(d.sticky, 0);
	d = decide_req(c, h, 1, NULL, "", &rng);
	assert_int_equal(d.sticky, 0);
	sp_config_unref(&c);
}

/* Without a sticky key the side is drawn from the caller's rng, per request. */
static void test_random_fallback(void **state)
{
	(void)state;
	struct sp_config *c = rollout_config("50", "header:X-User-Id");
	uint64_t rng = 12345, before = rng;
	int n = 0, distinct = 0;
	uint32_t first = 0;
	for (int i = 0; i < 2000; i++) {
		struct sp_decision d = decide_req(c, NULL, 0, NULL, "10.0.0.1", &rng);
		assert_int_equal(d.rolled, 1);
		assert_int_equal(d.sticky, 0);
		assert_true(d.bucket < 10000u);
		assert_int_equal(d.to_rollout, d.bucket < 5000u);
		n += d.to_rollout;
		if (i == 0)
			first = d.bucket;
		else
			distinct += d.bucket != first;
	}
	assert_true(rng != before);
	assert_in_range(distinct, 1900, 1999);
	assert_in_range(n, 800, 1200);
	/* Same seed, same sequence. */
	uint64_t s1 = 99, s2 = 99;
	for (int i = 0; i < 10; i++)
		assert_int_equal(sp_rng_next(&s1), sp_rng_next(&s2));
	uint64_t zero = 0;
	assert_true(sp_rng_next(&zero) != 0);
	sp_config_unref(&c);
}

/* A route without rollout is never "rolled". */
static void test_no_rollout_route(void **state)
{
	(void)state;
	static const char text[] = CONF_HEAD
		"routes = ( { name = \"plain\"; match = { path_prefix = \"/\"; }; backend = \"modern\"; } );\n";
	struct sp_config *c = unit_load_ok(text, NULL);
	uint64_t rng = 1;
	const struct sp_hdr h[] = {HDR("X-User-Id", "u42")};
	struct sp_decision d = decide_req(c, h, 1, NULL, "10.0.0.1", &rng);
	assert_ptr_equal(d.route, &c->routes[0]);
	assert_int_equal(d.backend, sp_backend_index(c, "modern"));
	assert_int_equal(d.rolled, 0);
	assert_int_equal(d.sticky, 0);
	assert_int_equal(d.to_rollout, 0);
	assert_int_equal(rng, 1); /* no random draw either */
	sp_config_unref(&c);
}

static void test_sticky_key_direct(void **state)
{
	(void)state;
	struct sp_sticky none = {SP_STICKY_NONE, NULL};
	struct sp_sticky header = {SP_STICKY_HEADER, "X-Key"};
	const struct sp_hdr h[] = {HDR("x-key", "abc")};
	struct sp_reqview q = unit_req("GET", "/", "k=1", h, 1, "10.0.0.1");
	struct sp_buf scratch;
	const char *key = NULL;
	size_t len = 0;
	sp_buf_init(&scratch);
	assert_int_equal(sp_sticky_key(&none, &q, &scratch, &key, &len), 0);
	assert_int_equal(sp_sticky_key(&header, &q, &scratch, &key, &len), 1);
	assert_int_equal(len, 3);
	assert_memory_equal(key, "abc", 3);
	sp_buf_deinit(&scratch);
}

static void test_sticky_parse(void **state)
{
	(void)state;
	struct sp_sticky s;
	const char *why = NULL;
	assert_int_equal(sp_sticky_parse("header:X-User-Id", &s, &why), 0);
	assert_int_equal(s.kind, SP_STICKY_HEADER);
	assert_string_equal(s.name, "X-User-Id");
	free(s.name);
	assert_int_equal(sp_sticky_parse("cookie:sid", &s, &why), 0);
	assert_int_equal(s.kind, SP_STICKY_COOKIE);
	assert_string_equal(s.name, "sid");
	free(s.name);
	assert_int_equal(sp_sticky_parse("query:user_id", &s, &why), 0);
	assert_int_equal(s.kind, SP_STICKY_QUERY);
	assert_string_equal(s.name, "user_id");
	free(s.name);
	assert_int_equal(sp_sticky_parse("client_ip", &s, &why), 0);
	assert_int_equal(s.kind, SP_STICKY_CLIENT_IP);
	assert_null(s.name);
}

#define STICKY_ERR(spec, why_part)                                              \
	do {                                                                    \
		struct sp_sticky s_ = {SP_STICKY_HEADER, NULL};                 \
		const char *why_ = NULL;                                        \
		assert_int_equal(sp_sticky_parse((spec), &s_, &why_), -1);      \
		assert_non_null(why_);                                          \
		if (!strstr(why_, (why_part)))                                  \
			print_error("spec \"%s\": why \"%s\"\n", (spec), why_); \
		assert_non_null(strstr(why_, (why_part)));                      \
		assert_int_equal(s_.kind, SP_STICKY_NONE);                      \
		assert_null(s_.name);                                           \
	} while (0)

static void test_sticky_parse_errors(void **state)
{
	(void)state;
	STICKY_ERR("", "must be \"header:NAME\"");
	STICKY_ERR("ip", "must be \"header:NAME\"");
	STICKY_ERR("Header:X-User-Id", "must be \"header:NAME\"");
	STICKY_ERR("header", "must be \"header:NAME\"");
	STICKY_ERR("client_ip:x", "must be \"header:NAME\"");
	STICKY_ERR("header:", "missing name");
	STICKY_ERR("cookie:", "missing name");
	STICKY_ERR("query:", "missing name");
	STICKY_ERR("header:X User", "not allowed in a token");
	STICKY_ERR("cookie:a=b", "not allowed in a token");
	STICKY_ERR("query:a/b", "not allowed in a token");
	STICKY_ERR("header:X:Y", "not allowed in a token");
	STICKY_ERR("header:caf\xc3\xa9", "not allowed in a token");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reference_fnv_is_fnv1a),
		cmocka_unit_test(test_hash_vectors),
		cmocka_unit_test(test_bucket_is_hash_mod_10000),
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_grow_only),
		cmocka_unit_test(test_cohort_sharing),
		cmocka_unit_test(test_distribution),
		cmocka_unit_test(test_zero_and_hundred_percent),
		cmocka_unit_test(test_sticky_header),
		cmocka_unit_test(test_sticky_cookie),
		cmocka_unit_test(test_set_cookie_draws_a_key),
		cmocka_unit_test(test_sticky_query),
		cmocka_unit_test(test_sticky_client_ip),
		cmocka_unit_test(test_random_fallback),
		cmocka_unit_test(test_no_rollout_route),
		cmocka_unit_test(test_sticky_key_direct),
		cmocka_unit_test(test_sticky_parse),
		cmocka_unit_test(test_sticky_list),
		cmocka_unit_test(test_sticky_list_errors),
		cmocka_unit_test(test_sticky_parse_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
