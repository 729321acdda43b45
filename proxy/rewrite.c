/* Path rewriting per backend: the rules of backends.NAME.path_rewrite, how
 * they are read from the configuration and how they turn a request's
 * normalised path into the one that backend receives. */
#include "rewrite.h"

#include <stdlib.h>
#include <string.h>

#include "config_parse.h"
#include "http.h"
#include "pathnorm.h"

/* The prefix's length without its final '/' ("/" counts 0), so that what
 * follows it starts with '/' or is empty: "/api/" and "/api" both leave
 * "/x" of "/api/x". */
static size_t stem(const char *p, size_t n)
{
	return n && p[n - 1] == '/' ? n - 1 : n;
}

int sp_rewrite_path(const struct sp_rewrite *r, size_t n, const char *path, size_t len,
		    struct sp_buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (!sp_path_has_prefix(r[i].prefix, r[i].prefix_len, path, len))
			continue;
		size_t cut = stem(r[i].prefix, r[i].prefix_len);
		/* to's own final '/' stays when nothing follows the prefix
		 * ("/api" to "/v2/": "/api" is "/v2/", as nginx's proxy_pass) */
		size_t keep = len == cut ? r[i].to_len : stem(r[i].to, r[i].to_len);
		sp_buf_reset(out);
		if (sp_buf_add(out, r[i].to, keep) < 0 || sp_buf_add(out, path + cut, len - cut) < 0 ||
		    (out->len == 0 && sp_buf_addc(out, '/') < 0))
			return -2;
		return (int)i;
	}
	return -1;
}

/* The public path of a path the backend used (path[0..len), normal form)
 * into out: 1, 0 when no rule takes it back, -1 no memory. */
static int path_back(const struct sp_rewrite *r, size_t n, const char *path, size_t len,
		     struct sp_buf *out)
{
	struct sp_buf cand, fwd;
	size_t best = 0;
	int rc = 0;
	sp_buf_init(&cand);
	sp_buf_init(&fwd);
	for (size_t i = 0; i < n && rc >= 0; i++) {
		if (!sp_path_has_prefix(r[i].to, r[i].to_len, path, len) ||
		    (rc == 1 && r[i].to_len <= best))
			continue;
		size_t cut = stem(r[i].to, r[i].to_len);
		sp_buf_reset(&cand);
		int k;
		if (sp_buf_add(&cand, r[i].prefix, stem(r[i].prefix, r[i].prefix_len)) < 0 ||
		    sp_buf_add(&cand, path + cut, len - cut) < 0 ||
		    (cand.len == 0 && sp_buf_addc(&cand, '/') < 0) ||
		    (k = sp_rewrite_path(r, n, cand.data, cand.len, &fwd)) == -2) {
			rc = -1;
			break;
		}
		/* only a public path that the backend receives as this one (as
		 * it is, when no rule covers it), and never one a browser reads
		 * as another site: "/\evil.example" is "//evil.example" there */
		const struct sp_buf *got = k >= 0 ? &fwd : &cand;
		if (got->len != len || memcmp(got->data, path, len) != 0 ||
		    (cand.len > 1 && (cand.data[1] == '\\' || cand.data[1] == '/')))
			continue;
		sp_buf_reset(out);
		if (sp_buf_add(out, cand.data, cand.len) < 0) {
			rc = -1;
			break;
		}
		best = r[i].to_len;
		rc = 1;
	}
	sp_buf_deinit(&cand);
	sp_buf_deinit(&fwd);
	return rc;
}

/* Whether every byte of s could be in a request target (llhttp refuses the
 * others). A path with any other has no public form to map to, and one
 * could turn into another site's: browsers drop TAB, CR and LF inside a URL,
 * so "/\t/evil.example" reads as "//evil.example". */
static int target_bytes(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return 0;
	return 1;
}

static int same_host(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && sp_ascii_ieq(a, b, blen);
}

