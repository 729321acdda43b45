/* Shadow exchanges (see shadow.h). Each one has up to two legs: the mirror to
 * the shadow backend and, with noise detection, a second copy to the primary
 * backend. The session feeds the request and the primary's answer; the legs
 * run on their own connections; when everything is in, the answers are
 * compared, counted, and differences written to the diff log. */
#include "shadow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "compare.h"
#include "comparer.h"
#include "conn.h"
#include "diffring.h"
#include "h1.h"
#include "health.h"
#include "log.h"
#include "route.h"
#include "upstream.h"
#include "worker.h"

struct capture {
	int status;
	struct sp_buf store; /* header names and values */
	struct sp_hdr *h;
	size_t n, hcap;
	struct sp_buf body;
	int too_big;
};

struct leg {
	struct sp_shadow *sh;
	int backend;
	int server; /* which of the backend's servers */
	struct sp_upconn *up;
	struct sp_h1 *parser;
	struct capture cap;
	struct timespec t0;
	double ms;
	int done, failed, timed_out;
	int body_skipped;   /* failed on purpose: the request body was too big to mirror */
	int keep;           /* the backend keeps the connection open */
	/* its answer began before the whole request went out (an early 413):
	 * what it has not read of it yet is no next request's (session.c's
	 * answered_early) */
	int answered_early;
	int got_bytes;      /* any answer byte arrived */
	int retried;
	int waiting;        /* the noise sample, until the primary's connection is up */
	struct sp_buf replay; /* the whole request, when it has no body */
	struct sp_buf sent_host; /* its Host, when its backend maps Location back */
};

struct sp_shadow {
	struct sp_worker *w;
	TAILQ_ENTRY(sp_shadow) link;
	struct sp_config *cfg;
	const struct sp_route *route;
	struct sp_route_stats *counters; /* held until the mirror ends */
	struct sp_shadow_stats *st;       /* counters->shadow */
	struct sp_shadow_dir *dir;        /* in st: primary -> shadow backend, or NULL */
	struct leg legs[2];
	int nlegs;
	struct capture primary;
	int primary_backend;
	int primary_state; /* 0 running, 1 done, -1 abandoned */
	enum sp_shadow_skip abandoned_as; /* how an abandoned shadow is counted */
	double primary_ms;
	int session_holds;
	int finished;
	/* with the comparer (nothing it borrows may change meanwhile), or NULL;
	 * allocated only then: the struct stays small enough for malloc's
	 * per-thread cache (a job in it cost 2 % of a mirrored request) */
	struct sp_cmp_job *comparing;
	int is_head;
	int req_done;
	size_t req_bytes;
	/* shadow_defaults.timeout_ms from when the mirror has the whole request
	 * (sp_deadline_now_us; INT64_MAX until then, and once timed out) */
	int64_t due_us;
	int due_set;
	char method[24];
	char reqid[72];
	struct sp_buf path;
	struct sp_buf query; /* with log_query */
	int has_query;
	struct sp_buf client_host; /* the client's Host, when kept (location_rewrite) */
	int client_host_known;
	int public_https; /* the client reached us over https (a Location's scheme) */
	struct timespec t0; /* started: the pacer learns how long a budget slot is held */
};

static const char *const skip_names[SP_SKIP__COUNT] = {"budget", "request_body_too_large",
							 "response_body_too_large",
							 "primary_incomplete", "backend_down",
							 "backend_unresponsive", "primary_fell_back",
							 "backend_busy"};

const char *sp_shadow_skip_name(enum sp_shadow_skip k)
{
	return skip_names[k];
}

static void inc(_Atomic uint64_t *c)
{
	sp_count(c);
}

/* Counts into a route's counters and into its direction's (d NULL: past
 * SP_SHADOW_DIRS, the route's only). */
#define COUNT(st, d, field)                 \
	do {                                \
		inc(&(st)->all.field);      \
		if (d)                      \
			inc(&(d)->c.field); \
	} while (0)

/* Direction primary -> shadow (backend indexes of cfg) of st, added on first
 * use (worker thread: the only writer); NULL when the slots are taken. */
static struct sp_shadow_dir *dir_of(struct sp_shadow_stats *st, const struct sp_config *cfg,
				    int primary, int shadow)
{
	const char *p = cfg->backends[primary].name, *s = cfg->backends[shadow].name;
	int k = atomic_load_explicit(&st->ndirs, memory_order_relaxed);
	for (int i = 0; i < k; i++)
		if (strcmp(st->dirs[i].primary, p) == 0 && strcmp(st->dirs[i].shadow, s) == 0)
			return &st->dirs[i];
	if (k == SP_SHADOW_DIRS)
		return NULL;
	struct sp_shadow_dir *d = &st->dirs[k];
	snprintf(d->primary, sizeof(d->primary), "%s", p);
	snprintf(d->shadow, sizeof(d->shadow), "%s", s);
	d->since_ms = sp_unix_ms();
	atomic_store_explicit(&st->ndirs, k + 1, memory_order_release);
	return d;
}


/* A capture's memory comes from and goes back to the worker's stash. */
static void capture_init(struct capture *c, struct sp_stash *st)
{
	memset(c, 0, sizeof(*c));
	sp_buf_init(&c->store);
	sp_buf_init(&c->body);
	c->store.stash = c->body.stash = st;
}

static void capture_drop_head(struct capture *c)
{
	sp_stash_put(c->store.stash, c->h, c->hcap * sizeof(*c->h));
	c->h = NULL;
	c->n = c->hcap = 0;
}

static void capture_deinit(struct capture *c)
{
	sp_buf_deinit(&c->store);
	sp_buf_deinit(&c->body);
	capture_drop_head(c);
}

/* Copies a header list into storage the capture owns: names and values one
 * after the other in the store, then the views into it. */
static void capture_head(struct capture *c, int status, const struct sp_hdr *h, size_t n)
{
	c->status = status;
	sp_buf_reset(&c->store);
	capture_drop_head(c);
	c->h = sp_stash_grow(c->store.stash, NULL, &c->hcap, n + 1, sizeof(*c->h));
	if (!c->h)
		return;
	for (size_t i = 0; i < n; i++)
		if (sp_buf_add(&c->store, h[i].name, h[i].name_len) ||
		    sp_buf_add(&c->store, h[i].value, h[i].value_len))
			return; /* out of memory: no headers (c->n stays 0) */
	const char *p = c->store.data;
	for (size_t i = 0; i < n; i++) {
		c->h[i] = (struct sp_hdr){p, h[i].name_len, p + h[i].name_len, h[i].value_len};
		p += h[i].name_len + h[i].value_len;
	}
	c->n = n;
}

