/* A growable byte buffer for building strings without libevent (pure modules). */
#ifndef SP_BUF_H
#define SP_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct sp_buf {
	char *data;
	size_t len;
	size_t cap;
};

void sp_buf_init(struct sp_buf *b);
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
__attribute__((format(printf, 2, 3))) int sp_buf_printf(struct sp_buf *b, const char *fmt, ...);
/* Appends v in base 10 or 16 (lower case): no printf on the request path. */
int sp_buf_add_uint(struct sp_buf *b, uint64_t v, unsigned base);
/* Appends s as the body of a JSON string (no quotes), escaping as RFC 8259 requires. */
int sp_buf_add_json_str(struct sp_buf *b, const char *s, size_t len);
static inline void sp_buf_reset(struct sp_buf *b) { b->len = 0; }

#endif
