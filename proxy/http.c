/* Header rules of the proxy: which headers cross, what is refused, and how a
 * message head is written back out. Headers are always re-serialised from the
 * parsed view, never copied raw. */
#include "http.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "h1.h"
#include "pathnorm.h"

const struct sp_hdr *sp_hdr_find(const struct sp_hdr *h, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (sp_hdr_name_is(&h[i], name))
			return &h[i];
	return NULL;
}

static int is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* Calls cb for each trimmed element of a comma-separated list; stops at the
 * first non-zero return. */
static int list_each(const char *v, size_t len, int (*cb)(const char *, size_t, const void *),
		     const void *arg)
{
	const char *p = v, *end = v + len;
	while (p <= end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *e = comma ? comma : end;
		const char *s = p;
		while (s < e && is_ows(*s))
			s++;
		const char *t = e;
		while (t > s && is_ows(t[-1]))
			t--;
		int rc = cb(s, (size_t)(t - s), arg);
		if (rc)
			return rc;
		if (!comma)
			break;
		p = comma + 1;
	}
	return 0;
}

struct token {
	const char *s;
	size_t n;
};

static int token_eq_cb(const char *s, size_t n, const void *arg)
{
	const struct token *t = arg;
	return n == t->n && sp_ascii_ieq(s, t->s, n);
}

int sp_list_has_token(const char *value, size_t len, const char *token)
{
	struct token t = {token, strlen(token)};
	return list_each(value, len, token_eq_cb, &t);
}

static int name_in_connection(const struct sp_hdr *h, const struct sp_hdr *all, size_t n)
{
	struct token t = {h->name, h->name_len};
	/* Host is never hop-by-hop: "Connection: Host" must not strip it. */
	if (sp_hdr_name_is(h, "Host"))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (sp_hdr_name_is(&all[i], "Connection") &&
		    list_each(all[i].value, all[i].value_len, token_eq_cb, &t))
			return 1;
	return 0;
}

static int not_keep_alive_cb(const char *s, size_t n, const void *arg)
{
	(void)arg;
	return n > 0 && !(n == 10 && sp_ascii_ieq(s, "keep-alive", 10));
}

/* 1 when a Connection header of the message names a header other than
 * Keep-Alive (hop-by-hop by its name anyway): only then must each header's
 * name be looked for among the Connection tokens. Asked once per message,
 * where that look-up scanned the whole message for every header. */
static int connection_names_headers(const struct sp_hdr *all, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (sp_hdr_name_is(&all[i], "Connection") &&
		    list_each(all[i].value, all[i].value_len, not_keep_alive_cb, NULL))
			return 1;
	return 0;
}

static int is_hop(const struct sp_hdr *h, const struct sp_hdr *all, size_t n, int named)
{
	/* By length first: this runs for every header of every message, and
	 * most names have a length no hop-by-hop name has. */
	switch (h->name_len) {
	case 2:
		if (sp_hdr_name_is(h, "TE"))
			return 1;
		break;
	case 7:
		if (sp_hdr_name_is(h, "Upgrade") || sp_hdr_name_is(h, "Trailer"))
			return 1;
		break;
	case 10:
		if (sp_hdr_name_is(h, "Connection") || sp_hdr_name_is(h, "Keep-Alive"))
			return 1;
		break;
	case 14:
		if (sp_hdr_name_is(h, "Content-Length"))
			return 1;
		break;
	case 16:
		if (sp_hdr_name_is(h, "Proxy-Connection"))
			return 1;
		break;
	case 17:
		if (sp_hdr_name_is(h, "Transfer-Encoding"))
			return 1;
		break;
	}
	return named && name_in_connection(h, all, n);
}

int sp_hdr_is_hop(const struct sp_hdr *h, const struct sp_hdr *all, size_t n)
{
	return is_hop(h, all, n, 1);
}

/* RFC 9110 tchar: DIGIT / ALPHA / "!#$%&'*+-.^_`|~". One table lookup per
 * byte of every header name of every message, with no branch per byte. */
static int is_token(const char *s, size_t n)
{
	static const unsigned char tchar[256] = { /* bytes from 0x80 up: 0 */
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
		0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, /* 0x20 */
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, /* 0x30 */
		0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, /* 0x50 */
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, /* 0x70 */
	};
	unsigned char all = 1;
	for (size_t i = 0; i < n; i++)
		all &= tchar[(unsigned char)s[i]];
	return all;
}

