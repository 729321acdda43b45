/* Generations, reloads and persisted runtime changes (see runtime.h). */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "guard.h"
#include "log.h"
#include "override.h"

#define AUDIT_KEEP 500

struct sp_config *sp_runtime_load_file(struct sp_runtime *rt, struct sp_diag *diag)
{
	/* as -t reads it (a NUL byte refused there passed a start and a reload) */
	struct sp_config *file = sp_config_load(rt->file, diag);
	if (file && rt->health && sp_health_attach(rt->health, file) < 0) {
		sp_diag_add(diag, 1, rt->file, 0, "out of memory");
		sp_config_unref(&file);
	}
	return file;
}

struct sp_config *sp_runtime_build(struct sp_runtime *rt, struct sp_config *file,
				   const json_t *overrides, struct sp_diag *diag)
{
	struct sp_config *cfg = sp_config_overlay(file);
	struct sp_buf notes;
	if (!cfg) {
		sp_diag_add(diag, 1, rt->file, 0, "out of memory");
		return NULL;
	}
	sp_buf_init(&notes);
	overrides = overrides ? overrides : rt->overrides;
	sp_override_apply(cfg, overrides, &notes);
	/* a route keeps its counters while its name stays in the configuration */
	long long now = sp_unix_ms();
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const char *name = cfg->routes[i].name;
		const struct sp_route *was = rt->cfg ? sp_config_route(rt->cfg, name) : NULL;
		cfg->routes[i].counters_since_ms = was ? was->counters_since_ms : now;
		/* the name is the override's key, whatever route now bears it */
		if (rt->cfg && !was && json_object_get(overrides, name)) {
			struct sp_buf enc;
			sp_buf_init(&enc);
			sp_buf_add_pct(&enc, name);
			sp_buf_printf(&notes, "route \"%s\" is back: its stored override applies again "
				      "(DELETE /api/routes/%s/override drops it)\n", name,
				      enc.data ? enc.data : "");
			sp_buf_deinit(&enc);
		}
	}
	sp_diag_add_lines(diag, 0, rt->file, &notes);
	sp_buf_deinit(&notes);
	return cfg;
}

/* A restart-only string setting: the running value stays in the new
 * generation (so the next reload compares with what runs), and a change is
 * a warning of the reload: in its log lines and in the API's answer. */
static void keep_string(struct sp_diag *diag, const char *file, const char *setting,
			const char *running, char **now)
{
	if ((running == NULL) != (*now == NULL) || (running && strcmp(running, *now) != 0))
		sp_diag_add(diag, 0, file, 0, "%s changed: applies after a restart", setting);
	free(*now);
	*now = running ? strdup(running) : NULL;
}

/* Settings a running process cannot change. Returns 1 when cfg takes a new
 * admin token (said once the reload is in force: it may still be refused). */
static int keep_restart_only(const struct sp_config *old, struct sp_config *cfg,
			     struct sp_diag *diag)
{
	if (old->workers != cfg->workers)
		sp_diag_add(diag, 0, cfg->file, 0, "workers changed (%d → %d): applies after a restart",
			    old->workers, cfg->workers);
	cfg->workers = old->workers;
	keep_string(diag, cfg->file, "access_log", old->access_log, &cfg->access_log);
	keep_string(diag, cfg->file, "shadow_defaults.diff_log", old->shadow.diff_log,
		    &cfg->shadow.diff_log);
	/* The admin listener and its state file belong to the process. Its token
	 * follows the file (a leaked one is rotated by a reload) but is never
	 * dropped: a reload must not leave the listener open without one. */
	char *token = NULL;
	if (old->has_admin && cfg->has_admin && cfg->admin.token &&
	    (!old->admin.token || strcmp(old->admin.token, cfg->admin.token) != 0)) {
		token = cfg->admin.token;
		cfg->admin.token = NULL;
	}
	if (old->has_admin != cfg->has_admin ||
	    (old->has_admin && (strcmp(old->admin.address, cfg->admin.address) != 0 ||
				(old->admin.token && !cfg->admin.token && !token) ||
				(old->admin.state_file == NULL) != (cfg->admin.state_file == NULL) ||
				(old->admin.state_file &&
				 strcmp(old->admin.state_file, cfg->admin.state_file) != 0))))
		sp_diag_add(diag, 0, cfg->has_admin ? cfg->admin.file : cfg->file,
			    cfg->has_admin ? cfg->admin.line : 0,
			    "admin settings changed: apply after a restart");
	free(cfg->admin.address);
	free(cfg->admin.token);
	free(cfg->admin.state_file);
	/* where the block is written now: a name this generation keeps (the old
	 * one's go with it) */
	const char *where = cfg->has_admin ? cfg->admin.file : cfg->file;
	int line = cfg->has_admin ? cfg->admin.line : 0;
	cfg->has_admin = old->has_admin;
	cfg->admin = old->admin;
	cfg->admin.file = where;
	cfg->admin.line = line;
	cfg->admin.address = old->admin.address ? strdup(old->admin.address) : NULL;
	cfg->admin.token = old->admin.token ? strdup(old->admin.token) : NULL;
	cfg->admin.state_file = old->admin.state_file ? strdup(old->admin.state_file) : NULL;
	if (token) {
		free(cfg->admin.token);
		cfg->admin.token = token;
	}
	keep_string(diag, cfg->file, "user", old->user, &cfg->user);
	keep_string(diag, cfg->file, "pid_file", old->pid_file, &cfg->pid_file);
	return token != NULL;
}

