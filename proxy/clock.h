/* Time conversions shared by the event-driven modules: CLOCK_MONOTONIC
 * readings in milliseconds (the unit of every latency) and microseconds (the
 * unit of deadlines), and settings as the timevals libevent's timeouts take. */
#ifndef SP_CLOCK_H
#define SP_CLOCK_H

#include <stdint.h>
#include <stdio.h>
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

/* Microseconds: the unit of the deadlines timers keep. */
static inline int64_t sp_ts_us(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000 + t->tv_nsec / 1000;
}

/* The clock deadlines are kept with: CLOCK_MONOTONIC_COARSE, which lags
 * the precise clock by at most a scheduler tick (4 ms at HZ=250) and costs
 * 7 ns where CLOCK_MONOTONIC costs 25-55 ns on this kind of machine (a
 * keep-alive exchange stamps activity three times). A timeout may so end up
 * a tick early or late, as nginx's timers, kept with the time cached once
 * per event loop iteration, do. Latencies use the precise clock. */
static inline int64_t sp_deadline_now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
	return sp_ts_us(&t);
}

/* us (>= 0) as a timeval. */
static inline struct timeval sp_tv_us(int64_t us)
{
	return (struct timeval){(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
}

/* ms (>= 0) as a timeval. */
static inline struct timeval sp_tv_ms(int ms)
{
	return sp_tv_us((int64_t)ms * 1000);
}

/* The wall clock in milliseconds since the epoch. */
static inline long long sp_unix_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* "2026-11-27T15:40:00.123Z": how the logs and the API give times (UTC). */
#define SP_UTC_SIZE 64 /* room for any year gmtime_r gives */
static inline void sp_utc_stamp(char out[SP_UTC_SIZE], long long unix_ms)
{
	struct tm tm;
	time_t s = (time_t)(unix_ms / 1000);
	gmtime_r(&s, &tm);
	snprintf(out, SP_UTC_SIZE, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(unix_ms % 1000));
}

#endif