/* A control character other than HTAB, or DEL, among v's n bytes. */
static int bytes_have_ctl(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 1;
	}
	return 0;
}

/* True when v holds a control character other than HTAB, or DEL. Eight bytes
 * at a time: a word is looked at byte by byte only when one of its bytes is
 * below 0x20 or is 0x7f, which in a valid value means a tab. */
static int value_has_ctl(const char *v, size_t len)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	size_t j = 0;
	if (len < 8)
		return bytes_have_ctl(v, len);
	for (;;) {
		uint64_t x, d;
		memcpy(&x, v + j, 8);
		d = x ^ (ones * 0x7f);
		/* the classic "has a byte below k" and "has a zero byte" tests */
		if (((((x - ones * 0x20) & ~x) | ((d - ones) & ~d)) & highs) &&
		    bytes_have_ctl(v + j, 8))
			return 1;
		if (j + 8 == len)
			return 0;
		/* the last word ends at the value's end, overlapping the one before */
		j = j + 16 <= len ? j + 8 : len - 8;
	}
}

int sp_http_is_token(const char *s, size_t n)
{
	return is_token(s, n);
}

int sp_http_value_has_ctl(const char *v, size_t n)
{
	return value_has_ctl(v, n);
}

static int check_headers(const struct sp_hdr *h, size_t n, const char **why)
{
	for (size_t i = 0; i < n; i++) {
		if (h[i].name_len == 0) {
			*why = "empty header name";
			return -1;
		}
		if (!is_token(h[i].name, h[i].name_len)) {
			*why = "invalid character in header name";
			return -1;
		}
		if (value_has_ctl(h[i].value, h[i].value_len)) {
			*why = "invalid character in header value";
			return -1;
		}
	}
	return 0;
}

static int te_element_cb(const char *s, size_t n, const void *arg)
{
	(void)arg;
	(void)s;
	return n == 0; /* ",chunked" and "chunked," hide the real coding */
}

static int only_chunked(const struct sp_hdr *h)
{
	/* "chunked", with spaces around it at most: llhttp 8.1 reads
	 * "chunked<TAB>" as another coding, so a tab must not pass here */
	const char *s = h->value, *e = h->value + h->value_len;
	while (s < e && *s == ' ')
		s++;
	while (e > s && e[-1] == ' ')
		e--;
	return e - s == 7 && sp_ascii_ieq(s, "chunked", 7);
}

static int h2c_cb(const char *s, size_t n, const void *arg)
{
	(void)arg;
	return n == 3 && sp_ascii_ieq(s, "h2c", 3);
}

/* An upgrade to h2c (HTTP/2 over cleartext, dropped by RFC 9113): a backend
 * that took it would speak HTTP/2 with the client past every route and rule
 * (h2c smuggling). Such an upgrade is ignored, as an HTTP/1.0 one is. */
static int upgrade_to_h2c(const struct sp_hdr *h, size_t n)
{
	const struct sp_hdr *u = sp_hdr_find(h, n, "Upgrade");
	return u && list_each(u->value, u->value_len, h2c_cb, NULL);
}

/* An empty Upgrade header, or more than one: which protocol would the
 * connection switch to? Each side of the proxy could read it differently. */
static int bad_upgrade(const struct sp_hdr *h, size_t n)
{
	size_t upgrades = 0;
	for (size_t i = 0; i < n; i++)
		if (sp_hdr_name_is(&h[i], "Upgrade") && (++upgrades > 1 || h[i].value_len == 0))
			return 1;
	return 0;
}

/* RFC 9112 §3.2: Host = uri-host [ ":" port ], without userinfo. uri-host is
 * an IP literal in brackets or a reg-name (unreserved, pct-encoded and
 * sub-delims but ","; a list of hosts has two readings). The port, when
 * there is a colon, is 1 to 5 digits, at most 65535 (no TCP port is
 * larger: "a:99999" would route as "a"). Empty is allowed (RFC 9112 §3.2: an
 * authority that is empty). */
