/* Parses and checks the `routes` list: match conditions, backends, rollouts,
 * and warns about routes an earlier route makes unreachable. */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_parse.h"
#include "h1.h"
#include "pathnorm.h"

/* A path condition must already be in normalised form, or it could never
 * match a normalised request path. */
char *cfgp_norm_path(struct sp_loader *L, const config_setting_t *m, const char *key,
		     const char *path, const char *else_)
{
	const config_setting_t *where;
	char *p = cfgp_str(L, m, key, path, &where);
	if (!p)
		return NULL;
	struct sp_buf norm;
	sp_buf_init(&norm);
	int rc = sp_path_normalize(p, strlen(p), &norm);
	const char *c = p;
	while (*c > ' ' && *c < 0x7f)
		c++;
	if (*c) { /* no request line carries it (a 400): and it may end up in one */
		ERR(L, where, "%s.%s: \"%s\": only visible ASCII, no spaces or control "
			      "characters (write them percent-encoded: a space is %%20)",
		    path, key, p);
		free(p);
		p = NULL;
	} else if (rc != SP_PATH_OK) {
		ERR(L, where, "%s.%s: \"%s\": %s", path, key, p, sp_path_strerror(rc));
		free(p);
		p = NULL;
	} else if (strpbrk(p, "?#")) { /* a request's path ends before either */
		ERR(L, where, "%s.%s: \"%s\": a path, without a query or a fragment ('?' is %%3F, "
			      "'#' is %%23)",
		    path, key, p);
		free(p);
		p = NULL;
	} else if (strcmp(norm.data, p) != 0) {
		ERR(L, where, "%s.%s: \"%s\" is not normalised and %s; write \"%s\"", path, key,
		    p, else_, norm.data);
		free(p);
		p = NULL;
	}
	sp_buf_deinit(&norm);
	return p;
}

/* A method or header name: one RFC 9110 token. */
static int is_token(const char *s)
{
	return *s && sp_http_is_token(s, strlen(s));
}

/* check(value) returns NULL when fine, else the reason. */
typedef const char *(*strlist_check)(const char *v);

/* key = ["a", "b"]: a malloc'd, NULL-terminated array (caller owns). Returns 1
 * when the setting is present (even if some elements were refused). */
static int load_strlist(struct sp_loader *L, const config_setting_t *g, const char *key,
			const char *path, strlist_check check, const char *example, char ***out,
			size_t *nout)
{
	const config_setting_t *s = config_setting_get_member(g, key);
	if (!s)
		return 0;
	if (!config_setting_is_array(s) && !config_setting_is_list(s)) {
		ERR(L, s, "%s.%s: must be an array of strings: %s", path, key, example);
		return 1;
	}
	int n = config_setting_length(s);
	*out = calloc((size_t)n + 1, sizeof(char *));
	for (int i = 0; i < n && *out; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		const char *v = config_setting_get_string(e);
		const char *why = !v ? "must be a string"
			: cfgp_text_chars(v, 1, NULL) < 0 ? "must be UTF-8 text"
			: check ? check(v) : NULL;
		if (why) {
			ERR(L, e, "%s.%s.[%d]: %s", path, key, i, why);
			continue;
		}
		(*out)[(*nout)++] = strdup(v);
	}
	return 1;
}

static const char *check_method(const char *v)
{
	return is_token(v) ? NULL : "must be a method name such as \"GET\"";
}

/* A methods list: absent (0), or given (1) and then not empty, which would
 * read as "every method" to some and "none" to others. */
static int load_method_list(struct sp_loader *L, const config_setting_t *g, const char *path,
			    const char *example, char ***methods, size_t *nmethods)
{
	if (!load_strlist(L, g, "methods", path, check_method, example, methods, nmethods))
		return 0;
	const config_setting_t *s = config_setting_get_member(g, "methods");
	if ((config_setting_is_array(s) || config_setting_is_list(s)) && config_setting_length(s) == 0)
		ERR(L, s, "%s.methods: must list at least one method: %s (or leave it out)", path,
		    example);
	for (size_t i = 0; i < *nmethods; i++) {
		const char *m = (*methods)[i], *c = m;
		while (*c && !(*c >= 'a' && *c <= 'z'))
			c++;
		if (*c)
			WARN(L, s, "%s.methods.[%zu]: \"%s\": methods are case-sensitive; "
				   "clients send upper case", path, i, m);
		else if (strcmp(m, "CONNECT") == 0)
			WARN(L, s, "%s.methods.[%zu]: \"CONNECT\": never routed (strangler is no "
				   "forward proxy: answered 405)", path, i);
		else if (!sp_h1_method_known(m))
			WARN(L, s, "%s.methods.[%zu]: \"%s\": never routed (a method the HTTP "
				   "parser does not know: answered 501)", path, i, m);
	}
	return 1;
}

