/* Shadow pacing; see pacer.h. */
#include "pacer.h"

/* Weight of a new exchange time in the mean: 1/16 follows a mirror that
 * turns slow within a few dozen exchanges without jumping on one outlier. */
#define MEAN_WEIGHT (1.0 / 16)

void sp_pacer_init(struct sp_pacer *p)
{
	p->mean_ms = 0;
	p->tokens = SP_PACER_START_TOKENS;
	p->last_ms = -1;
}

int sp_pacer_admit(struct sp_pacer *p, double now_ms, int budget, double presumed_ms)
{
	double cap = budget > 1 ? budget : 1.0;
	double mean = p->mean_ms > 0 ? p->mean_ms : presumed_ms > 0.001 ? presumed_ms : 0.001;
	double rate = budget / mean; /* starts per ms */
	if (p->last_ms < 0)
		p->last_ms = now_ms;
	double elapsed = now_ms - p->last_ms;
	if (elapsed > 0) {
		p->tokens += elapsed * rate;
		p->last_ms = now_ms;
	}
	if (p->tokens > cap)
		p->tokens = cap;
	if (p->tokens < 1)
		return 0;
	p->tokens -= 1;
	return 1;
}

void sp_pacer_done(struct sp_pacer *p, double ms)
{
	if (ms < 0.001)
		ms = 0.001;
	if (p->mean_ms <= 0)
		p->mean_ms = ms; /* the first: no longer the presumed worst */
	else
		p->mean_ms += (ms - p->mean_ms) * MEAN_WEIGHT;
}
