/* Compares a primary and a shadow answer: status, configured headers, and the
 * body after undoing Content-Encoding, structurally when both are JSON. */
#define ZLIB_CONST
#include "compare.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

const char sp_cmp_note_too_many[] = "more than 50 differences";
const char sp_cmp_note_too_large[] = "decompressed body too large: not compared";
const char sp_cmp_note_primary_undecodable[] =
	"primary body could not be decoded (Content-Encoding): compared as received";
const char sp_cmp_note_shadow_undecodable[] =
	"shadow body could not be decoded (Content-Encoding): compared as received";
const char sp_cmp_note_primary_not_json[] = "primary body is not valid JSON: compared as bytes";
const char sp_cmp_note_shadow_not_json[] = "shadow body is not valid JSON: compared as bytes";
const char sp_cmp_note_neither_json[] = "neither body is valid JSON: compared as bytes";
const char sp_cmp_note_wide_ints[] =
	"an integer past 64 bits: numbers compared to double precision";

#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS)

static int real_exact_at_15(double d)
{
	char t[32];
	snprintf(t, sizeof(t), "%.15g", d);
	return strtod(t, NULL) == d;
}

/* 0.1 reads better than 0.10000000000000001: 15 digits when they give back
 * every real of v exactly, else 17, so that a value shown is the value
 * compared (9007199254740992.0, not 9.00719925474099e15). */
int sp_json_real_precision(const json_t *v)
{
	const char *key;
	size_t i;
	json_t *e;
	if (json_is_real(v))
		return real_exact_at_15(json_real_value(v)) ? 15 : 17;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key, e) if (sp_json_real_precision(e) == 17) return 17;
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, e) if (sp_json_real_precision(e) == 17) return 17;
	}
	return 15;
}

int sp_cmp_body_parse(const char *s, enum sp_cmp_body *out)
{
	static const char *const names[] = {"auto", "json", "bytes", "none"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i]) == 0) {
			*out = (enum sp_cmp_body)i;
			return 0;
		}
	return -1;
}

const char *sp_cmp_kind_name(enum sp_diff_kind kind)
{
	static const char *const names[] = {"status", "header", "body", "json"};
	return (unsigned)kind < sizeof(names) / sizeof(names[0]) ? names[kind] : "?";
}

static void set_note(struct sp_cmp_result *r, const char *note)
{
	if (!r->note) /* the first reason explains the rest */
		r->note = note;
}

/* 0 when another diff fits, else 1 with the note set: callers stop walking. */
static int no_room(struct sp_cmp_result *r)
{
	if (r->ndiffs < SP_CMP_MAX_DIFFS)
		return 0;
	set_note(r, sp_cmp_note_too_many);
	return 1;
}

/* Takes ownership of where, primary and shadow, also on failure. */
static int add_diff(struct sp_cmp_result *r, enum sp_diff_kind kind, char *where, char *primary,
		    char *shadow)
{
	struct sp_diff *d = realloc(r->diffs, (r->ndiffs + 1) * sizeof(*d));
	if (!d) {
		free(where);
		free(primary);
		free(shadow);
		return -1;
	}
	r->diffs = d;
	r->diffs[r->ndiffs++] = (struct sp_diff){kind, where, primary, shadow, 0};
	return 0;
}

/* The JSON string of s (len bytes) followed by "…" when cut: UTF-8 kept as
 * jansson writes it, a byte that is not as the text \xNN, so the result is
 * valid JSON whatever the input. */
static int add_json_string_cut(struct sp_buf *b, const char *s, size_t len, int cut)
{
	return sp_buf_addc(b, '"') || sp_buf_add_json_bytes(b, s, len) ||
			       (cut && sp_buf_adds(b, "…")) || sp_buf_addc(b, '"')
		   ? -1
		   : 0;
}

static int add_json_string(struct sp_buf *b, const char *s, size_t len)
{
	return add_json_string_cut(b, s, len, 0);
}

/* Malloc'd JSON string of s (len bytes) followed by "…" when cut. */
static char *json_string_text(const char *s, size_t len, int cut)
{
	struct sp_buf out;
	sp_buf_init(&out);
	if (add_json_string_cut(&out, s, len, cut))
		sp_buf_deinit(&out);
	return out.data;
}

