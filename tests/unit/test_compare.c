/* Unit tests of proxy/compare.c: status, headers, JSON-aware bodies, ignore
 * pointers, Content-Encoding, value truncation, noise and the JSON output. */
#include "unit.h"

#include <jansson.h>
#include <stdlib.h>
#include <zlib.h>

#include "compare.h"
#include "comparer.h"

#define JSON_CT HDR("Content-Type", "application/json")

static const struct sp_hdr json_h[] = {JSON_CT};

static struct sp_cmp_side side_n(int status, const struct sp_hdr *h, size_t nh, const char *body,
				 size_t len)
{
	struct sp_cmp_side s = {status, h, nh, body, len};
	return s;
}

static struct sp_cmp_side side(int status, const struct sp_hdr *h, size_t nh, const char *body)
{
	return side_n(status, h, nh, body, body ? strlen(body) : 0);
}

static struct sp_cmp_rules json_rules(char **ignore, size_t nignore)
{
	struct sp_cmp_rules r = {NULL, 0, ignore, nignore, SP_CMP_JSON, 0};
	return r;
}

/* Compares two JSON bodies (both served as application/json, status 200). */
static void cmp_json(const struct sp_cmp_rules *rules, const char *a, const char *b,
		     struct sp_cmp_result *r)
{
	struct sp_cmp_side p = side(200, json_h, 1, a), s = side(200, json_h, 1, b);
	assert_int_equal(sp_compare(rules, &p, &s, r), 0);
}

static void dump_result(const struct sp_cmp_result *r)
{
	print_error("%zu diffs, note %s\n", r->ndiffs, r->note ? r->note : "(none)");
	for (size_t i = 0; i < r->ndiffs; i++)
		print_error("  %s %s: %s | %s\n", sp_cmp_kind_name(r->diffs[i].kind),
			    r->diffs[i].where ? r->diffs[i].where : "(null)",
			    r->diffs[i].primary ? r->diffs[i].primary : "(null)",
			    r->diffs[i].shadow ? r->diffs[i].shadow : "(null)");
}

static int str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Asserts that r holds a diff of kind at where with these texts (NULL:
 * absent), printing every diff when it does not. */
static void expect_diff(const struct sp_cmp_result *r, enum sp_diff_kind kind, const char *where,
			const char *primary, const char *shadow, int line)
{
	for (size_t i = 0; i < r->ndiffs; i++) {
		const struct sp_diff *d = &r->diffs[i];
		if (d->kind == kind && str_eq(d->where, where) && str_eq(d->primary, primary) &&
		    str_eq(d->shadow, shadow))
			return;
	}
	print_error("line %d: no %s diff at %s: %s | %s\n", line, sp_cmp_kind_name(kind),
		    where ? where : "(null)", primary ? primary : "(null)",
		    shadow ? shadow : "(null)");
	dump_result(r);
	fail();
}
#define EXPECT(r, k, w, p, s) expect_diff((r), (k), (w), (p), (s), __LINE__)

static void expect_ndiffs(const struct sp_cmp_result *r, size_t n, int line)
{
	if (r->ndiffs == n)
		return;
	print_error("line %d: want %zu diffs\n", line, n);
	dump_result(r);
	fail();
}
#define NDIFFS(r, n) expect_ndiffs((r), (n), __LINE__)

/* zlib-compresses s with window bits wbits (31 gzip, 15 zlib, -15 raw). */
static char *zip(const char *s, size_t len, int wbits, size_t *out_len)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
	size_t cap = deflateBound(&z, (uLong)len);
	char *out = malloc(cap);
	assert_non_null(out);
	z.next_in = (Bytef *)(uintptr_t)s;
	z.avail_in = (uInt)len;
	z.next_out = (Bytef *)out;
	z.avail_out = (uInt)cap;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	*out_len = cap - z.avail_out;
	deflateEnd(&z);
	return out;
}

/* --- status and headers ------------------------------------------------- */

static void test_identical(void **state)
{
	(void)state;
	char *hn[] = {"ETag"};
	struct sp_cmp_rules rules = {hn, 1, NULL, 0, SP_CMP_AUTO, 0};
	const struct sp_hdr h[] = {JSON_CT, HDR("ETag", "\"x\"")};
	struct sp_cmp_side p = side(200, h, 2, "{\"a\":[1,2,{\"b\":null}]}");
	struct sp_cmp_result r;
	assert_int_equal(sp_compare(&rules, &p, &p, &r), 0);
	NDIFFS(&r, 0);
	assert_null(r.note);
	sp_cmp_result_deinit(&r);
	assert_null(r.diffs);
}

static void test_status(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = {NULL, 0, NULL, 0, SP_CMP_AUTO, 0};
	struct sp_cmp_side p = side(200, NULL, 0, "x"), s = side(503, NULL, 0, "x");
	struct sp_cmp_result r;
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 1);
	EXPECT(&r, SP_DIFF_STATUS, NULL, "200", "503");
	sp_cmp_result_deinit(&r);
	/* the same class is not the same answer: 200 against 201, 301
	 * against 302 */
	p = side(200, NULL, 0, "x");
	s = side(201, NULL, 0, "x");
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 1);
	EXPECT(&r, SP_DIFF_STATUS, NULL, "200", "201");
	sp_cmp_result_deinit(&r);
	p = side(301, NULL, 0, "");
	s = side(302, NULL, 0, "");
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 1);
	EXPECT(&r, SP_DIFF_STATUS, NULL, "301", "302");
	sp_cmp_result_deinit(&r);
}

static void test_headers(void **state)
{
	(void)state;
	char *hn[] = {"x-version", "Cache-Control", "X-Only-Primary", "X-Only-Shadow", "X-Same"};
	struct sp_cmp_rules rules = {hn, NELEM(hn), NULL, 0, SP_CMP_NONE, 0};
	const struct sp_hdr ph[] = {HDR("X-Version", "1"),        HDR("cache-control", "no-cache"),
				    HDR("CACHE-CONTROL", "private"), HDR("X-Only-Primary", "p"),
				    HDR("X-Same", "a"),              HDR("x-same", "b")};
	const struct sp_hdr sh[] = {HDR("X-VERSION", "2"), HDR("Cache-Control", "no-cache"),
				    HDR("Cache-Control", "public"), HDR("X-Only-Shadow", "s\"q"),
				    HDR("X-SAME", "a"), HDR("X-Same", "b")};
	struct sp_cmp_side p = side(200, ph, NELEM(ph), "a"), s = side(200, sh, NELEM(sh), "b");
	struct sp_cmp_result r;
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	EXPECT(&r, SP_DIFF_HEADER, "x-version", "\"1\"", "\"2\"");
	EXPECT(&r, SP_DIFF_HEADER, "Cache-Control", "\"no-cache, private\"", "\"no-cache, public\"");
	EXPECT(&r, SP_DIFF_HEADER, "X-Only-Primary", "\"p\"", NULL);
	EXPECT(&r, SP_DIFF_HEADER, "X-Only-Shadow", NULL, "\"s\\\"q\"");
	/* bodies differ but SP_CMP_NONE skips them; X-Same is equal once joined */
	NDIFFS(&r, 4);
	sp_cmp_result_deinit(&r);
}

