/* Log-scale latency histograms: 4 buckets per doubling from 10 µs, so a
 * quantile is within 19 % of the true value, in 384 bytes per histogram. */
#include "stats.h"

#include <math.h>

static unsigned bucket_of(double ms)
{
	double units = ms * 100.0; /* 10 µs units */
	int b = units <= 1.0 ? 0 : (int)ceil(4.0 * log2(units));
	return b < 0 ? 0 : b >= SP_LAT_BUCKETS ? SP_LAT_BUCKETS - 1 : (unsigned)b;
}

double sp_hist_bound_ms(unsigned bucket)
{
	return pow(2.0, bucket / 4.0) / 100.0;
}

const double sp_duration_bounds_s[SP_DURATION_BOUNDS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void sp_durations_add(struct sp_durations *d, double ms)
{
	for (int i = 0; i < SP_DURATION_BOUNDS; i++)
		if (ms <= sp_duration_bounds_s[i] * 1000.0) {
			sp_count(&d->le[i]);
			return;
		}
}

void sp_hist_add(struct sp_hist *h, double ms)
{
	_Atomic uint32_t *c = &h->b[bucket_of(ms)];
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

void sp_hist_sum(const struct sp_hist *src, uint64_t *dst)
{
	for (int i = 0; i < SP_LAT_BUCKETS; i++)
		dst[i] += atomic_load_explicit(&src->b[i], memory_order_relaxed);
}

double sp_hist_quantile(const uint64_t *sum, double q)
{
	uint64_t total = 0, seen = 0;
	for (int i = 0; i < SP_LAT_BUCKETS; i++)
		total += sum[i];
	if (!total)
		return 0;
	for (int i = 0; i < SP_LAT_BUCKETS; i++) {
		seen += sum[i];
		if ((double)seen >= q * (double)total)
			return sp_hist_bound_ms((unsigned)i);
	}
	return sp_hist_bound_ms(SP_LAT_BUCKETS - 1);
}
