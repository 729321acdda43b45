/* routes.[i].return: the settings (loaded and checked here) and the
 * answer they make. */
#include "respond.h"

#include <stdlib.h>
#include <string.h>

#include "config_parse.h"
#include "http.h"
#include "rewrite.h"
#include "route.h"

/* The variables a Location may name. */
#define LOCATION_VARS                                                                      \
	(SP_VAR_REMOTE_ADDR | SP_VAR_SCHEME | SP_VAR_REQUEST_ID | SP_VAR_HTTP_HOST | SP_VAR_HOST | \
	 SP_VAR_REQUEST_URI)

static int is_redirect(int status)
{
	return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* 204 and 304 answers have no content, nor a Content-Length (RFC 9110
 * 6.4.1, 8.6). */
static int has_content(int status)
{
	return status != 204 && status != 304;
}

/* What may have a body: not those, nor a 205 (RFC 9110 15.3.6), which
 * says Content-Length: 0. */
static int may_have_body(int status)
{
	return has_content(status) && status != 205;
}

/* An integer setting (int or int64 literal, as everywhere in the file), or
 * -1 for any other type. */
static long long int_of(const config_setting_t *s)
{
	int t = config_setting_type(s);
	return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64 ? config_setting_get_int64(s) : -1;
}

/* A string member that becomes a header value: a copy, or NULL (absent, or
 * reported). */
static char *header_member(struct sp_loader *L, const config_setting_t *g, const char *key,
			   const char *path, const config_setting_t **where)
{
	char *v = cfgp_str(L, g, key, path, where);
	if (v && !sp_hdr_value_ok(v)) {
		ERR(L, *where, "%s.%s: must be 1 to 4096 bytes, no control characters, no blank "
			       "at either end",
		    path, key);
		free(v);
		return NULL;
	}
	return v;
}

static void load_location(struct sp_loader *L, const config_setting_t *g, const char *path,
			  struct sp_return *r)
{
	const config_setting_t *where;
	r->location = header_member(L, g, "location", path, &where);
	if (!where) {
		if (is_redirect(r->status))
			ERR(L, g, "%s.location: required for a %d (where the client is sent)", path,
			    r->status);
		return;
	}
	if (r->status && r->status / 100 != 3 && r->status != 201)
		ERR(L, where, "%s.location: only a 3xx or 201 answer has one", path);
	else if (r->location && strpbrk(r->location, " \t"))
		ERR(L, where, "%s.location: a URL has no blanks (write a space as %%20)", path);
	else if (r->location && sp_hdr_vars_in(r->location, LOCATION_VARS) < 0)
		ERR(L, where, "%s.location: \"%s\": '$' starts a variable: $scheme, $host, "
			      "$http_host, $request_uri, $request_id or $remote_addr (or ${name}); "
			      "write $$ for a '$'",
		    path, r->location);
}

static void load_body(struct sp_loader *L, const config_setting_t *g, const char *path,
		      struct sp_return *r)
{
	const config_setting_t *where;
	r->body = cfgp_str(L, g, "body", path, &where);
	r->content_type = header_member(L, g, "content_type", path, &where);
	if (r->content_type && !r->body)
		ERR(L, where, "%s.content_type: needs a body", path);
	if (!r->body)
		return;
	r->body_len = strlen(r->body);
	where = config_setting_get_member(g, "body");
	if (r->body_len > SP_RETURN_BODY_MAX)
		ERR(L, where, "%s.body: at most %d bytes (a page that large belongs on a backend)",
		    path, SP_RETURN_BODY_MAX);
	else if (r->status && !may_have_body(r->status))
		ERR(L, where, "%s.body: a %d answer has no content", path, r->status);
	if (!r->content_type && !(r->content_type = strdup("text/plain; charset=utf-8")))
		ERR(L, where, "%s.body: out of memory", path);
}

int sp_load_return(struct sp_loader *L, const config_setting_t *route, const char *rpath,
		   struct sp_return *r)
{
	static const char *const keys[] = {"status", "body", "content_type", "location", NULL};
	const config_setting_t *g = config_setting_get_member(route, "return");
	char path[96];
	if (!g)
		return 0;
	snprintf(path, sizeof(path), "%s.return", rpath);
	if (config_setting_type(g) == CONFIG_TYPE_INT ||
	    config_setting_type(g) == CONFIG_TYPE_INT64) { /* return = 410; */
		long long st = int_of(g);
		r->status = st >= 200 && st <= 599 ? (int)st : 0;
		if (!r->status)
			ERR(L, g, "%s: must be a status from 200 to 599", path);
		else if (is_redirect(r->status))
			ERR(L, g, "%s: a %d needs a location: return = { status = %d; location = "
				  "\"https://example.com/\"; }",
			    path, r->status, r->status);
		return 1;
	}
	if (!config_setting_is_group(g)) {
		ERR(L, g, "%s: must be a status (return = 410;) or a group: { status = 301; "
			  "location = \"https://example.com$request_uri\"; }",
		    path);
		return 1;
	}
	cfgp_check_keys(L, g, path, keys);
	const config_setting_t *st = config_setting_get_member(g, "status");
	if (!st)
		ERR(L, g, "%s.status: required", path);
	else if (int_of(st) < 200 || int_of(st) > 599)
		ERR(L, st, "%s.status: must be a status from 200 to 599", path);
	else
		r->status = (int)int_of(st);
	load_location(L, g, path, r);
	load_body(L, g, path, r);
	return 1;
}

int sp_return_write(const struct sp_return *r, const struct sp_return_ctx *x, struct sp_buf *out)
{
	const char *reason = sp_http_reason(r->status);
	if (sp_buf_printf(out, "HTTP/1.1 %d %s\r\n", r->status, reason) < 0)
		return -1;
	if (r->location && x->location &&
	    sp_buf_printf(out, "Location: %s\r\n", x->location) < 0)
		return -1;
	if (r->body && sp_buf_printf(out, "Content-Type: %s\r\n", r->content_type) < 0)
		return -1;
	if (has_content(r->status) && sp_buf_printf(out, "Content-Length: %zu\r\n", r->body_len) < 0)
		return -1;
	if (sp_buf_adds(out, sp_http_connection(x->keep_alive)) < 0)
		return -1;
	if (x->request_id && sp_buf_printf(out, "X-Request-Id: %s\r\n", x->request_id) < 0)
		return -1;
	if (x->date && sp_buf_printf(out, "Date: %s\r\n", x->date) < 0)
		return -1;
	if (sp_buf_adds(out, "\r\n") < 0)
		return -1;
	return x->head || !r->body ? 0 : sp_buf_add(out, r->body, r->body_len) < 0 ? -1 : 0;
}

void sp_return_vars(const struct sp_reqview *q, const char *scheme, const char *request_id,
		    struct sp_hdr_vars *v)
{
	const struct sp_hdr *host = sp_hdr_find(q->headers, q->nheaders, "Host");
	*v = (struct sp_hdr_vars){.remote_addr = q->client_ip,
				  .scheme = scheme,
				  .request_id = request_id,
				  .http_host = host ? host->value : NULL,
				  .http_host_len = host ? host->value_len : 0,
				  .path = q->path,
				  .path_len = q->path_len,
				  .query = q->query,
				  .query_len = q->query_len};
}

int sp_return_location(const struct sp_return *r, const struct sp_hdr_vars *v,
		       struct sp_buf *out)
{
	size_t at = out->len;
	if (sp_hdr_expand(r->location, v, out) < 0)
		return -1;
	const char *l = r->location;
	if (l[0] != '/' || l[1] == '/' || l[1] == '\\' || out->len < at + 2 ||
	    out->data[at] != '/' || (out->data[at + 1] != '/' && out->data[at + 1] != '\\'))
		return 0;
	/* "/" then "%2F" or "%5C" where the second character was */
	char esc[3] = {'%', out->data[at + 1] == '/' ? '2' : '5', out->data[at + 1] == '/' ? 'F' : 'C'};
	size_t tail = out->len - (at + 2);
	if (sp_buf_reserve(out, 2) < 0)
		return -1;
	memmove(out->data + at + 4, out->data + at + 2, tail);
	memcpy(out->data + at + 1, esc, 3);
	out->len += 2;
	out->data[out->len] = '\0';
	return 0;
}

void sp_return_deinit(struct sp_return *r)
{
	free(r->body);
	free(r->content_type);
	free(r->location);
	*r = (struct sp_return){0};
}
