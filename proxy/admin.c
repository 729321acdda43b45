/* The admin API: a small HTTP/1.1 server on its own listener in the main
 * thread. It reads counters the workers publish, and changes routes by
 * building a new configuration generation (file + overrides) that every worker
 * switches to. One request per connection: admin traffic is rare. */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/listener.h>

#include "clock.h"
#include "conn.h"
#include "dashboard.h"
#include "guard.h"
#include "health.h"
#include "h1.h"
#include "listen.h"
#include "log.h"
#include "pathnorm.h"
#include "override.h"
#include "stats.h"

#define MAX_BODY 65536
/* Admin connections at once: past it the listener stops and new ones wait in
 * the kernel's backlog, so a flood of admin clients cannot take the
 * descriptors the proxy's workers share with this thread. Each lasts 10 s at
 * most (on_accept). */
#define MAX_CONNS 128

struct admin_conn;

struct sp_admin {
	struct sp_runtime *rt;
	struct evconnlistener *listener;
	struct sp_accept_pause accept_pause; /* accept() out of descriptors or memory */
	TAILQ_HEAD(admin_conn_q, admin_conn) conns; /* closed with the admin */
	size_t nconns; /* at MAX_CONNS, accepting is paused until one ends */
	/* the Host a request may name (admin.address is restart-only) */
	char host[256]; /* as configured, without the brackets of an IPv6 address */
	char port[8];
};

struct admin_conn {
	struct sp_admin *admin;
	TAILQ_ENTRY(admin_conn) link;
	struct sp_conn *c;
	struct sp_h1 *parser;
	char peer[INET6_ADDRSTRLEN];
	char method[16];
	struct sp_buf target;
	struct sp_buf auth;
	struct sp_buf body;
	/* headers a web page's request carries: 0 absent, 1 read, -1 repeated or too long */
	char host[256], origin[256], ctype[128];
	int has_host, has_origin, has_ctype;
	int too_big;
	int bad_version;   /* not HTTP/1.x: a 505 */
	int auth_repeated; /* two Authorization headers: a 400 */
	int head_only;     /* HEAD: the GET answer's head alone */
	char extra[128];   /* header lines of this answer (Allow, WWW-Authenticate) */
	int started;       /* a byte of the request came */
	int answered;
	int request_done; /* its whole request was read (else a lingering close) */
	int hold;           /* the answer waits until every worker runs the change */
	int64_t hold_until; /* ...but no longer than this (µs, sp_deadline_now_us) */
	struct event *timer;
	struct event *hold_timer;
};

static void hold_check(evutil_socket_t fd, short what, void *arg);
static void conn_free(struct admin_conn *a);
static void answered_close(struct admin_conn *a);

/* ---- responses ---- */

/* Sends one whole response and closes: the admin listener answers a
 * single request per connection.  `extra` holds additional header lines,
 * each ending in CRLF. */
static void respond_with(struct admin_conn *a, int status, const char *type, const char *extra,
			 const char *body, size_t len)
{
	struct sp_buf b;
	char date[SP_HTTP_DATE_LEN + 1];
	sp_http_date(time(NULL), date); /* RFC 9110 6.6.1: a server with a clock sends it */
	sp_buf_init(&b);
	sp_buf_printf(&b,
		      "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		      "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s%s"
		      "Connection: close\r\n\r\n",
		      status, sp_http_reason(status), date, type, len, extra, a->extra);
	evbuffer_add(a->c->out, b.data, b.len);
	if (!a->head_only)
		evbuffer_add(a->c->out, body, len);
	sp_buf_deinit(&b);
	a->answered = 1;
	sp_conn_read(a->c, 0);
	if (a->hold) {
		a->hold_until = sp_deadline_now_us() + 1000000;
		hold_check(-1, 0, a);
	} else {
		sp_conn_flush(a->c);
	}
}

/* A change answered 200 is in force: the answer leaves once every worker
 * switched to the new generation (they do within a loop iteration; a
 * second at most, in case one is stuck). */
static void hold_check(evutil_socket_t fd, short what, void *arg)
{
	struct admin_conn *a = arg;
	(void)fd;
	if (!sp_runtime_applied(a->admin->rt) && sp_deadline_now_us() < a->hold_until) {
		struct timeval ms = {0, 1000};
		evtimer_add(a->hold_timer, &ms);
		return;
	}
	a->hold = 0;
	sp_conn_flush(a->c);
	/* from the timer, nothing else will see it written (called from
	 * respond_with, on_read does) */
	if ((what & EV_TIMEOUT) && evbuffer_get_length(a->c->out) == 0)
		answered_close(a);
}

static void respond(struct admin_conn *a, int status, const char *type, const char *body,
		    size_t len)
{
	respond_with(a, status, type, "", body, len);
}

static void respond_json(struct admin_conn *a, int status, json_t *j)
{
	/* 15 digits: 0.93, not 0.93000000000000005 */
	char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15))
		       : NULL;
	if (!text) {
		respond(a, 500, "text/plain", "out of memory\n", 14);
	} else {
		struct sp_buf b;
		sp_buf_init(&b);
		sp_buf_adds(&b, text);
		sp_buf_addc(&b, '\n');
		respond(a, status, "application/json", b.data, b.len);
		sp_buf_deinit(&b);
	}
	free(text);
	json_decref(j);
}

/* {"error": msg}, written here: json_pack refuses text that is not UTF-8
 * (a name from a request target, "%FF", or a message cut inside a
 * character), which made the answer a 500. Such bytes are escaped. */
static void respond_error(struct admin_conn *a, int status, const char *msg)
{
	struct sp_buf b;
	sp_buf_init(&b);
	if (sp_buf_adds(&b, "{\n  \"error\": \"") < 0 || sp_buf_add_json_text(&b, msg, strlen(msg)) < 0 ||
	    sp_buf_adds(&b, "\"\n}\n") < 0)
		respond(a, 500, "text/plain", "out of memory\n", 14);
	else
		respond(a, status, "application/json", b.data, b.len);
	sp_buf_deinit(&b);
}

/* ---- counters ---- */

static const char *const status_classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

/* One route's traffic on one backend, summed over the workers. */
struct metric_side {
	const char *route; /* as labelled */
	char backend[SP_NAME_MAX]; /* a copy: the counters may go with their route */
	uint64_t classes[5], errors_by[SP_UPSTREAM_REASONS], le[SP_DURATION_BOUNDS];
	uint64_t count, sum_us, upstream_errors, fell_back, queued[SP_QUEUE_ENDS];
	int64_t waiting;
	uint64_t lat[SP_LAT_BUCKETS]; /* for the API's p50/p99 */
};

/* A request of the side waited in its backend's queue, or waits now: the
 * queue's series are written for it. */
static int had_queue(const struct metric_side *m)
{
	uint64_t n = 0;
	for (int q = 0; q < SP_QUEUE_ENDS; q++)
		n += m->queued[q];
	return n || m->waiting;
}

struct metric_sides {
	struct metric_side *v;
	size_t n, cap;
};

static struct metric_side *side_entry(struct metric_sides *all, const char *label,
				      const char *backend)
{
	for (size_t i = 0; i < all->n; i++)
		if (all->v[i].route == label && strcmp(all->v[i].backend, backend) == 0)
			return &all->v[i];
	if (all->n == all->cap) {
		size_t cap = all->cap ? 2 * all->cap : 16;
		struct metric_side *v = realloc(all->v, cap * sizeof(*v));
		if (!v)
			return NULL;
		all->v = v;
		all->cap = cap;
	}
	struct metric_side *m = &all->v[all->n++];
	memset(m, 0, sizeof(*m));
	m->route = label;
	snprintf(m->backend, sizeof(m->backend), "%s", backend);
	return m;
}

