/* Runtime route changes: the same rules as the config file, applied on top of
 * it, so a reload or restart keeps them until they are deleted. */
#include "override.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guard.h"

/* A percent as the file accepts it: 0..100, at most two decimals. */
static int check_percent(const json_t *v, const char *what, char *err, size_t errlen)
{
	if (!json_is_number(v)) {
		snprintf(err, errlen, "%s.percent: must be a number", what);
		return -1;
	}
	double p = json_number_value(v);
	char num[SP_NUM_SIZE];
	if (!(p >= 0 && p <= 100)) {
		snprintf(err, errlen, "%s.percent: %s: must be between 0 and 100", what, sp_num(num, p));
		return -1;
	}
	if (fabs(p * 100 - round(p * 100)) > 1e-6) {
		snprintf(err, errlen, "%s.percent: %s: at most two decimals", what, sp_num(num, p));
		return -1;
	}
	return 0;
}

static int check_section(const json_t *v, const char *what, int route_has, char *err,
			 size_t errlen)
{
	const char *key;
	json_t *x;
	if (!json_is_object(v)) {
		snprintf(err, errlen, "%s: must be an object such as {\"percent\": 50}", what);
		return -1;
	}
	if (!route_has) {
		snprintf(err, errlen, "%s: the route has no %s in the configuration file", what, what);
		return -1;
	}
	json_object_foreach((json_t *)v, key, x) {
		if (strcmp(key, "percent") != 0) {
			snprintf(err, errlen, "%s.%s: unknown field (only percent can change)", what, key);
			return -1;
		}
	}
	if (!json_object_get(v, "percent")) {
		snprintf(err, errlen, "%s: percent is required", what);
		return -1;
	}
	return check_percent(json_object_get(v, "percent"), what, err, errlen);
}

int sp_override_check(const struct sp_config *c, const char *route, const json_t *patch,
		      char *err, size_t errlen)
{
	const struct sp_route *r = sp_config_route(c, route);
	const char *key;
	json_t *v;
	if (!r) {
		snprintf(err, errlen, "no route named \"%s\"", route);
		return 404;
	}
	if (!json_is_object(patch) || json_object_size(patch) == 0) {
		snprintf(err, errlen, "the body must be a JSON object such as {\"backend\": \"modern\"}, "
				      "{\"rollout\": {\"percent\": 50}} or {\"shadow\": {\"percent\": 10}}");
		return 400;
	}
	json_object_foreach((json_t *)patch, key, v) {
		if (strcmp(key, "backend") == 0) {
			if (r->ret.status) {
				snprintf(err, errlen, "backend: the route answers itself (return): it "
						      "has no backend to change; edit the file and reload");
				return 400;
			}
			if (!json_is_string(v) || sp_backend_index(c, json_string_value(v)) < 0) {
				snprintf(err, errlen, "backend: unknown backend %s%s%s",
					 json_is_string(v) ? "\"" : "",
					 json_is_string(v) ? json_string_value(v) : "(not a string)",
					 json_is_string(v) ? "\"" : "");
				return 400;
			}
		} else if (strcmp(key, "rollout") == 0) {
			if (check_section(v, "rollout", r->has_rollout, err, errlen) < 0)
				return 400;
		} else if (strcmp(key, "shadow") == 0) {
			if (check_section(v, "shadow", r->has_shadow, err, errlen) < 0)
				return 400;
		} else {
			snprintf(err, errlen, "%s: unknown field (backend, rollout, shadow)", key);
			return 400;
		}
	}
	return 200;
}

int sp_override_merge(json_t *overrides, const char *route, const json_t *patch)
{
	json_t *cur = json_object_get(overrides, route);
	if (!cur) {
		cur = json_object();
		if (!cur || json_object_set_new(overrides, route, cur) < 0)
			return -1;
	}
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)patch, key, v) {
		if (json_object_set_new(cur, key, json_deep_copy(v)) < 0)
			return -1;
	}
	return 0;
}

static uint32_t to_bp(const json_t *section)
{
	return (uint32_t)lround(json_number_value(json_object_get(section, "percent")) * 100);
}

/* A value the file sets that an override replaces with another: said at
 * every reload (and by -t and explain), since the file alone no longer
 * tells what runs. */