/* headers = { Name = "value" | "*"; }  and  query = { name = "value" | "*"; } */
static void load_kv(struct sp_loader *L, const config_setting_t *m, const char *key,
		    const char *path, struct sp_kv **out, size_t *nout)
{
	const config_setting_t *s = config_setting_get_member(m, key);
	if (!s)
		return;
	if (!config_setting_is_group(s)) {
		ERR(L, s, "%s.%s: must be a group: { Name = \"value\"; Other = \"*\"; }", path, key);
		return;
	}
	int n = config_setting_length(s);
	*out = calloc((size_t)n + 1, sizeof(**out));
	for (int i = 0; i < n && *out; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		const char *v = config_setting_get_string(e);
		if (!v) {
			ERR(L, e, "%s.%s.%s: must be a string (\"*\" for any value)", path, key,
			    config_setting_name(e));
			continue;
		}
		struct sp_kv *kv = &(*out)[(*nout)++];
		kv->name = strdup(config_setting_name(e));
		kv->value = strdup(v);
		kv->any = strcmp(v, "*") == 0;
	}
}

/* The literal text a whole-path match of this ERE must start with, so most
 * paths are refused by a memcmp before regexec runs. NULL when the pattern
 * has an alternation (its branches could start differently) or no literal
 * start. A character followed by a quantifier is not part of it. */
static char *literal_prefix(const char *re, size_t *len)
{
	size_t n = 0;
	if (strchr(re, '|'))
		return NULL;
	while (re[n] && !strchr(".[]()*+?{}^$\\", re[n]))
		n++;
	if (n && re[n] && strchr("*?{", re[n]))
		n--; /* "ab*" only promises "a" */
	if (n == 0)
		return NULL;
	*len = n;
	return strndup(re, n);
}

/* The ']' closing the POSIX bracket expression opened at p (or the NUL):
 * a ']' first in the set is a member, and so is anything in "[:alpha:]",
 * "[.x.]" or "[=e=]". */
static const char *bracket_end(const char *p)
{
	const char *q = p + 1;
	if (*q == '^')
		q++;
	if (*q == ']')
		q++;
	for (; *q && *q != ']'; q++)
		if (q[0] == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '=')) {
			const char *e = q + 2;
			while (*e && !(e[0] == q[1] && e[1] == ']'))
				e++;
			if (!*e)
				return e;
			q = e + 1;
		}
	return q;
}

/* What is wrong with the backslash at p, written as PCRE (nginx) would read
 * it, or NULL. A letter escaped is a class only where glibc has one (\w \s
 * \b ...): PCRE's \d would match the letter d, and inside brackets "\" is
 * itself ([\d] is a backslash or a d). Refused, not another route. */
static const char *pcre_escape(const char *p, int in_brackets, char *buf, size_t len)
{
	unsigned char c = (unsigned char)p[1];
	if (!in_brackets && c >= '1' && c <= '9') {
		snprintf(buf, len, "\\%c: a back-reference, not POSIX ERE (glibc's extension "
			 "matches in a time exponential in the path: one request could hold a "
			 "worker for minutes)", c);
		return buf;
	}
	if (!isalpha(c) || (!in_brackets && strchr("wWsSbB", c)))
		return NULL;
	if (in_brackets)
		snprintf(buf, len, "[...\\%c...]: a backslash in brackets is itself in POSIX "
			 "regular expressions, not an escape%s", c, c == 'd' ? ": write 0-9" : "");
	else
		snprintf(buf, len, "\\%c is no escape of POSIX regular expressions (it would "
			 "match the letter %c)%s", c, c,
			 c == 'd' ? ": write [0-9]" : c == 'D' ? ": write [^0-9]" : "");
	return buf;
}

/* What glibc's regcomp builds for a pattern: each copy of a counted
 * repetition, of a group's whole contents, alternatives included. Counts
 * nested in groups multiply ("((a{255}){255}){255}", 22 characters, took
 * gigabytes), and so does a group's size ("(a|a|...|b){999}", 500
 * alternatives in 1,000 characters, took 3.5 GB). *copies: the largest
 * product of counts over the nesting; *size: the atoms once expanded. Both
 * stop growing past cap + 1. Escapes and bracket expressions are skipped
 * as load_regex does, each one atom. -1 when groups nest deeper than this
 * follows. */
#define REGEX_COPIES_MAX 1000
#define REGEX_SIZE_MAX 10000
static int regex_cost(const char *p, unsigned long cap, unsigned long *copies, unsigned long *size)
{
	struct level {
		unsigned long copies, size, last_copies, last_size;
	} stack[32], cur = {1, 0, 1, 0};
	int depth = 0;
	for (; *p; p++) {
		if (*p == '(') {
			if (depth == (int)(sizeof(stack) / sizeof(stack[0])))
				return -1;
			stack[depth++] = cur;
			cur = (struct level){1, 0, 1, 0};
			continue;
		}
		if (*p == ')' && depth > 0) {
			struct level in = cur;
			cur = stack[--depth];
			cur.last_copies = in.copies; /* the group is the atom now */
			cur.last_size = in.size;
			cur.copies = cur.copies > in.copies ? cur.copies : in.copies;
			cur.size += in.size;
		} else if (*p == '{') {
			char *end;
			unsigned long m = strtoul(p + 1, &end, 10), n = m;
			if (*end == ',' && end[1] != '}')
				n = strtoul(end + 1, &end, 10);
			else if (*end == ',')
				n = m + 1, end++; /* {m,}: m copies and a star */
			n = n > cap ? cap + 1 : n;
			unsigned long c = n * cur.last_copies, more = n ? n - 1 : 0;
			cur.copies = cur.copies > c ? cur.copies : c;
			cur.size += more * cur.last_size; /* the atom is counted once already */
			cur.last_copies = c > cap ? cap + 1 : c;
			cur.last_size = n * cur.last_size;
			p = *end == '}' ? end : p;
		} else if (strchr("*+?|", *p)) {
			continue; /* a repetition builds no copy; an alternative, its atoms */
		} else {
			if (*p == '\\' && p[1])
				p++;
			else if (*p == '[' && !*(p = bracket_end(p)))
				break;
			cur.last_copies = 1;
			cur.last_size = 1;
			cur.size++;
		}
		if (cur.copies > cap)
			cur.copies = cap + 1;
		if (cur.size > cap * 10)
			cur.size = cap * 10 + 1;
		if (cur.last_size > cap * 10)
			cur.last_size = cap * 10 + 1;
	}
	*copies = cur.copies;
	*size = cur.size;
	return 0;
}

