/* Unit tests of proxy/pathnorm.c: the one normalised path that routing decides
 * on and the backend receives, and query-component percent-decoding. */
#include "unit.h"

#include "pathnorm.h"

/* Normalises literal in and checks status and, on success, the output. */
#define NORM_OK(in, want)                                                       \
	do {                                                                    \
		struct sp_buf b_;                                               \
		sp_buf_init(&b_);                                               \
		int rc_ = sp_path_normalize((in), sizeof(in) - 1, &b_);         \
		if (rc_ != SP_PATH_OK)                                          \
			print_error("input \"%s\"\n", (in));                    \
		assert_int_equal(rc_, SP_PATH_OK);                              \
		assert_string_equal(b_.data, (want));                           \
		assert_int_equal(b_.len, strlen(want));                         \
		sp_buf_deinit(&b_);                                             \
	} while (0)

#define NORM_ERR(in, status)                                                    \
	do {                                                                    \
		struct sp_buf b_;                                               \
		sp_buf_init(&b_);                                               \
		int rc_ = sp_path_normalize((in), sizeof(in) - 1, &b_);         \
		if (rc_ != (status))                                            \
			print_error("input \"%s\" gave %d \"%s\"\n", (in), rc_,  \
				    rc_ == SP_PATH_OK ? b_.data : "");          \
		assert_int_equal(rc_, (status));                                \
		sp_buf_deinit(&b_);                                             \
	} while (0)

#define DECODE(in, plus, want)                                                  \
	do {                                                                    \
		struct sp_buf b_;                                               \
		sp_buf_init(&b_);                                               \
		assert_int_equal(sp_pct_decode((in), sizeof(in) - 1, (plus), &b_), 0); \
		assert_int_equal(b_.len, sizeof(want) - 1);                     \
		assert_memory_equal(b_.data, (want), sizeof(want) - 1);         \
		assert_int_equal(b_.data[b_.len], '\0');                        \
		sp_buf_deinit(&b_);                                             \
	} while (0)

static void test_plain_paths_unchanged(void **state)
{
	(void)state;
	NORM_OK("/", "/");
	NORM_OK("/api/users/7", "/api/users/7");
	NORM_OK("/a-b_c.d~e/F0", "/a-b_c.d~e/F0");
	NORM_OK("/.well-known/x", "/.well-known/x");
	NORM_OK("/a/.../b", "/a/.../b");
	NORM_OK("/a/..b/.c", "/a/..b/.c");
}

static void test_unreserved_escapes_decoded(void **state)
{
	(void)state;
	NORM_OK("/%41", "/A");
	NORM_OK("/%7E", "/~");
	NORM_OK("/%7euser", "/~user");
	NORM_OK("/%61%62%63", "/abc");
	NORM_OK("/a%2Db%5Fc%2E", "/a-b_c.");
	NORM_OK("/v%31/%7A", "/v1/z");
}

static void test_reserved_escapes_kept_upper_case(void **state)
{
	(void)state;
	NORM_OK("/a%2fb", "/a%2Fb");
	NORM_OK("/a%2Fb", "/a%2Fb");
	NORM_OK("/%3a%3b", "/%3A%3B");
	NORM_OK("/caf%c3%a9", "/caf%C3%A9");
	NORM_OK("/%20x", "/%20x");
	NORM_OK("/100%25", "/100%25");
	NORM_OK("/%00", "/%00");
	/* An encoded slash never splits a segment, so ".." after it stays in the segment. */
	NORM_OK("/a%2f..", "/a%2F..");
	NORM_OK("/a%2F../b", "/a%2F../b");
}

static void test_encoded_dots_resolved(void **state)
{
	(void)state;
	NORM_OK("/a/%2e%2e/b", "/b");
	NORM_OK("/a/%2E%2E/b", "/b");
	NORM_OK("/a/.%2e/b", "/b");
	NORM_OK("/a/%2e/b", "/a/b");
	NORM_OK("/a/b/%2e%2e", "/a/");
	NORM_ERR("/%2e%2e", SP_PATH_ABOVE_ROOT);
	NORM_ERR("/%2e%2e/etc/passwd", SP_PATH_ABOVE_ROOT);
}

