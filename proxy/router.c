/* Route matching: first route in file order whose every condition holds. */
#include "route.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pathnorm.h"

static int method_matches(const struct sp_match *m, const char *method)
{
	if (m->nmethods == 0)
		return 1;
	for (size_t i = 0; i < m->nmethods; i++)
		if (strcmp(m->methods[i], method) == 0)
			return 1;
	return 0;
}

static int headers_match(const struct sp_match *m, const struct sp_reqview *q)
{
	for (size_t i = 0; i < m->nheaders; i++) {
		const struct sp_kv *c = &m->headers[i];
		int found = 0;
		for (size_t j = 0; j < q->nheaders && !found; j++) {
			const struct sp_hdr *h = &q->headers[j];
			if (!sp_hdr_name_is(h, c->name))
				continue;
			found = c->any || (h->value_len == strlen(c->value) &&
					   memcmp(h->value, c->value, h->value_len) == 0);
		}
		if (!found)
			return 0;
	}
	return 1;
}

/* Walks "a=1&b=2" calling back with each decoded name and value. Stops when
 * the callback returns non-zero and returns that value. */
static int query_each(const char *qs, size_t len, struct sp_buf *scratch,
		      int (*cb)(void *, const char *, size_t, const char *, size_t), void *arg)
{
	struct sp_buf name;
	int rc = 0;
	if (!qs)
		return 0; /* no query string: nothing to walk */
	sp_buf_init(&name);
	const char *p = qs, *end = qs + len;
	while (qs && p < end && rc == 0) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *pe = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(pe - p));
		const char *ne = eq ? eq : pe;
		if (sp_pct_decode(p, (size_t)(ne - p), 1, &name) < 0 ||
		    sp_pct_decode(eq ? eq + 1 : pe, eq ? (size_t)(pe - eq - 1) : 0, 1, scratch) < 0) {
			rc = -1;
			break;
		}
		if (name.len)
			rc = cb(arg, name.data, name.len, scratch->data ? scratch->data : "",
				scratch->len);
		p = pe + 1;
	}
	sp_buf_deinit(&name);
	return rc;
}

struct query_probe {
	const struct sp_kv *want;
};

/* The decoded name, whole: "version%00evil" is not "version". */
static int name_is(const char *name, size_t nlen, const char *want)
{
	return nlen == strlen(want) && memcmp(name, want, nlen) == 0;
}

static int query_probe_cb(void *arg, const char *name, size_t nlen, const char *value,
			  size_t vlen)
{
	const struct sp_kv *c = ((struct query_probe *)arg)->want;
	if (!name_is(name, nlen, c->name))
		return 0;
	return c->any || (vlen == strlen(c->value) && memcmp(value, c->value, vlen) == 0);
}

static int query_matches(const struct sp_match *m, const struct sp_reqview *q)
{
	if (m->nquery == 0)
		return 1;
	struct sp_buf scratch;
	int ok = 1;
	sp_buf_init(&scratch);
	for (size_t i = 0; i < m->nquery && ok; i++) {
		struct query_probe probe = {&m->query[i]};
		ok = query_each(q->query, q->query_len, &scratch, query_probe_cb, &probe) == 1;
	}
	sp_buf_deinit(&scratch);
	return ok;
}

/* The pattern is compiled anchored, "^(...)$" (load_regex): a match spans
 * the whole path, which the bounds check below says again. REG_STARTEND
 * bounds it by len. */
static int regex_whole(const regex_t *re, const char *path, size_t len)
{
	regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)len};
	return regexec(re, path, 1, &m, REG_STARTEND) == 0 && m.rm_so == 0 &&
	       (size_t)m.rm_eo == len;
}

/* The request's host as routing sees it: its Host without the port or a
 * final dot, looked up once per request (len -1: not yet). */
struct host_view {
	const char *p;
	ssize_t len; /* -1: not looked up; 0: none */
};

