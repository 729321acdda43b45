/* Backend connections: a bounded keep-alive pool per backend per worker. */
#ifndef SP_UPSTREAM_H
#define SP_UPSTREAM_H

#include <event2/event.h>
#include <sys/queue.h>

#include "config.h"
#include "conn.h"
#include "health.h"

struct sp_pool;

struct sp_upconn {
	struct sp_conn *conn;
	struct sp_pool *pool;
	TAILQ_ENTRY(sp_upconn) link;
	struct sp_health *health; /* its server's, counting it in in_flight while busy */
	int server; /* which of the pool's backend's servers it is connected to */
	/* (bytes: the struct stays in malloc's 64-byte chunks) */
	unsigned char reused; /* carried an earlier exchange */
	unsigned char connected;
	unsigned char busy; /* taken for an exchange: counted in pool->turn.busy and in_flight */
};

/* A request waiting for a connection slot (backends.NAME.queue): every
 * server of the pool's backend has max_conns exchanges of the worker. */
struct sp_waiter {
	TAILQ_ENTRY(sp_waiter) link;
	struct sp_pool *pool; /* the queue it is in (holding a reference), or NULL */
	/* From the loop, the first waiter, when one of the pool's connections
	 * was given back, at a tick, or after a reload: 1 when it left the
	 * queue (sp_pool_unwait: it took a server or gave up), 0 when it
	 * found no room and stays first. */
	int (*wake)(struct sp_waiter *w);
};
TAILQ_HEAD(sp_waiter_q, sp_waiter);

/* A pool outlives config generations: a reload that keeps a backend (same
 * servers and TLS settings) keeps its pool and idle connections. It is
 * reference-counted: the worker's table holds one reference and every
 * connection taken from it one more, so a pool a reload dropped lives until
 * its last exchange ends. */
TAILQ_HEAD(sp_upconn_q, sp_upconn);

struct sp_pool {
	const struct sp_backend *be; /* the newest generation's backend */
	struct event_base *base;
	struct sp_upconn_q *idle; /* one queue per server of be, latest first */
	size_t nservers;
	size_t nidle;             /* all servers together: at most be->max_idle */
	struct sp_turn turn;      /* the worker's turn over be's servers (sp_health_pick) */
	int refs;
	int retired;          /* no longer in the worker's table: do not keep idle */
	unsigned long opened; /* connections opened, for tests and metrics */
	struct sp_waiter_q waiters; /* FIFO (backends.NAME.queue) */
	unsigned nwaiters;
	struct event *wake; /* runs the waiters from the loop (NULL: none yet) */
	/* and every SP_QUEUE_TICK_MS while there are waiters: room that comes
	 * without a connection given back (a drain ended, a server up again) */
	struct event *tick;
};
#define SP_QUEUE_TICK_MS 100

struct sp_pool *sp_pool_new(struct event_base *base, const struct sp_backend *be);
/* Drops the table's reference: closes the idle connections; the pool goes
 * once no connection uses it. *p is NULLed. */
void sp_pool_retire(struct sp_pool **p);

/* How a connection is taken from the pool. */
enum sp_take {
	SP_TAKE_IDLE,    /* the latest idle one, or a new one */
	/* an idle one checked first for a close (or bytes) that came in since
	 * the loop last looked: for a request that cannot be sent again if the
	 * connection turns out closed (one peek, a system call) */
	SP_TAKE_CHECKED,
	SP_TAKE_NEW,     /* never an idle one */
};

/* An idle connection (reused = 1) or a new one that is connecting, to the
 * server-th server of the pool's backend; NULL when
 * a socket cannot even be created (*why says why: SP_ERR_LOCAL when this
 * process or host ran out of descriptors, memory or local ports, which says
 * nothing about the backend). The caller owns the result and must set its
 * callbacks. */
struct sp_upconn *sp_pool_get(struct sp_pool *p, int server, enum sp_take take, const char **why);
/* The same, for be: p's backend of another generation with the same
 * servers (a retired pool's be may be gone). */
struct sp_upconn *sp_pool_get_as(struct sp_pool *p, const struct sp_backend *be, int server,
				 enum sp_take take, const char **why);
extern const char SP_ERR_LOCAL[];
/* Returns a healthy connection to the idle queue (or closes it when the pool
 * is full). Takes ownership; *c is NULLed. */
void sp_pool_put(struct sp_upconn **c);
/* Closes the connection. Takes ownership; *c is NULLed. */
void sp_upconn_free(struct sp_upconn **c);

/* Queues w last among p's waiters. -1: no memory for the pool's events. */
int sp_pool_wait(struct sp_pool *p, struct sp_waiter *w);
/* Takes w out of its queue (nothing when in none). */
void sp_pool_unwait(struct sp_waiter *w);
/* The server of be (p's backend, as now) that a waiter may take, as the
 * balance picks it on p's turn, or -1: none has room. */
int sp_pool_pick(struct sp_pool *p, const struct sp_backend *be);
/* The waiters look for room again, from the loop (out of whatever gave a
 * connection back, or a reload that gave the pool a new max_conns). */
void sp_pool_kick(struct sp_pool *p);
/* The pool's backend's max_idle and idle_timeout_ms applied to the
 * connections idle in it now (a reload's new values, which sp_pool_put
 * applies only to connections given back from then on): the ones past
 * max_idle are closed, the others' idle timers run from now. */
void sp_pool_settle(struct sp_pool *p);
/* A reference for a waiter that leaves its queue to connect through p. */
void sp_pool_hold(struct sp_pool *p);
void sp_pool_release(struct sp_pool **p);

#endif