static void capture_body(struct capture *c, const char *p, size_t n, long long max)
{
	if (c->too_big)
		return;
	if ((long long)(c->body.len + n) > max) {
		c->too_big = 1;
		sp_buf_deinit(&c->body);
		return;
	}
	sp_buf_add(&c->body, p, n);
}

/* ---- completion ---- */

static void shadow_free(struct sp_shadow *sh)
{
	for (int i = 0; i < sh->nlegs; i++) {
		sp_upconn_free(&sh->legs[i].up);
		sp_h1_free(&sh->legs[i].parser);
		capture_deinit(&sh->legs[i].cap);
		sp_buf_deinit(&sh->legs[i].replay);
		sp_buf_deinit(&sh->legs[i].sent_host);
	}
	capture_deinit(&sh->primary);
	sp_buf_deinit(&sh->path);
	sp_buf_deinit(&sh->query);
	sp_buf_deinit(&sh->client_host);
	struct sp_worker *w = sh->w;
	TAILQ_REMOVE(&w->shadows, sh, link);
	w->shadow_inflight--;
	sp_pacer_done(&w->shadow_pacer, sp_ms_since(&sh->t0));
	sp_worker_release_stats(w, sh->counters);
	sp_config_unref(&sh->cfg);
	free(sh);
	sp_worker_maybe_done(w);
}

/* Headers whose values never reach a log. */
static int secret_header(const char *name)
{
	static const char *const secrets[] = {"Authorization", "Proxy-Authorization", "Cookie",
					      "Set-Cookie"};
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		if (strcasecmp(name, secrets[i]) == 0)
			return 1;
	return 0;
}

/* True when pointer p and pattern share every segment they both have: the
 * value at p contains, or lies inside, what the pattern names. */
static int pointer_overlaps(const char *pattern, const char *p)
{
	static const char cut[] = "…"; /* bound_where's end of a pointer it cut */
	while (*pattern == '/' && *p == '/') {
		const char *ps = pattern + 1, *qs = p + 1;
		size_t pl = strcspn(ps, "/"), ql = strcspn(qs, "/");
		/* a segment cut short may be the pattern's: hidden, as when it is */
		if (!qs[ql] && ql >= sizeof(cut) - 1 && strcmp(qs + ql - (sizeof(cut) - 1), cut) == 0)
			return 1;
		if (!(pl == 1 && *ps == '*') && (pl != ql || memcmp(ps, qs, pl) != 0))
			return 0;
		pattern = ps + pl;
		p = qs + ql;
	}
	return 1;
}

/* Where p has more segments than pattern: cuts p after as many (the keys
 * below a redacted value are part of it: an object keyed by e-mail
 * address). */
static void cut_to_depth(const char *pattern, char *p)
{
	for (; *pattern == '/' && *p == '/'; p += 1 + strcspn(p + 1, "/"))
		pattern += 1 + strcspn(pattern + 1, "/");
	*p = '\0';
}

/* A JSON difference whose values redact() hid (a side without one aside). */
static int redacted(const struct sp_diff *d, const char *red)
{
	return d->kind == SP_DIFF_JSON && d->where && (d->primary || d->shadow) &&
	       (!d->primary || strcmp(d->primary, red) == 0) &&
	       (!d->shadow || strcmp(d->shadow, red) == 0);
}

static void redact(struct sp_cmp_result *r, const struct sp_shadow_cfg *sc)
{
	static const char red[] = "\"[redacted]\"";
	for (size_t i = 0; i < r->ndiffs; i++) {
		struct sp_diff *d = &r->diffs[i];
		int hide = d->kind == SP_DIFF_HEADER && d->where && secret_header(d->where);
		if (!hide && d->kind == SP_DIFF_BODY && sc->nredact)
			hide = 1;
		for (size_t k = 0; d->kind == SP_DIFF_JSON && d->where && k < sc->nredact; k++)
			if (pointer_overlaps(sc->redact_json[k], d->where)) {
				hide = 1;
				cut_to_depth(sc->redact_json[k], d->where);
			}
		if (!hide)
			continue;
		if (d->primary) {
			free(d->primary);
			d->primary = strdup(red);
		}
		if (d->shadow) {
			free(d->shadow);
			d->shadow = strdup(red);
		}
	}
	/* cut at the pointer's depth, the differences below one redacted
	 * value (two e-mail keys) are one: kept once, their number unsaid */
	size_t kept = 0;
	for (size_t i = 0; i < r->ndiffs; i++) {
		struct sp_diff *d = &r->diffs[i], *same = NULL;
		for (size_t k = 0; redacted(d, red) && k < kept && !same; k++)
			if (redacted(&r->diffs[k], red) && strcmp(r->diffs[k].where, d->where) == 0)
				same = &r->diffs[k];
		if (!same) {
			r->diffs[kept++] = *d;
			continue;
		}
		/* one side's value there, the other's, or both */
		if (!same->primary) {
			same->primary = d->primary;
			d->primary = NULL;
		}
		if (!same->shadow) {
			same->shadow = d->shadow;
			d->shadow = NULL;
		}
		free(d->where);
		free(d->primary);
		free(d->shadow);
	}
	r->ndiffs = kept;
}

/* PREFIX NAME","status":N,"ms":F, one side of a diff record (by hand: a
 * record is written for every difference, and printf cost it more than
 * the comparison) */
static void add_side_json(struct sp_buf *b, const char *prefix, const char *backend, int status,
			  double ms)
{
	sp_buf_adds(b, prefix);
	sp_buf_adds(b, backend);
	sp_buf_adds(b, "\",\"status\":");
	sp_buf_add_uint(b, (unsigned)status, 10);
	sp_buf_adds(b, ",\"ms\":");
	sp_buf_add_fixed3(b, ms);
}