static int route_kept(const char *route, const void *cfg)
{
	return sp_config_route(cfg, route) != NULL;
}

int sp_runtime_trim_due(struct sp_runtime *rt, size_t open, size_t peak)
{
	if (peak < open)
		peak = open;
	if (peak > rt->conns_peak) { /* more again: no crowd leaving before it */
		rt->conns_peak = peak;
		rt->trimming = 0;
	}
	if (!rt->conns_peak || open * 2 > rt->conns_peak ||
	    (rt->conns_peak < SP_TRIM_FROM && !rt->trimming))
		return 0;
	/* a crowd that leaves over several seconds is followed down: the
	 * memory of its last few hundred goes back too */
	rt->trimming = open >= SP_TRIM_FROM / 16;
	rt->conns_peak = open;
	return 1;
}

void sp_runtime_commit(struct sp_runtime *rt, struct sp_config *cfg)
{
	sp_log_set_level((enum sp_log_level)cfg->log_level);
	if (rt->summary_timer &&
	    cfg->shadow.summary_interval_ms != rt->cfg->shadow.summary_interval_ms) {
		struct timeval tv = sp_tv_ms(cfg->shadow.summary_interval_ms);
		event_add(rt->summary_timer, &tv); /* the next summary a new interval from now */
	}
	/* the last counts of the shadowed routes going away */
	sp_shadow_write_summaries(rt->cfg, cfg, rt->workers, rt->nworkers, rt->difflog, rt->instance);
	sp_health_listed(rt->cfg, cfg);
	for (int i = 0; i < rt->nworkers; i++)
		sp_worker_reload(rt->workers[i], cfg, rt->generation + 1);
	sp_config_unref(&rt->cfg);
	rt->cfg = cfg;
	rt->generation++;
	sp_diff_ring_prune(rt->diffs, route_kept, cfg);
	sp_runtime_start_checks(rt);
}

int sp_runtime_applied(const struct sp_runtime *rt)
{
	for (int i = 0; i < rt->nworkers; i++)
		if (!sp_worker_finished(rt->workers[i]) &&
		    atomic_load(&rt->workers[i]->applied_gen) < rt->generation)
			return 0;
	return 1;
}

void sp_runtime_start_checks(struct sp_runtime *rt)
{
	if (!rt->base)
		return;
	if (!rt->checker)
		rt->checker = sp_health_checker_new(rt->base);
	if (!rt->checker || sp_health_checker_update(rt->checker, rt->cfg) < 0)
		sp_log(SP_LOG_ERROR, "health checks: out of memory; they stay as they were");
}

/* Logs every diagnostic line ("FILE:LINE: setting: reason") with a prefix:
 * warnings as warnings, errors as errors, whatever became of the reload. */
static void log_diag(struct sp_diag *diag, const char *prefix)
{
	const char *p = diag->text.data;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		int len = nl ? (int)(nl - p) : (int)strlen(p);
		const char *w = memmem(p, (size_t)len, ": warning: ", 11);
		sp_log(w ? SP_LOG_WARN : SP_LOG_ERROR, "%s%.*s", prefix, len, p);
		p = nl ? nl + 1 : NULL;
	}
}

