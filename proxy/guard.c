/* Guarded rollouts (see guard.h): the verdict is a pure function of a
 * window's counter deltas; the driver snapshots the workers' cumulative
 * counters once a second and acts through the runtime's route changes. */
#include "guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "worker.h"

int sp_guard_check(const struct sp_guard_cfg *g, const struct sp_guard_snapshot *d, char *reason,
		   size_t len)
{
	if (g->max_error_rate > 0 && d->roll.requests >= (uint64_t)g->min_requests) {
		double rate = 100.0 * (double)d->roll.errors / (double)d->roll.requests;
		if (rate > g->max_error_rate) {
			snprintf(reason, len, "error rate %.2f %% of %llu requests > max_error_rate %.2f %%",
				 rate, (unsigned long long)d->roll.requests, g->max_error_rate);
			return 1;
		}
	}
	if (g->max_diff_rate > 0 && d->compared >= (uint64_t)g->min_requests) {
		double rate = 100.0 * (double)d->different / (double)d->compared;
		if (rate > g->max_diff_rate) {
			snprintf(reason, len,
				 "difference rate %.2f %% of %llu comparisons > max_diff_rate %.2f %%", rate,
				 (unsigned long long)d->compared, g->max_diff_rate);
			return 1;
		}
	}
	if (g->max_p99_ratio > 0 && d->roll.requests >= (uint64_t)g->min_requests &&
	    d->base.requests >= (uint64_t)g->min_requests) {
		double pr = sp_hist_quantile(d->roll.lat, 0.99), pb = sp_hist_quantile(d->base.lat, 0.99);
		if (pb > 0 && pr / pb > g->max_p99_ratio) {
			snprintf(reason, len, "p99 %.2f ms vs %.2f ms on the base side: ratio %.2f > "
					      "max_p99_ratio %.2f",
				 pr, pb, pr / pb, g->max_p99_ratio);
			return 1;
		}
	}
	return 0;
}

uint32_t sp_guard_next_step(const struct sp_guard_cfg *g, uint32_t current_bp,
			    const struct sp_guard_snapshot *d)
{
	/* 0 % is off (how an operator sends everyone back): nothing steps up
	 * from it; and a step needs the window to have judged the rollout side
	 * (a new side that is down, whose users all fell back, must not climb) */
	if (current_bp == 0 || d->roll.requests < (uint64_t)g->min_requests ||
	    d->roll.fell_back * 100 > d->roll.requests + d->roll.fell_back)
		return 0;
	for (size_t i = 0; i < g->nsteps; i++)
		if (g->steps_bp[i] > current_bp)
			return g->steps_bp[i];
	return 0;
}

/* ---- the window ---- */

/* One snapshot a second, up to an hour; a longer window keeps one every
 * `stride` seconds so that the ring never holds more than RING_MAX. */
#define RING_MAX 3601

/* Counters only grow, except when their route left the configuration (the
 * workers free them) and came back: then any of them may be lower, and a
 * delta over it would wrap. */
static int sample_went_back(const struct sp_guard_sample *now, const struct sp_guard_sample *then)
{
	if (now->requests < then->requests || now->errors < then->errors ||
	    now->fell_back < then->fell_back)
		return 1;
	for (int i = 0; i < SP_LAT_BUCKETS; i++)
		if (now->lat[i] < then->lat[i])
			return 1;
	return 0;
}

static int went_back(const struct sp_guard_snapshot *now, const struct sp_guard_snapshot *then)
{
	return sample_went_back(&now->base, &then->base) || sample_went_back(&now->roll, &then->roll) ||
	       now->compared < then->compared || now->different < then->different;
}

static void delta(const struct sp_guard_snapshot *now, const struct sp_guard_snapshot *then,
		  struct sp_guard_snapshot *d)
{
	const struct sp_guard_sample *a[2] = {&now->base, &now->roll}, *b[2] = {&then->base, &then->roll};
	struct sp_guard_sample *o[2] = {&d->base, &d->roll};
	for (int k = 0; k < 2; k++) {
		o[k]->requests = a[k]->requests - b[k]->requests;
		o[k]->errors = a[k]->errors - b[k]->errors;
		o[k]->fell_back = a[k]->fell_back - b[k]->fell_back;
		for (int i = 0; i < SP_LAT_BUCKETS; i++)
			o[k]->lat[i] = a[k]->lat[i] - b[k]->lat[i];
	}
	d->compared = now->compared - then->compared;
	d->different = now->different - then->different;
}

