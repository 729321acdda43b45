/* The running process as the main thread sees it: the workers, the newest
 * configuration generation, and the runtime route changes (overrides) made
 * through the admin API, which outlive reloads and restarts (state_file). */
#ifndef SP_RUNTIME_H
#define SP_RUNTIME_H

#include <errno.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <jansson.h>

#include "accesslog.h"
#include "config.h"
#include "diffring.h"
#include "health.h"
#include "worker.h"

struct sp_runtime {
	const char *file;
	char instance[160];    /* host:pid:start (unix time): names this process in summaries */
	struct sp_config *file_cfg; /* the file as last loaded, without the runtime's changes */
	struct sp_config *cfg;      /* the newest generation: file_cfg with the changes */
	struct sp_worker **workers;
	int nworkers;
	struct event_base *base;
	struct sp_accesslog *alog, *difflog;
	json_t *overrides; /* route name → patch */
	json_t *audit;     /* the latest changes, oldest first */
	unsigned long generation;
	unsigned long reloads_ok, reloads_failed;
	struct sp_health_table *health;
	struct sp_guards *guards;
	struct sp_diff_ring *diffs; /* recent differences, per route */
	struct sp_comparer *comparer; /* the shadows' comparisons, off the workers */
	struct sp_health_checker *checker; /* active checks, kept across generations */
	struct event *summary_timer; /* shadow summaries, every shadow.summary_interval_ms */
	int stopping;
	int state_unsaved; /* the last state file write failed: retried once a second */
	/* the state file as this process last read or wrote it (dev, inode,
	 * mtime, size): another that differs is another process's (a new
	 * instance started during an upgrade), which now owns it */
	struct sp_state_id {
		int known;
		dev_t dev;
		ino_t ino;
		struct timespec mtim;
		off_t size;
	} state_id;
	struct event *stop_poll; /* ends the main loop once the workers are done */
	size_t conns_peak; /* the most client connections open since memory was last trimmed */
	int trimming;      /* a crowd is leaving: trimmed at each halving until a few are left */
};

/* Reads and checks rt->file, with what it includes. Returns the file's
 * generation, or NULL with every error in diag. */
struct sp_config *sp_runtime_load_file(struct sp_runtime *rt, struct sp_diag *diag);
/* A generation made of file (the file's generation) and overrides (NULL:
 * rt->overrides); an override that no longer fits the file is skipped, with a
 * warning in diag. Runtime changes build on rt->file_cfg, the file as it was
 * last loaded: nothing is read again (an edit on disk applies only with a
 * reload, a name is not resolved again). NULL: no memory. */
struct sp_config *sp_runtime_build(struct sp_runtime *rt, struct sp_config *file,
				   const json_t *overrides, struct sp_diag *diag);
/* Makes cfg the running generation (takes the caller's reference). */
void sp_runtime_commit(struct sp_runtime *rt, struct sp_config *cfg);
/* True once every running worker has switched to the newest generation
 * (workers switch from their own loops, a moment after the commit). */
int sp_runtime_applied(const struct sp_runtime *rt);
/* Starts the active health checks of the running generation, or brings
 * them in line with it after a commit (unchanged ones go on as they were). */
void sp_runtime_start_checks(struct sp_runtime *rt);
/* SIGHUP and POST /api/reload: build, log, commit. Returns 0, or -1 with the
 * errors in diag (the running configuration stays). */
int sp_runtime_reload(struct sp_runtime *rt, struct sp_diag *diag);

/* Drops the guard trips of routes the running generation has no guard for,
 * and the drain of servers it no longer lists, and saves the state when
 * there were any (at start, after a reload). */
void sp_runtime_prune_state(struct sp_runtime *rt);
/* Reads overrides and audit from the state file of cfg (if any); a missing
 * file is not an error. Returns 0 or -1 (logged). */
int sp_runtime_load_state(struct sp_runtime *rt, const struct sp_config *cfg);
/* Writes them atomically (temporary file, fsync, rename). 0 or -1 with errno:
 * ESTALE when another process wrote the file since this one last read or
 * wrote it (it owns the file now: nothing is written over its changes). */
int sp_runtime_save_state(struct sp_runtime *rt);
/* The first write at start (sp_runtime_save_state), reading the file again
 * first when another process wrote it since it was read (see runtime.c). */
int sp_runtime_take_state(struct sp_runtime *rt);
/* strerror(e), or for ESTALE what it means for the state file. */
const char *sp_runtime_state_strerror(int e);
/* The admin API's answer to a change the state file refused with e: 409
 * when another process owns the file (ESTALE), else 500. */
static inline int sp_runtime_state_status(int e)
{
	return e == ESTALE ? 409 : 500;
}
/* At start, once running as `user`: warns about each file the configuration
 * reads (its own, certificates, keys, CA files, the token file) that this
 * user cannot read, since a reload reads them again, and about a state
 * file's directory it cannot write to (the state is written to a temporary
 * file there and renamed). */
void sp_runtime_check_access(const struct sp_runtime *rt);
/* Writes them again when the last write failed (once a second, from the main
 * loop): what is in force reaches the disk as soon as it takes it. */
void sp_runtime_retry_state(struct sp_runtime *rt);
/* With open client connections now (read every second), and peak the most
 * open at once since the last call (a crowd that came and went between two
 * reads counts): whether memory
 * should go back to the system now (malloc_trim). glibc keeps what was
 * freed otherwise, and RSS stays at its peak for good (what a container's
 * memory limit and its graphs read). Once the open connections fall to
 * half their peak, from at least SP_TRIM_FROM, and at each halving after
 * until a few are left. */
#define SP_TRIM_FROM 256
int sp_runtime_trim_due(struct sp_runtime *rt, size_t open, size_t peak);
/* A runtime route change: patch (NULL: remove the route's override, also
 * the stale one of a route that is gone) is
 * checked like the file, applied to every worker, persisted and audited
 * (caller: an address, or "guard"). Returns 0, or an HTTP status with msg.
 * A change that cannot be persisted is refused (500), except the guard's,
 * which applies anyway (logged). */
int sp_runtime_change(struct sp_runtime *rt, const char *route, const json_t *patch,
		      const char *caller, const char *action, char *msg, size_t msglen);
/* The stored overrides whose route the running generation does not have
 * (renamed or removed by a reload): route name → override (new reference). */
json_t *sp_runtime_stale_overrides(const struct sp_runtime *rt);
/* Appends a change to the audit trail (takes ownership of entry). */
void sp_runtime_audit(struct sp_runtime *rt, json_t *entry);

#endif