static void note_masked(struct sp_buf *notes, const char *route, const char *what,
			const char *now, const char *file)
{
	struct sp_buf enc;
	sp_buf_init(&enc);
	sp_buf_add_pct(&enc, route);
	sp_buf_printf(notes, "route \"%s\": %s %s from a runtime change is in force, not the "
		      "file's %s (DELETE /api/routes/%s/override to follow the file)\n", route, what,
		      now, file, enc.data ? enc.data : "");
	sp_buf_deinit(&enc);
}

static void apply_percent(struct sp_buf *notes, const char *route, const char *what,
			  const json_t *section, uint32_t *bp)
{
	uint32_t now = to_bp(section);
	char a[SP_NUM_SIZE], b[SP_NUM_SIZE];
	if (now != *bp)
		note_masked(notes, route, what, sp_num(a, now / 100.0), sp_num(b, *bp / 100.0));
	*bp = now;
}

/* A change that sp_override_check found fit. */
static void apply_one(struct sp_config *c, const char *route, const json_t *patch,
		      struct sp_buf *notes)
{
	struct sp_route *r = (struct sp_route *)sp_config_route(c, route);
	json_t *v;
	if ((v = json_object_get(patch, "backend"))) {
		int b = sp_backend_index(c, json_string_value(v));
		if (b != r->backend) {
			char now[SP_NAME_MAX + 2], file[SP_NAME_MAX + 2];
			snprintf(now, sizeof(now), "\"%s\"", c->backends[b].name);
			snprintf(file, sizeof(file), "\"%s\"", c->backends[r->backend].name);
			note_masked(notes, route, "backend", now, file);
		}
		r->backend = b;
	}
	if ((v = json_object_get(patch, "rollout")))
		apply_percent(notes, route, "rollout.percent", v, &r->rollout.percent_bp);
	if ((v = json_object_get(patch, "shadow")))
		apply_percent(notes, route, "shadow.percent", v, &r->shadow.percent_bp);
}

/* An override a check refused as a whole, part by part: *fit gets the parts
 * c can apply, *unfit the others (a backend a reload removed), err why the
 * last of them is refused, and notes (when given) a line for each. A part
 * stands on its own, so a rollout's percent (a guard's pull-back) is not
 * lost with the backend beside it. Caller owns both objects. */
static void split_override(const struct sp_config *c, const char *route, const json_t *override,
			   json_t **fit, json_t **unfit, char *err, size_t errlen,
			   struct sp_buf *notes)
{
	const char *key;
	json_t *part;
	*fit = json_object();
	*unfit = json_object();
	json_object_foreach((json_t *)override, key, part) {
		json_t *one = json_pack("{s:O}", key, part);
		char why[256] = "out of memory";
		int ok = one && sp_override_check(c, route, one, why, sizeof(why)) == 200;
		json_object_set(ok ? *fit : *unfit, key, part);
		if (!ok) {
			snprintf(err, errlen, "%s", why);
			if (notes)
				sp_buf_printf(notes, "override of route \"%s\" skipped: %s\n", route,
					      why);
		}
		json_decref(one);
	}
}

int sp_override_apply(struct sp_config *c, const json_t *overrides, struct sp_buf *notes)
{
	const char *route;
	json_t *patch, *fit, *unfit;
	int applied = 0;
	char err[256];
	json_object_foreach((json_t *)overrides, route, patch) {
		if (sp_override_check(c, route, patch, err, sizeof(err)) == 200) {
			apply_one(c, route, patch, notes);
			applied++;
			continue;
		}
		if (!sp_config_route(c, route) || !json_is_object(patch)) {
			sp_buf_printf(notes, "override of route \"%s\" skipped: %s\n", route, err);
			continue;
		}
		split_override(c, route, patch, &fit, &unfit, err, sizeof(err), notes);
		if (json_object_size(fit)) {
			apply_one(c, route, fit, notes);
			applied++;
		}
		json_decref(fit);
		json_decref(unfit);
	}
	return applied;
}

static int is_object(const json_t *v)
{
	return json_is_object(v);
}

static int is_url(const json_t *v)
{
	return json_is_string(v) && json_string_length(v) > 0;
}

/* The state file's parts: each an object (route name: entry) or an array. */
static const struct state_part {
	const char *name;
	int array;
	int (*entry_ok)(const json_t *v);
	const char *whole, *entry;
} state_parts[] = {
	{"overrides", 0, is_object, "an object (route name: change)",
	 "an object such as {\"rollout\": {\"percent\": 50}}"},
	{"audit", 1, is_object, "an array of changes", "an object (a change)"},
	{"guards", 0, sp_guard_entry_ok, "an object (route name: trip)",
	 "an object with strings reason and tripped_at"},
	{"drained", 1, is_url, "an array of server URLs", "a server's URL"},
};

