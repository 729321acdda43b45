/* Growable byte buffer shared by the pure modules (serialisation, logs, explain). */
#include "buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Blocks come back in the order a request uses them, so the one asked for
 * is near the top: a few slots are looked at, not all. */
#define STASH_LOOK 8

void *sp_stash_take(struct sp_stash *st, size_t size, size_t *got)
{
	if (!st)
		return NULL;
	for (size_t i = st->n, looked = 0; i > 0 && looked < STASH_LOOK; i--, looked++) {
		if (st->slot[i - 1].size < size)
			continue;
		void *p = st->slot[i - 1].p;
		*got = st->slot[i - 1].size;
		st->slot[i - 1] = st->slot[--st->n];
		return p;
	}
	return NULL;
}

void *sp_stash_grow(struct sp_stash *st, void *arr, size_t *cap, size_t want, size_t size)
{
	size_t got;
	void *p = arr ? NULL : sp_stash_take(st, want * size, &got);
	if (p)
		want = got / size;
	else if (!(p = realloc(arr, want * size)))
		return NULL;
	*cap = want;
	return p;
}

void sp_stash_put(struct sp_stash *st, void *p, size_t size)
{
	if (!p)
		return;
	if (!st || st->n == SP_STASH_SLOTS || size > SP_STASH_MAX_BLOCK || size == 0) {
		free(p);
		return;
	}
	st->slot[st->n].p = p;
	st->slot[st->n].size = size;
	st->n++;
}

void sp_stash_clear(struct sp_stash *st)
{
	while (st->n > 0)
		free(st->slot[--st->n].p);
}

void sp_buf_init(struct sp_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->stash = NULL;
}

