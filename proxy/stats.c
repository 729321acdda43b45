/* Log-scale latency histograms: 4 buckets per doubling from 10 µs, so a
 * quantile is within 19 % of the true value, in 384 bytes per histogram. */
#include "stats.h"

#include <math.h>
#include <string.h>

/* ceil(4 * log2(ms / 0.01)), clamped to the buckets, from the double's own
 * exponent and fraction: the octave is the exponent, the quarter within it
 * the first of 2^(1/4), 2^(1/2), 2^(3/4) (their fractions below) at or
 * above the fraction. log2 from libm cost some 300 instructions an exchange
 * with a shadow. */
unsigned sp_hist_bucket(double ms)
{
	static const uint64_t quarter[3] = {0x306fe0a31b715, 0x6a09e667f3bcd, 0xae89f995ad3ad};
	double units = ms * 100.0; /* 10 µs units */
	uint64_t bits;
	if (!(units > 1.0)) /* NaN too */
		return 0;
	if (units >= (double)(1u << SP_LAT_BUCKETS / 4))
		return SP_LAT_BUCKETS - 1;
	memcpy(&bits, &units, sizeof(bits));
	unsigned octave = (unsigned)(bits >> 52) - 1023u; /* 0 to 23: units is at least 1 */
	uint64_t frac = bits & (((uint64_t)1 << 52) - 1);
	unsigned q = frac == 0		? 0
		     : frac <= quarter[0] ? 1
		     : frac <= quarter[1] ? 2
		     : frac <= quarter[2] ? 3
					  : 4;
	unsigned b = 4 * octave + q;
	return b >= SP_LAT_BUCKETS ? SP_LAT_BUCKETS - 1 : b;
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
	_Atomic uint32_t *c = &h->b[sp_hist_bucket(ms)];
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
