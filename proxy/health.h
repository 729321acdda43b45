/* Backend health, shared by every worker and every configuration generation
 * (keyed by the backend's URL): passive (consecutive connect failures or 5xx
 * answers reported by the workers) and active (periodic checks run by the
 * main thread). A down backend is avoided only when a route has another side
 * to send the request to. */
#ifndef SP_HEALTH_H
#define SP_HEALTH_H

#include <stdatomic.h>
#include <stdint.h>

#include <event2/event.h>

#include "tls.h"

struct sp_backend;
struct sp_config;
struct sp_server;

struct sp_health {
	struct sp_health *_Atomic next;
	char url[512];
	_Atomic int down;
	_Atomic int consecutive_failures;
	_Atomic int64_t retry_at_ms; /* passive: a trial request is let through after this */
	_Atomic uint64_t transitions;
	/* what sp_health_report was told: answers (below 500 for a request,
	 * any for a shadow) and failures (connections not made, timeouts, bad
	 * answers, 5xx to a request) */
	_Atomic uint64_t ok, failed;
	/* requests it failed (no connection, closed or reset before an answer)
	 * that were sent on to another server of the backend */
	_Atomic uint64_t retried;
	/* answers of retry_on_status not retried: the budget was spent */
	_Atomic uint64_t retries_denied;
	/* an active check runs for it and decides when it is up again; set only
	 * by the checker, when a generation is committed (sp_health_checker_update) */
	_Atomic int active;
	/* shadows only: a mirror that takes connections but does not answer */
	_Atomic int shadow_timeouts;        /* consecutive shadow exchanges that timed out */
	_Atomic int64_t shadow_retry_at_ms; /* nonzero: shadows paused, a trial after this */
	/* taken out by the admin API (PATCH /api/backends/NAME): no new
	 * requests or shadows, as if at max_conns; set by the main thread */
	_Atomic int drained;
	/* when it came back up or was given back its requests (now_ms; 0:
	 * never): slow_start_ms counts from here */
	_Atomic int64_t back_at_ms;
	/* connections to it in use for an exchange (a request, a shadow, a
	 * tunnel), in every worker: what a drain waits for */
	_Atomic long in_flight;
	/* https: the last TLS session made with it, offered to the next
	 * connection (requests, shadows, active checks) */
	struct sp_tls_resume resume;
};

struct sp_health_table;

/* Whether sv is drained (any thread). */
int sp_health_drained(const struct sp_server *sv);

struct sp_health_table *sp_health_table_new(void);
void sp_health_table_free(struct sp_health_table **t);
/* Points every server of cfg (not yet shared) at its health entry, adding
 * an entry (up, nothing known) for a new URL. Changes nothing a running
 * generation sees: cfg may still be refused. */
int sp_health_attach(struct sp_health_table *t, struct sp_config *cfg);
/* A reload's cfg goes in force after old: its servers that old did not
 * list (by URL: new, or listed again after a removal) start their
 * slow_start_ms now. Not when the reload is only loaded (it may still be
 * refused), and not at start (old is none). */
void sp_health_listed(const struct sp_config *old, const struct sp_config *cfg);

/* May a request go to this server of be? (any worker; a down server's
 * trial, when due, is taken by the caller that gets 1) */
int sp_health_usable(const struct sp_backend *be, const struct sp_server *sv);
/* A worker's outcome with this server of be: ok = answered with < 500. */
void sp_health_report(const struct sp_backend *be, const struct sp_server *sv, int ok);
/* A worker's turn over a backend's servers: where its round-robin is, and,
 * for a backend with weights, backup servers or least_conn, each server's
 * current weight (the smooth weighted round-robin nginx uses); busy, the
 * worker's connections to each server in use (its pool counts them), is
 * what least_conn reads. Zero to start. */
/* retry_on_status's budget, per worker and backend (in its sp_turn): the
 * answers of the backend's servers and the retries after them, this second
 * and the one before (monotonic seconds). */
struct sp_retry_budget {
	int64_t second;
	unsigned answers[2], retries[2]; /* [0]: this second, [1]: the one before */
};

/* An answer of one of the backend's servers, at now_ms. */
void sp_retry_budget_answer(struct sp_retry_budget *b, int64_t now_ms);
/* Whether one more retry after an answer fits, at now_ms: the retries of
 * the last two seconds stay under percent of their answers, or this
 * second's under min_per_s. */
int sp_retry_budget_fits(struct sp_retry_budget *b, int64_t now_ms, int percent, int min_per_s);
/* A retry after an answer was made (after sp_retry_budget_fits, the same
 * second). */
void sp_retry_budget_spend(struct sp_retry_budget *b);

struct sp_turn {
	struct sp_retry_budget budget;
	unsigned next;
	int cw[64];        /* SP_SERVERS_MAX */
	unsigned busy[64]; /* SP_SERVERS_MAX */
};

/* The next server of be that may take a request, or -1 when none: every one
 * is down or, for a shadow (for_shadow), down or not answering shadows
 * (*paused, when not NULL, says whether one was skipped for that). In turn
 * (t, a worker's own, moved past it); by weight, for a weighted backend,
 * each server taking its share in a smooth sequence (weights 5, 1, 1 give
 * a a b a c a a); with least_conn, among those with the fewest connections
 * in use for their weight, by weight; a down server whose trial is due
 * takes it first; backup servers only when no other server may. */
int sp_health_pick(const struct sp_backend *be, struct sp_turn *t, int for_shadow, int *paused);
/* When sp_health_pick finds none (every server down): one to try all the
 * same, as the backend's balance would choose among its servers that are
 * not backups (all of them, in turn, for a backend without weights); -1
 * when each has max_conns connections in use. Both leave out a server at
 * max_conns (sp_health_has_room). */
