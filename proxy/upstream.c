/* Upstream connections and their idle pool (after nginx's upstream keepalive:
 * LIFO reuse, bounded size, an idle connection that becomes readable is dead,
 * one unused for idle_timeout_ms is closed). */
#include "upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>


#include "log.h"

struct sp_pool *sp_pool_new(struct event_base *base, const struct sp_backend *be)
{
	struct sp_pool *p = calloc(1, sizeof(*p));
	if (!p || !(p->idle = calloc(be->nservers + 1, sizeof(*p->idle)))) {
		free(p);
		return NULL;
	}
	p->be = be;
	p->base = base;
	p->refs = 1;
	p->nservers = be->nservers;
	for (size_t i = 0; i < p->nservers; i++)
		TAILQ_INIT(&p->idle[i]);
	TAILQ_INIT(&p->waiters);
	return p;
}

static void pool_unref(struct sp_pool *p)
{
	if (--p->refs == 0) {
		if (p->wake)
			event_free(p->wake);
		if (p->tick)
			event_free(p->tick);
		free(p->idle);
		free(p);
	}
}

/* The waiters, first first, while each finds a server (or leaves). */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct sp_pool *p = arg;
	struct sp_waiter *w;
	(void)fd;
	(void)what;
	p->refs++; /* its last waiter may leave */
	while ((w = TAILQ_FIRST(&p->waiters)) != NULL && w->wake(w))
		;
	if (p->nwaiters && !evtimer_pending(p->tick, NULL)) {
		struct timeval tv = {0, SP_QUEUE_TICK_MS * 1000};
		evtimer_add(p->tick, &tv);
	}
	pool_unref(p);
}

void sp_pool_kick(struct sp_pool *p)
{
	if (p->nwaiters)
		event_active(p->wake, 0, 1);
}

void sp_pool_hold(struct sp_pool *p)
{
	p->refs++;
}

void sp_pool_release(struct sp_pool **pp)
{
	if (*pp)
		pool_unref(*pp);
	*pp = NULL;
}

int sp_pool_pick(struct sp_pool *p, const struct sp_backend *be)
{
	int k = sp_health_pick(be, &p->turn, 0, NULL);
	return k >= 0 ? k : sp_health_pick_down(be, &p->turn);
}

int sp_pool_wait(struct sp_pool *p, struct sp_waiter *w)
{
	if (!p->wake && !(p->wake = event_new(p->base, -1, 0, on_wake, p)))
		return -1;
	if (!p->tick && !(p->tick = evtimer_new(p->base, on_wake, p)))
		return -1;
	if (!evtimer_pending(p->tick, NULL)) {
		struct timeval tv = {0, SP_QUEUE_TICK_MS * 1000};
		evtimer_add(p->tick, &tv);
	}
	TAILQ_INSERT_TAIL(&p->waiters, w, link);
	p->nwaiters++;
	p->refs++;
	w->pool = p;
	return 0;
}

void sp_pool_unwait(struct sp_waiter *w)
{
	struct sp_pool *p = w->pool;
	if (!p)
		return;
	TAILQ_REMOVE(&p->waiters, w, link);
	p->nwaiters--;
	w->pool = NULL;
	pool_unref(p);
}

void sp_pool_retire(struct sp_pool **pp)
{
	struct sp_pool *p = *pp;
	struct sp_upconn *c;
	if (!p)
		return;
	*pp = NULL;
	p->retired = 1;
	for (size_t i = 0; i < p->nservers; i++)
		while ((c = TAILQ_FIRST(&p->idle[i])) != NULL) {
			TAILQ_REMOVE(&p->idle[i], c, link);
			p->nidle--;
			sp_upconn_free(&c);
		}
	/* its waiters stay: the connections it has in use still bound them,
	 * as those of the generation they came in (sp_pool_get_as) */
	pool_unref(p);
}

void sp_upconn_free(struct sp_upconn **cp)
{
	struct sp_upconn *c = *cp;
	if (!c)
		return;
	*cp = NULL;
	if (c->busy) {
		c->pool->turn.busy[c->server]--;
		sp_health_in_flight(c->health, -1);
		sp_pool_kick(c->pool); /* a slot came free: the waiters' turn */
	}
	sp_conn_free(&c->conn);
	pool_unref(c->pool);
	free(c);
}

/* Anything happening on an idle connection (data, EOF, error) means the
 * backend closed it or broke the protocol: drop it. So does its idle
 * timeout: closing first, before the backend's own idle timeout, keeps a
 * request from being sent on a connection the backend is closing. */