static const unsigned char reg_name_char[256] = {
#define R(c) [c] = 1
	R('-'), R('.'), R('_'), R('~'), R('!'), R('$'), R('&'), R('\''), R('('), R(')'), R('*'),
	R('+'), R(';'), R('='), R('%'),
	R('0'), R('1'), R('2'), R('3'), R('4'), R('5'), R('6'), R('7'), R('8'), R('9'),
	R('a'), R('b'), R('c'), R('d'), R('e'), R('f'), R('g'), R('h'), R('i'), R('j'), R('k'),
	R('l'), R('m'), R('n'), R('o'), R('p'), R('q'), R('r'), R('s'), R('t'), R('u'), R('v'),
	R('w'), R('x'), R('y'), R('z'),
	R('A'), R('B'), R('C'), R('D'), R('E'), R('F'), R('G'), R('H'), R('I'), R('J'), R('K'),
	R('L'), R('M'), R('N'), R('O'), R('P'), R('Q'), R('R'), R('S'), R('T'), R('U'), R('V'),
	R('W'), R('X'), R('Y'), R('Z'),
#undef R
};

int sp_http_valid_host(const char *v, size_t n)
{
	size_t i = 0;
	if (n && v[0] == ':') /* a port without a host (RFC 9110 4.2.1: rejected) */
		return 0;
	if (n && v[0] == '[') {
		while (++i < n && v[i] != ']')
			if (!isxdigit((unsigned char)v[i]) && v[i] != ':' && v[i] != '.')
				return 0;
		if (i == n || i == 1)
			return 0;
		i++;
	} else {
		/* a table lookup a byte: this runs for every request */
		for (; i < n && v[i] != ':'; i++) {
			if (!reg_name_char[(unsigned char)v[i]])
				return 0;
			if (v[i] == '%' && (i + 2 >= n || !isxdigit((unsigned char)v[i + 1]) ||
					    !isxdigit((unsigned char)v[i + 2])))
				return 0;
		}
	}
	if (i == n)
		return 1;
	if (v[i] != ':' || n - i - 1 < 1 || n - i - 1 > 5)
		return 0;
	unsigned port = 0;
	while (++i < n) {
		if (!isdigit((unsigned char)v[i]))
			return 0;
		port = port * 10 + (unsigned)(v[i] - '0');
	}
	return port <= 65535;
}