static void host_of(const struct sp_reqview *q, struct host_view *v)
{
	const struct sp_hdr *h = sp_hdr_find(q->headers, q->nheaders, "Host");
	size_t n = h ? sp_value_len(h->value, h->value_len) : 0;
	const char *p = h ? h->value : "";
	const char *close = n && p[0] == '[' ? memchr(p, ']', n) : NULL;
	const char *colon = memchr(close ? close : p, ':', n - (size_t)((close ? close : p) - p));
	if (colon)
		n = (size_t)(colon - p);
	if (n > 1 && p[n - 1] == '.')
		n--;
	v->p = p;
	v->len = (ssize_t)n;
}

/* pattern: lower case, "*.name" for the names below name */
static int host_matches(const char *pattern, const struct sp_reqview *q, struct host_view *v)
{
	if (v->len < 0)
		host_of(q, v);
	size_t n = (size_t)v->len, plen = strlen(pattern);
	if (pattern[0] == '*') /* ".example.com" must end a longer name */
		return n > plen - 1 && sp_ascii_ieq(v->p + n - (plen - 1), pattern + 1, plen - 1);
	return n == plen && sp_ascii_ieq(v->p, pattern, n);
}

/* Inline in both of sp_router_match's loops: a call per route tried costs
 * more than a route's checks. */
__attribute__((always_inline)) static inline int
route_matches(const struct sp_route *r, const struct sp_reqview *q, struct host_view *host)
{
	const struct sp_match *m = &r->match;
	if (m->host && !host_matches(m->host, q, host))
		return 0;
	if (m->path && (q->path_len != strlen(m->path) || memcmp(q->path, m->path, q->path_len)))
		return 0;
	if (m->path_prefix &&
	    !sp_path_has_prefix(m->path_prefix, m->prefix_len, q->path, q->path_len))
		return 0;
	if (!method_matches(m, q->method))
		return 0;
	if (m->nclient_ip &&
	    !(q->client_addr && sp_cidr_has(m->client_ip, m->nclient_ip, q->client_addr)))
		return 0;
	if (m->path_regex && ((m->regex_prefix && (q->path_len < m->regex_prefix_len ||
						    memcmp(q->path, m->regex_prefix,
							   m->regex_prefix_len) != 0)) ||
			      !regex_whole(&m->regex, q->path, q->path_len)))
		return 0;
	return (m->nheaders == 0 || headers_match(m, q)) && query_matches(m, q);
}

int sp_route_matches(const struct sp_route *r, const struct sp_reqview *q)
{
	struct host_view host = {NULL, -1};
	return route_matches(r, q, &host);
}

/* The index: routes grouped by the first path segment every path they match
 * has ("/api/users" and path_prefix "/api" both give "api"); the others
 * (no path condition, path_prefix "/", a path_regex without a literal first
 * segment) are "any" and are tried with each group, in file order. */
struct seg_slot {
	uint32_t off, len; /* the segment's text in names */
	uint32_t first, count; /* its routes in ids */
	uint32_t hash;
	int used;
};

struct sp_route_index {
	struct seg_slot *slots;
	size_t mask;
	uint32_t *ids; /* route positions, ascending within each group */
	uint32_t *any, nany;
	char *names;
};

static uint32_t seg_hash(const char *p, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)p[i]) * 16777619u;
	return h;
}

/* The first segment of every path s admits, s being "/seg" followed by the
 * end or '/' (whole), or by anything (a literal start): 1 and *seg, *len, or
 * 0 when it is not known. */
static int anchor_of(const char *s, size_t n, int whole, const char **seg, size_t *len)
{
	if (!s || n < 2 || s[0] != '/')
		return 0;
	const char *slash = memchr(s + 1, '/', n - 1);
	if (!slash && !whole)
		return 0; /* "/sv" could start "/svc" */
	*seg = s + 1;
	*len = slash ? (size_t)(slash - s - 1) : n - 1;
	return 1;
}

