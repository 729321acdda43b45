/* The comparer's thread and the workers' ports (see comparer.h). */
#include "comparer.h"

#include <signal.h>
#include <stdlib.h>

#include "log.h"

struct sp_comparer {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct sp_cmp_job *head, **tail;
	int stop;
};

static int encoded(const struct sp_cmp_side *s)
{
	return s->body_len && sp_hdr_find(s->headers, s->nheaders, "Content-Encoding");
}

int sp_cmp_job_costly(const struct sp_cmp_job *j)
{
	if (j->rules.body == SP_CMP_NONE)
		return 0;
	size_t n = j->primary.body_len + j->shadow.body_len + (j->has_sample ? j->sample.body_len : 0);
	if (n > SP_CMP_INLINE_MAX)
		return 1;
	/* deflate expands at most 1032 times: bodies this small stay small
	 * decoded (no header lookups for the tiny answers of most shadows) */
	if (n <= SP_CMP_INLINE_MAX / 1032)
		return 0;
	return encoded(&j->primary) || encoded(&j->shadow) || (j->has_sample && encoded(&j->sample));
}

void sp_cmp_job_run(struct sp_cmp_job *j)
{
	j->real = 0;
	j->rc = sp_compare(&j->rules, &j->primary, &j->shadow, &j->r);
	if (j->rc < 0)
		return;
	j->real = j->r.ndiffs;
	/* what differs between two answers of the primary is noise; a sample
	 * of another status (a 429, a 5xx) says nothing of the answer's */
	if (j->r.ndiffs && j->has_sample && j->sample.status == j->primary.status) {
		struct sp_cmp_result noise;
		if (sp_compare(&j->rules, &j->primary, &j->sample, &noise) == 0)
			j->real = sp_cmp_mark_noise(&j->r, &noise);
		sp_cmp_result_deinit(&noise);
		/* a body difference is noise only where the sample varies too */
		for (size_t i = 0; i < j->r.ndiffs; i++) {
			struct sp_diff *d = &j->r.diffs[i];
			if (d->noise && d->kind == SP_DIFF_BODY &&
			    !sp_cmp_body_noise(&j->rules, &j->primary, &j->shadow, &j->sample)) {
				d->noise = 0;
				j->real++;
			}
		}
	}
}

void sp_cmp_job_deinit(struct sp_cmp_job *j)
{
	sp_cmp_result_deinit(&j->r);
}

int sp_cmp_port_init(struct sp_cmp_port *p, void (*wake)(void *arg), void *arg)
{
	p->head = NULL;
	p->tail = &p->head;
	p->out = 0;
	p->wake = wake;
	p->arg = arg;
	if (pthread_mutex_init(&p->lock, NULL) != 0)
		return -1;
	if (pthread_cond_init(&p->back, NULL) != 0) {
		pthread_mutex_destroy(&p->lock);
		return -1;
	}
	return 0;
}

void sp_cmp_port_deinit(struct sp_cmp_port *p)
{
	pthread_cond_destroy(&p->back);
	pthread_mutex_destroy(&p->lock);
}

/* The list as it is, emptied; called with the lock held. */
static struct sp_cmp_job *take_locked(struct sp_cmp_port *p)
{
	struct sp_cmp_job *j = p->head;
	for (struct sp_cmp_job *k = j; k; k = k->next)
		p->out--;
	p->head = NULL;
	p->tail = &p->head;
	return j;
}

struct sp_cmp_job *sp_cmp_port_take(struct sp_cmp_port *p)
{
	pthread_mutex_lock(&p->lock);
	struct sp_cmp_job *j = take_locked(p);
	pthread_mutex_unlock(&p->lock);
	return j;
}

struct sp_cmp_job *sp_cmp_port_take_all(struct sp_cmp_port *p)
{
	pthread_mutex_lock(&p->lock);
	size_t queued = 0;
	for (;;) {
		queued = 0;
		for (struct sp_cmp_job *k = p->head; k; k = k->next)
			queued++;
		if (queued == p->out)
			break;
		pthread_cond_wait(&p->back, &p->lock);
	}
	struct sp_cmp_job *j = take_locked(p);
	pthread_mutex_unlock(&p->lock);
	return j;
}

static void put_back(struct sp_cmp_job *j)
{
	struct sp_cmp_port *p = j->port;
	j->next = NULL;
	pthread_mutex_lock(&p->lock);
	*p->tail = j;
	p->tail = &j->next;
	pthread_cond_signal(&p->back);
	/* under the lock: once the last job is back, the owner may free the
	 * port (sp_cmp_port_take_all), and wake's target with it */
	p->wake(p->arg);
	pthread_mutex_unlock(&p->lock);
}

static void *run(void *arg)
{
	struct sp_comparer *c = arg;
	pthread_setname_np(pthread_self(), "comparer");
	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (!c->head && !c->stop)
			pthread_cond_wait(&c->work, &c->lock);
		struct sp_cmp_job *j = c->head;
		if (!j)
			break; /* stopping, and nothing left */
		c->head = j->next;
		if (!c->head)
			c->tail = &c->head;
		pthread_mutex_unlock(&c->lock);
		sp_cmp_job_run(j);
		put_back(j); /* the owner may free j from here on */
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

struct sp_comparer *sp_comparer_new(void)
{
	struct sp_comparer *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->tail = &c->head;
	if (pthread_mutex_init(&c->lock, NULL) != 0)
		goto fail_lock;
	if (pthread_cond_init(&c->work, NULL) != 0)
		goto fail_cond;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old); /* signals belong to the main thread */
	int rc = pthread_create(&c->thread, NULL, run, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		goto fail_thread;
	return c;
fail_thread:
	pthread_cond_destroy(&c->work);
fail_cond:
	pthread_mutex_destroy(&c->lock);
fail_lock:
	sp_log(SP_LOG_ERROR, "cannot start the comparison thread");
	free(c);
	return NULL;
}

void sp_comparer_free(struct sp_comparer **cp)
{
	struct sp_comparer *c = *cp;
	if (!c)
		return;
	*cp = NULL;
	pthread_mutex_lock(&c->lock);
	c->stop = 1;
	pthread_cond_signal(&c->work);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	pthread_cond_destroy(&c->work);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void sp_comparer_submit(struct sp_comparer *c, struct sp_cmp_port *port, struct sp_cmp_job *j)
{
	j->port = port;
	j->next = NULL;
	pthread_mutex_lock(&port->lock);
	port->out++;
	pthread_mutex_unlock(&port->lock);
	pthread_mutex_lock(&c->lock);
	*c->tail = j;
	c->tail = &j->next;
	pthread_cond_signal(&c->work);
	pthread_mutex_unlock(&c->lock);
}
