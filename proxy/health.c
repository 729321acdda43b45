/* Backend health (see health.h). Entries are kept by URL for the process's
 * lifetime, published with release stores, and changed with atomics: workers
 * report outcomes, the main thread runs the active checks. */
#include "health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "conn.h"
#include "log.h"

_Static_assert(SP_SERVERS_MAX <= 64, "struct sp_turn and the pick's masks hold 64 servers");

/* A server (its entry) a backend of that name has listed in some
 * configuration: a backend's counters add up every server it has had, so
 * that a reload dropping one does not lower them (main thread only). */
struct member {
	struct member *next;
	struct sp_health *h;
	char backend[];
};

struct sp_health_table {
	struct sp_health *_Atomic head;
	struct member *members;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct sp_health_table *sp_health_table_new(void)
{
	return calloc(1, sizeof(struct sp_health_table));
}

void sp_health_table_free(struct sp_health_table **tp)
{
	struct sp_health_table *t = *tp;
	if (!t)
		return;
	*tp = NULL;
	struct sp_health *h = atomic_load(&t->head), *next;
	for (; h; h = next) {
		next = atomic_load(&h->next);
		sp_tls_resume_deinit(&h->resume);
		free(h);
	}
	for (struct member *m = t->members, *mn; m; m = mn) {
		mn = m->next;
		free(m);
	}
	free(t);
}

static struct sp_health *entry(struct sp_health_table *t, const char *url)
{
	struct sp_health *h;
	for (h = atomic_load_explicit(&t->head, memory_order_acquire); h;
	     h = atomic_load_explicit(&h->next, memory_order_acquire))
		if (strcmp(h->url, url) == 0)
			return h;
	if (!(h = calloc(1, sizeof(*h))))
		return NULL;
	sp_tls_resume_init(&h->resume);
	snprintf(h->url, sizeof(h->url), "%s", url);
	atomic_store_explicit(&h->next, atomic_load(&t->head), memory_order_relaxed);
	atomic_store_explicit(&t->head, h, memory_order_release);
	return h;
}

static int remember(struct sp_health_table *t, const char *backend, struct sp_health *h)
{
	for (const struct member *m = t->members; m; m = m->next)
		if (m->h == h && strcmp(m->backend, backend) == 0)
			return 0;
	size_t n = strlen(backend) + 1;
	struct member *m = malloc(sizeof(*m) + n);
	if (!m)
		return -1;
	m->h = h;
	memcpy(m->backend, backend, n);
	m->next = t->members;
	t->members = m;
	return 0;
}

uint64_t sp_health_backend_transitions(const struct sp_health_table *t, const char *backend)
{
	uint64_t n = 0;
	for (const struct member *m = t->members; m; m = m->next)
		if (strcmp(m->backend, backend) == 0)
			n += atomic_load_explicit(&m->h->transitions, memory_order_relaxed);
	return n;
}

int sp_health_attach(struct sp_health_table *t, struct sp_config *cfg)
{
	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct sp_backend *be = &cfg->backends[i];
		for (size_t k = 0; k < be->nservers; k++)
			if (!(be->servers[k].health = entry(t, be->servers[k].url)) ||
			    remember(t, be->name, be->servers[k].health) < 0)
				return -1;
	}
	return 0;
}

static int lists(const struct sp_config *c, const char *url)
{
	for (size_t i = 0; i < c->nbackends; i++)
		for (size_t k = 0; k < c->backends[i].nservers; k++)
			if (strcmp(c->backends[i].servers[k].url, url) == 0)
				return 1;
	return 0;
}

void sp_health_listed(const struct sp_config *old, const struct sp_config *cfg)
{
	int64_t now = now_ms();
	for (size_t i = 0; i < cfg->nbackends; i++)
		for (size_t k = 0; k < cfg->backends[i].nservers; k++) {
			const struct sp_server *sv = &cfg->backends[i].servers[k];
			if (sv->health && !lists(old, sv->url))
				atomic_store(&sv->health->back_at_ms, now);
		}
}

