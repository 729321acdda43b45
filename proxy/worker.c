/* Worker threads: each owns an event loop, its listening sockets (bound with
 * SO_REUSEPORT so the kernel spreads connections), its backend pools and its
 * sessions. Nothing here is shared between workers but the config, which is
 * immutable. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "health.h"
#include "log.h"
#include "shadow.h"

/* A listening socket on l's address; with probe only bound, not listening
 * (enough to learn whether the address can be had), and with SO_REUSEPORT
 * only when reuseport: a reload's new address held by another process (one
 * that shares its port that way too) is refused rather than shared with it.
 * The workers' listeners always share. */
static int open_listener(const struct sp_listen *l, int probe, int reuseport)
{
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0)
		return -1;
	/* TCP_NODELAY here rather than on each accepted connection: Linux copies
	 * it to every connection the listener accepts, which saves a system
	 * call per connection. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		goto fail;
	if (l->addr.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0 ||
	    (!probe && listen(fd, 4096) < 0))
		goto fail;
	return fd;
fail:;
	int e = errno;
	close(fd);
	errno = e;
	return -1;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		      int len, void *arg)
{
	struct sp_worker *w = arg;
	SSL_CTX *tls = NULL;
	int proxy_protocol = 0;
	for (size_t i = 0; i < w->nlisteners; i++) {
		if (w->listeners[i] != lev)
			continue;
		if (w->cfg->listen[i].tls)
			tls = sp_tls_server_ctx(w->cfg->listen[i].tls);
		proxy_protocol = w->cfg->listen[i].proxy_protocol;
	}
	sp_session_accept(w, fd, sa, (socklen_t)len, tls, proxy_protocol);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct sp_worker *w = arg;
	(void)lev;
	if (sp_accept_failed(&w->accept_pause))
		for (size_t i = 0; i < w->nlisteners; i++)
			if (w->listeners[i])
				evconnlistener_disable(w->listeners[i]);
}

/* The pause is over; a max_connections pause (accept_paused) outlasts it. */
static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	(void)fd;
	(void)what;
	for (size_t i = 0; !w->accept_paused && i < w->nlisteners; i++)
		if (w->listeners[i])
			evconnlistener_enable(w->listeners[i]);
}

static void close_listeners(struct sp_worker *w)
{
	for (size_t i = 0; i < w->nlisteners; i++)
		if (w->listeners[i])
			evconnlistener_free(w->listeners[i]);
	w->nlisteners = 0;
}

/* Connections the kernel completed on a listener but the worker has not
 * accepted would be reset as it closes (unless net.ipv4.tcp_migrate_req
 * moves them to another socket of the port, an upgrade's new instance):
 * they are accepted and served, as any other, before it goes. */
static void accept_queued(struct sp_worker *w)
{
	for (size_t i = 0; i < w->nlisteners; i++) {
		evutil_socket_t lfd = w->listeners[i] ? evconnlistener_get_fd(w->listeners[i]) : -1;
		for (int fd; lfd >= 0;) {
			struct sockaddr_storage ss;
			socklen_t len = sizeof(ss);
			if ((fd = accept4(lfd, (struct sockaddr *)&ss, &len,
					  SOCK_NONBLOCK | SOCK_CLOEXEC)) < 0)
				break; /* EAGAIN, or a shortage: those few are lost */
			on_accept(w->listeners[i], fd, (struct sockaddr *)&ss, (int)len, w);
		}
	}
}

/* serve_queued: the stop of a worker whose listeners belong to w->cfg. */
static void stop_accepting(struct sp_worker *w, int serve_queued)
{
	sp_accept_pause_cancel(&w->accept_pause);
	if (serve_queued)
		accept_queued(w);
	close_listeners(w);
}