int sp_location_public(const struct sp_location_map *m, const char *v, size_t len,
		       struct sp_buf *out)
{
	/* [scheme "://" | "//"] authority, or none: the path starts at p */
	size_t auth = 0, p = 0;
	if (len && v[0] == '/' && (len == 1 || v[1] != '/')) {
		p = 0;
	} else {
		if (!sp_url_authority(v, len, 1, &auth, &p))
			return 0;
		int sent = m->sent_host && same_host(v + auth, p - auth, m->sent_host,
						     m->sent_host_len);
		int public = m->public_host && m->public_host_len &&
			     same_host(v + auth, p - auth, m->public_host, m->public_host_len);
		/* another host's; or the backend's own, when the client's is not
		 * known (HTTP/1.0 without Host, an empty one) to put there */
		if (!public && (!sent || !(m->public_host && m->public_host_len)))
			return 0;
	}
	size_t q = p;
	while (q < len && v[q] != '?' && v[q] != '#')
		q++;
	struct sp_buf norm, back;
	sp_buf_init(&norm);
	sp_buf_init(&back);
	int rc = 0, mapped = 0;
	/* the path, when it has one in normal form that a rule takes back */
	if (q > p && m->nrules && target_bytes(v + p, q - p)) {
		int ns = sp_path_normalize(v + p, q - p, &norm);
		if (ns == SP_PATH_NOMEM)
			rc = -1;
		else if (ns == SP_PATH_OK && norm.len == q - p && memcmp(norm.data, v + p, q - p) == 0)
			rc = mapped = path_back(m->rules, m->nrules, v + p, q - p, &back);
	}
	int rehost = auth && !same_host(v + auth, p - auth, m->public_host, m->public_host_len);
	if (rc >= 0 && (mapped || rehost)) {
		const char *host = rehost ? m->public_host : v + auth;
		size_t host_len = rehost ? m->public_host_len : p - auth;
		/* with the client's host, an https client's scheme: the backend
		 * spoke plain HTTP to the proxy and may say http (an https URL,
		 * a redirect to https, stays so; "//" too) */
		int upgrade = rehost && m->public_scheme && strcmp(m->public_scheme, "https") == 0 &&
			      auth == 7 && sp_ascii_ieq(v, "http://", 7);
		sp_buf_reset(out);
		rc = (upgrade ? sp_buf_adds(out, "https://") < 0 : sp_buf_add(out, v, auth) < 0) ||
				     sp_buf_add(out, host, auth ? host_len : 0) < 0 ||
				     (mapped ? sp_buf_add(out, back.data, back.len)
					     : sp_buf_add(out, v + p, q - p)) < 0 ||
				     sp_buf_add(out, v + q, len - q) < 0
			     ? -1
			     : 1;
	}
	sp_buf_deinit(&norm);
	sp_buf_deinit(&back);
	return rc;
}

int sp_location_fields(const struct sp_location_map *m, struct sp_hdr *h, size_t n,
		       struct sp_buf *scratch)
{
	/* the new values one after the other in scratch, which may move while
	 * it grows, and which field each is: h changes once all are written */
	struct sp_buf one, at;
	int rc = 0;
	sp_buf_init(&one);
	sp_buf_init(&at);
	sp_buf_reset(scratch);
	for (size_t i = 0; i < n && rc >= 0; i++) {
		size_t rec[2] = {i, 0};
		if (!sp_hdr_name_is(&h[i], "Location") ||
		    (rc = sp_location_public(m, h[i].value, h[i].value_len, &one)) != 1)
			continue;
		rec[1] = one.len;
		if (sp_buf_add(scratch, one.data, one.len) < 0 || sp_buf_add(&at, rec, sizeof(rec)) < 0)
			rc = -1;
	}
	size_t off = 0;
	for (size_t k = 0; rc >= 0 && k + 2 * sizeof(size_t) <= at.len; k += 2 * sizeof(size_t)) {
		size_t rec[2];
		memcpy(rec, at.data + k, sizeof(rec));
		h[rec[0]].value = scratch->data + off;
		h[rec[0]].value_len = rec[1];
		off += rec[1];
	}
	sp_buf_deinit(&one);
	sp_buf_deinit(&at);
	return rc < 0 ? -1 : 0;
}

void sp_rewrite_free(struct sp_rewrite **r, size_t n)
{
	for (size_t i = 0; *r && i < n; i++) {
		free((*r)[i].prefix);
		free((*r)[i].to);
	}
	free(*r);
	*r = NULL;
}

/* A path of a rule: normalised (so that it can cover what routing sees, and
 * gives the backend a path routing could have seen), without '?' or '#',
 * which would end the path at the backend (cfgp_norm_path). */
static char *rule_path(struct sp_loader *L, const config_setting_t *g, const char *key,
		       const char *path, const char *else_)
{
	const config_setting_t *s = config_setting_get_member(g, key);
	char *p = cfgp_norm_path(L, g, key, path, else_); /* no '?' or '#' either */
	if (!p && s == NULL)
		ERR(L, g, "%s.%s: required", path, key);
	return p;
}

