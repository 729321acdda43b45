/* Backend connections: a bounded keep-alive pool per backend per worker. */
#ifndef SP_UPSTREAM_H
#define SP_UPSTREAM_H

#include <event2/event.h>
#include <sys/queue.h>

#include "config.h"
#include "conn.h"

struct sp_pool;

struct sp_upconn {
	struct sp_conn *conn;
	struct sp_pool *pool;
	TAILQ_ENTRY(sp_upconn) link;
	int reused;    /* carried an earlier exchange */
	int connected;
};

struct sp_pool {
	const struct sp_backend *be; /* borrowed from the worker's config */
	struct event_base *base;
	TAILQ_HEAD(sp_upconn_q, sp_upconn) idle;
	size_t nidle;
	unsigned long opened; /* connections opened, for tests and metrics */
};

void sp_pool_init(struct sp_pool *p, struct event_base *base, const struct sp_backend *be);
void sp_pool_deinit(struct sp_pool *p);

/* An idle connection (reused = 1) or a new one that is connecting; NULL when
 * a socket cannot even be created (*why says why). With fresh, never reuses.
 * The caller owns the result and must set its callbacks. */
struct sp_upconn *sp_pool_get(struct sp_pool *p, int fresh, const char **why);
/* Returns a healthy connection to the idle queue (or closes it when the pool
 * is full). Takes ownership; *c is NULLed. */
void sp_pool_put(struct sp_upconn **c);
/* Closes the connection. Takes ownership; *c is NULLed. */
void sp_upconn_free(struct sp_upconn **c);

#endif