static void test_bad_escapes_rejected(void **state)
{
	(void)state;
	NORM_ERR("/%", SP_PATH_BAD_ENCODING);
	NORM_ERR("/%4", SP_PATH_BAD_ENCODING);
	NORM_ERR("/%zz", SP_PATH_BAD_ENCODING);
	NORM_ERR("/%4g", SP_PATH_BAD_ENCODING);
	NORM_ERR("/%g4", SP_PATH_BAD_ENCODING);
	NORM_ERR("/a/%", SP_PATH_BAD_ENCODING);
	NORM_ERR("/%4/", SP_PATH_BAD_ENCODING);
	NORM_ERR("/%%41", SP_PATH_BAD_ENCODING);
	NORM_ERR("/ok/%2", SP_PATH_BAD_ENCODING);
}

static void test_dot_segments(void **state)
{
	(void)state;
	NORM_OK("/a/./b", "/a/b");
	NORM_OK("/./a", "/a");
	NORM_OK("/a/b/../c", "/a/c");
	NORM_OK("/a/b/../../c", "/c");
	NORM_OK("/a/b/./../c/", "/a/c/");
	/* A final "." or ".." leaves a trailing '/'. */
	NORM_OK("/.", "/");
	NORM_OK("/a/.", "/a/");
	NORM_OK("/a/b/.", "/a/b/");
	NORM_OK("/a/..", "/");
	NORM_OK("/a/b/..", "/a/");
	NORM_OK("/a/b/../", "/a/");
}

static void test_above_root_rejected(void **state)
{
	(void)state;
	NORM_ERR("/..", SP_PATH_ABOVE_ROOT);
	NORM_ERR("/../a", SP_PATH_ABOVE_ROOT);
	NORM_ERR("/./..", SP_PATH_ABOVE_ROOT);
	NORM_ERR("/a/../..", SP_PATH_ABOVE_ROOT);
	NORM_ERR("/a/../../b", SP_PATH_ABOVE_ROOT);
	NORM_ERR("/a/b/../../../c", SP_PATH_ABOVE_ROOT);
	NORM_ERR("///..", SP_PATH_ABOVE_ROOT);
}

static void test_repeated_slashes_merged(void **state)
{
	(void)state;
	NORM_OK("//", "/");
	NORM_OK("//a", "/a");
	NORM_OK("/a///b", "/a/b");
	NORM_OK("//a//b//", "/a/b/");
	NORM_OK("/a//../b", "/b");
}

static void test_trailing_slash_kept(void **state)
{
	(void)state;
	NORM_OK("/a/", "/a/");
	NORM_OK("/a/b/", "/a/b/");
	NORM_OK("/api/users/", "/api/users/");
}

static void test_non_origin_rejected(void **state)
{
	(void)state;
	NORM_ERR("", SP_PATH_NOT_ORIGIN);
	NORM_ERR("a", SP_PATH_NOT_ORIGIN);
	NORM_ERR("*", SP_PATH_NOT_ORIGIN);
	NORM_ERR("http://example.com/", SP_PATH_NOT_ORIGIN);
	NORM_ERR("%2Fa", SP_PATH_NOT_ORIGIN);
	NORM_ERR("./a", SP_PATH_NOT_ORIGIN);
}

/* Paths with no escape and no '/' before a '/' or '.' are copied as they
 * are; each byte that sends a path the long way is next to one that does
 * not, and both give the normal form. */
static void test_copied_or_normalised(void **state)
{
	(void)state;
	NORM_OK("/a.b/c-d_e~f/g", "/a.b/c-d_e~f/g");
	NORM_OK("/a/", "/a/");
	NORM_OK("/a./b.", "/a./b.");
	NORM_OK("/.well-known/x", "/.well-known/x");
	NORM_OK("/a/.b", "/a/.b");
	NORM_OK("/a/..b", "/a/..b");
	NORM_OK("/a/b/.", "/a/b/");
	NORM_OK("/a/b/..", "/a/");
	NORM_OK("/a//b", "/a/b");
	NORM_OK("//", "/");
	NORM_OK("/a%2f", "/a%2F");
	NORM_OK("/a%2F", "/a%2F");
	NORM_OK("/a%41", "/aA");
}

/* The output is replaced, not appended to. */
static void test_output_replaced(void **state)
{
	(void)state;
	struct sp_buf b;
	sp_buf_init(&b);
	assert_int_equal(sp_buf_adds(&b, "stale content"), 0);
	assert_int_equal(sp_path_normalize("/x", 2, &b), SP_PATH_OK);
	assert_string_equal(b.data, "/x");
	assert_int_equal(sp_path_normalize("/y", 2, &b), SP_PATH_OK);
	assert_string_equal(b.data, "/y");
	/* Only len bytes are read: the query after the path is not part of it. */
	assert_int_equal(sp_path_normalize("/a/b?c=/..", 4, &b), SP_PATH_OK);
	assert_string_equal(b.data, "/a/b");
	/* An escape cut by len is incomplete even if the next bytes would finish it. */
	assert_int_equal(sp_path_normalize("/a%41", 4, &b), SP_PATH_BAD_ENCODING);
	assert_int_equal(sp_path_normalize("/a%41", 3, &b), SP_PATH_BAD_ENCODING);
	sp_buf_deinit(&b);
}