static void collect_route(struct metric_sides *all, struct sp_runtime *rt, const char *route,
			  const char *label)
{
	for (int w = 0; w < rt->nworkers; w++) {
		sp_worker_stats_read_lock(rt->workers[w]);
		struct sp_route_stats *n = sp_worker_find_stats(rt->workers[w], route);
		int k = n ? atomic_load_explicit(&n->nsides, memory_order_acquire) : 0;
		for (int i = 0; i < k; i++) {
			struct sp_side_stats *s = sp_route_side(n, i);
			struct metric_side *m = side_entry(all, label, s->backend[0] ? s->backend : "(proxy)");
			if (!m)
				break;
			for (int c = 0; c < 5; c++)
				m->classes[c] += sp_read(&s->status[c + 1]);
			for (int e = 0; e < SP_UPSTREAM_REASONS; e++)
				m->errors_by[e] += sp_read(&s->errors_by[e]);
			for (int q = 0; q < SP_DURATION_BOUNDS; q++)
				m->le[q] += sp_read(&s->durations.le[q]);
			m->count += sp_read(&s->requests);
			m->sum_us += sp_read(&s->latency_us_sum);
			m->upstream_errors += sp_read(&s->upstream_errors);
			m->fell_back += sp_read(&s->fell_back);
			for (int q = 0; q < SP_QUEUE_ENDS; q++)
				m->queued[q] += sp_read(&s->queued[q]);
			m->waiting += atomic_load_explicit(&s->waiting, memory_order_relaxed);
			sp_hist_sum(&s->latency, m->lat);
		}
		sp_worker_stats_read_unlock(rt->workers[w]);
	}
}

/* A route's counters per backend, for the API (the metrics' sums). */
static json_t *route_counters(struct sp_runtime *rt, const char *route)
{
	struct metric_sides all = {0};
	json_t *out = json_object();
	collect_route(&all, rt, route, route);
	for (size_t i = 0; out && i < all.n; i++) {
		const struct metric_side *m = &all.v[i];
		json_t *j = json_pack("{s:I, s:I, s:f, s:f}", "requests", (json_int_t)m->count,
				      "upstream_errors", (json_int_t)m->upstream_errors, "p50_ms",
				      sp_hist_quantile(m->lat, 0.5), "p99_ms",
				      sp_hist_quantile(m->lat, 0.99));
		for (int c = 0; j && c < 5; c++)
			json_object_set_new(j, status_classes[c], json_integer((json_int_t)m->classes[c]));
		json_object_set_new(out, m->backend, j);
	}
	free(all.v);
	return out;
}


static json_t *shadow_counters(struct sp_runtime *rt, const char *route)
{
	uint64_t v[7] = {0}, skip[SP_SKIP__COUNT] = {0};
	sp_shadow_sum(rt->workers, rt->nworkers, route, v, skip, NULL, NULL);
	uint64_t skipped = 0;
	for (int k = 0; k < SP_SKIP__COUNT; k++)
		skipped += skip[k];
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "mirrored", (json_int_t)v[0],
			 "compared", (json_int_t)v[1], "identical", (json_int_t)v[2], "different",
			 (json_int_t)v[3], "noise", (json_int_t)v[4], "errors", (json_int_t)v[5],
			 "timeouts", (json_int_t)v[6], "skipped", (json_int_t)skipped, "difference_rate",
			 v[1] ? 100.0 * (double)v[3] / (double)v[1] : 0.0);
}

static json_t *route_view(struct sp_runtime *rt, const struct sp_route *r)
{
	json_t *j = sp_route_json(rt->cfg, r, json_object_get(rt->overrides, r->name));
	if (!j)
		return NULL;
	json_object_set_new(j, "counters", route_counters(rt, r->name));
	json_object_set_new(j, "guard", sp_guard_json(rt->guards, r));
	if (r->has_shadow)
		json_object_set_new(j, "shadow_counters", shadow_counters(rt, r->name));
	return j;
}

/* ---- metrics (Prometheus text format 0.0.4) ---- */

static void metric_escape(struct sp_buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			sp_buf_addc(b, '\\');
		if (*s == '\n') {
			sp_buf_adds(b, "\\n");
			continue;
		}
		sp_buf_addc(b, *s);
	}
}

/* `family{route="…",backend="…"`: the caller adds its labels and value. */
static void side_labels(struct sp_buf *b, const char *family, const struct metric_side *m)
{
	sp_buf_printf(b, "%s{route=\"", family);
	metric_escape(b, m->route);
	sp_buf_adds(b, "\",backend=\"");
	metric_escape(b, m->backend);
	sp_buf_addc(b, '"');
}

/* The per-route families, each in one group as the text format wants. */
static void metrics_routes(struct sp_buf *b, struct sp_runtime *rt)
{
	struct metric_sides all = {0};
	for (size_t i = 0; i < rt->cfg->nroutes; i++)
		collect_route(&all, rt, rt->cfg->routes[i].name, rt->cfg->routes[i].name);
	collect_route(&all, rt, "", SP_DEFAULT_ROUTE);

	sp_buf_adds(b, "# HELP strangler_requests_total Requests by route, backend and status class.\n"
		       "# TYPE strangler_requests_total counter\n");
	for (size_t i = 0; i < all.n; i++)
		for (int c = 0; c < 5; c++) {
			side_labels(b, "strangler_requests_total", &all.v[i]);
			sp_buf_printf(b, ",class=\"%s\"} %llu\n", status_classes[c],
				      (unsigned long long)all.v[i].classes[c]);
		}
	sp_buf_adds(b, "# HELP strangler_upstream_errors_total Backend failures by route, backend and "
		       "reason.\n# TYPE strangler_upstream_errors_total counter\n");
	for (size_t i = 0; i < all.n; i++)
		for (int e = 0; e < SP_UPSTREAM_REASONS; e++) {
			side_labels(b, "strangler_upstream_errors_total", &all.v[i]);
			sp_buf_printf(b, ",reason=\"%s\"} %llu\n", sp_upstream_reasons[e],
				      (unsigned long long)all.v[i].errors_by[e]);
		}
	sp_buf_adds(b, "# HELP strangler_fallbacks_total Requests routed to the backend that the "
		       "route's other side served (down, at max_conns, refused).\n"
		       "# TYPE strangler_fallbacks_total counter\n");
	for (size_t i = 0; i < all.n; i++)
		if (all.v[i].fell_back) { /* only the sides a request fell back from */
			side_labels(b, "strangler_fallbacks_total", &all.v[i]);
			sp_buf_printf(b, "} %llu\n", (unsigned long long)all.v[i].fell_back);
		}
	sp_buf_adds(b, "# HELP strangler_queued_total Requests that waited in the backend's queue "
		       "(every server at max_conns), by how the wait ended: served, timeout (a 503), "
		       "gave_up (the client left first, or every server was drained).\n"
		       "# TYPE strangler_queued_total counter\n");
	for (size_t i = 0; i < all.n; i++)
		for (int q = 0; q < SP_QUEUE_ENDS && had_queue(&all.v[i]); q++) {
			side_labels(b, "strangler_queued_total", &all.v[i]);
			sp_buf_printf(b, ",result=\"%s\"} %llu\n", sp_queue_ends[q],
				      (unsigned long long)all.v[i].queued[q]);
		}
	sp_buf_adds(b, "# HELP strangler_queue_waiting Requests waiting now in the backend's queue "
		       "(every server at max_conns).\n# TYPE strangler_queue_waiting gauge\n");
	for (size_t i = 0; i < all.n; i++)
		if (had_queue(&all.v[i])) {
			side_labels(b, "strangler_queue_waiting", &all.v[i]);
			sp_buf_printf(b, "} %lld\n",
				      (long long)(all.v[i].waiting > 0 ? all.v[i].waiting : 0));
		}
	sp_buf_adds(b, "# HELP strangler_request_duration_seconds Whole exchange duration.\n"
		       "# TYPE strangler_request_duration_seconds histogram\n");
	for (size_t i = 0; i < all.n; i++) {
		const struct metric_side *m = &all.v[i];
		uint64_t cum = 0;
		for (int q = 0; q < SP_DURATION_BOUNDS; q++) {
			cum += m->le[q];
			side_labels(b, "strangler_request_duration_seconds_bucket", m);
			sp_buf_printf(b, ",le=\"%g\"} %llu\n", sp_duration_bounds_s[q],
				      (unsigned long long)cum);
		}
		side_labels(b, "strangler_request_duration_seconds_bucket", m);
		sp_buf_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)m->count);
		side_labels(b, "strangler_request_duration_seconds_sum", m);
		sp_buf_printf(b, "} %.6f\n", (double)m->sum_us / 1e6);
		side_labels(b, "strangler_request_duration_seconds_count", m);
		sp_buf_printf(b, "} %llu\n", (unsigned long long)m->count);
	}
	free(all.v);
}