int sp_runtime_reload(struct sp_runtime *rt, struct sp_diag *diag)
{
	struct sp_config *file = sp_runtime_load_file(rt, diag), *cfg = NULL;
	int rotated = 0;
	if (file) {
		rotated = keep_restart_only(rt->file_cfg, file, diag);
		cfg = sp_runtime_build(rt, file, NULL, diag);
	}
	if (cfg && sp_worker_check_listen(rt->cfg, cfg, diag) < 0)
		sp_config_unref(&cfg);
	log_diag(diag, "reload: ");
	if (!cfg) {
		sp_config_unref(&file);
		rt->reloads_failed++;
		sp_log(SP_LOG_ERROR, "reload: %s: %d error%s; keeping the running configuration",
		       rt->file, diag->errors, diag->errors == 1 ? "" : "s");
		return -1;
	}
	sp_config_unref(&rt->file_cfg);
	rt->file_cfg = file;
	sp_runtime_commit(rt, cfg);
	if (rotated)
		sp_log(SP_LOG_INFO, "reload: admin token replaced");
	sp_runtime_prune_state(rt);
	rt->reloads_ok++;
	sp_log(SP_LOG_INFO, "reload: %s: %zu backends, %zu routes", rt->file, rt->cfg->nbackends,
	       rt->cfg->nroutes);
	return 0;
}

/* The state file's identity now into *id: known only for a file (none, or
 * what sits there otherwise, is no other process's state: the write fails
 * on it as it is). */
static void state_id_of(const char *path, struct sp_state_id *id)
{
	struct stat st;
	if (stat(path, &st) < 0)
		*id = (struct sp_state_id){0};
	else
		*id = (struct sp_state_id){S_ISREG(st.st_mode), st.st_dev, st.st_ino, st.st_mtim,
					   st.st_size};
}

static int same_state_id(const struct sp_state_id *a, const struct sp_state_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->mtim.tv_sec == b->mtim.tv_sec &&
	       a->mtim.tv_nsec == b->mtim.tv_nsec && a->size == b->size;
}

const char *sp_runtime_state_strerror(int e)
{
	return e == ESTALE ? "another process wrote it since this one last read or wrote it (a new "
			     "instance started during an upgrade?): it owns the file now, and this "
			     "process writes nothing over its changes (make them there)"
			   : strerror(e);
}

void sp_runtime_prune_state(struct sp_runtime *rt)
{
	int guards = rt->guards && sp_guards_prune(rt->guards, rt->cfg);
	int drained = rt->health ? sp_health_prune_drained(rt->health, rt->cfg) : 0;
	if (drained)
		sp_log(SP_LOG_INFO, "%d drained server(s) no longer in the configuration: no longer "
		       "drained", drained);
	if ((guards || drained) && sp_runtime_save_state(rt) < 0)
		sp_log(SP_LOG_ERROR, "cannot write admin.state_file: %s; a restart would bring the "
		       "dropped guard trips or drained servers back", sp_runtime_state_strerror(errno));
}

/* The state file's contents, NULL when there is none (why empty) or it is
 * refused (why says why); *id its identity before the read: a change made
 * meanwhile shows as another's. */
static json_t *read_state(const struct sp_config *cfg, struct sp_state_id *id, char *why,
			  size_t len)
{
	state_id_of(cfg->admin.state_file, id);
	return sp_state_load(cfg->admin.state_file, why, len);
}

/* The state read takes effect: overrides, audit, guard trips, drained servers. */
static void apply_state(struct sp_runtime *rt, const struct sp_config *cfg, json_t *state)
{
	json_t *o = json_object_get(state, "overrides"), *a = json_object_get(state, "audit");
	json_t *g = json_object_get(state, "guards"), *d = json_object_get(state, "drained");
	if (json_is_object(g) && rt->guards)
		sp_guards_restore(rt->guards, g);
	/* only those cfg lists (the others are pruned once the generation is built) */
	size_t ndrained = 0;
	for (size_t i = 0; rt->health && i < json_array_size(d); i++) {
		const char *url = json_string_value(json_array_get(d, i));
		if (sp_health_set_drained(rt->health, url, 1) < 0)
			sp_log(SP_LOG_ERROR, "admin.state_file: out of memory for a drained server");
		ndrained += sp_config_lists_url(cfg, url);
	}
	if (json_is_object(o)) {
		json_decref(rt->overrides);
		rt->overrides = json_incref(o);
	}
	if (json_is_array(a)) {
		json_decref(rt->audit);
		rt->audit = json_incref(a);
	}
	sp_log(SP_LOG_INFO, "admin.state_file: %s: %zu route overrides, %zu drained servers restored",
	       cfg->admin.state_file, json_object_size(rt->overrides), ndrained);
}

