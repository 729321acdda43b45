/* The latest differing exchanges per route, kept in memory for the admin API
 * and the dashboard (the diff log keeps them all). Workers push, the main
 * thread reads; a mutex guards it (only differing exchanges get here). */
#ifndef SP_DIFFRING_H
#define SP_DIFFRING_H

#include <stddef.h>

#include "buf.h"

struct sp_diff_ring;

/* per_route: how many are kept for each route. */
struct sp_diff_ring *sp_diff_ring_new(size_t per_route);
void sp_diff_ring_free(struct sp_diff_ring **r);
/* line: one diff-log JSON object (copied). */
void sp_diff_ring_push(struct sp_diff_ring *r, const char *route, const char *line, size_t len);
/* Drops the rings of the routes keep() says no to (a reload removed them). */
void sp_diff_ring_prune(struct sp_diff_ring *r, int (*keep)(const char *route, const void *arg),
			const void *arg);
/* Appends to out a JSON array of the lines kept, as written (the newest
 * first, at most limit, for route; NULL: every route). -1: no memory. */
int sp_diff_ring_get(struct sp_diff_ring *r, const char *route, size_t limit, struct sp_buf *out);

#endif
