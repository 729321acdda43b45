/* Counters shared by the workers (single writer each) and read by the main
 * thread for summaries, the admin API and metrics: relaxed atomics, no locks
 * on the request path. Latencies go into a log-scale histogram. */
#ifndef SP_STATS_H
#define SP_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#define SP_LAT_BUCKETS 96

/* A latency histogram: bucket i counts durations up to sp_hist_bound_ms(i). */
struct sp_hist {
	_Atomic uint32_t b[SP_LAT_BUCKETS];
};

/* Adds one to a counter owned by the calling worker (no read-modify-write
 * lock: only one thread writes it). */
static inline void sp_count(_Atomic uint64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

static inline uint64_t sp_read(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* A total counted after its parts (sp_count_after), read before them
 * (sp_read_before): a reader never sees the total ahead of its parts. */
static inline void sp_count_after(_Atomic uint64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_release);
}

static inline uint64_t sp_read_before(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_acquire);
}

/* Durations at the metrics' fixed bounds (Prometheus `le`, in seconds):
 * counts per bound, not cumulative; past the last bound only the total
 * counts them. Exact where the log-scale histogram's buckets straddle. */
#define SP_DURATION_BOUNDS 13
extern const double sp_duration_bounds_s[SP_DURATION_BOUNDS];
struct sp_durations {
	_Atomic uint64_t le[SP_DURATION_BOUNDS];
};
void sp_durations_add(struct sp_durations *d, double ms);

void sp_hist_add(struct sp_hist *h, double ms);
double sp_hist_bound_ms(unsigned bucket);
/* The bucket of a duration: the first whose bound is at least ms. */
unsigned sp_hist_bucket(double ms);
/* Sums src into a plain array (for several workers). */
void sp_hist_sum(const struct sp_hist *src, uint64_t *dst);
/* The q-quantile (0..1) of a summed histogram, as a bucket bound; 0 when empty. */
double sp_hist_quantile(const uint64_t *sum, double q);

#endif