/* "^(" src ")$", the pattern load_regex compiles. A ')' that closes no
 * group is a character to glibc ("/x)" matches "/x)"): written \) there, it
 * stays one instead of closing the wrapping group ("a)|b" would match any
 * path ending in "b)"). Escapes and bracket expressions are copied whole,
 * as regex_cost reads them. NULL: no memory. */
static char *anchored(const char *src)
{
	struct sp_buf b;
	int depth = 0, rc;
	sp_buf_init(&b);
	rc = sp_buf_adds(&b, "^(");
	for (const char *p = src; *p && rc == 0; p++) {
		const char *end = p;
		if (*p == '\\' && p[1])
			end = p + 1;
		else if (*p == '[' && *(end = bracket_end(p)) == '\0')
			end--; /* regcomp refused it before: not reached */
		if (*p == '(')
			depth++;
		if (*p == ')' && depth == 0) {
			rc = sp_buf_adds(&b, "\\)");
			continue;
		}
		if (*p == ')')
			depth--;
		rc = sp_buf_add(&b, p, (size_t)(end - p + 1));
		p = end;
	}
	if (rc == 0 && sp_buf_adds(&b, ")$") == 0)
		return b.data;
	sp_buf_deinit(&b);
	return NULL;
}

static void load_regex(struct sp_loader *L, const config_setting_t *m, const char *path,
		       struct sp_match *out)
{
	const config_setting_t *where;
	char *src = cfgp_str(L, m, "path_regex", path, &where);
	if (!src)
		return;
	/* glibc's regcomp needs memory exponential in stacked repetitions
	 * ("a++++…"): refuse them, and very long patterns, before compiling */
	const char *why = strlen(src) > 1024 ? "longer than 1024 characters" : NULL;
	char esc[160];
	for (const char *p = src; !why && *p; p++) {
		if (*p == '\\' && p[1]) {
			why = pcre_escape(p, 0, esc, sizeof(esc));
			p++; /* an escaped character */
		} else if (*p == '[') {
			const char *end = bracket_end(p); /* "[+*]" is a set, not repetitions */
			for (const char *b = p + 1; !why && b < end; b++)
				if (*b == '\\')
					why = pcre_escape(b, 1, esc, sizeof(esc));
			p = end;
		}
		else if (strchr("*+?}", p[0]) && p[1] && strchr("*+?{", p[1]))
			why = "a repetition of a repetition (write it once)";
		if (!*p)
			break;
	}
	unsigned long copies = 0, size = 0;
	if (!why && regex_cost(src, REGEX_COPIES_MAX, &copies, &size) < 0)
		why = "groups nested more than 32 deep";
	else if (copies > REGEX_COPIES_MAX)
		why = "counted repetitions ({n}) of more than 1000 copies, nested ones "
		      "multiplied (glibc builds each copy: [^/]{1,1024} alone takes 80 MB)";
	else if (size > REGEX_SIZE_MAX)
		why = "more than 10000 atoms once its counted repetitions are expanded (glibc "
		      "builds each copy of a group whole: (a|b|...){999} with 500 "
		      "alternatives takes gigabytes)";
	if (why) {
		ERR(L, where, "%s.path_regex: \"%s\": %s", path, src, why);
		free(src);
		return;
	}
	/* Checked as written (its errors are the file's), then compiled
	 * anchored, "^(...)$" (a ')' that closes no group escaped, so nothing
	 * escapes the wrapping: anchored()): unanchored, regexec tries a match
	 * from every position of the path, a time quadratic in its length
	 * ("/[a-z/]*[.]json" took 2.6 s for a 60 KB path that does not end so,
	 * 0.05 s for one of 8 KB); anchored, from the first only. */
	int rc = regcomp(&out->regex, src, REG_EXTENDED);
	if (rc == 0) {
		char *whole = anchored(src);
		regfree(&out->regex);
		if (!whole) {
			ERR(L, where, "%s.path_regex: out of memory", path);
			free(src);
			return;
		}
		rc = regcomp(&out->regex, whole, REG_EXTENDED);
		free(whole);
	}
	if (rc != 0) {
		char msg[256];
		regerror(rc, &out->regex, msg, sizeof(msg));
		ERR(L, where, "%s.path_regex: \"%s\": %s", path, src, msg);
		free(src);
		return;
	}
	out->path_regex = src;
	out->regex_prefix = literal_prefix(src, &out->regex_prefix_len);
}

static int is_ipv6(const char *p, size_t n)
{
	char text[INET6_ADDRSTRLEN];
	unsigned char bin[16];
	if (n >= sizeof(text))
		return 0;
	memcpy(text, p, n);
	text[n] = '\0';
	return inet_pton(AF_INET6, text, bin) == 1;
}

