/* llhttp (strict mode) behind a small view: headers are copied into one
 * store per message, limits are enforced while parsing, trailers are dropped. */
#include "h1.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

struct raw_hdr {
	size_t no, nl, vo, vl;
	int has_value;
	int line_ended; /* the last value span stopped before the buffer's end */
};

struct sp_h1 {
	llhttp_t p;
	const struct sp_h1_hooks *hooks;
	void *ud;
	struct sp_h1_limits lim;
	struct sp_h1_msg msg;
	struct sp_buf store;
	struct raw_hdr *raw;
	size_t nraw, capraw;
	size_t caphdrs;        /* room in msg.hdrs */
	size_t header_bytes;
	size_t ext_bytes;
	int new_field; /* the next header bytes start a new header */
	int head_done;  /* the head of the current message has been delivered */
	int in_message;
	int in_length_body; /* inside a Content-Length body (see sp_h1_body_left) */
	int expect_head;
	const char *exec_start, *exec_end; /* the buffer being parsed */
	/* our own look at the head's line structure (see scan_head) */
	int scanning, scan_lines, scan_len, scan_interim;
	int first_len; /* the bytes of scan_first that are the start line's, once it ended */
	int trailers_next; /* the last chunk was read: its trailer section follows */
	char scan_prev, scan_first[16];
	int err_status;
	const char *err_reason;
};

/* The llhttp_t is the first member, so a callback's parser is its sp_h1. */
#define H(parser) ((struct sp_h1 *)(void *)(parser))
_Static_assert(offsetof(struct sp_h1, p) == 0, "llhttp_t must come first");

void sp_h1_fail(struct sp_h1 *h, int status, const char *reason)
{
	if (!h->err_status) {
		h->err_status = status;
		h->err_reason = reason;
	}
}

static int on_message_begin(llhttp_t *p)
{
	struct sp_h1 *h = H(p);
	sp_buf_reset(&h->store);
	h->nraw = 0;
	h->header_bytes = 0;
	h->new_field = 1;
	h->head_done = 0;
	h->in_message = 1;
	/* what the head's callbacks add to; on_headers_complete sets the rest
	 * (the header array is reused from message to message) */
	h->msg.url_len = h->msg.reason_len = h->msg.nhdrs = 0;
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
	struct sp_h1 *h = H(p);
	if (h->store.len + n > h->lim.max_url) {
		sp_h1_fail(h, 414, "request target too long");
		return -1;
	}
	h->msg.url_len += n;
	return sp_buf_add(&h->store, at, n);
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
	struct sp_h1 *h = H(p);
	if (h->store.len + n > 1024) {
		sp_h1_fail(h, 502, "status line too long");
		return -1;
	}
	/* reason-phrase = *( HTAB / SP / VCHAR / obs-text ); llhttp lets NUL
	 * and other controls through, and the phrase is forwarded */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)at[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			sp_h1_fail(h, 502, "control character in the reason phrase");
			return -1;
		}
	}
	h->msg.reason_len += n;
	return sp_buf_add(&h->store, at, n);
}

static int count_header_bytes(struct sp_h1 *h, size_t n)
{
	h->header_bytes += n;
	if (h->header_bytes > h->lim.max_header_bytes) {
		sp_h1_fail(h, 431, "header block too large");
		return -1;
	}
	return 0;
}

static int push_header(struct sp_h1 *h)
{
	if (h->nraw >= h->lim.max_headers) {
		sp_h1_fail(h, 431, "too many headers");
		return -1;
	}
	if (h->nraw == h->capraw) {
		struct raw_hdr *r = sp_stash_grow(h->store.stash, h->raw, &h->capraw,
					 h->capraw ? h->capraw * 2 : 16, sizeof(*r));
		if (!r)
			return -1;
		h->raw = r;
	}
	h->raw[h->nraw++] = (struct raw_hdr){h->store.len, 0, 0, 0, 0, 0};
	h->new_field = 0;
	return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	struct sp_h1 *h = H(p);
	if (count_header_bytes(h, n) < 0)
		return -1;
	if (h->head_done)
		return 0; /* trailer: counted, then dropped */
	if (h->new_field && push_header(h) < 0)
		return -1;
	h->raw[h->nraw - 1].nl += n;
	return sp_buf_add(&h->store, at, n);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
	struct sp_h1 *h = H(p);
	if (count_header_bytes(h, n) < 0)
		return -1;
	if (h->head_done)
		return 0;
	/* A value with no name before it (": x") becomes an empty name, which
	 * the header checks refuse. */
	if (h->new_field && push_header(h) < 0)
		return -1;
	struct raw_hdr *r = &h->raw[h->nraw - 1];
	if (!r->has_value) {
		r->has_value = 1;
		r->vo = h->store.len;
	} else if (r->line_ended || at != h->exec_start) {
		/* A second span of the same value that is not the continuation of
		 * a read split: the line ended and the next one began with
		 * whitespace (obs-fold, which llhttp 8.1 accepts even in strict
		 * mode and which can hide a header from other parsers). */
		sp_h1_fail(h, h->p.type == HTTP_REQUEST ? 400 : 502, "obsolete line folding in header");
		return -1;
	}
	r->line_ended = at + n != h->exec_end;
	r->vl += n;
	return sp_buf_add(&h->store, at, n);
}