static void write_diff(struct sp_shadow *sh, const struct leg *leg, struct sp_cmp_result *r)
{
	struct sp_accesslog *log = sh->w->difflog;
	struct sp_buf *b = &sh->w->diffbuf;
	if (!log && !sh->w->diffring)
		return;
	sp_buf_reset(b);
	sp_accesslog_add_time(b);
	sp_buf_adds(b, ",\"type\":\"diff\",\"route\":\"");
	sp_buf_add_json_text(b, sh->route->name, strlen(sh->route->name));
	sp_buf_adds(b, "\",\"method\":\"");
	sp_buf_add_json_str(b, sh->method, strlen(sh->method));
	sp_buf_adds(b, "\",\"path\":\"");
	sp_buf_add_json_str(b, sh->path.data ? sh->path.data : "", sh->path.len);
	sp_buf_addc(b, '"');
	if (sh->cfg->log_query)
		sp_buf_add_json_field(b, "query",
				      sh->has_query ? (sh->query.data ? sh->query.data : "") : NULL,
				      sh->query.len);
	sp_buf_adds(b, ",\"request_id\":\"");
	sp_buf_add_json_str(b, sh->reqid, strlen(sh->reqid));
	add_side_json(b, "\",\"primary\":{\"backend\":\"",
		      sh->cfg->backends[sh->primary_backend].name, sh->primary.status,
		      sh->primary_ms);
	add_side_json(b, "},\"shadow\":{\"backend\":\"", sh->cfg->backends[leg->backend].name,
		      leg->cap.status, leg->ms);
	sp_buf_adds(b, "},\"differences\":");
	sp_cmp_diffs_json(r, 1, b);
	if (r->note) {
		sp_buf_adds(b, ",\"note\":\"");
		sp_buf_add_json_str(b, r->note, strlen(r->note));
		sp_buf_addc(b, '"');
	}
	sp_buf_adds(b, "}\n");
	/* the answers' values are UTF-8 as jansson wrote them: ASCII, as the
	 * access log is, so that no byte reaches a terminal that acts on it */
	sp_buf_json_ascii(b, 0);
	sp_accesslog_write_raw(log, b->data, b->len);
	sp_diff_ring_push(sh->w->diffring, sh->route->name, b->data, b->len);
}

/* Counts what cannot be compared; else sets up j: 1, 0 when counted. */
static int prepare_compare(struct sp_shadow *sh, struct sp_cmp_job *j)
{
	struct sp_shadow_stats *st = sh->st;
	struct sp_shadow_dir *d = sh->dir;
	const struct sp_shadow_cfg *sc = &sh->route->shadow;
	struct leg *leg = &sh->legs[0];

	if (leg->body_skipped) /* counted as a request-body skip when it happened */
		return 0;
	if (sh->primary_state < 0) {
		COUNT(st, d, skipped[sh->abandoned_as]);
		return 0;
	}
	if (leg->failed && leg->timed_out) {
		COUNT(st, d, timeouts);
		return 0;
	}
	if (leg->failed) {
		COUNT(st, d, errors);
		return 0;
	}
	if (sh->primary.too_big || leg->cap.too_big) {
		COUNT(st, d, skipped[SP_SKIP_RESPONSE_BODY]);
		return 0;
	}
	memset(j, 0, sizeof(*j));
	j->owner = sh;
	/* decoded, a body is held to the same bound as on the wire */
	j->rules = (struct sp_cmp_rules){sc->headers, sc->nheaders, sc->ignore_json, sc->nignore,
					 (enum sp_cmp_body)sc->body,
					 (size_t)sh->cfg->shadow.max_body_bytes};
	if (sh->is_head)
		j->rules.body = SP_CMP_NONE;
	j->primary = (struct sp_cmp_side){sh->primary.status, sh->primary.h, sh->primary.n,
					  sh->primary.body.data, sh->primary.body.len};
	j->shadow = (struct sp_cmp_side){leg->cap.status, leg->cap.h, leg->cap.n,
					 leg->cap.body.data, leg->cap.body.len};
	struct leg *n2 = &sh->legs[1];
	if (sh->nlegs > 1 && n2->done && !n2->cap.too_big) {
		j->has_sample = 1;
		j->sample = (struct sp_cmp_side){n2->cap.status, n2->cap.h, n2->cap.n,
						 n2->cap.body.data, n2->cap.body.len};
	}
	return 1;
}

/* The job's outcome, counted and logged (worker thread). */
static void count_compared(struct sp_shadow *sh, struct sp_cmp_job *j)
{
	struct sp_shadow_stats *st = sh->st;
	struct sp_shadow_dir *d = sh->dir;
	struct leg *leg = &sh->legs[0];
	struct sp_cmp_result *r = &j->r;

	if (j->rc < 0)
		goto out;
	if (r->ndiffs == 0 && r->note == sp_cmp_note_too_large) {
		/* the bodies were not compared: "identical" would be a guess */
		COUNT(st, d, skipped[SP_SKIP_RESPONSE_BODY]);
		goto out;
	}
	sp_hist_add(&st->all.lat_primary, sh->primary_ms);
	sp_hist_add(&st->all.lat_shadow, leg->ms);
	if (d) {
		sp_hist_add(&d->c.lat_primary, sh->primary_ms);
		sp_hist_add(&d->c.lat_shadow, leg->ms);
	}
	if (r->ndiffs == 0) {
		COUNT(st, d, identical);
	} else if (j->real == 0) {
		COUNT(st, d, noise);
	} else {
		COUNT(st, d, different);
		redact(r, &sh->route->shadow);
		write_diff(sh, leg, r);
	}
	/* after the outcome: whoever reads compared first finds its outcome too */
	sp_count_after(&st->all.compared);
	if (d)
		sp_count_after(&d->c.compared);
out:
	sp_cmp_job_deinit(j);
}

/* Called whenever a part finishes; compares once everything is in (large
 * answers on the comparer's thread, when the worker has one) and frees once
 * the session has let go and the comparison is back. */
static void maybe_finish(struct sp_shadow *sh)
{
	if (!sh->finished) {
		int legs_done = 1;
		for (int i = 0; i < sh->nlegs; i++)
			legs_done &= sh->legs[i].done || sh->legs[i].failed;
		if (sh->primary_state == 0 || !legs_done)
			return;
		sh->finished = 1; /* the worker's timer passes it by now */
		for (int i = 0; i < sh->nlegs; i++)
			sp_upconn_free(&sh->legs[i].up);
		struct sp_cmp_job job;
		if (prepare_compare(sh, &job)) {
			if (sh->w->comparer && sp_cmp_job_costly(&job) &&
			    (sh->comparing = malloc(sizeof(job))) != NULL) {
				*sh->comparing = job;
				sp_comparer_submit(sh->w->comparer, &sh->w->cmp_port, sh->comparing);
				return; /* back through sp_shadow_compared */
			}
			sp_cmp_job_run(&job);
			count_compared(sh, &job);
		}
	}
	if (!sh->session_holds && !sh->comparing)
		shadow_free(sh);
}