/* The shadow families, each in one group: results, then skips by reason. */
static void metrics_shadow(struct sp_buf *b, struct sp_runtime *rt)
{
	static const char *const results[] = {"mirrored", "compared", "identical", "different",
					      "noise", "errors", "timeouts"};
	sp_buf_adds(b, "# HELP strangler_shadow_total Shadow exchanges by route and result.\n"
		       "# TYPE strangler_shadow_total counter\n");
	for (int family = 0; family < 2; family++) {
		if (family == 1)
			sp_buf_adds(b, "# HELP strangler_shadow_skipped_total Requests not mirrored, "
				       "by reason.\n# TYPE strangler_shadow_skipped_total counter\n");
		for (size_t i = 0; i < rt->cfg->nroutes; i++) {
			const struct sp_route *r = &rt->cfg->routes[i];
			uint64_t v[7] = {0}, skip[SP_SKIP__COUNT] = {0};
			if (!r->has_shadow)
				continue;
			sp_shadow_sum(rt->workers, rt->nworkers, r->name, v, skip, NULL, NULL);
			for (int k = 0; k < (family ? SP_SKIP__COUNT : 7); k++) {
				sp_buf_adds(b, family ? "strangler_shadow_skipped_total{route=\""
						      : "strangler_shadow_total{route=\"");
				metric_escape(b, r->name);
				sp_buf_printf(b, "\",%s=\"%s\"} %llu\n", family ? "reason" : "result",
					      family ? sp_shadow_skip_name(k) : results[k],
					      (unsigned long long)(family ? skip[k] : v[k]));
			}
		}
	}
}

enum backend_metric { BACKEND_UP, BACKEND_SHADOWS_PAUSED, BACKEND_TRANSITIONS };

/* One gauge or counter per backend, from its health entry. */
static void metric_per_backend(struct sp_buf *b, const struct sp_runtime *rt, const char *name,
			       const char *type, const char *help, enum backend_metric which)
{
	const struct sp_config *cfg = rt->cfg;
	sp_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct sp_health_view v = sp_health_view(&cfg->backends[i]);
		/* the transitions of every server it has had: a reload dropping
		 * one lowers no counter */
		unsigned long long n =
			which == BACKEND_TRANSITIONS
				? sp_health_backend_transitions(rt->health, cfg->backends[i].name)
				: (unsigned long long)(which == BACKEND_UP ? !v.down : v.shadows_paused);
		sp_buf_printf(b, "%s{backend=\"", name);
		metric_escape(b, cfg->backends[i].name);
		sp_buf_printf(b, "\"} %llu\n", n);
	}
}

enum server_metric {
	SERVER_UP,
	SERVER_OUTCOMES,
	SERVER_RETRIES,
	SERVER_RETRIES_DENIED,
	SERVER_DRAINED,
	SERVER_IN_FLIGHT
};

/* The gauges and counters per server, by enum server_metric. */
static const struct {
	const char *name, *type, *help;
} server_metrics[] = {
	{"strangler_backend_server_up", "gauge",
	 "0 while the server is marked down (passive or active health)."},
	{"strangler_backend_server_outcomes_total", "counter",
	 "Requests and shadows by what the server's passive health made of them: ok (an answer, "
	 "below 500 for a request) or failed (no connection, a timeout, a bad answer, a 5xx to a "
	 "request)."},
	{"strangler_backend_server_retries_total", "counter",
	 "Requests the server failed (no connection, or closed or reset before an answer), "
	 "answered with one of retry_on_status or did not answer within per_try_timeout_ms, that "
	 "were sent on to another server of the backend."},
	{"strangler_backend_server_retries_denied_total", "counter",
	 "Requests the server answered with one of retry_on_status, or did not answer within "
	 "per_try_timeout_ms, not sent on: the backend's retry_budget was spent."},
	{"strangler_backend_server_drained", "gauge",
	 "1 while the server is drained (PATCH /api/backends/NAME): no new requests."},
	{"strangler_backend_server_in_flight", "gauge",
	 "Connections to the server in use now for a request, a shadow or a tunnel, all workers "
	 "together: a drained server may be stopped once it is 0."},
};

/* One value of a server's metric (result: outcomes' ok 0, failed 1). */
static unsigned long long server_value(enum server_metric which, const struct sp_server *sv,
				       const struct sp_health_view *v, int result)
{
	switch (which) {
	case SERVER_UP: return !v->down;
	case SERVER_OUTCOMES: return result ? v->failed : v->ok;
	case SERVER_RETRIES: return v->retried;
	case SERVER_RETRIES_DENIED: return v->retries_denied;
	case SERVER_DRAINED: return (unsigned long long)sp_health_drained(sv);
	case SERVER_IN_FLIGHT: return v->in_flight > 0 ? (unsigned long long)v->in_flight : 0;
	}
	return 0;
}

/* A metric of server_metrics for every server of every backend:
 * strangler_backend_server_...{backend,server}, and the outcomes by result. */
static void metric_per_server(struct sp_buf *b, const struct sp_config *cfg,
			      enum server_metric which)
{
	const char *name = server_metrics[which].name;
	int outcomes = which == SERVER_OUTCOMES;
	sp_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, server_metrics[which].help, name,
		      server_metrics[which].type);
	for (size_t i = 0; i < cfg->nbackends; i++)
		for (size_t k = 0; k < cfg->backends[i].nservers; k++) {
			const struct sp_server *sv = &cfg->backends[i].servers[k];
			struct sp_health_view v = sp_health_server_view(sv);
			for (int r = 0; r < (outcomes ? 2 : 1); r++) {
				sp_buf_printf(b, "%s{backend=\"", name);
				metric_escape(b, cfg->backends[i].name);
				sp_buf_adds(b, "\",server=\"");
				metric_escape(b, sv->hostport);
				if (outcomes)
					sp_buf_printf(b, "\",result=\"%s", r ? "failed" : "ok");
				sp_buf_printf(b, "\"} %llu\n", server_value(which, sv, &v, r));
			}
		}
}

static void metrics_backends(struct sp_buf *b, const struct sp_runtime *rt)
{
	const struct sp_config *cfg = rt->cfg;
	metric_per_backend(b, rt, "strangler_backend_up", "gauge",
			   "0 while the backend is marked down (all its servers: passive or active "
			   "health).",
			   BACKEND_UP);
	metric_per_server(b, cfg, SERVER_UP);
	metric_per_server(b, cfg, SERVER_OUTCOMES);
	metric_per_server(b, cfg, SERVER_RETRIES);
	metric_per_server(b, cfg, SERVER_RETRIES_DENIED);
	metric_per_server(b, cfg, SERVER_DRAINED);
	metric_per_server(b, cfg, SERVER_IN_FLIGHT);
	metric_per_backend(b, rt, "strangler_backend_shadows_paused", "gauge",
			   "1 while shadows to the backend (all its servers) are paused because they "
			   "time out.",
			   BACKEND_SHADOWS_PAUSED);
	metric_per_backend(b, rt, "strangler_backend_health_transitions_total", "counter",
			   "Times one of the backend's servers was marked down or up again (every "
			   "server it has listed since the start: a reload retiring one lowers "
			   "nothing).",
			   BACKEND_TRANSITIONS);
}

static void metrics_logs(struct sp_buf *b, const struct sp_runtime *rt)
{
	struct sp_accesslog *logs[] = {rt->alog, rt->difflog};
	sp_buf_adds(b, "# HELP strangler_log_lines_dropped_total Log lines not written whole (a full "
		       "disk, a closed pipe).\n# TYPE strangler_log_lines_dropped_total counter\n");
	for (size_t i = 0; i < sizeof(logs) / sizeof(*logs); i++)
		if (logs[i])
			sp_buf_printf(b, "strangler_log_lines_dropped_total{log=\"%s\"} %llu\n",
				      sp_accesslog_name(logs[i]),
				      (unsigned long long)sp_accesslog_dropped(logs[i]));
}