static int on_header_value_complete(llhttp_t *p)
{
	H(p)->new_field = 1;
	return 0;
}

/* Points the header views at the store, which no longer moves for this head. */
static int build_view(struct sp_h1 *h)
{
	struct sp_h1_msg *m = &h->msg;
	if (h->nraw + 1 > h->caphdrs) { /* one more: see h1.h */
		struct sp_hdr *v = sp_stash_grow(h->store.stash, m->hdrs, &h->caphdrs, h->nraw + 1, sizeof(*v));
		if (!v)
			return -1;
		m->hdrs = v;
	}
	struct sp_hdr *v = m->hdrs;
	m->nhdrs = h->nraw;
	for (size_t i = 0; i < h->nraw; i++) {
		v[i].name = h->store.data + h->raw[i].no;
		v[i].name_len = h->raw[i].nl;
		v[i].value = h->raw[i].vl ? h->store.data + h->raw[i].vo : "";
		/* trailing whitespace is not part of the value (RFC 9110 5.5; llhttp
		 * drops only the leading one): "acme  " must route, stick and
		 * compare as "acme". Not for the framing headers, which http.c
		 * checks as llhttp read them ("chunked<TAB>" is no chunked there) */
		size_t vl = sp_value_len(v[i].value, h->raw[i].vl);
		if (vl != h->raw[i].vl && (sp_hdr_name_is(&v[i], "Transfer-Encoding") ||
					   sp_hdr_name_is(&v[i], "Content-Length")))
			vl = h->raw[i].vl;
		v[i].value_len = vl;
	}
	m->url = h->store.data ? h->store.data : "";
	m->reason = m->url;
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct sp_h1 *h = H(p);
	struct sp_h1_msg *m = &h->msg;

	/* every field but hdrs, url_len and reason_len (kept) is set here */
	if (build_view(h) < 0)
		return -1;
	m->http_major = p->http_major;
	m->http_minor = p->http_minor;
	m->keep_alive = llhttp_should_keep_alive(p);
	m->upgrade = p->upgrade;
	m->chunked = (p->flags & F_CHUNKED) != 0;
	m->has_length = (p->flags & F_CONTENT_LENGTH) != 0;
	m->content_length = m->has_length ? p->content_length : 0;
	if (p->type == HTTP_REQUEST) {
		m->method = llhttp_method_name((llhttp_method_t)p->method);
		m->is_connect = p->method == HTTP_CONNECT;
		m->status = 0;
	} else {
		m->method = NULL;
		m->is_connect = 0;
		m->status = p->status_code;
	}
	h->head_done = 1;
	int rc = h->hooks->on_head(h->ud, m);
	if (rc < 0)
		return -1;
	if (p->type == HTTP_RESPONSE && (h->expect_head || m->status / 100 == 1 ||
					 m->status == 204 || m->status == 304))
		rc = 1;
	h->in_length_body = rc == 0 && m->has_length && !m->chunked && m->content_length > 0;
	return rc;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct sp_h1 *h = H(p);
	return h->hooks->on_body(h->ud, at, n) < 0 ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct sp_h1 *h = H(p);
	h->in_message = 0;
	h->in_length_body = 0;
	/* known only now for a body skipped on request (HEAD answers) */
	h->msg.keep_alive = llhttp_should_keep_alive(p);
	return h->hooks->on_done(h->ud, &h->msg) ? HPE_PAUSED : 0;
}

static int on_chunk_header(llhttp_t *p)
{
	struct sp_h1 *h = H(p);
	h->ext_bytes = 0;
	if (p->content_length != 0)
		return 0;
	/* the last chunk: stop here, so sp_h1_execute checks the trailer
	 * section's lines as it checks a head's */
	h->trailers_next = 1;
	return HPE_PAUSED;
}

