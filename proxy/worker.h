/* Workers: one thread, one event loop, its own listeners, pools and sessions. */
#ifndef SP_WORKER_H
#define SP_WORKER_H

#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>

#include "accesslog.h"
#include "buf.h"
#include "comparer.h"
#include "config.h"
#include "listen.h"
#include "pacer.h"
#include "upstream.h"

#include "shadow.h"

struct sp_session;
struct sp_shadow;

/* The backends a route's counters tell apart: the first SP_MAX_SIDES in the
 * route's node, the others allocated as they come (a route flipped between
 * many backends over the process's life); past SP_MAX_SIDES_ALL they fold
 * into the last. */
#define SP_MAX_SIDES 8
#define SP_MAX_SIDES_ALL 64

/* The backend failures counted by reason (the session's error strings). */
#define SP_UPSTREAM_REASONS 9
extern const char *const sp_upstream_reasons[SP_UPSTREAM_REASONS];

/* Requests of one route served by one backend. */
/* How a request's wait in its backend's queue ended (backends.NAME.queue). */
enum sp_queue_end { SP_QUEUE_NONE, SP_QUEUE_SERVED, SP_QUEUE_TIMEOUT, SP_QUEUE_GAVE_UP };
#define SP_QUEUE_ENDS 3
extern const char *const sp_queue_ends[SP_QUEUE_ENDS]; /* "served", "timeout", "gave_up" */

struct sp_side_stats {
	char backend[SP_NAME_MAX]; /* set before the slot is published */
	_Atomic uint64_t requests;
	_Atomic uint64_t status[6]; /* [1]..[5]: 1xx..5xx; [0]: no answer (client left) */
	_Atomic uint64_t upstream_errors;
	_Atomic uint64_t errors_by[SP_UPSTREAM_REASONS];
	struct sp_hist latency; /* whole exchange, ms */
	struct sp_durations durations; /* the same, at the metrics' bounds */
	struct sp_hist wait; /* the backend's: until its answer head, upload excluded (guard) */
	_Atomic uint64_t latency_us_sum;
	/* requests routed to this side that the route's other side served: it
	 * was down, each of its servers at max_conns, or it refused them */
	_Atomic uint64_t fell_back;
	/* requests that waited in the backend's queue, by sp_queue_end - 1 */
	_Atomic uint64_t queued[SP_QUEUE_ENDS];
	_Atomic int64_t waiting; /* those waiting now (sp_worker_wait_begin) */
};

/* Counters of one route (by name; "" is the default backend's traffic),
 * kept while the running configuration has the route, or a mirror in flight
 * holds them. */
struct sp_route_stats {
	struct sp_route_stats *_Atomic next;
	struct sp_route_stats *retired_next; /* worker thread only, as are the two below */
	int live;  /* the worker's configuration has the route (else out of the list) */
	int holds; /* mirrors in flight counting into it */
	char name[SP_NAME_MAX];
	long long since_ms; /* the route's counters_since_ms */
	_Atomic int nsides;
	struct sp_side_stats sides[SP_MAX_SIDES];
	struct sp_side_stats *_Atomic more[SP_MAX_SIDES_ALL - SP_MAX_SIDES]; /* sides past those */
	struct sp_shadow_stats shadow;
};

/* Side i of a route's counters, i below the nsides a reader loaded (acquire). */
static inline struct sp_side_stats *sp_route_side(struct sp_route_stats *n, int i)
{
	return i < SP_MAX_SIDES ? &n->sides[i]
				: atomic_load_explicit(&n->more[i - SP_MAX_SIDES], memory_order_relaxed);
}