int sp_health_set_drained(struct sp_health_table *t, const char *url, int on)
{
	struct sp_health *h = entry(t, url);
	if (!h)
		return -1;
	if (atomic_exchange(&h->drained, on != 0) && !on)
		atomic_store(&h->back_at_ms, now_ms()); /* its slow start */
	return 0;
}

void sp_health_undo_drained(struct sp_health_table *t, const char *url, int was)
{
	struct sp_health *h = entry(t, url);
	if (h)
		atomic_store(&h->drained, was != 0);
}

int64_t sp_health_now_ms(void)
{
	return now_ms();
}

unsigned sp_health_weight_now(const struct sp_backend *be, size_t i, int64_t now)
{
	unsigned w = (unsigned)be->servers[i].weight * 100;
	const struct sp_health *h = be->servers[i].health;
	int64_t back = be->slow_start_ms && h ? atomic_load_explicit(&h->back_at_ms,
								    memory_order_relaxed)
					      : 0;
	if (!back || now - back >= be->slow_start_ms || now < back)
		return w;
	int64_t part = (int64_t)w * (now - back) / be->slow_start_ms;
	return part < 1 ? 1 : (unsigned)part;
}

void sp_health_each_drained(const struct sp_health_table *t, void (*fn)(const char *url, void *arg),
			    void *arg)
{
	for (struct sp_health *h = atomic_load_explicit(&t->head, memory_order_acquire); h;
	     h = atomic_load_explicit(&h->next, memory_order_acquire))
		if (atomic_load_explicit(&h->drained, memory_order_relaxed))
			fn(h->url, arg);
}

int sp_health_prune_drained(struct sp_health_table *t, const struct sp_config *cfg)
{
	int n = 0;
	for (struct sp_health *h = atomic_load_explicit(&t->head, memory_order_acquire); h;
	     h = atomic_load_explicit(&h->next, memory_order_acquire))
		if (atomic_load_explicit(&h->drained, memory_order_relaxed) && !sp_config_lists_url(cfg, h->url)) {
			atomic_store_explicit(&h->drained, 0, memory_order_relaxed);
			n++;
		}
	return n;
}

/* After a pause (*retry_at, 0: none), one caller is let through to find out;
 * the next one a health interval later. */
static int trial_due(_Atomic int64_t *retry_at, const struct sp_backend *be)
{
	int64_t at = atomic_load(retry_at);
	if (!at)
		return 0;
	int64_t now = now_ms();
	return now >= at &&
	       atomic_compare_exchange_strong(retry_at, &at, now + be->health_interval_ms);
}

int sp_health_usable(const struct sp_backend *be, const struct sp_server *sv)
{
	struct sp_health *h = sv->health;
	if (!h || !atomic_load_explicit(&h->down, memory_order_relaxed))
		return 1;
	if (atomic_load_explicit(&h->active, memory_order_relaxed))
		return 0; /* the active check says when it is back */
	return trial_due(&h->retry_at_ms, be); /* passive */
}

static void set_down(struct sp_health *h, const struct sp_backend *be, const struct sp_server *sv,
		     int down, const char *why)
{
	if (down)
		atomic_store(&h->retry_at_ms, now_ms() + be->health_interval_ms);
	if (atomic_exchange(&h->down, down) != down) {
		/* a backend back up starts its count of failed requests afresh,
		 * and its slow start */
		if (!down) {
			atomic_store(&h->consecutive_failures, 0);
			atomic_store(&h->back_at_ms, now_ms());
		}
		atomic_fetch_add(&h->transitions, 1);
		sp_log(down ? SP_LOG_WARN : SP_LOG_INFO, "backend %s (%s) is %s: %s", be->name,
		       sv->hostport, down ? "down" : "up again", why);
	}
}