static int route_anchor(const struct sp_match *m, const char **seg, size_t *len)
{
	if (m->path) {
		size_t n = strlen(m->path);
		if (n == 1 && m->path[0] == '/') {
			*seg = m->path + 1; /* "/" itself: the empty segment */
			*len = 0;
			return 1;
		}
		if (anchor_of(m->path, n, 1, seg, len))
			return 1;
	}
	/* a prefix is followed by the end or '/' (sp_path_has_prefix); a
	 * regex all literal ("/api") matches its text alone, as a path does */
	int literal = m->path_regex && m->regex_prefix_len == strlen(m->path_regex);
	return anchor_of(m->path_prefix, m->prefix_len, 1, seg, len) ||
	       anchor_of(m->regex_prefix, m->regex_prefix_len, literal, seg, len);
}

static struct seg_slot *seg_find(const struct sp_route_index *ix, const char *seg, size_t len,
				 uint32_t h)
{
	for (size_t i = h & ix->mask;; i = (i + 1) & ix->mask) {
		struct seg_slot *s = &ix->slots[i];
		if (!s->used || (s->hash == h && s->len == len &&
				 memcmp(ix->names + s->off, seg, len) == 0))
			return s;
	}
}

struct sp_route_index *sp_route_index_build(const struct sp_route *routes, size_t n)
{
	if (n < SP_ROUTE_INDEX_MIN)
		return NULL;
	struct sp_route_index *ix = calloc(1, sizeof(*ix));
	size_t cap = 8, text = 1;
	while (cap < 2 * n + 2)
		cap *= 2;
	for (size_t i = 0; i < n; i++)
		text += (routes[i].match.path ? strlen(routes[i].match.path) : 0) +
			routes[i].match.prefix_len + routes[i].match.regex_prefix_len;
	if (ix) {
		ix->mask = cap - 1;
		ix->slots = calloc(cap, sizeof(*ix->slots));
		ix->ids = malloc((n + 1) * sizeof(*ix->ids));
		ix->any = malloc((n + 1) * sizeof(*ix->any));
		ix->names = malloc(text);
	}
	if (!ix || !ix->slots || !ix->ids || !ix->any || !ix->names || n > UINT32_MAX / 2) {
		sp_route_index_free(ix);
		return NULL;
	}
	/* count each group's routes, then place them in file order */
	uint32_t used = 0, at = 0;
	for (size_t i = 0; i < n; i++) {
		const char *seg;
		size_t len;
		if (!route_anchor(&routes[i].match, &seg, &len)) {
			ix->any[ix->nany++] = (uint32_t)i;
			continue;
		}
		uint32_t h = seg_hash(seg, len);
		struct seg_slot *s = seg_find(ix, seg, len, h);
		if (!s->used) {
			*s = (struct seg_slot){used, (uint32_t)len, 0, 0, h, 1};
			memcpy(ix->names + used, seg, len);
			used += (uint32_t)len;
		}
		s->count++;
	}
	for (size_t k = 0; k <= ix->mask; k++)
		if (ix->slots[k].used) {
			ix->slots[k].first = at;
			at += ix->slots[k].count;
			ix->slots[k].count = 0; /* counted again as placed */
		}
	for (size_t i = 0; i < n; i++) {
		const char *seg;
		size_t len;
		if (route_anchor(&routes[i].match, &seg, &len)) {
			struct seg_slot *s = seg_find(ix, seg, len, seg_hash(seg, len));
			ix->ids[s->first + s->count++] = (uint32_t)i;
		}
	}
	return ix;
}

void sp_route_index_free(struct sp_route_index *ix)
{
	if (!ix)
		return;
	free(ix->slots);
	free(ix->ids);
	free(ix->any);
	free(ix->names);
	free(ix);
}

/* The routes of the path's first segment merged with the "any" routes, in
 * file order (a large table: kept out of sp_router_match's short loop). */