/* match.host = "api.example.com" or "*.example.com": a host as a client's
 * Host names it, without a port (any port matches), kept in lower case. */
static char *load_host(struct sp_loader *L, const config_setting_t *s, const char *path)
{
	const config_setting_t *where;
	char *h = cfgp_str(L, s, "host", path, &where);
	if (!h)
		return NULL;
	size_t n = strlen(h);
	size_t len = n > 1 && h[n - 1] == '.' ? n - 1 : n; /* "example.com." is example.com */
	const char *name = len > 2 && strncmp(h, "*.", 2) == 0 ? h + 2 : h;
	size_t nlen = len - (size_t)(name - h);
	const char *close = nlen && name[0] == '[' ? memchr(name, ']', nlen) : NULL;
	const char *after = close ? close : name;
	/* a bracketed address: an IPv6 address, all of it, no wildcard, no dot */
	int literal_ok = !close || (name == h && close == name + nlen - 1 && len == n &&
				    is_ipv6(name + 1, nlen - 2));
	if (!nlen || !sp_http_valid_host(name, nlen) || memchr(name, '*', nlen) ||
	    memchr(after, ':', nlen - (size_t)(after - name)) || name[0] == '.' ||
	    name[nlen - 1] == '.' || memmem(name, nlen, "..", 2) || !literal_ok) {
		ERR(L, where, "%s.host: \"%s\": must be a host name or address without a port "
			      "(any port matches), or *.NAME for the names below NAME",
		    path, h);
		free(h);
		return NULL;
	}
	h[len] = '\0';
	for (char *p = h; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	return h;
}

static void load_match(struct sp_loader *L, const config_setting_t *route, const char *rpath,
		       struct sp_match *m)
{
	static const char *const keys[] = {"host",    "path",    "path_prefix", "path_regex",
					   "methods", "headers", "query",       "client_ip", NULL};
	char path[96];
	const config_setting_t *s = cfgp_group(L, route, "match", rpath,
					       "{ path_prefix = \"/api\"; }", path, sizeof(path));
	if (!s)
		return;
	cfgp_check_keys(L, s, path, keys);
	m->host = load_host(L, s, path);
	m->path = cfgp_norm_path(L, s, "path", path, "would never match");
	m->path_prefix = cfgp_norm_path(L, s, "path_prefix", path, "would never match");
	if (m->path_prefix)
		m->prefix_len = strlen(m->path_prefix);
	load_regex(L, s, path, m);
	load_method_list(L, s, path, "[\"GET\", \"HEAD\"]", &m->methods, &m->nmethods);
	load_kv(L, s, "headers", path, &m->headers, &m->nheaders);
	load_kv(L, s, "query", path, &m->query, &m->nquery);
	cfgp_cidr_list(L, s, "client_ip", path, &m->client_ip, &m->nclient_ip);
}

/* percent = 0..100 with at most two decimals, stored as basis points. */
static void load_percent(struct sp_loader *L, const config_setting_t *s, const char *path,
			 uint32_t *bp_out)
{
	const config_setting_t *p = config_setting_get_member(s, "percent");
	char full[128];
	snprintf(full, sizeof(full), "%s.percent", path);
	if (!p) {
		ERR(L, s, "%s: required", full);
		return;
	}
	if (!cfgp_want_type(L, p, full, CONFIG_TYPE_FLOAT, "a number"))
		return;
	double v = cfgp_number(p);
	double bp = v * 100.0;
	char num[SP_NUM_SIZE];
	if (!(v >= 0.0 && v <= 100.0))
		ERR(L, p, "%s: %s: must be between 0 and 100", full, sp_num(num, v));
	else if (fabs(bp - round(bp)) > 1e-6)
		ERR(L, p, "%s: %s: at most two decimals (the split has 10000 buckets)", full,
		    sp_num(num, v));
	else
		*bp_out = (uint32_t)lround(bp);
}

static void get_rate(struct sp_loader *L, const config_setting_t *g, const char *key,
		     const char *path, double hi, double *out)
{
	const config_setting_t *s = config_setting_get_member(g, key);
	char full[160];
	if (!s)
		return;
	snprintf(full, sizeof(full), "%s.%s", path, key);
	if (!cfgp_want_type(L, s, full, CONFIG_TYPE_FLOAT, "a number"))
		return;
	double v = cfgp_number(s);
	char num[SP_NUM_SIZE];
	if (!(v >= 0 && v <= hi))
		ERR(L, s, "%s: %s: must be between 0 and %g", full, sp_num(num, v), hi);
	else
		*out = v;
}

/* guard = { max_error_rate; max_diff_rate; max_p99_ratio; min_requests;
 *           window_s; steps = [...]; step_interval_s; } */
static void load_guard(struct sp_loader *L, const config_setting_t *ro, const char *rpath,
		       struct sp_guard_cfg *g)
{
	static const char *const keys[] = {"max_error_rate", "max_diff_rate", "max_p99_ratio",
					   "min_requests",   "window_s",      "steps",
					   "step_interval_s", NULL};
	char path[128];
	const config_setting_t *s = cfgp_group(L, ro, "guard", rpath,
					       "{ max_error_rate = 1.0; min_requests = 200; }", path,
					       sizeof(path));
	if (!s)
		return;
	cfgp_check_keys(L, s, path, keys);
	*g = (struct sp_guard_cfg){.enabled = 1, .min_requests = 200, .window_s = 60,
				   .step_interval_s = 600};
	int errors = L->diag->errors;
	get_rate(L, s, "max_error_rate", path, 100, &g->max_error_rate);
	get_rate(L, s, "max_diff_rate", path, 100, &g->max_diff_rate);
	get_rate(L, s, "max_p99_ratio", path, 1000, &g->max_p99_ratio);
	int refused = L->diag->errors > errors; /* a bound given but refused is no missing one */
	cfgp_int_field(L, s, "min_requests", path, 1, 100000000, &g->min_requests);
	cfgp_int_field(L, s, "window_s", path, 5, 86400, &g->window_s);
	cfgp_int_field(L, s, "step_interval_s", path, 1, 30 * 86400, &g->step_interval_s);
	const config_setting_t *st = config_setting_get_member(s, "steps");
	if (!refused && !g->max_error_rate && !g->max_diff_rate && !g->max_p99_ratio)
		WARN(L, s, "%s: no max_error_rate, max_diff_rate or max_p99_ratio: it watches "
			   "nothing%s", path, st ? " and takes its steps whatever happens" : "");
	if (!st)
		return;
	if (!config_setting_is_array(st) && !config_setting_is_list(st)) {
		ERR(L, st, "%s.steps: must be an array of percents: [1, 5, 25, 50, 100]", path);
		return;
	}
	int n = config_setting_length(st);
	if (n == 0) /* as if absent, which says so */
		ERR(L, st, "%s.steps: an empty list: give the percents, [1, 5, 25, 50, 100], or "
			   "leave steps out", path);
	g->steps_bp = calloc((size_t)n + 1, sizeof(*g->steps_bp));
	for (int i = 0; i < n && g->steps_bp; i++) {
		const config_setting_t *e = config_setting_get_elem(st, (unsigned)i);
		double v = cfgp_number(e);
		uint32_t bp = (uint32_t)lround(v * 100);
		if (!(v > 0 && v <= 100) || fabs(v * 100 - round(v * 100)) > 1e-6) {
			ERR(L, e, "%s.steps.[%d]: must be a percent above 0 and at most 100, two decimals",
			    path, i);
			continue;
		}
		if (g->nsteps && bp <= g->steps_bp[g->nsteps - 1]) {
			ERR(L, e, "%s.steps.[%d]: steps must increase", path, i);
			continue;
		}
		g->steps_bp[g->nsteps++] = bp;
	}
}

/* A cookie's Path: '/' then visible ASCII but ';' and ',' (RFC 6265 4.1.1). */
static int cookie_path_ok(const char *p)
{
	size_t n = strlen(p);
	if (n == 0 || n > 256 || p[0] != '/')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (p[i] <= ' ' || p[i] >= 0x7f || p[i] == ';' || p[i] == ',')
			return 0;
	return 1;
}

/* A cookie's Domain: a host name, labels of 1 to 63 letters, digits and
 * '-' (not first or last) between dots, at most 253 characters; not an
 * address with a port. */
static int cookie_domain_ok(const char *d)
{
	size_t n = strlen(d), label = 0;
	if (n == 0 || n > 253)
		return 0;
	for (size_t i = 0; i <= n; i++) {
		char c = d[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || d[i - 1] == '-')
				return 0;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			   (c == '-' && label > 0)) {
			if (++label > 63)
				return 0;
		} else {
			return 0;
		}
	}
	return 1;
}