/* --- JSON bodies ----------------------------------------------------------- */

static void test_key_order_and_numbers(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = json_rules(NULL, 0);
	struct sp_cmp_result r;
	cmp_json(&rules, "{\"a\":1,\"b\":[true,null,\"s\"],\"c\":{\"x\":1.0,\"y\":2}}",
		 "{\"c\":{\"y\":2.0,\"x\":1},\"b\":[true,null,\"s\"],\"a\":1e0}", &r);
	NDIFFS(&r, 0);
	assert_null(r.note);
	sp_cmp_result_deinit(&r);

	cmp_json(&rules, "{\"n\":[1,2,0.1]}", "{\"n\":[1,3,0.2]}", &r);
	NDIFFS(&r, 2);
	EXPECT(&r, SP_DIFF_JSON, "/n/1", "2", "3");
	EXPECT(&r, SP_DIFF_JSON, "/n/2", "0.1", "0.2");
	sp_cmp_result_deinit(&r);

	/* Integers compare exactly (no detour through double), and two reals
	 * that print alike at display precision get their full text. */
	cmp_json(&rules, "[9007199254740993, 0.1]", "[9007199254740992, 0.10000000000000002]", &r);
	NDIFFS(&r, 2);
	EXPECT(&r, SP_DIFF_JSON, "/0", "9007199254740993", "9007199254740992");
	assert_string_not_equal(r.diffs[1].primary, r.diffs[1].shadow);
	sp_cmp_result_deinit(&r);

	/* A value is shown as compared whatever the other side holds: an
	 * integer against a real, a real the other side lacks (at 15 digits
	 * they read 9.00719925474099e15 and 1732849200123.46, values neither
	 * backend sent); 15 digits where they give the value back. */
	cmp_json(&rules, "{\"i\":9007199254740993,\"t\":1732849200123.4567,\"u\":0.25}",
		 "{\"i\":9007199254740992.0}", &r);
	NDIFFS(&r, 3);
	EXPECT(&r, SP_DIFF_JSON, "/i", "9007199254740993", "9007199254740992.0");
	assert_string_equal(r.diffs[1].where, "/t");
	assert_true(strtod(r.diffs[1].primary, NULL) == 1732849200123.4567);
	EXPECT(&r, SP_DIFF_JSON, "/u", "0.25", NULL);
	sp_cmp_result_deinit(&r);
	cmp_json(&rules, "{\"o\":{\"a\":0.1,\"b\":[0.30000000000000004]}}", "{}", &r);
	EXPECT(&r, SP_DIFF_JSON, "/o", "{\"a\":0.10000000000000001,\"b\":[0.30000000000000004]}",
	       NULL);
	sp_cmp_result_deinit(&r);

	/* An integer past 64 bits on one side only: both sides are read to
	 * double precision, said in a note (an exact /id on one side against a
	 * rounded one on the other was a difference the backends never made). */
	cmp_json(&rules, "{\"id\":9007199254740993,\"x\":123456789012345678901234}",
		 "{\"id\":9007199254740993,\"x\":123456789012345678901234.0}", &r);
	NDIFFS(&r, 0);
	assert_ptr_equal(r.note, sp_cmp_note_wide_ints);
	sp_cmp_result_deinit(&r);
}

static void test_nested_pointers(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = json_rules(NULL, 0);
	struct sp_cmp_result r;
	cmp_json(&rules, "{\"a\":{\"b\":[{\"c\":1},{\"d\":[0,{\"e\":\"x\"}]}]},\"z\":1}",
		 "{\"a\":{\"b\":[{\"c\":2},{\"d\":[0,{\"e\":\"y\"}]}]},\"z\":1}", &r);
	NDIFFS(&r, 2);
	EXPECT(&r, SP_DIFF_JSON, "/a/b/0/c", "1", "2");
	EXPECT(&r, SP_DIFF_JSON, "/a/b/1/d/1/e", "\"x\"", "\"y\"");
	sp_cmp_result_deinit(&r);

	/* a key on one side only, a scalar root */
	cmp_json(&rules, "{\"only_p\":{\"k\":1},\"same\":0}", "{\"same\":0,\"only_s\":[]}", &r);
	NDIFFS(&r, 2);
	EXPECT(&r, SP_DIFF_JSON, "/only_p", "{\"k\":1}", NULL);
	EXPECT(&r, SP_DIFF_JSON, "/only_s", NULL, "[]");
	sp_cmp_result_deinit(&r);

	cmp_json(&rules, "\"a\"", "\"b\"", &r);
	EXPECT(&r, SP_DIFF_JSON, "", "\"a\"", "\"b\"");
	sp_cmp_result_deinit(&r);
}

static void test_array_lengths(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = json_rules(NULL, 0);
	struct sp_cmp_result r;
	cmp_json(&rules, "{\"l\":[1,2,{\"x\":3}]}", "{\"l\":[1]}", &r);
	NDIFFS(&r, 2);
	EXPECT(&r, SP_DIFF_JSON, "/l/1", "2", NULL);
	EXPECT(&r, SP_DIFF_JSON, "/l/2", "{\"x\":3}", NULL);
	sp_cmp_result_deinit(&r);

	cmp_json(&rules, "[]", "[\"a\",\"b\"]", &r);
	NDIFFS(&r, 2);
	EXPECT(&r, SP_DIFF_JSON, "/0", NULL, "\"a\"");
	EXPECT(&r, SP_DIFF_JSON, "/1", NULL, "\"b\"");
	sp_cmp_result_deinit(&r);
}

static void test_type_mismatch(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = json_rules(NULL, 0);
	struct sp_cmp_result r;
	cmp_json(&rules, "{\"a\":\"1\",\"b\":null,\"c\":{},\"d\":true,\"e\":[1]}",
		 "{\"a\":1,\"b\":false,\"c\":[],\"d\":false,\"e\":{\"0\":1}}", &r);
	NDIFFS(&r, 5);
	EXPECT(&r, SP_DIFF_JSON, "/a", "\"1\"", "1");
	EXPECT(&r, SP_DIFF_JSON, "/b", "null", "false");
	EXPECT(&r, SP_DIFF_JSON, "/c", "{}", "[]");
	EXPECT(&r, SP_DIFF_JSON, "/d", "true", "false");
	EXPECT(&r, SP_DIFF_JSON, "/e", "[1]", "{\"0\":1}");
	sp_cmp_result_deinit(&r);
}