__attribute__((noinline)) static const struct sp_route *
match_indexed(const struct sp_route *routes, const struct sp_route_index *ix,
	      const struct sp_reqview *q)
{
	struct host_view host = {NULL, -1};
	const char *seg = q->path + 1, *slash = memchr(seg, '/', q->path_len - 1);
	size_t len = slash ? (size_t)(slash - seg) : q->path_len - 1;
	const struct seg_slot *s = seg_find(ix, seg, len, seg_hash(seg, len));
	const uint32_t *a = s->used ? ix->ids + s->first : NULL, *b = ix->any;
	const uint32_t *aend = a ? a + s->count : NULL, *bend = ix->any + ix->nany;
	while (a != aend || b != bend) {
		uint32_t i = b == bend || (a != aend && *a < *b) ? *a++ : *b++;
		if (route_matches(&routes[i], q, &host))
			return &routes[i];
	}
	return NULL;
}

const struct sp_route *sp_router_match(const struct sp_route *routes, size_t n,
				       const struct sp_route_index *ix, const struct sp_reqview *q)
{
	if (ix && q->path_len > 0 && q->path[0] == '/')
		return match_indexed(routes, ix, q);
	struct host_view host = {NULL, -1}; /* one look for all the routes */
	for (size_t i = 0; i < n; i++)
		if (route_matches(&routes[i], q, &host))
			return &routes[i];
	return NULL;
}

/* Does host pattern a admit every host b admits (NULL: any)? */
static int host_covers(const char *a, const char *b)
{
	if (!a)
		return 1;
	if (!b)
		return 0;
	if (strcmp(a, b) == 0)
		return 1;
	/* *.example.com covers a.example.com and *.a.example.com */
	size_t la = strlen(a), lb = strlen(b);
	return a[0] == '*' && lb > la - 1 && strcmp(b + lb - (la - 1), a + 1) == 0 &&
	       (b[0] != '*' || lb > la);
}

/* Does the path condition of a admit every path that b's admits? */
static int path_covers(const struct sp_match *a, const struct sp_match *b)
{
	if (a->path_regex && !(b->path_regex && strcmp(a->path_regex, b->path_regex) == 0))
		return 0;
	if (a->path) {
		if (!b->path || strcmp(a->path, b->path) != 0)
			return 0;
	}
	if (a->path_prefix) {
		if (b->path)
			return sp_path_has_prefix(a->path_prefix, a->prefix_len, b->path, strlen(b->path));
		if (b->path_prefix)
			return sp_path_has_prefix(a->path_prefix, a->prefix_len, b->path_prefix,
						  b->prefix_len) ||
			       (a->path_prefix[a->prefix_len - 1] == '/' &&
				strncmp(a->path_prefix, b->path_prefix, a->prefix_len) == 0);
		if (b->path_regex && b->regex_prefix) {
			/* every match starts with the regex's literal prefix: a
			 * prefix that covers it at a segment boundary covers all */
			const char *r = b->regex_prefix;
			size_t n = b->regex_prefix_len;
			return n >= a->prefix_len && strncmp(r, a->path_prefix, a->prefix_len) == 0 &&
			       (a->path_prefix[a->prefix_len - 1] == '/' ||
				(n > a->prefix_len && r[a->prefix_len] == '/'));
		}
		return 0;
	}
	return 1;
}

static int kv_covers(const struct sp_kv *a, size_t na, const struct sp_kv *b, size_t nb,
		     int names_fold_case)
{
	for (size_t i = 0; i < na; i++) {
		int ok = 0;
		for (size_t j = 0; j < nb && !ok; j++) {
			int same = names_fold_case ? strcasecmp(a[i].name, b[j].name) == 0
						   : strcmp(a[i].name, b[j].name) == 0;
			ok = same && (a[i].any || (!b[j].any && strcmp(a[i].value, b[j].value) == 0));
		}
		if (!ok)
			return 0;
	}
	return 1;
}