static void serve_metrics(struct admin_conn *a, const char *name)
{
	(void)name;
	struct sp_runtime *rt = a->admin->rt;
	struct sp_buf b;
	size_t open = 0;
	sp_buf_init(&b);
	metrics_routes(&b, rt);
	metrics_shadow(&b, rt);
	sp_buf_adds(&b, "# HELP strangler_guard_tripped 1 when the route's guard pulled its rollout "
			"back.\n# TYPE strangler_guard_tripped gauge\n");
	for (size_t i = 0; i < rt->cfg->nroutes; i++) {
		const struct sp_route *r = &rt->cfg->routes[i];
		if (!r->has_rollout || !r->rollout.guard.enabled)
			continue;
		sp_buf_adds(&b, "strangler_guard_tripped{route=\"");
		metric_escape(&b, r->name);
		sp_buf_printf(&b, "\"} %d\n", sp_guard_tripped(rt->guards, r->name));
	}
	sp_buf_adds(&b, "# HELP strangler_rollout_percent Share of the route moved to the rollout "
			"backend.\n# TYPE strangler_rollout_percent gauge\n");
	for (size_t i = 0; i < rt->cfg->nroutes; i++) {
		const struct sp_route *r = &rt->cfg->routes[i];
		if (!r->has_rollout)
			continue;
		sp_buf_adds(&b, "strangler_rollout_percent{route=\"");
		metric_escape(&b, r->name);
		sp_buf_printf(&b, "\"} %.2f\n", r->rollout.percent_bp / 100.0);
	}
	metrics_backends(&b, rt);
	metrics_logs(&b, rt);
	uint64_t tls_failed = 0, pp_failed = 0;
	for (int w = 0; w < rt->nworkers; w++) {
		open += atomic_load_explicit(&rt->workers[w]->nsessions, memory_order_relaxed);
		tls_failed += sp_read(&rt->workers[w]->tls_handshake_failures);
		pp_failed += sp_read(&rt->workers[w]->proxy_protocol_failures);
	}
	sp_buf_printf(&b,
		      "# HELP strangler_tls_handshake_failures_total Client TLS handshakes that "
		      "failed.\n# TYPE strangler_tls_handshake_failures_total counter\n"
		      "strangler_tls_handshake_failures_total %llu\n"
		      "# HELP strangler_proxy_protocol_failures_total Client connections closed "
		      "for a missing, malformed or incomplete PROXY protocol header.\n"
		      "# TYPE strangler_proxy_protocol_failures_total counter\n"
		      "strangler_proxy_protocol_failures_total %llu\n",
		      (unsigned long long)tls_failed, (unsigned long long)pp_failed);
	sp_buf_printf(&b,
		      "# HELP strangler_open_connections Client connections open.\n"
		      "# TYPE strangler_open_connections gauge\nstrangler_open_connections %zu\n"
		      "# HELP strangler_config_generation Configuration generations since start.\n"
		      "# TYPE strangler_config_generation gauge\nstrangler_config_generation %lu\n"
		      "# HELP strangler_reloads_total Reloads by result.\n"
		      "# TYPE strangler_reloads_total counter\n"
		      "strangler_reloads_total{result=\"ok\"} %lu\n"
		      "strangler_reloads_total{result=\"error\"} %lu\n",
		      open, rt->generation, rt->reloads_ok, rt->reloads_failed);
	/* route names are UTF-8 text (Prometheus' own content type says so) */
	respond(a, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
	sp_buf_deinit(&b);
}

/* ---- route changes ---- */

/* 200 with j once the change is in force everywhere. */
static void respond_applied(struct admin_conn *a, json_t *j)
{
	a->hold = 1;
	respond_json(a, 200, j);
}

static void patch_route(struct admin_conn *a, const char *name)
{
	struct sp_runtime *rt = a->admin->rt;
	json_error_t jerr;
	char msg[1024];
	json_t *patch = json_loadb(a->body.data ? a->body.data : "", a->body.len,
				   JSON_REJECT_DUPLICATES, &jerr);
	if (!patch) {
		snprintf(msg, sizeof(msg), "body is not valid JSON: %s (line %d)", jerr.text, jerr.line);
		respond_error(a, 400, msg);
		return;
	}
	int st = sp_runtime_change(rt, name, patch, a->peer, "patch", msg, sizeof(msg));
	json_decref(patch);
	if (st) {
		respond_error(a, st, msg);
		return;
	}
	/* what the file's loader would warn about the route as changed (the
	 * change is made: a backend set to its rollout's or its shadow's leaves
	 * the rollout or the shadow nothing to do), logged and answered */
	const struct sp_route *r = sp_config_route(rt->cfg, name);
	json_t *view = route_view(rt, r), *warnings = json_array();
	const char *idle[2] = {r && sp_route_rollout_idle(r) ? "rollout.backend: " SP_ROLLOUT_IDLE
							     : NULL,
			       r && sp_route_shadow_idle(r) ? "shadow.backend: " SP_SHADOW_IDLE : NULL};
	for (int i = 0; i < 2; i++) {
		if (!idle[i])
			continue;
		sp_log(SP_LOG_WARN, "admin: route %s: warning: %s", name, idle[i]);
		json_array_append_new(warnings, json_string(idle[i]));
	}
	json_object_set_new(view, "warnings", warnings);
	respond_applied(a, view);
}

static void delete_override(struct admin_conn *a, const char *name)
{
	struct sp_runtime *rt = a->admin->rt;
	char msg[1024];
	const struct sp_route *r;
	int st = sp_runtime_change(rt, name, NULL, a->peer, "delete-override", msg, sizeof(msg));
	if (st)
		respond_error(a, st, msg);
	else if ((r = sp_config_route(rt->cfg, name)))
		respond_applied(a, route_view(rt, r));
	else /* the stale override of a route that is gone */
		respond_applied(a, json_pack("{s:s, s:n}", "stale_override_of", name, "override"));
}

static void post_reload(struct admin_conn *a, const char *name)
{
	(void)name;
	struct sp_runtime *rt = a->admin->rt;
	struct sp_diag diag;
	sp_diag_init(&diag);
	int rc = sp_runtime_reload(rt, &diag);
	json_t *lines = json_array();
	const char *p = diag.text.data;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		json_array_append_new(lines, sp_json_text(p, len));
		p = nl ? nl + 1 : NULL;
	}
	a->hold = rc == 0;
	respond_json(a, rc == 0 ? 200 : 400,
		     json_pack("{s:b, s:I, s:o}", "ok", rc == 0, "generation",
			       (json_int_t)rt->generation, rc == 0 ? "warnings" : "errors", lines));
	sp_diag_deinit(&diag);
}

/* ---- dispatch ---- */

/* GET /api/diffs?route=NAME&limit=N: the latest differing exchanges. */
static void serve_diffs(struct admin_conn *a, const char *name)
{
	(void)name;
	struct sp_buf route, limit;
	const char *q = memchr(a->target.data, '?', a->target.len);
	size_t qlen = q ? a->target.len - (size_t)(q + 1 - a->target.data) : 0;
	sp_buf_init(&route);
	sp_buf_init(&limit);
	int has_route = q && sp_query_get(q + 1, qlen, "route", 0, &route);
	long n = 20;
	char *end = NULL;
	if (q && sp_query_get(q + 1, qlen, "limit", 0, &limit))
		n = strtol(limit.data ? limit.data : "", &end, 10);
	/* digits only: not " 5", "+5" (strtol takes them) */
	if (end && (*end || end == limit.data || n < 1 || n > 1000 || *limit.data < '0' ||
		    *limit.data > '9')) {
		respond_error(a, 400, "limit: a whole number from 1 to 1000");
	} else if (has_route && !sp_config_route(a->admin->rt->cfg, route.data)) {
		respond_error(a, 404, "no such route"); /* not one of the running routes */
	} else {
		/* the lines as the diff log has them, each value at its own
		 * precision (0.3 and 0.30000000000000004 both read 0.3 once
		 * parsed and written again at 15 digits; at 17 every 0.3 read
		 * 0.29999999999999999) */
		struct sp_buf b;
		sp_buf_init(&b);
		int rc = sp_buf_adds(&b, "{\"diffs\":") < 0 ||
			 sp_diff_ring_get(a->admin->rt->diffs, has_route ? route.data : NULL,
					  (size_t)n, &b) < 0 ||
			 sp_buf_add_json_text_field(&b, "route", has_route ? route.data : NULL) < 0 ||
			 sp_buf_adds(&b, "}\n") < 0;
		if (rc)
			respond(a, 500, "text/plain", "out of memory\n", 14);
		else
			respond(a, 200, "application/json", b.data, b.len);
		sp_buf_deinit(&b);
	}
	sp_buf_deinit(&route);
	sp_buf_deinit(&limit);
}