static void test_ignore(void **state)
{
	(void)state;
	char *ign[] = {"/meta/ts", "/results/*/took_ms", "/debug", "/*/cache"};
	struct sp_cmp_rules rules = json_rules(ign, NELEM(ign));
	struct sp_cmp_result r;
	cmp_json(&rules,
		 "{\"meta\":{\"ts\":1,\"v\":1},\"results\":[{\"id\":1,\"took_ms\":5},{\"id\":2,"
		 "\"took_ms\":7}],\"debug\":{\"host\":\"a\",\"x\":[1]},\"s\":{\"cache\":\"hit\"}}",
		 "{\"meta\":{\"ts\":2,\"v\":2},\"results\":[{\"id\":1,\"took_ms\":6},{\"id\":3,"
		 "\"took_ms\":8}],\"debug\":{\"host\":\"b\"},\"s\":{\"cache\":\"miss\"}}",
		 &r);
	/* what is not ignored still shows */
	NDIFFS(&r, 2);
	EXPECT(&r, SP_DIFF_JSON, "/meta/v", "1", "2");
	EXPECT(&r, SP_DIFF_JSON, "/results/1/id", "2", "3");
	sp_cmp_result_deinit(&r);

	/* ignoring the root ignores the whole body */
	char *root[] = {""};
	rules = json_rules(root, 1);
	cmp_json(&rules, "{\"a\":1}", "[2]", &r);
	NDIFFS(&r, 0);
	sp_cmp_result_deinit(&r);
}

static void test_pointer_match(void **state)
{
	(void)state;
	assert_true(sp_json_pointer_match("", ""));
	assert_true(sp_json_pointer_match("/a/b", "/a/b"));
	assert_true(sp_json_pointer_match("/a/*/c", "/a/0/c"));
	assert_true(sp_json_pointer_match("/a/*/c", "/a/key/c"));
	assert_true(sp_json_pointer_match("/*", "/"));
	assert_true(sp_json_pointer_match("/a~1b", "/a~1b"));
	assert_true(sp_json_pointer_match("/a/", "/a/"));
	assert_false(sp_json_pointer_match("/a/b", "/a/b/c"));
	assert_false(sp_json_pointer_match("/a/b/c", "/a/b"));
	assert_false(sp_json_pointer_match("/a/*", "/a"));
	assert_false(sp_json_pointer_match("/a", "/ab"));
	assert_false(sp_json_pointer_match("/a/", "/a"));
	assert_false(sp_json_pointer_match("", "/a"));
	assert_false(sp_json_pointer_match("/a*", "/ab"));
}

static void test_pointer_escaping(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = json_rules(NULL, 0);
	struct sp_cmp_result r;
	cmp_json(&rules, "{\"a/b\":1,\"m~n\":{\"~/\":1},\"\":1,\"é\":1}",
		 "{\"a/b\":2,\"m~n\":{\"~/\":2},\"\":2,\"é\":2}", &r);
	NDIFFS(&r, 4);
	EXPECT(&r, SP_DIFF_JSON, "/a~1b", "1", "2");
	EXPECT(&r, SP_DIFF_JSON, "/m~0n/~0~1", "1", "2");
	EXPECT(&r, SP_DIFF_JSON, "/", "1", "2");
	EXPECT(&r, SP_DIFF_JSON, "/é", "1", "2");
	sp_cmp_result_deinit(&r);

	char *ign[] = {"/a~1b", "/m~0n/*"};
	rules = json_rules(ign, NELEM(ign));
	cmp_json(&rules, "{\"a/b\":1,\"m~n\":{\"~/\":1}}", "{\"a/b\":2,\"m~n\":{\"~/\":2}}", &r);
	NDIFFS(&r, 0);
	sp_cmp_result_deinit(&r);
}

/* --- encodings and body modes ------------------------------------------ */

static void check_encoded_equal(const char *coding, int wbits)
{
	const char *doc = "{\"results\":[{\"id\":1},{\"id\":2}],\"total\":2}";
	size_t zlen;
	char *z = zip(doc, strlen(doc), wbits, &zlen);
	const struct sp_hdr zh[] = {JSON_CT, {"Content-Encoding", 16, coding, strlen(coding)}};
	struct sp_cmp_rules rules = {NULL, 0, NULL, 0, SP_CMP_AUTO, 0};
	struct sp_cmp_side p = side_n(200, zh, 2, z, zlen);
	struct sp_cmp_side s = side(200, json_h, 1, "{\"total\":2,\"results\":[{\"id\":1},{\"id\":2}]}");
	struct sp_cmp_result r;
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	if (r.ndiffs || r.note)
		print_error("coding %s (wbits %d)\n", coding, wbits);
	NDIFFS(&r, 0);
	assert_null(r.note);
	sp_cmp_result_deinit(&r);

	/* a difference inside the compressed document is found at its pointer */
	s = side(200, json_h, 1, "{\"total\":3,\"results\":[{\"id\":1},{\"id\":2}]}");
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 1);
	EXPECT(&r, SP_DIFF_JSON, "/total", "2", "3");
	sp_cmp_result_deinit(&r);
	free(z);
}

static void test_gzip_and_deflate(void **state)
{
	(void)state;
	check_encoded_equal("gzip", 16 + MAX_WBITS);
	check_encoded_equal("X-GZIP", 16 + MAX_WBITS);
	check_encoded_equal("deflate", MAX_WBITS);  /* zlib-wrapped, as RFC 9110 says */
	check_encoded_equal("deflate", -MAX_WBITS); /* raw, as some servers send */
	check_encoded_equal("identity, gzip", 16 + MAX_WBITS);
}