void sp_health_report(const struct sp_backend *be, const struct sp_server *sv, int ok)
{
	struct sp_health *h = sv->health;
	if (!h)
		return;
	atomic_fetch_add_explicit(ok ? &h->ok : &h->failed, 1, memory_order_relaxed);
	if (ok) {
		atomic_store_explicit(&h->consecutive_failures, 0, memory_order_relaxed);
		if (!atomic_load_explicit(&h->active, memory_order_relaxed) &&
		    atomic_load_explicit(&h->down, memory_order_relaxed))
			set_down(h, be, sv, 0, "a request succeeded");
		return;
	}
	int n = atomic_fetch_add(&h->consecutive_failures, 1) + 1;
	if (n >= be->health_unhealthy && !atomic_load_explicit(&h->down, memory_order_relaxed))
		set_down(h, be, sv, 1, "consecutive failed requests");
}

struct sp_health_view sp_health_server_view(const struct sp_server *sv)
{
	struct sp_health_view v = {0};
	const struct sp_health *h = sv->health;
	if (h) {
		v.down = atomic_load_explicit(&h->down, memory_order_relaxed);
		v.shadows_paused = atomic_load_explicit(&h->shadow_retry_at_ms, memory_order_relaxed) != 0;
		v.transitions = atomic_load_explicit(&h->transitions, memory_order_relaxed);
		v.ok = atomic_load_explicit(&h->ok, memory_order_relaxed);
		v.failed = atomic_load_explicit(&h->failed, memory_order_relaxed);
		v.retried = atomic_load_explicit(&h->retried, memory_order_relaxed);
		v.retries_denied = atomic_load_explicit(&h->retries_denied, memory_order_relaxed);
		v.in_flight = atomic_load_explicit(&h->in_flight, memory_order_relaxed);
	}
	return v;
}

void sp_health_count_failed(const struct sp_server *sv)
{
	if (sv->health)
		atomic_fetch_add_explicit(&sv->health->failed, 1, memory_order_relaxed);
}

void sp_health_count_ok(const struct sp_server *sv)
{
	if (sv->health)
		atomic_fetch_add_explicit(&sv->health->ok, 1, memory_order_relaxed);
}

void sp_health_count_retry(const struct sp_server *sv)
{
	if (sv->health)
		atomic_fetch_add_explicit(&sv->health->retried, 1, memory_order_relaxed);
}

void sp_health_count_retry_denied(const struct sp_server *sv)
{
	if (sv->health)
		atomic_fetch_add_explicit(&sv->health->retries_denied, 1, memory_order_relaxed);
}

/* The budget's counts moved on to now's second. */
static void budget_roll(struct sp_retry_budget *b, int64_t now_ms)
{
	int64_t sec = now_ms / 1000;
	if (sec == b->second)
		return;
	int one = sec == b->second + 1;
	b->answers[1] = one ? b->answers[0] : 0;
	b->retries[1] = one ? b->retries[0] : 0;
	b->answers[0] = b->retries[0] = 0;
	b->second = sec;
}

void sp_retry_budget_answer(struct sp_retry_budget *b, int64_t now_ms)
{
	budget_roll(b, now_ms);
	b->answers[0]++;
}

int sp_retry_budget_fits(struct sp_retry_budget *b, int64_t now_ms, int percent, int min_per_s)
{
	budget_roll(b, now_ms);
	uint64_t retries = (uint64_t)b->retries[0] + b->retries[1];
	uint64_t answers = (uint64_t)b->answers[0] + b->answers[1];
	return b->retries[0] < (unsigned)min_per_s || retries * 100 < answers * (uint64_t)percent;
}

void sp_retry_budget_spend(struct sp_retry_budget *b)
{
	b->retries[0]++;
}

struct sp_health_view sp_health_view(const struct sp_backend *be)
{
	struct sp_health_view v = {.down = be->nservers > 0, .shadows_paused = be->nservers > 0};
	for (size_t k = 0; k < be->nservers; k++) {
		struct sp_health_view s = sp_health_server_view(&be->servers[k]);
		v.down &= s.down;
		v.shadows_paused &= s.shadows_paused;
		v.transitions += s.transitions;
		v.ok += s.ok;
		v.failed += s.failed;
		v.retried += s.retried;
		v.retries_denied += s.retries_denied;
		v.in_flight += s.in_flight;
	}
	return v;
}

