/* Path normalisation so that no encoding trick can be matched as one route and
 * reach a backend as another: routing and forwarding both use this output. */
#include "pathnorm.h"

#include <string.h>
#include <strings.h>

int sp_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int is_unreserved(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

/* Decodes unreserved escapes, canonicalises the rest to upper-case hex. */
static int decode_unreserved(const char *s, size_t len, struct sp_buf *out)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '%') {
			if (sp_buf_addc(out, s[i]) < 0)
				return SP_PATH_NOMEM;
			continue;
		}
		if (i + 2 >= len)
			return SP_PATH_BAD_ENCODING;
		int hi = sp_hexval(s[i + 1]), lo = sp_hexval(s[i + 2]);
		if (hi < 0 || lo < 0)
			return SP_PATH_BAD_ENCODING;
		int c = hi * 16 + lo;
		char esc[3] = {'%', hex[hi], hex[lo]};
		if (is_unreserved(c) ? sp_buf_addc(out, (char)c) : sp_buf_add(out, esc, 3))
			return SP_PATH_NOMEM;
		i += 2;
	}
	return SP_PATH_OK;
}

int sp_path_normalize(const char *path, size_t len, struct sp_buf *out)
{
	struct sp_buf dec;
	int rc;

	sp_buf_reset(out);
	if (len == 0 || path[0] != '/')
		return SP_PATH_NOT_ORIGIN;
	/* Most paths are normal already: no escape, no empty, "." or ".."
	 * segment (every one of those has a '%', or a '/' followed by '/' or
	 * '.'). Those are their own normal form, copied as they are. */
	size_t i = 0;
	while (i < len && path[i] != '%' &&
	       !(path[i] == '/' && i + 1 < len && (path[i + 1] == '/' || path[i + 1] == '.')))
		i++;
	if (i == len)
		return sp_buf_add(out, path, len) < 0 ? SP_PATH_NOMEM : SP_PATH_OK;
	sp_buf_init(&dec);
	dec.stash = out->stash;
	rc = decode_unreserved(path, len, &dec);
	if (rc != SP_PATH_OK)
		goto out;
	/* Invariant: before each segment, out ends with '/'. */
	rc = SP_PATH_NOMEM;
	if (sp_buf_addc(out, '/') < 0)
		goto out;
	const char *p = dec.data + 1, *end = dec.data + dec.len;
	while (p <= end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		const char *seg_end = slash ? slash : end;
		size_t seg_len = (size_t)(seg_end - p);
		int last = slash == NULL;

		if (seg_len == 0 || (seg_len == 1 && p[0] == '.')) {
			/* empty or "." segment: nothing to add */
		} else if (seg_len == 2 && p[0] == '.' && p[1] == '.') {
			if (out->len == 1) {
				rc = SP_PATH_ABOVE_ROOT;
				goto out;
			}
			size_t i = out->len - 1;
			while (i > 0 && out->data[i - 1] != '/')
				i--;
			out->len = i;
			out->data[i] = '\0';
		} else {
			if (sp_buf_add(out, p, seg_len) < 0 || (!last && sp_buf_addc(out, '/') < 0))
				goto out;
		}
		if (last)
			break;
		p = slash + 1;
	}
	rc = SP_PATH_OK;
out:
	sp_buf_deinit(&dec);
	return rc;
}

const char *sp_path_strerror(int status)
{
	switch (status) {
	case SP_PATH_OK:
		return "ok";
	case SP_PATH_BAD_ENCODING:
		return "bad percent-encoding in path";
	case SP_PATH_ABOVE_ROOT:
		return "path climbs above the root";
	case SP_PATH_NOT_ORIGIN:
		return "path does not start with '/'";
	default:
		return "out of memory";
	}
}

int sp_pct_decode(const char *s, size_t len, int plus_is_space, struct sp_buf *out)
{
	sp_buf_reset(out);
	if (sp_buf_reserve(out, len) < 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '%' && i + 2 < len) {
			int hi = sp_hexval(s[i + 1]), lo = sp_hexval(s[i + 2]);
			if (hi >= 0 && lo >= 0) {
				c = (char)(hi * 16 + lo);
				i += 2;
			}
		} else if (c == '+' && plus_is_space) {
			c = ' ';
		}
		out->data[out->len++] = c;
	}
	out->data[out->len] = '\0';
	return 0;
}

int sp_path_as_received(const char *url, size_t len, struct sp_buf *path)
{
	size_t n = 0;
	while (n < len && url[n] != '?' && url[n] != '#')
		n++;
	sp_buf_reset(path);
	return sp_buf_add(path, url, n);
}

int sp_url_authority(const char *url, size_t len, int scheme_relative, size_t *at, size_t *end)
{
	if (len < 2 || (url[0] == '/' && (!scheme_relative || url[1] != '/')))
		return 0; /* a path: most targets, at one comparison */
	size_t a = len >= 7 && strncasecmp(url, "http://", 7) == 0    ? 7
		   : len >= 8 && strncasecmp(url, "https://", 8) == 0 ? 8
		   : scheme_relative && len >= 2 && url[0] == '/' && url[1] == '/' ? 2
									   : 0;
	if (!a)
		return 0;
	size_t e = a;
	while (e < len && url[e] != '/' && url[e] != '?' && url[e] != '#')
		e++;
	*at = a;
	*end = e;
	return 1;
}

int sp_split_target(const char *method, const char *url, size_t len, struct sp_buf *path,
		    const char **query, size_t *qlen)
{
	const char *t = url;
	const char *frag = memchr(t, '#', len);
	size_t at, end;
	if (frag)
		len = (size_t)(frag - t);
	if (sp_url_authority(t, len, 0, &at, &end)) {
		/* absolute-form: the path after the authority, "/" when none */
		if (end == len || t[end] == '?') {
			sp_buf_reset(path);
			sp_buf_addc(path, '/');
			*query = end < len ? t + end + 1 : NULL;
			*qlen = end < len ? len - end - 1 : 0;
			return SP_PATH_OK;
		}
		len -= end;
		t += end;
	}
	const char *q = memchr(t, '?', len);
	size_t plen = q ? (size_t)(q - t) : len;
	*query = q ? q + 1 : NULL;
	*qlen = q ? len - plen - 1 : 0;
	if (plen == 1 && t[0] == '*' && strcmp(method, "OPTIONS") == 0) {
		sp_buf_reset(path);
		sp_buf_addc(path, '*');
		return SP_PATH_OK;
	}
	return sp_path_normalize(t, plen, path);
}

int sp_path_has_escaped_slash(const char *path, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (path[i] == '\\')
			return 1;
		/* normalised: escapes in upper case */
		if (path[i] == '%' && i + 2 < len && ((path[i + 1] == '2' && path[i + 2] == 'F') ||
						      (path[i + 1] == '5' && path[i + 2] == 'C')))
			return 1;
	}
	return 0;
}