static void test_gzip_bytes_and_errors(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = {NULL, 0, NULL, 0, SP_CMP_BYTES, 0};
	const struct sp_hdr gz[] = {HDR("Content-Encoding", "gzip")};
	size_t zlen;
	char *z = zip("hello world!\n", 13, 16 + MAX_WBITS, &zlen);
	struct sp_cmp_side p = side_n(200, gz, 1, z, zlen), s = side(200, NULL, 0, "hello world!\n");
	struct sp_cmp_result r;
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 0);
	sp_cmp_result_deinit(&r);

	/* concatenated members decode as one body, as gunzip does */
	size_t l1, l2;
	char *m1 = zip("hello ", 6, 16 + MAX_WBITS, &l1), *m2 = zip("world!\n", 7, 16 + MAX_WBITS, &l2);
	char *both = malloc(l1 + l2);
	assert_non_null(both);
	memcpy(both, m1, l1);
	memcpy(both + l1, m2, l2);
	p = side_n(200, gz, 1, both, l1 + l2);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 0);
	assert_null(r.note);
	sp_cmp_result_deinit(&r);
	free(m1);
	free(m2);
	free(both);

	/* truncated gzip: noted, and a difference whatever the bytes: one side's
	 * clients cannot read it (the same bytes announced gzip and sent plain
	 * counted identical) */
	p = side_n(200, gz, 1, z, zlen - 4);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 1);
	assert_ptr_equal(r.note, sp_cmp_note_primary_undecodable);
	assert_int_equal(r.diffs[0].kind, SP_DIFF_BODY);
	assert_string_equal(r.diffs[0].where, "encoding");
	assert_string_equal(r.diffs[0].primary, "\"does not decode as its Content-Encoding says\"");
	sp_cmp_result_deinit(&r);
	struct sp_cmp_side plain_gz = side(200, gz, 1, "hello world!\n"), good = side_n(200, gz, 1, z, zlen);
	assert_int_equal(sp_compare(&rules, &good, &plain_gz, &r), 0);
	NDIFFS(&r, 1);
	assert_ptr_equal(r.note, sp_cmp_note_shadow_undecodable);
	assert_string_equal(r.diffs[0].where, "encoding");
	assert_string_equal(r.diffs[0].primary, "\"13 bytes: hello world!\\n\"");
	sp_cmp_result_deinit(&r);
	/* both undecodable: compared as received */
	assert_int_equal(sp_compare(&rules, &plain_gz, &plain_gz, &r), 0);
	NDIFFS(&r, 0);
	sp_cmp_result_deinit(&r);

	/* an unknown coding on the shadow */
	const struct sp_hdr br[] = {HDR("Content-Encoding", "br")};
	p = side(200, NULL, 0, "abc");
	s = side(200, br, 1, "abc");
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 0);
	assert_ptr_equal(r.note, sp_cmp_note_shadow_undecodable);
	sp_cmp_result_deinit(&r);

	/* Content-Encoding with no body (HEAD, 204, 304) is nothing to undo */
	p = side(204, gz, 1, "");
	s = side(204, NULL, 0, NULL);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 0);
	assert_null(r.note);
	sp_cmp_result_deinit(&r);
	free(z);
}

static void test_gzip_too_large(void **state)
{
	(void)state;
	size_t big = SP_CMP_INFLATE_MAX + 1, zlen;
	char *plain = calloc(1, big);
	assert_non_null(plain);
	char *z = zip(plain, big, 16 + MAX_WBITS, &zlen);
	const struct sp_hdr gz[] = {HDR("Content-Encoding", "gzip")};
	struct sp_cmp_rules rules = {NULL, 0, NULL, 0, SP_CMP_BYTES, 0};
	struct sp_cmp_side p = side_n(200, gz, 1, z, zlen), s = side(200, NULL, 0, "other");
	struct sp_cmp_result r;
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 0);
	assert_ptr_equal(r.note, sp_cmp_note_too_large);
	sp_cmp_result_deinit(&r);
	free(z);

	/* exactly the cap still decodes */
	z = zip(plain, big - 1, 16 + MAX_WBITS, &zlen);
	p = side_n(200, gz, 1, z, zlen);
	s = side_n(200, NULL, 0, plain, big - 1);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 0);
	assert_null(r.note);
	sp_cmp_result_deinit(&r);
	free(z);
	free(plain);
}

/* A route's max_body_bytes bounds the decoded body too (rules.max_decoded):
 * a small gzip answer cannot cost a comparison 8 MiB. */
static void test_decoded_bound_follows_the_rules(void **state)
{
	(void)state;
	char plain[1001], other[1001];
	memset(plain, 'a', sizeof(plain));
	memset(other, 'b', sizeof(other));
	size_t zlen;
	const struct sp_hdr gz[] = {HDR("Content-Encoding", "gzip")};
	struct sp_cmp_rules rules = {NULL, 0, NULL, 0, SP_CMP_BYTES, 1000};
	struct sp_cmp_result r;
	for (size_t len = 1000; len <= 1001; len++) {
		char *z = zip(plain, len, 16 + MAX_WBITS, &zlen);
		struct sp_cmp_side p = side_n(200, gz, 1, z, zlen), s = side_n(200, NULL, 0, other, 10);
		assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
		if (len == 1000) { /* at the bound: decoded and compared */
			NDIFFS(&r, 1);
			assert_null(r.note);
		} else {
			NDIFFS(&r, 0);
			assert_ptr_equal(r.note, sp_cmp_note_too_large);
		}
		sp_cmp_result_deinit(&r);
		free(z);
	}
}

static int woken;
static void count_wake(void *arg)
{
	(void)arg;
	__atomic_add_fetch(&woken, 1, __ATOMIC_SEQ_CST);
}

/* Jobs sent to the comparer's thread come back through their port, each
 * with the result sp_cmp_job_run gives in place, noise marked against the
 * sample; take_all waits for every one. */