/* rollout.set_cookie = true, or { max_age_s = N; path = "/"; domain = "x"; }:
 * the attributes of the cookie it sets, written once here. */
static void load_set_cookie(struct sp_loader *L, const config_setting_t *s, const char *path,
			    struct sp_rollout *ro)
{
	static const char *const keys[] = {"max_age_s", "path", "domain", NULL};
	const config_setting_t *sc = config_setting_get_member(s, "set_cookie"), *where;
	char cpath[128];
	ro->cookie_max_age_s = 31536000; /* a year */
	if (!sc)
		return;
	snprintf(cpath, sizeof(cpath), "%s.set_cookie", path);
	if (config_setting_is_group(sc)) {
		ro->set_cookie = 1;
		cfgp_check_keys(L, sc, cpath, keys);
		cfgp_int_field(L, sc, "max_age_s", cpath, 1, 34560000, &ro->cookie_max_age_s);
		ro->cookie_path = cfgp_str(L, sc, "path", cpath, &where);
		if (ro->cookie_path && !cookie_path_ok(ro->cookie_path))
			ERR(L, where, "%s.path: \"%s\": must start with '/', at most 256 visible "
				      "ASCII characters, no ';' or ','", cpath, ro->cookie_path);
		ro->cookie_domain = cfgp_str(L, sc, "domain", cpath, &where);
		if (ro->cookie_domain && !cookie_domain_ok(ro->cookie_domain))
			ERR(L, where, "%s.domain: \"%s\": must be a host name (labels of letters, "
				      "digits and '-' between dots)", cpath, ro->cookie_domain);
	} else if (config_setting_type(sc) == CONFIG_TYPE_BOOL) {
		ro->set_cookie = config_setting_get_bool(sc);
	} else {
		ERR(L, sc, "%s: must be true, false or a group: { max_age_s = 2592000; path = \"/\"; "
			   "domain = \"example.com\"; }", cpath);
		return;
	}
	if (ro->set_cookie &&
	    (!ro->nsticky || ro->sticky[ro->nsticky - 1].kind != SP_STICKY_COOKIE))
		ERR(L, sc, "%s: needs sticky = \"cookie:NAME\", or a list of keys that ends with "
			   "it (the cookie it sets)", cpath);
	if (!ro->cookie_path)
		ro->cookie_path = strdup("/");
	size_t n = 96 + strlen(ro->cookie_path ? ro->cookie_path : "") +
		   (ro->cookie_domain ? strlen(ro->cookie_domain) : 0);
	if (!(ro->cookie_attrs = malloc(n))) {
		ERR(L, sc, "%s: out of memory", cpath);
		return;
	}
	snprintf(ro->cookie_attrs, n, "; Path=%s; Max-Age=%d%s%s; HttpOnly; SameSite=Lax",
		 ro->cookie_path ? ro->cookie_path : "/", ro->cookie_max_age_s,
		 ro->cookie_domain ? "; Domain=" : "", ro->cookie_domain ? ro->cookie_domain : "");
}

