/* In-memory rings of recent differences (see diffring.h). */
#include "diffring.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

struct route_ring {
	struct route_ring *next;
	char route[SP_NAME_MAX];
	char **lines; /* per_route slots, oldest overwritten */
	unsigned long long *seqs; /* each line's place among every route's */
	size_t head, count;
	size_t taken; /* sp_diff_ring_get's cursor: lines given, newest first */
	unsigned long long pushed;
};

struct sp_diff_ring {
	pthread_mutex_t lock;
	size_t per_route;
	struct route_ring *routes;
	unsigned long long seq; /* lines pushed, every route */
};

struct sp_diff_ring *sp_diff_ring_new(size_t per_route)
{
	struct sp_diff_ring *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	r->per_route = per_route ? per_route : 1;
	return r;
}

static void ring_free(struct sp_diff_ring *r, struct route_ring *rr)
{
	for (size_t i = 0; i < r->per_route; i++)
		free(rr->lines[i]);
	free(rr->lines);
	free(rr->seqs);
	free(rr);
}

void sp_diff_ring_free(struct sp_diff_ring **rp)
{
	struct sp_diff_ring *r = *rp;
	if (!r)
		return;
	*rp = NULL;
	struct route_ring *rr = r->routes, *next;
	for (; rr; rr = next) {
		next = rr->next;
		ring_free(r, rr);
	}
	pthread_mutex_destroy(&r->lock);
	free(r);
}

void sp_diff_ring_prune(struct sp_diff_ring *r, int (*keep)(const char *route, const void *arg),
			const void *arg)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	struct route_ring **link = &r->routes, *rr;
	while ((rr = *link) != NULL) {
		if (keep(rr->route, arg)) {
			link = &rr->next;
			continue;
		}
		*link = rr->next;
		ring_free(r, rr);
	}
	pthread_mutex_unlock(&r->lock);
}

static struct route_ring *ring_for(struct sp_diff_ring *r, const char *route)
{
	struct route_ring *rr;
	for (rr = r->routes; rr; rr = rr->next)
		if (strcmp(rr->route, route) == 0)
			return rr;
	rr = calloc(1, sizeof(*rr));
	if (!rr || !(rr->lines = calloc(r->per_route, sizeof(char *))) ||
	    !(rr->seqs = calloc(r->per_route, sizeof(*rr->seqs)))) {
		if (rr)
			free(rr->lines);
		free(rr);
		return NULL;
	}
	snprintf(rr->route, sizeof(rr->route), "%s", route);
	rr->next = r->routes;
	r->routes = rr;
	return rr;
}

void sp_diff_ring_push(struct sp_diff_ring *r, const char *route, const char *line, size_t len)
{
	if (!r)
		return;
	char *copy = strndup(line, len);
	if (!copy)
		return;
	pthread_mutex_lock(&r->lock);
	struct route_ring *rr = ring_for(r, route);
	if (rr) {
		free(rr->lines[rr->head]);
		rr->lines[rr->head] = copy;
		rr->seqs[rr->head] = ++r->seq;
		rr->head = (rr->head + 1) % r->per_route;
		if (rr->count < r->per_route)
			rr->count++;
		rr->pushed++;
		copy = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	free(copy);
}

int sp_diff_ring_get(struct sp_diff_ring *r, const char *route, size_t limit, struct sp_buf *out)
{
	size_t n = 0;
	int rc = sp_buf_addc(out, '[');
	if (!r || rc < 0)
		return rc < 0 || sp_buf_addc(out, ']') < 0 ? -1 : 0;
	pthread_mutex_lock(&r->lock);
	for (struct route_ring *rr = r->routes; rr; rr = rr->next)
		rr->taken = 0;
	/* the rings merged, newest first: each step takes the newest line
	 * not taken yet among the routes asked for */
	while (n < limit && rc == 0) {
		struct route_ring *best = NULL;
		size_t at = 0;
		for (struct route_ring *rr = r->routes; rr; rr = rr->next) {
			if (rr->taken == rr->count || (route && strcmp(rr->route, route) != 0))
				continue;
			size_t i = (rr->head + r->per_route - 1 - rr->taken) % r->per_route;
			if (!best || rr->seqs[i] > best->seqs[at]) {
				best = rr;
				at = i;
			}
		}
		if (!best)
			break;
		best->taken++;
		/* as the diff log has it: each value at the precision it was
		 * written with (parsed and written again, all took one) */
		rc = (n++ ? sp_buf_addc(out, ',') : 0) < 0 || sp_buf_adds(out, best->lines[at]) < 0
			     ? -1
			     : 0;
	}
	pthread_mutex_unlock(&r->lock);
	return rc < 0 || sp_buf_addc(out, ']') < 0 ? -1 : 0;
}