int sp_health_pick_down(const struct sp_backend *be, struct sp_turn *t);
/* The server a request whose connection to server `from` failed goes to
 * next: one not in tried (bit i: server i), with room, up, as the balance
 * chooses (by weight, or by connections in use; in list order after from
 * for a backend with neither); when none is up, a down one whose trial is
 * due; backups only when no other server is left. -1: none. */
int sp_health_pick_retry(const struct sp_backend *be, struct sp_turn *t, uint64_t tried,
			 int from);
/* Whether server may take one more exchange (for_shadow: a shadow, which
 * leaves a quarter of max_conns, one at least, to requests). */
int sp_health_has_room(const struct sp_backend *be, const struct sp_turn *t, int server,
		       int for_shadow);

/* Drains the server of this URL (on) or gives it back its requests, in
 * every backend that lists it; the state outlives reloads. -1: no memory
 * (main thread). */
int sp_health_set_drained(struct sp_health_table *t, const char *url, int on);
/* Puts back the flag a sp_health_set_drained changed (its change could not
 * be kept): no slow start, since the server never left service. */
void sp_health_undo_drained(struct sp_health_table *t, const char *url, int was);
/* The weight, in hundredths, server i of be has at now_ms: its own, or
 * during its slow start (slow_start_ms since it came back) a share of it
 * growing with the time since, at least 1. Pure but for the health it reads. */
unsigned sp_health_weight_now(const struct sp_backend *be, size_t i, int64_t now_ms);
/* The clock of health's times (monotonic milliseconds). */
int64_t sp_health_now_ms(void);
/* Times the servers a backend of this name has listed, in any configuration
 * since the start, were marked down or up: a counter that a reload dropping
 * a server does not lower (main thread). */
uint64_t sp_health_backend_transitions(const struct sp_health_table *t, const char *backend);
/* Calls fn with the URL of each drained server (main thread). */
void sp_health_each_drained(const struct sp_health_table *t, void (*fn)(const char *url, void *arg),
			    void *arg);
/* Gives back their requests to the drained servers cfg no longer lists
 * (so that one listed again later starts as any other): how many. */
int sp_health_prune_drained(struct sp_health_table *t, const struct sp_config *cfg);

/* What the metrics show of a server's health, or a backend's: a backend is
 * down when all its servers are, its shadows paused when paused to all, and
 * its transitions are those of its servers together. */
struct sp_health_view {
	int down;           /* marked down (passive or active) */
	int shadows_paused; /* shadows to it paused: they time out (below) */
	uint64_t transitions;
	uint64_t ok, failed; /* outcomes reported (sp_health_report) */
	uint64_t retried;    /* sp_health_count_retry */
	uint64_t retries_denied; /* sp_health_count_retry_denied */
	long in_flight;          /* sp_health_in_flight */
};
struct sp_health_view sp_health_view(const struct sp_backend *be);
/* A failed outcome that is not the server's health's to judge (a shadow
 * that timed out or got a bad answer: its own pause handles those). */
void sp_health_count_failed(const struct sp_server *sv);
/* An answer that is not the server's health's to judge either way (a
 * shadow's 5xx: a difference to report, neither an outage nor a sign that
 * the server works): counted ok, its run of failures left as it is. */
void sp_health_count_ok(const struct sp_server *sv);
/* A request sv failed went on to another server of its backend. */
void sp_health_count_retry(const struct sp_server *sv);
/* An answer of sv that retry_on_status would have retried, passed on: the
 * backend's retry budget was spent. */
void sp_health_count_retry_denied(const struct sp_server *sv);
struct sp_health_view sp_health_server_view(const struct sp_server *sv);
/* A worker took a connection to h's server for an exchange (delta 1) or
 * gave it back (-1). */
static inline void sp_health_in_flight(struct sp_health *h, int delta)
{
	if (h)
		atomic_fetch_add_explicit(&h->in_flight, delta, memory_order_relaxed);
}

/* Shadows to a backend that keeps them waiting: after health.unhealthy
 * shadow exchanges in a row timed out, shadows to it pause, with one trial
 * per health.interval_ms, until one is answered. Each of them held a
 * connection and a budget slot for a whole shadow timeout, and then a new
 * connection replaced it; paused, they cost nothing. Primaries are not
 * affected: a shadow timeout is not a backend failure (shadow timeouts are
 * often shorter than response timeouts). */
int sp_health_shadow_usable(const struct sp_backend *be, const struct sp_server *sv);
/* A shadow exchange with this server of be was answered (1) or timed out (0). */
void sp_health_shadow_report(const struct sp_backend *be, const struct sp_server *sv, int answered);

/* Active checks of the running generation's backends that have
 * `health.path`, on base (the main thread); none until the first update. */
struct sp_health_checker;
struct sp_health_checker *sp_health_checker_new(struct event_base *base);
/* Brings the checks in line with cfg, the generation just committed (keeps
 * a reference): a check whose backend has the same URL and health settings
 * in cfg goes on as it was (its timer, its passes and failures so far, the
 * check in flight); the checks cfg no longer has stop, and new ones start
 * with a check at once. Then tells the workers which backends a running
 * check decides for (sp_health.active). Returns 0, or -1 when out of memory
 * (the checks stay as they were). */
int sp_health_checker_update(struct sp_health_checker *hc, struct sp_config *cfg);
void sp_health_checker_free(struct sp_health_checker **c);

#endif