static void serve_page(struct admin_conn *a, const char *name)
{
	(void)name;
	respond_with(a, 200, "text/html; charset=utf-8",
		     "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
		     "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "
		     "frame-ancestors 'none'\r\n"
		     "X-Frame-Options: DENY\r\n",
		     sp_dashboard_html, sp_dashboard_html_len);
}

static int authorised(struct admin_conn *a)
{
	const char *token = a->admin->rt->cfg->admin.token;
	if (!token)
		return 1;
	/* the scheme is case-insensitive (RFC 9110 §11.1); the digests are
	 * compared, so that the time taken says nothing of the token, its
	 * length included */
	if (a->auth.len < 7 || strncasecmp(a->auth.data, "Bearer ", 7) != 0)
		return 0;
	unsigned char given[SHA256_DIGEST_LENGTH], want[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)a->auth.data + 7, a->auth.len - 7, given);
	SHA256((const unsigned char *)token, strlen(token), want);
	return CRYPTO_memcmp(given, want, sizeof(want)) == 0;
}

/* Whether a Host ("name:port", "[v6]:port", "ip") may be this listener's:
 * an IP address or localhost, which DNS rebinding cannot point elsewhere,
 * with any port (a port forward's, an SSH tunnel's), or the name
 * admin.address was configured with, with its port. A page that rebinding
 * brought here names its own site. */
static int host_ok(const struct sp_admin *ad, const char *host, size_t len)
{
	char name[256];
	const char *end = host + len, *colon;
	if (len && host[0] == '[') {
		const char *close = memchr(host, ']', len);
		colon = close && close + 1 < end && close[1] == ':' ? close + 1 : close ? end : NULL;
		if (!colon || close - host - 1 >= (long)sizeof(name))
			return 0;
		snprintf(name, sizeof(name), "%.*s", (int)(close - host - 1), host + 1);
	} else {
		const char *c = memchr(host, ':', len);
		colon = c ? c : end;
		if (colon - host >= (long)sizeof(name))
			return 0;
		snprintf(name, sizeof(name), "%.*s", (int)(colon - host), host);
	}
	unsigned char ip[16];
	if (strcasecmp(name, "localhost") == 0 || inet_pton(AF_INET, name, ip) == 1 ||
	    inet_pton(AF_INET6, name, ip) == 1)
		return 1;
	size_t plen = colon < end ? (size_t)(end - colon - 1) : 0;
	int port_ok = colon < end ? plen == strlen(ad->port) && memcmp(colon + 1, ad->port, plen) == 0
				  : strcmp(ad->port, "80") == 0;
	return port_ok && strcasecmp(name, ad->host) == 0;
}

/* Without a token, a request a web page on this machine could have sent,
 * other than the dashboard's own: answered 403 (or 415). Returns 1 when it
 * was refused. A token is proof enough: a page cannot send it (nor any
 * Authorization header to another site: the API answers no CORS preflight). */
static int refuse_foreign(struct admin_conn *a, const char *method)
{
	struct sp_admin *ad = a->admin;
	char msg[1024];
	if (ad->rt->cfg->admin.token)
		return 0;
	if (a->has_host < 0 || (a->has_host && !host_ok(ad, a->host, strlen(a->host)))) {
		snprintf(msg, sizeof(msg), "Host \"%s\" is not this admin listener (an IP address, "
			 "localhost, or %s:%s): a page on another site may have been pointed at it "
			 "(DNS rebinding); set admin.token_file to reach it by another name",
			 a->has_host < 0 ? "(repeated or too long)" : a->host, ad->host, ad->port);
		respond_error(a, 403, msg);
		return 1;
	}
	/* the dashboard is served from here: its requests are same-origin */
	if (a->has_origin < 0 ||
	    (a->has_origin && (a->has_host <= 0 || strncasecmp(a->origin, "http://", 7) != 0 ||
			       strcasecmp(a->origin + 7, a->host) != 0))) {
		snprintf(msg, sizeof(msg), "Origin \"%s\" is not this admin listener's: requests from "
			 "other pages are refused", a->has_origin < 0 ? "(repeated or too long)"
								       : a->origin);
		respond_error(a, 403, msg);
		return 1;
	}
	/* a change is JSON: a form (what a page may post anywhere) is not */
	int change = strcmp(method, "GET") != 0;
	size_t tl = strcspn(a->ctype, ";");
	while (tl && (a->ctype[tl - 1] == ' ' || a->ctype[tl - 1] == '\t'))
		tl--;
	int json = a->has_ctype > 0 && tl == 16 && strncasecmp(a->ctype, "application/json", 16) == 0;
	if (change && (a->has_ctype ? !json : strcmp(method, "PATCH") == 0)) {
		respond_error(a, 415, "Content-Type must be application/json");
		return 1;
	}
	return 0;
}

/* Decodes %XX escapes in place (a route name in a URL, as the dashboard's
 * encodeURIComponent writes it); -1 for a bad escape or a NUL. */
static int percent_decode(char *s)
{
	char *o = s;
	for (const char *p = s; *p; p++) {
		if (*p != '%') {
			*o++ = *p;
			continue;
		}
		int hi = sp_hexval((unsigned char)p[1]), lo = hi < 0 ? -1 : sp_hexval((unsigned char)p[2]);
		if (lo < 0 || (hi == 0 && lo == 0))
			return -1;
		*o++ = (char)(hi << 4 | lo);
		p += 2;
	}
	*o = '\0';
	return 0;
}

static void rearm(struct admin_conn *a, const char *name)
{
	struct sp_runtime *rt = a->admin->rt;
	const struct sp_route *r = sp_config_route(rt->cfg, name);
	if (!r) {
		respond_error(a, 404, "no such route");
		return;
	}
	if (!r->has_rollout || !r->rollout.guard.enabled) {
		/* as DELETE .../override without an override: nothing to act on */
		respond_error(a, 404, "the route has no guard (rollout.guard in the configuration file)");
		return;
	}
	json_t *before = sp_guard_json(rt->guards, r), *trips = sp_guards_save(rt->guards);
	char msg[512];
	if (sp_guard_rearm(rt->guards, name) < 0) {
		respond_error(a, 409, "the route's guard is not tripped");
	} else if (sp_runtime_save_state(rt) < 0) {
		/* as a PATCH: a restart would trip it again, so nothing changes */
		int e = errno;
		snprintf(msg, sizeof(msg), "cannot write admin.state_file: %s; the guard stays tripped",
			 sp_runtime_state_strerror(e));
		sp_guards_restore(rt->guards, trips);
		respond_error(a, sp_runtime_state_status(e), msg);
	} else {
		sp_log(SP_LOG_INFO, "guard: route %s re-armed by %s", name, a->peer);
		sp_runtime_audit(rt, json_pack("{s:s, s:s, s:s, s:O, s:o}", "caller", a->peer, "route",
					       name, "action", "guard-rearm", "before", before, "after",
					       sp_guard_json(rt->guards, r)));
		sp_runtime_save_state(rt); /* the audit trail is best effort once applied */
		respond_json(a, 200, route_view(rt, r));
	}
	json_decref(before);
	json_decref(trips);
}

static void serve_healthz(struct admin_conn *a, const char *name)
{
	(void)name;
	respond(a, 200, "text/plain", "ok\n", 3);
}

static void serve_readyz(struct admin_conn *a, const char *name)
{
	(void)name;
	if (a->admin->rt->stopping)
		respond(a, 503, "text/plain", "stopping\n", 9);
	else
		respond(a, 200, "text/plain", "ready\n", 6);
}

static void serve_routes(struct admin_conn *a, const char *name)
{
	struct sp_runtime *rt = a->admin->rt;
	(void)name;
	json_t *list = json_array(), *backends = json_array();
	for (size_t i = 0; i < rt->cfg->nroutes; i++)
		json_array_append_new(list, route_view(rt, &rt->cfg->routes[i]));
	for (size_t i = 0; i < rt->cfg->nbackends; i++)
		json_array_append_new(backends, json_string(rt->cfg->backends[i].name));
	respond_json(a, 200, json_pack("{s:I, s:s, s:o, s:o, s:o, s:o}", "generation",
				       (json_int_t)rt->generation, "default_backend",
				       rt->cfg->backends[rt->cfg->default_backend].name, "backends",
				       backends, "routes", list, "default_counters",
				       route_counters(rt, ""), "stale_overrides",
				       sp_runtime_stale_overrides(rt)));
}

