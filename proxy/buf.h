/* A growable byte buffer for building strings without libevent (pure modules). */
#ifndef SP_BUF_H
#define SP_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct sp_stash;

struct sp_buf {
	char *data;
	size_t len;
	size_t cap;
	struct sp_stash *stash; /* where the block comes from and goes back to, or NULL */
};

/* One thread's spare small blocks. An idle keep-alive connection gives its
 * buffers back (thousands of idle clients then hold none), and the next
 * request of any connection takes them again: no malloc/free pair per
 * buffer per request, which cost 2 % of the CPU per request when heads of 50
 * busy connections overflowed glibc's per-thread cache (7 blocks a size).
 * Bounded: at most SP_STASH_SLOTS blocks of SP_STASH_MAX_BLOCK bytes. */
#define SP_STASH_SLOTS 128
#define SP_STASH_MAX_BLOCK 4096
struct sp_stash {
	size_t n;
	struct {
		void *p;
		size_t size;
	} slot[SP_STASH_SLOTS];
};

/* A kept block of at least `size` bytes (its size in *got), else NULL. */
void *sp_stash_take(struct sp_stash *st, size_t size, size_t *got);
/* arr (NULL or malloc'd) with room for at least `want` elements of `size`
 * bytes, its capacity in elements in *cap: a kept block for an empty array,
 * realloc otherwise. NULL when memory runs out (arr and *cap unchanged). */
void *sp_stash_grow(struct sp_stash *st, void *arr, size_t *cap, size_t want, size_t size);
/* Keeps the malloc'd block p of `size` bytes, or frees it (stash full, block
 * too large, or st NULL). */
void sp_stash_put(struct sp_stash *st, void *p, size_t size);
/* Frees every kept block. */
void sp_stash_clear(struct sp_stash *st);

void sp_buf_init(struct sp_buf *b);
/* Gives the block back (to b->stash when set); b stays usable, stash kept. */
void sp_buf_deinit(struct sp_buf *b);
/* All appenders return 0, or -1 when memory runs out (the buffer is unchanged). */
int sp_buf_reserve(struct sp_buf *b, size_t extra);

/* The appenders run a few times per header on the request path: inline, so
 * the room check is two compares and the length of a literal is a constant. */
static inline int sp_buf_add(struct sp_buf *b, const void *data, size_t len)
{
	if (b->len + len + 1 > b->cap && sp_buf_reserve(b, len) < 0)
		return -1;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

static inline int sp_buf_adds(struct sp_buf *b, const char *s)
{
	return sp_buf_add(b, s, strlen(s));
}

static inline int sp_buf_addc(struct sp_buf *b, char c)
{
	return sp_buf_add(b, &c, 1);
}
/* strlcpy into a fixed array (size > 0): as much of src as fits, always
 * terminated; for the request path, where snprintf("%s") costs a printf. */
static inline void sp_copy_str(char *dst, size_t size, const char *src)
{
	size_t n = strnlen(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* The text of a macro's value: SP_STR(1024) is "1024". */
#define SP_STR_(x) #x
#define SP_STR(x) SP_STR_(x)
/* Cut position at most max bytes into s (len bytes) that does not split a
 * UTF-8 sequence (looks back at most 3 bytes, so binary data still gets cut). */
size_t sp_utf8_cut(const char *s, size_t len, size_t max);
/* src into dst (size bytes, NUL included), cut where sp_utf8_cut says. */
static inline void sp_copy_text(char *dst, size_t size, const char *src)
{
	size_t n = sp_utf8_cut(src, strlen(src), size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}
__attribute__((format(printf, 2, 3))) int sp_buf_printf(struct sp_buf *b, const char *fmt, ...);
/* v in base 10 or 16 (lower case) into out, NUL-ended; its length. */
#define SP_UINT_SIZE 24
size_t sp_fmt_uint(char out[SP_UINT_SIZE], uint64_t v, unsigned base);
/* Appends v in base 10 or 16 (lower case): no printf on the request path. */
int sp_buf_add_uint(struct sp_buf *b, uint64_t v, unsigned base);
/* Appends v (>= 0) with three decimals, as "%.3f" writes it (rounded half
 * up): no printf on the request path. */
int sp_buf_add_fixed3(struct sp_buf *b, double v);
/* Appends s percent-encoded as a path segment: every byte but A-Z a-z 0-9
 * - . _ ~ as %XX (a route's name in an admin API path). */
int sp_buf_add_pct(struct sp_buf *b, const char *s);
/* Appends s as the body of a JSON string (no quotes), escaping as RFC 8259 requires. */
int sp_buf_add_json_str(struct sp_buf *b, const char *s, size_t len);
/* Appends ,"key":"v" (v escaped as above), or ,"key":null when v is NULL. */
int sp_buf_add_json_field(struct sp_buf *b, const char *key, const char *v, size_t len);
/* As sp_buf_add_json_str for text known to be UTF-8 (names from the
 * configuration): each character past ASCII becomes its \uXXXX escape (a
 * pair above U+FFFF), where sp_buf_add_json_str, for bytes from the wire,
 * escapes each byte alone; a byte that is not UTF-8 is escaped as it does. */
int sp_buf_add_json_text(struct sp_buf *b, const char *s, size_t len);
/* s with each byte that does not begin a UTF-8 character replaced by U+FFFD
 * (text jansson takes: a file name in Latin-1, a value quoted in an error). */
int sp_buf_add_utf8_valid(struct sp_buf *b, const char *s, size_t len);
/* s escaped into a JSON string's inside as jansson's json_dumps writes it
 * (UTF-8 as it is; ", \\ and control bytes escaped, \\u00XX in capitals):
 * 0, 1 with nothing written when s is not UTF-8, -1 when memory runs out. */
int sp_buf_add_json_utf8(struct sp_buf *b, const char *s, size_t len);
/* As sp_buf_add_json_utf8 for bytes from the wire: the UTF-8 characters as
 * themselves, each other byte as the text \xNN (a JSON "\\xNN"), so that
 * a Latin-1 é (\xe9) does not read as the character é. */
int sp_buf_add_json_bytes(struct sp_buf *b, const char *s, size_t len);
/* ,"key":"v" with v (a C string) escaped by sp_buf_add_json_text; null when NULL. */
int sp_buf_add_json_text_field(struct sp_buf *b, const char *key, const char *v);
/* Rewrites the JSON text of b from offset from in ASCII: each UTF-8
 * character past it, and DEL, becomes its \uXXXX escape (a log line then
 * holds no byte a terminal acts on). Such bytes occur only inside strings in
 * JSON, so the text stays the same JSON. 0, or -1 out of memory. */
int sp_buf_json_ascii(struct sp_buf *b, size_t from);
static inline void sp_buf_reset(struct sp_buf *b) { b->len = 0; }
/* v with as few digits as read back the same (100.0000001, not %g's 100),
 * into out[SP_NUM_SIZE]; returns out. */
#define SP_NUM_SIZE 32
const char *sp_num(char *out, double v);

#endif