int sp_state_check(const json_t *state, char *err, size_t errlen)
{
	int ours = 0;
	if (!json_is_object(state)) {
		snprintf(err, errlen, "not a strangler state: a JSON %s, not an object",
			 json_is_array(state) ? "array" : "value");
		return -1;
	}
	for (size_t k = 0; k < sizeof(state_parts) / sizeof(state_parts[0]); k++) {
		const struct state_part *p = &state_parts[k];
		const json_t *part = json_object_get(state, p->name);
		ours += part != NULL;
		if (part && (p->array ? !json_is_array(part) : !json_is_object(part))) {
			snprintf(err, errlen, "%s: must be %s", p->name, p->whole);
			return -1;
		}
		size_t i = 0;
		for (void *it = p->array ? NULL : json_object_iter((json_t *)part);
		     p->array ? i < json_array_size(part) : it != NULL;
		     i++, it = p->array ? NULL : json_object_iter_next((json_t *)part, it)) {
			if (p->entry_ok(p->array ? json_array_get(part, i) : json_object_iter_value(it)))
				continue;
			if (p->array)
				snprintf(err, errlen, "%s.[%zu]: must be %s", p->name, i, p->entry);
			else
				snprintf(err, errlen, "%s.%s: must be %s", p->name, json_object_iter_key(it),
					 p->entry);
			return -1;
		}
	}
	if (!ours && json_object_size(state)) {
		snprintf(err, errlen, "not a strangler state: none of \"overrides\", \"audit\", "
				      "\"guards\", \"drained\" in it");
		return -1;
	}
	return 0;
}

json_t *sp_state_load(const char *path, char *err, size_t errlen)
{
	json_error_t jerr;
	struct sp_diag diag;
	size_t len;
	char why[512];
	struct stat st;
	err[0] = '\0';
	if (stat(path, &st) != 0) {
		if (errno != ENOENT) /* a directory that cannot be searched, say */
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL; /* none yet: the first start */
	}
	if (!S_ISREG(st.st_mode)) { /* a FIFO would hold the start until someone writes */
		snprintf(err, errlen, "%s: not a regular file", path);
		return NULL;
	}
	sp_diag_init(&diag);
	/* a buffer with its length: a NUL inside is an error, not the end */
	char *text = sp_config_read(path, &len, &diag);
	json_t *state = text ? json_loadb(text, len, 0, &jerr) : NULL;
	if (!text)
		snprintf(err, errlen, "%.*s", (int)diag.text.len - 1, diag.text.data);
	else if (!state)
		snprintf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
	else if (sp_state_check(state, why, sizeof(why)) < 0) {
		/* someone else's JSON would be overwritten by the first change */
		snprintf(err, errlen, "%s: %s; move it away to start without it", path, why);
		json_decref(state);
		state = NULL;
	}
	free(text);
	sp_diag_deinit(&diag);
	return state;
}

/* The overlay, or NULL with err when the state file would stop a start. */
static struct sp_config *apply_saved(struct sp_config *cfg, struct sp_buf *notes, char *err,
				     size_t errlen)
{
	const char *path = cfg->has_admin ? cfg->admin.state_file : NULL;
	char why[1024];
	if (!path)
		return sp_config_ref(cfg);
	if (access(path, R_OK) != 0 && errno == EACCES) {
		/* -t run by someone other than the user strangler runs as */
		sp_buf_printf(notes, "admin.state_file: %s: %s as this user: the runtime changes "
			      "saved there are not taken into account\n", path, strerror(EACCES));
		return sp_config_ref(cfg);
	}
	json_t *state = sp_state_load(path, why, sizeof(why));
	if (!state && why[0]) { /* the start stops on it too */
		snprintf(err, errlen, "admin.state_file: %s", why);
		return NULL;
	}
	json_t *overrides = json_object_get(state, "overrides");
	struct sp_config *c = json_object_size(overrides) ? sp_config_overlay(cfg) : NULL;
	if (c)
		sp_override_apply(c, overrides, notes);
	json_decref(state);
	return c ? c : sp_config_ref(cfg);
}