static int on_chunk_ext(llhttp_t *p, const char *at, size_t n)
{
	struct sp_h1 *h = H(p);
	(void)at;
	h->ext_bytes += n;
	if (h->ext_bytes > 4096) {
		sp_h1_fail(h, 400, "chunk extension too long");
		return -1;
	}
	return 0;
}

static const llhttp_settings_t settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_status = on_status,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_header_value_complete = on_header_value_complete,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
	.on_chunk_header = on_chunk_header,
	.on_chunk_extension_name = on_chunk_ext,
	.on_chunk_extension_value = on_chunk_ext,
};

static void scan_reset(struct sp_h1 *h);
static void release_blocks(struct sp_h1 *h);

struct sp_h1 *sp_h1_new(int is_request, const struct sp_h1_hooks *hooks, void *ud,
			const struct sp_h1_limits *limits)
{
	struct sp_h1 *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	llhttp_init(&h->p, is_request ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
	scan_reset(h);
	h->hooks = hooks;
	h->ud = ud;
	h->lim = *limits;
	sp_buf_init(&h->store);
	return h;
}

void sp_h1_set_limits(struct sp_h1 *h, const struct sp_h1_limits *limits)
{
	h->lim = *limits;
}

void sp_h1_free(struct sp_h1 **hp)
{
	struct sp_h1 *h = *hp;
	if (!h)
		return;
	*hp = NULL;
	release_blocks(h);
	free(h);
}

/* The store's stash serves the header arrays too. */
void sp_h1_set_stash(struct sp_h1 *h, struct sp_stash *st)
{
	h->store.stash = st;
}

void sp_h1_expect_head(struct sp_h1 *h, int is_head)
{
	h->expect_head = is_head;
}

static int status_for(const struct sp_h1 *h, llhttp_errno_t e)
{
	if (h->p.type == HTTP_RESPONSE)
		return 502;
	switch (e) {
	case HPE_INVALID_METHOD:
		return 501;
	case HPE_INVALID_VERSION:
		return 505;
	default:
		return 400;
	}
}

static void scan_reset(struct sp_h1 *h)
{
	h->scanning = 1;
	h->scan_lines = 0;
	h->scan_len = 0;
	h->first_len = 0;
	h->scan_prev = '\n';
	h->scan_interim = 0;
}

/* llhttp 8.1 accepts, even in strict mode, a bare LF ending the start line
 * or the head ("\r\n\n"), and a header line folded after an empty value:
 * shapes other parsers read differently (request smuggling). The head is
 * checked here, byte by byte, before llhttp sees it: every line must end
 * with CRLF and no line may start with whitespace. For responses, the head
 * after an interim 1xx answer is checked too. */
/* A status line is "HTTP/1.x DDD" and then a space or its end, with a code
 * from 100 to 599: llhttp 8.1 also takes "HTTP/1.1 0200" or "HTTP/1.1 1",
 * which would make this scan misjudge an interim answer. */
static int check_status_line(struct sp_h1 *h)
{
	const char *f = h->scan_first;
	int len = h->scan_len < (int)sizeof(h->scan_first) - 1 ? h->scan_len
							      : (int)sizeof(h->scan_first) - 1;
	if (len < 12 || memcmp(f, "HTTP/1.", 7) != 0 || f[8] != ' ' || f[9] < '1' || f[9] > '5' ||
	    f[10] < '0' || f[10] > '9' || f[11] < '0' || f[11] > '9' || (len > 12 && f[12] != ' ')) {
		sp_h1_fail(h, 502, "invalid status line");
		return -1;
	}
	/* an interim answer (1xx but 101) has the final answer's head after it */
	h->scan_interim = f[9] == '1' && !(f[10] == '0' && f[11] == '1');
	return 0;
}

static int scan_head(struct sp_h1 *h, const char *p, size_t n)
{
	const char *end = p + n;
	while (p < end && h->scanning) {
		/* the line so far: only its first bytes and its length matter */
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (h->scan_lines > 0 && h->scan_len == 0 && h->scan_prev == '\n' && nl &&
		    nl - p >= 2 && nl[-1] == '\r' && *p != '\r' && *p != ' ' && *p != '\t') {
			/* the usual header line, whole (from its start: no part of
			 * it in an earlier buffer), ended by CRLF, starting with
			 * neither CR nor a fold: the steps below would only count
			 * it (scan_len and scan_prev end as they are) */
			h->scan_lines++;
			p = nl + 1;
			continue;
		}
		const char *stop = nl ? nl : end;
		const char *cr = NULL;
		if (h->scan_lines == 0 && h->scan_len == 0 && h->scan_prev == '\n' && nl &&
		    (!(cr = memchr(p, '\r', (size_t)(nl - p))) || cr == nl - 1)) {
			/* the usual start line, whole (from its start), with no CR but
			 * the one ending it: what the loop below keeps, in one copy */
			size_t m = nl - p < 16 ? (size_t)(nl - p) : 16;
			h->scan_len = cr && cr - p < 16 ? (int)(cr - p) : (int)m;
			if (end - p >= 16)
				memcpy(h->scan_first, p, 16);
			else
				memcpy(h->scan_first, p, (size_t)h->scan_len);
		} else if (h->scan_lines == 0) {
			/* the start line (or an empty line before it): a CR must end
			 * it, as llhttp skips a bare one before the request line
			 * ("\rGET /") and reads one in the version as a bad version;
			 * its first bytes are checked at its end */
			if (p < stop && h->scan_prev == '\r')
				goto bare_cr; /* a CR that ended the last read */
			for (const char *q = p; q < stop; q++) {
				if (*q == '\r') {
					if (q + 1 < stop)
						goto bare_cr;
				} else if (h->scan_len < 16) {
					h->scan_first[h->scan_len] = *q;
					h->scan_len++;
				} else {
					const char *c = memchr(q, '\r', (size_t)(stop - q));
					if (!c)
						break;
					q = c - 1;
				}
			}
		} else if (h->scan_len == 0) {
			/* a header line: only its first byte other than CR matters (a
			 * fold starts with SP or HTAB; none at all: the blank line) */
			const char *q = p;
			while (q < stop && *q == '\r')
				q++;
			if (q < stop) {
				if (*q == ' ' || *q == '\t') {
					sp_h1_fail(h, h->p.type == HTTP_REQUEST ? 400 : 502,
						   "obsolete line folding in header");
					return -1;
				}
				h->scan_len = 1;
			}
		}
		if (stop > p)
			h->scan_prev = stop[-1];
		if (!nl)
			return 0;
		if (h->scan_prev != '\r') {
			sp_h1_fail(h, h->p.type == HTTP_REQUEST ? 400 : 502,
				   "line not ended by CRLF in the head");
			return -1;
		}
		if (h->scan_len == 0 && h->scan_lines > 0) { /* the blank line */
			if (h->scan_interim)
				scan_reset(h); /* the final answer's head follows */
			else
				h->scanning = 0;
		} else if (h->scan_len > 0) {
			if (h->scan_lines == 0 && h->p.type == HTTP_RESPONSE && check_status_line(h) < 0)
				return -1;
			if (h->scan_lines == 0) /* scan_first holds this many of its bytes */
				h->first_len = h->scan_len; /* (at most 16: the scan stops counting) */
			h->scan_lines++;
		}
		h->scan_len = 0;
		h->scan_prev = '\n';
		p = nl + 1;
	}
	return 0;
bare_cr:
	sp_h1_fail(h, h->p.type == HTTP_REQUEST ? 400 : 502, "line not ended by CRLF in the head");
	return -1;
}

enum sp_h1_rc sp_h1_execute(struct sp_h1 *h, const char *data, size_t len, size_t *consumed)
{
	const char *base = data;
	for (;;) {
		if (h->scanning && scan_head(h, data, len) < 0) {
			*consumed = 0;
			return SP_H1_ERROR;
		}
		h->exec_start = data;
		h->exec_end = data + len;
		llhttp_errno_t e = llhttp_execute(&h->p, data, len);
		switch (e) {
		case HPE_OK:
			*consumed = (size_t)(data + len - base);
			return SP_H1_OK;
		case HPE_PAUSED:
		case HPE_PAUSED_UPGRADE:
			if (e == HPE_PAUSED && h->trailers_next) {
				/* llhttp 8.1 takes a bare LF ending the trailer
				 * section: its lines are checked like a head's, then
				 * parsing goes on where it stopped */
				const char *at = llhttp_get_error_pos(&h->p);
				h->trailers_next = 0;
				llhttp_resume(&h->p);
				scan_reset(h);
				h->scan_lines = 1; /* no start line */
				len -= (size_t)(at - data);
				data = at;
				continue;
			}
			*consumed = (size_t)(llhttp_get_error_pos(&h->p) - base);
			return e == HPE_PAUSED ? SP_H1_PAUSED : SP_H1_UPGRADE;
		default:
			*consumed = 0;
			if (e == HPE_PAUSED_H2_UPGRADE) /* llhttp's text: "Pause on PRI/Upgrade" */
				sp_h1_fail(h, 505, SP_H1_NO_HTTP2);
			else
				sp_h1_fail(h, status_for(h, e), llhttp_get_error_reason(&h->p));
			return SP_H1_ERROR;
		}
	}
}

int sp_h1_method_known(const char *m)
{
#define KNOWN(num, name, string)                  \
	if (strcmp(m, #string) == 0)              \
		return 1;
	HTTP_METHOD_MAP(KNOWN)
#undef KNOWN
	return 0;
}

int sp_h1_request_line(const struct sp_h1 *h, const char **method, const char **url,
		       size_t *url_len)
{
	int n = h->scan_lines ? h->first_len : h->scan_len;
	if (h->p.type == HTTP_REQUEST && h->in_message && h->msg.url_len == 0 && n > 0) {
		/* refused in its target (a bad byte: llhttp keeps no part of it):
		 * the method, from the start line's first bytes the scan kept */
		static _Thread_local char m[sizeof(h->scan_first)];
		const char *sp = memchr(h->scan_first, ' ', (size_t)n);
		if (!sp || sp == h->scan_first)
			return 0;
		memcpy(m, h->scan_first, (size_t)(sp - h->scan_first));
		m[sp - h->scan_first] = '\0';
		if (!sp_h1_method_known(m))
			return 0;
		*method = m;
		*url = "";
		*url_len = 0;
		return 1;
	}
	if (h->p.type != HTTP_REQUEST || !h->in_message || h->msg.url_len == 0 || !h->store.data)
		return 0;
	*method = llhttp_method_name((llhttp_method_t)h->p.method);
	*url = h->store.data;
	*url_len = h->msg.url_len;
	return 1;
}

enum sp_h1_rc sp_h1_finish(struct sp_h1 *h)
{
	llhttp_errno_t e = llhttp_finish(&h->p);
	if (e == HPE_OK || e == HPE_PAUSED)
		return SP_H1_OK;
	sp_h1_fail(h, status_for(h, e), "message truncated by end of stream");
	return SP_H1_ERROR;
}

static void release_blocks(struct sp_h1 *h)
{
	sp_buf_deinit(&h->store);
	sp_stash_put(h->store.stash, h->raw, h->capraw * sizeof(*h->raw));
	h->raw = NULL;
	h->nraw = h->capraw = 0;
	sp_stash_put(h->store.stash, h->msg.hdrs, h->caphdrs * sizeof(*h->msg.hdrs));
	h->msg.hdrs = NULL;
	h->msg.nhdrs = h->caphdrs = 0;
}

void sp_h1_trim(struct sp_h1 *h)
{
	if (!h->in_message)
		release_blocks(h);
}

void sp_h1_trim_over(struct sp_h1 *h, size_t max)
{
	if (h->store.cap > max || h->capraw * sizeof(*h->raw) > max ||
	    h->caphdrs * sizeof(*h->msg.hdrs) > max)
		sp_h1_trim(h);
}

void sp_h1_resume(struct sp_h1 *h)
{
	llhttp_resume(&h->p);
	/* requests pause after each message: the next head starts here, unless
	 * the message was an upgrade, after which the bytes are not HTTP */
	if (h->p.upgrade)
		h->scanning = 0;
	else
		scan_reset(h);
}

void sp_h1_reset(struct sp_h1 *h)
{
	llhttp_reset(&h->p);
	scan_reset(h);
	h->err_status = 0;
	h->err_reason = NULL;
	h->in_message = 0;
	h->in_length_body = 0;
	h->expect_head = 0;
}

/* Inside a Content-Length body llhttp only counts bytes down in
 * content_length (its consume state takes whatever part of the rest a call
 * brings, and ends the message when it reaches zero), so bytes the caller
 * moved itself are accounted for by lowering that count. At least one byte
 * is always left to the parser, which then completes the message as usual. */
uint64_t sp_h1_body_left(const struct sp_h1 *h)
{
	return h->in_length_body && !h->err_status ? h->p.content_length : 0;
}

void sp_h1_body_skip(struct sp_h1 *h, uint64_t n)
{
	if (n < sp_h1_body_left(h))
		h->p.content_length -= n;
}

int sp_h1_in_message(const struct sp_h1 *h)
{
	return h->in_message;
}

int sp_h1_error_status(const struct sp_h1 *h)
{
	return h->err_status ? h->err_status : 400;
}

const char *sp_h1_error_reason(const struct sp_h1 *h)
{
	return h->err_reason ? h->err_reason : "malformed message";
}

const char *sp_h1_version(void)
{
	return SP_STR(LLHTTP_VERSION_MAJOR) "." SP_STR(LLHTTP_VERSION_MINOR) "." SP_STR(
		LLHTTP_VERSION_PATCH);
}