void sp_shadow_compared(struct sp_cmp_job *j)
{
	struct sp_shadow *sh = j->owner;
	sh->comparing = NULL;
	count_compared(sh, j);
	free(j);
	maybe_finish(sh);
}

/* The leg's backend and server, in its shadow's generation. */
static const struct sp_backend *leg_backend(const struct leg *l)
{
	return &l->sh->cfg->backends[l->backend];
}

static const struct sp_server *leg_server(const struct leg *l)
{
	return &leg_backend(l)->servers[l->server];
}

/* A connection to the backend that never came up (refused, failed, or still
 * connecting when the shadow timed out) counts against its passive health,
 * as for primaries: once it is down, shadows to it are skipped rather than
 * paid for with a connect each, until a trial gets an answer. */
static int leg_came_up(const struct leg *l)
{
	return l->up->reused || l->up->connected;
}

static void leg_connect_failed(struct leg *l, const char *why)
{
	if (why != SP_ERR_LOCAL && (!l->up || !leg_came_up(l)))
		sp_health_report(leg_backend(l), leg_server(l), 0);
}

static void leg_fail(struct leg *l, int timed_out)
{
	if (l->done || l->failed)
		return;
	l->failed = 1;
	l->timed_out = timed_out;
	l->ms = sp_ms_since(&l->t0);
	sp_upconn_free(&l->up);
}

/* ---- leg I/O ---- */

/* The answer's Location in the client's terms, as the client would get it
 * from this backend (session.c's map_location): compared so. */
static int map_location(struct leg *l, struct sp_h1_msg *m)
{
	const struct sp_backend *be = leg_backend(l);
	struct sp_location_map lm = {be->rewrite, be->nrewrite, NULL, 0, NULL, 0,
				     l->sh->public_https ? "https" : "http"};
	if (l->sent_host.data) {
		lm.sent_host = l->sent_host.data;
		lm.sent_host_len = l->sent_host.len;
	}
	if (l->sh->client_host_known) {
		lm.public_host = l->sh->client_host.data ? l->sh->client_host.data : "";
		lm.public_host_len = l->sh->client_host.len;
	}
	return sp_location_fields(&lm, m->hdrs, m->nhdrs, &l->sh->w->locbuf);
}

static int on_leg_head(void *ud, struct sp_h1_msg *m)
{
	struct leg *l = ud;
	const char *why;
	if (m->http_major != 1 || sp_http_check_response(m->hdrs, m->nhdrs, m->http_minor, &why) < 0)
		return -1;
	if (m->status / 100 == 1)
		return 1; /* interim: the final answer follows */
	l->answered_early = !l->sh->req_done || (l->up && evbuffer_get_length(l->up->conn->out) > 0);
	if (l == &l->sh->legs[0]) {
		/* an answer: the server is not unresponsive. A 5xx is a
		 * difference to report, not an outage, nor a success that
		 * would clear the failures of the requests it serves (or bring
		 * it back up after a trial) */
		if (m->status < 500)
			sp_health_report(leg_backend(l), leg_server(l), 1);
		else
			sp_health_count_ok(leg_server(l));
		sp_health_shadow_report(leg_backend(l), leg_server(l), 1);
	} else {
		/* the noise sample asks the primary's server: a request's rule */
		sp_health_report(leg_backend(l), leg_server(l), m->status < 500);
	}
	if (leg_backend(l)->location_map && map_location(l, m) < 0)
		return -1;
	capture_head(&l->cap, m->status, m->hdrs, m->nhdrs);
	l->keep = m->keep_alive;
	return 0;
}

static int on_leg_body(void *ud, const char *p, size_t n)
{
	struct leg *l = ud;
	capture_body(&l->cap, p, n, l->sh->cfg->shadow.max_body_bytes);
	return 0;
}

static int on_leg_done(void *ud, struct sp_h1_msg *m)
{
	struct leg *l = ud;
	if (m->status / 100 == 1)
		return 0;
	l->done = 1;
	l->ms = sp_ms_since(&l->t0);
	return 1;
}

static const struct sp_h1_hooks leg_hooks = {on_leg_head, on_leg_body, on_leg_done};

/* After a complete answer: back to the pool when the exchange left the
 * connection clean (whole request sent, keep-alive, nothing extra read). */
static void leg_release(struct leg *l)
{
	struct sp_conn *c = l->up->conn;
	if (l->keep && l->sh->req_done && !l->answered_early && evbuffer_get_length(c->in) == 0 &&
	    evbuffer_get_length(c->out) == 0 && !sp_h1_in_message(l->parser))
		sp_pool_put(&l->up);
	else
		sp_upconn_free(&l->up);
}

static void on_leg_read(struct sp_conn *c, void *arg)
{
	struct leg *l = arg;
	l->got_bytes = 1;
	while (evbuffer_get_length(c->in) > 0 && !l->done) {
		struct evbuffer_iovec v;
		size_t used = 0;
		evbuffer_peek(c->in, -1, NULL, &v, 1);
		enum sp_h1_rc rc = sp_h1_execute(l->parser, v.iov_base, v.iov_len, &used);
		evbuffer_drain(c->in, used);
		if (rc == SP_H1_ERROR || rc == SP_H1_UPGRADE) {
			sp_health_count_failed(leg_server(l)); /* a bad answer */
			leg_fail(l, 0); /* frees c */
			break;
		}
	}
	if (l->done && l->up)
		leg_release(l);
	if (l->done || l->failed)
		maybe_finish(l->sh);
}

static int leg_connect(struct leg *l, enum sp_take take);