/* Does a's list of address blocks hold every address in b's (none: any)? */
static int client_covers(const struct sp_match *a, const struct sp_match *b)
{
	if (!a->nclient_ip)
		return 1;
	if (!b->nclient_ip)
		return 0;
	for (size_t j = 0; j < b->nclient_ip; j++) {
		int in = 0;
		for (size_t i = 0; i < a->nclient_ip && !in; i++)
			in = b->client_ip[j].bits >= a->client_ip[i].bits &&
			     sp_cidr_has(&a->client_ip[i], 1, &b->client_ip[j].ip);
		if (!in)
			return 0;
	}
	return 1;
}

int sp_route_rollout_idle(const struct sp_route *r)
{
	return r->has_rollout && r->rollout.backend >= 0 && r->rollout.backend == r->backend;
}

int sp_route_shadow_idle(const struct sp_route *r)
{
	return r->has_shadow && !r->has_rollout && r->shadow.backend >= 0 &&
	       r->shadow.backend == r->backend;
}

int sp_route_covers(const struct sp_route *earlier, const struct sp_route *later)
{
	const struct sp_match *a = &earlier->match, *b = &later->match;
	if (a->nmethods) {
		if (!b->nmethods)
			return 0;
		for (size_t i = 0; i < b->nmethods; i++) {
			if (!method_matches(a, b->methods[i]))
				return 0;
		}
	}
	return host_covers(a->host, b->host) && path_covers(a, b) && client_covers(a, b) &&
	       kv_covers(a->headers, a->nheaders, b->headers, b->nheaders, 1) &&
	       kv_covers(a->query, a->nquery, b->query, b->nquery, 0);
}

static void kv_free(struct sp_kv *kv, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(kv[i].name);
		free(kv[i].value);
	}
	free(kv);
}

void sp_route_deinit(struct sp_route *r)
{
	struct sp_match *m = &r->match;
	free(r->name);
	free(m->host);
	free(m->path);
	free(m->path_prefix);
	if (m->path_regex)
		regfree(&m->regex);
	free(m->path_regex);
	free(m->regex_prefix);
	for (size_t i = 0; i < m->nmethods; i++)
		free(m->methods[i]);
	free(m->methods);
	kv_free(m->headers, m->nheaders);
	kv_free(m->query, m->nquery);
	free(m->client_ip);
	sp_return_deinit(&r->ret);
	for (size_t i = 0; i < r->rollout.nsticky; i++)
		free(r->rollout.sticky[i].name);
	free(r->rollout.cohort);
	free(r->rollout.cookie_path);
	free(r->rollout.cookie_domain);
	free(r->rollout.cookie_attrs);
	free(r->rollout.shadow_salt);
	free(r->rollout.guard.steps_bp);
	struct sp_shadow_cfg *sh = &r->shadow;
	char **lists[] = {sh->methods, sh->headers, sh->ignore_json, sh->redact_json};
	size_t counts[] = {sh->nmethods, sh->nheaders, sh->nignore, sh->nredact};
	for (size_t l = 0; l < 4; l++) {
		for (size_t i = 0; i < counts[l]; i++)
			free(lists[l][i]);
		free(lists[l]);
	}
	memset(r, 0, sizeof(*r));
}

struct query_get {
	const char *name;
	struct sp_buf *out;
	int nonempty;
	int found;
};

static int query_get_cb(void *arg, const char *name, size_t nlen, const char *value,
			size_t vlen)
{
	struct query_get *g = arg;
	if (!name_is(name, nlen, g->name) || (g->nonempty && vlen == 0))
		return 0;
	g->found = sp_buf_add(g->out, value, vlen) == 0;
	return 1;
}

int sp_query_get(const char *qs, size_t len, const char *name, int nonempty, struct sp_buf *out)
{
	struct sp_buf scratch;
	struct query_get g = {name, out, nonempty, 0};
	sp_buf_init(&scratch);
	sp_buf_reset(out);
	query_each(qs, len, &scratch, query_get_cb, &g);
	sp_buf_deinit(&scratch);
	return g.found;
}