struct sp_config *sp_state_apply_saved(struct sp_config *cfg, const char *file,
				       struct sp_diag *diag)
{
	struct sp_buf notes;
	char err[1200];
	sp_buf_init(&notes);
	struct sp_config *c = apply_saved(cfg, &notes, err, sizeof(err));
	sp_diag_add_lines(diag, 0, file, &notes);
	if (!c)
		sp_diag_add(diag, 1, cfg->admin.file, cfg->admin.line, "%s", err);
	sp_buf_deinit(&notes);
	return c;
}

static json_t *percent_json(uint32_t bp)
{
	return json_real(bp / 100.0);
}

/* rollout.set_cookie: the cookie's attributes, or null when it sets none. */
static json_t *set_cookie_json(const struct sp_rollout *ro)
{
	if (!ro->set_cookie)
		return json_null();
	return json_pack("{s:i, s:s?, s:s?}", "max_age_s", ro->cookie_max_age_s, "path",
			 ro->cookie_path, "domain", ro->cookie_domain);
}

json_t *sp_json_text(const char *s, size_t len)
{
	json_t *j = json_stringn(s, len);
	if (j || !s)
		return j;
	struct sp_buf b;
	sp_buf_init(&b);
	if (sp_buf_add_utf8_valid(&b, s, len) == 0)
		j = json_stringn(b.data ? b.data : "", b.len);
	sp_buf_deinit(&b);
	return j;
}

json_t *sp_route_json(const struct sp_config *c, const struct sp_route *r, const json_t *override)
{
	json_t *j = json_pack("{s:s, s:s?, s:o, s:i}", "name", r->name, "backend",
			      r->backend >= 0 ? c->backends[r->backend].name : NULL, "file",
			      sp_json_text(r->file, strlen(r->file)), "line", r->line);
	if (!j)
		return NULL;
	if (r->ret.status)
		json_object_set_new(j, "return",
				    json_pack("{s:i, s:s?, s:I, s:s?}", "status", r->ret.status,
					      "location", r->ret.location, "body_bytes",
					      (json_int_t)r->ret.body_len, "content_type",
					      r->ret.content_type));
	else
		json_object_set_new(j, "return", json_null());
	if (r->has_rollout) {
		/* as written: "" for none, a key, or a list of them */
		const struct sp_rollout *ro = &r->rollout;
		char one[160] = "";
		json_t *spec;
		if (ro->nsticky > 1) {
			spec = json_array();
			for (size_t i = 0; i < ro->nsticky; i++)
				json_array_append_new(
					spec, json_string(sp_sticky_text(&ro->sticky[i], one, sizeof(one))));
		} else {
			spec = json_string(ro->nsticky ? sp_sticky_text(&ro->sticky[0], one, sizeof(one))
						       : "");
		}
		json_object_set_new(j, "rollout",
				    json_pack("{s:s, s:o, s:o, s:s, s:o}", "backend",
					      c->backends[r->rollout.backend].name, "percent",
					      percent_json(r->rollout.percent_bp), "sticky", spec,
					      "cohort", r->rollout.cohort, "set_cookie",
					      set_cookie_json(&r->rollout)));
	} else {
		json_object_set_new(j, "rollout", json_null());
	}
	if (r->has_shadow) {
		const char *b = r->shadow.backend == SP_SHADOW_OTHER ? "@other"
								     : c->backends[r->shadow.backend].name;
		json_object_set_new(j, "shadow", json_pack("{s:s, s:o}", "backend", b, "percent",
							   percent_json(r->shadow.percent_bp)));
	} else {
		json_object_set_new(j, "shadow", json_null());
	}
	/* the parts of an override the build skipped (its backend gone...) are
	 * not in force; the others are (sp_override_apply) */
	char err[256];
	json_t *fit = NULL, *unfit;
	if (override && sp_override_check(c, r->name, override, err, sizeof(err)) == 200) {
		fit = json_deep_copy(override);
	} else if (override) {
		split_override(c, r->name, override, &fit, &unfit, err, sizeof(err), NULL);
		json_object_set_new(j, "override_skipped",
				    json_pack("{s:o, s:s}", "override", unfit, "reason", err));
		if (json_object_size(fit) == 0) {
			json_decref(fit);
			fit = NULL;
		}
	}
	json_object_set_new(j, "override", fit ? fit : json_null());
	return j;
}