static void on_leg_event(struct sp_conn *c, short what, void *arg)
{
	struct leg *l = arg;
	if (what & SP_CONN_CONNECTED) {
		l->up->connected = 1;
		sp_conn_flush(c);
		return;
	}
	if ((what & (SP_CONN_EOF | SP_CONN_ERROR)) && l->up->reused && !l->got_bytes &&
	    !l->retried && l->replay.len) {
		/* a pooled connection the backend had closed: once more, fresh */
		l->retried = 1;
		sp_upconn_free(&l->up);
		if (leg_connect(l, SP_TAKE_NEW) == 0)
			return;
		leg_fail(l, 0);
	} else if ((what & SP_CONN_EOF) && sp_h1_finish(l->parser) == SP_H1_OK && l->done) {
		sp_upconn_free(&l->up);
	} else {
		char why[256];
		if ((what & SP_CONN_ERROR) && sp_conn_tls_failure(c, why, sizeof(why)))
			sp_log(SP_LOG_WARN, "shadow backend %s (%s): TLS: %s", leg_backend(l)->name,
			       leg_server(l)->hostport, why);
		if (what & (SP_CONN_ERROR | SP_CONN_TIMEOUT))
			leg_connect_failed(l, NULL);
		if (leg_came_up(l) && !l->done) /* closed or reset before its whole answer */
			sp_health_count_failed(leg_server(l));
		leg_fail(l, (what & SP_CONN_TIMEOUT) != 0);
	}
	maybe_finish(l->sh);
}

/* Its time is up (or the worker's, at exit): what has not answered fails,
 * once. */
static void time_out(struct sp_shadow *sh)
{
	sh->due_set = 1; /* over: a request done later does not start a wait */
	sh->due_us = INT64_MAX;
	for (int i = 0; i < sh->nlegs; i++) {
		struct leg *l = &sh->legs[i];
		if (l->up && !leg_came_up(l)) {
			leg_connect_failed(l, NULL);
		} else if (l->up && !l->done && sh->req_done) {
			/* connected, had the whole request, and no answer in time
			 * (not a mirror still waiting for a body: at exit): a failed
			 * outcome, which pauses shadows to it, not its requests */
			sp_health_count_failed(leg_server(l));
			if (i == 0)
				sp_health_shadow_report(leg_backend(l), leg_server(l), 0);
		}
		leg_fail(l, 1);
	}
	maybe_finish(sh);
}

/* The worker's one timer for its shadows' timeouts, armed for due_us when
 * that is sooner than what it waits for. Shadows start in the order of their
 * deadlines (but across a reload that shortens timeout_ms), so a shadow
 * costs no timer operation: the timer, armed for the oldest, finds it
 * finished and waits for the next (sp_shadow_on_due). An event of its own
 * cost each shadow an allocation, an add and a delete (about 800
 * instructions). */
static void arm_due(struct sp_worker *w, int64_t due_us)
{
	if (w->shadow_due_us && w->shadow_due_us <= due_us)
		return;
	int64_t now = sp_deadline_now_us();
	struct timeval tv = sp_tv_us(due_us > now ? due_us - now : 0);
	if (evtimer_add(w->shadow_timer, &tv) == 0)
		w->shadow_due_us = due_us;
}

/* The shadow's wait for its answers begins (once). */
static void start_due(struct sp_shadow *sh)
{
	if (sh->due_set)
		return;
	sh->due_set = 1;
	sh->due_us = sp_deadline_now_us() + (int64_t)sh->cfg->shadow.timeout_ms * 1000;
	arm_due(sh->w, sh->due_us);
}

void sp_shadow_on_due(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	struct sp_shadow *sh, *next;
	int64_t now = sp_deadline_now_us(), soonest = INT64_MAX;
	(void)fd;
	(void)what;
	w->shadow_due_us = 0;
	for (sh = TAILQ_FIRST(&w->shadows); sh; sh = next) {
		next = TAILQ_NEXT(sh, link);
		if (sh->finished || sh->due_us == INT64_MAX) /* done, or timed out already */
			continue;
		if (sh->due_us <= now)
			time_out(sh); /* may free sh */
		else if (sh->due_us < soonest)
			soonest = sh->due_us;
	}
	if (soonest != INT64_MAX)
		arm_due(w, soonest);
}

static int leg_start(struct sp_shadow *sh, struct leg *l, int backend, int server,
		     const struct sp_buf *head, int has_body, const struct sp_retarget *t,
		     const struct sp_hdr_vars *vars)
{
	static const struct sp_h1_limits limits = {1024, 65536, 200};
	static const char marker[] = "X-Strangler-Shadow: 1\r\n\r\n";
	l->sh = sh;
	l->backend = backend;
	l->server = server;
	capture_init(&l->cap, &sh->w->stash);
	clock_gettime(CLOCK_MONOTONIC, &l->t0);
	l->parser = sp_h1_new(0, &leg_hooks, l, &limits);
	if (!l->parser)
		return -1;
	sp_h1_set_stash(l->parser, &sh->w->stash);
	sp_h1_expect_head(l->parser, sh->is_head);
	/* the primary's head, plus the marker before the blank line */
	sp_buf_init(&l->replay);
	sp_buf_init(&l->sent_host);
	l->replay.stash = &sh->w->stash;
	if (sp_buf_add(&l->replay, head->data, head->len - 2) < 0 ||
	    sp_buf_add(&l->replay, marker, sizeof(marker) - 1) < 0 ||
	    (t && sp_http_retarget(&l->replay, t) < 0))
		return -1;
	/* its backend's request_headers, with the exchange's variables (vars
	 * NULL: a noise sample, on the primary's head, which has them) */
	const struct sp_hdr_rules *rules = &sh->cfg->backends[backend].req_headers;
	if (vars && sp_hdr_rules_any(rules) && sp_hdr_rules_apply(rules, vars, &l->replay) < 0)
		return -1;
	const char *host;
	size_t host_len;
	if (sh->cfg->backends[backend].location_map &&
	    sp_http_head_host(&l->replay, &host, &host_len) == 0 &&
	    sp_buf_add(&l->sent_host, host, host_len) < 0)
		return -1;
	/* Mirrors reuse the backend's keep-alive pool like primaries do (a
	 * connection per mirror costs a connect and a close per request); one
	 * that cannot be sent twice (a body, a POST) gets one checked alive, and
	 * is not sent again when it turns out closed after all. */
	int replay = sp_http_replayable(sh->method, has_body);
	if (leg_connect(l, replay ? SP_TAKE_IDLE : SP_TAKE_CHECKED) < 0)
		return -1;
	if (!replay)
		sp_buf_deinit(&l->replay);
	return 0;
}