static void on_idle_event(struct sp_conn *conn, short what, void *arg)
{
	struct sp_upconn *c = arg;
	(void)conn;
	(void)what;
	TAILQ_REMOVE(&c->pool->idle[c->server], c, link);
	c->pool->nidle--;
	sp_upconn_free(&c);
}

static void on_idle_read(struct sp_conn *conn, void *arg)
{
	on_idle_event(conn, SP_CONN_READING, arg);
}

void sp_pool_put(struct sp_upconn **cp)
{
	struct sp_upconn *c = *cp;
	*cp = NULL;
	struct sp_pool *p = c->pool;
	if (p->retired || p->nidle >= (size_t)p->be->max_idle) {
		sp_upconn_free(&c);
		return;
	}
	c->busy = 0;
	p->turn.busy[c->server]--;
	sp_health_in_flight(c->health, -1);
	sp_pool_kick(p);
	sp_conn_setcb(c->conn, on_idle_read, NULL, on_idle_event, c);
	sp_conn_read(c->conn, 1);
	sp_conn_timeouts(c->conn, p->be->idle_timeout_ms, 0);
	sp_conn_deadline(c->conn, 0, 0); /* a per_try_timeout_ms its answer beat */
	c->reused = 1;
	TAILQ_INSERT_HEAD(&p->idle[c->server], c, link);
	p->nidle++;
}

void sp_pool_settle(struct sp_pool *p)
{
	for (size_t i = 0; i < p->nservers; i++) {
		struct sp_upconn *c, *next;
		for (c = TAILQ_FIRST(&p->idle[i]); c; c = next) {
			next = TAILQ_NEXT(c, link);
			if (p->nidle > (size_t)p->be->max_idle) {
				TAILQ_REMOVE(&p->idle[i], c, link);
				p->nidle--;
				sp_upconn_free(&c);
			} else {
				sp_conn_timeouts(c->conn, p->be->idle_timeout_ms, 0);
			}
		}
	}
}

const char SP_ERR_LOCAL[] = "no local resources to connect";

/* Why a socket could not even start connecting: the backend refused, or
 * this process or host ran out of something, or anything else. */
static const char *connect_error(int e, int is_unix)
{
	/* a unix socket's file gone, or its listen queue full (EAGAIN, where
	 * TCP would wait for the connect timeout): a refusal */
	if (e == ECONNREFUSED || e == ENOENT || (is_unix && e == EAGAIN))
		return "connect refused";
	if (sp_err_local(e))
		return SP_ERR_LOCAL;
	return "connect failed";
}

static struct sp_upconn *connect_new(struct sp_pool *p, const struct sp_backend *be, int server,
				     const char **why)
{
	const struct sp_server *sv = &be->servers[server];
	struct sp_upconn *c = calloc(1, sizeof(*c));
	if (!c) {
		*why = "out of memory";
		return NULL;
	}
	c->pool = p;
	c->server = server;
	c->health = sv->health; /* per URL: the same entry for the pool's later generations */
	c->conn = sp_conn_connect(p->base, (const struct sockaddr *)&sv->addr, sv->addrlen);
	if (!c->conn) {
		*why = connect_error(errno, sv->is_unix);
		free(c);
		return NULL;
	}
	if (be->tls_ctx && sp_conn_tls_connect(c->conn, be->tls_ctx, sv->host, sv->host_is_ip,
					       sv->health ? &sv->health->resume : NULL) < 0) {
		*why = "connect failed";
		sp_conn_free(&c->conn);
		free(c);
		return NULL;
	}
	p->refs++;
	p->opened++;
	return c;
}

/* c is taken for an exchange: least_conn counts it until it is put back or
 * freed. */
static struct sp_upconn *taken(struct sp_pool *p, struct sp_upconn *c)
{
	if (c) {
		c->busy = 1;
		p->turn.busy[c->server]++;
		sp_health_in_flight(c->health, 1);
	}
	return c;
}

struct sp_upconn *sp_pool_get(struct sp_pool *p, int server, enum sp_take take, const char **why)
{
	return sp_pool_get_as(p, p->be, server, take, why);
}

struct sp_upconn *sp_pool_get_as(struct sp_pool *p, const struct sp_backend *be, int server,
				 enum sp_take take, const char **why)
{
	struct sp_upconn *c;
	while (take != SP_TAKE_NEW && (c = TAILQ_FIRST(&p->idle[server]))) {
		TAILQ_REMOVE(&p->idle[server], c, link);
		p->nidle--;
		if (take == SP_TAKE_IDLE || sp_conn_idle_alive(c->conn))
			return taken(p, c);
		sp_upconn_free(&c);
	}
	return taken(p, connect_new(p, be, server, why));
}
