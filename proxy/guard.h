/* Guarded rollouts: the main process watches the rollout side of every route
 * with a `rollout.guard`, and when its 5xx rate, shadow difference rate, or p99
 * relative to the base side crosses a bound over the window, drops the percent
 * to 0 (a runtime change, persisted and audited) until someone re-arms it.
 * While the guard holds, `steps` raise the percent one step per interval, and
 * while it is tripped no other change may raise it (sp_runtime_change). */
#ifndef SP_GUARD_H
#define SP_GUARD_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "route.h"
#include "runtime.h"
#include "stats.h"

struct sp_guard_sample {
	uint64_t requests, errors; /* errors: 5xx answers */
	uint64_t fell_back;        /* routed here, served by the other side */
	uint64_t lat[SP_LAT_BUCKETS];
};

struct sp_guard_snapshot {
	struct sp_guard_sample base, roll;
	uint64_t compared, different;
};

/* Pure: 1 when a bound is crossed in this window's deltas (reason set). */
int sp_guard_check(const struct sp_guard_cfg *g, const struct sp_guard_snapshot *delta,
		   char *reason, size_t len);
/* Pure: the first step above current_bp, or 0 when there is none, when the
 * rollout is off (0), when the window's deltas hold fewer than min_requests
 * on the rollout side (no verdict, so no step), or when more than 1 % of
 * the rollout side's requests fell back to the base side (it is down, or at
 * max_conns: it does not take the users it has). */
uint32_t sp_guard_next_step(const struct sp_guard_cfg *g, uint32_t current_bp,
			    const struct sp_guard_snapshot *delta);

/* A guard's window: the cumulative counters' snapshots of the last window_s
 * ticks (one a tick; one every `stride` ticks for windows over an hour, so
 * at most 3,601 are kept). Pure, so that what it measures is tested. */
struct sp_guard_window {
	struct sp_guard_snapshot *ring;
	size_t len, head, count, stride;
	unsigned long ticks;
};
/* Sizes the window (again when window_s changed; otherwise it keeps what it
 * holds). from_zero: counters started at zero on the process's first tick,
 * so the first window counts from an empty snapshot instead of from the
 * first one taken. Returns -1 out of memory (the window is then empty). */
int sp_guard_window_fit(struct sp_guard_window *w, int window_s, int from_zero);
/* Adds this tick's snapshot; *delta becomes now minus the oldest snapshot
 * kept: now minus the one window_s ticks ago once the window is full (up to
 * stride - 1 ticks more with a stride), minus the first one kept before.
 * Counters that went back (the route was removed and came back) restart the
 * window from now. */
void sp_guard_window_push(struct sp_guard_window *w, const struct sp_guard_snapshot *now,
			  struct sp_guard_snapshot *delta);
/* Forgets the snapshots: the next push starts a new window. */
void sp_guard_window_restart(struct sp_guard_window *w);
void sp_guard_window_free(struct sp_guard_window *w);

struct sp_guards;
struct sp_guards *sp_guards_new(void);
void sp_guards_free(struct sp_guards **g);
/* Once a second, in the main thread. */
void sp_guards_tick(struct sp_runtime *rt, struct sp_guards *g);
json_t *sp_guard_json(struct sp_guards *g, const struct sp_route *r);
int sp_guard_tripped(struct sp_guards *g, const char *route);
/* Returns 0, or -1 when the route's guard is not tripped. */
int sp_guard_rearm(struct sp_guards *g, const char *route);
/* Forgets the routes cfg has no guard for (removed, without a rollout or a
 * guard block): a trip holds only while its guard is configured. Returns how
 * many trips were dropped (each logged); the caller saves the state. */
int sp_guards_prune(struct sp_guards *g, const struct sp_config *cfg);
/* Tripped guards, for the state file, and back (only from entries
 * sp_guard_entry_ok accepts). */
json_t *sp_guards_save(struct sp_guards *g);
void sp_guards_restore(struct sp_guards *g, const json_t *saved);
/* A saved trip: {"reason": "...", "tripped_at": "..."}. Pure. */
int sp_guard_entry_ok(const json_t *v);

#endif