/* Shadows to h are paused and their next trial is not due yet. */
static int shadows_paused_now(const struct sp_health *h)
{
	int64_t at = h ? atomic_load_explicit(&h->shadow_retry_at_ms, memory_order_relaxed) : 0;
	return at && now_ms() < at;
}

/* Whether sv may take this pick: 1 yes, 0 no, 2 yes and it took a trial
 * (of a down server, or of shadows paused to it), which this pick must use. */
static int may_take(const struct sp_backend *be, const struct sp_server *sv, int for_shadow,
		    int *paused)
{
	const struct sp_health *h = sv->health;
	/* a shadow skips a server whose shadows are paused before it looks at
	 * its health: that look may take the trial request a down server is
	 * waiting for */
	if (for_shadow && shadows_paused_now(h)) {
		if (paused && !atomic_load_explicit(&h->down, memory_order_relaxed))
			*paused = 1; /* down says more: a skip for that */
		return 0;
	}
	int down = h && atomic_load_explicit(&h->down, memory_order_relaxed);
	if (down && !sp_health_usable(be, sv))
		return 0;
	int shadow_trial = for_shadow && h &&
			   atomic_load_explicit(&h->shadow_retry_at_ms, memory_order_relaxed);
	if (shadow_trial && !sp_health_shadow_usable(be, sv)) {
		if (paused)
			*paused = 1;
		return 0;
	}
	return down || shadow_trial ? 2 : 1;
}

/* Of the servers in can, those with the fewest connections in use for
 * their weight (busy / weight, compared as products; w, the weights now). */
static uint64_t least_busy(const struct sp_backend *be, const struct sp_turn *t, uint64_t can,
			   const unsigned *w)
{
	uint64_t best = 0;
	int b = -1;
	for (size_t i = 0; i < be->nservers; i++) {
		if (!(can >> i & 1))
			continue;
		/* busy[i] / weight[i] against busy[b] / weight[b] */
		uint64_t mine = b < 0 ? 0 : (uint64_t)t->busy[i] * w[b];
		uint64_t theirs = b < 0 ? 0 : (uint64_t)t->busy[b] * w[i];
		if (b < 0 || mine < theirs) {
			b = (int)i;
			best = (uint64_t)1 << i;
		} else if (mine == theirs) {
			best |= (uint64_t)1 << i;
		}
	}
	return best;
}

/* By weight (smooth weighted round-robin) over the servers in can. */
static int pick_by_weight(const struct sp_backend *be, struct sp_turn *t, uint64_t can)
{
	unsigned w[64]; /* SP_SERVERS_MAX: each server's weight now */
	int64_t now = be->slow_start_ms ? now_ms() : 0;
	for (size_t i = 0; i < be->nservers; i++)
		w[i] = !(can >> i & 1)	   ? 0
		       : be->slow_start_ms ? sp_health_weight_now(be, i, now)
					   : (unsigned)be->servers[i].weight;
	if (be->least_conn)
		can = least_busy(be, t, can, w);
	int best = -1, total = 0;
	for (size_t i = 0; i < be->nservers; i++) {
		if (!(can >> i & 1))
			continue;
		t->cw[i] += (int)w[i];
		total += (int)w[i];
		if (best < 0 || t->cw[i] > t->cw[best])
			best = (int)i;
	}
	if (best >= 0)
		t->cw[best] -= total;
	return best;
}

int sp_health_drained(const struct sp_server *sv)
{
	const struct sp_health *h = sv->health;
	return h && atomic_load_explicit(&h->drained, memory_order_relaxed);
}

/* The worker has max_conns connections in use to server i, or the server is
 * drained: it takes no more. A shadow leaves a quarter of max_conns (one at
 * least) to requests: mirrors to a slow server would otherwise fill its
 * slots, and clients of the routes it serves would get 503s shadowing off
 * would not have given them. */
static int full(const struct sp_backend *be, const struct sp_turn *t, size_t i, int for_shadow)
{
	if (sp_health_drained(&be->servers[i]))
		return 1;
	unsigned max = (unsigned)be->max_conns;
	if (max && for_shadow)
		max -= max / 4 ? max / 4 : 1; /* max_conns = 1: no shadow ever */
	return be->max_conns && t->busy[i] >= max;
}