int sp_guard_window_fit(struct sp_guard_window *w, int window_s, int from_zero)
{
	size_t stride = ((size_t)window_s + RING_MAX - 2) / (RING_MAX - 1);
	size_t len = (size_t)window_s / stride + 1;
	if (w->ring && w->len == len && w->stride == stride)
		return 0;
	free(w->ring);
	if (!(w->ring = calloc(len, sizeof(*w->ring)))) {
		*w = (struct sp_guard_window){0};
		return -1;
	}
	w->len = len;
	w->stride = stride;
	/* the empty snapshot at ring[0] is where counters stood at start-up */
	w->head = w->count = from_zero ? 1 : 0;
	w->ticks = 0;
	return 0;
}

void sp_guard_window_push(struct sp_guard_window *w, const struct sp_guard_snapshot *now,
			  struct sp_guard_snapshot *d)
{
	if (w->count && went_back(now, &w->ring[(w->head + w->len - 1) % w->len]))
		sp_guard_window_restart(w); /* the route's counters started again */
	if (w->ticks++ % w->stride == 0) {
		w->ring[w->head] = *now;
		w->head = (w->head + 1) % w->len;
		if (w->count < w->len)
			w->count++;
	}
	/* the oldest snapshot kept is window_s old once the ring is full */
	delta(now, &w->ring[(w->head + w->len - w->count) % w->len], d);
}

void sp_guard_window_restart(struct sp_guard_window *w)
{
	w->count = 0;
	w->ticks = 0;
}

void sp_guard_window_free(struct sp_guard_window *w)
{
	free(w->ring);
	*w = (struct sp_guard_window){0};
}

/* ---- the driver ---- */

struct guard_state {
	struct guard_state *next;
	char *route;
	struct sp_guard_window win;
	int tripped;
	char reason[256];
	char at[40];
	time_t last_step; /* mono_s() */
	uint32_t last_bp; /* the percent seen at the last tick */
	/* the backends the window's snapshots measure: counters are per route
	 * and backend, so a window spanning a change of either would subtract
	 * one backend's counters from another's */
	char base[SP_NAME_MAX], roll[SP_NAME_MAX];
};

struct sp_guards {
	struct guard_state *head;
	int ticked; /* after the first tick, counters no longer start at zero */
};

static void state_free(struct guard_state *s)
{
	sp_guard_window_free(&s->win);
	free(s->route);
	free(s);
}

struct sp_guards *sp_guards_new(void)
{
	return calloc(1, sizeof(struct sp_guards));
}

void sp_guards_free(struct sp_guards **gp)
{
	struct sp_guards *g = *gp;
	if (!g)
		return;
	*gp = NULL;
	struct guard_state *s = g->head, *next;
	for (; s; s = next) {
		next = s->next;
		state_free(s);
	}
	free(g);
}

/* Seconds on the monotonic clock, for the step intervals: a wall clock set
 * back would hold the steps, one set forward would take one at once. */
static time_t mono_s(void)
{
	return (time_t)(sp_deadline_now_us() / 1000000);
}

static struct guard_state *state_for(struct sp_guards *g, const char *route, int create)
{
	struct guard_state *s;
	for (s = g->head; s; s = s->next)
		if (strcmp(s->route, route) == 0)
			return s;
	if (!create || !(s = calloc(1, sizeof(*s))))
		return NULL;
	if (!(s->route = strdup(route))) {
		free(s);
		return NULL;
	}
	s->last_step = mono_s();
	s->next = g->head;
	g->head = s;
	return s;
}

/* Sums a backend's counters for a route over the workers. */
static void sample(struct sp_runtime *rt, const char *route, const char *backend,
		   struct sp_guard_sample *out)
{
	memset(out, 0, sizeof(*out));
	for (int w = 0; w < rt->nworkers; w++) {
		sp_worker_stats_read_lock(rt->workers[w]);
		struct sp_route_stats *n = sp_worker_find_stats(rt->workers[w], route);
		int k = n ? atomic_load_explicit(&n->nsides, memory_order_acquire) : 0;
		for (int i = 0; i < k; i++) {
			struct sp_side_stats *s = sp_route_side(n, i);
			if (strcmp(s->backend, backend) != 0)
				continue;
			out->requests += sp_read(&s->requests);
			out->errors += sp_read(&s->status[5]);
			out->fell_back += sp_read(&s->fell_back);
			sp_hist_sum(&s->wait, out->lat);
		}
		sp_worker_stats_read_unlock(rt->workers[w]);
	}
}