/* Normalising a normalised path changes nothing (routing and forwarding agree). */
static void test_idempotent(void **state)
{
	(void)state;
	static const char *const inputs[] = {
		"/", "//a//b/", "/a/./b/../c", "/%7e%2f%2e%2e/x", "/a/b/..", "/caf%c3%a9/.",
	};
	struct sp_buf once, twice;
	sp_buf_init(&once);
	sp_buf_init(&twice);
	for (size_t i = 0; i < NELEM(inputs); i++) {
		assert_int_equal(sp_path_normalize(inputs[i], strlen(inputs[i]), &once), SP_PATH_OK);
		assert_int_equal(sp_path_normalize(once.data, once.len, &twice), SP_PATH_OK);
		assert_string_equal(twice.data, once.data);
	}
	sp_buf_deinit(&once);
	sp_buf_deinit(&twice);
}

static void test_strerror_names_each_status(void **state)
{
	(void)state;
	assert_string_equal(sp_path_strerror(SP_PATH_OK), "ok");
	assert_non_null(strstr(sp_path_strerror(SP_PATH_BAD_ENCODING), "percent-encoding"));
	assert_non_null(strstr(sp_path_strerror(SP_PATH_ABOVE_ROOT), "above the root"));
	assert_non_null(strstr(sp_path_strerror(SP_PATH_NOT_ORIGIN), "'/'"));
	assert_non_null(strstr(sp_path_strerror(SP_PATH_NOMEM), "memory"));
}

static void test_pct_decode(void **state)
{
	(void)state;
	DECODE("", 1, "");
	DECODE("abc", 1, "abc");
	DECODE("a%20b", 0, "a b");
	DECODE("%41%42", 0, "AB");
	DECODE("%e9", 0, "\xe9");
	DECODE("%C3%A9", 0, "\xc3\xa9");
	DECODE("a%00b", 0, "a\0b");
	DECODE("%2F", 0, "/");
}

static void test_pct_decode_plus(void **state)
{
	(void)state;
	DECODE("a+b", 1, "a b");
	DECODE("a+b", 0, "a+b");
	DECODE("++", 1, "  ");
	/* An encoded '+' is a plus either way. */
	DECODE("1%2B1", 1, "1+1");
	DECODE("1%2b1", 0, "1+1");
}

static void test_pct_decode_invalid_kept(void **state)
{
	(void)state;
	DECODE("100%", 1, "100%");
	DECODE("%4", 1, "%4");
	DECODE("a%zzb", 1, "a%zzb");
	DECODE("%%41", 1, "%A");
	DECODE("%g1+", 1, "%g1 ");
}

/* Splits target and checks the status, path and query (NULL: none). */
/* The authority of http(s) URLs, and of "//host" ones when asked. */
static void test_url_authority(void **state)
{
	(void)state;
	static const struct {
		const char *url;
		int rel, found;
		size_t at, end;
	} cases[] = {
		{"http://a.example/p", 0, 1, 7, 16},  {"HTTPS://b?x", 0, 1, 8, 9},
		{"https://c#f", 0, 1, 8, 9},	       {"http://", 0, 1, 7, 7},
		{"https://h:1", 0, 1, 8, 11},	       {"//d/p", 1, 1, 2, 3},
		{"//d/p", 0, 0, 0, 0},		       {"/p", 1, 0, 0, 0},
		{"http:/x", 0, 0, 0, 0},	       {"ftp://x/", 1, 0, 0, 0},
		{"httpx://y/", 0, 0, 0, 0},	       {"", 1, 0, 0, 0},
		{"http", 0, 0, 0, 0},		       {"https:/", 0, 0, 0, 0},
	};
	for (size_t i = 0; i < NELEM(cases); i++) {
		size_t at = 99, end = 99;
		int found = sp_url_authority(cases[i].url, strlen(cases[i].url), cases[i].rel, &at, &end);
		if (found != cases[i].found || (found && (at != cases[i].at || end != cases[i].end)))
			print_error("\"%s\": %d %zu %zu\n", cases[i].url, found, at, end);
		assert_int_equal(found, cases[i].found);
		if (found) {
			assert_int_equal(at, cases[i].at);
			assert_int_equal(end, cases[i].end);
		}
	}
}