struct sp_worker {
	int id;
	struct event_base *base;
	pthread_t thread;
	struct sp_config *cfg; /* this worker's reference to the current generation */
	struct evconnlistener **listeners;
	size_t nlisteners;
	struct sp_pool **pools; /* one per backend of cfg */
	struct sp_accesslog *alog; /* borrowed */
	struct sp_accesslog *difflog; /* borrowed */
	struct sp_diff_ring *diffring; /* borrowed: recent differences for the admin API */
	struct sp_comparer *comparer;  /* borrowed: NULL compares on this thread */
	struct sp_cmp_port cmp_port;   /* where the comparer hands this worker's jobs back */
	struct sp_buf logbuf;
	struct sp_buf diffbuf;
	struct sp_buf locbuf; /* Location values in the client's terms, during a head's hook */
	struct sp_stash stash; /* spare head buffers of this worker's sessions */
	struct sp_route_stats **route_stats; /* one per route of cfg */
	struct sp_route_stats *default_stats;
	struct sp_route_stats *_Atomic stats_head;
	struct sp_route_stats *stats_retired; /* unlinked, freed once no reader is inside */
	pthread_rwlock_t stats_lock; /* readers: other threads; writer: freeing retired nodes */
	TAILQ_HEAD(sp_shadow_q, sp_shadow) shadows;
	int shadow_inflight;
	struct event *shadow_timer; /* the shadows' timeouts (sp_shadow_on_due) */
	int64_t shadow_due_us;      /* when it fires (0: not armed) */
	struct sp_pacer shadow_pacer; /* spreads mirror starts when the budget binds */
	int expiring; /* giving up the remaining mirrors at shutdown */
	struct event *grace_timer;
	uint64_t rng;
	time_t date_at;                     /* the second date holds */
	char date[SP_HTTP_DATE_LEN + 1];    /* for Date headers the proxy adds */
	TAILQ_HEAD(sp_session_q, sp_session) sessions;
	_Atomic size_t nsessions; /* read by the main thread for metrics */
	/* the most sessions at once since the main thread last took it (a
	 * crowd that came and went between two of its looks) */
	_Atomic size_t peak_sessions;
	_Atomic uint64_t tls_handshake_failures; /* clients' (listener side) */
	_Atomic uint64_t proxy_protocol_failures; /* bad or missing PROXY headers */
	int draining;
	int accept_paused; /* max_connections reached */
	struct event *stop_ev;
	struct event *drain_timer;
	struct sp_accept_pause accept_pause; /* accept() out of descriptors or memory */
	struct event *reload_ev;
	pthread_mutex_t reload_lock;
	struct sp_config *reload_cfg; /* handed over by the main thread */
	unsigned long reload_gen;     /* reload_cfg's generation number */
	atomic_ulong applied_gen;     /* the generation the worker runs (set by the worker) */
	atomic_int finished;          /* the loop has ended (set by the worker) */
	int wake_fd;                  /* eventfd: the main thread's requests */
	struct event *wake_ev;
	atomic_int want_stop, want_reload, want_compared;
};

/* Creates the worker and binds its listeners (SO_REUSEPORT). Returns NULL
 * and logs why on failure. Borrows alog; takes a reference to cfg. */
struct sp_worker *sp_worker_new(int id, struct sp_config *cfg, struct sp_accesslog *alog,
				struct sp_accesslog *difflog);
int sp_worker_start(struct sp_worker *w);
/* Asks the worker to stop accepting and finish in-flight requests; safe from
 * any thread. */
void sp_worker_stop(struct sp_worker *w);
void sp_worker_join(struct sp_worker *w);
/* True once the worker's loop has ended (any thread). */
int sp_worker_finished(struct sp_worker *w);
/* Whether the listen addresses cfg adds to old can be bound (a test bind,
 * released at once); -1 with each failure in diag. A reload checks this
 * before switching, as workers close the old listeners when they switch. */
int sp_worker_check_listen(const struct sp_config *old, const struct sp_config *cfg,
			   struct sp_diag *diag);
/* Hands a new generation to the worker (any thread; takes a reference). New
 * requests use it at once, requests in flight finish on theirs. */
void sp_worker_reload(struct sp_worker *w, struct sp_config *cfg, unsigned long gen);
/* Which server of backend index `backend` of generation cfg the next request
 * goes to: in turn, by weight or by connections in use, over those that may
 * take one (sp_health_pick), -1 when none may. sp_worker_next: one chosen
 * the same way whatever its health, backups left out (a backend that is
 * down with nowhere else to go: sp_health_pick_down). Both skip servers at
 * max_conns: -1 when each is. sp_worker_pick_any: the first, else the
 * second. */
int sp_worker_pick(struct sp_worker *w, const struct sp_config *cfg, int backend, int for_shadow,
		   int *paused);
int sp_worker_next(struct sp_worker *w, const struct sp_config *cfg, int backend);
int sp_worker_pick_any(struct sp_worker *w, const struct sp_config *cfg, int backend);
/* sp_health_pick_retry on the worker's turn for the backend. */
int sp_worker_pick_retry(struct sp_worker *w, const struct sp_config *cfg, int backend,
			 uint64_t tried, int from);
/* Whether the worker may send one more shadow to that server (not drained,
 * below the part of the backend's max_conns shadows may use), and whether
 * one of the backend's servers is past that part or drained. */
int sp_worker_shadow_room(struct sp_worker *w, const struct sp_config *cfg, int backend,
			  int server);
int sp_worker_shadow_any_full(struct sp_worker *w, const struct sp_config *cfg, int backend);
/* Queues a request, last, for a connection slot of cfg's backend (its
 * queue: backends.NAME.queue): 0, or -1 when the backend has no queue, no
 * server of it is at max_conns (all drained) and no request waits, the
 * queue is full, or the backend left the worker's pools. */