/* sticky = "header:X-User-Id", or a list of up to SP_STICKY_MAX keys, the
 * first the request has deciding: ["header:X-User-Id", "client_ip"]. */
static void load_sticky(struct sp_loader *L, const config_setting_t *g, const char *path,
			struct sp_rollout *ro)
{
	char shown[128];
	snprintf(shown, sizeof(shown), "%s.sticky", path);
	const config_setting_t *s = cfgp_strings(
		L, g, "sticky", shown,
		"a key (\"header:X-User-Id\") or a list of keys, the first the request has "
		"deciding: [\"header:X-User-Id\", \"client_ip\"]",
		1);
	if (!s)
		return;
	int list = config_setting_type(s) != CONFIG_TYPE_STRING;
	int n = list ? config_setting_length(s) : 1;
	if (n < 1 || n > SP_STICKY_MAX) {
		ERR(L, s, "%s: %s", shown,
		    n < 1 ? "at least one key (or leave sticky out: a random side per request)"
			  : "at most 4 keys");
		return;
	}
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = list ? config_setting_get_elem(s, (unsigned)i) : s;
		const char *spec = config_setting_get_string(e), *why = NULL;
		char at[128];
		snprintf(at, sizeof(at), list ? "%s.sticky.[%d]" : "%s.sticky", path, i);
		struct sp_sticky *k = &ro->sticky[ro->nsticky];
		if (sp_sticky_parse(spec, k, &why) < 0) {
			ERR(L, e, "%s: \"%s\": %s", at, spec, why);
			continue;
		}
		ro->nsticky++;
		for (size_t j = 0; j + 1 < ro->nsticky && !why; j++)
			if (ro->sticky[j].kind == k->kind &&
			    (k->kind == SP_STICKY_CLIENT_IP ||
			     (k->kind == SP_STICKY_HEADER ? strcasecmp(ro->sticky[j].name, k->name)
							  : strcmp(ro->sticky[j].name, k->name)) == 0))
				why = "listed twice";
			else if (ro->sticky[j].kind == SP_STICKY_CLIENT_IP)
				why = "after client_ip, which every request has: never used";
		if (why)
			ERR(L, e, "%s: \"%s\": %s", at, spec, why);
	}
}

static void load_rollout(struct sp_loader *L, const config_setting_t *route, const char *rpath,
			 struct sp_route *r)
{
	static const char *const keys[] = {"backend", "percent", "sticky", "cohort", "guard",
					   "set_cookie", NULL};
	char path[96];
	const config_setting_t *s = cfgp_group(L, route, "rollout", rpath,
					       "{ backend = \"modern\"; percent = 10.0; }", path,
					       sizeof(path));
	if (!s)
		return;
	cfgp_check_keys(L, s, path, keys);
	r->has_rollout = 1;
	r->rollout.backend = cfgp_backend_ref(L, s, "backend", path, 1);
	if (sp_route_rollout_idle(r))
		WARN(L, s, "%s.backend: " SP_ROLLOUT_IDLE, path);
	load_percent(L, s, path, &r->rollout.percent_bp);
	load_sticky(L, s, path, &r->rollout);
	const config_setting_t *where;
	load_set_cookie(L, s, path, &r->rollout);
	r->rollout.cohort = cfgp_str(L, s, "cohort", path, &where);
	if (where && r->rollout.cohort && !*r->rollout.cohort)
		ERR(L, where, "%s.cohort: must not be empty", path);
	if (!r->rollout.cohort && r->name)
		r->rollout.cohort = strdup(r->name);
	if (r->rollout.cohort) { /* whole, however long the cohort (a fixed buffer cut it) */
		size_t n = strlen(r->rollout.cohort) + sizeof("/shadow");
		if ((r->rollout.shadow_salt = malloc(n)))
			snprintf(r->rollout.shadow_salt, n, "%s/shadow", r->rollout.cohort);
	}
	load_guard(L, s, path, &r->rollout.guard);
}