int sp_runtime_load_state(struct sp_runtime *rt, const struct sp_config *cfg)
{
	char why[1024];
	if (!cfg->has_admin || !cfg->admin.state_file)
		return 0;
	json_t *state = read_state(cfg, &rt->state_id, why, sizeof(why));
	if (!state) { /* none, or the first start; or one that would be lost */
		if (why[0])
			sp_log(SP_LOG_ERROR, "admin.state_file: %s", why);
		return why[0] ? -1 : 0;
	}
	apply_state(rt, cfg, state);
	json_decref(state);
	return 0;
}

/* The rename on disk too: a crash before the directory is written could
 * bring the old state back. The state is in place already, so a failure is
 * only logged. */
static void sync_dir(const char *file)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", file);
	int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		sp_log(SP_LOG_WARN, "admin.state_file: %s: cannot sync its directory: %s", file,
		       strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* Warns when the file cannot be read as this process's user. */
static void check_readable(const char *file, const char *user)
{
	if (file && strcmp(file, "-") != 0 && access(file, R_OK) < 0)
		sp_log(SP_LOG_WARN,
		       "%s is not readable by user %s (%s): a reload (SIGHUP, POST /api/reload) "
		       "reads it again and would be refused",
		       file, user, strerror(errno));
}

void sp_runtime_check_access(const struct sp_runtime *rt)
{
	const struct sp_config *cfg = rt->file_cfg ? rt->file_cfg : rt->cfg;
	struct passwd *pw = getpwuid(geteuid());
	const char *user = pw ? pw->pw_name : "?";
	check_readable(cfg->file, user); /* (included files: libconfig finds them by its own path) */
	for (size_t i = 0; i < cfg->nread_files; i++)
		check_readable(cfg->read_files[i], user);
	if (!cfg->has_admin || !cfg->admin.state_file)
		return;
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", cfg->admin.state_file);
	const char *d = dirname(dir);
	if (access(d, W_OK | X_OK) < 0)
		sp_log(SP_LOG_WARN,
		       "admin.state_file: directory %s is not writable by user %s (%s): changes "
		       "through the admin API will be refused with 500, and a guard's pull-back "
		       "undone by a restart",
		       d, user, strerror(errno));
}

static void add_url(const char *url, void *arg)
{
	json_array_append_new(arg, json_string(url));
}

/* The drained servers' URLs, for the state file. */
static json_t *drained_json(const struct sp_runtime *rt)
{
	json_t *a = json_array();
	if (a && rt->health)
		sp_health_each_drained(rt->health, add_url, a);
	return a;
}

int sp_runtime_save_state(struct sp_runtime *rt)
{
	const struct sp_config *cfg = rt->cfg;
	char tmp[4096];
	int rc = -1, fd = -1, e = 0;
	if (!cfg->has_admin || !cfg->admin.state_file)
		return 0;
	if (rt->stopping) { /* the process that replaces this one owns the file now */
		errno = ESHUTDOWN;
		return -1;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", cfg->admin.state_file, (int)getpid());
	json_t *state = json_pack("{s:O, s:O, s:o, s:o}", "overrides", rt->overrides, "audit",
				  rt->audit, "guards", sp_guards_save(rt->guards), "drained",
				  drained_json(rt));
	char *text = state ? json_dumps(state, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	if (!text) {
		e = ENOMEM;
		goto out;
	}
	struct sp_state_id now;
	state_id_of(cfg->admin.state_file, &now);
	if (rt->state_id.known && now.known && !same_state_id(&now, &rt->state_id)) {
		e = ESTALE;
		goto out;
	}
	/* A fresh file of our own: whatever sits at that name (a file left by
	 * a process of the same pid, a link planted in a shared directory) is
	 * removed, not followed or truncated, and one planted between the two
	 * calls fails the open (EEXIST) instead of receiving the state. */
	if (unlink(tmp) < 0 && errno != ENOENT) {
		e = errno;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
	size_t len = strlen(text), done = 0;
	while (fd >= 0 && done < len) {
		ssize_t n = write(fd, text + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	/* data on disk before the rename makes it the state */
	if (fd < 0 || done < len || fsync(fd) < 0) {
		e = errno ? errno : EIO;
		unlink(tmp);
		goto out;
	}
	int closed = close(fd);
	fd = -1; /* closed, even when close() reports an error */
	if (closed < 0) {
		e = errno ? errno : EIO;
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, cfg->admin.state_file) < 0) {
		e = errno;
		unlink(tmp);
		goto out;
	}
	rc = 0;
	sync_dir(cfg->admin.state_file);
	state_id_of(cfg->admin.state_file, &rt->state_id);
out:
	if (fd >= 0)
		close(fd);
	free(text);
	json_decref(state);
	if (rc == 0 && rt->state_unsaved)
		sp_log(SP_LOG_INFO, "admin.state_file %s written again: it holds every change",
		       cfg->admin.state_file);
	rt->state_unsaved = rc < 0;
	errno = e;
	return rc;
}

/* At start, once the process is ready to serve: the state file becomes this
 * process's, written once. The process it replaces (an upgrade's overlap)
 * may have written it since it was read here (a change it confirmed, a
 * guard's trip): that state is read again and applied before the write, so
 * that the change is not lost and this process is not left taking its own
 * file for another's (every change refused with 409 until a restart). */
int sp_runtime_take_state(struct sp_runtime *rt)
{
	for (int tries = 0;; tries++) {
		if (sp_runtime_save_state(rt) == 0)
			return 0;
		if (errno != ESTALE || tries == 3)
			return -1;
		char why[1024];
		struct sp_state_id id;
		json_t *state = read_state(rt->file_cfg, &id, why, sizeof(why));
		if (!state && !why[0])
			continue; /* gone meanwhile: nothing of another's to lose */
		if (!state) { /* what runs stays, and the file is not written over */
			sp_log(SP_LOG_ERROR, "admin.state_file: written by another process since it was "
			       "read, and cannot be read again: %s", why);
			errno = ESTALE;
			return -1;
		}
		/* the drained servers, guard trips and overrides are the file's */
		json_t *drained = drained_json(rt);
		for (size_t i = 0; rt->health && i < json_array_size(drained); i++)
			sp_health_set_drained(rt->health, json_string_value(json_array_get(drained, i)),
					      0);
		json_decref(drained);
		rt->state_id = id;
		sp_log(SP_LOG_INFO, "admin.state_file: written by another process since it was read "
		       "(the one this process replaces): read again");
		apply_state(rt, rt->file_cfg, state);
		json_decref(state);
		struct sp_diag diag;
		sp_diag_init(&diag);
		struct sp_config *cfg = sp_runtime_build(rt, rt->file_cfg, NULL, &diag);
		log_diag(&diag, "admin.state_file: ");
		sp_diag_deinit(&diag);
		if (!cfg) {
			errno = ENOMEM;
			return -1;
		}
		sp_runtime_commit(rt, cfg);
		sp_runtime_prune_state(rt);
	}
}

void sp_runtime_retry_state(struct sp_runtime *rt)
{
	/* what is in force but not on disk (a guard's pull-back, an audit
	 * entry, a dropped trip); the failure itself was logged */
	if (rt->state_unsaved)
		sp_runtime_save_state(rt);
}

static json_t *now_json(void);

void sp_runtime_audit(struct sp_runtime *rt, json_t *entry)
{
	if (entry && !json_object_get(entry, "time"))
		json_object_set_new(entry, "time", now_json());
	json_array_append_new(rt->audit, entry);
	while (json_array_size(rt->audit) > AUDIT_KEEP)
		json_array_remove(rt->audit, 0);
}

static json_t *now_json(void)
{
	char buf[SP_UTC_SIZE];
	sp_utc_stamp(buf, sp_unix_ms());
	return json_string(buf);
}

/* Builds the generation for `next` overrides, persists them, then switches
 * every worker: all or nothing (a safety change, the guard's, also when it
 * cannot be persisted). Takes ownership of next. */
static int apply_overrides(struct sp_runtime *rt, json_t *next, int safety, char *msg,
			   size_t msglen)
{
	struct sp_diag diag;
	sp_diag_init(&diag);
	struct sp_config *cfg = sp_runtime_build(rt, rt->file_cfg, next, &diag);
	if (!cfg) { /* it reads nothing: only memory can run out */
		snprintf(msg, msglen, "the change cannot be applied: out of memory");
		sp_diag_deinit(&diag);
		json_decref(next);
		return 500;
	}
	sp_diag_deinit(&diag);
	json_t *old = rt->overrides;
	rt->overrides = next;
	if (sp_runtime_save_state(rt) < 0) {
		if (safety) { /* a guard's pull-back must not wait for a disk */
			sp_log(SP_LOG_ERROR, "cannot write admin.state_file: %s; the change applies "
			       "but a restart would undo it", sp_runtime_state_strerror(errno));
		} else {
			int e = errno;
			snprintf(msg, msglen, "cannot write admin.state_file: %s",
				 sp_runtime_state_strerror(e));
			rt->overrides = old;
			json_decref(next);
			sp_config_unref(&cfg);
			return sp_runtime_state_status(e);
		}
	}
	json_decref(old);
	sp_runtime_commit(rt, cfg);
	return 0;
}

/* The route as the API shows it, or for a route that is gone its stale
 * override; JSON null when neither exists. */
static json_t *route_state(struct sp_runtime *rt, const char *route)
{
	const struct sp_route *r = sp_config_route(rt->cfg, route);
	json_t *o = json_object_get(rt->overrides, route);
	if (r)
		return sp_route_json(rt->cfg, r, o);
	return o ? json_pack("{s:s, s:O}", "stale_override_of", route, "override", o) : json_null();
}

json_t *sp_runtime_stale_overrides(const struct sp_runtime *rt)
{
	json_t *out = json_object(), *v;
	const char *route;
	json_object_foreach(rt->overrides, route, v) {
		if (!sp_config_route(rt->cfg, route))
			json_object_set(out, route, v);
	}
	return out;
}

/* Whether a route's overrides keep its rollout at 0 %. */
/* Whether the route's rollout stays at 0 % under these overrides: their
 * percent, or the file's where they set none (a DELETE of the override a
 * guard's trip wrote, once the file itself says 0). */
static int holds_zero(const struct sp_runtime *rt, const json_t *overrides, const char *route)
{
	json_t *pct = json_object_get(json_object_get(json_object_get(overrides, route), "rollout"),
				      "percent");
	if (pct)
		return json_is_number(pct) && json_number_value(pct) == 0;
	const struct sp_route *r = sp_config_route(rt->file_cfg, route);
	return !r || r->rollout.percent_bp == 0;
}

int sp_runtime_change(struct sp_runtime *rt, const char *route, const json_t *patch,
		      const char *caller, const char *action, char *msg, size_t msglen)
{
	int st;
	if (patch) {
		st = sp_override_check(rt->cfg, route, patch, msg, msglen);
		if (st != 200)
			return st;
	} else if (!json_object_get(rt->overrides, route)) {
		snprintf(msg, msglen, sp_config_route(rt->cfg, route) ? "the route has no runtime override"
								       : "no route named \"%s\"", route);
		return 404;
	}
	/* a DELETE may drop the stale override of a route that is gone */
	json_t *before = route_state(rt, route);
	json_t *next = json_deep_copy(rt->overrides);
	if (!next || (patch ? sp_override_merge(next, route, patch) : json_object_del(next, route)) < 0) {
		json_decref(next);
		json_decref(before);
		snprintf(msg, msglen, "out of memory");
		return 500;
	}
	int guard = strcmp(caller, "guard") == 0;
	if (!guard && sp_guard_tripped(rt->guards, route) && !holds_zero(rt, next, route)) {
		/* the pull-back stays until someone re-arms the guard */
		json_decref(next);
		json_decref(before);
		struct sp_buf enc;
		sp_buf_init(&enc);
		sp_buf_add_pct(&enc, route);
		snprintf(msg, msglen,
			 "the route's guard tripped and holds its rollout at 0 %%: re-arm it first "
			 "(POST /api/routes/%s/guard/rearm)%s",
			 enc.data ? enc.data : "", patch ? "" : ", or PATCH back what the override changed");
		sp_buf_deinit(&enc);
		return 409;
	}
	if ((st = apply_overrides(rt, next, guard, msg, msglen)) != 0) {
		json_decref(before);
		return st;
	}
	json_t *after = route_state(rt, route);
	char *b = json_dumps(before, JSON_COMPACT | JSON_SORT_KEYS);
	char *a = json_dumps(after, JSON_COMPACT | JSON_SORT_KEYS);
	sp_log(SP_LOG_INFO, "change by %s: %s route %s: %s -> %s", caller, action, route,
	       b ? b : "?", a ? a : "?");
	free(b);
	free(a);
	sp_runtime_audit(rt, json_pack("{s:o, s:s, s:s, s:s, s:o, s:o}", "time", now_json(), "caller",
				       caller, "route", route, "action", action, "before", before,
				       "after", after));
	sp_runtime_save_state(rt); /* the audit trail is best effort once applied */
	return 0;
}