static void snapshot(struct sp_runtime *rt, const char *route, const char *base, const char *roll,
		     struct sp_guard_snapshot *s)
{
	sample(rt, route, base, &s->base);
	sample(rt, route, roll, &s->roll);
	s->compared = s->different = 0;
	for (int w = 0; w < rt->nworkers; w++) {
		sp_worker_stats_read_lock(rt->workers[w]);
		struct sp_shadow_stats *st = sp_worker_route_stats(rt->workers[w], route);
		if (st) {
			s->compared += sp_read_before(&st->all.compared);
			s->different += sp_read(&st->all.different);
		}
		sp_worker_stats_read_unlock(rt->workers[w]);
	}
}

/* Returns 0 once the change is in force. */
static int set_percent(struct sp_runtime *rt, const char *route, uint32_t bp, const char *action)
{
	char msg[512];
	json_t *patch = json_pack("{s:{s:f}}", "rollout", "percent", bp / 100.0);
	int st = patch ? sp_runtime_change(rt, route, patch, "guard", action, msg, sizeof(msg)) : 500;
	if (st != 0)
		sp_log(SP_LOG_ERROR, "guard: route %s: cannot %s: %s", route, action,
		       patch ? msg : "out of memory");
	json_decref(patch);
	return st == 0 ? 0 : -1;
}

static void tick_route(struct sp_runtime *rt, struct sp_guards *gs, const struct sp_route *r)
{
	const struct sp_guard_cfg *g = &r->rollout.guard;
	struct guard_state *s = state_for(gs, r->name, 1);
	if (!s || sp_guard_window_fit(&s->win, g->window_s, !gs->ticked) < 0)
		return;
	const char *base = rt->cfg->backends[r->backend].name;
	const char *roll = rt->cfg->backends[r->rollout.backend].name;
	if (strcmp(s->base, base) != 0 || strcmp(s->roll, roll) != 0) {
		/* a PATCH or a reload moved the route to other backends: the
		 * window judges them from now on */
		if (s->base[0])
			sp_guard_window_restart(&s->win);
		snprintf(s->base, sizeof(s->base), "%s", base);
		snprintf(s->roll, sizeof(s->roll), "%s", roll);
	}
	struct sp_guard_snapshot now, d;
	snapshot(rt, r->name, base, roll, &now);
	sp_guard_window_push(&s->win, &now, &d);
	time_t t = time(NULL), mono = mono_s();
	uint32_t bp = r->rollout.percent_bp;
	if (bp != s->last_bp) {
		/* moved by someone else: the step interval starts again */
		s->last_bp = bp;
		s->last_step = mono;
	}
	if (s->tripped || bp == 0)
		return;
	char reason[256];
	/* a change makes a new generation, which may free r */
	char name[SP_NAME_MAX];
	snprintf(name, sizeof(name), "%s", r->name);
	if (sp_guard_check(g, &d, reason, sizeof(reason))) {
		struct tm tm;
		char to[256];
		snprintf(to, sizeof(to), "%s", roll);
		if (set_percent(rt, name, 0, "guard-trip") < 0)
			return; /* not in force: the next tick tries again */
		gmtime_r(&t, &tm);
		strftime(s->at, sizeof(s->at), "%Y-%m-%dT%H:%M:%SZ", &tm);
		snprintf(s->reason, sizeof(s->reason), "%s", reason);
		s->tripped = 1;
		sp_guard_window_restart(&s->win); /* a re-armed guard judges fresh traffic */
		sp_log(SP_LOG_WARN, "guard: route %s: %s: rollout to %s pulled back from %.2f %% to 0",
		       name, reason, to, bp / 100.0);
		sp_runtime_save_state(rt);
		return;
	}
	uint32_t next = sp_guard_next_step(g, bp, &d);
	if (next && mono - s->last_step >= g->step_interval_s) {
		sp_log(SP_LOG_INFO, "guard: route %s: holding; next step %.2f %% -> %.2f %%", name,
		       bp / 100.0, next / 100.0);
		if (set_percent(rt, name, next, "guard-step") == 0) {
			s->last_bp = next;
			s->last_step = mono;
		}
	}
}