/* Takes ownership of text (JSON): returns it, or when it passes
 * SP_CMP_VALUE_MAX bytes, a JSON string of its start + "…". */
static char *bound_text(char *text)
{
	if (!text)
		return NULL;
	size_t len = strlen(text);
	if (len <= SP_CMP_VALUE_MAX)
		return text;
	char *s = json_string_text(text, sp_utf8_cut(text, len, SP_CMP_VALUE_MAX), 1);
	free(text);
	return s;
}

/* --- status and headers ---------------------------------------------------- */

static int compare_status(struct sp_cmp_result *r, const struct sp_cmp_side *p,
			  const struct sp_cmp_side *s)
{
	if (p->status == s->status)
		return 0;
	char a[16], b[16];
	snprintf(a, sizeof(a), "%d", p->status);
	snprintf(b, sizeof(b), "%d", s->status);
	char *pa = strdup(a), *sb = strdup(b);
	if (!pa || !sb) {
		free(pa);
		free(sb);
		return -1;
	}
	return add_diff(r, SP_DIFF_STATUS, NULL, pa, sb);
}

/* All values of header name joined with ", " into v; 0 when absent, 1 when
 * present, -1 when memory runs out. */
static int join_header(const struct sp_cmp_side *side, const char *name, struct sp_buf *v)
{
	int found = 0;
	sp_buf_reset(v);
	for (size_t i = 0; i < side->nheaders; i++) {
		const struct sp_hdr *h = &side->headers[i];
		if (!sp_hdr_name_is(h, name))
			continue;
		if ((found && sp_buf_adds(v, ", ")) || sp_buf_add(v, h->value, h->value_len))
			return -1;
		found = 1;
	}
	return found;
}

static int header_text(const struct sp_buf *v, int found, char **out)
{
	*out = NULL;
	if (!found)
		return 0;
	*out = bound_text(json_string_text(v->data, v->len, 0));
	return *out ? 0 : -1;
}

static int compare_header(struct sp_cmp_result *r, const char *name, const struct sp_cmp_side *p,
			  const struct sp_cmp_side *s, struct sp_buf *va, struct sp_buf *vb)
{
	int fa = join_header(p, name, va), fb = join_header(s, name, vb);
	if (fa < 0 || fb < 0)
		return -1;
	if (fa == fb && (!fa || (va->len == vb->len && memcmp(va->data, vb->data, va->len) == 0)))
		return 0;
	if (no_room(r))
		return 1;
	char *where = strdup(name), *ta = NULL, *tb = NULL;
	if (!where || header_text(va, fa, &ta) || header_text(vb, fb, &tb)) {
		free(where);
		free(ta);
		free(tb);
		return -1;
	}
	return add_diff(r, SP_DIFF_HEADER, where, ta, tb);
}

static int compare_headers(const struct sp_cmp_rules *rules, struct sp_cmp_result *r,
			   const struct sp_cmp_side *p, const struct sp_cmp_side *s)
{
	struct sp_buf va, vb;
	sp_buf_init(&va);
	sp_buf_init(&vb);
	int rc = 0;
	for (size_t i = 0; i < rules->nheaders && rc == 0; i++)
		rc = compare_header(r, rules->headers[i], p, s, &va, &vb);
	sp_buf_deinit(&va);
	sp_buf_deinit(&vb);
	return rc;
}

/* --- body decoding ------------------------------------------------------------ */

/* DEC_BAD: the body is not what its coding says (corrupt, truncated);
 * DEC_UNKNOWN: a coding not decoded here (br, zstd), which clients may read */
enum { DEC_NOMEM = -1, DEC_OK, DEC_BAD, DEC_TOO_LARGE, DEC_UNKNOWN };

struct body {
	const char *data;
	size_t len;
	char *owned; /* the decoded copy data points into, if any */
};

static int is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* Trims optional whitespace around [*v, *end). */
static void trim(const char **v, const char **end)
{
	while (*v < *end && is_ows(**v))
		(*v)++;
	while (*end > *v && is_ows((*end)[-1]))
		(*end)--;
}

static int token_is(const char *t, size_t n, const char *name)
{
	return strlen(name) == n && strncasecmp(t, name, n) == 0;
}