/* methods[0..n): the first four are RFC 9110's safe methods */
static int method_in(const char *method, size_t n)
{
	static const char *const methods[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
	for (size_t i = 0; i < n; i++)
		if (strcmp(method, methods[i]) == 0)
			return 1;
	return 0;
}

int sp_http_expects_continue(const struct sp_h1_msg *m)
{
	const struct sp_hdr *e = sp_hdr_find(m->hdrs, m->nhdrs, "Expect");
	return m->http_minor >= 1 && e && e->value_len == 12 &&
	       sp_ascii_ieq(e->value, "100-continue", 12);
}

int sp_http_replayable(const char *method, int has_body)
{
	return !has_body && method_in(method, 6);
}

int sp_http_safe(const char *method, int has_body)
{
	return !has_body && method_in(method, 4);
}

int sp_http_check_request(const struct sp_hdr *h, size_t n, int http_minor, const char **why)
{
	size_t hosts = 0;
	if (check_headers(h, n, why) < 0)
		return 400;
	if (bad_upgrade(h, n)) {
		*why = "empty or repeated Upgrade header";
		return 400;
	}
	for (size_t i = 0; i < n; i++) {
		if (sp_hdr_name_is(&h[i], "Host")) {
			if (!sp_http_valid_host(h[i].value, h[i].value_len)) {
				*why = "invalid Host header";
				return 400;
			}
			hosts++;
		}
		if (sp_hdr_name_is(&h[i], "Transfer-Encoding")) {
			if (http_minor == 0) {
				*why = "Transfer-Encoding in an HTTP/1.0 request";
				return 400;
			}
			if (list_each(h[i].value, h[i].value_len, te_element_cb, NULL)) {
				*why = "empty element in Transfer-Encoding";
				return 400;
			}
			/* Only chunked is understood; forwarding another coding
			 * would hand the backend bytes it cannot interpret. */
			if (!only_chunked(&h[i])) {
				*why = "transfer coding other than chunked";
				return 501;
			}
		}
	}
	if (hosts > 1) {
		*why = "more than one Host header";
		return 400;
	}
	if (hosts == 0 && http_minor >= 1) {
		*why = "missing Host header";
		return 400;
	}
	return 0;
}

int sp_http_check_response(const struct sp_hdr *h, size_t n, int http_minor, const char **why)
{
	if (check_headers(h, n, why) < 0)
		return -1;
	if (http_minor == 0 && sp_hdr_find(h, n, "Transfer-Encoding")) {
		/* HTTP/1.0 has no chunked coding: the framing is ambiguous */
		*why = "Transfer-Encoding in an HTTP/1.0 response";
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (sp_hdr_name_is(&h[i], "Transfer-Encoding") &&
		    (list_each(h[i].value, h[i].value_len, te_element_cb, NULL) ||
		     !only_chunked(&h[i]))) {
			*why = "Transfer-Encoding other than chunked";
			return -1;
		}
	return 0;
}

int sp_http_absolute_host(const char *url, size_t len, struct sp_hdr *h, size_t *n, size_t room,
			  const char **why)
{
	size_t at, end;
	int found = 0;
	if (!sp_url_authority(url, len, 0, &at, &end))
		return 0;
	/* an http URI with an empty host is invalid (RFC 9110 4.2.1); user
	 * info has no place in a request (RFC 9110 4.2.4) */
	if (end == at || memchr(url + at, '@', end - at) || !sp_http_valid_host(url + at, end - at)) {
		*why = "invalid host in the request target";
		return 400;
	}
	for (size_t i = 0; i < *n; i++)
		if (sp_hdr_name_is(&h[i], "Host")) {
			h[i].value = url + at;
			h[i].value_len = end - at;
			found = 1;
		}
	if (!found && *n < room) /* HTTP/1.0, where Host is optional */
		h[(*n)++] = (struct sp_hdr){"Host", 4, url + at, end - at};
	return 0;
}

int sp_request_verdict(struct sp_h1_msg *m, struct sp_buf *path,
		       const char **query, size_t *qlen, const char **why)
{
	if (m->http_major != 1) {
		*why = "only HTTP/1.0 and HTTP/1.1 are served here";
		return 505;
	}
	if (m->is_connect) {
		*why = "CONNECT is not supported";
		return 405;
	}
	/* the target first: a request refused for its headers (or, later, its
	 * size) is logged with its path */
	int rc = sp_split_target(m->method, m->url, m->url_len, path, query, qlen);
	if (rc != SP_PATH_OK) {
		/* the log shows the path as received, not the normaliser's
		 * partial output ("/" for "/../x") */
		sp_path_as_received(m->url, m->url_len, path);
		*why = sp_path_strerror(rc);
		return 400;
	}
	rc = sp_http_check_request(m->hdrs, m->nhdrs, m->http_minor, why);
	if (rc || m->url_len == 0 || m->url[0] == '/')
		return rc; /* origin-form: its Host stands */
	/* the header view has room for one more (h1.h) */
	return sp_http_absolute_host(m->url, m->url_len, m->hdrs, &m->nhdrs, m->nhdrs + 1, why);
}

enum sp_resp_verdict sp_response_verdict(const struct sp_h1_msg *m, int upgrade_req,
					 const char **why)
{
	if (m->http_major != 1) {
		*why = "bad HTTP version";
		return SP_RESP_BAD;
	}
	if (sp_http_check_response(m->hdrs, m->nhdrs, m->http_minor, why) < 0)
		return SP_RESP_BAD;
	if (m->status / 100 == 1 && m->status != 101)
		return SP_RESP_INTERIM;
	if (m->status == 101 && (!upgrade_req || !sp_hdr_find(m->hdrs, m->nhdrs, "Upgrade"))) {
		*why = upgrade_req ? "101 without an Upgrade header" : "101 without an upgrade request";
		return SP_RESP_BAD;
	}
	if (m->status == 101 && bad_upgrade(m->hdrs, m->nhdrs)) {
		/* forwarded, only the first would reach the client */
		*why = "101 with an empty or repeated Upgrade header";
		return SP_RESP_BAD;
	}
	return SP_RESP_FORWARD;
}

enum sp_body_mode sp_response_body_mode(const struct sp_h1_msg *m, int is_head, int client_minor)
{
	if (is_head || m->status == 204 || m->status == 304 || m->status == 101)
		return SP_BODY_NONE;
	if (m->has_length && !m->chunked)
		return SP_BODY_LENGTH;
	return client_minor >= 1 ? SP_BODY_CHUNKED : SP_BODY_CLOSE;
}

struct sp_fwd_request sp_fwd_request_for(const struct sp_h1_msg *m, const char *path,
					 size_t path_len, const char *query, size_t query_len)
{
	return (struct sp_fwd_request){
		.method = m->method,
		.path = path,
		.path_len = path_len,
		.query = query,
		.query_len = query_len,
		.headers = m->hdrs,
		.nheaders = m->nhdrs,
		.body = m->chunked ? SP_BODY_CHUNKED : m->has_length ? SP_BODY_LENGTH : SP_BODY_NONE,
		.content_length = m->content_length,
		/* Upgrade is an HTTP/1.1 mechanism: a 1.0 request's is ignored
		 * (RFC 9110 §7.8) */
		.upgrade = m->upgrade && m->http_minor >= 1 &&
			   sp_hdr_find(m->hdrs, m->nhdrs, "Upgrade") != NULL &&
			   !upgrade_to_h2c(m->hdrs, m->nhdrs),
	};
}

struct sp_fwd_response sp_fwd_response_for(const struct sp_h1_msg *m, int is_head,
					   int client_minor)
{
	return (struct sp_fwd_response){
		.status = m->status,
		.reason = m->reason,
		.reason_len = m->reason_len,
		.headers = m->hdrs,
		.nheaders = m->nhdrs,
		.body = sp_response_body_mode(m, is_head, client_minor),
		.content_length = m->content_length,
		/* a HEAD's answer says the length a GET would get; a 204 says
		 * none, whatever the backend wrote (RFC 9110 8.6) */
		.keep_length = m->status == 304 || (is_head && m->status != 204),
		.has_length = m->has_length,
		.client_minor = client_minor,
		.upgrade = m->status == 101,
	};
}

/* One header line, "name: value\r\n": one room check for the line (it
 * runs for every header of both heads of every exchange). */
static int add_field(struct sp_buf *out, const char *name, size_t nlen, const char *value,
		     size_t vlen)
{
	size_t n = nlen + vlen + 4;
	if (out->len + n + 1 > out->cap && sp_buf_reserve(out, n) < 0)
		return -1;
	char *d = out->data + out->len;
	memcpy(d, name, nlen);
	d += nlen;
	d[0] = ':';
	d[1] = ' ';
	if (vlen)
		memcpy(d + 2, value, vlen);
	d += 2 + vlen;
	d[0] = '\r';
	d[1] = '\n';
	d[2] = '\0';
	out->len += n;
	return 0;
}

static int add_header(struct sp_buf *out, const char *name, const char *value, size_t vlen)
{
	return add_field(out, name, strlen(name), value, vlen);
}

int sp_http_add_field(struct sp_buf *out, const char *name, const char *value)
{
	return add_header(out, name, value, strlen(value));
}

/* Request headers the proxy sets itself. */
int sp_hdr_is_regenerated(const struct sp_hdr *h)
{
	/* X-Strangler-Shadow is asserted by the proxy only, never by a client */
	return sp_hdr_name_is(h, "X-Forwarded-For") || sp_hdr_name_is(h, "X-Forwarded-Proto") ||
	       sp_hdr_name_is(h, "X-Forwarded-Host") || sp_hdr_name_is(h, "X-Strangler-Shadow");
}

/* The headers but the hop-by-hop ones; named: connection_names_headers' */
static int add_forwarded_headers(const struct sp_hdr *h, size_t n, int named, struct sp_buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (!is_hop(&h[i], h, n, named) &&
		    add_field(out, h[i].name, h[i].name_len, h[i].value, h[i].value_len))
			return -1;
	}
	return 0;
}

static int add_framing(struct sp_buf *out, enum sp_body_mode body, uint64_t length)
{
	if (body == SP_BODY_LENGTH) {
		char digits[20];
		size_t n = sizeof(digits);
		do
			digits[--n] = (char)('0' + length % 10);
		while ((length /= 10) != 0);
		return add_field(out, "Content-Length", 14, digits + n, sizeof(digits) - n);
	}
	if (body == SP_BODY_CHUNKED)
		return sp_buf_adds(out, "Transfer-Encoding: chunked\r\n");
	return 0;
}

void sp_ipv4_text(const unsigned char addr[4], char *out)
{
	for (int i = 0; i < 4; i++) {
		unsigned v = addr[i];
		if (v >= 100)
			*out++ = (char)('0' + v / 100);
		if (v >= 10)
			*out++ = (char)('0' + v / 10 % 10);
		*out++ = (char)('0' + v % 10);
		*out++ = i < 3 ? '.' : '\0';
	}
}

/* X-Forwarded-For: every earlier value, then the client's address. */
static int add_xff(const struct sp_fwd_request *r, struct sp_buf *out)
{
	int first = 1;
	if (sp_buf_adds(out, "X-Forwarded-For: "))
		return -1;
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct sp_hdr *h = &r->headers[i];
		if (!sp_hdr_name_is(h, "X-Forwarded-For") || h->value_len == 0)
			continue;
		if ((!first && sp_buf_add(out, ", ", 2)) || sp_buf_add(out, h->value, h->value_len))
			return -1;
		first = 0;
	}
	if ((!first && sp_buf_add(out, ", ", 2)) || sp_buf_adds(out, r->client_ip) ||
	    sp_buf_add(out, "\r\n", 2))
		return -1;
	return 0;
}

