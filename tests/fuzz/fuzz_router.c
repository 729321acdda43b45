/* Fuzzes routing decisions against one fixed configuration: path
 * normalisation, then sp_decide with fuzzed method, path, query, headers,
 * cookies and client address. The decision must be the first matching route,
 * sticky buckets must be stable, the rollout split must follow the bucket,
 * and a route the loader calls unreachable (sp_route_covers) must really be
 * unreachable. Two routes have a host condition (a "Host: ..." line).
 *
 * Input: lines. Line 1: 1 byte picking the client address, then the method
 * (empty = GET). Line 2: the request target (path?query). Other lines:
 * headers "Name: value" (e.g. "Cookie: uid=42", "X-User-Id: 7"), or once
 * "~REGEX": a one-route config with that path_regex, loaded for this input
 * and checked against regexec. */
#include <regex.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"
#include "pathnorm.h"

/* Covers every kind of condition and sticky key; some routes are
 * deliberately covered by earlier ones to test sp_route_covers. */
static const char conf_text[] =
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"
	"workers = 1;\n"
	"backends = {\n"
	"  legacy = { url = \"http://127.0.0.1:9001\"; };\n"
	"  modern = { url = \"http://127.0.0.1:9002/\"; };\n"
	"  third = { url = \"http://[::1]:9003\"; };\n"
	"};\n"
	"default_backend = \"legacy\";\n"
	"routes = (\n"
	"  { name = \"host-users\"; backend = \"third\";\n"
	"    match = { host = \"api.example.com\"; path_prefix = \"/api/users/2\"; }; },\n"
	"  { name = \"users\"; backend = \"modern\";\n"
	"    match = { path_prefix = \"/api/users\"; methods = [\"GET\", \"HEAD\"]; }; },\n"
	"  { name = \"users-one\"; backend = \"third\";\n"
	"    match = { path_prefix = \"/api/users/1\"; methods = [\"GET\"]; }; },\n"
	"  { name = \"orders\"; match = { path_prefix = \"/api/orders/\"; };\n"
	"    backend = \"legacy\";\n"
	"    rollout = { backend = \"modern\"; percent = 25.0; sticky = \"cookie:uid\"; }; },\n"
	"  { name = \"items\"; backend = \"modern\";\n"
	"    match = { path_regex = \"/api/items/[0-9]+(/details)?|/api/i\"; };\n"
	"    rollout = { backend = \"third\"; percent = 50.5;\n"
	"                sticky = \"header:X-User-Id\"; }; },\n"
	"  { name = \"items-again\"; backend = \"third\";\n"
	"    match = { path_regex = \"/api/items/[0-9]+(/details)?|/api/i\";\n"
	"              methods = [\"POST\"]; headers = { X-Beta = \"*\"; }; }; },\n"
	"  { name = \"beta\"; backend = \"third\";\n"
	"    match = { path_prefix = \"/app\"; headers = { x-beta = \"1\"; X-Env = \"*\"; }; }; "
	"},\n"
	"  { name = \"beta-exact\"; backend = \"modern\";\n"
	"    match = { path = \"/app/home\";\n"
	"              headers = { X-BETA = \"1\"; X-Env = \"prod\"; }; }; },\n"
	"  { name = \"search\"; backend = \"modern\";\n"
	"    match = { path = \"/search\"; query = { q = \"*\"; lang = \"en\"; }; };\n"
	"    rollout = { backend = \"third\"; percent = 10.0; sticky = \"query:session\";\n"
	"                cohort = \"s1\"; }; },\n"
	"  { name = \"ip-internal\"; backend = \"third\";\n"
	"    match = { path_prefix = \"/ip\"; client_ip = [\"10.0.0.0/8\", \"2001:db8::/32\"]; }; },\n"
	"  { name = \"ip-one\"; backend = \"modern\";\n"
	"    match = { path_prefix = \"/ip/one\";\n"
	"              client_ip = [\"10.0.0.1\", \"::ffff:10.1.0.0/120\"]; }; },\n"
	"  { name = \"ip\"; backend = \"legacy\";\n"
	"    match = { path_prefix = \"/ip\"; methods = [\"POST\", \"PUT\"]; };\n"
	"    rollout = { backend = \"modern\"; percent = 100.0; sticky = \"client_ip\"; }; },\n"
	"  { name = \"fallback\"; match = { path_prefix = \"/fb\"; }; backend = \"legacy\";\n"
	"    rollout = { backend = \"modern\"; percent = 40.0;\n"
	"                sticky = [\"header:X-User-Id\", \"cookie:sid\", \"query:u\", \"client_ip\"]; }; },\n"
	"  { name = \"wild\"; match = { host = \"*.Example.com\"; methods = [\"DELETE\"]; };\n"
	"    backend = \"third\"; },\n"
	"  { name = \"root\"; match = { path = \"/\"; }; backend = \"modern\";\n"
	"    rollout = { backend = \"third\"; percent = 0.0; }; },\n"
	"  { name = \"static\"; match = { path_prefix = \"/static/\"; }; backend = \"third\";\n"
	"    rollout = { backend = \"modern\"; percent = 33.33; }; },\n"
	"  { name = \"files\"; match = { path_regex = \"/files/[a-z]+\\\\.(png|jpe?g)\"; };\n"
	"    backend = \"third\"; }\n"
	");\n";

