/* Sticky percentage rollouts: the documented bucket hash and the decision of
 * which side serves a request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

/* FNV-1a, 32 bit: offset basis 2166136261, prime 16777619. Chosen because any
 * other tool can reproduce it in a few lines (docs/configuration.md). */
static uint32_t fnv1a(uint32_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 16777619u;
	}
	return h;
}

uint32_t sp_rollout_hash(const char *cohort, const char *key, size_t key_len)
{
	uint32_t h = fnv1a(2166136261u, cohort, strlen(cohort));
	h = fnv1a(h, ":", 1);
	return fnv1a(h, key, key_len);
}

uint32_t sp_rollout_bucket(const char *cohort, const char *key, size_t key_len)
{
	return sp_rollout_hash(cohort, key, key_len) % 10000u;
}

int sp_sticky_parse(const char *spec, struct sp_sticky *out, const char **why)
{
	static const struct {
		const char *prefix;
		enum sp_sticky_kind kind;
	} kinds[] = {{"header:", SP_STICKY_HEADER}, {"cookie:", SP_STICKY_COOKIE}, {"query:", SP_STICKY_QUERY}};

	out->kind = SP_STICKY_NONE;
	out->name = NULL;
	if (strcmp(spec, "client_ip") == 0) {
		out->kind = SP_STICKY_CLIENT_IP;
		return 0;
	}
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		size_t plen = strlen(kinds[i].prefix);
		if (strncmp(spec, kinds[i].prefix, plen) != 0)
			continue;
		const char *name = spec + plen;
		if (!*name) {
			*why = "missing name after ':' (e.g. \"header:X-User-Id\")";
			return -1;
		}
		for (const char *c = name; *c; c++) {
			if (*c <= ' ' || *c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", *c)) {
				*why = "name contains a character not allowed in a token";
				return -1;
			}
		}
		out->name = strdup(name);
		if (!out->name) {
			*why = "out of memory";
			return -1;
		}
		out->kind = kinds[i].kind;
		return 0;
	}
	*why = "must be \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"client_ip\"";
	return -1;
}

const char *sp_sticky_text(const struct sp_sticky *st, char *buf, size_t len)
{
	static const char *const kinds[] = {"", "header:", "cookie:", "query:", "client_ip"};
	snprintf(buf, len, "%s%s", kinds[st->kind], st->name ? st->name : "");
	return buf;
}

/* Finds cookie `name` in a Cookie header value ("a=1; b=2"). */
static int cookie_find(const char *v, size_t len, const char *name, const char **val, size_t *vlen)
{
	size_t nlen = strlen(name);
	const char *p = v, *end = v + len;
	while (p < end) {
		while (p < end && (*p == ' ' || *p == '\t' || *p == ';'))
			p++;
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *pe = semi ? semi : end;
		const char *eq = memchr(p, '=', (size_t)(pe - p));
		if (eq && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
			const char *s = eq + 1, *e = pe;
			while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if (e - s >= 2 && *s == '"' && e[-1] == '"') {
				s++;
				e--;
			}
			if (e > s) { /* an empty one counts as absent: look further, as
				      * the next Cookie header would be looked at */
				*val = s;
				*vlen = (size_t)(e - s);
				return 1;
			}
		}
		p = pe;
	}
	return 0;
}

int sp_sticky_key(const struct sp_sticky *s, const struct sp_reqview *q, struct sp_buf *scratch,
		  const char **key, size_t *len)
{
	switch (s->kind) {
	case SP_STICKY_HEADER: /* its first non-empty field, as a cookie's value */
		for (size_t i = 0; i < q->nheaders; i++)
			if (sp_hdr_name_is(&q->headers[i], s->name) && q->headers[i].value_len > 0) {
				*key = q->headers[i].value;
				*len = q->headers[i].value_len;
				return 1;
			}
		return 0;
	case SP_STICKY_COOKIE:
		for (size_t i = 0; i < q->nheaders; i++)
			if (sp_hdr_name_is(&q->headers[i], "Cookie") &&
			    cookie_find(q->headers[i].value, q->headers[i].value_len, s->name, key, len) &&
			    *len > 0)
				return 1;
		return 0;
	case SP_STICKY_QUERY:
		if (!q->query || !sp_query_get(q->query, q->query_len, s->name, 1, scratch))
			return 0;
		*key = scratch->data;
		*len = scratch->len;
		return 1;
	case SP_STICKY_CLIENT_IP:
		if (!q->client_ip || !*q->client_ip)
			return 0;
		*key = q->client_ip;
		*len = strlen(q->client_ip);
		return 1;
	case SP_STICKY_NONE:
		break;
	}
	return 0;
}

int sp_rollout_key(const struct sp_rollout *ro, const struct sp_reqview *q, struct sp_buf *scratch,
		   const char **key, size_t *len)
{
	for (size_t i = 0; i < ro->nsticky; i++)
		if (sp_sticky_key(&ro->sticky[i], q, scratch, key, len))
			return (int)i + 1;
	return 0;
}

uint64_t sp_rng_next(uint64_t *state)
{
	/* xorshift64*: fast, per-worker, good enough to spread key-less requests. */
	uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

void sp_decide(const struct sp_route *routes, size_t n, const struct sp_route_index *ix,
	       int default_backend, const struct sp_reqview *q, uint64_t *rng,
	       struct sp_buf *scratch, struct sp_decision *out)
{
	memset(out, 0, sizeof(*out));
	out->route = sp_router_match(routes, n, ix, q);
	if (!out->route) {
		out->backend = default_backend;
		return;
	}
	out->backend = out->route->backend;
	if (!out->route->has_rollout)
		return;
	const struct sp_rollout *ro = &out->route->rollout;
	const char *key;
	size_t len;
	out->rolled = 1;
	if ((out->sticky = sp_rollout_key(ro, q, scratch, &key, &len)) != 0) {
		out->bucket = sp_rollout_bucket(ro->cohort, key, len);
	} else if (ro->set_cookie) { /* the last key is its cookie (route_conf.c) */
		/* a key of its own, which the answer's Set-Cookie gives it (the
		 * caller may draw another: sp_decide_assign) */
		uint8_t r[SP_ASSIGNED_KEY / 2];
		uint64_t x = sp_rng_next(rng);
		for (size_t i = 0; i < sizeof(r); i++, x >>= 8)
			r[i] = (uint8_t)x;
		sp_decide_assign(r, out);
		return;
	} else {
		out->bucket = (uint32_t)(sp_rng_next(rng) >> 32) % 10000u;
	}
	if (out->bucket < ro->percent_bp) {
		out->to_rollout = 1;
		out->backend = ro->backend;
	}
}

void sp_decide_assign(const uint8_t random[SP_ASSIGNED_KEY / 2], struct sp_decision *out)
{
	static const char hex[] = "0123456789abcdef";
	const struct sp_rollout *ro = &out->route->rollout;
	for (int i = 0; i < SP_ASSIGNED_KEY / 2; i++) {
		out->assigned[2 * i] = hex[random[i] >> 4];
		out->assigned[2 * i + 1] = hex[random[i] & 15];
	}
	out->assigned[SP_ASSIGNED_KEY] = '\0';
	out->sticky = (int)ro->nsticky; /* the cookie, which the answer sets */
	out->bucket = sp_rollout_bucket(ro->cohort, out->assigned, SP_ASSIGNED_KEY);
	out->to_rollout = out->bucket < ro->percent_bp;
	out->backend = out->to_rollout ? ro->backend : out->route->backend;
}