/* Binds one listen address for this worker; NULL (logged) on failure. */
static struct evconnlistener *listen_on(struct sp_worker *w, const struct sp_config *cfg, size_t i)
{
	int fd = open_listener(&cfg->listen[i], 0, 1);
	if (fd < 0) {
		sp_log(SP_LOG_ERROR, "%s:%d: listen.[%zu].address: cannot listen on %s: %s",
		       cfg->listen[i].file, cfg->listen[i].line, i, cfg->listen[i].address, strerror(errno));
		return NULL;
	}
	struct evconnlistener *l =
		evconnlistener_new(w->base, on_accept, w, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (!l) {
		close(fd);
		return NULL;
	}
	evconnlistener_set_error_cb(l, on_accept_error);
	return l;
}

static int same_addr(const struct sp_listen *a, const struct sp_listen *b)
{
	return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

/* The same family and port: one of them may be the wildcard address. */
static int same_port(const struct sp_listen *a, const struct sp_listen *b)
{
	if (a->addr.ss_family != b->addr.ss_family)
		return 0;
	if (a->addr.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&a->addr)->sin_port ==
		       ((const struct sockaddr_in *)&b->addr)->sin_port;
	if (a->addr.ss_family == AF_INET6)
		return ((const struct sockaddr_in6 *)&a->addr)->sin6_port ==
		       ((const struct sockaddr_in6 *)&b->addr)->sin6_port;
	return 0;
}

int sp_worker_check_listen(const struct sp_config *old, const struct sp_config *cfg,
			   struct sp_diag *diag)
{
	int rc = 0;
	for (size_t i = 0; i < cfg->nlisten; i++) {
		int kept = 0, ours = 0;
		for (size_t j = 0; old && j < old->nlisten && !kept; j++) {
			kept = same_addr(&old->listen[j], &cfg->listen[i]);
			ours |= same_port(&old->listen[j], &cfg->listen[i]);
		}
		if (kept)
			continue;
		/* a port this process holds itself (127.0.0.1:80 becoming
		 * *:80): its own listener closes only once the new one is open,
		 * so they must share for a moment */
		int fd = open_listener(&cfg->listen[i], 1, ours);
		if (fd < 0) {
			sp_diag_add(diag, 1, cfg->listen[i].file, cfg->listen[i].line,
				    "listen.[%zu].address: cannot listen on %s: %s", i,
				    cfg->listen[i].address, strerror(errno));
			rc = -1;
		} else {
			close(fd);
		}
	}
	return rc;
}

/* Keeps the listeners whose address stays, opens the new ones and closes the
 * ones that vanished. Returns -1 when a new address cannot be bound. */
static int reconcile_listeners(struct sp_worker *w, const struct sp_config *old,
			       const struct sp_config *cfg)
{
	struct evconnlistener **next = calloc(cfg->nlisten + 1, sizeof(*next));
	int rc = 0;
	if (!next)
		return -1;
	for (size_t i = 0; i < cfg->nlisten; i++) {
		for (size_t j = 0; old && j < w->nlisteners && !next[i]; j++)
			if (w->listeners[j] && same_addr(&old->listen[j], &cfg->listen[i])) {
				next[i] = w->listeners[j];
				w->listeners[j] = NULL;
			}
		if (!next[i] && !(next[i] = listen_on(w, cfg, i)))
			rc = -1;
	}
	/* the vanished ones; a pause for want of descriptors (on_accept_error)
	 * stays pending and ends for the kept listeners too */
	close_listeners(w);
	free(w->listeners);
	w->listeners = next;
	w->nlisteners = cfg->nlisten;
	return rc;
}

/* Whether connections made for backend a may carry backend b's requests:
 * the same servers (URLs and the addresses they resolved to, in the same
 * order: a connection keeps its server's index) and the same TLS identity
 * (settings and file contents). A reload that changes what is trusted or
 * presented (tls_verify, ca_file, a client certificate) must never reuse a
 * connection made under the old. */
static int same_peer(const struct sp_backend *a, const struct sp_backend *b)
{
	if (a->nservers != b->nservers || memcmp(a->tls_id, b->tls_id, sizeof(a->tls_id)) != 0)
		return 0;
	for (size_t i = 0; i < a->nservers; i++) {
		const struct sp_server *x = &a->servers[i], *y = &b->servers[i];
		/* a reload resolves host names again: the same URL may be
		 * another address now, where the connections must go */
		if (strcmp(x->url, y->url) != 0 || x->addrlen != y->addrlen ||
		    memcmp(&x->addr, &y->addr, x->addrlen) != 0)
			return 0;
	}
	return 1;
}

/* The backend of c whose connections may carry be's requests (same_peer),
 * of be's name when named, not among the n of taken; -1: none. */
static int peer_in(const struct sp_config *c, const struct sp_backend *be, int named,
		   const int *taken, size_t n)
{
	for (size_t j = 0; j < c->nbackends; j++) {
		int used = 0;
		for (size_t k = 0; k < n && !used; k++)
			used = taken[k] == (int)j;
		if (!used && same_peer(&c->backends[j], be) &&
		    (!named || strcmp(c->backends[j].name, be->name) == 0))
			return (int)j;
	}
	return -1;
}

/* A pool per backend of cfg, reusing the pools (and idle connections) of
 * backends whose URL and TLS settings did not change; the others are retired.
 * All-or-nothing: on failure the old table is untouched. */
static int reconcile_pools(struct sp_worker *w, const struct sp_config *old,
			   const struct sp_config *cfg)
{
	struct sp_pool **next = calloc(cfg->nbackends + 1, sizeof(*next));
	int *from = calloc(cfg->nbackends + 1, sizeof(*from));
	if (!next || !from)
		goto fail;
	/* a backend of the same name first (its turn and retry budget go on),
	 * then any other with the same peers */
	for (size_t i = 0; i < cfg->nbackends; i++)
		from[i] = old ? peer_in(old, &cfg->backends[i], 1, from, i) : -1;
	for (size_t i = 0; i < cfg->nbackends; i++) {
		if (from[i] < 0 && old)
			from[i] = peer_in(old, &cfg->backends[i], 0, from, cfg->nbackends);
		if (from[i] < 0 && !(next[i] = sp_pool_new(w->base, &cfg->backends[i])))
			goto fail;
	}
	for (size_t i = 0; i < cfg->nbackends; i++) {
		if (from[i] < 0)
			continue;
		next[i] = w->pools[from[i]];
		w->pools[from[i]] = NULL;
		next[i]->be = &cfg->backends[i];
		sp_pool_settle(next[i]); /* its idle connections, by max_idle and idle_timeout_ms as now */
		sp_pool_kick(next[i]);   /* its waiters, by its max_conns as now */
	}
	for (size_t j = 0; old && j < old->nbackends; j++)
		sp_pool_retire(&w->pools[j]);
	free(w->pools);
	free(from);
	w->pools = next;
	return 0;
fail:
	for (size_t i = 0; next && i < cfg->nbackends; i++)
		if (from && from[i] < 0)
			sp_pool_retire(&next[i]);
	free(next);
	free(from);
	return -1;
}

/* Route counters are kept by route name, so a reload keeps them. Nodes are
 * published with a release store and read by other threads (the metrics, the
 * guards, the diff summaries) under the read lock; a node whose route left
 * the configuration is unlinked by the worker, and freed once it takes the
 * lock for writing, when no reader can still be looking at it. */
struct sp_route_stats *sp_worker_find_stats(struct sp_worker *w, const char *route)
{
	struct sp_route_stats *n;
	for (n = atomic_load_explicit(&w->stats_head, memory_order_acquire); n;
	     n = atomic_load_explicit(&n->next, memory_order_acquire))
		if (strcmp(n->name, route) == 0)
			return n;
	return NULL;
}

void sp_worker_stats_read_lock(struct sp_worker *w)
{
	pthread_rwlock_rdlock(&w->stats_lock);
}

void sp_worker_stats_read_unlock(struct sp_worker *w)
{
	pthread_rwlock_unlock(&w->stats_lock);
}

static struct sp_route_stats *stats_node(struct sp_worker *w, const char *name,
					 long long since_ms)
{
	struct sp_route_stats *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	snprintf(n->name, sizeof(n->name), "%s", name);
	n->since_ms = since_ms;
	atomic_store_explicit(&n->next, atomic_load_explicit(&w->stats_head, memory_order_relaxed),
			      memory_order_relaxed);
	atomic_store_explicit(&w->stats_head, n, memory_order_release);
	return n;
}

/* The counters of a route of the configuration being applied: the running
 * route's when it stays (same name, same counters_since_ms), else new ones. */
static struct sp_route_stats *route_stats_for(struct sp_worker *w, const struct sp_route *r)
{
	struct sp_route_stats *n;
	for (n = atomic_load_explicit(&w->stats_head, memory_order_relaxed); n;
	     n = atomic_load_explicit(&n->next, memory_order_relaxed))
		if (n->since_ms == r->counters_since_ms && strcmp(n->name, r->name) == 0)
			return n;
	return stats_node(w, r->name, r->counters_since_ms);
}

static void stats_node_free(struct sp_route_stats *n)
{
	int k = atomic_load_explicit(&n->nsides, memory_order_relaxed);
	for (int i = SP_MAX_SIDES; i < k; i++)
		free(atomic_load_explicit(&n->more[i - SP_MAX_SIDES], memory_order_relaxed));
	free(n);
}

/* Frees the retired nodes unless a reader is inside (then a later call
 * does). */
static void free_retired(struct sp_worker *w)
{
	if (!w->stats_retired || pthread_rwlock_trywrlock(&w->stats_lock) != 0)
		return;
	struct sp_route_stats *n = w->stats_retired, *next;
	w->stats_retired = NULL;
	pthread_rwlock_unlock(&w->stats_lock);
	for (; n; n = next) {
		next = n->retired_next;
		stats_node_free(n);
	}
}

static void retire(struct sp_worker *w, struct sp_route_stats *n)
{
	n->retired_next = w->stats_retired;
	w->stats_retired = n;
}

/* Takes the nodes of routes no longer configured out of the list; readers
 * walking it may still be on one, so each keeps its next pointer. Those a
 * mirror holds are retired when it lets go, the others now. */
static void sweep_stats(struct sp_worker *w)
{
	struct sp_route_stats *_Atomic *link = &w->stats_head, *n;
	while ((n = atomic_load_explicit(link, memory_order_relaxed)) != NULL) {
		if (n->live) {
			link = &n->next;
			continue;
		}
		atomic_store_explicit(link, atomic_load_explicit(&n->next, memory_order_relaxed),
				      memory_order_release);
		if (!n->holds)
			retire(w, n);
	}
	free_retired(w);
}

struct sp_route_stats *sp_worker_hold_stats(struct sp_worker *w, size_t i)
{
	struct sp_route_stats *n = w->route_stats[i];
	n->holds++;
	return n;
}

void sp_worker_release_stats(struct sp_worker *w, struct sp_route_stats *n)
{
	if (--n->holds || n->live)
		return;
	retire(w, n); /* out of the list since its route left */
	free_retired(w);
}

struct sp_shadow_stats *sp_worker_route_stats(struct sp_worker *w, const char *route)
{
	struct sp_route_stats *n = sp_worker_find_stats(w, route);
	return n ? &n->shadow : NULL;
}

static struct sp_side_stats *side_of(struct sp_route_stats *n, const char *backend)
{
	int k = atomic_load_explicit(&n->nsides, memory_order_relaxed);
	for (int i = 0; i < k; i++) {
		struct sp_side_stats *s = sp_route_side(n, i);
		if (strcmp(s->backend, backend) == 0)
			return s;
	}
	struct sp_side_stats *s = k < SP_MAX_SIDES	 ? &n->sides[k]
				  : k < SP_MAX_SIDES_ALL ? calloc(1, sizeof(*s))
							 : NULL;
	if (!s)
		return sp_route_side(n, k - 1); /* out of slots or memory: fold into the last */
	snprintf(s->backend, sizeof(s->backend), "%s", backend);
	if (k >= SP_MAX_SIDES)
		atomic_store_explicit(&n->more[k - SP_MAX_SIDES], s, memory_order_relaxed);
	/* readers load nsides (acquire), then the slot and its name */
	atomic_store_explicit(&n->nsides, k + 1, memory_order_release);
	return s;
}

const char *const sp_upstream_reasons[SP_UPSTREAM_REASONS] = {
	"connect refused",	      "connect failed",	       "connect timeout",
	"upstream timeout",	      "bad upstream response", "upstream closed connection",
	"upstream response truncated", "upstream reset",	       "upstream TLS handshake failed",
};

const char *sp_worker_date(struct sp_worker *w)
{
	time_t now = time(NULL);
	if (now != w->date_at) {
		sp_http_date(now, w->date);
		w->date_at = now;
	}
	return w->date;
}

/* The counters of route (NULL: the default backend's) for an exchange of
 * generation cfg; NULL when a reload removed the route since. */
static struct sp_route_stats *stats_of(struct sp_worker *w, const struct sp_config *cfg,
				       const struct sp_route *route)
{
	if (!route)
		return w->default_stats;
	if (cfg == w->cfg)
		return w->route_stats[route->index];
	return sp_worker_find_stats(w, route->name); /* started before a reload */
}

const char *const sp_queue_ends[SP_QUEUE_ENDS] = {"served", "timeout", "gave_up"};

struct sp_route_stats *sp_worker_wait_begin(struct sp_worker *w, const struct sp_route *route,
					    const char *backend, struct sp_side_stats **side)
{
	struct sp_route_stats *n = route ? sp_worker_hold_stats(w, (size_t)route->index)
					 : w->default_stats;
	if (n) {
		*side = side_of(n, backend);
		atomic_fetch_add_explicit(&(*side)->waiting, 1, memory_order_relaxed);
	}
	return n;
}

void sp_worker_wait_end(struct sp_worker *w, struct sp_route_stats **np, struct sp_side_stats *side)
{
	struct sp_route_stats *n = *np;
	if (!n)
		return;
	*np = NULL;
	atomic_fetch_sub_explicit(&side->waiting, 1, memory_order_relaxed);
	if (n != w->default_stats)
		sp_worker_release_stats(w, n);
}

void sp_worker_count_queued(struct sp_worker *w, const struct sp_config *cfg,
			    const struct sp_route *route, const char *backend, enum sp_queue_end end)
{
	struct sp_route_stats *n = stats_of(w, cfg, route);
	if (n && end != SP_QUEUE_NONE)
		sp_count(&side_of(n, backend)->queued[end - 1]);
}

void sp_worker_count_fallback(struct sp_worker *w, const struct sp_config *cfg,
			      const struct sp_route *route, const char *from)
{
	struct sp_route_stats *n = stats_of(w, cfg, route);
	if (n)
		sp_count(&side_of(n, from)->fell_back);
}

void sp_worker_count(struct sp_worker *w, const struct sp_config *cfg,
		     const struct sp_route *route, const char *backend, int status,
		     const char *upstream_error, double ms, double wait_ms)
{
	struct sp_route_stats *n = stats_of(w, cfg, route);
	if (!n)
		return;
	struct sp_side_stats *s = side_of(n, backend ? backend : "");
	sp_count(&s->requests);
	sp_count(&s->status[status >= 100 && status < 600 ? status / 100 : 0]);
	if (upstream_error) {
		sp_count(&s->upstream_errors);
		for (int i = 0; i < SP_UPSTREAM_REASONS; i++)
			if (strcmp(upstream_error, sp_upstream_reasons[i]) == 0)
				sp_count(&s->errors_by[i]);
	}
	sp_hist_add(&s->latency, ms);
	sp_durations_add(&s->durations, ms);
	if (wait_ms >= 0)
		sp_hist_add(&s->wait, wait_ms);
	atomic_store_explicit(&s->latency_us_sum,
			      sp_read(&s->latency_us_sum) + (uint64_t)(ms * 1000.0 + 0.5),
			      memory_order_relaxed);
}

static int reconcile_stats(struct sp_worker *w, const struct sp_config *cfg)
{
	struct sp_route_stats **next = calloc(cfg->nroutes + 1, sizeof(*next));
	int ok = next != NULL;
	for (size_t i = 0; ok && i < cfg->nroutes; i++)
		ok = (next[i] = route_stats_for(w, &cfg->routes[i])) != NULL;
	if (ok && !w->default_stats)
		ok = (w->default_stats = stats_node(w, "", 0)) != NULL;
	if (!ok) {
		free(next);
		sweep_stats(w); /* the new nodes, none live yet */
		return -1;
	}
	for (size_t i = 0; w->route_stats && i < w->cfg->nroutes; i++)
		w->route_stats[i]->live = 0;
	for (size_t i = 0; i < cfg->nroutes; i++)
		next[i]->live = 1;
	w->default_stats->live = 1;
	free(w->route_stats);
	w->route_stats = next;
	sweep_stats(w);
	return 0;
}

/* The worker's pool for cfg's backend: the one of its own generation, or for
 * an exchange that started before a reload, the one found by servers and TLS
 * settings; NULL when the backend was removed or changed since. */
static struct sp_pool *pool_of(struct sp_worker *w, const struct sp_config *cfg, int backend)
{
	if (cfg == w->cfg)
		return w->pools[backend];
	int i = peer_in(w->cfg, &cfg->backends[backend], 1, NULL, 0);
	if (i < 0)
		i = peer_in(w->cfg, &cfg->backends[backend], 0, NULL, 0);
	return i >= 0 ? w->pools[i] : NULL;
}

/* The worker's turn over cfg's backend's servers (*own, from the first, for
 * a backend its pools no longer have). */
static struct sp_turn *turn_of(struct sp_worker *w, const struct sp_config *cfg, int backend,
			       struct sp_turn *own)
{
	struct sp_pool *p = pool_of(w, cfg, backend);
	if (p)
		return &p->turn;
	memset(own, 0, sizeof(*own));
	return own;
}

int sp_worker_pick(struct sp_worker *w, const struct sp_config *cfg, int backend, int for_shadow,
		   int *paused)
{
	struct sp_turn own;
	return sp_health_pick(&cfg->backends[backend], turn_of(w, cfg, backend, &own), for_shadow,
			      paused);
}

int sp_worker_next(struct sp_worker *w, const struct sp_config *cfg, int backend)
{
	struct sp_turn own;
	return sp_health_pick_down(&cfg->backends[backend], turn_of(w, cfg, backend, &own));
}

int sp_worker_pick_retry(struct sp_worker *w, const struct sp_config *cfg, int backend,
			 uint64_t tried, int from)
{
	struct sp_turn own;
	return sp_health_pick_retry(&cfg->backends[backend], turn_of(w, cfg, backend, &own), tried,
				    from);
}

/* A clock of milliseconds for the retry budget (a coarse one: a second's
 * buckets need no more). */
static int64_t coarse_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void sp_worker_note_answer(struct sp_worker *w, const struct sp_config *cfg, int backend)
{
	struct sp_turn own;
	sp_retry_budget_answer(&turn_of(w, cfg, backend, &own)->budget, coarse_ms());
}

int sp_worker_retry_fits(struct sp_worker *w, const struct sp_config *cfg, int backend)
{
	struct sp_turn own;
	const struct sp_backend *be = &cfg->backends[backend];
	return sp_retry_budget_fits(&turn_of(w, cfg, backend, &own)->budget, coarse_ms(),
				    be->retry_budget_percent, be->retry_budget_min);
}

void sp_worker_retry_spend(struct sp_worker *w, const struct sp_config *cfg, int backend)
{
	struct sp_turn own;
	sp_retry_budget_spend(&turn_of(w, cfg, backend, &own)->budget);
}

int sp_worker_pick_any(struct sp_worker *w, const struct sp_config *cfg, int backend)
{
	int k = sp_worker_pick(w, cfg, backend, 0, NULL);
	return k >= 0 ? k : sp_worker_next(w, cfg, backend);
}

int sp_worker_shadow_room(struct sp_worker *w, const struct sp_config *cfg, int backend,
			  int server)
{
	struct sp_turn own;
	return sp_health_has_room(&cfg->backends[backend], turn_of(w, cfg, backend, &own), server,
				  1);
}

int sp_worker_shadow_any_full(struct sp_worker *w, const struct sp_config *cfg, int backend)
{
	for (size_t i = 0; i < cfg->backends[backend].nservers; i++)
		if (!sp_worker_shadow_room(w, cfg, backend, (int)i))
			return 1;
	return 0;
}

int sp_worker_wait(struct sp_worker *w, const struct sp_config *cfg, int backend,
		   struct sp_waiter *wt)
{
	const struct sp_backend *be = &cfg->backends[backend];
	struct sp_pool *p = pool_of(w, cfg, backend);
	/* a server at max_conns, not only drained ones; or requests waiting
	 * already, which a newcomer does not pass */
	int busy = p && p->nwaiters > 0;
	for (size_t i = 0; p && i < be->nservers && !busy; i++)
		busy = !sp_health_drained(&be->servers[i]) &&
		       !sp_health_has_room(be, &p->turn, (int)i, 0);
	if (!busy || p->nwaiters >= (unsigned)be->queue_max)
		return -1;
	return sp_pool_wait(p, wt);
}

int sp_worker_queue_ahead(struct sp_worker *w, const struct sp_config *cfg, int backend)
{
	struct sp_pool *p = cfg->backends[backend].queue_max ? pool_of(w, cfg, backend) : NULL;
	return p && p->nwaiters > 0;
}

struct sp_upconn *sp_worker_connect(struct sp_worker *w, const struct sp_config *cfg, int backend,
				    int server, enum sp_take take, const char **why)
{
	struct sp_pool *p = cfg == w->cfg ? w->pools[backend] : pool_of(w, cfg, backend);
	if (p)
		return sp_pool_get(p, server, take, why);
	/* removed or changed since: a connection of its own, as the exchange's
	 * configuration says (a pool retired at once frees it after use) */
	struct sp_pool *own = sp_pool_new(w->base, &cfg->backends[backend]);
	if (!own) {
		*why = SP_ERR_LOCAL;
		return NULL;
	}
	struct sp_upconn *c = sp_pool_get(own, server, SP_TAKE_NEW, why);
	sp_pool_retire(&own);
	return c;
}

static void settle_accepting(struct sp_worker *w, int all);

static void on_reload(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	(void)fd;
	(void)what;
	pthread_mutex_lock(&w->reload_lock);
	struct sp_config *cfg = w->reload_cfg;
	unsigned long gen = w->reload_gen;
	w->reload_cfg = NULL;
	pthread_mutex_unlock(&w->reload_lock);
	if (!cfg)
		return;
	if (reconcile_stats(w, cfg) < 0 || reconcile_pools(w, w->cfg, cfg) < 0) {
		sp_log(SP_LOG_ERROR, "worker %d: out of memory applying the new configuration", w->id);
		sp_config_unref(&cfg);
		return;
	}
	if (!w->draining && reconcile_listeners(w, w->cfg, cfg) < 0)
		sp_log(SP_LOG_ERROR, "worker %d: some listen addresses could not be opened", w->id);
	/* requests in flight keep the generation they started with */
	sp_config_unref(&w->cfg);
	w->cfg = cfg;
	/* every listener, the new ones too, as the new max_connections says: a
	 * raised one resumes accepting at once, a lowered one pauses it */
	settle_accepting(w, 1);
	atomic_store(&w->applied_gen, gen);
}

/* Main thread → worker: set the request's flag, then poke the eventfd. */
static void wake(struct sp_worker *w, atomic_int *flag)
{
	uint64_t one = 1;
	atomic_store(flag, 1);
	if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		sp_log(SP_LOG_ERROR, "worker %d: cannot wake it: %s", w->id, strerror(errno));
}

/* Comparisons back from the comparer: counted, logged, their shadows freed. */
static void count_back(struct sp_cmp_job *j)
{
	for (struct sp_cmp_job *next; j; j = next) {
		next = j->next;
		sp_shadow_compared(j); /* may free the shadow, j with it */
	}
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	uint64_t n;
	(void)what;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		return;
	if (atomic_exchange(&w->want_reload, 0))
		event_active(w->reload_ev, EV_READ, 0);
	if (atomic_exchange(&w->want_stop, 0))
		event_active(w->stop_ev, EV_READ, 0);
	if (atomic_exchange(&w->want_compared, 0))
		count_back(sp_cmp_port_take(&w->cmp_port));
}

/* The comparer's thread → worker: jobs are back. */
static void wake_compared(void *arg)
{
	struct sp_worker *w = arg;
	wake(w, &w->want_compared);
}

void sp_worker_reload(struct sp_worker *w, struct sp_config *cfg, unsigned long gen)
{
	pthread_mutex_lock(&w->reload_lock);
	sp_config_unref(&w->reload_cfg); /* a newer reload wins */
	w->reload_cfg = sp_config_ref(cfg);
	w->reload_gen = gen;
	pthread_mutex_unlock(&w->reload_lock);
	wake(w, &w->want_reload);
}

/* A draining worker stops once its sessions are done and its mirrors have
 * answered. Mirrors still waiting after a short grace are given up and
 * counted as timeouts, so the last summary counts every exchange and a silent
 * mirror cannot hold the exit. */
static void on_mirror_grace(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	(void)fd;
	(void)what;
	w->expiring = 1;
	sp_shadow_expire_all(w);
	w->expiring = 0;
	sp_worker_maybe_done(w);
}

void sp_worker_maybe_done(struct sp_worker *w)
{
	if (!w->draining || w->nsessions != 0 || w->expiring)
		return;
	if (w->shadow_inflight == 0) {
		event_base_loopbreak(w->base);
	} else if (!evtimer_pending(w->grace_timer, NULL)) {
		int ms = w->cfg->shadow.timeout_ms < 1000 ? w->cfg->shadow.timeout_ms : 1000;
		struct timeval tv = sp_tv_ms(ms);
		evtimer_add(w->grace_timer, &tv);
	}
}

/* This worker's share of max_connections, the remainder to the first
 * workers (3 over 2: 2 and 1; it was 1 and 1); one at least, as its
 * listener (SO_REUSEPORT) is handed connections whatever its share. */
static size_t conn_limit(const struct sp_worker *w)
{
	size_t n = (size_t)w->cfg->limits.max_connections, k = (size_t)w->cfg->workers;
	size_t share = n / k + ((size_t)w->id % k < n % k);
	return share ? share : 1;
}

/* Past the limit the listeners stop: new connections wait in the kernel's
 * backlog (no busy loop) until a session ends. Sets every listener by the
 * count and the limit now when that changes whether to accept, or always
 * (all: listeners a reload opened). Not while draining. */
static void settle_accepting(struct sp_worker *w, int all)
{
	int full = w->nsessions >= conn_limit(w);
	if (w->draining || (full == w->accept_paused && !all))
		return;
	if (full && !w->accept_paused)
		sp_log(SP_LOG_WARN, "worker %d: %zu connections (max_connections): accepting paused",
		       w->id, (size_t)w->nsessions);
	w->accept_paused = full;
	for (size_t i = 0; i < w->nlisteners; i++)
		if (w->listeners[i]) {
			if (full)
				evconnlistener_disable(w->listeners[i]);
			else
				evconnlistener_enable(w->listeners[i]);
		}
}

void sp_worker_session_added(struct sp_worker *w)
{
	w->nsessions++;
	if (w->nsessions > atomic_load_explicit(&w->peak_sessions, memory_order_relaxed))
		atomic_store_explicit(&w->peak_sessions, w->nsessions, memory_order_relaxed);
	settle_accepting(w, 0);
}

void sp_worker_session_gone(struct sp_worker *w)
{
	w->nsessions--;
	settle_accepting(w, 0);
	sp_worker_maybe_done(w);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	(void)fd;
	(void)what;
	sp_log(SP_LOG_WARN, "worker %d: drain timeout, closing %zu connections", w->id,
	       w->nsessions);
	sp_sessions_kill(w);
	event_base_loopbreak(w->base);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	(void)fd;
	(void)what;
	if (w->draining)
		return;
	w->draining = 1;
	stop_accepting(w, 1);
	sp_sessions_drain(w);
	sp_worker_maybe_done(w);
	if (w->nsessions == 0)
		return;
	int ms = w->cfg->limits.drain_timeout_ms;
	struct timeval tv = sp_tv_ms(ms);
	evtimer_add(w->drain_timer, &tv);
}

struct sp_worker *sp_worker_new(int id, struct sp_config *cfg, struct sp_accesslog *alog,
				struct sp_accesslog *difflog)
{
	struct sp_worker *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->id = id;
	w->cfg = sp_config_ref(cfg);
	w->alog = alog;
	w->difflog = difflog;
	pthread_rwlock_init(&w->stats_lock, NULL);
	if (sp_cmp_port_init(&w->cmp_port, wake_compared, w) < 0) {
		pthread_rwlock_destroy(&w->stats_lock);
		sp_config_unref(&w->cfg);
		free(w);
		return NULL;
	}
	sp_buf_init(&w->logbuf);
	sp_buf_init(&w->diffbuf);
	sp_buf_init(&w->locbuf);
	TAILQ_INIT(&w->sessions);
	TAILQ_INIT(&w->shadows);
	sp_pacer_init(&w->shadow_pacer);
	if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng))
		w->rng = (uint64_t)getpid() * 2654435761u + (uint64_t)id;
	/* No locks in the worker's loop: only this thread touches it; the main
	 * thread's requests (stop, reload) come through an eventfd. */
	struct event_config *ec = event_config_new();
	if (ec)
		event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
	w->base = ec ? event_base_new_with_config(ec) : NULL;
	if (ec)
		event_config_free(ec);
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!w->base)
		goto fail;
	pthread_mutex_init(&w->reload_lock, NULL);
	w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
	w->reload_ev = event_new(w->base, -1, 0, on_reload, w);
	w->wake_ev = w->wake_fd >= 0 ? event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, on_wake, w)
				    : NULL;
	if (!w->wake_ev || event_add(w->wake_ev, NULL) < 0)
		goto fail;
	w->drain_timer = evtimer_new(w->base, on_drain_timeout, w);
	char who[24];
	snprintf(who, sizeof(who), "worker %d", w->id);
	w->grace_timer = evtimer_new(w->base, on_mirror_grace, w);
	w->shadow_timer = evtimer_new(w->base, sp_shadow_on_due, w);
	if (!w->stop_ev || !w->reload_ev || !w->drain_timer || !w->grace_timer || !w->shadow_timer ||
	    sp_accept_pause_init(&w->accept_pause, w->base, who, on_accept_resume, w) < 0)
		goto fail;
	if (reconcile_pools(w, NULL, cfg) < 0 || reconcile_stats(w, cfg) < 0 ||
	    reconcile_listeners(w, NULL, cfg) < 0)
		goto fail;
	return w;