static void test_comparer_hands_jobs_back_with_their_results(void **state)
{
	(void)state;
	const struct sp_hdr json[] = {HDR("Content-Type", "application/json")};
	static const char *const shadows[] = {"{\"a\":1,\"t\":5}", "{\"a\":2,\"t\":5}",
					      "{\"a\":1,\"t\":6}", "{\"a\":2,\"t\":6}"};
	enum { N = 4 };
	struct sp_cmp_job jobs[N], inplace[N];
	struct sp_cmp_port port;
	struct sp_comparer *c = sp_comparer_new();
	assert_non_null(c);
	assert_int_equal(sp_cmp_port_init(&port, count_wake, NULL), 0);
	woken = 0;
	for (int i = 0; i < N; i++) {
		memset(&jobs[i], 0, sizeof(jobs[i]));
		jobs[i].owner = &jobs[i];
		jobs[i].rules = (struct sp_cmp_rules){NULL, 0, NULL, 0, SP_CMP_AUTO, 0};
		jobs[i].primary = side(200, json, 1, "{\"a\":1,\"t\":4}");
		jobs[i].shadow = side(200, json, 1, shadows[i]);
		/* the primary's second answer: "t" is noise */
		jobs[i].has_sample = 1;
		jobs[i].sample = side(200, json, 1, "{\"a\":1,\"t\":9}");
		inplace[i] = jobs[i];
		sp_cmp_job_run(&inplace[i]);
		sp_comparer_submit(c, &port, &jobs[i]);
	}
	struct sp_cmp_job *back = sp_cmp_port_take_all(&port);
	static const size_t ndiffs[N] = {1, 2, 1, 2}, real[N] = {0, 1, 0, 1};
	int i = 0;
	for (struct sp_cmp_job *j = back; j; j = j->next, i++) {
		assert_ptr_equal(j, &jobs[i]); /* in order */
		assert_int_equal(j->rc, 0);
		assert_int_equal(j->r.ndiffs, ndiffs[i]);
		assert_int_equal(j->real, real[i]);
		assert_int_equal(inplace[i].r.ndiffs, ndiffs[i]);
		assert_int_equal(inplace[i].real, real[i]);
		sp_cmp_job_deinit(j);
		sp_cmp_job_deinit(&inplace[i]);
	}
	assert_int_equal(i, N);
	assert_int_equal(__atomic_load_n(&woken, __ATOMIC_SEQ_CST), N);

	/* small plain answers are compared in place; large or encoded ones are
	 * worth the thread */
	static char big[SP_CMP_INLINE_MAX];
	const struct sp_hdr gz[] = {HDR("Content-Encoding", "gzip")};
	struct sp_cmp_job k = jobs[0];
	assert_false(sp_cmp_job_costly(&k));
	k.shadow = side_n(200, NULL, 0, big, sizeof(big) - k.primary.body_len - k.sample.body_len);
	assert_false(sp_cmp_job_costly(&k));
	k.shadow.body_len++;
	assert_true(sp_cmp_job_costly(&k));
	k.rules.body = SP_CMP_NONE;
	assert_false(sp_cmp_job_costly(&k));
	k = jobs[0];
	k.primary = side(200, NULL, 0, "1");
	k.shadow = side(200, NULL, 0, "2");
	k.sample = side(200, gz, 1, "x");
	assert_false(sp_cmp_job_costly(&k)); /* too small to decode to much */
	static char some[64];
	k.sample = side_n(200, gz, 1, some, sizeof(some));
	assert_true(sp_cmp_job_costly(&k));
	k.has_sample = 0;
	assert_false(sp_cmp_job_costly(&k));
	assert_null(sp_cmp_port_take(&port));
	sp_comparer_free(&c);
	sp_cmp_port_deinit(&port);
}

/* A pointer past SP_CMP_WHERE_MAX bytes is cut, on a character, and ends
 * with "…": long keys made a diff line of a megabyte. */
static void test_a_long_pointer_is_cut(void **state)
{
	(void)state;
	static char a[2200], b[2200];
	char key[1000];
	memset(key, 'k', sizeof(key));
	int off = 510; /* the pointer is "/" + key: é at its bytes 511 and 512 */
	key[off] = (char)0xc3;
	key[off + 1] = (char)0xa9;
	snprintf(a, sizeof(a), "{\"%.*s\":1}", (int)sizeof(key), key);
	snprintf(b, sizeof(b), "{\"%.*s\":2}", (int)sizeof(key), key);
	struct sp_cmp_rules rules = {NULL, 0, NULL, 0, SP_CMP_JSON, 0};
	struct sp_cmp_side p = side(200, NULL, 0, a), s = side(200, NULL, 0, b);
	struct sp_cmp_result r;
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 1);
	const char *w = r.diffs[0].where;
	size_t len = strlen(w);
	assert_true(len <= SP_CMP_WHERE_MAX + strlen("…"));
	assert_string_equal(w + len - strlen("…"), "…");
	/* é did not fit whole: cut before it */
	assert_int_equal(len - strlen("…"), 1 + (size_t)off);
	sp_cmp_result_deinit(&r);
}

/* With noise detection on byte bodies, a difference is noise only where
 * the primary's second answer varies too, token by token: a timestamp or a
 * counter (however its digits roll), not the value after it (any
 * difference of the sample made every body difference noise). A sample of
 * another status (a 429) says nothing. */
static void test_byte_noise_is_positional(void **state)
{
	(void)state;
	struct sp_cmp_job j;
	memset(&j, 0, sizeof(j));
	j.rules = (struct sp_cmp_rules){NULL, 0, NULL, 0, SP_CMP_BYTES, 0};
	j.primary = side(200, NULL, 0, "t=100 value=A");
	j.sample = side(200, NULL, 0, "t=200 value=A");
	j.has_sample = 1;
	static const struct {
		const char *shadow;
		size_t real;
	} cases[] = {
		{"t=300 value=A", 0}, /* the timestamp: noise */
		{"t=100 value=B", 1}, /* the value: real */
		{"t=300 value=B", 1}, /* both: real */
		{"t=200 value=A", 0}, /* the sample itself */
		{"t=300 value=AB", 1}, /* a longer value */
		{"t=99 value=A", 0},   /* the counter rolled back a digit: one token */
		{"t=1000 value=A", 0}, /* or on */
		{"t=300 value=A extra", 1}, /* more tokens */
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		j.shadow = side(200, NULL, 0, cases[i].shadow);
		sp_cmp_job_run(&j);
		assert_int_equal(j.rc, 0);
		assert_int_equal(j.r.ndiffs, 1);
		if (j.real != cases[i].real)
			fail_msg("%s: real %zu", cases[i].shadow, j.real);
		assert_int_equal(j.r.diffs[0].noise, !cases[i].real);
		sp_cmp_job_deinit(&j);
	}
	j.shadow = side(200, NULL, 0, "t=300 value=A");
	j.sample = side(429, NULL, 0, "slow down");
	sp_cmp_job_run(&j);
	assert_int_equal(j.real, 1);
	sp_cmp_job_deinit(&j);
}

static void test_auto_mode(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = {NULL, 0, NULL, 0, SP_CMP_AUTO, 0};
	const struct sp_hdr utf8[] = {HDR("content-type", " Application/JSON ; charset=utf-8")};
	const struct sp_hdr problem[] = {HDR("Content-Type", "application/problem+json")};
	const struct sp_hdr text[] = {HDR("Content-Type", "text/plain")};
	const struct sp_hdr fake[] = {HDR("Content-Type", "application/jsonx")};
	const char *a = "{\"a\":1,\"b\":2}", *b = "{\"b\":2,\"a\":1}";
	struct sp_cmp_result r;

	struct sp_cmp_side p = side(200, utf8, 1, a), s = side(200, problem, 1, b);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 0);
	sp_cmp_result_deinit(&r);

	/* one side not JSON: bytes, and the reordered keys differ */
	const struct sp_hdr *others[] = {text, fake, NULL};
	for (size_t i = 0; i < NELEM(others); i++) {
		s = side(200, others[i], others[i] ? 1 : 0, b);
		assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
		NDIFFS(&r, 1);
		EXPECT(&r, SP_DIFF_BODY, "bytes@2", "\"13 bytes: {\\\"a\\\":1,\\\"b\\\":2}\"",
		       "\"13 bytes: {\\\"b\\\":2,\\\"a\\\":1}\"");
		sp_cmp_result_deinit(&r);
	}
}