/* The health of one server, or of a backend (sp_health_view). */
static json_t *health_json(struct sp_health_view v)
{
	return json_pack("{s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "up", !v.down,
			 "shadows_paused", v.shadows_paused, "health_transitions",
			 (json_int_t)v.transitions, "ok", (json_int_t)v.ok, "failed",
			 (json_int_t)v.failed, "retried", (json_int_t)v.retried, "retries_denied",
			 (json_int_t)v.retries_denied, "in_flight",
			 (json_int_t)(v.in_flight > 0 ? v.in_flight : 0));
}

static json_t *strv_json(char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

/* Header rules by names: set values stay in the file (an API key). */
static json_t *rule_names_json(const struct sp_hdr_rules *r)
{
	return json_pack("{s:o, s:o}", "set", strv_json(r->set_name, r->nset), "remove",
			 strv_json(r->remove, r->nremove));
}

/* What a backend changes of its requests and answers. */
static void backend_changes_json(json_t *b, const struct sp_backend *be)
{
	json_t *rw = json_array();
	for (size_t k = 0; k < be->nrewrite; k++)
		json_array_append_new(rw, json_pack("{s:s, s:s}", "prefix", be->rewrite[k].prefix,
						    "to", be->rewrite[k].to));
	json_object_set_new(b, "host_header",
			    be->host_header ? sp_json_text(be->host_header, strlen(be->host_header))
					    : json_null());
	json_object_set_new(b, "path_rewrite", rw);
	json_object_set_new(b, "location_rewrite", json_boolean(be->location_map));
	json_object_set_new(b, "request_headers", rule_names_json(&be->req_headers));
	json_object_set_new(b, "response_headers", rule_names_json(&be->resp_headers));
}

/* A backend as running: its settings, its servers and their health. */
static json_t *backend_view(const struct sp_backend *be)
{
	json_t *servers = json_array(), *b = health_json(sp_health_view(be));
	int64_t now = sp_health_now_ms();
	for (size_t k = 0; k < be->nservers; k++) {
		const struct sp_server *s = &be->servers[k];
		json_t *sv = health_json(sp_health_server_view(s));
		json_object_set_new(sv, "url", sp_json_text(s->url, strlen(s->url)));
		json_object_set_new(sv, "address", sp_json_text(s->hostport, strlen(s->hostport)));
		json_object_set_new(sv, "weight", json_integer(s->weight));
		json_object_set_new(sv, "backup", json_boolean(s->backup));
		json_object_set_new(sv, "drained", json_boolean(sp_health_drained(s)));
		/* its share of its weight now, in %: below 100 during its slow start */
		unsigned share = be->slow_start_ms ? sp_health_weight_now(be, k, now) / s->weight
						   : 100;
		json_object_set_new(sv, "weight_percent", json_integer(share));
		json_array_append_new(servers, sv);
	}
	json_object_set_new(b, "name", json_string(be->name));
	json_object_set_new(b, "balance",
			    json_string(be->least_conn ? "least_conn" : "round_robin"));
	json_object_set_new(b, "max_conns", json_integer(be->max_conns));
	json_object_set_new(b, "queue",
			    be->queue_max ? json_pack("{s:i, s:i}", "max", be->queue_max, "timeout_ms",
						      be->queue_timeout_ms)
					  : json_null());
	json_t *rs = json_array();
	for (int st = 400; st < 600; st++)
		if (sp_backend_retries_status(be, st))
			json_array_append_new(rs, json_integer(st));
	json_object_set_new(b, "retry_on_status", rs);
	json_object_set_new(b, "per_try_timeout_ms", json_integer(be->per_try_timeout_ms));
	json_object_set_new(b, "slow_start_ms", json_integer(be->slow_start_ms));
	json_object_set_new(b, "retry_budget",
			    json_pack("{s:i, s:i}", "percent", be->retry_budget_percent, "min_per_s",
				      be->retry_budget_min));
	backend_changes_json(b, be);
	json_object_set_new(b, "servers", servers);
	return b;
}

/* GET /api/backends: every backend with its servers and their health. */
static void serve_backends(struct admin_conn *a, const char *name)
{
	const struct sp_config *cfg = a->admin->rt->cfg;
	json_t *list = json_array();
	(void)name;
	for (size_t i = 0; i < cfg->nbackends; i++)
		json_array_append_new(list, backend_view(&cfg->backends[i]));
	respond_json(a, 200, json_pack("{s:I, s:o}", "generation",
				       (json_int_t)a->admin->rt->generation, "backends", list));
}

/* GET /api/backends/NAME */
static void serve_backend(struct admin_conn *a, const char *name)
{
	const struct sp_config *cfg = a->admin->rt->cfg;
	int i = sp_backend_index(cfg, name);
	if (i < 0)
		respond_error(a, 404, "no such backend");
	else
		respond_json(a, 200, backend_view(&cfg->backends[i]));
}

/* The server of be whose address ("host:port", "unix:/path", as GET
 * /api/backends gives it) is addr, or NULL. */
static const struct sp_server *server_at(const struct sp_backend *be, const char *addr)
{
	for (size_t k = 0; k < be->nservers; k++)
		if (strcmp(be->servers[k].hostport, addr) == 0)
			return &be->servers[k];
	return NULL;
}

/* PATCH /api/backends/NAME {"server": "10.0.0.1:9001", "drain": true}: the
 * server takes no new requests or shadows (those in flight finish), in
 * every backend that lists it, until {"drain": false}; kept in
 * admin.state_file and across reloads (HAProxy's "set server state drain",
 * for a deploy of that instance). */
static void patch_backend(struct admin_conn *a, const char *name)
{
	struct sp_runtime *rt = a->admin->rt;
	json_error_t jerr;
	char msg[1024];
	int i = sp_backend_index(rt->cfg, name);
	if (i < 0) {
		respond_error(a, 404, "no such backend");
		return;
	}
	const struct sp_backend *be = &rt->cfg->backends[i];
	json_t *patch = json_loadb(a->body.data ? a->body.data : "", a->body.len,
				   JSON_REJECT_DUPLICATES, &jerr);
	const char *key, *addr = NULL;
	json_t *v, *drain = NULL;
	if (!patch) {
		snprintf(msg, sizeof(msg), "body is not valid JSON: %s (line %d)", jerr.text, jerr.line);
		respond_error(a, 400, msg);
		return;
	}
	msg[0] = '\0';
	if (!json_is_object(patch))
		snprintf(msg, sizeof(msg), "body must be an object: {\"server\": \"%s\", \"drain\": "
			 "true}", be->servers[0].hostport);
	json_object_foreach(patch, key, v) {
		if (strcmp(key, "server") == 0 && json_is_string(v))
			addr = json_string_value(v);
		else if (strcmp(key, "drain") == 0 && json_is_boolean(v))
			drain = v;
		else if (!msg[0])
			snprintf(msg, sizeof(msg), "%s: %s", key,
				 strcmp(key, "server") == 0  ? "must be a string: the server's address"
				 : strcmp(key, "drain") == 0 ? "must be true or false"
							     : "unknown (server and drain only)");
	}
	if (!msg[0] && (!addr || !drain))
		snprintf(msg, sizeof(msg), "give server (its address) and drain (true or false)");
	const struct sp_server *sv = msg[0] ? NULL : server_at(be, addr);
	if (msg[0]) {
		respond_error(a, 400, msg);
	} else if (!sv) {
		snprintf(msg, sizeof(msg), "backend %s has no server at %.200s (see its servers' "
			 "address in GET /api/backends/%s)", be->name, addr, be->name);
		respond_error(a, 404, msg);
	} else {
		int on = json_is_true(drain), was = sp_health_drained(sv);
		if (on != was && (sp_health_set_drained(rt->health, sv->url, on) < 0 ||
				  sp_runtime_save_state(rt) < 0)) {
			/* a restart would undo it: nothing changes */
			int e = errno;
			snprintf(msg, sizeof(msg), "cannot write admin.state_file: %s; the server "
				 "stays %s", sp_runtime_state_strerror(e), was ? "drained" : "in service");
			sp_health_undo_drained(rt->health, sv->url, was);
			respond_error(a, sp_runtime_state_status(e), msg);
		} else {
			if (on != was) {
				sp_log(SP_LOG_INFO, "admin: backend %s: server %s %s by %s", be->name,
				       sv->hostport, on ? "drained" : "back in service", a->peer);
				sp_runtime_audit(rt, json_pack("{s:s, s:s, s:s, s:s}", "caller", a->peer,
							       "backend", be->name, "server",
							       sv->hostport, "action",
							       on ? "drain" : "undrain"));
				sp_runtime_save_state(rt); /* the audit trail: best effort */
			}
			respond_json(a, 200, backend_view(be));
		}
	}
	json_decref(patch);
}

static void serve_route(struct admin_conn *a, const char *name)
{
	const struct sp_route *r = sp_config_route(a->admin->rt->cfg, name);
	if (r)
		respond_json(a, 200, route_view(a->admin->rt, r));
	else if (json_object_get(a->admin->rt->overrides, name))
		respond_error(a, 404, "no such route; a stale override for it is stored, and applies "
				      "again if a route of that name comes back: DELETE "
				      "/api/routes/NAME/override drops it");
	else
		respond_error(a, 404, "no such route");
}

static void serve_audit(struct admin_conn *a, const char *name)
{
	(void)name;
	respond_json(a, 200, json_pack("{s:O}", "changes", a->admin->rt->audit));
}

static void serve_diffs_summary(struct admin_conn *a, const char *name)
{
	struct sp_runtime *rt = a->admin->rt;
	(void)name;
	json_t *o = json_object();
	for (size_t i = 0; i < rt->cfg->nroutes; i++)
		if (rt->cfg->routes[i].has_shadow)
			json_object_set_new(o, rt->cfg->routes[i].name,
					    shadow_counters(rt, rt->cfg->routes[i].name));
	respond_json(a, 200, json_pack("{s:o}", "routes", o));
}

/* The API: a path ("*" stands for a route's name) and a method each. GET
 * serves HEAD too; a known path with another method gets 405 and Allow. */
static const struct endpoint {
	const char *path, *method;
	void (*serve)(struct admin_conn *a, const char *name);
} endpoints[] = {
	{"/", "GET", serve_page},
	{"/healthz", "GET", serve_healthz},
	{"/readyz", "GET", serve_readyz},
	{"/metrics", "GET", serve_metrics},
	{"/api/routes", "GET", serve_routes},
	{"/api/backends", "GET", serve_backends},
	{"/api/backends/*", "GET", serve_backend},
	{"/api/backends/*", "PATCH", patch_backend},
	{"/api/routes/*", "GET", serve_route},
	{"/api/routes/*", "PATCH", patch_route},
	{"/api/routes/*/override", "DELETE", delete_override},
	{"/api/routes/*/guard/rearm", "POST", rearm},
	{"/api/audit", "GET", serve_audit},
	{"/api/diffs/summary", "GET", serve_diffs_summary},
	{"/api/diffs", "GET", serve_diffs},
	{"/api/reload", "POST", post_reload},
};

#define ROUTES_PREFIX "/api/routes/"
#define BACKENDS_PREFIX "/api/backends/"
#define MAX_TARGET 4096 /* 64 characters of 4 bytes, each byte as %XX, with room */

static void dispatch(struct admin_conn *a)
{
	struct sp_runtime *rt = a->admin->rt;
	const char *target = a->target.data ? a->target.data : "/";
	size_t plen = strcspn(target, "?");
	if (plen >= MAX_TARGET) {
		respond_error(a, 414, "request target too long");
		return;
	}
	/* the path, and its pattern: the route's name, decoded, set apart */
	char path[MAX_TARGET], pattern[MAX_TARGET], *name = NULL;
	snprintf(path, sizeof(path), "%.*s", (int)plen, target);
	snprintf(pattern, sizeof(pattern), "%s", path);
	for (size_t k = 0; k < 2 && !name; k++) {
		const char *prefix = k ? BACKENDS_PREFIX : ROUTES_PREFIX;
		size_t pl = strlen(prefix);
		if (strncmp(path, prefix, pl) != 0 || !path[pl])
			continue;
		name = path + pl;
		size_t n = strcspn(name, "/");
		snprintf(pattern, sizeof(pattern), "%s*%s", prefix, name + n);
		name[n] = '\0';
	}
	a->head_only = strcmp(a->method, "HEAD") == 0;
	if (a->bad_version) {
		/* an HTTP/0.9 "GET /" would take the answer's head for its body */
		respond_error(a, 505, "only HTTP/1.0 and HTTP/1.1 are served here");
		return;
	}
	const char *m = a->head_only ? "GET" : a->method;
	int get = strcmp(m, "GET") == 0;
	if (refuse_foreign(a, m))
		return;
	if (a->auth_repeated) { /* which one would be the caller's? */
		respond_error(a, 400, "Authorization given more than once");
		return;
	}
	if (!authorised(a) && !(strcmp(path, "/") == 0 && get)) {
		snprintf(a->extra, sizeof(a->extra), "WWW-Authenticate: Bearer realm=\"strangler admin\"\r\n");
		respond_error(a, 401, "missing or wrong Authorization: Bearer token");
		return;
	}
	if (a->too_big) {
		respond_error(a, 413, "body larger than 64 KiB");
		return;
	}
	if (rt->stopping && !get) {
		/* a replacement process may share this port (SO_REUSEPORT): a
		 * change made here would be lost with this process */
		respond_error(a, 503, "stopping: send changes to the process that replaces this one");
		return;
	}
	char allow[64] = "";
	for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
		const struct endpoint *e = &endpoints[i];
		if (strcmp(e->path, pattern) != 0)
			continue;
		if (strcmp(e->method, m) == 0) {
			if (name && percent_decode(name) < 0)
				respond_error(a, 400, "bad percent-encoding in the name");
			else
				e->serve(a, name);
			return;
		}
		snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s%s",
			 allow[0] ? ", " : "", e->method, strcmp(e->method, "GET") == 0 ? ", HEAD" : "");
	}
	if (!allow[0]) {
		respond_error(a, 404, "no such resource");
		return;
	}
	snprintf(a->extra, sizeof(a->extra), "Allow: %s\r\n", allow);
	respond_error(a, 405, "method not allowed here: use the ones in Allow");
}

