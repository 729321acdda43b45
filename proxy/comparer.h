/* Comparisons off the workers' loops. Comparing two large answers (parsing
 * both as JSON, undoing gzip) takes milliseconds to a fraction of a second:
 * on a worker's thread every client of that worker, the mirrored one
 * included, would wait for it. One thread per process takes the jobs in
 * order and hands each back to the worker that sent it, through that
 * worker's port (a locked list and a wake-up); the worker counts and logs
 * the outcome on its own thread, as before.
 *
 * A job borrows everything it reads (rules, heads, bodies) from its owner,
 * which keeps them unchanged until the job comes back. */
#ifndef SP_COMPARER_H
#define SP_COMPARER_H

#include <pthread.h>
#include <stddef.h>

#include "compare.h"

struct sp_cmp_job {
	struct sp_cmp_job *next;
	struct sp_cmp_port *port;
	void *owner; /* the worker's, untouched here */
	struct sp_cmp_rules rules;
	struct sp_cmp_side primary, shadow;
	struct sp_cmp_side sample; /* a second primary answer, when has_sample */
	int has_sample;
	/* out */
	int rc;		       /* sp_compare's */
	struct sp_cmp_result r; /* primary against shadow */
	size_t real;	       /* r's diffs that are not noise (the sample's differences) */
};

/* Bodies up to this many bytes in all, none content-encoded, are compared
 * where they are: at most a few ms of parsing, cheaper than the two threads'
 * hand-over (a wake-up each way) for the small answers most shadows get. */
#define SP_CMP_INLINE_MAX 16384

/* True when j is worth a thread: large bodies, or any that must be decoded
 * first (a small gzip answer may decode to max_decoded). */
int sp_cmp_job_costly(const struct sp_cmp_job *j);
/* Runs one job where it is (sp_compare, then the sample's for noise). */
void sp_cmp_job_run(struct sp_cmp_job *j);
/* Frees what a job's run left in it (its result). */
void sp_cmp_job_deinit(struct sp_cmp_job *j);

/* Where a worker's jobs come back. wake(arg) is called from the comparer's
 * thread after each job is queued here. */
struct sp_cmp_port {
	pthread_mutex_t lock;
	pthread_cond_t back; /* signalled with each job put back */
	struct sp_cmp_job *head, **tail;
	size_t out; /* jobs sent and not yet taken back (the owner's thread) */
	void (*wake)(void *arg);
	void *arg;
};

int sp_cmp_port_init(struct sp_cmp_port *p, void (*wake)(void *arg), void *arg);
void sp_cmp_port_deinit(struct sp_cmp_port *p);
/* The jobs that came back, oldest first (the owner's thread). */
struct sp_cmp_job *sp_cmp_port_take(struct sp_cmp_port *p);
/* Blocks until every job sent through p is back, then takes them (a worker
 * freeing what they borrow at exit). */
struct sp_cmp_job *sp_cmp_port_take_all(struct sp_cmp_port *p);

struct sp_comparer;

struct sp_comparer *sp_comparer_new(void);
/* Runs the jobs still queued, then stops the thread. */
void sp_comparer_free(struct sp_comparer **cp);
/* Queues j (owner and inputs set); it comes back through port. */
void sp_comparer_submit(struct sp_comparer *c, struct sp_cmp_port *port, struct sp_cmp_job *j);

#endif