static int load_rule(struct sp_loader *L, const config_setting_t *g, const char *path,
		     struct sp_rewrite *r)
{
	r->prefix = rule_path(L, g, "prefix", path, "would never apply");
	r->to = rule_path(L, g, "to", path, "a backend only receives normalised paths");
	if (!r->prefix || !r->to) { /* reported; the rule is left empty */
		free(r->prefix);
		free(r->to);
		*r = (struct sp_rewrite){0};
		return -1;
	}
	r->prefix_len = strlen(r->prefix);
	r->to_len = strlen(r->to);
	return 0;
}

void sp_load_path_rewrite(struct sp_loader *L, const config_setting_t *backend, const char *path,
			  struct sp_rewrite **rules, size_t *n)
{
	static const char *const keys[] = {"prefix", "to", NULL};
	const config_setting_t *list = config_setting_get_member(backend, "path_rewrite");
	char rp[200];
	*rules = NULL;
	*n = 0;
	if (!list)
		return;
	if (config_setting_type(list) != CONFIG_TYPE_LIST || config_setting_length(list) == 0 ||
	    config_setting_length(list) > SP_REWRITE_MAX) {
		ERR(L, list, "%s.path_rewrite: must be a list of 1 to %d rules, in parentheses: "
			     "( { prefix = \"/api/v1/orders\"; to = \"/orders\"; } )",
		    path, SP_REWRITE_MAX);
		return;
	}
	size_t count = (size_t)config_setting_length(list);
	if (!(*rules = calloc(count, sizeof(**rules)))) {
		ERR(L, list, "%s.path_rewrite: out of memory", path);
		return;
	}
	*n = count;
	for (size_t i = 0; i < count; i++) {
		const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
		struct sp_rewrite *r = &(*rules)[i];
		snprintf(rp, sizeof(rp), "%s.path_rewrite.[%zu]", path, i);
		if (!config_setting_is_group(g)) {
			ERR(L, g, "%s: must be a group: { prefix = \"/api/v1/orders\"; to = "
				  "\"/orders\"; }",
			    rp);
			continue;
		}
		cfgp_check_keys(L, g, rp, keys);
		if (load_rule(L, g, rp, r) < 0)
			continue;
		/* the first rule that covers a path applies: one whose prefix an
		 * earlier one covers never does */
		for (size_t k = 0; k < i; k++)
			if ((*rules)[k].prefix &&
			    sp_path_has_prefix((*rules)[k].prefix, (*rules)[k].prefix_len, r->prefix,
					       r->prefix_len)) {
				WARN(L, g, "%s: never applies: path_rewrite.[%zu] (prefix \"%s\") "
					   "covers every path it would; put the longer prefix first",
				     rp, k, (*rules)[k].prefix);
				break;
			}
	}
}

/* ---- header rules ---- */

/* Header names alike for the rules: in any case, and '_' as '-' (a
 * CGI-style backend reads X_Debug as X-Debug: a client could otherwise
 * pass one by a removed name, or a twin of a set one). */
static int same_name(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned x = (unsigned char)a[i], y = (unsigned char)b[i];
		x = x == '_' ? '-' : x + ((x - 'A' < 26u) << 5);
		y = y == '_' ? '-' : y + ((y - 'A' < 26u) << 5);
		if (x != y)
			return 0;
	}
	return 1;
}

static int in_list(char *const *v, size_t nv, const char *name, size_t n)
{
	for (size_t i = 0; i < nv; i++)
		if (strlen(v[i]) == n && same_name(v[i], name, n))
			return 1;
	return 0;
}

static int rule_names(const struct sp_hdr_rules *r, const char *name, size_t n)
{
	return in_list(r->set_name, r->nset, name, n) || in_list(r->remove, r->nremove, name, n);
}

/* The variables a set value may name, in the order of struct sp_hdr_vars'
 * use below. */
enum var {
	VAR_REMOTE_ADDR,
	VAR_SCHEME,
	VAR_REQUEST_ID,
	VAR_HTTP_HOST,
	VAR_HOST,
	VAR_REQUEST_URI,
	VAR__N
};
static const char *const var_names[VAR__N] = {"remote_addr", "scheme", "request_id",
					      "http_host",   "host",   "request_uri"};