/* ---- connection ---- */

static void conn_free(struct admin_conn *a)
{
	struct sp_admin *admin = a->admin;
	TAILQ_REMOVE(&admin->conns, a, link);
	if (admin->nconns-- == MAX_CONNS)
		evconnlistener_enable(admin->listener);
	sp_conn_free(&a->c);
	sp_h1_free(&a->parser);
	if (a->timer)
		event_free(a->timer);
	if (a->hold_timer)
		event_free(a->hold_timer);
	sp_buf_deinit(&a->target);
	sp_buf_deinit(&a->auth);
	sp_buf_deinit(&a->body);
	free(a);
}

/* Copies the value of header name: 1, or 0 when absent, -1 when repeated,
 * too long or holding a NUL. */
static int take_header(const struct sp_h1_msg *m, const char *name, char *out, size_t len)
{
	int found = 0;
	out[0] = '\0';
	for (size_t i = 0; i < m->nhdrs; i++) {
		const struct sp_hdr *h = &m->hdrs[i];
		if (h->name_len != strlen(name) || strncasecmp(h->name, name, h->name_len) != 0)
			continue;
		if (found++ || h->value_len >= len || memchr(h->value, '\0', h->value_len))
			return -1;
		memcpy(out, h->value, h->value_len);
		out[h->value_len] = '\0';
	}
	return found;
}