static struct sp_config *cfg;

static void init(void)
{
	struct sp_diag d;
	sp_diag_init(&d);
	cfg = sp_config_load_string(conf_text, "router.conf", &d);
	FUZZ_CHECK(cfg, "the harness's config is refused:\n%s", d.text.data ? d.text.data : "");
	sp_diag_deinit(&d);
}

static const char *const client_ips[] = {"192.0.2.7", "2001:db8::1", "10.0.0.1", ""};

#define MAX_HDRS 16

static void check_decision(const struct sp_reqview *q, const struct sp_decision *d)
{
	const struct sp_route *r = d->route;
	size_t first = cfg->nroutes;
	for (size_t i = 0; i < cfg->nroutes && first == cfg->nroutes; i++)
		if (sp_route_matches(&cfg->routes[i], q))
			first = i;
	FUZZ_CHECK(r ? r == &cfg->routes[first] : first == cfg->nroutes,
		   "decided route %s, first match %s", r ? r->name : "(default)",
		   first < cfg->nroutes ? cfg->routes[first].name : "(none)");
	if (!r) {
		FUZZ_CHECK(d->backend == cfg->default_backend && !d->rolled, "default decision");
		return;
	}
	if (!r->has_rollout) {
		FUZZ_CHECK(d->backend == r->backend && !d->rolled && !d->to_rollout,
			   "route %s without rollout", r->name);
		return;
	}
	FUZZ_CHECK(d->rolled && d->bucket < 10000, "route %s bucket %u", r->name, d->bucket);
	/* the keyed sticky key the request carries decides, hashed alone */
	const struct sp_rollout *ro = &r->rollout;
	struct sp_buf scratch;
	sp_buf_init(&scratch);
	size_t keyed = ro->nsticky;
	const char *key = NULL;
	size_t klen = 0;
	for (size_t i = 0; i < ro->nsticky && keyed == ro->nsticky; i++)
		if (sp_sticky_key(&ro->sticky[i], q, &scratch, &key, &klen))
			keyed = i;
	if (keyed < ro->nsticky)
		FUZZ_CHECK(d->sticky == (int)keyed + 1 &&
				   d->bucket == sp_rollout_bucket(ro->cohort, key, klen),
			   "route %s: sticky %d, bucket %u, want key %zu", r->name, d->sticky,
			   d->bucket, keyed + 1);
	else
		FUZZ_CHECK(d->sticky == 0 || d->assigned[0], "route %s: sticky %d without a key",
			   r->name, d->sticky);
	sp_buf_deinit(&scratch);
	FUZZ_CHECK(d->to_rollout == (d->bucket < r->rollout.percent_bp), "route %s bucket %u of %u",
		   r->name, d->bucket, r->rollout.percent_bp);
	FUZZ_CHECK(d->backend == (d->to_rollout ? r->rollout.backend : r->backend),
		   "route %s backend %d", r->name, d->backend);
}