int sp_health_has_room(const struct sp_backend *be, const struct sp_turn *t, int server,
		       int for_shadow)
{
	return !full(be, t, (size_t)server, for_shadow);
}

/* By weight over the servers of one kind (backup or not). */
static int pick_weighted(const struct sp_backend *be, struct sp_turn *t, int backup, int for_shadow,
			 int *paused)
{
	uint64_t can = 0; /* SP_SERVERS_MAX bits */
	for (size_t i = 0; i < be->nservers; i++) {
		if (be->servers[i].backup != backup || full(be, t, i, for_shadow))
			continue;
		int may = may_take(be, &be->servers[i], for_shadow, paused);
		if (may == 2)
			return (int)i; /* a trial, before the turns move */
		can |= (uint64_t)(may != 0) << i;
	}
	return pick_by_weight(be, t, can);
}

int sp_health_pick(const struct sp_backend *be, struct sp_turn *t, int for_shadow, int *paused)
{
	size_t n = be->nservers;
	if (paused)
		*paused = 0;
	if (be->weighted || be->least_conn) {
		/* a primary skipped for a shadow pause is up: no backup then */
		int skipped = 0, i = pick_weighted(be, t, 0, for_shadow, &skipped);
		if (i < 0 && !skipped)
			return pick_weighted(be, t, 1, for_shadow, paused);
		if (paused)
			*paused = skipped;
		return i;
	}
	size_t start = t->next < n ? t->next : 0; /* next is at most n */
	for (size_t k = 0; k < n; k++) {
		size_t i = start + k < n ? start + k : start + k - n;
		if (full(be, t, i, for_shadow) ||
		    !may_take(be, &be->servers[i], for_shadow, paused))
			continue;
		t->next = (unsigned)(i + 1);
		return (int)i;
	}
	return -1;
}

/* Whether server i of be is marked down. */
static int is_down(const struct sp_backend *be, size_t i)
{
	const struct sp_health *h = be->servers[i].health;
	return h && atomic_load_explicit(&h->down, memory_order_relaxed);
}

/* Whether every server of be is marked down (the health may be wrong then:
 * a down server is tried all the same). */
static int all_down(const struct sp_backend *be)
{
	for (size_t i = 0; i < be->nservers; i++)
		if (!is_down(be, i))
			return 0;
	return 1;
}

int sp_health_pick_retry(const struct sp_backend *be, struct sp_turn *t, uint64_t tried,
			 int from)
{
	size_t n = be->nservers;
	for (int backup = 0; backup < 2; backup++) {
		uint64_t left = 0, up = 0;
		for (size_t i = 0; i < n; i++) {
			if (be->servers[i].backup != backup || (tried >> i & 1) ||
			    full(be, t, i, 0))
				continue;
			left |= (uint64_t)1 << i;
			up |= (uint64_t)!is_down(be, i) << i;
		}
		if (up && (be->weighted || be->least_conn))
			return pick_by_weight(be, t, up);
		/* in list order after `from`: the first up, else a down one
		 * whose trial is due (which the look takes) */
		for (size_t k = 1; k <= n; k++) {
			size_t i = ((size_t)from + k) % n;
			if (up ? (up >> i & 1)
			       : (left >> i & 1) && sp_health_usable(be, &be->servers[i]))
				return (int)i;
		}
	}
	/* every server down: as sp_health_pick_down sends requests to them all
	 * the same, a failed one goes on to the next of them not tried, in
	 * list order (with active checks a down server's trial never comes) */
	for (size_t k = 1; all_down(be) && k <= n; k++) {
		size_t i = ((size_t)from + k) % n;
		if (!be->servers[i].backup && !(tried >> i & 1) && !full(be, t, i, 0))
			return (int)i;
	}
	return -1;
}