void sp_buf_deinit(struct sp_buf *b)
{
	sp_stash_put(b->stash, b->data, b->cap);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

int sp_buf_reserve(struct sp_buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return 0;
	if (!b->data) {
		size_t got;
		char *kept = sp_stash_take(b->stash, b->len + extra + 1, &got);
		if (kept) {
			b->data = kept;
			b->cap = got;
			return 0;
		}
	}
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *p = realloc(b->data, cap);
	if (!p)
		return -1;
	b->data = p;
	b->cap = cap;
	return 0;
}

int sp_buf_printf(struct sp_buf *b, const char *fmt, ...)
{
	/* formatted once into the room there is; a second time only when it
	 * did not fit */
	size_t room = b->cap > b->len ? b->cap - b->len : 0;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= room) {
		if (sp_buf_reserve(b, (size_t)n) < 0) {
			if (room)
				b->data[b->len] = '\0';
			return -1;
		}
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
	return 0;
}

/* ,"key":"v" with v escaped by escape, or ,"key":null when v is NULL. */
static int add_field(struct sp_buf *b, const char *key, const char *v, size_t len,
		     int (*escape)(struct sp_buf *, const char *, size_t))
{
	if (sp_buf_add(b, ",\"", 2) || sp_buf_adds(b, key) || sp_buf_add(b, "\":", 2))
		return -1;
	if (!v)
		return sp_buf_adds(b, "null");
	return sp_buf_addc(b, '"') || escape(b, v, len) || sp_buf_addc(b, '"');
}

int sp_buf_add_json_field(struct sp_buf *b, const char *key, const char *v, size_t len)
{
	return add_field(b, key, v, len, sp_buf_add_json_str);
}

int sp_buf_add_json_text_field(struct sp_buf *b, const char *key, const char *v)
{
	return add_field(b, key, v, v ? strlen(v) : 0, sp_buf_add_json_text);
}

int sp_buf_add_json_str(struct sp_buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	if (sp_buf_reserve(b, len + 8) < 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		int rc;
		size_t run = i;
		while (run < len && (unsigned char)s[run] >= 0x20 && (unsigned char)s[run] < 0x7f &&
		       s[run] != '"' && s[run] != '\\')
			run++;
		if (run > i) { /* the plain bytes up to the next one to escape, at once */
			if (sp_buf_add(b, s + i, run - i) < 0)
				return -1;
			i = run - 1;
			continue;
		}
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			rc = sp_buf_add(b, esc, 2);
		} else if (c < 0x20 || c == 0x7f) {
			char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			rc = sp_buf_add(b, esc, 6);
		} else if (c >= 0x80) {
			/* Bytes from the wire are not trusted to be UTF-8: escape them so
			 * every line stays valid JSON. */
			char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			rc = sp_buf_add(b, esc, 6);
		} else {
			rc = sp_buf_addc(b, (char)c);
		}
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* The code point of the UTF-8 sequence at s (n bytes left) and its length,
 * or 0 when it is not one (overlong, a surrogate, past U+10FFFF, cut). */
static size_t utf8_at(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
	if (len == 0 || len > n || s[0] > 0xf4)
		return 0;
	uint32_t c = s[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
	if (c < least[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

static int add_u_escape(struct sp_buf *b, uint32_t c)
{
	static const char hex[] = "0123456789abcdef";
	if (c > 0xffff) { /* a surrogate pair */
		c -= 0x10000;
		if (add_u_escape(b, 0xd800 | (c >> 10)) < 0)
			return -1;
		c = 0xdc00 | (c & 0x3ff);
	}
	char esc[6] = {'\\', 'u', hex[c >> 12], hex[(c >> 8) & 15], hex[(c >> 4) & 15], hex[c & 15]};
	return sp_buf_add(b, esc, 6);
}

/* The end of the run of UTF-8 characters from i (i when u[i] begins none). */
static size_t utf8_run(const unsigned char *u, size_t i, size_t len)
{
	uint32_t c;
	size_t n;
	while (i < len && (u[i] < 0x80 || (n = utf8_at(u + i, len - i, &c)) > 0))
		i += u[i] < 0x80 ? 1 : n;
	return i;
}

/* s (UTF-8) escaped as json_dumps escapes it. */
static int add_json_escaped(struct sp_buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	static const char shortcut[0x20] = {['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r',
					    ['\t'] = 't'};
	const unsigned char *u = (const unsigned char *)s;
	if (sp_buf_reserve(b, len + 2) < 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		size_t run = i;
		while (run < len && u[run] >= 0x20 && u[run] != '"' && u[run] != '\\')
			run++;
		if (run > i && sp_buf_add(b, s + i, run - i) < 0)
			return -1;
		if (run == len)
			break;
		i = run;
		unsigned char c = u[i];
		char esc[6] = {'\\', (char)c, 'u', '0', '0', 0};
		size_t n = 2;
		if (c != '"' && c != '\\' && shortcut[c]) {
			esc[1] = shortcut[c];
		} else if (c != '"' && c != '\\') {
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			n = 6;
		}
		if (sp_buf_add(b, esc, n) < 0)
			return -1;
	}
	return 0;
}

int sp_buf_add_json_utf8(struct sp_buf *b, const char *s, size_t len)
{
	if (utf8_run((const unsigned char *)s, 0, len) != len)
		return 1; /* checked whole before a byte is written */
	return add_json_escaped(b, s, len);
}

/* s written run by run: each run of UTF-8 characters by run(), each byte
 * that begins none by bad(). */
static int add_by_utf8_runs(struct sp_buf *b, const char *s, size_t len,
			    int (*run)(struct sp_buf *, const char *, size_t),
			    int (*bad)(struct sp_buf *, unsigned char))
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < len;) {
		size_t end = utf8_run(u, i, len);
		if (end > i && run(b, s + i, end - i) < 0)
			return -1;
		if (end == len)
			break;
		if (bad(b, u[end]) < 0)
			return -1;
		i = end + 1;
	}
	return 0;
}

static int add_as_is(struct sp_buf *b, const char *s, size_t len)
{
	return sp_buf_add(b, s, len);
}

static int add_replacement(struct sp_buf *b, unsigned char c)
{
	(void)c;
	return sp_buf_add(b, "\xef\xbf\xbd", 3); /* U+FFFD */
}

static int add_hex_text(struct sp_buf *b, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char esc[5] = {'\\', '\\', 'x', hex[c >> 4], hex[c & 15]}; /* JSON for \xNN */
	return sp_buf_add(b, esc, sizeof(esc));
}

int sp_buf_add_utf8_valid(struct sp_buf *b, const char *s, size_t len)
{
	return add_by_utf8_runs(b, s, len, add_as_is, add_replacement);
}

int sp_buf_add_json_bytes(struct sp_buf *b, const char *s, size_t len)
{
	return add_by_utf8_runs(b, s, len, add_json_escaped, add_hex_text);
}

int sp_buf_add_json_text(struct sp_buf *b, const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < len;) {
		size_t run = i;
		while (run < len && u[run] < 0x80)
			run++;
		if (run > i && sp_buf_add_json_str(b, s + i, run - i) < 0)
			return -1;
		if (run == len)
			break;
		uint32_t c = u[run];
		size_t n = utf8_at(u + run, len - run, &c);
		if (add_u_escape(b, c) < 0) /* not UTF-8: the byte, as add_json_str writes it */
			return -1;
		i = run + (n ? n : 1);
	}
	return 0;
}

int sp_buf_json_ascii(struct sp_buf *b, size_t from)
{
	size_t i = from;
	while (i < b->len && (unsigned char)b->data[i] < 0x7f)
		i++;
	if (i == b->len)
		return 0; /* the usual line: nothing to do */
	struct sp_buf tail;
	sp_buf_init(&tail);
	const unsigned char *u = (const unsigned char *)b->data;
	int rc = 0;
	for (size_t k = i; k < b->len && rc == 0;) {
		uint32_t c = u[k];
		size_t n = c <= 0x7f ? 1 : utf8_at(u + k, b->len - k, &c);
		if (c < 0x7f)
			rc = sp_buf_addc(&tail, (char)c);
		else
			rc = add_u_escape(&tail, c);
		k += n ? n : 1;
	}
	if (rc == 0) {
		b->len = i;
		rc = sp_buf_add(b, tail.data, tail.len);
	}
	sp_buf_deinit(&tail);
	return rc;
}

size_t sp_fmt_uint(char out[SP_UINT_SIZE], uint64_t v, unsigned base)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[SP_UINT_SIZE];
	size_t n = 0;
	do {
		tmp[sizeof(tmp) - 1 - n++] = digits[v % base];
		v /= base;
	} while (v);
	memcpy(out, tmp + sizeof(tmp) - n, n);
	out[n] = '\0';
	return n;
}

int sp_buf_add_pct(struct sp_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
		char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
		if (plain ? sp_buf_addc(b, (char)c) < 0 : sp_buf_add(b, esc, 3) < 0)
			return -1;
	}
	return 0;
}

int sp_buf_add_uint(struct sp_buf *b, uint64_t v, unsigned base)
{
	char tmp[SP_UINT_SIZE];
	return sp_buf_add(b, tmp, sp_fmt_uint(tmp, v, base));
}

int sp_buf_add_fixed3(struct sp_buf *b, double v)
{
	if (!(v >= 0 && v < 1e15))
		return sp_buf_printf(b, "%.3f", v);
	uint64_t t = (uint64_t)(v * 1000.0 + 0.5);
	char frac[4] = {'.', (char)('0' + t / 100 % 10), (char)('0' + t / 10 % 10),
			(char)('0' + t % 10)};
	return sp_buf_add_uint(b, t / 1000, 10) < 0 ? -1 : sp_buf_add(b, frac, 4);
}

const char *sp_num(char *out, double v)
{
	/* at least the integer part's digits: 150, not 1.5e+02 */
	int prec = fabs(v) >= 1 && fabs(v) < 1e17 ? (int)floor(log10(fabs(v))) + 1 : 1;
	for (; prec <= 17; prec++) {
		snprintf(out, SP_NUM_SIZE, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			break;
	}
	return out;
}

size_t sp_utf8_cut(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	size_t cut = max;
	for (int i = 0; i < 3 && cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80; i++)
		cut--;
	return ((unsigned char)s[cut] & 0xc0) == 0x80 ? max : cut;
}