static int leg_connect(struct leg *l, enum sp_take take)
{
	const char *why = NULL;
	l->up = sp_worker_connect(l->sh->w, l->sh->cfg, l->backend, l->server, take, &why);
	if (!l->up) {
		leg_connect_failed(l, why);
		return -1;
	}
	struct sp_conn *c = l->up->conn;
	sp_conn_setcb(c, on_leg_read, NULL, on_leg_event, l);
	sp_conn_timeouts(c, 0, 0);
	sp_conn_read(c, 1);
	evbuffer_add(c->out, l->replay.data, l->replay.len);
	sp_conn_flush(c);
	return 0;
}

struct sp_shadow *sp_shadow_start(struct sp_worker *w, struct sp_config *cfg,
				  const struct sp_route *route, int shadow_backend,
				  int primary_backend, const char *method, const char *path,
				  size_t path_len, const struct sp_buf *query, const char *reqid,
				  const struct sp_hdr_vars *vars,
				  const struct sp_buf *head, int has_body, const struct sp_retarget *t)
{
	struct sp_shadow_stats *st = &w->route_stats[route->index]->shadow;
	struct sp_shadow_dir *d = dir_of(st, cfg, primary_backend, shadow_backend);
	/* the process's budget split, the remainder to the first workers: the
	 * sum is max_in_flight (with fewer than workers, some get none) */
	int budget = cfg->shadow.max_in_flight / cfg->workers +
		     (w->id % cfg->workers < cfg->shadow.max_in_flight % cfg->workers);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (budget < 1 || w->shadow_inflight >= budget ||
	    !sp_pacer_admit(&w->shadow_pacer, sp_ts_ms(&now),
			    budget, cfg->shadow.timeout_ms)) {
		COUNT(st, d, skipped[SP_SKIP_BUDGET]);
		return NULL;
	}
	int paused, server = sp_worker_pick(w, cfg, shadow_backend, 1, &paused);
	if (server < 0) {
		/* all its servers down, or those up not answering shadows, or
		 * at max_conns */
		enum sp_shadow_skip why = paused ? SP_SKIP_UNRESPONSIVE
					  : sp_worker_shadow_any_full(w, cfg, shadow_backend)
					      ? SP_SKIP_BUSY
					      : SP_SKIP_BACKEND_DOWN;
		COUNT(st, d, skipped[why]);
		return NULL;
	}
	struct sp_shadow *sh = calloc(1, sizeof(*sh));
	if (!sh)
		return NULL;
	sh->t0 = now;
	sh->w = w;
	sh->cfg = sp_config_ref(cfg);
	sh->route = route;
	sh->counters = sp_worker_hold_stats(w, route->index);
	sh->st = st;
	sh->dir = d;
	sh->primary_backend = primary_backend;
	sh->session_holds = 1;
	sh->is_head = strcmp(method, "HEAD") == 0;
	sp_copy_str(sh->method, sizeof(sh->method), method);
	sp_copy_str(sh->reqid, sizeof(sh->reqid), reqid);
	sp_buf_init(&sh->path);
	sp_buf_init(&sh->query);
	sh->path.stash = sh->query.stash = &w->stash;
	sp_buf_add(&sh->path, path, path_len);
	sp_buf_init(&sh->client_host);
	sh->client_host_known = vars->http_host && sp_buf_add(&sh->client_host, vars->http_host,
								vars->http_host_len) == 0;
	sh->public_https = vars->public_scheme && strcmp(vars->public_scheme, "https") == 0;
	if (query) {
		sh->has_query = 1;
		if (query->len)
			sp_buf_add(&sh->query, query->data, query->len);
	}
	capture_init(&sh->primary, &w->stash);
	TAILQ_INSERT_TAIL(&w->shadows, sh, link);
	w->shadow_inflight++;
	COUNT(st, d, mirrored);

	/* a body still to come is the client's pace: the wait starts after it */
	sh->due_us = INT64_MAX;
	if (!has_body)
		start_due(sh);
	/* the noise sample asks the serving backend a second time: only what
	 * has no effect there, and only once the primary's connection says which
	 * server serves it (a refusal may move it on: sp_shadow_primary_served) */
	sh->nlegs = route->shadow.noise_samples && sp_http_safe(method, has_body) ? 2 : 1;
	if (sh->nlegs == 2) {
		struct leg *n = &sh->legs[1];
		n->sh = sh;
		n->backend = primary_backend;
		n->waiting = 1;
		n->t0 = now;
		capture_init(&n->cap, &w->stash);
		sp_buf_init(&n->replay);
	}
	int ok = leg_start(sh, &sh->legs[0], shadow_backend, server, head, has_body, t, vars) == 0;
	if (!ok)
		for (int i = 0; i < sh->nlegs; i++)
			leg_fail(&sh->legs[i], 0);
	return sh;
}

void sp_shadow_request_bytes(struct sp_shadow *sh, const void *p, size_t n, size_t body)
{
	if (!sh || sh->finished)
		return;
	sh->req_bytes += body;
	for (int i = 0; i < sh->nlegs; i++) {
		struct leg *l = &sh->legs[i];
		if (!l->up)
			continue;
		if ((long long)sh->req_bytes > sh->cfg->shadow.max_body_bytes) {
			/* too big to mirror: stop, and count it once */
			if (i == 0)
				COUNT(sh->st, sh->dir, skipped[SP_SKIP_REQUEST_BODY]);
			l->failed = l->body_skipped = 1;
			sp_upconn_free(&l->up);
			continue;
		}
		evbuffer_add(l->up->conn->out, p, n);
		sp_conn_flush(l->up->conn);
	}
}

void sp_shadow_request_done(struct sp_shadow *sh)
{
	if (sh) {
		sh->req_done = 1;
		if (!sh->finished)
			start_due(sh);
	}
	for (int i = 0; sh && i < sh->nlegs; i++)
		if (sh->legs[i].up)
			sp_conn_flush(sh->legs[i].up->conn);
}