fail:
	sp_worker_free(&w);
	return NULL;
}

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Whether the loop must end: event_base_loop clears the flags on entry. */
static int loop_ended(struct sp_worker *w, int rc)
{
	return rc != 0 || event_base_got_break(w->base) || event_base_got_exit(w->base);
}

/* Polls without sleeping until spin_ns pass with nothing to do; -1 when
 * the loop must end. */
static int spin(struct sp_worker *w, int64_t spin_ns)
{
	int64_t last = now_ns();
	for (;;) {
		unsigned long seen = sp_conn_wakeups;
		if (loop_ended(w, event_base_loop(w->base, EVLOOP_NONBLOCK)))
			return -1;
		int64_t now = now_ns();
		if (sp_conn_wakeups != seen)
			last = now;
		else if (now - last >= spin_ns)
			return 0;
	}
}

/* The worker's event loop: event_base_dispatch, but a worker that was woken
 * soon after it went to sleep (the sleep and the work it woke for took less
 * than 4 x idle_spin_us) polls until idle_spin_us pass with nothing to do
 * before it sleeps again. A sleeping thread is woken by whoever sends it a
 * packet, in that sender's system call, and waking a CPU that has gone idle
 * is dear in a virtual machine (an inter-processor interrupt, trapped by the
 * hypervisor): with 16 KiB answers at 50 connections the worker slept
 * 0.21-0.33 times a request (HAProxy 0.015-0.04), and each wake-up cost the
 * load side's core 4-5 us in its send (performance.md, item 29). The poll
 * counts as this worker's CPU time; it never runs for a lone client (one
 * exchange at a time has nothing to overlap) nor after a long sleep. */