static int on_head(void *ud, struct sp_h1_msg *m)
{
	struct admin_conn *a = ud;
	snprintf(a->method, sizeof(a->method), "%s", m->method);
	sp_buf_add(&a->target, m->url, m->url_len);
	const struct sp_hdr *h = sp_hdr_find(m->hdrs, m->nhdrs, "Authorization");
	if (h)
		sp_buf_add(&a->auth, h->value, h->value_len);
	a->auth_repeated = h && sp_hdr_find(h + 1, m->nhdrs - (size_t)(h + 1 - m->hdrs),
					    "Authorization") != NULL;
	a->has_host = take_header(m, "Host", a->host, sizeof(a->host));
	a->has_origin = take_header(m, "Origin", a->origin, sizeof(a->origin));
	a->has_ctype = take_header(m, "Content-Type", a->ctype, sizeof(a->ctype));
	a->bad_version = m->http_major != 1;
	/* the proxy listener's checks (two Host headers, a Transfer-Encoding
	 * on HTTP/1.0 or other than chunked, ...), but for a missing Host:
	 * the admin API takes one (security.md) */
	const char *why = NULL;
	int st = m->http_major == 1 ? sp_http_check_request(m->hdrs, m->nhdrs, m->http_minor, &why) : 0;
	if (st && strcmp(why, "missing Host header") != 0) {
		sp_h1_fail(a->parser, st, why);
		return -1;
	}
	if (m->has_length && m->content_length > MAX_BODY) {
		/* answer now (401 or 413): the client need not send what would
		 * be thrown away, nor wait for the timeout */
		a->too_big = 1;
		dispatch(a);
		return 1;
	}
	if ((m->chunked || m->content_length > 0) && sp_http_expects_continue(m)) {
		/* curl asks so for a body past 1 KiB, and waited a second for it */
		evbuffer_add(a->c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
		sp_conn_flush(a->c);
	}
	return 0;
}

static int on_body(void *ud, const char *p, size_t n)
{
	struct admin_conn *a = ud;
	if (a->body.len + n > MAX_BODY)
		a->too_big = 1;
	else
		sp_buf_add(&a->body, p, n);
	return 0;
}

static int on_done(void *ud, struct sp_h1_msg *m)
{
	struct admin_conn *a = ud;
	(void)m;
	/* a head refused as too big ends the message here too (its body
	 * skipped, not read) */
	a->request_done = !a->too_big;
	if (!a->answered) /* a head refused as too big was answered from on_head */
		dispatch(ud);
	return 1;
}

/* Answered: the connection ends. When the client's request was not read
 * whole (a body past 64 KiB, a parse error), closing at once would make the
 * kernel reset the connection, and a client still sending would lose the
 * answer: as the proxy's listener does (nginx's lingering close), shut the
 * write side and drop what comes for up to 2 s before closing. */
static void answered_close(struct admin_conn *a)
{
	if (a->request_done || a->c->eof) {
		conn_free(a);
		return;
	}
	if (a->c->shut_wr)
		return; /* lingering already */
	struct timeval tv = {2, 0};
	sp_conn_shutdown_write(a->c);
	sp_conn_read(a->c, 1);
	evtimer_add(a->timer, &tv);
}

static const struct sp_h1_hooks hooks = {on_head, on_body, on_done};

static void on_read(struct sp_conn *c, void *arg)
{
	struct admin_conn *a = arg;
	if (a->answered && c->shut_wr) { /* lingering: dropped */
		evbuffer_drain(c->in, evbuffer_get_length(c->in));
		return;
	}
	while (evbuffer_get_length(c->in) && !a->answered) {
		struct evbuffer_iovec v;
		size_t used = 0;
		a->started = 1;
		evbuffer_peek(c->in, -1, NULL, &v, 1);
		enum sp_h1_rc rc = sp_h1_execute(a->parser, v.iov_base, v.iov_len, &used);
		evbuffer_drain(c->in, used);
		if (rc == SP_H1_ERROR) {
			respond_error(a, sp_h1_error_status(a->parser), sp_h1_error_reason(a->parser));
			break;
		}
	}
	if (a->answered && evbuffer_get_length(c->out) == 0)
		answered_close(a);
}

static void on_drain(struct sp_conn *c, void *arg)
{
	struct admin_conn *a = arg;
	if (a->answered && evbuffer_get_length(c->out) == 0)
		answered_close(a);
}

static void on_event(struct sp_conn *c, short what, void *arg)
{
	(void)c;
	(void)what;
	conn_free(arg);
}

/* The exchange's 10 s are over: a request begun and not whole (a body
 * shorter than its Content-Length, an HTTP/0.9 line) gets a 408, as the
 * proxy's listeners give, with a second more to be written; then the close.
 * Any later timeout (the lingering close's) ends the connection. */
static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct admin_conn *a = arg;
	(void)fd;
	(void)what;
	if (a->answered || !a->started) {
		conn_free(a);
		return;
	}
	a->head_only = 0;
	respond_error(a, 408, "request not whole within 10 s");
	struct timeval tv = {1, 0};
	if (evbuffer_get_length(a->c->out) == 0)
		answered_close(a); /* written: the lingering close's 2 s, then the end */
	else
		evtimer_add(a->timer, &tv); /* on_drain closes once written */
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
		      void *arg)
{
	static const struct sp_h1_limits limits = {8192, 32768, 100};
	struct sp_admin *admin = arg;
	struct admin_conn *a = calloc(1, sizeof(*a));
	(void)len;
	if (!a) {
		close(fd);
		return;
	}
	a->admin = admin;
	TAILQ_INSERT_TAIL(&admin->conns, a, link);
	if (++admin->nconns == MAX_CONNS) {
		evconnlistener_disable(l);
		sp_log(SP_LOG_WARN, "admin: %d connections open: accepting paused until one ends",
		       MAX_CONNS);
	}
	sp_buf_init(&a->target);
	sp_buf_init(&a->auth);
	sp_buf_init(&a->body);
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, a->peer, sizeof(a->peer));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, a->peer, sizeof(a->peer));
	a->c = sp_conn_new(evconnlistener_get_base(l), fd);
	a->parser = sp_h1_new(1, &hooks, a, &limits);
	a->timer = evtimer_new(evconnlistener_get_base(l), on_timeout, a);
	a->hold_timer = evtimer_new(evconnlistener_get_base(l), hold_check, a);
	if (!a->c || !a->parser || !a->timer || !a->hold_timer) {
		conn_free(a);
		return;
	}
	struct timeval tv = {10, 0}; /* a whole admin exchange */
	evtimer_add(a->timer, &tv);
	sp_conn_setcb(a->c, on_read, on_drain, on_event, a);
	sp_conn_read(a->c, 1);
}

/* The host and port of admin.address ("host:port", "[v6]:port", "*:port"). */
static void listener_names(struct sp_admin *ad, const struct sp_admin_cfg *ac)
{
	const char *a = ac->address, *colon = strrchr(a, ':');
	size_t hl = colon ? (size_t)(colon - a) : 0;
	if (hl >= 2 && a[0] == '[')
		snprintf(ad->host, sizeof(ad->host), "%.*s", (int)hl - 2, a + 1);
	else
		snprintf(ad->host, sizeof(ad->host), "%.*s", (int)hl, a);
	snprintf(ad->port, sizeof(ad->port), "%s", colon ? colon + 1 : "");
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
	struct sp_admin *admin = arg;
	if (sp_accept_failed(&admin->accept_pause))
		evconnlistener_disable(l);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct sp_admin *admin = arg;
	(void)fd;
	(void)what;
	if (admin->nconns < MAX_CONNS)
		evconnlistener_enable(admin->listener);
}

struct sp_admin *sp_admin_new(struct sp_runtime *rt)
{
	const struct sp_admin_cfg *ac = &rt->cfg->admin;
	struct sp_admin *admin = calloc(1, sizeof(*admin));
	if (!admin)
		return NULL;
	admin->rt = rt;
	TAILQ_INIT(&admin->conns);
	listener_names(admin, ac);
	admin->listener = evconnlistener_new_bind(
		rt->base, on_accept, admin,
		/* REUSEPORT: a new process can start on the same address while
		 * this one drains (a restart or an upgrade, operations.md) */
		LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
		128, (const struct sockaddr *)&ac->addr, (int)ac->addrlen);
	if (!admin->listener) {
		sp_log(SP_LOG_ERROR, "%s:%d: admin.address: cannot listen on %s: %s", ac->file,
		       ac->line, ac->address, strerror(errno));
		free(admin);
		return NULL;
	}
	if (sp_accept_pause_init(&admin->accept_pause, rt->base, "admin", on_accept_resume, admin) <
	    0) {
		evconnlistener_free(admin->listener);
		free(admin);
		return NULL;
	}
	/* without it libevent logs and retries a failing accept() at once */
	evconnlistener_set_error_cb(admin->listener, on_accept_error);
	sp_log(SP_LOG_INFO, "admin API on %s%s", ac->address,
	       ac->token ? " (bearer token required)" : "");
	return admin;
}

void sp_admin_free(struct sp_admin **ap)
{
	struct sp_admin *a = *ap;
	if (!a)
		return;
	*ap = NULL;
	while (!TAILQ_EMPTY(&a->conns))
		conn_free(TAILQ_FIRST(&a->conns));
	sp_accept_pause_deinit(&a->accept_pause);
	evconnlistener_free(a->listener);
	free(a);
}