/* What "path_regex" means (docs/configuration.md): the compiled regex
 * matches the whole normalised path. Checked against sp_route_matches, which
 * may take shortcuts (a literal prefix before regexec); the other conditions
 * are evaluated by sp_route_matches itself on a copy without the regex. */
static int regex_whole(const regex_t *re, const char *path, size_t len)
{
	regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)len};
	return regexec(re, path, 1, &m, REG_STARTEND) == 0 && m.rm_so == 0 &&
	       (size_t)m.rm_eo == len;
}

static void check_regex_routes(const struct sp_route *routes, size_t n, const struct sp_reqview *q)
{
	for (size_t i = 0; i < n; i++) {
		const struct sp_route *r = &routes[i];
		if (!r->match.path_regex)
			continue;
		struct sp_route rest = *r;
		rest.match.path_regex = NULL;
		int want = sp_route_matches(&rest, q) &&
			   regex_whole(&r->match.regex, q->path, q->path_len);
		FUZZ_CHECK(sp_route_matches(r, q) == want,
			   "route %s (path_regex \"%s\") on \"%s\": %d, want %d", r->name,
			   r->match.path_regex, q->path, !want, want);
	}
}

/* A route whose path_regex comes from the input: the regex shortcuts must
 * agree with regexec for any pattern, not only the fixed config's. */
static void check_own_regex(const char *re, size_t len, const struct sp_reqview *q)
{
	struct sp_buf text;
	struct sp_diag d;
	sp_buf_init(&text);
	sp_buf_adds(&text,
		    "listen = ( { address = \"127.0.0.1:8080\"; } );\n"
		    "backends = { a = { url = \"http://127.0.0.1:9001\"; }; };\n"
		    "default_backend = \"a\";\n"
		    "routes = ( { name = \"own\"; backend = \"a\"; match = { path_regex = \"");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)re[i];
		if (c < 0x20 || c == 0x7f)
			goto out; /* not writable in a libconfig string as is */
		if (c == '\\' || c == '"')
			sp_buf_addc(&text, '\\');
		sp_buf_addc(&text, (char)c);
	}
	/* and enough routes after it for the routes' index (SP_ROUTE_INDEX_MIN) */
	sp_buf_adds(&text, "\"; }; }");
	for (int i = 0; i < SP_ROUTE_INDEX_MIN; i++)
		sp_buf_printf(&text, ", { name = \"f%d\"; backend = \"a\"; match = { %s\"/api/f%d\"; }; }",
			      i, i % 2 ? "path = " : "path_prefix = ", i);
	sp_buf_adds(&text, " );\n");
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load_string(text.data, "own.conf", &d);
	if (c) {
		FUZZ_CHECK(c->nroutes == 1 + SP_ROUTE_INDEX_MIN && c->routes[0].match.path_regex &&
				   c->route_index,
			   "own route not loaded");
		check_regex_routes(c->routes, c->nroutes, q);
		/* the index by first segment keeps the route when its regex matches */
		FUZZ_CHECK(sp_router_match(c->routes, c->nroutes, c->route_index, q) ==
				   sp_router_match(c->routes, c->nroutes, NULL, q),
			   "indexed routing of path_regex \"%s\" on \"%s\"",
			   c->routes[0].match.path_regex, q->path);
		sp_config_unref(&c);
	}
	sp_diag_deinit(&d);
out:
	sp_buf_deinit(&text);
}