static void run_loop(struct sp_worker *w)
{
	for (;;) {
		int64_t spin_ns = (int64_t)w->cfg->idle_spin_us * 1000;
		int64_t slept_from = spin_ns ? now_ns() : 0; /* off (the default): no clock reads */
		if (loop_ended(w, event_base_loop(w->base, EVLOOP_ONCE)))
			return;
		if (spin_ns && now_ns() - slept_from < 4 * spin_ns && w->nsessions > 1 &&
		    spin(w, spin_ns) < 0)
			return;
	}
}

static void *worker_main(void *arg)
{
	struct sp_worker *w = arg;
	char name[16]; /* as top -H and ps -L show it, before it serves anything */
	snprintf(name, sizeof(name), "worker %d", w->id % 10000);
	pthread_setname_np(pthread_self(), name);
	run_loop(w);
	atomic_store(&w->finished, 1);
	return NULL;
}

int sp_worker_finished(struct sp_worker *w)
{
	return atomic_load(&w->finished);
}

int sp_worker_start(struct sp_worker *w)
{
	sigset_t all, old;
	sigfillset(&all);
	/* Signals belong to the main thread. */
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc == 0 ? 0 : -1;
}

void sp_worker_stop(struct sp_worker *w)
{
	wake(w, &w->want_stop);
}