/* h's name with '_' read as '-' into name (at most 23 bytes): 0, or -1 when
 * longer (no managed name is). */
static int dashed(const struct sp_hdr *h, char name[24], struct sp_hdr *alias)
{
	if (h->name_len >= 24)
		return -1;
	for (size_t i = 0; i < h->name_len; i++)
		name[i] = h->name[i] == '_' ? '-' : h->name[i];
	*alias = (struct sp_hdr){name, h->name_len, h->value, h->value_len};
	return 0;
}

int sp_hdr_is_hop_by_hop(const struct sp_hdr *h)
{
	char name[24];
	struct sp_hdr alias;
	return dashed(h, name, &alias) == 0 && is_hop(&alias, NULL, 0, 0);
}

int sp_hdr_is_managed(const struct sp_hdr *h)
{
	char name[24];
	struct sp_hdr alias;
	return dashed(h, name, &alias) == 0 &&
	       (is_hop(&alias, NULL, 0, 0) || sp_hdr_is_regenerated(&alias) ||
		sp_hdr_name_is(&alias, "X-Request-Id") || sp_hdr_name_is(&alias, "Host"));
}

int sp_hdr_poses_as_managed(const struct sp_hdr *h)
{
	return h->name_len < 24 && memchr(h->name, '_', h->name_len) && sp_hdr_is_managed(h);
}