static void test_invalid_json(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = json_rules(NULL, 0);
	struct sp_cmp_result r;
	cmp_json(&rules, "{oops", "{\"a\":1}", &r);
	NDIFFS(&r, 1);
	assert_ptr_equal(r.note, sp_cmp_note_primary_not_json);
	EXPECT(&r, SP_DIFF_BODY, "bytes@1", "\"5 bytes: {oops\"", "\"7 bytes: {\\\"a\\\":1}\"");
	sp_cmp_result_deinit(&r);

	cmp_json(&rules, "[1]", "[1", &r);
	assert_ptr_equal(r.note, sp_cmp_note_shadow_not_json);
	EXPECT(&r, SP_DIFF_BODY, "bytes@2", "\"3 bytes: [1]\"", "\"2 bytes: [1\"");
	sp_cmp_result_deinit(&r);

	/* equal bytes need no parsing: two empty bodies (a 204 that still says
	 * application/json) are equal without a note */
	cmp_json(&rules, "", "", &r);
	NDIFFS(&r, 0);
	assert_null(r.note);
	sp_cmp_result_deinit(&r);

	/* integers past int64 are valid JSON: still compared structurally, with
	 * every number of both bodies read as a real, and a note saying so */
	cmp_json(&rules, "{\"id\":123456789012345678901,\"x\":1}",
		 "{\"x\":2,\"id\":123456789012345678901}", &r);
	NDIFFS(&r, 1);
	assert_ptr_equal(r.note, sp_cmp_note_wide_ints);
	EXPECT(&r, SP_DIFF_JSON, "/x", "1.0", "2.0");
	sp_cmp_result_deinit(&r);
}

static void test_bytes_description(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = {NULL, 0, NULL, 0, SP_CMP_BYTES, 0};
	struct sp_cmp_result r;
	struct sp_cmp_side p = side(200, NULL, 0, "hello world!\n"), s = side(200, NULL, 0, "hello");
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	EXPECT(&r, SP_DIFF_BODY, "bytes@5", "\"13 bytes: hello world!\\n\"", "\"5 bytes: hello\"");
	sp_cmp_result_deinit(&r);

	/* 64 source bytes, then "…"; binary bytes stay valid JSON */
	char longb[100];
	memset(longb, 'x', sizeof(longb));
	longb[70] = '\xff';
	p = side_n(200, NULL, 0, longb, sizeof(longb));
	s = side_n(200, NULL, 0, "\x01\xfe", 2);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 1);
	char want[128];
	snprintf(want, sizeof(want), "\"100 bytes: %.64s…\"", longb);
	EXPECT(&r, SP_DIFF_BODY, "bytes@0", want, "\"2 bytes: \\u0001\\\\xfe\"");
	sp_cmp_result_deinit(&r);

	/* a Latin-1 é (one byte) against UTF-8's (two): the excerpts differ as
	 * the bytes do (both read "café ok" when the byte was \u00e9), and a
	 * cut after a byte that is not UTF-8 still ends with "…" */
	p = side_n(200, NULL, 0, "caf\xe9 ok", 7);
	s = side_n(200, NULL, 0, "caf\xc3\xa9 ok", 8);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	EXPECT(&r, SP_DIFF_BODY, "bytes@3", "\"7 bytes: caf\\\\xe9 ok\"",
	       "\"8 bytes: caf\xc3\xa9 ok\"");
	sp_cmp_result_deinit(&r);
	longb[3] = '\xe9';
	p = side_n(200, NULL, 0, longb, sizeof(longb));
	s = side_n(200, NULL, 0, "", 0);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	snprintf(want, sizeof(want), "\"100 bytes: xxx\\\\xe9%.60s…\"", longb + 4);
	EXPECT(&r, SP_DIFF_BODY, "bytes@0", want, "\"0 bytes: \"");
	sp_cmp_result_deinit(&r);

	/* a difference past byte 48: the excerpts start 16 bytes before it
	 * (the first 64 bytes, alike on both sides, showed nothing of it) */
	char pa[256], sb[256];
	for (size_t i = 0; i < sizeof(pa); i++)
		pa[i] = sb[i] = (char)('a' + i % 26);
	sb[100] = '!';
	p = side_n(200, NULL, 0, pa, sizeof(pa));
	s = side_n(200, NULL, 0, sb, sizeof(sb));
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	char wp[128], ws[128];
	snprintf(wp, sizeof(wp), "\"256 bytes, from byte 84: …%.64s…\"", pa + 84);
	snprintf(ws, sizeof(ws), "\"256 bytes, from byte 84: …%.64s…\"", sb + 84);
	EXPECT(&r, SP_DIFF_BODY, "bytes@100", wp, ws);
	sp_cmp_result_deinit(&r);
	/* one side ends there: its excerpt ends with it */
	s = side_n(200, NULL, 0, pa, 100);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	snprintf(ws, sizeof(ws), "\"100 bytes, from byte 84: …%.16s\"", pa + 84);
	EXPECT(&r, SP_DIFF_BODY, "bytes@100", wp, ws);
	sp_cmp_result_deinit(&r);
	/* at byte 48 the first 64 bytes show it with 16 after */
	sb[100] = pa[100];
	sb[48] = '!';
	s = side_n(200, NULL, 0, sb, sizeof(sb));
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	snprintf(wp, sizeof(wp), "\"256 bytes: %.64s…\"", pa);
	snprintf(ws, sizeof(ws), "\"256 bytes: %.64s…\"", sb);
	EXPECT(&r, SP_DIFF_BODY, "bytes@48", wp, ws);
	sp_cmp_result_deinit(&r);
}

static void test_body_none(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = {NULL, 0, NULL, 0, SP_CMP_NONE, 0};
	struct sp_cmp_side p = side(200, json_h, 1, "{\"a\":1}"), s = side(200, json_h, 1, "[]");
	struct sp_cmp_result r;
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, 0);
	sp_cmp_result_deinit(&r);
}