/* Inflates in with zlib's window bits wbits into *out. Output past max
 * stops the work: a small gzip bomb must not cost the proxy memory.
 * Concatenated gzip members are all decoded, as gunzip does. */
static int inflate_all(const char *in, size_t in_len, int wbits, size_t max, struct sp_buf *o)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (in_len > UINT_MAX)
		return DEC_TOO_LARGE;
	if (inflateInit2(&z, wbits) != Z_OK)
		return DEC_NOMEM;
	z.next_in = (const Bytef *)in;
	z.avail_in = (uInt)in_len;
	int rc;
	for (;;) {
		size_t want = o->len < 16384 ? 16384 : o->len;
		if (want > max + 1 - o->len)
			want = max + 1 - o->len;
		if (sp_buf_reserve(o, want) < 0) {
			rc = DEC_NOMEM;
			break;
		}
		z.next_out = (Bytef *)o->data + o->len;
		z.avail_out = (uInt)want;
		int zr = inflate(&z, Z_NO_FLUSH);
		o->len += want - z.avail_out;
		o->data[o->len] = '\0';
		if (o->len > max) {
			rc = DEC_TOO_LARGE;
			break;
		}
		if (zr == Z_STREAM_END && z.avail_in == 0) {
			rc = DEC_OK;
			break;
		}
		if (zr == Z_STREAM_END && wbits > MAX_WBITS && inflateReset(&z) == Z_OK)
			continue;
		if (zr != Z_OK) { /* truncated, corrupt, trailing bytes, or Z_MEM_ERROR */
			rc = zr == Z_MEM_ERROR ? DEC_NOMEM : DEC_BAD;
			break;
		}
	}
	inflateEnd(&z);
	return rc;
}

/* Undoes one coding of b in place. */
static int undo_coding(struct body *b, const char *t, size_t n, size_t max)
{
	int wbits;
	if (token_is(t, n, "identity"))
		return DEC_OK;
	if (token_is(t, n, "gzip") || token_is(t, n, "x-gzip"))
		wbits = 16 + MAX_WBITS;
	else if (token_is(t, n, "deflate"))
		wbits = MAX_WBITS;
	else
		return DEC_UNKNOWN; /* br, zstd, compress: not ours to decode */
	struct sp_buf o;
	sp_buf_init(&o);
	int rc = inflate_all(b->data, b->len, wbits, max, &o);
	/* "deflate" is zlib-wrapped per RFC 9110, but some servers send raw
	 * deflate; a missing zlib header shows as a data error. */
	if (rc == DEC_BAD && wbits == MAX_WBITS) {
		sp_buf_reset(&o);
		rc = inflate_all(b->data, b->len, -MAX_WBITS, max, &o);
	}
	if (rc != DEC_OK) {
		sp_buf_deinit(&o);
		return rc;
	}
	free(b->owned);
	b->owned = o.data;
	b->data = o.data ? o.data : "";
	b->len = o.len;
	return DEC_OK;
}

#define MAX_CODINGS 8

/* Collects the Content-Encoding tokens of every such header, in order. */
static int collect_codings(const struct sp_cmp_side *s, const char **tok, size_t *tlen)
{
	int n = 0;
	for (size_t i = 0; i < s->nheaders; i++) {
		if (!sp_hdr_name_is(&s->headers[i], "Content-Encoding"))
			continue;
		const char *v = s->headers[i].value, *end = v + s->headers[i].value_len;
		while (v < end) {
			const char *comma = memchr(v, ',', (size_t)(end - v));
			const char *te = comma ? comma : end, *t = v;
			trim(&t, &te);
			if (te > t) {
				if (n == MAX_CODINGS)
					return -1;
				tok[n] = t;
				tlen[n++] = (size_t)(te - t);
			}
			v = comma ? comma + 1 : end;
		}
	}
	return n;
}

/* Sets b to the body with its codings undone, last applied first. On
 * DEC_BAD and DEC_UNKNOWN b is the body as received; b->owned is always
 * safe to free. */
