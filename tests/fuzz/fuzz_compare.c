/* Fuzzes the shadow comparator: two answers with fuzzed bodies, content types
 * and codings, compared under ignore rules; the differences must be bounded,
 * symmetric, absent when an answer is compared with itself, and always
 * render as valid JSON (they go to the diff log).
 *
 * Input: 2 flag bytes, then the primary body, a 0xFF byte (never in UTF-8
 * text), and the shadow body; without 0xFF both bodies are the same bytes.
 * Flags[0]: bits 0-1 body mode (auto, json, bytes, none), bit 2/3 primary /
 * shadow Content-Type JSON, bit 4 statuses differ, bit 5 include noise,
 * bit 6 X-Test headers differ. Flags[1]: bits 0-1 / 2-3 primary / shadow
 * Content-Encoding: none, gzip done here (valid), "gzip" on the raw bytes
 * (usually undecodable), "deflate, identity" on the raw bytes. */
#include <jansson.h>
#include <string.h>
#include <zlib.h>

#include "compare.h"
#include "fuzz.h"

static char *ignore[] = {"/a/*/b", "/x"};
static char *headers[] = {"Content-Type", "X-Test", "Content-Encoding"};

/* gzip of in (a real one, so the decoded path is reached too). */
static int gzip_body(const uint8_t *in, size_t n, struct sp_buf *out)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	uLong bound = deflateBound(&z, (uLong)n);
	if (sp_buf_reserve(out, bound) < 0) {
		deflateEnd(&z);
		return -1;
	}
	z.next_in = (Bytef *)(uintptr_t)in;
	z.avail_in = (uInt)n;
	z.next_out = (Bytef *)out->data;
	z.avail_out = (uInt)bound;
	int rc = deflate(&z, Z_FINISH);
	out->len = bound - z.avail_out;
	deflateEnd(&z);
	return rc == Z_STREAM_END ? 0 : -1;
}

struct side {
	struct sp_hdr h[3];
	struct sp_buf gz;
	struct sp_cmp_side s;
};

static void make_side(struct side *sd, int status, int json, int coding, const char *xtest,
		      const uint8_t *body, size_t n)
{
	static const char *const enc[] = {NULL, "gzip", "gzip", "deflate, identity"};
	const char *ct = json ? "application/problem+json; charset=utf-8" : "text/plain";
	size_t nh = 0;
	sp_buf_init(&sd->gz);
	sd->h[nh++] = (struct sp_hdr){"Content-Type", 12, ct, strlen(ct)};
	sd->h[nh++] = (struct sp_hdr){"x-test", 6, xtest, strlen(xtest)};
	if (enc[coding])
		sd->h[nh++] =
			(struct sp_hdr){"Content-Encoding", 16, enc[coding], strlen(enc[coding])};
	sd->s = (struct sp_cmp_side){status, sd->h, nh, (const char *)body, n};
	if (coding == 1) {
		FUZZ_CHECK(gzip_body(body, n, &sd->gz) == 0, "gzip failed");
		sd->s.body = sd->gz.data;
		sd->s.body_len = sd->gz.len;
	}
}

static int valid_json(const char *text)
{
	json_error_t err;
	json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	json_decref(j);
	return j != NULL;
}

static void check_result(const struct sp_cmp_result *r)
{
	FUZZ_CHECK(r->ndiffs <= SP_CMP_MAX_DIFFS, "%zu diffs", r->ndiffs);
	for (size_t i = 0; i < r->ndiffs; i++) {
		const struct sp_diff *d = &r->diffs[i];
		FUZZ_CHECK(d->primary || d->shadow, "diff %zu has neither side", i);
		FUZZ_CHECK(!d->primary || valid_json(d->primary), "primary is not JSON: %s",
			   d->primary);
		FUZZ_CHECK(!d->shadow || valid_json(d->shadow), "shadow is not JSON: %s",
			   d->shadow);
		if (d->kind == SP_DIFF_JSON)
			FUZZ_CHECK(d->where && (!*d->where || *d->where == '/'), "pointer \"%s\"",
				   d->where ? d->where : "(null)");
	}
}