/* sp_hdr_vars_in reports variable k as the bit 1 << k: rewrite.h's SP_VAR_ */
_Static_assert(SP_VAR_REMOTE_ADDR == 1 << VAR_REMOTE_ADDR && SP_VAR_SCHEME == 1 << VAR_SCHEME &&
		       SP_VAR_REQUEST_ID == 1 << VAR_REQUEST_ID &&
		       SP_VAR_HTTP_HOST == 1 << VAR_HTTP_HOST && SP_VAR_HOST == 1 << VAR_HOST &&
		       SP_VAR_REQUEST_URI == 1 << VAR_REQUEST_URI,
	       "SP_VAR_ bits follow enum var");

/* The variable at v[0] == '$': its kind, or -1 for "$$" (a '$'), -2 when
 * it is none; *len is what it spans. */
static int var_at(const char *v, size_t *len)
{
	int braced = v[1] == '{';
	const char *name = v + 1 + braced;
	size_t n = 0;
	if (v[1] == '$') {
		*len = 2;
		return -1;
	}
	while ((name[n] >= 'a' && name[n] <= 'z') || name[n] == '_' ||
	       (n && name[n] >= '0' && name[n] <= '9'))
		n++;
	if (braced && name[n] != '}')
		return -2;
	for (int k = 0; n && k < VAR__N; k++)
		if (strlen(var_names[k]) == n && memcmp(var_names[k], name, n) == 0) {
			*len = 1 + (size_t)braced + n + (size_t)braced;
			return k;
		}
	return -2;
}

/* $host: the Host's name, without its port or a final dot, in lower case. */
static int add_host(struct sp_buf *out, const char *h, size_t n)
{
	size_t end = n;
	if (n && h[0] == '[') { /* [v6]:port */
		const char *close = memchr(h, ']', n);
		end = close ? (size_t)(close - h) + 1 : n;
	} else {
		const char *colon = memchr(h, ':', n);
		end = colon ? (size_t)(colon - h) : n;
	}
	if (end > 1 && h[end - 1] == '.') /* a final dot, as routing reads it */
		end--;
	for (size_t i = 0; i < end; i++)
		if (sp_buf_addc(out, h[i] >= 'A' && h[i] <= 'Z' ? h[i] + 32 : h[i]) < 0)
			return -1;
	return 0;
}

/* $request_uri: the normalised path, a '\\' in it as %5C (a browser reads
 * "/\\evil.example" in a Location as another site, as it does "//"), "/" for
 * "*" (OPTIONS *: the server as a whole), then '?' and the query. */
static int add_request_uri(struct sp_buf *out, const struct sp_hdr_vars *v)
{
	const char *p = v->path, *end = v->path + v->path_len;
	if (v->path_len == 1 && p[0] == '*') {
		p = "/";
		end = p + 1;
	}
	for (const char *bs; p < end; p = bs + 1) {
		bs = memchr(p, '\\', (size_t)(end - p));
		if (!bs)
			bs = end;
		if (sp_buf_add(out, p, (size_t)(bs - p)) < 0 ||
		    (bs < end && sp_buf_adds(out, "%5C") < 0))
			return -1;
	}
	if (v->query && (sp_buf_addc(out, '?') < 0 || sp_buf_add(out, v->query, v->query_len) < 0))
		return -1;
	return 0;
}

int sp_hdr_expand(const char *v, const struct sp_hdr_vars *vars, struct sp_buf *out)
{
	static const struct sp_hdr_vars none = {0};
	if (!vars)
		vars = &none;
	while (*v) {
		const char *dollar = strchr(v, '$');
		size_t lit = dollar ? (size_t)(dollar - v) : strlen(v), len = 1;
		if (sp_buf_add(out, v, lit) < 0)
			return -1;
		v += lit;
		if (!dollar)
			break;
		int k = var_at(v, &len);
		const char *text = k == -1 ? "$" : NULL;
		switch (k) {
		case VAR_REMOTE_ADDR: text = vars->remote_addr; break;
		case VAR_SCHEME: text = vars->scheme; break;
		case VAR_REQUEST_ID: text = vars->request_id; break;
		case VAR_HTTP_HOST:
			if (vars->http_host && sp_buf_add(out, vars->http_host, vars->http_host_len) < 0)
				return -1;
			break;
		case VAR_HOST:
			if (vars->http_host && add_host(out, vars->http_host, vars->http_host_len) < 0)
				return -1;
			break;
		case VAR_REQUEST_URI:
			if (vars->path && add_request_uri(out, vars) < 0)
				return -1;
			break;
		case -2: /* refused when loaded: kept as it is */
			text = "$";
			len = 1;
			break;
		}
		if (text && sp_buf_add(out, text, strlen(text)) < 0)
			return -1;
		v += len;
	}
	return 0;
}