int sp_health_pick_down(const struct sp_backend *be, struct sp_turn *t)
{
	/* a server up but at max_conns (or drained) says the backend is busy,
	 * not gone: a 503, not a server known to be down */
	if (!all_down(be))
		return -1;
	if (be->weighted || be->least_conn) {
		uint64_t primaries = 0;
		for (size_t i = 0; i < be->nservers; i++)
			primaries |= (uint64_t)(!be->servers[i].backup && !full(be, t, i, 0)) << i;
		return pick_by_weight(be, t, primaries);
	}
	for (size_t k = 0; k < be->nservers; k++) {
		if (t->next >= be->nservers)
			t->next = 0;
		size_t i = t->next++;
		if (!full(be, t, i, 0))
			return (int)i;
	}
	return -1; /* every one at max_conns */
}

int sp_health_shadow_usable(const struct sp_backend *be, const struct sp_server *sv)
{
	struct sp_health *h = sv->health;
	if (!h || !atomic_load_explicit(&h->shadow_retry_at_ms, memory_order_relaxed))
		return 1;
	return trial_due(&h->shadow_retry_at_ms, be);
}

void sp_health_shadow_report(const struct sp_backend *be, const struct sp_server *sv, int answered)
{
	struct sp_health *h = sv->health;
	if (!h)
		return;
	if (answered) {
		atomic_store_explicit(&h->shadow_timeouts, 0, memory_order_relaxed);
		if (atomic_load_explicit(&h->shadow_retry_at_ms, memory_order_relaxed) &&
		    atomic_exchange(&h->shadow_retry_at_ms, 0))
			sp_log(SP_LOG_INFO, "backend %s (%s) answers shadows again: shadows resume",
			       be->name, sv->hostport);
		return;
	}
	int n = atomic_fetch_add(&h->shadow_timeouts, 1) + 1;
	if (n < be->health_unhealthy)
		return;
	/* the pause runs from the last timeout: shadows still in flight end first */
	if (!atomic_exchange(&h->shadow_retry_at_ms, now_ms() + be->health_interval_ms))
		sp_log(SP_LOG_WARN,
		       "backend %s (%s) does not answer shadows (%d timed out in a row): shadows to it "
		       "paused, one trial every %d ms",
		       be->name, sv->hostport, n, be->health_interval_ms);
}

/* ---- active checks ---- */

struct check {
	const struct sp_backend *be; /* in the checker's generation */
	const struct sp_server *sv;  /* the server checked, one of be's */
	struct event *timer;
	struct sp_conn *conn;
	int successes, failures;
	int skipping; /* checks skipped for want of local resources (logged once) */
};

struct sp_health_checker {
	struct event_base *base;
	struct sp_config *cfg; /* the generation the checks' backends belong to */
	struct check **checks;
	size_t n;
};

static void check_done(struct check *k, int ok, const char *why)
{
	struct sp_health *h = k->sv->health;
	sp_conn_free(&k->conn);
	if (ok) {
		/* only passes while it is down count towards bringing it back
		 * (not those from before passive failures took it down) */
		k->failures = 0;
		if (!atomic_load(&h->down))
			k->successes = 0;
		else if (++k->successes >= k->be->health_healthy)
			set_down(h, k->be, k->sv, 0, "health check passed");
	} else {
		k->successes = 0;
		if (++k->failures >= k->be->health_unhealthy && !atomic_load(&h->down))
			set_down(h, k->be, k->sv, 1, why);
	}
}

static void on_check_read(struct sp_conn *c, void *arg)
{
	struct check *k = arg;
	char line[64] = "";
	int status = 0;
	struct evbuffer_ptr eol = evbuffer_search(c->in, "\r\n", 2, NULL);
	if (eol.pos < 0) {
		if (evbuffer_get_length(c->in) > 1024)
			check_done(k, 0, "health check: bad answer");
		return;
	}
	evbuffer_copyout(c->in, line, eol.pos < 63 ? (size_t)eol.pos : 63);
	if (sscanf(line, "HTTP/1.%*d %d", &status) != 1)
		check_done(k, 0, "health check: bad answer");
	else
		check_done(k, status >= 200 && status < 400, "health check: bad status");
}

