/* Time conversions shared by the event-driven modules: CLOCK_MONOTONIC
 * readings in milliseconds (the unit of every latency), and millisecond
 * settings as the timevals libevent's timeouts take. */
#ifndef SP_CLOCK_H
#define SP_CLOCK_H

#include <sys/time.h>
#include <time.h>

static inline double sp_ts_ms(const struct timespec *t)
{
	return (double)t->tv_sec * 1e3 + (double)t->tv_nsec / 1e6;
}

/* Milliseconds since the CLOCK_MONOTONIC reading t. */
static inline double sp_ms_since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return sp_ts_ms(&now) - sp_ts_ms(t);
}

/* ms (>= 0) as a timeval. */
static inline struct timeval sp_tv_ms(int ms)
{
	return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

#endif