static const char *check_pointer(const char *v)
{
	if (*v && *v != '/')
		return "must be a JSON Pointer: \"\" or starting with '/'";
	for (const char *t = strchr(v, '~'); t; t = strchr(t + 1, '~'))
		if (t[1] != '0' && t[1] != '1')
			return "'~' must be followed by 0 or 1 (RFC 6901: ~0 is '~', ~1 is '/')";
	return NULL;
}

/* An ignored root would make every JSON comparison identical. */
static const char *check_ignored_pointer(const char *v)
{
	return *v ? check_pointer(v)
		  : "\"\" is the whole body: ignoring it compares no JSON body (write body = "
		    "\"none\" to compare status and headers only)";
}

static const char *check_header_name(const char *v)
{
	return is_token(v) ? NULL : "must be a header name";
}

static void load_compare(struct sp_loader *L, const config_setting_t *sh, const char *spath,
			 struct sp_shadow_cfg *c)
{
	static const char *const keys[] = {"headers", "ignore_json", "redact_json", "body", NULL};
	static const char *const bodies[] = {"auto", "json", "bytes", "none"};
	char path[128];
	c->body = 0;
	const config_setting_t *s = cfgp_group(
		L, sh, "compare", spath, "{ headers = [...]; ignore_json = [...]; body = \"auto\"; }",
		path, sizeof(path));
	if (!s)
		return;
	cfgp_check_keys(L, s, path, keys);
	load_strlist(L, s, "headers", path, check_header_name, "[\"Content-Type\"]", &c->headers,
		     &c->nheaders);
	load_strlist(L, s, "ignore_json", path, check_ignored_pointer, "[\"/generated_at\"]",
		     &c->ignore_json, &c->nignore);
	load_strlist(L, s, "redact_json", path, check_pointer, "[\"/user/email\"]",
		     &c->redact_json, &c->nredact);
	const config_setting_t *where;
	char *body = cfgp_str(L, s, "body", path, &where);
	if (!body)
		return;
	c->body = -1;
	for (int i = 0; i < 4; i++)
		if (strcmp(body, bodies[i]) == 0)
			c->body = i;
	if (c->body < 0)
		ERR(L, where, "%s.body: \"%s\": must be auto, json, bytes or none", path, body);
	free(body);
}

static void load_shadow(struct sp_loader *L, const config_setting_t *route, const char *rpath,
			struct sp_route *r)
{
	static const char *const keys[] = {"backend", "percent", "methods", "compare", "noise", NULL};
	static const char *const defaults[] = {"GET", "HEAD", "OPTIONS"};
	struct sp_shadow_cfg *c = &r->shadow;
	char path[96];
	const config_setting_t *s = cfgp_group(L, route, "shadow", rpath,
					       "{ backend = \"modern\"; percent = 100.0; }", path,
					       sizeof(path));
	if (!s)
		return;
	cfgp_check_keys(L, s, path, keys);
	r->has_shadow = 1;
	const config_setting_t *where;
	char *name = cfgp_str(L, s, "backend", path, &where);
	c->backend = -1;
	if (!where) {
		ERR(L, s, "%s.backend: required", path);
	} else if (name && strcmp(name, "@other") == 0) {
		c->backend = SP_SHADOW_OTHER;
		if (!r->has_rollout)
			ERR(L, where, "%s.backend: \"@other\" needs a rollout on the route (it "
				      "shadows to the side that did not serve)", path);
	} else if (name) {
		c->backend = sp_backend_index(L->cfg, name);
		if (c->backend < 0)
			ERR(L, where, "%s.backend: unknown backend \"%s\"", path, name);
		else if (sp_route_shadow_idle(r))
			WARN(L, where, "%s.backend: " SP_SHADOW_IDLE, path);
	}
	free(name);
	c->percent_bp = 10000;
	if (config_setting_get_member(s, "percent"))
		load_percent(L, s, path, &c->percent_bp);
	if (!load_method_list(L, s, path, "[\"GET\", \"POST\"]", &c->methods, &c->nmethods)) {
		c->methods = calloc(4, sizeof(char *));
		for (size_t i = 0; c->methods && i < 3; i++)
			c->methods[c->nmethods++] = strdup(defaults[i]);
	}
	load_compare(L, s, path, c);
	char npath[128];
	const config_setting_t *noise = cfgp_group(L, s, "noise", path, "{ samples = 1; }", npath,
						   sizeof(npath));
	if (noise) {
		static const char *const nkeys[] = {"samples", NULL};
		cfgp_check_keys(L, noise, npath, nkeys);
		cfgp_int_field(L, noise, "samples", npath, 0, 1, &c->noise_samples);
	}
}

/* A route's response_timeout_ms at or below its backend's per_try_timeout_ms
 * leaves no try shorter than the response timeout: the retry never comes. */
static void warn_per_try(struct sp_loader *L, const config_setting_t *e, const char *path,
			 const struct sp_route *r, int b)
{
	const struct sp_backend *be = b >= 0 ? &L->cfg->backends[b] : NULL;
	if (r->response_timeout_ms && be && be->per_try_timeout_ms && be->nservers > 1 &&
	    r->response_timeout_ms <= be->per_try_timeout_ms)
		WARN(L, config_setting_get_member(e, "response_timeout_ms"),
		     "%s.response_timeout_ms: %d is not above backends.%s.per_try_timeout_ms (%d): "
		     "no request of this route is sent on for a slow server",
		     path, r->response_timeout_ms, be->name, be->per_try_timeout_ms);
}

