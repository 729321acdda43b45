/* Path rewriting per backend: the rules of backends.NAME.path_rewrite, how
 * they are read from the configuration and how they turn a request's
 * normalised path into the one that backend receives. */
#include "rewrite.h"

#include <stdlib.h>
#include <string.h>

#include "config_parse.h"
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
		size_t keep = stem(r[i].to, r[i].to_len);
		sp_buf_reset(out);
		if (sp_buf_add(out, r[i].to, keep) < 0 || sp_buf_add(out, path + cut, len - cut) < 0 ||
		    (out->len == 0 && sp_buf_addc(out, '/') < 0))
			return -2;
		return (int)i;
	}
	return -1;
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
 * which would end the path at the backend. */
static char *rule_path(struct sp_loader *L, const config_setting_t *g, const char *key,
		       const char *path, const char *else_)
{
	const config_setting_t *s = config_setting_get_member(g, key);
	char *p = cfgp_norm_path(L, g, key, path, else_);
	if (p && strpbrk(p, "?#")) {
		ERR(L, s, "%s.%s: \"%s\": a path, without a query or a fragment ('?' is %%3F, "
			  "'#' is %%23)",
		    path, key, p);
		free(p);
		return NULL;
	}
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