static void split_case(const char *method, const char *target, int status, const char *path,
		       const char *query)
{
	struct sp_buf b;
	sp_buf_init(&b);
	const char *q = (const char *)1;
	size_t qlen = 99;
	int rc = sp_split_target(method, target, strlen(target), &b, &q, &qlen);
	if (rc != status)
		print_error("target \"%s\" gave %d\n", target, rc);
	assert_int_equal(rc, status);
	if (rc == SP_PATH_OK)
		assert_string_equal(b.data, path);
	if (query) {
		assert_non_null(q);
		assert_int_equal(qlen, strlen(query));
		assert_memory_equal(q, query, qlen);
	} else {
		assert_null(q);
		assert_int_equal(qlen, 0);
	}
	sp_buf_deinit(&b);
}

static void test_split_target(void **state)
{
	(void)state;
	split_case("GET", "/a//b/../c?x=%2e#frag", SP_PATH_OK, "/a/c", "x=%2e");
	split_case("GET", "/a?", SP_PATH_OK, "/a", "");
	split_case("GET", "/a#f?not-a-query", SP_PATH_OK, "/a", NULL);
	/* absolute-form: the authority is dropped, the path normalised */
	split_case("GET", "http://example.com/x/%7Ey?q", SP_PATH_OK, "/x/~y", "q");
	split_case("GET", "HTTPS://example.com", SP_PATH_OK, "/", NULL);
	split_case("GET", "http://example.com?q=1", SP_PATH_OK, "/", "q=1");
	/* an empty authority is absolute-form too (its 400 comes from the
	 * host check, sp_http_absolute_host) */
	split_case("GET", "http://", SP_PATH_OK, "/", NULL);
	split_case("GET", "HTTPS://?q", SP_PATH_OK, "/", "q");
	/* a '/' in the query of an authority-only target is not the path:
	 * "http://h?next=/admin" must not route as /admin */
	split_case("GET", "http://example.com?next=/admin", SP_PATH_OK, "/", "next=/admin");
	/* "*" is a target only for OPTIONS */
	split_case("OPTIONS", "*", SP_PATH_OK, "*", NULL);
	split_case("GET", "*", SP_PATH_NOT_ORIGIN, NULL, NULL);
	split_case("GET", "/../etc?x", SP_PATH_ABOVE_ROOT, NULL, "x");
	split_case("GET", "/a%zz", SP_PATH_BAD_ENCODING, NULL, NULL);
}

/* limits.reject_escaped_slashes looks at the normalised path: %2F and %5C
 * (upper case by then) and a raw backslash; not %2E, %25 or a lone '%'. */
static void test_escaped_slash(void **state)
{
	(void)state;
	static const char *const yes[] = {"/a%2Fb", "/a%5Cb", "/a\\b", "/%2F", "/x/%5C"};
	static const char *const no[] = {"/a/b", "/a%2Eb", "/a%252Fb", "/a%2", "/a%25", "/2F5C"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_true(sp_path_has_escaped_slash(yes[i], strlen(yes[i])));
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_false(sp_path_has_escaped_slash(no[i], strlen(no[i])));
	assert_false(sp_path_has_escaped_slash("/a%2Fb", 4)); /* only len bytes */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_paths_unchanged),
		cmocka_unit_test(test_unreserved_escapes_decoded),
		cmocka_unit_test(test_reserved_escapes_kept_upper_case),
		cmocka_unit_test(test_encoded_dots_resolved),
		cmocka_unit_test(test_bad_escapes_rejected),
		cmocka_unit_test(test_dot_segments),
		cmocka_unit_test(test_above_root_rejected),
		cmocka_unit_test(test_repeated_slashes_merged),
		cmocka_unit_test(test_trailing_slash_kept),
		cmocka_unit_test(test_non_origin_rejected),
		cmocka_unit_test(test_copied_or_normalised),
		cmocka_unit_test(test_output_replaced),
		cmocka_unit_test(test_idempotent),
		cmocka_unit_test(test_strerror_names_each_status),
		cmocka_unit_test(test_pct_decode),
		cmocka_unit_test(test_pct_decode_plus),
		cmocka_unit_test(test_pct_decode_invalid_kept),
		cmocka_unit_test(test_split_target),
		cmocka_unit_test(test_url_authority),
		cmocka_unit_test(test_escaped_slash),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
