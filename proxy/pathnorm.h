/* Request-path normalisation: the single definition of "the path" that routing
 * decides on and that the backend receives (docs/configuration.md, "Path
 * normalisation"). Pure: no I/O. */
#ifndef SP_PATHNORM_H
#define SP_PATHNORM_H

#include <stddef.h>
#include <string.h>

#include "buf.h"

enum sp_path_status {
	SP_PATH_OK = 0,
	SP_PATH_BAD_ENCODING = -1, /* '%' not followed by two hex digits */
	SP_PATH_ABOVE_ROOT = -2,   /* ".." would climb above "/" */
	SP_PATH_NOT_ORIGIN = -3,   /* does not start with '/' */
	SP_PATH_NOMEM = -4,
};

/* The value of hex digit c, -1 if it is none. */
int sp_hexval(int c);

/* Normalises the path part (no query) of an origin-form target into out
 * (replacing its content):
 *  - %XX escapes of unreserved characters (A-Z a-z 0-9 - . _ ~) are decoded,
 *    every other escape is kept with upper-case hex digits;
 *  - runs of '/' become one '/';
 *  - "." segments are removed and ".." segments remove the previous segment
 *    (RFC 3986 5.2.4), after decoding, so "%2e%2e" is "..";
 *  - a trailing '/' (or a final "." / "..") leaves a trailing '/'.
 * Returns SP_PATH_OK or a negative sp_path_status. */
int sp_path_normalize(const char *path, size_t len, struct sp_buf *out);

/* Splits a request target (origin- or absolute-form, or "*" for OPTIONS) into
 * its normalised path, written to path, and its raw query (*query NULL when
 * there is none). A fragment never goes upstream and an absolute-form
 * authority is only for proxies: both are dropped. Returns as
 * sp_path_normalize. */
int sp_split_target(const char *method, const char *url, size_t len, struct sp_buf *path,
		    const char **query, size_t *qlen);

const char *sp_path_strerror(int status);

/* Whether a normalised path holds an escaped slash or a backslash (%2F, %5C
 * or \\): kept as they are, they are no separators here, but many backends
 * decode them into '/' (Go's ServeMux, nginx) or read '\\' as one (Node), and
 * would serve another path than the one routed (limits.reject_escaped_slashes). */
int sp_path_has_escaped_slash(const char *path, size_t len);
#define SP_PATH_ESCAPED_SLASH_WHY "an escaped slash or a backslash in the path (%2F, %5C or \\)"

/* The authority of a URL with the scheme http or https (any case), or with
 * none ("//host/p") when scheme_relative: url[*at..*end), where *end is the
 * first '/', '?' or '#' after it, or len. 0 when url is neither (a path, a
 * relative reference, another scheme). */
int sp_url_authority(const char *url, size_t len, int scheme_relative, size_t *at, size_t *end);

/* A normalised path starts with prefix at a segment boundary: "/api/users"
 * covers "/api/users" and "/api/users/7", not "/api/usersettings"; a
 * prefix ending in '/' is its own boundary. (Inline: routing runs it for
 * each route.) */
static inline int sp_path_has_prefix(const char *prefix, size_t plen, const char *path,
				     size_t len)
{
	if (len < plen || memcmp(path, prefix, plen) != 0)
		return 0;
	return len == plen || prefix[plen - 1] == '/' || path[plen] == '/';
}

/* The path of a target as received, for logs: up to its query or fragment,
 * not normalised (a refused target is logged as sent). */
int sp_path_as_received(const char *url, size_t len, struct sp_buf *path);

/* Decodes %XX escapes (and '+' as space when plus_is_space) of a query
 * component into out. Invalid escapes are kept literally. */
int sp_pct_decode(const char *s, size_t len, int plus_is_space, struct sp_buf *out);

#endif
