/* Shadow exchanges: a copy of a live request sent to a second backend, whose
 * answer is compared with the one the client got. A shadow never delays or
 * changes the client's response: it is a separate, budgeted task owned by the
 * worker, fed by the session and finished on its own schedule. */
#ifndef SP_SHADOW_H
#define SP_SHADOW_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

#include "accesslog.h"
#include "buf.h"
#include "config.h"
#include "http.h"
#include "stats.h"

enum sp_shadow_skip {
	SP_SKIP_BUDGET,           /* max_in_flight reached */
	SP_SKIP_REQUEST_BODY,     /* request body above max_body_bytes */
	SP_SKIP_RESPONSE_BODY,    /* a response body above max_body_bytes */
	SP_SKIP_PRIMARY_INCOMPLETE, /* the client's exchange did not finish */
	SP_SKIP_BACKEND_DOWN,     /* the shadow backend refuses connections (passive health) */
	SP_SKIP_UNRESPONSIVE,     /* shadows to it time out (sp_health_shadow_usable) */
	SP_SKIP_FELL_BACK,        /* the primary was retried on the shadow's backend */
	SP_SKIP_BUSY,             /* the shadow backend's servers are at max_conns */
	SP_SKIP__COUNT
};

/* The reason's name in summaries, metrics and the admin API. */
const char *sp_shadow_skip_name(enum sp_shadow_skip k);

/* The counters of shadow exchanges, for a route and for each direction. */
struct sp_shadow_counts {
	_Atomic uint64_t mirrored, compared, identical, different, noise, errors, timeouts;
	_Atomic uint64_t skipped[SP_SKIP__COUNT];
	struct sp_hist lat_primary, lat_shadow;
};

/* A direction: exchanges served by backend `primary` and mirrored to
 * `shadow`. A rollout shadowed to "@other" runs two (legacy -> modern,
 * modern -> legacy), and a flip turns one into the other: comparing legacy
 * with modern and modern with legacy are different questions, so each has
 * its counts and latencies. */
#define SP_SHADOW_DIRS 4
struct sp_shadow_dir {
	char primary[SP_NAME_MAX], shadow[SP_NAME_MAX]; /* set before the slot is published */
	long long since_ms; /* unix ms of its first exchange in this run of the route's counters */
	struct sp_shadow_counts c;
};

/* Per route, per worker. Written by the owning worker only; read (relaxed)
 * by the main thread for the summaries. `all` counts every exchange; dirs the
 * first SP_SHADOW_DIRS directions (a route has one or two: its backend and
 * its rollout's), later ones count in `all` only. */
struct sp_shadow_stats {
	struct sp_shadow_counts all;
	_Atomic int ndirs;
	struct sp_shadow_dir dirs[SP_SHADOW_DIRS];
};

struct sp_worker;
struct sp_route;
struct sp_shadow;

/* Starts mirroring a request the session decided to sample. Returns NULL
 * when it cannot (budget, connection failure: counted). head is the
 * primary's serialised request head; has_body says body bytes follow; t,
 * what the shadow backend takes instead of the head's Host and path
 * (borrowed for the call only). path is the client's, for the diff log;
 * vars, what the shadow backend's header rules' variables stand for (its
 * http_host, the client's Host when kept, also maps answers' Location
 * fields: location_rewrite). */
struct sp_shadow *sp_shadow_start(struct sp_worker *w, struct sp_config *cfg,
				  const struct sp_route *route, int shadow_backend,
				  int primary_backend, const char *method, const char *path,
				  size_t path_len, const struct sp_buf *query, const char *reqid,
				  const struct sp_hdr_vars *vars,
				  const struct sp_buf *head, int has_body,
				  const struct sp_retarget *t);

/* Request body bytes, framed exactly as sent to the primary; body of them
 * are the body's own (max_body_bytes counts those, not chunk framing). */
void sp_shadow_request_bytes(struct sp_shadow *sh, const void *p, size_t n, size_t body);
void sp_shadow_request_done(struct sp_shadow *sh);

/* What the client gets. */
void sp_shadow_primary_head(struct sp_shadow *sh, int status, const struct sp_hdr *h, size_t n);
void sp_shadow_primary_body(struct sp_shadow *sh, const char *p, size_t n);
/* The primary finished (status is what the client got); the session lets go
 * of the shadow (*sh is NULLed). Before the request was whole (an early
 * answer, a failure mid-upload) it is a primary_incomplete skip instead. */
void sp_shadow_primary_done(struct sp_shadow **sh, int status, double ms);
/* The primary will not finish; nothing is compared. */
void sp_shadow_abandon(struct sp_shadow **sh);
/* The primary's connection to that server of its backend is up (connected,
 * or taken alive from the pool), for the head (the primary's, as sent): the
 * noise sample, if the route takes one, asks that server too, now. */
void sp_shadow_primary_served(struct sp_shadow *sh, int server, const struct sp_buf *head);

/* The primary goes to another server of its backend (the one it was sent
 * to failed it): a noise sample already sent to that server is dropped (the
 * comparison goes on without it). */
void sp_shadow_primary_retried(struct sp_shadow *sh);

/* The primary was retried on another backend (a refused connection): the
 * comparison names that one, or is dropped (a primary_fell_back skip) when
 * it is the shadow's own backend. */
void sp_shadow_primary_moved(struct sp_shadow **sh, int backend);

/* Gives up every mirror still waiting (counted as timeouts); shutdown. */
void sp_shadow_expire_all(struct sp_worker *w);
/* The worker's shadow timer (its shadow_timer's callback, arg the worker):
 * times out the shadows that are due. */
void sp_shadow_on_due(evutil_socket_t fd, short what, void *arg);
/* Closes every shadow of the worker (shutdown). */
void sp_shadow_kill_all(struct sp_worker *w);
/* A comparison is back from the comparer (worker thread, through its port):
 * counts and logs it, and frees its shadow unless its session still holds
 * it. */
struct sp_cmp_job;
void sp_shadow_compared(struct sp_cmp_job *j);

/* A route's counters summed over the workers (any thread): v holds
 * mirrored, compared, identical, different, noise, errors, timeouts; the
 * latency histograms are added to when not NULL. */
void sp_shadow_sum(struct sp_worker *const *ws, int n, const char *route, uint64_t v[7],
		   uint64_t skip[SP_SKIP__COUNT], uint64_t *lat_primary, uint64_t *lat_shadow);
/* Appends one summary line per shadowed route of cfg, the counters summed
 * over the workers, to log; instance names the process (host:pid:start), so
 * that logs of several instances can be read together. With next (the
 * generation a reload switches to), only the routes next does not have, or
 * has without a shadow: their last counts, which go with them. Safe from the main thread while workers
 * run. */
void sp_shadow_write_summaries(const struct sp_config *cfg, const struct sp_config *next,
			       struct sp_worker *const *ws, int n, struct sp_accesslog *log,
			       const char *instance);

#endif