void sp_guards_tick(struct sp_runtime *rt, struct sp_guards *gs)
{
	/* route changes replace rt->cfg: walk by name over a stable generation */
	struct sp_config *cfg = sp_config_ref(rt->cfg);
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const struct sp_route *r = &cfg->routes[i];
		if (!r->has_rollout || !r->rollout.guard.enabled)
			continue;
		/* the running generation's view of the route (percent may have moved) */
		for (size_t k = 0; k < rt->cfg->nroutes; k++)
			if (strcmp(rt->cfg->routes[k].name, r->name) == 0)
				tick_route(rt, gs, &rt->cfg->routes[k]);
	}
	sp_config_unref(&cfg);
	gs->ticked = 1;
}

json_t *sp_guard_json(struct sp_guards *gs, const struct sp_route *r)
{
	const struct sp_guard_cfg *g = &r->rollout.guard;
	if (!r->has_rollout || !g->enabled)
		return json_null();
	struct guard_state *s = gs ? state_for(gs, r->name, 0) : NULL;
	json_t *steps = json_array();
	for (size_t i = 0; i < g->nsteps; i++)
		json_array_append_new(steps, json_real(g->steps_bp[i] / 100.0));
	return json_pack("{s:b, s:s?, s:s?, s:f, s:f, s:f, s:i, s:i, s:o, s:i}", "tripped",
			 s && s->tripped, "reason", s && s->tripped ? s->reason : NULL, "tripped_at",
			 s && s->tripped ? s->at : NULL, "max_error_rate", g->max_error_rate,
			 "max_diff_rate", g->max_diff_rate, "max_p99_ratio", g->max_p99_ratio,
			 "min_requests", g->min_requests, "window_s", g->window_s, "steps", steps,
			 "step_interval_s", g->step_interval_s);
}

int sp_guard_tripped(struct sp_guards *gs, const char *route)
{
	struct guard_state *s = gs ? state_for(gs, route, 0) : NULL;
	return s && s->tripped;
}

int sp_guard_rearm(struct sp_guards *gs, const char *route)
{
	struct guard_state *s = state_for(gs, route, 0);
	if (!s || !s->tripped)
		return -1;
	s->tripped = 0;
	s->reason[0] = '\0';
	sp_guard_window_restart(&s->win);
	s->last_step = mono_s();
	return 0;
}

int sp_guards_prune(struct sp_guards *gs, const struct sp_config *cfg)
{
	int dropped = 0;
	for (struct guard_state **pp = &gs->head, *s; (s = *pp);) {
		const struct sp_route *r = sp_config_route(cfg, s->route);
		if (r && r->has_rollout && r->rollout.guard.enabled) {
			pp = &s->next;
			continue;
		}
		if (s->tripped) {
			sp_log(SP_LOG_WARN, "guard: route %s: %s: its trip (%s, at %s) is dropped; the "
			       "rollout stays where its override holds it", s->route,
			       r ? "the configuration has no guard for it any more" : "the route is gone",
			       s->reason, s->at);
			dropped++;
		}
		*pp = s->next;
		state_free(s);
	}
	return dropped;
}

json_t *sp_guards_save(struct sp_guards *gs)
{
	json_t *o = json_object();
	for (struct guard_state *s = gs ? gs->head : NULL; s; s = s->next)
		if (s->tripped)
			json_object_set_new(o, s->route, json_pack("{s:s, s:s}", "reason", s->reason,
								    "tripped_at", s->at));
	return o;
}

int sp_guard_entry_ok(const json_t *v)
{
	return json_is_object(v) && json_is_string(json_object_get(v, "reason")) &&
	       json_is_string(json_object_get(v, "tripped_at"));
}

void sp_guards_restore(struct sp_guards *gs, const json_t *saved)
{
	const char *route;
	json_t *v;
	/* what the file says, and only that (it may be read again at start) */
	for (struct guard_state *s = gs->head; s; s = s->next)
		s->tripped = 0;
	json_object_foreach((json_t *)saved, route, v) {
		struct guard_state *s = sp_guard_entry_ok(v) ? state_for(gs, route, 1) : NULL;
		if (!s)
			continue;
		s->tripped = 1;
		/* cut inside a character, a foreign file's long reason would be
		 * text json_pack refuses: the trip would not be saved again */
		sp_copy_text(s->reason, sizeof(s->reason), json_string_value(json_object_get(v, "reason")));
		sp_copy_text(s->at, sizeof(s->at), json_string_value(json_object_get(v, "tripped_at")));
	}
}