static int decode_side(const struct sp_cmp_side *s, size_t max, struct body *b)
{
	const char *tok[MAX_CODINGS];
	size_t tlen[MAX_CODINGS];
	*b = (struct body){s->body ? s->body : "", s->body ? s->body_len : 0, NULL};
	if (b->len == 0) /* HEAD, 204, 304 keep the header with nothing to undo */
		return DEC_OK;
	int n = collect_codings(s, tok, tlen);
	int rc = n < 0 ? DEC_UNKNOWN : DEC_OK;
	while (rc == DEC_OK && n-- > 0)
		rc = undo_coding(b, tok[n], tlen[n], max);
	if (rc == DEC_BAD || rc == DEC_UNKNOWN) {
		free(b->owned);
		*b = (struct body){s->body, s->body_len, NULL};
	}
	return rc;
}

/* Media type application/json or any +json suffix, parameters ignored. */
static int is_json_type(const struct sp_cmp_side *s)
{
	const struct sp_hdr *h = sp_hdr_find(s->headers, s->nheaders, "Content-Type");
	if (!h)
		return 0;
	const char *v = h->value, *end = v + h->value_len;
	const char *semi = memchr(v, ';', h->value_len);
	if (semi)
		end = semi;
	trim(&v, &end);
	size_t n = (size_t)(end - v);
	if (token_is(v, n, "application/json"))
		return 1;
	return n > 5 && memchr(v, '/', n) && strncasecmp(end - 5, "+json", 5) == 0;
}

/* --- bytes -------------------------------------------------------------------- */

/* Bytes an excerpt shows before the first difference, when it starts there. */
#define BODY_LEAD 16

/* "N bytes: <first 64 bytes>…" as a JSON string; when the difference at off
 * lies past what those would show with BODY_LEAD bytes after it, the 64
 * bytes from BODY_LEAD before it instead ("N bytes, from byte S: …<64
 * bytes>…"), so that the excerpts show where the two differ. */
static char *describe_body(const struct body *b, size_t off)
{
	struct sp_buf d;
	sp_buf_init(&d);
	size_t start = 0;
	if (off > SP_CMP_BODY_PREFIX - BODY_LEAD) {
		start = off - BODY_LEAD;
		/* on a character's first byte, when the body is UTF-8 there */
		for (int k = 0; k < 3 && start > 0 && ((unsigned char)b->data[start] & 0xc0) == 0x80; k++)
			start--;
	}
	size_t cut = sp_utf8_cut(b->data + start, b->len - start, SP_CMP_BODY_PREFIX);
	if (sp_buf_add_uint(&d, b->len, 10) ||
	    (start ? sp_buf_adds(&d, " bytes, from byte ") || sp_buf_add_uint(&d, start, 10) ||
			     sp_buf_adds(&d, ": …")
		   : sp_buf_adds(&d, " bytes: ")) ||
	    sp_buf_add(&d, b->data + start, cut)) {
		sp_buf_deinit(&d);
		return NULL;
	}
	char *s = json_string_text(d.data, d.len, start + cut < b->len);
	sp_buf_deinit(&d);
	return s;
}

/* A body difference at where; takes ownership of pa and sb (NULL: memory
 * ran out). */
static int add_body_diff(struct sp_cmp_result *r, const char *where, char *pa, char *sb)
{
	char *w = strdup(where);
	if (!w || !pa || !sb) {
		free(w);
		free(pa);
		free(sb);
		return -1;
	}
	return add_diff(r, SP_DIFF_BODY, w, pa, sb);
}

static int bytes_diff(struct sp_cmp_result *r, const struct body *a, const struct body *b)
{
	size_t n = a->len < b->len ? a->len : b->len, off = 0;
	while (off < n && a->data[off] == b->data[off])
		off++;
	if (off == n && a->len == b->len)
		return 0;
	if (no_room(r))
		return 1;
	char where[6 + SP_UINT_SIZE] = "bytes@";
	sp_fmt_uint(where + 6, off, 10);
	return add_body_diff(r, where, describe_body(a, off), describe_body(b, off));
}

/* --- JSON ----------------------------------------------------------------------- */

struct walk {
	const struct sp_cmp_rules *rules;
	struct sp_cmp_result *out;
	struct sp_buf ptr; /* JSON Pointer of the values being compared */
};

static int walk_value(struct walk *w, const json_t *a, const json_t *b);

static int ignored(const struct walk *w)
{
	for (size_t i = 0; i < w->rules->nignore; i++)
		if (sp_json_pointer_match(w->rules->ignore[i], w->ptr.data))
			return 1;
	return 0;
}