int sp_hdr_rules_apply(const struct sp_hdr_rules *r, const struct sp_hdr_vars *vars,
		       struct sp_buf *head)
{
	char *d = head->data;
	size_t len = head->len;
	const char *eol = d && len >= 4 && memcmp(d + len - 4, "\r\n\r\n", 4) == 0
				  ? memchr(d, '\n', len)
				  : NULL;
	if (!eol)
		return -1;
	/* the field lines, compacted in place without those r names */
	size_t w = (size_t)(eol - d) + 1, at = w;
	while (at < len - 2) {
		const char *end = memchr(d + at, '\n', len - at);
		size_t n = (size_t)(end - (d + at)) + 1;
		const char *colon = memchr(d + at, ':', n);
		if (!colon || !rule_names(r, d + at, (size_t)(colon - (d + at)))) {
			memmove(d + w, d + at, n);
			w += n;
		}
		at += n;
	}
	head->len = w;
	struct sp_buf val;
	int rc = 0;
	sp_buf_init(&val);
	for (size_t i = 0; i < r->nset && rc == 0; i++) {
		const char *v = r->set_value[i];
		if (r->vars && strchr(v, '$')) {
			sp_buf_reset(&val);
			rc = sp_hdr_expand(v, vars, &val) < 0 || sp_buf_addc(&val, '\0') < 0 ? -1 : 0;
			v = val.data;
		}
		/* a value its variables leave empty is not sent (nginx's
		 * proxy_set_header): "X-Host: " says nothing a backend can use */
		if (rc == 0 && *v)
			rc = sp_http_add_field(head, r->set_name[i], v);
	}
	sp_buf_deinit(&val);
	return rc < 0 ? -1 : sp_buf_add(head, "\r\n", 2);
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

void sp_hdr_rules_deinit(struct sp_hdr_rules *r)
{
	free_strv(r->set_name, r->nset);
	free_strv(r->set_value, r->nset);
	free_strv(r->remove, r->nremove);
	*r = (struct sp_hdr_rules){0};
}

/* Why name cannot be in the rules of a backend's requests (response: its
 * answers), NULL when it can. */
static const char *name_refused(const char *name, int response)
{
	size_t n = strlen(name);
	struct sp_hdr h = {name, n, "", 0};
	if (n == 0 || n > 64)
		return "a header name is 1 to 64 characters";
	if (!sp_http_is_token(name, n))
		return "not a header name (letters, digits and !#$%&'*+-.^_`|~)";
	if (sp_hdr_is_hop_by_hop(&h))
		return "a hop-by-hop or framing header: strangler writes it for each connection";
	if (response && sp_hdr_name_is(&h, "Date"))
		return "strangler keeps the backend's Date, or adds one";
	if (!response && sp_hdr_name_is(&h, "Host"))
		return "set the backend's Host with host_header";
	if (!response && sp_hdr_name_is(&h, "Expect"))
		return "strangler passes the backend's 100 Continue on: without Expect the backend "
		       "sends none and the client waits";
	if (!response && sp_hdr_is_managed(&h))
		return "strangler writes it itself (X-Forwarded-*, X-Request-Id, X-Strangler-Shadow)";
	return NULL;
}

int sp_hdr_value_ok(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n > 4096 || v[0] == ' ' || v[0] == '\t' || v[n - 1] == ' ' ||
	    v[n - 1] == '\t')
		return 0;
	return !sp_http_value_has_ctl(v, n);
}

int sp_hdr_vars_in(const char *v, int known)
{
	int used = 0;
	for (const char *d = strchr(v, '$'); d; d = strchr(d, '$')) {
		size_t len;
		int k = var_at(d, &len);
		if (k == -2 || (k >= 0 && !(known & 1 << k)))
			return -1;
		used |= k >= 0 ? 1 << k : 0;
		d += len;
	}
	return used;
}

/* The variables of set value v, each one strangler knows; noted in r. */
static int check_vars(struct sp_loader *L, const config_setting_t *f, const char *path,
		      const char *name, const char *v, struct sp_hdr_rules *r)
{
	int used = sp_hdr_vars_in(v, SP_HDR_RULE_VARS);
	if (used < 0) {
		ERR(L, f, "%s.set.%s: \"%s\": '$' starts a variable: $remote_addr, "
			  "$scheme, $request_id, $http_host or $host (or ${name}); write $$ "
			  "for a '$'",
		    path, name, v);
		return -1;
	}
	r->vars |= strchr(v, '$') != NULL;
	r->host_vars |= (used & (SP_VAR_HTTP_HOST | SP_VAR_HOST)) != 0;
	return 0;
}

