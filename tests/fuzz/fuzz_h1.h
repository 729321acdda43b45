/* Shared by fuzz_request and fuzz_response: feeding a parser in pieces (and
 * across pauses), a trace of what it delivered, and the header comparison
 * used when a serialised head is parsed back. */
#ifndef SP_FUZZ_H1_H
#define SP_FUZZ_H1_H

#include <stdarg.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "fuzz.h"
#include "h1.h"
#include "http.h"

/* Control bytes at the start of an input: flags, then the sizes of the pieces
 * fed to the parser in turn (0 = everything that is left). */
#define FUZZ_NSPLIT 4

/* Everything the parser handed to the hooks, so that feeding the same bytes
 * in other pieces can be checked to produce the same result: the proxy must
 * not behave differently depending on how TCP cut the stream. */
struct fuzz_trace {
	struct sp_buf t;
	int in_body; /* the last event was body bytes (runs merge across pieces) */
	/* Where the current message starts in the input, once fuzz_feed knows
	 * (after a pause); (size_t)-1 when it does not. */
	size_t msg_start;
};

#define FUZZ_UNKNOWN ((size_t)-1)

/* Skips the CR and LF bytes llhttp ignores before a message. */
static inline size_t skip_empty_lines(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n && (p[i] == '\r' || p[i] == '\n'))
		i++;
	return i;
}

/* True when the head starting at p has a line that begins with SP or HTAB
 * (obs-fold): the proxy must refuse those whatever the value before them was
 * (shared/NOTES.md, CVE-2024-27982; h1.c's scan_head). */
static inline int head_has_fold(const uint8_t *p, size_t n)
{
	for (size_t i = skip_empty_lines(p, n); i + 3 < n; i++) {
		if (p[i] != '\r' || p[i + 1] != '\n')
			continue;
		if (p[i + 2] == '\r' && p[i + 3] == '\n')
			return 0; /* end of the head */
		if (p[i + 2] == ' ' || p[i + 2] == '\t')
			return 1;
	}
	return 0;
}

static inline void trace_ev(struct fuzz_trace *tr, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline void trace_ev(struct fuzz_trace *tr, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (tr->in_body)
		sp_buf_addc(&tr->t, '\n');
	tr->in_body = 0;
	sp_buf_adds(&tr->t, line);
	sp_buf_addc(&tr->t, '\n');
}

static inline void trace_bytes(struct fuzz_trace *tr, const char *p, size_t n)
{
	sp_buf_add(&tr->t, p, n);
}

static inline void trace_body(struct fuzz_trace *tr, const char *p, size_t n)
{
	if (!tr->in_body)
		sp_buf_adds(&tr->t, "body:");
	tr->in_body = 1;
	trace_bytes(tr, p, n);
}

/* The whole head as the hooks saw it. */
static inline void trace_msg(struct fuzz_trace *tr, const struct sp_h1_msg *m)
{
	trace_ev(tr, "head %s %d HTTP/%d.%d ka=%d up=%d ch=%d len=%d:%llu",
		 m->method ? m->method : "-", m->status, m->http_major, m->http_minor,
		 m->keep_alive, m->upgrade, m->chunked, m->has_length,
		 (unsigned long long)m->content_length);
	trace_bytes(tr, m->url, m->method ? m->url_len : m->reason_len);
	for (size_t i = 0; i < m->nhdrs; i++) {
		sp_buf_printf(&tr->t, "\n[%zu]", m->hdrs[i].name_len);
		trace_bytes(tr, m->hdrs[i].name, m->hdrs[i].name_len);
		sp_buf_printf(&tr->t, "[%zu]", m->hdrs[i].value_len);
		trace_bytes(tr, m->hdrs[i].value, m->hdrs[i].value_len);
	}
	sp_buf_addc(&tr->t, '\n');
}

/* Prints a trace with unprintable bytes escaped (for a failed comparison). */
static inline void trace_print(const char *label, const struct sp_buf *b)
{
	fprintf(stderr, "--- %s (%zu bytes)\n", label, b->len);
	for (size_t i = 0; i < b->len; i++) {
		unsigned char c = (unsigned char)b->data[i];
		if (c == '\n' || (c >= 0x20 && c < 0x7f))
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02x", c);
	}
	fputc('\n', stderr);
}

static inline int ends_with_error(const struct sp_buf *b)
{
	return b->len >= 6 && memcmp(b->data + b->len - 6, "error\n", 6) == 0;
}

/* The same events either way. When both runs fail, one may fail sooner:
 * h1.c's scan_head looks at all the bytes of a call before llhttp does, so a
 * bad line can be refused before an earlier interim head or body is
 * delivered when more bytes arrive at once. The events before the error
 * must still agree. */
static inline void trace_same(const struct sp_buf *a, const struct sp_buf *b)
{
	if (a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0))
		return;
	if (ends_with_error(a) && ends_with_error(b)) {
		size_t n = (a->len < b->len ? a->len : b->len) - 6;
		if (memcmp(a->data, b->data, n) == 0)
			return;
	}
	trace_print("fed in pieces", a);
	trace_print("fed at once", b);
	FUZZ_CHECK(0, "the parser's result depends on how the input was split");
}

/* An independent reading of a raw head's framing headers: which of
 * Transfer-Encoding and Content-Length appear as header lines (name at the
 * start of a line, then ':'). Whatever llhttp made of the bytes, the body
 * the proxy forwards must be framed as these lines say. */
