/* Upstream connections and their idle pool (after nginx's upstream keepalive:
 * LIFO reuse, bounded size, an idle connection that becomes readable is dead). */
#include "upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "log.h"

void sp_pool_init(struct sp_pool *p, struct event_base *base, const struct sp_backend *be)
{
	p->be = be;
	p->base = base;
	TAILQ_INIT(&p->idle);
	p->nidle = 0;
	p->opened = 0;
}

void sp_pool_deinit(struct sp_pool *p)
{
	struct sp_upconn *c;
	while ((c = TAILQ_FIRST(&p->idle)) != NULL) {
		TAILQ_REMOVE(&p->idle, c, link);
		p->nidle--;
		c->pool = NULL;
		sp_upconn_free(&c);
	}
}

void sp_upconn_free(struct sp_upconn **cp)
{
	struct sp_upconn *c = *cp;
	if (!c)
		return;
	*cp = NULL;
	if (c->bev)
		bufferevent_free(c->bev);
	free(c);
}

/* Anything happening on an idle connection (data, EOF, error) means the
 * backend closed it or broke the protocol: drop it. */
static void on_idle_event(struct bufferevent *bev, short what, void *arg)
{
	struct sp_upconn *c = arg;
	(void)bev;
	(void)what;
	TAILQ_REMOVE(&c->pool->idle, c, link);
	c->pool->nidle--;
	sp_upconn_free(&c);
}

static void on_idle_read(struct bufferevent *bev, void *arg)
{
	on_idle_event(bev, BEV_EVENT_READING, arg);
}

void sp_pool_put(struct sp_upconn **cp)
{
	struct sp_upconn *c = *cp;
	*cp = NULL;
	struct sp_pool *p = c->pool;
	if (p->nidle >= (size_t)p->be->max_idle) {
		sp_upconn_free(&c);
		return;
	}
	bufferevent_setcb(c->bev, on_idle_read, NULL, on_idle_event, c);
	bufferevent_set_timeouts(c->bev, NULL, NULL);
	bufferevent_disable(c->bev, EV_WRITE);
	bufferevent_enable(c->bev, EV_READ);
	c->reused = 1;
	TAILQ_INSERT_HEAD(&p->idle, c, link);
	p->nidle++;
}

static struct sp_upconn *connect_new(struct sp_pool *p, const char **why)
{
	struct sp_upconn *c = calloc(1, sizeof(*c));
	if (!c) {
		*why = "out of memory";
		return NULL;
	}
	c->pool = p;
	c->bev = bufferevent_socket_new(p->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!c->bev)
		goto fail;
	if (bufferevent_socket_connect(c->bev, (const struct sockaddr *)&p->be->addr,
				       (int)p->be->addrlen) < 0)
		goto fail;
	int one = 1;
	setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	p->opened++;
	return c;
fail:
	*why = errno == ECONNREFUSED ? "connect refused" : "connect failed";
	sp_upconn_free(&c);
	return NULL;
}

struct sp_upconn *sp_pool_get(struct sp_pool *p, int fresh, const char **why)
{
	struct sp_upconn *c = fresh ? NULL : TAILQ_FIRST(&p->idle);
	if (!c)
		return connect_new(p, why);
	TAILQ_REMOVE(&p->idle, c, link);
	p->nidle--;
	return c;
}