/* Appends "/" and the RFC 6901 escaped segment. */
static int push_key(struct sp_buf *p, const char *k, size_t n)
{
	if (sp_buf_addc(p, '/'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		int rc = k[i] == '~'   ? sp_buf_add(p, "~0", 2)
			 : k[i] == '/' ? sp_buf_add(p, "~1", 2)
				       : sp_buf_addc(p, k[i]);
		if (rc)
			return -1;
	}
	return 0;
}

static void pop_to(struct sp_buf *p, size_t len)
{
	p->len = len;
	p->data[len] = '\0';
}

static int dump_value(const json_t *v, char **out)
{
	*out = NULL;
	if (!v)
		return 0;
	*out = bound_text(json_dumps(v, DUMP_FLAGS | JSON_REAL_PRECISION(sp_json_real_precision(v))));
	return *out ? 0 : -1;
}

/* A copy of pointer, cut past SP_CMP_WHERE_MAX bytes (on a character's
 * boundary) and ended by "…" then: long keys nested deep must not make a
 * diff line of a megabyte. */
static char *bound_where(const char *ptr, size_t len)
{
	size_t cut = sp_utf8_cut(ptr, len, SP_CMP_WHERE_MAX);
	char *w = malloc(cut + sizeof("…"));
	if (w) {
		memcpy(w, ptr, cut);
		strcpy(w + cut, cut < len ? "…" : "");
	}
	return w;
}

static int json_diff(struct walk *w, const json_t *a, const json_t *b)
{
	if (no_room(w->out))
		return 1;
	char *where = bound_where(w->ptr.data, w->ptr.len), *ta, *tb;
	int rc = dump_value(a, &ta) | dump_value(b, &tb);
	if (!where || rc) {
		free(where);
		free(ta);
		free(tb);
		return -1;
	}
	return add_diff(w->out, SP_DIFF_JSON, where, ta, tb);
}

static int scalar_equal(const json_t *a, const json_t *b)
{
	if (json_is_integer(a) && json_is_integer(b))
		return json_integer_value(a) == json_integer_value(b);
	/* long double holds every int64 and every double exactly, so 1 == 1.0
	 * without 2^53 + 1 == 2^53. */
	if (json_is_number(a) && json_is_number(b)) {
		long double x = json_is_integer(a) ? (long double)json_integer_value(a)
						   : (long double)json_real_value(a);
		long double y = json_is_integer(b) ? (long double)json_integer_value(b)
						   : (long double)json_real_value(b);
		return x == y;
	}
	return json_equal(a, b);
}

struct key {
	const char *s;
	size_t len;
};

static int key_cmp(const void *x, const void *y)
{
	const struct key *a = x, *b = y;
	int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
	return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* Both objects' keys, sorted and without repeats, so diffs come out in the
 * same order whatever order each backend wrote its keys in. */
static struct key *union_keys(const json_t *a, const json_t *b, size_t *n)
{
	struct key *k = malloc((json_object_size(a) + json_object_size(b) + 1) * sizeof(*k));
	const char *key;
	size_t klen, m = 0;
	json_t *v;
	if (!k)
		return NULL;
	json_object_keylen_foreach((json_t *)a, key, klen, v) k[m++] = (struct key){key, klen};
	json_object_keylen_foreach((json_t *)b, key, klen, v) k[m++] = (struct key){key, klen};
	qsort(k, m, sizeof(*k), key_cmp);
	*n = 0;
	for (size_t i = 0; i < m; i++)
		if (*n == 0 || key_cmp(&k[*n - 1], &k[i]) != 0)
			k[(*n)++] = k[i];
	return k;
}

static int walk_object(struct walk *w, const json_t *a, const json_t *b)
{
	size_t n, base = w->ptr.len;
	struct key *k = union_keys(a, b, &n);
	if (!k)
		return -1;
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (push_key(&w->ptr, k[i].s, k[i].len) < 0) {
			rc = -1;
			break;
		}
		rc = walk_value(w, json_object_getn(a, k[i].s, k[i].len),
				json_object_getn(b, k[i].s, k[i].len));
		pop_to(&w->ptr, base);
	}
	free(k);
	return rc;
}

/* Element by element; the longer side's extra elements are each a diff. */
static int walk_array(struct walk *w, const json_t *a, const json_t *b)
{
	size_t na = json_array_size(a), nb = json_array_size(b), base = w->ptr.len;
	int rc = 0;
	for (size_t i = 0; i < (na > nb ? na : nb) && rc == 0; i++) {
		/* without printf: it was a third of a large array's walk */
		if (sp_buf_addc(&w->ptr, '/') < 0 || sp_buf_add_uint(&w->ptr, i, 10) < 0)
			return -1;
		rc = walk_value(w, json_array_get(a, i), json_array_get(b, i));
		pop_to(&w->ptr, base);
	}
	return rc;
}

/* 0 to go on, 1 when the diff cap stopped the walk, -1 out of memory. */
static int walk_value(struct walk *w, const json_t *a, const json_t *b)
{
	if (ignored(w))
		return 0;
	if (a && b && json_is_object(a) && json_is_object(b))
		return walk_object(w, a, b);
	if (a && b && json_is_array(a) && json_is_array(b))
		return walk_array(w, a, b);
	if (a && b && scalar_equal(a, b))
		return 0;
	return json_diff(w, a, b);
}

/* Integers past int64 are valid JSON that jansson refuses; reading them as
 * reals keeps the body comparable (to double precision). *as_real says so. */
static json_t *parse_json(const struct body *b, int real, int *as_real)
{
	json_error_t err;
	size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL | (real ? JSON_DECODE_INT_AS_REAL : 0);
	json_t *j = json_loadb(b->data, b->len, flags, &err);
	*as_real = real;
	if (!j && !real && json_error_code(&err) == json_error_numeric_overflow) {
		j = json_loadb(b->data, b->len, flags | JSON_DECODE_INT_AS_REAL, &err);
		*as_real = 1;
	}
	return j;
}

static int json_body(const struct sp_cmp_rules *rules, struct sp_cmp_result *r,
		     const struct body *a, const struct body *b)
{
	int ra, rb;
	json_t *ja = parse_json(a, 0, &ra), *jb = parse_json(b, 0, &rb);
	struct walk w = {rules, r, {NULL, 0, 0, NULL}};
	int rc;
	if (ja && jb && ra != rb) {
		/* both sides at the same precision: an integer read exactly on one
		 * side and rounded on the other would differ for nothing */
		json_decref(ra ? jb : ja);
		if (ra)
			jb = parse_json(b, 1, &rb);
		else
			ja = parse_json(a, 1, &ra);
	}
	if (ja && jb && (ra || rb))
		set_note(r, sp_cmp_note_wide_ints);
	if (!ja || !jb) {
		set_note(r, !ja && !jb ? sp_cmp_note_neither_json
			    : !ja      ? sp_cmp_note_primary_not_json
				       : sp_cmp_note_shadow_not_json);
		rc = bytes_diff(r, a, b);
		goto out;
	}
	rc = sp_buf_add(&w.ptr, "", 0) < 0 ? -1 : walk_value(&w, ja, jb);
out:
	sp_buf_deinit(&w.ptr);
	json_decref(ja);
	json_decref(jb);
	return rc;
}

/* "encoding": which side's Content-Encoding does not decode. */
static int encoding_diff(struct sp_cmp_result *r, int primary_bad, const struct body *a,
			 const struct body *b)
{
	if (no_room(r))
		return 1;
	static const char bad[] = "does not decode as its Content-Encoding says";
	char *pa = primary_bad ? json_string_text(bad, sizeof(bad) - 1, 0) : describe_body(a, 0);
	char *sb = primary_bad ? describe_body(b, 0) : json_string_text(bad, sizeof(bad) - 1, 0);
	return add_body_diff(r, "encoding", pa, sb);
}

/* How far a body may decode (sp_cmp_rules.max_decoded). */
static size_t decoded_max(const struct sp_cmp_rules *rules)
{
	return rules->max_decoded ? rules->max_decoded : SP_CMP_INFLATE_MAX;
}

static int compare_body(const struct sp_cmp_rules *rules, struct sp_cmp_result *r,
			const struct sp_cmp_side *p, const struct sp_cmp_side *s)
{
	struct body a, b;
	size_t max = decoded_max(rules);
	int ra = decode_side(p, max, &a), rb = decode_side(s, max, &b), rc = 0;
	if (ra == DEC_NOMEM || rb == DEC_NOMEM) {
		rc = -1;
		goto out;
	}
	if (ra == DEC_TOO_LARGE || rb == DEC_TOO_LARGE) {
		set_note(r, sp_cmp_note_too_large);
		goto out;
	}
	if (ra == DEC_BAD || ra == DEC_UNKNOWN)
		set_note(r, sp_cmp_note_primary_undecodable);
	if (rb == DEC_BAD || rb == DEC_UNKNOWN)
		set_note(r, sp_cmp_note_shadow_undecodable);
	if ((ra == DEC_BAD) != (rb == DEC_BAD)) {
		/* one side's clients could not read it, the other's could: a
		 * difference whatever the bytes (the same document, announced
		 * gzip and sent plain, is not the same answer) */
		rc = encoding_diff(r, ra == DEC_BAD, &a, &b);
		goto out;
	}
	/* Equal bytes are equal in every mode, and skip parsing (also two
	 * empty bodies, which are not JSON). */
	if (a.len == b.len && memcmp(a.data, b.data, a.len) == 0)
		goto out;
	if (rules->body == SP_CMP_JSON ||
	    (rules->body == SP_CMP_AUTO && is_json_type(p) && is_json_type(s)))
		rc = json_body(rules, r, &a, &b);
	else
		rc = bytes_diff(r, &a, &b);
out:
	free(a.owned);
	free(b.owned);
	return rc;
}

int sp_compare(const struct sp_cmp_rules *rules, const struct sp_cmp_side *primary,
	       const struct sp_cmp_side *shadow, struct sp_cmp_result *out)
{
	*out = (struct sp_cmp_result){NULL, 0, NULL};
	int rc = compare_status(out, primary, shadow);
	if (rc == 0)
		rc = compare_headers(rules, out, primary, shadow);
	if (rc == 0 && rules->body != SP_CMP_NONE)
		rc = compare_body(rules, out, primary, shadow);
	if (rc < 0) {
		sp_cmp_result_deinit(out);
		return -1;
	}
	return 0;
}

/* --- results ---------------------------------------------------------------------- */

void sp_cmp_result_deinit(struct sp_cmp_result *r)
{
	for (size_t i = 0; i < r->ndiffs; i++) {
		free(r->diffs[i].where);
		free(r->diffs[i].primary);
		free(r->diffs[i].shadow);
	}
	free(r->diffs);
	*r = (struct sp_cmp_result){NULL, 0, NULL};
}

static int same_place(const struct sp_diff *a, const struct sp_diff *b)
{
	if (a->kind != b->kind)
		return 0;
	if (a->kind == SP_DIFF_BODY || (!a->where && !b->where))
		return 1;
	return a->where && b->where && strcmp(a->where, b->where) == 0;
}

size_t sp_cmp_mark_noise(struct sp_cmp_result *r, const struct sp_cmp_result *noise)
{
	size_t left = 0;
	for (size_t i = 0; i < r->ndiffs; i++) {
		for (size_t j = 0; noise && j < noise->ndiffs && !r->diffs[i].noise; j++)
			if (same_place(&r->diffs[i], &noise->diffs[j]))
				r->diffs[i].noise = 1;
		left += !r->diffs[i].noise;
	}
	return left;
}

/* Separators between the tokens of a text body: blanks and the punctuation
 * that delimits values (not '-', ':', '.', which a timestamp or a number
 * holds). Each separator is a token of its own. */
static int separator(unsigned char c)
{
	return c <= ' ' || (c < 0x80 && strchr("\"',;=&<>()[]{}|", c) != NULL);
}

/* The token of b at *at ([*at, end)), advancing *at; 0 at the end. */
static int next_token(const struct body *b, size_t *at, size_t *start, size_t *len)
{
	size_t i = *at;
	if (i >= b->len)
		return 0;
	*start = i;
	if (separator((unsigned char)b->data[i]))
		i++;
	else
		while (i < b->len && !separator((unsigned char)b->data[i]))
			i++;
	*len = i - *start;
	*at = i;
	return 1;
}

/* Whether, token by token, wherever the shadow's body differs from the
 * primary's, the sample's does too (a timestamp, a counter, an id: one
 * token each however their digits roll). Bodies of different token counts
 * cannot be matched up: no. */
static int tokens_vary_alike(const struct body *p, const struct body *s, const struct body *n)
{
	size_t ap = 0, as = 0, an = 0, sp0, lp, ss, ls, sn, ln;
	for (;;) {
		int hp = next_token(p, &ap, &sp0, &lp), hs = next_token(s, &as, &ss, &ls),
		    hn = next_token(n, &an, &sn, &ln);
		if (!hp || !hs || !hn)
			return !hp && !hs && !hn;
		int s_differs = lp != ls || memcmp(p->data + sp0, s->data + ss, lp) != 0;
		int n_differs = lp != ln || memcmp(p->data + sp0, n->data + sn, lp) != 0;
		if (s_differs && !n_differs)
			return 0;
	}
}

int sp_cmp_body_noise(const struct sp_cmp_rules *rules, const struct sp_cmp_side *primary,
		      const struct sp_cmp_side *shadow, const struct sp_cmp_side *sample)
{
	size_t max = decoded_max(rules);
	struct body p, s, n;
	int rp = decode_side(primary, max, &p), rs = decode_side(shadow, max, &s),
	    rn = decode_side(sample, max, &n), noise = 0;
	if (rp == DEC_OK && rs == DEC_OK && rn == DEC_OK) {
		if (s.len == n.len && memcmp(s.data, n.data, s.len) == 0)
			noise = 1; /* the mirror said what the primary said the second time */
		else
			noise = tokens_vary_alike(&p, &s, &n);
	}
	free(p.owned);
	free(s.owned);
	free(n.owned);
	return noise;
}

int sp_json_pointer_match(const char *pattern, const char *pointer)
{
	for (;;) {
		if (!*pattern || !*pointer)
			return !*pattern && !*pointer;
		if (*pattern++ != '/' || *pointer++ != '/')
			return 0;
		size_t pl = strcspn(pattern, "/"), tl = strcspn(pointer, "/");
		int any = pl == 1 && *pattern == '*';
		if (!any && (pl != tl || memcmp(pattern, pointer, pl) != 0))
			return 0;
		pattern += pl;
		pointer += tl;
	}
}

static int add_raw_or_null(struct sp_buf *b, const char *key, const char *json)
{
	return sp_buf_adds(b, ",\"") || sp_buf_adds(b, key) || sp_buf_adds(b, "\":") ||
			       sp_buf_adds(b, json ? json : "null")
		   ? -1
		   : 0;
}

static int add_diff_json(struct sp_buf *b, const struct sp_diff *d, int first)
{
	if (sp_buf_adds(b, first ? "{\"kind\":\"" : ",{\"kind\":\"") ||
	    sp_buf_adds(b, sp_cmp_kind_name(d->kind)) || sp_buf_adds(b, "\",\"where\":") ||
	    (d->where ? add_json_string(b, d->where, strlen(d->where)) : sp_buf_adds(b, "null")) ||
	    add_raw_or_null(b, "primary", d->primary) || add_raw_or_null(b, "shadow", d->shadow) ||
	    /* a value one side lacks, told from one it sends as null */
	    (!d->primary != !d->shadow &&
	     sp_buf_adds(b, d->primary ? ",\"missing\":\"shadow\"" : ",\"missing\":\"primary\"")))
		return -1;
	return sp_buf_adds(b, d->noise ? ",\"noise\":true}" : ",\"noise\":false}");
}

int sp_cmp_diffs_json(const struct sp_cmp_result *r, int include_noise, struct sp_buf *b)
{
	size_t start = b->len;
	int first = 1;
	if (sp_buf_addc(b, '[') < 0)
		goto fail;
	for (size_t i = 0; i < r->ndiffs; i++) {
		if (r->diffs[i].noise && !include_noise)
			continue;
		if (add_diff_json(b, &r->diffs[i], first) < 0)
			goto fail;
		first = 0;
	}
	if (sp_buf_addc(b, ']') == 0)
		return 0;
fail:
	if (b->data) {
		b->len = start;
		b->data[start] = '\0';
	}
	return -1;
}