static inline void raw_framing(const uint8_t *p, size_t n, int *te, int *cl)
{
	size_t i = skip_empty_lines(p, n);
	*te = *cl = 0;
	int first = 1;
	while (i < n) {
		size_t e = i;
		while (e + 1 < n && !(p[e] == '\r' && p[e + 1] == '\n'))
			e++;
		if (e + 1 >= n || e == i)
			break; /* no line end, or the empty line ending the head */
		if (!first) {
			size_t len = e - i;
			if (len >= 18 &&
			    strncasecmp((const char *)p + i, "transfer-encoding:", 18) == 0)
				*te = 1;
			if (len >= 15 &&
			    strncasecmp((const char *)p + i, "content-length:", 15) == 0)
				*cl = 1;
		}
		first = 0;
		i = e + 2;
	}
}

/* What the harness does between parser calls. */
struct fuzz_feed_hooks {
	/* After each call that did not fail. Only then are the heads it
	 * delivered final: llhttp can still fail a head after
	 * on_headers_complete (a Transfer-Encoding that does not end in chunked,
	 * shared/NOTES.md), and session.c forwards nothing from a failed call. */
	void (*after_exec)(void *ud);
	/* After a pause (a message ended), before the next message is parsed. */
	void (*on_pause)(void *ud);
};

/* Feeds data in pieces sized by split[] (cycled; NULL = one piece), resuming
 * after each pause. Returns the last result: SP_H1_OK when all was fed,
 * SP_H1_ERROR or SP_H1_UPGRADE when it stopped early. */
static inline enum sp_h1_rc fuzz_feed(struct sp_h1 *h, const uint8_t *data, size_t size,
				      const uint8_t *split, struct fuzz_trace *tr,
				      const struct fuzz_feed_hooks *hooks, void *ud)
{
	size_t off = 0;
	unsigned k = 0;
	while (off < size) {
		size_t piece = split ? split[k++ % FUZZ_NSPLIT] : 0;
		if (piece == 0 || piece > size - off)
			piece = size - off;
		size_t done = 0;
		int stalls = 0;
		while (done < piece) {
			size_t used = 0, left = piece - done;
			enum sp_h1_rc rc =
				sp_h1_execute(h, (const char *)data + off + done, left, &used);
			FUZZ_CHECK(used <= left, "consumed %zu of %zu bytes", used, left);
			done += used;
			if (rc == SP_H1_ERROR) {
				/* not the status: a limit (431) can trip before a bad
				 * byte (400) only when a span is cut by the read */
				trace_ev(tr, "error");
				return rc;
			}
			hooks->after_exec(ud);
			if (rc == SP_H1_OK) {
				FUZZ_CHECK(used == left, "OK after consuming %zu of %zu bytes",
					   used, left);
				break;
			}
			if (rc == SP_H1_UPGRADE) {
				trace_ev(tr, "upgrade");
				return rc;
			}
			/* Paused: each pause ends a message, which takes at least one byte. */
			stalls = used ? 0 : stalls + 1;
			FUZZ_CHECK(stalls < 2, "paused twice without consuming input");
			trace_ev(tr, "paused");
			tr->msg_start = off + done;
			hooks->on_pause(ud);
		}
		off += piece;
	}
	return SP_H1_OK;
}

/* Body and end hooks of a parser that reads back a serialised head: only the
 * head is checked, so the body is ignored and the first message ends it. */
static inline int fuzz_reparsed_body(void *ud, const char *p, size_t n)
{
	(void)ud;
	(void)p;
	(void)n;
	return 0;
}

static inline int fuzz_reparsed_done(void *ud, struct sp_h1_msg *m)
{
	(void)ud;
	(void)m;
	return 1;
}

/* Header i is one the proxy forwards as received. */
typedef int (*fuzz_forwarded)(const struct sp_hdr *all, size_t n, size_t i, const void *arg);

/* The forwarded headers of the original and of the re-parsed head must be
 * the same names and values in the same order. */
static inline void same_forwarded(const struct sp_hdr *a, size_t na, const struct sp_hdr *b,
				  size_t nb, fuzz_forwarded keep_a, fuzz_forwarded keep_b,
				  const void *arg)
{
	size_t i = 0, j = 0;
	for (;;) {
		while (i < na && !keep_a(a, na, i, arg))
			i++;
		while (j < nb && !keep_b(b, nb, j, arg))
			j++;
		if (i == na || j == nb)
			break;
		FUZZ_CHECK(a[i].name_len == b[j].name_len &&
				   memcmp(a[i].name, b[j].name, a[i].name_len) == 0,
			   "header %zu forwarded as header %zu: name \"%.*s\" became \"%.*s\"", i,
			   j, (int)a[i].name_len, a[i].name, (int)b[j].name_len, b[j].name);
		FUZZ_CHECK(a[i].value_len == b[j].value_len &&
				   memcmp(a[i].value, b[j].value, a[i].value_len) == 0,
			   "header \"%.*s\": value \"%.*s\" became \"%.*s\"", (int)a[i].name_len,
			   a[i].name, (int)a[i].value_len, a[i].value, (int)b[j].value_len,
			   b[j].value);
		i++;
		j++;
	}
	FUZZ_CHECK(i == na, "header \"%.*s\" was not forwarded", (int)a[i].name_len, a[i].name);
	FUZZ_CHECK(j == nb, "header \"%.*s\" appeared in the forwarded head", (int)b[j].name_len,
		   b[j].name);
}

#endif