static void load_set(struct sp_loader *L, const config_setting_t *set, const char *path,
		     int response, struct sp_hdr_rules *r)
{
	int n = config_setting_length(set);
	if (!config_setting_is_group(set) || n == 0 || n > SP_HDR_RULES_MAX) {
		ERR(L, set, "%s.set: must be a group of 1 to %d fields: { X-Api-Version = \"2\"; }",
		    path, SP_HDR_RULES_MAX);
		return;
	}
	r->set_name = calloc((size_t)n + 1, sizeof(char *));
	r->set_value = calloc((size_t)n + 1, sizeof(char *));
	if (!r->set_name || !r->set_value) {
		ERR(L, set, "%s.set: out of memory", path);
		return;
	}
	for (int i = 0; i < n; i++) {
		const config_setting_t *f = config_setting_get_elem(set, (unsigned)i);
		const char *name = config_setting_name(f), *why = name_refused(name, response);
		const char *v = config_setting_type(f) == CONFIG_TYPE_STRING
					? config_setting_get_string(f)
					: NULL;
		if (why)
			ERR(L, f, "%s.set.%s: %s", path, name, why);
		else if (rule_names(r, name, strlen(name)))
			ERR(L, f, "%s.set.%s: set twice (header names are case-insensitive, '_' "
				  "reads as '-')",
			    path, name);
		else if (!v || !sp_hdr_value_ok(v))
			ERR(L, f, "%s.set.%s: must be a string of 1 to 4096 bytes, no control "
				  "characters but tabs, no blank at either end (to drop the header, "
				  "list it in remove)",
			    path, name);
		else if (check_vars(L, f, path, name, v, r) < 0)
			; /* reported */
		else if (!(r->set_name[r->nset] = strdup(name)) ||
			 !(r->set_value[r->nset++] = strdup(v)))
			ERR(L, f, "%s.set: out of memory", path);
	}
}

static void load_remove(struct sp_loader *L, const config_setting_t *rm, const char *path,
			int response, struct sp_hdr_rules *r)
{
	int n = config_setting_length(rm);
	if (config_setting_type(rm) != CONFIG_TYPE_ARRAY || n == 0 || n > SP_HDR_RULES_MAX) {
		ERR(L, rm, "%s.remove: must be a list of 1 to %d header names: [\"X-Debug\"]", path,
		    SP_HDR_RULES_MAX);
		return;
	}
	if (!(r->remove = calloc((size_t)n, sizeof(char *)))) {
		ERR(L, rm, "%s.remove: out of memory", path);
		return;
	}
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(rm, (unsigned)i);
		const char *name = config_setting_get_string(e), *why;
		if (!name)
			ERR(L, e, "%s.remove.[%d]: must be a string", path, i);
		else if ((why = name_refused(name, response)))
			ERR(L, e, "%s.remove.[%d]: \"%s\": %s", path, i, name, why);
		else if (in_list(r->set_name, r->nset, name, strlen(name)))
			ERR(L, e, "%s.remove.[%d]: \"%s\": also in set: a header is set or removed, "
				  "not both",
			    path, i, name);
		else if (in_list(r->remove, r->nremove, name, strlen(name)))
			ERR(L, e, "%s.remove.[%d]: \"%s\": listed twice (header names are "
				  "case-insensitive, '_' reads as '-')",
			    path, i, name);
		else if (!(r->remove[r->nremove++] = strdup(name)))
			ERR(L, e, "%s.remove: out of memory", path);
	}
}

void sp_load_hdr_rules(struct sp_loader *L, const config_setting_t *backend, const char *path,
		       int response, struct sp_hdr_rules *r)
{
	static const char *const keys[] = {"set", "remove", NULL};
	const char *key = response ? "response_headers" : "request_headers";
	char hp[200];
	const config_setting_t *g = cfgp_group(
		L, backend, key, path, "{ set = { X-Api-Version = \"2\"; }; remove = [\"X-Debug\"]; }",
		hp, sizeof(hp));
	if (!g)
		return;
	cfgp_check_keys(L, g, hp, keys);
	const config_setting_t *set = config_setting_get_member(g, "set");
	const config_setting_t *rm = config_setting_get_member(g, "remove");
	if (!set && !rm)
		ERR(L, g, "%s: sets or removes nothing: give set, remove or both", hp);
	if (set)
		load_set(L, set, hp, response, r);
	if (rm)
		load_remove(L, rm, hp, response, r);
}