/* The diff log's text: a JSON array with one object per reported diff, read
 * back as `strangler diff-report` and the admin API do (diffreport.c,
 * diffring.c: JSON_ALLOW_NUL, since a body may hold NUL bytes). */
static void check_json_text(const struct sp_cmp_result *r, int include_noise)
{
	struct sp_buf b;
	json_error_t err;
	sp_buf_init(&b);
	FUZZ_CHECK(sp_cmp_diffs_json(r, include_noise, &b) == 0, "out of memory");
	json_t *j = json_loadb(b.data, b.len, JSON_ALLOW_NUL, &err);
	FUZZ_CHECK(j, "diffs are not JSON (%s at %d): %s", err.text, err.position, b.data);
	size_t want = 0;
	for (size_t i = 0; i < r->ndiffs; i++)
		want += include_noise || !r->diffs[i].noise;
	FUZZ_CHECK(json_is_array(j) && json_array_size(j) == want, "%zu diffs written, want %zu",
		   json_array_size(j), want);
	json_decref(j);
	sp_buf_deinit(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = {data, size};
	uint8_t f0 = fuzz_byte(&in), f1 = fuzz_byte(&in);
	const uint8_t *sep = memchr(in.p, 0xff, in.n);
	const uint8_t *pb = in.p, *sb = in.p;
	size_t pn = in.n, sn = in.n;
	if (sep) {
		pn = (size_t)(sep - in.p);
		sb = sep + 1;
		sn = in.n - pn - 1;
	}
	struct sp_cmp_rules rules = {headers, 3, ignore, 2, (enum sp_cmp_body)(f0 & 3), 0};
	struct side p, s;
	make_side(&p, 200, (f0 >> 2) & 1, f1 & 3, "a", pb, pn);
	make_side(&s, (f0 >> 4) & 1 ? 500 : 200, (f0 >> 3) & 1, (f1 >> 2) & 3,
		  (f0 >> 6) & 1 ? "b" : "a", sb, sn);

	struct sp_cmp_result r, back, self;
	FUZZ_CHECK(sp_compare(&rules, &p.s, &s.s, &r) == 0, "out of memory");
	check_result(&r);

	/* Swapping the sides swaps the values, not the places. */
	FUZZ_CHECK(sp_compare(&rules, &s.s, &p.s, &back) == 0, "out of memory");
	check_result(&back);
	FUZZ_CHECK(back.ndiffs == r.ndiffs, "%zu diffs one way, %zu the other", r.ndiffs,
		   back.ndiffs);
	for (size_t i = 0; i < r.ndiffs; i++) {
		const struct sp_diff *a = &r.diffs[i], *b = &back.diffs[i];
		FUZZ_CHECK(a->kind == b->kind && (a->where == NULL) == (b->where == NULL) &&
				   (!a->where || strcmp(a->where, b->where) == 0),
			   "diff %zu at %s one way, %s the other", i, a->where ? a->where : "-",
			   b->where ? b->where : "-");
	}

	/* An answer does not differ from itself. */
	FUZZ_CHECK(sp_compare(&rules, &p.s, &p.s, &self) == 0, "out of memory");
	FUZZ_CHECK(self.ndiffs == 0, "%zu diffs between an answer and itself, first at %s",
		   self.ndiffs, self.diffs[0].where ? self.diffs[0].where : "-");

	/* Noise measured against the same diffs hides all of them. */
	FUZZ_CHECK(sp_cmp_mark_noise(&back, &r) == 0, "noise left diffs");
	check_json_text(&r, (f0 >> 5) & 1);
	check_json_text(&back, (f0 >> 5) & 1);

	sp_cmp_result_deinit(&r);
	sp_cmp_result_deinit(&back);
	sp_cmp_result_deinit(&self);
	sp_buf_deinit(&p.gz);
	sp_buf_deinit(&s.gz);
	return 0;
}