void sp_worker_join(struct sp_worker *w)
{
	pthread_join(w->thread, NULL);
}

void sp_worker_take_comparisons(struct sp_worker *w)
{
	if (w->comparer)
		count_back(sp_cmp_port_take_all(&w->cmp_port));
}

void sp_worker_free(struct sp_worker **wp)
{
	struct sp_worker *w = *wp;
	if (!w)
		return;
	*wp = NULL;
	sp_sessions_kill(w);
	sp_shadow_kill_all(w);
	stop_accepting(w, 0);
	free(w->listeners);
	for (size_t i = 0; w->pools && i < w->cfg->nbackends; i++)
		sp_pool_retire(&w->pools[i]);
	free(w->pools);
	free(w->route_stats);
	struct sp_route_stats *n = atomic_load(&w->stats_head), *next;
	for (; n; n = next) {
		next = atomic_load(&n->next);
		stats_node_free(n);
	}
	for (n = w->stats_retired; n; n = next) {
		next = n->retired_next;
		stats_node_free(n);
	}
	pthread_rwlock_destroy(&w->stats_lock);
	sp_cmp_port_deinit(&w->cmp_port);
	if (w->reload_ev)
		event_free(w->reload_ev);
	if (w->wake_ev)
		event_free(w->wake_ev);
	if (w->wake_fd > 0)
		close(w->wake_fd);
	sp_config_unref(&w->reload_cfg);
	pthread_mutex_destroy(&w->reload_lock);
	if (w->stop_ev)
		event_free(w->stop_ev);
	if (w->drain_timer)
		event_free(w->drain_timer);
	sp_accept_pause_deinit(&w->accept_pause);
	if (w->grace_timer)
		event_free(w->grace_timer);
	if (w->shadow_timer)
		event_free(w->shadow_timer);
	if (w->base)
		event_base_free(w->base);
	sp_buf_deinit(&w->logbuf);
	sp_buf_deinit(&w->diffbuf);
	sp_buf_deinit(&w->locbuf);
	sp_stash_clear(&w->stash); /* last: freeing sessions fills it */
	sp_config_unref(&w->cfg);
	free(w);
}
