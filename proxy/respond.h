/* A route that answers itself (routes.[i].return: nginx's return, Envoy's
 * direct_response): an endpoint retired with a 410, moved with a 301 to
 * its new address, or kept out of reach with a 403, without a backend.
 * Pure: no I/O. */
#ifndef SP_RESPOND_H
#define SP_RESPOND_H

#include <stddef.h>

#include "buf.h"

struct sp_hdr_vars;
struct sp_reqview;

#define SP_RETURN_BODY_MAX 65536

struct sp_return {
	int status;         /* 200..599; 0: the route has a backend instead */
	char *body;         /* NULL: none (Content-Length: 0) */
	size_t body_len;
	char *content_type; /* the body's (NULL without one) */
	char *location;     /* a redirect's, its variables replaced per request */
};

/* What an answer is sent with besides the route's settings. */
struct sp_return_ctx {
	const char *location;   /* location with its variables replaced (sp_hdr_expand) */
	const char *request_id; /* X-Request-Id, or NULL */
	const char *date;       /* the Date field's value, or NULL */
	int keep_alive;         /* SP_CONN_CLOSE, _KEEP or _KEEP_10 (http.h) */
	int head;               /* a HEAD request: the head only */
};

/* The whole answer (head, and body unless a HEAD) appended to out: the
 * status line, Location (when r has one: x->location), Content-Type with a
 * body, Content-Length (not for 204 and 304, which have no content),
 * Connection as keep_alive says, X-Request-Id, Date. 0, or -1 no memory. */
int sp_return_write(const struct sp_return *r, const struct sp_return_ctx *x, struct sp_buf *out);

/* What location's variables stand for with request q (route.h's view of
 * it: its client, Host, normalised path and query), scheme and request_id
 * (NULL: none) the caller's. */
void sp_return_vars(const struct sp_reqview *q, const char *scheme, const char *request_id,
		    struct sp_hdr_vars *v);

/* r's location with the variables of v, appended to out. A location written
 * as a path ("/..."), whose variables make it start with "//" or "/\\" (a
 * client's X-Request-Id or Host: another site to a browser), has that second
 * character escaped (%2F, %5C): it stays a path on this site. 0, or -1 no
 * memory. */
int sp_return_location(const struct sp_return *r, const struct sp_hdr_vars *v,
		       struct sp_buf *out);

void sp_return_deinit(struct sp_return *r);

#endif