/* Replaces head[at, at + was) with now[0, n). */
static int replace_span(struct sp_buf *head, size_t at, size_t was, const char *now, size_t n)
{
	if (n > was && sp_buf_reserve(head, n - was) < 0)
		return -1;
	memmove(head->data + at + n, head->data + at + was, head->len - at - was + 1); /* NUL too */
	memcpy(head->data + at, now, n);
	head->len = head->len - was + n;
	return 0;
}

int sp_http_repath(struct sp_buf *head, const char *path, size_t len)
{
	/* METHOD SP path [ "?" query ] SP HTTP/1.1: the proxy wrote it */
	const char *sp = head->data ? memchr(head->data, ' ', head->len) : NULL;
	if (!sp)
		return -1;
	size_t at = (size_t)(sp - head->data) + 1, end = at;
	while (end < head->len && head->data[end] != '?' && head->data[end] != ' ')
		end++;
	if (end == head->len)
		return -1;
	return replace_span(head, at, end - at, path, len);
}

/* Where the Host value of a head the proxy wrote is: the line after the
 * request line. 0, or -1 when it has none there. */
static int host_span(const struct sp_buf *head, size_t *at, size_t *len)
{
	const char *eol = head->data ? memchr(head->data, '\n', head->len) : NULL;
	*at = eol ? (size_t)(eol - head->data) + 1 + 6 : 0;
	if (!eol || head->len < *at || memcmp(head->data + *at - 6, "Host: ", 6) != 0)
		return -1;
	const char *end = memchr(head->data + *at, '\r', head->len - *at);
	if (!end)
		return -1;
	*len = (size_t)(end - (head->data + *at));
	return 0;
}

