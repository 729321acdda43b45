/* Runtime route changes (admin API PATCH): validation, merging, and applying
 * them to a freshly loaded generation. Pure (jansson values in, structs out)
 * but for reading the state file. */
#ifndef SP_OVERRIDE_H
#define SP_OVERRIDE_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"
#include "config.h"

/* Checks a patch such as {"backend": "modern"}, {"rollout": {"percent": 50}}
 * or {"shadow": {"percent": 10}} against route `route` of c. Returns 200, or
 * 404 (no such route) / 400 with a message in err. */
int sp_override_check(const struct sp_config *c, const char *route, const json_t *patch,
		      char *err, size_t errlen);
/* overrides[route] = overrides[route] merged with patch (a checked patch). */
int sp_override_merge(json_t *overrides, const char *route, const json_t *patch);
/* Applies every override to c, which must not be shared yet. An override that
 * no longer fits the file (route or backend gone) is skipped, and a value an
 * override changes from the file's is told, each a line in notes. Returns
 * how many were applied. */
int sp_override_apply(struct sp_config *c, const json_t *overrides, struct sp_buf *notes);
/* Whether state, a state file's JSON, is what sp_runtime_save_state writes:
 * an object with "overrides" (route name: object), "audit" (array of
 * objects) and "guards" (route name: sp_guard_entry_ok), any of them
 * absent, not all of them unless empty. 0, or -1 with the first fault in err
 * ("overrides.orders: must be an object ..."). */
int sp_state_check(const json_t *state, char *err, size_t errlen);
/* The state file at path, read, parsed and checked (sp_state_check). NULL
 * when there is none yet (err is then ""), or with the reason in err. */
json_t *sp_state_load(const char *path, char *err, size_t errlen);
/* What a start would run from cfg and its admin.state_file, as the running
 * process does unless changed since: the saved overrides applied to an
 * overlay of cfg (cfg itself, with a new reference, when there are none).
 * sp_override_apply's notes, and a state file this user may not read, are
 * warnings of diag (under file); a state file that would stop a start is an
 * error at the admin block, and NULL is returned. For -t and explain, which
 * only read files. */
struct sp_config *sp_state_apply_saved(struct sp_config *cfg, const char *file,
				       struct sp_diag *diag);
/* The effective route as JSON; `override` (borrowed, may be NULL) is shown,
 * as "override" when it applies to c, else as "override_skipped" with the
 * reason (the build skipped it). */
json_t *sp_route_json(const struct sp_config *c, const struct sp_route *r, const json_t *override);
/* A JSON string of text from the configuration or the system (a file name),
 * bytes that are not UTF-8 replaced by U+FFFD: jansson refuses them, and the
 * value, or the whole answer, went missing. NULL: out of memory. */
json_t *sp_json_text(const char *s, size_t len);

#endif