int sp_worker_wait(struct sp_worker *w, const struct sp_config *cfg, int backend,
		   struct sp_waiter *wt);
/* Requests wait in the queue of cfg's backend: a newcomer goes behind them. */
int sp_worker_queue_ahead(struct sp_worker *w, const struct sp_config *cfg, int backend);
/* A connection to server `server` of backend index `backend` of generation
 * cfg, which may be older than the worker's: from the worker's pool for that
 * backend or, when a reload removed it or changed its servers or TLS
 * settings, one of its own that is not kept after the exchange (requests in
 * flight finish on their own configuration). NULL with *why on failure. */
struct sp_upconn *sp_worker_connect(struct sp_worker *w, const struct sp_config *cfg, int backend,
				    int server, enum sp_take take, const char **why);
/* A route's counters by name, NULL when the worker has none. Other threads
 * call them between sp_worker_stats_read_lock and _unlock, and use what they
 * found only until then: a route gone from the configuration loses its
 * counters. */
struct sp_shadow_stats *sp_worker_route_stats(struct sp_worker *w, const char *route);
struct sp_route_stats *sp_worker_find_stats(struct sp_worker *w, const char *route);
void sp_worker_stats_read_lock(struct sp_worker *w);
void sp_worker_stats_read_unlock(struct sp_worker *w);
/* A mirror's hold on the counters of route index i of the worker's
 * configuration, kept until released (worker thread). */
struct sp_route_stats *sp_worker_hold_stats(struct sp_worker *w, size_t i);
void sp_worker_release_stats(struct sp_worker *w, struct sp_route_stats *n);
/* The current HTTP date, formatted once a second (worker thread). */
const char *sp_worker_date(struct sp_worker *w);
/* retry_on_status's budget for backend (sp_retry_budget): an answer of one
 * of its servers; whether a retry after one fits; one made. */
void sp_worker_note_answer(struct sp_worker *w, const struct sp_config *cfg, int backend);
int sp_worker_retry_fits(struct sp_worker *w, const struct sp_config *cfg, int backend);
void sp_worker_retry_spend(struct sp_worker *w, const struct sp_config *cfg, int backend);
/* Counts a finished exchange (worker thread). route NULL: default backend;
 * backend NULL: answered by the proxy itself; upstream_error: the backend's
 * failure (one of sp_upstream_reasons), or NULL; ms the whole exchange;
 * wait_ms the backend's own time (-1: no backend took part). */
void sp_worker_count(struct sp_worker *w, const struct sp_config *cfg,
		     const struct sp_route *route, const char *backend, int status,
		     const char *upstream_error, double ms, double wait_ms);
/* Counts a request of route that was routed to backend `from` and served
 * by the other side (worker thread). */
void sp_worker_count_fallback(struct sp_worker *w, const struct sp_config *cfg,
			      const struct sp_route *route, const char *from);
/* A request of route (NULL: the default backend's traffic), of the
 * worker's running configuration, starts waiting in backend's queue: the
 * counters that count it as waiting, held until sp_worker_wait_end. */
struct sp_route_stats *sp_worker_wait_begin(struct sp_worker *w, const struct sp_route *route,
					    const char *backend, struct sp_side_stats **side);
void sp_worker_wait_end(struct sp_worker *w, struct sp_route_stats **n, struct sp_side_stats *side);
/* A request of route that waited in backend's queue, and how that ended. */
void sp_worker_count_queued(struct sp_worker *w, const struct sp_config *cfg,
			    const struct sp_route *route, const char *backend, enum sp_queue_end end);
/* Once its thread has ended: waits for the comparisons it has out and
 * counts them (before the final summaries). */
void sp_worker_take_comparisons(struct sp_worker *w);
void sp_worker_free(struct sp_worker **w);

/* session.c */
/* tls: the listener's server context, or NULL for plain HTTP;
 * proxy_protocol: the connection starts with a PROXY protocol header. */
void sp_session_accept(struct sp_worker *w, evutil_socket_t fd, const struct sockaddr *sa,
		       socklen_t len, SSL_CTX *tls, int proxy_protocol);
/* Closes idle keep-alive sessions; busy ones close after their current
 * exchange, fresh ones (no request yet) after their first. */
void sp_sessions_drain(struct sp_worker *w);
/* Closes every session now. */
void sp_sessions_kill(struct sp_worker *w);
/* worker.c: called by a session as it comes and goes */
void sp_worker_session_added(struct sp_worker *w);
void sp_worker_session_gone(struct sp_worker *w);
/* Ends a draining worker's loop when nothing is left to finish. */
void sp_worker_maybe_done(struct sp_worker *w);

#endif