int sp_http_head_host(const struct sp_buf *head, const char **host, size_t *len)
{
	size_t at;
	if (host_span(head, &at, len) < 0)
		return -1;
	*host = head->data + at;
	return 0;
}

int sp_http_rehost(struct sp_buf *head, const char *host)
{
	size_t at, len;
	if (host_span(head, &at, &len) < 0)
		return -1;
	return replace_span(head, at, len, host, strlen(host));
}

int sp_http_retarget(struct sp_buf *head, const struct sp_retarget *t)
{
	if (t->host && sp_http_rehost(head, t->host) < 0)
		return -1;
	return t->path ? sp_http_repath(head, t->path, t->path_len) : 0;
}

int sp_http_write_request_head(const struct sp_fwd_request *r, struct sp_buf *out)
{
	/* one look at the names for what the head needs to know of them */
	const struct sp_hdr *host = NULL, *upgrade = NULL;
	int named = 0;
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct sp_hdr *h = &r->headers[i];
		switch (h->name_len) {
		case 4:
			if (!host && sp_hdr_name_is(h, "Host"))
				host = h;
			break;
		case 7:
			if (!upgrade && sp_hdr_name_is(h, "Upgrade"))
				upgrade = h;
			break;
		case 10:
			named = named || (sp_hdr_name_is(h, "Connection") &&
					  list_each(h->value, h->value_len, not_keep_alive_cb, NULL));
			break;
		}
	}

	if (sp_buf_adds(out, r->method) || sp_buf_addc(out, ' ') ||
	    sp_buf_add(out, r->path, r->path_len))
		return -1;
	if (r->query && (sp_buf_addc(out, '?') || sp_buf_add(out, r->query, r->query_len)))
		return -1;
	if (sp_buf_adds(out, " HTTP/1.1\r\n"))
		return -1;
	if (r->host ? add_header(out, "Host", r->host, strlen(r->host))
	    : host  ? add_field(out, "Host", 4, host->value, host->value_len)
	    : r->default_host && add_header(out, "Host", r->default_host, strlen(r->default_host)))
		return -1;
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct sp_hdr *h = &r->headers[i];
		if (h == host || is_hop(h, r->headers, r->nheaders, named) || sp_hdr_is_regenerated(h) ||
		    (r->request_id && sp_hdr_name_is(h, "X-Request-Id")) ||
		    sp_hdr_poses_as_managed(h))
			continue;
		if (add_field(out, h->name, h->name_len, h->value, h->value_len))
			return -1;
	}
	if (add_framing(out, r->body, r->content_length))
		return -1;
	if (r->upgrade && upgrade &&
	    (sp_buf_adds(out, "Connection: upgrade\r\n") ||
	     add_header(out, "Upgrade", upgrade->value, upgrade->value_len)))
		return -1;
	if (r->client_ip && add_xff(r, out))
		return -1;
	if (r->proto && add_header(out, "X-Forwarded-Proto", r->proto, strlen(r->proto)))
		return -1;
	if (r->fwd_host ? add_field(out, "X-Forwarded-Host", 16, r->fwd_host, r->fwd_host_len)
	    : host && add_header(out, "X-Forwarded-Host", host->value, host->value_len))
		return -1;
	if (r->request_id && add_header(out, "X-Request-Id", r->request_id, strlen(r->request_id)))
		return -1;
	return sp_buf_add(out, "\r\n", 2);
}

int sp_http_write_interim_head(const struct sp_h1_msg *m, struct sp_buf *out)
{
	if (sp_buf_adds(out, "HTTP/1.1 ") || sp_buf_add_uint(out, (unsigned)m->status, 10) ||
	    sp_buf_addc(out, ' ') || sp_buf_add(out, m->reason, m->reason_len) ||
	    sp_buf_add(out, "\r\n", 2) ||
	    add_forwarded_headers(m->hdrs, m->nhdrs, connection_names_headers(m->hdrs, m->nhdrs),
				  out))
		return -1;
	return sp_buf_add(out, "\r\n", 2);
}