static void on_check_event(struct sp_conn *c, short what, void *arg)
{
	struct check *k = arg;
	char why[300] = "health check: TLS: ";
	if (what & SP_CONN_CONNECTED)
		return;
	if (c->tls_handshake_failed) {
		size_t n = strlen(why);
		sp_conn_tls_why(c, why + n, sizeof(why) - n);
		check_done(k, 0, why);
		return;
	}
	check_done(k, 0, what & SP_CONN_TIMEOUT ? "health check timed out" : "health check failed");
}

static void on_check_timer(evutil_socket_t fd, short what, void *arg)
{
	struct check *k = arg;
	const struct sp_backend *be = k->be;
	const struct sp_server *sv = k->sv;
	(void)fd;
	(void)what;
	if (k->conn) /* the previous check has until its own timeout_ms */
		return;
	k->conn = sp_conn_connect(event_get_base(k->timer), (const struct sockaddr *)&sv->addr,
				  sv->addrlen);
	if (!k->conn && sp_err_local(errno)) {
		/* our shortage (descriptors, memory, ports) says nothing about
		 * the backend: no check this time, neither passed nor failed */
		if (!k->skipping)
			sp_log(SP_LOG_WARN,
			       "backend %s (%s): health check skipped: %s (not counted against it "
			       "until checks run again)",
			       be->name, sv->hostport, strerror(errno));
		k->skipping = 1;
		return;
	}
	k->skipping = 0;
	if (!k->conn || (be->tls_ctx &&
			 sp_conn_tls_connect(k->conn, be->tls_ctx, sv->host, sv->host_is_ip,
					     sv->health ? &sv->health->resume : NULL) < 0)) {
		check_done(k, 0, "health check: cannot connect");
		return;
	}
	sp_conn_setcb(k->conn, on_check_read, NULL, on_check_event, k);
	sp_conn_timeouts(k->conn, be->health_timeout_ms, be->health_timeout_ms);
	/* and the whole check: an answer trickled a byte at a time fails too */
	sp_conn_deadline(k->conn, be->health_timeout_ms, 0);
	sp_conn_read(k->conn, 1);
	evbuffer_add_printf(k->conn->out, "GET %s HTTP/1.1\r\nHost: %s\r\n", be->health_path,
			    be->host_header ? be->host_header : sp_server_authority(sv));
	/* what every request to it carries (an API key the backend asks for) */
	int agent = 0;
	struct sp_buf v;
	sp_buf_init(&v);
	for (size_t i = 0; i < be->req_headers.nset; i++) {
		agent |= strcasecmp(be->req_headers.set_name[i], "User-Agent") == 0;
		/* no client: its variables are empty */
		sp_buf_reset(&v);
		if (sp_hdr_expand(be->req_headers.set_value[i], NULL, &v) == 0 && v.len)
			evbuffer_add_printf(k->conn->out, "%s: %.*s\r\n",
					    be->req_headers.set_name[i], (int)v.len,
					    v.data ? v.data : "");
	}
	sp_buf_deinit(&v);
	if (!agent)
		evbuffer_add_printf(k->conn->out, "User-Agent: strangler-health-check\r\n");
	evbuffer_add_printf(k->conn->out, "Connection: close\r\n\r\n");
}

static void check_free(struct check **kp)
{
	struct check *k = *kp;
	if (!k)
		return;
	*kp = NULL;
	if (k->timer)
		event_free(k->timer);
	sp_conn_free(&k->conn);
	free(k);
}

/* A check of be's server sv every health_interval_ms, the first one at once. */
static struct check *check_new(struct event_base *base, const struct sp_backend *be,
			       const struct sp_server *sv)
{
	struct check *k = calloc(1, sizeof(*k));
	struct timeval tv = sp_tv_ms(be->health_interval_ms);
	if (!k)
		return NULL;
	k->be = be;
	k->sv = sv;
	k->timer = event_new(base, -1, EV_PERSIST, on_check_timer, k);
	if (!k->timer || event_add(k->timer, &tv) < 0) {
		check_free(&k);
		return NULL;
	}
	event_active(k->timer, EV_TIMEOUT, 0);
	return k;
}

