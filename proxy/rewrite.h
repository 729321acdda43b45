/* What one backend gets, and gives, differently from the others: the paths
 * it serves the public ones under (backends.NAME.path_rewrite) and the
 * header fields set or removed on its requests and answers
 * (request_headers, response_headers). Pure: no I/O. */
#ifndef SP_REWRITE_H
#define SP_REWRITE_H

#include <stddef.h>

#include "buf.h"

/* A rule: a path under prefix (pathnorm.h's sp_path_has_prefix) has that
 * prefix replaced with to. Both are normalised paths. */
struct sp_rewrite {
	char *prefix;
	size_t prefix_len;
	char *to;
	size_t to_len;
};

#define SP_REWRITE_MAX 64

/* The path a backend with rules r[0..n) receives for normalised path: the
 * first rule whose prefix covers it applies. Returns the rule's index, with
 * out holding the new path (NUL-terminated, normalised); -1 when no rule
 * applies (path goes as it is; out untouched); -2 out of memory. */
int sp_rewrite_path(const struct sp_rewrite *r, size_t n, const char *path, size_t len,
		    struct sp_buf *out);

/* Where an answer of a backend points, in the client's terms
 * (backends.NAME.location_rewrite, as nginx's "proxy_redirect default"): a
 * Location that names the backend's own paths, or the Host it was sent,
 * names the public ones. */
struct sp_location_map {
	const struct sp_rewrite *rules; /* the backend's path_rewrite */
	size_t nrules;
	const char *sent_host; /* the Host the backend received (NULL: unknown) */
	size_t sent_host_len;
	const char *public_host; /* the client's Host (NULL: unknown) */
	size_t public_host_len;
	const char *public_scheme; /* "http" or "https", the client's (NULL: unknown) */
};

/* The value the client gets for a Location value v[0..len):
 *  - a path ("/orders/7?x"), or a URL whose scheme is http or https (or
 *    none: "//host/...") and whose authority is m->sent_host, has its path
 *    taken back through the rules: of the rules whose `to` covers it, the
 *    one with the longest `to`, when the public path it gives is sent to
 *    the backend as this path again (else, or a path not in normal form,
 *    the path stays);
 *  - such a URL's authority becomes m->public_host (host_header), and for
 *    an https client (m->public_scheme) an http URL becomes https: the
 *    backend spoke plain HTTP to the proxy (an https one stays, a
 *    redirect to https);
 *  - anything else (another host, a relative reference) stays.
 * Returns 1 with the new value in out, 0 when v stays, -1 no memory. */
int sp_location_public(const struct sp_location_map *m, const char *v, size_t len,
		       struct sp_buf *out);

/* Every Location field of h[0..n) in the client's terms: a field whose
 * value changes points into scratch after (reset first; valid until its
 * next use). 0, or -1 no memory (then h is unchanged). */
struct sp_hdr;
int sp_location_fields(const struct sp_location_map *m, struct sp_hdr *h, size_t n,
		       struct sp_buf *scratch);

/* Frees r[0..n) and the array; *r is NULL after. */
void sp_rewrite_free(struct sp_rewrite **r, size_t n);

/* Header fields set (every field of that name replaced by one with this
 * value) and names removed, on the heads one backend's exchanges carry. */
struct sp_hdr_rules {
	char **set_name, **set_value;
	size_t nset;
	char **remove;
	size_t nremove;
	int vars;      /* a set value has a variable ($remote_addr, ...) */
	int host_vars; /* one of them is $host or $http_host */
};

/* What the variables of set values stand for in one exchange (NULL: empty;
 * all NULL for a health check, which has no client). */
struct sp_hdr_vars {
	const char *remote_addr; /* the client, as the access log names it */
	const char *scheme;      /* "http" or "https", of the client's connection */
	const char *request_id;
	const char *http_host; /* the client's Host as sent */
	size_t http_host_len;
	/* $request_uri (a route's return.location only): the normalised path
	 * and the query, "?" between */
	const char *path, *query; /* query NULL: none */
	size_t path_len, query_len;
	/* "http" or "https" as the client reached us (TLS, or a trusted
	 * balancer's X-Forwarded-Proto): a Location's (sp_location_map) */
	const char *public_scheme;
};

/* Value v with its variables replaced (vars NULL: each is empty), appended
 * to out: $remote_addr, $scheme, $request_id, $http_host, $host (the Host
 * without its port, in lower case, as nginx's), $request_uri, ${name} the
 * same, $$ a '$'. 0, or -1 no memory. */
int sp_hdr_expand(const char *v, const struct sp_hdr_vars *vars, struct sp_buf *out);

/* The variables, a bit each, for sp_hdr_vars_in. */
enum {
	SP_VAR_REMOTE_ADDR = 1,
	SP_VAR_SCHEME = 2,
	SP_VAR_REQUEST_ID = 4,
	SP_VAR_HTTP_HOST = 8,
	SP_VAR_HOST = 16,
	SP_VAR_REQUEST_URI = 32,
};

/* What a header rule's set value may name: all but $request_uri (a route's
 * return.location only). */
#define SP_HDR_RULE_VARS \
	(SP_VAR_REMOTE_ADDR | SP_VAR_SCHEME | SP_VAR_REQUEST_ID | SP_VAR_HTTP_HOST | SP_VAR_HOST)

/* The variables value v names (SP_VAR_ bits), or -1 when a '$' in it starts
 * none of those in known ("$$" is a '$'). */
int sp_hdr_vars_in(const char *v, int known);

/* A field value strangler will send as written (its variables aside): 1 to
 * 4096 bytes, visible ASCII, spaces and tabs inside, bytes past 0x7f
 * (obs-text); no control character, no blank at either end. */
int sp_hdr_value_ok(const char *v);

#define SP_HDR_RULES_MAX 64

static inline int sp_hdr_rules_any(const struct sp_hdr_rules *r)
{
	return r->nset || r->nremove;
}

/* Applies r to a head the proxy serialised (a request or status line, then
 * "Name: value\r\n" lines, then "\r\n"): every field line whose name r sets
 * or removes goes (names case-insensitive), then the set fields are added
 * last, in the order written, their variables replaced from vars.
 * Applying the same rules twice (with the same vars) changes nothing more.
 * 0, or -1 (no memory, or not such a head: unchanged). */
int sp_hdr_rules_apply(const struct sp_hdr_rules *r, const struct sp_hdr_vars *vars,
		       struct sp_buf *head);

void sp_hdr_rules_deinit(struct sp_hdr_rules *r);

#endif