static void test_body_parse(void **state)
{
	(void)state;
	enum sp_cmp_body b = SP_CMP_NONE;
	assert_int_equal(sp_cmp_body_parse("auto", &b), 0);
	assert_int_equal(b, SP_CMP_AUTO);
	assert_int_equal(sp_cmp_body_parse("json", &b), 0);
	assert_int_equal(b, SP_CMP_JSON);
	assert_int_equal(sp_cmp_body_parse("bytes", &b), 0);
	assert_int_equal(b, SP_CMP_BYTES);
	assert_int_equal(sp_cmp_body_parse("none", &b), 0);
	assert_int_equal(b, SP_CMP_NONE);
	assert_int_equal(sp_cmp_body_parse("JSON", &b), -1);
	assert_int_equal(sp_cmp_body_parse("", &b), -1);
}

/* --- truncation, cap, noise, output ------------------------------------ */

/* text must be a JSON string whose content is the start of full (cut on a
 * character boundary, at most SP_CMP_VALUE_MAX bytes) and then "…". */
static void expect_truncated(const char *text, const char *full)
{
	json_error_t err;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &err); /* also checks UTF-8 */
	if (!j)
		print_error("not JSON: %s (%s)\n", text, err.text);
	assert_non_null(j);
	assert_true(json_is_string(j));
	const char *s = json_string_value(j);
	size_t n = json_string_length(j);
	assert_true(n > 3 && n <= SP_CMP_VALUE_MAX + 3);
	assert_string_equal(s + n - 3, "…");
	assert_true(n - 3 > SP_CMP_VALUE_MAX - 4); /* cut no further than one character */
	assert_memory_equal(s, full, n - 3);
	json_decref(j);
}

static void test_truncation(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = json_rules(NULL, 0);
	struct sp_buf a, b;
	sp_buf_init(&a);
	sp_buf_init(&b);
	/* "ééé…": two-byte characters, so byte 200 falls inside one */
	sp_buf_adds(&a, "{\"k\":[\"");
	sp_buf_adds(&b, "{\"k\":[\"");
	for (int i = 0; i < 150; i++)
		sp_buf_adds(&a, "é");
	for (int i = 0; i < 250; i++)
		sp_buf_adds(&b, "e");
	sp_buf_adds(&a, "\"]}");
	sp_buf_adds(&b, "\"]}");
	struct sp_cmp_result r;
	cmp_json(&rules, a.data, b.data, &r);
	NDIFFS(&r, 1);
	assert_string_equal(r.diffs[0].where, "/k/0");
	expect_truncated(r.diffs[0].primary, a.data + 6);
	expect_truncated(r.diffs[0].shadow, b.data + 6);
	sp_cmp_result_deinit(&r);

	/* at the limit nothing is cut */
	sp_buf_reset(&a);
	sp_buf_adds(&a, "[\"");
	for (int i = 0; i < SP_CMP_VALUE_MAX - 2; i++)
		sp_buf_addc(&a, 'y');
	sp_buf_adds(&a, "\"]");
	cmp_json(&rules, a.data, "[0]", &r);
	NDIFFS(&r, 1);
	assert_int_equal(strlen(r.diffs[0].primary), SP_CMP_VALUE_MAX);
	assert_memory_equal(r.diffs[0].primary, a.data + 1, SP_CMP_VALUE_MAX);
	sp_cmp_result_deinit(&r);
	sp_buf_deinit(&a);
	sp_buf_deinit(&b);
}

static void make_array(struct sp_buf *b, int n, int v)
{
	sp_buf_reset(b);
	sp_buf_addc(b, '[');
	for (int i = 0; i < n; i++)
		sp_buf_printf(b, "%s%d", i ? "," : "", v);
	sp_buf_addc(b, ']');
}

static void test_diff_cap(void **state)
{
	(void)state;
	struct sp_cmp_rules rules = json_rules(NULL, 0);
	struct sp_buf a, b;
	sp_buf_init(&a);
	sp_buf_init(&b);
	struct sp_cmp_result r;

	make_array(&a, SP_CMP_MAX_DIFFS, 1);
	make_array(&b, SP_CMP_MAX_DIFFS, 2);
	cmp_json(&rules, a.data, b.data, &r);
	NDIFFS(&r, SP_CMP_MAX_DIFFS);
	assert_null(r.note);
	sp_cmp_result_deinit(&r);

	make_array(&a, 120, 1);
	make_array(&b, 120, 2);
	cmp_json(&rules, a.data, b.data, &r);
	NDIFFS(&r, SP_CMP_MAX_DIFFS);
	assert_ptr_equal(r.note, sp_cmp_note_too_many);
	assert_string_equal(r.note, "more than 50 differences");
	EXPECT(&r, SP_DIFF_JSON, "/49", "1", "2");
	sp_cmp_result_deinit(&r);

	/* the status counts towards the cap too */
	struct sp_cmp_side p = side(200, json_h, 1, a.data), s = side(500, json_h, 1, b.data);
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	NDIFFS(&r, SP_CMP_MAX_DIFFS);
	assert_int_equal(r.diffs[0].kind, SP_DIFF_STATUS);
	sp_cmp_result_deinit(&r);
	sp_buf_deinit(&a);
	sp_buf_deinit(&b);
}

static void test_noise(void **state)
{
	(void)state;
	char *hn[] = {"X-Served-By"};
	struct sp_cmp_rules rules = {hn, 1, NULL, 0, SP_CMP_JSON, 0};
	const struct sp_hdr h1[] = {JSON_CT, HDR("X-Served-By", "a")};
	const struct sp_hdr h2[] = {JSON_CT, HDR("X-Served-By", "b")};
	struct sp_cmp_side primary = side(200, h1, 2, "{\"ts\":1,\"v\":1,\"id\":7}");
	struct sp_cmp_side shadow = side(200, h2, 2, "{\"ts\":2,\"v\":2,\"id\":7}");
	struct sp_cmp_side again = side(200, h2, 2, "{\"ts\":3,\"v\":1,\"id\":7}");
	struct sp_cmp_result r, noise;
	assert_int_equal(sp_compare(&rules, &primary, &shadow, &r), 0);
	assert_int_equal(sp_compare(&rules, &primary, &again, &noise), 0);
	NDIFFS(&r, 3);
	NDIFFS(&noise, 2);
	assert_int_equal(sp_cmp_mark_noise(&r, &noise), 1);
	for (size_t i = 0; i < r.ndiffs; i++) {
		int want = !(r.diffs[i].where && strcmp(r.diffs[i].where, "/v") == 0);
		assert_int_equal(r.diffs[i].noise, want);
	}

	struct sp_buf b;
	sp_buf_init(&b);
	assert_int_equal(sp_cmp_diffs_json(&r, 0, &b), 0);
	assert_string_equal(b.data, "[{\"kind\":\"json\",\"where\":\"/v\",\"primary\":1,\"shadow\":2,"
				    "\"noise\":false}]");
	sp_buf_deinit(&b);
	sp_cmp_result_deinit(&r);
	sp_cmp_result_deinit(&noise);

	/* body diffs are noise whatever their offset */
	rules.body = SP_CMP_BYTES;
	rules.nheaders = 0;
	primary = side(200, NULL, 0, "t=1 v=1");
	shadow = side(200, NULL, 0, "t=1 v=2");
	again = side(200, NULL, 0, "t=2 v=1");
	assert_int_equal(sp_compare(&rules, &primary, &shadow, &r), 0);
	assert_int_equal(sp_compare(&rules, &primary, &again, &noise), 0);
	assert_int_equal(sp_cmp_mark_noise(&r, &noise), 0);
	sp_cmp_result_deinit(&r);
	sp_cmp_result_deinit(&noise);
}