int sp_http_write_response_head(const struct sp_fwd_response *r, struct sp_buf *out)
{
	/* one look at the names for what the head needs to know of them
	 * (a look for each cost a pass over the headers) */
	const struct sp_hdr *upgrade = NULL;
	int has_date = 0, named = 0;
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct sp_hdr *h = &r->headers[i];
		switch (h->name_len) {
		case 4:
			has_date = has_date || sp_hdr_name_is(h, "Date");
			break;
		case 7:
			if (!upgrade && sp_hdr_name_is(h, "Upgrade"))
				upgrade = h;
			break;
		case 10:
			named = named || (sp_hdr_name_is(h, "Connection") &&
					  list_each(h->value, h->value_len, not_keep_alive_cb, NULL));
			break;
		}
	}

	char status[14] = "HTTP/1.1 000 ";
	status[7] = r->client_minor ? '1' : '0';
	status[9] = (char)('0' + r->status / 100 % 10);
	status[10] = (char)('0' + r->status / 10 % 10);
	status[11] = (char)('0' + r->status % 10);
	if (sp_buf_add(out, status, 13) ||
	    sp_buf_add(out, r->reason, r->reason_len) || sp_buf_add(out, "\r\n", 2))
		return -1;
	if (add_forwarded_headers(r->headers, r->nheaders, named, out))
		return -1;
	/* RFC 9110 §6.6.1: a recipient with a clock adds the Date a response
	 * lacks */
	if (r->date && !has_date && add_field(out, "Date", 4, r->date, SP_HTTP_DATE_LEN))
		return -1;
	if (r->body == SP_BODY_NONE) {
		if (r->keep_length && r->has_length &&
		    add_framing(out, SP_BODY_LENGTH, r->content_length))
			return -1;
	} else if (add_framing(out, r->body, r->content_length)) {
		return -1;
	}
	if (r->upgrade) {
		if (sp_buf_adds(out, "Connection: upgrade\r\n") ||
		    (upgrade && add_header(out, "Upgrade", upgrade->value, upgrade->value_len)))
			return -1;
	} else if (!r->keep_alive) {
		if (sp_buf_adds(out, "Connection: close\r\n"))
			return -1;
	} else if (r->client_minor == 0) {
		if (sp_buf_adds(out, "Connection: keep-alive\r\n"))
			return -1;
	}
	return sp_buf_add(out, "\r\n", 2);
}

const char *sp_http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 205: return "Reset Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 421: return "Misdirected Request";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

void sp_http_date(time_t t, char out[SP_HTTP_DATE_LEN + 1])
{
	static const char days[] = "SunMonTueWedThuFriSat";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	struct tm tm;
	char text[64]; /* room for any int, as the compiler cannot know the ranges */
	gmtime_r(&t, &tm);
	snprintf(text, sizeof(text), "%.3s, %02d %.3s %04d %02d:%02d:%02d GMT",
		 days + 3 * tm.tm_wday, tm.tm_mday, months + 3 * tm.tm_mon, tm.tm_year + 1900,
		 tm.tm_hour, tm.tm_min, tm.tm_sec);
	memcpy(out, text, SP_HTTP_DATE_LEN);
	out[SP_HTTP_DATE_LEN] = '\0';
}

const char *sp_http_connection(int keep_alive)
{
	return keep_alive == SP_CONN_CLOSE     ? "Connection: close\r\n"
	       : keep_alive == SP_CONN_KEEP_10 ? "Connection: keep-alive\r\n"
					       : "";
}

int sp_http_write_simple(struct sp_buf *out, int status, const char *body, int keep_alive,
			 const char *request_id, const char *date, int head)
{
	size_t blen = strlen(body);
	if (sp_buf_printf(out,
			  "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
			  "Content-Length: %zu\r\n%s",
			  status, sp_http_reason(status), blen + 1, sp_http_connection(keep_alive)))
		return -1;
	if (request_id && add_header(out, "X-Request-Id", request_id, strlen(request_id)))
		return -1;
	if (date && add_header(out, "Date", date, strlen(date)))
		return -1;
	if (sp_buf_add(out, "\r\n", 2))
		return -1;
	/* a HEAD answer has no content (RFC 9110 §9.3.2): a pipelining client
	 * would read it as the start of the next answer */
	if (!head && (sp_buf_add(out, body, blen) || sp_buf_addc(out, '\n')))
		return -1;
	return 0;
}

int sp_http_chunk_header(struct sp_buf *out, size_t len)
{
	return sp_buf_add_uint(out, len, 16) || sp_buf_add(out, "\r\n", 2);
}