void sp_shadow_primary_served(struct sp_shadow *sh, int server, const struct sp_buf *head)
{
	struct leg *n = sh ? &sh->legs[1] : NULL;
	if (!n || sh->nlegs < 2 || !n->waiting)
		return;
	n->waiting = 0;
	if (n->failed) /* the shadow timed out first */
		return;
	/* the same server, with the head it got, without taking a turn; not
	 * past its max_conns (then the comparison goes without the sample) */
	if (!sp_worker_shadow_room(sh->w, sh->cfg, sh->primary_backend, server) ||
	    leg_start(sh, n, sh->primary_backend, server, head, 0, NULL, NULL) < 0)
		leg_fail(n, 0);
}

void sp_shadow_primary_retried(struct sp_shadow *sh)
{
	struct leg *n = sh && sh->nlegs == 2 ? &sh->legs[1] : NULL;
	if (!n || n->waiting || n->failed)
		return; /* not sent yet: it follows the next connection */
	/* it asked the server that failed the primary, whose answer will come
	 * from another: no sample of this server's noise */
	if (n->done) {
		n->done = 0;
		n->failed = 1;
	} else {
		leg_fail(n, 0);
	}
}

void sp_shadow_primary_head(struct sp_shadow *sh, int status, const struct sp_hdr *h, size_t n)
{
	if (sh)
		capture_head(&sh->primary, status, h, n);
}

void sp_shadow_primary_body(struct sp_shadow *sh, const char *p, size_t n)
{
	if (sh)
		capture_body(&sh->primary, p, n, sh->cfg->shadow.max_body_bytes);
}

static void abandon(struct sp_shadow **shp, enum sp_shadow_skip why)
{
	struct sp_shadow *sh = *shp;
	if (!sh)
		return;
	*shp = NULL;
	sh->primary_state = -1;
	sh->abandoned_as = why;
	sh->session_holds = 0;
	/* nothing will be compared: stop the legs now */
	for (int i = 0; i < sh->nlegs; i++)
		if (!sh->legs[i].done && !sh->legs[i].failed) {
			sh->legs[i].failed = 1;
			sp_upconn_free(&sh->legs[i].up);
		}
	maybe_finish(sh);
}

void sp_shadow_primary_done(struct sp_shadow **shp, int status, double ms)
{
	struct sp_shadow *sh = *shp;
	if (!sh)
		return;
	if (!sh->req_done) {
		/* answered (or failed) before the request was whole: the mirror
		 * will not get the rest, and has nothing to be compared on */
		abandon(shp, SP_SKIP_PRIMARY_INCOMPLETE);
		return;
	}
	*shp = NULL;
	if (!sh->primary.h)
		capture_head(&sh->primary, status, NULL, 0);
	if (sh->nlegs == 2 && sh->legs[1].waiting)
		leg_fail(&sh->legs[1], 0); /* no connection came up: no sample */
	sh->primary.status = status;
	sh->primary_state = 1;
	sh->primary_ms = ms;
	sh->session_holds = 0;
	maybe_finish(sh);
}

void sp_shadow_abandon(struct sp_shadow **shp)
{
	abandon(shp, SP_SKIP_PRIMARY_INCOMPLETE);
}

void sp_shadow_primary_moved(struct sp_shadow **shp, int backend)
{
	struct sp_shadow *sh = *shp;
	if (!sh)
		return;
	if (backend == sh->legs[0].backend) {
		abandon(shp, SP_SKIP_FELL_BACK); /* it would be compared with itself */
		return;
	}
	/* the exchange now belongs to another direction: its mirror goes along */
	struct sp_shadow_dir *d = dir_of(sh->st, sh->cfg, backend, sh->legs[0].backend);
	if (sh->dir != d && sh->dir)
		atomic_store_explicit(&sh->dir->c.mirrored, sp_read(&sh->dir->c.mirrored) - 1,
				      memory_order_relaxed);
	if (sh->dir != d && d)
		inc(&d->c.mirrored);
	sh->dir = d;
	sh->primary_backend = backend;
}

void sp_shadow_expire_all(struct sp_worker *w)
{
	struct sp_shadow *sh, *next;
	for (sh = TAILQ_FIRST(&w->shadows); sh; sh = next) {
		next = TAILQ_NEXT(sh, link);
		if (sh->session_holds)
			continue;
		time_out(sh); /* may free sh */
	}
}

void sp_shadow_kill_all(struct sp_worker *w)
{
	/* sessions go first (sp_sessions_kill), so no session holds one now;
	 * comparisons still running borrow their shadows' answers: wait */
	sp_worker_take_comparisons(w);
	struct sp_shadow *sh;
	while ((sh = TAILQ_FIRST(&w->shadows)) != NULL)
		shadow_free(sh);
}


/* Counters summed over workers (main thread). */
struct counts_sum {
	uint64_t v[7]; /* mirrored, compared, identical, different, noise, errors, timeouts */
	uint64_t skip[SP_SKIP__COUNT];
	uint64_t lp[SP_LAT_BUCKETS], ls[SP_LAT_BUCKETS];
};

/* A direction's counters summed over the workers. */
struct dir_sum {
	char primary[SP_NAME_MAX], shadow[SP_NAME_MAX];
	long long since_ms; /* the earliest worker's */
	struct counts_sum c;
};
#define DIR_SUMS (2 * SP_SHADOW_DIRS) /* workers may have met directions in other orders */

static void counts_add(struct sp_shadow_counts *c, uint64_t v[7], uint64_t skip[SP_SKIP__COUNT],
		       uint64_t *lat_primary, uint64_t *lat_shadow)
{
	/* compared before its outcomes, which compare_and_count counts first */
	v[1] += sp_read_before(&c->compared);
	_Atomic uint64_t *f[7] = {&c->mirrored, NULL,	     &c->identical, &c->different,
				  &c->noise,	&c->errors, &c->timeouts};
	for (int k = 0; k < 7; k++)
		if (f[k])
			v[k] += sp_read(f[k]);
	for (int k = 0; k < SP_SKIP__COUNT; k++)
		skip[k] += sp_read(&c->skipped[k]);
	if (lat_primary)
		sp_hist_sum(&c->lat_primary, lat_primary);
	if (lat_shadow)
		sp_hist_sum(&c->lat_shadow, lat_shadow);
}