/* sp_route_covers(a, b) promises that b never matches where a does not. */
static void check_covers(const struct sp_reqview *q)
{
	for (size_t j = 0; j < cfg->nroutes; j++) {
		if (!sp_route_matches(&cfg->routes[j], q))
			continue;
		for (size_t i = 0; i < cfg->nroutes; i++)
			if (i != j && sp_route_covers(&cfg->routes[i], &cfg->routes[j]))
				FUZZ_CHECK(sp_route_matches(&cfg->routes[i], q),
					   "route %s covers %s, but only %s matches %s",
					   cfg->routes[i].name, cfg->routes[j].name,
					   cfg->routes[j].name, q->path);
	}
}

static const char *next_line(const char **p, const char *end, size_t *len)
{
	const char *s = *p;
	const char *nl = memchr(s, '\n', (size_t)(end - s));
	const char *e = nl ? nl : end;
	*len = (size_t)(e - s);
	*p = nl ? nl + 1 : end;
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!cfg)
		init();
	/* Own copy, NUL-terminated: the method is compared as a C string. */
	char *buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	const char *p = buf, *end = buf + size;
	size_t len;

	const char *line = next_line(&p, end, &len);
	const char *ip = client_ips[len ? (unsigned char)line[0] % 4 : 0];
	struct sp_ip addr;
	int addr_known = sp_ip_parse(ip, strlen(ip), &addr) == 0;
	char method[32] = "GET";
	if (len > 1)
		snprintf(method, sizeof(method), "%.*s", (int)(len - 1), line + 1);

	size_t tlen;
	const char *target = next_line(&p, end, &tlen);
	const char *qm = memchr(target, '?', tlen);
	size_t plen = qm ? (size_t)(qm - target) : tlen;

	struct sp_hdr h[MAX_HDRS];
	size_t nh = 0;
	const char *own_re = NULL;
	size_t own_len = 0;
	while (p < end && nh < MAX_HDRS) {
		line = next_line(&p, end, &len);
		if (len && line[0] == '~' && !own_re) {
			own_re = line + 1; /* "~REGEX": a route of the input's own */
			own_len = len - 1;
			continue;
		}
		const char *colon = memchr(line, ':', len);
		if (!colon)
			continue;
		const char *v = colon + 1, *ve = line + len;
		while (v < ve && *v == ' ')
			v++;
		h[nh++] = (struct sp_hdr){line, (size_t)(colon - line), v, (size_t)(ve - v)};
	}

	struct sp_buf path, scratch;
	sp_buf_init(&path);
	sp_buf_init(&scratch);
	int rc = sp_path_normalize(target, plen, &path);
	if (rc == SP_PATH_OK) {
		/* No '?' means no query (NULL), as session.c passes it; while
		 * router-null-query is known, "" stands in for NULL (same meaning). */
		const char *query = qm ? qm + 1 : fuzz_known("router-null-query") ? "" : NULL;
		struct sp_reqview q = {method, path.data, path.len, query, qm ? tlen - plen - 1 : 0,
				       h,      nh,	  ip,	 addr_known ? &addr : NULL};
		struct sp_decision d1, d2;
		uint64_t rng1 = 1, rng2 = 2;
		sp_decide(cfg->routes, cfg->nroutes, cfg->route_index, cfg->default_backend, &q,
			  &rng1, &scratch, &d1);
		check_decision(&q, &d1);
		sp_decide(cfg->routes, cfg->nroutes, cfg->route_index, cfg->default_backend, &q,
			  &rng2, &scratch, &d2);
		check_decision(&q, &d2);
		/* A sticky key is the same user every time, whatever the dice say. */
		FUZZ_CHECK(d1.route == d2.route && d1.sticky == d2.sticky &&
				   (!d1.sticky ||
				    (d1.bucket == d2.bucket && d1.backend == d2.backend)),
			   "sticky decision changed: bucket %u then %u", d1.bucket, d2.bucket);
		check_covers(&q);
		check_regex_routes(cfg->routes, cfg->nroutes, &q);
		if (own_re && !memchr(own_re, '\0', own_len) &&
		    !fuzz_regex_too_costly(own_re, own_len))
			check_own_regex(own_re, own_len, &q);
	}
	sp_buf_deinit(&scratch);
	sp_buf_deinit(&path);
	free(buf);
	return 0;
}