static void test_diffs_json(void **state)
{
	(void)state;
	char *hn[] = {"ETag", "X-New"};
	struct sp_cmp_rules rules = {hn, 2, NULL, 0, SP_CMP_AUTO, 0};
	const struct sp_hdr ph[] = {JSON_CT, HDR("ETag", "\"1\"")};
	const struct sp_hdr sh[] = {JSON_CT, HDR("ETag", "\"2\""), HDR("X-New", "y")};
	struct sp_cmp_side p = side(200, ph, 2, "{\"o\":{\"b\":1,\"a\":[1]},\"k/\":\"v\"}");
	struct sp_cmp_side s = side(404, sh, 3, "{\"o\":[]}");
	struct sp_cmp_result r;
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	r.diffs[0].noise = 1;
	struct sp_buf b;
	sp_buf_init(&b);
	sp_buf_adds(&b, "prefix ");
	assert_int_equal(sp_cmp_diffs_json(&r, 1, &b), 0);
	assert_memory_equal(b.data, "prefix ", 7);

	json_error_t err;
	json_t *j = json_loads(b.data + 7, 0, &err);
	if (!j)
		print_error("%s: %s\n", b.data, err.text);
	assert_non_null(j);
	assert_int_equal(json_array_size(j), 5);
	json_t *d = json_array_get(j, 0);
	assert_string_equal(json_string_value(json_object_get(d, "kind")), "status");
	assert_true(json_is_null(json_object_get(d, "where")));
	assert_int_equal(json_integer_value(json_object_get(d, "primary")), 200);
	assert_int_equal(json_integer_value(json_object_get(d, "shadow")), 404);
	assert_true(json_is_true(json_object_get(d, "noise")));
	d = json_array_get(j, 1);
	assert_string_equal(json_string_value(json_object_get(d, "kind")), "header");
	assert_string_equal(json_string_value(json_object_get(d, "where")), "ETag");
	assert_string_equal(json_string_value(json_object_get(d, "primary")), "\"1\"");
	assert_null(json_object_get(d, "missing"));
	d = json_array_get(j, 2);
	assert_string_equal(json_string_value(json_object_get(d, "where")), "X-New");
	assert_true(json_is_null(json_object_get(d, "primary")));
	/* which side lacks the value: a null alone reads as a value sent null */
	assert_string_equal(json_string_value(json_object_get(d, "missing")), "primary");
	d = json_array_get(j, 3);
	assert_string_equal(json_string_value(json_object_get(d, "kind")), "json");
	assert_string_equal(json_string_value(json_object_get(d, "where")), "/k~1");
	assert_true(json_is_null(json_object_get(d, "shadow")));
	assert_string_equal(json_string_value(json_object_get(d, "missing")), "shadow");
	d = json_array_get(j, 4);
	assert_string_equal(json_string_value(json_object_get(d, "where")), "/o");
	assert_true(json_is_object(json_object_get(d, "primary")));
	assert_true(json_is_array(json_object_get(d, "shadow")));
	assert_true(json_is_false(json_object_get(d, "noise")));
	assert_null(json_object_get(d, "missing"));
	json_decref(j);
	sp_cmp_result_deinit(&r);

	/* a null sent against a value missing */
	struct sp_cmp_side pn = side(200, ph, 1, "{\"a\":1,\"x\":null}");
	struct sp_cmp_side sn = side(200, ph, 1, "{\"a\":1}");
	assert_int_equal(sp_compare(&rules, &pn, &sn, &r), 0);
	sp_buf_reset(&b);
	assert_int_equal(sp_cmp_diffs_json(&r, 1, &b), 0);
	assert_string_equal(b.data, "[{\"kind\":\"json\",\"where\":\"/x\",\"primary\":null,"
				    "\"shadow\":null,\"missing\":\"shadow\",\"noise\":false}]");

	sp_cmp_result_deinit(&r);

	/* without noise the status is gone */
	assert_int_equal(sp_compare(&rules, &p, &s, &r), 0);
	r.diffs[0].noise = 1;
	sp_buf_reset(&b);
	assert_int_equal(sp_cmp_diffs_json(&r, 0, &b), 0);
	j = json_loads(b.data, 0, &err);
	assert_non_null(j);
	assert_int_equal(json_array_size(j), 4);
	json_decref(j);
	sp_buf_deinit(&b);
	sp_cmp_result_deinit(&r);

	/* no diffs: an empty array */
	struct sp_cmp_result empty = {NULL, 0, NULL};
	sp_buf_init(&b);
	assert_int_equal(sp_cmp_diffs_json(&empty, 1, &b), 0);
	assert_string_equal(b.data, "[]");
	sp_buf_deinit(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identical),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_key_order_and_numbers),
		cmocka_unit_test(test_nested_pointers),
		cmocka_unit_test(test_array_lengths),
		cmocka_unit_test(test_type_mismatch),
		cmocka_unit_test(test_ignore),
		cmocka_unit_test(test_pointer_match),
		cmocka_unit_test(test_pointer_escaping),
		cmocka_unit_test(test_gzip_and_deflate),
		cmocka_unit_test(test_gzip_bytes_and_errors),
		cmocka_unit_test(test_gzip_too_large),
		cmocka_unit_test(test_decoded_bound_follows_the_rules),
		cmocka_unit_test(test_a_long_pointer_is_cut),
		cmocka_unit_test(test_byte_noise_is_positional),
		cmocka_unit_test(test_comparer_hands_jobs_back_with_their_results),
		cmocka_unit_test(test_auto_mode),
		cmocka_unit_test(test_invalid_json),
		cmocka_unit_test(test_bytes_description),
		cmocka_unit_test(test_body_none),
		cmocka_unit_test(test_body_parse),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_diff_cap),
		cmocka_unit_test(test_noise),
		cmocka_unit_test(test_diffs_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