/* Adds worker direction d into sums (*n used of DIR_SUMS). */
static void dir_sum_add(struct dir_sum *sums, size_t *n, struct sp_shadow_dir *d)
{
	size_t i = 0;
	while (i < *n && (strcmp(sums[i].primary, d->primary) || strcmp(sums[i].shadow, d->shadow)))
		i++;
	if (i == DIR_SUMS)
		return;
	if (i == *n) {
		memcpy(sums[i].primary, d->primary, sizeof(d->primary));
		memcpy(sums[i].shadow, d->shadow, sizeof(d->shadow));
		sums[i].since_ms = d->since_ms;
		(*n)++;
	}
	if (d->since_ms < sums[i].since_ms)
		sums[i].since_ms = d->since_ms;
	counts_add(&d->c, sums[i].c.v, sums[i].c.skip, sums[i].c.lp, sums[i].c.ls);
}

/* Sums route's counters, and when dirs is not NULL its directions' (their
 * number in *ndirs), over the workers. */
static void sum_route(struct sp_worker *const *ws, int n, const char *route, uint64_t v[7],
		      uint64_t skip[SP_SKIP__COUNT], uint64_t *lat_primary, uint64_t *lat_shadow,
		      struct dir_sum *dirs, size_t *ndirs)
{
	for (int i = 0; i < n; i++) {
		sp_worker_stats_read_lock(ws[i]);
		struct sp_shadow_stats *st = sp_worker_route_stats(ws[i], route);
		if (st)
			counts_add(&st->all, v, skip, lat_primary, lat_shadow);
		int nd = st && dirs ? atomic_load_explicit(&st->ndirs, memory_order_acquire) : 0;
		for (int k = 0; k < nd; k++)
			dir_sum_add(dirs, ndirs, &st->dirs[k]);
		sp_worker_stats_read_unlock(ws[i]);
	}
}

void sp_shadow_sum(struct sp_worker *const *ws, int n, const char *route, uint64_t v[7],
		   uint64_t skip[SP_SKIP__COUNT], uint64_t *lat_primary, uint64_t *lat_shadow)
{
	sum_route(ws, n, route, v, skip, lat_primary, lat_shadow, NULL, NULL);
}

/* The counters of a summary line (and of each of its directions), from
 * "mirrored" to "shadow_ms". */
static void add_counts_json(struct sp_buf *b, const struct counts_sum *c)
{
	const uint64_t *v = c->v;
	sp_buf_printf(b,
		      "\"mirrored\":%llu,\"compared\":%llu,\"identical\":%llu,\"different\":%llu,"
		      "\"noise\":%llu,\"skipped\":{",
		      (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)v[2],
		      (unsigned long long)v[3], (unsigned long long)v[4]);
	for (int k = 0; k < SP_SKIP__COUNT; k++)
		sp_buf_printf(b, "%s\"%s\":%llu", k ? "," : "", skip_names[k],
			      (unsigned long long)c->skip[k]);
	sp_buf_printf(b,
		      "},\"shadow_errors\":%llu,\"shadow_timeouts\":%llu,"
		      "\"primary_ms\":{\"p50\":%.3f,\"p99\":%.3f},"
		      "\"shadow_ms\":{\"p50\":%.3f,\"p99\":%.3f}",
		      (unsigned long long)v[5], (unsigned long long)v[6], sp_hist_quantile(c->lp, 0.5),
		      sp_hist_quantile(c->lp, 0.99), sp_hist_quantile(c->ls, 0.5),
		      sp_hist_quantile(c->ls, 0.99));
}

static void add_directions_json(struct sp_buf *b, const struct dir_sum *d, size_t n)
{
	char since[SP_UTC_SIZE];
	sp_buf_adds(b, ",\"directions\":[");
	for (size_t i = 0; i < n; i++) {
		sp_utc_stamp(since, d[i].since_ms);
		sp_buf_adds(b, i ? ",{\"primary\":\"" : "{\"primary\":\"");
		sp_buf_add_json_str(b, d[i].primary, strlen(d[i].primary));
		sp_buf_adds(b, "\",\"shadow\":\"");
		sp_buf_add_json_str(b, d[i].shadow, strlen(d[i].shadow));
		sp_buf_printf(b, "\",\"since\":\"%s\",", since);
		add_counts_json(b, &d[i].c);
		sp_buf_addc(b, '}');
	}
	sp_buf_addc(b, ']');
}

static void write_summary(struct sp_buf *b, const struct sp_route *route,
			  struct sp_worker *const *ws, int n, const char *instance,
			  struct counts_sum *all, struct dir_sum *dirs)
{
	size_t ndirs = 0;
	char now[SP_UTC_SIZE], since[SP_UTC_SIZE];
	memset(all, 0, sizeof(*all));
	memset(dirs, 0, DIR_SUMS * sizeof(*dirs));
	sum_route(ws, n, route->name, all->v, all->skip, all->lp, all->ls, dirs, &ndirs);
	sp_utc_stamp(now, sp_unix_ms());
	sp_utc_stamp(since, route->counters_since_ms);
	sp_buf_reset(b);
	sp_buf_printf(b, "{\"time\":\"%s\",\"type\":\"summary\",\"route\":\"", now);
	sp_buf_add_json_text(b, route->name, strlen(route->name));
	sp_buf_adds(b, "\",\"instance\":\"");
	sp_buf_add_json_str(b, instance, strlen(instance));
	sp_buf_printf(b, "\",\"counters_since\":\"%s\",", since);
	add_counts_json(b, all);
	add_directions_json(b, dirs, ndirs);
	sp_buf_adds(b, "}\n");
}

void sp_shadow_write_summaries(const struct sp_config *cfg, const struct sp_config *next,
			       struct sp_worker *const *ws, int n,
			       struct sp_accesslog *log, const char *instance)
{
	if (!log || n == 0)
		return;
	struct counts_sum *all = malloc(sizeof(*all));
	struct dir_sum *dirs = malloc(DIR_SUMS * sizeof(*dirs));
	struct sp_buf b;
	sp_buf_init(&b);
	for (size_t r = 0; all && dirs && r < cfg->nroutes; r++) {
		/* a route that stays shadowed has its next summary to come; one
		 * that goes, or stays without its shadow, has no other */
		const struct sp_route *later =
			next ? sp_config_route(next, cfg->routes[r].name) : NULL;
		if (!cfg->routes[r].has_shadow || (later && later->has_shadow))
			continue;
		write_summary(&b, &cfg->routes[r], ws, n, instance, all, dirs);
		sp_accesslog_write_raw(log, b.data, b.len);
	}
	sp_buf_deinit(&b);
	free(all);
	free(dirs);
}