static void load_route(struct sp_loader *L, const config_setting_t *e, int i, struct sp_route *r)
{
	static const char *const keys[] = {"name",	      "match",		 "backend",
					   "rollout",	      "shadow",		 "response_timeout_ms",
					   "max_body_bytes", "return",		 NULL};
	/* what a route that answers itself has no use for */
	static const char *const no_return[] = {"backend", "rollout", "shadow",
						"response_timeout_ms"};
	char path[64];
	const config_setting_t *where;
	snprintf(path, sizeof(path), "routes.[%d]", i);
	r->file = cfgp_src_file(L, e);
	r->line = cfgp_line(e);
	r->backend = -1;
	r->rollout.backend = -1;
	r->max_body_bytes = -1;
	if (!config_setting_is_group(e)) {
		ERR(L, e, "%s: must be a group: { name = \"...\"; match = {...}; backend = \"...\"; }",
		    path);
		return;
	}
	cfgp_check_keys(L, e, path, keys);
	r->name = cfgp_str(L, e, "name", path, &where);
	if (!where)
		ERR(L, e, "%s.name: required", path);
	else if (r->name && (!*r->name || cfgp_text_chars(r->name, 0, NULL) < 0 ||
			       cfgp_text_chars(r->name, 0, NULL) > SP_NAME_CHARS))
		ERR(L, where, "%s.name: must be 1 to %d characters of UTF-8 text", path, SP_NAME_CHARS);
	else if (r->name && strcmp(r->name, SP_DEFAULT_ROUTE) == 0)
		ERR(L, where, "%s.name: \"%s\" is reserved for the default backend's traffic", path,
		    SP_DEFAULT_ROUTE);
	load_match(L, e, path, &r->match);
	cfgp_int(L, e, "max_body_bytes", path, 0, (long long)1 << 50, &r->max_body_bytes);
	if (sp_load_return(L, e, path, &r->ret)) {
		for (size_t k = 0; k < sizeof(no_return) / sizeof(*no_return); k++) {
			const config_setting_t *x = config_setting_get_member(e, no_return[k]);
			if (x)
				ERR(L, x, "%s.%s: the route answers itself (return): it has no "
					  "backend", path, no_return[k]);
		}
		return;
	}
	r->backend = cfgp_backend_ref(L, e, "backend", path, 1);
	load_rollout(L, e, path, r);
	load_shadow(L, e, path, r);
	cfgp_int_field(L, e, "response_timeout_ms", path, 1, 86400000, &r->response_timeout_ms);
	warn_per_try(L, e, path, r, r->backend);
	if (r->has_rollout)
		warn_per_try(L, e, path, r, r->rollout.backend);
}

/* Where route `other` was written, for a message about route `here`: "line
 * N" in the same file, "FILE:N" in another (an included one). */
static const char *written_at(const struct sp_route *other, const struct sp_route *here, char *buf,
			      size_t len)
{
	if (other->file == here->file)
		snprintf(buf, len, "line %d", other->line);
	else
		snprintf(buf, len, "%s:%d", other->file, other->line);
	return buf;
}

/* Among the routes that loaded without error (ok[]): a file with errors
 * still gets these warnings, instead of new ones once its errors are fixed. */
static void check_reachable(struct sp_loader *L, const config_setting_t *list, const char *ok)
{
	struct sp_config *c = L->cfg;
	for (size_t j = 1; j < c->nroutes; j++)
		for (size_t i = 0; i < j && ok[j]; i++)
			if (ok[i] && c->routes[i].name && c->routes[j].name &&
			    sp_route_covers(&c->routes[i], &c->routes[j])) {
				char at[PATH_MAX + 16];
				WARN(L, config_setting_get_elem(list, (unsigned)j),
				     "routes.[%zu]: route \"%s\" can never match: route \"%s\" "
				     "(%s) catches every request it would",
				     j, c->routes[j].name, c->routes[i].name,
				     written_at(&c->routes[i], &c->routes[j], at, sizeof(at)));
				break;
			}
}

void sp_load_routes(struct sp_loader *L, const config_setting_t *root)
{
	const config_setting_t *list = config_setting_get_member(root, "routes");
	if (!list)
		return;
	if (!config_setting_is_list(list)) {
		ERR(L, list, "routes: must be a list: ( { name = ...; }, ... )");
		return;
	}
	int n = config_setting_length(list);
	struct sp_config *c = L->cfg;
	c->routes = calloc((size_t)n + 1, sizeof(*c->routes));
	char *ok = calloc((size_t)n + 1, 1);
	if (!c->routes || !ok) {
		free(ok);
		return;
	}
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
		int errors = L->diag->errors;
		c->routes[c->nroutes].index = (int)c->nroutes;
		load_route(L, e, i, &c->routes[c->nroutes++]);
		const char *name = c->routes[i].name;
		for (int k = 0; name && k < i; k++)
			if (c->routes[k].name && strcmp(c->routes[k].name, name) == 0) {
				char at[PATH_MAX + 16];
				ERR(L, e, "routes.[%d].name: duplicate route name \"%s\" (first at %s)",
				    i, name, written_at(&c->routes[k], &c->routes[i], at, sizeof(at)));
			}
		ok[i] = L->diag->errors == errors;
	}
	check_reachable(L, list, ok);
	free(ok);
}