/* Whether a check of server as of a can go on as the check of bs of b: the
 * same URL (so the same health entry) and the same health settings. */
static int same_check(const struct sp_backend *a, const struct sp_server *as,
		      const struct sp_backend *b, const struct sp_server *bs)
{
	return strcmp(as->url, bs->url) == 0 && strcmp(a->health_path, b->health_path) == 0 &&
	       a->health_interval_ms == b->health_interval_ms &&
	       a->health_timeout_ms == b->health_timeout_ms &&
	       a->health_healthy == b->health_healthy && a->health_unhealthy == b->health_unhealthy;
}

/* Takes a running check that can go on as the one of be's server sv out of
 * hc (NULL: none). */
static struct check *take_check(struct sp_health_checker *hc, const struct sp_backend *be,
				const struct sp_server *sv)
{
	for (size_t j = 0; j < hc->n; j++) {
		struct check *k = hc->checks[j];
		if (k && same_check(k->be, k->sv, be, sv)) {
			hc->checks[j] = NULL;
			return k;
		}
	}
	return NULL;
}

/* Publishes which of cfg's backends a running check decides for. One whose
 * check could not start is left to passive trials, and one whose checks were
 * removed while it is down gets its trial request now. */
static void publish_active(const struct sp_health_checker *hc, const struct sp_config *cfg)
{
	for (size_t i = 0; i < cfg->nbackends; i++)
		for (size_t s = 0; s < cfg->backends[i].nservers; s++) {
			struct sp_health *h = cfg->backends[i].servers[s].health;
			int active = 0;
			for (size_t j = 0; j < hc->n && !active; j++)
				active = hc->checks[j]->sv->health == h;
			if (h && atomic_exchange(&h->active, active) && !active &&
			    atomic_load(&h->down))
				atomic_store(&h->retry_at_ms, now_ms());
		}
}

struct sp_health_checker *sp_health_checker_new(struct event_base *base)
{
	struct sp_health_checker *hc = calloc(1, sizeof(*hc));
	if (hc)
		hc->base = base;
	return hc;
}

int sp_health_checker_update(struct sp_health_checker *hc, struct sp_config *cfg)
{
	size_t total = 0, n = 0;
	for (size_t i = 0; i < cfg->nbackends; i++)
		total += cfg->backends[i].nservers;
	struct check **next = calloc(total + 1, sizeof(*next));
	if (!next)
		return -1;
	for (size_t i = 0; i < cfg->nbackends; i++) {
		const struct sp_backend *be = &cfg->backends[i];
		for (size_t s = 0; be->has_health && s < be->nservers; s++) {
			const struct sp_server *sv = &be->servers[s];
			/* a URL two backends list is one server, with one state:
			 * checked once, by the first of them in the file (two
			 * checks doubled its traffic, each setting down apart) */
			int checked = 0;
			for (size_t j = 0; j < n && !checked; j++)
				checked = next[j]->sv->health && next[j]->sv->health == sv->health;
			if (checked)
				continue;
			struct check *k = take_check(hc, be, sv);
			if (!k && !(k = check_new(hc->base, be, sv))) {
				sp_log(SP_LOG_ERROR, "backend %s (%s): cannot start its health check",
				       be->name, sv->hostport);
				continue;
			}
			k->be = be;
			k->sv = sv;
			next[n++] = k;
		}
	}
	for (size_t j = 0; j < hc->n; j++)
		check_free(&hc->checks[j]); /* the checks cfg no longer has */
	free(hc->checks);
	hc->checks = next;
	hc->n = n;
	struct sp_config *old = hc->cfg;
	hc->cfg = sp_config_ref(cfg);
	sp_config_unref(&old);
	publish_active(hc, cfg);
	return 0;
}

void sp_health_checker_free(struct sp_health_checker **hp)
{
	struct sp_health_checker *hc = *hp;
	if (!hc)
		return;
	*hp = NULL;
	for (size_t i = 0; i < hc->n; i++)
		check_free(&hc->checks[i]);
	free(hc->checks);
	sp_config_unref(&hc->cfg);
	free(hc);
}
